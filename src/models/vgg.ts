/**
 * VGG (Simonyan & Zisserman configurations A/B/D/E = depth 11/13/16/19) with torchvision names:
 * `features` is nn.Sequential of Conv2d(3×3, padding 1, bias) [+ BatchNorm2d] + ReLU per channel
 * entry and MaxPool2d(2) per 'M', indexed in that order (`features.0.weight`, `features.1.weight`
 * is the BN with batchNorm…); `classifier` is an nn.Sequential too (`classifier.0.weight`).
 *
 * CIFAR form by default: a 32×32 input leaves 1×1×512 after the 5 pools and the classifier is
 * Linear(512, classes). Larger inputs leave an h×w map, flattened channel-major into
 * Linear(512·h·w, …). `avgpool: [7, 7]` adds torchvision's AdaptiveAvgPool2d((7, 7)) first
 * (the reference's alignment example: vgg11 at 32×32 with Linear(25088, 10)).
 */
import { GraphBuilder, outSize, scaled } from './builder.js';
import { defineArch, graphModel, type Model, type ModelFamily, type ModelPreset } from './model.js';

type Cfg = (number | 'M')[];

/** Channel plans; 'M' is a 2×2 max-pool. */
export const VGG_CONFIGS: Record<11 | 13 | 16 | 19, Cfg> = {
  11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
  19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
};

export interface VggOptions {
  depth: 11 | 13 | 16 | 19;
  batchNorm: boolean;
  /** Per sample [C, H, W]; default [3, 32, 32]. */
  inputShape?: [number, number, number];
  numClasses?: number;
  /** Scales every conv width (and the default hidden width); default 1. */
  widthMultiplier?: number;
  /**
   * 'single' (default): Linear(features, classes) at classifier.0. 'three-layer': torchvision's
   * Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear (classifier.0/3/6).
   */
  classifier?: 'single' | 'three-layer';
  /** Hidden width of the three-layer classifier; default 512·widthMultiplier (torchvision: 4096). */
  hiddenWidth?: number;
  /** Dropout of the three-layer classifier in training; default 0 (torchvision: 0.5). */
  dropout?: number;
  /** Adaptive average pool to this size before flattening (torchvision: [7, 7]); default none. */
  avgpool?: [number, number] | null;
}

export type VggConfig = { arch: 'vgg' } & VggOptions;

/** Emits the conv stack; returns the last node, its channels and spatial size. */
function features(b: GraphBuilder, input: string, cfg: Cfg, inC: number, h0: number, w0: number, batchNorm: boolean, model: string) {
  let h = input;
  let c = inC;
  let H = h0;
  let W = w0;
  let i = 0;
  for (const v of cfg) {
    if (v === 'M') {
      if (H < 2 || W < 2) throw new Error(`${model}: input [${inC}, ${h0}, ${w0}] is too small for its max-pools`);
      h = b.maxPool(`features.${i++}`, h, 2);
      H = outSize(H, 2, 2, 0);
      W = outSize(W, 2, 2, 0);
    } else {
      h = b.conv(`features.${i++}`, h, c, v, 3, 1, 1, true);
      if (batchNorm) h = b.batchNorm(`features.${i++}`, h, v);
      h = b.act(`features.${i++}`, h, 'relu');
      c = v;
    }
  }
  return { h, c, H, W, next: i };
}

export function vgg(opts: VggOptions): Model {
  const depth = opts.depth;
  const plan = VGG_CONFIGS[depth];
  if (!plan) throw new Error(`vgg: depth must be 11, 13, 16 or 19, got ${depth}`);
  const inputShape = opts.inputShape ?? [3, 32, 32];
  const numClasses = opts.numClasses ?? 10;
  const w = opts.widthMultiplier ?? 1;
  const head = opts.classifier ?? 'single';
  const dropout = opts.dropout ?? 0;
  const avgpool = opts.avgpool ?? null;
  const hidden = opts.hiddenWidth ?? scaled(512, w);
  const name = `vgg${depth}${opts.batchNorm ? '-bn' : ''}${w !== 1 ? `-w${w}` : ''}${head === 'three-layer' ? '-fc3' : ''}`;
  const cfg = plan.map((v) => (v === 'M' ? v : scaled(v, w)));
  const b = new GraphBuilder();
  const f = features(b, b.input(inputShape), cfg, inputShape[0], inputShape[1], inputShape[2], opts.batchNorm, name);
  let h = f.h;
  let H = f.H;
  let W = f.W;
  if (avgpool) {
    h = b.adaptiveAvgPool('avgpool', h, avgpool);
    [H, W] = avgpool;
  }
  h = b.flatten('flatten', h, H * W);
  const flat = f.c * H * W;
  if (head === 'single') h = b.linear('classifier.0', h, flat, numClasses);
  else if (head === 'three-layer') {
    h = b.act('classifier.1', b.linear('classifier.0', h, flat, hidden), 'relu');
    if (dropout > 0) h = b.dropout('classifier.2', h, dropout);
    h = b.act('classifier.4', b.linear('classifier.3', h, hidden, hidden), 'relu');
    if (dropout > 0) h = b.dropout('classifier.5', h, dropout);
    h = b.linear('classifier.6', h, hidden, numClasses);
  } else throw new Error(`vgg: classifier must be "single" or "three-layer", got "${head as string}"`);
  b.output(h);
  const config: VggConfig = {
    arch: 'vgg', depth, batchNorm: opts.batchNorm, inputShape: [...inputShape], numClasses, widthMultiplier: w,
    classifier: head, hiddenWidth: hidden, dropout, avgpool,
  };
  return graphModel(name, config, b.build());
}

