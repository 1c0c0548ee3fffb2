#!/usr/bin/env bash
# Installs the Debian packages that building and testing need, skipping those present.
# Usage: scripts/install-deps.sh [--wasm] [--browser] [--tests] [--bench]
#   --wasm     also install Emscripten and Node.js for the WebAssembly build and Node tests
#   --browser  also install Chromium for the browser test
#   --tests    also install Python's Dask (python3-distributed) for the sharding test
#   --bench    also install PyTorch with OpenBLAS and Pillow for bench/compare_torch.py and
#              the ONNX export, and the training script in examples/train_demo
set -euo pipefail

packages=(cmake g++ make pkg-config libeigen3-dev libxsimd-dev libstb-dev libwebp-dev libomp-dev doctest-dev nlohmann-json3-dev)
for arg in "$@"; do
  case "$arg" in
    --wasm)
      packages+=(emscripten)
      # A Node.js from another source (for example NodeSource) bundles npm and conflicts
      # with Debian's npm package, so install Node.js and npm only when missing.
      command -v node >/dev/null || packages+=(nodejs)
      command -v npm >/dev/null || packages+=(npm)
      ;;
    --browser) packages+=(chromium) ;;
    --tests) packages+=(python3 python3-distributed) ;;
    --bench) packages+=(python3 python3-torch python3-numpy python3-pil libopenblas0-pthread) ;;
    *) echo "install-deps.sh: unknown option $arg (expected --wasm, --browser, --tests or --bench)" >&2; exit 2 ;;
  esac
done

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps.sh: the ${#packages[@]} Debian packages needed are installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "Installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
