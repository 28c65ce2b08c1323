/**
 * Sinkhorn re-basin (Peña et al., CVPR 2023; method.md §2): every permutation group p gets a
 * learnable matrix X_p; a forward pass turns it into a soft permutation S_p = Sinkhorn(X_p)
 * (log domain, implicit-differentiation backward), applies the S_p to model B as differentiable
 * matrix products, and evaluates any differentiable cost; AdamW updates the X_p. After each step
 * the hard permutations are the linear assignments maximising ⟨X_p, P⟩, and their cost is
 * checked: a hard cost of exactly 0 (a recovered permutation) stops the run.
 */
import { InputError } from '../errors.js';
import { AdamW } from '../core/optim/optimizers.js';
import { Rng } from '../core/random.js';
import { eye, noGrad, Tensor } from '../core/tensor.js';
import type { Params } from '../state/params.js';
import { linearSumAssignment } from '../permutation/assignment.js';
import { applyHard, applySoft } from '../permutation/apply.js';
import { newSinkhornDiagnostics, newSinkhornWorkspace, sinkhorn, type CgWarmStart, type SinkhornDiagnostics } from '../permutation/sinkhorn.js';
import { assertValidSpec } from '../permutation/spec.js';
import { weightCost, type WeightCostKind } from './costs.js';
import type { AlignInput, AlignResult, StepCallback, StepLog } from './types.js';
import { assertCompatible } from './validate.js';

/** A differentiable cost of the permuted model B; `step` counts training steps from 1 and is 0 when the default hard cost evaluates it. */
export type RebasinCost = (alignedB: Params, step: number) => Tensor;

/** τ of one permutation group of n units at one step (counted from 1), given the group's X before the step (read only). */
export type TauSchedule = (n: number, step: number, x: Tensor) => number;

/** Which step's hard permutations a run returns (SinkhornTraining.keep). */
export const SINKHORN_KEEP = ['best', 'last'] as const;
export type SinkhornKeep = (typeof SINKHORN_KEEP)[number];

/** `keep` checked (a library caller may pass anything): the value, or an InputError naming `where`. */
export function checkKeep(where: string, keep: unknown): SinkhornKeep {
  if (!SINKHORN_KEEP.includes(keep as SinkhornKeep)) throw new InputError(`${where}: keep must be ${SINKHORN_KEEP.map((k) => `"${k}"`).join(' or ')}, got ${String(keep)}`);
  return keep as SinkhornKeep;
}

/** A hard cost within this fraction of the starting one counts as zero (float32 rounding of a perfect match). */
export const ZERO_COST_FRACTION = 1e-6;

/** How learnable soft permutations are trained: shared by the pairwise method and the barycenter merge. */
export interface SinkhornTraining {
  /** A fixed temperature, or a schedule (default: WEIGHT_COST_DEFAULTS.tau or DATA_COST_DEFAULTS.tau). */
  tau?: number | TauSchedule;
  scale?: number;
  iters?: number;
  lr?: number;
  steps?: number;
  /** 'identity': X = I; 'noisy': X = I + 0.1·N(0, 1) (the reference's default). */
  init?: 'identity' | 'noisy';
  seed?: number;
  /**
   * Stop as soon as the hard cost is zero up to float32 rounding: at most ZERO_COST_FRACTION of the
   * hard cost the run starts from (the cosine cost of identical tensors is ±1e-8, not 0).
   */
  stopAtZero?: boolean;
  /**
   * Which step's hard permutations the run returns: 'last' (the reference's), or 'best', those of
   * the step with the lowest hard cost (for the weight costs, exactly the quantity minimised).
   */
  keep?: SinkhornKeep;
  kkt?: 'dense' | 'schur-cg';
  onStep?: StepCallback;
}

export interface SinkhornRebasinOptions extends SinkhornTraining {
  /** A weight distance to model A, or any differentiable cost (the data-driven Mid/Rnd costs). */
  cost: WeightCostKind | RebasinCost;
  /** Cost of the hard-permuted B, for the log and the early stop (default: `cost` without grad). */
  hardCost?: (alignedB: Params) => number;
}

/** An AlignResult with the counters of the implicit backward's KKT solves over the whole run. */
export interface SinkhornRebasinResult extends AlignResult {
  diagnostics: SinkhornDiagnostics;
}

/** The reference implementation's settings (method.md §2.1, §2.7), for reproducing it exactly. */
export const REFERENCE_SINKHORN = { tau: 1, scale: 1, iters: 20, lr: 0.1, init: 'noisy' as const, keep: 'last' as const };

