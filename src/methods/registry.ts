/**
 * Every alignment method by name, behind one call, so the experiments, the demo and the CLI run
 * them the same way. Data-driven methods (am, ste, sinkhorn-mid, sinkhorn-rnd) need the model
 * definition and training data.
 */
import { Tensor } from '../core/tensor.js';
import { Rng } from '../core/random.js';
import { batches, type Dataset } from '../data/dataset.js';
import type { Model } from '../models/model.js';
import { activationMatching } from './activation-matching.js';
import { midpointCost, randomPointCost, type Batch } from './data-costs.js';
import { naive } from './naive.js';
import { sinkhornRebasin, type SinkhornRebasinOptions } from './sinkhorn-rebasin.js';
import { straightThroughEstimator } from './ste.js';
import type { AlignInput, AlignResult, StepCallback } from './types.js';
import { weightMatching } from './weight-matching.js';
import type { Criterion } from '../training/common.js';

export const METHODS = ['naive', 'wm', 'am', 'ste', 'sinkhorn-l2', 'sinkhorn-l1', 'sinkhorn-cosine', 'sinkhorn-mid', 'sinkhorn-rnd'] as const;
export type MethodName = (typeof METHODS)[number];

const DATA_METHODS: readonly MethodName[] = ['am', 'ste', 'sinkhorn-mid', 'sinkhorn-rnd'];

export function needsData(method: MethodName): boolean {
  return DATA_METHODS.includes(method);
}

export interface MethodContext {
  /** Architecture of A and B (required by the data-driven methods). */
  model?: Model;
  /** Training data (required by the data-driven methods). */
  data?: Dataset;
  criterion?: Criterion;
  batchSize?: number;
  seed?: number;
  /** Sinkhorn options (defaults: WEIGHT_COST_DEFAULTS or DATA_COST_DEFAULTS). */
  sinkhorn?: Partial<Omit<SinkhornRebasinOptions, 'cost' | 'onStep'>>;
  /** sinkhorn-mid/rnd: passes over `data` (sets the steps unless sinkhorn.steps is given). */
  sinkhornEpochs?: number;
  steEpochs?: number;
  steLr?: number;
  amStatistic?: 'cross' | 'correlation';
  amMaxSamples?: number;
  onStep?: StepCallback;
}

/** Epochs of Sinkhorn-Mid/Rnd over the training data: the reference's 20. */
export const DATA_SINKHORN_EPOCHS = 20;

/** Endless shuffled mini-batches as tensors; step 0 always gets the same (first) batch. */
export function batchSupplier(model: Model, data: Dataset, batchSize: number, seed: number): (step: number) => Batch {
  const rng = new Rng(seed);
  let it = batches(data, batchSize, { shuffle: true, rng });
  const toBatch = (b: { x: Float32Array; y: Int32Array | Float32Array; size: number }): Batch => {
    // Copies: the iterator reuses its buffers, while the tensor lives until backward.
    const x = new Tensor(b.x.slice(), [b.size, ...model.inputShape]);
    const y = b.y instanceof Int32Array ? b.y.slice() : new Tensor(b.y.slice(), [b.size, b.y.length / b.size]);
    return { x, y };
  };
  const first = toBatch(batches(data, batchSize).next().value!);
  return (step) => {
    if (step === 0) return first;
    let r = it.next();
    if (r.done) {
      it = batches(data, batchSize, { shuffle: true, rng });
      r = it.next();
    }
    return toBatch(r.value!);
  };
}

export function alignModels(method: MethodName, input: AlignInput, ctx: MethodContext = {}): AlignResult {
  const seed = ctx.seed ?? 0;
  if (needsData(method) && (!ctx.model || !ctx.data)) {
    throw new Error(`method ${method} needs the model definition and training data`);
  }
  const criterion: Criterion = ctx.criterion ?? (ctx.data && ctx.data.y instanceof Float32Array ? 'mse' : 'ce');
  switch (method) {
    case 'naive':
      return naive(input);
    case 'wm':
      return weightMatching(input, { seed, onStep: ctx.onStep });
    case 'am':
      return activationMatching(input, { model: ctx.model!, data: ctx.data!, batchSize: ctx.batchSize, statistic: ctx.amStatistic, maxSamples: ctx.amMaxSamples });
    case 'ste':
      return straightThroughEstimator(input, { model: ctx.model!, data: ctx.data!, epochs: ctx.steEpochs, lr: ctx.steLr, batchSize: ctx.batchSize, seed, criterion, onStep: ctx.onStep });
    case 'sinkhorn-l2':
    case 'sinkhorn-l1':
    case 'sinkhorn-cosine': {
      const cost = method.slice('sinkhorn-'.length) as 'l2' | 'l1' | 'cosine';
      return sinkhornRebasin(input, { ...ctx.sinkhorn, cost, seed, onStep: ctx.onStep });
    }
    case 'sinkhorn-mid':
    case 'sinkhorn-rnd': {
      const model = ctx.model!;
      const data = ctx.data!;
      const batchSize = ctx.batchSize ?? 1000;
      const epochs = ctx.sinkhornEpochs ?? DATA_SINKHORN_EPOCHS;
      const perEpoch = Math.ceil(data.n / batchSize);
      const costOpts = { model, a: input.a, batch: batchSupplier(model, data, batchSize, seed), criterion };
      const cost = method === 'sinkhorn-mid' ? midpointCost(costOpts) : randomPointCost({ ...costOpts, seed });
      const result = sinkhornRebasin(input, {
        ...ctx.sinkhorn,
        steps: ctx.sinkhorn?.steps ?? epochs * perEpoch,
        cost,
        seed,
        // Trained models never reach a zero loss: run the full schedule.
        stopAtZero: false,
        onStep: ctx.onStep,
      });
      return { ...result, method };
    }
    default:
      throw new Error(`unknown method "${method as string}" (have ${METHODS.join(', ')})`);
  }
}
