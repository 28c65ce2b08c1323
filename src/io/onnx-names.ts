/**
 * PyTorch names for an ONNX model's initializers: read from the exporter's aliases, the
 * initializer names, the nodes' module scopes, or (with a checkpoint) equal values; and a
 * BatchNorm that an eval-mode export folded into a Conv, found again in the checkpoint.
 */
import type { OnnxModel, OnnxNode, OnnxTensor } from './onnx.js';

/** What an initializer is to the node that reads it. */
export type Role = 'weight' | 'bias' | 'running_mean' | 'running_var' | 'other';

/** One use of an initializer by a node (null: not read by any node the importer understood). */
export interface InitializerUse {
  init: string;
  alias: string;
  role: Role;
  node: OnnxNode | null;
  /** PyTorch stores this tensor transposed relative to ONNX (MatMul B, Gemm B without transB). */
  pytorchTransposed: boolean;
}

/** How one initializer is known in a PyTorch checkpoint. */
export interface OnnxNameMapping {
  initializer: string;
  /** Name in the checkpoint (or the best guess without one). */
  name: string;
  /** The checkpoint tensor is the 2-D initializer transposed (e.g. MatMul's [in, out] vs Linear's [out, in]). */
  transposed: boolean;
  /**
   * 'initializer': same name; 'alias': the graph value that reads the initializer through
   * Identity carries the name (the exporter de-duplicates equal tensors this way); 'node-name':
   * from the node's scoped name (`/layer1/layer1.0/conv1/Conv` → `layer1.0.conv1.weight`);
   * 'values': equal data in the checkpoint; 'unmapped': no match, the initializer name is kept.
   */
  via: 'initializer' | 'alias' | 'node-name' | 'values' | 'unmapped';
}

/** Named tensors to match initializers against (Params or a StateDict both fit). */
export type NamedArrays = ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>;

/**
 * PyTorch's exporter names nodes by module scope: `/layer2/layer2.0/downsample/downsample.0/Conv`,
 * where a segment that extends the previous one by `.k` is a Sequential child. Returns the
 * module path (`layer2.0.downsample.0`), or null for unscoped names.
 */
export function pytorchModulePath(nodeName: string): string | null {
  if (!nodeName.startsWith('/')) return null;
  const segs = nodeName.split('/').filter((s) => s.length > 0);
  if (segs.length < 2) return null;
  segs.pop(); // the op, e.g. "Conv" or "Relu_1"
  let path = '';
  let prev = '';
  for (const s of segs) {
    if (prev && s.startsWith(prev + '.')) path += s.slice(prev.length);
    else path = path ? `${path}.${s}` : s;
    prev = s;
  }
  return path || null;
}

const WEIGHT_SUFFIX = /\.(weight|kernel)$/;

/** Label of a conv/linear output space: its module path, as models/graph.ts ids are. */
export function moduleLabel(node: OnnxNode, init: string): string {
  if (!init.startsWith('onnx::') && WEIGHT_SUFFIX.test(init)) return init.replace(WEIGHT_SUFFIX, '');
  return pytorchModulePath(node.name) ?? (node.name || (init.startsWith('onnx::') ? node.outputs[0] : init) || init);
}


const ROLE_SUFFIX: Partial<Record<Role, string>> = { weight: '.weight', bias: '.bias', running_mean: '.running_mean', running_var: '.running_var' };
/** Names PyTorch would give: no exporter-made `onnx::X_12`, no node paths. */
const looksLikeParamName = (name: string) => name.length > 0 && !/::|\//.test(name);

function sameData(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (Math.fround(a[i]) !== Math.fround(b[i])) return false;
  return true;
}

/** b is a (rows × cols) matrix equal to aᵀ, a being (cols × rows). */
function transposedData(a: ArrayLike<number>, rows: number, cols: number, b: ArrayLike<number>): boolean {
  if (a.length !== rows * cols || b.length !== rows * cols) return false;
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) if (Math.fround(b[i * cols + j]) !== Math.fround(a[j * rows + i])) return false;
  return true;
}

/**
 * Maps every initializer use to a PyTorch name. Order of trust: the Identity alias the exporter left, the initializer's own name, the node's scoped
 * name + role suffix, then (with a checkpoint) equal data. With a checkpoint a name only counts
 * when the checkpoint has it with the same shape (or transposed, for 2-D tensors).
 */
