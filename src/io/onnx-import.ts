/**
 * ONNX → ModelGraph: translates an ONNX graph (as `readOnnx` parsed it) into the project's own
 * model description, so an imported network runs forward and backward on the autodiff core and
 * its permutation spec is `deriveSpec` of the same graph — one description for built and
 * imported models.
 *
 * Each ONNX op is one small function of `ONNX_OPS` (module level): it reads its inputs' values
 * and emits graph nodes, or throws `Unsupported` with the reason — the node then becomes an
 * `opaque` graph node (spec inference goes through it with its channel groups fixed; running
 * refuses, naming it). Static shapes are tracked with symbolic dimensions (the batch axis, dynamic
 * sizes), and the integer arithmetic exporters write for shapes (Shape/Gather/Concat/Unsqueeze…)
 * is folded to constants, so `x.view(x.size(0), -1)` becomes a flatten.
 *
 * Parameter names: each initializer is resolved to its PyTorch name (onnx-names.ts) and the graph
 * is written in PyTorch names and layouts; a BatchNorm folded into a Conv by an eval-mode export
 * is split back into the checkpoint's conv and BatchNorm tensors when a checkpoint is given.
 */
import type { FlowResult } from '../permutation/flow.js';
import type { PermutationSpec } from '../permutation/spec.js';
import { graphFlow, type GraphFlow, type GraphNode, type ModelGraph, type NodeOf, type UnaryFn, type BinaryFn, type ReduceFn } from '../models/graph.js';
import { InputError } from '../errors.js';
import { FormatError, describeError } from './errors.js';
import { isFloatTensor, type Dim, type OnnxModel, type OnnxNode, type OnnxTensor } from './onnx.js';
import { moduleLabel, resolveNames, unfoldBatchNorm, type InitializerUse, type NamedArrays, type OnnxNameMapping, type Role } from './onnx-names.js';
import type { StateDict } from './records.js';

export interface OnnxImportOptions {
  /** The PyTorch checkpoint whose names (and, for folded BatchNorm, values) the graph should use. */
  checkpoint?: NamedArrays;
  /** Static shapes for graph inputs, overriding the file's (e.g. to fix a dynamic spatial size). */
  inputShapes?: Record<string, Dim[]>;
}

/** A BatchNorm the exporter folded into a Conv, split back into the checkpoint's tensors. */
export interface UnfoldedBatchNorm {
  node: string;
  initializer: string;
  conv: string;
  batchNorm: string;
  /** Found by the checkpoint's values (else by module names: the checkpoint is not the exported one). */
  byValue: boolean;
}

export interface ImportedOnnx {
  /** The model under PyTorch names and layouts (initializers without a PyTorch name keep theirs). */
  graph: ModelGraph;
  /** The same model under the ONNX initializer names and layouts (fits `onnxInitializersToState`). */
  initializerGraph: ModelGraph;
  /** The file's own values under the graph's names and layouts (folded convs stay folded there: use `initializerGraph`). */
  tensors: StateDict;
  nameMap: OnnxNameMapping[];
  unfolded: UnfoldedBatchNorm[];
  /** Nodes the graph cannot run, with why. Empty: the model runs. */
  opaque: { node: string; opType: string; reason: string }[];
  /** Channel flow of `graph` (spec under PyTorch names, groups, warnings). */
  flow: GraphFlow;
  /** Channel flow of `initializerGraph`. */
  initializerFlow: GraphFlow;
}

/** An op (or a use of it) the graph cannot express: the node becomes opaque. */
class Unsupported extends Error {}

interface Konst {
  dims: number[];
  values: Dim[];
}

/** What the importer knows of one ONNX value. */
interface Val {
  /** Full static shape (batched values start with the batch dimension); null: rank unknown. */
  shape: Dim[] | null;
  /** Computed from the network input (has the batch axis); else a constant or parameter. */
  batched: boolean;
  /** The graph node computing it (batched values, and constants/parameters once used). */
  node?: string;
  /** A float initializer (read through Identity aliases: `alias` is the value's own name). */
  init?: { name: string; alias: string };
  /** Known small values (integer shape arithmetic, small float constants). */
  konst?: Konst;
  /** Where the batch axis went when the ONNX graph moved it (absent: first, as in the graph). */
  lay?: Layout;
}

/**
 * A batched value whose ONNX layout moved the batch axis (MultiheadAttention's [T, B, E] and
 * [B·H, T, d]): the value's axes are runs of `factors` (row-major, the batch one of them, at
 * `batch`; `groups[i]` factors make axis i). The graph node holds the same numbers with the batch
 * first and the other factors in order, so its per-sample shape is the factors without the batch.
 * Reshapes and transposes that move the batch are then per-sample reshapes and transposes.
 */
interface Layout {
  factors: Dim[];
  batch: number;
  groups: number[];
}

const canonical = (shape: Dim[]): Layout => ({ factors: [...shape], batch: 0, groups: shape.map(() => 1) });
const layoutOf = (v: Val & { shape: Dim[] }): Layout => v.lay ?? canonical(v.shape);
/** The factor indices of each axis. */
function axisFactors(l: Layout): number[][] {
  let k = 0;
  return l.groups.map((g) => Array.from({ length: g }, () => k++));
}
/** The graph node's per-sample axis of a factor other than the batch. */
const physIndex = (l: Layout, f: number) => (f < l.batch ? f : f - 1);
const physShape = (l: Layout) => l.factors.filter((_, i) => i !== l.batch);
/** The ONNX shape: an axis of several factors with the batch among them is unknown. */
function logicalShape(l: Layout): Dim[] {
  return axisFactors(l).map((fs) => (fs.length === 1 ? l.factors[fs[0]] : fs.includes(l.batch) ? null : prodDims(fs.map((f) => l.factors[f]))));
}
/** The graph node's per-sample axis of axis `a` when it is one factor and not the batch, else null. */
function plainAxis(l: Layout, a: number): number | null {
  const fs = axisFactors(l)[a];
  return fs && fs.length === 1 && fs[0] !== l.batch ? physIndex(l, fs[0]) : null;
}
const sameLayout = (a: Layout, b: Layout) => a.batch === b.batch && a.groups.join() === b.groups.join() && a.factors.length === b.factors.length && a.factors.every((d, i) => same(d, b.factors[i]));

const prodDims = (ds: readonly Dim[]): number | null => {
  let p = 1;
  for (const d of ds) {
    if (typeof d !== 'number') return null;
    p *= d;
  }
  return p;
};
const same = (a: Dim, b: Dim) => a !== null && b !== null && a === b;
/** Per-sample graph shape of a batched value: unknown dims are NaN. */
const perSample = (shape: Dim[]) => shape.slice(1).map((d) => (typeof d === 'number' ? d : Number.NaN));

/** The importer's state while it walks one graph. */
class Importer {
  readonly nodes: GraphNode[] = [];
  readonly vals = new Map<string, Val>();
  readonly uses: InitializerUse[] = [];
  readonly unfolded: UnfoldedBatchNorm[] = [];
  readonly opaque: ImportedOnnx['opaque'] = [];
  private readonly ids = new Set<string>();
  private readonly materialized = new Map<string, string>();
  /** How many nodes read each value (a MatMul's bias Add folds into it only when it is the sole reader). */
  readonly readers = new Map<string, number>();

  /** Module labels of the weights (node ids of linear/conv, hence permutation ids): value ids avoid them. */
  private readonly labels = new Set<string>();

  constructor(readonly model: OnnxModel, readonly opts: OnnxImportOptions) {
    for (const n of model.nodes) {
      for (const i of n.inputs) if (i) this.readers.set(i, (this.readers.get(i) ?? 0) + 1);
      const w = n.inputs[1];
      if (w && model.initializers.has(w) && ['Conv', 'Gemm', 'MatMul'].includes(n.opType)) this.labels.add(moduleLabel(n, w));
    }
  }

  init(name: string): OnnxTensor {
    return this.model.initializers.get(name)!;
  }

  get(name: string | undefined): Val {
    if (!name) throw new Unsupported('an optional input is missing');
    const v = this.vals.get(name);
    if (!v) throw new Unsupported(`input "${name}" is not produced by any node before it`);
    if (!v.shape) {
      const vi = this.model.valueInfo.get(name)?.shape;
      if (vi) v.shape = vi;
    }
    return v;
  }

  /** A batched input with a known rank and the batch axis first. */
  act(name: string | undefined): Val & { shape: Dim[]; node: string } {
    const v = this.any(name);
    if (v.lay) throw new Unsupported(`the batch axis of "${name}" is not its first axis (shape [${v.shape.map((d) => d ?? '?').join(', ')}])`);
    return v;
  }

  /** A batched input with a known rank, the batch axis anywhere (see Layout). */
  any(name: string | undefined): Val & { shape: Dim[]; node: string } {
    const v = this.get(name);
    if (!v.batched) throw new Unsupported(`input "${name}" is computed from constants only`);
    if (!v.shape) throw new Unsupported(`the rank of "${name}" is unknown`);
    return v as Val & { shape: Dim[]; node: string };
  }

  /** The network input's batch dimension and graph node (what Expand to the batch copies along). */
  batch: { dim: Dim; node: string } | null = null;

  set(node: OnnxNode, i: number, v: Val): void {
    const name = node.outputs[i];
    if (!name) return;
    if (!v.shape) v.shape = this.model.valueInfo.get(name)?.shape ?? null;
    this.vals.set(name, v);
  }

  /** A unique node id, `base` when free; `label`: the id of a linear/conv (else module labels are left to them). */
  id(base: string, label = false): string {
    if (!label && this.labels.has(base)) base = `${base}:value`;
    let id = base || 'node';
    for (let k = 2; this.ids.has(id); k++) id = `${base}#${k}`;
    this.ids.add(id);
    return id;
  }

  emit(n: GraphNode): string {
    this.nodes.push(n);
    return n.id;
  }

