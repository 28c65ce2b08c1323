/** Continual learning: metrics, RebasinIL, baselines' building blocks, replay, resume and the CLI. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { noGrad, Rng, Tensor, zeros } from '../src/core/index.js';
import {
  accuracyOverTasksSeen, agemProject, averageAccuracy, backwardTransfer, continualMetrics, continualModel, distillationLoss,
  epochBatches, EwcPenalty, forgetting, loadBenchmark, mergeRebasin, taskAccuracy, RebasinIL, REBASIN_IL_DEFAULTS, ReplayBuffer,
  type Benchmark, type StrategyName,
} from '../src/continual/index.js';
import { runContinual, runContinualSeeds } from '../src/experiments/continual.js';
import { readRunState } from '../src/experiments/continual-state.js';
import { InputError } from '../src/errors.js';
import type { Params } from '../src/models/index.js';

const mainJs = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');

let cached: Benchmark | null = null;
/** 3 rotation tasks (0°, 90°, 180°) of 300 training and 200 test images. */
function tinyRotated(): Benchmark {
  cached ??= loadBenchmark('rotated-mnist', { tasks: 3, samplesPerTask: 300, testSamplesPerTask: 200 });
  return cached;
}

function sameBits(a: Params, b: Params): boolean {
  if (a.size !== b.size) return false;
  for (const [k, t] of a) {
    const u = b.get(k);
    if (!u || u.size !== t.size) return false;
    for (let i = 0; i < t.size; i++) if (!Object.is(t.data[i], u.data[i])) return false;
  }
  return true;
}

const close = (a: number, b: number, tol = 1e-12) => Math.abs(a - b) <= tol;

// ---------------------------------------------------------------- metrics

test('metrics on hand-made accuracy matrices follow their definitions', () => {
  const R = [
    [0.9, 0.2, 0.1],
    [0.7, 0.8, 0.3],
    [0.6, 0.5, 0.95],
  ];
  // Average accuracy: mean of the last row.
  assert.ok(close(averageAccuracy(R), (0.6 + 0.5 + 0.95) / 3));
  // Forgetting: i = 0: max(0.9, 0.7) − 0.6 = 0.3; i = 1: max(0.2, 0.8) − 0.5 = 0.3.
  assert.ok(close(forgetting(R), (0.3 + 0.3) / 2));
  // BWT: (0.6 − 0.9 + 0.5 − 0.8) / 2.
  assert.ok(close(backwardTransfer(R), (0.6 - 0.9 + (0.5 - 0.8)) / 2));
  assert.deepEqual(accuracyOverTasksSeen(R).map((v) => +v.toFixed(12)), [0.9, 0.75, +((0.6 + 0.5 + 0.95) / 3).toFixed(12)]);

  // The max in the forgetting runs over every earlier row, including rows before task i was learned.
  const R2 = [
    [0.5, 0.9, 0.0, 0.2],
    [0.6, 0.4, 0.1, 0.2],
    [0.7, 0.6, 0.8, 0.3],
    [0.2, 0.5, 0.9, 0.7],
  ];
  const f = ((0.7 - 0.2) + (0.9 - 0.5) + (0.8 - 0.9)) / 3;
  const bwt = ((0.2 - 0.5) + (0.5 - 0.4) + (0.9 - 0.8)) / 3;
  assert.ok(close(forgetting(R2), f));
  assert.ok(close(backwardTransfer(R2), bwt));
  const m = continualMetrics(R2);
  assert.ok(close(m.averageAccuracy, (0.2 + 0.5 + 0.9 + 0.7) / 4));

  // One row (joint training): no forgetting or BWT; NaN entries are skipped.
  assert.ok(Number.isNaN(forgetting([[0.5, 0.6]])));
  assert.ok(Number.isNaN(backwardTransfer([[0.5, 0.6]])));
  assert.ok(close(averageAccuracy([[0.5, NaN, 0.7]], 3), 0.6));
  assert.ok(Number.isNaN(averageAccuracy([])));
});

// ---------------------------------------------------------------- benchmark and replay

