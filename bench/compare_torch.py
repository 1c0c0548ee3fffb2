#!/usr/bin/python3
"""Time the BLIP benchmark stages in plain PyTorch, the way transformers 4.30.2 runs them.

The models have the full-size shapes of `blip-image-captioning-base` and `-large`, read
from the golden folder's manifests; the ITM and VQA stages use `blip-itm-*-coco` and
`blip-vqa-base`. Their weights follow the full-size weight rule below, so the captions can
be checked against the reference token ids. The module tree is the project's PyTorch port
of transformers' BLIP modules (examples/train_demo/model.py). Generation follows
transformers 4.30.2: self-attention keys and values are cached (`past_key_values`), the
cross-attention keys and values are recomputed from the image states at every step, and
beam search expands the image states to one copy per beam.

The caption child also times a whole caption from a weights file on: it saves the
rule-filled state dicts once with torch.save (untimed, into --work-dir), then times building
the modules, torch.load and load_state_dict, decoding and preprocessing a JPEG with Pillow as
BlipImageProcessor does, the vision encoder and 20 greedy tokens.

Every (model, thread count) pair runs in its own child process, so that the thread
settings are in place before torch loads and each peak RSS belongs to one model only.

Run with Debian's interpreter, which has python3-torch:

    /usr/bin/python3 bench/compare_torch.py --models base --threads 1,2 --runs 3

With `--ours FILE` (the output of `blip-bench --json`) and `--onnx FILE` (the output of
`bench/onnx/run_vision.mjs`) it also prints the speed-ups of blip-bench over PyTorch and
of blip-bench's vision encoder over ONNX Runtime. The whole caption is compared for every
weight type in the blip-bench file, the other stages for f32 only.
"""

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / "examples" / "train_demo"

CAPTION_MODELS = {"base": "blip-image-captioning-base", "large": "blip-image-captioning-large"}
ITM_MODELS = {"base": "blip-itm-base-coco", "large": "blip-itm-large-coco"}
VQA_MODELS = {"base": "blip-vqa-base"}  # no large VQA checkpoint is published

BOS_ID = 30522  # [DEC]
SEP_ID = 102  # [SEP], the decoder's end of sequence
PAD_ID = 0
ITM_TEXT = "two cats lying on a couch"
ITM_LENGTH = 35  # ITM text length after padding
VQA_QUESTION = "what is in the picture ?"
VQA_MAX_LENGTH = 10
WHOLE_CAPTION_TOKENS = 20  # greedy tokens of the whole-caption stage; [SEP] does not stop them
# BlipImageProcessor's normalization for BLIP: the CLIP mean and std.
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def golden_dir():
    env = os.environ.get("BLIP_GOLDEN_DIR")
    return Path(env) if env else REPO.parent / "shared" / "golden"


# ----------------------------------------------------------------------------------------
# Full-size weight rule: element i of tensor `name` is x = 2u - 1, where u is the top 24 bits
# of a SplitMix64 step seeded with FNV-1a 64 of the name, scaled by the tensor's role (see
# rule_scale) in double and rounded once to float32. Tied tensors and position_ids are
# skipped. Chunked, so that generating the weights adds little to the process's peak RSS.

MASK64 = (1 << 64) - 1
RULE_CHUNK = 1 << 20
TIED = {
    "text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
    "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias",
}


def fnv1a64(text):
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & MASK64
    return value


def rule_scale(name, shape):
    """Return (factor, offset) so that value = offset + factor * x for this tensor."""
    lower = name.lower()
    if name.endswith(".bias"):
        return 0.1, 0.0
    if "layer_norm" in lower or "layernorm" in lower:
        return 0.1, 1.0
    if "embedding" in name:
        return 0.5, 0.0
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    factor = math.sqrt(3.0 / fan_in)
    if name.endswith("output.dense.weight"):
        factor *= 0.25
    return factor, 0.0


def fill_by_rule(name, out):
    """Write the rule's values for tensor `name` into the float32 array `out` (any shape)."""
    flat = out.reshape(-1)
    seed = np.uint64(fnv1a64(name))
    factor, offset = rule_scale(name, out.shape)
    golden_gamma = np.uint64(0x9E3779B97F4A7C15)
    for start in range(0, flat.size, RULE_CHUNK):
        stop = min(flat.size, start + RULE_CHUNK)
        z = np.arange(start + 1, stop + 1, dtype=np.uint64) * golden_gamma + seed
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        x = (z >> np.uint64(40)).astype(np.float64) * (2.0**-23) - 1.0  # 2u - 1 with u = k / 2^24
        values = x * factor + offset if offset else x * factor
        flat[start:stop] = values.astype(np.float32)


