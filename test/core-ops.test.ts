/**
 * Forward correctness of every op against naive references written here (direct loops, index
 * arithmetic, textbook formulas), noGrad semantics, and — when the native addon loads — agreement
 * of the js and native backends on every op (forward and backward) in float32.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { currentBackend, jsBackend, nativeBackend, nativeLoadError, setBackend, wasmBackend, wasmLoadError } from '../src/core/backend/index.js';
import type { Backend } from '../src/core/backend/types.js';
import * as F from '../src/core/ops/index.js';
import { AdamW, SGD } from '../src/core/optim/optimizers.js';
import { Rng } from '../src/core/random.js';
import { cast, eye, full, isGradEnabled, noGrad, ones, rand, randn, scalar, tensor, Tensor, zeros, type Shape } from '../src/core/tensor.js';
import { opCases } from './helpers/opcases.js';
import { assertClose, assertShape, distinctT, fromArray, randT, ravel, unravel } from './helpers/tensors.js';

setBackend(jsBackend);

// ---------------------------------------------------------------- references

function bshape(a: Shape, b: Shape): number[] {
  const nd = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < nd; i++) {
    const da = a[i - (nd - a.length)] ?? 1;
    const db = b[i - (nd - b.length)] ?? 1;
    out.push(Math.max(da, db));
  }
  return out;
}

/** Index of `idx` (in the broadcast shape) inside an operand of shape `s`. */
function bindex(idx: number[], s: Shape): number {
  const off = idx.length - s.length;
  return ravel(s.map((d, i) => (d === 1 ? 0 : idx[off + i])), s);
}

function refBinary(a: Tensor, b: Tensor, f: (x: number, y: number) => number): { shape: number[]; data: number[] } {
  const shape = bshape(a.shape, b.shape);
  const n = shape.reduce((p, c) => p * c, 1);
  const data: number[] = [];
  for (let i = 0; i < n; i++) {
    const idx = unravel(i, shape);
    data.push(f(a.data[bindex(idx, a.shape)], b.data[bindex(idx, b.shape)]));
  }
  return { shape, data };
}

/** Generic reduction over `axes` by folding each output's group of values. */
function refReduce(x: Tensor, axes: number[], keepdim: boolean, fold: (vals: number[]) => number): { shape: number[]; data: number[] } {
  const ax = axes.map((a) => (a < 0 ? a + x.ndim : a));
  const kshape = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const groups = new Map<number, number[]>();
  for (let i = 0; i < x.size; i++) {
    const idx = unravel(i, x.shape);
    const o = ravel(idx.map((v, d) => (ax.includes(d) ? 0 : v)), kshape);
    if (!groups.has(o)) groups.set(o, []);
    groups.get(o)!.push(x.data[i]);
  }
  const n = kshape.reduce((p, c) => p * c, 1);
  const data: number[] = [];
  for (let o = 0; o < n; o++) data.push(fold(groups.get(o)!));
  const shape = keepdim ? kshape : x.shape.filter((_, i) => !ax.includes(i));
  return { shape, data };
}

const sumOf = (v: number[]) => v.reduce((p, c) => p + c, 0);

function refConv2d(x: Tensor, w: Tensor, b: Tensor | null, stride: number, pad: number): { shape: number[]; data: Float64Array } {
  const [N, C, H, W] = x.shape;
  const [O, , KH, KW] = w.shape;
  const OH = Math.floor((H + 2 * pad - KH) / stride) + 1;
  const OW = Math.floor((W + 2 * pad - KW) / stride) + 1;
  const out = new Float64Array(N * O * OH * OW);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          let s = b ? b.data[o] : 0;
          for (let c = 0; c < C; c++)
            for (let kh = 0; kh < KH; kh++)
              for (let kw = 0; kw < KW; kw++) {
                const ih = oh * stride - pad + kh;
                const iw = ow * stride - pad + kw;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) s += x.data[((n * C + c) * H + ih) * W + iw] * w.data[((o * C + c) * KH + kh) * KW + kw];
              }
          out[((n * O + o) * OH + oh) * OW + ow] = s;
        }
  return { shape: [N, O, OH, OW], data: out };
}

/** Direct pooling; `kind` max ignores padding, avg divides by k² (count_include_pad). */
function refPool(x: Tensor, k: number, stride: number, pad: number, kind: 'max' | 'avg'): { shape: number[]; data: Float64Array } {
  const [N, C, H, W] = x.shape;
  const OH = Math.floor((H + 2 * pad - k) / stride) + 1;
  const OW = Math.floor((W + 2 * pad - k) / stride) + 1;
  const out = new Float64Array(N * C * OH * OW);
  for (let p = 0; p < N * C; p++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++) {
        let m = -Infinity;
        let s = 0;
        for (let kh = 0; kh < k; kh++)
          for (let kw = 0; kw < k; kw++) {
            const ih = oh * stride - pad + kh;
            const iw = ow * stride - pad + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const v = x.data[p * H * W + ih * W + iw];
            m = Math.max(m, v);
            s += v;
          }
        out[(p * OH + oh) * OW + ow] = kind === 'max' ? m : s / (k * k);
      }
  return { shape: [N, C, OH, OW], data: out };
}

