/** Input checks shared by the methods: same tensor names and shapes in A and B, finite values. */
import { kernels } from '../core/backend/index.js';
import { InputError } from '../errors.js';
import type { Params } from '../state/params.js';
import { shapeStr } from '../core/tensor.js';

export function assertCompatible(a: Params, b: Params): void {
  for (const [name, ta] of a) {
    const tb = b.get(name);
    if (!tb) throw new InputError(`tensor "${name}" is in model A but not in model B`);
    if (ta.shape.length !== tb.shape.length || ta.shape.some((d, i) => d !== tb.shape[i])) {
      throw new InputError(`tensor "${name}" has shape ${shapeStr(ta.shape)} in model A but ${shapeStr(tb.shape)} in model B`);
    }
  }
  for (const name of b.keys()) if (!a.has(name)) throw new InputError(`tensor "${name}" is in model B but not in model A`);
  assertFinite(a, 'model A');
  assertFinite(b, 'model B');
}

export function assertFinite(p: Params, what: string): void {
  const k = kernels();
  for (const [name, t] of p) {
    const d = t.data;
    // A float64 sum of squares is finite when every entry is (float32 entries cannot overflow it);
    // only a tensor that fails it is scanned for the first bad entry.
    if (Number.isFinite(k.sumSquares(d))) continue;
    for (let i = 0; i < d.length; i++) {
      if (!Number.isFinite(d[i])) throw new InputError(`${what}: tensor "${name}" has a non-finite value (${d[i]}) at flat index ${i}`);
    }
  }
}
