/**
 * Robustness of the checkpoint parsers against random and mutated input: every call must either
 * return a well-formed result or throw FormatError, quickly. Anything else (TypeError, RangeError
 * from an absurd allocation, a hang) is a bug. Seeded, so failures reproduce.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Rng } from '../src/core/random.js';
import { FormatError } from '../src/io/errors.js';
import { numel } from '../src/core/tensor.js';
import type { ArrayRecord, StateDict } from '../src/io/records.js';
import { parseSafetensors, serializeSafetensors, openSafetensors } from '../src/io/safetensors.js';
import { parseNpy, serializeNpy, parseNpz, serializeNpz, readNpy, readNpz } from '../src/io/npy.js';

const RANDOM_CASES = 2000;
const MUTATION_CASES = 2000;
/** Per-call bound: generous for slow CI machines, but far below what a hang or a blow-up takes. */
const CALL_LIMIT_MS = 1000;

function checkRecord(r: ArrayRecord, what: string): void {
  assert.ok(r.data instanceof Float32Array, what);
  assert.equal(r.data.length, numel(r.shape), what);
}

function checkDict(d: StateDict, what: string): void {
  for (const [k, r] of d) checkRecord(r, `${what} ${k}`);
}

interface Stats {
  ok: number;
  formatErrors: number;
  maxMs: number;
}

function run(stats: Stats, label: string, fn: () => void): void {
  const t0 = performance.now();
  try {
    fn();
    stats.ok++;
  } catch (e) {
    if (!(e instanceof FormatError)) {
      assert.fail(`${label}: threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} instead of FormatError`);
    }
    assert.ok(e.message.startsWith(`${e.file}: `) && typeof e.field === 'string', `${label}: malformed FormatError ${e.message}`);
    stats.formatErrors++;
  }
  const ms = performance.now() - t0;
  stats.maxMs = Math.max(stats.maxMs, ms);
  assert.ok(ms < CALL_LIMIT_MS, `${label}: took ${ms.toFixed(0)} ms`);
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = rng.int(256);
  return b;
}

function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

const INTERESTING_BYTES = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x0a, ...Buffer.from('{}[]()"\':,-0123456789eELTF\\')];
const INTERESTING_NUMBERS = ['0', '-1', '1', '7', '8', '1e30', '-0', '1.5', '9007199254740993', '4294967296', '18446744073709551615', 'null', '"x"', '[]', '{}'];
const INTERESTING_U32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0xffff, 0x10000, 46, 22, 30];

/** One random structural mutation of `b`. */
function mutateBytes(rng: Rng, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b);
  const pos = () => rng.int(Math.max(1, b.length));
  switch (rng.int(7)) {
    case 0: {
      const flips = 1 + rng.int(8);
      for (let k = 0; k < flips && out.length > 0; k++) out[pos()] ^= 1 << rng.int(8);
      return out;
    }
    case 1:
      return out.subarray(0, pos());
    case 2: {
      const at = pos();
      return concat(out.subarray(0, at), randomBytes(rng, 1 + rng.int(16)), out.subarray(at));
    }
    case 3: {
      const at = pos();
      return concat(out.subarray(0, at), out.subarray(Math.min(out.length, at + 1 + rng.int(32))));
    }
    case 4: {
      for (let k = 0; k < 1 + rng.int(4) && out.length > 0; k++) out[pos()] = INTERESTING_BYTES[rng.int(INTERESTING_BYTES.length)];
      return out;
    }
    case 5: {
      // Duplicate a chunk (repeated records, shifted offsets).
      const a = pos();
      const len = 1 + rng.int(64);
      return concat(out.subarray(0, a), out.subarray(a, a + len), out.subarray(a));
    }
    default: {
      // Overwrite an aligned 32-bit field with a boundary value.
      if (out.length < 4) return out;
      const at = rng.int(out.length - 3);
      new DataView(out.buffer, out.byteOffset).setUint32(at, INTERESTING_U32[rng.int(INTERESTING_U32.length)], true);
      return out;
    }
  }
}

function sampleDict(rng: Rng, n: number): StateDict {
  const d: StateDict = new Map();
  for (let k = 0; k < n; k++) {
    const shape = Array.from({ length: rng.int(4) }, () => rng.int(4));
    const data = new Float32Array(numel(shape));
    for (let i = 0; i < data.length; i++) data[i] = rng.normal() * 4;
    d.set(`layers.${k}.${rng.int(2) ? 'weight' : 'bias'}`, { shape, data });
  }
  return d;
}

