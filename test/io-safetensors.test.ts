import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readdirSync, existsSync, writeFileSync, readFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '../src/core/random.js';
import { FormatError } from '../src/io/errors.js';
import { numel } from '../src/core/tensor.js';
import { type StateDict, validateFinite } from '../src/io/records.js';
import { writeFileAtomic, writeFileAtomicSync, withAtomicFile, ensureDir, ensureDirSync } from '../src/io/atomic.js';
import {
  float32ToFloat16Bits, float16BitsToFloat32, float32ToBfloat16Bits, bfloat16BitsToFloat32,
  float32ArrayToFloat16, float16ArrayToFloat32, float32ArrayToBfloat16, bfloat16ArrayToFloat32,
  parseSafetensors, serializeSafetensors, readSafetensors, writeSafetensors, openSafetensors, writeSafetensorsStreaming,
} from '../src/io/safetensors.js';

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'rebasin-st-'));
}

function randomDict(rng: Rng, names: string[], scale = 1): StateDict {
  const d: StateDict = new Map();
  for (const name of names) {
    const nd = rng.int(4);
    const shape = Array.from({ length: nd }, () => 1 + rng.int(6));
    const data = new Float32Array(numel(shape));
    for (let i = 0; i < data.length; i++) data[i] = rng.normal() * scale;
    d.set(name, { shape, data });
  }
  return d;
}

