/**
 * One catalogue of op invocations, used twice: gradient checks (float64, js kernels) and the
 * js-vs-native agreement test (float32). Each case builds its inputs from an Rng so both runs see
 * the same values; inputs are chosen away from kinks (relu/abs at 0, clamp bounds, max ties).
 */
import * as F from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/random.js';
import { noGrad, type DType, Tensor } from '../../src/core/tensor.js';
import { distinctT, randT } from './tensors.js';

export interface OpCase {
  name: string;
  build: (dtype: DType, rng: Rng) => { inputs: Tensor[]; fn: (...xs: Tensor[]) => Tensor };
}

const cases: OpCase[] = [];
function add(name: string, build: OpCase['build']): void {
  cases.push({ name, build });
}

// ---------------------------------------------------------------- broadcasting binary ops

const binShapes: [number[], number[]][] = [
  [[3, 4], [3, 4]],
  [[3, 1, 4], [2, 1]],
  [[], [2, 3]],
  [[2, 3], []],
  [[2, 3], [3]],
  [[4], [2, 3, 4]], // leading-dim broadcast of the first operand
  [[1, 3], [2, 1]],
  [[2, 1, 3, 1], [4, 1, 2]],
];
// A few random broadcast-compatible pairs on top of the fixed ones.
{
  const r = new Rng(99);
  for (let k = 0; k < 3; k++) {
    const nd = 1 + r.int(3);
    const full = Array.from({ length: nd }, () => 1 + r.int(3));
    const a = full.map((d) => (r.uniform() < 0.35 ? 1 : d));
    const b = full.map((d) => (r.uniform() < 0.35 ? 1 : d)).slice(r.int(nd));
    binShapes.push([a, b]);
  }
}

/** Draws a and b until no broadcast pair is within 0.05 (maximum's gradient switches at ties). */
function untied(sa: number[], sb: number[], dtype: DType, rng: Rng): [Tensor, Tensor] {
  for (;;) {
    const a = randT(sa, rng, { dtype });
    const b = randT(sb, rng, { dtype });
    const d = noGrad(() => F.abs(F.sub(a, b)));
    if (Math.min(...d.data) > 0.05) return [a, b];
  }
}

for (const [sa, sb] of binShapes) {
  const tag = `[${sa}] & [${sb}]`;
  add(`add ${tag}`, (dtype, rng) => ({ inputs: [randT(sa, rng, { dtype }), randT(sb, rng, { dtype })], fn: F.add }));
  add(`sub ${tag}`, (dtype, rng) => ({ inputs: [randT(sa, rng, { dtype }), randT(sb, rng, { dtype })], fn: F.sub }));
  add(`mul ${tag}`, (dtype, rng) => ({ inputs: [randT(sa, rng, { dtype }), randT(sb, rng, { dtype })], fn: F.mul }));
  add(`div ${tag}`, (dtype, rng) => ({
    inputs: [randT(sa, rng, { dtype }), randT(sb, rng, { dtype, lo: -2, hi: 2, avoid: [0], margin: 0.5 })], fn: F.div,
  }));
  add(`maximum ${tag}`, (dtype, rng) => ({ inputs: untied(sa, sb, dtype, rng), fn: F.maximum }));
}
add('mul with only b requiring grad', (dtype, rng) => {
  const a = randT([2, 3], rng, { dtype, requiresGrad: false });
  return { inputs: [a, randT([3], rng, { dtype })], fn: F.mul };
});
add('div with only a requiring grad', (dtype, rng) => ({
  inputs: [randT([2, 3], rng, { dtype }), randT([2, 1], rng, { dtype, lo: 0.5, hi: 2, requiresGrad: false })], fn: F.div,
}));

// ---------------------------------------------------------------- unary and scalar maps

