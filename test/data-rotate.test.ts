import { test } from 'node:test';
import assert from 'node:assert/strict';
import { imageGeometry, rotateImages, rotatedMnist, rotationAngles } from '../src/data/rotate.js';
import type { Dataset } from '../src/data/dataset.js';

const H = 28;
const W = 28;

function randomImages(n: number, h: number, w: number, seed = 1): Float32Array {
  const x = new Float32Array(n * h * w);
  let s = seed;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = s / 2 ** 32;
  }
  return x;
}

/** Expected result of an exact right-angle rotation: out[r][c] = in[src(r, c)]. */
function permuted(x: Float32Array, n: number, h: number, w: number, src: (r: number, c: number) => [number, number]): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const [sr, sc] = src(r, c);
        out[i * h * w + r * w + c] = x[i * h * w + sr * w + sc];
      }
    }
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('0° is the identity; 90°, 180°, 270° are exact index permutations (centre 13.5, 13.5)', () => {
  const n = 3;
  const x = randomImages(n, H, W);
  assert.deepEqual(rotateImages(x, n, H, W, 0), x);
  // Counter-clockwise as displayed: the top-right corner goes to the top-left at +90°.
  const r90 = permuted(x, n, H, W, (r, c) => [c, W - 1 - r]);
  const r180 = permuted(x, n, H, W, (r, c) => [H - 1 - r, W - 1 - c]);
  const r270 = permuted(x, n, H, W, (r, c) => [H - 1 - c, r]);
  for (const interp of ['bilinear', 'nearest'] as const) {
    assert.ok(maxAbsDiff(rotateImages(x, n, H, W, 90, interp), r90) < 1e-6, `${interp} 90`);
    assert.ok(maxAbsDiff(rotateImages(x, n, H, W, 180, interp), r180) < 1e-6, `${interp} 180`);
    assert.ok(maxAbsDiff(rotateImages(x, n, H, W, 270, interp), r270) < 1e-6, `${interp} 270`);
    assert.ok(maxAbsDiff(rotateImages(x, n, H, W, -90, interp), r270) < 1e-6, `${interp} -90`);
    assert.ok(maxAbsDiff(rotateImages(x, n, H, W, 360, interp), x) < 1e-6, `${interp} 360`);
  }
  // 180° is a permutation for non-square and odd sizes too.
  const y = randomImages(2, 5, 8, 7);
  assert.ok(maxAbsDiff(rotateImages(y, 2, 5, 8, 180), permuted(y, 2, 5, 8, (r, c) => [4 - r, 7 - c])) < 1e-6);
});

test('odd-sized images keep their centre pixel at any angle', () => {
  const x = randomImages(1, 9, 9, 3);
  for (const a of [13, 45, 100, 233]) assert.ok(Math.abs(rotateImages(x, 1, 9, 9, a)[4 * 9 + 4] - x[4 * 9 + 4]) < 1e-6);
});

test('rotating by θ then −θ approximately restores the interior of a smooth image', () => {
  const x = new Float32Array(H * W);
  for (let r = 0; r < H; r++) for (let c = 0; c < W; c++) x[r * W + c] = Math.exp(-((r - 12) ** 2 + (c - 15) ** 2) / 30);
  for (const a of [9.47, 37, 80]) {
    const back = rotateImages(rotateImages(x, 1, H, W, a), 1, H, W, -a);
    let worst = 0;
    for (let r = 0; r < H; r++) {
      for (let c = 0; c < W; c++) {
        if ((r - 13.5) ** 2 + (c - 13.5) ** 2 > 9.5 ** 2) continue; // corners leave the frame
        worst = Math.max(worst, Math.abs(back[r * W + c] - x[r * W + c]));
      }
    }
    assert.ok(worst < 0.03, `${a}°: interior error ${worst}`);
  }
});

test('bilinear matches scipy.ndimage.rotate(reshape=False, order=1) on a 5×7 image at 30°', () => {
  const img = [[0.0, 0.7, 0.3, 1.0, 0.6, 0.2, 0.9], [0.5, 0.1, 0.8, 0.4, 0.0, 0.7, 0.3], [1.0, 0.6, 0.2, 0.9, 0.5, 0.1, 0.8], [0.4, 0.0, 0.7, 0.3, 1.0, 0.6, 0.2], [0.9, 0.5, 0.1, 0.8, 0.4, 0.0, 0.7]];
  // scipy 1.10.1 output, rounded to 6 decimals.
  const want = [
    [0.0, 0.0, 0.0, 0.43923, 0.52439, 0.462178, 0.0],
    [0.0, 0.42561, 0.618653, 0.266987, 0.317949, 0.295225, 0.0],
    [0.310289, 0.287564, 0.520096, 0.9, 0.729904, 0.70718, 0.389711],
    [0.0, 0.625833, 0.382051, 0.506699, 0.591858, 0.387564, 0.0],
    [0.0, 0.45359, 0.17561, 0.26077, 0.0, 0.0, 0.0],
  ].flat();
  const got = rotateImages(Float32Array.from(img.flat()), 1, 5, 7, 30);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 2e-6, `pixel ${i}: ${got[i]} vs ${want[i]}`);
});

