/**
 * The TF.js importer's graphs RUN: against hand-computed outputs (Dense, Conv + channels-last
 * Flatten, depthwise and causal 1-D convs), against our built-in models on the same weights
 * (MLP, small VGG, ResNet-20 written as Keras layers), gradients against finite differences,
 * and permutations by the inferred spec keep the function.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { F, Rng, Tensor } from '../src/core/index.js';
import { deriveSpec, initGraph, mlp, resnet20, runGraph, vggSmall, type GraphNode, type Model, type ModelGraph, type Params } from '../src/models/index.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import { checkEquivalence } from '../src/permutation/equivalence.js';
import { validateSpec } from '../src/permutation/spec.js';
import { recordsToState, stateToRecords } from '../src/io/checkpoint.js';
import type { StateDict } from '../src/io/records.js';
import { parseTfjsModelJson, type KerasTopology } from '../src/io/tfjs.js';
import { importTfjs, pytorchToTfjsLayout, tfjsToPytorchLayout, type ImportTfjsOptions } from '../src/io/tfjs-import.js';
import { InputError } from '../src/errors.js';
import { gradcheck } from './helpers/gradcheck.js';

type Obj = Record<string, unknown>;
const layer = (class_name: string, config: Obj, inbound?: string[]): Obj => ({
  class_name, name: config.name, config, ...(inbound ? { inbound_nodes: inbound.length ? [inbound.map((n) => [n, 0, 0, {}])] : [] } : {}),
});

/** A functional Keras model: layers (the first an InputLayer), output = the last layer; weights by Keras name. */
function keras(layers: Obj[], weights: [string, number[], ArrayLike<number>][]): { topology: KerasTopology; tensors: StateDict } {
  const topo = { class_name: 'Functional', config: { name: 'm', layers, input_layers: [[layers[0].name, 0, 0]], output_layers: [[layers[layers.length - 1].name, 0, 0]] } };
  const m = parseTfjsModelJson(JSON.stringify({ modelTopology: topo, weightsManifest: [{ paths: ['w.bin'], weights: weights.map(([name, shape]) => ({ name, shape, dtype: 'float32' })) }] }));
  return { topology: m.topology, tensors: new Map(weights.map(([k, s, d]) => [k, { shape: s, data: Float32Array.from(d) }])) };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const isBuffer = (k: string) => /running_(mean|var)$/.test(k);
function split(state: Params): { params: Params; buffers: Params } {
  return { params: new Map([...state].filter(([k]) => !isBuffer(k))), buffers: new Map([...state].filter(([k]) => isBuffer(k))) };
}

/** Imports, converts the Keras weights and runs the graph in eval mode. */
function runImported(m: { topology: KerasTopology; tensors: StateDict }, x: Tensor, opts: ImportTfjsOptions = {}): Tensor {
  const imp = importTfjs(m, opts);
  assert.deepEqual(imp.opaque, []);
  const { params, buffers } = split(recordsToState(tfjsToPytorchLayout(m, opts).tensors));
  return runGraph(imp.graph, params, x, { training: false, buffers });
}

describe('TF.js import: hand-computed outputs', () => {
  test('Dense(relu) → Dense', () => {
    const m = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, 2] }, []),
      layer('Dense', { name: 'd1', units: 2, activation: 'relu' }, ['in']),
      layer('Dense', { name: 'd2', units: 1 }, ['d1']),
    ], [['d1/kernel', [2, 2], [1, 2, 3, 4]], ['d1/bias', [2], [0.5, -1]], ['d2/kernel', [2, 1], [1, -1]], ['d2/bias', [1], [0.25]]]);
    // x = [2, 1]: x·K + b = [2·1 + 1·3 + 0.5, 2·2 + 1·4 − 1] = [5.5, 7]; 5.5 − 7 + 0.25. x = [−1, 0]: relu → [0, 0]; 0.25.
    const y = runImported(m, new Tensor(Float32Array.from([2, 1, -1, 0]), [2, 2]));
    assert.deepEqual([...y.data], [-1.25, 0.25]);
  });

  test('Conv2D → channels-last Flatten → Dense: Keras feature order', () => {
    // Filter 0 sums each 2×2 window, filter 1 doubles it; the Dense weights the Keras (h, w, c) features 1…8.
    const k = new Float32Array(8);
    for (let i = 0; i < 4; i++) { k[2 * i] = 1; k[2 * i + 1] = 2; } // [kh, kw, in=1, out=2]
    const m = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, 3, 3, 1] }, []),
      layer('Conv2D', { name: 'conv', filters: 2, kernel_size: 2, padding: 'valid', use_bias: false }, ['in']),
      layer('Flatten', { name: 'flat' }, ['conv']),
      layer('Dense', { name: 'fc', units: 1 }, ['flat']),
    ], [['conv/kernel', [2, 2, 1, 2], k], ['fc/kernel', [8, 1], [1, 2, 3, 4, 5, 6, 7, 8]], ['fc/bias', [1], [1]]]);
    // x = 1…9 (3×3): window sums 12, 16, 24, 28; features (h, w, c) = 12, 24, 16, 32, 24, 48, 28, 56.
    const x = new Tensor(Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]), [1, 1, 3, 3]);
    const expected = 12 * 1 + 24 * 2 + 16 * 3 + 32 * 4 + 24 * 5 + 48 * 6 + 28 * 7 + 56 * 8 + 1;
    assert.equal(expected, 1289);
    assert.deepEqual([...runImported(m, x).data], [expected]);
    // The same model fed NHWC (C = 1: the same numbers).
    assert.deepEqual([...runImported(m, new Tensor(x.data, [1, 3, 3, 1]), { inputLayout: 'channels-last' }).data], [expected]);
  });

  test('SeparableConv2D equals DepthwiseConv2D then a 1×1 Conv2D on the same weights', () => {
    const rng = new Rng(9);
    const r = (n: number) => Float32Array.from({ length: n }, () => 2 * rng.uniform() - 1);
    const [dk, pk, b] = [r(3 * 3 * 3 * 2), r(6 * 4), r(4)];
    const x = new Tensor(r(2 * 3 * 7 * 7), [2, 3, 7, 7]);
    const sep = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, 7, 7, 3] }, []),
      layer('SeparableConv2D', { name: 's', filters: 4, kernel_size: 3, strides: 2, padding: 'same', depth_multiplier: 2, activation: 'relu' }, ['in']),
    ], [['s/depthwise_kernel', [3, 3, 3, 2], dk], ['s/pointwise_kernel', [1, 1, 6, 4], pk], ['s/bias', [4], b]]);
    const two = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, 7, 7, 3] }, []),
      layer('DepthwiseConv2D', { name: 'd', kernel_size: 3, strides: 2, padding: 'same', depth_multiplier: 2, use_bias: false }, ['in']),
      layer('Conv2D', { name: 'p', filters: 4, kernel_size: 1, activation: 'relu' }, ['d']),
    ], [['d/depthwise_kernel', [3, 3, 3, 2], dk], ['p/kernel', [1, 1, 6, 4], pk], ['p/bias', [4], b]]);
    const y = runImported(sep, x);
    assert.deepEqual(y.shape, [2, 4, 4, 4]);
    assert.ok(maxDiff(y.data, runImported(two, x).data) < 1e-6);
    const back = pytorchToTfjsLayout(sep, tfjsToPytorchLayout(sep).tensors);
    for (const [k, t] of back) assert.deepEqual([...t.data], [...sep.tensors.get(k)!.data], k);
  });

  test('Permute, Reshape, Cropping2D, Concatenate along H and Flatten keep Keras order', () => {
    const seq = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, 2, 3] }, []),
      layer('Permute', { name: 'pm', dims: [2, 1] }, ['in']),
      layer('Reshape', { name: 'rs', target_shape: [6] }, ['pm']),
    ], []);
    // [[0, 1, 2], [3, 4, 5]]ᵀ flattened.
    assert.deepEqual([...runImported(seq, new Tensor(Float32Array.from([0, 1, 2, 3, 4, 5]), [1, 2, 3])).data], [0, 3, 1, 4, 2, 5]);
    const img = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, 2, 2, 2] }, []),
      layer('Cropping2D', { name: 'crop', cropping: [[1, 0], [0, 0]] }, ['in']),
      layer('Concatenate', { name: 'cat', axis: 1 }, ['in', 'crop']),
      layer('Flatten', { name: 'fl' }, ['cat']),
    ], []);
    const nhwc = [0, 1, 2, 3, 4, 5, 6, 7]; // x[h, w, c] = 4h + 2w + c
    // Rows h = 0, 1 of x, then row 1 again; (h, w, c) order.
    const want = [...nhwc, ...nhwc.slice(4)];
    const nchw = Float32Array.from([0, 2, 4, 6, 1, 3, 5, 7]);
    assert.deepEqual([...runImported(img, new Tensor(nchw, [1, 2, 2, 2])).data], want);
    assert.deepEqual([...runImported(img, new Tensor(Float32Array.from(nhwc), [1, 2, 2, 2]), { inputLayout: 'channels-last' }).data], want);
  });

  test('Rescaling; a layer after an unsupported one still opens its channel group, and running refuses naming the layer', () => {
    const sc = keras([layer('InputLayer', { name: 'in', batch_input_shape: [null, 2] }, []), layer('Rescaling', { name: 'rs', scale: 0.5, offset: -1 }, ['in'])], []);
    assert.deepEqual([...runImported(sc, new Tensor(Float32Array.from([2, 4]), [1, 2])).data], [0, 1]);
    const m = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, 5, 5, 3] }, []),
      layer('Lambda', { name: 'lam', function: 'custom' }, ['in']),
      layer('Conv2D', { name: 'c', filters: 4, kernel_size: 3, padding: 'same', activation: 'relu' }, ['lam']),
      layer('Conv2D', { name: 'c2', filters: 2, kernel_size: 1, use_bias: false }, ['c']),
      layer('GlobalAveragePooling2D', { name: 'g' }, ['c2']),
    ], [['c/kernel', [3, 3, 3, 4], new Float32Array(108)], ['c/bias', [4], new Float32Array(4)], ['c2/kernel', [1, 1, 4, 2], new Float32Array(8)]]);
    const imp = importTfjs(m);
    assert.deepEqual(imp.opaque, [{ node: 'lam', opType: 'Lambda', reason: 'Lambda: layer class Lambda is not supported' }]);
    assert.deepEqual(imp.flow.spec.perms, { P_c: 4 });
    const { params } = initGraph(imp.graph, new Rng(1));
    assert.throws(() => runGraph(imp.graph, params, new Tensor(new Float32Array(75), [1, 3, 5, 5]), { training: false }),
      (e: unknown) => e instanceof InputError && /node "lam": op Lambda cannot run/.test(e.message));
  });

  test("'same' padding with stride 2 needs the map's size: opaque without it, a conv with the input shape given", () => {
    const m = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, null, null, 3] }, []),
      layer('Conv2D', { name: 'a', filters: 4, kernel_size: 3, strides: 2, padding: 'same' }, ['in']),
      layer('Conv2D', { name: 'b', filters: 4, kernel_size: 3 }, ['a']),
      layer('GlobalAveragePooling2D', { name: 'g' }, ['b']),
      layer('Dense', { name: 'd', units: 2 }, ['g']),
    ], [['a/kernel', [3, 3, 3, 4], new Float32Array(108)], ['a/bias', [4], new Float32Array(4)], ['b/kernel', [3, 3, 4, 4], new Float32Array(144)], ['b/bias', [4], new Float32Array(4)], ['d/kernel', [4, 2], new Float32Array(8)], ['d/bias', [2], new Float32Array(2)]]);
    const r = importTfjs(m);
    assert.match(r.opaque[0]?.reason ?? '', /^Conv2D: 'same' padding with stride > 1 on a map of unknown size/);
    // The opaque layer keeps its weights (Keras layout, unpermuted).
    assert.deepEqual(r.flow.spec.axes['a.kernel'], [null, null, null, null]);
    assert.deepEqual(r.flow.spec.perms, { P_b: 4 });
    const r2 = importTfjs(m, { inputShape: [9, 8, 3] });
    assert.deepEqual(r2.opaque, []);
    assert.deepEqual(r2.flow.spec.perms, { P_a: 4, P_b: 4 });
    const conv = r2.graph.nodes.find((n) => n.id === 'a');
    assert.ok(conv?.op === 'conv2d');
    assert.deepEqual(conv.padding, [1, 0, 1, 1]); // rows: 9 → 5 needs 2 (1 + 1); columns: 8 → 4 needs 1 (0 + 1)
    assert.throws(() => importTfjs(m, { inputShape: [9, 8] }), (e: unknown) => e instanceof InputError && /input shape \[9, 8\] given does not fit input "in"/.test(e.message));
  });

  test('DepthwiseConv2D (multiplier 2) and causal dilated Conv1D against direct loops', () => {
    const rng = new Rng(5);
    const r = (n: number) => Array.from({ length: n }, () => 2 * rng.uniform() - 1);
    // Depthwise: out[h, w, c·2 + j] = Σ_ab x[h + a, w + b, c] K[a, b, c, j] + bias.
    const H = 4, W = 3, C = 3;
    const K = r(2 * 2 * C * 2);
    const bias = r(C * 2);
    const m = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, H, W, C] }, []),
      layer('DepthwiseConv2D', { name: 'dw', kernel_size: [2, 2], depth_multiplier: 2, padding: 'valid' }, ['in']),
    ], [['dw/depthwise_kernel', [2, 2, C, 2], K], ['dw/bias', [C * 2], bias]]);
    const x = r(H * W * C); // NHWC
    const y = runImported(m, new Tensor(Float32Array.from(x), [1, H, W, C]), { inputLayout: 'channels-last' });
    const want: number[] = [];
    for (let h = 0; h < H - 1; h++) for (let w = 0; w < W - 1; w++) for (let c = 0; c < C; c++) for (let j = 0; j < 2; j++) {
      let s = bias[c * 2 + j];
      for (let a = 0; a < 2; a++) for (let b = 0; b < 2; b++) s += x[((h + a) * W + w + b) * C + c] * K[((a * 2 + b) * C + c) * 2 + j];
      want.push(s);
    }
    assert.deepEqual(y.shape, [1, H - 1, W - 1, C * 2]);
    assert.ok(maxDiff(y.data, want) < 1e-5);

    // Causal Conv1D, kernel 3, dilation 2: out[t, o] = Σ_ki x[t − (2 − k)·2, i] K[k, i, o].
    const T = 7, I = 2, O = 3;
    const K1 = r(3 * I * O);
    const m1 = keras([
      layer('InputLayer', { name: 'in', batch_input_shape: [null, T, I] }, []),
      layer('Conv1D', { name: 'c1', filters: O, kernel_size: [3], dilation_rate: [2], padding: 'causal', use_bias: false }, ['in']),
    ], [['c1/kernel', [3, I, O], K1]]);
    const x1 = r(T * I);
    const y1 = runImported(m1, new Tensor(Float32Array.from(x1), [1, T, I]));
    const want1: number[] = [];
    for (let t = 0; t < T; t++) for (let o = 0; o < O; o++) {
      let s = 0;
      for (let k = 0; k < 3; k++) {
        const tt = t - (2 - k) * 2;
        if (tt >= 0) for (let i = 0; i < I; i++) s += x1[tt * I + i] * K1[(k * I + i) * O + o];
      }
      want1.push(s);
    }
    assert.deepEqual(y1.shape, [1, T, O]);
    assert.ok(maxDiff(y1.data, want1) < 1e-5);
  });
});

