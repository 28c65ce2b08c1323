/** Training loop, evaluation, BatchNorm re-estimation and the `train` CLI command. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { F, noGrad, Rng, Tensor } from '../src/core/index.js';
import { makeBlobs, polynomialTask, splitTrainVal, type Dataset } from '../src/data/index.js';
import { InputError } from '../src/errors.js';
import { loadCheckpoint } from '../src/io/checkpoint.js';
import { mlp, resnet20, vggSmall, type Params } from '../src/models/index.js';
import { evaluate, reestimateBatchNorm } from '../src/training/evaluate.js';
import { FusedMlp, mlpPlan } from '../src/training/fused-mlp.js';
import { trainModel } from '../src/training/train.js';

const mainJs = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');

function sameBits(a: Params, b: Params): boolean {
  if (a.size !== b.size) return false;
  for (const [k, t] of a) {
    const u = b.get(k);
    if (!u || u.size !== t.size) return false;
    const x = new Uint32Array(t.data.buffer, t.data.byteOffset, t.size);
    const y = new Uint32Array(u.data.buffer, u.data.byteOffset, u.size);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  }
  return true;
}

/** Tiny images whose class is the brightest of 3 horizontal bands: learnable by a small CNN. */
function bandImages(n: number, size: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const x = new Float32Array(n * size * size);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 3;
    y[i] = c;
    for (let r = 0; r < size; r++) {
      const band = Math.min(2, Math.floor((3 * r) / size));
      for (let q = 0; q < size; q++) x[i * size * size + r * size + q] = rng.normal(band === c ? 1 : 0, 0.5);
    }
  }
  return { name: 'bands', x, y, n, sampleShape: [1, size, size], numClasses: 3 };
}

const blobs = makeBlobs({ n: 600, dim: 8, classes: 4, seed: 3, spread: 1 });
const { train: blobTrain, val: blobVal } = splitTrainVal(blobs, 100, 1);

test('trainModel: an MLP on blobs reaches high accuracy; history per epoch', () => {
  const model = mlp({ sizes: [8, 32, 32, 4] });
  const epochs: number[] = [];
  const r = trainModel({
    model, data: blobTrain, val: blobVal, epochs: 15, batchSize: 50, lr: 1e-2, seed: 1, criterion: 'ce',
    onEpoch: (s) => epochs.push(s.epoch),
  });
  assert.deepEqual(epochs, Array.from({ length: 15 }, (_, i) => i + 1));
  assert.equal(r.history.length, 15);
  const first = r.history[0];
  const last = r.history[14];
  assert.ok(last.trainLoss < first.trainLoss / 3, `loss ${first.trainLoss} → ${last.trainLoss}`);
  assert.ok(last.valAcc! >= 0.95, `val accuracy ${last.valAcc}`);
  assert.ok(last.trainAcc! >= 0.95 && last.seconds >= 0);
  // Returned weights are plain leaves: math on them must not record a graph.
  for (const p of r.params.values()) assert.equal(p.requiresGrad, false);
  const ev = evaluate(model, r, blobVal, { criterion: 'ce' });
  assert.equal(ev.accuracy, last.valAcc);
  assert.equal(ev.loss, last.valLoss);
});

test('trainModel: same seed ⇒ bit-identical weights, other seed ⇒ different; init = model.init(new Rng(seed))', () => {
  const model = mlp({ sizes: [8, 16, 16, 4], dropout: 0.25 });
  const run = (seed: number, epochs = 3) => trainModel({ model, data: blobTrain, epochs, batchSize: 64, lr: 1e-2, seed, criterion: 'ce' }).params;
  const a = run(7);
  assert.ok(sameBits(a, run(7)));
  assert.ok(!sameBits(a, run(8)));
  assert.ok(sameBits(run(7, 0), model.init(new Rng(7)).params));
  // SGD with momentum, continuing from a state: the state given is copied, not modified.
  const start = model.init(new Rng(1));
  const before = new Map([...start.params].map(([k, t]) => [k, t.clone()]));
  const sgd = trainModel({ model, data: blobTrain, epochs: 2, batchSize: 64, optimizer: 'sgd', lr: 0.05, momentum: 0.9, seed: 2, criterion: 'ce', init: start });
  assert.ok(sameBits(start.params, before));
  assert.ok(!sameBits(sgd.params, before));
  assert.throws(() => trainModel({ model, data: blobTrain, epochs: 1, batchSize: 64, lr: 1e-2, seed: 0, criterion: 'ce', init: { params: new Map() } }),
    (e: Error) => e instanceof InputError && /layers\.0\.weight/.test(e.message));
});

