/** Reductions over axes (sum, mean, max, min, variance, logsumexp) with their gradients. */
import { kernels } from '../backend/index.js';
import type { FloatArray } from '../backend/types.js';
import { allocLike, allocUninit, makeResult, numel, shapeStr, Tensor, type Shape } from '../tensor.js';
import { mul, neg, sub } from './elementwise.js';

/** Normalises a possibly negative axis against `ndim`, naming the op on error. */
export function normAxis(op: string, axis: number, ndim: number): number {
  const a = axis < 0 ? axis + ndim : axis;
  if (!Number.isInteger(a) || a < 0 || a >= ndim) throw new Error(`${op}: axis ${axis} is out of range for a ${ndim}-d tensor`);
  return a;
}

function split(shape: Shape, axis: number): { outer: number; len: number; inner: number } {
  return { outer: numel(shape.slice(0, axis)), len: shape[axis], inner: numel(shape.slice(axis + 1)) };
}

function reducedShape(shape: Shape, axes: number[], keepdim: boolean): number[] {
  const out: number[] = [];
  shape.forEach((d, i) => {
    if (axes.includes(i)) {
      if (keepdim) out.push(1);
    } else out.push(d);
  });
  return out;
}

/** Broadcasts a reduced gradient (keepdim layout) back over the reduced axes. */
function expandReduced(g: FloatArray, shape: Shape, axes: number[]): FloatArray {
  const out = allocLike(g instanceof Float64Array ? 'float64' : 'float32', numel(shape));
  const strides = new Array<number>(shape.length).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (!axes.includes(i)) {
      strides[i] = s;
      s *= shape[i];
    }
  }
  kernels().copyStrided(g, 0, strides, out, shape);
  return out;
}

/** Sum over `axes` (all axes when omitted). */
export function sum(x: Tensor, axes?: number | number[], keepdim = false): Tensor {
  const list = axes === undefined ? x.shape.map((_, i) => i) : (Array.isArray(axes) ? axes : [axes]).map((a) => normAxis('sum', a, x.ndim));
  const uniq = [...new Set(list)].sort((a, b) => a - b);
  let cur = x.data;
  const curShape = [...x.shape];
  const k = kernels();
  for (const a of uniq) {
    const { outer, len, inner } = split(curShape, a);
    const out = allocLike(x.dtype, outer * inner);
    k.sumAxis(cur, outer, len, inner, out);
    cur = out;
    curShape[a] = 1;
  }
  if (uniq.length === 0) cur = cur.slice();
  const shape = reducedShape(x.shape, uniq, keepdim);
  return makeResult('sum', shape, cur, [x], (g) => [expandReduced(g, x.shape, uniq)]);
}

export function mean(x: Tensor, axes?: number | number[], keepdim = false): Tensor {
  const list = axes === undefined ? x.shape.map((_, i) => i) : (Array.isArray(axes) ? axes : [axes]).map((a) => normAxis('mean', a, x.ndim));
  let count = 1;
  for (const a of new Set(list)) count *= x.shape[a];
  const s = sum(x, list, keepdim);
  if (count === 0) throw new Error(`mean: reducing over an empty axis of shape ${shapeStr(x.shape)}`);
  const data = allocLike(x.dtype, s.size);
  kernels().affine(s.data, 1 / count, 0, data);
  return makeResult('mean', s.shape, data, [s], (g) => {
    const gs = allocLike(x.dtype, g.length);
    kernels().affine(g, 1 / count, 0, gs);
    return [gs];
  });
}

/**
 * Maximum over one axis, several axes, or all axes (when omitted); the gradient flows to the
 * (first) arg-max. Several axes are reduced in one pass over precomputed offsets.
 */
