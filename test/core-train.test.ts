/**
 * Training smoke tests on the pure-TS backend: an MLP and a tiny CNN fit small synthetic tasks,
 * and memory stays flat over 10,000 training steps (graphs are freed once the loss is dropped).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { jsBackend, setBackend } from '../src/core/backend/index.js';
import * as F from '../src/core/ops/index.js';
import { AdamW } from '../src/core/optim/optimizers.js';
import { Rng } from '../src/core/random.js';
import { noGrad, Tensor } from '../src/core/tensor.js';

setBackend(jsBackend);

/** global.gc when node runs with --expose-gc; otherwise enable it at run time (V8 flag + fresh context). */
function getGc(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

/** PyTorch's default Linear/Conv init: U(−1/√fanIn, 1/√fanIn). */
function param(shape: number[], fanIn: number, rng: Rng): Tensor {
  const t = new Tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, true);
  rng.fillUniform(t.data, -1 / Math.sqrt(fanIn), 1 / Math.sqrt(fanIn));
  return t;
}

interface Mlp { params: Tensor[]; forward: (x: Tensor) => Tensor }

function mlp(sizes: number[], rng: Rng): Mlp {
  const params: Tensor[] = [];
  for (let i = 0; i + 1 < sizes.length; i++) params.push(param([sizes[i + 1], sizes[i]], sizes[i], rng), param([sizes[i + 1]], sizes[i], rng));
  return {
    params,
    forward: (x) => {
      let h = x;
      for (let i = 0; i < params.length; i += 2) {
        h = F.linear(h, params[i], params[i + 1]);
        if (i + 2 < params.length) h = F.relu(h);
      }
      return h;
    },
  };
}

/** Gaussian blobs in 2-D: `perClass` points around each of 3 centres. */
function blobs(perClass: number, rng: Rng): { x: Tensor; y: Int32Array } {
  const centres = [[0, 3], [-2.6, -1.5], [2.6, -1.5]];
  const n = perClass * centres.length;
  const x = new Float32Array(n * 2);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % centres.length;
    y[i] = c;
    x[2 * i] = centres[c][0] + rng.normal(0, 0.6);
    x[2 * i + 1] = centres[c][1] + rng.normal(0, 0.6);
  }
  return { x: new Tensor(x, [n, 2]), y };
}

function trainStep(opt: AdamW, loss: () => Tensor): number {
  opt.zeroGrad();
  const l = loss();
  l.backward();
  opt.step();
  return l.item();
}

test('MLP 2-16-16-3 with AdamW fits Gaussian blobs (loss < 0.05)', (t) => {
  const rng = new Rng(1);
  const { x, y } = blobs(30, rng);
  const net = mlp([2, 16, 16, 3], rng);
  const opt = new AdamW(net.params, { lr: 0.02 });
  let loss = Infinity;
  const first = trainStep(opt, () => F.crossEntropy(net.forward(x), y));
  // A fixed budget (not "until < 0.05"): training must also stay converged, not just touch the target.
  for (let s = 1; s < 200; s++) loss = trainStep(opt, () => F.crossEntropy(net.forward(x), y));
  t.diagnostic(`loss ${first.toFixed(4)} → ${loss.toFixed(4)} in 200 steps`);
  assert.ok(first > 0.5, `initial loss ${first} should be near log 3`);
  assert.ok(loss < 0.05, `final training loss ${loss}`);
  const acc = noGrad(() => F.argmax(net.forward(x), 1)).reduce((a, p, i) => a + (p === y[i] ? 1 : 0), 0) / y.length;
  assert.equal(acc, 1);
});

/** 8×8 noise images; class = which quadrant is bright. */
function quadrants(n: number, rng: Rng): { x: Tensor; y: Int32Array } {
  const x = new Float32Array(n * 64);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 4;
    y[i] = c;
    const r0 = c < 2 ? 0 : 4;
    const c0 = c % 2 === 0 ? 0 : 4;
    for (let h = 0; h < 8; h++) for (let w = 0; w < 8; w++) {
      const bright = h >= r0 && h < r0 + 4 && w >= c0 && w < c0 + 4;
      x[i * 64 + h * 8 + w] = (bright ? 1 : 0) + rng.normal(0, 0.5);
    }
  }
  return { x: new Tensor(x, [n, 1, 8, 8]), y };
}

