/**
 * Transformers as ModelGraphs: a pre-LN GPT-2-style decoder (token + position embeddings, causal
 * multi-head attention, GELU MLP, output head tied to the token embedding) and a ViT-style encoder
 * (patch embedding, class token, position embeddings). Both are plain nodes (linear, reshape,
 * transpose, matmul, softmax, layernorm), so the permutation spec — the residual stream, each
 * layer's MLP hidden units, its heads and each head's query/key and value/output dimensions — is
 * derived from the graph like any other model's, not listed by hand.
 *
 * Names follow a PyTorch module of the same structure (`blocks.0.attn.q.weight`, …); the weights
 * are nn.Linear [out, in].
 */
import { InputError } from '../errors.js';
import { GraphBuilder } from './builder.js';
import { defineArch, graphModel, type Model, type ModelFamily, type ModelPreset } from './model.js';

export interface TransformerOptions {
  /** Residual width D. */
  width: number;
  layers: number;
  heads: number;
  /** MLP hidden width (default 4·D). */
  mlpWidth?: number;
}

export interface GptOptions extends TransformerOptions {
  /** Vocabulary size V (token ids 0..V−1). */
  vocab: number;
  /** Context length T: the model reads T ids and predicts the next token at each position. */
  context: number;
}

export interface VitOptions extends TransformerOptions {
  /** Per-sample image shape [C, H, W]. */
  imageShape: [number, number, number];
  /** Square patch side; must divide H and W. */
  patch: number;
  classes: number;
}

export type GptConfig = { arch: 'gpt' } & GptOptions;
export type VitConfig = { arch: 'vit' } & VitOptions;

function checkSizes(who: string, o: TransformerOptions): { D: number; d: number; M: number } {
  for (const [k, v] of Object.entries({ width: o.width, layers: o.layers, heads: o.heads, mlpWidth: o.mlpWidth ?? 1 })) {
    if (!(Number.isInteger(v) && v >= 1)) throw new InputError(`${who}: ${k} must be a positive integer, got ${v}`);
  }
  if (o.width % o.heads !== 0) throw new InputError(`${who}: ${o.heads} heads do not divide width ${o.width}`);
  return { D: o.width, d: o.width / o.heads, M: o.mlpWidth ?? 4 * o.width };
}

/**
 * One pre-LN block on the stream `x` of T positions: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
 * `mask` (causal) is a [T, T] constant added to the scores.
 */
function block(b: GraphBuilder, p: string, x: string, T: number, sizes: { D: number; d: number; M: number; H: number }, mask: string | null): string {
  const { D, d, M, H } = sizes;
  const ln = (id: string, input: string) => b.node({ op: 'layernorm', id, input, shape: [D], weight: `${id}.weight`, bias: `${id}.bias`, eps: 1e-5 });
  const a = ln(`${p}.ln_1`, x);
  // Heads: [T, D] → [T, H, d] → [H, T, d] (keys [H, d, T]).
  const heads = (name: string, perm: number[]) => {
    const y = b.linear(`${p}.attn.${name}`, a, D, D);
    const r = b.node({ op: 'reshape', id: `${p}.attn.${name}.heads`, input: y, shape: [T, H, d] });
    return b.node({ op: 'transpose', id: `${p}.attn.${name}.t`, input: r, perm });
  };
  const q = heads('q', [1, 0, 2]);
  const k = heads('k', [1, 2, 0]);
  const v = heads('v', [1, 0, 2]);
  let s = b.node({ op: 'matmul', id: `${p}.attn.scores`, inputs: [q, k] });
  const scale = b.node({ op: 'constant', id: `${p}.attn.scale`, shape: [], values: [1 / Math.sqrt(d)] });
  s = b.node({ op: 'binary', id: `${p}.attn.scaled`, inputs: [s, scale], fn: 'mul' });
  if (mask) s = b.node({ op: 'binary', id: `${p}.attn.masked`, inputs: [s, mask], fn: 'add' });
  const w = b.node({ op: 'softmax', id: `${p}.attn.softmax`, input: s, axis: 2, log: false });
  const ctx = b.node({ op: 'matmul', id: `${p}.attn.context`, inputs: [w, v] });
  const back = b.node({ op: 'transpose', id: `${p}.attn.context.t`, input: ctx, perm: [1, 0, 2] });
  const merged = b.node({ op: 'reshape', id: `${p}.attn.merge`, input: back, shape: [T, D] });
  const attn = b.linear(`${p}.attn.proj`, merged, D, D);
  const x1 = b.add(`${p}.attn.residual`, [x, attn]);
  const m = ln(`${p}.ln_2`, x1);
  const fc = b.linear(`${p}.mlp.fc`, m, D, M);
  const g = b.node({ op: 'unary', id: `${p}.mlp.gelu`, input: fc, fn: 'gelu' });
  const out = b.linear(`${p}.mlp.proj`, g, M, D);
  return b.add(`${p}.mlp.residual`, [x1, out]);
}

/** The causal mask: 0 on and below the diagonal, −1e9 above (a position sees itself and the past). */
function causalMask(T: number): number[] {
  const v = new Array<number>(T * T).fill(0);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) v[i * T + j] = -1e9;
  return v;
}

