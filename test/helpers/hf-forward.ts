/**
 * Forward passes of Hugging Face layouts, written with plain loops over the checkpoint's own
 * tensors (by their HF names and storage layouts), for the group-action tests of the presets
 * (io/hf-presets.ts) and the PyTorch oracle test. Float64 throughout. Activations: GPT-2's
 * gelu_new (tanh), BERT/ViT's exact GELU (erf), LLaMA's SiLU.
 */
export type Tensors = ReadonlyMap<string, { shape: readonly number[]; data: ArrayLike<number> }>;
type Mat = Float64Array[]; // rows

function get(s: Tensors, name: string) {
  const t = s.get(name);
  if (!t) throw new Error(`forward: missing tensor ${name}`);
  return t;
}

/** x [T, in] → [T, out]; w is [out, in] (Linear) or [in, out] (GPT-2 Conv1D). */
function linear(x: Mat, s: Tensors, name: string, conv1d = false, bias = true): Mat {
  const w = get(s, `${name}.weight`);
  const [a, b] = w.shape;
  const [nIn, nOut] = conv1d ? [a, b] : [b, a];
  const bv = bias && s.has(`${name}.bias`) ? get(s, `${name}.bias`).data : null;
  return x.map((row) => {
    const out = new Float64Array(nOut);
    for (let o = 0; o < nOut; o++) {
      let acc = bv ? bv[o] : 0;
      for (let i = 0; i < nIn; i++) acc += row[i] * (conv1d ? w.data[i * nOut + o] : w.data[o * nIn + i]);
      out[o] = acc;
    }
    return out;
  });
}

function layerNorm(x: Mat, s: Tensors, name: string, eps: number): Mat {
  const g = get(s, `${name}.weight`).data;
  const b = get(s, `${name}.bias`).data;
  return x.map((row) => {
    const n = row.length;
    const mean = row.reduce((t, v) => t + v, 0) / n;
    const v = row.reduce((t, u) => t + (u - mean) ** 2, 0) / n;
    return row.map((u, i) => ((u - mean) / Math.sqrt(v + eps)) * g[i] + b[i]);
  });
}

function rmsNorm(x: Mat, s: Tensors, name: string, eps: number): Mat {
  const g = get(s, `${name}.weight`).data;
  return x.map((row) => {
    const ms = row.reduce((t, u) => t + u * u, 0) / row.length;
    return row.map((u, i) => (u / Math.sqrt(ms + eps)) * g[i]);
  });
}

const add = (x: Mat, y: Mat): Mat => x.map((r, t) => r.map((v, i) => v + y[t][i]));
const map = (x: Mat, f: (v: number) => number): Mat => x.map((r) => r.map(f));
const geluTanh = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
function erf(x: number): number {
  // Numerical Recipes' erfc approximation (relative error < 1.2e-7).
  const t = 1 / (1 + 0.5 * Math.abs(x));
  const y = 1 - t * Math.exp(-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? y : -y;
}
const geluErf = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
const silu = (v: number) => v / (1 + Math.exp(-v));

function embed(s: Tensors, name: string, ids: readonly number[]): Mat {
  const w = get(s, name);
  const d = w.shape[1];
  return ids.map((id) => Float64Array.from({ length: d }, (_, i) => w.data[id * d + i]));
}

export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
  causal: boolean;
  rope?: boolean;
  alibi?: boolean;
}

/** HF rotate_half rotary embedding of one head vector at position t (base 10000). */
function rope(v: Float64Array, off: number, dh: number, t: number): void {
  const half = dh / 2;
  for (let i = 0; i < half; i++) {
    const theta = t * 10000 ** (-(2 * i) / dh);
    const a = v[off + i];
    const b = v[off + i + half];
    v[off + i] = a * Math.cos(theta) - b * Math.sin(theta);
    v[off + i + half] = b * Math.cos(theta) + a * Math.sin(theta);
  }
}

