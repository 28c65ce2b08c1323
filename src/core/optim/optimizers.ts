/**
 * Optimisers with PyTorch semantics (torch.optim.SGD and AdamW), over explicit state that can be
 * inspected, saved and restored (`getState` / `setState`), so long runs can resume exactly.
 */
import { kernels } from '../backend/index.js';
import type { FloatArray } from '../backend/types.js';
import { allocLike, Tensor } from '../tensor.js';

export interface OptimizerState {
  step: number;
  /**
   * Updates each parameter has received (a parameter without .grad is skipped, as in PyTorch, so its
   * bias correction / momentum start at its own first update). Absent: every parameter has `step`.
   */
  paramSteps?: number[];
  /** Per-parameter buffers, in parameter order (momentum for SGD; m and v for AdamW). */
  buffers: number[][][];
}

export interface Optimizer {
  readonly params: Tensor[];
  lr: number;
  step(): void;
  zeroGrad(): void;
  getState(): OptimizerState;
  setState(s: OptimizerState): void;
}

function checkParams(name: string, params: Tensor[]): void {
  params.forEach((p, i) => {
    if (p.node) throw new Error(`${name}: parameter ${i} ${p.toString()} is not a leaf tensor`);
    if (!p.requiresGrad) throw new Error(`${name}: parameter ${i} ${p.toString()} does not require grad`);
  });
}

function checkLr(name: string, lr: number): void {
  if (!(lr >= 0) || !Number.isFinite(lr)) throw new Error(`${name}: learning rate must be a finite number ≥ 0, got ${lr}`);
}

function loadParamSteps(name: string, params: Tensor[], s: OptimizerState): number[] {
  if (!s.paramSteps) return params.map(() => s.step);
  if (s.paramSteps.length !== params.length) throw new Error(`${name}.setState: state has ${s.paramSteps.length} step counts, optimiser has ${params.length} parameters`);
  return [...s.paramSteps];
}

function saveBuffers(bufs: FloatArray[][]): number[][][] {
  return bufs.map((bs) => bs.map((b) => Array.from(b)));
}

function loadBuffers(name: string, params: Tensor[], saved: number[][][], perParam: number): FloatArray[][] {
  if (saved.length !== params.length) throw new Error(`${name}.setState: state has ${saved.length} parameters, optimiser has ${params.length}`);
  return saved.map((bs, i) => {
    if (bs.length !== perParam) throw new Error(`${name}.setState: parameter ${i} has ${bs.length} buffers, expected ${perParam}`);
    return bs.map((b) => {
      if (b.length !== params[i].size) throw new Error(`${name}.setState: buffer for parameter ${i} has ${b.length} values, expected ${params[i].size}`);
      const a = allocLike(params[i].dtype, b.length);
      a.set(b);
      return a;
    });
  });
}

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

export class SGD implements Optimizer {
  readonly params: Tensor[];
  lr: number;
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  private steps = 0;
  private paramSteps: number[];
  private bufs: FloatArray[];

  constructor(params: Tensor[], opts: SGDOptions) {
    checkParams('SGD', params);
    checkLr('SGD', opts.lr);
    this.params = params;
    this.lr = opts.lr;
    this.momentum = opts.momentum ?? 0;
    this.dampening = opts.dampening ?? 0;
    this.nesterov = opts.nesterov ?? false;
    this.weightDecay = opts.weightDecay ?? 0;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) throw new Error('SGD: nesterov needs momentum > 0 and dampening = 0');
    if (this.momentum < 0 || this.weightDecay < 0) throw new Error('SGD: momentum and weightDecay must be ≥ 0');
    this.bufs = params.map((p) => allocLike(p.dtype, this.momentum ? p.size : 0));
    this.paramSteps = params.map(() => 0);
  }

  step(): void {
    const k = kernels();
    this.params.forEach((p, i) => {
      if (!p.grad) return;
      // The momentum buffer starts at this parameter's own first update (PyTorch's per-param state).
      k.sgd(p.data, p.grad.data, this.bufs[i], this.lr, this.momentum, this.dampening, this.nesterov, this.weightDecay, this.paramSteps[i] === 0);
      this.paramSteps[i]++;
    });
    this.steps++;
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad = null;
  }

  getState(): OptimizerState {
    return { step: this.steps, paramSteps: [...this.paramSteps], buffers: saveBuffers(this.bufs.map((b) => [b])) };
  }

  setState(s: OptimizerState): void {
    const paramSteps = loadParamSteps('SGD', this.params, s);
    if (this.momentum) this.bufs = loadBuffers('SGD', this.params, s.buffers, 1).map((b) => b[0]);
    this.steps = s.step;
    this.paramSteps = paramSteps;
  }
}

