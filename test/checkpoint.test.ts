/** Checkpoints: safetensors round trips with model configs, strict loading, atomic saving. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad, randn, Rng, Tensor, zeros } from '../src/core/index.js';
import { InputError } from '../src/errors.js';
import {
  loadCheckpoint, recordsToState, saveCheckpoint, splitLoadedState, stateToRecords,
} from '../src/io/checkpoint.js';
import { loadTensors } from '../src/io/load-any.js';
import { writeNpz } from '../src/io/npy.js';
import { openSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import type { StateDict } from '../src/io/records.js';
import { graphTensors, mlp, resnet20, vggSmall, type Model, type Params } from '../src/models/index.js';

function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-ckpt-'));
  return fn(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
}

function assertSameState(a: Params, b: Params): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [k, t] of a) {
    const u = b.get(k)!;
    assert.deepEqual(u.shape, t.shape, k);
    assert.deepEqual(u.data, t.data, k);
  }
}

/** A state with non-trivial BN statistics (init gives 0/1). */
function stateOf(model: Model, seed: number): { params: Params; buffers: Params } {
  const s = model.init(new Rng(seed));
  const rng = new Rng(seed + 100);
  for (const [k, t] of s.buffers) rng.fillUniform(t.data, k.endsWith('var') ? 0.5 : -1, k.endsWith('var') ? 2 : 1);
  return s;
}

test('saveCheckpoint / loadCheckpoint: same config, tensors and outputs; PyTorch names, F32', () => withDir(async (dir) => {
  const models = [
    mlp({ sizes: [20, 16, 16, 3], dropout: 0.25, activation: 'tanh' }),
    vggSmall({ channels: [2, 4, 4, 6], numClasses: 5, inputShape: [1, 12, 12] }),
    resnet20({ widthMultiplier: 0.25, numClasses: 4, inputShape: [3, 8, 8] }),
  ];
  for (const model of models) {
    const path = join(dir, `${model.name}.safetensors`);
    const state = stateOf(model, 1);
    await saveCheckpoint(path, model, state, { note: 'hello', epochs: 3, history: [{ epoch: 1 }] });
    const ck = await loadCheckpoint(path);
    assert.deepEqual(ck.model.config, model.config);
    assert.equal(ck.model.name, model.name);
    assertSameState(ck.params, state.params);
    assertSameState(ck.buffers, state.buffers);
    assert.equal(ck.metadata.format, 'rebasin');
    assert.equal(ck.metadata.note, 'hello');
    assert.equal(ck.metadata.epochs, '3');
    assert.deepEqual(JSON.parse(ck.metadata.history), [{ epoch: 1 }]);
    const x = randn([3, ...model.inputShape], new Rng(9));
    const y0 = noGrad(() => model.forward(state.params, x, { training: false, buffers: state.buffers }));
    const y1 = noGrad(() => ck.model.forward(ck.params, x, { training: false, buffers: ck.buffers }));
    assert.deepEqual(y1.data, y0.data);
    // The file is plain safetensors in state_dict order, all F32.
    const reader = await openSafetensors(path);
    try {
      assert.deepEqual(reader.names, graphTensors(model.graph()).map((t) => t.name));
      assert.ok(reader.names.every((n) => reader.info(n).dtype === 'F32'));
      if (model.name.startsWith('mlp')) assert.deepEqual(reader.names, ['layers.0.weight', 'layers.0.bias', 'layers.2.weight', 'layers.2.bias', 'layers.4.weight', 'layers.4.bias']);
      if (model.name.startsWith('vgg')) assert.deepEqual(reader.names.slice(0, 6), ['features.0.weight', 'features.0.bias', 'features.1.weight', 'features.1.bias', 'features.1.running_mean', 'features.1.running_var']);
    } finally {
      await reader.close();
    }
  }
  assert.deepEqual(readdirSync(dir).sort(), models.map((m) => `${m.name}.safetensors`).sort());
}));

test('loadCheckpoint: truncated file, wrong shape, missing and extra tensors name the file and tensor', () => withDir(async (dir) => {
  const model = mlp({ sizes: [6, 5, 3] });
  const state = model.init(new Rng(0));
  const good = join(dir, 'good.safetensors');
  await saveCheckpoint(good, model, state);

  const truncated = join(dir, 'truncated.safetensors');
  writeFileSync(truncated, readFileSync(good));
  truncateSync(truncated, statSync(good).size - 10);
  await assert.rejects(loadCheckpoint(truncated), (e: Error) => e.message.includes(truncated));
  truncateSync(truncated, 5);
  await assert.rejects(loadCheckpoint(truncated), (e: Error) => e.message.includes(truncated));

  const metadata = { format: 'rebasin', model: JSON.stringify(model.config) };
  const records = stateToRecords(state.params);
  const variant = async (name: string, edit: (d: StateDict) => void) => {
    const d: StateDict = new Map(records);
    edit(d);
    const p = join(dir, name);
    await writeSafetensors(p, d, { metadata });
    return p;
  };
  const wrong = await variant('wrong.safetensors', (d) => d.set('layers.2.weight', { shape: [3, 4], data: new Float32Array(12) }));
  await assert.rejects(loadCheckpoint(wrong), (e: Error) => e instanceof InputError && e.message.includes(wrong)
    && /tensor "layers\.2\.weight" has shape \[3, 4\] but model mlp-6-5-3 expects \[3, 5\]/.test(e.message));
  const missing = await variant('missing.safetensors', (d) => d.delete('layers.0.bias'));
  await assert.rejects(loadCheckpoint(missing), (e: Error) => e instanceof InputError && /tensor "layers\.0\.bias" is missing/.test(e.message));
  const extra = await variant('extra.safetensors', (d) => d.set('layers.9.weight', { shape: [1], data: new Float32Array(1) }));
  await assert.rejects(loadCheckpoint(extra), (e: Error) => e instanceof InputError && /tensor "layers\.9\.weight" is not part of model/.test(e.message));
  // PyTorch's BN step counter is tolerated.
  const counter = await variant('counter.safetensors', (d) => d.set('layers.0.num_batches_tracked', { shape: [], data: new Float32Array([5]) }));
  assert.equal((await loadCheckpoint(counter)).params.size, 4);

  const plain = join(dir, 'plain.safetensors');
  await writeSafetensors(plain, records);
  await assert.rejects(loadCheckpoint(plain), (e: Error) => e instanceof InputError && /not a rebasin checkpoint/.test(e.message));
  const badConfig = join(dir, 'bad-config.safetensors');
  await writeSafetensors(badConfig, records, { metadata: { format: 'rebasin', model: '{"arch":"transformer"}' } });
  await assert.rejects(loadCheckpoint(badConfig), (e: Error) => e instanceof InputError && e.message.includes(badConfig) && /unknown arch/.test(e.message));
}));

