/**
 * The functional model interface: a model is a graph plus helpers; parameters live outside it in
 * name → tensor maps (PyTorch state_dict names and layouts), so two models of one architecture,
 * their permuted copies and their interpolations are just different maps.
 */
import { InputError } from '../errors.js';
import type { DType, Tensor } from '../core/index.js';
import type { Rng } from '../core/random.js';
import type { Params } from '../state/params.js';
import type { PermutationSpec } from '../permutation/spec.js';
import { deriveSpec, inferShapes, initGraph, runGraph, type ModelGraph } from './graph.js';
import type { ModelConfig } from './registry.js';

export type { Params, ModelConfig };

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

/**
 * An architecture: the `arch` name a ModelConfig carries and the builder that takes the rest of
 * the config as options. Declared by each builder module (see `defineArch`), collected in registry.ts.
 */
export interface ArchEntry<A extends string, O> {
  arch: A;
  build(options: O): Model;
}

/** Declares an architecture: `defineArch('vgg', vgg)`. */
export function defineArch<A extends string, O>(name: A, build: (options: O) => Model): ArchEntry<A, O> {
  return { arch: name, build };
}

/** The config of an architecture: its name plus its builder's options. */
export type ConfigOf<E> = E extends ArchEntry<infer A, infer O> ? { arch: A } & NonNullable<O> : never;

/** What `rebasin train` hands a preset to build its config from. */
export interface PresetInputs {
  /** Per-sample shape of the training data (after `padImagesTo`). */
  sampleShape: number[];
  /** Classes (cross-entropy) or regression targets per sample. */
  outputs: number;
  /** --width, in the preset's own sense (see `ModelPreset.width`). */
  width: number;
  /** --hidden-layers, --activation, --dropout (presets with `dropout: true` only: MLPs). */
  hiddenLayers: number;
  activation: 'relu' | 'tanh';
  dropout: number;
}

/**
 * A named model of `rebasin train --model NAME`: how the CLI's options and the data become a
 * ModelConfig, and the defaults that go with it. Declared beside its builder.
 */
export interface ModelPreset<C extends { arch: string } = { arch: string }> {
  /** The --model name, e.g. 'vgg11'. */
  name: string;
  /** For the command summary, e.g. 'VGG11'. */
  title: string;
  /** What --width means for it and its defaults (on image data; `vectorDefault` on vector data). */
  width: { meaning: string; default: number; vectorDefault?: number; integer?: boolean };
  /** Needs image samples [C, H, W] (the MLP flattens anything). */
  imagesOnly: boolean;
  /** Zero-pad smaller images to this size (VGG11's five 2×2 pools need ≥ 32 pixels). */
  padImagesTo?: number;
  /** Its default learning rate, epochs and batch size when not the CLI's general ones. */
  lr?: number;
  epochs?: number;
  batchSize?: number;
  /** Reads token ids (`--dataset text`) and nothing else. */
  textOnly?: boolean;
  /** Takes --dropout (and --hidden-layers, --activation). */
  dropout?: boolean;
  config(inputs: PresetInputs): C;
}

/** What a builder module declares: its architectures and its named presets. */
export interface ModelFamily {
  archs: readonly ArchEntry<string, never>[];
  presets: readonly ModelPreset[];
}

/** Wraps a graph as a Model. */
export function graphModel(name: string, config: ModelConfig, graph: ModelGraph): Model {
  const shapes = inferShapes(graph); // validates the graph once
  const input = graph.nodes.find((n) => n.op === 'input');
  const output = graph.nodes.find((n) => n.op === 'output');
  if (!input || input.op !== 'input' || !output || output.op !== 'output') throw new InputError(`model ${name}: the graph needs an input and an output node`);
  const outShape = shapes.get(output.id)!;
  if (outShape.length !== 1) throw new InputError(`model ${name}: output must be a feature vector, got [${outShape.join(', ')}]`);
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
