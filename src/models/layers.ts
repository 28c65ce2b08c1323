/**
 * The layer kinds a ModelGraph is made of: what each node kind means is one entry of `LAYERS`
 * (its tensors, output shape, forward step, optional fused kernel, channel flow and role for
 * activation matching). graph.ts walks graphs and asks this table; builders (mlp, vgg, resnet)
 * and importers (ONNX, TF.js) only emit nodes. A new layer kind is its fields in `NodeFields` plus
 * its `LAYERS` entry.
 *
 * Shapes are per sample (the batch axis is left out) and so are the axes nodes name; an unknown
 * dimension (a dynamic size in an imported graph) is NaN. Values read from the parameters
 * (`param`) or written into the graph (`constant`) have no batch axis: they broadcast against the
 * batched values, right-aligned as in NumPy. Tensor names are PyTorch state_dict names, layouts
 * PyTorch's (Linear [out, in], Conv2d [out, in/groups, kh, kw]).
 */
import { F, Tensor, type DType } from '../core/index.js';
import type { Conv2dOptions } from '../core/ops/nn.js';
import type { Rng } from '../core/random.js';
import { InputError } from '../errors.js';
import { isChan, isSegmented, isWithin, refsOf, type AxisRef, type ChanRef, type SpecFlow, type WithinRef } from '../permutation/flow.js';
import type { Params } from '../state/params.js';


/** Element-wise functions of one value (`unary` nodes), with what activation matching reads. */
export const UNARY_FNS = {
  relu: { f: (x: Tensor) => F.relu(x), nonlinearity: true },
  sigmoid: { f: (x: Tensor) => F.sigmoid(x), nonlinearity: true },
  tanh: { f: (x: Tensor) => F.tanh(x), nonlinearity: true },
  gelu: { f: (x: Tensor) => F.gelu(x, 'none'), nonlinearity: true },
  'gelu-tanh': { f: (x: Tensor) => F.gelu(x, 'tanh'), nonlinearity: true },
  silu: { f: (x: Tensor) => F.silu(x), nonlinearity: true },
  mish: { f: (x: Tensor) => F.mish(x), nonlinearity: true },
  hardswish: { f: (x: Tensor) => F.hardSwish(x), nonlinearity: true },
  hardsigmoid: { f: (x: Tensor, a = 0.2, b = 0.5) => F.hardSigmoid(x, a, b), nonlinearity: true },
  leakyrelu: { f: (x: Tensor, a = 0.01) => F.leakyRelu(x, a), nonlinearity: true },
  elu: { f: (x: Tensor, a = 1) => F.elu(x, a), nonlinearity: true },
  selu: { f: (x: Tensor) => F.selu(x), nonlinearity: true },
  softplus: { f: (x: Tensor) => F.softplus(x), nonlinearity: true },
  clip: { f: (x: Tensor, lo = -Infinity, hi = Infinity) => F.clip(x, lo, hi), nonlinearity: true },
  erf: { f: (x: Tensor) => F.erf(x), nonlinearity: false },
  exp: { f: (x: Tensor) => F.exp(x), nonlinearity: false },
  log: { f: (x: Tensor) => F.log(x), nonlinearity: false },
  abs: { f: (x: Tensor) => F.abs(x), nonlinearity: false },
  neg: { f: (x: Tensor) => F.neg(x), nonlinearity: false },
  sqrt: { f: (x: Tensor) => F.sqrt(x), nonlinearity: false },
  reciprocal: { f: (x: Tensor) => F.reciprocal(x), nonlinearity: false },
  sin: { f: (x: Tensor) => F.sin(x), nonlinearity: false },
  cos: { f: (x: Tensor) => F.cos(x), nonlinearity: false },
} satisfies Record<string, { f: (x: Tensor, alpha?: number, beta?: number) => Tensor; nonlinearity: boolean }>;
export type UnaryFn = keyof typeof UNARY_FNS;

/** Element-wise functions of two values with broadcasting (`binary` nodes). */
export const BINARY_FNS = {
  add: (a: Tensor, b: Tensor) => F.add(a, b),
  sub: (a: Tensor, b: Tensor) => F.sub(a, b),
  mul: (a: Tensor, b: Tensor) => F.mul(a, b),
  div: (a: Tensor, b: Tensor) => F.div(a, b),
  pow: (a: Tensor, b: Tensor) => F.pow(a, b),
  max: (a: Tensor, b: Tensor) => F.maximum(a, b),
  min: (a: Tensor, b: Tensor) => F.minimum(a, b),
  /** PRelu: x where x ≥ 0, slope·x elsewhere. */
  prelu: (x: Tensor, slope: Tensor) => F.add(F.relu(x), F.mul(slope, F.neg(F.relu(F.neg(x))))),
} satisfies Record<string, (a: Tensor, b: Tensor) => Tensor>;
export type BinaryFn = keyof typeof BINARY_FNS;

/** Reductions (`reduce` nodes) over per-sample axes. */
export const REDUCE_FNS = {
  mean: (x: Tensor, axes: number[], keep: boolean) => F.mean(x, axes, keep),
  sum: (x: Tensor, axes: number[], keep: boolean) => F.sum(x, axes, keep),
  max: (x: Tensor, axes: number[], keep: boolean) => axes.reduceRight((t, a) => F.max(t, a, keep), x),
  min: (x: Tensor, axes: number[], keep: boolean) => F.neg(axes.reduceRight((t, a) => F.max(t, a, keep), F.neg(x))),
  sumsquare: (x: Tensor, axes: number[], keep: boolean) => F.sum(F.square(x), axes, keep),
  l2: (x: Tensor, axes: number[], keep: boolean) => F.sqrt(F.sum(F.square(x), axes, keep)),
} satisfies Record<string, (x: Tensor, axes: number[], keep: boolean) => Tensor>;
export type ReduceFn = keyof typeof REDUCE_FNS;

type Pair = [number, number];
type Quad = [number, number, number, number];

/**
 * The fields of each layer kind's node beyond `op` and `id`. Every key needs an entry in `LAYERS`
 * below (the compiler checks it): adding a layer kind is one line here and one entry there.
 */