// ---------------------------------------------------------------- creation and basics

test('creation helpers, dtype, item, clone/detach/cast', () => {
  const t = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  assertShape(t, [2, 3]);
  assert.equal(t.dtype, 'float32');
  assert.equal(t.ndim, 2);
  assert.equal(scalar(2.5, 'float64').item(), 2.5);
  assert.deepEqual(Array.from(zeros([2, 2]).data), [0, 0, 0, 0]);
  assert.deepEqual(Array.from(ones([3], 'float64').data), [1, 1, 1]);
  assert.deepEqual(Array.from(full([2], 7).data), [7, 7]);
  assert.deepEqual(Array.from(eye(2).data), [1, 0, 0, 1]);
  const c = t.clone();
  c.data[0] = 99;
  assert.equal(t.data[0], 1, 'clone copies');
  assert.equal(t.detach().data, t.data, 'detach shares data');
  assert.equal(cast(t, 'float64').dtype, 'float64');
  const r = randn([1000], new Rng(1), 2, 'float64');
  const m = sumOf(Array.from(r.data)) / 1000;
  assert.ok(Math.abs(m) < 0.2);
  const u = rand([1000], new Rng(1), -1, 3);
  assert.ok(Math.min(...u.data) >= -1 && Math.max(...u.data) < 3);
  assert.deepEqual(Array.from(randn([5], new Rng(3)).data), Array.from(randn([5], new Rng(3)).data), 'seeded');
});

// ---------------------------------------------------------------- elementwise

const binRefs: [string, (a: Tensor, b: Tensor) => Tensor, (x: number, y: number) => number][] = [
  ['add', F.add, (x, y) => x + y],
  ['sub', F.sub, (x, y) => x - y],
  ['mul', F.mul, (x, y) => x * y],
  ['div', F.div, (x, y) => x / y],
  ['maximum', F.maximum, (x, y) => Math.max(x, y)],
];

test('binary ops broadcast like NumPy', () => {
  const shapes: [number[], number[]][] = [[[3, 4], [3, 4]], [[3, 1, 4], [2, 1]], [[], [2, 3]], [[2, 3], []], [[4], [2, 3, 4]], [[2, 1, 3, 1], [4, 1, 2]], [[1], [3]]];
  const rng = new Rng(1);
  for (const [sa, sb] of shapes) {
    const a = randT(sa, rng, { requiresGrad: false });
    const b = randT(sb, rng, { requiresGrad: false, avoid: [0], margin: 0.1 });
    for (const [name, op, ref] of binRefs) {
      const got = op(a, b);
      const want = refBinary(a, b, ref);
      assertShape(got, want.shape, `${name} [${sa}] [${sb}] shape`);
      assertClose(got.data, want.data, 1e-15, 0, `${name} [${sa}] [${sb}]`);
    }
  }
});

test('unary and scalar maps match Math', () => {
  const x = randT([7], new Rng(2), { lo: -3, hi: 3, requiresGrad: false });
  const pos = randT([7], new Rng(3), { lo: 0.1, hi: 3, requiresGrad: false });
  const cases: [string, Tensor, Tensor, (v: number) => number][] = [
    ['neg', x, F.neg(x), (v) => -v],
    ['exp', x, F.exp(x), Math.exp],
    ['log', pos, F.log(pos), Math.log],
    ['relu', x, F.relu(x), (v) => Math.max(v, 0)],
    ['tanh', x, F.tanh(x), Math.tanh],
    ['sigmoid', x, F.sigmoid(x), (v) => 1 / (1 + Math.exp(-v))],
    ['sqrt', pos, F.sqrt(pos), Math.sqrt],
    ['abs', x, F.abs(x), Math.abs],
    ['square', x, F.square(x), (v) => v * v],
    ['powScalar', pos, F.powScalar(pos, -1.5), (v) => v ** -1.5],
    ['clamp', x, F.clamp(x, -1, 0.5), (v) => Math.min(0.5, Math.max(-1, v))],
    ['affine', x, F.affine(x, 2, -1), (v) => 2 * v - 1],
    ['mulScalar', x, F.mulScalar(x, 3), (v) => 3 * v],
    ['addScalar', x, F.addScalar(x, 3), (v) => v + 3],
  ];
  for (const [name, inp, got, f] of cases) {
    assertShape(got, inp.shape);
    assertClose(got.data, Array.from(inp.data, f), 1e-14, 1e-15, name);
  }
});

