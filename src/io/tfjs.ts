/**
 * TF.js layers models: `model.json` (format "layers-model": a Keras `modelTopology` and a
 * `weightsManifest` of groups, each a list of shard `paths` whose concatenation holds the
 * group's `weights` back to back) plus the binary shards.
 *
 * Reading and writing only: the Keras topology becomes a ModelGraph (PyTorch names and layouts,
 * spec inference, weight conversions) in tfjs-import.ts.
 *
 * Errors: malformed JSON/manifest, a missing or truncated shard, or shards whose byte length does
 * not match the manifest throw FormatError naming the file and the weight.
 */
import { dirname, isAbsolute, posix, resolve } from 'node:path';
import { numel } from '../core/tensor.js';
import { FormatError, describeError } from './errors.js';
import { float16BitsToFloat32 } from './safetensors.js';
import { type StateDict } from './records.js';
import { writeFileAtomic } from './atomic.js';
import { readText, readWhole, UnreadableFile } from './files.js';

// ============================================================================ model.json

export type TfjsDtype = 'float32' | 'int32' | 'bool';

export interface TfjsWeightEntry {
  name: string;
  shape: number[];
  dtype: TfjsDtype;
  /** Quantised storage: uint8/uint16 affine (value = q·scale + min) or float16. */
  quantization?: { dtype: 'uint8' | 'uint16' | 'float16'; scale?: number; min?: number };
}

export interface TfjsWeightGroup {
  paths: string[];
  weights: TfjsWeightEntry[];
}

export interface KerasLayer {
  name: string;
  className: string;
  config: Record<string, unknown>;
  /** Per call of the layer: the (layer, call, tensor) it reads. Sequential models get the previous layer. */
  inbound: { layer: string; node: number; tensor: number }[][];
}

export interface KerasTopology {
  className: string;
  name: string;
  layers: KerasLayer[];
  /** Input and output tensors of the model as (layer, call, tensor). */
  inputs: { layer: string; node: number; tensor: number }[];
  outputs: { layer: string; node: number; tensor: number }[];
}

export interface TfjsModelJson {
  format: string;
  generatedBy?: string;
  convertedBy?: string;
  /** The raw `modelTopology` object. */
  modelTopology: Record<string, unknown>;
  weightsManifest: TfjsWeightGroup[];
  topology: KerasTopology;
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const MAX_ELEMENTS = 2 ** 31 - 1;

function bytesPerElement(w: TfjsWeightEntry): number {
  if (w.quantization) return w.quantization.dtype === 'uint8' ? 1 : 2;
  return w.dtype === 'bool' ? 1 : 4;
}

function parseWeightEntry(source: string, g: number, i: number, w: unknown): TfjsWeightEntry {
  const where = `weightsManifest[${g}].weights[${i}]`;
  if (!isObj(w)) throw new FormatError(source, where, 'must be an object {name, shape, dtype}');
  const name = w.name;
  if (typeof name !== 'string' || !name) throw new FormatError(source, where, '"name" must be a non-empty string');
  const label = `weight "${name}"`;
  const shape = w.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw new FormatError(source, name, `"shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`, { label });
  }
  let n = 1;
  for (const d of shape as number[]) {
    n *= d;
    if (n > MAX_ELEMENTS) throw new FormatError(source, name, `shape [${shape.join(', ')}] exceeds ${MAX_ELEMENTS} elements`, { label });
  }
  const dtype = w.dtype;
  if (dtype !== 'float32' && dtype !== 'int32' && dtype !== 'bool') {
    throw new FormatError(source, name, `dtype ${JSON.stringify(dtype)} is not supported (float32, int32, bool)`, { label });
  }
  const out: TfjsWeightEntry = { name, shape: [...(shape as number[])], dtype };
  if (w.quantization !== undefined) {
    const q = w.quantization;
    if (!isObj(q) || (q.dtype !== 'uint8' && q.dtype !== 'uint16' && q.dtype !== 'float16')) {
      throw new FormatError(source, name, `"quantization" must have dtype uint8, uint16 or float16, got ${JSON.stringify(q)}`, { label });
    }
    if (q.dtype !== 'float16' && (typeof q.scale !== 'number' || typeof q.min !== 'number' || !Number.isFinite(q.scale) || !Number.isFinite(q.min))) {
      throw new FormatError(source, name, `affine quantization needs numeric "scale" and "min"`, { label });
    }
    out.quantization = { dtype: q.dtype, scale: q.scale as number | undefined, min: q.min as number | undefined };
  }
  return out;
}

type TensorRef = { layer: string; node: number; tensor: number };

