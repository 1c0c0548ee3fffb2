// BLIP in WebAssembly: load a model file from bytes, then caption images, answer
// questions about them (VQA models) or score texts against them (ITM models).
//
//   import { Blip } from './blip.mjs';
//   const model = await Blip.load(await file.arrayBuffer());
//   const { text } = await model.caption(imageData, { maxLength: 30, onToken: (t) => show(t.text) });
//
// Every call runs synchronously on the calling thread, so a page should use this module
// from a Web Worker (see blip-client.mjs). It runs in browsers, workers and Node (tested
// with Node 20). Failures reject with a BlipError that carries the library's message.

import createBlipCore from './blip-core.mjs';

// An error of the library or of this API, with the library's message.
export class BlipError extends Error {
  constructor(message) {
    super(message);
    this.name = 'BlipError';
  }
}

const isNode = typeof process === 'object' && typeof process.versions?.node === 'string' && typeof window === 'undefined';

// Option names per call; any other name is rejected, so that a misspelled option does not
// silently fall back to its default. Generation options beyond maxLength and minLength
// (numBeams, doSample, ...) are accepted when the library of this build has them; see
// buildInfo().generationOptions.
const NEWER_GENERATION_OPTIONS = new Set([
  'numBeams', 'lengthPenalty', 'repetitionPenalty', 'noRepeatNgramSize', 'doSample', 'temperature', 'topK', 'topP', 'seed',
]);
const CALL_OPTIONS = {
  caption: ['prompt'],
  vqa: ['firstToken'],
  rankAnswers: ['firstToken', 'k', 'labelSmoothing'],
  match: ['firstToken'],
};
const GENERATING_CALLS = new Set(['caption', 'vqa']);
const CALLBACK_OPTIONS = new Set(['onToken', 'onProgress']);

async function readWasm(url) {
  if (isNode && url.protocol === 'file:') {
    const { readFile } = await import('node:fs/promises');
    return readFile(url);
  }
  const response = await fetch(url, { credentials: 'same-origin' });
  if (!response.ok) throw new BlipError(`cannot load ${url}: HTTP ${response.status} ${response.statusText}`);
  return response.arrayBuffer();
}

let corePromise = null;

// Loads and instantiates the WebAssembly module once. `wasmUrl` overrides where
// blip-core.wasm is read from (default: next to this file).
export function loadCore({ wasmUrl } = {}) {
  if (!corePromise) {
    const url = wasmUrl ? new URL(wasmUrl, import.meta.url) : new URL('blip-core.wasm', import.meta.url);
    corePromise = readWasm(url).then((binary) =>
      createBlipCore({
        // The module is instantiated from these bytes in every environment, because the
        // runtime's own loader does not handle Node or module workers.
        wasmBinary: binary,
        print: (line) => console.log(line),
        printErr: (line) => console.warn(line),
      }),
    );
    corePromise.catch(() => {
      corePromise = null;
    });
  }
  return corePromise;
}

