/**
 * ONNX importer rules the full-size torchvision exports need (scripts/check-torchvision.mjs):
 * tiny graphs written here the way torch 1.13's exporter writes them, run through the importer
 * and checked against a direct computation, with the spec valid and the function preserved
 * under the spec's random permutations.
 *
 * - ViT: the class token Expand-ed to the batch (the target shape computed by
 *   Shape/Gather/Concat/Reshape/ConstantOfShape/Equal/Where) and Concat-ed along the tokens;
 *   nn.MultiheadAttention's [B, T, E] → [T, B, E] → [T, B·H, d] → [B·H, T, d] transposes and
 *   reshapes that move the batch axis, the fused in_proj output sliced into q/k/v, and the
 *   [T·B, E] Gemm of out_proj.
 * - Reshapes that would split the batch with known sizes, and Expand of other axes, stay opaque.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor } from '../src/core/index.js';
import { runGraph, inferShapes } from '../src/models/graph.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import { validateSpec } from '../src/permutation/spec.js';
import { encodeModelProto } from '../src/io/onnx-proto.js';
import { parseOnnx, type OnnxModel } from '../src/io/onnx.js';
import { importOnnx, type ImportedOnnx } from '../src/io/onnx-import.js';
import type { Params } from '../src/state/params.js';
import { gradcheck } from './helpers/gradcheck.js';

type Obj = Record<string, unknown>;

function floatTensor(name: string, dims: number[], data: ArrayLike<number>): Obj {
  const f = Float32Array.from(data);
  return { name, dims, data_type: 1, raw_data: new Uint8Array(f.buffer) };
}
function int64Tensor(name: string, dims: number[], values: number[]): Obj {
  const b = BigInt64Array.from(values.map((v) => BigInt(v)));
  return { name, dims, data_type: 7, raw_data: new Uint8Array(b.buffer) };
}
const ints = (name: string, v: number[]) => ({ name, type: 7, ints: v });
const int = (name: string, v: number) => ({ name, type: 2, i: v });
const tensorAttr = (t: Obj) => ({ name: 'value', type: 4, t });
function valueInfo(name: string, dims: (number | string)[]): Obj {
  return { name, type: { tensor_type: { elem_type: 1, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } } };
}

/** Builds nodes tersely: op(type, inputs, outputs, attributes). */
function graphBuilder() {
  const nodes: Obj[] = [];
  let k = 0;
  const op = (opType: string, input: string[], output: string | string[], attribute: Obj[] = []) => {
    const outs = typeof output === 'string' ? [output] : output;
    nodes.push({ name: `/${opType}_${k++}`, op_type: opType, input, output: outs, attribute });
    return outs[0];
  };
  const konst = (name: string, dims: number[], values: number[]) => op('Constant', [], name, [tensorAttr(int64Tensor('', dims, values))]);
  const fconst = (name: string, value: number) => op('Constant', [], name, [tensorAttr(floatTensor('', [], [value]))]);
  return { nodes, op, konst, fconst };
}

function model(nodes: Obj[], inits: Obj[], input: (number | string)[], output: string): OnnxModel {
  return parseOnnx(encodeModelProto({
    ir_version: 8, producer_name: 'pytorch', opset_import: [{ domain: '', version: 14 }],
    graph: { name: 'g', node: nodes, initializer: inits, input: [valueInfo('x', input)], output: [valueInfo(output, [])] },
  }), 'tiny.onnx');
}

const T = 3; // patches
const E = 4; // width
const H = 2; // heads
const D = E / H;
const IN = 5;
const OUT = 3;

