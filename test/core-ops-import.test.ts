/**
 * The ops ONNX import needs (issue 11): activations, pow/minimum/where/clip, multi-axis max/min,
 * variance, gather/expand/split/tile, general conv2d (stride, asymmetric padding, dilation, groups,
 * depthwise), pad, pool2d, resize, layer/instance/group norm, broadcast matmul, softmax on any axis.
 * Each case is checked three ways: forward against a reference written here with direct loops (on
 * every backend that loads, float32 and float64), gradients against central finite differences
 * (float64, js kernels), and float32 gradients on every backend against the float64 ones.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsBackend, nativeBackend, setBackend } from '../src/core/backend/index.js';
import type { Backend } from '../src/core/backend/types.js';
import * as F from '../src/core/ops/index.js';
import { Rng } from '../src/core/random.js';
import { numel, type DType, type Shape, Tensor } from '../src/core/tensor.js';
import { gradcheck } from './helpers/gradcheck.js';
import { assertClose, distinctT, fromArray, randT, ravel, unravel } from './helpers/tensors.js';

setBackend(jsBackend);

const backends: Backend[] = [jsBackend, ...(nativeBackend() ? [nativeBackend()!] : [])];

// ---------------------------------------------------------------- reference helpers

interface Ref { shape: number[]; data: number[] }

/** Builds a reference output by evaluating f at every multi-index of `shape`. */
function mk(shape: number[], f: (idx: number[]) => number): Ref {
  const n = numel(shape);
  const data: number[] = [];
  for (let i = 0; i < n; i++) data.push(f(unravel(i, shape)));
  return { shape, data };
}

function at(t: Tensor, idx: number[]): number {
  return t.data[ravel(idx, t.shape)];
}

/** Reads t at an index of a broadcast shape (NumPy rules). */
function bat(t: Tensor, idx: number[]): number {
  const off = idx.length - t.ndim;
  return t.data[ravel(t.shape.map((d, i) => (d === 1 ? 0 : idx[off + i])), t.shape)];
}

function bshape(...shapes: Shape[]): number[] {
  const nd = Math.max(...shapes.map((s) => s.length));
  return Array.from({ length: nd }, (_, i) => Math.max(...shapes.map((s) => s[i - (nd - s.length)] ?? 1)));
}

function mapRef(x: Tensor, f: (v: number) => number): Ref {
  return { shape: [...x.shape], data: Array.from(x.data, f) };
}

/** erf by composite Simpson integration of 2/√π e^{−t²} (independent of the series in the op). */
function erfRef(x: number): number {
  const n = 2000;
  const h = x / n;
  let s = 1 + Math.exp(-x * x);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * Math.exp(-(i * h) * (i * h));
  return ((2 / Math.sqrt(Math.PI)) * h * s) / 3;
}

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));
const softplus = (v: number) => Math.log(1 + Math.exp(v));

// ---------------------------------------------------------------- the cases

interface Case {
  name: string;
  build: (dtype: DType, rng: Rng) => { inputs: Tensor[]; fn: (...xs: Tensor[]) => Tensor };
  /** Reference output from the same inputs (read in float64). */
  ref: (...xs: Tensor[]) => Ref;
}

const cases: Case[] = [];
const add = (c: Case) => cases.push(c);
const u = [2, 3, 4];

function unary(name: string, fn: (x: Tensor) => Tensor, f: (v: number) => number, lo = -3, hi = 3, avoid: number[] = []): void {
  add({ name, build: (dtype, rng) => ({ inputs: [randT(u, rng, { dtype, lo, hi, avoid, margin: 0.05 })], fn }), ref: (x) => mapRef(x, f) });
}

unary('erf', F.erf, erfRef, -3.5, 3.5);
unary('gelu', (x) => F.gelu(x), (v) => 0.5 * v * (1 + erfRef(v / Math.SQRT2)), -4, 4);
unary('gelu tanh', (x) => F.gelu(x, 'tanh'), (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))), -4, 4);
unary('leakyRelu 0.1', (x) => F.leakyRelu(x, 0.1), (v) => (v > 0 ? v : 0.1 * v), -3, 3, [0]);
unary('elu 0.7', (x) => F.elu(x, 0.7), (v) => (v > 0 ? v : 0.7 * (Math.exp(v) - 1)), -3, 3, [0]);
unary('selu', F.selu, (v) => 1.05070102214813232421875 * (v > 0 ? v : 1.67326319217681884765625 * (Math.exp(v) - 1)), -3, 3, [0]);
unary('softplus', F.softplus, softplus, -6, 6);
unary('softplus large', F.softplus, (v) => v + Math.log1p(Math.exp(-v)), 30, 60);
unary('hardSigmoid (ONNX defaults)', (x) => F.hardSigmoid(x), (v) => Math.min(1, Math.max(0, 0.2 * v + 0.5)), -4, 4, [-2.5, 2.5]);
unary('hardSigmoid 1/6', (x) => F.hardSigmoid(x, 1 / 6, 0.5), (v) => Math.min(1, Math.max(0, v / 6 + 0.5)), -4, 4, [-3, 3]);
unary('hardSwish', F.hardSwish, (v) => (v * Math.min(6, Math.max(0, v + 3))) / 6, -5, 5, [-3, 3]);
unary('silu', F.silu, (v) => v * sigmoid(v), -5, 5);
unary('mish', F.mish, (v) => v * Math.tanh(softplus(v)), -5, 5);
unary('reciprocal', F.reciprocal, (v) => 1 / v, -3, 3, [0]);
unary('sin', F.sin, Math.sin, -4, 4);
unary('cos', F.cos, Math.cos, -4, 4);
unary('clip both', (x) => F.clip(x, -0.5, 0.7), (v) => Math.min(0.7, Math.max(-0.5, v)), -2, 2, [-0.5, 0.7]);
unary('clip lower only', (x) => F.clip(x, -0.5, null), (v) => Math.max(-0.5, v), -2, 2, [-0.5]);
unary('clip upper only (-Infinity lower)', (x) => F.clip(x, -Infinity, 0.3), (v) => Math.min(0.3, v), -2, 2, [0.3]);

