/**
 * Every method on version-2 specs: weight matching (in memory and lazy) recovers planted segment
 * and block permutations exactly; Sinkhorn-L2 recovers planted segment permutations; STE,
 * Sinkhorn-Mid, MergeMany and the Sinkhorn barycenter run on a v2 spec and return valid
 * permutations whose π(B) computes B's function.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { noGrad, randn, Rng, Tensor } from '../src/core/index.js';
import { makeBlobs } from '../src/data/synthetic.js';
import { InputError } from '../src/errors.js';
import { activationMatching } from '../src/methods/activation-matching.js';
import { mergeModels } from '../src/methods/merge.js';
import { alignModels } from '../src/methods/registry.js';
import { sinkhornBarycenter } from '../src/methods/sinkhorn-barycenter.js';
import { weightCost } from '../src/methods/costs.js';
import { sinkhornRebasin } from '../src/methods/sinkhorn-rebasin.js';
import { weightMatchingLazy, type TensorSource } from '../src/methods/weight-matching-lazy.js';
import { weightMatching } from '../src/methods/weight-matching.js';
import { mlp, type Model } from '../src/models/index.js';
import { applyHard, invertPerms, randomPerms, validatePerms, type Perms } from '../src/permutation/apply.js';
import { checkEquivalence } from '../src/permutation/equivalence.js';
import { blockEntry, segmentsEntry, type AxisPerm, type PermutationSpec } from '../src/permutation/spec.js';
import { splitState, type Params } from '../src/state/params.js';
import { trainModel } from '../src/training/train.js';
import { attentionNet, concatNet, gqaNet, type V2Net } from './helpers/spec-v2-nets.js';

function assertSamePerms(got: Perms, want: Perms, what: string): void {
  for (const [id, p] of Object.entries(want)) assert.deepEqual(Array.from(got[id]), Array.from(p), `${what}: permutation ${id} not recovered`);
}

function assertSameTensors(x: Params, y: Params, what: string): void {
  for (const [name, t] of x) assert.deepEqual(Array.from(y.get(name)!.data), Array.from(t.data), `${what}: tensor ${name} differs`);
}

function maxAbsDiff(x: Tensor, y: Tensor): number {
  let m = 0;
  for (let i = 0; i < x.size; i++) m = Math.max(m, Math.abs(x.data[i] - y.data[i]));
  return m;
}

/** A and B = π*(A) for a random element π* of the spec's group. */
function planted(net: V2Net, seed: number) {
  const rng = new Rng(seed);
  const a = net.params(rng);
  const perms = randomPerms(net.spec, rng);
  const b = noGrad(() => applyHard(net.spec, a, perms));
  return { a, b, perms, undo: invertPerms(perms, net.spec) };
}

const source = (m: Params): TensorSource => ({ names: [...m.keys()], shape: (n) => m.get(n)!.shape.slice(), read: async (n) => m.get(n)! });

const nets: [string, () => V2Net][] = [
  ['concat (segments, inner)', () => concatNet(6, 5, 7, 4)],
  ['attention 2 heads (blocks in segments, shared and per-head inner)', () => attentionNet()],
  ['attention 4 heads, width 8', () => attentionNet(8, 4, 5, 4, 9, 5)],
  ['grouped-query attention, 3 groups of 2 query heads (repeated blocks)', () => gqaNet(8, 3, 2, 4, 3, 7, 4)],
];

for (const [label, build] of nets) {
  test(`weight matching recovers a planted v2 permutation exactly, in memory and lazily: ${label}`, async () => {
    const net = build();
    for (const seed of [1, 2, 3]) {
      const { a, b, undo } = planted(net, seed);
      const r = weightMatching({ spec: net.spec, a, b }, { seed });
      assertSamePerms(r.perms, undo, `seed ${seed}`);
      assertSameTensors(a, r.aligned, `seed ${seed}`);
      // The objective (over the tensors with a permuted axis) ends at Σ ⟨A, A⟩: π(B) is A.
      let self = 0;
      for (const [name, t] of a) if (net.spec.axes[name].some((e) => e !== null)) for (let i = 0; i < t.size; i++) self += t.data[i] * t.data[i];
      assert.ok(Math.abs(r.log.at(-1)!.cost + self) <= 1e-9 * self, `final cost ${r.log.at(-1)!.cost}, want ${-self}`);
      const lazy = await weightMatchingLazy({ spec: net.spec, a: source(a), b: source(b) }, { seed });
      assertSamePerms(lazy.perms, r.perms, `lazy, seed ${seed}`);
      assert.deepEqual(lazy.log.map((e) => e.cost), r.log.map((e) => e.cost), 'the lazy path logs the same objective');
    }
  });
}

