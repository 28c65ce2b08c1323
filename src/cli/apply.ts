/**
 * `rebasin apply perms.json X.safetensors -o Y.safetensors`: applies saved permutations (the JSON
 * `align --perms-out` writes) to a sibling of the aligned checkpoint — EMA weights, optimizer
 * moments, LoRA adapters (lora_A on its input axis, lora_B on its output axis, as the base weight),
 * the checkpoint itself — streamed tensor by tensor, each in its own dtype, sharded like X.
 * The spec is --spec (the base checkpoint's: needed for adapters, whose names are the base's plus
 * a suffix) or X's own Hugging Face preset.
 */
import { dirname, resolve } from 'node:path';
import { EXIT, InputError } from '../errors.js';
import { ensureDirSync, withOutputBatch } from '../io/atomic.js';
import { applyPermutationsStreaming, checkpointOutputFiles, safetensorsSource } from '../io/align-lazy.js';
import { checkOutputs, readText } from '../io/files.js';
import { hasPreset, specForSibling } from '../io/hf-presets.js';
import { loadSpecFile } from '../io/load-any.js';
import { validatePerms, type Perms } from '../permutation/apply.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';
import { HF_OPTIONS, presetFor } from './hf.js';

export const applySpec: CommandSpec = {
  name: 'apply',
  summary: 'Apply saved permutations (align --perms-out) to a sibling checkpoint: EMA weights, LoRA adapters, optimizer moments.',
  usage: 'rebasin apply perms.json X.safetensors|X.safetensors.index.json -o Y.safetensors [--spec spec.json | --config config.json] [--json]',
  positionals: ['perms', 'X'],
  options: {
    out: { type: 'string', alias: 'o', help: 'output safetensors (for a sharded X: the output index; shards are written next to it)' },
    spec: { type: 'string', help: 'the permutation spec of the aligned checkpoint (`rebasin spec infer base.safetensors -o spec.json`); default: X\'s own Hugging Face preset' },
    ...HF_OPTIONS,
    quiet: { type: 'boolean', help: 'no summary on stderr' },
    json: { type: 'boolean', help: 'print one JSON object on stdout' },
  },
};

/** The perms JSON `align --perms-out` writes: permutation id → array of indices. */
async function readPerms(path: string): Promise<Perms> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readText(path));
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new InputError(`${path}: expected an object of permutation id → index array (as align --perms-out writes)`);
  const out: Perms = {};
  for (const [id, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) throw new InputError(`${path}: permutation "${id}" must be an array of integers`);
    out[id] = Int32Array.from(v as number[]);
  }
  return out;
}

export async function apply(args: Parsed): Promise<number> {
  const o = args.options;
  if (args.positionals.length !== 2) throw new UsageError(`apply: expects perms.json and a checkpoint, got ${args.positionals.length} arguments`);
  if (!o.out) throw new UsageError('apply: -o/--out is required');
  const [permsPath, xPath] = args.positionals.map((p) => resolve(p));
  const out = resolve(o.out as string);
  const inputs = [permsPath, xPath, ...(o.spec ? [o.spec as string] : []), ...(o.config ? [o.config as string] : [])];
  await checkOutputs([{ path: out, option: '-o' }], inputs);
  const perms = await readPerms(permsPath);
  const src = await safetensorsSource(xPath);
  let files: string[];
  let spec;
  try {
    const shapes = new Map(src.names.map((n) => [n, { shape: src.shape(n) }]));
    let base;
    if (o.spec) base = await loadSpecFile(o.spec as string);
    else if (hasPreset(src.names)) base = (await presetFor(shapes, xPath, o)).spec;
    else throw new InputError(`${xPath}: its tensor names match no Hugging Face preset (an adapter or another sibling): pass --spec, the spec of the aligned checkpoint (\`rebasin spec infer base.safetensors -o spec.json\`)`);
    try {
      spec = specForSibling(base, shapes);
    } catch (e) {
      throw e instanceof InputError ? new InputError(`${xPath}: ${e.message}`) : e;
    }
    files = checkpointOutputFiles(src, out);
  } finally {
    await src.close();
  }
  await checkOutputs(files.map((path) => ({ path, option: '-o' })), inputs);
  const used: Perms = {};
  for (const id of Object.keys(spec.perms)) {
    if (!perms[id]) throw new InputError(`${permsPath}: permutation "${id}" (size ${spec.perms[id]}) is missing; these permutations were not saved for this checkpoint's spec`);
    used[id] = perms[id];
  }
  try {
    validatePerms(spec, used);
  } catch (e) {
    throw new InputError(`${permsPath}: ${(e as Error).message.replace(/\n\s*- /g, ' ')}`);
  }
  ensureDirSync(dirname(out));
  const r = await withOutputBatch((batch) => applyPermutationsStreaming(spec, xPath, used, out, { ...src.metadata, rebasin_permuted_by: permsPath }, batch));
  const summary = { input: xPath, output: out, files: r.files, tensors: r.tensors, permuted: Object.values(spec.axes).filter((e) => e.some((a) => a !== null)).length, permutations: Object.keys(used).length };
  if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else if (!o.quiet) process.stderr.write(`apply: permuted ${summary.permuted} of ${r.tensors} tensors of ${xPath} with ${summary.permutations} permutations from ${permsPath}; wrote ${r.files.join(', ')}\n`);
  return EXIT.ok;
}
