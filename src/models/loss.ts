/**
 * A model's loss on a batch: softmax cross-entropy on class labels ('ce') or mean squared error on
 * regression targets ('mse'). Training, evaluation and the data-driven alignment costs all score
 * a batch through these functions.
 */
import { F, Tensor } from '../core/index.js';
import { splitState, type Params } from '../state/params.js';
import type { Model } from './model.js';

export type Criterion = 'ce' | 'mse';

export interface Batch {
  x: Tensor;
  /** Class labels (ce) or regression targets (mse). */
  y: Int32Array | Tensor;
}

/**
 * Logits [N, k·C] read as [N·k, C] when a sample has k class labels (a language model's next token
 * at each of k positions): one row per label.
 */
export function logitRows(out: Tensor, labels: number): Tensor {
  const N = out.shape[0];
  return labels === N ? out : F.reshape(out, [labels, (N * out.shape[1]) / labels]);
}

/** Mean loss of one batch; `y` holds `size` labels (or size × k for k per sample) or size × outputs targets. */
export function batchLoss(criterion: Criterion, out: Tensor, y: Int32Array | Float32Array, size: number): Tensor {
  if (criterion === 'ce') return F.crossEntropy(logitRows(out, y.length), y as Int32Array);
  return F.mse(out, new Tensor(y as Float32Array, [size, y.length / size]));
}

/** batchLoss with the kind of target checked against the criterion. */
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