test('sigmoid and exp-based ops stay finite at extreme inputs', () => {
  const x = fromArray([-800, -50, 0, 50, 800], [5]);
  const s = F.sigmoid(x);
  assert.ok(s.data.every(Number.isFinite));
  assertClose(s.data, [0, 1 / (1 + Math.exp(50)), 0.5, 1 / (1 + Math.exp(-50)), 1], 1e-14, 0);
  const sm = F.softmax(fromArray([1000, 0, -1000], [1, 3]));
  assertClose(sm.data, [1, 0, 0], 0, 1e-300);
  const ls = F.logsumexp(fromArray([1000, 1000], [2]), 0);
  assertClose(ls.data, [1000 + Math.log(2)], 1e-15);
});

// ---------------------------------------------------------------- reductions

test('sum, mean, max, logsumexp match direct folds over every axis set', () => {
  const x = randT([2, 3, 4], new Rng(4), { requiresGrad: false });
  const axesList: (number[] | undefined)[] = [undefined, [0], [1], [2], [-1], [0, 2], [1, 0], [0, 1, 2]];
  for (const axes of axesList) {
    for (const keepdim of [false, true]) {
      const all = axes ?? [0, 1, 2];
      const tag = `axes ${axes} keepdim ${keepdim}`;
      const s = F.sum(x, axes, keepdim);
      const rs = refReduce(x, all, keepdim, sumOf);
      assertShape(s, rs.shape, `sum ${tag}`);
      assertClose(s.data, rs.data, 1e-14, 1e-15, `sum ${tag}`);
      const m = F.mean(x, axes, keepdim);
      const rm = refReduce(x, all, keepdim, (v) => sumOf(v) / v.length);
      assertShape(m, rm.shape, `mean ${tag}`);
      assertClose(m.data, rm.data, 1e-14, 1e-15, `mean ${tag}`);
    }
  }
  for (const axis of [0, 1, 2, -1]) {
    for (const keepdim of [false, true]) {
      const mx = F.max(x, axis, keepdim);
      const rmx = refReduce(x, [axis], keepdim, (v) => Math.max(...v));
      assertShape(mx, rmx.shape);
      assertClose(mx.data, rmx.data, 0, 0, `max axis ${axis}`);
      const lse = F.logsumexp(x, axis, keepdim);
      const rl = refReduce(x, [axis], keepdim, (v) => Math.log(sumOf(v.map(Math.exp))));
      assertShape(lse, rl.shape);
      assertClose(lse.data, rl.data, 1e-14, 1e-15, `logsumexp axis ${axis}`);
      // argmax agrees with max.
      const am = F.argmax(x, axis);
      const flat = refReduce(x, [axis], false, (v) => v.indexOf(Math.max(...v)));
      assert.deepEqual(Array.from(am), flat.data);
    }
  }
});

test('max and argmax pick the first of tied values; logsumexp handles -Infinity', () => {
  const x = fromArray([1, 3, 3, 2], [1, 4], 'float64', true);
  assert.deepEqual(Array.from(F.argmax(x, 1)), [1]);
  F.max(x, 1).backward();
  assert.deepEqual(Array.from(x.grad!.data), [0, 1, 0, 0]);
  const y = fromArray([-Infinity, 0, -Infinity, -Infinity], [2, 2]);
  const l = F.logsumexp(y, 1);
  assert.deepEqual(Array.from(l.data), [0, -Infinity]);
});

// ---------------------------------------------------------------- shape ops

test('reshape, flatten keep data order', () => {
  const x = randT([2, 3, 4], new Rng(5), { requiresGrad: false });
  const r = F.reshape(x, [3, -1]);
  assertShape(r, [3, 8]);
  assert.deepEqual(Array.from(r.data), Array.from(x.data));
  assertShape(F.flatten(x), [2, 12]);
  assertShape(F.flatten(x, 0), [24]);
  assertShape(F.reshape(x, [24]), [24]);
  assertShape(F.reshape(scalar(3), []), []);
});

test('permute and transpose match index arithmetic', () => {
  const x = randT([2, 3, 4, 5], new Rng(6), { requiresGrad: false });
  for (const axes of [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [0, 2, 1, 3], [-1, 0, 1, 2]]) {
    const ax = axes.map((a) => (a < 0 ? a + 4 : a));
    const y = F.permute(x, axes);
    const shape = ax.map((a) => x.shape[a]);
    assertShape(y, shape);
    for (let i = 0; i < y.size; i++) {
      const oi = unravel(i, shape);
      const xi = new Array<number>(4);
      ax.forEach((a, d) => { xi[a] = oi[d]; });
      assert.equal(y.data[i], x.data[ravel(xi, x.shape)], `permute ${axes} at ${oi}`);
    }
  }
  const m = randT([3, 5], new Rng(7), { requiresGrad: false });
  const t = F.transpose(m);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) assert.equal(t.data[j * 3 + i], m.data[i * 5 + j]);
  const t02 = F.transpose(x, 0, 2);
  assertShape(t02, [4, 3, 2, 5]);
});

