/** Models: PyTorch names and layouts, forward shapes, default init statistics, BN and dropout modes. */
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { F, Rng, randn, Tensor, noGrad } from '../src/core/index.js';
import {
  createModel, graphModel, graphTensors, GraphBuilder, inferShapes, LAYERS, mlp, MODEL_ARCHS, MODEL_PRESETS, modelPreset, resnet18, resnet20, vgg, vggSmall,
  type Model, type ModelConfig, type Params, type PresetInputs,
} from '../src/models/index.js';

const shapesOf = (m: Params) => Object.fromEntries([...m].map(([k, t]) => [k, [...t.shape]]));
const paramCount = (model: Model) => graphTensors(model.graph()).filter((t) => !t.buffer).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);

test('mlp: nn.Sequential names, [out, in] layouts, state_dict order, forward shape', () => {
  const m = mlp({ sizes: [784, 512, 512, 10] });
  assert.equal(m.name, 'mlp-784-512-512-10');
  assert.deepEqual(m.inputShape, [784]);
  assert.equal(m.numOutputs, 10);
  const { params, buffers } = m.init(new Rng(0));
  assert.deepEqual(Object.entries(shapesOf(params)), [
    ['layers.0.weight', [512, 784]], ['layers.0.bias', [512]],
    ['layers.2.weight', [512, 512]], ['layers.2.bias', [512]],
    ['layers.4.weight', [10, 512]], ['layers.4.bias', [10]],
  ]);
  assert.equal(buffers.size, 0);
  const y = m.forward(params, randn([3, 784], new Rng(1)), { training: false });
  assert.deepEqual(y.shape, [3, 10]);
  // MNIST images [N, 1, 28, 28] are flattened into the 784 inputs.
  const y2 = m.forward(params, randn([2, 1, 28, 28], new Rng(1)), { training: false });
  assert.deepEqual(y2.shape, [2, 10]);
  assert.throws(() => m.forward(params, randn([2, 783], new Rng(1)), { training: false }), /does not match per-sample shape \[784\]/);
});

test('mlp: tanh activation and dropout (names unchanged; dropout only in training, needs an rng)', () => {
  const a = mlp({ sizes: [6, 8, 3], activation: 'tanh' });
  const b = mlp({ sizes: [6, 8, 3], activation: 'tanh', dropout: 0.5 });
  const { params } = a.init(new Rng(2));
  assert.deepEqual([...b.init(new Rng(2)).params.keys()], [...params.keys()]);
  const x = randn([4, 6], new Rng(3));
  const ya = a.forward(params, x, { training: true });
  // tanh by hand: layers.2(tanh(layers.0(x)))
  const h = F.tanh(F.linear(x, params.get('layers.0.weight')!, params.get('layers.0.bias')!));
  const ref = F.linear(h, params.get('layers.2.weight')!, params.get('layers.2.bias')!);
  assert.deepEqual(ya.toArray(), ref.toArray());
  assert.deepEqual(b.forward(params, x, { training: false }).toArray(), ya.toArray());
  assert.throws(() => b.forward(params, x, { training: true }), /needs ctx.rng/);
  const y1 = b.forward(params, x, { training: true, rng: new Rng(1) });
  const y2 = b.forward(params, x, { training: true, rng: new Rng(2) });
  assert.notDeepEqual(y1.toArray(), y2.toArray());
});

test('vgg: torchvision feature indices (conv, BN, ReLU, M) and classifier names', () => {
  // torchvision vgg11_bn state_dict conv/BN indices.
  const m = vgg({ depth: 11, batchNorm: true, widthMultiplier: 0.125 });
  const names = graphTensors(m.graph()).map((t) => t.name);
  const convs = names.filter((n) => /^features\.\d+\.weight$/.test(n)).map((n) => Number(n.split('.')[1]));
  assert.deepEqual(convs, [0, 1, 4, 5, 8, 9, 11, 12, 15, 16, 18, 19, 22, 23, 25, 26]);
  assert.ok(names.includes('features.1.running_mean') && names.includes('features.1.running_var'));
  assert.ok(!names.some((n) => n.includes('num_batches_tracked')));
  // torchvision vgg16 (no BN): conv indices.
  const v16 = vgg({ depth: 16, batchNorm: false });
  const c16 = graphTensors(v16.graph()).filter((t) => t.name.endsWith('.weight') && t.name.startsWith('features')).map((t) => Number(t.name.split('.')[1]));
  assert.deepEqual(c16, [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]);
  // Conv counts per depth, CIFAR head Linear(512, 10) at classifier.0.
  for (const [depth, convCount] of [[11, 8], [13, 10], [16, 13], [19, 16]] as const) {
    const g = graphTensors(vgg({ depth, batchNorm: false }).graph());
    assert.equal(g.filter((t) => t.shape.length === 4).length, convCount, `vgg${depth}`);
    const fc = g.find((t) => t.name === 'classifier.0.weight')!;
    assert.deepEqual(fc.shape, [10, 512]);
    assert.deepEqual(g.find((t) => t.name === 'features.0.weight')!.shape, [64, 3, 3, 3]);
  }
});

