// The model names of scripts/tau-candidates.mjs and scripts/sinkhorn-grad-scale.mjs:
//   mlp<depth>x<width>[t][i<in>][o<out>] (t = tanh; default 784 in, 10 out),
//   vgg<11|13|16|19>x<multiplier>, resnet20x<multiplier>
import { mlp, resnet20, vgg } from '../dist/src/models/index.js';

export function build(name) {
  let m = /^mlp(\d+)x(\d+)(t?)(?:i(\d+))?(?:o(\d+))?$/.exec(name);
  if (m) return mlp({ sizes: [m[4] ? Number(m[4]) : 784, ...Array(Number(m[1])).fill(Number(m[2])), m[5] ? Number(m[5]) : 10], activation: m[3] ? 'tanh' : 'relu' });
  m = /^vgg(11|13|16|19)x([\d.]+)$/.exec(name);
  if (m) return vgg({ depth: Number(m[1]), batchNorm: false, inputShape: [3, 32, 32], numClasses: 10, widthMultiplier: Number(m[2]) });
  m = /^resnet20x([\d.]+)$/.exec(name);
  if (m) return resnet20({ widthMultiplier: Number(m[1]) });
  throw new Error(`unknown model ${name}`);
}
