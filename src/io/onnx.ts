/**
 * ONNX models: a reader (protobufjs over the schema subset in onnx-proto.ts), the channel-flow
 * engine that spec inference shares with the TF.js reader (SpecFlow), and permutation-spec
 * inference from an ONNX graph.
 *
 * Reading: `readOnnx(path)` / `parseOnnx(bytes)` return the graph's nodes, initializers (every
 * numeric dtype converted to float32, integers also kept exactly for shape constants), inputs
 * and outputs. Malformed or truncated files throw FormatError naming the file and what broke;
 * tensors stored as external data are a FormatError naming the tensor (not supported).
 *
 * Spec inference: `inferSpecFromOnnx(model)` applies the rules of models/graph.ts `deriveSpec`
 * to the ONNX ops (table at `inferSpecFromOnnx`).
 */
import { readWhole } from './files.js';
import { FormatError, describeError } from './errors.js';
import { float16BitsToFloat32, bfloat16BitsToFloat32 } from './safetensors.js';
import type { StateDict } from './records.js';
import {
  ONNX_ATTR, ONNX_DTYPE, decodeModelProto, int64ToNumber,
  type RawAttribute, type RawModel, type RawTensor, type RawValueInfo,
} from './onnx-proto.js';
import { UnionFind } from '../permutation/union-find.js';
import type { AxisPerm, PermutationSpec } from '../permutation/spec.js';

// ============================================================================ reading

/** One dimension of a value's static shape: a size, a symbolic name (e.g. "batch"), or unknown. */
export type Dim = number | string | null;

export interface OnnxTensor {
  name: string;
  dims: number[];
  /** TensorProto.DataType code. */
  dataType: number;
  /** 'float32', 'float16', 'bfloat16', 'float64', 'int64', 'int32', ..., 'string', 'complex64'. */
  dtype: string;
  /** Values converted to float32 (as the safetensors reader does); null for string and complex tensors. */
  data: Float32Array | null;
  /** Exact values of integer and bool tensors (shape constants); null otherwise. */
  ints: number[] | null;
}

export interface OnnxAttribute {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: string;
  t?: OnnxTensor;
  floats?: number[];
  ints?: number[];
  strings?: string[];
}

export interface OnnxNode {
  /** May be empty in the file; `label` is always usable in messages. */
  name: string;
  label: string;
  opType: string;
  domain: string;
  /** Input value names; '' marks an omitted optional input. */
  inputs: string[];
  outputs: string[];
  attributes: Map<string, OnnxAttribute>;
}

export interface OnnxValueInfo {
  name: string;
  /** TensorProto.DataType of the elements, or null when not a tensor / not given. */
  elemType: number | null;
  /** Static shape, or null when the rank is unknown. */
  shape: Dim[] | null;
}

export interface OnnxModel {
  source: string;
  irVersion: number;
  producerName: string;
  producerVersion: string;
  opsets: { domain: string; version: number }[];
  graphName: string;
  nodes: OnnxNode[];
  initializers: Map<string, OnnxTensor>;
  /** Graph inputs that are not initializers (the network's real inputs). */
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  valueInfo: Map<string, OnnxValueInfo>;
  metadata: Record<string, string>;
}

const DTYPE_NAMES: Record<number, string> = {
  0: 'undefined', 1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 8: 'string',
  9: 'bool', 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64', 14: 'complex64', 15: 'complex128', 16: 'bfloat16',
};
/** Bytes per element in raw_data. */
const DTYPE_SIZE: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2 };
const FLOAT_TYPES = new Set<number>([ONNX_DTYPE.FLOAT, ONNX_DTYPE.FLOAT16, ONNX_DTYPE.DOUBLE, ONNX_DTYPE.BFLOAT16]);
/** Largest tensor we materialise (elements); beyond it the file is certainly corrupt for our purposes. */
const MAX_ELEMENTS = 2 ** 31 - 1;

export function onnxDtypeName(code: number): string {
  return DTYPE_NAMES[code] ?? `unknown(${code})`;
}

export function isFloatTensor(t: OnnxTensor): boolean {
  return FLOAT_TYPES.has(t.dataType) && t.data !== null;
}

const utf8 = new TextDecoder('utf-8', { fatal: false });
const str = (b: Uint8Array | undefined | null) => (b && b.length ? utf8.decode(b) : '');

function tensorError(source: string, name: string, detail: string): FormatError {
  return new FormatError(source, name, detail, { label: `tensor "${name}"` });
}

/** Decodes raw little-endian bytes of `n` elements of ONNX type `dt`. */
function decodeRaw(raw: Uint8Array, dt: number, n: number): { data: Float32Array; ints: number[] | null } {
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const data = new Float32Array(n);
  let ints: number[] | null = null;
  switch (dt) {
    case 1: for (let i = 0; i < n; i++) data[i] = dv.getFloat32(4 * i, true); break;
    case 11: for (let i = 0; i < n; i++) data[i] = dv.getFloat64(8 * i, true); break;
    case 10: for (let i = 0; i < n; i++) data[i] = float16BitsToFloat32(dv.getUint16(2 * i, true)); break;
    case 16: for (let i = 0; i < n; i++) data[i] = bfloat16BitsToFloat32(dv.getUint16(2 * i, true)); break;
    default: {
      ints = new Array<number>(n);
      for (let i = 0; i < n; i++) {
        let v: number;
        switch (dt) {
          case 2: case 9: v = dv.getUint8(i); break;
          case 3: v = dv.getInt8(i); break;
          case 4: v = dv.getUint16(2 * i, true); break;
          case 5: v = dv.getInt16(2 * i, true); break;
          case 6: v = dv.getInt32(4 * i, true); break;
          case 12: v = dv.getUint32(4 * i, true); break;
          case 7: v = Number(dv.getBigInt64(8 * i, true)); break;
          default: v = Number(dv.getBigUint64(8 * i, true)); break;
        }
        ints[i] = v;
        data[i] = v;
      }
    }
  }
  return { data, ints };
}

/** Converts one TensorProto, checking dims against the data it carries. */
function convertTensor(raw: RawTensor, source: string, fallbackName: string): OnnxTensor {
  const name = raw.name || fallbackName;
  const dims = (raw.dims ?? []).map(int64ToNumber);
  for (const d of dims) {
    if (!(Number.isSafeInteger(d) && d >= 0)) throw tensorError(source, name, `dims must be non-negative integers, got [${dims.join(', ')}]`);
  }
  let n = 1;
  for (const d of dims) {
    n *= d;
    if (n > MAX_ELEMENTS) throw tensorError(source, name, `dims [${dims.join(', ')}] exceed ${MAX_ELEMENTS} elements`);
  }
  const dt = raw.data_type;
  const dtype = onnxDtypeName(dt);
  const external = raw.external_data ?? [];
  if (raw.data_location === 1 || external.length > 0) {
    const loc = external.find((e) => e.key === 'location')?.value;
    throw tensorError(source, name, `is stored as external data${loc ? ` (location "${loc}")` : ''}: not supported; save the model with its weights inside (onnx.save_model(model, path, save_as_external_data=False))`);
  }
  if (raw.segment) throw tensorError(source, name, 'is a segment of a larger tensor: not supported');
  if (DTYPE_SIZE[dt] === undefined && dt !== ONNX_DTYPE.STRING) throw tensorError(source, name, `unknown data_type ${dt}`);
  if (dt === ONNX_DTYPE.STRING || dt === ONNX_DTYPE.COMPLEX64 || dt === ONNX_DTYPE.COMPLEX128) {
    return { name, dims, dataType: dt, dtype, data: null, ints: null };
  }
  const rawData = raw.raw_data;
  if (rawData && rawData.length > 0) {
    const want = n * DTYPE_SIZE[dt];
    if (rawData.length !== want) {
      throw tensorError(source, name, `raw_data has ${rawData.length} bytes but dims [${dims.join(', ')}] of ${dtype} need ${want}`);
    }
    const { data, ints } = decodeRaw(rawData, dt, n);
    return { name, dims, dataType: dt, dtype, data, ints };
  }
  // Typed fields, as onnx.proto assigns them per data_type.
  let field: string;
  let values: ArrayLike<unknown>;
  switch (dt) {
    case 1: field = 'float_data'; values = raw.float_data ?? []; break;
    case 11: field = 'double_data'; values = raw.double_data ?? []; break;
    case 7: field = 'int64_data'; values = raw.int64_data ?? []; break;
    case 12: case 13: field = 'uint64_data'; values = raw.uint64_data ?? []; break;
    default: field = 'int32_data'; values = raw.int32_data ?? []; break;
  }
  if (values.length !== n) {
    throw tensorError(source, name, `${field} has ${values.length} values but dims [${dims.join(', ')}] need ${n}${values.length === 0 ? ' (the tensor carries no data)' : ''}`);
  }
  const data = new Float32Array(n);
  let ints: number[] | null = null;
  if (dt === 10 || dt === 16) {
    // float16/bfloat16 travel as their bit patterns in int32_data.
    const dec = dt === 10 ? float16BitsToFloat32 : bfloat16BitsToFloat32;
    for (let i = 0; i < n; i++) data[i] = dec(Number(values[i]) & 0xffff);
  } else if (FLOAT_TYPES.has(dt)) {
    for (let i = 0; i < n; i++) data[i] = Number(values[i]);
  } else {
    ints = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      const v = int64ToNumber(values[i]);
      ints[i] = v;
      data[i] = v;
    }
  }
  return { name, dims, dataType: dt, dtype, data, ints };
}

