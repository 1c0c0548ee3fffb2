#!/usr/bin/env bash
# Builds the WebAssembly module and its JavaScript API with Debian's Emscripten, then
# copies them to examples/web/blip/ for the web page.
# Usage: wasm/build.sh [BUILD_DIR] [CMAKE_OPTION...]   (BUILD_DIR defaults to build/wasm)
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${1:-build/wasm}
shift || true

if ! command -v emcmake >/dev/null; then
  echo "wasm/build.sh: emcmake not found: install Emscripten with scripts/install-deps.sh --wasm" >&2
  exit 1
fi
# Emscripten's optimizer loads Debian's acorn package from /usr/share/nodejs.
export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}

emcmake cmake -S wasm -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build_dir" -j "${BLIP_JOBS:-$(nproc 2>/dev/null || echo 2)}"

mkdir -p examples/web/blip
cp "$build_dir"/dist/blip.mjs "$build_dir"/dist/blip-client.mjs "$build_dir"/dist/blip-worker.mjs \
  "$build_dir"/dist/blip-core.mjs "$build_dir"/dist/blip-core.wasm examples/web/blip/
echo "wasm/build.sh: API in $build_dir/dist, copied to examples/web/blip/"
