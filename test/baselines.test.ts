import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { AdamW } from '../src/core/optim/optimizers.js';
import { Rng } from '../src/core/random.js';
import { noGrad, Tensor } from '../src/core/tensor.js';
import { batches, type Dataset } from '../src/data/dataset.js';
import { makeBlobs } from '../src/data/synthetic.js';
import { InputError } from '../src/errors.js';
import { activationMatching } from '../src/methods/activation-matching.js';
import { criterionLoss, stateLoss } from '../src/models/loss.js';
import { naive } from '../src/methods/naive.js';
import { straightThroughEstimator } from '../src/methods/ste.js';
import { weightMatching } from '../src/methods/weight-matching.js';
import { activationPoints, type ActivationPoints } from '../src/models/activations.js';
import { mlp, resnet20, vggSmall, type Model } from '../src/models/index.js';
import { lerpState, splitState, type Params } from '../src/state/params.js';
import { applyHard, invertPermutation, randomPerms } from '../src/permutation/apply.js';

/**
 * Model A (random init), a planted permutation, and B = π*(A). BN running statistics are made
 * non-trivial: with `calibrate` data they are the data's statistics (training-mode passes, so no
 * channel of a deep net drifts to being switched off for every input, which would make dead
 * units interchangeable for activation matching); otherwise mild random values.
 */
function planted(model: Model, seed: number, calibrate?: Dataset) {
  const rng = new Rng(seed);
  const { params, buffers } = model.init(rng);
  if (calibrate) {
    const x = new Tensor(calibrate.x, [calibrate.n, ...calibrate.sampleShape]);
    noGrad(() => { for (let k = 0; k < 40; k++) model.forward(params, x, { training: true, buffers }); });
  } else {
    for (const [name, t] of buffers) for (let i = 0; i < t.size; i++) t.data[i] = name.endsWith('running_var') ? 0.05 + 0.1 * rng.uniform() : 0.05 * rng.normal();
  }
  const a: Params = new Map([...params, ...buffers]);
  const spec = model.permutationSpec();
  const perms = randomPerms(spec, rng);
  const b = noGrad(() => applyHard(spec, a, perms));
  return { spec, a, b, perms };
}

/** n samples of N(0, 1) inputs shaped like the model's input (labels unused by AM). */
function randomData(model: Model, n: number, seed: number): Dataset {
  const d = model.inputShape.reduce((p, s) => p * s, 1);
  const x = new Rng(seed).fillNormal(new Float32Array(n * d)) as Float32Array;
  return { name: 'gauss', x, sampleShape: [...model.inputShape], y: new Int32Array(n), n, numClasses: 1 };
}

function assertSameTensors(x: Params, y: Params) {
  assert.deepEqual([...y.keys()].sort(), [...x.keys()].sort());
  for (const [name, t] of x) assert.deepEqual(Array.from(y.get(name)!.data), Array.from(t.data), `tensor ${name} differs`);
}

test('activation points are read off the graph: post-ReLU per layer, the whole residual stream for shared permutations', () => {
  const m = mlp({ sizes: [4, 6, 6, 2], dropout: 0.1 });
  const nodes = (ap: ActivationPoints) => Object.fromEntries(Object.entries(ap.flat).map(([p, xs]) => [p, xs.map((x) => x.node)]));
  assert.deepEqual(activationPoints(m.graph(), m.permutationSpec()), { flat: { 'P_layers.0': [{ node: 'layers.1', axis: 0 }], 'P_layers.2': [{ node: 'layers.3', axis: 0 }] }, blocks: [] });
  const r = resnet20({ widthMultiplier: 0.25, inputShape: [3, 8, 8] });
  const pts = nodes(activationPoints(r.graph(), r.permutationSpec()));
  assert.deepEqual(pts.P_conv1, ['relu', 'layer1.0.relu2', 'layer1.1.relu2', 'layer1.2.relu2']);
  assert.deepEqual(pts['P_layer1.0.conv1'], ['layer1.0.relu1']);
  assert.deepEqual(pts['P_layer2.0.conv2'], ['layer2.0.relu2', 'layer2.1.relu2', 'layer2.2.relu2']);
  for (const [p, ids] of Object.entries(pts)) assert.ok(ids.length >= 1, `${p} has no activation point`);
});