/** Multi-head (grouped-query) attention: q [T, H·dh], k/v [T, Hkv·dh] → [T, H·dh]. */
export function attention(q: Mat, k: Mat, v: Mat, a: AttentionShape): Mat {
  const T = q.length;
  const { heads: H, kvHeads: Hk, headDim: dh } = a;
  const g = H / Hk;
  if (a.rope) {
    q = q.map((r, t) => { const c = Float64Array.from(r); for (let h = 0; h < H; h++) rope(c, h * dh, dh, t); return c; });
    k = k.map((r, t) => { const c = Float64Array.from(r); for (let h = 0; h < Hk; h++) rope(c, h * dh, dh, t); return c; });
  }
  const out: Mat = Array.from({ length: T }, () => new Float64Array(H * dh));
  for (let h = 0; h < H; h++) {
    const kh = Math.floor(h / g);
    const slope = 2 ** (-8 * (h + 1) / H);
    for (let t = 0; t < T; t++) {
      const scores: number[] = [];
      for (let u = 0; u < T; u++) {
        if (a.causal && u > t) { scores.push(-Infinity); continue; }
        let sc = 0;
        for (let j = 0; j < dh; j++) sc += q[t][h * dh + j] * k[u][kh * dh + j];
        sc /= Math.sqrt(dh);
        if (a.alibi) sc -= slope * Math.abs(t - u);
        scores.push(sc);
      }
      const m = Math.max(...scores);
      const e = scores.map((x) => Math.exp(x - m));
      const z = e.reduce((x, y) => x + y, 0);
      for (let u = 0; u < T; u++) for (let j = 0; j < dh; j++) out[t][h * dh + j] += (e[u] / z) * v[u][kh * dh + j];
    }
  }
  return out;
}

const cols = (x: Mat, from: number, n: number): Mat => x.map((r) => r.slice(from, from + n));

export interface Gpt2Shape { layers: number; heads: number; alibi?: boolean; prefix?: string }

/** GPT-2 (HF GPT2LMHeadModel): logits [T, V], tied head unless lm_head.weight is present. */
export function gpt2Forward(s: Tensors, c: Gpt2Shape, ids: readonly number[]): Mat {
  const p = c.prefix ?? 'transformer.';
  const d = get(s, `${p}wte.weight`).shape[1];
  const pos = embed(s, `${p}wpe.weight`, ids.map((_, t) => t));
  let x = add(embed(s, `${p}wte.weight`, ids), pos);
  for (let l = 0; l < c.layers; l++) {
    const L = `${p}h.${l}.`;
    const qkv = linear(layerNorm(x, s, `${L}ln_1`, 1e-5), s, `${L}attn.c_attn`, true);
    const a = attention(cols(qkv, 0, d), cols(qkv, d, d), cols(qkv, 2 * d, d), { heads: c.heads, kvHeads: c.heads, headDim: d / c.heads, causal: true, alibi: c.alibi });
    x = add(x, linear(a, s, `${L}attn.c_proj`, true));
    const h = map(linear(layerNorm(x, s, `${L}ln_2`, 1e-5), s, `${L}mlp.c_fc`, true), geluTanh);
    x = add(x, linear(h, s, `${L}mlp.c_proj`, true));
  }
  x = layerNorm(x, s, `${p}ln_f`, 1e-5);
  return linear(x, s, s.has('lm_head.weight') ? 'lm_head' : `${p}wte`, false, false);
}

export interface EncoderShape { layers: number; heads: number }

/** BERT (HF BertModel under "bert."): the pooled output (the sequence output is in the residual basis, which a permutation moves). */
export function bertForward(s: Tensors, c: EncoderShape, ids: readonly number[], types: readonly number[]): Mat {
  const E = 'bert.embeddings.';
  const d = get(s, `${E}word_embeddings.weight`).shape[1];
  let x = add(add(embed(s, `${E}word_embeddings.weight`, ids), embed(s, `${E}position_embeddings.weight`, ids.map((_, t) => t))), embed(s, `${E}token_type_embeddings.weight`, types));
  x = layerNorm(x, s, `${E}LayerNorm`, 1e-12);
  for (let l = 0; l < c.layers; l++) {
    const L = `bert.encoder.layer.${l}.`;
    const a = attention(linear(x, s, `${L}attention.self.query`), linear(x, s, `${L}attention.self.key`), linear(x, s, `${L}attention.self.value`), { heads: c.heads, kvHeads: c.heads, headDim: d / c.heads, causal: false });
    x = layerNorm(add(x, linear(a, s, `${L}attention.output.dense`)), s, `${L}attention.output.LayerNorm`, 1e-12);
    const h = map(linear(x, s, `${L}intermediate.dense`), geluErf);
    x = layerNorm(add(x, linear(h, s, `${L}output.dense`)), s, `${L}output.LayerNorm`, 1e-12);
  }
  return map(linear([x[0]], s, 'bert.pooler.dense'), Math.tanh);
}