test('slice, concat and indexSelect match index arithmetic', () => {
  const rng = new Rng(8);
  const x = randT([2, 5, 3], rng, { requiresGrad: false });
  const s = F.slice(x, 1, 1, 4);
  assertShape(s, [2, 3, 3]);
  for (let a = 0; a < 2; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 3; c++) assert.equal(s.data[(a * 3 + b) * 3 + c], x.data[(a * 5 + b + 1) * 3 + c]);
  assertShape(F.slice(x, 0, 1, 1), [0, 5, 3]);

  const p = randT([2, 1, 3], rng, { requiresGrad: false });
  const q = randT([2, 2, 3], rng, { requiresGrad: false });
  const c = F.concat([p, q], 1);
  assertShape(c, [2, 3, 3]);
  for (let a = 0; a < 2; a++)
    for (let b = 0; b < 3; b++)
      for (let k = 0; k < 3; k++) {
        const want = b < 1 ? p.data[(a * 1 + b) * 3 + k] : q.data[(a * 2 + b - 1) * 3 + k];
        assert.equal(c.data[(a * 3 + b) * 3 + k], want);
      }
  const idx = [4, 0, 4, 2];
  const sel = F.indexSelect(x, 1, idx);
  assertShape(sel, [2, 4, 3]);
  for (let a = 0; a < 2; a++) for (let j = 0; j < 4; j++) for (let k = 0; k < 3; k++) assert.equal(sel.data[(a * 4 + j) * 3 + k], x.data[(a * 5 + idx[j]) * 3 + k]);
  // Repeated indices scatter-add in backward.
  const xg = randT([3, 2], rng);
  F.sum(F.indexSelect(xg, 0, [1, 1, 2, 1])).backward();
  assert.deepEqual(Array.from(xg.grad!.data), [0, 0, 3, 3, 1, 1]);
});

// ---------------------------------------------------------------- matrix products

function refMatmul(a: ArrayLike<number>, aOff: number, b: ArrayLike<number>, bOff: number, m: number, k: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let l = 0; l < k; l++) s += a[aOff + i * k + l] * b[bOff + l * n + j];
      out.push(s);
    }
  return out;
}

test('matmul 2-d, batched and shared operands match the triple loop', () => {
  const rng = new Rng(9);
  const [m, k, n, B] = [3, 4, 5, 2];
  const a2 = randT([m, k], rng, { requiresGrad: false });
  const b2 = randT([k, n], rng, { requiresGrad: false });
  const a3 = randT([B, m, k], rng, { requiresGrad: false });
  const b3 = randT([B, k, n], rng, { requiresGrad: false });
  assertClose(F.matmul(a2, b2).data, refMatmul(a2.data, 0, b2.data, 0, m, k, n), 1e-14, 1e-15);
  const batched = (a: Tensor, b: Tensor) => {
    const out: number[] = [];
    for (let i = 0; i < B; i++) out.push(...refMatmul(a.data, a.ndim === 3 ? i * m * k : 0, b.data, b.ndim === 3 ? i * k * n : 0, m, k, n));
    return out;
  };
  for (const [a, b] of [[a3, b3], [a2, b3], [a3, b2]]) {
    const y = F.matmul(a, b);
    assertShape(y, [B, m, n]);
    assertClose(y.data, batched(a, b), 1e-14, 1e-15, `matmul [${a.shape}]·[${b.shape}]`);
  }
});

test('linear is x Wᵀ + b over any leading dims', () => {
  const rng = new Rng(10);
  const x = randT([2, 3, 4], rng, { requiresGrad: false });
  const w = randT([5, 4], rng, { requiresGrad: false });
  const b = randT([5], rng, { requiresGrad: false });
  const y = F.linear(x, w, b);
  assertShape(y, [2, 3, 5]);
  const want: number[] = [];
  for (let r = 0; r < 6; r++)
    for (let o = 0; o < 5; o++) {
      let s = b.data[o];
      for (let i = 0; i < 4; i++) s += x.data[r * 4 + i] * w.data[o * 4 + i];
      want.push(s);
    }
  assertClose(y.data, want, 1e-14, 1e-15);
  const y0 = F.linear(x, w);
  assertClose(y0.data, want.map((v, i) => v - b.data[i % 5]), 1e-13, 1e-14);
});

// ---------------------------------------------------------------- conv and pooling

