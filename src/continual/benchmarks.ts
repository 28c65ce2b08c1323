/**
 * Continual-learning benchmarks: a sequence of tasks, each with a training and a test sample source.
 *
 * - Rotated MNIST (method.md §4; Avalanche `RotatedMNIST(20, rotations_list=linspace(0, 180, 20))`):
 *   every task is the whole MNIST split rotated by one angle. Domain-incremental: one shared 10-way
 *   head, no task labels (Avalanche's default `return_task_id=False`). Like the reference, the raw
 *   [0, 1] image is rotated first (PIL nearest neighbour, zero fill) and normalised afterwards with
 *   the MNIST mean/std, so pixels outside the rotated picture become (0 − 0.1307)/0.3081.
 * - Split MNIST / Split Fashion-MNIST (5 tasks of 2 classes) and Split CIFAR-100 (10 tasks of 10
 *   classes), classes in natural order ([0,1], [2,3], …). Task-incremental: the model keeps one
 *   output per class of the whole dataset, and both training and evaluation mask the logits to the
 *   classes of the sample's own task ("masked logits" — a multi-head model whose heads share the
 *   output layer's storage; the task id is known at test time).
 *
 * Rotated tasks are never materialised (20 × 60,000 images would be 3.7 GB): a sample source
 * gathers rotated, normalised pixels from the shared base images on demand, through a per-angle
 * index table built with the data layer's exact PIL rotation.
 */
import { existsSync } from 'node:fs';
import { filterClasses, loadCifar100, loadFashionMnist, loadMnist, rotateImages, rotationAngles, sampleSize, take, type Dataset } from '../data/index.js';
import { FASHION_MNIST_MEAN, FASHION_MNIST_STD, MNIST_MEAN, MNIST_STD } from '../data/mnist.js';
import { InputError } from '../errors.js';

export const BENCHMARKS = ['rotated-mnist', 'split-mnist', 'split-fashion-mnist', 'split-cifar100'] as const;
export type BenchmarkName = (typeof BENCHMARKS)[number];

/** Per-channel statistics of the CIFAR-100 training images in [0, 1]. */
export const CIFAR100_MEAN = [0.5071, 0.4865, 0.4409];
export const CIFAR100_STD = [0.2673, 0.2564, 0.2762];

/** A read-only set of samples addressed by index (materialised or computed on demand). */
export interface SampleSource {
  readonly n: number;
  /** Floats per sample. */
  readonly d: number;
  /** Global class label of every sample. */
  readonly y: Int32Array;
  /** Writes sample idx[k] to out[(offset + k)·d …]. */
  gather(idx: ArrayLike<number>, out: Float32Array, offset?: number): void;
}

export interface ContinualTask {
  /** 0-based position in the stream. */
  index: number;
  name: string;
  /** Global class ids this task's samples carry. */
  classes: number[];
  train: SampleSource;
  test: SampleSource;
}

export type Scenario = 'domain-incremental' | 'task-incremental';

export interface Benchmark {
  name: BenchmarkName;
  scenario: Scenario;
  /** Model input width (flattened) and output width (all classes of the dataset). */
  inputSize: number;
  numClasses: number;
  tasks: ContinualTask[];
  /**
   * Whether samples carry task labels. C_IL sums its loss per task label present in a batch
   * (method.md §3.4): one group on Rotated MNIST (no labels), one per task on the split benchmarks.
   */
  taskLabels: boolean;
  /** One line describing the protocol, for reports. */
  description: string;
}

export interface BenchmarkOptions {
  /** Number of tasks (default: 20 rotations; 5 MNIST/Fashion splits; 10 CIFAR-100 splits). */
  tasks?: number;
  /** Keep the first N training samples of every task (default: all). */
  samplesPerTask?: number;
  /** Keep the first N test samples of every task (default: all). */
  testSamplesPerTask?: number;
  /** MNIST / Fashion-MNIST IDX folder, or the CIFAR-100 binary folder (required for CIFAR-100). */
  dataDir?: string;
}

/** A source over a materialised dataset (rows copied by gather). */
export function arraySource(x: Float32Array, y: Int32Array, d: number): SampleSource {
  if (x.length !== y.length * d) throw new Error(`arraySource: ${x.length} floats for ${y.length} samples of ${d}`);
  return {
    n: y.length,
    d,
    y,
    gather(idx, out, offset = 0) {
      for (let k = 0; k < idx.length; k++) {
        const i = idx[k];
        out.set(x.subarray(i * d, i * d + d), (offset + k) * d);
      }
    },
  };
}