/** ViT (HF ViTForImageClassification): logits of one image [C, S, S] with patch size `patch`. */
export function vitForward(s: Tensors, c: EncoderShape & { patch: number }, image: Float64Array, channels: number, size: number): Mat {
  const P = 'vit.';
  const w = get(s, `${P}embeddings.patch_embeddings.projection.weight`);
  const d = w.shape[0];
  const bias = get(s, `${P}embeddings.patch_embeddings.projection.bias`).data;
  const n = size / c.patch;
  const tokens: Mat = [Float64Array.from(get(s, `${P}embeddings.cls_token`).data)];
  for (let py = 0; py < n; py++) {
    for (let px = 0; px < n; px++) {
      const row = new Float64Array(d);
      for (let o = 0; o < d; o++) {
        let acc = bias[o];
        for (let ch = 0; ch < channels; ch++) for (let i = 0; i < c.patch; i++) for (let j = 0; j < c.patch; j++) {
          acc += w.data[((o * channels + ch) * c.patch + i) * c.patch + j] * image[(ch * size + py * c.patch + i) * size + px * c.patch + j];
        }
        row[o] = acc;
      }
      tokens.push(row);
    }
  }
  const pe = get(s, `${P}embeddings.position_embeddings`).data;
  let x: Mat = tokens.map((r, t) => r.map((v, i) => v + pe[t * d + i]));
  for (let l = 0; l < c.layers; l++) {
    const L = `${P}encoder.layer.${l}.`;
    const h0 = layerNorm(x, s, `${L}layernorm_before`, 1e-12);
    const A = `${L}attention.attention.`;
    const a = attention(linear(h0, s, `${A}query`), linear(h0, s, `${A}key`), linear(h0, s, `${A}value`), { heads: c.heads, kvHeads: c.heads, headDim: d / c.heads, causal: false });
    x = add(x, linear(a, s, `${L}attention.output.dense`));
    const h = map(linear(layerNorm(x, s, `${L}layernorm_after`, 1e-12), s, `${L}intermediate.dense`), geluErf);
    x = add(x, linear(h, s, `${L}output.dense`));
  }
  x = layerNorm(x, s, `${P}layernorm`, 1e-12);
  return linear([x[0]], s, 'classifier');
}

export interface LlamaShape { layers: number; heads: number; kvHeads: number; headDim: number; rope: boolean }

/** LLaMA (HF LlamaForCausalLM): logits [T, V]. */
export function llamaForward(s: Tensors, c: LlamaShape, ids: readonly number[]): Mat {
  let x = embed(s, 'model.embed_tokens.weight', ids);
  for (let l = 0; l < c.layers; l++) {
    const L = `model.layers.${l}.`;
    const h = rmsNorm(x, s, `${L}input_layernorm`, 1e-6);
    const A = `${L}self_attn.`;
    const a = attention(linear(h, s, `${A}q_proj`), linear(h, s, `${A}k_proj`), linear(h, s, `${A}v_proj`), { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, causal: true, rope: c.rope });
    x = add(x, linear(a, s, `${A}o_proj`));
    const m = rmsNorm(x, s, `${L}post_attention_layernorm`, 1e-6);
    const gate = map(linear(m, s, `${L}mlp.gate_proj`), silu);
    const up = linear(m, s, `${L}mlp.up_proj`);
    x = add(x, linear(gate.map((r, t) => r.map((v, i) => v * up[t][i])), s, `${L}mlp.down_proj`));
  }
  x = rmsNorm(x, s, 'model.norm', 1e-6);
  return linear(x, s, 'lm_head');
}

export function maxAbsDiff(a: Mat, b: Mat): number {
  let m = 0;
  a.forEach((r, t) => r.forEach((v, i) => { m = Math.max(m, Math.abs(v - b[t][i])); }));
  return m;
}
