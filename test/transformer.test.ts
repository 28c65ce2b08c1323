/**
 * Transformers in the ModelGraph: the GPT-2-style decoder and the ViT-style encoder. Their specs
 * are derived from the graph (residual stream, MLP hidden units, heads as blocks with per-head
 * query/key and value/output dimensions), and every element of the group they describe leaves
 * the function unchanged; what is not a symmetry (an op mixing a head's dimensions, a per-head
 * bias) is refused by fixing the group. Gradients of the new ops against finite differences; the
 * character data set; weight matching recovers planted head permutations.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { noGrad, Rng, Tensor } from '../src/core/index.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { charId, LICENSE_TEST_FILES, LICENSE_TEXT_DIR, loadLicenseText, TEXT_VOCAB } from '../src/data/text.js';
import { activationMatching } from '../src/methods/activation-matching.js';
import { weightMatching } from '../src/methods/weight-matching.js';
import { deriveSpec, GraphBuilder, gpt, importedModel, initGraph, runGraph, vit, type Model, type ModelGraph } from '../src/models/index.js';
import { applyHard, invertPerms, randomPerms, type Perms } from '../src/permutation/apply.js';
import { fixBlocks, isBlockAxis, validateSpec, type BlockAxis, type PermutationSpec } from '../src/permutation/spec.js';
import type { Params } from '../src/state/params.js';
import { trainModel } from '../src/training/train.js';
import { gradcheck } from './helpers/gradcheck.js';

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

/** A batch of inputs: token ids for a GPT, N(0, 1) pixels otherwise. */
function batch(model: Model, n: number, rng: Rng, vocab = 0): Tensor {
  const size = model.inputShape.reduce((a, b) => a * b, 1);
  const x = new Tensor(new Float32Array(n * size), [n, ...model.inputShape]);
  if (vocab) for (let i = 0; i < x.size; i++) x.data[i] = Math.floor(rng.uniform() * vocab);
  else rng.fillNormal(x.data, 0, 1);
  return x;
}

/** Random weights everywhere (LayerNorm affine too), so no symmetry hides behind a constant. */
function randomState(model: Model, seed: number): Params {
  const rng = new Rng(seed);
  const { params } = model.init(rng);
  for (const t of params.values()) rng.fillNormal(t.data, 0, 0.5);
  return params;
}

/** Max |f(π(θ)) − f(θ)| for a random group element; also that the element moved every kind of permutation. */
function groupAction(model: Model, spec: PermutationSpec, seed: number, vocab = 0): number {
  const params = randomState(model, seed);
  const rng = new Rng(seed + 100);
  const perms = randomPerms(spec, rng);
  const moved = Object.values(perms).filter((p) => p.some((v, i) => v !== i)).length;
  assert.ok(moved >= Object.keys(perms).length / 2, `only ${moved} permutations moved`);
  const x = batch(model, 3, rng, vocab);
  const y = model.forward(params, x, { training: false });
  const yp = model.forward(applyHard(spec, params, perms), x, { training: false });
  return maxDiff(y.data, yp.data);
}

const G = { vocab: 13, context: 6, width: 12, layers: 2, heads: 3 };
const V = { imageShape: [1, 8, 8] as [number, number, number], patch: 4, classes: 5, width: 12, layers: 2, heads: 3 };

