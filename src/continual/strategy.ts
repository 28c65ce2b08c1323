/**
 * The strategy interface every continual-learning method implements, and the mini-batch training
 * loop the gradient-based baselines share.
 *
 * A strategy runs in resumable units (one per task; one per epoch for joint training). Between
 * units its whole state is a snapshot — named tensors plus JSON — and the shared generator `rng`,
 * so a run restored from a snapshot continues exactly as if it had never stopped.
 */
import { InputError } from '../errors.js';
import { F, Tensor, type Optimizer, type Rng } from '../core/index.js';
import type { Model } from '../models/model.js';
import type { Params } from '../state/params.js';
import type { Benchmark } from './benchmarks.js';
import { batchCrossEntropy, epochBatches, maskLogits, type ReplayBuffer, type StepHook, type TaskBatch } from './common.js';

/** The continual-learning strategies by name: RebasinIL and the baselines it is compared with. */
export const STRATEGIES = ['rebasin-il', 'finetune', 'ewc', 'lwf', 'agem', 'replay', 'joint'] as const;
export type StrategyName = (typeof STRATEGIES)[number];

export interface StrategyEnv {
  model: Model;
  bench: Benchmark;
  /** The one random stream of the method (shuffles, initialisations, memory selection). */
  rng: Rng;
  /** Called once per optimisation step. */
  hook?: StepHook;
}

/** Everything a strategy needs to continue after its last finished unit. */
export interface StrategySnapshot {
  tensors: Map<string, Tensor>;
  meta: Record<string, unknown>;
}

export interface Strategy {
  readonly method: StrategyName;
  /** Hyper-parameters actually used (reported in the results). */
  readonly hyper: Record<string, unknown>;
  /** Resumable units: tasks, or epochs for joint training. */
  readonly units: number;
  /** Optimisation steps of unit u (for progress bars). */
  steps(u: number): number;
  /** Runs unit u (0-based); returns true when an accuracy-matrix row is due after it. */
  runUnit(u: number): boolean;
  /** The model evaluated now (plain tensors; do not modify). */
  params(): Params;
  snapshot(): StrategySnapshot;
  restore(s: StrategySnapshot): void;
  /** Method-specific facts for the report (e.g. how far RebasinIL's permutations moved). */
  diagnostics?(): Record<string, unknown>;
}

export interface LoopOptions {
  env: StrategyEnv;
  /** Trainable leaves, updated in place. */
  params: Params;
  opt: Optimizer;
  taskIndex: number;
  epochs: number;
  batchSize: number;
  memory?: ReplayBuffer | null;
  memBatch?: number;
  /** Sum the loss per task id in the batch (C_IL-style) instead of the batch mean. */
  perTask?: boolean;
  /** Extra differentiable loss on the raw (unmasked) logits, e.g. LwF distillation. */
  extraLoss?: (logits: Tensor, b: TaskBatch) => Tensor | null;
  /** Before each batch's forward (A-GEM's reference gradient). */
  beforeBatch?: () => void;
  /** After backward, before the optimiser step (EWC penalty gradient, A-GEM projection). */
  beforeStep?: () => void;
  /** After the optimiser step (EWC penalty sub-steps). */
  afterStep?: () => void;
  label: string;
}

/** Plain mini-batch training on one task (optionally with replay). Returns the mean loss of the last epoch. */
export function trainLoop(o: LoopOptions): number {
  const { env, params, opt } = o;
  const { model, bench } = env;
  let last = NaN;
  for (let epoch = 1; epoch <= o.epochs; epoch++) {
    let sum = 0;
    let count = 0;
    for (const b of epochBatches(bench, o.taskIndex, o.batchSize, env.rng, o.memory, o.memBatch ?? o.batchSize)) {
      o.beforeBatch?.();
      const raw = model.forward(params, tensorOf(b, bench.inputSize), { training: true });
      let loss = batchCrossEntropy(maskLogits(bench, raw, b.task, b.size), b, o.perTask ?? false);
      const extra = o.extraLoss?.(raw, b);
      if (extra) loss = F.add(loss, extra);
      const lv = loss.item();
      if (!Number.isFinite(lv)) throw new InputError(`${o.label}: the loss became ${lv} on task ${o.taskIndex + 1}, epoch ${epoch}; try a smaller learning rate`);
      opt.zeroGrad();
      loss.backward();
      o.beforeStep?.();
      opt.step();
      o.afterStep?.();
      sum += lv;
      count++;
      env.hook?.(`task ${o.taskIndex + 1} epoch ${epoch}/${o.epochs} loss ${(sum / count).toPrecision(4)}`);
    }
    last = sum / Math.max(count, 1);
  }
  return last;
}

export function tensorOf(b: TaskBatch, d: number): Tensor {
  return new Tensor(b.x, [b.size, d]);
}

/** Prefixes every tensor name of `p` (snapshot naming). */
export function prefixed(prefix: string, p: Params, into: Map<string, Tensor>): void {
  for (const [k, v] of p) into.set(`${prefix}${k}`, v);
}

/** The tensors of a snapshot under `prefix`, names stripped, in the order of `like`. */
export function unprefixed(prefix: string, s: Map<string, Tensor>, like: Params, what: string): Params {
  const out: Params = new Map();
  for (const [k, v] of like) {
    const t = s.get(`${prefix}${k}`);
    if (!t) throw new InputError(`${what}: tensor "${prefix}${k}" is missing`);
    if (t.size !== v.size) throw new InputError(`${what}: tensor "${prefix}${k}" has ${t.size} values, expected ${v.size}`);
    out.set(k, new Tensor(t.data.slice(), v.shape));
  }
  return out;
}
