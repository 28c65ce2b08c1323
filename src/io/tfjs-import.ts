/**
 * TF.js layers model → ModelGraph: translates a Keras topology (as `parseTfjsModelJson` read it)
 * into the project's own model description under PyTorch names and layouts, so an imported
 * network runs forward and backward on the autodiff core and its permutation spec is
 * `graphFlow` of the same graph — one description for built and imported models.
 *
 * Each Keras layer class is one small function of `TFJS_LAYERS` (module level): it reads its
 * inputs' values and emits graph nodes, or throws `Unsupported` with the reason — the layer then
 * becomes an `opaque` graph node (spec inference goes through it with its channel groups fixed;
 * running refuses, naming it). Unknown classes are opaque too.
 *
 * Names and layouts. Dense `<layer>/kernel` [in, out] → Linear `<layer>.weight` [out, in];
 * Conv `<layer>/kernel` [kh, kw, in, out] → `<layer>.weight` [out, in, kh, kw] (Conv1D as a
 * conv2d of height 1: [out, in, 1, k]); DepthwiseConv2D [kh, kw, in, m] → [in·m, 1, kh, kw] with
 * groups = in; SeparableConv2D as that depthwise conv (`<layer>.depthwise.weight`) and a 1×1 conv
 * (`<layer>.pointwise.weight`); BatchNormalization gamma/beta/moving_mean/moving_variance → weight/bias/
 * running_mean/running_var (an absent gamma/beta is filled with 1/0); LayerNormalization
 * gamma/beta → weight/bias. `params` lists each conversion; `tfjsToPytorchLayout` applies them and
 * `pytorchToTfjsLayout` undoes them.
 *
 * Channels-last. Keras image values are [H, W, C] per sample; the graph holds each value in an
 * internal axis order and the importer inserts `transpose` nodes only where a layer needs another
 * one (convs and pools want [C, H, W], Dense wants the features last, Reshape wants Keras order).
 * The network input is taken channels-first ([C, H, W], as every model of this library and the
 * datasets it reads) unless `inputLayout: 'channels-last'` is given; image outputs leave the
 * graph in the same layout as the input.
 *
 * Flatten. Keras flattens [h, w, C] as (h, w, c): a channel is the LAST factor of the flattened
 * axis, which a spec's `{perm, inner}` entry (channel-major) cannot express. The importer
 * therefore flattens channel-major (feature c·h·w + s, as PyTorch) and reorders the input rows of
 * the Dense kernel that reads it (PyTorch feature c·h·w + s ← Keras row s·C + c): the function is
 * exactly Keras's and the group stays permutable as `{perm, inner: h·w}`. (Transposing back to
 * channels-last before a plain flatten would keep the Keras kernel as it is but fix the group.)
 * A flattened value read by anything but a Dense is put back into Keras order first.
 *
 * Not expressed (opaque): layers called more than once (shared weights), a second network input,
 * 3-D convolutions and pools, 'same' padding with stride > 1 on a map of unknown size, Embedding,
 * recurrent and custom layers.
 */
import { graphFlow, type BinaryFn, type GraphFlow, type GraphNode, type ModelGraph, type UnaryFn } from '../models/graph.js';
import type { FlowResult } from '../permutation/flow.js';
import { InputError } from '../errors.js';
import { FormatError, describeError } from './errors.js';
import type { ArrayRecord, StateDict } from './records.js';
import type { KerasLayer, KerasTopology } from './tfjs.js';

/** How one Keras weight becomes a PyTorch-layout tensor. */
export interface TfjsParamPlan {
  /** The Keras weight; null for a tensor the Keras layer does not store ('fill'). */
  keras: string | null;
  pytorch: string;
  /**
   * 'dense': [in, out] → [out, in]; 'conv': [k…, in, out] (viewed as `view`) → [out, in, k…];
   * 'copy': unchanged; 'fill': a constant tensor (`fill`) for an absent γ (1) or β (0).
   */
  kind: 'dense' | 'conv' | 'copy' | 'fill';
  /** Dense after a channels-last Flatten: input rows reordered (s, c) → (c, s). */
  reorder?: { spatial: number; channels: number };
  /** 'conv': the Keras kernel read as this [k…, in, out] shape (Conv1D: [1, k, in, out]; depthwise: [kh, kw, 1, in·m]). */
  view?: number[];
  fill?: { value: number; shape: number[] };
}

export interface ImportTfjsOptions {
  /**
   * Layout of image inputs (Keras [H, W, C] per sample) in the graph: 'channels-first' (default:
   * [C, H, W], as the library's datasets) or 'channels-last' (as Keras). Ignored for other ranks
   * and for channels_first Keras models.
   */
  inputLayout?: 'channels-first' | 'channels-last';
  /** The Keras per-sample input shape (e.g. [32, 32, 3]), overriding unknown (null) dimensions of the topology. */
  inputShape?: number[];
}

export interface ImportedTfjs {
  /** The model under PyTorch names and layouts. */
  graph: ModelGraph;
  /** Weight conversions Keras → the graph's tensors, in layer order. */
  params: TfjsParamPlan[];
  /** Layers the graph cannot run, with why. Empty: the model runs. */
  opaque: { node: string; opType: string; reason: string }[];
  /** Channel flow of `graph` (spec, groups, warnings, including the importer's). */
  flow: GraphFlow;
}

/** A layer (or a use of it) the graph cannot express: it becomes opaque (with its Keras output shape, when known). */
class Unsupported extends Error {
  constructor(message: string, readonly shape?: number[]) {
    super(message);
  }
}

type Fields = DistributiveOmit<GraphNode, 'id'>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type TensorRef = { layer: string; node: number; tensor: number };

/** What the importer knows of one Keras value. */
interface KVal {
  /** The graph node computing it. */
  node: string;
  /** Keras per-sample shape (NaN: unknown). */
  shape: number[];
  /** Internal axis i of the node's value holds Keras axis perm[i]. */
  perm: number[];
  /** After a Flatten of `spatial` > 1 positions: the node holds the features channel-major. */
  flat?: { spatial: number; channels: number };
  /** The output of an opaque layer: only its last axis is assumed (shape [NaN]). */
  rankUnknown?: boolean;
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const iota = (n: number) => Array.from({ length: n }, (_, i) => i);
const samePerm = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
/** Equal, or unknown on either side. */
const fits = (a: number, b: number) => Number.isNaN(a) || Number.isNaN(b) || a === b;
/** Internal order with the channel axis first and the others in Keras order. */
const channelsFirstPerm = (rank: number, channelAxis: number) => [channelAxis, ...iota(rank).filter((a) => a !== channelAxis)];

function ints(v: unknown, n: number, d: number, what: string): number[] {
  const out = v === undefined || v === null ? new Array<number>(n).fill(d) : isNum(v) ? new Array<number>(n).fill(v) : v;
  if (!Array.isArray(out) || out.length !== n || !out.every((x) => Number.isInteger(x) && x >= 0 && x <= 1e6)) throw new Unsupported(`${what} ${JSON.stringify(v)} is not ${n} integer(s)`);
  return out as number[];
}

/** [begin, end] padding of one window axis (TF's arithmetic for 'same'). */
function windowPads(padding: unknown, n: number, k: number, s: number, d: number): [number, number] {
  const span = (k - 1) * d + 1;
  if (padding === 'valid' || padding === undefined) return [0, 0];
  if (padding === 'causal') return [span - 1, 0];
  if (padding !== 'same') throw new Unsupported(`padding ${JSON.stringify(padding)}`);
  if (Number.isNaN(n)) {
    if (s !== 1) throw new Unsupported("'same' padding with stride > 1 on a map of unknown size (give the input shape)");
    return [(span - 1) >> 1, span - 1 - ((span - 1) >> 1)];
  }
  const total = Math.max((Math.ceil(n / s) - 1) * s + span - n, 0);
  return [total >> 1, total - (total >> 1)];
}

const windowOut = (n: number, k: number, s: number, d: number, [p0, p1]: [number, number]) => Math.floor((n + p0 + p1 - ((k - 1) * d + 1)) / s) + 1;

/** The importer's state while it walks one topology. */
class TfjsImporter {
  readonly nodes: GraphNode[] = [];
  readonly params: TfjsParamPlan[] = [];
  readonly opaque: ImportedTfjs['opaque'] = [];
  readonly warnings: string[] = [];
  readonly claimed = new Set<string>();
  private readonly ids = new Set<string>();
  private readonly layerNames: Set<string>;
  private readonly layoutCache = new Map<string, string>();
  private readonly tensorNames = new Set<string>();
  /** Weights by their last two name parts ("dense/kernel"): scopes in front and a ":0" suffix vary. */
  readonly byLayerParam = new Map<string, string>();