function parseRef(source: string, where: string, v: unknown): TensorRef {
  if (!Array.isArray(v) || typeof v[0] !== 'string' || !Number.isInteger(v[1] ?? 0) || !Number.isInteger(v[2] ?? 0)) {
    throw new FormatError(source, where, `expected [layer name, node index, tensor index], got ${JSON.stringify(v)?.slice(0, 200)}`);
  }
  return { layer: v[0], node: (v[1] as number) ?? 0, tensor: (v[2] as number) ?? 0 };
}

/** Keras 3 writes inbound calls as {args, kwargs} with `keras_history` triples inside. */
function collectHistory(v: unknown, out: TensorRef[], depth = 0): void {
  if (depth > 32) return;
  if (Array.isArray(v)) for (const x of v) collectHistory(x, out, depth + 1);
  else if (isObj(v)) {
    const cfg = v.config;
    if (isObj(cfg) && Array.isArray(cfg.keras_history) && typeof cfg.keras_history[0] === 'string') {
      out.push({ layer: cfg.keras_history[0], node: Number(cfg.keras_history[1] ?? 0) || 0, tensor: Number(cfg.keras_history[2] ?? 0) || 0 });
      return;
    }
    for (const x of Object.values(v)) collectHistory(x, out, depth + 1);
  }
}

function parseTopology(source: string, topo: Record<string, unknown>): KerasTopology {
  const mc = isObj(topo.model_config) ? topo.model_config : topo;
  const className = mc.class_name;
  if (typeof className !== 'string') throw new FormatError(source, 'modelTopology.class_name', 'missing: not a Keras model topology');
  const cfg = mc.config;
  const layerList = Array.isArray(cfg) ? cfg : isObj(cfg) ? cfg.layers : undefined;
  if (!Array.isArray(layerList)) throw new FormatError(source, 'modelTopology.config.layers', 'must be an array of layers');
  const name = isObj(cfg) && typeof cfg.name === 'string' ? cfg.name : className;
  const sequential = className === 'Sequential';
  const layers: KerasLayer[] = [];
  const names = new Set<string>();
  layerList.forEach((l, i) => {
    const where = `modelTopology.config.layers[${i}]`;
    if (!isObj(l) || typeof l.class_name !== 'string' || !isObj(l.config)) throw new FormatError(source, where, 'must be an object with "class_name" and "config"');
    const lname = typeof l.name === 'string' ? l.name : l.config.name;
    if (typeof lname !== 'string' || !lname) throw new FormatError(source, where, 'layer has no name');
    if (names.has(lname)) throw new FormatError(source, where, `layer name "${lname}" appears twice`);
    names.add(lname);
    const inbound: TensorRef[][] = [];
    if (!sequential && l.inbound_nodes !== undefined) {
      if (!Array.isArray(l.inbound_nodes)) throw new FormatError(source, `${where}.inbound_nodes`, 'must be an array');
      l.inbound_nodes.forEach((call: unknown, k: number) => {
        if (Array.isArray(call)) inbound.push(call.map((r, j) => parseRef(source, `${where}.inbound_nodes[${k}][${j}]`, r)));
        else {
          const refs: TensorRef[] = [];
          collectHistory(call, refs);
          inbound.push(refs);
        }
      });
    }
    layers.push({ name: lname, className: l.class_name, config: l.config, inbound });
  });
  let inputs: TensorRef[] = [];
  let outputs: TensorRef[] = [];
  if (sequential) {
    // Chain the layers; an explicit InputLayer or the first layer's batch_input_shape is the input.
    if (layers.length === 0) throw new FormatError(source, 'modelTopology.config.layers', 'a Sequential model without layers');
    let prev: string | null = layers[0].className === 'InputLayer' ? layers[0].name : null;
    if (!prev) {
      const first = layers[0].config;
      const shape = first.batch_input_shape ?? first.batch_shape;
      layers.unshift({ name: `${layers[0].name}_input`, className: 'InputLayer', config: { batch_input_shape: shape ?? null }, inbound: [] });
      prev = layers[0].name;
    }
    inputs = [{ layer: prev, node: 0, tensor: 0 }];
    for (const l of layers.slice(1)) {
      l.inbound = [[{ layer: prev, node: 0, tensor: 0 }]];
      prev = l.name;
    }
    outputs = [{ layer: prev, node: 0, tensor: 0 }];
  } else {
    const c = cfg as Record<string, unknown>;
    const refs = (v: unknown, where: string): TensorRef[] => {
      if (!Array.isArray(v)) throw new FormatError(source, where, 'must be an array of [layer, node, tensor]');
      // A single triple is allowed too (Keras 3 writes one input that way).
      if (typeof v[0] === 'string') return [parseRef(source, where, v)];
      return v.map((r, i) => parseRef(source, `${where}[${i}]`, r));
    };
    inputs = refs(c.input_layers, 'modelTopology.config.input_layers');
    outputs = refs(c.output_layers, 'modelTopology.config.output_layers');
  }
  for (const r of [...inputs, ...outputs]) {
    if (!names.has(r.layer) && !layers.some((l) => l.name === r.layer)) throw new FormatError(source, 'modelTopology', `input/output layer "${r.layer}" is not among the layers`);
  }
  return { className, name, layers, inputs, outputs };
}

