/**
 * Hugging Face presets (io/hf-presets.ts): for each layout, a small random checkpoint in that exact
 * layout (names, shapes, Conv1D [in, out] storage, buffers), a forward pass written here
 * (test/helpers/hf-forward.ts), and a random element of the preset's group applied with
 * applyHard: the outputs stay the same (max abs diff ≤ 1e-4), while leaving one tensor
 * unpermuted changes them. Bad input (heads not dividing the width, unknown names, RoPE with a
 * request to permute inside heads, ALiBi with moving heads) is an InputError naming the field.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { noGrad, Tensor } from '../src/core/tensor.js';
import { InputError } from '../src/errors.js';
import { hfPreset, specForSibling, type HeadMode } from '../src/io/hf-presets.js';
import { weightMatching } from '../src/methods/weight-matching.js';
import { weightMatchingLazy, type TensorSource } from '../src/methods/weight-matching-lazy.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import { blockEntry, type PermutationSpec } from '../src/permutation/spec.js';
import type { Params } from '../src/state/params.js';
import { bertForward, gpt2Forward, llamaForward, maxAbsDiff, vitForward } from './helpers/hf-forward.js';

type Shapes = Map<string, { shape: number[] }>;

function builder(seed: number) {
  const rng = new Rng(seed);
  const state: Params = new Map();
  const put = (name: string, shape: number[], fill: (i: number) => number = () => rng.normal(0, 0.5)) => {
    const n = shape.reduce((a, b) => a * b, 1);
    state.set(name, new Tensor(Float32Array.from({ length: n }, (_, i) => fill(i)), shape));
  };
  const norm = (name: string, d: number, bias = true) => {
    put(`${name}.weight`, [d], () => 1 + rng.normal(0, 0.2));
    if (bias) put(`${name}.bias`, [d]);
  };
  return { state, put, norm, rng };
}

const shapesOf = (s: Params): Shapes => new Map([...s].map(([k, t]) => [k, { shape: t.shape.slice() }]));

/** GPT-2 (GPT2LMHeadModel as saved: "transformer." names, tied head absent, causal-mask buffers). */
function gpt2State(seed: number, d = 8, heads = 2, layers = 2, vocab = 11, positions = 6): Params {
  const { state, put, norm } = builder(seed);
  put('transformer.wte.weight', [vocab, d]);
  put('transformer.wpe.weight', [positions, d]);
  for (let l = 0; l < layers; l++) {
    const L = `transformer.h.${l}.`;
    norm(`${L}ln_1`, d);
    put(`${L}attn.bias`, [1, 1, positions, positions], (i) => (i % positions <= Math.floor(i / positions) ? 1 : 0));
    put(`${L}attn.c_attn.weight`, [d, 3 * d]);
    put(`${L}attn.c_attn.bias`, [3 * d]);
    put(`${L}attn.c_proj.weight`, [d, d]);
    put(`${L}attn.c_proj.bias`, [d]);
    norm(`${L}ln_2`, d);
    put(`${L}mlp.c_fc.weight`, [d, 4 * d]);
    put(`${L}mlp.c_fc.bias`, [4 * d]);
    put(`${L}mlp.c_proj.weight`, [4 * d, d]);
    put(`${L}mlp.c_proj.bias`, [d]);
  }
  norm('transformer.ln_f', d);
  return state;
}

function bertState(seed: number, d = 8, layers = 2, vocab = 13, positions = 6): Params {
  const { state, put, norm } = builder(seed);
  const E = 'bert.embeddings.';
  put(`${E}word_embeddings.weight`, [vocab, d]);
  put(`${E}position_embeddings.weight`, [positions, d]);
  put(`${E}token_type_embeddings.weight`, [2, d]);
  norm(`${E}LayerNorm`, d);
  put(`${E}position_ids`, [1, positions], (i) => i);
  for (let l = 0; l < layers; l++) {
    const L = `bert.encoder.layer.${l}.`;
    for (const k of ['query', 'key', 'value']) {
      put(`${L}attention.self.${k}.weight`, [d, d]);
      put(`${L}attention.self.${k}.bias`, [d]);
    }
    put(`${L}attention.output.dense.weight`, [d, d]);
    put(`${L}attention.output.dense.bias`, [d]);
    norm(`${L}attention.output.LayerNorm`, d);
    put(`${L}intermediate.dense.weight`, [3 * d, d]);
    put(`${L}intermediate.dense.bias`, [3 * d]);
    put(`${L}output.dense.weight`, [d, 3 * d]);
    put(`${L}output.dense.bias`, [d]);
    norm(`${L}output.LayerNorm`, d);
  }
  put('bert.pooler.dense.weight', [d, d]);
  put('bert.pooler.dense.bias', [d]);
  return state;
}

