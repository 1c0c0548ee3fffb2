#!/usr/bin/env bash
# Times the vision encoder and greedy decoding of captioning model files natively on one
# thread and in WebAssembly under Node, with the same source (wasm/bench/wasm_bench.cpp),
# and prints a Markdown table plus the size of the API's .wasm file.
#
# Usage: wasm/bench/run.sh [--runs N] [--tokens N] [--image FILE] MODEL.gguf...
# Environment: BLIP_WASM_BENCH_BUILD (default build/wasm-bench) for both builds,
# BLIP_WASM_BUILD (default build/wasm) for the API whose .wasm size is reported.
set -euo pipefail
cd "$(dirname "$0")/../.."

runs=3
tokens=30
image=../shared/golden/images/cats.png
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
if [ ${#models[@]} -eq 0 ]; then
  echo "usage: wasm/bench/run.sh [--runs N] [--tokens N] [--image FILE] MODEL.gguf..." >&2
  exit 2
fi

build_dir=${BLIP_WASM_BENCH_BUILD:-build/wasm-bench}
api_dir=${BLIP_WASM_BUILD:-build/wasm}
export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}

# Native: the flags of a CMake Release build, without OpenMP, so one thread.
mkdir -p "$build_dir/native"
native="$build_dir/native/blip-wasm-bench"
if [ ! -x "$native" ] || [ wasm/bench/wasm_bench.cpp -nt "$native" ]; then
  g++ -std=c++17 -O3 -DNDEBUG -Iinclude -I/usr/include/eigen3 -I/usr/include/stb wasm/bench/wasm_bench.cpp -o "$native"
fi

# WebAssembly: the API's compile flags (SIMD, SSE 4.2 mapping, Eigen unvectorized).
emcmake cmake -S wasm -B "$build_dir/wasm" -DCMAKE_BUILD_TYPE=Release -DBLIP_WASM_BENCH=ON >/dev/null
cmake --build "$build_dir/wasm" --target blip-wasm-bench >/dev/null

echo "| model | build | kernels | vision encoder (ms) | per token (ms) | greedy ids equal |"
echo "|---|---|---|---|---|---|"
for model in "${models[@]}"; do
  native_json=$("$native" "$model" "$image" --runs "$runs" --tokens "$tokens")
  wasm_json=$(node "$build_dir/wasm/blip-wasm-bench.js" "$model" "$image" --runs "$runs" --tokens "$tokens")
  node -e '
    const [model, nativeText, wasmText] = process.argv.slice(1);
    const native = JSON.parse(nativeText);
    const wasm = JSON.parse(wasmText);
    const same = JSON.stringify(native.greedy_max30) === JSON.stringify(wasm.greedy_max30) ? "yes" : "NO";
    const name = model.split("/").pop();
    for (const r of [native, wasm]) {
      const ratio = r === wasm ? ` (${(wasm.vision_ms / native.vision_ms).toFixed(1)}x)` : "";
      const tokenRatio = r === wasm ? ` (${(wasm.token_ms / native.token_ms).toFixed(1)}x)` : "";
      console.log(`| ${name} | ${r.build} | ${r.kernels} | ${r.vision_ms.toFixed(1)}${ratio} | ${r.token_ms.toFixed(2)}${tokenRatio} | ${same} |`);
    }
  ' "$model" "$native_json" "$wasm_json"
done

if [ -f "$api_dir/dist/blip-core.wasm" ]; then
  size=$(stat -c %s "$api_dir/dist/blip-core.wasm")
  gzipped=$(gzip -9 -c "$api_dir/dist/blip-core.wasm" | wc -c)
  echo
  echo "blip-core.wasm: $size bytes ($gzipped bytes with gzip -9)"
fi
