/**
 * NumPy .npy (format versions 1.0, 2.0, 3.0) and .npz (zip of `name.npy` members).
 *
 * .npy: "\x93NUMPY", major, minor, header length (u16 for v1, u32 for v2/v3), then a Python dict
 * literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with spaces
 * and a newline, then the raw data. Read dtypes: f2/f4/f8, i1/i2/i4/i8, u1/u2/u4/u8 in either byte
 * order, and b1; all become float32 (integers exact up to 2^24). Fortran-order arrays are
 * transposed to C order. Like numpy, the header must hold exactly those three keys. Unlike
 * np.load, bytes after the array are an error: several arrays np.save'd into one file are not
 * supported, and trailing garbage usually means a corrupt header. Written files are '<f4', C
 * order, version 1.0 (2.0 only if the header needs more than 65535 bytes).
 *
 * .npz: stored and deflated members are read (CRC-checked). Zip64 extra fields and the Zip64
 * end-of-central-directory record are understood, since np.savez always writes Zip64 extras in
 * its local headers. Member names are decoded as UTF-8 (flag bit 11) or latin1 (an approximation
 * of CP437 that is exact for ASCII). Members that are not `.npy` files, members whose bytes
 * overlap, encryption, other compression methods and multi-disk archives are FormatErrors.
 * Written archives use stored members by default (deflate on request), a fixed 1980-01-01
 * timestamp (reproducible bytes), and no Zip64: output over 4 GiB is refused.
 *
 * readNpy/readNpz read through a file handle, one array at a time, rather than loading the file.
 */
import type { FileHandle } from 'node:fs/promises';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { numel } from '../core/tensor.js';
import { FormatError, describeError } from './errors.js';
import { type ArrayRecord, type StateDict, checkRecord, firstNonFinite, nonFiniteError } from './records.js';
import { withAtomicFile } from './atomic.js';
import { LIMITS, withOpenFile } from './files.js';
import { float16ArrayToFloat32 } from './safetensors.js';

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
/** numpy refuses headers over 10 000 bytes by default; we allow more but bound the literal parser's work. */
export const NPY_MAX_HEADER_SIZE = 1 << 20;

type Fail = (field: string, detail: string) => FormatError;

function plainFail(file: string): Fail {
  return (field, detail) => new FormatError(file, field, detail);
}

// ---------------------------------------------------------------------------------------------
// Python literal subset: dict of str → str | bool | tuple of ints (lists are recognised only to
// say that structured dtypes are unsupported). Iterative, linear time, no recursion.

type PyValue = string | boolean | number | number[] | { list: true };

class PyLiteral {
  i = 0;
  constructor(private s: string, private fail: Fail) {}

  private err(detail: string): FormatError {
    return this.fail('header', `${detail} at character ${this.i} of the header dict`);
  }

  private ws(): void {
    while (this.i < this.s.length && ' \t\r\n\f\v'.includes(this.s[this.i])) this.i++;
  }

  private peek(): string {
    return this.s[this.i] ?? '';
  }

  dict(): Map<string, PyValue> {
    const out = new Map<string, PyValue>();
    this.ws();
    if (this.peek() !== '{') throw this.err('expected "{"');
    this.i++;
    this.ws();
    while (this.peek() !== '}') {
      const key = this.str();
      this.ws();
      if (this.peek() !== ':') throw this.err('expected ":"');
      this.i++;
      this.ws();
      const value = this.value();
      if (out.has(key)) throw this.fail(key, `key '${key}' appears twice in the header`);
      out.set(key, value);
      this.ws();
      if (this.peek() === ',') {
        this.i++;
        this.ws();
      } else if (this.peek() !== '}') throw this.err('expected "," or "}"');
    }
    this.i++;
    this.ws();
    if (this.i !== this.s.length) throw this.err('unexpected text after the header dict');
    return out;
  }

  private str(): string {
    const q = this.peek();
    if (q !== "'" && q !== '"') throw this.err('expected a quoted string');
    this.i++;
    let out = '';
    for (;;) {
      if (this.i >= this.s.length) throw this.err('unterminated string');
      const c = this.s[this.i++];
      if (c === q) return out;
      if (c === '\n') throw this.err('newline inside a string');
      if (c === '\\') {
        if (this.i >= this.s.length) throw this.err('unterminated string');
        const e = this.s[this.i++];
        out += e === 'n' ? '\n' : e === 't' ? '\t' : e === 'r' ? '\r' : e === '\\' || e === "'" || e === '"' ? e : `\\${e}`;
      } else out += c;
    }
  }

