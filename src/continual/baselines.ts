/**
 * Baselines of the official rebasin-IL code (method.md §4 table; Avalanche strategies), on the same
 * model, data and evaluation as RebasinIL:
 *
 *   finetune  Naive: SGD lr 0.01, batch 10, 5 epochs per task.
 *   ewc       EWC, "separate" mode (Kirkpatrick et al. 2017 as in Avalanche): after task k, the
 *             diagonal Fisher F_k = mean over mini-batches (batch 10, data order) of (∇ℒ_batch)²
 *             and θ_k are kept; training adds λ·Σ_k Σ F_k ⊙ (θ − θ_k)² (no ½), λ = 100.
 *             SGD lr 0.01, batch 10, 5 epochs. At a larger batch the penalty is integrated in
 *             sub-steps of the reference lr (see EwcPenalty.applySteps).
 *   lwf       Learning without Forgetting (Li & Hoiem 2017 as in Avalanche): α·KL(q ‖ p) with
 *             p = softmax(z/T), q = softmax(z_old/T) restricted to the classes seen before,
 *             `batchmean` reduction and no T² factor. T divides the logits, so the reference's
 *             T = 0.5 *sharpens* both distributions (logits ×2). α = 1, SGD lr 0.001, batch 10, 5 epochs.
 *   agem      A-GEM (Chaudhry et al. 2019): 50 random patterns per experience in memory; before
 *             each step a reference gradient g_ref on ≤50 memory samples; if g·g_ref < 0 then
 *             g ← g − (g·g_ref / g_ref·g_ref)·g_ref over the whole flattened gradient.
 *             SGD lr 0.001, batch 10, 10 epochs.
 *   replay    Experience replay with RebasinIL's buffer (5 samples per class per task, appended to
 *             every batch) and its first-task optimiser (AdamW lr 1e-3, batch 500, 5 epochs): the
 *             same pipeline without the re-basin, not part of the reference's scripts.
 *   joint     Joint training on all tasks at once (upper bound): SGD lr 0.1, batch 500, 50 epochs.
 *
 * The SGD baselines' batch of 10 can be raised for speed (`batchSize`); the learning rate then
 * scales proportionally (linear scaling rule) and the deviation is recorded in `hyper`.
 */
import { AdamW, F, noGrad, SGD, zeros, type Optimizer, type Tensor } from '../core/index.js';
import { InputError } from '../errors.js';
import type { Params } from '../state/params.js';
import {
  batchCrossEntropy, flatGrad, frozenCopy, maskLogits, ReplayBuffer, setFlatGrad, stepsPerEpoch, trainableCopy,
  type TaskBatch,
} from './common.js';
import { prefixed, tensorOf, trainLoop, unprefixed, type StrategyName, type Strategy, type StrategyEnv, type StrategySnapshot } from './strategy.js';

export interface BaselineOptions {
  epochs: number;
  batchSize: number;
  lr: number;
  optimizer: 'sgd' | 'adamw';
  /** The reference's batch and lr (before any scaling). */
  referenceBatch: number;
  referenceLr: number;
  /** EWC */
  lambda?: number;
  fisherBatch?: number;
  /**
   * EWC: integrate the penalty over this many sub-steps of lr/k after each SGD step on the
   * cross-entropy (default batchSize / referenceBatch, i.e. sub-steps at the reference lr).
   */
  penaltySubsteps?: number;
  /** LwF */
  alpha?: number;
  temperature?: number;
  /** A-GEM */
  patternsPerExperience?: number;
  sampleSize?: number;
  /** Replay */
  replayPerClass?: number;
  memBatch?: number;
}