  /** Emits a node computing output 0 of `node` from batched inputs and records the value. */
  out(node: OnnxNode, fields: DistributiveOmit<GraphNode, 'id'>, shape: Dim[] | null, id?: string, lay?: Layout): string {
    const nid = this.id(id ?? nodeId(node));
    this.emit({ ...fields, id: nid } as GraphNode);
    this.set(node, 0, lay ? { shape, batched: true, node: nid, lay } : { shape, batched: true, node: nid });
    return nid;
  }

  /** Records how an initializer is used (for its PyTorch name). */
  use(init: { name: string; alias: string }, role: Role, node: OnnxNode, pytorchTransposed = false): string {
    this.uses.push({ init: init.name, alias: init.alias, role, node, pytorchTransposed });
    // Graph tensors are named by the value read (an Identity alias may carry the PyTorch name).
    this.aliasOf.set(init.alias, init.name);
    return init.alias;
  }

  /** Value name → initializer, for the tensors the graph names. */
  readonly aliasOf = new Map<string, string>();

  /** The graph node of a value: batched values have one; parameters and constants get one on first use. */
  valueNode(v: Val, node: OnnxNode, batchRank: number, role: Role = 'other'): string {
    if (v.batched) return v.node!;
    const shape = v.shape;
    if (!shape || shape.some((d) => typeof d !== 'number')) throw new Unsupported('an operand of unknown shape');
    // Right-aligned broadcasting: a leading 1 as wide as the batched operands' batch axis goes.
    let view = shape as number[];
    while (view.length >= batchRank && view.length > 0 && view[0] === 1) view = view.slice(1);
    if (view.length >= batchRank && batchRank > 0) throw new Unsupported('an operand that varies along the batch axis');
    if (v.init) {
      const key = `${v.init.name}\u0000${v.init.alias}\u0000${view.join(',')}`;
      let id = this.materialized.get(key);
      if (!id) {
        this.use(v.init, role, node);
        id = this.id(v.init.alias);
        const t = this.init(v.init.name);
        this.emit(view.length === t.dims.length ? { op: 'param', id, name: v.init.alias, shape: [...t.dims] } : { op: 'param', id, name: v.init.alias, shape: [...t.dims], view });
        this.materialized.set(key, id);
      }
      return id;
    }
    if (v.konst && v.konst.values.every((x) => typeof x === 'number')) {
      return this.emit({ op: 'constant', id: this.id(`${nodeId(node)}:const`), shape: view, values: v.konst.values as number[] });
    }
    throw new Unsupported('an operand computed from constants in a way the importer cannot fold');
  }

  /** The node becomes opaque: spec inference fixes what it touches; running refuses. */
  makeOpaque(node: OnnxNode, reason: string): void {
    const inputs: string[] = [];
    for (const name of node.inputs) {
      const v = name ? this.vals.get(name) : undefined;
      if (v?.batched && v.node) inputs.push(v.node);
      else if (v?.init) this.use(v.init, 'other', node);
    }
    this.opaque.push({ node: node.label, opType: node.opType, reason });
    // Without value_info, guess the rank of the first input (most ops keep it), sizes unknown.
    const first = node.inputs.map((i) => (i ? this.vals.get(i) : undefined)).find((v) => v?.batched && v.shape);
    const vi = this.model.valueInfo.get(node.outputs[0] ?? '')?.shape ?? (first?.shape ? [first.shape[0], ...first.shape.slice(1).map(() => null)] : null);
    if (inputs.length === 0) {
      node.outputs.forEach((_, i) => this.set(node, i, { shape: null, batched: false }));
      return;
    }
    node.outputs.forEach((o, i) => {
      if (!o) return;
      const shape = i === 0 ? vi : this.model.valueInfo.get(o)?.shape ?? null;
      const id = this.id(nodeId(node, i));
      this.emit({ op: 'opaque', id, inputs, opType: `${node.domain ? node.domain + '.' : ''}${node.opType}`, reason, shape: shape ? perSample(shape) : [Number.NaN] });
      this.set(node, i, { shape: shape ?? [null, null], batched: true, node: id });
    });
  }

  attrI(n: OnnxNode, k: string, d: number): number {
    return n.attributes.get(k)?.i ?? d;
  }
  attrF(n: OnnxNode, k: string, d: number): number {
    return n.attributes.get(k)?.f ?? d;
  }
  attrInts(n: OnnxNode, k: string): number[] | undefined {
    return n.attributes.get(k)?.ints;
  }
  /** A constant integer list from an input (opset ≥ 10 style) or an attribute (older opsets). */
  ints(n: OnnxNode, input: number, attr: string): number[] | undefined {
    const name = n.inputs[input];
    if (name) {
      const k = this.get(name).konst;
      if (!k || k.values.some((d) => typeof d !== 'number')) throw new Unsupported(`input ${input} ("${name}") is not a constant`);
      return k.values as number[];
    }
    return this.attrInts(n, attr);
  }
  /** A per-sample axis from an ONNX axis of a value of rank `rank`; the batch axis is refused. */
  axis(a: number, rank: number, what: string): number {
    const ax = a < 0 ? a + rank : a;
    if (ax === 0) throw new Unsupported(`${what} along the batch axis`);
    if (!(ax > 0 && ax < rank)) throw new Unsupported(`${what}: axis ${a} out of range for rank ${rank}`);
    return ax - 1;
  }
}

/** A graph node id for an ONNX node: its name (what messages show), else its first output. */
const nodeId = (n: OnnxNode, i = 0) => (n.name ? (i === 0 ? n.name : `${n.name}:${i}`) : n.outputs[i]);

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type OpRule = (n: OnnxNode, c: Importer) => void;

// ---------------------------------------------------------------- op rules

const unary = (fn: UnaryFn, params?: (n: OnnxNode, c: Importer) => { alpha?: number; beta?: number }): OpRule => (n, c) => {
  const x = c.get(n.inputs[0]);
  if (!x.batched) throw new Unsupported('computes on constants only');
  const p = params?.(n, c) ?? {};
  c.out(n, { op: 'unary', input: x.node!, fn, ...p }, x.shape, undefined, x.lay);
};

const scalarInput = (n: OnnxNode, c: Importer, i: number): number | undefined => {
  if (!n.inputs[i]) return undefined;
  const v = c.get(n.inputs[i]);
  const k = v.konst?.values ?? (v.init ? [...(c.init(v.init.name).data ?? [])] : null);
  if (!k || k.length !== 1 || typeof k[0] !== 'number') throw new Unsupported(`input ${i} is not a constant scalar`);
  return k[0];
};

/** Numpy broadcast of static shapes (unknown dims stay unknown unless the other side says). */
function broadcastDims(shapes: Dim[][]): Dim[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let j = 0; j < rank; j++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const e = s[j - (rank - s.length)];
      if (e === undefined || e === 1) continue;
      d = d === 1 ? e : same(d, e) ? d : d ?? e;
    }
    out.push(d);
  }
  return out;
}

const INT_BINARY: Record<string, (p: number, q: number) => number> = {
  Add: (p, q) => p + q, Sub: (p, q) => p - q, Mul: (p, q) => p * q, Div: (p, q) => Math.trunc(p / q),
};

const binary = (fn: BinaryFn): OpRule => (n, c) => {
  const [a, b] = [c.get(n.inputs[0]), c.get(n.inputs[1])];
  if (!a.batched && !b.batched) {
    // Shape arithmetic on known integers (e.g. h // 2); anything else has no batch and no graph node.
    const f = INT_BINARY[n.opType];
    if (f && a.konst && b.konst && (a.konst.values.length === b.konst.values.length || b.konst.values.length === 1)) {
      const values = a.konst.values.map((v, i) => {
        const w = b.konst!.values[b.konst!.values.length === 1 ? 0 : i];
        return typeof v === 'number' && typeof w === 'number' ? f(v, w) : null;
      });
      return c.set(n, 0, { shape: [...a.konst.dims], batched: false, konst: { dims: [...a.konst.dims], values } });
    }
    return c.set(n, 0, { shape: a.shape && b.shape ? broadcastDims([a.shape, b.shape]) : null, batched: false });
  }
  if (!a.shape || !b.shape) throw new Unsupported('operand rank unknown');
  const rank = Math.max(a.batched ? a.shape.length : 0, b.batched ? b.shape.length : 0) - 1;
  const shape = broadcastDims([a.shape, b.shape]);
  if (a.batched && b.batched && a.shape.length === b.shape.length && fn === 'add' && a.shape.every((d, i) => same(d, b.shape![i]))) {
    return void c.out(n, { op: 'add', inputs: [a.node!, b.node!] }, shape);
  }
  // PyTorch Linear exported as MatMul + Add: the bias folds into the linear (its sole reader).
  const [act, bias, actName] = a.batched ? [a, b, n.inputs[0]] : [b, a, n.inputs[1]];
  if (fn === 'add' && bias.init && !bias.batched) {
    const prev = c.nodes[c.nodes.length - 1];
    const t = c.init(bias.init.name);
    if (prev?.op === 'linear' && prev.id === act.node && !prev.bias && t.dims.length === 1 && t.dims[0] === prev.outFeatures && c.readers.get(actName) === 1) {
      prev.bias = c.use(bias.init, 'bias', n);
      return c.set(n, 0, act.lay ? { shape, batched: true, node: prev.id, lay: act.lay } : { shape, batched: true, node: prev.id });
    }
  }
  if (a.lay || b.lay) return laidOutBinary(n, c, fn, a, b, shape);
  const ids = [a, b].map((v) => c.valueNode(v, n, rank + 1, fn === 'prelu' ? 'weight' : 'other')) as [string, string];
  c.out(n, { op: 'binary', inputs: ids, fn }, shape);
};

/**
 * An element-wise op on a value whose batch axis moved (see Layout): with a value of the same
 * layout, or with a constant that is a scalar or lies along a last axis the graph node has last.
 */
