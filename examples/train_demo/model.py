"""BLIP module tree in plain PyTorch, with Hugging Face transformers' names and numerics.

The classes mirror `BlipVisionModel`, `BlipTextModel` and `BlipTextLMHeadModel` of
transformers 4.30.2 (`src/transformers/models/blip/`), so `state_dict()` keys match the
keys of `BlipForConditionalGeneration`, `BlipForQuestionAnswering` and
`BlipForImageTextRetrieval` checkpoints after a prefix is added. The numerics follow the
same files. The ViT is pre-norm, with a fused qkv projection and a final post_layernorm.
The BERT layers are post-norm and contain self-attention, cross-attention (run only when
encoder states are given) and a feed-forward block. GELU is the exact (erf) form, masks add
-10000, and the LM head applies dense + GELU + LayerNorm before a decoder that is tied to
the word embeddings.

This file also contains the small tokenizer and the safetensors reader and writer that the
training script and `check_hf_folder.py` share, and the beam hypotheses of transformers' beam
search that `bench/compare_torch.py` and `tests/shapes/oracle.py` share.
"""

import json
import math
import os
import re
import struct

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

MASK_VALUE = -10000.0  # what transformers adds to the scores of masked positions


# ----------------------------------------------------------------------------------------
# Vision transformer (BlipVisionModel)


class BlipVisionEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width = cfg["hidden_size"]
        patch = cfg["patch_size"]
        positions = (cfg["image_size"] // patch) ** 2 + 1
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, width))
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.position_embedding = nn.Parameter(torch.zeros(1, positions, width))

    def forward(self, pixel_values):
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        return tokens + self.position_embedding[:, : tokens.shape[1]]


class BlipAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.width = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.qkv = nn.Linear(self.width, 3 * self.width)
        self.projection = nn.Linear(self.width, self.width)

    def forward(self, x):
        batch, length, _ = x.shape
        head_dim = self.width // self.heads
        qkv = self.qkv(x).reshape(batch, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(qkv[0], qkv[1].transpose(-1, -2)) * head_dim**-0.5
        context = torch.matmul(scores.softmax(dim=-1), qkv[2])
        context = context.permute(0, 2, 1, 3).reshape(batch, length, self.width)
        return self.projection(context)


class BlipMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.fc2 = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class BlipEncoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        eps = cfg["layer_norm_eps"]
        self.self_attn = BlipAttention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg["hidden_size"], eps=eps)
        self.mlp = BlipMLP(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg["hidden_size"], eps=eps)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class BlipEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([BlipEncoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class BlipVisionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = BlipVisionEmbeddings(cfg)
        self.encoder = BlipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def forward(self, pixel_values):
        """Return last_hidden_state after post_layernorm, [batch, 1 + patches, width]."""
        return self.post_layernorm(self.encoder(self.embeddings(pixel_values)))


# ----------------------------------------------------------------------------------------
# BERT-style text transformer (BlipTextModel, BlipTextLMHeadModel)


class BlipTextEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], width, padding_idx=cfg["pad_token_id"])
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], width)
        self.LayerNorm = nn.LayerNorm(width, eps=cfg["layer_norm_eps"])
        # transformers 4.30 stores this buffer in its checkpoints, so it is kept persistent.
        self.register_buffer("position_ids", torch.arange(cfg["max_position_embeddings"]).expand((1, -1)))

    def forward(self, input_ids):
        positions = self.position_ids[:, : input_ids.shape[1]]
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class BlipTextSelfAttention(nn.Module):
    def __init__(self, cfg, is_cross_attention):
        super().__init__()
        width = cfg["hidden_size"]
        source = cfg["encoder_hidden_size"] if is_cross_attention else width
        self.heads = cfg["num_attention_heads"]
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(source, width)
        self.value = nn.Linear(source, width)

    def _split(self, x):
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).permute(0, 2, 1, 3)

    def forward(self, hidden, mask, source=None, source_repeat=1):
        """Attend from hidden to source (to hidden itself when source is None).

        mask is additive and broadcasts to [batch, heads, queries, keys]. With source_repeat
        k, source row i serves hidden rows i * k to i * k + k - 1. That equals repeating the
        source rows, but computes each key and value once.
        """
        keys_from = hidden if source is None else source
        query = self._split(self.query(hidden))
        key = self._split(self.key(keys_from))
        value = self._split(self.value(keys_from))
        if source_repeat > 1:
            key = key.repeat_interleave(source_repeat, dim=0)
            value = value.repeat_interleave(source_repeat, dim=0)
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.shape[-1])
        if mask is not None:
            scores = scores + mask
        context = torch.matmul(scores.softmax(dim=-1), value).permute(0, 2, 1, 3)
        return context.reshape(hidden.shape[0], hidden.shape[1], -1)


class BlipTextSelfOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BlipTextAttention(nn.Module):
    def __init__(self, cfg, is_cross_attention=False):
        super().__init__()
        self.self = BlipTextSelfAttention(cfg, is_cross_attention)
        self.output = BlipTextSelfOutput(cfg)

    def forward(self, hidden, mask, source=None, source_repeat=1):
        return self.output(self.self(hidden, mask, source, source_repeat), hidden)


class BlipTextIntermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x):
        return F.gelu(self.dense(x))


class BlipTextOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BlipTextLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = BlipTextAttention(cfg)
        self.crossattention = BlipTextAttention(cfg, is_cross_attention=True)
        self.intermediate = BlipTextIntermediate(cfg)
        self.output = BlipTextOutput(cfg)

    def forward(self, hidden, mask, encoder_states=None, encoder_mask=None, encoder_repeat=1):
        hidden = self.attention(hidden, mask)
        if encoder_states is not None:
            hidden = self.crossattention(hidden, encoder_mask, encoder_states, encoder_repeat)
        return self.output(self.intermediate(hidden), hidden)


class BlipTextEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList([BlipTextLayer(cfg) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, hidden, mask, encoder_states=None, encoder_mask=None, encoder_repeat=1):
        for layer in self.layer:
            hidden = layer(hidden, mask, encoder_states, encoder_mask, encoder_repeat)
        return hidden


def additive_mask(attention_mask, is_decoder):
    """Turn a [batch, length] 0/1 mask into an additive [batch, 1, length|1, length] mask."""
    mask = attention_mask.to(torch.float32)
    if is_decoder:
        length = mask.shape[1]
        causal = torch.tril(torch.ones(length, length, dtype=torch.float32))
        full = causal[None, :, :] * mask[:, None, :]
        return (1.0 - full[:, None, :, :]) * MASK_VALUE
    return (1.0 - mask[:, None, None, :]) * MASK_VALUE


class BlipTextModel(nn.Module):
    """BlipTextModel without the pooler (add_pooling_layer=False, as every BLIP head uses)."""

    def __init__(self, cfg):
        super().__init__()
        self.embeddings = BlipTextEmbeddings(cfg)
        self.encoder = BlipTextEncoder(cfg)

    def forward(self, input_ids, attention_mask=None, encoder_states=None, encoder_mask=None, is_decoder=False,
                encoder_repeat=1):
        """Return the last hidden state. Cross-attention runs only when encoder_states is given.

        With encoder_repeat k, text rows i * k to i * k + k - 1 cross-attend to encoder row i.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = additive_mask(attention_mask, is_decoder)
        cross_mask = None
        if encoder_states is not None and encoder_mask is not None:
            cross_mask = additive_mask(encoder_mask, False)
        return self.encoder(self.embeddings(input_ids), mask, encoder_states, cross_mask, encoder_repeat)


class BlipTextPredictionHeadTransform(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def forward(self, x):
        return self.LayerNorm(F.gelu(self.dense(x)))


class BlipTextLMPredictionHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.transform = BlipTextPredictionHeadTransform(cfg)
        self.decoder = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg["vocab_size"]))
        self.decoder.bias = self.bias  # one parameter under both names, as transformers does

    def forward(self, x):
        return self.decoder(self.transform(x))


class BlipTextOnlyMLMHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.predictions = BlipTextLMPredictionHead(cfg)

    def forward(self, x):
        return self.predictions(x)


class BlipTextLMHeadModel(nn.Module):
    """Causal text decoder with cross-attention and an LM head tied to its word embeddings."""

    def __init__(self, cfg):
        super().__init__()
        self.bert = BlipTextModel(cfg)
        self.cls = BlipTextOnlyMLMHead(cfg)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, encoder_states=None, encoder_mask=None):
        """Return logits [batch, length, vocab]; position i predicts token i + 1."""
        hidden = self.bert(input_ids, attention_mask, encoder_states, encoder_mask, is_decoder=True)
        return self.cls(hidden)


@torch.no_grad()
def greedy_decode(decoder, encoder_states, encoder_mask, bos_id, eos_id, pad_id, max_length):
    """Greedy decoding as transformers' generate() does it for BLIP.

    Every sequence starts with bos_id. max_length counts every token, bos included. A row
    that produced eos_id is padded with pad_id until all rows are done.
    """
    batch = encoder_states.shape[0]
    ids = torch.full((batch, 1), bos_id, dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    while ids.shape[1] < max_length and not bool(done.all()):
        logits = decoder(ids, None, encoder_states, encoder_mask)[:, -1]
        next_ids = logits.argmax(dim=-1)
        next_ids = torch.where(done, torch.full_like(next_ids, pad_id), next_ids)
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        done |= next_ids == eos_id
    return ids


class BeamHypotheses:
    """Finished hypotheses of one beam search, kept and ranked as transformers 4.30.2 does.

    is_done follows early_stopping=False, the default of BLIP's configurations.
    """

    def __init__(self, num_beams, length_penalty):
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.beams = []
        self.worst_score = 1e9

    def add(self, tokens, sum_logprobs):
        score = sum_logprobs / (len(tokens) ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs, cur_len):
        if len(self.beams) < self.num_beams:
            return False
        return self.worst_score >= best_sum_logprobs / cur_len**self.length_penalty


# ----------------------------------------------------------------------------------------
# Tokenizer: BERT basic tokenization (lowercase, split on spaces and punctuation) followed by
# WordPiece. The demo vocabulary contains whole words only, so WordPiece reduces to a lookup.


class WordTokenizer:
    def __init__(self, vocab, added_tokens):
        self.vocab = {token: index for index, token in enumerate(vocab)}
        self.vocab.update(added_tokens)
        self.inverse = {index: token for token, index in self.vocab.items()}

    @classmethod
    def from_folder(cls, folder):
        with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as f:
            vocab = [line.rstrip("\n") for line in f]
        with open(os.path.join(folder, "added_tokens.json"), encoding="utf-8") as f:
            added = json.load(f)
        return cls(vocab, added)

    def id(self, token):
        return self.vocab[token]

    def words(self, text):
        return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())

    def encode(self, text):
        """Return the ids of text's words, without special tokens. Raise on an unknown word."""
        ids = []
        for word in self.words(text):
            if word not in self.vocab:
                raise ValueError(f"word {word!r} of {text!r} is not in the vocabulary; add it to scenes.all_words()")
            ids.append(self.vocab[word])
        return ids

    def decode(self, ids):
        """Join the ids' tokens with spaces, skipping special tokens, and attach '?' to the word before it."""
        words = [self.inverse[i] for i in ids if not self.inverse[i].startswith("[")]
        return " ".join(words).replace(" ?", "?")


# ----------------------------------------------------------------------------------------
# safetensors: an 8-byte little-endian header length, a JSON header that maps each name to
# dtype, shape and [begin, end) byte offsets into the data section, then the raw data.

_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}
_NUMPY = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def save_safetensors(tensors, path):
    """Write a name -> tensor dict. 8-byte types come first and the data starts 8-aligned."""
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name in order:
        tensor = tensors[name].detach().contiguous().cpu()
        data = tensor.numpy().astype(tensor.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)


def load_safetensors(path):
    """Read a safetensors file into a name -> torch.Tensor dict, checking every offset."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: file is shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", blob[:8])
    if 8 + length > len(blob):
        raise ValueError(f"{path}: header length {length} runs past the end of the file")
    header = json.loads(blob[8 : 8 + length].decode("utf-8"))
    data = memoryview(blob)[8 + length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = _NUMPY[info["dtype"]]
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        if not 0 <= begin <= end <= len(data) or end - begin != count * np.dtype(dtype).itemsize:
            raise ValueError(f"{path}: tensor {name} has invalid data_offsets {info['data_offsets']}")
        array = np.frombuffer(data[begin:end], dtype=np.dtype(dtype).newbyteorder("<"))
        tensors[name] = torch.from_numpy(array.astype(dtype).reshape(info["shape"]))
    return tensors
