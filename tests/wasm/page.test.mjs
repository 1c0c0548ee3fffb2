// The web page in headless Chromium, served from the repository root on 127.0.0.1. It loads
// the demo models and captions images from the file picker, drag and drop and a fake
// camera. Its captions, answers and scores must equal those of blip.mjs under Node.
// Screenshots go to <BLIP_WASM_BUILD>/artifacts.
//
// Environment, besides those of support.mjs:
//   BLIP_CHROMIUM  the browser (default /usr/bin/chromium, Debian's chromium package)

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  artifactsDir, distDir, goldenAvailable, goldenDir, goldenSkipReason, importBlip, readJson, repoRoot, tinyModel,
} from './support.mjs';

const chromiumPath = process.env.BLIP_CHROMIUM || '/usr/bin/chromium';
const PAGE_TIMEOUT_MS = 120_000;
// The page's default caption options (the maxLength and minLength fields).
const PAGE_CAPTION_OPTIONS = { maxLength: 30, minLength: 0 };

const MIME_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.gguf': 'application/octet-stream',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
};

// A demo model of the page (task caption, vqa or itm): models/demo-TASK.gguf once it is
// committed, the converted tiny golden model until then.
function demoModel(task) {
  const committed = path.join(repoRoot, 'models', `demo-${task}.gguf`);
  return existsSync(committed) ? { file: committed, isTiny: false } : { file: tinyModel(`tiny-${task}`), isTiny: true };
}

// Serves the repository root, with the page's blip/ folder taken from the build and the demo
// models from `demos` (task -> file). Paths outside the root are rejected.
function startServer(demos) {
  const requests = [];
  const routes = new Map(Object.entries(demos).map(([task, demo]) => [`/models/demo-${task}.gguf`, demo.file]));
  const server = createServer((request, response) => {
    const record = { url: request.url, status: 200 };
    requests.push(record);
    const urlPath = decodeURIComponent(new URL(request.url, 'http://localhost').pathname);
    let file = routes.get(urlPath);
    if (!file && urlPath.startsWith('/examples/web/blip/')) file = path.join(distDir, urlPath.slice('/examples/web/blip/'.length));
    if (!file && urlPath.startsWith('/test-images/')) file = path.join(goldenDir, 'images', urlPath.slice('/test-images/'.length));
    if (!file) file = path.join(repoRoot, urlPath);
    const resolved = path.resolve(file);
    const allowed = [repoRoot, distDir, path.join(goldenDir, 'images')].some((root) => resolved.startsWith(root + path.sep));
    if (!allowed || !existsSync(resolved) || !statSync(resolved).isFile()) {
      record.status = 404;
      response.writeHead(404, { 'Content-Type': 'text/plain' });
      response.end(`not found: ${urlPath}`);
      return;
    }
    const body = readFileSync(resolved);
    response.writeHead(200, {
      'Content-Type': MIME_TYPES[path.extname(resolved)] ?? 'application/octet-stream',
      'Content-Length': body.length,
      'Cache-Control': 'no-store',
    });
    response.end(body);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, requests, origin: `http://127.0.0.1:${server.address().port}` }));
  });
}

const chromiumSkip = !existsSync(chromiumPath) ? `${chromiumPath} not found (install Debian's chromium or set BLIP_CHROMIUM)` : false;

