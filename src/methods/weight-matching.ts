/**
 * Weight matching (Ainsworth et al., Git Re-Basin, ICLR 2023, Algorithm 1; method.md §8.2):
 * maximise Σ_tensors ⟨W_A, π(W_B)⟩ by coordinate descent over permutation groups. For group p,
 * with every other permutation fixed, the objective is linear in P_p:
 *   M_p = Σ_{(tensor, axis) ∈ p} W_A^(axis) · (π_{¬p}(W_B)^(axis))ᵀ,
 * where X^(axis) moves that axis first and flattens the rest; the best P_p is the linear
 * assignment maximising ⟨M_p, P_p⟩. Groups are visited in a seeded random order each sweep until a
 * sweep improves nothing (or maxSweeps).
 */
import { kernels } from '../core/backend/index.js';
import { Rng } from '../core/random.js';
import { noGrad } from '../core/tensor.js';
import { linearSumAssignment } from '../permutation/assignment.js';
import { applyHard, identityPerms } from '../permutation/apply.js';
import { axisMatrix, permuteExceptAxis } from '../permutation/axes.js';
import { assertValidSpec, permToAxes } from '../permutation/spec.js';
import { assertCompatible } from './validate.js';
import type { Params } from '../permutation/apply.js';
import { isBufferName, type AlignInput, type AlignResult, type StepCallback, type StepLog } from './types.js';

export interface WeightMatchingOptions {
  maxSweeps?: number; // 100, as Git Re-Basin
  seed?: number;
  /** Start from these permutations instead of the identity (STE warm-starts with the previous ones). */
  init?: Record<string, Int32Array>;
  /** Cost of the hard-permuted B after each sweep, for the log (e.g. a weight distance). */
  hardCost?: (alignedB: Params) => number;
  onStep?: StepCallback;
}

/** One coordinate-descent step: the permutation maximising ⟨M, P⟩, and whether it beats `old`. */
export function bestGroupPermutation(M: Float32Array, n: number, old: Int32Array): { perm: Int32Array; total: number; improved: boolean } {
  const cost = Float64Array.from(M);
  const { colInd, total } = linearSumAssignment(cost, n, n, { maximize: true });
  let oldTotal = 0;
  for (let i = 0; i < n; i++) oldTotal += cost[i * n + old[i]];
  // Relative tolerance: M is accumulated in float32.
  return { perm: Int32Array.from(colInd), total, improved: total > oldTotal + 1e-7 * Math.max(1, Math.abs(oldTotal)) };
}

export function weightMatching(input: AlignInput, opts: WeightMatchingOptions = {}): AlignResult {
  const { spec, a, b } = input;
  assertValidSpec(spec, a);
  assertCompatible(a, b);
  const maxSweeps = opts.maxSweeps ?? 100;
  if (!(Number.isInteger(maxSweeps) && maxSweeps >= 1)) throw new Error(`weightMatching: maxSweeps must be an integer ≥ 1, got ${maxSweeps}`);
  const rng = new Rng(opts.seed ?? 0);
  const perms = opts.init ? Object.fromEntries(Object.entries(opts.init).map(([k, v]) => [k, Int32Array.from(v)])) : identityPerms(spec);
  const byPerm = permToAxes(spec);
  const ids = Object.keys(spec.perms).filter((p) => byPerm[p]?.some((e) => !isBufferName(e.name)));
  const t0 = performance.now();
  const log: AlignResult['log'] = [];
  let sweeps = 0;
  let loggingMs = 0;
  noGrad(() => {
    // A's side never changes: flatten each (tensor, axis) once.
    const aMats = new Map<string, Float32Array>();
    for (const p of ids) {
      for (const e of byPerm[p]) {
        if (isBufferName(e.name)) continue;
        const t = a.get(e.name)!;
        aMats.set(`${e.name}#${e.axis}`, axisMatrix(t, e.axis, e.inner));
      }
    }
    for (let sweep = 0; sweep < maxSweeps; sweep++) {
      sweeps = sweep + 1;
      let progress = false;
      let objective = 0;
      for (const p of rng.shuffle([...ids])) {
        const n = spec.perms[p];
        const M = new Float32Array(n * n);
        for (const e of byPerm[p]) {
          if (isBufferName(e.name)) continue;
          const wa = aMats.get(`${e.name}#${e.axis}`)!;
          const wb = axisMatrix(permuteExceptAxis(spec, e.name, b.get(e.name)!, perms, e.axis), e.axis, e.inner);
          const rest = wa.length / n;
          kernels().gemm(false, true, n, n, rest, 1, wa, 0, rest, wb, 0, rest, 1, M, 0, n);
        }
        const best = bestGroupPermutation(M, n, perms[p]);
        if (best.improved) progress = true;
        perms[p] = best.perm;
        objective = best.total;
      }
      const entry: StepLog = { step: sweeps, cost: -objective, seconds: (performance.now() - t0 - loggingMs) / 1000 };
      if (opts.hardCost) {
        // Logging only: its time is kept out of the method's reported seconds.
        const l0 = performance.now();
        entry.hardCost = opts.hardCost(applyHard(spec, b, perms));
        loggingMs += performance.now() - l0;
      }
      log.push(entry);
      if (opts.onStep?.(entry) === true) break;
      if (!progress) break;
    }
  });
  const aligned = noGrad(() => applyHard(spec, b, perms));
  return { method: 'wm', perms, aligned, log, steps: sweeps, seconds: (performance.now() - t0 - loggingMs) / 1000 };
}
