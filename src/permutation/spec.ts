/**
 * Permutation specs: which permutation acts on which axis of which tensor, as plain data (Git
 * Re-Basin's `axes_to_perm`, in PyTorch layout). One algorithm (weight matching, Sinkhorn, STE,
 * applying) then serves every architecture.
 *
 * Example (MLP 784-512-512-10, names `layers.0`, `layers.2`, `layers.4`):
 * ```json
 * { "perms": { "P_layers.0": 512, "P_layers.2": 512 },
 *   "axes": { "layers.0.weight": ["P_layers.0", null], "layers.0.bias": ["P_layers.0"],
 *             "layers.2.weight": ["P_layers.2", "P_layers.0"], "layers.2.bias": ["P_layers.2"],
 *             "layers.4.weight": [null, "P_layers.2"], "layers.4.bias": [null] } }
 * ```
 * A conv→linear flatten makes the linear's input axis of length C·h·w a `{perm, inner: h·w}`
 * entry: the axis is viewed as [C, h·w] (PyTorch's channel-major flatten) and permuted along C.
 *
 * Format version 2 adds two entries (README, "Permutation spec format"):
 * - segments, for an axis whose consecutive sub-ranges are permuted independently (a channel
 *   Concat of two branches, a fused QKV projection):
 *   `{"segments": ["P_a", {"perm": "P_b", "inner": 4}, {"size": 5}]}` (length |P_a| + 4·|P_b| + 5);
 * - blocks, for B blocks of d positions permuted as whole blocks and inside each block
 *   (attention heads × head dimension): `{"blocks": "P_heads", "within": "P_dim"}` (one inner
 *   permutation shared by every block) or `"within": ["P_d0", "P_d1", …]` (one per block),
 *   new[i·d + j] = old[π[i]·d + σ_i[j]];
 *   with `"repeat": r` each block holds r sub-blocks of d that share its inner permutation
 *   (grouped-query attention: a key/value group's g query heads), axis length B·r·d.
 * A block entry may also be a segment (a fused QKV projection whose thirds are heads).
 */

/**
 * How one axis of a tensor is permuted (format version 1): not at all (null), by a permutation
 * (its id), or by a permutation of C channels acting on an axis of length C·inner viewed as
 * [C, inner].
 */
export type FlatAxis = string | { perm: string; inner: number };

/**
 * Format version 2, a block permutation: the axis holds B blocks of d positions each (block-major,
 * length B·d; B = size of `blocks`, d = size of the inner permutation(s)) and is permuted as
 *   new[i·d + j] = old[π[i]·d + σ_i[j]]
 * (π = perm `blocks`, σ_i = perm `within`, or `within[i]` when it lists one id per block: the
 * inner permutation belongs to the NEW block position i). Attention heads: blocks = the head
 * permutation, within = the head-dimension permutation(s).
 *
 * `repeat` r (default 1): each block is r consecutive sub-blocks of d positions, moved together
 * and each permuted inside by the block's σ_i, axis length B·r·d:
 *   new[(i·r + s)·d + j] = old[(π[i]·r + s)·d + σ_i[j]].
 * Grouped-query attention: blocks = the key/value groups, r = query heads per group, so a group's
 * query heads (and the matching rows of the output projection) share the group's inner permutation.
 */
export interface BlockAxis { blocks: string; within: string | string[]; repeat?: number }

/** A block entry's sub-blocks per block (its `repeat`, default 1). */
export function blockRepeat(b: BlockAxis): number {
  return b.repeat ?? 1;
}

/** One segment of a segmented axis: a flat or block entry, or `{size: n}` for n unpermuted positions. */
export type Segment = FlatAxis | BlockAxis | { size: number };

/**
 * Format version 2, a segmented axis: consecutive sub-ranges permuted independently (a channel
 * Concat of branches, a fused QKV projection). A segment's length is size × inner (a flat entry),
 * B·d (a block entry) or its `size`; the axis length is their sum.
 */
export interface SegmentsAxis { segments: Segment[] }

