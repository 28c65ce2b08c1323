/**
 * The continual-learning experiment: every method on one benchmark, each from the same initial
 * model (MLP input-256-classes, PyTorch init with the run's seed), evaluated on every task's test
 * set after every task (the accuracy matrix R), with the metrics, a JSON/markdown report and SVG
 * plots. Resumable: after each finished unit of each method its state file is rewritten atomically,
 * and `resume` continues from there with identical results.
 */
import { join } from 'node:path';
import { Rng } from '../core/index.js';
import { InputError } from '../errors.js';
import { ensureDirSync, writeFileAtomicSync } from '../io/atomic.js';
import type { Params } from '../state/params.js';
import { fmtMeanStd, markdownTable, meanStd } from '../report/markdown.js';
import { fmtTime, Progress } from '../report/progress.js';
import { heatMap, linePlots, type Series } from '../report/svg.js';
import { streamSeed } from '../training/common.js';
import { loadBenchmark, type Benchmark, type BenchmarkName } from '../continual/benchmarks.js';
import { accuracyRow } from '../continual/common.js';
import { accuracyOverTasksSeen, continualMetrics, type ContinualMetrics } from '../continual/metrics.js';
import type { RebasinILOptions } from '../continual/rebasin-il.js';
import { continualModel, createStrategy, STRATEGY_TABLE } from '../continual/strategies.js';
import { configDifference, readRunState, toJson, writeRunState } from './continual-state.js';
import { STRATEGIES, type StrategyName, type StrategyEnv } from '../continual/strategy.js';

export interface ContinualOptions {
  benchmark: BenchmarkName;
  methods: StrategyName[];
  /** Number of tasks (benchmark default when unset). */
  tasks?: number;
  /** Epochs per task for every method (each method's reference value when unset). */
  epochs?: number;
  seed?: number;
  samplesPerTask?: number;
  testSamplesPerTask?: number;
  dataDir?: string;
  outDir: string;
  /** Continue from the state files in outDir (otherwise they are overwritten). */
  resume?: boolean;
  quiet?: boolean;
  /** Batch of the SGD baselines finetune/ewc/lwf/agem (reference 10); their lr scales with it. */
  baselineBatch?: number;
  /** Epochs of joint training (reference 50; overrides `epochs` for joint). */
  jointEpochs?: number;
  /** Hidden width of the MLP (reference 256). */
  hidden?: number;
  /** Stop every method once it has finished this many units (a simulated kill, for resume tests). */
  stopAfterUnits?: number;
  /** A prebuilt benchmark (tests); `benchmark` must still name it. */
  bench?: Benchmark;
  /** Override RebasinIL hyper-parameters. */
  rebasin?: Partial<RebasinILOptions>;
}

export interface MethodResult {
  method: StrategyName;
  /** R[t][i]: accuracy on task i after task t (joint: one row, after training on everything). */
  R: number[][];
  metrics: ContinualMetrics;
  /** Mean accuracy over the tasks seen so far after each task. */
  seenAccuracy: number[];
  seconds: number;
  unitsDone: number;
  units: number;
  complete: boolean;
  seed: number;
  config: Record<string, unknown>;
  diagnostics?: Record<string, unknown>;
  /** Final parameters (not in the JSON file). */
  params?: Params;
}

export interface ContinualReport {
  benchmark: { name: BenchmarkName; description: string; tasks: number; scenario: string; model: string };
  seed: number;
  results: MethodResult[];
  deviations: string[];
  files: string[];
}

function intOpt(name: string, v: number | undefined, min = 1): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new InputError(`${name} must be an integer ≥ ${min}, got ${v}`);
}

/** Name of the first tensor holding NaN/±Inf, or null. */
function firstNonFinite(p: Params): string | null {
  for (const [k, t] of p) for (let i = 0; i < t.size; i++) if (!Number.isFinite(t.data[i])) return k;
  return null;
}

function statePath(outDir: string, method: StrategyName): string {
  return join(outDir, `state-${method}.safetensors`);
}

