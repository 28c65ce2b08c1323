/**
 * The model registry, derived from what each builder module declares (its `*_MODELS` family):
 * `createModel` rebuilds a model from its JSON config (`model.config`, e.g. a checkpoint's), and
 * `MODEL_PRESETS` are the named models of `rebasin train --model`. A new architecture is a builder
 * module with its family, listed once in FAMILIES; a new preset is one entry in its family.
 */
import { InputError } from '../errors.js';
import type { ArchEntry, ConfigOf, Model, ModelPreset } from './model.js';
import { GRAPH_MODELS } from './imported.js';
import { MLP_MODELS } from './mlp.js';
import { RESNET_MODELS } from './resnet.js';
import { TRANSFORMER_MODELS } from './transformer.js';
import { VGG_MODELS } from './vgg.js';

const FAMILIES = [MLP_MODELS, VGG_MODELS, RESNET_MODELS, TRANSFORMER_MODELS, GRAPH_MODELS];

/** A model's JSON config: `arch` plus that architecture's builder options. */
export type ModelConfig = ConfigOf<(typeof FAMILIES)[number]['archs'][number]>;

function byName<T>(items: T[], name: (t: T) => string, what: string): Map<string, T> {
  const map = new Map<string, T>();
  for (const t of items) {
    if (map.has(name(t))) throw new Error(`models: ${what} "${name(t)}" is declared twice`);
    map.set(name(t), t);
  }
  return map;
}

const ARCHS = byName(FAMILIES.flatMap((f): ArchEntry<string, never>[] => f.archs), (e) => e.arch, 'arch');

/** The architecture names createModel accepts, in declaration order. */
export const MODEL_ARCHS: readonly string[] = [...ARCHS.keys()];

/** The named models of `rebasin train --model`, in declaration order. */
export const MODEL_PRESETS: readonly ModelPreset<ModelConfig>[] = FAMILIES.flatMap((f): ModelPreset<ModelConfig>[] => f.presets);

const PRESETS = byName([...MODEL_PRESETS], (p) => p.name, 'preset');

/** The preset called `name`; throws listing the names when there is none. */
export function modelPreset(name: string): ModelPreset<ModelConfig> {
  const p = PRESETS.get(name);
  if (!p) throw new InputError(`unknown model "${name}" (expected ${[...PRESETS.keys()].join(', ')})`);
  return p;
}

/** Rebuilds a model from its JSON config (`model.config`), e.g. when loading a checkpoint. */
export function createModel(config: ModelConfig): Model {
  const entry = ARCHS.get((config as { arch?: unknown }).arch as string);
  if (!entry) throw new InputError(`createModel: unknown arch "${(config as { arch?: unknown }).arch as string}" (expected ${MODEL_ARCHS.join(', ')})`);
  return (entry.build as (options: ModelConfig) => Model)(config);
}
