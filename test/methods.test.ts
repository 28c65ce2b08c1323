import { strict as assert } from 'node:assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { noGrad, Tensor } from '../src/core/tensor.js';
import { InputError } from '../src/errors.js';
import { runRecovery } from '../src/experiments/recovery.js';
import { WEIGHT_COST_NAMES, weightCost } from '../src/methods/costs.js';
import { DATA_COST_NAMES } from '../src/methods/data-costs.js';
import { alignModels, METHOD_NAMES, METHODS, needsData } from '../src/methods/registry.js';
import { polynomialTask } from '../src/data/index.js';
import { sinkhornRebasin, WEIGHT_COST_DEFAULTS } from '../src/methods/sinkhorn-rebasin.js';
import { kernels } from '../src/core/backend/index.js';
import { isBufferName, type Params } from '../src/state/params.js';
import { bestGroupPermutation, weightMatching } from '../src/methods/weight-matching.js';
import { mlp, resnet20, vgg, vggSmall, type Model } from '../src/models/index.js';
import { applyHard, identityPerms, invertPermutation, randomPerms } from '../src/permutation/apply.js';
import { axisMatrix, permuteExceptAxis } from '../src/permutation/axes.js';
import { permToAxes, type PermutationSpec } from '../src/permutation/spec.js';

/** Model A, a planted permutation, and B = π*(A) (buffers included). */
function planted(model: Model, seed: number) {
  const rng = new Rng(seed);
  const { params, buffers } = model.init(rng);
  // Non-trivial BN statistics, so permuting them matters.
  for (const [name, t] of buffers) for (let i = 0; i < t.size; i++) t.data[i] = name.endsWith('running_var') ? 0.5 + rng.uniform() : rng.normal();
  const a: Params = new Map([...params, ...buffers]);
  const spec = model.permutationSpec();
  const perms = randomPerms(spec, rng);
  const b = noGrad(() => applyHard(spec, a, perms));
  return { spec, a, b, perms };
}

function assertRecovered(found: Record<string, Int32Array>, plantedPerms: Record<string, Int32Array>) {
  for (const [id, p] of Object.entries(plantedPerms)) {
    assert.deepEqual(Array.from(found[id]), Array.from(invertPermutation(p)), `permutation ${id} not recovered`);
  }
}

function assertSameTensors(x: Params, y: Params) {
  for (const [name, t] of x) assert.deepEqual(Array.from(y.get(name)!.data), Array.from(t.data), `tensor ${name} differs`);
}

test('weight matching recovers planted permutations exactly (MLP, VGG11-BN, ResNet-20)', () => {
  const models = [
    mlp({ sizes: [20, 24, 24, 24, 5] }),
    vgg({ depth: 11, batchNorm: true, inputShape: [3, 32, 32], numClasses: 10, widthMultiplier: 0.125 }),
    resnet20({ widthMultiplier: 1, numClasses: 10 }),
  ];
  for (const model of models) {
    const { spec, a, b, perms } = planted(model, 7);
    const r = weightMatching({ spec, a, b }, { seed: 1 });
    assertRecovered(r.perms, perms);
    assertSameTensors(a, r.aligned); // BN running stats included
    assert.ok(r.steps >= 1 && r.steps <= 100);
  }
});

/**
 * The whole matching objective Σ ⟨W_A, π(W_B)⟩ over the weights on a permuted axis, from scratch:
 * the whole of B permuted, float64 sums per tensor in flat order, tensors in group order.
 */
function matchingObjective(spec: PermutationSpec, a: Params, b: Params, perms: Record<string, Int32Array>): number {
  const byPerm = permToAxes(spec);
  const aligned = noGrad(() => applyHard(spec, b, perms));
  const seen = new Set<string>();
  let total = 0;
  for (const p of Object.keys(spec.perms)) {
    for (const e of byPerm[p] ?? []) {
      if (isBufferName(e.name) || seen.has(e.name)) continue;
      seen.add(e.name);
      const x = a.get(e.name)!.data;
      const y = aligned.get(e.name)!.data;
      let s = 0;
      for (let i = 0; i < x.length; i++) s += x[i] * y[i];
      total += s;
    }
  }
  return total;
}

