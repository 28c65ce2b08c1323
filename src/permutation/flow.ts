/**
 * Spec inference's engine: channel spaces joined by union–find. Every model description (a
 * ModelGraph, built or imported) reports its channel flow to a SpecFlow — which tensor axes carry
 * which channels, which spaces are one (residual sums), which are fixed and why — and `finish`
 * turns that into a permutation spec plus a report of the groups found.
 */
import { concatEntry, type AxisPerm, type PermutationSpec, type Segment } from './spec.js';
import { UnionFind } from './union-find.js';

/**
 * The channels of one tensor axis: channel space `space` (a union–find element), each channel
 * spread over `inner` consecutive positions of the axis (after a channel-major flatten, as
 * `{perm, inner}` in a spec).
 */
export interface ChanRef {
  space: number;
  inner: number;
}

/**
 * An axis joined from parts along itself (a channel Concat): consecutive sub-ranges, each with
 * its own channels (or none) and its length in positions.
 */
export interface SegmentedRef {
  segments: { ref: ChanRef | null; length: number }[];
}

/**
 * The positions inside the blocks of a factored space (attention heads × head dimension, after a
 * reshape [.., H·d] → [.., H, d]): block i's positions carry `within[i]`, so the axis is read
 * together with the axis carrying the blocks (the heads), which the ops keep aligned with it.
 */
export interface WithinRef {
  /** A member of the factored space (its root holds the factorization). */
  parent: number;
  within: number[];
}

/** The channels of one tensor axis: one space, a concatenation of them, a head dimension, or none. */
export type AxisRef = ChanRef | SegmentedRef | WithinRef | null;

export const isSegmented = (a: AxisRef): a is SegmentedRef => a !== null && 'segments' in a;
export const isWithin = (a: AxisRef): a is WithinRef => a !== null && 'within' in a;
/** A plain channel ref (one space), as most rules expect. */
export const isChan = (a: AxisRef): a is ChanRef => a !== null && 'space' in a;

/** Every channel ref an axis holds. */
export function refsOf(a: AxisRef): ChanRef[] {
  if (a === null) return [];
  if (isWithin(a)) return a.within.map((space) => ({ space, inner: 1 }));
  return isSegmented(a) ? a.segments.flatMap((s) => (s.ref ? [s.ref] : [])) : [a];
}

/** A space split into B blocks of d channels (attention heads): the blocks' space and one inner space per block. */
export interface Blocks {
  heads: number;
  within: number[];
  d: number;
}

/** A space split into consecutive parts (a fused QKV projection sliced into thirds), lengths in channels. */
type Parts = { space: number; length: number }[];

/** One permutation group found by the inference. */
export interface InferredGroup {
  /** Permutation id in the spec; null for fixed groups. */
  id: string | null;
  /** Channels (NaN when unknown, e.g. the output of an op the inference does not know). */
  size: number;
  /** Tensor axes it acts on, as `name[axis]`. */
  axes: string[];
  /** Why the group is fixed (empty for permuted groups): 'network input', 'model output', an op. */
  reasons: string[];
}

export interface FlowResult {
  spec: PermutationSpec;
  /** Permutation id → the weight tensor that opened the group (when known). */
  owners: Record<string, string>;
  /** Permuted groups, in spec order. */
  groups: InferredGroup[];
  /** Fixed groups that touch at least one tensor axis. */
  fixed: InferredGroup[];
  warnings: string[];
}

/**
 * Channel-flow bookkeeping shared by the ONNX and TF.js spec inference; the same rules as
 * models/graph.ts `deriveSpec`:
 * - every linear/conv output opens a channel space (`newSpace`), a candidate permutation;
 * - channel-wise ops pass their input's ref on; their per-channel tensors take that space;
 * - a residual add (or any elementwise op of two activations) unions the spaces (`union`);
 * - the network input and the model outputs are fixed, and so is every group an op the
 *   inference does not understand touches (`fix`, with the reason, reported as a warning);
 * - permutation ids are `P_<label of the group's first space>`, in order of creation.
 */