/** Runs (or resumes) the experiment and writes results.json, results.md and the SVGs into outDir. */
export async function runContinual(o: ContinualOptions): Promise<ContinualReport> {
  intOpt('tasks', o.tasks);
  intOpt('epochs', o.epochs);
  intOpt('samplesPerTask', o.samplesPerTask);
  intOpt('testSamplesPerTask', o.testSamplesPerTask);
  intOpt('baselineBatch', o.baselineBatch);
  intOpt('jointEpochs', o.jointEpochs);
  intOpt('hidden', o.hidden);
  intOpt('stopAfterUnits', o.stopAfterUnits);
  intOpt('seed', o.seed, 0);
  if (o.methods.length === 0) throw new InputError('no methods given');
  for (const m of o.methods) if (!(STRATEGIES as readonly string[]).includes(m)) throw new InputError(`unknown method "${m}" (have ${STRATEGIES.join(', ')})`);
  const seed = o.seed ?? 0;
  const bench = o.bench ?? loadBenchmark(o.benchmark, { tasks: o.tasks, samplesPerTask: o.samplesPerTask, testSamplesPerTask: o.testSamplesPerTask, dataDir: o.dataDir });
  const model = continualModel(bench, o.hidden ?? 256);
  const init = model.init(new Rng(seed)).params;
  ensureDirSync(o.outDir);
  const results: MethodResult[] = [];
  const deviations: string[] = [];
  for (const method of o.methods) {
    const rng = new Rng(streamSeed(seed, STRATEGIES.indexOf(method) + 1));
    const env: StrategyEnv = { model, bench, rng };
    const strategy = createStrategy(method, env, init, o);
    if (typeof strategy.hyper.deviation === 'string') deviations.push(strategy.hyper.deviation);
    const config = {
      benchmark: bench.name, tasks: bench.tasks.length, trainSamples: bench.tasks.map((t) => t.train.n), testSamples: bench.tasks.map((t) => t.test.n),
      model: model.name, seed, method, hyper: strategy.hyper,
    };
    const path = statePath(o.outDir, method);
    let R: number[][] = [];
    let unitSeconds: number[] = [];
    let done = 0;
    if (o.resume) {
      const saved = await readRunState(path);
      if (saved) {
        const diff = configDifference(saved.config, config);
        if (diff) throw new InputError(`cannot resume ${method} from ${path}: it was written with other options (${diff}); use another --out or drop --resume to start over`);
        if (saved.unitsDone > strategy.units) throw new InputError(`cannot resume ${method} from ${path}: it has ${saved.unitsDone} units done but the run has ${strategy.units}`);
        try {
          strategy.restore(saved.snapshot);
          rng.setState(saved.rng);
        } catch (e) {
          throw new InputError(`continual state file ${path} does not fit this run (${(e as Error).message}); delete it to start ${method} over`);
        }
        if (saved.R.length > saved.unitsDone) throw new InputError(`continual state file ${path} is inconsistent: ${saved.R.length} accuracy rows for ${saved.unitsDone} units`);
        R = saved.R;
        unitSeconds = saved.unitSeconds;
        done = saved.unitsDone;
      }
    }
    const totalSteps = Array.from({ length: strategy.units }, (_, u) => strategy.steps(u)).reduce((a, b) => a + b, 0);
    const bar = new Progress({ label: method.padEnd(10), total: totalSteps, quiet: o.quiet });
    let stepsDone = Array.from({ length: done }, (_, u) => strategy.steps(u)).reduce((a, b) => a + b, 0);
    bar.set(stepsDone, done ? `resumed after ${done}/${strategy.units} ${method === 'joint' ? 'epochs' : 'tasks'}` : '');
    env.hook = (status) => bar.tick(1, status);
    let stoppedEarly = false;
    for (let u = done; u < strategy.units; u++) {
      if (o.stopAfterUnits !== undefined && u >= o.stopAfterUnits) {
        stoppedEarly = true;
        break;
      }
      const t0 = performance.now();
      const rowDue = strategy.runUnit(u);
      const bad = firstNonFinite(strategy.params());
      if (bad) throw new InputError(`${method} diverged during ${method === 'joint' ? `epoch ${u + 1}` : `task ${u + 1}`}: parameter "${bad}" is not finite (a smaller learning rate or batch helps); the state after the previous ${method === 'joint' ? 'epoch' : 'task'} is kept in ${path}`);
      if (rowDue) R.push(accuracyRow(model, bench, strategy.params()));
      unitSeconds.push((performance.now() - t0) / 1000);
      done = u + 1;
      stepsDone += strategy.steps(u);
      bar.set(stepsDone, rowDue ? `after ${method === 'joint' ? 'training' : `task ${u + 1}`}: mean acc on seen tasks ${(100 * accuracyOverTasksSeen(R)[R.length - 1]).toFixed(2)}%` : undefined);
      await writeRunState(path, { method, config, unitsDone: done, R, unitSeconds, rng: rng.getState(), snapshot: strategy.snapshot() });
    }
    const seconds = unitSeconds.reduce((a, b) => a + b, 0);
    const complete = done === strategy.units && !stoppedEarly;
    const metrics = continualMetrics(R);
    bar.finish(complete ? `avg acc ${(100 * metrics.averageAccuracy).toFixed(2)}%  (${fmtTime(seconds)})` : `stopped after ${done}/${strategy.units}`);
    results.push({ method, R, metrics, seenAccuracy: accuracyOverTasksSeen(R), seconds, unitsDone: done, units: strategy.units, complete, seed, config, diagnostics: strategy.diagnostics?.(), params: strategy.params() });
  }
  const report: ContinualReport = {
    benchmark: { name: bench.name, description: bench.description, tasks: bench.tasks.length, scenario: bench.scenario, model: model.name },
    seed, results, deviations, files: [],
  };
  report.files = writeReports(o.outDir, report);
  return report;
}