test('conv2d matches a direct 7-loop convolution', () => {
  const rng = new Rng(11);
  for (const [stride, pad] of [[1, 0], [1, 1], [2, 0], [2, 1], [3, 2]]) {
    for (const bias of [true, false]) {
      const x = randT([2, 3, 7, 6], rng, { requiresGrad: false });
      const w = randT([4, 3, 3, 2], rng, { requiresGrad: false });
      const b = bias ? randT([4], rng, { requiresGrad: false }) : null;
      const y = F.conv2d(x, w, b, { stride, padding: pad });
      const r = refConv2d(x, w, b, stride, pad);
      assertShape(y, r.shape, `conv2d s${stride} p${pad} shape`);
      assertClose(y.data, r.data, 1e-13, 1e-14, `conv2d s${stride} p${pad}`);
    }
  }
});

test('maxPool2d and avgPool2d match direct loops', () => {
  const rng = new Rng(12);
  for (const [k, stride, pad] of [[2, 2, 0], [3, 2, 1], [3, 1, 1], [2, 1, 0], [3, 3, 0]]) {
    const x = distinctT([2, 2, 7, 6], rng, 'float64', false);
    const mp = F.maxPool2d(x, k, stride, pad);
    const rm = refPool(x, k, stride, pad, 'max');
    assertShape(mp, rm.shape);
    assertClose(mp.data, rm.data, 0, 0, `maxPool2d k${k} s${stride} p${pad}`);
    const ap = F.avgPool2d(x, k, stride, pad);
    const ra = refPool(x, k, stride, pad, 'avg');
    assertShape(ap, ra.shape);
    assertClose(ap.data, ra.data, 1e-14, 1e-15, `avgPool2d k${k} s${stride} p${pad}`);
  }
  // Default stride = kernel.
  assertShape(F.maxPool2d(randT([1, 1, 4, 4], rng), 2), [1, 1, 2, 2]);
});

test('adaptiveAvgPool2d uses PyTorch windows [floor(iH/O), ceil((i+1)H/O))', () => {
  // 1×1×5×1 → 3×1: windows rows {0,1}, {1,2,3}, {3,4}.
  const x = fromArray([1, 2, 3, 4, 5], [1, 1, 5, 1]);
  assertClose(F.adaptiveAvgPool2d(x, 3, 1).data, [1.5, 3, 4.5], 1e-15);
  // 7 → 3: [0,3), [2,5), [4,7).
  const y = fromArray([0, 1, 2, 3, 4, 5, 6], [1, 1, 1, 7]);
  assertClose(F.adaptiveAvgPool2d(y, 1, 3).data, [1, 3, 5], 1e-15);
  // Divisible sizes equal plain average pooling; 6×4 → 3×2 uses 2×2 windows.
  const z = randT([2, 3, 6, 4], new Rng(13), { requiresGrad: false });
  assertClose(F.adaptiveAvgPool2d(z, 3, 2).data, F.avgPool2d(z, 2).data, 1e-15);
  // 6×6 → 2×3: unequal window sizes (3×2).
  const a = F.adaptiveAvgPool2d(randT([1, 1, 6, 6], new Rng(14), { requiresGrad: false }), 2, 3);
  assertShape(a, [1, 1, 2, 3]);
  const src = randT([1, 1, 6, 6], new Rng(14), { requiresGrad: false });
  for (let i = 0; i < 2; i++)
    for (let j = 0; j < 3; j++) {
      let s = 0;
      for (let h = 3 * i; h < 3 * i + 3; h++) for (let w = 2 * j; w < 2 * j + 2; w++) s += src.data[h * 6 + w];
      assert.ok(Math.abs(a.data[i * 3 + j] - s / 6) < 1e-14);
    }
  // Global pooling = mean over H, W.
  const g = F.adaptiveAvgPool2d(z, 1);
  assertClose(g.data, F.mean(z, [2, 3]).data, 1e-14);
});

// ---------------------------------------------------------------- batch norm, dropout, softmax, losses

