/**
 * Permutation specs for Hugging Face checkpoints, from the tensor names plus the model's
 * `config.json`: GPT-2 (`h.N.attn.c_attn`, Conv1D [in, out] layout), BERT, ViT and the LLaMA
 * family (LLaMA, Mistral, Qwen2: `model.layers.N.self_attn.q_proj`, GQA, rotary).
 *
 * The symmetries (issue 14), and nothing more:
 * - one residual permutation `P_res` shared by the embeddings (token, position, token type, patch
 *   projection, class token), every LayerNorm/RMSNorm, the input side of every Q/K/V/MLP-in
 *   projection, the output side of every attention-out and MLP-out projection, the final norm and
 *   the output head (a tied head shares it with the token embedding by construction);
 * - per layer N an MLP hidden permutation `P_mlp.N` (LLaMA: gate and up share it);
 * - per layer the heads `P_heads.N` as blocks, with one inner permutation per head shared by its Q
 *   and K columns (`P_qk.N.h`) and one shared by its V columns and the matching O rows (`P_vo.N.h`).
 *   GQA: the key/value groups move (query heads move with their group; `P_heads.N` has one unit per
 *   kv head), inner permutations are per kv group, shared by its query heads and their O rows (a
 *   block entry with `repeat` g on Q and O). RoPE: no permutation inside Q/K heads (only heads,
 *   and V/O inside). ALiBi: heads stay in place (their slopes are per head), only inner permutations.
 * - buffers (GPT-2's causal mask `attn.bias`, BERT's `position_ids`, rotary `inv_freq`) are never
 *   permuted.
 * `HeadMode` asks for less (or refuses what is not a symmetry): `auto` is the largest group the
 * config allows; `full` heads + Q/K and V/O inner; `vo` heads + V/O inner; `fixed` heads in place.
 * With heads fixed, the repetition over a group's query heads is a segments entry.
 */
import { InputError } from '../errors.js';
import { blockEntry, concatEntry, entryPermIds, validateSpec, type AxisPerm, type PermutationSpec, type Segment } from '../permutation/spec.js';

export const HEAD_MODES = ['auto', 'full', 'vo', 'fixed'] as const;
export type HeadMode = (typeof HEAD_MODES)[number];

export type PositionKind = 'learned' | 'rotary' | 'alibi';

/** What a preset takes from config.json (after defaults and checks). */
export interface HfModelConfig {
  /** Query heads, key/value heads, residual width and head dimension. */
  heads: number;
  kvHeads: number;
  width: number;
  headDim: number;
  position: PositionKind;
  /** tie_word_embeddings (the spec is the same either way: the head and the embedding both take P_res). */
  tied: boolean;
}

type Shapes = ReadonlyMap<string, { shape: readonly number[] }>;

/** Which parts of the attention symmetry a spec uses, after the config's constraints. */
interface HeadPlan { move: boolean; qkInner: boolean; voInner: boolean }

/** What a rule sees: the layer, the tensor shape, and registration of permutations. */
interface Ctx {
  shape: readonly number[];
  names: ReadonlySet<string>;
  /** The residual permutation id. */
  R: string;
  /** Registers `id` with `size` (checked against earlier uses) and returns it. */
  perm(id: string, size: number): string;
  /** Entries (lists of parts, see concatEntry) of the Q, K, V out axes and the O in axis of layer `layer`. */
  attention(layer: string): { q: Segment[]; k: Segment[]; v: Segment[]; o: Segment[] };
}

interface Rule {
  pattern: RegExp;
  axes(m: RegExpMatchArray, c: Ctx): AxisPerm[];
}

interface Architecture {
  /** config.json `model_type` values this layout belongs to. */
  modelTypes: readonly string[];
  /** A tensor name only this layout has (detection without config.json), and how it reads. */
  signature: RegExp;
  example: string;
  /** The projection weights stored [in, out] (GPT-2's Conv1D); every other 2-D weight is [out, in]. */
  conv1d?: RegExp;
  config(c: Record<string, unknown>): HfModelConfig;
  rules: Rule[];
}

