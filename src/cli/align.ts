/**
 * Checkpoint commands: `align` (permute B into A's basin), `interpolate` (models along the path)
 * and `merge` (permute several models into one basin with a merge strategy, then average). Outputs are safetensors written
 * atomically; align and merge end with the equivalence check of every permuted model.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CustomCost } from '../methods/custom-cost.js';
import { barrier, hasBatchNorm as stateHasBatchNorm, interpolationCurve, type BnMode } from '../analysis/lmc.js';
import { noGrad } from '../core/tensor.js';
import { CheckFailedError, InputError } from '../errors.js';
import { ensureDirSync, withOutputBatch, writeFileAtomic } from '../io/atomic.js';
import { checkOutputDir, checkOutputs, withOpenFile, type OutputPath } from '../io/files.js';
import { CHECKPOINT_FORMAT } from '../io/checkpoint.js';
import { applyPermutationsStreaming, checkpointOutputFiles, safetensorsSource } from '../io/align-lazy.js';
import { isShardIndex, refusePickle } from '../io/safetensors-sharded.js';
import { hasPreset } from '../io/hf-presets.js';
import { checkSources, float32Bytes, lazyMemoryBound, weightMatchingLazy } from '../methods/weight-matching-lazy.js';
import { createModel } from '../models/registry.js';
import type { Criterion } from '../models/loss.js';
import type { Model } from '../models/model.js';
import type { Dataset, SplitName } from '../data/index.js';
import { MERGE_STRATEGIES, MERGE_STRATEGY_NAMES, mergeModels, strategyNeedsData, type MergeStrategyName } from '../methods/merge.js';
import { hasBatchNorm } from '../training/common.js';
import { evaluate, evaluateEnsemble, reestimateBatchNorm, type EvalResult } from '../training/evaluate.js';
import { markdownTable } from '../report/markdown.js';
import { alignModels, BUILTIN_METHOD_NAMES, METHOD_NAMES, METHODS, needsData, type MethodName, type MethodOptions } from '../methods/registry.js';
import type { AlignResult } from '../methods/types.js';
import type { SinkhornDiagnostics } from '../permutation/sinkhorn.js';
import { SINKHORN_KEEP, TAU_SCHEDULES, type SinkhornKeep, type TauSchedule } from '../methods/sinkhorn-rebasin.js';
import { assertCompatible } from '../methods/validate.js';
import { lerpState, mergeState, mergeWeights, splitState, type Params } from '../state/params.js';
import { applyHard, invertPerms } from '../permutation/apply.js';
import { assertValidSpec, type PermutationSpec } from '../permutation/spec.js';
import { Progress } from '../report/progress.js';
import { linePlots } from '../report/svg.js';
import { parseDecimal, UsageError, type CommandSpec, type Parsed } from './args.js';
import { describePreset, HF_OPTIONS, presetFor } from './hf.js';
import { BN_MODES, DEFAULT_SPLIT, SPLITS, type BnChoice } from './eval.js';
import { checkFits, equivalenceCheck, isNamedDataset, MODEL_DEFINITION_OPTIONS, NAMED_DATASETS, parseModelConfig, readDataset, readFitData, readModels, resolveSpec, writeModelFile, type EquivalenceReport, type ModelFile } from './model-files.js';

const DATA_METHODS = METHOD_NAMES.filter(needsData);

/** `--tau`: a fixed temperature > 0, or the name of a schedule (TAU_SCHEDULES: "schedule", "anneal"). */
export function parseTau(cmd: string, raw: unknown): number | TauSchedule | undefined {
  if (raw === undefined) return undefined;
  if (Object.hasOwn(TAU_SCHEDULES, String(raw))) return TAU_SCHEDULES[String(raw)].schedule;
  const tau = parseDecimal(String(raw));
  if (!(tau > 0)) throw new UsageError(`${cmd}: --tau must be a number > 0 or one of ${Object.keys(TAU_SCHEDULES).map((k) => `"${k}"`).join(', ')}, got "${String(raw)}"`);
  return tau;
}

/** `--lr`, checked before any work: a learning rate > 0 (the parser already refused non-finite numbers). */
export function assertLr(cmd: string, lr: unknown): void {
  if (lr !== undefined && !((lr as number) > 0)) throw new UsageError(`${cmd}: --lr must be > 0, got ${String(lr)}`);
}

/** `--tau`'s help: a number or a named schedule, each with its formula. */
export function tauHelp(): string {
  return `a fixed τ > 0, or ${Object.entries(TAU_SCHEDULES).map(([k, s]) => `"${k}" (${s.formula})`).join(', or ')}`;
}

/** "(default X: m1, m2; Y: m3)": the methods with option `key`, grouped by their default. */
function defaultsOf(key: string): string {
  const byValue = new Map<string, MethodName[]>();
  for (const m of METHOD_NAMES) {
    const v = (METHODS[m].defaults as Record<string, unknown>)[key];
    if (v === undefined) continue;
    const shown = typeof v === 'function' ? Object.keys(TAU_SCHEDULES).find((k) => TAU_SCHEDULES[k].schedule === v) ?? 'a schedule' : String(v);
    byValue.set(shown, [...(byValue.get(shown) ?? []), m]);
  }
  return `(default ${[...byValue].map(([v, ms]) => `${v}: ${ms.join(', ')}`).join('; ')})`;
}

const common = {
  spec: { type: 'string', help: 'permutation spec JSON (default: derived from a rebasin checkpoint\'s model)' },
  ...MODEL_DEFINITION_OPTIONS,
  data: { type: 'string', help: `training data for ${DATA_METHODS.join('/')}: mnist, fashion-mnist or an .npz with x and y` },
  'data-dir': { type: 'string', help: 'folder with the MNIST/Fashion-MNIST IDX files' },
  'data-limit': { type: 'int', help: 'use only the first N training samples' },
  seed: { type: 'int', help: 'random seed', default: 0 },
  quiet: { type: 'boolean', help: 'no progress output' },
  json: { type: 'boolean', help: 'print one JSON object on stdout' },
} as const;