export class SpecFlow {
  private readonly uf = new UnionFind();
  /** Per root: channel count (NaN unknown) and the reasons it is fixed. */
  private readonly sizeOf = new Map<number, number>();
  private readonly fixedWhy = new Map<number, string[]>();
  private readonly labels: (string | null)[] = [];
  private readonly ownerTensors: (string | null)[] = [];
  private readonly tensors = new Map<string, { shape: number[]; axes: AxisRef[] }>();
  readonly warnings: string[] = [];
  private readonly deferred: { message: string; spaces: number[] }[] = [];
  /** Root → permutation id, filled by `finish`. */
  private readonly idOf = new Map<number, string>();
  /**
   * Refinements of a space (by root): split into blocks (heads) or into parts (slices). A refined
   * space is not a permutation of its own: its axes are permuted by its blocks' or parts' groups.
   */
  private readonly blocksOf = new Map<number, Blocks>();
  private readonly partsOf = new Map<number, Parts>();

  /**
   * Warns at `finish` unless every group among `spaces` ends up fixed for the network input or a
   * model output anyway (an unknown op right before the output changes nothing).
   */
  warnIfMatters(message: string, spaces: number[]): void {
    this.deferred.push({ message, spaces });
  }

  /**
   * Opens a channel space of `size` channels, labelled for its permutation id; `owner` is the
   * weight whose output channels these are (lets callers rename ids with the tensor).
   */
  newSpace(size: number, label: string | null, owner: string | null = null): number {
    const s = this.uf.add();
    this.sizeOf.set(s, size);
    this.labels.push(label);
    this.ownerTensors.push(owner);
    return s;
  }

  size(space: number): number {
    return this.sizeOf.get(this.uf.find(space)) ?? NaN;
  }

  isFixed(space: number): boolean {
    return (this.fixedWhy.get(this.uf.find(space))?.length ?? 0) > 0;
  }

  /** Makes the group of `space` non-permutable; `warn` also reports it (when it was not fixed already). */
  fix(space: number, reason: string, warn = false): void {
    const r = this.uf.find(space);
    if (warn && !this.isFixed(r)) this.warnings.push(reason);
    const list = this.fixedWhy.get(r) ?? [];
    if (!list.includes(reason)) list.push(reason);
    this.fixedWhy.set(r, list);
  }

  /** Unions two spaces (they must have the same size); on a size conflict both are fixed. */
  union(a: number, b: number, where: string): boolean {
    const ra = this.uf.find(a);
    const rb = this.uf.find(b);
    if (ra === rb) return true;
    const sa = this.sizeOf.get(ra) ?? NaN;
    const sb = this.sizeOf.get(rb) ?? NaN;
    if (Number.isFinite(sa) && Number.isFinite(sb) && sa !== sb) {
      const why = `${where}: joins channel groups of different sizes (${sa} and ${sb})`;
      this.fix(ra, why, true);
      this.fix(rb, why);
      return false;
    }
    const r = this.uf.union(ra, rb);
    this.sizeOf.set(r, Number.isFinite(sa) ? sa : sb);
    const why = [...(this.fixedWhy.get(ra) ?? []), ...(this.fixedWhy.get(rb) ?? [])];
    if (why.length) this.fixedWhy.set(r, [...new Set(why)]);
    this.mergeRefinements(ra, rb, r, where);
    return true;
  }

  /** After joining ra and rb into r: one group, so their blocks (or parts) are joined too. */
  private mergeRefinements(ra: number, rb: number, r: number, where: string): void {
    const [ba, bb, pa, pb] = [this.blocksOf.get(ra), this.blocksOf.get(rb), this.partsOf.get(ra), this.partsOf.get(rb)];
    for (const x of [ra, rb]) { this.blocksOf.delete(x); this.partsOf.delete(x); }
    const a = ba ?? pa;
    const b = bb ?? pb;
    if (!a || !b) {
      if (ba ?? bb) this.blocksOf.set(r, (ba ?? bb)!);
      if (pa ?? pb) this.partsOf.set(r, (pa ?? pb)!);
      return;
    }
    if (ba && bb && ba.d === bb.d && ba.within.length === bb.within.length) {
      this.blocksOf.set(r, ba);
      this.union(ba.heads, bb.heads, where);
      ba.within.forEach((w, i) => this.union(w, bb.within[i], where));
    } else if (pa && pb && pa.length === pb.length && pa.every((p, i) => p.length === pb[i].length)) {
      this.partsOf.set(r, pa);
      pa.forEach((p, i) => this.union(p.space, pb[i].space, where));
    } else {
      this.blocksOf.set(r, (ba ?? bb)!);
      this.fix(r, `${where}: joins channels split into heads or parts in different ways`, true);
    }
  }