/** Weights of the mini ViT: name → [dims, values]. */
function vitWeights(rng: Rng): Map<string, { dims: number[]; data: Float32Array }> {
  const w = new Map<string, { dims: number[]; data: Float32Array }>();
  const add = (name: string, dims: number[]) => {
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    rng.fillNormal(data, 0, 0.7);
    w.set(name, { dims, data });
  };
  add('emb.weight', [IN, E]); // MatMul B: [in, out]
  add('emb.bias', [E]);
  add('class_token', [1, 1, E]);
  add('pos_embedding', [1, T + 1, E]);
  add('attn.in_proj_weight', [E, 3 * E]); // MatMul B (PyTorch's in_proj_weight transposed)
  add('attn.in_proj_bias', [3 * E]);
  add('attn.out_proj.weight', [E, E]); // Gemm transB=1: [out, in]
  add('attn.out_proj.bias', [E]);
  add('head.weight', [OUT, E]);
  add('head.bias', [OUT]);
  return w;
}

/**
 * The mini ViT as torch 1.13 exports torchvision's VisionTransformer (one encoder block without
 * LayerNorm and MLP): patch embedding (a Linear), class token, positional embedding,
 * nn.MultiheadAttention (batch_first, fused in_proj), residual, head on token 0.
 */
function miniVit(weights: ReturnType<typeof vitWeights>, staticBatch?: number): OnnxModel {
  const { nodes, op, konst, fconst } = graphBuilder();
  const inits = [...weights].map(([name, { dims, data }]) => floatTensor(name, dims, data));
  let h = op('MatMul', ['x', 'emb.weight'], 'h0');
  h = op('Add', ['emb.bias', h], 'h');
  // class_token.expand(n, -1, -1), as exported: [n, -1, -1] → Where(Equal(s, -1), 1, s).
  konst('zero', [], [0]);
  konst('axes0', [1], [0]);
  konst('minus1', [1], [-1]);
  konst('minus1s', [], [-1]);
  const n = op('Gather', [op('Shape', [h], 'sh'), 'zero'], 'n', [int('axis', 0)]);
  const n1 = op('Unsqueeze', [n, 'axes0'], 'n1');
  const s = op('Reshape', [op('Concat', [n1, 'minus1', 'minus1'], 'nmm', [int('axis', 0)]), 'minus1'], 's');
  const ones = op('ConstantOfShape', [op('Shape', [s], 'ss')], 'ones', [tensorAttr(int64Tensor('', [1], [1]))]);
  const eq = op('Equal', [s, op('Mul', [ones, 'minus1s'], 'm1')], 'eq');
  const ct = op('Expand', ['class_token', op('Where', [eq, ones, s], 'target')], 'ct');
  let z = op('Concat', [ct, h], 'z0', [int('axis', 1)]);
  z = op('Add', [z, 'pos_embedding'], 'z');
  // F.multi_head_attention_forward on query.transpose(1, 0).
  const t = op('Transpose', [z], 't', [ints('perm', [1, 0, 2])]);
  const qkv = op('Add', ['attn.in_proj_bias', op('MatMul', [t, 'attn.in_proj_weight'], 'qkv0')], 'qkv');
  konst('last', [1], [-1]);
  const part = (i: number) => op('Slice', [qkv, konst(`st${i}`, [1], [i * E]), konst(`en${i}`, [1], [(i + 1) * E]), 'last'], `p${i}`);
  // [T+1, B·H, d]: the batch·heads dim as the exporter computes it (n·H), here -1 (or B·H
  // itself when the export has a static batch).
  const heads = konst('heads', [3], [T + 1, staticBatch ? staticBatch * H : -1, D]);
  const q = op('Transpose', [op('Reshape', [part(0), heads], 'q0')], 'q1', [ints('perm', [1, 0, 2])]);
  const k = op('Transpose', [op('Reshape', [part(1), heads], 'k0')], 'k1', [ints('perm', [1, 2, 0])]);
  const v = op('Transpose', [op('Reshape', [part(2), heads], 'v0')], 'v1', [ints('perm', [1, 0, 2])]);
  fconst('scale', Math.sqrt(D));
  const att = op('Softmax', [op('MatMul', [op('Div', [q, 'scale'], 'qs'), k], 'qk')], 'att', [int('axis', -1)]);
  const o = op('Transpose', [op('MatMul', [att, v], 'o0')], 'o1', [ints('perm', [1, 0, 2])]);
  const flat = op('Reshape', [o, konst('tbE', [2], [staticBatch ? staticBatch * (T + 1) : -1, E])], 'o2');
  const proj = op('Gemm', [flat, 'attn.out_proj.weight', 'attn.out_proj.bias'], 'o3', [int('transB', 1)]);
  // view(T+1, n, E) with n read from the shape, then transpose back to batch first.
  const tnE = op('Concat', [konst('tok', [1], [T + 1]), n1, konst('wid', [1], [E])], 'tnE', [int('axis', 0)]);
  const back = op('Transpose', [op('Reshape', [proj, tnE], 'o4')], 'o5', [ints('perm', [1, 0, 2])]);
  const y = op('Add', [back, z], 'y');
  const c0 = op('Gather', [y, 'zero'], 'c0', [int('axis', 1)]);
  op('Gemm', [c0, 'head.weight', 'head.bias'], 'out', [int('transB', 1)]);
  return model(nodes, inits, [staticBatch ?? 'batch', T, IN], 'out');
}