/** GPT-2-style character model: ids [T] → next-token logits [T·V] (position-major). */
export function gpt(o: GptOptions): Model {
  const sizes = { ...checkSizes('gpt', o), H: o.heads };
  const { D } = sizes;
  const { vocab: V, context: T } = o;
  if (!(Number.isInteger(V) && V >= 2 && Number.isInteger(T) && T >= 1)) throw new InputError(`gpt: vocab (≥ 2) and context (≥ 1) must be integers, got ${V} and ${T}`);
  const b = new GraphBuilder();
  const ids = b.input([T]);
  const wte = b.node({ op: 'param', id: 'wte', name: 'wte.weight', shape: [V, D] });
  const tok = b.node({ op: 'lookup', id: 'wte.lookup', inputs: [wte, ids] });
  const wpe = b.node({ op: 'param', id: 'wpe', name: 'wpe.weight', shape: [T, D] });
  let x = b.add('embed', [tok, wpe]);
  const mask = b.node({ op: 'constant', id: 'causal_mask', shape: [T, T], values: causalMask(T) });
  for (let l = 0; l < o.layers; l++) x = block(b, `blocks.${l}`, x, T, sizes, mask);
  x = b.node({ op: 'layernorm', id: 'ln_f', input: x, shape: [D], weight: 'ln_f.weight', bias: 'ln_f.bias', eps: 1e-5 });
  // The head is the token embedding read the other way (weight tying, as GPT-2).
  const logits = b.node({ op: 'linear', id: 'lm_head', input: x, weight: 'wte.weight', bias: null, inFeatures: D, outFeatures: V, tied: true });
  b.output(b.node({ op: 'reshape', id: 'logits', input: logits, shape: [T * V] }));
  const config: GptConfig = { arch: 'gpt', vocab: V, context: T, width: D, layers: o.layers, heads: o.heads, ...(o.mlpWidth ? { mlpWidth: o.mlpWidth } : {}) };
  return graphModel(`gpt-${o.layers}x${D}-h${o.heads}`, config, b.build());
}

/** ViT-style classifier: image [C, H, W] → patches → class token + positions → blocks → logits. */
export function vit(o: VitOptions): Model {
  const sizes = { ...checkSizes('vit', o), H: o.heads };
  const { D } = sizes;
  const [C, Hi, Wi] = o.imageShape;
  const P = o.patch;
  if (!(Number.isInteger(P) && P >= 1 && Hi % P === 0 && Wi % P === 0)) throw new InputError(`vit: patch ${P} must divide the image size ${Hi}×${Wi}`);
  const n = (Hi / P) * (Wi / P);
  const T = n + 1;
  const b = new GraphBuilder();
  const img = b.input([C, Hi, Wi]);
  const pe = b.conv('patch_embed', img, C, D, P, P, 0, true);
  const flat = b.node({ op: 'reshape', id: 'patch_embed.flat', input: pe, shape: [D, n] });
  const patches = b.node({ op: 'transpose', id: 'patch_embed.t', input: flat, perm: [1, 0] });
  const cls = b.node({ op: 'param', id: 'cls_token', name: 'cls_token', shape: [1, 1, D], view: [1, D] });
  const clsB = b.node({ op: 'broadcast', id: 'cls_token.batch', inputs: [cls, img] });
  const seq = b.node({ op: 'concat', id: 'tokens', inputs: [clsB, patches], axis: 0 });
  const pos = b.node({ op: 'param', id: 'pos_embed', name: 'pos_embed', shape: [1, T, D], view: [T, D] });
  let x = b.node({ op: 'binary', id: 'embed', inputs: [seq, pos], fn: 'add' });
  for (let l = 0; l < o.layers; l++) x = block(b, `blocks.${l}`, x, T, sizes, null);
  x = b.node({ op: 'layernorm', id: 'norm', input: x, shape: [D], weight: 'norm.weight', bias: 'norm.bias', eps: 1e-5 });
  const first = b.node({ op: 'slice', id: 'cls', input: x, axis: 0, start: 0, end: 1 });
  const feat = b.node({ op: 'reshape', id: 'cls.flat', input: first, shape: [D] });
  b.output(b.linear('head', feat, D, o.classes));
  const config: VitConfig = { arch: 'vit', imageShape: [C, Hi, Wi], patch: P, classes: o.classes, width: D, layers: o.layers, heads: o.heads, ...(o.mlpWidth ? { mlpWidth: o.mlpWidth } : {}) };
  return graphModel(`vit-${o.layers}x${D}-h${o.heads}-p${P}`, config, b.build());
}

/** `rebasin train --model gpt --data text`: a character model over the data's context and vocabulary. */
const GPT_PRESET: ModelPreset<GptConfig> = {
  name: 'gpt', title: 'GPT-2-style decoder',
  width: { meaning: 'residual width (4 heads)', default: 64, integer: true },
  imagesOnly: false,
  textOnly: true,
  lr: 3e-3,
  epochs: 10,
  batchSize: 64,
  config: (i) => ({ arch: 'gpt', vocab: i.outputs, context: i.sampleShape[0], width: i.width, layers: i.hiddenLayers, heads: 4 }),
};

/** `rebasin train --model vit`: 7×7 patches (4×4 on images under 28 pixels), 4 heads. */
const VIT_PRESET: ModelPreset<VitConfig> = {
  name: 'vit', title: 'ViT-style encoder',
  width: { meaning: 'residual width (4 heads)', default: 64, integer: true },
  imagesOnly: true,
  lr: 1e-3,
  epochs: 10,
  batchSize: 128,
  config: (i) => ({
    arch: 'vit', imageShape: i.sampleShape as [number, number, number], patch: i.sampleShape[1] % 7 === 0 ? 7 : 4,
    classes: i.outputs, width: i.width, layers: i.hiddenLayers, heads: 4,
  }),
};

export const TRANSFORMER_MODELS = {
  archs: [defineArch('gpt', gpt), defineArch('vit', vit)],
  presets: [GPT_PRESET, VIT_PRESET],
} satisfies ModelFamily;
