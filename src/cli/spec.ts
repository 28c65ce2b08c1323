/**
 * `rebasin spec infer` and `rebasin spec check`: permutation specs for users' own models, with no
 * hand-written spec and no Python.
 *
 * infer: ONNX graph (or TF.js model.json) → spec JSON, written atomically; prints the
 *   permutations, the fixed groups with their reasons, and warnings. With --checkpoint the spec
 *   is keyed by the checkpoint's names (ONNX initializers mapped by name, node scope or data) and
 *   checked against it before anything is written.
 * check: spec JSON + weights (safetensors, npz, npy, ONNX, TF.js) → every problem at once
 *   (envelope, entries, missing tensors, axis lengths; uncovered tensors unless --no-strict, as align refuses them); exit 0 when
 *   valid, 3 otherwise.
 */
import { extname } from 'node:path';
import { EXIT, InputError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { checkOutputs, readText } from '../io/files.js';
import { loadTensors } from '../io/load-any.js';
import { readOnnx, type Dim } from '../io/onnx.js';
import { inferSpecFromOnnx } from '../io/onnx-import.js';
import type { OnnxNameMapping } from '../io/onnx-names.js';
import type { InferredGroup } from '../permutation/flow.js';
import { readTfjs } from '../io/tfjs.js';
import { tfjsToPytorchLayout } from '../io/tfjs-import.js';
import { envelopeProblems, isBlockAxis, isSegmentsAxis, specToJSON, validateSpec, type PermutationSpec } from '../permutation/spec.js';
import { isBatchCounter } from '../state/params.js';
import { openCheckpoint } from '../io/safetensors-sharded.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';
import { describePreset, HF_OPTIONS, presetFor } from './hf.js';

export const specInferSpec: CommandSpec = {
  name: 'spec infer',
  summary: 'Infer the permutation spec of an ONNX model (or TF.js model.json), or of a Hugging Face checkpoint (GPT-2, BERT, ViT, LLaMA) from its names and config.json.',
  usage: 'rebasin spec infer model.onnx|model.json|model.safetensors|model.safetensors.index.json [-o spec.json] [--checkpoint weights.safetensors] [--names initializer|pytorch] [--config config.json] [--heads auto|full|vo|fixed] [--json]',
  positionals: ['model'],
  options: {
    out: { type: 'string', alias: 'o', help: 'spec file to write (default: print the spec to stdout)' },
    checkpoint: { type: 'string', help: 'weights (safetensors/npz/...) whose names the spec should use; the spec is checked against them' },
    names: { type: 'string', help: 'ONNX: key the spec by initializer names or by PyTorch names (default: pytorch with --checkpoint, else initializer)', choices: ['initializer', 'pytorch'] },
    'input-shape': { type: 'list', help: 'ONNX: static shape of the (first) input, e.g. 1,3,32,32, when the file leaves dims dynamic; TF.js: the Keras input shape with the batch, e.g. 1,32,32,3' },
    ...HF_OPTIONS,
    json: { type: 'boolean', help: 'print the result as one JSON object on stdout' },
  },
};

export const specCheckSpec: CommandSpec = {
  name: 'spec check',
  summary: 'Check a permutation spec against weights and report every problem.',
  usage: 'rebasin spec check spec.json weights.safetensors|.npz|.onnx|model.json [--no-strict] [--json]',
  positionals: ['spec', 'weights'],
  options: {
    strict: { type: 'boolean', help: 'report tensors the spec does not cover (BatchNorm num_batches_tracked excepted), as align and merge refuse them; --no-strict for a partial spec', default: true },
    json: { type: 'boolean', help: 'print the result as one JSON object on stdout' },
  },
};


function describeGroup(g: InferredGroup): string {
  const axes = g.axes.length > 4 ? `${g.axes.slice(0, 4).join(', ')} … (${g.axes.length} axes)` : g.axes.join(', ');
  return `${Number.isFinite(g.size) ? g.size : '?'} channels [${axes}]: ${g.reasons.join('; ')}`;
}

function summariseNames(map: OnnxNameMapping[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of map) out[m.via] = (out[m.via] ?? 0) + 1;
  return out;
}

export async function specInfer(args: Parsed): Promise<number> {
  const [modelPath, ...extra] = args.positionals;
  if (!modelPath) throw new UsageError('spec infer: missing the model file (model.onnx or model.json)');
  if (extra.length) throw new UsageError(`spec infer: unexpected argument "${extra[0]}"`);
  const o = args.options;
  if (/\.(safetensors|index\.json|bin|pt|pth|ckpt|pkl)$/i.test(modelPath)) return specInferCheckpoint(modelPath, o);
  if (o.config !== undefined || o.heads !== 'auto') throw new UsageError('spec infer: --config and --heads apply to Hugging Face checkpoints (.safetensors or a shard index)');
  const json = o.json === true;
  const ckptPath = o.checkpoint as string | undefined;
  const output = o.out as string | undefined;
  // The output policy, before any work: never the model or the checkpoint, never a device.
  if (output) await checkOutputs([{ path: output, option: '-o' }], [modelPath, ...(ckptPath ? [ckptPath] : [])]);
  const checkpoint = ckptPath ? await loadTensors(ckptPath) : undefined;
  const isTfjs = extname(modelPath).toLowerCase() === '.json';
  let spec: PermutationSpec;
  let groups: InferredGroup[];
  let fixed: InferredGroup[];
  let warnings: string[];
  let names: string;
  let nameMap: OnnxNameMapping[] | undefined;
  let kind: string;
  try {
    if (isTfjs) {
      if (o.names === 'initializer') throw new UsageError('spec infer: --names applies to ONNX models; TF.js specs use PyTorch names and layouts');
      const m = await readTfjs(modelPath);
      const given = o['input-shape'] as string[] | undefined;
      if (given && !given.every((d) => /^\d+$/.test(d) && Number(d) > 0)) throw new InputError(`spec infer: --input-shape for a TF.js model must be positive integers, got ${given.join(',')}`);
      const r = tfjsToPytorchLayout(m, given ? { inputShape: given.slice(1).map(Number) } : {}).spec;
      ({ spec, groups, fixed, warnings } = r);
      names = 'pytorch';
      kind = `TF.js layers model (${m.topology.className}, ${m.topology.layers.length} layers)`;
    } else {
      const m = await readOnnx(modelPath);
      let inputShapes: Record<string, Dim[]> | undefined;
      if (o['input-shape']) {
        const dims = (o['input-shape'] as string[]).map((d) => (/^\d+$/.test(d) ? Number(d) : d));
        if (!m.inputs[0]) throw new InputError(`${modelPath}: the graph has no input to give --input-shape to`);
        inputShapes = { [m.inputs[0].name]: dims };
      }
      const r = inferSpecFromOnnx(m, { names: o.names as 'initializer' | 'pytorch' | undefined, checkpoint: checkpoint?.tensors, inputShapes });
      ({ spec, groups, fixed, warnings, nameMap } = r);
      names = r.names;
      kind = `ONNX model (${m.producerName || 'unknown producer'}${m.producerVersion ? ' ' + m.producerVersion : ''}, ${m.nodes.length} nodes)`;
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES') throw new InputError(`${modelPath}: cannot read (${code})`);
    throw e;
  }
  const problems = checkpoint ? validateSpec(spec, new Map([...checkpoint.tensors].filter(([k]) => !isBatchCounter(k)))) : [];
  if (problems.length === 0 && output) await writeFileAtomic(output, specToJSON(spec) + '\n');
  const perms = Object.entries(spec.perms).map(([id, size]) => ({ id, size }));
  if (json) {
    const out: Record<string, unknown> = {
      model: modelPath, kind, names, perms, groups, fixed, warnings, tensors: Object.keys(spec.axes).length,
      nameMap: nameMap && names === 'pytorch' ? nameMap : undefined, checkpoint: ckptPath, problems, output: problems.length === 0 ? output : undefined,
    };
    if (!output) out.spec = JSON.parse(specToJSON(spec));
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  } else {
    const lines: string[] = [];
    const w = output ? process.stdout : process.stderr; // keep stdout for the spec itself
    lines.push(`${modelPath}: ${kind}`);
    lines.push(`  ${perms.length} permutation${perms.length === 1 ? '' : 's'} over ${Object.keys(spec.axes).length} tensors (names: ${names})`);
    for (const p of perms) lines.push(`    ${p.id}: ${p.size}`);
    if (nameMap && names === 'pytorch') {
      const counts = summariseNames(nameMap);
      lines.push(`  names: ${Object.entries(counts).map(([k, v]) => `${v} by ${k}`).join(', ')}`);
    }
    lines.push(`  fixed groups: ${fixed.length}`);
    for (const g of fixed) lines.push(`    - ${describeGroup(g)}`);
    lines.push(`  warnings: ${warnings.length === 0 ? 'none' : warnings.length}`);
    for (const x of warnings) lines.push(`    - ${x}`);
    if (problems.length) {
      lines.push(`  the spec does not fit ${ckptPath} (${problems.length} problem${problems.length === 1 ? '' : 's'}); nothing written:`);
      for (const p of problems) lines.push(`    - ${p}`);
    } else if (output) lines.push(`  wrote ${output}`);
    w.write(lines.join('\n') + '\n');
    if (!output && problems.length === 0) process.stdout.write(specToJSON(spec) + '\n');
  }
  return problems.length ? EXIT.badInput : EXIT.ok;
}

/** `spec infer` on a Hugging Face checkpoint: the preset from the header's names and shapes plus config.json (no tensor is read). */
async function specInferCheckpoint(path: string, o: Parsed['options']): Promise<number> {
  for (const k of ['checkpoint', 'names', 'input-shape']) if (o[k] !== undefined) throw new UsageError(`spec infer: --${k} applies to ONNX/TF.js models, not to a checkpoint`);
  const output = o.out as string | undefined;
  const json = o.json === true;
  const inputs = [path, ...(o.config ? [o.config as string] : [])];
  if (output) await checkOutputs([{ path: output, option: '-o' }], inputs);
  const r = await openCheckpoint(path);
  let preset: Awaited<ReturnType<typeof presetFor>>;
  try {
    const shapes = new Map(r.names.filter((n) => !isBatchCounter(n)).map((n) => [n, { shape: r.info(n).shape }]));
    preset = await presetFor(shapes, path, o);
  } finally {
    await r.close();
  }
  const { spec } = preset;
  if (output) await writeFileAtomic(output, specToJSON(spec) + '\n');
  const perms = Object.entries(spec.perms).map(([id, size]) => ({ id, size }));
  const kind = describePreset(preset);
  if (json) {
    const out: Record<string, unknown> = { model: path, kind, architecture: preset.architecture, config: preset.config, configPath: preset.configPath, heads: preset.heads, perms, notes: preset.notes, tensors: Object.keys(spec.axes).length, shards: r.shards?.files.length ?? 1, output };
    if (!output) out.spec = JSON.parse(specToJSON(spec));
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    return EXIT.ok;
  }
  const groups = new Map<string, number>();
  for (const p of perms) {
    const kindOf = p.id.replace(/\..*$/, '');
    groups.set(kindOf, (groups.get(kindOf) ?? 0) + 1);
  }
  const lines = [`${path}: ${kind}`, `  ${perms.length} permutations over ${Object.keys(spec.axes).length} tensors${r.shards ? ` in ${r.shards.files.length} shards` : ''}: ${[...groups].map(([k, n]) => `${k} ×${n}`).join(', ')}`];
  for (const n of preset.notes) lines.push(`  note: ${n}`);
  if (output) lines.push(`  wrote ${output}`);
  (output ? process.stdout : process.stderr).write(lines.join('\n') + '\n');
  if (!output) process.stdout.write(specToJSON(spec) + '\n');
  return EXIT.ok;
}

export async function specCheck(args: Parsed): Promise<number> {
  const [specPath, weightsPath, ...extra] = args.positionals;
  if (!specPath || !weightsPath) throw new UsageError('spec check: expected a spec file and a weights file');
  if (extra.length) throw new UsageError(`spec check: unexpected argument "${extra[0]}"`);
  const json = args.options.json === true;
  const strict = args.options.strict === true;
  const text = await readText(specPath);
  const problems: string[] = [];
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    problems.push(`not valid JSON: ${(e as Error).message}`);
  }
  const loaded = await loadTensors(weightsPath);
  const tensors = new Map([...loaded.tensors].filter(([k]) => !isBatchCounter(k)));
  if (raw !== undefined) {
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) problems.push('the spec must be a JSON object');
    else {
      const o = raw as Record<string, unknown>;
      // The envelope is checked here so that one run still lists every problem of the body.
      problems.push(...envelopeProblems(o));
      problems.push(...validateSpec({ perms: o.perms, axes: o.axes } as PermutationSpec, tensors, { strict }));
    }
  }
  const spec = raw as Partial<PermutationSpec> | undefined;
  const nPerms = spec && spec.perms && typeof spec.perms === 'object' ? Object.keys(spec.perms).length : 0;
  const nTensors = spec && spec.axes && typeof spec.axes === 'object' ? Object.keys(spec.axes).length : 0;
  // Version-2 entries, counted for the summary.
  const all = nTensors ? Object.values(spec!.axes!).flatMap((e) => (Array.isArray(e) ? e : [])) : [];
  const segments = all.filter(isSegmentsAxis).length;
  const blocks = all.filter(isBlockAxis).length + all.filter(isSegmentsAxis).flatMap((a) => (Array.isArray(a.segments) ? a.segments : [])).filter(isBlockAxis).length;
  if (json) {
    process.stdout.write(JSON.stringify({ spec: specPath, weights: weightsPath, format: loaded.format, valid: problems.length === 0, problems, perms: nPerms, tensors: nTensors, segmentsEntries: segments, blockEntries: blocks, weightTensors: tensors.size, notes: loaded.notes }, null, 2) + '\n');
  } else if (problems.length === 0) {
    const v2 = segments + blocks ? `, ${segments} segments and ${blocks} block entr${blocks === 1 ? 'y' : 'ies'}` : '';
    process.stdout.write(`${specPath}: valid for ${weightsPath} (${nPerms} permutations over ${nTensors} tensors${v2}${strict ? ', every tensor covered' : ''})\n`);
  } else {
    process.stderr.write(`${specPath}: ${problems.length} problem${problems.length === 1 ? '' : 's'} against ${weightsPath}:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
  }
  return problems.length ? EXIT.badInput : EXIT.ok;
}