function laidOutBinary(n: OnnxNode, c: Importer, fn: BinaryFn, a: Val, b: Val, shape: Dim[]): void {
  if (a.batched && b.batched) {
    const [la, lb] = [layoutOf(a as Val & { shape: Dim[] }), layoutOf(b as Val & { shape: Dim[] })];
    if (!sameLayout(la, lb)) throw new Unsupported('operands whose batch axes are in different places');
    return void c.out(n, fn === 'add' ? { op: 'add', inputs: [a.node!, b.node!] } : { op: 'binary', inputs: [a.node!, b.node!], fn }, shape, undefined, la);
  }
  const [act, k] = a.batched ? [a, b] : [b, a];
  const l = act.lay!;
  const ks = k.shape;
  if (!ks) throw new Unsupported('operand rank unknown');
  const rank = l.groups.length;
  const lastPlain = plainAxis(l, rank - 1) === physShape(l).length - 1;
  if (ks.slice(0, -1).some((d) => d !== 1) || (ks.length > rank) || (ks.length > 0 && ks[ks.length - 1] !== 1 && !lastPlain)) {
    throw new Unsupported('a constant operand along axes the batch axis moved between');
  }
  const kid = c.valueNode({ ...k, shape: ks.length ? [ks[ks.length - 1]] : [] }, n, physShape(l).length + 1);
  c.out(n, { op: 'binary', inputs: a.batched ? [act.node!, kid] : [kid, act.node!], fn }, shape, undefined, l);
}

function variadic(fn: BinaryFn): OpRule {
  return (n, c) => {
    if (n.inputs.length === 1) return c.set(n, 0, c.get(n.inputs[0]));
    if (n.inputs.length !== 2) throw new Unsupported(`${n.inputs.length} operands`);
    binary(fn)(n, c);
  };
}

/** Constant-folds a node whose inputs are all known constants; false when it cannot. */
function konstOf(c: Importer, name: string | undefined): Konst | undefined {
  return name ? c.get(name).konst : undefined;
}

/** A window op's [top, left, bottom, right] padding from `pads` or `auto_pad`. */
function convPads(node: OnnxNode, c: Importer, x: Dim[], kernel: number[], strides: number[], dil: number[]): [number, number, number, number] {
  const autoPad = node.attributes.get('auto_pad')?.s ?? 'NOTSET';
  if (autoPad === 'NOTSET') {
    const p = c.attrInts(node, 'pads') ?? [0, 0, 0, 0];
    return [p[0], p[1], p[2], p[3]];
  }
  if (autoPad === 'VALID') return [0, 0, 0, 0];
  // SAME_UPPER/LOWER: output ceil(n / stride), the extra padding at the end (UPPER) or start.
  const pads: number[] = [0, 0, 0, 0];
  for (let i = 0; i < 2; i++) {
    const len = x[2 + i];
    if (typeof len !== 'number') throw new Unsupported(`auto_pad ${autoPad} on an input of unknown size`);
    const out = Math.ceil(len / strides[i]);
    const total = Math.max(0, (out - 1) * strides[i] + (dil[i] * (kernel[i] - 1) + 1) - len);
    const small = Math.floor(total / 2);
    pads[i] = autoPad === 'SAME_UPPER' ? small : total - small;
    pads[i + 2] = total - pads[i];
  }
  return pads as [number, number, number, number];
}

function windowOut(len: Dim, k: number, s: number, p0: number, p1: number, d: number, ceil: boolean): Dim {
  if (typeof len !== 'number') return null;
  const span = len + p0 + p1 - (d * (k - 1) + 1);
  let o = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  if (ceil && (o - 1) * s >= len + p0) o--;
  return o;
}

const Conv: OpRule = (n, c) => {
  const x = c.act(n.inputs[0]);
  const w = c.get(n.inputs[1]);
  const b = n.inputs[2] ? c.get(n.inputs[2]) : null;
  if (!w.init || (b && !b.init)) throw new Unsupported('weight or bias is not an initializer');
  const wt = c.init(w.init.name);
  if (wt.dims.length !== 4 || x.shape.length !== 4) throw new Unsupported(`only 2-D convolutions run (weight [${wt.dims.join(', ')}])`);
  const [M, cg, kh, kw] = wt.dims;
  const groups = c.attrI(n, 'group', 1);
  const strides = c.attrInts(n, 'strides') ?? [1, 1];
  const dil = c.attrInts(n, 'dilations') ?? [1, 1];
  const pads = convPads(n, c, x.shape, [kh, kw], strides, dil);
  const shape: Dim[] = [x.shape[0], M, windowOut(x.shape[2], kh, strides[0], pads[0], pads[2], dil[0], false), windowOut(x.shape[3], kw, strides[1], pads[1], pads[3], dil[1], false)];
  const id = c.id(moduleLabel(n, w.init.name), true);
  const fields = {
    input: x.node, inChannels: cg * groups, outChannels: M, kernel: kh === kw ? kh : [kh, kw] as [number, number],
    stride: strides[0] === strides[1] ? strides[0] : [strides[0], strides[1]] as [number, number],
    padding: pads.every((p) => p === pads[0]) ? pads[0] : pads,
    ...(dil.some((d) => d !== 1) ? { dilation: [dil[0], dil[1]] as [number, number] } : {}),
    ...(groups !== 1 ? { groups } : {}),
  };
  // An eval-mode export folds BatchNorm into the conv: with a checkpoint holding the conv and
  // BatchNorm tensors, split it back so the checkpoint's own tensors drive the graph.
  const ckpt = c.opts.checkpoint;
  if (ckpt && !ckpt.has(w.init.name) && !ckpt.has(w.init.alias)) {
    const u = unfoldBatchNorm(n, wt, b?.init ? c.init(b.init.name) : null, ckpt);
    if (u) {
      c.unfolded.push({ node: n.label, initializer: w.init.name, conv: u.convWeight, batchNorm: u.prefix, byValue: u.byValue });
      c.emit({ op: 'conv2d', id, ...fields, weight: u.convWeight, bias: u.convBias });
      const bnId = c.id(u.prefix);
      c.emit({
        op: 'batchnorm', id: bnId, input: id, channels: M, weight: `${u.prefix}.weight`, bias: `${u.prefix}.bias`,
        runningMean: `${u.prefix}.running_mean`, runningVar: `${u.prefix}.running_var`, eps: u.eps, momentum: 0.1,
      });
      return c.set(n, 0, { shape, batched: true, node: bnId });
    }
  }
  c.emit({ op: 'conv2d', id, ...fields, weight: c.use(w.init, 'weight', n), bias: b?.init ? c.use(b.init, 'bias', n) : null });
  c.set(n, 0, { shape, batched: true, node: id });
};

/** Gemm/MatMul with an initializer as B: a PyTorch Linear on the last axis. */
function linear(n: OnnxNode, c: Importer, x: Val & { shape: Dim[]; node: string }, bInit: { name: string; alias: string }, transB: boolean, bias: Val | null): void {
  const dims = c.init(bInit.name).dims;
  if (dims.length !== 2) throw new Unsupported(`B "${bInit.name}" is not a matrix`);
  const [inF, outF] = transB ? [dims[1], dims[0]] : dims;
  const last = x.shape[x.shape.length - 1];
  if (typeof last === 'number' && last !== inF) throw new Unsupported(`input [.., ${last}] does not fit B [${dims.join(', ')}]`);
  let input = x.node;
  let lay: Layout | undefined;
  if (x.lay) {
    // The batch axis moved (attention's [T·B, E]): the product runs on the graph node's last
    // axis, which must be the value's last axis (several factors of it are merged first).
    ({ node: input, lay } = mergeLastAxis(n, c, x.node, x.lay));
    lay = { ...lay, factors: [...lay.factors.slice(0, -1), outF] };
  }
  const id = c.id(moduleLabel(n, bInit.name), true);
  const shape = [...x.shape.slice(0, -1), outF];
  const node: NodeOf<'linear'> = {
    op: 'linear', id, input, weight: c.use(bInit, 'weight', n, !transB), bias: null, inFeatures: inF, outFeatures: outF,
    ...(transB ? {} : { weightLayout: 'in-out' as const }),
  };
  c.emit(node);
  c.set(n, 0, lay ? { shape, batched: true, node: id, lay } : { shape, batched: true, node: id });
  if (!bias) return;
  if (lay && !(bias.init && c.init(bias.init.name).dims.join() === String(outF))) throw new Unsupported('a broadcast C where the batch axis moved');
  const bt = bias.init ? c.init(bias.init.name) : null;
  if (bt && bt.dims.length === 1 && bt.dims[0] === outF) node.bias = c.use(bias.init!, 'bias', n);
  else {
    // Any other C broadcasts as an Add after the product.
    const cid = c.valueNode(bias, n, shape.length);
    c.out(n, { op: 'binary', inputs: [id, cid], fn: 'add' }, shape, `${nodeId(n)}:bias`);
  }
}

/** Merges the factors of a laid-out value's last axis into the graph node's last axis. */
function mergeLastAxis(n: OnnxNode, c: Importer, node: string, l: Layout): { node: string; lay: Layout } {
  const fs = axisFactors(l)[l.groups.length - 1];
  if (fs.includes(l.batch)) throw new Unsupported('a product along an axis that holds the batch');
  if (fs.length === 1) return { node, lay: l };
  const merged = prodDims(fs.map((f) => l.factors[f]));
  const lay: Layout = { factors: [...l.factors.slice(0, fs[0]), merged], batch: l.batch, groups: [...l.groups.slice(0, -1), 1] };
  const shape = physShape(lay);
  if (merged === null || shape.some((d) => typeof d !== 'number')) throw new Unsupported('reshape with unknown sizes');
  return { node: c.emit({ op: 'reshape', id: c.id(`${nodeId(n)}:merge`), input: node, shape: shape as number[] }), lay };
}

const Gemm: OpRule = (n, c) => {
  if (c.attrI(n, 'transA', 0) !== 0) throw new Unsupported('transA=1 (transposed input)');
  if (c.attrF(n, 'alpha', 1) !== 1 || c.attrF(n, 'beta', 1) !== 1) throw new Unsupported('alpha/beta other than 1');
  const x = c.any(n.inputs[0]);
  const b = c.get(n.inputs[1]);
  if (!b.init || b.batched) throw new Unsupported('B is not an initializer');
  linear(n, c, x, b.init, c.attrI(n, 'transB', 0) !== 0, n.inputs[2] ? c.get(n.inputs[2]) : null);
};