function binary(name: string, sa: number[], sb: number[], fn: (a: Tensor, b: Tensor) => Tensor, f: (a: number, b: number) => number,
  oa: { lo?: number; hi?: number } = {}, ob: { lo?: number; hi?: number } = {}): void {
  add({
    name: `${name} [${sa}] & [${sb}]`,
    build: (dtype, rng) => ({ inputs: [randT(sa, rng, { dtype, ...oa }), randT(sb, rng, { dtype, ...ob })], fn }),
    ref: (a, b) => mk(bshape(a.shape, b.shape), (idx) => f(bat(a, idx), bat(b, idx))),
  });
}
binary('pow', [2, 3], [3], F.pow, Math.pow, { lo: 0.3, hi: 2 }, { lo: -2, hi: 2 });
binary('pow', [2, 1, 3], [4, 1], F.pow, Math.pow, { lo: 0.5, hi: 1.5 });
add({
  name: 'pow with a negative base and integer exponents (base grad only)',
  build: (dtype, rng) => ({
    inputs: [randT([2, 3], rng, { dtype, lo: -2, hi: 2 }), fromArray([2, 3, 1], [3], dtype, false)],
    fn: F.pow,
  }),
  ref: (a, b) => mk([2, 3], (idx) => Math.pow(bat(a, idx), bat(b, idx))),
});
for (const [sa, sb] of [[[2, 3], [2, 3]], [[2, 1, 3], [4, 1]], [[], [3]]]) {
  add({
    name: `minimum [${sa}] & [${sb}]`,
    build: (dtype, rng) => {
      for (;;) {
        const a = randT(sa, rng, { dtype });
        const b = randT(sb, rng, { dtype });
        const s = bshape(a.shape, b.shape);
        if (mk(s, (idx) => Math.abs(bat(a, idx) - bat(b, idx))).data.every((d) => d > 0.05)) return { inputs: [a, b], fn: F.minimum };
      }
    },
    ref: (a, b) => mk(bshape(a.shape, b.shape), (idx) => Math.min(bat(a, idx), bat(b, idx))),
  });
}
add({
  name: 'where (cond broadcast over a and b)',
  build: (dtype, rng) => ({
    inputs: [fromArray([1, 0, 0, 1], [4, 1], dtype), randT([4, 3], rng, { dtype }), randT([3], rng, { dtype })],
    fn: F.where,
  }),
  ref: (c, a, b) => mk([4, 3], (idx) => (bat(c, idx) !== 0 ? bat(a, idx) : bat(b, idx))),
});
add({
  name: 'prelu with a per-channel slope',
  build: (dtype, rng) => ({ inputs: [randT([2, 3, 2, 2], rng, { dtype, avoid: [0] }), randT([3, 1, 1], rng, { dtype })], fn: F.prelu }),
  ref: (x, s) => mk([2, 3, 2, 2], (idx) => (at(x, idx) >= 0 ? at(x, idx) : bat(s, idx) * at(x, idx))),
});

// Reductions over several axes.
function reduceRef(x: Tensor, axes: number[], keepdim: boolean, f: (vals: number[]) => number): Ref {
  const shape = x.shape.flatMap((d, i) => (axes.includes(i) ? (keepdim ? [1] : []) : [d]));
  const groups = new Map<string, number[]>();
  for (let i = 0; i < x.size; i++) {
    const key = unravel(i, x.shape).filter((_, d) => !axes.includes(d)).join(',');
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push(x.data[i]);
  }
  return { shape, data: [...groups.values()].map(f) };
}
for (const keepdim of [false, true]) {
  for (const axes of [[0, 2], [1, -1], [0, 1, 2]]) {
    const norm = axes.map((a) => (a + 3) % 3);
    add({
      name: `max axes [${axes}] keepdim=${keepdim}`,
      build: (dtype, rng) => ({ inputs: [distinctT([2, 3, 4], rng, dtype)], fn: (x) => F.max(x, axes, keepdim) }),
      ref: (x) => reduceRef(x, norm, keepdim, (v) => Math.max(...v)),
    });
    add({
      name: `min axes [${axes}] keepdim=${keepdim}`,
      build: (dtype, rng) => ({ inputs: [distinctT([2, 3, 4], rng, dtype)], fn: (x) => F.min(x, axes, keepdim) }),
      ref: (x) => reduceRef(x, norm, keepdim, (v) => Math.min(...v)),
    });
    for (const correction of [0, 1]) {
      add({
        name: `variance axes [${axes}] keepdim=${keepdim} correction=${correction}`,
        build: (dtype, rng) => ({ inputs: [randT([2, 3, 4], rng, { dtype })], fn: (x) => F.variance(x, axes, keepdim, correction) }),
        ref: (x) => reduceRef(x, norm, keepdim, (v) => {
          const m = v.reduce((p, c) => p + c, 0) / v.length;
          return v.reduce((p, c) => p + (c - m) ** 2, 0) / (v.length - correction);
        }),
      });
    }
  }
}
add({
  name: 'max over all axes (axes omitted)',
  build: (dtype, rng) => ({ inputs: [distinctT([3, 4], rng, dtype)], fn: (x) => F.max(x) }),
  ref: (x) => ({ shape: [], data: [Math.max(...x.data)] }),
});
add({
  name: 'min over one axis',
  build: (dtype, rng) => ({ inputs: [distinctT([3, 4], rng, dtype)], fn: (x) => F.min(x, 1) }),
  ref: (x) => reduceRef(x, [1], false, (v) => Math.min(...v)),
});

