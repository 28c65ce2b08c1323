/**
 * Reading a model's hidden activations, per permutation group, for activation matching
 * (Git Re-Basin §3.1, method.md §8.3).
 *
 * Where a permutation's activations are read is derived from the ModelGraph and the spec, not
 * listed per model. Each node's output carries the permutation of the linear/conv that opened its
 * channel space (the spec's entry for that weight's axis 0); channel-wise ops (BN, activation,
 * dropout, pooling) pass it on, `add` keeps its inputs' shared one, and a flatten with h·w > 1
 * ends it (the flattened vector mixes positions into the feature axis). Among the nodes of one
 * permutation, the activations read are:
 *   1. the outputs of every nonlinearity (relu/tanh: `activation` in graph.ts' LAYERS; as Git Re-Basin);
 *   2. else of every residual sum (`add`: a stream with no nonlinearity after the sum);
 *   3. else of the last node (e.g. a linear network).
 * A residual-stream permutation thus reads every point of the stream: the stem's ReLU and each
 * block's output after add+ReLU. All of them are samples of the same unit vector, so activation
 * matching pools their statistics (a sum of cross-moment matrices is still one LAP).
 */
import { F, type Tensor } from '../core/index.js';
import { InputError } from '../errors.js';
import { sampleSize, type Dataset } from '../data/dataset.js';
import { axisPermId, type PermutationSpec } from '../permutation/spec.js';
import {
  executeGraph, graphFlow, graphTensors, layerOf, type GraphNode, type ModelGraph, type RunContext,
} from './graph.js';
import type { Model, Params } from './model.js';

/** Where one permutation's activations are read: a node's output, channels on per-sample `axis`. */
export interface ActivationPoint {
  node: string;
  axis: number;
}

/**
 * The activations of one set of per-head permutations (attention heads × head dimension): nodes
 * whose output holds the heads on `headAxis` and the head dimension on `dimAxis`. `blocks` is the
 * heads' permutation (shared by every set of its layer), null when the heads cannot move.
 */
export interface BlockActivations {
  blocks: string | null;
  within: string[];
  points: { node: string; headAxis: number; dimAxis: number }[];
}

export interface ActivationPoints {
  /** Permutation id → where its activations are read (permutations of whole units). */
  flat: Record<string, ActivationPoint[]>;
  /** One entry per set of per-head permutations (e.g. a layer's query/key and value/output dimensions). */
  blocks: BlockActivations[];
}

/**
 * Where each permutation's activations are read, derived from the graph and the spec. Per-head
 * permutations are read where their head dimension is computed (reshape or product outputs: a
 * transpose only reorders its input's values and would count them twice).
 */
export function activationPoints(graph: ModelGraph, spec: PermutationSpec): ActivationPoints {
  // The graph's channel flow (the rules deriveSpec reads); each derived permutation is named as
  // the given spec names the weight axis that opens it.
  const flow = graphFlow(graph);
  const rename = new Map<string, string | null>();
  for (const [id, weight] of Object.entries(flow.owners)) {
    const e = spec.axes[weight]?.[0];
    rename.set(id, e === undefined ? null : axisPermId(e));
  }
  const renamed = (id: string | null) => (id === null ? null : rename.has(id) ? rename.get(id)! : spec.perms[id] !== undefined ? id : null);
  const byPerm = new Map<string, { n: GraphNode; axis: number }[]>();
  const blockSets = new Map<string, BlockActivations>();
  for (const n of graph.nodes) {
    const axes = flow.nodeAxes.get(n.id) ?? [];
    const heads = new Set<number>();
    axes.forEach((a, axis) => {
      if (!a || typeof a !== 'object' || !('within' in a)) return;
      heads.add(a.headAxis);
      if (n.op === 'transpose') return;
      const within = a.within.map(renamed);
      if (within.some((w) => w === null)) return;
      const key = JSON.stringify(within);
      let set = blockSets.get(key);
      if (!set) blockSets.set(key, (set = { blocks: renamed(a.blocks), within: within as string[], points: [] }));
      set.points.push({ node: n.id, headAxis: a.headAxis, dimAxis: axis });
    });
    // A node's units: the first axis carrying a whole-unit permutation (not a heads axis).
    const axis = axes.findIndex((a, k) => typeof a === 'string' && !heads.has(k));
    if (axis < 0) continue;
    const perm = renamed(axes[axis] as string);
    if (!perm) continue;
    let list = byPerm.get(perm);
    if (!list) byPerm.set(perm, (list = []));
    list.push({ n, axis });
  }
  const blockIds = new Set([...blockSets.values()].flatMap((b) => [b.blocks, ...b.within]));
  const flat: Record<string, ActivationPoint[]> = {};
  for (const p of Object.keys(spec.perms)) {
    if (blockIds.has(p)) continue;
    const nodes = byPerm.get(p) ?? [];
    const role = (x: { n: GraphNode }) => layerOf(x.n).activation?.(x.n as never) ?? null;
    const acts = nodes.filter((x) => role(x) === 'nonlinearity');
    const adds = nodes.filter((x) => role(x) === 'residual');
    flat[p] = (acts.length ? acts : adds.length ? adds : nodes.slice(-1)).map((x) => ({ node: x.n.id, axis: x.axis }));
  }
  return { flat, blocks: [...blockSets.values()] };
}