test('vgg: torchvision parameter counts (avgpool 7×7, three-layer 4096 head, 1000 classes)', () => {
  const tv = (depth: 11 | 16, batchNorm: boolean) => vgg({
    depth, batchNorm, inputShape: [3, 224, 224], numClasses: 1000, classifier: 'three-layer', hiddenWidth: 4096, avgpool: [7, 7], dropout: 0.5,
  });
  assert.equal(paramCount(tv(11, false)), 132863336);
  assert.equal(paramCount(tv(16, false)), 138357544);
  assert.equal(paramCount(tv(16, true)), 138365992);
  const g = graphTensors(tv(11, false).graph());
  assert.deepEqual(g.filter((t) => t.name.startsWith('classifier')).map((t) => [t.name, t.shape]), [
    ['classifier.0.weight', [4096, 25088]], ['classifier.0.bias', [4096]],
    ['classifier.3.weight', [4096, 4096]], ['classifier.3.bias', [4096]],
    ['classifier.6.weight', [1000, 4096]], ['classifier.6.bias', [1000]],
  ]);
});

test('vgg: forward shapes at 32×32, non-square-map flatten at 64×64, the reference alignment head', () => {
  const rng = new Rng(4);
  for (const depth of [11, 13, 16, 19] as const) {
    for (const batchNorm of [false, true]) {
      const m = vgg({ depth, batchNorm, widthMultiplier: 1 / 16 });
      const { params, buffers } = m.init(rng);
      assert.deepEqual(m.forward(params, randn([2, 3, 32, 32], rng), { training: false, buffers }).shape, [2, 10]);
      assert.equal(m.name, `vgg${depth}${batchNorm ? '-bn' : ''}-w0.0625`);
    }
  }
  const big = vgg({ depth: 11, batchNorm: false, widthMultiplier: 1 / 16, inputShape: [3, 64, 64], classifier: 'three-layer', numClasses: 7 });
  const p = big.init(rng).params;
  assert.deepEqual(p.get('classifier.0.weight')!.shape, [32, 32 * 4]);
  assert.deepEqual(big.forward(p, randn([2, 3, 64, 64], rng), { training: false }).shape, [2, 7]);
  // vgg11 at 32×32 with AdaptiveAvgPool2d(7, 7): the 1×1 map is replicated → Linear(512·49, 10).
  const ref = vgg({ depth: 11, batchNorm: false, avgpool: [7, 7], widthMultiplier: 1 / 16 });
  const rp = ref.init(rng).params;
  assert.deepEqual(rp.get('classifier.0.weight')!.shape, [10, 32 * 49]);
  assert.deepEqual(ref.forward(rp, randn([1, 3, 32, 32], rng), { training: false }).shape, [1, 10]);
  assert.throws(() => vgg({ depth: 11, batchNorm: false, inputShape: [3, 16, 16] }), /too small/);
});

test('vggSmall: the reference MNIST VGG structure and names', () => {
  const m = vggSmall();
  assert.deepEqual(m.inputShape, [1, 28, 28]);
  const { params, buffers } = m.init(new Rng(5));
  assert.deepEqual(Object.entries(shapesOf(params)).filter(([k]) => k.endsWith('weight')), [
    ['features.0.weight', [8, 1, 3, 3]], ['features.1.weight', [8]],
    ['features.4.weight', [32, 8, 3, 3]], ['features.5.weight', [32]],
    ['features.8.weight', [64, 32, 3, 3]], ['features.9.weight', [64]],
    ['features.11.weight', [128, 64, 3, 3]], ['features.12.weight', [128]],
    ['classifier.weight', [10, 128 * 49]],
  ]);
  assert.equal(buffers.size, 8);
  assert.deepEqual(m.forward(params, randn([2, 1, 28, 28], new Rng(6)), { training: true, buffers }).shape, [2, 10]);
  // The reference's own sizes give its Linear(25088, 10).
  const full = graphTensors(vggSmall({ channels: [8, 32, 64, 512] }).graph());
  assert.deepEqual(full.find((t) => t.name === 'classifier.weight')!.shape, [10, 25088]);
});

