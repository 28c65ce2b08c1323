import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { Rng } from '../src/core/random.js';
import { FormatError } from '../src/io/errors.js';
import { numel } from '../src/core/tensor.js';
import type { StateDict } from '../src/io/records.js';
import { parseNpy, serializeNpy, readNpy, writeNpy, parseNpz, serializeNpz, readNpz, writeNpz, crc32, fortranToC } from '../src/io/npy.js';

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'rebasin-npy-'));
}

/** .npy bytes from a header dict text (padded here with spaces + "\n" to 64 bytes) and raw data. */
function npy(dict: string, data: number[] | Uint8Array, version = 1, pad = true): Uint8Array {
  const pre = version === 1 ? 10 : 12;
  let text = dict;
  if (pad) {
    const total = Math.ceil((pre + dict.length + 1) / 64) * 64;
    text = dict + ' '.repeat(total - pre - dict.length - 1) + '\n';
  }
  const h = Buffer.from(text, version === 3 ? 'utf8' : 'latin1');
  const out = new Uint8Array(pre + h.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const dv = new DataView(out.buffer);
  if (version === 1) dv.setUint16(8, h.length, true);
  else dv.setUint32(8, h.length, true);
  out.set(h, pre);
  out.set(data, pre + h.length);
  return out;
}

function bytesOf(kind: 'f4' | 'f8' | 'i8' | 'i4' | 'f2', little: boolean, vals: number[]): number[] {
  const size = { f4: 4, f8: 8, i8: 8, i4: 4, f2: 2 }[kind];
  const dv = new DataView(new ArrayBuffer(size * vals.length));
  vals.forEach((v, i) => {
    if (kind === 'f4') dv.setFloat32(i * 4, v, little);
    else if (kind === 'f8') dv.setFloat64(i * 8, v, little);
    else if (kind === 'i8') dv.setBigInt64(i * 8, BigInt(v), little);
    else if (kind === 'i4') dv.setInt32(i * 4, v, little);
    else dv.setUint16(i * 2, v, little); // f2: caller passes half bit patterns
  });
  return [...new Uint8Array(dv.buffer)];
}

function throwsFormat(fn: () => unknown, file: string, field: string, pattern?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.equal(e.field, field, e.message);
    assert.ok(e.message.startsWith(`${file}: `), e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

const DESCR = (d: string, shape: string, fortran = 'False') => `{'descr': '${d}', 'fortran_order': ${fortran}, 'shape': ${shape}, }`;

describe('.npy', () => {
  test('hand-built files of every supported dtype parse to the expected values', () => {
    const cases: [Uint8Array, number[], number[]][] = [
      [npy(DESCR('<f4', '(2, 3)'), bytesOf('f4', true, [1, 2, 3, 4, 5, -6.5])), [2, 3], [1, 2, 3, 4, 5, -6.5]],
      [npy(DESCR('>f4', '(3,)'), bytesOf('f4', false, [0.5, -1, 8])), [3], [0.5, -1, 8]],
      [npy(DESCR('<f8', '()'), bytesOf('f8', true, [2.25])), [], [2.25]],
      [npy(DESCR('>f8', '(1, 2)'), bytesOf('f8', false, [1e10, -3])), [1, 2], [1e10, -3]],
      [npy(DESCR('<f2', '(3,)'), bytesOf('f2', true, [0x3c00, 0xc000, 0x0001])), [3], [1, -2, 2 ** -24]],
      [npy(DESCR('|u1', '(4,)'), [0, 1, 128, 255]), [4], [0, 1, 128, 255]],
      [npy(DESCR('<i4', '(2,)'), bytesOf('i4', true, [-7, 100000])), [2], [-7, 100000]],
      [npy(DESCR('<i8', '(2,)'), bytesOf('i8', true, [-1, 16777216])), [2], [-1, 16777216]],
      [npy(DESCR('|b1', '(3,)'), [1, 0, 1]), [3], [1, 0, 1]],
      [npy(DESCR('|i1', '(2,)'), [0xff, 0x80]), [2], [-1, -128]],
      [npy(DESCR('<u2', '(1,)'), [0x34, 0x12]), [1], [0x1234]],
      [npy(DESCR('>u4', '(1,)'), [0, 1, 0, 0]), [1], [65536]],
      [npy(DESCR('<u8', '(1,)'), [5, 0, 0, 0, 0, 0, 0, 0]), [1], [5]],
      [npy(DESCR('>i2', '(1,)'), [0xff, 0xfe]), [1], [-2]],
      [npy(DESCR('<f4', '(0, 4)'), []), [0, 4], []],
      // Python 2 era header: double quotes, long suffix, no trailing comma, no padding newline.
      [npy(`{"descr": "<f4", "fortran_order": False, "shape": (2L,)}`, bytesOf('f4', true, [1, 2]), 1, false), [2], [1, 2]],
      [npy(DESCR('<f4', '(2,)'), bytesOf('f4', true, [3, 4]), 2), [2], [3, 4]],
      [npy(DESCR('<f4', '(2,)'), bytesOf('f4', true, [5, 6]), 3), [2], [5, 6]],
    ];
    for (const [bytes, shape, data] of cases) {
      const r = parseNpy(bytes);
      assert.deepEqual(r.shape, shape);
      assert.deepEqual([...r.data], data);
    }
  });

  test('fortran_order arrays are transposed to C order', () => {
    // C-order values of a [2, 3, 2] array are 0..11; Fortran order stores the first index fastest.
    const shape = [2, 3, 2];
    const f: number[] = [];
    for (let k = 0; k < 2; k++) for (let j = 0; j < 3; j++) for (let i = 0; i < 2; i++) f.push(i * 6 + j * 2 + k);
    const r = parseNpy(npy(DESCR('>f8', '(2, 3, 2)', 'True'), bytesOf('f8', false, f)));
    assert.deepEqual(r.shape, shape);
    assert.deepEqual([...r.data], Array.from({ length: 12 }, (_, i) => i));
    assert.deepEqual([...fortranToC(Float32Array.from([1, 3, 2, 4]), [2, 2])], [1, 2, 3, 4]);
    assert.deepEqual([...parseNpy(npy(DESCR('<f4', '(3,)', 'True'), bytesOf('f4', true, [1, 2, 3]))).data], [1, 2, 3]);
  });

  test('the writer produces numpy\'s exact layout', () => {
    const dict = DESCR('<f4', '(2, 3)');
    const expected = [0x93, ...Buffer.from('NUMPY'), 1, 0, 118, 0, ...Buffer.from(dict + ' '.repeat(117 - dict.length) + '\n'), ...bytesOf('f4', true, [1, 2, 3, 4, 5, 6])];
    assert.deepEqual([...serializeNpy({ shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) })], expected);
    const one = serializeNpy({ shape: [3], data: Float32Array.from([1, 2, 3]) });
    assert.ok(Buffer.from(one).toString('latin1').includes("'shape': (3,), }"));
    const scalar = serializeNpy({ shape: [], data: Float32Array.from([1]) });
    assert.ok(Buffer.from(scalar).toString('latin1').includes("'shape': (), }"));
    assert.equal((one.length - 12) % 64, 0);
  });

  test('round trips (random shapes, files)', async () => {
    const rng = new Rng(11);
    for (let t = 0; t < 50; t++) {
      const shape = Array.from({ length: rng.int(5) }, () => rng.int(5));
      const data = rng.fillNormal(new Float32Array(numel(shape))) as Float32Array;
      const r = parseNpy(serializeNpy({ shape, data }));
      assert.deepEqual(r.shape, shape);
      assert.deepEqual(r.data, data);
    }
    // A header over 65535 bytes switches the writer to format 2.0.
    const wide = { shape: new Array(23000).fill(1), data: Float32Array.from([7]) };
    const v2 = serializeNpy(wide);
    assert.equal(v2[6], 2);
    assert.deepEqual(parseNpy(v2), wide);
    const dir = tmp();
    try {
      const p = join(dir, 'a.npy');
      const rec = { shape: [3, 4], data: rng.fillNormal(new Float32Array(12)) as Float32Array };
      await writeNpy(p, rec);
      assert.deepEqual(await readNpy(p), rec);
      // A NaN aborts the write; nothing is left behind.
      const p2 = join(dir, 'b.npy');
      rec.data[5] = Infinity;
      await assert.rejects(writeNpy(p2, rec), (e: unknown) => e instanceof FormatError && e.file === p2 && /Infinity at index 5 \(position \[1, 1\]\)/.test(e.message));
      assert.deepEqual(readdirSync(dir), ['a.npy']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('malformed files throw FormatError naming the field', () => {
    const F = 'w.npy';
    const good = npy(DESCR('<f4', '(2,)'), bytesOf('f4', true, [1, 2]));
    throwsFormat(() => parseNpy(new Uint8Array(4), F), F, 'magic', /too short/);
    throwsFormat(() => parseNpy(Buffer.from('PK\x03\x04 not numpy at all'), F), F, 'magic');
    const v9 = good.slice();
    v9[6] = 9;
    throwsFormat(() => parseNpy(v9, F), F, 'version', /9\.0/);
    throwsFormat(() => parseNpy(good.subarray(0, 40), F), F, 'header length', /truncated/);
    const huge = good.slice();
    new DataView(huge.buffer).setUint16(8, 0xffff, true);
    throwsFormat(() => parseNpy(huge, F), F, 'header length');
    const v2huge = npy(DESCR('<f4', '(2,)'), [], 2);
    new DataView(v2huge.buffer).setUint32(8, 0xfffffff0, true);
    throwsFormat(() => parseNpy(v2huge, F), F, 'header length');
    throwsFormat(() => parseNpy(good.subarray(0, good.length - 1), F), F, 'data', /needs 8 bytes but only 7/);
    throwsFormat(() => parseNpy(new Uint8Array([...good, 0]), F), F, 'data', /1 bytes after/);
    throwsFormat(() => parseNpy(npy(DESCR('<c8', '(1,)'), new Uint8Array(8)), F), F, 'descr', /'<c8' is not supported/);
    throwsFormat(() => parseNpy(npy(DESCR('|f4', '(1,)'), new Uint8Array(4)), F), F, 'descr', /byte order/);
    throwsFormat(() => parseNpy(npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", new Uint8Array(4)), F), F, 'descr', /structured/);
    throwsFormat(() => parseNpy(npy(DESCR('<f4', '(3)'), new Uint8Array(12)), F), F, 'shape', /trailing comma/);
    throwsFormat(() => parseNpy(npy(DESCR('<f4', '(-3,)'), new Uint8Array(12)), F), F, 'shape', /negative/);
    throwsFormat(() => parseNpy(npy(DESCR('<f4', '(99999999999999999999,)'), []), F), F, 'header', /too large/);
    throwsFormat(() => parseNpy(npy(DESCR('<f4', '(2,)', 'None'), new Uint8Array(8)), F), F, 'header', /unexpected/);
    throwsFormat(() => parseNpy(npy(DESCR('<f4', '(2,)', "'no'"), new Uint8Array(8)), F), F, 'fortran_order');
    throwsFormat(() => parseNpy(npy("{'descr': '<f4', 'shape': (2,), }", new Uint8Array(8)), F), F, 'fortran_order', /no 'fortran_order'/);
    throwsFormat(() => parseNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", new Uint8Array(8)), F), F, 'x', /unexpected key/);
    throwsFormat(() => parseNpy(npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", new Uint8Array(8)), F), F, 'descr', /twice/);
    throwsFormat(() => parseNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", new Uint8Array(8)), F), F, 'header');
    throwsFormat(() => parseNpy(npy("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", new Uint8Array(8)), F), F, 'header');
    throwsFormat(() => parseNpy(npy(DESCR('<f4', '(2,)') + ' junk', new Uint8Array(8)), F), F, 'header', /after the header dict/);
    const badUtf8 = npy(DESCR('<f4', '(2,)'), new Uint8Array(8), 3);
    badUtf8[20] = 0xff;
    throwsFormat(() => parseNpy(badUtf8, F), F, 'header', /UTF-8/);
  });
});

// ---------------------------------------------------------------------------------------------
// .npz

/** Bitwise CRC-32, independent of the library's table-driven one. */
function crcRef(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

interface Member {
  name: string;
  data: Uint8Array; // uncompressed
  method?: 0 | 8 | 12;
  /** Pre-compressed payload for method 8 (defaults to zlib raw deflate). */
  payload?: Uint8Array;
  /** Write sizes as 0xFFFFFFFF + a Zip64 extra field in the local header, as np.savez does. */
  zip64Local?: boolean;
  /** Same in the central directory entry (sizes and local header offset). */
  zip64Central?: boolean;
  flags?: number;
  crc?: number;
  usize?: number;
}

/** A zip archive assembled field by field. */
function zip(members: Member[], opts: { zip64Eocd?: boolean; comment?: string } = {}): Uint8Array {
  const parts: number[] = [];
  const u16 = (arr: number[], v: number) => arr.push(v & 0xff, (v >>> 8) & 0xff);
  const u32 = (arr: number[], v: number) => arr.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  const u64 = (arr: number[], v: number) => {
    u32(arr, v % 2 ** 32);
    u32(arr, Math.floor(v / 2 ** 32));
  };
  const central: number[] = [];
  for (const m of members) {
    const method = m.method ?? 0;
    const payload = m.payload ?? (method === 8 ? deflateRawSync(m.data) : m.data);
    const crc = m.crc ?? crcRef(m.data);
    const usize = m.usize ?? m.data.length;
    const name = [...Buffer.from(m.name, 'utf8')];
    const offset = parts.length;
    u32(parts, 0x04034b50);
    u16(parts, m.zip64Local ? 45 : 20);
    u16(parts, m.flags ?? 0);
    u16(parts, method);
    u16(parts, 0);
    u16(parts, 0x21);
    u32(parts, crc);
    u32(parts, m.zip64Local ? 0xffffffff : payload.length);
    u32(parts, m.zip64Local ? 0xffffffff : usize);
    u16(parts, name.length);
    u16(parts, m.zip64Local ? 20 : 0);
    parts.push(...name);
    if (m.zip64Local) {
      u16(parts, 1);
      u16(parts, 16);
      u64(parts, usize);
      u64(parts, payload.length);
    }
    parts.push(...payload);
    u32(central, 0x02014b50);
    u16(central, 20);
    u16(central, 20);
    u16(central, m.flags ?? 0);
    u16(central, method);
    u16(central, 0);
    u16(central, 0x21);
    u32(central, crc);
    u32(central, m.zip64Central ? 0xffffffff : payload.length);
    u32(central, m.zip64Central ? 0xffffffff : usize);
    u16(central, name.length);
    u16(central, m.zip64Central ? 8 + 28 : 0);
    u16(central, 0);
    u16(central, 0);
    u16(central, 0);
    u32(central, 0);
    u32(central, m.zip64Central ? 0xffffffff : offset);
    central.push(...name);
    if (m.zip64Central) {
      u16(central, 0x5455); // an unrelated extra field first (extended timestamp), to be skipped
      u16(central, 4);
      u32(central, 0);
      u16(central, 1);
      u16(central, 24);
      u64(central, usize);
      u64(central, payload.length);
      u64(central, offset);
    }
  }
  const cdOffset = parts.length;
  parts.push(...central);
  if (opts.zip64Eocd) {
    const at = parts.length;
    u32(parts, 0x06064b50);
    u64(parts, 44);
    u16(parts, 45);
    u16(parts, 45);
    u32(parts, 0);
    u32(parts, 0);
    u64(parts, members.length);
    u64(parts, members.length);
    u64(parts, central.length);
    u64(parts, cdOffset);
    u32(parts, 0x07064b50);
    u32(parts, 0);
    u64(parts, at);
    u32(parts, 1);
  }
  const comment = [...Buffer.from(opts.comment ?? '')];
  u32(parts, 0x06054b50);
  u16(parts, 0);
  u16(parts, 0);
  u16(parts, opts.zip64Eocd ? 0xffff : members.length);
  u16(parts, opts.zip64Eocd ? 0xffff : members.length);
  u32(parts, opts.zip64Eocd ? 0xffffffff : central.length);
  u32(parts, opts.zip64Eocd ? 0xffffffff : cdOffset);
  u16(parts, comment.length);
  parts.push(...comment);
  return Uint8Array.from(parts);
}

describe('.npz', () => {
  const A = npy(DESCR('<f4', '(2, 2)'), bytesOf('f4', true, [1, 2, 3, 4]));
  const B = npy(DESCR('<f8', '(3,)'), bytesOf('f8', true, [0.5, -0.5, 9]));

  test('crc32 matches the standard check value', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
    assert.equal(crc32(new Uint8Array(0)), 0);
    const rng = new Rng(3);
    const data = Uint8Array.from({ length: 1000 }, () => rng.int(256));
    assert.equal(crc32(data), crcRef(data));
    assert.equal(crc32(data.subarray(500), crc32(data.subarray(0, 500))), crcRef(data));
  });

  test('a hand-built archive with a stored (Zip64 extra, like np.savez) and a deflated member', () => {
    // A deflate stream written by hand: one final stored block (BFINAL=1, BTYPE=00), LEN, ~LEN, bytes.
    const c = npy(DESCR('|u1', '(2,)'), [7, 9]);
    const handDeflate = Uint8Array.from([0x01, c.length & 0xff, c.length >> 8, ~c.length & 0xff, (~c.length >> 8) & 0xff, ...c]);
    const bytes = zip(
      [
        { name: 'layers.0.weight.npy', data: A, zip64Local: true },
        { name: 'b.npy', data: B, method: 8 },
        { name: 'ünicode.npy', data: c, method: 8, payload: handDeflate, flags: 0x800 },
      ],
      { comment: 'archive comment' },
    );
    const d = parseNpz(bytes);
    assert.deepEqual([...d.keys()], ['layers.0.weight', 'b', 'ünicode']);
    assert.deepEqual(d.get('layers.0.weight')!.shape, [2, 2]);
    assert.deepEqual([...d.get('layers.0.weight')!.data], [1, 2, 3, 4]);
    assert.deepEqual([...d.get('b')!.data], [0.5, -0.5, 9]);
    assert.deepEqual([...d.get('ünicode')!.data], [7, 9]);
    // Zip64 throughout: end-of-central-directory record and central directory extra fields.
    const z64 = parseNpz(zip([{ name: 'a.npy', data: A, zip64Central: true }, { name: 'b.npy', data: B, method: 8, zip64Central: true, zip64Local: true }], { zip64Eocd: true }));
    assert.deepEqual([...z64.get('a')!.data], [1, 2, 3, 4]);
    assert.deepEqual([...z64.get('b')!.data], [0.5, -0.5, 9]);
  });

  test('round trips: stored and deflated, files, readable layout', async () => {
    const rng = new Rng(12);
    const d: StateDict = new Map();
    for (const name of ['fc1.weight', 'fc1.bias', 'ü', 'conv.0.weight', 'scalar']) {
      const shape = name === 'scalar' ? [] : Array.from({ length: 1 + rng.int(4) }, () => 1 + rng.int(4));
      d.set(name, { shape, data: rng.fillNormal(new Float32Array(numel(shape))) as Float32Array });
    }
    for (const compress of [false, true]) {
      const back = parseNpz(serializeNpz(d, { compress }));
      assert.deepEqual([...back.keys()], [...d.keys()]);
      for (const [k, v] of d) assert.deepEqual(back.get(k), v);
    }
    // Output is deterministic (fixed timestamps).
    assert.deepEqual(serializeNpz(d), serializeNpz(d));
    const dir = tmp();
    try {
      const p = join(dir, 'm.npz');
      await writeNpz(p, d, { compress: true });
      assert.deepEqual(await readNpz(p), d);
      await writeNpz(p, d);
      assert.deepEqual(new Uint8Array(readFileSync(p)), serializeNpz(d));
      // Members are ordinary .npy files.
      const raw = readFileSync(p);
      assert.equal(raw.readUInt32LE(0), 0x04034b50);
      assert.equal(raw.toString('latin1', 30, 30 + 'fc1.weight.npy'.length), 'fc1.weight.npy');
      // A NaN in a later member: no archive, no temp file.
      const bad = new Map(d);
      const nan = new Float32Array(4);
      nan[3] = NaN;
      bad.set('z', { shape: [2, 2], data: nan });
      const p2 = join(dir, 'bad.npz');
      await assert.rejects(writeNpz(p2, bad), (e: unknown) => e instanceof FormatError && e.field === 'z' && /NaN at index 3/.test(e.message));
      assert.deepEqual(readdirSync(dir), ['m.npz']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('malformed archives throw FormatError naming the member or structure', async () => {
    const F = 'weights.npz';
    const good = zip([{ name: 'a.npy', data: A }, { name: 'b.npy', data: B, method: 8 }]);
    throwsFormat(() => parseNpz(good.subarray(0, good.length - 5), F), F, 'end of central directory', /no end-of-central-directory/);
    throwsFormat(() => parseNpz(new Uint8Array(10), F), F, 'end of central directory', /too short/);
    throwsFormat(() => parseNpz(good.subarray(40), F), F, 'end of central directory', /extends past/);
    const flipped = good.slice();
    flipped[30 + 5 + 80] ^= 1; // a data byte of the stored member
    throwsFormat(() => parseNpz(flipped, F), F, 'a.npy', /CRC-32 mismatch/);
    throwsFormat(() => parseNpz(zip([{ name: 'a.npy', data: A, crc: 1234 }]), F), F, 'a.npy', /CRC/);
    throwsFormat(() => parseNpz(zip([{ name: 'a.npy', data: A, method: 12 }]), F), F, 'a.npy', /compression method 12/);
    throwsFormat(() => parseNpz(zip([{ name: 'a.npy', data: A, flags: 1 }]), F), F, 'a.npy', /encrypted/);
    throwsFormat(() => parseNpz(zip([{ name: 'notes.txt', data: A }]), F), F, 'notes.txt', /not a .npy file/);
    throwsFormat(() => parseNpz(zip([{ name: 'a.npy', data: A }, { name: 'a.npy', data: B }]), F), F, 'a.npy', /twice/);
    throwsFormat(() => parseNpz(zip([{ name: 'a.npy', data: A, method: 8, usize: 2 ** 31 }]), F), F, 'a.npy', /impossible/);
    throwsFormat(() => parseNpz(zip([{ name: 'a.npy', data: A, method: 8, usize: A.length - 1 }]), F), F, 'a.npy', /larger than the declared/);
    throwsFormat(() => parseNpz(zip([{ name: 'a.npy', data: A, usize: A.length + 1 }]), F), F, 'a.npy', /stored member/);
    throwsFormat(() => parseNpz(zip([{ name: 'a.npy', data: A, method: 8, payload: Uint8Array.from([0xff, 0xff, 0xff]) }]), F), F, 'a.npy', /corrupt/);
    const badNpy = npy(DESCR('<c8', '(1,)'), new Uint8Array(8));
    throwsFormat(() => parseNpz(zip([{ name: 'w.npy', data: badNpy }]), F), F, 'w.npy', /member "w.npy": descr: dtype '<c8'/);
    // EOCD fields saturated (Zip64) without the Zip64 locator.
    const sat = good.slice();
    new DataView(sat.buffer).setUint32(sat.length - 22 + 16, 0xffffffff, true);
    throwsFormat(() => parseNpz(sat, F), F, 'end of central directory', /Zip64/);
    // A Zip64 locator pointing at garbage.
    const z = zip([{ name: 'a.npy', data: A }], { zip64Eocd: true });
    const zv = new DataView(z.buffer);
    const locator = z.length - 22 - 20;
    assert.equal(zv.getUint32(locator, true), 0x07064b50);
    zv.setUint32(zv.getUint32(locator + 8, true), 0x12345678, true);
    throwsFormat(() => parseNpz(z, F), F, 'zip64 end of central directory', /no zip64 end-of-central-directory record/);
    zv.setUint32(locator + 8, 0xfffffff0, true);
    throwsFormat(() => parseNpz(z, F), F, 'zip64 end of central directory', /outside the file/);
    // Central directory says Zip64 but the extra field is missing or short.
    const short = zip([{ name: 'a.npy', data: A, zip64Central: true }]);
    const sv = new DataView(short.buffer);
    const cdAt = sv.getUint32(short.length - 22 + 16, true);
    sv.setUint16(cdAt + 46 + 5 + 8 + 2, 8, true); // shrink the Zip64 field (its length) to 8 bytes
    throwsFormat(() => parseNpz(short, F), F, 'a.npy', /zip64 extra field is too short|extra field/);
    // Overlapping members (the zip-bomb trick): a's data is stretched over b's header.
    const ov = zip([{ name: 'a.npy', data: A }, { name: 'b.npy', data: B }]);
    const ovv = new DataView(ov.buffer);
    const ovCd = ovv.getUint32(ov.length - 22 + 16, true);
    const stretched = A.length + 40;
    ovv.setUint32(ovCd + 20, stretched, true);
    ovv.setUint32(ovCd + 24, stretched, true);
    ovv.setUint32(ovCd + 16, crcRef(ov.subarray(35, 35 + stretched)), true);
    throwsFormat(() => parseNpz(ov, F), F, 'b.npy', /overlaps member "a.npy"/);
    // Central directory entry signature destroyed.
    const cd = good.slice();
    const cdOff = new DataView(cd.buffer).getUint32(cd.length - 22 + 16, true);
    cd[cdOff] = 0;
    throwsFormat(() => parseNpz(cd, F), F, 'central directory', /bad signature/);
    const dir = tmp();
    try {
      const p = join(dir, 'x.npz');
      writeFileSync(p, flipped);
      await assert.rejects(readNpz(p), (e: unknown) => e instanceof FormatError && e.file === p && e.field === 'a.npy');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
