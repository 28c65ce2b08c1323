import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { endpoint, recipeMismatch, runLmc, taskSetup } from '../src/experiments/lmc.js';
import { loadCheckpoint, saveCheckpoint } from '../src/io/checkpoint.js';
import { graphTensors } from '../src/models/graph.js';
import { mlp, REFERENCE_DROPOUT_B } from '../src/models/index.js';
import { widthTau } from '../src/methods/sinkhorn-rebasin.js';

const tmp = (name: string) => mkdtempSync(join(tmpdir(), `rebasin-${name}-`));

test('MNIST and Fashion-MNIST MLP tasks: A without dropout, B with the reference dropout 0.25, same tensors', () => {
  assert.equal(REFERENCE_DROPOUT_B, 0.25);
  for (const task of ['mnist-mlp', 'fashion-mlp'] as const) {
    const s = taskSetup(task, { epochs: 1, testLimit: 10 });
    assert.equal((s.model.config as { dropout?: number }).dropout, 0, task);
    assert.equal((s.modelB.config as { dropout?: number }).dropout, 0.25, task);
    assert.deepEqual(graphTensors(s.modelB.graph()), graphTensors(s.model.graph()), task);
  }
  const poly = taskSetup('poly1');
  assert.equal(poly.modelB, poly.model);
});

test('recipeMismatch names the first differing setting with both values', () => {
  const recipe = { model: JSON.stringify(mlp({ sizes: [4, 3, 2], dropout: 0.25 }).config), seed: '2', epochs: '50' };
  assert.equal(recipeMismatch({ ...recipe, format: 'rebasin', extra: 'x' }, recipe), undefined);
  assert.equal(recipeMismatch({ ...recipe, model: JSON.stringify(mlp({ sizes: [4, 3, 2] }).config) }, recipe), 'it was trained with model dropout 0, this run needs 0.25');
  assert.equal(recipeMismatch({ ...recipe, epochs: '10' }, recipe), 'it was trained with epochs 10, this run needs 50');
  assert.equal(recipeMismatch({ model: recipe.model, seed: '2' }, recipe), 'it does not record epochs');
});