const MatMul: OpRule = (n, c) => {
  const a = c.get(n.inputs[0]);
  const b = c.get(n.inputs[1]);
  if (a.batched && b.init && !b.batched) return linear(n, c, c.any(n.inputs[0]), b.init, false, null);
  if (a.batched && b.batched && (a.lay || b.lay)) {
    // Attention with heads folded into the batch ([B·H, T, d] @ [B·H, d, T]): both operands
    // must hold the batch the same way, and their last two axes be plain axes of the node.
    const [la, lb] = [layoutOf(c.any(n.inputs[0])), layoutOf(c.any(n.inputs[1]))];
    const r = la.groups.length;
    const lead = (l: Layout) => ({ factors: l.factors.slice(0, l.factors.length - 2), batch: l.batch, groups: l.groups.slice(0, -2) });
    if (r !== lb.groups.length || r < 2 || [la, lb].some((l) => plainAxis(l, r - 1) === null || plainAxis(l, r - 2) === null) || !sameLayout(lead(la), lead(lb))) {
      throw new Unsupported('a product of activations whose batch axes are in different places');
    }
    const [m, k] = la.factors.slice(-2);
    const [k2, p] = lb.factors.slice(-2);
    if (!same(k, k2) && k !== null && k2 !== null) throw new Unsupported(`product of [.., ${m}, ${k}] and [.., ${k2}, ${p}]`);
    const lay: Layout = { factors: [...la.factors.slice(0, -2), m, p], batch: la.batch, groups: la.groups };
    return void c.out(n, { op: 'matmul', inputs: [a.node!, b.node!] }, logicalShape(lay), undefined, lay);
  }
  if (a.batched && b.batched) {
    const as = a.shape!;
    const bs = b.shape!;
    if (!as || !bs || as.length !== bs.length || as.length < 3) throw new Unsupported('product of activations of different or unknown ranks');
    return void c.out(n, { op: 'matmul', inputs: [a.node!, b.node!] }, [...broadcastDims([as.slice(0, -2), bs.slice(0, -2)]), as[as.length - 2], bs[bs.length - 1]]);
  }
  throw new Unsupported('MatMul with a constant left operand');
};

function norm(roles: Role[], make: (n: OnnxNode, c: Importer, x: Val & { shape: Dim[]; node: string }, names: string[]) => DistributiveOmit<GraphNode, 'id'>): OpRule {
  return (n, c) => {
    const x = c.act(n.inputs[0]);
    const names = roles.map((role, i) => {
      const v = c.get(n.inputs[i + 1]);
      if (!v.init || v.batched) throw new Unsupported(`input ${i + 1} is not an initializer`);
      return c.use(v.init, role, n);
    });
    c.out(n, make(n, c, x, names), x.shape, moduleLabel(n, names[0]));
    // Training-mode outputs (running statistics) have no use here.
    for (let i = 1; i < n.outputs.length; i++) c.set(n, i, { shape: null, batched: false });
  };
}

const channelsOf = (c: Importer, name: string) => c.init(name).dims[0];

const BatchNormalization = norm(['weight', 'bias', 'running_mean', 'running_var'], (n, c, x, [w, b, m, v]) => ({
  // ONNX momentum weighs the running value; PyTorch's the batch value.
  op: 'batchnorm', input: x.node, channels: channelsOf(c, w), weight: w, bias: b, runningMean: m, runningVar: v, eps: c.attrF(n, 'epsilon', 1e-5), momentum: 1 - c.attrF(n, 'momentum', 0.9),
}));

const InstanceNormalization = norm(['weight', 'bias'], (n, c, x, [w, b]) => ({ op: 'instancenorm', input: x.node, channels: channelsOf(c, w), weight: w, bias: b, eps: c.attrF(n, 'epsilon', 1e-5) }));

const LayerNormalization: OpRule = (n, c) => {
  const x = c.act(n.inputs[0]);
  const rank = x.shape.length;
  let axis = c.attrI(n, 'axis', -1);
  if (axis < 0) axis += rank;
  if (axis < 1) throw new Unsupported('normalises over the batch axis');
  const shape = x.shape.slice(axis);
  if (shape.some((d) => typeof d !== 'number')) throw new Unsupported('normalised shape unknown');
  const names = [1, 2].map((i) => {
    if (!n.inputs[i]) return null;
    const v = c.get(n.inputs[i]);
    if (!v.init || v.batched) throw new Unsupported(`input ${i} is not an initializer`);
    const t = c.init(v.init.name);
    if (t.dims.join() !== (shape as number[]).join()) throw new Unsupported(`"${v.init.name}" [${t.dims.join(', ')}] is not the normalised shape`);
    return c.use(v.init, i === 1 ? 'weight' : 'bias', n);
  });
  c.out(n, { op: 'layernorm', input: x.node, shape: shape as number[], weight: names[0], bias: names[1], eps: c.attrF(n, 'epsilon', 1e-5) }, x.shape, moduleLabel(n, names[0] ?? nodeId(n)));
  for (let i = 1; i < n.outputs.length; i++) c.set(n, i, { shape: null, batched: false });
};

/** Per-sample reshape of a batched value (the batch axis kept). */
function reshapeTo(n: OnnxNode, c: Importer, x: Val & { shape: Dim[]; node: string }, target: Dim[]): void {
  const per = target.slice(1);
  const inPer = perSample(x.shape);
  // [C, h, w] → [C·h·w]: a flatten (with unknown h·w it still runs spec inference, its group fixed).
  if (inPer.length === 3 && per.length === 1) return void c.out(n, { op: 'flatten', input: x.node, inner: inPer[1] * inPer[2] }, target);
  if (per.some((d) => typeof d !== 'number') || inPer.some((d) => Number.isNaN(d))) throw new Unsupported('reshape with unknown sizes');
  const out = per as number[];
  if (out.join() === inPer.join()) return c.set(n, 0, { ...x });
  c.out(n, { op: 'reshape', input: x.node, shape: out }, target);
}

const Reshape: OpRule = (n, c) => {
  const x = c.get(n.inputs[0]);
  const t = konstOf(c, n.inputs[1]);
  if (!x.batched) {
    if (x.konst && t && t.values.every((d) => typeof d === 'number')) {
      // Known values: the dims with 0 copied and -1 resolved (e.g. [B, -1, -1] → [-1] in ViT's Expand shape).
      const dims = (t.values as number[]).map((d, i) => (d === 0 ? x.konst!.dims[i] ?? 1 : d));
      const rest = dims.filter((d) => d !== -1).reduce((p, q) => p * q, 1);
      const full = dims.map((d) => (d === -1 && rest > 0 ? x.konst!.values.length / rest : d));
      if (full.every((d) => Number.isInteger(d) && d >= 0)) return c.set(n, 0, { shape: full, batched: false, konst: { dims: full, values: x.konst.values } });
    }
    return c.set(n, 0, { shape: t ? t.values.map((d) => (typeof d === 'number' && d >= 0 ? d : null)) : null, batched: false });
  }
  const a = c.any(n.inputs[0]);
  if (!t) throw new Unsupported('the target shape is not a constant');
  const allowZero = c.attrI(n, 'allowzero', 0) === 1;
  const out: Dim[] = t.values.map((d, i) => (d === 0 && !allowZero ? a.shape[i] ?? null : d));
  if (a.lay) return reshapeLaidOut(n, c, a, out);
  // The batch axis must stay first: the batch symbol, or -1 with every other size known.
  if (out[0] === -1 && out.slice(1).every((d) => typeof d === 'number' && d > 0)) {
    const per = prodDims(a.shape.slice(1));
    if (per !== null && per === prodDims(out.slice(1))) out[0] = a.shape[0];
  }
  if (!same(out[0], a.shape[0])) return reshapeLaidOut(n, c, a, out);
  const minus = out.indexOf(-1);
  if (minus > 0) {
    const rest = prodDims(a.shape.slice(1));
    const other = prodDims(out.slice(1).filter((d) => d !== -1));
    if (rest === null || other === null || other === 0) throw new Unsupported('reshape -1 with unknown sizes');
    out[minus] = rest / other;
  }
  reshapeTo(n, c, a, out);
};

/**
 * The layout after reshaping a value whose batch axis may move to `target` (ONNX dims; -1 or
 * unknown: at most one, the rest of the factors): each target dim takes whole factors from the
 * left (before the unknown) or the right (after it), splitting a factor where a dim divides it;
 * the batch is taken alone where the target names it, or inside the unknown dim, or (a static
 * batch size) whole inside a known dim. Null: the reshape cannot be followed (the batch would be
 * split, or merged with a known size while the batch size is not known).
 */