  private value(): PyValue {
    const c = this.peek();
    if (c === "'" || c === '"') return this.str();
    if (this.s.startsWith('True', this.i)) {
      this.i += 4;
      return true;
    }
    if (this.s.startsWith('False', this.i)) {
      this.i += 5;
      return false;
    }
    if (c === '(') return this.tuple();
    if (c === '[') {
      // Skip to the matching "]" without interpreting (structured dtype descriptions).
      let depth = 0;
      for (; this.i < this.s.length; this.i++) {
        const ch = this.s[this.i];
        if (ch === '[') depth++;
        else if (ch === ']' && --depth === 0) {
          this.i++;
          return { list: true };
        }
      }
      throw this.err('unterminated list');
    }
    if (c === '-' || (c >= '0' && c <= '9')) return this.int();
    throw this.err(`unexpected ${c ? JSON.stringify(c) : 'end of header'}`);
  }

  private int(): number {
    const start = this.i;
    if (this.peek() === '-') this.i++;
    const digits = this.i;
    while (this.peek() >= '0' && this.peek() <= '9') this.i++;
    if (this.i === digits) throw this.err('expected an integer');
    const v = Number(this.s.slice(start, this.i));
    if (this.peek() === 'L') this.i++; // Python 2 long literal, found in old files
    if (!Number.isSafeInteger(v)) throw this.err(`integer ${this.s.slice(start, this.i)} is too large`);
    return v + 0; // "-0" → 0
  }

  /** A tuple, or a parenthesised int when there is one element and no comma (as in Python). */
  private tuple(): number[] | number {
    this.i++;
    const items: number[] = [];
    let comma = false;
    this.ws();
    while (this.peek() !== ')') {
      items.push(this.int());
      this.ws();
      if (this.peek() === ',') {
        comma = true;
        this.i++;
        this.ws();
      } else if (this.peek() !== ')') throw this.err('expected "," or ")" in tuple');
    }
    this.i++;
    return items.length === 1 && !comma ? items[0] : items;
  }
}

// ---------------------------------------------------------------------------------------------
// .npy dtypes and layout

interface Dtype {
  kind: 'f' | 'i' | 'u' | 'b';
  size: number;
  little: boolean;
}

function parseDescr(descr: string, fail: Fail): Dtype {
  const m = /^([<>|=])([fiub])(\d)$/.exec(descr);
  const ok = m && ({ f: '248', i: '1248', u: '1248', b: '1' } as Record<string, string>)[m[2]].includes(m[3]);
  if (!m || !ok) throw fail('descr', `dtype '${descr.slice(0, 40)}' is not supported (float, int, uint and bool only)`);
  const size = Number(m[3]);
  if (m[1] === '|' && size > 1) throw fail('descr', `dtype '${descr}' has no byte order but is ${size} bytes wide`);
  return { kind: m[2] as Dtype['kind'], size, little: m[1] === '<' || (m[1] === '=' && LITTLE_ENDIAN) || m[1] === '|' };
}

/** Elements of `dt` in `bytes` → float32. */
function decodeNpyData(bytes: Uint8Array, dt: Dtype, out: Float32Array): void {
  const n = out.length;
  if (n === 0) return;
  let b = bytes;
  // Typed views need alignment and host byte order; copy (and swap) only when necessary.
  if (dt.size > 1 && (b.byteOffset % dt.size !== 0 || dt.little !== LITTLE_ENDIAN)) {
    b = new Uint8Array(bytes); // a real copy: Buffer#slice would only be a view
    if (dt.little !== LITTLE_ENDIAN) {
      for (let i = 0; i < b.length; i += dt.size) b.subarray(i, i + dt.size).reverse();
    }
  }
  const buf = b.buffer;
  const off = b.byteOffset;
  switch (`${dt.kind}${dt.size}`) {
    case 'f2': float16ArrayToFloat32(new Uint16Array(buf, off, n), out); break;
    case 'f4': out.set(new Float32Array(buf, off, n)); break;
    case 'f8': out.set(new Float64Array(buf, off, n)); break;
    case 'i1': out.set(new Int8Array(buf, off, n)); break;
    case 'i2': out.set(new Int16Array(buf, off, n)); break;
    case 'i4': out.set(new Int32Array(buf, off, n)); break;
    case 'i8': { const v = new BigInt64Array(buf, off, n); for (let i = 0; i < n; i++) out[i] = Number(v[i]); break; }
    case 'u1': out.set(b.subarray(0, n)); break;
    case 'u2': out.set(new Uint16Array(buf, off, n)); break;
    case 'u4': out.set(new Uint32Array(buf, off, n)); break;
    case 'u8': { const v = new BigUint64Array(buf, off, n); for (let i = 0; i < n; i++) out[i] = Number(v[i]); break; }
    case 'b1': for (let i = 0; i < n; i++) out[i] = b[i] !== 0 ? 1 : 0; break;
  }
}

