/**
 * The Sinkhorn barycenter merge: planted permutations of one model are all undone and merge back
 * into it; every aligned model computes its input's function and the merged model is the weighted
 * average of the aligned ones; the data cost beats the naive average on trained models; and for
 * two models the weights cost takes the two-model Sinkhorn-L2 path.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { noGrad, Tensor } from '../src/core/tensor.js';
import { makeBlobs } from '../src/data/synthetic.js';
import { InputError } from '../src/errors.js';
import { weightCost } from '../src/methods/costs.js';
import { midpointCost } from '../src/methods/data-costs.js';
import { batchSupplier } from '../src/methods/registry.js';
import { sinkhornBarycenter } from '../src/methods/sinkhorn-barycenter.js';
import { sinkhornRebasin } from '../src/methods/sinkhorn-rebasin.js';
import { mlp, vgg, type Model } from '../src/models/index.js';
import { applyHard, invertPermutation, randomPerms } from '../src/permutation/apply.js';
import { checkEquivalence } from '../src/permutation/equivalence.js';
import { splitState, weightedAverage, type Params } from '../src/state/params.js';
import { evaluate } from '../src/training/evaluate.js';
import { trainModel } from '../src/training/train.js';

/** A freshly initialised state, BN running statistics non-trivial so permuting them matters. */
function randomState(model: Model, seed: number): Params {
  const rng = new Rng(seed);
  const { params, buffers } = model.init(rng);
  for (const [name, t] of buffers) for (let i = 0; i < t.size; i++) t.data[i] = name.endsWith('running_var') ? 0.5 + rng.uniform() : rng.normal();
  return new Map([...params, ...buffers]);
}

function maxAbsDiff(x: Tensor, y: Tensor): number {
  let m = 0;
  for (let i = 0; i < x.size; i++) m = Math.max(m, Math.abs(x.data[i] - y.data[i]));
  return m;
}

test('weights cost: planted permutations of one model are all undone and the merge is that model', () => {
  const model = mlp({ sizes: [12, 24, 24, 5] });
  const spec = model.permutationSpec();
  const base = randomState(model, 1);
  const rng = new Rng(2);
  const planted = [1, 2, 3].map(() => randomPerms(spec, rng));
  const models = [base, ...planted.map((p) => noGrad(() => applyHard(spec, base, p)))];
  // The weight costs' defaults (τ by width, lr 1): this case and 5 seeds each of 784-64×2-10 and
  // 784-128×4-10 with 4 models all recover, in 4–22 steps on average (lr 0.1: 19–65; a fixed
  // τ = 0.1 left a swapped pair in 2 of 5 seeds).
  const r = sinkhornBarycenter({ spec, models }, { cost: 'weights' });
  assert.equal(r.strategy, 'sinkhorn-weights');
  assert.equal(r.perms.length, 4);
  for (const [id, n] of Object.entries(spec.perms)) assert.deepEqual(Array.from(r.perms[0][id]), Array.from({ length: n }, (_, k) => k), 'model 1 keeps the identity');
  planted.forEach((p, i) => {
    for (const id of Object.keys(p)) assert.deepEqual(Array.from(r.perms[i + 1][id]), Array.from(invertPermutation(p[id])), `model ${i + 2}, ${id} not undone`);
  });
  assert.equal(r.log.at(-1)!.hardCost, 0);
  assert.ok(r.log.length < 300, `stops at hard cost 0 (ran ${r.log.length} steps)`);
  for (const [name, t] of base) assert.ok(maxAbsDiff(r.merged.get(name)!, t) <= 1e-6, `merged ${name} differs from model 1`);
});