// ---------------------------------------------------------------------------------------------

function safetensorsSeeds(rng: Rng): Uint8Array[] {
  const seeds: Uint8Array[] = [];
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    for (let k = 0; k < 3; k++) seeds.push(serializeSafetensors(sampleDict(rng, 1 + rng.int(4)), { dtype, metadata: k ? { format: 'pt' } : undefined }));
  }
  // Other dtypes, by hand.
  const header = JSON.stringify({
    a: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
    b: { dtype: 'F64', shape: [1], data_offsets: [16, 24] },
    c: { dtype: 'BOOL', shape: [3], data_offsets: [24, 27] },
    d: { dtype: 'F8_E4M3', shape: [1], data_offsets: [27, 28] },
    e: { dtype: 'U16', shape: [2], data_offsets: [28, 32] },
  });
  const h = Buffer.from(header);
  const size = new Uint8Array(8);
  new DataView(size.buffer).setBigUint64(0, BigInt(h.length), true);
  seeds.push(concat(size, h, randomBytes(rng, 32)));
  return seeds;
}

/** Edits the JSON header text of a safetensors file (a number, a dtype, a bracket), keeping or breaking the size field. */
function editSafetensorsHeader(rng: Rng, b: Uint8Array): Uint8Array {
  if (b.length < 8) return b;
  const n = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
  if (8 + n > b.length) return b;
  let text = Buffer.from(b.subarray(8, 8 + n)).toString('latin1');
  const nums = [...text.matchAll(/-?\d+/g)];
  switch (rng.int(4)) {
    case 0:
      if (nums.length) {
        const m = nums[rng.int(nums.length)];
        text = text.slice(0, m.index) + INTERESTING_NUMBERS[rng.int(INTERESTING_NUMBERS.length)] + text.slice(m.index! + m[0].length);
      }
      break;
    case 1:
      text = text.replace(/"(F32|F16|BF16|I64|F64|BOOL|U16|F8_E4M3)"/, ['"F64"', '"U8"', '"I32"', '"C64"', '"f32"', '5'][rng.int(6)]);
      break;
    case 2: {
      const i = rng.int(Math.max(1, text.length));
      text = text.slice(0, i) + '{}[],:"'[rng.int(7)] + text.slice(i + 1);
      break;
    }
    default:
      // Swap the offsets of two tensors.
      text = text.replace(/"data_offsets":\[(\d+),(\d+)\]/, (_m, a, c) => `"data_offsets":[${c},${a}]`);
  }
  const nh = Buffer.from(text, 'latin1');
  const size = new Uint8Array(8);
  new DataView(size.buffer).setBigUint64(0, BigInt(rng.int(4) === 0 ? n : nh.length), true);
  return concat(size, nh, b.subarray(8 + n));
}

function npySeeds(rng: Rng): Uint8Array[] {
  const seeds: Uint8Array[] = [];
  for (let k = 0; k < 6; k++) {
    const shape = Array.from({ length: rng.int(4) }, () => rng.int(4));
    const data = new Float32Array(numel(shape));
    for (let i = 0; i < data.length; i++) data[i] = rng.normal();
    seeds.push(serializeNpy({ shape, data }));
  }
  for (const [descr, size] of [['>f8', 8], ['<i8', 8], ['|u1', 1], ['<f2', 2], ['|b1', 1], ['>i2', 2]] as const) {
    const dict = `{'descr': '${descr}', 'fortran_order': ${rng.int(2) ? 'True' : 'False'}, 'shape': (2, 3), }`;
    const text = Buffer.from(dict + ' '.repeat(64 - 10 - dict.length - 1 + 64) + '\n', 'latin1');
    const pre = Uint8Array.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, text.length & 0xff, text.length >> 8]);
    seeds.push(concat(pre, text, randomBytes(rng, 6 * size)));
  }
  return seeds;
}

