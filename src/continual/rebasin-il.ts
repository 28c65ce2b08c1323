/**
 * RebasinIL: incremental learning by Sinkhorn re-basin (Peña et al., CVPR 2023; official code
 * fagp/rebasin-IL, `utils/rebasin_template.py` and `functional/loss.py`; method.md §3.4 and §4).
 *
 * Task 1: plain training with cross-entropy (AdamW lr 1e-3, 5 epochs, batch 500).
 * Task t > 1, with θ = θ_{t−1} the current merged model (frozen):
 *   - a fresh learnable X_p = I + 0.1·N(0, 1) per permutation group, S_p = Sinkhorn(X_p) (τ = 1,
 *     20 iterations, implicit backward), optimised by AdamW (lr η = 0.1, weight decay 0.01);
 *   - a fresh residual Δ ~ N(0, 1e-4²) of θ's shape, optimised by SGD (lr γ = 0.05, weight decay
 *     β = 0.1) on gradients clipped element-wise to ±0.001, stepped after every backward;
 *   - per mini-batch (task data + replayed samples concatenated), with soft S:
 *         C_IL(P, Δ) = Σ_{task ids τ in batch} ℒ( f(x_τ; ½·π_S(θ) + ½·θ + Δ), y_τ )
 *   - after the task's epochs, merge with the hard P = argmax_P ⟨X, P⟩ (linear assignment):
 *         θ_t = α·θ + (1 − α)·π_{P_hard}(θ) + Δ,   α = 0.8   (the code's "Eq. 12")
 * The replay memory gets 5 samples per class of the task just learned (experience-balanced, as the
 * reference's ExperienceBalancedBuffer of 5 × classes per experience, here also class-balanced).
 */
import { AdamW, clipGradValue, eye, F, noGrad, SGD, type Tensor } from '../core/index.js';
import { hardPermutations } from '../methods/sinkhorn-rebasin.js';
import { applyHard, applySoft } from '../permutation/apply.js';
import type { Params } from '../state/params.js';
import { newSinkhornWorkspace, sinkhorn, type CgWarmStart } from '../permutation/sinkhorn.js';
import type { PermutationSpec } from '../permutation/spec.js';
import { InputError } from '../errors.js';
import { batchCrossEntropy, frozenCopy, gaussianLike, maskLogits, ReplayBuffer, epochBatches, stepsPerEpoch, trainableCopy } from './common.js';
import { prefixed, tensorOf, trainLoop, unprefixed, type Strategy, type StrategyEnv, type StrategySnapshot } from './strategy.js';

export interface RebasinILOptions {
  /** Epochs per task (reference: 5 for the first task and for `il_epochs`). */
  epochs: number;
  batchSize: number;
  /** Task 1: AdamW learning rate and weight decay. */
  firstLr: number;
  firstWeightDecay: number;
  /** AdamW on X (η) and its weight decay (torch's AdamW default 0.01). */
  permLr: number;
  permWeightDecay: number;
  tau: number;
  sinkhornIters: number;
  /** Std of the noise in X = I + noise·N(0, 1). */
  permInitNoise: number;
  /** Residual Δ: SGD lr γ, weight decay β, element-wise gradient clip, init std. */
  residualLr: number;
  residualWeightDecay: number;
  residualClip: number;
  residualInitStd: number;
  /** Merge weight α of θ_{t−1} (training always mixes ½/½). */
  alpha: number;
  /** Replay: samples per class per task, and replayed samples appended per batch. */
  replayPerClass: number;
  memBatch: number;
}

/** The reference's hyper-parameters (rebasinIL.py). */
export const REBASIN_IL_DEFAULTS: RebasinILOptions = {
  epochs: 5, batchSize: 500, firstLr: 1e-3, firstWeightDecay: 0.01,
  permLr: 0.1, permWeightDecay: 0.01, tau: 1, sinkhornIters: 20, permInitNoise: 0.1,
  residualLr: 0.05, residualWeightDecay: 0.1, residualClip: 0.001, residualInitStd: 1e-4,
  alpha: 0.8, replayPerClass: 5, memBatch: 500,
};

