/**
 * The weight costs' default τ schedule recovers planted permutations exactly on narrow and odd
 * widths, where the former fixed τ = 0.1 hardened with a pair of units swapped (README,
 * "Choosing τ for the weight costs").
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { plantedPair } from '../src/experiments/recovery.js';
import { annealTau, describeTau, sinkhornRebasin, WEIGHT_COST_DEFAULTS, widthTau } from '../src/methods/sinkhorn-rebasin.js';
import { mlp, vgg, type Model } from '../src/models/index.js';
import { invertPermutation } from '../src/permutation/apply.js';

/** Runs Sinkhorn with `options` (default settings otherwise) on the recovery task of `seed`; returns the perms found and expected. */
function recover(model: Model, seed: number, options: { tau?: number; lr?: number; cost?: 'l2' | 'cosine' } = {}) {
  const { a, b, planted } = plantedPair(model, seed);
  const result = sinkhornRebasin({ spec: model.permutationSpec(), a, b }, { cost: 'l2', seed, ...options });
  const expected = Object.fromEntries(Object.entries(planted).map(([id, p]) => [id, Array.from(invertPermutation(p))]));
  const found = Object.fromEntries(Object.entries(result.perms).map(([id, p]) => [id, Array.from(p)]));
  return { found, expected, steps: result.steps };
}

test('widthTau: 3× softer at first, then every group half-soft (diagonal mass (n + 1)/(2n) from X = I)', () => {
  for (const n of [1, 8, 37, 512]) {
    const t = widthTau(n, 51);
    const diag = Math.exp(1 / t) / (Math.exp(1 / t) + n - 1);
    assert.ok(Math.abs(diag - (n + 1) / (2 * n)) < 1e-12, `n = ${n}`);
    assert.ok(Math.abs(widthTau(n, 1) - 3 * t) < 1e-12);
    assert.equal(widthTau(n, 300), t);
    assert.ok(widthTau(n, 20) < widthTau(n, 19));
  }
  assert.equal(WEIGHT_COST_DEFAULTS.tau, widthTau);
  assert.equal(describeTau(0.1), 'τ = 0.1');
  assert.match(describeTau(widthTau), /ln\(n \+ 1\)/);
});

test('annealTau: widthTau for the first 50 steps, then on down to a tenth of τ_n, reached by step 156 and kept', () => {
  for (const n of [8, 128]) {
    for (const t of [1, 20, 51]) assert.ok(Math.abs(annealTau(n, t) - widthTau(n, t)) < 1e-12, `n = ${n}, t = ${t}`);
    const tauN = widthTau(n, 51);
    assert.ok(annealTau(n, 101) < tauN / 2.9 && annealTau(n, 101) > tauN / 3.1);
    assert.ok(Math.abs(annealTau(n, 157) - tauN / 10) < 1e-12);
    assert.equal(annealTau(n, 1000), annealTau(n, 157));
    assert.ok(annealTau(n, 150) > annealTau(n, 157));
  }
  assert.match(describeTau(annealTau), /tenth/);
});

test('default Sinkhorn-L2 recovers planted permutations exactly across narrow and odd widths and seeds', () => {
  for (const width of [8, 16, 37]) {
    for (const depth of [2, 4]) {
      for (let seed = 0; seed < 3; seed++) {
        const r = recover(mlp({ sizes: [784, ...Array<number>(depth).fill(width), 10] }), seed);
        assert.deepEqual(r.found, r.expected, `784-${width}×${depth}-10, seed ${seed}`);
      }
    }
  }
  const tiny = vgg({ depth: 11, batchNorm: false, inputShape: [3, 32, 32], numClasses: 10, widthMultiplier: 0.125 });
  const r = recover(tiny, 0);
  assert.deepEqual(r.found, r.expected, 'VGG11 ×0.125');
});

test('a fixed τ = 0.1 (the former default) hardens with a pair swapped where the default recovers', () => {
  // 784-8×4-10, seed 3: τ = 0.1 ends 300 steps with two units of one layer swapped.
  const model = mlp({ sizes: [784, 8, 8, 8, 8, 10] });
  const fixed = recover(model, 3, { tau: 0.1 });
  assert.notDeepEqual(fixed.found, fixed.expected);
  const scheduled = recover(model, 3);
  assert.deepEqual(scheduled.found, scheduled.expected);
  assert.ok(scheduled.steps < 100, `${scheduled.steps} steps`);
});

test('the default lr 1 recovers a wide deep MLP in under half the steps of the reference\'s lr 0.1', () => {
  // Its mean-squared cost puts the gradient on X at ~1e-10, far below AdamW's ε = 1e-8, so the
  // step is lr·m/ε: proportional to lr (README, "The learning rate of the weight costs").
  const model = mlp({ sizes: [784, 256, 256, 256, 256, 10] });
  assert.equal(WEIGHT_COST_DEFAULTS.lr, 1);
  const slow = recover(model, 0, { lr: 0.1 });
  assert.deepEqual(slow.found, slow.expected);
  const fast = recover(model, 0);
  assert.deepEqual(fast.found, fast.expected);
  assert.ok(2 * fast.steps < slow.steps, `lr 1: ${fast.steps} steps, lr 0.1: ${slow.steps}`);
});

test('the cosine cost stops at its zero too (±1e-8 in float32 at an exact match), not at the step cap', () => {
  for (const seed of [1, 2]) {
    const { found, expected, steps } = recover(mlp({ sizes: [10, 16, 16, 3] }), seed, { cost: 'cosine' });
    assert.deepEqual(found, expected);
    assert.ok(steps < WEIGHT_COST_DEFAULTS.steps, `seed ${seed}: ran all ${steps} steps`);
  }
});
