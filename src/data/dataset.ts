/**
 * In-memory datasets: one flat Float32Array of samples plus labels/targets, and the helpers the
 * training loops need (subsets, seeded splits, class filters, mini-batches).
 *
 * Loaders may return datasets whose arrays are shared with a process-wide cache: treat `x`/`y`
 * as read-only, or copy first (`subset`, `take` and `concat` always copy).
 */
import { Rng } from '../core/random.js';

export type Labels = Int32Array | Float32Array;

export interface Dataset {
  name: string;
  /** n samples, each prod(sampleShape) floats, sample-major. */
  x: Float32Array;
  /** Shape of one sample, e.g. [1,28,28], [784] or [3,32,32]. */
  sampleShape: number[];
  /** Class labels (Int32Array, one per sample) or regression targets (Float32Array, y.length/n per sample). */
  y: Labels;
  n: number;
  numClasses?: number;
  classNames?: string[];
}

export interface Batch<Y extends Labels = Labels> {
  x: Float32Array;
  y: Y;
  size: number;
  /** Dataset indices of the samples in this batch, in batch order. */
  indices: Int32Array;
}

export function sampleSize(ds: Pick<Dataset, 'sampleShape'>): number {
  let s = 1;
  for (const d of ds.sampleShape) s *= d;
  return s;
}

/** Per-sample target width: 1 for class labels, y.length/n for regression targets. */
export function targetSize(ds: Pick<Dataset, 'y' | 'n'>): number {
  return ds.n === 0 ? 1 : ds.y.length / ds.n;
}

/** Throws if the arrays and shape disagree; loaders call it so bugs surface at load time. */
export function validateDataset(ds: Dataset): Dataset {
  const d = sampleSize(ds);
  if (!Number.isInteger(ds.n) || ds.n < 0) throw new Error(`dataset ${ds.name}: n must be a non-negative integer, got ${ds.n}`);
  if (ds.x.length !== ds.n * d) {
    throw new Error(`dataset ${ds.name}: x has ${ds.x.length} floats, expected n×prod(sampleShape) = ${ds.n}×${d} = ${ds.n * d}`);
  }
  if (ds.n > 0 && (ds.y.length % ds.n !== 0 || ds.y.length === 0)) {
    throw new Error(`dataset ${ds.name}: y has ${ds.y.length} values, not a positive multiple of n = ${ds.n}`);
  }
  if (ds.y instanceof Int32Array && ds.numClasses !== undefined) {
    for (let i = 0; i < ds.y.length; i++) {
      const c = ds.y[i];
      if (c < 0 || c >= ds.numClasses) throw new Error(`dataset ${ds.name}: label ${c} at sample ${i} is outside [0, ${ds.numClasses})`);
    }
  }
  return ds;
}

function newLabels(like: Labels, length: number): Labels {
  return like instanceof Int32Array ? new Int32Array(length) : new Float32Array(length);
}

/** Copies the given samples (in the given order) into a new dataset. */
export function subset(ds: Dataset, indices: ArrayLike<number>, name = ds.name): Dataset {
  const d = sampleSize(ds);
  const t = targetSize(ds);
  const m = indices.length;
  const x = new Float32Array(m * d);
  const y = newLabels(ds.y, m * t);
  for (let k = 0; k < m; k++) {
    const i = indices[k];
    if (!(i >= 0 && i < ds.n) || !Number.isInteger(i)) throw new Error(`subset(${ds.name}): index ${i} out of range [0, ${ds.n})`);
    x.set(ds.x.subarray(i * d, i * d + d), k * d);
    if (t === 1) y[k] = ds.y[i];
    else y.set(ds.y.subarray(i * t, i * t + t), k * t);
  }
  return { ...ds, name, x, y, n: m, sampleShape: [...ds.sampleShape] };
}

/** First n samples (copied). */
export function take(ds: Dataset, n: number): Dataset {
  if (!Number.isInteger(n) || n < 0) throw new Error(`take(${ds.name}): n must be a non-negative integer, got ${n}`);
  const m = Math.min(n, ds.n);
  const d = sampleSize(ds);
  const t = targetSize(ds);
  return { ...ds, x: ds.x.slice(0, m * d), y: ds.y.slice(0, m * t), n: m, sampleShape: [...ds.sampleShape] };
}