const methodOptions = {
  method: { type: 'string', help: `alignment method (${DATA_METHODS.join(', ')} need --data)`, choices: METHOD_NAMES, default: 'wm' },
  steps: { type: 'int', help: `Sinkhorn steps ${defaultsOf('steps')}; the data costs: --epochs passes over --data` },
  epochs: { type: 'int', help: `epochs over --data ${defaultsOf('epochs')}` },
  tau: { type: 'string', help: `Sinkhorn temperature: ${tauHelp()} ${defaultsOf('tau')}` },
  lr: { type: 'number', help: `learning rate of the Sinkhorn matrices / STE ${defaultsOf('lr')}` },
  keep: { type: 'string', help: `which step's permutations a Sinkhorn run returns: its last, or those with the lowest hard cost ${defaultsOf('keep')}`, choices: SINKHORN_KEEP },
  'batch-size': { type: 'int', help: 'mini-batch size for the data-driven methods', default: 1000 },
  cost: { type: 'string', help: 'with --method sinkhorn: a JavaScript module whose default (or `cost`) export maps { alignedB, a, batch, step, forward, F } to a scalar tensor — any objective (see examples/distill-cost.mjs)' },
} as const;

/** merge aligns with the built-in objectives only (no --cost). */
const { cost: _cost, ...methodTuning } = methodOptions;
const mergeMethodOptions = { ...methodTuning, method: { ...methodOptions.method, choices: BUILTIN_METHOD_NAMES } } as const;

export const alignSpec: CommandSpec = {
  name: 'align',
  summary: 'Permute model B into model A\'s basin and write the aligned B (same function as B).',
  usage: `rebasin align A.safetensors B.safetensors [--spec spec.json] [--method ${METHOD_NAMES.join('|')}] [--data mnist] -o B_aligned.safetensors`,
  positionals: ['A', 'B'],
  options: {
    out: { type: 'string', alias: 'o', help: 'output safetensors for the aligned B' },
    'perms-out': { type: 'string', help: 'also write the permutations as JSON' },
    lazy: { type: 'boolean', help: 'read tensors one permutation group at a time (checkpoints larger than memory, sharded ones too; --method wm, safetensors only; structural equivalence check; each tensor written in its own dtype)' },
    ...methodOptions,
    ...common,
    ...HF_OPTIONS,
  },
};

interface Loaded {
  files: ModelFile[];
  spec: PermutationSpec;
  /** Why an --onnx model cannot run, when it cannot. */
  unrunnable?: string;
}

async function loadModels(cmd: string, paths: string[], o: Parsed['options']): Promise<Loaded> {
  const { files, definition } = await readModels(paths.map((p) => resolve(p)), o);
  // Plain weights with no spec: the Hugging Face preset of their names, when they have one.
  const preset = !o.spec && !files[0].model && !definition?.spec && hasPreset(files[0].state.keys())
    ? (await presetFor(files[0].state, files[0].path, o)).spec : undefined;
  const spec = await resolveSpec(o.spec as string | undefined, files[0].model, cmd, definition?.spec ?? preset);
  checkModelSet(cmd, files, spec);
  return { files, spec, unrunnable: definition?.unrunnable };
}

/**
 * The checks before a command permutes `files` with `spec`: the spec covers the first file's
 * tensors exactly, and every other file has the same architecture (InputError naming the files
 * otherwise). The browser page runs them too, for the CLI's messages.
 */
export function checkModelSet(cmd: string, files: ModelFile[], spec: PermutationSpec): void {
  try {
    // Strict, as \`spec check\` (by default): every tensor must be covered, or applying the permutations fails.
    assertValidSpec(spec, files[0].state, { strict: true });
  } catch (e) {
    throw new InputError(`${cmd}: the spec does not match ${files[0].path} (\`rebasin spec check\` lists every problem): ${firstLine((e as Error).message)}`);
  }
  for (const f of files.slice(1)) {
    if (files[0].model && f.model && files[0].model.name !== f.model.name) throw new InputError(`${cmd}: ${files[0].path} is ${files[0].model.name} but ${f.path} is ${f.model.name}: the models must share one architecture`);
    checkSameDefinition(cmd, files[0], f);
    try {
      assertCompatible(files[0].state, f.state);
    } catch (e) {
      if (!(e instanceof InputError)) throw e;
      throw new InputError(`${cmd}: ${f.path} does not match ${files[0].path} (model A): ${e.message}`);
    }
  }
}

/** The first problem of a multi-line "invalid permutation spec (N problems): - …" message, as one line. */
function firstLine(message: string): string {
  const lines = message.split('\n').map((l) => l.trim().replace(/^- /, ''));
  return lines.length > 1 ? `${lines[1]}${lines.length > 2 ? ` (and ${lines.length - 2} more)` : ''}` : lines[0];
}

/** JSON with sorted keys, so two equal configs compare equal whatever their key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

/** Checkpoints that record a model definition must record the same one (same shapes are not enough: activations, norms differ). */
function checkSameDefinition(cmd: string, a: ModelFile, b: ModelFile): void {
  if (!a.model || !b.model) return;
  const ca = canonical(a.model.config);
  const cb = canonical(b.model.config);
  if (ca !== cb) throw new InputError(`${cmd}: ${a.path} and ${b.path} record different model definitions (${ca} vs ${cb}); the models must share one architecture`);
}

