/**
 * Finite-difference gradient checking for the autodiff core.
 *
 * The analytic gradient of loss = Σ fn(inputs) ⊙ R (R a fixed random tensor; for a scalar output
 * R is 1) is compared element by element with the central difference (f(x+ε) − f(x−ε)) / 2ε.
 * Runs in float64 on the pure-TS kernels so truncation (O(ε²)) and round-off (O(u/ε)) stay far
 * below the tolerances.
 */
import { jsBackend, setBackend } from '../../src/core/backend/index.js';
import * as F from '../../src/core/ops/index.js';
import { Rng } from '../../src/core/random.js';
import { noGrad, shapeStr, Tensor } from '../../src/core/tensor.js';

export interface GradcheckOptions {
  eps?: number;
  rtol?: number;
  atol?: number;
  /** Seed of the output weighting R. */
  seed?: number;
}

export interface GradcheckReport {
  /** Largest |analytic − numeric| over all checked elements. */
  maxAbsErr: number;
  /** Number of elements perturbed. */
  checked: number;
}

/** Fixed output weighting R for a given output shape (standard normal, seeded). */
function weighting(out: Tensor, seed: number): Tensor {
  const r = new Float64Array(out.size);
  new Rng(seed).fillNormal(r);
  return new Tensor(r, out.shape);
}

/** Σ out ⊙ R in plain float64 (independent of the ops under test). */
function weightedSum(out: Tensor, r: Tensor): number {
  let s = 0;
  for (let i = 0; i < out.size; i++) s += out.data[i] * r.data[i];
  return s;
}

/**
 * Throws (with op, input, element, both values) when an analytic gradient disagrees with finite
 * differences. Every input that requires grad is perturbed element by element; the others must
 * come back with `.grad === null`.
 */
export function gradcheck(fn: (...inputs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckReport {
  const eps = opts.eps ?? 1e-6;
  const rtol = opts.rtol ?? 1e-5;
  const atol = opts.atol ?? 1e-6;
  const prev = setBackend(jsBackend);
  try {
    for (const [i, t] of inputs.entries()) {
      if (t.dtype !== 'float64') throw new Error(`gradcheck: input ${i} is ${t.dtype}; finite differences need float64`);
      t.grad = null;
    }
    if (!inputs.some((t) => t.requiresGrad)) throw new Error('gradcheck: no input requires grad');

    // Analytic gradient through the tape: the loss is built with ops, so mul and sum are in the tape too.
    const out = fn(...inputs);
    const r = weighting(out, opts.seed ?? 1234);
    const loss = out.size === 1 && out.ndim === 0 ? out : F.sum(F.mul(out, r));
    loss.backward();
    const analytic = inputs.map((t) => (t.grad ? Float64Array.from(t.grad.data) : null));
    inputs.forEach((t, i) => {
      if (!t.requiresGrad && analytic[i]) throw new Error(`gradcheck: input ${i} does not require grad but got a .grad`);
      if (t.requiresGrad && t.grad && (t.grad.shape.length !== t.shape.length || t.grad.shape.some((d, j) => d !== t.shape[j]))) {
        throw new Error(`gradcheck: .grad of input ${i} has shape ${shapeStr(t.grad.shape)}, input has ${shapeStr(t.shape)}`);
      }
    });

    const f = (): number => noGrad(() => {
      const o = fn(...inputs);
      return out.ndim === 0 && out.size === 1 ? o.data[0] : weightedSum(o, r);
    });
    let maxAbsErr = 0;
    let checked = 0;
    inputs.forEach((t, i) => {
      if (!t.requiresGrad) return;
      const g = analytic[i] ?? new Float64Array(t.size); // an unreached input has zero gradient
      for (let j = 0; j < t.size; j++) {
        const v = t.data[j];
        t.data[j] = v + eps;
        const fp = f();
        t.data[j] = v - eps;
        const fm = f();
        t.data[j] = v;
        const num = (fp - fm) / (2 * eps);
        const err = Math.abs(g[j] - num);
        checked++;
        if (!(err <= atol + rtol * Math.abs(num))) {
          throw new Error(`gradcheck: input ${i} ${shapeStr(t.shape)} element ${j}: analytic ${g[j]} vs numeric ${num} (|diff| ${err})`);
        }
        maxAbsErr = Math.max(maxAbsErr, err);
      }
    });
    for (const t of inputs) t.grad = null;
    return { maxAbsErr, checked };
  } finally {
    setBackend(prev);
  }
}