test('endpoint: a cached checkpoint of another recipe (dropout 0 for a dropout-0.25 B) is retrained, with a note; a matching one is reused', async () => {
  const dir = tmp('endpoint');
  try {
    const setup = { ...taskSetup('poly1', { epochs: 3 }) };
    const sizes = [1, 10, 10, 1];
    const plain = mlp({ sizes, activation: 'tanh' });
    const dropped = mlp({ sizes, activation: 'tanh', dropout: 0.25 });
    const path = join(dir, 'B.safetensors');
    const base = { path, seed: 2, retrain: false, label: 'B', quiet: true };
    const first = await endpoint(setup, { ...base, model: plain });
    assert.ok(first.seconds > 0 && first.note === undefined);
    const second = await endpoint(setup, { ...base, model: dropped });
    assert.ok(second.seconds > 0, 'the dropout-0 checkpoint must not be reused for a dropout-0.25 model');
    assert.match(second.note!, /B: not reusing .*B\.safetensors: it was trained with model dropout 0, this run needs 0\.25; retraining/);
    assert.equal(JSON.parse((await loadCheckpoint(path)).metadata.model).dropout, 0.25);
    const third = await endpoint(setup, { ...base, model: dropped });
    assert.equal(third.seconds, 0);
    assert.equal(third.note, undefined);
    for (const [k, v] of second.state) assert.deepEqual(third.state.get(k)!.data, v.data, k);
    // Another seed or epoch count is another endpoint too.
    assert.match((await endpoint(setup, { ...base, model: dropped, seed: 3 })).note!, /seed 2, this run needs 3/);
    assert.match((await endpoint({ ...setup, epochs: 4 }, { ...base, model: dropped, seed: 3 })).note!, /epochs 3, this run needs 4/);
    // --retrain trains without a note.
    const again = await endpoint({ ...setup, epochs: 4 }, { ...base, model: dropped, seed: 3, retrain: true });
    assert.ok(again.seconds > 0 && again.note === undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('runLmc on mnist-mlp asks for A (seed 1, dropout 0) and B (seed 2, dropout 0.25) with the reference settings: such checkpoints are reused', async () => {
  const out = tmp('lmc-protocol');
  try {
    const sizes = [784, 512, 512, 10];
    const dir = join(out, 'checkpoints', 'mnist-mlp');
    mkdirSync(dir, { recursive: true });
    const settings = { epochs: 1, batchSize: 1000, lr: 0.001, criterion: 'ce' };
    for (const [file, model, seed] of [['seed0-A', mlp({ sizes }), 1], ['seed0-B', mlp({ sizes, dropout: 0.25 }), 2]] as const) {
      await saveCheckpoint(join(dir, `${file}.safetensors`), model, model.init(new Rng(seed)), { seed, ...settings });
    }
    const r = await runLmc({ tasks: ['mnist-mlp'], methods: ['naive'], seeds: 1, outDir: out, epochs: 1, testLimit: 50, points: 2, quiet: true });
    assert.deepEqual(r.notes, []);
    assert.equal(r.trainSeconds, 0);
    assert.equal(r.rows.length, 1);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('runLmc resumes: rows of an earlier run in the folder with the same settings are reused, others recomputed', async () => {
  const out = tmp('lmc-resume');
  try {
    const base = { tasks: ['poly1' as const], seeds: 1, outDir: out, epochs: 2, points: 3, quiet: true };
    const first = await runLmc({ ...base, methods: ['naive', 'wm'] });
    assert.equal(first.reused, 0);
    // Mark the stored wm row, as a run stopped after it would have left it: the mark must come back unchanged.
    const file = join(out, 'lmc.json');
    const stored = JSON.parse(readFileSync(file, 'utf8'));
    stored.rows.find((r: { method: string }) => r.method === 'wm').lossBarrier = 123;
    writeFileSync(file, JSON.stringify(stored));
    const resumed = await runLmc({ ...base, methods: ['naive', 'wm', 'am'] });
    assert.equal(resumed.reused, 2);
    assert.equal(resumed.trainSeconds, 0);
    assert.equal(resumed.rows.find((r) => r.method === 'wm')!.lossBarrier, 123);
    assert.deepEqual(resumed.rows.map((r) => r.method), ['naive', 'wm', 'am']);
    assert.equal(JSON.parse(readFileSync(file, 'utf8')).complete, true);
    // A τ schedule is a setting of its own: nothing is reused, and the table says which τ ran.
    const scheduled = await runLmc({ ...base, methods: ['wm'], tau: widthTau });
    assert.equal(scheduled.reused, 0);
    assert.match(readFileSync(join(out, 'lmc.md'), 'utf8'), /Sinkhorn τ = 3\^\(1 − \(t − 1\)\/50\)/);
    // So is the Sinkhorn matrices' learning rate.
    await runLmc({ ...base, methods: ['sinkhorn-l2'] });
    const reference = await runLmc({ ...base, methods: ['sinkhorn-l2'], sinkhornLr: 0.1 });
    assert.equal(reference.reused, 0);
    assert.match(readFileSync(join(out, 'lmc.md'), 'utf8'), /Sinkhorn lr 0\.1\./);
    // And which step's permutations the Sinkhorn methods keep.
    const kept = await runLmc({ ...base, methods: ['sinkhorn-l2'], sinkhornLr: 0.1, sinkhornKeep: 'last' });
    assert.equal(kept.reused, 0);
    assert.match(readFileSync(join(out, 'lmc.md'), 'utf8'), /Sinkhorn lr 0\.1; Sinkhorn keeps its last step\./);
    // Other settings (here the λ points) or --retrain: every row is computed again.
    const otherPoints = await runLmc({ ...base, points: 4, methods: ['wm'] });
    assert.equal(otherPoints.reused, 0);
    assert.notEqual(otherPoints.rows[0].lossBarrier, 123);
    const retrained = await runLmc({ ...base, methods: ['wm'], retrain: true });
    assert.equal(retrained.reused, 0);
    assert.ok(retrained.trainSeconds > 0);
    // A results file that is not JSON is named, not overwritten.
    writeFileSync(file, '{ not json');
    await assert.rejects(runLmc({ ...base, methods: ['wm'] }), (e: Error) => e.name === 'FormatError' && e.message.includes('lmc.json'));
    assert.equal(readFileSync(file, 'utf8'), '{ not json');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