export function max(x: Tensor, axes?: number | readonly number[], keepdim = false): Tensor {
  if (typeof axes === 'number') return maxAxis(x, axes, keepdim);
  const list = axes === undefined ? x.shape.map((_, i) => i) : axes.map((a) => normAxis('max', a, x.ndim));
  const uniq = [...new Set(list)].sort((a, b) => a - b);
  if (uniq.length === 0) return makeResult('max', x.shape, x.data, [x], (g) => [g]);
  if (uniq.length === 1) return maxAxis(x, uniq[0], keepdim);
  // Flat offsets into x of every kept multi-index and of every reduced multi-index (row-major).
  const strides = new Array<number>(x.ndim);
  for (let i = x.ndim - 1, s = 1; i >= 0; i--) { strides[i] = s; s *= x.shape[i]; }
  const offsets = (dims: number[]): Int32Array => {
    let offs = Int32Array.of(0);
    for (const d of dims) {
      const next = new Int32Array(offs.length * x.shape[d]);
      for (let j = 0; j < offs.length; j++) for (let k = 0; k < x.shape[d]; k++) next[j * x.shape[d] + k] = offs[j] + k * strides[d];
      offs = next;
    }
    return offs;
  };
  const keptOff = offsets(x.shape.map((_, i) => i).filter((i) => !uniq.includes(i)));
  const redOff = offsets(uniq);
  if (redOff.length === 0) throw new Error(`max: axes [${uniq.join(', ')}] of shape ${shapeStr(x.shape)} are empty`);
  const out = allocLike(x.dtype, keptOff.length);
  const arg = new Int32Array(keptOff.length);
  const xd = x.data;
  for (let k = 0; k < keptOff.length; k++) {
    const base = keptOff[k];
    let best = xd[base + redOff[0]];
    let at = base + redOff[0];
    for (let r = 1; r < redOff.length && !Number.isNaN(best); r++) {
      const v = xd[base + redOff[r]];
      if (v > best || Number.isNaN(v)) { best = v; at = base + redOff[r]; }
    }
    out[k] = best;
    arg[k] = at;
  }
  return makeResult('max', reducedShape(x.shape, uniq, keepdim), out, [x], (g) => {
    const gx = allocLike(x.dtype, x.size);
    for (let k = 0; k < arg.length; k++) gx[arg[k]] += g[k];
    return [gx];
  });
}

/** Minimum over axes, as −max(−x) (ties: the first arg-min gets the gradient). */
export function min(x: Tensor, axes?: number | readonly number[], keepdim = false): Tensor {
  return neg(max(neg(x), axes, keepdim));
}

/**
 * Variance over axes (all when omitted): Σ (x − mean)² / (count − correction); correction 0 is
 * the population variance (what LayerNorm uses), 1 the unbiased one. Composed of mean/sum.
 */
export function variance(x: Tensor, axes?: number | readonly number[], keepdim = false, correction = 0): Tensor {
  const list = axes === undefined ? x.shape.map((_, i) => i) : (typeof axes === 'number' ? [axes] : axes).map((a) => normAxis('variance', a, x.ndim));
  const uniq = [...new Set(list)];
  let count = 1;
  for (const a of uniq) count *= x.shape[a];
  if (count - correction <= 0) throw new Error(`variance: ${count} values over axes [${uniq.join(', ')}] of ${shapeStr(x.shape)} with correction ${correction}`);
  const m = mean(x, uniq, true);
  const d = sub(x, m);
  const ss = sum(mul(d, d), uniq, keepdim);
  const data = allocLike(x.dtype, ss.size);
  const s = 1 / (count - correction);
  kernels().affine(ss.data, s, 0, data);
  return makeResult('variance', ss.shape, data, [ss], (g) => {
    const gs = allocLike(x.dtype, g.length);
    kernels().affine(g, s, 0, gs);
    return [gs];
  });
}

/** Maximum along one axis; the gradient flows to the (first) arg-max. */
function maxAxis(x: Tensor, axis: number, keepdim: boolean): Tensor {
  const a = normAxis('max', axis, x.ndim);
  const { outer, len, inner } = split(x.shape, a);
  if (len === 0) throw new Error(`max: axis ${axis} of shape ${shapeStr(x.shape)} is empty`);
  const out = allocLike(x.dtype, outer * inner);
  const arg = new Int32Array(outer * inner);
  kernels().maxAxis(x.data, outer, len, inner, out, arg);
  return makeResult('max', reducedShape(x.shape, [a], keepdim), out, [x], (g) => {
    const gx = allocLike(x.dtype, x.size);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) gx[(o * len + arg[o * inner + i]) * inner + i] = g[o * inner + i];
    }
    return [gx];
  });
}

/** Index of the maximum along an axis (no gradient). */
export function argmax(x: Tensor, axis: number): Int32Array {
  const a = normAxis('argmax', axis, x.ndim);
  const { outer, len, inner } = split(x.shape, a);
  const out = allocLike(x.dtype, outer * inner);
  const arg = new Int32Array(outer * inner);
  kernels().maxAxis(x.data, outer, len, inner, out, arg);
  return arg;
}

/** log Σ exp along one axis, computed stably; gradient is the softmax along that axis. */
export function logsumexp(x: Tensor, axis: number, keepdim = false): Tensor {
  const a = normAxis('logsumexp', axis, x.ndim);
  const { outer, len, inner } = split(x.shape, a);
  const out = allocLike(x.dtype, outer * inner);
  kernels().logsumexp(x.data, outer, len, inner, out);
  return makeResult('logsumexp', reducedShape(x.shape, [a], keepdim), out, [x], (g) => {
    const gx = allocUninit(x.dtype, x.size); // the kernel writes every element
    kernels().logsumexpBackward(x.data, outer, len, inner, out, g, gx);
    return [gx];
  });
}