test('fused MLP step: bit-identical to the autodiff path, with and without dropout', () => {
  const cases = [
    { model: mlp({ sizes: [8, 16, 12, 4] }), data: blobTrain, criterion: 'ce' as const, optimizer: 'adamw' as const },
    { model: mlp({ sizes: [8, 10, 4], activation: 'tanh' }), data: blobTrain, criterion: 'ce' as const, optimizer: 'sgd' as const },
    { model: mlp({ sizes: [1, 8, 8, 1] }), data: polynomialTask(1, { n: 50 }), criterion: 'mse' as const, optimizer: 'adamw' as const },
  ];
  for (const c of cases) {
    assert.ok(mlpPlan(c.model));
    // Batch 64 leaves a partial last batch (500 and 50 samples).
    const run = (fused: boolean) => trainModel({ ...c, epochs: 3, batchSize: 64, lr: 1e-2, momentum: 0.5, seed: 4, fused });
    const a = run(true);
    const b = run(false);
    assert.ok(sameBits(a.params, b.params), c.model.name);
    assert.deepEqual(a.history.map((h) => [h.trainLoss, h.trainAcc]), b.history.map((h) => [h.trainLoss, h.trainAcc]));
  }
  assert.equal(mlpPlan(vggSmall({ channels: [2, 2, 2, 2], inputShape: [1, 8, 8] })), null);
  assert.equal(mlpPlan(resnet20({ widthMultiplier: 0.25 })), null);
  const plan = mlpPlan(mlp({ sizes: [5, 4, 3, 2], dropout: 0.5 }))!;
  assert.deepEqual(plan.map((l) => [l.inF, l.outF, l.act, l.dropout]), [[5, 4, 'relu', 0.5], [4, 3, 'relu', 0.5], [3, 2, null, 0]]);
  const tanhDrop = mlp({ sizes: [5, 4, 2], activation: 'tanh', dropout: 0.5 });
  assert.ok(mlpPlan(tanhDrop));
  assert.equal(FusedMlp.plan(tanhDrop, tanhDrop.init(new Rng(0)).params), null); // generic path

  // The inlined generator is the Rng's own xoshiro stream: kept iff nextUint32() ≥ p·2³².
  const r1 = new Rng(11);
  const r2 = new Rng(11);
  const z = new Float32Array(1000).map((_, i) => i - 499.5);
  const d = new Float32Array(1000);
  F.dropoutInto(r1, z, d, 1000, 0.3);
  for (let i = 0; i < 1000; i++) {
    const keep = r2.nextUint32() >= Math.round(0.3 * 2 ** 32);
    assert.equal(d[i], keep ? Math.fround(z[i] * Math.fround(1 / 0.7)) : z[i] * 0);
  }
  assert.equal(r1.nextUint32(), r2.nextUint32());
  const big = new Float32Array(200000);
  F.dropoutInto(new Rng(1), null, big, big.length, 0.25);
  const kept = big.reduce((s, v) => s + (v > 0 ? 1 : 0), 0) / big.length;
  assert.ok(Math.abs(kept - 0.75) < 0.005, `kept ${kept}`);

  // With dropout the two paths draw the same masks from the same stream: the same weights.
  const drop = mlp({ sizes: [8, 32, 32, 4], dropout: 0.25 });
  const runs = [true, false].map((fused) =>
    trainModel({ model: drop, data: blobTrain, val: blobVal, epochs: 10, batchSize: 50, lr: 1e-2, seed: 1, criterion: 'ce', fused }));
  assert.ok(runs[0].history[9].valAcc! >= 0.95, `val acc ${runs[0].history[9].valAcc}`);
  assert.ok(sameBits(runs[0].params, runs[1].params), 'fused and autodiff training with dropout');
});