const nulls = (_m: RegExpMatchArray, c: Ctx): AxisPerm[] => c.shape.map(() => null);
const res = (_m: RegExpMatchArray, c: Ctx): AxisPerm[] => [c.R];
const mlp = (layer: string, c: Ctx, n: number) => c.perm(`P_mlp.${layer}`, n);
const one = (parts: Segment[]) => concatEntry(parts);

function int(c: Record<string, unknown>, field: string, arch: string, fallback?: number): number {
  const v = c[field] ?? fallback;
  if (!(Number.isInteger(v) && (v as number) > 0)) throw new InputError(`config.json: "${field}" is ${v === undefined ? 'missing' : `${JSON.stringify(v)}, not a positive integer`} (the ${arch} preset needs it)`);
  return v as number;
}

/** Heads, widths and divisibility, named by their config.json fields. */
function headConfig(c: Record<string, unknown>, arch: string, f: { heads: string; width: string; kvHeads?: string; headDim?: string }, position: PositionKind, tiedDefault: boolean): HfModelConfig {
  const heads = int(c, f.heads, arch);
  const width = int(c, f.width, arch);
  const kvHeads = f.kvHeads ? int(c, f.kvHeads, arch, heads) : heads;
  const given = f.headDim !== undefined && c[f.headDim] !== undefined && c[f.headDim] !== null;
  if (!given && width % heads !== 0) throw new InputError(`config.json: "${f.heads}" ${heads} does not divide the width "${f.width}" ${width}`);
  const headDim = given ? int(c, f.headDim!, arch) : width / heads;
  if (heads % kvHeads !== 0) throw new InputError(`config.json: "${f.kvHeads}" ${kvHeads} does not divide "${f.heads}" ${heads} (each key/value head serves a whole group of query heads)`);
  return { heads, kvHeads, width, headDim, position, tied: c.tie_word_embeddings === undefined ? tiedDefault : c.tie_word_embeddings === true };
}

/** ALiBi when the config says so (BLOOM/MPT-style flags), else `otherwise`. */
function positionOf(c: Record<string, unknown>, otherwise: PositionKind): PositionKind {
  const attn = c.attn_config && typeof c.attn_config === 'object' ? (c.attn_config as Record<string, unknown>) : {};
  if (c.alibi === true || attn.alibi === true || c.position_embedding_type === 'alibi') return 'alibi';
  if (otherwise === 'learned' && (c.rope_theta !== undefined || c.rotary_dim !== undefined || c.position_embedding_type === 'rotary')) return 'rotary';
  return otherwise;
}

/** BERT/ViT-style encoder layer rules under `layer` (the regex source of "…layer.N."), attention module `att`. */
function encoderRules(layer: string, att: string, norms: string): Rule[] {
  const L = (rest: string) => new RegExp(`${layer}(\\d+)\\.${rest}$`);
  return [
    { pattern: L(`${att}\\.(query|key|value)\\.weight`), axes: (m, c) => { const h = c.attention(m[1]); return [one(m[2] === 'value' ? h.v : m[2] === 'key' ? h.k : h.q), c.R]; } },
    { pattern: L(`${att}\\.(query|key|value)\\.bias`), axes: (m, c) => { const h = c.attention(m[1]); return [one(m[2] === 'value' ? h.v : m[2] === 'key' ? h.k : h.q)]; } },
    { pattern: L('attention\\.output\\.dense\\.weight'), axes: (m, c) => [c.R, one(c.attention(m[1]).o)] },
    { pattern: L('attention\\.output\\.dense\\.bias'), axes: res },
    { pattern: L('intermediate\\.dense\\.weight'), axes: (m, c) => [mlp(m[1], c, c.shape[0]), c.R] },
    { pattern: L('intermediate\\.dense\\.bias'), axes: (m, c) => [mlp(m[1], c, c.shape[0])] },
    { pattern: L('output\\.dense\\.weight'), axes: (m, c) => [c.R, mlp(m[1], c, c.shape[1])] },
    { pattern: L('output\\.dense\\.bias'), axes: res },
    { pattern: L(`(${norms})\\.(weight|bias)`), axes: res },
  ];
}