test('batchNorm training: batch statistics, affine, running stats (unbiased var, momentum 0.1)', () => {
  const rng = new Rng(15);
  for (const shape of [[6, 3], [4, 3, 2, 5]]) {
    const C = 3;
    const x = randT(shape, rng, { lo: -2, hi: 3, requiresGrad: false });
    const w = randT([C], rng, { requiresGrad: false });
    const b = randT([C], rng, { requiresGrad: false });
    const rm0 = [0.5, -0.2, 0.1];
    const rv0 = [1.5, 0.7, 1];
    const state = { runningMean: fromArray(rm0, [C]), runningVar: fromArray(rv0, [C]) };
    const y = F.batchNorm(x, w, b, state, { training: true });
    const S = shape.length === 4 ? shape[2] * shape[3] : 1;
    const N = shape[0];
    for (let c = 0; c < C; c++) {
      const vals: number[] = [];
      const pos: number[] = [];
      for (let n = 0; n < N; n++) for (let s = 0; s < S; s++) { pos.push((n * C + c) * S + s); vals.push(x.data[(n * C + c) * S + s]); }
      const M = vals.length;
      const mu = sumOf(vals) / M;
      const varB = sumOf(vals.map((v) => (v - mu) ** 2)) / M;
      const varU = (varB * M) / (M - 1);
      pos.forEach((p, i) => assert.ok(Math.abs(y.data[p] - ((vals[i] - mu) / Math.sqrt(varB + 1e-5) * w.data[c] + b.data[c])) < 1e-12));
      assert.ok(Math.abs(state.runningMean.data[c] - (0.9 * rm0[c] + 0.1 * mu)) < 1e-14, 'running mean');
      assert.ok(Math.abs(state.runningVar.data[c] - (0.9 * rv0[c] + 0.1 * varU)) < 1e-14, 'running var is unbiased');
    }
  }
  // Custom momentum and eps; no affine means γ = 1, β = 0: each channel has mean 0, biased var ≈ 1.
  const x = randT([8, 2], rng, { requiresGrad: false });
  const st = { runningMean: zeros([2], 'float64'), runningVar: ones([2], 'float64') };
  const y = F.batchNorm(x, null, null, st, { training: true, momentum: 0.5, eps: 0 });
  for (let c = 0; c < 2; c++) {
    const col = [0, 1, 2, 3, 4, 5, 6, 7].map((n) => y.data[n * 2 + c]);
    assert.ok(Math.abs(sumOf(col) / 8) < 1e-14);
    assert.ok(Math.abs(sumOf(col.map((v) => v * v)) / 8 - 1) < 1e-12);
    const xc = [0, 1, 2, 3, 4, 5, 6, 7].map((n) => x.data[n * 2 + c]);
    assert.ok(Math.abs(st.runningMean.data[c] - 0.5 * (sumOf(xc) / 8)) < 1e-14);
  }
});

test('batchNorm eval uses running statistics and leaves them alone', () => {
  const rng = new Rng(16);
  const x = randT([2, 2, 3, 3], rng, { requiresGrad: false });
  const w = fromArray([2, 0.5], [2]);
  const b = fromArray([1, -1], [2]);
  const state = { runningMean: fromArray([0.3, -0.1], [2]), runningVar: fromArray([2, 0.5], [2]) };
  const y = F.batchNorm(x, w, b, state, { training: false });
  for (let i = 0; i < x.size; i++) {
    const c = Math.floor(i / 9) % 2;
    const want = ((x.data[i] - state.runningMean.data[c]) / Math.sqrt(state.runningVar.data[c] + 1e-5)) * w.data[c] + b.data[c];
    assert.ok(Math.abs(y.data[i] - want) < 1e-13);
  }
  assert.deepEqual(Array.from(state.runningMean.data), [0.3, -0.1]);
  assert.deepEqual(Array.from(state.runningVar.data), [2, 0.5]);
  // Without state, eval falls back to batch statistics (track_running_stats=False).
  const yb = F.batchNorm(x, null, null, null, { training: false });
  const yt = F.batchNorm(x, null, null, null, { training: true });
  assertClose(yb.data, yt.data, 0, 0);
});

test('dropout: inverted scaling, drop rate, determinism, identity in eval', () => {
  const x = ones([20000], 'float64');
  const y = F.dropout(x, 0.3, new Rng(1), true);
  let zeros0 = 0;
  for (const v of y.data) {
    if (v === 0) zeros0++;
    else assert.ok(Math.abs(v - 1 / 0.7) < 1e-15);
  }
  assert.ok(Math.abs(zeros0 / 20000 - 0.3) < 0.015, `drop fraction ${zeros0 / 20000}`);
  assert.deepEqual(Array.from(F.dropout(x, 0.3, new Rng(1), true).data), Array.from(y.data), 'same seed, same mask');
  assert.equal(F.dropout(x, 0.3, new Rng(1), false), x);
  assert.equal(F.dropout(x, 0, new Rng(1), true), x);
});