# ----------------------------------------------------------------------------------------
# Module tree and weights


def load_manifest(model_name):
    path = golden_dir() / "manifests" / f"{model_name}.json"
    if not path.is_file():
        raise SystemExit(f"manifest {path} not found; set BLIP_GOLDEN_DIR to the golden folder")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def import_demo_modules():
    if not (DEMO_DIR / "model.py").is_file():
        raise SystemExit(f"{DEMO_DIR / 'model.py'} not found: compare_torch.py uses its BLIP module tree")
    if str(DEMO_DIR) not in sys.path:
        sys.path.insert(0, str(DEMO_DIR))
    import model as blip_modules  # noqa: E402  (examples/train_demo/model.py)

    return blip_modules


def fill_module(module, prefix, manifest, expected_sums):
    """Fill every tensor of `module` from the rule, checking names, shapes and sums.

    Returns the number of tensors whose sum was compared with the reference sums.
    """
    import torch

    tensors = manifest["tensors"]
    checked = 0
    with torch.no_grad():
        for key, tensor in module.state_dict(keep_vars=True).items():
            name = prefix + key
            if name.endswith(".position_ids") or name in TIED:
                continue
            if name not in tensors:
                raise SystemExit(f"tensor {name} of the PyTorch module is not in the manifest")
            if list(tensor.shape) != tensors[name]["shape"]:
                raise SystemExit(f"tensor {name}: module shape {list(tensor.shape)}, manifest {tensors[name]['shape']}")
            fill_by_rule(name, tensor.detach().numpy())
            if name in expected_sums:
                total = float(tensor.detach().double().sum())
                if abs(total - expected_sums[name]) > 1e-6 * (1.0 + abs(expected_sums[name])):
                    raise SystemExit(f"tensor {name}: sum {total!r} differs from the reference {expected_sums[name]!r}")
                checked += 1
    return checked


def text_config(manifest):
    cfg = dict(manifest["config"]["text_config"])
    cfg.setdefault("encoder_hidden_size", manifest["config"]["vision_config"]["hidden_size"])
    return cfg


def build_models(blip_modules, name, manifest, parts):
    """Build the named parts ("vision_model", "text_decoder", "text_encoder") in eval mode."""
    vision_cfg = manifest["config"]["vision_config"]
    text_cfg = text_config(manifest)
    reference = golden_dir() / "fullsize" / f"{name}.cats.png.json"
    expected_sums = {}
    if reference.is_file():
        with open(reference, encoding="utf-8") as f:
            expected_sums = json.load(f).get("tensor_sums", {})
    built = {}
    checked = 0
    for part in parts:
        if part == "vision_model":
            module = blip_modules.BlipVisionModel(vision_cfg)
        elif part == "text_decoder":
            module = blip_modules.BlipTextLMHeadModel(text_cfg)
        elif part == "text_encoder":
            module = blip_modules.BlipTextModel(text_cfg)
        else:
            raise ValueError(part)
        checked += fill_module(module, part + ".", manifest, expected_sums)
        built[part] = module.eval()
    return built, checked


def build_linear(manifest, name, in_features, out_features):
    import torch

    layer = torch.nn.Linear(in_features, out_features)
    with torch.no_grad():
        for suffix, tensor in (("weight", layer.weight), ("bias", layer.bias)):
            full = f"{name}.{suffix}"
            if list(tensor.shape) != manifest["tensors"][full]["shape"]:
                raise SystemExit(f"tensor {full}: shape {list(tensor.shape)} differs from the manifest")
            fill_by_rule(full, tensor.detach().numpy())
    return layer.eval()


# ----------------------------------------------------------------------------------------
# Text transformer steps with transformers 4.30.2's caching


def extended_mask(batch, queries, keys, past_length, causal):
    """Additive mask [batch, 1, queries, keys] from an all-ones attention mask, as transformers builds it."""
    import torch

    ones = torch.ones(batch, keys)
    if causal:
        seq_ids = torch.arange(queries)
        causal_mask = (seq_ids[None, None, :].repeat(batch, queries, 1) <= seq_ids[None, :, None]).float()
        if past_length > 0:
            causal_mask = torch.cat([torch.ones(batch, queries, past_length), causal_mask], dim=-1)
        mask = causal_mask[:, None, :, :] * ones[:, None, None, :]
    else:
        mask = ones[:, None, None, :]
    return (1.0 - mask) * -10000.0


