/**
 * Shared pieces of the continual-learning strategies: mini-batches of a task (optionally with
 * replayed samples appended, as Avalanche's ReplayDataLoader does), the classification loss with
 * task-incremental logit masks, accuracy per task, the class-balanced replay buffer and small
 * parameter-map helpers.
 */
import { F, noGrad, Tensor, zeros, type Rng } from '../core/index.js';
import type { Model } from '../models/model.js';
import type { Params } from '../state/params.js';
import { logitMask, type Benchmark, type SampleSource } from './benchmarks.js';

/** A training mini-batch: samples, global labels and the task each sample comes from. */
export interface TaskBatch {
  x: Float32Array;
  y: Int32Array;
  task: Int32Array;
  size: number;
}

/** Progress hook: called once per optimisation step with a short status. */
export type StepHook = (status: string) => void;

/** Gathers `idx` of `src` (task `taskIndex`) into a batch at position `at`. */
function fill(b: TaskBatch, src: SampleSource, idx: ArrayLike<number>, taskIndex: number, at: number): void {
  src.gather(idx, b.x, at);
  for (let k = 0; k < idx.length; k++) {
    b.y[at + k] = src.y[idx[k]];
    b.task[at + k] = taskIndex;
  }
}

function newBatch(size: number, d: number): TaskBatch {
  return { x: new Float32Array(size * d), y: new Int32Array(size), task: new Int32Array(size), size };
}

/**
 * Cycles through a replay memory in shuffled mini-batches (a DataLoader with shuffle=True that
 * restarts when exhausted, the last batch of a pass possibly smaller). Reshuffled at every epoch
 * start, like Avalanche, which re-creates the memory iterator each epoch.
 */
export class MemoryCycler {
  private order: Int32Array = new Int32Array(0);
  private pos = 0;
  constructor(private readonly n: number, private readonly batchSize: number) {}

  startEpoch(rng: Rng): void {
    this.order = rng.permutation(this.n);
    this.pos = 0;
  }

  next(rng: Rng): Int32Array {
    if (this.pos >= this.n) {
      this.order = rng.permutation(this.n);
      this.pos = 0;
    }
    const out = this.order.slice(this.pos, Math.min(this.n, this.pos + this.batchSize));
    this.pos += out.length;
    return out;
  }
}

/**
 * One epoch of shuffled mini-batches of task `taskIndex`; with a non-empty `memory`, each batch
 * is followed by the next `memBatch` replayed samples (concatenated, so a batch holds up to
 * batchSize + memBatch samples). Draws one permutation of the task data, then the memory's.
 */
export function* epochBatches(bench: Benchmark, taskIndex: number, batchSize: number, rng: Rng,
  memory?: ReplayBuffer | null, memBatch = batchSize): Generator<TaskBatch> {
  const src = bench.tasks[taskIndex].train;
  const d = src.d;
  const order = rng.permutation(src.n);
  const mem = memory && memory.size > 0 ? memory : null;
  const cycler = mem ? new MemoryCycler(mem.size, memBatch) : null;
  if (cycler) cycler.startEpoch(rng);
  // One buffer for the epoch: each batch is consumed (backward done) before the next is built.
  const buf = newBatch(Math.min(batchSize, src.n) + (mem ? Math.min(memBatch, mem.size) : 0), d);
  for (let start = 0; start < src.n; start += batchSize) {
    const idx = order.subarray(start, Math.min(src.n, start + batchSize));
    const m = cycler ? cycler.next(rng) : null;
    const size = idx.length + (m ? m.length : 0);
    const b: TaskBatch = size === buf.size ? buf : { x: buf.x.subarray(0, size * d), y: buf.y.subarray(0, size), task: buf.task.subarray(0, size), size };
    fill(b, src, idx, taskIndex, 0);
    if (m && mem) mem.fillBatch(b, m, idx.length);
    yield b;
  }
}

/** Number of optimisation steps of one epoch over task data of n samples. */
export function stepsPerEpoch(n: number, batchSize: number): number {
  return Math.ceil(n / batchSize);
}

/** Logits of a batch (training mode), masked to each sample's task classes when task-incremental. */
export function batchLogits(model: Model, bench: Benchmark, params: Params, b: TaskBatch): Tensor {
  const out = model.forward(params, new Tensor(b.x, [b.size, bench.inputSize]), { training: true });
  return maskLogits(bench, out, b.task, b.size);
}

