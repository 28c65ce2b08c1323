/**
 * TF.js layers models: reading model.json + shards, Keras → PyTorch layouts (incl. the
 * channels-last Flatten reordering), spec inference from Keras topologies, errors and fuzzing.
 *
 * A small NHWC interpreter of the Keras layers used here is the independent reference: the
 * converted weights must compute the same function in our (NCHW) forward pass, and weights
 * permuted by the inferred spec and converted back must leave the Keras function unchanged.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Rng, Tensor } from '../src/core/index.js';
import { GraphBuilder, deriveSpec, runGraph, type ModelGraph, type Params } from '../src/models/index.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import { validateSpec } from '../src/permutation/spec.js';
import { FormatError } from '../src/io/errors.js';
import type { StateDict } from '../src/io/records.js';
import { recordsToState, stateToRecords } from '../src/io/checkpoint.js';
import { decodeTfjsWeights, parseTfjsModelJson, readTfjs, writeTfjs, type KerasTopology } from '../src/io/tfjs.js';
import { inferSpecFromTfjs, pytorchToTfjsLayout, tfjsToPytorchLayout } from '../src/io/tfjs-import.js';
import { loadTensors } from '../src/io/load-any.js';

// ---------------------------------------------------------------- building model.json fixtures

type Obj = Record<string, unknown>;
interface KerasFixture {
  topology: Obj;
  /** Keras names, shapes and data in manifest order. */
  weights: [string, number[], Float32Array][];
  /** The same network as our graph (PyTorch names = `<keras layer>.weight` ...). */
  graph: ModelGraph;
  inputShape: number[]; // NHWC per sample
}

function rand(rng: Rng, shape: number[], lo = -0.5, hi = 0.5): Float32Array {
  const d = new Float32Array(shape.reduce((a, b) => a * b, 1));
  rng.fillUniform(d, lo, hi);
  return d;
}

const layer = (class_name: string, config: Obj, inbound?: string[]): Obj => ({
  class_name, name: config.name, config,
  ...(inbound ? { inbound_nodes: inbound.length ? [inbound.map((n) => [n, 0, 0, {}])] : [] } : {}),
});

function bnWeights(rng: Rng, name: string, c: number): [string, number[], Float32Array][] {
  return [
    [`${name}/gamma`, [c], rand(rng, [c], 0.5, 1.5)],
    [`${name}/beta`, [c], rand(rng, [c], -0.2, 0.2)],
    [`${name}/moving_mean`, [c], rand(rng, [c], -0.3, 0.3)],
    [`${name}/moving_variance`, [c], rand(rng, [c], 0.5, 2)],
  ];
}

function mlpFixture(rng: Rng): KerasFixture {
  const layers = [
    layer('Dense', { name: 'dense', units: 16, activation: 'relu', use_bias: true, batch_input_shape: [null, 12] }),
    layer('Dense', { name: 'dense_1', units: 16, activation: 'relu', use_bias: true }),
    layer('Dropout', { name: 'dropout', rate: 0.25 }),
    layer('Dense', { name: 'dense_2', units: 5, activation: 'linear', use_bias: true }),
  ];
  const weights: KerasFixture['weights'] = [
    ['dense/kernel', [12, 16], rand(rng, [12, 16])], ['dense/bias', [16], rand(rng, [16])],
    ['dense_1/kernel', [16, 16], rand(rng, [16, 16])], ['dense_1/bias', [16], rand(rng, [16])],
    ['dense_2/kernel', [16, 5], rand(rng, [16, 5])], ['dense_2/bias', [5], rand(rng, [5])],
  ];
  const b = new GraphBuilder();
  let h = b.input([12]);
  h = b.act('dense_relu', b.linear('dense', h, 12, 16), 'relu');
  h = b.act('dense_1_relu', b.linear('dense_1', h, 16, 16), 'relu');
  h = b.linear('dense_2', h, 16, 5);
  b.output(h);
  return { topology: { class_name: 'Sequential', config: { name: 'sequential', layers }, keras_version: '2.11.0', backend: 'tensorflow' }, weights, graph: b.build(), inputShape: [12] };
}