interface NodeFields {
  /** The network input; `shape` is per sample ([features], [C, H, W] or [T, D]). */
  input: { shape: number[] };
  /**
   * PyTorch Linear on the last axis; `weightLayout` 'in-out' stores the weight [in, out] (x @ W);
   * `tied`: the weight is another node's (an output head tied to the token embedding).
   */
  linear: { input: string; weight: string; bias: string | null; inFeatures: number; outFeatures: number; weightLayout?: 'out-in' | 'in-out'; tied?: boolean };
  /** Rows of a table (a `param` node, [V, D]) picked by the integer ids of `inputs[1]`: a token embedding. */
  lookup: { inputs: [string, string] };
  /**
   * PyTorch Conv2d. `kernel`/`stride` a number or [h, w]; `padding` a number or [top, left,
   * bottom, right]; `groups` > 1: weight [out, in/groups, kh, kw] (depthwise: groups = in = out).
   */
  conv2d: {
    input: string; weight: string; bias: string | null;
    inChannels: number; outChannels: number; kernel: number | Pair; stride: number | Pair; padding: number | Quad;
    dilation?: number | Pair; groups?: number;
  };
  /** BatchNorm over channels (per-sample axis 0); γ, β and the running statistics. */
  batchnorm: {
    input: string; channels: number;
    weight: string; bias: string; runningMean: string; runningVar: string; eps: number; momentum: number;
  };
  /** LayerNorm over the last `shape.length` axes, with optional affine tensors of that shape. */
  layernorm: { input: string; shape: number[]; weight: string | null; bias: string | null; eps: number };
  /** InstanceNorm over the spatial axes of each sample and channel, affine per channel. */
  instancenorm: { input: string; channels: number; weight: string; bias: string; eps: number };
  relu: { input: string };
  tanh: { input: string };
  /** Any other element-wise function (see UNARY_FNS); `alpha`/`beta` are its parameters (clip: min/max). */
  unary: { input: string; fn: UnaryFn; alpha?: number; beta?: number };
  dropout: { input: string; p: number };
  maxpool2d: { input: string; kernel: number; stride: number; padding: number };
  avgpool2d: { input: string; kernel: number; stride: number; padding: number };
  adaptiveavgpool2d: { input: string; size: [number, number] };
  /** General 2-D pooling (ONNX MaxPool/AveragePool): asymmetric padding, dilation, ceil mode. */
  pool2d: {
    input: string; kind: 'max' | 'avg'; kernel: Pair; stride: Pair; padding: Quad;
    dilation?: Pair; ceilMode?: boolean; countIncludePad?: boolean;
  };
  /** Global pooling over every axis after the channels, kept as size 1 ([C, 1, 1]). */
  globalpool: { input: string; kind: 'max' | 'avg' };
  /** Residual sum of same-shape inputs. */
  add: { inputs: string[] };
  /** Element-wise function of two values with NumPy broadcasting (see BINARY_FNS). */
  binary: { inputs: [string, string]; fn: BinaryFn };
  /** Batched matrix product of two values (attention); broadcasting over leading axes. */
  matmul: { inputs: [string, string] };
  /** Reduction over per-sample `axes`. */
  reduce: { input: string; fn: ReduceFn; axes: number[]; keepdims: boolean };
  /** (Log-)softmax along a per-sample axis. */
  softmax: { input: string; axis: number; log: boolean };
  /** [N, C, h, w] → [N, C·h·w], channel-major; `inner` = h·w, checked at run time. */
  flatten: { input: string; inner: number };
  /** Reshape that keeps the batch axis: `shape` is the per-sample target. */
  reshape: { input: string; shape: number[] };
  /** Permutes the per-sample axes. */
  transpose: { input: string; perm: number[] };
  /** Joins values along a per-sample axis. */
  concat: { inputs: string[]; axis: number };
  /** [start, end) with step 1 along a per-sample axis. */
  slice: { input: string; axis: number; start: number; end: number };
  /** Picks entries by constant indices along a per-sample axis; `indexShape` [] drops the axis. */
  gather: { input: string; axis: number; index: number[]; indexShape: number[] };
  /** Constant padding of the per-sample axes: [begin per axis..., end per axis...] (negative crops). */
  pad: { input: string; pads: number[]; value: number };
  /** Resizes the spatial axes of [C, H, W] to `size`. */
  resize: { input: string; mode: 'nearest' | 'linear'; size: Pair; alignCorners: boolean };
  /** A parameter used as a value (a bias added by Add, a layer scale, a positional embedding): no batch axis. */
  param: { name: string; shape: number[]; view?: number[] };
  /** A constant written into the graph: no batch axis. */
  constant: { shape: number[]; values: number[] };
  /**
   * Gives an unbatched value (`inputs[0]`: a param or constant, e.g. ViT's class token) the batch
   * axis of `inputs[1]`: one copy per sample (ONNX Expand to [N, ...]). Per-sample shape: the value's.
   */
  broadcast: { inputs: [string, string] };
  /**
   * An op the graph cannot run (an imported model's unsupported or custom op). Spec inference
   * still goes through it (its channel groups are fixed); running the graph refuses, naming it.
   */
  opaque: { inputs: string[]; opType: string; reason: string; shape: number[] };
  /** Marks the logits: their channels are never permuted. */
  output: { input: string };
}

export type LayerOp = keyof NodeFields;
/** The node of one layer kind. */
export type NodeOf<K extends LayerOp> = { op: K; id: string } & NodeFields[K];
export type GraphNode = { [K in LayerOp]: NodeOf<K> }[LayerOp];

export interface ModelGraph {
  nodes: GraphNode[];
}

/** Shape and role of every tensor a graph owns, in state_dict order. */
export interface TensorInfo {
  name: string;
  shape: number[];
  kind: 'weight' | 'bias' | 'norm-weight' | 'norm-bias' | 'running-mean' | 'running-var' | 'other';
  /** Fan-in of the owning linear/conv (for the default init). */
  fanIn: number;
  buffer: boolean;
}

export interface RunContext {
  training: boolean;
  /** BN running statistics. Without them BN always uses batch statistics (track_running_stats=False). */
  buffers?: Params;
  /** Needed for dropout with p > 0 in training. */
  rng?: Rng;
}

/** What a layer's forward step reads besides its input values. */
export interface ForwardEnv {
  params: Params;
  ctx: RunContext;
  /** The batch (read by the input node). */
  x: Tensor;
  dtype: DType;
}

/** A value's channels: one entry per per-sample axis (null: positions or nothing to permute; segmented: a concatenation). */
export type AxisRefs = AxisRef[];

/** What a node's channel rule sees besides its inputs' channels. */
export interface FlowEnv {
  flow: SpecFlow;
  /** Per-sample shapes of the inputs and of the output (NaN: unknown). */
  inShapes: number[][];
  outShape: number[];
  /** For messages: `node "<id>"`. */
  where: string;
}

