/**
 * IDX files (the MNIST format), raw or gzipped. Header is big-endian: images have magic 2051
 * (0x00000803) then count, rows, cols (16 bytes); labels have magic 2049 (0x00000801) then count
 * (8 bytes). Every mismatch is reported with the file name and expected-vs-found values.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import type { Dataset } from './dataset.js';
import { normalize as normalizeDataset } from './dataset.js';

export const IDX_IMAGES_MAGIC = 2051;
export const IDX_LABELS_MAGIC = 2049;

const hex = (v: number) => '0x' + (v >>> 0).toString(16).padStart(8, '0');

export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** File contents, gunzipped when they start with the gzip magic 1f 8b. */
export function readMaybeGzip(path: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(`${path}: cannot read (${err.code ?? err.message})`);
  }
  if (!isGzip(raw)) return raw;
  try {
    return gunzipSync(raw);
  } catch (e) {
    throw new Error(`${path}: gzip data is corrupt or truncated (${(e as Error).message})`);
  }
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** `bytes` holds the start of a file of `length` bytes (at least `headerBytes` of it, or all of a shorter file). */
function checkMagic(bytes: Uint8Array, length: number, name: string, want: number, what: string, headerBytes: number): void {
  const tooShort = () => new Error(`${name}: file has ${length} bytes, shorter than the ${headerBytes}-byte IDX ${what} header`);
  if (length < 4) throw tooShort();
  // Magic first: a wrong kind of file is a more useful message than a short header.
  const magic = view(bytes).getUint32(0, false);
  if (magic !== want) {
    const hint =
      magic === IDX_IMAGES_MAGIC ? ' (this is an IDX images file)' :
      magic === IDX_LABELS_MAGIC ? ' (this is an IDX labels file)' :
      bytes[0] === 0x1f && bytes[1] === 0x8b ? ' (still gzipped?)' : '';
    throw new Error(`${name}: expected IDX ${what} magic ${want} (${hex(want)}), found ${magic} (${hex(magic)})${hint}`);
  }
  if (length < headerBytes) throw tooShort();
}

export interface IdxImages {
  count: number;
  rows: number;
  cols: number;
  /** count×rows×cols bytes, a view into the file buffer. */
  pixels: Uint8Array;
}

/** Checks an IDX images header (the first 16 bytes of a file of `length` bytes, or all of a shorter one). */
export function parseIdxImagesHeader(head: Uint8Array, length: number, name: string): { count: number; rows: number; cols: number } {
  checkMagic(head, length, name, IDX_IMAGES_MAGIC, 'images', 16);
  const dv = view(head);
  const count = dv.getUint32(4, false);
  const rows = dv.getUint32(8, false);
  const cols = dv.getUint32(12, false);
  if (rows === 0 || cols === 0) throw new Error(`${name}: image dimensions must be positive, header says ${rows}×${cols}`);
  const expected = 16 + count * rows * cols;
  if (length !== expected) {
    const why = length < expected ? ' (truncated?)' : ' (trailing data, or wrong count in header?)';
    throw new Error(`${name}: expected ${expected} bytes for ${count}×${rows}×${cols} images, file has ${length} bytes${why}`);
  }
  return { count, rows, cols };
}

export function parseIdxImages(bytes: Uint8Array, name: string): IdxImages {
  const { count, rows, cols } = parseIdxImagesHeader(bytes, bytes.length, name);
  return { count, rows, cols, pixels: bytes.subarray(16) };
}

export function parseIdxLabels(bytes: Uint8Array, name: string): Uint8Array {
  checkMagic(bytes, bytes.length, name, IDX_LABELS_MAGIC, 'labels', 8);
  const count = view(bytes).getUint32(4, false);
  const expected = 8 + count;
  if (bytes.length !== expected) {
    const why = bytes.length < expected ? ' (truncated?)' : ' (trailing data, or wrong count in header?)';
    throw new Error(`${name}: expected ${expected} bytes for ${count} labels, file has ${bytes.length} bytes${why}`);
  }
  return bytes.subarray(8);
}

const TO_UNIT = new Float32Array(256).map((_, i) => i / 255);

/** uint8 → float32 in [0,1] (v/255), through a lookup table. */
export function bytesToUnitFloat(src: Uint8Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const lut = TO_UNIT;
  for (let i = 0; i < src.length; i++) out[i] = lut[src[i]];
  return out;
}

export interface IdxLoadOptions {
  name?: string;
  /** Keep only the first `limit` samples. */
  limit?: number;
  /** Labels must lie in [0, numClasses). Default 10. */
  numClasses?: number;
  classNames?: string[];
  /** Optional (x − mean)/std after scaling to [0,1]; the reference uses none. */
  normalize?: { mean: number; std: number };
  /** Sample shape: 'chw' → [1,rows,cols] (default), 'flat' → [rows·cols]. */
  layout?: 'chw' | 'flat';
}