  constructor(readonly source: string, readonly tensors: ReadonlyMap<string, { shape: readonly number[] }>, topology: KerasTopology, readonly opts: ImportTfjsOptions) {
    this.layerNames = new Set(topology.layers.map((l) => l.name));
    for (const name of tensors.keys()) {
      const parts = name.replace(/:\d+$/, '').split('/');
      if (parts.length >= 2) this.byLayerParam.set(`${parts[parts.length - 2]}/${parts[parts.length - 1]}`, name);
    }
  }

  /** A unique node id: `base` for a layer's main node, else `base` kept clear of layer names. */
  id(base: string, main = false): string {
    if (!main && this.layerNames.has(base)) base = `${base}:value`;
    let id = base;
    for (let k = 2; this.ids.has(id); k++) id = `${base}#${k}`;
    this.ids.add(id);
    return id;
  }

  emit(base: string, fields: Fields, main = false): string {
    const id = this.id(base, main);
    this.nodes.push({ ...fields, id } as GraphNode);
    return id;
  }

  /** The Keras weight `<layer>/<p>`; claimed for this layer. */
  weight(l: KerasLayer, p: string, required: true): string;
  weight(l: KerasLayer, p: string, required: false): string | null;
  weight(l: KerasLayer, p: string, required: boolean): string | null {
    const name = this.byLayerParam.get(`${l.name}/${p}`) ?? null;
    if (!name && required) throw new FormatError(this.source, l.name, `weight "${p}" of ${l.className} layer "${l.name}" is not in weightsManifest`, { label: `layer "${l.name}"` });
    if (name) this.claimed.add(name);
    return name;
  }

  shapeOf(name: string): number[] {
    return [...this.tensors.get(name)!.shape];
  }

  /** Records a conversion; false when the PyTorch name is taken already. */
  plan(p: TfjsParamPlan): boolean {
    if (this.tensorNames.has(p.pytorch)) return false;
    this.tensorNames.add(p.pytorch);
    this.params.push(p);
    return true;
  }

  bad(l: KerasLayer, message: string): FormatError {
    return new FormatError(this.source, l.name, message, { label: `layer "${l.name}"` });
  }

  /** The state before a layer rule runs, to undo what it did when it turns out unsupported. */
  mark(): () => void {
    const nodes = this.nodes.length;
    const params = this.params.length;
    const claimed = new Set(this.claimed);
    return () => {
      const gone = new Set(this.nodes.splice(nodes).map((n) => n.id));
      for (const id of gone) this.ids.delete(id);
      for (const [k, id] of this.layoutCache) if (gone.has(id)) this.layoutCache.delete(k);
      for (const p of this.params.splice(params)) this.tensorNames.delete(p.pytorch);
      for (const w of this.claimed) if (!claimed.has(w)) this.claimed.delete(w);
    };
  }

  /** A flattened value back in Keras feature order (s, c). */
  unflat(v: KVal): KVal {
    if (!v.flat) return v;
    const { spatial: S, channels: C } = v.flat;
    const key = `${v.node}|unflat`;
    let id = this.layoutCache.get(key);
    if (!id) {
      const a = this.emit(`${v.node}:split`, { op: 'reshape', input: v.node, shape: [C, S] });
      const b = this.emit(`${v.node}:swap`, { op: 'transpose', input: a, perm: [1, 0] });
      id = this.emit(`${v.node}:keras`, { op: 'reshape', input: b, shape: [S * C] });
      this.layoutCache.set(key, id);
    }
    return { node: id, shape: v.shape, perm: [0] };
  }

  /** The node holding `v` with internal axis order `perm` (Keras axes); transposes when needed. */
  layout(v: KVal, perm: number[]): string {
    const u = this.unflat(v);
    if (samePerm(u.perm, perm)) return u.node;
    const key = `${u.node}|${perm.join(',')}`;
    let id = this.layoutCache.get(key);
    if (!id) {
      id = this.emit(`${u.node}:transpose`, { op: 'transpose', input: u.node, perm: perm.map((a) => u.perm.indexOf(a)) });
      this.layoutCache.set(key, id);
    }
    return id;
  }

  /**
   * An opaque node for a layer (or input) the graph cannot express. Its output is guessed to have
   * its first input's rank and layout (most such layers keep the shape: Lambda, custom scalings),
   * with every size unknown, so layers after it still open their channel groups; without an input
   * of known rank, only a last axis is assumed.
   */
  makeOpaque(name: string, opType: string, ins: KVal[], reason: string, shape?: number[]): KVal {
    this.opaque.push({ node: name, opType, reason });
    const like = ins[0] && !ins[0].rankUnknown ? ins[0] : null;
    const perm = shape ? iota(shape.length) : like ? (like.flat ? [0] : like.perm) : [0];
    const id = this.emit(name, { op: 'opaque', inputs: ins.map((v) => v.node), opType, reason, shape: shape ?? perm.map(() => Number.NaN) }, true);
    if (shape) return { node: id, shape, perm };
    return like ? { node: id, shape: perm.map(() => Number.NaN), perm } : { node: id, shape: [Number.NaN], perm, rankUnknown: true };
  }

