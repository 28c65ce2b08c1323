/** Gradient checks: every op's analytic gradient against central finite differences (float64, js kernels). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as F from '../src/core/ops/index.js';
import { Rng } from '../src/core/random.js';
import { defineOp, Tensor } from '../src/core/tensor.js';
import { jsBackend, setBackend } from '../src/core/backend/index.js';
import { gradcheck } from './helpers/gradcheck.js';
import { opCases } from './helpers/opcases.js';
import { fromArray, randT } from './helpers/tensors.js';

// Everything here runs on the pure-TS kernels (float64 support, deterministic).
setBackend(jsBackend);

opCases.forEach((c, i) => {
  test(`gradcheck: ${c.name}`, () => {
    const { inputs, fn } = c.build('float64', new Rng(1000 + i));
    const r = gradcheck(fn, inputs);
    assert.ok(r.checked > 0);
  });
});

// A user op with its own backward: y = x³ (elementwise), dy/dx = 3x².
const cube = defineOp('cube', {
  forward: (x: Tensor) => ({ data: x.data.map((v) => v * v * v), shape: x.shape }),
  backward: (g, _out, x: Tensor) => [g.map((gi, i) => 3 * gi * x.data[i] * x.data[i])],
});

// Two inputs, second optional gradient: z = a · sin(b) elementwise.
const aSinB = defineOp('aSinB', {
  forward: (a: Tensor, b: Tensor) => ({ data: a.data.map((v, i) => v * Math.sin(b.data[i])), shape: a.shape }),
  backward: (g, _out, a: Tensor, b: Tensor) => [
    a.requiresGrad ? g.map((gi, i) => gi * Math.sin(b.data[i])) : null,
    b.requiresGrad ? g.map((gi, i) => gi * a.data[i] * Math.cos(b.data[i])) : null,
  ],
});

test('gradcheck: defineOp user ops (alone and composed with built-ins)', () => {
  const rng = new Rng(1);
  gradcheck(cube, [randT([2, 3], rng)]);
  gradcheck(aSinB, [randT([4], rng), randT([4], rng)]);
  gradcheck((a, b) => F.sum(F.mul(cube(F.tanh(a)), aSinB(a, b))), [randT([3], rng), randT([3], rng)]);
});

test('gradcheck rejects a wrong backward (the checker is not vacuous)', () => {
  const wrong = defineOp('wrongSquare', {
    forward: (x: Tensor) => ({ data: x.data.map((v) => v * v), shape: x.shape }),
    backward: (g, _o, x: Tensor) => [g.map((gi, i) => 2.001 * gi * x.data[i])],
  });
  assert.throws(() => gradcheck(wrong, [randT([3], new Rng(2), { lo: 0.5, hi: 1 })]), /gradcheck: input 0/);
  // A backward that forgets to accumulate a reused input is caught too.
  const dropsGrad = defineOp('dropsGrad', {
    forward: (a: Tensor, b: Tensor) => ({ data: a.data.map((v, i) => v * b.data[i]), shape: a.shape }),
    backward: (g, _o, _a: Tensor, b: Tensor) => [g.map((gi, i) => gi * b.data[i]), null],
  });
  assert.throws(() => gradcheck((x) => dropsGrad(x, x), [randT([3], new Rng(3), { lo: 0.5, hi: 1 })]), /gradcheck/);
});

test('gradcheck: one tensor used several times accumulates its gradient', () => {
  const rng = new Rng(4);
  // x feeds add twice, mul twice (x·x), a reshape alias and a diamond through tanh.
  gradcheck((x) => {
    const t = F.tanh(x);
    const d = F.add(F.mul(t, t), F.exp(t)); // diamond: t is used three times
    const y = F.add(F.add(x, x), F.mul(x, x));
    return F.add(F.add(y, d), F.reshape(F.sum(F.reshape(x, [6]), 0, true), [1, 1]));
  }, [randT([2, 3], rng)]);
  // add(x, x) where backward hands the same gradient buffer to both operands.
  const x = randT([3], rng);
  F.sum(F.add(x, x)).backward();
  assert.deepEqual(Array.from(x.grad!.data), [2, 2, 2]);
});

test('.grad accumulates across backward calls (and resets when cleared)', () => {
  const rng = new Rng(5);
  const x = randT([2, 2], rng);
  const w = randT([2, 2], rng);
  const loss = () => F.sum(F.mul(F.matmul(x, w), F.reshape(x, [2, 2])));
  loss().backward();
  const g1 = Array.from(x.grad!.data);
  const gw1 = Array.from(w.grad!.data);
  loss().backward();
  x.grad!.data.forEach((v, i) => assert.ok(Math.abs(v - 2 * g1[i]) < 1e-12));
  w.grad!.data.forEach((v, i) => assert.ok(Math.abs(v - 2 * gw1[i]) < 1e-12));
  // Accumulation must not have written into the first graph's buffers: a third pass adds exactly g1 again.
  loss().backward();
  x.grad!.data.forEach((v, i) => assert.ok(Math.abs(v - 3 * g1[i]) < 1e-12));
  x.grad = null;
  loss().backward();
  x.grad!.data.forEach((v, i) => assert.ok(Math.abs(v - g1[i]) < 1e-12));
});

test('backward with an explicit gradient equals backward of Σ out ⊙ g', () => {
  const rng = new Rng(6);
  const x = randT([2, 3], rng);
  const g = randT([2, 3], rng, { requiresGrad: false });
  F.tanh(x).backward(g);
  const a = Array.from(x.grad!.data);
  x.grad = null;
  F.sum(F.mul(F.tanh(x), g)).backward();
  assert.deepEqual(a, Array.from(x.grad!.data));
  // The seed is copied: the caller's gradient tensor is left intact.
  const before = Array.from(g.data);
  F.reshape(x, [6]).backward(F.reshape(g, [6]));
  assert.deepEqual(Array.from(g.data), before);
});

test('a reshape alias of a leaf gets the right gradient and leaves the data intact', () => {
  const x = fromArray([1, 2, 3, 4], [2, 2], 'float64', true);
  const y = F.reshape(x, [4]); // shares x.data
  F.sum(F.mul(y, y)).backward();
  assert.deepEqual(Array.from(x.data), [1, 2, 3, 4]);
  assert.deepEqual(Array.from(x.grad!.data), [2, 4, 6, 8]);
});

test('logsumexp of an all -Infinity row: forward -Infinity, gradient 0 (not NaN)', () => {
  const x = fromArray([-Infinity, -Infinity, 1, 2], [2, 2], 'float64', true);
  const y = F.logsumexp(x, 1);
  assert.equal(y.data[0], -Infinity);
  y.backward(fromArray([1, 1], [2]));
  const g = Array.from(x.grad!.data);
  assert.deepEqual(g.slice(0, 2), [0, 0]);
  assert.ok(Math.abs(g[2] + g[3] - 1) < 1e-12);
});

test('gradients of unused or non-trainable inputs stay null', () => {
  const rng = new Rng(8);
  const a = randT([3], rng);
  const b = randT([3], rng);
  const c = randT([3], rng, { requiresGrad: false });
  F.sum(F.mul(a, c)).backward();
  assert.ok(a.grad);
  assert.equal(b.grad, null);
  assert.equal(c.grad, null);
});

test('float32 gradients match float64 ones to float32 precision', () => {
  const rng = new Rng(9);
  const x64 = randT([4, 3], rng);
  const w64 = randT([2, 3], rng);
  const x32 = new Tensor(Float32Array.from(x64.data), x64.shape, true);
  const w32 = new Tensor(Float32Array.from(w64.data), w64.shape, true);
  const labels = Int32Array.from([0, 1, 1, 0]);
  F.crossEntropy(F.tanh(F.linear(x64, w64)), labels).backward();
  F.crossEntropy(F.tanh(F.linear(x32, w32)), labels).backward();
  assert.equal(w32.grad!.dtype, 'float32');
  w32.grad!.data.forEach((v, i) => assert.ok(Math.abs(v - w64.grad!.data[i]) < 1e-5));
  x32.grad!.data.forEach((v, i) => assert.ok(Math.abs(v - x64.grad!.data[i]) < 1e-5));
});