function checkMethodOptions(cmd: string, o: Parsed['options']): MethodName {
  const method = o.method as MethodName;
  for (const k of ['steps', 'epochs', 'batch-size', 'data-limit']) {
    if (o[k] !== undefined && !((o[k] as number) >= 1)) throw new UsageError(`${cmd}: --${k} must be ≥ 1`);
  }
  assertLr(cmd, o.lr);
  parseTau(cmd, o.tau);
  if (needsData(method) && !o.data) throw new UsageError(`${cmd}: --method ${method} needs --data (and a model definition: a rebasin checkpoint, --model-config or --onnx)`);
  if (method === 'sinkhorn' && !o.cost) throw new UsageError(`${cmd}: --method sinkhorn needs --cost module.mjs (the built-in costs are ${METHOD_NAMES.filter((m) => m.startsWith('sinkhorn-')).join(', ')})`);
  if (o.cost && method !== 'sinkhorn') throw new UsageError(`${cmd}: --cost applies to --method sinkhorn`);
  return method;
}

async function runMethod(cmd: string, method: MethodName, spec: PermutationSpec, a: ModelFile, b: ModelFile, o: Parsed['options']): Promise<AlignResult> {
  const model = a.model ?? b.model;
  if (needsData(method) && !model) throw new UsageError(`${cmd}: --method ${method} needs a model definition: use rebasin checkpoints or pass --model-config or --onnx`);
  const data = o.data && model ? await readFitData(o.data as string, { dataDir: o['data-dir'] as string | undefined, limit: o['data-limit'] as number | undefined, model }) : undefined;
  const cost = o.cost ? await loadCostModule(o.cost as string) : undefined;
  const progress = new Progress({ label: `${cmd} ${method}`, total: 1, quiet: Boolean(o.quiet || o.json) });
  const result = alignModels(method, { spec, a: a.state, b: b.state }, {
    model, data, seed: o.seed as number, batchSize: o['batch-size'] as number,
    onStep: (e) => { progress.tick(0, `step ${e.step} cost ${e.cost.toPrecision(4)}${e.hardCost !== undefined ? ` hard ${e.hardCost.toPrecision(4)}` : ''}`); },
  }, {
    // Each method reads the options it has (e.g. --epochs: STE and the data costs); the others are ignored.
    steps: o.steps as number | undefined,
    epochs: o.epochs as number | undefined,
    tau: parseTau(cmd, o.tau),
    lr: o.lr as number | undefined,
    keep: o.keep as SinkhornKeep | undefined,
    cost,
  } as MethodOptions<MethodName>);
  progress.finish(`${result.steps} steps, ${result.seconds.toFixed(1)} s`);
  const note = result.diagnostics && fallbackNote(result.diagnostics);
  if (note) process.stderr.write(`${cmd} ${method}: ${note}\n`);
  return result;
}

/** The cost function of a --cost module: its default export, or its export named `cost`. */
async function loadCostModule(path: string): Promise<CustomCost> {
  const file = resolve(path);
  if (!existsSync(file)) throw new InputError(`--cost: ${path}: no such file`);
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(file).href) as Record<string, unknown>;
  } catch (e) {
    throw new InputError(`--cost: ${path} does not load: ${(e as Error).message.split('\n')[0]}`);
  }
  const fn = typeof mod.default === 'function' ? mod.default : mod.cost;
  if (typeof fn !== 'function') throw new InputError(`--cost: ${path} exports no function (a default export or one named "cost")`);
  return fn as CustomCost;
}

/** One line about the implicit backward's solver fallbacks, or null when there were none (the library only counts them). */
function fallbackNote(d: SinkhornDiagnostics): string | null {
  const parts: string[] = [];
  if (d.cgFallbacks > 0) parts.push(`Schur-CG gave up ${d.cgFallbacks} times (the dense solve was used)`);
  if (d.lstsqFallbacks > 0) {
    parts.push(`the KKT system was singular ${d.lstsqFallbacks} times (least squares was used: nearly hard soft permutations, whose entries underflowed; a higher --tau, a lower --lr or fewer --steps avoids it: README, "The learning rate of the weight costs")`);
  }
  if (parts.length === 0) return null;
  const solves = d.denseSolves + d.cgSolves - d.cgFallbacks;
  return `warning: in ${solves} implicit-backward solves, ${parts.join(' and ')}`;
}

function checkOrThrow(what: string, r: EquivalenceReport, quiet: boolean): void {
  if (!quiet) {
    process.stderr.write(r.kind === 'functional'
      ? `${what}: equivalence check: max |output difference| ${r.maxAbsDiff.toExponential(2)} (outputs up to ${r.maxAbsOutput!.toExponential(2)}) ${r.passed ? 'OK' : 'FAILED'}\n`
      : `${what}: ${r.note}: max difference ${r.maxAbsDiff} ${r.passed ? 'OK' : 'FAILED'}\n`);
  }
  if (!r.passed) throw new CheckFailedError(`${what}: the permuted model does not compute the same function (max |difference| ${r.maxAbsDiff}); the spec probably does not describe this architecture — nothing was written`);
}

function permsJson(perms: Record<string, Int32Array>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(perms).map(([k, v]) => [k, Array.from(v)]))) + '\n';
}

/** Every file a checkpoint command reads: the models, --spec, a --model-config file, .npz data. */
function inputFiles(positionals: string[], o: Parsed['options']): string[] {
  const files = [...positionals];
  if (o.spec) files.push(o.spec as string);
  const config = o['model-config'] as string | undefined;
  if (config && !config.trim().startsWith('{')) files.push(config);
  for (const k of ['data', 'eval-data']) if (o[k] && !isNamedDataset(o[k] as string)) files.push(o[k] as string);
  for (const k of ['onnx', 'cost']) if (o[k]) files.push(o[k] as string);
  return files;
}

/** The output policy (io/files.ts) for -o and --perms-out, checked before any work. */
async function checkCommandOutputs(args: Parsed): Promise<void> {
  const o = args.options;
  const outs: OutputPath[] = [{ path: o.out as string, option: '-o' }];
  if (o['perms-out']) outs.push({ path: o['perms-out'] as string, option: '--perms-out' });
  await checkOutputs(outs, inputFiles(args.positionals, o));
}

