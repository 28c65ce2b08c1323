/**
 * Hugging Face checkpoints at the command line: the options (`--config`, `--heads`) and the preset
 * lookup shared by `spec infer X.safetensors`, `align --lazy` and `apply`. The config.json is the
 * one given, else the one next to the checkpoint (or next to a shard index).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { InputError } from '../errors.js';
import { readText } from '../io/files.js';
import { HEAD_MODES, hfPreset, type HeadMode, type HfPreset } from '../io/hf-presets.js';
import type { Parsed } from './args.js';

export const HF_OPTIONS = {
  config: { type: 'string', help: 'Hugging Face checkpoints: the model\'s config.json (heads, key/value heads, rotary/ALiBi; default: config.json next to the checkpoint)' },
  heads: { type: 'string', help: 'Hugging Face checkpoints: the attention symmetry: auto (the largest the config allows), full (heads + Q/K and V/O inside heads), vo (heads + V/O inside; RoPE), fixed (heads stay; ALiBi)', choices: HEAD_MODES, default: 'auto' },
} as const;

/** The parsed config.json: `--config`, else the one next to `checkpoint`, else undefined. */
export async function readHfConfig(given: string | undefined, checkpoint: string): Promise<{ path?: string; config?: Record<string, unknown> }> {
  const path = given ?? join(dirname(checkpoint), 'config.json');
  if (!given && !existsSync(path)) return {};
  const text = await readText(path);
  let c: unknown;
  try {
    c = JSON.parse(text);
  } catch (e) {
    throw new InputError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw new InputError(`${path}: config.json must be a JSON object`);
  return { path, config: c as Record<string, unknown> };
}

/** The preset spec of a checkpoint from its header shapes and config.json; errors name config.json's path. */
export async function presetFor(shapes: ReadonlyMap<string, { shape: readonly number[] }>, checkpoint: string, o: Parsed['options']): Promise<HfPreset & { configPath?: string }> {
  const { path, config } = await readHfConfig(o.config as string | undefined, checkpoint);
  try {
    return { ...hfPreset(shapes, config, { heads: (o.heads as HeadMode | undefined) ?? 'auto' }), configPath: path };
  } catch (e) {
    if (e instanceof InputError && path) throw new InputError(`${checkpoint}: ${e.message.replace(/^config\.json:/, `${path}:`)}`);
    if (e instanceof InputError) throw new InputError(`${checkpoint}: ${e.message}`);
    throw e;
  }
}

/** One line describing a preset, for the commands' summaries. */
export function describePreset(p: HfPreset & { configPath?: string }): string {
  const c = p.config;
  const heads = c.kvHeads === c.heads ? `${c.heads} heads` : `${c.heads} query / ${c.kvHeads} key-value heads`;
  const sym = p.heads.move ? `heads move${p.heads.qkInner ? ', Q/K inner' : ''}${p.heads.voInner ? ', V/O inner' : ''}` : `heads fixed${p.heads.qkInner ? ', Q/K inner' : ''}${p.heads.voInner ? ', V/O inner' : ''}`;
  return `Hugging Face ${p.architecture} layout (config ${p.configPath ?? '?'}: width ${c.width}, ${heads} of ${c.headDim}, ${c.position} positions${c.tied ? ', tied embeddings' : ''}; ${sym})`;
}
