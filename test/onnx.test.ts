/**
 * ONNX: reading (protobufjs schema subset), spec inference from graphs, name mapping to PyTorch
 * checkpoints, real PyTorch exports (test/fixtures, made by make_onnx_fixtures.py), and fuzzing.
 *
 * Synthetic models are our own builders' graphs encoded as ONNX here (Gemm or MatMul+Add,
 * Conv/BN/Relu/pools, Flatten or PyTorch's Shape→Gather→Concat→Reshape), so the inferred spec
 * can be compared with `deriveSpec` on the same graph and the permuted weights run through our
 * forward pass.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Rng, Tensor } from '../src/core/index.js';
import { mlp, resnet20, vgg, vggSmall, deriveSpec, inferShapes, type Model, type ModelGraph, type Params } from '../src/models/index.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import { checkEquivalence } from '../src/permutation/equivalence.js';
import { validateSpec, type PermutationSpec } from '../src/permutation/spec.js';
import { FormatError } from '../src/io/errors.js';
import { encodeModelProto } from '../src/io/onnx-proto.js';
import { onnxInitializersToState, parseOnnx, readOnnx, type OnnxModel } from '../src/io/onnx.js';
import { inferSpecFromOnnx } from '../src/io/onnx-import.js';
import { pytorchModulePath } from '../src/io/onnx-names.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { readNpz } from '../src/io/npy.js';
import { recordsToState, splitLoadedState } from '../src/io/checkpoint.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));

// ---------------------------------------------------------------- building ONNX from our graphs

type Obj = Record<string, unknown>;

function floatTensor(name: string, dims: number[], data: ArrayLike<number>, asFloatData = false): Obj {
  if (asFloatData) return { name, dims, data_type: 1, float_data: Array.from(data) };
  const f = Float32Array.from(data);
  return { name, dims, data_type: 1, raw_data: new Uint8Array(f.buffer) };
}

function int64Tensor(name: string, values: number[]): Obj {
  const b = BigInt64Array.from(values.map((v) => BigInt(v)));
  return { name, dims: [values.length], data_type: 7, raw_data: new Uint8Array(b.buffer) };
}

const ints = (name: string, v: number[]) => ({ name, type: 7, ints: v });
const int = (name: string, v: number) => ({ name, type: 2, i: v });
const flt = (name: string, v: number) => ({ name, type: 1, f: v });

function valueInfo(name: string, dims: (number | string)[]): Obj {
  return { name, type: { tensor_type: { elem_type: 1, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } } };
}

interface ExportOptions {
  linear?: 'gemm' | 'matmul';
  flatten?: 'flatten' | 'reshape';
  /** PyTorch-style scoped node names (`/layers.0/Gemm`); otherwise `Gemm_3`. */
  scoped?: boolean;
  floatData?: boolean;
}

