/**
 * Activation matching (Ainsworth et al., Git Re-Basin, ICLR 2023, §3.1; method.md §8.3): run
 * both models over training data (eval mode, no grad), read each permutation's activations
 * z_A, z_B ∈ ℝⁿ (post-ReLU; conv maps as (batch·h·w, channels) rows; where they are read is
 * derived from the graph, see models/activations.ts), and solve one linear assignment per
 * permutation, maximising Σ_i M[i, perm[i]] with
 *   'cross':       M = E[z_A z_Bᵀ]                         (the reference's default; OLS-equivalent)
 *   'correlation': M_ij = Cov(z_A,i, z_B,j) / (σ_A,i σ_B,j)  (Pearson; the reference's VGG script)
 * Statistics are accumulated online in float64. Permutations are independent: one LAP each, no
 * iteration. Unit i of π(B) ← unit perm[i] of B, the unit whose activations best match A's unit i.
 */
import { kernels } from '../core/backend/index.js';
import { noGrad, Tensor } from '../core/tensor.js';
import { batches, type Dataset } from '../data/dataset.js';
import { InputError } from '../errors.js';
import { activationPoints, activationRows, assertDataFitsModel, assertStateFitsModel, forwardRecording, headRows, type BlockActivations } from '../models/activations.js';
import type { Model } from '../models/model.js';
import { splitState } from '../state/params.js';
import { applyHard } from '../permutation/apply.js';
import { linearSumAssignment } from '../permutation/assignment.js';
import { assertValidSpec, entryPermIds, isFlatAxis } from '../permutation/spec.js';
import type { AlignInput, AlignResult, StepLog } from './types.js';
import { assertCompatible } from './validate.js';

export type ActivationStatistic = 'cross' | 'correlation';

export interface ActivationMatchingOptions {
  /** The architecture of A and B (its graph says where each permutation's activations are). */
  model: Model;
  /** Training data (labels unused). */
  data: Dataset;
  /** Default 500, as the reference. */
  batchSize?: number;
  /** Use only the first maxSamples samples (default: all). */
  maxSamples?: number;
  /** Default 'cross'. */
  statistic?: ActivationStatistic;
  /** Called after every batch with the samples seen so far and the total. */
  onProgress?: (seen: number, total: number) => void;
}

/** The defaults of the options above. */
export const ACTIVATION_MATCHING_DEFAULTS = { batchSize: 500, statistic: 'cross' as ActivationStatistic };

/** Rows per float32 gemm before its product is added to the float64 sums. */
const CHUNK = 4096;

/** Online float64 sums for one permutation: Σ z_A z_Bᵀ, Σ z, Σ z². */
class Moments {
  readonly cross: Float64Array;
  readonly sumA: Float64Array;
  readonly sumB: Float64Array;
  readonly sqA: Float64Array;
  readonly sqB: Float64Array;
  count = 0;
  private readonly tmp: Float32Array;

  constructor(readonly n: number) {
    this.cross = new Float64Array(n * n);
    this.sumA = new Float64Array(n);
    this.sumB = new Float64Array(n);
    this.sqA = new Float64Array(n);
    this.sqB = new Float64Array(n);
    this.tmp = new Float32Array(n * n);
  }

  /** Adds `rows` samples: za, zb row-major [rows, n]. */
  add(za: Float32Array, zb: Float32Array, rows: number): void {
    const n = this.n;
    for (let r0 = 0; r0 < rows; r0 += CHUNK) {
      const k = Math.min(CHUNK, rows - r0);
      // tmp = za_chunkᵀ · zb_chunk (n×n)
      kernels().gemm(true, false, n, n, k, 1, za, r0 * n, n, zb, r0 * n, n, 0, this.tmp, 0, n);
      for (let i = 0; i < n * n; i++) this.cross[i] += this.tmp[i];
    }
    for (let r = 0; r < rows; r++) {
      const o = r * n;
      for (let i = 0; i < n; i++) {
        const a = za[o + i];
        const b = zb[o + i];
        this.sumA[i] += a;
        this.sumB[i] += b;
        this.sqA[i] += a * a;
        this.sqB[i] += b * b;
      }
    }
    this.count += rows;
  }