const us = [2, 3, 2];
add('affine', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype })], fn: (x) => F.affine(x, -1.7, 0.3) }));
add('mulScalar', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype })], fn: (x) => F.mulScalar(x, 2.5) }));
add('addScalar', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype })], fn: (x) => F.addScalar(x, -4) }));
add('neg', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype })], fn: F.neg }));
add('exp', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, lo: -2, hi: 2 })], fn: F.exp }));
add('log', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, lo: 0.2, hi: 3 })], fn: F.log }));
add('relu', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, avoid: [0] })], fn: F.relu }));
add('tanh', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, lo: -2, hi: 2 })], fn: F.tanh }));
add('sigmoid', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, lo: -4, hi: 4 })], fn: F.sigmoid }));
add('sqrt', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, lo: 0.2, hi: 3 })], fn: F.sqrt }));
add('abs', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, avoid: [0] })], fn: F.abs }));
add('square', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype })], fn: F.square }));
add('powScalar 2.5', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, lo: 0.3, hi: 2 })], fn: (x) => F.powScalar(x, 2.5) }));
add('powScalar -1.5', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, lo: 0.3, hi: 2 })], fn: (x) => F.powScalar(x, -1.5) }));
add('powScalar 3 (negative base)', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype })], fn: (x) => F.powScalar(x, 3) }));
add('clamp', (dtype, rng) => ({ inputs: [randT(us, rng, { dtype, lo: -2, hi: 2, avoid: [-0.5, 0.7] })], fn: (x) => F.clamp(x, -0.5, 0.7) }));

// ---------------------------------------------------------------- reductions

const rs = [2, 3, 4];
for (const keepdim of [false, true]) {
  const k = `keepdim=${keepdim}`;
  add(`sum all ${k}`, (dtype, rng) => ({ inputs: [randT(rs, rng, { dtype })], fn: (x) => F.sum(x, undefined, keepdim) }));
  add(`sum axis 1 ${k}`, (dtype, rng) => ({ inputs: [randT(rs, rng, { dtype })], fn: (x) => F.sum(x, 1, keepdim) }));
  add(`sum axes [-1, 0] ${k}`, (dtype, rng) => ({ inputs: [randT(rs, rng, { dtype })], fn: (x) => F.sum(x, [-1, 0], keepdim) }));
  add(`mean all ${k}`, (dtype, rng) => ({ inputs: [randT(rs, rng, { dtype })], fn: (x) => F.mean(x, undefined, keepdim) }));
  add(`mean axis -1 ${k}`, (dtype, rng) => ({ inputs: [randT(rs, rng, { dtype })], fn: (x) => F.mean(x, -1, keepdim) }));
  add(`mean axes [0, 2] ${k}`, (dtype, rng) => ({ inputs: [randT(rs, rng, { dtype })], fn: (x) => F.mean(x, [0, 2], keepdim) }));
  add(`max axis 1 ${k}`, (dtype, rng) => ({ inputs: [distinctT(rs, rng, dtype)], fn: (x) => F.max(x, 1, keepdim) }));
  add(`max axis -1 ${k}`, (dtype, rng) => ({ inputs: [distinctT(rs, rng, dtype)], fn: (x) => F.max(x, -1, keepdim) }));
  add(`logsumexp axis 0 ${k}`, (dtype, rng) => ({ inputs: [randT(rs, rng, { dtype, lo: -3, hi: 3 })], fn: (x) => F.logsumexp(x, 0, keepdim) }));
  add(`logsumexp axis -1 ${k}`, (dtype, rng) => ({ inputs: [randT(rs, rng, { dtype, lo: -3, hi: 3 })], fn: (x) => F.logsumexp(x, -1, keepdim) }));
}
add('logsumexp with -Infinity entries', (dtype, rng) => {
  const x = randT([3, 4], rng, { dtype, lo: -2, hi: 2 });
  x.data[1] = -Infinity;
  x.data[6] = -Infinity;
  x.data[7] = -Infinity;
  return { inputs: [x], fn: (t) => F.logsumexp(t, 1) };
});
add('sum of a 1-d tensor to a scalar', (dtype, rng) => ({ inputs: [randT([5], rng, { dtype })], fn: (x) => F.sum(x) }));

// ---------------------------------------------------------------- shape ops