test('fused MLP step with dropout: loss and gradients equal the autodiff graph with the same masks', () => {
  const model = mlp({ sizes: [6, 8, 7, 3], dropout: 0.4 });
  const { params } = model.init(new Rng(3));
  const fm = new FusedMlp(FusedMlp.plan(model, params)!, params, 5);
  const x = new Rng(4).fillNormal(new Float32Array(30)) as Float32Array;
  const y = Int32Array.from([0, 1, 2, 0, 1]);
  const r = fm.step(x, y, 5, 'ce', new Rng(9));
  // Replaying the generator on ones gives the masks (scale or 0) the step used, layer by layer.
  const replay = new Rng(9);
  const masks = [40, 35].map((n) => {
    const m = new Float32Array(n);
    F.dropoutInto(replay, null, m, n, 0.4);
    return m;
  });
  const P = new Map([...params].map(([k, t]) => [k, t.clone().requireGrad()]));
  const p = (k: string) => P.get(k)!;
  let h = F.linear(new Tensor(x, [5, 6]), p('layers.0.weight'), p('layers.0.bias'));
  h = F.mul(F.relu(h), new Tensor(masks[0], [5, 8]));
  h = F.linear(h, p('layers.2.weight'), p('layers.2.bias'));
  h = F.mul(F.relu(h), new Tensor(masks[1], [5, 7]));
  const loss = F.crossEntropy(F.linear(h, p('layers.4.weight'), p('layers.4.bias')), y);
  loss.backward();
  assert.equal(r.loss, loss.item());
  for (const [k, t] of params) assert.deepEqual(t.grad!.data, P.get(k)!.grad!.data, k);
});

test('trainModel: bad data and options are InputErrors naming the problem', () => {
  const model = mlp({ sizes: [8, 16, 3] });
  const opts = { model, data: blobTrain, epochs: 1, batchSize: 10, lr: 1e-2, seed: 0, criterion: 'ce' as const };
  assert.throws(() => trainModel(opts), (e: Error) => e instanceof InputError && /label 3 but model mlp-8-16-3 has 3 outputs/.test(e.message));
  const m4 = mlp({ sizes: [7, 16, 4] });
  assert.throws(() => trainModel({ ...opts, model: m4 }), /samples of shape \[8\] but model mlp-7-16-4 takes \[7\]/);
  assert.throws(() => trainModel({ ...opts, model: mlp({ sizes: [8, 4] }), criterion: 'mse' }), /MSE needs regression targets/);
  assert.throws(() => trainModel({ ...opts, model: mlp({ sizes: [8, 4] }), batchSize: 0 }), /batchSize must be an integer ≥ 1/);
  assert.throws(() => trainModel({ ...opts, model: mlp({ sizes: [8, 4] }), lr: 1e30 }), /loss became (NaN|Infinity).*smaller learning rate/);
});

test('trainModel: reports every step through onBatch and writes nothing itself', () => {
  const data = polynomialTask(2, { n: 100 });
  const model = mlp({ sizes: [1, 8, 1], activation: 'tanh' });
  const seen: { epoch: number; batch: number; loss: number }[] = [];
  const written: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => { written.push(String(chunk)); return true; }) as typeof process.stderr.write;
  let r;
  try {
    r = trainModel({ model, data, epochs: 3, batchSize: 30, lr: 1e-2, seed: 0, criterion: 'mse', onBatch: (p) => {
      assert.equal(p.epochs, 3);
      assert.equal(p.batchesPerEpoch, 4);
      seen.push({ epoch: p.epoch, batch: p.batch, loss: p.loss });
    } });
  } finally {
    process.stderr.write = write;
  }
  assert.deepEqual(written, []);
  assert.deepEqual(seen.map((s) => `${s.epoch}.${s.batch}`), ['1.1', '1.2', '1.3', '1.4', '2.1', '2.2', '2.3', '2.4', '3.1', '3.2', '3.3', '3.4']);
  // The last step of each epoch reports the epoch's mean loss.
  for (let e = 0; e < 3; e++) assert.ok(Math.abs(seen[4 * e + 3].loss - r.history[e].trainLoss) < 1e-12);
});

test('trainModel: regression with MSE on a polynomial task', () => {
  const data = polynomialTask(2, { n: 100 });
  const model = mlp({ sizes: [1, 16, 16, 1], activation: 'tanh' });
  const r = trainModel({ model, data, epochs: 150, batchSize: 20, lr: 1e-2, seed: 0, criterion: 'mse' });
  assert.equal(r.history[0].trainAcc, undefined);
  const ev = evaluate(model, r, data, { criterion: 'mse' });
  assert.ok(ev.loss < 0.03, `MSE ${ev.loss}`);
  assert.equal(ev.accuracy, undefined);
});

