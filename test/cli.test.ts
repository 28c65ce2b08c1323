import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { noGrad, Tensor } from '../src/core/tensor.js';
import { saveCheckpoint, loadCheckpoint, stateToRecords } from '../src/io/checkpoint.js';
import { serializeNpz } from '../src/io/npy.js';
import { writeSafetensors, readSafetensors } from '../src/io/safetensors.js';
import { parseArgs, suggestOption, UsageError } from '../src/cli/args.js';
import { alignSpec, interpolateSpec, mergeSpec } from '../src/cli/align.js';
import { specInferSpec } from '../src/cli/spec.js';
import { trainSpec } from '../src/cli/train.js';
import { mlp } from '../src/models/index.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import type { Params } from '../src/state/params.js';
import { specToJSON } from '../src/permutation/spec.js';

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');
const model = mlp({ sizes: [6, 8, 8, 3] });
let dir = '';

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function outputsOf(state: Params, x: Tensor): Float32Array {
  return noGrad(() => model.forward(state, x, { training: false })).data as Float32Array;
}

const input = (() => {
  const rng = new Rng(99);
  const t = new Tensor(new Float32Array(20 * 6), [20, 6]);
  rng.fillNormal(t.data);
  return t;
})();

function noTempFiles(d: string): void {
  assert.deepEqual(readdirSync(d).filter((f) => f.startsWith('.tmp')), [], `temp files left in ${d}`);
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rebasin-cli-'));
  for (const [name, seed] of [['A', 1], ['B', 2], ['C', 3]] as const) {
    const { params, buffers } = model.init(new Rng(seed));
    await saveCheckpoint(join(dir, `${name}.safetensors`), model, { params, buffers });
  }
  // P = a planted permutation of A.
  const { params } = model.init(new Rng(1));
  const spec = model.permutationSpec();
  const permuted = applyHard(spec, params, randomPerms(spec, new Rng(5)));
  await saveCheckpoint(join(dir, 'P.safetensors'), model, { params: permuted });
  // Plain safetensors (no rebasin metadata) and the spec file.
  await writeSafetensors(join(dir, 'plainB.safetensors'), stateToRecords(model.init(new Rng(2)).params), { dtype: 'F32' });
  writeFileSync(join(dir, 'spec.json'), specToJSON(spec));
  // A spec that permutes a hidden layer's outputs but not the next layer's inputs: shapes fit, the function does not survive.
  const wrong = JSON.parse(specToJSON(spec));
  wrong.axes['layers.2.weight'][1] = null;
  writeFileSync(join(dir, 'wrong-spec.json'), JSON.stringify(wrong));
  // A tiny classification set as .npz.
  const rng = new Rng(7);
  const x = new Float32Array(64 * 6);
  rng.fillNormal(x);
  const y = Float32Array.from({ length: 64 }, (_, i) => i % 3);
  writeFileSync(join(dir, 'data.npz'), serializeNpz(new Map([['x', { shape: [64, 6], data: x }], ['y', { shape: [64], data: y }]])));
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('align writes an aligned B that computes the same function as B', async () => {
  const out = join(dir, 'out', 'B_aligned.safetensors');
  const r = run('align', join(dir, 'A.safetensors'), join(dir, 'B.safetensors'), '-o', out, '--json');
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.equal(summary.equivalence.kind, 'functional');
  assert.ok(summary.equivalence.passed);
  const b = await loadCheckpoint(join(dir, 'B.safetensors'));
  const aligned = await loadCheckpoint(out);
  const ob = outputsOf(b.params, input);
  const oa = outputsOf(aligned.params, input);
  for (let i = 0; i < ob.length; i++) assert.ok(Math.abs(ob[i] - oa[i]) < 1e-5);
  assert.notDeepEqual(Array.from(aligned.params.get('layers.0.weight')!.data), Array.from(b.params.get('layers.0.weight')!.data));
});

test('align recovers a planted permutation exactly', async () => {
  const out = join(dir, 'P_aligned.safetensors');
  const r = run('align', join(dir, 'A.safetensors'), join(dir, 'P.safetensors'), '-o', out, '--quiet');
  assert.equal(r.code, 0, r.stderr);
  const a = await loadCheckpoint(join(dir, 'A.safetensors'));
  const aligned = await loadCheckpoint(out);
  for (const [name, t] of a.params) assert.deepEqual(Array.from(aligned.params.get(name)!.data), Array.from(t.data), name);
});

test('plain safetensors: structural check with --spec, functional with --model-config', () => {
  const out1 = join(dir, 'plain1.safetensors');
  const r1 = run('align', join(dir, 'A.safetensors'), join(dir, 'plainB.safetensors'), '--spec', join(dir, 'spec.json'), '-o', out1, '--json');
  assert.equal(r1.code, 0, r1.stderr);
  const s1 = JSON.parse(r1.stdout);
  // A is a rebasin checkpoint, so its model definition is known and used for both.
  assert.equal(s1.equivalence.kind, 'functional');
  const out2 = join(dir, 'plain2.safetensors');
  const r2 = run('align', join(dir, 'plainB.safetensors'), join(dir, 'plainB.safetensors'), '--spec', join(dir, 'spec.json'), '-o', out2, '--json');
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(JSON.parse(r2.stdout).equivalence.kind, 'structural');
  const r3 = run('align', join(dir, 'plainB.safetensors'), join(dir, 'plainB.safetensors'), '--model-config', JSON.stringify(model.config), '-o', out2, '--json');
  assert.equal(r3.code, 0, r3.stderr);
  assert.equal(JSON.parse(r3.stdout).equivalence.kind, 'functional');
});

test('a spec that breaks the function fails the equivalence check (exit 4) and writes nothing', () => {
  const out = join(dir, 'never.safetensors');
  const r = run('align', join(dir, 'A.safetensors'), join(dir, 'B.safetensors'), '--spec', join(dir, 'wrong-spec.json'), '-o', out);
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /same function/);
  assert.ok(!existsSync(out));
  noTempFiles(dir);
});

