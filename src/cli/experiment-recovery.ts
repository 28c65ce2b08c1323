/** `rebasin experiment recovery`: recover planted permutations with WM and Sinkhorn-L2. */
import { resolve } from 'node:path';
import { RECOVERY_DEFAULT_METHODS, RECOVERY_METHODS, RECOVERY_MODELS, runRecovery } from '../experiments/recovery.js';
import type { MethodName } from '../methods/registry.js';
import { WEIGHT_COST_DEFAULTS } from '../methods/sinkhorn-rebasin.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';

export const recoverySpec: CommandSpec = {
  name: 'experiment recovery',
  summary: 'Recover a planted permutation of randomly initialised MLPs and VGGs (weight matching vs Sinkhorn-L2).',
  usage: 'rebasin experiment recovery [--models mlp2,vgg11,...] [--methods wm,sinkhorn-l2] [--seeds N] [--out DIR]',
  options: {
    models: { type: 'list', help: 'models: mlpN (N hidden layers) or vgg11/13/16/19', default: [...RECOVERY_MODELS] },
    methods: { type: 'list', help: 'methods to compare', choices: RECOVERY_METHODS, default: [...RECOVERY_DEFAULT_METHODS] },
    seeds: { type: 'int', help: 'number of seeds (model init and planted permutation)', default: 3 },
    out: { type: 'string', help: 'output directory', default: './rebasin-out/recovery' },
    'mlp-width': { type: 'int', help: 'hidden width of the MLPs (784 inputs, 10 outputs)', default: 512 },
    'vgg-width': { type: 'number', help: 'width multiplier of the VGGs (1 = 64…512 channels)', default: 1 },
    tau: { type: 'number', help: 'Sinkhorn temperature τ', default: WEIGHT_COST_DEFAULTS.tau },
    lr: { type: 'number', help: 'AdamW learning rate on the Sinkhorn matrices', default: WEIGHT_COST_DEFAULTS.lr },
    steps: { type: 'int', help: 'maximum Sinkhorn steps (stops at hard cost 0)', default: WEIGHT_COST_DEFAULTS.steps },
    quiet: { type: 'boolean', help: 'no progress bar' },
    json: { type: 'boolean', help: 'print the rows as JSON on stdout' },
  },
};

export async function experimentRecovery(args: Parsed): Promise<number> {
  const o = args.options;
  for (const m of o.models as string[]) {
    if (!/^mlp\d+$/.test(m) && !/^vgg(11|13|16|19)$/.test(m)) throw new UsageError(`experiment recovery: --models: unknown model "${m}" (mlpN or vgg11/13/16/19)`);
  }
  if ((o.seeds as number) < 1) throw new UsageError(`experiment recovery: --seeds must be ≥ 1`);
  if (!((o.tau as number) > 0)) throw new UsageError(`experiment recovery: --tau must be > 0`);
  if ((o.steps as number) < 1) throw new UsageError(`experiment recovery: --steps must be ≥ 1`);
  if (!((o['vgg-width'] as number) > 0) || (o['mlp-width'] as number) < 2) throw new UsageError('experiment recovery: widths must be positive');
  const report = runRecovery({
    models: o.models as string[],
    methods: o.methods as MethodName[],
    seeds: o.seeds as number,
    outDir: resolve(o.out as string),
    mlpWidth: o['mlp-width'] as number,
    vggWidth: o['vgg-width'] as number,
    tau: o.tau as number,
    lr: o.lr as number,
    steps: o.steps as number,
    quiet: Boolean(o.quiet),
  });
  if (o.json) process.stdout.write(JSON.stringify(report.rows) + '\n');
  else process.stdout.write(`wrote ${report.files.join(', ')}\n`);
  return 0;
}
