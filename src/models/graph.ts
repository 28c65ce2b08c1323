/**
 * ModelGraph: a small, JSON-serialisable DAG of a model's layers. It is the single description of
 * an architecture, built (mlp, vgg, resnet) or imported (ONNX, TF.js): `runGraph` executes it
 * (the forward pass), `initGraph` initialises it, and `deriveSpec` reads its channel flow to build
 * the permutation spec. So forward pass and spec cannot drift apart.
 *
 * What each layer kind means is one entry of `LAYERS` (layers.ts); the functions here only walk
 * the graph and ask the table. Nodes are listed in topological order; each names its input
 * node(s) by id.
 */
import { InputError } from '../errors.js';
import { zeros, type DType, type Tensor } from '../core/index.js';
import type { Rng } from '../core/random.js';
import { isChan, isWithin, SpecFlow, type FlowResult } from '../permutation/flow.js';
import type { PermutationSpec } from '../permutation/spec.js';
import type { Params } from '../state/params.js';
import { LAYERS, type AxisRefs, type ForwardEnv, type GraphNode, type LayerKind, type ModelGraph, type RunContext, type TensorInfo } from './layers.js';

export * from './layers.js';

/** The table entry of a node's kind. */
export function layerOf<N extends GraphNode>(n: N): LayerKind<N> {
  const kind = LAYERS[n.op] as unknown as LayerKind<N> | undefined;
  if (!kind) throw new InputError(`ModelGraph: node "${n.id}" has unknown op "${n.op as string}"`);
  return kind;
}

/** Lists every parameter and buffer of the graph with its shape. */
export function graphTensors(graph: ModelGraph): TensorInfo[] {
  const out = graph.nodes.flatMap((n) => layerOf(n).tensors?.(n) ?? []);
  const seen = new Set<string>();
  for (const t of out) {
    if (seen.has(t.name)) throw new InputError(`ModelGraph: tensor "${t.name}" is owned by two nodes`);
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
    if (t.shape.some((d) => !Number.isInteger(d))) throw new Error(`initGraph: tensor "${t.name}" has unknown shape [${t.shape.join(', ')}]`);
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
  const env: ForwardEnv = { params, ctx, x, dtype: x.dtype };
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
    if (shapes.has(n.id)) throw new InputError(`ModelGraph: duplicate node id "${n.id}"`);
    const ins = nodeInputs(n).map((id) => {
      const s = shapes.get(id);
      if (!s) throw new InputError(`ModelGraph: node "${n.id}" reads "${id}", which is not defined before it`);
      return s;
    });
    const s = layerOf(n).shape(n, ins);
    if (s.some((d) => d < 1)) throw new InputError(`ModelGraph: node "${n.id}" has empty output shape [${s.join(', ')}]`);
    shapes.set(n.id, s);
  }
  return shapes;
}

/** The channels of one axis of a node's output (see GraphFlow.nodeAxes). */
export type NodeAxis = string | { perm: string; inner: number } | { blocks: string | null; within: string[]; headAxis: number } | null;

/** A graph's channel flow: the spec inference's result and every node's output channels. */
export interface GraphFlow extends FlowResult {
  /**
   * Node id → its output's channels per per-sample axis: as spec entries (perm id, `{perm, inner}`
   * or null), or for a head dimension its per-head permutations with the heads' permutation (null
   * when the heads are fixed) and the axis holding the heads.
   */
  nodeAxes: Map<string, NodeAxis[]>;
}

/**
 * Runs the graph's channel flow through a SpecFlow (permutation/flow.ts), node by node with each
 * kind's `channels` rule:
 * - every linear/conv output opens a channel space (a candidate permutation), labelled by the
 *   node id; its weight's output axis takes it, the input axis the input's channels;
 * - norm, activation, pooling and dropout are channel-wise: they pass their input's channels on,
 *   and their per-channel tensors (BN γ/β/running stats) take them;
 * - element-wise sums and products (residual adds, broadcast biases) join the spaces they combine;
 * - flatten keeps the channels but multiplies `inner` by h·w (conv→linear: `{perm, inner}`);
 * - the network input and the output are fixed, and so is every group an op with no rule for
 *   permuted channels touches (reported as a warning).
 * Permutation ids are `P_<id of the group's first linear/conv>`, in graph order.
 */
export function graphFlow(graph: ModelGraph): GraphFlow {
  const shapes = inferShapes(graph); // structural checks first: ids, order, channel counts
  const flow = new SpecFlow();
  const refs = new Map<string, AxisRefs>();
  for (const n of graph.nodes) {
    const ids = nodeInputs(n);
    const kind = layerOf(n);
    const ins = ids.map((id) => refs.get(id)!);
    const env = { flow, inShapes: ids.map((id) => shapes.get(id)!), outShape: shapes.get(n.id)!, where: `node "${n.id}"` };
    refs.set(n.id, kind.channels ? kind.channels(n, ins, env) : ins[0]);
  }
  const result = flow.finish();
  const nodeAxes: GraphFlow['nodeAxes'] = new Map();
  for (const [id, axes] of refs) {
    nodeAxes.set(id, axes.map((r): NodeAxis => {
      if (r && isWithin(r)) {
        // A head dimension: each head's own permutation, read with the axis of the heads.
        const b = flow.blocksOfSpace(r.parent);
        const within = r.within.map((w) => flow.permOf(w));
        const headAxis = axes.findIndex((h) => h !== null && isChan(h) && b !== undefined && flow.sameGroup(h.space, b.heads));
        if (!b || headAxis < 0 || within.some((w) => w === null) || new Set(within).size !== within.length) return null;
        return { blocks: flow.permOf(b.heads), within: within as string[], headAxis };
      }
      // Concatenated channels carry several permutations: no single one (activation matching skips them).
      if (!r || !isChan(r)) return null;
      const p = flow.permOf(r.space);
      return p === null ? null : r.inner === 1 ? p : { perm: p, inner: r.inner };
    }));
  }
  return { ...result, nodeAxes };
}

/** The permutation spec of a graph (see graphFlow). */
export function deriveSpec(graph: ModelGraph): PermutationSpec {
  return graphFlow(graph).spec;
}
