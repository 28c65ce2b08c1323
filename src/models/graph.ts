/**
 * ModelGraph: a small, JSON-serialisable DAG of a model's layers. It is the single description of
 * an architecture: `runGraph` executes it (the forward pass), `initGraph` initialises it, and
 * `deriveSpec` reads its channel flow to build the permutation spec. Builders only emit a graph,
 * so forward pass and spec cannot drift apart.
 *
 * Nodes are listed in topological order; each names its input node(s) by id. Tensor names are
 * PyTorch state_dict names, layouts PyTorch's (Linear [out, in], Conv2d [out, in, kh, kw]).
 */
import { F, Tensor, zeros, type DType } from '../core/index.js';
import type { Rng } from '../core/random.js';
import { UnionFind } from '../permutation/union-find.js';
import type { AxisPerm, PermutationSpec } from '../permutation/spec.js';
import type { Params } from '../state/params.js';

export type GraphNode =
  /** The network input; `shape` is per sample ([features] or [C, H, W]). */
  | { op: 'input'; id: string; shape: number[] }
  | { op: 'linear'; id: string; input: string; weight: string; bias: string | null; inFeatures: number; outFeatures: number }
  | {
    op: 'conv2d'; id: string; input: string; weight: string; bias: string | null;
    inChannels: number; outChannels: number; kernel: number; stride: number; padding: number;
  }
  /** BatchNorm over channels (dim 1); γ, β and the running statistics. */
  | {
    op: 'batchnorm'; id: string; input: string; channels: number;
    weight: string; bias: string; runningMean: string; runningVar: string; eps: number; momentum: number;
  }
  | { op: 'relu' | 'tanh'; id: string; input: string }
  | { op: 'dropout'; id: string; input: string; p: number }
  | { op: 'maxpool2d' | 'avgpool2d'; id: string; input: string; kernel: number; stride: number; padding: number }
  | { op: 'adaptiveavgpool2d'; id: string; input: string; size: [number, number] }
  /** Residual sum of same-shape inputs. */
  | { op: 'add'; id: string; inputs: string[] }
  /** [N, C, h, w] → [N, C·h·w], channel-major; `inner` = h·w, checked at run time. */
  | { op: 'flatten'; id: string; input: string; inner: number }
  /** Marks the logits: their channels are never permuted. */
  | { op: 'output'; id: string; input: string };

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

