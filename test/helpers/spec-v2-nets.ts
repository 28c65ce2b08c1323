/**
 * Two small networks written with F ops whose symmetries need permutation-spec format version 2,
 * each as { spec, params(rng, dtype), forward(params, x) }.
 */
import { F, randn, type DType, type Rng, type Tensor } from '../../src/core/index.js';
import { blockEntry, segmentsEntry, type PermutationSpec } from '../../src/permutation/spec.js';
import type { Params } from '../../src/state/params.js';

export interface V2Net {
  spec: PermutationSpec;
  params(rng: Rng, dtype?: DType): Params;
  forward(p: Params, x: Tensor): Tensor;
  inputs: number;
}

/**
 * Two branches concatenated: h1 = relu(W1 x + b1) (a units), h2 = relu(W2 x + b2) (b units of 2
 * features each, a flattened [b, 2]), c = [h1, x[:, 0:2], h2] (a + 2 + 2b), y = W3 c + b3.
 */
export function concatNet(a = 4, b = 3, din = 5, dout = 3): V2Net {
  const spec: PermutationSpec = {
    perms: { P_a: a, P_b: b },
    axes: {
      'w1': ['P_a', null], 'b1': ['P_a'],
      'w2': [{ perm: 'P_b', inner: 2 }, null], 'b2': [{ perm: 'P_b', inner: 2 }],
      'w3': [null, segmentsEntry(['P_a', { size: 2 }, { perm: 'P_b', inner: 2 }])], 'b3': [null],
    },
  };
  return {
    spec,
    inputs: din,
    params: (rng, dtype = 'float32') => new Map([
      ['w1', randn([a, din], rng, 1, dtype)], ['b1', randn([a], rng, 1, dtype)],
      ['w2', randn([2 * b, din], rng, 1, dtype)], ['b2', randn([2 * b], rng, 1, dtype)],
      ['w3', randn([dout, a + 2 + 2 * b], rng, 1, dtype)], ['b3', randn([dout], rng, 1, dtype)],
    ]),
    forward: (p, x) => {
      const h1 = F.relu(F.linear(x, p.get('w1')!, p.get('b1')!));
      const h2 = F.relu(F.linear(x, p.get('w2')!, p.get('b2')!));
      return F.linear(F.concat([h1, F.slice(x, 1, 0, 2), h2], 1), p.get('w3')!, p.get('b3')!);
    },
  };
}

/**
 * One attention layer with a residual stream: x = x0 Weᵀ (width D, permutation R), a fused QKV
 * projection [Q; K; V] of H heads (query/key dimension dk, one inner permutation P_qk shared by
 * every head's Q and K; value dimension dv, one inner permutation per head P_v<h>), a per-head
 * gate g (the head permutation used plainly), the output projection, and a read-out:
 * y = x + Σ_h O_h(g_h · softmax(q_h k_hᵀ/√dk) v_h), logits = Wout y. x0 is one sequence [T, 5].
 */
export function attentionNet(D = 4, H = 2, dk = 3, dv = 2, din = 5, dout = 3): V2Net {
  const vList = Array.from({ length: H }, (_, h) => `P_v${h}`);
  const qkvEntry = () => segmentsEntry([blockEntry('P_h', 'P_qk'), blockEntry('P_h', 'P_qk'), blockEntry('P_h', vList)]);
  const spec: PermutationSpec = {
    perms: { R: D, P_h: H, P_qk: dk, ...Object.fromEntries(vList.map((id) => [id, dv])) },
    axes: {
      'embed': ['R', null],
      'qkv.weight': [qkvEntry(), 'R'],
      'qkv.bias': [qkvEntry()],
      'gate': ['P_h'],
      'out.weight': ['R', blockEntry('P_h', vList)],
      'head.weight': [null, 'R'],
    },
  };
  return {
    spec,
    inputs: din,
    params: (rng, dtype = 'float32') => new Map([
      ['embed', randn([D, din], rng, 1, dtype)],
      ['qkv.weight', randn([H * (2 * dk + dv), D], rng, 1, dtype)], ['qkv.bias', randn([H * (2 * dk + dv)], rng, 1, dtype)],
      ['gate', randn([H], rng, 1, dtype)],
      ['out.weight', randn([D, H * dv], rng, 1, dtype)],
      ['head.weight', randn([dout, D], rng, 1, dtype)],
    ]),
    forward: (p, x0) => {
      const x = F.linear(x0, p.get('embed')!);
      const qkv = F.linear(x, p.get('qkv.weight')!, p.get('qkv.bias')!);
      const gate = p.get('gate')!;
      const heads: Tensor[] = [];
      for (let h = 0; h < H; h++) {
        const q = F.slice(qkv, 1, h * dk, (h + 1) * dk);
        const k = F.slice(qkv, 1, H * dk + h * dk, H * dk + (h + 1) * dk);
        const v = F.slice(qkv, 1, 2 * H * dk + h * dv, 2 * H * dk + (h + 1) * dv);
        const att = F.softmax(F.mulScalar(F.matmul(q, F.transpose(k)), 1 / Math.sqrt(dk)), -1);
        heads.push(F.mul(F.matmul(att, v), F.slice(gate, 0, h, h + 1)));
      }
      return F.linear(F.add(x, F.linear(F.concat(heads, 1), p.get('out.weight')!)), p.get('head.weight')!);
    },
  };
}

