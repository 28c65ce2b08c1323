/** Numeric core: tensors, autodiff, ops, optimisers, RNG and the backends. */
export * from './tensor.js';
export * as F from './ops/index.js';
export * from './optim/optimizers.js';
export { Rng } from './random.js';
export { kernels, currentBackend, defaultBackend, setBackend, jsBackend, nativeBackend, nativeLoadError, wasmBackend, wasmLoadError, defaultBackendReason } from './backend/index.js';
export type { Backend, Kernels, FloatArray, BackendInfo } from './backend/index.js';