/** Encodes a ModelGraph with its weights as an ONNX model (opset 13). */
function graphToOnnx(graph: ModelGraph, params: Params, buffers: Params, o: ExportOptions = {}): Uint8Array {
  const shapes = inferShapes(graph);
  const nodes: Obj[] = [];
  const inits: Obj[] = [];
  const get = (name: string) => params.get(name) ?? buffers.get(name)!;
  const addInit = (name: string) => {
    const t = get(name);
    inits.push(floatTensor(name, [...t.shape], t.data, o.floatData));
    return name;
  };
  let k = 0;
  let mm = 0;
  const nodeName = (id: string, op: string) => (o.scoped === false ? `${op}_${k++}` : `/${id}/${op}`);
  let input = '';
  let output = '';
  let outShape: number[] = [];
  for (const n of graph.nodes) {
    switch (n.op) {
      case 'input':
        input = n.id;
        break;
      case 'linear':
        if (o.linear === 'matmul') {
          const w = get(n.weight);
          const [out, inn] = w.shape;
          const wt = new Float32Array(w.size);
          for (let i = 0; i < out; i++) for (let j = 0; j < inn; j++) wt[j * out + i] = w.data[i * inn + j];
          const wname = `onnx::MatMul_${100 + mm++}`;
          inits.push(floatTensor(wname, [inn, out], wt, o.floatData));
          nodes.push({ name: nodeName(n.id, 'MatMul'), op_type: 'MatMul', input: [n.input, wname], output: [n.bias ? `${n.id}_mm` : n.id] });
          if (n.bias) nodes.push({ name: nodeName(n.id, 'Add'), op_type: 'Add', input: [addInit(n.bias), `${n.id}_mm`], output: [n.id] });
        } else {
          nodes.push({
            name: nodeName(n.id, 'Gemm'), op_type: 'Gemm', input: [n.input, addInit(n.weight), ...(n.bias ? [addInit(n.bias)] : [])], output: [n.id],
            attribute: [flt('alpha', 1), flt('beta', 1), int('transB', 1)],
          });
        }
        break;
      case 'conv2d':
        nodes.push({
          name: nodeName(n.id, 'Conv'), op_type: 'Conv', input: [n.input, addInit(n.weight), ...(n.bias ? [addInit(n.bias)] : [])], output: [n.id],
          attribute: [ints('dilations', [1, 1]), int('group', 1), ints('kernel_shape', [n.kernel as number, n.kernel as number]), ints('pads', Array<number>(4).fill(n.padding as number)), ints('strides', [n.stride as number, n.stride as number])],
        });
        break;
      case 'batchnorm':
        nodes.push({
          name: nodeName(n.id, 'BatchNormalization'), op_type: 'BatchNormalization',
          input: [n.input, addInit(n.weight), addInit(n.bias), addInit(n.runningMean), addInit(n.runningVar)], output: [n.id],
          attribute: [flt('epsilon', n.eps), flt('momentum', 1 - n.momentum)],
        });
        break;
      case 'relu': case 'tanh':
        nodes.push({ name: nodeName(n.id, n.op === 'relu' ? 'Relu' : 'Tanh'), op_type: n.op === 'relu' ? 'Relu' : 'Tanh', input: [n.input], output: [n.id] });
        break;
      case 'dropout':
        nodes.push({ name: nodeName(n.id, 'Dropout'), op_type: 'Dropout', input: [n.input], output: [n.id] });
        break;
      case 'maxpool2d': case 'avgpool2d':
        nodes.push({
          name: nodeName(n.id, n.op === 'maxpool2d' ? 'MaxPool' : 'AveragePool'), op_type: n.op === 'maxpool2d' ? 'MaxPool' : 'AveragePool', input: [n.input], output: [n.id],
          attribute: [ints('kernel_shape', [n.kernel, n.kernel]), ints('strides', [n.stride, n.stride]), ints('pads', [n.padding, n.padding, n.padding, n.padding])],
        });
        break;
      case 'adaptiveavgpool2d': {
        const s = shapes.get(n.input)!;
        if (n.size[0] === 1 && n.size[1] === 1) nodes.push({ name: nodeName(n.id, 'GlobalAveragePool'), op_type: 'GlobalAveragePool', input: [n.input], output: [n.id] });
        else {
          const kh = s[1] / n.size[0];
          const kw = s[2] / n.size[1];
          nodes.push({ name: nodeName(n.id, 'AveragePool'), op_type: 'AveragePool', input: [n.input], output: [n.id], attribute: [ints('kernel_shape', [kh, kw]), ints('strides', [kh, kw])] });
        }
        break;
      }
      case 'add': {
        let prev = n.inputs[0];
        n.inputs.slice(1).forEach((b, i) => {
          const out = i === n.inputs.length - 2 ? n.id : `${n.id}_${i}`;
          nodes.push({ name: nodeName(n.id, 'Add'), op_type: 'Add', input: [prev, b], output: [out] });
          prev = out;
        });
        break;
      }
      case 'flatten':
        if (o.flatten === 'reshape') {
          // PyTorch's x.view(x.size(0), -1) as exported: Shape → Gather → Unsqueeze → Concat → Reshape.
          const p = `${n.id}_`;
          nodes.push({ name: nodeName(n.id, 'Shape'), op_type: 'Shape', input: [n.input], output: [`${p}shape`] });
          nodes.push({ name: nodeName(n.id, 'Constant'), op_type: 'Constant', input: [], output: [`${p}zero`], attribute: [{ name: 'value', type: 4, t: { dims: [], data_type: 7, raw_data: new Uint8Array(8) } }] });
          nodes.push({ name: nodeName(n.id, 'Gather'), op_type: 'Gather', input: [`${p}shape`, `${p}zero`], output: [`${p}n`], attribute: [int('axis', 0)] });
          inits.push(int64Tensor(`${p}axes`, [0]));
          nodes.push({ name: nodeName(n.id, 'Unsqueeze'), op_type: 'Unsqueeze', input: [`${p}n`, `${p}axes`], output: [`${p}n1`] });
          nodes.push({ name: nodeName(n.id, 'Constant_1'), op_type: 'Constant', input: [], output: [`${p}m1`], attribute: [{ name: 'value', type: 4, t: int64Tensor('', [-1]) }] });
          nodes.push({ name: nodeName(n.id, 'Concat'), op_type: 'Concat', input: [`${p}n1`, `${p}m1`], output: [`${p}target`], attribute: [int('axis', 0)] });
          nodes.push({ name: nodeName(n.id, 'Reshape'), op_type: 'Reshape', input: [n.input, `${p}target`], output: [n.id] });
        } else nodes.push({ name: nodeName(n.id, 'Flatten'), op_type: 'Flatten', input: [n.input], output: [n.id], attribute: [int('axis', 1)] });
        break;
      case 'output':
        output = n.input;
        outShape = shapes.get(n.input)!;
        break;
    }
  }
  const inputShape = (graph.nodes[0] as { shape: number[] }).shape;
  return encodeModelProto({
    ir_version: 7, producer_name: 'rebasin-test', opset_import: [{ domain: '', version: 13 }],
    graph: { name: 'g', node: nodes, initializer: inits, input: [valueInfo(input, ['batch', ...inputShape])], output: [valueInfo(output, ['batch', ...outShape])] },
  });
}

/** Initialised model with BN γ/β and running stats randomised (identity values would hide mistakes). */
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

function randomInput(model: Model, n: number, rng: Rng): Tensor {
  const shape = [n, ...model.inputShape];
  const x = new Tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
  rng.fillNormal(x.data, 0, 1);
  return x;
}