/**
 * Git Re-Basin's loop as written, with nothing cached: every visit permutes B on the other axes,
 * rebuilds M from zero and solves it. weightMatching must give the same permutations and log
 * (minus the whole objective after each sweep). One rule added to the plain loop: from the
 * identity, the first sweep takes the groups with more weight tensors first (ties in shuffled order).
 */
function plainWeightMatching(spec: PermutationSpec, a: Params, b: Params, seed: number, init?: Record<string, Int32Array>) {
  const rng = new Rng(seed);
  const perms = init ? Object.fromEntries(Object.entries(init).map(([k, v]) => [k, Int32Array.from(v)])) : identityPerms(spec);
  const byPerm = permToAxes(spec);
  const ids = Object.keys(spec.perms).filter((p) => byPerm[p]?.some((e) => !isBufferName(e.name)));
  const costs: number[] = [];
  const tensorsOf = (p: string) => new Set(byPerm[p].filter((e) => !isBufferName(e.name)).map((e) => e.name)).size;
  for (let sweep = 0; sweep < 100; sweep++) {
    let progress = false;
    const shuffled = rng.shuffle([...ids]);
    const order = sweep === 0 && !init ? [...new Set(shuffled.map(tensorsOf))].sort((x, y) => y - x).flatMap((k) => shuffled.filter((p) => tensorsOf(p) === k)) : shuffled;
    for (const p of order) {
      const n = spec.perms[p];
      const M = new Float32Array(n * n);
      for (const e of byPerm[p]) {
        if (isBufferName(e.name)) continue;
        const wa = axisMatrix(a.get(e.name)!, e.axis, e.inner);
        const wb = axisMatrix(noGrad(() => permuteExceptAxis(spec, e.name, b.get(e.name)!, perms, e.axis)), e.axis, e.inner);
        const rest = wa.length / n;
        kernels().gemm(false, true, n, n, rest, 1, wa, 0, rest, wb, 0, rest, 1, M, 0, n);
      }
      const best = bestGroupPermutation(M, n, perms[p]);
      if (best.improved) progress = true;
      perms[p] = best.perm;
    }
    costs.push(-matchingObjective(spec, a, b, perms));
    if (!progress) break;
  }
  return { perms, costs };
}

test('weight matching = the plain uncached loop (MLP, VGGs with a flatten, ResNet-20; from identity and from init)', () => {
  const models: Model[] = [
    mlp({ sizes: [20, 24, 24, 24, 5] }),
    vggSmall({ channels: [4, 6, 8, 6], inputShape: [1, 12, 12], numClasses: 5 }),
    // Flatten with 2×2 positions per channel into a hidden linear layer: a gathered axis with inner 4.
    vgg({ depth: 11, batchNorm: true, inputShape: [3, 32, 32], widthMultiplier: 0.125, classifier: 'three-layer', hiddenWidth: 12, avgpool: [2, 2] }),
    resnet20({ widthMultiplier: 0.25, numClasses: 10 }),
  ];
  for (const model of models) {
    const spec = model.permutationSpec();
    // Independent random models: many sweeps, so partial sums are reused and groups skipped.
    const A = model.init(new Rng(11));
    const B = model.init(new Rng(12));
    const a: Params = new Map([...A.params, ...A.buffers]);
    const b: Params = new Map([...B.params, ...B.buffers]);
    for (const init of [undefined, randomPerms(spec, new Rng(5))]) {
      const want = plainWeightMatching(spec, a, b, 4, init);
      const got = weightMatching({ spec, a, b }, { seed: 4, init });
      assert.deepEqual(got.log.map((e) => e.cost), want.costs, `${model.name}: objective per sweep`);
      for (const [id, p] of Object.entries(want.perms)) assert.deepEqual(Array.from(got.perms[id]), Array.from(p), `${model.name}: permutation ${id}`);
      assertSameTensors(noGrad(() => applyHard(spec, b, want.perms)), got.aligned);
      // The last sweep's cost is the whole objective under the returned permutations.
      assert.equal(got.log.at(-1)!.cost, -matchingObjective(spec, a, b, got.perms), `${model.name}: final cost`);
    }
  }
  // A bad init is reported as before (it used to surface from applyHard).
  const spec = models[0].permutationSpec();
  const A = models[0].init(new Rng(1));
  const bad = { ...identityPerms(spec), 'P_layers.0': new Int32Array(24) };
  assert.throws(() => weightMatching({ spec, a: A.params, b: A.params }, { init: bad }), /invalid permutations:[\s\S]*P_layers\.0/);
});

