/** Reductions over axes (sum, mean, max, logsumexp) with their gradients. */
import { kernels } from '../backend/index.js';
import type { FloatArray } from '../backend/types.js';
import { allocLike, makeResult, numel, shapeStr, Tensor, type Shape } from '../tensor.js';

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

/** Maximum along one axis; the gradient flows to the (first) arg-max. */
export function max(x: Tensor, axis: number, keepdim = false): Tensor {
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
    const gx = allocLike(x.dtype, x.size);
    for (let o = 0; o < outer; o++) {
      for (let l = 0; l < len; l++) {
        const base = (o * len + l) * inner;
        for (let i = 0; i < inner; i++) {
          const lse = out[o * inner + i];
          gx[base + i] = lse === -Infinity ? 0 : g[o * inner + i] * Math.exp(x.data[base + i] - lse);
        }
      }
    }
    return [gx];
  });
}