/** Every Hugging Face layout rebasin has a preset for, by name (one table; `spec infer` and `align --lazy` read it). */
export const HF_ARCHITECTURES = {
  gpt2: {
    modelTypes: ['gpt2'],
    signature: /(^|\.)h\.\d+\.attn\.c_attn\.weight$/,
    example: 'h.N.attn.c_attn.weight',
    conv1d: /\.(c_attn|c_proj|c_fc)\.weight$/,
    config: (c) => headConfig(c, 'gpt2', { heads: 'n_head', width: 'n_embd' }, positionOf(c, 'learned'), true),
    rules: [
      { pattern: /^(transformer\.)?(wte|wpe)\.weight$/, axes: (_m, c) => [null, c.R] },
      { pattern: /^(transformer\.)?(ln_f|h\.\d+\.ln_[12])\.(weight|bias)$/, axes: res },
      { pattern: /^(?:transformer\.)?h\.(\d+)\.attn\.c_attn\.weight$/, axes: (m, c) => { const h = c.attention(m[1]); return [c.R, one([...h.q, ...h.k, ...h.v])]; } },
      { pattern: /^(?:transformer\.)?h\.(\d+)\.attn\.c_attn\.bias$/, axes: (m, c) => { const h = c.attention(m[1]); return [one([...h.q, ...h.k, ...h.v])]; } },
      { pattern: /^(?:transformer\.)?h\.(\d+)\.attn\.c_proj\.weight$/, axes: (m, c) => [one(c.attention(m[1]).o), c.R] },
      { pattern: /^(?:transformer\.)?h\.(\d+)\.attn\.c_proj\.bias$/, axes: res },
      { pattern: /^(?:transformer\.)?h\.(\d+)\.attn\.(bias|masked_bias)$/, axes: nulls },
      { pattern: /^(?:transformer\.)?h\.(\d+)\.mlp\.c_fc\.weight$/, axes: (m, c) => [c.R, mlp(m[1], c, c.shape[1])] },
      { pattern: /^(?:transformer\.)?h\.(\d+)\.mlp\.c_fc\.bias$/, axes: (m, c) => [mlp(m[1], c, c.shape[0])] },
      { pattern: /^(?:transformer\.)?h\.(\d+)\.mlp\.c_proj\.weight$/, axes: (m, c) => [mlp(m[1], c, c.shape[0]), c.R] },
      { pattern: /^(?:transformer\.)?h\.(\d+)\.mlp\.c_proj\.bias$/, axes: res },
      { pattern: /^lm_head\.weight$/, axes: (_m, c) => [null, c.R] },
    ],
  },
  bert: {
    modelTypes: ['bert', 'roberta'],
    signature: /(^|\.)encoder\.layer\.\d+\.attention\.self\.query\.weight$/,
    example: 'encoder.layer.N.attention.self.query.weight',
    config: (c) => {
      const p = c.position_embedding_type;
      if (p !== undefined && p !== 'absolute' && p !== 'alibi') throw new InputError(`config.json: "position_embedding_type" ${JSON.stringify(p)} is not supported (relative position embeddings act inside the heads); only "absolute"`);
      return headConfig(c, 'bert', { heads: 'num_attention_heads', width: 'hidden_size' }, positionOf(c, 'learned'), true);
    },
    rules: [
      { pattern: /^((bert|roberta)\.)?embeddings\.(word|position|token_type)_embeddings\.weight$/, axes: (_m, c) => [null, c.R] },
      { pattern: /^((bert|roberta)\.)?embeddings\.LayerNorm\.(weight|bias)$/, axes: res },
      { pattern: /^((bert|roberta)\.)?embeddings\.(position_ids|token_type_ids)$/, axes: nulls },
      ...encoderRules('^(?:(?:bert|roberta)\\.)?encoder\\.layer\\.', 'attention\\.self', 'attention\\.output\\.LayerNorm|output\\.LayerNorm'),
      { pattern: /^((bert|roberta)\.)?pooler\.dense\.weight$/, axes: (_m, c) => [null, c.R] },
      { pattern: /^((bert|roberta)\.)?pooler\.dense\.bias$/, axes: nulls },
      // A sequence classifier reads the pooler (unpermuted); a token classifier (no pooler) the sequence.
      { pattern: /^classifier\.weight$/, axes: (_m, c) => [null, [...c.names].some((n) => /pooler\.dense\.weight$/.test(n)) ? null : c.R] },
      { pattern: /^classifier\.bias$/, axes: nulls },
      // The MLM head: transform → LayerNorm → decoder tied to the word embeddings, so all in P_res.
      { pattern: /^cls\.predictions\.transform\.dense\.weight$/, axes: (_m, c) => [c.R, c.R] },
      { pattern: /^cls\.predictions\.transform\.(dense|LayerNorm)\.(weight|bias)$/, axes: res },
      { pattern: /^cls\.predictions\.decoder\.weight$/, axes: (_m, c) => [null, c.R] },
      { pattern: /^cls\.predictions\.(decoder\.)?bias$/, axes: nulls },
      { pattern: /^cls\.seq_relationship\.(weight|bias)$/, axes: nulls },
    ],
  },
  vit: {
    modelTypes: ['vit'],
    signature: /(^|\.)encoder\.layer\.\d+\.attention\.attention\.query\.weight$/,
    example: 'encoder.layer.N.attention.attention.query.weight',
    config: (c) => headConfig(c, 'vit', { heads: 'num_attention_heads', width: 'hidden_size' }, positionOf(c, 'learned'), false),
    rules: [
      { pattern: /^(vit\.)?embeddings\.(cls_token|position_embeddings|mask_token)$/, axes: (_m, c) => [...c.shape.slice(0, -1).map(() => null), c.R] },
      { pattern: /^(vit\.)?embeddings\.patch_embeddings\.projection\.weight$/, axes: (_m, c) => [c.R, ...c.shape.slice(1).map(() => null)] },
      { pattern: /^(vit\.)?embeddings\.patch_embeddings\.projection\.bias$/, axes: res },
      ...encoderRules('^(?:vit\\.)?encoder\\.layer\\.', 'attention\\.attention', 'layernorm_before|layernorm_after'),
      { pattern: /^(vit\.)?layernorm\.(weight|bias)$/, axes: res },
      { pattern: /^(vit\.)?pooler\.dense\.weight$/, axes: (_m, c) => [null, c.R] },
      { pattern: /^(vit\.)?pooler\.dense\.bias$/, axes: nulls },
      // ViTForImageClassification reads the class token of the sequence output.
      { pattern: /^classifier\.weight$/, axes: (_m, c) => [null, c.R] },
      { pattern: /^classifier\.bias$/, axes: nulls },
    ],
  },
  llama: {
    modelTypes: ['llama', 'mistral', 'qwen2'],
    signature: /(^|\.)layers\.\d+\.self_attn\.q_proj\.weight$/,
    example: 'layers.N.self_attn.q_proj.weight',
    config: (c) => headConfig(c, 'llama', { heads: 'num_attention_heads', width: 'hidden_size', kvHeads: 'num_key_value_heads', headDim: 'head_dim' }, positionOf(c, 'rotary'), false),
    rules: [
      { pattern: /^(model\.)?embed_tokens\.weight$/, axes: (_m, c) => [null, c.R] },
      { pattern: /^(model\.)?(norm|layers\.\d+\.(input_layernorm|post_attention_layernorm))\.weight$/, axes: res },
      { pattern: /^(?:model\.)?layers\.(\d+)\.self_attn\.([qkv])_proj\.weight$/, axes: (m, c) => [one(c.attention(m[1])[m[2] as 'q' | 'k' | 'v']), c.R] },
      { pattern: /^(?:model\.)?layers\.(\d+)\.self_attn\.([qkv])_proj\.bias$/, axes: (m, c) => [one(c.attention(m[1])[m[2] as 'q' | 'k' | 'v'])] },
      { pattern: /^(?:model\.)?layers\.(\d+)\.self_attn\.o_proj\.weight$/, axes: (m, c) => [c.R, one(c.attention(m[1]).o)] },
      { pattern: /^(?:model\.)?layers\.(\d+)\.self_attn\.o_proj\.bias$/, axes: res },
      { pattern: /^(?:model\.)?layers\.(\d+)\.self_attn\.rotary_emb\.inv_freq$/, axes: nulls },
      { pattern: /^(?:model\.)?layers\.(\d+)\.mlp\.(gate|up)_proj\.weight$/, axes: (m, c) => [mlp(m[1], c, c.shape[0]), c.R] },
      { pattern: /^(?:model\.)?layers\.(\d+)\.mlp\.down_proj\.weight$/, axes: (m, c) => [c.R, mlp(m[1], c, c.shape[1])] },
      { pattern: /^lm_head\.weight$/, axes: (_m, c) => [null, c.R] },
    ],
  },
} satisfies Record<string, Architecture>;

