/**
 * `rebasin train`: trains one model and writes it as a rebasin checkpoint (safetensors with
 * PyTorch names). Defaults reproduce the reference's MNIST LMC setup (method.md §2.7): MLP
 * 784-512-512-10, first 10k MNIST train images split 9000/1000 with seed 1, batch 1000, AdamW
 * lr 1e-3, 50 epochs.
 */
import { resolve } from 'node:path';
import { currentBackend } from '../core/index.js';
import { loadFashionMnist, loadMnist } from '../data/mnist.js';
import { makeBlobs } from '../data/synthetic.js';
import { polynomialTask } from '../data/polynomial.js';
import { loadLicenseText } from '../data/text.js';
import { splitTrainVal, type Dataset } from '../data/dataset.js';
import { InputError } from '../errors.js';
import { saveCheckpoint } from '../io/checkpoint.js';
import { checkOutputs } from '../io/files.js';
import { createModel, MODEL_PRESETS, modelPreset, type Model, type ModelConfig, type ModelPreset } from '../models/index.js';
import { evaluate } from '../training/evaluate.js';
import type { Criterion } from '../models/loss.js';
import { trainModel } from '../training/train.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';
import { modelDefinition } from './model-files.js';
import { trainingProgress } from '../report/progress.js';

const DATASETS = ['mnist', 'fashion-mnist', 'text', 'blobs', 'poly1', 'poly2', 'poly3'] as const;
type DatasetName = (typeof DATASETS)[number];

/** Presets' names joined, e.g. "mlp" or "vgg-small/vgg11/resnet20". */
const names = (presets: readonly ModelPreset[], sep: string) => presets.map((p) => p.name).join(sep);

/** --width's meaning per group of presets that share it, e.g. "the channel multiplier of vgg-small/vgg11/resnet20 (default 1)". */
function widthHelp(): string {
  const groups = new Map<string, ModelPreset[]>();
  for (const p of MODEL_PRESETS) {
    const w = p.width;
    const key = `the ${w.meaning} of %s (default ${w.default}${w.vectorDefault !== undefined ? `; ${w.vectorDefault} for blobs/poly` : ''})`;
    groups.set(key, [...(groups.get(key) ?? []), p]);
  }
  return [...groups].map(([key, ps]) => key.replace('%s', names(ps, '/'))).join(', or ');
}

const lrHelp = () => `learning rate (default 1e-3; 1e-2 for poly${MODEL_PRESETS.filter((p) => p.lr !== undefined).map((p) => `; ${p.lr!.toExponential()} for ${p.name}`).join('')})`;

export const trainSpec: CommandSpec = {
  name: 'train',
  summary: `Train a model (${MODEL_PRESETS.map((p) => p.title).join(', ')}) and save it as a safetensors checkpoint.`,
  usage: 'rebasin train [--model mlp] [--dataset mnist] [--epochs N] [--seed N] ... -o model.safetensors',
  options: {
    model: { type: 'string', help: 'architecture', choices: MODEL_PRESETS.map((p) => p.name), default: MODEL_PRESETS[0].name },
    onnx: { type: 'string', help: 'train this ONNX model\'s architecture instead of --model (PyTorch default init from --seed; export with BatchNorm kept to train it)' },
    'input-shape': { type: 'list', help: 'per-sample input shape for an --onnx model whose input dims are dynamic' },
    dataset: { type: 'string', help: 'training data (text: Debian\'s licence texts as 64-character windows, next-character labels, for --model gpt; blobs: 4 Gaussian classes in 8-D; polyK: the reference\'s polynomial regression task K)', choices: DATASETS, default: 'mnist' },
    width: { type: 'number', help: widthHelp() },
    'hidden-layers': { type: 'int', help: 'MLP hidden layers; transformer blocks of gpt/vit', default: 2 },
    activation: { type: 'string', help: 'MLP activation', choices: ['relu', 'tanh'], default: 'relu' },
    dropout: { type: 'number', help: 'MLP dropout after each hidden activation (the reference\'s model B uses 0.25)', default: 0 },
    epochs: { type: 'int', help: `epochs (default 50; 500 for poly${MODEL_PRESETS.filter((p) => p.epochs !== undefined).map((p) => `; ${p.epochs} for ${p.name}`).join('')})` },
    'batch-size': { type: 'int', help: `mini-batch size (default 1000; 10 for poly${MODEL_PRESETS.filter((p) => p.batchSize !== undefined).map((p) => `; ${p.batchSize} for ${p.name}`).join('')})` },
    optimizer: { type: 'string', help: 'optimiser', choices: ['adamw', 'sgd'], default: 'adamw' },
    lr: { type: 'number', help: lrHelp() },
    'weight-decay': { type: 'number', help: 'AdamW decoupled weight decay (default 0.01) or SGD L2 penalty (default 0)' },
    momentum: { type: 'number', help: 'SGD momentum', default: 0 },
    seed: { type: 'int', help: 'seed of the initialisation, shuffling and dropout', default: 0 },
    limit: { type: 'int', help: 'samples to use (default 10000 first MNIST images; every text window; 2000 blobs; 100 poly points)' },
    val: { type: 'int', help: 'samples held out for validation (default 1000; 200 blobs; 0 poly)' },
    'split-seed': { type: 'int', help: 'seed of the train/validation split (the reference uses 1)', default: 1 },
    'data-dir': { type: 'string', help: 'folder with the (Fashion-)MNIST IDX files (default: the bundled/system copy)' },
    test: { type: 'boolean', help: 'also evaluate on the test split ((fashion-)MNIST: 10k images; text: held-out licences)' },
    out: { type: 'string', alias: 'o', help: 'checkpoint to write (.safetensors)' },
    json: { type: 'boolean', help: 'print the result as one JSON object on stdout' },
    quiet: { type: 'boolean', help: 'no progress bar' },
  },
};

