/**
 * ModelGraph: a small, JSON-serialisable DAG of a model's layers. It is the single description of
 * an architecture: `runGraph` executes it (the forward pass), `initGraph` initialises it, and
 * `deriveSpec` reads its channel flow to build the permutation spec. Builders only emit a graph,
 * so forward pass and spec cannot drift apart.
 *
 * What each layer kind means is one entry of `LAYERS` (its tensors, output shape, forward step,
 * optional fused kernel, channel flow and role for activation matching); the functions here and in
 * activations.ts only walk the graph and ask the table. A new layer kind is its fields in
 * `NodeFields` plus its `LAYERS` entry (and, for convenience, a GraphBuilder method).
 *
 * Nodes are listed in topological order; each names its input node(s) by id. Tensor names are
 * PyTorch state_dict names, layouts PyTorch's (Linear [out, in], Conv2d [out, in, kh, kw]).
 */
import { F, Tensor, zeros, type DType } from '../core/index.js';
import type { Rng } from '../core/random.js';
import { UnionFind } from '../permutation/union-find.js';
import type { AxisPerm, PermutationSpec } from '../permutation/spec.js';
import type { Params } from '../state/params.js';

/**
 * The fields of each layer kind's node beyond `op` and `id`. Every key needs an entry in `LAYERS`
 * below (the compiler checks it): adding a layer kind is one line here and one entry there.
 */
interface NodeFields {
  /** The network input; `shape` is per sample ([features] or [C, H, W]). */
  input: { shape: number[] };
  linear: { input: string; weight: string; bias: string | null; inFeatures: number; outFeatures: number };
  conv2d: {
    input: string; weight: string; bias: string | null;
    inChannels: number; outChannels: number; kernel: number; stride: number; padding: number;
  };
  /** BatchNorm over channels (dim 1); γ, β and the running statistics. */
  batchnorm: {
    input: string; channels: number;
    weight: string; bias: string; runningMean: string; runningVar: string; eps: number; momentum: number;
  };
  relu: { input: string };
  tanh: { input: string };
  dropout: { input: string; p: number };
  maxpool2d: { input: string; kernel: number; stride: number; padding: number };
  avgpool2d: { input: string; kernel: number; stride: number; padding: number };
  adaptiveavgpool2d: { input: string; size: [number, number] };
  /** Residual sum of same-shape inputs. */
  add: { inputs: string[] };
  /** [N, C, h, w] → [N, C·h·w], channel-major; `inner` = h·w, checked at run time. */
  flatten: { input: string; inner: number };
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
  kind: 'weight' | 'bias' | 'norm-weight' | 'norm-bias' | 'running-mean' | 'running-var';
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
}

/**
 * A graph's channel flow, as `deriveSpec` (channel spaces joined by union–find) and activation
 * matching (the permutation a node's output carries) each read it. `R` refers to the channel space
 * of one node's output.
 */
export interface ChannelFlow<R> {
  /** The network input's space (never permuted). */
  input(size: number): R;
  /** A new space of `size` channels: axis 0 of weight `weight`, owned by node `owner`. */
  open(size: number, owner: string, weight: string): R;
  /** A tensor the node owns, with the space of each axis (null: none, e.g. kernel axes). */
  own(name: string, axes: (R | null)[]): void;
  /** Inputs summed into one stream: their spaces become one. */
  join(refs: R[], who: string): R;
  /** h·w = `inner` positions per channel folded into the feature axis. */
  flatten(ref: R, inner: number): R;
  /** Whether `ref` has been flattened (positions mixed into features). */
  flattened(ref: R): boolean;
  /** The network output: its space is never permuted. */
  output(ref: R): R;
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
  /** The channel space of the output from the inputs'. Default: channel-wise (the input's space passes on). */
  channels?<R>(n: N, ins: R[], flow: ChannelFlow<R>): R;
  /** Where activation matching reads a permutation's activations: at its nonlinearities, else its residual sums, else its last node. */
  activation?: 'nonlinearity' | 'residual';
}

function need(params: Params, name: string): Tensor {
  const t = params.get(name);
  if (!t) throw new Error(`forward: parameter "${name}" is missing`);
  return t;
}