/**
 * Grouped-query attention with a residual stream: G key/value groups (permutation P_kv), r query
 * heads per group, a fused projection [Q (G·r heads of dk); K (G heads of dk); V (G heads of dv)],
 * one Q/K inner permutation per group shared by its r query heads and its key head, one V/O inner
 * permutation per group shared by its value head and the output-projection columns of its r query
 * heads (block entries with `repeat` r on Q and O):
 * y = x + O·concat_h softmax(q_h k_{g(h)}ᵀ/√dk) v_{g(h)}, g(h) = ⌊h / r⌋; logits = Wout y.
 */
export function gqaNet(D = 6, G = 2, r = 3, dk = 3, dv = 2, din = 5, dout = 3): V2Net {
  const qk = Array.from({ length: G }, (_, g) => `P_qk${g}`);
  const vo = Array.from({ length: G }, (_, g) => `P_vo${g}`);
  const qkvEntry = () => segmentsEntry([blockEntry('P_kv', qk, r), blockEntry('P_kv', qk), blockEntry('P_kv', vo)]);
  const rows = G * r * dk + G * dk + G * dv;
  const spec: PermutationSpec = {
    perms: { R: D, P_kv: G, ...Object.fromEntries(qk.map((id) => [id, dk])), ...Object.fromEntries(vo.map((id) => [id, dv])) },
    axes: {
      'embed': ['R', null],
      'qkv.weight': [qkvEntry(), 'R'],
      'qkv.bias': [qkvEntry()],
      'out.weight': ['R', blockEntry('P_kv', vo, r)],
      'head.weight': [null, 'R'],
    },
  };
  return {
    spec,
    inputs: din,
    params: (rng, dtype = 'float32') => new Map([
      ['embed', randn([D, din], rng, 1, dtype)],
      ['qkv.weight', randn([rows, D], rng, 1, dtype)], ['qkv.bias', randn([rows], rng, 1, dtype)],
      ['out.weight', randn([D, G * r * dv], rng, 1, dtype)],
      ['head.weight', randn([dout, D], rng, 1, dtype)],
    ]),
    forward: (p, x0) => {
      const x = F.linear(x0, p.get('embed')!);
      const qkv = F.linear(x, p.get('qkv.weight')!, p.get('qkv.bias')!);
      const kAt = G * r * dk;
      const vAt = kAt + G * dk;
      const heads: Tensor[] = [];
      for (let h = 0; h < G * r; h++) {
        const g = Math.floor(h / r);
        const q = F.slice(qkv, 1, h * dk, (h + 1) * dk);
        const k = F.slice(qkv, 1, kAt + g * dk, kAt + (g + 1) * dk);
        const v = F.slice(qkv, 1, vAt + g * dv, vAt + (g + 1) * dv);
        heads.push(F.matmul(F.softmax(F.mulScalar(F.matmul(q, F.transpose(k)), 1 / Math.sqrt(dk)), -1), v));
      }
      return F.linear(F.add(x, F.linear(F.concat(heads, 1), p.get('out.weight')!)), p.get('head.weight')!);
    },
  };
}