interface Resolved {
  model: ModelPreset<ModelConfig>;
  dataset: DatasetName;
  width: number;
  hiddenLayers: number;
  activation: 'relu' | 'tanh';
  dropout: number;
  epochs: number;
  batchSize: number;
  optimizer: 'adamw' | 'sgd';
  lr: number;
  weightDecay?: number;
  momentum: number;
  seed: number;
  limit: number;
  val: number;
  splitSeed: number;
  dataDir?: string;
  test: boolean;
  output: string;
}

const isPoly = (d: DatasetName) => d.startsWith('poly');
const isImage = (d: DatasetName) => d === 'mnist' || d === 'fashion-mnist';
const TEXT_LIMIT = Number.MAX_SAFE_INTEGER;

/** Fills dataset/model dependent defaults and rejects impossible combinations. */
function resolveOptions(o: Parsed['options']): Resolved {
  const model = modelPreset(o.model as string);
  const dataset = o.dataset as DatasetName;
  const poly = isPoly(dataset);
  const fail = (msg: string) => new UsageError(`train: ${msg}`);
  if (typeof o.out !== 'string' || o.out === '') throw fail('-o/--out <file.safetensors> is required');
  if (model.imagesOnly && !isImage(dataset)) {
    throw fail(`--model ${model.name} needs image data (mnist or fashion-mnist); ${dataset} is vector data, use --model ${names(MODEL_PRESETS.filter((p) => !p.imagesOnly), ' or ')}`);
  }
  if (Boolean(model.textOnly) !== (dataset === 'text')) {
    throw fail(model.textOnly ? `--model ${model.name} reads token ids: use --dataset text` : `--dataset text is token ids for --model ${names(MODEL_PRESETS.filter((p) => p.textOnly), ' or ')}, not --model ${model.name}`);
  }
  if (!model.dropout && (o.dropout as number) !== 0) throw fail(`--dropout applies to --model ${names(MODEL_PRESETS.filter((p) => p.dropout), ' or ')} only`);
  const r: Resolved = {
    model,
    dataset,
    width: (o.width as number | undefined) ?? (isImage(dataset) ? model.width.default : model.width.vectorDefault ?? model.width.default),
    hiddenLayers: o['hidden-layers'] as number,
    activation: o.activation as 'relu' | 'tanh',
    dropout: o.dropout as number,
    epochs: (o.epochs as number | undefined) ?? model.epochs ?? (poly ? 500 : 50),
    batchSize: (o['batch-size'] as number | undefined) ?? model.batchSize ?? (poly ? 10 : 1000),
    optimizer: o.optimizer as 'adamw' | 'sgd',
    lr: (o.lr as number | undefined) ?? model.lr ?? (poly ? 1e-2 : 1e-3),
    weightDecay: o['weight-decay'] as number | undefined,
    momentum: o.momentum as number,
    seed: o.seed as number,
    limit: (o.limit as number | undefined) ?? (poly ? 100 : dataset === 'blobs' ? 2000 : dataset === 'text' ? TEXT_LIMIT : 10000),
    val: (o.val as number | undefined) ?? (poly ? 0 : dataset === 'blobs' ? 200 : 1000),
    splitSeed: o['split-seed'] as number,
    dataDir: o['data-dir'] as string | undefined,
    test: Boolean(o.test),
    output: resolve(o.out),
  };
  if (!(r.width > 0)) throw fail(`--width must be positive, got ${r.width}`);
  if (model.width.integer && !Number.isInteger(r.width)) throw fail(`--width of --model ${model.name} (its ${model.width.meaning}) is a whole number, got ${r.width}`);
  if (r.hiddenLayers < 0) throw fail(`--hidden-layers must be ≥ 0, got ${r.hiddenLayers}`);
  if (!(r.dropout >= 0 && r.dropout < 1)) throw fail(`--dropout must be in [0, 1), got ${r.dropout}`);
  if (r.epochs < 1) throw fail(`--epochs must be ≥ 1, got ${r.epochs}`);
  if (r.batchSize < 1) throw fail(`--batch-size must be ≥ 1, got ${r.batchSize}`);
  if (!(r.lr > 0)) throw fail(`--lr must be > 0, got ${r.lr}`);
  if (r.weightDecay !== undefined && !(r.weightDecay >= 0)) throw fail(`--weight-decay must be ≥ 0, got ${r.weightDecay}`);
  if (!(r.momentum >= 0 && r.momentum < 1)) throw fail(`--momentum must be in [0, 1), got ${r.momentum}`);
  if (r.optimizer !== 'sgd' && o.momentum !== 0) throw fail('--momentum applies to --optimizer sgd only');
  if (r.limit < 2) throw fail(`--limit must be ≥ 2, got ${r.limit}`);
  if (r.val < 0 || r.val >= r.limit) throw fail(`--val must be in [0, ${r.limit - 1}] (fewer than --limit ${r.limit}), got ${r.val}`);
  if (r.test && !isImage(dataset) && dataset !== 'text') throw fail('--test needs (fashion-)mnist or text');
  if (r.dataDir !== undefined && !isImage(dataset)) throw fail('--data-dir applies to (fashion-)mnist only');
  return r;
}