/** One axis entry of a spec: null, a version-1 entry, or a version-2 block or segments entry. */
export type AxisPerm = null | FlatAxis | BlockAxis | SegmentsAxis;

export interface PermutationSpec {
  /** Permutation id → size (number of units it permutes). */
  perms: Record<string, number>;
  /** Tensor name → one entry per axis (parameters and buffers such as BN running stats). */
  axes: Record<string, AxisPerm[]>;
}

/** Where a block permutation's ids sit: the blocks id, the within id(s), and the block layout. */
export interface BlockRef {
  /** 'blocks': this id permutes the blocks; 'within': it permutes positions inside blocks. */
  role: 'blocks' | 'within';
  blocks: string;
  within: string | string[];
  /** B (blocks), d (positions per sub-block) and r (sub-blocks per block, `repeat`). */
  count: number;
  size: number;
  repeat: number;
  /** For a `within` list: the (new) block whose positions this id permutes. */
  index?: number;
}

/**
 * One axis a permutation acts on. `inner` is 1 unless the axis is a flattened [C, inner] (for the
 * blocks id of a block entry, inner = d: each unit is a block). Version-2 entries add `offset`
 * (where the permuted sub-range starts, when the entry is a segment) and `block` (block entries);
 * the range covered is [offset, offset + size·inner), or B·r·d positions for a block entry.
 */
export interface AxisRef {
  name: string;
  axis: number;
  inner: number;
  offset?: number;
  block?: BlockRef;
}

export const SPEC_FORMAT = 'rebasin-permutation-spec';
/** The newest format version. A spec is written with the lowest version that holds it (specVersion). */
export const SPEC_VERSION = 2;

const has = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);

/** Whether an entry is a version-2 block entry. */
export function isBlockAxis(a: unknown): a is BlockAxis {
  return a !== null && typeof a === 'object' && !Array.isArray(a) && has(a, 'blocks');
}

/** Whether an entry is a version-2 segments entry. */
export function isSegmentsAxis(a: unknown): a is SegmentsAxis {
  return a !== null && typeof a === 'object' && !Array.isArray(a) && has(a, 'segments');
}

/** Whether an entry is of format version 1 (null, an id, or {perm, inner}). */
export function isFlatAxis(a: AxisPerm): a is null | FlatAxis {
  return !isBlockAxis(a) && !isSegmentsAxis(a);
}

/** The format version a spec needs: 2 when any entry is a block or segments entry, else 1. */
export function specVersion(spec: PermutationSpec): 1 | 2 {
  for (const entries of Object.values(spec.axes)) for (const a of entries) if (!isFlatAxis(a)) return 2;
  return 1;
}

/** The permutation id of a version-1 entry, or null (also for a version-2 entry: see entryPermIds). */
export function axisPermId(a: AxisPerm): string | null {
  if (a === null || !isFlatAxis(a)) return null;
  return typeof a === 'string' ? a : a.perm;
}

/** The `inner` factor of a version-1 entry (1 for plain entries and version-2 entries). */
export function axisInner(a: AxisPerm): number {
  return a !== null && typeof a === 'object' && isFlatAxis(a) ? a.inner : 1;
}

/** Every permutation id an entry uses, in entry order (duplicates kept out). */
export function entryPermIds(a: AxisPerm | Segment): string[] {
  const out: string[] = [];
  const add = (id: string) => { if (!out.includes(id)) out.push(id); };
  const visit = (e: AxisPerm | Segment) => {
    if (e === null) return;
    if (typeof e === 'string') add(e);
    else if (isSegmentsAxis(e)) e.segments.forEach(visit);
    else if (isBlockAxis(e)) { add(e.blocks); (typeof e.within === 'string' ? [e.within] : e.within).forEach(add); }
    else if ('perm' in e) add(e.perm);
  };
  visit(a);
  return out;
}

/** A block entry's inner permutation id for (new) block i. */
export function withinId(b: BlockAxis, i: number): string {
  return typeof b.within === 'string' ? b.within : b.within[i];
}