// Shape ops.
const gIdx = [2, -1, 0, 2, -4, 1];
add({
  name: 'gather axis 1 with a 2-d index (negative indices wrap)',
  build: (dtype, rng) => ({ inputs: [randT([2, 4, 3], rng, { dtype })], fn: (x) => F.gather(x, 1, Int32Array.from(gIdx), [2, 3]) }),
  ref: (x) => mk([2, 2, 3, 3], ([a, i, j, c]) => at(x, [a, (gIdx[i * 3 + j] + 4) % 4, c])),
});
add({
  name: 'gather axis 0 (embedding rows), scalar index shape',
  build: (dtype, rng) => ({ inputs: [randT([5, 3], rng, { dtype })], fn: (x) => F.gather(x, 0, [3], []) }),
  ref: (x) => mk([3], ([c]) => at(x, [3, c])),
});
add({
  name: 'expand [3, 1] to [2, 3, 4]',
  build: (dtype, rng) => ({ inputs: [randT([3, 1], rng, { dtype })], fn: (x) => F.expand(x, [2, 3, 4]) }),
  ref: (x) => mk([2, 3, 4], (idx) => bat(x, idx)),
});
add({
  name: 'expand with a shorter target (bidirectional broadcast)',
  build: (dtype, rng) => ({ inputs: [randT([2, 1, 3], rng, { dtype })], fn: (x) => F.expand(x, [4, 1]) }),
  ref: (x) => mk([2, 4, 3], (idx) => bat(x, idx)),
});
for (const piece of [0, 1, 2]) {
  add({
    name: `split axis 1 into [1, 3, 2], piece ${piece}`,
    build: (dtype, rng) => ({ inputs: [randT([2, 6, 2], rng, { dtype })], fn: (x) => F.split(x, 1, [1, 3, 2])[piece] }),
    ref: (x) => mk([2, [1, 3, 2][piece], 2], ([a, i, c]) => at(x, [a, [0, 1, 4][piece] + i, c])),
  });
}
add({
  name: 'tile [2, 3] by [2, 3]',
  build: (dtype, rng) => ({ inputs: [randT([2, 3], rng, { dtype })], fn: (x) => F.tile(x, [2, 3]) }),
  ref: (x) => mk([4, 9], ([i, j]) => at(x, [i % 2, j % 3])),
});

// Convolutions: a direct reference over every output and tap.
interface ConvCfg { stride?: number | [number, number]; padding?: number | [number, number, number, number]; dilation?: number | [number, number]; groups?: number; relu?: boolean }
function convRef(x: Tensor, w: Tensor, b: Tensor | null, o: ConvCfg): Ref {
  const [N, , H, W] = x.shape;
  const [O, Cg, KH, KW] = w.shape;
  const [sh, sw] = typeof o.stride === 'object' ? o.stride : [o.stride ?? 1, o.stride ?? 1];
  const [pt, pl, pb, pr] = typeof o.padding === 'object' ? o.padding : [0, 0, 0, 0].map(() => (o.padding as number) ?? 0);
  const [dh, dw] = typeof o.dilation === 'object' ? o.dilation : [o.dilation ?? 1, o.dilation ?? 1];
  const G = o.groups ?? 1;
  const OH = Math.floor((H + pt + pb - (KH - 1) * dh - 1) / sh) + 1;
  const OW = Math.floor((W + pl + pr - (KW - 1) * dw - 1) / sw) + 1;
  return mk([N, O, OH, OW], ([n, oc, oh, ow]) => {
    const g = Math.floor(oc / (O / G));
    let s = b ? b.data[oc] : 0;
    for (let c = 0; c < Cg; c++) {
      for (let kh = 0; kh < KH; kh++) {
        for (let kw = 0; kw < KW; kw++) {
          const ih = oh * sh - pt + kh * dh;
          const iw = ow * sw - pl + kw * dw;
          if (ih >= 0 && ih < H && iw >= 0 && iw < W) s += at(x, [n, g * Cg + c, ih, iw]) * at(w, [oc, c, kh, kw]);
        }
      }
    }
    return o.relu ? Math.max(0, s) : s;
  });
}
const convCases: [string, number[], number[], boolean, ConvCfg][] = [
  ['fast path: stride 2, padding 1', [2, 3, 6, 5], [4, 3, 3, 3], true, { stride: 2, padding: 1 }],
  ['asymmetric padding [0, 1, 2, 1]', [2, 3, 5, 5], [4, 3, 3, 2], true, { padding: [0, 1, 2, 1] }],
  ['asymmetric padding, stride 2, fused relu', [1, 2, 6, 6], [3, 2, 3, 3], true, { stride: 2, padding: [1, 1, 0, 0], relu: true }],
  ['rectangular stride [1, 2]', [2, 2, 5, 6], [3, 2, 3, 3], false, { stride: [1, 2], padding: 1 }],
  ['dilation 2', [1, 3, 7, 6], [2, 3, 3, 2], true, { dilation: 2, padding: 2 }],
  ['dilation [2, 1], stride [2, 1], asymmetric padding', [2, 2, 7, 5], [3, 2, 2, 3], true, { dilation: [2, 1], stride: [2, 1], padding: [1, 0, 0, 2] }],
  ['groups 2', [2, 4, 5, 5], [6, 2, 3, 3], true, { groups: 2, padding: 1 }],
  ['groups 3, stride 2, fused relu', [1, 6, 6, 5], [3, 2, 3, 3], true, { groups: 3, stride: 2, padding: 1, relu: true }],
  ['depthwise 3×3', [2, 4, 5, 6], [4, 1, 3, 3], true, { groups: 4, padding: 1 }],
  ['depthwise 3×3 stride 2 (MobileNet)', [1, 3, 7, 7], [3, 1, 3, 3], false, { groups: 3, stride: 2, padding: 1 }],
  ['depthwise 7×7 padding 3 (ConvNeXt)', [1, 2, 8, 8], [2, 1, 7, 7], true, { groups: 2, padding: 3 }],
  ['depthwise with channel multiplier 2, dilation 2', [1, 2, 6, 6], [4, 1, 3, 3], true, { groups: 2, dilation: 2, padding: [2, 1, 2, 1] }],
  ['depthwise asymmetric "same" padding, stride 2', [2, 3, 6, 6], [3, 1, 3, 3], true, { groups: 3, stride: 2, padding: [0, 0, 1, 1] }],
];
for (const [label, xs, ws, bias, cfg] of convCases) {
  add({
    name: `conv2d ${label}`,
    build: (dtype, rng) => {
      const inputs = [randT(xs, rng, { dtype }), randT(ws, rng, { dtype })];
      if (bias) inputs.push(randT([ws[0]], rng, { dtype }));
      return { inputs, fn: (x, w, b) => F.conv2d(x, w, b ?? null, cfg) };
    },
    ref: (x, w, b) => convRef(x, w, b ?? null, cfg),
  });
}