function vitState(seed: number, d = 8, layers = 2, channels = 3, patch = 2, size = 4, classes = 5): Params {
  const { state, put, norm } = builder(seed);
  const n = (size / patch) ** 2;
  put('vit.embeddings.cls_token', [1, 1, d]);
  put('vit.embeddings.position_embeddings', [1, n + 1, d]);
  put('vit.embeddings.patch_embeddings.projection.weight', [d, channels, patch, patch]);
  put('vit.embeddings.patch_embeddings.projection.bias', [d]);
  for (let l = 0; l < layers; l++) {
    const L = `vit.encoder.layer.${l}.`;
    for (const k of ['query', 'key', 'value']) {
      put(`${L}attention.attention.${k}.weight`, [d, d]);
      put(`${L}attention.attention.${k}.bias`, [d]);
    }
    put(`${L}attention.output.dense.weight`, [d, d]);
    put(`${L}attention.output.dense.bias`, [d]);
    put(`${L}intermediate.dense.weight`, [2 * d, d]);
    put(`${L}intermediate.dense.bias`, [2 * d]);
    put(`${L}output.dense.weight`, [d, 2 * d]);
    put(`${L}output.dense.bias`, [d]);
    norm(`${L}layernorm_before`, d);
    norm(`${L}layernorm_after`, d);
  }
  norm('vit.layernorm', d);
  put('classifier.weight', [classes, d]);
  put('classifier.bias', [classes]);
  return state;
}

function llamaState(seed: number, o: { d: number; heads: number; kvHeads: number; layers: number; ffn: number; vocab: number; bias?: boolean }): Params {
  const { state, put, norm } = builder(seed);
  const dh = o.d / o.heads;
  put('model.embed_tokens.weight', [o.vocab, o.d]);
  for (let l = 0; l < o.layers; l++) {
    const L = `model.layers.${l}.`;
    norm(`${L}input_layernorm`, o.d, false);
    put(`${L}self_attn.q_proj.weight`, [o.heads * dh, o.d]);
    put(`${L}self_attn.k_proj.weight`, [o.kvHeads * dh, o.d]);
    put(`${L}self_attn.v_proj.weight`, [o.kvHeads * dh, o.d]);
    if (o.bias) {
      put(`${L}self_attn.q_proj.bias`, [o.heads * dh]);
      put(`${L}self_attn.k_proj.bias`, [o.kvHeads * dh]);
      put(`${L}self_attn.v_proj.bias`, [o.kvHeads * dh]);
    }
    put(`${L}self_attn.o_proj.weight`, [o.d, o.heads * dh]);
    norm(`${L}post_attention_layernorm`, o.d, false);
    put(`${L}mlp.gate_proj.weight`, [o.ffn, o.d]);
    put(`${L}mlp.up_proj.weight`, [o.ffn, o.d]);
    put(`${L}mlp.down_proj.weight`, [o.d, o.ffn]);
  }
  norm('model.norm', o.d, false);
  put('lm_head.weight', [o.vocab, o.d]);
  return state;
}

type Forward = (s: Params) => Float64Array[];

/** A random group element leaves the outputs unchanged; the same element with `control` left unpermuted does not. */
function checkGroup(state: Params, spec: PermutationSpec, forward: Forward, seed: number, control: string): void {
  const perms = randomPerms(spec, new Rng(seed));
  const out = noGrad(() => applyHard(spec, state, perms));
  const y0 = forward(state);
  const diff = maxAbsDiff(y0, forward(out));
  assert.ok(diff <= 1e-4, `permuted outputs differ by ${diff}`);
  const broken = new Map(out);
  broken.set(control, state.get(control)!);
  const moved = maxAbsDiff(y0, forward(broken));
  assert.ok(moved > 1e-3, `leaving ${control} unpermuted changed the outputs by only ${moved}: the test would not see a wrong spec`);
}

const ids = [3, 1, 4, 1, 5];

