/**
 * Functional equivalence check: a permuted model must compute the same function as the original.
 * Takes any object with a forward pass (models depend on permutations, not the reverse).
 */
import { noGrad, Tensor } from '../core/index.js';
import type { Rng } from '../core/random.js';
import type { Params } from '../state/params.js';

export interface ForwardModel {
  forward(params: Params, x: Tensor, ctx: { training: boolean; buffers?: Params; rng?: Rng }): Tensor;
}

export interface EquivalenceResult {
  /** max |f_A(x) − f_B(x)| over all outputs. */
  maxAbsDiff: number;
  /** max |f_A(x)|, to judge the difference against. */
  maxAbsOutput: number;
}

function cloneAll(m: Params): Params {
  return new Map([...m].map(([k, t]) => [k, t.clone()]));
}

/**
 * Runs both parameter sets on `x` without gradients and reports the largest output difference.
 * In training mode BN updates running statistics, so buffers are copied first: the check never
 * changes the caller's state.
 */
export function checkEquivalence(model: ForwardModel, paramsA: Params, buffersA: Params | undefined, paramsB: Params, buffersB: Params | undefined,
  x: Tensor, opts: { training: boolean } = { training: false }): EquivalenceResult {
  return noGrad(() => {
    const bA = buffersA && opts.training ? cloneAll(buffersA) : buffersA;
    const bB = buffersB && opts.training ? cloneAll(buffersB) : buffersB;
    const yA = model.forward(paramsA, x, { training: opts.training, buffers: bA });
    const yB = model.forward(paramsB, x, { training: opts.training, buffers: bB });
    if (yA.size !== yB.size) throw new Error(`checkEquivalence: outputs have shapes [${yA.shape.join(', ')}] and [${yB.shape.join(', ')}]`);
    let maxAbsDiff = 0;
    let maxAbsOutput = 0;
    for (let i = 0; i < yA.size; i++) {
      const d = Math.abs(yA.data[i] - yB.data[i]);
      // NaN must not pass as "equal".
      if (!(d <= maxAbsDiff)) maxAbsDiff = Number.isNaN(d) ? Infinity : d;
      maxAbsOutput = Math.max(maxAbsOutput, Math.abs(yA.data[i]));
    }
    return { maxAbsDiff, maxAbsOutput };
  });
}