test('rotated MNIST: rotation before normalisation, 180° is an exact flip, fill is the normalised zero', () => {
  const bench = tinyRotated();
  assert.equal(bench.tasks.length, 3);
  assert.deepEqual(bench.tasks.map((t) => t.train.n), [300, 300, 300]);
  const a = new Float32Array(784);
  const c = new Float32Array(784);
  bench.tasks[0].train.gather([7], a);
  bench.tasks[2].train.gather([7], c);
  for (let r = 0; r < 28; r++) for (let q = 0; q < 28; q++) assert.equal(c[r * 28 + q], a[(27 - r) * 28 + (27 - q)]);
  const b = new Float32Array(784);
  bench.tasks[1].train.gather([7], b);
  const fill = -0.1307 / 0.3081;
  assert.ok(Math.abs(Math.min(...a) - fill) < 1e-6);
  assert.ok(Math.abs(Math.min(...b) - fill) < 1e-6);
});

test('replay buffer holds exactly 5 samples per class per task, distinct, and batches append them', () => {
  const bench = tinyRotated();
  const buf = new ReplayBuffer(bench, 5);
  const rng = new Rng(3);
  for (let t = 0; t < 3; t++) buf.addTask(t, rng);
  assert.equal(buf.size, 3 * 10 * 5);
  const h = buf.histogram();
  assert.equal(h.size, 30);
  for (let t = 0; t < 3; t++) for (let c = 0; c < 10; c++) assert.equal(h.get(`${t}:${c}`), 5, `task ${t} class ${c}`);
  assert.equal(new Set(buf.entries.map(([t, i]) => `${t}/${i}`)).size, buf.size);
  // Labels stored match the source.
  for (const [t, i] of buf.entries) assert.ok(bench.tasks[t].train.y[i] >= 0);
  // Same seed, same choice.
  const again = new ReplayBuffer(bench, 5);
  const rng2 = new Rng(3);
  for (let t = 0; t < 3; t++) again.addTask(t, rng2);
  assert.deepEqual(again.entries, buf.entries);
  // A batch of 100 task samples gets 100 replayed ones; the memory cycles through all 150.
  const sizes: number[] = [];
  const seen = new Map<string, number>();
  for (const b of epochBatches(bench, 2, 100, new Rng(1), buf, 100)) {
    sizes.push(b.size);
    for (let k = 100; k < b.size; k++) {
      const key = `${b.task[k]}:${b.y[k]}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
  }
  assert.deepEqual(sizes, [200, 150, 200]);
  assert.equal([...seen.values()].reduce((a, v) => a + v, 0), 250);
});

// ---------------------------------------------------------------- RebasinIL

test('RebasinIL runs end to end and merges θ_t = 0.8·θ + 0.2·π_hard(θ) + Δ', () => {
  const bench = tinyRotated();
  const model = continualModel(bench);
  const init = model.init(new Rng(0)).params;
  const s = new RebasinIL({ model, bench, rng: new Rng(1) }, init, { ...REBASIN_IL_DEFAULTS, epochs: 1, batchSize: 100, memBatch: 100 });
  for (let t = 0; t < 3; t++) s.runUnit(t);
  assert.equal(s.buffer.size, 150);
  const last = s.last!;
  assert.equal(last.task, 2);
  const perm = last.perms['P_layers.0'];
  const n = 256;
  assert.deepEqual([...perm].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
  // The hard P maximises ⟨X, P⟩, so it beats the identity.
  const X = last.X['P_layers.0'].data;
  let sumP = 0;
  let sumI = 0;
  for (let i = 0; i < n; i++) {
    sumP += X[i * n + perm[i]];
    sumI += X[i * n + i];
  }
  assert.ok(sumP >= sumI - 1e-6);
  // Recompute the merge by hand: π permutes rows of layer 0 and columns of layer 2.
  const th = last.thetaPrev;
  const dl = last.delta;
  const got = s.params();
  const expect = (name: string, i: number): number => {
    const t = th.get(name)!.data;
    let pi: number;
    if (name === 'layers.0.weight') pi = t[perm[Math.floor(i / 784)] * 784 + (i % 784)];
    else if (name === 'layers.0.bias') pi = t[perm[i]];
    else if (name === 'layers.2.weight') pi = t[Math.floor(i / n) * n + perm[i % n]];
    else pi = t[i];
    return 0.8 * t[i] + 0.2 * pi + dl.get(name)!.data[i];
  };
  let maxErr = 0;
  let deltaMax = 0;
  for (const [name, t] of got) {
    for (let i = 0; i < t.size; i++) {
      maxErr = Math.max(maxErr, Math.abs(t.data[i] - expect(name, i)));
      deltaMax = Math.max(deltaMax, Math.abs(dl.get(name)!.data[i]));
    }
  }
  assert.ok(maxErr < 1e-5, `merge error ${maxErr}`);
  assert.ok(deltaMax > 0 && deltaMax < 0.05, `residual magnitude ${deltaMax}`);
  assert.ok(Number.isFinite(last.lossLastEpoch));
  assert.equal(s.movedUnits.length, 2);

  // The same formula through mergeRebasin with a random (far from identity) permutation.
  const rp = new Rng(11).permutation(n);
  const merged = mergeRebasin(model.permutationSpec(), th, { 'P_layers.0': rp }, dl, 0.8);
  const w = th.get('layers.2.weight')!.data;
  const mw = merged.get('layers.2.weight')!.data;
  for (let o = 0; o < 10; o++) {
    for (let j = 0; j < n; j++) {
      const e = 0.8 * w[o * n + j] + 0.2 * w[o * n + rp[j]] + dl.get('layers.2.weight')!.data[o * n + j];
      assert.ok(Math.abs(mw[o * n + j] - e) < 1e-6);
    }
  }
  const b0 = th.get('layers.0.bias')!.data;
  const mb = merged.get('layers.0.bias')!.data;
  for (let j = 0; j < n; j++) assert.ok(Math.abs(mb[j] - (0.8 * b0[j] + 0.2 * b0[rp[j]] + dl.get('layers.0.bias')!.data[j])) < 1e-6);
  // A hard permutation of θ alone is the same function: π only relabels hidden units.
  const x = new Tensor(Float32Array.from({ length: 3 * 784 }, (_, i) => Math.sin(i)), [3, 784]);
  const pi = mergeRebasin(model.permutationSpec(), th, { 'P_layers.0': rp }, new Map([...th].map(([k, v]) => [k, zeros(v.shape)])), 0);
  const y1 = noGrad(() => model.forward(th, x, { training: false })).data;
  const y2 = noGrad(() => model.forward(pi, x, { training: false })).data;
  for (let i = 0; i < y1.length; i++) assert.ok(Math.abs(y1[i] - y2[i]) < 1e-4);
});

// ---------------------------------------------------------------- baselines' building blocks

test('EWC penalty: separate per-task terms, gradient matches central finite differences', () => {
  const rng = new Rng(5);
  // Dyadic values keep θ ± h exact in float32.
  const dy = () => Math.round(rng.normal() * 8) / 8;
  const mk = (shape: number[], f: () => number) => { const t = zeros(shape); for (let i = 0; i < t.size; i++) t.data[i] = f(); return t; };
  const shapes: [string, number[]][] = [['w', [3, 4]], ['b', [3]]];
  const params: Params = new Map(shapes.map(([k, s]) => [k, mk(s, dy)]));
  const ewc = new EwcPenalty(100);
  for (let k = 0; k < 2; k++) ewc.add(new Map(shapes.map(([n, s]) => [n, mk(s, () => Math.round(rng.uniform() * 16) / 64)])), new Map(shapes.map(([n, s]) => [n, mk(s, dy)])));
  // Direct formula λ Σ_k Σ F_k (θ − θ_k)².
  let direct = 0;
  for (const term of ewc.terms) for (const [k, f] of term.fisher) for (let i = 0; i < f.size; i++) direct += f.data[i] * (params.get(k)!.data[i] - term.theta.get(k)!.data[i]) ** 2;
  assert.ok(close(ewc.value(params), 100 * direct, 1e-9));
  const grad = ewc.gradient(params);
  const fd = 1 / 16;
  for (const [k, t] of params) {
    for (let i = 0; i < t.size; i++) {
      const v0 = t.data[i];
      t.data[i] = v0 + fd;
      const up = ewc.value(params);
      t.data[i] = v0 - fd;
      const down = ewc.value(params);
      t.data[i] = v0;
      assert.ok(close(grad.get(k)![i], (up - down) / (2 * fd), 1e-9), `${k}[${i}]: ${grad.get(k)![i]} vs ${(up - down) / (2 * fd)}`);
    }
  }
  // k sub-steps in closed form = k explicit steps θ ← θ − h·∂penalty/∂θ.
  const copy = (p: Params): Params => new Map([...p].map(([k, v]) => [k, v.clone()]));
  const stepped = copy(params);
  const exact = copy(params);
  const h = 1e-3;
  for (let s = 0; s < 10; s++) {
    const g = ewc.gradient(exact);
    for (const [k, t] of exact) for (let i = 0; i < t.size; i++) t.data[i] -= h * g.get(k)![i];
  }
  ewc.applySteps(stepped, h, 10);
  for (const [k, t] of stepped) for (let i = 0; i < t.size; i++) assert.ok(Math.abs(t.data[i] - exact.get(k)!.data[i]) < 1e-5, `${k}[${i}]`);
  // addGradient adds onto existing .grad.
  params.get('b')!.grad = new Tensor(Float32Array.from([1, 1, 1]), [3]);
  ewc.addGradient(params);
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(params.get('b')!.grad!.data[i] - (1 + grad.get('b')![i])) < 1e-3);
});

test('LwF distillation is zero when the old and new models agree, positive otherwise', () => {
  const rng = new Rng(2);
  const z = new Tensor(Float32Array.from({ length: 40 }, () => 3 * rng.normal()), [4, 10]).requireGrad();
  const same = z.clone();
  const l = distillationLoss(z, same, 0.5, null);
  assert.equal(l.item(), 0);
  l.backward();
  for (const g of z.grad!.data) assert.ok(Math.abs(g) < 1e-6);
  assert.equal(noGrad(() => distillationLoss(z, same, 0.5, [0, 3, 7])).item(), 0);
  const other = new Tensor(Float32Array.from({ length: 40 }, () => rng.normal()), [4, 10]);
  assert.ok(noGrad(() => distillationLoss(z, other, 0.5, null)).item() > 0);
  // T divides the logits: KL(softmax(z/T)) computed by hand for one row pair.
  const a = new Tensor(Float32Array.from([1, 2, 0]), [1, 3]);
  const b = new Tensor(Float32Array.from([0, 1, 1]), [1, 3]);
  const sm = (v: number[]) => { const e = v.map((x) => Math.exp(x / 0.5)); const s = e.reduce((p, q) => p + q, 0); return e.map((x) => x / s); };
  const p = sm([1, 2, 0]);
  const q = sm([0, 1, 1]);
  const kl = q.reduce((s, qi, i) => s + qi * Math.log(qi / p[i]), 0);
  assert.ok(Math.abs(noGrad(() => distillationLoss(a, b, 0.5, null)).item() - kl) < 1e-5);
});

test('A-GEM projection leaves g·g_ref ≥ 0 and keeps agreeing gradients', () => {
  const rng = new Rng(9);
  for (let trial = 0; trial < 20; trial++) {
    const g = Float64Array.from({ length: 50 }, () => rng.normal());
    const ref = Float64Array.from({ length: 50 }, () => rng.normal());
    let dot0 = 0;
    for (let i = 0; i < 50; i++) dot0 += g[i] * ref[i];
    const before = g.slice();
    const projected = agemProject(g, ref);
    let dot = 0;
    for (let i = 0; i < 50; i++) dot += g[i] * ref[i];
    assert.equal(projected, dot0 < 0);
    assert.ok(dot >= -1e-9, `dot after projection ${dot}`);
    if (dot0 >= 0) assert.deepEqual(g, before);
  }
});

test('split benchmarks: task-incremental masks confine predictions to the task classes', async () => {
  const bench = loadBenchmark('split-mnist', { tasks: 2, samplesPerTask: 200, testSamplesPerTask: 100 });
  assert.equal(bench.scenario, 'task-incremental');
  assert.deepEqual(bench.tasks.map((t) => t.classes), [[0, 1], [2, 3]]);
  for (const t of bench.tasks) for (const c of t.train.y) assert.ok(t.classes.includes(c));
  // Masked to its 2 classes, even an untrained model is right about half the time (10-way: ~10%).
  const model = continualModel(bench);
  const init = model.init(new Rng(0)).params;
  assert.ok(taskAccuracy(model, bench, init, 1) > 0.25);
  const dir = mkdtempSync(join(tmpdir(), 'cl-split-'));
  try {
    const r = await runContinual({ benchmark: 'split-mnist', bench, methods: ['rebasin-il', 'finetune'], epochs: 3, baselineBatch: 50, outDir: dir, quiet: true, rebasin: { batchSize: 100, memBatch: 100 } });
    for (const m of r.results) {
      assert.equal(m.R.length, 2);
      assert.ok(m.R[0][0] > 0.8, `${m.method}: ${m.R}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('split CIFAR-100 from tiny files in the official binary layout', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cl-cifar-'));
  try {
    const data = join(dir, 'cifar-100-binary');
    mkdirSync(data);
    const rng = new Rng(4);
    const write = (name: string, n: number) => {
      const rec = 2 + 3072;
      const buf = Buffer.alloc(n * rec);
      for (let i = 0; i < n; i++) {
        const fine = i % 20; // classes 0..19: two tasks of 10
        buf[i * rec] = Math.floor(fine / 5);
        buf[i * rec + 1] = fine;
        // Class-dependent brightness so the task is learnable.
        for (let p = 0; p < 3072; p++) buf[i * rec + 2 + p] = Math.max(0, Math.min(255, fine * 12 + Math.floor(rng.normal() * 10)));
      }
      writeFileSync(join(data, name), buf);
    };
    write('train.bin', 200);
    write('test.bin', 60);
    const out = join(dir, 'out');
    const r = await runContinual({ benchmark: 'split-cifar100', dataDir: dir, tasks: 2, methods: ['rebasin-il', 'joint'], epochs: 1, jointEpochs: 1, outDir: out, quiet: true, rebasin: { batchSize: 50, memBatch: 50 } });
    assert.equal(r.benchmark.model, 'mlp-3072-256-100');
    assert.equal(r.results[0].R.length, 2);
    assert.equal(r.results[1].R.length, 1);
    assert.ok(existsSync(join(out, 'heatmap-joint.svg')));
    await assert.rejects(runContinual({ benchmark: 'split-cifar100', methods: ['finetune'], outDir: out, quiet: true }), InputError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- resume

test('resume: 2 tasks, stop, resume gives the same R and bit-identical parameters as an uninterrupted run', async () => {
  const bench = tinyRotated();
  const dir = mkdtempSync(join(tmpdir(), 'cl-resume-'));
  const methods: StrategyName[] = ['rebasin-il', 'finetune', 'ewc', 'lwf', 'agem', 'replay', 'joint'];
  const common = { benchmark: 'rotated-mnist' as const, bench, methods, epochs: 1, jointEpochs: 3, baselineBatch: 50, quiet: true, seed: 7, rebasin: { batchSize: 100, memBatch: 100 } };
  try {
    const full = await runContinual({ ...common, outDir: join(dir, 'a') });
    const part = await runContinual({ ...common, outDir: join(dir, 'b'), stopAfterUnits: 2 });
    for (const r of part.results) {
      assert.equal(r.complete, false, r.method);
      assert.equal(r.unitsDone, 2);
    }
    const st = await readRunState(join(dir, 'b', 'state-ewc.safetensors'));
    assert.equal(st!.unitsDone, 2);
    assert.equal(st!.R.length, 2);
    const resumed = await runContinual({ ...common, outDir: join(dir, 'b'), resume: true });
    for (let k = 0; k < methods.length; k++) {
      const a = full.results[k];
      const b = resumed.results[k];
      assert.equal(b.complete, true, b.method);
      assert.deepEqual(b.R, a.R, `${a.method}: R differs`);
      assert.ok(sameBits(a.params!, b.params!), `${a.method}: final parameters differ`);
    }
    // Resuming a finished run is a no-op that reports the same numbers.
    const again = await runContinual({ ...common, outDir: join(dir, 'b'), resume: true });
    assert.deepEqual(again.results.map((r) => r.R), full.results.map((r) => r.R));
    // Another configuration refuses the old state.
    await assert.rejects(runContinual({ ...common, seed: 8, outDir: join(dir, 'b'), resume: true }), /other options.*seed/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('several seeds: one folder per seed, each the run of its seed, and their mean ± std in summary files', async () => {
  const bench = tinyRotated();
  const dir = mkdtempSync(join(tmpdir(), 'cl-seeds-'));
  const common = { benchmark: 'rotated-mnist' as const, bench, methods: ['finetune', 'rebasin-il'] as StrategyName[], epochs: 1, baselineBatch: 50, quiet: true, rebasin: { batchSize: 100, memBatch: 100 } };
  try {
    const r = await runContinualSeeds({ ...common, seed: 3, outDir: dir }, 2);
    assert.deepEqual(r.seeds, [3, 4]);
    // Seed 4's folder holds exactly what a single run with seed 4 computes.
    const single = await runContinual({ ...common, seed: 4, outDir: join(dir, 'single') });
    assert.deepEqual(r.runs[1].results.map((x) => x.R), single.results.map((x) => x.R));
    assert.notDeepEqual(r.runs[0].results[0].R, r.runs[1].results[0].R);
    assert.ok(existsSync(join(dir, 'seed3', 'results.json')) && existsSync(join(dir, 'seed4', 'results.md')));
    for (const s of r.summary) {
      const accs = r.runs.map((run) => run.results.find((x) => x.method === s.method)!.metrics.averageAccuracy);
      assert.ok(close(s.metrics.averageAccuracy.mean, (accs[0] + accs[1]) / 2), s.method);
      assert.ok(close(s.metrics.averageAccuracy.std, Math.abs(accs[0] - accs[1]) / Math.SQRT2), s.method);
    }
    const md = readFileSync(join(dir, 'summary.md'), 'utf8');
    assert.match(md, /\| finetune +\| [0-9.]+ ± [0-9.]+/);
    assert.equal(JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')).summary.length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- CLI

function cli(args: string[]) {
  return spawnSync(process.execPath, [mainJs, 'experiment', 'continual', ...args], { encoding: 'utf8' });
}

test('CLI writes JSON, markdown and SVGs; bad options exit 2; a corrupt state file is named', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cl-cli-'));
  try {
    const base = ['--benchmark', 'rotated-mnist', '--tasks', '2', '--samples-per-task', '200', '--test-samples', '100', '--epochs', '1', '--quiet', '--out', dir];
    const r = cli([...base, '--methods', 'rebasin-il,finetune,joint', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { results: { method: string; R: number[][]; metrics: { averageAccuracy: number }; seconds: number; config: unknown; seed: number }[] };
    assert.deepEqual(out.results.map((x) => x.method), ['rebasin-il', 'finetune', 'joint']);
    assert.equal(out.results[0].R.length, 2);
    assert.ok(out.results[0].metrics.averageAccuracy > 0.1);
    for (const f of ['results.json', 'results.md', 'accuracy.svg', 'heatmap-rebasin-il.svg', 'heatmap-finetune.svg', 'heatmap-joint.svg', 'state-rebasin-il.safetensors']) {
      assert.ok(existsSync(join(dir, f)), f);
    }
    const md = readFileSync(join(dir, 'results.md'), 'utf8');
    assert.match(md, /\| rebasin-il/);
    assert.match(md, /batch 100 instead of the reference's 10/);
    assert.match(readFileSync(join(dir, 'accuracy.svg'), 'utf8'), /^<svg/);
    const json = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as { results: { seed: number }[] };
    assert.equal(json.results[0].seed, 0);

    for (const bad of [['--tasks', '0'], ['--seeds', '0'], ['--benchmark', 'nope'], ['--methods', 'rebasin-il,nope'], ['--epochs', 'x'], ['--benchmark', 'split-mnist', '--tasks', '6'], ['--benchmark', 'split-cifar100'], ['stray']]) {
      const b = cli(['--out', dir, '--quiet', ...bad]);
      assert.equal(b.status, 2, `${bad.join(' ')}: ${b.stderr}`);
    }

    writeFileSync(join(dir, 'state-finetune.safetensors'), 'not a safetensors file at all');
    const c = cli([...base, '--methods', 'finetune', '--resume']);
    assert.equal(c.status, 3, c.stderr);
    assert.match(c.stderr, /state-finetune\.safetensors is corrupt/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
