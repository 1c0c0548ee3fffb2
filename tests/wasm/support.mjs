// Paths, model files and .npy arrays for the WebAssembly tests.
//
// Environment:
//   BLIP_WASM_BUILD    the WebAssembly build folder (default build/wasm); its dist/ holds blip.mjs
//   BLIP_NATIVE_BUILD  a native build folder with convert/blip-convert and examples/blip-caption
//                      (default build/release)
//   BLIP_GOLDEN_DIR    reference data (default ../shared/golden beside the repository)

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function fromRoot(value, fallback) {
  return path.resolve(repoRoot, value || fallback);
}

export const wasmBuild = fromRoot(process.env.BLIP_WASM_BUILD, 'build/wasm');
export const distDir = path.join(wasmBuild, 'dist');
export const nativeBuild = fromRoot(process.env.BLIP_NATIVE_BUILD, 'build/release');
export const goldenDir = process.env.BLIP_GOLDEN_DIR
  ? path.resolve(process.env.BLIP_GOLDEN_DIR)
  : path.resolve(repoRoot, '..', 'shared', 'golden');
export const artifactsDir = path.join(wasmBuild, 'artifacts');

export const goldenAvailable = existsSync(path.join(goldenDir, 'README.md'));
export const goldenSkipReason = `golden data not found at ${goldenDir} (set BLIP_GOLDEN_DIR)`;

// Imports blip.mjs from the build folder.
export async function importBlip() {
  const file = path.join(distDir, 'blip.mjs');
  if (!existsSync(file)) throw new Error(`${file} not found: build the WebAssembly API first with wasm/build.sh ${path.relative(repoRoot, wasmBuild)}`);
  return import(pathToFileURL(file).href);
}

export function nativeTool(relative) {
  const file = path.join(nativeBuild, relative);
  return existsSync(file) ? file : null;
}

// Converts a golden Hugging Face folder (tiny-caption, tiny-vqa, tiny-itm) to GGUF once,
// with the native blip-convert, into the WebAssembly build folder.
export function tinyModel(name) {
  const output = path.join(wasmBuild, 'test-models', `${name}.gguf`);
  if (existsSync(output)) return output;
  const convert = nativeTool('convert/blip-convert');
  if (!convert) throw new Error(`blip-convert not found in ${nativeBuild}: build the native tools first (set BLIP_NATIVE_BUILD)`);
  mkdirSync(path.dirname(output), { recursive: true });
  execFileSync(convert, [path.join(goldenDir, 'models', name), '-o', output], { stdio: ['ignore', 'ignore', 'inherit'] });
  return output;
}

export function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

const NPY_TYPES = { '<f4': Float32Array, '|u1': Uint8Array, '<u1': Uint8Array, '<i4': Int32Array, '<i8': BigInt64Array };

// Reads a C-order .npy file (format versions 1 to 3). Returns {shape, data}.
export function readNpy(file) {
  const bytes = readFileSync(file);
  if (bytes.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = bytes[6];
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = bytes.toString('latin1', headerStart, headerStart + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: Fortran order is not supported`);
  const Type = NPY_TYPES[descr];
  if (!Type || shapeText === undefined) throw new Error(`${file}: unsupported header ${header.trim()}`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const dataStart = headerStart + headerLength;
  const copy = bytes.buffer.slice(bytes.byteOffset + dataStart, bytes.byteOffset + dataStart + count * Type.BYTES_PER_ELEMENT);
  return { shape, data: new Type(copy) };
}

export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new Error(`length ${a.length} differs from ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; ++i) {
    const difference = Math.abs(a[i] - b[i]);
    if (Number.isNaN(difference)) return Infinity;
    if (difference > worst) worst = difference;
  }
  return worst;
}
