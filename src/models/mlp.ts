/**
 * Multi-layer perceptron, PyTorch names of
 * `layers = nn.Sequential(Linear, Act, Linear, Act, …, Linear)`: Linear k sits at index 2k
 * (`layers.0.weight`, `layers.2.weight`, …) and its activation at 2k+1. Dropout, when asked
 * for, is applied functionally after each hidden activation, so it takes no Sequential index and
 * models trained with and without dropout share parameter names (the reference trains A without
 * and B with dropout 0.25).
 */
import { GraphBuilder } from './builder.js';
import { defineArch, graphModel, type Model, type ModelFamily, type ModelPreset } from './model.js';

export interface MlpOptions {
  /** [input, hidden…, output], e.g. [784, 512, 512, 10]. */
  sizes: number[];
  activation?: 'relu' | 'tanh';
  /** Dropout probability after each hidden activation (training only). */
  dropout?: number;
}

export type MlpConfig = { arch: 'mlp' } & MlpOptions;

/** Dropout of model B in the reference's MLP LMC protocol (its main_lmc_mlp.py; model A has none). */
export const REFERENCE_DROPOUT_B = 0.25;

export function mlp(opts: MlpOptions): Model {
  const { sizes } = opts;
  const activation = opts.activation ?? 'relu';
  const dropout = opts.dropout ?? 0;
  if (sizes.length < 2 || sizes.some((s) => !(Number.isInteger(s) && s > 0))) {
    throw new Error(`mlp: sizes must list at least input and output widths as positive integers, got [${sizes.join(', ')}]`);
  }
  if (activation !== 'relu' && activation !== 'tanh') throw new Error(`mlp: activation must be "relu" or "tanh", got "${activation as string}"`);
  const b = new GraphBuilder();
  let h = b.input([sizes[0]]);
  for (let k = 0; k + 1 < sizes.length; k++) {
    h = b.linear(`layers.${2 * k}`, h, sizes[k], sizes[k + 1]);
    if (k + 2 < sizes.length) {
      h = b.act(`layers.${2 * k + 1}`, h, activation);
      if (dropout > 0) h = b.dropout(`layers.${2 * k + 1}.dropout`, h, dropout);
    }
  }
  b.output(h);
  const config: MlpConfig = { arch: 'mlp', sizes: [...sizes], activation, dropout };
  const name = `mlp-${sizes.join('-')}${activation === 'tanh' ? '-tanh' : ''}`;
  return graphModel(name, config, b.build());
}

/** `rebasin train --model mlp`: input → --hidden-layers × --width → outputs. */
const MLP_PRESET: ModelPreset<MlpConfig> = {
  name: 'mlp', title: 'MLP',
  width: { meaning: 'hidden width', default: 512, vectorDefault: 32, integer: true },
  imagesOnly: false,
  dropout: true,
  config: (i) => ({
    arch: 'mlp',
    sizes: [i.sampleShape.reduce((a, b) => a * b, 1), ...Array<number>(i.hiddenLayers).fill(i.width), i.outputs],
    activation: i.activation,
    dropout: i.dropout,
  }),
};

export const MLP_MODELS = { archs: [defineArch('mlp', mlp)], presets: [MLP_PRESET] } satisfies ModelFamily;