test('nearest matches PIL Image.rotate(NEAREST) (what Avalanche RotatedMNIST uses) on a 7×9 image', () => {
  const img = [[0, 7, 3, 10, 6, 2, 9, 5, 1], [8, 4, 0, 7, 3, 10, 6, 2, 9], [5, 1, 8, 4, 0, 7, 3, 10, 6], [2, 9, 5, 1, 8, 4, 0, 7, 3], [10, 6, 2, 9, 5, 1, 8, 4, 0], [7, 3, 10, 6, 2, 9, 5, 1, 8], [4, 0, 7, 3, 10, 6, 2, 9, 5]];
  // Pillow 9.4 output for angles as float32 (torch draws the angle in float32).
  const cases: [number, number[][]][] = [
    [30, [[0, 0, 0, 2, 9, 6, 2, 6, 0], [0, 3, 10, 3, 10, 3, 10, 3, 3], [7, 0, 7, 0, 7, 4, 0, 4, 0], [4, 1, 8, 1, 8, 1, 8, 1, 1], [5, 1, 5, 1, 5, 5, 9, 5, 9], [2, 2, 6, 2, 6, 2, 6, 2, 0], [0, 10, 3, 10, 3, 3, 0, 0, 0]]],
    [47.368421052631575, [[0, 0, 0, 9, 6, 10, 6, 3, 0], [0, 0, 6, 10, 7, 3, 7, 0, 8], [0, 10, 7, 0, 7, 4, 8, 1, 1], [7, 0, 4, 4, 8, 1, 1, 5, 9], [4, 4, 8, 1, 9, 5, 9, 6, 0], [8, 5, 9, 2, 9, 6, 10, 0, 0], [0, 2, 10, 6, 10, 7, 0, 0, 0]]],
    [132.6315789473684, [[0, 3, 0, 4, 5, 2, 0, 0, 0], [9, 6, 7, 8, 1, 9, 10, 0, 0], [2, 2, 3, 4, 1, 5, 6, 3, 0], [5, 6, 7, 7, 8, 9, 9, 10, 0], [0, 2, 10, 0, 4, 1, 2, 3, 3], [0, 0, 6, 7, 4, 8, 9, 10, 7], [0, 0, 0, 3, 0, 1, 5, 2, 0]]],
    [-20, [[0, 8, 4, 0, 10, 6, 0, 0, 0], [5, 5, 1, 0, 7, 3, 2, 9, 5], [2, 9, 5, 4, 0, 7, 6, 6, 2], [10, 6, 2, 1, 8, 4, 3, 10, 6], [3, 10, 10, 9, 5, 1, 0, 7, 3], [0, 7, 3, 2, 9, 5, 4, 0, 0], [0, 0, 0, 10, 6, 5, 1, 8, 0]]],
  ];
  for (const [angle, want] of cases) {
    assert.deepEqual(Array.from(rotateImages(Float32Array.from(img.flat()), 1, 7, 9, angle, 'nearest')), want.flat(), `${angle}°`);
  }
});

test('rotatedMnist rotates every image and keeps labels; rotationAngles is linspace(0, 180, 20)', () => {
  const n = 4;
  const ds: Dataset = { name: 'm', x: randomImages(n, H, W, 5), sampleShape: [1, H, W], y: Int32Array.from([1, 2, 3, 4]), n, numClasses: 10 };
  const r = rotatedMnist(ds, 90);
  assert.equal(r.name, 'm-rot90');
  assert.equal(r.y, ds.y);
  assert.ok(maxAbsDiff(r.x, permuted(ds.x, n, H, W, (rr, c) => [c, W - 1 - rr])) < 1e-6);
  const flat = rotatedMnist({ ...ds, sampleShape: [784] }, 90);
  assert.deepEqual(flat.x, r.x);
  assert.deepEqual(imageGeometry([3, 32, 32]), { channels: 3, h: 32, w: 32 });
  assert.throws(() => imageGeometry([10]), /cannot treat/);
  const angles = rotationAngles();
  assert.equal(angles.length, 20);
  assert.equal(angles[0], 0);
  assert.equal(angles[19], 180);
  assert.ok(Math.abs(angles[1] - 9.473684210526315) < 1e-12);
});
