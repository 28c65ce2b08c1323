/**
 * The three backends side by side in one run (issue 15): wasm (C → wasm32 + SIMD128, one thread)
 * against pure TypeScript and the native addon, on sgemm 512² and 1024² (kernel calls, including
 * the wasm backend's copies in and out of its memory), one training step of bench/training.ts's
 * CNN, and weight matching of two MNIST MLPs (784-512-512-10); sgemm also per thread, against
 * native on one thread in CPU time. Every workload is timed in
 * alternation across the backends (medians), so load changes on a shared machine hit all alike.
 * Standalone: `node dist/bench/backends.js [--quick]`.
 */
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { jsBackend, loadWasm, nativeBackend, setBackend, type Backend } from '../src/core/backend/index.js';
import { blasThreads, setBlasThreads } from '../src/core/backend/native.js';
import { Rng } from '../src/core/random.js';
import { loadMnist, splitTrainVal } from '../src/data/index.js';
import { alignModels } from '../src/methods/registry.js';
import { mlp } from '../src/models/index.js';
import { mergeState } from '../src/state/params.js';
import { trainModel } from '../src/training/train.js';
import { median, timeInterleaved, type BenchContext, type BenchRow } from './harness.js';
import { cnnWorkload } from './training.js';

const SECTION = 'backends';

function randn(n: number, rng: Rng): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal();
  return a;
}

/** Median CPU time (user + system, ms) of each function, run in alternation reps times after one warm-up round. */
function cpuInterleaved(fns: (() => unknown)[], reps: number): number[] {
  for (const f of fns) f();
  const times: number[][] = fns.map(() => []);
  for (let i = 0; i < reps; i++) {
    fns.forEach((f, j) => {
      const t0 = process.cpuUsage();
      f();
      const d = process.cpuUsage(t0);
      times[j].push((d.user + d.system) / 1000);
    });
  }
  return times.map(median);
}

function on<T>(b: Backend, fn: () => T): () => T {
  return () => {
    const prev = setBackend(b);
    try {
      return fn();
    } finally {
      setBackend(prev);
    }
  };
}

