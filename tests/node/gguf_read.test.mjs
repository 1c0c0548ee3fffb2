// Opens GGUF files that blip-convert writes (f32, f16, q8_0, q4_k) with the
// @huggingface/gguf parser and checks the metadata and tensor infos against the converted
// safetensors checkpoint: names, shapes in ggml order (innermost dimension first), element
// types, and data offsets that leave room for each tensor's blocks.
//
// CTest sets three environment variables. BLIP_CONVERT is the blip-convert binary.
// BLIP_WRITE_SYNTHETIC_MODEL writes a model folder whose 256-wide rows fit every type.
// BLIP_SCRATCH_DIR receives the files, or a temporary folder does when it is unset.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, test } from "node:test";

import { GGMLQuantizationType, gguf } from "@huggingface/gguf";

const convertBinary = process.env.BLIP_CONVERT;
const writeModelBinary = process.env.BLIP_WRITE_SYNTHETIC_MODEL;
assert.ok(convertBinary, "set BLIP_CONVERT to the blip-convert binary");
assert.ok(writeModelBinary, "set BLIP_WRITE_SYNTHETIC_MODEL to the blip_write_synthetic_model binary");

const scratch = process.env.BLIP_SCRATCH_DIR ?? mkdtempSync(join(tmpdir(), "blip-gguf-read-"));
const modelDir = join(scratch, "model");

// Per --type: the ggml type of the weights, that of the patch convolution, llama.cpp's
// general.file_type, and whether the file has block types (general.quantization_version).
// Types with fewer than 8 bits store the patch convolution as q8_0.
const TYPES = {
	f32: { dtype: GGMLQuantizationType.F32, patchDtype: GGMLQuantizationType.F32, fileType: 0, quantized: false },
	f16: { dtype: GGMLQuantizationType.F16, patchDtype: GGMLQuantizationType.F16, fileType: 1, quantized: false },
	q8_0: { dtype: GGMLQuantizationType.Q8_0, patchDtype: GGMLQuantizationType.Q8_0, fileType: 7, quantized: true },
	q4_k: { dtype: GGMLQuantizationType.Q4_K, patchDtype: GGMLQuantizationType.Q8_0, fileType: 14, quantized: true },
};

const PATCH_EMBEDDING = "vision_model.embeddings.patch_embedding.weight";

// Elements and bytes per block of each ggml type used here (ggml's type traits).
const BLOCKS = {
	[GGMLQuantizationType.F32]: [1, 4],
	[GGMLQuantizationType.F16]: [1, 2],
	[GGMLQuantizationType.Q8_0]: [32, 34],
	[GGMLQuantizationType.Q4_K]: [256, 144],
};

// Returns the safetensors header of `path`: tensor name -> {dtype, shape, data_offsets},
// and where the data section starts.
function readSafetensorsHeader(path) {
	const bytes = readFileSync(path);
	const headerSize = Number(bytes.readBigUInt64LE(0));
	const header = JSON.parse(bytes.subarray(8, 8 + headerSize).toString("utf8"));
	delete header.__metadata__;
	return { header, dataStart: 8 + headerSize, bytes };
}

// Linear weights and word embeddings take the requested type; everything else stays f32.
function isWeight(name, shape) {
	return shape.length === 2 && name.endsWith(".weight") && !name.includes("position_embeddings");
}

// The shape a tensor is stored with: the checkpoint's, except that files of a type other than
// f32 store the 4-D patch convolution as its [hidden, channels * patch * patch] matrix.
function storedShape(name, shape, expected) {
	if (name !== PATCH_EMBEDDING || expected.patchDtype === GGMLQuantizationType.F32) return shape;
	return [shape[0], shape.slice(1).reduce((product, dim) => product * dim, 1)];
}

function storedDtype(name, shape, expected) {
	if (name === PATCH_EMBEDDING) return expected.patchDtype;
	return isWeight(name, shape) ? expected.dtype : GGMLQuantizationType.F32;
}

function readBytes(path, position, length) {
	const buffer = Buffer.alloc(length);
	const fd = openSync(path, "r");
	try {
		readSync(fd, buffer, 0, length, position);
	} finally {
		closeSync(fd);
	}
	return buffer;
}

let source;

before(() => {
	rmSync(modelDir, { recursive: true, force: true });
	mkdirSync(scratch, { recursive: true });
	execFileSync(writeModelBinary, [modelDir]);
	source = readSafetensorsHeader(join(modelDir, "model.safetensors"));
	for (const type of Object.keys(TYPES)) {
		execFileSync(convertBinary, [modelDir, "-o", join(scratch, `${type}.gguf`), "--type", type]);
	}
});

for (const [type, expected] of Object.entries(TYPES)) {
	test(`${type} file metadata and tensor infos`, async () => {
		const path = join(scratch, `${type}.gguf`);
		const { metadata, tensorInfos, tensorDataOffset } = await gguf(path, { allowLocalFile: true });

		assert.equal(metadata.version, 3);
		assert.equal(metadata["general.architecture"], "blip");
		assert.equal(metadata["general.name"], "model");
		assert.equal(metadata["blip.task"], "caption");
		assert.equal(metadata["blip.vision.hidden_size"], 256);
		assert.equal(metadata["general.file_type"], expected.fileType);
		assert.equal(metadata["general.quantization_version"], expected.quantized ? 2 : undefined);
		assert.equal(metadata["tokenizer.ggml.tokens"].length, 256);
		assert.equal(metadata["tokenizer.ggml.tokens"][254], "[DEC]");
		assert.equal(Number(metadata.tensor_count), tensorInfos.length);

		const names = Object.keys(source.header).sort();
		assert.deepEqual(tensorInfos.map((info) => info.name).sort(), names);

		const alignment = Number(metadata["general.alignment"] ?? 32);
		assert.equal(Number(tensorDataOffset) % alignment, 0);
		let end = 0n;
		for (const info of [...tensorInfos].sort((a, b) => (a.offset < b.offset ? -1 : 1))) {
			const shape = storedShape(info.name, source.header[info.name].shape, expected);
			assert.deepEqual(info.shape.map(Number), [...shape].reverse(), info.name);
			assert.equal(info.dtype, storedDtype(info.name, source.header[info.name].shape, expected), info.name);

			const [blockSize, blockBytes] = BLOCKS[info.dtype];
			const count = shape.reduce((product, dim) => product * dim, 1);
			assert.equal(shape[shape.length - 1] % blockSize, 0, `${info.name}: rows are whole blocks`);
			assert.ok(info.offset >= end, `${info.name} overlaps the tensor before it`);
			assert.equal(Number(info.offset) % alignment, 0, `${info.name} is not aligned`);
			end = info.offset + BigInt((count / blockSize) * blockBytes);
		}
		assert.ok(tensorDataOffset + end <= BigInt(statSync(path).size), "tensor data runs past the end of the file");

		// An f32 tensor's bytes, read at the offsets the parser reports, equal the checkpoint's.
		const name = "vision_model.post_layernorm.weight";
		const info = tensorInfos.find((tensor) => tensor.name === name);
		const [begin, stop] = source.header[name].data_offsets;
		const stored = readBytes(path, Number(tensorDataOffset + info.offset), stop - begin);
		assert.ok(stored.equals(source.bytes.subarray(source.dataStart + begin, source.dataStart + stop)));
	});
}