/** Permutes params and buffers randomly by `spec` and checks our forward pass gives the same outputs. */
function assertFunctionPreserved(model: Model, spec: PermutationSpec, params: Params, buffers: Params, seed: number, x?: Tensor): void {
  const rng = new Rng(seed);
  const perms = randomPerms(spec, rng);
  // At least one permutation must move something, or the check proves nothing.
  assert.ok(Object.values(perms).some((p) => p.some((v, i) => v !== i)), 'random permutations are all identities');
  const pp = applyHard(spec, params, perms);
  const pb = applyHard(spec, buffers, perms);
  const input = x ?? randomInput(model, 3, rng);
  const r = checkEquivalence(model, params, buffers, pp, pb, input);
  assert.ok(r.maxAbsDiff <= 1e-4 * Math.max(1, r.maxAbsOutput), `outputs differ by ${r.maxAbsDiff} (max |y| ${r.maxAbsOutput})`);
  // And the permutation is not a no-op on the weights.
  let moved = false;
  for (const [k, t] of params) if (t.data.some((v, i) => v !== pp.get(k)!.data[i])) moved = true;
  assert.ok(moved, 'permuted weights equal the original');
}

const cases: [string, () => Model, ExportOptions][] = [
  ['MLP via Gemm', () => mlp({ sizes: [12, 16, 16, 5] }), {}],
  ['MLP via Gemm, float_data, unscoped names', () => mlp({ sizes: [10, 8, 8, 8, 3] }), { floatData: true, scoped: false }],
  ['MLP via MatMul + Add', () => mlp({ sizes: [12, 16, 16, 5] }), { linear: 'matmul' }],
  ['small VGG with BN (Conv+BN+Relu+MaxPool+AvgPool+Flatten+Gemm)', () => vggSmall({ channels: [4, 8, 8, 8] }), {}],
  ['VGG11-BN at 64×64 (flatten inner 4) via Reshape', () => vgg({ depth: 11, batchNorm: true, widthMultiplier: 1 / 16, inputShape: [3, 64, 64] }), { flatten: 'reshape' }],
  ['VGG11 three-layer classifier with dropout', () => vgg({ depth: 11, batchNorm: false, widthMultiplier: 1 / 16, classifier: 'three-layer', hiddenWidth: 12, dropout: 0.5 }), {}],
  ['ResNet-20 (residual Add, GlobalAveragePool)', () => resnet20({ widthMultiplier: 0.25 }), {}],
  ['ResNet-20 with x.view(n, -1)', () => resnet20({ widthMultiplier: 0.25 }), { flatten: 'reshape' }],
];

describe('spec inference on ONNX encodings of our builders', () => {
  for (const [name, make, opts] of cases) {
    test(name, () => {
      const model = make();
      const { params, buffers } = setup(model, 1);
      const bytes = graphToOnnx(model.graph(), params, buffers, opts);
      const onnx = parseOnnx(bytes, `${name}.onnx`);
      const expected = deriveSpec(model.graph());
      const all = new Map([...params, ...buffers]);
      const r = inferSpecFromOnnx(onnx, { checkpoint: all });
      assert.deepEqual(r.warnings, []);
      assert.deepEqual(r.spec, expected, 'PyTorch-keyed spec equals deriveSpec');
      assert.deepEqual(validateSpec(r.spec, all, { strict: true }), []);
      // The initializer-keyed spec fits the ONNX file's own tensors.
      assert.deepEqual(validateSpec(r.initializerSpec, onnxInitializersToState(onnx), { strict: true }), []);
      if (opts.linear !== 'matmul') assert.deepEqual(r.initializerSpec, expected);
      // Fixed groups: exactly the input's and the output's.
      assert.deepEqual(r.fixed.map((g) => g.reasons).sort(), [['model output'], ['network input']]);
      assertFunctionPreserved(model, r.spec, params, buffers, 7);
    });
  }

  test('MatMul weights map to PyTorch names transposed, by node scope or by data', () => {
    const model = mlp({ sizes: [6, 7, 5, 3] });
    const { params, buffers } = setup(model, 2);
    const expected = deriveSpec(model.graph());
    for (const scoped of [true, false]) {
      const onnx = parseOnnx(graphToOnnx(model.graph(), params, buffers, { linear: 'matmul', scoped }));
      const r = inferSpecFromOnnx(onnx, { checkpoint: params });
      assert.deepEqual(r.spec, expected);
      const mm = r.nameMap.filter((m) => m.initializer.startsWith('onnx::MatMul'));
      assert.equal(mm.length, 3);
      for (const m of mm) {
        assert.equal(m.transposed, true);
        assert.equal(m.via, scoped ? 'node-name' : 'values');
      }
      // The initializer-keyed spec has MatMul's [in, out] layout: axes reversed.
      const first = mm.find((m) => m.name === 'layers.0.weight')!;
      assert.deepEqual(r.initializerSpec.axes[first.initializer], [null, scoped ? 'P_layers.0' : 'P_MatMul_0']);
    }
    // Without a checkpoint, scoped names still give PyTorch names.
    const onnx = parseOnnx(graphToOnnx(model.graph(), params, buffers, { linear: 'matmul' }));
    const r = inferSpecFromOnnx(onnx, { names: 'pytorch' });
    assert.deepEqual(r.spec, expected);
    assert.equal(inferSpecFromOnnx(onnx).names, 'initializer');
  });

  test('a checkpoint of another training run still maps by name', () => {
    const model = vggSmall({ channels: [4, 8, 8, 8] });
    const a = setup(model, 3);
    const b = setup(model, 4);
    const onnx = parseOnnx(graphToOnnx(model.graph(), a.params, a.buffers, { scoped: true }));
    const r = inferSpecFromOnnx(onnx, { checkpoint: new Map([...b.params, ...b.buffers]) });
    assert.deepEqual(r.spec, deriveSpec(model.graph()));
    assert.ok(r.nameMap.every((m) => m.via === 'initializer'));
  });
});