function cnnFixture(rng: Rng): KerasFixture {
  const eps = 1e-5;
  const layers = [
    layer('Conv2D', { name: 'conv2d', filters: 4, kernel_size: [3, 3], strides: [1, 1], padding: 'same', activation: 'linear', use_bias: true, batch_input_shape: [null, 8, 8, 3] }),
    layer('BatchNormalization', { name: 'batch_normalization', axis: [3], epsilon: eps, center: true, scale: true }),
    layer('Activation', { name: 'activation', activation: 'relu' }),
    layer('MaxPooling2D', { name: 'max_pooling2d', pool_size: [2, 2], strides: [2, 2], padding: 'valid' }),
    layer('Conv2D', { name: 'conv2d_1', filters: 6, kernel_size: [3, 3], strides: [1, 1], padding: 'same', activation: 'linear', use_bias: true }),
    layer('BatchNormalization', { name: 'batch_normalization_1', axis: -1, epsilon: eps }),
    layer('ReLU', { name: 're_lu' }),
    layer('MaxPooling2D', { name: 'max_pooling2d_1', pool_size: [2, 2], strides: null, padding: 'valid' }),
    layer('Flatten', { name: 'flatten', data_format: 'channels_last' }),
    layer('Dense', { name: 'dense', units: 5, activation: 'linear', use_bias: true }),
  ];
  const weights: KerasFixture['weights'] = [
    ['conv2d/kernel', [3, 3, 3, 4], rand(rng, [3, 3, 3, 4])], ['conv2d/bias', [4], rand(rng, [4])],
    ...bnWeights(rng, 'batch_normalization', 4),
    ['conv2d_1/kernel', [3, 3, 4, 6], rand(rng, [3, 3, 4, 6])], ['conv2d_1/bias', [6], rand(rng, [6])],
    ...bnWeights(rng, 'batch_normalization_1', 6),
    ['dense/kernel', [24, 5], rand(rng, [24, 5])], ['dense/bias', [5], rand(rng, [5])],
  ];
  const b = new GraphBuilder();
  let h = b.input([3, 8, 8]);
  h = b.conv('conv2d', h, 3, 4, 3, 1, 1, true);
  h = b.act('activation', b.batchNorm('batch_normalization', h, 4), 'relu');
  h = b.maxPool('max_pooling2d', h, 2);
  h = b.conv('conv2d_1', h, 4, 6, 3, 1, 1, true);
  h = b.act('re_lu', b.batchNorm('batch_normalization_1', h, 6), 'relu');
  h = b.maxPool('max_pooling2d_1', h, 2);
  h = b.flatten('flatten', h, 4);
  h = b.linear('dense', h, 24, 5);
  b.output(h);
  return { topology: { keras_version: '2.11.0', backend: 'tensorflow', model_config: { class_name: 'Sequential', config: { name: 'cnn', layers } } }, weights, graph: b.build(), inputShape: [8, 8, 3] };
}

function resFixture(rng: Rng): KerasFixture {
  const eps = 1e-5;
  const layers = [
    layer('InputLayer', { name: 'input_1', batch_input_shape: [null, 6, 6, 3] }, []),
    layer('Conv2D', { name: 'conv_a', filters: 4, kernel_size: [3, 3], padding: 'same', use_bias: false }, ['input_1']),
    layer('BatchNormalization', { name: 'bn_a', axis: 3, epsilon: eps }, ['conv_a']),
    layer('ReLU', { name: 'relu_a' }, ['bn_a']),
    layer('Conv2D', { name: 'conv_b', filters: 4, kernel_size: [3, 3], padding: 'same', use_bias: false }, ['relu_a']),
    layer('BatchNormalization', { name: 'bn_b', axis: 3, epsilon: eps }, ['conv_b']),
    layer('Add', { name: 'add' }, ['bn_b', 'relu_a']),
    layer('ReLU', { name: 'relu_b' }, ['add']),
    layer('GlobalAveragePooling2D', { name: 'gap' }, ['relu_b']),
    layer('Dense', { name: 'fc', units: 3, use_bias: true }, ['gap']),
  ];
  // Weight names as Keras writes them inside a model scope, with ":0" suffixes.
  const weights: KerasFixture['weights'] = [
    ['model/conv_a/kernel:0', [3, 3, 3, 4], rand(rng, [3, 3, 3, 4])],
    ...bnWeights(rng, 'model/bn_a', 4),
    ['model/conv_b/kernel:0', [3, 3, 4, 4], rand(rng, [3, 3, 4, 4])],
    ...bnWeights(rng, 'model/bn_b', 4),
    ['model/fc/kernel:0', [4, 3], rand(rng, [4, 3])], ['model/fc/bias:0', [3], rand(rng, [3])],
  ];
  const b = new GraphBuilder();
  const x = b.input([3, 6, 6]);
  const a = b.act('relu_a', b.batchNorm('bn_a', b.conv('conv_a', x, 3, 4, 3, 1, 1, false), 4), 'relu');
  const c = b.batchNorm('bn_b', b.conv('conv_b', a, 4, 4, 3, 1, 1, false), 4);
  let h = b.act('relu_b', b.add('add', [c, a]), 'relu');
  h = b.flatten('flatten', b.adaptiveAvgPool('gap', h, [1, 1]), 1);
  b.output(b.linear('fc', h, 4, 3));
  return {
    topology: { class_name: 'Functional', config: { name: 'model', layers, input_layers: [['input_1', 0, 0]], output_layers: [['fc', 0, 0]] } },
    weights, graph: b.build(), inputShape: [6, 6, 3],
  };
}