// ---------------------------------------------------------------- built-in models as Keras layers

/** Writes one of our graphs as Keras layers (layer name = node id, so the PyTorch names agree) and zero Keras weights of the right shapes. */
function kerasOf(graph: ModelGraph): { topology: KerasTopology; tensors: StateDict } {
  const layers: Obj[] = [];
  const weights: [string, number[], ArrayLike<number>][] = [];
  const w = (name: string, shape: number[]) => weights.push([name, shape, new Float32Array(shape.reduce((a, b) => a * b, 1))]);
  const alias = new Map<string, string>();
  const src = (id: string) => alias.get(id) ?? id;
  let out = '';
  for (const n of graph.nodes as GraphNode[]) {
    const ins = 'inputs' in n ? n.inputs.map(src) : 'input' in n ? [src(n.input)] : [];
    switch (n.op) {
      case 'input': layers.push(layer('InputLayer', { name: n.id, batch_input_shape: [null, ...(n.shape.length === 3 ? [n.shape[1], n.shape[2], n.shape[0]] : n.shape)] }, [])); break;
      case 'linear':
        layers.push(layer('Dense', { name: n.id, units: n.outFeatures, use_bias: n.bias !== null }, ins));
        w(`${n.id}/kernel`, [n.inFeatures, n.outFeatures]);
        if (n.bias) w(`${n.id}/bias`, [n.outFeatures]);
        break;
      case 'conv2d': {
        const k = n.kernel as number;
        const s = n.stride as number;
        const p = n.padding as number;
        let input = ins[0];
        let padding = 'valid';
        if (p > 0 && s === 1 && 2 * p === k - 1) padding = 'same';
        else if (p > 0) {
          layers.push(layer('ZeroPadding2D', { name: `${n.id}_pad`, padding: p }, ins));
          input = `${n.id}_pad`;
        }
        layers.push(layer('Conv2D', { name: n.id, filters: n.outChannels, kernel_size: k, strides: s, padding, use_bias: n.bias !== null }, [input]));
        w(`${n.id}/kernel`, [k, k, n.inChannels, n.outChannels]);
        if (n.bias) w(`${n.id}/bias`, [n.outChannels]);
        break;
      }
      case 'batchnorm':
        layers.push(layer('BatchNormalization', { name: n.id, axis: -1, epsilon: n.eps, momentum: 1 - n.momentum }, ins));
        for (const p of ['gamma', 'beta', 'moving_mean', 'moving_variance']) w(`${n.id}/${p}`, [n.channels]);
        break;
      case 'relu': layers.push(layer('ReLU', { name: n.id }, ins)); break;
      case 'tanh': layers.push(layer('Activation', { name: n.id, activation: 'tanh' }, ins)); break;
      case 'maxpool2d': case 'avgpool2d':
        assert.equal(n.padding, 0);
        layers.push(layer(n.op === 'maxpool2d' ? 'MaxPooling2D' : 'AveragePooling2D', { name: n.id, pool_size: n.kernel, strides: n.stride, padding: 'valid' }, ins));
        break;
      case 'adaptiveavgpool2d':
        assert.deepEqual(n.size, [1, 1]);
        layers.push(layer('GlobalAveragePooling2D', { name: n.id }, ins));
        break;
      case 'flatten': layers.push(layer('Flatten', { name: n.id }, ins)); break;
      case 'add': layers.push(layer('Add', { name: n.id }, ins)); break;
      case 'dropout': layers.push(layer('Dropout', { name: n.id, rate: n.p }, ins)); break;
      case 'output': out = ins[0]; break;
      default: throw new Error(`kerasOf: ${n.op}`);
    }
  }
  const topo = { class_name: 'Functional', config: { name: 'm', layers, input_layers: [[layers[0].name, 0, 0]], output_layers: [[out, 0, 0]] } };
  const m = parseTfjsModelJson(JSON.stringify({ modelTopology: topo, weightsManifest: [{ paths: ['w.bin'], weights: weights.map(([name, shape]) => ({ name, shape, dtype: 'float32' })) }] }));
  return { topology: m.topology, tensors: new Map(weights.map(([k, s, d]) => [k, { shape: s, data: Float32Array.from(d) }])) };
}

