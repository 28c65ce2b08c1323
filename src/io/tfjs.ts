/**
 * TF.js layers models: `model.json` (format "layers-model": a Keras `modelTopology` and a
 * `weightsManifest` of groups, each a list of shard `paths` whose concatenation holds the
 * group's `weights` back to back) plus the binary shards.
 *
 * Layouts. Keras stores Dense kernels [in, out] and Conv kernels [kh, kw, in, out]; specs in this
 * library are in PyTorch layout. `tfjsToPytorchLayout` converts: Dense → `<layer>.weight`
 * [out, in], Conv → `<layer>.weight` [out, in, kh, kw], BatchNormalization gamma/beta/moving_mean/
 * moving_variance → weight/bias/running_mean/running_var; `pytorchToTfjsLayout` is its inverse.
 *
 * Flatten. Keras is channels-last: Flatten of an [h, w, C] map orders features as (h, w, c), so
 * a channel is the LAST factor of the flattened axis, which a `{perm, inner}` entry (channel-major
 * [C, inner]) cannot express. The conversion therefore also reorders the input rows of the Dense
 * kernel that reads such a flatten into channel-major order (feature c·h·w + s ← s·C + c), exactly
 * the weight a PyTorch (NCHW) model would hold; the spec then uses `{perm, inner: h·w}` as for
 * PyTorch models, and `pytorchToTfjsLayout` undoes the reordering. When the spatial size is
 * unknown the channel group is fixed with a warning instead.
 *
 * Errors: malformed JSON/manifest, a missing or truncated shard, or shards whose byte length does
 * not match the manifest throw FormatError naming the file and the weight.
 */
import { dirname, isAbsolute, posix, resolve } from 'node:path';
import { numel } from '../core/tensor.js';
import { FormatError, describeError } from './errors.js';
import { float16BitsToFloat32 } from './safetensors.js';
import { type ArrayRecord, type StateDict } from './records.js';
import { writeFileAtomic } from './atomic.js';
import { readText, readWhole, UnreadableFile } from './files.js';
import { SpecFlow, type ChanRef, type FlowResult } from './onnx.js';

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

// ============================================================================ Keras topology → spec and layouts

/** How one Keras weight becomes a PyTorch-layout tensor. */
export interface TfjsParamPlan {
  keras: string;
  pytorch: string;
  /** 'dense': [in, out] → [out, in]; 'conv': [k…, in, out] → [out, in, k…]; 'copy': unchanged. */
  kind: 'dense' | 'conv' | 'copy';
  /** Dense after a channels-last Flatten: input rows reordered (s, c) → (c, s). */
  reorder?: { spatial: number; channels: number };
}

export interface TfjsSpecResult extends FlowResult {
  /** Weight conversions, in manifest-independent layer order. */
  params: TfjsParamPlan[];
}

type KDim = number | null;
interface KVal {
  shape: KDim[] | null;
  ref: ChanRef | null;
  /** After a channels-last Flatten of S > 1 positions: the channel is the last factor of the axis. */
  lastFactor?: number;
}

const TRANSPARENT = new Set([
  'Activation', 'ReLU', 'LeakyReLU', 'ELU', 'Softmax', 'ThresholdedReLU', 'Dropout', 'SpatialDropout1D', 'SpatialDropout2D',
  'SpatialDropout3D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout', 'ActivityRegularization', 'Identity', 'Masking',
]);
const MERGE = new Set(['Add', 'Subtract', 'Multiply', 'Average', 'Maximum', 'Minimum']);

const asInts = (v: unknown, n: number, d: number): number[] => {
  if (typeof v === 'number') return new Array(n).fill(v);
  if (Array.isArray(v) && v.every((x) => typeof x === 'number')) return v as number[];
  return new Array(n).fill(d);
};

/** Output size of a Keras conv/pool window ('valid' / 'same'). */
function kerasOut(n: KDim, k: number, s: number, d: number, padding: string): KDim {
  if (n === null) return null;
  const o = padding === 'same' || padding === 'causal' ? Math.ceil(n / s) : Math.ceil((n - (k - 1) * d) / s);
  return o >= 1 ? o : null;
}

