/**
 * Hostile and careless input (issue 12): every case gets exit 2 or 3 with one line on stderr, and
 * leaves the file system as it was (every file in the case's folder hashed before and after, no
 * new file, no temp file). Plus: a signal mid-write removes the temp file, `--json | head` ends
 * quietly, and an internal TypeError still exits 1 with a stack (exit 1 stays honest).
 */
import { strict as assert } from 'node:assert';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { saveCheckpoint } from '../src/io/checkpoint.js';
import { serializeNpz, readNpz } from '../src/io/npy.js';
import { liveTempFiles, withAtomicFile, writeFileAtomic } from '../src/io/atomic.js';
import { checkOutputs, openForRead, readWhole } from '../src/io/files.js';
import { InputError } from '../src/errors.js';
import { FormatError } from '../src/io/errors.js';
import { mlp } from '../src/models/index.js';
import { readDataset } from '../src/cli/model-files.js';
import { specToJSON } from '../src/permutation/spec.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(HERE, '../src/cli/main.js');
const FIX = resolve(HERE, '../../test/fixtures');
const model = mlp({ sizes: [6, 8, 8, 3] });
/** A case that hangs (a FIFO read) is killed after this long and fails; no case needs more than a second or two. */
const HANG_GUARD_MS = 30_000;
const isRoot = process.getuid?.() === 0;
let base = '';