/** Zero-pads h×w images (h, w ≤ size) to size×size, centred (e.g. 28×28 MNIST to 32×32 for VGG11, as LeNet did). */
function padImages(ds: Dataset, size: number): Dataset {
  const [c, h, w] = ds.sampleShape;
  const x = new Float32Array(ds.n * c * size * size);
  const oy = (size - h) >> 1;
  const ox = (size - w) >> 1;
  for (let i = 0; i < ds.n * c; i++) {
    for (let r = 0; r < h; r++) x.set(ds.x.subarray((i * h + r) * w, (i * h + r + 1) * w), i * size * size + (r + oy) * size + ox);
  }
  return { ...ds, name: `${ds.name}-pad${size}`, x, sampleShape: [c, size, size] };
}

function loadData(r: Resolved): { all: Dataset; test?: Dataset; criterion: Criterion } {
  try {
    if (isImage(r.dataset)) {
      const load = r.dataset === 'mnist' ? loadMnist : loadFashionMnist;
      let all = load('train', { dataDir: r.dataDir, limit: r.limit });
      let test = r.test ? load('test', { dataDir: r.dataDir }) : undefined;
      if (all.n < r.limit) throw new InputError(`train: --limit ${r.limit} but ${r.dataset} has only ${all.n} training images`);
      const pad = r.model.padImagesTo;
      if (pad !== undefined) {
        all = padImages(all, pad);
        if (test) test = padImages(test, pad);
      }
      return { all, test, criterion: 'ce' };
    }
    if (r.dataset === 'text') {
      const all = loadLicenseText('train', { limit: r.limit });
      if (r.val >= all.n) throw new InputError(`train: --val ${r.val} but the text has only ${all.n} training windows`);
      return { all, test: r.test ? loadLicenseText('test') : undefined, criterion: 'ce' };
    }
    if (r.dataset === 'blobs') return { all: makeBlobs({ n: r.limit, dim: 8, classes: 4, seed: 0 }), criterion: 'ce' };
    const task = Number(r.dataset.slice(4)) as 1 | 2 | 3;
    return { all: polynomialTask(task, { n: r.limit, seed: 0 }), criterion: 'mse' };
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError((e as Error).message);
  }
}