/**
 * The length of the axis (or segment) an entry covers, from the permutation sizes; null for a
 * null entry (any length).
 */
export function entryLength(a: AxisPerm | Segment, perms: Record<string, number>): number | null {
  if (a === null) return null;
  if (typeof a === 'string') return perms[a];
  if (isSegmentsAxis(a)) return a.segments.reduce((s, g) => s + (entryLength(g, perms) ?? 0), 0);
  if (isBlockAxis(a)) return perms[a.blocks] * blockRepeat(a) * perms[withinId(a, 0)];
  if ('perm' in a) return perms[a.perm] * a.inner;
  return a.size;
}

/**
 * The pieces of an axis entry with their offsets on the axis: one piece for a flat or block entry,
 * one per permuted segment of a segments entry (`{size}` segments are skipped).
 */
export function entryPieces(a: AxisPerm, perms: Record<string, number>): { offset: number; entry: FlatAxis | BlockAxis }[] {
  if (a === null) return [];
  if (!isSegmentsAxis(a)) return [{ offset: 0, entry: a }];
  const out: { offset: number; entry: FlatAxis | BlockAxis }[] = [];
  let offset = 0;
  for (const g of a.segments) {
    if (typeof g === 'string' || 'perm' in g || isBlockAxis(g)) out.push({ offset, entry: g });
    offset += entryLength(g, perms) ?? 0;
  }
  return out;
}

/** The entry with every permutation id replaced by `rename(id)` (same structure). */
export function renameEntry<E extends AxisPerm | Segment>(a: E, rename: (id: string) => string): E {
  if (a === null) return a;
  if (typeof a === 'string') return rename(a) as E;
  if (isSegmentsAxis(a)) return { segments: a.segments.map((g) => renameEntry(g, rename)) } as E;
  if (isBlockAxis(a)) return blockEntry(rename(a.blocks), typeof a.within === 'string' ? rename(a.within) : a.within.map(rename), a.repeat) as E;
  if ('perm' in a) return { perm: rename(a.perm), inner: a.inner } as E;
  return { size: a.size } as E;
}

/** Makes a segments entry from the segments in axis order (see SegmentsAxis); for importers. */
export function segmentsEntry(segments: Segment[]): SegmentsAxis {
  return { segments: segments.map((g) => (g !== null && typeof g === 'object' ? { ...g } : g)) as Segment[] };
}

/**
 * The entry of an axis made of consecutive parts (a channel Concat's inputs, a fused
 * projection's thirds), each a flat or block entry or `{size: n}` for n unpermuted positions, in
 * the simplest form: adjacent unpermuted parts merged; null when nothing is permuted; the part
 * itself when one part covers the whole axis (a version-1 entry stays version 1); else segments.
 */
export function concatEntry(parts: Segment[]): AxisPerm {
  const merged: Segment[] = [];
  for (const g of parts) {
    const prev = merged.at(-1);
    const isSize = (x: Segment | undefined): x is { size: number } => x !== undefined && typeof x === 'object' && 'size' in x;
    if (isSize(g) && isSize(prev)) merged[merged.length - 1] = { size: prev.size + g.size };
    else merged.push(g);
  }
  if (merged.length === 1) return typeof merged[0] === 'object' && 'size' in merged[0] ? null : renameEntry(merged[0], (id) => id) as AxisPerm;
  return segmentsEntry(merged);
}

/**
 * Makes a block entry: `blocks` permutes B blocks, `within` the d positions inside each (one id,
 * or one per block); `repeat` r > 1 makes each block r sub-blocks sharing its inner permutation.
 */
export function blockEntry(blocks: string, within: string | string[], repeat = 1): BlockAxis {
  const b: BlockAxis = { blocks, within: typeof within === 'string' ? within : [...within] };
  if (repeat !== 1) b.repeat = repeat;
  return b;
}