/** Column-major data → row-major, same shape. */
export function fortranToC(src: Float32Array, shape: readonly number[]): Float32Array {
  const nd = shape.length;
  const n = src.length;
  const out = new Float32Array(n);
  if (nd < 2) {
    out.set(src);
    return out;
  }
  const fstride = new Array<number>(nd);
  let s = 1;
  for (let k = 0; k < nd; k++) {
    fstride[k] = s;
    s *= shape[k];
  }
  // Walk the output in C order (last index fastest) while tracking the Fortran offset.
  const idx = new Array<number>(nd).fill(0);
  let f = 0;
  for (let c = 0; c < n; c++) {
    out[c] = src[f];
    for (let k = nd - 1; k >= 0; k--) {
      idx[k]++;
      f += fstride[k];
      if (idx[k] < shape[k]) break;
      f -= fstride[k] * shape[k];
      idx[k] = 0;
    }
  }
  return out;
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });

// ---------------------------------------------------------------------------------------------
// Byte access. The parsers are generators that yield read requests, so one implementation serves
// both bytes in memory (parseNpy/parseNpz) and open files (readNpy/readNpz). From a file, only
// what is needed is read, one array at a time: no copy of the whole file is held, and files over
// 2 GiB (which fs.readFile refuses) work.

interface ReadRequest {
  pos: number;
  len: number;
  /** Named in the error if the bytes are not there. */
  field: string;
  /** Read straight into this buffer (length `len`) instead of a fresh one. */
  into?: Uint8Array;
}
type ByteReader<T> = Generator<ReadRequest, T, Uint8Array>;

function runOnBytes<T>(gen: ByteReader<T>, bytes: Uint8Array, fail: Fail): T {
  let r = gen.next();
  while (!r.done) {
    const { pos, len, field, into } = r.value;
    // Parsers check sizes before asking; this is the backstop.
    if (pos + len > bytes.length) throw fail(field, `unexpected end of data at byte ${bytes.length}`);
    const view = bytes.subarray(pos, pos + len);
    if (into) into.set(view);
    r = gen.next(into ?? view);
  }
  return r.value;
}

/** fs read calls take an int32 length. */
const MAX_READ = 1 << 30;

async function runOnFile<T>(gen: ByteReader<T>, fh: FileHandle, fail: Fail): Promise<T> {
  let r = gen.next();
  while (!r.done) {
    const { pos, len, field, into } = r.value;
    const buf = into ?? new Uint8Array(len);
    let off = 0;
    while (off < len) {
      const { bytesRead } = await fh.read(buf, off, Math.min(MAX_READ, len - off), pos + off);
      if (bytesRead === 0) throw fail(field, `unexpected end of file at byte ${pos + off} (file changed while reading?)`);
      off += bytesRead;
    }
    r = gen.next(buf);
  }
  return r.value;
}

/** Opens under the file-access policy (io/files.ts: a regular file, nothing else). */
async function withFile<T>(path: string, fn: (fh: FileHandle, size: number) => Promise<T>): Promise<T> {
  return withOpenFile(path, {}, ({ handle, size }) => fn(handle, size));
}

// ---------------------------------------------------------------------------------------------
// .npy parsing

