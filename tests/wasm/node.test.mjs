// The WebAssembly build under Node against transformers' outputs for the tiny golden models
// and against the native build: token ids must be identical, tensors within the golden
// tolerances (1e-4 absolute).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';

import {
  goldenAvailable, goldenDir, goldenSkipReason, importBlip, maxAbsDiff, nativeTool, readJson, readNpy, tinyModel,
} from './support.mjs';

const EMBEDS_TOLERANCE = 1e-4;

describe('tiny captioner in WebAssembly', { skip: goldenAvailable ? false : goldenSkipReason }, () => {
  let Blip;
  let BlipError;
  let model;
  let modelPath;
  let cases;
  const expectedDir = path.join(goldenDir, 'expected', 'tiny-caption');
  const imageBytes = (name) => readFileSync(path.join(goldenDir, 'images', name));

  before(async () => {
    ({ Blip, BlipError } = await importBlip());
    modelPath = tinyModel('tiny-caption');
    model = await Blip.load(readFileSync(modelPath), { name: path.basename(modelPath) });
    cases = readJson(path.join(goldenDir, 'expected', 'tiny-caption.json')).cases;
  });

  test('model info', () => {
    assert.equal(model.task, 'caption');
    assert.equal(model.info.imageSize, 64);
    assert.equal(model.info.visionHiddenSize, 48);
    assert.equal(model.info.textHiddenSize, 32);
  });

  test('build has WebAssembly SIMD', async () => {
    const info = await Blip.buildInfo();
    assert.equal(info.simd, true);
    assert.equal(info.cpuLevel, 'baseline', 'the xsimd kernels (WebAssembly SIMD) should be active');
  });

  test('image embeddings from golden pixel values', async () => {
    for (const item of cases) {
      const pixels = readNpy(path.join(expectedDir, `${item.image}.pixel_values.npy`)).data;
      const embedding = await model.encodePixelValues(pixels);
      const expected = readNpy(path.join(expectedDir, `${item.image}.image_embeds.npy`)).data;
      const error = maxAbsDiff(embedding.embeds, expected);
      assert.ok(error < EMBEDS_TOLERANCE, `${item.image}: image_embeds max error ${error}`);
    }
  });

  test('greedy ids from golden pixel values', async () => {
    for (const item of cases) {
      const pixels = readNpy(path.join(expectedDir, `${item.image}.pixel_values.npy`)).data;
      const embedding = await model.encodePixelValues(pixels);

      const greedy = await model.caption(embedding, { maxLength: 40 });
      assert.deepEqual(greedy.ids, item.greedy, `${item.image}: greedy`);
      assert.equal(greedy.text, item.decoded_greedy, `${item.image}: decoded greedy`);

      const max20 = await model.caption(embedding, { maxLength: 20 });
      assert.deepEqual(max20.ids, item.greedy_max20, `${item.image}: greedy_max20`);

      // transformers' default max_length of 20 applies to this case.
      const min10 = await model.caption(embedding, { minLength: 10 });
      assert.deepEqual(min10.ids, item.greedy_min10, `${item.image}: greedy_min10`);

      for (const [key, prompt] of Object.entries(item)) {
        if (!key.startsWith('prompt:')) continue;
        const text = key.slice('prompt:'.length);
        assert.deepEqual(model.tokenize(text), prompt.input_ids, `${item.image}: ${key} input ids`);
        const result = await model.caption(embedding, { prompt: text, maxLength: 40 });
        assert.deepEqual(result.ids, prompt.greedy, `${item.image}: ${key} greedy`);
      }
    }
  });

  test('beam search ids from golden pixel values', async (t) => {
    if (!(await Blip.buildInfo()).generationOptions.includes('numBeams')) {
      t.skip('the library of this build has no beam search yet');
      return;
    }
    for (const item of cases) {
      const pixels = readNpy(path.join(expectedDir, `${item.image}.pixel_values.npy`)).data;
      const embedding = await model.encodePixelValues(pixels);
      const beam3 = await model.caption(embedding, { numBeams: 3, minLength: 5, maxLength: 40 });
      assert.deepEqual(beam3.ids, item.beam3, `${item.image}: beam3`);
      const beam4 = await model.caption(embedding, { numBeams: 4, lengthPenalty: 0.6, maxLength: 24 });
      assert.deepEqual(beam4.ids, item['beam4_len0.6'], `${item.image}: beam4_len0.6`);
    }
  });

  test('greedy ids from encoded image bytes', async () => {
    // PNG decoding is exact; stb_image's JPEG decoding differs from Pillow's by a few
    // levels, which these ids do not depend on.
    for (const item of cases) {
      const result = await model.caption(imageBytes(item.image), { maxLength: 40 });
      assert.deepEqual(result.ids, item.greedy, `${item.image}: greedy`);
    }
  });

  test('greedy ids equal the native build', { skip: nativeTool('examples/blip-caption') ? false : 'native blip-caption not built' }, async () => {
    const images = cases.map((item) => path.join(goldenDir, 'images', item.image));
    const output = execFileSync(nativeTool('examples/blip-caption'),
      ['-m', modelPath, '--max-length', '40', '--threads', '1', '--json', ...images], { encoding: 'utf8' });
    const native = output.trim().split('\n').map((line) => JSON.parse(line));
    assert.equal(native.length, images.length);
    for (const [index, image] of images.entries()) {
      const result = await model.caption(readFileSync(image), { maxLength: 40 });
      assert.deepEqual(result.ids, native[index].ids, `${path.basename(image)}: ids`);
      assert.equal(result.text, native[index].caption, `${path.basename(image)}: text`);
    }
  });

  test('decoded pixels equal encoded bytes', async () => {
    // exact_384.png is already 384x384, so Pillow's resize to 384x384 returns its pixels.
    const rgb = readNpy(path.join(goldenDir, 'preprocess', 'exact_384.png.384.u8.npy')).data;
    const fromBytes = await model.caption(imageBytes('exact_384.png'), { maxLength: 40 });
    const fromRgb = await model.caption({ width: 384, height: 384, data: rgb }, { maxLength: 40 });
    assert.deepEqual(fromRgb.ids, fromBytes.ids);

    // ImageData is RGBA. Alpha is dropped without compositing, as Pillow's convert("RGB") does.
    const rgba = new Uint8ClampedArray(384 * 384 * 4);
    for (let i = 0; i < 384 * 384; ++i) {
      rgba.set(rgb.subarray(3 * i, 3 * i + 3), 4 * i);
      rgba[4 * i + 3] = i % 256;
    }
    const fromRgba = await model.caption({ width: 384, height: 384, data: rgba }, { maxLength: 40 });
    assert.deepEqual(fromRgba.ids, fromBytes.ids);
  });

  test('embedding reused for several captions', async () => {
    const embedding = await model.encode(imageBytes('cats.png'));
    assert.equal(embedding.width, 640);
    assert.equal(embedding.height, 480);
    const first = await model.caption(embedding, { maxLength: 40 });
    const second = await model.caption(embedding, { maxLength: 40 });
    assert.deepEqual(first.ids, cases[0].greedy);
    assert.deepEqual(second.ids, first.ids);
  });

  test('tokens reported in order', async () => {
    const events = [];
    const result = await model.caption(imageBytes('cats.png'), {
      prompt: 'a picture of',
      maxLength: 40,
      onToken: (event) => events.push(event),
    });
    assert.ok(events.length > 0, 'onToken was not called');
    assert.equal(events.map((event) => event.piece).join(''), result.text, 'the pieces concatenate to the caption');
    for (const [index, event] of events.entries()) {
      assert.equal(event.text, events.slice(0, index + 1).map((e) => e.piece).join(''), `event ${index}: text so far`);
    }
    const prefixLength = model.tokenize('a picture of').length - 1;
    if (events[0].id !== undefined) {
      assert.deepEqual(events.map((event) => event.id), result.ids.slice(prefixLength));
      assert.deepEqual(events.map((event) => event.index), result.ids.slice(prefixLength).map((_, i) => prefixLength + i));
    }
    assert.equal(result.timings.tokens, result.ids.length - prefixLength);
    for (const key of ['decodeMs', 'preprocessMs', 'visionMs', 'generateMs', 'msPerToken']) {
      assert.ok(result.timings[key] >= 0, `timings.${key} is ${result.timings[key]}`);
    }
  });

  test('tokens streamed during generation', async (t) => {
    if (!(await Blip.buildInfo()).streaming) {
      t.skip('the library of this build has no streaming callback yet');
      return;
    }
    const pieces = [];
    const greedy = await model.caption(imageBytes('coco4016.png'), { maxLength: 40, onToken: (event) => pieces.push(event.piece) });
    assert.equal(greedy.streamed, true);
    assert.ok(pieces.length > 1, `greedy search streamed ${pieces.length} pieces`);
    assert.equal(pieces.join(''), greedy.text);

    const beamPieces = [];
    const beam = await model.caption(imageBytes('coco4016.png'), { numBeams: 3, maxLength: 40, onToken: (event) => beamPieces.push(event.piece) });
    assert.equal(beamPieces.join(''), beam.text);
  });

  test('throwing onToken rejects the caption', async () => {
    const failure = new Error('stop here');
    let calls = 0;
    await assert.rejects(model.caption(imageBytes('cats.png'), {
      maxLength: 40,
      onToken: () => {
        ++calls;
        throw failure;
      },
    }), (error) => error === failure);
    assert.equal(calls, 1);
    const result = await model.caption(imageBytes('cats.png'), { maxLength: 40 });
    assert.deepEqual(result.ids, cases[0].greedy);
  });

  test('invalid model bytes rejected', async () => {
    await assert.rejects(Blip.load(new Uint8Array([1, 2, 3]), { name: 'three-bytes.gguf' }),
      (error) => error instanceof BlipError && /three-bytes\.gguf/.test(error.message) && /GGUF/.test(error.message));
    const truncated = readFileSync(modelPath).subarray(0, 4096);
    await assert.rejects(Blip.load(truncated, { name: 'truncated.gguf' }),
      (error) => error instanceof BlipError && /truncated\.gguf/.test(error.message));
  });

  test('invalid images rejected', async () => {
    await assert.rejects(model.caption(new Uint8Array([1, 2, 3])),
      (error) => error instanceof BlipError && /not a JPEG, PNG/.test(error.message));
    const png = imageBytes('cats.png');
    await assert.rejects(model.caption(png.subarray(0, png.length / 2)),
      (error) => error instanceof BlipError && /PNG/.test(error.message));
    await assert.rejects(model.caption({ width: 4, height: 4, data: new Uint8Array(10) }),
      (error) => error instanceof BlipError && /4x4/.test(error.message));
    // 65536 x 65536 x 4 wraps to 0 in 32-bit arithmetic, so an empty buffer must not pass.
    await assert.rejects(model.caption({ width: 65536, height: 65536, data: new Uint8Array(0) }),
      (error) => error instanceof BlipError && /more than the limit/.test(error.message));
    await assert.rejects(model.caption({ width: 2.5, height: 4, data: new Uint8Array(40) }),
      (error) => error instanceof BlipError && /positive integers/.test(error.message));
    await assert.rejects(model.caption(null), BlipError);
  });

  test('invalid options rejected', async () => {
    const png = imageBytes('cats.png');
    await assert.rejects(model.caption(png, { maxLenght: 10 }), (error) => /unknown option maxLenght/.test(error.message));
    await assert.rejects(model.caption(png, { maxLength: 0 }), (error) => /maxLength/.test(error.message));
    await assert.rejects(model.caption(png, { maxLength: 2.5 }), (error) => /maxLength/.test(error.message));
    await assert.rejects(model.caption(png, { prompt: 7 }), (error) => /prompt must be a string/.test(error.message));
  });

  test('model usable after errors', async () => {
    await assert.rejects(model.caption(new Uint8Array([0])));
    const result = await model.caption(imageBytes('cats.png'), { maxLength: 40 });
    assert.deepEqual(result.ids, cases[0].greedy);
  });

  test('disposed model rejects calls', async () => {
    const other = await Blip.load(readFileSync(modelPath));
    other.dispose();
    await assert.rejects(other.caption(imageBytes('cats.png')), /disposed/);
  });
});