/** Source index + 1 of every output pixel of an h×w image rotated by `angle` (0 = zero fill). */
export function rotationTable(h: number, w: number, angle: number): Int32Array {
  const probe = new Float32Array(h * w);
  for (let p = 0; p < probe.length; p++) probe[p] = p + 1;
  // Nearest-neighbour rotation is a pure gather, so rotating the index image yields the table.
  const out = rotateImages(probe, 1, h, w, angle, 'nearest');
  return Int32Array.from(out, (v) => Math.round(v));
}

/**
 * Base images prepared for rotation: per image, the fill value (a zero pixel after normalisation)
 * followed by its normalised pixels, so a rotated pixel is one branch-free gather.
 */
export interface PaddedImages {
  data: Float32Array;
  n: number;
  h: number;
  w: number;
  y: Int32Array;
}

/** Pads and normalises the first n images of `raw` (n × h·w floats in [0, 1]). */
export function padImages(raw: Float32Array, y: Int32Array, n: number, h: number, w: number, mean: number, std: number): PaddedImages {
  const d = h * w;
  const data = new Float32Array(n * (d + 1));
  const inv = 1 / std;
  for (let i = 0; i < n; i++) {
    const o = i * (d + 1);
    data[o] = -mean * inv;
    for (let p = 0; p < d; p++) data[o + 1 + p] = (raw[i * d + p] - mean) * inv;
  }
  return { data, n, h, w, y: y.subarray(0, n) };
}

/** The images of `base` rotated by `angle` (PIL nearest, zero fill before normalisation), computed on demand. */
export function rotatedSource(base: PaddedImages, angle: number): SampleSource {
  const { data, n, h, w } = base;
  const d = h * w;
  const table = rotationTable(h, w, angle);
  return {
    n,
    d,
    y: base.y,
    gather(idx, out, offset = 0) {
      for (let k = 0; k < idx.length; k++) {
        const b = idx[k] * (d + 1);
        const o = (offset + k) * d;
        for (let p = 0; p < d; p++) out[o + p] = data[b + table[p]];
      }
    },
  };
}

/** Every sample of a source, materialised (for small sources and tests). */
export function materialize(src: SampleSource): { x: Float32Array; y: Int32Array } {
  const x = new Float32Array(src.n * src.d);
  const idx = Int32Array.from({ length: src.n }, (_, i) => i);
  src.gather(idx, x);
  return { x, y: src.y.slice() };
}

function positiveInt(what: string, v: number | undefined): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= 1)) throw new InputError(`${what} must be an integer ≥ 1, got ${v}`);
}

function limitDs(ds: Dataset, n: number | undefined): Dataset {
  return n === undefined || n >= ds.n ? ds : take(ds, n);
}

/** Normalises a materialised dataset (scalar or per-channel statistics) into a flat source. */
function normalizedSource(ds: Dataset, mean: number[], std: number[]): SampleSource {
  const d = sampleSize(ds);
  const channels = mean.length;
  const plane = d / channels;
  const x = new Float32Array(ds.n * d);
  for (let i = 0; i < ds.n; i++) {
    for (let c = 0; c < channels; c++) {
      const base = i * d + c * plane;
      const m = mean[c];
      const inv = 1 / std[c];
      for (let j = base; j < base + plane; j++) x[j] = (ds.x[j] - m) * inv;
    }
  }
  return arraySource(x, Int32Array.from(ds.y as Int32Array), d);
}

function rotatedMnistBenchmark(o: BenchmarkOptions): Benchmark {
  const count = o.tasks ?? 20;
  const angles = rotationAngles(count, 180);
  const train = loadMnist('train', { dataDir: o.dataDir });
  const test = loadMnist('test', { dataDir: o.dataDir });
  const nTrain = Math.min(o.samplesPerTask ?? train.n, train.n);
  const nTest = Math.min(o.testSamplesPerTask ?? test.n, test.n);
  const ptr = padImages(train.x, train.y as Int32Array, nTrain, 28, 28, MNIST_MEAN, MNIST_STD);
  const pte = padImages(test.x, test.y as Int32Array, nTest, 28, 28, MNIST_MEAN, MNIST_STD);
  const tasks = angles.map((a, i) => ({
    index: i,
    name: `rot ${a.toFixed(2)}°`,
    classes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    train: rotatedSource(ptr, a),
    test: rotatedSource(pte, a),
  }));
  return {
    name: 'rotated-mnist', scenario: 'domain-incremental', inputSize: 784, numClasses: 10, tasks, taskLabels: false,
    description: `Rotated MNIST, ${count} tasks at linspace(0, 180, ${count})°, PIL nearest rotation then MNIST normalisation, shared 10-way head (domain-incremental), ${nTrain} train / ${nTest} test samples per task`,
  };
}