test('GPT spec from the graph: one residual permutation (tied embedding, positions, norms), per layer heads × per-head q/k and v/o dimensions, MLP units', () => {
  const model = gpt(G);
  const spec = model.permutationSpec();
  assert.deepEqual(validateSpec(spec, randomState(model, 1), { strict: true }), []);
  const R = spec.axes['wte.weight'][1] as string;
  assert.equal(spec.perms[R], G.width);
  assert.deepEqual(spec.axes['wte.weight'], [null, R]); // the vocabulary never moves: the ids and the tied head's logits
  assert.deepEqual(spec.axes['wpe.weight'], [null, R]);
  for (const t of ['ln_f.weight', 'ln_f.bias', 'blocks.1.ln_2.weight', 'blocks.0.attn.proj.bias', 'blocks.1.mlp.proj.bias']) assert.deepEqual(spec.axes[t], [R], t);
  const d = G.width / G.heads;
  const perLayer = 1 /* mlp */ + 1 /* heads */ + 2 * G.heads /* q/k and v/o dims per head */;
  assert.equal(Object.keys(spec.perms).length, 1 + G.layers * perLayer);
  for (let l = 0; l < G.layers; l++) {
    const p = `blocks.${l}`;
    const [qRows, qCols] = spec.axes[`${p}.attn.q.weight`] as [BlockAxis, string];
    const [kRows] = spec.axes[`${p}.attn.k.weight`] as [BlockAxis];
    const [vRows] = spec.axes[`${p}.attn.v.weight`] as [BlockAxis];
    const [oRows, oCols] = spec.axes[`${p}.attn.proj.weight`] as [string, BlockAxis];
    assert.ok(isBlockAxis(qRows) && isBlockAxis(vRows));
    assert.equal(qCols, R);
    assert.equal(oRows, R);
    assert.equal(spec.perms[qRows.blocks], G.heads);
    assert.deepEqual(kRows, qRows, 'q and k: the same heads and the same per-head dimensions');
    assert.equal(vRows.blocks, qRows.blocks, 'v moves with the heads of q and k');
    assert.deepEqual(oCols, vRows, 'the output projection reads v\'s head dimensions');
    const inner = [...(qRows.within as string[]), ...(vRows.within as string[])];
    assert.equal(new Set(inner).size, 2 * G.heads, 'one inner permutation per head for q/k and one for v/o');
    assert.ok(inner.every((id) => spec.perms[id] === d));
    const F = spec.axes[`${p}.mlp.fc.weight`][0] as string;
    assert.equal(spec.perms[F], 4 * G.width);
    assert.deepEqual(spec.axes[`${p}.mlp.proj.weight`], [R, F]);
  }
  // A different layer has its own heads.
  assert.notEqual((spec.axes['blocks.0.attn.q.weight'][0] as BlockAxis).blocks, (spec.axes['blocks.1.attn.q.weight'][0] as BlockAxis).blocks);
});

test('ViT spec from the graph: the patch embedding opens the residual stream (class token, positions); heads as in GPT; the head reads it', () => {
  const model = vit(V);
  const spec = model.permutationSpec();
  assert.deepEqual(validateSpec(spec, randomState(model, 2), { strict: true }), []);
  const R = spec.axes['patch_embed.weight'][0] as string;
  assert.deepEqual(spec.axes['cls_token'], [null, null, R]);
  assert.deepEqual(spec.axes['pos_embed'], [null, null, R]);
  assert.deepEqual(spec.axes['head.weight'], [null, R]);
  assert.ok(isBlockAxis(spec.axes['blocks.1.attn.v.weight'][0]));
});

test('a random element of the derived group leaves GPT and ViT outputs unchanged (≤ 1e-4), over several draws', () => {
  for (const seed of [1, 2, 3]) {
    const g = gpt({ ...G, heads: seed === 3 ? 2 : 3 });
    assert.ok(groupAction(g, g.permutationSpec(), seed, G.vocab) <= 1e-4, `gpt seed ${seed}`);
    const v = vit({ ...V, heads: seed === 3 ? 4 : 3 });
    assert.ok(groupAction(v, v.permutationSpec(), seed) <= 1e-4, `vit seed ${seed}`);
  }
});

test('moving the heads is needed: moving q/k dimensions across heads, or v without o, changes the function', () => {
  const model = gpt(G);
  const spec = model.permutationSpec();
  const params = randomState(model, 4);
  const x = batch(model, 2, new Rng(5), G.vocab);
  const y = model.forward(params, x, { training: false });
  // Permute q's output rows by a flat permutation that crosses heads (k left as it is): not a symmetry.
  const broken: PermutationSpec = { perms: { ...spec.perms, X: G.width }, axes: { ...spec.axes, 'blocks.0.attn.q.weight': ['X', null], 'blocks.0.attn.q.bias': ['X'] } };
  const identity: Perms = Object.fromEntries(Object.entries(spec.perms).map(([id, n]) => [id, Int32Array.from({ length: n }, (_, i) => i)]));
  const yb = model.forward(applyHard(broken, params, { ...identity, X: Int32Array.from([...Array(G.width).keys()].reverse()) }), x, { training: false });
  assert.ok(maxDiff(y.data, yb.data) > 1e-3);
  // The derived group's element with identity heads is a symmetry too (and the ablation's spec).
  const fixed = fixBlocks(spec);
  assert.ok(!Object.keys(fixed.perms).some((id) => id.endsWith('.heads')));
  assert.deepEqual(validateSpec(fixed, params, { strict: true }), []);
  assert.ok(groupAction(model, fixed, 6, G.vocab) <= 1e-4);
});