/** Parses a .npy of `size` bytes; every size is checked against `size` before anything is allocated. */
function* npyReader(size: number, fail: Fail): ByteReader<ArrayRecord> {
  if (size < 10) throw fail('magic', `only ${size} bytes, too short for a .npy preamble`);
  const pre = yield { pos: 0, len: Math.min(size, 12), field: 'magic' };
  for (let i = 0; i < 6; i++) if (pre[i] !== MAGIC[i]) throw fail('magic', 'not a .npy file (missing \\x93NUMPY magic)');
  const major = pre[6];
  const minor = pre[7];
  if ((major !== 1 && major !== 2 && major !== 3) || minor !== 0) throw fail('version', `format version ${major}.${minor} is not supported (1.0, 2.0, 3.0 are)`);
  const dv = new DataView(pre.buffer, pre.byteOffset, pre.length);
  let hlen: number;
  let start: number;
  if (major === 1) {
    hlen = dv.getUint16(8, true);
    start = 10;
  } else {
    if (size < 12) throw fail('header length', `only ${size} bytes, too short for a version ${major} preamble`);
    hlen = dv.getUint32(8, true);
    start = 12;
  }
  if (hlen > size - start) throw fail('header length', `declared header length ${hlen} but only ${size - start} bytes follow (truncated file?)`);
  if (hlen > NPY_MAX_HEADER_SIZE) throw fail('header length', `declared header length ${hlen} exceeds the ${NPY_MAX_HEADER_SIZE}-byte limit`);
  const raw = yield { pos: start, len: hlen, field: 'header' };
  let text: string;
  if (major === 3) {
    try {
      text = fatalUtf8.decode(raw);
    } catch {
      throw fail('header', 'header is not valid UTF-8');
    }
  } else {
    text = Buffer.from(raw.buffer, raw.byteOffset, raw.length).toString('latin1');
  }
  const dict = new PyLiteral(text, fail).dict();
  for (const key of dict.keys()) {
    if (key !== 'descr' && key !== 'fortran_order' && key !== 'shape') throw fail(key, `unexpected key '${key.slice(0, 40)}' in the header`);
  }
  const descr = dict.get('descr');
  if (descr === undefined) throw fail('descr', "header has no 'descr'");
  if (typeof descr !== 'string') {
    throw fail('descr', typeof descr === 'object' && !Array.isArray(descr) ? 'structured dtypes are not supported' : 'must be a string');
  }
  const fortran = dict.get('fortran_order');
  if (typeof fortran !== 'boolean') throw fail('fortran_order', fortran === undefined ? "header has no 'fortran_order'" : 'must be True or False');
  const shape = dict.get('shape');
  if (shape === undefined) throw fail('shape', "header has no 'shape'");
  if (!Array.isArray(shape)) throw fail('shape', 'must be a tuple of integers (a 1-element tuple needs a trailing comma)');
  if (shape.some((d) => d < 0)) throw fail('shape', `(${shape.join(', ')}) has a negative dimension`);
  const dt = parseDescr(descr, fail);

  const dataStart = start + hlen;
  const avail = size - dataStart;
  const n = numel(shape);
  const need = n * dt.size;
  if (need > avail) throw fail('data', `shape (${shape.join(', ')}) × ${descr} needs ${need} bytes but only ${avail} follow the header (truncated file?)`);
  if (need < avail) throw fail('data', `${avail - need} bytes after the array data (several arrays in one file are not supported)`);
  let out: Float32Array;
  try {
    out = new Float32Array(n);
  } catch {
    throw fail('shape', `${n} elements do not fit in one Float32Array on this runtime`);
  }
  if (dt.kind === 'f' && dt.size === 4 && dt.little === LITTLE_ENDIAN) {
    // The common case: bytes go straight into the result.
    yield { pos: dataStart, len: need, field: 'data', into: new Uint8Array(out.buffer) };
  } else {
    decodeNpyData(yield { pos: dataStart, len: need, field: 'data' }, dt, out);
  }
  if (fortran) out = fortranToC(out, shape);
  return { shape: shape.slice(), data: out };
}

function parseNpyWith(bytes: Uint8Array, fail: Fail): ArrayRecord {
  return runOnBytes(npyReader(bytes.length, fail), bytes, fail);
}

/** Parses a .npy file held in memory. */
export function parseNpy(bytes: Uint8Array, source = '<buffer>'): ArrayRecord {
  return parseNpyWith(bytes, plainFail(source));
}

/** Reads a .npy file (only the header, then the data, straight from the file). */
export async function readNpy(path: string): Promise<ArrayRecord> {
  const fail = plainFail(path);
  return withFile(path, (fh, size) => runOnFile(npyReader(size, fail), fh, fail));
}

// ---------------------------------------------------------------------------------------------
// .npy writing

export interface NpyWriteOptions {
  /** Write NaN/Inf instead of refusing. Default false. */
  allowNonFinite?: boolean;
}

function npyPreamble(shape: readonly number[]): Uint8Array {
  const tuple = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': ${tuple}, }`;
  // numpy pads so the data starts 64-byte aligned, ending the header with "\n".
  let pre = 10;
  let total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  if (total - pre > 0xffff) {
    pre = 12;
    total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  }
  const hlen = total - pre;
  const out = new Uint8Array(total);
  out.set(MAGIC, 0);
  out[6] = pre === 10 ? 1 : 2;
  out[7] = 0;
  const dv = new DataView(out.buffer);
  if (pre === 10) dv.setUint16(8, hlen, true);
  else dv.setUint32(8, hlen, true);
  out.set(Buffer.from(dict, 'latin1'), pre);
  out.fill(0x20, pre + dict.length, total - 1);
  out[total - 1] = 0x0a;
  return out;
}

const CHUNK = 1 << 20;

/** The .npy bytes of a record in chunks (data chunks are views of `rec.data` on little-endian hosts). */
function* npyChunks(name: string, rec: ArrayRecord, dest: string, allowNonFinite: boolean): Generator<Uint8Array> {
  yield npyPreamble(rec.shape);
  const data = rec.data;
  for (let start = 0; start < data.length; start += CHUNK) {
    const end = Math.min(data.length, start + CHUNK);
    if (!allowNonFinite) {
      const bad = firstNonFinite(data, start, end);
      if (bad >= 0) throw nonFiniteError(dest, name, rec, bad);
    }
    const src = data.subarray(start, end);
    let bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    if (!LITTLE_ENDIAN) {
      bytes = new Uint8Array(bytes);
      for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
    }
    yield bytes;
  }
}

