/**
 * Weight matching (Ainsworth et al., Git Re-Basin, ICLR 2023, Algorithm 1; method.md §8.2):
 * maximise Σ_tensors ⟨W_A, π(W_B)⟩ by coordinate descent over permutation groups. For group p,
 * with every other permutation fixed, the objective is linear in P_p:
 *   M_p = Σ_{(tensor, axis) ∈ p} W_A^(axis) · (π_{¬p}(W_B)^(axis))ᵀ,
 * where X^(axis) moves that axis first and flattens the rest; the best P_p is the linear
 * assignment maximising ⟨M_p, P_p⟩. Groups are visited in a seeded random order each sweep until a
 * sweep improves nothing (or maxSweeps); from the identity start the first sweep takes the groups
 * with the most tensors first (`sweepOrder`).
 *
 * Work that does not change the result is not redone: each (tensor, axis) of A and of B is
 * flattened once, and B's view under the other permutations is one column gather from it; M_p is
 * accumulated term by term in a fixed order, and the partial sums are kept at the terms where a
 * new dependency (another group's permutation) enters, so a visit restarts from the last partial
 * sum whose inputs are unchanged (terms with no permuted other axis, such as the first layer's,
 * are summed once) and a group whose M_p is unchanged keeps its previous assignment without
 * solving it again. The float operations, and so the permutations, are those of the plain loop.
 *
 * The log's `cost` after each sweep is minus the whole objective, Σ ⟨W_A, π(W_B)⟩ over the
 * matched tensors (the weights on some permuted axis) under that sweep's permutations.
 *
 * Version-2 entries (segments, blocks) go through `generalGroupStep`, uncached: a segment adds
 * its sub-range's term to M_p; a block entry contributes through the Gram matrix G = A·π(B)ᵀ of
 * its B·d positions (other axes permuted). Visiting the inner permutation σ (shared, or σ_i of
 * one block) is the exact step M_σ[j, k] = Σ_i G[i·d + j, π[i]·d + k] (only block i for σ_i).
 * Visiting the block permutation π is two-level: the value of putting B's block b at A's block i
 * is the best inner assignment between them (a d×d LAP on G's (i, b) block), then one B×B LAP;
 * per-block inner permutations σ_i take that pair's assignment in the same step (the exact joint
 * optimum), a shared σ is left to its own visit. The two-level cost is what recovers a planted
 * (π, σ): with σ unknown, ⟨A_i, B_b⟩ says nothing about which heads match. A block of r
 * sub-blocks (`repeat`, grouped-query attention) adds each sub-block pair (s of block i, s of block
 * b) to G's (i, b) block, so G stays (B·d)² whatever r.
 */
import { kernels } from '../core/backend/index.js';
import { Rng } from '../core/random.js';
import { noGrad, type Tensor } from '../core/tensor.js';
import { linearSumAssignment } from '../permutation/assignment.js';
import { applyHard, identityPerms, validatePerms } from '../permutation/apply.js';
import { entryIndex } from '../permutation/apply.js';
import { axisMatrix, permuteExceptAxis } from '../permutation/axes.js';
import { F } from '../core/index.js';
import { assertValidSpec, axisInner, axisPermId, entryPermIds, isFlatAxis, permToAxes, type AxisRef, type PermutationSpec } from '../permutation/spec.js';
import { assertCompatible } from './validate.js';
import { type Params, isBufferName } from '../state/params.js';
import type { AlignInput, AlignResult, StepCallback, StepLog } from './types.js';

export interface WeightMatchingOptions {
  /** Default 100, as Git Re-Basin. */
  maxSweeps?: number;
  seed?: number;
  /** Start from these permutations instead of the identity (STE warm-starts with the previous ones). */
  init?: Record<string, Int32Array>;
  /** Cost of the hard-permuted B after each sweep, for the log (e.g. a weight distance). */
  hardCost?: (alignedB: Params) => number;
  onStep?: StepCallback;
}

export const WEIGHT_MATCHING_DEFAULTS = { maxSweeps: 100 };

/**
 * The groups of one sweep, in the seeded random order; on the first sweep from the identity, the
 * groups with more weight tensors on their axes go first (a stable sort of the shuffled order, so
 * ties — every group of an MLP — keep it, and the generator's stream is the same). Why: a group
 * shared by many tensors (a transformer's residual stream, a ResNet stage) visited after the groups
 * matched through it (MLP hidden units, heads) finds those matched to its identity and keeps it:
 * on the mnist-vit seed pair 0 two of three orders left all 64 residual units in place (objective
 * 445.6 against 451.0 with the residual first; README, "Transformers: linear mode connectivity").
 */