/**
 * The spec with every block permutation held at the identity: blocks stay where they are, each
 * block's inner permutation still acts inside it (attention heads that may not move, as with
 * ALiBi; or an ablation measuring what moving heads adds). Unused block ids leave `perms`.
 */
export function fixBlocks(spec: PermutationSpec): PermutationSpec {
  const dropped = new Set<string>();
  const unblock = (e: Segment): Segment[] => {
    if (!isBlockAxis(e)) return [e];
    dropped.add(e.blocks);
    const B = spec.perms[e.blocks];
    const r = blockRepeat(e);
    return Array.from({ length: B * r }, (_, k) => withinId(e, Math.floor(k / r)));
  };
  const axes: Record<string, AxisPerm[]> = {};
  for (const [name, entries] of Object.entries(spec.axes)) {
    axes[name] = entries.map((a) => {
      if (isBlockAxis(a)) return concatEntry(unblock(a));
      if (isSegmentsAxis(a)) return concatEntry(a.segments.flatMap(unblock));
      return a;
    });
  }
  const stillUsed = new Set(Object.values(axes).flatMap((es) => es.flatMap((a) => entryPermIds(a))));
  const perms = Object.fromEntries(Object.entries(spec.perms).filter(([id]) => !dropped.has(id) || stillUsed.has(id)));
  return { perms, axes };
}

/** Inverts the table: permutation id → the axes it acts on (Git Re-Basin's `perm_to_axes`). */
export function permToAxes(spec: PermutationSpec): Record<string, AxisRef[]> {
  const out: Record<string, AxisRef[]> = {};
  for (const p of Object.keys(spec.perms)) out[p] = [];
  for (const [name, entries] of Object.entries(spec.axes)) {
    entries.forEach((a, axis) => {
      if (isFlatAxis(a)) {
        const p = axisPermId(a);
        if (p === null) return;
        (out[p] ??= []).push({ name, axis, inner: axisInner(a) });
        return;
      }
      for (const { offset, entry } of entryPieces(a, spec.perms)) {
        const at = isSegmentsAxis(a) ? { offset } : {};
        if (!isBlockAxis(entry)) {
          const p = axisPermId(entry)!;
          (out[p] ??= []).push({ name, axis, inner: axisInner(entry), ...at });
          continue;
        }
        const count = spec.perms[entry.blocks];
        const size = spec.perms[withinId(entry, 0)];
        const repeat = blockRepeat(entry);
        const base = { blocks: entry.blocks, within: entry.within, count, size, repeat };
        (out[entry.blocks] ??= []).push({ name, axis, inner: repeat * size, ...at, block: { role: 'blocks', ...base } });
        if (typeof entry.within === 'string') (out[entry.within] ??= []).push({ name, axis, inner: 1, ...at, block: { role: 'within', ...base } });
        else entry.within.forEach((w, index) => (out[w] ??= []).push({ name, axis, inner: 1, ...at, block: { role: 'within', ...base, index } }));
      }
    });
  }
  return out;
}

/** Names of the tensors the spec covers, in spec order. */
export function specTensorNames(spec: PermutationSpec): string[] {
  return Object.keys(spec.axes);
}

function describeEntry(a: unknown): string {
  return JSON.stringify(a) ?? String(a);
}

/** Collects the problems of one entry, and records how each id is used (for the cross-entry rules). */
class EntryChecker {
  readonly problems: string[] = [];
  readonly used = new Set<string>();
  /** id → the ways it is used: 'flat', 'blocks', 'within', or 'list <blocks> <ids>' for a per-block inner id. */
  readonly uses = new Map<string, Map<string, string>>();

  constructor(private readonly perms: Record<string, unknown>) {}

  private use(id: string, where: string, how: string): void {
    this.used.add(id);
    if (!has(this.perms, id)) this.problems.push(`${where}: unknown permutation "${id}" (not in "perms")`);
    let m = this.uses.get(id);
    if (!m) this.uses.set(id, (m = new Map()));
    if (!m.has(how)) m.set(how, where);
  }

