/** Rebuilds a model from its JSON config (`model.config`), e.g. when loading a checkpoint. */
import type { Model, ModelConfig } from './model.js';
import { mlp } from './mlp.js';
import { resnet18, resnet20 } from './resnet.js';
import { vgg, vggSmall } from './vgg.js';

export function createModel(config: ModelConfig): Model {
  switch (config.arch) {
    case 'mlp': return mlp(config);
    case 'vgg': return vgg(config);
    case 'vgg-small': return vggSmall(config);
    case 'resnet20': return resnet20(config);
    case 'resnet18': return resnet18(config);
    default: throw new Error(`createModel: unknown arch "${(config as { arch?: unknown }).arch as string}" (expected mlp, vgg, vgg-small, resnet20, resnet18)`);
  }
}
