/**
 * Model states as named tensor maps, the one shared type of every floor above the core: PyTorch
 * names and layouts, weights and buffers in one map. Splitting weights from BN statistics,
 * interpolation and weighted averages; differentiable in the tensors (the Mid/Rnd costs train
 * through `lerpState`).
 */
import { F, noGrad, type Tensor } from '../core/index.js';
import { InputError } from '../errors.js';

/** Named tensors with PyTorch names and layouts (Linear `[out, in]`, Conv2d `[out, in, kh, kw]`). */
export type Params = Map<string, Tensor>;

/** BatchNorm statistics are buffers, not weights. */
export function isBufferName(name: string): boolean {
  return /(^|\.)(running_mean|running_var|num_batches_tracked)$/.test(name);
}

/**
 * BatchNorm's step counter: an integer buffer that no permutation touches and that rebasin does
 * not write (PyTorch fills it in when a state dict lacks it).
 */
export function isBatchCounter(name: string): boolean {
  return /(^|\.)num_batches_tracked$/.test(name);
}

/** Splits a state into trainable weights and buffers (BN running statistics). */
export function splitState(state: Params): { params: Params; buffers: Params } {
  const params: Params = new Map();
  const buffers: Params = new Map();
  for (const [k, v] of state) (isBufferName(k) ? buffers : params).set(k, v);
  return { params, buffers };
}

export function mergeState(params: Params, buffers: Params): Params {
  return new Map([...params, ...buffers]);
}

/** (1 − λ)·a + λ·b for every tensor (names and shapes must agree). */
export function lerpState(a: Params, b: Params, lambda: number): Params {
  const out: Params = new Map();
  for (const [name, ta] of a) {
    const tb = b.get(name);
    if (!tb) throw new Error(`lerpState: tensor "${name}" missing from the second model`);
    if (lambda === 0) out.set(name, ta);
    else if (lambda === 1) out.set(name, tb);
    else out.set(name, F.add(F.mulScalar(ta, 1 - lambda), F.mulScalar(tb, lambda)));
  }
  return out;
}

/** Σ_i w_i · state_i with weights summing to 1 (model merging). */
export function weightedAverage(states: Params[], weights?: number[]): Params {
  if (states.length === 0) throw new Error('weightedAverage: no models');
  const w = weights ?? states.map(() => 1 / states.length);
  if (w.length !== states.length) throw new Error(`weightedAverage: ${w.length} weights for ${states.length} models`);
  return noGrad(() => {
    const out: Params = new Map();
    for (const name of states[0].keys()) {
      let acc: Tensor | null = null;
      states.forEach((s, i) => {
        const t = s.get(name);
        if (!t) throw new Error(`weightedAverage: tensor "${name}" missing from model ${i + 1}`);
        const term = F.mulScalar(t, w[i]);
        acc = acc ? F.add(acc, term) : term;
      });
      out.set(name, acc!);
    }
    return out;
  });
}

/** A detached deep copy (leaves, no graph). */
export function cloneState(s: Params): Params {
  return new Map([...s].map(([k, v]) => [k, v.clone()]));
}

/**
 * Averaging weights for n models: `weights` (non-negative, finite, with a positive finite sum)
 * normalised to sum 1, or uniform. Throws a one-line message naming the problem.
 */
export function mergeWeights(n: number, weights?: readonly number[]): number[] {
  if (!(Number.isInteger(n) && n >= 2)) throw new InputError(`merge needs at least two models, got ${n}`);
  if (!weights) return Array.from({ length: n }, () => 1 / n);
  if (weights.length !== n) throw new InputError(`${weights.length} weights for ${n} models`);
  const bad = weights.findIndex((w) => !(Number.isFinite(w) && w >= 0));
  if (bad >= 0) throw new InputError(`weight ${bad + 1} is ${weights[bad]}; weights must be finite and non-negative`);
  const total = weights.reduce((s, w) => s + w, 0);
  if (!(total > 0)) throw new InputError('the weights sum to zero');
  if (!Number.isFinite(total)) throw new InputError('the weights overflow: their sum is not a finite number');
  return weights.map((w) => w / total);
}
