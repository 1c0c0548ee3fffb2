// The page's logic. The model runs in a Web Worker (blip/blip-worker.mjs, started by
// BlipWorker), so the page stays responsive while it works.
//
// The data-state attributes of <body> (ready, busy) and of #caption, #answers and #matches
// (idle, running, done, error) show what the page is doing. The browser test waits on them.

import { BlipWorker } from './blip/blip-client.mjs';

// Demo models, relative to this page: models/ at the root of the repository.
const DEMO_MODELS = {
  caption: new URL('../../models/demo-caption.gguf', import.meta.url),
  vqa: new URL('../../models/demo-vqa.gguf', import.meta.url),
  itm: new URL('../../models/demo-itm.gguf', import.meta.url),
};
const TASK_LABELS = { caption: 'captioning', vqa: 'question answering', itm: 'image-text matching' };

const $ = (id) => document.getElementById(id);

const blip = new BlipWorker();
const models = new Map(); // task -> {model, name}
const embeddings = new Map(); // task -> promise of the current image's embedding
let currentImage = null; // File, Blob or ImageData
let previewUrl = null;
let cameraStream = null;
let busy = false;

function formatMs(ms) {
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
}

function formatBytes(bytes) {
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  if (bytes >= 1 << 10) return `${(bytes / (1 << 10)).toFixed(1)} KiB`;
  return `${bytes} bytes`;
}

function setTiming(label, value) {
  const list = $('timings');
  let entry = [...list.querySelectorAll('dt')].find((dt) => dt.textContent === label);
  if (!entry) {
    entry = document.createElement('dt');
    entry.textContent = label;
    list.append(entry, document.createElement('dd'));
  }
  entry.nextElementSibling.textContent = value;
}

function showStatus(element, message, isError = false) {
  element.textContent = message;
  element.classList.toggle('error', isError);
}

function updateButtons() {
  const hasImage = currentImage !== null;
  $('caption-run').disabled = busy || !hasImage || !models.has('caption');
  $('vqa-run').disabled = busy || !hasImage || !models.has('vqa');
  $('match-run').disabled = busy || !hasImage || !models.has('itm');
  for (const button of document.querySelectorAll('button[data-task]')) button.disabled = busy;
  document.body.dataset.state = busy ? 'busy' : 'ready';
}

// Runs one task at a time: the worker runs calls one after another anyway.
async function exclusive(task) {
  if (busy) return;
  busy = true;
  updateButtons();
  try {
    await task();
  } finally {
    busy = false;
    updateButtons();
  }
}

// --- Models ---

function renderModelList() {
  const list = $('model-list');
  list.replaceChildren();
  for (const [task, { name, model }] of models) {
    const item = document.createElement('li');
    const info = model.info;
    item.textContent = `${TASK_LABELS[task]}: ${name} (${formatBytes(info.fileBytes)}, vision ${info.visionHiddenSize} wide ` +
      `× ${info.visionLayers} layers, text ${info.textHiddenSize} wide × ${info.textLayers} layers, ${info.imageSize} px input)`;
    list.append(item);
  }
}

async function loadModel(source, name) {
  const status = $('model-status');
  const progress = $('model-progress');
  progress.hidden = false;
  progress.removeAttribute('value');
  showStatus(status, `Loading ${name}…`);
  const start = performance.now();
  try {
    const model = await blip.load(source, {
      name,
      onProgress: (event) => {
        if (event.stage === 'download') {
          if (event.total) {
            progress.max = event.total;
            progress.value = event.received;
          }
          showStatus(status, `Downloading ${name}: ${formatBytes(event.received)}` + (event.total ? ` of ${formatBytes(event.total)}` : ''));
        } else if (event.stage === 'parse') {
          progress.removeAttribute('value');
          showStatus(status, `Reading ${name} (${formatBytes(event.bytes)})…`);
        }
      },
    });
    const previous = models.get(model.task);
    if (previous) await previous.model.dispose();
    models.set(model.task, { model, name });
    embeddings.delete(model.task);
    renderModelList();
    const seconds = performance.now() - start;
    showStatus(status, `Loaded ${name} (${TASK_LABELS[model.task]}).`);
    setTiming(`Model load (${model.task})`, `${formatMs(seconds)}, of which parsing ${formatMs(model.info.loadTimings.parseMs)}`);
    return model;
  } catch (error) {
    showStatus(status, `Could not load ${name}: ${error.message}`, true);
    document.body.dataset.error = error.message;
    return null;
  } finally {
    progress.hidden = true;
  }
}