test('tiny CNN (conv 1→4 3×3, relu, maxpool, linear) learns bright-quadrant images (loss < 0.1)', (t) => {
  const rng = new Rng(2);
  const { x, y } = quadrants(64, rng);
  const w = param([4, 1, 3, 3], 9, rng);
  const b = param([4], 9, rng);
  const fw = param([4, 64], 64, rng);
  const fb = param([4], 64, rng);
  const forward = (inp: Tensor) => F.linear(F.flatten(F.maxPool2d(F.relu(F.conv2d(inp, w, b, { padding: 1 })), 2)), fw, fb);
  const opt = new AdamW([w, b, fw, fb], { lr: 0.02 });
  let loss = Infinity;
  const first = trainStep(opt, () => F.crossEntropy(forward(x), y));
  for (let s = 1; s < 100; s++) loss = trainStep(opt, () => F.crossEntropy(forward(x), y));
  t.diagnostic(`loss ${first.toFixed(4)} → ${loss.toFixed(4)} in 100 steps`);
  assert.ok(first > 0.5, `initial loss ${first} should be near log 4`);
  assert.ok(loss < 0.1, `final training loss ${loss}`);
  // Generalises to fresh images.
  const test = quadrants(32, new Rng(3));
  const pred = noGrad(() => F.argmax(forward(test.x), 1));
  assert.ok(pred.every((p, i) => p === test.y[i]), 'held-out quadrant images are classified');
});

/** Bytes of tensor data a graph holds (outputs of every recorded op): a lower bound on what one leaked graph costs. */
function graphBytes(root: Tensor): number {
  const seen = new Set<Tensor>();
  const stack = [root];
  let bytes = 0;
  while (stack.length) {
    const t = stack.pop()!;
    if (seen.has(t) || !t.node) continue;
    seen.add(t);
    bytes += t.data.byteLength;
    stack.push(...t.node.inputs);
  }
  return bytes;
}

test('a dropped graph is garbage-collected', async () => {
  const gc = getGc();
  const rng = new Rng(4);
  const net = mlp([2, 8, 3], rng);
  const { x, y } = blobs(4, rng);
  let refs: WeakRef<Tensor>[] = [];
  (() => {
    const logits = net.forward(x);
    const loss = F.crossEntropy(logits, y);
    loss.backward();
    refs = [new WeakRef(loss), new WeakRef(logits)];
  })();
  // WeakRef targets stay alive until the current job ends.
  await new Promise((r) => setImmediate(r));
  gc();
  assert.ok(refs.every((r) => r.deref() === undefined), 'loss or activations still reachable after backward');
  // Gradients on leaves do not keep the graph either.
  assert.equal(net.params[0].grad!.node, null);
});

test('memory stays flat over 10,000 MLP training steps', async (t) => {
  const gc = getGc();
  const rng = new Rng(5);
  const net = mlp([2, 32, 32, 3], rng);
  const opt = new AdamW(net.params, { lr: 1e-3 });
  const { x, y } = blobs(11, rng); // 33 samples
  const step = () => trainStep(opt, () => F.crossEntropy(net.forward(x), y));

  // What one leaked graph per step would cost: data of every recorded op output (closures and
  // objects come on top). The threshold below must be far smaller than 10,000 of these.
  const perGraph = graphBytes(F.crossEntropy(net.forward(x), y));
  const steps = 10_000;
  const limit = 30 * 2 ** 20;
  assert.ok(perGraph * steps > 4 * limit, `a leak would add only ${(perGraph * steps) / 2 ** 20} MB; the test would not see it`);

  for (let s = 0; s < 500; s++) step(); // warm-up: JIT, allocator pools
  await new Promise((r) => setImmediate(r));
  gc();
  const m0 = process.memoryUsage();
  for (let s = 0; s < steps; s++) step();
  await new Promise((r) => setImmediate(r));
  gc();
  const m1 = process.memoryUsage();
  const mb = (v: number) => (v / 2 ** 20).toFixed(1);
  const heap = m1.heapUsed + m1.arrayBuffers - (m0.heapUsed + m0.arrayBuffers);
  const rss = m1.rss - m0.rss;
  t.diagnostic(`heap+arrayBuffers ${mb(heap)} MB, rss ${mb(rss)} MB over ${steps} steps; one leaked graph ≥ ${perGraph} B → ≥ ${mb(perGraph * steps)} MB`);
  assert.ok(heap < limit, `heap + array buffers grew by ${mb(heap)} MB (a graph leak would add ≥ ${mb(perGraph * steps)} MB)`);
  assert.ok(rss < limit, `rss grew by ${mb(rss)} MB (a graph leak would add ≥ ${mb(perGraph * steps)} MB)`);
});
