/**
 * Permutation-spec format version 2: segments and block entries. The JSON round trip and its
 * version, every malformed entry named in one line, permToAxes' offsets and roles, the index
 * convention new[i·d + j] = old[π[i]·d + σ_i[j]], group inverse and composition, soft = hard, the
 * soft gradient, and the function of a two-branch concat network and of a 2-head attention layer
 * (written with F ops here) kept by random group elements.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { F, noGrad, randn, Rng, Tensor } from '../src/core/index.js';
import {
  applyHard, applySoft, composePerms, entryIndex, identityPerms, invertPerms, permutationMatrices, permutationMatrix, randomPerms, withinLists,
} from '../src/permutation/apply.js';
import {
  blockEntry, checkSpec, concatEntry, entryPermIds, permToAxes, renameEntry, segmentsEntry, specFromJSON, specToJSON, specVersion, validateSpec,
  type PermutationSpec,
} from '../src/permutation/spec.js';
import type { Params } from '../src/state/params.js';
import { attentionNet, concatNet, gqaNet } from './helpers/spec-v2-nets.js';

const shapesOf = (p: Params) => new Map([...p].map(([k, t]) => [k, { shape: t.shape }]));

function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(a.data[i] - b.data[i]));
  return m;
}

function assertSameParams(a: Params, b: Params, tol = 0, what = ''): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [k, t] of a) assert.ok(maxDiff(t, b.get(k)!) <= tol, `${what} ${k}: differs by ${maxDiff(t, b.get(k)!)}`);
}

const { spec: CONCAT_SPEC, params: concatParams, forward: concatForward } = concatNet();
const { spec: ATTENTION_SPEC, params: attentionParams, forward: attentionForward } = attentionNet();
const { spec: GQA_SPEC, params: gqaParams, forward: gqaForward } = gqaNet();

// ------------------------------------------------------------------ format

test('v2 JSON: round trip; version 2 only when a v2 entry is used; the importer helpers', () => {
  for (const spec of [CONCAT_SPEC, ATTENTION_SPEC, GQA_SPEC]) {
    assert.deepEqual(checkSpec(spec), []);
    assert.equal(specVersion(spec), 2);
    const text = specToJSON(spec);
    assert.equal(JSON.parse(text).version, 2);
    assert.deepEqual(specFromJSON(text), spec);
    assert.deepEqual(specFromJSON(JSON.parse(text)), spec);
  }
  const v1: PermutationSpec = { perms: { P: 3 }, axes: { w: ['P', null], b: ['P'] } };
  assert.equal(JSON.parse(specToJSON(v1)).version, 1);
  // The version must be the one specToJSON writes.
  const o = JSON.parse(specToJSON(CONCAT_SPEC));
  o.version = 1;
  assert.throws(() => specFromJSON(o), /"version" must be 2, got 1 \(the spec uses block or segments entries\)/);
  assert.deepEqual(entryPermIds(ATTENTION_SPEC.axes['qkv.weight'][0]), ['P_h', 'P_qk', 'P_v0', 'P_v1']);
  assert.deepEqual(renameEntry(ATTENTION_SPEC.axes['out.weight'][1], (id) => `x.${id}`), { blocks: 'x.P_h', within: ['x.P_v0', 'x.P_v1'] });
  // concatEntry: the simplest entry for a concatenated axis.
  assert.equal(concatEntry([{ size: 2 }, { size: 3 }]), null);
  assert.equal(concatEntry(['P_a']), 'P_a');
  assert.deepEqual(concatEntry([{ perm: 'P_b', inner: 4 }]), { perm: 'P_b', inner: 4 });
  assert.deepEqual(concatEntry(['P_a', { size: 2 }, { size: 3 }, blockEntry('H', 'D')]), { segments: ['P_a', { size: 5 }, { blocks: 'H', within: 'D' }] });
  assert.deepEqual(withinLists(ATTENTION_SPEC), [{ blocks: 'P_h', within: ['P_v0', 'P_v1'] }]);
  assert.deepEqual(validateSpec(CONCAT_SPEC, shapesOf(concatParams(new Rng(0)))), []);
  assert.deepEqual(validateSpec(ATTENTION_SPEC, shapesOf(attentionParams(new Rng(0))), { strict: true }), []);
  assert.deepEqual(validateSpec(GQA_SPEC, shapesOf(gqaParams(new Rng(0))), { strict: true }), []);
  // repeat survives renaming and the round trip; repeat 1 is the plain block entry.
  assert.deepEqual(renameEntry(GQA_SPEC.axes['out.weight'][1], (id) => `x.${id}`), { blocks: 'x.P_kv', within: ['x.P_vo0', 'x.P_vo1'], repeat: 3 });
  assert.deepEqual(blockEntry('H', 'D', 1), { blocks: 'H', within: 'D' });
});

test('checkSpec and validateSpec name every malformed v2 entry in one line', () => {
  const bad = (axes: Record<string, unknown[]>, perms: Record<string, number> = { A: 2, B: 3, C: 3, D: 4 }) => checkSpec({ perms, axes } as PermutationSpec).join('\n');
  const cases: [Record<string, unknown[]>, RegExp][] = [
    [{ w: [{ segments: ['A', null] }] }, /axes\["w"\]\[0\]\.segments\[1\]: an unpermuted segment needs its length: \{"size": n\}/],
    [{ w: [{ segments: [] }] }, /axes\["w"\]\[0\]\.segments: must be a non-empty array/],
    [{ w: [{ segments: ['A', { segments: ['B'] }] }] }, /segments\[1\]: segments cannot nest/],
    [{ w: [{ segments: ['A', { size: 0 }] }] }, /segments\[1\]\.size: must be a positive integer, got 0/],
    [{ w: [{ segments: ['Z'] }] }, /axes\["w"\]\[0\]\.segments\[0\]: unknown permutation "Z"/],
    [{ w: [{ blocks: 'A', within: 'Z' }] }, /axes\["w"\]\[0\]: unknown permutation "Z"/],
    [{ w: [{ blocks: 'A', within: ['B'] }] }, /within: lists 1 inner permutations but "A" has size 2 \(one per block\)/],
    [{ w: [{ blocks: 'A', within: ['B', 'D'] }] }, /within: the inner permutations have different sizes \("B" 3, "D" 4\)/],
    [{ w: [{ blocks: 'A', within: ['B', 'B'] }] }, /within: permutation "B" is listed twice/],
    [{ w: [{ blocks: 'B', within: 'B' }] }, /"B" permutes both the blocks and inside them/],
    [{ w: [{ blocks: 'A', within: [] }] }, /within: must be a permutation id or a non-empty list/],
    [{ w: [{ blocks: 'A', within: 'B', inner: 2 }] }, /unexpected field\(s\) inner/],
    [{ w: [{ blocks: 'A', within: 'B', repeat: 0 }] }, /axes\["w"\]\[0\]\.repeat: must be a positive integer \(sub-blocks per block\), got 0/],
    [{ w: [{ blocks: 'A', within: 'B', repeat: 1.5 }] }, /\.repeat: must be a positive integer/],
    [{ w: [{ blocks: 'A', within: 'B', repeat: '2' }] }, /\.repeat: must be a positive integer \(sub-blocks per block\), got "2"/],
    [{ w: [{ blocks: 'A', within: ['B', 'C'] }], v: ['B'] }, /axes\["v"\]\[0\]: permutation "B" is a per-block inner permutation at axes\["w"\]\[0\], and may not also be used as a plain permutation/],
    [{ w: [{ blocks: 'A', within: ['B', 'C'] }], v: [{ blocks: 'A', within: ['C', 'B'] }] }, /may not also be used in another "within" list/],
  ];
  for (const [axes, re] of cases) {
    const got = bad(axes);
    assert.match(got, re);
    for (const line of got.split('\n')) assert.ok(!line.includes('\n'));
  }
  // The same inner list at two places (V and O of one attention layer) is fine.
  assert.equal(bad({ w: [{ blocks: 'A', within: ['B', 'C'] }], v: [null, { blocks: 'A', within: ['B', 'C'] }], u: ['D'] }), '');
  // Lengths against tensors.
  const perms = { A: 2, B: 3, C: 3, D: 4 };
  const spec = { perms, axes: { w: [{ segments: ['D', { perm: 'A', inner: 2 }, { size: 5 }] }], v: [{ blocks: 'A', within: 'D' }], u: [{ blocks: 'A', within: ['B', 'C'] }], r: [{ blocks: 'A', within: 'D', repeat: 3 }] } } as PermutationSpec;
  const problems = validateSpec(spec, new Map([['w', { shape: [12] }], ['v', { shape: [7] }], ['u', { shape: [6] }], ['r', { shape: [8] }]]));
  assert.deepEqual(problems, [
    'tensor "w" axis 0: length 12 does not match the segments\' total 13 ("D" 4 + "A" 2 × inner 2 + 5 unpermuted)',
    'tensor "v" axis 0: length 7 does not match the block entry ("A" 2 blocks × 4 = 8)',
    'tensor "r" axis 0: length 8 does not match the block entry ("A" 2 blocks × repeat 3 × 4 = 24)',
  ]);
});

test('permToAxes: segments carry their offset, block entries their role', () => {
  const inv = permToAxes(ATTENTION_SPEC);
  const qkv = (id: string) => inv[id].filter((r) => r.name === 'qkv.weight');
  assert.deepEqual(qkv('P_h').map((r) => [r.offset, r.inner, r.block!.role]), [[0, 3, 'blocks'], [6, 3, 'blocks'], [12, 2, 'blocks']]);
  assert.deepEqual(qkv('P_qk').map((r) => [r.offset, r.block!.role, r.block!.index]), [[0, 'within', undefined], [6, 'within', undefined]]);
  assert.deepEqual(qkv('P_v1').map((r) => [r.offset, r.block!.index, r.block!.count, r.block!.size]), [[12, 1, 2, 2]]);
  assert.deepEqual(inv.R.map((r) => `${r.name}:${r.axis}`), ['embed:0', 'qkv.weight:1', 'out.weight:0', 'head.weight:1']);
  assert.deepEqual(inv.P_h.find((r) => r.name === 'gate'), { name: 'gate', axis: 0, inner: 1 });
  const cat = permToAxes(CONCAT_SPEC);
  assert.deepEqual(cat.P_a, [{ name: 'w1', axis: 0, inner: 1 }, { name: 'b1', axis: 0, inner: 1 }, { name: 'w3', axis: 1, inner: 1, offset: 0 }]);
  assert.deepEqual(cat.P_b.at(-1), { name: 'w3', axis: 1, inner: 2, offset: 6 });
  // A repeated block: the blocks role's unit is r·d positions; Q's segment is G·r·dk = 18 long.
  const gqa = permToAxes(GQA_SPEC);
  assert.deepEqual(gqa.P_kv.filter((r) => r.name === 'qkv.weight').map((r) => [r.offset, r.inner, r.block!.repeat]), [[0, 9, 3], [18, 3, 1], [24, 2, 1]]);
  assert.deepEqual(gqa.P_vo1.filter((r) => r.name === 'out.weight').map((r) => [r.axis, r.block!.index, r.block!.repeat]), [[1, 1, 3]]);
});

// ------------------------------------------------------------------ applying

test('index convention: new[i·d + j] = old[π[i]·d + σ_i[j]], segments end to end', () => {
  const spec: PermutationSpec = { perms: { H: 2, S: 3, T0: 3, T1: 3, A: 2 }, axes: { w: [blockEntry('H', 'S')], v: [blockEntry('H', ['T0', 'T1'])], u: [segmentsEntry([{ size: 1 }, { perm: 'A', inner: 2 }, blockEntry('H', 'S')])] } };
  const perms = { H: Int32Array.from([1, 0]), S: Int32Array.from([2, 0, 1]), T0: Int32Array.from([1, 2, 0]), T1: Int32Array.from([0, 2, 1]), A: Int32Array.from([1, 0]) };
  assert.deepEqual(Array.from(entryIndex(spec, spec.axes.w[0], perms)), [5, 3, 4, 2, 0, 1]);
  assert.deepEqual(Array.from(entryIndex(spec, spec.axes.v[0], perms)), [4, 5, 3, 0, 2, 1]);
  assert.deepEqual(Array.from(entryIndex(spec, spec.axes.u[0], perms)), [0, 3, 4, 1, 2, 5 + 5, 5 + 3, 5 + 4, 5 + 2, 5 + 0, 5 + 1]);
  const t = new Tensor(Float32Array.from({ length: 6 }, (_, i) => i), [6]);
  assert.deepEqual(Array.from(applyHard(spec, new Map([['w', t]]), perms).get('w')!.data), [5, 3, 4, 2, 0, 1]);
  // repeat 2: new[(i·2 + s)·3 + j] = old[(π[i]·2 + s)·3 + σ_i[j]], each sub-block by its block's σ.
  const rep: PermutationSpec = { perms: { H: 2, T0: 3, T1: 3 }, axes: { x: [blockEntry('H', ['T0', 'T1'], 2)] } };
  assert.deepEqual(Array.from(entryIndex(rep, rep.axes.x[0], perms)), [7, 8, 6, 10, 11, 9, 0, 2, 1, 3, 5, 4]);
});

test('group inverse and composition of v2 permutations (per-block inner lists included)', () => {
  const rng = new Rng(3);
  for (const [spec, params] of [[ATTENTION_SPEC, attentionParams(rng)], [CONCAT_SPEC, concatParams(rng)], [GQA_SPEC, gqaParams(rng)]] as const) {
    const p1 = randomPerms(spec, rng);
    const p2 = randomPerms(spec, rng);
    const once = applyHard(spec, applyHard(spec, params, p1), p2);
    assertSameParams(applyHard(spec, params, composePerms(p1, p2, spec)), once, 0, 'compose');
    assertSameParams(applyHard(spec, applyHard(spec, params, p1), invertPerms(p1, spec)), params, 0, 'inverse');
    assertSameParams(applyHard(spec, params, composePerms(p1, invertPerms(p1, spec), spec)), params, 0, 'p·p⁻¹');
  }
  // Without the spec, per-block inner permutations do not invert id by id (so the spec matters).
  const p = randomPerms(ATTENTION_SPEC, new Rng(11));
  p.P_h = Int32Array.from([1, 0]);
  p.P_v0 = Int32Array.from([1, 0]);
  p.P_v1 = Int32Array.from([0, 1]);
  const x = attentionParams(new Rng(4));
  const wrong = applyHard(ATTENTION_SPEC, applyHard(ATTENTION_SPEC, x, p), invertPerms(p));
  assert.ok(maxDiff(wrong.get('out.weight')!, x.get('out.weight')!) > 0);
});

test('applySoft with 0/1 matrices equals applyHard on v2 entries; soft matrices mix; hard names use the argmax', () => {
  const rng = new Rng(5);
  for (const [spec, params] of [[ATTENTION_SPEC, attentionParams(rng)], [CONCAT_SPEC, concatParams(rng)], [GQA_SPEC, gqaParams(rng)]] as const) {
    const perms = randomPerms(spec, rng);
    assertSameParams(applySoft(spec, params, permutationMatrices(perms)), applyHard(spec, params, perms), 0);
    const P: Record<string, Tensor> = {};
    for (const [id, a] of Object.entries(perms)) {
      const m = permutationMatrix(a);
      for (let k = 0; k < m.size; k++) m.data[k] = 0.6 * m.data[k] + 0.4 / a.length;
      P[id] = m;
    }
    assertSameParams(applySoft(spec, params, P, { hard: () => true }), applyHard(spec, params, perms), 0);
  }
});

test('applySoft is differentiable w.r.t. P on v2 entries: finite differences in float64', () => {
  const rng = new Rng(6);
  for (const [spec, params] of [[ATTENTION_SPEC, attentionParams(rng, 'float64')], [CONCAT_SPEC, concatParams(rng, 'float64')], [GQA_SPEC, gqaParams(rng, 'float64')]] as const) {
    const R = new Map([...params].map(([k, t]) => [k, randn(t.shape, rng, 1, 'float64')]));
    const P: Record<string, Tensor> = {};
    for (const [p, n] of Object.entries(spec.perms)) P[p] = randn([n, n], rng, 1, 'float64').requireGrad();
    const loss = () => {
      let s: Tensor | null = null;
      // A nonlinear read-out, so products of two matrices (P_blocks ⊗ P_within) are checked too.
      for (const [k, t] of applySoft(spec, params, P)) {
        const term = F.sum(F.square(F.mul(t, R.get(k)!)));
        s = s ? F.add(s, term) : term;
      }
      return s!;
    };
    loss().backward();
    const eps = 1e-6;
    let worst = 0;
    for (const [p, m] of Object.entries(P)) {
      assert.ok(m.grad, `gradient reaches ${p}`);
      for (let k = 0; k < m.size; k++) {
        const v = m.data[k];
        m.data[k] = v + eps;
        const up = noGrad(loss).item();
        m.data[k] = v - eps;
        const down = noGrad(loss).item();
        m.data[k] = v;
        const num = (up - down) / (2 * eps);
        worst = Math.max(worst, Math.abs(num - m.grad!.data[k]) / Math.max(1, Math.abs(num)));
      }
    }
    assert.ok(worst < 1e-6, `max relative |analytic − numeric| = ${worst}`);
  }
});

test('random v2 group elements keep the function: two-branch concat network, 2-head attention, grouped-query attention', () => {
  const rng = new Rng(7);
  const cases = [
    { spec: CONCAT_SPEC, params: concatParams(rng), forward: concatForward, x: randn([6, 5], rng) },
    { spec: ATTENTION_SPEC, params: attentionParams(rng), forward: attentionForward, x: randn([5, 5], rng) },
    { spec: GQA_SPEC, params: gqaParams(rng), forward: gqaForward, x: randn([5, 5], rng) },
  ];
  for (const { spec, params, forward, x } of cases) {
    const y = noGrad(() => forward(params, x));
    // float32 rounding grows with the outputs (|y| reaches ~100 for the GQA net): 1e-5 up to |y| = 10.
    const tol = 1e-6 * Math.max(10, ...Array.from(y.data, Math.abs));
    for (let trial = 0; trial < 5; trial++) {
      const perms = randomPerms(spec, rng);
      const moved = applyHard(spec, params, perms);
      assert.ok([...params].some(([k, t]) => maxDiff(t, moved.get(k)!) > 0), 'the permutation moved weights');
      const d = maxDiff(noGrad(() => forward(moved, x)), y);
      assert.ok(d < tol, `max abs diff ${d} (tolerance ${tol})`);
    }
    // A mistake is caught: the inner permutations alone applied id by id to a wrong block (not a symmetry).
    const perms = identityPerms(spec);
    const first = Object.keys(spec.perms).find((id) => spec.perms[id] > 1 && id !== 'R')!;
    perms[first] = Int32Array.from(perms[first]).reverse();
    const broken = new Map(params);
    const moved = applyHard(spec, params, perms);
    // Permute only one of the tensors the permutation touches: the function must change.
    const victim = [...params.keys()].find((k) => maxDiff(params.get(k)!, moved.get(k)!) > 0)!;
    broken.set(victim, moved.get(victim)!);
    assert.ok(maxDiff(noGrad(() => forward(broken, x)), y) > 1e-3, `permuting only ${victim} should change the function`);
  }
});
