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

/** The strategy of `method` with its effective options. */
export function createStrategy(method: StrategyName, env: StrategyEnv, init: Params, o: StrategyChoices = {}): Strategy {
  if (method === 'rebasin-il') {
    const opts: RebasinILOptions = { ...REBASIN_IL_DEFAULTS, ...(o.epochs ? { epochs: o.epochs } : {}), ...o.rebasin };
    return new RebasinIL(env, init, opts);
  }
  let b: BaselineOptions = { ...BASELINE_DEFAULTS[method] };
  if (o.baselineBatch && ['finetune', 'ewc', 'lwf', 'agem'].includes(method)) b = withBatch(b, o.baselineBatch);
  if (o.epochs) b.epochs = o.epochs;
  if (method === 'joint' && o.jointEpochs) b.epochs = o.jointEpochs;
  switch (method) {
    case 'finetune': return new Finetune(env, init, b);
    case 'ewc': return new Ewc(env, init, b);
    case 'lwf': return new Lwf(env, init, b);
    case 'agem': return new Agem(env, init, b);
    case 'replay': return new Replay(env, init, b);
    case 'joint': return new Joint(env, init, b);
    default: throw new InputError(`unknown method "${String(method)}" (have ${STRATEGIES.join(', ')})`);
  }
}

/** The model of a benchmark: MLP [input, hidden, classes] (the reference's SimpleMLP). */
export function continualModel(bench: Benchmark, hidden = 256): Model {
  return mlp({ sizes: [bench.inputSize, hidden, bench.numClasses] });
}
