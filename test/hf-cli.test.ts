/**
 * Hugging Face checkpoints end to end, against an independent oracle: test/fixtures/hf holds two
 * small GPT-2-layout checkpoints and their logits recorded by PyTorch (make_gpt2.py, a torch
 * forward in the HF layout). The TS forward reproduces those logits; the preset's alignment
 * (eager, and `align --lazy` through the CLI) gives a checkpoint whose logits are PyTorch's for
 * the original. Also: dtypes kept (F16/BF16/U8), sharded checkpoints read and written sharded,
 * `rebasin apply` on EMA and LoRA siblings, pickles refused with the conversion step, and bad
 * input (exit 3, one line naming the field or tensor, nothing written).
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { noGrad, Tensor } from '../src/core/tensor.js';
import { hfPreset, specForSibling } from '../src/io/hf-presets.js';
import { loadTensors } from '../src/io/load-any.js';
import { openSafetensors, writeSafetensors, writeSafetensorsStreaming, type SafetensorsDtype } from '../src/io/safetensors.js';
import { weightMatching } from '../src/methods/weight-matching.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import type { Params } from '../src/state/params.js';
import { gpt2Forward, maxAbsDiff } from './helpers/hf-forward.js';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(here, '../src/cli/main.js');
const FIX = resolve(here, '../../test/fixtures/hf');
const A = join(FIX, 'gpt2-a/model.safetensors');
const B = join(FIX, 'gpt2-b/model.safetensors');
const rec = JSON.parse(readFileSync(join(FIX, 'gpt2-logits.json'), 'utf8')) as { ids: number[]; a: number[][]; b: number[][] };
const config = JSON.parse(readFileSync(join(FIX, 'gpt2-a/config.json'), 'utf8')) as Record<string, unknown>;
const logits = (s: Params) => gpt2Forward(s, { layers: 2, heads: 4 }, rec.ids);
const recorded = (x: number[][]) => x.map((r) => Float64Array.from(r));
let dir = '';

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const load = async (p: string): Promise<Params> => (await loadTensors(p)).tensors;
const shapesOf = (s: Params) => new Map([...s].map(([k, t]) => [k, { shape: t.shape.slice() }]));
/** A refusal: exit 3 and one line naming `re`. */
function refused(r: ReturnType<typeof run>, re: RegExp) {
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, re);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
}

