import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { noGrad, Tensor } from '../src/core/tensor.js';
import { InputError } from '../src/errors.js';
import { MERGE_STRATEGIES, MERGE_STRATEGY_NAMES, mergeModels, strategyNeedsData } from '../src/methods/merge.js';
import { mlp, type Model } from '../src/models/index.js';
import { applyHard, invertPermutation, randomPerms } from '../src/permutation/apply.js';
import { mergeWeights, splitState, type Params } from '../src/state/params.js';

const model = mlp({ sizes: [8, 16, 16, 3] });
const spec = model.permutationSpec();

function init(seed: number): Params {
  const { params, buffers } = model.init(new Rng(seed));
  return new Map([...params, ...buffers]);
}

function outputs(m: Model, state: Params, x: Tensor): Float32Array | Float64Array {
  const { params, buffers } = splitState(state);
  return noGrad(() => m.forward(params, x, { training: false, buffers })).data;
}

function maxAbsDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  return d;
}

const probe = (() => {
  const rng = new Rng(99);
  return new Tensor(Float32Array.from({ length: 32 * 8 }, () => rng.normal()), [32, 8]);
})();

test('every strategy: each aligned model computes its input\'s function, and merged = Σ w_i aligned_i', () => {
  const models = [init(1), init(2), init(3)];
  const weights = [0.5, 0.3, 0.2];
  for (const name of MERGE_STRATEGY_NAMES.filter((s) => !strategyNeedsData(s))) {
    const r = mergeModels(name, { spec, models, weights }, { seed: 4 });
    assert.equal(r.perms.length, 3);
    assert.equal(r.aligned.length, 3);
    for (const p of Object.values(r.perms[0])) assert.deepEqual(Array.from(p), Array.from(p.keys()), `${name}: perms[0] is not the identity`);
    let moved = 0;
    r.aligned.forEach((a, i) => {
      const d = maxAbsDiff(outputs(model, a, probe), outputs(model, models[i], probe));
      assert.ok(d < 1e-5, `${name}: aligned model ${i} differs from its input by ${d}`);
      const viaPerms = noGrad(() => applyHard(spec, models[i], r.perms[i]));
      for (const [t, v] of a) assert.ok(maxAbsDiff(v.data, viaPerms.get(t)!.data) === 0, `${name}: aligned[${i}].${t} ≠ perms[${i}] applied to model ${i}`);
      for (const p of Object.values(r.perms[i])) moved += p.filter((v, k) => v !== k).length;
    });
    assert.ok(moved > 0, `${name}: independent models should need some permutation`);
    for (const [t, m] of r.merged) {
      const want = Array.from(m.data, (_, k) => r.aligned.reduce((s, a, i) => s + weights[i] * a.get(t)!.data[k], 0));
      assert.ok(maxAbsDiff(m.data, want) < 1e-6, `${name}: merged.${t} is not the weighted average of the aligned models`);
    }
  }
});

test('mergemany recovers planted permutations: merging permuted copies of one model gives that model', () => {
  const base = init(5);
  const rng = new Rng(6);
  const planted = [randomPerms(spec, rng), randomPerms(spec, rng), randomPerms(spec, rng)];
  const models = [base, ...planted.map((p) => noGrad(() => applyHard(spec, base, p)))];
  const r = mergeModels('mergemany', { spec, models }, { seed: 7 });
  for (const [t, v] of base) assert.ok(maxAbsDiff(r.merged.get(t)!.data, v.data) < 1e-6, `merged.${t} is not the original`);
  planted.forEach((p, i) => {
    for (const [id, perm] of Object.entries(p)) assert.deepEqual(Array.from(r.perms[i + 1][id]), Array.from(invertPermutation(perm)), `model ${i + 1}, permutation ${id} not recovered`);
  });
  // It stops on a round where nothing moves, well before the cap.
  assert.equal(r.log.at(-1)!.hardCost, 0);
  assert.ok(r.log.length < MERGE_STRATEGIES.mergemany.defaults.maxRounds);
  assert.ok(r.log.at(-1)!.cost < 1e-8);
});

test('mergemany is reproducible for a given seed', () => {
  const models = [init(11), init(12), init(13), init(14)];
  const a = mergeModels('mergemany', { spec, models }, { seed: 3 });
  const b = mergeModels('mergemany', { spec, models }, { seed: 3 });
  for (const [t, v] of a.merged) assert.deepEqual(Array.from(b.merged.get(t)!.data), Array.from(v.data), `merged.${t} differs between identical runs`);
});

test('first with the naive method is plain averaging', () => {
  const models = [init(21), init(22)];
  const r = mergeModels('first', { spec, models }, {}, { method: 'naive' });
  assert.equal(r.strategy, 'first/naive');
  for (const [t, v] of r.merged) {
    const want = Array.from(v.data, (_, k) => (models[0].get(t)!.data[k] + models[1].get(t)!.data[k]) / 2);
    assert.ok(maxAbsDiff(v.data, want) < 1e-7);
  }
});

test('mergeWeights: bad counts and weights are one-line input errors', () => {
  assert.deepEqual(mergeWeights(2), [0.5, 0.5]);
  assert.deepEqual(mergeWeights(3, [2, 1, 1]), [0.5, 0.25, 0.25]);
  const cases: [number, number[] | undefined, RegExp][] = [
    [1, undefined, /at least two models/],
    [3, [1, 1], /2 weights for 3 models/],
    [2, [0, 0], /sum to zero/],
    [2, [1e308, 1e308], /overflow/],
    [2, [1, -1], /non-negative/],
    [2, [1, NaN], /finite/],
  ];
  for (const [n, w, re] of cases) {
    assert.throws(() => mergeWeights(n, w), (e: Error) => e instanceof InputError && re.test(e.message) && !e.message.includes('\n'));
  }
  assert.throws(() => mergeModels('first', { spec, models: [init(1), init(2)], weights: [0, 0] }), InputError);
});
