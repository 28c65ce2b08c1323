/**
 * Optimisers against independent scalar re-implementations of PyTorch's documented update rules
 * (torch.optim.SGD / torch.optim.AdamW pseudo-code), state save/restore, and gradient clipping.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsBackend, setBackend } from '../src/core/backend/index.js';
import * as F from '../src/core/ops/index.js';
import { AdamW, clipGradNorm, clipGradValue, SGD, type Optimizer } from '../src/core/optim/optimizers.js';
import { type DType, Tensor } from '../src/core/tensor.js';
import { assertClose, fromArray } from './helpers/tensors.js';

setBackend(jsBackend);

/** torch.optim.SGD for one scalar parameter (maximize = False). */
class RefSGD {
  b = 0;
  t = 0;
  constructor(public theta: number, private o: { lr: number; momentum: number; dampening: number; nesterov: boolean; wd: number }) {}
  step(grad: number, lr = this.o.lr): void {
    this.t++;
    let g = grad;
    if (this.o.wd !== 0) g = g + this.o.wd * this.theta;
    if (this.o.momentum !== 0) {
      this.b = this.t > 1 ? this.o.momentum * this.b + (1 - this.o.dampening) * g : g;
      g = this.o.nesterov ? g + this.o.momentum * this.b : this.b;
    }
    this.theta = this.theta - lr * g;
  }
}

/** torch.optim.AdamW for one scalar parameter (amsgrad = False, maximize = False). */
class RefAdamW {
  m = 0;
  v = 0;
  t = 0;
  constructor(public theta: number, private o: { lr: number; b1: number; b2: number; eps: number; wd: number }) {}
  step(g: number, lr = this.o.lr): void {
    this.t++;
    this.theta = this.theta - lr * this.o.wd * this.theta;
    this.m = this.o.b1 * this.m + (1 - this.o.b1) * g;
    this.v = this.o.b2 * this.v + (1 - this.o.b2) * g * g;
    const mHat = this.m / (1 - this.o.b1 ** this.t);
    const vHat = this.v / (1 - this.o.b2 ** this.t);
    this.theta = this.theta - (lr * mHat) / (Math.sqrt(vHat) + this.o.eps);
  }
}

const init = [[0.5, -1.2, 2.0], [0.05, -0.3, 1.1, -2.5]];

function makeParams(dtype: DType): Tensor[] {
  return [fromArray(init[0], [3], dtype, true), fromArray(init[1], [2, 2], dtype, true)];
}

/** A gradient that varies with the step and depends on the current parameter value. */
function gradAt(t: number, i: number, theta: number): number {
  return Math.sin(1.3 * t + 0.7 * i) + 0.3 * theta + (t % 3 === 0 ? 2 : 0);
}

/** Runs `steps` steps of `opt` and of per-scalar references side by side; returns both. */
function runAgainstRef(dtype: DType, opt: (p: Tensor[]) => Optimizer, ref: (theta: number) => { theta: number; step(g: number, lr?: number): void },
  steps = 20, lrAt?: (t: number) => number): { got: number[]; want: number[] } {
  const params = makeParams(dtype);
  const o = opt(params);
  const refs = params.flatMap((p) => Array.from(p.data, (v) => ref(v)));
  for (let t = 1; t <= steps; t++) {
    let flat = 0;
    if (lrAt) o.lr = lrAt(t);
    for (const p of params) {
      const g = new Float64Array(p.size);
      for (let j = 0; j < p.size; j++) {
        const r = refs[flat + j];
        // Both sides see the same gradient: computed from the reference's current value.
        g[j] = gradAt(t, flat + j, r.theta);
        r.step(g[j], lrAt ? lrAt(t) : undefined);
      }
      p.grad = new Tensor(dtype === 'float64' ? g : Float32Array.from(g), p.shape);
      flat += p.size;
    }
    o.step();
  }
  return { got: params.flatMap((p) => Array.from(p.data)), want: refs.map((r) => r.theta) };
}

const sgdConfigs = [
  { lr: 0.1, momentum: 0, dampening: 0, nesterov: false, weightDecay: 0 },
  { lr: 0.05, momentum: 0.9, dampening: 0, nesterov: false, weightDecay: 0 },
  { lr: 0.05, momentum: 0.8, dampening: 0.3, nesterov: false, weightDecay: 0 },
  { lr: 0.05, momentum: 0.9, dampening: 0, nesterov: true, weightDecay: 0 },
  { lr: 0.1, momentum: 0, dampening: 0, nesterov: false, weightDecay: 0.05 },
  { lr: 0.03, momentum: 0.7, dampening: 0.1, nesterov: false, weightDecay: 0.02 },
  { lr: 0.03, momentum: 0.95, dampening: 0, nesterov: true, weightDecay: 0.1 },
];