export const BASELINE_DEFAULTS: Record<Exclude<StrategyName, 'rebasin-il'>, BaselineOptions> = {
  finetune: { epochs: 5, batchSize: 10, lr: 0.01, optimizer: 'sgd', referenceBatch: 10, referenceLr: 0.01 },
  ewc: { epochs: 5, batchSize: 10, lr: 0.01, optimizer: 'sgd', referenceBatch: 10, referenceLr: 0.01, lambda: 100, fisherBatch: 10 },
  lwf: { epochs: 5, batchSize: 10, lr: 0.001, optimizer: 'sgd', referenceBatch: 10, referenceLr: 0.001, alpha: 1, temperature: 0.5 },
  agem: { epochs: 10, batchSize: 10, lr: 0.001, optimizer: 'sgd', referenceBatch: 10, referenceLr: 0.001, patternsPerExperience: 50, sampleSize: 50 },
  replay: { epochs: 5, batchSize: 500, lr: 1e-3, optimizer: 'adamw', referenceBatch: 500, referenceLr: 1e-3, replayPerClass: 5, memBatch: 500 },
  joint: { epochs: 50, batchSize: 500, lr: 0.1, optimizer: 'sgd', referenceBatch: 500, referenceLr: 0.1 },
};

/** Options with the batch changed to `batch` and the lr scaled by batch / reference batch. */
export function withBatch(o: BaselineOptions, batch: number): BaselineOptions {
  return { ...o, batchSize: batch, lr: (o.referenceLr * batch) / o.referenceBatch };
}

/** EWC's penalty sub-steps: the scale factor of the lr, so each sub-step uses the reference lr. */
function ewcSubsteps(o: BaselineOptions): number {
  return o.penaltySubsteps ?? Math.max(1, Math.round(o.batchSize / o.referenceBatch));
}

function describeHyper(method: string, o: BaselineOptions): Record<string, unknown> {
  const h: Record<string, unknown> = { ...o };
  if (method === 'ewc') h.penaltySubsteps = ewcSubsteps(o);
  if (o.batchSize !== o.referenceBatch) {
    h.deviation = `${method}: batch ${o.batchSize} instead of the reference's ${o.referenceBatch}, lr scaled proportionally ${o.referenceLr} → ${+o.lr.toPrecision(6)}`;
    if (method === 'ewc' && ewcSubsteps(o) > 1) {
      h.deviation += `; the penalty is applied after each SGD step as ${ewcSubsteps(o)} exact sub-steps of lr ${+(o.lr / ewcSubsteps(o)).toPrecision(6)} (one step of lr ${+o.lr.toPrecision(6)} exceeds the stability limit 2·lr·λ·ΣF < 2 and diverges)`;
    }
  }
  return h;
}

// ---------------------------------------------------------------- building blocks

/**
 * EWC penalty over separate per-task terms: λ·Σ_k Σ_j F_k[j]·(θ[j] − θ_k[j])². Its gradient
 * 2λ·Σ_k F_k ⊙ (θ − θ_k) = 2λ·(A ⊙ θ − B) uses the running sums A = Σ_k F_k and B = Σ_k F_k ⊙ θ_k
 * (float64), so a step costs O(#params) however many tasks are kept.
 */
export class EwcPenalty {
  readonly terms: { fisher: Params; theta: Params }[] = [];
  private readonly A = new Map<string, Float64Array>();
  private readonly B = new Map<string, Float64Array>();

  constructor(readonly lambda: number) {}

  add(fisher: Params, theta: Params): void {
    this.terms.push({ fisher, theta });
    for (const [k, f] of fisher) {
      const th = theta.get(k);
      if (!th || th.size !== f.size) throw new Error(`EwcPenalty: θ has no tensor "${k}" of ${f.size} values`);
      let a = this.A.get(k);
      let b = this.B.get(k);
      if (!a || !b) {
        this.A.set(k, (a = new Float64Array(f.size)));
        this.B.set(k, (b = new Float64Array(f.size)));
      }
      for (let i = 0; i < f.size; i++) {
        a[i] += f.data[i];
        b[i] += f.data[i] * th.data[i];
      }
    }
  }

