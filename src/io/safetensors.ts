/**
 * safetensors reading and writing.
 *
 * Layout: u64 little-endian N, then N bytes of UTF-8 JSON mapping tensor name →
 * {dtype, shape, data_offsets: [begin, end]} (offsets relative to the first byte after the
 * header) plus an optional "__metadata__" string→string map, then the data region.
 *
 * Reading is as strict as the reference Rust implementation: header at most 100 MB and starting
 * with "{", every entry well formed, data_offsets matching shape × dtype size, and the tensors
 * tiling the data region exactly (no overlaps, no holes, no trailing bytes) — a file that breaks
 * these rules is corrupt or hand-edited, and loading it would silently give wrong weights.
 * Unknown keys inside a tensor entry are ignored, as the reference does.
 *
 * Dtypes: F64, F32, F16, BF16, F8_E4M3, F8_E5M2 and the integer/bool types (I64, I32, I16, I8,
 * U64, U32, U16, U8, BOOL) are all read and converted to float32. Integers convert exactly up to
 * 2^24 in magnitude (then round); converting them rather than refusing lets whole PyTorch
 * checkpoints load (BatchNorm's `num_batches_tracked` is an I64 scalar). Any other dtype (C64,
 * F4, F6_*, F8_E8M0...) is a FormatError naming the tensor.
 *
 * The returned StateDict is in file (data offset) order, which for files written here is the
 * original insertion order. Writing supports F32, F16 and BF16.
 */
import type { FileHandle } from 'node:fs/promises';
import { numel } from '../core/tensor.js';
import { FormatError, describeError } from './errors.js';
import { type ArrayRecord, type StateDict, checkRecord, firstNonFinite, nonFiniteError } from './records.js';
import { type AtomicWriter, type OutputBatch, withAtomicFile } from './atomic.js';
import { openForRead } from './files.js';

// ---------------------------------------------------------------------------------------------
// float16 / bfloat16 conversion

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float32 bit pattern → float16 bit pattern, round to nearest even; NaN stays NaN (quiet), overflow → ±Inf. */
function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  if (exp > 142) return sign | 0x7c00; // ≥ 2^16: beyond the largest half even after rounding
  if (exp >= 113) {
    // Normal half. A carry out of the mantissa correctly bumps the exponent (up to Inf).
    let h = ((exp - 112) << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
    return sign | h;
  }
  // Subnormal half (units of 2^-24); below 2^-25 everything rounds to ±0.
  if (exp < 102) return sign;
  const m = mant | 0x800000;
  const shift = 126 - exp; // 14..24
  let h = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (rem > halfway || (rem === halfway && (h & 1) !== 0)) h++;
  return sign | h;
}

let f16Table: Float32Array | null = null;
/** All 65536 halves decoded once (256 KB); decoding is then a lookup. Built from bits so NaN payloads survive. */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const bits = new Uint32Array(65536);
  const t = new Float32Array(bits.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) {
      if (m === 0) bits[h] = sign >>> 0;
      else t[h] = (sign ? -m : m) * 2 ** -24; // subnormal: exact in float32
    } else if (e === 31) {
      bits[h] = (sign | 0x7f800000 | (m << 13)) >>> 0;
    } else {
      bits[h] = (sign | ((e + 112) << 23) | (m << 13)) >>> 0;
    }
  }
  f16Table = t;
  return t;
}

export function float32ToFloat16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToF16Bits(scratchU32[0]);
}

export function float16BitsToFloat32(h: number): number {
  return halfTable()[h & 0xffff];
}

/** float32 → bfloat16 bits, round to nearest even; NaN stays a quiet NaN. */
export function float32ToBfloat16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToBf16Bits(scratchU32[0]);
}

function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) >>> 0 > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bfloat16BitsToFloat32(h: number): number {
  scratchU32[0] = (h & 0xffff) << 16;
  return scratchF32[0];
}

export function float32ArrayToFloat16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16Bits(bits[i]);
  return out;
}

export function float16ArrayToFloat32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const t = halfTable();
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}

export function float32ArrayToBfloat16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16Bits(bits[i]);
  return out;
}