// Pad: the source of each output cell computed independently (reflect by bouncing).
function padSrc(i: number, len: number, mode: string): number {
  if (i >= 0 && i < len) return i;
  if (mode === 'constant') return -1;
  if (mode === 'edge') return i < 0 ? 0 : len - 1;
  let j = i;
  while (j < 0 || j >= len) j = j < 0 ? -j : 2 * (len - 1) - j;
  return j;
}
const padCases: [number[], number[], 'constant' | 'reflect' | 'edge'][] = [
  [[2, 3, 4], [0, 1, 2, 1, 0, 3], 'constant'],
  [[2, 3, 4], [1, -1, 0, 0, 2, -2], 'constant'],
  [[1, 2, 4, 5], [0, 0, 2, 3, 0, 0, 3, 1], 'reflect'],
  [[1, 2, 4, 5], [0, 0, 3, 1, 0, 0, 2, 4], 'edge'],
  [[5], [-2, 3], 'edge'],
];
for (const [xs, pads, mode] of padCases) {
  const value = mode === 'constant' ? 1.5 : 0;
  add({
    name: `pad ${mode} [${pads}] on [${xs}]`,
    build: (dtype, rng) => ({ inputs: [randT(xs, rng, { dtype })], fn: (x) => F.pad(x, pads, value, mode) }),
    ref: (x) => {
      const nd = x.ndim;
      const shape = x.shape.map((d, i) => d + pads[i] + pads[i + nd]);
      return mk(shape, (idx) => {
        const src = idx.map((o, d) => padSrc(o - pads[d], x.shape[d], mode));
        return src.some((s) => s < 0) ? value : at(x, src);
      });
    },
  });
}

// Pooling, reference after PyTorch's formulas (window start/end, clipped to the padded input).
interface PoolCfg { kind: 'max' | 'avg'; kernel: [number, number]; stride?: [number, number]; padding?: [number, number, number, number]; dilation?: [number, number]; ceilMode?: boolean; countIncludePad?: boolean }
function poolRef(x: Tensor, o: PoolCfg): Ref {
  const [N, C, H, W] = x.shape;
  const [kh, kw] = o.kernel;
  const [sh, sw] = o.stride ?? [1, 1];
  const [pt, pl, pb, pr] = o.padding ?? [0, 0, 0, 0];
  const [dh, dw] = o.dilation ?? [1, 1];
  const size = (len: number, k: number, s: number, p0: number, p1: number, d: number) => {
    const r = (len + p0 + p1 - d * (k - 1) - 1) / s;
    let n = (o.ceilMode ? Math.ceil(r) : Math.floor(r)) + 1;
    if (o.ceilMode && (n - 1) * s >= len + p0) n--;
    return n;
  };
  const OH = size(H, kh, sh, pt, pb, dh);
  const OW = size(W, kw, sw, pl, pr, dw);
  return mk([N, C, OH, OW], ([n, c, oh, ow]) => {
    const vals: number[] = [];
    let padded = 0;
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const ih = oh * sh - pt + i * dh;
        const iw = ow * sw - pl + j * dw;
        if (ih >= -pt && ih < H + pb && iw >= -pl && iw < W + pr) padded++;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W) vals.push(at(x, [n, c, ih, iw]));
      }
    }
    if (o.kind === 'max') return Math.max(...vals);
    return vals.reduce((p, v) => p + v, 0) / (o.countIncludePad ? padded : vals.length);
  });
}
const poolCases: PoolCfg[] = [
  { kind: 'max', kernel: [3, 3], stride: [2, 2], padding: [1, 1, 1, 1] }, // ResNet stem (kernel path)
  { kind: 'max', kernel: [2, 3], stride: [2, 1], padding: [0, 1, 1, 0] },
  { kind: 'max', kernel: [3, 3], stride: [2, 2], ceilMode: true },
  { kind: 'max', kernel: [2, 2], stride: [1, 1], dilation: [2, 2], padding: [1, 1, 1, 1] },
  { kind: 'avg', kernel: [2, 2], stride: [2, 2] }, // DenseNet transition (kernel path)
  { kind: 'avg', kernel: [3, 3], stride: [1, 1], padding: [1, 1, 1, 1], countIncludePad: true }, // kernel path
  { kind: 'avg', kernel: [3, 3], stride: [1, 1], padding: [1, 1, 1, 1], countIncludePad: false },
  { kind: 'avg', kernel: [3, 2], stride: [2, 2], padding: [1, 0, 1, 1], ceilMode: true, countIncludePad: true },
  { kind: 'avg', kernel: [3, 3], stride: [2, 2], padding: [1, 1, 1, 1], ceilMode: true, countIncludePad: false },
  { kind: 'avg', kernel: [2, 2], stride: [1, 2], dilation: [2, 1], countIncludePad: false },
];
for (const cfg of poolCases) {
  add({
    name: `pool2d ${JSON.stringify(cfg)}`,
    build: (dtype, rng) => ({ inputs: [distinctT([2, 2, 6, 7], rng, dtype)], fn: (x) => F.pool2d(x, cfg) }),
    ref: (x) => poolRef(x, cfg),
  });
}