  /** The n×n matrix whose assignment is maximised. */
  matrix(statistic: ActivationStatistic): Float64Array {
    const { n, count } = this;
    const M = new Float64Array(n * n);
    if (statistic === 'cross') {
      for (let i = 0; i < n * n; i++) M[i] = this.cross[i] / count;
      return M;
    }
    const std = (sum: Float64Array, sq: Float64Array) => Array.from({ length: n }, (_, i) => {
      const mu = sum[i] / count;
      const v = sq[i] / count - mu * mu;
      // A constant (e.g. dead) unit has no correlation with anything; the relative threshold
      // keeps E[z²] − μ² cancellation noise from posing as variance.
      return v > 1e-12 * (sq[i] / count) ? Math.sqrt(v) : 0;
    });
    const sa = std(this.sumA, this.sqA);
    const sb = std(this.sumB, this.sqB);
    for (let i = 0; i < n; i++) {
      const mua = this.sumA[i] / count;
      for (let j = 0; j < n; j++) {
        const d = sa[i] * sb[j];
        M[i * n + j] = d > 0 ? (this.cross[i * n + j] / count - mua * (this.sumB[j] / count)) / d : 0;
      }
    }
    return M;
  }
}

export function activationMatching(input: AlignInput, opts: ActivationMatchingOptions): AlignResult {
  const { spec, a, b } = input;
  const { model, data } = opts;
  assertValidSpec(spec, a);
  assertCompatible(a, b);
  const batchSize = opts.batchSize ?? ACTIVATION_MATCHING_DEFAULTS.batchSize;
  const statistic = opts.statistic ?? ACTIVATION_MATCHING_DEFAULTS.statistic;
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new InputError(`activationMatching: batchSize must be an integer ≥ 1, got ${batchSize}`);
  if (statistic !== 'cross' && statistic !== 'correlation') throw new InputError(`activationMatching: statistic must be "cross" or "correlation", got "${statistic as string}"`);
  if (opts.maxSamples !== undefined && !(Number.isInteger(opts.maxSamples) && opts.maxSamples >= 1)) {
    throw new InputError(`activationMatching: maxSamples must be an integer ≥ 1, got ${opts.maxSamples}`);
  }
  assertStateFitsModel(model, a, 'activationMatching', 'model A');
  assertDataFitsModel(model, data, 'activationMatching');
  const graph = model.graph();
  const points = activationPoints(graph, spec);
  const blockIds = new Set(points.blocks.flatMap((b) => [b.blocks, ...b.within]));
  const segmented = Object.entries(spec.axes).find(([, e]) => e.some((a) => !isFlatAxis(a) && !entryPermIds(a).every((id) => blockIds.has(id))));
  if (segmented) throw new InputError(`activationMatching: tensor "${segmented[0]}" has a segments entry (concatenated channels); activation matching reads whole units and attention heads only (use weight matching or Sinkhorn re-basin)`);
  for (const p of Object.keys(spec.perms)) {
    if (!blockIds.has(p) && !points.flat[p]?.length) throw new InputError(`activationMatching: permutation "${p}" acts on no node output of model ${model.name} (does the spec belong to this model?)`);
  }
  const record = [...new Set([...Object.values(points.flat).flat().map((x) => x.node), ...points.blocks.flatMap((b) => b.points.map((x) => x.node))])];
  const sa = splitState(a);
  const sb = splitState(b);
  const ctxA = { training: false, buffers: sa.buffers.size ? sa.buffers : undefined };
  const ctxB = { training: false, buffers: sb.buffers.size ? sb.buffers : undefined };
  const moments: Record<string, Moments> = {};
  for (const p of Object.keys(points.flat)) moments[p] = new Moments(spec.perms[p]);
  // Per set of per-head permutations: the moments of all heads' dimensions at once (H·d columns).
  const headMoments = points.blocks.map((set) => new Moments(set.within.length * spec.perms[set.within[0]]));
  const total = Math.min(data.n, opts.maxSamples ?? data.n);
  const t0 = performance.now();
  let seen = 0;
  let steps = 0;
  const check = (id: string, got: number, want: number, p: string) => {
    if (got !== want) throw new InputError(`activationMatching: node "${id}" of model ${model.name} has ${got} channels but permutation "${p}" has ${want}`);
  };
  noGrad(() => {
    for (const batch of batches(data, batchSize)) {
      const size = Math.min(batch.size, total - seen);
      if (size <= 0) break;
      const x = new Tensor(batch.x.slice(0, size * (batch.x.length / batch.size)), [size, ...data.sampleShape]);
      const ra = forwardRecording(graph, sa.params, x, ctxA, record).values;
      const rb = forwardRecording(graph, sb.params, x, ctxB, record).values;
      for (const [p, list] of Object.entries(points.flat)) {
        for (const { node, axis } of list) {
          const za = activationRows(ra.get(node)!, axis);
          const zb = activationRows(rb.get(node)!, axis);
          check(node, za.channels, spec.perms[p], p);
          moments[p].add(za.data, zb.data, za.rows);
        }
      }
      points.blocks.forEach((set, k) => {
        for (const { node, headAxis, dimAxis } of set.points) {
          const za = headRows(ra.get(node)!, headAxis, dimAxis);
          const zb = headRows(rb.get(node)!, headAxis, dimAxis);
          check(node, za.channels, headMoments[k].n, set.within.join(', '));
          headMoments[k].add(za.data, zb.data, za.rows);
        }
      });
      seen += size;
      steps++;
      opts.onProgress?.(seen, total);
      if (seen >= total) break;
    }
  });
  const perms: Record<string, Int32Array> = {};
  let objective = 0;
  for (const [p, m] of Object.entries(moments)) {
    const n = m.n;
    const { colInd, total: t } = linearSumAssignment(m.matrix(statistic), n, n, { maximize: true });
    perms[p] = Int32Array.from(colInd);
    objective += t;
  }
  objective += matchHeads(points.blocks, headMoments.map((m) => m.matrix(statistic)), perms);
  const seconds = (performance.now() - t0) / 1000;
  // One log entry: the summed matching objective (negated, a cost, like weight matching's).
  const log: StepLog[] = [{ step: 1, cost: -objective, seconds }];
  const aligned = noGrad(() => applyHard(spec, b, perms));
  return { method: statistic === 'cross' ? 'am' : 'am-corr', perms, aligned, log, steps, seconds };
}