function concat(chunks: Iterable<Uint8Array>): Uint8Array {
  const list: Uint8Array[] = [];
  let total = 0;
  for (const c of chunks) {
    list.push(new Uint8Array(c));
    total += c.length;
  }
  const out = new Uint8Array(total);
  let pos = 0;
  for (const c of list) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
}

/** A record as .npy bytes ('<f4', C order). */
export function serializeNpy(rec: ArrayRecord, opts: NpyWriteOptions = {}): Uint8Array {
  checkRecord('array', rec);
  return concat(npyChunks('array', rec, '<buffer>', opts.allowNonFinite ?? false));
}

/** Writes a .npy file atomically. */
export async function writeNpy(path: string, rec: ArrayRecord, opts: NpyWriteOptions = {}): Promise<void> {
  checkRecord('array', rec);
  await withAtomicFile(path, async (out) => {
    for (const c of npyChunks('array', rec, path, opts.allowNonFinite ?? false)) await out.write(c);
  });
}

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zip requires.

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 of `bytes`; pass the previous result as `crc` to continue over several chunks. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// ---------------------------------------------------------------------------------------------
// .npz reading

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
/** Deflate cannot expand data by more than ~1032:1; a larger declared size is a lie (or a bomb). */
const MAX_DEFLATE_RATIO = 1032;

interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  crc: number;
  csize: number;
  usize: number;
  localOffset: number;
}

function u64(dv: DataView, at: number, fail: () => FormatError): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fail();
  return Number(v);
}

function decodeName(bytes: Uint8Array, flags: number): string {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  // Invalid UTF-8 becomes U+FFFD rather than an error: the name is only a dictionary key.
  return buf.toString(flags & 0x800 ? 'utf8' : 'latin1');
}

const EOCD = 'end of central directory';

