/**
 * The activations and elementwise maps imported graphs need (ONNX Erf, Gelu, LeakyRelu, Elu, Selu,
 * Softplus, HardSigmoid, HardSwish, Silu/Swish, Mish, Reciprocal, Sin, Cos, Pow, Min, Where, Clip,
 * PRelu), each with its gradient. They are plain TS loops, so every backend runs the same code;
 * exact GELU, on every transformer MLP, goes through the gelu kernels (backend/erf.ts's formulas, bit
 * for bit on every backend).
 */
import { erfFast, TWO_OVER_SQRT_PI } from '../backend/erf.js';
import { kernels } from '../backend/index.js';
import type { FloatArray } from '../backend/types.js';
import { allocLike, allocUninit, makeResult, numel, shapeStr, Tensor } from '../tensor.js';
import { add, broadcastShapes, expandTo, mul, neg, relu, sumToShape } from './elementwise.js';

/**
 * An elementwise map y = f(x) with dy/dx = df(x, y). Both run per element in float64 and the
 * result is stored in x's dtype.
 */
function unaryMap(op: string, x: Tensor, f: (v: number) => number, df: (v: number, y: number) => number): Tensor {
  const xd = x.data;
  const y = allocUninit(x.dtype, x.size);
  for (let i = 0; i < y.length; i++) y[i] = f(xd[i]);
  return makeResult(op, x.shape, y, [x], (g) => {
    const gx = allocUninit(x.dtype, g.length);
    for (let i = 0; i < g.length; i++) gx[i] = g[i] * df(xd[i], y[i]);
    return [gx];
  });
}

export { erfFast, erfScalar } from '../backend/erf.js';

/** The error function; d erf/dx = 2/√π · e^{−x²}. */
export function erf(x: Tensor): Tensor {
  return unaryMap('erf', x, erfFast, (v) => TWO_OVER_SQRT_PI * Math.exp(-v * v));
}

const SQRT_2_OVER_PI = 0.7978845608028654; // √(2/π)

/**
 * GELU: x·Φ(x) with Φ the standard normal CDF (exact, via erf), or PyTorch's / ONNX's tanh
 * approximation 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))).
 */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  if (approximate === 'tanh') {
    return unaryMap('gelu(tanh)', x, (v) => 0.5 * v * (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v))), (v) => {
      const t = Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v));
      return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * v * v);
    });
  }
  if (approximate !== 'none') throw new Error(`gelu: approximate must be 'none' or 'tanh', got ${String(approximate)}`);
  // Kernels (not unaryMap): GELU runs on every transformer MLP activation.
  const y = allocUninit(x.dtype, x.size);
  kernels().gelu(x.data, y);
  return makeResult('gelu', x.shape, y, [x], (g) => {
    const gx = allocUninit(x.dtype, g.length);
    kernels().geluBackward(x.data, g, gx);
    return [gx];
  });
}

/** x for x ≥ 0, alpha·x below (ONNX LeakyRelu; default alpha 0.01). */
export function leakyRelu(x: Tensor, alpha = 0.01): Tensor {
  return unaryMap('leakyRelu', x, (v) => (v >= 0 ? v : alpha * v), (v) => (v >= 0 ? 1 : alpha));
}

/** x for x > 0, alpha·(eˣ − 1) below (ONNX Elu; default alpha 1). */
export function elu(x: Tensor, alpha = 1): Tensor {
  return unaryMap('elu', x, (v) => (v > 0 ? v : alpha * Math.expm1(v)), (v, y) => (v > 0 ? 1 : y + alpha));
}

/** ONNX Selu's defaults (the float32 constants of the SELU paper). */
export const SELU_ALPHA = 1.67326319217681884765625;
export const SELU_GAMMA = 1.05070102214813232421875;

/** gamma·(x for x > 0, alpha·(eˣ − 1) below). */
export function selu(x: Tensor, alpha = SELU_ALPHA, gamma = SELU_GAMMA): Tensor {
  return unaryMap('selu', x, (v) => (v > 0 ? gamma * v : gamma * alpha * Math.expm1(v)), (v) => (v > 0 ? gamma : gamma * alpha * Math.exp(v)));
}

