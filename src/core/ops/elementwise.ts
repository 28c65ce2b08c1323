/** Elementwise ops: broadcasting binary arithmetic and unary maps, with their gradients. */
import { kernels } from '../backend/index.js';
import type { BinaryOp, FloatArray, UnaryOp } from '../backend/types.js';
import { allocLike, allocUninit, makeResult, numel, shapeStr, Tensor, type Shape } from '../tensor.js';

/** NumPy/PyTorch broadcasting of two shapes; throws naming the op and both shapes. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const nd = Math.max(a.length, b.length);
  const out = new Array<number>(nd);
  for (let i = 0; i < nd; i++) {
    const da = a[a.length - nd + i] ?? 1;
    const db = b[b.length - nd + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`${op}: shapes ${shapeStr(a)} and ${shapeStr(b)} cannot be broadcast together`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Element strides of `shape` read as if broadcast to `outShape` (0 on broadcast axes). */
export function broadcastStrides(shape: Shape, outShape: Shape): number[] {
  const nd = outShape.length;
  const strides = new Array<number>(nd).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const d = nd - shape.length + i;
    strides[d] = shape[i] === 1 ? 0 : s;
    s *= shape[i];
  }
  return strides;
}

/** Sums a gradient of shape `from` down to the broadcast source shape `to`. */
export function sumToShape(g: FloatArray, from: Shape, to: Shape): FloatArray {
  if (from.length === to.length && from.every((d, i) => d === to[i])) return g;
  const k = kernels();
  const nd = from.length;
  const padded = new Array<number>(nd - to.length).fill(1).concat(to);
  let cur = g;
  let curShape = [...from];
  for (let d = 0; d < nd; d++) {
    if (padded[d] === 1 && curShape[d] !== 1) {
      const outer = numel(curShape.slice(0, d));
      const len = curShape[d];
      const inner = numel(curShape.slice(d + 1));
      const out = allocLike(g instanceof Float64Array ? 'float64' : 'float32', outer * inner);
      k.sumAxis(cur, outer, len, inner, out);
      cur = out;
      curShape[d] = 1;
    }
  }
  return cur;
}

function binaryForward(op: BinaryOp, a: Tensor, b: Tensor): { shape: number[]; data: FloatArray } {
  if (a.dtype !== b.dtype) throw new Error(`${op}: dtypes differ (${a.dtype} and ${b.dtype})`);
  const shape = broadcastShapes(op, a.shape, b.shape);
  const data = allocUninit(a.dtype, numel(shape));
  kernels().binary(op, a.data, broadcastStrides(a.shape, shape), b.data, broadcastStrides(b.shape, shape), data, shape);
  return { shape, data };
}

function packedStrides(shape: Shape): number[] {
  return broadcastStrides(shape, shape);
}

/** out = x op y for same-shape packed arrays (gradient helpers). */
function ew(op: BinaryOp, x: FloatArray, y: FloatArray, shape: Shape): FloatArray {
  const out = allocUninit(x instanceof Float64Array ? 'float64' : 'float32', x.length);
  const st = packedStrides(shape);
  kernels().binary(op, x, st, y, st, out, shape);
  return out;
}

/** Reads `t` broadcast to `shape` as a packed array. */
function expandTo(t: Tensor, shape: Shape): FloatArray {
  if (t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i])) return t.data;
  const out = allocLike(t.dtype, numel(shape));
  kernels().copyStrided(t.data, 0, broadcastStrides(t.shape, shape), out, shape);
  return out;
}

export function add(a: Tensor, b: Tensor): Tensor {
  const { shape, data } = binaryForward('add', a, b);
  return makeResult('add', shape, data, [a, b], (g) => [
    a.requiresGrad ? sumToShape(g, shape, a.shape) : null,
    b.requiresGrad ? sumToShape(g, shape, b.shape) : null,
  ]);
}

export function sub(a: Tensor, b: Tensor): Tensor {
  const { shape, data } = binaryForward('sub', a, b);
  return makeResult('sub', shape, data, [a, b], (g) => {
    let gb: FloatArray | null = null;
    if (b.requiresGrad) {
      const neg = allocLike(a.dtype, g.length);
      kernels().affine(g, -1, 0, neg);
      gb = sumToShape(neg, shape, b.shape);
    }
    return [a.requiresGrad ? sumToShape(g, shape, a.shape) : null, gb];
  });
}

export function mul(a: Tensor, b: Tensor): Tensor {
  const { shape, data } = binaryForward('mul', a, b);
  return makeResult('mul', shape, data, [a, b], (g) => [
    a.requiresGrad ? sumToShape(ew('mul', g, expandTo(b, shape), shape), shape, a.shape) : null,
    b.requiresGrad ? sumToShape(ew('mul', g, expandTo(a, shape), shape), shape, b.shape) : null,
  ]);
}

export function div(a: Tensor, b: Tensor): Tensor {
  const { shape, data } = binaryForward('div', a, b);
  return makeResult('div', shape, data, [a, b], (g) => {
    const bx = expandTo(b, shape);
    let gb: FloatArray | null = null;
    if (b.requiresGrad) {
      // d(a/b)/db = -(a/b)/b = -out/b
      const t = ew('div', ew('mul', g, data, shape), bx, shape);
      kernels().affine(t, -1, 0, t);
      gb = sumToShape(t, shape, b.shape);
    }
    return [a.requiresGrad ? sumToShape(ew('div', g, bx, shape), shape, a.shape) : null, gb];
  });
}