function reshapeLayout(l: Layout, target: Dim[]): Layout | null {
  const f = [...l.factors];
  let batch = l.batch;
  const bdim = l.factors[l.batch];
  const known = (d: Dim): d is number => typeof d === 'number' && d >= 1;
  const isBatch = (d: Dim) => d !== null && d === bdim;
  // From the left.
  const left: number[] = [];
  let p = 0;
  let j = 0;
  for (; j < target.length; j++) {
    const d = target[j];
    if ((p === batch && isBatch(d)) || (d === 1 && p < f.length && p !== batch && f[p] === 1)) {
      left.push(1);
      p++;
      continue;
    }
    if (!known(d)) break;
    let prod = 1;
    let cnt = 0;
    while (prod !== d) {
      const x = f[p];
      if (p >= f.length || typeof x !== 'number' || x === 0) return null;
      if (d % (prod * x) === 0) prod *= x;
      else if (p === batch) return null;
      else {
        const need = d / prod;
        if (!Number.isInteger(need) || x % need !== 0) return null;
        f.splice(p, 1, need, x / need);
        if (batch > p) batch++;
        prod *= need;
      }
      p++;
      cnt++;
    }
    if (cnt === 0) {
      // A new axis of size 1.
      f.splice(p, 0, 1);
      if (batch >= p) batch++;
      p++;
      cnt = 1;
    }
    left.push(cnt);
  }
  if (j === target.length) return p === f.length ? { factors: f, batch, groups: left } : null;
  // From the right, down to the unknown dim.
  const right: number[] = [];
  let q = f.length; // factors [q, end) are taken
  for (let k = target.length - 1; k > j; k--) {
    const d = target[k];
    if ((q - 1 === batch && isBatch(d)) || (d === 1 && q - 1 >= p && q - 1 !== batch && f[q - 1] === 1)) {
      right.push(1);
      q--;
      continue;
    }
    if (!known(d)) return null;
    let prod = 1;
    let cnt = 0;
    while (prod !== d) {
      const x = f[q - 1];
      if (q - 1 < p || typeof x !== 'number' || x === 0) return null;
      if (d % (prod * x) === 0) prod *= x;
      else if (q - 1 === batch) return null;
      else {
        const need = d / prod;
        if (!Number.isInteger(need) || x % need !== 0) return null;
        f.splice(q - 1, 1, x / need, need);
        if (batch > q - 1) batch++;
        q++;
        prod *= need;
      }
      q--;
      cnt++;
    }
    if (cnt === 0) {
      f.splice(q, 0, 1);
      if (batch >= q) batch++;
      cnt = 1;
    }
    right.push(cnt);
  }
  if (q - p < 1) return null;
  return { factors: f, batch, groups: [...left, q - p, ...right.reverse()] };
}

/** Records a batched output in layout `l`: back in the graph's own form once the batch is first again. */
function settle(n: OnnxNode, c: Importer, node: string, l: Layout): void {
  const shape = logicalShape(l);
  if (l.batch === 0 && l.groups[0] === 1) {
    const per = shape.slice(1);
    const phys = physShape(l);
    if (per.length !== phys.length || per.some((d, i) => d !== phys[i])) {
      if (per.some((d) => typeof d !== 'number')) throw new Unsupported('reshape with unknown sizes');
      node = c.emit({ op: 'reshape', id: c.id(nodeId(n)), input: node, shape: per as number[] });
    }
    return c.set(n, 0, { shape, batched: true, node });
  }
  c.set(n, 0, { shape, batched: true, node, lay: l });
}

/** A reshape that moves the batch axis or reads a value whose batch axis moved (see Layout). */
function reshapeLaidOut(n: OnnxNode, c: Importer, x: Val & { shape: Dim[]; node: string }, target: Dim[]): void {
  const l = layoutOf(x);
  const to = reshapeLayout(l, target.map((d) => (d === -1 ? null : d)));
  if (!to) throw new Unsupported(`reshape [${x.shape.map((d) => d ?? '?').join(', ')}] → [${target.map((d) => d ?? '?').join(', ')}] splits or merges the batch axis with known sizes`);
  let node = x.node;
  const [from, phys] = [physShape(l), physShape(to)];
  if (from.length !== phys.length || from.some((d, i) => d !== phys[i])) {
    if (phys.some((d) => typeof d !== 'number')) throw new Unsupported('reshape with unknown sizes');
    node = c.emit({ op: 'reshape', id: c.id(`${nodeId(n)}:split`), input: node, shape: phys as number[] });
  }
  settle(n, c, node, to);
}

const Flatten: OpRule = (n, c) => {
  const x = c.act(n.inputs[0]);
  let k = c.attrI(n, 'axis', 1);
  if (k < 0) k += x.shape.length;
  if (k === 0) throw new Unsupported('flattens the batch axis');
  // Flatten(axis k) is [d0·…·d(k−1), dk·…]: per sample [dk·…] for k = 1, [d1·…·d(k−1), dk·…] beyond.
  reshapeTo(n, c, x, k === 1 ? [x.shape[0], prodDims(x.shape.slice(1))] : [x.shape[0], prodDims(x.shape.slice(1, k)), prodDims(x.shape.slice(k))]);
};

const Transpose: OpRule = (n, c) => {
  const x = c.any(n.inputs[0]);
  const l = layoutOf(x);
  const rank = l.groups.length;
  const perm = c.attrInts(n, 'perm') ?? [...Array(rank).keys()].reverse();
  if (perm.length !== rank || [...perm].sort((p, q) => p - q).some((p, i) => p !== i)) throw new Unsupported(`perm [${perm.join(', ')}] does not fit rank ${rank}`);
  // The factors in their new order; the graph node permutes those other than the batch.
  const fs = axisFactors(l);
  const order = perm.flatMap((p) => fs[p]);
  const to: Layout = { factors: order.map((f) => l.factors[f]), batch: order.indexOf(l.batch), groups: perm.map((p) => l.groups[p]) };
  const phys = order.filter((f) => f !== l.batch).map((f) => physIndex(l, f));
  const node = phys.every((p, i) => p === i) ? x.node : c.emit({ op: 'transpose', id: c.id(nodeId(n)), input: x.node, perm: phys });
  settle(n, c, node, to);
};

function squeezeLike(unsqueeze: boolean): OpRule {
  return (n, c) => {
    const x = c.get(n.inputs[0]);
    const axes = c.ints(n, 1, 'axes');
    if (!x.batched) {
      if (x.konst) {
        const dims = unsqueeze ? (x.konst.dims.length === 0 ? [1] : x.konst.dims) : (x.konst.dims.length === 1 && x.konst.values.length === 1 ? [] : x.konst.dims);
        return c.set(n, 0, { shape: dims, batched: false, konst: { dims, values: x.konst.values } });
      }
      if (!x.shape || !axes) return c.set(n, 0, { shape: null, batched: false });
      const r = unsqueeze ? x.shape.length + axes.length : x.shape.length;
      const ax = new Set(axes.map((a) => (a < 0 ? a + r : a)));
      let src = 0;
      const shape = unsqueeze ? Array.from({ length: r }, (_, i) => (ax.has(i) ? 1 : x.shape![src++])) : x.shape.filter((_, i) => !ax.has(i));
      return c.set(n, 0, { ...x, shape });
    }
    const a = c.act(n.inputs[0]);
    const r = unsqueeze ? a.shape.length + (axes?.length ?? 0) : a.shape.length;
    const ax = new Set((axes ?? a.shape.flatMap((d, i) => (d === 1 ? [i] : []))).map((d) => (d < 0 ? d + r : d)));
    if (ax.has(0)) throw new Unsupported('squeezes or inserts the batch axis');
    let src = 0;
    const shape = unsqueeze ? Array.from({ length: r }, (_, i) => (ax.has(i) ? 1 : a.shape[src++])) : a.shape.filter((_, i) => !ax.has(i));
    reshapeTo(n, c, a, shape);
  };
}

const Concat: OpRule = (n, c) => {
  const ins = n.inputs.map((i) => c.get(i));
  if (ins.every((v) => v.konst && !v.batched)) {
    const values = ins.flatMap((v) => v.konst!.values);
    return c.set(n, 0, { shape: [values.length], batched: false, konst: { dims: [values.length], values } });
  }
  if (!ins.every((v) => v.batched)) {
    if (ins.every((v) => !v.batched)) return c.set(n, 0, { shape: null, batched: false });
    throw new Unsupported('joins activations with constants');
  }
  const acts = n.inputs.map((i) => c.act(i));
  const rank = acts[0].shape.length;
  const axis = c.axis(c.attrI(n, 'axis', 0), rank, 'concatenation');
  const shape = [...acts[0].shape];
  const parts = acts.map((a) => a.shape[axis + 1]);
  shape[axis + 1] = parts.every((d) => typeof d === 'number') ? (parts as number[]).reduce((p, q) => p + q, 0) : null;
  c.out(n, { op: 'concat', inputs: acts.map((a) => a.node), axis }, shape);
};

const Split: OpRule = (n, c) => {
  const x = c.act(n.inputs[0]);
  const rank = x.shape.length;
  const axis = c.axis(c.attrI(n, 'axis', 0), rank, 'split');
  const len = x.shape[axis + 1];
  let sizes = c.ints(n, 1, 'split');
  if (!sizes) {
    if (typeof len !== 'number') throw new Unsupported('split of an axis of unknown length');
    const k = n.outputs.length;
    const each = Math.ceil(len / k);
    sizes = Array.from({ length: k }, (_, i) => Math.max(0, Math.min(each, len - i * each)));
  }
  let start = 0;
  sizes.forEach((s, i) => {
    const shape = [...x.shape];
    shape[axis + 1] = s;
    const id = c.id(nodeId(n, i));
    c.emit({ op: 'slice', id, input: x.node, axis, start, end: start + s });
    c.set(n, i, { shape, batched: true, node: id });
    start += s;
  });
};

const Slice: OpRule = (n, c) => {
  const d = c.get(n.inputs[0]);
  const starts = c.ints(n, 1, 'starts');
  const ends = c.ints(n, 2, 'ends');
  const axesIn = c.ints(n, 3, 'axes');
  const steps = c.ints(n, 4, 'steps');
  if (!starts || !ends) throw new Unsupported('starts/ends unknown');
  if (!d.batched) {
    const k = d.konst;
    if (!k || k.dims.length !== 1 || (steps && steps[0] !== 1)) return c.set(n, 0, { shape: null, batched: false });
    const len = k.values.length;
    const clamp = (v: number) => Math.max(0, Math.min(len, v < 0 ? v + len : v));
    const values = k.values.slice(clamp(starts[0]), clamp(ends[0]));
    return c.set(n, 0, { shape: [values.length], batched: false, konst: { dims: [values.length], values } });
  }
  const x = c.any(n.inputs[0]);
  const rank = x.shape.length;
  const axes = axesIn ?? starts.map((_, i) => i);
  let node = x.node;
  const l = x.lay ? { ...x.lay, factors: [...x.lay.factors] } : canonical(x.shape);
  const shape = [...x.shape];
  axes.forEach((a0, i) => {
    if (steps && steps[i] !== 1) throw new Unsupported(`step ${steps[i]}`);
    const a = a0 < 0 ? a0 + rank : a0;
    const len = shape[a];
    if (typeof len !== 'number') throw new Unsupported('slice of an axis of unknown length');
    const clamp = (v: number) => Math.max(0, Math.min(len, v < 0 ? v + len : v));
    const [s, e] = [clamp(starts[i]), Math.max(clamp(starts[i]), clamp(ends[i]))];
    if (s === 0 && e === len) return;
    // Where the batch axis moved (attention's q/k/v split of [T, B, 3E]) the axis must be one
    // plain axis of the graph node.
    const ax = x.lay ? plainAxis(l, a) : c.axis(a, rank, 'slice');
    if (ax === null) throw new Unsupported('slice along an axis that holds the batch');
    shape[a] = e - s;
    l.factors[axisFactors(l)[a][0]] = e - s;
    node = c.emit({ op: 'slice', id: c.id(nodeId(n)), input: node, axis: ax, start: s, end: e });
  });
  c.set(n, 0, x.lay ? { shape, batched: true, node, lay: l } : { shape, batched: true, node });
};