export function bfloat16ArrayToFloat32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = src[i] << 16;
  return out;
}

/** 8-bit float tables: E4M3FN (bias 7, no Inf, S.1111.111 = NaN) and E5M2 (bias 15, IEEE-like). */
function fp8Table(expBits: number, mantBits: number, bias: number, fn: boolean): Float32Array {
  const t = new Float32Array(256);
  const expMax = (1 << expBits) - 1;
  const mantMax = (1 << mantBits) - 1;
  for (let b = 0; b < 256; b++) {
    const s = b & 0x80 ? -1 : 1;
    const e = (b >>> mantBits) & expMax;
    const m = b & mantMax;
    let v: number;
    if (fn ? e === expMax && m === mantMax : e === expMax) v = fn || m !== 0 ? NaN : Infinity;
    else if (e === 0) v = m * 2 ** (1 - bias - mantBits);
    else v = (1 + m / (1 << mantBits)) * 2 ** (e - bias);
    t[b] = s * v;
  }
  return t;
}
let e4m3Table: Float32Array | null = null;
let e5m2Table: Float32Array | null = null;

// ---------------------------------------------------------------------------------------------
// dtypes and decoding

export type SafetensorsDtype =
  | 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2'
  | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';
export type SafetensorsWriteDtype = 'F32' | 'F16' | 'BF16';

const DTYPE_SIZE: Record<SafetensorsDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

function isDtype(s: string): s is SafetensorsDtype {
  return Object.prototype.hasOwnProperty.call(DTYPE_SIZE, s);
}

/** Byte size of one element of a supported safetensors dtype. */
export function safetensorsDtypeSize(dtype: SafetensorsDtype): number {
  return DTYPE_SIZE[dtype];
}