/** Weight [out, in, ...kernel] and optional bias of a linear/conv, initialised by fan-in. */
function weightAndBias(weight: string, bias: string | null, shape: number[], fanIn: number): TensorInfo[] {
  const out: TensorInfo[] = [{ name: weight, shape, kind: 'weight', fanIn, buffer: false }];
  if (bias) out.push({ name: bias, shape: [shape[0]], kind: 'bias', fanIn, buffer: false });
  return out;
}

/** Output of a k×k window with stride and padding on a per-sample [C, H, W] shape. */
const windowShape = (s: number[], k: number, st: number, p: number) => [s[0], Math.floor((s[1] + 2 * p - k) / st) + 1, Math.floor((s[2] + 2 * p - k) / st) + 1];

function conv(n: NodeOf<'conv2d'>, x: Tensor, env: ForwardEnv, relu: boolean): Tensor {
  return F.conv2d(x, need(env.params, n.weight), n.bias ? need(env.params, n.bias) : null, { stride: n.stride, padding: n.padding, relu });
}

/** The output of a linear/conv opens a channel space; its weight's axis 0 takes it, axis 1 the input's. */
function openSpace<R>(n: NodeOf<'linear'> | NodeOf<'conv2d'>, size: number, input: R, kernelAxes: number, flow: ChannelFlow<R>): R {
  const own = flow.open(size, n.id, n.weight);
  flow.own(n.weight, [own, input, ...Array<null>(kernelAxes).fill(null)]);
  if (n.bias) flow.own(n.bias, [own]);
  return own;
}

