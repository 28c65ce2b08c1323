/** `rebasin experiment lmc` and `rebasin demo`: train endpoint pairs, align, measure barriers. */
import { resolve } from 'node:path';
import type { BnMode } from '../analysis/lmc.js';
import { LMC_METHODS, LMC_TASKS, PAPER_LMC_TASKS, runLmc, type LmcTask } from '../experiments/lmc.js';
import { REFERENCE_DROPOUT_B } from '../models/index.js';
import { BUILTIN_METHOD_NAMES, type MethodName } from '../methods/registry.js';
import { DATA_COST_DEFAULTS, SINKHORN_KEEP, WEIGHT_COST_DEFAULTS, type SinkhornKeep } from '../methods/sinkhorn-rebasin.js';
import { assertLr, parseTau, tauHelp } from './align.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';

export const lmcSpec: CommandSpec = {
  name: 'experiment lmc',
  summary: 'Train model pairs, align them with every method, and compare loss/accuracy barriers along the linear path.',
  usage: 'rebasin experiment lmc [--tasks poly1,mnist-mlp,...] [--methods naive,wm,...] [--seeds N] [--out DIR]',
  options: {
    tasks: { type: 'list', help: 'tasks (the default: the paper\'s six; text-gpt: two character GPTs on Debian\'s licence texts; mnist-vit: two ViTs on MNIST)', choices: LMC_TASKS, default: [...PAPER_LMC_TASKS] },
    methods: { type: 'list', help: 'alignment methods', choices: BUILTIN_METHOD_NAMES, default: [...LMC_METHODS] },
    seeds: { type: 'int', help: 'number of independently trained (A, B) pairs per task', default: 1 },
    out: { type: 'string', help: 'output directory (checkpoints are kept and reused there)', default: './rebasin-out/lmc' },
    points: { type: 'int', help: 'λ values on the path', default: 25 },
    bn: { type: 'string', help: 'BatchNorm statistics of interpolated models (default: per task; re-estimated on the training data for mnist-vgg, as the reference)', choices: ['interpolate', 'reestimate', 'batch'] },
    epochs: { type: 'int', help: 'training epochs of the endpoints (default: per task, as the reference; a cached endpoint trained with other settings is retrained, with a note)' },
    'sinkhorn-epochs': { type: 'int', help: 'epochs of Sinkhorn-Mid/Rnd over the training data (default: 20 on MNIST tasks, 300 on the 100-point polynomial tasks)' },
    'ste-epochs': { type: 'int', help: 'epochs of the straight-through estimator (default: 5 on MNIST tasks, 300 on polynomial tasks)' },
    tau: { type: 'string', help: `Sinkhorn temperature of every Sinkhorn method: ${tauHelp()} (default: "schedule" for L2/L1/cosine, 1 for Mid/Rnd as the reference)` },
    lr: { type: 'number', help: `AdamW learning rate of every Sinkhorn method\'s matrices (default: ${WEIGHT_COST_DEFAULTS.lr} for L2/L1/cosine, ${DATA_COST_DEFAULTS.lr} for Mid/Rnd as the reference)` },
    keep: { type: 'string', help: `which step\'s permutations every Sinkhorn method returns: its last or those with the lowest hard cost (default: ${WEIGHT_COST_DEFAULTS.keep} for L2/L1/cosine, ${DATA_COST_DEFAULTS.keep} for Mid/Rnd as the reference)`, choices: SINKHORN_KEEP },
    heads: { type: 'string', help: 'attention heads (text-gpt, mnist-vit): permuted (default), or fixed at the identity with each head\'s dimensions still matched (the ablation)', choices: ['permuted', 'fixed'], default: 'permuted' },
    'test-limit': { type: 'int', help: 'evaluate the curves on the first N test samples only' },
    'data-dir': { type: 'string', help: 'folder with the Fashion-MNIST/MNIST IDX files' },
    retrain: { type: 'boolean', help: 'retrain endpoints and recompute every row (by default a stopped run resumes: cached endpoints and the rows of --out/lmc.json with the same settings are reused)' },
    quiet: { type: 'boolean', help: 'no progress output' },
    json: { type: 'boolean', help: 'print the result rows as JSON on stdout' },
  },
};

function positive(cmd: string, name: string, v: unknown): void {
  if (v !== undefined && !((v as number) >= 1)) throw new UsageError(`${cmd}: --${name} must be ≥ 1, got ${v}`);
}