test('bad input: clear errors, exit codes, no partial output', () => {
  const out = join(dir, 'bad.safetensors');
  const cases: [string[], number, RegExp][] = [
    [['align', join(dir, 'A.safetensors'), join(dir, 'missing.safetensors'), '-o', out], 3, /missing\.safetensors: no such file/],
    [['align', join(dir, 'A.safetensors'), '-o', out], 2, /two model files/],
    [['align', join(dir, 'A.safetensors'), join(dir, 'B.safetensors'), '-o', out, '--bogus'], 2, /unknown option --bogus/],
    [['align', join(dir, 'A.safetensors'), join(dir, 'B.safetensors'), '-o', out, '--method', 'sinkhorn-mid'], 2, /needs --data/],
    [['align', join(dir, 'A.safetensors'), join(dir, 'B.safetensors'), '-o', out, '--method', 'magic'], 2, /--method must be one of/],
    [['merge', join(dir, 'A.safetensors'), join(dir, 'B.safetensors'), '--weights', '1', '-o', out], 2, /--weights needs 2/],
    // Every command spells its output --out (-o); the old --output gets a pointer to it.
    [['spec', 'infer', join(dir, 'm.onnx'), '--output', out], 2, /unknown option --output \(did you mean --out\?\)/],
    [['align', join(dir, 'A.safetensors'), join(dir, 'B.safetensors'), `--output=${out}`], 2, /unknown option --output \(did you mean --out\?\)/],
  ];
  for (const [args, code, msg] of cases) {
    const r = run(...args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
  }
  // Truncated checkpoint.
  const bytes = readFileSync(join(dir, 'B.safetensors'));
  writeFileSync(join(dir, 'trunc.safetensors'), bytes.subarray(0, bytes.length - 7));
  let r = run('align', join(dir, 'A.safetensors'), join(dir, 'trunc.safetensors'), '-o', out);
  assert.equal(r.code, 3);
  assert.match(r.stderr, /trunc\.safetensors/);
  // Different architecture: names match, shapes do not.
  r = run('align', join(dir, 'A.safetensors'), join(dir, 'plainB.safetensors'), '--model-config', JSON.stringify(mlp({ sizes: [6, 9, 8, 3] }).config), '-o', out);
  assert.equal(r.code, 3);
  assert.match(r.stderr, /layers\.0\.weight/);
  assert.ok(!existsSync(out));
  noTempFiles(dir);
});

test('NaN weights are rejected naming the tensor', async () => {
  const { tensors, metadata } = await readSafetensors(join(dir, 'B.safetensors'));
  const w = tensors.get('layers.2.weight')!;
  const data = w.data.slice();
  data[4] = NaN;
  tensors.set('layers.2.weight', { shape: w.shape, data });
  await writeSafetensors(join(dir, 'nan.safetensors'), tensors, { dtype: 'F32', metadata, allowNonFinite: true });
  const r = run('align', join(dir, 'A.safetensors'), join(dir, 'nan.safetensors'), '-o', join(dir, 'nan-out.safetensors'));
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /layers\.2\.weight.*non-finite/);
  assert.ok(!existsSync(join(dir, 'nan-out.safetensors')));
});