const Gather: OpRule = (n, c) => {
  const d = c.get(n.inputs[0]);
  const idx = konstOf(c, n.inputs[1]);
  if (!d.batched) {
    if (!d.konst || !idx || c.attrI(n, 'axis', 0) !== 0 || d.konst.dims.length !== 1) {
      if (d.init) throw new Unsupported('an embedding lookup (Gather from a parameter)');
      return c.set(n, 0, { shape: null, batched: false });
    }
    const vs = d.konst.values;
    const picked = idx.values.map((i) => (typeof i === 'number' ? vs[i < 0 ? i + vs.length : i] ?? null : null));
    const dims = idx.dims.length === 0 ? [] : [picked.length];
    return c.set(n, 0, { shape: dims, batched: false, konst: { dims, values: picked } });
  }
  const x = c.act(n.inputs[0]);
  if (!idx || idx.values.some((v) => typeof v !== 'number')) throw new Unsupported('indices are not constants');
  const rank = x.shape.length;
  const axis = c.axis(c.attrI(n, 'axis', 0), rank, 'gather');
  const len = x.shape[axis + 1];
  const index = (idx.values as number[]).map((i) => (i < 0 && typeof len === 'number' ? i + len : i));
  c.out(n, { op: 'gather', input: x.node, axis, index, indexShape: idx.dims }, [...x.shape.slice(0, axis + 1), ...idx.dims, ...x.shape.slice(axis + 2)]);
};

function pool(kind: 'max' | 'avg'): OpRule {
  return (n, c) => {
    const x = c.act(n.inputs[0]);
    if (x.shape.length !== 4) throw new Unsupported('only 2-D pooling runs');
    if (n.outputs.length > 1 && n.outputs[1]) throw new Unsupported('pooling indices output');
    const kernel = c.attrInts(n, 'kernel_shape') ?? [];
    if (kernel.length !== 2) throw new Unsupported('kernel_shape unknown');
    const strides = c.attrInts(n, 'strides') ?? [1, 1];
    const dil = c.attrInts(n, 'dilations') ?? [1, 1];
    const pads = convPads(n, c, x.shape, kernel, strides, dil);
    const ceil = c.attrI(n, 'ceil_mode', 0) === 1;
    const shape: Dim[] = [x.shape[0], x.shape[1], windowOut(x.shape[2], kernel[0], strides[0], pads[0], pads[2], dil[0], ceil), windowOut(x.shape[3], kernel[1], strides[1], pads[1], pads[3], dil[1], ceil)];
    c.out(n, {
      op: 'pool2d', input: x.node, kind, kernel: [kernel[0], kernel[1]], stride: [strides[0], strides[1]], padding: pads,
      ...(dil.some((d) => d !== 1) ? { dilation: [dil[0], dil[1]] as [number, number] } : {}),
      ...(ceil ? { ceilMode: true } : {}),
      ...(kind === 'avg' && c.attrI(n, 'count_include_pad', 0) === 1 ? { countIncludePad: true } : {}),
    }, shape);
  };
}

function globalPool(kind: 'max' | 'avg'): OpRule {
  return (n, c) => {
    const x = c.act(n.inputs[0]);
    c.out(n, { op: 'globalpool', input: x.node, kind }, [x.shape[0], x.shape[1], ...x.shape.slice(2).map(() => 1)]);
  };
}

function reduce(fn: ReduceFn): OpRule {
  return (n, c) => {
    const x = c.get(n.inputs[0]);
    const keep = c.attrI(n, 'keepdims', 1) === 1;
    const given = n.inputs[1] ? c.ints(n, 1, 'axes') : c.attrInts(n, 'axes');
    if (!x.batched) return c.set(n, 0, { shape: null, batched: false });
    const a = c.act(n.inputs[0]);
    const rank = a.shape.length;
    let axes = given?.map((d) => (d < 0 ? d + rank : d));
    if (!axes || axes.length === 0) {
      if (c.attrI(n, 'noop_with_empty_axes', 0) === 1) return c.set(n, 0, { ...a });
      axes = [...a.shape.keys()];
    }
    if (axes.includes(0)) throw new Unsupported('reduces over the batch axis');
    const shape = keep ? a.shape.map((d, i) => (axes!.includes(i) ? 1 : d)) : a.shape.filter((_, i) => !axes!.includes(i));
    c.out(n, { op: 'reduce', input: a.node, fn, axes: axes.map((d) => d - 1), keepdims: keep }, shape);
  };
}

function softmax(log: boolean): OpRule {
  return (n, c) => {
    const x = c.any(n.inputs[0]);
    const rank = x.shape.length;
    const opset = c.model.opsets.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 13;
    const axis = c.attrI(n, 'axis', opset >= 13 ? -1 : 1);
    const ax = axis < 0 ? axis + rank : axis;
    if (opset < 13 && ax !== rank - 1) throw new Unsupported('opset < 13 softmax over several axes');
    const pax = x.lay ? plainAxis(x.lay, ax) : c.axis(ax, rank, 'softmax');
    if (pax === null) throw new Unsupported('softmax along an axis that holds the batch');
    c.out(n, { op: 'softmax', input: x.node, axis: pax, log }, x.shape, undefined, x.lay);
  };
}

const Pad: OpRule = (n, c) => {
  const x = c.act(n.inputs[0]);
  const mode = n.attributes.get('mode')?.s ?? 'constant';
  if (mode !== 'constant') throw new Unsupported(`pad mode ${mode}`);
  const pads = c.ints(n, 1, 'pads');
  if (!pads || n.inputs[3]) throw new Unsupported('pads unknown or per-axis');
  const r = pads.length / 2;
  if (pads[0] !== 0 || pads[r] !== 0) throw new Unsupported('pads the batch axis');
  const value = n.inputs[2] ? scalarInput(n, c, 2) ?? 0 : c.attrF(n, 'value', 0);
  const shape = x.shape.map((d, i) => (typeof d === 'number' ? d + pads[i] + pads[i + r] : d));
  c.out(n, { op: 'pad', input: x.node, pads: [...pads.slice(1, r), ...pads.slice(r + 1)], value }, shape);
};

const Resize: OpRule = (n, c) => {
  const x = c.act(n.inputs[0]);
  if (x.shape.length !== 4) throw new Unsupported('only 2-D resizing runs');
  const numbers = (i: number): number[] | null => {
    const name = n.inputs[i];
    if (!name) return null;
    const v = c.get(name);
    const k = v.konst?.values ?? (v.init ? [...(c.init(v.init.name).data ?? [])] : null);
    return k && k.length > 0 && k.every((d) => typeof d === 'number') ? (k as number[]) : null;
  };
  const upsample = n.opType === 'Upsample';
  const scales = upsample ? numbers(1) ?? n.attributes.get('scales')?.floats ?? null : numbers(2);
  const sizes = upsample ? null : numbers(3);
  let size: [number, number];
  if (sizes) size = [sizes[2], sizes[3]];
  else if (scales && typeof x.shape[2] === 'number' && typeof x.shape[3] === 'number') size = [Math.floor(x.shape[2] * scales[2]), Math.floor(x.shape[3] * scales[3])];
  else throw new Unsupported('output size unknown');
  if ((scales && (scales[0] !== 1 || scales[1] !== 1)) || (sizes && sizes[1] !== x.shape[1])) throw new Unsupported('resizes the batch or channel axis');
  const mode = n.attributes.get('mode')?.s ?? 'nearest';
  const ctm = n.attributes.get('coordinate_transformation_mode')?.s ?? 'half_pixel';
  if (mode === 'nearest') {
    const nm = n.attributes.get('nearest_mode')?.s ?? 'round_prefer_floor';
    if (!upsample && (ctm !== 'asymmetric' || nm !== 'floor')) throw new Unsupported(`nearest resize with ${ctm}/${nm}`);
    return void c.out(n, { op: 'resize', input: x.node, mode: 'nearest', size, alignCorners: false }, [x.shape[0], x.shape[1], ...size]);
  }
  if (mode !== 'linear' || !['half_pixel', 'pytorch_half_pixel', 'align_corners'].includes(ctm)) throw new Unsupported(`resize mode ${mode}/${ctm}`);
  c.out(n, { op: 'resize', input: x.node, mode: 'linear', size, alignCorners: ctm === 'align_corners' }, [x.shape[0], x.shape[1], ...size]);
};

/**
 * Expand: of a batched value to a shape it already has (a no-op); of a parameter or constant to
 * the batch ([N, 1, D] from [1, 1, D]: ViT's class token) — a `broadcast` node, one copy per
 * sample. Expanding other axes is not supported.
 */
