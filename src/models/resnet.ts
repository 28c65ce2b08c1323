/**
 * ResNets with BatchNorm and torchvision names: stem `conv1`/`bn1`, stages `layer1…`, blocks
 * `layerS.B.conv1/bn1/conv2/bn2`, projection shortcut `layerS.B.downsample.0` (1×1 conv, no bias)
 * + `.downsample.1` (BN) where the shape changes, then global average pool and `fc`.
 * Convs have no bias (BN follows each). Both use PyTorch's default init (see initGraph), not
 * torchvision's kaiming_normal(fan_out).
 */
import { GraphBuilder, outSize, scaled } from './builder.js';
import { defineArch, graphModel, type Model, type ModelFamily, type ModelPreset } from './model.js';

interface Stream {
  h: string;
  c: number;
  H: number;
  W: number;
}

/** torchvision BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)). */
function basicBlock(b: GraphBuilder, p: string, x: Stream, planes: number, stride: number): Stream {
  let h = b.conv(`${p}.conv1`, x.h, x.c, planes, 3, stride, 1, false);
  h = b.act(`${p}.relu1`, b.batchNorm(`${p}.bn1`, h, planes), 'relu');
  h = b.conv(`${p}.conv2`, h, planes, planes, 3, 1, 1, false);
  h = b.batchNorm(`${p}.bn2`, h, planes);
  let sc = x.h;
  if (stride !== 1 || x.c !== planes) {
    sc = b.conv(`${p}.downsample.0`, x.h, x.c, planes, 1, stride, 0, false);
    sc = b.batchNorm(`${p}.downsample.1`, sc, planes);
  }
  h = b.act(`${p}.relu2`, b.add(`${p}.add`, [h, sc]), 'relu');
  return { h, c: planes, H: outSize(x.H, 3, stride, 1), W: outSize(x.W, 3, stride, 1) };
}

function stages(b: GraphBuilder, x: Stream, widths: number[], blocks: number[]): Stream {
  let s = x;
  widths.forEach((planes, i) => {
    for (let k = 0; k < blocks[i]; k++) s = basicBlock(b, `layer${i + 1}.${k}`, s, planes, k === 0 && i > 0 ? 2 : 1);
  });
  return s;
}

function head(b: GraphBuilder, s: Stream, numClasses: number): void {
  let h = b.adaptiveAvgPool('avgpool', s.h, [1, 1]);
  h = b.flatten('flatten', h, 1);
  b.output(b.linear('fc', h, s.c, numClasses));
}

export interface ResNet20Options {
  /** Stage widths 16/32/64 × this; default 1. */
  widthMultiplier?: number;
  numClasses?: number;
  /** Default [3, 32, 32]. */
  inputShape?: [number, number, number];
}

export type ResNet20Config = { arch: 'resnet20' } & ResNet20Options;

/** CIFAR ResNet-20 (He et al. 2016): 3×3 stem, 3 stages of 3 basic blocks, 1×1 conv shortcuts. */
export function resnet20(opts: ResNet20Options = {}): Model {
  const w = opts.widthMultiplier ?? 1;
  const numClasses = opts.numClasses ?? 10;
  const inputShape = opts.inputShape ?? [3, 32, 32];
  const widths = [16, 32, 64].map((c) => scaled(c, w));
  const b = new GraphBuilder();
  const x = b.input(inputShape);
  let h = b.conv('conv1', x, inputShape[0], widths[0], 3, 1, 1, false);
  h = b.act('relu', b.batchNorm('bn1', h, widths[0]), 'relu');
  const s = stages(b, { h, c: widths[0], H: inputShape[1], W: inputShape[2] }, widths, [3, 3, 3]);
  head(b, s, numClasses);
  const config: ResNet20Config = { arch: 'resnet20', widthMultiplier: w, numClasses, inputShape: [...inputShape] };
  return graphModel(`resnet20${w !== 1 ? `-w${w}` : ''}`, config, b.build());
}

export interface ResNet18Options {
  numClasses?: number;
  /** Default [3, 224, 224]; [3, 32, 32] works (the map is 1×1 before the pool). */
  inputShape?: [number, number, number];
  /** Stage widths 64/128/256/512 × this; default 1 (torchvision). */
  widthMultiplier?: number;
}

export type ResNet18Config = { arch: 'resnet18' } & ResNet18Options;

/** torchvision ResNet-18: 7×7/2 stem, 3×3/2 max-pool, 4 stages of 2 basic blocks. */
export function resnet18(opts: ResNet18Options = {}): Model {
  const w = opts.widthMultiplier ?? 1;
  const numClasses = opts.numClasses ?? 1000;
  const inputShape = opts.inputShape ?? [3, 224, 224];
  const widths = [64, 128, 256, 512].map((c) => scaled(c, w));
  const b = new GraphBuilder();
  const x = b.input(inputShape);
  let h = b.conv('conv1', x, inputShape[0], widths[0], 7, 2, 3, false);
  h = b.act('relu', b.batchNorm('bn1', h, widths[0]), 'relu');
  h = b.maxPool('maxpool', h, 3, 2, 1);
  const H = outSize(outSize(inputShape[1], 7, 2, 3), 3, 2, 1);
  const W = outSize(outSize(inputShape[2], 7, 2, 3), 3, 2, 1);
  const s = stages(b, { h, c: widths[0], H, W }, widths, [2, 2, 2, 2]);
  head(b, s, numClasses);
  const config: ResNet18Config = { arch: 'resnet18', widthMultiplier: w, numClasses, inputShape: [...inputShape] };
  return graphModel(`resnet18${w !== 1 ? `-w${w}` : ''}`, config, b.build());
}

/** `rebasin train --model resnet20`: ResNet-20, stage widths scaled by --width. */
const RESNET20_PRESET: ModelPreset<ResNet20Config> = {
  name: 'resnet20', title: 'ResNet-20',
  width: { meaning: 'channel multiplier', default: 1 },
  imagesOnly: true,
  config: (i) => ({ arch: 'resnet20', widthMultiplier: i.width, numClasses: i.outputs, inputShape: i.sampleShape as [number, number, number] }),
};

export const RESNET_MODELS = {
  archs: [defineArch('resnet20', resnet20), defineArch('resnet18', resnet18)],
  presets: [RESNET20_PRESET],
} satisfies ModelFamily;
