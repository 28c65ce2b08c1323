/** Small tensor factories and comparisons shared by the core tests. */
import assert from 'node:assert/strict';
import { Rng } from '../../src/core/random.js';
import { allocLike, numel, type DType, type Shape, Tensor } from '../../src/core/tensor.js';
import type { FloatArray } from '../../src/core/backend/types.js';

export interface RandOptions {
  lo?: number;
  hi?: number;
  dtype?: DType;
  requiresGrad?: boolean;
  /** Keep every value at least `margin` away from each of these points (kinks of relu/abs/clamp). */
  avoid?: number[];
  margin?: number;
}

/** Uniform random tensor; values near `avoid` points are redrawn. */
export function randT(shape: Shape, rng: Rng, o: RandOptions = {}): Tensor {
  const lo = o.lo ?? -1;
  const hi = o.hi ?? 1;
  const margin = o.margin ?? 0.05;
  const data = allocLike(o.dtype ?? 'float64', numel(shape));
  for (let i = 0; i < data.length; i++) {
    let v: number;
    do v = lo + (hi - lo) * rng.uniform();
    while ((o.avoid ?? []).some((p) => Math.abs(v - p) < margin));
    data[i] = v;
  }
  return new Tensor(data, shape, o.requiresGrad ?? true);
}

/** Values that are pairwise at least ~0.1 apart in random order (max/maxPool without ties). */
export function distinctT(shape: Shape, rng: Rng, dtype: DType = 'float64', requiresGrad = true): Tensor {
  const n = numel(shape);
  const perm = rng.permutation(n);
  const data = allocLike(dtype, n);
  for (let i = 0; i < n; i++) data[i] = (perm[i] - n / 2) * 0.1 + 0.02 * rng.uniform();
  return new Tensor(data, shape, requiresGrad);
}

export function fromArray(values: number[], shape: Shape, dtype: DType = 'float64', requiresGrad = false): Tensor {
  const data = allocLike(dtype, values.length);
  data.set(values);
  return new Tensor(data, shape, requiresGrad);
}

/** Asserts |a − e| ≤ atol + rtol·|e| elementwise, reporting the first offending index. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 1e-10, atol = 1e-12, what = 'values'): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} vs expected ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Object.is(a, e) || (Number.isNaN(a) && Number.isNaN(e))) continue;
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) {
      assert.fail(`${what}[${i}]: got ${a}, expected ${e} (|diff| ${Math.abs(a - e)})`);
    }
  }
}

export function assertShape(t: Tensor, shape: Shape, what = 'shape'): void {
  assert.deepEqual([...t.shape], [...shape], what);
}

/** Row-major strides of a packed shape. */
export function stridesOf(shape: Shape): number[] {
  const st = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

/** Multi-index of flat position `flat` in a packed shape. */
export function unravel(flat: number, shape: Shape): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = flat % shape[d];
    flat = Math.floor(flat / shape[d]);
  }
  return idx;
}

export function ravel(idx: readonly number[], shape: Shape): number {
  let f = 0;
  for (let d = 0; d < shape.length; d++) f = f * shape[d] + idx[d];
  return f;
}

export function toF64(a: FloatArray): Float64Array {
  return Float64Array.from(a);
}