function convertAttribute(a: RawAttribute, source: string, node: string): OnnxAttribute {
  const out: OnnxAttribute = { name: a.name, type: a.type };
  // Older writers leave `type` unset; then whichever field is present decides.
  const type = a.type || (a.t ? ONNX_ATTR.TENSOR : a.ints?.length ? ONNX_ATTR.INTS : a.floats?.length ? ONNX_ATTR.FLOATS : a.s?.length ? ONNX_ATTR.STRING : 0);
  out.type = type;
  switch (type) {
    case ONNX_ATTR.FLOAT: out.f = a.f; break;
    case ONNX_ATTR.INT: out.i = int64ToNumber(a.i); break;
    case ONNX_ATTR.STRING: out.s = str(a.s); break;
    case ONNX_ATTR.TENSOR:
      if (!a.t) throw new FormatError(source, node, `attribute "${a.name}" is a tensor attribute without a tensor`, { label: `node ${node}` });
      out.t = convertTensor(a.t, source, `${node}.${a.name}`);
      break;
    case ONNX_ATTR.FLOATS: out.floats = [...(a.floats ?? [])]; break;
    case ONNX_ATTR.INTS: out.ints = (a.ints ?? []).map(int64ToNumber); break;
    case ONNX_ATTR.STRINGS: out.strings = (a.strings ?? []).map(str); break;
    default: break; // graphs, tensors lists, type protos: not used by the spec inference
  }
  return out;
}

function convertValueInfo(v: RawValueInfo): OnnxValueInfo {
  const tt = v.type?.tensor_type;
  if (!tt) return { name: v.name, elemType: null, shape: null };
  const dims = tt.shape?.dim;
  const shape: Dim[] | null = tt.shape ? (dims ?? []).map((d) => {
    if (Object.prototype.hasOwnProperty.call(d, 'dim_value')) {
      const x = int64ToNumber(d.dim_value);
      return Number.isSafeInteger(x) && x >= 0 ? x : null;
    }
    if (Object.prototype.hasOwnProperty.call(d, 'dim_param') && d.dim_param) return d.dim_param;
    return null;
  }) : null;
  return { name: v.name, elemType: tt.elem_type || null, shape };
}

/** Parses ONNX ModelProto bytes. `source` names the file in errors. */
export function parseOnnx(bytes: Uint8Array, source = '<buffer>'): OnnxModel {
  let raw: RawModel;
  try {
    raw = decodeModelProto(bytes);
  } catch (e) {
    throw new FormatError(source, 'protobuf', `not a valid ONNX model: the protobuf does not decode (${describeError(e)}); the file is truncated or corrupt`, { label: 'ModelProto', cause: e });
  }
  const g = raw.graph;
  if (!g) throw new FormatError(source, 'graph', 'ModelProto has no graph (not an ONNX model, or an empty/truncated file)');
  const irVersion = int64ToNumber(raw.ir_version);
  const initializers = new Map<string, OnnxTensor>();
  (g.initializer ?? []).forEach((t, i) => {
    const tensor = convertTensor(t, source, `initializer[${i}]`);
    if (!t.name) throw new FormatError(source, `initializer[${i}]`, 'initializer has no name');
    if (initializers.has(tensor.name)) throw tensorError(source, tensor.name, 'initializer name appears twice');
    initializers.set(tensor.name, tensor);
  });
  const nodes: OnnxNode[] = (g.node ?? []).map((n, i) => {
    const label = n.name ? `"${n.name}"` : `#${i}`;
    if (!n.op_type) throw new FormatError(source, `node[${i}]`, 'node has no op_type', { label: `node ${label}` });
    const attributes = new Map<string, OnnxAttribute>();
    for (const a of n.attribute ?? []) attributes.set(a.name, convertAttribute(a, source, n.name || `#${i}`));
    return { name: n.name, label: `${label} (${n.op_type})`, opType: n.op_type, domain: n.domain ?? '', inputs: [...(n.input ?? [])], outputs: [...(n.output ?? [])], attributes };
  });
  const inputs = (g.input ?? []).map(convertValueInfo).filter((v) => !initializers.has(v.name));
  const outputs = (g.output ?? []).map(convertValueInfo);
  const valueInfo = new Map<string, OnnxValueInfo>();
  for (const v of g.value_info ?? []) valueInfo.set(v.name, convertValueInfo(v));
  const metadata: Record<string, string> = {};
  for (const kv of raw.metadata_props ?? []) metadata[kv.key] = kv.value;
  return {
    source, irVersion: Number.isFinite(irVersion) ? irVersion : 0,
    producerName: raw.producer_name ?? '', producerVersion: raw.producer_version ?? '',
    opsets: (raw.opset_import ?? []).map((o) => ({ domain: o.domain ?? '', version: int64ToNumber(o.version) })),
    graphName: g.name ?? '', nodes, initializers, inputs, outputs, valueInfo, metadata,
  };
}

/** Reads and parses an .onnx file (weights must be inside the file). */
export async function readOnnx(path: string): Promise<OnnxModel> {
  // Through the file-access policy (io/files.ts); a protobuf message cannot exceed 2 GiB anyway.
  return parseOnnx(await readWhole(path, { tooLarge: 'ONNX files are read whole and protobuf caps them at 2 GiB; larger models keep their weights as external data, which rebasin does not read' }), path);
}

/** The float initializers as named records (ONNX layouts, e.g. MatMul weights [in, out]). */
export function onnxInitializersToState(model: OnnxModel): StateDict {
  const out: StateDict = new Map();
  for (const t of model.initializers.values()) {
    if (isFloatTensor(t)) out.set(t.name, { shape: [...t.dims], data: t.data! });
  }
  return out;
}

// ============================================================================ channel flow

/**
 * Where a value's channels live: channel space `space` (a union–find element) on tensor axis
 * `axis`, each channel spread over `inner` consecutive positions of that axis (after a
 * channel-major flatten, as `{perm, inner}` in a spec).
 */
export interface ChanRef {
  space: number;
  inner: number;
  axis: number;
}

/** One permutation group found by the inference. */
export interface InferredGroup {
  /** Permutation id in the spec; null for fixed groups. */
  id: string | null;
  /** Channels (NaN when unknown, e.g. the output of an op the inference does not know). */
  size: number;
  /** Tensor axes it acts on, as `name[axis]`. */
  axes: string[];
  /** Why the group is fixed (empty for permuted groups): 'network input', 'model output', an op. */
  reasons: string[];
}

export interface FlowResult {
  spec: PermutationSpec;
  /** Permutation id → the weight tensor that opened the group (when known). */
  owners: Record<string, string>;
  /** Permuted groups, in spec order. */
  groups: InferredGroup[];
  /** Fixed groups that touch at least one tensor axis. */
  fixed: InferredGroup[];
  warnings: string[];
}

/**
 * Channel-flow bookkeeping shared by the ONNX and TF.js spec inference; the same rules as
 * models/graph.ts `deriveSpec`:
 * - every linear/conv output opens a channel space (`newSpace`), a candidate permutation;
 * - channel-wise ops pass their input's ref on; their per-channel tensors take that space;
 * - a residual add (or any elementwise op of two activations) unions the spaces (`union`);
 * - the network input and the model outputs are fixed, and so is every group an op the
 *   inference does not understand touches (`fix`, with the reason, reported as a warning);
 * - permutation ids are `P_<label of the group's first space>`, in order of creation.
 */
export class SpecFlow {
  private readonly uf = new UnionFind();
  /** Per root: channel count (NaN unknown) and the reasons it is fixed. */
  private readonly sizeOf = new Map<number, number>();
  private readonly fixedWhy = new Map<number, string[]>();
  private readonly labels: (string | null)[] = [];
  private readonly ownerTensors: (string | null)[] = [];
  private readonly tensors = new Map<string, { shape: number[]; axes: (ChanRef | null)[] }>();
  readonly warnings: string[] = [];
  private readonly deferred: { message: string; spaces: number[] }[] = [];

  /**
   * Warns at `finish` unless every group among `spaces` ends up fixed for the network input or a
   * model output anyway (an unknown op right before the output changes nothing).
   */
  warnIfMatters(message: string, spaces: number[]): void {
    this.deferred.push({ message, spaces });
  }

  /**
   * Opens a channel space of `size` channels, labelled for its permutation id; `owner` is the
   * weight whose output channels these are (lets callers rename ids with the tensor).
   */
  newSpace(size: number, label: string | null, owner: string | null = null): number {
    const s = this.uf.add();
    this.sizeOf.set(s, size);
    this.labels.push(label);
    this.ownerTensors.push(owner);
    return s;
  }

  size(space: number): number {
    return this.sizeOf.get(this.uf.find(space)) ?? NaN;
  }

  isFixed(space: number): boolean {
    return (this.fixedWhy.get(this.uf.find(space))?.length ?? 0) > 0;
  }

  /** Makes the group of `space` non-permutable; `warn` also reports it (when it was not fixed already). */
  fix(space: number, reason: string, warn = false): void {
    const r = this.uf.find(space);
    if (warn && !this.isFixed(r)) this.warnings.push(reason);
    const list = this.fixedWhy.get(r) ?? [];
    if (!list.includes(reason)) list.push(reason);
    this.fixedWhy.set(r, list);
  }

  /** Unions two spaces (they must have the same size); on a size conflict both are fixed. */
  union(a: number, b: number, where: string): boolean {
    const ra = this.uf.find(a);
    const rb = this.uf.find(b);
    if (ra === rb) return true;
    const sa = this.sizeOf.get(ra) ?? NaN;
    const sb = this.sizeOf.get(rb) ?? NaN;
    if (Number.isFinite(sa) && Number.isFinite(sb) && sa !== sb) {
      const why = `${where}: joins channel groups of different sizes (${sa} and ${sb})`;
      this.fix(ra, why, true);
      this.fix(rb, why);
      return false;
    }
    const r = this.uf.union(ra, rb);
    this.sizeOf.set(r, Number.isFinite(sa) ? sa : sb);
    const why = [...(this.fixedWhy.get(ra) ?? []), ...(this.fixedWhy.get(rb) ?? [])];
    if (why.length) this.fixedWhy.set(r, [...new Set(why)]);
    return true;
  }

