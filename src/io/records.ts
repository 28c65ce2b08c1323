import { numel } from '../core/tensor.js';
import { FormatError } from './errors.js';

/** One dense float32 array in C (row-major) order. Layouts follow PyTorch: Linear [out, in], Conv2d [out, in, kh, kw]. */
export interface ArrayRecord {
  shape: number[];
  data: Float32Array;
}

/** Parameter name (PyTorch style, e.g. `layers.0.weight`) → array. Map keeps insertion order, which writers preserve. */
export type StateDict = Map<string, ArrayRecord>;

/** Human-readable multi-index of flat position `flat` in a C-order array of `shape`. */
export function unravelIndex(flat: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length).fill(0);
  let rest = flat;
  for (let k = shape.length - 1; k >= 0; k--) {
    const d = shape[k];
    if (d > 0) {
      idx[k] = rest % d;
      rest = Math.floor(rest / d);
    }
  }
  return idx;
}

/** Index of the first NaN/±Inf in `data`, or -1. */
export function firstNonFinite(data: ArrayLike<number>, from = 0, to = data.length): number {
  for (let i = from; i < to; i++) {
    const v = data[i];
    // v - v is 0 for finite v and NaN for NaN/±Inf: one test covers both.
    if (v - v !== 0) return i;
  }
  return -1;
}

/** The FormatError thrown when tensor `name` holds a non-finite value at flat index `i`. */
export function nonFiniteError(source: string, name: string, rec: ArrayRecord, i: number): FormatError {
  const where = rec.shape.length > 1 ? ` (position [${unravelIndex(i, rec.shape).join(', ')}])` : '';
  return new FormatError(source, name, `non-finite value ${rec.data[i]} at index ${i}${where}`, {
    label: `tensor "${name}"`,
  });
}

/**
 * Throws a FormatError naming the first tensor (in dict order) that holds NaN or ±Inf and the
 * index of the bad value. Merged models with NaNs are almost always a bug upstream, so writers
 * call this by default rather than save a poisoned checkpoint.
 */
export function validateFinite(dict: StateDict, source: string): void {
  for (const [name, rec] of dict) {
    const i = firstNonFinite(rec.data);
    if (i >= 0) throw nonFiniteError(source, name, rec, i);
  }
}

/**
 * Checks that a record is internally consistent before it is written: a shape of non-negative
 * integers and data of exactly numel(shape) float32 values. A mismatch is a caller bug, so this
 * throws TypeError/RangeError, not FormatError.
 */
export function checkRecord(name: string, rec: ArrayRecord): void {
  if (rec === null || typeof rec !== 'object') throw new TypeError(`tensor "${name}": expected { shape, data }`);
  if (!Array.isArray(rec.shape) || !rec.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new TypeError(`tensor "${name}": shape must be an array of non-negative integers, got ${JSON.stringify(rec.shape)}`);
  }
  if (!(rec.data instanceof Float32Array)) throw new TypeError(`tensor "${name}": data must be a Float32Array`);
  const n = numel(rec.shape);
  if (rec.data.length !== n) {
    throw new RangeError(`tensor "${name}": shape [${rec.shape.join(', ')}] has ${n} elements but data has ${rec.data.length}`);
  }
}