/** Same samples viewed as vectors; shares the x buffer (no copy). */
export function flatten(ds: Dataset): Dataset {
  return { ...ds, sampleShape: [sampleSize(ds)] };
}

/** Concatenates datasets with equal sample shapes and label kinds (e.g. task data + replay buffer). */
export function concat(parts: Dataset[], name?: string): Dataset {
  if (parts.length === 0) throw new Error('concat: need at least one dataset');
  const first = parts[0];
  const d = sampleSize(first);
  const t = targetSize(first);
  let n = 0;
  for (const p of parts) {
    if (sampleSize(p) !== d) throw new Error(`concat: ${p.name} has sample size ${sampleSize(p)}, ${first.name} has ${d}`);
    if (p.y instanceof Int32Array !== first.y instanceof Int32Array) throw new Error(`concat: ${p.name} and ${first.name} mix class labels and regression targets`);
    if (p.n > 0 && targetSize(p) !== t) throw new Error(`concat: ${p.name} has ${targetSize(p)} targets per sample, ${first.name} has ${t}`);
    n += p.n;
  }
  const x = new Float32Array(n * d);
  const y = newLabels(first.y, n * t);
  let off = 0;
  let numClasses = first.numClasses;
  for (const p of parts) {
    x.set(p.x.subarray(0, p.n * d), off * d);
    y.set(p.y.subarray(0, p.n * t), off * t);
    off += p.n;
    if (p.numClasses !== undefined) numClasses = Math.max(numClasses ?? 0, p.numClasses);
  }
  return { ...first, name: name ?? parts.map((p) => p.name).join('+'), x, y, n, sampleShape: [...first.sampleShape], numClasses };
}

export interface TrainValSplit {
  train: Dataset;
  val: Dataset;
  trainIndices: Int32Array;
  valIndices: Int32Array;
}

/**
 * Seeded random split. `val` is a count (integer ≥ 1) or a fraction in (0, 1) of ds.n (rounded).
 * Both parts keep the shuffled order, like torch's random_split.
 */
export function splitTrainVal(ds: Dataset, val: number, seed: number): TrainValSplit {
  let valCount: number;
  if (val > 0 && val < 1) valCount = Math.round(val * ds.n);
  else if (Number.isInteger(val) && val >= 0 && val <= ds.n) valCount = val;
  else throw new Error(`splitTrainVal(${ds.name}): val must be a fraction in (0,1) or an integer count in [0, ${ds.n}], got ${val}`);
  const perm = new Rng(seed).permutation(ds.n);
  const valIndices = perm.slice(0, valCount);
  const trainIndices = perm.slice(valCount);
  return {
    train: subset(ds, trainIndices, `${ds.name}/train`),
    val: subset(ds, valIndices, `${ds.name}/val`),
    trainIndices,
    valIndices,
  };
}

/**
 * Keeps only samples whose label is in `classes` (order preserved). With `relabel`, classes[i]
 * becomes label i and numClasses becomes classes.length (for split/class-incremental benchmarks).
 */
export function filterClasses(ds: Dataset, classes: number[], opts: { relabel?: boolean } = {}): Dataset {
  if (!(ds.y instanceof Int32Array)) throw new Error(`filterClasses(${ds.name}): needs class labels (Int32Array), got regression targets`);
  if (new Set(classes).size !== classes.length) throw new Error(`filterClasses(${ds.name}): duplicate classes in [${classes.join(', ')}]`);
  const maxLabel = Math.max(-1, ...classes);
  const map = new Int32Array(Math.max(maxLabel + 1, ds.numClasses ?? 0)).fill(-1);
  classes.forEach((c, i) => {
    if (!Number.isInteger(c) || c < 0) throw new Error(`filterClasses(${ds.name}): class ${c} is not a non-negative integer`);
    map[c] = opts.relabel ? i : c;
  });
  const keep: number[] = [];
  const y = ds.y;
  for (let i = 0; i < ds.n; i++) {
    const c = y[i];
    if (c < map.length && map[c] >= 0) keep.push(i);
  }
  const out = subset(ds, keep, `${ds.name}[${classes.join(',')}]`);
  if (opts.relabel) {
    const oy = out.y as Int32Array;
    for (let i = 0; i < oy.length; i++) oy[i] = map[oy[i]];
    out.numClasses = classes.length;
    if (ds.classNames) out.classNames = classes.map((c) => ds.classNames![c] ?? String(c));
  }
  return out;
}