// ---------------------------------------------------------------- hand-written graphs

function tinyModel(nodes: Obj[], inits: Obj[], inputDims: (number | string)[], outputs: string[], extra: Obj = {}): OnnxModel {
  return parseOnnx(encodeModelProto({
    ir_version: 8, opset_import: [{ domain: '', version: 13 }],
    graph: { name: 't', node: nodes, initializer: inits, input: [valueInfo('x', inputDims)], output: outputs.map((o) => valueInfo(o, [])), ...extra },
  }), 'tiny.onnx');
}

function randInit(name: string, dims: number[], rng: Rng): Obj {
  const d = new Float32Array(dims.reduce((a, b) => a * b, 1));
  rng.fillNormal(d, 0, 1);
  return floatTensor(name, dims, d);
}

describe('ONNX ops beyond our builders', () => {
  const rng = new Rng(5);
  const conv = (name: string, input: string, w: string, out: string, group = 1) => ({ name, op_type: 'Conv', input: [input, w], output: [out], attribute: [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), int('group', group)] });

  test('an unknown op that mixes channels fixes every group it touches, with a warning naming it', () => {
    const m = tinyModel([
      conv('/a/Conv', 'x', 'a.weight', 'ya'),
      conv('/b/Conv', 'x', 'b.weight', 'yb'),
      { name: '/mix/ChannelMix', op_type: 'ChannelMix', input: ['ya', 'yb'], output: ['c'] },
      conv('/c/Conv', 'c', 'c.weight', 'yc'),
      { name: '/relu/Relu', op_type: 'Relu', input: ['yc'], output: ['r'] },
      conv('/d/Conv', 'r', 'd.weight', 'y'),
    ], [randInit('a.weight', [4, 3, 3, 3], rng), randInit('b.weight', [4, 3, 3, 3], rng), randInit('c.weight', [6, 4, 3, 3], rng), randInit('d.weight', [2, 6, 3, 3], rng)], ['batch', 3, 8, 8], ['y']);
    const r = inferSpecFromOnnx(m);
    assert.deepEqual(r.spec.perms, { 'P_c': 6 });
    assert.deepEqual(r.spec.axes['a.weight'], [null, null, null, null]);
    assert.deepEqual(r.spec.axes['c.weight'], ['P_c', null, null, null]);
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0], /\/mix\/ChannelMix/);
    assert.ok(r.fixed.some((g) => g.reasons.some((x) => x.includes('/mix/ChannelMix')) && g.axes.includes('a.weight[0]')));
  });

  test('a channel Concat permutes its branches on their sub-ranges (spec format 2)', () => {
    const m = tinyModel([
      conv('/a/Conv', 'x', 'a.weight', 'ya'),
      conv('/b/Conv', 'x', 'b.weight', 'yb'),
      { name: '/cat/Concat', op_type: 'Concat', input: ['ya', 'yb'], output: ['c'], attribute: [int('axis', 1)] },
      conv('/c/Conv', 'c', 'c.weight', 'yc'),
      { name: '/relu/Relu', op_type: 'Relu', input: ['yc'], output: ['r'] },
      conv('/d/Conv', 'r', 'd.weight', 'y'),
    ], [randInit('a.weight', [4, 3, 3, 3], rng), randInit('b.weight', [5, 3, 3, 3], rng), randInit('c.weight', [6, 9, 3, 3], rng), randInit('d.weight', [2, 6, 3, 3], rng)], ['batch', 3, 8, 8], ['y']);
    const r = inferSpecFromOnnx(m);
    assert.deepEqual(r.spec.perms, { P_a: 4, P_b: 5, P_c: 6 });
    assert.deepEqual(r.spec.axes['c.weight'], ['P_c', { segments: ['P_a', 'P_b'] }, null, null]);
    assert.deepEqual(r.warnings, []);
  });

  test('Concat along a non-channel axis unions; Transpose moves the channel axis; custom-domain ops are unknown', () => {
    const m = tinyModel([
      { name: 'mm1', op_type: 'MatMul', input: ['x', 'W1'], output: ['h1'] },
      { name: 'mm2', op_type: 'MatMul', input: ['x', 'W2'], output: ['h2'] },
      { name: 'cat', op_type: 'Concat', input: ['h1', 'h2'], output: ['h'], attribute: [int('axis', 1)] },
      { name: 't', op_type: 'Transpose', input: ['h'], output: ['ht'], attribute: [ints('perm', [0, 2, 1])] },
      { name: 't2', op_type: 'Transpose', input: ['ht'], output: ['h3'], attribute: [ints('perm', [0, 2, 1])] },
      { name: 'mm3', op_type: 'MatMul', input: ['h3', 'W3'], output: ['y'] },
      { name: 'custom', op_type: 'Gelu', domain: 'com.example', input: ['y'], output: ['z'] },
    ], [randInit('W1', [4, 6], rng), randInit('W2', [4, 6], rng), randInit('W3', [6, 2], rng)], ['batch', 5, 4], ['z']);
    const r = inferSpecFromOnnx(m);
    assert.deepEqual(r.spec.perms, { P_mm1: 6 });
    assert.deepEqual(r.spec.axes.W1, [null, 'P_mm1']);
    assert.deepEqual(r.spec.axes.W2, [null, 'P_mm1']);
    assert.deepEqual(r.spec.axes.W3, ['P_mm1', null]);
    // The custom op keeps mm3's 2 output channels from being a permutation (they do not reach the output directly).
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0], /node "custom": op com\.example\.Gelu/);
  });

  test('grouped and depthwise convolutions', () => {
    const m = tinyModel([
      conv('/a/Conv', 'x', 'a.weight', 'ya'),
      conv('/dw/Conv', 'ya', 'dw.weight', 'yd', 4),
      conv('/g/Conv', 'yd', 'g.weight', 'yg', 2),
      conv('/e/Conv', 'yg', 'e.weight', 'y'),
    ], [randInit('a.weight', [4, 3, 3, 3], rng), randInit('dw.weight', [4, 1, 3, 3], rng), randInit('g.weight', [6, 2, 3, 3], rng), randInit('e.weight', [2, 6, 3, 3], rng)], ['batch', 3, 8, 8], ['y']);
    const r = inferSpecFromOnnx(m);
    // The depthwise conv follows its input; the grouped one fixes both sides.
    assert.deepEqual(r.spec.perms, {});
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0], /grouped convolution/);
    const m2 = tinyModel([
      conv('/a/Conv', 'x', 'a.weight', 'ya'),
      conv('/dw/Conv', 'ya', 'dw.weight', 'yd', 4),
      conv('/e/Conv', 'yd', 'e.weight', 'y'),
    ], [randInit('a.weight', [4, 3, 3, 3], rng), randInit('dw.weight', [4, 1, 3, 3], rng), randInit('e.weight', [2, 4, 3, 3], rng)], ['batch', 3, 8, 8], ['y']);
    const r2 = inferSpecFromOnnx(m2);
    assert.deepEqual(r2.spec.perms, { P_a: 4 });
    assert.deepEqual(r2.spec.axes['dw.weight'], ['P_a', null, null, null]);
    assert.deepEqual(r2.spec.axes['e.weight'], [null, 'P_a', null, null]);
  });

  test('a flatten of an unknown spatial size fixes the group with a warning', () => {
    const m = tinyModel([
      conv('/a/Conv', 'x', 'a.weight', 'ya'),
      { name: '/f/Flatten', op_type: 'Flatten', input: ['ya'], output: ['f'], attribute: [int('axis', 1)] },
      { name: '/fc/Gemm', op_type: 'Gemm', input: ['f', 'fc.weight'], output: ['y'], attribute: [int('transB', 1)] },
    ], [randInit('a.weight', [4, 3, 3, 3], rng), randInit('fc.weight', [2, 64], rng)], ['batch', 3, 'h', 'w'], ['y']);
    const r = inferSpecFromOnnx(m);
    assert.deepEqual(r.spec.perms, {});
    assert.match(r.warnings.join('\n'), /unknown spatial size/);
    // Giving the input shape resolves it.
    const r2 = inferSpecFromOnnx(m, { inputShapes: { x: ['batch', 3, 4, 4] } });
    assert.deepEqual(r2.spec.perms, { P_a: 4 });
    assert.deepEqual(r2.spec.axes['fc.weight'], [null, { perm: 'P_a', inner: 16 }]);
  });

  test('Identity aliases (the exporter de-duplicating equal tensors) keep PyTorch names', () => {
    const ones = floatTensor('bn.weight', [4], [1, 1, 1, 1]);
    const zeros = floatTensor('bn.bias', [4], [0, 0, 0, 0]);
    const m = tinyModel([
      { name: 'Identity_0', op_type: 'Identity', input: ['bn.weight'], output: ['bn.running_var'] },
      { name: 'Identity_1', op_type: 'Identity', input: ['bn.bias'], output: ['bn.running_mean'] },
      conv('/conv/Conv', 'x', 'conv.weight', 'c'),
      { name: '/bn/BatchNormalization', op_type: 'BatchNormalization', input: ['c', 'bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var'], output: ['b'] },
      { name: '/Relu', op_type: 'Relu', input: ['b'], output: ['r'] },
      { name: '/GlobalAveragePool', op_type: 'GlobalAveragePool', input: ['r'], output: ['p'] },
      { name: '/Flatten', op_type: 'Flatten', input: ['p'], output: ['f'] },
      { name: '/fc/Gemm', op_type: 'Gemm', input: ['f', 'fc.weight', 'fc.bias'], output: ['y'], attribute: [int('transB', 1)] },
    ], [ones, zeros, randInit('conv.weight', [4, 3, 3, 3], rng), randInit('fc.weight', [2, 4], rng), randInit('fc.bias', [2], rng)], ['batch', 3, 6, 6], ['y']);
    const r = inferSpecFromOnnx(m, { names: 'pytorch' });
    assert.deepEqual(r.spec.axes['bn.running_var'], ['P_conv']);
    assert.deepEqual(r.spec.axes['bn.running_mean'], ['P_conv']);
    assert.deepEqual(r.spec.axes['bn.weight'], ['P_conv']);
    assert.ok(r.nameMap.some((x) => x.name === 'bn.running_var' && x.initializer === 'bn.weight' && x.via === 'alias'));
    assert.deepEqual(Object.keys(r.initializerSpec.axes).sort(), ['bn.bias', 'bn.weight', 'conv.weight', 'fc.bias', 'fc.weight']);
  });

  test('pytorchModulePath reads PyTorch scope names', () => {
    assert.equal(pytorchModulePath('/layer2/layer2.0/downsample/downsample.0/Conv'), 'layer2.0.downsample.0');
    assert.equal(pytorchModulePath('/features/features.14/AveragePool'), 'features.14');
    assert.equal(pytorchModulePath('/fc/Gemm'), 'fc');
    assert.equal(pytorchModulePath('/0/MatMul'), '0');
    assert.equal(pytorchModulePath('/Relu'), null);
    assert.equal(pytorchModulePath('Gemm_3'), null);
  });
});

