/**
 * Loading what the checkpoint commands work on: model files (rebasin checkpoints, plain
 * safetensors/npz), the model definition when one is known, the permutation spec, and data sets
 * for the data-driven methods. Every failure is an InputError naming the file or option.
 */
import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { Rng } from '../core/random.js';
import { Tensor } from '../core/tensor.js';
import { loadFashionMnist, loadMnist, sampleSize, targetSize, type Dataset, type SplitName } from '../data/index.js';
import type { Criterion } from '../models/loss.js';
import { InputError } from '../errors.js';
import { ensureDirSync, type OutputBatch } from '../io/atomic.js';
import { CHECKPOINT_FORMAT, loadCheckpoint, stateToRecords } from '../io/checkpoint.js';
import { isErrno, readTextSync, unreadable } from '../io/files.js';
import { loadSpecFile, loadTensors } from '../io/load-any.js';
import { readNpz } from '../io/npy.js';
import { readOnnx, type Dim, type OnnxModel } from '../io/onnx.js';
import { importOnnx } from '../io/onnx-import.js';
import { firstNonFinite } from '../io/records.js';
import { writeSafetensors } from '../io/safetensors.js';
import type { Model, ModelConfig } from '../models/model.js';
import { createModel } from '../models/registry.js';
import { isBatchCounter, splitState, type Params } from '../state/params.js';
import { checkEquivalence } from '../permutation/equivalence.js';
import type { PermutationSpec } from '../permutation/spec.js';