export type HfArchitecture = keyof typeof HF_ARCHITECTURES;
export const HF_ARCHITECTURE_NAMES = Object.keys(HF_ARCHITECTURES) as HfArchitecture[];

const archOf = (name: HfArchitecture): Architecture => HF_ARCHITECTURES[name];

/**
 * The layout of a checkpoint: config.json's model_type when it names one (the names must then
 * have its signature), else the one layout whose signature a tensor name has.
 */
export function detectArchitecture(names: readonly string[], config?: Record<string, unknown>): HfArchitecture {
  const mt = config?.model_type;
  const known = HF_ARCHITECTURE_NAMES.map((a) => `${a} (${archOf(a).example})`).join(', ');
  if (typeof mt === 'string') {
    const arch = HF_ARCHITECTURE_NAMES.find((a) => archOf(a).modelTypes.includes(mt));
    if (arch) {
      if (!names.some((n) => archOf(arch).signature.test(n))) throw new InputError(`config.json: "model_type" is "${mt}" but no tensor name has its layout (${archOf(arch).example})`);
      return arch;
    }
  }
  const hits = HF_ARCHITECTURE_NAMES.filter((a) => names.some((n) => archOf(a).signature.test(n)));
  if (hits.length === 1) return hits[0];
  if (hits.length > 1) throw new InputError(`the tensor names match several presets (${hits.join(', ')}); give config.json with its "model_type"`);
  throw new InputError(`no Hugging Face preset matches these tensor names (first: "${names[0] ?? ''}"${typeof mt === 'string' ? `, model_type "${mt}"` : ''}); known layouts: ${known}`);
}

