/**
 * Evaluation (mean loss and accuracy over a dataset, without gradients; of one model or of the
 * output ensemble of several) and BatchNorm statistic
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
import { checkData, checkInputs, countCorrect, countCorrectRows, hasBatchNorm, inputTensor } from './common.js';

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
  const t = targetSize(data);
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
    if (opts.criterion === 'ce') r.accuracy = correct / (data.n * t);
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

/** One model of an output ensemble: its definition and state (BN statistics in `buffers`). */
export interface EnsembleMember {
  model: Model;
  params: Params;
  buffers?: Params;
}

export interface EnsembleOptions extends EvalOptions {
  /** Weight of each member's output (non-negative, normalised to sum 1). Default: equal weights. */
  weights?: number[];
}

/**
 * Loss and accuracy of the output ensemble of several models — the usual ceiling for a merged
 * model. Classification ('ce'): the average of the members' softmax probabilities,
 * p̄(x) = Σ_m w_m·softmax(f_m(x)); loss is the mean −log p̄_y(x) (computed in log space, float64),
 * accuracy counts argmax p̄ = y. Regression ('mse'): the average of the outputs, scored by MSE.
 * A one-member ensemble is that model (same loss as `evaluate`, up to float32 rounding).
 */
export function evaluateEnsemble(members: EnsembleMember[], data: Dataset, opts: EnsembleOptions): EvalResult {
  if (members.length === 0) throw new InputError('evaluateEnsemble: needs at least one model');
  const batchSize = opts.batchSize ?? 1000;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new InputError(`evaluateEnsemble: batchSize must be a positive integer, got ${batchSize}`);
  const weights = ensembleWeights(members.length, opts.weights);
  const bnMode = opts.bnMode ?? 'running';
  const first = members[0].model;
  members.forEach((m, i) => {
    if (m.model.numOutputs !== first.numOutputs || m.model.inputShape.join(',') !== first.inputShape.join(',')) {
      throw new InputError(`evaluateEnsemble: model ${i} (${m.model.name}) takes [${m.model.inputShape.join(', ')}] → ${m.model.numOutputs} outputs but model 0 (${first.name}) takes [${first.inputShape.join(', ')}] → ${first.numOutputs}`);
    }
    if (bnMode === 'running' && hasBatchNorm(m.model) && !m.buffers) {
      throw new InputError(`evaluateEnsemble: model ${i} (${m.model.name}) has BatchNorm but no running statistics were given (pass buffers, or bnMode 'batch')`);
    }
  });
  checkData('evaluateEnsemble', first, data, opts.criterion);
  const d = sampleSize(data);
  const c = first.numOutputs;
  const t = targetSize(data);
  return noGrad(() => {
    let lossSum = 0;
    let correct = 0;
    for (let start = 0; start < data.n; start += batchSize) {
      const size = Math.min(batchSize, data.n - start);
      const x = inputTensor(first, data.x.subarray(start * d, (start + size) * d), size);
      const y = data.y.subarray(start * t, (start + size) * t);
      // avg: Σ w_m·softmax (ce) or Σ w_m·output (mse); logTarget: log Σ w_m·softmax_y, accumulated by log-add-exp.
      const avg = new Float64Array(size * c);
      const logTarget = new Float64Array(size).fill(-Infinity);
      members.forEach((m, k) => {
        if (weights[k] === 0) return;
        const out = m.model.forward(m.params, x, { training: false, buffers: bnMode === 'running' ? m.buffers : undefined }).data;
        const logW = Math.log(weights[k]);
        for (let i = 0; i < size; i++) {
          const o = i * c;
          if (opts.criterion !== 'ce') {
            for (let j = 0; j < c; j++) avg[o + j] += weights[k] * out[o + j];
            continue;
          }
          let max = -Infinity;
          for (let j = 0; j < c; j++) max = Math.max(max, out[o + j]);
          let sum = 0;
          for (let j = 0; j < c; j++) sum += Math.exp(out[o + j] - max);
          for (let j = 0; j < c; j++) avg[o + j] += (weights[k] * Math.exp(out[o + j] - max)) / sum;
          const lp = logW + out[o + y[i]] - max - Math.log(sum);
          const hi = Math.max(logTarget[i], lp);
          logTarget[i] = hi + Math.log(Math.exp(logTarget[i] - hi) + Math.exp(lp - hi));
        }
      });
      if (opts.criterion === 'ce') {
        for (let i = 0; i < size; i++) lossSum -= logTarget[i];
        correct += countCorrectRows(avg, size, c, y as Int32Array);
      } else {
        let se = 0;
        for (let i = 0; i < size * c; i++) se += (avg[i] - y[i]) ** 2;
        lossSum += se / c;
      }
    }
    const r: EvalResult = { loss: lossSum / data.n, n: data.n };
    if (opts.criterion === 'ce') r.accuracy = correct / (data.n * t);
    return r;
  });
}

function ensembleWeights(n: number, weights: number[] | undefined): number[] {
  if (!weights) return new Array<number>(n).fill(1 / n);
  const total = weights.reduce((s, w) => s + w, 0);
  if (weights.length !== n || weights.some((w) => !(w >= 0 && Number.isFinite(w))) || !(total > 0 && Number.isFinite(total))) {
    throw new InputError(`evaluateEnsemble: weights must be ${n} finite non-negative numbers with a positive sum, got [${weights.join(', ')}]`);
  }
  return weights.map((w) => w / total);
}