  /** A weight no graph node reads (an opaque layer's, or one of no layer): kept, unpermuted, under `pytorch`. */
  keepWeight(keras: string, pytorch: string): void {
    this.claimed.add(keras);
    const shape = this.shapeOf(keras);
    if (shape.some((d) => d < 1) || !this.plan({ keras, pytorch, kind: 'copy' })) return;
    this.emit(`${pytorch}:param`, { op: 'param', name: pytorch, shape });
  }
}

/** One Keras layer class: its inputs' values → its output value (emitting graph nodes). */
type LayerRule = (l: KerasLayer, ins: KVal[], c: TfjsImporter) => KVal;

/** A batched input with a known rank. */
function known(v: KVal | undefined): KVal {
  if (!v) throw new Unsupported('an input is missing');
  if (v.rankUnknown) throw new Unsupported('its input comes from a layer that is not supported');
  return v;
}

/** Keras per-sample axis of a (batch-including) Keras `axis` config. */
function kerasAxis(axis: unknown, rank: number, what: string): number {
  const a = Array.isArray(axis) && axis.length === 1 ? axis[0] : axis;
  if (!Number.isInteger(a)) throw new Unsupported(`${what} ${JSON.stringify(axis)}`);
  const p = (a as number) < 0 ? (a as number) + rank : (a as number) - 1;
  if (p < 0 || p >= rank) throw new Unsupported(`${what} ${JSON.stringify(axis)} of a rank-${rank} value`);
  return p;
}

// ------------------------------------------------------------------------- activations

type Act = (v: KVal) => Fields;
const unaryAct = (fn: UnaryFn, alpha?: number, beta?: number): Act => (v) => ({ op: 'unary', input: v.node, fn, ...(alpha !== undefined ? { alpha } : {}), ...(beta !== undefined ? { beta } : {}) });

/** Keras/TF.js activation names (snake_case and camelCase) → graph nodes; 'linear' is none. */
const ACTIVATIONS: Record<string, Act | null> = {
  linear: null,
  relu: (v) => ({ op: 'relu', input: v.node }),
  tanh: (v) => ({ op: 'tanh', input: v.node }),
  sigmoid: unaryAct('sigmoid'),
  elu: unaryAct('elu', 1),
  selu: unaryAct('selu'),
  softplus: unaryAct('softplus'),
  swish: unaryAct('silu'),
  silu: unaryAct('silu'),
  gelu: unaryAct('gelu'),
  gelu_new: unaryAct('gelu-tanh'),
  mish: unaryAct('mish'),
  hard_sigmoid: unaryAct('hardsigmoid', 0.2, 0.5),
  hardSigmoid: unaryAct('hardsigmoid', 0.2, 0.5),
  hard_swish: unaryAct('hardswish'),
  relu6: unaryAct('clip', 0, 6),
  exponential: unaryAct('exp'),
  // Along the last Keras axis; a flattened value is one axis, whose order softmax does not see.
  softmax: (v) => ({ op: 'softmax', input: v.node, axis: v.flat || v.rankUnknown ? 0 : v.perm.indexOf(v.shape.length - 1), log: false }),
};

/** Applies a layer's `activation` (Dense, Conv…): the node is `<layer>:<activation>`, or the layer's own for an Activation layer. */
function activate(c: TfjsImporter, l: KerasLayer, v: KVal, act: unknown, main = false): KVal {
  if (act === undefined || act === null) return v;
  if (typeof act !== 'string' || !(act in ACTIVATIONS)) throw new Unsupported(`activation ${JSON.stringify(act)} is not supported`);
  const make = ACTIVATIONS[act];
  if (!make) return v;
  return { ...v, node: c.emit(main ? l.name : `${l.name}:${act}`, make(v), main) };
}

// ------------------------------------------------------------------------- layer rules

const Dense: LayerRule = (l, [x], c) => {
  if (!x) throw new Unsupported('no input');
  const k = c.weight(l, 'kernel', true);
  const ks = c.shapeOf(k);
  if (ks.length !== 2) throw c.bad(l, `Dense kernel "${k}" has shape [${ks.join(', ')}], expected [in, out]`);
  const [nin, units] = ks;
  const r = x.shape.length;
  if (!fits(x.shape[r - 1], nin)) throw c.bad(l, `Dense kernel [${nin}, ${units}] does not fit its input [${x.shape.join(', ')}]`);
  const b = l.config.use_bias === false ? null : c.weight(l, 'bias', false);
  let input: string;
  let perm: number[];
  const plan: TfjsParamPlan = { keras: k, pytorch: `${l.name}.weight`, kind: 'dense' };
  if (x.flat && x.flat.spatial * x.flat.channels === nin) {
    plan.reorder = { ...x.flat };
    input = x.node;
    perm = [0];
  } else if (x.rankUnknown) {
    input = x.node;
    perm = [0];
  } else {
    perm = [...x.perm.filter((a) => a !== r - 1), r - 1];
    input = c.layout(x, perm);
  }
  c.plan(plan);
  if (b) c.plan({ keras: b, pytorch: `${l.name}.bias`, kind: 'copy' });
  const node = c.emit(l.name, { op: 'linear', input, weight: `${l.name}.weight`, bias: b ? `${l.name}.bias` : null, inFeatures: nin, outFeatures: units }, true);
  return activate(c, l, { node, shape: [...(x.rankUnknown ? [] : x.shape.slice(0, -1)), units], perm: x.rankUnknown ? [0] : perm }, l.config.activation);
};

/** A value as a [C, H, W] map for a conv/pool (1-D [L, C] as [C, 1, L]) and the way back to a Keras value. */
function asMap(c: TfjsImporter, l: KerasLayer, x: KVal, nsp: number): { node: string; dims: [number, number, number]; back: (node: string, dims: [number, number, number]) => KVal } {
  known(x);
  const cf = l.config.data_format === 'channels_first';
  if (x.shape.length !== nsp + 1) throw new Unsupported(`expects a rank-${nsp + 1} input, got [${x.shape.join(', ')}]`);
  const ca = cf ? 0 : nsp;
  const perm = channelsFirstPerm(nsp + 1, ca);
  let node = c.layout(x, perm);
  const [C, ...sp] = perm.map((a) => x.shape[a]);
  const dims: [number, number, number] = nsp === 2 ? [C, sp[0], sp[1]] : [C, 1, sp[0]];
  if (nsp === 1) node = c.emit(`${l.name}:2d`, { op: 'reshape', input: node, shape: dims });
  const back = (out: string, [C2, H2, W2]: [number, number, number]): KVal => {
    const shapeCf = nsp === 2 ? [C2, H2, W2] : [C2, W2];
    const outNode = nsp === 2 ? out : c.emit(`${l.name}:1d`, { op: 'reshape', input: out, shape: shapeCf });
    const kerasShape = cf ? shapeCf : [...shapeCf.slice(1), C2];
    return { node: outNode, shape: kerasShape, perm };
  };
  return { node, dims, back };
}

/** Conv1D/Conv2D (with groups), DepthwiseConv2D: a conv2d node. */
function conv(nsp: 1 | 2, depthwise: boolean): LayerRule {
  return (l, [x], c) => {
    const cfg = l.config;
    const k = c.weight(l, depthwise ? 'depthwise_kernel' : 'kernel', true);
    const ks = c.shapeOf(k);
    if (ks.length !== nsp + 2) throw c.bad(l, `kernel "${k}" has shape [${ks.join(', ')}], expected ${nsp} kernel dims, in, out`);
    const m = asMap(c, l, x, nsp);
    const kernel = (nsp === 2 ? ks.slice(0, 2) : [1, ks[0]]) as [number, number];
    const groups = depthwise ? ks[nsp] : Number.isInteger(cfg.groups) ? (cfg.groups as number) : 1;
    const inChannels = depthwise ? ks[nsp] : ks[nsp] * groups;
    const outChannels = depthwise ? ks[nsp] * ks[nsp + 1] : ks[nsp + 1];
    if (!fits(m.dims[0], inChannels) || groups < 1) throw c.bad(l, `kernel [${ks.join(', ')}] does not fit its input [${x.shape.join(', ')}]`);
    const st = ints(cfg.strides, nsp, 1, 'strides');
    const dl = ints(cfg.dilation_rate, nsp, 1, 'dilation_rate');
    const stride = (nsp === 2 ? st : [1, st[0]]) as [number, number];
    const dilation = (nsp === 2 ? dl : [1, dl[0]]) as [number, number];
    if (stride.some((s) => s < 1) || dilation.some((d) => d < 1)) throw new Unsupported('strides and dilation must be positive');
    const ph = windowPads(nsp === 2 ? cfg.padding : 'valid', m.dims[1], kernel[0], stride[0], dilation[0]);
    const pw = windowPads(cfg.padding, m.dims[2], kernel[1], stride[1], dilation[1]);
    const b = cfg.use_bias === false ? null : c.weight(l, 'bias', false);
    c.plan({ keras: k, pytorch: `${l.name}.weight`, kind: 'conv', view: depthwise ? [...ks.slice(0, nsp), 1, outChannels] : nsp === 1 ? [1, ...ks] : undefined });
    if (b) c.plan({ keras: b, pytorch: `${l.name}.bias`, kind: 'copy' });
    const node = c.emit(l.name, {
      op: 'conv2d', input: m.node, weight: `${l.name}.weight`, bias: b ? `${l.name}.bias` : null, inChannels, outChannels,
      kernel, stride, padding: [ph[0], pw[0], ph[1], pw[1]], ...(dilation.some((d) => d !== 1) ? { dilation } : {}), ...(groups !== 1 ? { groups } : {}),
    }, true);
    const out = m.back(node, [outChannels, windowOut(m.dims[1], kernel[0], stride[0], dilation[0], ph), windowOut(m.dims[2], kernel[1], stride[1], dilation[1], pw)]);
    return activate(c, l, out, cfg.activation);
  };
}

/** SeparableConv2D: a depthwise conv2d (`<layer>.depthwise.weight`) then a 1×1 conv (`<layer>.pointwise.weight`, `<layer>.bias`). */
const SeparableConv2D: LayerRule = (l, [x], c) => {
  const cfg = l.config;
  const dk = c.weight(l, 'depthwise_kernel', true);
  const pk = c.weight(l, 'pointwise_kernel', true);
  const ds = c.shapeOf(dk);
  const ps = c.shapeOf(pk);
  if (ds.length !== 4 || ps.length !== 4 || ps[0] !== 1 || ps[1] !== 1 || ps[2] !== ds[2] * ds[3]) throw c.bad(l, `kernels [${ds.join(', ')}] and [${ps.join(', ')}] do not fit together`);
  const m = asMap(c, l, x, 2);
  const [kh, kw, cin, mult] = ds;
  if (!fits(m.dims[0], cin)) throw c.bad(l, `depthwise kernel [${ds.join(', ')}] does not fit its input [${x.shape.join(', ')}]`);
  const stride = ints(cfg.strides, 2, 1, 'strides') as [number, number];
  const dilation = ints(cfg.dilation_rate, 2, 1, 'dilation_rate') as [number, number];
  if ([...stride, ...dilation].some((v) => v < 1)) throw new Unsupported('strides and dilation must be positive');
  const ph = windowPads(cfg.padding, m.dims[1], kh, stride[0], dilation[0]);
  const pw = windowPads(cfg.padding, m.dims[2], kw, stride[1], dilation[1]);
  const b = cfg.use_bias === false ? null : c.weight(l, 'bias', false);
  c.plan({ keras: dk, pytorch: `${l.name}.depthwise.weight`, kind: 'conv', view: [kh, kw, 1, cin * mult] });
  c.plan({ keras: pk, pytorch: `${l.name}.pointwise.weight`, kind: 'conv' });
  if (b) c.plan({ keras: b, pytorch: `${l.name}.bias`, kind: 'copy' });
  const dw = c.emit(`${l.name}:depthwise`, {
    op: 'conv2d', input: m.node, weight: `${l.name}.depthwise.weight`, bias: null, inChannels: cin, outChannels: cin * mult,
    kernel: [kh, kw], stride, padding: [ph[0], pw[0], ph[1], pw[1]], ...(dilation.some((d) => d !== 1) ? { dilation } : {}), groups: cin,
  });
  const node = c.emit(l.name, { op: 'conv2d', input: dw, weight: `${l.name}.pointwise.weight`, bias: b ? `${l.name}.bias` : null, inChannels: cin * mult, outChannels: ps[3], kernel: 1, stride: 1, padding: 0 }, true);
  const out = m.back(node, [ps[3], windowOut(m.dims[1], kh, stride[0], dilation[0], ph), windowOut(m.dims[2], kw, stride[1], dilation[1], pw)]);
  return activate(c, l, out, cfg.activation);
};

/** MaxPooling1D/2D, AveragePooling1D/2D: a pool2d node ('same' average excludes the padding, as TF). */
function pool(nsp: 1 | 2, kind: 'max' | 'avg'): LayerRule {
  return (l, [x], c) => {
    const cfg = l.config;
    const m = asMap(c, l, x, nsp);
    const ps = ints(cfg.pool_size, nsp, 2, 'pool_size');
    const st = ints(cfg.strides ?? ps, nsp, 1, 'strides');
    const kernel = (nsp === 2 ? ps : [1, ps[0]]) as [number, number];
    const stride = (nsp === 2 ? st : [1, st[0]]) as [number, number];
    if ([...kernel, ...stride].some((v) => v < 1)) throw new Unsupported('pool_size and strides must be positive');
    const ph = windowPads(nsp === 2 ? cfg.padding : 'valid', m.dims[1], kernel[0], stride[0], 1);
    const pw = windowPads(cfg.padding, m.dims[2], kernel[1], stride[1], 1);
    const node = c.emit(l.name, { op: 'pool2d', input: m.node, kind, kernel, stride, padding: [ph[0], pw[0], ph[1], pw[1]], countIncludePad: false }, true);
    return m.back(node, [m.dims[0], windowOut(m.dims[1], kernel[0], stride[0], 1, ph), windowOut(m.dims[2], kernel[1], stride[1], 1, pw)]);
  };
}

/** Global{Max,Average}Pooling{1,2,3}D: a reduction over every axis but the channels'. */
function globalPool(kind: 'max' | 'avg'): LayerRule {
  return (l, [x0], c) => {
    const x = c.unflat(known(x0));
    const r = x.shape.length;
    if (r < 2) throw new Unsupported(`expects a map, got [${x.shape.join(', ')}]`);
    const ca = l.config.data_format === 'channels_first' ? 0 : r - 1;
    const keep = l.config.keepdims === true;
    const axes = x.perm.flatMap((a, j) => (a === ca ? [] : [j]));
    const node = c.emit(l.name, { op: 'reduce', input: x.node, fn: kind === 'avg' ? 'mean' : 'max', axes, keepdims: keep }, true);
    return keep ? { node, shape: x.shape.map((d, a) => (a === ca ? d : 1)), perm: x.perm } : { node, shape: [x.shape[ca]], perm: [0] };
  };
}

/** Flatten (`channels_last`: features in (positions…, channel) order): channel-major with the Dense rows reordered, see the module comment. */
function flattenTo(l: KerasLayer, x: KVal, c: TfjsImporter, channelAxis: number): KVal {
  const r = x.shape.length;
  if (r <= 1) return x;
  const perm = channelsFirstPerm(r, channelAxis);
  const C = x.shape[channelAxis];
  const S = prod(perm.slice(1).map((a) => x.shape[a]));
  if (Number.isNaN(S) || Number.isNaN(C)) throw new Unsupported('flattens a map of unknown spatial size (give the input shape)');
  const node = c.emit(l.name, { op: 'flatten', input: c.layout(x, perm), inner: S }, true);
  return { node, shape: [S * C], perm: [0], ...(S > 1 ? { flat: { spatial: S, channels: C } } : {}) };
}

const Flatten: LayerRule = (l, [x], c) => {
  const v = known(x);
  // Keras moves a channels_first map's channels last before flattening: (positions…, channel) either way.
  return flattenTo(l, v, c, l.config.data_format === 'channels_first' ? 0 : v.shape.length - 1);
};

const Reshape: LayerRule = (l, [x0], c) => {
  const x = known(x0);
  const t = l.config.target_shape;
  if (!Array.isArray(t) || !t.every((d) => Number.isInteger(d) && (d === -1 || d > 0)) || t.filter((d) => d === -1).length > 1) throw new Unsupported(`target_shape ${JSON.stringify(t)}`);
  const total = prod(x.shape);
  if (Number.isNaN(total)) throw new Unsupported('reshapes a value of unknown size (give the input shape)');
  const rest = prod((t as number[]).filter((d) => d !== -1));
  const target = (t as number[]).map((d) => (d === -1 ? total / rest : d));
  if (prod(target) !== total || !target.every((d) => Number.isInteger(d))) throw c.bad(l, `Reshape of [${x.shape.join(', ')}] to [${t.join(', ')}] changes the size`);
  // A reshape to one axis is Keras's (channels-last) Flatten.
  if (target.length === 1 && x.shape.length > 1) return flattenTo(l, x, c, x.shape.length - 1);
  const node = c.emit(l.name, { op: 'reshape', input: c.layout(x, iota(x.shape.length)), shape: target }, true);
  return { node, shape: target, perm: iota(target.length) };
};

/** Permute moves Keras axes: only the bookkeeping changes (transposes come where a layer needs them). */
const Permute: LayerRule = (l, [x0], c) => {
  const x = c.unflat(known(x0));
  const dims = l.config.dims;
  const r = x.shape.length;
  if (!Array.isArray(dims) || dims.length !== r || [...dims].sort((a, b) => a - b).some((d, i) => d !== i + 1)) throw new Unsupported(`dims ${JSON.stringify(dims)}`);
  return { node: x.node, shape: (dims as number[]).map((d) => x.shape[d - 1]), perm: x.perm.map((a) => (dims as number[]).indexOf(a + 1)) };
};

/** BatchNormalization over one axis: the batchnorm node on that axis moved first. */
const BatchNormalization: LayerRule = (l, [x0], c) => {
  const cfg = l.config;
  const x = c.unflat(known(x0));
  const r = x.shape.length;
  const a = kerasAxis(cfg.axis ?? -1, r, 'axis');
  const perm = [a, ...x.perm.filter((p) => p !== a)];
  const names: [string, string, boolean, number][] = [
    ['gamma', 'weight', cfg.scale !== false, 1], ['beta', 'bias', cfg.center !== false, 0], ['moving_mean', 'running_mean', true, 0], ['moving_variance', 'running_var', true, 1],
  ];
  const C = c.shapeOf(c.weight(l, 'moving_mean', true))[0];
  if (!fits(x.shape[a], C)) throw c.bad(l, `BatchNormalization of ${C} channels on [${x.shape.join(', ')}] (axis ${a})`);
  for (const [kp, pp, present, value] of names) {
    const w = present ? c.weight(l, kp, true) : null;
    if (w && (c.shapeOf(w).length !== 1 || c.shapeOf(w)[0] !== C)) throw c.bad(l, `weight "${w}" has shape [${c.shapeOf(w).join(', ')}], expected [${C}]`);
    c.plan(w ? { keras: w, pytorch: `${l.name}.${pp}`, kind: 'copy' } : { keras: null, pytorch: `${l.name}.${pp}`, kind: 'fill', fill: { value, shape: [C] } });
  }
  const momentum = isNum(cfg.momentum) ? 1 - cfg.momentum : 0.01;
  const node = c.emit(l.name, {
    op: 'batchnorm', input: c.layout(x, perm), channels: C, weight: `${l.name}.weight`, bias: `${l.name}.bias`, runningMean: `${l.name}.running_mean`,
    runningVar: `${l.name}.running_var`, eps: isNum(cfg.epsilon) ? cfg.epsilon : 1e-3, momentum,
  }, true);
  return { node, shape: x.shape, perm };
};

/** LayerNormalization over trailing Keras axes (any set of axes: they are moved last, in Keras order). */
const LayerNormalization: LayerRule = (l, [x0], c) => {
  const cfg = l.config;
  const x = c.unflat(known(x0));
  const r = x.shape.length;
  const axes = (Array.isArray(cfg.axis) ? cfg.axis : [cfg.axis ?? -1]).map((a) => kerasAxis(a, r, 'axis'));
  const sorted = [...new Set(axes)].sort((a, b) => a - b);
  const perm = [...x.perm.filter((a) => !sorted.includes(a)), ...sorted];
  const shape = sorted.map((a) => x.shape[a]);
  if (shape.some((d) => Number.isNaN(d))) throw new Unsupported('normalises axes of unknown size');
  const g = cfg.scale === false ? null : c.weight(l, 'gamma', true);
  const b = cfg.center === false ? null : c.weight(l, 'beta', true);
  for (const w of [g, b]) if (w && prod(c.shapeOf(w)) !== prod(shape)) throw c.bad(l, `weight "${w}" has shape [${c.shapeOf(w).join(', ')}], expected [${shape.join(', ')}]`);
  if (g) c.plan({ keras: g, pytorch: `${l.name}.weight`, kind: 'copy' });
  if (b) c.plan({ keras: b, pytorch: `${l.name}.bias`, kind: 'copy' });
  const node = c.emit(l.name, { op: 'layernorm', input: c.layout(x, perm), shape, weight: g ? `${l.name}.weight` : null, bias: b ? `${l.name}.bias` : null, eps: isNum(cfg.epsilon) ? cfg.epsilon : 1e-3 }, true);
  return { node, shape: x.shape, perm };
};

/** An element-wise layer: the same value, computed by `fields` from the input node. */
const elementwise = (fields: (l: KerasLayer, input: string) => Fields): LayerRule => (l, [x], c) => ({ ...known(x), node: c.emit(l.name, fields(l, known(x).node), true) });
const passThrough: LayerRule = (_l, [x]) => known(x);

const Activation: LayerRule = (l, [x], c) => activate(c, l, known(x), l.config.activation, true);

const ReLU: LayerRule = (l, [x], c) => {
  const { max_value: max, negative_slope: slope = 0, threshold = 0 } = l.config as { max_value?: unknown; negative_slope?: unknown; threshold?: unknown };
  if (threshold !== 0) throw new Unsupported(`threshold ${JSON.stringify(threshold)}`);
  const hasMax = max !== undefined && max !== null;
  if (!isNum(slope) || (hasMax && (!isNum(max) || slope !== 0))) throw new Unsupported(`max_value ${JSON.stringify(max)} with negative_slope ${JSON.stringify(slope)}`);
  return elementwise((_l, input) => (hasMax ? { op: 'unary', input, fn: 'clip', alpha: 0, beta: max as number } : slope !== 0 ? { op: 'unary', input, fn: 'leakyrelu', alpha: slope } : { op: 'relu', input }))(l, [x], c);
};

const LeakyReLU = elementwise((l, input) => {
  const a = l.config.alpha ?? l.config.negative_slope ?? 0.3;
  if (!isNum(a)) throw new Unsupported(`alpha ${JSON.stringify(a)}`);
  return { op: 'unary', input, fn: 'leakyrelu', alpha: a };
});

const ELU = elementwise((l, input) => ({ op: 'unary', input, fn: 'elu', alpha: isNum(l.config.alpha) ? l.config.alpha : 1 }));

const Softmax: LayerRule = (l, [x0], c) => {
  const x = known(x0);
  const a = kerasAxis(l.config.axis ?? -1, x.shape.length, 'axis');
  if (x.flat) return { ...x, node: c.emit(l.name, { op: 'softmax', input: x.node, axis: 0, log: false }, true) };
  return { ...x, node: c.emit(l.name, { op: 'softmax', input: x.node, axis: x.perm.indexOf(a), log: false }, true) };
};

const Dropout = elementwise((l, input) => {
  const p = l.config.rate ?? 0;
  if (!isNum(p) || p < 0 || p >= 1) throw new Unsupported(`rate ${JSON.stringify(p)}`);
  return { op: 'dropout', input, p };
});

/** The operands of a merge layer in one layout (the first's; flattened values stay so only when all are alike). */
function operands(l: KerasLayer, ins: KVal[], c: TfjsImporter): { nodes: string[]; val: Omit<KVal, 'node'> } {
  const xs = ins.map(known);
  if (xs.length < 2) throw new Unsupported(`merges ${xs.length} input(s)`);
  const x = xs[0];
  if (xs.some((v) => v.shape.length !== x.shape.length || v.shape.some((d, i) => !fits(d, x.shape[i])))) throw new Unsupported(`operands of different shapes ${xs.map((v) => `[${v.shape.join(', ')}]`).join(', ')}`);
  const allFlat = xs.every((v) => v.flat && x.flat && v.flat.spatial === x.flat.spatial);
  if (allFlat) return { nodes: xs.map((v) => v.node), val: { shape: x.shape, perm: [0], flat: x.flat } };
  const perm = x.flat ? [0] : x.perm;
  return { nodes: xs.map((v) => c.layout(v, perm)), val: { shape: x.shape, perm } };
}

/** Subtract, Multiply, Maximum, Minimum: a chain of binary nodes (the last is the layer's). */
function merge(fn: BinaryFn): LayerRule {
  return (l, ins, c) => {
    const { nodes, val } = operands(l, ins, c);
    if (fn === 'sub' && nodes.length !== 2) throw new Unsupported('Subtract of more than two inputs');
    let acc = nodes[0];
    nodes.slice(1).forEach((n, i) => {
      acc = c.emit(i === nodes.length - 2 ? l.name : `${l.name}:${i}`, { op: 'binary', inputs: [acc, n], fn }, i === nodes.length - 2);
    });
    return { ...val, node: acc };
  };
}

const Add: LayerRule = (l, ins, c) => {
  const { nodes, val } = operands(l, ins, c);
  return { ...val, node: c.emit(l.name, { op: 'add', inputs: nodes }, true) };
};

const Average: LayerRule = (l, ins, c) => {
  const { nodes, val } = operands(l, ins, c);
  const sum = c.emit(`${l.name}:sum`, { op: 'add', inputs: nodes });
  const k = c.emit(`${l.name}:scale`, { op: 'constant', shape: [1], values: [1 / nodes.length] });
  return { ...val, node: c.emit(l.name, { op: 'binary', inputs: [sum, k], fn: 'mul' }, true) };
};

const Concatenate: LayerRule = (l, ins, c) => {
  const xs = ins.map((v) => c.unflat(known(v)));
  const x = xs[0];
  const r = x.shape.length;
  const a = kerasAxis(l.config.axis ?? -1, r, 'axis');
  if (xs.length < 2 || xs.some((v) => v.shape.length !== r || v.shape.some((d, i) => i !== a && !fits(d, x.shape[i])))) throw new Unsupported(`joins values of shapes ${xs.map((v) => `[${v.shape.join(', ')}]`).join(', ')} off axis ${a}`);
  const node = c.emit(l.name, { op: 'concat', inputs: xs.map((v) => c.layout(v, x.perm)), axis: x.perm.indexOf(a) }, true);
  return { node, shape: x.shape.map((d, i) => (i === a ? xs.reduce((s, v) => s + v.shape[a], 0) : d)), perm: x.perm };
};

/** ZeroPadding{1,2,3}D (sign +1) and Cropping{1,2,3}D (sign −1): a pad node on the spatial axes. */
function padding(nsp: number, key: 'padding' | 'cropping', sign: 1 | -1): LayerRule {
  return (l, [x0], c) => {
    const x = c.unflat(known(x0));
    const r = x.shape.length;
    if (r !== nsp + 1) throw new Unsupported(`expects a rank-${nsp + 1} input, got [${x.shape.join(', ')}]`);
    const p = l.config[key];
    const pairs: [number, number][] = [];
    for (let i = 0; i < nsp; i++) {
      const q = nsp === 1 ? p : Array.isArray(p) ? p[i] : p;
      const pr = isNum(q) ? [q, q] : Array.isArray(q) && q.length === 2 && q.every(isNum) ? q : nsp === 1 && isNum(p) ? [p, p] : null;
      if (!pr || !pr.every((v: number) => Number.isInteger(v) && v >= 0 && v <= 1e6)) throw new Unsupported(`${key} ${JSON.stringify(p)}`);
      pairs.push([pr[0], pr[1]]);
    }
    const first = l.config.data_format === 'channels_first' ? 1 : 0;
    const begin = x.perm.map((a) => (a >= first && a < first + nsp ? sign * pairs[a - first][0] : 0));
    const end = x.perm.map((a) => (a >= first && a < first + nsp ? sign * pairs[a - first][1] : 0));
    const shape = x.shape.map((d, a) => (a >= first && a < first + nsp ? d + sign * (pairs[a - first][0] + pairs[a - first][1]) : d));
    if (shape.some((d) => d < 1)) throw c.bad(l, `${key} leaves an empty map [${shape.join(', ')}]`);
    const node = c.emit(l.name, { op: 'pad', input: x.node, pads: [...begin, ...end], value: 0 }, true);
    return { node, shape, perm: x.perm };
  };
}

/** Embedding cannot run (a lookup by the input's values); its output shape keeps the layers after it inferable. */
const Embedding: LayerRule = (l, [x0]) => {
  const x = known(x0);
  const d = l.config.output_dim;
  throw new Unsupported('a lookup by the input values is not supported', Number.isInteger(d) && (d as number) > 0 ? [...x.shape, d as number] : undefined);
};

/** Rescaling: x·scale + offset (scalars). */
const Rescaling: LayerRule = (l, [x0], c) => {
  const x = known(x0);
  const { scale = 1, offset = 0 } = l.config as { scale?: unknown; offset?: unknown };
  if (!isNum(scale) || !isNum(offset)) throw new Unsupported(`scale ${JSON.stringify(scale)} and offset ${JSON.stringify(offset)} must be numbers`);
  const k = c.emit(`${l.name}:scale`, { op: 'constant', shape: [1], values: [scale] });
  const b = c.emit(`${l.name}:offset`, { op: 'constant', shape: [1], values: [offset] });
  const mul = c.emit(`${l.name}:mul`, { op: 'binary', inputs: [x.node, k], fn: 'mul' });
  return { ...x, node: c.emit(l.name, { op: 'binary', inputs: [mul, b], fn: 'add' }, true) };
};

const UpSampling2D: LayerRule = (l, [x], c) => {
  const m = asMap(c, l, known(x), 2);
  const [sh, sw] = ints(l.config.size, 2, 2, 'size');
  const mode = l.config.interpolation ?? 'nearest';
  if ((mode !== 'nearest' && mode !== 'bilinear') || sh < 1 || sw < 1) throw new Unsupported(`interpolation ${JSON.stringify(mode)}`);
  if (Number.isNaN(m.dims[1]) || Number.isNaN(m.dims[2])) throw new Unsupported('upsamples a map of unknown size (give the input shape)');
  const size: [number, number] = [m.dims[1] * sh, m.dims[2] * sw];
  const node = c.emit(l.name, { op: 'resize', input: m.node, mode: mode === 'nearest' ? 'nearest' : 'linear', size, alignCorners: false }, true);
  return m.back(node, [m.dims[0], size[0], size[1]]);
};

/** The layer rules, by Keras class name. Everything else (and InputLayer beyond the first) becomes an opaque node. */
export const TFJS_LAYERS: Record<string, LayerRule> = {
  Dense,
  Conv1D: conv(1, false), Conv2D: conv(2, false), DepthwiseConv2D: conv(2, true), SeparableConv2D,
  BatchNormalization, LayerNormalization,
  Activation, ReLU, LeakyReLU, ELU, Softmax,
  Dropout, SpatialDropout1D: Dropout, SpatialDropout2D: Dropout,
  GaussianNoise: passThrough, GaussianDropout: passThrough, AlphaDropout: passThrough, ActivityRegularization: passThrough, Identity: passThrough, Masking: passThrough,
  MaxPooling1D: pool(1, 'max'), MaxPooling2D: pool(2, 'max'), AveragePooling1D: pool(1, 'avg'), AveragePooling2D: pool(2, 'avg'),
  GlobalMaxPooling1D: globalPool('max'), GlobalMaxPooling2D: globalPool('max'), GlobalMaxPooling3D: globalPool('max'),
  GlobalAveragePooling1D: globalPool('avg'), GlobalAveragePooling2D: globalPool('avg'), GlobalAveragePooling3D: globalPool('avg'),
  Flatten, Reshape, Permute,
  Add, Subtract: merge('sub'), Multiply: merge('mul'), Maximum: merge('max'), Minimum: merge('min'), Average, Concatenate,
  ZeroPadding1D: padding(1, 'padding', 1), ZeroPadding2D: padding(2, 'padding', 1), ZeroPadding3D: padding(3, 'padding', 1),
  Cropping1D: padding(1, 'cropping', -1), Cropping2D: padding(2, 'cropping', -1), Cropping3D: padding(3, 'cropping', -1),
  UpSampling2D, Rescaling, Embedding,
};

// ------------------------------------------------------------------------- the import

type Call = { layer: KerasLayer; index: number; inputs: TensorRef[] };

/** Layer calls in dependency order (Keras lists layers topologically, but do not rely on it). */
function callOrder(topology: KerasTopology, source: string): Call[] {
  const calls: Call[] = [];
  for (const l of topology.layers) {
    if (l.className === 'InputLayer' || l.inbound.length === 0) calls.push({ layer: l, index: 0, inputs: [] });
    else l.inbound.forEach((inputs, index) => calls.push({ layer: l, index, inputs }));
  }
  const done = new Set<string>();
  const order: Call[] = [];
  let progress = true;
  while (progress && order.length < calls.length) {
    progress = false;
    for (const c of calls) {
      const id = `${c.layer.name}#${c.index}`;
      if (done.has(id)) continue;
      if (c.inputs.every((r) => done.has(`${r.layer}#${r.node}`))) {
        done.add(id);
        order.push(c);
        progress = true;
      }
    }
  }
  for (const c of calls) if (!done.has(`${c.layer.name}#${c.index}`)) throw new FormatError(source, c.layer.name, 'its inputs are never produced (unknown layer or a cycle)', { label: `layer "${c.layer.name}"` });
  return order;
}

/**
 * Imports a TF.js layers model (its topology and weights; only the weights' shapes are read) as a
 * ModelGraph under PyTorch names and layouts, see the module comment. Layers the graph cannot
 * express become opaque nodes, listed in `opaque`: spec inference still works, running refuses.
 */
export function importTfjs(model: { topology: KerasTopology; tensors: ReadonlyMap<string, { shape: readonly number[] }>; source?: string }, opts: ImportTfjsOptions = {}): ImportedTfjs {
  const { topology } = model;
  const source = model.source ?? '<model.json>';
  const c = new TfjsImporter(source, model.tensors, topology, opts);
  const channelsFirstModel = topology.layers.some((l) => l.config.data_format === 'channels_first');
  /** Internal order of the graph's input and outputs of Keras rank r. */
  const ioPerm = (r: number) => (r === 3 && !channelsFirstModel && opts.inputLayout !== 'channels-last' ? [2, 0, 1] : iota(r));
  const vals = new Map<string, KVal>();
  const key = (r: TensorRef) => `${r.layer}#${r.node}#${r.tensor}`;
  let inputs = 0;
  for (const call of callOrder(topology, source)) {
    const l = call.layer;
    const ins = call.inputs.map((r) => {
      const v = vals.get(key(r));
      if (!v) throw new FormatError(source, l.name, `reads "${r.layer}" output ${r.tensor} of call ${r.node}, which does not exist`, { label: `layer "${l.name}"` });
      return v;
    });
    let out: KVal;
    if (l.className === 'InputLayer') {
      const bis = l.config.batch_input_shape ?? l.config.batch_shape;
      let shape = Array.isArray(bis) && bis.length >= 2 ? bis.slice(1).map((d) => (isNum(d) && Number.isInteger(d) && d > 0 ? d : Number.NaN)) : null;
      if (shape && opts.inputShape) {
        if (opts.inputShape.length !== shape.length || opts.inputShape.some((d, i) => !(Number.isInteger(d) && d > 0) || !fits(shape![i], d))) {
          throw new InputError(`${source}: the input shape [${opts.inputShape.join(', ')}] given does not fit input "${l.name}" [${shape.map((d) => (Number.isNaN(d) ? 'null' : d)).join(', ')}]`);
        }
        shape = shape.map((d, i) => (Number.isNaN(d) ? opts.inputShape![i] : d));
      }
      const why = !shape ? 'the input shape is unknown' : inputs > 0 ? 'a second network input' : null;
      inputs++;
      if (why) out = c.makeOpaque(l.name, 'InputLayer', [], why);
      else {
        const perm = ioPerm(shape!.length);
        out = { node: c.emit(l.name, { op: 'input', shape: perm.map((a) => shape![a]) }, true), shape: shape!, perm };
      }
    } else {
      const rule = TFJS_LAYERS[l.className];
      const undo = c.mark();
      try {
        if (!rule) throw new Unsupported(`layer class ${l.className} is not supported`);
        if (call.index > 0) throw new Unsupported(`a layer called ${l.inbound.length} times (shared weights) is not supported`);
        if (ins.length === 0) throw new Unsupported('no input');
        out = rule(l, ins, c);
      } catch (e) {
        if (!(e instanceof Unsupported)) throw e;
        undo();
        out = c.makeOpaque(call.index > 0 ? `${l.name}#${call.index + 1}` : l.name, l.className, ins, `${l.className}: ${e.message}`, e.shape);
      }
    }
    // An unsupported layer's weights (and those of layers with extra ones) are kept, unpermuted.
    for (const name of model.tensors.keys()) {
      const parts = name.replace(/:\d+$/, '').split('/');
      if (!c.claimed.has(name) && parts.length >= 2 && parts[parts.length - 2] === l.name) c.keepWeight(name, `${l.name}.${parts[parts.length - 1]}`);
    }
    vals.set(`${l.name}#${call.index}#0`, out);
  }
  for (const r of topology.outputs) {
    const v = vals.get(key(r));
    if (!v) continue;
    const node = v.rankUnknown ? v.node : c.layout(v, ioPerm(v.shape.length));
    c.emit('output', { op: 'output', input: node });
  }
  for (const name of model.tensors.keys()) {
    if (c.claimed.has(name)) continue;
    const pytorch = name.replace(/:\d+$/, '').replace(/\//g, '.');
    c.warnings.push(`weight "${name}" belongs to no layer of the topology; kept as "${pytorch}", unpermuted`);
    c.keepWeight(name, pytorch);
  }
  const graph: ModelGraph = { nodes: c.nodes };
  let flow: GraphFlow;
  try {
    flow = graphFlow(graph);
  } catch (e) {
    // The graph's own checks (an inconsistent model.json); anything else is a bug.
    if (!(e instanceof InputError)) throw e;
    throw new FormatError(source, 'modelTopology', `the layers do not fit together: ${describeError(e).replace(/^ModelGraph: /, '')}`, { label: 'modelTopology', cause: e });
  }
  return { graph, params: c.params, opaque: c.opaque, flow: { ...flow, warnings: [...c.warnings, ...flow.warnings] } };
}

export interface TfjsSpecResult extends FlowResult {
  /** Weight conversions, in layer order. */
  params: TfjsParamPlan[];
  /** The imported model (its graph runs unless `opaque` lists nodes). */
  imported: ImportedTfjs;
}

/** The permutation spec of a TF.js layers model (PyTorch names and layouts): `graphFlow` of its imported graph. */
export function inferSpecFromTfjs(model: { topology: KerasTopology; tensors: ReadonlyMap<string, { shape: readonly number[] }>; source?: string }, opts: ImportTfjsOptions = {}): TfjsSpecResult {
  const imported = importTfjs(model, opts);
  const { spec, owners, groups, fixed, warnings } = imported.flow;
  return { spec, owners, groups, fixed, warnings, params: imported.params, imported };
}

// ------------------------------------------------------------------------- layouts

/** Keras [k…, in, out] → [out, in, k…]. */
function convToPytorch(r: ArrayRecord, view: number[]): ArrayRecord {
  const ks = view.slice(0, -2);
  const [cin, cout] = view.slice(-2);
  const K = prod(ks);
  const out = new Float32Array(r.data.length);
  for (let k = 0; k < K; k++) for (let i = 0; i < cin; i++) for (let o = 0; o < cout; o++) out[(o * cin + i) * K + k] = r.data[(k * cin + i) * cout + o];
  return { shape: [cout, cin, ...ks], data: out };
}

/** [out, in, k…] → Keras [k…, in, out], then shaped as the Keras tensor `shape`. */
function convToKeras(r: ArrayRecord, shape: number[]): ArrayRecord {
  const [cout, cin, ...ks] = r.shape;
  const K = prod(ks);
  const out = new Float32Array(r.data.length);
  for (let k = 0; k < K; k++) for (let i = 0; i < cin; i++) for (let o = 0; o < cout; o++) out[(k * cin + i) * cout + o] = r.data[(o * cin + i) * K + k];
  return { shape: [...shape], data: out };
}

/** Row of the Keras kernel that feeds PyTorch input feature j (identity without a reorder). */
function kerasRow(j: number, reorder: TfjsParamPlan['reorder']): number {
  if (!reorder) return j;
  const c = Math.floor(j / reorder.spatial);
  const s = j % reorder.spatial;
  return s * reorder.channels + c;
}

function denseToPytorch(r: ArrayRecord, reorder: TfjsParamPlan['reorder']): ArrayRecord {
  const [nin, nout] = r.shape;
  const out = new Float32Array(r.data.length);
  for (let o = 0; o < nout; o++) for (let j = 0; j < nin; j++) out[o * nin + j] = r.data[kerasRow(j, reorder) * nout + o];
  return { shape: [nout, nin], data: out };
}

function denseToKeras(r: ArrayRecord, reorder: TfjsParamPlan['reorder']): ArrayRecord {
  const [nout, nin] = r.shape;
  const out = new Float32Array(r.data.length);
  for (let o = 0; o < nout; o++) for (let j = 0; j < nin; j++) out[kerasRow(j, reorder) * nout + o] = r.data[o * nin + j];
  return { shape: [nin, nout], data: out };
}

/** One plan applied to the Keras weights: the PyTorch-layout tensor. */
function toPytorch(p: TfjsParamPlan, tensors: ReadonlyMap<string, ArrayRecord>): ArrayRecord {
  if (p.kind === 'fill') return { shape: [...p.fill!.shape], data: new Float32Array(prod(p.fill!.shape)).fill(p.fill!.value) };
  const r = tensors.get(p.keras!)!;
  if (p.kind === 'dense') return denseToPytorch(r, p.reorder);
  if (p.kind === 'conv') return convToPytorch(r, p.view ?? r.shape);
  return { shape: [...r.shape], data: r.data };
}

/**
 * Keras-named, Keras-layout weights → PyTorch names and layouts (see the module comment), with
 * the spec inferred on the way. `names` maps each PyTorch name to its Keras weight.
 */
export function tfjsToPytorchLayout(model: { topology: KerasTopology; tensors: StateDict; source?: string }, opts: ImportTfjsOptions = {}): { tensors: StateDict; names: Map<string, string>; spec: TfjsSpecResult } {
  const spec = inferSpecFromTfjs(model, opts);
  const tensors: StateDict = new Map();
  const names = new Map<string, string>();
  for (const p of spec.params) {
    tensors.set(p.pytorch, toPytorch(p, model.tensors));
    if (p.keras) names.set(p.pytorch, p.keras);
  }
  return { tensors, names, spec };
}

/** The inverse of `tfjsToPytorchLayout`: PyTorch names/layouts back to the model's Keras names/layouts. */
export function pytorchToTfjsLayout(model: { topology: KerasTopology; tensors: StateDict; source?: string }, pytorch: ReadonlyMap<string, ArrayRecord>): StateDict {
  const spec = inferSpecFromTfjs(model);
  const out: StateDict = new Map();
  for (const p of spec.params) {
    if (!p.keras) continue;
    const r = pytorch.get(p.pytorch);
    if (!r) throw new InputError(`pytorchToTfjsLayout: tensor "${p.pytorch}" (Keras "${p.keras}") is missing`);
    const shape = model.tensors.get(p.keras)!.shape;
    const back = p.kind === 'dense' ? denseToKeras(r, p.reorder) : p.kind === 'conv' ? convToKeras(r, shape) : { shape: [...r.shape], data: r.data };
    out.set(p.keras, back);
  }
  // Keep the manifest's order.
  const ordered: StateDict = new Map();
  for (const name of model.tensors.keys()) if (out.has(name)) ordered.set(name, out.get(name)!);
  return ordered;
}