test('merge aligns to the first model and averages; interpolate writes the path and a curve', async () => {
  const out = join(dir, 'merged.safetensors');
  let r = run('merge', join(dir, 'A.safetensors'), join(dir, 'P.safetensors'), join(dir, 'A.safetensors'), '-o', out, '--json');
  assert.equal(r.code, 0, r.stderr);
  // P is a permutation of A: merging A, aligned P and A gives A back.
  const a = await loadCheckpoint(join(dir, 'A.safetensors'));
  const m = await loadCheckpoint(out);
  for (const [name, t] of a.params) {
    const mt = m.params.get(name)!;
    for (let i = 0; i < t.size; i++) assert.ok(Math.abs(mt.data[i] - t.data[i]) < 1e-6, name);
  }
  const idir = join(dir, 'interp');
  r = run('interpolate', join(dir, 'A.safetensors'), join(dir, 'B.safetensors'), '--alphas', '0,0.5,1', '-o', idir, '--data', join(dir, 'data.npz'), '--points', '5', '--json');
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  assert.equal(res.curve.length, 5);
  assert.ok(typeof res.barrier.lossBarrier === 'number');
  assert.ok(existsSync(join(idir, 'interp-0.500.safetensors')) && existsSync(join(idir, 'curve.svg')));
  // The midpoint file is the average of A and B.
  const b = await loadCheckpoint(join(dir, 'B.safetensors'));
  const mid = await loadCheckpoint(join(idir, 'interp-0.500.safetensors'));
  const w = 'layers.0.weight';
  for (let i = 0; i < 5; i++) assert.ok(Math.abs(mid.params.get(w)!.data[i] - 0.5 * (a.params.get(w)!.data[i] + b.params.get(w)!.data[i])) < 1e-6);
});

test('data-driven alignment from the CLI (sinkhorn-mid with an .npz data set)', () => {
  const out = join(dir, 'mid.safetensors');
  const r = run('align', join(dir, 'A.safetensors'), join(dir, 'B.safetensors'), '--method', 'sinkhorn-mid', '--data', join(dir, 'data.npz'), '--epochs', '3', '--batch-size', '32', '-o', out, '--json');
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.steps, 6);
  assert.ok(s.equivalence.passed);
});

test('align prints one line when the Sinkhorn backward fell back to another solver, and none otherwise', () => {
  const out = join(dir, 'sink.safetensors');
  const args = ['align', join(dir, 'A.safetensors'), join(dir, 'P.safetensors'), '--method', 'sinkhorn-l2', '--steps', '2', '-o', out, '--json'];
  // τ = 1e-4 turns every soft permutation into an exact 0/1 matrix: a singular KKT system in each backward.
  const hard = run(...args, '--tau', '0.0001');
  assert.equal(hard.code, 0, hard.stderr);
  const lines = hard.stderr.split('\n').filter((l) => l.includes('warning:'));
  assert.equal(lines.length, 1, hard.stderr);
  assert.match(lines[0], /^align sinkhorn-l2: warning: in \d+ implicit-backward solves, .*singular \d+ times/);
  const calm = run(...args);
  assert.equal(calm.code, 0, calm.stderr);
  assert.doesNotMatch(calm.stderr, /warning/i);
});

