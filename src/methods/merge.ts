/**
 * Merging N models into one: the shared input/result types and the merge-strategy table.
 * models[0] is the reference (never permuted); each other model is permuted into a common basin
 * and the merged model is the weighted average of the permuted models. Strategies: `first`
 * (align each model to models[0] with a pairwise method of the method table), `mergemany`
 * (Git Re-Basin's MergeMany) and `sinkhorn` (the Sinkhorn barycenter, sinkhorn-barycenter.ts).
 */
import { InputError } from '../errors.js';
import { Rng } from '../core/random.js';
import { noGrad } from '../core/tensor.js';
import { applyHard, composePerms, identityPerms, invertPerms, type Perms } from '../permutation/apply.js';
import { assertValidSpec, type PermutationSpec } from '../permutation/spec.js';
import { isBufferName, mergeWeights, weightedAverage, type Params } from '../state/params.js';
import { sinkhornBarycenter, type BarycenterCost, type SinkhornBarycenterOptions } from './sinkhorn-barycenter.js';
import { alignModels, batchSupplier, needsData, type MethodContext, type MethodName, type MethodOptions, type RunContext } from './registry.js';
import type { StepLog } from './types.js';
import { assertCompatible } from './validate.js';

export interface MergeInput {
  spec: PermutationSpec;
  /** The models' tensors (weights and buffers), PyTorch names; models[0] is the reference (never permuted). */
  models: Params[];
  /** Averaging weights summing to 1 (default uniform). */
  weights?: number[];
}

export interface MergeResult {
  strategy: string;
  /** One set of permutations per model; perms[0] is the identity. */
  perms: Perms[];
  /** π_i(model_i) for each i (aligned[0] = models[0]). */
  aligned: Params[];
  /** Σ w_i π_i(model_i). */
  merged: Params;
  log: StepLog[];
  seconds: number;
}

/** What a strategy's `run` receives besides the models: the method context with seed and criterion resolved. */
export type MergeContext = RunContext;

export interface MergeStrategyEntry<O extends object> {
  /** One line for the CLI's help. */
  summary: string;
  /** Whether the strategy (with these options) needs `model` and `data` in the context. */
  needsData(opts: O): boolean;
  /** The strategy's own options; a value here is its default. */
  defaults: O;
  /** Runs on models with validated, normalised weights (`input.weights` is always set). */
  run(input: Required<MergeInput>, ctx: MergeContext, opts: O): MergeResult;
}

/** `first`: the pairwise method that aligns each model to models[0], and that method's own options. */
export interface FirstOptions {
  method: MethodName;
  methodOptions: MethodOptions<MethodName>;
}

/** `sinkhorn`: the barycenter's cost and its Sinkhorn options (τ, steps, lr…; defaults per cost). */
export interface SinkhornMergeOptions {
  cost: BarycenterCost;
  barycenter: Omit<SinkhornBarycenterOptions, 'cost' | 'model' | 'batch' | 'criterion' | 'seed' | 'onStep'>;
}

/** `mergemany`: the cap on full rounds, and weight matching's own options for each alignment. */
export interface MergeManyOptions {
  maxRounds: number;
  wm: MethodOptions<'wm'>;
}

const strategy = <O extends object>(e: MergeStrategyEntry<O>): MergeStrategyEntry<O> => e;

/**
 * The merge-strategy table: every way of merging N models, by name, declared once (the CLI's
 * `--strategy` choices and the merge experiment's list are read from here).
 */