  private size(id: string): number | undefined {
    const n = this.perms[id];
    return has(this.perms, id) && Number.isInteger(n) && (n as number) > 0 ? (n as number) : undefined;
  }

  /** A version-1 object entry {perm, inner}. */
  private flatObject(where: string, o: Record<string, unknown>): void {
    const extra = Object.keys(o).filter((k) => k !== 'perm' && k !== 'inner');
    if (typeof o.perm !== 'string') this.problems.push(`${where}.perm: must be a permutation id string, got ${describeEntry(o.perm)}`);
    if (!(Number.isInteger(o.inner) && (o.inner as number) > 0)) this.problems.push(`${where}.inner: must be a positive integer, got ${describeEntry(o.inner)}`);
    if (extra.length) this.problems.push(`${where}: unexpected field(s) ${extra.join(', ')}`);
    if (typeof o.perm === 'string') this.use(o.perm, where, 'flat');
  }

  private block(where: string, o: Record<string, unknown>): void {
    const extra = Object.keys(o).filter((k) => k !== 'blocks' && k !== 'within' && k !== 'repeat');
    if (extra.length) this.problems.push(`${where}: unexpected field(s) ${extra.join(', ')} (a block entry has "blocks", "within" and optionally "repeat")`);
    if (has(o, 'repeat') && !(Number.isInteger(o.repeat) && (o.repeat as number) > 0)) this.problems.push(`${where}.repeat: must be a positive integer (sub-blocks per block), got ${describeEntry(o.repeat)}`);
    const blocks = o.blocks;
    if (typeof blocks !== 'string') this.problems.push(`${where}.blocks: must be a permutation id string, got ${describeEntry(blocks)}`);
    else this.use(blocks, where, 'blocks');
    const w = o.within;
    let ids: string[] = [];
    if (typeof w === 'string') {
      ids = [w];
      this.use(w, where, 'within');
    } else if (Array.isArray(w) && w.length > 0 && w.every((x) => typeof x === 'string')) {
      ids = w as string[];
      const key = `list ${String(blocks)} ${JSON.stringify(w)}`;
      const dup = ids.find((x, i) => ids.indexOf(x) !== i);
      if (dup !== undefined) this.problems.push(`${where}.within: permutation "${dup}" is listed twice (each block needs its own inner permutation, or give one shared id)`);
      for (const x of new Set(ids)) this.use(x, where, key);
      const nb = typeof blocks === 'string' ? this.size(blocks) : undefined;
      if (nb !== undefined && ids.length !== nb) this.problems.push(`${where}.within: lists ${ids.length} inner permutations but "${blocks as string}" has size ${nb} (one per block)`);
    } else {
      this.problems.push(`${where}.within: must be a permutation id or a non-empty list of ids (one per block), got ${describeEntry(w)}`);
    }
    if (typeof blocks === 'string' && ids.includes(blocks)) this.problems.push(`${where}: "${blocks}" permutes both the blocks and inside them; use two permutations`);
    const sizes = [...new Set(ids.map((x) => this.size(x)).filter((n): n is number => n !== undefined))];
    if (sizes.length > 1) this.problems.push(`${where}.within: the inner permutations have different sizes (${ids.map((x) => `"${x}" ${this.size(x) ?? '?'}`).join(', ')}); every block has the same size`);
  }

