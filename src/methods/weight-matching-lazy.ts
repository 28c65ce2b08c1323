/**
 * Weight matching for checkpoints larger than memory: the same coordinate descent as
 * `weightMatching` (same seeded group order, same progress test, same float operations, hence the
 * same permutations), but each group's tensors of A and B are read when the group is visited and
 * dropped after its LAP matrix is built. Peak memory ≈ one group's tensors of A and B + n×n.
 * The aligned B is then streamed tensor by tensor to a safetensors file.
 */
import { kernels } from '../core/backend/index.js';
import { Rng } from '../core/random.js';
import { noGrad, Tensor } from '../core/tensor.js';
import { CheckFailedError, InputError } from '../errors.js';
import { openSafetensors, writeSafetensorsStreaming } from '../io/safetensors.js';
import { bestGroupPermutation } from './weight-matching.js';
import { applyHard, identityPerms, invertPerms, type Perms } from '../permutation/apply.js';
import { axisMatrix, permuteExceptAxis } from '../permutation/axes.js';
import { assertValidSpec, permToAxes, type PermutationSpec } from '../permutation/spec.js';
import { isBatchCounter, isBufferName } from '../state/params.js';
import type { StepCallback, StepLog } from './types.js';

/** Named tensors readable one at a time. */
export interface TensorSource {
  names: string[];
  shape(name: string): number[];
  read(name: string): Promise<Tensor>;
}

export interface SafetensorsSource extends TensorSource {
  path: string;
  metadata: Record<string, string>;
  close(): Promise<void>;
}


/**
 * A lazy source over a safetensors file. num_batches_tracked is left out, as readModelFile does
 * for the in-memory path (the aligned output never carries it). Call close().
 */
export async function safetensorsSource(path: string): Promise<SafetensorsSource> {
  const r = await openSafetensors(path);
  return {
    path,
    metadata: r.metadata,
    names: r.names.filter((n) => !isBatchCounter(n)),
    shape: (name) => r.info(name).shape,
    read: async (name) => {
      const rec = await r.read(name);
      return new Tensor(rec.data, rec.shape);
    },
    close: () => r.close(),
  };
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
function checkSources(a: TensorSource, b: TensorSource): Map<string, { shape: number[] }> {
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
  const maxSweeps = opts.maxSweeps ?? 100;
  if (!(Number.isInteger(maxSweeps) && maxSweeps >= 1)) throw new Error(`weightMatchingLazy: maxSweeps must be an integer ≥ 1, got ${maxSweeps}`);
  const rng = new Rng(opts.seed ?? 0);
  const perms = identityPerms(spec);
  const byPerm = permToAxes(spec);
  // Same id list and order as weightMatching, so the shuffles match.
  const ids = Object.keys(spec.perms).filter((p) => byPerm[p]?.some((e) => !isBufferName(e.name)));
  const t0 = performance.now();
  const log: StepLog[] = [];
  let sweeps = 0;
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    sweeps = sweep + 1;
    let progress = false;
    let objective = 0;
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
      objective = best.total;
    }
    const entry: StepLog = { step: sweeps, cost: -objective, seconds: (performance.now() - t0) / 1000 };
    log.push(entry);
    if (opts.onStep?.(entry) === true) break;
    if (!progress) break;
  }
  return { perms, log, steps: sweeps, seconds: (performance.now() - t0) / 1000 };
}

export interface StreamingApplyResult {
  tensors: number;
  /** Structural check: max |undo(π(B)) − B| over every tensor (0 when the permutation is exact). */
  maxAbsDiff: number;
}

/**
 * Writes π(B) to `outPath` (F32 safetensors, atomically), reading B one tensor at a time. Each
 * permuted tensor is also un-permuted and compared with B exactly; a difference aborts the write
 * (CheckFailedError), so a bad result is never left on disk.
 */
export async function applyPermutationsStreaming(
  spec: PermutationSpec,
  bPath: string,
  perms: Perms,
  outPath: string,
  metadata: Record<string, string> = {},
): Promise<StreamingApplyResult> {
  const src = await safetensorsSource(bPath);
  try {
    const missing = src.names.filter((n) => !Object.prototype.hasOwnProperty.call(spec.axes, n));
    if (missing.length) throw new InputError(`${bPath}: tensor "${missing[0]}" is not covered by the permutation spec${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ''}`);
    const inverse = invertPerms(perms);
    let maxAbsDiff = 0;
    const entries = src.names.map((name) => ({ name, shape: src.shape(name).slice() }));
    await writeSafetensorsStreaming(outPath, entries, async (name) => {
      const t = await src.read(name);
      const one = new Map([[name, t]]);
      const out = noGrad(() => applyHard(spec, one, perms)).get(name)!;
      const back = noGrad(() => applyHard(spec, new Map([[name, out]]), inverse)).get(name)!;
      let diff = 0;
      for (let i = 0; i < t.size; i++) diff = Math.max(diff, Math.abs(back.data[i] - t.data[i]));
      if (!(diff === 0)) throw new CheckFailedError(`tensor "${name}": undoing the permutation differs from B by ${diff}; nothing was written`);
      maxAbsDiff = Math.max(maxAbsDiff, diff);
      return out.data instanceof Float32Array ? out.data : Float32Array.from(out.data);
    }, { dtype: 'F32', metadata });
    return { tensors: entries.length, maxAbsDiff };
  } finally {
    await src.close();
  }
}
