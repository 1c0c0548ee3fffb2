#!/usr/bin/python3
"""Write the WebP test images and the RGB pixels that Pillow decodes from them.

Each case is a small image encoded by Pillow's WebP plugin (libwebp) and the result of
`Image.open(path).convert("RGB")` as a uint8 .npy array [height, width, 3]. test_image
compares the library's WebP decoder with these pixels. Run with Debian's /usr/bin/python3
(python3-pil with WebP support, python3-numpy):

    /usr/bin/python3 tests/data/webp/make_webp_cases.py
"""

import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def test_pattern(width, height, alpha):
    """Smooth ramps, a checkerboard and, with alpha, a transparent stripe."""
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 255 // max(1, width - 1)).astype(np.uint8)
    green = (y * 255 // max(1, height - 1)).astype(np.uint8)
    blue = np.where((x // 4 + y // 4) % 2 == 0, 30, 220).astype(np.uint8)
    channels = [red, green, blue]
    if alpha:
        channels.append(np.where(x < width // 3, 0, np.where(x < 2 * width // 3, 128, 255)).astype(np.uint8))
    return Image.fromarray(np.stack(channels, axis=-1), "RGBA" if alpha else "RGB")


def write_case(name, image, **options):
    path = os.path.join(HERE, name + ".webp")
    image.save(path, "WEBP", **options)
    with Image.open(path) as decoded:
        pixels = np.asarray(decoded.convert("RGB"), dtype=np.uint8)
    np.save(os.path.join(HERE, name + ".rgb.npy"), pixels)


def main():
    write_case("lossy_37x23", test_pattern(37, 23, alpha=False), quality=80)
    write_case("lossless_37x23", test_pattern(37, 23, alpha=False), lossless=True)
    write_case("lossy_alpha_30x17", test_pattern(30, 17, alpha=True), quality=75)
    write_case("lossless_alpha_30x17", test_pattern(30, 17, alpha=True), lossless=True)
    frames = [test_pattern(16, 16, alpha=False), test_pattern(16, 16, alpha=True)]
    frames[0].save(os.path.join(HERE, "animated_16x16.webp"), "WEBP", save_all=True, append_images=frames[1:],
                   duration=100, lossless=True)


if __name__ == "__main__":
    main()