test('GPT-2 layout: the preset group (heads × per-head Q/K and V/O inner, MLP, residual) leaves the logits unchanged', () => {
  const state = gpt2State(1);
  const config = { model_type: 'gpt2', n_head: 2, n_embd: 8, n_layer: 2 };
  for (const heads of ['auto', 'full', 'vo', 'fixed'] as HeadMode[]) {
    const p = hfPreset(shapesOf(state), config, { heads });
    assert.equal(p.architecture, 'gpt2');
    if (heads === 'auto') {
      assert.deepEqual(Object.keys(p.spec.perms).filter((k) => k.endsWith('.0') || k === 'P_res' || k.startsWith('P_heads.')).sort(), ['P_heads.0', 'P_heads.1', 'P_mlp.0', 'P_qk.0.0', 'P_qk.1.0', 'P_res', 'P_vo.0.0', 'P_vo.1.0']);
      assert.deepEqual(p.spec.axes['transformer.h.0.attn.bias'], [null, null, null, null], 'the causal mask is never permuted');
    }
    checkGroup(state, p.spec, (s) => gpt2Forward(s, { layers: 2, heads: 2 }, ids), 7, 'transformer.h.1.attn.c_attn.weight');
  }
});

test('GPT-2 as GPT2Model saves it (no "transformer." prefix, no head): the same preset', () => {
  const state = new Map([...gpt2State(1)].map(([k, t]) => [k.replace(/^transformer\./, ''), t]));
  const p = hfPreset(shapesOf(state), { n_head: 2, n_embd: 8 });
  assert.equal(p.architecture, 'gpt2');
  checkGroup(state, p.spec, (s) => gpt2Forward(s, { layers: 2, heads: 2, prefix: '' }, ids), 8, 'h.0.mlp.c_fc.weight');
});

test('GPT-2 layout with ALiBi: heads stay, inner permutations only', () => {
  const state = gpt2State(2);
  const config = { model_type: 'gpt2', n_head: 2, n_embd: 8, alibi: true };
  const p = hfPreset(shapesOf(state), config);
  assert.ok(!Object.keys(p.spec.perms).some((k) => k.startsWith('P_heads')));
  checkGroup(state, p.spec, (s) => gpt2Forward(s, { layers: 2, heads: 2, alibi: true }, ids), 3, 'transformer.h.0.attn.c_proj.weight');
  // Moving heads is not a symmetry under ALiBi: the forward sees it.
  const moving = hfPreset(shapesOf(state), { model_type: 'gpt2', n_head: 2, n_embd: 8 }, { heads: 'vo' });
  const perms = randomPerms(moving.spec, new Rng(0));
  for (const k of Object.keys(perms)) if (k.startsWith('P_heads')) perms[k] = Int32Array.from([1, 0]);
  const out = noGrad(() => applyHard(moving.spec, state, perms));
  assert.ok(maxAbsDiff(gpt2Forward(state, { layers: 2, heads: 2, alibi: true }, ids), gpt2Forward(out, { layers: 2, heads: 2, alibi: true }, ids)) > 1e-3);
  assert.throws(() => hfPreset(shapesOf(state), config, { heads: 'vo' }), (e: Error) => e instanceof InputError && /ALiBi/.test(e.message) && /--heads fixed/.test(e.message));
});

test('BERT layout (post-LN encoder, token types, pooler): the preset group leaves sequence and pooled outputs unchanged', () => {
  const state = bertState(3);
  const p = hfPreset(shapesOf(state), { model_type: 'bert', num_attention_heads: 2, hidden_size: 8 });
  assert.equal(p.architecture, 'bert');
  assert.deepEqual(p.spec.axes['bert.pooler.dense.weight'], [null, 'P_res']);
  checkGroup(state, p.spec, (s) => bertForward(s, { layers: 2, heads: 2 }, ids, [0, 0, 1, 1, 1]), 11, 'bert.encoder.layer.0.attention.self.key.weight');
});

test('ViT layout (patch projection, class token, position embeddings, classifier): the preset group leaves the logits unchanged', () => {
  const state = vitState(4);
  const p = hfPreset(shapesOf(state), { model_type: 'vit', num_attention_heads: 2, hidden_size: 8 });
  const image = Float64Array.from({ length: 3 * 16 }, (_, i) => Math.sin(i * 0.7));
  checkGroup(state, p.spec, (s) => vitForward(s, { layers: 2, heads: 2, patch: 2 }, image, 3, 4), 5, 'vit.encoder.layer.1.attention.attention.value.weight');
});