/** The layer kinds: one entry per op. */
export const LAYERS: { [K in LayerOp]: LayerKind<NodeOf<K>> } = {
  input: {
    shape: (n) => [...n.shape],
    forward: (n, _ins, { x }) => {
      const per = x.shape.slice(1);
      if (per.length === n.shape.length && per.every((d, i) => d === n.shape[i])) return x;
      const want = n.shape.reduce((a, b) => a * b, 1);
      if (x.ndim < 2 || per.reduce((a, b) => a * b, 1) !== want) {
        throw new Error(`forward: input [${x.shape.join(', ')}] does not match per-sample shape [${n.shape.join(', ')}]`);
      }
      return F.reshape(x, [x.shape[0], ...n.shape]); // e.g. MNIST [N,1,28,28] into an MLP
    },
    channels: (n, _ins, flow) => flow.input(n.shape[0]),
  },
  linear: {
    tensors: (n) => weightAndBias(n.weight, n.bias, [n.outFeatures, n.inFeatures], n.inFeatures),
    shape: (n, [i]) => {
      if (i.length !== 1 || i[0] !== n.inFeatures) throw new Error(`ModelGraph: linear "${n.id}" expects [${n.inFeatures}] but gets [${i.join(', ')}]`);
      return [n.outFeatures];
    },
    forward: (n, [x], { params }) => F.linear(x, need(params, n.weight), n.bias ? need(params, n.bias) : null),
    channels: (n, [i], flow) => openSpace(n, n.outFeatures, i, 0, flow),
  },
  conv2d: {
    tensors: (n) => weightAndBias(n.weight, n.bias, [n.outChannels, n.inChannels, n.kernel, n.kernel], n.inChannels * n.kernel * n.kernel),
    shape: (n, [i]) => {
      if (i.length !== 3 || i[0] !== n.inChannels) throw new Error(`ModelGraph: conv2d "${n.id}" expects ${n.inChannels} channels but gets [${i.join(', ')}]`);
      const s = windowShape(i, n.kernel, n.stride, n.padding);
      s[0] = n.outChannels;
      return s;
    },
    forward: (n, [x], env) => conv(n, x, env, false),
    // conv → relu with nothing else reading the conv: one fused kernel.
    fused: { next: 'relu', forward: (n, [x], env) => conv(n, x, env, true) },
    channels: (n, [i], flow) => {
      if (flow.flattened(i)) throw new Error(`deriveSpec: conv2d "${n.id}" reads a flattened input`);
      return openSpace(n, n.outChannels, i, 2, flow);
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
      if (i[0] !== n.channels) throw new Error(`ModelGraph: batchnorm "${n.id}" expects ${n.channels} channels but gets [${i.join(', ')}]`);
      return i;
    },
    forward: (n, [x], { params, ctx }) => {
      const rm = ctx.buffers?.get(n.runningMean);
      const rv = ctx.buffers?.get(n.runningVar);
      if (ctx.buffers && (!rm || !rv)) throw new Error(`forward: buffers are given but "${!rm ? n.runningMean : n.runningVar}" is missing`);
      const state = rm && rv ? { runningMean: rm, runningVar: rv } : null;
      return F.batchNorm(x, need(params, n.weight), need(params, n.bias), state, { training: ctx.training, eps: n.eps, momentum: n.momentum });
    },
    // γ, β and the running statistics follow their producer's channels.
    channels: (n, [i], flow) => {
      for (const name of [n.weight, n.bias, n.runningMean, n.runningVar]) flow.own(name, [i]);
      return i;
    },
  },
  relu: { shape: (_n, [i]) => i, forward: (_n, [x]) => F.relu(x), activation: 'nonlinearity' },
  tanh: { shape: (_n, [i]) => i, forward: (_n, [x]) => F.tanh(x), activation: 'nonlinearity' },
  dropout: {
    shape: (_n, [i]) => i,
    forward: (n, [x], { ctx }) => {
      if (!(ctx.training && n.p > 0)) return x;
      if (!ctx.rng) throw new Error(`forward: dropout "${n.id}" needs ctx.rng in training mode`);
      return F.dropout(x, n.p, ctx.rng, true);
    },
  },
  maxpool2d: { shape: (n, [i]) => windowShape(i, n.kernel, n.stride, n.padding), forward: (n, [x]) => F.maxPool2d(x, n.kernel, n.stride, n.padding) },
  avgpool2d: { shape: (n, [i]) => windowShape(i, n.kernel, n.stride, n.padding), forward: (n, [x]) => F.avgPool2d(x, n.kernel, n.stride, n.padding) },
  adaptiveavgpool2d: { shape: (n, [i]) => [i[0], n.size[0], n.size[1]], forward: (n, [x]) => F.adaptiveAvgPool2d(x, n.size[0], n.size[1]) },
  add: {
    shape: (n, all) => {
      if (all.some((a) => a.join() !== all[0].join())) throw new Error(`ModelGraph: add "${n.id}" sums different shapes ${all.map((a) => `[${a.join(', ')}]`).join(' + ')}`);
      return all[0];
    },
    forward: (_n, ins) => ins.reduce((a, b) => F.add(a, b)),
    // Tensors added into one residual stream share one permutation.
    channels: (n, ins, flow) => flow.join(ins, n.id),
    activation: 'residual',
  },
  flatten: {
    shape: (n, [i]) => {
      const inner = i.slice(1).reduce((a, b) => a * b, 1);
      if (inner !== n.inner) throw new Error(`ModelGraph: flatten "${n.id}" records inner ${n.inner} but the map is [${i.join(', ')}]`);
      return [i[0] * inner];
    },
    forward: (n, [x]) => {
      const inner = x.shape.slice(2).reduce((a, b) => a * b, 1);
      if (inner !== n.inner) throw new Error(`forward: flatten "${n.id}" expects ${n.inner} positions per channel, got [${x.shape.join(', ')}]`);
      return F.flatten(x, 1);
    },
    channels: (n, [i], flow) => flow.flatten(i, n.inner),
  },
  output: { shape: (_n, [i]) => i, forward: (_n, [x]) => x, channels: (_n, [i], flow) => flow.output(i) },
};

/** The table entry of a node's kind. */
export function layerOf<N extends GraphNode>(n: N): LayerKind<N> {
  const kind = LAYERS[n.op] as unknown as LayerKind<N> | undefined;
  if (!kind) throw new Error(`ModelGraph: node "${n.id}" has unknown op "${n.op as string}"`);
  return kind;
}

/** The channel space of a node's output, given its inputs' (see LayerKind.channels). */
export function nodeChannels<R>(n: GraphNode, ins: R[], flow: ChannelFlow<R>): R {
  const kind = layerOf(n);
  return kind.channels ? kind.channels(n, ins, flow) : ins[0];
}

