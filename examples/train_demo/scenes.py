#!/usr/bin/env python3
"""Draw procedural scenes of coloured shapes and describe them in words.

A scene contains one to three non-overlapping shapes on a light grey background. Each shape
has a kind (circle, square, triangle, diamond, star), a colour (red, green, blue, yellow,
purple, orange) and a size (small, big). From a scene this module derives a caption
("a small red circle left of a big blue square"), question/answer pairs ("what colour is
the circle?" -> "red", "how many shapes are there?" -> "two") and wrong captions for
image-text matching (a colour, shape, size or relation changed).

Every random choice comes from a `random.Random` that the caller seeds, so a seed always
gives the same scenes, pixels and texts. Run as a script, it writes a held-out test set:

    python3 scenes.py --out testset --seed 90210 --count 150
"""

import argparse
import json
import math
import os
import random

from PIL import Image, ImageDraw

IMAGE_SIZE = 96
SUPERSAMPLE = 4  # shapes are drawn at 4x and reduced with a box filter, for anti-aliased edges

COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 215, 35),
    "purple": (145, 55, 190),
    "orange": (245, 135, 25),
}
KINDS = ["circle", "square", "triangle", "diamond", "star"]
SIZES = {"small": (7.5, 8.5), "big": (13.0, 15.5)}  # circumradius range in pixels
PATCH = 16  # patch size of the vision transformer that the shapes are aligned to
JITTER = 1.5  # pixels a shape centre may move off its grid point
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
COLOUR_JITTER = 15  # each RGB channel of a shape varies by up to this much
GAP = 4  # pixels kept free between two shapes
RELATION_RATIO = 1.4  # two shapes are placed so one axis dominates by this factor
MIN_DX_THREE = 12  # three shapes differ this much in x, so left-to-right order is clear


def all_words():
    """Return every word a caption, question or answer can contain, '?' included."""
    words = set(COLOURS) | set(KINDS) | set(SIZES) | set(COUNT_WORDS.values())
    words |= {"a", "left", "of", "above", "and"}
    words |= {"what", "colour", "is", "the", "how", "many", "shapes", "are", "there", "?"}
    words |= {"shape", "one", "size", "yes", "no"}
    return sorted(words)


# ----------------------------------------------------------------------------------------
# Scene sampling


def _grid_point(rng, size):
    """Pick a centre on the patch grid: small shapes sit at patch centres, big ones at patch corners.

    Aligning shapes with the 16-pixel patches lets each patch see the same part of a shape
    every time, which a small ViT trained for minutes on a CPU needs to tell shapes apart.
    """
    cells = IMAGE_SIZE // PATCH
    if size == "small":
        i, j = rng.randrange(cells), rng.randrange(cells)
        x, y = PATCH * i + PATCH / 2, PATCH * j + PATCH / 2
    else:
        i, j = rng.randrange(1, cells), rng.randrange(1, cells)
        x, y = PATCH * i, PATCH * j
    return x + rng.uniform(-JITTER, JITTER), y + rng.uniform(-JITTER, JITTER)


def _place(rng, shapes):
    """Sample centres for the shapes, or None after many tries."""
    radii = [s["radius"] for s in shapes]
    for _ in range(200):
        centres = [_grid_point(rng, s["size"]) for s in shapes]
        inside = all(r <= x <= IMAGE_SIZE - r and r <= y <= IMAGE_SIZE - r for (x, y), r in zip(centres, radii))
        if inside and _valid_layout(centres, radii, len(shapes)):
            return centres
    return None


def _valid_layout(centres, radii, count):
    for i in range(count):
        for j in range(i + 1, count):
            dx = centres[i][0] - centres[j][0]
            dy = centres[i][1] - centres[j][1]
            if math.hypot(dx, dy) < radii[i] + radii[j] + GAP:
                return False
    if count == 2:
        dx = abs(centres[0][0] - centres[1][0])
        dy = abs(centres[0][1] - centres[1][1])
        if max(dx, dy) < RELATION_RATIO * min(dx, dy):
            return False
    if count == 3:
        xs = sorted(c[0] for c in centres)
        if xs[1] - xs[0] < MIN_DX_THREE or xs[2] - xs[1] < MIN_DX_THREE:
            return False
    return True