test('Sinkhorn re-basin with the L2 cost recovers a planted permutation and stops at hard cost 0', () => {
  const { spec, a, b, perms } = planted(mlp({ sizes: [16, 12, 12, 4] }), 3);
  const r = sinkhornRebasin({ spec, a, b }, { cost: 'l2', tau: 0.1, lr: 0.1, steps: 200 });
  assertRecovered(r.perms, perms);
  assert.equal(r.log.at(-1)!.hardCost, 0);
  assert.ok(r.steps < 200, 'stopped early at zero cost');
  assertSameTensors(a, r.aligned);
});

test('Sinkhorn re-basin with L1 and cosine costs lowers the hard cost', () => {
  const { spec, a, b } = planted(mlp({ sizes: [10, 8, 8, 3] }), 11);
  const before = noGrad(() => weightCost('l2', a, b).item());
  for (const cost of ['l1', 'cosine'] as const) {
    const r = sinkhornRebasin({ spec, a, b }, { cost, tau: 0.1, steps: 150 });
    const after = noGrad(() => weightCost('l2', a, r.aligned).item());
    assert.ok(after < before * 0.5, `${cost}: L2 distance ${after} not well below ${before}`);
  }
});

test('keep "best" returns the step with the lowest hard cost, "last" the final step; the run is the same', () => {
  // Two independent models: no zero to stop at, and at lr 1 the hard cost rises after its low.
  const model = mlp({ sizes: [20, 32, 32, 5] });
  const state = (seed: number): Params => { const { params, buffers } = model.init(new Rng(seed)); return new Map([...params, ...buffers]); };
  const spec = model.permutationSpec();
  const [a, b] = [state(1), state(2)];
  const last = sinkhornRebasin({ spec, a, b }, { cost: 'l2', lr: 1, steps: 60, keep: 'last' });
  const best = sinkhornRebasin({ spec, a, b }, { cost: 'l2', lr: 1, steps: 60 });
  assert.equal(WEIGHT_COST_DEFAULTS.keep, 'best');
  const hard = (aligned: Params) => noGrad(() => weightCost('l2', a, aligned).item());
  const costs = last.log.map((e) => e.hardCost!);
  assert.deepEqual(best.log.map((e) => e.hardCost), costs);
  assert.ok(Math.min(...costs) < costs.at(-1)!, 'the scenario must have its lowest hard cost before the last step');
  assert.equal(hard(last.aligned), costs.at(-1));
  assert.equal(hard(best.aligned), Math.min(...costs));
  assert.throws(() => sinkhornRebasin({ spec, a, b }, { cost: 'l2', keep: 'first' as 'best' }), /keep must be "best" or "last", got first/);
});

test('the cosine cost has a finite gradient at an all-zero tensor (no NaN from √0)', () => {
  const a: Params = new Map([['w', new Tensor(Float32Array.from([1, 2, 3]), [3])]]);
  const zero = new Tensor(new Float32Array(3), [3], true);
  const c = weightCost('cosine', a, new Map([['w', zero]]));
  assert.equal(c.item(), 1); // cos = 0: 1 − 0
  c.backward();
  assert.ok(zero.grad && Array.from(zero.grad.data).every(Number.isFinite), `gradient ${zero.grad && Array.from(zero.grad.data)}`);
  // Away from zero the value is the plain cosine: B = 2·A gives 1 − 1 = 0.
  const twice = new Tensor(Float32Array.from([2, 4, 6]), [3], true);
  assert.ok(Math.abs(weightCost('cosine', a, new Map([['w', twice]])).item()) < 1e-6);
});