const pct = (v: number) => (Number.isFinite(v) ? 100 * v : NaN);

/** results.json, results.md, heatmap-<method>.svg and accuracy.svg; returns their paths. */
export function writeReports(outDir: string, report: ContinualReport): string[] {
  const files: string[] = [];
  const json = join(outDir, 'results.json');
  const plain = { ...report, results: report.results.map(({ params: _p, ...r }) => r), files: undefined };
  writeFileAtomicSync(json, toJson(plain, 1) + '\n');
  files.push(json);

  const rows = report.results.map((r) => [
    r.method + (r.complete ? '' : ` (${r.unitsDone}/${r.units}, incomplete)`),
    pct(r.metrics.averageAccuracy).toFixed(2),
    Number.isFinite(r.metrics.forgetting) ? pct(r.metrics.forgetting).toFixed(2) : '–',
    Number.isFinite(r.metrics.backwardTransfer) ? pct(r.metrics.backwardTransfer).toFixed(2) : '–',
    r.seconds.toFixed(1),
  ]);
  const md = [
    `# Continual learning: ${report.benchmark.name}`,
    '',
    `${report.benchmark.description}. Model ${report.benchmark.model}; seed ${report.seed}.`,
    '',
    markdownTable(['method', 'average accuracy (%)', 'forgetting (%)', 'BWT (%)', 'seconds'], rows),
    'Average accuracy: mean of the last row of R (accuracy on every task after the last one). Forgetting: mean over earlier tasks of max_{t<T} R[t][i] − R[T][i]. BWT: mean of R[T][i] − R[i][i] (Avalanche\'s StreamForgetting = −BWT). Joint training is one run on all tasks: no forgetting or BWT.',
    '',
    'Methods:',
    ...report.results.map((r) => `- ${r.method}: ${STRATEGY_TABLE[r.method].note}${r.method === 'joint' ? `, ${r.units} epochs` : ''}.`),
    ...(report.deviations.length ? ['', 'Deviations from the reference hyper-parameters:', ...report.deviations.map((d) => `- ${d}`)] : []),
    '',
  ].join('\n');
  const mdPath = join(outDir, 'results.md');
  writeFileAtomicSync(mdPath, md);
  files.push(mdPath);

  for (const r of report.results) {
    if (r.R.length === 0) continue;
    const p = join(outDir, `heatmap-${r.method}.svg`);
    const rowLabel = r.method === 'joint' ? 'after joint training' : 'after training task (row)';
    writeFileAtomicSync(p, heatMap(`${r.method}: accuracy R[t][i] (%) on ${report.benchmark.name}`, r.R, { rowLabel, colLabel: 'evaluated task i', min: 0, max: 1 }));
    files.push(p);
  }
  const T = report.benchmark.tasks;
  const series: Series[] = report.results.filter((r) => r.R.length > 0).map((r) => r.method === 'joint'
    ? { label: 'joint (upper bound)', x: [1, T], y: [pct(r.metrics.averageAccuracy), pct(r.metrics.averageAccuracy)], dashed: true }
    : { label: r.method, x: r.seenAccuracy.map((_, i) => i + 1), y: r.seenAccuracy.map(pct) });
  if (series.length) {
    const p = join(outDir, 'accuracy.svg');
    writeFileAtomicSync(p, linePlots([{ title: `Average accuracy on the tasks seen so far, ${report.benchmark.name}`, xLabel: 'tasks seen', yLabel: 'accuracy (%)', series }], { cols: 1, panelWidth: 640, panelHeight: 400 }));
    files.push(p);
  }
  return files;
}