// Resize.
for (const [H, W, OH, OW] of [[3, 4, 6, 8], [4, 6, 3, 4], [3, 3, 7, 5], [5, 4, 1, 1]]) {
  add({
    name: `resizeNearest ${H}×${W} → ${OH}×${OW}`,
    build: (dtype, rng) => ({ inputs: [randT([2, 2, H, W], rng, { dtype })], fn: (x) => F.resizeNearest(x, OH, OW) }),
    ref: (x) => mk([2, 2, OH, OW], ([n, c, i, j]) => at(x, [n, c, Math.floor((i * H) / OH), Math.floor((j * W) / OW)])),
  });
  for (const alignCorners of [false, true]) {
    add({
      name: `resizeBilinear ${H}×${W} → ${OH}×${OW} alignCorners=${alignCorners}`,
      build: (dtype, rng) => ({ inputs: [randT([2, 2, H, W], rng, { dtype })], fn: (x) => F.resizeBilinear(x, OH, OW, alignCorners) }),
      ref: (x) => {
        // Interpolate along each axis with the PyTorch formula, clamping the coordinate into [0, len − 1].
        const coord = (o: number, len: number, out: number) => {
          const s = alignCorners ? (out > 1 ? (o * (len - 1)) / (out - 1) : 0) : Math.max(0, ((o + 0.5) * len) / out - 0.5);
          return Math.min(s, len - 1);
        };
        const lerp = (read: (k: number) => number, s: number) => {
          const k = Math.floor(s);
          const t = s - k;
          return t === 0 ? read(k) : (1 - t) * read(k) + t * read(k + 1);
        };
        return mk([2, 2, OH, OW], ([n, c, i, j]) => lerp((h) => lerp((w) => at(x, [n, c, h, w]), coord(j, W, OW)), coord(i, H, OH)));
      },
    });
  }
}

// Normalisations.
function normRows(x: Tensor, rowOf: (idx: number[]) => string, eps: number, affineOf: (idx: number[]) => [number, number]): Ref {
  const rows = new Map<string, number[]>();
  for (let i = 0; i < x.size; i++) {
    const k = rowOf(unravel(i, x.shape));
    if (!rows.has(k)) rows.set(k, []);
    rows.get(k)!.push(x.data[i]);
  }
  const stats = new Map([...rows].map(([k, v]) => {
    const m = v.reduce((p, c) => p + c, 0) / v.length;
    const s2 = v.reduce((p, c) => p + (c - m) ** 2, 0) / v.length;
    return [k, [m, Math.sqrt(s2 + eps)]];
  }));
  return mk([...x.shape], (idx) => {
    const [m, sd] = stats.get(rowOf(idx))!;
    const [wt, bs] = affineOf(idx);
    return ((at(x, idx) - m) / sd) * wt + bs;
  });
}
add({
  name: 'layerNorm last axis with weight and bias',
  build: (dtype, rng) => ({ inputs: [randT([2, 3, 5], rng, { dtype }), randT([5], rng, { dtype }), randT([5], rng, { dtype })], fn: (x, w, b) => F.layerNorm(x, 1, w, b, 1e-5) }),
  ref: (x, w, b) => normRows(x, (i) => i.slice(0, 2).join(), 1e-5, (i) => [w.data[i[2]], b.data[i[2]]]),
});
add({
  name: 'layerNorm last 2 axes, weight only, eps 1e-3',
  build: (dtype, rng) => ({ inputs: [randT([3, 2, 4], rng, { dtype }), randT([2, 4], rng, { dtype })], fn: (x, w) => F.layerNorm(x, 2, w, null, 1e-3) }),
  ref: (x, w) => normRows(x, (i) => String(i[0]), 1e-3, (i) => [at(w, i.slice(1)), 0]),
});
add({
  name: 'layerNorm without affine',
  build: (dtype, rng) => ({ inputs: [randT([4, 6], rng, { dtype })], fn: (x) => F.layerNorm(x, 1) }),
  ref: (x) => normRows(x, (i) => String(i[0]), 1e-5, () => [1, 0]),
});
add({
  name: 'instanceNorm [2, 3, 3, 4]',
  build: (dtype, rng) => ({ inputs: [randT([2, 3, 3, 4], rng, { dtype }), randT([3], rng, { dtype }), randT([3], rng, { dtype })], fn: (x, w, b) => F.instanceNorm(x, w, b, 1e-5) }),
  ref: (x, w, b) => normRows(x, (i) => i.slice(0, 2).join(), 1e-5, (i) => [w.data[i[1]], b.data[i[1]]]),
});
add({
  name: 'groupNorm 2 groups of [2, 4, 3, 2]',
  build: (dtype, rng) => ({ inputs: [randT([2, 4, 3, 2], rng, { dtype }), randT([4], rng, { dtype }), randT([4], rng, { dtype })], fn: (x, w, b) => F.groupNorm(x, 2, w, b, 1e-5) }),
  ref: (x, w, b) => normRows(x, (i) => `${i[0]},${Math.floor(i[1] / 2)}`, 1e-5, (i) => [w.data[i[1]], b.data[i[1]]]),
});

for (const training of [false, true]) {
  add({
    name: `batchNorm on [N, C, L] (BatchNorm1d over a sequence), training=${training}`,
    build: (dtype, rng) => {
      const state = { runningMean: randT([3], rng, { dtype, requiresGrad: false }), runningVar: randT([3], rng, { dtype, lo: 0.5, hi: 2, requiresGrad: false }) };
      return {
        inputs: [randT([2, 3, 4], rng, { dtype }), randT([3], rng, { dtype }), randT([3], rng, { dtype }), state.runningMean, state.runningVar],
        // A fresh copy of the running stats each call: training updates them in place.
        fn: (x, w, b, rm, rv) => F.batchNorm(x, w, b, { runningMean: rm.clone(), runningVar: rv.clone() }, { training, eps: 1e-5 }),
      };
    },
    ref: (x, w, b, rm, rv) => (training
      ? channelStats(x, w, b)
      : mk([2, 3, 4], (i) => ((at(x, i) - rm.data[i[1]]) / Math.sqrt(rv.data[i[1]] + 1e-5)) * w.data[i[1]] + b.data[i[1]])),
  });
}