def cached_self_attention(attention, hidden, mask, past):
    """BlipTextSelfAttention with past_key_value: new keys and values are appended to the cache."""
    import torch

    query = attention._split(attention.query(hidden))
    key = attention._split(attention.key(hidden))
    value = attention._split(attention.value(hidden))
    if past is not None:
        key = torch.cat([past[0], key], dim=2)
        value = torch.cat([past[1], value], dim=2)
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.shape[-1])
    scores = scores + mask
    context = torch.matmul(scores.softmax(dim=-1), value).permute(0, 2, 1, 3)
    return context.reshape(hidden.shape[0], hidden.shape[1], -1), (key, value)


def decoder_step(decoder, input_ids, past, encoder_states, encoder_mask):
    """One BlipTextLMHeadModel forward with past_key_values; returns (logits of the last position, new past)."""
    bert = decoder.bert
    batch, length = input_ids.shape
    past_length = 0 if past is None else past[0][0].shape[2]
    positions = bert.embeddings.position_ids[:, past_length : past_length + length]
    hidden = bert.embeddings.LayerNorm(bert.embeddings.word_embeddings(input_ids) + bert.embeddings.position_embeddings(positions))
    mask = extended_mask(batch, length, past_length + length, past_length, causal=True)
    new_past = []
    for index, layer in enumerate(bert.encoder.layer):
        context, cache = cached_self_attention(layer.attention.self, hidden, mask, None if past is None else past[index])
        hidden = layer.attention.output(context, hidden)
        # transformers 4.30.2 recomputes the cross-attention keys and values here at every step.
        hidden = layer.crossattention(hidden, encoder_mask, encoder_states)
        hidden = layer.output(layer.intermediate(hidden), hidden)
        new_past.append(cache)
    logits = decoder.cls(hidden)
    return logits[:, -1, :], new_past


def greedy_forced(decoder, image_embeds, tokens):
    """Greedy decoding of exactly `tokens` new tokens ([SEP] does not stop it); returns (ids, per-step seconds)."""
    import torch

    encoder_mask = extended_mask(1, 1, image_embeds.shape[1], 0, causal=False)
    ids = torch.full((1, 1), BOS_ID, dtype=torch.long)
    past = None
    step_seconds = []
    for _ in range(tokens):
        start = time.perf_counter()
        logits, past = decoder_step(decoder, ids[:, -1:] if past is not None else ids, past, image_embeds, encoder_mask)
        next_id = logits.argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        step_seconds.append(time.perf_counter() - start)
    return ids[0].tolist(), step_seconds


def beam_search(decoder, image_embeds, num_beams, max_length, min_length, length_penalty=1.0):
    """transformers 4.30.2 beam search for one image; returns the best sequence, [DEC] first."""
    import torch

    states = image_embeds.repeat_interleave(num_beams, dim=0)
    encoder_mask = extended_mask(num_beams, 1, states.shape[1], 0, causal=False)
    ids = torch.full((num_beams, 1), BOS_ID, dtype=torch.long)
    beam_scores = torch.zeros(num_beams)
    beam_scores[1:] = -1e9
    hypotheses = import_demo_modules().BeamHypotheses(num_beams, length_penalty)
    past = None
    done = False
    while ids.shape[1] < max_length:
        logits, past = decoder_step(decoder, ids[:, -1:] if past is not None else ids, past, states, encoder_mask)
        scores = torch.log_softmax(logits, dim=-1)
        if ids.shape[1] < min_length:
            scores[:, SEP_ID] = -float("inf")
        scores = scores + beam_scores[:, None]
        vocab = scores.shape[-1]
        top_scores, top_indices = torch.topk(scores.view(1, -1), 2 * num_beams, dim=1, largest=True, sorted=True)
        next_beams = []
        for rank in range(2 * num_beams):
            score = float(top_scores[0, rank])
            source = int(top_indices[0, rank]) // vocab
            token = int(top_indices[0, rank]) % vocab
            if token == SEP_ID:
                if rank < num_beams:
                    hypotheses.add(ids[source].tolist(), score)
            else:
                next_beams.append((score, token, source))
            if len(next_beams) == num_beams:
                break
        done = done or hypotheses.is_done(float(top_scores.max()), ids.shape[1])
        sources = torch.tensor([source for _, _, source in next_beams])
        beam_scores = torch.tensor([score for score, _, _ in next_beams])
        tokens = torch.tensor([[token] for _, token, _ in next_beams])
        ids = torch.cat([ids[sources], tokens], dim=1)
        past = [(key.index_select(0, sources), value.index_select(0, sources)) for key, value in past]
        if done:
            break
    if not done:
        for beam in range(num_beams):
            hypotheses.add(ids[beam].tolist(), float(beam_scores[beam]))
    return max(hypotheses.beams, key=lambda item: item[0])[1]