function* centralDirectory(size: number, file: string): ByteReader<ZipEntry[]> {
  const eocdFail = (detail: string) => new FormatError(file, EOCD, detail);
  if (size < 22) throw eocdFail(`${size} bytes is too short for a zip archive`);
  // The record is in the last 22 + 65535 (max comment) bytes.
  const tailStart = Math.max(0, size - 22 - 0xffff);
  const tail = yield { pos: tailStart, len: size - tailStart, field: EOCD };
  const tv = new DataView(tail.buffer, tail.byteOffset, tail.length);
  let p = tail.length - 22;
  // The archive comment length must reach exactly to the end of the file.
  while (p >= 0 && !(tv.getUint32(p, true) === SIG_EOCD && p + 22 + tv.getUint16(p + 20, true) === tail.length)) p--;
  if (p < 0) throw eocdFail('no end-of-central-directory record (not a zip archive, or truncated)');
  const eocdPos = tailStart + p;
  let disk = tv.getUint16(p + 4, true);
  let cdDisk = tv.getUint16(p + 6, true);
  let entriesHere = tv.getUint16(p + 8, true);
  let entries = tv.getUint16(p + 10, true);
  let cdSize = tv.getUint32(p + 12, true);
  let cdOffset = tv.getUint32(p + 16, true);

  if (p >= 20 && tv.getUint32(p - 20, true) === SIG_ZIP64_LOCATOR) {
    const zfail = (detail: string) => new FormatError(file, 'zip64 end of central directory', detail);
    if (tv.getUint32(p - 16, true) !== 0 || tv.getUint32(p - 4, true) > 1) throw zfail('multi-disk (split) archives are not supported');
    const at = u64(tv, p - 12, () => zfail('record offset out of range'));
    if (at + 56 > eocdPos - 20) throw zfail(`record offset ${at} is outside the file`);
    const rec = yield { pos: at, len: 56, field: 'zip64 end of central directory' };
    const rv = new DataView(rec.buffer, rec.byteOffset, rec.length);
    if (rv.getUint32(0, true) !== SIG_ZIP64_EOCD) throw zfail(`no zip64 end-of-central-directory record at offset ${at}`);
    disk = rv.getUint32(16, true);
    cdDisk = rv.getUint32(20, true);
    entriesHere = u64(rv, 24, () => zfail('entry count out of range'));
    entries = u64(rv, 32, () => zfail('entry count out of range'));
    cdSize = u64(rv, 40, () => zfail('central directory size out of range'));
    cdOffset = u64(rv, 48, () => zfail('central directory offset out of range'));
  } else if (entries === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    throw eocdFail('fields say Zip64 but there is no Zip64 end-of-central-directory locator');
  }
  if (disk !== 0 || cdDisk !== 0 || entriesHere !== entries) throw eocdFail('multi-disk (split) archives are not supported');
  if (cdOffset + cdSize > size) throw eocdFail(`central directory [${cdOffset}, ${cdOffset + cdSize}) extends past the end of the file (${size} bytes)`);
  if (entries * 46 > cdSize) throw eocdFail(`${entries} entries cannot fit in a ${cdSize}-byte central directory`);

  const cd = yield { pos: cdOffset, len: cdSize, field: 'central directory' };
  const dv = new DataView(cd.buffer, cd.byteOffset, cd.length);
  const out: ZipEntry[] = [];
  let q = 0;
  for (let k = 0; k < entries; k++) {
    const cdFail = (detail: string) => new FormatError(file, 'central directory', `entry ${k}: ${detail}`);
    if (q + 46 > cdSize) throw cdFail('runs past the end of the central directory');
    if (dv.getUint32(q, true) !== SIG_CENTRAL) throw cdFail(`bad signature at offset ${cdOffset + q}`);
    const flags = dv.getUint16(q + 8, true);
    const method = dv.getUint16(q + 10, true);
    const crc = dv.getUint32(q + 16, true);
    let csize = dv.getUint32(q + 20, true);
    let usize = dv.getUint32(q + 24, true);
    const nameLen = dv.getUint16(q + 28, true);
    const extraLen = dv.getUint16(q + 30, true);
    const commentLen = dv.getUint16(q + 32, true);
    let diskStart = dv.getUint16(q + 34, true);
    let localOffset = dv.getUint32(q + 42, true);
    const next = q + 46 + nameLen + extraLen + commentLen;
    if (next > cdSize) throw cdFail('runs past the end of the central directory');
    const name = decodeName(cd.subarray(q + 46, q + 46 + nameLen), flags);
    const entryFail = (detail: string) => new FormatError(file, name, detail, { label: `member ${JSON.stringify(name)}` });
    // Zip64 extra field (id 1): 8-byte values, present only for the fields saturated above.
    let e = q + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = dv.getUint16(e, true);
      const len = dv.getUint16(e + 2, true);
      const fieldEnd = e + 4 + len;
      if (fieldEnd > extraEnd) throw entryFail('extra field runs past its declared length');
      if (id === 1) {
        let f = e + 4;
        const take = (): number => {
          if (f + 8 > fieldEnd) throw entryFail('zip64 extra field is too short');
          const v = u64(dv, f, () => entryFail('zip64 size or offset out of range'));
          f += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = take();
        if (csize === 0xffffffff) csize = take();
        if (localOffset === 0xffffffff) localOffset = take();
        if (diskStart === 0xffff) {
          if (f + 4 > fieldEnd) throw entryFail('zip64 extra field is too short');
          diskStart = dv.getUint32(f, true);
        }
      }
      e = fieldEnd;
    }
    if (usize === 0xffffffff || csize === 0xffffffff || localOffset === 0xffffffff) throw entryFail('sizes say Zip64 but the entry has no Zip64 extra field');
    if (diskStart !== 0) throw entryFail('multi-disk (split) archives are not supported');
    out.push({ name, method, flags, crc, csize, usize, localOffset });
    q = next;
  }
  return out;
}

const memberLabel = (e: ZipEntry) => ({ label: `member ${JSON.stringify(e.name)}` });

/** Checks a member's local header and sizes; returns where its data is. Reads no data. */
function* locateMember(size: number, entry: ZipEntry, file: string): ByteReader<{ begin: number; dataStart: number; end: number }> {
  const fail = (detail: string) => new FormatError(file, entry.name, detail, memberLabel(entry));
  if (entry.flags & 0x1) throw fail('is encrypted (not supported)');
  if (entry.method !== 0 && entry.method !== 8) throw fail(`compression method ${entry.method} is not supported (stored and deflate are)`);
  // Checked before reading or inflating so a lying header cannot make us allocate gigabytes.
  if (entry.method === 0 && entry.csize !== entry.usize) throw fail(`stored member has compressed size ${entry.csize} but uncompressed size ${entry.usize}`);
  if (entry.method === 8 && entry.usize > entry.csize * MAX_DEFLATE_RATIO + 1024) throw fail(`declared size ${entry.usize} is impossible for ${entry.csize} deflated bytes`);
  const at = entry.localOffset;
  if (at + 30 > size) throw fail(`local header offset ${at} is outside the file`);
  const lh = yield { pos: at, len: 30, field: entry.name };
  const lv = new DataView(lh.buffer, lh.byteOffset, lh.length);
  if (lv.getUint32(0, true) !== SIG_LOCAL) throw fail(`no local file header at offset ${at}`);
  const nameLen = lv.getUint16(26, true);
  const dataStart = at + 30 + nameLen + lv.getUint16(28, true);
  if (dataStart > size) throw fail('local header runs past the end of the file');
  if (decodeName(yield { pos: at + 30, len: nameLen, field: entry.name }, lv.getUint16(6, true)) !== entry.name) {
    throw fail('local header names a different file than the central directory');
  }
  if (dataStart + entry.csize > size) throw fail(`data [${dataStart}, ${dataStart + entry.csize}) extends past the end of the file (truncated?)`);
  return { begin: at, dataStart, end: dataStart + entry.csize };
}