export async function align(args: Parsed): Promise<number> {
  const o = args.options;
  if (args.positionals.length !== 2) throw new UsageError(`align: expects two model files A and B, got ${args.positionals.length}`);
  if (!o.out) throw new UsageError('align: -o/--out is required');
  const method = checkMethodOptions('align', o);
  await checkCommandOutputs(args);
  if (o.lazy) return alignLazy(args, method);
  if (isShardIndex(o.out as string)) throw new UsageError('align: a sharded output (-o ….index.json) is written by --lazy; without it the output is one safetensors file');
  const { files: [a, b], spec, unrunnable } = await loadModels('align', args.positionals, o);
  if (unrunnable && needsData(method)) throw new InputError(`align: --method ${method} runs the model, but ${unrunnable}`);
  const result = await runMethod('align', method, spec, a, b, o);
  const check = equivalenceCheck(a.model ?? b.model, b.state, result.aligned, () => noGrad(() => applyHard(spec, result.aligned, invertPerms(result.perms, spec))), undefined, unrunnable);
  checkOrThrow('align', check, Boolean(o.json));
  const out = resolve(o.out as string);
  // Both outputs or neither.
  await withOutputBatch(async (batch) => {
    await writeModelFile(out, result.aligned, b.metadata, { rebasin_aligned_to: a.path, rebasin_method: method }, batch);
    if (o['perms-out']) {
      const p = resolve(o['perms-out'] as string);
      ensureDirSync(dirname(p));
      await writeFileAtomic(p, permsJson(result.perms), { batch });
    }
  });
  const summary = {
    method, output: out, steps: result.steps, seconds: result.seconds,
    finalCost: result.log.at(-1)?.cost ?? null, hardCost: result.log.at(-1)?.hardCost ?? null,
    equivalence: check,
    permutations: Object.fromEntries(Object.entries(result.perms).map(([k, p]) => [k, { size: p.length, moved: p.filter((v, i) => v !== i).length }])),
  };
  if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else {
    process.stdout.write(`aligned ${b.path} to ${a.path} with ${method} in ${result.seconds.toFixed(2)} s (${result.steps} steps)\n`);
    for (const [k, v] of Object.entries(summary.permutations)) process.stdout.write(`  ${k}: ${v.moved}/${v.size} units moved\n`);
    process.stdout.write(`wrote ${out}\n`);
  }
  return 0;
}