def ones_mask(states):
    import torch

    return torch.ones(states.shape[0], states.shape[1], dtype=torch.long)


# ----------------------------------------------------------------------------------------
# FLOP counts (multiply-adds x 2) of the matrix products, for GFLOP/s figures


def vision_flops(cfg):
    width = cfg["hidden_size"]
    patches = (cfg["image_size"] // cfg["patch_size"]) ** 2
    tokens = patches + 1
    patch_macs = patches * width * 3 * cfg["patch_size"] ** 2
    per_layer = tokens * width * (3 * width + width + 2 * cfg["intermediate_size"]) + 2 * tokens * tokens * width
    return 2 * (patch_macs + cfg["num_hidden_layers"] * per_layer)


# ----------------------------------------------------------------------------------------
# Child process: one stage of one model family at one thread count


def median(values):
    return statistics.median(values) if values else None


def peak_rss_mb():
    """Return this process's peak RSS in MB.

    Reads VmHWM from /proc/self/status because ru_maxrss can belong to the parent: subprocess
    starts the children with vfork where it can, and Linux carries the high-water mark of the
    shared memory into the child's ru_maxrss across execve. Falls back to ru_maxrss where /proc
    is missing.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # "VmHWM:   123456 kB"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def blas_libraries():
    """Paths of the BLAS and LAPACK libraries mapped into this process."""
    found = set()
    with open("/proc/self/maps", encoding="utf-8") as f:
        for line in f:
            path = line.split()[-1]
            if "blas" in path or "lapack" in path:
                found.add(os.path.realpath(path))
    return sorted(found)


def vocab_ids(words):
    path = golden_dir() / "tokenizer" / "vocab.txt"
    with open(path, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): index for index, line in enumerate(f)}
    return [vocab[word] for word in words]


def run_child(args):
    import torch

    torch.set_num_threads(args.threads)
    blip_modules = import_demo_modules()
    torch.matmul(torch.ones(64, 64), torch.ones(64, 64))  # loads the BLAS library
    libraries = blas_libraries()
    if not args.allow_other_blas and not any("openblas" in path for path in libraries):
        raise SystemExit(f"PyTorch is not using OpenBLAS (mapped BLAS libraries: {libraries}); "
                         "install libopenblas0-pthread or pass --allow-other-blas")

    result = {
        "model": args.model,
        "threads": args.threads,
        "torch_num_threads": torch.get_num_threads(),
        "blas_libraries": libraries,
    }
    pixel_path = golden_dir() / "preprocess" / "cats.png.384.npy"
    pixels = torch.from_numpy(np.load(pixel_path))[None]
    stage_functions = {"caption": run_caption, "itm": run_itm, "vqa": run_vqa}
    with torch.no_grad():
        result.update(stage_functions[args.stage](args, blip_modules, pixels))
    result.setdefault(f"{args.stage}_peak_rss_mb", peak_rss_mb())
    print(json.dumps(result))


def time_runs(runs, function, warm_up=True):
    """Run `function` once to warm up (unless warm_up is False), then `runs` times; return (median seconds, last result)."""
    output = function() if warm_up else None
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        output = function()
        seconds.append(time.perf_counter() - start)
    return median(seconds), output


def run_caption(args, blip_modules, pixels):
    name = CAPTION_MODELS[args.model]
    manifest = load_manifest(name)
    models, checked = build_models(blip_modules, name, manifest, ["vision_model", "text_decoder"])
    vision, decoder = models["vision_model"], models["text_decoder"]
    out = {"caption_model": name, "tensor_sums_checked": checked, "caption_model_rss_mb": peak_rss_mb()}

    vision_seconds, image_embeds = time_runs(args.runs, lambda: vision(pixels))
    flops = vision_flops(manifest["config"]["vision_config"])
    out["vision_ms"] = vision_seconds * 1e3
    out["vision_gflop"] = flops / 1e9
    out["vision_gflops_per_s"] = flops / vision_seconds / 1e9

    reference_dir = golden_dir() / "fullsize"
    embeds_path = reference_dir / f"{name}.cats.png.image_embeds.npy"
    if embeds_path.is_file():
        reference = np.load(embeds_path)
        out["vision_max_abs_diff"] = float(np.abs(image_embeds[0].numpy() - reference).max())

    per_token = []
    caption = []
    ids = []
    for _ in range(args.runs):
        ids, steps = greedy_forced(decoder, image_embeds, args.tokens)
        per_token.append(sum(steps) / len(steps))
        # A whole caption is generate(max_length=30): vision plus the steps up to [SEP] or 29 tokens.
        caption_steps = steps[: args.caption_max_length - 1]
        for index, token in enumerate(ids[1 : len(caption_steps) + 1]):
            if token == SEP_ID:
                caption_steps = caption_steps[: index + 1]
                break
        caption.append(vision_seconds + sum(caption_steps))
    out["greedy_tokens"] = args.tokens
    out["greedy_ms_per_token"] = median(per_token) * 1e3
    out["caption_ms"] = median(caption) * 1e3
    out["greedy_ids"] = ids

    beam_seconds, beam_ids = time_runs(args.beam_runs, lambda: beam_search(
        decoder, image_embeds, args.beams, args.caption_max_length, args.beam_min_length), warm_up=False)
    out["beam_ms"] = beam_seconds * 1e3
    out["beam_settings"] = {"num_beams": args.beams, "max_length": args.caption_max_length, "min_length": args.beam_min_length}
    out["beam_ids"] = beam_ids

    reference_json = reference_dir / f"{name}.cats.png.json"
    if reference_json.is_file():
        with open(reference_json, encoding="utf-8") as f:
            reference = json.load(f)
        greedy_ref = reference["greedy_max30"]
        out["greedy_matches_reference"] = ids[: len(greedy_ref)] == greedy_ref[: len(ids)]
        if args.beams == 3 and args.caption_max_length == 30 and args.beam_min_length == 5:
            out["beam_matches_reference"] = beam_ids == reference["beam3_min5_max30"]

    # The peak of the stages above. The whole-caption stage builds its own models after
    # these are freed, and its peak is reported apart.
    out["caption_peak_rss_mb"] = peak_rss_mb()
    weights = Path(args.work_dir) / f"{name}.pt"
    save_weights(weights, vision, decoder)
    del models, vision, decoder, image_embeds
    out.update(run_whole_caption(args, blip_modules, manifest, weights))
    out["whole_caption_peak_rss_mb"] = peak_rss_mb()
    return out


def save_weights(path, vision, decoder):
    """Save the rule-filled state dicts with torch.save, unless an earlier child did."""
    import torch

    if path.is_file():
        return
    partial = path.with_name(path.name + ".partial")
    torch.save({"vision_model": vision.state_dict(), "text_decoder": decoder.state_dict()}, partial)
    os.replace(partial, path)


def resized_image(path, size):
    """Decode `path` with Pillow and resize it as BlipImageProcessor does: RGB, bicubic, size x size.

    Returns uint8 [size, size, 3].
    """
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def preprocess_image(path, size):
    """Return BlipImageProcessor's pixel_values [1, 3, size, size] for the image file `path`.

    Rescales by 1/255 in double, rounded once to float32, then normalizes with the CLIP mean
    and std in float32.
    """
    import torch

    x = (resized_image(path, size) * (1.0 / 255.0)).astype(np.float32)
    x = (x - np.array(IMAGE_MEAN, dtype=np.float32)) / np.array(IMAGE_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def run_whole_caption(args, blip_modules, manifest, weights):
    """Time a whole caption from the weights file on: build the modules, torch.load and
    load_state_dict, decode and preprocess args.jpeg, vision, and WHOLE_CAPTION_TOKENS greedy
    tokens. One warm-up run (which also puts the file in the page cache), then the median of
    args.runs runs, in total and per part.

    Building the modules runs torch's default initializers. That part is timed apart from
    loading the file, so that the total can be judged with or without it.
    """
    import torch

    vision_cfg = manifest["config"]["vision_config"]
    text_cfg = text_config(manifest)
    size = vision_cfg["image_size"]
    parts = {"construct": [], "load": [], "preprocess": [], "vision": [], "decode": [], "total": []}
    ids = []
    for run in range(args.runs + 1):
        start = time.perf_counter()
        vision = blip_modules.BlipVisionModel(vision_cfg).eval()
        decoder = blip_modules.BlipTextLMHeadModel(text_cfg).eval()
        built = time.perf_counter()
        state = torch.load(weights)
        vision.load_state_dict(state["vision_model"])
        decoder.load_state_dict(state["text_decoder"])
        del state
        loaded = time.perf_counter()
        pixels = preprocess_image(args.jpeg, size)
        preprocessed = time.perf_counter()
        image_embeds = vision(pixels)
        encoded = time.perf_counter()
        ids, _ = greedy_forced(decoder, image_embeds, WHOLE_CAPTION_TOKENS)
        end = time.perf_counter()
        del vision, decoder
        if run == 0:
            continue  # warm-up
        for part, seconds in (("construct", built - start), ("load", loaded - built), ("preprocess", preprocessed - loaded),
                              ("vision", encoded - preprocessed), ("decode", end - encoded), ("total", end - start)):
            parts[part].append(seconds)
    out = {f"whole_caption_{part}_ms": median(seconds) * 1e3 for part, seconds in parts.items() if part != "total"}
    out["whole_caption_ms"] = median(parts["total"]) * 1e3
    out["whole_caption_tokens"] = WHOLE_CAPTION_TOKENS
    out["whole_caption_ids"] = ids
    out["whole_caption_image"] = str(args.jpeg)
    reference = golden_dir() / "preprocess" / f"{Path(args.jpeg).name}.384.u8.npy"
    if size == 384 and reference.is_file():
        resized = resized_image(args.jpeg, size).astype(np.int16)
        out["whole_caption_u8_max_diff_vs_reference"] = int(np.abs(resized - np.load(reference).astype(np.int16)).max())
    return out


def run_itm(args, blip_modules, pixels):
    import torch

    name = ITM_MODELS[args.model]
    manifest = load_manifest(name)
    models, _ = build_models(blip_modules, name, manifest, ["vision_model", "text_encoder"])
    vision, encoder = models["vision_model"], models["text_encoder"]
    width = manifest["config"]["text_config"]["hidden_size"]
    itm_head = build_linear(manifest, "itm_head", width, 2)
    ids = [101] + vocab_ids(ITM_TEXT.split()) + [SEP_ID]
    mask = [1] * len(ids) + [0] * (ITM_LENGTH - len(ids))
    ids = ids + [PAD_ID] * (ITM_LENGTH - len(ids))
    input_ids = torch.tensor([ids])
    attention_mask = torch.tensor([mask])

    def itm():
        image_embeds = vision(pixels)
        states = encoder(input_ids, attention_mask, image_embeds, ones_mask(image_embeds), is_decoder=False)
        return itm_head(states[:, 0, :]).softmax(dim=-1)

    seconds, probabilities = time_runs(args.runs, itm)
    return {"itm_model": name, "itm_ms": seconds * 1e3, "itm_prob": float(probabilities[0, 1])}


def run_vqa(args, blip_modules, pixels):
    import torch

    name = VQA_MODELS[args.model]
    manifest = load_manifest(name)
    models, _ = build_models(blip_modules, name, manifest, ["vision_model", "text_encoder", "text_decoder"])
    vision, encoder, decoder = models["vision_model"], models["text_encoder"], models["text_decoder"]
    question = torch.tensor([[101] + vocab_ids(VQA_QUESTION.split()) + [SEP_ID]])

    def vqa():
        image_embeds = vision(pixels)
        question_states = encoder(question, None, image_embeds, ones_mask(image_embeds), is_decoder=False)
        ids, _ = greedy_forced(decoder, question_states, VQA_MAX_LENGTH - 1)
        return ids

    seconds, answer = time_runs(args.runs, vqa)
    return {"vqa_model": name, "vqa_ms": seconds * 1e3, "vqa_answer_tokens": VQA_MAX_LENGTH - 1, "vqa_ids": answer}


# ----------------------------------------------------------------------------------------
# Parent process: children, ONNX and blip-bench results, speed-ups


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_children(args):
    """Run one child per (model, thread count, stage) and merge each (model, thread count)'s results."""
    stage_models = {"caption": CAPTION_MODELS, "itm": ITM_MODELS, "vqa": VQA_MODELS}
    results = []
    for model in args.models:
        for threads in args.threads:
            merged = {}
            for stage in args.stages:
                if model not in stage_models[stage]:
                    continue
                merged.update(run_child_process(args, model, threads, stage))
            results.append(merged)
    return results


def run_child_process(args, model, threads, stage):
    env = dict(os.environ)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[variable] = str(threads)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", model, "--stage", stage,
               "--threads", str(threads), "--runs", str(args.runs), "--beam-runs", str(args.beam_runs),
               "--tokens", str(args.tokens), "--beams", str(args.beams),
               "--caption-max-length", str(args.caption_max_length), "--beam-min-length", str(args.beam_min_length),
               "--jpeg", str(args.jpeg), "--work-dir", str(args.work_dir)]
    if args.allow_other_blas:
        command.append("--allow-other-blas")
    print(f"compare_torch: {stage}, {model}, {threads} thread(s)...", file=sys.stderr, flush=True)
    completed = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"child for stage {stage}, model {model}, {threads} thread(s) failed with exit code "
                         f"{completed.returncode}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def find_entry(entries, **keys):
    for entry in entries:
        if all(entry.get(key) == value for key, value in keys.items()):
            return entry
    return None