test('SGD matches torch.optim.SGD over 20 steps (plain, momentum, dampening, nesterov, weight decay)', () => {
  for (const c of sgdConfigs) {
    const refOpts = { lr: c.lr, momentum: c.momentum, dampening: c.dampening, nesterov: c.nesterov, wd: c.weightDecay };
    const r64 = runAgainstRef('float64', (p) => new SGD(p, c), (th) => new RefSGD(th, refOpts));
    assertClose(r64.got, r64.want, 1e-12, 1e-13, `SGD ${JSON.stringify(c)} float64`);
    const r32 = runAgainstRef('float32', (p) => new SGD(p, c), (th) => new RefSGD(th, refOpts));
    assertClose(r32.got, r32.want, 1e-4, 1e-5, `SGD ${JSON.stringify(c)} float32`);
  }
});

test('AdamW defaults are lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01', () => {
  const o = new AdamW(makeParams('float64'));
  assert.equal(o.lr, 1e-3);
  assert.equal(o.beta1, 0.9);
  assert.equal(o.beta2, 0.999);
  assert.equal(o.eps, 1e-8);
  assert.equal(o.weightDecay, 0.01);
  const s = new SGD(makeParams('float64'), { lr: 0.1 });
  assert.deepEqual([s.momentum, s.dampening, s.nesterov, s.weightDecay], [0, 0, false, 0]);
});

test('AdamW matches torch.optim.AdamW over 20 steps (defaults and custom settings)', () => {
  const configs: [ConstructorParameters<typeof AdamW>[1], { lr: number; b1: number; b2: number; eps: number; wd: number }][] = [
    [{}, { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.01 }],
    [{ lr: 0.05 }, { lr: 0.05, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.01 }],
    [{ lr: 0.02, betas: [0.8, 0.99], eps: 1e-6, weightDecay: 0.1 }, { lr: 0.02, b1: 0.8, b2: 0.99, eps: 1e-6, wd: 0.1 }],
    [{ lr: 0.01, weightDecay: 0 }, { lr: 0.01, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0 }],
  ];
  for (const [opts, ro] of configs) {
    const r64 = runAgainstRef('float64', (p) => new AdamW(p, opts), (th) => new RefAdamW(th, ro));
    assertClose(r64.got, r64.want, 1e-12, 1e-13, `AdamW ${JSON.stringify(opts)} float64`);
    const r32 = runAgainstRef('float32', (p) => new AdamW(p, opts), (th) => new RefAdamW(th, ro));
    assertClose(r32.got, r32.want, 1e-5, 1e-6, `AdamW ${JSON.stringify(opts)} float32`);
  }
});

test('changing .lr between steps (a schedule) is honoured', () => {
  const lrAt = (t: number) => 0.05 * Math.cos((t / 20) * Math.PI / 2) + 1e-3;
  const ra = runAgainstRef('float64', (p) => new AdamW(p, { lr: 1 }), (th) => new RefAdamW(th, { lr: 1, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.01 }), 20, lrAt);
  assertClose(ra.got, ra.want, 1e-12, 1e-13, 'AdamW schedule');
  const c = { lr: 1, momentum: 0.9, dampening: 0, nesterov: true, wd: 1e-3 };
  const rs = runAgainstRef('float64', (p) => new SGD(p, { ...c, weightDecay: c.wd }), (th) => new RefSGD(th, c), 20, lrAt);
  assertClose(rs.got, rs.want, 1e-12, 1e-13, 'SGD schedule');
});

test('a parameter without a gradient is skipped and its state starts at its own first update (PyTorch)', () => {
  // PyTorch keeps per-parameter state: q gets no grad on steps 1-2, so its first update uses
  // step count 1 (AdamW bias correction) and initialises the momentum buffer to the gradient (SGD).
  const mk = [
    { opt: (p: Tensor[]) => new AdamW(p, { lr: 0.05 }), ref: (th: number) => new RefAdamW(th, { lr: 0.05, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.01 }) },
    { opt: (p: Tensor[]) => new SGD(p, { lr: 0.05, momentum: 0.9, dampening: 0.5 }), ref: (th: number) => new RefSGD(th, { lr: 0.05, momentum: 0.9, dampening: 0.5, nesterov: false, wd: 0 }) },
  ];
  for (const { opt, ref } of mk) {
    const p = fromArray([1, -1], [2], 'float64', true);
    const q = fromArray([0.5], [1], 'float64', true);
    const o = opt([p, q]);
    const rp = [ref(1), ref(-1)];
    const rq = ref(0.5);
    for (let t = 1; t <= 6; t++) {
      const gp = [gradAt(t, 0, rp[0].theta), gradAt(t, 1, rp[1].theta)];
      p.grad = fromArray(gp, [2]);
      rp.forEach((r, i) => r.step(gp[i]));
      if (t > 2) {
        const gq = gradAt(t, 2, rq.theta);
        q.grad = fromArray([gq], [1]);
        rq.step(gq);
      } else q.grad = null;
      o.step();
    }
    assertClose([...p.data, ...q.data], [rp[0].theta, rp[1].theta, rq.theta], 1e-12, 1e-13, o.constructor.name);
  }
});