/** Reverses byte order of each `size`-byte element in place (only used on big-endian hosts). */
function swapInPlace(bytes: Uint8Array, size: number): void {
  if (size === 1) return;
  for (let i = 0; i + size <= bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

/**
 * Little-endian bytes of `dtype` elements, as an aligned native-endian byte array: a view when
 * already aligned on a little-endian host, otherwise a copy (typed-array views need alignment).
 */
function nativeBytes(bytes: Uint8Array, size: number): Uint8Array {
  if (LITTLE_ENDIAN && bytes.byteOffset % size === 0) return bytes;
  const copy = new Uint8Array(bytes); // a real copy: Buffer#slice would only be a view
  if (!LITTLE_ENDIAN) swapInPlace(copy, size);
  return copy;
}

/** Decodes `bytes` (little-endian elements of `dtype`) into float32 `out` (length = element count). */
export function decodeSafetensorsData(bytes: Uint8Array, dtype: SafetensorsDtype, out: Float32Array): Float32Array {
  const size = DTYPE_SIZE[dtype];
  const n = out.length;
  if (bytes.length !== n * size) throw new RangeError(`decode: ${bytes.length} bytes for ${n} × ${dtype}`);
  if (n === 0) return out;
  const b = nativeBytes(bytes, size);
  const buf = b.buffer;
  const off = b.byteOffset;
  switch (dtype) {
    case 'F32':
      out.set(new Float32Array(buf, off, n));
      break;
    case 'F64':
      out.set(new Float64Array(buf, off, n));
      break;
    case 'F16':
      float16ArrayToFloat32(new Uint16Array(buf, off, n), out);
      break;
    case 'BF16':
      bfloat16ArrayToFloat32(new Uint16Array(buf, off, n), out);
      break;
    case 'F8_E4M3': {
      const t = (e4m3Table ??= fp8Table(4, 3, 7, true));
      for (let i = 0; i < n; i++) out[i] = t[b[i]];
      break;
    }
    case 'F8_E5M2': {
      const t = (e5m2Table ??= fp8Table(5, 2, 15, false));
      for (let i = 0; i < n; i++) out[i] = t[b[i]];
      break;
    }
    case 'I64': {
      const v = new BigInt64Array(buf, off, n);
      for (let i = 0; i < n; i++) out[i] = Number(v[i]);
      break;
    }
    case 'U64': {
      const v = new BigUint64Array(buf, off, n);
      for (let i = 0; i < n; i++) out[i] = Number(v[i]);
      break;
    }
    case 'I32':
      out.set(new Int32Array(buf, off, n));
      break;
    case 'U32':
      out.set(new Uint32Array(buf, off, n));
      break;
    case 'I16':
      out.set(new Int16Array(buf, off, n));
      break;
    case 'U16':
      out.set(new Uint16Array(buf, off, n));
      break;
    case 'I8':
      out.set(new Int8Array(buf, off, n));
      break;
    case 'U8':
      out.set(b.subarray(0, n));
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = b[i] !== 0 ? 1 : 0;
      break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// header parsing

/** The reference implementation refuses larger headers; so do we (it also bounds JSON.parse work). */
export const SAFETENSORS_MAX_HEADER_SIZE = 100_000_000;

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Element count. */
  numel: number;
  /** [begin, end) relative to the start of the data region, as in the header. */
  dataOffsets: [number, number];
  /** Size of the stored tensor in bytes (end - begin). */
  byteLength: number;
  /** Absolute position of the tensor's first byte in the file. */
  fileOffset: number;
}

interface ParsedHeader {
  /** Sorted by data offset (file order). */
  tensors: SafetensorsTensorInfo[];
  metadata: Record<string, string>;
  dataStart: number;
}

const tensorLabel = (name: string) => `tensor ${JSON.stringify(name)}`;

/** Reads N from the first 8 bytes and checks it against the file size before anything is allocated. */
function headerSize(first8: Uint8Array, fileSize: number, source: string): number {
  if (fileSize < 8) {
    throw new FormatError(source, 'header size', `file is ${fileSize} bytes, too short for the 8-byte header size`);
  }
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(SAFETENSORS_MAX_HEADER_SIZE)) {
    throw new FormatError(source, 'header size', `declared header size ${n} exceeds the ${SAFETENSORS_MAX_HEADER_SIZE}-byte limit`);
  }
  if (n > BigInt(fileSize - 8)) {
    throw new FormatError(source, 'header size', `declared header size ${n} but only ${fileSize - 8} bytes follow (truncated file?)`);
  }
  return Number(n);
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function parseHeader(headerBytes: Uint8Array, dataLength: number, source: string): ParsedHeader {
  const dataStart = 8 + headerBytes.length;
  let text: string;
  try {
    text = fatalUtf8.decode(headerBytes);
  } catch {
    throw new FormatError(source, 'header', 'header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw new FormatError(source, 'header', 'header JSON does not start with "{"');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FormatError(source, 'header', `header is not valid JSON (${describeError(e)})`);
  }
  if (!isPlainObject(json)) throw new FormatError(source, 'header', 'header JSON is not an object');

  let metadata: Record<string, string> = {};
  const tensors: SafetensorsTensorInfo[] = [];
  for (const name of Object.keys(json)) {
    const entry = json[name];
    if (name === '__metadata__') {
      if (entry === null) continue; // the reference treats a null map as absent
      if (!isPlainObject(entry)) throw new FormatError(source, '__metadata__', 'must be an object of strings');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') {
          throw new FormatError(source, '__metadata__', `value of ${JSON.stringify(k)} is ${typeof v}, not a string`);
        }
      }
      metadata = Object.fromEntries(Object.entries(entry as Record<string, string>));
      continue;
    }
    tensors.push(parseEntry(name, entry, dataLength, dataStart, source));
  }

  // The tensors must tile [0, dataLength) exactly. Sorting is stable, so ties keep header order.
  tensors.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let pos = 0;
  let prev: SafetensorsTensorInfo | null = null;
  for (const t of tensors) {
    const [begin, end] = t.dataOffsets;
    if (begin < pos && prev) {
      throw new FormatError(source, t.name, `data_offsets [${begin}, ${end}] overlap ${tensorLabel(prev.name)} at [${prev.dataOffsets[0]}, ${prev.dataOffsets[1]}]`, { label: tensorLabel(t.name) });
    }
    if (begin > pos) {
      throw new FormatError(source, t.name, `data_offsets [${begin}, ${end}] leave bytes [${pos}, ${begin}) of the data region unused (holes are not allowed)`, { label: tensorLabel(t.name) });
    }
    pos = end;
    prev = t;
  }
  if (pos !== dataLength) {
    throw new FormatError(source, 'data', `${dataLength - pos} bytes after the last tensor are not covered by any tensor (data region is ${dataLength} bytes)`);
  }
  return { tensors, metadata, dataStart };
}

function parseEntry(name: string, entry: unknown, dataLength: number, dataStart: number, source: string): SafetensorsTensorInfo {
  const fail = (field: string, detail: string) =>
    new FormatError(source, name, `${field} ${detail}`, { label: tensorLabel(name) });
  if (!isPlainObject(entry)) throw fail('entry', 'is not an object');
  const dtype = entry.dtype;
  if (typeof dtype !== 'string') throw fail('dtype', 'is missing or not a string');
  if (!isDtype(dtype)) throw fail('dtype', `${JSON.stringify(dtype)} is not supported`);
  const shape = entry.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw fail('shape', `must be an array of non-negative integers, got ${JSON.stringify(shape)?.slice(0, 80)}`);
  }
  const offs = entry.data_offsets;
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0) || offs[0] > offs[1]) {
    throw fail('data_offsets', `must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offs)?.slice(0, 80)}`);
  }
  const begin = (offs[0] as number) + 0; // + 0 turns a JSON "-0" into 0
  const end = (offs[1] as number) + 0;
  const n = numel(shape as number[]);
  const bytes = n * DTYPE_SIZE[dtype];
  if (bytes !== end - begin) {
    throw fail('data_offsets', `[${begin}, ${end}] do not match shape ${fmtShape(shape as number[])} × ${dtype} (${bytes} bytes)`);
  }
  if (end > dataLength) {
    throw fail('data_offsets', `[${begin}, ${end}] extend past the end of the data region (${dataLength} bytes; truncated file?)`);
  }
  return { name, dtype, shape: (shape as number[]).map((d) => d + 0), numel: n, dataOffsets: [begin, end], byteLength: end - begin, fileOffset: dataStart + begin };
}