  /** The penalty value at `params` (float64, straight from the separate terms). */
  value(params: Params): number {
    let s = 0;
    for (const { fisher, theta } of this.terms) {
      for (const [k, f] of fisher) {
        const p = params.get(k)!.data;
        const t = theta.get(k)!.data;
        for (let i = 0; i < f.size; i++) {
          const d = p[i] - t[i];
          s += f.data[i] * d * d;
        }
      }
    }
    return this.lambda * s;
  }

  /** ∂penalty/∂θ per tensor. */
  gradient(params: Params): Map<string, Float64Array> {
    const out = new Map<string, Float64Array>();
    for (const [k, a] of this.A) {
      const b = this.B.get(k)!;
      const p = params.get(k)!.data;
      const g = new Float64Array(a.length);
      for (let i = 0; i < a.length; i++) g[i] = 2 * this.lambda * (a[i] * p[i] - b[i]);
      out.set(k, g);
    }
    return out;
  }

  /**
   * k explicit gradient steps of size h on the penalty alone, in closed form: per element the
   * update θ ← θ − 2hλ(aθ − b) contracts towards θ* = b/a by r = 1 − 2hλa, so after k steps
   * θ = θ* + r^k·(θ − θ*). Exactly k small SGD steps, at the cost of one.
   */
  applySteps(params: Params, h: number, k: number): void {
    if (this.terms.length === 0) return;
    for (const [name, a] of this.A) {
      const b = this.B.get(name)!;
      const p = params.get(name)!.data;
      for (let i = 0; i < a.length; i++) {
        if (a[i] === 0) continue; // no Fisher mass: b is 0 too, nothing pulls
        const star = b[i] / a[i];
        const rk = Math.pow(1 - 2 * h * this.lambda * a[i], k);
        p[i] = star + rk * (p[i] - star);
      }
    }
  }

  /** Adds the penalty gradient to every parameter's .grad. */
  addGradient(params: Params): void {
    if (this.terms.length === 0) return;
    for (const [k, g] of this.gradient(params)) {
      const p = params.get(k)!;
      if (!p.grad) p.grad = zeros(p.shape, p.dtype);
      const d = p.grad.data;
      for (let i = 0; i < d.length; i++) d[i] += g[i];
    }
  }
}

/**
 * Diagonal empirical Fisher of task `taskIndex` at `params`, as Avalanche's EWC computes it:
 * mini-batches of `batchSize` in data order, squared gradient of each batch's mean (masked)
 * cross-entropy, averaged over the batches.
 */
export function fisherDiagonal(env: StrategyEnv, params: Params, taskIndex: number, batchSize: number): Params {
  const { model, bench } = env;
  const src = bench.tasks[taskIndex].train;
  const work = trainableCopy(params);
  const acc = new Map<string, Float64Array>([...work].map(([k, v]) => [k, new Float64Array(v.size)]));
  let batches = 0;
  const b: TaskBatch = { x: new Float32Array(batchSize * src.d), y: new Int32Array(batchSize), task: new Int32Array(batchSize).fill(taskIndex), size: 0 };
  for (let start = 0; start < src.n; start += batchSize) {
    const size = Math.min(batchSize, src.n - start);
    const idx = Int32Array.from({ length: size }, (_, k) => start + k);
    src.gather(idx, b.x);
    for (let k = 0; k < size; k++) b.y[k] = src.y[start + k];
    const view: TaskBatch = { x: b.x.subarray(0, size * src.d), y: b.y.subarray(0, size), task: b.task.subarray(0, size), size };
    const logits = maskLogits(bench, model.forward(work, tensorOf(view, bench.inputSize), { training: false }), view.task, size);
    const loss = F.crossEntropy(logits, view.y);
    for (const p of work.values()) p.grad = null;
    loss.backward();
    for (const [k, p] of work) {
      const g = p.grad!.data;
      const a = acc.get(k)!;
      for (let i = 0; i < g.length; i++) a[i] += g[i] * g[i];
    }
    batches++;
  }
  const out: Params = new Map();
  for (const [k, v] of work) {
    const f = zeros(v.shape, v.dtype);
    const a = acc.get(k)!;
    for (let i = 0; i < a.length; i++) f.data[i] = a[i] / Math.max(batches, 1);
    out.set(k, f);
  }
  return out;
}