  private segments(where: string, o: Record<string, unknown>): void {
    const extra = Object.keys(o).filter((k) => k !== 'segments');
    if (extra.length) this.problems.push(`${where}: unexpected field(s) ${extra.join(', ')} (a segments entry has only "segments")`);
    const segs = o.segments;
    if (!Array.isArray(segs) || segs.length === 0) {
      this.problems.push(`${where}.segments: must be a non-empty array of segments, got ${describeEntry(segs)}`);
      return;
    }
    segs.forEach((g: unknown, k) => {
      const at = `${where}.segments[${k}]`;
      if (g === null) {
        this.problems.push(`${at}: an unpermuted segment needs its length: {"size": n}`);
        return;
      }
      if (typeof g === 'string') {
        this.use(g, at, 'flat');
        return;
      }
      if (typeof g !== 'object' || Array.isArray(g)) {
        this.problems.push(`${at}: must be a permutation id, {perm, inner}, {blocks, within} or {size}, got ${describeEntry(g)}`);
        return;
      }
      const so = g as Record<string, unknown>;
      if (has(so, 'segments')) this.problems.push(`${at}: segments cannot nest (list the inner segments in the outer entry)`);
      else if (has(so, 'blocks')) this.block(at, so);
      else if (has(so, 'perm')) this.flatObject(at, so);
      else if (has(so, 'size')) {
        const extraS = Object.keys(so).filter((x) => x !== 'size');
        if (!(Number.isInteger(so.size) && (so.size as number) > 0)) this.problems.push(`${at}.size: must be a positive integer, got ${describeEntry(so.size)}`);
        if (extraS.length) this.problems.push(`${at}: unexpected field(s) ${extraS.join(', ')}`);
      } else this.problems.push(`${at}: must be a permutation id, {perm, inner}, {blocks, within} or {size}, got ${describeEntry(g)}`);
    });
  }

  entry(where: string, a: unknown): void {
    if (a === null) return;
    if (typeof a === 'string') {
      this.use(a, where, 'flat');
      return;
    }
    if (typeof a === 'object' && a !== null && !Array.isArray(a)) {
      const o = a as Record<string, unknown>;
      if (has(o, 'segments')) this.segments(where, o);
      else if (has(o, 'blocks')) this.block(where, o);
      else this.flatObject(where, o);
      return;
    }
    this.problems.push(`${where}: must be null, a permutation id or {perm, inner} (version 2: {blocks, within} or {segments}), got ${describeEntry(a)}`);
  }

  /** A per-block inner permutation belongs to one list of one block permutation, and is used nowhere else. */
  crossRules(): void {
    for (const [id, uses] of this.uses) {
      const lists = [...uses.keys()].filter((k) => k.startsWith('list '));
      if (lists.length === 0 || uses.size === 1) continue;
      const [first, second] = [...uses.entries()].sort((x, y) => Number(y[0].startsWith('list ')) - Number(x[0].startsWith('list ')));
      const how = (k: string) => (k.startsWith('list ') ? `in another "within" list (${k.slice(5)})` : k === 'flat' ? 'as a plain permutation' : k === 'blocks' ? 'as a block permutation' : 'as a shared "within"');
      this.problems.push(`${second[1]}: permutation "${id}" is a per-block inner permutation at ${first[1]}, and may not also be used ${how(second[0])}`);
    }
  }
}

/** Checks the spec on its own (no tensors): well-formed entries, known and used perm ids. */
export function checkSpec(spec: PermutationSpec): string[] {
  const problems: string[] = [];
  if (!spec || typeof spec !== 'object') return ['spec is not an object'];
  if (!spec.perms || typeof spec.perms !== 'object' || Array.isArray(spec.perms)) problems.push('"perms" must be an object of permutation id → size');
  if (!spec.axes || typeof spec.axes !== 'object' || Array.isArray(spec.axes)) problems.push('"axes" must be an object of tensor name → axis entries');
  if (problems.length) return problems;
  for (const [p, n] of Object.entries(spec.perms)) {
    if (!(Number.isInteger(n) && n > 0)) problems.push(`perms["${p}"]: size must be a positive integer, got ${describeEntry(n)}`);
  }
  const c = new EntryChecker(spec.perms);
  for (const [name, entries] of Object.entries(spec.axes)) {
    if (!Array.isArray(entries)) {
      c.problems.push(`axes["${name}"]: must be an array with one entry per axis, got ${describeEntry(entries)}`);
      continue;
    }
    entries.forEach((a: unknown, axis) => c.entry(`axes["${name}"][${axis}]`, a));
  }
  c.crossRules();
  problems.push(...c.problems);
  for (const p of Object.keys(spec.perms)) {
    if (!c.used.has(p)) problems.push(`perms["${p}"]: permutation is not used by any axis`);
  }
  return problems;
}