/** Everything the graph functions need to know about one layer kind. */
export interface LayerKind<N extends { op: LayerOp; id: string }> {
  /** Parameters and buffers the node owns, in state_dict order (initGraph fills them in this order). Default: none. */
  tensors?(n: N): TensorInfo[];
  /** Per-sample output shape from the inputs' shapes; throws when they do not fit. */
  shape(n: N, ins: number[][]): number[];
  /** The forward pass of the node on its input values. */
  forward(n: N, ins: Tensor[], env: ForwardEnv): Tensor;
  /** A kernel computing this node and the next one at once (same values and gradients), used when the next node has op `next` and is this node's only reader. */
  fused?: { next: LayerOp; forward(n: N, ins: Tensor[], env: ForwardEnv): Tensor };
  /** The channels of the output from the inputs' (spec inference). Default: element-wise (the first input's channels pass on). */
  channels?(n: N, ins: AxisRefs[], env: FlowEnv): AxisRefs;
  /** Where activation matching reads a permutation's activations: at its nonlinearities, else its residual sums, else its last node. */
  activation?: (n: N) => 'nonlinearity' | 'residual' | null;
}

function need(params: Params, name: string): Tensor {
  const t = params.get(name);
  if (!t) throw new InputError(`forward: parameter "${name}" is missing`);
  return t;
}

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const fmt = (s: readonly number[]) => `[${s.map((d) => (Number.isNaN(d) ? '?' : d)).join(', ')}]`;
/** Equal, or unknown on either side. */
const fits = (a: number, b: number) => Number.isNaN(a) || Number.isNaN(b) || a === b;
const pair = (v: number | Pair): Pair => (typeof v === 'number' ? [v, v] : v);
const quad = (v: number | Quad): Quad => (typeof v === 'number' ? [v, v, v, v] : v);
/** A per-sample axis as a full-tensor axis (the batch is axis 0). */
const full = (axis: number) => axis + 1;

/** Weight [out, in, ...kernel] and optional bias of a linear/conv, initialised by fan-in. */
function weightAndBias(weight: string, bias: string | null, shape: number[], fanIn: number): TensorInfo[] {
  const out: TensorInfo[] = [{ name: weight, shape, kind: 'weight', fanIn, buffer: false }];
  if (bias) out.push({ name: bias, shape: [shape[0]], kind: 'bias', fanIn, buffer: false });
  return out;
}

/** Output size of a window along one axis (PyTorch/ONNX arithmetic). */
function windowSize(n: number, k: number, stride: number, padBegin: number, padEnd: number, dilation = 1, ceil = false): number {
  const span = n + padBegin + padEnd - (dilation * (k - 1) + 1);
  let o = (ceil ? Math.ceil(span / stride) : Math.floor(span / stride)) + 1;
  // Ceil mode: the last window must start inside the input or the left padding.
  if (ceil && (o - 1) * stride >= n + padBegin) o--;
  return o;
}

/** Output of a k×k window with stride and padding on a per-sample [C, H, W] shape. */
const windowShape = (s: number[], k: number, st: number, p: number) => [s[0], windowSize(s[1], k, st, p, p), windowSize(s[2], k, st, p, p)];

function convOpts(n: NodeOf<'conv2d'>, relu: boolean): Conv2dOptions {
  const o: Conv2dOptions = { stride: n.stride, padding: n.padding, relu };
  if (n.dilation !== undefined && pair(n.dilation).some((d) => d !== 1)) o.dilation = n.dilation;
  if ((n.groups ?? 1) !== 1) o.groups = n.groups;
  return o;
}

function conv(n: NodeOf<'conv2d'>, x: Tensor, env: ForwardEnv, relu: boolean): Tensor {
  return F.conv2d(x, need(env.params, n.weight), n.bias ? need(env.params, n.bias) : null, convOpts(n, relu));
}

/** Fixes the groups of every channel ref given (an op that mixes or reorders channels in a way no permutation follows). */
function fixRefs(env: FlowEnv, axes: AxisRef[], reason: string): void {
  const why = `${env.where}: ${reason}`;
  const refs = axes.flatMap(refsOf);
  const fresh = refs.filter((r) => !env.flow.isFixed(r.space));
  for (const r of refs) env.flow.fix(r.space, why);
  // One warning per node, and none when the groups were fixed for the input or output anyway.
  if (fresh.length) env.flow.warnIfMatters(`${why}: the channel groups it touches are left unpermuted`, fresh.map((r) => r.space));
}

/** Output channels of a node with no rule that keeps them: fresh, fixed spaces (and the inputs' groups fixed). */
function opaqueChannels(env: FlowEnv, ins: AxisRefs[], reason: string): AxisRefs {
  const all = ins.flat().flatMap(refsOf);
  const touched = all.filter((r) => !env.flow.isFixed(r.space));
  for (const r of all) env.flow.fix(r.space, `${env.where}: ${reason}`);
  if (touched.length) env.flow.warnIfMatters(`${env.where}: ${reason}: the channel groups it touches are left unpermuted`, touched.map((r) => r.space));
  return env.outShape.map((d) => {
    const s = env.flow.newSpace(d, null);
    env.flow.fix(s, `${env.where}: ${reason}`);
    return { space: s, inner: 1 };
  });
}

/**
 * Channels of an element-wise op of several operands with NumPy broadcasting: per output axis,
 * the operands that span it (not broadcast) must carry the same channels — their spaces are
 * joined — and a full-length axis without channels (a constant) fixes the others' group.
 */
function broadcastChannels(ins: AxisRefs[], env: FlowEnv): AxisRefs {
  const rank = env.outShape.length;
  const out: AxisRefs = [];
  for (let j = 0; j < rank; j++) {
    const spanning = ins.map((refs, k) => {
      const i = j - (rank - refs.length);
      const d = env.inShapes[k][i];
      return i < 0 || d === 1 ? undefined : refs[i];
    }).filter((r) => r !== undefined);
    const within = spanning.filter((r): r is WithinRef => r !== null && isWithin(r));
    if (within.length) {
      // Head dimensions combined element-wise (a scale, a mask): the same heads, so one split.
      if (within.length === spanning.length) {
        for (const w of within.slice(1)) env.flow.union(within[0].parent, w.parent, env.where);
        out.push(within[0]);
      } else {
        fixRefs(env, spanning as AxisRef[], 'combines head dimensions with other values element-wise');
        out.push(null);
      }
      continue;
    }
    const refs = spanning.filter((r): r is ChanRef => r !== null && isChan(r));
    if (spanning.some((r) => r !== null && isSegmented(r))) {
      // Concatenations combined element-wise: not followed (a rare pattern), fixed.
      fixRefs(env, spanning as AxisRef[], 'combines concatenated channels element-wise');
      out.push(null);
      continue;
    }
    if (refs.length === 0) {
      out.push(null);
      continue;
    }
    if (refs.length < spanning.length) {
      // A channel-length operand without channels (a constant): the channels cannot move.
      fixRefs(env, refs, 'a per-channel operand that is not a parameter');
    }
    for (const r of refs.slice(1)) env.flow.unionRefs(refs[0], r, env.where);
    out.push(refs[0]);
  }
  return out;
}