add('reshape', (dtype, rng) => ({ inputs: [randT([2, 3, 4], rng, { dtype })], fn: (x) => F.reshape(x, [4, -1]) }));
add('flatten', (dtype, rng) => ({ inputs: [randT([2, 3, 2, 2], rng, { dtype })], fn: (x) => F.flatten(x) }));
add('flatten from 2', (dtype, rng) => ({ inputs: [randT([2, 3, 2, 2], rng, { dtype })], fn: (x) => F.flatten(x, 2) }));
add('permute 3-d', (dtype, rng) => ({ inputs: [randT([2, 3, 4], rng, { dtype })], fn: (x) => F.permute(x, [2, 0, 1]) }));
add('permute 4-d', (dtype, rng) => ({ inputs: [randT([2, 3, 1, 4], rng, { dtype })], fn: (x) => F.permute(x, [1, 3, 0, -2]) }));
add('transpose', (dtype, rng) => ({ inputs: [randT([3, 5], rng, { dtype })], fn: (x) => F.transpose(x) }));
add('transpose axes 0,2', (dtype, rng) => ({ inputs: [randT([2, 3, 4], rng, { dtype })], fn: (x) => F.transpose(x, 0, 2) }));
add('slice middle axis', (dtype, rng) => ({ inputs: [randT([2, 5, 3], rng, { dtype })], fn: (x) => F.slice(x, 1, 1, 4) }));
add('slice last axis', (dtype, rng) => ({ inputs: [randT([3, 4], rng, { dtype })], fn: (x) => F.slice(x, -1, 2, 4) }));
add('concat axis 1 (one input without grad)', (dtype, rng) => ({
  inputs: [randT([2, 1, 3], rng, { dtype }), randT([2, 2, 3], rng, { dtype, requiresGrad: false }), randT([2, 3, 3], rng, { dtype })],
  fn: (a, b, c) => F.concat([a, b, c], 1),
}));
add('concat axis 0', (dtype, rng) => ({ inputs: [randT([1, 3], rng, { dtype }), randT([2, 3], rng, { dtype })], fn: (a, b) => F.concat([a, b], 0) }));
add('indexSelect with repeated indices', (dtype, rng) => ({
  inputs: [randT([2, 4, 3], rng, { dtype })], fn: (x) => F.indexSelect(x, 1, [3, 0, 3, 3, 1]),
}));
add('indexSelect axis 0', (dtype, rng) => ({ inputs: [randT([4, 3], rng, { dtype })], fn: (x) => F.indexSelect(x, 0, Int32Array.from([2, 2, 0])) }));

// ---------------------------------------------------------------- matrix products

add('matmul 2-d', (dtype, rng) => ({ inputs: [randT([3, 4], rng, { dtype }), randT([4, 5], rng, { dtype })], fn: F.matmul }));
add('matmul batched', (dtype, rng) => ({ inputs: [randT([2, 3, 4], rng, { dtype }), randT([2, 4, 5], rng, { dtype })], fn: F.matmul }));
add('matmul shared 2-d a', (dtype, rng) => ({ inputs: [randT([3, 4], rng, { dtype }), randT([2, 4, 5], rng, { dtype })], fn: F.matmul }));
add('matmul shared 2-d b', (dtype, rng) => ({ inputs: [randT([2, 3, 4], rng, { dtype }), randT([4, 5], rng, { dtype })], fn: F.matmul }));
add('matmul a·aᵀ (same tensor twice)', (dtype, rng) => ({ inputs: [randT([3, 4], rng, { dtype })], fn: (a) => F.matmul(a, F.transpose(a)) }));
add('linear with bias', (dtype, rng) => ({
  inputs: [randT([5, 3], rng, { dtype }), randT([4, 3], rng, { dtype }), randT([4], rng, { dtype })], fn: (x, w, b) => F.linear(x, w, b),
}));
add('linear without bias', (dtype, rng) => ({ inputs: [randT([5, 3], rng, { dtype }), randT([4, 3], rng, { dtype })], fn: (x, w) => F.linear(x, w) }));
add('linear, x without grad', (dtype, rng) => ({
  inputs: [randT([5, 3], rng, { dtype, requiresGrad: false }), randT([4, 3], rng, { dtype }), randT([4], rng, { dtype })],
  fn: (x, w, b) => F.linear(x, w, b),
}));
add('linear on a 3-d input', (dtype, rng) => ({
  inputs: [randT([2, 3, 3], rng, { dtype }), randT([2, 3], rng, { dtype }), randT([2], rng, { dtype })], fn: (x, w, b) => F.linear(x, w, b),
}));
add('linear on a 1-d input', (dtype, rng) => ({
  inputs: [randT([3], rng, { dtype }), randT([2, 3], rng, { dtype }), randT([2], rng, { dtype })], fn: (x, w, b) => F.linear(x, w, b),
}));

