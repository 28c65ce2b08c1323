/** Shape ops: reshape, permute axes, slice, concat, split, index-select (hard permutations use it), gather, expand, tile. */
import { kernels } from '../backend/index.js';
import { allocLike, makeResult, numel, shapeStr, Tensor, type Shape } from '../tensor.js';
import { broadcastShapes, expandTo, sumToShape } from './elementwise.js';
import { normAxis } from './reduce.js';

/** Same data, new shape; one dimension may be -1. */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const dims = [...shape];
  // At most one -1; every other entry a non-negative integer (else the -1 inference goes wrong).
  if (dims.filter((d) => d === -1).length > 1 || dims.some((d) => d !== -1 && !(Number.isInteger(d) && d >= 0))) {
    throw new Error(`reshape: invalid target shape ${shapeStr(shape)} for ${shapeStr(x.shape)}`);
  }
  const neg = dims.indexOf(-1);
  if (neg >= 0) {
    const rest = numel(dims.filter((_, i) => i !== neg));
    if (rest === 0 || x.size % rest !== 0) throw new Error(`reshape: cannot infer -1 in ${shapeStr(shape)} for ${x.size} elements`);
    dims[neg] = x.size / rest;
  }
  if (numel(dims) !== x.size) throw new Error(`reshape: shape ${shapeStr(x.shape)} (${x.size} elements) cannot become ${shapeStr(shape)}`);
  // Data is shared: tensors are never mutated in place by ops, so aliasing is safe.
  return makeResult('reshape', dims, x.data, [x], (g) => [g]);
}

/** Flattens dims from `startDim` on into one (PyTorch flatten). */
export function flatten(x: Tensor, startDim = 1): Tensor {
  const s = normAxis('flatten', startDim, x.ndim);
  return reshape(x, [...x.shape.slice(0, s), numel(x.shape.slice(s))]);
}