  /** The label of a group: its first labelled member's. */
  private labelOf(space: number): string | null {
    const root = this.uf.find(space);
    for (let s = 0; s < this.labels.length; s++) if (this.labels[s] && this.uf.find(s) === root) return this.labels[s];
    return null;
  }

  /**
   * Splits a space into `count` blocks of `d` channels (a reshape [.., count·d] → [.., count, d]):
   * the blocks' space (heads: permuted as whole blocks) and one inner space per block, created once
   * per group. Null when the space cannot be split so (unknown size, split otherwise already).
   */
  blocks(space: number, count: number, d: number): Blocks | null {
    const root = this.uf.find(space);
    if (this.size(root) !== count * d || this.partsOf.has(root)) return null;
    const had = this.blocksOf.get(root);
    if (had) return had.d === d && had.within.length === count ? had : null;
    const label = this.labelOf(root);
    const heads = this.newSpace(count, label && `${label}.heads`);
    const within = Array.from({ length: count }, (_, i) => this.newSpace(d, label && `${label}.head${i}`));
    const b: Blocks = { heads, within, d };
    this.blocksOf.set(root, b);
    return b;
  }

  /** Whether two spaces are in one group. */
  sameGroup(a: number, b: number): boolean {
    return this.uf.find(a) === this.uf.find(b);
  }

  /** The blocks a space was split into, if any. */
  blocksOfSpace(space: number): Blocks | undefined {
    return this.blocksOf.get(this.uf.find(space));
  }

  /**
   * The channels [start, end) of a space as a space of their own (a slice of the channel axis):
   * the space is split into parts there (once per group; a later slice inside a part splits that
   * part). Null when the range crosses parts or the space is split into blocks.
   */
  part(space: number, start: number, end: number): number | null {
    const root = this.uf.find(space);
    const size = this.size(root);
    if (!Number.isInteger(size)) return null;
    if (start === 0 && end === size) return root;
    if (this.blocksOf.has(root)) return null;
    let parts = this.partsOf.get(root);
    if (!parts) {
      const label = this.labelOf(root);
      const cuts = [...new Set([0, start, end, size])].sort((x, y) => x - y);
      parts = cuts.slice(1).map((c, i) => ({ space: this.newSpace(c - cuts[i], label && `${label}[${cuts[i]}:${c}]`), length: c - cuts[i] }));
      this.partsOf.set(root, parts);
    }
    let offset = 0;
    for (const p of parts) {
      if (start >= offset && end <= offset + p.length) return this.part(p.space, start - offset, end - offset);
      offset += p.length;
    }
    return null;
  }

  /** Unions two refs: same space relation and the same `inner`, else both are fixed. */
  unionRefs(a: ChanRef, b: ChanRef, where: string): boolean {
    if (a.inner !== b.inner) {
      const why = `${where}: joins channels laid out differently (inner ${a.inner} and ${b.inner})`;
      this.fix(a.space, why, true);
      this.fix(b.space, why, true);
      return false;
    }
    return this.union(a.space, b.space, where);
  }

  /**
   * Records a tensor's axes. A tensor met twice (a shared or tied weight) must be permuted the
   * same way at both uses: its refs are unioned, and an axis permuted at one use but not at the
   * other fixes the group.
   */
  setTensor(name: string, shape: readonly number[], axes: AxisRef[], where: string): void {
    const prev = this.tensors.get(name);
    if (!prev) {
      this.tensors.set(name, { shape: [...shape], axes: [...axes] });
      return;
    }
    if (prev.axes.length !== axes.length) return; // same tensor, same rank: cannot differ
    prev.axes.forEach((p, i) => {
      const q = axes[i];
      if ((p && isWithin(p)) || (q && isWithin(q))) {
        if (p && q && isWithin(p) && isWithin(q)) this.union(p.parent, q.parent, `${where}: tensor "${name}"`);
        else for (const r of [...refsOf(p), ...refsOf(q)]) this.fix(r.space, `${where}: tensor "${name}" axis ${i} is a head dimension at one use only`, true);
        return;
      }
      if ((p && isSegmented(p)) || (q && isSegmented(q))) {
        // A tied tensor read through concatenations: keep it simple, fix what it touches.
        for (const r of [...refsOf(p), ...refsOf(q)]) this.fix(r.space, `${where}: tensor "${name}" is shared across a concatenation`, true);
        return;
      }
      if (p && q) this.unionRefs(p, q, `${where}: tensor "${name}"`);
      else if (p || q) {
        const r = (p ?? q)!;
        this.fix(r.space, `${where}: tensor "${name}" axis ${i} is permuted at one use and not at another`, true);
        if (!p) prev.axes[i] = q;
      }
    });
  }