test('activation matching recovers a planted permutation exactly (MLP, small VGG-BN, ResNet-20), both statistics', () => {
  const models = [
    mlp({ sizes: [20, 24, 24, 24, 5] }),
    vggSmall({ channels: [6, 8, 10, 12], inputShape: [3, 8, 8], numClasses: 3 }),
    resnet20({ widthMultiplier: 0.25, inputShape: [3, 8, 8], numClasses: 3 }),
  ];
  for (const [k, model] of models.entries()) {
    const data = randomData(model, 96, k);
    const { spec, a, b, perms } = planted(model, 10 + k, data);
    for (const statistic of ['cross', 'correlation'] as const) {
      const r = activationMatching({ spec, a, b }, { model, data, batchSize: 40, statistic });
      for (const [id, p] of Object.entries(perms)) {
        assert.deepEqual(Array.from(r.perms[id]), Array.from(invertPermutation(p)), `${model.name} ${statistic}: permutation ${id} not recovered`);
      }
      assertSameTensors(a, r.aligned); // BN running statistics included
      assert.equal(r.steps, 3); // 96 samples in batches of 40
    }
  }
});

test('activation matching honours maxSamples and works on MNIST-shaped samples fed to an MLP', () => {
  const model = mlp({ sizes: [16, 12, 3] });
  const { spec, a, b, perms } = planted(model, 4);
  const flat = randomData(model, 50, 1);
  const data: Dataset = { ...flat, sampleShape: [1, 4, 4] };
  let seen = 0;
  const r = activationMatching({ spec, a, b }, { model, data, batchSize: 16, maxSamples: 20, onProgress: (s) => { seen = s; } });
  assert.equal(seen, 20);
  assert.equal(r.steps, 2);
  assert.deepEqual(Array.from(r.perms['P_layers.0']), Array.from(invertPermutation(perms['P_layers.0'])));
});

/** Trains a model on the data from its own seed with AdamW; returns detached parameters. */
function train(model: Model, data: Dataset, seed: number, steps: number): Params {
  const { params } = model.init(new Rng(seed));
  for (const t of params.values()) t.requireGrad();
  const opt = new AdamW([...params.values()], { lr: 1e-2 });
  const rng = new Rng(seed + 1000);
  let s = 0;
  while (s < steps) {
    for (const batch of batches(data, 64, { shuffle: true, rng })) {
      const x = new Tensor(batch.x.slice(), [batch.size, ...data.sampleShape]);
      const loss = criterionLoss('ce', model.forward(params, x, { training: true }), (batch.y as Int32Array).slice());
      opt.zeroGrad();
      loss.backward();
      opt.step();
      if (++s >= steps) break;
    }
  }
  return new Map([...params].map(([k, v]) => [k, v.detach()]));
}

test('STE lowers the midpoint loss of two independently trained MLPs; its aligned model is a hard permutation of B', () => {
  const model = mlp({ sizes: [8, 24, 24, 4] });
  const data = makeBlobs({ n: 512, dim: 8, classes: 4, spread: 1.2, seed: 3 });
  const a = train(model, data, 1, 300);
  const b = train(model, data, 2, 300);
  const spec = model.permutationSpec();
  const full = { x: new Tensor(data.x.slice(), [data.n, 8]), y: data.y as Int32Array };
  const mid = (aligned: Params) => noGrad(() => stateLoss(model, lerpState(a, aligned, 0.5), full, 'ce').item());
  const endLoss = Math.max(mid(lerpState(a, a, 0)), noGrad(() => stateLoss(model, b, full, 'ce').item()));
  let calls = 0;
  const r = straightThroughEstimator({ spec, a, b }, { model, data, epochs: 4, batchSize: 128, seed: 5, onStep: () => { calls++; } });
  assert.equal(r.method, 'ste');
  assert.equal(r.steps, 16);
  assert.equal(calls, 16);
  const naiveMid = mid(naive({ spec, a, b }).aligned);
  const steMid = mid(r.aligned);
  const wmMid = mid(weightMatching({ spec, a, b }).aligned);
  assert.ok(naiveMid > endLoss + 0.05, `setup: the naive midpoint (${naiveMid}) should be worse than the end points (${endLoss})`);
  assert.ok(steMid < naiveMid - 0.05, `STE midpoint loss ${steMid} (WM ${wmMid}) not below naive ${naiveMid}`);
  // aligned is exactly π(B) for the returned permutations, hence B's function.
  assertSameTensors(applyHard(spec, b, r.perms), r.aligned);
  const outB = model.forward(b, full.x, { training: false });
  const outAligned = model.forward(r.aligned, full.x, { training: false });
  let maxDiff = 0;
  for (let i = 0; i < outB.size; i++) maxDiff = Math.max(maxDiff, Math.abs(outB.data[i] - outAligned.data[i]));
  assert.ok(maxDiff < 1e-5, `π(B) computes a different function (max |Δ| = ${maxDiff})`);
  // Every step is logged with its mini-batch loss, which is the hard-permutation loss.
  assert.ok(r.log.every((e) => Number.isFinite(e.cost) && e.hardCost === e.cost));
});

