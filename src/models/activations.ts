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
import type { Tensor } from '../core/index.js';
import { InputError } from '../errors.js';
import { sampleSize, type Dataset } from '../data/dataset.js';
import { axisPermId, type PermutationSpec } from '../permutation/spec.js';
import {
  executeGraph, graphFlow, graphTensors, layerOf, type GraphNode, type ModelGraph, type RunContext,
} from './graph.js';
import type { Model, Params } from './model.js';

/** Permutation id → the ids of the nodes whose outputs are that permutation's activations. */
export function activationPoints(graph: ModelGraph, spec: PermutationSpec): Record<string, string[]> {
  // The graph's channel flow (the rules deriveSpec reads); each derived permutation is named as
  // the given spec names the weight axis that opens it.
  const flow = graphFlow(graph);
  const rename = new Map<string, string | null>();
  for (const [id, weight] of Object.entries(flow.owners)) {
    const e = spec.axes[weight]?.[0];
    rename.set(id, e === undefined ? null : axisPermId(e));
  }
  const byPerm = new Map<string, GraphNode[]>();
  for (const n of graph.nodes) {
    // Activation rows read the channels on axis 0 ([C, ...] per sample), not flattened ones.
    const a = flow.nodeAxes.get(n.id)?.[0];
    if (typeof a !== 'string') continue;
    const perm = rename.get(a);
    if (!perm) continue;
    let list = byPerm.get(perm);
    if (!list) byPerm.set(perm, (list = []));
    list.push(n);
  }
  const out: Record<string, string[]> = {};
  for (const p of Object.keys(spec.perms)) {
    const nodes = byPerm.get(p) ?? [];
    const role = (n: GraphNode) => layerOf(n).activation?.(n as never) ?? null;
    const acts = nodes.filter((n) => role(n) === 'nonlinearity');
    const adds = nodes.filter((n) => role(n) === 'residual');
    out[p] = (acts.length ? acts : adds.length ? adds : nodes.slice(-1)).map((n) => n.id);
  }
  return out;
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
 * A node's output as a row-major [rows, C] matrix: [N, C] as is, [N, C, h, w] as (N·h·w, C)
 * (every spatial position of every sample is one sample of the C-vector).
 */
export function activationRows(t: Tensor): { rows: number; channels: number; data: Float32Array } {
  if (t.ndim < 2) throw new Error(`activationRows: expects [N, C, ...], got [${t.shape.join(', ')}]`);
  const [N, C] = t.shape;
  const inner = t.size / (N * C);
  const src = t.data;
  if (inner === 1) return { rows: N, channels: C, data: src instanceof Float32Array ? src : Float32Array.from(src) };
  const out = new Float32Array(t.size);
  for (let s = 0; s < N; s++) {
    for (let c = 0; c < C; c++) {
      const from = (s * C + c) * inner;
      const to = s * inner * C + c;
      for (let p = 0; p < inner; p++) out[to + p * C] = src[from + p];
    }
  }
  return { rows: N * inner, channels: C, data: out };
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