/**
 * LwF distillation KL(q ‖ p)·(1/N) with p = softmax(z/T), q = softmax(z_old/T), both computed over
 * all units and then restricted to `active` (all when null): Σ q·(log q − log p) / N.
 */
export function distillationLoss(logits: Tensor, prevLogits: Tensor, temperature: number, active: number[] | null): Tensor {
  if (!(temperature > 0)) throw new Error(`distillationLoss: temperature must be > 0, got ${temperature}`);
  const n = logits.shape[0];
  let logp = F.logSoftmax(F.mulScalar(logits, 1 / temperature), 1);
  let logq = noGrad(() => F.logSoftmax(F.mulScalar(prevLogits, 1 / temperature), 1));
  if (active && active.length < logits.shape[1]) {
    const idx = Int32Array.from(active);
    logp = F.indexSelect(logp, 1, idx);
    logq = noGrad(() => F.indexSelect(logq, 1, idx));
  }
  const q = noGrad(() => F.exp(logq));
  return F.mulScalar(F.sum(F.mul(q, F.sub(logq, logp))), 1 / n);
}

/**
 * A-GEM projection, in place: if g·g_ref < 0, g ← g − (g·g_ref / g_ref·g_ref)·g_ref, which makes
 * g·g_ref = 0. Returns whether it projected.
 */
export function agemProject(g: Float64Array, gRef: Float64Array): boolean {
  if (g.length !== gRef.length) throw new Error(`agemProject: gradient sizes ${g.length} and ${gRef.length} differ`);
  let dot = 0;
  let ref = 0;
  for (let i = 0; i < g.length; i++) {
    dot += g[i] * gRef[i];
    ref += gRef[i] * gRef[i];
  }
  if (!(dot < 0) || ref === 0) return false;
  const c = dot / ref;
  for (let i = 0; i < g.length; i++) g[i] -= c * gRef[i];
  return true;
}

// ---------------------------------------------------------------- sequential strategies

abstract class Sequential implements Strategy {
  readonly hyper: Record<string, unknown>;
  readonly units: number;
  protected theta: Params;

  constructor(readonly method: Exclude<StrategyName, 'rebasin-il' | 'joint'>, protected readonly env: StrategyEnv, init: Params, readonly opts: BaselineOptions) {
    for (const k of ['epochs', 'batchSize'] as const) {
      if (!(Number.isInteger(opts[k]) && opts[k] >= 1)) throw new InputError(`${method}: ${k} must be an integer ≥ 1, got ${opts[k]}`);
    }
    if (!(opts.lr > 0)) throw new InputError(`${method}: lr must be > 0, got ${opts.lr}`);
    this.theta = frozenCopy(init);
    this.units = env.bench.tasks.length;
    this.hyper = describeHyper(method, opts);
  }

  steps(u: number): number {
    return this.opts.epochs * stepsPerEpoch(this.env.bench.tasks[u].train.n, this.opts.batchSize);
  }

  params(): Params {
    return this.theta;
  }

  protected optimizer(params: Params): Optimizer {
    const list = [...params.values()];
    // A fresh optimiser per task, as Avalanche's reset_optimizer does.
    return this.opts.optimizer === 'adamw' ? new AdamW(list, { lr: this.opts.lr, weightDecay: 0.01 }) : new SGD(list, { lr: this.opts.lr });
  }

  runUnit(t: number): boolean {
    const params = trainableCopy(this.theta);
    this.train(t, params, this.optimizer(params));
    this.theta = frozenCopy(params);
    this.afterTask(t);
    return true;
  }

  protected abstract train(t: number, params: Params, opt: Optimizer): void;
  protected afterTask(_t: number): void {}

  snapshot(): StrategySnapshot {
    const tensors = new Map<string, Tensor>();
    prefixed('theta.', this.theta, tensors);
    const meta: Record<string, unknown> = {};
    this.saveExtra(tensors, meta);
    return { tensors, meta };
  }

