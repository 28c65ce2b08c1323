/**
 * Data-driven costs for Sinkhorn re-basin (method.md §3.2–3.3), with B the permuted model:
 *   Mid: C_Mid(P) = ℒ(f(x; ½·A + ½·π_P(B)), y)
 *   Rnd: C_Rnd(P) = ℒ(f(x; (1−λ)·A + λ·π_P(B)), y), one λ ~ U(0, 1) per mini-batch
 * ℒ is softmax cross-entropy or MSE. The interpolated network normalises with batch statistics
 * (its running statistics would be meaningless), and runs without dropout.
 */
import type { Tensor } from '../core/index.js';
import { Rng } from '../core/random.js';
import type { Model } from '../models/model.js';
import { lerpState, splitState, type Params } from '../state/params.js';
import { batchLoss, type Criterion } from '../training/common.js';
import type { RebasinCost } from './sinkhorn-rebasin.js';

export type { Criterion };

export interface Batch {
  x: Tensor;
  /** Class labels (ce) or regression targets (mse). */
  y: Int32Array | Tensor;
}

export function criterionLoss(criterion: Criterion, out: Tensor, y: Int32Array | Tensor): Tensor {
  if (criterion === 'ce' && !(y instanceof Int32Array)) throw new Error('cross-entropy needs integer class labels');
  if (criterion === 'mse' && y instanceof Int32Array) throw new Error('mse needs a target tensor');
  return batchLoss(criterion, out, y instanceof Int32Array ? y : Float32Array.from(y.data), out.shape[0]);
}

/** Loss of the model at state `state` on one batch (batch statistics for BN). */
export function stateLoss(model: Model, state: Params, batch: Batch, criterion: Criterion): Tensor {
  const { params } = splitState(state);
  return criterionLoss(criterion, model.forward(params, batch.x, { training: false }), batch.y);
}

export interface DataCostOptions {
  model: Model;
  /** Model A's state (fixed end of the path). */
  a: Params;
  /** Returns the mini-batch for a training step (step ≥ 1); step 0 asks for the evaluation batch. */
  batch: (step: number) => Batch;
  criterion: Criterion;
}

export function midpointCost(o: DataCostOptions): RebasinCost {
  return (alignedB, step) => stateLoss(o.model, lerpState(o.a, alignedB, 0.5), o.batch(step), o.criterion);
}

export function randomPointCost(o: DataCostOptions & { seed?: number }): RebasinCost {
  const rng = new Rng(o.seed ?? 0);
  return (alignedB, step) => {
    // The evaluation call (step 0) uses the midpoint so hard costs are comparable across steps.
    const lambda = step === 0 ? 0.5 : rng.uniform();
    return stateLoss(o.model, lerpState(o.a, alignedB, lambda), o.batch(step), o.criterion);
  };
}