function allocFloat32(n: number, source: string, name: string): Float32Array {
  try {
    return new Float32Array(n);
  } catch {
    throw new FormatError(source, name, `${n} elements do not fit in one Float32Array on this runtime`, { label: tensorLabel(name) });
  }
}

// ---------------------------------------------------------------------------------------------
// in-memory parsing

/** Parses a whole safetensors file held in memory. `source` names it in errors. */
export function parseSafetensors(bytes: Uint8Array, source = '<buffer>'): { tensors: StateDict; metadata: Record<string, string> } {
  const n = headerSize(bytes.subarray(0, 8), bytes.length, source);
  const header = parseHeader(bytes.subarray(8, 8 + n), bytes.length - 8 - n, source);
  const tensors: StateDict = new Map();
  for (const t of header.tensors) {
    const out = allocFloat32(t.numel, source, t.name);
    decodeSafetensorsData(bytes.subarray(t.fileOffset, t.fileOffset + t.byteLength), t.dtype, out);
    tensors.set(t.name, { shape: t.shape.slice(), data: out });
  }
  return { tensors, metadata: header.metadata };
}

// ---------------------------------------------------------------------------------------------
// lazy file reading

/** fs read calls take an int32 length. */
const MAX_READ = 1 << 30;

async function readFully(fh: FileHandle, into: Uint8Array, position: number, source: string, field: string): Promise<void> {
  let off = 0;
  while (off < into.length) {
    const len = Math.min(MAX_READ, into.length - off);
    const { bytesRead } = await fh.read(into, off, len, position + off);
    if (bytesRead === 0) {
      throw new FormatError(source, field, `unexpected end of file at byte ${position + off} (file changed while reading?)`);
    }
    off += bytesRead;
  }
}