/**
 * ½·π_S(θ) + ½·θ + Δ (the model C_IL evaluates), differentiable in S and Δ. `mix` is the weight of
 * the permuted copy (½ in the reference).
 */
export function mixState(spec: PermutationSpec, theta: Params, S: Record<string, Tensor>, delta: Params, mix = 0.5): Params {
  const pi = applySoft(spec, theta, S);
  const out: Params = new Map();
  for (const [k, t] of theta) {
    const d = delta.get(k);
    if (!d) throw new Error(`mixState: residual has no tensor "${k}"`);
    out.set(k, F.add(F.add(F.mulScalar(pi.get(k)!, mix), F.mulScalar(t, 1 - mix)), d));
  }
  return out;
}

/** θ_t = α·θ + (1 − α)·π_{P_hard}(θ) + Δ (no gradients). */
export function mergeRebasin(spec: PermutationSpec, theta: Params, perms: Record<string, Int32Array>, delta: Params, alpha: number): Params {
  return noGrad(() => {
    const pi = applyHard(spec, theta, perms);
    const out: Params = new Map();
    for (const [k, t] of theta) {
      const merged = F.add(F.add(F.mulScalar(t, alpha), F.mulScalar(pi.get(k)!, 1 - alpha)), delta.get(k)!);
      out.set(k, merged.detach());
    }
    return out;
  });
}

/** What the last re-basin task used, kept for inspection and tests. */
export interface RebasinTaskRecord {
  task: number;
  thetaPrev: Params;
  X: Record<string, Tensor>;
  perms: Record<string, Int32Array>;
  delta: Params;
  lossLastEpoch: number;
}

export class RebasinIL implements Strategy {
  readonly method = 'rebasin-il' as const;
  readonly hyper: Record<string, unknown>;
  readonly units: number;
  readonly buffer: ReplayBuffer;
  private theta: Params;
  private readonly spec: PermutationSpec;
  /** Set after every task t > 0. */
  last: RebasinTaskRecord | null = null;
  /** Per re-basin task (t > 0): hidden units the hard P moves (0 = P is the identity). */
  movedUnits: number[] = [];

  constructor(private readonly env: StrategyEnv, init: Params, readonly opts: RebasinILOptions = REBASIN_IL_DEFAULTS) {
    this.theta = frozenCopy(init);
    this.units = env.bench.tasks.length;
    this.spec = env.model.permutationSpec();
    if (Object.keys(this.spec.perms).length === 0) throw new InputError(`RebasinIL: model ${env.model.name} has no permutable hidden units`);
    this.buffer = new ReplayBuffer(env.bench, opts.replayPerClass);
    this.hyper = { ...opts, criterion: env.bench.taskLabels ? 'sum over task ids of mean CE' : 'mean CE' };
  }

  steps(u: number): number {
    return this.opts.epochs * stepsPerEpoch(this.env.bench.tasks[u].train.n, this.opts.batchSize);
  }

  params(): Params {
    return this.theta;
  }

  runUnit(t: number): boolean {
    if (t === 0) this.trainFirst();
    else this.trainRebasin(t);
    this.buffer.addTask(t, this.env.rng);
    return true;
  }

  private trainFirst(): void {
    const o = this.opts;
    const params = trainableCopy(this.theta);
    const opt = new AdamW([...params.values()], { lr: o.firstLr, weightDecay: o.firstWeightDecay });
    trainLoop({ env: this.env, params, opt, taskIndex: 0, epochs: o.epochs, batchSize: o.batchSize, memory: this.buffer, memBatch: o.memBatch, perTask: this.env.bench.taskLabels, label: 'rebasin-il (task 1)' });
    this.theta = frozenCopy(params);
  }

