/**
 * Imported models (issue 11): ONNX files exported by PyTorch itself (test/fixtures/import, made
 * by make_import_fixtures.py) become ModelGraphs that run forward and backward on our core and
 * compute what PyTorch recorded; every alignment method's π(B) computes B's recorded outputs.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { noGrad, Tensor } from '../src/core/tensor.js';
import { InputError } from '../src/errors.js';
import { readOnnx } from '../src/io/onnx.js';
import { importOnnx, type ImportedOnnx } from '../src/io/onnx-import.js';
import { readNpz } from '../src/io/npy.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { recordsToState, splitLoadedState } from '../src/io/checkpoint.js';
import { runGraph, type ModelGraph } from '../src/models/graph.js';
import { importedModel } from '../src/models/imported.js';
import { alignModels, type MethodName } from '../src/methods/registry.js';
import { validateSpec } from '../src/permutation/spec.js';
import type { Params } from '../src/state/params.js';
import type { Dataset } from '../src/data/dataset.js';
import { gradcheck } from './helpers/gradcheck.js';

const DIR = fileURLToPath(new URL('../../test/fixtures/import/', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** A checkpoint as the CLI reads it (BN batch counters dropped: nothing permutes or runs them). */
async function state(file: string): Promise<Params> {
  const s = recordsToState((await readSafetensors(join(DIR, file))).tensors);
  for (const k of [...s.keys()]) if (k.endsWith('num_batches_tracked')) s.delete(k);
  return s;
}

async function io(name: string): Promise<Map<string, Tensor>> {
  const arrays = await readNpz(join(DIR, `${name}.io.npz`));
  return new Map([...arrays].map(([k, a]) => [k, new Tensor(Float32Array.from(a.data), a.shape)]));
}

function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(a.data[i] - b.data[i]));
  return m;
}

function run(graph: ModelGraph, s: Params, x: Tensor, training = false): Tensor {
  const { params, buffers } = splitLoadedState(new Map(s));
  // Train mode updates running statistics in place: give it copies.
  const buf = new Map([...buffers].map(([k, t]) => [k, new Tensor(t.data.slice(), t.shape)]));
  return noGrad(() => runGraph(graph, params, x, { training, buffers: buf }));
}

/** [onnx file, fixture name (checkpoints, io.npz)]: PyTorch's default export (BN folded) and BN kept. */
const FIXTURES: [string, string][] = [
  ['tv_resnet.onnx', 'tv_resnet'], ['tv_resnet_bn.onnx', 'tv_resnet'], ['vgg_bn.onnx', 'vgg_bn'], ['vgg_bn_folded.onnx', 'vgg_bn'],
  ['mlp_bn1d.onnx', 'mlp_bn1d'], ['ln_gelu.onnx', 'ln_gelu'], ['ln_gelu13.onnx', 'ln_gelu'], ['concat_net.onnx', 'concat_net'],
];

async function load(onnxFile: string, name: string, ckpt = `${name}.safetensors`): Promise<{ imp: ImportedOnnx; a: Params; b: Params; rec: Map<string, Tensor> }> {
  const a = await state(ckpt);
  const imp = importOnnx(await readOnnx(join(DIR, onnxFile)), { checkpoint: a });
  return { imp, a, b: await state(`${name}_b.safetensors`), rec: await io(name) };
}

describe('ONNX exports of PyTorch models run as PyTorch ran them', () => {
  for (const [file, name] of FIXTURES) {
    test(`${file}: eval and train mode, A and B, against PyTorch's outputs`, async () => {
      const { imp, a, b, rec } = await load(file, name);
      assert.deepEqual(imp.opaque, []);
      assert.deepEqual(imp.flow.warnings.filter((w) => !/concatenation along the channel axis/.test(w)), []);
      // The graph reads exactly the checkpoint's tensors (folded convs split back into conv + BN).
      assert.deepEqual(validateSpec(imp.flow.spec, a, { strict: true }), []);
      if (file.includes('folded') || file === 'tv_resnet.onnx') assert.ok(imp.unfolded.length > 0 && imp.unfolded.every((u) => u.byValue));
      const x = rec.get('x')!;
      const tol = 1e-4 * Math.max(1, ...Array.from(rec.get('y')!.data, Math.abs));
      assert.ok(maxDiff(run(imp.graph, a, x), rec.get('y')!) <= tol, 'eval A');
      assert.ok(maxDiff(run(imp.graph, b, x), rec.get('y_b')!) <= tol, 'eval B');
      assert.ok(maxDiff(run(imp.graph, a, x, true), rec.get('y_train')!) <= 1e-3 * Math.max(1, ...Array.from(rec.get('y_train')!.data, Math.abs)), 'train mode');
    });
  }

  test('the same graph runs the file\'s own values (folded BN stays folded without a checkpoint)', async () => {
    const onnx = await readOnnx(join(DIR, 'tv_resnet.onnx'));
    const imp = importOnnx(onnx);
    assert.equal(imp.unfolded.length, 0);
    const own = new Map([...imp.tensors].map(([k, r]) => [k, new Tensor(r.data, r.shape)]));
    const rec = await io('tv_resnet');
    assert.ok(maxDiff(run(imp.graph, own, rec.get('x')!), rec.get('y')!) < 1e-4);
  });

  test('a checkpoint the export was not made from: folded BN found by module names', async () => {
    const { imp, b, rec } = await load('tv_resnet.onnx', 'tv_resnet', 'tv_resnet_b.safetensors');
    assert.equal(imp.unfolded.length, 12);
    assert.ok(imp.unfolded.every((u) => !u.byValue));
    assert.ok(maxDiff(run(imp.graph, b, rec.get('x')!), rec.get('y_b')!) < 1e-4);
  });
});

