/**
 * The functional model interface: a model is a graph plus helpers; parameters live outside it in
 * name → tensor maps (PyTorch state_dict names and layouts), so two models of one architecture,
 * their permuted copies and their interpolations are just different maps.
 */
import type { DType, Tensor } from '../core/index.js';
import type { Rng } from '../core/random.js';
import type { Params } from '../state/params.js';
import type { PermutationSpec } from '../permutation/spec.js';
import { deriveSpec, inferShapes, initGraph, runGraph, type ModelGraph } from './graph.js';

export type { Params };

export interface ForwardContext {
  training: boolean;
  /**
   * BN running statistics (`*.running_mean`, `*.running_var`). Updated in place in training.
   * Without them BN always normalises with batch statistics (track_running_stats=False).
   */
  buffers?: Params;
  /** Random source for dropout in training. */
  rng?: Rng;
}

export interface Model {
  /** e.g. 'mlp-784-512-512-10', 'vgg11-bn', 'resnet20-w4'. */
  readonly name: string;
  /** The builder options that recreate this model with `createModel` (JSON-serialisable). */
  readonly config: ModelConfig;
  /** Per sample, e.g. [784] or [3, 32, 32]. */
  readonly inputShape: number[];
  readonly numOutputs: number;
  /** PyTorch default initialisation (see initGraph); float32 unless `dtype` says otherwise. */
  init(rng: Rng, dtype?: DType): { params: Params; buffers: Params };
  /** x [N, ...inputShape] → logits [N, numOutputs]. */
  forward(params: Params, x: Tensor, ctx: ForwardContext): Tensor;
  /** Derived from graph() by deriveSpec. */
  permutationSpec(): PermutationSpec;
  /** The layer DAG the forward pass runs and the spec is derived from (a fresh copy). */
  graph(): ModelGraph;
}

export interface MlpConfig {
  arch: 'mlp';
  sizes: number[];
  activation?: 'relu' | 'tanh';
  dropout?: number;
}

export interface VggConfig {
  arch: 'vgg';
  depth: 11 | 13 | 16 | 19;
  batchNorm: boolean;
  inputShape?: [number, number, number];
  numClasses?: number;
  widthMultiplier?: number;
  classifier?: 'single' | 'three-layer';
  hiddenWidth?: number;
  dropout?: number;
  avgpool?: [number, number] | null;
}

export interface SmallVggConfig {
  arch: 'vgg-small';
  channels?: [number, number, number, number];
  numClasses?: number;
  batchNorm?: boolean;
  inputShape?: [number, number, number];
}

export interface ResNetConfig {
  arch: 'resnet20' | 'resnet18';
  widthMultiplier?: number;
  numClasses?: number;
  inputShape?: [number, number, number];
}

export type ModelConfig = MlpConfig | VggConfig | SmallVggConfig | ResNetConfig;

/** Wraps a graph as a Model. */
export function graphModel(name: string, config: ModelConfig, graph: ModelGraph): Model {
  const shapes = inferShapes(graph); // validates the graph once
  const input = graph.nodes.find((n) => n.op === 'input');
  const output = graph.nodes.find((n) => n.op === 'output');
  if (!input || input.op !== 'input' || !output || output.op !== 'output') throw new Error(`model ${name}: the graph needs an input and an output node`);
  const outShape = shapes.get(output.id)!;
  if (outShape.length !== 1) throw new Error(`model ${name}: output must be a feature vector, got [${outShape.join(', ')}]`);
  const frozen = JSON.stringify(graph);
  const g = JSON.parse(frozen) as ModelGraph; // the caller's object may change later; ours does not
  const cfg = JSON.parse(JSON.stringify(config)) as ModelConfig;
  return {
    name,
    get config() { return JSON.parse(JSON.stringify(cfg)) as ModelConfig; },
    inputShape: [...input.shape],
    numOutputs: outShape[0],
    init: (rng, dtype) => initGraph(g, rng, dtype),
    forward: (params, x, ctx) => runGraph(g, params, x, ctx),
    permutationSpec: () => deriveSpec(g),
    graph: () => JSON.parse(frozen) as ModelGraph,
  };
}