test('option names: one spelling of the output option; near misses are suggested', () => {
  for (const spec of [alignSpec, interpolateSpec, mergeSpec, specInferSpec, trainSpec]) {
    assert.equal(spec.options.out?.alias, 'o', spec.name);
    assert.equal(spec.options.output, undefined, spec.name);
    assert.equal(parseArgs(spec, ['-o', 'x']).options.out, 'x');
    assert.throws(() => parseArgs(spec, ['--output', 'x']), (e: Error) => e instanceof UsageError && /did you mean --out\?/.test(e.message));
  }
  assert.equal(suggestOption('epoch', Object.keys(trainSpec.options)), 'epochs');
  assert.equal(suggestOption('batchsize', Object.keys(trainSpec.options)), 'batch-size');
  assert.equal(suggestOption('bogus', Object.keys(trainSpec.options)), undefined);
  assert.throws(() => parseArgs(trainSpec, ['--bogus']), (e: Error) => e.message === 'train: unknown option --bogus (see --help)');
});

test('doctor: REBASIN_GEMM picks the sgemm, REBASIN_MALLOC=system leaves malloc alone, a bad REBASIN_GEMM is refused by name', (t) => {
  const doctor = (env: Record<string, string>) => spawnSync(process.execPath, [CLI, 'doctor', '--json', '--size', '64'],
    { encoding: 'utf8', env: { ...process.env, REBASIN_QUIET_BACKEND: '1', ...env } });
  const base = JSON.parse(doctor({}).stdout) as { backend: string; sgemm: string | null; allocatorTuned: boolean };
  if (base.backend !== 'native') return t.skip('native addon not loaded');
  const blas = doctor({ REBASIN_GEMM: 'openblas', REBASIN_MALLOC: 'system' });
  assert.equal(blas.status, 0, blas.stderr);
  const r = JSON.parse(blas.stdout) as { sgemm: string; allocatorTuned: boolean; detail: string };
  assert.equal(r.sgemm, 'openblas');
  assert.equal(r.allocatorTuned, false);
  assert.match(r.detail, /sgemm: OpenBLAS/);
  assert.equal(base.allocatorTuned, true);
  const bad = doctor({ REBASIN_GEMM: 'mkl' });
  assert.notEqual(bad.status, 0);
  assert.equal(bad.status, 3);
  assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
  assert.match(bad.stderr, /REBASIN_GEMM must be "auto", "own", "avx512", "avx2" or "openblas", got "mkl"/);
});

test('doctor: REBASIN_CONV picks the conv strategy; direct under OpenBLAS and a bad value are refused by name', (t) => {
  const doctor = (env: Record<string, string>) => spawnSync(process.execPath, [CLI, 'doctor', '--json', '--size', '64'],
    { encoding: 'utf8', env: { ...process.env, REBASIN_QUIET_BACKEND: '1', ...env } });
  const base = JSON.parse(doctor({}).stdout) as { backend: string; sgemm: string | null };
  if (base.backend !== 'native') return t.skip('native addon not loaded');
  if (base.sgemm !== 'openblas') {
    for (const s of ['auto', 'direct', 'im2col']) {
      const r = doctor({ REBASIN_CONV: s });
      assert.equal(r.status, 0, r.stderr);
      assert.match((JSON.parse(r.stdout) as { detail: string }).detail, new RegExp(`; conv: ${s}`));
    }
  }
  const blas = doctor({ REBASIN_GEMM: 'openblas' });
  assert.match((JSON.parse(blas.stdout) as { detail: string }).detail, /; conv: im2col/);
  for (const [env, msg] of [
    [{ REBASIN_GEMM: 'openblas', REBASIN_CONV: 'direct' }, /REBASIN_CONV=direct needs our own sgemm kernels/],
    [{ REBASIN_CONV: 'fft' }, /REBASIN_CONV must be "auto", "direct" or "im2col", got "fft"/],
  ] as const) {
    const bad = doctor(env);
    assert.equal(bad.status, 3, bad.stderr);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, msg);
  }
});

test('doctor: says which backend runs and why (REBASIN_BACKEND=wasm and js)', () => {
  for (const name of ['wasm', 'js']) {
    const r = spawnSync(process.execPath, [CLI, 'doctor', '--json', '--size', '32'], { encoding: 'utf8', env: { ...process.env, REBASIN_BACKEND: name } });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout) as { backend: string; reason: string };
    assert.equal(rep.backend, name);
    assert.equal(rep.reason, `REBASIN_BACKEND=${name}`);
  }
  const text = spawnSync(process.execPath, [CLI, 'doctor', '--size', '32'], { encoding: 'utf8', env: { ...process.env, REBASIN_BACKEND: 'wasm' } });
  assert.match(text.stdout, /^backend +wasm \(WebAssembly SIMD128/m);
  assert.match(text.stdout, /^why +REBASIN_BACKEND=wasm$/m);
});