/** Lists every parameter and buffer of the graph with its shape. */
export function graphTensors(graph: ModelGraph): TensorInfo[] {
  const out = graph.nodes.flatMap((n) => layerOf(n).tensors?.(n) ?? []);
  const seen = new Set<string>();
  for (const t of out) {
    if (seen.has(t.name)) throw new Error(`ModelGraph: tensor "${t.name}" is owned by two nodes`);
    seen.add(t.name);
  }
  return out;
}

/**
 * PyTorch default initialisation: Linear/Conv weight kaiming_uniform(a=√5), i.e. U(±1/√fan_in),
 * bias U(±1/√fan_in); BatchNorm γ = 1, β = 0, running mean 0, running var 1.
 */
export function initGraph(graph: ModelGraph, rng: Rng, dtype: DType = 'float32'): { params: Params; buffers: Params } {
  const params: Params = new Map();
  const buffers: Params = new Map();
  for (const t of graphTensors(graph)) {
    const x = zeros(t.shape, dtype);
    if (t.kind === 'weight' || t.kind === 'bias') {
      const bound = 1 / Math.sqrt(t.fanIn);
      rng.fillUniform(x.data, -bound, bound);
    } else if (t.kind === 'norm-weight' || t.kind === 'running-var') x.data.fill(1);
    (t.buffer ? buffers : params).set(t.name, x);
  }
  return { params, buffers };
}

/** The ids a node reads. */
export function nodeInputs(n: GraphNode): string[] {
  return 'inputs' in n ? n.inputs : 'input' in n ? [n.input] : [];
}

export interface ExecuteOptions {
  /** Use the layers' fused kernels (runGraph: yes; forwardRecording: no, so every node's output exists). */
  fuse: boolean;
  /** Ids of nodes whose outputs to return in `values`. */
  record?: ReadonlySet<string>;
}

/**
 * Runs the graph on a batch `x` [N, ...input shape]: the output node's value, and the values of the
 * recorded nodes. Values are dropped after their last reader (activations of big conv nets add up).
 */
export function executeGraph(graph: ModelGraph, params: Params, x: Tensor, ctx: RunContext, opts: ExecuteOptions): { output: Tensor; values: Map<string, Tensor> } {
  const env: ForwardEnv = { params, ctx, x };
  const vals = new Map<string, Tensor>();
  const values = new Map<string, Tensor>();
  const get = (id: string) => {
    const v = vals.get(id);
    if (!v) throw new Error(`runGraph: node "${id}" is used before it is computed`);
    return v;
  };
  const readers = new Map<string, number>();
  const lastUse = new Map<string, number>();
  graph.nodes.forEach((n, k) => {
    for (const id of nodeInputs(n)) {
      readers.set(id, (readers.get(id) ?? 0) + 1);
      lastUse.set(id, k);
    }
  });
  let result: Tensor | null = null;
  const nodes = graph.nodes;
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i];
    const kind = layerOf(n);
    const ins = nodeInputs(n).map(get);
    const next = nodes[i + 1];
    let id = n.id;
    let y: Tensor;
    if (opts.fuse && kind.fused && next?.op === kind.fused.next && readers.get(n.id) === 1 && nodeInputs(next).length === 1 && nodeInputs(next)[0] === n.id) {
      y = kind.fused.forward(n, ins, env);
      id = next.id;
      i++;
    } else y = kind.forward(n, ins, env);
    vals.set(id, y);
    if (opts.record?.has(id)) values.set(id, y);
    if (nodes[i].op === 'output') result = y;
    for (const read of nodeInputs(n)) if (lastUse.get(read)! <= i) vals.delete(read);
  }
  if (!result) throw new Error('runGraph: the graph has no output node');
  return { output: result, values };
}

/** Executes the graph on a batch `x` [N, ...input shape] and returns the output node's value. */
export function runGraph(graph: ModelGraph, params: Params, x: Tensor, ctx: RunContext): Tensor {
  return executeGraph(graph, params, x, ctx, { fuse: true }).output;
}

