/**
 * Naive baseline: no alignment. Identity permutations and π(B) = B, under the same AlignResult
 * interface as the real methods, so experiments can loop over methods and plot the plain
 * interpolation ½·A + ½·B next to the re-based ones.
 */
import { identityPerms } from '../permutation/apply.js';
import { assertValidSpec } from '../permutation/spec.js';
import type { AlignInput, AlignResult } from './types.js';
import { assertCompatible } from './validate.js';

export function naive(input: AlignInput): AlignResult {
  const { spec, a, b } = input;
  assertValidSpec(spec, a);
  assertCompatible(a, b);
  // A new map over B's own tensors: the identity permutation changes nothing, so nothing is copied.
  return { method: 'naive', perms: identityPerms(spec), aligned: new Map(b), log: [], steps: 0, seconds: 0 };
}