// ---------------------------------------------------------------- convolution and pooling

for (const stride of [1, 2]) {
  for (const padding of [0, 1]) {
    for (const bias of [true, false]) {
      add(`conv2d stride ${stride} padding ${padding} ${bias ? 'with' : 'without'} bias`, (dtype, rng) => {
        const inputs = [randT([2, 2, 5, 6], rng, { dtype }), randT([3, 2, 3, 3], rng, { dtype })];
        if (bias) inputs.push(randT([3], rng, { dtype }));
        return { inputs, fn: (x, w, b) => F.conv2d(x, w, b ?? null, { stride, padding }) };
      });
    }
  }
}
add('conv2d with fused ReLU (stride 1, padding 1, bias)', (dtype, rng) => ({
  inputs: [randT([2, 2, 5, 6], rng, { dtype }), randT([3, 2, 3, 3], rng, { dtype }), randT([3], rng, { dtype })],
  fn: (x, w, b) => F.conv2d(x, w, b, { padding: 1, relu: true }),
}));
add('conv2d with fused ReLU (stride 2, no bias)', (dtype, rng) => ({
  inputs: [randT([2, 3, 7, 6], rng, { dtype }), randT([2, 3, 3, 3], rng, { dtype })],
  fn: (x, w) => F.conv2d(x, w, null, { stride: 2, relu: true }),
}));
add('conv2d non-square kernel, x without grad', (dtype, rng) => ({
  inputs: [randT([1, 3, 4, 5], rng, { dtype, requiresGrad: false }), randT([2, 3, 2, 3], rng, { dtype }), randT([2], rng, { dtype })],
  fn: (x, w, b) => F.conv2d(x, w, b, { padding: 1 }),
}));
add('maxPool2d 2×2', (dtype, rng) => ({ inputs: [distinctT([2, 2, 4, 6], rng, dtype)], fn: (x) => F.maxPool2d(x, 2) }));
add('maxPool2d 3 stride 2 padding 1 (overlapping)', (dtype, rng) => ({ inputs: [distinctT([1, 2, 5, 6], rng, dtype)], fn: (x) => F.maxPool2d(x, 3, 2, 1) }));
add('avgPool2d 2×2', (dtype, rng) => ({ inputs: [randT([2, 2, 4, 6], rng, { dtype })], fn: (x) => F.avgPool2d(x, 2) }));
add('avgPool2d 3 stride 2 padding 1', (dtype, rng) => ({ inputs: [randT([1, 2, 5, 6], rng, { dtype })], fn: (x) => F.avgPool2d(x, 3, 2, 1) }));
add('adaptiveAvgPool2d divisible 6×6→3×3', (dtype, rng) => ({ inputs: [randT([1, 2, 6, 6], rng, { dtype })], fn: (x) => F.adaptiveAvgPool2d(x, 3) }));
add('adaptiveAvgPool2d 6×4→3×2 (unequal ratios)', (dtype, rng) => ({ inputs: [randT([2, 1, 6, 4], rng, { dtype })], fn: (x) => F.adaptiveAvgPool2d(x, 3, 2) }));
add('adaptiveAvgPool2d non-divisible 5×7→3×4', (dtype, rng) => ({ inputs: [randT([1, 2, 5, 7], rng, { dtype })], fn: (x) => F.adaptiveAvgPool2d(x, 3, 4) }));
add('adaptiveAvgPool2d global 5×7→1', (dtype, rng) => ({ inputs: [randT([2, 2, 5, 7], rng, { dtype })], fn: (x) => F.adaptiveAvgPool2d(x, 1) }));

