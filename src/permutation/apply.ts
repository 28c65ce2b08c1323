/**
 * Applying permutations to named tensors, following a PermutationSpec.
 *
 * Convention (Git Re-Basin): a permutation is an Int32Array `perm` with new unit i ← old unit
 * perm[i]. As a matrix, P[i, perm[i]] = 1, so an output axis becomes P·W and an input axis W·Pᵀ;
 * both are "left-multiply by P with that axis moved first", which is how every axis is handled.
 *
 * Version-2 entries (spec.ts): a segments entry permutes each sub-range of the axis by its own
 * entry; a block entry permutes B blocks of d positions as new[i·d + j] = old[π[i]·d + σ_i[j]]
 * (σ_i = the inner permutation of NEW block i). Soft: the blocks are mixed by P_π, then each new
 * block's positions by its P_σ, i.e. (P_π ⊗ P_σ) for a shared σ.
 */
import { F, Tensor, zeros, type DType } from '../core/index.js';
import type { Rng } from '../core/random.js';
import type { Params } from '../state/params.js';
import {
  axisInner, axisPermId, blockRepeat, entryLength, entryPermIds, isBlockAxis, isFlatAxis, isSegmentsAxis, withinId,
  type AxisPerm, type BlockAxis, type PermutationSpec, type Segment,
} from './spec.js';
export type Perms = Record<string, Int32Array>;

// ---------------------------------------------------------------- single permutations

/** Throws unless `perm` is a permutation of 0..n-1 (n = expected size when given). */
export function checkPermutation(perm: ArrayLike<number>, n?: number, label = 'permutation'): void {
  if (n !== undefined && perm.length !== n) throw new Error(`${label}: has length ${perm.length} but size ${n} is expected`);
  const seen = new Uint8Array(perm.length);
  for (let i = 0; i < perm.length; i++) {
    const v = perm[i];
    if (!Number.isInteger(v) || v < 0 || v >= perm.length) throw new Error(`${label}: entry ${i} is ${v}, outside [0, ${perm.length})`);
    if (seen[v]) throw new Error(`${label}: value ${v} appears twice`);
    seen[v] = 1;
  }
}

/** inv with inv[perm[i]] = i: applying perm then inv restores the original order. */
export function invertPermutation(perm: ArrayLike<number>): Int32Array {
  checkPermutation(perm, undefined, 'invertPermutation');
  const inv = new Int32Array(perm.length);
  for (let i = 0; i < perm.length; i++) inv[perm[i]] = i;
  return inv;
}

/**
 * The single permutation equal to applying `first`, then `second`: x2[j] = x1[second[j]] =
 * x0[first[second[j]]], so the result is first[second[j]] (as matrices, P_second · P_first).
 */
export function composePermutations(first: ArrayLike<number>, second: ArrayLike<number>): Int32Array {
  if (first.length !== second.length) throw new Error(`composePermutations: sizes ${first.length} and ${second.length} differ`);
  checkPermutation(first, undefined, 'composePermutations(first)');
  checkPermutation(second, undefined, 'composePermutations(second)');
  const out = new Int32Array(first.length);
  for (let j = 0; j < out.length; j++) out[j] = first[second[j]];
  return out;
}

/** The n×n 0/1 matrix with P[i, perm[i]] = 1. */
export function permutationMatrix(perm: ArrayLike<number>, dtype: DType = 'float32'): Tensor {
  checkPermutation(perm, undefined, 'permutationMatrix');
  const n = perm.length;
  const P = zeros([n, n], dtype);
  for (let i = 0; i < n; i++) P.data[i * n + perm[i]] = 1;
  return P;
}

/** Row-wise argmax of a (soft) n×n matrix: the hard reading used for BN running stats. */
export function rowArgmax(P: Tensor): Int32Array {
  if (P.ndim !== 2) throw new Error(`rowArgmax: expects a matrix, got [${P.shape.join(', ')}]`);
  return F.argmax(P, 1);
}

// ---------------------------------------------------------------- permutation sets

export function identityPerms(spec: PermutationSpec): Perms {
  const out: Perms = {};
  for (const [p, n] of Object.entries(spec.perms)) {
    const a = new Int32Array(n);
    for (let i = 0; i < n; i++) a[i] = i;
    out[p] = a;
  }
  return out;
}

/** One uniformly random permutation per id, drawn in the spec's id order. */
export function randomPerms(spec: PermutationSpec, rng: Rng): Perms {
  const out: Perms = {};
  for (const [p, n] of Object.entries(spec.perms)) out[p] = rng.permutation(n);
  return out;
}

/**
 * The block entries of a spec whose inner permutations are one per block (`within` lists), once
 * each. Their ids form a product group that does not invert or compose id by id.
 */