export function resolveNames(model: OnnxModel, uses: InitializerUse[], ckpt: NamedArrays | undefined): { nameMap: OnnxNameMapping[]; byAlias: Map<string, OnnxNameMapping> } {
  const inits = model.initializers;
  const all = uses;

  const claimed = new Set<string>();
  const byKey = new Map<string, OnnxNameMapping>();
  const pending: typeof all = [];
  const resolve = (u: (typeof all)[number]): OnnxNameMapping | null => {
    const t = inits.get(u.init)!;
    const guess = u.node ? pytorchModulePath(u.node.name) : null;
    const suffix = ROLE_SUFFIX[u.role];
    const cands: [string, OnnxNameMapping['via']][] = [];
    if (u.alias !== u.init) cands.push([u.alias, 'alias']);
    cands.push([u.init, 'initializer']);
    if (guess && suffix) cands.push([guess + suffix, 'node-name']);
    for (const [name, via] of cands) {
      if (!ckpt) {
        if (via === 'node-name') return { initializer: u.init, name, transposed: u.pytorchTransposed && t.dims.length === 2, via };
        if (looksLikeParamName(name)) return { initializer: u.init, name, transposed: false, via };
        continue;
      }
      const c = ckpt.get(name);
      if (!c) continue;
      const d = t.dims;
      const cs = c.shape;
      const same = cs.length === d.length && cs.every((x, i) => x === d[i]);
      const reversed = d.length === 2 && cs.length === 2 && cs[0] === d[1] && cs[1] === d[0];
      if (!same && !reversed) continue;
      let transposed = !same;
      if (same && reversed && t.data) {
        // Square matrix: the data decides; for other weights (another training run) the role does.
        transposed = sameData(t.data, c.data) ? false : transposedData(t.data, d[1], d[0], c.data) ? true : via === 'node-name' && u.pytorchTransposed;
      }
      return { initializer: u.init, name, transposed, via };
    }
    return null;
  };
  for (const u of all) {
    const key = `${u.init}\u0000${u.alias}\u0000${u.role}`;
    if (byKey.has(key)) continue;
    const m = resolve(u);
    if (m) {
      byKey.set(key, m);
      claimed.add(m.name);
    } else pending.push(u);
  }
  if (ckpt && pending.length) {
    const byNumel = new Map<number, string[]>();
    for (const [name, c] of ckpt) {
      const list = byNumel.get(c.data.length) ?? [];
      list.push(name);
      byNumel.set(c.data.length, list);
    }
    for (const u of pending) {
      const key = `${u.init}\u0000${u.alias}\u0000${u.role}`;
      if (byKey.has(key)) continue;
      const t = inits.get(u.init)!;
      let found: OnnxNameMapping | null = null;
      for (const name of t.data ? byNumel.get(t.data.length) ?? [] : []) {
        if (claimed.has(name)) continue;
        const c = ckpt.get(name)!;
        const d = t.dims;
        if (c.shape.length === d.length && c.shape.every((x, i) => x === d[i]) && sameData(t.data!, c.data)) found = { initializer: u.init, name, transposed: false, via: 'values' };
        else if (d.length === 2 && c.shape.length === 2 && c.shape[0] === d[1] && c.shape[1] === d[0] && transposedData(t.data!, d[1], d[0], c.data)) {
          found = { initializer: u.init, name, transposed: true, via: 'values' };
        }
        if (found) break;
      }
      if (found) claimed.add(found.name);
      byKey.set(key, found ?? { initializer: u.init, name: u.init, transposed: false, via: 'unmapped' });
    }
  } else {
    for (const u of pending) byKey.set(`${u.init}\u0000${u.alias}\u0000${u.role}`, { initializer: u.init, name: u.init, transposed: false, via: 'unmapped' });
  }
  const byAlias = new Map<string, OnnxNameMapping>();
  for (const [key, m] of byKey) {
    const alias = key.split('\u0000')[1];
    if (!byAlias.has(alias)) byAlias.set(alias, m);
  }
  const nameMap: OnnxNameMapping[] = [];
  const seenPair = new Set<string>();
  for (const m of byKey.values()) {
    const pair = `${m.initializer}\u0000${m.name}`;
    if (seenPair.has(pair)) continue;
    seenPair.add(pair);
    nameMap.push(m);
  }
  return { nameMap, byAlias };
}

/** A folded conv's checkpoint tensors: conv weight (and bias), BatchNorm module prefix and its ε. */
export interface FoldedBatchNorm {
  convWeight: string;
  convBias: string | null;
  prefix: string;
  /** Read off the values; PyTorch's default 1e-5 when matched by name. */
  eps: number;
  /** Matched by the checkpoint's values (else by module names, for a checkpoint the export was not made from). */
  byValue: boolean;
}

const close = (a: number, b: number, scale: number) => Math.abs(a - b) <= 1e-4 * scale + 1e-6;

/** Per output channel s with W' ≈ s·W (least squares per row), or null when no such s fits. */
function rowScales(folded: Float32Array, w: ArrayLike<number>, rows: number): Float64Array | null {
  const k = folded.length / rows;
  const s = new Float64Array(rows);
  let scale = 0;
  for (let i = 0; i < folded.length; i++) scale = Math.max(scale, Math.abs(folded[i]));
  for (let r = 0; r < rows; r++) {
    let num = 0;
    let den = 0;
    for (let j = r * k; j < (r + 1) * k; j++) {
      num += folded[j] * w[j];
      den += w[j] * w[j];
    }
    s[r] = den > 0 ? num / den : 0;
    for (let j = r * k; j < (r + 1) * k; j++) if (!close(folded[j], s[r] * w[j], scale)) return null;
  }
  return s;
}