/** Lists every parameter and buffer of the graph with its shape. */
export function graphTensors(graph: ModelGraph): TensorInfo[] {
  const out: TensorInfo[] = [];
  for (const n of graph.nodes) {
    if (n.op === 'linear') {
      out.push({ name: n.weight, shape: [n.outFeatures, n.inFeatures], kind: 'weight', fanIn: n.inFeatures, buffer: false });
      if (n.bias) out.push({ name: n.bias, shape: [n.outFeatures], kind: 'bias', fanIn: n.inFeatures, buffer: false });
    } else if (n.op === 'conv2d') {
      const fanIn = n.inChannels * n.kernel * n.kernel;
      out.push({ name: n.weight, shape: [n.outChannels, n.inChannels, n.kernel, n.kernel], kind: 'weight', fanIn, buffer: false });
      if (n.bias) out.push({ name: n.bias, shape: [n.outChannels], kind: 'bias', fanIn, buffer: false });
    } else if (n.op === 'batchnorm') {
      const s = [n.channels];
      out.push({ name: n.weight, shape: s, kind: 'norm-weight', fanIn: 0, buffer: false });
      out.push({ name: n.bias, shape: s, kind: 'norm-bias', fanIn: 0, buffer: false });
      out.push({ name: n.runningMean, shape: s, kind: 'running-mean', fanIn: 0, buffer: true });
      out.push({ name: n.runningVar, shape: s, kind: 'running-var', fanIn: 0, buffer: true });
    }
  }
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

export interface RunContext {
  training: boolean;
  /** BN running statistics. Without them BN always uses batch statistics (track_running_stats=False). */
  buffers?: Params;
  /** Needed for dropout with p > 0 in training. */
  rng?: Rng;
}

function need(params: Params, name: string): Tensor {
  const t = params.get(name);
  if (!t) throw new Error(`forward: parameter "${name}" is missing`);
  return t;
}

/** The ids a node reads. */
export function nodeInputs(n: GraphNode): string[] {
  return 'inputs' in n ? n.inputs : 'input' in n ? [n.input] : [];
}

/** Executes the graph on a batch `x` [N, ...input shape] and returns the output node's value. */
export function runGraph(graph: ModelGraph, params: Params, x: Tensor, ctx: RunContext): Tensor {
  const vals = new Map<string, Tensor>();
  const get = (id: string) => {
    const v = vals.get(id);
    if (!v) throw new Error(`runGraph: node "${id}" is used before it is computed`);
    return v;
  };
  let result: Tensor | null = null;
  const conv = (n: Extract<GraphNode, { op: 'conv2d' }>, relu: boolean) =>
    F.conv2d(get(n.input), need(params, n.weight), n.bias ? need(params, n.bias) : null, { stride: n.stride, padding: n.padding, relu });
  const readers = new Map<string, number>();
  for (const n of graph.nodes) for (const id of nodeInputs(n)) readers.set(id, (readers.get(id) ?? 0) + 1);
  const nodes = graph.nodes;
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i];
    const next = nodes[i + 1];
    // conv → relu with nothing else reading the conv: one fused kernel (same values and gradients).
    if (n.op === 'conv2d' && next?.op === 'relu' && next.input === n.id && readers.get(n.id) === 1) {
      vals.set(next.id, conv(n, true));
      i++;
      continue;
    }
    let y: Tensor;
    switch (n.op) {
      case 'input': {
        const per = x.shape.slice(1);
        if (per.length !== n.shape.length || per.some((d, i) => d !== n.shape[i])) {
          const want = n.shape.reduce((a, b) => a * b, 1);
          if (x.ndim < 2 || per.reduce((a, b) => a * b, 1) !== want) {
            throw new Error(`forward: input [${x.shape.join(', ')}] does not match per-sample shape [${n.shape.join(', ')}]`);
          }
          y = F.reshape(x, [x.shape[0], ...n.shape]); // e.g. MNIST [N,1,28,28] into an MLP
        } else y = x;
        break;
      }
      case 'linear':
        y = F.linear(get(n.input), need(params, n.weight), n.bias ? need(params, n.bias) : null);
        break;
      case 'conv2d':
        y = conv(n, false);
        break;
      case 'batchnorm': {
        const rm = ctx.buffers?.get(n.runningMean);
        const rv = ctx.buffers?.get(n.runningVar);
        if (ctx.buffers && (!rm || !rv)) throw new Error(`forward: buffers are given but "${!rm ? n.runningMean : n.runningVar}" is missing`);
        const state = rm && rv ? { runningMean: rm, runningVar: rv } : null;
        y = F.batchNorm(get(n.input), need(params, n.weight), need(params, n.bias), state, { training: ctx.training, eps: n.eps, momentum: n.momentum });
        break;
      }
      case 'relu':
        y = F.relu(get(n.input));
        break;
      case 'tanh':
        y = F.tanh(get(n.input));
        break;
      case 'dropout': {
        const v = get(n.input);
        if (ctx.training && n.p > 0) {
          if (!ctx.rng) throw new Error(`forward: dropout "${n.id}" needs ctx.rng in training mode`);
          y = F.dropout(v, n.p, ctx.rng, true);
        } else y = v;
        break;
      }
      case 'maxpool2d':
        y = F.maxPool2d(get(n.input), n.kernel, n.stride, n.padding);
        break;
      case 'avgpool2d':
        y = F.avgPool2d(get(n.input), n.kernel, n.stride, n.padding);
        break;
      case 'adaptiveavgpool2d':
        y = F.adaptiveAvgPool2d(get(n.input), n.size[0], n.size[1]);
        break;
      case 'add':
        y = n.inputs.map(get).reduce((a, b) => F.add(a, b));
        break;
      case 'flatten': {
        const v = get(n.input);
        const inner = v.shape.slice(2).reduce((a, b) => a * b, 1);
        if (inner !== n.inner) throw new Error(`forward: flatten "${n.id}" expects ${n.inner} positions per channel, got [${v.shape.join(', ')}]`);
        y = F.flatten(v, 1);
        break;
      }
      case 'output':
        y = get(n.input);
        result = y;
        break;
    }
    vals.set(n.id, y);
  }
  if (!result) throw new Error('runGraph: the graph has no output node');
  return result;
}

