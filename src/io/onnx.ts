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
