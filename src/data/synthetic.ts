/**
 * Tiny seeded classification data for fast tests: isotropic Gaussian blobs. Class centres are
 * N(0, centerScale²) per coordinate, points are centre + N(0, spread²); labels are balanced
 * (i mod classes) and the samples shuffled.
 */
import { Rng } from '../core/random.js';
import type { Dataset } from './dataset.js';

export interface BlobsOptions {
  n: number;
  dim: number;
  classes: number;
  seed?: number;
  /** Std of the points around their class centre. Default 0.5. */
  spread?: number;
  /** Std of the class centres. Default 3 (well separated for spread ≤ 1 in a few dims). */
  centerScale?: number;
}

export function makeBlobs(opts: BlobsOptions): Dataset & { centers: Float32Array } {
  const { n, dim, classes } = opts;
  for (const [k, v] of Object.entries({ n, dim, classes })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`makeBlobs: ${k} must be a positive integer, got ${v}`);
  }
  const spread = opts.spread ?? 0.5;
  const centerScale = opts.centerScale ?? 3;
  const rng = new Rng(opts.seed ?? 0);
  const centers = new Float32Array(classes * dim);
  rng.fillNormal(centers, 0, centerScale);
  const order = rng.permutation(n);
  const x = new Float32Array(n * dim);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = order[i] % classes;
    y[i] = c;
    for (let j = 0; j < dim; j++) x[i * dim + j] = centers[c * dim + j] + spread * rng.normal();
  }
  return { name: `blobs-${classes}x${dim}`, x, sampleShape: [dim], y, n, numClasses: classes, centers };
}