/** Per-sample output shape of every node (static shape inference; checks channel counts). */
export function inferShapes(graph: ModelGraph): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  const get = (id: string, by: string) => {
    const s = shapes.get(id);
    if (!s) throw new Error(`ModelGraph: node "${by}" reads "${id}", which is not defined before it`);
    return s;
  };
  const pool = (s: number[], k: number, st: number, p: number) => [s[0], Math.floor((s[1] + 2 * p - k) / st) + 1, Math.floor((s[2] + 2 * p - k) / st) + 1];
  for (const n of graph.nodes) {
    if (shapes.has(n.id)) throw new Error(`ModelGraph: duplicate node id "${n.id}"`);
    let s: number[];
    switch (n.op) {
      case 'input': s = [...n.shape]; break;
      case 'linear': {
        const i = get(n.input, n.id);
        if (i.length !== 1 || i[0] !== n.inFeatures) throw new Error(`ModelGraph: linear "${n.id}" expects [${n.inFeatures}] but gets [${i.join(', ')}]`);
        s = [n.outFeatures];
        break;
      }
      case 'conv2d': {
        const i = get(n.input, n.id);
        if (i.length !== 3 || i[0] !== n.inChannels) throw new Error(`ModelGraph: conv2d "${n.id}" expects ${n.inChannels} channels but gets [${i.join(', ')}]`);
        s = pool(i, n.kernel, n.stride, n.padding);
        s[0] = n.outChannels;
        break;
      }
      case 'batchnorm': {
        const i = get(n.input, n.id);
        if (i[0] !== n.channels) throw new Error(`ModelGraph: batchnorm "${n.id}" expects ${n.channels} channels but gets [${i.join(', ')}]`);
        s = i;
        break;
      }
      case 'maxpool2d': case 'avgpool2d': s = pool(get(n.input, n.id), n.kernel, n.stride, n.padding); break;
      case 'adaptiveavgpool2d': s = [get(n.input, n.id)[0], n.size[0], n.size[1]]; break;
      case 'add': {
        const all = n.inputs.map((id) => get(id, n.id));
        if (all.some((a) => a.join() !== all[0].join())) throw new Error(`ModelGraph: add "${n.id}" sums different shapes ${all.map((a) => `[${a.join(', ')}]`).join(' + ')}`);
        s = all[0];
        break;
      }
      case 'flatten': {
        const i = get(n.input, n.id);
        const inner = i.slice(1).reduce((a, b) => a * b, 1);
        if (inner !== n.inner) throw new Error(`ModelGraph: flatten "${n.id}" records inner ${n.inner} but the map is [${i.join(', ')}]`);
        s = [i[0] * inner];
        break;
      }
      default: s = get(n.input, n.id);
    }
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
  const refs = new Map<string, ChannelRef>();
  const newSpace = (size: number, owner: string | null) => {
    const s = uf.add();
    spaceSize.push(size);
    spaceOwner.push(owner);
    return s;
  };
  // Axis entries before perm ids exist: per tensor, a ChannelRef or null per axis.
  const pending: { name: string; axes: (ChannelRef | null)[] }[] = [];
  const ref = (id: string) => refs.get(id)!;
  for (const n of graph.nodes) {
    switch (n.op) {
      case 'input': {
        const s = newSpace(n.shape[0], null);
        fixed.add(s);
        refs.set(n.id, { space: s, inner: 1 });
        break;
      }
      case 'linear': case 'conv2d': {
        const inRef = ref(n.input);
        const out = n.op === 'linear' ? n.outFeatures : n.outChannels;
        if (n.op === 'conv2d' && inRef.inner !== 1) throw new Error(`deriveSpec: conv2d "${n.id}" reads a flattened input`);
        const s = newSpace(out, n.id);
        const own = { space: s, inner: 1 };
        pending.push({ name: n.weight, axes: n.op === 'linear' ? [own, inRef] : [own, inRef, null, null] });
        if (n.bias) pending.push({ name: n.bias, axes: [own] });
        refs.set(n.id, own);
        break;
      }
      case 'batchnorm': {
        const r = ref(n.input);
        for (const name of [n.weight, n.bias, n.runningMean, n.runningVar]) pending.push({ name, axes: [r] });
        refs.set(n.id, r);
        break;
      }
      case 'add': {
        const rs = n.inputs.map(ref);
        for (const r of rs.slice(1)) {
          const a = uf.find(rs[0].space);
          const b = uf.find(r.space);
          if (rs[0].inner !== r.inner || spaceSize[a] !== spaceSize[b]) {
            throw new Error(`deriveSpec: add "${n.id}" joins channel groups of different sizes (${spaceSize[a]}×${rs[0].inner} and ${spaceSize[b]}×${r.inner}): permutation groups' axes disagree in size`);
          }
          const root = uf.union(a, b);
          spaceSize[root] = spaceSize[a];
          if (fixed.has(a) || fixed.has(b)) fixed.add(root);
        }
        refs.set(n.id, rs[0]);
        break;
      }
      case 'flatten': {
        const r = ref(n.input);
        refs.set(n.id, { space: r.space, inner: r.inner * n.inner });
        break;
      }
      case 'output': {
        const r = ref(n.input);
        fixed.add(uf.find(r.space));
        refs.set(n.id, r);
        break;
      }
      default:
        refs.set(n.id, ref(n.input)); // channel-wise op
    }
  }
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