function softplusScalar(v: number): number {
  return Math.max(v, 0) + Math.log1p(Math.exp(-Math.abs(v)));
}

function sigmoidScalar(v: number): number {
  if (v >= 0) return 1 / (1 + Math.exp(-v));
  const e = Math.exp(v);
  return e / (1 + e);
}

/** log(1 + eˣ), computed without overflow; the gradient is the sigmoid. */
export function softplus(x: Tensor): Tensor {
  return unaryMap('softplus', x, softplusScalar, (v) => sigmoidScalar(v));
}

/** max(0, min(1, alpha·x + beta)) (ONNX HardSigmoid: alpha 0.2, beta 0.5; PyTorch's is alpha 1/6). */
export function hardSigmoid(x: Tensor, alpha = 0.2, beta = 0.5): Tensor {
  return unaryMap('hardSigmoid', x, (v) => Math.max(0, Math.min(1, alpha * v + beta)), (v) => {
    const u = alpha * v + beta;
    return u > 0 && u < 1 ? alpha : 0;
  });
}

/** x · hardSigmoid(x, 1/6, 1/2) (ONNX HardSwish = PyTorch hardswish). */
export function hardSwish(x: Tensor): Tensor {
  return unaryMap('hardSwish', x, (v) => v * Math.max(0, Math.min(1, v / 6 + 0.5)), (v) => {
    if (v <= -3) return 0;
    if (v >= 3) return 1;
    return v / 3 + 0.5;
  });
}

/** x · sigmoid(x) (SiLU / Swish). */
export function silu(x: Tensor): Tensor {
  return unaryMap('silu', x, (v) => v * sigmoidScalar(v), (v) => {
    const s = sigmoidScalar(v);
    return s * (1 + v * (1 - s));
  });
}

/** x · tanh(softplus(x)). */
export function mish(x: Tensor): Tensor {
  return unaryMap('mish', x, (v) => v * Math.tanh(softplusScalar(v)), (v) => {
    const t = Math.tanh(softplusScalar(v));
    return t + v * (1 - t * t) * sigmoidScalar(v);
  });
}

/** 1 / x. */
export function reciprocal(x: Tensor): Tensor {
  return unaryMap('reciprocal', x, (v) => 1 / v, (_v, y) => -y * y);
}

export function sin(x: Tensor): Tensor {
  return unaryMap('sin', x, Math.sin, Math.cos);
}

export function cos(x: Tensor): Tensor {
  return unaryMap('cos', x, Math.cos, (v) => -Math.sin(v));
}

/**
 * Clamps to [lo, hi], either bound null (or ±Infinity) for none (ONNX Clip). The gradient passes
 * where lo ≤ x ≤ hi.
 */
export function clip(x: Tensor, lo: number | null, hi: number | null): Tensor {
  const l = lo ?? -Infinity;
  const h = hi ?? Infinity;
  if (Number.isNaN(l) || Number.isNaN(h)) throw new Error(`clip: bounds must not be NaN, got [${lo}, ${hi}]`);
  return unaryMap('clip', x, (v) => Math.min(h, Math.max(l, v)), (v) => (v >= l && v <= h ? 1 : 0));
}

/** Broadcast operands of a binary map, read as packed arrays of the output shape. */
function broadcastPair(op: string, a: Tensor, b: Tensor): { shape: number[]; ax: FloatArray; bx: FloatArray } {
  if (a.dtype !== b.dtype) throw new Error(`${op}: dtypes differ (${a.dtype} and ${b.dtype})`);
  const shape = broadcastShapes(op, a.shape, b.shape);
  return { shape, ax: expandTo(a, shape), bx: expandTo(b, shape) };
}

/**
 * aᵇ elementwise with broadcasting (ONNX Pow). The gradient for a is b·a^(b−1); for b it is
 * aᵇ·ln a where a > 0 and 0 elsewhere (the exponent's gradient needs a positive base).
 */