// Pixel values are the same for every tiny model: BlipImageProcessor at 64x64.
function goldenPixelValues(image) {
  return readNpy(path.join(goldenDir, 'expected', 'tiny-caption', `${image}.pixel_values.npy`)).data;
}

describe('tiny VQA model in WebAssembly', { skip: goldenAvailable ? false : goldenSkipReason }, () => {
  let Blip;
  let model;
  let cases;

  before(async () => {
    ({ Blip } = await importBlip());
    const modelPath = tinyModel('tiny-vqa');
    model = await Blip.load(readFileSync(modelPath), { name: path.basename(modelPath) });
    cases = readJson(path.join(goldenDir, 'expected', 'tiny-vqa.json')).cases;
  });

  test('model info', () => {
    assert.equal(model.task, 'vqa');
  });

  test('greedy answers from golden pixel values', async () => {
    for (const item of cases) {
      const label = `${item.image}: ${item.question}`;
      const embedding = await model.encodePixelValues(goldenPixelValues(item.image));
      assert.deepEqual(model.tokenize(item.question), item.input_ids, `${label}: input ids`);

      const cls = await model.vqa(embedding, item.question, { firstToken: 'cls' });
      assert.deepEqual(cls.ids, item.greedy, `${label}: greedy`);
      assert.equal(cls.text, item.decoded_greedy, `${label}: decoded greedy`);

      const enc = await model.vqa(embedding, item.question);
      assert.deepEqual(enc.ids, item.enc_token_greedy, `${label}: [ENC] greedy`);
      assert.equal(enc.text, item.decoded_enc_token_greedy, `${label}: decoded [ENC] greedy`);
    }
  });

  test('beam search answers from golden pixel values', async (t) => {
    if (!(await Blip.buildInfo()).generationOptions.includes('numBeams')) {
      t.skip('the library of this build has no beam search yet');
      return;
    }
    for (const item of cases) {
      const embedding = await model.encodePixelValues(goldenPixelValues(item.image));
      const beam3 = await model.vqa(embedding, item.question, { firstToken: 'cls', numBeams: 3 });
      assert.deepEqual(beam3.ids, item.beam3, `${item.image}: ${item.question}: beam3`);
    }
  });

  test('greedy answers from png bytes', async () => {
    // JPEG decoding may differ from Pillow's by a few levels, so only PNG images are compared.
    for (const item of cases.filter((c) => c.image.endsWith('.png'))) {
      const bytes = readFileSync(path.join(goldenDir, 'images', item.image));
      const cls = await model.vqa(bytes, item.question, { firstToken: 'cls' });
      assert.deepEqual(cls.ids, item.greedy, `${item.image}: ${item.question}`);
    }
  });

  test('ranked answers start with the greedy first token', async () => {
    const item = cases[0];
    const embedding = await model.encodePixelValues(goldenPixelValues(item.image));
    const greedy = await model.vqa(embedding, item.question, { firstToken: 'cls', maxLength: 3 });
    const best = model.decode([greedy.ids[1]]);
    const candidates = ['zebra', best, 'purple', 'seven'];
    const ranked = await model.rankAnswers(embedding, item.question, candidates, { firstToken: 'cls', k: 1 });
    assert.equal(ranked.answers.length, 1);
    assert.equal(ranked.answers[0].text, best);
    assert.equal(ranked.answers[0].index, 1);
    const all = await model.rankAnswers(embedding, item.question, candidates, { firstToken: 'cls' });
    assert.equal(all.answers.length, candidates.length);
    const mostLikelyFirst = all.answers.reduce((a, b) => (b.firstTokenProbability > a.firstTokenProbability ? b : a));
    assert.equal(mostLikelyFirst.text, best);
  });

  test('invalid calls rejected', async () => {
    const bytes = readFileSync(path.join(goldenDir, 'images', 'cats.png'));
    await assert.rejects(model.vqa(bytes, 42), /question must be a string/);
    await assert.rejects(model.vqa(bytes, 'why?', { firstToken: 'sep' }), /firstToken/);
    await assert.rejects(model.caption(bytes), /vqa model/);
    await assert.rejects(model.rankAnswers(bytes, 'why?', 'yes'), /array of strings/);
  });
});