/** The parts of the attention symmetry the config allows for the requested mode (InputError for a request that is not a symmetry). */
function headPlan(cfg: HfModelConfig, mode: HeadMode): HeadPlan {
  const rotary = cfg.position === 'rotary';
  const alibi = cfg.position === 'alibi';
  if (mode === 'full' && rotary) throw new InputError('config.json: rotary position embeddings fix the dimensions inside each query/key head, so --heads full (permuting inside Q/K heads) is not a symmetry; use --heads vo or auto');
  if ((mode === 'full' || mode === 'vo') && alibi) throw new InputError(`config.json: ALiBi gives each head its own slope, so --heads ${mode} (moving heads) is not a symmetry; use --heads fixed or auto`);
  switch (mode) {
    case 'full': return { move: true, qkInner: true, voInner: true };
    case 'vo': return { move: true, qkInner: false, voInner: true };
    case 'fixed': return { move: false, qkInner: !rotary, voInner: true };
    case 'auto': return { move: !alibi, qkInner: !rotary, voInner: true };
  }
}

export interface HfPresetOptions {
  heads?: HeadMode;
  /** The architecture, when known (else detected from config.json's model_type or the names). */
  architecture?: HfArchitecture;
}

export interface HfPreset {
  architecture: HfArchitecture;
  config: HfModelConfig;
  spec: PermutationSpec;
  /** The head symmetry used, and why parts of it were left out. */
  heads: HeadPlan & { mode: HeadMode };
  notes: string[];
}