test('logSoftmax, softmax and crossEntropy match hand formulas', () => {
  const rng = new Rng(17);
  const x = randT([4, 5], rng, { lo: -4, hi: 4, requiresGrad: false });
  const labels = Int32Array.from([4, 0, 2, 2]);
  const ls = F.logSoftmax(x);
  const sm = F.softmax(x);
  let ce = 0;
  for (let n = 0; n < 4; n++) {
    const row = Array.from(x.data.subarray(n * 5, n * 5 + 5));
    const lse = Math.log(sumOf(row.map(Math.exp)));
    row.forEach((v, c) => {
      assert.ok(Math.abs(ls.data[n * 5 + c] - (v - lse)) < 1e-14);
      assert.ok(Math.abs(sm.data[n * 5 + c] - Math.exp(v - lse)) < 1e-15);
    });
    ce -= row[labels[n]] - lse;
  }
  assert.ok(Math.abs(F.crossEntropy(x, labels).item() - ce / 4) < 1e-14);
  // Softmax along axis 0 of a 3-d tensor sums to 1 over that axis.
  const z = F.softmax(randT([3, 2, 4], rng, { requiresGrad: false }), 0);
  assertClose(F.sum(z, 0).data, new Array(8).fill(1), 1e-14);
  // Large logits: no overflow.
  assert.ok(Number.isFinite(F.crossEntropy(fromArray([1000, -1000, 0], [1, 3]), Int32Array.from([1])).item()));
  assert.ok(Math.abs(F.crossEntropy(fromArray([1000, -1000, 0], [1, 3]), Int32Array.from([1])).item() - 2000) < 1e-9);
  // Gradient: (softmax − onehot) / N.
  const xl = randT([3, 4], rng);
  F.crossEntropy(xl, Int32Array.from([1, 3, 0])).backward();
  const p = F.softmax(xl.detach());
  for (let n = 0; n < 3; n++) for (let c = 0; c < 4; c++) {
    const want = (p.data[n * 4 + c] - ([1, 3, 0][n] === c ? 1 : 0)) / 3;
    assert.ok(Math.abs(xl.grad!.data[n * 4 + c] - want) < 1e-15);
  }
});

test('mse is the mean squared difference', () => {
  const a = fromArray([1, 2, 3, 4], [2, 2]);
  const b = fromArray([1, 0, 5, 1], [2, 2]);
  assert.equal(F.mse(a, b).item(), (0 + 4 + 4 + 9) / 4);
  assertShape(F.mse(a, b), []);
});

// ---------------------------------------------------------------- noGrad

test('noGrad records nothing; its results have no node and need no grad', () => {
  const x = randT([3, 2], new Rng(18));
  const w = randT([4, 2], new Rng(19));
  assert.equal(isGradEnabled(), true);
  const y = noGrad(() => {
    assert.equal(isGradEnabled(), false);
    return F.sum(F.relu(F.linear(x, w)));
  });
  assert.equal(isGradEnabled(), true);
  assert.equal(y.node, null);
  assert.equal(y.requiresGrad, false);
  assert.throws(() => y.backward(), /does not require grad/);
  // Nested and exception-safe.
  assert.throws(() => noGrad(() => { throw new Error('boom'); }), /boom/);
  assert.equal(isGradEnabled(), true);
  noGrad(() => noGrad(() => 0));
  assert.equal(isGradEnabled(), true);
  // Outside noGrad a graph is recorded.
  const z = F.sum(F.mul(x, x));
  assert.ok(z.node && z.requiresGrad);
  assert.equal(F.add(x.detach(), x.detach()).node, null, 'ops on non-trainable inputs record nothing');
});

// ---------------------------------------------------------------- js vs native

const native = nativeBackend();
const skipNative = native ? false : `native backend not available (${nativeLoadError() ?? 'not loaded'})`;

/** Runs a case on one backend: output and gradients of Σ out ⊙ R, all in float32. */
function runOn(b: Backend, c: (typeof opCases)[number], seed: number): { out: Float32Array; shape: number[]; grads: (Float32Array | null)[] } {
  const prev = setBackend(b);
  try {
    const { inputs, fn } = c.build('float32', new Rng(seed));
    const out = fn(...inputs);
    const r = new Float32Array(out.size);
    new Rng(4321).fillNormal(r);
    if (out.requiresGrad) F.sum(F.mul(out, new Tensor(r, out.shape))).backward();
    return { out: Float32Array.from(out.data), shape: [...out.shape], grads: inputs.map((t) => (t.grad ? Float32Array.from(t.grad.data) : null)) };
  } finally {
    setBackend(prev);
  }
}

/** float32 agreement, scaled by the magnitude of the reference. */
function close32(a: Float32Array, b: Float32Array, what: string): void {
  let scale = 1;
  for (const v of b) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
  assertClose(a, b, 1e-4, 1e-5 * scale, what);
}

const wasm = wasmBackend();
/** The compiled backends compared with js, each skipped (with the reason) when it cannot load. */
const compiledBackends = [
  { name: 'native', backend: native, skip: skipNative },
  { name: 'wasm', backend: wasm, skip: wasm ? false : `wasm backend not available (${wasmLoadError() ?? 'not loaded'})` },
] as const;