/** The output of a linear/conv opens a channel space; its weight takes it and the input's channels. */
function openSpace(env: FlowEnv, n: { id: string; weight: string; bias: string | null }, size: number, weightAxes: (own: ChanRef) => AxisRef[], weightShape: number[]): ChanRef {
  const own: ChanRef = { space: env.flow.newSpace(size, n.id, n.weight), inner: 1 };
  env.flow.setTensor(n.weight, weightShape, weightAxes(own), env.where);
  if (n.bias) env.flow.setTensor(n.bias, [size], [own], env.where);
  return own;
}

/**
 * Channels of a windowed op on [C, H, W] (pooling, resizing): the channels pass on; channels that
 * reached a spatial axis (through a transpose or a split) are positions here, mixed by the window.
 */
function spatialChannels(ins: AxisRefs[], env: FlowEnv, keep = true): AxisRefs {
  const [c, ...space] = ins[0];
  const moved = space.filter((r) => r !== null);
  if (moved.length) fixRefs(env, moved, 'mixes positions that carry channels');
  return [c, ...space.map((r) => (keep && r && refsOf(r).every((x) => env.flow.isFixed(x.space)) ? r : null))];
}

const identityShape = <N>(_n: N, [i]: number[][]) => i;
const nonlinearity = () => 'nonlinearity' as const;