export interface SmallVggOptions {
  /** Widths of the four convs; default [8, 32, 64, 128] (the reference uses [8, 32, 64, 512]). */
  channels?: [number, number, number, number];
  numClasses?: number;
  /** Default true (the reference's VGG has BatchNorm after every conv). */
  batchNorm?: boolean;
  /** Default [1, 28, 28] (MNIST). */
  inputShape?: [number, number, number];
}

export type SmallVggConfig = { arch: 'vgg-small' } & SmallVggOptions;

/**
 * The reference's small MNIST VGG (`VGG("Small")` in sinkhorn-rebasin's `main_lmc_cnn.py`, a
 * kuangliu-style CIFAR VGG): conv c0 → M → conv c1 → M → conv c2 → conv c3 → AvgPool2d(1) →
 * flatten (c3·7·7 at 28×28) → Linear. Names follow that class: `features.N` as above (the
 * AvgPool2d(1) is the last features entry) and a bare `classifier.weight` / `classifier.bias`.
 * The last conv defaults to 128 channels instead of 512 so it trains quickly on the CPU; pass
 * channels [8, 32, 64, 512] for the reference's Linear(25088, 10).
 */
export function vggSmall(opts: SmallVggOptions = {}): Model {
  const channels = opts.channels ?? [8, 32, 64, 128];
  const numClasses = opts.numClasses ?? 10;
  const batchNorm = opts.batchNorm ?? true;
  const inputShape = opts.inputShape ?? [1, 28, 28];
  if (channels.length !== 4 || channels.some((c) => !(Number.isInteger(c) && c > 0))) {
    throw new Error(`vggSmall: channels must be four positive integers, got [${channels.join(', ')}]`);
  }
  const name = `vgg-small-${channels.join('-')}${batchNorm ? '-bn' : ''}`;
  const b = new GraphBuilder();
  const cfg: Cfg = [channels[0], 'M', channels[1], 'M', channels[2], channels[3]];
  const f = features(b, b.input(inputShape), cfg, inputShape[0], inputShape[1], inputShape[2], batchNorm, name);
  let h = b.avgPool(`features.${f.next}`, f.h, 1, 1);
  h = b.flatten('flatten', h, f.H * f.W);
  h = b.linear('classifier', h, f.c * f.H * f.W, numClasses);
  b.output(h);
  const config: SmallVggConfig = { arch: 'vgg-small', channels: [...channels], numClasses, batchNorm, inputShape: [...inputShape] };
  return graphModel(name, config, b.build());
}

type ImageShape = [number, number, number];

/** `rebasin train --model vgg-small`: the reference's MNIST VGG, its four widths scaled by --width. */
const VGG_SMALL_PRESET: ModelPreset<SmallVggConfig> = {
  name: 'vgg-small', title: 'small VGG',
  width: { meaning: 'channel multiplier', default: 1 },
  imagesOnly: true,
  lr: 1e-2, // as the reference
  config: (i) => ({
    arch: 'vgg-small',
    channels: [8, 32, 64, 128].map((c) => scaled(c, i.width)) as [number, number, number, number],
    numClasses: i.outputs,
    batchNorm: true,
    inputShape: i.sampleShape as ImageShape,
  }),
};

/** `rebasin train --model vgg11`: VGG11 with BatchNorm, 28×28 images padded to 32×32. */
const VGG11_PRESET: ModelPreset<VggConfig> = {
  name: 'vgg11', title: 'VGG11',
  width: { meaning: 'channel multiplier', default: 1 },
  imagesOnly: true,
  padImagesTo: 32,
  config: (i) => ({ arch: 'vgg', depth: 11, batchNorm: true, inputShape: i.sampleShape as ImageShape, numClasses: i.outputs, widthMultiplier: i.width }),
};

export const VGG_MODELS = {
  archs: [defineArch('vgg', vgg), defineArch('vgg-small', vggSmall)],
  presets: [VGG_SMALL_PRESET, VGG11_PRESET],
} satisfies ModelFamily;