// ---------------------------------------------------------------- reader details

describe('ONNX reader', () => {
  test('float16, double and int64 initializers; value_info shapes', () => {
    const h = new Uint16Array([0x3c00, 0xc000]); // 1, -2
    const d = new Float64Array([0.5, 1e-3]);
    const m = parseOnnx(encodeModelProto({
      ir_version: 7, producer_name: 'p', producer_version: '1',
      graph: {
        initializer: [
          { name: 'h', dims: [2], data_type: 10, raw_data: new Uint8Array(h.buffer) },
          { name: 'h2', dims: [2], data_type: 10, int32_data: [0x3c00, 0xc000] },
          { name: 'd', dims: [2], data_type: 11, double_data: [0.5, 1e-3] },
          { name: 'd2', dims: [2], data_type: 11, raw_data: new Uint8Array(d.buffer) },
          { name: 'i', dims: [3], data_type: 7, int64_data: [1, -1, 5] },
          { name: 's', dims: [1], data_type: 8, string_data: [new Uint8Array([104, 105])] },
        ],
        input: [valueInfo('x', ['N', 3])], output: [valueInfo('y', ['N', 2])],
      },
    }), 'm.onnx');
    assert.deepEqual([...m.initializers.get('h')!.data!], [1, -2]);
    assert.deepEqual([...m.initializers.get('h2')!.data!], [1, -2]);
    assert.deepEqual([...m.initializers.get('d')!.data!], [0.5, Math.fround(1e-3)]);
    assert.deepEqual([...m.initializers.get('d2')!.data!], [0.5, Math.fround(1e-3)]);
    assert.deepEqual(m.initializers.get('i')!.ints, [1, -1, 5]);
    assert.equal(m.initializers.get('s')!.data, null);
    assert.deepEqual(m.inputs[0].shape, ['N', 3]);
    assert.deepEqual([...onnxInitializersToState(m).keys()], ['h', 'h2', 'd', 'd2']);
  });

  const bad: [string, Obj, RegExp][] = [
    ['external data', { name: 'w', dims: [2], data_type: 1, data_location: 1, external_data: [{ key: 'location', value: 'w.bin' }] }, /tensor "w": is stored as external data \(location "w\.bin"\): not supported/],
    ['raw_data of the wrong length', { name: 'w', dims: [3], data_type: 1, raw_data: new Uint8Array(8) }, /tensor "w": raw_data has 8 bytes but dims \[3\] of float32 need 12/],
    ['no data', { name: 'w', dims: [3], data_type: 1 }, /tensor "w": float_data has 0 values .* carries no data/],
    ['negative dims', { name: 'w', dims: [-1], data_type: 1 }, /tensor "w": dims must be non-negative/],
    ['huge dims', { name: 'w', dims: [1e6, 1e6], data_type: 1 }, /tensor "w": dims .* exceed/],
    ['unknown data type', { name: 'w', dims: [1], data_type: 99, raw_data: new Uint8Array(4) }, /tensor "w": unknown data_type 99/],
  ];
  for (const [what, t, re] of bad) {
    test(`FormatError: ${what}`, () => {
      const bytes = encodeModelProto({ ir_version: 7, graph: { initializer: [t] } });
      assert.throws(() => parseOnnx(bytes, 'bad.onnx'), (e: unknown) => e instanceof FormatError && e.file === 'bad.onnx' && re.test(e.message));
    });
  }

  test('FormatError: truncated and non-ONNX files name the file', async () => {
    const full = readFileSync(`${FIXTURES}vgg_small.onnx`);
    for (const cut of [10, 100, 1000, full.length - 1]) {
      assert.throws(() => parseOnnx(full.subarray(0, cut), 'cut.onnx'), (e: unknown) => e instanceof FormatError && e.message.startsWith('cut.onnx: '));
    }
    assert.throws(() => parseOnnx(new Uint8Array(0), 'empty.onnx'), /empty\.onnx: graph: ModelProto has no graph/);
    assert.throws(() => parseOnnx(Buffer.from('{"not": "onnx"}'), 'x.onnx'), FormatError);
    await assert.rejects(readOnnx(`${FIXTURES}does-not-exist.onnx`), /does-not-exist\.onnx: cannot read \(no such file\)/);
  });
});

