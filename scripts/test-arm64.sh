#!/usr/bin/env bash
# Cross-compiles the kernel and golden tests for ARM64 (the NEON build) in build-arm64 and
# runs them under QEMU's user-mode emulator through CTest. Installs the Debian cross
# compiler and QEMU when they are missing.
# Usage: scripts/test-arm64.sh [BUILD_DIR]   (default build-arm64)
# Reference data is read from ../shared/golden or $BLIP_GOLDEN_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${1:-build-arm64}
jobs=$(nproc 2>/dev/null || echo 2)
tests=(test_kernels test_f32_kernels test_quant test_quant_many_rows test_caption_golden test_tokenizer
       test_image test_gguf test_shapes)
# The two programs that contain these suites (tests/CMakeLists.txt).
programs=(blip_tests blip_input_tests)

scripts/install-deps.sh
missing=()
for package in g++-aarch64-linux-gnu qemu-user; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  echo "Installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
  -DBLIP_BUILD_TOOLS=OFF -DBLIP_BUILD_BENCH=OFF
cmake --build "$build_dir" -j "$jobs" --target "${programs[@]}"
pattern=$(IFS='|'; echo "${tests[*]}")
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" -R "^(${pattern})$"