/** The uncompressed bytes of one member, CRC-checked. */
function* memberData(entry: ZipEntry, dataStart: number, file: string): ByteReader<Uint8Array> {
  const fail = (detail: string) => new FormatError(file, entry.name, detail, memberLabel(entry));
  const comp = yield { pos: dataStart, len: entry.csize, field: entry.name };
  let data: Uint8Array = comp;
  if (entry.method === 8) {
    try {
      data = inflateRawSync(comp, { maxOutputLength: Math.max(1, entry.usize) });
    } catch (e) {
      throw fail(`deflate data is corrupt or larger than the declared ${entry.usize} bytes (${describeError(e)})`);
    }
    if (data.length !== entry.usize) throw fail(`inflated to ${data.length} bytes, header says ${entry.usize}`);
  }
  const crc = crc32(data);
  if (crc !== entry.crc) throw fail(`CRC-32 mismatch (stored ${hex(entry.crc)}, computed ${hex(crc)}): data is corrupt`);
  return data;
}

const hex = (v: number) => `0x${v.toString(16).padStart(8, '0')}`;

export interface NpzReadOptions {
  /** Largest total declared uncompressed size of the members, checked before any is inflated. */
  maxInflatedBytes?: number;
}

function* npzReader(size: number, file: string, opts: NpzReadOptions): ByteReader<StateDict> {
  const members: ZipEntry[] = [];
  const keys = new Set<string>();
  const maxTotal = opts.maxInflatedBytes ?? LIMITS.inflated;
  let total = 0;
  for (const entry of yield* centralDirectory(size, file)) {
    if (entry.name.endsWith('/') && entry.usize === 0) continue; // directory entry
    if (!entry.name.endsWith('.npy')) throw new FormatError(file, entry.name, 'is not a .npy file', memberLabel(entry));
    const key = entry.name.slice(0, -4);
    if (keys.has(key)) throw new FormatError(file, entry.name, 'appears twice in the archive', memberLabel(entry));
    keys.add(key);
    members.push(entry);
    total += entry.usize;
    if (total > maxTotal) throw new FormatError(file, 'archive', `the members' declared uncompressed sizes add up to more than the ${maxTotal}-byte limit (at member ${JSON.stringify(entry.name)}); nothing was inflated`);
  }
  // Every member's header and data must occupy its own bytes. Checked for all members before any
  // data is read: overlapping members are how zip bombs reuse one compressed blob many times.
  const dataStarts = new Array<number>(members.length);
  const byOffset = members.map((_, i) => i).sort((a, b) => members[a].localOffset - members[b].localOffset);
  let prevEnd = 0;
  let prev: ZipEntry | null = null;
  for (const i of byOffset) {
    const entry = members[i];
    const where = yield* locateMember(size, entry, file);
    if (prev && where.begin < prevEnd) throw new FormatError(file, entry.name, `overlaps member ${JSON.stringify(prev.name)} in the file`, memberLabel(entry));
    prev = entry;
    prevEnd = where.end;
    dataStarts[i] = where.dataStart;
  }
  const dict: StateDict = new Map();
  for (let i = 0; i < members.length; i++) {
    const entry = members[i];
    const data = yield* memberData(entry, dataStarts[i], file);
    dict.set(entry.name.slice(0, -4), parseNpyWith(data, (field, detail) => new FormatError(file, entry.name, `${field}: ${detail}`, memberLabel(entry))));
  }
  return dict;
}

/** Parses an .npz archive held in memory into a StateDict keyed by member name without ".npy". */
export function parseNpz(bytes: Uint8Array, source = '<buffer>', opts: NpzReadOptions = {}): StateDict {
  return runOnBytes(npzReader(bytes.length, source, opts), bytes, plainFail(source));
}

/** Reads an .npz archive member by member (the whole file is never held in memory). */
export async function readNpz(path: string, opts: NpzReadOptions = {}): Promise<StateDict> {
  const fail = plainFail(path);
  return withFile(path, (fh, size) => runOnFile(npzReader(size, path, opts), fh, fail));
}