/**
 * Infers the spec (PyTorch names and layout, see the module comment) from a Keras topology,
 * with the rules of models/graph.ts `deriveSpec`, and plans the weight conversions. Layers
 * understood: InputLayer, Dense, Conv1D/2D/3D (channels_last; groups > 1 fixed),
 * BatchNormalization and LayerNormalization over the channel axis, activations and dropouts,
 * Max/AveragePooling, Global*Pooling, ZeroPadding, Flatten, Add/Subtract/Multiply/Average/
 * Maximum/Minimum, Concatenate off the channel axis. Other layers fix the groups they touch,
 * with a warning.
 */
export function inferSpecFromTfjs(model: { topology: KerasTopology; tensors: ReadonlyMap<string, { shape: readonly number[] }>; source?: string }): TfjsSpecResult {
  const { topology, tensors } = model;
  const source = model.source ?? '<model.json>';
  const flow = new SpecFlow();
  const params: TfjsParamPlan[] = [];
  // Weights by their last two name parts ("dense/kernel"), the part Keras, TF.js and the
  // converter agree on; scopes in front and a ":0" suffix vary.
  const byLayerParam = new Map<string, string>();
  for (const name of tensors.keys()) {
    const parts = name.replace(/:\d+$/, '').split('/');
    if (parts.length >= 2) byLayerParam.set(`${parts[parts.length - 2]}/${parts[parts.length - 1]}`, name);
  }
  const claimed = new Set<string>();
  const weight = (layer: KerasLayer, p: string, required: boolean): string | null => {
    const name = byLayerParam.get(`${layer.name}/${p}`) ?? null;
    if (!name && required) throw new FormatError(source, layer.name, `weight "${p}" of ${layer.className} layer "${layer.name}" is not in weightsManifest`, { label: `layer "${layer.name}"` });
    if (name) claimed.add(name);
    return name;
  };
  const shapeOfW = (name: string) => [...tensors.get(name)!.shape];

  const vals = new Map<string, KVal>();
  const key = (r: { layer: string; node: number; tensor: number }) => `${r.layer}#${r.node}#${r.tensor}`;
  // Calls in dependency order (Keras lists layers topologically, but do not rely on it).
  type Call = { layer: KerasLayer; index: number; inputs: { layer: string; node: number; tensor: number }[] };
  const calls: Call[] = [];
  for (const l of topology.layers) {
    if (l.className === 'InputLayer' || l.inbound.length === 0) calls.push({ layer: l, index: 0, inputs: [] });
    else l.inbound.forEach((inputs, index) => calls.push({ layer: l, index, inputs }));
  }
  const done = new Set<string>();
  const order: Call[] = [];
  let progress = true;
  while (progress && order.length < calls.length) {
    progress = false;
    for (const c of calls) {
      const id = `${c.layer.name}#${c.index}`;
      if (done.has(id)) continue;
      if (c.inputs.every((r) => done.has(`${r.layer}#${r.node}`))) {
        done.add(id);
        order.push(c);
        progress = true;
      }
    }
  }
  for (const c of calls) if (!done.has(`${c.layer.name}#${c.index}`)) throw new FormatError(source, c.layer.name, 'its inputs are never produced (unknown layer or a cycle)', { label: `layer "${c.layer.name}"` });

  const unknown = (c: Call, ins: KVal[], why?: string): KVal => {
    const reason = `layer "${c.layer.name}" (${c.layer.className}): ${why ?? 'not known to be channel-wise'}`;
    // Only groups this layer is the first to fix deserve a warning (no cascades after another one).
    const fresh: number[] = [];
    for (const v of ins) if (v.ref) {
      if (!flow.isFixed(v.ref.space)) fresh.push(v.ref.space);
      flow.fix(v.ref.space, reason);
    }
    const s = flow.newSpace(NaN, null);
    flow.fix(s, reason);
    if (fresh.length) flow.warnIfMatters(`${reason}: the channel groups it touches are left unpermuted`, fresh);
    return { shape: null, ref: { space: s, inner: 1, axis: 1 } };
  };
  const copyParam = (layer: KerasLayer, p: string, pytorch: string, axes: (ChanRef | null)[] | null, where: string) => {
    const name = weight(layer, p, true)!;
    const shape = shapeOfW(name);
    flow.setTensor(pytorch, shape, axes ?? shape.map(() => null), where);
    params.push({ keras: name, pytorch, kind: 'copy' });
  };

  for (const c of order) {
    const l = c.layer;
    const cfg = l.config;
    const ins = c.inputs.map((r) => {
      const v = vals.get(key(r));
      if (!v) throw new FormatError(source, l.name, `reads "${r.layer}" output ${r.tensor} of call ${r.node}, which does not exist`, { label: `layer "${l.name}"` });
      return v;
    });
    const x = ins[0];
    const where = `layer "${l.name}"`;
    const channelsFirst = cfg.data_format === 'channels_first';
    let out: KVal;
    if (l.className === 'InputLayer') {
      const bis = cfg.batch_input_shape ?? cfg.batch_shape;
      const shape = Array.isArray(bis) ? bis.map((d) => (typeof d === 'number' ? d : null)) : null;
      const last = shape ? shape[shape.length - 1] : null;
      const s = flow.newSpace(last ?? NaN, null);
      flow.fix(s, 'network input');
      out = { shape, ref: { space: s, inner: 1, axis: shape ? shape.length - 1 : 1 } };
    } else if (!x || !x.ref) {
      out = unknown(c, ins, 'no activation input');
    } else if (l.className === 'Dense') {
      const k = weight(l, 'kernel', true)!;
      const [nin, units] = shapeOfW(k);
      const b = cfg.use_bias === false ? null : weight(l, 'bias', false);
      const s = flow.newSpace(units, l.name, `${l.name}.weight`);
      const own: ChanRef = { space: s, inner: 1, axis: x.shape ? x.shape.length - 1 : 1 };
      const plan: TfjsParamPlan = { keras: k, pytorch: `${l.name}.weight`, kind: 'dense' };
      if (x.lastFactor && x.lastFactor > 1 && nin % x.lastFactor === 0) plan.reorder = { spatial: x.lastFactor, channels: nin / x.lastFactor };
      params.push(plan);
      flow.setTensor(`${l.name}.weight`, [units, nin], [own, x.ref], where);
      if (b) {
        flow.setTensor(`${l.name}.bias`, [units], [own], where);
        params.push({ keras: b, pytorch: `${l.name}.bias`, kind: 'copy' });
      }
      out = { shape: x.shape ? [...x.shape.slice(0, -1), units] : null, ref: own };
    } else if (/^Conv[123]D$/.test(l.className) && !channelsFirst) {
      const k = weight(l, 'kernel', true)!;
      const ks = shapeOfW(k);
      const nsp = ks.length - 2;
      const [cinG, filters] = ks.slice(nsp);
      const groups = typeof cfg.groups === 'number' ? cfg.groups : 1;
      const b = cfg.use_bias === false ? null : weight(l, 'bias', false);
      const strides = asInts(cfg.strides, nsp, 1);
      const dil = asInts(cfg.dilation_rate, nsp, 1);
      const padding = typeof cfg.padding === 'string' ? cfg.padding : 'valid';
      const shape = x.shape && x.shape.length === nsp + 2
        ? [x.shape[0], ...x.shape.slice(1, 1 + nsp).map((n, i) => kerasOut(n, ks[i], strides[i] ?? 1, dil[i] ?? 1, padding)), filters]
        : null;
      const pyShape = [filters, cinG, ...ks.slice(0, nsp)];
      params.push({ keras: k, pytorch: `${l.name}.weight`, kind: 'conv' });
      const s = flow.newSpace(filters, groups === 1 ? l.name : null, `${l.name}.weight`);
      const own: ChanRef = { space: s, inner: 1, axis: nsp + 1 };
      if (x.ref.inner !== 1 || x.lastFactor) flow.fix(x.ref.space, `${where}: convolution of a flattened input`, true);
      if (groups !== 1) {
        const reason = `${where}: grouped convolution (groups ${groups})`;
        flow.fix(x.ref.space, reason, true);
        flow.fix(s, reason);
        flow.setTensor(`${l.name}.weight`, pyShape, pyShape.map(() => null), where);
      } else flow.setTensor(`${l.name}.weight`, pyShape, [own, { ...x.ref, inner: 1 }, ...ks.slice(0, nsp).map(() => null)], where);
      if (b) {
        flow.setTensor(`${l.name}.bias`, [filters], [groups === 1 ? own : null], where);
        params.push({ keras: b, pytorch: `${l.name}.bias`, kind: 'copy' });
      }
      out = { shape, ref: own };
    } else if (l.className === 'BatchNormalization' || l.className === 'LayerNormalization') {
      const rank = x.shape?.length ?? x.ref.axis + 1;
      const axes = (Array.isArray(cfg.axis) ? cfg.axis : [cfg.axis ?? -1]).map((a) => (typeof a === 'number' && a < 0 ? a + rank : a));
      const ok = axes.length === 1 && axes[0] === rank - 1 && !x.lastFactor;
      if (!ok) {
        const reason = `${where}: ${l.className} over axes [${axes.join(', ')}] ${x.lastFactor ? 'of a channels-last flatten' : 'is not over the channel axis'}`;
        flow.fix(x.ref.space, reason, true);
      }
      const ref = ok ? x.ref : null;
      const names: [string, string, boolean][] = l.className === 'BatchNormalization'
        ? [['gamma', 'weight', cfg.scale !== false], ['beta', 'bias', cfg.center !== false], ['moving_mean', 'running_mean', true], ['moving_variance', 'running_var', true]]
        : [['gamma', 'weight', cfg.scale !== false], ['beta', 'bias', cfg.center !== false]];
      for (const [kp, pp, present] of names) {
        if (!present) continue;
        const w = weight(l, kp, true)!;
        const shape = shapeOfW(w);
        flow.setTensor(`${l.name}.${pp}`, shape, shape.length === 1 && ref ? [ref] : shape.map(() => null), where);
        params.push({ keras: w, pytorch: `${l.name}.${pp}`, kind: 'copy' });
      }
      out = { ...x };
    } else if (TRANSPARENT.has(l.className)) {
      out = { ...x };
    } else if (/^(Max|Average)Pooling[123]D$/.test(l.className) && !channelsFirst) {
      const nsp = Number(l.className.slice(-2, -1));
      const ps = asInts(cfg.pool_size, nsp, 2);
      const st = cfg.strides === null || cfg.strides === undefined ? ps : asInts(cfg.strides, nsp, 1);
      const padding = typeof cfg.padding === 'string' ? cfg.padding : 'valid';
      const shape = x.shape && x.shape.length === nsp + 2 ? [x.shape[0], ...x.shape.slice(1, 1 + nsp).map((n, i) => kerasOut(n, ps[i], st[i], 1, padding)), x.shape[nsp + 1]] : null;
      out = { shape, ref: x.ref };
    } else if (/^Global(Max|Average)Pooling[123]D$/.test(l.className) && !channelsFirst) {
      const keep = cfg.keepdims === true;
      const shape = x.shape ? (keep ? x.shape.map((d, i) => (i === 0 || i === x.shape!.length - 1 ? d : 1)) : [x.shape[0], x.shape[x.shape.length - 1]]) : null;
      out = { shape, ref: { ...x.ref, axis: shape ? shape.length - 1 : 1 } };
    } else if (/^ZeroPadding[123]D$/.test(l.className) && !channelsFirst) {
      const nsp = Number(l.className.slice(-2, -1));
      const pad = cfg.padding;
      const pairs: [number, number][] = [];
      for (let i = 0; i < nsp; i++) {
        const p = Array.isArray(pad) ? pad[i] : pad;
        pairs.push(typeof p === 'number' ? [p, p] : Array.isArray(p) && typeof p[0] === 'number' && typeof p[1] === 'number' ? [p[0], p[1]] : [1, 1]);
      }
      const shape = x.shape ? x.shape.map((d, i) => (i >= 1 && i <= nsp && d !== null ? d + pairs[i - 1][0] + pairs[i - 1][1] : d)) : null;
      out = { shape, ref: x.ref };
    } else if (l.className === 'Flatten' && !channelsFirst) {
      const xs = x.shape;
      const spatial = xs ? xs.slice(1, -1) : null;
      const S = spatial && spatial.every((d) => typeof d === 'number') ? (spatial as number[]).reduce((p, q) => p * q, 1) : null;
      const C = xs ? xs[xs.length - 1] : null;
      if (S === null || C === null) out = unknown(c, ins, 'flattens a map of unknown spatial size');
      else if (S === 1) out = { shape: [xs![0], C], ref: { ...x.ref, axis: 1 } };
      else if (x.lastFactor || x.ref.inner !== 1) out = unknown(c, ins, 'flattens an already flattened axis');
      else out = { shape: [xs![0], S * C], ref: { space: x.ref.space, inner: S, axis: 1 }, lastFactor: S };
    } else if (MERGE.has(l.className)) {
      const refs = ins.map((v) => v.ref);
      if (refs.some((r) => !r) || ins.some((v) => (v.lastFactor ?? 0) !== (x.lastFactor ?? 0))) out = unknown(c, ins, 'operands laid out differently');
      else {
        for (const r of refs.slice(1)) flow.unionRefs(x.ref, r!, where);
        out = { ...x };
      }
    } else if (l.className === 'Concatenate') {
      const rank = x.shape?.length ?? x.ref.axis + 1;
      let axis = typeof cfg.axis === 'number' ? cfg.axis : -1;
      if (axis < 0) axis += rank;
      if (axis === rank - 1 || ins.some((v) => !v.ref || v.lastFactor)) out = unknown(c, ins, 'concatenation along the channel axis');
      else {
        for (const v of ins.slice(1)) flow.unionRefs(x.ref, v.ref!, where);
        const shape = ins.every((v) => v.shape) ? x.shape!.map((d, i) => (i === axis ? (ins.every((v) => typeof v.shape![i] === 'number') ? ins.reduce((p, v) => p + (v.shape![i] as number), 0) : null) : d)) : null;
        out = { shape, ref: x.ref };
      }
    } else {
      out = unknown(c, ins);
    }
    // An unknown layer's weights (and those of layers with extra ones) are kept, unpermuted.
    for (const [name] of tensors) {
      const parts = name.replace(/:\d+$/, '').split('/');
      if (!claimed.has(name) && parts[parts.length - 2] === l.name) {
        const pytorch = `${l.name}.${parts[parts.length - 1]}`;
        if (!flow.hasTensor(pytorch)) copyParam(l, parts[parts.length - 1], pytorch, null, where);
      }
    }
    vals.set(`${l.name}#${c.index}#0`, out);
  }
  for (const r of topology.outputs) {
    const v = vals.get(key(r));
    if (v?.ref) flow.fix(v.ref.space, 'model output');
  }
  for (const [name, t] of tensors) {
    if (claimed.has(name)) continue;
    const pytorch = name.replace(/:\d+$/, '').replace(/\//g, '.');
    flow.warnings.push(`weight "${name}" belongs to no layer of the topology; kept as "${pytorch}", unpermuted`);
    flow.setTensor(pytorch, [...t.shape], t.shape.map(() => null), 'weights');
    params.push({ keras: name, pytorch, kind: 'copy' });
  }
  return { ...flow.finish(), params };
}

/** Keras [k…, in, out] → [out, in, k…]. */
function convToPytorch(r: ArrayRecord): ArrayRecord {
  const ks = r.shape.slice(0, -2);
  const [cin, cout] = r.shape.slice(-2);
  const K = ks.reduce((p, q) => p * q, 1);
  const out = new Float32Array(r.data.length);
  for (let k = 0; k < K; k++) for (let i = 0; i < cin; i++) for (let o = 0; o < cout; o++) out[(o * cin + i) * K + k] = r.data[(k * cin + i) * cout + o];
  return { shape: [cout, cin, ...ks], data: out };
}

function convToKeras(r: ArrayRecord): ArrayRecord {
  const [cout, cin, ...ks] = r.shape;
  const K = ks.reduce((p, q) => p * q, 1);
  const out = new Float32Array(r.data.length);
  for (let k = 0; k < K; k++) for (let i = 0; i < cin; i++) for (let o = 0; o < cout; o++) out[(k * cin + i) * cout + o] = r.data[(o * cin + i) * K + k];
  return { shape: [...ks, cin, cout], data: out };
}

/** Row of the Keras kernel that feeds PyTorch input feature j (identity without a reorder). */
function kerasRow(j: number, reorder: TfjsParamPlan['reorder']): number {
  if (!reorder) return j;
  const c = Math.floor(j / reorder.spatial);
  const s = j % reorder.spatial;
  return s * reorder.channels + c;
}

function denseToPytorch(r: ArrayRecord, reorder: TfjsParamPlan['reorder']): ArrayRecord {
  const [nin, nout] = r.shape;
  const out = new Float32Array(r.data.length);
  for (let o = 0; o < nout; o++) for (let j = 0; j < nin; j++) out[o * nin + j] = r.data[kerasRow(j, reorder) * nout + o];
  return { shape: [nout, nin], data: out };
}

function denseToKeras(r: ArrayRecord, reorder: TfjsParamPlan['reorder']): ArrayRecord {
  const [nout, nin] = r.shape;
  const out = new Float32Array(r.data.length);
  for (let o = 0; o < nout; o++) for (let j = 0; j < nin; j++) out[kerasRow(j, reorder) * nout + o] = r.data[o * nin + j];
  return { shape: [nin, nout], data: out };
}

/**
 * Keras-named, Keras-layout weights → PyTorch names and layouts (see the module comment), with
 * the spec inferred on the way. `names` maps each PyTorch name to its Keras weight.
 */
export function tfjsToPytorchLayout(model: { topology: KerasTopology; tensors: StateDict; source?: string }): { tensors: StateDict; names: Map<string, string>; spec: TfjsSpecResult } {
  const spec = inferSpecFromTfjs(model);
  const tensors: StateDict = new Map();
  const names = new Map<string, string>();
  for (const p of spec.params) {
    const r = model.tensors.get(p.keras)!;
    const conv = p.kind === 'dense' && r.shape.length === 2 ? denseToPytorch(r, p.reorder) : p.kind === 'conv' && r.shape.length >= 3 ? convToPytorch(r) : { shape: [...r.shape], data: r.data };
    tensors.set(p.pytorch, conv);
    names.set(p.pytorch, p.keras);
  }
  return { tensors, names, spec };
}

/** The inverse of `tfjsToPytorchLayout`: PyTorch names/layouts back to the model's Keras names/layouts. */
export function pytorchToTfjsLayout(model: { topology: KerasTopology; tensors: StateDict; source?: string }, pytorch: ReadonlyMap<string, ArrayRecord>): StateDict {
  const spec = inferSpecFromTfjs(model);
  const out: StateDict = new Map();
  for (const p of spec.params) {
    const r = pytorch.get(p.pytorch);
    if (!r) throw new Error(`pytorchToTfjsLayout: tensor "${p.pytorch}" (Keras "${p.keras}") is missing`);
    const back = p.kind === 'dense' && r.shape.length === 2 ? denseToKeras(r, p.reorder) : p.kind === 'conv' && r.shape.length >= 3 ? convToKeras(r) : { shape: [...r.shape], data: r.data };
    out.set(p.keras, back);
  }
  // Keep the manifest's order.
  const ordered: StateDict = new Map();
  for (const name of model.tensors.keys()) if (out.has(name)) ordered.set(name, out.get(name)!);
  return ordered;
}