/** Batch-statistics normalisation per channel of [N, C, L] (population variance), then the affine map. */
function channelStats(x: Tensor, w: Tensor, b: Tensor): Ref {
  return normRows(x, (i) => String(i[1]), 1e-5, (i) => [w.data[i[1]], b.data[i[1]]]);
}

// Matmul with broadcast batch dims.
function matmulRef(a: Tensor, b: Tensor): Ref {
  const a2 = a.ndim === 1 ? [1, a.shape[0]] : a.shape.slice(-2);
  const b2 = b.ndim === 1 ? [b.shape[0], 1] : b.shape.slice(-2);
  const batch = bshape(a.ndim > 2 ? a.shape.slice(0, -2) : [], b.ndim > 2 ? b.shape.slice(0, -2) : []);
  const [m, k] = a2;
  const n = b2[1];
  const full = mk([...batch, m, n], (idx) => {
    const bi = idx.slice(0, -2);
    const [i, j] = idx.slice(-2);
    let s = 0;
    for (let t = 0; t < k; t++) {
      const av = a.ndim === 1 ? a.data[t] : bat(a, [...bi, i, t].slice(-Math.max(a.ndim, 2)));
      const bv = b.ndim === 1 ? b.data[t] : bat(b, [...bi, t, j].slice(-Math.max(b.ndim, 2)));
      s += av * bv;
    }
    return s;
  });
  const shape = [...batch, ...(a.ndim === 1 ? [] : [m]), ...(b.ndim === 1 ? [] : [n])];
  return { shape, data: full.data };
}
for (const [sa, sb] of [
  [[2, 3, 4, 5], [2, 3, 5, 4]], // attention scores [B, H, T, d] @ [B, H, d, T]
  [[2, 3, 4], [4, 5]], // [B, T, D] @ [D, E]
  [[4, 5], [2, 3, 5, 2]],
  [[2, 1, 3, 4], [3, 4, 2]], // partial broadcast: expand both
  [[1, 3, 4], [2, 4, 5]],
  [[4], [2, 4, 3]],
  [[2, 3, 4], [4]],
  [[4], [4]],
]) {
  add({
    name: `matmul [${sa}] @ [${sb}]`,
    build: (dtype, rng) => ({ inputs: [randT(sa, rng, { dtype }), randT(sb, rng, { dtype })], fn: F.matmul }),
    ref: matmulRef,
  });
}

// Softmax on any axis.
for (const axis of [0, 1, -1]) {
  for (const [name, fn] of [['softmax', F.softmax], ['logSoftmax', F.logSoftmax]] as const) {
    add({
      name: `${name} axis ${axis}`,
      build: (dtype, rng) => ({ inputs: [randT([2, 3, 4], rng, { dtype, lo: -3, hi: 3 })], fn: (x) => fn(x, axis) }),
      ref: (x) => {
        const a = (axis + 3) % 3;
        return mk([2, 3, 4], (idx) => {
          let s = 0;
          for (let k = 0; k < x.shape[a]; k++) s += Math.exp(at(x, idx.map((v, d) => (d === a ? k : v))));
          const p = Math.exp(at(x, idx)) / s;
          return name === 'softmax' ? p : Math.log(p);
        });
      },
    });
  }
}

// ---------------------------------------------------------------- the checks

/** Runs a case on one backend: output and the gradients of Σ out ⊙ R. */
function run(b: Backend, c: Case, dtype: DType, seed: number) {
  const prev = setBackend(b);
  try {
    const { inputs, fn } = c.build(dtype, new Rng(seed));
    const out = fn(...inputs);
    const r = new Float64Array(out.size);
    new Rng(77).fillNormal(r);
    const rt = new Tensor(dtype === 'float64' ? r : Float32Array.from(r), out.shape);
    if (out.requiresGrad) F.sum(F.mul(out, rt)).backward();
    return { inputs, out, grads: inputs.map((t) => (t.grad ? Float64Array.from(t.grad.data) : null)) };
  } finally {
    setBackend(prev);
  }
}

cases.forEach((c, i) => {
  const seed = 500 + i;
  test(`import op: ${c.name}`, () => {
    // Finite differences in float64 (the helper runs the js kernels).
    const { inputs, fn } = c.build('float64', new Rng(seed));
    assert.ok(gradcheck(fn, inputs).checked > 0);
    const exact = run(jsBackend, c, 'float64', seed);
    for (const b of backends) {
      for (const dtype of ['float64', 'float32'] as const) {
        const got = run(b, c, dtype, seed);
        const ref = c.ref(...got.inputs);
        assert.deepEqual([...got.out.shape], ref.shape, `${c.name} (${b.name}, ${dtype}): shape`);
        let scale = 1;
        for (const v of ref.data) scale = Math.max(scale, Math.abs(v));
        const tol = dtype === 'float64' ? 1e-9 : 1e-5;
        assertClose(got.out.data, ref.data, tol, tol * scale, `${c.name} (${b.name}, ${dtype}): forward`);
        got.grads.forEach((g, gi) => {
          const e = exact.grads[gi];
          if (!e) return assert.equal(g, null, `${c.name}: grad ${gi} should be null`);
          let gs = 1;
          for (const v of e) gs = Math.max(gs, Math.abs(v));
          assertClose(g!, e, tol * 10, tol * 10 * gs, `${c.name} (${b.name}, ${dtype}): grad of input ${gi}`);
        });
      }
    }
  });
});

// ---------------------------------------------------------------- fixed values and errors