function packedStrides(shape: Shape): number[] {
  const st = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

/** Reorders axes: out.shape[i] = x.shape[axes[i]]. */
export function permute(x: Tensor, axes: readonly number[]): Tensor {
  if (axes.length !== x.ndim || new Set(axes.map((a) => normAxis('permute', a, x.ndim))).size !== x.ndim) {
    throw new Error(`permute: axes [${axes.join(', ')}] are not a permutation of ${x.ndim} dims (shape ${shapeStr(x.shape)})`);
  }
  const ax = axes.map((a) => normAxis('permute', a, x.ndim));
  const inStrides = packedStrides(x.shape);
  const shape = ax.map((a) => x.shape[a]);
  const data = allocLike(x.dtype, x.size);
  kernels().copyStrided(x.data, 0, ax.map((a) => inStrides[a]), data, shape);
  const inverse = new Array<number>(ax.length);
  ax.forEach((a, i) => { inverse[a] = i; });
  return makeResult('permute', shape, data, [x], (g) => {
    const gx = allocLike(x.dtype, x.size);
    const gStrides = packedStrides(shape);
    kernels().copyStrided(g, 0, inverse.map((i) => gStrides[i]), gx, x.shape);
    return [gx];
  });
}

/** Swaps two axes (default: the last two). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const axes = x.shape.map((_, i) => i);
  const i = normAxis('transpose', a, x.ndim);
  const j = normAxis('transpose', b, x.ndim);
  axes[i] = j;
  axes[j] = i;
  return permute(x, axes);
}

/** x[..., start:end, ...] along one axis. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const a = normAxis('slice', axis, x.ndim);
  const len = x.shape[a];
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && end <= len && start <= end)) {
    throw new Error(`slice: range [${start}, ${end}) is invalid for axis ${axis} of length ${len}`);
  }
  const outer = numel(x.shape.slice(0, a));
  const inner = numel(x.shape.slice(a + 1));
  const k = end - start;
  const shape = [...x.shape];
  shape[a] = k;
  const data = allocLike(x.dtype, outer * k * inner);
  for (let o = 0; o < outer; o++) data.set(x.data.subarray((o * len + start) * inner, (o * len + end) * inner), o * k * inner);
  return makeResult('slice', shape, data, [x], (g) => {
    const gx = allocLike(x.dtype, x.size);
    for (let o = 0; o < outer; o++) gx.set(g.subarray(o * k * inner, (o + 1) * k * inner), (o * len + start) * inner);
    return [gx];
  });
}

/** Joins tensors along an existing axis. */
export function concat(xs: Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors given');
  const first = xs[0];
  const a = normAxis('concat', axis, first.ndim);
  for (const t of xs) {
    if (t.ndim !== first.ndim || t.shape.some((d, i) => i !== a && d !== first.shape[i]) || t.dtype !== first.dtype) {
      throw new Error(`concat: shapes ${xs.map((u) => shapeStr(u.shape)).join(', ')} do not agree off axis ${axis}`);
    }
  }
  const outer = numel(first.shape.slice(0, a));
  const inner = numel(first.shape.slice(a + 1));
  const lens = xs.map((t) => t.shape[a]);
  const total = lens.reduce((p, c) => p + c, 0);
  const shape = [...first.shape];
  shape[a] = total;
  const data = allocLike(first.dtype, outer * total * inner);
  let off = 0;
  xs.forEach((t, idx) => {
    const l = lens[idx];
    for (let o = 0; o < outer; o++) data.set(t.data.subarray(o * l * inner, (o + 1) * l * inner), (o * total + off) * inner);
    off += l;
  });
  return makeResult('concat', shape, data, xs, (g) => {
    let o2 = 0;
    return xs.map((t, idx) => {
      const l = lens[idx];
      const start = o2;
      o2 += l;
      if (!t.requiresGrad) return null;
      const gt = allocLike(first.dtype, t.size);
      for (let o = 0; o < outer; o++) gt.set(g.subarray((o * total + start) * inner, (o * total + start + l) * inner), o * l * inner);
      return gt;
    });
  });
}

/** Picks entries along `axis` by index: out[..., j, ...] = x[..., index[j], ...]. */
export function indexSelect(x: Tensor, axis: number, index: Int32Array | readonly number[]): Tensor {
  const a = normAxis('indexSelect', axis, x.ndim);
  const idx = index instanceof Int32Array ? index : Int32Array.from(index);
  const len = x.shape[a];
  for (let j = 0; j < idx.length; j++) {
    if (!(idx[j] >= 0 && idx[j] < len)) throw new Error(`indexSelect: index ${idx[j]} at position ${j} is out of range for axis ${axis} of length ${len}`);
  }
  const outer = numel(x.shape.slice(0, a));
  const inner = numel(x.shape.slice(a + 1));
  const shape = [...x.shape];
  shape[a] = idx.length;
  const data = allocLike(x.dtype, outer * idx.length * inner);
  kernels().gather(x.data, outer, len, inner, idx, data);
  return makeResult('indexSelect', shape, data, [x], (g) => {
    const gx = allocLike(x.dtype, x.size);
    kernels().scatterAdd(g, outer, len, inner, idx, gx);
    return [gx];
  });
}

/**
 * ONNX Gather: picks entries of `x` along `axis` by an index tensor given as flat indices and
 * their shape; the output shape is x.shape[:axis] + indexShape + x.shape[axis+1:]. Negative
 * indices count from the end; out-of-range ones throw. The gradient scatter-adds into x (an
 * embedding table's rows).
 */
export function gather(x: Tensor, axis: number, indices: Int32Array | readonly number[], indexShape: readonly number[]): Tensor {
  const a = normAxis('gather', axis, x.ndim);
  const count = numel(indexShape);
  if (indices.length !== count) throw new Error(`gather: ${indices.length} indices for index shape ${shapeStr(indexShape)}`);
  const len = x.shape[a];
  const idx = new Int32Array(count);
  for (let j = 0; j < count; j++) {
    const v = indices[j];
    const w = v < 0 ? v + len : v;
    if (!(Number.isInteger(w) && w >= 0 && w < len)) throw new Error(`gather: index ${v} at position ${j} is out of range for axis ${axis} of length ${len} (x ${shapeStr(x.shape)})`);
    idx[j] = w;
  }
  const outer = numel(x.shape.slice(0, a));
  const inner = numel(x.shape.slice(a + 1));
  const shape = [...x.shape.slice(0, a), ...indexShape, ...x.shape.slice(a + 1)];
  const data = allocLike(x.dtype, outer * count * inner);
  kernels().gather(x.data, outer, len, inner, idx, data);
  return makeResult('gather', shape, data, [x], (g) => {
    const gx = allocLike(x.dtype, x.size);
    kernels().scatterAdd(g, outer, len, inner, idx, gx);
    return [gx];
  });
}

/**
 * Broadcasts x to `shape` (ONNX Expand: the two shapes broadcast together, so the result may be
 * larger than `shape` on an axis where x is larger). The gradient sums back over broadcast axes.
 */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const out = broadcastShapes('expand', x.shape, shape);
  const data = expandTo(x, out);
  return makeResult('expand', out, data, [x], (g) => [sumToShape(g, out, x.shape)]);
}

/** Splits x along `axis` into pieces of the given sizes (which must add up to the axis length). */
export function split(x: Tensor, axis: number, sizes: readonly number[]): Tensor[] {
  const a = normAxis('split', axis, x.ndim);
  const total = sizes.reduce((p, c) => p + c, 0);
  if (sizes.some((s) => !(Number.isInteger(s) && s >= 0)) || total !== x.shape[a]) {
    throw new Error(`split: sizes [${sizes.join(', ')}] do not add up to axis ${axis} of ${shapeStr(x.shape)}`);
  }
  let start = 0;
  return sizes.map((s) => {
    const piece = slice(x, a, start, start + s);
    start += s;
    return piece;
  });
}

/** Repeats x `repeats[d]` times along each axis d (ONNX Tile), composed of reshape and expand. */
export function tile(x: Tensor, repeats: readonly number[]): Tensor {
  if (repeats.length !== x.ndim || repeats.some((r) => !(Number.isInteger(r) && r >= 0))) {
    throw new Error(`tile: repeats [${repeats.join(', ')}] do not fit ${shapeStr(x.shape)}`);
  }
  const interleaved = x.shape.flatMap((d) => [1, d]);
  const target = x.shape.flatMap((d, i) => [repeats[i], d]);
  return reshape(expand(reshape(x, interleaved), target), x.shape.map((d, i) => d * repeats[i]));
}
