/**
 * Evaluation (mean loss and accuracy over a dataset, without gradients) and BatchNorm statistic
 * re-estimation (the "reset BN" step REPAIR and the LMC literature apply to interpolated models,
 * whose interpolated running statistics no longer match their activations).
 */
import { noGrad, Rng, zeros } from '../core/index.js';
import { batches, sampleSize, targetSize, type Dataset } from '../data/dataset.js';
import { InputError } from '../errors.js';
import { runGraph } from '../models/graph.js';
import type { Model } from '../models/model.js';
import type { Params } from '../state/params.js';
import { batchLoss, type Criterion } from '../models/loss.js';
import { checkData, checkInputs, countCorrect, hasBatchNorm, inputTensor } from './common.js';

export interface EvalOptions {
  /** Default 1000. */
  batchSize?: number;
  criterion: Criterion;
  /**
   * 'running' (default): BatchNorm uses the running statistics in `state.buffers` (eval mode).
   * 'batch': BatchNorm normalises each evaluation batch with its own statistics
   * (track_running_stats=False); results then depend on the batch size.
   */
  bnMode?: 'running' | 'batch';
}

export interface EvalResult {
  /** Mean loss per sample (per target value for MSE). */
  loss: number;
  /** Fraction of correctly classified samples (cross-entropy only). */
  accuracy?: number;
  n: number;
}

/** Mean loss (and accuracy for classification) of a model state over a whole dataset. */
export function evaluate(model: Model, state: { params: Params; buffers?: Params }, data: Dataset, opts: EvalOptions): EvalResult {
  const batchSize = opts.batchSize ?? 1000;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new InputError(`evaluate: batchSize must be a positive integer, got ${batchSize}`);
  const bnMode = opts.bnMode ?? 'running';
  checkData('evaluate', model, data, opts.criterion);
  const bn = hasBatchNorm(model);
  if (bn && bnMode === 'running' && !state.buffers) {
    throw new InputError(`evaluate: model ${model.name} has BatchNorm but no running statistics were given (pass buffers, or bnMode 'batch')`);
  }
  const buffers = bn && bnMode === 'running' ? state.buffers : undefined;
  const d = sampleSize(data);
  const t = opts.criterion === 'ce' ? 1 : targetSize(data);
  return noGrad(() => {
    let lossSum = 0;
    let correct = 0;
    // Consecutive batches are plain views of the dataset: no copying.
    for (let start = 0; start < data.n; start += batchSize) {
      const size = Math.min(batchSize, data.n - start);
      const x = inputTensor(model, data.x.subarray(start * d, (start + size) * d), size);
      const y = data.y.subarray(start * t, (start + size) * t);
      const out = model.forward(state.params, x, { training: false, buffers });
      lossSum += batchLoss(opts.criterion, out, y, size).item() * size;
      if (opts.criterion === 'ce') correct += countCorrect(out, y as Int32Array);
    }
    const r: EvalResult = { loss: lossSum / data.n, n: data.n };
    if (opts.criterion === 'ce') r.accuracy = correct / data.n;
    return r;
  });
}

export interface ReestimateOptions {
  /** Use only the first `batches` mini-batches of the shuffled data (default: all). */
  batches?: number;
  /** Default 1000. */
  batchSize?: number;
  /** Shuffle order (and dropout, which stays active as in train mode). Default 0. */
  seed?: number;
}

/**
 * Fresh BatchNorm running statistics for `params`: forwards training data in training mode and
 * averages the per-batch mean and unbiased variance with equal weight per batch (PyTorch's
 * reset_running_stats() + momentum=None, i.e. a cumulative moving average). Batches of a single
 * sample are skipped (their variance is undefined). Returns the buffers (`*.running_mean`,
 * `*.running_var`); an empty map for a model without BatchNorm.
 */
export function reestimateBatchNorm(model: Model, params: Params, data: Dataset, opts: ReestimateOptions = {}): Params {
  const batchSize = opts.batchSize ?? 1000;
  const limit = opts.batches ?? Infinity;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new InputError(`reestimateBatchNorm: batchSize must be a positive integer, got ${batchSize}`);
  if (!(limit >= 1)) throw new InputError(`reestimateBatchNorm: batches must be ≥ 1, got ${opts.batches}`);
  checkInputs('reestimateBatchNorm', model, data);
  const graph = model.graph();
  const bnNodes = graph.nodes.flatMap((n) => (n.op === 'batchnorm' ? [n] : []));
  const buffers: Params = new Map();
  if (bnNodes.length === 0) return buffers;
  const dtype = params.values().next().value?.dtype ?? 'float32';
  for (const n of bnNodes) {
    buffers.set(n.runningMean, zeros([n.channels], dtype));
    const v = zeros([n.channels], dtype);
    v.data.fill(1);
    buffers.set(n.runningVar, v);
  }
  const seed = opts.seed ?? 0;
  const rng = new Rng(seed);
  const dropRng = rng.fork();
  let k = 0;
  noGrad(() => {
    for (const b of batches(data, batchSize, { shuffle: true, rng })) {
      if (k >= limit) break;
      if (b.size < 2) continue;
      k++;
      // Momentum 1/k on our private copy of the graph turns BN's exponential update into the
      // cumulative average: after k batches each running value is the mean of k batch values.
      for (const n of bnNodes) n.momentum = 1 / k;
      runGraph(graph, params, inputTensor(model, b.x, b.size), { training: true, buffers, rng: dropRng });
    }
  });
  if (k === 0) throw new InputError(`reestimateBatchNorm: dataset ${data.name} has no batch of at least 2 samples`);
  return buffers;
}
