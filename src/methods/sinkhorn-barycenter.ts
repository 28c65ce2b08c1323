/**
 * Sinkhorn barycenter merge: Sinkhorn re-basin (Peña et al., CVPR 2023; sinkhorn-rebasin.ts)
 * carried to N models. Every model i ≥ 1 gets one learnable matrix X_{i,p} per permutation group p
 * (model 0 is the reference: identity permutations); a step turns each into a soft permutation
 * S_{i,p} = Sinkhorn(X_{i,p}) (implicit backward), applies them to model i as matrix products and
 * evaluates a cost of all N soft-permuted models at once; AdamW updates every X. At the end (and
 * after every step, for the log) each model's hard permutations are the linear assignments
 * maximising ⟨X_{i,p}, P⟩, and the merged model is the weighted average of the hard-aligned models.
 *
 * Costs, with ŵ the weights normalised to sum 1 and θ̃_i = π_{S_i}(θ_i):
 *   'data':    ℒ(f(x; Σ_i ŵ_i θ̃_i), y) on one mini-batch per step: the loss of the merged model
 *              itself (batch statistics for BN, as the two-model Mid cost; for N = 2 it is C_Mid).
 *   'weights': (1/K) Σ_i ŵ_i ‖θ̃_i − θ̄‖², θ̄ = Σ_j ŵ_j θ̃_j (the running weighted average), over
 *              the K weight scalars (BN statistics excluded): the barycenter objective, equal to
 *              (1/K) Σ_{i<j} ŵ_i ŵ_j ‖θ̃_i − θ̃_j‖². For N = 2 with equal weights it is ¼ of the
 *              two-model L2 cost, so AdamW (scale-invariant) takes the same steps as Sinkhorn-L2.
 */
import { F } from '../core/index.js';
import { AdamW } from '../core/optim/optimizers.js';
import { Rng } from '../core/random.js';
import { eye, noGrad, type Tensor } from '../core/tensor.js';
import { InputError } from '../errors.js';
import { stateLoss, type Batch, type Criterion } from '../models/loss.js';
import type { Model } from '../models/model.js';
import { applyHard, applySoft, identityPerms, type Perms } from '../permutation/apply.js';
import { sinkhorn, type CgWarmStart } from '../permutation/sinkhorn.js';
import { assertValidSpec } from '../permutation/spec.js';
import { isBufferName, mergeWeights, splitState, weightedAverage, type Params } from '../state/params.js';
import type { MergeInput, MergeResult } from './merge.js';
import { checkKeep, DATA_COST_DEFAULTS, hardPermutations, WEIGHT_COST_DEFAULTS, type SinkhornTraining, type TauSchedule } from './sinkhorn-rebasin.js';
import type { StepLog } from './types.js';
import { assertCompatible } from './validate.js';

export type BarycenterCost = 'data' | 'weights';

/** τ: fixed, or a schedule of the group's width and the step (sinkhorn-rebasin.ts `TauSchedule`). */
export type BarycenterTau = number | TauSchedule;

/** The weights cost stops at hard cost zero unless `stopAtZero` is false; the data cost runs every step. */
export interface SinkhornBarycenterOptions extends SinkhornTraining {
  cost: BarycenterCost;
  /** Architecture of the models (the data cost). */
  model?: Model;
  /** The mini-batch of a training step (step ≥ 1), e.g. registry.ts `batchSupplier` (the data cost). */
  batch?: (step: number) => Batch;
  /** Default 'ce'. */
  criterion?: Criterion;
}

/** Σ_i w_i · state_i, differentiable (weightedAverage runs without gradients). */
function softAverage(states: Params[], w: number[]): Params {
  const out: Params = new Map();
  for (const name of states[0].keys()) {
    let acc: Tensor | null = null;
    states.forEach((s, i) => {
      const term = F.mulScalar(s.get(name)!, w[i]);
      acc = acc ? F.add(acc, term) : term;
    });
    out.set(name, acc!);
  }
  return out;
}

/** The weights cost of soft-permuted weights (BN statistics already split off), differentiable. */
function barycenterSpread(states: Params[], w: number[]): Tensor {
  const bar = softAverage(states, w);
  let total: Tensor | null = null;
  let count = 0;
  for (const [name, mean] of bar) {
    states.forEach((s, i) => {
      const term = F.mulScalar(F.sum(F.square(F.sub(s.get(name)!, mean))), w[i]);
      total = total ? F.add(total, term) : term;
    });
    count += mean.size;
  }
  if (!total) throw new InputError('sinkhornBarycenter: the models have no weight tensors');
  return F.mulScalar(total, 1 / count);
}

/**
 * The weights cost of hard-aligned models, in float64; exactly 0 where all models agree, so a
 * complete alignment of copies stops the run (a float average of equal values need not be exact).
 */
function hardSpread(states: Params[], w: number[]): number {
  let total = 0;
  let count = 0;
  for (const name of states[0].keys()) {
    if (isBufferName(name)) continue;
    const arrays = states.map((s) => s.get(name)!.data);
    const size = arrays[0].length;
    for (let k = 0; k < size; k++) {
      const x0 = arrays[0][k];
      let same = true;
      let mean = 0;
      for (let i = 0; i < arrays.length; i++) {
        const x = arrays[i][k];
        if (x !== x0) same = false;
        mean += w[i] * x;
      }
      if (same) continue;
      for (let i = 0; i < arrays.length; i++) {
        const d = arrays[i][k] - mean;
        total += w[i] * d * d;
      }
    }
    count += size;
  }
  return total / count;
}

