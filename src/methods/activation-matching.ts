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
import { activationPoints, activationRows, assertDataFitsModel, assertStateFitsModel, forwardRecording } from '../models/activations.js';
import type { Model } from '../models/model.js';
import { splitState } from '../state/params.js';
import { applyHard } from '../permutation/apply.js';
import { linearSumAssignment } from '../permutation/assignment.js';
import { assertValidSpec, isFlatAxis } from '../permutation/spec.js';
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
  const v2 = Object.entries(spec.axes).find(([, e]) => !e.every(isFlatAxis));
  if (v2) throw new InputError(`activationMatching: tensor "${v2[0]}" has a segments or block entry; activation matching does not handle version-2 entries yet (use weight matching or Sinkhorn re-basin)`);
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
  for (const [p, ids] of Object.entries(points)) {
    if (ids.length === 0) throw new InputError(`activationMatching: permutation "${p}" acts on no node output of model ${model.name} (does the spec belong to this model?)`);
  }
  const record = [...new Set(Object.values(points).flat())];
  const sa = splitState(a);
  const sb = splitState(b);
  const ctxA = { training: false, buffers: sa.buffers.size ? sa.buffers : undefined };
  const ctxB = { training: false, buffers: sb.buffers.size ? sb.buffers : undefined };
  const moments: Record<string, Moments> = {};
  for (const [p, n] of Object.entries(spec.perms)) moments[p] = new Moments(n);
  const total = Math.min(data.n, opts.maxSamples ?? data.n);
  const t0 = performance.now();
  let seen = 0;
  let steps = 0;
  noGrad(() => {
    for (const batch of batches(data, batchSize)) {
      const size = Math.min(batch.size, total - seen);
      if (size <= 0) break;
      const x = new Tensor(batch.x.slice(0, size * (batch.x.length / batch.size)), [size, ...data.sampleShape]);
      const ra = forwardRecording(graph, sa.params, x, ctxA, record).values;
      const rb = forwardRecording(graph, sb.params, x, ctxB, record).values;
      for (const [p, ids] of Object.entries(points)) {
        for (const id of ids) {
          const za = activationRows(ra.get(id)!);
          const zb = activationRows(rb.get(id)!);
          if (za.channels !== spec.perms[p]) {
            throw new InputError(`activationMatching: node "${id}" of model ${model.name} has ${za.channels} channels but permutation "${p}" has size ${spec.perms[p]}`);
          }
          moments[p].add(za.data, zb.data, za.rows);
        }
      }
      seen += size;
      steps++;
      opts.onProgress?.(seen, total);
      if (seen >= total) break;
    }
  });
  const perms: Record<string, Int32Array> = {};
  let objective = 0;
  for (const [p, n] of Object.entries(spec.perms)) {
    const { colInd, total: t } = linearSumAssignment(moments[p].matrix(statistic), n, n, { maximize: true });
    perms[p] = Int32Array.from(colInd);
    objective += t;
  }
  const seconds = (performance.now() - t0) / 1000;
  // One log entry: the summed matching objective (negated, a cost, like weight matching's).
  const log: StepLog[] = [{ step: 1, cost: -objective, seconds }];
  const aligned = noGrad(() => applyHard(spec, b, perms));
  return { method: statistic === 'cross' ? 'am' : 'am-corr', perms, aligned, log, steps, seconds };
}