test('experiment merge: --lr/--keep without first/sinkhorn-l2 among --strategies is a usage error before any work', () => {
  const r = run('experiment', 'merge', '--strategies', 'naive,first/wm', '--keep', 'last', '--out', join(dir || tmpdir(), 'never'));
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr.trim(), 'rebasin experiment merge: --lr and --keep apply to first/sinkhorn-l2, which --strategies leaves out');
  assert.ok(!existsSync(join(dir || tmpdir(), 'never')));
});

test('experiment lmc/recovery/merge: an impossible --tau or --lr is a usage error before any work; "schedule" is the width schedule', async () => {
  for (const bad of ['0', 'soft', '0x1', '1e999']) {
    for (const cmd of [['experiment', 'lmc', '--tasks', 'poly1'], ['experiment', 'recovery', '--models', 'mlp1']]) {
      const r = run(...cmd, '--tau', bad, '--out', join(dir || tmpdir(), 'never'));
      assert.equal(r.code, 2, cmd.join(' '));
      assert.match(r.stderr, new RegExp(`${cmd.slice(0, 2).join(' ')}: --tau must be a number > 0 or one of "schedule", "anneal", got "${bad}"`));
      assert.ok(!existsSync(join(dir || tmpdir(), 'never')));
    }
  }
  for (const bad of ['0', '-1']) {
    for (const cmd of [['experiment', 'lmc', '--tasks', 'poly1'], ['experiment', 'recovery', '--models', 'mlp1'], ['experiment', 'merge']]) {
      const r = run(...cmd, '--lr', bad, '--out', join(dir || tmpdir(), 'never'));
      assert.equal(r.code, 2, `${cmd.join(' ')} --lr ${bad}`);
      assert.equal(r.stderr.trim(), `rebasin ${cmd.slice(0, 2).join(' ')}: --lr must be > 0, got ${bad}`);
      assert.ok(!existsSync(join(dir || tmpdir(), 'never')));
    }
  }
  const { parseTau } = await import('../src/cli/align.js');
  const { annealTau, widthTau } = await import('../src/methods/sinkhorn-rebasin.js');
  assert.equal(parseTau('x', 'schedule'), widthTau);
  assert.equal(parseTau('x', 'anneal'), annealTau);
  assert.throws(() => parseTau('x', 'toString'), /--tau must be/);
  assert.equal(parseTau('x', '0.25'), 0.25);
  assert.equal(parseTau('x', undefined), undefined);
});

test('align/merge --method and the experiments\' --methods take their choices from the method table', async () => {
  const { BUILTIN_METHOD_NAMES, METHOD_NAMES, needsData } = await import('../src/methods/registry.js');
  const { lmcSpec } = await import('../src/cli/experiment-lmc.js');
  const { recoverySpec } = await import('../src/cli/experiment-recovery.js');
  assert.deepEqual(alignSpec.options.method.choices, METHOD_NAMES);
  // A user-cost method (sinkhorn --cost) is align's only.
  assert.deepEqual(METHOD_NAMES.filter((m) => !BUILTIN_METHOD_NAMES.includes(m)), ['sinkhorn']);
  assert.deepEqual(mergeSpec.options.method.choices, BUILTIN_METHOD_NAMES);
  assert.deepEqual(lmcSpec.options.methods.choices, BUILTIN_METHOD_NAMES);
  assert.deepEqual(recoverySpec.options.methods.choices, BUILTIN_METHOD_NAMES.filter((m) => !needsData(m)));
  // LMC runs every method by default, the weight costs represented by L2 (the paper's).
  assert.deepEqual(lmcSpec.options.methods.default, ['naive', 'wm', 'am', 'ste', 'sinkhorn-l2', 'sinkhorn-mid', 'sinkhorn-rnd']);
  for (const m of METHOD_NAMES) assert.equal(parseArgs(alignSpec, ['a', 'b', '--method', m]).options.method, m);
  assert.throws(() => parseArgs(alignSpec, ['a', 'b', '--method', 'sinkhorn-l3']), /--method must be one of naive, wm/);
  assert.match(alignSpec.options.data.help, /am\/ste\/sinkhorn-mid\/sinkhorn-rnd/);
});