test('trainModel: BatchNorm models train and update their running statistics', () => {
  const data = bandImages(48, 8, 0);
  for (const model of [
    vggSmall({ channels: [4, 4, 8, 8], numClasses: 3, inputShape: [1, 8, 8] }),
    resnet20({ widthMultiplier: 0.25, numClasses: 3, inputShape: [1, 8, 8] }),
  ]) {
    const r = trainModel({ model, data, epochs: 4, batchSize: 16, lr: 1e-2, seed: 0, criterion: 'ce' });
    assert.ok(r.buffers.size > 0);
    for (const [name, t] of r.buffers) {
      const init = name.endsWith('running_mean') ? 0 : 1;
      assert.ok(t.toArray().some((v) => Math.abs(v - init) > 1e-3), `${model.name}: ${name} did not change`);
    }
    assert.ok(r.history[3].trainLoss < r.history[0].trainLoss, `${model.name}: ${r.history.map((h) => h.trainLoss).join(' ')}`);
    const ev = evaluate(model, r, data, { criterion: 'ce', batchSize: 10 });
    assert.ok(Number.isFinite(ev.loss));
    // Eval mode without running statistics is refused unless batch statistics are asked for.
    assert.throws(() => evaluate(model, { params: r.params }, data, { criterion: 'ce' }), /has BatchNorm but no running statistics/);
    const batchMode = evaluate(model, { params: r.params }, data, { criterion: 'ce', bnMode: 'batch', batchSize: 48 });
    assert.notEqual(batchMode.loss, ev.loss);
  }
});

test('evaluate: agrees with a manual float64 computation over uneven batches', () => {
  const model = mlp({ sizes: [8, 12, 4] });
  const { params } = model.init(new Rng(4));
  const logits = noGrad(() => model.forward(params, new Tensor(blobVal.x, [blobVal.n, 8]), { training: false }));
  let nll = 0;
  let correct = 0;
  const y = blobVal.y as Int32Array;
  for (let i = 0; i < blobVal.n; i++) {
    const row = Array.from(logits.data.subarray(i * 4, i * 4 + 4));
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    nll += lse - row[y[i]];
    if (row.indexOf(m) === y[i]) correct++;
  }
  const r = evaluate(model, { params }, blobVal, { criterion: 'ce', batchSize: 7 });
  assert.equal(r.n, blobVal.n);
  assert.ok(Math.abs(r.loss - nll / blobVal.n) < 1e-5, `${r.loss} vs ${nll / blobVal.n}`);
  assert.equal(r.accuracy, correct / blobVal.n);
  // MSE: mean over all samples.
  const poly = polynomialTask(3, { n: 37 });
  const pm = mlp({ sizes: [1, 5, 1] });
  const ps = pm.init(new Rng(0));
  const out = noGrad(() => pm.forward(ps.params, new Tensor(poly.x, [37, 1]), { training: false }));
  let se = 0;
  for (let i = 0; i < 37; i++) se += (out.data[i] - poly.y[i]) ** 2;
  const rm = evaluate(pm, ps, poly, { criterion: 'mse', batchSize: 10 });
  assert.ok(Math.abs(rm.loss - se / 37) < 1e-5 * Math.max(1, se / 37));
});

/** Per-channel mean and unbiased variance of [N, C, H, W] in float64. */
function channelStats(t: Tensor): { mean: number[]; varU: number[] } {
  const [n, c, h, w] = t.shape;
  const s = h * w;
  const mean: number[] = [];
  const varU: number[] = [];
  for (let ch = 0; ch < c; ch++) {
    let sum = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < s; j++) sum += t.data[(i * c + ch) * s + j];
    const mu = sum / (n * s);
    let sq = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < s; j++) sq += (t.data[(i * c + ch) * s + j] - mu) ** 2;
    mean.push(mu);
    varU.push(sq / (n * s - 1));
  }
  return { mean, varU };
}

function assertClose(actual: Tensor, expected: number[], what: string): void {
  expected.forEach((e, i) => assert.ok(Math.abs(actual.data[i] - e) <= 1e-4 * Math.max(1, Math.abs(e)), `${what}[${i}]: ${actual.data[i]} vs ${e}`));
}