  /** Unions two refs: same space relation and the same `inner`, else both are fixed. */
  unionRefs(a: ChanRef, b: ChanRef, where: string): boolean {
    if (a.inner !== b.inner) {
      const why = `${where}: joins channels laid out differently (inner ${a.inner} and ${b.inner})`;
      this.fix(a.space, why, true);
      this.fix(b.space, why, true);
      return false;
    }
    return this.union(a.space, b.space, where);
  }

  /**
   * Records a tensor's axes. A tensor met twice (a shared or tied weight) must be permuted the
   * same way at both uses: its refs are unioned, and an axis permuted at one use but not at the
   * other fixes the group.
   */
  setTensor(name: string, shape: readonly number[], axes: (ChanRef | null)[], where: string): void {
    const prev = this.tensors.get(name);
    if (!prev) {
      this.tensors.set(name, { shape: [...shape], axes: [...axes] });
      return;
    }
    if (prev.axes.length !== axes.length) return; // same tensor, same rank: cannot differ
    prev.axes.forEach((p, i) => {
      const q = axes[i];
      if (p && q) this.unionRefs(p, q, `${where}: tensor "${name}"`);
      else if (p || q) {
        const r = (p ?? q)!;
        this.fix(r.space, `${where}: tensor "${name}" axis ${i} is permuted at one use and not at another`, true);
        if (!p) prev.axes[i] = q;
      }
    });
  }

  hasTensor(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Builds the spec: one permutation per non-fixed group of known size that some tensor axis uses. */
  finish(): FlowResult {
    for (const d of this.deferred) {
      const matters = d.spaces.some((s) => !(this.fixedWhy.get(this.uf.find(s)) ?? []).some((r) => r === 'network input' || r === 'model output'));
      if (matters && !this.warnings.includes(d.message)) this.warnings.push(d.message);
    }
    // Safety net: an axis whose length is not size × inner would make an invalid spec.
    for (const [name, t] of this.tensors) {
      t.axes.forEach((a, i) => {
        if (!a) return;
        const n = this.size(a.space);
        if (!this.isFixed(a.space) && Number.isFinite(n) && t.shape[i] !== n * a.inner) {
          this.fix(a.space, `tensor "${name}" axis ${i} has length ${t.shape[i]}, not ${n} channels × ${a.inner}`, true);
        }
      });
    }
    const used = new Set<number>();
    for (const t of this.tensors.values()) for (const a of t.axes) if (a) used.add(this.uf.find(a.space));
    const idOf = new Map<number, string>();
    const perms: Record<string, number> = {};
    const taken = new Set<string>();
    const groups: InferredGroup[] = [];
    const fixed: InferredGroup[] = [];
    const info = new Map<number, InferredGroup>();
    const owners: Record<string, string> = {};
    for (const members of this.uf.groups()) {
      const root = this.uf.find(members[0]);
      if (!used.has(root)) continue;
      const size = this.sizeOf.get(root) ?? NaN;
      if (!this.isFixed(root) && !(Number.isInteger(size) && size > 0)) this.fix(root, 'channel count unknown', true);
      const g: InferredGroup = { id: null, size, axes: [], reasons: [...(this.fixedWhy.get(root) ?? [])] };
      info.set(root, g);
      if (this.isFixed(root)) {
        fixed.push(g);
        continue;
      }
      const first = members.find((m) => this.labels[m]);
      const label = first !== undefined ? this.labels[first]! : `group${members[0]}`;
      let id = `P_${label}`;
      for (let k = 2; taken.has(id); k++) id = `P_${label}#${k}`;
      taken.add(id);
      g.id = id;
      idOf.set(root, id);
      perms[id] = size;
      if (first !== undefined && this.ownerTensors[first]) owners[id] = this.ownerTensors[first]!;
      groups.push(g);
    }
    const axes: Record<string, AxisPerm[]> = {};
    for (const [name, t] of this.tensors) {
      axes[name] = t.axes.map((a, i) => {
        if (!a) return null;
        const root = this.uf.find(a.space);
        info.get(root)?.axes.push(`${name}[${i}]`);
        const id = idOf.get(root);
        if (id === undefined) return null;
        return a.inner === 1 ? id : { perm: id, inner: a.inner };
      });
    }
    return { spec: { perms, axes }, owners, groups, fixed, warnings: [...this.warnings] };
  }
}

// ============================================================================ ONNX spec inference

/** How one initializer is known in a PyTorch checkpoint. */
export interface OnnxNameMapping {
  initializer: string;
  /** Name in the checkpoint (or the best guess without one). */
  name: string;
  /** The checkpoint tensor is the 2-D initializer transposed (e.g. MatMul's [in, out] vs Linear's [out, in]). */
  transposed: boolean;
  /**
   * 'initializer': same name; 'alias': the graph value that reads the initializer through
   * Identity carries the name (the exporter de-duplicates equal tensors this way); 'node-name':
   * from the node's scoped name (`/layer1/layer1.0/conv1/Conv` → `layer1.0.conv1.weight`);
   * 'values': equal data in the checkpoint; 'unmapped': no match, the initializer name is kept.
   */
  via: 'initializer' | 'alias' | 'node-name' | 'values' | 'unmapped';
}

/** Named tensors to match initializers against (Params or a StateDict both fit). */
export type NamedArrays = ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>;

export interface OnnxInferOptions {
  /**
   * Keys of the returned `spec`: 'initializer' (the ONNX initializer names) or 'pytorch'
   * (checkpoint names, see `nameMap`). Default: 'pytorch' when `checkpoint` is given, else
   * 'initializer'.
   */
  names?: 'initializer' | 'pytorch';
  /** Tensors of the PyTorch checkpoint whose names the spec should use. */
  checkpoint?: NamedArrays;
  /** Static shapes for graph inputs, overriding the file's (e.g. to fix a dynamic spatial size). */
  inputShapes?: Record<string, Dim[]>;
}

export interface OnnxSpecResult extends FlowResult {
  /** Keyed as `names` says. */
  names: 'initializer' | 'pytorch';
  /** Keyed by initializer name, ONNX layouts: fits `onnxInitializersToState(model)`. */
  initializerSpec: PermutationSpec;
  /** Keyed by PyTorch name, PyTorch layouts (transposed tensors have their axes reversed). */
  pytorchSpec: PermutationSpec;
  nameMap: OnnxNameMapping[];
}

interface Konst {
  dims: number[];
  values: Dim[];
}

interface Val {
  shape: Dim[] | null;
  /** Channel tracking for activations (values computed from the network input). */
  ref: ChanRef | null;
  /** Backed by an initializer (directly or through Identity): the initializer and this value's name. */
  param?: { init: string; alias: string };
  /** A small known integer constant (shape arithmetic); symbolic dims allowed. */
  konst?: Konst;
}

type Role = 'weight' | 'bias' | 'running_mean' | 'running_var' | 'other';

interface Use {
  init: string;
  alias: string;
  role: Role;
  node: OnnxNode;
  /** PyTorch stores this tensor transposed relative to ONNX (MatMul B, Gemm B without transB). */
  pytorchTransposed: boolean;
}

const UNARY = new Set([
  'Relu', 'LeakyRelu', 'Elu', 'Selu', 'Celu', 'Gelu', 'Sigmoid', 'HardSigmoid', 'HardSwish', 'Tanh', 'Softplus', 'Softsign',
  'Mish', 'ThresholdedRelu', 'Erf', 'Exp', 'Log', 'Abs', 'Neg', 'Sqrt', 'Reciprocal', 'Floor', 'Ceil', 'Round', 'Sign',
  'Sin', 'Cos', 'Clip', 'Not', 'IsNaN', 'IsInf', 'Shrink', 'Softmax', 'LogSoftmax', 'Hardmax', 'Cast', 'CastLike', 'Identity',
]);
const BINARY = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean', 'PRelu', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Mod']);
const POOL = new Set(['MaxPool', 'AveragePool', 'LpPool']);
const REDUCE = new Set(['ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare']);
const GLOBAL_POOL = new Set(['GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool']);

/**
 * PyTorch's exporter names nodes by module scope: `/layer2/layer2.0/downsample/downsample.0/Conv`,
 * where a segment that extends the previous one by `.k` is a Sequential child. Returns the
 * module path (`layer2.0.downsample.0`), or null for unscoped names.
 */
export function pytorchModulePath(nodeName: string): string | null {
  if (!nodeName.startsWith('/')) return null;
  const segs = nodeName.split('/').filter((s) => s.length > 0);
  if (segs.length < 2) return null;
  segs.pop(); // the op, e.g. "Conv" or "Relu_1"
  let path = '';
  let prev = '';
  for (const s of segs) {
    if (prev && s.startsWith(prev + '.')) path += s.slice(prev.length);
    else path = path ? `${path}.${s}` : s;
    prev = s;
  }
  return path || null;
}

const WEIGHT_SUFFIX = /\.(weight|kernel)$/;

/** Label of a conv/linear output space: its module path, as models/graph.ts ids are. */
function moduleLabel(node: OnnxNode, init: string): string {
  if (!init.startsWith('onnx::') && WEIGHT_SUFFIX.test(init)) return init.replace(WEIGHT_SUFFIX, '');
  return pytorchModulePath(node.name) ?? (node.name || (init.startsWith('onnx::') ? node.outputs[0] : init) || init);
}

function dimEq(a: Dim, b: Dim): boolean {
  return a !== null && b !== null && a === b;
}

function prodDims(ds: readonly Dim[]): number | null {
  let p = 1;
  for (const d of ds) {
    if (typeof d !== 'number') return null;
    p *= d;
  }
  return p;
}