/** Every entry under `dir`: regular files by content hash, links by target, others by kind (never opened). */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out.set(p, `link → ${readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.set(p, 'dir');
        walk(p);
      } else if (st.isFile()) out.set(p, `file ${(st.mode & 0o777).toString(8)} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`);
      else out.set(p, st.isFIFO() ? 'fifo' : 'special');
    }
  };
  walk(dir);
  return out;
}

function runAsync(args: string[], opts: { preload?: string } = {}): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const argv = [...(opts.preload ? ['--import', opts.preload] : []), CLI, ...args];
  return new Promise((res) => {
    execFile(process.execPath, argv, { encoding: 'utf8', timeout: HANG_GUARD_MS, env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: string }) | null;
      res({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
    });
  });
}

function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', [path]);
  assert.equal(r.status, 0, `mkfifo ${path}: ${r.stderr}`);
}

/** A TF.js layers model (one Dense 3→2) whose manifest lists `paths`; the weights are in w.bin. */
function tfjsModel(dir: string, paths: string[]): string {
  mkdirSync(dir, { recursive: true });
  const json = {
    format: 'layers-model',
    modelTopology: { class_name: 'Sequential', config: { name: 'm', layers: [{ class_name: 'Dense', config: { name: 'dense', units: 2, use_bias: true, batch_input_shape: [null, 3] } }] } },
    weightsManifest: [{ paths, weights: [{ name: 'dense/kernel', shape: [3, 2], dtype: 'float32' }, { name: 'dense/bias', shape: [2], dtype: 'float32' }] }],
  };
  writeFileSync(join(dir, 'model.json'), JSON.stringify(json));
  return join(dir, 'model.json');
}

/**
 * A zip whose central directory declares `n` deflated members of `csize` bytes each inflating to
 * `usize` (plausible for deflate's 1032:1 bound); the data is zeros, never inflated by a correct reader.
 */
function forgedNpz(n: number, csize: number, usize: number): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let off = 0;
  for (let i = 0; i < n; i++) {
    const name = Buffer.from(`m${i}.npy`);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(8, 8);
    lh.writeUInt32LE(csize, 18);
    lh.writeUInt32LE(usize, 22);
    lh.writeUInt16LE(name.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(8, 10);
    ch.writeUInt32LE(csize, 20);
    ch.writeUInt32LE(usize, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(off, 42);
    parts.push(lh, name, Buffer.alloc(csize));
    central.push(ch, name);
    off += 30 + name.length + csize;
  }
  const cd = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(n, 8);
  eocd.writeUInt16LE(n, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(off, 16);
  return Buffer.concat([...parts, cd, eocd]);
}

interface Case {
  name: string;
  /** Makes the case's files in `d` (a copy of the base files is already there); returns the CLI arguments. */
  setup: (d: string) => string[];
  code: 2 | 3;
  message: RegExp;
  /** Lines on stderr: 1 except for `spec check`, which lists every problem. */
  lines?: number;
  skip?: boolean;
}

const A = (d: string) => join(d, 'A.safetensors');
const B = (d: string) => join(d, 'B.safetensors');
const SPEC = (d: string) => join(d, 'spec.json');

const CASES: Case[] = [
  // --- reading outside the model's folder
  { name: 'TF.js shard path climbing out with ../', code: 3, message: /climbs out of model\.json's folder/,
    setup: (d) => ['spec', 'check', SPEC(d), tfjsModel(join(d, 'tf'), ['../../../../../../../../etc/hostname'])] },
  { name: 'TF.js shard that is a link to a file outside the folder', code: 3, message: /outside the folder/,
    setup: (d) => { const m = tfjsModel(join(d, 'tf'), ['w.bin']); writeFileSync(join(d, 'secret.bin'), Buffer.alloc(32, 7)); symlinkSync('../secret.bin', join(d, 'tf', 'w.bin')); return ['spec', 'check', SPEC(d), m]; } },
  { name: 'TF.js shard that is a link to /dev/zero', code: 3, message: /outside the folder/,
    setup: (d) => { const m = tfjsModel(join(d, 'tf'), ['w.bin']); symlinkSync('/dev/zero', join(d, 'tf', 'w.bin')); return ['align', m, m, '--spec', SPEC(d), '-o', join(d, 'out.safetensors')]; } },
  { name: 'TF.js shard that is a FIFO', code: 3, message: /a FIFO; only regular files are read/,
    setup: (d) => { const m = tfjsModel(join(d, 'tf'), ['w.bin']); mkfifo(join(d, 'tf', 'w.bin')); return ['spec', 'check', SPEC(d), m]; } },
  // --- special files as inputs
  { name: 'a FIFO as model B', code: 3, message: /fifo\.safetensors: cannot read \(a FIFO/,
    setup: (d) => { mkfifo(join(d, 'fifo.safetensors')); return ['align', A(d), join(d, 'fifo.safetensors'), '-o', join(d, 'out.safetensors')]; } },
  { name: 'a FIFO as --lazy model', code: 3, message: /fifo\.safetensors: cannot read \(a FIFO/,
    setup: (d) => { mkfifo(join(d, 'fifo.safetensors')); return ['align', '--lazy', A(d), join(d, 'fifo.safetensors'), '-o', join(d, 'out.safetensors')]; } },
  { name: 'a FIFO as --spec', code: 3, message: /fifo\.json: cannot read \(a FIFO/,
    setup: (d) => { mkfifo(join(d, 'fifo.json')); return ['align', A(d), B(d), '--spec', join(d, 'fifo.json'), '-o', join(d, 'out.safetensors')]; } },
  { name: 'a FIFO as --model-config', code: 3, message: /fifo\.json: cannot read \(a FIFO/,
    setup: (d) => { mkfifo(join(d, 'fifo.json')); return ['align', A(d), B(d), '--model-config', join(d, 'fifo.json'), '-o', join(d, 'out.safetensors')]; } },
  { name: 'a FIFO as spec check\'s spec', code: 3, message: /fifo\.json: cannot read \(a FIFO/,
    setup: (d) => { mkfifo(join(d, 'fifo.json')); return ['spec', 'check', join(d, 'fifo.json'), A(d)]; } },
  { name: 'a link to /dev/zero named .npz (model)', code: 3, message: /zero\.npz: cannot read \(a device/,
    setup: (d) => { symlinkSync('/dev/zero', join(d, 'zero.npz')); return ['align', A(d), join(d, 'zero.npz'), '--spec', SPEC(d), '-o', join(d, 'out.safetensors')]; } },
  { name: 'a link to /dev/zero named .npy', code: 3, message: /zero\.npy: cannot read \(a device/,
    setup: (d) => { symlinkSync('/dev/zero', join(d, 'zero.npy')); return ['spec', 'check', SPEC(d), join(d, 'zero.npy')]; } },
  { name: 'a link to /dev/zero named .onnx', code: 3, message: /zero\.onnx: cannot read \(a device/,
    setup: (d) => { symlinkSync('/dev/zero', join(d, 'zero.onnx')); return ['spec', 'infer', join(d, 'zero.onnx')]; } },
  { name: 'a link to /dev/zero named model.json', code: 3, message: /model\.json: cannot read \(a device/,
    setup: (d) => { mkdirSync(join(d, 'tf')); symlinkSync('/dev/zero', join(d, 'tf', 'model.json')); return ['spec', 'check', SPEC(d), join(d, 'tf', 'model.json')]; } },
  { name: 'a link to /dev/zero as --data .npz', code: 3, message: /zero\.npz: cannot read \(a device/,
    setup: (d) => { symlinkSync('/dev/zero', join(d, 'zero.npz')); return ['align', A(d), B(d), '--method', 'am', '--data', join(d, 'zero.npz'), '-o', join(d, 'out.safetensors')]; } },
  { name: 'a small .npz declaring more than 8 GiB inflated (--data)', code: 3, message: /declared uncompressed sizes add up to more than the 8589934592-byte limit.*nothing was inflated/,
    setup: (d) => { writeFileSync(join(d, 'bomb.npz'), forgedNpz(8, 1 << 20, 1032 * (1 << 20))); return ['align', A(d), B(d), '--method', 'am', '--data', join(d, 'bomb.npz'), '-o', join(d, 'out.safetensors')]; } },
  // --- overwriting inputs
  { name: 'align -o A (an input)', code: 3, message: /-o .*A\.safetensors: is the same file as the input/,
    setup: (d) => ['align', A(d), B(d), '-o', A(d)] },
  { name: 'align -o a link to B', code: 3, message: /is the same file as the input .*B\.safetensors/,
    setup: (d) => { symlinkSync('B.safetensors', join(d, 'linkB.safetensors')); return ['align', A(d), B(d), '-o', join(d, 'linkB.safetensors')]; } },
  { name: 'align -o a hard link to B', code: 3, message: /is the same file as the input .*B\.safetensors/,
    setup: (d) => { linkSync(B(d), join(d, 'hardB.safetensors')); return ['align', A(d), B(d), '-o', join(d, 'hardB.safetensors')]; } },
  { name: 'align --perms-out B', code: 3, message: /--perms-out .*B\.safetensors: is the same file as the input/,
    setup: (d) => ['align', A(d), B(d), '-o', join(d, 'out.safetensors'), '--perms-out', B(d)] },
  { name: 'align --perms-out the spec', code: 3, message: /--perms-out .*spec\.json: is the same file as the input/,
    setup: (d) => ['align', A(d), B(d), '--spec', SPEC(d), '-o', join(d, 'out.safetensors'), '--perms-out', SPEC(d)] },
  { name: 'align -o and --perms-out the same file', code: 3, message: /--perms-out .*same\.out: is the same file as -o/,
    setup: (d) => ['align', A(d), B(d), '-o', join(d, 'same.out'), '--perms-out', join(d, 'same.out')] },
  { name: 'align --lazy -o A', code: 3, message: /-o .*A\.safetensors: is the same file as the input/,
    setup: (d) => ['align', '--lazy', A(d), B(d), '-o', A(d)] },
  { name: 'merge -o B', code: 3, message: /-o .*B\.safetensors: is the same file as the input/,
    setup: (d) => ['merge', A(d), B(d), '-o', B(d)] },
  { name: 'interpolate into the folder holding an input under an output\'s name', code: 3, message: /interp-0\.000\.safetensors: is the same file as the input/,
    setup: (d) => { mkdirSync(join(d, 'o')); linkSync(A(d), join(d, 'o', 'interp-0.000.safetensors')); return ['interpolate', join(d, 'o', 'interp-0.000.safetensors'), B(d), '-o', join(d, 'o')]; } },
  { name: 'spec infer m.onnx -o m.onnx', code: 3, message: /-o .*m\.onnx: is the same file as the input/,
    setup: (d) => { copyFileSync(join(FIX, 'mlp.onnx'), join(d, 'm.onnx')); return ['spec', 'infer', join(d, 'm.onnx'), '-o', join(d, 'm.onnx')]; } },
  // --- outputs that are not files
  { name: '-o /dev/null', code: 3, message: /-o \/dev\/null: is a device; outputs are only written as regular files/,
    setup: (d) => ['align', A(d), B(d), '-o', '/dev/null'] },
  { name: '-o a link to /dev/null', code: 3, message: /null\.safetensors: is a device/,
    setup: (d) => { symlinkSync('/dev/null', join(d, 'null.safetensors')); return ['align', A(d), B(d), '-o', join(d, 'null.safetensors')]; } },
  { name: '-o a dangling link', code: 3, message: /dangling\.safetensors: is a symbolic link to nothing/,
    setup: (d) => { symlinkSync('nowhere/x', join(d, 'dangling.safetensors')); return ['align', A(d), B(d), '-o', join(d, 'dangling.safetensors')]; } },
  { name: '-o an existing directory', code: 3, message: /-o .*sub: is an existing directory/,
    setup: (d) => { mkdirSync(join(d, 'sub')); return ['merge', A(d), B(d), '-o', join(d, 'sub')]; } },
  { name: '--perms-out under a file (not a folder)', code: 3, message: /--perms-out .*perms\.json: cannot write \(a path component is not a directory\)/,
    setup: (d) => ['align', A(d), B(d), '-o', join(d, 'out.safetensors'), '--perms-out', join(A(d), 'perms.json')] },
  { name: 'spec infer -o in an unwritable folder', code: 3, message: /cannot write \(the folder .*ro is not writable\)/, skip: isRoot,
    setup: (d) => { mkdirSync(join(d, 'ro')); chmodSync(join(d, 'ro'), 0o555); return ['spec', 'infer', join(FIX, 'mlp.onnx'), '-o', join(d, 'ro', 'spec.json')]; } },
  { name: 'train -o an existing directory (refused before training)', code: 3, message: /-o .*sub: is an existing directory/,
    setup: (d) => { mkdirSync(join(d, 'sub')); return ['train', '--dataset', 'blobs', '--epochs', '1', '-o', join(d, 'sub')]; } },
  // --- interrupted or half-failed runs
  { name: 'interpolate with a missing --data writes nothing', code: 3, message: /missing\.npz: cannot read \(no such file\)/,
    setup: (d) => ['interpolate', A(d), B(d), '-o', join(d, 'interp'), '--data', join(d, 'missing.npz')] },
  { name: 'align with a missing --data writes nothing', code: 3, message: /missing\.npz: cannot read \(no such file\)/,
    setup: (d) => ['align', A(d), B(d), '--method', 'am', '--data', join(d, 'missing.npz'), '-o', join(d, 'out.safetensors'), '--perms-out', join(d, 'p.json')] },
  // --- inputs that fit in shape but not in meaning
  { name: 'align with a spec that leaves a tensor out (spec check agrees)', code: 3, message: /the spec does not match .*tensor "layers\.4\.bias": not covered by the spec/,
    setup: (d) => { const s = JSON.parse(readFileSync(SPEC(d), 'utf8')); delete s.axes['layers.4.bias']; writeFileSync(join(d, 'partial.json'), JSON.stringify(s)); return ['align', A(d), B(d), '--spec', join(d, 'partial.json'), '-o', join(d, 'out.safetensors')]; } },
  { name: 'spec check on that spec (one line per problem, by design)', code: 3, message: /partial\.json: 1 problem against .*\n  - tensor "layers\.4\.bias": not covered by the spec/, lines: 2,
    setup: (d) => { const s = JSON.parse(readFileSync(SPEC(d), 'utf8')); delete s.axes['layers.4.bias']; writeFileSync(join(d, 'partial.json'), JSON.stringify(s)); return ['spec', 'check', join(d, 'partial.json'), B(d)]; } },
  { name: 'align A and B with the same shapes but different stored architectures', code: 3, message: /the models must share one architecture/,
    setup: (d) => ['align', A(d), join(d, 'T.safetensors'), '-o', join(d, 'out.safetensors')] },
  { name: 'interpolate A and B with the same shapes but different stored architectures', code: 3, message: /record different model definitions .*"activation":"relu".* vs .*"activation":"tanh"/,
    setup: (d) => ['interpolate', A(d), join(d, 'T.safetensors'), '-o', join(d, 'i')] },
  { name: 'non-finite --data with --method am', code: 3, message: /nan\.npz: array "x" has NaN at index 5; data must be finite/,
    setup: (d) => {
      const x = new Float32Array(32 * 6);
      x[5] = NaN;
      writeFileSync(join(d, 'nan.npz'), serializeNpz(new Map([['x', { shape: [32, 6], data: x }], ['y', { shape: [32], data: Float32Array.from({ length: 32 }, (_, i) => i % 3) }]]), { allowNonFinite: true }));
      return ['align', A(d), B(d), '--method', 'am', '--data', join(d, 'nan.npz'), '-o', join(d, 'out.safetensors')];
    } },
  { name: '--data labels outside the model\'s classes', code: 3, message: /labels\.npz: array "y" has label 7 but the model .* has 3 classes/,
    setup: (d) => {
      writeFileSync(join(d, 'labels.npz'), serializeNpz(new Map([['x', { shape: [4, 6], data: new Float32Array(24) }], ['y', { shape: [4], data: Float32Array.from([0, 1, 7, 2]) }]])));
      return ['align', A(d), B(d), '--method', 'am', '--data', join(d, 'labels.npz'), '-o', join(d, 'out.safetensors')];
    } },
  { name: 'an extreme but finite --lr: divergence is named, not an assignment stack', code: 3, message: /the optimisation diverged at step \d+ .*lower lr/,
    setup: (d) => ['align', A(d), B(d), '--method', 'sinkhorn-l2', '--lr', '1e30', '--steps', '5', '--quiet', '-o', join(d, 'out.safetensors')] },
  { name: 'interpolate --points 0 (refused before reading anything)', code: 2, message: /--points must be ≥ 2/,
    setup: (d) => ['interpolate', A(d), B(d), '--data', join(d, 'data.npz'), '--points', '0', '-o', join(d, 'i')] },
  // --- strict options
  { name: '--steps 0x1', code: 2, message: /--steps expects an integer, got "0x1"/, setup: (d) => ['align', A(d), B(d), '--steps', '0x1', '-o', join(d, 'o.safetensors')] },
  { name: '--tau blank', code: 2, message: /--tau must be a number > 0 or one of "schedule", "anneal", got " "/, setup: (d) => ['align', A(d), B(d), '--tau', ' ', '-o', join(d, 'o.safetensors')] },
  { name: '--lr 1e999', code: 2, message: /--lr expects a finite decimal number, got "1e999"/, setup: (d) => ['align', A(d), B(d), '--lr', '1e999', '-o', join(d, 'o.safetensors')] },
  { name: 'merge --weights with an empty item', code: 2, message: /--weights expects a comma-separated list with no empty items/, setup: (d) => ['merge', A(d), B(d), '--weights', '1,,2', '-o', join(d, 'o.safetensors')] },
  { name: 'merge --weights 0x1,1', code: 2, message: /--weights: weight 1 is NaN/, setup: (d) => ['merge', A(d), B(d), '--weights', '0x1,1', '-o', join(d, 'o.safetensors')] },
  { name: 'interpolate --alphas 0x1', code: 2, message: /--alphas: "0x1" is not a number in \[0, 1\]/, setup: (d) => ['interpolate', A(d), B(d), '--alphas', '0,0x1', '-o', join(d, 'i')] },
];

before(async () => {
  base = mkdtempSync(join(tmpdir(), 'rebasin-hostile-'));
  mkdirSync(join(base, 'fixtures'));
  for (const [name, seed] of [['A', 1], ['B', 2]] as const) {
    const { params, buffers } = model.init(new Rng(seed));
    await saveCheckpoint(join(base, 'fixtures', `${name}.safetensors`), model, { params, buffers });
  }
  writeFileSync(join(base, 'fixtures', 'spec.json'), specToJSON(model.permutationSpec()));
  // Same shapes as A and B, another activation.
  const tanh = mlp({ sizes: [6, 8, 8, 3], activation: 'tanh' });
  await saveCheckpoint(join(base, 'fixtures', 'T.safetensors'), tanh, tanh.init(new Rng(4)));
  const x = new Float32Array(32 * 6);
  new Rng(3).fillNormal(x);
  writeFileSync(join(base, 'fixtures', 'data.npz'), serializeNpz(new Map([['x', { shape: [32, 6], data: x }], ['y', { shape: [32], data: Float32Array.from({ length: 32 }, (_, i) => i % 3) }]])));
});

after(() => {
  // Undo the read-only folder so the tree can be removed.
  for (const d of readdirSync(base)) {
    try {
      chmodSync(join(base, d, 'ro'), 0o755);
    } catch {
      // not this case's folder
    }
  }
  rmSync(base, { recursive: true, force: true });
});

function caseDir(i: number): string {
  const d = join(base, `case${i}`);
  mkdirSync(d);
  for (const f of readdirSync(join(base, 'fixtures'))) copyFileSync(join(base, 'fixtures', f), join(d, f));
  return d;
}

describe('hostile cases: exit code, one line, nothing changed, nothing left', () => {
  // The cases run as child processes, a few at a time (each is one CLI start-up).
  const results = new Map<number, Promise<{ d: string; before: Map<string, string>; r: Awaited<ReturnType<typeof runAsync>> }>>();
  let queue: Promise<unknown> = Promise.resolve();
  const start = (i: number) => {
    if (results.has(i)) return results.get(i)!;
    const p = (async () => {
      const d = caseDir(i);
      const args = CASES[i].setup(d);
      const before = snapshot(d);
      return { d, before, r: await runAsync(args) };
    })();
    results.set(i, p);
    return p;
  };
  before(() => {
    // Start every case up front, three at a time, so the per-case tests just wait for their result.
    const lanes = 3;
    const lanePromises = Array.from({ length: lanes }, async (_, lane) => {
      for (let i = lane; i < CASES.length; i += lanes) if (!CASES[i].skip) await start(i).catch(() => undefined);
    });
    queue = Promise.all(lanePromises);
  });
  after(() => queue);
  CASES.forEach((c, i) => {
    test(c.name, { skip: c.skip ? 'as root every folder is writable' : false }, async () => {
      const { d, before, r } = await start(i);
      assert.equal(r.signal, null, `killed (${r.signal}): the command hung`);
      assert.equal(r.code, c.code, `exit ${r.code}, stderr: ${r.stderr}`);
      assert.match(r.stderr, c.message);
      assert.equal(r.stderr.trim().split('\n').length, c.lines ?? 1, `not ${c.lines ?? 1} line(s): ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at |Error:/, 'a stack trace');
      assert.deepEqual(snapshot(d), before, 'the case changed the file system');
    });
  });
});