describe('web page in Chromium', { skip: goldenAvailable ? chromiumSkip : goldenSkipReason }, () => {
  let chromium;
  let browser;
  let page;
  let served;
  let demo;
  let demos;
  let Blip;
  const browserRequests = [];
  const failedRequests = [];
  const pageErrors = [];

  const imagePath = (name) => path.join(goldenDir, 'images', name);

  // Runs `body` on a model loaded by blip.mjs under Node, for the values the page must show.
  async function withNodeModel(modelFile, body) {
    const model = await Blip.load(readFileSync(modelFile));
    try {
      return await body(model);
    } finally {
      model.dispose();
    }
  }

  // The caption blip.mjs writes under Node for the same model file, image and options.
  function expectedCaption(modelFile, image) {
    return withNodeModel(modelFile, async (model) => (await model.caption(image, PAGE_CAPTION_OPTIONS)).text);
  }

  async function loadDemo(task) {
    await page.click(`#demo-${task}`);
    await page.waitForFunction((name) => new RegExp(`^(Loaded|Could not load) ${name}`).test(document.getElementById('model-status').textContent),
      `demo-${task}`, { timeout: PAGE_TIMEOUT_MS });
    assert.match(await page.textContent('#model-status'), new RegExp(`^Loaded demo-${task}\\.gguf`));
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: PAGE_TIMEOUT_MS });
  }

  // Waits until #caption leaves the running state and returns its final state and text.
  async function captionResult() {
    await page.waitForFunction(() => {
      const state = document.getElementById('caption').dataset.state;
      return (state === 'done' || state === 'error') && document.body.dataset.state === 'ready';
    }, null, { timeout: PAGE_TIMEOUT_MS });
    return page.$eval('#caption', (element) => ({ state: element.dataset.state, text: element.textContent }));
  }

  async function resetCaption() {
    await page.$eval('#caption', (element) => {
      element.dataset.state = 'idle';
    });
  }

  async function screenshot(name) {
    mkdirSync(artifactsDir, { recursive: true });
    await page.screenshot({ path: path.join(artifactsDir, name), fullPage: true });
  }

  before(async () => {
    ({ chromium } = await import('playwright-core'));
    ({ Blip } = await importBlip());
    demos = { caption: demoModel('caption'), vqa: demoModel('vqa'), itm: demoModel('itm') };
    demo = demos.caption;
    served = await startServer(demos);
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        // A generated camera picture, allowed without a prompt.
        '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream',
      ],
    });
    const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
    context.on('request', (request) => browserRequests.push(request.url()));
    context.on('requestfailed', (request) => failedRequests.push(`${request.url()}: ${request.failure()?.errorText}`));
    page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(message.text());
    });
    await page.goto(`${served.origin}/examples/web/index.html`);
  });

  after(async () => {
    await browser?.close();
    served?.server.close();
  });

  test('WebAssembly starts with SIMD', async () => {
    const build = page.locator('#timings dt', { hasText: 'WebAssembly build' }).locator('xpath=following-sibling::dd[1]');
    await build.waitFor({ timeout: PAGE_TIMEOUT_MS });
    assert.match(await build.textContent(), /SIMD on/);
  });

  test('demo model captions a chosen image', async () => {
    await loadDemo('caption');

    await resetCaption();
    // Records every text the caption shows, to see it grow while tokens arrive.
    await page.evaluate(() => {
      window.captionTexts = [];
      new MutationObserver(() => window.captionTexts.push(document.getElementById('caption').textContent))
        .observe(document.getElementById('caption'), { childList: true, characterData: true, subtree: true });
    });
    await page.setInputFiles('#image-file', imagePath('cats.png'));
    const caption = await captionResult();
    const shown = await page.evaluate(() => window.captionTexts.filter((text) => text.length > 0));
    if ((await Blip.buildInfo()).streaming) {
      assert.ok(new Set(shown).size > 2, `the caption appeared at once: ${JSON.stringify(shown)}`);
    }
    assert.equal(caption.state, 'done', caption.text);
    assert.equal(caption.text, await expectedCaption(demo.file, readFileSync(imagePath('cats.png'))));
    if (demo.isTiny) {
      const cases = readJson(path.join(goldenDir, 'expected', 'tiny-caption.json')).cases;
      assert.equal(caption.text, cases.find((item) => item.image === 'cats.png').decoded_greedy);
    }
    assert.match(await page.textContent('#timings'), /Vision encoder/);
    assert.match(await page.textContent('#timings'), /per token/);
    await screenshot('page-caption.png');
  });

  test('dropped image captioned', async () => {
    await resetCaption();
    const dataTransfer = await page.evaluateHandle(async () => {
      const blob = await (await fetch('/test-images/bike.jpg')).blob();
      const transfer = new DataTransfer();
      transfer.items.add(new File([blob], 'bike.jpg', { type: 'image/jpeg' }));
      return transfer;
    });
    await page.dispatchEvent('#drop-zone', 'drop', { dataTransfer });
    const caption = await captionResult();
    assert.equal(caption.state, 'done', caption.text);
    assert.equal(caption.text, await expectedCaption(demo.file, readFileSync(imagePath('bike.jpg'))));
    assert.match(await page.textContent('#image-status'), /bike\.jpg/);
  });

  test('camera picture captioned', async () => {
    await page.click('#camera-start');
    await page.waitForFunction(() => document.getElementById('camera').videoWidth > 0, null, { timeout: PAGE_TIMEOUT_MS });
    await resetCaption();
    await page.click('#camera-capture');
    const caption = await captionResult();
    assert.equal(caption.state, 'done', caption.text);
    assert.ok(caption.text.length > 0, 'the camera picture got an empty caption');
    assert.match(await page.textContent('#image-status'), /Camera picture/);
    await screenshot('page-camera.png');
  });

  test('model file from the picker', async () => {
    const tiny = tinyModel('tiny-caption');
    await page.setInputFiles('#model-file', tiny);
    await page.waitForFunction(() => /^(Loaded|Could not load) tiny-caption/.test(document.getElementById('model-status').textContent),
      null, { timeout: PAGE_TIMEOUT_MS });
    assert.match(await page.textContent('#model-status'), /^Loaded tiny-caption\.gguf/);
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: PAGE_TIMEOUT_MS });

    await resetCaption();
    await page.setInputFiles('#image-file', imagePath('coco4016.png'));
    const caption = await captionResult();
    const cases = readJson(path.join(goldenDir, 'expected', 'tiny-caption.json')).cases;
    const expected = await expectedCaption(tiny, readFileSync(imagePath('coco4016.png')));
    assert.equal(caption.text, expected);
    // The golden greedy case runs to 40 tokens and the page stops at 30, so only a prefix matches.
    assert.ok(cases.find((item) => item.image === 'coco4016.png').decoded_greedy.startsWith(expected));
  });

  test('demo model answers a question', async () => {
    await loadDemo('vqa');
    const question = 'how many cats are in the picture?';
    await page.fill('#question', question);
    await page.click('#vqa-run');
    await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('answers').dataset.state),
      null, { timeout: PAGE_TIMEOUT_MS });
    const expected = await withNodeModel(demos.vqa.file, async (model) => (await model.vqa(readFileSync(imagePath('coco4016.png')), question)).text);
    assert.equal(await page.textContent('#answers li:first-child'), `${question} → ${expected}`);
    await screenshot('page-vqa.png');
  });

  test('demo model matches texts', async () => {
    await loadDemo('itm');
    await page.fill('#match-texts', 'two cats sleeping on a pink blanket\na man riding a bicycle down the road');
    await page.click('#match-run');
    await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('matches').dataset.state),
      null, { timeout: PAGE_TIMEOUT_MS });
    const rows = await page.$$eval('#matches tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    const expected = await withNodeModel(demos.itm.file, async (model) => (await model.match(readFileSync(imagePath('coco4016.png')),
      ['two cats sleeping on a pink blanket', 'a man riding a bicycle down the road'])).matches);
    assert.deepEqual(rows, expected.map((m) => [m.text, m.itmProbability.toFixed(3), m.cosine.toFixed(3)]));
    await screenshot('page-match.png');
  });

  test('invalid model file reported', async () => {
    await page.setInputFiles('#model-file', { name: 'broken.gguf', mimeType: 'application/octet-stream', buffer: Buffer.from('GGUF but not really') });
    await page.waitForFunction(() => /broken\.gguf/.test(document.getElementById('model-status').textContent), null, { timeout: PAGE_TIMEOUT_MS });
    const status = await page.textContent('#model-status');
    assert.match(status, /^Could not load broken\.gguf: broken\.gguf: /);
  });

  test('no request to other hosts', () => {
    const isLocal = (url) => url.startsWith(served.origin + '/') || /^(blob|data):/.test(url);
    assert.deepEqual(browserRequests.filter((url) => !isLocal(url)), []);
    // Chromium sometimes reports a worker's completed streaming download as aborted, so
    // failures of local requests are checked on the server side below instead.
    assert.deepEqual(failedRequests.filter((entry) => !isLocal(entry)), []);
  });

  test('every page request served', () => {
    assert.ok(served.requests.some((r) => r.url === '/examples/web/blip/blip-core.wasm'), 'blip-core.wasm was not requested');
    assert.deepEqual(served.requests.filter((r) => r.status !== 200).map((r) => r.url), []);
  });

  test('no page errors', () => {
    assert.deepEqual(pageErrors, []);
  });
});