/** BatchNorm module prefixes in the checkpoint with `channels` channels, the conventional partner of `conv` first. */
function batchNormCandidates(ckpt: NamedArrays, conv: string, channels: number): string[] {
  const out: string[] = [];
  for (const [name, t] of ckpt) {
    if (!name.endsWith('.running_var') || t.shape.length !== 1 || t.shape[0] !== channels) continue;
    const p = name.slice(0, -'.running_var'.length);
    if (ckpt.has(`${p}.weight`) && ckpt.has(`${p}.bias`) && ckpt.has(`${p}.running_mean`)) out.push(p);
  }
  // torchvision's conventions: convK → bnK, Sequential index i → i + 1.
  const partner = [conv.replace(/conv(\d*)$/, 'bn$1'), conv.replace(/\.(\d+)$/, (_m, i: string) => `.${Number(i) + 1}`)];
  return out.sort((a, b) => Number(!partner.includes(a)) - Number(!partner.includes(b)));
}

/** BatchNorm ε values in use (PyTorch's default first; 1e-3 in MobileNetV3/EfficientNet; Keras's 1.001e-5). */
const COMMON_EPS = [1e-5, 1e-3, 1e-4, 1e-6, 1e-2, 1e-7, 1e-8, 1e-9, 1e-12, 1.001e-5];

/**
 * ε of a folded BatchNorm from s = γ/√(σ² + ε): (γ/s)² − σ² on the channel with the least running
 * variance (float32 s leaves an error of about 1e-7·(σ² + ε), so large variances swamp ε), snapped
 * to a common value within that precision. Batch statistics in training mode can be far smaller
 * than the running variance, so ε must be right, not just close. NaN when no channel tells.
 */
function foldedEps(g: ArrayLike<number>, s: ArrayLike<number>, v: ArrayLike<number>, rows: number): number {
  let best = -1;
  for (let i = 0; i < rows; i++) if (g[i] !== 0 && s[i] !== 0 && (best < 0 || v[i] < v[best])) best = i;
  if (best < 0) return Number.NaN;
  const eps = (g[best] / s[best]) ** 2 - v[best];
  return COMMON_EPS.find((c) => Math.abs(eps - c) <= 0.05 * c + 1e-6 * (Math.abs(v[best]) + c)) ?? eps;
}

/**
 * Finds the conv + BatchNorm of `ckpt` that an eval-mode export folded into `weight` (and `bias`):
 * W' = W·s and b' = β + (b − μ)·s per output channel, s = γ/√(σ² + ε). Checks every value;
 * null when nothing in the checkpoint reproduces them.
 */
export function unfoldBatchNorm(node: OnnxNode, weight: OnnxTensor, bias: OnnxTensor | null, ckpt: NamedArrays): FoldedBatchNorm | null {
  if (!weight.data) return null;
  const rows = weight.dims[0];
  const scope = pytorchModulePath(node.name);
  const convs = [...ckpt.entries()].filter(([, t]) => t.shape.length === weight.dims.length && t.shape.every((d, i) => d === weight.dims[i]));
  convs.sort(([a], [b]) => Number(a !== `${scope}.weight`) - Number(b !== `${scope}.weight`));
  for (const [wName, w] of convs) {
    const s = rowScales(weight.data, w.data, rows);
    if (!s) continue;
    const conv = wName.replace(/\.weight$/, '');
    const convBias = ckpt.get(`${conv}.bias`);
    for (const p of batchNormCandidates(ckpt, conv, rows)) {
      const [g, beta, mu, v] = ['weight', 'bias', 'running_mean', 'running_var'].map((k) => ckpt.get(`${p}.${k}`)!.data);
      // ε from one channel, then every channel must agree.
      const eps = foldedEps(g, s, v, rows);
      if (!(eps > 0 && eps < 0.1)) continue;
      let ok = true;
      for (let i = 0; i < rows && ok; i++) {
        const si = g[i] / Math.sqrt(v[i] + eps);
        const bi = beta[i] + ((convBias?.data[i] ?? 0) - mu[i]) * si;
        ok = close(si, s[i], Math.abs(s[i])) && (!bias?.data || close(bias.data[i], bi, Math.max(1, Math.abs(bi))));
      }
      if (ok) return { convWeight: wName, convBias: convBias ? `${conv}.bias` : null, prefix: p, eps, byValue: true };
    }
  }
  // Another checkpoint of the architecture (e.g. a model trained after the export): the values
  // cannot match, so the node's module scope and torchvision's naming decide — only when they
  // name exactly one conv of the right shape and its conventional BatchNorm.
  const w = scope ? ckpt.get(`${scope}.weight`) : undefined;
  if (!scope || !w || w.shape.length !== weight.dims.length || w.shape.some((d, i) => d !== weight.dims[i])) return null;
  const partners = batchNormCandidates(ckpt, scope, rows).filter((p) => p === scope.replace(/conv(\d*)$/, 'bn$1') || p === scope.replace(/\.(\d+)$/, (_m, i: string) => `.${Number(i) + 1}`));
  if (partners.length !== 1) return null;
  return { convWeight: `${scope}.weight`, convBias: ckpt.has(`${scope}.bias`) ? `${scope}.bias` : null, prefix: partners[0], eps: 1e-5, byValue: false };
}