export interface ModelFile {
  path: string;
  /** All tensors (weights and BN statistics), by name. */
  state: Params;
  /** Known when the file is a rebasin checkpoint or a config was given. */
  model?: Model;
  metadata: Record<string, string>;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Reads a rebasin checkpoint (model definition included) or plain weights: safetensors, .npz,
 * .npy, a TF.js model.json (converted to PyTorch names and layouts) or ONNX initializers.
 */
export async function readModelFile(path: string, config?: ModelConfig): Promise<ModelFile> {
  if (!existsSync(path)) throw new InputError(`${path}: no such file`);
  const loaded = await loadTensors(path);
  if (loaded.format === 'safetensors' && loaded.metadata.format === CHECKPOINT_FORMAT && !config) {
    const ck = await loadCheckpoint(path);
    return { path, state: new Map([...ck.params, ...ck.buffers]), model: ck.model, metadata: loaded.metadata };
  }
  dropBatchCounters(loaded.tensors);
  return { path, state: loaded.tensors, model: config ? modelFor(config, path) : undefined, metadata: loaded.format === 'safetensors' ? loaded.metadata : {} };
}

function dropBatchCounters(state: Params): void {
  for (const k of [...state.keys()]) if (isBatchCounter(k)) state.delete(k);
}

function modelFor(config: ModelConfig, source: string): Model {
  try {
    return createModel(config);
  } catch (e) {
    throw new InputError(`${source}: the model config does not describe a model: ${describe(e)}`);
  }
}

/** The options of every command that reads models, for the model definition of plain weights. */
export const MODEL_DEFINITION_OPTIONS = {
  'model-config': { type: 'string', help: 'model definition as JSON or a JSON file, e.g. {"arch":"mlp","sizes":[784,512,10]} (enables the functional check and data-driven methods for plain weights)' },
  onnx: { type: 'string', help: 'the model as ONNX (e.g. torch.onnx.export, BatchNorm folded or kept) for plain PyTorch weights: it runs for the functional check, --data and the data-driven methods, and gives the spec' },
  'input-shape': { type: 'list', help: 'per-sample input shape for an --onnx model whose input dims are dynamic, e.g. 3,224,224' },
} as const;

/** What the model-definition options say about weights whose names and values are `first`'s. */
export interface ModelDefinition {
  /** The runnable model, when there is one. */
  model?: Model;
  /** The spec an imported model gives (also when it cannot run). */
  spec?: PermutationSpec;
  /** Why an imported model cannot run (the functional check is then structural). */
  unrunnable?: string;
}

/**
 * The model definition from --model-config or --onnx (imported with `first`'s tensors, which
 * decide PyTorch names and undo BatchNorm folding); undefined when neither is given.
 */
export async function modelDefinition(o: { 'model-config'?: unknown; onnx?: unknown; 'input-shape'?: unknown }, first: ModelFile): Promise<ModelDefinition | undefined> {
  if (o['model-config'] && o.onnx) throw new InputError('--model-config and --onnx both define the model: give one');
  if (o['input-shape'] && !o.onnx) throw new InputError('--input-shape applies to --onnx');
  if (o['model-config']) return { model: modelFor(parseModelConfig(o['model-config'] as string), o['model-config'] as string) };
  if (!o.onnx) return undefined;
  const path = o.onnx as string;
  const onnx = await readOnnx(path);
  let inputShapes: Record<string, Dim[]> | undefined;
  if (o['input-shape']) {
    const dims = (o['input-shape'] as string[]).map(Number);
    if (dims.some((d) => !(Number.isInteger(d) && d >= 1))) throw new InputError(`--input-shape: expected positive integers, got ${(o['input-shape'] as string[]).join(',')}`);
    if (!onnx.inputs[0]) throw new InputError(`${path}: the model has no input`);
    inputShapes = { [onnx.inputs[0].name]: [null, ...dims] };
  }
  return onnxDefinition(onnx, { path, name: basename(path) }, first, inputShapes);
}

/**
 * The model definition a parsed ONNX model gives weights `first` (imported with its tensors, which
 * decide PyTorch names and undo BatchNorm folding). No file access: the browser page calls it on
 * the bytes it was given, with the messages `--onnx` gives.
 */
export function onnxDefinition(onnx: OnnxModel, source: { path: string; name: string }, first: Pick<ModelFile, 'path' | 'state'>, inputShapes?: Record<string, Dim[]>): ModelDefinition {
  const { path } = source;
  const imported = importOnnx(onnx, { checkpoint: first.state, inputShapes });
  const notFound = imported.nameMap.find((m) => m.via === 'unmapped' && imported.flow.spec.axes[m.initializer] !== undefined && first.state.size > 0);
  if (notFound && /^onnx::Conv/.test(notFound.initializer)) {
    throw new InputError(`${path}: conv weight "${notFound.initializer}" is a BatchNorm folded into the conv by an eval-mode export, and no conv + BatchNorm of ${first.path} reproduces it; export with torch.onnx.export(..., training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False) to keep BatchNorm`);
  }
  const spec = imported.flow.spec;
  if (imported.opaque.length) {
    const o0 = imported.opaque[0];
    return { spec, unrunnable: `${path}: node "${o0.node}" (${o0.opType}) cannot run: ${o0.reason}${imported.opaque.length > 1 ? ` (and ${imported.opaque.length - 1} more)` : ''}` };
  }
  return { model: modelFor({ arch: 'graph', name: source.name, graph: imported.graph }, path), spec };
}

/**
 * Reads the model files of a command and the model definition its options give: each file gets
 * the model (a rebasin checkpoint keeps its own unless an option overrides it).
 */
export async function readModels(paths: string[], o: Parameters<typeof modelDefinition>[0]): Promise<{ files: ModelFile[]; definition?: ModelDefinition }> {
  const files = await Promise.all(paths.map((p) => readModelFile(p)));
  const definition = files.length ? await modelDefinition(o, files[0]) : undefined;
  if (definition) for (const f of files) f.model = definition.model;
  return { files, definition };
}

/** A model config from inline JSON or a JSON file (e.g. {"arch": "mlp", "sizes": [784, 512, 10]}). */
export function parseModelConfig(value: string): ModelConfig {
  const text = value.trim().startsWith('{') ? value : (() => {
    if (!existsSync(value)) throw new InputError(`--model-config: ${value} is neither JSON nor an existing file`);
    return readTextSync(value, { what: '--model-config' });
  })();
  try {
    return JSON.parse(text) as ModelConfig;
  } catch (e) {
    throw new InputError(`--model-config: invalid JSON (${describe(e)})`);
  }
}

/** The spec from --spec, else the one derived from a known model definition. */
export async function resolveSpec(specPath: string | undefined, model: Model | undefined, what: string, derived?: PermutationSpec): Promise<PermutationSpec> {
  if (specPath) return loadSpecFile(specPath);
  if (derived) return derived;
  if (model) return model.permutationSpec();
  throw new InputError(`${what}: no permutation spec: pass --spec spec.json (see \`rebasin spec infer\`), or use rebasin checkpoints / --model-config so the spec can be derived`);
}

/** Data sets `--data` knows by name (with a train and a test split); anything else must be an .npz. */
export const NAMED_DATASETS = { mnist: loadMnist, 'fashion-mnist': loadFashionMnist } as const;

export function isNamedDataset(spec: string): spec is keyof typeof NAMED_DATASETS {
  return Object.hasOwn(NAMED_DATASETS, spec);
}

/**
 * A data set by name (mnist, fashion-mnist) or an .npz with arrays `x` [N, ...] and `y` [N]
 * (integer class labels) or [N, k] (regression targets). `split` picks the named sets' split
 * (default 'train'); an .npz is one set.
 */
export async function readDataset(spec: string, opts: { dataDir?: string; limit?: number; model?: Model; split?: SplitName }): Promise<Dataset> {
  const layout = opts.model && opts.model.inputShape.length === 1 ? 'flat' : 'chw';
  const split = opts.split ?? 'train';
  if (isNamedDataset(spec)) return NAMED_DATASETS[spec](split, { limit: opts.limit, layout, dataDir: opts.dataDir });
  if (!spec.endsWith('.npz')) throw new InputError(`--data: expected ${Object.keys(NAMED_DATASETS).join(', ')} or an .npz file with arrays x and y, got "${spec}"`);
  let arrays: Awaited<ReturnType<typeof readNpz>>;
  try {
    arrays = await readNpz(spec);
  } catch (e) {
    throw isErrno(e) ? unreadable(spec, e) : e;
  }
  const x = arrays.get('x');
  const y = arrays.get('y');
  if (!x || !y) throw new InputError(`${spec}: needs arrays "x" and "y" (has ${[...arrays.keys()].join(', ') || 'none'})`);
  const n = x.shape[0];
  if (y.shape[0] !== n) throw new InputError(`${spec}: x has ${n} samples but y has ${y.shape[0]}`);
  const limit = Math.min(n, opts.limit ?? n);
  const d = x.data.length / Math.max(n, 1);
  // NaN/Inf in the data would turn every method's statistics and losses into NaN, silently.
  for (const [name, arr, count] of [['x', x, limit * d], ['y', y, limit * (y.data.length / Math.max(n, 1))]] as const) {
    const bad = firstNonFinite(arr.data, 0, count);
    if (bad >= 0) throw new InputError(`${spec}: array "${name}" has ${arr.data[bad]} at index ${bad}; data must be finite`);
  }
  const classes = y.shape.length === 1 && y.data.every((v) => Number.isInteger(v) && v >= 0);
  const data: Dataset = {
    name: spec,
    x: x.data.subarray(0, limit * d),
    sampleShape: x.shape.slice(1),
    y: classes ? Int32Array.from(y.data.subarray(0, limit)) : y.data.subarray(0, limit * (y.data.length / n)),
    n: limit,
    // A loop, not Math.max(...y): spreading a large set overflows the call stack.
    ...(classes ? { numClasses: y.data.subarray(0, limit).reduce((m, v) => Math.max(m, v), 0) + 1 } : {}),
  };
  return data;
}

/** InputError unless the data's samples fit `model`'s input and its labels/targets its outputs. */
/** readDataset for the data a method fits on, checked against the model it feeds. */
export async function readFitData(spec: string, opts: { dataDir?: string; limit?: number; model: Model; split?: SplitName }): Promise<Dataset> {
  const data = await readDataset(spec, opts);
  checkFits(spec, isNamedDataset(spec), data, data.y instanceof Int32Array ? 'ce' : 'mse', 'the model', opts.model);
  return data;
}

export function checkFits(dataSpec: string, named: boolean, data: Dataset, criterion: Criterion, arg: string, model: Model): void {
  const want = model.inputShape.reduce((a, b) => a * b, 1);
  const what = (array: string) => (named ? dataSpec : `${dataSpec}: array "${array}"`);
  if (sampleSize(data) !== want) {
    throw new InputError(`${what('x')} has samples of shape [${data.sampleShape.join(', ')}] but ${arg} (${model.name}) takes [${model.inputShape.join(', ')}]`);
  }
  if (data.n === 0) throw new InputError(`${dataSpec} has no samples`);
  if (criterion === 'ce') {
    const y = data.y as Int32Array;
    let hi = 0;
    for (let i = 0; i < data.n; i++) if (y[i] > hi) hi = y[i];
    if (hi >= model.numOutputs) throw new InputError(`${what('y')} has label ${hi} but ${arg} (${model.name}) has ${model.numOutputs} classes (labels 0…${model.numOutputs - 1})`);
  } else if (targetSize(data) !== model.numOutputs) {
    const notLabels = targetSize(data) === 1 ? ' (its values are not all integers ≥ 0, so they are not class labels)' : '';
    throw new InputError(`${what('y')} has ${targetSize(data)} target(s) per sample${notLabels} but ${arg} (${model.name}) has ${model.numOutputs} outputs`);
  }
}

export interface EquivalenceReport {
  kind: 'functional' | 'structural';
  maxAbsDiff: number;
  maxAbsOutput?: number;
  passed: boolean;
  note?: string;
}

/**
 * Does the permuted B compute the same function as B? With a model definition: both run on
 * `inputs` (or 64 seeded N(0, 1) samples) and the outputs are compared. Without one, only the
 * permutation itself can be checked: undoing it must restore B exactly.
 */
export function equivalenceCheck(model: Model | undefined, b: Params, alignedB: Params, undo: () => Params, inputs?: Tensor, unrunnable?: string): EquivalenceReport {
  if (!model) {
    const restored = undo();
    let maxAbsDiff = 0;
    for (const [name, t] of b) {
      const r = restored.get(name)!;
      for (let i = 0; i < t.size; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(r.data[i] - t.data[i]));
    }
    return { kind: 'structural', maxAbsDiff, passed: maxAbsDiff === 0, note: unrunnable ? `${unrunnable}: checked that the permutation is exactly invertible` : 'no model definition: checked that the permutation is exactly invertible; pass --model-config or --onnx for a functional check' };
  }
  const x = inputs ?? (() => {
    const rng = new Rng(12345);
    const t = new Tensor(new Float32Array(64 * model.inputShape.reduce((p, c) => p * c, 1)), [64, ...model.inputShape]);
    rng.fillNormal(t.data);
    return t;
  })();
  const sb = splitState(b);
  const sa = splitState(alignedB);
  const r = checkEquivalence(model, sb.params, sb.buffers, sa.params, sa.buffers, x, { training: false });
  const tol = 1e-4 * Math.max(1, r.maxAbsOutput);
  return { kind: 'functional', maxAbsDiff: r.maxAbsDiff, maxAbsOutput: r.maxAbsOutput, passed: r.maxAbsDiff <= tol };
}

/** Writes a state as safetensors (atomically; staged in `batch` if given), keeping the source's metadata (e.g. the model config). */
export async function writeModelFile(path: string, state: Params, metadata: Record<string, string>, extra: Record<string, string> = {}, batch?: OutputBatch): Promise<void> {
  ensureDirSync(dirname(path));
  await writeSafetensors(path, stateToRecords(state), { dtype: 'F32', metadata: { ...metadata, ...extra }, batch });
}