const pct = (a: number | undefined) => (a === undefined ? '' : `  acc ${(100 * a).toFixed(2)}%`);

export async function train(args: Parsed): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError(`train: unexpected argument "${args.positionals[0]}"`);
  const r = resolveOptions(args.options);
  // The output policy before the training: a directory, device or unwritable folder is refused now.
  await checkOutputs([{ path: r.output, option: '-o' }], []);
  const quiet = Boolean(args.options.quiet);
  const { all, test, criterion } = loadData(r);
  const split = r.val > 0 ? splitTrainVal(all, r.val, r.splitSeed) : null;
  const trainData = split ? split.train : all;
  const valData = split?.val;
  const outputs = criterion === 'ce' ? (all.numClasses ?? 10) : all.y.length / all.n;
  let model: Model;
  if (args.options.onnx) {
    const def = await modelDefinition(args.options, { path: args.options.onnx as string, state: new Map(), metadata: {} });
    if (!def?.model) throw new InputError(`train: ${def?.unrunnable ?? 'the --onnx model cannot run'}`);
    model = def.model;
  } else {
    try {
      model = createModel(r.model.config({
        sampleShape: all.sampleShape, outputs, width: r.width, hiddenLayers: r.hiddenLayers, activation: r.activation, dropout: r.dropout,
      }));
    } catch (e) {
      throw new UsageError(`train: cannot build --model ${r.model.name} for ${r.dataset}: ${(e as Error).message}`);
    }
  }
  const t0 = performance.now();
  const bar = trainingProgress(`train ${model.name}`, { quiet });
  const result = trainModel({
    model, data: trainData, val: valData, epochs: r.epochs, batchSize: r.batchSize, optimizer: r.optimizer, lr: r.lr,
    weightDecay: r.weightDecay, momentum: r.momentum, seed: r.seed, criterion, onBatch: bar.onBatch,
  });
  bar.finish(result.history);
  const seconds = (performance.now() - t0) / 1000;
  const state = { params: result.params, buffers: result.buffers };
  const evalOpts = { batchSize: Math.max(r.batchSize, 1000), criterion };
  const trainEval = evaluate(model, state, trainData, evalOpts);
  const valEval = valData ? evaluate(model, state, valData, evalOpts) : undefined;
  const testEval = test ? evaluate(model, state, test, evalOpts) : undefined;
  const training = {
    dataset: r.dataset, samples: r.limit, val: r.val, splitSeed: r.splitSeed, epochs: r.epochs, batchSize: r.batchSize,
    optimizer: r.optimizer, lr: r.lr, weightDecay: r.weightDecay ?? (r.optimizer === 'adamw' ? 0.01 : 0),
    ...(r.optimizer === 'sgd' ? { momentum: r.momentum } : {}), seed: r.seed, criterion,
  };
  const summary = {
    train: { loss: trainEval.loss, accuracy: trainEval.accuracy },
    ...(valEval ? { val: { loss: valEval.loss, accuracy: valEval.accuracy } } : {}),
    ...(testEval ? { test: { loss: testEval.loss, accuracy: testEval.accuracy } } : {}),
  };
  await saveCheckpoint(r.output, model, state, { training, results: summary, history: result.history });
  if (args.options.json) {
    process.stdout.write(JSON.stringify({
      output: r.output, model: model.name, config: model.config, ...training, nTrain: trainData.n, nVal: valData?.n ?? 0,
      seconds, backend: currentBackend().name, ...summary,
    }) + '\n');
  } else {
    const lines = [
      `trained ${model.name} on ${r.dataset} (${trainData.n} train / ${valData?.n ?? 0} val) for ${r.epochs} epochs in ${seconds.toFixed(1)} s (${currentBackend().name} backend)`,
      `  train  loss ${trainEval.loss.toFixed(4)}${pct(trainEval.accuracy)}`,
      ...(valEval ? [`  val    loss ${valEval.loss.toFixed(4)}${pct(valEval.accuracy)}`] : []),
      ...(testEval ? [`  test   loss ${testEval.loss.toFixed(4)}${pct(testEval.accuracy)}`] : []),
      `wrote ${r.output}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  }
  return 0;
}
