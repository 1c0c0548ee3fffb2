// Times the exported BLIP vision encoders with onnxruntime-node (its CPU build), one
// session per thread count, and prints JSON. The input is the golden preprocessed cats.png,
// so each run also reports the largest difference from transformers' image_embeds.
//
//   node bench/onnx/run_vision.mjs --model-dir /tmp/blip-onnx --models base,large --threads 1,2 --runs 5

import { readFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ort from "onnxruntime-node";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const MODELS = { base: "blip-image-captioning-base", large: "blip-image-captioning-large" };

function parseArgs(argv) {
  const options = { modelDir: null, models: ["base"], threads: [1, 2], runs: 5 };
  for (let i = 2; i < argv.length; i++) {
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`option ${argv[i]} needs a value`);
      return argv[++i];
    };
    const arg = argv[i];
    if (arg === "--model-dir") options.modelDir = value();
    else if (arg === "--models") options.models = value().split(",").filter(Boolean);
    else if (arg === "--threads") options.threads = value().split(",").filter(Boolean).map(Number);
    else if (arg === "--runs") options.runs = Number(value());
    else if (arg === "--help") {
      console.log("usage: node run_vision.mjs --model-dir DIR [--models base,large] [--threads 1,2] [--runs 5]");
      process.exit(0);
    } else throw new Error(`unknown option '${arg}'; see --help`);
  }
  if (!options.modelDir) throw new Error("--model-dir is required: the --out-dir of export_vision.py");
  for (const t of options.threads) {
    if (!Number.isInteger(t) || t < 1) throw new Error(`invalid thread count '${t}' in --threads`);
  }
  if (!Number.isInteger(options.runs) || options.runs < 1) throw new Error("--runs must be a positive integer");
  for (const m of options.models) {
    if (!(m in MODELS)) throw new Error(`unknown model '${m}'; use base or large`);
  }
  return options;
}

// Reads a little-endian float32 .npy file (format version 1 or 2, C order).
function readNpyFloat32(file) {
  const bytes = readFileSync(file);
  if (bytes.length < 10 || bytes.toString("latin1", 0, 6) !== "\x93NUMPY") throw new Error(`${file}: not a .npy file`);
  const major = bytes[6];
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  if (headerStart + headerLength > bytes.length) throw new Error(`${file}: header runs past the end of the file`);
  const header = bytes.toString("latin1", headerStart, headerStart + headerLength);
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True"))
    throw new Error(`${file}: expected little-endian float32 in C order, header ${header.trim()}`);
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const start = headerStart + headerLength;
  if (start + 4 * count > bytes.length) throw new Error(`${file}: data shorter than shape ${shape}`);
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = bytes.readFloatLE(start + 4 * i);
  return { shape, data };
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

async function timeModel(file, threads, runs, pixels, reference) {
  const session = await ort.InferenceSession.create(file, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  });
  const feeds = { pixel_values: new ort.Tensor("float32", pixels.data, pixels.shape.length === 3 ? [1, ...pixels.shape] : pixels.shape) };
  let output = await session.run(feeds); // warm-up
  const seconds = [];
  for (let r = 0; r < runs; r++) {
    const start = process.hrtime.bigint();
    output = await session.run(feeds);
    seconds.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  const result = { threads, vision_ms: median(seconds) * 1e3, runs_ms: seconds.map((s) => s * 1e3) };
  if (reference) {
    const values = output.last_hidden_state.data;
    let maxDiff = 0;
    for (let i = 0; i < reference.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(values[i] - reference.data[i]));
    result.vision_max_abs_diff = maxDiff;
  }
  await session.release();
  return result;
}

async function main() {
  const options = parseArgs(process.argv);
  const golden = process.env.BLIP_GOLDEN_DIR || path.resolve(here, "..", "..", "..", "shared", "golden");
  const pixels = readNpyFloat32(path.join(golden, "preprocess", "cats.png.384.npy"));
  const report = {
    tool: "onnxruntime",
    onnxruntime_node_version: require("onnxruntime-node/package.json").version,
    node_version: process.version,
    date: new Date().toISOString(),
    command: process.argv.join(" "),
    machine: { cpu: cpus()[0]?.model ?? "unknown", logical_cpus: cpus().length },
    results: [],
  };
  for (const model of options.models) {
    const name = MODELS[model];
    const file = path.join(options.modelDir, `${name}.vision.onnx`);
    if (!existsSync(file)) throw new Error(`${file} not found; run export_vision.py --out-dir ${options.modelDir} first`);
    const referenceFile = path.join(golden, "fullsize", `${name}.cats.png.image_embeds.npy`);
    const reference = existsSync(referenceFile) ? readNpyFloat32(referenceFile) : null;
    for (const threads of options.threads) {
      process.stderr.write(`run_vision: ${model}, ${threads} thread(s)...\n`);
      report.results.push({ model, ...(await timeModel(file, threads, options.runs, pixels, reference)) });
    }
  }
  console.log(JSON.stringify(report, null, 1));
}

main().catch((error) => {
  console.error(`run_vision: ${error.message}`);
  process.exit(1);
});