/**
 * The weight costs' default τ for a group of n units at step t: τ = 3^(1 − (t − 1)/50) / ln(n + 1),
 * i.e. τ_n = 1/ln(n + 1), approached geometrically from 3·τ_n over the first 50 steps.
 * Width: from X = I, Sinkhorn(X/τ_n) puts (n + 1)/(2n) ≈ ½ of each row's mass on the diagonal,
 * so every group is equally soft whatever its width. A fixed τ = 0.1 starts a 16-unit group
 * almost hard (0.9993 on the diagonal): as X grows the soft permutation hardens, the gradient on
 * a still-swapped pair (∝ its mass, e^(−gap/τ)) vanishes and the pair stays swapped; τ = 1 starts
 * a 512-unit group almost flat (0.005) and needs ~150 steps. Anneal: in a deep network a layer's
 * gradient points the right way only once its neighbours are aligned, and the soft start keeps
 * the early wrong moves cheap to undo (784-64×8-10: at most 55 steps instead of 184).
 * README, "Choosing τ for the weight costs", has the measurements.
 */
export function widthTau(n: number, step: number): number {
  return softStartTau(n, step, 0);
}

/** 3^max(floor, 1 − (t − 1)/50)/ln(n + 1): the soft start widthTau (floor 0) and annealTau share. */
function softStartTau(n: number, step: number, floor: number): number {
  return Math.pow(3, Math.max(floor, 1 - (step - 1) / 50)) / Math.log(n + 1);
}

/**
 * widthTau's soft start continued past τ_n = 1/ln(n + 1) down to τ_n/10 (reached at step ≈ 156):
 * τ = 3^max(1 − (t − 1)/50, −log₃10)/ln(n + 1). An option for the data-driven costs: at a fixed τ
 * their soft optimum can be a midpoint no permutation is near (the relaxation gap, README "Linear
 * mode connectivity"); hardening τ over the run makes the soft and hard costs meet.
 */
export function annealTau(n: number, step: number): number {
  return softStartTau(n, step, -Math.log(10) / Math.log(3));
}

/** The named τ schedules (the CLI's `--tau NAME`) and their formulas. */
export const TAU_SCHEDULES: Record<string, { schedule: TauSchedule; formula: string }> = {
  schedule: { schedule: widthTau, formula: 'τ = 3^(1 − (t − 1)/50)/ln(n + 1) for a group of n units at step t' },
  anneal: { schedule: annealTau, formula: 'τ = 3^max(1 − (t − 1)/50, −log₃10)/ln(n + 1): the schedule continued down to a tenth by step 156' },
};

/** "τ = 0.1", or the schedule's formula. */
export function describeTau(tau: number | TauSchedule): string {
  if (typeof tau === 'number') return `τ = ${tau}`;
  return Object.values(TAU_SCHEDULES).find((s) => s.schedule === tau)?.formula ?? 'τ: a custom schedule';
}

/**
 * Defaults for the weight-distance costs (τ by width; README, "Permutation recovery", has the sweep).
 * lr 1, not the reference's 0.1: the mean cost's gradient on X is far below AdamW's ε on all but the
 * smallest models, so AdamW's step is lr·m/ε and at 0.1 the wide, deep models run out of steps.
 * keep 'best': on trained pairs lr 1 hardens X early and then drifts to worse permutations, so the
 * run returns the step whose hard cost (computed every step anyway) was lowest (README, "The
 * learning rate of the weight costs").
 */
export const WEIGHT_COST_DEFAULTS = { tau: widthTau as number | TauSchedule, scale: 1, iters: 20, lr: 1, steps: 300, init: 'identity' as const, keep: 'best' as SinkhornKeep };

/** Defaults for data-driven costs (Mid, Rnd, custom): the reference's LMC setup. */
export const DATA_COST_DEFAULTS = { tau: 1 as number | TauSchedule, scale: 1, iters: 20, lr: 0.1, steps: 180, init: 'noisy' as const, keep: 'last' as SinkhornKeep };

export function hardPermutations(X: Record<string, Tensor>): Record<string, Int32Array> {
  const perms: Record<string, Int32Array> = {};
  for (const [id, x] of Object.entries(X)) {
    const n = x.shape[0];
    perms[id] = Int32Array.from(linearSumAssignment(Float64Array.from(x.data), n, n, { maximize: true }).colInd);
  }
  return perms;
}

