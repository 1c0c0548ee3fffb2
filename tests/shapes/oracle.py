"""Reference BLIP inference in PyTorch for the shape cases: examples/train_demo/model.py's
module tree, plus what it lacks to stand in for transformers 4.30.2 on Hugging Face BLIP
folders like the golden tiny models and those make_shape_cases.py writes (model.safetensors,
GELU activations). That is a BERT WordPiece tokenizer, BlipImageProcessor's preprocessing,
greedy and beam search with the logits processors of generate(), and the VQA, ITM and ITC
heads.

check_golden.py shows that this reproduces the transformers outputs in the golden folder.
Run with Debian's /usr/bin/python3 (python3-torch, python3-numpy, python3-pil).
"""

import json
import os
import sys
import unicodedata

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(REPOSITORY, "examples", "train_demo"))
from model import (  # noqa: E402
    BeamHypotheses,
    BlipTextLMHeadModel,
    BlipTextModel,
    BlipVisionModel,
    load_safetensors,
)


# ----------------------------------------------------------------------------------------
# BertTokenizer (transformers 4.30.2, tokenization_bert.py): basic tokenization, then
# greedy longest-match WordPiece.


def _is_whitespace(char):
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char):
    if char in "\t\n\r":
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char):
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(code):
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
            or 0x2A700 <= code <= 0x2B73F or 0x2B740 <= code <= 0x2B81F or 0x2B820 <= code <= 0x2CEAF
            or 0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F)


class BertTokenizer:
    """Uncased BertTokenizer with BLIP's added tokens, for ASCII and Latin text."""

    def __init__(self, vocab, added_tokens, special):
        self.vocab = {}
        for index, token in enumerate(vocab):
            self.vocab[token] = index  # later lines win, as in load_vocab
        self.added = dict(added_tokens)
        self.vocab.update(self.added)
        self.special = special

    @classmethod
    def from_folder(cls, folder):
        with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as f:
            vocab = f.read().split("\n")
        if vocab and vocab[-1] == "":
            vocab.pop()
        added = read_json(folder, "added_tokens.json")
        special = read_json(folder, "special_tokens_map.json")
        return cls(vocab, added, special)

    def id(self, token):
        return self.vocab[token]

    def _basic(self, text):
        cleaned = "".join(" " if _is_whitespace(c) else c for c in text
                          if ord(c) not in (0, 0xFFFD) and not _is_control(c))
        spaced = "".join(f" {c} " if _is_chinese_char(ord(c)) else c for c in cleaned)
        words = []
        for word in spaced.split():
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(c for c in word if unicodedata.category(c) != "Mn")
            current = ""
            for char in word:
                if _is_punctuation(char):
                    if current:
                        words.append(current)
                    words.append(char)
                    current = ""
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def _wordpiece(self, word):
        if len(word) > 100:
            return [self.special["unk_token"]]
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            piece = None
            while start < end:
                candidate = word[start:end] if start == 0 else "##" + word[start:end]
                if candidate in self.vocab:
                    piece = candidate
                    break
                end -= 1
            if piece is None:
                return [self.special["unk_token"]]
            pieces.append(piece)
            start = end
        return pieces

    def encode(self, text):
        """Return [CLS] + WordPiece ids of `text` + [SEP].

        NOTE: special tokens written in the text ("[MASK]") are tokenized as plain text here,
        which transformers does only in some contexts. The shape cases contain none.
        """
        ids = [self.id(self.special["cls_token"])]
        for word in self._basic(text):
            ids.extend(self.id(piece) for piece in self._wordpiece(word))
        ids.append(self.id(self.special["sep_token"]))
        return ids


# ----------------------------------------------------------------------------------------
# Folder loading


def read_json(folder, name):
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


def _load_into(module, tensors, prefix, used):
    own = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
    expected = set(module.state_dict())
    missing = expected - set(own)
    # Folders without tied duplicates and position_ids (as the published checkpoints are)
    # take them from their twins.
    tied = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias"}
    for name in sorted(missing):
        if name in tied and tied[name] in own:
            own[name] = own[tied[name]]
        elif name.endswith("position_ids"):
            own[name] = module.state_dict()[name]
    if set(own) != expected:
        raise SystemExit(f"{prefix}: tensors do not match the module tree; missing {sorted(expected - set(own))[:5]}, "
                         f"unexpected {sorted(set(own) - expected)[:5]}")
    module.load_state_dict(own)
    used.update(prefix + name for name in own)


