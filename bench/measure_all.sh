#!/usr/bin/env bash
# Runs every measurement of bench/RESULTS.md in one go: blip-bench (ours), ONNX Runtime on the
# exported vision encoders, and PyTorch with the speed-up tables. Run it on a quiet machine:
# other processes on the same cores disturb every number.
#
# Usage: bench/measure_all.sh [OUTPUT_DIR]   (default /tmp/blip-bench-results)
# Needs: scripts/install-deps.sh --bench (PyTorch, OpenBLAS, Pillow) and Node.js with npm.
# Takes about 65 minutes on 2 cores.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-/tmp/blip-bench-results}"
mkdir -p "$out"
cd "$repo"

threads=1,2
python=/usr/bin/python3  # Debian's interpreter, which has python3-torch

cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench --target blip-bench -j2 >/dev/null

# Ours: both models, f32 and the reduced-precision types. The model files stay in
# $out/models for later runs.
./build-bench/bench/blip-bench --model base,large --types f32,bf16,q8_0,q4_k --threads "$threads" --runs 3 \
    --beam-runs 3 --work-dir "$out/models" --output "$out/ours.json" | tee "$out/ours.txt"

# ONNX Runtime: export the vision encoders once, then time them.
if [ ! -f "$out/onnx/blip-image-captioning-large.vision.onnx" ]; then
  "$python" bench/onnx/export_vision.py --models base,large --out-dir "$out/onnx"
fi
(cd bench/onnx && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
node bench/onnx/run_vision.mjs --model-dir "$out/onnx" --models base,large --threads "$threads" --runs 5 \
    > "$out/onnx.json"

# PyTorch on the base model (the large model's beam search alone takes minutes), and the
# speed-up tables against the two files above.
"$python" bench/compare_torch.py --models base --threads "$threads" --runs 3 --beam-runs 1 \
    --work-dir "$out/torch-work" --ours "$out/ours.json" --onnx "$out/onnx.json" --output "$out/torch.json" 2>&1 | tee "$out/torch.txt"

echo "measure_all: results in $out (ours.json, onnx.json, torch.json and the printed tables)"