export function sinkhornRebasin(input: AlignInput, opts: SinkhornRebasinOptions): SinkhornRebasinResult {
  const { spec, a, b } = input;
  assertValidSpec(spec, a);
  assertCompatible(a, b);
  const d = typeof opts.cost === 'string' ? WEIGHT_COST_DEFAULTS : DATA_COST_DEFAULTS;
  const tau = opts.tau ?? d.tau;
  const scale = opts.scale ?? d.scale;
  const iters = opts.iters ?? d.iters;
  const lr = opts.lr ?? d.lr;
  const steps = opts.steps ?? d.steps;
  const keep = checkKeep('sinkhornRebasin', opts.keep ?? d.keep);
  if (typeof tau === 'number' && (!(tau > 0) || !Number.isFinite(tau))) throw new InputError(`sinkhornRebasin: tau must be > 0, got ${tau}`);
  if (!(lr > 0 && Number.isFinite(lr))) throw new InputError(`sinkhornRebasin: lr must be a finite number > 0, got ${lr}`);
  if (!(Number.isInteger(iters) && iters >= 1)) throw new Error(`sinkhornRebasin: iters must be an integer ≥ 1, got ${iters}`);
  if (!(Number.isInteger(steps) && steps >= 1)) throw new Error(`sinkhornRebasin: steps must be an integer ≥ 1, got ${steps}`);
  const costFn: RebasinCost = typeof opts.cost === 'string'
    ? ((kind) => (aligned: Params) => weightCost(kind, a, aligned))(opts.cost)
    : opts.cost;
  const hardCostFn = opts.hardCost ?? ((aligned: Params) => noGrad(() => costFn(aligned, 0).item()));
  const rng = new Rng(opts.seed ?? 0);
  const X: Record<string, Tensor> = {};
  for (const [id, n] of Object.entries(spec.perms)) {
    const x = eye(n);
    if ((opts.init ?? d.init) === 'noisy') for (let i = 0; i < x.size; i++) x.data[i] += 0.1 * rng.normal();
    X[id] = x.requireGrad();
  }
  const opt = new AdamW(Object.values(X), { lr });
  // The KKT solutions change little between steps: each permutation warm-starts its own CG.
  const warm: Record<string, CgWarmStart> = Object.fromEntries(Object.keys(X).map((id) => [id, { db: null }]));
  // One scratch buffer for every backward of the run (the permutations' backwards run one at a time).
  const workspace = newSinkhornWorkspace();
  const diagnostics = newSinkhornDiagnostics();
  const log: StepLog[] = [];
  const t0 = performance.now();
  let perms = hardPermutations(X);
  const stopAtZero = opts.stopAtZero ?? true;
  // Evaluated only when needed: a data cost's evaluation reads a batch.
  const startCost = stopAtZero || keep === 'best' ? hardCostFn(noGrad(() => applyHard(spec, b, perms))) : Infinity;
  const zero = stopAtZero ? ZERO_COST_FRACTION * Math.abs(startCost) : 0;
  // The starting permutations compete for 'best' like any step's.
  let best = { cost: startCost, perms };
  let done = 0;
  for (let step = 1; step <= steps; step++) {
    const S: Record<string, Tensor> = {};
    for (const [id, x] of Object.entries(X)) S[id] = sinkhorn(x, { tau: typeof tau === 'number' ? tau : tau(x.shape[0], step, x), scale, iters, kkt: opts.kkt, warmStart: warm[id], workspace, diagnostics });
    const loss = costFn(applySoft(spec, b, S), step);
    opt.zeroGrad();
    loss.backward();
    opt.step();
    // A step that leaves NaN/Inf (a huge lr or τ, extreme weights) would fail deep in the assignment.
    const lossValue = loss.item();
    const broken = Object.entries(X).find(([, x]) => x.data.some((v) => !Number.isFinite(v)));
    if (!Number.isFinite(lossValue) || broken) {
      throw new InputError(`sinkhornRebasin: the optimisation diverged at step ${step} (${broken ? `non-finite entries in the matrix of ${broken[0]}` : `cost ${lossValue}`}); lower lr (${lr}) or check τ and the weights for extreme values`);
    }
    perms = hardPermutations(X);
    const hard = hardCostFn(noGrad(() => applyHard(spec, b, perms)));
    const entry: StepLog = { step, cost: lossValue, hardCost: hard, seconds: (performance.now() - t0) / 1000 };
    log.push(entry);
    done = step;
    if (hard < best.cost) best = { cost: hard, perms };
    if (opts.onStep?.(entry) === true) break;
    if (stopAtZero && Math.abs(hard) <= zero) break;
  }
  if (keep === 'best') perms = best.perms;
  const aligned = noGrad(() => applyHard(spec, b, perms));
  return {
    method: typeof opts.cost === 'string' ? `sinkhorn-${opts.cost}` : 'sinkhorn', perms, aligned, log, steps: done,
    seconds: (performance.now() - t0) / 1000, diagnostics,
  };
}