/** Hand-assembled safetensors bytes: u64 LE size, the header text verbatim, then `data`. */
function build(header: string | object, data: number[] | Uint8Array = []): Uint8Array {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const h = Buffer.from(text, 'utf8');
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function f32le(...vals: number[]): number[] {
  const b = Buffer.alloc(4 * vals.length);
  vals.forEach((v, i) => b.writeFloatLE(v, 4 * i));
  return [...b];
}

/** Asserts `fn` throws a FormatError for `file` whose field is `field` and whose message names both. */
function throwsFormat(fn: () => unknown, file: string, field: string, pattern?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.equal(e.field, field, e.message);
    assert.ok(e.message.startsWith(`${file}: `), e.message);
    assert.ok(e.message.includes(field), e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

async function rejectsFormat(p: Promise<unknown>, file: string, field: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.equal(e.field, field, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

describe('float16 / bfloat16 conversion', () => {
  /** Decodes a half from its fields, independently of the library's table. */
  function halfValue(h: number): number {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 31) return m ? NaN : s * Infinity;
    if (e === 0) return s * m * 2 ** -24;
    return s * (1 + m / 1024) * 2 ** (e - 15);
  }

  /** Float32 neighbours of x (x must be a float32 value, not zero). */
  function f32Neighbours(x: number): [number, number] {
    const f = new Float32Array([x]);
    const u = new Uint32Array(f.buffer);
    const bits = u[0];
    u[0] = bits - 1;
    const a = f[0];
    u[0] = bits + 1;
    const b = f[0];
    return x > 0 ? [a, b] : [b, a];
  }

  test('every half bit pattern decodes correctly and round-trips', () => {
    for (let h = 0; h < 65536; h++) {
      const v = float16BitsToFloat32(h);
      const want = halfValue(h);
      if (Number.isNaN(want)) {
        assert.ok(Number.isNaN(v), `h=${h.toString(16)}`);
        const back = float32ToFloat16Bits(v);
        assert.equal(back & 0x7c00, 0x7c00);
        assert.notEqual(back & 0x3ff, 0, 'NaN must stay NaN');
        continue;
      }
      assert.ok(Object.is(v, want), `h=0x${h.toString(16)}: ${v} vs ${want}`);
      assert.equal(float32ToFloat16Bits(v), h, `round trip of 0x${h.toString(16)}`);
    }
  });

  test('float32 → float16 rounds to nearest even at every midpoint, including subnormals and overflow', () => {
    for (const sign of [1, -1]) {
      for (let h = 0; h < 0x7c00; h++) {
        const lo = halfValue(h);
        const hi = h === 0x7bff ? 65536 : halfValue(h + 1); // 65536 is where overflow to Inf begins
        const mid = (lo + hi) / 2; // 12 significant bits: exact in float32
        assert.equal(Math.fround(mid), mid);
        const sb = sign < 0 ? 0x8000 : 0;
        const even = (h & 1) === 0 ? h : h + 1;
        assert.equal(float32ToFloat16Bits(sign * mid), sb | even, `midpoint above 0x${h.toString(16)}`);
        const [below, above] = f32Neighbours(mid);
        assert.equal(float32ToFloat16Bits(sign * below), sb | h, `just below midpoint above 0x${h.toString(16)}`);
        assert.equal(float32ToFloat16Bits(sign * above), sb | (h + 1), `just above midpoint above 0x${h.toString(16)}`);
      }
    }
    assert.equal(float32ToFloat16Bits(1e-10), 0);
    assert.equal(float32ToFloat16Bits(-1e-10), 0x8000);
    assert.equal(float32ToFloat16Bits(1e6), 0x7c00);
    assert.equal(float32ToFloat16Bits(-Infinity), 0xfc00);
    assert.equal(float32ToFloat16Bits(3.4e38), 0x7c00);
    assert.equal(float32ToFloat16Bits(2 ** -149), 0); // float32 subnormal
  });

  test('every bfloat16 bit pattern round-trips, and float32 → bfloat16 rounds to nearest even', () => {
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let h = 0; h < 65536; h++) {
      const v = bfloat16BitsToFloat32(h);
      u[0] = h << 16;
      if (Number.isNaN(f[0])) {
        assert.ok(Number.isNaN(v));
        assert.ok(Number.isNaN(bfloat16BitsToFloat32(float32ToBfloat16Bits(v))));
        continue;
      }
      assert.ok(Object.is(v, f[0]));
      assert.equal(float32ToBfloat16Bits(v), h);
      const e = (h >> 7) & 0xff;
      if (e < 0xfe || (e === 0xfe && (h & 0x7f) !== 0x7f)) {
        // Midpoint between h and h+1 in float32 bits is (h << 16) | 0x8000; its neighbours decide by distance.
        const mid = ((h << 16) | 0x8000) >>> 0;
        const even = (h & 1) === 0 ? h : h + 1;
        u[0] = mid;
        assert.equal(float32ToBfloat16Bits(f[0]), even);
        u[0] = mid - 1;
        assert.equal(float32ToBfloat16Bits(f[0]), h);
        u[0] = mid + 1;
        assert.equal(float32ToBfloat16Bits(f[0]), (h + 1) & 0xffff);
      }
    }
  });

  test('array conversions agree with the scalar ones', () => {
    const rng = new Rng(7);
    const src = new Float32Array(5000);
    for (let i = 0; i < src.length; i++) src[i] = rng.normal() * 10 ** (rng.int(12) - 6);
    src[0] = NaN;
    src[1] = -Infinity;
    src[2] = -0;
    const h = float32ArrayToFloat16(src);
    const b = float32ArrayToBfloat16(src);
    for (let i = 0; i < src.length; i++) {
      assert.equal(h[i], float32ToFloat16Bits(src[i]));
      assert.equal(b[i], float32ToBfloat16Bits(src[i]));
    }
    const hb = float16ArrayToFloat32(h);
    const bb = bfloat16ArrayToFloat32(b);
    for (let i = 0; i < src.length; i++) {
      assert.ok(Object.is(hb[i], float16BitsToFloat32(h[i])));
      assert.ok(Object.is(bb[i], bfloat16BitsToFloat32(b[i])));
    }
  });
});

describe('safetensors parsing of hand-built bytes', () => {
  test('a fixture assembled byte by byte parses to the expected values', () => {
    const data = [
      ...f32le(1.5, -2, 0.25, 1024), // a: F32 [2, 2]      bytes [0, 16)
      0x00, 0x3c, 0x00, 0xb8, 0x00, 0x7c, // b: F16 [3]    bytes [16, 22): 1, -0.5, Inf
      0x80, 0x3f, 0x40, 0xc0, // c: BF16 [2]               bytes [22, 26): 1, -3
      0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // d: F64 []           bytes [26, 34): 1.5
      0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // e: I64 [1]  bytes [34, 42): -2
      1, 0, 7, // f: BOOL [3]                              bytes [42, 45)
      200, // g: U8 [1, 1]                                  bytes [45, 46)
    ];
    // Header keys deliberately not in data order, plus metadata first, plus an integer-like name.
    const header =
      '{"__metadata__":{"format":"pt","note":"hand built"},' +
      '"c":{"dtype":"BF16","shape":[2],"data_offsets":[22,26]},' +
      '"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},' +
      '"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},' +
      '"d":{"dtype":"F64","shape":[],"data_offsets":[26,34]},' +
      '"e":{"dtype":"I64","shape":[1],"data_offsets":[34,42]},' +
      '"f":{"dtype":"BOOL","shape":[3],"data_offsets":[42,45]},' +
      '"7":{"dtype":"U8","shape":[1,1],"data_offsets":[45,46]},' +
      '"z":{"dtype":"F32","shape":[0,5],"data_offsets":[46,46]}}   ';
    const { tensors, metadata } = parseSafetensors(build(header, data));
    assert.deepEqual(metadata, { format: 'pt', note: 'hand built' });
    // StateDict order is file (data offset) order.
    assert.deepEqual([...tensors.keys()], ['a', 'b', 'c', 'd', 'e', 'f', '7', 'z']);
    const get = (n: string) => ({ shape: tensors.get(n)!.shape, data: [...tensors.get(n)!.data] });
    assert.deepEqual(get('a'), { shape: [2, 2], data: [1.5, -2, 0.25, 1024] });
    assert.deepEqual(get('b'), { shape: [3], data: [1, -0.5, Infinity] });
    assert.deepEqual(get('c'), { shape: [2], data: [1, -3] });
    assert.deepEqual(get('d'), { shape: [], data: [1.5] });
    assert.deepEqual(get('e'), { shape: [1], data: [-2] });
    assert.deepEqual(get('f'), { shape: [3], data: [1, 0, 1] });
    assert.deepEqual(get('7'), { shape: [1, 1], data: [200] });
    assert.deepEqual(get('z'), { shape: [0, 5], data: [] });
  });

  test('the writer produces exactly the reference layout (space padding to 8 bytes)', () => {
    const json = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    assert.equal(json.length, 54);
    const expected = build(json + '  ', f32le(3, -1));
    assert.equal(expected.length % 8, 0);
    const got = serializeSafetensors(new Map([['a', { shape: [2], data: Float32Array.from([3, -1]) }]]));
    assert.deepEqual([...got], [...expected]);
    const withMeta = serializeSafetensors(new Map([['a', { shape: [2], data: Float32Array.from([3, -1]) }]]), {
      dtype: 'F16',
      metadata: { format: 'pt' },
    });
    const json2 = '{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}';
    assert.deepEqual([...withMeta], [...build(json2 + ' '.repeat((8 - (json2.length % 8)) % 8), [0x00, 0x42, 0x00, 0xbc])]);
  });

  test('unaligned data offsets inside a larger buffer still decode', () => {
    const bytes = build('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32le(42));
    const big = new Uint8Array(bytes.length + 3);
    big.set(bytes, 3);
    assert.deepEqual([...parseSafetensors(big.subarray(3)).tensors.get('a')!.data], [42]);
  });
});

describe('safetensors malformed input', () => {
  const F = 'model.safetensors';
  const entry = (dtype: string, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });

  test('truncated files', () => {
    throwsFormat(() => parseSafetensors(new Uint8Array(5), F), F, 'header size', /too short/);
    const ok = build({ a: entry('F32', [10], [0, 40]) }, new Uint8Array(40));
    throwsFormat(() => parseSafetensors(ok.subarray(0, 20), F), F, 'header size', /truncated/);
    throwsFormat(() => parseSafetensors(ok.subarray(0, ok.length - 1), F), F, 'a', /tensor "a".*extend past the end/);
  });

  test('huge declared header size is refused before allocating', () => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setBigUint64(0, 0xffffffffffffffffn, true);
    throwsFormat(() => parseSafetensors(b, F), F, 'header size', /exceeds/);
    new DataView(b.buffer).setBigUint64(0, 9n, true);
    throwsFormat(() => parseSafetensors(b, F), F, 'header size', /only 8 bytes follow/);
  });

  test('bad JSON, non-object header, invalid UTF-8', () => {
    throwsFormat(() => parseSafetensors(build('{"a": {"dtype": "F32",'), F), F, 'header', /not valid JSON/);
    throwsFormat(() => parseSafetensors(build('[1, 2]'), F), F, 'header', /start with/);
    throwsFormat(() => parseSafetensors(build(''), F), F, 'header');
    const bad = build('{"a":1}');
    bad[10] = 0xff;
    throwsFormat(() => parseSafetensors(bad, F), F, 'header', /UTF-8/);
    throwsFormat(() => parseSafetensors(build('{"a": 5}'), F), F, 'a', /tensor "a": entry is not an object/);
  });

  test('dtype, shape and offsets are validated per tensor', () => {
    throwsFormat(() => parseSafetensors(build({ w: entry('F33', [1], [0, 4]) }, new Uint8Array(4)), F), F, 'w', /dtype "F33" is not supported/);
    throwsFormat(() => parseSafetensors(build({ w: entry('C64', [1], [0, 8]) }, new Uint8Array(8)), F), F, 'w', /not supported/);
    throwsFormat(() => parseSafetensors(build({ w: { shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), F), F, 'w', /dtype is missing/);
    throwsFormat(() => parseSafetensors(build({ w: entry('F32', [-1], [0, 4]) }, new Uint8Array(4)), F), F, 'w', /shape/);
    throwsFormat(() => parseSafetensors(build({ w: entry('F32', [1.5], [0, 4]) }, new Uint8Array(4)), F), F, 'w', /shape/);
    throwsFormat(() => parseSafetensors(build({ w: entry('F32', 3, [0, 4]) }, new Uint8Array(4)), F), F, 'w', /shape/);
    throwsFormat(() => parseSafetensors(build({ w: entry('F32', [1], [4, 0]) }, new Uint8Array(4)), F), F, 'w', /data_offsets/);
    throwsFormat(() => parseSafetensors(build({ w: entry('F32', [1], [0]) }, new Uint8Array(4)), F), F, 'w', /data_offsets/);
  });

  test('shape/offset mismatch names the tensor, shape, dtype and byte count', () => {
    const b = build({ 'fc1.weight': entry('F32', [10, 20], [0, 400]) }, new Uint8Array(400));
    assert.throws(
      () => parseSafetensors(b, F),
      (e: unknown) =>
        e instanceof FormatError &&
        e.field === 'fc1.weight' &&
        e.message === 'model.safetensors: tensor "fc1.weight": data_offsets [0, 400] do not match shape [10, 20] × F32 (800 bytes)',
    );
  });

  test('offsets out of range, overlaps, holes and trailing bytes', () => {
    throwsFormat(() => parseSafetensors(build({ w: entry('F32', [2], [0, 8]) }, new Uint8Array(4)), F), F, 'w', /extend past the end/);
    throwsFormat(
      () => parseSafetensors(build({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) }, new Uint8Array(12)), F),
      F, 'b', /overlap tensor "a"/,
    );
    throwsFormat(
      () => parseSafetensors(build({ a: entry('F32', [1], [0, 4]), b: entry('F32', [1], [8, 12]) }, new Uint8Array(12)), F),
      F, 'b', /bytes \[4, 8\).*unused/,
    );
    throwsFormat(() => parseSafetensors(build({ a: entry('F32', [1], [4, 8]) }, new Uint8Array(8)), F), F, 'a', /holes/);
    throwsFormat(() => parseSafetensors(build({ a: entry('F32', [1], [0, 4]) }, new Uint8Array(6)), F), F, 'data', /2 bytes after the last tensor/);
    // Two tensors claiming the same bytes.
    throwsFormat(
      () => parseSafetensors(build({ a: entry('F32', [1], [0, 4]), b: entry('F32', [1], [0, 4]) }, new Uint8Array(4)), F),
      F, 'b', /overlap/,
    );
  });

  test('metadata must map strings to strings', () => {
    throwsFormat(() => parseSafetensors(build({ __metadata__: { a: 1 } }), F), F, '__metadata__', /not a string/);
    throwsFormat(() => parseSafetensors(build({ __metadata__: [1] }), F), F, '__metadata__');
  });

  test('errors from files name the path', async () => {
    const dir = tmp();
    try {
      const p = join(dir, 'bad.safetensors');
      writeFileSync(p, build({ 'layers.0.weight': entry('F16', [3], [0, 6]) }, new Uint8Array(4)));
      await rejectsFormat(readSafetensors(p), p, 'layers.0.weight', /extend past the end/);
      await rejectsFormat(openSafetensors(p), p, 'layers.0.weight');
      writeFileSync(p, new Uint8Array(3));
      await rejectsFormat(readSafetensors(p), p, 'header size');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('safetensors round trips and files', () => {
  test('F32 round trip is exact and keeps insertion order (integer-like names included)', () => {
    const rng = new Rng(1);
    const d = randomDict(rng, ['layers.1.weight', '0', 'layers.0.bias', '10', 'b']);
    d.set('empty', { shape: [0, 3], data: new Float32Array(0) });
    d.set('scalar', { shape: [], data: Float32Array.from([Math.fround(Math.PI)]) });
    const { tensors, metadata } = parseSafetensors(serializeSafetensors(d, { metadata: { epoch: '3', 'ünï': 'ødd' } }));
    assert.deepEqual(metadata, { epoch: '3', 'ünï': 'ødd' });
    assert.deepEqual([...tensors.keys()], [...d.keys()]);
    for (const [name, rec] of d) {
      assert.deepEqual(tensors.get(name)!.shape, rec.shape);
      assert.deepEqual(tensors.get(name)!.data, rec.data);
    }
  });

  test('F16 and BF16 round trips are within their precision', () => {
    const rng = new Rng(2);
    const d = randomDict(rng, ['a', 'b', 'c', 'd'], 3);
    for (const [dtype, rel] of [['F16', 2 ** -11], ['BF16', 2 ** -8]] as const) {
      const bytes = serializeSafetensors(d, { dtype });
      const back = parseSafetensors(bytes).tensors;
      for (const [name, rec] of d) {
        const got = back.get(name)!;
        assert.deepEqual(got.shape, rec.shape);
        for (let i = 0; i < rec.data.length; i++) {
          const x = rec.data[i];
          assert.ok(Math.abs(got.data[i] - x) <= Math.abs(x) * rel + 2 ** -25, `${dtype} ${name}[${i}]: ${x} → ${got.data[i]}`);
        }
      }
    }
  });

  test('writeSafetensors / readSafetensors through a file, and overwriting an existing file', async () => {
    const dir = tmp();
    try {
      const p = join(dir, 'sub', 'model.safetensors');
      await ensureDir(join(dir, 'sub'));
      const d = randomDict(new Rng(3), ['fc1.weight', 'fc1.bias', 'fc2.weight']);
      await writeSafetensors(p, new Map([['old', { shape: [1], data: Float32Array.from([1]) }]]));
      await writeSafetensors(p, d, { metadata: { format: 'pt' } });
      const r = await readSafetensors(p);
      assert.deepEqual(r.metadata, { format: 'pt' });
      assert.deepEqual([...r.tensors.keys()], [...d.keys()]);
      for (const [name, rec] of d) assert.deepEqual(r.tensors.get(name)!.data, rec.data);
      assert.deepEqual(readdirSync(join(dir, 'sub')), ['model.safetensors']);
      assert.deepEqual(new Uint8Array(readFileSync(p)), serializeSafetensors(d, { metadata: { format: 'pt' } }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('lazy reader: info without reading, single tensors read from the file handle', async () => {
    const dir = tmp();
    try {
      const p = join(dir, 'm.safetensors');
      const d: StateDict = new Map([
        ['first', { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
        ['big', { shape: [1000, 100], data: new Float32Array(100000).fill(0.5) }],
        ['last', { shape: [4], data: Float32Array.from([-1, -2, -3, -4]) }],
      ]);
      await writeSafetensors(p, d, { dtype: 'F16', metadata: { k: 'v' } });
      const reader = await openSafetensors(p);
      try {
        assert.deepEqual(reader.names, ['first', 'big', 'last']);
        assert.deepEqual(reader.metadata, { k: 'v' });
        assert.ok(reader.has('big') && !reader.has('nope'));
        const info = reader.info('big');
        assert.equal(info.dtype, 'F16');
        assert.deepEqual(info.shape, [1000, 100]);
        assert.equal(info.byteLength, 200000);
        assert.equal(info.numel, 100000);
        assert.throws(() => reader.info('nope'), RangeError);
        assert.deepEqual([...(await reader.read('last')).data], [-1, -2, -3, -4]);
        // Cut the file after the first tensor: it stays readable, later tensors fail cleanly.
        truncateSync(p, reader.info('first').fileOffset + reader.info('first').byteLength);
        const first = await reader.read('first');
        assert.deepEqual(first.shape, [2, 3]);
        assert.deepEqual([...first.data], [1, 2, 3, 4, 5, 6]);
        await rejectsFormat(reader.read('big'), p, 'big', /end of file/);
      } finally {
        await reader.close();
      }
      await assert.rejects(reader.read('first'), /closed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('streaming writer writes tensors as produced, byte-identical to serializeSafetensors', async () => {
    const dir = tmp();
    try {
      const p = join(dir, 's.safetensors');
      const d = randomDict(new Rng(4), ['a', 'b', 'c']);
      d.set('large', { shape: [1500, 1000], data: new Rng(5).fillNormal(new Float32Array(1_500_000)) as Float32Array });
      const order: string[] = [];
      await writeSafetensorsStreaming(
        p,
        [...d].map(([name, r]) => ({ name, shape: r.shape })),
        async (name) => {
          order.push(name);
          return d.get(name)!.data;
        },
        { dtype: 'F16', metadata: { step: '1' } },
      );
      assert.deepEqual(order, ['a', 'b', 'c', 'large']);
      assert.deepEqual(new Uint8Array(readFileSync(p)), serializeSafetensors(d, { dtype: 'F16', metadata: { step: '1' } }));
      await assert.rejects(
        writeSafetensorsStreaming(p, [{ name: 'a', shape: [3] }], () => new Float32Array(2)),
        RangeError,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('atomic writes', () => {
  test('a NaN midway leaves no destination and no temp file', async () => {
    const dir = tmp();
    try {
      const p = join(dir, 'out.safetensors');
      const d = randomDict(new Rng(6), ['a', 'b']);
      const bad = new Float32Array(2_500_000);
      bad[2_400_000] = NaN; // in a later chunk, after earlier bytes were already written
      d.set('c', { shape: [2_500_000], data: bad });
      d.set('d', { shape: [1], data: Float32Array.from([1]) });
      await rejectsFormat(writeSafetensors(p, d), p, 'c', /NaN at index 2400000/);
      assert.deepEqual(readdirSync(dir), []);
      assert.throws(() => validateFinite(d, 'x'), (e: unknown) => e instanceof FormatError && e.field === 'c' && /2400000/.test(e.message));
      // The same dict is writable when non-finite values are explicitly allowed.
      await writeSafetensors(p, d, { allowNonFinite: true });
      assert.ok(Number.isNaN((await readSafetensors(p)).tensors.get('c')!.data[2_400_000]));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a throwing producer leaves an existing destination untouched and no temp file', async () => {
    const dir = tmp();
    try {
      const p = join(dir, 'out.safetensors');
      writeFileSync(p, 'old content');
      const entries = [{ name: 'a', shape: [300, 1000] }, { name: 'b', shape: [10] }];
      await assert.rejects(
        writeSafetensorsStreaming(p, entries, (name) => {
          if (name === 'b') throw new Error('producer failed');
          return new Float32Array(300_000);
        }),
        /producer failed/,
      );
      assert.equal(readFileSync(p, 'utf8'), 'old content');
      assert.deepEqual(readdirSync(dir), ['out.safetensors']);
      const p2 = join(dir, 'new.safetensors');
      await assert.rejects(writeSafetensorsStreaming(p2, entries, async () => { throw new Error('nope'); }), /nope/);
      assert.ok(!existsSync(p2));
      assert.deepEqual(readdirSync(dir), ['out.safetensors']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('F16 overflow is refused like a non-finite value', async () => {
    const dir = tmp();
    try {
      const p = join(dir, 'o.safetensors');
      const d: StateDict = new Map([['w', { shape: [2], data: Float32Array.from([1, 70000]) }]]);
      await rejectsFormat(writeSafetensors(p, d, { dtype: 'F16' }), p, 'w', /overflows F16/);
      assert.deepEqual(readdirSync(dir), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('writeFileAtomic and withAtomicFile', async () => {
    const dir = tmp();
    try {
      const p = join(dir, 'f.txt');
      await writeFileAtomic(p, 'hello');
      await writeFileAtomic(p, new Uint8Array([104, 105]));
      assert.equal(readFileSync(p, 'utf8'), 'hi');
      const n = await withAtomicFile(p, async (out) => {
        for (let i = 0; i < 1000; i++) await out.write(`${i},`);
        await out.write(new Uint8Array(1 << 20)); // a large chunk after buffered small ones
        return out.bytesWritten;
      });
      assert.equal(readFileSync(p).length, n);
      assert.ok(readFileSync(p, 'utf8').startsWith('0,1,2,'));
      await assert.rejects(
        withAtomicFile(p, async (out) => {
          await out.write(new Uint8Array(3 << 20));
          throw new Error('midway');
        }),
        /midway/,
      );
      assert.equal(readFileSync(p).length, n);
      assert.deepEqual(readdirSync(dir), ['f.txt']);
      await assert.rejects(writeFileAtomic(join(dir, 'missing', 'x'), 'y'), /ENOENT/);
      // Rename failure (the destination is a non-empty directory): the temp file is removed.
      ensureDirSync(join(dir, 'd', 'e'));
      await assert.rejects(writeFileAtomic(join(dir, 'd'), 'data'));
      assert.throws(() => writeFileAtomicSync(join(dir, 'd'), 'data'));
      assert.deepEqual(readdirSync(dir).sort(), ['d', 'f.txt']);
      writeFileAtomicSync(p, 'sync');
      assert.equal(readFileSync(p, 'utf8'), 'sync');
      assert.deepEqual(readdirSync(dir).sort(), ['d', 'f.txt']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