test('erf and gelu match tabulated values to float32 accuracy and beyond', () => {
  // erf(x) to 16 digits (Abramowitz–Stegun table 7.1 / any CAS).
  const table: [number, number][] = [
    [0, 0], [1e-3, 0.0011283787909692363], [0.1, 0.1124629160182849], [0.5, 0.5204998778130465],
    [1, 0.8427007929497149], [1.5, 0.9661051464753108], [2, 0.9953222650189527], [2.5, 0.9995930479825550],
    [3, 0.9999779095030014], [4, 0.9999999845827421], [5, 0.9999999999984626], [-0.7, -0.6778011938374184],
  ];
  for (const [x, e] of table) {
    assert.ok(Math.abs(F.erfScalar(x) - e) < 1e-14, `erf(${x}) = ${F.erfScalar(x)}, expected ${e}`);
    assert.ok(Math.abs(F.erfScalar(-x) + e) < 1e-14, `erf is odd at ${x}`);
  }
  assert.equal(F.erfScalar(Infinity), 1);
  assert.equal(F.erfScalar(-40), -1);
  assert.ok(Number.isNaN(F.erfScalar(NaN)));
  // The fast table evaluation F.erf uses agrees with the series / continued fraction everywhere.
  let worst = 0;
  for (let x = -7; x <= 7; x += 0.00137) worst = Math.max(worst, Math.abs(F.erfFast(x) - F.erfScalar(x)));
  assert.ok(worst < 4e-15, `erfFast vs erfScalar: ${worst}`);
  for (const [x, e] of table) assert.ok(Math.abs(F.erfFast(x) - e) < 1e-14, `erfFast(${x})`);
  assert.ok(Number.isNaN(F.erfFast(NaN)) && F.erfFast(-Infinity) === -1);
  // Continuity across the switch between the series and the continued fraction.
  assert.ok(Math.abs(F.erfScalar(2 - 1e-12) - F.erfScalar(2)) < 1e-12);
  // gelu(1) = Φ(1) = 0.841344746068543, gelu(-1) = -(1 − Φ(1)).
  for (const b of backends) {
    const prev = setBackend(b);
    try {
      const y = F.gelu(fromArray([1, -1, 0, 3], [4], 'float32'));
      assertClose(y.data, [0.8413447460685429, -0.15865525393145707, 0, 2.995950177645179], 1e-7, 1e-7, `gelu on ${b.name}`);
    } finally {
      setBackend(prev);
    }
  }
});

test('ONNX MaxPool / AveragePool examples: ceil mode and pads', () => {
  // onnx/backend/test/case/node/maxpool.py "export_maxpool_2d_ceil": 4×4 input 1..16, kernel 3, stride 2, ceil.
  const x = fromArray(Array.from({ length: 16 }, (_, i) => i + 1), [1, 1, 4, 4]);
  assert.deepEqual(Array.from(F.pool2d(x, { kind: 'max', kernel: [3, 3], stride: [2, 2], ceilMode: true }).data), [11, 12, 15, 16]);
  // averagepool_2d_ceil: same geometry, averages over the cells inside the input.
  assert.deepEqual(Array.from(F.pool2d(x, { kind: 'avg', kernel: [3, 3], stride: [2, 2], ceilMode: true }).data), [6, 7.5, 12, 13.5]);
  // averagepool_2d_pads_count_include_pad (5×5 input 1..25, kernel 3, pads 2): corner = (1+2+6+7... )/9.
  const y = fromArray(Array.from({ length: 25 }, (_, i) => i + 1), [1, 1, 5, 5]);
  const inc = F.pool2d(y, { kind: 'avg', kernel: [3, 3], padding: [2, 2, 2, 2], countIncludePad: true });
  const exc = F.pool2d(y, { kind: 'avg', kernel: [3, 3], padding: [2, 2, 2, 2] });
  assert.deepEqual([...inc.shape], [1, 1, 7, 7]);
  assertClose([inc.data[0], exc.data[0], exc.data[1]], [1 / 9, 1, 1.5], 1e-12, 1e-12);
});