/**
 * The permutation spec of a Hugging Face checkpoint from its tensor names and shapes and its
 * config.json (parsed). Every tensor must match a rule of the layout (InputError naming the first
 * that does not); the spec is checked against the shapes (InputError naming the tensor).
 */
export function hfPreset(shapes: Shapes, config: Record<string, unknown> | undefined, opts: HfPresetOptions = {}): HfPreset {
  const names = [...shapes.keys()];
  const architecture = opts.architecture ?? detectArchitecture(names, config);
  const arch = archOf(architecture);
  if (!config) throw new InputError(`the ${architecture} preset needs the model's config.json (heads, width): pass --config or put it next to the checkpoint`);
  const cfg = arch.config(config);
  const mode = opts.heads ?? 'auto';
  const plan = headPlan(cfg, mode);
  const notes: string[] = [];
  const g = cfg.heads / cfg.kvHeads;
  if (g > 1) notes.push(`grouped-query attention (${cfg.heads} query heads, ${cfg.kvHeads} key/value heads): ${plan.move ? 'the key/value groups move with their query heads; ' : ''}inner permutations are per key/value group, shared by its ${g} query heads`);
  if (cfg.position === 'rotary') notes.push('rotary position embeddings: no permutation inside query/key heads');
  if (cfg.position === 'alibi') notes.push('ALiBi: heads stay in place');
  const perms: Record<string, number> = {};
  const axes: Record<string, AxisPerm[]> = {};
  let current = '';
  const perm = (id: string, size: number) => {
    if (perms[id] !== undefined && perms[id] !== size) throw new InputError(`tensor "${current}": its axis of ${size} units does not match the ${perms[id]} of "${id}" elsewhere in the checkpoint`);
    perms[id] = size;
    return id;
  };
  const R = 'P_res';
  const attention = (layer: string) => {
    const { heads, kvHeads, headDim: dh } = cfg;
    const ids = (kind: string) => Array.from({ length: kvHeads }, (_, j) => perm(`P_${kind}.${layer}.${j}`, dh));
    if (plan.move) {
      const H = perm(`P_heads.${layer}`, kvHeads);
      const part = (inner: boolean, kind: string, repeat: number): Segment => (inner ? blockEntry(H, ids(kind), repeat) : { perm: H, inner: repeat * dh });
      return { q: [part(plan.qkInner, 'qk', g)], k: [part(plan.qkInner, 'qk', 1)], v: [part(plan.voInner, 'vo', 1)], o: [part(plan.voInner, 'vo', g)] };
    }
    const fixed = (inner: boolean, kind: string, count: number, group: number): Segment[] => {
      if (!inner) return [{ size: count * dh }];
      const list = ids(kind);
      return Array.from({ length: count }, (_, h) => list[Math.floor(h / group)]);
    };
    return { q: fixed(plan.qkInner, 'qk', heads, g), k: fixed(plan.qkInner, 'qk', kvHeads, 1), v: fixed(plan.voInner, 'vo', kvHeads, 1), o: fixed(plan.voInner, 'vo', heads, g) };
  };
  const nameSet = new Set(names);
  perm(R, cfg.width);
  for (const name of names) {
    current = name;
    const rule = arch.rules.find((r) => r.pattern.test(name));
    if (!rule) throw new InputError(`tensor "${name}" matches no rule of the ${architecture} preset (a layer or head rebasin does not know; write a spec for it, \`rebasin spec check\` tests it)`);
    const c: Ctx = { shape: shapes.get(name)!.shape, names: nameSet, R, perm, attention };
    axes[name] = rule.axes(name.match(rule.pattern)!, c);
  }
  const spec = { perms, axes };
  const problems = validateSpec(spec, shapes, { strict: true });
  if (problems.length) throw new InputError(`the ${architecture} preset does not fit the checkpoint with config.json's heads ${cfg.heads}${cfg.kvHeads !== cfg.heads ? `/${cfg.kvHeads}` : ''} and width ${cfg.width}: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}`);
  return { architecture, config: cfg, spec, heads: { ...plan, mode }, notes };
}

