/** `rebasin merge --strategy … --eval-data`: figures equal the library's; bad input exits 2/3 with one line and writes nothing. */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { noGrad } from '../src/core/tensor.js';
import { loadMnist } from '../src/data/index.js';
import { loadCheckpoint, saveCheckpoint } from '../src/io/checkpoint.js';
import { serializeNpz } from '../src/io/npy.js';
import { mergeModels } from '../src/methods/merge.js';
import { mlp, vggSmall } from '../src/models/index.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import { mergeState, splitState, type Params } from '../src/state/params.js';
import { evaluate, evaluateEnsemble, reestimateBatchNorm } from '../src/training/evaluate.js';

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');
const LIMIT = 200;
const model = mlp({ sizes: [784, 16, 10] });
const bnModel = vggSmall({ channels: [2, 2, 2, 2], numClasses: 10 });
const states: Params[] = [];
let dir = '';
const f = (name: string) => join(dir, name);

function run(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [CLI, 'merge', ...args], { env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

async function runJson(...args: string[]) {
  const r = await run(...args, '--json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rebasin-merge-'));
  for (const [i, seed] of [1, 2, 3].entries()) {
    const s = model.init(new Rng(seed));
    states.push(mergeState(s.params, s.buffers));
    await saveCheckpoint(f(`M${i}.safetensors`), model, s);
  }
  // A planted permutation of M0: merging M0 with it gives M0 back.
  const p = noGrad(() => applyHard(model.permutationSpec(), states[0], randomPerms(model.permutationSpec(), new Rng(9))));
  await saveCheckpoint(f('P.safetensors'), model, splitState(p));
  await saveCheckpoint(f('bn0.safetensors'), bnModel, bnModel.init(new Rng(4)));
  await saveCheckpoint(f('bn1.safetensors'), bnModel, bnModel.init(new Rng(5)));
  await saveCheckpoint(f('other.safetensors'), mlp({ sizes: [784, 8, 10] }), mlp({ sizes: [784, 8, 10] }).init(new Rng(6)));
  const test = loadMnist('test', { limit: 40, layout: 'flat' });
  writeFileSync(f('wide.npz'), serializeNpz(new Map([['x', { shape: [40, 785], data: new Float32Array(40 * 785) }], ['y', { shape: [40], data: Float32Array.from(test.y) }]])));
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('merge --strategy mergemany --eval-data: inputs, merged and ensemble figures are the library\'s', async () => {
  const out = f('mm.safetensors');
  const models = ['M0', 'M1', 'M2'].map((m) => f(`${m}.safetensors`));
  const weights = [0.5, 0.25, 0.25];
  const r = await runJson(...models, '--strategy', 'mergemany', '--weights', '2,1,1', '--eval-data', 'mnist', '--data-limit', String(LIMIT), '--seed', '3', '-o', out);
  assert.equal(r.strategy, 'mergemany');
  assert.deepEqual(r.weights, weights);
  assert.equal(r.equivalence.length, 2);
  assert.ok(r.equivalence.every((c: { passed: boolean; kind: string }) => c.passed && c.kind === 'functional'));
  const data = loadMnist('test', { limit: LIMIT, layout: 'flat' });
  assert.deepEqual(r.evaluation.data, { name: 'mnist', split: 'test', n: LIMIT });
  assert.equal(r.evaluation.bn, null);
  states.forEach((s, i) => {
    const want = evaluate(model, splitState(s), data, { criterion: 'ce' });
    assert.equal(r.evaluation.models[i].path, models[i]);
    assert.equal(r.evaluation.models[i].loss, want.loss);
    assert.equal(r.evaluation.models[i].accuracy, want.accuracy);
  });
  const lib = mergeModels('mergemany', { spec: model.permutationSpec(), models: states, weights }, { seed: 3 });
  const merged = evaluate(model, splitState(lib.merged), data, { criterion: 'ce' });
  assert.equal(r.evaluation.merged.loss, merged.loss);
  assert.equal(r.evaluation.merged.accuracy, merged.accuracy);
  const ens = evaluateEnsemble(states.map((s) => ({ model, ...splitState(s) })), data, { criterion: 'ce', weights });
  assert.equal(r.evaluation.ensemble.loss, ens.loss);
  assert.equal(r.evaluation.ensemble.accuracy, ens.accuracy);
  // The written file is the library's merged model.
  const written = await loadCheckpoint(out);
  for (const [name, t] of written.params) assert.deepEqual(Array.from(t.data), Array.from(lib.merged.get(name)!.data), name);
});

test('merge (default strategy first) keeps its output line, and prints the table with --eval-data', async () => {
  const out = f('first.safetensors');
  let r = await run(f('M0.safetensors'), f('P.safetensors'), '-o', out);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `merged 2 models (aligned to ${f('M0.safetensors')} with wm); wrote ${out}\n`);
  // P is a permutation of M0: the merged model is M0.
  const m = await loadCheckpoint(out);
  for (const [name, t] of m.params) for (let i = 0; i < t.size; i++) assert.ok(Math.abs(t.data[i] - states[0].get(name)!.data[i]) < 1e-6, name);
  r = await run(f('M0.safetensors'), f('M1.safetensors'), '-o', out, '--eval-data', 'mnist', '--data-limit', String(LIMIT), '--split', 'train', '--quiet');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^merged 2 models \(aligned to .*M0\.safetensors with wm\)/);
  assert.ok(lines.includes(`mnist train: ${LIMIT} samples`));
  const rows = lines.filter((l) => l.startsWith('| ') && !l.startsWith('| model'));
  assert.equal(rows.length, 4);
  assert.match(rows[2], /^\| merged /);
  assert.match(rows[3], /^\| ensemble of 2 \(mean of probabilities\)/);
  const train = loadMnist('train', { limit: LIMIT, layout: 'flat' });
  assert.ok(rows[0].includes(`${(100 * evaluate(model, splitState(states[0]), train, { criterion: 'ce' }).accuracy!).toFixed(2)}%`));
});