const Expand: OpRule = (n, c) => {
  const x = c.get(n.inputs[0]);
  const t = konstOf(c, n.inputs[1]);
  if (!t) throw new Unsupported('the target shape is not a constant');
  const target = t.values;
  if (x.batched) {
    const a = c.act(n.inputs[0]);
    const off = a.shape.length - target.length;
    if (off >= 0 && target.every((d, i) => d === 1 || same(d, a.shape[i + off]))) return c.set(n, 0, { ...a });
    throw new Unsupported('expands a batched value');
  }
  if (!x.shape) return c.set(n, 0, { shape: null, batched: false });
  const b = c.batch;
  const padded = [...Array<Dim>(Math.max(0, target.length - x.shape.length)).fill(1), ...x.shape];
  if (!b || target.length === 0 || target.length !== padded.length || !same(target[0], b.dim) || padded[0] !== 1) {
    return c.set(n, 0, { shape: broadcastDims([x.shape, target]), batched: false });
  }
  if (target.slice(1).some((d, i) => d !== 1 && !same(d, padded[i + 1]))) throw new Unsupported('expands axes other than the batch');
  const v = c.valueNode({ ...x, shape: padded }, n, target.length);
  c.out(n, { op: 'broadcast', inputs: [v, b.node] }, [b.dim, ...padded.slice(1)]);
};

/** Element-wise on known values (shape arithmetic), with a length-1 side broadcast; else unknown. */
function konstMap(c: Importer, n: OnnxNode, f: (...xs: Dim[]) => Dim): void {
  const ins = n.inputs.map((i) => c.get(i));
  if (ins.some((v) => v.batched)) throw new Unsupported('computes on activations');
  const ks = ins.map((v) => v.konst);
  const len = Math.max(...ks.map((k) => k?.values.length ?? 0));
  if (ks.some((k) => !k || (k.values.length !== len && k.values.length !== 1))) return c.set(n, 0, { shape: null, batched: false });
  const big = ks.find((k) => k!.values.length === len)!;
  const values = Array.from({ length: len }, (_, i) => f(...ks.map((k) => k!.values[k!.values.length === 1 ? 0 : i])));
  c.set(n, 0, { shape: [...big.dims], batched: false, konst: { dims: [...big.dims], values } });
}

/** Equal of dims: a symbolic dimension (the batch) is never negative, so it differs from -1. */
const Equal: OpRule = (n, c) => konstMap(c, n, (p, q) => {
  if (typeof p === 'number' && typeof q === 'number') return p === q ? 1 : 0;
  if (typeof p === 'string' && typeof q === 'string' && p === q) return 1;
  if ((typeof p === 'string' && typeof q === 'number' && q < 0) || (typeof q === 'string' && typeof p === 'number' && p < 0)) return 0;
  return null;
});

const Where: OpRule = (n, c) => konstMap(c, n, (k, p, q) => (k === null || typeof k !== 'number' ? null : k !== 0 ? p : q));

const passThrough: OpRule = (n, c) => {
  const x = c.get(n.inputs[0]);
  // Identity of an initializer: the exporter's de-duplication alias carries the PyTorch name.
  if (n.opType === 'Identity' && x.init && !x.batched) c.set(n, 0, { ...x, init: { name: x.init.name, alias: n.outputs[0] } });
  else c.set(n, 0, { ...x });
  for (let i = 1; i < n.outputs.length; i++) c.set(n, i, { shape: null, batched: false });
};

const Dropout: OpRule = (n, c) => {
  const x = c.get(n.inputs[0]);
  if (!x.batched) return passThrough(n, c);
  const p = n.inputs[1] ? scalarInput(n, c, 1) ?? 0.5 : c.attrF(n, 'ratio', 0.5);
  c.out(n, { op: 'dropout', input: x.node!, p }, x.shape, undefined, x.lay);
  for (let i = 1; i < n.outputs.length; i++) c.set(n, i, { shape: null, batched: false });
};

const Constant: OpRule = (n, c) => {
  const at = n.attributes;
  const t = at.get('value')?.t;
  let konst: Konst | undefined;
  let shape: Dim[] | null = null;
  if (t) {
    shape = [...t.dims];
    const v = t.ints ?? (t.data ? [...t.data] : null);
    if (v && v.length <= 4096) konst = { dims: [...t.dims], values: v };
  } else if (at.get('value_int')) {
    shape = [];
    konst = { dims: [], values: [at.get('value_int')!.i ?? 0] };
  } else if (at.get('value_ints')) {
    const v = at.get('value_ints')!.ints ?? [];
    shape = [v.length];
    konst = { dims: [v.length], values: v };
  } else if (at.get('value_float')) {
    shape = [];
    konst = { dims: [], values: [at.get('value_float')!.f ?? 0] };
  } else if (at.get('value_floats')) {
    const v = at.get('value_floats')!.floats ?? [];
    shape = [v.length];
    konst = { dims: [v.length], values: v };
  }
  c.set(n, 0, { shape, batched: false, konst });
};

const Shape: OpRule = (n, c) => {
  const x = c.get(n.inputs[0]);
  if (!x.shape) return c.set(n, 0, { shape: null, batched: false });
  const r = x.shape.length;
  let start = c.attrI(n, 'start', 0);
  let end = c.attrI(n, 'end', r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  const values = x.shape.slice(Math.max(0, start), Math.min(r, end)).map((d, i) => (d === null ? `?${n.inputs[0]}:${i + start}` : d));
  c.set(n, 0, { shape: [values.length], batched: false, konst: { dims: [values.length], values } });
};

const Size: OpRule = (n, c) => {
  const x = c.get(n.inputs[0]);
  const p = x.shape ? prodDims(x.shape) : null;
  c.set(n, 0, { shape: [], batched: false, konst: p === null ? undefined : { dims: [], values: [p] } });
};

const Cast: OpRule = (n, c) => {
  const x = c.get(n.inputs[0]);
  c.set(n, 0, x.batched ? { ...x } : { shape: x.shape, batched: false, konst: x.konst });
};

const ConstantOfShape: OpRule = (n, c) => {
  const s = konstOf(c, n.inputs[0]);
  const value = n.attributes.get('value')?.t;
  const v = value?.ints?.[0] ?? value?.data?.[0] ?? 0;
  if (!s || s.values.some((d) => typeof d !== 'number') || (prodDims(s.values) ?? Infinity) > 4096) return c.set(n, 0, { shape: s ? s.values.map((d) => (typeof d === 'number' ? d : null)) : null, batched: false });
  const dims = s.values as number[];
  c.set(n, 0, { shape: dims, batched: false, konst: { dims, values: new Array(prodDims(dims)).fill(v) } });
};

/** The op rules, by ONNX op type (default domain). Everything else becomes an opaque node. */
export const ONNX_OPS: Record<string, OpRule> = {
  Conv, Gemm, MatMul, BatchNormalization, InstanceNormalization, LayerNormalization,
  Relu: (n, c) => {
    const x = c.any(n.inputs[0]);
    c.out(n, { op: 'relu', input: x.node }, x.shape, undefined, x.lay);
  },
  Tanh: (n, c) => {
    const x = c.any(n.inputs[0]);
    c.out(n, { op: 'tanh', input: x.node }, x.shape, undefined, x.lay);
  },
  Sigmoid: unary('sigmoid'),
  Gelu: (n, c) => unary(n.attributes.get('approximate')?.s === 'tanh' ? 'gelu-tanh' : 'gelu')(n, c),
  Erf: unary('erf'),
  LeakyRelu: unary('leakyrelu', (n, c) => ({ alpha: c.attrF(n, 'alpha', 0.01) })),
  Elu: unary('elu', (n, c) => ({ alpha: c.attrF(n, 'alpha', 1) })),
  Selu: unary('selu'),
  Softplus: unary('softplus'),
  Mish: unary('mish'),
  HardSigmoid: unary('hardsigmoid', (n, c) => ({ alpha: c.attrF(n, 'alpha', 0.2), beta: c.attrF(n, 'beta', 0.5) })),
  HardSwish: unary('hardswish'),
  Exp: unary('exp'), Log: unary('log'), Abs: unary('abs'), Neg: unary('neg'), Sqrt: unary('sqrt'), Reciprocal: unary('reciprocal'), Sin: unary('sin'), Cos: unary('cos'),
  Clip: unary('clip', (n, c) => ({ alpha: scalarInput(n, c, 1) ?? c.attrF(n, 'min', -Infinity), beta: scalarInput(n, c, 2) ?? c.attrF(n, 'max', Infinity) })),
  Add: binary('add'), Sub: binary('sub'), Mul: binary('mul'), Div: binary('div'), Pow: binary('pow'), PRelu: binary('prelu'),
  Max: variadic('max'), Min: variadic('min'), Sum: variadic('add'),
  Softmax: softmax(false), LogSoftmax: softmax(true),
  Flatten, Reshape, Transpose, Squeeze: squeezeLike(false), Unsqueeze: squeezeLike(true), Concat, Split, Slice, Gather,
  MaxPool: pool('max'), AveragePool: pool('avg'), GlobalAveragePool: globalPool('avg'), GlobalMaxPool: globalPool('max'),
  ReduceMean: reduce('mean'), ReduceSum: reduce('sum'), ReduceMax: reduce('max'), ReduceMin: reduce('min'), ReduceSumSquare: reduce('sumsquare'), ReduceL2: reduce('l2'),
  Pad, Resize, Upsample: Resize,
  Identity: passThrough, Dropout, Cast, CastLike: Cast, Constant, Shape, Size, ConstantOfShape,
  Expand, Equal, Where,
};

/**
 * The nodes in file order when that is topological (as ONNX requires; the order also decides
 * permutation ids), else a topological order that stays as close to file order as possible.
 */
function topoOrder(nodes: OnnxNode[]): OnnxNode[] {
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => n.outputs.forEach((o) => { if (o && !producer.has(o)) producer.set(o, i); }));
  if (nodes.every((n, i) => n.inputs.every((inp) => (producer.get(inp) ?? -1) < i))) return nodes;
  const waiting = nodes.map(() => 0);
  const consumers = nodes.map(() => [] as number[]);
  nodes.forEach((n, i) => {
    for (const inp of new Set(n.inputs)) {
      const p = producer.get(inp);
      if (p !== undefined && p !== i) {
        waiting[i]++;
        consumers[p].push(i);
      }
    }
  });
  // Ready nodes kept sorted by file index: always take the earliest.
  const ready: number[] = [];
  waiting.forEach((w, i) => { if (w === 0) ready.push(i); });
  const order: OnnxNode[] = [];
  const done = new Uint8Array(nodes.length);
  while (ready.length) {
    const i = ready.shift()!;
    done[i] = 1;
    order.push(nodes[i]);
    for (const c of consumers[i]) {
      if (--waiting[c] === 0) {
        let lo = 0;
        while (lo < ready.length && ready[lo] < c) lo++;
        ready.splice(lo, 0, c);
      }
    }
  }
  // A cycle (invalid ONNX): keep file order for the rest; their inputs read as unknown.
  nodes.forEach((n, i) => { if (!done[i]) order.push(n); });
  return order;
}