describe('gradients of imported graphs', () => {
  for (const [file, name] of [['mlp_bn1d.onnx', 'mlp_bn1d'], ['ln_gelu13.onnx', 'ln_gelu'], ['concat_net.onnx', 'concat_net']]) {
    test(`${file}: autodiff against finite differences (float64, train mode)`, async () => {
      const { imp, a, rec } = await load(file, name);
      const { params } = splitLoadedState(new Map(a));
      const names = [...params.keys()];
      // Every tensor of the small models; of the conv net the per-channel ones (its big conv
      // weights would take a minute of finite differences; convolutions have their own checks).
      const inputs = names.map((k) => new Tensor(Float64Array.from(params.get(k)!.data), params.get(k)!.shape, file !== 'concat_net.onnx' || params.get(k)!.shape.length === 1));
      const x0 = rec.get('x')!;
      const x = new Tensor(Float64Array.from(x0.data.subarray(0, 2 * (x0.size / x0.shape[0]))), [2, ...x0.shape.slice(1)]);
      const r = gradcheck((...ts) => runGraph(imp.graph, new Map(names.map((k, i) => [k, ts[i]])), x, { training: true }), inputs, { rtol: 1e-4, atol: 1e-6 });
      assert.ok(r.checked >= 40, `only ${r.checked} elements checked`);
    });
  }
});

function mnistLike(rec: Map<string, Tensor>, n: number, graph: ModelGraph): Dataset {
  const classes = importedModel({ graph, name: 'classes' }).numOutputs;
  const x = rec.get('x')!;
  const d = x.size / x.shape[0];
  // PyTorch's recorded inputs, repeated with labels: enough to drive the data costs.
  const data = new Float32Array(n * d);
  for (let i = 0; i < n; i++) data.set(x.data.subarray((i % x.shape[0]) * d, ((i % x.shape[0]) + 1) * d), i * d);
  return { name: 'recorded', x: data, sampleShape: x.shape.slice(1), y: Int32Array.from({ length: n }, (_, i) => i % classes), n, numClasses: classes };
}

describe('every method on an imported model: π(B) computes what PyTorch computed for B', () => {
  const METHODS: [MethodName, Record<string, unknown>][] = [
    ['wm', {}], ['sinkhorn-l2', { steps: 3 }], ['ste', { epochs: 1 }], ['am', {}], ['sinkhorn-mid', { epochs: 1 }], ['sinkhorn-rnd', { epochs: 1 }],
  ];
  for (const [method, options] of METHODS) {
    for (const [file, name] of FIXTURES.filter(([f]) => f !== 'tv_resnet_bn.onnx' && f !== 'ln_gelu.onnx')) {
    test(`${method} on ${file}`, async () => {
      const { imp, a, b, rec } = await load(file, name);
      const model = importedModel({ graph: imp.graph, name });
      const spec = imp.flow.spec;
      const data = mnistLike(rec, 16, imp.graph);
      if (method === 'am' && file === 'concat_net.onnx') {
        // Activation matching does not read concatenated (segmented) channels yet: a clear refusal.
        assert.throws(() => alignModels(method, { spec, a, b }, { model, data, batchSize: 8, seed: 1 }, options as never), /has a segments entry \(concatenated channels\)/);
        return;
      }
      const r = alignModels(method, { spec, a, b }, { model, data, batchSize: 8, seed: 1 }, options as never);
      const out = run(imp.graph, r.aligned, rec.get('x')!);
      assert.ok(maxDiff(out, rec.get('y_b')!) < 1e-4, `${method}: π(B) differs from B`);
      assert.ok(Object.values(r.perms).length === Object.keys(spec.perms).length);
    });
    }
  }
});

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('concat_net.onnx: the channel Concat\'s branches are permuted (spec format 2 segments), π(B) is B', async () => {
  const { imp, a, b, rec } = await load('concat_net.onnx', 'concat_net');
  assert.deepEqual(imp.flow.warnings, []);
  const segmented = Object.values(imp.flow.spec.axes).flat().filter((e) => e !== null && typeof e === 'object' && 'segments' in e);
  assert.ok(segmented.length > 0, 'some axis is a concatenation of permuted parts');
  for (const method of ['wm', 'sinkhorn-l2'] as const) {
    const r = alignModels(method, { spec: imp.flow.spec, a, b }, { seed: 1 }, (method === 'wm' ? {} : { steps: 5 }) as never);
    assert.ok(maxDiff(run(imp.graph, r.aligned, rec.get('x')!), rec.get('y_b')!) < 1e-4, method);
  }
});