test('a custom differentiable cost drives Sinkhorn re-basin', () => {
  const { spec, a, b, perms } = planted(mlp({ sizes: [8, 6, 3] }), 5);
  let calls = 0;
  const r = sinkhornRebasin({ spec, a, b }, {
    cost: (aligned, step) => { if (step > 0) calls++; return weightCost('l2', a, aligned); },
    tau: 0.1, steps: 100,
  });
  assert.ok(calls >= r.steps);
  assertRecovered(r.perms, perms);
});

test('Sinkhorn re-basin returns its own solver counters: a forced fallback shows, a healthy run stays clean', () => {
  const { spec, a, b } = planted(mlp({ sizes: [8, 6, 6, 3] }), 7);
  const groups = Object.keys(spec.perms).length;
  // τ = 1e-4 makes every soft permutation an exact 0/1 matrix: Schur-CG gives up and the dense KKT system is singular.
  // lr 0.1: a step of 1 can tie two entries of a row of X, and a tie is no 0/1 matrix.
  const hard = sinkhornRebasin({ spec, a, b }, { cost: 'l2', tau: 1e-4, lr: 0.1, steps: 3, stopAtZero: false });
  const solves = hard.steps * groups;
  assert.deepEqual(hard.diagnostics, { ...hard.diagnostics, cgSolves: solves, cgFallbacks: solves, denseSolves: solves, lstsqFallbacks: solves });
  const counted = { ...hard.diagnostics };
  const healthy = sinkhornRebasin({ spec, a, b }, { cost: 'l2', tau: 0.1, lr: 0.1, steps: 5, stopAtZero: false });
  assert.deepEqual(hard.diagnostics, counted, 'a later run does not touch an earlier result');
  const d = healthy.diagnostics;
  assert.deepEqual([d.cgSolves, d.cgFallbacks, d.denseSolves, d.lstsqFallbacks], [healthy.steps * groups, 0, 0, 0]);
  assert.ok(d.cgIterations >= d.cgSolves, JSON.stringify(d));
});

test('methods reject mismatched models, non-finite weights and impossible options', () => {
  const model = mlp({ sizes: [6, 5, 2] });
  const { spec, a, b } = planted(model, 1);
  const missing = new Map(b);
  missing.delete('layers.2.bias');
  assert.throws(() => weightMatching({ spec, a, b: missing }), (e: Error) => e instanceof InputError && /layers\.2\.bias/.test(e.message));
  const nan = new Map(b);
  const w = nan.get('layers.0.weight')!.clone();
  w.data[3] = NaN;
  nan.set('layers.0.weight', w);
  assert.throws(() => sinkhornRebasin({ spec, a, b: nan }, { cost: 'l2' }), /layers\.0\.weight.*non-finite/);
  const reshaped = new Map(b);
  reshaped.set('layers.0.bias', reshaped.get('layers.2.bias')!);
  assert.throws(() => weightMatching({ spec, a, b: reshaped }), /layers\.0\.bias/);
  assert.throws(() => sinkhornRebasin({ spec, a, b }, { cost: 'l2', tau: 0 }), /tau/);
  assert.throws(() => sinkhornRebasin({ spec, a, b }, { cost: 'l2', iters: 0 }), /iters/);
  const other = mlp({ sizes: [6, 7, 2] }).permutationSpec();
  assert.throws(() => weightMatching({ spec: other, a, b }), /layers\.0/);
});

