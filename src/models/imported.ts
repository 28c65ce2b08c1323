/**
 * Models described by a ModelGraph alone (`{"arch": "graph", "graph": …}`): what an importer
 * (ONNX, TF.js) makes of someone else's network. The config carries the whole graph, so a
 * checkpoint written for such a model rebuilds it without the original file.
 */
import { InputError } from '../errors.js';
import { inferShapes, type ModelGraph } from './graph.js';
import { defineArch, graphModel, type Model, type ModelFamily } from './model.js';

export interface GraphModelOptions {
  graph: ModelGraph;
  /** Shown in messages and summaries, e.g. the imported file's name. */
  name?: string;
}

/** A runnable model of a graph: every node runs and every shape is known. */
export function importedModel(options: GraphModelOptions): Model {
  const name = options.name ?? 'graph';
  const graph = options.graph;
  if (!graph || !Array.isArray(graph.nodes)) throw new InputError(`model ${name}: "graph" must be a ModelGraph ({ "nodes": [...] })`);
  const opaque = graph.nodes.find((n) => n.op === 'opaque');
  if (opaque && opaque.op === 'opaque') throw new InputError(`model ${name}: node "${opaque.id}" (${opaque.opType}) cannot run: ${opaque.reason}`);
  for (const [id, s] of inferShapes(graph)) {
    if (s.some((d) => !Number.isInteger(d))) throw new InputError(`model ${name}: node "${id}" has a dynamic shape [${s.map((d) => (Number.isInteger(d) ? d : '?')).join(', ')}]; give the input's shape (--input-shape)`);
  }
  return graphModel(name, { arch: 'graph', ...options }, graph);
}

export const GRAPH_MODELS = {
  archs: [defineArch('graph', importedModel)],
  presets: [],
} satisfies ModelFamily;