// ---------------------------------------------------------------- real PyTorch exports

async function loadIo(name: string) {
  const io = await readNpz(`${FIXTURES}${name}.io.npz`);
  const x = io.get('x')!;
  const y = io.get('y')!;
  return { x: new Tensor(x.data, x.shape), y };
}

const real: [string, string, () => Model][] = [
  ['mlp', 'mlp', () => mlp({ sizes: [12, 16, 16, 5] })],
  ['mlp_matmul', 'mlp', () => mlp({ sizes: [12, 16, 16, 5] })],
  ['vgg_small', 'vgg_small', () => vggSmall({ channels: [4, 8, 8, 8] })],
  ['resnet20', 'resnet20', () => resnet20({ widthMultiplier: 0.25 })],
];

describe('real PyTorch exports (test/fixtures, torch.onnx.export)', () => {
  for (const [file, weights, make] of real) {
    test(`${file}.onnx + ${weights}.safetensors`, async () => {
      const onnx = await readOnnx(`${FIXTURES}${file}.onnx`);
      assert.equal(onnx.producerName, 'pytorch');
      const ckpt = recordsToState((await readSafetensors(`${FIXTURES}${weights}.safetensors`)).tensors);
      const { params, buffers } = splitLoadedState(ckpt);
      const r = inferSpecFromOnnx(onnx, { checkpoint: ckpt });
      assert.deepEqual(r.warnings, []);
      // spec check, strict: every checkpoint tensor covered (num_batches_tracked aside).
      assert.deepEqual(validateSpec(r.spec, new Map([...params, ...buffers]), { strict: true }), []);
      const model = make();
      assert.deepEqual(r.spec, model.permutationSpec(), 'same spec as our builder derives');
      // Our model with the exported weights computes what PyTorch computed.
      const { x, y } = await loadIo(file);
      const xin = file === 'mlp_matmul' ? new Tensor(x.data, [x.shape[0] * x.shape[1], x.shape[2]]) : x;
      const out = model.forward(params, xin, { training: false, buffers });
      let err = 0;
      for (let i = 0; i < out.size; i++) err = Math.max(err, Math.abs(out.data[i] - y.data[i]));
      assert.ok(err < 1e-4, `forward differs from PyTorch by ${err}`);
      assertFunctionPreserved(model, r.spec, params, buffers, 11, xin);
    });
  }

  // Beyond our builders (function preservation checked in PyTorch by make_onnx_fixtures.py --verify).
  test('ops_mix.onnx: SiLU, depthwise conv, channel Concat (branches permuted as segments), Resize, ReduceMean', async () => {
    const r = inferSpecFromOnnx(await readOnnx(`${FIXTURES}ops_mix.onnx`), { names: 'pytorch' });
    assert.deepEqual(r.spec.perms, { P_c1: 8, P_pw: 6, P_c2: 4, P_c3: 4, P_head: 5 });
    assert.deepEqual(r.spec.axes['dw.weight'], ['P_c1', null, null, null]);
    assert.deepEqual(r.spec.axes['bn.running_var'], ['P_c1']);
    assert.deepEqual(r.spec.axes['c2.weight'], ['P_c2', 'P_pw', null, null]);
    // The conv after the Concat reads both branches, each permuted on its sub-range.
    assert.deepEqual(r.spec.axes['head.weight'], ['P_head', { segments: ['P_c2', 'P_c3'] }, null, null]);
    assert.deepEqual(r.spec.axes['fc.weight'], [null, 'P_head']);
    assert.deepEqual(r.warnings, []);
  });

  for (const f of ['token_mlp_ln', 'token_mlp_ln13']) {
    test(`${f}.onnx: tokens through MatMul, LayerNorm ${f.endsWith('13') ? 'decomposed (ReduceMean/Sub/Pow/Div)' : 'op'}, GELU, residual`, async () => {
      const r = inferSpecFromOnnx(await readOnnx(`${FIXTURES}${f}.onnx`), { names: 'pytorch' });
      assert.deepEqual(r.warnings, []);
      assert.deepEqual(r.spec.perms, { P_inp: 16, P_fc1: 32 });
      assert.deepEqual(r.spec.axes['inp.weight'], ['P_inp', null]);
      assert.deepEqual(r.spec.axes['ln.weight'], ['P_inp']);
      assert.deepEqual(r.spec.axes['fc2.weight'], ['P_inp', 'P_fc1']);
      assert.deepEqual(r.spec.axes['out.weight'], [null, 'P_inp']);
    });
  }

  test('vgg_small_fused.onnx: BN folded by the exporter, names recovered from node scopes', async () => {
    const onnx = await readOnnx(`${FIXTURES}vgg_small_fused.onnx`);
    const r = inferSpecFromOnnx(onnx, { names: 'pytorch' });
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.spec.perms, { 'P_features.0': 4, 'P_features.4': 8, 'P_features.8': 8, 'P_features.11': 8 });
    assert.deepEqual(r.spec.axes['features.4.weight'], ['P_features.4', 'P_features.0', null, null]);
    assert.deepEqual(r.spec.axes['classifier.weight'], [null, { perm: 'P_features.11', inner: 49 }]);
    assert.ok(r.nameMap.filter((m) => m.initializer.startsWith('onnx::Conv')).every((m) => m.via === 'node-name'));
    assert.deepEqual(validateSpec(r.initializerSpec, onnxInitializersToState(onnx), { strict: true }), []);
    // The folded model is our small VGG without BN, indices aside: same function under permutation.
    const noBn = vggSmall({ channels: [4, 8, 8, 8], batchNorm: false });
    const rename = new Map([['features.4', 'features.3'], ['features.8', 'features.6'], ['features.11', 'features.8'], ['features.0', 'features.0'], ['classifier', 'classifier']]);
    const params: Params = new Map();
    for (const [k, t] of onnxInitializersToState(onnx)) {
      const m = r.nameMap.find((x) => x.initializer === k)!;
      const [mod, p] = [m.name.replace(/\.(weight|bias)$/, ''), m.name.slice(m.name.lastIndexOf('.') + 1)];
      params.set(`${rename.get(mod)}.${p}`, new Tensor(t.data, t.shape));
    }
    const { x, y } = await loadIo('vgg_small_fused');
    const out = noBn.forward(params, x, { training: false });
    let err = 0;
    for (let i = 0; i < out.size; i++) err = Math.max(err, Math.abs(out.data[i] - y.data[i]));
    assert.ok(err < 1e-4, `forward differs from PyTorch by ${err}`);
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

/** Parse, then (when it parses) infer a spec: neither may fail with anything but FormatError. */
function parseAndInfer(bytes: Uint8Array): void {
  const m = parseOnnx(bytes, 'fuzz.onnx');
  inferSpecFromOnnx(m);
}

describe('fuzz', () => {
  test(`${CASES} random inputs: result or FormatError`, () => {
    const rng = new Rng(123);
    const stats = { ok: 0, err: 0 };
    for (let c = 0; c < CASES; c++) {
      const n = rng.int(c % 10 === 0 ? 4096 : 256);
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = rng.int(256);
      // Half start like a ModelProto (field 1 varint, field 7 graph) so the decoder goes deeper.
      if (c % 2 === 0 && n > 4) {
        b[0] = 0x08;
        b[1] = 7;
        b[2] = 0x3a;
      }
      fuzzCall(`random #${c}`, () => parseAndInfer(b), stats);
    }
    assert.equal(stats.ok + stats.err, CASES);
  });

  test(`${CASES} mutated models (bit flips, truncation, splices): result or FormatError`, () => {
    const rng = new Rng(321);
    const model = resnet20({ widthMultiplier: 0.125 });
    const { params, buffers } = setup(model, 9);
    const bases = [
      graphToOnnx(model.graph(), params, buffers, { flatten: 'reshape' }),
      readFileSync(`${FIXTURES}vgg_small.onnx`),
      readFileSync(`${FIXTURES}mlp_matmul.onnx`),
    ];
    const stats = { ok: 0, err: 0 };
    for (let c = 0; c < CASES; c++) {
      const base = bases[c % bases.length];
      let b = Uint8Array.from(base);
      const kind = c % 4;
      if (kind === 0) {
        for (let k = 1 + rng.int(8); k > 0; k--) b[rng.int(b.length)] ^= 1 << rng.int(8);
      } else if (kind === 1) b = b.subarray(0, rng.int(b.length));
      else if (kind === 2) {
        const at = rng.int(b.length);
        const len = 1 + rng.int(16);
        const ins = new Uint8Array(len);
        for (let i = 0; i < len; i++) ins[i] = rng.int(256);
        const rest = b.subarray(Math.min(b.length, at + (rng.int(2) ? len : 0)));
        const out = new Uint8Array(at + len + rest.length);
        out.set(b.subarray(0, at));
        out.set(ins, at);
        out.set(rest, at + len);
        b = out;
      } else {
        // Overwrite a byte with a varint-ish extreme (lengths, dims).
        const at = rng.int(b.length - 1);
        b[at] = [0x00, 0x7f, 0x80, 0xff][rng.int(4)];
        b[at + 1] = [0x00, 0x7f, 0x80, 0xff][rng.int(4)];
      }
      fuzzCall(`mutation #${c} (kind ${kind})`, () => parseAndInfer(b), stats);
    }
    assert.ok(stats.ok > 0 && stats.err > 0, `expected both outcomes, got ${JSON.stringify(stats)}`);
  });
});
