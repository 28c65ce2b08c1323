/**
 * Shared pieces of the training and evaluation loops: checking that a dataset fits a model and a
 * criterion (once, up front, so a mismatch is an InputError naming both rather than a shape error
 * deep in an op) and building batch tensors over existing buffers. The per-batch loss is
 * models/loss.ts.
 */
import { Tensor } from '../core/index.js';
import { sampleSize, targetSize, type Dataset } from '../data/dataset.js';
import { InputError } from '../errors.js';
import type { Criterion } from '../models/loss.js';
import type { Model } from '../models/model.js';

/** Throws an InputError unless `data`'s samples fit the model's input. */
export function checkInputs(who: string, model: Model, data: Dataset): void {
  const want = model.inputShape.reduce((a, b) => a * b, 1);
  if (sampleSize(data) !== want) {
    throw new InputError(`${who}: dataset ${data.name} has samples of shape [${data.sampleShape.join(', ')}] but model ${model.name} takes [${model.inputShape.join(', ')}]`);
  }
  if (data.n === 0) throw new InputError(`${who}: dataset ${data.name} is empty`);
}

/** Throws an InputError unless `data` can be fed to `model` and scored with `criterion`. */
export function checkData(who: string, model: Model, data: Dataset, criterion: Criterion): void {
  checkInputs(who, model, data);
  if (criterion === 'ce') {
    if (!(data.y instanceof Int32Array)) throw new InputError(`${who}: cross-entropy needs class labels, but dataset ${data.name} has regression targets (use criterion 'mse')`);
    const y = data.y;
    // k labels per sample (a sequence): the outputs hold k class vectors.
    const k = targetSize(data);
    if (model.numOutputs % k !== 0) throw new InputError(`${who}: dataset ${data.name} has ${k} labels per sample but model ${model.name} has ${model.numOutputs} outputs, not a multiple`);
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < y.length; i++) {
      if (y[i] < lo) lo = y[i];
      if (y[i] > hi) hi = y[i];
    }
    if (lo < 0 || hi >= model.numOutputs / k) {
      throw new InputError(`${who}: dataset ${data.name} has label ${lo < 0 ? lo : hi} but model ${model.name} has ${k === 1 ? `${model.numOutputs} outputs` : `${model.numOutputs / k} classes per label (${k} labels per sample)`}`);
    }
  } else if (criterion === 'mse') {
    if (data.y instanceof Int32Array) throw new InputError(`${who}: MSE needs regression targets, but dataset ${data.name} has class labels (use criterion 'ce')`);
    if (targetSize(data) !== model.numOutputs) {
      throw new InputError(`${who}: dataset ${data.name} has ${targetSize(data)} targets per sample but model ${model.name} has ${model.numOutputs} outputs`);
    }
  } else {
    throw new InputError(`${who}: criterion must be 'ce' or 'mse', got '${String(criterion)}'`);
  }
}

/** A leaf tensor over `x` (no copy) shaped [size, ...model.inputShape]. */
export function inputTensor(model: Model, x: Float32Array, size: number): Tensor {
  return new Tensor(x, [size, ...model.inputShape]);
}

/**
 * Number of rows of logits [N, C] whose argmax (first maximum, like torch.argmax) equals the label
 * (with k labels per sample, logits [N, k·C] count per label).
 */
export function countCorrect(logits: Tensor, labels: Int32Array): number {
  const rows = labels.length;
  return countCorrectRows(logits.data, rows, logits.size / rows, labels);
}

/** countCorrect over the first n rows of a raw [n, c] array. */
export function countCorrectRows(d: ArrayLike<number>, n: number, c: number, labels: Int32Array): number {
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const o = i * c;
    let best = 0;
    let bv = d[o];
    for (let j = 1; j < c; j++) {
      if (d[o + j] > bv) {
        bv = d[o + j];
        best = j;
      }
    }
    if (best === labels[i]) correct++;
  }
  return correct;
}

/** Whether the model normalises with BatchNorm (it then has running-statistic buffers). */
export function hasBatchNorm(model: Model): boolean {
  return model.graph().nodes.some((n) => n.op === 'batchnorm');
}

/** An independent generator seed for stream `k` of a run seeded with `seed`. */
export function streamSeed(seed: number, k: number): number {
  return (Math.imul((Math.floor(seed) >>> 0) ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(k, 0x85ebca6b)) >>> 0;
}