/** The best assignment of a d×d block (rows of A's head i, columns of B's head j) of an (H·d)² matrix. */
function blockLap(M: Float64Array, H: number, d: number, i: number, j: number): { colInd: ArrayLike<number>; total: number } {
  const sub = new Float64Array(d * d);
  for (let r = 0; r < d; r++) for (let c = 0; c < d; c++) sub[r * d + c] = M[(i * d + r) * H * d + j * d + c];
  return linearSumAssignment(sub, d, d, { maximize: true });
}

/**
 * Two-level matching of attention heads from activations (as weight matching does from weights):
 * pairing A's head i with B's head j is worth the best inner assignment of their dimensions,
 * summed over the layer's sets (query/key and value/output); one H×H assignment picks the heads,
 * then each pair's inner assignments are the per-head permutations (σ_i belongs to A's head i).
 * Heads that cannot move keep their pairing. Fills `perms`; returns the objective.
 */
function matchHeads(sets: BlockActivations[], matrices: Float64Array[], perms: Record<string, Int32Array>): number {
  let objective = 0;
  const byHeads = new Map<string | null, number[]>();
  sets.forEach((set, k) => {
    const key = set.blocks ?? `fixed:${set.within.join()}`;
    byHeads.set(key, [...(byHeads.get(key) ?? []), k]);
  });
  for (const ks of byHeads.values()) {
    const blocks = sets[ks[0]].blocks;
    const H = sets[ks[0]].within.length;
    const dOf = (k: number) => Math.round(Math.sqrt(matrices[k].length) / H);
    let pi = Int32Array.from({ length: H }, (_, i) => i);
    if (blocks !== null) {
      const C = new Float64Array(H * H);
      for (let i = 0; i < H; i++) for (let j = 0; j < H; j++) for (const k of ks) C[i * H + j] += blockLap(matrices[k], H, dOf(k), i, j).total;
      pi = Int32Array.from(linearSumAssignment(C, H, H, { maximize: true }).colInd);
      perms[blocks] = pi;
    }
    for (const k of ks) {
      for (let i = 0; i < H; i++) {
        const { colInd, total } = blockLap(matrices[k], H, dOf(k), i, pi[i]);
        perms[sets[k].within[i]] = Int32Array.from(colInd);
        objective += total;
      }
    }
  }
  return objective;
}