export function pow(a: Tensor, b: Tensor): Tensor {
  const { shape, ax, bx } = broadcastPair('pow', a, b);
  const y = allocUninit(a.dtype, numel(shape));
  for (let i = 0; i < y.length; i++) y[i] = Math.pow(ax[i], bx[i]);
  return makeResult('pow', shape, y, [a, b], (g) => {
    let ga: FloatArray | null = null;
    let gb: FloatArray | null = null;
    if (a.requiresGrad) {
      const t = allocUninit(a.dtype, g.length);
      for (let i = 0; i < g.length; i++) t[i] = bx[i] === 0 ? 0 : g[i] * bx[i] * Math.pow(ax[i], bx[i] - 1);
      ga = sumToShape(t, shape, a.shape);
    }
    if (b.requiresGrad) {
      const t = allocUninit(a.dtype, g.length);
      for (let i = 0; i < g.length; i++) t[i] = ax[i] > 0 ? g[i] * y[i] * Math.log(ax[i]) : 0;
      gb = sumToShape(t, shape, b.shape);
    }
    return [ga, gb];
  });
}

/** Elementwise minimum with broadcasting (gradient to the smaller operand; ties go to a). */
export function minimum(a: Tensor, b: Tensor): Tensor {
  const { shape, ax, bx } = broadcastPair('minimum', a, b);
  const y = allocUninit(a.dtype, numel(shape));
  for (let i = 0; i < y.length; i++) y[i] = ax[i] <= bx[i] || Number.isNaN(ax[i]) ? ax[i] : bx[i];
  return makeResult('minimum', shape, y, [a, b], (g) => {
    const ga = allocLike(a.dtype, g.length);
    const gb = allocLike(a.dtype, g.length);
    for (let i = 0; i < g.length; i++) {
      if (ax[i] <= bx[i]) ga[i] = g[i];
      else gb[i] = g[i];
    }
    return [a.requiresGrad ? sumToShape(ga, shape, a.shape) : null, b.requiresGrad ? sumToShape(gb, shape, b.shape) : null];
  });
}

/** A condition for `where`: a tensor, or any 0/1 array with a shape (an ONNX bool tensor as Uint8Array). */
export interface Mask {
  readonly data: ArrayLike<number>;
  readonly shape: readonly number[];
}

/**
 * cond ? a : b elementwise, all three broadcast together (ONNX Where). `cond` is read as true
 * where nonzero; it gets no gradient.
 */
export function where(mask: Mask, a: Tensor, b: Tensor): Tensor {
  const cond = mask instanceof Tensor ? mask : new Tensor(Float32Array.from(mask.data), mask.shape);
  if (a.dtype !== b.dtype) throw new Error(`where: dtypes differ (${a.dtype} and ${b.dtype})`);
  const shape = broadcastShapes('where', cond.shape, broadcastShapes('where', a.shape, b.shape));
  const A = expandTo(a, shape);
  const B = expandTo(b, shape);
  const c = expandTo(cond, shape);
  const y = allocUninit(a.dtype, numel(shape));
  for (let i = 0; i < y.length; i++) y[i] = c[i] !== 0 ? A[i] : B[i];
  return makeResult('where', shape, y, [a, b], (g) => {
    const ga = a.requiresGrad ? allocLike(a.dtype, g.length) : null;
    const gb = b.requiresGrad ? allocLike(a.dtype, g.length) : null;
    for (let i = 0; i < g.length; i++) {
      if (c[i] !== 0) { if (ga) ga[i] = g[i]; } else if (gb) gb[i] = g[i];
    }
    return [ga && sumToShape(ga, shape, a.shape), gb && sumToShape(gb, shape, b.shape)];
  });
}

/**
 * PReLU: x for x ≥ 0, slope·x below, slope broadcast against x (ONNX PRelu; [C, 1, 1] for NCHW).
 * Composed: relu(x) − slope·relu(−x).
 */
export function prelu(x: Tensor, slope: Tensor): Tensor {
  broadcastShapes('prelu', x.shape, slope.shape);
  const out = add(relu(x), mul(slope, neg(relu(neg(x)))));
  if (out.ndim !== x.ndim || out.shape.some((d, i) => d !== x.shape[i])) {
    throw new Error(`prelu: slope ${shapeStr(slope.shape)} must broadcast to the input ${shapeStr(x.shape)}`);
  }
  return out;
}
