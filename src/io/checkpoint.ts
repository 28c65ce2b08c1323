/**
 * Model checkpoints: safetensors (F32) with PyTorch state_dict names and layouts, so
 * `model.load_state_dict(safetensors.torch.load_file(path))` works on the PyTorch side, plus
 * metadata that lets us rebuild the architecture:
 *   {"format": "rebasin", "model": JSON.stringify(model.config), ...extra}
 * Written atomically (io/atomic.ts): a failed save leaves no partial file and no temp file.
 * BatchNorm's `num_batches_tracked` is not written (PyTorch fills it in when it is absent) and is
 * ignored when present.
 */
import { Tensor } from '../core/index.js';
import { InputError } from '../errors.js';
import { graphTensors, type TensorInfo } from '../models/graph.js';
import type { Model, ModelConfig } from '../models/model.js';
import { createModel } from '../models/registry.js';
import { isBatchCounter, splitState, type Params } from '../state/params.js';
import type { StateDict } from './records.js';
import { readSafetensors, writeSafetensors } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'rebasin';

/** Core tensors → io records. Float32 data is shared, not copied; float64 is converted. */
export function stateToRecords(state: Params): StateDict {
  const out: StateDict = new Map();
  for (const [name, t] of state) {
    const data = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
    out.set(name, { shape: [...t.shape], data });
  }
  return out;
}

/** io records → leaf tensors (float32), sharing the records' arrays. */
export function recordsToState(records: StateDict): Params {
  const out: Params = new Map();
  for (const [name, r] of records) out.set(name, new Tensor(r.data, r.shape));
  return out;
}

const shapeStr = (s: readonly number[]) => `[${s.join(', ')}]`;
const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Checks named tensors against a model's tensor list: every tensor present with its shape, and
 * nothing else (BN `num_batches_tracked` excepted). Throws an InputError naming `source` and the
 * first offending tensor.
 */
export function checkStateAgainstModel(source: string, model: Model, names: Iterable<string>, shapeOf: (name: string) => readonly number[] | undefined): TensorInfo[] {
  const infos = graphTensors(model.graph());
  for (const info of infos) {
    const shape = shapeOf(info.name);
    if (!shape) throw new InputError(`${source}: tensor "${info.name}" is missing (model ${model.name} needs it, shape ${shapeStr(info.shape)})`);
    if (!sameShape(shape, info.shape)) {
      throw new InputError(`${source}: tensor "${info.name}" has shape ${shapeStr(shape)} but model ${model.name} expects ${shapeStr(info.shape)}`);
    }
  }
  const known = new Set(infos.map((i) => i.name));
  for (const name of names) {
    if (!known.has(name) && !isBatchCounter(name)) throw new InputError(`${source}: tensor "${name}" is not part of model ${model.name}`);
  }
  return infos;
}

/** Metadata values must be strings in safetensors; other values are stored as JSON. */
function toMetadata(extra: Record<string, unknown>): Record<string, string> {
  const md: Record<string, string> = {};
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) continue;
    md[k] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  return md;
}

/**
 * Saves a model state as a rebasin checkpoint (atomically). `extra` metadata is stored next to
 * `format` and `model` (non-string values as JSON). The state must match the model exactly.
 */
export async function saveCheckpoint(path: string, model: Model, state: { params: Params; buffers?: Params }, extra: Record<string, unknown> = {}): Promise<void> {
  const get = (name: string) => state.params.get(name) ?? state.buffers?.get(name);
  const names = [...state.params.keys(), ...(state.buffers?.keys() ?? [])];
  const infos = checkStateAgainstModel(`saveCheckpoint(${path})`, model, names, (n) => get(n)?.shape);
  const ordered: Params = new Map();
  for (const info of infos) ordered.set(info.name, get(info.name)!);
  for (const reserved of ['format', 'model']) {
    if (reserved in extra) throw new InputError(`saveCheckpoint(${path}): metadata key "${reserved}" is reserved`);
  }
  const metadata = { format: CHECKPOINT_FORMAT, model: JSON.stringify(model.config), ...toMetadata(extra) };
  await writeSafetensors(path, stateToRecords(ordered), { dtype: 'F32', metadata });
}

export interface Checkpoint {
  model: Model;
  params: Params;
  /** BatchNorm running statistics (empty without BatchNorm). */
  buffers: Params;
  metadata: Record<string, string>;
}

/** Loads a rebasin checkpoint, rebuilding its model from the stored config. */
export async function loadCheckpoint(path: string): Promise<Checkpoint> {
  const { tensors, metadata } = await readSafetensors(path);
  return checkpointFromSafetensors(tensors, metadata, path);
}

/** A rebasin checkpoint from parsed safetensors (e.g. bytes in a browser); `path` names it in errors. */
export function checkpointFromSafetensors(tensors: StateDict, metadata: Record<string, string>, path: string): Checkpoint {
  if (metadata.format !== CHECKPOINT_FORMAT) {
    throw new InputError(`${path}: not a rebasin checkpoint (safetensors metadata "format" is ${metadata.format === undefined ? 'missing' : JSON.stringify(metadata.format)}); load plain weights with loadTensors()`);
  }
  let config: ModelConfig;
  try {
    config = JSON.parse(metadata.model ?? '') as ModelConfig;
  } catch (e) {
    throw new InputError(`${path}: metadata "model" is not valid JSON (${(e as Error).message})`);
  }
  let model: Model;
  try {
    model = createModel(config);
  } catch (e) {
    throw new InputError(`${path}: metadata "model" does not describe a model: ${(e as Error).message}`);
  }
  const infos = checkStateAgainstModel(path, model, tensors.keys(), (n) => tensors.get(n)?.shape);
  const params: Params = new Map();
  const buffers: Params = new Map();
  for (const info of infos) {
    const r = tensors.get(info.name)!;
    (info.buffer ? buffers : params).set(info.name, new Tensor(r.data, r.shape));
  }
  return { model, params, buffers, metadata };
}

/** Splits loaded named tensors into weights and BN statistics, dropping num_batches_tracked. */
export function splitLoadedState(state: Params): { params: Params; buffers: Params } {
  return splitState(new Map([...state].filter(([k]) => !isBatchCounter(k))));
}
