/** `rebasin eval`: figures equal the library's evaluate/evaluateEnsemble on the same data; bad input exits 2/3 with one line. */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { loadMnist } from '../src/data/index.js';
import { saveCheckpoint, stateToRecords } from '../src/io/checkpoint.js';
import { serializeNpz } from '../src/io/npy.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { mlp, vggSmall } from '../src/models/index.js';
import type { Params } from '../src/state/params.js';
import { evaluate, evaluateEnsemble, reestimateBatchNorm } from '../src/training/evaluate.js';

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');
const LIMIT = 300;
const model = mlp({ sizes: [784, 16, 10] });
const bnModel = vggSmall({ channels: [2, 2, 2, 2], numClasses: 10 });
const params: Record<string, Params> = {};
let dir = '';

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, 'eval', ...args], { encoding: 'utf8', env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function runJson(...args: string[]) {
  const r = run(...args, '--json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const f = (name: string) => join(dir, name);

function runAsync(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [CLI, 'eval', ...args], { env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

/** A failure: the exit code, one line on stderr containing `pattern`, nothing on stdout. */
async function assertFails(code: number, pattern: RegExp, ...args: string[]) {
  const r = await runAsync(...args);
  assert.equal(r.code, code, `exit ${r.code}: ${r.stderr}`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line expected, got:\n${r.stderr}`);
  assert.match(lines[0], /^rebasin eval/);
  assert.match(lines[0], pattern);
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rebasin-eval-'));
  for (const [name, seed] of [['A', 1], ['B', 2]] as const) {
    const s = model.init(new Rng(seed));
    params[name] = s.params;
    await saveCheckpoint(f(`${name}.safetensors`), model, s);
  }
  await writeSafetensors(f('plainA.safetensors'), stateToRecords(params.A), { dtype: 'F32' });
  await saveCheckpoint(f('bn.safetensors'), bnModel, bnModel.init(new Rng(3)));
  await saveCheckpoint(f('other.safetensors'), mlp({ sizes: [784, 8, 10] }), mlp({ sizes: [784, 8, 10] }).init(new Rng(4)));
  const test = loadMnist('test', { limit: 40, layout: 'flat' });
  const npz = (name: string, x: { shape: number[]; data: Float32Array }, y: number[]) =>
    writeFileSync(f(name), serializeNpz(new Map([['x', x], ['y', { shape: [y.length], data: Float32Array.from(y) }]])));
  npz('fits.npz', { shape: [40, 784], data: test.x.slice() }, Array.from(test.y));
  npz('wide.npz', { shape: [40, 785], data: new Float32Array(40 * 785) }, Array.from(test.y));
  npz('label12.npz', { shape: [40, 784], data: test.x.slice() }, Array.from(test.y, (v, i) => (i === 7 ? 12 : v)));
  npz('negative.npz', { shape: [40, 784], data: test.x.slice() }, Array.from(test.y, (v, i) => (i === 7 ? -1 : v)));
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('eval prints each model\'s loss and accuracy as the library computes them (test split by default)', () => {
  const data = loadMnist('test', { limit: LIMIT, layout: 'flat' });
  const out = runJson(f('A.safetensors'), f('B.safetensors'), '--data', 'mnist', '--data-limit', String(LIMIT));
  assert.deepEqual(out.data, { name: 'mnist', split: 'test', n: LIMIT });
  assert.equal(out.criterion, 'ce');
  assert.equal(out.ensemble, null);
  for (const [i, name] of ['A', 'B'].entries()) {
    const want = evaluate(model, { params: params[name] }, data, { criterion: 'ce' });
    assert.equal(out.models[i].path, f(`${name}.safetensors`));
    assert.equal(out.models[i].model, model.name);
    assert.equal(out.models[i].loss, want.loss);
    assert.equal(out.models[i].accuracy, want.accuracy);
  }
  assert.deepEqual(runJson(f('A.safetensors'), f('B.safetensors'), '--data', 'mnist', '--data-limit', String(LIMIT), '--split', 'test'), out);
});

test('eval --split train evaluates on the training split', () => {
  const train = loadMnist('train', { limit: LIMIT, layout: 'flat' });
  const out = runJson(f('A.safetensors'), '--data', 'mnist', '--data-limit', String(LIMIT), '--split', 'train');
  assert.equal(out.data.split, 'train');
  const want = evaluate(model, { params: params.A }, train, { criterion: 'ce' });
  assert.equal(out.models[0].loss, want.loss);
  const onTest = runJson(f('A.safetensors'), '--data', 'mnist', '--data-limit', String(LIMIT));
  assert.notEqual(onTest.models[0].loss, out.models[0].loss);
});

test('eval --ensemble: the ensemble row is evaluateEnsemble; a model with itself is that model', () => {
  const data = loadMnist('test', { limit: LIMIT, layout: 'flat' });
  const out = runJson(f('A.safetensors'), f('B.safetensors'), '--data', 'mnist', '--data-limit', String(LIMIT), '--ensemble');
  const want = evaluateEnsemble([{ model, params: params.A }, { model, params: params.B }], data, { criterion: 'ce' });
  assert.equal(out.ensemble.loss, want.loss);
  assert.equal(out.ensemble.accuracy, want.accuracy);
  assert.equal(out.ensemble.combine, 'mean-probabilities');
  const self = runJson(f('A.safetensors'), f('A.safetensors'), '--data', 'mnist', '--data-limit', String(LIMIT), '--ensemble');
  assert.ok(Math.abs(self.ensemble.loss - self.models[0].loss) < 1e-5 * self.models[0].loss, `${self.ensemble.loss} vs ${self.models[0].loss}`);
  assert.equal(self.ensemble.accuracy, self.models[0].accuracy);
});

test('eval prints a table with the ensemble row after the models', () => {
  const r = run(f('A.safetensors'), f('B.safetensors'), '--data', 'mnist', '--data-limit', String(LIMIT), '--ensemble', '--quiet');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^mnist test: 300 samples$/);
  const rows = lines.filter((l) => l.startsWith('| ') && !l.startsWith('| model'));
  assert.equal(rows.length, 3);
  assert.match(rows[0], /A\.safetensors/);
  assert.match(rows[1], /B\.safetensors/);
  assert.match(rows[2], /ensemble of 2 .*mean of probabilities/);
  const json = runJson(f('A.safetensors'), f('B.safetensors'), '--data', 'mnist', '--data-limit', String(LIMIT), '--ensemble');
  assert.ok(rows[0].includes(json.models[0].loss.toPrecision(5)));
  assert.ok(rows[2].includes(`${(100 * json.ensemble.accuracy).toFixed(2)}%`));
});

test('eval reads plain weights with --model-config and an .npz that fits', () => {
  const viaConfig = runJson(f('plainA.safetensors'), '--model-config', JSON.stringify(model.config), '--data', 'mnist', '--data-limit', String(LIMIT));
  const viaCheckpoint = runJson(f('A.safetensors'), '--data', 'mnist', '--data-limit', String(LIMIT));
  assert.equal(viaConfig.models[0].loss, viaCheckpoint.models[0].loss);
  const npz = runJson(f('A.safetensors'), '--data', f('fits.npz'));
  const want = evaluate(model, { params: params.A }, loadMnist('test', { limit: 40, layout: 'flat' }), { criterion: 'ce' });
  assert.equal(npz.data.split, null);
  assert.equal(npz.models[0].loss, want.loss);
});

test('eval --bn: keep uses the stored statistics, reestimate re-estimates them on the training split', () => {
  const state = bnModel.init(new Rng(3));
  const limit = 64;
  const test = loadMnist('test', { limit });
  const train = loadMnist('train', { limit });
  const keep = runJson(f('bn.safetensors'), '--data', 'mnist', '--data-limit', String(limit));
  assert.equal(keep.models[0].bn, 'stored');
  assert.equal(keep.models[0].loss, evaluate(bnModel, state, test, { criterion: 'ce' }).loss);
  const re = runJson(f('bn.safetensors'), '--data', 'mnist', '--data-limit', String(limit), '--bn', 'reestimate');
  assert.equal(re.models[0].bn, 'reestimated');
  const buffers = reestimateBatchNorm(bnModel, state.params, train, { batchSize: 1000 });
  assert.equal(re.models[0].loss, evaluate(bnModel, { params: state.params, buffers }, test, { criterion: 'ce' }).loss);
  assert.notEqual(re.models[0].loss, keep.models[0].loss);
});

test('eval: bad input exits 2 (usage) or 3 (input) with one line naming the problem', async () => {
  const lim = ['--data-limit', '50'];
  // The cases run concurrently (each is a separate process).
  await Promise.all([
    assertFails(2, /at least one model/, '--data', 'mnist'),
    assertFails(2, /--data is required/, f('A.safetensors')),
    assertFails(2, /--split must be one of train, test; got "validation"/, f('A.safetensors'), '--data', 'mnist', '--split', 'validation'),
    assertFails(2, /--split applies to mnist and fashion-mnist/, f('A.safetensors'), '--data', f('fits.npz'), '--split', 'test'),
    assertFails(2, /plain weights without a model definition.*--model-config/, f('plainA.safetensors'), '--data', 'mnist', ...lim),
    assertFails(2, /--bn reestimate: none of the models has BatchNorm/, f('A.safetensors'), '--data', 'mnist', '--bn', 'reestimate', ...lim),
    assertFails(3, /--ensemble needs models of one architecture: .*A\.safetensors is mlp-784-16-10 but .*other\.safetensors is mlp-784-8-10/, f('A.safetensors'), f('other.safetensors'), '--data', 'mnist', '--ensemble', ...lim),
    assertFails(3, /wide\.npz: array "x" has samples of shape \[785\] but .*A\.safetensors \(mlp-784-16-10\) takes \[784\]/, f('A.safetensors'), '--data', f('wide.npz')),
    assertFails(3, /label12\.npz: array "y" has label 12 but .*has 10 classes/, f('A.safetensors'), '--data', f('label12.npz')),
    assertFails(3, /negative\.npz: array "y" .*not class labels/, f('A.safetensors'), '--data', f('negative.npz')),
    assertFails(3, /no such file/, f('missing.safetensors'), '--data', 'mnist'),
    assertFails(3, /tensor "layers.0.weight" has shape \[16, 784\] but model mlp-784-32-10 expects \[32, 784\]/, f('plainA.safetensors'), '--model-config', '{"arch":"mlp","sizes":[784,32,10]}', '--data', 'mnist', ...lim),
    // Different architectures are fine without --ensemble (each model evaluated on its own).
    runAsync(f('A.safetensors'), f('other.safetensors'), '--data', 'mnist', ...lim, '--quiet').then((r) => assert.equal(r.code, 0, r.stderr)),
  ]);
});
