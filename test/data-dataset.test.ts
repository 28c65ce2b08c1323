import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/core/random.js';
import {
  batches, batchCount, concat, filterClasses, flatten, labelHistogram, normalize, sampleSize, splitTrainVal, subset, take,
  validateDataset, type Dataset,
} from '../src/data/dataset.js';
import { makeBlobs } from '../src/data/synthetic.js';

/** n samples of shape [2,3]; sample i holds i*10 + j so rows are easy to recognise. */
function toy(n: number, classes = 4): Dataset {
  const d = 6;
  const x = new Float32Array(n * d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) x[i * d + j] = i * 10 + j;
  const y = new Int32Array(n).map((_, i) => i % classes);
  return { name: 'toy', x, sampleShape: [2, 3], y, n, numClasses: classes };
}

function rowOf(x: Float32Array, k: number, d: number): number {
  return Math.round(x[k * d] / 10);
}

test('subset and take copy the requested rows', () => {
  const ds = toy(10);
  const s = subset(ds, [7, 2, 2]);
  assert.equal(s.n, 3);
  assert.deepEqual(Array.from(s.y), [3, 2, 2]);
  assert.deepEqual(Array.from(s.x.subarray(0, 6)), [70, 71, 72, 73, 74, 75]);
  s.x[0] = -1;
  assert.equal(ds.x[7 * 6], 70, 'subset must not alias the source');
  const t = take(ds, 4);
  assert.equal(t.n, 4);
  assert.equal(t.x.length, 24);
  assert.equal(take(ds, 100).n, 10);
  assert.throws(() => subset(ds, [10]), /out of range/);
});

test('flatten shares the buffer and multiplies out the shape', () => {
  const ds = toy(3);
  const f = flatten(ds);
  assert.deepEqual(f.sampleShape, [6]);
  assert.equal(f.x, ds.x);
  assert.equal(sampleSize(f), 6);
});

test('splitTrainVal: disjoint, covering, reproducible from the seed, different across seeds', () => {
  const ds = toy(100);
  const a = splitTrainVal(ds, 0.2, 1);
  const b = splitTrainVal(ds, 0.2, 1);
  const c = splitTrainVal(ds, 0.2, 2);
  assert.equal(a.val.n, 20);
  assert.equal(a.train.n, 80);
  assert.deepEqual(a.valIndices, b.valIndices);
  assert.deepEqual(a.train.x, b.train.x);
  assert.notDeepEqual(a.valIndices, c.valIndices);
  const all = [...a.trainIndices, ...a.valIndices].sort((p, q) => p - q);
  assert.deepEqual(all, Array.from({ length: 100 }, (_, i) => i));
  // Rows travel with their labels.
  for (let k = 0; k < a.val.n; k++) assert.equal(a.val.y[k], rowOf(a.val.x, k, 6) % 4);
  assert.equal(splitTrainVal(ds, 30, 0).val.n, 30);
  assert.throws(() => splitTrainVal(ds, 1.5, 0), /fraction/);
  assert.throws(() => splitTrainVal(ds, 101, 0), /fraction/);
});

test('batches cover every sample exactly once per epoch, rows match labels', () => {
  const ds = toy(103);
  for (const shuffle of [false, true]) {
    const seen = new Int32Array(ds.n);
    let count = 0;
    for (const b of batches(ds, 10, { shuffle, seed: 5 })) {
      count++;
      assert.equal(b.x.length, b.size * 6);
      assert.equal(b.y.length, b.size);
      assert.equal(b.indices.length, b.size);
      for (let k = 0; k < b.size; k++) {
        const i = b.indices[k];
        seen[i]++;
        assert.equal(rowOf(b.x, k, 6), i);
        assert.equal(b.x[k * 6 + 5], i * 10 + 5);
        assert.equal(b.y[k], i % 4);
      }
    }
    assert.equal(count, batchCount(103, 10));
    assert.ok(seen.every((v) => v === 1), `shuffle=${shuffle}: every sample once`);
  }
  const sizes = [...batches(ds, 10, { dropLast: true })].map((b) => b.size);
  assert.equal(sizes.length, 10);
  assert.ok(sizes.every((s) => s === 10));
  assert.equal(batchCount(103, 10, true), 10);
});