/** Parses model.json text (no shard I/O). */
export function parseTfjsModelJson(text: string, source = '<buffer>'): TfjsModelJson {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new FormatError(source, 'json', `not valid JSON (${describeError(e)})`, { cause: e });
  }
  if (!isObj(obj)) throw new FormatError(source, 'json', 'model.json must hold a JSON object');
  const format = obj.format;
  if (format === 'graph-model') throw new FormatError(source, 'format', 'a TF.js graph model (from a SavedModel): only layers models ("layers-model") carry a Keras topology; not supported');
  if (format !== undefined && format !== 'layers-model') throw new FormatError(source, 'format', `must be "layers-model", got ${JSON.stringify(format)}`);
  if (!isObj(obj.modelTopology)) throw new FormatError(source, 'modelTopology', 'missing or not an object');
  const manifest = obj.weightsManifest;
  if (!Array.isArray(manifest)) throw new FormatError(source, 'weightsManifest', 'missing or not an array');
  const seen = new Set<string>();
  const groups: TfjsWeightGroup[] = manifest.map((g, gi) => {
    const where = `weightsManifest[${gi}]`;
    if (!isObj(g) || !Array.isArray(g.paths) || !Array.isArray(g.weights)) throw new FormatError(source, where, 'must be an object {paths: [...], weights: [...]}');
    const paths = g.paths.map((p, k) => {
      if (typeof p !== 'string' || !p) throw new FormatError(source, `${where}.paths[${k}]`, 'must be a non-empty string');
      if (isAbsolute(p) || /^[a-z][a-z0-9+.-]*:/i.test(p)) throw new FormatError(source, `${where}.paths[${k}]`, `"${p}": only paths relative to model.json are supported`);
      const norm = posix.normalize(p.replace(/\\/g, '/'));
      if (norm === '..' || norm.startsWith('../')) throw new FormatError(source, `${where}.paths[${k}]`, `"${p}" climbs out of model.json's folder; shards must be inside it`);
      return p;
    });
    const weights = g.weights.map((w, wi) => parseWeightEntry(source, gi, wi, w));
    for (const w of weights) {
      if (seen.has(w.name)) throw new FormatError(source, w.name, 'appears twice in weightsManifest', { label: `weight "${w.name}"` });
      seen.add(w.name);
    }
    if (weights.length > 0 && paths.length === 0) throw new FormatError(source, where, 'has weights but no shard paths');
    return { paths, weights };
  });
  const topology = parseTopology(source, obj.modelTopology);
  return {
    format: typeof format === 'string' ? format : 'layers-model',
    generatedBy: typeof obj.generatedBy === 'string' ? obj.generatedBy : undefined,
    convertedBy: typeof obj.convertedBy === 'string' ? obj.convertedBy : undefined,
    modelTopology: obj.modelTopology, weightsManifest: groups, topology,
  };
}

function decodeWeight(w: TfjsWeightEntry, bytes: Uint8Array): Float32Array {
  const n = numel(w.shape);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  const q = w.quantization;
  if (q?.dtype === 'float16') for (let i = 0; i < n; i++) out[i] = float16BitsToFloat32(dv.getUint16(2 * i, true));
  else if (q) {
    const scale = q.scale!;
    const min = q.min!;
    for (let i = 0; i < n; i++) out[i] = (q.dtype === 'uint8' ? dv.getUint8(i) : dv.getUint16(2 * i, true)) * scale + min;
  } else if (w.dtype === 'float32') for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
  else if (w.dtype === 'int32') for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
  else for (let i = 0; i < n; i++) out[i] = dv.getUint8(i);
  return out;
}

/**
 * Decodes the weights of every group from its shards' bytes (`shards[g][k]` is the content of
 * `weightsManifest[g].paths[k]`; `shardNames` the same for messages). Keras names and layouts.
 */