export const MERGE_STRATEGIES = {
  first: strategy<FirstOptions>({
    summary: 'align every model to the first with a pairwise method (--method), then average',
    needsData: (o) => needsData(o.method),
    defaults: { method: 'wm', methodOptions: {} },
    run: (input, ctx, o) => mergeToFirst(input, ctx, o),
  }),
  mergemany: strategy<MergeManyOptions>({
    summary: 'Git Re-Basin\'s MergeMany: align each model to the average of the others (weight matching), in random order, until nothing moves; then average',
    needsData: () => false,
    defaults: { maxRounds: 100, wm: {} },
    run: (input, ctx, o) => mergeMany(input, ctx, o),
  }),
  sinkhorn: strategy<SinkhornMergeOptions>({
    summary: 'Sinkhorn barycenter: learn every model\'s soft permutations at once (implicit Sinkhorn) on the loss of their average on --data (cost data, the default) or on the weight distance to the average (cost weights); then project to hard permutations and average',
    needsData: (o) => o.cost === 'data',
    defaults: { cost: 'data', barycenter: {} },
    run: (input, ctx, o) => sinkhornBarycenter(input, {
      ...o.barycenter,
      cost: o.cost,
      model: ctx.model,
      batch: o.cost === 'data' ? batchSupplier(ctx.model!, ctx.data!, ctx.batchSize ?? 1000, ctx.seed) : undefined,
      criterion: ctx.criterion,
      seed: ctx.seed,
      onStep: ctx.onStep,
    }),
  }),
};

export type MergeStrategyName = keyof typeof MERGE_STRATEGIES;
export const MERGE_STRATEGY_NAMES = Object.keys(MERGE_STRATEGIES) as MergeStrategyName[];
/** The options of strategy S (every one optional: the table's defaults fill them in). */
export type MergeStrategyOptions<S extends MergeStrategyName> = (typeof MERGE_STRATEGIES)[S] extends MergeStrategyEntry<infer O> ? Partial<O> : never;

function strategyEntry(name: MergeStrategyName): MergeStrategyEntry<object> {
  if (!Object.prototype.hasOwnProperty.call(MERGE_STRATEGIES, name)) throw new InputError(`unknown merge strategy "${String(name)}" (have ${MERGE_STRATEGY_NAMES.join(', ')})`);
  return (MERGE_STRATEGIES as Record<string, MergeStrategyEntry<object>>)[name];
}

/** Whether strategy `name` with `options` needs the model definition and training data. */
export function strategyNeedsData<S extends MergeStrategyName>(name: S, options: MergeStrategyOptions<S> = {} as MergeStrategyOptions<S>): boolean {
  const e = strategyEntry(name);
  return e.needsData({ ...e.defaults, ...defined(options) });
}

/**
 * Merges `input.models` with strategy `name`. `options` are the strategy's own (see its entry's
 * defaults); options left undefined take the defaults. Every model is checked to have models[0]'s
 * tensors before anything runs.
 */
