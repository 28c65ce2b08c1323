/** Applying permutations: function preserved for every builder, inverses, soft = hard, gradients. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { F, noGrad, randn, Rng, Tensor, type DType } from '../src/core/index.js';
import { mlp, resnet18, resnet20, vgg, vggSmall, type Model, type Params } from '../src/models/index.js';
import {
  applyHard, applySoft, composePermutations, composePerms, identityPerms, invertPermutation, invertPerms,
  permutationMatrices, permutationMatrix, randomPerms, validatePerms,
} from '../src/permutation/apply.js';
import { checkEquivalence } from '../src/permutation/equivalence.js';

/** Initialised model with BN γ/β and running stats randomised (identity values would hide mistakes). */
function setup(model: Model, seed: number, dtype: DType = 'float32') {
  const rng = new Rng(seed);
  const { params, buffers } = model.init(rng, dtype);
  for (const n of model.graph().nodes) {
    if (n.op !== 'batchnorm') continue;
    rng.fillUniform(params.get(n.weight)!.data, 0.5, 1.5);
    rng.fillNormal(params.get(n.bias)!.data, 0, 0.2);
    rng.fillNormal(buffers.get(n.runningMean)!.data, 0, 0.3);
    rng.fillUniform(buffers.get(n.runningVar)!.data, 0.5, 2);
  }
  return { params, buffers, rng };
}

function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(a.data[i] - b.data[i]));
  return m;
}

function assertSameParams(a: Params, b: Params, tol = 0, what = '') {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [k, t] of a) assert.ok(maxDiff(t, b.get(k)!) <= tol, `${what} ${k}: differs by ${maxDiff(t, b.get(k)!)}`);
}

const builders: [string, () => Model][] = [
  ['mlp depth 2', () => mlp({ sizes: [12, 16, 5] })],
  ['mlp depth 4', () => mlp({ sizes: [12, 16, 16, 16, 5] })],
  ['mlp depth 8 tanh', () => mlp({ sizes: [12, 9, 9, 9, 9, 9, 9, 9, 5], activation: 'tanh' })],
  ...([11, 13, 16, 19] as const).flatMap((depth) => [false, true].map((batchNorm): [string, () => Model] => [
    `vgg${depth}${batchNorm ? '-bn' : ''}`, () => vgg({ depth, batchNorm, widthMultiplier: 1 / 16 }),
  ])),
  ['vgg11-bn 64×64 three-layer (flatten inner 4)', () => vgg({ depth: 11, batchNorm: true, widthMultiplier: 1 / 16, inputShape: [3, 64, 64], classifier: 'three-layer' })],
  ['vgg11 avgpool 7×7 (flatten inner 49)', () => vgg({ depth: 11, batchNorm: false, widthMultiplier: 1 / 16, avgpool: [7, 7] })],
  ['resnet20', () => resnet20({ widthMultiplier: 0.5 })],
  ['resnet18', () => resnet18({ inputShape: [3, 32, 32], numClasses: 10, widthMultiplier: 1 / 8 })],
  ['vgg-small (MNIST)', () => vggSmall({ channels: [4, 8, 8, 16] })],
];

builders.forEach(([label, build], i) => {
  test(`random hard permutations keep the function: ${label}`, () => {
    const model = build();
    const { params, buffers, rng } = setup(model, 100 + i);
    const spec = model.permutationSpec();
    const perms = randomPerms(spec, rng);
    const p2 = applyHard(spec, params, perms);
    const b2 = applyHard(spec, buffers, perms);
    // The permutation really moved weights (so the check below is not vacuous).
    const moved = [...params].filter(([k, t]) => maxDiff(t, p2.get(k)!) > 0).length;
    assert.ok(moved >= params.size / 2, `${moved} of ${params.size} tensors changed`);
    const x = randn([3, ...model.inputShape], rng);
    const r = checkEquivalence(model, params, buffers, p2, b2, x, { training: false });
    assert.ok(r.maxAbsOutput > 1e-3, 'outputs are not trivially zero');
    assert.ok(r.maxAbsDiff < 1e-4, `eval: max abs diff ${r.maxAbsDiff}`);
    // Training mode (BN batch statistics) is permutation-equivariant too.
    if (buffers.size) {
      const rt = checkEquivalence(model, params, buffers, p2, b2, x, { training: true });
      assert.ok(rt.maxAbsDiff < 1e-4, `train: max abs diff ${rt.maxAbsDiff}`);
    }
    // Inverse restores exactly.
    const inv = invertPerms(perms);
    assertSameParams(applyHard(spec, p2, inv), params, 0, 'inverse');
    assertSameParams(applyHard(spec, b2, inv), buffers, 0, 'inverse');
    // A mistake is caught: permuting the parameters but not the BN buffers (or only half the perms).
    if (buffers.size) assert.ok(checkEquivalence(model, params, buffers, p2, buffers, x).maxAbsDiff > 1e-3);
  });
});

