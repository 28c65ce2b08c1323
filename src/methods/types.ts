/**
 * The one interface every re-basin method implements: given the parameters of model A (fixed)
 * and model B (moved) and a permutation spec, find permutations π so that π(B) lies in A's basin.
 *
 * Convention: B is permuted towards A, as in Git Re-Basin and the CLI (`align A B -o B_aligned`).
 * The Sinkhorn re-basin paper's code permutes A towards B instead; the problem is symmetric.
 * A permutation is an Int32Array with new unit i ← old unit perm[i].
 */
import type { Params } from '../state/params.js';
import type { SinkhornDiagnostics } from '../permutation/sinkhorn.js';
import type { PermutationSpec } from '../permutation/spec.js';

export interface StepLog {
  step: number;
  /** The cost the method optimises (soft cost for Sinkhorn; matching objective for WM). */
  cost: number;
  /** Cost with the current hard permutations, where the method computes it. */
  hardCost?: number;
  seconds: number;
}

export interface AlignResult {
  method: string;
  perms: Record<string, Int32Array>;
  /** π(B): B's tensors (buffers included) under the hard permutations. */
  aligned: Params;
  log: StepLog[];
  steps: number;
  seconds: number;
  /** Counters of the Sinkhorn methods' implicit backward (solves, CG and least-squares fallbacks); absent for the others. */
  diagnostics?: SinkhornDiagnostics;
}

export interface AlignInput {
  spec: PermutationSpec;
  /** Model A's tensors (parameters and buffers), PyTorch names and layouts. */
  a: Params;
  /** Model B's tensors; the ones permuted. */
  b: Params;
}

/** Called after every step/sweep; return true to stop early. */
export type StepCallback = (entry: StepLog) => boolean | void;