export interface AdamWOptions {
  lr?: number; // 1e-3
  betas?: [number, number]; // [0.9, 0.999]
  eps?: number; // 1e-8
  weightDecay?: number; // 0.01
}

export class AdamW implements Optimizer {
  readonly params: Tensor[];
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private steps = 0;
  private paramSteps: number[];
  private m: FloatArray[];
  private v: FloatArray[];

  constructor(params: Tensor[], opts: AdamWOptions = {}) {
    checkParams('AdamW', params);
    this.params = params;
    this.lr = opts.lr ?? 1e-3;
    checkLr('AdamW', this.lr);
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    if (!(this.beta1 >= 0 && this.beta1 < 1 && this.beta2 >= 0 && this.beta2 < 1)) throw new Error(`AdamW: betas must be in [0, 1), got [${this.beta1}, ${this.beta2}]`);
    if (!(this.eps >= 0) || !Number.isFinite(this.eps)) throw new Error(`AdamW: eps must be a finite number ≥ 0, got ${this.eps}`);
    if (!(this.weightDecay >= 0) || !Number.isFinite(this.weightDecay)) throw new Error(`AdamW: weightDecay must be a finite number ≥ 0, got ${this.weightDecay}`);
    this.paramSteps = params.map(() => 0);
    this.m = params.map((p) => allocLike(p.dtype, p.size));
    this.v = params.map((p) => allocLike(p.dtype, p.size));
  }

  step(): void {
    this.steps++;
    const k = kernels();
    this.params.forEach((p, i) => {
      if (!p.grad) return;
      // Bias correction counts this parameter's own updates (PyTorch's per-param state['step']).
      k.adamw(p.data, p.grad.data, this.m[i], this.v[i], this.lr, this.beta1, this.beta2, this.eps, this.weightDecay, ++this.paramSteps[i]);
    });
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad = null;
  }

  getState(): OptimizerState {
    return { step: this.steps, paramSteps: [...this.paramSteps], buffers: saveBuffers(this.params.map((_, i) => [this.m[i], this.v[i]])) };
  }

  setState(s: OptimizerState): void {
    const b = loadBuffers('AdamW', this.params, s.buffers, 2);
    this.paramSteps = loadParamSteps('AdamW', this.params, s);
    this.steps = s.step;
    this.m = b.map((x) => x[0]);
    this.v = b.map((x) => x[1]);
  }
}

/** Scales all gradients so their joint L2 norm is at most maxNorm (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping. */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  const k = kernels();
  let sq = 0;
  for (const p of params) if (p.grad) sq += k.sumSquares(p.grad.data);
  const norm = Math.sqrt(sq);
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const p of params) if (p.grad) k.affine(p.grad.data, coef, 0, p.grad.data);
  return norm;
}

/** Clamps every gradient element to [−clip, clip] (torch.nn.utils.clip_grad_value_). */
export function clipGradValue(params: Tensor[], clip: number): void {
  if (!(clip > 0)) throw new Error(`clipGradValue: clip must be > 0, got ${clip}`);
  for (const p of params) {
    if (!p.grad) continue;
    const g = p.grad.data;
    for (let i = 0; i < g.length; i++) g[i] = g[i] > clip ? clip : g[i] < -clip ? -clip : g[i];
  }
}