test('merge --eval-data on a BatchNorm model re-estimates the merged model\'s statistics by default (and writes them)', async () => {
  const out = f('bn.safetensors');
  const limit = 64;
  const args = [f('bn0.safetensors'), f('bn1.safetensors'), '--eval-data', 'mnist', '--data-limit', String(limit), '-o', out];
  const re = await runJson(...args);
  assert.equal(re.evaluation.bn, 'reestimate');
  const written = await loadCheckpoint(out);
  const train = loadMnist('train', { limit });
  const test = loadMnist('test', { limit });
  const buffers = reestimateBatchNorm(bnModel, written.params, train, { batchSize: 1000 });
  for (const [name, t] of buffers) assert.deepEqual(Array.from(written.buffers.get(name)!.data), Array.from(t.data), name);
  assert.equal(re.evaluation.merged.loss, evaluate(bnModel, { params: written.params, buffers }, test, { criterion: 'ce' }).loss);
  const keep = await runJson(...args, '--bn', 'keep');
  assert.equal(keep.evaluation.bn, 'keep');
  assert.notEqual(keep.evaluation.merged.loss, re.evaluation.merged.loss);
});

test('merge: bad input exits 2 or 3 with one line naming the problem, and writes nothing', async () => {
  const out = f('never.safetensors');
  const [m0, m1] = [f('M0.safetensors'), f('M1.safetensors')];
  const cases: [number, RegExp, string[]][] = [
    [2, /at least two model files, got 1/, [m0]],
    [3, /M0\.safetensors is mlp-784-16-10 but .*other\.safetensors is mlp-784-8-10/, [m0, f('other.safetensors')]],
    [2, /--weights needs 2 numbers \(one per model\), got 3/, [m0, m1, '--weights', '1,1,1']],
    [2, /--weights: the weights sum to zero/, [m0, m1, '--weights', '0,0']],
    [2, /--weights: the weights overflow/, [m0, m1, '--weights', '1e308,1e308']],
    [2, /--weights: weight 2 is NaN/, [m0, m1, '--weights', '1,x']],
    [2, /--weights: weight 1 is -1/, [m0, m1, '--weights', '-1,2']],
    [2, /--strategy must be one of/, [m0, m1, '--strategy', 'magic']],
    [2, /--method applies to --strategy first/, [m0, m1, '--strategy', 'mergemany', '--method', 'naive']],
    [2, /--keep applies to the Sinkhorn strategies/, [m0, m1, '--strategy', 'mergemany', '--keep', 'best']],
    [2, /--keep best needs --barycenter-cost weights/, [m0, m1, '--strategy', 'sinkhorn', '--keep', 'best']],
    [2, /--keep must be one of/, [m0, m1, '--keep', 'first']],
    [2, /--split applies to --eval-data/, [m0, m1, '--split', 'test']],
    [2, /--bn reestimate: the model has no BatchNorm/, [m0, m1, '--eval-data', 'mnist', '--bn', 'reestimate']],
    [3, /wide\.npz: array "x" has samples of shape \[785\] but .*M0\.safetensors \(mlp-784-16-10\) takes \[784\]/, [m0, m1, '--eval-data', f('wide.npz')]],
    [3, /missing\.safetensors: no such file/, [m0, f('missing.safetensors')]],
  ];
  await Promise.all(cases.map(async ([code, pattern, args]) => {
    const r = await run(...args, '-o', out);
    assert.equal(r.code, code, `${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    assert.equal(r.stdout, '');
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `one line expected, got:\n${r.stderr}`);
    assert.match(lines[0], /^rebasin merge/);
    assert.match(lines[0], pattern);
  }));
  assert.ok(!existsSync(out));
  assert.deepEqual(readdirSync(dir).filter((n) => n.includes('never') || n.includes('.tmp')), []);
});

test('merge --strategy sinkhorn: the barycenter undoes a planted permutation (weights cost); its options are checked first', async () => {
  const out = f('bary.safetensors');
  const j = await runJson(f('M0.safetensors'), f('P.safetensors'), '--strategy', 'sinkhorn', '--barycenter-cost', 'weights', '-o', out);
  assert.equal(j.strategy, 'sinkhorn');
  const merged = await loadCheckpoint(out);
  for (const [name, t] of states[0]) {
    const m = merged.params.get(name) ?? merged.buffers.get(name);
    assert.ok(m, name);
    for (let i = 0; i < t.size; i++) assert.ok(Math.abs(m.data[i] - t.data[i]) <= 1e-6 * (1 + Math.abs(t.data[i])), `${name}[${i}]`);
  }
  const before = readdirSync(dir).length;
  const noData = await run(f('M0.safetensors'), f('M1.safetensors'), '--strategy', 'sinkhorn', '-o', f('never.safetensors'));
  assert.equal(noData.code, 2);
  assert.match(noData.stderr.trim(), /^rebasin merge: --strategy sinkhorn needs --data/);
  const misplaced = await run(f('M0.safetensors'), f('M1.safetensors'), '--barycenter-cost', 'weights', '-o', f('never.safetensors'));
  assert.equal(misplaced.code, 2);
  assert.match(misplaced.stderr, /--barycenter-cost applies to --strategy sinkhorn/);
  assert.equal(readdirSync(dir).length, before);
});

test('align/merge: a --data file that is missing or does not fit the model is one line and exit 3, before any work', async () => {
  const before = readdirSync(dir).length;
  const merged = await run(f('M0.safetensors'), f('M1.safetensors'), '--strategy', 'sinkhorn', '--data', f('wide.npz'), '-o', f('never.safetensors'));
  assert.equal(merged.code, 3, merged.stderr);
  assert.match(merged.stderr.trim(), /^rebasin merge: .*wide\.npz: array "x" has samples of shape \[785\] but the model \(mlp-784-16-10\) takes \[784\]$/);
  const align = (...args: string[]) => new Promise<{ code: number | null; stderr: string }>((done) => {
    const child = spawn(process.execPath, [CLI, 'align', f('M0.safetensors'), f('M1.safetensors'), '--method', 'sinkhorn-mid', ...args, '-o', f('never.safetensors')], { env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (code) => done({ code, stderr }));
  });
  const wide = await align('--data', f('wide.npz'));
  assert.equal(wide.code, 3, wide.stderr);
  assert.equal(wide.stderr.trim().split('\n').length, 1, wide.stderr);
  const missing = await align('--data', f('absent.npz'));
  assert.equal(missing.code, 3, missing.stderr);
  assert.match(missing.stderr.trim(), /^rebasin align: .*absent\.npz: cannot read \(no such file\)$/);
  assert.equal(readdirSync(dir).length, before);
});

test('interpolate --data mnist evaluates the test split by default (--split train on request) and says which', async () => {
  const curve = (...extra: string[]) => new Promise<{ code: number | null; stdout: string; stderr: string }>((done) => {
    const child = spawn(process.execPath, [CLI, 'interpolate', f('M0.safetensors'), f('M1.safetensors'), '--data', 'mnist', '--data-limit', '100', '--points', '3', '--no-files', '-o', f('interp'), ...extra], { env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
  const m0 = splitState(states[0]);
  for (const split of ['test', 'train'] as const) {
    const r = await curve(...(split === 'train' ? ['--split', 'train'] : []), '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(j.data, { name: 'mnist', split, n: 100, bn: null });
    const want = evaluate(model, { params: m0.params }, loadMnist(split, { limit: 100, layout: 'flat' }), { criterion: 'ce' });
    assert.ok(Math.abs(j.curve[0].loss - want.loss) < 1e-6, `${split}: ${j.curve[0].loss} vs ${want.loss}`);
  }
  const text = await curve();
  assert.match(text.stdout, /^curve on mnist test split \(100 samples\)$/m);
  const npz = await curve('--split', 'train', '--data', f('wide.npz'));
  assert.equal(npz.code, 2);
});