$('model-file').addEventListener('change', (event) => {
  const file = event.target.files[0];
  event.target.value = '';
  if (!file) return;
  exclusive(async () => {
    const model = await loadModel(file, file.name);
    if (model) await runDefault(model.task);
  });
});

for (const button of document.querySelectorAll('button[data-task]')) {
  button.addEventListener('click', () => {
    const url = DEMO_MODELS[button.dataset.task];
    exclusive(async () => {
      const model = await loadModel({ url: url.href }, url.pathname.split('/').pop());
      if (model) await runDefault(model.task);
    });
  });
}

// --- Images ---

function releaseEmbeddings() {
  for (const [task, pending] of embeddings) {
    const entry = models.get(task);
    pending.then((embedding) => entry?.model.releaseEmbedding(embedding)).catch(() => {});
  }
  embeddings.clear();
}

function showPreview(source) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  if (source instanceof Blob) {
    previewUrl = URL.createObjectURL(source);
    $('preview').src = previewUrl;
    $('preview').hidden = false;
    $('frame').hidden = true;
  } else {
    $('preview').hidden = true;
    $('frame').hidden = false;
  }
}

function setImage(source, label) {
  releaseEmbeddings();
  currentImage = source;
  showPreview(source);
  showStatus($('image-status'), label);
  updateButtons();
  exclusive(() => runDefault('caption'));
}

function embeddingFor(task) {
  if (!embeddings.has(task)) {
    const { model } = models.get(task);
    const pending = model.encode(currentImage);
    pending.catch(() => embeddings.delete(task));
    embeddings.set(task, pending);
  }
  return embeddings.get(task);
}

$('image-file').addEventListener('change', (event) => {
  const file = event.target.files[0];
  event.target.value = '';
  if (file) setImage(file, `${file.name} (${formatBytes(file.size)})`);
});

const dropZone = $('drop-zone');
dropZone.addEventListener('dragover', (event) => {
  event.preventDefault();
  dropZone.classList.add('dragging');
});
dropZone.addEventListener('dragleave', () => dropZone.classList.remove('dragging'));
dropZone.addEventListener('drop', (event) => {
  event.preventDefault();
  dropZone.classList.remove('dragging');
  const file = event.dataTransfer.files[0];
  if (!file) return;
  if (file.name.endsWith('.gguf')) {
    exclusive(async () => {
      const model = await loadModel(file, file.name);
      if (model) await runDefault(model.task);
    });
  } else {
    setImage(file, `${file.name} (${formatBytes(file.size)})`);
  }
});

function stopCamera() {
  cameraStream?.getTracks().forEach((track) => track.stop());
  cameraStream = null;
  $('camera').hidden = true;
  $('camera-capture').hidden = true;
  $('camera-stop').hidden = true;
}

$('camera-start').addEventListener('click', async () => {
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    showStatus($('image-status'), `The camera is not available: ${error.message}`, true);
    return;
  }
  $('camera').srcObject = cameraStream;
  $('camera').hidden = false;
  $('camera-capture').hidden = false;
  $('camera-stop').hidden = false;
});

$('camera-stop').addEventListener('click', stopCamera);

$('camera-capture').addEventListener('click', () => {
  const video = $('camera');
  const canvas = $('frame');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext('2d');
  context.drawImage(video, 0, 0);
  const frame = context.getImageData(0, 0, canvas.width, canvas.height);
  stopCamera();
  setImage(frame, `Camera picture (${frame.width}×${frame.height})`);
});

// --- Tasks ---

function showImageTimings(embedding) {
  const t = embedding.timings;
  if (t.decodeMs !== undefined) setTiming('Image decoding', formatMs(t.decodeMs));
  if (t.preprocessMs !== undefined) setTiming('Resize and normalize', formatMs(t.preprocessMs));
  setTiming('Vision encoder', formatMs(t.visionMs));
}

