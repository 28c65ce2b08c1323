/**
 * The method table: every alignment method by name, declared once, so the library, the CLI and
 * the experiments run them the same way. An entry says whether the method needs the model
 * definition and training data, its own options with their defaults, and how to run it. The
 * `sinkhorn-<cost>` entries are generated from the weight-cost table (costs.ts) and the data-cost
 * table (data-costs.ts); names, `needsData`, the CLI's `--method` choices and the experiments'
 * method lists are all read from here.
 */
import { InputError } from '../errors.js';
import { Tensor } from '../core/tensor.js';
import { Rng } from '../core/random.js';
import { batches, type Dataset } from '../data/dataset.js';
import type { Batch, Criterion } from '../models/loss.js';
import type { Model } from '../models/model.js';
import { activationMatching, ACTIVATION_MATCHING_DEFAULTS, type ActivationMatchingOptions } from './activation-matching.js';
import { WEIGHT_COST_NAMES, type WeightCostKind } from './costs.js';
import { DATA_COST_NAMES, DATA_COSTS, type DataCostKind } from './data-costs.js';
import { customCost, type CustomCost } from './custom-cost.js';
import { naive } from './naive.js';
import { DATA_COST_DEFAULTS, sinkhornRebasin, WEIGHT_COST_DEFAULTS, type SinkhornRebasinOptions } from './sinkhorn-rebasin.js';
import { STE_DEFAULTS, straightThroughEstimator, type SteOptions } from './ste.js';
import type { AlignInput, AlignResult, StepCallback } from './types.js';
import { WEIGHT_MATCHING_DEFAULTS, weightMatching, type WeightMatchingOptions } from './weight-matching.js';

/** What every method may use besides its own options. */
export interface MethodContext {
  /** Architecture of A and B (required by the data-driven methods). */
  model?: Model;
  /** Training data (required by the data-driven methods). */
  data?: Dataset;
  /** Default: 'ce' for class labels, 'mse' for regression targets. */
  criterion?: Criterion;
  /** Mini-batch size of the data-driven methods (default: the method's own). */
  batchSize?: number;
  /** Default 0. */
  seed?: number;
  onStep?: StepCallback;
}

/** The context as a method's `run` receives it: seed and criterion resolved. */
export type RunContext = MethodContext & { seed: number; criterion: Criterion };

export interface MethodEntry<O extends object> {
  /** Whether the method needs `model` and `data` in the context. */
  needsData: boolean;
  /** The method's own options; a value here is its default (options absent here have none). */
  defaults: O;
  /** The weight cost the method minimises, for the methods generated from the weight-cost table. */
  weightCost?: WeightCostKind;
  /** Runs on a cost the caller supplies (no built-in objective: not for experiments and merges). */
  userCost?: true;
  run(input: AlignInput, ctx: RunContext, opts: O): AlignResult;
}

/** Sinkhorn with a weight cost: sinkhornRebasin's options but the cost (the method's name says it). */
export type SinkhornWeightOptions = Omit<SinkhornRebasinOptions, 'cost' | 'seed' | 'onStep'>;
/** Sinkhorn with a data cost; `steps` defaults to `epochs` passes over the data. */
export type SinkhornDataOptions = SinkhornWeightOptions & { epochs?: number };
export type WmMethodOptions = Omit<WeightMatchingOptions, 'seed' | 'onStep'>;
export type AmMethodOptions = Omit<ActivationMatchingOptions, 'model' | 'data' | 'batchSize'>;
export type SteMethodOptions = Omit<SteOptions, 'model' | 'data' | 'batchSize' | 'seed' | 'criterion' | 'onStep'>;

/** Epochs of Sinkhorn-Mid/Rnd over the training data: the reference's 20. */
export const DATA_SINKHORN_EPOCHS = 20;

const entry = <O extends object>(e: MethodEntry<O>): MethodEntry<O> => e;

/** `sinkhorn-<name>` entries, one per name of a cost table. */
function sinkhornEntries<K extends string, O extends object>(names: readonly K[], make: (name: K) => MethodEntry<O>) {
  return Object.fromEntries(names.map((name) => [`sinkhorn-${name}`, make(name)])) as { [P in K as `sinkhorn-${P}`]: MethodEntry<O> };
}

function dataOf(ctx: MethodContext): { model: Model; data: Dataset } {
  if (!ctx.model || !ctx.data) throw new InputError('this method needs the model definition and training data');
  return { model: ctx.model, data: ctx.data };
}