/** One attention block on [T, D] tokens with `extra` applied to the per-head tensors; for symmetry refusals. */
function attentionGraph(D: number, H: number, T: number, extra: (b: GraphBuilder, q: string) => string, scores?: (b: GraphBuilder, s: string) => string): ModelGraph {
  const d = D / H;
  const b = new GraphBuilder();
  const x = b.input([T, D]);
  const heads = (name: string, perm: number[]) => {
    const y = b.linear(name, x, D, D);
    const r = b.node({ op: 'reshape', id: `${name}.r`, input: y, shape: [T, H, d] });
    return b.node({ op: 'transpose', id: `${name}.t`, input: r, perm });
  };
  const q = extra(b, heads('q', [1, 0, 2]));
  const k = b.node({ op: 'transpose', id: 'k.tt', input: extra(b, heads('k', [1, 0, 2])), perm: [0, 2, 1] });
  const v = heads('v', [1, 0, 2]);
  let s = b.node({ op: 'matmul', id: 's', inputs: [q, k] });
  if (scores) s = scores(b, s);
  const w = b.node({ op: 'softmax', id: 'w', input: s, axis: 2, log: false });
  const c = b.node({ op: 'matmul', id: 'c', inputs: [w, v] });
  const back = b.node({ op: 'reshape', id: 'm', input: b.node({ op: 'transpose', id: 'ct', input: c, perm: [1, 0, 2] }), shape: [T, D] });
  const o = b.linear('o', back, D, D);
  const hid = b.linear('fc', b.add('res', [x, o]), D, D);
  b.output(b.node({ op: 'reshape', id: 'flat', input: b.linear('out', hid, D, 2), shape: [T * 2] }));
  return b.build();
}

test('what is not a symmetry is refused: a mixing of head dimensions (RoPE-like) keeps them, a per-head bias (ALiBi-like) keeps the heads', () => {
  const [D, H, T] = [8, 2, 5];
  const d = D / H;
  const rng = new Rng(7);
  const rot = Array.from({ length: d * d }, () => rng.normal());
  // q·R, k·R with a fixed d×d matrix on the head dimension: rotary embeddings do this per position.
  const rope = attentionGraph(D, H, T, (b, t) => b.node({ op: 'matmul', id: `${t}.rot`, inputs: [t, b.node({ op: 'constant', id: `${t}.R`, shape: [d, d], values: rot })] }));
  // A constant [H, T, T] added to the scores: a bias per head, as ALiBi.
  const bias = Array.from({ length: H * T * T }, () => rng.normal());
  const alibi = attentionGraph(D, H, T, (_b, t) => t, (b, s) => b.node({ op: 'binary', id: 'alibi', inputs: [s, b.node({ op: 'constant', id: 'slopes', shape: [H, T, T], values: bias })], fn: 'add' }));
  for (const [name, graph, want] of [['rope', rope, 'heads only'], ['alibi', alibi, 'dimensions only']] as const) {
    const spec = deriveSpec(graph);
    const q = spec.axes['q.weight'][0];
    const v = spec.axes['v.weight'][0];
    if (want === 'heads only') {
      assert.ok(typeof q === 'object' && q !== null && 'perm' in q && q.inner === d, `${name}: q moves whole heads only, got ${JSON.stringify(q)}`);
      assert.ok(isBlockAxis(v), `${name}: v/o dimensions still move inside heads`);
    } else {
      assert.ok(typeof q === 'object' && q !== null && 'segments' in q && q.segments.length === H, `${name}: heads fixed, each head's q/k dimensions permuted, got ${JSON.stringify(q)}`);
    }
    const model = importedModel({ graph, name });
    assert.ok(groupAction(model, spec, 8) <= 1e-4, `${name}: the derived group is a symmetry`);
  }
});