/** "4 × 3 (blocks "H" × "D")"-style description of a well-formed piece's length, or null when a size is unknown or bad. */
function pieceLength(g: Segment, perms: Record<string, number>): { n: number; what: string } | null {
  const ok = (id: unknown): id is string => typeof id === 'string' && has(perms, id) && Number.isInteger(perms[id]) && perms[id] > 0;
  if (typeof g === 'string') return ok(g) ? { n: perms[g], what: `"${g}" ${perms[g]}` } : null;
  if (g === null || typeof g !== 'object') return null;
  if (isBlockAxis(g)) {
    const w = typeof g.within === 'string' ? g.within : Array.isArray(g.within) ? g.within[0] : undefined;
    const r = blockRepeat(g);
    if (!ok(g.blocks) || !ok(w) || !(Number.isInteger(r) && r > 0)) return null;
    return { n: perms[g.blocks] * r * perms[w], what: `"${g.blocks}" ${perms[g.blocks]} blocks × ${r > 1 ? `repeat ${r} × ` : ''}${perms[w]}` };
  }
  if ('perm' in g) {
    if (!ok(g.perm) || !(Number.isInteger(g.inner) && g.inner > 0)) return null;
    return { n: perms[g.perm] * g.inner, what: `"${g.perm}" ${perms[g.perm]} × inner ${g.inner}` };
  }
  return Number.isInteger(g.size) && g.size > 0 ? { n: g.size, what: `${g.size} unpermuted` } : null;
}

/** Why a (well-formed) version-2 entry does not fit an axis of `length`, or null when it does or cannot be judged. */
function versionTwoLengthProblem(a: BlockAxis | SegmentsAxis, length: number, perms: Record<string, number>): string | null {
  if (isBlockAxis(a)) {
    const l = pieceLength(a, perms);
    return l && l.n !== length ? `length ${length} does not match the block entry (${l.what} = ${l.n})` : null;
  }
  if (!Array.isArray(a.segments)) return null;
  const parts = a.segments.map((g) => pieceLength(g, perms));
  if (parts.some((x) => x === null)) return null;
  const total = parts.reduce((t, x) => t + x!.n, 0);
  return total !== length ? `length ${length} does not match the segments' total ${total} (${parts.map((x) => x!.what).join(' + ')})` : null;
}

export interface ValidateOptions {
  /** Also report tensors present in `params` that the spec does not cover. */
  strict?: boolean;
}

/**
 * Checks a spec against actual tensors and returns EVERY problem found (empty when valid): bad
 * entries, unknown or unused permutation ids, tensors missing from `params`, axis-count
 * mismatches, axes whose length is not the permutation's size (×inner), and with `strict` tensors
 * the spec does not cover. Pass parameters and buffers together.
 */
export function validateSpec(spec: PermutationSpec, params: ReadonlyMap<string, { shape: readonly number[] }>, opts: ValidateOptions = {}): string[] {
  const problems = checkSpec(spec);
  if (!spec || typeof spec.axes !== 'object' || spec.axes === null || typeof spec.perms !== 'object' || spec.perms === null) return problems;
  for (const [name, entries] of Object.entries(spec.axes)) {
    if (!Array.isArray(entries)) continue;
    const t = params.get(name);
    if (!t) {
      problems.push(`tensor "${name}": in the spec but missing from the parameters`);
      continue;
    }
    const shape = t.shape;
    if (entries.length !== shape.length) {
      problems.push(`tensor "${name}": spec has ${entries.length} axis entries but the tensor has shape [${shape.join(', ')}] (${shape.length} axes)`);
      continue;
    }
    entries.forEach((a, axis) => {
      if (a !== null && typeof a === 'object' && !isFlatAxis(a)) {
        const why = versionTwoLengthProblem(a, shape[axis], spec.perms);
        if (why) problems.push(`tensor "${name}" axis ${axis}: ${why}`);
        return;
      }
      const p = axisPermId(a);
      if (p === null || typeof p !== 'string') return;
      const n = spec.perms[p];
      const inner = axisInner(a);
      if (!(Number.isInteger(n) && n > 0) || !(Number.isInteger(inner) && inner > 0)) return; // already reported
      if (shape[axis] !== n * inner) {
        const what = inner === 1 ? `size ${n}` : `size ${n} × inner ${inner} = ${n * inner}`;
        problems.push(`tensor "${name}" axis ${axis}: length ${shape[axis]} does not match permutation "${p}" (${what})`);
      }
    });
  }
  if (opts.strict) {
    for (const name of params.keys()) {
      if (!Object.prototype.hasOwnProperty.call(spec.axes, name)) problems.push(`tensor "${name}": not covered by the spec`);
    }
  }
  return problems;
}