/** `align --lazy`: weight matching and output streamed group by group / tensor by tensor. */
async function alignLazy(args: Parsed, method: MethodName): Promise<number> {
  const o = args.options;
  if (method !== 'wm') throw new UsageError(`align: --lazy supports only --method wm, got ${method}`);
  if (o.data) throw new UsageError('align: --lazy does not use --data (weight matching only)');
  const [aPath, bPath] = args.positionals.map((p) => resolve(p));
  for (const p of [aPath, bPath]) {
    refusePickle(p);
    if (!existsSync(p)) throw new InputError(`${p}: no such file`);
    if (!isShardIndex(p) && !(await isSafetensors(p))) throw new UsageError(`align: --lazy needs safetensors inputs (a file or a sharded checkpoint's index.json); ${p} is not one`);
  }
  const a = await safetensorsSource(aPath);
  try {
    const b = await safetensorsSource(bPath);
    try {
      // The spec from --spec, --model-config or a rebasin checkpoint's stored config; no tensors are loaded.
      const config = o['model-config'] ? parseModelConfig(o['model-config'] as string)
        : a.metadata.format === CHECKPOINT_FORMAT && a.metadata.model ? parseModelConfig(a.metadata.model) : undefined;
      let model;
      try {
        model = !o.spec && config ? createModel(config) : undefined;
      } catch (e) {
        throw new InputError(`align: the model config does not describe a model: ${(e as Error).message}`);
      }
      // A and B must match (names, shapes) before anything else is said or done.
      checkSources(a, b);
      const shapes = new Map(a.names.map((n) => [n, { shape: a.shape(n) }]));
      const preset = !o.spec && !model ? await presetFor(shapes, aPath, o) : undefined;
      const spec = await resolveSpec(o.spec as string | undefined, model, 'align', preset?.spec);
      try {
        assertValidSpec(spec, shapes, { strict: true });
      } catch (e) {
        throw new InputError(`align: the spec does not match ${aPath}: ${(e as Error).message}`);
      }
      const out = resolve(o.out as string);
      // A sharded B is written sharded: the shard files join the output policy's checks.
      await checkOutputs(checkpointOutputFiles(b, out).map((path) => ({ path, option: '-o' })), inputFiles(args.positionals, o));
      const quiet = Boolean(o.quiet || o.json);
      if (preset && !quiet) process.stderr.write(`align: ${describePreset(preset)}${preset.notes.map((n) => `\n  note: ${n}`).join('')}\n`);
      const groups = Object.keys(spec.perms).length;
      let progress = new Progress({ label: 'align wm (lazy) sweep 1', total: groups, quiet });
      const result = await weightMatchingLazy({ spec, a, b }, {
        seed: o.seed as number,
        onGroup: (p) => progress.tick(1, `${p}`),
        onStep: (e) => {
          progress.finish(`cost ${e.cost.toPrecision(6)}`);
          progress = new Progress({ label: `align wm (lazy) sweep ${e.step + 1}`, total: groups, quiet });
        },
      });
      const bound = lazyMemoryBound(spec, (n) => a.shape(n));
      const memory = {
        peakBytes: result.peakBytes, peakGroup: result.peakGroup, boundBytes: bound.bytes, boundTensor: bound.tensor,
        checkpointBytes: 2 * a.names.reduce((t, n) => t + float32Bytes(a.shape(n)), 0),
      };
      if (!quiet) {
        process.stderr.write(`align: ${result.steps} sweeps in ${result.seconds.toFixed(1)} s; held at most ${mb(memory.peakBytes)} of tensors at once (group ${memory.peakGroup}), bounded by the largest tensor of A and B, ${memory.boundTensor} (${mb(memory.boundBytes)}); A and B hold ${mb(memory.checkpointBytes)} as float32\n`);
      }
      ensureDirSync(dirname(out));
      // Both outputs or neither.
      const check = await withOutputBatch(async (batch) => {
        // Structural check only: a functional one would need the whole model in memory.
        const applied = await applyPermutationsStreaming(spec, bPath, result.perms, out, { ...b.metadata, rebasin_aligned_to: aPath, rebasin_method: method }, batch);
        const check: EquivalenceReport = { kind: 'structural', maxAbsDiff: applied.maxAbsDiff, passed: applied.maxAbsDiff === 0, note: 'lazy mode: checked tensor by tensor that the permutation is exactly invertible (no functional check)' };
        checkOrThrow('align', check, Boolean(o.json));
        if (o['perms-out']) {
          const p = resolve(o['perms-out'] as string);
          ensureDirSync(dirname(p));
          await writeFileAtomic(p, permsJson(result.perms), { batch });
        }
        return check;
      });
      const summary = {
        method, lazy: true, output: out, steps: result.steps, seconds: result.seconds,
        finalCost: result.log.at(-1)?.cost ?? null, hardCost: null, equivalence: check, reads: memory,
        preset: preset ? { architecture: preset.architecture, config: preset.configPath, heads: preset.heads } : undefined,
        permutations: Object.fromEntries(Object.entries(result.perms).map(([k, p]) => [k, { size: p.length, moved: p.filter((v, i) => v !== i).length }])),
      };
      if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
      else {
        process.stdout.write(`aligned ${bPath} to ${aPath} with ${method} (lazy) in ${result.seconds.toFixed(2)} s (${result.steps} steps)\n`);
        for (const [k, v] of Object.entries(summary.permutations)) process.stdout.write(`  ${k}: ${v.moved}/${v.size} units moved\n`);
        process.stdout.write(`wrote ${out}\n`);
      }
      return 0;
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(bytes < 1e7 ? 3 : 1)} MB`;

/** Safetensors by content: a little-endian u64 header size followed by '{'. */
async function isSafetensors(path: string): Promise<boolean> {
  return withOpenFile(path, {}, async ({ handle }) => {
    const buf = new Uint8Array(9);
    const { bytesRead } = await handle.read(buf, 0, 9, 0);
    return bytesRead === 9 && buf[8] === 0x7b;
  });
}

export const interpolateSpec: CommandSpec = {
  name: 'interpolate',
  summary: 'Write models along the linear path (1−α)·A + α·B; with a model definition and --data, also print and plot the loss curve.',
  usage: 'rebasin interpolate A.safetensors B.safetensors [--alphas 0,0.25,0.5,0.75,1] -o DIR [--data mnist [--split test|train]]',
  positionals: ['A', 'B'],
  options: {
    out: { type: 'string', alias: 'o', help: 'output directory' },
    alphas: { type: 'list', help: 'interpolation weights in [0, 1]', default: ['0', '0.25', '0.5', '0.75', '1'] },
    points: { type: 'int', help: 'λ points of the evaluated curve (with --data)', default: 25 },
    'no-files': { type: 'boolean', help: 'only evaluate the curve; write no interpolated models' },
    split: { type: 'string', help: `split of a named --data the curve is evaluated on (default ${DEFAULT_SPLIT}, like the experiments; an .npz is evaluated whole)`, choices: SPLITS },
    bn: { type: 'string', help: 'BatchNorm statistics along the curve: reestimate (default for models with BatchNorm, as the experiments: on 10 batches of the train split, or of the .npz itself), interpolate, or batch statistics', choices: ['reestimate', 'interpolate', 'batch'] },
    ...common,
  },
};

/** Batches (of 1000) the BatchNorm statistics of each point of a curve are re-estimated on. */
const BN_REESTIMATE_BATCHES = 10;

export async function interpolate(args: Parsed): Promise<number> {
  const o = args.options;
  if (args.positionals.length !== 2) throw new UsageError(`interpolate: expects two model files A and B, got ${args.positionals.length}`);
  if (!o.out) throw new UsageError('interpolate: -o/--out DIR is required');
  const alphas = (o.alphas as string[]).map((s) => {
    const v = parseDecimal(s);
    if (!(v >= 0 && v <= 1)) throw new UsageError(`interpolate: --alphas: "${s}" is not a number in [0, 1]`);
    return v;
  });
  if (!((o.points as number) >= 2)) throw new UsageError(`interpolate: --points must be ≥ 2 (the curve's endpoints), got ${o.points}`);
  const dir = resolve(o.out as string);
  const names = new Set([...(o['no-files'] ? [] : alphas.map((alpha) => `interp-${alpha.toFixed(3)}.safetensors`)), ...(o.data ? ['curve.svg'] : [])]);
  await checkOutputDir(dir, '-o');
  await checkOutputs([...names].map((n) => ({ path: join(dir, n), option: '-o' })), inputFiles(args.positionals, o));
  const { files: [a, b], definition } = await readModels(args.positionals.map((p) => resolve(p)), o);
  if (definition?.unrunnable && o.data) throw new InputError(`interpolate: evaluating a curve runs the model, but ${definition.unrunnable}`);
  checkSameDefinition('interpolate', a, b);
  assertCompatible(a.state, b.state);
  const model = a.model ?? b.model;
  const dataSpec = o.data as string | undefined;
  if (!dataSpec && o.split !== undefined) throw new UsageError('interpolate: --split applies to --data');
  if (dataSpec && !isNamedDataset(dataSpec) && o.split !== undefined) throw new UsageError(`interpolate: --split applies to ${Object.keys(NAMED_DATASETS).join(' and ')}; ${dataSpec} is evaluated whole`);
  const split: SplitName | null = dataSpec && isNamedDataset(dataSpec) ? (o.split as SplitName | undefined) ?? DEFAULT_SPLIT : null;
  if (dataSpec && !model) throw new UsageError('interpolate: evaluating a curve needs a model definition: rebasin checkpoints, --model-config or --onnx');
  // The data is read and checked before any file is written.
  const data = dataSpec && model
    ? await readFitData(dataSpec, { dataDir: o['data-dir'] as string | undefined, limit: o['data-limit'] as number | undefined, model, ...(split ? { split } : {}) })
    : undefined;
  if (o.bn !== undefined && !data) throw new UsageError('interpolate: --bn applies to --data');
  const withBn = stateHasBatchNorm(a.state);
  if (o.bn !== undefined && o.bn !== 'interpolate' && !withBn) throw new UsageError(`interpolate: --bn ${o.bn as string}: the model has no BatchNorm`);
  const bn = withBn ? (o.bn as BnMode | undefined) ?? 'reestimate' : 'interpolate';
  const bnData = bn === 'reestimate' && data && model
    ? split ? await readFitData(dataSpec!, { dataDir: o['data-dir'] as string | undefined, limit: o['data-limit'] as number | undefined, model, split: 'train' }) : data
    : undefined;
  // The curve is computed before anything is written (no temp file is open during the work).
  let curve: ReturnType<typeof interpolationCurve> | null = null;
  if (data && model) {
    const progress = new Progress({ label: 'interpolate', total: o.points as number, quiet: Boolean(o.quiet || o.json) });
    curve = interpolationCurve({ model, a: a.state, b: b.state, data, criterion: data.y instanceof Int32Array ? 'ce' : 'mse', points: o.points as number, onPoint: () => progress.tick(), bn, bnData, bnBatches: BN_REESTIMATE_BATCHES });
    progress.finish();
  }
  ensureDirSync(dir);
  const written: string[] = [];
  // Every file or none: the models and the curve are committed together.
  await withOutputBatch(async (batch) => {
    if (!o['no-files']) {
      for (const alpha of alphas) {
        const p = join(dir, `interp-${alpha.toFixed(3)}.safetensors`);
        await writeModelFile(p, noGrad(() => lerpState(a.state, b.state, alpha)), a.metadata, { rebasin_interpolation: JSON.stringify({ a: a.path, b: b.path, alpha }) }, batch);
        written.push(p);
      }
    }
    if (curve) {
      const svg = join(dir, 'curve.svg');
      const c = curve;
      const panels = [{ title: 'loss along (1−λ)·A + λ·B', xLabel: 'λ', yLabel: 'loss', series: [{ label: 'loss', x: c.map((p) => p.lambda), y: c.map((p) => p.loss) }] }];
      if (c.every((p) => p.accuracy !== undefined)) panels.push({ title: 'accuracy', xLabel: 'λ', yLabel: 'accuracy', series: [{ label: 'accuracy', x: c.map((p) => p.lambda), y: c.map((p) => p.accuracy!) }] });
      await writeFileAtomic(svg, linePlots(panels, { cols: panels.length }), { batch });
      written.push(svg);
    }
  });
  const summary = curve ? barrier(curve) : null;
  const evaluatedOn = data ? { name: dataSpec!, split, n: data.n, bn: withBn ? bn : null } : null;
  if (o.json) process.stdout.write(JSON.stringify({ files: written, data: evaluatedOn, curve, barrier: summary }) + '\n');
  else {
    if (curve) {
      const bnNote = withBn ? `; BatchNorm statistics: ${bn === 'reestimate' ? `re-estimated on ${split ? `${dataSpec} train` : dataSpec}` : bn === 'batch' ? 'batch statistics' : 'interpolated'}` : '';
      process.stdout.write(`curve on ${evaluatedOn!.name}${split ? ` ${split} split` : ''} (${evaluatedOn!.n} samples${bnNote})\n`);
      process.stdout.write('  λ      loss      accuracy\n');
      for (const p of curve) process.stdout.write(`  ${p.lambda.toFixed(3)}  ${p.loss.toFixed(5)}  ${p.accuracy !== undefined ? (100 * p.accuracy).toFixed(2) + '%' : '-'}\n`);
      process.stdout.write(`loss barrier ${summary!.lossBarrier.toFixed(5)} at λ = ${summary!.lossBarrierAt.toFixed(3)}; AUC ${summary!.auc.toFixed(5)}\n`);
    }
    process.stdout.write(`wrote ${written.length} file(s) to ${dir}\n`);
  }
  return 0;
}

const strategyHelp = MERGE_STRATEGY_NAMES.map((n) => `${n}: ${MERGE_STRATEGIES[n].summary}`).join('; ');

export const mergeSpec: CommandSpec = {
  name: 'merge',
  summary: 'Merge several models into one: permute them into one basin (to the first model, or with MergeMany) and average; --eval-data reports the inputs, the merged model and their ensemble.',
  usage: `rebasin merge M1.safetensors M2.safetensors [M3 ...] [--strategy ${MERGE_STRATEGY_NAMES.join('|')}] [--method wm] [--weights 0.5,0.3,0.2] [--eval-data ${Object.keys(NAMED_DATASETS).join('|')}|x.npz [--split train|test] [--bn keep|reestimate]] -o merged.safetensors`,
  positionals: ['M1', 'M2', '...'],
  options: {
    out: { type: 'string', alias: 'o', help: 'output safetensors for the merged model' },
    weights: { type: 'list', help: 'averaging weights, one per model (normalised to sum to 1)' },
    strategy: { type: 'string', help: `how the models are brought into one basin (${strategyHelp})`, choices: MERGE_STRATEGY_NAMES, default: 'first' },
    'barycenter-cost': { type: 'string', help: 'cost of --strategy sinkhorn: data (loss of the average on --data; default) or weights (distance to the average)', choices: ['data', 'weights'] },
    ...mergeMethodOptions,
    'eval-data': { type: 'string', help: `report loss/accuracy of each input, the merged model and the inputs' ensemble on ${Object.keys(NAMED_DATASETS).join(', ')} or an .npz with x and y (needs a model definition)` },
    split: { type: 'string', help: `split of --eval-data to evaluate on (default ${DEFAULT_SPLIT}; an .npz is evaluated whole)`, choices: SPLITS },
    bn: { type: 'string', help: 'BatchNorm statistics of the merged model (with --eval-data): re-estimate them on the training split of --eval-data (default for models with BatchNorm; the written file gets them) or keep the averaged ones', choices: BN_MODES },
    ...common,
    ...HF_OPTIONS,
    'data-limit': { type: 'int', help: 'use only the first N samples of --data and of --eval-data (each split)' },
  },
};

interface MergeEvaluation {
  data: { name: string; split: SplitName | null; n: number };
  criterion: Criterion;
  bn: BnChoice | null;
  models: { path: string; loss: number; accuracy: number | null }[];
  merged: { loss: number; accuracy: number | null };
  ensemble: { loss: number; accuracy: number | null };
}

/** The validated --weights, normalised; a usage error naming the problem otherwise. */
function parseMergeWeights(n: number, given: string[] | undefined): number[] | undefined {
  if (!given) return undefined;
  if (given.length !== n) throw new UsageError(`merge: --weights needs ${n} numbers (one per model), got ${given.length}`);
  try {
    return mergeWeights(n, given.map(parseDecimal));
  } catch (e) {
    throw new UsageError(`merge: --weights: ${(e as Error).message}`);
  }
}

export async function merge(args: Parsed): Promise<number> {
  const o = args.options;
  const paths = args.positionals;
  if (paths.length < 2) throw new UsageError(`merge: expects at least two model files, got ${paths.length}`);
  if (!o.out) throw new UsageError('merge: -o/--out is required');
  const method = checkMethodOptions('merge', o);
  const strategy = o.strategy as MergeStrategyName;
  if (strategy !== 'first' && method !== 'wm') throw new UsageError(`merge: --method applies to --strategy first; ${strategy} aligns with weight matching`);
  const weights = parseMergeWeights(paths.length, o.weights as string[] | undefined);
  const evalSpecName = o['eval-data'] as string | undefined;
  if (!evalSpecName && o.split !== undefined) throw new UsageError('merge: --split applies to --eval-data');
  if (!evalSpecName && o.bn !== undefined) throw new UsageError('merge: --bn applies to --eval-data');
  if (evalSpecName && !isNamedDataset(evalSpecName) && o.split !== undefined) throw new UsageError(`merge: --split applies to ${Object.keys(NAMED_DATASETS).join(' and ')}; ${evalSpecName} is evaluated whole`);
  await checkCommandOutputs(args);

  // Every check on the inputs runs before anything is merged or written.
  const { files, spec } = await loadModels('merge', paths, o);
  const reference = files[0];
  const model = files.find((f) => f.model)?.model;
  if (strategy !== 'sinkhorn' && o['barycenter-cost'] !== undefined) throw new UsageError('merge: --barycenter-cost applies to --strategy sinkhorn');
  const tuning = { steps: o.steps as number | undefined, tau: parseTau('merge', o.tau), lr: o.lr as number | undefined, keep: o.keep as SinkhornKeep | undefined };
  if (strategy === 'mergemany' && o.keep !== undefined) throw new UsageError('merge: --keep applies to the Sinkhorn strategies (first with a Sinkhorn --method, sinkhorn)');
  if (strategy === 'sinkhorn' && o.keep === 'best' && o['barycenter-cost'] !== 'weights') throw new UsageError('merge: --keep best needs --barycenter-cost weights (the data cost has no hard cost to compare steps by)');
  const options = strategy === 'first' ? { method, methodOptions: { ...tuning, epochs: o.epochs as number | undefined } }
    : strategy === 'sinkhorn' ? { cost: o['barycenter-cost'] as 'data' | 'weights' | undefined, barycenter: tuning }
      : {};
  if (strategyNeedsData(strategy, options) && !model) throw new UsageError(`merge: --strategy ${strategy}${strategy === 'first' ? ` --method ${method}` : ''} needs a model definition: use rebasin checkpoints or pass --model-config or --onnx`);
  if (strategyNeedsData(strategy, options) && !o.data) throw new UsageError(`merge: --strategy ${strategy}${strategy === 'first' ? ` --method ${method}` : ''} needs --data (${Object.keys(NAMED_DATASETS).join(', ')} or an .npz) to fit on`);
  const evalSetup = evalSpecName ? await mergeEvalSetup(evalSpecName, o, files) : null;
  const readOpts = { dataDir: o['data-dir'] as string | undefined, limit: o['data-limit'] as number | undefined, model };
  const data = o.data && model ? await readFitData(o.data as string, { ...readOpts, model }) : undefined;

  const quiet = Boolean(o.quiet || o.json);
  const progress = new Progress({ label: `merge ${strategy}`, total: 1, quiet });
  const result = mergeModels(strategy, { spec, models: files.map((f) => f.state), weights }, {
    model, data, seed: o.seed as number, batchSize: o['batch-size'] as number,
    onStep: (e) => { progress.tick(0, `step ${e.step} cost ${e.cost.toPrecision(4)}${e.hardCost !== undefined ? ` hard ${e.hardCost.toPrecision(4)}` : ''}`); },
  }, options);
  progress.finish(`${result.seconds.toFixed(1)} s`);
  const checks: EquivalenceReport[] = [];
  files.forEach((f, i) => {
    if (i === 0) return;
    const check = equivalenceCheck(reference.model ?? f.model, f.state, result.aligned[i], () => noGrad(() => applyHard(spec, result.aligned[i], invertPerms(result.perms[i], spec))));
    checkOrThrow(`merge ${f.path}`, check, quiet);
    checks.push(check);
  });
  let merged = result.merged;
  let evaluation: MergeEvaluation | null = null;
  if (evalSetup) ({ merged, evaluation } = evaluateMerge(evalSetup, files, merged, weights, o['batch-size'] as number));

  const out = resolve(o.out as string);
  const usedWeights = weights ?? files.map(() => 1 / files.length);
  const usedMethod = strategy === 'first' ? method : 'wm';
  await writeModelFile(out, merged, reference.metadata, { rebasin_merged: JSON.stringify({ models: files.map((f) => f.path), weights: weights ?? null, strategy, method: usedMethod, bn: evaluation?.bn === 'reestimate' ? `re-estimated on ${evaluation.data.name} train` : null }) });
  if (o.json) {
    process.stdout.write(JSON.stringify({ output: out, strategy, method: usedMethod, models: files.map((f) => f.path), weights: usedWeights, seconds: result.seconds, equivalence: checks, evaluation }) + '\n');
    return 0;
  }
  process.stdout.write(strategy === 'first'
    ? `merged ${files.length} models (aligned to ${reference.path} with ${method}); wrote ${out}\n`
    : `merged ${files.length} models with ${strategy} (${result.log.length} rounds, ${result.seconds.toFixed(1)} s); wrote ${out}\n`);
  if (evaluation) process.stdout.write(`\n${mergeEvalTable(evaluation, files.map((f) => f.path))}`);
  return 0;
}

interface MergeEvalSetup {
  dataName: string;
  split: SplitName | null;
  model: Model;
  data: Dataset;
  criterion: Criterion;
  bn: BnChoice | null;
  bnData?: Dataset;
}

/** Loads --eval-data and checks that it fits every model (before anything is merged). */
async function mergeEvalSetup(dataSpec: string, o: Parsed['options'], files: ModelFile[]): Promise<MergeEvalSetup> {
  const model = files[0].model ?? files.find((f) => f.model)?.model;
  if (!model) throw new UsageError('merge: --eval-data needs a model definition: use rebasin checkpoints or pass --model-config');
  const named = isNamedDataset(dataSpec);
  const split = named ? (o.split as SplitName | undefined) ?? DEFAULT_SPLIT : null;
  const bnModel = hasBatchNorm(model);
  if (!bnModel && o.bn === 'reestimate') throw new UsageError('merge: --bn reestimate: the model has no BatchNorm');
  const bn: BnChoice | null = bnModel ? (o.bn as BnChoice | undefined) ?? 'reestimate' : null;
  const readOpts = { dataDir: o['data-dir'] as string | undefined, limit: o['data-limit'] as number | undefined, model };
  const data = await readDataset(dataSpec, split ? { ...readOpts, split } : readOpts);
  const criterion: Criterion = data.y instanceof Int32Array ? 'ce' : 'mse';
  for (const f of files) checkFits(dataSpec, named, data, criterion, f.path, f.model ?? model);
  const bnData = bn !== 'reestimate' ? undefined : split && split !== 'train' ? await readDataset(dataSpec, { ...readOpts, split: 'train' }) : data;
  return { dataName: dataSpec, split, model, data, criterion, bn, bnData };
}

/** Each input, the merged model (BN statistics re-estimated if chosen: the returned state has them) and the inputs' ensemble. */
function evaluateMerge(s: MergeEvalSetup, files: ModelFile[], merged: Params, weights: number[] | undefined, batchSize: number): { merged: Params; evaluation: MergeEvaluation } {
  const opts = { batchSize, criterion: s.criterion };
  const members = files.map((f) => ({ model: f.model ?? s.model, ...splitState(f.state) }));
  const models = members.map((m, i) => ({ path: files[i].path, ...figures(evaluate(m.model, m, s.data, opts)) }));
  const { params, buffers: averaged } = splitState(merged);
  const buffers = s.bn === 'reestimate' ? reestimateBatchNorm(s.model, params, s.bnData!, { batchSize }) : averaged;
  const ensemble = figures(evaluateEnsemble(members, s.data, { ...opts, weights }));
  return {
    merged: mergeState(params, buffers),
    evaluation: {
      data: { name: s.dataName, split: s.split, n: s.data.n }, criterion: s.criterion, bn: s.bn,
      models, merged: figures(evaluate(s.model, { params, buffers }, s.data, opts)), ensemble,
    },
  };
}

function figures(r: EvalResult): { loss: number; accuracy: number | null } {
  return { loss: r.loss, accuracy: r.accuracy ?? null };
}

function mergeEvalTable(e: MergeEvaluation, paths: string[]): string {
  const ce = e.criterion === 'ce';
  const header = ['model', ce ? 'loss (cross-entropy)' : 'loss (MSE)', ...(ce ? ['accuracy'] : [])];
  const row = (name: string, r: { loss: number; accuracy: number | null }) => [name, r.loss.toPrecision(5), ...(ce ? [`${(100 * r.accuracy!).toFixed(2)}%`] : [])];
  const bn = e.bn === 'reestimate' ? ' (BN statistics re-estimated)' : e.bn === 'keep' ? ' (BN statistics averaged)' : '';
  const rows = [
    ...e.models.map((m, i) => row(paths[i], m)),
    row(`merged${bn}`, e.merged),
    row(`ensemble of ${paths.length} (${ce ? 'mean of probabilities' : 'mean of outputs'})`, e.ensemble),
  ];
  return `${e.data.name}${e.data.split ? ` ${e.data.split}` : ''}: ${e.data.n} samples\n\n${markdownTable(header, rows)}`;
}
