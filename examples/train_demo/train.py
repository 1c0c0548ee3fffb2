#!/usr/bin/env python3
"""Train a small BLIP on procedural shape scenes and export three Hugging Face folders.

One model is trained with all of BLIP's objectives at once. Its parts:
- a vision transformer that every task shares;
- a text encoder, used unimodally for image-text contrastive learning (ITC, first token
  [CLS]) and image-grounded for image-text matching (ITM) and for encoding questions
  (first token [ENC]);
- a caption decoder that cross-attends to the image;
- an answer decoder that cross-attends to the encoded question.

The first steps train only the vision tower, through two training-only heads. The export
writes

    OUT/caption  BlipForConditionalGeneration  vision_model + text_decoder (caption decoder)
    OUT/vqa      BlipForQuestionAnswering      vision_model + text_encoder + text_decoder (answer decoder)
    OUT/itm      BlipForImageTextRetrieval     vision_model + text_encoder + vision_proj, text_proj, itm_head

each with config.json, model.safetensors, the tokenizer files and preprocessor_config.json.
scenes.py draws the training data on the fly from seeded generators, so a run is
repeatable. The held-out test set (scenes.py --seed TEST_SEED) uses a seed that training
never uses. Example:

    nice -n 10 python3 train.py --out ../../build-demo/hf --testset testset
"""

import argparse
import json
import math
import os
import random
import sys
import time

# OpenMP threads that spin while they wait for work slow training down on a machine shared
# with other jobs. The setting must be made before torch starts its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes  # noqa: E402
from model import (  # noqa: E402
    BlipTextLMHeadModel,
    BlipTextModel,
    BlipVisionModel,
    WordTokenizer,
    greedy_decode,
    save_safetensors,
)

# Seed of the initial weights. The scenes of training step i come from Random(SEED * 1_000_003 + i).
SEED = 1234
TEST_SEED = 90210  # seed of the committed held-out test set, which training never draws with

IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL_TOKENS + scenes.all_words()
ADDED_TOKENS = {"[DEC]": len(VOCAB), "[ENC]": len(VOCAB) + 1}
PAD_ID, CLS_ID, SEP_ID = 0, 2, 3
DEC_ID, ENC_ID = ADDED_TOKENS["[DEC]"], ADDED_TOKENS["[ENC]"]

VISION_CONFIG = {
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_attention_heads": 4,
    "num_hidden_layers": 4,
    "image_size": scenes.IMAGE_SIZE,
    "patch_size": 16,
    "layer_norm_eps": 1e-5,
}
TEXT_CONFIG = {
    "vocab_size": len(VOCAB) + len(ADDED_TOKENS),
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 64,
    "encoder_hidden_size": 96,  # the vision width, and the width of the question states that the answer decoder reads
    "layer_norm_eps": 1e-12,
    "pad_token_id": PAD_ID,
    "bos_token_id": DEC_ID,
    "sep_token_id": SEP_ID,
    "eos_token_id": SEP_ID,
}
EMBED_DIM = 64  # ITC projection width (image_text_hidden_size)

# Share of multimodal inputs (ITM pairs, VQA questions) that start with [CLS] instead of
# [ENC], so the model also works when a caller keeps the tokenizer's [CLS].
CLS_SHARE = 0.25
QUESTIONS_PER_IMAGE = 4
PATCH_CLASSES = (len(scenes.KINDS) + 1, len(scenes.COLOURS) + 1, len(scenes.SIZES) + 1)  # 0 = background
PATCH_MIN_PIXELS = 26  # a patch is labelled with a shape that covers at least this many of its 256 pixels
QUESTION_WEIGHTS = {"colour": 0.35, "count": 0.1, "shape": 0.3, "size": 0.1, "exists": 0.15}
PAIRS = [(kind, colour) for kind in sorted(scenes.KINDS) for colour in sorted(scenes.COLOURS)]