test('applySoft with 0/1 matrices equals applyHard (params and buffers, inner axes)', () => {
  for (const model of [mlp({ sizes: [7, 6, 5, 3] }), vgg({ depth: 11, batchNorm: true, widthMultiplier: 1 / 16, inputShape: [3, 64, 64], classifier: 'three-layer' }), resnet20({ widthMultiplier: 0.25 })]) {
    const { params, buffers, rng } = setup(model, 7);
    const spec = model.permutationSpec();
    const perms = randomPerms(spec, rng);
    const P = permutationMatrices(perms);
    assertSameParams(applySoft(spec, params, P), applyHard(spec, params, perms), 0, model.name);
    assertSameParams(applySoft(spec, buffers, P), applyHard(spec, buffers, perms), 0, model.name);
  }
});

test('applySoft: BN running stats are permuted hard by the row argmax of a soft P', () => {
  const model = vggSmall({ channels: [3, 4, 4, 5] });
  const { params, buffers, rng } = setup(model, 8);
  const spec = model.permutationSpec();
  const perms = randomPerms(spec, rng);
  const P: Record<string, Tensor> = {};
  for (const [p, a] of Object.entries(perms)) {
    const n = a.length;
    const m = permutationMatrix(a);
    for (let k = 0; k < m.size; k++) m.data[k] = 0.6 * m.data[k] + 0.4 / n; // doubly stochastic, argmax = perm
    P[p] = m;
  }
  assertSameParams(applySoft(spec, buffers, P), applyHard(spec, buffers, perms), 0);
  // Parameters are mixed (soft), not gathered.
  const soft = applySoft(spec, params, P);
  assert.ok(maxDiff(soft.get('features.0.weight')!, applyHard(spec, params, perms).get('features.0.weight')!) > 1e-3);
  // `hard` option: everything hard.
  assertSameParams(applySoft(spec, params, P, { hard: () => true }), applyHard(spec, params, perms), 0);
});

test('applySoft is differentiable w.r.t. P: finite differences in float64 on a tiny MLP', () => {
  const model = mlp({ sizes: [3, 4, 5, 2] });
  const { params, rng } = setup(model, 9, 'float64');
  const spec = model.permutationSpec();
  const R = new Map([...params].map(([k, t]) => [k, randn(t.shape, rng, 1, 'float64')]));
  // Soft (not doubly stochastic) P: the formula is linear in each P, any matrix works.
  const P: Record<string, Tensor> = {};
  for (const [p, n] of Object.entries(spec.perms)) P[p] = randn([n, n], rng, 1, 'float64').requireGrad();
  const loss = () => {
    let s: Tensor | null = null;
    for (const [k, t] of applySoft(spec, params, P)) {
      const term = F.sum(F.mul(t, R.get(k)!));
      s = s ? F.add(s, term) : term;
    }
    return s!;
  };
  loss().backward();
  const eps = 1e-6;
  let worst = 0;
  let checked = 0;
  for (const [p, m] of Object.entries(P)) {
    assert.ok(m.grad, `gradient reaches ${p}`);
    for (let k = 0; k < m.size; k++) {
      const v = m.data[k];
      m.data[k] = v + eps;
      const up = noGrad(loss).item();
      m.data[k] = v - eps;
      const down = noGrad(loss).item();
      m.data[k] = v;
      worst = Math.max(worst, Math.abs((up - down) / (2 * eps) - m.grad!.data[k]));
      checked++;
    }
  }
  assert.equal(checked, 16 + 25);
  assert.ok(worst < 1e-7, `max |analytic − numeric| = ${worst}`);
});