function setup(model: Model, seed: number) {
  const rng = new Rng(seed);
  const { params, buffers } = model.init(rng);
  for (const n of model.graph().nodes) {
    if (n.op !== 'batchnorm') continue;
    rng.fillUniform(params.get(n.weight)!.data, 0.5, 1.5);
    rng.fillNormal(params.get(n.bias)!.data, 0, 0.2);
    rng.fillNormal(buffers.get(n.runningMean)!.data, 0, 0.3);
    rng.fillUniform(buffers.get(n.runningVar)!.data, 0.5, 2);
  }
  return { params, buffers, rng };
}

describe('TF.js import: our built-in models written as Keras layers compute the same', () => {
  const cases: [string, () => Model][] = [
    ['MLP 12-16-16-5', () => mlp({ sizes: [12, 16, 16, 5] })],
    ['small VGG with BN (channels-last Flatten of 7×7 maps)', () => vggSmall({ channels: [4, 8, 8, 8] })],
    ['ResNet-20 ×0.25 (ZeroPadding2D + stride-2 convs, 1×1 downsample, Add, GlobalAveragePooling2D)', () => resnet20({ widthMultiplier: 0.25 })],
  ];
  for (const [name, make] of cases) {
    test(name, () => {
      const model = make();
      const { params, buffers, rng } = setup(model, 3);
      const shell = kerasOf(model.graph());
      // Our weights → Keras layouts → back through the importer's plan: exactly ours again.
      const kerasWeights = pytorchToTfjsLayout(shell, stateToRecords(new Map([...params, ...buffers])));
      assert.deepEqual([...kerasWeights.keys()], [...shell.tensors.keys()]);
      const m = { topology: shell.topology, tensors: kerasWeights };
      const conv = tfjsToPytorchLayout(m);
      assert.deepEqual([...conv.tensors.keys()].sort(), [...params.keys(), ...buffers.keys()].sort());
      for (const [k, r] of conv.tensors) assert.deepEqual([...r.data], [...(params.get(k) ?? buffers.get(k))!.data], k);
      assert.deepEqual(conv.spec.warnings, []);
      assert.deepEqual(conv.spec.spec, deriveSpec(model.graph()), 'spec of the imported graph equals ours');
      const graph = conv.spec.imported.graph;
      // The imported graph computes our model's function, in eval and in training mode (BN batch statistics, running stats updated alike).
      const x = new Tensor(new Float32Array(4 * model.inputShape.reduce((a, b) => a * b, 1)), [4, ...model.inputShape]);
      rng.fillNormal(x.data, 0, 1);
      const y = runGraph(graph, params, x, { training: false, buffers });
      const yRef = model.forward(params, x, { training: false, buffers });
      assert.ok(maxDiff(y.data, yRef.data) < 1e-5, `eval: differs by ${maxDiff(y.data, yRef.data)}`);
      const bA = new Map([...buffers].map(([k, t]) => [k, t.clone()]));
      const bB = new Map([...buffers].map(([k, t]) => [k, t.clone()]));
      const yt = runGraph(graph, params, x, { training: true, buffers: bA });
      const ytRef = model.forward(params, x, { training: true, buffers: bB });
      assert.ok(maxDiff(yt.data, ytRef.data) < 1e-5, `training: differs by ${maxDiff(yt.data, ytRef.data)}`);
      for (const [k, t] of bA) assert.ok(maxDiff(t.data, bB.get(k)!.data) < 1e-6, `running statistics ${k}`);
    });
  }
});