export interface ContinualSeedsReport {
  benchmark: ContinualReport['benchmark'];
  seeds: number[];
  /** One report per seed, each written into outDir/seed<k>. */
  runs: ContinualReport[];
  /** Per method: mean and std over the seeds of average accuracy, forgetting and BWT (fractions). */
  summary: { method: StrategyName; seeds: number; complete: boolean; metrics: Record<keyof ContinualMetrics, { mean: number; std: number }> }[];
  files: string[];
}

/**
 * runContinual for seeds first, first + 1, …, first + count − 1, each into outDir/seed<k> (so
 * `resume` continues every seed where it stopped), then summary.json and summary.md in outDir:
 * mean ± std over the seeds per method.
 */
export async function runContinualSeeds(o: ContinualOptions, count: number): Promise<ContinualSeedsReport> {
  intOpt('seeds', count);
  const first = o.seed ?? 0;
  const seeds = Array.from({ length: count }, (_, k) => first + k);
  const runs: ContinualReport[] = [];
  for (const seed of seeds) runs.push(await runContinual({ ...o, seed, outDir: join(o.outDir, `seed${seed}`) }));
  const summary = o.methods.map((method) => {
    const rs = runs.map((r) => r.results.find((x) => x.method === method)!);
    const keys = Object.keys(rs[0].metrics) as (keyof ContinualMetrics)[];
    return { method, seeds: rs.length, complete: rs.every((r) => r.complete), metrics: Object.fromEntries(keys.map((k) => [k, meanStd(rs.map((r) => r.metrics[k]))])) as Record<keyof ContinualMetrics, { mean: number; std: number }> };
  });
  const report: ContinualSeedsReport = { benchmark: runs[0].benchmark, seeds, runs, summary, files: [] };
  ensureDirSync(o.outDir);
  const json = join(o.outDir, 'summary.json');
  writeFileAtomicSync(json, toJson({ benchmark: report.benchmark, seeds, summary, runs: seeds.map((s) => `seed${s}/results.json`) }, 1) + '\n');
  const cell = (method: StrategyName, k: keyof ContinualMetrics) => {
    const xs = runs.map((r) => pct(r.results.find((x) => x.method === method)!.metrics[k]));
    return xs.every(Number.isFinite) ? fmtMeanStd(xs) : '–';
  };
  const md = [
    `# Continual learning: ${report.benchmark.name}, ${seeds.length} seeds`,
    '',
    `${report.benchmark.description}. Model ${report.benchmark.model}; seeds ${seeds.join(', ')} (each in seed<k>/); mean ± std over the seeds.`,
    '',
    markdownTable(['method', 'average accuracy (%)', 'forgetting (%)', 'BWT (%)'], summary.map((s) => [
      s.method + (s.complete ? '' : ' (incomplete)'), cell(s.method, 'averageAccuracy'), cell(s.method, 'forgetting'), cell(s.method, 'backwardTransfer'),
    ])),
    '',
  ].join('\n');
  const mdPath = join(o.outDir, 'summary.md');
  writeFileAtomicSync(mdPath, md);
  report.files = [json, mdPath, ...runs.flatMap((r) => r.files)];
  return report;
}