export function withinLists(spec: PermutationSpec): { blocks: string; within: string[] }[] {
  const out = new Map<string, { blocks: string; within: string[] }>();
  const visit = (a: AxisPerm | Segment) => {
    if (isSegmentsAxis(a)) a.segments.forEach(visit);
    else if (isBlockAxis(a) && typeof a.within !== 'string') out.set(JSON.stringify([a.blocks, a.within]), { blocks: a.blocks, within: a.within });
  };
  for (const entries of Object.values(spec.axes)) entries.forEach(visit);
  return [...out.values()];
}

/**
 * The inverse permutations, id by id. With `spec`, the inner permutations of block entries with
 * one inner permutation per block are inverted as a group element (the inverse of
 * (π, σ_0…σ_{B−1}) is (π⁻¹, σ′) with σ′_b = σ_{π⁻¹[b]}⁻¹); without it, or for every other id,
 * id by id. Pass the spec whenever it may have `within` lists.
 */
export function invertPerms(perms: Perms, spec?: PermutationSpec): Perms {
  const out: Perms = {};
  for (const [p, a] of Object.entries(perms)) out[p] = invertPermutation(a);
  for (const { blocks, within } of spec ? withinLists(spec) : []) {
    const inv = out[blocks];
    within.forEach((id, b) => { out[id] = invertPermutation(perms[within[inv[b]]]); });
  }
  return out;
}

/**
 * `first` then `second` (see composePermutations), id by id; with `spec`, the per-block inner
 * permutations of block entries compose as a group element: σ_i = σ1_{π2[i]} then σ2_i.
 */
export function composePerms(first: Perms, second: Perms, spec?: PermutationSpec): Perms {
  const out: Perms = {};
  for (const p of Object.keys(first)) {
    if (!second[p]) throw new Error(`composePerms: permutation "${p}" is missing from the second set`);
    out[p] = composePermutations(first[p], second[p]);
  }
  for (const p of Object.keys(second)) if (!first[p]) throw new Error(`composePerms: permutation "${p}" is missing from the first set`);
  for (const { blocks, within } of spec ? withinLists(spec) : []) {
    const pi2 = second[blocks];
    within.forEach((id, i) => { out[id] = composePermutations(first[within[pi2[i]]], second[id]); });
  }
  return out;
}

/**
 * Throws, listing every problem and naming the permutation id, unless `perms` holds exactly the
 * spec's ids, each a permutation of the spec's size.
 */
