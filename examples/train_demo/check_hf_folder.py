#!/usr/bin/env python3
"""Load an exported BLIP folder back into the PyTorch module tree and run it on images.

The folder's task comes from the tensor names: `text_decoder` alone is a captioner,
`text_encoder` with `text_decoder` answers questions, `itm_head` matches images and texts.
Every tensor of model.safetensors must fill a module parameter or buffer, and every
parameter must be present, so a renamed or missing tensor fails loudly.

    python3 check_hf_folder.py ../../build-demo/hf/caption ../images/shapes_one.png
    python3 check_hf_folder.py ../../build-demo/hf/vqa IMAGE --question "how many shapes are there?"
    python3 check_hf_folder.py ../../build-demo/hf/itm IMAGE --text "a big red circle"
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import (  # noqa: E402
    BlipTextLMHeadModel,
    BlipTextModel,
    BlipVisionModel,
    WordTokenizer,
    greedy_decode,
    load_safetensors,
)


def read_json(folder, name):
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


def load_into(module, tensors, prefix, used):
    """Load every tensor under prefix into module, requiring an exact key match."""
    own = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
    expected = set(module.state_dict())
    if set(own) != expected:
        missing = sorted(expected - set(own))
        extra = sorted(set(own) - expected)
        raise SystemExit(f"{prefix}: tensors do not match the module tree; missing {missing[:5]}, unexpected {extra[:5]}")
    module.load_state_dict(own)
    used.update(prefix + name for name in own)


def preprocess(path, processor):
    """Convert to RGB, resize bicubically to the configured size, rescale and normalize."""
    image = Image.open(path).convert("RGB")
    size = (processor["size"]["width"], processor["size"]["height"])
    if image.size != size:
        image = image.resize(size, Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).to(torch.float64)
    x = (x * processor["rescale_factor"]).to(torch.float32)
    mean = torch.tensor(processor["image_mean"]).view(3, 1, 1)
    std = torch.tensor(processor["image_std"]).view(3, 1, 1)
    return ((x - mean) / std)[None]


def main():
    parser = argparse.ArgumentParser(description="Run an exported BLIP folder on images.")
    parser.add_argument("folder", help="Hugging Face folder written by train.py")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--question", default="how many shapes are there?", help="VQA question")
    parser.add_argument("--text", default="a small red circle", help="ITM text to score")
    parser.add_argument("--max-length", type=int, default=20, help="generation length limit, [DEC] included")
    args = parser.parse_args()

    config = read_json(args.folder, "config.json")
    processor = read_json(args.folder, "preprocessor_config.json")
    special = read_json(args.folder, "special_tokens_map.json")
    vision_cfg = config["vision_config"]
    text_cfg = config["text_config"]
    tokenizer = WordTokenizer.from_folder(args.folder)
    bos = tokenizer.id(special["bos_token"])
    sep = tokenizer.id(special["sep_token"])
    pad = tokenizer.id(special["pad_token"])
    cls = tokenizer.id(special["cls_token"])
    enc = tokenizer.id(special["additional_special_tokens"][0])
    if (bos, sep, pad) != (text_cfg["bos_token_id"], text_cfg["sep_token_id"], text_cfg["pad_token_id"]):
        raise SystemExit("config.json bos/sep/pad token ids differ from the ids of special_tokens_map.json's tokens")
    if text_cfg["vocab_size"] != len(tokenizer.vocab):
        raise SystemExit(f"vocab_size {text_cfg['vocab_size']} != {len(tokenizer.vocab)} tokens in vocab.txt + added_tokens.json")

    tensors = load_safetensors(os.path.join(args.folder, "model.safetensors"))
    used = set()
    vision = BlipVisionModel(vision_cfg).eval()
    load_into(vision, tensors, "vision_model.", used)
    has_encoder = any(n.startswith("text_encoder.") for n in tensors)
    has_decoder = any(n.startswith("text_decoder.") for n in tensors)

    if has_encoder:
        encoder = BlipTextModel(text_cfg).eval()
        load_into(encoder, tensors, "text_encoder.", used)
    if has_decoder:
        decoder = BlipTextLMHeadModel(text_cfg).eval()
        load_into(decoder, tensors, "text_decoder.", used)
        for tied, source in (("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
                             ("cls.predictions.decoder.bias", "cls.predictions.bias")):
            if not torch.equal(tensors["text_decoder." + tied], tensors["text_decoder." + source]):
                raise SystemExit(f"text_decoder.{tied} differs from its tied twin text_decoder.{source}")
    heads = {}
    if "itm_head.weight" in tensors:
        width = config["image_text_hidden_size"]
        heads = {
            "vision_proj.": nn.Linear(vision_cfg["hidden_size"], width),
            "text_proj.": nn.Linear(text_cfg["hidden_size"], width),
            "itm_head.": nn.Linear(text_cfg["hidden_size"], 2),
        }
        for prefix, module in heads.items():
            load_into(module, tensors, prefix, used)
    if used != set(tensors):
        raise SystemExit(f"tensors not used by any module: {sorted(set(tensors) - used)[:5]}")

    with torch.no_grad():
        for path in args.images:
            image = vision(preprocess(path, processor))
            if heads:
                ids = torch.tensor([[enc] + tokenizer.encode(args.text) + [sep]])
                states = encoder(ids, None, image)
                match = heads["itm_head."](states[:, 0]).softmax(-1)[0, 1].item()
                ids[0, 0] = cls
                text_feat = F.normalize(heads["text_proj."](encoder(ids)[:, 0]), dim=-1)
                image_feat = F.normalize(heads["vision_proj."](image[:, 0]), dim=-1)
                cosine = (text_feat * image_feat).sum().item()
                print(f"{path}: '{args.text}' match probability {match:.3f}, ITC cosine {cosine:.3f}")
            elif has_encoder:
                ids = torch.tensor([[enc] + tokenizer.encode(args.question) + [sep]])
                states = encoder(ids, None, image)
                out = greedy_decode(decoder, states, None, bos, sep, pad, 10)
                print(f"{path}: {args.question} {tokenizer.decode(out[0].tolist())}")
            else:
                out = greedy_decode(decoder, image, None, bos, sep, pad, args.max_length)
                print(f"{path}: {tokenizer.decode(out[0].tolist())}")


if __name__ == "__main__":
    main()