test('STE trains through BatchNorm (batch statistics at the midpoint) and can stop early', () => {
  const model = vggSmall({ channels: [4, 4, 6, 6], inputShape: [3, 8, 8], numClasses: 3 });
  const { spec, a } = planted(model, 21);
  const { b } = planted(model, 22);
  const data = randomData(model, 48, 3);
  (data as { y: Int32Array }).y = Int32Array.from({ length: 48 }, (_, i) => i % 3);
  const r = straightThroughEstimator({ spec, a, b }, { model, data, epochs: 3, batchSize: 16, onStep: (e) => e.step >= 2 });
  assert.equal(r.steps, 2);
  assertSameTensors(applyHard(spec, b, r.perms), r.aligned);
  assert.ok(splitState(r.aligned).buffers.size > 0, 'BN running statistics are permuted too');
});

test('naive returns identity permutations and B unchanged', () => {
  const model = mlp({ sizes: [5, 7, 3] });
  const { spec, a, b } = planted(model, 2);
  const r = naive({ spec, a, b });
  assert.equal(r.method, 'naive');
  assert.deepEqual(Object.keys(r.perms), Object.keys(spec.perms));
  for (const [id, p] of Object.entries(r.perms)) assert.deepEqual(Array.from(p), Array.from({ length: spec.perms[id] }, (_, i) => i));
  assertSameTensors(b, r.aligned);
  for (const [k, t] of b) assert.equal(r.aligned.get(k), t, 'no copy needed');
  assert.notEqual(r.aligned, b, 'a new map');
});

test('data whose samples do not fit the model input, and bad options, give clear errors', () => {
  const model = mlp({ sizes: [8, 6, 3] });
  const { spec, a, b } = planted(model, 1);
  const wrong = makeBlobs({ n: 20, dim: 5, classes: 3 });
  const msg = /samples of shape \[5\] but model mlp-8-6-3 expects \[8\]/;
  assert.throws(() => activationMatching({ spec, a, b }, { model, data: wrong }), (e: Error) => e instanceof InputError && msg.test(e.message));
  assert.throws(() => straightThroughEstimator({ spec, a, b }, { model, data: wrong }), (e: Error) => e instanceof InputError && msg.test(e.message));
  const ok = makeBlobs({ n: 20, dim: 8, classes: 3 });
  assert.throws(() => activationMatching({ spec, a, b }, { model, data: ok, statistic: 'cosine' as never }), /statistic must be "cross" or "correlation"/);
  assert.throws(() => activationMatching({ spec, a, b }, { model, data: ok, batchSize: 0 }), /batchSize must be an integer ≥ 1/);
  assert.throws(() => straightThroughEstimator({ spec, a, b }, { model, data: ok, criterion: 'mse' }), /"mse" needs 3 float targets/);
  const other = mlp({ sizes: [8, 5, 3] });
  assert.throws(() => activationMatching({ spec, a, b }, { model: other, data: ok }), /model A does not fit model mlp-8-5-3: "layers.0.weight" has shape \[6, 8\], the model needs \[5, 8\]/);
});
