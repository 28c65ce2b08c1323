/** Continual learning: RebasinIL, baselines, benchmarks, metrics and the resumable experiment. */
export * from './benchmarks.js';
export * from './common.js';
export * from './metrics.js';
export * from './strategy.js';
export * from './rebasin-il.js';
export * from './baselines.js';
export * from './state.js';
export * from './runner.js';