test('resizeNearest 2× is PyTorch nearest upsampling; bilinear align_corners keeps the corners', () => {
  const x = fromArray([1, 2, 3, 4], [1, 1, 2, 2]);
  assert.deepEqual(Array.from(F.resizeNearest(x, 4, 4).data), [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
  // PyTorch: F.interpolate(x, size=(3, 3), mode='bilinear', align_corners=True).
  assert.deepEqual(Array.from(F.resizeBilinear(x, 3, 3, true).data), [1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4]);
  // align_corners=False, 2×: [1, 1.25, 1.75, 2] on the first row.
  assertClose(Array.from(F.resizeBilinear(x, 4, 4, false).data.slice(0, 4)), [1, 1.25, 1.75, 2], 1e-12, 1e-12);
});

test('where takes a Uint8Array mask with a shape (an ONNX bool tensor) as well as a tensor', () => {
  const a = fromArray([1, 2, 3, 4, 5, 6], [2, 3], 'float32', true);
  const b = fromArray([-1], [], 'float32', true);
  const y = F.where({ data: Uint8Array.from([1, 0, 1]), shape: [3] }, a, b);
  assert.deepEqual(Array.from(y.data), [1, -1, 3, 4, -1, 6]);
  F.sum(y).backward();
  assert.deepEqual(Array.from(a.grad!.data), [1, 0, 1, 1, 0, 1]);
  assert.deepEqual(Array.from(b.grad!.data), [2]);
});

test('import ops reject wrong shapes with plain Errors naming the op and the shapes', () => {
  const t = (s: number[]) => randT(s, new Rng(1));
  const cases: [() => unknown, RegExp][] = [
    [() => F.conv2d(t([1, 4, 5, 5]), t([4, 2, 3, 3]), null, { groups: 3 }), /conv2d: 3 groups .*\[1, 4, 5, 5\].*\[4, 2, 3, 3\]/],
    [() => F.conv2d(t([1, 4, 5, 5]), t([4, 1, 3, 3]), null, { groups: 2 }), /conv2d: .*\[1, 4, 5, 5\] has 4 channels.*\[4, 1, 3, 3\] expects 2/],
    [() => F.conv2d(t([1, 1, 5, 5]), t([1, 1, 3, 3]), null, { dilation: 3 }), /conv2d: kernel 3×3 \(dilation \[3, 3\]\) does not fit/],
    [() => F.conv2d(t([1, 1, 5, 5]), t([1, 1, 3, 3]), null, { padding: [1, -1, 0, 0] }), /conv2d: invalid .*padding \[1, -1, 0, 0\]/],
    [() => F.pad(t([2, 3]), [1, 1]), /pad: pads \[1, 1\] must be 4 integers for \[2, 3\]/],
    [() => F.pad(t([2, 3]), [0, -2, 0, -2]), /pad: .*crop more than \[2, 3\]/],
    [() => F.pad(t([2, 3]), [0, 3, 0, 0], 0, 'reflect'), /pad: reflect pads \(3, 0\) must be smaller than the axis length 3/],
    [() => F.pool2d(t([1, 1, 2, 2]), { kind: 'max', kernel: [3, 3] }), /pool2d: kernel \[3, 3\].*\[1, 1, 2, 2\]/],
    [() => F.pool2d(t([2, 2]), { kind: 'avg', kernel: [1, 1] }), /pool2d: expects \[N,C,H,W\], got \[2, 2\]/],
    [() => F.gather(t([3, 2]), 0, [3], [1]), /gather: index 3 .*axis 0 of length 3 \(x \[3, 2\]\)/],
    [() => F.gather(t([3, 2]), 1, [0, 1, 0], [2]), /gather: 3 indices for index shape \[2\]/],
    [() => F.expand(t([2, 3]), [4, 3, 2]), /expand: shapes \[2, 3\] and \[4, 3, 2\]/],
    [() => F.split(t([2, 5]), 1, [2, 2]), /split: sizes \[2, 2\] .*axis 1 of \[2, 5\]/],
    [() => F.tile(t([2, 5]), [2]), /tile: repeats \[2\] do not fit \[2, 5\]/],
    [() => F.layerNorm(t([2, 5]), 3), /layerNorm: .*last 3 axes of \[2, 5\]/],
    [() => F.layerNorm(t([2, 5]), 1, t([4])), /layerNorm: weight \[4\] does not match \[5\]/],
    [() => F.instanceNorm(t([2, 5])), /instanceNorm: expects .*\[2, 5\]/],
    [() => F.groupNorm(t([2, 6, 3]), 4), /groupNorm: 4 groups .*6 channels of \[2, 6, 3\]/],
    [() => F.pow(t([2, 3]), t([2])), /pow: shapes \[2, 3\] and \[2\]/],
    [() => F.minimum(t([2, 3]), t([4])), /minimum: shapes \[2, 3\] and \[4\]/],
    [() => F.where(t([2]), t([3]), t([3])), /where: shapes \[2\] and \[3\]/],
    [() => F.prelu(t([2, 3]), t([2, 1, 1])), /prelu: slope \[2, 1, 1\] must broadcast to the input \[2, 3\]/],
    [() => F.variance(t([1, 3]), 0, false, 1), /variance: 1 values .*\[1, 3\] with correction 1/],
    [() => F.resizeNearest(t([2, 3, 4]), 2, 2), /resizeNearest: expects \[N,C,H,W\], got \[2, 3, 4\]/],
    [() => F.resizeBilinear(t([1, 1, 2, 2]), 0, 2, false), /resizeBilinear: invalid output size 0×2 for \[1, 1, 2, 2\]/],
    [() => F.matmul(t([2, 3, 4]), t([5, 2])), /matmul: shapes \[2, 3, 4\] and \[5, 2\] do not chain/],
    [() => F.gelu(t([2]), 'erf' as 'none'), /gelu: approximate must be/],
  ];
  for (const [f, re] of cases) {
    assert.throws(f, (e: unknown) => e instanceof Error && e.constructor === Error && re.test(e.message), `expected ${re}`);
  }
});

test('conv2d: the general and depthwise paths agree with the kernel path where both apply', () => {
  // A depthwise conv equals C separate one-channel convs on the kernel path, and a grouped one the
  // concat of per-group convs: forward and all gradients, on every backend.
  for (const b of backends) {
    const prev = setBackend(b);
    try {
      for (const [C, mult, groups] of [[3, 1, 3], [2, 2, 2], [4, 2, 2]]) {
        const rng = new Rng(C * 10 + mult);
        const x = randT([2, C, 6, 5], rng, { dtype: 'float32' });
        const w = randT([C * mult, C / groups, 3, 3], rng, { dtype: 'float32' });
        const bias = randT([C * mult], rng, { dtype: 'float32' });
        const o = { stride: 2, padding: 1 };
        const y = F.conv2d(x, w, bias, { ...o, groups });
        const Cg = C / groups;
        const Og = (C * mult) / groups;
        const parts = Array.from({ length: groups }, (_, g) => F.conv2d(F.slice(x, 1, g * Cg, (g + 1) * Cg), F.slice(w, 0, g * Og, (g + 1) * Og), F.slice(bias, 0, g * Og, (g + 1) * Og), o));
        const z = F.concat(parts, 1);
        assertClose(y.data, z.data, 1e-5, 1e-5, `groups ${groups} forward on ${b.name}`);
        const r = randT(y.shape, rng, { dtype: 'float32', requiresGrad: false });
        F.sum(F.mul(y, r)).backward();
        const g1 = [x, w, bias].map((t) => Float32Array.from(t.grad!.data));
        [x, w, bias].forEach((t) => { t.grad = null; });
        F.sum(F.mul(z, r)).backward();
        [x, w, bias].forEach((t, i) => assertClose(g1[i], t.grad!.data, 1e-4, 1e-5, `groups ${groups} grad ${i} on ${b.name}`));
      }
    } finally {
      setBackend(prev);
    }
  }
});