export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const w = loadWasm();
  if ('error' in w) {
    ctx.log(`backends: skipped, ${w.error}`);
    return [];
  }
  const native = nativeBackend();
  const backends: Backend[] = [w.backend, jsBackend, ...(native ? [native] : [])];
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const note = `${cpu}; wasm 1 thread, native ${native ? native.info.blasThreads : 0} threads`;
  ctx.log(`backends: ${note}`);
  const rows: BenchRow[] = [];
  const reps = ctx.quick ? 1 : 5;
  const rng = new Rng(0);

  /** Rows for one workload: wasm beside js (goal: ≥ 5× faster) and beside native (goal: within 3×). */
  const pair = (name: string, ms: number[], unit: 'GFLOP/s' | 'ms', toValue: (ms: number) => number, goals: [string, string]) => {
    const [wasm, js, nat] = ms.map(toValue);
    const higher = unit !== 'ms';
    rows.push({ section: SECTION, name: `${name}: wasm vs pure TS`, value: wasm, unit, higherIsBetter: higher,
      anchor: js, anchorSource: 'measured', anchorLabel: 'pure-TS backend, same run', goal: goals[0], note });
    if (nat !== undefined) {
      rows.push({ section: SECTION, name: `${name}: wasm vs native`, value: wasm, unit, higherIsBetter: higher,
        anchor: nat, anchorSource: 'measured', anchorLabel: `native backend (${native!.info.sgemm}, ${native!.info.blasThreads} threads), same run`, goal: goals[1], note });
    }
  };

  for (const n of ctx.quick ? [512] : [512, 1024]) {
    const A = randn(n * n, rng);
    const B = randn(n * n, rng);
    const C = new Float32Array(n * n);
    const fns = backends.map((b) => () => b.kernels.gemm(false, false, n, n, n, 1, A, 0, n, B, 0, n, 0, C, 0, n));
    const gflops = (t: number) => (2 * n ** 3) / (t / 1000) / 1e9;
    for (let i = 0; i < 4; i++) fns[0](); // V8 runs wasm at its baseline tier until the optimised code arrives
    const ms = await timeInterleaved(fns, reps);
    pair(`sgemm ${n}² (kernel call)`, ms, 'GFLOP/s', gflops, ['≥ 5×', '≥ 0.33× (within 3×)']);
    if (native) {
      // Per thread: wasm against native on one thread, in CPU time (what each costs, not how long
      // it waited for a core: wall-clock medians swing severalfold on a loaded machine).
      const threads = blasThreads();
      setBlasThreads(1);
      try {
        const [wasmCpu, nativeCpu] = cpuInterleaved([fns[0], fns[2]], ctx.quick ? 3 : 9);
        rows.push({ section: SECTION, name: `sgemm ${n}² (kernel call), per thread in CPU time: wasm vs native on 1 thread`, value: gflops(wasmCpu),
          unit: 'GFLOP/s', higherIsBetter: true, anchor: gflops(nativeCpu), anchorSource: 'measured', anchorLabel: `native backend (${native.info.sgemm}, 1 thread), same run`, note });
      } finally {
        setBlasThreads(threads);
      }
    }
    // The copy share: the bytes one wasm gemm moves, timed as plain TypedArray copies.
    const before = w.heap.copiedBytes;
    fns[0]();
    const floats = (w.heap.copiedBytes - before) / 4;
    const src = new Float32Array(floats);
    const dst = new Float32Array(floats);
    const [copyMs] = await timeInterleaved([() => dst.set(src)], ctx.quick ? 3 : 9);
    rows.push({ section: SECTION, name: `sgemm ${n}²: wasm copies in/out (${(floats * 4 / 2 ** 20).toFixed(1)} MiB), share of the call`,
      value: (100 * copyMs) / ms[0], unit: '%', higherIsBetter: false, note: `${copyMs.toFixed(2)} ms of ${ms[0].toFixed(1)} ms` });
  }

  // A CNN training step (bench/training.ts's VGG-like net) at a small batch: pure TS needs seconds.
  const batch = ctx.quick ? 2 : 8;
  const steps = backends.map((b) => on(b, cnnWorkload(batch)));
  const stepMs = await timeInterleaved(steps, ctx.quick ? 1 : 3, 1);
  pair(`CNN training step, 32×32×3 batch ${batch}`, stepMs, 'ms', (t) => t, ['≥ 5×', '≥ 0.33× (within 3×)']);

  // Weight matching of two MNIST MLPs (trained briefly on the fastest backend first).
  const model = mlp({ sizes: [784, 512, 512, 10] });
  const { train } = splitTrainVal(loadMnist('train', { limit: ctx.quick ? 2000 : 10000, layout: 'flat' }), 1000, 1);
  const fit = (seed: number) => on(native ?? w.backend, () => trainModel({ model, data: train, epochs: ctx.quick ? 1 : 3, batchSize: 1000, lr: 1e-3, seed, criterion: 'ce' }))();
  const A = fit(1);
  const B = fit(2);
  const a = mergeState(A.params, A.buffers);
  const b = mergeState(B.params, B.buffers);
  const spec = model.permutationSpec();
  const wm = backends.map((be) => on(be, () => alignModels('wm', { spec, a, b }, { seed: 0 })));
  // No warm-up round here: one pure-TS matching takes tens of seconds on a loaded machine.
  const wmMs = await timeInterleaved(wm, ctx.quick ? 1 : 3, 0);
  pair('weight matching, MNIST MLP 784-512-512-10', wmMs, 'ms', (t) => t, ['≥ 5×', '≥ 0.33× (within 3×)']);
  return rows;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const quick = process.argv.includes('--quick');
  run({ quick, vsTorch: false, log: (m) => process.stderr.write(m + '\n') }).then((rows) => {
    for (const r of rows) console.log(`${r.name}: ${r.value.toFixed(2)} ${r.unit}${r.anchor !== undefined ? ` (anchor ${r.anchor.toFixed(2)}: ${r.anchorLabel})` : ''}`);
  });
}