export const METHODS = {
  naive: entry<Record<string, never>>({
    needsData: false,
    defaults: {},
    run: (input) => naive(input),
  }),
  wm: entry<WmMethodOptions>({
    needsData: false,
    defaults: WEIGHT_MATCHING_DEFAULTS,
    run: (input, ctx, o) => weightMatching(input, { ...o, seed: ctx.seed, onStep: ctx.onStep }),
  }),
  am: entry<AmMethodOptions>({
    needsData: true,
    defaults: { statistic: ACTIVATION_MATCHING_DEFAULTS.statistic },
    run: (input, ctx, o) => activationMatching(input, { ...o, ...dataOf(ctx), batchSize: ctx.batchSize }),
  }),
  ste: entry<SteMethodOptions>({
    needsData: true,
    defaults: { epochs: STE_DEFAULTS.epochs, lr: STE_DEFAULTS.lr, momentum: STE_DEFAULTS.momentum },
    run: (input, ctx, o) => straightThroughEstimator(input, { ...o, ...dataOf(ctx), batchSize: ctx.batchSize, seed: ctx.seed, criterion: ctx.criterion, onStep: ctx.onStep }),
  }),
  ...sinkhornEntries(WEIGHT_COST_NAMES, (cost) => entry<SinkhornWeightOptions>({
    needsData: false,
    weightCost: cost,
    defaults: WEIGHT_COST_DEFAULTS,
    run: (input, ctx, o) => sinkhornRebasin(input, { ...o, cost, seed: ctx.seed, onStep: ctx.onStep }),
  })),
  /** Sinkhorn re-basin on the caller's own cost (`cost`, see custom-cost.ts); data optional. */
  sinkhorn: entry<SinkhornDataOptions & { cost?: CustomCost }>({
    needsData: false,
    userCost: true,
    defaults: { tau: DATA_COST_DEFAULTS.tau, scale: DATA_COST_DEFAULTS.scale, iters: DATA_COST_DEFAULTS.iters, lr: DATA_COST_DEFAULTS.lr, init: DATA_COST_DEFAULTS.init, keep: DATA_COST_DEFAULTS.keep, epochs: DATA_SINKHORN_EPOCHS, stopAtZero: false },
    run: (input, ctx, { epochs, cost: userCost, ...o }) => {
      if (!userCost) throw new InputError('method sinkhorn needs a cost function (the CLI\'s --cost module.mjs)');
      const batchSize = ctx.batchSize ?? 1000;
      const batch = ctx.model && ctx.data ? batchSupplier(ctx.model, ctx.data, batchSize, ctx.seed) : undefined;
      const cost = customCost({ cost: userCost, a: input.a, model: ctx.model, batch });
      const steps = o.steps ?? (ctx.data ? (epochs ?? DATA_SINKHORN_EPOCHS) * Math.ceil(ctx.data.n / batchSize) : WEIGHT_COST_DEFAULTS.steps);
      return { ...sinkhornRebasin(input, { ...o, steps, cost, seed: ctx.seed, onStep: ctx.onStep }), method: 'sinkhorn' };
    },
  }),
  ...sinkhornEntries(DATA_COST_NAMES, (name: DataCostKind) => entry<SinkhornDataOptions>({
    needsData: true,
    defaults: { tau: DATA_COST_DEFAULTS.tau, scale: DATA_COST_DEFAULTS.scale, iters: DATA_COST_DEFAULTS.iters, lr: DATA_COST_DEFAULTS.lr, init: DATA_COST_DEFAULTS.init, keep: DATA_COST_DEFAULTS.keep, epochs: DATA_SINKHORN_EPOCHS, stopAtZero: false },
    run: (input, ctx, { epochs, ...o }) => {
      const { model, data } = dataOf(ctx);
      const batchSize = ctx.batchSize ?? 1000;
      const cost = DATA_COSTS[name]({ model, a: input.a, batch: batchSupplier(model, data, batchSize, ctx.seed), criterion: ctx.criterion, seed: ctx.seed });
      const steps = o.steps ?? (epochs ?? DATA_SINKHORN_EPOCHS) * Math.ceil(data.n / batchSize);
      // Trained models never reach a zero loss: the default runs the full schedule (stopAtZero false).
      const result = sinkhornRebasin(input, { ...o, steps, cost, seed: ctx.seed, onStep: ctx.onStep });
      return { ...result, method: `sinkhorn-${name}` };
    },
  })),
};

export type MethodName = keyof typeof METHODS;
export const METHOD_NAMES = Object.keys(METHODS) as MethodName[];
/** The methods with a built-in objective (the experiments' and merges' choices). */
export const BUILTIN_METHOD_NAMES = METHOD_NAMES.filter((m) => !(METHODS[m] as MethodEntry<object>).userCost);
/** The options of method M (every one optional: the table's defaults fill them in). */
export type MethodOptions<M extends MethodName> = (typeof METHODS)[M] extends MethodEntry<infer O> ? Partial<O> : never;

export function needsData(method: MethodName): boolean {
  return methodEntry(method).needsData;
}

function methodEntry(method: MethodName): MethodEntry<object> {
  const e = (METHODS as Record<string, MethodEntry<object>>)[method];
  if (!Object.prototype.hasOwnProperty.call(METHODS, method) || !e) throw new InputError(`unknown method "${String(method)}" (have ${METHOD_NAMES.join(', ')})`);
  return e;
}

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

/**
 * Runs method `method` on `input`. `options` are the method's own (see its entry's defaults);
 * options left undefined take the defaults.
 */
export function alignModels<M extends MethodName>(method: M, input: AlignInput, ctx: MethodContext = {}, options: MethodOptions<M> = {} as MethodOptions<M>): AlignResult {
  const e = methodEntry(method);
  if (e.needsData && (!ctx.model || !ctx.data)) {
    throw new Error(`method ${method} needs the model definition and training data`);
  }
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const run: RunContext = {
    ...ctx,
    seed: ctx.seed ?? 0,
    criterion: ctx.criterion ?? (ctx.data && ctx.data.y instanceof Float32Array ? 'mse' : 'ce'),
  };
  return e.run(input, run, { ...e.defaults, ...given });
}