/** Whether the 2-D weight `name` is stored [in, out] (GPT-2's Conv1D) rather than [out, in]. */
export function isConv1DWeight(name: string): boolean {
  return HF_ARCHITECTURE_NAMES.some((a) => archOf(a).conv1d?.test(name) ?? false);
}

/**
 * The spec for a file whose tensors are the spec's tensors under other names (a sibling of the
 * checkpoint): EMA weights and optimizer moments (the same names, possibly behind a prefix such as
 * `ema.` or `base_model.model.`) and LoRA adapters (`….lora_A[.adapter].weight` [r, in] permuted on
 * its input axis like the base weight, `….lora_B[.adapter].weight` [out, r] on its output axis).
 * InputError naming the first tensor with no counterpart.
 */
export function specForSibling(spec: PermutationSpec, shapes: Shapes): PermutationSpec {
  const base = (name: string): string | undefined => {
    if (Object.prototype.hasOwnProperty.call(spec.axes, name)) return name;
    for (let i = name.indexOf('.'); i >= 0; i = name.indexOf('.', i + 1)) {
      const rest = name.slice(i + 1);
      if (Object.prototype.hasOwnProperty.call(spec.axes, rest)) return rest;
    }
    return undefined;
  };
  const axes: Record<string, AxisPerm[]> = {};
  for (const name of shapes.keys()) {
    const lora = /^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$/.exec(name);
    if (lora) {
      const b = base(`${lora[1]}.weight`);
      if (!b || spec.axes[b].length !== 2) throw new InputError(`tensor "${name}": no 2-D base weight "${lora[1]}.weight" in the spec for this LoRA factor`);
      const [inAxis, outAxis] = isConv1DWeight(b) ? [0, 1] : [1, 0];
      axes[name] = lora[2] === 'A' ? [null, spec.axes[b][inAxis]] : [spec.axes[b][outAxis], null];
      continue;
    }
    const b = base(name);
    if (!b) throw new InputError(`tensor "${name}" has no counterpart in the spec (neither its name nor a suffix of it after a ".")`);
    axes[name] = spec.axes[b];
  }
  const used = new Set(Object.values(axes).flatMap((e) => e.flatMap(entryPermIds)));
  const perms = Object.fromEntries(Object.entries(spec.perms).filter(([id]) => used.has(id)));
  const out = { perms, axes };
  const problems = validateSpec(out, shapes, { strict: true });
  if (problems.length) throw new InputError(`the spec does not fit this file: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}`);
  return out;
}

/** Whether some tensor name has the signature of a layout this module has a preset for. */
export function hasPreset(names: Iterable<string>): boolean {
  for (const n of names) if (HF_ARCHITECTURE_NAMES.some((a) => archOf(a).signature.test(n))) return true;
  return false;
}