for (const { name, backend, skip } of compiledBackends) test(`js and ${name} backends agree on every op (float32, forward and backward)`, { skip }, () => {
  assert.equal(currentBackend(), jsBackend);
  opCases.forEach((c, i) => {
    const j = runOn(jsBackend, c, 1000 + i);
    const n = runOn(backend!, c, 1000 + i);
    assert.deepEqual(n.shape, j.shape, `${c.name}: shape`);
    close32(n.out, j.out, `${c.name}: forward`);
    j.grads.forEach((g, gi) => {
      if (!g) { assert.equal(n.grads[gi], null, `${c.name}: grad ${gi} should be null`); return; }
      close32(n.grads[gi]!, g, `${c.name}: grad of input ${gi}`);
    });
  });
});

for (const { name, backend: compiled, skip } of compiledBackends) test(`js and ${name} kernels agree on solve, sinkhornLog, optimiser steps`, { skip }, () => {
  const K = compiled!.kernels;
  const jsKernels = jsBackend.kernels;
  const rng = new Rng(20);
  // solve: a well-conditioned system, float32 and float64.
  for (const make of [(n: number) => new Float32Array(n), (n: number) => new Float64Array(n)]) {
    const n = 5;
    const A = make(n * n);
    const B = make(n * 2);
    rng.fillNormal(A);
    for (let i = 0; i < n; i++) A[i * n + i] += 5;
    rng.fillNormal(B);
    const [Aj, Bj, An, Bn] = [A.slice(), B.slice(), A.slice(), B.slice()];
    assert.equal(jsKernels.solve(n, 2, Aj, Bj), 'lu');
    assert.equal(K.solve(n, 2, An, Bn), 'lu');
    assertClose(Bn, Bj, 1e-4, 1e-5, 'solve');
  }
  // sinkhornLog on a batch of 2 rectangular problems with marginals.
  const logP = new Float32Array(2 * 3 * 4);
  rng.fillNormal(logP);
  const logA = Float32Array.from([-1, -1.2, -0.9]);
  const logB = Float32Array.from([-1.4, -1.3, -1.5, -1.35]);
  const [pj, pn] = [logP.slice(), logP.slice()];
  jsKernels.sinkhornLog(pj, 2, 3, 4, 20, logA, logB);
  K.sinkhornLog(pn, 2, 3, 4, 20, logA, logB);
  assertClose(pn, pj, 1e-4, 1e-4, 'sinkhornLog');
  // Optimiser steps through the public classes.
  for (const mk of [(p: Tensor[]) => new AdamW(p, { lr: 0.01 }), (p: Tensor[]) => new SGD(p, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 })]) {
    const res: Float32Array[] = [];
    for (const b of [jsBackend, compiled!]) {
      const prev = setBackend(b);
      const p = new Tensor(Float32Array.from([0.5, -1, 2, 0.1]), [4], true);
      const opt = mk([p]);
      for (let s = 0; s < 5; s++) {
        p.grad = new Tensor(Float32Array.from([0.1 * s, -0.2, 0.3, s % 2]), [4]);
        opt.step();
      }
      setBackend(prev);
      res.push(p.data as Float32Array);
    }
    assertClose(res[1], res[0], 1e-5, 1e-6, 'optimiser step');
  }
});

test('js gemm: the matrix–vector path (N = 1) matches the definition, strided or transposed B, offsets, alpha/beta', () => {
  const rng = new Rng(22);
  const gemm = jsBackend.kernels.gemm;
  for (const [M, K] of [[5, 7], [1, 3], [4, 1]]) {
    for (const transB of [false, true]) {
      for (const ldb of transB ? [K, K + 2] : [1, 3]) {
        const lda = K + 1;
        const A = new Float64Array(2 + M * lda), B = new Float64Array(1 + K * ldb), C = new Float64Array(3 + M * 2);
        rng.fillNormal(A); rng.fillNormal(B); rng.fillNormal(C);
        const want = Float64Array.from(C);
        for (let i = 0; i < M; i++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += A[2 + i * lda + k] * B[1 + (transB ? k : k * ldb)];
          want[3 + i * 2] = 0.5 * s + 2 * C[3 + i * 2];
        }
        gemm(false, transB, M, 1, K, 0.5, A, 2, lda, B, 1, ldb, 2, C, 3, 2);
        assertClose(C, want, 1e-12, 1e-12, `M=${M} K=${K} transB=${transB} ldb=${ldb}`);
      }
    }
  }
});

test('native availability is reported', () => {
  if (!native) {
    // Visible in the test log so a missing addon is not silently ignored.
    console.log(`# native backend skipped: ${nativeLoadError() ?? 'not loaded'}`);
    assert.ok(nativeLoadError() !== null || process.env.REBASIN_BACKEND === 'js' || process.env.REBASIN_BACKEND === 'wasm');
  } else {
    assert.equal(native.name, 'native');
  }
});