export function validatePerms(spec: PermutationSpec, perms: Record<string, ArrayLike<number>>): void {
  const problems: string[] = [];
  for (const [p, n] of Object.entries(spec.perms)) {
    const a = perms[p];
    if (!a) {
      problems.push(`permutation "${p}" (size ${n}) is missing`);
      continue;
    }
    try {
      checkPermutation(a, n, `permutation "${p}"`);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  for (const p of Object.keys(perms)) {
    if (!Object.prototype.hasOwnProperty.call(spec.perms, p)) problems.push(`permutation "${p}" is not in the spec`);
  }
  if (problems.length) throw new Error(`invalid permutations:\n  - ${problems.join('\n  - ')}`);
}

// ---------------------------------------------------------------- applying

function specEntries(spec: PermutationSpec, name: string, t: Tensor, fn: string) {
  const entries = spec.axes[name];
  if (!entries) throw new Error(`${fn}: tensor "${name}" has no entry in the permutation spec`);
  if (entries.length !== t.ndim) {
    throw new Error(`${fn}: tensor "${name}" has shape [${t.shape.join(', ')}] but the spec lists ${entries.length} axes`);
  }
  return entries;
}

function checkAxis(fn: string, name: string, t: Tensor, axis: number, p: string, n: number, inner: number): void {
  if (t.shape[axis] !== n * inner) {
    const what = inner === 1 ? `size ${n}` : `size ${n} × inner ${inner}`;
    throw new Error(`${fn}: tensor "${name}" axis ${axis} has length ${t.shape[axis]} but permutation "${p}" has ${what}`);
  }
}

/**
 * For a version-2 entry: new position → old position along the axis (what the gather reads).
 * Segments are laid end to end; a flat piece maps unit c, offset r to perm[c]·inner + r; a block
 * piece maps (i·r + s)·d + j to (π[i]·r + s)·d + σ_i[j] (r = its repeat, usually 1).
 */
export function entryIndex(spec: PermutationSpec, entry: AxisPerm, perms: Record<string, ArrayLike<number>>): Int32Array {
  const length = entryLength(entry, spec.perms);
  if (length === null) throw new Error('entryIndex: a null entry has no index');
  const out = new Int32Array(length);
  let offset = 0;
  const piece = (g: Segment) => {
    if (typeof g === 'string' || (typeof g === 'object' && g !== null && 'perm' in g)) {
      const id = typeof g === 'string' ? g : g.perm;
      const inner = typeof g === 'string' ? 1 : g.inner;
      const perm = perms[id];
      for (let c = 0; c < perm.length; c++) for (let r = 0; r < inner; r++) out[offset + c * inner + r] = offset + perm[c] * inner + r;
    } else if (isBlockAxis(g)) {
      const pi = perms[g.blocks];
      const d = spec.perms[withinId(g, 0)];
      const r = blockRepeat(g);
      if (typeof g.within !== 'string' && g.within.length !== pi.length) throw new Error(`entryIndex: block entry ${JSON.stringify(g)} lists ${g.within.length} inner permutations for ${pi.length} blocks`);
      for (let i = 0; i < pi.length; i++) {
        const sigma = perms[withinId(g, i)];
        if (sigma.length !== d) throw new Error(`entryIndex: block entry ${JSON.stringify(g)}: inner permutation "${withinId(g, i)}" has size ${sigma.length}, not ${d}`);
        for (let s = 0; s < r; s++) {
          const to = offset + (i * r + s) * d;
          const from = offset + (pi[i] * r + s) * d;
          for (let j = 0; j < d; j++) out[to + j] = from + sigma[j];
        }
      }
    } else {
      for (let k = 0; k < g.size; k++) out[offset + k] = offset + k;
    }
    offset += entryLength(g, spec.perms)!;
  };
  if (isSegmentsAxis(entry)) entry.segments.forEach(piece);
  else piece(entry as Segment);
  return out;
}

function checkEntryLength(fn: string, name: string, t: Tensor, axis: number, spec: PermutationSpec, entry: AxisPerm): void {
  const n = entryLength(entry, spec.perms);
  if (n !== null && t.shape[axis] !== n) {
    throw new Error(`${fn}: tensor "${name}" axis ${axis} has length ${t.shape[axis]} but its ${isSegmentsAxis(entry) ? 'segments' : 'block'} entry ${JSON.stringify(entry)} covers ${n}`);
  }
}

/** Gathers `index` along `axis`, whose length is C·inner viewed as [C, inner]. */
function gatherAxis(t: Tensor, axis: number, index: Int32Array, inner: number): Tensor {
  if (inner === 1) return F.indexSelect(t, axis, index);
  const split = [...t.shape.slice(0, axis), index.length, inner, ...t.shape.slice(axis + 1)];
  return F.reshape(F.indexSelect(F.reshape(t, split), axis, index), t.shape);
}

/**
 * Hard permutation of every tensor in `params` (parameters, buffers, or both) by gathers.
 * Every tensor must be named in the spec; spec entries absent from `params` are skipped, so
 * parameters and buffers may be permuted in separate calls. Differentiable w.r.t. the tensors.
 */
export function applyHard(spec: PermutationSpec, params: Params, perms: Record<string, ArrayLike<number>>): Params {
  validatePerms(spec, perms);
  const idx: Perms = {};
  for (const [p, a] of Object.entries(perms)) idx[p] = a instanceof Int32Array ? a : Int32Array.from(a);
  const out: Params = new Map();
  for (const [name, t0] of params) {
    const entries = specEntries(spec, name, t0, 'applyHard');
    let t = t0;
    entries.forEach((a, axis) => {
      if (!isFlatAxis(a)) {
        checkEntryLength('applyHard', name, t0, axis, spec, a);
        t = F.indexSelect(t, axis, entryIndex(spec, a, idx));
        return;
      }
      const p = axisPermId(a);
      if (p === null) return;
      const inner = axisInner(a);
      checkAxis('applyHard', name, t0, axis, p, spec.perms[p], inner);
      t = gatherAxis(t, axis, idx[p], inner);
    });
    out.set(name, t);
  }
  return out;
}

/** Moves `axis` first, groups it as [n, inner·rest], left-multiplies by P and restores the layout. */
function leftMultiplyAxis(t: Tensor, axis: number, P: Tensor, inner: number): Tensor {
  const n = P.shape[0];
  const order = [axis, ...t.shape.map((_, i) => i).filter((i) => i !== axis)];
  const moved = axis === 0 ? t : F.permute(t, order);
  const y = F.matmul(P, F.reshape(moved, [n, -1]));
  const back = F.reshape(y, moved.shape);
  if (axis === 0) return back;
  const inverse = new Array<number>(order.length);
  order.forEach((a, i) => { inverse[a] = i; });
  return F.permute(back, inverse);
}

/**
 * Soft version-2 entry: each segment by its own matrix; a block entry by P_blocks on the blocks,
 * then each new block's sub-blocks by its P_within (the axis viewed as [B, d], or [B, r, d] with a repeat).
 */
function softEntry(t: Tensor, axis: number, entry: BlockAxis | { segments: Segment[] }, spec: PermutationSpec, P: Record<string, Tensor>): Tensor {
  if (isBlockAxis(entry)) {
    const B = spec.perms[entry.blocks];
    const d = spec.perms[withinId(entry, 0)];
    const r = blockRepeat(entry);
    const split = [...t.shape.slice(0, axis), B, ...(r > 1 ? [r] : []), d, ...t.shape.slice(axis + 1)];
    const dAxis = axis + (r > 1 ? 2 : 1);
    const mixed = leftMultiplyAxis(F.reshape(t, split), axis, P[entry.blocks], 1);
    const inner = typeof entry.within === 'string'
      ? leftMultiplyAxis(mixed, dAxis, P[entry.within], 1)
      : F.concat(entry.within.map((id, i) => leftMultiplyAxis(F.slice(mixed, axis, i, i + 1), dAxis, P[id], 1)), axis);
    return F.reshape(inner, t.shape);
  }
  const parts: Tensor[] = [];
  let offset = 0;
  for (const g of entry.segments) {
    const len = entryLength(g, spec.perms)!;
    const part = F.slice(t, axis, offset, offset + len);
    offset += len;
    if (typeof g === 'string') parts.push(leftMultiplyAxis(part, axis, P[g], 1));
    else if ('perm' in g) parts.push(leftMultiplyAxis(part, axis, P[g.perm], g.inner));
    else if (isBlockAxis(g)) parts.push(softEntry(part, axis, g, spec, P));
    else parts.push(part);
  }
  return parts.length === 1 ? parts[0] : F.concat(parts, axis);
}

export interface ApplySoftOptions {
  /**
   * Tensors permuted hard, by the row-wise argmax of P (default: BatchNorm running statistics,
   * names ending in `running_mean` / `running_var`, as the reference does).
   */
  hard?: (name: string) => boolean;
}

const isRunningStat = (name: string) => /(^|\.)running_(mean|var)$/.test(name);

/**
 * Soft permutation by matrix products, differentiable w.r.t. the n×n matrices `P` (doubly
 * stochastic during Sinkhorn training, 0/1 at evaluation) and the tensors: each permuted axis is
 * left-multiplied by its P (W′ = P_out W P_inᵀ for a weight). Tensors selected by `opts.hard`
 * are gathered by argmax(P, rows) instead. Same coverage rules as `applyHard`.
 */
export function applySoft(spec: PermutationSpec, params: Params, P: Record<string, Tensor>, opts: ApplySoftOptions = {}): Params {
  const hard = opts.hard ?? isRunningStat;
  const problems: string[] = [];
  for (const [p, n] of Object.entries(spec.perms)) {
    const m = P[p];
    if (!m) problems.push(`matrix "${p}" (size ${n}) is missing`);
    else if (m.ndim !== 2 || m.shape[0] !== n || m.shape[1] !== n) problems.push(`matrix "${p}" has shape [${m.shape.join(', ')}] but [${n}, ${n}] is expected`);
  }
  for (const p of Object.keys(P)) if (!Object.prototype.hasOwnProperty.call(spec.perms, p)) problems.push(`matrix "${p}" is not in the spec`);
  if (problems.length) throw new Error(`applySoft: invalid permutation matrices:\n  - ${problems.join('\n  - ')}`);
  const argmaxCache = new Map<string, Int32Array>();
  const hardIndex = (p: string) => {
    let a = argmaxCache.get(p);
    if (!a) argmaxCache.set(p, (a = rowArgmax(P[p])));
    return a;
  };
  const out: Params = new Map();
  for (const [name, t0] of params) {
    const entries = specEntries(spec, name, t0, 'applySoft');
    const isHard = hard(name);
    let t = t0;
    entries.forEach((a, axis) => {
      if (a !== null && !isFlatAxis(a)) {
        checkEntryLength('applySoft', name, t0, axis, spec, a);
        if (isHard) {
          const idx: Perms = {};
          for (const id of entryPermIds(a)) idx[id] = hardIndex(id);
          t = F.indexSelect(t, axis, entryIndex(spec, a, idx));
        } else t = softEntry(t, axis, a, spec, P);
        return;
      }
      const p = axisPermId(a);
      if (p === null) return;
      const inner = axisInner(a);
      checkAxis('applySoft', name, t0, axis, p, spec.perms[p], inner);
      t = isHard ? gatherAxis(t, axis, hardIndex(p), inner) : leftMultiplyAxis(t, axis, P[p], inner);
    });
    out.set(name, t);
  }
  return out;
}

/** Permutation matrices for a whole set of hard permutations. */
export function permutationMatrices(perms: Perms, dtype: DType = 'float32'): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [p, a] of Object.entries(perms)) out[p] = permutationMatrix(a, dtype);
  return out;
}