  private trainRebasin(t: number): void {
    const o = this.opts;
    const { env, spec } = this;
    const { model, bench, rng } = env;
    const X: Record<string, Tensor> = {};
    const warm: Record<string, CgWarmStart> = {};
    for (const [id, n] of Object.entries(spec.perms)) {
      const x = eye(n);
      for (let i = 0; i < x.size; i++) x.data[i] += o.permInitNoise * rng.normal();
      X[id] = x.requireGrad();
      warm[id] = { db: null };
    }
    const delta = gaussianLike(this.theta, o.residualInitStd, rng);
    for (const d of delta.values()) d.requireGrad();
    const deltaList = [...delta.values()];
    const optX = new AdamW(Object.values(X), { lr: o.permLr, weightDecay: o.permWeightDecay });
    const optD = new SGD(deltaList, { lr: o.residualLr, weightDecay: o.residualWeightDecay });
    const workspace = newSinkhornWorkspace(); // one scratch buffer for every backward of the task
    let last = NaN;
    for (let epoch = 1; epoch <= o.epochs; epoch++) {
      let sum = 0;
      let count = 0;
      for (const b of epochBatches(bench, t, o.batchSize, rng, this.buffer, o.memBatch)) {
        const S: Record<string, Tensor> = {};
        for (const [id, x] of Object.entries(X)) S[id] = sinkhorn(x, { tau: o.tau, iters: o.sinkhornIters, warmStart: warm[id], workspace });
        const mixed = mixState(spec, this.theta, S, delta, 0.5);
        const logits = maskLogits(bench, model.forward(mixed, tensorOf(b, bench.inputSize), { training: true }), b.task, b.size);
        const loss = batchCrossEntropy(logits, b, bench.taskLabels);
        const lv = loss.item();
        if (!Number.isFinite(lv)) throw new InputError(`rebasin-il: the C_IL loss became ${lv} on task ${t + 1}, epoch ${epoch}`);
        optX.zeroGrad();
        optD.zeroGrad();
        loss.backward();
        clipGradValue(deltaList, o.residualClip);
        optD.step();
        optX.step();
        sum += lv;
        count++;
        env.hook?.(`task ${t + 1} epoch ${epoch}/${o.epochs} C_IL ${(sum / count).toPrecision(4)}`);
      }
      last = sum / Math.max(count, 1);
    }
    const perms = hardPermutations(X);
    const plainDelta = frozenCopy(delta);
    const thetaPrev = this.theta;
    this.theta = mergeRebasin(spec, thetaPrev, perms, plainDelta, o.alpha);
    const Xplain: Record<string, Tensor> = {};
    for (const [id, x] of Object.entries(X)) Xplain[id] = x.clone();
    this.last = { task: t, thetaPrev, X: Xplain, perms, delta: plainDelta, lossLastEpoch: last };
    let moved = 0;
    for (const p of Object.values(perms)) for (let i = 0; i < p.length; i++) if (p[i] !== i) moved++;
    this.movedUnits.push(moved);
  }

  snapshot(): StrategySnapshot {
    const tensors = new Map<string, Tensor>();
    prefixed('theta.', this.theta, tensors);
    return { tensors, meta: { replay: this.buffer.entries, movedUnits: this.movedUnits } };
  }

  restore(s: StrategySnapshot): void {
    this.theta = unprefixed('theta.', s.tensors, this.theta, 'rebasin-il state');
    const entries = s.meta.replay;
    if (!Array.isArray(entries)) throw new InputError('rebasin-il state: "replay" entries are missing');
    if (this.buffer.size > 0) throw new Error('RebasinIL.restore: the replay buffer is not empty');
    this.buffer.addEntries(entries as [number, number][]);
    this.movedUnits = Array.isArray(s.meta.movedUnits) ? (s.meta.movedUnits as number[]) : [];
  }

  diagnostics(): Record<string, unknown> {
    return { movedUnits: this.movedUnits };
  }
}