// Downloads a model file. onProgress({stage: 'download', received, total}) follows the
// bytes as they arrive; `total` is null when the server sends no Content-Length.
export async function fetchModel(url, { onProgress } = {}) {
  const response = await fetch(url, { credentials: 'same-origin' });
  if (!response.ok) throw new BlipError(`cannot download the model ${url}: HTTP ${response.status} ${response.statusText}`);
  const length = Number(response.headers.get('Content-Length'));
  const total = Number.isFinite(length) && length > 0 ? length : null;
  if (!response.body) return new Uint8Array(await response.arrayBuffer());
  const chunks = [];
  let received = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onProgress?.({ stage: 'download', received, total });
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

// Throws the error of a binding result ({error: message}) or returns the result.
function unwrap(result) {
  if (result && typeof result.error === 'string') throw new BlipError(result.error);
  return result;
}

function checkOptions(options, operation, generationOptions) {
  const allowed = new Set(CALL_OPTIONS[operation]);
  if (GENERATING_CALLS.has(operation)) for (const name of generationOptions) allowed.add(name);
  for (const key of Object.keys(options)) {
    if (allowed.has(key) || CALLBACK_OPTIONS.has(key) || options[key] === undefined) continue;
    if (GENERATING_CALLS.has(operation) && NEWER_GENERATION_OPTIONS.has(key)) {
      throw new BlipError(`${operation}: option ${key} is not supported by this build yet`);
    }
    throw new BlipError(`${operation}: unknown option ${key}; known options: ${[...allowed].join(', ')}`);
  }
}

function byteView(source) {
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (ArrayBuffer.isView(source)) return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  return null;
}

function isBlob(value) {
  return typeof Blob !== 'undefined' && value instanceof Blob;
}

// Turns an image argument into what the bindings read: {bytes, name} for encoded files, or
// {rgba|rgb, width, height} for decoded pixels.
async function imageInput(image) {
  if (image == null) throw new BlipError('image is missing');
  if (isBlob(image)) return { bytes: new Uint8Array(await image.arrayBuffer()), name: image.name || '<blob>' };
  const bytes = byteView(image);
  if (bytes) return { bytes, name: '<image bytes>' };
  if (typeof image.width === 'number' && typeof image.height === 'number' && ArrayBuffer.isView(image.data)) {
    // ImageData, or an object shaped like it: RGBA (or RGB) rows without padding. The
    // bindings check the size.
    const data = new Uint8Array(image.data.buffer, image.data.byteOffset, image.data.byteLength);
    const isRgb = data.length === image.width * image.height * 3;
    return { [isRgb ? 'rgb' : 'rgba']: data, width: image.width, height: image.height };
  }
  throw new BlipError('image: expected ImageData, a Blob or File, encoded image bytes, or an ImageEmbedding');
}

// The onToken callback as the bindings call it during generation. Events arrive as
// {piece} (final text pieces) or as {id, index, text} (tokens with the decoded caption so
// far), the latter also after generation when the library did not stream. The caller
// always gets {piece, text}, plus id and index when known. An exception of the caller's callback must not unwind through
// WebAssembly frames, so it is kept and thrown after generation, and later events are
// dropped.
class TokenStream {
  #onToken;
  #text = '';
  #error = null;

  constructor(onToken) {
    this.#onToken = onToken;
    this.callback = onToken ? (event) => this.deliver(event) : undefined;
  }

  deliver(event) {
    if (this.#error) return;
    let { piece, text } = event;
    if (text === undefined) {
      text = this.#text + piece;
    } else if (piece === undefined) {
      piece = text.startsWith(this.#text) ? text.slice(this.#text.length) : text;
    }
    this.#text = text;
    const token = { piece, text };
    if (event.id !== undefined) {
      token.id = event.id;
      token.index = event.index;
    }
    try {
      this.#onToken(token);
    } catch (error) {
      this.#error = error;
    }
  }

  rethrow() {
    if (this.#error) throw this.#error;
  }
}

// The vision encoder's output for one image and one model. Pass it in place of the image
// to run several calls on the image without encoding it again.
export class ImageEmbedding {
  constructor(model, embeds, width, height, timings) {
    this.model = model;
    this.embeds = embeds;
    this.width = width;
    this.height = height;
    this.timings = timings;
  }
}

// A loaded model. Create it with Blip.load().
export class BlipModel {
  #model;
  #generationOptions;

  constructor(core, model, info) {
    this.#model = model;
    this.info = info;
    this.#generationOptions = Array.from(core.buildInfo().generationOptions);
  }

  get task() {
    return this.info.task;
  }

  #handle() {
    if (!this.#model) throw new BlipError('the model was disposed');
    return this.#model;
  }

  // Decodes (or takes) an image, preprocesses it and runs the vision encoder.
  async encode(image, { onProgress } = {}) {
    if (image instanceof ImageEmbedding) {
      if (image.model !== this) throw new BlipError('the ImageEmbedding was made by another model');
      return image;
    }
    onProgress?.({ stage: 'encode' });
    const input = await imageInput(image);
    const result = unwrap(this.#handle().encodeImage(input));
    return new ImageEmbedding(this, result.embeds, result.width, result.height, result.timings);
  }

  // Runs the vision encoder on preprocessed pixel values (Float32Array, [3, size, size]),
  // as transformers' BlipImageProcessor returns them.
  async encodePixelValues(pixelValues) {
    if (!(pixelValues instanceof Float32Array)) throw new BlipError('pixel values must be a Float32Array');
    const result = unwrap(this.#handle().encodePixelValues(pixelValues));
    return new ImageEmbedding(this, result.embeds, this.info.imageSize, this.info.imageSize, result.timings);
  }

  // Writes a caption. `options`: prompt, maxLength and minLength (counted as on the
  // command line: every token, [DEC] and prompt included), the generation options of
  // buildInfo().generationOptions, onToken({piece, text, id?, index?}) with each new piece
  // of the caption and the caption so far, and onProgress({stage}). Resolves to {text, ids,
  // streamed, timings}. `streamed` is true when onToken ran during generation, false when
  // it ran after it.
  async caption(image, options = {}) {
    checkOptions(options, 'caption', this.#generationOptions);
    const { onToken, onProgress, ...settings } = options;
    const embedding = await this.encode(image, { onProgress });
    onProgress?.({ stage: 'generate' });
    const stream = new TokenStream(onToken);
    const result = unwrap(this.#handle().caption(embedding.embeds, settings, stream.callback));
    stream.rethrow();
    return this.#generated(result, embedding, this.#promptLength(settings.prompt), stream);
  }

  // Answers a question about an image. `options`: maxLength (default 10, [DEC] included)
  // and minLength, firstToken ('enc', the default, as Salesforce trained the model, or
  // 'cls' to reproduce transformers), onToken and onProgress as for caption().
  // Resolves to {text, ids, timings}.
  async vqa(image, question, options = {}) {
    checkOptions(options, 'vqa', this.#generationOptions);
    if (typeof question !== 'string') throw new BlipError('vqa: the question must be a string');
    const { onToken, onProgress, ...settings } = options;
    const embedding = await this.encode(image, { onProgress });
    onProgress?.({ stage: 'generate' });
    const result = unwrap(this.#handle().vqa(embedding.embeds, question, settings, undefined));
    return this.#generated(result, embedding, 1, new TokenStream(onToken));
  }

  // Ranks candidate answers to a question, best first. `options`: k (candidates kept after
  // scoring their first token, default 128), labelSmoothing (0.1 reproduces Salesforce's
  // scores), firstToken. Resolves to {answers: [{text, index, score,
  // firstTokenProbability}], timings}.
  async rankAnswers(image, question, answers, options = {}) {
    checkOptions(options, 'rankAnswers', this.#generationOptions);
    if (typeof question !== 'string') throw new BlipError('rankAnswers: the question must be a string');
    const { onProgress, ...settings } = options;
    const embedding = await this.encode(image, { onProgress });
    const result = unwrap(this.#handle().rankAnswers(embedding.embeds, question, answers, settings));
    return { answers: result.answers, timings: { ...embedding.timings, ...result.timings } };
  }

  // Scores texts against an image with an ITM model. `options`: firstToken. Resolves to
  // {matches: [{text, itmProbability, itmLogits, cosine}], timings}.
  async match(image, texts, options = {}) {
    checkOptions(options, 'match', this.#generationOptions);
    const { onProgress, ...settings } = options;
    const embedding = await this.encode(image, { onProgress });
    const result = unwrap(this.#handle().match(embedding.embeds, texts, settings));
    return { matches: result.matches, timings: { ...embedding.timings, ...result.timings } };
  }

  // Token ids of `text`, [CLS] and [SEP] included, as the model's tokenizer encodes it.
  tokenize(text) {
    return Array.from(unwrap(this.#handle().tokenize(String(text))).ids);
  }

  // Text of token ids, special tokens skipped.
  decode(ids) {
    return unwrap(this.#handle().decodeIds(Int32Array.from(ids))).text;
  }

  // Frees the model's memory inside the WebAssembly module.
  dispose() {
    this.#model?.delete();
    this.#model = null;
  }

  // Length of the decoder's prefix: [DEC] plus the prompt's tokens without [CLS] and [SEP].
  #promptLength(prompt) {
    return prompt ? this.tokenize(prompt).length - 1 : 1;
  }

  #generated(result, embedding, prefixLength, stream) {
    const ids = Array.from(result.ids);
    const streamed = Boolean(result.streamed);
    if (stream.callback && !streamed) {
      for (let index = prefixLength; index < ids.length; ++index) {
        stream.deliver({ id: ids[index], index, text: this.decode(ids.slice(0, index + 1)) });
      }
      stream.rethrow();
    }
    const tokens = Math.max(1, ids.length - prefixLength);
    return {
      text: result.text,
      ids,
      streamed,
      timings: { ...embedding.timings, ...result.timings, tokens, msPerToken: result.timings.generateMs / tokens },
    };
  }
}

export const Blip = {
  // Parses a model file written by blip-convert. `source`: ArrayBuffer, typed array or
  // Blob/File. The bytes are copied into WebAssembly memory; the caller may drop them.
  async load(source, { name, onProgress, wasmUrl } = {}) {
    onProgress?.({ stage: 'runtime' });
    const core = await loadCore({ wasmUrl });
    let bytes = byteView(source);
    if (!bytes && isBlob(source)) {
      onProgress?.({ stage: 'read' });
      bytes = new Uint8Array(await source.arrayBuffer());
      name ??= source.name;
    }
    if (!bytes) throw new BlipError('Blip.load: expected an ArrayBuffer, a typed array or a Blob with the model file');
    onProgress?.({ stage: 'parse', bytes: bytes.length });
    const model = new core.Model();
    let result;
    try {
      result = unwrap(model.load(bytes, name ?? '<model>'));
    } catch (error) {
      model.delete();
      throw error;
    }
    const info = { ...result.info, fileBytes: bytes.length, loadTimings: result.timings };
    return new BlipModel(core, model, info);
  },

  // Facts about the WebAssembly build: {simd, cpuLevel, generationOptions, streaming}.
  async buildInfo({ wasmUrl } = {}) {
    const core = await loadCore({ wasmUrl });
    const info = core.buildInfo();
    return { ...info, generationOptions: Array.from(info.generationOptions) };
  },
};

export default Blip;