describe('interrupted runs and closed pipes', () => {
  test('SIGTERM mid-write: the temp file is removed, no output, the process ends by the signal', async () => {
    const d = caseDir(1000);
    // Injects the signal at the first write of an output and holds that write (a pending timer
    // keeps the process alive as a real write in flight does): the signal arrives while the temp
    // file exists. Without the handler the default action would leave the temp file behind.
    const preload = join(d, 'sigterm-at-write.mjs');
    writeFileSync(preload, [
      "import { promises as fsp } from 'node:fs';",
      "const h = await fsp.open('/dev/null', 'r');",
      'const proto = Object.getPrototypeOf(h);',
      'await h.close();',
      'const write = proto.write;',
      "proto.write = function (...a) { process.kill(process.pid, 'SIGTERM'); return new Promise((res) => setTimeout(res, 20000)).then(() => write.apply(this, a)); };",
    ].join('\n'));
    const before = snapshot(d);
    before.delete(preload);
    const r = await runAsync(['align', A(d), B(d), '-o', join(d, 'out.safetensors'), '--quiet'], { preload });
    assert.equal(r.signal, 'SIGTERM', `exit ${r.code} ${r.signal}: ${r.stderr}`);
    const now = snapshot(d);
    now.delete(preload);
    assert.deepEqual(now, before, 'a temp file or output was left');
  });

  test('--json | head: EPIPE after the outputs are written ends quietly', async () => {
    const d = caseDir(1001);
    const out = join(d, 'out.safetensors');
    const child = spawn(process.execPath, [CLI, 'align', A(d), B(d), '-o', out, '--perms-out', join(d, 'p.json'), '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
    child.stdout.destroy(); // the reader is gone before the first byte
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    const timer = setTimeout(() => child.kill('SIGKILL'), HANG_GUARD_MS);
    const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
    clearTimeout(timer);
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /EPIPE|\n\s+at /);
    assert.ok(statSync(out).size > 0 && statSync(join(d, 'p.json')).size > 0);
    assert.deepEqual(readdirSync(d).filter((f) => f.startsWith('.tmp')), []);
  });

  test('exit 1 stays honest: an internal TypeError is exit 1 with its stack, not exit 3', async () => {
    const d = caseDir(1002);
    const preload = join(d, 'typeerror.mjs');
    writeFileSync(preload, "process.stdout.write = () => { throw new TypeError('injected internal failure'); };\n");
    const r = await runAsync(['align', A(d), B(d), '-o', join(d, 'out.safetensors'), '--json'], { preload });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /TypeError: injected internal failure\n\s+at /);
  });
});