export function sweepOrder(rng: Rng, ids: readonly string[], fromIdentity: boolean, tensorCount: ReadonlyMap<string, number>): string[] {
  const order = rng.shuffle([...ids]);
  return fromIdentity ? order.sort((x, y) => tensorCount.get(y)! - tensorCount.get(x)!) : order;
}

/** Per group, how many weight tensors are on its axes (sweepOrder's key). */
export function groupTensorCounts(byPerm: Record<string, AxisRef[]>, ids: readonly string[]): Map<string, number> {
  return new Map(ids.map((p) => [p, new Set(byPerm[p].filter((e) => !isBufferName(e.name)).map((e) => e.name)).size]));
}

/** The groups weight matching visits (those with a weight tensor) and the tensors it matches, in a fixed order. */
export function matchingPlan(spec: PermutationSpec): { ids: string[]; byPerm: Record<string, AxisRef[]>; tensors: string[] } {
  const byPerm = permToAxes(spec);
  const ids = Object.keys(spec.perms).filter((p) => byPerm[p]?.some((e) => !isBufferName(e.name)));
  const tensors: string[] = [];
  for (const p of ids) for (const e of byPerm[p]) if (!isBufferName(e.name) && !tensors.includes(e.name)) tensors.push(e.name);
  return { ids, byPerm, tensors };
}

/**
 * One tensor's share of the objective, ⟨W_A, π(W_B)⟩, summed in float64 in flat order (each
 * float32 product is exact there), so the in-memory and the streaming variants log the same number.
 * π(W_B) is read in place through per-axis offsets (what applyHard's gathers would copy).
 */