test('reestimateBatchNorm: one batch gives its exact mean / unbiased variance; batches average equally', () => {
  const model = vggSmall({ channels: [3, 4, 4, 4], numClasses: 3, inputShape: [1, 8, 8] });
  const { params } = model.init(new Rng(2));
  const data = bandImages(40, 8, 5);
  const p = (k: string) => params.get(k)!;
  // Features before the first two BatchNorms, computed by hand with batch statistics.
  const x = new Tensor(data.x, [40, 1, 8, 8]);
  const c0 = noGrad(() => F.conv2d(x, p('features.0.weight'), p('features.0.bias'), { padding: 1 }));
  const h = noGrad(() => F.maxPool2d(F.relu(F.batchNorm(c0, p('features.1.weight'), p('features.1.bias'), null, { training: true })), 2));
  const c1 = noGrad(() => F.conv2d(h, p('features.4.weight'), p('features.4.bias'), { padding: 1 }));
  const s0 = channelStats(c0);
  const s1 = channelStats(c1);

  const one = reestimateBatchNorm(model, params, data, { batchSize: 40, seed: 3 });
  assert.deepEqual([...one.keys()].slice(0, 4), ['features.1.running_mean', 'features.1.running_var', 'features.5.running_mean', 'features.5.running_var']);
  assertClose(one.get('features.1.running_mean')!, s0.mean, 'bn1 mean');
  assertClose(one.get('features.1.running_var')!, s0.varU, 'bn1 var');
  assertClose(one.get('features.5.running_mean')!, s1.mean, 'bn2 mean');
  assertClose(one.get('features.5.running_var')!, s1.varU, 'bn2 var');

  // Two equal batches: the first layer's mean is the average of the batch means = the overall mean
  // (a momentum-0.1 running average would not be). The variance is the average of batch variances.
  const two = reestimateBatchNorm(model, params, data, { batchSize: 20, seed: 3 });
  assertClose(two.get('features.1.running_mean')!, s0.mean, 'two-batch mean');
  const v2 = two.get('features.1.running_var')!;
  assert.ok(v2.toArray().some((v, i) => Math.abs(v - s0.varU[i]) > 1e-6), 'variance averages per-batch values');
  // `batches` limits the data seen; a model without BatchNorm has no buffers.
  const first = reestimateBatchNorm(model, params, data, { batchSize: 20, batches: 1, seed: 3 });
  assert.ok(first.get('features.1.running_mean')!.toArray().some((v, i) => Math.abs(v - s0.mean[i]) > 1e-6));
  assert.equal(reestimateBatchNorm(mlp({ sizes: [64, 3] }), mlp({ sizes: [64, 3] }).init(new Rng(0)).params, data).size, 0);
  // The re-estimated statistics are usable for evaluation.
  const ev = evaluate(model, { params, buffers: one }, data, { criterion: 'ce' });
  assert.ok(Number.isFinite(ev.loss));
});

test('cli train: blobs → a loadable checkpoint; bad options exit 2; no temp files', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-train-'));
  try {
    const out = join(dir, 'blobs.safetensors');
    const r = spawnSync(process.execPath, [mainJs, 'train', '--dataset', 'blobs', '--epochs', '5', '--batch-size', '50', '--width', '16', '--seed', '3', '-o', out, '--json', '--quiet'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { output: string; model: string; val: { accuracy: number }; nTrain: number };
    assert.equal(res.output, out);
    assert.equal(res.model, 'mlp-8-16-16-4');
    assert.equal(res.nTrain, 1800);
    assert.ok(res.val.accuracy > 0.9);
    assert.deepEqual(readdirSync(dir), ['blobs.safetensors']);
    const ck = await loadCheckpoint(out);
    assert.equal(ck.model.name, 'mlp-8-16-16-4');
    assert.equal(JSON.parse(ck.metadata.training).seed, 3);
    for (const bad of [['--epochs', '0'], ['--model', 'resnet20'], ['--dropout', '1.5'], ['--optimizer', 'rmsprop'], ['--bogus']]) {
      const b = spawnSync(process.execPath, [mainJs, 'train', '--dataset', 'blobs', ...bad, '-o', join(dir, 'x.safetensors')], { encoding: 'utf8' });
      assert.equal(b.status, 2, `${bad.join(' ')}: ${b.stderr}`);
      assert.match(b.stderr, /train/);
    }
    const noOut = spawnSync(process.execPath, [mainJs, 'train', '--dataset', 'blobs'], { encoding: 'utf8' });
    assert.equal(noOut.status, 2);
    assert.match(noOut.stderr, /-o\/--out /);
    // The option is --out, as in every other command; the old spelling gets the parser's error.
    const old = spawnSync(process.execPath, [mainJs, 'train', '--dataset', 'blobs', '--output', join(dir, 'x.safetensors')], { encoding: 'utf8' });
    assert.equal(old.status, 2);
    assert.match(old.stderr, /unknown option --output \(did you mean --out\?\)/);
    assert.deepEqual(readdirSync(dir), ['blobs.safetensors']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
