/**
 * Building a continual-learning strategy by name with its effective options, and the model every
 * strategy of a benchmark trains.
 */
import { InputError } from '../errors.js';
import { mlp } from '../models/mlp.js';
import type { Model } from '../models/model.js';
import type { Params } from '../state/params.js';
import { Agem, BASELINE_DEFAULTS, Ewc, Finetune, Joint, Lwf, Replay, withBatch, type BaselineOptions } from './baselines.js';
import type { Benchmark } from './benchmarks.js';
import { RebasinIL, REBASIN_IL_DEFAULTS, type RebasinILOptions } from './rebasin-il.js';
import { STRATEGIES, type StrategyName, type Strategy, type StrategyEnv } from './strategy.js';

/** The run-wide choices that change a strategy's options. */
export interface StrategyChoices {
  /** Epochs per task for every method (each method's reference value when unset). */
  epochs?: number;
  /** Batch of the SGD baselines finetune/ewc/lwf/agem (reference 10); their lr scales with it. */
  baselineBatch?: number;
  /** Epochs of joint training (reference 50; overrides `epochs` for joint). */
  jointEpochs?: number;
  /** Override RebasinIL hyper-parameters. */
  rebasin?: Partial<RebasinILOptions>;
}

type BaselineClass = new (env: StrategyEnv, init: Params, opts: BaselineOptions) => Strategy;

interface StrategyEntry {
  /** One line for the report: the method and its settings. */
  note: string;
  create(env: StrategyEnv, init: Params, o: StrategyChoices): Strategy;
}

/** A baseline with its reference options; `sgd` ones take --baseline-batch (lr scaled with it). */
function baseline(name: Exclude<StrategyName, 'rebasin-il'>, Cls: BaselineClass, note: string, sgd: boolean): StrategyEntry {
  return {
    note,
    create(env, init, o) {
      let b: BaselineOptions = { ...BASELINE_DEFAULTS[name] };
      if (sgd && o.baselineBatch) b = withBatch(b, o.baselineBatch);
      if (o.epochs) b.epochs = o.epochs;
      if (name === 'joint' && o.jointEpochs) b.epochs = o.jointEpochs;
      return new Cls(env, init, b);
    },
  };
}

/** Every continual-learning strategy by name (the names are STRATEGIES, in strategy.ts). */
export const STRATEGY_TABLE: Record<StrategyName, StrategyEntry> = {
  'rebasin-il': {
    note: 'task 1 AdamW 1e-3; later tasks learn X (Sinkhorn τ=1, 20 it., AdamW 0.1) and Δ (SGD 0.05, wd 0.1, clip ±0.001) on C_IL = ℒ(½π_P(θ)+½θ+Δ), merge θ ← 0.8θ + 0.2π_Phard(θ) + Δ; replay 5/class/task; batch 500 + up to 500 replayed, 5 epochs',
    create(env, init, o) {
      const opts: RebasinILOptions = { ...REBASIN_IL_DEFAULTS, ...(o.epochs ? { epochs: o.epochs } : {}), ...o.rebasin };
      return new RebasinIL(env, init, opts);
    },
  },
  finetune: baseline('finetune', Finetune, 'naive SGD, 5 epochs per task', true),
  ewc: baseline('ewc', Ewc, 'EWC "separate", λ = 100, Fisher from batch-10 squared gradients, SGD, 5 epochs', true),
  lwf: baseline('lwf', Lwf, 'LwF, α = 1, logits divided by T = 0.5 (sharpened), KL batchmean, SGD, 5 epochs', true),
  agem: baseline('agem', Agem, 'A-GEM, 50 random patterns per task, reference gradient on ≤50 memory samples, SGD, 10 epochs', true),
  replay: baseline('replay', Replay, 'RebasinIL without re-basin: same buffer, batches and AdamW 1e-3 (not in the reference scripts)', false),
  joint: baseline('joint', Joint, 'all tasks at once, SGD 0.1, batch 500 (upper bound)', false),
};

/** The strategy of `method` with its effective options. */
export function createStrategy(method: StrategyName, env: StrategyEnv, init: Params, o: StrategyChoices = {}): Strategy {
  const entry = STRATEGY_TABLE[method] as StrategyEntry | undefined;
  if (!entry) throw new InputError(`unknown method "${String(method)}" (have ${STRATEGIES.join(', ')})`);
  return entry.create(env, init, o);
}

/** The model of a benchmark: MLP [input, hidden, classes] (the reference's SimpleMLP). */
export function continualModel(bench: Benchmark, hidden = 256): Model {
  return mlp({ sizes: [bench.inputSize, hidden, bench.numClasses] });
}
