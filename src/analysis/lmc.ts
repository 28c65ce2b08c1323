/**
 * Linear mode connectivity: loss and accuracy along θ(λ) = (1 − λ)·θ_A + λ·θ_B, and the barrier
 * summaries (Frankle et al. 2020; Entezari et al. 2022; method.md §3 "Barrier metrics"):
 *   loss barrier     B = max_λ [ℒ(θ(λ)) − ((1 − λ)·ℒ(θ_A) + λ·ℒ(θ_B))]
 *   accuracy barrier   max_λ [((1 − λ)·acc_A + λ·acc_B) − acc(θ(λ))]
 *   AUC              ∫₀¹ [ℒ(θ(λ)) − ((1 − λ)·ℒ_A + λ·ℒ_B)] dλ  (trapezoid rule over the λ grid)
 * The barrier is measured against the straight line between the endpoint losses, so a path that
 * is flat or convex between the endpoints has barrier ≤ 0.
 */
import { InputError } from '../errors.js';
import { noGrad } from '../core/tensor.js';
import type { Dataset } from '../data/dataset.js';
import type { Criterion } from '../models/loss.js';
import type { Model } from '../models/model.js';
import { lerpState, splitState, type Params } from '../state/params.js';
import { evaluate, reestimateBatchNorm } from '../training/evaluate.js';

export interface CurvePoint {
  lambda: number;
  loss: number;
  accuracy?: number;
}

/**
 * How an interpolated model gets its BatchNorm statistics: 'interpolate' the endpoints' running
 * statistics like every other tensor; 'reestimate' them on training data for each λ (the REPAIR /
 * "reset BN" practice); 'batch' normalise with the statistics of each evaluation batch.
 */
export type BnMode = 'interpolate' | 'reestimate' | 'batch';

export interface CurveOptions {
  model: Model;
  /** Endpoint states (weights and BN statistics). */
  a: Params;
  b: Params;
  data: Dataset;
  criterion: Criterion;
  /** Number of λ values, evenly spaced over [0, 1] (default 25). */
  points?: number;
  batchSize?: number;
  bn?: BnMode;
  /** Training data for bn = 'reestimate'. */
  bnData?: Dataset;
  bnBatches?: number;
  onPoint?: (p: CurvePoint, index: number) => void;
}

export function lambdas(points: number): number[] {
  if (!(Number.isInteger(points) && points >= 2)) throw new InputError(`LMC: the number of λ points must be an integer ≥ 2, got ${points}`);
  return Array.from({ length: points }, (_, i) => i / (points - 1));
}

export function hasBatchNorm(state: Params): boolean {
  for (const k of state.keys()) if (k.endsWith('running_mean')) return true;
  return false;
}

/** Loss (and accuracy for classification) at evenly spaced points of the linear path A → B. */
export function interpolationCurve(o: CurveOptions): CurvePoint[] {
  const bn = o.bn ?? 'interpolate';
  if (bn === 'reestimate' && !o.bnData) throw new Error('LMC: bn = "reestimate" needs training data (bnData)');
  const batchSize = o.batchSize ?? 1000;
  return noGrad(() => lambdas(o.points ?? 25).map((lambda, i) => {
    const { params, buffers } = splitState(lerpState(o.a, o.b, lambda));
    let state: { params: Params; buffers?: Params };
    if (!hasBatchNorm(o.a) || bn === 'batch') state = { params };
    else if (bn === 'interpolate') state = { params, buffers };
    else state = { params, buffers: reestimateBatchNorm(o.model, params, o.bnData!, { batches: o.bnBatches, batchSize, seed: 0 }) };
    const r = evaluate(o.model, state, o.data, { batchSize, criterion: o.criterion, bnMode: bn === 'batch' ? 'batch' : 'running' });
    const p: CurvePoint = { lambda, loss: r.loss, ...(r.accuracy !== undefined ? { accuracy: r.accuracy } : {}) };
    o.onPoint?.(p, i);
    return p;
  }));
}

export interface BarrierSummary {
  lossBarrier: number;
  /** λ where the loss barrier is attained. */
  lossBarrierAt: number;
  /** Area between the loss curve and the straight line between the endpoint losses. */
  auc: number;
  accBarrier?: number;
  accAuc?: number;
  endpoints: { lossA: number; lossB: number; accA?: number; accB?: number };
}

function trapezoid(xs: number[], ys: number[]): number {
  let s = 0;
  for (let i = 1; i < xs.length; i++) s += ((ys[i] + ys[i - 1]) / 2) * (xs[i] - xs[i - 1]);
  return s;
}

export function barrier(curve: CurvePoint[]): BarrierSummary {
  if (curve.length < 2) throw new Error('barrier: a curve needs at least two points');
  const first = curve[0];
  const last = curve[curve.length - 1];
  const xs = curve.map((p) => p.lambda);
  const span = last.lambda - first.lambda;
  const line = (l: number, ya: number, yb: number) => ya + ((l - first.lambda) / span) * (yb - ya);
  const lossGap = curve.map((p) => p.loss - line(p.lambda, first.loss, last.loss));
  let best = 0;
  for (let i = 1; i < lossGap.length; i++) if (lossGap[i] > lossGap[best]) best = i;
  const out: BarrierSummary = {
    lossBarrier: lossGap[best],
    lossBarrierAt: curve[best].lambda,
    auc: trapezoid(xs, lossGap),
    endpoints: { lossA: first.loss, lossB: last.loss },
  };
  if (curve.every((p) => p.accuracy !== undefined)) {
    const accGap = curve.map((p) => line(p.lambda, first.accuracy!, last.accuracy!) - p.accuracy!);
    out.accBarrier = Math.max(...accGap);
    out.accAuc = trapezoid(xs, accGap);
    out.endpoints.accA = first.accuracy;
    out.endpoints.accB = last.accuracy;
  }
  return out;
}