/** The layer kinds: one entry per op. */
export const LAYERS: { [K in LayerOp]: LayerKind<NodeOf<K>> } = {
  input: {
    shape: (n) => [...n.shape],
    forward: (n, _ins, { x }) => {
      const per = x.shape.slice(1);
      if (per.length === n.shape.length && per.every((d, i) => fits(n.shape[i], d))) return x;
      const want = prod(n.shape);
      if (x.ndim < 2 || prod(per) !== want) {
        throw new InputError(`forward: input [${x.shape.join(', ')}] does not match per-sample shape ${fmt(n.shape)}`);
      }
      return F.reshape(x, [x.shape[0], ...n.shape]); // e.g. MNIST [N,1,28,28] into an MLP
    },
    // The network input's channels are never permuted.
    channels: (n, _ins, { flow }) => n.shape.map((d) => {
      const s = flow.newSpace(d, null);
      flow.fix(s, 'network input');
      return { space: s, inner: 1 };
    }),
  },
  linear: {
    tensors: (n) => weightAndBias(n.weight, n.bias, n.weightLayout === 'in-out' ? [n.inFeatures, n.outFeatures] : [n.outFeatures, n.inFeatures], n.inFeatures).slice(n.tied ? 1 : 0),
    shape: (n, [i]) => {
      if (i.length < 1 || !fits(i[i.length - 1], n.inFeatures)) throw new InputError(`ModelGraph: linear "${n.id}" expects [..., ${n.inFeatures}] but gets ${fmt(i)}`);
      return [...i.slice(0, -1), n.outFeatures];
    },
    forward: (n, [x], { params }) => {
      const w = need(params, n.weight);
      const b = n.bias ? need(params, n.bias) : null;
      if (n.weightLayout !== 'in-out') return F.linear(x, w, b);
      const y = x.ndim === 2 ? F.matmul(x, w) : F.reshape(F.matmul(F.reshape(x, [-1, n.inFeatures]), w), [...x.shape.slice(0, -1), n.outFeatures]);
      return b ? F.add(y, b) : y;
    },
    channels: (n, [i], env) => {
      const last = i[i.length - 1];
      const inOut = n.weightLayout === 'in-out';
      const own = openSpace(env, n, n.outFeatures, (o) => (inOut ? [last, o] : [o, last]), inOut ? [n.inFeatures, n.outFeatures] : [n.outFeatures, n.inFeatures]);
      return [...i.slice(0, -1), own];
    },
  },
  conv2d: {
    tensors: (n) => {
      const [kh, kw] = pair(n.kernel);
      const cg = n.inChannels / (n.groups ?? 1);
      return weightAndBias(n.weight, n.bias, [n.outChannels, cg, kh, kw], cg * kh * kw);
    },
    shape: (n, [i]) => {
      if (i.length !== 3 || !fits(i[0], n.inChannels)) throw new InputError(`ModelGraph: conv2d "${n.id}" expects ${n.inChannels} channels but gets ${fmt(i)}`);
      const [kh, kw] = pair(n.kernel);
      const [sh, sw] = pair(n.stride);
      const [pt, pl, pb, pr] = quad(n.padding);
      const [dh, dw] = pair(n.dilation ?? 1);
      return [n.outChannels, windowSize(i[1], kh, sh, pt, pb, dh), windowSize(i[2], kw, sw, pl, pr, dw)];
    },
    forward: (n, [x], env) => conv(n, x, env, false),
    // conv → relu with nothing else reading the conv: one fused kernel.
    fused: { next: 'relu', forward: (n, [x], env) => conv(n, x, env, true) },
    channels: (n, [i], env) => {
      const [kh, kw] = pair(n.kernel);
      const groups = n.groups ?? 1;
      const inRef = i[0];
      spatialChannels([i], env);
      const wShape = [n.outChannels, n.inChannels / groups, kh, kw];
      if (inRef && isChan(inRef) && inRef.inner !== 1) fixRefs(env, [inRef], 'a convolution reads flattened channels');
      if (groups === 1) return [openSpace(env, n, n.outChannels, (o) => [o, inRef, null, null], wShape), null, null];
      if (groups === n.inChannels && n.outChannels === n.inChannels && inRef && refsOf(inRef).every((r) => !env.flow.isFixed(r.space))) {
        // Depthwise: output channel c reads input channel c only, so it follows its input.
        env.flow.setTensor(n.weight, wShape, [inRef, null, null, null], env.where);
        if (n.bias) env.flow.setTensor(n.bias, [n.outChannels], [inRef], env.where);
        return [inRef, null, null];
      }
      // Other groupings would need block permutations: fixed.
      env.flow.setTensor(n.weight, wShape, [null, null, null, null], env.where);
      if (n.bias) env.flow.setTensor(n.bias, [n.outChannels], [null], env.where);
      return opaqueChannels(env, [[inRef]], `grouped convolution (groups ${groups})`);
    },
  },
  lookup: {
    shape: (n, [table, ids]) => {
      if (table.length !== 2) throw new InputError(`ModelGraph: lookup "${n.id}" needs a [rows, features] table, got ${fmt(table)}`);
      return [...ids, table[1]];
    },
    forward: (n, [table, ids]) => {
      const idx = new Int32Array(ids.size);
      const rows = table.shape[0];
      for (let j = 0; j < ids.size; j++) {
        const v = ids.data[j];
        if (!(Number.isInteger(v) && v >= 0 && v < rows)) throw new InputError(`forward: lookup "${n.id}" got id ${v} at position ${j}, outside [0, ${rows})`);
        idx[j] = v;
      }
      return F.gather(table, 0, idx, ids.shape);
    },
    // The ids pick rows: the rows belong to the network input's ids and cannot move; the
    // features keep the table's channels.
    channels: (_n, [table, ids], env) => {
      for (const r of refsOf(table[0])) env.flow.fix(r.space, 'network input');
      return [...ids.map(() => null), table[1]];
    },
  },
  batchnorm: {
    tensors: (n) => {
      const s = [n.channels];
      return [
        { name: n.weight, shape: s, kind: 'norm-weight', fanIn: 0, buffer: false },
        { name: n.bias, shape: s, kind: 'norm-bias', fanIn: 0, buffer: false },
        { name: n.runningMean, shape: s, kind: 'running-mean', fanIn: 0, buffer: true },
        { name: n.runningVar, shape: s, kind: 'running-var', fanIn: 0, buffer: true },
      ];
    },
    shape: (n, [i]) => {
      if (!fits(i[0], n.channels)) throw new InputError(`ModelGraph: batchnorm "${n.id}" expects ${n.channels} channels but gets ${fmt(i)}`);
      return i;
    },
    forward: (n, [x], { params, ctx }) => {
      const rm = ctx.buffers?.get(n.runningMean);
      const rv = ctx.buffers?.get(n.runningVar);
      if (ctx.buffers && (!rm || !rv)) throw new InputError(`forward: buffers are given but "${!rm ? n.runningMean : n.runningVar}" is missing`);
      const state = rm && rv ? { runningMean: rm, runningVar: rv } : null;
      return F.batchNorm(x, need(params, n.weight), need(params, n.bias), state, { training: ctx.training, eps: n.eps, momentum: n.momentum });
    },
    // γ, β and the running statistics follow their producer's channels.
    channels: (n, [i], env) => {
      for (const name of [n.weight, n.bias, n.runningMean, n.runningVar]) env.flow.setTensor(name, [n.channels], [i[0]], env.where);
      return i;
    },
  },
  layernorm: {
    tensors: (n) => [
      ...(n.weight ? [{ name: n.weight, shape: [...n.shape], kind: 'norm-weight' as const, fanIn: 0, buffer: false }] : []),
      ...(n.bias ? [{ name: n.bias, shape: [...n.shape], kind: 'norm-bias' as const, fanIn: 0, buffer: false }] : []),
    ],
    shape: (n, [i]) => {
      const k = n.shape.length;
      if (i.length < k || n.shape.some((d, j) => !fits(i[i.length - k + j], d))) throw new InputError(`ModelGraph: layernorm "${n.id}" normalises ${fmt(n.shape)} but gets ${fmt(i)}`);
      return i;
    },
    forward: (n, [x], { params }) => F.layerNorm(x, n.shape.length, n.weight ? need(params, n.weight) : null, n.bias ? need(params, n.bias) : null, n.eps),
    // Statistics over the channels are symmetric functions of them: LayerNorm commutes with
    // permuting the channels; its affine tensors follow them.
    channels: (n, [i], env) => {
      const axes = i.slice(i.length - n.shape.length);
      for (const name of [n.weight, n.bias]) if (name) env.flow.setTensor(name, n.shape, axes, env.where);
      return i;
    },
  },
  instancenorm: {
    tensors: (n) => [
      { name: n.weight, shape: [n.channels], kind: 'norm-weight', fanIn: 0, buffer: false },
      { name: n.bias, shape: [n.channels], kind: 'norm-bias', fanIn: 0, buffer: false },
    ],
    shape: (n, [i]) => {
      if (i.length < 2 || !fits(i[0], n.channels)) throw new InputError(`ModelGraph: instancenorm "${n.id}" expects ${n.channels} channels but gets ${fmt(i)}`);
      return i;
    },
    forward: (n, [x], { params }) => F.instanceNorm(x, need(params, n.weight), need(params, n.bias), n.eps),
    channels: (n, [i], env) => {
      for (const name of [n.weight, n.bias]) env.flow.setTensor(name, [n.channels], [i[0]], env.where);
      return i;
    },
  },
  relu: { shape: identityShape, forward: (_n, [x]) => F.relu(x), activation: nonlinearity },
  tanh: { shape: identityShape, forward: (_n, [x]) => F.tanh(x), activation: nonlinearity },
  unary: {
    shape: identityShape,
    forward: (n, [x]) => {
      const fn = UNARY_FNS[n.fn] as { f: (x: Tensor, a?: number, b?: number) => Tensor } | undefined;
      if (!fn) throw new InputError(`forward: unary "${n.id}" has unknown function "${n.fn as string}"`);
      return fn.f(x, n.alpha, n.beta);
    },
    activation: (n) => (UNARY_FNS[n.fn]?.nonlinearity ? 'nonlinearity' : null),
  },
  dropout: {
    shape: identityShape,
    forward: (n, [x], { ctx }) => {
      if (!(ctx.training && n.p > 0)) return x;
      if (!ctx.rng) throw new Error(`forward: dropout "${n.id}" needs ctx.rng in training mode`);
      return F.dropout(x, n.p, ctx.rng, true);
    },
  },
  maxpool2d: { shape: (n, [i]) => windowShape(i, n.kernel, n.stride, n.padding), forward: (n, [x]) => F.maxPool2d(x, n.kernel, n.stride, n.padding), channels: (_n, ins, env) => spatialChannels(ins, env) },
  avgpool2d: { shape: (n, [i]) => windowShape(i, n.kernel, n.stride, n.padding), forward: (n, [x]) => F.avgPool2d(x, n.kernel, n.stride, n.padding), channels: (_n, ins, env) => spatialChannels(ins, env) },
  adaptiveavgpool2d: { shape: (n, [i]) => [i[0], n.size[0], n.size[1]], forward: (n, [x]) => F.adaptiveAvgPool2d(x, n.size[0], n.size[1]), channels: (_n, ins, env) => spatialChannels(ins, env) },
  pool2d: {
    shape: (n, [i]) => {
      if (i.length !== 3) throw new InputError(`ModelGraph: pool2d "${n.id}" expects [C, H, W] but gets ${fmt(i)}`);
      const [dh, dw] = n.dilation ?? [1, 1];
      const c = n.ceilMode ?? false;
      return [i[0], windowSize(i[1], n.kernel[0], n.stride[0], n.padding[0], n.padding[2], dh, c), windowSize(i[2], n.kernel[1], n.stride[1], n.padding[1], n.padding[3], dw, c)];
    },
    forward: (n, [x]) => F.pool2d(x, { kind: n.kind, kernel: n.kernel, stride: n.stride, padding: n.padding, dilation: n.dilation, ceilMode: n.ceilMode, countIncludePad: n.countIncludePad }),
    channels: (_n, ins, env) => spatialChannels(ins, env),
  },
  globalpool: {
    shape: (_n, [i]) => [i[0], ...i.slice(1).map(() => 1)],
    forward: (n, [x]) => {
      const axes = x.shape.slice(2).map((_, k) => k + 2);
      return n.kind === 'avg' ? F.mean(x, axes, true) : REDUCE_FNS.max(x, axes, true);
    },
    channels: (_n, [i]) => [i[0], ...i.slice(1).map(() => null)],
  },
  add: {
    shape: (n, all) => {
      if (all.some((a) => a.length !== all[0].length || a.some((d, j) => !fits(d, all[0][j])))) throw new InputError(`ModelGraph: add "${n.id}" sums different shapes ${all.map(fmt).join(' + ')}`);
      return all[0];
    },
    forward: (_n, ins) => ins.reduce((a, b) => F.add(a, b)),
    // Tensors added into one residual stream share one permutation.
    channels: (_n, ins, env) => broadcastChannels(ins, env),
    activation: () => 'residual',
  },
  binary: {
    shape: (n, [a, b]) => broadcastShape(`binary "${n.id}"`, a, b),
    forward: (n, [a, b]) => {
      const fn = BINARY_FNS[n.fn] as ((a: Tensor, b: Tensor) => Tensor) | undefined;
      if (!fn) throw new InputError(`forward: binary "${n.id}" has unknown function "${n.fn as string}"`);
      return fn(a, b);
    },
    channels: (_n, ins, env) => broadcastChannels(ins, env),
  },
  matmul: {
    shape: (n, [a, b]) => {
      if (a.length < 2 || b.length < 2 || !fits(a[a.length - 1], b[b.length - 2])) throw new InputError(`ModelGraph: matmul "${n.id}" of ${fmt(a)} and ${fmt(b)} does not chain`);
      const lead = broadcastShape(`matmul "${n.id}"`, a.slice(0, -2), b.slice(0, -2));
      return [...lead, a[a.length - 2], b[b.length - 1]];
    },
    forward: (_n, [a, b]) => F.matmul(a, b),
    channels: (_n, [a, b], env) => matmulChannels(a, b, env),
  },
  reduce: {
    shape: (n, [i]) => i.flatMap((d, j) => (n.axes.includes(j) ? (n.keepdims ? [1] : []) : [d])),
    forward: (n, [x]) => REDUCE_FNS[n.fn](x, n.axes.map(full), n.keepdims),
    // Over the channel axis the result is a symmetric function of the channels (LayerNorm's
    // statistics exported as ReduceMean/Sub/Pow/…): it carries none and broadcasts back.
    channels: (n, [i]) => i.flatMap((r, j) => (n.axes.includes(j) ? (n.keepdims ? [null] : []) : [r])),
  },
  softmax: {
    shape: identityShape,
    forward: (n, [x]) => (n.log ? F.logSoftmax(x, full(n.axis)) : F.softmax(x, full(n.axis))),
  },
  flatten: {
    shape: (n, [i]) => {
      const inner = prod(i.slice(1));
      if (!fits(inner, n.inner)) throw new InputError(`ModelGraph: flatten "${n.id}" records inner ${n.inner} but the map is ${fmt(i)}`);
      return [i[0] * n.inner];
    },
    forward: (n, [x]) => {
      const inner = prod(x.shape.slice(2));
      if (inner !== n.inner) throw new InputError(`forward: flatten "${n.id}" expects ${n.inner} positions per channel, got [${x.shape.join(', ')}]`);
      return F.flatten(x, 1);
    },
    channels: (n, [i], env) => mergeAxes(i, [0, i.length], n.inner, env),
  },
  reshape: {
    shape: (n, [i]) => {
      if (!fits(prod(i), prod(n.shape))) throw new InputError(`ModelGraph: reshape "${n.id}" of ${fmt(i)} to ${fmt(n.shape)} changes the size`);
      return [...n.shape];
    },
    forward: (n, [x]) => F.reshape(x, [x.shape[0], ...n.shape]),
    channels: (n, [i], env) => reshapeChannels(i, env.inShapes[0], n.shape, env),
  },
  transpose: {
    shape: (n, [i]) => {
      if (n.perm.length !== i.length || [...n.perm].sort().some((p, j) => p !== j)) throw new InputError(`ModelGraph: transpose "${n.id}" perm [${n.perm.join(', ')}] does not fit ${fmt(i)}`);
      return n.perm.map((p) => i[p]);
    },
    forward: (n, [x]) => F.permute(x, [0, ...n.perm.map(full)]),
    // Moving axes does not mix channels: each axis keeps its channels.
    channels: (n, [i]) => n.perm.map((p) => i[p]),
  },
  concat: {
    shape: (n, all) => {
      const out = [...all[0]];
      for (const s of all.slice(1)) {
        if (s.length !== out.length || s.some((d, j) => j !== n.axis && !fits(d, out[j]))) throw new InputError(`ModelGraph: concat "${n.id}" of ${all.map(fmt).join(', ')} off axis ${n.axis}`);
        out[n.axis] += s[n.axis];
      }
      return out;
    },
    forward: (n, ins) => F.concat(ins, full(n.axis)),
    channels: (n, ins, env) => {
      // Along other axes the parts are one stream; along the joined axis they are segments
      // (channel concatenation: fixed until the spec can say sub-ranges).
      const out: AxisRefs = [];
      for (let j = 0; j < env.outShape.length; j++) {
        const refs = ins.map((r) => r[j]);
        if (j === n.axis) {
          // Each part keeps its channels on its sub-range (spec format 2's segments).
          const lengths = env.inShapes.map((s) => s[j]);
          if (lengths.some((d) => !Number.isInteger(d))) {
            fixRefs(env, refs, 'concatenation of parts of unknown length');
            out.push(null);
            continue;
          }
          if (refs.some((r) => r && isWithin(r))) {
            fixRefs(env, refs, 'concatenates head dimensions');
            out.push(null);
            continue;
          }
          const segments = refs.flatMap((r, k) => (r && isSegmented(r) ? r.segments : [{ ref: r as ChanRef | null, length: lengths[k] }]));
          out.push(segments.some((g) => g.ref) ? { segments } : null);
          continue;
        }
        out.push(broadcastChannels(refs.map((r) => [r]), { ...env, inShapes: env.inShapes.map((s) => [s[j]]), outShape: [env.outShape[j]] })[0]);
      }
      return out;
    },
  },
  slice: {
    shape: (n, [i]) => {
      const s = [...i];
      if (!(n.start >= 0 && n.end >= n.start && (Number.isNaN(i[n.axis]) || n.end <= i[n.axis]))) throw new InputError(`ModelGraph: slice "${n.id}" [${n.start}, ${n.end}) does not fit ${fmt(i)}`);
      s[n.axis] = n.end - n.start;
      return s;
    },
    forward: (n, [x]) => F.slice(x, full(n.axis), n.start, n.end),
    // A slice of a channel axis (a fused QKV projection's thirds) is a part of its space.
    channels: (n, [i], env) => i.map((r, j) => {
      if (j !== n.axis || !r) return r;
      const part = isChan(r) && r.inner === 1 ? env.flow.part(r.space, n.start, n.end) : null;
      if (part !== null) return { space: part, inner: 1 };
      fixRefs(env, [r], 'slices the channel axis across its parts');
      return null;
    }),
  },
  gather: {
    shape: (n, [i]) => [...i.slice(0, n.axis), ...n.indexShape, ...i.slice(n.axis + 1)],
    forward: (n, [x]) => F.gather(x, full(n.axis), Int32Array.from(n.index), n.indexShape),
    channels: (n, [i], env) => {
      if (i[n.axis]) fixRefs(env, [i[n.axis]], 'picks channels by index');
      return [...i.slice(0, n.axis), ...n.indexShape.map(() => null), ...i.slice(n.axis + 1)];
    },
  },
  pad: {
    shape: (n, [i]) => i.map((d, j) => d + n.pads[j] + n.pads[j + i.length]),
    forward: (n, [x]) => F.pad(x, [0, ...n.pads.slice(0, n.pads.length / 2), 0, ...n.pads.slice(n.pads.length / 2)], n.value),
    channels: (n, [i], env) => i.map((r, j) => {
      if (!r || (n.pads[j] === 0 && n.pads[j + i.length] === 0)) return r;
      fixRefs(env, [r], 'pads the channel axis');
      return null;
    }),
  },
  resize: {
    shape: (n, [i]) => [i[0], n.size[0], n.size[1]],
    forward: (n, [x]) => (n.mode === 'nearest' ? F.resizeNearest(x, n.size[0], n.size[1]) : F.resizeBilinear(x, n.size[0], n.size[1], n.alignCorners)),
    channels: (_n, ins, env) => spatialChannels(ins, env, false),
  },
  param: {
    tensors: (n) => [{ name: n.name, shape: [...n.shape], kind: 'other', fanIn: 0, buffer: false }],
    // `view`: the stored shape without leading 1s (e.g. [1, T, D] broadcast as [T, D]).
    shape: (n) => [...(n.view ?? n.shape)],
    forward: (n, _ins, { params }) => (n.view ? F.reshape(need(params, n.name), n.view) : need(params, n.name)),
    // Each axis its own space, joined with the channels it is combined with (an unjoined axis
    // opens no permutation: only a linear/conv does).
    channels: (n, _ins, env) => {
      const view = n.view ?? n.shape;
      const refs = view.map((d) => ({ space: env.flow.newSpace(d, null), inner: 1 }));
      env.flow.setTensor(n.name, n.shape, [...Array<null>(n.shape.length - view.length).fill(null), ...refs], env.where);
      return refs;
    },
  },
  constant: {
    shape: (n) => [...n.shape],
    forward: (n, _ins, { dtype }) => new Tensor(dtype === 'float64' ? Float64Array.from(n.values) : Float32Array.from(n.values), n.shape),
    channels: (n) => n.shape.map(() => null),
  },
  broadcast: {
    shape: (_n, [v]) => [...v],
    forward: (_n, [v, like]) => F.expand(F.reshape(v, [1, ...v.shape]), [like.shape[0], ...v.shape]),
    // The copies carry the value's channels; the batch source's channels do not reach the output.
    channels: (_n, [v]) => v,
  },
  opaque: {
    shape: (n) => [...n.shape],
    forward: (n) => {
      throw new InputError(`node "${n.id}": op ${n.opType} cannot run in rebasin (${n.reason}); spec inference and weight matching still work`);
    },
    channels: (n, ins, env) => opaqueChannels(env, ins, n.reason),
  },
  output: {
    shape: identityShape,
    forward: (_n, [x]) => x,
    channels: (_n, [i], { flow }) => {
      for (const r of i.flatMap(refsOf)) flow.fix(r.space, 'model output');
      return i;
    },
  },
};