describe('tiny ITM model in WebAssembly', { skip: goldenAvailable ? false : goldenSkipReason }, () => {
  const LOGITS_TOLERANCE = 1e-3;
  const PROBABILITY_TOLERANCE = 1e-4;
  let Blip;
  let model;
  let cases;

  before(async () => {
    ({ Blip } = await importBlip());
    const modelPath = tinyModel('tiny-itm');
    model = await Blip.load(readFileSync(modelPath), { name: path.basename(modelPath) });
    cases = readJson(path.join(goldenDir, 'expected', 'tiny-itm.json')).cases;
  });

  test('model info', () => {
    assert.equal(model.task, 'itm');
  });

  test('scores from golden pixel values', async () => {
    for (const image of [...new Set(cases.map((c) => c.image))]) {
      const items = cases.filter((c) => c.image === image);
      const texts = items.map((c) => c.text);
      const embedding = await model.encodePixelValues(goldenPixelValues(image));
      const cls = await model.match(embedding, texts, { firstToken: 'cls' });
      const enc = await model.match(embedding, texts);
      for (const [index, item] of items.entries()) {
        const label = `${image}: ${item.text}`;
        assert.equal(cls.matches[index].text, item.text);
        assert.ok(maxAbsDiff(cls.matches[index].itmLogits, item.itm_logits_unpadded) < LOGITS_TOLERANCE, `${label}: itm_logits`);
        assert.ok(Math.abs(cls.matches[index].itmProbability - item.itm_prob) < PROBABILITY_TOLERANCE, `${label}: itm_prob`);
        assert.ok(maxAbsDiff(enc.matches[index].itmLogits, item.itm_logits_enc_token) < LOGITS_TOLERANCE, `${label}: [ENC] itm_logits`);
        assert.ok(Math.abs(enc.matches[index].itmProbability - item.itm_prob_enc_token) < PROBABILITY_TOLERANCE, `${label}: [ENC] itm_prob`);
        assert.ok(Math.abs(cls.matches[index].cosine - item.itc_cosine) < PROBABILITY_TOLERANCE, `${label}: itc_cosine`);
        assert.equal(enc.matches[index].cosine, cls.matches[index].cosine, `${label}: ITC does not depend on the first token`);
      }
    }
  });

  test('scores from png bytes', async () => {
    const items = cases.filter((c) => c.image === 'cats.png');
    const bytes = readFileSync(path.join(goldenDir, 'images', 'cats.png'));
    const result = await model.match(bytes, items.map((c) => c.text), { firstToken: 'cls' });
    for (const [index, item] of items.entries()) {
      assert.ok(Math.abs(result.matches[index].itmProbability - item.itm_prob) < PROBABILITY_TOLERANCE, item.text);
    }
  });

  test('invalid calls rejected', async () => {
    const bytes = readFileSync(path.join(goldenDir, 'images', 'cats.png'));
    await assert.rejects(model.match(bytes, 'a cat'), /array of strings/);
    await assert.rejects(model.match(bytes, ['a cat'], { numBeams: 3 }), /unknown option numBeams/);
    await assert.rejects(model.match(bytes, ['word '.repeat(100)]), /more than the model's 64 text positions/);
    await assert.rejects(model.vqa(bytes, 'why?'), /itm model/);
  });
});
