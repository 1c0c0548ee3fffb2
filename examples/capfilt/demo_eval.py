#!/usr/bin/env python3
"""Measure how well blip-capfilt's filter cleans a noisy dataset of drawn scenes.

Builds image-text pairs from a scene test set written by examples/train_demo/scenes.py
(PNG files plus labels.json). A known fraction of the web texts are wrong: they are the
caption of another scene with a different caption, or, with --wrong colour, the scene's
own caption with one colour swapped. Runs blip-capfilt on the pairs and counts how many
wrong web texts the filter removes, how many right ones it keeps, and how often the
synthetic captions are kept and equal the true caption.

Example, from the repository root after building:
    python3 examples/capfilt/demo_eval.py --capfilt build/examples/blip-capfilt \\
        --captioner models/demo-caption.gguf --filter models/demo-itm.gguf \\
        --testset examples/train_demo/testset --out /tmp/capfilt-demo

Only the standard library is needed; the images are read by blip-capfilt.
"""

import argparse
import json
import os
import random
import subprocess
import sys


def build_pairs(labels, testset, fraction, wrong, seed):
    """Return one pair per scene, a `fraction` of them with a wrong text marked in "truth"."""
    rng = random.Random(seed)
    scenes = labels["scenes"]
    wrong_indices = set(rng.sample(range(len(scenes)), round(fraction * len(scenes))))
    pairs = []
    for index, scene in enumerate(scenes):
        text = scene["caption"]
        truth = "right"
        if index in wrong_indices:
            truth = "wrong"
            if wrong == "colour":
                text = scene["colour_swapped_caption"]
            else:
                others = [s["caption"] for s in scenes if s["caption"] != scene["caption"]]
                text = rng.choice(others)
        pairs.append({"image": os.path.join(os.path.abspath(testset), scene["file"]), "text": text,
                      "id": scene["file"], "truth": truth, "true_caption": scene["caption"]})
    return pairs


def evaluate(records):
    """Count kept and dropped web texts by truth, and the synthetic captions' quality."""
    counts = {"right_kept": 0, "right_dropped": 0, "wrong_kept": 0, "wrong_dropped": 0,
              "synthetic_kept": 0, "synthetic_dropped": 0, "synthetic_exact": 0,
              "synthetic_exact_kept": 0, "failed": 0}
    for record in records:
        if "error" in record:
            counts["failed"] += 1
            continue
        truth = record["meta"]["truth"]
        true_caption = record["meta"]["true_caption"]
        for status in ("kept", "dropped"):
            for text in record[status]:
                if text["source"] == "web":
                    counts[f"{truth}_{status}"] += 1
                else:
                    counts[f"synthetic_{status}"] += 1
                    if text["text"] == true_caption:
                        counts["synthetic_exact"] += 1
                        if status == "kept":
                            counts["synthetic_exact_kept"] += 1
    return counts


def percent(part, whole):
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capfilt", required=True, help="blip-capfilt executable")
    parser.add_argument("--captioner", required=True, help="caption model file")
    parser.add_argument("--filter", required=True, help="itm model file")
    parser.add_argument("--testset", required=True, help="folder with labels.json and the scene PNG files")
    parser.add_argument("--out", required=True, help="folder for the pairs, the output and the summary")
    parser.add_argument("--fraction", type=float, default=0.3, help="fraction of wrong web texts (default 0.3)")
    parser.add_argument("--wrong", choices=["other", "colour"], default="other",
                        help="wrong texts: another scene's caption (default) or one colour swapped")
    parser.add_argument("--seed", type=int, default=1, help="seed of the choice of wrong texts (default 1)")
    parser.add_argument("--threshold", type=float, default=0.5, help="filter threshold (default 0.5)")
    parser.add_argument("--num-captions", type=int, default=1, help="synthetic captions per image (default 1)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further blip-capfilt options, after all others")
    args = parser.parse_args()

    with open(os.path.join(args.testset, "labels.json")) as f:
        labels = json.load(f)
    os.makedirs(args.out, exist_ok=True)
    pairs = build_pairs(labels, args.testset, args.fraction, args.wrong, args.seed)
    pairs_path = os.path.join(args.out, f"pairs-{args.wrong}.jsonl")
    with open(pairs_path, "w") as f:
        for pair in pairs:
            f.write(json.dumps(pair) + "\n")

    output = os.path.join(args.out, f"capfilt-{args.wrong}.jsonl")
    for stale in (output, os.path.splitext(output)[0] + ".summary.json"):
        if os.path.exists(stale):
            os.remove(stale)
    # The demo captioner was trained without a prompt and writes short captions.
    command = [args.capfilt, "-c", args.captioner, "-f", args.filter, "-o", output, "--prompt", "",
               "--min-length", "0", "--threshold", str(args.threshold), "--num-captions", str(args.num_captions),
               "--progress", "none", *args.extra, pairs_path]
    print("running:", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True)

    with open(output) as f:
        records = [json.loads(line) for line in f]
    counts = evaluate(records)
    right = counts["right_kept"] + counts["right_dropped"]
    wrong = counts["wrong_kept"] + counts["wrong_dropped"]
    synthetic = counts["synthetic_kept"] + counts["synthetic_dropped"]
    print(f"| {len(records)} pairs, {wrong} with a wrong web text ({args.wrong}) | count |")
    print("| --- | --- |")
    print(f"| wrong web texts removed | {counts['wrong_dropped']} of {wrong} ({percent(counts['wrong_dropped'], wrong)}) |")
    print(f"| right web texts kept | {counts['right_kept']} of {right} ({percent(counts['right_kept'], right)}) |")
    print(f"| synthetic captions kept | {counts['synthetic_kept']} of {synthetic} "
          f"({percent(counts['synthetic_kept'], synthetic)}) |")
    print(f"| synthetic captions equal to the true caption | {counts['synthetic_exact']} of {synthetic} "
          f"({percent(counts['synthetic_exact'], synthetic)}) |")
    print(f"| kept synthetic captions equal to the true caption | {counts['synthetic_exact_kept']} of "
          f"{counts['synthetic_kept']} ({percent(counts['synthetic_exact_kept'], counts['synthetic_kept'])}) |")
    print(f"| images failed | {counts['failed']} |")
    with open(os.path.join(args.out, f"counts-{args.wrong}.json"), "w") as f:
        json.dump(counts, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
