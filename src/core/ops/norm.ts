/**
 * Normalisations of imported graphs: LayerNorm over the last k axes (ONNX LayerNormalization),
 * InstanceNorm and GroupNorm over spatial axes per sample. One direct op standardises rows (with
 * its own backward); the per-element or per-channel affine is composed of broadcasting mul/add.
 */
import { kernels } from '../backend/index.js';
import type { FloatArray } from '../backend/types.js';
import { allocUninit, makeResult, numel, shapeStr, Tensor } from '../tensor.js';
import { add, mul } from './elementwise.js';
import { reshape } from './shape.js';

/**
 * (x − mean) / √(var + eps) over each of R consecutive rows of D values (population variance),
 * by the standardizeRows kernels. Backward: dx = σ⁻¹ · (g − mean(g) − x̂ · mean(g · x̂)) per row.
 */
function standardizeRows(op: string, x: Tensor, R: number, D: number, eps: number): Tensor {
  if (!(eps >= 0)) throw new Error(`${op}: eps must be non-negative, got ${eps}`);
  if (D === 0) throw new Error(`${op}: nothing to normalise over in ${shapeStr(x.shape)}`);
  const y = allocUninit(x.dtype, x.size);
  const invStd = new Float64Array(R);
  kernels().standardizeRows(x.data, R, D, eps, y, invStd);
  return makeResult(op, x.shape, y, [x], (g) => {
    const gx: FloatArray = allocUninit(x.dtype, x.size);
    kernels().standardizeRowsBackward(g, y, invStd, R, D, gx);
    return [gx];
  });
}

function affine(op: string, y: Tensor, weight: Tensor | null, bias: Tensor | null, paramShape: number[]): Tensor {
  let out = y;
  for (const [name, t] of [['weight', weight], ['bias', bias]] as const) {
    if (!t) continue;
    if (numel(t.shape) !== numel(paramShape)) throw new Error(`${op}: ${name} ${shapeStr(t.shape)} does not match ${shapeStr(paramShape)} of input ${shapeStr(y.shape)}`);
    const p = reshape(t, paramShape);
    out = name === 'weight' ? mul(out, p) : add(out, p);
  }
  return out;
}

/**
 * Layer normalisation over the last `normalizedRank` axes (PyTorch LayerNorm(normalized_shape),
 * ONNX LayerNormalization with axis = −normalizedRank); weight and bias have the normalised shape.
 */
export function layerNorm(x: Tensor, normalizedRank: number, weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  if (!(Number.isInteger(normalizedRank) && normalizedRank >= 1 && normalizedRank <= x.ndim)) {
    throw new Error(`layerNorm: cannot normalise the last ${normalizedRank} axes of ${shapeStr(x.shape)}`);
  }
  const normShape = x.shape.slice(x.ndim - normalizedRank);
  const D = numel(normShape);
  const y = standardizeRows('layerNorm', x, D === 0 ? 0 : x.size / D, D, eps);
  return affine('layerNorm', y, weight, bias, normShape);
}

/** Instance normalisation of [N, C, ...spatial] per sample and channel; weight and bias are [C]. */
export function instanceNorm(x: Tensor, weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  if (x.ndim < 3) throw new Error(`instanceNorm: expects [N, C, ...spatial], got ${shapeStr(x.shape)}`);
  const [N, C] = x.shape;
  const y = standardizeRows('instanceNorm', x, N * C, numel(x.shape.slice(2)), eps);
  return affine('instanceNorm', y, weight, bias, [C, ...x.shape.slice(2).map(() => 1)]);
}

/**
 * Group normalisation of [N, C, ...spatial]: channels split into `groups` consecutive groups, each
 * standardised per sample over its channels and positions; weight and bias are per channel [C].
 */
export function groupNorm(x: Tensor, groups: number, weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  if (x.ndim < 2) throw new Error(`groupNorm: expects [N, C, ...spatial], got ${shapeStr(x.shape)}`);
  const [N, C] = x.shape;
  if (!(Number.isInteger(groups) && groups >= 1 && C % groups === 0)) throw new Error(`groupNorm: ${groups} groups do not divide the ${C} channels of ${shapeStr(x.shape)}`);
  const y = standardizeRows('groupNorm', x, N * groups, (C / groups) * numel(x.shape.slice(2)), eps);
  return affine('groupNorm', y, weight, bias, [C, ...x.shape.slice(2).map(() => 1)]);
}