test('every aligned model computes its input\'s function, and the merge is Σ w_i aligned_i (MLP and VGG-BN, both costs)', () => {
  const cases: { model: Model; x: Tensor }[] = [
    { model: mlp({ sizes: [10, 16, 16, 3] }), x: new Tensor(Float32Array.from({ length: 40 }, (_, i) => Math.sin(i)), [4, 10]) },
    {
      model: vgg({ depth: 11, batchNorm: true, inputShape: [3, 32, 32], numClasses: 4, widthMultiplier: 0.0625 }),
      x: new Tensor(Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.cos(i * 0.37)), [2, 3, 32, 32]),
    },
  ];
  const weights = [0.5, 0.3, 0.2];
  for (const { model, x } of cases) {
    const spec = model.permutationSpec();
    // Noisy permuted copies of one model: a few steps already move units (BN statistics included),
    // so the function check below is not the trivial one of identity permutations.
    const base = randomState(model, 10);
    const rng = new Rng(3);
    const models = [0, 1, 2].map(() => {
      const m = noGrad(() => applyHard(spec, base, randomPerms(spec, rng)));
      for (const t of m.values()) for (let k = 0; k < t.size; k++) t.data[k] += 0.3 * Math.abs(t.data[k]) * rng.normal();
      return m;
    });
    const y = new Int32Array(x.shape[0]).map((_, i) => i % 3);
    for (const cost of ['weights', 'data'] as const) {
      const r = sinkhornBarycenter({ spec, models, weights }, { cost, model, batch: () => ({ x, y }), steps: 6, tau: 0.3, stopAtZero: false });
      assert.equal(r.log.length, 6);
      assert.ok(r.log.every((e) => Number.isFinite(e.cost) && (cost === 'data' || Number.isFinite(e.hardCost))), `${cost}: finite log`);
      models.forEach((m, i) => {
        if (i > 0) assert.ok(Object.values(r.perms[i]).some((p) => p.some((v, k) => v !== k)), `${model.name} ${cost}: model ${i + 1} was not permuted`);
        const a = splitState(r.aligned[i]);
        const o = splitState(m);
        const eq = checkEquivalence(model, a.params, a.buffers, o.params, o.buffers, x);
        assert.ok(eq.maxAbsDiff <= 1e-4 * Math.max(1, eq.maxAbsOutput), `${model.name} ${cost}: aligned model ${i + 1} differs by ${eq.maxAbsDiff}`);
      });
      for (const [name, t] of r.merged) {
        const expected = new Float64Array(t.size);
        r.aligned.forEach((a, i) => a.get(name)!.data.forEach((v, k) => { expected[k] += weights[i] * v; }));
        for (let k = 0; k < t.size; k++) assert.ok(Math.abs(t.data[k] - expected[k]) <= 1e-5 * (1 + Math.abs(expected[k])), `${model.name} ${cost}: merged ${name}[${k}]`);
      }
    }
  }
});

test('data cost: on trained models the merged loss is at most the naive average\'s', () => {
  // Four MLPs trained from different initialisations sit in different basins: the naive average
  // is near chance, while the barycenter's hard merge keeps the training loss near the models'.
  const data = makeBlobs({ n: 600, dim: 8, classes: 6, seed: 3, spread: 1.5 });
  const model = mlp({ sizes: [8, 24, 24, 6] });
  const spec = model.permutationSpec();
  const models = [1, 2, 3, 4].map((seed) => trainModel({ model, data, epochs: 5, batchSize: 32, lr: 0.01, seed, criterion: 'ce' }).params);
  const loss = (p: Params) => evaluate(model, { params: p }, data, { criterion: 'ce' }).loss;
  const naive = loss(weightedAverage(models));
  const r = sinkhornBarycenter({ spec, models }, { cost: 'data', model, batch: batchSupplier(model, data, 200, 0), steps: 120 });
  const merged = loss(r.merged);
  assert.ok(merged <= naive, `barycenter loss ${merged} above the naive average's ${naive}`);
  assert.ok(r.log.every((e) => e.hardCost === undefined), 'the data cost logs no hard cost');
});

test('two models, weights cost: the same hard alignment as two-model Sinkhorn with the L2 cost', () => {
  const model = mlp({ sizes: [10, 16, 16, 3] });
  const spec = model.permutationSpec();
  const a = randomState(model, 21);
  const b = randomState(model, 22);
  const opts = { tau: 0.1, lr: 0.1, steps: 60, init: 'identity' as const, keep: 'last' as const };
  const pair = sinkhornRebasin({ spec, a, b }, { cost: 'l2', ...opts });
  const bary = sinkhornBarycenter({ spec, models: [a, b] }, { cost: 'weights', ...opts });
  const pairCost = noGrad(() => weightCost('l2', a, pair.aligned).item());
  const baryCost = noGrad(() => weightCost('l2', a, bary.aligned[1]).item());
  const before = noGrad(() => weightCost('l2', a, b).item());
  assert.ok(pairCost < before, 'the pair alignment lowers the cost');
  assert.ok(baryCost <= pairCost * (1 + 1e-6), `barycenter L2 ${baryCost} worse than the pair's ${pairCost}`);
  // For N = 2, equal weights, the barycenter cost is ¼ of the L2 cost (module doc).
  assert.ok(Math.abs(4 * bary.log.at(-1)!.hardCost! - baryCost) <= 1e-6 * baryCost);
});