class DemoBlip(nn.Module):
    """Every part of the three BLIP heads, trained together."""

    def __init__(self):
        super().__init__()
        self.vision_model = BlipVisionModel(VISION_CONFIG)
        self.text_encoder = BlipTextModel(TEXT_CONFIG)
        self.caption_decoder = BlipTextLMHeadModel(TEXT_CONFIG)
        self.answer_decoder = BlipTextLMHeadModel(TEXT_CONFIG)
        self.vision_proj = nn.Linear(VISION_CONFIG["hidden_size"], EMBED_DIM)
        self.text_proj = nn.Linear(TEXT_CONFIG["hidden_size"], EMBED_DIM)
        self.itm_head = nn.Linear(TEXT_CONFIG["hidden_size"], 2)
        self.log_temp = nn.Parameter(torch.tensor(math.log(0.07)))  # ITC temperature, not exported
        # Training-only head: each patch token predicts the kind, colour and size of the shape
        # that covers it. This dense signal teaches the vision tower shapes far sooner than the
        # caption loss alone. It is not exported.
        self.patch_head = nn.Linear(VISION_CONFIG["hidden_size"], sum(PATCH_CLASSES))
        # Training-only head on the class token: shape count and which (kind, colour) pairs occur.
        self.scene_head = nn.Linear(VISION_CONFIG["hidden_size"], len(scenes.COUNT_WORDS) + len(PAIRS))
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None and isinstance(module, (nn.Linear, nn.Conv2d)):
                    nn.init.zeros_(module.bias)
        embeddings = self.vision_model.embeddings
        nn.init.trunc_normal_(embeddings.class_embedding, std=0.02)
        nn.init.trunc_normal_(embeddings.position_embedding, std=0.02)
        for decoder in (self.caption_decoder, self.answer_decoder):
            nn.init.zeros_(decoder.cls.predictions.bias)


# ----------------------------------------------------------------------------------------
# Data


