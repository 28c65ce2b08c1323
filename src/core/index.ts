/** Numeric core: tensors, autodiff, ops, optimisers, RNG and the backends. */
export * from './tensor.js';
export * as F from './ops/index.js';
export * from './optim/optimizers.js';
export { Rng } from './random.js';
export { kernels, backendInfo, nativeKernels, nativeLoadError, setKernels, jsKernels } from './backend/index.js';
export type { Kernels, FloatArray, BackendInfo } from './backend/index.js';