function weightsOnly(state: Params): Params {
  return splitState(state).params;
}

export function sinkhornBarycenter(input: MergeInput, opts: SinkhornBarycenterOptions): MergeResult {
  const { spec, models } = input;
  if (models.length < 2) throw new InputError(`sinkhornBarycenter: needs at least two models, got ${models.length}`);
  assertValidSpec(spec, models[0]);
  for (let i = 1; i < models.length; i++) {
    try {
      assertCompatible(models[0], models[i]);
    } catch (e) {
      throw new InputError(`sinkhornBarycenter: model ${i + 1} does not match model 1: ${(e as Error).message}`);
    }
  }
  const w = mergeWeights(models.length, input.weights);
  const { cost } = opts;
  if (cost !== 'data' && cost !== 'weights') throw new InputError(`sinkhornBarycenter: cost must be 'data' or 'weights', got '${String(cost)}'`);
  if (cost === 'data' && (!opts.model || !opts.batch)) throw new InputError('sinkhornBarycenter: the data cost needs the model definition and a batch supplier');
  const d = cost === 'weights' ? WEIGHT_COST_DEFAULTS : DATA_COST_DEFAULTS;
  const tau: BarycenterTau = opts.tau ?? d.tau;
  const scale = opts.scale ?? d.scale;
  const iters = opts.iters ?? d.iters;
  const lr = opts.lr ?? d.lr;
  const steps = opts.steps ?? d.steps;
  const keep = checkKeep('sinkhornBarycenter', opts.keep ?? d.keep);
  // Only the weights cost has a hard cost to compare steps by (the data cost's would need a batch).
  if (keep === 'best' && cost === 'data') throw new InputError('sinkhornBarycenter: keep "best" needs the weights cost (the data cost has no hard cost to compare steps by)');
  if (typeof tau === 'number' && (!(tau > 0) || !Number.isFinite(tau))) throw new InputError(`sinkhornBarycenter: tau must be > 0, got ${tau}`);
  if (!(Number.isInteger(iters) && iters >= 1)) throw new InputError(`sinkhornBarycenter: iters must be an integer ≥ 1, got ${iters}`);
  if (!(Number.isInteger(steps) && steps >= 1)) throw new InputError(`sinkhornBarycenter: steps must be an integer ≥ 1, got ${steps}`);
  const criterion = opts.criterion ?? 'ce';

  // Costs see weights only: BN statistics are neither compared nor used (batch statistics).
  const weights = models.map(weightsOnly);
  const rng = new Rng(opts.seed ?? 0);
  const noisy = (opts.init ?? d.init) === 'noisy';
  // X[i - 1]: model i's matrices; model 0 keeps the identity.
  const X: Record<string, Tensor>[] = models.slice(1).map(() => {
    const xs: Record<string, Tensor> = {};
    for (const [id, n] of Object.entries(spec.perms)) {
      const x = eye(n);
      if (noisy) for (let k = 0; k < x.size; k++) x.data[k] += 0.1 * rng.normal();
      xs[id] = x.requireGrad();
    }
    return xs;
  });
  const opt = new AdamW(X.flatMap((xs) => Object.values(xs)), { lr });
  // One Schur-CG warm start per (model, group): its KKT solution changes little between steps.
  const warm: Record<string, CgWarmStart>[] = X.map((xs) => Object.fromEntries(Object.keys(xs).map((id) => [id, { db: null }])));

  const log: StepLog[] = [];
  const t0 = performance.now();
  let perms: Perms[] = X.map(hardPermutations);
  const hardSpreadOf = (ps: Perms[]) => hardSpread(noGrad(() => [weights[0], ...ps.map((p, j) => applyHard(spec, weights[j + 1], p))]), w);
  let best = { cost: keep === 'best' ? hardSpreadOf(perms) : Infinity, perms };
  for (let step = 1; step <= steps; step++) {
    const soft = [weights[0], ...X.map((xs, j) => {
      const S: Record<string, Tensor> = {};
      for (const [id, x] of Object.entries(xs)) {
        const t = typeof tau === 'number' ? tau : tau(x.shape[0], step, x);
        S[id] = sinkhorn(x, { tau: t, scale, iters, kkt: opts.kkt, warmStart: warm[j][id] });
      }
      return applySoft(spec, weights[j + 1], S);
    })];
    const loss = cost === 'weights'
      ? barycenterSpread(soft, w)
      : stateLoss(opts.model!, softAverage(soft, w), opts.batch!(step), criterion);
    opt.zeroGrad();
    loss.backward();
    opt.step();
    perms = X.map(hardPermutations);
    const entry: StepLog = { step, cost: loss.item(), seconds: 0 };
    if (cost === 'weights') {
      entry.hardCost = hardSpreadOf(perms);
      if (entry.hardCost < best.cost) best = { cost: entry.hardCost, perms };
    }
    entry.seconds = (performance.now() - t0) / 1000;
    log.push(entry);
    if (opts.onStep?.(entry) === true) break;
    if (cost === 'weights' && (opts.stopAtZero ?? true) && entry.hardCost === 0) break;
  }
  if (keep === 'best') perms = best.perms;
  const allPerms = [identityPerms(spec), ...perms];
  // Model 0 unchanged: a new map over its own tensors (nothing copied).
  const aligned = [new Map(models[0]), ...noGrad(() => perms.map((p, j) => applyHard(spec, models[j + 1], p)))];
  const merged = weightedAverage(aligned, w);
  return { strategy: `sinkhorn-${cost}`, perms: allPerms, aligned, merged, log, seconds: (performance.now() - t0) / 1000 };
}