test('weight matching between two independent v2 models: valid permutations, same function, objective not below the identity\'s', () => {
  for (const net of [concatNet(), attentionNet(8, 4, 5, 4, 9, 5), gqaNet()]) {
    const rng = new Rng(9);
    const a = net.params(rng);
    const b = net.params(rng);
    const r = weightMatching({ spec: net.spec, a, b }, { seed: 2 });
    validatePerms(net.spec, r.perms);
    const x = randn([6, net.inputs], rng);
    assert.ok(maxAbsDiff(noGrad(() => net.forward(r.aligned, x)), noGrad(() => net.forward(b, x))) < 1e-4);
    let dot0 = 0;
    let dot1 = 0;
    for (const [k, t] of a) for (let i = 0; i < t.size; i++) { dot0 += t.data[i] * b.get(k)!.data[i]; dot1 += t.data[i] * r.aligned.get(k)!.data[i]; }
    assert.ok(dot1 >= dot0 - 1e-6 * Math.abs(dot0), `⟨A, π(B)⟩ ${dot1} below ⟨A, B⟩ ${dot0}`);
  }
});

test('Sinkhorn re-basin (L2) recovers planted segment and block permutations exactly (soft application on v2 entries)', () => {
  for (const [net, seed] of [[concatNet(6, 5, 7, 4), 4], [attentionNet(), 5], [attentionNet(8, 4, 5, 4, 9, 5), 6], [gqaNet(), 7]] as const) {
    const { a, b, undo } = planted(net, seed);
    assert.ok(noGrad(() => weightCost('l2', a, b).item()) > 0.1, 'the planted permutations move weights');
    const r = sinkhornRebasin({ spec: net.spec, a, b }, { cost: 'l2', steps: 300 });
    assert.equal(r.log.at(-1)!.hardCost, 0);
    assertSamePerms(r.perms, undo, 'sinkhorn-l2');
  }
});

// ---------------------------------------------------------------- methods that need a Model

/**
 * An MLP 8-12-12-3 with a v2 spec for a subgroup of its symmetries: hidden layer 1 as two
 * segments (5 + 7 units), hidden layer 2 as 3 blocks of 4 with one inner permutation per block.
 */
function mlpV2(): { model: Model; spec: PermutationSpec } {
  const model = mlp({ sizes: [8, 12, 12, 3] });
  const v1 = model.permutationSpec();
  const ids = Object.keys(v1.perms);
  assert.deepEqual(ids, ['P_layers.0', 'P_layers.2']);
  const swap = (a: AxisPerm): AxisPerm => (a === 'P_layers.0' ? segmentsEntry(['P_s0', 'P_s1']) : a === 'P_layers.2' ? blockEntry('P_hb', ['P_w0', 'P_w1', 'P_w2']) : a);
  const axes = Object.fromEntries(Object.entries(v1.axes).map(([k, e]) => [k, e.map(swap)]));
  return { model, spec: { perms: { P_s0: 5, P_s1: 7, P_hb: 3, P_w0: 4, P_w1: 4, P_w2: 4 }, axes } };
}

function sameFunction(model: Model, spec: PermutationSpec, original: Params, aligned: Params, perms: Perms, what: string): void {
  validatePerms(spec, perms);
  const x = randn([16, ...model.inputShape], new Rng(3));
  const o = splitState(original);
  const p = splitState(aligned);
  const d = checkEquivalence(model, o.params, o.buffers, p.params, p.buffers, x).maxAbsDiff;
  assert.ok(d < 1e-5, `${what}: π(B) differs from B by ${d}`);
  assertSameTensors(noGrad(() => applyHard(spec, original, perms)), aligned, what);
}

const blobs = makeBlobs({ n: 240, dim: 8, classes: 3, seed: 2, spread: 1.5 });

test('STE and Sinkhorn-Mid run on a v2 spec: valid permutations, π(B) is B\'s function', () => {
  const { model, spec } = mlpV2();
  const [a, b] = [1, 2].map((seed) => trainModel({ model, data: blobs, epochs: 2, batchSize: 32, lr: 0.01, seed, criterion: 'ce' }).params);
  const ste = alignModels('ste', { spec, a, b }, { model, data: blobs, batchSize: 60, seed: 1 }, { epochs: 1 });
  sameFunction(model, spec, b, ste.aligned, ste.perms, 'ste');
  const mid = alignModels('sinkhorn-mid', { spec, a, b }, { model, data: blobs, batchSize: 60, seed: 1 }, { steps: 10 });
  sameFunction(model, spec, b, mid.aligned, mid.perms, 'sinkhorn-mid');
  assert.throws(() => activationMatching({ spec, a, b }, { model, data: blobs }), (e: Error) => e instanceof InputError && /has a segments entry \(concatenated channels\)/.test(e.message));
});