/**
 * Forward pass that also returns the outputs of the nodes in `record`. Unfused (every node's
 * output exists), otherwise the forward pass's exact semantics (BN modes, dropout, input reshape).
 */
export function forwardRecording(graph: ModelGraph, params: Params, x: Tensor, ctx: RunContext, record: Iterable<string>): { output: Tensor; values: Map<string, Tensor> } {
  const want = new Set(record);
  const known = new Set(graph.nodes.map((n) => n.id));
  for (const id of want) if (!known.has(id)) throw new Error(`forwardRecording: the graph has no node "${id}"`);
  return executeGraph(graph, params, x, ctx, { fuse: false, record: want });
}

/**
 * A node's output as a row-major [rows, C] matrix with the channels of per-sample axis `axis`
 * (default 0) as columns: [N, C] as is, [N, C, h, w] as (N·h·w, C), [N, T, D] on axis 1 as
 * (N·T, D): every other position of every sample is one sample of the C-vector.
 */
export function activationRows(t: Tensor, axis = 0): { rows: number; channels: number; data: Float32Array } {
  if (t.ndim < 2 || axis + 1 >= t.ndim) throw new Error(`activationRows: expects channels on per-sample axis ${axis}, got [${t.shape.join(', ')}]`);
  const C = t.shape[axis + 1];
  const outer = t.shape.slice(0, axis + 1).reduce((a, b) => a * b, 1);
  const inner = t.size / (outer * C);
  const src = t.data;
  if (inner === 1) return { rows: outer, channels: C, data: src instanceof Float32Array ? src : Float32Array.from(src) };
  const out = new Float32Array(t.size);
  for (let s = 0; s < outer; s++) {
    for (let c = 0; c < C; c++) {
      const from = (s * C + c) * inner;
      const to = s * inner * C + c;
      for (let p = 0; p < inner; p++) out[to + p * C] = src[from + p];
    }
  }
  return { rows: outer * inner, channels: C, data: out };
}

/** A node's output as [rows, H·d]: per-sample axes `headAxis` (H) and `dimAxis` (d) as columns, head-major. */
export function headRows(t: Tensor, headAxis: number, dimAxis: number): { rows: number; channels: number; data: Float32Array } {
  const rest = [...Array(t.ndim).keys()].filter((k) => k !== headAxis + 1 && k !== dimAxis + 1);
  const y = F.permute(t, [...rest, headAxis + 1, dimAxis + 1]);
  const channels = t.shape[headAxis + 1] * t.shape[dimAxis + 1];
  return { rows: t.size / channels, channels, data: y.data instanceof Float32Array ? y.data : Float32Array.from(y.data) };
}

/** Throws an InputError unless the dataset's samples fit the model input (same size; [1,28,28] into [784] is fine, as in runGraph). */
export function assertDataFitsModel(model: Model, data: Dataset, who: string): void {
  const want = model.inputShape.reduce((p, d) => p * d, 1);
  if (sampleSize(data) !== want) {
    throw new InputError(`${who}: data "${data.name}" has samples of shape [${data.sampleShape.join(', ')}] but model ${model.name} expects [${model.inputShape.join(', ')}]`);
  }
  if (!(data.n >= 1)) throw new InputError(`${who}: data "${data.name}" is empty`);
}

/**
 * Throws an InputError unless `state` holds every weight of the model with the model's shape
 * (BN running statistics may be absent altogether: BN then uses batch statistics). The forward
 * pass itself reads shapes off the tensors, so a state of another width would run silently.
 */
export function assertStateFitsModel(model: Model, state: Params, who: string, label: string): void {
  const problems: string[] = [];
  const infos = graphTensors(model.graph());
  const anyBuffer = infos.some((t) => t.buffer && state.has(t.name));
  for (const t of infos) {
    const x = state.get(t.name);
    if (!x) {
      if (!t.buffer || anyBuffer) problems.push(`"${t.name}" is missing`);
    } else if (x.shape.length !== t.shape.length || x.shape.some((d, i) => d !== t.shape[i])) {
      problems.push(`"${t.name}" has shape [${x.shape.join(', ')}], the model needs [${t.shape.join(', ')}]`);
    }
  }
  if (problems.length) throw new InputError(`${who}: ${label} does not fit model ${model.name}: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''}`);
}