function f32Bytes(d: Float32Array): Uint8Array {
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

/** Writes model.json + shards: group 0 split over two shard files, the last two weights in group 1. */
function writeFixture(dir: string, f: KerasFixture, opts: { splitAt?: number } = {}): string {
  mkdirSync(dir, { recursive: true });
  const g0 = f.weights.slice(0, -2);
  const g1 = f.weights.slice(-2);
  const b0 = Buffer.concat(g0.map(([, , d]) => f32Bytes(d)));
  const cut = opts.splitAt ?? Math.floor(b0.length / 2) + 1;
  writeFileSync(join(dir, 'group1-shard1of2.bin'), b0.subarray(0, cut));
  writeFileSync(join(dir, 'group1-shard2of2.bin'), b0.subarray(cut));
  writeFileSync(join(dir, 'group2-shard1of1.bin'), Buffer.concat(g1.map(([, , d]) => f32Bytes(d))));
  const entry = ([name, shape]: [string, number[], Float32Array]) => ({ name: name.replace(/:0$/, ''), shape, dtype: 'float32' });
  const json = {
    format: 'layers-model', generatedBy: 'keras v2.11.0', convertedBy: 'TensorFlow.js Converter v4.2.0',
    modelTopology: f.topology,
    weightsManifest: [
      { paths: ['group1-shard1of2.bin', 'group1-shard2of2.bin'], weights: g0.map(entry) },
      { paths: ['group2-shard1of1.bin'], weights: g1.map(entry) },
    ],
  };
  const path = join(dir, 'model.json');
  writeFileSync(path, JSON.stringify(json));
  return path;
}

// ---------------------------------------------------------------- NHWC reference interpreter

/** Runs the Keras layers used in these tests on NHWC input [N, ...inputShape], Keras weights. */
function kerasForward(topo: KerasTopology, w: ReadonlyMap<string, { shape: number[]; data: Float32Array }>, x: Float32Array, n: number, inputShape: number[]): Float32Array {
  const find = (layerName: string, p: string) => {
    for (const [k, v] of w) {
      const parts = k.replace(/:0$/, '').split('/');
      if (parts[parts.length - 2] === layerName && parts[parts.length - 1] === p) return v;
    }
    throw new Error(`no weight ${layerName}/${p}`);
  };
  type V = { shape: number[]; data: Float32Array }; // per batch: shape excludes N
  const vals = new Map<string, V>();
  for (const l of topo.layers) {
    const ins = l.className === 'InputLayer' ? [] : l.inbound[0].map((r) => vals.get(r.layer)!);
    const xin = ins[0];
    let out: V;
    const cfg = l.config;
    switch (l.className) {
      case 'InputLayer': out = { shape: [...inputShape], data: x }; break;
      case 'Dense': {
        const k = find(l.name, 'kernel');
        const [nin, units] = k.shape;
        const bias = cfg.use_bias === false ? null : find(l.name, 'bias');
        const rows = xin.data.length / nin;
        const y = new Float32Array(rows * units);
        for (let r = 0; r < rows; r++) for (let o = 0; o < units; o++) {
          let s = bias ? bias.data[o] : 0;
          for (let i = 0; i < nin; i++) s += xin.data[r * nin + i] * k.data[i * units + o];
          y[r * units + o] = cfg.activation === 'relu' ? Math.max(0, s) : s;
        }
        out = { shape: [...xin.shape.slice(0, -1), units], data: y };
        break;
      }
      case 'Conv2D': {
        const k = find(l.name, 'kernel');
        const [kh, kw, cin, cout] = k.shape;
        const bias = cfg.use_bias === false ? null : find(l.name, 'bias');
        const [H, W] = xin.shape;
        const y = new Float32Array(n * H * W * cout);
        const ph = (kh - 1) >> 1;
        const pw = (kw - 1) >> 1;
        for (let b = 0; b < n; b++) for (let h = 0; h < H; h++) for (let ww = 0; ww < W; ww++) for (let o = 0; o < cout; o++) {
          let s = bias ? bias.data[o] : 0;
          for (let a = 0; a < kh; a++) for (let c = 0; c < kw; c++) {
            const hh = h + a - ph;
            const wc = ww + c - pw;
            if (hh < 0 || hh >= H || wc < 0 || wc >= W) continue;
            for (let i = 0; i < cin; i++) s += xin.data[((b * H + hh) * W + wc) * cin + i] * k.data[((a * kw + c) * cin + i) * cout + o];
          }
          y[((b * H + h) * W + ww) * cout + o] = cfg.activation === 'relu' ? Math.max(0, s) : s;
        }
        out = { shape: [H, W, cout], data: y };
        break;
      }
      case 'BatchNormalization': {
        const g = find(l.name, 'gamma');
        const be = find(l.name, 'beta');
        const m = find(l.name, 'moving_mean');
        const v = find(l.name, 'moving_variance');
        const C = g.data.length;
        const eps = cfg.epsilon as number;
        out = { shape: xin.shape, data: xin.data.map((t, i) => ((t - m.data[i % C]) / Math.sqrt(v.data[i % C] + eps)) * g.data[i % C] + be.data[i % C]) };
        break;
      }
      case 'Activation': case 'ReLU': out = { shape: xin.shape, data: xin.data.map((t) => Math.max(0, t)) }; break;
      case 'Dropout': out = xin; break;
      case 'MaxPooling2D': {
        const [H, W, C] = xin.shape;
        const Ho = H >> 1;
        const Wo = W >> 1;
        const y = new Float32Array(n * Ho * Wo * C);
        for (let b = 0; b < n; b++) for (let h = 0; h < Ho; h++) for (let ww = 0; ww < Wo; ww++) for (let c = 0; c < C; c++) {
          let m = -Infinity;
          for (let a = 0; a < 2; a++) for (let d = 0; d < 2; d++) m = Math.max(m, xin.data[((b * H + 2 * h + a) * W + 2 * ww + d) * C + c]);
          y[((b * Ho + h) * Wo + ww) * C + c] = m;
        }
        out = { shape: [Ho, Wo, C], data: y };
        break;
      }
      case 'GlobalAveragePooling2D': {
        const [H, W, C] = xin.shape;
        const y = new Float32Array(n * C);
        for (let b = 0; b < n; b++) for (let i = 0; i < H * W; i++) for (let c = 0; c < C; c++) y[b * C + c] += xin.data[(b * H * W + i) * C + c] / (H * W);
        out = { shape: [C], data: y };
        break;
      }
      case 'Flatten': out = { shape: [xin.shape.reduce((a, b) => a * b, 1)], data: xin.data }; break;
      case 'Add': out = { shape: xin.shape, data: xin.data.map((t, i) => t + ins[1].data[i]) }; break;
      default: throw new Error(`kerasForward: ${l.className}`);
    }
    vals.set(l.name, out);
  }
  return vals.get(topo.outputs[0].layer)!.data;
}

/** NHWC batch → NCHW tensor for our forward pass. */
function toNchw(x: Float32Array, n: number, s: number[]): Tensor {
  if (s.length === 1) return new Tensor(x, [n, s[0]]);
  const [H, W, C] = s;
  const y = new Float32Array(x.length);
  for (let b = 0; b < n; b++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) for (let c = 0; c < C; c++) y[((b * C + c) * H + h) * W + w] = x[((b * H + h) * W + w) * C + c];
  return new Tensor(y, [n, C, H, W]);
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const isBuffer = (k: string) => /running_(mean|var)$/.test(k);

let tmp = '';
before(() => { tmp = mkdtempSync(join(tmpdir(), 'rebasin-tfjs-')); });
after(() => { rmSync(tmp, { recursive: true, force: true }); });

const fixtures: [string, (rng: Rng) => KerasFixture][] = [
  ['Sequential MLP (Dense, Dropout)', mlpFixture],
  ['Sequential CNN (Conv2D, BN, ReLU, MaxPool, channels-last Flatten, Dense)', cnnFixture],
  ['functional residual block (Input, Conv2D, BN, Add, GlobalAveragePooling2D, Dense)', resFixture],
];

describe('TF.js layers models: layouts, specs, function preserved', () => {
  fixtures.forEach(([name, make], fi) => {
    test(name, async () => {
      const rng = new Rng(10 + fi);
      const f = make(rng);
      const path = writeFixture(join(tmp, `fx${fi}`), f);
      const m = await readTfjs(path);
      assert.equal(m.tensors.size, f.weights.length);
      for (const [k, shape, data] of f.weights) {
        const r = m.tensors.get(k.replace(/:0$/, ''))!;
        assert.deepEqual(r.shape, shape);
        assert.deepEqual([...r.data], [...data]);
      }
      const conv = tfjsToPytorchLayout(m);
      const spec = conv.spec.spec;
      assert.deepEqual(conv.spec.warnings, []);
      assert.deepEqual(spec, deriveSpec(f.graph), 'spec equals deriveSpec of the same network');
      const pt = recordsToState(conv.tensors);
      assert.deepEqual(validateSpec(spec, pt, { strict: true }), []);
      // Converted weights run in our NCHW forward exactly as Keras runs the originals.
      const n = 2;
      const x = rand(rng, [n, ...f.inputShape], -1, 1);
      const yKeras = kerasForward(m.topology, m.tensors, x, n, f.inputShape);
      const params: Params = new Map([...pt].filter(([k]) => !isBuffer(k)));
      const buffers: Params = new Map([...pt].filter(([k]) => isBuffer(k)));
      const yOurs = runGraph(f.graph, params, toNchw(x, n, f.inputShape), { training: false, buffers });
      assert.ok(maxDiff(yOurs.data, yKeras) < 1e-4, `our forward differs from Keras by ${maxDiff(yOurs.data, yKeras)}`);
      // Permute in PyTorch layout, convert back: the Keras model computes the same function.
      const perms = randomPerms(spec, rng);
      const permuted = stateToRecords(applyHard(spec, pt, perms));
      const back = pytorchToTfjsLayout(m, permuted);
      assert.deepEqual([...back.keys()], [...m.tensors.keys()]);
      const yPerm = kerasForward(m.topology, back, x, n, f.inputShape);
      assert.ok(maxDiff(yPerm, yKeras) < 1e-4, `permuted Keras model differs by ${maxDiff(yPerm, yKeras)}`);
      assert.ok([...back].some(([k, r]) => maxDiff(r.data, m.tensors.get(k)!.data) > 0), 'the permutation moved nothing');
      // Identity conversion round trip is exact.
      const rt = pytorchToTfjsLayout(m, conv.tensors);
      for (const [k, r] of rt) assert.deepEqual([...r.data], [...m.tensors.get(k)!.data], k);
      // Written back as a TF.js model and read again: same function.
      const out = join(tmp, `fx${fi}-out`, 'model.json');
      mkdirSync(join(tmp, `fx${fi}-out`));
      await writeTfjs(out, m.modelJson, back);
      const m2 = await readTfjs(out);
      assert.ok(maxDiff(kerasForward(m2.topology, m2.tensors, x, n, f.inputShape), yKeras) < 1e-4);
      // loadTensors gives the PyTorch view by default.
      const lt = await loadTensors(path);
      assert.equal(lt.format, 'tfjs');
      assert.deepEqual([...lt.tensors.keys()].sort(), [...pt.keys()].sort());
      const native = await loadTensors(path, { layout: 'native' });
      assert.ok(native.tensors.has(f.weights[0][0].replace(/:0$/, '')));
    });
  });

  test('the channels-last Flatten reorders the Dense kernel to channel-major', () => {
    const f = cnnFixture(new Rng(3));
    const m = { topology: parseTfjsModelJson(JSON.stringify({ format: 'layers-model', modelTopology: f.topology, weightsManifest: [] })).topology, tensors: new Map(f.weights.map(([k, s, d]) => [k, { shape: s, data: d }])) as StateDict };
    const r = inferSpecFromTfjs(m);
    const plan = r.params.find((p) => p.keras === 'dense/kernel')!;
    assert.deepEqual(plan.reorder, { spatial: 4, channels: 6 });
    assert.deepEqual(r.spec.axes['dense.weight'], [null, { perm: 'P_conv2d_1', inner: 4 }]);
    const k = m.tensors.get('dense/kernel')!;
    const w = tfjsToPytorchLayout(m).tensors.get('dense.weight')!;
    // PyTorch feature c·4 + s comes from Keras row s·6 + c.
    for (let o = 0; o < 5; o++) for (let c = 0; c < 6; c++) for (let s = 0; s < 4; s++) assert.equal(w.data[o * 24 + c * 4 + s], k.data[(s * 6 + c) * 5 + o]);
  });
});

describe('TF.js: layers the inference does not understand', () => {
  const base = (layers: Obj[], extra: [string, number[], Float32Array][]) => {
    const rng = new Rng(4);
    const weights: [string, number[], Float32Array][] = [
      ['conv_a/kernel', [3, 3, 3, 4], rand(rng, [3, 3, 3, 4])], ['conv_b/kernel', [3, 3, 3, 4], rand(rng, [3, 3, 3, 4])], ...extra,
    ];
    const topo = { class_name: 'Functional', config: { name: 'm', layers, input_layers: [['in', 0, 0]], output_layers: [[layers[layers.length - 1].name, 0, 0]] } };
    const m = parseTfjsModelJson(JSON.stringify({ modelTopology: topo, weightsManifest: [{ paths: ['x.bin'], weights: weights.map(([name, shape]) => ({ name, shape, dtype: 'float32' })) }] }));
    return inferSpecFromTfjs({ topology: m.topology, tensors: new Map(weights.map(([k, s, d]) => [k, { shape: s, data: d }])) });
  };
  const convs = [
    layer('InputLayer', { name: 'in', batch_input_shape: [null, 5, 5, 3] }, []),
    layer('Conv2D', { name: 'conv_a', filters: 4, kernel_size: 3, padding: 'same', use_bias: false }, ['in']),
    layer('Conv2D', { name: 'conv_b', filters: 4, kernel_size: 3, padding: 'same', use_bias: false }, ['in']),
  ];
  test('Concatenate on the channel axis permutes both branches on their sub-ranges (spec format 2)', () => {
    const r = base([...convs, layer('Concatenate', { name: 'cat', axis: -1 }, ['conv_a', 'conv_b']), layer('Flatten', { name: 'f' }, ['cat']), layer('Dense', { name: 'd', units: 2 }, ['f'])],
      [['d/kernel', [200, 2], new Float32Array(400)], ['d/bias', [2], new Float32Array(2)]]);
    assert.deepEqual(r.spec.perms, { P_conv_a: 4, P_conv_b: 4 });
    assert.deepEqual(r.warnings, []);
    // The Dense after the (channel-major) flatten reads both branches, each on its sub-range.
    assert.deepEqual(r.spec.axes['d.weight'][1], { segments: [{ perm: 'P_conv_a', inner: 25 }, { perm: 'P_conv_b', inner: 25 }] });
  });
  test('an unknown layer (Lambda) is opaque and fixes the group; Add unions; Reshape to one axis is a Flatten', () => {
    const r = base([...convs, layer('Add', { name: 'add' }, ['conv_a', 'conv_b']), layer('Lambda', { name: 'lam', function: 'x' }, ['add']), layer('Dense', { name: 'd', units: 2 }, ['lam'])],
      [['d/kernel', [100, 2], new Float32Array(200)], ['d/bias', [2], new Float32Array(2)]]);
    assert.deepEqual(r.spec.perms, {});
    assert.match(r.warnings.join('\n'), /node "lam": Lambda: layer class Lambda is not supported/);
    assert.deepEqual(r.imported.opaque.map((o) => o.node), ['lam']);
    const r2 = base([...convs, layer('Add', { name: 'add' }, ['conv_a', 'conv_b']), layer('GlobalMaxPooling2D', { name: 'g' }, ['add']), layer('Dense', { name: 'd', units: 2 }, ['g'])],
      [['d/kernel', [4, 2], new Float32Array(8)], ['d/bias', [2], new Float32Array(2)]]);
    assert.deepEqual(r2.spec.perms, { P_conv_a: 4 });
    assert.deepEqual(r2.spec.axes['conv_b.weight'], ['P_conv_a', null, null, null]);
    const r3 = base([...convs, layer('Add', { name: 'add' }, ['conv_a', 'conv_b']), layer('Reshape', { name: 'rs', target_shape: [-1] }, ['add']), layer('Dense', { name: 'd', units: 2 }, ['rs'])],
      [['d/kernel', [100, 2], new Float32Array(200)], ['d/bias', [2], new Float32Array(2)]]);
    assert.deepEqual(r3.spec.perms, { P_conv_a: 4 });
    assert.deepEqual(r3.spec.axes['d.weight'], [null, { perm: 'P_conv_a', inner: 25 }]);
    assert.deepEqual(r3.params.find((p) => p.keras === 'd/kernel')?.reorder, { spatial: 25, channels: 4 });
  });
  test('a Flatten of unknown spatial size fixes the group', () => {
    const layers = [
      layer('InputLayer', { name: 'in', batch_input_shape: [null, null, null, 3] }, []),
      layer('Conv2D', { name: 'conv_a', filters: 4, kernel_size: 3, padding: 'same', use_bias: false }, ['in']),
      layer('Flatten', { name: 'f' }, ['conv_a']), layer('Dense', { name: 'd', units: 2 }, ['f']),
    ];
    const r = base(layers, [['d/kernel', [100, 2], new Float32Array(200)], ['d/bias', [2], new Float32Array(2)]]);
    assert.deepEqual(r.spec.perms, {});
    assert.match(r.warnings.join('\n'), /unknown spatial size/);
  });
  test('a layer whose weight is missing from the manifest is a FormatError naming it', () => {
    assert.throws(() => base([...convs.slice(0, 2), layer('Dense', { name: 'd', units: 2 }, ['conv_a'])], []),
      (e: unknown) => e instanceof FormatError && /layer "d": weight "kernel" of Dense layer "d" is not in weightsManifest/.test(e.message));
  });
});

describe('TF.js reader errors', () => {
  const setupDir = (name: string) => {
    const f = cnnFixture(new Rng(6));
    return { f, path: writeFixture(join(tmp, name), f) };
  };
  test('truncated shard: FormatError naming the file and the weight', async () => {
    const { path } = setupDir('trunc');
    const shard = join(tmp, 'trunc', 'group2-shard1of1.bin');
    writeFileSync(shard, readFileSync(shard).subarray(0, 50));
    await assert.rejects(readTfjs(path), (e: unknown) => e instanceof FormatError && e.file === shard && e.field === 'dense/kernel' && /truncated shard/.test(e.message));
  });
  test('extra bytes: FormatError, wrong byte length', async () => {
    const { path } = setupDir('long');
    const shard = join(tmp, 'long', 'group2-shard1of1.bin');
    writeFileSync(shard, Buffer.concat([readFileSync(shard), Buffer.alloc(4)]));
    await assert.rejects(readTfjs(path), (e: unknown) => e instanceof FormatError && e.file === shard && /wrong byte length/.test(e.message) && /dense\/bias/.test(e.message));
  });
  test('missing shard file: FormatError naming it and its first weight', async () => {
    const { path } = setupDir('missing');
    const shard = join(tmp, 'missing', 'group1-shard2of2.bin');
    rmSync(shard);
    await assert.rejects(readTfjs(path), (e: unknown) => e instanceof FormatError && e.file === shard && /no such file/.test(e.message) && /conv2d\/kernel/.test(e.message));
  });
  const jsonCases: [string, unknown, RegExp][] = [
    ['not JSON', '{"format": ', /json: not valid JSON/],
    ['a graph model', { format: 'graph-model', modelTopology: {}, weightsManifest: [] }, /format: a TF\.js graph model/],
    ['no manifest', { format: 'layers-model', modelTopology: { class_name: 'Sequential', config: { layers: [] } } }, /weightsManifest: missing/],
    ['string weights', { modelTopology: { class_name: 'Sequential', config: { layers: [] } }, weightsManifest: [{ paths: ['a'], weights: [{ name: 'w', shape: [1], dtype: 'string' }] }] }, /weight "w": dtype "string" is not supported/],
    ['bad shape', { modelTopology: {}, weightsManifest: [{ paths: ['a'], weights: [{ name: 'w', shape: [-1], dtype: 'float32' }] }] }, /weight "w": "shape" must be/],
    ['absolute shard path', { modelTopology: {}, weightsManifest: [{ paths: ['/etc/passwd'], weights: [] }] }, /only paths relative to model\.json/],
    ['duplicate weights', { modelTopology: {}, weightsManifest: [{ paths: ['a'], weights: [{ name: 'w', shape: [1], dtype: 'float32' }, { name: 'w', shape: [1], dtype: 'float32' }] }] }, /weight "w": appears twice/],
    ['no topology class', { modelTopology: { config: {} }, weightsManifest: [] }, /modelTopology\.class_name: missing/],
  ];
  for (const [what, obj, re] of jsonCases) {
    test(`model.json: ${what}`, () => {
      assert.throws(() => parseTfjsModelJson(typeof obj === 'string' ? obj : JSON.stringify(obj), 'model.json'), (e: unknown) => e instanceof FormatError && e.file === 'model.json' && re.test(e.message));
    });
  }
  test('quantised weights (float16, uint8 affine) and int32 decode', () => {
    const half = new Uint16Array([0x3c00, 0xb800]); // 1, -0.5
    const q8 = new Uint8Array([0, 10, 255]);
    const i32 = new Int32Array([-3, 7]);
    const manifest = parseTfjsModelJson(JSON.stringify({
      modelTopology: { class_name: 'Sequential', config: { layers: [layer('Dense', { name: 'd', units: 1, batch_input_shape: [null, 2] })] } },
      weightsManifest: [{
        paths: ['a.bin'], weights: [
          { name: 'h', shape: [2], dtype: 'float32', quantization: { dtype: 'float16' } },
          { name: 'q', shape: [3], dtype: 'float32', quantization: { dtype: 'uint8', scale: 0.5, min: -1 } },
          { name: 'i', shape: [2], dtype: 'int32' },
        ],
      }],
    })).weightsManifest;
    const bytes = Buffer.concat([Buffer.from(half.buffer), Buffer.from(q8), Buffer.from(new Uint8Array(i32.buffer))]);
    const d = decodeTfjsWeights(manifest, [[bytes.subarray(0, 5), bytes.subarray(5)]]);
    assert.deepEqual([...d.get('h')!.data], [1, -0.5]);
    assert.deepEqual([...d.get('q')!.data], [-1, 4, 126.5]);
    assert.deepEqual([...d.get('i')!.data], [-3, 7]);
  });
});

// ---------------------------------------------------------------- fuzzing

const CASES = 1000;
const CALL_LIMIT_MS = 1000;

function fuzzCall(label: string, fn: () => void, stats: { ok: number; err: number }): void {
  const t0 = performance.now();
  try {
    fn();
    stats.ok++;
  } catch (e) {
    if (!(e instanceof FormatError)) assert.fail(`${label}: threw ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)} instead of FormatError`);
    assert.ok(e.message.startsWith(`${e.file}: `), `${label}: malformed FormatError ${e.message}`);
    stats.err++;
  }
  const ms = performance.now() - t0;
  assert.ok(ms < CALL_LIMIT_MS, `${label}: took ${ms.toFixed(0)} ms`);
}

/** The whole in-memory pipeline: parse, decode shards, infer the spec, convert layouts. */
function pipeline(text: string, shards: Uint8Array[][]): void {
  const m = parseTfjsModelJson(text, 'fuzz/model.json');
  const tensors = decodeTfjsWeights(m.weightsManifest, shards, shards.map((g, i) => g.map((_, k) => `fuzz/g${i}s${k}.bin`)));
  const model = { topology: m.topology, tensors, source: 'fuzz/model.json' };
  const conv = tfjsToPytorchLayout(model);
  pytorchToTfjsLayout(model, conv.tensors);
}

const VOCAB = ['format', 'layers-model', 'modelTopology', 'weightsManifest', 'paths', 'weights', 'name', 'shape', 'dtype', 'float32', 'int32', 'class_name', 'config', 'layers',
  'Sequential', 'Functional', 'Dense', 'Conv2D', 'Flatten', 'Add', 'inbound_nodes', 'input_layers', 'output_layers', 'units', 'filters', 'kernel_size', 'batch_input_shape', 'quantization', 'model_config'];

function randomJson(rng: Rng, depth: number): unknown {
  const k = rng.int(depth > 3 ? 4 : 7);
  switch (k) {
    case 0: return rng.int(3) === 0 ? null : rng.int(2) === 0;
    case 1: return [0, 1, -1, 2, 3, 1e9, 0.5, NaN][rng.int(8)];
    case 2: return VOCAB[rng.int(VOCAB.length)];
    case 3: return rng.int(5) - 1;
    case 4: case 5: return Array.from({ length: rng.int(4) }, () => randomJson(rng, depth + 1));
    default: {
      const o: Obj = {};
      for (let i = rng.int(5); i > 0; i--) o[VOCAB[rng.int(VOCAB.length)]] = randomJson(rng, depth + 1);
      return o;
    }
  }
}

describe('fuzz', () => {
  const f = cnnFixture(new Rng(7));
  const g0 = Buffer.concat(f.weights.slice(0, -2).map(([, , d]) => f32Bytes(d)));
  const g1 = Buffer.concat(f.weights.slice(-2).map(([, , d]) => f32Bytes(d)));
  const entry = ([name, shape]: [string, number[], Float32Array]) => ({ name, shape, dtype: 'float32' });
  const valid = {
    format: 'layers-model', modelTopology: f.topology,
    weightsManifest: [{ paths: ['a.bin', 'b.bin'], weights: f.weights.slice(0, -2).map(entry) }, { paths: ['c.bin'], weights: f.weights.slice(-2).map(entry) }],
  };
  const shards = [[g0.subarray(0, 100), g0.subarray(100)], [g1]];

  test('the valid fixture passes the pipeline', () => {
    pipeline(JSON.stringify(valid), shards);
  });

  test(`${CASES} random inputs: result or FormatError`, () => {
    const rng = new Rng(99);
    const stats = { ok: 0, err: 0 };
    for (let c = 0; c < CASES; c++) {
      let text: string;
      if (c % 3 === 0) text = Buffer.from(Array.from({ length: rng.int(200) }, () => rng.int(256))).toString('latin1');
      else {
        const j = randomJson(rng, 0);
        // Often give it the top-level shape so the parser gets further.
        text = JSON.stringify(c % 3 === 1 && j && typeof j === 'object' && !Array.isArray(j) ? { ...valid, ...(j as Obj) } : j) ?? 'null';
      }
      fuzzCall(`random #${c}`, () => pipeline(text, shards), stats);
    }
    assert.equal(stats.ok + stats.err, CASES);
  });

  test(`${CASES} mutated model.json texts and shards: result or FormatError`, () => {
    const rng = new Rng(98);
    const text = JSON.stringify(valid);
    const stats = { ok: 0, err: 0 };
    const mutateValue = (v: unknown, depth: number): unknown => {
      if (Array.isArray(v)) {
        const a = v.map((x) => (rng.int(12) === 0 ? mutateValue(x, depth + 1) : x));
        if (rng.int(10) === 0) a.splice(rng.int(a.length + 1), 1);
        if (rng.int(15) === 0) a.push(randomJson(rng, 2));
        return a;
      }
      if (v && typeof v === 'object') {
        const o: Obj = {};
        for (const [k, x] of Object.entries(v as Obj)) {
          if (rng.int(25) === 0) continue; // drop a key
          o[k] = rng.int(6) === 0 ? mutateValue(x, depth + 1) : x;
        }
        return o;
      }
      return rng.int(3) === 0 ? randomJson(rng, 3) : typeof v === 'number' ? [0, -1, 1, v + 1, v * 7, 1e12][rng.int(6)] : v;
    };
    for (let c = 0; c < CASES; c++) {
      let t = text;
      let sh = shards;
      const kind = c % 4;
      if (kind === 0) {
        const b = Buffer.from(t);
        for (let k = 1 + rng.int(4); k > 0; k--) b[rng.int(b.length)] ^= 1 << rng.int(7);
        t = b.toString('latin1');
      } else if (kind === 1) t = t.slice(0, rng.int(t.length));
      else if (kind === 2) t = JSON.stringify(mutateValue(JSON.parse(text), 0));
      else {
        // Shards: truncated, extended or bit-flipped.
        const s = Buffer.from(shards[0][1]);
        const m = rng.int(3);
        const s2 = m === 0 ? s.subarray(0, rng.int(s.length)) : m === 1 ? Buffer.concat([s, Buffer.alloc(1 + rng.int(8))]) : (s[rng.int(s.length)] ^= 0xff, s);
        sh = [[shards[0][0], s2], shards[1]];
        if (rng.int(2)) t = JSON.stringify(mutateValue(JSON.parse(text), 0));
      }
      fuzzCall(`mutation #${c} (kind ${kind})`, () => pipeline(t, sh), stats);
    }
    assert.ok(stats.ok > 0 && stats.err > 0, `expected both outcomes, got ${JSON.stringify(stats)}`);
  });
});