/** The mini ViT computed directly (float64 loops). */
function miniVitRef(w: ReturnType<typeof vitWeights>, x: Float32Array, B: number): Float64Array {
  const g = (name: string) => w.get(name)!.data;
  const out = new Float64Array(B * OUT);
  for (let b = 0; b < B; b++) {
    const z: number[][] = [Array.from(g('class_token'))];
    for (let t = 0; t < T; t++) {
      const row: number[] = [];
      for (let e = 0; e < E; e++) {
        let s = g('emb.bias')[e];
        for (let i = 0; i < IN; i++) s += x[(b * T + t) * IN + i] * g('emb.weight')[i * E + e];
        row.push(s);
      }
      z.push(row);
    }
    z.forEach((row, t) => row.forEach((_, e) => { row[e] += g('pos_embedding')[t * E + e]; }));
    const qkv = z.map((row) => Array.from({ length: 3 * E }, (_, j) => row.reduce((s, v, e) => s + v * g('attn.in_proj_weight')[e * 3 * E + j], g('attn.in_proj_bias')[j])));
    const attnOut = z.map(() => new Array<number>(E).fill(0));
    for (let hd = 0; hd < H; hd++) {
      for (let i = 0; i <= T; i++) {
        const logits = z.map((_, j) => {
          let s = 0;
          for (let d = 0; d < D; d++) s += qkv[i][hd * D + d] * qkv[j][E + hd * D + d];
          return s / Math.sqrt(D);
        });
        const m = Math.max(...logits);
        const ex = logits.map((l) => Math.exp(l - m));
        const sum = ex.reduce((a, c) => a + c, 0);
        for (let d = 0; d < D; d++) attnOut[i][hd * D + d] = ex.reduce((s, p, j) => s + (p / sum) * qkv[j][2 * E + hd * D + d], 0);
      }
    }
    const y0 = Array.from({ length: E }, (_, o) => attnOut[0].reduce((s, v, e) => s + v * g('attn.out_proj.weight')[o * E + e], g('attn.out_proj.bias')[o]) + z[0][o]);
    for (let c = 0; c < OUT; c++) out[b * OUT + c] = y0.reduce((s, v, e) => s + v * g('head.weight')[c * E + e], g('head.bias')[c]);
  }
  return out;
}

const paramsOf = (imp: ImportedOnnx): Params => new Map([...imp.tensors].map(([k, v]) => [k, new Tensor(Float32Array.from(v.data), [...v.shape])]));