test('gradients of the token lookup and of a whole GPT match finite differences (float64)', () => {
  const model = gpt({ vocab: 7, context: 4, width: 4, layers: 1, heads: 2 });
  const graph = model.graph();
  const { params } = initGraph(graph, new Rng(9), 'float64');
  for (const t of params.values()) new Rng(10).fillNormal(t.data, 0, 0.5);
  const names = ['wte.weight', 'wpe.weight', 'blocks.0.attn.q.weight', 'blocks.0.attn.v.bias', 'blocks.0.ln_1.weight', 'blocks.0.mlp.fc.weight'];
  const x = new Tensor(Float64Array.from([0, 3, 6, 3, 1, 1, 2, 5]), [2, 4]);
  gradcheck((...ws) => {
    const p = new Map(params);
    names.forEach((k, i) => p.set(k, ws[i]));
    return runGraph(graph, p, x, { training: false });
  }, names.map((k) => { const t = params.get(k)!; return new Tensor(Float64Array.from(t.data), [...t.shape], true); }), { rtol: 1e-4, atol: 1e-6 });
  // Ids outside the vocabulary are bad input, named.
  assert.throws(() => runGraph(graph, params, new Tensor(Float64Array.from([0, 1, 7, 2]), [1, 4]), { training: false }), /lookup "wte.lookup" got id 7/);
});

test('weight matching recovers planted head, per-head and residual permutations of a GPT exactly', () => {
  const model = gpt({ ...G, layers: 1 });
  const spec = model.permutationSpec();
  const a = randomState(model, 11);
  const planted = randomPerms(spec, new Rng(12));
  const b = noGrad(() => applyHard(spec, a, planted));
  const r = weightMatching({ spec, a, b }, { seed: 0 });
  // The inverse of (heads π, inner σ_i) is (π⁻¹, σ_π⁻¹(k)⁻¹): invertPerms reindexes the inner ones.
  const want = invertPerms(planted, spec);
  for (const id of Object.keys(spec.perms)) assert.deepEqual(Array.from(r.perms[id]), Array.from(want[id]), id);
});

test('licence text: windows and next-character labels, held-out documents, a GPT learns from them', () => {
  const train = loadLicenseText('train', { context: 16 });
  const testSet = loadLicenseText('test', { context: 16 });
  assert.ok(train.n > 1000 && testSet.n > 100);
  assert.equal(TEXT_VOCAB.length, 96);
  assert.equal(charId('\n'), 0);
  assert.equal(TEXT_VOCAB[charId('G')], 'G');
  for (const ds of [train, testSet]) for (let i = 0; i < 50; i++) for (let t = 0; t + 1 < 16; t++) assert.equal(ds.y[i * 16 + t], ds.x[i * 16 + t + 1]);
  // The test split is the held-out documents: its first window is the start of the first of them.
  const heldOut = readFileSync(join(LICENSE_TEXT_DIR, [...LICENSE_TEST_FILES].sort()[0]), 'latin1');
  assert.deepEqual(Array.from(testSet.x.subarray(0, 16)), [...heldOut.slice(0, 16)].map(charId));
  assert.notDeepEqual(Array.from(train.x.subarray(0, 16)), Array.from(testSet.x.subarray(0, 16)));
  const model = gpt({ vocab: 96, context: 16, width: 16, layers: 1, heads: 2 });
  const small = { ...train, n: 256, x: train.x.subarray(0, 256 * 16), y: train.y.subarray(0, 256 * 16) };
  const r = trainModel({ model, data: small, epochs: 3, batchSize: 32, lr: 3e-3, seed: 0, criterion: 'ce' });
  const first = r.history[0].trainLoss;
  const last = r.history.at(-1)!.trainLoss;
  assert.ok(first < Math.log(96) + 0.5 && last < first - 0.3, `loss ${first} → ${last}`);
  assert.ok(r.history.at(-1)!.trainAcc! > 0 && r.history.at(-1)!.trainAcc! < 1);
});

test('activation matching with heads (two-level: heads by their best inner matchings) recovers planted permutations of a GPT and a ViT', () => {
  for (const model of [gpt({ ...G, layers: 1 }), vit({ ...V, layers: 1 })]) {
    const spec = model.permutationSpec();
    const a = randomState(model, 13);
    const planted = randomPerms(spec, new Rng(14));
    const b = noGrad(() => applyHard(spec, a, planted));
    const x = batch(model, 64, new Rng(15), model.name.startsWith('gpt') ? G.vocab : 0);
    const data = { name: 'random', x: x.data as Float32Array, sampleShape: model.inputShape, y: new Int32Array(64), n: 64 };
    const r = activationMatching({ spec, a, b }, { model, data, statistic: 'correlation' });
    const want = invertPerms(planted, spec);
    for (const id of Object.keys(spec.perms)) assert.deepEqual(Array.from(r.perms[id]), Array.from(want[id]), `${model.name}: ${id}`);
  }
});