describe('rebasin align --onnx', () => {
  test('sinkhorn-mid on the default export with .npz data: written, functional check passed, π(B) is B', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rebasin-import-'));
    const out = join(dir, 'b.safetensors');
    const r = cli(['align', join(DIR, 'tv_resnet.safetensors'), join(DIR, 'tv_resnet_b.safetensors'), '--onnx', join(DIR, 'tv_resnet.onnx'),
      '--method', 'sinkhorn-mid', '--data', join(DIR, 'data.npz'), '--epochs', '1', '--batch-size', '32', '--json', '-o', out]);
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { equivalence: { kind: string; passed: boolean } };
    assert.equal(report.equivalence.kind, 'functional');
    assert.equal(report.equivalence.passed, true);
    const rec = await io('tv_resnet');
    const imp = importOnnx(await readOnnx(join(DIR, 'tv_resnet.onnx')), { checkpoint: await state('tv_resnet.safetensors') });
    const aligned = recordsToState((await readSafetensors(out)).tensors);
    assert.ok(maxDiff(run(imp.graph, aligned, rec.get('x')!), rec.get('y_b')!) < 1e-4);
  });

  test('bad input: one line, exit 3, nothing written', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rebasin-import-'));
    const out = join(dir, 'b.safetensors');
    const cases: [string[], RegExp][] = [
      // A folded export whose convs no conv + BatchNorm of the checkpoint reproduces.
      [[join(DIR, 'vgg_bn.safetensors'), join(DIR, 'vgg_bn_b.safetensors'), '--onnx', join(DIR, 'tv_resnet.onnx')], /tv_resnet\.onnx|does not match|missing/],
      // Data that does not fit the model's input.
      [[join(DIR, 'mlp_bn1d.safetensors'), join(DIR, 'mlp_bn1d_b.safetensors'), '--onnx', join(DIR, 'mlp_bn1d.onnx'), '--method', 'sinkhorn-mid', '--data', join(DIR, 'data.npz')], /data\.npz.*array "x".*\[1, 28, 28\]/],
      [[join(DIR, 'mlp_bn1d.safetensors'), join(DIR, 'mlp_bn1d_b.safetensors'), '--onnx', join(DIR, 'mlp_bn1d.onnx'), '--input-shape', '0,3'], /--input-shape/],
      [[join(DIR, 'mlp_bn1d.safetensors'), join(DIR, 'mlp_bn1d_b.safetensors'), '--onnx', join(DIR, 'mlp_bn1d.onnx'), '--model-config', '{"arch":"mlp","sizes":[12,16,16,5]}'], /--model-config and --onnx/],
    ];
    for (const [args, re] of cases) {
      const r = cli(['align', ...args, '-o', out]);
      assert.equal(r.status, 3, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.equal(existsSync(out), false);
    }
  });
});

test('an op the graph cannot express: spec inference works, running refuses naming the node', async () => {
  const onnx = await readOnnx(join(DIR, 'concat_net.onnx'));
  const node = onnx.nodes.find((n) => n.opType === 'Relu')!;
  node.opType = 'MyCustomRelu';
  const imp = importOnnx(onnx);
  assert.deepEqual(imp.opaque.map((o) => o.opType), ['MyCustomRelu']);
  assert.ok(Object.keys(imp.flow.spec.perms).length >= 1);
  assert.throws(() => importedModel({ graph: imp.graph, name: 'x' }), new RegExp(`node "${node.name.replace(/[/]/g, '\\/')}" \\(MyCustomRelu\\) cannot run`));
});

test('a graph given as a model definition that does not fit together is bad input, not a bug', () => {
  const graph: ModelGraph = { nodes: [
    { op: 'input', id: 'x', shape: [4] },
    { op: 'linear', id: 'fc', input: 'x', weight: 'fc.weight', bias: null, inFeatures: 5, outFeatures: 2 },
    { op: 'output', id: 'y', input: 'fc' },
  ] };
  assert.throws(() => importedModel({ graph, name: 'user' }), (e: unknown) => e instanceof InputError && /linear "fc" expects \[\.\.\., 5\] but gets \[4\]/.test((e as Error).message));
});