/** Numpy-style broadcast of static shapes (unknown dims stay unknown unless the other side says). */
function broadcastShapes(shapes: Dim[][]): Dim[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let j = 0; j < rank; j++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const e = s[j - (rank - s.length)];
      if (e === undefined || e === 1) continue;
      d = d === 1 ? e : dimEq(d, e) ? d : d ?? e;
    }
    out.push(d);
  }
  return out;
}

/**
 * The nodes in file order when that is topological (as ONNX requires; the order also decides
 * permutation ids), else a topological order that stays as close to file order as possible.
 */
function topoOrder(nodes: OnnxNode[]): OnnxNode[] {
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => n.outputs.forEach((o) => { if (o && !producer.has(o)) producer.set(o, i); }));
  const valid = nodes.every((n, i) => n.inputs.every((inp) => (producer.get(inp) ?? -1) < i));
  if (valid) return nodes;
  const waiting = nodes.map(() => 0);
  const consumers = nodes.map(() => [] as number[]);
  nodes.forEach((n, i) => {
    for (const inp of new Set(n.inputs)) {
      const p = producer.get(inp);
      if (p !== undefined && p !== i) {
        waiting[i]++;
        consumers[p].push(i);
      }
    }
  });
  // Ready nodes kept sorted by file index: always take the earliest.
  const ready: number[] = [];
  const insert = (i: number) => {
    let lo = 0;
    let hi = ready.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ready[mid] < i) lo = mid + 1;
      else hi = mid;
    }
    ready.splice(lo, 0, i);
  };
  waiting.forEach((w, i) => { if (w === 0) ready.push(i); });
  const order: OnnxNode[] = [];
  const done = new Uint8Array(nodes.length);
  while (ready.length) {
    const i = ready.shift()!;
    done[i] = 1;
    order.push(nodes[i]);
    for (const c of consumers[i]) if (--waiting[c] === 0) insert(c);
  }
  // A cycle (invalid ONNX): keep file order for the rest; their inputs read as unknown.
  nodes.forEach((n, i) => { if (!done[i]) order.push(n); });
  return order;
}

/**
 * Infers the permutation spec of an ONNX graph. Ops understood (everything else fixes the
 * groups it touches, with a warning naming the node):
 * - Gemm (transA=0; transB=1 is PyTorch's Linear, B [out, in]; transB=0 has B [in, out]),
 *   MatMul with an initializer B [in, out] (acts on the last axis), Conv (weight
 *   [out, in, k…], bias; depthwise groups follow their input, other groups are fixed);
 * - BatchNormalization / InstanceNormalization (per-channel tensors follow their input),
 *   LayerNormalization (equivariant; scale/bias by broadcasting);
 * - elementwise unary ops, Dropout, Identity, Cast, Softmax (channel-wise: transparent);
 * - Add/Sub/Mul/Div/Max/Min/Sum/Mean/Pow/PRelu: activations are unioned (residual adds), an
 *   initializer operand is a per-channel tensor by broadcasting (MatMul + Add bias);
 * - MaxPool/AveragePool/LpPool/Global*Pool/Pad (spatial only): transparent, shapes tracked;
 * - Flatten and Reshape that merge the channel axis with the axes after it (channel-major):
 *   `inner` ×= their size; Squeeze/Unsqueeze/Transpose move the channel axis; Concat along a
 *   non-channel axis unions its inputs;
 * - Shape/Gather/Unsqueeze/Concat/Slice/Cast on shapes are evaluated, so PyTorch's
 *   `x.view(x.size(0), -1)` is recognised as a flatten.
 * Static shapes start from the graph inputs (symbolic batch allowed) and follow Conv/Pool
 * arithmetic; `value_info` fills in where the inference cannot.
 */