before(() => { dir = mkdtempSync(join(tmpdir(), 'rebasin-hf-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

test('oracle: the TS forward reproduces PyTorch\'s logits of both GPT-2-layout fixtures', async () => {
  assert.ok(maxAbsDiff(logits(await load(A)), recorded(rec.a)) <= 1e-4);
  assert.ok(maxAbsDiff(logits(await load(B)), recorded(rec.b)) <= 1e-4);
});

test('oracle: B aligned to A by the preset (weight matching), and B under a random group element, compute PyTorch\'s logits of B', async () => {
  const a = await load(A);
  const b = await load(B);
  const { spec } = hfPreset(shapesOf(b), config);
  const wm = weightMatching({ spec, a, b }, { seed: 0 });
  assert.ok(Object.values(wm.perms).some((p) => p.some((v, i) => v !== i)), 'the alignment moves units');
  for (const perms of [wm.perms, randomPerms(spec, new Rng(5))]) {
    const out = noGrad(() => applyHard(spec, b, perms));
    assert.ok(maxAbsDiff(logits(out), recorded(rec.b)) <= 1e-4);
  }
});

test('align --lazy on the GPT-2 fixtures: the preset from config.json, memory bounded by the largest tensor, U8 buffer kept, PyTorch\'s logits of B', async () => {
  const out = join(dir, 'aligned.safetensors');
  const r = run('align', A, B, '--lazy', '-o', out, '--perms-out', join(dir, 'perms.json'), '--json');
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.preset.architecture, 'gpt2');
  // The residual stream touches every tensor, yet one tensor of A and B is held at a time.
  assert.ok(s.reads.peakBytes > 0 && s.reads.peakBytes <= s.reads.boundBytes && s.reads.boundBytes < s.reads.checkpointBytes / 4, JSON.stringify(s.reads));
  assert.ok(maxAbsDiff(logits(await load(out)), recorded(rec.b)) <= 1e-4);
  const h = await openSafetensors(out);
  assert.equal(h.info('transformer.h.0.attn.bias').dtype, 'U8');
  await h.close();
  // The same permutations through `apply` give the same tensors.
  const applied = join(dir, 'applied.safetensors');
  assert.equal(run('apply', join(dir, 'perms.json'), B, '-o', applied, '--quiet').code, 0);
  const x = await load(applied);
  for (const [k, t] of await load(out)) assert.deepEqual(Array.from(x.get(k)!.data), Array.from(t.data), k);
});

async function writeWithDtypes(path: string, s: Params, dtypeOf: (name: string) => SafetensorsDtype) {
  const entries = [...s].map(([name, t]) => ({ name, shape: t.shape.slice(), dtype: dtypeOf(name) }));
  await writeSafetensorsStreaming(path, entries, (name) => s.get(name)!.data as Float32Array);
}

test('F16 and BF16 tensors are written back in their own dtype, permuted exactly', async () => {
  const b = await load(B);
  const dt = (n: string): SafetensorsDtype => (n.includes('mlp') ? 'BF16' : n.endsWith('.attn.bias') ? 'F32' : 'F16');
  mkdirSync(join(dir, 'half'));
  const a16 = join(dir, 'half/a.safetensors');
  const b16 = join(dir, 'half/b.safetensors');
  await writeWithDtypes(a16, await load(A), dt);
  await writeWithDtypes(b16, b, dt);
  writeFileSync(join(dir, 'half/config.json'), JSON.stringify(config));
  const out = join(dir, 'half/out.safetensors');
  const r = run('align', a16, b16, '--lazy', '-o', out, '--perms-out', join(dir, 'half/perms.json'), '--quiet');
  assert.equal(r.code, 0, r.stderr);
  const h = await openSafetensors(out);
  for (const n of h.names) assert.equal(h.info(n).dtype, dt(n), n);
  await h.close();
  const perms = Object.fromEntries(Object.entries(JSON.parse(readFileSync(join(dir, 'half/perms.json'), 'utf8')) as Record<string, number[]>).map(([k, v]) => [k, Int32Array.from(v)]));
  const { spec } = hfPreset(shapesOf(b), config);
  const b16State = await load(b16);
  const want = noGrad(() => applyHard(spec, b16State, perms));
  const got = await load(out);
  for (const [k, t] of want) assert.deepEqual(Array.from(got.get(k)!.data), Array.from(t.data), k);
});

/** Writes `s` as two shards and an index (HF's layout: model-0000N-of-00002.safetensors). */
async function writeSharded(folder: string, s: Params) {
  mkdirSync(folder, { recursive: true });
  const names = [...s.keys()];
  const half = Math.ceil(names.length / 2);
  const weightMap: Record<string, string> = {};
  for (const [i, part] of [names.slice(0, half), names.slice(half)].entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await writeSafetensors(join(folder, file), new Map(part.map((n) => [n, { shape: s.get(n)!.shape.slice(), data: s.get(n)!.data as Float32Array }])), { metadata: { format: 'pt' } });
    for (const n of part) weightMap[n] = file;
  }
  writeFileSync(join(folder, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  writeFileSync(join(folder, 'config.json'), JSON.stringify(config));
  return join(folder, 'model.safetensors.index.json');
}

test('sharded checkpoints: read as one (spec infer, align --lazy), written sharded the same way; -o must name an index', async () => {
  const a = await writeSharded(join(dir, 'sa'), await load(A));
  const b = await writeSharded(join(dir, 'sb'), await load(B));
  const inf = run('spec', 'infer', b, '--json');
  assert.equal(inf.code, 0, inf.stderr);
  assert.equal(JSON.parse(inf.stdout).shards, 2);
  const bad = run('align', a, b, '--lazy', '-o', join(dir, 'so/model.safetensors'));
  refused(bad, /is sharded, so the output is too: name its index/);
  assert.ok(!existsSync(join(dir, 'so')));
  const out = join(dir, 'so/model.safetensors.index.json');
  const r = run('align', a, b, '--lazy', '-o', out, '--quiet');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(readdirSync(join(dir, 'so')).sort(), ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
  const index = JSON.parse(readFileSync(out, 'utf8'));
  assert.deepEqual(index.weight_map, JSON.parse(readFileSync(b, 'utf8')).weight_map);
  const got = await load(out);
  assert.ok(maxAbsDiff(logits(got), recorded(rec.b)) <= 1e-4);
  // The same alignment as from the single files.
  const single = await load(join(dir, 'aligned.safetensors'));
  for (const [k, t] of single) assert.deepEqual(Array.from(got.get(k)!.data), Array.from(t.data), k);
});

test('a shard index that names files outside its folder, or disagrees with its shards, is refused naming the entry', async () => {
  const folder = join(dir, 'bad-index');
  const index = await writeSharded(folder, await load(B));
  const good = JSON.parse(readFileSync(index, 'utf8'));
  const first = Object.keys(good.weight_map)[0];
  writeFileSync(index, JSON.stringify({ weight_map: { ...good.weight_map, [first]: '../model.safetensors' } }));
  refused(run('spec', 'infer', index), new RegExp(`weight_map\\["${first.replace(/\./g, '\\.')}"\\]: weight_map entry must be a shard file name next to the index`));
  const { [first]: _dropped, ...rest } = good.weight_map;
  writeFileSync(index, JSON.stringify({ weight_map: rest }));
  refused(run('spec', 'infer', index), /is in shard model-00001-of-00002\.safetensors but not in the index's weight_map/);
  const plain = run('align', A, B, '-o', join(dir, 'plain.safetensors.index.json'));
  assert.equal(plain.code, 2);
  assert.match(plain.stderr, /sharded output .* is written by --lazy/);
});

test('apply: EMA weights and a LoRA adapter (PEFT names, Conv1D base) follow the saved permutations', async () => {
  const b = await load(B);
  const rng = new Rng(9);
  const ema = join(dir, 'ema.safetensors');
  await writeSafetensors(ema, new Map([...b].map(([k, t]) => [k, { shape: t.shape.slice(), data: Float32Array.from(t.data, (v) => v + 0.01 * rng.normal()) }])));
  const spec = join(dir, 'spec.json');
  assert.equal(run('spec', 'infer', B, '-o', spec).code, 0);
  const loraState: Params = new Map([
    ['base_model.model.transformer.h.0.attn.c_attn.lora_A.weight', new Tensor(Float32Array.from({ length: 2 * 16 }, () => rng.normal()), [2, 16])],
    ['base_model.model.transformer.h.0.attn.c_attn.lora_B.weight', new Tensor(Float32Array.from({ length: 48 * 2 }, () => rng.normal()), [48, 2])],
    ['base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight', new Tensor(Float32Array.from({ length: 2 * 64 }, () => rng.normal()), [2, 64])],
    ['base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight', new Tensor(Float32Array.from({ length: 16 * 2 }, () => rng.normal()), [16, 2])],
  ]);
  const lora = join(dir, 'adapter_model.safetensors');
  await writeSafetensors(lora, new Map([...loraState].map(([k, t]) => [k, { shape: t.shape.slice(), data: t.data as Float32Array }])));
  const perms = join(dir, 'perms.json');
  const saved = Object.fromEntries(Object.entries(JSON.parse(readFileSync(perms, 'utf8')) as Record<string, number[]>).map(([k, v]) => [k, Int32Array.from(v)]));
  const base = hfPreset(shapesOf(b), config).spec;
  for (const [file, extra] of [[ema, ['--config', join(FIX, 'gpt2-b/config.json')]], [lora, ['--spec', spec]]] as [string, string[]][]) {
    const out = file.replace('.safetensors', '.out.safetensors');
    const r = run('apply', perms, file, '-o', out, ...extra);
    assert.equal(r.code, 0, r.stderr);
    const x = await load(file);
    const sib = specForSibling(base, shapesOf(x));
    const want = noGrad(() => applyHard(sib, x, Object.fromEntries(Object.keys(sib.perms).map((k) => [k, saved[k]]))));
    const got = await load(out);
    for (const [k, t] of want) assert.deepEqual(Array.from(got.get(k)!.data), Array.from(t.data), k);
  }
  refused(run('apply', perms, lora, '-o', join(dir, 'x.safetensors')), /match no Hugging Face preset .*pass --spec/);
  writeFileSync(join(dir, 'short.json'), JSON.stringify({ P_res: Array.from({ length: 16 }, (_, i) => i) }));
  refused(run('apply', join(dir, 'short.json'), ema, '-o', join(dir, 'x.safetensors'), '--config', join(FIX, 'gpt2-b/config.json')), /permutation "P_\w+(\.\d+)*" \(size \d+\) is missing/);
  assert.ok(!existsSync(join(dir, 'x.safetensors')));
});

test('PyTorch pickles are refused with the conversion step', () => {
  writeFileSync(join(dir, 'pytorch_model.bin'), 'not read');
  for (const r of [run('spec', 'infer', join(dir, 'pytorch_model.bin')), run('align', join(dir, 'pytorch_model.bin'), B, '--lazy', '-o', join(dir, 'y.safetensors'))]) {
    refused(r, /a PyTorch pickle .*python3 -c "import torch; from safetensors\.torch import save_file/);
  }
  assert.ok(!existsSync(join(dir, 'y.safetensors')));
});

test('bad input: heads not dividing the width, names matching no preset, RoPE with --heads full, A and B with different layers — exit 3, one line, nothing written', async () => {
  const out = join(dir, 'bad.safetensors');
  writeFileSync(join(dir, 'config3.json'), JSON.stringify({ ...config, n_head: 3 }));
  refused(run('align', A, B, '--lazy', '-o', out, '--config', join(dir, 'config3.json')), /config3\.json: "n_head" 3 does not divide the width "n_embd" 16/);
  await writeSafetensors(join(dir, 'odd.safetensors'), new Map([['encoder.block.weight', { shape: [2, 2], data: new Float32Array(4) }]]));
  refused(run('spec', 'infer', join(dir, 'odd.safetensors'), '-o', join(dir, 'odd.json')), /no Hugging Face preset matches these tensor names \(first: "encoder\.block\.weight"\)/);
  assert.ok(!existsSync(join(dir, 'odd.json')));
  // A LLaMA-layout checkpoint (rotary): permuting inside Q/K heads is refused.
  mkdirSync(join(dir, 'llama'));
  const d = 8;
  const llama = new Map<string, { shape: number[]; data: Float32Array }>();
  const put = (n: string, shape: number[]) => llama.set(n, { shape, data: new Float32Array(shape.reduce((x, y) => x * y, 1)).fill(0.1) });
  put('model.embed_tokens.weight', [5, d]);
  for (const k of ['q', 'o']) put(`model.layers.0.self_attn.${k}_proj.weight`, [d, d]);
  for (const k of ['k', 'v']) put(`model.layers.0.self_attn.${k}_proj.weight`, [d / 2, d]);
  put('model.layers.0.input_layernorm.weight', [d]);
  put('model.layers.0.post_attention_layernorm.weight', [d]);
  for (const k of ['gate', 'up']) put(`model.layers.0.mlp.${k}_proj.weight`, [6, d]);
  put('model.layers.0.mlp.down_proj.weight', [d, 6]);
  put('model.norm.weight', [d]);
  await writeSafetensors(join(dir, 'llama/model.safetensors'), llama);
  writeFileSync(join(dir, 'llama/config.json'), JSON.stringify({ model_type: 'llama', hidden_size: d, num_attention_heads: 2, num_key_value_heads: 1, rope_theta: 10000 }));
  refused(run('spec', 'infer', join(dir, 'llama/model.safetensors'), '--heads', 'full', '-o', join(dir, 'l.json')), /rotary position embeddings .* --heads full .*not a symmetry/);
  assert.equal(run('spec', 'infer', join(dir, 'llama/model.safetensors'), '-o', join(dir, 'l.json')).code, 0);
  // B without its second layer.
  const b = await load(B);
  await writeSafetensors(join(dir, 'short.safetensors'), new Map([...b].filter(([k]) => !k.includes('.h.1.')).map(([k, t]) => [k, { shape: t.shape.slice(), data: t.data as Float32Array }])));
  refused(run('align', A, join(dir, 'short.safetensors'), '--lazy', '-o', out), /tensor "transformer\.h\.1\.[\w.]+" is in model A but not in model B/);
  assert.ok(!existsSync(out));
});