test('LLaMA layout with GQA and RoPE: kv groups move with their query heads and share V/O inner permutations with them, gate/up share F, RMSNorms in P_res', () => {
  const o = { d: 16, heads: 4, kvHeads: 2, layers: 2, ffn: 12, vocab: 10 };
  const state = llamaState(5, o);
  const config = { model_type: 'llama', num_attention_heads: 4, num_key_value_heads: 2, hidden_size: 16, rope_theta: 10000, tie_word_embeddings: false };
  const forward: Forward = (s) => llamaForward(s, { layers: 2, heads: 4, kvHeads: 2, headDim: 4, rope: true }, ids);
  const auto = hfPreset(shapesOf(state), config);
  assert.equal(auto.spec.perms['P_heads.0'], 2, 'one unit per kv group');
  assert.ok(auto.notes.some((n) => /grouped-query/.test(n)));
  // V/O inner permutations per kv group, repeated over its 2 query heads' rows of o_proj; none inside Q/K (RoPE).
  assert.deepEqual(auto.spec.axes['model.layers.0.self_attn.o_proj.weight'][1], { blocks: 'P_heads.0', within: ['P_vo.0.0', 'P_vo.0.1'], repeat: 2 });
  assert.deepEqual(auto.spec.axes['model.layers.0.self_attn.v_proj.weight'][0], { blocks: 'P_heads.0', within: ['P_vo.0.0', 'P_vo.0.1'] });
  assert.deepEqual(auto.spec.axes['model.layers.0.self_attn.q_proj.weight'][0], { perm: 'P_heads.0', inner: 8 });
  assert.deepEqual(auto.spec.axes['model.layers.0.mlp.gate_proj.weight'], auto.spec.axes['model.layers.0.mlp.up_proj.weight']);
  checkGroup(state, auto.spec, forward, 9, 'model.layers.1.self_attn.k_proj.weight');
  checkGroup(state, auto.spec, forward, 13, 'model.layers.0.self_attn.o_proj.weight');
  // Heads fixed: V/O inner permutations per kv group, repeated over the group's query heads.
  const fixed = hfPreset(shapesOf(state), config, { heads: 'fixed' });
  assert.ok(fixed.spec.perms['P_vo.0.1'] === 4 && !('P_qk.0.0' in fixed.spec.perms), 'no Q/K inner permutation under RoPE');
  checkGroup(state, fixed.spec, forward, 10, 'model.layers.0.self_attn.o_proj.weight');
  assert.throws(() => hfPreset(shapesOf(state), config, { heads: 'full' }), (e: Error) => e instanceof InputError && /rotary/.test(e.message) && /--heads full/.test(e.message));
});

test('GQA without rotary embeddings: Q/K inner permutations per kv group, repeated over its query heads, keep the function', () => {
  const o = { d: 16, heads: 4, kvHeads: 2, layers: 1, ffn: 12, vocab: 10 };
  const state = llamaState(14, o);
  const { spec } = hfPreset(shapesOf(state), { model_type: 'llama', num_attention_heads: 4, num_key_value_heads: 2, hidden_size: 16 });
  // The llama preset leaves Q/K inner out (rotary); the entries a user would write for a model without RoPE:
  const qk = ['P_qk.0.0', 'P_qk.0.1'];
  const A = 'model.layers.0.self_attn.';
  const full: PermutationSpec = {
    perms: { ...spec.perms, [qk[0]]: 4, [qk[1]]: 4 },
    axes: { ...spec.axes, [`${A}q_proj.weight`]: [blockEntry('P_heads.0', qk, 2), 'P_res'], [`${A}k_proj.weight`]: [blockEntry('P_heads.0', qk), 'P_res'] },
  };
  const f = (s: Params, rope: boolean) => llamaForward(s, { layers: 1, heads: 4, kvHeads: 2, headDim: 4, rope }, ids);
  checkGroup(state, full, (s) => f(s, false), 15, `${A}q_proj.weight`);
  // The same element with rotary embeddings is not a symmetry.
  const perms = randomPerms(full, new Rng(15));
  const out = noGrad(() => applyHard(full, state, perms));
  assert.ok(maxAbsDiff(f(state, true), f(out, true)) > 1e-3);
});

