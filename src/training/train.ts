/**
 * Mini-batch training of a functional model (models/model.ts) with AdamW or SGD, PyTorch
 * semantics: per epoch one seeded shuffle, forward in training mode (dropout on, BatchNorm on
 * batch statistics with its running statistics updated in place), mean loss, backward, step.
 *
 * Reproducible: the same options and seed give bit-identical parameters (with a fixed BLAS
 * thread count). The seed drives three independent streams: the initialisation (exactly
 * `model.init(new Rng(seed))`), the shuffle order and the dropout masks.
 *
 * Plain MLPs take a fused step (fused-mlp.ts) instead of the autodiff tape: same kernels and, without
 * dropout, bit-identical weights; it is what makes the reference MNIST runs fast.
 */
import { AdamW, Rng, SGD, zeros, type Optimizer } from '../core/index.js';
import { batchCount, batches, targetSize, type Dataset } from '../data/dataset.js';
import { InputError } from '../errors.js';
import { graphTensors } from '../models/graph.js';
import type { Model } from '../models/model.js';
import type { Params } from '../state/params.js';
import { batchLoss, type Criterion } from '../models/loss.js';
import { checkData, countCorrect, countCorrectRows, inputTensor, streamSeed } from './common.js';
import { FusedMlp } from './fused-mlp.js';
import { evaluate } from './evaluate.js';

export interface EpochStats {
  epoch: number;
  /** Mean training loss over the epoch's batches (each weighted by its size), in training mode. */
  trainLoss: number;
  /** Accuracy of the training-mode predictions made during the epoch (classification). */
  trainAcc?: number;
  valLoss?: number;
  valAcc?: number;
  /** Wall time of the epoch, validation included. */
  seconds: number;
}

/** Where a training run is, after one optimisation step. */
export interface BatchProgress {
  epoch: number;
  epochs: number;
  /** Batch within the epoch, from 1. */
  batch: number;
  batchesPerEpoch: number;
  /** Mean training loss over the epoch's batches so far. */
  loss: number;
  /** Training-mode accuracy over the epoch so far (classification). */
  acc?: number;
  /** The last finished epoch's statistics (validation figures), if any. */
  lastEpoch?: EpochStats;
}

export interface TrainOptions {
  model: Model;
  data: Dataset;
  /** Evaluated (eval mode, running BN statistics) after every epoch. */
  val?: Dataset;
  epochs: number;
  batchSize: number;
  /** Default 'adamw'. */
  optimizer?: 'adamw' | 'sgd';
  lr: number;
  /** Decoupled decay for AdamW (default 0.01, torch's), L2 for SGD (default 0). */
  weightDecay?: number;
  /** SGD momentum (default 0). */
  momentum?: number;
  seed: number;
  criterion: Criterion;
  /** Continue from this state instead of a fresh initialisation (it is copied, not modified). */
  init?: { params: Params; buffers?: Params };
  /** Called after each epoch with its statistics and the live state (do not modify it). */
  onEpoch?: (stats: EpochStats, state: { params: Params; buffers: Params }) => void;
  /** Called after every optimisation step (progress bars: report/progress.ts `trainingProgress`). */
  onBatch?: (progress: BatchProgress) => void;
  /** Batch size of the per-epoch validation (default max(batchSize, 1000)). */
  evalBatchSize?: number;
  /**
   * Plain MLPs train through a fused step over reused buffers (fused-mlp.ts; same kernels and,
   * without dropout, bit-identical results). false forces the generic autodiff path.
   */
  fused?: boolean;
}

export interface TrainResult {
  /** Trained weights (leaf tensors, requiresGrad off). */
  params: Params;
  /** BatchNorm running statistics (empty without BatchNorm). */
  buffers: Params;
  history: EpochStats[];
}

function positiveInt(name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new InputError(`trainModel: ${name} must be an integer ≥ ${min}, got ${v}`);
}

function nonNegative(name: string, v: number): void {
  if (!(v >= 0) || !Number.isFinite(v)) throw new InputError(`trainModel: ${name} must be a finite number ≥ 0, got ${v}`);
}

/** A private copy of `init` in the model's tensor order, checked against the model. */
function copyState(model: Model, init: { params: Params; buffers?: Params }): { params: Params; buffers: Params } {
  const params: Params = new Map();
  const buffers: Params = new Map();
  for (const info of graphTensors(model.graph())) {
    const given = init.params.get(info.name) ?? init.buffers?.get(info.name);
    if (!given) throw new InputError(`trainModel: the initial state has no tensor "${info.name}" (model ${model.name})`);
    if (given.shape.length !== info.shape.length || given.shape.some((d, i) => d !== info.shape[i])) {
      throw new InputError(`trainModel: initial tensor "${info.name}" has shape [${given.shape.join(', ')}] but model ${model.name} expects [${info.shape.join(', ')}]`);
    }
    const copy = zeros(info.shape, given.dtype);
    copy.data.set(given.data);
    (info.buffer ? buffers : params).set(info.name, copy);
  }
  return { params, buffers };
}