function input(B: number, rng: Rng): Tensor {
  const x = new Tensor(new Float32Array(B * T * IN), [B, T, IN]);
  rng.fillNormal(x.data, 0, 1);
  return x;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

describe('ViT export: class token and MultiheadAttention', () => {
  const rng = new Rng(11);
  const w = vitWeights(rng);
  const imp = importOnnx(miniVit(w));

  test('imports with nothing opaque and runs as the direct computation, for any batch size', () => {
    assert.deepEqual(imp.opaque, []);
    const params = paramsOf(imp);
    for (const B of [1, 2, 3]) {
      const x = input(B, rng);
      const y = runGraph(imp.graph, params, x, { training: false });
      assert.deepEqual(y.shape, [B, OUT]);
      const d = maxDiff(y.data, miniVitRef(w, x.data as Float32Array, B));
      assert.ok(d < 1e-5, `batch ${B}: max abs diff ${d}`);
    }
  });

  test('exported with a static batch size (B·H and T·B known numbers) it imports and runs the same', () => {
    const fixed = importOnnx(miniVit(w, 2));
    assert.deepEqual(fixed.opaque, []);
    const x = input(2, rng);
    const d = maxDiff(runGraph(fixed.graph, paramsOf(fixed), x, { training: false }).data, miniVitRef(w, x.data as Float32Array, 2));
    assert.ok(d < 1e-5, `max abs diff ${d}`);
  });

  test('the class token is a broadcast of the parameter; the batch moves only inside attention', () => {
    const ops = imp.graph.nodes.map((n) => n.op);
    assert.equal(ops.filter((o) => o === 'broadcast').length, 1);
    // Heads fold into the batch: the graph holds [H, T, d] per sample; the two products run there.
    const shapes = inferShapes(imp.graph);
    const products = imp.graph.nodes.filter((n) => n.op === 'matmul').map((n) => shapes.get(n.id));
    assert.deepEqual(products, [[H, T + 1, T + 1], [H, T + 1, D]]);
  });

  test('spec: the residual stream is one permutation through the class token, attention and head; the fused q/k/v rows are heads', () => {
    const spec = imp.flow.spec;
    assert.deepEqual(validateSpec(spec, paramsOf(imp), { strict: true }), []);
    const p = spec.axes['emb.weight'][1];
    assert.ok(typeof p === 'string');
    assert.deepEqual(spec.axes['class_token'], [null, null, p]);
    assert.deepEqual(spec.axes['pos_embedding'], [null, null, p]);
    assert.deepEqual(spec.axes['head.weight'], [null, p]);
    // in_proj_weight (stored [D, 3D] for the MatMul): thirds q, k, v, each H heads × d; one head permutation for all three;
    // q and k share their per-head inner permutations (q·kᵀ), v has its own, and out_proj's input
    // axis takes v's.
    const [cols, rows] = spec.axes['attn.in_proj_weight'] as [string, { segments: { blocks: string; within: string[] }[] }];
    assert.equal(cols, p);
    const [q, k, v] = rows.segments;
    assert.equal(rows.segments.length, 3);
    assert.ok(q.blocks === k.blocks && k.blocks === v.blocks);
    assert.equal(spec.perms[q.blocks], H);
    assert.deepEqual(q.within, k.within);
    assert.equal(q.within.length, H);
    assert.equal(new Set([...q.within, ...v.within]).size, 2 * H);
    assert.ok([...q.within, ...v.within].every((id) => spec.perms[id] === D));
    assert.deepEqual(spec.axes['attn.in_proj_bias'], [rows]);
    assert.deepEqual(spec.axes['attn.out_proj.weight'], [p, v]);
  });

  test('gradients through the moved batch axis match finite differences (input and attention weights)', () => {
    const f64 = (t: Tensor, grad = false) => new Tensor(Float64Array.from(t.data), [...t.shape], grad);
    const base = paramsOf(imp);
    const names = ['attn.in_proj_weight', 'attn.out_proj.weight', 'class_token'];
    const x = f64(input(2, rng), true);
    gradcheck((xi, ...ws) => {
      const params = new Map([...base].map(([k, v]) => [k, f64(v)]));
      names.forEach((k, i) => params.set(k, ws[i]));
      return runGraph(imp.graph, params, xi, { training: false });
    }, [x, ...names.map((k) => f64(base.get(k)!, true))], { rtol: 1e-4, atol: 1e-6 });
  });

  test('permuting by the spec keeps the function', () => {
    const params = paramsOf(imp);
    const perms = randomPerms(imp.flow.spec, new Rng(3));
    assert.ok(Object.values(perms).some((q) => q.some((v, i) => v !== i)));
    const x = input(2, rng);
    const y = runGraph(imp.graph, params, x, { training: false });
    const yp = runGraph(imp.graph, applyHard(imp.flow.spec, params, perms), x, { training: false });
    assert.ok(maxDiff(y.data, yp.data) < 1e-5);
  });
});

describe('batch-moving ops the graph cannot follow stay opaque, named', () => {
  test('a reshape that splits the batch axis with a known size', () => {
    const { nodes, op, konst } = graphBuilder();
    op('Reshape', ['x', konst('t', [2], [2, -1])], 'y');
    const imp = importOnnx(model(nodes, [], ['batch', 6], 'y'));
    assert.equal(imp.opaque.length, 1);
    assert.match(imp.opaque[0].reason, /splits or merges the batch axis/);
  });

  test('Expand of a parameter along other axes than the batch', () => {
    const { nodes, op, konst } = graphBuilder();
    const s = op('Shape', ['x'], 's');
    const n = op('Gather', [s, konst('zero', [1], [0])], 'n', [int('axis', 0)]);
    const target = op('Concat', [n, konst('five', [1], [5]), konst('four', [1], [4])], 'tg', [int('axis', 0)]);
    const ct = op('Expand', ['p', target], 'ct');
    op('Concat', [ct, 'x'], 'y', [int('axis', 1)]);
    const imp = importOnnx(model(nodes, [floatTensor('p', [1, 1, 4], [1, 2, 3, 4])], ['batch', 3, 4], 'y'));
    assert.match(imp.opaque.map((o) => o.reason).join(), /expands axes other than the batch/);
  });

  test('an output whose batch axis is not first is refused, named', () => {
    const { nodes, op } = graphBuilder();
    op('Transpose', ['x'], 'y', [ints('perm', [1, 0, 2])]);
    const imp = importOnnx(model(nodes, [], ['batch', 2, 3], 'y'));
    assert.deepEqual(imp.opaque.map((o) => [o.node, o.reason]), [['y', 'output "y" has its batch axis at position 1']]);
  });

  test('the batch moved and moved back around an element-wise op runs', () => {
    // [B, 2, 3] → [2, B, 3] → relu → [B, 2, 3]: no graph node for either transpose.
    const { nodes, op } = graphBuilder();
    const t = op('Transpose', ['x'], 't', [ints('perm', [1, 0, 2])]);
    op('Transpose', [op('Relu', [t], 'r')], 'y', [ints('perm', [1, 0, 2])]);
    const imp = importOnnx(model(nodes, [], ['batch', 2, 3], 'y'));
    assert.deepEqual(imp.opaque, []);
    assert.deepEqual(imp.graph.nodes.map((n) => n.op), ['input', 'relu', 'output']);
    const x = new Tensor(Float32Array.from([-1, 2, -3, 4, -5, 6, 7, -8, 9, -10, 11, -12]), [2, 2, 3]);
    assert.deepEqual([...runGraph(imp.graph, new Map(), x, { training: false }).data], [...x.data].map((v) => Math.max(0, v)));
  });
});

describe('initializers the exporter de-duplicated into Identity aliases', () => {
  test('each alias is its own tensor under its PyTorch name: the graph runs and each follows its own layer', () => {
    // torch 1.13 writes `l2.bias = Identity(l1.bias)` when the two are equal (e.g. zero biases).
    const rng = new Rng(4);
    const { nodes, op } = graphBuilder();
    const w1 = new Float32Array(12);
    const w2 = new Float32Array(16);
    const b = Float32Array.from([0.5, -1, 2, 0.25]);
    rng.fillNormal(w1, 0, 1);
    rng.fillNormal(w2, 0, 1);
    op('Identity', ['l1.bias'], 'l2.bias');
    const h = op('Relu', [op('Gemm', ['x', 'l1.weight', 'l1.bias'], 'h0', [int('transB', 1)])], 'h');
    op('Gemm', [h, 'l2.weight', 'l2.bias'], 'y', [int('transB', 1)]);
    const imp = importOnnx(model(nodes, [floatTensor('l1.weight', [4, 3], w1), floatTensor('l1.bias', [4], b), floatTensor('l2.weight', [4, 4], w2)], ['batch', 3], 'y'));
    assert.deepEqual(imp.opaque, []);
    assert.deepEqual([...imp.tensors.keys()].sort(), ['l1.bias', 'l1.weight', 'l2.bias', 'l2.weight']);
    const spec = imp.flow.spec;
    assert.deepEqual(validateSpec(spec, paramsOf(imp), { strict: true }), []);
    assert.deepEqual(spec.axes['l1.bias'], [spec.axes['l1.weight'][0]]);
    assert.deepEqual(spec.axes['l2.bias'], [null]); // the output layer's
    const x = new Tensor(Float32Array.from([1, -2, 0.5, 0.3, 0.1, -1]), [2, 3]);
    const y = runGraph(imp.graph, paramsOf(imp), x, { training: false });
    const ref = [0, 1].flatMap((s) => {
      const hid = [0, 1, 2, 3].map((o) => Math.max(0, b[o] + [0, 1, 2].reduce((acc, i) => acc + w1[o * 3 + i] * x.data[s * 3 + i], 0)));
      return [0, 1, 2, 3].map((o) => b[o] + hid.reduce((acc, v, i) => acc + w2[o * 4 + i] * v, 0));
    });
    assert.ok(maxDiff(y.data, ref) < 1e-5);
    const yp = runGraph(imp.graph, applyHard(spec, paramsOf(imp), randomPerms(spec, new Rng(2))), x, { training: false });
    assert.ok(maxDiff(yp.data, y.data) < 1e-5);
  });
});

describe('BatchNorm folded by an eval-mode export', () => {
  test('ε is found exactly (not swamped by large running variances), so training mode is right too', () => {
    const rng = new Rng(8);
    const C = 3;
    const eps = 1e-3; // MobileNetV3's
    const ck = new Map<string, { shape: number[]; data: Float32Array }>();
    const put = (name: string, shape: number[], f: (i: number) => number) => ck.set(name, { shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => f(i)) });
    put('conv.weight', [C, 2, 1, 1], () => rng.normal());
    put('bn.weight', [C], () => 0.5 + rng.uniform());
    put('bn.bias', [C], () => rng.normal());
    put('bn.running_mean', [C], () => rng.normal());
    put('bn.running_var', [C], () => 50 + 50 * rng.uniform()); // (γ/s)² − σ² in float32: ±1e-5
    const g = (k: string) => ck.get(k)!.data;
    const s = Array.from({ length: C }, (_, c) => g('bn.weight')[c] / Math.sqrt(g('bn.running_var')[c] + eps));
    const folded = Float32Array.from(g('conv.weight'), (w, i) => w * s[Math.floor(i / 2)]);
    const fbias = Float32Array.from({ length: C }, (_, c) => g('bn.bias')[c] - g('bn.running_mean')[c] * s[c]);
    const { nodes } = graphBuilder();
    nodes.push({ name: '/conv/Conv', op_type: 'Conv', input: ['x', 'onnx::Conv_7', 'onnx::Conv_8'], output: ['y'], attribute: [ints('kernel_shape', [1, 1])] });
    const imp = importOnnx(model(nodes, [floatTensor('onnx::Conv_7', [C, 2, 1, 1], folded), floatTensor('onnx::Conv_8', [C], fbias)], ['batch', 2, 2, 2], 'y'), { checkpoint: ck });
    assert.equal(imp.unfolded.length, 1);
    const bn = imp.graph.nodes.find((n) => n.op === 'batchnorm');
    assert.ok(bn && bn.op === 'batchnorm');
    assert.equal(bn.eps, eps);
    assert.equal(bn.weight, 'bn.weight');
  });
});
