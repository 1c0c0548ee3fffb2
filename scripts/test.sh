#!/usr/bin/env bash
# Builds the library's tools and tests in Release mode and runs every test; builds the
# WebAssembly module and runs its Node and browser tests; then builds the bad-input tests
# with AddressSanitizer and UndefinedBehaviorSanitizer and runs them.
# Reference data is read from ../shared/golden or $BLIP_GOLDEN_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
# CTest runs several suites at once, and OpenMP threads that spin at each join take the cores
# from the other suites' threads: on 2 cores test_fullsize took 41 s instead of 19 s.
export OMP_WAIT_POLICY=PASSIVE
scripts/install-deps.sh --wasm --browser --tests
(cd tests/node && npm ci --no-audit --no-fund)
(cd tests/wasm && npm ci --no-audit --no-fund)

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs"

# WebAssembly build, its Node tests and the web page in headless Chromium.
wasm/build.sh build/wasm
BLIP_WASM_BUILD=build/wasm BLIP_NATIVE_BUILD=build/release npm --prefix tests/wasm test

# Sanitizer build: only the suites that feed bad input to the parsers and decoders, which
# tests/CMakeLists.txt compiles into blip_input_tests.
sanitized_tests="test_gguf|test_image|test_checkpoint|test_convert|test_convert_layouts"
# -O1 with line tables compiles in about half the time of RelWithDebInfo, and the
# sanitizer reports still name file and line.
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" -DBLIP_SANITIZE=ON
# blip_input_checks builds blip_input_tests and the blip-convert binary that its conversion
# suites run on bad files.
cmake --build build/sanitize -j "$jobs" --target blip_input_checks
ctest --test-dir build/sanitize --output-on-failure -R "^(${sanitized_tests})$"