class BlipFolder:
    """A Hugging Face BLIP folder (caption, vqa or itm) loaded into the module tree."""

    def __init__(self, folder):
        self.folder = folder
        self.config = read_json(folder, "config.json")
        self.processor = read_json(folder, "preprocessor_config.json")
        self.tokenizer = BertTokenizer.from_folder(folder)
        vision_cfg = self.config["vision_config"]
        # transformers' BlipConfig sets the cross-attention width to the vision width.
        text_cfg = dict(self.config["text_config"], encoder_hidden_size=vision_cfg["hidden_size"])
        self.bos = text_cfg["bos_token_id"]
        self.eos = text_cfg["sep_token_id"]  # transformers' BLIP generate() stops at sep_token_id
        self.pad = text_cfg["pad_token_id"]
        self.cls = self.tokenizer.id(self.tokenizer.special["cls_token"])
        self.enc = self.tokenizer.id(self.tokenizer.special["additional_special_tokens"][0])

        tensors = load_safetensors(os.path.join(folder, "model.safetensors"))
        used = set()
        self.vision = BlipVisionModel(vision_cfg).eval()
        _load_into(self.vision, tensors, "vision_model.", used)
        self.encoder = self.decoder = None
        if any(n.startswith("text_encoder.") for n in tensors):
            self.encoder = BlipTextModel(text_cfg).eval()
            _load_into(self.encoder, tensors, "text_encoder.", used)
        if any(n.startswith("text_decoder.") for n in tensors):
            self.decoder = BlipTextLMHeadModel(text_cfg).eval()
            _load_into(self.decoder, tensors, "text_decoder.", used)
        self.heads = None
        if "itm_head.weight" in tensors:
            width = self.config["image_text_hidden_size"]
            self.heads = {
                "vision_proj.": nn.Linear(vision_cfg["hidden_size"], width),
                "text_proj.": nn.Linear(text_cfg["hidden_size"], width),
                "itm_head.": nn.Linear(text_cfg["hidden_size"], 2),
            }
            for prefix, module in self.heads.items():
                _load_into(module, tensors, prefix, used)
        unused = set(tensors) - used
        if unused:
            raise SystemExit(f"{folder}: tensors not used by any module: {sorted(unused)[:5]}")

    # -- inputs --

    def preprocess(self, path):
        """Return BlipImageProcessor's pixel values: RGB, bicubic resize by Pillow, rescale in double, normalize in float32."""
        image = Image.open(path).convert("RGB")
        size = (self.processor["size"]["width"], self.processor["size"]["height"])
        if image.size != size:
            image = image.resize(size, Image.BICUBIC)
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).to(torch.float64)
        x = (x * self.processor["rescale_factor"]).to(torch.float32)
        mean = torch.tensor(self.processor["image_mean"], dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.processor["image_std"], dtype=torch.float32).view(3, 1, 1)
        return (x - mean) / std

    # -- outputs --

    @torch.no_grad()
    def image_embeds(self, pixel_values):
        """Return last_hidden_state [tokens, width] of one CHW image."""
        return self.vision(pixel_values[None])[0]

    @torch.no_grad()
    def pooled(self, image_embeds):
        return self.vision.post_layernorm(image_embeds[0])

    @torch.no_grad()
    def decoder_logits(self, states, ids):
        """Return the logits [vocab] after `ids` (starting with [DEC]) with cross-attention to `states`."""
        return self.decoder(torch.tensor([ids]), None, states[None], None)[0, -1]

    @torch.no_grad()
    def encode(self, ids, states=None, attention_mask=None):
        """Return the text encoder output [tokens, width], cross-attending to `states` when given."""
        mask = None if attention_mask is None else torch.tensor([attention_mask])
        source = None if states is None else states[None]
        return self.encoder(torch.tensor([ids]), mask, source)[0]

    def question_embeds(self, image_embeds, question_ids):
        return self.encode(question_ids, image_embeds)

    @torch.no_grad()
    def itm_logits(self, image_embeds, ids, attention_mask=None):
        states = self.encode(ids, image_embeds, attention_mask)
        return self.heads["itm_head."](states[0])

    @torch.no_grad()
    def image_feat(self, image_embeds):
        return F.normalize(self.heads["vision_proj."](image_embeds[0]), dim=-1)

    @torch.no_grad()
    def text_feat(self, ids, attention_mask=None):
        return F.normalize(self.heads["text_proj."](self.encode(ids, None, attention_mask)[0]), dim=-1)

    def generate(self, states, prefix, max_length, num_beams=1, **options):
        if num_beams == 1:
            return greedy_search(self.decoder, states, prefix, self.eos, self.pad, max_length, **options)
        return beam_search(self.decoder, states, prefix, self.eos, self.pad, max_length, num_beams, **options)


