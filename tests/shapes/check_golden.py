#!/usr/bin/python3
"""Check oracle.py against the transformers 4.30.2 outputs of the golden folder.

Loads the tiny caption, VQA and ITM folders into oracle.py's module tree and feeds them the
stored pixel_values. Then compares image embeddings, first-step logits, generated ids,
question states, ITM probabilities and ITC features with the stored results. Also checks the
tokenizer against tokenizer/cases.jsonl and the preprocessing against the stored inputs.
Exits with status 1 when any check fails.

    /usr/bin/python3 tests/shapes/check_golden.py [GOLDEN_DIR]
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle import BertTokenizer, BlipFolder  # noqa: E402

# Tolerances that hold between two correct float32 implementations of these tiny models.
TENSOR_TOLERANCE = 1e-4
LOGITS_TOLERANCE = 1e-3

failures = []


def check(condition, description):
    print(("ok    " if condition else "FAIL  ") + description)
    if not condition:
        failures.append(description)


def max_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))))


def check_close(actual, expected, tolerance, description):
    error = max_error(actual, expected)
    check(error <= tolerance, f"{description}: max error {error:.2e}")


def load_case_json(golden, name):
    with open(os.path.join(golden, "expected", name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def pixel_values(golden, image):
    """The stored 64x64 input of `image`, which all three tiny models read."""
    return torch.from_numpy(np.load(os.path.join(golden, "expected", "tiny-caption", image + ".pixel_values.npy")))


def check_tokenizer(golden):
    vocab_folder = os.path.join(golden, "models", "tiny-caption")
    tokenizer = BertTokenizer.from_folder(vocab_folder)
    with open(os.path.join(golden, "tokenizer", "cases.jsonl"), encoding="utf-8") as f:
        cases = [json.loads(line) for line in f if line.strip()]
    for case in cases:
        if "[" in case["text"]:
            continue  # written-out special tokens, which oracle.py does not handle (see its encode)
        ids = tokenizer.encode(case["text"])
        if "max_length" in case:
            ids = ids[: case["max_length"] - 1] + ids[-1:] if len(ids) > case["max_length"] else ids
            ids = ids + [0] * (case["max_length"] - len(ids))
        check(ids == case["ids"], f"tokenizer: {case['text']!r}")


def check_preprocess(golden):
    model = BlipFolder(os.path.join(golden, "models", "tiny-caption"))
    for image in ("cats.png", "coco4016.png"):
        actual = model.preprocess(os.path.join(golden, "images", image))
        check_close(actual, pixel_values(golden, image), 0.0, f"preprocess {image} at 64x64")


def check_caption(golden):
    model = BlipFolder(os.path.join(golden, "models", "tiny-caption"))
    expected_dir = os.path.join(golden, "expected", "tiny-caption")
    data = load_case_json(golden, "tiny-caption")
    for case in data["cases"]:
        image = case["image"]
        embeds = model.image_embeds(pixel_values(golden, image))
        check_close(embeds, np.load(os.path.join(expected_dir, image + ".image_embeds.npy")), TENSOR_TOLERANCE,
                    f"caption {image}: image_embeds")
        check_close(model.pooled(embeds), np.load(os.path.join(expected_dir, image + ".pooled.npy")),
                    TENSOR_TOLERANCE, f"caption {image}: pooled")
        check_close(model.decoder_logits(embeds, [model.bos]),
                    np.load(os.path.join(expected_dir, image + ".logits_step0.npy")), LOGITS_TOLERANCE,
                    f"caption {image}: logits_step0")
        runs = {
            "greedy": dict(max_length=40),
            "greedy_max20": dict(max_length=20),
            "beam3": dict(max_length=40, num_beams=3, min_length=5),
            # These two ran with text_config's default max_length of 20.
            "greedy_rep1.5": dict(max_length=20, repetition_penalty=1.5),
            "greedy_min10": dict(max_length=20, min_length=10),
            "beam4_len0.6": dict(max_length=24, num_beams=4, length_penalty=0.6),
        }
        for key, options in runs.items():
            check(model.generate(embeds, [model.bos], **options) == case[key], f"caption {image}: {key}")
        for key, value in case.items():
            if not key.startswith("prompt:"):
                continue
            prefix = [model.bos] + value["input_ids"][1:-1]
            check(model.generate(embeds, prefix, max_length=40) == value["greedy"], f"caption {image}: {key} greedy")
            check(model.generate(embeds, prefix, max_length=40, num_beams=3) == value["beam3"],
                  f"caption {image}: {key} beam3")


def check_vqa(golden):
    model = BlipFolder(os.path.join(golden, "models", "tiny-vqa"))
    expected_dir = os.path.join(golden, "expected", "tiny-vqa")
    data = load_case_json(golden, "tiny-vqa")
    checked_embeds = set()
    for case in data["cases"]:
        image = case["image"]
        label = f"vqa {image} {case['question']!r}"
        check(model.tokenizer.encode(case["question"]) == case["input_ids"], f"{label}: input_ids")
        embeds = model.image_embeds(pixel_values(golden, image))
        question = model.question_embeds(embeds, case["input_ids"])
        if image not in checked_embeds:
            # question_embeds.npy belongs to the first question of each image.
            check_close(question, np.load(os.path.join(expected_dir, image + ".question_embeds.npy")),
                        TENSOR_TOLERANCE, f"{label}: question_embeds")
            checked_embeds.add(image)
        check(model.generate(question, [model.bos], max_length=10) == case["greedy"], f"{label}: greedy")
        check(model.generate(question, [model.bos], max_length=10, num_beams=3) == case["beam3"], f"{label}: beam3")
        enc_question = model.question_embeds(embeds, [model.enc] + case["input_ids"][1:])
        check(model.generate(enc_question, [model.bos], max_length=10) == case["enc_token_greedy"],
              f"{label}: enc_token_greedy")


def check_itm(golden):
    model = BlipFolder(os.path.join(golden, "models", "tiny-itm"))
    expected_dir = os.path.join(golden, "expected", "tiny-itm")
    data = load_case_json(golden, "tiny-itm")
    for case in data["cases"]:
        image = case["image"]
        label = f"itm {image} {case['text']!r}"
        embeds = model.image_embeds(pixel_values(golden, image))
        padded = case["input_ids_padded35"]
        mask = [1 if token != model.pad else 0 for token in padded]
        unpadded = [token for token, keep in zip(padded, mask) if keep]
        check(model.tokenizer.encode(case["text"]) == unpadded, f"{label}: input_ids")
        logits = model.itm_logits(embeds, padded, mask)
        check_close(logits, case["itm_logits"], TENSOR_TOLERANCE, f"{label}: itm_logits")
        check_close(float(logits.softmax(-1)[1]), case["itm_prob"], TENSOR_TOLERANCE, f"{label}: itm_prob")
        enc_logits = model.itm_logits(embeds, [model.enc] + padded[1:], mask)
        check_close(enc_logits, case["itm_logits_enc_token"], TENSOR_TOLERANCE, f"{label}: itm_logits_enc_token")
        check_close(model.itm_logits(embeds, unpadded), case["itm_logits_unpadded"], TENSOR_TOLERANCE,
                    f"{label}: itm_logits_unpadded")
        text_feat = model.text_feat(padded, mask)
        check_close(text_feat, case["text_feat"], TENSOR_TOLERANCE, f"{label}: text_feat")
        image_feat = model.image_feat(embeds)
        check_close(image_feat, np.load(os.path.join(expected_dir, image + ".image_feat.npy")).reshape(-1),
                    TENSOR_TOLERANCE, f"{label}: image_feat")
        check_close(float(image_feat @ text_feat), case["itc_cosine"], TENSOR_TOLERANCE, f"{label}: itc_cosine")


def main():
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "golden")
    golden = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BLIP_GOLDEN_DIR", default)
    torch.set_num_threads(1)
    check_tokenizer(golden)
    check_preprocess(golden)
    check_caption(golden)
    check_vqa(golden)
    check_itm(golden)
    print(f"{len(failures)} of the checks failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
