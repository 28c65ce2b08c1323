/**
 * CIFAR-10 / CIFAR-100 in the official binary format, from a folder the user provides (no copy is
 * shipped). Records: CIFAR-10 = 1 label byte + 3072 pixel bytes; CIFAR-100 = coarse byte, fine
 * byte + 3072. Pixels are the R, G, B planes of 32×32 (row-major), i.e. already [3,32,32].
 * Returned x arrays are shared with a per-process cache: treat them as read-only.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Dataset } from './dataset.js';
import { bytesToUnitFloat } from './idx.js';
import type { SplitName } from './mnist.js';

export const CIFAR_PIXELS = 3 * 32 * 32;
/** Per-channel statistics of the CIFAR-10 training images in [0,1] (for optional normalisation). */
export const CIFAR10_MEAN = [0.4914, 0.4822, 0.4465];
export const CIFAR10_STD = [0.247, 0.2435, 0.2616];

export const CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

export interface CifarOptions {
  /** Keep only the first `limit` samples. */
  limit?: number;
}

export interface Cifar100Options extends CifarOptions {
  labels?: 'fine' | 'coarse';
}

interface Records {
  x: Float32Array;
  /** One array per label byte (CIFAR-100: [coarse, fine]), concatenated over files. */
  labels: Uint8Array[];
  /** Record count per file, to name the file in label errors. */
  counts: number[];
}

// Parsed files are cached and shared by every dataset returned (CIFAR-10 train is 600 MB as float32).
const cache = new Map<string, Records>();

/** The folder itself, or the folder the official tarball extracts to inside it. */
function resolveDir(dir: string, subdir: string, probe: string, what: string, tarball: string): string {
  if (!existsSync(dir)) throw new Error(`${what}: data folder ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new Error(`${what}: ${dir} is not a folder (extract ${tarball} and pass the folder)`);
  if (existsSync(join(dir, probe))) return dir;
  const nested = join(dir, subdir);
  if (existsSync(join(nested, probe))) return nested;
  return dir;
}

function readRecords(paths: string[], labelBytes: number, what: string): Records {
  const rec = labelBytes + CIFAR_PIXELS;
  const sizes = paths.map((p) => {
    if (!existsSync(p)) throw new Error(`${what}: missing file ${p}`);
    const st = statSync(p);
    return { size: st.size, mtime: st.mtimeMs };
  });
  const key = paths.map((p, i) => `${p}:${sizes[i].size}:${sizes[i].mtime}`).join('|');
  const hit = cache.get(key);
  if (hit) return hit;
  paths.forEach((p, i) => {
    const size = sizes[i].size;
    if (size === 0 || size % rec !== 0) {
      throw new Error(`${p}: size ${size} bytes is not a positive multiple of the ${rec}-byte ${what} record (${labelBytes} label byte${labelBytes > 1 ? 's' : ''} + ${CIFAR_PIXELS} pixels); truncated, or not a ${what} binary file?`);
    }
  });
  const counts = sizes.map((s) => s.size / rec);
  const total = counts.reduce((a, b) => a + b, 0);
  const x = new Float32Array(total * CIFAR_PIXELS);
  const labels = Array.from({ length: labelBytes }, () => new Uint8Array(total));
  let k = 0;
  paths.forEach((p, f) => {
    const buf = readFileSync(p);
    if (buf.length !== counts[f] * rec) throw new Error(`${p}: file changed while reading`);
    for (let i = 0; i < counts[f]; i++, k++) {
      const off = i * rec;
      for (let b = 0; b < labelBytes; b++) labels[b][k] = buf[off + b];
      bytesToUnitFloat(buf.subarray(off + labelBytes, off + rec), x.subarray(k * CIFAR_PIXELS, (k + 1) * CIFAR_PIXELS));
    }
  });
  const out = { x, labels, counts };
  cache.set(key, out);
  return out;
}

function toDataset(name: string, r: Records, labelIndex: number, numClasses: number, paths: string[], what: string, opts: CifarOptions, classNames?: string[]): Dataset {
  const lab = r.labels[labelIndex];
  let file = 0;
  let first = 0;
  for (let i = 0; i < lab.length; i++) {
    while (i >= first + r.counts[file]) first += r.counts[file++];
    if (lab[i] >= numClasses) throw new Error(`${paths[file]}: record ${i - first} has label ${lab[i]}, outside [0, ${numClasses}) for ${what}`);
  }
  let n = lab.length;
  if (opts.limit !== undefined) {
    if (!Number.isInteger(opts.limit) || opts.limit < 0) throw new Error(`limit must be a non-negative integer, got ${opts.limit}`);
    n = Math.min(n, opts.limit);
  }
  const ds: Dataset = {
    name,
    x: n === lab.length ? r.x : r.x.subarray(0, n * CIFAR_PIXELS),
    sampleShape: [3, 32, 32],
    y: Int32Array.from(lab.subarray(0, n)),
    n,
    numClasses,
  };
  if (classNames && classNames.length === numClasses) ds.classNames = classNames;
  return ds;
}

function readNames(path: string): string[] | undefined {
  if (!existsSync(path)) return undefined;
  return readFileSync(path, 'utf8').split(/\r?\n/).map((s) => s.trim()).filter((s) => s.length > 0);
}

function checkSplit(split: string): asserts split is SplitName {
  if (split !== 'train' && split !== 'test') throw new Error(`split must be 'train' or 'test', got '${split}'`);
}

/** CIFAR-10 from `dir` (data_batch_1..5.bin, test_batch.bin; the extracted cifar-10-batches-bin folder or its parent). */
export function loadCifar10(dir: string, split: SplitName, opts: CifarOptions = {}): Dataset {
  checkSplit(split);
  const what = 'CIFAR-10';
  const files = split === 'train' ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ['test_batch.bin'];
  const root = resolveDir(dir, 'cifar-10-batches-bin', files[0], what, 'cifar-10-binary.tar.gz');
  const paths = files.map((f) => join(root, f));
  const names = readNames(join(root, 'batches.meta.txt')) ?? CIFAR10_CLASSES;
  return toDataset(`cifar10-${split}`, readRecords(paths, 1, what), 0, 10, paths, what, opts, names);
}

/** CIFAR-100 from `dir` (train.bin, test.bin; the extracted cifar-100-binary folder or its parent). Fine labels by default. */
export function loadCifar100(dir: string, split: SplitName, opts: Cifar100Options = {}): Dataset {
  checkSplit(split);
  const what = 'CIFAR-100';
  const kind = opts.labels ?? 'fine';
  if (kind !== 'fine' && kind !== 'coarse') throw new Error(`CIFAR-100: labels must be 'fine' or 'coarse', got '${kind}'`);
  const file = `${split}.bin`;
  const root = resolveDir(dir, 'cifar-100-binary', file, what, 'cifar-100-binary.tar.gz');
  const numClasses = kind === 'fine' ? 100 : 20;
  const paths = [join(root, file)];
  const names = readNames(join(root, `${kind}_label_names.txt`));
  return toDataset(`cifar100-${kind}-${split}`, readRecords(paths, 2, what), kind === 'fine' ? 1 : 0, numClasses, paths, what, opts, names);
}

export function clearCifarCache(): void {
  cache.clear();
}