/** Per-sample output shape of every node (static shape inference; checks channel counts). */
export function inferShapes(graph: ModelGraph): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  for (const n of graph.nodes) {
    if (shapes.has(n.id)) throw new Error(`ModelGraph: duplicate node id "${n.id}"`);
    const ins = nodeInputs(n).map((id) => {
      const s = shapes.get(id);
      if (!s) throw new Error(`ModelGraph: node "${n.id}" reads "${id}", which is not defined before it`);
      return s;
    });
    const s = layerOf(n).shape(n, ins);
    if (s.some((d) => !(d >= 1))) throw new Error(`ModelGraph: node "${n.id}" has empty output shape [${s.join(', ')}]`);
    shapes.set(n.id, s);
  }
  return shapes;
}

/** A node's output in channel terms: channel space `space`, each channel spread over `inner` positions. */
interface ChannelRef {
  space: number;
  inner: number;
}

/**
 * Derives the permutation spec from the graph's channel flow, with union–find:
 * - every linear/conv output opens a channel space (a candidate permutation);
 * - norm, activation, pooling and dropout are channel-wise: they pass their input's space on, and
 *   BN γ/β/running stats take that space (they follow their producer);
 * - `add` unions the spaces of its inputs (tensors added into one residual stream share one
 *   permutation);
 * - `flatten` keeps the space but multiplies `inner` by h·w (conv→linear: `{perm, inner}`);
 * - the network input and the output node's space are fixed: their groups get no permutation.
 * A weight's axis 0 takes its own space, axis 1 its input's space, kernel axes none.
 * Permutation ids are `P_<id of the group's first linear/conv>`, in graph order.
 */
export function deriveSpec(graph: ModelGraph): PermutationSpec {
  inferShapes(graph); // structural checks first: ids, order, channel counts
  const uf = new UnionFind();
  const spaceSize: number[] = [];
  const spaceOwner: (string | null)[] = []; // node id that opened the space (null: the input)
  const fixed = new Set<number>();
  const newSpace = (size: number, owner: string | null) => {
    const s = uf.add();
    spaceSize.push(size);
    spaceOwner.push(owner);
    return s;
  };
  // Axis entries before perm ids exist: per tensor, a ChannelRef or null per axis.
  const pending: { name: string; axes: (ChannelRef | null)[] }[] = [];
  const flow: ChannelFlow<ChannelRef> = {
    input: (size) => {
      const s = newSpace(size, null);
      fixed.add(s);
      return { space: s, inner: 1 };
    },
    open: (size, owner) => ({ space: newSpace(size, owner), inner: 1 }),
    own: (name, axes) => { pending.push({ name, axes }); },
    join: (rs, who) => {
      for (const r of rs.slice(1)) {
        const a = uf.find(rs[0].space);
        const b = uf.find(r.space);
        if (rs[0].inner !== r.inner || spaceSize[a] !== spaceSize[b]) {
          throw new Error(`deriveSpec: add "${who}" joins channel groups of different sizes (${spaceSize[a]}×${rs[0].inner} and ${spaceSize[b]}×${r.inner}): permutation groups' axes disagree in size`);
        }
        const root = uf.union(a, b);
        spaceSize[root] = spaceSize[a];
        if (fixed.has(a) || fixed.has(b)) fixed.add(root);
      }
      return rs[0];
    },
    flatten: (r, inner) => ({ space: r.space, inner: r.inner * inner }),
    flattened: (r) => r.inner !== 1,
    output: (r) => {
      fixed.add(uf.find(r.space));
      return r;
    },
  };
  const refs = new Map<string, ChannelRef>();
  for (const n of graph.nodes) refs.set(n.id, nodeChannels(n, nodeInputs(n).map((id) => refs.get(id)!), flow));
  // Group ids in order of their first space (= graph order of the opening node).
  const permOf = new Map<number, string>();
  const perms: Record<string, number> = {};
  for (const group of uf.groups()) {
    const root = uf.find(group[0]);
    if (group.some((s) => fixed.has(s)) || fixed.has(root)) continue;
    const owner = spaceOwner[group[0]]!;
    const id = `P_${owner}`;
    permOf.set(root, id);
    perms[id] = spaceSize[group[0]];
  }
  const axes: Record<string, AxisPerm[]> = {};
  for (const { name, axes: rs } of pending) {
    axes[name] = rs.map((r) => {
      if (!r) return null;
      const id = permOf.get(uf.find(r.space));
      if (id === undefined) return null;
      return r.inner === 1 ? id : { perm: id, inner: r.inner };
    });
  }
  return { perms, axes };
}