/** NumPy broadcast of two per-sample shapes (right-aligned). */
function broadcastShape(who: string, a: number[], b: number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let j = 0; j < rank; j++) {
    const x = a[j - (rank - a.length)] ?? 1;
    const y = b[j - (rank - b.length)] ?? 1;
    if (x !== 1 && y !== 1 && !fits(x, y)) throw new InputError(`ModelGraph: ${who} cannot broadcast ${fmt(a)} with ${fmt(b)}`);
    out.push(x === 1 ? y : Number.isNaN(x) ? y : x);
  }
  return out;
}

/**
 * Channels of a matrix product a[.., m, k] · b[.., k, n]: the leading axes broadcast as in an
 * element-wise op; the rows keep a's channels and the columns b's. The contracted axis is summed
 * over, so the product is unchanged when both operands permute it alike: its two sides join into
 * one group (attention's q·kᵀ joins q's and k's head dimensions, head by head, which needs the
 * heads on the same leading axis). Channels on one side only are mixed with positions: fixed.
 */
function matmulChannels(a: AxisRefs, b: AxisRefs, env: FlowEnv): AxisRefs {
  const [sa, sb] = env.inShapes;
  const lead = broadcastChannels([a.slice(0, -2), b.slice(0, -2)], { ...env, inShapes: [sa.slice(0, -2), sb.slice(0, -2)], outShape: env.outShape.slice(0, -2) });
  const ka = a[a.length - 1];
  const kb = b[b.length - 2];
  if (ka && kb && isChan(ka) && isChan(kb)) env.flow.unionRefs(ka, kb, env.where);
  else if (ka && kb && isWithin(ka) && isWithin(kb) && headsAligned(ka, kb, a.slice(0, -2), b.slice(0, -2), env)) env.flow.union(ka.parent, kb.parent, env.where);
  else if (ka || kb) fixRefs(env, [ka, kb], 'contracts channels with something else in a product of two values');
  return [...lead, a[a.length - 2], b[b.length - 1]];
}

