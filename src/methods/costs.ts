/**
 * Weight-distance costs between model A and the permuted model B (method.md §3.1), over the
 * weights only (BatchNorm running statistics are not compared, as in the reference):
 *   L2:     (1/N) Σ_k ‖θ_A,k − π(θ_B)_k‖²        (mean squared difference over all N scalars)
 *   L1:     (1/N) Σ_k ‖θ_A,k − π(θ_B)_k‖₁
 *   cosine: (1/K) Σ_k (1 − cos(θ_A,k, π(θ_B)_k)) over the K tensors (norms clamped at 1e-8).
 * The reference's cosine cost adds a constant 2 per tensor; dropping it makes an exact match cost
 * exactly 0, so the early stop works for every cost.
 */
import { InputError } from '../errors.js';
import { kernels } from '../core/backend/index.js';
import { F } from '../core/index.js';
import { Tensor, scalar } from '../core/tensor.js';
import { type Params, isBufferName } from '../state/params.js';

/** One weight cost: its per-tensor term, and whether the sum is a mean over scalars or over tensors. */
export interface WeightCostDef {
  term(ta: Tensor, tb: Tensor): Tensor;
  meanOver: 'scalars' | 'tensors';
}

/** Every weight cost by name; the CLI's `sinkhorn-<name>` methods are generated from this table. */
export const WEIGHT_COSTS = {
  l2: { term: (ta, tb) => F.sum(F.square(F.sub(ta, tb))), meanOver: 'scalars' },
  l1: { term: (ta, tb) => F.sum(F.abs(F.sub(ta, tb))), meanOver: 'scalars' },
  cosine: {
    term: (ta, tb) => {
      const dot = F.sum(F.mul(ta, tb));
      const na = Math.max(Math.sqrt(kernels().sumSquares(ta.data)), 1e-8);
      // Clamped before the square root: sqrt's derivative at 0 is infinite, and max(√0, ε) would
      // send 0·∞ = NaN back to an all-zero B tensor. √max(Σb², ε²) has the same value and a finite gradient.
      const nb = F.sqrt(F.maximum(F.sum(F.square(tb)), scalar(1e-16, tb.dtype)));
      return F.affine(F.div(dot, F.mulScalar(nb, na)), -1, 1);
    },
    meanOver: 'tensors',
  },
} as const satisfies Record<string, WeightCostDef>;
export type WeightCostKind = keyof typeof WEIGHT_COSTS;
export const WEIGHT_COST_NAMES = Object.keys(WEIGHT_COSTS) as WeightCostKind[];

export function weightCost(kind: WeightCostKind, a: Params, alignedB: Params): Tensor {
  const def: WeightCostDef = WEIGHT_COSTS[kind];
  if (!def) throw new InputError(`weightCost: unknown cost "${String(kind)}" (have ${WEIGHT_COST_NAMES.join(', ')})`);
  let total: Tensor | null = null;
  let count = 0;
  let tensors = 0;
  for (const [name, tb] of alignedB) {
    if (isBufferName(name)) continue;
    const ta = a.get(name);
    if (!ta) throw new Error(`weightCost: tensor "${name}" is missing from model A`);
    const term = def.term(ta, tb);
    total = total ? F.add(total, term) : term;
    count += tb.size;
    tensors++;
  }
  if (!total) throw new Error('weightCost: no weight tensors to compare');
  return F.mulScalar(total, 1 / (def.meanOver === 'tensors' ? tensors : count));
}