test('resnet20: torchvision-style names, 1×1 conv+BN shortcuts only where the shape changes', () => {
  const m = resnet20({ widthMultiplier: 1 });
  const g = graphTensors(m.graph());
  const shape = (n: string) => g.find((t) => t.name === n)?.shape;
  assert.deepEqual(shape('conv1.weight'), [16, 3, 3, 3]);
  assert.deepEqual(shape('bn1.weight'), [16]);
  assert.deepEqual(shape('layer1.0.conv1.weight'), [16, 16, 3, 3]);
  assert.deepEqual(shape('layer2.0.conv1.weight'), [32, 16, 3, 3]);
  assert.deepEqual(shape('layer2.0.downsample.0.weight'), [32, 16, 1, 1]);
  assert.deepEqual(shape('layer2.0.downsample.1.running_var'), [32]);
  assert.deepEqual(shape('layer3.2.bn2.bias'), [64]);
  assert.deepEqual(shape('fc.weight'), [10, 64]);
  assert.equal(shape('conv1.bias'), undefined);
  const downs = g.filter((t) => t.name.endsWith('downsample.0.weight')).map((t) => t.name);
  assert.deepEqual(downs, ['layer2.0.downsample.0.weight', 'layer3.0.downsample.0.weight']);
  assert.equal(g.filter((t) => t.shape.length === 4).length, 21); // 19 3×3 convs + 2 shortcuts
  // 269,722 parameters of the identity-shortcut ResNet-20 (He et al.: 0.27M) + two 1×1 shortcuts with BN.
  assert.equal(paramCount(m), 269722 + 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64);
  const w4 = resnet20({ widthMultiplier: 0.5, numClasses: 100 });
  assert.equal(w4.name, 'resnet20-w0.5');
  const { params, buffers } = w4.init(new Rng(7));
  assert.deepEqual(w4.forward(params, randn([2, 3, 32, 32], new Rng(8)), { training: false, buffers }).shape, [2, 100]);
});

test('resnet18: torchvision structure and parameter count', () => {
  const m = resnet18();
  assert.equal(paramCount(m), 11689512); // torchvision resnet18
  const g = graphTensors(m.graph());
  assert.deepEqual(g.find((t) => t.name === 'conv1.weight')!.shape, [64, 3, 7, 7]);
  assert.deepEqual(g.filter((t) => t.name.endsWith('downsample.0.weight')).map((t) => t.name),
    ['layer2.0.downsample.0.weight', 'layer3.0.downsample.0.weight', 'layer4.0.downsample.0.weight']);
  const small = resnet18({ numClasses: 10, inputShape: [3, 32, 32], widthMultiplier: 1 / 16 });
  const { params, buffers } = small.init(new Rng(9));
  assert.deepEqual(small.forward(params, randn([2, 3, 32, 32], new Rng(10)), { training: false, buffers }).shape, [2, 10]);
  assert.deepEqual(inferShapes(small.graph()).get('layer4.1.relu2'), [32, 1, 1]);
});

test('init: PyTorch defaults (U(±1/√fan_in) weights and biases, BN γ=1 β=0, stats 0/1)', () => {
  const m = vggSmall({ channels: [16, 32, 64, 64] });
  const { params, buffers } = m.init(new Rng(11));
  const stats = (t: Tensor) => {
    let s = 0, s2 = 0, mx = 0;
    for (const v of t.data) { s += v; s2 += v * v; mx = Math.max(mx, Math.abs(v)); }
    const mean = s / t.size;
    return { mean, variance: s2 / t.size - mean * mean, maxAbs: mx };
  };
  for (const [name, fanIn] of [['features.8.weight', 32 * 9], ['features.11.weight', 64 * 9], ['classifier.weight', 64 * 49]] as const) {
    const bound = 1 / Math.sqrt(fanIn);
    const s = stats(params.get(name)!);
    assert.ok(s.maxAbs <= bound, `${name} within ±1/√fan_in`);
    assert.ok(s.maxAbs > 0.97 * bound, `${name} fills the interval`);
    assert.ok(Math.abs(s.mean) < 0.05 * bound, `${name} mean ≈ 0`);
    assert.ok(Math.abs(s.variance / (bound * bound / 3) - 1) < 0.05, `${name} variance ≈ bound²/3 (got ${s.variance})`);
  }
  const bias = params.get('classifier.bias')!;
  assert.ok(bias.toArray().every((v) => Math.abs(v) <= 1 / Math.sqrt(64 * 49)));
  assert.ok(params.get('features.1.weight')!.toArray().every((v) => v === 1));
  assert.ok(params.get('features.1.bias')!.toArray().every((v) => v === 0));
  assert.ok(buffers.get('features.1.running_mean')!.toArray().every((v) => v === 0));
  assert.ok(buffers.get('features.1.running_var')!.toArray().every((v) => v === 1));
  // Seeded and dtype-selectable.
  assert.deepEqual(m.init(new Rng(11)).params.get('features.0.weight')!.toArray(), params.get('features.0.weight')!.toArray());
  assert.equal(m.init(new Rng(11), 'float64').params.get('features.0.weight')!.dtype, 'float64');
});