/** Count of each class label (length numClasses, or max label + 1). */
export function labelHistogram(ds: Dataset): number[] {
  if (!(ds.y instanceof Int32Array)) throw new Error(`labelHistogram(${ds.name}): needs class labels`);
  let k = ds.numClasses ?? 0;
  for (let i = 0; i < ds.n; i++) if (ds.y[i] + 1 > k) k = ds.y[i] + 1;
  const h = new Array<number>(k).fill(0);
  for (let i = 0; i < ds.n; i++) h[ds.y[i]]++;
  return h;
}

/** Mean and (population) std over every value of x, accumulated in float64. */
export function pixelStats(ds: Dataset): { mean: number; std: number } {
  const x = ds.x;
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    s += v;
    s2 += v * v;
  }
  const mean = s / x.length;
  return { mean, std: Math.sqrt(Math.max(0, s2 / x.length - mean * mean)) };
}

/**
 * (x − mean)/std into a new dataset. Scalars apply to every value; arrays are per channel
 * (sampleShape[0] channels, e.g. CIFAR's RGB planes).
 */
export function normalize(ds: Dataset, mean: number | number[], std: number | number[]): Dataset {
  const d = sampleSize(ds);
  const channels = Array.isArray(mean) || Array.isArray(std) ? ds.sampleShape[0] : 1;
  const means = Array.isArray(mean) ? mean : new Array<number>(channels).fill(mean);
  const stds = Array.isArray(std) ? std : new Array<number>(channels).fill(std);
  if (means.length !== channels || stds.length !== channels) {
    throw new Error(`normalize(${ds.name}): need ${channels} per-channel means/stds for sampleShape [${ds.sampleShape}], got ${means.length}/${stds.length}`);
  }
  if (stds.some((s) => !(s > 0))) throw new Error(`normalize(${ds.name}): std must be positive, got [${stds}]`);
  const plane = d / channels;
  const x = new Float32Array(ds.x.length);
  for (let i = 0; i < ds.n; i++) {
    for (let c = 0; c < channels; c++) {
      const m = means[c];
      const inv = 1 / stds[c];
      const base = i * d + c * plane;
      for (let j = base; j < base + plane; j++) x[j] = (ds.x[j] - m) * inv;
    }
  }
  return { ...ds, x, sampleShape: [...ds.sampleShape] };
}

export interface BatchOptions {
  shuffle?: boolean;
  /** Generator for the shuffle order; advanced once per epoch. Default: new Rng(seed ?? 0). */
  rng?: Rng;
  seed?: number;
  /** Skip the last batch when it is smaller than batchSize. */
  dropLast?: boolean;
}

/**
 * One epoch of mini-batches. The yielded x/y/indices are reusable buffers (views of the same
 * memory every step): consume or copy a batch before asking for the next one.
 */
export function* batches<Y extends Labels>(ds: Dataset & { y: Y }, batchSize: number, opts: BatchOptions = {}): Generator<Batch<Y>> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batches(${ds.name}): batchSize must be a positive integer, got ${batchSize}`);
  const n = ds.n;
  const d = sampleSize(ds);
  const t = targetSize(ds);
  let order: Int32Array;
  if (opts.shuffle) order = (opts.rng ?? new Rng(opts.seed ?? 0)).permutation(n);
  else {
    order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
  }
  const bs = Math.min(batchSize, Math.max(n, 1));
  const xb = new Float32Array(bs * d);
  const yb = newLabels(ds.y, bs * t) as Y;
  const src = ds.x;
  const ys = ds.y;
  for (let start = 0; start < n; start += batchSize) {
    const size = Math.min(batchSize, n - start);
    if (size < batchSize && opts.dropLast) break;
    for (let k = 0; k < size; k++) {
      const i = order[start + k];
      // subarray+set is a memcpy; much faster than a per-float JS loop at d=784.
      xb.set(src.subarray(i * d, i * d + d), k * d);
      if (t === 1) yb[k] = ys[i];
      else yb.set(ys.subarray(i * t, i * t + t), k * t);
    }
    const full = size === bs;
    yield {
      x: full ? xb : xb.subarray(0, size * d),
      y: (full ? yb : yb.subarray(0, size * t)) as Y,
      size,
      indices: order.subarray(start, start + size),
    };
  }
}

/** Number of batches one epoch of `batches` yields. */
export function batchCount(n: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}