def random_scene(rng, count=None):
    """Sample a scene with `count` shapes (1 to 3, random when None)."""
    if count is None:
        count = rng.choice([1, 1, 2, 2, 3])
    while True:
        shapes = []
        for _ in range(count):
            size = rng.choice(sorted(SIZES))
            lo, hi = SIZES[size]
            shapes.append({
                "kind": rng.choice(KINDS),
                "colour": rng.choice(sorted(COLOURS)),
                "size": size,
                "radius": round(rng.uniform(lo, hi), 2),
                "rotation": round(rng.uniform(-12.0, 12.0), 2),
                "rgb": [],
            })
        centres = _place(rng, shapes)
        if centres is None:
            continue
        for shape, (x, y) in zip(shapes, centres):
            shape["x"] = round(x, 2)
            shape["y"] = round(y, 2)
            base = COLOURS[shape["colour"]]
            shape["rgb"] = [min(255, max(0, c + rng.randint(-COLOUR_JITTER, COLOUR_JITTER))) for c in base]
        grey = rng.randint(215, 240)
        background = [min(255, max(0, grey + rng.randint(-4, 4))) for _ in range(3)]
        return {"shapes": shapes, "background": background}


# ----------------------------------------------------------------------------------------
# Drawing


def _polygon(kind, x, y, r, rotation_deg):
    """Return the vertices of a polygonal shape centred at (x, y) with circumradius r."""
    if kind == "square":
        angles = [45, 135, 225, 315]
        radius = [r * 0.92] * 4
    elif kind == "diamond":
        angles = [0, 90, 180, 270]
        radius = [r, r * 0.8, r, r * 0.8]
    elif kind == "triangle":
        angles = [-90, 30, 150]
        radius = [r * 1.05] * 3
    elif kind == "star":
        angles = [-90 + 36 * i for i in range(10)]
        radius = [r * 1.05 if i % 2 == 0 else r * 0.45 for i in range(10)]
    else:
        raise ValueError(f"no polygon for shape kind {kind!r}")
    points = []
    for a, rr in zip(angles, radius):
        t = math.radians(a + rotation_deg)
        points.append((x + rr * math.cos(t), y + rr * math.sin(t)))
    return points


def draw_scene(scene):
    """Render a scene as a 96x96 RGB `PIL.Image` (drawn at 4x, then box-filtered)."""
    big = IMAGE_SIZE * SUPERSAMPLE
    image = Image.new("RGB", (big, big), tuple(scene["background"]))
    draw = ImageDraw.Draw(image)
    for shape in scene["shapes"]:
        x = shape["x"] * SUPERSAMPLE
        y = shape["y"] * SUPERSAMPLE
        r = shape["radius"] * SUPERSAMPLE
        fill = tuple(shape["rgb"])
        if shape["kind"] == "circle":
            draw.ellipse([x - r * 0.9, y - r * 0.9, x + r * 0.9, y + r * 0.9], fill=fill)
        else:
            draw.polygon(_polygon(shape["kind"], x, y, r, shape["rotation"]), fill=fill)
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)


def label_map(scene):
    """Return a 96x96 'L' image whose pixels hold 1 + the index of the shape drawn there, 0 elsewhere."""
    image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(image)
    for index, shape in enumerate(scene["shapes"]):
        x, y, r = shape["x"], shape["y"], shape["radius"]
        if shape["kind"] == "circle":
            draw.ellipse([x - r * 0.9, y - r * 0.9, x + r * 0.9, y + r * 0.9], fill=index + 1)
        else:
            draw.polygon(_polygon(shape["kind"], x, y, r, shape["rotation"]), fill=index + 1)
    return image


# ----------------------------------------------------------------------------------------
# Descriptions: a description is an ordered list of (size, colour, kind) phrases plus the
# relation that joins them ("left of" or "above" for two shapes, "and" for three).


def describe(scene):
    """Return the true description of a scene."""
    shapes = scene["shapes"]
    phrases = lambda ordered: [(s["size"], s["colour"], s["kind"]) for s in ordered]
    if len(shapes) == 1:
        return {"objects": phrases(shapes), "relation": None}
    if len(shapes) == 2:
        a, b = shapes
        if abs(a["x"] - b["x"]) >= abs(a["y"] - b["y"]):
            ordered = sorted(shapes, key=lambda s: s["x"])
            return {"objects": phrases(ordered), "relation": "left of"}
        ordered = sorted(shapes, key=lambda s: s["y"])
        return {"objects": phrases(ordered), "relation": "above"}
    ordered = sorted(shapes, key=lambda s: s["x"])
    return {"objects": phrases(ordered), "relation": "and"}


def render(description):
    """Turn a description into caption text."""
    parts = [f"a {size} {colour} {kind}" for size, colour, kind in description["objects"]]
    if len(parts) == 1:
        return parts[0]
    return f" {description['relation']} ".join(parts)


def caption(scene):
    """Return the true caption of a scene."""
    return render(describe(scene))


def _replace_object(description, index, size=None, colour=None, kind=None):
    objects = list(description["objects"])
    old = objects[index]
    objects[index] = (size or old[0], colour or old[1], kind or old[2])
    return {"objects": objects, "relation": description["relation"]}