/** Random access to the tensors of a safetensors file without loading the whole file. */
export interface SafetensorsReader {
  readonly path: string;
  /** Tensor names in file order. */
  readonly names: string[];
  readonly metadata: Record<string, string>;
  has(name: string): boolean;
  /** Dtype, shape and byte size of a tensor; throws RangeError for an unknown name. */
  info(name: string): SafetensorsTensorInfo;
  /** Reads and converts just this tensor's bytes. */
  read(name: string): Promise<ArrayRecord>;
  /** This tensor's bytes as stored (little-endian, its own dtype), unconverted. */
  readRaw(name: string): Promise<Uint8Array>;
  /** Reads every tensor (file order). */
  readAll(): Promise<StateDict>;
  close(): Promise<void>;
}

class FileReader implements SafetensorsReader {
  readonly names: string[];
  private byName = new Map<string, SafetensorsTensorInfo>();
  private closed = false;

  constructor(readonly path: string, private fh: FileHandle, header: ParsedHeader) {
    this.names = header.tensors.map((t) => t.name);
    for (const t of header.tensors) this.byName.set(t.name, t);
    this.metadata = header.metadata;
  }
  readonly metadata: Record<string, string>;

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): SafetensorsTensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new RangeError(`${this.path}: no tensor named ${JSON.stringify(name)}`);
    return { ...t, shape: t.shape.slice(), dataOffsets: [t.dataOffsets[0], t.dataOffsets[1]] };
  }

  async read(name: string): Promise<ArrayRecord> {
    if (this.closed) throw new Error(`${this.path}: reader is closed`);
    const t = this.info(name);
    const out = allocFloat32(t.numel, this.path, name);
    if (t.dtype === 'F32' && LITTLE_ENDIAN) {
      // Read straight into the result: no second copy of a possibly huge tensor.
      await readFully(this.fh, new Uint8Array(out.buffer), t.fileOffset, this.path, name);
    } else {
      const raw = new Uint8Array(t.byteLength);
      await readFully(this.fh, raw, t.fileOffset, this.path, name);
      decodeSafetensorsData(raw, t.dtype, out);
    }
    return { shape: t.shape, data: out };
  }

  async readRaw(name: string): Promise<Uint8Array> {
    if (this.closed) throw new Error(`${this.path}: reader is closed`);
    const t = this.info(name);
    const raw = new Uint8Array(t.byteLength);
    await readFully(this.fh, raw, t.fileOffset, this.path, name);
    return raw;
  }

  async readAll(): Promise<StateDict> {
    const dict: StateDict = new Map();
    for (const name of this.names) dict.set(name, await this.read(name));
    return dict;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

/** Opens a safetensors file, validating its header; tensors are read on demand. Call close(). */
export async function openSafetensors(path: string): Promise<SafetensorsReader> {
  const { handle: fh, size } = await openForRead(path);
  try {
    const first = new Uint8Array(Math.min(8, size));
    await readFully(fh, first, 0, path, 'header size');
    const n = headerSize(first, size, path);
    const headerBytes = new Uint8Array(n);
    await readFully(fh, headerBytes, 8, path, 'header');
    return new FileReader(path, fh, parseHeader(headerBytes, size - 8 - n, path));
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw e;
  }
}

/** Reads a whole safetensors file (tensor by tensor, so peak memory is the converted tensors only). */
export async function readSafetensors(path: string): Promise<{ tensors: StateDict; metadata: Record<string, string> }> {
  const reader = await openSafetensors(path);
  try {
    return { tensors: await reader.readAll(), metadata: reader.metadata };
  } finally {
    await reader.close();
  }
}

// ---------------------------------------------------------------------------------------------
// writing

export interface SafetensorsWriteOptions {
  /** Stored dtype (default F32). F16/BF16 round to nearest even. */
  dtype?: SafetensorsWriteDtype;
  /** Written as "__metadata__" (string values only). */
  metadata?: Record<string, string>;
  /** Write NaN/Inf (and F16 overflow to Inf) instead of refusing. Default false. */
  allowNonFinite?: boolean;
  /** Stage the file in this batch (committed with the batch's other outputs) instead of renaming it now. */
  batch?: OutputBatch;
}

/** Elements converted per chunk: bounds the temporary memory of F16/BF16 output. */
const CHUNK = 1 << 20;

interface Layout {
  /** 8-byte size prefix + padded JSON header. */
  header: Uint8Array;
  dtype: SafetensorsWriteDtype;
  totalSize: number;
}

function writeDtype(opts: SafetensorsWriteOptions): SafetensorsWriteDtype {
  const dtype = opts.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new TypeError(`safetensors: cannot write dtype ${String(dtype)}`);
  return dtype;
}

/** A tensor to write: its name, shape and, when not the file's dtype, its own (any dtype, for raw bytes; F32/F16/BF16 for float data). */
export interface SafetensorsEntry { name: string; shape: number[]; dtype?: SafetensorsDtype }

function layout(entries: readonly SafetensorsEntry[], opts: SafetensorsWriteOptions): Layout {
  const dtype = writeDtype(opts);
  const parts: string[] = [];
  const md = opts.metadata;
  if (md !== undefined) {
    if (!isPlainObject(md)) throw new TypeError('safetensors: metadata must be an object of strings');
    for (const [k, v] of Object.entries(md)) {
      if (typeof v !== 'string') throw new TypeError(`safetensors: metadata value of ${JSON.stringify(k)} must be a string`);
    }
    if (Object.keys(md).length > 0) parts.push(`"__metadata__":${JSON.stringify(md)}`);
  }
  const seen = new Set<string>();
  let offset = 0;
  for (const { name, shape, dtype: own } of entries) {
    if (own !== undefined && !isDtype(own)) throw new TypeError(`safetensors: tensor ${JSON.stringify(name)}: unknown dtype ${String(own)}`);
    const size = DTYPE_SIZE[own ?? dtype];
    if (typeof name !== 'string') throw new TypeError('safetensors: tensor names must be strings');
    if (name === '__metadata__') throw new TypeError('safetensors: "__metadata__" is reserved and cannot name a tensor');
    if (seen.has(name)) throw new TypeError(`safetensors: duplicate tensor name ${JSON.stringify(name)}`);
    seen.add(name);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new TypeError(`safetensors: tensor ${JSON.stringify(name)}: shape must be an array of non-negative integers`);
    }
    const bytes = numel(shape) * size;
    // Built by hand, not via one JSON.stringify of an object, because objects reorder integer-like keys.
    parts.push(`${JSON.stringify(name)}:${JSON.stringify({ dtype: own ?? dtype, shape, data_offsets: [offset, offset + bytes] })}`);
    offset += bytes;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`); // UTF-8, also in a browser
  // Pad with spaces so the data region starts 8-byte aligned, like the reference writer.
  const padded = Math.ceil(json.length / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  return { header, dtype, totalSize: header.length + offset };
}

/**
 * Little-endian bytes of one tensor in `dtype`, yielded in chunks (each valid until the next is
 * requested). Checks finiteness chunk by chunk, so a NaN deep in a tensor aborts mid-write.
 */
function* encodeTensor(name: string, shape: number[], data: Float32Array, dtype: SafetensorsWriteDtype, allowNonFinite: boolean, dest: string): Generator<Uint8Array> {
  const rec = { shape, data };
  const half = dtype === 'F32' ? null : new Uint16Array(Math.min(CHUNK, data.length));
  const swapped = !LITTLE_ENDIAN ? new Uint8Array(Math.min(CHUNK, data.length) * DTYPE_SIZE[dtype]) : null;
  for (let start = 0; start < data.length; start += CHUNK) {
    const end = Math.min(data.length, start + CHUNK);
    if (!allowNonFinite) {
      const bad = firstNonFinite(data, start, end);
      if (bad >= 0) throw nonFiniteError(dest, name, rec, bad);
    }
    const src = data.subarray(start, end);
    let bytes: Uint8Array;
    if (half) {
      const h = half.subarray(0, end - start);
      if (dtype === 'F16') float32ArrayToFloat16(src, h);
      else float32ArrayToBfloat16(src, h);
      if (!allowNonFinite) {
        for (let i = 0; i < h.length; i++) {
          if ((h[i] & 0x7c00) === 0x7c00 && dtype === 'F16') {
            throw new FormatError(dest, name, `value ${src[i]} at index ${start + i} overflows F16 (largest finite is 65504)`, { label: tensorLabel(name) });
          }
          if ((h[i] & 0x7f80) === 0x7f80 && dtype === 'BF16') {
            throw new FormatError(dest, name, `value ${src[i]} at index ${start + i} overflows BF16`, { label: tensorLabel(name) });
          }
        }
      }
      bytes = new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
    } else {
      bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    }
    if (swapped) {
      const s = swapped.subarray(0, bytes.length);
      s.set(bytes);
      swapInPlace(s, DTYPE_SIZE[dtype]);
      bytes = s;
    }
    yield bytes;
  }
}

function producedArray(name: string, shape: number[], data: unknown): Float32Array {
  if (!(data instanceof Float32Array)) throw new TypeError(`safetensors: tensor ${JSON.stringify(name)}: producer must return a Float32Array`);
  const n = numel(shape);
  if (data.length !== n) {
    throw new RangeError(`safetensors: tensor ${JSON.stringify(name)}: shape ${fmtShape(shape)} needs ${n} values, producer returned ${data.length}`);
  }
  return data;
}

/** The complete file as bytes (header, then tensors in insertion order). */
export function serializeSafetensors(tensors: StateDict, opts: SafetensorsWriteOptions = {}): Uint8Array {
  for (const [name, rec] of tensors) checkRecord(name, rec);
  const entries = [...tensors].map(([name, rec]) => ({ name, shape: rec.shape }));
  const lay = layout(entries, opts);
  const out = new Uint8Array(lay.totalSize);
  out.set(lay.header, 0);
  let pos = lay.header.length;
  for (const [name, rec] of tensors) {
    for (const chunk of encodeTensor(name, rec.shape, rec.data, lay.dtype, opts.allowNonFinite ?? false, '<buffer>')) {
      out.set(chunk, pos);
      pos += chunk.length;
    }
  }
  return out;
}

/**
 * Writes a large file without holding it in memory: the header first (computed from the shapes),
 * then each tensor as `produce(name)` returns it, in `entries` order. A producer returns float32
 * values (encoded in the entry's dtype, F32/F16/BF16) or a Uint8Array of the entry's dtype's
 * little-endian bytes, written as they are (any dtype: a tensor copied or permuted without
 * conversion). Atomic: if a producer throws or a tensor is non-finite, `path` is not created (or
 * keeps its old content).
 */
export async function writeSafetensorsStreaming(
  path: string,
  entries: readonly SafetensorsEntry[],
  produce: (name: string, index: number) => Promise<Float32Array | Uint8Array> | Float32Array | Uint8Array,
  opts: SafetensorsWriteOptions = {},
): Promise<void> {
  const lay = layout(entries, opts);
  await withAtomicFile(path, async (out: AtomicWriter) => {
    await out.write(lay.header);
    for (let i = 0; i < entries.length; i++) {
      const { name, shape } = entries[i];
      const dtype = entries[i].dtype ?? lay.dtype;
      const produced = await produce(name, i);
      if (produced instanceof Uint8Array) {
        const want = numel(shape) * DTYPE_SIZE[dtype];
        if (produced.length !== want) throw new RangeError(`safetensors: tensor ${JSON.stringify(name)}: ${dtype} ${fmtShape(shape)} needs ${want} bytes, producer returned ${produced.length}`);
        await out.write(produced);
        continue;
      }
      if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new TypeError(`safetensors: tensor ${JSON.stringify(name)}: float values cannot be written as ${dtype} (give its bytes)`);
      const data = producedArray(name, shape, produced);
      for (const chunk of encodeTensor(name, shape, data, dtype, opts.allowNonFinite ?? false, path)) await out.write(chunk);
    }
    if (out.bytesWritten !== lay.totalSize) throw new Error(`safetensors: wrote ${out.bytesWritten} bytes, expected ${lay.totalSize}`);
  }, { batch: opts.batch });
}

/** Writes a state dict atomically, tensors in insertion order. */
export async function writeSafetensors(path: string, tensors: StateDict, opts: SafetensorsWriteOptions = {}): Promise<void> {
  for (const [name, rec] of tensors) checkRecord(name, rec);
  const entries = [...tensors].map(([name, rec]) => ({ name, shape: rec.shape.slice() }));
  await writeSafetensorsStreaming(path, entries, (name) => tensors.get(name)!.data, opts);
}