test('applyHard is differentiable w.r.t. the params (gradient is the inverse-permuted upstream)', () => {
  const model = mlp({ sizes: [4, 5, 3] });
  const { params, rng } = setup(model, 10, 'float64');
  for (const t of params.values()) t.requireGrad();
  const spec = model.permutationSpec();
  const perms = randomPerms(spec, rng);
  const R = new Map([...params].map(([k, t]) => [k, randn(t.shape, rng, 1, 'float64')]));
  const out = applyHard(spec, params, perms);
  let s: Tensor | null = null;
  for (const [k, t] of out) { const term = F.sum(F.mul(t, R.get(k)!)); s = s ? F.add(s, term) : term; }
  s!.backward();
  // d/dW Σ π(W)⊙R = π⁻¹(R).
  const expected = applyHard(spec, R, invertPerms(perms));
  for (const [k, t] of params) assert.ok(maxDiff(t.grad!, expected.get(k)!) < 1e-12, k);
});

test('permutation algebra: inverse, composition, matrices', () => {
  const rng = new Rng(11);
  const a = rng.permutation(7);
  const b = rng.permutation(7);
  const x = Float64Array.from({ length: 7 }, (_, i) => i * 10 + 1);
  const apply = (p: Int32Array, v: Float64Array) => Float64Array.from(p, (j) => v[j]); // new i ← old p[i]
  assert.deepEqual(apply(invertPermutation(a), apply(a, x)), x);
  assert.deepEqual(apply(composePermutations(a, b), x), apply(b, apply(a, x)));
  // Matrix form: P[i, perm[i]] = 1, so P·x gathers; composition is P_b · P_a.
  const Pa = permutationMatrix(a, 'float64');
  const Pb = permutationMatrix(b, 'float64');
  assert.deepEqual([...F.matmul(Pa, new Tensor(x, [7, 1])).data], [...apply(a, x)]);
  assert.deepEqual([...permutationMatrix(composePermutations(a, b), 'float64').data], [...F.matmul(Pb, Pa).data]);
  assert.deepEqual([...permutationMatrix(invertPermutation(a), 'float64').data], [...F.transpose(Pa).data]);
  const spec = mlp({ sizes: [3, 4, 5, 2] }).permutationSpec();
  const id = identityPerms(spec);
  assert.deepEqual(Object.keys(id), ['P_layers.0', 'P_layers.2']);
  assert.deepEqual([...id['P_layers.2']], [0, 1, 2, 3, 4]);
  const r = randomPerms(spec, rng);
  assert.deepEqual(composePerms(r, invertPerms(r)), id);
  assert.throws(() => invertPermutation([0, 0, 1]), /value 0 appears twice/);
});

test('wrong permutations: errors name the permutation id', () => {
  const model = mlp({ sizes: [3, 4, 5, 2] });
  const { params } = model.init(new Rng(12));
  const spec = model.permutationSpec();
  const good = identityPerms(spec);
  assert.throws(() => applyHard(spec, params, { ...good, 'P_layers.2': new Int32Array([0, 1, 2, 3]) }),
    /permutation "P_layers.2": has length 4 but size 5 is expected/);
  assert.throws(() => applyHard(spec, params, { ...good, 'P_layers.0': Int32Array.from([0, 1, 1, 3]) }), /permutation "P_layers.0": value 1 appears twice/);
  assert.throws(() => applyHard(spec, params, { ...good, 'P_layers.0': Int32Array.from([0, 1, 2, 4]) }), /permutation "P_layers.0": entry 3 is 4/);
  assert.throws(() => applyHard(spec, params, { 'P_layers.0': good['P_layers.0'] }), /permutation "P_layers.2" \(size 5\) is missing/);
  assert.throws(() => validatePerms(spec, { ...good, P_extra: new Int32Array(1) }), /permutation "P_extra" is not in the spec/);
  const P = permutationMatrices(good);
  assert.throws(() => applySoft(spec, params, { ...P, 'P_layers.0': permutationMatrix([1, 0, 2]) }), /matrix "P_layers.0" has shape \[3, 3\] but \[4, 4\] is expected/);
  // A tensor the spec does not cover, or one whose shape disagrees, is named.
  const extra = new Map(params).set('stray.weight', randn([2, 2], new Rng(0)));
  assert.throws(() => applyHard(spec, extra, good), /tensor "stray.weight" has no entry/);
  const wrong = new Map(params).set('layers.2.bias', randn([6], new Rng(0)));
  assert.throws(() => applyHard(spec, wrong, good), /tensor "layers.2.bias" axis 0 has length 6 but permutation "P_layers.2" has size 5/);
});