test('MergeMany on a v2 spec recovers planted permutations (per-block inner lists compose as a group)', () => {
  const { model, spec } = mlpV2();
  const base = model.init(new Rng(5)).params;
  const rng = new Rng(6);
  const plantedPerms = [randomPerms(spec, rng), randomPerms(spec, rng)];
  const models = [base, ...plantedPerms.map((p) => noGrad(() => applyHard(spec, base, p)))];
  const r = mergeModels('mergemany', { spec, models }, { seed: 7 });
  for (const [t, v] of base) assert.ok(maxAbsDiff(r.merged.get(t)!, v) < 1e-6, `merged.${t} is not the original`);
  plantedPerms.forEach((p, i) => {
    assertSamePerms(r.perms[i + 1], invertPerms(p, spec), `model ${i + 1}`);
    sameFunction(model, spec, models[i + 1], r.aligned[i + 1], r.perms[i + 1], `mergemany model ${i + 1}`);
  });
});

test('Sinkhorn barycenter (weights and data costs) on a v2 spec: valid permutations, each aligned model keeps its function', () => {
  const { model, spec } = mlpV2();
  const models = [1, 2, 3].map((seed) => model.init(new Rng(seed)).params);
  for (const cost of ['weights', 'data'] as const) {
    const r = mergeModels('sinkhorn', { spec, models }, { model, data: blobs, batchSize: 60, seed: 2 }, { cost, barycenter: { steps: 15 } });
    r.aligned.forEach((al, i) => sameFunction(model, spec, models[i], al, r.perms[i], `barycenter ${cost}, model ${i}`));
  }
  // The weights cost undoes planted permutations of one model.
  const base = models[0];
  const p = randomPerms(spec, new Rng(8));
  const r = sinkhornBarycenter({ spec, models: [base, noGrad(() => applyHard(spec, base, p))] }, { cost: 'weights', steps: 300 });
  assertSamePerms(r.perms[1], invertPerms(p, spec), 'barycenter');
});

// ---------------------------------------------------------------- the command line

test('CLI: spec check and align (in memory and --lazy) take a v2 spec file', async () => {
  const { spawnSync } = await import('node:child_process');
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { fileURLToPath } = await import('node:url');
  const { writeSafetensors, readSafetensors } = await import('../src/io/safetensors.js');
  const { recordsToState, stateToRecords } = await import('../src/io/checkpoint.js');
  const { specToJSON } = await import('../src/permutation/spec.js');
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const run = (...args: string[]) => spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', env: { ...process.env, NODE_NO_WARNINGS: '1' } });
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-spec-v2-'));
  try {
    const net = attentionNet(8, 4, 5, 4, 9, 5);
    const { a, b } = planted(net, 12);
    const aPath = join(dir, 'a.safetensors');
    const bPath = join(dir, 'b.safetensors');
    await writeSafetensors(aPath, stateToRecords(a), { dtype: 'F32' });
    await writeSafetensors(bPath, stateToRecords(b), { dtype: 'F32' });
    const specPath = join(dir, 'spec.json');
    writeFileSync(specPath, specToJSON(net.spec));
    const ok = run('spec', 'check', specPath, aPath, '--strict');
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /valid for .*\(7 permutations over 6 tensors, 2 segments and 7 block entries, every tensor covered\)/);
    for (const lazy of [false, true]) {
      const out = join(dir, `out-${lazy}.safetensors`);
      const r = run('align', aPath, bPath, '--spec', specPath, '--method', 'wm', '-o', out, '--quiet', ...(lazy ? ['--lazy'] : []));
      assert.equal(r.status, 0, r.stderr);
      assertSameTensors(a, recordsToState((await readSafetensors(out)).tensors), lazy ? 'align --lazy' : 'align');
    }
    // A wrong length is one line naming the tensor and the segments' sum; exit 3.
    const broken = JSON.parse(specToJSON(net.spec));
    broken.axes['qkv.bias'][0].segments.push({ size: 2 });
    writeFileSync(specPath, JSON.stringify(broken));
    const bad = run('spec', 'check', specPath, aPath);
    assert.equal(bad.status, 3);
    assert.match(bad.stderr, /tensor "qkv\.bias" axis 0: length 56 does not match the segments' total 58 \("P_h" 4 blocks × 5 \+ "P_h" 4 blocks × 5 \+ "P_h" 4 blocks × 4 \+ 2 unpermuted\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