function editNpyHeader(rng: Rng, b: Uint8Array): Uint8Array {
  if (b.length < 10) return b;
  const hlen = b[8] | (b[9] << 8);
  if (10 + hlen > b.length) return b;
  let text = Buffer.from(b.subarray(10, 10 + hlen)).toString('latin1');
  switch (rng.int(4)) {
    case 0: {
      const nums = [...text.matchAll(/\d+/g)];
      if (nums.length) {
        const m = nums[rng.int(nums.length)];
        text = text.slice(0, m.index) + ['0', '1', '99999999', '4294967297', '-2', '', '3L', '9007199254740993'][rng.int(8)] + text.slice(m.index! + m[0].length);
      }
      break;
    }
    case 1:
      text = text.replace(/'[<>|][a-z]\d'/, ["'<f4'", "'>f8'", "'<c8'", "'|f4'", "'<U3'", "[('a','<f4')]", "'<f3'", "''"][rng.int(8)]);
      break;
    case 2:
      text = text.replace(/True|False/, ['True', 'False', 'None', '1', "'x'"][rng.int(5)]);
      break;
    default: {
      const i = rng.int(Math.max(1, text.length));
      text = text.slice(0, i) + "{}()[],:'\"\\L-"[rng.int(13)] + text.slice(i + 1);
    }
  }
  const nh = Buffer.from(text, 'latin1');
  const len = rng.int(4) === 0 ? hlen : nh.length;
  return concat(b.subarray(0, 8), [len & 0xff, (len >> 8) & 0xff], nh, b.subarray(10 + hlen));
}

function npzSeeds(rng: Rng): Uint8Array[] {
  const seeds: Uint8Array[] = [];
  for (let k = 0; k < 6; k++) seeds.push(serializeNpz(sampleDict(rng, 1 + rng.int(3)), { compress: k % 2 === 1 }));
  return seeds;
}

/** Sets a field of a zip record (found by its "PK" signature) to a boundary value. */
function editZipStructure(rng: Rng, b: Uint8Array): Uint8Array {
  const sigs: number[] = [];
  for (let i = 0; i + 4 <= b.length; i++) if (b[i] === 0x50 && b[i + 1] === 0x4b && b[i + 2] <= 8) sigs.push(i);
  if (sigs.length === 0) return b;
  const out = new Uint8Array(b);
  const dv = new DataView(out.buffer);
  const at = sigs[rng.int(sigs.length)] + 4 + 2 * rng.int(20);
  if (at + 4 > out.length) return out;
  if (rng.int(2)) dv.setUint16(at, [0, 1, 8, 12, 0xffff, 0x800, 46, 30][rng.int(8)], true);
  else dv.setUint32(at, INTERESTING_U32[rng.int(INTERESTING_U32.length)] + (rng.int(3) - 1) * rng.int(3), true);
  return out;
}

interface Target {
  name: string;
  parse: (b: Uint8Array) => void;
  seeds: (rng: Rng) => Uint8Array[];
  /** Random input with a plausible beginning, so parsing gets past the first check. */
  prefixRandom: (rng: Rng) => Uint8Array;
  edit: (rng: Rng, b: Uint8Array) => Uint8Array;
}

const targets: Target[] = [
  {
    name: 'safetensors',
    parse: (b) => {
      const r = parseSafetensors(b, 'fuzz.safetensors');
      checkDict(r.tensors, 'safetensors');
      for (const v of Object.values(r.metadata)) assert.equal(typeof v, 'string');
    },
    seeds: safetensorsSeeds,
    prefixRandom: (rng) => {
      const body = rng.int(2) ? Buffer.from(`{"a":{"dtype":"F32","shape":[${rng.int(5)}],"data_offsets":[0,${4 * rng.int(5)}]}}`) : randomBytes(rng, rng.int(200));
      const size = new Uint8Array(8);
      new DataView(size.buffer).setBigUint64(0, BigInt(rng.int(3) ? body.length : rng.int(1 << 30)), true);
      return concat(size, body, randomBytes(rng, rng.int(40)));
    },
    edit: editSafetensorsHeader,
  },
  {
    name: 'npy',
    parse: (b) => checkRecord(parseNpy(b, 'fuzz.npy'), 'npy'),
    seeds: npySeeds,
    prefixRandom: (rng) => {
      const version = [1, 2, 3, rng.int(256)][rng.int(4)];
      const head = rng.int(2) ? Buffer.from(`{'descr': '<f4', 'fortran_order': False, 'shape': (${rng.int(4)},), }`) : randomBytes(rng, rng.int(100));
      const len = rng.int(3) ? head.length : rng.int(1 << 16);
      const lenBytes = version === 1 ? [len & 0xff, len >> 8] : [len & 0xff, (len >> 8) & 0xff, 0, rng.int(2) ? 0 : 0xff];
      return concat([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0], lenBytes, head, randomBytes(rng, rng.int(40)));
    },
    edit: editNpyHeader,
  },
  {
    name: 'npz',
    parse: (b) => checkDict(parseNpz(b, 'fuzz.npz'), 'npz'),
    seeds: npzSeeds,
    prefixRandom: (rng) => {
      // Random body ending in an end-of-central-directory record with random fields.
      const body = randomBytes(rng, rng.int(200));
      const eocd = new Uint8Array(22);
      const dv = new DataView(eocd.buffer);
      dv.setUint32(0, 0x06054b50, true);
      dv.setUint16(8, rng.int(4), true);
      dv.setUint16(10, rng.int(4), true);
      dv.setUint32(12, rng.int(body.length + 1), true);
      dv.setUint32(16, rng.int(body.length + 1), true);
      return concat(rng.int(2) ? [0x50, 0x4b, 0x03, 0x04] : [], body, eocd);
    },
    edit: editZipStructure,
  },
];