def colour_swapped_caption(scene, rng):
    """Return the caption with one shape's colour replaced by a different colour."""
    description = describe(scene)
    index = rng.randrange(len(description["objects"]))
    old = description["objects"][index][1]
    new = rng.choice([c for c in sorted(COLOURS) if c != old])
    return render(_replace_object(description, index, colour=new))


def wrong_caption(scene, rng):
    """Return a caption that is false for the scene: one attribute or relation changed."""
    description = describe(scene)
    objects = description["objects"]
    true_text = render(description)
    while True:
        change = rng.choice(["colour", "colour", "colour", "kind", "kind", "size", "order", "count"])
        index = rng.randrange(len(objects))
        if change == "colour":
            new = rng.choice([c for c in sorted(COLOURS) if c != objects[index][1]])
            text = render(_replace_object(description, index, colour=new))
        elif change == "kind":
            new = rng.choice([k for k in KINDS if k != objects[index][2]])
            text = render(_replace_object(description, index, kind=new))
        elif change == "size":
            new = "big" if objects[index][0] == "small" else "small"
            text = render(_replace_object(description, index, size=new))
        elif change == "order":
            if len(objects) == 1:
                continue
            swapped = list(objects)
            i, j = rng.sample(range(len(objects)), 2)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            relation = description["relation"]
            if len(objects) == 2 and rng.random() < 0.5:
                relation = "above" if relation == "left of" else "left of"
                swapped = list(objects)
            text = render({"objects": swapped, "relation": relation})
        else:
            other = random_scene(rng, rng.choice([c for c in (1, 2, 3) if c != len(objects)]))
            text = caption(other)
        if text != true_text:
            return text


# ----------------------------------------------------------------------------------------
# Questions


def questions(scene):
    """Return every question this scene can answer, as (type, question, answer) triples."""
    shapes = scene["shapes"]
    kinds = [s["kind"] for s in shapes]
    colours = [s["colour"] for s in shapes]
    out = [("count", "how many shapes are there?", COUNT_WORDS[len(shapes)])]
    for s in shapes:
        if kinds.count(s["kind"]) == 1:
            out.append(("colour", f"what colour is the {s['kind']}?", s["colour"]))
            out.append(("size", f"what size is the {s['kind']}?", s["size"]))
        if colours.count(s["colour"]) == 1:
            out.append(("shape", f"what shape is the {s['colour']} one?", s["kind"]))
    return out


def yes_no_question(scene, rng):
    """Return a ('exists', question, 'yes'|'no') triple, yes and no equally likely."""
    present = {(s["colour"], s["kind"]) for s in scene["shapes"]}
    if rng.random() < 0.5:
        colour, kind = rng.choice(sorted(present))
        return ("exists", f"is there a {colour} {kind}?", "yes")
    while True:
        shape = rng.choice(scene["shapes"])
        if rng.random() < 0.5:
            pair = (rng.choice(sorted(COLOURS)), shape["kind"])
        else:
            pair = (shape["colour"], rng.choice(KINDS))
        if pair not in present:
            return ("exists", f"is there a {pair[0]} {pair[1]}?", "no")


# ----------------------------------------------------------------------------------------
# Held-out test set


def write_testset(out_dir, seed, count):
    """Draw `count` scenes with `seed` into out_dir as PNG files plus labels.json."""
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    counts = [1] * (count * 2 // 5) + [2] * (count * 3 // 10)
    counts += [3] * (count - len(counts))
    entries = []
    for index, n in enumerate(counts):
        scene = random_scene(rng, n)
        name = f"scene_{index:03d}.png"
        draw_scene(scene).save(os.path.join(out_dir, name), optimize=True)
        qa = [{"type": t, "question": q, "answer": a} for t, q, a in questions(scene)]
        t, q, a = yes_no_question(scene, rng)
        qa.append({"type": t, "question": q, "answer": a})
        entries.append({
            "file": name,
            "count": n,
            "shapes": [
                {k: s[k] for k in ("kind", "colour", "size", "x", "y", "radius")} for s in scene["shapes"]
            ],
            "caption": caption(scene),
            "colour_swapped_caption": colour_swapped_caption(scene, rng),
            "questions": qa,
        })
    labels = {
        "seed": seed,
        "image_size": IMAGE_SIZE,
        "generator": "examples/train_demo/scenes.py",
        "scenes": entries,
    }
    with open(os.path.join(out_dir, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder for PNG files and labels.json")
    parser.add_argument("--seed", type=int, required=True, help="random seed of the scene sampler")
    parser.add_argument("--count", type=int, default=150, help="number of scenes (default 150)")
    args = parser.parse_args()
    write_testset(args.out, args.seed, args.count)


if __name__ == "__main__":
    main()
