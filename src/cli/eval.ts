/**
 * `rebasin eval`: loss and accuracy of checkpoints on a data set, and optionally of their output
 * ensemble (the average of their softmax probabilities; see evaluateEnsemble). Every check on the
 * models and the data runs before anything is evaluated or printed.
 */
import { resolve } from 'node:path';
import type { SplitName } from '../data/index.js';
import { InputError } from '../errors.js';
import { checkStateAgainstModel } from '../io/checkpoint.js';
import type { Model } from '../models/model.js';
import { markdownTable } from '../report/markdown.js';
import { Progress } from '../report/progress.js';
import { splitState, type Params } from '../state/params.js';
import type { Criterion } from '../models/loss.js';
import { hasBatchNorm } from '../training/common.js';
import { evaluate, evaluateEnsemble, reestimateBatchNorm, type EnsembleMember, type EvalResult } from '../training/evaluate.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';
import { checkFits, isNamedDataset, MODEL_DEFINITION_OPTIONS, NAMED_DATASETS, readDataset, readModels } from './model-files.js';

const DATA_NAMES = Object.keys(NAMED_DATASETS);
export const SPLITS: readonly SplitName[] = ['train', 'test'];
export const DEFAULT_SPLIT: SplitName = 'test';
export const BN_MODES = ['keep', 'reestimate'] as const;
export type BnChoice = (typeof BN_MODES)[number];

export const evalSpec: CommandSpec = {
  name: 'eval',
  summary: 'Loss and accuracy of each model on a data set; --ensemble adds the ensemble of their outputs (average of probabilities).',
  usage: `rebasin eval M1.safetensors [M2 ...] --data ${DATA_NAMES.join('|')}|x.npz [--split train|test] [--ensemble] [--bn keep|reestimate] [--json]`,
  positionals: ['M1', '...'],
  options: {
    data: { type: 'string', help: `${DATA_NAMES.join(', ')} or an .npz with arrays x [N, ...] and y [N] (class labels) or [N, k] (regression targets)` },
    split: { type: 'string', help: `split of ${DATA_NAMES.join('/')} to evaluate on (default ${DEFAULT_SPLIT}; an .npz is evaluated whole)`, choices: SPLITS },
    ensemble: { type: 'boolean', help: 'also evaluate the ensemble of all models: softmax probabilities averaged (outputs averaged for regression); the models must share one architecture' },
    bn: { type: 'string', help: 'BatchNorm statistics: keep the stored ones, or re-estimate them on the training split (on the .npz itself for an .npz)', choices: BN_MODES, default: 'keep' },
    ...MODEL_DEFINITION_OPTIONS,
    'data-dir': { type: 'string', help: 'folder with the MNIST/Fashion-MNIST IDX files' },
    'data-limit': { type: 'int', help: 'use only the first N samples (of the evaluated split, and of the training split for --bn reestimate)' },
    'batch-size': { type: 'int', help: 'evaluation batch size (results do not depend on it)', default: 1000 },
    quiet: { type: 'boolean', help: 'no progress output' },
    json: { type: 'boolean', help: 'print one JSON object on stdout' },
  },
};

interface Evaluated {
  arg: string;
  path: string;
  model: Model;
  params: Params;
  buffers: Params;
  bn: 'stored' | 'reestimated' | 'none';
}