test('experiment recovery writes the documented outputs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-recovery-'));
  try {
    const report = runRecovery({ models: ['mlp2'], methods: ['wm', 'sinkhorn-l2'], seeds: 1, outDir: dir, widths: [12, 7], steps: 200, quiet: true });
    const json = JSON.parse(readFileSync(join(dir, 'recovery.json'), 'utf8'));
    assert.equal(json.rows.length, 2 * 2 * 2); // 2 widths × 2 methods × 2 permutations
    assert.deepEqual([...new Set(json.rows.map((r: { width: number }) => r.width))], [12, 7]);
    for (const row of json.rows) {
      for (const f of ['model', 'width', 'method', 'seed', 'perm', 'recovered', 'steps', 'seconds', 'hardCost']) assert.ok(f in row, `field ${f}`);
      assert.ok(row.recovered >= 0 && row.recovered <= 1);
    }
    assert.ok(json.rows.filter((r: { method: string }) => r.method === 'wm').every((r: { recovered: number }) => r.recovered === 1));
    assert.ok(existsSync(join(dir, 'recovery.md')) && readFileSync(join(dir, 'recovery.md'), 'utf8').includes('| mlp2'));
    assert.ok(readFileSync(join(dir, 'cost-mlp2.svg'), 'utf8').startsWith('<svg'));
    assert.equal(report.curves.length, 2 * 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the method table: a sinkhorn-<cost> method per weight and data cost, needsData and options from the entries', () => {
  for (const c of WEIGHT_COST_NAMES) {
    assert.ok(METHOD_NAMES.includes(`sinkhorn-${c}` as never), `sinkhorn-${c}`);
    assert.equal(needsData(`sinkhorn-${c}` as never), false);
  }
  for (const c of DATA_COST_NAMES) assert.equal(needsData(`sinkhorn-${c}` as never), true, `sinkhorn-${c}`);
  assert.deepEqual(METHOD_NAMES.filter(needsData), ['am', 'ste', 'sinkhorn-mid', 'sinkhorn-rnd']);
  assert.throws(() => needsData('nope' as never), /unknown method "nope"/);

  const { spec, a, b } = planted(mlp({ sizes: [10, 8, 8, 3] }), 5);
  // Options reach the method; undefined ones keep the defaults.
  const wm1 = alignModels('wm', { spec, a, b }, { seed: 2 }, { maxSweeps: 1 });
  assert.equal(wm1.steps, 1);
  const wm = alignModels('wm', { spec, a, b }, { seed: 2 }, { maxSweeps: undefined });
  assert.deepEqual(wm.perms, weightMatching({ spec, a, b }, { seed: 2 }).perms);
  const l1 = alignModels('sinkhorn-l1', { spec, a, b }, {}, { steps: 3, stopAtZero: false });
  assert.equal(l1.method, 'sinkhorn-l1');
  assert.equal(l1.steps, 3);
  const direct = sinkhornRebasin({ spec, a, b }, { cost: 'l1', steps: 3, stopAtZero: false });
  assert.deepEqual(l1.log.map((e) => e.cost), direct.log.map((e) => e.cost));
  assert.throws(() => alignModels('am', { spec, a, b }), /needs the model definition and training data/);

  // A data cost: steps = epochs × batches per epoch unless steps is given.
  const model = mlp({ sizes: [1, 6, 1], activation: 'tanh' });
  const s = model.init(new Rng(1));
  const t = model.init(new Rng(2));
  const input = { spec: model.permutationSpec(), a: new Map([...s.params, ...s.buffers]), b: new Map([...t.params, ...t.buffers]) };
  const data = polynomialTask(1, { seed: 0 });
  const mid = alignModels('sinkhorn-mid', input, { model, data, batchSize: 50 }, { epochs: 2 });
  assert.equal(mid.steps, 2 * Math.ceil(data.n / 50));
  assert.equal(mid.method, 'sinkhorn-mid');
  assert.equal(alignModels('sinkhorn-rnd', input, { model, data, batchSize: 50 }, { epochs: 2, steps: 3 }).steps, 3);
  assert.equal(METHODS['sinkhorn-mid'].defaults.epochs, 20);
});
