/**
 * Data-driven costs for Sinkhorn re-basin (method.md §3.2–3.3), with B the permuted model:
 *   Mid: C_Mid(P) = ℒ(f(x; ½·A + ½·π_P(B)), y)
 *   Rnd: C_Rnd(P) = ℒ(f(x; (1−λ)·A + λ·π_P(B)), y), one λ ~ U(0, 1) per mini-batch
 * ℒ is softmax cross-entropy or MSE. The interpolated network normalises with batch statistics
 * (its running statistics would be meaningless), and runs without dropout.
 */
import { Rng } from '../core/random.js';
import { stateLoss, type Batch, type Criterion } from '../models/loss.js';
import type { Model } from '../models/model.js';
import { lerpState, type Params } from '../state/params.js';
import type { RebasinCost } from './sinkhorn-rebasin.js';

export interface DataCostOptions {
  model: Model;
  /** Model A's state (fixed end of the path). */
  a: Params;
  /** Returns the mini-batch for a training step (step ≥ 1); step 0 asks for the evaluation batch. */
  batch: (step: number) => Batch;
  criterion: Criterion;
  /** Seeds the random choices of the costs that make any (Rnd's λ). */
  seed?: number;
}

export function midpointCost(o: DataCostOptions): RebasinCost {
  return (alignedB, step) => stateLoss(o.model, lerpState(o.a, alignedB, 0.5), o.batch(step), o.criterion);
}

export function randomPointCost(o: DataCostOptions): RebasinCost {
  const rng = new Rng(o.seed ?? 0);
  return (alignedB, step) => {
    // The evaluation call (step 0) uses the midpoint so hard costs are comparable across steps.
    const lambda = step === 0 ? 0.5 : rng.uniform();
    return stateLoss(o.model, lerpState(o.a, alignedB, lambda), o.batch(step), o.criterion);
  };
}

/** Every data-driven cost by name; the `sinkhorn-<name>` methods are generated from this table. */
export const DATA_COSTS = {
  mid: midpointCost,
  rnd: randomPointCost,
} as const satisfies Record<string, (o: DataCostOptions) => RebasinCost>;
export type DataCostKind = keyof typeof DATA_COSTS;
export const DATA_COST_NAMES = Object.keys(DATA_COSTS) as DataCostKind[];