/** Renames a graph's tensors (and flips linear layouts where the PyTorch tensor is the transpose). */
function renameTensors(graph: ModelGraph, names: Map<string, { name: string; transposed: boolean }>, moduleIds = true): ModelGraph {
  const nodes = graph.nodes.map((n) => {
    const m: Record<string, unknown> = { ...n };
    for (const k of ['weight', 'bias', 'runningMean', 'runningVar', 'name'] as const) {
      const v = m[k];
      if (typeof v !== 'string') continue;
      const to = names.get(v);
      if (!to) continue;
      m[k] = to.name;
      if (k === 'weight' && n.op === 'linear' && to.transposed) {
        if (n.weightLayout === 'in-out') delete m.weightLayout;
        else m.weightLayout = 'in-out';
      }
    }
    return m as unknown as GraphNode;
  });
  // A linear/conv whose weight now has a PyTorch name `<module>.weight` takes the module as its
  // id (the permutation id its output opens), as built models do.
  if (!moduleIds) return { nodes };
  const taken = new Set(nodes.map((n) => n.id));
  const ids = new Map<string, string>();
  for (const n of nodes) {
    if ((n.op !== 'linear' && n.op !== 'conv2d') || !n.weight.endsWith('.weight')) continue;
    const want = n.weight.slice(0, -'.weight'.length);
    if (want === n.id || taken.has(want)) continue;
    taken.add(want);
    ids.set(n.id, want);
  }
  if (ids.size === 0) return { nodes };
  const re = (id: string) => ids.get(id) ?? id;
  return {
    nodes: nodes.map((n) => {
      const m: Record<string, unknown> = { ...n, id: re(n.id) };
      if ('input' in n) m.input = re(n.input);
      if ('inputs' in n) m.inputs = n.inputs.map(re);
      return m as unknown as GraphNode;
    }),
  };
}

/** 2-D transpose of an initializer's values. */
function transposed2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = data[i * cols + j];
  return out;
}

/** The graph's channel flow; a graph the file's values make inconsistent is a FormatError naming the node. */
function checkedFlow(model: OnnxModel, graph: ModelGraph): GraphFlow {
  try {
    return graphFlow(graph);
  } catch (e) {
    // A graph the file's values make inconsistent (the graph's own checks); anything else is a bug.
    if (!(e instanceof InputError)) throw e;
    throw new FormatError(model.source, 'graph', `the graph does not fit together: ${describeError(e).replace(/^ModelGraph: /, '')}`, { label: 'graph', cause: e });
  }
}

/**
 * Imports an ONNX model as a ModelGraph (see the module comment). Ops the graph cannot express
 * become opaque nodes, listed in `opaque`: spec inference still works, running refuses.
 */
export function importOnnx(model: OnnxModel, opts: OnnxImportOptions = {}): ImportedOnnx {
  const c = new Importer(model, opts);
  for (const t of model.initializers.values()) {
    const v: Val = { shape: [...t.dims], batched: false };
    if (isFloatTensor(t)) v.init = { name: t.name, alias: t.name };
    if (t.ints && t.ints.length <= 4096) v.konst = { dims: [...t.dims], values: [...t.ints] };
    else if (t.data && t.data.length <= 16 && !v.init) v.konst = { dims: [...t.dims], values: [...t.data] };
    c.vals.set(t.name, v);
  }
  model.inputs.forEach((inp, k) => {
    const given = opts.inputShapes?.[inp.name] ?? inp.shape;
    // Unnamed dynamic dims get a token so equal dims still compare equal downstream.
    const shape = given ? given.map((d, i) => (d === null ? `?${inp.name}:${i}` : d)) : null;
    const id = c.id(inp.name);
    const why = !shape || shape.length < 2 ? `input "${inp.name}" has ${shape ? `rank ${shape.length}` : 'an unknown rank'} (give its shape with --input-shape)` : k > 0 ? 'a second network input' : null;
    if (why === null) {
      c.emit({ op: 'input', id, shape: perSample(shape!) });
      c.batch = { dim: shape![0], node: id };
    } else {
      // The graph has one input of known rank: other sources are kept fixed by spec inference.
      c.opaque.push({ node: inp.name, opType: 'input', reason: why });
      c.emit({ op: 'opaque', id, inputs: [], opType: 'input', reason: why, shape: shape ? perSample(shape) : [Number.NaN] });
    }
    c.vals.set(inp.name, { shape, batched: true, node: id });
  });
  for (const node of topoOrder(model.nodes)) {
    const rule = node.domain === '' || node.domain === 'ai.onnx' ? ONNX_OPS[node.opType] : undefined;
    try {
      if (!rule) throw new Unsupported(`op ${node.domain ? node.domain + '.' : ''}${node.opType} is not supported`);
      rule(node, c);
    } catch (e) {
      if (!(e instanceof Unsupported)) throw e;
      c.makeOpaque(node, e.message);
    }
  }
  for (const o of model.outputs) {
    const v = c.vals.get(o.name);
    if (!v?.batched || !v.node) continue;
    let input = v.node;
    if (v.lay) {
      // The graph's outputs are batch first: one whose batch axis stayed elsewhere cannot be given.
      const l = v.lay;
      const reason = `output "${o.name}" has its batch axis at position ${axisFactors(l).findIndex((fs) => fs.includes(l.batch))}`;
      c.opaque.push({ node: o.name, opType: 'output', reason });
      input = c.emit({ op: 'opaque', id: c.id(`${o.name}:moved`), inputs: [v.node], opType: 'output', reason, shape: physShape(l).map((d) => (typeof d === 'number' ? d : Number.NaN)) });
    }
    c.emit({ op: 'output', id: c.id(`${o.name}:output`), input });
  }
  // Float initializers no node uses as a parameter are still part of the model's state.
  const used = new Set(c.uses.map((u) => u.init));
  for (const t of model.initializers.values()) {
    if (isFloatTensor(t) && !used.has(t.name)) {
      c.uses.push({ init: t.name, alias: t.name, role: 'other', node: null, pytorchTransposed: false });
      c.aliasOf.set(t.name, t.name);
    }
  }
  const built: ModelGraph = { nodes: c.nodes };
  // Under initializer names aliases of one initializer are one tensor (tied: one permutation).
  const initializerGraph = renameTensors(built, new Map([...c.aliasOf].map(([alias, init]) => [alias, { name: init, transposed: false }])), false);
  const initializerFlow = checkedFlow(model, initializerGraph);

  const { nameMap, byAlias } = resolveNames(model, c.uses, opts.checkpoint);
  const names = new Map<string, { name: string; transposed: boolean }>();
  for (const [alias, m] of byAlias) names.set(alias, m.via !== 'unmapped' ? { name: m.name, transposed: m.transposed } : { name: m.initializer, transposed: false });
  const graph = renameTensors(built, names);
  const tensors: StateDict = new Map();
  for (const [alias, to] of names) {
    const t = model.initializers.get(c.aliasOf.get(alias) ?? alias);
    if (!t?.data || tensors.has(to.name)) continue;
    const data = to.transposed && t.dims.length === 2 ? transposed2d(t.data, t.dims[0], t.dims[1]) : t.data;
    const shape = to.transposed && t.dims.length === 2 ? [t.dims[1], t.dims[0]] : [...t.dims];
    tensors.set(to.name, { shape, data });
  }
  return { graph, initializerGraph, tensors, nameMap, unfolded: c.unfolded, opaque: c.opaque, flow: checkedFlow(model, graph), initializerFlow };
}


export interface OnnxInferOptions extends OnnxImportOptions {
  /**
   * Keys of the returned `spec`: 'initializer' (the ONNX initializer names) or 'pytorch'
   * (checkpoint names, see `nameMap`). Default: 'pytorch' when `checkpoint` is given, else
   * 'initializer'.
   */
  names?: 'initializer' | 'pytorch';
}

export interface OnnxSpecResult extends FlowResult {
  /** Keyed as `names` says. */
  names: 'initializer' | 'pytorch';
  /** Keyed by initializer name, ONNX layouts: fits `onnxInitializersToState(model)`. */
  initializerSpec: PermutationSpec;
  /** Keyed by PyTorch name, PyTorch layouts (transposed tensors have their axes reversed). */
  pytorchSpec: PermutationSpec;
  nameMap: OnnxNameMapping[];
  /** The imported model (its graph runs unless `opaque` lists nodes). */
  imported: ImportedOnnx;
}

/** The permutation spec of an ONNX model: `deriveSpec` of its imported graph, with the report. */
export function inferSpecFromOnnx(model: OnnxModel, opts: OnnxInferOptions = {}): OnnxSpecResult {
  const imported = importOnnx(model, opts);
  const names = opts.names ?? (opts.checkpoint ? 'pytorch' : 'initializer');
  const flow = names === 'pytorch' ? imported.flow : imported.initializerFlow;
  const warnings = [...flow.warnings];
  if (names === 'pytorch') {
    for (const m of imported.nameMap) {
      if (m.via !== 'unmapped') continue;
      const axes = imported.flow.spec.axes[m.initializer];
      if (axes?.some((a) => a !== null)) warnings.push(`initializer "${m.initializer}" is permuted but has no PyTorch name${opts.checkpoint ? ' in the checkpoint' : ''}; the PyTorch-keyed spec keeps the initializer name`);
    }
  }
  return { ...flow, warnings, names, initializerSpec: imported.initializerFlow.spec, pytorchSpec: imported.flow.spec, nameMap: imported.nameMap, imported };
}