/** Whether two head-dimension refs have their heads on the same leading axis of a product. */
function headsAligned(x: WithinRef, y: WithinRef, la: AxisRefs, lb: AxisRefs, env: FlowEnv): boolean {
  const bx = env.flow.blocksOfSpace(x.parent);
  const by = env.flow.blocksOfSpace(y.parent);
  if (!bx || !by) return false;
  const rank = Math.max(la.length, lb.length);
  for (let j = 0; j < rank; j++) {
    const p = la[j - (rank - la.length)];
    const q = lb[j - (rank - lb.length)];
    if (p && q && isChan(p) && isChan(q) && env.flow.sameGroup(p.space, bx.heads) && env.flow.sameGroup(q.space, by.heads)) return true;
  }
  return false;
}

/**
 * Channels of axes [from, to) merged into one axis, channel-major, with `inner` positions per
 * channel expected: fine when only the first axis carries channels (the rest are positions) — the
 * channels' `inner` then grows by the positions' count; otherwise (channel-last layouts) fixed.
 */
function mergeAxes(i: AxisRefs, [from, to]: [number, number], inner: number, env: FlowEnv): AxisRefs {
  const head = i[from];
  const rest = i.slice(from + 1, to);
  const positions = prod(env.inShapes[0].slice(from + 1, to));
  const out = [...i.slice(0, from)];
  const blocks = head && isChan(head) && rest.length === 1 && rest[0] && isWithin(rest[0]) ? env.flow.blocksOfSpace(rest[0].parent) : undefined;
  if (blocks && isChan(head!) && head.inner === 1 && env.flow.sameGroup(head.space, blocks.heads)) {
    // [heads, head dim] merged back (the heads' outputs concatenated): the split space again.
    out.push({ space: (rest[0] as WithinRef).parent, inner: 1 });
  } else if (!head || isWithin(head)) {
    fixRefs(env, [head, ...rest], 'merges channels into a larger axis');
    out.push(null);
  } else if (Number.isNaN(positions) || !fits(positions, inner)) {
    fixRefs(env, [head, ...rest], 'flattens a map of unknown spatial size');
    out.push(null);
  } else {
    // Axes after the channels that carry spaces of their own are positions here: the input's or
    // a fixed group's. Anything permutable there cannot survive the merge.
    fixRefs(env, rest.filter((r) => refsOf(r).some((c) => !env.flow.isFixed(c.space))), 'the merge does not keep channels major (channel-last layout)');
    // A concatenation flattens part by part: each part's channels spread over the positions.
    out.push(isSegmented(head)
      ? { segments: head.segments.map((g) => ({ ref: g.ref && { space: g.ref.space, inner: g.ref.inner * positions }, length: g.length * positions })) }
      : { space: head.space, inner: head.inner * positions });
  }
  return [...out, ...i.slice(to)];
}