export function tensorObjective(spec: PermutationSpec, name: string, ta: Tensor, tb: Tensor, perms: Record<string, Int32Array>): number {
  const shape = ta.shape;
  const x = ta.data;
  const y = tb.data;
  const axes = spec.axes[name];
  // The dims after the last permuted axis are read as one contiguous block.
  let lastAxis = -1;
  for (let d = 0; d < shape.length; d++) if (axes[d] !== null) lastAxis = d;
  let block = 1;
  for (let d = lastAxis + 1; d < shape.length; d++) block *= shape[d];
  if (lastAxis < 0) {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i] * y[i];
    return s;
  }
  // offs[d][i]: offset in B of index i along axis d of π(B) (new unit i ← old unit perm[i]).
  const offs: Int32Array[] = new Array(lastAxis + 1);
  let stride = block;
  for (let d = lastAxis; d >= 0; d--) {
    const id = axisPermId(axes[d]);
    const n = shape[d];
    const off = new Int32Array(n);
    if (axes[d] !== null && !isFlatAxis(axes[d])) {
      const index = entryIndex(spec, axes[d], perms);
      for (let i = 0; i < n; i++) off[i] = index[i] * stride;
    } else if (id === null) for (let i = 0; i < n; i++) off[i] = i * stride;
    else {
      const perm = perms[id];
      const inner = axisInner(axes[d]);
      for (let i = 0; i < n; i++) {
        const c = (i / inner) | 0;
        off[i] = (perm[c] * inner + (i - c * inner)) * stride;
      }
    }
    offs[d] = off;
    stride *= n;
  }
  const last = offs[lastAxis];
  const L = shape[lastAxis];
  const idx = new Int32Array(lastAxis);
  let s = 0;
  let k = 0;
  for (let r = 0, rows = x.length / (L * block); r < rows; r++) {
    let base = 0;
    for (let d = 0; d < lastAxis; d++) base += offs[d][idx[d]];
    for (let i = 0; i < L; i++) {
      const o = base + last[i];
      for (let j = 0; j < block; j++) s += x[k++] * y[o + j];
    }
    for (let d = lastAxis - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return s;
}

/** The permutation ids on a tensor's axes. */
export function tensorPermIds(spec: PermutationSpec, name: string): string[] {
  const out: string[] = [];
  for (const a of spec.axes[name]) for (const id of entryPermIds(a)) out.push(id);
  return out;
}

/** Whether group p's axes and tensors are all version-1 entries (the cached path handles those). */
export function isFlatGroup(spec: PermutationSpec, refs: AxisRef[]): boolean {
  return refs.every((r) => r.offset === undefined && r.block === undefined && spec.axes[r.name].every(isFlatAxis));
}

/** The tensor's axis `axis` cut to [start, start + length) (the whole tensor when that is the axis). */
function sliceAxis(t: Tensor, axis: number, start: number, length: number): Tensor {
  return start === 0 && length === t.shape[axis] ? t : F.slice(t, axis, start, start + length);
}

const lapMax = (cost: Float64Array, n: number) => linearSumAssignment(cost, n, n, { maximize: true });

/**
 * One coordinate step of weight matching for permutation p over its weight axes `refs`, any of
 * them version-2 (see the note at the top): returns the new permutation of p — and, when p
 * permutes blocks whose inner permutations are one per block, theirs — and whether the group's
 * objective improved. `ta`/`tb` give the tensors of A and B by name.
 */
export function generalGroupStep(spec: PermutationSpec, p: string, refs: AxisRef[], ta: (name: string) => Tensor, tb: (name: string) => Tensor,
  perms: Record<string, Int32Array>): GroupStep {
  const step = groupStepAccumulator(spec, p, perms);
  for (const r of refs) step.add(r, ta(r.name), tb(r.name));
  return step.finish();
}

export interface GroupStep {
  updates: Record<string, Int32Array>;
  improved: boolean;
}

/**
 * generalGroupStep one axis at a time, for callers that hold one tensor pair at a time
 * (weight-matching-lazy.ts): `add` each of p's axis refs with its tensors of A and B (in the same
 * order, for the same float operations), then `finish`. Holds only p's n×n matrix (and, for
 * blocks, the (B·d)² Gram) between calls.
 */
export function groupStepAccumulator(spec: PermutationSpec, p: string, perms: Record<string, Int32Array>): { add(r: AxisRef, a: Tensor, b: Tensor): void; finish(): GroupStep } {
  const n = spec.perms[p];
  const K = kernels();
  const M = new Float32Array(n * n);
  // Blocks role: per `within` key, the summed Gram of the B·d positions.
  const blockGrams = new Map<string, { within: string | string[]; d: number; G: Float32Array }>();
  const old = perms[p];
  const add = (r: AxisRef, a: Tensor, bUnpermuted: Tensor) => {
    const b = permuteExceptAxis(spec, r.name, bUnpermuted, perms, r.axis);
    const offset = r.offset ?? 0;
    if (!r.block) {
      const len = n * r.inner;
      const wa = axisMatrix(sliceAxis(a, r.axis, offset, len), r.axis, r.inner);
      const wb = axisMatrix(sliceAxis(b, r.axis, offset, len), r.axis, r.inner);
      const rest = wa.length / n;
      K.gemm(false, true, n, n, rest, 1, wa, 0, rest, wb, 0, rest, 1, M, 0, n);
      return;
    }
    const { count: B, size: d, repeat: R } = r.block;
    const L = B * R * d;
    const wa = axisMatrix(sliceAxis(a, r.axis, offset, L), r.axis, 1);
    const wb = axisMatrix(sliceAxis(b, r.axis, offset, L), r.axis, 1);
    const rest = wa.length / L;
    if (r.block.role === 'blocks') {
      // G[i·d + j, b·d + k] = Σ_s ⟨A's row (i·R + s)·d + j, B's row (b·R + s)·d + k⟩: sub-block s of
      // block i against sub-block s of block b (tensors with different repeats share G).
      const key = JSON.stringify(r.block.within);
      const Ld = B * d;
      let e = blockGrams.get(key);
      if (!e) blockGrams.set(key, (e = { within: r.block.within, d, G: new Float32Array(Ld * Ld) }));
      for (let s = 0; s < R; s++) {
        const sa = R === 1 ? wa : subBlockRows(wa, B, R, s, d * rest);
        const sb = R === 1 ? wb : subBlockRows(wb, B, R, s, d * rest);
        K.gemm(false, true, Ld, Ld, rest, 1, sa, 0, rest, sb, 0, rest, 1, e.G, 0, Ld);
      }
      return;
    }
    // Within role: M[j, k] += Σ_i Σ_s G[(i·R + s)·d + j, (π[i]·R + s)·d + k] over every block
    // (shared) or block `index`: one d×d product per sub-block, A's block i against B's block π[i].
    const pi = perms[r.block.blocks];
    const blocks = r.block.index === undefined ? [...Array(B).keys()] : [r.block.index];
    for (const i of blocks) {
      for (let s = 0; s < R; s++) K.gemm(false, true, d, d, rest, 1, wa, (i * R + s) * d * rest, rest, wb, (pi[i] * R + s) * d * rest, rest, 1, M, 0, n);
    }
  };
  return { add, finish: () => finishGroupStep(p, n, M, blockGrams, old, perms) };
}

/** Sub-block s of each of the B blocks of R sub-blocks (each `chunk` floats), side by side: a [B·chunk] copy. */
function subBlockRows(w: Float32Array, B: number, R: number, s: number, chunk: number): Float32Array {
  const out = new Float32Array(B * chunk);
  for (let i = 0; i < B; i++) out.set(w.subarray((i * R + s) * chunk, (i * R + s + 1) * chunk), i * chunk);
  return out;
}

function finishGroupStep(p: string, n: number, M: Float32Array, blockGrams: Map<string, { within: string | string[]; d: number; G: Float32Array }>,
  old: Int32Array, perms: Record<string, Int32Array>): GroupStep {
  const T = Float64Array.from(M);
  let oldTotal = 0;
  for (let i = 0; i < n; i++) oldTotal += M[i * n + old[i]];
  // Blocks role: the value of pairing A's block i with B's block b is their best inner assignment.
  const pairs: { within: string | string[]; cols: Int32Array[] }[] = [];
  for (const { within, d, G } of blockGrams.values()) {
    const L = n * d;
    const cols: Int32Array[] = new Array(n * n);
    const cost = new Float64Array(d * d);
    for (let i = 0; i < n; i++) {
      for (let b = 0; b < n; b++) {
        for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) cost[j * d + k] = G[(i * d + j) * L + b * d + k];
        const { colInd, total } = lapMax(cost, d);
        T[i * n + b] += total;
        cols[i * n + b] = Int32Array.from(colInd);
        // The objective before the step: a shared inner permutation at its pair optimum (it has its own visit) …
        if (b === old[i] && typeof within === 'string') oldTotal += total;
      }
      // … per-block ones as they are.
      if (typeof within !== 'string') {
        const sigma = perms[within[i]];
        for (let j = 0; j < d; j++) oldTotal += G[(i * d + j) * L + old[i] * d + sigma[j]];
      }
    }
    pairs.push({ within, cols });
  }
  const { colInd, total } = lapMax(Float64Array.from(T), n);
  const perm = Int32Array.from(colInd);
  const updates: Record<string, Int32Array> = { [p]: perm };
  for (const { within, cols } of pairs) {
    if (typeof within === 'string') continue;
    within.forEach((id, i) => { updates[id] = cols[i * n + perm[i]]; });
  }
  return { updates, improved: total > oldTotal + 1e-7 * Math.max(1, Math.abs(oldTotal)) };
}