def pixels(images):
    """Turn 96x96 RGB PIL images into normalized float32 [batch, 3, 96, 96], as BlipImageProcessor does."""
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    x = torch.from_numpy(array).permute(0, 3, 1, 2).to(torch.float64) * (1.0 / 255.0)
    x = x.to(torch.float32)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def pad(rows):
    """Pad id lists with [PAD] into a [batch, length] tensor and its 0/1 attention mask."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, (ids != PAD_ID).long()


def patch_labels(scene):
    """Return [patches, 3] long labels (kind, colour, size; 0 = background) for one scene."""
    patch = VISION_CONFIG["patch_size"]
    grid = scenes.IMAGE_SIZE // patch
    owners = np.asarray(scenes.label_map(scene), dtype=np.int64)
    count = len(scene["shapes"]) + 1
    onehot = np.eye(count, dtype=np.int64)[owners]  # [96, 96, count]
    covered = onehot.reshape(grid, patch, grid, patch, count).sum(axis=(1, 3)).reshape(grid * grid, count)
    owner = covered[:, 1:].argmax(axis=1)
    present = covered[:, 1:].max(axis=1) >= PATCH_MIN_PIXELS
    kinds = sorted(scenes.KINDS)
    colours = sorted(scenes.COLOURS)
    sizes = sorted(scenes.SIZES)
    labels = np.zeros((grid * grid, 3), dtype=np.int64)
    for i in np.nonzero(present)[0]:
        shape = scene["shapes"][owner[i]]
        labels[i] = (kinds.index(shape["kind"]) + 1, colours.index(shape["colour"]) + 1, sizes.index(shape["size"]) + 1)
    return torch.from_numpy(labels)


def sample_question(scene, rng):
    available = {}
    for kind, question, answer in scenes.questions(scene):
        available.setdefault(kind, []).append((question, answer))
    available["exists"] = [scenes.yes_no_question(scene, rng)[1:]]
    kinds = [k for k in QUESTION_WEIGHTS if k in available]
    kind = rng.choices(kinds, weights=[QUESTION_WEIGHTS[k] for k in kinds])[0]
    return rng.choice(available[kind])


def make_batch(tokenizer, rng, batch_size):
    """Draw batch_size scenes and every text the four objectives need."""
    drawn = [scenes.random_scene(rng) for _ in range(batch_size)]
    captions = [scenes.caption(s) for s in drawn]
    caption_ids = [tokenizer.encode(c) for c in captions]

    first = lambda: CLS_ID if rng.random() < CLS_SHARE else ENC_ID
    itm_rows, itm_labels = [], []
    for i, scene in enumerate(drawn):
        itm_rows.append([first()] + caption_ids[i] + [SEP_ID])
        itm_labels.append(1)
        if rng.random() < 0.75:
            wrong = scenes.wrong_caption(scene, rng)
        else:
            others = [c for c in captions if c != captions[i]]
            wrong = rng.choice(others) if others else scenes.wrong_caption(scene, rng)
        itm_rows.append([first()] + tokenizer.encode(wrong) + [SEP_ID])
        itm_labels.append(0)

    question_rows, answer_rows = [], []
    for scene in drawn:
        for _ in range(QUESTIONS_PER_IMAGE):
            question, answer = sample_question(scene, rng)
            question_rows.append([first()] + tokenizer.encode(question) + [SEP_ID])
            answer_rows.append([DEC_ID] + tokenizer.encode(answer) + [SEP_ID])

    return {
        "pixels": pixels([scenes.draw_scene(s) for s in drawn]),
        "patch_labels": torch.stack([patch_labels(s) for s in drawn]),
        "counts": torch.tensor([len(s["shapes"]) - 1 for s in drawn]),
        "pairs": torch.tensor([[float((k, c) in {(x["kind"], x["colour"]) for x in s["shapes"]}) for k, c in PAIRS]
                               for s in drawn]),
        "captions": captions,
        "decoder": pad([[DEC_ID] + ids + [SEP_ID] for ids in caption_ids]),
        "itc": pad([[CLS_ID] + ids + [SEP_ID] for ids in caption_ids]),
        "itm": pad(itm_rows),
        "itm_labels": torch.tensor(itm_labels),
        "question": pad(question_rows),
        "answer": pad(answer_rows),
    }


# ----------------------------------------------------------------------------------------
# Training


def lm_loss(logits, ids):
    """Next-token cross-entropy over non-pad targets (position i predicts token i + 1)."""
    targets = ids[:, 1:].masked_fill(ids[:, 1:] == PAD_ID, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1))


def vision_losses(model, batch, image):
    """Losses of the training-only heads, which supervise the vision tower directly."""
    logits = model.patch_head(image[:, 1:]).split(PATCH_CLASSES, dim=-1)
    labels = batch["patch_labels"]
    patch = sum(F.cross_entropy(l.reshape(-1, l.shape[-1]), labels[..., i].reshape(-1)) for i, l in enumerate(logits))
    count_logits, pair_logits = model.scene_head(image[:, 0]).split([len(scenes.COUNT_WORDS), len(PAIRS)], dim=-1)
    scene = F.cross_entropy(count_logits, batch["counts"])
    scene = scene + F.binary_cross_entropy_with_logits(pair_logits, batch["pairs"]) * len(PAIRS) / 5
    return {"patch": patch, "scene": scene}


def losses(model, batch, vision_only=False):
    image = model.vision_model(batch["pixels"])
    size = image.shape[0]
    if vision_only:
        return vision_losses(model, batch, image)

    ids, mask = batch["decoder"]
    caption = lm_loss(model.caption_decoder(ids, mask, image), ids)

    ids, mask = batch["itc"]
    text = model.text_encoder(ids, mask)
    image_feat = F.normalize(model.vision_proj(image[:, 0]), dim=-1)
    text_feat = F.normalize(model.text_proj(text[:, 0]), dim=-1)
    temp = model.log_temp.exp().clamp(0.01, 0.5)
    sim = image_feat @ text_feat.t() / temp
    same = torch.tensor([[a == b for b in batch["captions"]] for a in batch["captions"]], dtype=torch.float32)
    targets = same / same.sum(dim=1, keepdim=True)
    itc = -0.5 * ((F.log_softmax(sim, 1) * targets).sum(1).mean() + (F.log_softmax(sim.t(), 1) * targets).sum(1).mean())

    ids, mask = batch["itm"]
    states = model.text_encoder(ids, mask, image, encoder_repeat=2)
    itm = F.cross_entropy(model.itm_head(states[:, 0]), batch["itm_labels"])

    ids, mask = batch["question"]
    question = model.text_encoder(ids, mask, image, encoder_repeat=ids.shape[0] // size)
    answer_ids, answer_mask = batch["answer"]
    vqa = lm_loss(model.answer_decoder(answer_ids, answer_mask, question, mask), answer_ids)

    return {"caption": caption, "itc": itc, "itm": itm, "vqa": vqa, **vision_losses(model, batch, image)}


def learning_rate(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(model, tokenizer, vision_steps, steps, batch_size, peak_lr, log_every):
    """Run vision_steps steps on the vision losses alone, then steps - vision_steps on all losses."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                                  lr=peak_lr, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    start = time.time()
    cpu_start = time.process_time()
    running, counted = {}, 0
    for step in range(steps):
        rng = random.Random(SEED * 1_000_003 + step)
        batch = make_batch(tokenizer, rng, batch_size)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, peak_lr, warmup)
        parts = losses(model, batch, vision_only=step < vision_steps)
        total = sum(parts.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step == vision_steps:
            running, counted = {}, 0
        for name, value in parts.items():
            running[name] = running.get(name, 0.0) + value.item()
        counted += 1
        if (step + 1) % log_every == 0 or step + 1 == steps or step + 1 == vision_steps:
            elapsed = time.time() - start
            cpu = time.process_time() - cpu_start
            averages = " ".join(f"{k} {v / counted:.3f}" for k, v in running.items())
            print(f"step {step + 1}/{steps} {elapsed:.0f}s (cpu {cpu:.0f}s) lr {optimizer.param_groups[0]['lr']:.2e} {averages}",
                  flush=True)
            running, counted = {}, 0
    return time.time() - start, time.process_time() - cpu_start


# ----------------------------------------------------------------------------------------
# Evaluation on the held-out test set


@torch.no_grad()
def evaluate(model, tokenizer, testset_dir):
    """Measure caption, VQA and ITM accuracy on a test set written by scenes.py."""
    from PIL import Image

    with open(os.path.join(testset_dir, "labels.json")) as f:
        labels = json.load(f)
    entries = labels["scenes"]
    images = pixels([Image.open(os.path.join(testset_dir, e["file"])).convert("RGB") for e in entries])
    model.eval()
    image = model.vision_model(images)

    generated = greedy_decode(model.caption_decoder, image, None, DEC_ID, SEP_ID, PAD_ID, 20)
    texts = [tokenizer.decode(row.tolist()) for row in generated]
    single = [i for i, e in enumerate(entries) if e["count"] == 1]
    named = sum(1 for i in single if _names_shape(texts[i], entries[i]["shapes"][0]))
    exact = sum(1 for i, e in enumerate(entries) if texts[i] == e["caption"])
    result = {
        "caption_colour_shape_single": named / len(single),
        "caption_exact_all": exact / len(entries),
        "examples": [(entries[i]["file"], texts[i]) for i in range(6)],
    }

    for first, suffix in ((ENC_ID, ""), (CLS_ID, "_cls")):
        by_type = {}
        for i, entry in enumerate(entries):
            for qa in entry["questions"]:
                ids, mask = pad([[first] + tokenizer.encode(qa["question"]) + [SEP_ID]])
                states = model.text_encoder(ids, mask, image[i : i + 1])
                out = greedy_decode(model.answer_decoder, states, mask, DEC_ID, SEP_ID, PAD_ID, 10)
                right = tokenizer.decode(out[0].tolist()) == qa["answer"]
                by_type.setdefault(qa["type"], []).append(right)
        for kind, marks in by_type.items():
            result[f"vqa_{kind}{suffix}"] = sum(marks) / len(marks)

        wins = 0
        for i, entry in enumerate(entries):
            ids, mask = pad([[first] + tokenizer.encode(t) + [SEP_ID]
                             for t in (entry["caption"], entry["colour_swapped_caption"])])
            states = model.text_encoder(ids, mask, image[i : i + 1].expand(2, -1, -1))
            match = model.itm_head(states[:, 0]).softmax(-1)[:, 1]
            wins += int(match[0] > match[1])
        result[f"itm_true_over_swapped{suffix}"] = wins / len(entries)

    ids, mask = pad([[CLS_ID] + tokenizer.encode(e["caption"]) + [SEP_ID] for e in entries])
    text_feat = F.normalize(model.text_proj(model.text_encoder(ids, mask)[:, 0]), dim=-1)
    image_feat = F.normalize(model.vision_proj(image[:, 0]), dim=-1)
    sim = image_feat @ text_feat.t()
    captions = [e["caption"] for e in entries]
    best = sim.argmax(dim=1).tolist()
    result["itc_image_to_text_top1"] = sum(captions[b] == captions[i] for i, b in enumerate(best)) / len(entries)
    model.train()
    return result


def _names_shape(text, shape):
    words = text.split()
    return shape["colour"] in words and shape["kind"] in words


# ----------------------------------------------------------------------------------------
# Export


GENERIC_CONFIG = {  # PretrainedConfig defaults as transformers 4.30.2 writes them
    "_name_or_path": "", "add_cross_attention": False, "architectures": None, "bad_words_ids": None,
    "begin_suppress_tokens": None, "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None,
    "decoder_start_token_id": None, "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False,
    "encoder_no_repeat_ngram_size": 0, "exponential_decay_length_penalty": None, "finetuning_task": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "length_penalty": 1.0,
    "max_length": 20, "min_length": 0, "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1,
    "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False,
    "output_scores": False, "prefix": None, "problem_type": None, "pruned_heads": {},
    "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
    "return_dict_in_generate": False, "suppress_tokens": None, "task_specific_params": None,
    "temperature": 1.0, "tf_legacy_loss": False, "tie_encoder_decoder": False, "tie_word_embeddings": True,
    "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False,
    "transformers_version": "4.30.2", "typical_p": 1.0, "use_bfloat16": False,
}


def hf_config(architecture):
    text = dict(GENERIC_CONFIG)
    text.update({
        "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "initializer_range": 0.02, "is_decoder": True, "model_type": "blip_text_model",
        "projection_dim": 768, "use_cache": True,
    })
    text.update({k: v for k, v in TEXT_CONFIG.items()})
    vision = dict(GENERIC_CONFIG)
    vision.update({
        "attention_dropout": 0.0, "bos_token_id": None, "eos_token_id": None, "hidden_act": "gelu",
        "initializer_range": 1e-10, "is_decoder": False, "model_type": "blip_vision_model", "num_channels": 3,
        "pad_token_id": None, "projection_dim": 512, "sep_token_id": None,
    })
    vision.update(VISION_CONFIG)
    return {
        "_commit_hash": None,
        "architectures": [architecture],
        "image_text_hidden_size": EMBED_DIM,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "logit_scale_init_value": 2.6592,
        "model_type": "blip",
        "projection_dim": EMBED_DIM,
        "text_config": dict(sorted(text.items())),
        "transformers_version": None,
        "vision_config": dict(sorted(vision.items())),
    }


def export_tensors(model, task):
    """Return the checkpoint's name -> tensor dict for task 'caption', 'vqa' or 'itm'."""
    parts = {"vision_model.": model.vision_model}
    if task == "caption":
        parts["text_decoder."] = model.caption_decoder
    elif task == "vqa":
        parts["text_encoder."] = model.text_encoder
        parts["text_decoder."] = model.answer_decoder
    else:
        parts["text_encoder."] = model.text_encoder
        parts["vision_proj."] = model.vision_proj
        parts["text_proj."] = model.text_proj
        parts["itm_head."] = model.itm_head
    tensors = {}
    for prefix, module in parts.items():
        # state_dict() lists tied parameters under both names, as transformers' checkpoints do.
        for name, tensor in module.state_dict().items():
            tensors[prefix + name] = tensor.clone()
    return tensors


ARCHITECTURES = {
    "caption": "BlipForConditionalGeneration",
    "vqa": "BlipForQuestionAnswering",
    "itm": "BlipForImageTextRetrieval",
}


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def export_folder(model, task, folder):
    os.makedirs(folder, exist_ok=True)
    save_safetensors(export_tensors(model, task), os.path.join(folder, "model.safetensors"))
    write_json(os.path.join(folder, "config.json"), hf_config(ARCHITECTURES[task]))
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("".join(token + "\n" for token in VOCAB))
    write_json(os.path.join(folder, "added_tokens.json"), ADDED_TOKENS)
    write_json(os.path.join(folder, "special_tokens_map.json"), {
        "additional_special_tokens": ["[ENC]"], "bos_token": "[DEC]", "cls_token": "[CLS]",
        "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]",
    })
    write_json(os.path.join(folder, "tokenizer_config.json"), {
        "clean_up_tokenization_spaces": True, "cls_token": "[CLS]", "do_basic_tokenize": True,
        "do_lower_case": True, "mask_token": "[MASK]", "model_max_length": TEXT_CONFIG["max_position_embeddings"], "never_split": None,
        "pad_token": "[PAD]", "sep_token": "[SEP]", "strip_accents": None, "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]",
    })
    write_json(os.path.join(folder, "preprocessor_config.json"), {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": IMAGE_MEAN, "image_processor_type": "BlipImageProcessor", "image_std": IMAGE_STD,
        "resample": 3, "rescale_factor": 1.0 / 255.0,
        "size": {"height": scenes.IMAGE_SIZE, "width": scenes.IMAGE_SIZE},
    })


def parameter_count(tensors):
    """Count the parameters a checkpoint holds, each tied pair and the position_ids buffers once."""
    skip = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "position_ids")
    return sum(t.numel() for n, t in tensors.items() if not n.endswith(skip))