// ---------------------------------------------------------------- a model of many layer kinds

/** Channels-last functional model through most rules; Keras weights random. */
function zoo(rng: Rng): { topology: KerasTopology; tensors: StateDict } {
  const r = (shape: number[], lo = -0.5, hi = 0.5): [number[], Float32Array] => {
    const d = new Float32Array(shape.reduce((a, b) => a * b, 1));
    rng.fillUniform(d, lo, hi);
    return [shape, d];
  };
  const W: [string, number[], ArrayLike<number>][] = [];
  const w = (name: string, [shape, d]: [number[], Float32Array]) => W.push([name, shape, d]);
  w('c1/kernel', r([3, 3, 3, 4])); w('c1/bias', r([4]));
  w('bn/gamma', r([4], 0.5, 1.5)); w('bn/beta', r([4])); w('bn/moving_mean', r([4])); w('bn/moving_variance', r([4], 0.5, 2));
  w('dw/depthwise_kernel', r([3, 3, 4, 1])); w('dw/bias', r([4]));
  w('ln/gamma', r([4], 0.5, 1.5)); w('ln/beta', r([4]));
  w('c2/kernel', r([2, 2, 4, 5])); w('c2/bias', r([5]));
  w('d1/kernel', r([20, 6])); w('d1/bias', r([6]));
  w('d2/kernel', r([5, 6])); w('d2/bias', r([6]));
  w('seq/kernel', r([2, 2, 3])); w('seq/bias', r([3]));
  w('mix/kernel', r([2, 4])); w('mix/bias', r([4]));
  w('out/kernel', r([12, 3])); w('out/bias', r([3]));
  return keras([
    layer('InputLayer', { name: 'in', batch_input_shape: [null, 6, 6, 3] }, []),
    layer('Conv2D', { name: 'c1', filters: 4, kernel_size: 3, strides: 2, padding: 'same', activation: 'relu' }, ['in']), // [3, 3, 4], pads 0/1
    layer('BatchNormalization', { name: 'bn', axis: 3, epsilon: 1e-3, momentum: 0.99 }, ['c1']),
    layer('DepthwiseConv2D', { name: 'dw', kernel_size: 3, padding: 'same' }, ['bn']),
    layer('LeakyReLU', { name: 'lr', alpha: 0.1 }, ['dw']),
    layer('Add', { name: 'add' }, ['bn', 'lr']),
    layer('LayerNormalization', { name: 'ln', axis: -1, epsilon: 1e-3 }, ['add']),
    layer('ZeroPadding2D', { name: 'zp', padding: [[1, 0], [0, 1]] }, ['ln']), // [4, 4, 4]
    layer('Conv2D', { name: 'c2', filters: 5, kernel_size: 2, padding: 'valid', activation: 'swish' }, ['zp']), // [3, 3, 5]
    layer('MaxPooling2D', { name: 'mp', pool_size: 2, strides: 1 }, ['c2']), // [2, 2, 5]
    layer('GlobalAveragePooling2D', { name: 'gap' }, ['mp']),
    layer('Flatten', { name: 'fl' }, ['mp']), // [20], (h, w, c)
    layer('Dense', { name: 'd1', units: 6, activation: 'tanh' }, ['fl']),
    layer('Dense', { name: 'd2', units: 6, activation: 'sigmoid' }, ['gap']),
    layer('Multiply', { name: 'mul' }, ['d1', 'd2']),
    layer('Average', { name: 'avg' }, ['mul', 'd1']),
    layer('Reshape', { name: 'rs', target_shape: [2, 3] }, ['avg']),
    layer('Permute', { name: 'pm', dims: [2, 1] }, ['rs']), // [3, 2]
    layer('Dense', { name: 'mix', units: 4, activation: 'elu' }, ['pm']), // [3, 4]
    layer('Conv1D', { name: 'seq', filters: 3, kernel_size: 2, padding: 'same' }, ['pm']), // [3, 3]
    layer('Softmax', { name: 'sm', axis: 1 }, ['seq']), // over the positions
    layer('Concatenate', { name: 'cat', axis: -1 }, ['mix', 'sm']), // [3, 7]
    layer('Cropping1D', { name: 'crop', cropping: [0, 1] }, ['cat']), // [2, 7]
    layer('Flatten', { name: 'fl2' }, ['crop']), // [14]
    layer('Reshape', { name: 'rs2', target_shape: [14] }, ['fl2']),
    layer('Dense', { name: 'pre', units: 12 }, ['rs2']),
    layer('Dense', { name: 'out', units: 3 }, ['pre']),
  ], [...W, ['pre/kernel', [14, 12], Float32Array.from({ length: 168 }, (_, i) => Math.sin(i))], ['pre/bias', [12], new Float32Array(12)]]);
}

