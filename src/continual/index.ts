/** Continual learning: RebasinIL, baselines, benchmarks and metrics (the resumable experiment is in experiments/continual.ts). */
export * from './benchmarks.js';
export * from './common.js';
export * from './metrics.js';
export * from './strategy.js';
export * from './strategies.js';
export * from './rebasin-il.js';
export * from './baselines.js';
