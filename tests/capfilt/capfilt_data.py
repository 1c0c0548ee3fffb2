"""Shared steps of the blip-capfilt process tests: tiny models, a noisy dataset, runs.

The tests run blip-capfilt as a separate process, as a user or a batch scheduler would,
on the tiny golden models converted with blip-convert. Nothing here touches the network.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile

SKIP = 77  # CTest's SKIP_RETURN_CODE for these tests

IMAGES = ["cats.png", "bike.jpg", "coco4016.png", "gray.jpg", "palette.png", "rgba.png",
          "progressive.jpg", "upscale_50x40.bmp"]
TEXTS = ["two cats lying on a pink blanket", "a bicycle leaning on a wall", "a street with cars",
         "a gray photo", "a palette image of cats", "cats on a sofa", "a progressive jpeg",
         "a tiny bitmap"]


def golden_dir(path):
    """Return the golden folder, or exit with SKIP when it is missing."""
    if not os.path.isfile(os.path.join(path, "README.md")):
        print(f"skipped: golden data not found at {path} (set BLIP_GOLDEN_DIR)")
        sys.exit(SKIP)
    return path


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def convert_models(convert, golden, out_dir):
    """Convert the tiny captioner and ITM model; return their GGUF paths."""
    paths = []
    for name in ("tiny-caption", "tiny-itm"):
        path = os.path.join(out_dir, name + ".gguf")
        subprocess.run([convert, os.path.join(golden, "models", name), "-o", path], check=True,
                       stdout=subprocess.DEVNULL)
        paths.append(path)
    return paths


def make_list_dataset(golden, out_dir, count):
    """Write out_dir/pairs.jsonl with `count` lines over the golden images, one missing
    image and one malformed line among them; return its path."""
    photos = os.path.join(out_dir, "photos")
    os.makedirs(photos, exist_ok=True)
    for image in IMAGES:
        shutil.copy(os.path.join(golden, "images", image), photos)
    path = os.path.join(out_dir, "pairs.jsonl")
    with open(path, "w") as out:
        for i in range(count):
            if i == 5:
                out.write('{"image": "photos/cats.png", "text": \n')  # malformed
                continue
            image = "photos/missing.jpg" if i == 9 else "photos/" + IMAGES[i % len(IMAGES)]
            # Every third text describes another image, as noisy web data does.
            text = TEXTS[(i + (1 if i % 3 == 0 else 0)) % len(TEXTS)]
            out.write(json.dumps({"image": image, "text": text, "n": i}) + "\n")
    return path


def make_wds_dataset(golden, out_dir, shards, samples):
    """Write `shards` WebDataset shards of `samples` samples each; return their folder."""
    folder = os.path.join(out_dir, "shards")
    os.makedirs(folder, exist_ok=True)
    for shard in range(shards):
        with tarfile.open(os.path.join(folder, f"shard-{shard:03d}.tar"), "w") as tar:
            for sample in range(samples):
                n = shard * samples + sample
                image = IMAGES[n % len(IMAGES)]
                key = f"{shard:03d}{sample:04d}"
                tar.add(os.path.join(golden, "images", image), arcname=key + os.path.splitext(image)[1])
                text = os.path.join(out_dir, "text.tmp")
                with open(text, "w") as f:
                    f.write(TEXTS[(n + (1 if n % 3 == 0 else 0)) % len(TEXTS)])
                tar.add(text, arcname=key + ".txt")
    return folder


def capfilt_command(capfilt, models, output, inputs, extra=()):
    """The blip-capfilt command line that every run of a test shares."""
    return [capfilt, "-c", models[0], "-f", models[1], "--threshold", "0.1", "--num-captions", "2",
            "--seed", "11", "--progress", "log", "--log-interval", "1", "-o", output, *extra, *inputs]


def read(path):
    with open(path, "rb") as f:
        return f.read()