/** Throws one error listing every problem `validateSpec` finds. */
export function assertValidSpec(spec: PermutationSpec, params: ReadonlyMap<string, { shape: readonly number[] }>, opts: ValidateOptions = {}): void {
  const problems = validateSpec(spec, params, opts);
  if (problems.length) {
    throw new Error(`invalid permutation spec (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  - ${problems.join('\n  - ')}`);
  }
}

/**
 * Serialises a spec with its format envelope (stable key order: the spec's own). The version
 * written is the lowest that holds the spec (specVersion): a spec without block or segments
 * entries is written exactly as format version 1.
 */
export function specToJSON(spec: PermutationSpec, indent = 2): string {
  return JSON.stringify({ format: SPEC_FORMAT, version: specVersion(spec), perms: spec.perms, axes: spec.axes }, null, indent);
}

/**
 * Problems of a spec file's envelope: the format name, and the version, which must be the one
 * `specToJSON` writes for that body (1 without version-2 entries, 2 with them). `body` is the
 * parsed object; its perms/axes need not be valid (the version is judged on what can be read).
 */
export function envelopeProblems(o: Record<string, unknown>): string[] {
  const problems: string[] = [];
  if (o.format !== SPEC_FORMAT) problems.push(`"format" must be "${SPEC_FORMAT}", got ${describeEntry(o.format)}`);
  const axes = o.axes && typeof o.axes === 'object' && !Array.isArray(o.axes) ? Object.values(o.axes as Record<string, unknown>) : [];
  const needs = axes.some((e) => Array.isArray(e) && e.some((a) => isBlockAxis(a) || isSegmentsAxis(a))) ? 2 : 1;
  if (o.version !== needs) {
    const why = needs === 2 ? 'the spec uses block or segments entries' : 'the spec uses no block or segments entry';
    problems.push(`"version" must be ${needs}, got ${describeEntry(o.version)} (${why})`);
  }
  return problems;
}

/**
 * Parses a spec written by `specToJSON` (a string or an already-parsed object), format version 1
 * or 2. Throws one error naming every bad field (envelope, sizes, entries, unknown or unused
 * permutation ids).
 */
export function specFromJSON(json: string | unknown): PermutationSpec {
  let obj: unknown = json;
  if (typeof json === 'string') {
    try {
      obj = JSON.parse(json);
    } catch (e) {
      throw new Error(`specFromJSON: not valid JSON: ${(e as Error).message}`);
    }
  }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new Error('specFromJSON: expected a JSON object');
  const o = obj as Record<string, unknown>;
  const problems = envelopeProblems(o);
  const spec = { perms: o.perms, axes: o.axes } as PermutationSpec;
  problems.push(...checkSpec(spec));
  if (problems.length) throw new Error(`specFromJSON: invalid permutation spec:\n  - ${problems.join('\n  - ')}`);
  // Copy so the result shares nothing with the caller's object.
  const axes: Record<string, AxisPerm[]> = {};
  for (const [name, entries] of Object.entries(spec.axes)) axes[name] = entries.map((a) => renameEntry(a, (id) => id));
  return { perms: { ...spec.perms }, axes };
}
