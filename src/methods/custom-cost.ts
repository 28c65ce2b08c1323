/**
 * Any objective (the paper's promise): Sinkhorn re-basin driven by a cost the user writes, a
 * function of the permuted model B (and, with data, a mini-batch) that returns a scalar tensor.
 * It is differentiated through the soft permutations like the built-in costs; the CLI loads it
 * from a module (`rebasin align --method sinkhorn --cost ./my-cost.mjs`).
 */
import { F, Tensor } from '../core/index.js';
import { InputError } from '../errors.js';
import type { Batch } from '../models/loss.js';
import type { Model } from '../models/model.js';
import { splitState, type Params } from '../state/params.js';
import type { RebasinCost } from './sinkhorn-rebasin.js';

/** What a custom cost is called with at each step. */
export interface CustomCostArgs {
  /** B's tensors under the current soft permutation (differentiable), PyTorch names. */
  alignedB: Params;
  /** Model A's tensors (fixed). */
  a: Params;
  /** The mini-batch of this step when data is given (step 0: the evaluation batch). */
  batch?: Batch;
  /** 1, 2, … while training; 0 for the evaluation of the hard permutation. */
  step: number;
  /** Runs the model on `x` with the given tensors (eval mode: BatchNorm with running statistics when present). */
  forward(state: Params, x: Tensor): Tensor;
  /** The tensor ops, so a cost module needs no import of rebasin. */
  F: typeof F;
}

/** A custom cost: a scalar tensor (one element) to minimise. */
export type CustomCost = (args: CustomCostArgs) => Tensor;

export interface CustomCostOptions {
  cost: CustomCost;
  a: Params;
  model?: Model;
  batch?: (step: number) => Batch;
}

/** Wraps a user cost as a Sinkhorn re-basin cost, checking what it returns. */
export function customCost(o: CustomCostOptions): RebasinCost {
  const forward = (state: Params, x: Tensor): Tensor => {
    if (!o.model) throw new InputError('the custom cost calls forward(), which needs a model definition (a rebasin checkpoint, --model-config or --onnx)');
    const { params, buffers } = splitState(state);
    return o.model.forward(params, x, { training: false, buffers: buffers.size ? buffers : undefined });
  };
  return (alignedB, step) => {
    const out = o.cost({ alignedB, a: o.a, batch: o.batch?.(step), step, forward, F });
    if (!(out instanceof Tensor) || out.size !== 1) {
      throw new InputError(`the custom cost must return a scalar tensor, got ${out instanceof Tensor ? `a tensor of shape [${out.shape.join(', ')}]` : typeof out}`);
    }
    if (!Number.isFinite(out.data[0])) throw new InputError(`the custom cost returned ${out.data[0]} at step ${step}`);
    return out;
  };
}