test('LLaMA layout, multi-head with q/k/v biases (Qwen2-style): heads as blocks with per-head V/O inner permutations', () => {
  const o = { d: 12, heads: 3, kvHeads: 3, layers: 1, ffn: 10, vocab: 9, bias: true };
  const state = llamaState(6, o);
  const p = hfPreset(shapesOf(state), { model_type: 'qwen2', num_attention_heads: 3, hidden_size: 12 });
  assert.deepEqual(p.spec.axes['model.layers.0.self_attn.v_proj.weight'][0], { blocks: 'P_heads.0', within: ['P_vo.0.0', 'P_vo.0.1', 'P_vo.0.2'] });
  checkGroup(state, p.spec, (s) => llamaForward(s, { layers: 1, heads: 3, kvHeads: 3, headDim: 4, rope: true }, ids), 12, 'model.layers.0.self_attn.v_proj.weight');
});

test('RoPE is why Q/K inner permutations are refused: one applied to q_proj and k_proj rows is a symmetry without rotary and not with it', () => {
  const o = { d: 8, heads: 2, kvHeads: 2, layers: 1, ffn: 6, vocab: 7 };
  const state = llamaState(7, o);
  const sigma = [2, 0, 3, 1];
  const out = new Map(state);
  for (const k of ['q_proj', 'k_proj']) {
    const t = state.get(`model.layers.0.self_attn.${k}.weight`)!;
    const data = Float32Array.from(t.data);
    for (let j = 0; j < 4; j++) for (let i = 0; i < 8; i++) data[j * 8 + i] = t.data[sigma[j] * 8 + i];
    out.set(`model.layers.0.self_attn.${k}.weight`, new Tensor(data, t.shape));
  }
  const f = (s: Params, rope: boolean) => llamaForward(s, { layers: 1, heads: 2, kvHeads: 2, headDim: 4, rope }, ids);
  assert.ok(maxAbsDiff(f(state, false), f(out, false)) <= 1e-4);
  assert.ok(maxAbsDiff(f(state, true), f(out, true)) > 1e-3);
});

test('weight matching (eager and lazy) on the mixed head/flat groups recovers a planted permutation of a GPT-2 and a GQA LLaMA checkpoint', async () => {
  const cases: [Params, Record<string, unknown>][] = [
    [gpt2State(8), { model_type: 'gpt2', n_head: 2, n_embd: 8 }],
    [llamaState(9, { d: 16, heads: 4, kvHeads: 2, layers: 1, ffn: 12, vocab: 10 }), { model_type: 'llama', num_attention_heads: 4, num_key_value_heads: 2, hidden_size: 16 }],
  ];
  for (const [a, config] of cases) {
    const { spec } = hfPreset(shapesOf(a), config);
    const b = noGrad(() => applyHard(spec, a, randomPerms(spec, new Rng(3))));
    const eager = weightMatching({ spec, a, b }, { seed: 0 });
    const back = noGrad(() => applyHard(spec, b, eager.perms));
    for (const [k, t] of a) assert.deepEqual(Array.from(back.get(k)!.data), Array.from(t.data), `eager: ${k}`);
    const src = (s: Params): TensorSource => ({ names: [...s.keys()], shape: (n) => s.get(n)!.shape.slice(), read: async (n) => s.get(n)! });
    const lazy = await weightMatchingLazy({ spec, a: src(a), b: src(b) }, { seed: 0 });
    for (const [k, v] of Object.entries(eager.perms)) assert.deepEqual(Array.from(lazy.perms[k]), Array.from(v), `lazy: ${k}`);
  }
});