export function inferSpecFromOnnx(model: OnnxModel, opts: OnnxInferOptions = {}): OnnxSpecResult {
  const flow = new SpecFlow();
  const vals = new Map<string, Val>();
  const uses: Use[] = [];
  const inits = model.initializers;
  const warnOnce = new Set<string>();
  const warn = (msg: string) => {
    if (!warnOnce.has(msg)) {
      warnOnce.add(msg);
      flow.warnings.push(msg);
    }
  };

  for (const t of inits.values()) {
    const v: Val = { shape: [...t.dims], ref: null };
    if (isFloatTensor(t)) v.param = { init: t.name, alias: t.name };
    if (t.ints && t.ints.length <= 64) v.konst = { dims: [...t.dims], values: [...t.ints] };
    vals.set(t.name, v);
  }
  for (const inp of model.inputs) {
    const given = opts.inputShapes?.[inp.name] ?? inp.shape;
    // Unnamed dynamic dims get a token so equal dims still compare equal downstream.
    const shape = given ? given.map((d, i) => (d === null ? `?${inp.name}:${i}` : d)) : null;
    const rank = shape?.length ?? 2;
    // Images (N, C, …) carry channels on axis 1, sequences (N, T, D) into MatMul on the last;
    // the input group is fixed either way, this only makes the report name the right size.
    const firstUse = model.nodes.find((n) => n.inputs.includes(inp.name));
    const axis = rank === 3 && firstUse && firstUse.opType !== 'Conv' ? 2 : rank >= 2 ? 1 : 0;
    const size = shape && typeof shape[axis] === 'number' ? shape[axis] as number : NaN;
    const s = flow.newSpace(size, null);
    flow.fix(s, 'network input');
    vals.set(inp.name, { shape, ref: { space: s, inner: 1, axis } });
  }

  const opaque: Val = { shape: null, ref: null };
  const get = (name: string | undefined, node: OnnxNode): Val => {
    if (!name) return opaque;
    const v = vals.get(name);
    if (!v) {
      warn(`node ${node.label}: input "${name}" is not produced by any node before it`);
      return opaque;
    }
    return v;
  };
  const shapeOf = (name: string, v: Val): Dim[] | null => v.shape ?? model.valueInfo.get(name)?.shape ?? null;
  const set = (node: OnnxNode, i: number, v: Val) => {
    const name = node.outputs[i];
    if (!name) return;
    if (!v.shape) {
      const vi = model.valueInfo.get(name)?.shape;
      if (vi) v = { ...v, shape: vi };
    }
    vals.set(name, v);
  };
  const setRest = (node: OnnxNode, from: number) => {
    for (let i = from; i < node.outputs.length; i++) set(node, i, { shape: null, ref: null });
  };
  const attrI = (n: OnnxNode, k: string, d: number) => n.attributes.get(k)?.i ?? d;
  const attrInts = (n: OnnxNode, k: string) => n.attributes.get(k)?.ints;
  const konstOf = (name: string | undefined, node: OnnxNode): Dim[] | null => (name ? get(name, node).konst?.values ?? null : null);

  /** Records an initializer operand with its axes. */
  const param = (node: OnnxNode, v: Val, axes: (ChanRef | null)[], role: Role, pytorchTransposed = false) => {
    const p = v.param!;
    const t = inits.get(p.init)!;
    const ax = t.dims.length === axes.length ? axes : t.dims.map(() => null);
    if (t.dims.length !== axes.length) warn(`node ${node.label}: tensor "${p.init}" has shape [${t.dims.join(', ')}], unexpected for its role; not permuted`);
    for (const a of axes) if (a && t.dims.length !== axes.length) flow.fix(a.space, `node ${node.label}: unexpected shape of "${p.init}"`, true);
    flow.setTensor(p.init, t.dims, ax, `node ${node.label}`);
    uses.push({ init: p.init, alias: p.alias, role, node, pytorchTransposed });
  };
  /** A per-channel initializer broadcast against an activation of rank `outRank` with channels `ref`. */
  const broadcastParam = (node: OnnxNode, v: Val, ref: ChanRef, outRank: number, role: Role) => {
    const dims = inits.get(v.param!.init)!.dims;
    const off = outRank - dims.length;
    param(node, v, dims.map((d, i) => (off >= 0 && i + off === ref.axis && d !== 1 ? { ...ref } : null)), role);
  };
  /** Operands other than activations/initializers: fine when they broadcast over the channels. */
  const constOperandOk = (v: Val, ref: ChanRef, outRank: number): boolean => {
    const s = v.shape ?? (v.konst ? v.konst.dims : null);
    if (!s) return false;
    const off = outRank - s.length;
    const i = ref.axis - off;
    return i < 0 || i >= s.length || s[i] === 1;
  };
  /** Fixes every input group; returns those not fixed before (the ones worth a warning). */
  const fixAll = (node: OnnxNode, reason: string) => {
    const fresh: number[] = [];
    for (const name of node.inputs) {
      const v = name ? vals.get(name) : undefined;
      if (v?.ref) {
        if (!flow.isFixed(v.ref.space)) fresh.push(v.ref.space);
        flow.fix(v.ref.space, reason);
      }
    }
    return fresh;
  };
  /** An op the inference does not understand: fix every group it touches; outputs get fixed spaces. */
  const unknown = (node: OnnxNode, why?: string, out?: { shape: Dim[] | null; axis: number }) => {
    const reason = `node ${node.label}: ${why ?? `op ${node.domain ? node.domain + '.' : ''}${node.opType} is not known to be channel-wise`}`;
    const touched = fixAll(node, reason);
    let activation = false;
    for (const name of node.inputs) {
      const v = name ? vals.get(name) : undefined;
      if (v?.ref) activation = true;
      else if (v?.param) {
        const t = inits.get(v.param.init)!;
        flow.setTensor(v.param.init, t.dims, t.dims.map(() => null), `node ${node.label}`);
        uses.push({ init: v.param.init, alias: v.param.alias, role: 'other', node, pytorchTransposed: false });
      }
    }
    node.outputs.forEach((_, i) => {
      if (!activation) return set(node, i, { shape: null, ref: null });
      const size = out?.shape && i === 0 && typeof out.shape[out.axis] === 'number' ? (out.shape[out.axis] as number) : NaN;
      const s = flow.newSpace(size, null);
      flow.fix(s, reason);
      set(node, i, { shape: i === 0 ? out?.shape ?? null : null, ref: { space: s, inner: 1, axis: i === 0 ? out?.axis ?? 1 : 1 } });
    });
    if (touched.length) flow.warnIfMatters(`${reason}: the channel groups it touches are left unpermuted`, touched);
  };
  /** The activation must carry its channels on `axis`; otherwise its group is fixed. */
  const needAxis = (node: OnnxNode, ref: ChanRef, axis: number, what: string): boolean => {
    if (ref.axis === axis && ref.inner === 1) return true;
    if (!flow.isFixed(ref.space)) {
      flow.fix(ref.space, `node ${node.label}: ${what} expects channels on axis ${axis}${ref.inner !== 1 ? ' (not flattened)' : ''}`, true);
    }
    return false;
  };
  const spatialOut = (node: OnnxNode, x: Dim[] | null, kernel: number[], dil: number[] | undefined): Dim[] | null => {
    if (!x) return null;
    const nsp = x.length - 2;
    const strides = attrInts(node, 'strides') ?? kernel.map(() => 1);
    const pads = attrInts(node, 'pads') ?? new Array(2 * nsp).fill(0);
    const dils = dil ?? kernel.map(() => 1);
    const autoPad = node.attributes.get('auto_pad')?.s ?? 'NOTSET';
    const ceil = attrI(node, 'ceil_mode', 0) === 1;
    const out: Dim[] = [];
    for (let i = 0; i < nsp; i++) {
      const n = x[2 + i];
      if (typeof n !== 'number' || kernel[i] === undefined) { out.push(null); continue; }
      const s = strides[i] ?? 1;
      const ek = (dils[i] ?? 1) * (kernel[i] - 1) + 1;
      let o: number;
      if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') o = Math.ceil(n / s);
      else if (autoPad === 'VALID') o = Math.floor((n - ek) / s) + 1;
      else {
        const span = n + (pads[i] ?? 0) + (pads[i + nsp] ?? 0) - ek;
        o = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
      }
      out.push(o >= 1 ? o : null);
    }
    return out;
  };

  const handlers: Record<string, (node: OnnxNode) => void> = {
    Conv(node) {
      const x = get(node.inputs[0], node);
      const w = get(node.inputs[1], node);
      const b = node.inputs[2] ? get(node.inputs[2], node) : null;
      if (!x.ref || !w.param || (b && !b.param)) return unknown(node, !x.ref ? 'input is not an activation' : 'weight or bias is not an initializer');
      const dims = inits.get(w.param.init)!.dims;
      if (dims.length < 3) return unknown(node, `weight "${w.param.init}" has shape [${dims.join(', ')}]`);
      const [M, Cg] = dims;
      const xs = shapeOf(node.inputs[0], x);
      const shape = xs ? [xs[0], M, ...(spatialOut(node, xs, attrInts(node, 'kernel_shape') ?? dims.slice(2), attrInts(node, 'dilations')) ?? [])] : null;
      const group = attrI(node, 'group', 1);
      const cin = Cg * group;
      needAxis(node, x.ref, 1, 'Conv');
      const inRef = x.ref.axis === 1 && x.ref.inner === 1 ? x.ref : { ...x.ref, axis: 1, inner: 1 };
      if (group === 1) {
        const s = flow.newSpace(M, moduleLabel(node, w.param.init), w.param.init);
        const own = { space: s, inner: 1, axis: 1 };
        param(node, w, [own, inRef, ...dims.slice(2).map(() => null)], 'weight');
        if (b) param(node, b, [own], 'bias');
        return set(node, 0, { shape, ref: own });
      }
      if (Cg === 1 && M === cin && !flow.isFixed(inRef.space)) {
        // Depthwise: output channel i reads input channel i only, so it follows its input.
        param(node, w, [inRef, null, ...dims.slice(2).map(() => null)], 'weight');
        if (b) param(node, b, [inRef], 'bias');
        return set(node, 0, { shape, ref: { ...inRef } });
      }
      const reason = `node ${node.label}: grouped convolution (group ${group})`;
      flow.fix(x.ref.space, reason, true);
      const s = flow.newSpace(M, null);
      flow.fix(s, reason);
      param(node, w, dims.map(() => null), 'weight');
      if (b) param(node, b, [null], 'bias');
      set(node, 0, { shape, ref: { space: s, inner: 1, axis: 1 } });
    },
    Gemm(node) {
      const a = get(node.inputs[0], node);
      const bv = get(node.inputs[1], node);
      const c = node.inputs[2] ? get(node.inputs[2], node) : null;
      if (attrI(node, 'transA', 0) !== 0) return unknown(node, 'transA=1 (transposed input)');
      if (!a.ref || !bv.param) return unknown(node, !a.ref ? 'input A is not an activation' : 'B is not an initializer');
      const dims = inits.get(bv.param.init)!.dims;
      if (dims.length !== 2) return unknown(node, `B "${bv.param.init}" is not a matrix`);
      const transB = attrI(node, 'transB', 0) !== 0;
      const out = transB ? dims[0] : dims[1];
      const as = shapeOf(node.inputs[0], a);
      // A mismatched input is fixed by needAxis; its ref then only marks the axis as unpermuted.
      const inRef = a.ref.axis === 1 ? a.ref : (needAxis(node, a.ref, 1, 'Gemm'), { ...a.ref, axis: 1, inner: 1 });
      const s = flow.newSpace(out, moduleLabel(node, bv.param.init), bv.param.init);
      const own = { space: s, inner: 1, axis: 1 };
      param(node, bv, transB ? [own, inRef] : [inRef, own], 'weight', !transB);
      if (c) {
        if (c.param) broadcastParam(node, c, own, 2, 'bias');
        else if (c.ref) flow.union(own.space, c.ref.space, `node ${node.label}`);
        else if (!constOperandOk(c, own, 2)) flow.fix(s, `node ${node.label}: C is a per-channel constant that is not an initializer`, true);
      }
      set(node, 0, { shape: [as ? as[0] : null, out], ref: own });
    },
    MatMul(node) {
      const a = get(node.inputs[0], node);
      const bv = get(node.inputs[1], node);
      if (!a.ref || a.param || !bv.param) return unknown(node, !bv.param ? 'MatMul of two activations (or a computed weight)' : 'input A is not an activation');
      const dims = inits.get(bv.param.init)!.dims;
      if (dims.length !== 2) return unknown(node, `B "${bv.param.init}" is not a matrix`);
      const as = shapeOf(node.inputs[0], a);
      const rank = as?.length ?? a.ref.axis + 1;
      const inRef = a.ref.axis === rank - 1 ? a.ref : (needAxis(node, a.ref, rank - 1, 'MatMul'), { ...a.ref, axis: rank - 1, inner: 1 });
      const s = flow.newSpace(dims[1], moduleLabel(node, bv.param.init), bv.param.init);
      const own = { space: s, inner: 1, axis: rank - 1 };
      param(node, bv, [inRef, own], 'weight', true);
      set(node, 0, { shape: as ? [...as.slice(0, -1), dims[1]] : null, ref: own });
    },
    BatchNormalization(node) { norm(node, ['weight', 'bias', 'running_mean', 'running_var']); },
    InstanceNormalization(node) { norm(node, ['weight', 'bias']); },
    LayerNormalization(node) {
      const x = get(node.inputs[0], node);
      if (!x.ref) return unknown(node, 'input is not an activation');
      const xs = shapeOf(node.inputs[0], x);
      const rank = xs?.length ?? x.ref.axis + 1;
      // Normalising over any set of axes commutes with permuting the channels (statistics are
      // either per channel or over all of them), so LayerNorm is channel-wise.
      const roles: Role[] = ['weight', 'bias'];
      for (let i = 1; i < node.inputs.length && i < 3; i++) {
        if (!node.inputs[i]) continue;
        const p = get(node.inputs[i], node);
        if (p.param) broadcastParam(node, p, x.ref, rank, roles[i - 1]);
        else if (p.ref || !constOperandOk(p, x.ref, rank)) return unknown(node, 'scale/bias are not initializers');
      }
      set(node, 0, { shape: xs, ref: x.ref });
      setRest(node, 1);
    },
    Flatten(node) {
      const x = get(node.inputs[0], node);
      const xs = shapeOf(node.inputs[0], x);
      if (!x.ref) return unknown(node, 'input is not an activation');
      const r = xs?.length;
      if (!xs || r === undefined) return unknown(node, 'input shape unknown');
      let k = attrI(node, 'axis', 1);
      if (k < 0) k += r;
      const shape: Dim[] = [prodDims(xs.slice(0, k)), prodDims(xs.slice(k))];
      merge(node, x, xs, k, shape);
    },
    Reshape(node) {
      const x = get(node.inputs[0], node);
      if (x.konst) return set(node, 0, { shape: konstOf(node.inputs[1], node)?.map((d) => (typeof d === 'number' && d >= 0 ? d : null)) ?? null, ref: null });
      if (!x.ref) return unknown(node, 'input is not an activation');
      const xs = shapeOf(node.inputs[0], x);
      const target = konstOf(node.inputs[1], node);
      if (!xs || !target) return unknown(node, 'reshape with an unknown input shape or target');
      const allowZero = attrI(node, 'allowzero', 0) === 1;
      const out: Dim[] = target.map((d, i) => (d === 0 && !allowZero ? xs[i] ?? null : d));
      // `-1` in front with the per-sample sizes matching is a batch dimension (x.view(-1, C·h·w)).
      if (out[0] === -1 && out.slice(1).every((d) => typeof d === 'number' && d > 0)) {
        const per = prodDims(xs.slice(1));
        if (per !== null && per === prodDims(out.slice(1))) out[0] = xs[0];
      }
      let L = 0;
      while (L < out.length && L < xs.length && dimEq(out[L], xs[L])) L++;
      const restIn = prodDims(xs.slice(L));
      const minus = out.slice(L).filter((d) => d === -1).length;
      if (minus === 1 && restIn !== null) {
        const known = prodDims(out.slice(L).filter((d) => d !== -1));
        if (known !== null && known > 0) out[out.indexOf(-1, L)] = restIn / known;
      }
      const a = x.ref.axis;
      if (a < L) return set(node, 0, { shape: out, ref: x.ref });
      if (a === L && typeof out[a] === 'number') {
        let p = 1;
        for (let j = a; j < xs.length; j++) {
          const d = xs[j];
          if (typeof d !== 'number') break;
          p *= d;
          if (p === out[a]) {
            const inner = prodDims(xs.slice(a + 1, j + 1))!;
            return set(node, 0, { shape: out, ref: { space: x.ref.space, inner: x.ref.inner * inner, axis: a } });
          }
          if (p > (out[a] as number)) break;
        }
      }
      unknown(node, `reshape [${xs.join(', ')}] → [${target.join(', ')}] splits or reorders the channel axis`);
    },
    Transpose(node) {
      const x = get(node.inputs[0], node);
      if (!x.ref) return unknown(node, 'input is not an activation');
      const xs = shapeOf(node.inputs[0], x);
      const rank = xs?.length;
      const perm = attrInts(node, 'perm') ?? (rank !== undefined ? [...Array(rank).keys()].reverse() : undefined);
      if (!perm) return unknown(node, 'rank unknown');
      const axis = perm.indexOf(x.ref.axis);
      if (axis < 0) return unknown(node, 'bad perm');
      // Moving axes around does not mix channels; the channel axis just moves.
      set(node, 0, { shape: xs ? perm.map((p) => xs[p] ?? null) : null, ref: { ...x.ref, axis } });
    },
    Squeeze(node) { squeezeLike(node, false); },
    Unsqueeze(node) { squeezeLike(node, true); },
    Pad(node) {
      const x = get(node.inputs[0], node);
      if (!x.ref) return unknown(node, 'input is not an activation');
      const xs = shapeOf(node.inputs[0], x);
      const pads = node.inputs[1] ? konstOf(node.inputs[1], node) : attrInts(node, 'pads');
      if (!pads || node.inputs[3] || pads.some((p) => typeof p !== 'number')) return unknown(node, 'pads unknown');
      const r = pads.length / 2;
      const a = x.ref.axis;
      if (pads[0] !== 0 || pads[r] !== 0 || pads[a] !== 0 || pads[a + r] !== 0) return unknown(node, 'pads the batch or channel axis');
      const shape = xs ? xs.map((d, i) => (typeof d === 'number' ? d + (pads[i] as number) + (pads[i + r] as number) : d)) : null;
      set(node, 0, { shape, ref: x.ref });
    },
    Concat(node) {
      const ins = node.inputs.map((n) => get(n, node));
      if (ins.every((v) => v.konst)) {
        const values = ins.flatMap((v) => v.konst!.values);
        return set(node, 0, { shape: [values.length], ref: null, konst: { dims: [values.length], values } });
      }
      const refs = ins.map((v) => v.ref);
      const shapes = node.inputs.map((n, i) => shapeOf(n, ins[i]));
      const r0 = refs[0];
      let axis = attrI(node, 'axis', 0);
      const rank = shapes[0]?.length;
      if (axis < 0 && rank !== undefined) axis += rank;
      let shape: Dim[] | null = null;
      if (rank !== undefined && axis >= 0 && shapes.every((s) => s && s.length === rank)) {
        shape = [...shapes[0]!];
        const parts = shapes.map((s) => s![axis]);
        shape[axis] = parts.every((d) => typeof d === 'number') ? (parts as number[]).reduce((p, q) => p + q, 0) : null;
      }
      if (!r0 || refs.some((r) => !r || r.axis !== r0.axis) || axis === r0.axis || axis < 0) {
        // Channel concatenation would need block permutations: fix, but keep the shape flowing.
        return unknown(node, 'concatenation along the channel axis (or of non-activations)', r0 ? { shape, axis: r0.axis } : undefined);
      }
      for (const r of refs.slice(1)) flow.unionRefs(r0, r!, `node ${node.label}`);
      set(node, 0, { shape, ref: r0 });
    },
    Shape(node) {
      const x = get(node.inputs[0], node);
      const xs = shapeOf(node.inputs[0], x);
      if (!xs) return set(node, 0, { shape: null, ref: null });
      let start = attrI(node, 'start', 0);
      let end = attrI(node, 'end', xs.length);
      if (start < 0) start += xs.length;
      if (end < 0) end += xs.length;
      const values = xs.slice(Math.max(0, start), Math.min(xs.length, end)).map((d, i) => (d === null ? `?${node.inputs[0]}:${i + start}` : d));
      set(node, 0, { shape: [values.length], ref: null, konst: { dims: [values.length], values } });
    },
    Gather(node) {
      const d = get(node.inputs[0], node);
      const idx = konstOf(node.inputs[1], node);
      if (d.ref) return unknown(node, 'gathers from an activation');
      if (!d.konst || !idx || attrI(node, 'axis', 0) !== 0 || d.konst.dims.length !== 1) return set(node, 0, { shape: null, ref: null });
      const vs = d.konst.values;
      const picked = idx.map((i) => (typeof i === 'number' ? vs[i < 0 ? i + vs.length : i] ?? null : null));
      const scalar = (get(node.inputs[1], node).konst?.dims.length ?? 1) === 0;
      set(node, 0, { shape: scalar ? [] : [picked.length], ref: null, konst: { dims: scalar ? [] : [picked.length], values: picked } });
    },
    Slice(node) {
      const d = get(node.inputs[0], node);
      if (d.ref) return unknown(node, 'slices an activation');
      const k = d.konst;
      const starts = node.inputs[1] ? konstOf(node.inputs[1], node) : attrInts(node, 'starts');
      const ends = node.inputs[2] ? konstOf(node.inputs[2], node) : attrInts(node, 'ends');
      const steps = node.inputs[4] ? konstOf(node.inputs[4], node) : [1];
      if (!k || k.dims.length !== 1 || !starts || !ends || !steps || [starts[0], ends[0], steps[0]].some((v) => typeof v !== 'number')) return set(node, 0, { shape: null, ref: null });
      const n = k.values.length;
      const clamp = (v: number) => Math.max(0, Math.min(n, v < 0 ? v + n : v));
      const st = steps[0] as number;
      if (st !== 1) return set(node, 0, { shape: null, ref: null });
      const values = k.values.slice(clamp(starts[0] as number), clamp(ends[0] as number));
      set(node, 0, { shape: [values.length], ref: null, konst: { dims: [values.length], values } });
    },
    Constant(node) {
      const at = node.attributes;
      const t = at.get('value')?.t;
      let konst: Konst | undefined;
      let shape: Dim[] | null = null;
      if (t) {
        shape = [...t.dims];
        // Small constants only: integers drive shape arithmetic, floats Resize scales.
        const v = t.ints ?? (t.data ? [...t.data] : null);
        if (v && v.length <= 64) konst = { dims: [...t.dims], values: v };
      } else if (at.get('value_int')) {
        shape = [];
        konst = { dims: [], values: [at.get('value_int')!.i ?? 0] };
      } else if (at.get('value_ints')) {
        const v = at.get('value_ints')!.ints ?? [];
        shape = [v.length];
        konst = { dims: [v.length], values: v };
      } else if (at.get('value_float')) shape = [];
      else if (at.get('value_floats')) shape = [at.get('value_floats')!.floats?.length ?? 0];
      set(node, 0, { shape, ref: null, konst });
    },
    Size(node) {
      const x = get(node.inputs[0], node);
      const n = x.shape ? prodDims(x.shape) : null;
      set(node, 0, { shape: [], ref: null, konst: n === null ? undefined : { dims: [], values: [n] } });
    },
    Resize(node) { resize(node, node.inputs[2], node.inputs[3]); },
    Upsample(node) { resize(node, node.inputs[1] ?? undefined, undefined); },
    Dropout(node) {
      set(node, 0, get(node.inputs[0], node));
      setRest(node, 1);
    },
  };

  function norm(node: OnnxNode, roles: Role[]): void {
    const x = get(node.inputs[0], node);
    if (!x.ref) return unknown(node, 'input is not an activation');
    const xs = shapeOf(node.inputs[0], x);
    needAxis(node, { ...x.ref, inner: 1 }, 1, node.opType);
    const ref = x.ref;
    for (let i = 1; i <= roles.length; i++) {
      const p = get(node.inputs[i], node);
      if (!p.param) {
        if (!flow.isFixed(ref.space)) flow.fix(ref.space, `node ${node.label}: input ${i} is not an initializer`, true);
        continue;
      }
      param(node, p, inits.get(p.param.init)!.dims.length === 1 ? [ref] : inits.get(p.param.init)!.dims.map(() => null), roles[i - 1]);
    }
    set(node, 0, { shape: xs, ref });
    setRest(node, 1);
  }

  /** Flatten-like merge of axes [k, rank) into one: fine when the channel is the first non-trivial factor. */
  function merge(node: OnnxNode, x: Val, xs: Dim[], k: number, shape: Dim[]): void {
    const ref = x.ref!;
    const a = ref.axis;
    const before = prodDims(xs.slice(k, a));
    const after = prodDims(xs.slice(a + 1));
    if (a >= k && before === 1 && after !== null) {
      return set(node, 0, { shape, ref: { space: ref.space, inner: ref.inner * after, axis: 1 } });
    }
    unknown(node, after === null ? 'flattens a map of unknown spatial size' : 'the flatten does not keep channels major (channel-last layout)');
  }

  function squeezeLike(node: OnnxNode, unsqueeze: boolean): void {
    const x = get(node.inputs[0], node);
    const axesIn = node.inputs[1] ? konstOf(node.inputs[1], node) : attrInts(node, 'axes');
    if (x.konst) {
      // Shape arithmetic on scalars/vectors: the values stay, only the dims change.
      const dims = unsqueeze ? (x.konst.dims.length === 0 ? [1] : x.konst.dims) : (x.konst.dims.length === 1 && x.konst.values.length === 1 ? [] : x.konst.dims);
      return set(node, 0, { shape: dims, ref: null, konst: { dims, values: x.konst.values } });
    }
    if (!x.ref) return set(node, 0, { shape: null, ref: null });
    const xs = shapeOf(node.inputs[0], x);
    if (!xs || (axesIn && axesIn.some((d) => typeof d !== 'number'))) return unknown(node, 'rank or axes unknown');
    const outRank = unsqueeze ? xs.length + (axesIn?.length ?? 0) : xs.length - (axesIn ? axesIn.length : xs.filter((d) => d === 1).length);
    const norm = (d: number, r: number) => (d < 0 ? d + r : d);
    if (unsqueeze) {
      const ins = new Set((axesIn as number[] ?? []).map((d) => norm(d, outRank)));
      const shape: Dim[] = [];
      let src = 0;
      let axis = -1;
      for (let i = 0; i < outRank; i++) {
        if (ins.has(i)) shape.push(1);
        else {
          if (src === x.ref.axis) axis = i;
          shape.push(xs[src++] ?? null);
        }
      }
      return set(node, 0, { shape, ref: { ...x.ref, axis } });
    }
    const drop = new Set(axesIn ? (axesIn as number[]).map((d) => norm(d, xs.length)) : xs.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0));
    if (drop.has(x.ref.axis)) return unknown(node, 'squeezes the channel axis');
    const shape = xs.filter((_, i) => !drop.has(i));
    const axis = x.ref.axis - [...drop].filter((d) => d < x.ref!.axis).length;
    set(node, 0, { shape, ref: { ...x.ref, axis } });
  }

  function elementwise(node: OnnxNode): void {
    const ins = node.inputs.map((n) => (n ? get(n, node) : null));
    const acts = ins.filter((v): v is Val => !!v?.ref);
    if (acts.length === 0) {
      // Shape arithmetic on known integers (e.g. h // 2); anything else is an opaque constant.
      const ks = ins.map((v) => v?.konst);
      const integral = (k: Konst | undefined) => !!k && k.values.every((v) => typeof v !== 'number' || Number.isInteger(v));
      if (ks.length === 2 && integral(ks[0]) && integral(ks[1]) && ['Add', 'Sub', 'Mul', 'Div'].includes(node.opType) && ks[0]!.values.length === ks[1]!.values.length) {
        const f = { Add: (p: number, q: number) => p + q, Sub: (p: number, q: number) => p - q, Mul: (p: number, q: number) => p * q, Div: (p: number, q: number) => Math.trunc(p / q) }[node.opType as 'Add']!;
        const values = ks[0]!.values.map((v, i) => (typeof v === 'number' && typeof ks[1]!.values[i] === 'number' ? f(v, ks[1]!.values[i] as number) : null));
        return set(node, 0, { shape: [...ks[0]!.dims], ref: null, konst: { dims: [...ks[0]!.dims], values } });
      }
      // Values without channels (constants, statistics reduced over the channels) keep their
      // shape, so broadcasting them against activations can be checked later.
      const ss = node.inputs.map((n, i) => (ins[i] ? shapeOf(n, ins[i]!) : null));
      return set(node, 0, { shape: ss.every((x) => x) ? broadcastShapes(ss as Dim[][]) : null, ref: null });
    }
    const shapes = node.inputs.map((n, i) => (ins[i] ? shapeOf(n, ins[i]!) : null));
    const rankOf = (i: number) => shapes[i]?.length ?? (ins[i]?.ref ? ins[i]!.ref!.axis + 1 : 0);
    const outRank = Math.max(...ins.map((_, i) => rankOf(i)));
    // Every activation's channel axis, right-aligned to the output.
    const aligned = ins.map((v, i) => (v?.ref ? { ...v.ref, axis: v.ref.axis + outRank - rankOf(i) } : null));
    const first = aligned.find((r) => r)!;
    if (aligned.some((r) => r && r.axis !== first.axis)) return unknown(node, 'operands carry their channels on different axes');
    for (const r of aligned) if (r && r !== first) flow.unionRefs(first, r, `node ${node.label}`);
    ins.forEach((v, i) => {
      if (!v || v.ref) return;
      if (v.param) broadcastParam(node, v, first, outRank, node.opType === 'PRelu' ? 'weight' : node.opType === 'Add' && inits.get(v.param.init)!.dims.length === 1 ? 'bias' : 'other');
      else if (!constOperandOk(v, first, outRank)) flow.fix(first.space, `node ${node.label}: operand ${i} is a per-channel constant that is not an initializer`, true);
    });
    const shape = shapes.every((s, i) => s || !ins[i]) ? broadcastShapes(shapes.filter((x): x is Dim[] => !!x)) : null;
    set(node, 0, { shape, ref: first });
  }

  function pool(node: OnnxNode, global: boolean): void {
    const x = get(node.inputs[0], node);
    if (!x.ref) return unknown(node, 'input is not an activation');
    needAxis(node, { ...x.ref, inner: 1 }, 1, node.opType);
    const xs = shapeOf(node.inputs[0], x);
    let shape: Dim[] | null = null;
    if (xs) {
      if (global) shape = [xs[0], xs[1], ...xs.slice(2).map(() => 1)];
      else {
        const sp = spatialOut(node, xs, attrInts(node, 'kernel_shape') ?? [], attrInts(node, 'dilations'));
        shape = sp ? [xs[0], xs[1], ...sp] : null;
      }
    }
    set(node, 0, { shape, ref: x.ref });
    setRest(node, 1);
  }

  /**
   * Reductions. Over non-channel axes they are channel-wise. Over the channel axis the result is
   * invariant under permuting the channels (a symmetric function of them, e.g. LayerNorm's mean
   * and variance when exported as ReduceMean/Sub/Pow/…): it carries no channels and may be
   * broadcast back against them.
   */
  function reduce(node: OnnxNode): void {
    const x = get(node.inputs[0], node);
    const xs = shapeOf(node.inputs[0], x);
    const keep = attrI(node, 'keepdims', 1) === 1;
    const given = node.inputs[1] ? konstOf(node.inputs[1], node) : attrInts(node, 'axes');
    const rank = xs?.length;
    if (rank === undefined || (given && given.some((d) => typeof d !== 'number'))) {
      if (x.ref) return unknown(node, 'reduction over unknown axes');
      return set(node, 0, { shape: null, ref: null });
    }
    let axes = (given as number[] | undefined)?.map((d) => (d < 0 ? d + rank : d));
    if (!axes || axes.length === 0) axes = attrI(node, 'noop_with_empty_axes', 0) === 1 ? [] : [...Array(rank).keys()];
    const shape = keep ? xs!.map((d, i) => (axes!.includes(i) ? 1 : d)) : xs!.filter((_, i) => !axes!.includes(i));
    if (!x.ref || axes.includes(x.ref.axis)) return set(node, 0, { shape, ref: null });
    const axis = keep ? x.ref.axis : x.ref.axis - axes.filter((a) => a < x.ref!.axis).length;
    set(node, 0, { shape, ref: { ...x.ref, axis } });
  }

  /** Resize/Upsample: channel-wise when the batch and channel scales are 1 (or the sizes keep them). */
  function resize(node: OnnxNode, scalesName: string | undefined, sizesName: string | undefined): void {
    const x = get(node.inputs[0], node);
    if (!x.ref) return unknown(node, 'input is not an activation');
    const xs = shapeOf(node.inputs[0], x);
    const numbers = (name: string | undefined): number[] | null => {
      if (!name) return null;
      const k = konstOf(name, node);
      if (k) return k.every((d) => typeof d === 'number') ? (k as number[]) : null;
      const t = inits.get(name);
      return t?.data && t.data.length <= 16 ? [...t.data] : null;
    };
    const scales = numbers(scalesName) ?? (node.attributes.get('scales')?.floats ?? null);
    const sizes = numbers(sizesName);
    const a = x.ref.axis;
    let shape: Dim[] | null = null;
    if (scales && scales.length > 0) {
      if (scales[0] !== 1 || scales[a] !== 1) return unknown(node, 'resizes the batch or channel axis');
      shape = xs ? xs.map((d, i) => (typeof d === 'number' ? Math.floor(d * scales[i]) : i === 0 ? d : null)) : null;
    } else if (sizes && xs) {
      if (sizes[a] !== xs[a] || (typeof xs[0] === 'number' && sizes[0] !== xs[0])) return unknown(node, 'resizes the batch or channel axis');
      shape = sizes.map((d, i) => (i === 0 ? xs[0] : d));
    } else return unknown(node, 'scales/sizes unknown');
    set(node, 0, { shape, ref: x.ref });
  }

  for (const node of topoOrder(model.nodes)) {
    const h = node.domain === '' || node.domain === 'ai.onnx' ? handlers[node.opType] : undefined;
    if (h) h(node);
    else if (node.domain !== '' && node.domain !== 'ai.onnx') unknown(node);
    else if (UNARY.has(node.opType)) {
      const x = get(node.inputs[0], node);
      if (node.opType === 'Identity' && x.param) set(node, 0, { ...x, param: { init: x.param.init, alias: node.outputs[0] } });
      else if (x.ref) set(node, 0, { shape: shapeOf(node.inputs[0], x), ref: x.ref });
      else if ((node.opType === 'Cast' || node.opType === 'Identity') && x.konst) set(node, 0, x);
      else set(node, 0, { shape: node.inputs[0] ? shapeOf(node.inputs[0], x) : null, ref: null });
      // Clip's min/max and similar scalar operands: nothing to permute.
      for (let i = 1; i < node.inputs.length; i++) {
        const v = node.inputs[i] ? vals.get(node.inputs[i]) : undefined;
        if (v?.ref) flow.fix(v.ref.space, `node ${node.label}: activation as a scalar operand`, true);
      }
    } else if (BINARY.has(node.opType)) elementwise(node);
    else if (POOL.has(node.opType)) pool(node, false);
    else if (REDUCE.has(node.opType)) reduce(node);
    else if (GLOBAL_POOL.has(node.opType)) pool(node, true);
    else unknown(node);
  }
  for (const o of model.outputs) {
    const v = vals.get(o.name);
    if (v?.ref) flow.fix(v.ref.space, 'model output');
  }
  // Float initializers not met as parameters are covered, unpermuted.
  for (const t of inits.values()) {
    if (isFloatTensor(t) && !flow.hasTensor(t.name)) flow.setTensor(t.name, t.dims, t.dims.map(() => null), 'initializers');
  }

  const result = flow.finish();
  const { nameMap, pytorchSpec } = mapNames(model, result.spec, result.owners, uses, opts.checkpoint, result.warnings);
  const names = opts.names ?? (opts.checkpoint ? 'pytorch' : 'initializer');
  if (names === 'pytorch') {
    // Report groups under the names the spec uses (`layers.0.weight[1]`, not `onnx::MatMul_12[0]`).
    const byInit = new Map<string, OnnxNameMapping>();
    for (const m of nameMap) if (!byInit.has(m.initializer)) byInit.set(m.initializer, m);
    const rename = (ref: string) => {
      const k = ref.lastIndexOf('[');
      const m = byInit.get(ref.slice(0, k));
      if (!m) return ref;
      const axis = Number(ref.slice(k + 1, -1));
      return `${m.name}[${m.transposed ? 1 - axis : axis}]`;
    };
    for (const g of [...result.groups, ...result.fixed]) g.axes = g.axes.map(rename);
  }
  return { ...result, names, spec: names === 'pytorch' ? pytorchSpec : result.spec, initializerSpec: result.spec, pytorchSpec, nameMap };
}