test('optimisers work from real backward passes and zeroGrad clears gradients', () => {
  const w = fromArray([0.5, -0.5], [1, 2], 'float64', true);
  const x = fromArray([1, 2, -1, 0.5], [2, 2]);
  const y = fromArray([1, -1], [2, 1]);
  const opt = new SGD([w], { lr: 0.1 });
  const loss0 = F.mse(F.linear(x, w), y).item();
  for (let i = 0; i < 50; i++) {
    opt.zeroGrad();
    F.mse(F.linear(x, w), y).backward();
    opt.step();
  }
  assert.ok(F.mse(F.linear(x, w), y).item() < loss0 * 0.1);
  opt.zeroGrad();
  assert.equal(w.grad, null);
});

function bitsOf(ps: Tensor[]): number[] {
  return ps.flatMap((p) => Array.from(p.data));
}

test('getState/setState round trip resumes bit-exactly (through JSON)', () => {
  const makers: [string, (p: Tensor[]) => Optimizer][] = [
    ['AdamW', (p) => new AdamW(p, { lr: 0.01 })],
    ['SGD momentum', (p) => new SGD(p, { lr: 0.05, momentum: 0.9, dampening: 0.2, weightDecay: 0.01 })],
    ['SGD nesterov', (p) => new SGD(p, { lr: 0.05, momentum: 0.9, nesterov: true })],
    ['SGD plain', (p) => new SGD(p, { lr: 0.05 })],
  ];
  for (const dtype of ['float32', 'float64'] as const) {
    for (const [name, mk] of makers) {
      const feed = (ps: Tensor[], t: number) => {
        ps.forEach((p, pi) => {
          const g = Array.from(p.data, (v, j) => gradAt(t, pi * 10 + j, v));
          p.grad = fromArray(g, p.shape, dtype);
        });
      };
      const a = makeParams(dtype);
      const oa = mk(a);
      for (let t = 1; t <= 10; t++) { feed(a, t); oa.step(); }
      const saved = JSON.parse(JSON.stringify(oa.getState()));
      const b = a.map((p) => fromArray(Array.from(p.data), p.shape, dtype, true));
      const ob = mk(b);
      ob.setState(saved);
      for (let t = 11; t <= 20; t++) {
        feed(a, t); oa.step();
        feed(b, t); ob.step();
      }
      assert.deepEqual(bitsOf(b), bitsOf(a), `${name} ${dtype} resumed run differs`);
      assert.deepEqual(JSON.parse(JSON.stringify(ob.getState())), JSON.parse(JSON.stringify(oa.getState())), `${name} ${dtype} state`);
    }
  }
});

test('setState copies: mutating the saved state afterwards has no effect', () => {
  const ps = makeParams('float64');
  const o = new AdamW(ps, { lr: 0.1 });
  ps.forEach((p) => { p.grad = fromArray(new Array(p.size).fill(1), p.shape); });
  o.step();
  const s = o.getState();
  const o2 = new AdamW(ps, { lr: 0.1 });
  o2.setState(s);
  s.buffers[0][0][0] = 1e9;
  assert.notEqual(o2.getState().buffers[0][0][0], 1e9);
});

test('clipGradNorm follows torch.nn.utils.clip_grad_norm_ (coef = max/(norm+1e-6), clamped to 1)', () => {
  const a = fromArray([0, 0, 0], [3], 'float64', true);
  const b = fromArray([0, 0], [2], 'float64', true);
  const c = fromArray([0], [1], 'float64', true); // no grad: ignored
  const set = () => {
    a.grad = fromArray([3, 0, -4], [3]);
    b.grad = fromArray([0, 12], [2]);
    c.grad = null;
  };
  set();
  const n = clipGradNorm([a, b, c], 6.5);
  assert.equal(n, 13, 'returns the total norm before clipping');
  const coef = 6.5 / (13 + 1e-6);
  assertClose([...a.grad!.data, ...b.grad!.data], [3 * coef, 0, -4 * coef, 0, 12 * coef], 1e-15, 0);
  assert.equal(c.grad, null);
  // Below the limit: untouched.
  set();
  assert.equal(clipGradNorm([a, b], 100), 13);
  assert.deepEqual([...a.grad!.data, ...b.grad!.data], [3, 0, -4, 0, 12]);
  // Exactly at the limit the 1e-6 still scales (as PyTorch does).
  set();
  clipGradNorm([a, b], 13);
  assert.ok(b.grad!.data[1] < 12 && b.grad!.data[1] > 12 - 1e-5);
  // Float32 gradients; resulting norm ≈ maxNorm.
  const p = new Tensor(Float32Array.from([1, 2, 3]), [3], true);
  p.grad = new Tensor(Float32Array.from([10, -20, 30]), [3]);
  clipGradNorm([p], 1);
  const after = Math.hypot(...p.grad.data);
  assert.ok(Math.abs(after - 1) < 1e-5);
});

test('clipGradValue clamps each element to [-clip, clip]', () => {
  const a = fromArray([0, 0, 0, 0], [4], 'float64', true);
  a.grad = fromArray([-5, 0.2, 3, -0.5], [4]);
  clipGradValue([a, fromArray([1], [1], 'float64', true)], 1);
  assert.deepEqual(Array.from(a.grad.data), [-1, 0.2, 1, -0.5]);
});