function splitBenchmark(name: BenchmarkName, o: BenchmarkOptions): Benchmark {
  let train: Dataset;
  let test: Dataset;
  let mean: number[];
  let std: number[];
  let perTask: number;
  let maxTasks: number;
  let label: string;
  if (name === 'split-cifar100') {
    if (!o.dataDir) throw new InputError('split-cifar100 needs --data-dir <folder with the CIFAR-100 binary files train.bin and test.bin> (no copy of CIFAR-100 is shipped)');
    if (!existsSync(o.dataDir)) throw new InputError(`split-cifar100: data folder ${o.dataDir} does not exist`);
    try {
      train = loadCifar100(o.dataDir, 'train');
      test = loadCifar100(o.dataDir, 'test');
    } catch (e) {
      throw new InputError((e as Error).message);
    }
    [mean, std, perTask, maxTasks, label] = [CIFAR100_MEAN, CIFAR100_STD, 10, 10, 'Split CIFAR-100'];
  } else {
    const fashion = name === 'split-fashion-mnist';
    const load = fashion ? loadFashionMnist : loadMnist;
    try {
      train = load('train', { dataDir: o.dataDir });
      test = load('test', { dataDir: o.dataDir });
    } catch (e) {
      throw new InputError((e as Error).message);
    }
    mean = [fashion ? FASHION_MNIST_MEAN : MNIST_MEAN];
    std = [fashion ? FASHION_MNIST_STD : MNIST_STD];
    [perTask, maxTasks, label] = [2, 5, fashion ? 'Split Fashion-MNIST' : 'Split MNIST'];
  }
  const count = o.tasks ?? maxTasks;
  if (count > maxTasks) throw new InputError(`${name} has at most ${maxTasks} tasks, got --tasks ${count}`);
  const numClasses = train.numClasses ?? perTask * maxTasks;
  const tasks: ContinualTask[] = [];
  for (let t = 0; t < count; t++) {
    const classes = Array.from({ length: perTask }, (_, k) => t * perTask + k);
    const tr = limitDs(filterClasses(train, classes), o.samplesPerTask);
    const te = limitDs(filterClasses(test, classes), o.testSamplesPerTask);
    tasks.push({ index: t, name: `classes ${classes.join(',')}`, classes, train: normalizedSource(tr, mean, std), test: normalizedSource(te, mean, std) });
  }
  return {
    name, scenario: 'task-incremental', inputSize: sampleSize(train), numClasses, tasks, taskLabels: true,
    description: `${label}, ${count} tasks of ${perTask} classes (natural order), task-incremental with logits masked to the task's classes${o.samplesPerTask ? `, ≤${o.samplesPerTask} train samples per task` : ''}${o.testSamplesPerTask ? `, ≤${o.testSamplesPerTask} test samples per task` : ''}`,
  };
}

/** Builds a benchmark (loading its data). Bad options are InputErrors. */
export function loadBenchmark(name: BenchmarkName, opts: BenchmarkOptions = {}): Benchmark {
  if (!(BENCHMARKS as readonly string[]).includes(name)) throw new InputError(`unknown benchmark "${name}" (have ${BENCHMARKS.join(', ')})`);
  positiveInt('tasks', opts.tasks);
  positiveInt('samplesPerTask', opts.samplesPerTask);
  positiveInt('testSamplesPerTask', opts.testSamplesPerTask);
  if (name === 'rotated-mnist') {
    try {
      return rotatedMnistBenchmark(opts);
    } catch (e) {
      if (e instanceof InputError) throw e;
      throw new InputError((e as Error).message);
    }
  }
  return splitBenchmark(name, opts);
}

/** Default number of tasks of a benchmark. */
export function defaultTaskCount(name: BenchmarkName): number {
  return name === 'rotated-mnist' ? 20 : name === 'split-cifar100' ? 10 : 5;
}

/**
 * Per-sample additive logit mask for task-incremental training/evaluation: 0 on the classes of the
 * sample's task, −1e9 elsewhere (so softmax and argmax only see the task's classes). Null for a
 * domain-incremental benchmark.
 */
export function logitMask(bench: Benchmark, taskIds: ArrayLike<number>, size: number): Float32Array | null {
  if (bench.scenario !== 'task-incremental') return null;
  const C = bench.numClasses;
  const m = new Float32Array(size * C).fill(-1e9);
  for (let i = 0; i < size; i++) for (const c of bench.tasks[taskIds[i]].classes) m[i * C + c] = 0;
  return m;
}