export function mergeModels<S extends MergeStrategyName>(name: S, input: MergeInput, ctx: MethodContext = {}, options: MergeStrategyOptions<S> = {} as MergeStrategyOptions<S>): MergeResult {
  const e = strategyEntry(name);
  const opts = { ...e.defaults, ...defined(options) };
  if (e.needsData(opts) && (!ctx.model || !ctx.data)) throw new InputError(`merge strategy ${name} needs the model definition and training data`);
  const weights = mergeWeights(input.models.length, input.weights);
  assertValidSpec(input.spec, input.models[0]);
  for (const m of input.models.slice(1)) assertCompatible(input.models[0], m);
  const run: MergeContext = {
    ...ctx,
    seed: ctx.seed ?? 0,
    criterion: ctx.criterion ?? (ctx.data && ctx.data.y instanceof Float32Array ? 'mse' : 'ce'),
  };
  return e.run({ spec: input.spec, models: input.models, weights }, run, opts);
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Align every model to models[0] with a pairwise method, then average. */
function mergeToFirst(input: Required<MergeInput>, ctx: MergeContext, o: FirstOptions): MergeResult {
  const t0 = performance.now();
  const { spec, models, weights } = input;
  const perms: Perms[] = [identityPerms(spec)];
  const aligned: Params[] = [models[0]];
  const log: StepLog[] = [];
  models.slice(1).forEach((b, k) => {
    const r = alignModels(o.method, { spec, a: models[0], b }, ctx, o.methodOptions);
    perms.push(r.perms);
    aligned.push(r.aligned);
    log.push({ step: k + 1, cost: r.log.at(-1)?.cost ?? NaN, ...(r.log.at(-1)?.hardCost !== undefined ? { hardCost: r.log.at(-1)!.hardCost } : {}), seconds: (performance.now() - t0) / 1000 });
  });
  return { strategy: `first/${o.method}`, perms, aligned, merged: weightedAverage(aligned, weights), log, seconds: (performance.now() - t0) / 1000 };
}

/**
 * MergeMany (Git Re-Basin, Ainsworth et al. 2023, appendix): in a seeded random order, align each
 * model with weight matching to the weighted average of the others, and repeat full rounds until
 * none moves (or `maxRounds`); then average. All N models move, so the result is re-expressed with
 * models[0] unpermuted (the same permutation applied to every model: the same merged function).
 * Log: per round, cost = Σ w_i‖π_i(θ_i) − θ̄‖² (weights only), hardCost = units moved that round.
 */
function mergeMany(input: Required<MergeInput>, ctx: MergeContext, o: MergeManyOptions): MergeResult {
  const t0 = performance.now();
  const { spec, models, weights } = input;
  if (!(Number.isInteger(o.maxRounds) && o.maxRounds >= 1)) throw new InputError(`mergemany: maxRounds must be an integer ≥ 1, got ${o.maxRounds}`);
  const n = models.length;
  const rng = new Rng(ctx.seed);
  const perms: Perms[] = models.map(() => identityPerms(spec));
  const current: Params[] = [...models];
  const log: StepLog[] = [];
  for (let round = 1; round <= o.maxRounds; round++) {
    let moved = 0;
    for (const i of rng.shuffle([...Array(n).keys()])) {
      const others = [...Array(n).keys()].filter((j) => j !== i);
      const ow = others.map((j) => weights[j]);
      const total = ow.reduce((s, w) => s + w, 0);
      // A model whose companions all weigh zero is aligned to their plain average.
      const target = weightedAverage(others.map((j) => current[j]), total > 0 ? ow.map((w) => w / total) : undefined);
      const r = alignModels('wm', { spec, a: target, b: current[i] }, { ...ctx, onStep: undefined }, o.wm);
      const m = unitsMoved(r.perms);
      if (m === 0) continue;
      moved += m;
      perms[i] = composePerms(perms[i], r.perms, spec);
      current[i] = r.aligned;
    }
    log.push({ step: round, cost: spread(current, weights), hardCost: moved, seconds: (performance.now() - t0) / 1000 });
    if (ctx.onStep?.(log.at(-1)!)) break;
    if (moved === 0) break;
  }
  const undo = invertPerms(perms[0], spec);
  const relative = perms.map((p, i) => (i === 0 ? identityPerms(spec) : composePerms(p, undo, spec)));
  const aligned = models.map((m, i) => (i === 0 ? m : noGrad(() => applyHard(spec, m, relative[i]))));
  return { strategy: 'mergemany', perms: relative, aligned, merged: weightedAverage(aligned, weights), log, seconds: (performance.now() - t0) / 1000 };
}

function unitsMoved(perms: Perms): number {
  let moved = 0;
  for (const p of Object.values(perms)) for (let i = 0; i < p.length; i++) if (p[i] !== i) moved++;
  return moved;
}

/** Σ_i w_i ‖θ_i − θ̄‖² over the trainable tensors (buffers left out), in float64. */
function spread(states: Params[], weights: number[]): number {
  const mean = weightedAverage(states, weights);
  let total = 0;
  for (const [name, m] of mean) {
    if (isBufferName(name)) continue;
    states.forEach((s, i) => {
      const x = s.get(name)!.data;
      let d = 0;
      for (let k = 0; k < x.length; k++) d += (x[k] - m.data[k]) ** 2;
      total += weights[i] * d;
    });
  }
  return total;
}