def main():
    parser = argparse.ArgumentParser(description="Train the demo BLIP and export Hugging Face folders.")
    parser.add_argument("--out", required=True, help="folder that receives caption/, vqa/ and itm/")
    parser.add_argument("--testset", help="held-out test set folder (scenes.py output) to evaluate on")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps in all (default 2000)")
    parser.add_argument("--vision-steps", type=int, default=500,
                        help="first steps that train only the vision tower and its heads (default 500)")
    parser.add_argument("--batch", type=int, default=64, help="scenes per step (default 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--log-every", type=int, default=100, help="steps between loss lines (default 100)")
    parser.add_argument("--checkpoint", help="also save the full training state_dict to this .pt file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    tokenizer = WordTokenizer(VOCAB, ADDED_TOKENS)
    model = DemoBlip()
    print(f"seed {SEED}, {args.steps} steps ({args.vision_steps} vision-only) of {args.batch} scenes, {args.threads} threads, "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)

    seconds, cpu_seconds = train(model, tokenizer, args.vision_steps, args.steps, args.batch, args.lr, args.log_every)
    print(f"training took {seconds / 60:.1f} min of wall time and {cpu_seconds / 60:.1f} min of CPU time "
          f"(all threads), load average now {os.getloadavg()[0]:.2f}", flush=True)
    model.eval()
    if args.checkpoint:
        torch.save(model.state_dict(), args.checkpoint)

    for task in ARCHITECTURES:
        folder = os.path.join(args.out, task)
        export_folder(model, task, folder)
        print(f"wrote {folder}: {parameter_count(export_tensors(model, task)):,} parameters", flush=True)

    if args.testset:
        result = evaluate(model, tokenizer, args.testset)
        print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    main()