# ----------------------------------------------------------------------------------------
# Generation as transformers 4.30.2 runs it (generation/utils.py, beam_search.py,
# logits_process.py). The decoder recomputes the whole sequence at each step.


def process_logits(ids, scores, eos, min_length=0, repetition_penalty=1.0):
    """Apply MinLengthLogitsProcessor and RepetitionPenaltyLogitsProcessor to scores [rows, vocab]."""
    if repetition_penalty != 1.0:
        previous = torch.gather(scores, 1, ids)
        previous = torch.where(previous < 0, previous * repetition_penalty, previous / repetition_penalty)
        scores = scores.scatter(1, ids, previous)
    if ids.shape[1] < min_length:
        scores = scores.clone()
        scores[:, eos] = -float("inf")
    return scores


@torch.no_grad()
def greedy_search(decoder, states, prefix, eos, pad, max_length, min_length=0, repetition_penalty=1.0):
    """Continue `prefix` ([DEC] and any prompt) greedily up to max_length tokens, as one sequence."""
    ids = torch.tensor([prefix])
    done = False
    while ids.shape[1] < max_length and not done:
        logits = decoder(ids, None, states[None], None)[:, -1]
        logits = process_logits(ids, logits, eos, min_length, repetition_penalty)
        token = int(logits.argmax(dim=-1))
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        done = token == eos
    return ids[0].tolist()


@torch.no_grad()
def beam_search(decoder, states, prefix, eos, pad, max_length, num_beams, length_penalty=1.0, min_length=0,
                repetition_penalty=1.0, candidates=None):
    """Run beam search for one sequence and return the best hypothesis as generate() pads it.

    When `candidates` is a list, each step appends the 2 * num_beams + 1 best scores to it.
    """
    ids = torch.tensor([prefix] * num_beams)
    beam_scores = torch.zeros(num_beams)
    beam_scores[1:] = -1e9
    hyps = BeamHypotheses(num_beams, length_penalty)
    source = states[None].expand(num_beams, -1, -1)
    while True:
        logits = decoder(ids, None, source, None)[:, -1]
        scores = F.log_softmax(logits, dim=-1)
        scores = process_logits(ids, scores, eos, min_length, repetition_penalty)
        scores = scores + beam_scores[:, None]
        vocab = scores.shape[-1]
        top_scores, top_tokens = torch.topk(scores.view(1, -1), 2 * num_beams, dim=1, largest=True, sorted=True)
        if candidates is not None:
            candidates.append(torch.topk(scores.view(-1), 2 * num_beams + 1).values.tolist())
        next_beam_scores = torch.zeros(num_beams)
        next_tokens = torch.zeros(num_beams, dtype=torch.long)
        next_indices = torch.zeros(num_beams, dtype=torch.long)
        beam = 0
        for rank, (token, score) in enumerate(zip(top_tokens[0].tolist(), top_scores[0].tolist())):
            index = token // vocab
            token = token % vocab
            if token == eos:
                # An end of sequence below the top num_beams candidates is dropped.
                if rank >= num_beams:
                    continue
                hyps.add(ids[index].tolist(), score)
            else:
                next_beam_scores[beam] = score
                next_tokens[beam] = token
                next_indices[beam] = index
                beam += 1
            if beam == num_beams:
                break
        done = hyps.is_done(float(top_scores.max()), ids.shape[1])
        beam_scores = next_beam_scores
        ids = torch.cat([ids[next_indices], next_tokens[:, None]], dim=1)
        if done or ids.shape[1] >= max_length:
            break
    if not done:
        for beam in range(num_beams):
            hyps.add(ids[beam].tolist(), float(beam_scores[beam]))
    best = sorted(hyps.beams, key=lambda item: item[0])[-1][1]
    if len(best) < max_length:
        best = best + [eos]
    return best