export async function experimentLmc(args: Parsed): Promise<number> {
  const o = args.options;
  for (const k of ['seeds', 'points', 'epochs', 'sinkhorn-epochs', 'ste-epochs', 'test-limit']) positive('experiment lmc', k, o[k]);
  if ((o.points as number) < 2) throw new UsageError('experiment lmc: --points must be ≥ 2');
  const tau = parseTau('experiment lmc', o.tau);
  assertLr('experiment lmc', o.lr);
  const report = await runLmc({
    tasks: o.tasks as LmcTask[],
    methods: o.methods as MethodName[],
    seeds: o.seeds as number,
    outDir: resolve(o.out as string),
    points: o.points as number,
    bn: o.bn as BnMode,
    epochs: o.epochs as number | undefined,
    sinkhornEpochs: o['sinkhorn-epochs'] as number | undefined,
    steEpochs: o['ste-epochs'] as number | undefined,
    tau,
    sinkhornLr: o.lr as number | undefined,
    sinkhornKeep: o.keep as SinkhornKeep | undefined,
    heads: o.heads as 'permuted' | 'fixed',
    testLimit: o['test-limit'] as number | undefined,
    dataDir: o['data-dir'] as string | undefined,
    retrain: Boolean(o.retrain),
    quiet: Boolean(o.quiet),
  });
  if (o.json) process.stdout.write(JSON.stringify(report.rows) + '\n');
  else process.stdout.write(`wrote ${report.files.join(', ')}\n`);
  return 0;
}

export const demoSpec: CommandSpec = {
  name: 'demo',
  summary: 'Train two MNIST MLPs (A without dropout, B with dropout 0.25, as the reference), align them with weight matching and Sinkhorn-Mid, print the barriers and plot the paths.',
  usage: 'rebasin demo [--out DIR] [--json]',
  options: {
    out: { type: 'string', help: 'output directory', default: './rebasin-out/demo' },
    epochs: { type: 'int', help: 'training epochs per model (reference: 50)', default: 50 },
    'sinkhorn-epochs': { type: 'int', help: 'Sinkhorn-Mid epochs (reference: 20)', default: 20 },
    retrain: { type: 'boolean', help: 'retrain and recompute even if the checkpoints and results exist in --out' },
    quiet: { type: 'boolean', help: 'no progress output' },
    json: { type: 'boolean', help: 'print one JSON object on stdout' },
  },
};

export async function demo(args: Parsed): Promise<number> {
  const o = args.options;
  positive('demo', 'epochs', o.epochs);
  positive('demo', 'sinkhorn-epochs', o['sinkhorn-epochs']);
  const t0 = performance.now();
  const methods: MethodName[] = ['naive', 'wm', 'sinkhorn-mid'];
  const report = await runLmc({
    tasks: ['mnist-mlp'], methods, seeds: 1, outDir: resolve(o.out as string),
    epochs: o.epochs as number, sinkhornEpochs: o['sinkhorn-epochs'] as number,
    retrain: Boolean(o.retrain), quiet: Boolean(o.quiet || o.json),
  });
  const total = (performance.now() - t0) / 1000;
  const byMethod = Object.fromEntries(report.rows.map((r) => [r.method, r]));
  const first = report.rows[0];
  const result = {
    methods: Object.fromEntries(methods.map((m) => [m, { lossBarrier: byMethod[m].lossBarrier, accBarrier: byMethod[m].accBarrier, auc: byMethod[m].auc }])),
    endpoints: first.endpoints,
    /** Cached checkpoints that were retrained because they were trained with other settings. */
    retrained: report.notes,
    seconds: { train: report.trainSeconds, ...Object.fromEntries(methods.map((m) => [m, byMethod[m].seconds])), total },
    files: report.files,
  };
  if (o.json) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return 0;
  }
  const lines = [
    `MNIST MLP 784-512-512-10, A without dropout, B with dropout ${REFERENCE_DROPOUT_B} (the reference's protocol)`,
    `endpoints loss ${first.endpoints.lossA.toFixed(4)} / ${first.endpoints.lossB.toFixed(4)}, accuracy ${(100 * first.endpoints.accA!).toFixed(2)}% / ${(100 * first.endpoints.accB!).toFixed(2)}% (test set)`,
    '',
    'method         loss barrier   accuracy barrier   loss AUC   seconds',
    ...methods.map((m) => `${m.padEnd(14)} ${byMethod[m].lossBarrier.toFixed(4).padStart(12)}   ${(100 * byMethod[m].accBarrier!).toFixed(2).padStart(15)}%   ${byMethod[m].auc.toFixed(4).padStart(8)}   ${byMethod[m].seconds.toFixed(1).padStart(7)}`),
    '',
    `training both models: ${report.trainSeconds.toFixed(1)} s${report.trainSeconds === 0 ? ' (reused checkpoints; --retrain to train again)' : ''}; total ${total.toFixed(1)} s` +
      (report.reused ? ` (${report.reused} of ${methods.length} rows from the earlier run in --out)` : ''),
    `plot: ${report.files.find((f) => f.endsWith('.svg'))}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
