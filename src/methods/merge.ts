/**
 * Merging N models into one: the shared input/result types of every merge strategy.
 * models[0] is the reference (never permuted); each other model is permuted into a common basin
 * and the merged model is the weighted average of the permuted models.
 */
import type { Perms } from '../permutation/apply.js';
import type { PermutationSpec } from '../permutation/spec.js';
import type { Params } from '../state/params.js';
import type { StepLog } from './types.js';

export interface MergeInput {
  spec: PermutationSpec;
  /** The models' tensors (weights and buffers), PyTorch names; models[0] is the reference (never permuted). */
  models: Params[];
  /** Averaging weights summing to 1 (default uniform). */
  weights?: number[];
}

export interface MergeResult {
  strategy: string;
  /** One set of permutations per model; perms[0] is the identity. */
  perms: Perms[];
  /** π_i(model_i) for each i (aligned[0] = models[0]). */
  aligned: Params[];
  /** Σ w_i π_i(model_i). */
  merged: Params;
  log: StepLog[];
  seconds: number;
}
