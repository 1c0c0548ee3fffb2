// Page side of blip-worker.mjs: the calls of blip.mjs, run in a Web Worker so that the
// page stays responsive while a model encodes images and writes text.
//
//   import { BlipWorker } from './blip-client.mjs';
//   const blip = new BlipWorker();
//   const model = await blip.load(file);              // File, Blob, ArrayBuffer or {url}
//   const image = await model.encode(imageFile);      // encode once ...
//   await model.caption(image, { onToken: (t) => show(t.text) });  // ... caption it
//   blip.terminate();
//
// Images may be a File or Blob, encoded bytes, ImageData, or what encode() returned.
// Callbacks stay on the page; the worker sends their arguments as messages.

export class BlipError extends Error {
  constructor(message) {
    super(message);
    this.name = 'BlipError';
  }
}

// A model loaded in the worker.
export class RemoteModel {
  #worker;

  constructor(worker, handle, info) {
    this.#worker = worker;
    this.handle = handle;
    this.info = info;
  }

  get task() {
    return this.info.task;
  }

  // Encodes an image once for several calls. Resolves to {embedding, width, height, timings}.
  encode(image, { onProgress } = {}) {
    return this.#worker.call('encode', { model: this.handle, image }, { onProgress });
  }

  caption(image, options = {}) {
    const { onToken, onProgress, ...rest } = options;
    return this.#worker.call('caption', { model: this.handle, image, options: rest }, { onToken, onProgress });
  }

  vqa(image, question, options = {}) {
    const { onToken, onProgress, ...rest } = options;
    return this.#worker.call('vqa', { model: this.handle, image, question, options: rest }, { onToken, onProgress });
  }

  rankAnswers(image, question, answers, options = {}) {
    const { onProgress, ...rest } = options;
    return this.#worker.call('rankAnswers', { model: this.handle, image, question, answers, options: rest }, { onProgress });
  }

  match(image, texts, options = {}) {
    const { onProgress, ...rest } = options;
    return this.#worker.call('match', { model: this.handle, image, texts, options: rest }, { onProgress });
  }

  // Frees an embedding returned by encode().
  releaseEmbedding(embedding) {
    return this.#worker.call('releaseEmbedding', { embedding: embedding.embedding });
  }

  dispose() {
    return this.#worker.call('dispose', { model: this.handle });
  }
}

export class BlipWorker {
  #worker;
  #pending = new Map();
  #nextId = 1;

  // `workerUrl` defaults to blip-worker.mjs next to this file.
  constructor({ workerUrl } = {}) {
    const url = workerUrl ? new URL(workerUrl, import.meta.url) : new URL('blip-worker.mjs', import.meta.url);
    this.#worker = new Worker(url, { type: 'module' });
    this.#worker.addEventListener('message', (event) => this.#receive(event.data));
    this.#worker.addEventListener('error', (event) => this.#failAll(`the BLIP worker failed: ${event.message || 'script error'}`));
    this.#worker.addEventListener('messageerror', () => this.#failAll('a message from the BLIP worker could not be read'));
  }

  // Loads a model in the worker. `source`: File, Blob, ArrayBuffer or typed array, or
  // {url} to let the worker download it (progress events report the bytes received).
  async load(source, { name, onProgress } = {}) {
    const args = source && typeof source.url !== 'undefined' && !(source instanceof Blob)
      ? { url: String(source.url), name }
      : { source, name };
    const result = await this.call('load', args, { onProgress });
    return new RemoteModel(this, result.model, result.info);
  }

  buildInfo() {
    return this.call('buildInfo', {});
  }

  // Stops the worker at once, also in the middle of a call; pending calls reject.
  terminate() {
    this.#worker.terminate();
    this.#failAll('the BLIP worker was terminated');
  }

  call(method, args, { onToken, onProgress } = {}) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onToken, onProgress });
      this.#worker.postMessage({ id, method, args });
    });
  }

  #receive(message) {
    const request = this.#pending.get(message.id);
    if (!request) return;
    switch (message.type) {
      case 'progress':
        request.onProgress?.(message.progress);
        break;
      case 'token':
        request.onToken?.(message.token);
        break;
      case 'result':
        this.#pending.delete(message.id);
        request.resolve(message.result);
        break;
      case 'error': {
        this.#pending.delete(message.id);
        const error = new BlipError(message.message);
        if (message.name && message.name !== 'BlipError') error.name = message.name;
        request.reject(error);
        break;
      }
    }
  }

  #failAll(reason) {
    for (const request of this.#pending.values()) request.reject(new BlipError(reason));
    this.#pending.clear();
  }
}