test('batch order: reproducible from the seed, different across seeds and across epochs of one rng', () => {
  const ds = toy(50);
  const order = (opts: Parameters<typeof batches>[2]) => [...batches(ds, 7, opts)].flatMap((b) => Array.from(b.indices));
  assert.deepEqual(order({ shuffle: true, seed: 3 }), order({ shuffle: true, seed: 3 }));
  assert.notDeepEqual(order({ shuffle: true, seed: 3 }), order({ shuffle: true, seed: 4 }));
  assert.deepEqual(order({ shuffle: false }), Array.from({ length: 50 }, (_, i) => i));
  const rng = new Rng(9);
  const e1 = order({ shuffle: true, rng });
  const e2 = order({ shuffle: true, rng });
  assert.notDeepEqual(e1, e2);
  assert.deepEqual(e1, order({ shuffle: true, rng: new Rng(9) }));
});

test('batches carry multi-column regression targets and keep the label type', () => {
  const n = 9;
  const ds: Dataset = { name: 'reg', x: new Float32Array(n).map((_, i) => i), sampleShape: [1], y: new Float32Array(2 * n).map((_, i) => i), n };
  for (const b of batches(ds, 4, { shuffle: true, seed: 1 })) {
    assert.ok(b.y instanceof Float32Array);
    assert.equal(b.y.length, 2 * b.size);
    for (let k = 0; k < b.size; k++) {
      const i = b.indices[k];
      assert.equal(b.x[k], i);
      assert.deepEqual([b.y[2 * k], b.y[2 * k + 1]], [2 * i, 2 * i + 1]);
    }
  }
});

test('filterClasses keeps the chosen classes and relabels them 0..k-1', () => {
  const ds = toy(40, 10);
  const f = filterClasses(ds, [7, 3], { relabel: true });
  assert.equal(f.n, 8);
  assert.equal(f.numClasses, 2);
  for (let k = 0; k < f.n; k++) {
    const orig = rowOf(f.x, k, 6) % 10;
    assert.equal(f.y[k], orig === 7 ? 0 : 1);
  }
  const g = filterClasses(ds, [3, 7]);
  assert.equal(g.numClasses, 10);
  assert.deepEqual([...new Set(g.y)].sort(), [3, 7]);
  assert.throws(() => filterClasses(ds, [1, 1]), /duplicate/);
});

test('concat, normalize, labelHistogram, validateDataset', () => {
  const a = toy(3);
  const b = toy(2);
  const c = concat([a, b]);
  assert.equal(c.n, 5);
  assert.deepEqual(Array.from(c.y), [0, 1, 2, 0, 1]);
  assert.equal(c.x[3 * 6], 0);
  assert.deepEqual(labelHistogram(c), [2, 2, 1, 0]);
  const nrm = normalize(a, 10, 2);
  assert.equal(nrm.x[1], (1 - 10) / 2);
  const per = normalize(a, [0, 3], [1, 0.5]); // 2 channels of 3 values
  assert.equal(per.x[3], (3 - 3) / 0.5);
  assert.equal(per.x[4], (4 - 3) / 0.5);
  assert.throws(() => validateDataset({ ...a, n: 4 }), /expected/);
  assert.throws(() => validateDataset({ ...a, y: Int32Array.from([0, 1, 9]) }), /label 9/);
});

test('makeBlobs: seeded, balanced, and separable by nearest centre', () => {
  const a = makeBlobs({ n: 300, dim: 5, classes: 3, seed: 1, spread: 0.5 });
  const b = makeBlobs({ n: 300, dim: 5, classes: 3, seed: 1, spread: 0.5 });
  const c = makeBlobs({ n: 300, dim: 5, classes: 3, seed: 2, spread: 0.5 });
  assert.deepEqual(a.x, b.x);
  assert.notDeepEqual(a.x, c.x);
  assert.deepEqual(labelHistogram(a), [100, 100, 100]);
  assert.deepEqual(a.sampleShape, [5]);
  let correct = 0;
  for (let i = 0; i < a.n; i++) {
    let best = -1;
    let bestD = Infinity;
    for (let k = 0; k < 3; k++) {
      let dd = 0;
      for (let j = 0; j < 5; j++) dd += (a.x[i * 5 + j] - a.centers[k * 5 + j]) ** 2;
      if (dd < bestD) { bestD = dd; best = k; }
    }
    if (best === a.y[i]) correct++;
  }
  assert.ok(correct / a.n > 0.95, `nearest-centre accuracy ${correct / a.n}`);
});