def speedups(torch_results, ours, onnx):
    """Rows of (stage, model, threads, reference tool, reference ms, our weight type, ours ms, speed-up).

    Every stage compares blip-bench's f32 row with the reference. The whole caption also
    compares every other weight type that blip-bench ran (q8_0 for the requirement).
    """
    rows = []
    stages = [("vision_ms", "vision encoder"), ("greedy_ms_per_token", "greedy ms/token"),
              ("beam_ms", "beam search"), ("caption_ms", "caption"), ("itm_ms", "ITM"), ("vqa_ms", "VQA"),
              ("caption_peak_rss_mb", "caption peak RSS MB")]
    our_entries = (ours or {}).get("results", [])
    our_types = list(dict.fromkeys(entry["type"] for entry in our_entries if entry.get("type")))
    for reference in torch_results:
        mine = find_entry(our_entries, model=reference["model"], threads=reference["threads"], type="f32")
        for key, label in stages:
            if reference.get(key) is None:
                continue
            value = mine.get(key) if mine else None
            rows.append((label, reference["model"], reference["threads"], "pytorch", reference[key], "f32", value,
                         reference[key] / value if value else None))
        if reference.get("whole_caption_ms") is None:
            continue
        for our_type in ["f32"] + [t for t in our_types if t != "f32"]:
            mine = find_entry(our_entries, model=reference["model"], threads=reference["threads"], type=our_type)
            value = mine.get("whole_caption_ms") if mine else None
            rows.append(("whole caption", reference["model"], reference["threads"], "pytorch",
                         reference["whole_caption_ms"], our_type, value,
                         reference["whole_caption_ms"] / value if value else None))
    for reference in (onnx or {}).get("results", []):
        mine = find_entry(our_entries, model=reference["model"], threads=reference["threads"], type="f32")
        value = mine.get("vision_ms") if mine else None
        rows.append(("vision encoder", reference["model"], reference["threads"], "onnxruntime", reference["vision_ms"],
                     "f32", value, reference["vision_ms"] / value if value else None))
    return rows


