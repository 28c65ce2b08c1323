/** `rebasin experiment merge`: train N models per task and seed, merge the first n = 2…N with every merge variant. */
import { resolve } from 'node:path';
import { MERGE_TASKS, MERGE_VARIANT_NAMES, runMergeExperiment, type MergeTask } from '../experiments/merge.js';
import { SINKHORN_KEEP, WEIGHT_COST_DEFAULTS, type SinkhornKeep } from '../methods/sinkhorn-rebasin.js';
import { assertLr } from './align.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';

export const mergeExperimentSpec: CommandSpec = {
  name: 'experiment merge',
  summary: 'Train N models per task, merge n = 2…N of them with every merge strategy, and compare accuracy with the individual models and their ensemble.',
  usage: `rebasin experiment merge [--tasks ${MERGE_TASKS.join(',')}] [--models N] [--seeds S] [--strategies ${MERGE_VARIANT_NAMES.join(',')}] [--out DIR]`,
  options: {
    tasks: { type: 'list', help: 'tasks (the LMC experiment\'s setups)', choices: MERGE_TASKS, default: ['mnist-mlp'] },
    models: { type: 'int', help: 'models trained per task and seed (N ≥ 2; merges n = 2…N)', default: 4 },
    seeds: { type: 'int', help: 'independent sets of N models per task', default: 1 },
    strategies: { type: 'list', help: 'merge variants: "naive" and "first/<method>" align to the first model, the others are merge strategies', choices: MERGE_VARIANT_NAMES, default: [...MERGE_VARIANT_NAMES] },
    orders: { type: 'int', help: 'input orders at n = N for the order spread (model k first, seed k; 1: none)', default: 3 },
    out: { type: 'string', help: 'output directory (trained models are kept and reused there)', default: './rebasin-out/merge' },
    epochs: { type: 'int', help: 'training epochs of the models (default: per task, as the LMC experiment)' },
    'test-limit': { type: 'int', help: 'evaluate on the first N test samples only' },
    'data-dir': { type: 'string', help: 'folder with the MNIST/Fashion-MNIST IDX files' },
    lr: { type: 'number', help: `AdamW learning rate of first/sinkhorn-l2's alignments (default: ${WEIGHT_COST_DEFAULTS.lr}, the weight costs')` },
    keep: { type: 'string', help: `which step's permutations first/sinkhorn-l2's alignments return (default: ${WEIGHT_COST_DEFAULTS.keep}, the weight costs')`, choices: SINKHORN_KEEP },
    retrain: { type: 'boolean', help: 'retrain the models even if their checkpoints exist' },
    quiet: { type: 'boolean', help: 'no progress output' },
    json: { type: 'boolean', help: 'print the result rows as JSON on stdout' },
  },
};

export async function experimentMerge(args: Parsed): Promise<number> {
  const o = args.options;
  for (const k of ['seeds', 'orders', 'epochs', 'test-limit']) {
    if (o[k] !== undefined && !((o[k] as number) >= 1)) throw new UsageError(`experiment merge: --${k} must be ≥ 1, got ${o[k]}`);
  }
  if (!((o.models as number) >= 2)) throw new UsageError(`experiment merge: --models must be ≥ 2, got ${o.models}`);
  if ((o.orders as number) > (o.models as number)) throw new UsageError(`experiment merge: --orders must be ≤ --models (${o.models}), got ${o.orders}`);
  assertLr('experiment merge', o.lr);
  if ((o.lr !== undefined || o.keep !== undefined) && !(o.strategies as string[]).includes('first/sinkhorn-l2')) throw new UsageError('experiment merge: --lr and --keep apply to first/sinkhorn-l2, which --strategies leaves out');
  const report = await runMergeExperiment({
    tasks: o.tasks as MergeTask[],
    models: o.models as number,
    seeds: o.seeds as number,
    variants: o.strategies as string[],
    orders: o.orders as number,
    outDir: resolve(o.out as string),
    epochs: o.epochs as number | undefined,
    testLimit: o['test-limit'] as number | undefined,
    dataDir: o['data-dir'] as string | undefined,
    retrain: Boolean(o.retrain),
    quiet: Boolean(o.quiet),
    ...(o.lr !== undefined || o.keep !== undefined ? { sinkhornL2: { lr: o.lr as number | undefined, keep: o.keep as SinkhornKeep | undefined } } : {}),
  });
  if (o.json) process.stdout.write(JSON.stringify({ rows: report.rows, orders: report.orders }) + '\n');
  else process.stdout.write(`wrote ${report.files.join(', ')}\n`);
  return 0;
}