export function decodeTfjsWeights(manifest: TfjsWeightGroup[], shards: Uint8Array[][], shardNames: string[][] = shards.map((g, i) => g.map((_, k) => `${i}/${k}`))): StateDict {
  const out: StateDict = new Map();
  manifest.forEach((g, gi) => {
    const parts = shards[gi] ?? [];
    const names = shardNames[gi] ?? [];
    const total = parts.reduce((s, p) => s + p.length, 0);
    const buf = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    const shardAt = (offset: number) => {
      let acc = 0;
      for (let k = 0; k < parts.length; k++) {
        acc += parts[k].length;
        if (offset < acc) return names[k] ?? `group ${gi} shard ${k}`;
      }
      return names[names.length - 1] ?? `group ${gi}`;
    };
    let offset = 0;
    for (const w of g.weights) {
      const size = numel(w.shape) * bytesPerElement(w);
      if (offset + size > total) {
        const file = offset < total ? shardAt(offset) : names[names.length - 1] ?? `group ${gi}`;
        throw new FormatError(file, w.name, `needs bytes [${offset}, ${offset + size}) of weight group ${gi}, but its shards (${names.join(', ')}) hold only ${total} bytes: truncated shard or wrong shape`, { label: `weight "${w.name}"` });
      }
      out.set(w.name, { shape: [...w.shape], data: decodeWeight(w, buf.subarray(offset, offset + size)) });
      offset += size;
    }
    if (offset !== total) {
      const last = g.weights[g.weights.length - 1];
      throw new FormatError(shardAt(Math.min(offset, total - 1)), last ? last.name : `group ${gi}`, `weight group ${gi}: the shards (${names.join(', ')}) hold ${total} bytes but the manifest's weights take ${offset}: wrong byte length`, { label: last ? `after weight "${last.name}"` : `group ${gi}` });
    }
  });
  return out;
}

export interface TfjsModel {
  source: string;
  modelJson: TfjsModelJson;
  topology: KerasTopology;
  /** Keras names (e.g. `dense/kernel`) and layouts, in manifest order. */
  tensors: StateDict;
}

/** Reads model.json and its shards (paths relative to model.json). */
export async function readTfjs(modelJsonPath: string): Promise<TfjsModel> {
  const text = await readText(modelJsonPath);
  const modelJson = parseTfjsModelJson(text, modelJsonPath);
  const dir = dirname(modelJsonPath);
  const shards: Uint8Array[][] = [];
  const names: string[][] = [];
  for (const g of modelJson.weightsManifest) {
    const files = g.paths.map((p) => resolve(dir, p));
    const bufs: Uint8Array[] = [];
    for (const f of files) {
      try {
        // The file-access policy: a regular file inside model.json's folder (after links).
        bufs.push(await readWhole(f, { within: { dir, referencedBy: modelJsonPath }, what: 'shard' }));
      } catch (e) {
        const first = g.weights[0]?.name ?? '(none)';
        const why = e instanceof UnreadableFile ? e.reason : describeError(e);
        throw new FormatError(f, first, `shard listed in ${modelJsonPath} cannot be read (${why}); it holds weights from "${first}" on`, { label: `weight "${first}"`, cause: e });
      }
    }
    shards.push(bufs);
    names.push(files);
  }
  return { source: modelJsonPath, modelJson, topology: modelJson.topology, tensors: decodeTfjsWeights(modelJson.weightsManifest, shards, names) };
}

/**
 * Writes a TF.js layers model: model.json (the given topology and metadata) and one shard
 * `<stem>.weights.bin` next to it with `tensors` (Keras names and layouts, float32), atomically.
 */
export async function writeTfjs(modelJsonPath: string, model: TfjsModelJson, tensors: StateDict): Promise<void> {
  const stem = modelJsonPath.replace(/^.*[\\/]/, '').replace(/\.json$/i, '');
  const shardName = `${stem}.weights.bin`;
  const weights: TfjsWeightEntry[] = [];
  const parts: Uint8Array[] = [];
  for (const [name, r] of tensors) {
    weights.push({ name, shape: [...r.shape], dtype: 'float32' });
    const b = new Uint8Array(r.data.length * 4);
    const dv = new DataView(b.buffer);
    for (let i = 0; i < r.data.length; i++) dv.setFloat32(4 * i, r.data[i], true);
    parts.push(b);
  }
  const json = {
    format: 'layers-model', generatedBy: model.generatedBy, convertedBy: 'rebasin',
    modelTopology: model.modelTopology, weightsManifest: [{ paths: [shardName], weights }],
  };
  await writeFileAtomic(resolve(dirname(modelJsonPath), shardName), Buffer.concat(parts));
  await writeFileAtomic(modelJsonPath, JSON.stringify(json));
}
