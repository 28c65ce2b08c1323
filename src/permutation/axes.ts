/**
 * Per-axis views used by the matching methods: one tensor permuted on every axis but one, and
 * one axis flattened into the rows of a matrix (row c = every entry of unit c).
 */
import { F } from '../core/index.js';
import type { Tensor } from '../core/tensor.js';
import { applyHard } from './apply.js';
import type { PermutationSpec } from './spec.js';

/** Tensor `name` of a spec under hard permutations on every permuted axis except `axis`. */
export function permuteExceptAxis(spec: PermutationSpec, name: string, t: Tensor, perms: Record<string, Int32Array>, axis: number): Tensor {
  const entries = spec.axes[name];
  if (!entries) throw new Error(`permuteExceptAxis: tensor "${name}" is not in the permutation spec`);
  const single: PermutationSpec = { perms: spec.perms, axes: { [name]: entries.map((e, i) => (i === axis ? null : e)) } };
  return applyHard(single, new Map([[name, t]]), perms).get(name)!;
}

/**
 * The tensor as a [C, rest] matrix whose row c holds every entry of unit c of `axis`
 * (for an axis of length C·inner, the C part of its [C, inner] split).
 */
export function axisMatrix(t: Tensor, axis: number, inner = 1): Float32Array {
  const C = t.shape[axis] / inner;
  const split = [...t.shape.slice(0, axis), C, inner, ...t.shape.slice(axis + 1)];
  const order = [axis, ...split.map((_, i) => i).filter((i) => i !== axis)];
  const moved = axis === 0 ? t : F.permute(F.reshape(t, split), order);
  return moved.data instanceof Float32Array ? moved.data : Float32Array.from(moved.data);
}
