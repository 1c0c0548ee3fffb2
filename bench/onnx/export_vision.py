#!/usr/bin/python3
"""Export the full-size BLIP vision encoders to ONNX with torch.onnx.export.

The encoders are the ones compare_torch.py times (the project's PyTorch port of
transformers' BlipVisionModel, with the full-size weight rule), so ONNX Runtime runs the
same shapes, operations and weights. Input `pixel_values` [1, 3, 384, 384], output
`last_hidden_state` [1, 577, width].

    /usr/bin/python3 bench/onnx/export_vision.py --models base,large --out-dir /tmp/blip-onnx
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compare_torch  # noqa: E402  (bench/compare_torch.py)


def export(model, out_dir, opset):
    import torch

    name = compare_torch.CAPTION_MODELS[model]
    manifest = compare_torch.load_manifest(name)
    blip_modules = compare_torch.import_demo_modules()
    models, checked = compare_torch.build_models(blip_modules, name, manifest, ["vision_model"])
    vision = models["vision_model"]
    cfg = manifest["config"]["vision_config"]
    pixels = torch.zeros(1, cfg["num_channels"], cfg["image_size"], cfg["image_size"])
    path = out_dir / f"{name}.vision.onnx"
    with torch.no_grad():
        # ViT-L in float32 is about 1.2 GB, below protobuf's 2 GB limit, so no external data is needed.
        torch.onnx.export(vision, (pixels,), str(path), opset_version=opset, input_names=["pixel_values"],
                          output_names=["last_hidden_state"], do_constant_folding=True)
    print(f"export_vision: wrote {path} ({path.stat().st_size / 2**20:.0f} MiB, {checked} tensor sums checked)",
          file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="base,large", help="comma-separated: base, large (default both)")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for <model>.vision.onnx")
    parser.add_argument("--opset", type=int, default=14, help="ONNX opset version (default 14)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for model in [item for item in args.models.split(",") if item]:
        if model not in compare_torch.CAPTION_MODELS:
            parser.error(f"unknown model {model!r}; use base or large")
        export(model, args.out_dir, args.opset)


if __name__ == "__main__":
    main()