function setOutputState(element, state, message) {
  element.dataset.state = state;
  if (message !== undefined) element.dataset.error = message;
  else delete element.dataset.error;
}

async function runCaption() {
  const output = $('caption');
  setOutputState(output, 'running');
  output.classList.remove('error');
  output.textContent = '';
  const options = {
    maxLength: Number($('max-length').value),
    minLength: Number($('min-length').value),
  };
  const prompt = $('prompt').value.trim();
  if (prompt) options.prompt = prompt;
  try {
    const embedding = await embeddingFor('caption');
    showImageTimings(embedding);
    const result = await models.get('caption').model.caption(embedding, {
      ...options,
      onToken: (token) => {
        output.textContent = token.text;
      },
    });
    output.textContent = result.text;
    setTiming('Caption', `${formatMs(result.timings.generateMs)} for ${result.timings.tokens} tokens, ` +
      `${formatMs(result.timings.msPerToken)} per token`);
    setOutputState(output, 'done');
  } catch (error) {
    output.textContent = error.message;
    output.classList.add('error');
    setOutputState(output, 'error', error.message);
  }
}

async function runVqa() {
  const list = $('answers');
  const question = $('question').value.trim();
  if (!question) return;
  setOutputState(list, 'running');
  const item = document.createElement('li');
  item.textContent = `${question} → …`;
  list.prepend(item);
  try {
    const embedding = await embeddingFor('vqa');
    showImageTimings(embedding);
    const result = await models.get('vqa').model.vqa(embedding, question, {
      onToken: (token) => {
        item.textContent = `${question} → ${token.text}`;
      },
    });
    item.textContent = `${question} → ${result.text}`;
    if (result.timings?.generateMs !== undefined) setTiming('Answer', formatMs(result.timings.generateMs));
    setOutputState(list, 'done');
  } catch (error) {
    item.textContent = `${question} → ${error.message}`;
    item.classList.add('error');
    setOutputState(list, 'error', error.message);
  }
}

async function runMatch() {
  const table = $('matches');
  const texts = $('match-texts').value.split('\n').map((line) => line.trim()).filter(Boolean);
  if (texts.length === 0) return;
  setOutputState(table, 'running');
  const body = table.querySelector('tbody');
  body.replaceChildren();
  try {
    const embedding = await embeddingFor('itm');
    showImageTimings(embedding);
    const result = await models.get('itm').model.match(embedding, texts);
    for (const match of result.matches) {
      const row = document.createElement('tr');
      for (const value of [match.text, match.itmProbability.toFixed(3), match.cosine.toFixed(3)]) {
        const cell = document.createElement('td');
        cell.textContent = value;
        row.append(cell);
      }
      body.append(row);
    }
    if (result.timings?.matchMs !== undefined) setTiming('Matching', formatMs(result.timings.matchMs));
    setOutputState(table, 'done');
  } catch (error) {
    const row = document.createElement('tr');
    const cell = document.createElement('td');
    cell.colSpan = 3;
    cell.className = 'error';
    cell.textContent = error.message;
    row.append(cell);
    body.append(row);
    setOutputState(table, 'error', error.message);
  }
}

// After a new model or image: caption at once, since that needs no further input.
async function runDefault(task) {
  if (task === 'caption' && currentImage && models.has('caption')) await runCaption();
}

$('caption-form').addEventListener('submit', (event) => {
  event.preventDefault();
  exclusive(runCaption);
});
$('vqa-form').addEventListener('submit', (event) => {
  event.preventDefault();
  exclusive(runVqa);
});
$('match-form').addEventListener('submit', (event) => {
  event.preventDefault();
  exclusive(runMatch);
});

blip.buildInfo().then(
  (info) => setTiming('WebAssembly build', `SIMD ${info.simd ? 'on' : 'off'}, kernels: ${info.cpuLevel}, one thread`),
  (error) => showStatus($('model-status'), `The WebAssembly module could not start: ${error.message}`, true),
);
updateButtons();