  restore(s: StrategySnapshot): void {
    this.theta = unprefixed('theta.', s.tensors, this.theta, `${this.method} state`);
    this.loadExtra(s);
  }

  protected saveExtra(_t: Map<string, Tensor>, _m: Record<string, unknown>): void {}
  protected loadExtra(_s: StrategySnapshot): void {}
}

export class Finetune extends Sequential {
  constructor(env: StrategyEnv, init: Params, opts = BASELINE_DEFAULTS.finetune) {
    super('finetune', env, init, opts);
  }

  protected train(t: number, params: Params, opt: Optimizer): void {
    trainLoop({ env: this.env, params, opt, taskIndex: t, epochs: this.opts.epochs, batchSize: this.opts.batchSize, label: 'finetune' });
  }
}

export class Ewc extends Sequential {
  readonly penalty: EwcPenalty;

  constructor(env: StrategyEnv, init: Params, opts = BASELINE_DEFAULTS.ewc) {
    super('ewc', env, init, opts);
    this.penalty = new EwcPenalty(opts.lambda ?? 100);
  }

  protected train(t: number, params: Params, opt: Optimizer): void {
    const k = ewcSubsteps(this.opts);
    trainLoop({
      env: this.env, params, opt, taskIndex: t, epochs: this.opts.epochs, batchSize: this.opts.batchSize, label: 'ewc',
      // One step: the penalty gradient joins the CE gradient (the reference). k > 1: SGD on the CE,
      // then k penalty sub-steps of lr/k, which keeps the reference's stability at a larger batch.
      beforeStep: k === 1 ? () => this.penalty.addGradient(params) : undefined,
      afterStep: k === 1 ? undefined : () => this.penalty.applySteps(params, this.opts.lr / k, k),
    });
  }

  protected override afterTask(t: number): void {
    const fisher = fisherDiagonal(this.env, this.theta, t, this.opts.fisherBatch ?? 10);
    for (const [k, f] of fisher) {
      if (f.data.some((v) => !Number.isFinite(v))) throw new InputError(`ewc diverged on task ${t + 1}: the Fisher of "${k}" is not finite (a smaller learning rate or batch helps)`);
    }
    this.penalty.add(fisher, frozenCopy(this.theta));
  }

  protected override saveExtra(tensors: Map<string, Tensor>, meta: Record<string, unknown>): void {
    this.penalty.terms.forEach((term, k) => {
      prefixed(`ewc.${k}.fisher.`, term.fisher, tensors);
      prefixed(`ewc.${k}.theta.`, term.theta, tensors);
    });
    meta.ewcTerms = this.penalty.terms.length;
  }

  protected override loadExtra(s: StrategySnapshot): void {
    const n = s.meta.ewcTerms;
    if (!(typeof n === 'number' && Number.isInteger(n) && n >= 0)) throw new InputError('ewc state: "ewcTerms" is missing or not a count');
    for (let k = 0; k < n; k++) {
      this.penalty.add(unprefixed(`ewc.${k}.fisher.`, s.tensors, this.theta, 'ewc state'), unprefixed(`ewc.${k}.theta.`, s.tensors, this.theta, 'ewc state'));
    }
  }
}

export class Lwf extends Sequential {
  constructor(env: StrategyEnv, init: Params, opts = BASELINE_DEFAULTS.lwf) {
    super('lwf', env, init, opts);
  }

  protected train(t: number, params: Params, opt: Optimizer): void {
    const { model, bench } = this.env;
    // The previous model is the one that finished task t−1: the state we start from.
    const prev = t > 0 ? frozenCopy(this.theta) : null;
    const seen = new Set<number>();
    for (let k = 0; k < t; k++) for (const c of bench.tasks[k].classes) seen.add(c);
    const active = [...seen].sort((a, b) => a - b);
    const alpha = this.opts.alpha ?? 1;
    const T = this.opts.temperature ?? 0.5;
    trainLoop({
      env: this.env, params, opt, taskIndex: t, epochs: this.opts.epochs, batchSize: this.opts.batchSize, label: 'lwf',
      extraLoss: prev ? (logits, b) => {
        const old = noGrad(() => model.forward(prev, tensorOf(b, bench.inputSize), { training: false }));
        return F.mulScalar(distillationLoss(logits, old, T, active.length === bench.numClasses ? null : active), alpha);
      } : undefined,
    });
  }
}