/**
 * An images/labels IDX pair, opened: headers, sizes and every label are read and checked, the
 * pixels not yet. `readImages` converts a range of images to [0,1] floats; an uncompressed images
 * file is read only over that range (in small chunks), a gzipped one is inflated once and kept.
 */
export interface IdxPairSource {
  count: number;
  rows: number;
  cols: number;
  /** All labels, checked to lie in [0, numClasses). */
  labels: Uint8Array;
  /** Images [from, to) as v/255 into `out` ((to − from)·rows·cols floats), bit-identical to `bytesToUnitFloat`. */
  readImages(from: number, to: number, out: Float32Array): void;
}

const cannotRead = (path: string, e: unknown) => {
  const err = e as NodeJS.ErrnoException;
  return new Error(`${path}: cannot read (${err.code ?? err.message})`);
};

/** Reads `buf.length` bytes at `pos` (fewer only at the end of the file); returns the count read. */
function readAt(fd: number, path: string, buf: Uint8Array, pos: number): number {
  let got = 0;
  try {
    while (got < buf.length) {
      const r = readSync(fd, buf, got, buf.length - got, pos + got);
      if (r === 0) break;
      got += r;
    }
  } catch (e) {
    throw cannotRead(path, e);
  }
  return got;
}

const READ_CHUNK = 1 << 20;

function openImages(path: string): Omit<IdxPairSource, 'labels'> {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw cannotRead(path, e);
  }
  let size: number;
  let head: Uint8Array;
  try {
    size = fstatSync(fd).size;
    head = new Uint8Array(Math.min(size, 16));
    readAt(fd, path, head, 0);
  } finally {
    closeSync(fd);
  }
  if (size < 16 || isGzip(head)) {
    // Gzipped (or too short to hold a header, for the usual message): the whole payload at once.
    const img = parseIdxImages(readMaybeGzip(path), path);
    const d = img.rows * img.cols;
    return { ...img, readImages: (from, to, out) => { bytesToUnitFloat(img.pixels.subarray(from * d, to * d), out); } };
  }
  const { count, rows, cols } = parseIdxImagesHeader(head, size, path);
  const d = rows * cols;
  const readImages = (from: number, to: number, out: Float32Array) => {
    const total = (to - from) * d;
    if (total <= 0) return;
    let h: number;
    try {
      h = openSync(path, 'r');
    } catch (e) {
      throw cannotRead(path, e);
    }
    try {
      const chunk = new Uint8Array(Math.min(READ_CHUNK, total));
      for (let done = 0; done < total; done += chunk.length) {
        const part = total - done < chunk.length ? chunk.subarray(0, total - done) : chunk;
        if (readAt(h, path, part, 16 + from * d + done) !== part.length) throw new Error(`${path}: file got shorter while reading (changed on disk?)`);
        bytesToUnitFloat(part, out.subarray(done, done + part.length));
      }
    } finally {
      closeSync(h);
    }
  };
  return { count, rows, cols, readImages };
}

/** Opens an images/labels IDX pair (see IdxPairSource); errors name the file and what was expected. */
export function openIdxPair(imagesPath: string, labelsPath: string, numClasses = 10): IdxPairSource {
  const img = openImages(imagesPath);
  const lab = parseIdxLabels(readMaybeGzip(labelsPath), labelsPath);
  if (img.count !== lab.length) {
    throw new Error(`${imagesPath} has ${img.count} images but ${labelsPath} has ${lab.length} labels (count mismatch)`);
  }
  for (let i = 0; i < lab.length; i++) {
    if (lab[i] >= numClasses) throw new Error(`${labelsPath}: label ${lab[i]} at index ${i} is outside [0, ${numClasses})`);
  }
  return { ...img, labels: lab };
}

/** Reads an images/labels IDX pair into a Dataset (pixels scaled to [0,1]); with `limit`, only the first images are read. */
export function loadIdxPair(imagesPath: string, labelsPath: string, opts: IdxLoadOptions = {}): Dataset {
  const numClasses = opts.numClasses ?? 10;
  const src = openIdxPair(imagesPath, labelsPath, numClasses);
  if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 0)) {
    throw new Error(`loadIdxPair: limit must be a non-negative integer, got ${opts.limit}`);
  }
  const n = Math.min(opts.limit ?? src.count, src.count);
  const d = src.rows * src.cols;
  const x = new Float32Array(n * d);
  src.readImages(0, n, x);
  const y = Int32Array.from(src.labels.subarray(0, n));
  const ds: Dataset = {
    name: opts.name ?? imagesPath,
    x,
    sampleShape: opts.layout === 'flat' ? [d] : [1, src.rows, src.cols],
    y,
    n,
    numClasses,
  };
  if (opts.classNames) ds.classNames = opts.classNames;
  return opts.normalize ? normalizeDataset(ds, opts.normalize.mean, opts.normalize.std) : ds;
}