export function maskLogits(bench: Benchmark, logits: Tensor, task: ArrayLike<number>, size: number): Tensor {
  const m = logitMask(bench, task, size);
  return m ? F.add(logits, new Tensor(m, [size, bench.numClasses])) : logits;
}

/**
 * Cross-entropy of (masked) logits: the batch mean, or with `perTask` the sum over the task ids
 * present of each task's mean (the reference's C_IL loop over `unique(task_id)`).
 */
export function batchCrossEntropy(logits: Tensor, b: TaskBatch, perTask: boolean): Tensor {
  if (!perTask) return F.crossEntropy(logits, b.y);
  const groups = new Map<number, number[]>();
  for (let i = 0; i < b.size; i++) {
    const t = b.task[i];
    let g = groups.get(t);
    if (!g) groups.set(t, (g = []));
    g.push(i);
  }
  if (groups.size === 1) return F.crossEntropy(logits, b.y);
  let loss: Tensor | null = null;
  for (const t of [...groups.keys()].sort((a, c) => a - c)) {
    const idx = Int32Array.from(groups.get(t)!);
    const y = Int32Array.from(idx, (i) => b.y[i]);
    const l = F.crossEntropy(F.indexSelect(logits, 0, idx), y);
    loss = loss ? F.add(loss, l) : l;
  }
  return loss!;
}

/** Accuracy of `params` on the test set of task `taskIndex` (argmax over the task's classes when task-incremental). */
export function taskAccuracy(model: Model, bench: Benchmark, params: Params, taskIndex: number, batchSize = 1000): number {
  const src = bench.tasks[taskIndex].test;
  if (src.n === 0) return NaN;
  const d = src.d;
  const bs = Math.min(batchSize, src.n);
  const x = new Float32Array(bs * d);
  const task = new Int32Array(bs).fill(taskIndex);
  let correct = 0;
  return noGrad(() => {
    for (let start = 0; start < src.n; start += bs) {
      const size = Math.min(bs, src.n - start);
      const idx = Int32Array.from({ length: size }, (_, k) => start + k);
      src.gather(idx, x);
      const out = maskLogits(bench, model.forward(params, new Tensor(x.subarray(0, size * d), [size, d]), { training: false }), task, size);
      const C = out.shape[1];
      const o = out.data;
      for (let i = 0; i < size; i++) {
        let best = 0;
        for (let c = 1; c < C; c++) if (o[i * C + c] > o[i * C + best]) best = c;
        if (best === src.y[start + i]) correct++;
      }
    }
    return correct / src.n;
  });
}

/** One row of the accuracy matrix: accuracy on every task's test set. */
export function accuracyRow(model: Model, bench: Benchmark, params: Params): number[] {
  return bench.tasks.map((t) => taskAccuracy(model, bench, params, t.index));
}

// ---------------------------------------------------------------- replay buffer

/**
 * Replay memory of `perClass` samples per class per task (the reference's experience-balanced
 * buffer of 5 × 10 classes per experience, here also class-balanced), chosen at random without
 * replacement from the task's training samples once the task is learned. Stores the (task,
 * index) pairs — enough to rebuild it exactly on resume — and the samples themselves.
 */
export class ReplayBuffer {
  readonly entries: [number, number][] = [];
  private x = new Float32Array(0);
  private y = new Int32Array(0);
  private task = new Int32Array(0);

  constructor(private readonly bench: Benchmark, readonly perClass: number) {
    if (!(Number.isInteger(perClass) && perClass >= 1)) throw new Error(`ReplayBuffer: perClass must be an integer ≥ 1, got ${perClass}`);
  }

  get size(): number {
    return this.entries.length;
  }

  /** Indices of `perClass` random samples of each class of task `taskIndex` (all of a class when it has fewer). */
  static selectBalanced(src: SampleSource, classes: number[], perClass: number, rng: Rng): number[] {
    const out: number[] = [];
    for (const c of classes) {
      const pool: number[] = [];
      for (let i = 0; i < src.n; i++) if (src.y[i] === c) pool.push(i);
      const k = Math.min(perClass, pool.length);
      // Partial Fisher–Yates: the first k of a uniform random permutation.
      for (let j = 0; j < k; j++) {
        const r = j + rng.int(pool.length - j);
        [pool[j], pool[r]] = [pool[r], pool[j]];
      }
      out.push(...pool.slice(0, k).sort((a, b) => a - b));
    }
    return out;
  }

