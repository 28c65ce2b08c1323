/**
 * The reference's 1-D polynomial regression tasks (100 points, Gaussian noise σ = 0.05):
 *   task 1: y = x + 3        on [−4, −2]
 *   task 2: y = 2x² − 1      on [−1, 1]
 *   task 3: y = (x − 3)³     on [2, 4]
 * x is a linspace over the domain including both ends, as in the reference (x_i = a + i/(n−1)·(b−a)).
 * Difference: the reference redraws the noise on every access (each epoch sees new noise); here
 * it is drawn once from the seed so a dataset is reproducible. Pass sampling: 'uniform' for
 * seeded uniform x instead.
 */
import { Rng } from '../core/random.js';
import type { Dataset } from './dataset.js';

export type PolynomialTaskId = 1 | 2 | 3;

export interface PolynomialTaskSpec {
  domain: [number, number];
  f: (x: number) => number;
  formula: string;
}

export const POLYNOMIAL_TASKS: Record<PolynomialTaskId, PolynomialTaskSpec> = {
  1: { domain: [-4, -2], f: (x) => x + 3, formula: 'y = x + 3' },
  2: { domain: [-1, 1], f: (x) => 2 * x * x - 1, formula: 'y = 2x² − 1' },
  3: { domain: [2, 4], f: (x) => (x - 3) ** 3, formula: 'y = (x − 3)³' },
};

export interface PolynomialOptions {
  n?: number;
  noise?: number;
  seed?: number;
  sampling?: 'linspace' | 'uniform';
}

/** One polynomial task: sampleShape [1], y Float32Array (one target per sample). */
export function polynomialTask(task: PolynomialTaskId, opts: PolynomialOptions = {}): Dataset {
  const spec = POLYNOMIAL_TASKS[task];
  if (!spec) throw new Error(`polynomialTask: task must be 1, 2 or 3, got ${task}`);
  const n = opts.n ?? 100;
  const noise = opts.noise ?? 0.05;
  const sampling = opts.sampling ?? 'linspace';
  if (!Number.isInteger(n) || n < 1) throw new Error(`polynomialTask: n must be a positive integer, got ${n}`);
  if (!(noise >= 0)) throw new Error(`polynomialTask: noise must be ≥ 0, got ${noise}`);
  // Each task gets its own stream so tasks 1..3 with one seed are not correlated.
  const rng = new Rng((opts.seed ?? 0) * 7919 + task);
  const [a, b] = spec.domain;
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const xi = sampling === 'uniform' ? a + (b - a) * rng.uniform() : n === 1 ? a : a + (i / (n - 1)) * (b - a);
    x[i] = xi;
  }
  // Noise uses float32 x so y − f(x) is exactly the noise for the stored inputs.
  for (let i = 0; i < n; i++) y[i] = spec.f(x[i]) + noise * rng.normal();
  return { name: `polynomial-task${task}`, x, sampleShape: [1], y, n };
}

/** Tasks 1, 2 and 3 with one seed. */
export function polynomialTasks(opts: PolynomialOptions = {}): Dataset[] {
  return ([1, 2, 3] as const).map((t) => polynomialTask(t, opts));
}