// ---------------------------------------------------------------------------------------------
// .npz writing

export interface NpzWriteOptions extends NpyWriteOptions {
  /** Deflate members (like np.savez_compressed). Default false (stored, like np.savez). */
  compress?: boolean;
}

const DOS_TIME = 0;
const DOS_DATE = (0 << 9) | (1 << 5) | 1; // 1980-01-01: fixed so identical input gives identical bytes

/** The archive in chunks; members are produced one at a time so memory stays about one tensor. */
function* npzChunks(dict: StateDict, opts: NpzWriteOptions, dest: string): Generator<Uint8Array> {
  const allow = opts.allowNonFinite ?? false;
  if (dict.size > 0xfffe) throw new RangeError(`npz: ${dict.size} members would need Zip64, which this writer does not produce`);
  const central: Uint8Array[] = [];
  let offset = 0;
  const limit = (what: string, v: number) => {
    if (v >= 0xffffffff) throw new RangeError(`npz: ${what} exceeds 4 GiB and would need Zip64, which this writer does not produce; use safetensors`);
  };
  for (const [key, rec] of dict) {
    const name = `${key}.npy`;
    const nameBytes = Buffer.from(name, 'utf8');
    if (nameBytes.length > 0xffff) throw new RangeError(`npz: member name ${JSON.stringify(name.slice(0, 40))}... is too long`);
    const utf8 = /[^\x20-\x7e]/.test(name) ? 0x800 : 0;
    let crc = 0;
    let usize = 0;
    let csize: number;
    let deflated: Uint8Array | null = null;
    if (opts.compress) {
      const raw = concat(npyChunks(key, rec, dest, allow));
      crc = crc32(raw);
      usize = raw.length;
      deflated = deflateRawSync(raw, { level: 6 });
      csize = deflated.length;
    } else {
      // First pass computes the CRC (the local header precedes the data); it also runs the NaN check before anything is written.
      for (const c of npyChunks(key, rec, dest, allow)) {
        crc = crc32(c, crc);
        usize += c.length;
      }
      csize = usize;
    }
    limit(`member ${name}`, usize);
    limit(`member ${name}`, csize);
    limit('archive', offset);
    const method = deflated ? 8 : 0;
    const local = new Uint8Array(30 + nameBytes.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, SIG_LOCAL, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(6, utf8, true);
    lv.setUint16(8, method, true);
    lv.setUint16(10, DOS_TIME, true);
    lv.setUint16(12, DOS_DATE, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, csize, true);
    lv.setUint32(22, usize, true);
    lv.setUint16(26, nameBytes.length, true);
    lv.setUint16(28, 0, true);
    local.set(nameBytes, 30);

    const cd = new Uint8Array(46 + nameBytes.length);
    const cv = new DataView(cd.buffer);
    cv.setUint32(0, SIG_CENTRAL, true);
    cv.setUint16(4, (3 << 8) | 20, true); // made by: Unix, spec 2.0 (so the mode below is honoured)
    cv.setUint16(6, 20, true);
    cv.setUint16(8, utf8, true);
    cv.setUint16(10, method, true);
    cv.setUint16(12, DOS_TIME, true);
    cv.setUint16(14, DOS_DATE, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, csize, true);
    cv.setUint32(24, usize, true);
    cv.setUint16(28, nameBytes.length, true);
    cv.setUint32(38, (0o100644 << 16) >>> 0, true); // regular file, rw-r--r--
    cv.setUint32(42, offset, true);
    cd.set(nameBytes, 46);
    central.push(cd);

    yield local;
    if (deflated) yield deflated;
    else yield* npyChunks(key, rec, dest, allow);
    offset += local.length + csize;
  }
  const cdSize = central.reduce((s, c) => s + c.length, 0);
  limit('archive', offset + cdSize);
  for (const c of central) yield c;
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, SIG_EOCD, true);
  ev.setUint16(8, dict.size, true);
  ev.setUint16(10, dict.size, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, offset, true);
  yield end;
}

/** An .npz archive as bytes; member `k.npy` per key `k`, in insertion order. */
export function serializeNpz(dict: StateDict, opts: NpzWriteOptions = {}): Uint8Array {
  for (const [name, rec] of dict) checkRecord(name, rec);
  return concat(npzChunks(dict, opts, '<buffer>'));
}

/** Writes an .npz archive atomically. */
export async function writeNpz(path: string, dict: StateDict, opts: NpzWriteOptions = {}): Promise<void> {
  for (const [name, rec] of dict) checkRecord(name, rec);
  await withAtomicFile(path, async (out) => {
    for (const c of npzChunks(dict, opts, path)) await out.write(c);
  });
}