test('init is pinned: same RNG draws in the same order give bit-identical weights (and the same derived spec)', () => {
  // Fingerprints recorded before the layer-kind table replaced the per-op switches; any change to
  // init order, bounds or tensor order changes them. Backend-independent (init is plain JS).
  const fingerprint = (m: Model) => {
    const h = createHash('sha256');
    const { params, buffers } = m.init(new Rng(42));
    for (const [k, t] of [...params, ...buffers]) {
      h.update(k);
      h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
    return [h.digest('hex').slice(0, 16), createHash('sha256').update(JSON.stringify(m.permutationSpec())).digest('hex').slice(0, 16)];
  };
  assert.deepEqual(fingerprint(mlp({ sizes: [12, 7, 5, 3], activation: 'tanh', dropout: 0.25 })), ['387a14c319e2e7e6', 'df41db077d64e9d9']);
  assert.deepEqual(fingerprint(vggSmall({ channels: [4, 6, 8, 5], inputShape: [1, 12, 12] })), ['9169c9e8e99de86e', 'd01a5adeac0a28db']);
  assert.deepEqual(fingerprint(vgg({ depth: 11, batchNorm: true, widthMultiplier: 1 / 16, classifier: 'three-layer', hiddenWidth: 9, dropout: 0.1 })), ['f48f983807e777ce', '4768166ea2b358bb']);
  assert.deepEqual(fingerprint(resnet20({ widthMultiplier: 0.25, numClasses: 4, inputShape: [3, 8, 8] })), ['55a1c1fcfe4960ce', '3f1049bd12b6550f']);
});

test('batch norm: training uses batch stats and updates running stats; eval uses them; no buffers = batch stats', () => {
  // input → BN → flatten → linear: BN semantics checked by hand.
  const b = new GraphBuilder();
  let h = b.batchNorm('bn', b.input([2, 3, 3]), 2);
  h = b.flatten('flatten', h, 9);
  b.output(b.linear('fc', h, 18, 1));
  const m = graphModel('bn-probe', { arch: 'mlp', sizes: [18, 1] }, b.build());
  const rng = new Rng(12);
  const { params, buffers } = m.init(rng);
  const x = randn([4, 2, 3, 3], rng, 2);
  x.data.forEach((v, i) => { x.data[i] = v + (Math.floor(i / 9) % 2 === 0 ? 3 : -1); }); // channel offsets
  const M = 4 * 9;
  const chan = (c: number) => { const v: number[] = []; for (let n = 0; n < 4; n++) for (let k = 0; k < 9; k++) v.push(x.data[(n * 2 + c) * 9 + k]); return v; };
  const yTrain = m.forward(params, x, { training: true, buffers });
  for (let c = 0; c < 2; c++) {
    const v = chan(c);
    const mean = v.reduce((a, z) => a + z, 0) / M;
    const unbiased = v.reduce((a, z) => a + (z - mean) ** 2, 0) / (M - 1);
    assert.ok(Math.abs(buffers.get('bn.running_mean')!.data[c] - 0.1 * mean) < 1e-5);
    assert.ok(Math.abs(buffers.get('bn.running_var')!.data[c] - (0.9 + 0.1 * unbiased)) < 1e-5);
  }
  const before = buffers.get('bn.running_mean')!.toArray();
  const yEval = m.forward(params, x, { training: false, buffers });
  assert.deepEqual(buffers.get('bn.running_mean')!.toArray(), before, 'eval leaves the running stats alone');
  assert.ok(Math.max(...yEval.toArray().map((v, i) => Math.abs(v - yTrain.data[i]))) > 1e-2, 'eval differs from train');
  // Eval with running stats by hand: (x − rm)/√(rv + eps).
  const fc = params.get('fc.weight')!;
  const rm = buffers.get('bn.running_mean')!.data;
  const rv = buffers.get('bn.running_var')!.data;
  let expect = params.get('fc.bias')!.data[0];
  for (let j = 0; j < 18; j++) { const c = Math.floor(j / 9); expect += fc.data[j] * (x.data[j] - rm[c]) / Math.sqrt(rv[c] + 1e-5); }
  assert.ok(Math.abs(yEval.data[0] - expect) < 1e-4);
  // Without buffers, BN normalises with batch statistics in both modes.
  const nb = m.forward(params, x, { training: false });
  assert.ok(Math.max(...nb.toArray().map((v, i) => Math.abs(v - yTrain.data[i]))) < 1e-6);
});

test('BN models: gradients reach every parameter; createModel rebuilds from config', () => {
  const m = resnet20({ widthMultiplier: 0.25 });
  const { params, buffers } = m.init(new Rng(13));
  for (const t of params.values()) t.requireGrad();
  const x = randn([2, 3, 32, 32], new Rng(14));
  const loss = F.crossEntropy(m.forward(params, x, { training: true, buffers }), Int32Array.from([1, 2]));
  loss.backward();
  for (const [k, t] of params) assert.ok(t.grad && t.grad.toArray().some((v) => v !== 0), `grad of ${k}`);
  for (const model of [m, mlp({ sizes: [4, 3, 2], activation: 'tanh', dropout: 0.1 }), vgg({ depth: 13, batchNorm: true, widthMultiplier: 0.25 }), vggSmall(), resnet18()]) {
    const again = createModel(model.config);
    assert.equal(again.name, model.name);
    assert.deepEqual(again.graph(), model.graph());
  }
  // graph() hands out copies.
  const g = m.graph();
  g.nodes.length = 0;
  assert.ok(m.graph().nodes.length > 0);
  noGrad(() => assert.deepEqual(m.forward(params, x, { training: false, buffers }).shape, [2, 10]));
});

test('graph validation: channel mismatch, unknown input, missing output', () => {
  const b = new GraphBuilder();
  const h = b.linear('a', b.input([4]), 5, 3);
  b.output(h);
  assert.throws(() => graphModel('bad', { arch: 'mlp', sizes: [4, 3] }, b.build()), /linear "a" expects \[\.\.\., 5\] but gets \[4\]/);
  const c = new GraphBuilder();
  c.output(c.linear('a', 'nowhere', 4, 3));
  assert.throws(() => inferShapes(c.build()), /reads "nowhere"/);
  const d = new GraphBuilder();
  d.linear('a', d.input([4]), 4, 3);
  assert.throws(() => graphModel('no-out', { arch: 'mlp', sizes: [4, 3] }, d.build()), /input and an output node/);
});

test('runGraph fuses conv → ReLU into one kernel with the same outputs and gradients as running them apart', async () => {
  const { forwardRecording } = await import('../src/models/activations.js');
  const m = vgg({ depth: 11, batchNorm: false, widthMultiplier: 0.125, numClasses: 10 });
  const fused = m.graph().nodes.filter((n, i, all) => n.op === 'conv2d' && all[i + 1]?.op === 'relu').length;
  assert.ok(fused >= 8, `expected the VGG11 convs to be followed by ReLUs, found ${fused}`);
  const { params } = m.init(new Rng(5));
  const x = randn([2, 3, 32, 32], new Rng(6));
  const grads = (run: () => Tensor) => {
    for (const p of params.values()) { p.requireGrad(); p.grad = null; }
    const y = run();
    F.sum(F.mul(y, y)).backward();
    return { y: y.data.slice(), g: [...params.values()].map((p) => p.grad!.data.slice()) };
  };
  const a = grads(() => m.forward(params, x, { training: true })); // fused, one graph
  const b = grads(() => forwardRecording(m.graph(), params, x, { training: true }, []).output); // one node at a time: unfused
  assert.deepEqual(a.y, b.y);
  a.g.forEach((g, i) => assert.deepEqual(g, b.g[i], `gradient ${i}`));
});

test('registry: architectures and presets come from the builder modules; unknown names list the table', () => {
  // Today's names stay (checkpoints name their arch; scripts name --model); more may be added.
  assert.deepEqual(MODEL_ARCHS.slice(0, 5), ['mlp', 'vgg', 'vgg-small', 'resnet20', 'resnet18']);
  for (const name of ['mlp', 'vgg-small', 'vgg11', 'resnet20']) assert.equal(modelPreset(name).name, name);
  assert.equal(MODEL_PRESETS[0].name, 'mlp', 'the default --model');
  assert.throws(() => createModel({ arch: 'lenet' } as unknown as ModelConfig), (e: Error) => e.message === `createModel: unknown arch "lenet" (expected ${MODEL_ARCHS.join(', ')})`);
  assert.throws(() => modelPreset('vgg12'), (e: Error) => e.message === `unknown model "vgg12" (expected ${MODEL_PRESETS.map((p) => p.name).join(', ')})`);
  // @ts-expect-error: ModelConfig is derived from the builders' option types, so a wrong field is a compile error.
  const bad: ModelConfig = { arch: 'vgg', depth: 12, batchNorm: true };
  assert.equal(bad.arch, 'vgg');
});

test('presets: the configs `rebasin train` has always built (names, widths, data-dependent input shapes)', () => {
  const image = (shape: number[], width: number): PresetInputs => ({ sampleShape: shape, outputs: 10, width, hiddenLayers: 2, activation: 'relu', dropout: 0 });
  const cfg = (name: string, i: PresetInputs) => createModel(modelPreset(name).config(i)).config;
  assert.deepEqual(cfg('mlp', { ...image([1, 28, 28], 512), activation: 'tanh', dropout: 0.25 }), { arch: 'mlp', sizes: [784, 512, 512, 10], activation: 'tanh', dropout: 0.25 });
  assert.deepEqual(cfg('mlp', { ...image([8], 32), outputs: 4, hiddenLayers: 1 }), { arch: 'mlp', sizes: [8, 32, 4], activation: 'relu', dropout: 0 });
  assert.deepEqual(cfg('vgg-small', image([1, 28, 28], 0.5)), { arch: 'vgg-small', channels: [4, 16, 32, 64], numClasses: 10, batchNorm: true, inputShape: [1, 28, 28] });
  assert.deepEqual(cfg('vgg11', image([1, 32, 32], 0.25)), {
    arch: 'vgg', depth: 11, batchNorm: true, inputShape: [1, 32, 32], numClasses: 10, widthMultiplier: 0.25,
    classifier: 'single', hiddenWidth: 128, dropout: 0, avgpool: null,
  });
  assert.deepEqual(cfg('resnet20', image([1, 28, 28], 2)), { arch: 'resnet20', widthMultiplier: 2, numClasses: 10, inputShape: [1, 28, 28] });
  const vgg11 = modelPreset('vgg11');
  assert.equal(vgg11.padImagesTo, 32);
  assert.deepEqual(['mlp', 'vgg-small', 'vgg11', 'resnet20'].map(modelPreset).map((p) => [p.name, p.imagesOnly, p.width.default, p.width.vectorDefault, p.lr, Boolean(p.dropout)]), [
    ['mlp', false, 512, 32, undefined, true], ['vgg-small', true, 1, undefined, 1e-2, false], ['vgg11', true, 1, undefined, undefined, false], ['resnet20', true, 1, undefined, undefined, false],
  ]);
});

test('LAYERS: every kind the builders emit has an entry; relu/tanh are nonlinearities; conv fuses with relu', () => {
  const ops = new Set([mlp({ sizes: [4, 3, 2], activation: 'tanh', dropout: 0.1 }), vgg({ depth: 11, batchNorm: true, widthMultiplier: 1 / 16, avgpool: [7, 7] }), vggSmall(), resnet20({ widthMultiplier: 0.25 })]
    .flatMap((m) => m.graph().nodes.map((n) => n.op)));
  assert.equal(ops.size, 13);
  for (const op of ops) assert.ok(op in LAYERS, op);
  assert.equal(LAYERS.relu.activation?.({ op: 'relu', id: 'r', input: 'x' }), 'nonlinearity');
  assert.equal(LAYERS.tanh.activation?.({ op: 'tanh', id: 't', input: 'x' }), 'nonlinearity');
  assert.equal(LAYERS.add.activation?.({ op: 'add', id: 'a', inputs: ['x', 'y'] }), 'residual');
  assert.equal(LAYERS.unary.activation?.({ op: 'unary', id: 'u', input: 'x', fn: 'gelu' }), 'nonlinearity');
  assert.equal(LAYERS.unary.activation?.({ op: 'unary', id: 'u', input: 'x', fn: 'exp' }), null);
  assert.equal(LAYERS.conv2d.fused?.next, 'relu');
});
