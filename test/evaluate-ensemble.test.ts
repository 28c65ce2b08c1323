/** evaluateEnsemble: the output ensemble is the average of the members' probabilities (outputs for MSE). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, tensor } from '../src/core/index.js';
import { makeBlobs, type Dataset } from '../src/data/index.js';
import { InputError } from '../src/errors.js';
import { mlp, vggSmall, type Params } from '../src/models/index.js';
import { evaluate, evaluateEnsemble } from '../src/training/evaluate.js';

/** A single Linear(1 → 3) whose logits are `bias` for every input (weights zero). */
const linear = mlp({ sizes: [1, 3] });
function constantLogits(bias: number[]): Params {
  return new Map([['layers.0.weight', tensor([0, 0, 0], [3, 1])], ['layers.0.bias', tensor(bias, [3])]]);
}

function softmax(z: number[]): number[] {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

const twoSamples: Dataset = { name: 'two', x: new Float32Array([1, -1]), sampleShape: [1], y: new Int32Array([0, 2]), n: 2, numClasses: 3 };

test('evaluateEnsemble averages probabilities, not logits (hand computation)', () => {
  // Model 1 leans to class 0; model 2 is sure class 0 is wrong (logit −30) and splits 1/2.
  // Mean probabilities pick class 0; mean logits [−14, 0, 0] would pick class 1.
  const z1 = [2, 0, 0];
  const z2 = [-30, 0, 0];
  const p1 = softmax(z1);
  const p2 = softmax(z2);
  const avg = p1.map((v, j) => (v + p2[j]) / 2);
  const expectedLoss = (-Math.log(avg[0]) - Math.log(avg[2])) / 2;
  const r = evaluateEnsemble([{ model: linear, params: constantLogits(z1) }, { model: linear, params: constantLogits(z2) }], twoSamples, { criterion: 'ce' });
  assert.ok(Math.abs(r.loss - expectedLoss) < 1e-6, `loss ${r.loss} vs hand ${expectedLoss}`);
  // argmax p̄ = 0: sample 1 (label 0) right, sample 2 (label 2) wrong.
  assert.equal(r.accuracy, 0.5);
  assert.equal(r.n, 2);
  // Logit averaging would have given a very different loss (≈ 14 for sample 1).
  const logitAvgLoss = -Math.log(softmax(z1.map((v, j) => (v + z2[j]) / 2))[0]);
  assert.ok(logitAvgLoss > 10 && r.loss < 2);
});

test('evaluateEnsemble weights the members\' probabilities (normalised)', () => {
  const z1 = [2, 0, 0];
  const z2 = [-30, 0, 0];
  const p1 = softmax(z1);
  const p2 = softmax(z2);
  const avg = p1.map((v, j) => 0.25 * v + 0.75 * p2[j]);
  const r = evaluateEnsemble([{ model: linear, params: constantLogits(z1) }, { model: linear, params: constantLogits(z2) }], twoSamples, { criterion: 'ce', weights: [1, 3] });
  assert.ok(Math.abs(r.loss - (-Math.log(avg[0]) - Math.log(avg[2])) / 2) < 1e-6);
  // Weight 0 on the second model: the first model alone.
  const alone = evaluateEnsemble([{ model: linear, params: constantLogits(z1) }, { model: linear, params: constantLogits(z2) }], twoSamples, { criterion: 'ce', weights: [2, 0] });
  const single = evaluate(linear, { params: constantLogits(z1) }, twoSamples, { criterion: 'ce' });
  assert.ok(Math.abs(alone.loss - single.loss) < 1e-6);
  assert.throws(() => evaluateEnsemble([{ model: linear, params: constantLogits(z1) }], twoSamples, { criterion: 'ce', weights: [1, 1] }), InputError);
  assert.throws(() => evaluateEnsemble([{ model: linear, params: constantLogits(z1) }], twoSamples, { criterion: 'ce', weights: [0] }), InputError);
});

test('an ensemble of one model, or of a model with itself, is that model', () => {
  const model = mlp({ sizes: [8, 16, 4] });
  const data = makeBlobs({ n: 300, dim: 8, classes: 4, seed: 3 });
  const { params } = model.init(new Rng(1));
  const single = evaluate(model, { params }, data, { criterion: 'ce', batchSize: 64 });
  for (const members of [[{ model, params }], [{ model, params }, { model, params }]]) {
    const r = evaluateEnsemble(members, data, { criterion: 'ce', batchSize: 64 });
    assert.ok(Math.abs(r.loss - single.loss) < 1e-5 * Math.max(1, single.loss), `${r.loss} vs ${single.loss}`);
    assert.equal(r.accuracy, single.accuracy);
  }
  // Two different models: the ensemble is neither of them.
  const other = model.init(new Rng(2)).params;
  const r2 = evaluateEnsemble([{ model, params }, { model, params: other }], data, { criterion: 'ce' });
  const b = evaluate(model, { params: other }, data, { criterion: 'ce' });
  assert.notEqual(r2.loss, single.loss);
  assert.notEqual(r2.loss, b.loss);
});

test('evaluateEnsemble averages outputs for regression (MSE of the mean output)', () => {
  const data: Dataset = { name: 'reg', x: new Float32Array([1, -1]), sampleShape: [1], y: new Float32Array([1, 0, 0, 0, 0, 3]), n: 2 };
  const a = constantLogits([1, 2, 3]);
  const b = constantLogits([3, 0, -1]);
  // Mean output [2, 1, 1] for both samples.
  const expected = ((2 - 1) ** 2 + 1 + 1 + 4 + 1 + (1 - 3) ** 2) / 6;
  const r = evaluateEnsemble([{ model: linear, params: a }, { model: linear, params: b }], data, { criterion: 'mse' });
  assert.ok(Math.abs(r.loss - expected) < 1e-6, `${r.loss} vs ${expected}`);
  assert.equal(r.accuracy, undefined);
  const single = evaluate(linear, { params: a }, data, { criterion: 'mse' });
  assert.ok(Math.abs(evaluateEnsemble([{ model: linear, params: a }], data, { criterion: 'mse' }).loss - single.loss) < 1e-6);
});

test('evaluateEnsemble rejects no models, mismatched models, missing BN statistics and bad labels', () => {
  const data = makeBlobs({ n: 20, dim: 8, classes: 4, seed: 0 });
  const m8 = mlp({ sizes: [8, 4] });
  const m6 = mlp({ sizes: [6, 4] });
  const p8 = m8.init(new Rng(0)).params;
  assert.throws(() => evaluateEnsemble([], data, { criterion: 'ce' }), /at least one model/);
  assert.throws(() => evaluateEnsemble([{ model: m8, params: p8 }, { model: m6, params: m6.init(new Rng(0)).params }], data, { criterion: 'ce' }), /model 1/);
  const bn = vggSmall({ channels: [2, 2, 2, 2], inputShape: [1, 8, 8], numClasses: 4 });
  assert.throws(() => evaluateEnsemble([{ model: bn, params: bn.init(new Rng(0)).params }], data, { criterion: 'ce' }), /BatchNorm/);
  const three = mlp({ sizes: [8, 3] });
  assert.throws(() => evaluateEnsemble([{ model: three, params: three.init(new Rng(0)).params }], data, { criterion: 'ce' }), /label 3/);
});