describe('TF.js import: a model of many layer kinds', () => {
  const rng = new Rng(21);
  const m = zoo(rng);
  const imp = importTfjs(m);
  const conv = tfjsToPytorchLayout(m);
  const { params, buffers } = split(recordsToState(conv.tensors));
  const x = new Tensor(new Float32Array(3 * 3 * 6 * 6), [3, 3, 6, 6]);
  rng.fillNormal(x.data, 0, 1);

  test('every layer is expressed; the spec permutes the channel groups; Keras layouts round-trip', () => {
    assert.deepEqual(imp.opaque, []);
    assert.deepEqual(validateSpec(conv.spec.spec, recordsToState(conv.tensors), { strict: true }), []);
    // c1 (with the depthwise conv, the residual Add, LN), c2 and pre are permuted; d1 = d2 (joined by
    // Multiply/Average) is split by the Reshape into 2 blocks of 3: the blocks (read by mix as its
    // channels) move, their insides (positions to seq's convolution) cannot; mix and seq,
    // concatenated on the channel axis, are then split by a Reshape too; the output is fixed.
    assert.deepEqual(Object.keys(conv.spec.spec.perms).sort(), ['P_c1', 'P_c2', 'P_d1.heads', 'P_pre']);
    assert.deepEqual(conv.spec.spec.axes['d1.bias'], [{ perm: 'P_d1.heads', inner: 3 }]);
    assert.deepEqual(conv.spec.spec.axes['dw.weight'], ['P_c1', null, null, null]);
    assert.deepEqual(conv.spec.spec.axes['ln.weight'], ['P_c1']);
    assert.deepEqual(conv.spec.spec.axes['d1.weight'], [{ perm: 'P_d1.heads', inner: 3 }, { perm: 'P_c2', inner: 4 }]);
    assert.deepEqual(conv.spec.spec.axes['d2.weight'], [{ perm: 'P_d1.heads', inner: 3 }, 'P_c2']);
    assert.deepEqual(conv.spec.warnings, [
      'node "seq": mixes positions that carry channels: the channel groups it touches are left unpermuted',
      'node "fl2:split": reshape [14] → [7, 2] splits or reorders the channel axis: the channel groups it touches are left unpermuted',
    ]);
    const back = pytorchToTfjsLayout(m, conv.tensors);
    for (const [k, r] of back) assert.deepEqual([...r.data], [...m.tensors.get(k)!.data], k);
  });

  test('channels-last input gives the same outputs as channels-first', () => {
    const y = runGraph(imp.graph, params, x, { training: false, buffers });
    assert.deepEqual(y.shape, [3, 3]);
    const xl = F.permute(x, [0, 2, 3, 1]);
    const y2 = runGraph(importTfjs(m, { inputLayout: 'channels-last' }).graph, params, xl, { training: false, buffers });
    assert.ok(maxDiff(y.data, y2.data) < 1e-6);
  });

  test('permuting by the inferred spec keeps the function', () => {
    const spec = conv.spec.spec;
    const perms = randomPerms(spec, new Rng(8));
    const pp = applyHard(spec, params, perms);
    const pb = applyHard(spec, buffers, perms);
    const fm = { forward: (p: Params, xx: Tensor, ctx: { training: boolean; buffers?: Params }) => runGraph(imp.graph, p, xx, ctx) };
    for (const training of [false, true]) {
      const r = checkEquivalence(fm, params, buffers, pp, pb, x, { training });
      assert.ok(r.maxAbsDiff <= 1e-5 * Math.max(1, r.maxAbsOutput), `training ${training}: outputs differ by ${r.maxAbsDiff}`);
    }
    assert.ok([...params].some(([k, t]) => maxDiff(t.data, pp.get(k)!.data) > 0), 'the permutation moved nothing');
  });

  test('gradients of the imported graph match finite differences (float64; training: all parameters, eval: the input)', () => {
    const g = initGraph(imp.graph, new Rng(4), 'float64');
    for (const [k, t] of [...g.buffers]) if (/running_var$/.test(k)) new Rng(5).fillUniform(t.data, 0.5, 2);
    const names = [...g.params.keys()];
    const inputs = [new Tensor(Float64Array.from(x.data.subarray(0, 108)), [1, 3, 6, 6]), ...names.map((k) => g.params.get(k)!)];
    for (const training of [true, false]) {
      inputs.forEach((t, i) => { t.requiresGrad = training || i === 0; });
      const fn = (xx: Tensor, ...ps: Tensor[]) => runGraph(imp.graph, new Map(names.map((k, i) => [k, ps[i]])), xx, { training, buffers: training ? undefined : g.buffers });
      const rep = gradcheck(fn, inputs, { rtol: 1e-4, atol: 1e-6 });
      assert.ok(rep.checked >= (training ? 600 : 108));
    }
  });
});