describe('parser fuzzing', () => {
  for (const t of targets) {
    test(`${t.name}: random byte strings`, () => {
      const rng = new Rng(1000 + t.name.length);
      const stats: Stats = { ok: 0, formatErrors: 0, maxMs: 0 };
      for (let i = 0; i < RANDOM_CASES; i++) {
        const b = i % 2 === 0 ? randomBytes(rng, rng.int(i % 10 === 0 ? 2000 : 300)) : t.prefixRandom(rng);
        run(stats, `${t.name} random case ${i}`, () => t.parse(b));
      }
      assert.equal(stats.ok + stats.formatErrors, RANDOM_CASES);
      assert.ok(stats.formatErrors > 0);
    });

    test(`${t.name}: mutations of valid files`, () => {
      const rng = new Rng(2000 + t.name.length);
      const seeds = t.seeds(rng);
      for (const s of seeds) t.parse(s); // the seeds themselves are valid
      const stats: Stats = { ok: 0, formatErrors: 0, maxMs: 0 };
      for (let i = 0; i < MUTATION_CASES; i++) {
        let b = seeds[rng.int(seeds.length)];
        const rounds = 1 + rng.int(3);
        for (let r = 0; r < rounds; r++) b = rng.int(3) === 0 ? t.edit(rng, b) : mutateBytes(rng, b);
        run(stats, `${t.name} mutation case ${i}`, () => t.parse(b));
      }
      assert.equal(stats.ok + stats.formatErrors, MUTATION_CASES);
      // Some mutations (payload bit flips) leave valid files; most must be caught.
      assert.ok(stats.formatErrors > MUTATION_CASES / 4, `only ${stats.formatErrors} rejected`);
    });
  }

  // The file readers share the parsers' logic but read through a file handle: same contract.
  const fileReaders: [string, (rng: Rng) => Uint8Array[], (rng: Rng, b: Uint8Array) => Uint8Array, (p: string) => Promise<unknown>][] = [
    ['safetensors', safetensorsSeeds, editSafetensorsHeader, async (p) => {
      const reader = await openSafetensors(p);
      try {
        checkDict(await reader.readAll(), 'lazy');
      } finally {
        await reader.close();
      }
    }],
    ['npy', npySeeds, editNpyHeader, async (p) => checkRecord(await readNpy(p), 'readNpy')],
    ['npz', npzSeeds, editZipStructure, async (p) => checkDict(await readNpz(p), 'readNpz')],
  ];
  for (const [name, seedsOf, edit, read] of fileReaders) {
    test(`${name}: file reader on mutated files`, async () => {
      const rng = new Rng(77 + name.length);
      const seeds = seedsOf(rng);
      const dir = mkdtempSync(join(tmpdir(), 'rebasin-fuzz-'));
      try {
        for (let i = 0; i < 150; i++) {
          let b = seeds[rng.int(seeds.length)];
          b = rng.int(2) ? edit(rng, b) : mutateBytes(rng, b);
          const p = join(dir, `${i}.bin`);
          writeFileSync(p, b);
          const t0 = performance.now();
          try {
            await read(p);
          } catch (e) {
            if (!(e instanceof FormatError)) assert.fail(`${name} file case ${i}: threw ${String(e)}`);
            assert.equal(e.file, p);
          }
          assert.ok(performance.now() - t0 < CALL_LIMIT_MS);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