/**
 * One coordinate-descent step: the permutation maximising ⟨M, P⟩, and whether it beats `old`.
 * `scratch` (n² float64s) is reused for the solver's copy of M when given.
 */
export function bestGroupPermutation(M: Float32Array, n: number, old: Int32Array, scratch?: Float64Array): { perm: Int32Array; total: number; improved: boolean } {
  let cost: Float64Array;
  if (scratch && scratch.length === n * n) {
    cost = scratch;
    cost.set(M);
  } else cost = Float64Array.from(M);
  const { colInd, total } = linearSumAssignment(cost, n, n, { maximize: true });
  let oldTotal = 0;
  for (let i = 0; i < n; i++) oldTotal += cost[i * n + old[i]];
  // Relative tolerance: M is accumulated in float32.
  return { perm: Int32Array.from(colInd), total, improved: total > oldTotal + 1e-7 * Math.max(1, Math.abs(oldTotal)) };
}

/** One term of M_p: tensor `name` with group p's axis flattened into rows, of A and of unpermuted B. */
interface Term {
  /** A's [n, rest] matrix. */
  wa: Float32Array;
  /** B's [n, rest] matrix before the other axes are permuted. */
  wb: Float32Array;
  rest: number;
  /** The column dimensions of the [n, rest] layout, and per dimension the permutation gathering it (null: none). */
  dims: number[];
  gathers: ({ id: string; inner: number } | null)[];
  /** Permutation ids of the other axes (the term's dependencies). */
  deps: string[];
}

/**
 * B's column index map under the other axes' permutations: column `col` of the permuted matrix is
 * column `index[col]` of the unpermuted one (what applyHard's gathers do to the flattened rest),
 * or null when no other axis is permuted.
 */
