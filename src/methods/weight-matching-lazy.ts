/**
 * Weight matching for checkpoints larger than memory: the same coordinate descent as
 * `weightMatching` (same seeded group order, same progress test, same float operations, hence the
 * same permutations), with tensors read from any `TensorSource` when needed and dropped after.
 * Every group streams — the residual stream of a transformer touches nearly every tensor: its
 * matrices (weightMatching's `groupStepAccumulator`) take one tensor pair of A and B at a time,
 * and the tensors whose last visit in the sweep this is are read once more to score them. Peak
 * memory ≈ the largest tensor of A and B + the group's n×n (`lazyMemoryBound`); a sweep reads each
 * tensor once per group on its axes and once more to score it. io/align-lazy.ts reads the tensors
 * from safetensors files and streams the aligned B to one. The logged cost is weightMatching's
 * (the whole objective): a tensor is scored at its last visit in a sweep, after which every
 * permutation on its axes stays as it is (a heads step also sets the heads' inner permutations,
 * which sit on the same tensors).
 */
import { Rng } from '../core/random.js';
import { noGrad, type Tensor } from '../core/tensor.js';
import { InputError } from '../errors.js';
import { identityPerms, type Perms } from '../permutation/apply.js';
import { assertValidSpec, type PermutationSpec } from '../permutation/spec.js';
import { isBufferName } from '../state/params.js';
import type { StepCallback, StepLog } from './types.js';
import { groupStepAccumulator, groupTensorCounts, matchingPlan, sweepOrder, tensorObjective, WEIGHT_MATCHING_DEFAULTS } from './weight-matching.js';

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
  /** After each group: what it read and the most it held at once (tensors of A and B together, float32 bytes). */
  onGroup?: (perm: string, reads: GroupReads) => void;
}

export interface GroupReads {
  tensorsRead: number;
  bytesRead: number;
  /** The most tensors / float32 bytes held at once while the group was visited. */
  peakTensors: number;
  peakBytes: number;
}

export interface LazyAlignResult {
  perms: Perms;
  log: StepLog[];
  steps: number;
  seconds: number;
  /** The most float32 bytes of tensors held at once over the run, and in which group. */
  peakBytes: number;
  peakGroup: string;
}

/** Bytes of a tensor of this shape held as float32 (how tensors are read into memory). */
export const float32Bytes = (shape: readonly number[]) => 4 * shape.reduce((x, y) => x * y, 1);

/**
 * What weightMatchingLazy holds at most at once, from the spec and the shapes alone: the float32
 * bytes of the largest matched tensor of A and B (the groups' n×n matrices aside).
 */
export function lazyMemoryBound(spec: PermutationSpec, shape: (name: string) => readonly number[]): { bytes: number; tensor: string } {
  let bound = { bytes: 0, tensor: '' };
  for (const name of matchingPlan(spec).tensors) {
    const bytes = 2 * float32Bytes(shape(name));
    if (bytes > bound.bytes) bound = { bytes, tensor: name };
  }
  return bound;
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
  const counts = groupTensorCounts(byPerm, ids);
  const share = new Map<string, number>();
  const t0 = performance.now();
  const log: StepLog[] = [];
  let sweeps = 0;
  let peak = { bytes: 0, group: '' };
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    sweeps = sweep + 1;
    let progress = false;
    const order = sweepOrder(rng, ids, sweep === 0, counts);
    // Each tensor is scored at its last visit of the sweep (later groups leave its axes alone).
    const lastVisit = new Map<string, string>();
    for (const p of order) for (const e of byPerm[p]) if (!isBufferName(e.name)) lastVisit.set(e.name, p);
    for (const p of order) {
      const entries = byPerm[p].filter((e) => !isBufferName(e.name));
      const reads: GroupReads = { tensorsRead: 0, bytesRead: 0, peakTensors: 0, peakBytes: 0 };
      let heldTensors = 0;
      let heldBytes = 0;
      // A and B's tensor `name`, counted as held until `release`.
      const readPair = async (name: string): Promise<[Tensor, Tensor]> => {
        const x = await a.read(name);
        const y = await b.read(name);
        assertFiniteTensor(x, name, 'model A');
        assertFiniteTensor(y, name, 'model B');
        const bytes = 2 * float32Bytes(x.shape);
        reads.tensorsRead += 2;
        reads.bytesRead += bytes;
        heldTensors += 2;
        heldBytes += bytes;
        reads.peakTensors = Math.max(reads.peakTensors, heldTensors);
        reads.peakBytes = Math.max(reads.peakBytes, heldBytes);
        return [x, y];
      };
      const release = (x: Tensor) => { heldTensors -= 2; heldBytes -= 2 * float32Bytes(x.shape); };
      const scoredHere = [...new Set(entries.map((e) => e.name))].filter((name) => lastVisit.get(name) === p);
      // One tensor pair of A and B at a time into the group's matrices (entries in weightMatching's order).
      const step = groupStepAccumulator(spec, p, perms);
      for (const e of entries) {
        const [x, y] = await readPair(e.name);
        noGrad(() => step.add(e, x, y));
        release(x);
      }
      const { updates, improved } = noGrad(() => step.finish());
      Object.assign(perms, updates);
      if (improved) progress = true;
      for (const name of scoredHere) {
        const [x, y] = await readPair(name);
        share.set(name, tensorObjective(spec, name, x, y, perms));
        release(x);
      }
      if (reads.peakBytes > peak.bytes) peak = { bytes: reads.peakBytes, group: p };
      opts.onGroup?.(p, reads);
    }
    let objective = 0;
    for (const name of tensors) objective += share.get(name)!;
    const entry: StepLog = { step: sweeps, cost: -objective, seconds: (performance.now() - t0) / 1000 };
    log.push(entry);
    if (opts.onStep?.(entry) === true) break;
    if (!progress) break;
  }
  return { perms, log, steps: sweeps, seconds: (performance.now() - t0) / 1000, peakBytes: peak.bytes, peakGroup: peak.group };
}