test('weights cost, keep "best": the step with the lowest hard spread is returned, the run unchanged; the data cost refuses it', () => {
  const model = mlp({ sizes: [10, 24, 24, 3] });
  const spec = model.permutationSpec();
  const models = [31, 32, 33].map((s) => randomState(model, s));
  const opts = { cost: 'weights' as const, lr: 1, steps: 60 };
  const last = sinkhornBarycenter({ spec, models }, { ...opts, keep: 'last' });
  const best = sinkhornBarycenter({ spec, models }, opts);
  const spreads = last.log.map((e) => e.hardCost!);
  assert.deepEqual(best.log.map((e) => e.hardCost), spreads);
  const lowest = Math.min(...spreads);
  assert.ok(lowest < spreads.at(-1)!, 'the scenario must have its lowest spread before the last step');
  // The spread of the returned alignment: Σ_i w_i ‖aligned_i − merged‖² in the cost's normalisation, recomputed from the tensors.
  const spreadOf = (r: typeof last) => r.aligned.reduce((acc, m) => acc + noGrad(() => weightCost('l2', r.merged, m).item()) / 3, 0);
  assert.ok(Math.abs(spreadOf(best) - lowest) <= 1e-6 * lowest, `returned spread ${spreadOf(best)} is not the lowest ${lowest}`);
  assert.ok(Math.abs(spreadOf(last) - spreads.at(-1)!) <= 1e-6 * lowest);
  assert.throws(() => sinkhornBarycenter({ spec, models }, { cost: 'data', keep: 'best', model, batch: () => { throw new Error('not reached: refused before any step'); } }), (e: Error) => e instanceof InputError && /keep "best" needs the weights cost/.test(e.message));
});

test('two models, data cost: exactly the two-model Sinkhorn-Mid run (same batches, same steps)', () => {
  // For N = 2 with equal weights the merged model is the midpoint ½·A + ½·π(B): C_Mid itself.
  const data = makeBlobs({ n: 300, dim: 6, classes: 3, seed: 5, spread: 1.5 });
  const model = mlp({ sizes: [6, 12, 12, 3] });
  const spec = model.permutationSpec();
  const [a, b] = [1, 2].map((seed) => trainModel({ model, data, epochs: 2, batchSize: 32, lr: 0.01, seed, criterion: 'ce' }).params);
  const opts = { steps: 25, seed: 4 };
  const pair = sinkhornRebasin({ spec, a, b }, { ...opts, cost: midpointCost({ model, a, batch: batchSupplier(model, data, 100, 0), criterion: 'ce' }), stopAtZero: false });
  const bary = sinkhornBarycenter({ spec, models: [a, b] }, { ...opts, cost: 'data', model, batch: batchSupplier(model, data, 100, 0) });
  assert.deepEqual(bary.log.map((e) => e.cost), pair.log.map((e) => e.cost));
  for (const id of Object.keys(spec.perms)) assert.deepEqual(Array.from(bary.perms[1][id]), Array.from(pair.perms[id]), `permutation ${id}`);
});

test('bad input: fewer than two models, mismatched models, bad weights, data cost without data', () => {
  const model = mlp({ sizes: [6, 5, 2] });
  const spec = model.permutationSpec();
  const m = [randomState(model, 1), randomState(model, 2)];
  const run = (models: Params[], weights?: number[]) => () => sinkhornBarycenter({ spec, models, weights }, { cost: 'weights', steps: 1 });
  assert.throws(run([m[0]]), (e: Error) => e instanceof InputError && /at least two/.test(e.message));
  const missing = new Map(m[1]);
  missing.delete('layers.2.bias');
  assert.throws(run([m[0], missing]), (e: Error) => e instanceof InputError && /model 2.*layers\.2\.bias/.test(e.message));
  assert.throws(run(m, [1]), /1 weights for 2 models/);
  assert.throws(run(m, [0, 0]), /sum to zero/);
  assert.throws(run(m, [1, -1]), /weight 2/);
  assert.throws(run(m, [1, Infinity]), /weight 2/);
  assert.throws(run(m, [1e308, 1e308]), /overflow/);
  assert.throws(() => sinkhornBarycenter({ spec, models: m }, { cost: 'data' }), (e: Error) => e instanceof InputError && /batch supplier/.test(e.message));
  assert.throws(() => sinkhornBarycenter({ spec, models: m }, { cost: 'weights', tau: 0 }), /tau/);
});