  /** Adds task `taskIndex`'s samples (chosen with `rng`). */
  addTask(taskIndex: number, rng: Rng): void {
    const t = this.bench.tasks[taskIndex];
    this.addEntries(ReplayBuffer.selectBalanced(t.train, t.classes, this.perClass, rng).map((i) => [taskIndex, i] as [number, number]));
  }

  /** Adds explicit (task, index) pairs (resume). */
  addEntries(pairs: [number, number][]): void {
    const d = this.bench.inputSize;
    const n0 = this.entries.length;
    const n = n0 + pairs.length;
    const x = new Float32Array(n * d);
    x.set(this.x);
    const y = new Int32Array(n);
    y.set(this.y);
    const task = new Int32Array(n);
    task.set(this.task);
    pairs.forEach(([t, i], k) => {
      const src = this.bench.tasks[t]?.train;
      if (!src || !(Number.isInteger(i) && i >= 0 && i < src.n)) throw new Error(`ReplayBuffer: entry (task ${t}, sample ${i}) does not exist in this benchmark`);
      src.gather([i], x, n0 + k);
      y[n0 + k] = src.y[i];
      task[n0 + k] = t;
      this.entries.push([t, i]);
    });
    this.x = x;
    this.y = y;
    this.task = task;
  }

  /** Copies memory samples `idx` into batch `b` from position `at`. */
  fillBatch(b: TaskBatch, idx: ArrayLike<number>, at: number): void {
    const d = this.bench.inputSize;
    for (let k = 0; k < idx.length; k++) {
      const i = idx[k];
      b.x.set(this.x.subarray(i * d, i * d + d), (at + k) * d);
      b.y[at + k] = this.y[i];
      b.task[at + k] = this.task[i];
    }
  }

  /** The whole memory (or the rows `idx`) as one batch. */
  batch(idx?: ArrayLike<number>): TaskBatch {
    const sel = idx ?? Int32Array.from({ length: this.size }, (_, i) => i);
    const b = newBatch(sel.length, this.bench.inputSize);
    this.fillBatch(b, sel, 0);
    return b;
  }

  /** Count per (task, class), for checks and reports. */
  histogram(): Map<string, number> {
    const h = new Map<string, number>();
    for (let i = 0; i < this.size; i++) {
      const key = `${this.task[i]}:${this.y[i]}`;
      h.set(key, (h.get(key) ?? 0) + 1);
    }
    return h;
  }
}

// ---------------------------------------------------------------- parameter maps

/** Detached copies whose leaves require grad (trainable working copy). */
export function trainableCopy(p: Params): Params {
  return new Map([...p].map(([k, v]) => [k, v.clone().requireGrad()]));
}

/** Detached plain copies (no grad). */
export function frozenCopy(p: Params): Params {
  return new Map([...p].map(([k, v]) => [k, v.clone()]));
}

/** Tensors of the same shapes filled with N(0, std²) draws (in parameter order). */
export function gaussianLike(p: Params, std: number, rng: Rng): Params {
  const out: Params = new Map();
  for (const [k, v] of p) {
    const t = zeros(v.shape, v.dtype);
    rng.fillNormal(t.data, 0, std);
    out.set(k, t);
  }
  return out;
}

/** Flattened gradients of `params` (zeros where a gradient is missing). */
export function flatGrad(params: Params): Float64Array {
  let n = 0;
  for (const p of params.values()) n += p.size;
  const g = new Float64Array(n);
  let o = 0;
  for (const p of params.values()) {
    if (p.grad) g.set(p.grad.data, o);
    o += p.size;
  }
  return g;
}

/** Writes a flat gradient back into the params' .grad tensors. */
export function setFlatGrad(params: Params, g: Float64Array): void {
  let o = 0;
  for (const p of params.values()) {
    if (!p.grad) p.grad = zeros(p.shape, p.dtype);
    const d = p.grad.data;
    for (let i = 0; i < d.length; i++) d[i] = g[o + i];
    o += p.size;
  }
}