describe('the policy as a library', () => {
  test('openForRead refuses a FIFO without blocking, and a device', async () => {
    const d = caseDir(2000);
    mkfifo(join(d, 'p'));
    await assert.rejects(openForRead(join(d, 'p')), (e: unknown) => e instanceof InputError && /a FIFO/.test((e as Error).message));
    await assert.rejects(readWhole('/dev/zero'), /\/dev\/zero: cannot read \(a device/);
    await assert.rejects(readWhole(A(d), { maxBytes: 10 }), /more than the 10-byte limit/);
    await assert.rejects(readWhole(join(d, 'spec.json'), { within: { dir: join(d, 'sub'), referencedBy: 'x.json' } }), /x\.json: .*spec\.json is outside its folder/);
  });

  test('.npz inflate is bounded by the declared sizes before inflating', async () => {
    const d = caseDir(2001);
    const p = join(d, 'zeros.npz');
    // 4 MB of zeros deflate to a few kB: a real archive, refused under a 1 MB limit, read under 8 MB.
    writeFileSync(p, serializeNpz(new Map([['z', { shape: [1 << 20], data: new Float32Array(1 << 20) }]]), { compress: true }));
    assert.ok(statSync(p).size < 100_000);
    await assert.rejects(readNpz(p, { maxInflatedBytes: 1 << 20 }), (e: unknown) => e instanceof FormatError && e instanceof InputError && /nothing was inflated/.test((e as Error).message));
    assert.equal((await readNpz(p, { maxInflatedBytes: 8 << 20 })).get('z')!.shape[0], 1 << 20);
  });

  test('a --data set of 300 000 labels is read (no Maximum call stack size from spreading it)', async () => {
    const d = caseDir(2003);
    const n = 300_000;
    const p = join(d, 'big.npz');
    writeFileSync(p, serializeNpz(new Map([['x', { shape: [n, 1], data: new Float32Array(n) }], ['y', { shape: [n], data: Float32Array.from({ length: n }, (_, i) => i % 10) }]])));
    const data = await readDataset(p, {});
    assert.equal(data.n, n);
    assert.equal(data.numClasses, 10);
  });

  test('outputs: an existing file keeps its mode, a link to a file is written through, temp files are tracked', async () => {
    const d = caseDir(2002);
    const p = join(d, 'private.json');
    writeFileSync(p, 'old');
    chmodSync(p, 0o600);
    await writeFileAtomic(p, 'new');
    assert.equal(readFileSync(p, 'utf8'), 'new');
    assert.equal(statSync(p).mode & 0o777, 0o600);
    symlinkSync('private.json', join(d, 'link.json'));
    await writeFileAtomic(join(d, 'link.json'), 'through');
    assert.ok(lstatSync(join(d, 'link.json')).isSymbolicLink());
    assert.equal(readFileSync(p, 'utf8'), 'through');
    await withAtomicFile(join(d, 'x'), async () => {
      assert.equal(liveTempFiles().length, 1);
    });
    assert.deepEqual(liveTempFiles(), []);
    await assert.rejects(writeFileAtomic('/dev/null', 'x'), /is not a regular file/);
    await assert.rejects(checkOutputs([{ path: A(d), option: '-o' }], [A(d)]), /same file as the input/);
  });
});