/**
 * Channels through a reshape: axes kept as they are pass on; a run of input axes merged into one
 * output axis goes through `mergeAxes`; an output axis split off a channel axis fixes its group.
 */
function reshapeChannels(i: AxisRefs, inShape: number[], outShape: number[], env: FlowEnv): AxisRefs {
  const out: AxisRefs = [];
  let a = 0;
  let b = 0;
  while (a < inShape.length || b < outShape.length) {
    if (a < inShape.length && b < outShape.length && inShape[a] === outShape[b] && !Number.isNaN(inShape[a])) {
      out.push(i[a++]);
      b++;
      continue;
    }
    // Axes of length 1 come and go without moving anything.
    if (b < outShape.length && outShape[b] === 1) { out.push(null); b++; continue; }
    if (a < inShape.length && inShape[a] === 1) { a++; continue; }
    // Find the smallest runs [a, a2) and [b, b2) with equal products.
    let a2 = a;
    let b2 = b;
    let pa = 1;
    let pb = 1;
    do {
      if (pa <= pb && a2 < inShape.length) pa *= inShape[a2++];
      else if (b2 < outShape.length) pb *= outShape[b2++];
      else break;
    } while (pa !== pb && !Number.isNaN(pa) && !Number.isNaN(pb));
    if (a2 === inShape.length && b2 < outShape.length) b2 = outShape.length;
    if (b2 === outShape.length && a2 < inShape.length) a2 = inShape.length;
    const refs = i.slice(a, a2);
    const split = a2 - a === 1 && b2 - b === 2 && refs[0] && isChan(refs[0]) && refs[0].inner === 1
      ? env.flow.blocks(refs[0].space, outShape[b], outShape[b + 1]) : null;
    if (b2 - b === 1 && pa === pb) {
      out.push(...mergeAxes(refs, [0, refs.length], pb / (inShape[a] || 1), { ...env, inShapes: [inShape.slice(a, a2)] }));
    } else if (split) {
      // [.., H·d] → [.., H, d]: the channels split into heads, each with its own dimensions.
      out.push({ space: split.heads, inner: 1 }, { parent: (refs[0] as ChanRef).space, within: split.within });
    } else if (a2 - a === 1 && b2 - b === 2 && refs[0] === null) {
      out.push(null, null);
    } else {
      fixRefs(env, refs, `reshape [${inShape.join(', ')}] → [${outShape.join(', ')}] splits or reorders the channel axis`);
      for (let j = b; j < b2; j++) out.push(null);
    }
    a = a2;
    b = b2;
  }
  return out;
}
