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
 */

/**
 * How one axis of a tensor is permuted: not at all (null), by a permutation (its id), or by a
 * permutation of C channels acting on an axis of length C·inner viewed as [C, inner].
 */
export type AxisPerm = null | string | { perm: string; inner: number };

export interface PermutationSpec {
  /** Permutation id → size (number of units it permutes). */
  perms: Record<string, number>;
  /** Tensor name → one entry per axis (parameters and buffers such as BN running stats). */
  axes: Record<string, AxisPerm[]>;
}

/** One axis a permutation acts on. `inner` is 1 unless the axis is a flattened [C, inner]. */
export interface AxisRef {
  name: string;
  axis: number;
  inner: number;
}

export const SPEC_FORMAT = 'rebasin-permutation-spec';
export const SPEC_VERSION = 1;

/** The permutation id of an axis entry, or null. */
export function axisPermId(a: AxisPerm): string | null {
  if (a === null) return null;
  return typeof a === 'string' ? a : a.perm;
}

/** The `inner` factor of an axis entry (1 for plain entries). */
export function axisInner(a: AxisPerm): number {
  return a !== null && typeof a === 'object' ? a.inner : 1;
}

/** Inverts the table: permutation id → the axes it acts on (Git Re-Basin's `perm_to_axes`). */
export function permToAxes(spec: PermutationSpec): Record<string, AxisRef[]> {
  const out: Record<string, AxisRef[]> = {};
  for (const p of Object.keys(spec.perms)) out[p] = [];
  for (const [name, entries] of Object.entries(spec.axes)) {
    entries.forEach((a, axis) => {
      const p = axisPermId(a);
      if (p === null) return;
      (out[p] ??= []).push({ name, axis, inner: axisInner(a) });
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
  const used = new Set<string>();
  for (const [name, entries] of Object.entries(spec.axes)) {
    if (!Array.isArray(entries)) {
      problems.push(`axes["${name}"]: must be an array with one entry per axis, got ${describeEntry(entries)}`);
      continue;
    }
    entries.forEach((a: unknown, axis) => {
      const where = `axes["${name}"][${axis}]`;
      if (a === null) return;
      let p: unknown;
      if (typeof a === 'string') p = a;
      else if (typeof a === 'object' && a !== null && !Array.isArray(a)) {
        const o = a as Record<string, unknown>;
        p = o.perm;
        const extra = Object.keys(o).filter((k) => k !== 'perm' && k !== 'inner');
        if (typeof o.perm !== 'string') problems.push(`${where}.perm: must be a permutation id string, got ${describeEntry(o.perm)}`);
        if (!(Number.isInteger(o.inner) && (o.inner as number) > 0)) problems.push(`${where}.inner: must be a positive integer, got ${describeEntry(o.inner)}`);
        if (extra.length) problems.push(`${where}: unexpected field(s) ${extra.join(', ')}`);
        if (typeof o.perm !== 'string') return;
      } else {
        problems.push(`${where}: must be null, a permutation id or {perm, inner}, got ${describeEntry(a)}`);
        return;
      }
      const id = p as string;
      used.add(id);
      if (!Object.prototype.hasOwnProperty.call(spec.perms, id)) problems.push(`${where}: unknown permutation "${id}" (not in "perms")`);
    });
  }
  for (const p of Object.keys(spec.perms)) {
    if (!used.has(p)) problems.push(`perms["${p}"]: permutation is not used by any axis`);
  }
  return problems;
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

/** Serialises a spec with its format envelope (stable key order: the spec's own). */
export function specToJSON(spec: PermutationSpec, indent = 2): string {
  return JSON.stringify({ format: SPEC_FORMAT, version: SPEC_VERSION, perms: spec.perms, axes: spec.axes }, null, indent);
}

/**
 * Parses a spec written by `specToJSON` (a string or an already-parsed object). Throws one error
 * naming every bad field (envelope, sizes, entries, unknown or unused permutation ids).
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
  const problems: string[] = [];
  if (o.format !== SPEC_FORMAT) problems.push(`"format" must be "${SPEC_FORMAT}", got ${describeEntry(o.format)}`);
  if (o.version !== SPEC_VERSION) problems.push(`"version" must be ${SPEC_VERSION}, got ${describeEntry(o.version)}`);
  const spec = { perms: o.perms, axes: o.axes } as PermutationSpec;
  problems.push(...checkSpec(spec));
  if (problems.length) throw new Error(`specFromJSON: invalid permutation spec:\n  - ${problems.join('\n  - ')}`);
  // Copy so the result shares nothing with the caller's object.
  const axes: Record<string, AxisPerm[]> = {};
  for (const [name, entries] of Object.entries(spec.axes)) {
    axes[name] = entries.map((a) => (a !== null && typeof a === 'object' ? { perm: a.perm, inner: a.inner } : a));
  }
  return { perms: { ...spec.perms }, axes };
}
