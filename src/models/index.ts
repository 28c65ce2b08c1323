/** Models: functional architectures (PyTorch names and layouts) described by a ModelGraph. */
export * from './model.js';
export * from './graph.js';
export { GraphBuilder } from './builder.js';
export { mlp, type MlpOptions } from './mlp.js';
export { vgg, vggSmall, VGG_CONFIGS, type VggOptions, type SmallVggOptions } from './vgg.js';
export { resnet20, resnet18, type ResNet20Options, type ResNet18Options } from './resnet.js';
export { createModel } from './registry.js';