test('saveCheckpoint: a failed save leaves no file and no temp file, and keeps an older file intact', () => withDir(async (dir) => {
  const model = mlp({ sizes: [6, 5, 3] });
  const state = model.init(new Rng(0));
  const path = join(dir, 'm.safetensors');
  const nan = { params: new Map(state.params), buffers: state.buffers };
  const w = state.params.get('layers.2.weight')!.clone();
  w.data[7] = NaN;
  nan.params.set('layers.2.weight', w);
  await assert.rejects(saveCheckpoint(path, model, nan), /layers\.2\.weight.*non-finite/);
  assert.deepEqual(readdirSync(dir), []);
  const partial = { params: new Map([...state.params].filter(([k]) => k !== 'layers.0.bias')) };
  await assert.rejects(saveCheckpoint(path, model, partial), (e: Error) => e instanceof InputError && /"layers\.0\.bias" is missing/.test(e.message));
  const wrong = { params: new Map(state.params).set('layers.0.weight', zeros([5, 7])) };
  await assert.rejects(saveCheckpoint(path, model, wrong), /"layers\.0\.weight" has shape \[5, 7\]/);
  assert.deepEqual(readdirSync(dir), []);
  await assert.rejects(saveCheckpoint(path, model, state, { format: 'x' }), /reserved/);

  await saveCheckpoint(path, model, state);
  const before = readFileSync(path);
  await assert.rejects(saveCheckpoint(path, model, nan));
  assert.deepEqual(readFileSync(path), before);
  assert.deepEqual(readdirSync(dir), ['m.safetensors']);
}));

test('loadTensors: plain safetensors and npz, by extension and by content; records ↔ tensors conversions', () => withDir(async (dir) => {
  const dict: StateDict = new Map([
    ['fc.weight', { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
    ['bn.running_mean', { shape: [2], data: Float32Array.from([0.5, -0.5]) }],
    ['bn.num_batches_tracked', { shape: [], data: Float32Array.from([7]) }],
  ]);
  const st = join(dir, 'w.safetensors');
  const npz = join(dir, 'w.npz');
  await writeSafetensors(st, dict);
  await writeNpz(npz, dict);
  // Without an extension the format is recognised by content.
  const stBare = join(dir, 'w-st');
  const npzBare = join(dir, 'w-npz');
  copyFileSync(st, stBare);
  copyFileSync(npz, npzBare);
  for (const [p, format] of [[st, 'safetensors'], [npz, 'npz'], [stBare, 'safetensors'], [npzBare, 'npz']] as const) {
    const loaded = await loadTensors(p);
    assert.equal(loaded.format, format);
    const s = loaded.tensors;
    assert.ok(s.get('fc.weight') instanceof Tensor);
    assert.deepEqual(s.get('fc.weight')!.shape, [2, 3]);
    assert.deepEqual(s.get('fc.weight')!.toArray(), [1, 2, 3, 4, 5, 6]);
    assert.equal(s.get('bn.num_batches_tracked')!.item(), 7);
    const { params, buffers } = splitLoadedState(s);
    assert.deepEqual([...params.keys()], ['fc.weight']);
    assert.deepEqual([...buffers.keys()], ['bn.running_mean']);
  }
  const junk = join(dir, 'junk.bin');
  writeFileSync(junk, 'not a tensor file at all');
  await assert.rejects(loadTensors(junk), (e: Error) => e.message.includes(junk));

  // float64 tensors convert to float32 records; float32 data is shared.
  const f32 = zeros([2]);
  const f64 = new Tensor(Float64Array.from([0.1, 1e-40]), [1, 2]);
  const rec = stateToRecords(new Map([['a', f32], ['b', f64]]));
  assert.equal(rec.get('a')!.data, f32.data);
  assert.ok(rec.get('b')!.data instanceof Float32Array);
  assert.deepEqual(rec.get('b')!.shape, [1, 2]);
  assert.equal(rec.get('b')!.data[0], Math.fround(0.1));
  const back = recordsToState(rec);
  assert.deepEqual(back.get('b')!.shape, [1, 2]);
  assert.equal(back.get('a')!.requiresGrad, false);
}));
