/** `rebasin experiment continual`: RebasinIL against continual-learning baselines, resumable. */
import { resolve } from 'node:path';
import { BENCHMARKS, type BenchmarkName } from '../continual/benchmarks.js';
import { runContinual, runContinualSeeds } from '../experiments/continual.js';
import { toJson } from '../experiments/continual-state.js';
import { STRATEGIES, type StrategyName } from '../continual/strategy.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';

/** SGD baselines' default batch: the reference's 10 is ~10× slower here for similar accuracy. */
export const DEFAULT_BASELINE_BATCH = 100;

export const continualSpec: CommandSpec = {
  name: 'experiment continual',
  summary: 'Continual learning: RebasinIL (Sinkhorn re-basin + residual + replay) vs fine-tuning, EWC, LwF, A-GEM, replay and joint training; resumable after every task.',
  usage: 'rebasin experiment continual --benchmark rotated-mnist|split-mnist|split-fashion-mnist|split-cifar100 --methods rebasin-il,finetune,... --out DIR [--tasks N] [--epochs N] [--seed N] [--seeds N] [--samples-per-task N] [--data-dir DIR] [--resume] [--quiet] [--json]',
  options: {
    benchmark: { type: 'string', help: 'task sequence', choices: BENCHMARKS, default: 'rotated-mnist' },
    methods: { type: 'list', help: 'methods to run, in order', choices: STRATEGIES, default: [...STRATEGIES] },
    out: { type: 'string', help: 'output directory (results, plots and per-method state files)', default: './rebasin-out/continual' },
    tasks: { type: 'int', help: 'number of tasks (default: 20 rotations, 5 MNIST/Fashion splits, 10 CIFAR-100 splits)' },
    epochs: { type: 'int', help: 'epochs per task for every method (default: each method\'s reference value: 5, A-GEM 10, joint 50)' },
    seed: { type: 'int', help: 'seed of the initial model, shuffles, initialisations and memories', default: 0 },
    seeds: { type: 'int', help: 'run N seeds (--seed, --seed + 1, …), each into --out/seed<k>, and write summary.md/summary.json with mean ± std', default: 1 },
    'samples-per-task': { type: 'int', help: 'keep the first N training samples of each task (quick runs)' },
    'test-samples': { type: 'int', help: 'keep the first N test samples of each task (quick runs)' },
    'data-dir': { type: 'string', help: 'MNIST/Fashion-MNIST IDX folder, or the CIFAR-100 binary folder (required for split-cifar100)' },
    'baseline-batch': { type: 'int', help: 'batch of finetune/ewc/lwf/agem (reference 10; lr scaled proportionally)', default: DEFAULT_BASELINE_BATCH },
    'joint-epochs': { type: 'int', help: 'epochs of joint training (reference 50)' },
    hidden: { type: 'int', help: 'hidden width of the MLP', default: 256 },
    'stop-after': { type: 'int', help: 'stop each method after N finished tasks (epochs for joint), e.g. to try --resume' },
    resume: { type: 'boolean', help: 'continue from the state files in --out' },
    quiet: { type: 'boolean', help: 'no progress bars' },
    json: { type: 'boolean', help: 'print the results as JSON on stdout' },
  },
};

const CMD = 'experiment continual';

export async function experimentContinual(args: Parsed): Promise<number> {
  const o = args.options;
  if (args.positionals.length) throw new UsageError(`${CMD}: unexpected argument "${args.positionals[0]}" (see --help)`);
  for (const k of ['seeds', 'tasks', 'epochs', 'samples-per-task', 'test-samples', 'baseline-batch', 'joint-epochs', 'hidden', 'stop-after']) {
    const v = o[k];
    if (v !== undefined && !((v as number) >= 1)) throw new UsageError(`${CMD}: --${k} must be ≥ 1, got ${v}`);
  }
  if ((o.seed as number) < 0) throw new UsageError(`${CMD}: --seed must be ≥ 0, got ${o.seed}`);
  const benchmark = o.benchmark as BenchmarkName;
  const maxTasks = benchmark === 'rotated-mnist' ? Infinity : benchmark === 'split-cifar100' ? 10 : 5;
  if (o.tasks !== undefined && (o.tasks as number) > maxTasks) throw new UsageError(`${CMD}: ${benchmark} has at most ${maxTasks} tasks, got --tasks ${o.tasks}`);
  if (benchmark === 'split-cifar100' && !o['data-dir']) throw new UsageError(`${CMD}: split-cifar100 needs --data-dir <folder with the CIFAR-100 binary files train.bin and test.bin>`);
  const methods = [...new Set(o.methods as StrategyName[])];
  const options = {
    benchmark,
    methods,
    tasks: o.tasks as number | undefined,
    epochs: o.epochs as number | undefined,
    seed: o.seed as number,
    samplesPerTask: o['samples-per-task'] as number | undefined,
    testSamplesPerTask: o['test-samples'] as number | undefined,
    dataDir: o['data-dir'] as string | undefined,
    outDir: resolve(o.out as string),
    resume: Boolean(o.resume),
    quiet: Boolean(o.quiet || o.json),
    baselineBatch: o['baseline-batch'] as number,
    jointEpochs: o['joint-epochs'] as number | undefined,
    hidden: o.hidden as number,
    stopAfterUnits: o['stop-after'] as number | undefined,
  };
  if ((o.seeds as number) > 1) return seedsSummary(await runContinualSeeds(options, o.seeds as number), Boolean(o.json));
  const report = await runContinual(options);
  const plain = { ...report, results: report.results.map(({ params: _p, ...r }) => r) };
  if (o.json) {
    process.stdout.write(toJson(plain) + '\n');
    return 0;
  }
  const lines = [
    report.benchmark.description,
    '',
    'method       avg acc %  forgetting %   BWT %   seconds',
    ...report.results.map((r) => {
      const f = (v: number) => (Number.isFinite(v) ? (100 * v).toFixed(2) : '–');
      return `${(r.method + (r.complete ? '' : '*')).padEnd(12)} ${f(r.metrics.averageAccuracy).padStart(8)}  ${f(r.metrics.forgetting).padStart(11)}  ${f(r.metrics.backwardTransfer).padStart(7)}  ${r.seconds.toFixed(1).padStart(8)}`;
    }),
    ...(report.results.some((r) => !r.complete) ? ['* stopped early: continue with --resume'] : []),
    ...report.deviations.map((d) => `note: ${d}`),
    '',
    `wrote ${report.files.join(', ')}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

function seedsSummary(report: Awaited<ReturnType<typeof runContinualSeeds>>, json: boolean): number {
  if (json) {
    process.stdout.write(toJson({ benchmark: report.benchmark, seeds: report.seeds, summary: report.summary }) + '\n');
    return 0;
  }
  const f = (m: { mean: number; std: number }) => (Number.isFinite(m.mean) ? `${(100 * m.mean).toFixed(2)} ± ${(100 * m.std).toFixed(2)}` : '–');
  const lines = [
    `${report.benchmark.description}; seeds ${report.seeds.join(', ')}`,
    '',
    'method       avg acc %        forgetting %     BWT %',
    ...report.summary.map((s) => `${(s.method + (s.complete ? '' : '*')).padEnd(12)} ${f(s.metrics.averageAccuracy).padEnd(16)} ${f(s.metrics.forgetting).padEnd(16)} ${f(s.metrics.backwardTransfer)}`),
    ...(report.summary.some((s) => !s.complete) ? ['* stopped early: continue with --resume'] : []),
    '',
    `wrote ${report.files.slice(0, 2).join(', ')} and one folder per seed`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