function columnIndex(t: Term, perms: Record<string, Int32Array>, out: Int32Array): Int32Array | null {
  if (t.deps.length === 0) return null;
  let len = 1;
  out[0] = 0;
  for (let k = 0; k < t.dims.length; k++) {
    const D = t.dims[k];
    const g = t.gathers[k];
    // Horner step: col' = col·D + d, src' = src·D + map(d), filled back to front so `out` is reused in place.
    const perm = g ? perms[g.id] : null;
    const inner = g ? g.inner : 1;
    for (let i = len - 1; i >= 0; i--) {
      const base = out[i] * D;
      const o = i * D;
      if (perm) {
        for (let d = 0; d < D; d++) {
          const c = (d / inner) | 0;
          out[o + d] = base + perm[c] * inner + (d - c * inner);
        }
      } else {
        for (let d = 0; d < D; d++) out[o + d] = base + d;
      }
    }
    len *= D;
  }
  return out.subarray(0, len);
}

function makeTerm(spec: PermutationSpec, e: AxisRef, ta: Tensor, tb: Tensor, n: number): Term {
  const wa = axisMatrix(ta, e.axis, e.inner);
  const wb = axisMatrix(tb, e.axis, e.inner);
  const shape = ta.shape;
  // axisMatrix's column order: the dims before the axis, the axis' inner part, the dims after it.
  const dims: number[] = [];
  const gathers: Term['gathers'] = [];
  const deps: string[] = [];
  spec.axes[e.name].forEach((entry, k) => {
    if (k === e.axis) {
      dims.push(e.inner);
      gathers.push(null);
      return;
    }
    dims.push(shape[k]);
    const id = axisPermId(entry);
    gathers.push(id === null ? null : { id, inner: axisInner(entry) });
    if (id !== null && !deps.includes(id)) deps.push(id);
  });
  return { wa, wb, rest: wa.length / n, dims, gathers, deps };
}

/** Per group: its terms in spec order, and the kept partial sums of M. */
interface Group {
  n: number;
  terms: Term[];
  /** M after all terms (the matrix last solved), and after terms [0, k) for each k in `cuts`. */
  M: Float32Array;
  cuts: number[];
  partial: Float32Array[];
  /** Whether M is from a completed visit. */
  solved: boolean;
  /** The permutation of every dependency when M was last accumulated. */
  used: Map<string, Int32Array>;
}

