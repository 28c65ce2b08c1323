/** `rebasin experiment recovery`: recover planted permutations with WM and Sinkhorn-L2. */
import { resolve } from 'node:path';
import { RECOVERY_DEFAULT_METHODS, RECOVERY_METHODS, RECOVERY_MODELS, recoveryModel, runRecovery } from '../experiments/recovery.js';
import type { MethodName } from '../methods/registry.js';
import { WEIGHT_COST_DEFAULTS } from '../methods/sinkhorn-rebasin.js';
import { assertLr, parseTau, tauHelp } from './align.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';

export const recoverySpec: CommandSpec = {
  name: 'experiment recovery',
  summary: 'Recover a planted permutation of randomly initialised MLPs and VGGs (weight matching vs Sinkhorn-L2).',
  usage: 'rebasin experiment recovery [--models mlp2,vgg11,...] [--widths 16,64,...] [--methods wm,sinkhorn-l2] [--seeds N] [--out DIR]',
  options: {
    models: { type: 'list', help: 'models: mlpN (N hidden layers; suffixes -tanh, -inK, -outK), vgg11/13/16/19 or resnet20', default: [...RECOVERY_MODELS] },
    methods: { type: 'list', help: 'methods to compare', choices: RECOVERY_METHODS, default: [...RECOVERY_DEFAULT_METHODS] },
    seeds: { type: 'int', help: 'number of seeds (model init and planted permutation)', default: 3 },
    out: { type: 'string', help: 'output directory', default: './rebasin-out/recovery' },
    widths: { type: 'list', help: 'widths of the first hidden layer, each run: MLP hidden width; VGG ×width/64 (64 = 64…512 channels); ResNet-20 ×width/16', default: ['64'] },
    tau: { type: 'string', help: `Sinkhorn temperature: ${tauHelp()} (default: "schedule")` },
    lr: { type: 'number', help: 'AdamW learning rate on the Sinkhorn matrices', default: WEIGHT_COST_DEFAULTS.lr },
    steps: { type: 'int', help: 'maximum Sinkhorn steps (stops at hard cost 0)', default: WEIGHT_COST_DEFAULTS.steps },
    quiet: { type: 'boolean', help: 'no progress bar' },
    json: { type: 'boolean', help: 'print the rows as JSON on stdout' },
  },
};

export async function experimentRecovery(args: Parsed): Promise<number> {
  const o = args.options;
  const widths = (o.widths as string[]).map(Number);
  if (widths.some((w) => !(Number.isInteger(w) && w >= 1))) throw new UsageError(`experiment recovery: --widths must be integers ≥ 1, got ${(o.widths as string[]).join(',')}`);
  for (const m of o.models as string[]) {
    try { recoveryModel(m, widths[0]); } catch (e) { throw new UsageError(`experiment recovery: --models: ${(e as Error).message}`); }
  }
  if ((o.seeds as number) < 1) throw new UsageError(`experiment recovery: --seeds must be ≥ 1`);
  const tau = parseTau('experiment recovery', o.tau);
  assertLr('experiment recovery', o.lr);
  if ((o.steps as number) < 1) throw new UsageError(`experiment recovery: --steps must be ≥ 1`);
  const report = runRecovery({
    models: o.models as string[],
    methods: o.methods as MethodName[],
    seeds: o.seeds as number,
    outDir: resolve(o.out as string),
    widths,
    tau,
    lr: o.lr as number,
    steps: o.steps as number,
    quiet: Boolean(o.quiet),
  });
  if (o.json) process.stdout.write(JSON.stringify(report.rows) + '\n');
  else process.stdout.write(`wrote ${report.files.join(', ')}\n`);
  return 0;
}