export class Agem extends Sequential {
  readonly memory: ReplayBuffer;
  projections = 0;

  constructor(env: StrategyEnv, init: Params, opts = BASELINE_DEFAULTS.agem) {
    super('agem', env, init, opts);
    // Reused as plain pattern storage: entries are added explicitly, not class-balanced.
    this.memory = new ReplayBuffer(env.bench, 1);
  }

  protected train(t: number, params: Params, opt: Optimizer): void {
    const { model, bench, rng } = this.env;
    const sample = this.opts.sampleSize ?? 50;
    let gRef: Float64Array | null = null;
    trainLoop({
      env: this.env, params, opt, taskIndex: t, epochs: this.opts.epochs, batchSize: this.opts.batchSize, label: 'agem',
      beforeBatch: this.memory.size === 0 ? undefined : () => {
        const m = this.memory.size;
        let idx: Int32Array;
        if (m <= sample) idx = Int32Array.from({ length: m }, (_, i) => i);
        else {
          const pool = Int32Array.from({ length: m }, (_, i) => i);
          for (let j = 0; j < sample; j++) {
            const r = j + rng.int(m - j);
            const tmp = pool[j];
            pool[j] = pool[r];
            pool[r] = tmp;
          }
          idx = pool.slice(0, sample);
        }
        const b = this.memory.batch(idx);
        const logits = maskLogits(bench, model.forward(params, tensorOf(b, bench.inputSize), { training: true }), b.task, b.size);
        for (const p of params.values()) p.grad = null;
        batchCrossEntropy(logits, b, false).backward();
        gRef = flatGrad(params);
        for (const p of params.values()) p.grad = null;
      },
      beforeStep: this.memory.size === 0 ? undefined : () => {
        const g = flatGrad(params);
        if (agemProject(g, gRef!)) {
          setFlatGrad(params, g);
          this.projections++;
        }
      },
    });
  }

  protected override afterTask(t: number): void {
    const src = this.env.bench.tasks[t].train;
    const k = Math.min(this.opts.patternsPerExperience ?? 50, src.n);
    const pick = this.env.rng.permutation(src.n).slice(0, k);
    this.memory.addEntries(Array.from(pick, (i) => [t, i] as [number, number]));
  }

  protected override saveExtra(_t: Map<string, Tensor>, meta: Record<string, unknown>): void {
    meta.memory = this.memory.entries;
    meta.projections = this.projections;
  }

  protected override loadExtra(s: StrategySnapshot): void {
    if (!Array.isArray(s.meta.memory)) throw new InputError('agem state: "memory" entries are missing');
    this.memory.addEntries(s.meta.memory as [number, number][]);
    this.projections = typeof s.meta.projections === 'number' ? s.meta.projections : 0;
  }

  /** Steps whose gradient was projected. */
  diagnostics(): Record<string, unknown> {
    return { projections: this.projections };
  }
}

export class Replay extends Sequential {
  readonly buffer: ReplayBuffer;

  constructor(env: StrategyEnv, init: Params, opts = BASELINE_DEFAULTS.replay) {
    super('replay', env, init, opts);
    this.buffer = new ReplayBuffer(env.bench, opts.replayPerClass ?? 5);
  }

  protected train(t: number, params: Params, opt: Optimizer): void {
    trainLoop({
      env: this.env, params, opt, taskIndex: t, epochs: this.opts.epochs, batchSize: this.opts.batchSize, label: 'replay',
      memory: this.buffer, memBatch: this.opts.memBatch ?? this.opts.batchSize,
    });
  }