def agreement(torch_results, ours):
    """Check that blip-bench (f32) computed what PyTorch computed.

    Compares the greedy, beam and VQA ids and the ITM probability (within 1e-4).
    """
    checks = []
    for reference in torch_results:
        mine = find_entry((ours or {}).get("results", []), model=reference["model"], threads=reference["threads"], type="f32")
        if not mine:
            continue
        for key in ("greedy_ids", "beam_ids", "vqa_ids"):
            if key in reference and key in mine:
                common = min(len(reference[key]), len(mine[key]))
                checks.append({"model": reference["model"], "threads": reference["threads"], "check": key,
                               "ok": reference[key][:common] == mine[key][:common]})
        if "itm_prob" in reference and "itm_prob" in mine:
            checks.append({"model": reference["model"], "threads": reference["threads"], "check": "itm_prob",
                           "ok": abs(reference["itm_prob"] - mine["itm_prob"]) <= 1e-4})
    return checks


def print_table(rows):
    header = (f"{'stage':<20} {'model':<6} {'thr':>3} {'reference':<12} {'ref ms':>10} {'ours':<5} {'ours ms':>10} "
              f"{'ratio':>8}")
    print("ratio = reference / ours: the speed-up for times, the memory saving for the RSS row (values in MB);\n"
          "ours = blip-bench's weight type (the reference runs f32)", file=sys.stderr)
    print(header, file=sys.stderr)
    for label, model, threads, tool, reference_ms, our_type, ours_ms, ratio in rows:
        ours_text = f"{ours_ms:10.1f}" if ours_ms else f"{'-':>10}"
        ratio_text = f"{ratio:8.2f}" if ratio else f"{'-':>8}"
        print(f"{label:<20} {model:<6} {threads:>3} {tool:<12} {reference_ms:10.1f} {our_type:<5} {ours_text} "
              f"{ratio_text}", file=sys.stderr)


