// Web Worker that runs blip.mjs off the page's main thread. Start it through
// blip-client.mjs, which offers the same calls as blip.mjs and returns promises.
//
// Messages in: {id, method, args}. Messages out, tagged with the request's id:
// {type: 'progress', progress}, {type: 'token', token}, then {type: 'result', result} or
// {type: 'error', name, message}.

import { Blip, BlipError, fetchModel } from './blip.mjs';

const models = new Map();
const embeddings = new Map();
let nextHandle = 1;

function model(handle) {
  const found = models.get(handle);
  if (!found) throw new BlipError(`no loaded model with handle ${handle}`);
  return found;
}

// An image argument: an embedding handle from 'encode', or anything blip.mjs accepts.
function image(argument) {
  if (argument && typeof argument.embedding === 'number') {
    const found = embeddings.get(argument.embedding);
    if (!found) throw new BlipError(`no image embedding with handle ${argument.embedding}`);
    return found;
  }
  return argument;
}

function describeEmbedding(handle, embedding) {
  return { embedding: handle, width: embedding.width, height: embedding.height, timings: embedding.timings };
}

const methods = {
  async load({ source, url, name }, events) {
    const bytes = url ? await fetchModel(url, { onProgress: events.progress }) : source;
    const loaded = await Blip.load(bytes, { name: name ?? (url ? String(url).split('/').pop() : undefined), onProgress: events.progress });
    const handle = nextHandle++;
    models.set(handle, loaded);
    return { model: handle, info: loaded.info };
  },

  async encode({ model: handle, image: argument }, events) {
    const embedding = await model(handle).encode(image(argument), { onProgress: events.progress });
    const embeddingHandle = nextHandle++;
    embeddings.set(embeddingHandle, embedding);
    return describeEmbedding(embeddingHandle, embedding);
  },

  async caption({ model: handle, image: argument, options }, events) {
    return model(handle).caption(image(argument), { ...options, onToken: events.token, onProgress: events.progress });
  },

  async vqa({ model: handle, image: argument, question, options }, events) {
    return model(handle).vqa(image(argument), question, { ...options, onToken: events.token, onProgress: events.progress });
  },

  async rankAnswers({ model: handle, image: argument, question, answers, options }, events) {
    return model(handle).rankAnswers(image(argument), question, answers, { ...options, onProgress: events.progress });
  },

  async match({ model: handle, image: argument, texts, options }, events) {
    return model(handle).match(image(argument), texts, { ...options, onProgress: events.progress });
  },

  async releaseEmbedding({ embedding }) {
    embeddings.delete(embedding);
    return {};
  },

  async dispose({ model: handle }) {
    const found = models.get(handle);
    if (found) {
      for (const [key, embedding] of embeddings) if (embedding.model === found) embeddings.delete(key);
      found.dispose();
      models.delete(handle);
    }
    return {};
  },

  async buildInfo() {
    return Blip.buildInfo();
  },
};

self.addEventListener('message', async (event) => {
  const { id, method, args } = event.data;
  const post = (message) => self.postMessage({ id, ...message });
  const events = {
    progress: (progress) => post({ type: 'progress', progress }),
    token: (token) => post({ type: 'token', token }),
  };
  try {
    const run = methods[method];
    if (!run) throw new BlipError(`unknown worker method ${method}`);
    post({ type: 'result', result: await run(args ?? {}, events) });
  } catch (error) {
    post({ type: 'error', name: error?.name ?? 'Error', message: error?.message ?? String(error) });
  }
});