/** Elementwise maximum (gradient to the larger operand; ties go to a). */
export function maximum(a: Tensor, b: Tensor): Tensor {
  const { shape, data } = binaryForward('max', a, b);
  return makeResult('maximum', shape, data, [a, b], (g) => {
    const ax = expandTo(a, shape);
    const bx = expandTo(b, shape);
    const ga = allocLike(a.dtype, g.length);
    const gb = allocLike(a.dtype, g.length);
    for (let i = 0; i < g.length; i++) {
      if (ax[i] >= bx[i]) ga[i] = g[i];
      else gb[i] = g[i];
    }
    return [a.requiresGrad ? sumToShape(ga, shape, a.shape) : null, b.requiresGrad ? sumToShape(gb, shape, b.shape) : null];
  });
}

/** alpha * x + beta, elementwise (scalar affine map). */
export function affine(x: Tensor, alpha: number, beta = 0): Tensor {
  const data = allocLike(x.dtype, x.size);
  kernels().affine(x.data, alpha, beta, data);
  return makeResult('affine', x.shape, data, [x], (g) => {
    const gx = allocLike(x.dtype, g.length);
    kernels().affine(g, alpha, 0, gx);
    return [gx];
  });
}

export function mulScalar(x: Tensor, s: number): Tensor {
  return affine(x, s, 0);
}

export function addScalar(x: Tensor, s: number): Tensor {
  return affine(x, 1, s);
}

export function neg(x: Tensor): Tensor {
  return affine(x, -1, 0);
}

function unaryForward(op: UnaryOp, x: Tensor): FloatArray {
  const data = allocUninit(x.dtype, x.size);
  kernels().unary(op, x.data, data);
  return data;
}

export function exp(x: Tensor): Tensor {
  const y = unaryForward('exp', x);
  return makeResult('exp', x.shape, y, [x], (g) => [ew('mul', g, y, x.shape)]);
}

export function log(x: Tensor): Tensor {
  const y = unaryForward('log', x);
  return makeResult('log', x.shape, y, [x], (g) => [ew('div', g, x.data, x.shape)]);
}

export function relu(x: Tensor): Tensor {
  const y = unaryForward('relu', x);
  return makeResult('relu', x.shape, y, [x], (g) => {
    const gx = allocUninit(x.dtype, g.length);
    kernels().reluBackward(y, g, gx); // y > 0 exactly where x > 0
    return [gx];
  });
}

export function tanh(x: Tensor): Tensor {
  const y = unaryForward('tanh', x);
  return makeResult('tanh', x.shape, y, [x], (g) => {
    const gx = allocLike(x.dtype, g.length);
    for (let i = 0; i < g.length; i++) gx[i] = g[i] * (1 - y[i] * y[i]);
    return [gx];
  });
}

export function sigmoid(x: Tensor): Tensor {
  const y = unaryForward('sigmoid', x);
  return makeResult('sigmoid', x.shape, y, [x], (g) => {
    const gx = allocLike(x.dtype, g.length);
    for (let i = 0; i < g.length; i++) gx[i] = g[i] * y[i] * (1 - y[i]);
    return [gx];
  });
}

export function sqrt(x: Tensor): Tensor {
  const y = unaryForward('sqrt', x);
  return makeResult('sqrt', x.shape, y, [x], (g) => {
    const gx = allocLike(x.dtype, g.length);
    for (let i = 0; i < g.length; i++) gx[i] = (0.5 * g[i]) / y[i];
    return [gx];
  });
}

export function abs(x: Tensor): Tensor {
  const y = unaryForward('abs', x);
  return makeResult('abs', x.shape, y, [x], (g) => {
    const gx = allocLike(x.dtype, g.length);
    const xd = x.data;
    for (let i = 0; i < g.length; i++) gx[i] = xd[i] > 0 ? g[i] : xd[i] < 0 ? -g[i] : 0;
    return [gx];
  });
}

export function square(x: Tensor): Tensor {
  const y = unaryForward('square', x);
  return makeResult('square', x.shape, y, [x], (g) => {
    const gx = allocLike(x.dtype, g.length);
    const xd = x.data;
    for (let i = 0; i < g.length; i++) gx[i] = 2 * xd[i] * g[i];
    return [gx];
  });
}

/** Elementwise power by a constant exponent. */
export function powScalar(x: Tensor, p: number): Tensor {
  const y = allocLike(x.dtype, x.size);
  for (let i = 0; i < y.length; i++) y[i] = Math.pow(x.data[i], p);
  return makeResult('pow', x.shape, y, [x], (g) => {
    const gx = allocLike(x.dtype, g.length);
    for (let i = 0; i < g.length; i++) gx[i] = g[i] * p * Math.pow(x.data[i], p - 1);
    return [gx];
  });
}

/** Clamps values to [lo, hi]; gradient passes where the value was inside. */
export function clamp(x: Tensor, lo: number, hi: number): Tensor {
  const y = allocLike(x.dtype, x.size);
  for (let i = 0; i < y.length; i++) y[i] = Math.min(hi, Math.max(lo, x.data[i]));
  return makeResult('clamp', x.shape, y, [x], (g) => {
    const gx = allocLike(x.dtype, g.length);
    for (let i = 0; i < g.length; i++) gx[i] = x.data[i] >= lo && x.data[i] <= hi ? g[i] : 0;
    return [gx];
  });
}

export { expandTo };