export async function evalModels(args: Parsed): Promise<number> {
  const o = args.options;
  const paths = args.positionals;
  if (paths.length < 1) throw new UsageError('eval: expects at least one model file');
  if (!o.data) throw new UsageError(`eval: --data is required (${DATA_NAMES.join(', ')} or an .npz with arrays x and y)`);
  for (const k of ['data-limit', 'batch-size']) {
    if (o[k] !== undefined && !((o[k] as number) >= 1)) throw new UsageError(`eval: --${k} must be ≥ 1`);
  }
  const dataSpec = o.data as string;
  const named = isNamedDataset(dataSpec);
  if (!named && o.split !== undefined) throw new UsageError(`eval: --split applies to ${DATA_NAMES.join(' and ')}; ${dataSpec} is evaluated whole`);
  const split = (o.split as SplitName | undefined) ?? DEFAULT_SPLIT;
  const bnChoice = o.bn as BnChoice;
  const batchSize = o['batch-size'] as number;

  const { files: read, definition } = await readModels(paths.map((p) => resolve(p)), o);
  if (definition?.unrunnable) throw new InputError(`eval: ${definition.unrunnable}`);
  const files = read.map((f, i) => {
    const arg = paths[i];
    if (!f.model) throw new UsageError(`eval: ${arg} holds plain weights without a model definition: pass --model-config or --onnx (or use rebasin checkpoints)`);
    // A checkpoint was checked against its model when loaded; plain weights are checked here.
    if (definition) checkStateAgainstModel(f.path, f.model, f.state.keys(), (n) => f.state.get(n)?.shape);
    return { arg, path: f.path, model: f.model, state: f.state };
  });
  if (o.ensemble) {
    const first = files[0];
    for (const f of files.slice(1)) {
      if (f.model.name !== first.model.name) throw new InputError(`--ensemble needs models of one architecture: ${first.arg} is ${first.model.name} but ${f.arg} is ${f.model.name}`);
    }
  }
  if (bnChoice === 'reestimate' && !files.some((f) => hasBatchNorm(f.model))) {
    throw new UsageError('eval: --bn reestimate: none of the models has BatchNorm');
  }

  const readOpts = { dataDir: o['data-dir'] as string | undefined, limit: o['data-limit'] as number | undefined, model: files[0].model };
  const data = await readDataset(dataSpec, named ? { ...readOpts, split } : readOpts);
  const dataName = named ? `${dataSpec} ${split}` : dataSpec;
  const criterion: Criterion = data.y instanceof Int32Array ? 'ce' : 'mse';
  for (const f of files) checkFits(dataSpec, named, data, criterion, f.arg, f.model);
  const needsTrain = bnChoice === 'reestimate' && files.some((f) => hasBatchNorm(f.model));
  const bnData = !needsTrain ? undefined : named && split !== 'train' ? await readDataset(dataSpec, { ...readOpts, split: 'train' }) : data;

  const progress = new Progress({ label: 'eval', total: files.length + (o.ensemble ? 1 : 0), quiet: Boolean(o.quiet || o.json) });
  const evaluated: Evaluated[] = [];
  const rows: { arg: string; path: string; model: string; bn: Evaluated['bn']; result: EvalResult }[] = [];
  for (const f of files) {
    const { params, buffers: stored } = splitState(f.state);
    const bn = !hasBatchNorm(f.model) ? 'none' : bnChoice === 'reestimate' ? 'reestimated' : 'stored';
    const buffers = bn === 'reestimated' ? reestimateBatchNorm(f.model, params, bnData!, { batchSize }) : stored;
    const result = evaluate(f.model, { params, buffers }, data, { batchSize, criterion });
    evaluated.push({ arg: f.arg, path: f.path, model: f.model, params, buffers, bn });
    rows.push({ arg: f.arg, path: f.path, model: f.model.name, bn, result });
    progress.tick(1, f.arg);
  }
  let ensemble: EvalResult | null = null;
  if (o.ensemble) {
    const members: EnsembleMember[] = evaluated.map((e) => ({ model: e.model, params: e.params, buffers: e.buffers }));
    ensemble = evaluateEnsemble(members, data, { batchSize, criterion });
    progress.tick(1, 'ensemble');
  }
  progress.finish();

  if (o.json) {
    process.stdout.write(JSON.stringify({
      data: { name: dataSpec, split: named ? split : null, n: data.n },
      criterion,
      bn: bnChoice,
      models: rows.map((r) => ({ path: r.path, model: r.model, bn: r.bn, loss: r.result.loss, accuracy: r.result.accuracy ?? null })),
      ensemble: ensemble ? { models: rows.length, combine: criterion === 'ce' ? 'mean-probabilities' : 'mean-outputs', loss: ensemble.loss, accuracy: ensemble.accuracy ?? null } : null,
    }) + '\n');
    return 0;
  }
  const showBn = evaluated.some((e) => e.bn !== 'none');
  const header = ['model', 'architecture', criterion === 'ce' ? 'loss (cross-entropy)' : 'loss (MSE)', ...(criterion === 'ce' ? ['accuracy'] : []), ...(showBn ? ['BN statistics'] : [])];
  const cells = (name: string, arch: string, r: EvalResult, bn: string) => [
    name, arch, r.loss.toPrecision(5), ...(criterion === 'ce' ? [`${(100 * r.accuracy!).toFixed(2)}%`] : []), ...(showBn ? [bn] : []),
  ];
  const table = rows.map((r) => cells(r.arg, r.model, r.result, r.bn));
  if (ensemble) {
    table.push(cells(`ensemble of ${rows.length}`, criterion === 'ce' ? 'mean of probabilities' : 'mean of outputs', ensemble, showBn ? 'per model' : ''));
  }
  process.stdout.write(`${dataName}: ${data.n} samples\n\n${markdownTable(header, table)}`);
  return 0;
}