export function trainModel(o: TrainOptions): TrainResult {
  const { model, data, criterion } = o;
  positiveInt('epochs', o.epochs, 0);
  positiveInt('batchSize', o.batchSize);
  nonNegative('lr', o.lr);
  if (!Number.isFinite(o.seed)) throw new InputError(`trainModel: seed must be a finite number, got ${o.seed}`);
  const optName = o.optimizer ?? 'adamw';
  if (optName !== 'adamw' && optName !== 'sgd') throw new InputError(`trainModel: optimizer must be 'adamw' or 'sgd', got '${String(optName)}'`);
  if (o.weightDecay !== undefined) nonNegative('weightDecay', o.weightDecay);
  if (o.momentum !== undefined) nonNegative('momentum', o.momentum);
  checkData('trainModel', model, data, criterion);
  if (o.val) checkData('trainModel (validation)', model, o.val, criterion);

  const { params, buffers } = o.init ? copyState(model, o.init) : model.init(new Rng(o.seed));
  const list = [...params.values()];
  for (const p of list) p.requireGrad();
  const opt: Optimizer = optName === 'sgd'
    ? new SGD(list, { lr: o.lr, momentum: o.momentum ?? 0, weightDecay: o.weightDecay ?? 0 })
    : new AdamW(list, { lr: o.lr, weightDecay: o.weightDecay ?? 0.01 });
  const plan = o.fused === false ? null : FusedMlp.plan(model, params);
  const fused = plan ? new FusedMlp(plan, params, Math.min(o.batchSize, data.n)) : null;
  const shuffleRng = new Rng(streamSeed(o.seed, 1));
  const dropRng = new Rng(streamSeed(o.seed, 2));
  const perEpoch = batchCount(data.n, o.batchSize);
  const cls = criterion === 'ce';
  const history: EpochStats[] = [];
  // Labels per sample (a sequence model predicts one per position).
  const perSample = cls ? targetSize(data) : 1;
  for (let epoch = 1; epoch <= o.epochs; epoch++) {
    const t0 = performance.now();
    let lossSum = 0;
    let correct = 0;
    let seen = 0;
    let b = 0;
    for (const batch of batches(data, o.batchSize, { shuffle: true, rng: shuffleRng })) {
      b++;
      let lv: number;
      let backward: (() => void) | null = null;
      if (fused) {
        const r = fused.step(batch.x, batch.y, batch.size, criterion, dropRng);
        lv = r.loss;
        if (cls) correct += countCorrectRows(r.logits, batch.size, model.numOutputs, batch.y as Int32Array);
      } else {
        // The tensor wraps the batch buffer itself; it is consumed (backward done) before the
        // generator overwrites the buffer with the next batch.
        const x = inputTensor(model, batch.x, batch.size);
        const out = model.forward(params, x, { training: true, buffers, rng: dropRng });
        const loss = batchLoss(criterion, out, batch.y, batch.size);
        lv = loss.item();
        backward = () => {
          opt.zeroGrad();
          loss.backward();
        };
        if (cls) correct += countCorrect(out, batch.y as Int32Array);
      }
      if (!Number.isFinite(lv)) {
        throw new InputError(`trainModel: the loss became ${lv} at epoch ${epoch}, batch ${b} (model ${model.name}, lr ${o.lr}); try a smaller learning rate`);
      }
      backward?.();
      opt.step();
      lossSum += lv * batch.size;
      seen += batch.size;
      o.onBatch?.({
        epoch, epochs: o.epochs, batch: b, batchesPerEpoch: perEpoch, loss: lossSum / seen,
        acc: cls ? correct / (seen * perSample) : undefined, lastEpoch: history[history.length - 1],
      });
    }
    const stats: EpochStats = { epoch, trainLoss: lossSum / seen, seconds: 0 };
    if (cls) stats.trainAcc = correct / (seen * perSample);
    if (o.val) {
      const r = evaluate(model, { params, buffers }, o.val, { batchSize: o.evalBatchSize ?? Math.max(o.batchSize, 1000), criterion });
      stats.valLoss = r.loss;
      if (r.accuracy !== undefined) stats.valAcc = r.accuracy;
    }
    stats.seconds = (performance.now() - t0) / 1000;
    history.push(stats);
    o.onEpoch?.(stats, { params, buffers });
  }
  // Hand back plain leaves: further math on them (interpolation, permutation) must not build graphs.
  for (const p of list) {
    p.grad = null;
    p.requiresGrad = false;
  }
  return { params, buffers, history };
}
