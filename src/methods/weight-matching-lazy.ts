/**
 * Weight matching for checkpoints larger than memory: the same coordinate descent as
 * `weightMatching` (same seeded group order, same progress test, same float operations, hence the
 * same permutations), but each group's tensors of A and B are read when the group is visited and
 * dropped after its LAP matrix is built. Peak memory ≈ one group's tensors of A and B + n×n.
 * The tensors come from any `TensorSource`; io/align-lazy.ts reads them from safetensors files and
 * streams the aligned B to one. The logged cost is weightMatching's (the whole objective): each
 * matched tensor's share is scored while its group is in memory, and a tensor's last visit in a
 * sweep fixes every permutation on its axes for the rest of that sweep. Groups on version-2
 * entries (segments, blocks) take weightMatching's `generalGroupStep` on the group's tensors.
 */
import { kernels } from '../core/backend/index.js';
import { Rng } from '../core/random.js';
import { noGrad, type Tensor } from '../core/tensor.js';
import { InputError } from '../errors.js';
import { identityPerms, type Perms } from '../permutation/apply.js';
import { axisMatrix, permuteExceptAxis } from '../permutation/axes.js';
import { assertValidSpec, type PermutationSpec } from '../permutation/spec.js';
import { isBufferName } from '../state/params.js';
import type { StepCallback, StepLog } from './types.js';
import { bestGroupPermutation, generalGroupStep, isFlatGroup, matchingPlan, tensorObjective, WEIGHT_MATCHING_DEFAULTS } from './weight-matching.js';

/** Named tensors readable one at a time. */
export interface TensorSource {
  names: string[];
  shape(name: string): number[];
  read(name: string): Promise<Tensor>;
}

export interface LazyAlignInput {
  spec: PermutationSpec;
  a: TensorSource;
  b: TensorSource;
}

export interface WeightMatchingLazyOptions {
  maxSweeps?: number;
  seed?: number;
  onStep?: StepCallback;
  /** After each group: how many tensors (A and B together) were read for it. For tests/diagnostics. */
  onGroup?: (perm: string, tensorsRead: number) => void;
}

export interface LazyAlignResult {
  perms: Perms;
  log: StepLog[];
  steps: number;
  seconds: number;
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/** Same names and shapes in A and B, from the headers only. */
export function checkSources(a: TensorSource, b: TensorSource): Map<string, { shape: number[] }> {
  const bNames = new Set(b.names);
  const shapes = new Map<string, { shape: number[] }>();
  for (const name of a.names) {
    if (!bNames.has(name)) throw new InputError(`tensor "${name}" is in model A but not in model B`);
    const sa = a.shape(name);
    const sb = b.shape(name);
    if (!sameShape(sa, sb)) throw new InputError(`tensor "${name}" has shape [${sa.join(', ')}] in model A but [${sb.join(', ')}] in model B`);
    shapes.set(name, { shape: sa });
  }
  for (const name of b.names) if (!shapes.has(name)) throw new InputError(`tensor "${name}" is in model B but not in model A`);
  return shapes;
}

// Only tensors actually read are checked: the others are never touched by the matching.
function assertFiniteTensor(t: Tensor, name: string, what: string): void {
  const d = t.data;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i])) throw new InputError(`${what}: tensor "${name}" has a non-finite value (${d[i]}) at flat index ${i}`);
  }
}

export async function weightMatchingLazy(input: LazyAlignInput, opts: WeightMatchingLazyOptions = {}): Promise<LazyAlignResult> {
  const { spec, a, b } = input;
  const shapes = checkSources(a, b);
  assertValidSpec(spec, shapes);
  const maxSweeps = opts.maxSweeps ?? WEIGHT_MATCHING_DEFAULTS.maxSweeps;
  if (!(Number.isInteger(maxSweeps) && maxSweeps >= 1)) throw new Error(`weightMatchingLazy: maxSweeps must be an integer ≥ 1, got ${maxSweeps}`);
  const rng = new Rng(opts.seed ?? 0);
  const perms = identityPerms(spec);
  // Same id list and order as weightMatching, so the shuffles match.
  const { ids, byPerm, tensors } = matchingPlan(spec);
  const share = new Map<string, number>();
  const t0 = performance.now();
  const log: StepLog[] = [];
  let sweeps = 0;
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    sweeps = sweep + 1;
    let progress = false;
    for (const p of rng.shuffle([...ids])) {
      const entries = byPerm[p].filter((e) => !isBufferName(e.name));
      // This group's tensors only; they go out of scope when the group is done.
      const ta = new Map<string, Tensor>();
      const tb = new Map<string, Tensor>();
      for (const e of entries) {
        if (ta.has(e.name)) continue;
        const x = await a.read(e.name);
        const y = await b.read(e.name);
        assertFiniteTensor(x, e.name, 'model A');
        assertFiniteTensor(y, e.name, 'model B');
        ta.set(e.name, x);
        tb.set(e.name, y);
      }
      opts.onGroup?.(p, ta.size + tb.size);
      if (!isFlatGroup(spec, entries)) {
        const step = noGrad(() => generalGroupStep(spec, p, entries, (name) => ta.get(name)!, (name) => tb.get(name)!, perms));
        Object.assign(perms, step.updates);
        if (step.improved) progress = true;
        for (const [name, x] of ta) share.set(name, tensorObjective(spec, name, x, tb.get(name)!, perms));
        continue;
      }
      const n = spec.perms[p];
      const M = new Float32Array(n * n);
      noGrad(() => {
        for (const e of entries) {
          const wa = axisMatrix(ta.get(e.name)!, e.axis, e.inner);
          const wb = axisMatrix(permuteExceptAxis(spec, e.name, tb.get(e.name)!, perms, e.axis), e.axis, e.inner);
          const rest = wa.length / n;
          kernels().gemm(false, true, n, n, rest, 1, wa, 0, rest, wb, 0, rest, 1, M, 0, n);
        }
      });
      const best = bestGroupPermutation(M, n, perms[p]);
      if (best.improved) progress = true;
      perms[p] = best.perm;
      for (const [name, x] of ta) share.set(name, tensorObjective(spec, name, x, tb.get(name)!, perms));
    }
    let objective = 0;
    for (const name of tensors) objective += share.get(name)!;
    const entry: StepLog = { step: sweeps, cost: -objective, seconds: (performance.now() - t0) / 1000 };
    log.push(entry);
    if (opts.onStep?.(entry) === true) break;
    if (!progress) break;
  }
  return { perms, log, steps: sweeps, seconds: (performance.now() - t0) / 1000 };
}