  /** The permutation id of a space's group (after `finish`), or null when it is fixed. */
  permOf(space: number): string | null {
    return this.idOf.get(this.uf.find(space)) ?? null;
  }

  hasTensor(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Whether a space was split into blocks or parts. */
  private refined(space: number): boolean {
    const r = this.uf.find(space);
    return this.blocksOf.has(r) || this.partsOf.has(r);
  }

  /**
   * Makes every block split expressible in a spec: inner permutations either all permuted or all
   * fixed (a head dimension fixed in some heads only fixes them all), and all distinct or all one.
   */
  private settleBlocks(): void {
    for (const b of [...this.blocksOf.values()]) {
      const fixedInner = b.within.filter((w) => this.isFixed(w));
      if (fixedInner.length && fixedInner.length < b.within.length) {
        for (const w of b.within) this.fix(w, this.fixedWhy.get(this.uf.find(fixedInner[0]))![0]);
      }
      const roots = new Set(b.within.map((w) => this.uf.find(w)));
      if (roots.size > 1 && roots.size < b.within.length) for (const w of b.within.slice(1)) this.union(b.within[0], w, 'head dimensions joined across heads');
    }
  }

  /** Builds the spec: one permutation per non-fixed group of known size that some tensor axis uses. */
  finish(): FlowResult {
    // A warning matters when some group it fixed could have been a permutation: one a linear/conv
    // opens, not fixed for the network input or a model output anyway.
    const opened = new Set<number>();
    this.labels.forEach((l, space) => { if (l) opened.add(this.uf.find(space)); });
    for (const d of this.deferred) {
      const matters = d.spaces.some((s) => opened.has(this.uf.find(s)) && !(this.fixedWhy.get(this.uf.find(s)) ?? []).some((r) => r === 'network input' || r === 'model output'));
      if (matters && !this.warnings.includes(d.message)) this.warnings.push(d.message);
    }
    // Safety net: an axis whose length is not size × inner would make an invalid spec.
    for (const [name, t] of this.tensors) {
      t.axes.forEach((a, i) => {
        if (a && isSegmented(a)) {
          const total = a.segments.reduce((p, g) => p + g.length, 0);
          if (total !== t.shape[i]) for (const r of refsOf(a)) this.fix(r.space, `tensor "${name}" axis ${i} has length ${t.shape[i]}, its parts ${total}`, true);
          for (const g of a.segments) {
            if (g.ref && Number.isFinite(this.size(g.ref.space)) && g.length !== this.size(g.ref.space) * g.ref.inner) {
              this.fix(g.ref.space, `tensor "${name}" axis ${i}: a part of length ${g.length} is not ${this.size(g.ref.space)} channels × ${g.ref.inner}`, true);
            }
          }
          return;
        }
        if (!a || isWithin(a)) return;
        if (a.inner !== 1 && this.refined(a.space)) this.fix(a.space, `tensor "${name}" axis ${i} spreads channels split into heads or parts over positions`, true);
        const n = this.size(a.space);
        if (!this.isFixed(a.space) && Number.isFinite(n) && t.shape[i] !== n * a.inner) {
          this.fix(a.space, `tensor "${name}" axis ${i} has length ${t.shape[i]}, not ${n} channels × ${a.inner}`, true);
        }
      });
    }
    this.settleBlocks();
    const used = new Set<number>();
    const use = (space: number): void => {
      const root = this.uf.find(space);
      if (used.has(root)) return;
      used.add(root);
      if (this.isFixed(root)) return;
      const b = this.blocksOf.get(root);
      if (b) [b.heads, ...b.within].forEach(use);
      for (const p of this.partsOf.get(root) ?? []) use(p.space);
    };
    for (const t of this.tensors.values()) for (const a of t.axes) for (const r of refsOf(a)) use(r.space);
    const idOf = this.idOf;
    idOf.clear();
    const perms: Record<string, number> = {};
    const taken = new Set<string>();
    const groups: InferredGroup[] = [];
    const fixed: InferredGroup[] = [];
    const info = new Map<number, InferredGroup>();
    const owners: Record<string, string> = {};
    for (const members of this.uf.groups()) {
      const root = this.uf.find(members[0]);
      if (!used.has(root)) continue;
      const size = this.sizeOf.get(root) ?? NaN;
      if (!this.isFixed(root) && !(Number.isInteger(size) && size > 0)) this.fix(root, 'channel count unknown', true);
      // A refined space is permuted by its blocks' or parts' groups, not as one.
      if (!this.isFixed(root) && this.refined(root)) continue;
      const g: InferredGroup = { id: null, size, axes: [], reasons: [...(this.fixedWhy.get(root) ?? [])] };
      info.set(root, g);
      if (this.isFixed(root)) {
        fixed.push(g);
        continue;
      }
      const first = members.find((m) => this.labels[m]);
      if (first === undefined) {
        // No layer opens these channels (e.g. a parameter axis joined with nothing): nothing to permute.
        this.fix(root, 'no linear/conv opens these channels');
        g.reasons = [...(this.fixedWhy.get(root) ?? [])];
        fixed.push(g);
        continue;
      }
      const label = this.labels[first]!;
      let id = `P_${label}`;
      for (let k = 2; taken.has(id); k++) id = `P_${label}#${k}`;
      taken.add(id);
      g.id = id;
      idOf.set(root, id);
      perms[id] = size;
      if (first !== undefined && this.ownerTensors[first]) owners[id] = this.ownerTensors[first]!;
      groups.push(g);
    }
    const axes: Record<string, AxisPerm[]> = {};
    for (const [name, t] of this.tensors) {
      // The segments of a space's channels: its permutation, or its blocks' or parts', or a size.
      const parts = (space: number, inner: number, i: number): Segment[] => {
        const root = this.uf.find(space);
        info.get(root)?.axes.push(`${name}[${i}]`);
        const id = idOf.get(root);
        const length = this.size(root) * inner;
        if (id !== undefined) return [inner === 1 ? id : { perm: id, inner }];
        if (this.isFixed(root)) return [{ size: length }];
        const b = this.blocksOf.get(root);
        if (b) {
          const heads = idOf.get(this.uf.find(b.heads));
          const within = b.within.map((w) => idOf.get(this.uf.find(w)));
          for (const w of b.within) info.get(this.uf.find(w))?.axes.push(`${name}[${i}]`);
          info.get(this.uf.find(b.heads))?.axes.push(`${name}[${i}]`);
          const inside = within.every((w) => w !== undefined) ? (within.every((w) => w === within[0]) ? within[0]! : (within as string[])) : null;
          if (heads !== undefined) return [inside === null ? { perm: heads, inner: b.d } : { blocks: heads, within: inside }];
          // Heads that may not move (ALiBi): each head's dimensions permuted on their own.
          return within.map((w) => w ?? { size: b.d });
        }
        const ps = this.partsOf.get(root);
        if (ps) return ps.flatMap((p) => parts(p.space, 1, i));
        return [{ size: length }];
      };
      axes[name] = t.axes.map((a, i) => {
        if (!a || isWithin(a)) return null;
        const segs = isSegmented(a)
          ? a.segments.flatMap((g): Segment[] => (g.ref ? parts(g.ref.space, g.ref.inner, i) : [{ size: g.length }]))
          : parts(a.space, a.inner, i);
        // Each part its permutation (spec format 2), unpermuted parts as sizes.
        return concatEntry(segs);
      });
    }
    return { spec: { perms, axes }, owners, groups, fixed, warnings: [...this.warnings] };
  }
}