const sameContent = (x: Int32Array, y: Int32Array | undefined) => {
  if (x === y) return true;
  if (!y || x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
};

export function weightMatching(input: AlignInput, opts: WeightMatchingOptions = {}): AlignResult {
  const { spec, a, b } = input;
  assertValidSpec(spec, a);
  assertCompatible(a, b);
  const maxSweeps = opts.maxSweeps ?? WEIGHT_MATCHING_DEFAULTS.maxSweeps;
  if (!(Number.isInteger(maxSweeps) && maxSweeps >= 1)) throw new Error(`weightMatching: maxSweeps must be an integer ≥ 1, got ${maxSweeps}`);
  const rng = new Rng(opts.seed ?? 0);
  const perms = opts.init ? Object.fromEntries(Object.entries(opts.init).map(([k, v]) => [k, Int32Array.from(v)])) : identityPerms(spec);
  if (opts.init) validatePerms(spec, perms);
  const { ids, byPerm, tensors } = matchingPlan(spec);
  // Each matched tensor's share of the objective, re-scored only when a permutation on its axes changed.
  const share = new Map<string, number>();
  const tensorIds = new Map(tensors.map((name) => [name, tensorPermIds(spec, name)]));
  let scoredWith: Record<string, Int32Array> = {};
  const t0 = performance.now();
  const log: AlignResult['log'] = [];
  let sweeps = 0;
  let loggingMs = 0;
  noGrad(() => {
    // Both sides flattened once per (tensor, axis); B's permuted view is a column gather of it.
    const groups = new Map<string, Group>();
    let maxCols = 1;
    let maxGather = 0;
    // Groups touching version-2 entries take the uncached general step.
    const general = new Map<string, AxisRef[]>();
    for (const p of ids) {
      const refs = byPerm[p].filter((e) => !isBufferName(e.name));
      if (!isFlatGroup(spec, refs)) general.set(p, refs);
    }
    for (const p of ids) {
      if (general.has(p)) continue;
      const n = spec.perms[p];
      const terms = byPerm[p].filter((e) => !isBufferName(e.name)).map((e) => makeTerm(spec, e, a.get(e.name)!, b.get(e.name)!, n));
      // Partial sums are kept where a term brings a dependency no earlier term has.
      const cuts: number[] = [];
      const seen = new Set<string>();
      terms.forEach((t, k) => {
        if (k > 0 && t.deps.some((d) => !seen.has(d))) cuts.push(k);
        for (const d of t.deps) seen.add(d);
        maxCols = Math.max(maxCols, t.rest);
        if (t.deps.length) maxGather = Math.max(maxGather, n * t.rest);
      });
      groups.set(p, { n, terms, M: new Float32Array(n * n), cuts, partial: cuts.map(() => new Float32Array(n * n)), solved: false, used: new Map() });
    }
    const colIndex = new Int32Array(maxCols);
    const gathered = new Float32Array(maxGather);
    const scratch = new Map<number, Float64Array>();
    const K = kernels();
    const counts = groupTensorCounts(byPerm, ids);
    for (let sweep = 0; sweep < maxSweeps; sweep++) {
      sweeps = sweep + 1;
      let progress = false;
      for (const p of sweepOrder(rng, ids, sweep === 0 && !opts.init, counts)) {
        const refs = general.get(p);
        if (refs) {
          const step = generalGroupStep(spec, p, refs, (name) => a.get(name)!, (name) => b.get(name)!, perms);
          Object.assign(perms, step.updates);
          if (step.improved) progress = true;
          continue;
        }
        const g = groups.get(p)!;
        const { n, terms, M } = g;
        // The first term whose dependencies changed since M was accumulated (terms.length: none).
        let first = 0;
        if (g.solved) {
          first = terms.length;
          for (let k = 0; k < terms.length && first === terms.length; k++) {
            for (const d of terms[k].deps) {
              if (!sameContent(perms[d], g.used.get(d))) {
                first = k;
                break;
              }
            }
          }
        }
        // M is what was solved last time, and perms[p] is that solution: nothing to improve.
        if (first === terms.length) continue;
        // Restart from the last kept partial sum at or before `first`.
        let start = 0;
        let c = -1;
        for (let i = 0; i < g.cuts.length && g.cuts[i] <= first; i++) c = i;
        if (g.solved && c >= 0) {
          start = g.cuts[c];
          M.set(g.partial[c]);
        } else M.fill(0);
        for (let k = start; k < terms.length; k++) {
          const ci = g.cuts.indexOf(k);
          if (ci >= 0 && k > start) g.partial[ci].set(M);
          const t = terms[k];
          let wb = t.wb;
          const index = columnIndex(t, perms, colIndex);
          if (index) {
            // wb[r, c] = t.wb[r, index[c]]: a gather along the columns.
            wb = gathered.subarray(0, n * t.rest);
            K.gather(t.wb, n, t.rest, 1, index, wb);
          }
          K.gemm(false, true, n, n, t.rest, 1, t.wa, 0, t.rest, wb, 0, t.rest, 1, M, 0, n);
          for (const d of t.deps) g.used.set(d, perms[d]);
        }
        let buf = scratch.get(n);
        if (!buf) scratch.set(n, (buf = new Float64Array(n * n)));
        const best = bestGroupPermutation(M, n, perms[p], buf);
        if (best.improved) progress = true;
        perms[p] = best.perm;
        g.solved = true;
      }
      for (const name of tensors) {
        if (share.has(name) && tensorIds.get(name)!.every((id) => sameContent(perms[id], scoredWith[id]))) continue;
        share.set(name, tensorObjective(spec, name, a.get(name)!, b.get(name)!, perms));
      }
      scoredWith = { ...perms };
      let objective = 0;
      for (const name of tensors) objective += share.get(name)!;
      const entry: StepLog = { step: sweeps, cost: -objective, seconds: (performance.now() - t0 - loggingMs) / 1000 };
      if (opts.hardCost) {
        // Logging only: its time is kept out of the method's reported seconds.
        const l0 = performance.now();
        entry.hardCost = opts.hardCost(applyHard(spec, b, perms));
        loggingMs += performance.now() - l0;
      }
      log.push(entry);
      if (opts.onStep?.(entry) === true) break;
      if (!progress) break;
    }
  });
  const aligned = noGrad(() => applyHard(spec, b, perms));
  return { method: 'wm', perms, aligned, log, steps: sweeps, seconds: (performance.now() - t0 - loggingMs) / 1000 };
}