const ROLE_SUFFIX: Partial<Record<Role, string>> = { weight: '.weight', bias: '.bias', running_mean: '.running_mean', running_var: '.running_var' };
/** Names PyTorch would give: no exporter-made `onnx::X_12`, no node paths. */
const looksLikeParamName = (name: string) => name.length > 0 && !/::|\//.test(name);

function sameData(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (Math.fround(a[i]) !== Math.fround(b[i])) return false;
  return true;
}

/** b is a (rows × cols) matrix equal to aᵀ, a being (cols × rows). */
function transposedData(a: ArrayLike<number>, rows: number, cols: number, b: ArrayLike<number>): boolean {
  if (a.length !== rows * cols || b.length !== rows * cols) return false;
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) if (Math.fround(b[i * cols + j]) !== Math.fround(a[j * rows + i])) return false;
  return true;
}

/**
 * Maps every initializer use to a PyTorch name and builds the PyTorch-keyed spec. Order of
 * trust: the Identity alias the exporter left, the initializer's own name, the node's scoped
 * name + role suffix, then (with a checkpoint) equal data. With a checkpoint a name only counts
 * when the checkpoint has it with the same shape (or transposed, for 2-D tensors).
 */
function mapNames(model: OnnxModel, spec: PermutationSpec, owners: Record<string, string>, uses: Use[], ckpt: NamedArrays | undefined, warnings: string[]): { nameMap: OnnxNameMapping[]; pytorchSpec: PermutationSpec } {
  const inits = model.initializers;
  const seenUse = new Set(uses.map((u) => u.init));
  const all: (Use | { init: string; alias: string; role: Role; node: null; pytorchTransposed: false })[] = [...uses];
  for (const name of Object.keys(spec.axes)) if (!seenUse.has(name)) all.push({ init: name, alias: name, role: 'other', node: null, pytorchTransposed: false });

  const claimed = new Set<string>();
  const byKey = new Map<string, OnnxNameMapping>();
  const pending: typeof all = [];
  const resolve = (u: (typeof all)[number]): OnnxNameMapping | null => {
    const t = inits.get(u.init)!;
    const guess = u.node ? pytorchModulePath(u.node.name) : null;
    const suffix = ROLE_SUFFIX[u.role];
    const cands: [string, OnnxNameMapping['via']][] = [];
    if (u.alias !== u.init) cands.push([u.alias, 'alias']);
    cands.push([u.init, 'initializer']);
    if (guess && suffix) cands.push([guess + suffix, 'node-name']);
    for (const [name, via] of cands) {
      if (!ckpt) {
        if (via === 'node-name') return { initializer: u.init, name, transposed: u.pytorchTransposed && t.dims.length === 2, via };
        if (looksLikeParamName(name)) return { initializer: u.init, name, transposed: false, via };
        continue;
      }
      const c = ckpt.get(name);
      if (!c) continue;
      const d = t.dims;
      const cs = c.shape;
      const same = cs.length === d.length && cs.every((x, i) => x === d[i]);
      const reversed = d.length === 2 && cs.length === 2 && cs[0] === d[1] && cs[1] === d[0];
      if (!same && !reversed) continue;
      let transposed = !same;
      if (same && reversed && t.data) {
        // Square matrix: the data decides; for other weights (another training run) the role does.
        transposed = sameData(t.data, c.data) ? false : transposedData(t.data, d[1], d[0], c.data) ? true : via === 'node-name' && u.pytorchTransposed;
      }
      return { initializer: u.init, name, transposed, via };
    }
    return null;
  };
  for (const u of all) {
    const key = `${u.init}\u0000${u.alias}\u0000${u.role}`;
    if (byKey.has(key)) continue;
    const m = resolve(u);
    if (m) {
      byKey.set(key, m);
      claimed.add(m.name);
    } else pending.push(u);
  }
  if (ckpt && pending.length) {
    const byNumel = new Map<number, string[]>();
    for (const [name, c] of ckpt) {
      const list = byNumel.get(c.data.length) ?? [];
      list.push(name);
      byNumel.set(c.data.length, list);
    }
    for (const u of pending) {
      const key = `${u.init}\u0000${u.alias}\u0000${u.role}`;
      if (byKey.has(key)) continue;
      const t = inits.get(u.init)!;
      let found: OnnxNameMapping | null = null;
      for (const name of t.data ? byNumel.get(t.data.length) ?? [] : []) {
        if (claimed.has(name)) continue;
        const c = ckpt.get(name)!;
        const d = t.dims;
        if (c.shape.length === d.length && c.shape.every((x, i) => x === d[i]) && sameData(t.data!, c.data)) found = { initializer: u.init, name, transposed: false, via: 'values' };
        else if (d.length === 2 && c.shape.length === 2 && c.shape[0] === d[1] && c.shape[1] === d[0] && transposedData(t.data!, d[1], d[0], c.data)) {
          found = { initializer: u.init, name, transposed: true, via: 'values' };
        }
        if (found) break;
      }
      if (found) claimed.add(found.name);
      byKey.set(key, found ?? { initializer: u.init, name: u.init, transposed: false, via: 'unmapped' });
    }
  } else {
    for (const u of pending) byKey.set(`${u.init}\u0000${u.alias}\u0000${u.role}`, { initializer: u.init, name: u.init, transposed: false, via: 'unmapped' });
  }

  const axes: Record<string, AxisPerm[]> = {};
  const nameMap: OnnxNameMapping[] = [];
  const seenPair = new Set<string>();
  for (const m of byKey.values()) {
    const pair = `${m.initializer}\u0000${m.name}`;
    if (seenPair.has(pair)) continue;
    seenPair.add(pair);
    nameMap.push(m);
    const src = spec.axes[m.initializer];
    if (!src) continue;
    const permuted = src.some((a) => a !== null);
    if (m.via === 'unmapped') {
      // Folded constants have no PyTorch name and nothing to permute: leave them out.
      if (!permuted) continue;
      warnings.push(`initializer "${m.initializer}" is permuted but has no PyTorch name${ckpt ? ' in the checkpoint' : ''}; the PyTorch-keyed spec keeps the initializer name`);
    }
    const entry = m.transposed ? [...src].reverse() : [...src];
    const prev = axes[m.name];
    if (prev && JSON.stringify(prev) !== JSON.stringify(entry)) {
      warnings.push(`tensor "${m.name}" maps to initializers permuted differently; keeping the first`);
      continue;
    }
    axes[m.name] = entry;
  }
  // Ids follow the PyTorch module of the weight that opened each group (P_layers.0, not P_MatMul_3).
  const rename = new Map<string, string>();
  const taken = new Set<string>();
  for (const id of Object.keys(spec.perms)) {
    const owner = owners[id];
    const m = owner ? nameMap.find((x) => x.initializer === owner && x.via !== 'unmapped' && WEIGHT_SUFFIX.test(x.name)) : undefined;
    const want = m ? `P_${m.name.replace(WEIGHT_SUFFIX, '')}` : id;
    const next = taken.has(want) ? id : want;
    taken.add(next);
    rename.set(id, next);
  }
  const re = (a: AxisPerm): AxisPerm => (a === null ? null : typeof a === 'string' ? rename.get(a)! : { perm: rename.get(a.perm)!, inner: a.inner });
  const renamed: Record<string, AxisPerm[]> = {};
  for (const [k, e] of Object.entries(axes)) renamed[k] = e.map(re);
  const usedIds = new Set<string>();
  for (const e of Object.values(renamed)) for (const a of e) if (a !== null) usedIds.add(typeof a === 'string' ? a : a.perm);
  const perms: Record<string, number> = {};
  for (const [id, n] of Object.entries(spec.perms)) if (usedIds.has(rename.get(id)!)) perms[rename.get(id)!] = n;
  return { nameMap, pytorchSpec: { perms, axes: renamed } };
}