def parse_list(text, convert=str):
    return [convert(item) for item in text.split(",") if item]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="base", help="comma-separated: base, large (default base)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per stage after one warm-up; the median is reported")
    parser.add_argument("--beam-runs", type=int, default=1, help="beam searches per model; the median is reported (default 1)")
    parser.add_argument("--tokens", type=int, default=30, help="greedy tokens per run; [SEP] does not stop them (default 30)")
    parser.add_argument("--beams", type=int, default=3, help="beams of the beam search (default 3)")
    parser.add_argument("--caption-max-length", type=int, default=30,
                        help="max_length of the caption and beam search, [DEC] included (default 30)")
    parser.add_argument("--beam-min-length", type=int, default=5, help="min_length of the beam search (default 5)")
    parser.add_argument("--stages", default="caption,itm,vqa", help="comma-separated: caption, itm, vqa")
    parser.add_argument("--jpeg", type=Path, default=golden_dir() / "images" / "bike.jpg",
                        help="JPEG of the whole-caption stage (default the golden images/bike.jpg)")
    parser.add_argument("--work-dir", type=Path,
                        help="folder for the saved weights of the whole-caption stage, kept and reused by later runs "
                             "(default a new temporary folder, removed at the end)")
    parser.add_argument("--ours", type=Path, help="blip-bench --json output to compare with")
    parser.add_argument("--onnx", type=Path, help="bench/onnx/run_vision.mjs output to compare with")
    parser.add_argument("--output", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--allow-other-blas", action="store_true", help="run even when torch does not use OpenBLAS")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=["caption", "itm", "vqa"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.stages = parse_list(args.stages)
    for stage in args.stages:
        if stage not in ("caption", "itm", "vqa"):
            parser.error(f"unknown stage {stage!r} in --stages; use caption, itm, vqa")
    if args.runs < 1 or args.beam_runs < 1 or args.tokens < 1:
        parser.error("--runs, --beam-runs and --tokens must be at least 1")

    if args.child:
        args.threads = int(args.threads)
        run_child(args)
        return

    args.models = parse_list(args.models)
    args.threads = parse_list(args.threads, int)
    for model in args.models:
        if model not in CAPTION_MODELS:
            parser.error(f"unknown model {model!r}; use base or large")
    if "caption" in args.stages and not args.jpeg.is_file():
        parser.error(f"--jpeg {args.jpeg} not found; set BLIP_GOLDEN_DIR to the golden folder or pass --jpeg")
    with tempfile.TemporaryDirectory(prefix="compare-torch-") as temporary:
        if args.work_dir is None:
            args.work_dir = Path(temporary)
        else:
            args.work_dir.mkdir(parents=True, exist_ok=True)
        results = run_children(args)
    report = {
        "tool": "pytorch",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable] + sys.argv),
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    import torch  # only for its version; the children did the work

    report["torch_version"] = torch.__version__
    ours = json.loads(args.ours.read_text()) if args.ours else None
    onnx = json.loads(args.onnx.read_text()) if args.onnx else None
    if onnx:
        report["onnxruntime"] = onnx
    checks = agreement(report["results"], ours)
    if checks:
        report["agreement"] = checks
        failed = [f"{c['check']} ({c['model']}, {c['threads']} thread(s))" for c in checks if not c["ok"]]
        print("outputs of blip-bench and PyTorch " + ("differ: " + ", ".join(failed) if failed else "agree"),
              file=sys.stderr)
    rows = speedups(report["results"], ours, onnx)
    if rows:
        report["speedups"] = [dict(zip(("stage", "model", "threads", "reference", "reference_ms", "ours_type", "ours_ms",
                                        "speedup"), row))
                              for row in rows]
        print_table(rows)
    text = json.dumps(report, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