  protected override afterTask(t: number): void {
    this.buffer.addTask(t, this.env.rng);
  }

  protected override saveExtra(_t: Map<string, Tensor>, meta: Record<string, unknown>): void {
    meta.replay = this.buffer.entries;
  }

  protected override loadExtra(s: StrategySnapshot): void {
    if (!Array.isArray(s.meta.replay)) throw new InputError('replay state: "replay" entries are missing');
    this.buffer.addEntries(s.meta.replay as [number, number][]);
  }
}

/** Joint training on the union of all tasks; resumable after every epoch, one accuracy row at the end. */
export class Joint implements Strategy {
  readonly method = 'joint' as const;
  readonly hyper: Record<string, unknown>;
  readonly units: number;
  private work: Params;
  private opt: Optimizer;
  private readonly offsets: number[];
  private readonly total: number;

  constructor(private readonly env: StrategyEnv, init: Params, readonly opts: BaselineOptions = BASELINE_DEFAULTS.joint) {
    if (!(Number.isInteger(opts.epochs) && opts.epochs >= 1)) throw new InputError(`joint: epochs must be an integer ≥ 1, got ${opts.epochs}`);
    this.units = opts.epochs;
    this.hyper = describeHyper('joint', opts);
    this.work = trainableCopy(init);
    this.opt = new SGD([...this.work.values()], { lr: opts.lr });
    this.offsets = [0];
    for (const t of env.bench.tasks) this.offsets.push(this.offsets[this.offsets.length - 1] + t.train.n);
    this.total = this.offsets[this.offsets.length - 1];
  }

  steps(): number {
    return stepsPerEpoch(this.total, this.opts.batchSize);
  }

  params(): Params {
    return this.work;
  }

  /** Task of global sample g (binary search over the prefix sums). */
  private taskOf(g: number): number {
    let lo = 0;
    let hi = this.offsets.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.offsets[mid] <= g) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  runUnit(u: number): boolean {
    const { model, bench, rng } = this.env;
    const d = bench.inputSize;
    const order = rng.permutation(this.total);
    const B = this.opts.batchSize;
    let sum = 0;
    let count = 0;
    for (let start = 0; start < this.total; start += B) {
      const size = Math.min(B, this.total - start);
      const b: TaskBatch = { x: new Float32Array(size * d), y: new Int32Array(size), task: new Int32Array(size), size };
      const one = new Int32Array(1);
      for (let k = 0; k < size; k++) {
        const g = order[start + k];
        const t = this.taskOf(g);
        one[0] = g - this.offsets[t];
        const src = bench.tasks[t].train;
        src.gather(one, b.x, k);
        b.y[k] = src.y[one[0]];
        b.task[k] = t;
      }
      const logits = maskLogits(bench, model.forward(this.work, tensorOf(b, d), { training: true }), b.task, size);
      const loss = batchCrossEntropy(logits, b, false);
      const lv = loss.item();
      if (!Number.isFinite(lv)) throw new InputError(`joint: the loss became ${lv} in epoch ${u + 1}; try a smaller learning rate`);
      this.opt.zeroGrad();
      loss.backward();
      this.opt.step();
      sum += lv;
      count++;
      this.env.hook?.(`epoch ${u + 1}/${this.units} loss ${(sum / count).toPrecision(4)}`);
    }
    return u === this.units - 1;
  }

  snapshot(): StrategySnapshot {
    const tensors = new Map<string, Tensor>();
    prefixed('theta.', frozenCopy(this.work), tensors);
    return { tensors, meta: { optimizer: this.opt.getState() } };
  }

  restore(s: StrategySnapshot): void {
    this.work = trainableCopy(unprefixed('theta.', s.tensors, this.work, 'joint state'));
    this.opt = new SGD([...this.work.values()], { lr: this.opts.lr });
    const st = s.meta.optimizer as Parameters<Optimizer['setState']>[0] | undefined;
    if (st) this.opt.setState(st);
  }
}