test('LoRA adapters, EMA and optimizer-moment siblings follow the base permutations (Linear and Conv1D layouts)', () => {
  const rng = new Rng(4);
  const randT = (shape: number[]) => new Tensor(Float32Array.from({ length: shape[0] * shape[1] }, () => rng.normal()), shape);
  for (const [state, config, target] of [
    [llamaState(10, { d: 8, heads: 2, kvHeads: 2, layers: 1, ffn: 6, vocab: 7 }), { model_type: 'llama', num_attention_heads: 2, hidden_size: 8 }, 'model.layers.0.self_attn.o_proj'],
    [gpt2State(11), { model_type: 'gpt2', n_head: 2, n_embd: 8 }, 'transformer.h.0.attn.c_attn'],
  ] as [Params, Record<string, unknown>, string][]) {
    const { spec } = hfPreset(shapesOf(state), config);
    const w = state.get(`${target}.weight`)!;
    const conv1d = target.endsWith('c_attn');
    const [nIn, nOut] = conv1d ? w.shape : [w.shape[1], w.shape[0]];
    const lora: Params = new Map([
      [`base_model.model.${target}.lora_A.weight`, randT([3, nIn])],
      [`base_model.model.${target}.lora_B.weight`, randT([nOut, 3])],
      [`ema.${target}.weight`, w],
    ]);
    const sib = specForSibling(spec, shapesOf(lora));
    const perms = randomPerms(spec, new Rng(6));
    const sibPerms = Object.fromEntries(Object.keys(sib.perms).map((k) => [k, perms[k]]));
    const out = noGrad(() => applyHard(sib, lora, sibPerms));
    const permutedBase = noGrad(() => applyHard(spec, new Map([[`${target}.weight`, w]]), perms)).get(`${target}.weight`)!;
    assert.deepEqual(Array.from(out.get(`ema.${target}.weight`)!.data), Array.from(permutedBase.data));
    // The update B·A (stored [out, in]; Conv1D adds its transpose) permutes like the base weight.
    const delta = (A: Tensor, B: Tensor) => {
      const r = A.shape[0];
      const d = new Float32Array(nIn * nOut);
      for (let i = 0; i < nIn; i++) for (let o2 = 0; o2 < nOut; o2++) {
        let s = 0;
        for (let k = 0; k < r; k++) s += B.data[o2 * r + k] * A.data[k * nIn + i];
        d[conv1d ? i * nOut + o2 : o2 * nIn + i] = s;
      }
      return new Tensor(d, w.shape.slice());
    };
    const A0 = lora.get(`base_model.model.${target}.lora_A.weight`)!;
    const B0 = lora.get(`base_model.model.${target}.lora_B.weight`)!;
    const want = noGrad(() => applyHard(spec, new Map([[`${target}.weight`, delta(A0, B0)]]), perms)).get(`${target}.weight`)!;
    const got = delta(out.get(`base_model.model.${target}.lora_A.weight`)!, out.get(`base_model.model.${target}.lora_B.weight`)!);
    got.data.forEach((v, i) => assert.ok(Math.abs(v - want.data[i]) < 1e-5));
  }
  assert.throws(() => specForSibling(hfPreset(shapesOf(gpt2State(1)), { model_type: 'gpt2', n_head: 2, n_embd: 8 }).spec, new Map([['unrelated.weight', { shape: [2, 2] }]])), (e: Error) => e instanceof InputError && /"unrelated\.weight"/.test(e.message));
});

test('bad input: heads not dividing the width, unknown names, missing config fields, model_type without its layout — InputError naming the field or tensor', () => {
  const gpt = shapesOf(gpt2State(1));
  const err = (f: () => unknown, re: RegExp) => assert.throws(f, (e: Error) => e instanceof InputError && re.test(e.message) && !e.message.includes('\n'), re.source);
  err(() => hfPreset(gpt, { model_type: 'gpt2', n_head: 3, n_embd: 8 }), /"n_head" 3 does not divide the width "n_embd" 8/);
  err(() => hfPreset(gpt, { model_type: 'gpt2', n_embd: 8 }), /"n_head" is missing/);
  err(() => hfPreset(gpt, { model_type: 'gpt2', n_head: 4, n_embd: 16 }), /gpt2 preset does not fit .*tensor "transformer\./);
  err(() => hfPreset(gpt, undefined), /config\.json/);
  err(() => hfPreset(new Map([...gpt, ['transformer.h.0.attn.rotary.weight', { shape: [4] }]]), { model_type: 'gpt2', n_head: 2, n_embd: 8 }), /tensor "transformer\.h\.0\.attn\.rotary\.weight" matches no rule of the gpt2 preset/);
  err(() => hfPreset(new Map([['encoder.weight', { shape: [2, 2] }]]), {}), /no Hugging Face preset matches these tensor names \(first: "encoder\.weight"\)/);
  err(() => hfPreset(gpt, { model_type: 'llama', num_attention_heads: 2, hidden_size: 8 }), /"model_type" is "llama" but no tensor name/);
  err(() => hfPreset(shapesOf(llamaState(1, { d: 8, heads: 2, kvHeads: 2, layers: 1, ffn: 4, vocab: 5 })), { model_type: 'llama', num_attention_heads: 2, num_key_value_heads: 3, hidden_size: 8 }), /"num_key_value_heads" 3 does not divide "num_attention_heads" 2/);
});