// ---------------------------------------------------------------- normalisation, dropout, softmax, losses

function bnState(C: number, dtype: DType, rng: Rng): { runningMean: Tensor; runningVar: Tensor } {
  return { runningMean: randT([C], rng, { dtype, requiresGrad: false }), runningVar: randT([C], rng, { dtype, lo: 0.5, hi: 2, requiresGrad: false }) };
}
add('batchNorm training [N,C]', (dtype, rng) => {
  const st = bnState(3, dtype, rng);
  return {
    inputs: [randT([5, 3], rng, { dtype, lo: -2, hi: 2 }), randT([3], rng, { dtype, lo: 0.5, hi: 1.5 }), randT([3], rng, { dtype })],
    fn: (x, w, b) => F.batchNorm(x, w, b, st, { training: true }),
  };
});
add('batchNorm training [N,C,H,W]', (dtype, rng) => {
  const st = bnState(2, dtype, rng);
  return {
    inputs: [randT([3, 2, 2, 3], rng, { dtype, lo: -2, hi: 2 }), randT([2], rng, { dtype, lo: 0.5, hi: 1.5 }), randT([2], rng, { dtype })],
    fn: (x, w, b) => F.batchNorm(x, w, b, st, { training: true }),
  };
});
add('batchNorm training without affine or state', (dtype, rng) => ({
  inputs: [randT([4, 3], rng, { dtype, lo: -2, hi: 2 })], fn: (x) => F.batchNorm(x, null, null, null, { training: true }),
}));
add('batchNorm eval [N,C,H,W]', (dtype, rng) => {
  const st = bnState(2, dtype, rng);
  return {
    inputs: [randT([2, 2, 2, 2], rng, { dtype, lo: -2, hi: 2 }), randT([2], rng, { dtype, lo: 0.5, hi: 1.5 }), randT([2], rng, { dtype })],
    fn: (x, w, b) => F.batchNorm(x, w, b, st, { training: false }),
  };
});
// A fresh Rng per call: the mask must be identical on every evaluation of the finite difference.
add('dropout p=0.4', (dtype, rng) => ({ inputs: [randT([4, 5], rng, { dtype })], fn: (x) => F.dropout(x, 0.4, new Rng(7), true) }));
add('logSoftmax last axis', (dtype, rng) => ({ inputs: [randT([3, 5], rng, { dtype, lo: -3, hi: 3 })], fn: (x) => F.logSoftmax(x) }));
add('logSoftmax axis 0 of 3-d', (dtype, rng) => ({ inputs: [randT([3, 2, 4], rng, { dtype, lo: -3, hi: 3 })], fn: (x) => F.logSoftmax(x, 0) }));
add('softmax last axis', (dtype, rng) => ({ inputs: [randT([3, 5], rng, { dtype, lo: -3, hi: 3 })], fn: (x) => F.softmax(x) }));
add('softmax axis 1 of 3-d', (dtype, rng) => ({ inputs: [randT([2, 3, 2], rng, { dtype, lo: -3, hi: 3 })], fn: (x) => F.softmax(x, 1) }));
add('crossEntropy', (dtype, rng) => ({
  inputs: [randT([5, 4], rng, { dtype, lo: -3, hi: 3 })], fn: (x) => F.crossEntropy(x, Int32Array.from([0, 3, 1, 1, 2])),
}));
add('mse (both sides trainable)', (dtype, rng) => ({ inputs: [randT([3, 4], rng, { dtype }), randT([3, 4], rng, { dtype })], fn: F.mse }));
add('mse (target fixed)', (dtype, rng) => ({ inputs: [randT([6], rng, { dtype }), randT([6], rng, { dtype, requiresGrad: false })], fn: F.mse }));

export const opCases: readonly OpCase[] = cases;
