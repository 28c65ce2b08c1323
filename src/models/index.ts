/** Models: functional architectures (PyTorch names and layouts) described by a ModelGraph. */
export * from './model.js';
export * from './graph.js';
export { GraphBuilder } from './builder.js';
export { mlp, REFERENCE_DROPOUT_B, type MlpOptions, type MlpConfig } from './mlp.js';
export { vgg, vggSmall, VGG_CONFIGS, type VggOptions, type SmallVggOptions, type VggConfig, type SmallVggConfig } from './vgg.js';
export { resnet20, resnet18, type ResNet20Options, type ResNet18Options, type ResNet20Config, type ResNet18Config } from './resnet.js';
export { createModel, modelPreset, MODEL_ARCHS, MODEL_PRESETS } from './registry.js';
export { importedModel, GRAPH_MODELS, type GraphModelOptions } from './imported.js';
export { gpt, vit, type GptOptions, type VitOptions, type GptConfig, type VitConfig } from './transformer.js';
