/**
 * Linear mode connectivity experiment (the paper's second experiment, method.md §5.2): for each
 * task, train models A and B from different seeds, align B to A with every method, and measure
 * the loss/accuracy barrier along the linear path between A and the aligned B.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { barrier, interpolationCurve, type BarrierSummary, type BnMode, type CurvePoint } from '../analysis/lmc.js';
import { loadFashionMnist, loadLicenseText, loadMnist, polynomialTask, splitTrainVal, take, TEXT_VOCAB, type Dataset } from '../data/index.js';
import { FormatError } from '../io/errors.js';
import { ensureDirSync, writeFileAtomicSync } from '../io/atomic.js';
import { loadCheckpoint, saveCheckpoint } from '../io/checkpoint.js';
import { alignModels, BUILTIN_METHOD_NAMES, METHODS, type MethodName } from '../methods/registry.js';
import { describeTau, type SinkhornKeep, type TauSchedule } from '../methods/sinkhorn-rebasin.js';
import type { Criterion } from '../models/loss.js';
import { gpt, mlp, REFERENCE_DROPOUT_B, vggSmall, vit, type Model } from '../models/index.js';
import type { Perms } from '../permutation/apply.js';
import { fixBlocks, isBlockAxis, isSegmentsAxis, type PermutationSpec } from '../permutation/spec.js';
import { mergeState, type Params } from '../state/params.js';
import { fmtMeanStd, markdownTable } from '../report/markdown.js';
import { Progress, trainingProgress } from '../report/progress.js';
import { linePlots, type Panel } from '../report/svg.js';
import { trainModel } from '../training/train.js';

/** The paper's tasks (the default), then the transformer pairs (opt-in: hours on a small machine). */
export const PAPER_LMC_TASKS = ['poly1', 'poly2', 'poly3', 'mnist-mlp', 'fashion-mlp', 'mnist-vgg'] as const;
export const LMC_TASKS = [...PAPER_LMC_TASKS, 'text-gpt', 'mnist-vit'] as const;
export type LmcTask = (typeof LMC_TASKS)[number];
/** Every method, with the weight costs represented by L2 as in the paper (the others can be chosen). */
export const LMC_METHODS: readonly MethodName[] = BUILTIN_METHOD_NAMES.filter((m) => (METHODS[m].weightCost ?? 'l2') === 'l2');

export interface TaskSetup {
  /** Model A's architecture; alignment and the curves run on it (B's weights share its parameter names). */
  model: Model;
  /** The architecture model B is trained with: the reference trains B with dropout 0.25 on the MNIST MLP tasks (its main_lmc_mlp.py), else `model`. */
  modelB: Model;
  train: Dataset;
  /** Where the LMC curve is measured. */
  test: Dataset;
  criterion: Criterion;
  epochs: number;
  batchSize: number;
  lr: number;
  /** Epochs of Sinkhorn-Mid/Rnd and of STE over `train` (a tiny data set needs more passes). */
  sinkhornEpochs: number;
  steEpochs: number;
  /** BN statistics of interpolated models unless the caller sets one (the reference re-estimates them for its VGG). */
  bn: BnMode;
}

export interface TaskOptions {
  /** Override the task's training epochs (e.g. for a quick run). */
  epochs?: number;
  /** Use only this many test samples for the curves. */
  testLimit?: number;
  dataDir?: string;
}

/** The setups of the reference's LMC scripts (method.md §2.7), per task. */
export function taskSetup(task: LmcTask, o: TaskOptions = {}): TaskSetup {
  const limitTest = (d: Dataset) => (o.testLimit ? take(d, Math.min(o.testLimit, d.n)) : d);
  if (task === 'poly1' || task === 'poly2' || task === 'poly3') {
    const id = Number(task.slice(4)) as 1 | 2 | 3;
    // The reference's two-hidden-layer regression net (1 → 10 → 10 → 1, tanh).
    const poly = mlp({ sizes: [1, 10, 10, 1], activation: 'tanh' });
    return {
      model: poly,
      modelB: poly,
      train: polynomialTask(id, { seed: 0 }),
      test: polynomialTask(id, { seed: 1 }),
      criterion: 'mse',
      epochs: o.epochs ?? 500,
      batchSize: 100,
      lr: 1e-2,
      // One batch per epoch: the reference's 20 epochs would be 20 steps.
      sinkhornEpochs: 300,
      steEpochs: 300,
      bn: 'interpolate',
    };
  }
  if (task === 'text-gpt') {
    // Character-level GPT-2-style models on Debian's licence texts; curves on held-out licences.
    const T = 64;
    const model = gpt({ vocab: TEXT_VOCAB.length, context: T, width: 64, layers: 2, heads: 4 });
    return {
      model, modelB: model,
      train: loadLicenseText('train', { context: T, dataDir: o.dataDir }),
      test: limitTest(loadLicenseText('test', { context: T, dataDir: o.dataDir })),
      criterion: 'ce', epochs: o.epochs ?? 4, batchSize: 64, lr: 3e-3, sinkhornEpochs: 1, steEpochs: 1, bn: 'interpolate',
    };
  }
  const fashion = task === 'fashion-mlp';
  const load = fashion ? loadFashionMnist : loadMnist;
  const layout = task === 'mnist-vgg' || task === 'mnist-vit' ? 'chw' : 'flat';
  // First 10k training images split 9000/1000 with seed 1, batch 1000, as the reference.
  const full = load('train', { limit: 10000, layout, dataDir: o.dataDir });
  const { train } = splitTrainVal(full, 1000, 1);
  const test = limitTest(load('test', { layout, dataDir: o.dataDir }));
  if (task === 'mnist-vit') {
    const model = vit({ imageShape: [1, 28, 28], patch: 7, classes: 10, width: 64, layers: 2, heads: 4 });
    return { model, modelB: model, train, test, criterion: 'ce', epochs: o.epochs ?? 10, batchSize: 128, lr: 1e-3, sinkhornEpochs: 2, steEpochs: 1, bn: 'interpolate' };
  }
  if (task === 'mnist-vgg') {
    // The reference calls update_batchnorm before evaluating its VGG: re-estimated BN statistics.
    const vgg = vggSmall({ inputShape: [1, 28, 28], numClasses: 10 });
    return { model: vgg, modelB: vgg, train, test, criterion: 'ce', epochs: o.epochs ?? 10, batchSize: 1000, lr: 1e-2, sinkhornEpochs: 20, steEpochs: 5, bn: 'reestimate' };
  }
  // The reference's main_lmc_mlp.py: A without dropout, B with dropout 0.25.
  const sizes = [784, 512, 512, 10];
  return { model: mlp({ sizes }), modelB: mlp({ sizes, dropout: REFERENCE_DROPOUT_B }), train, test, criterion: 'ce', epochs: o.epochs ?? 50, batchSize: 1000, lr: 1e-3, sinkhornEpochs: 20, steEpochs: 5, bn: 'interpolate' };
}

export interface LmcOptions {
  tasks: LmcTask[];
  methods: MethodName[];
  seeds: number;
  outDir: string;
  points?: number;
  bn?: BnMode;
  epochs?: number;
  testLimit?: number;
  /** Epochs of Sinkhorn-Mid/Rnd (default: per task; the reference's 20 on MNIST). */
  sinkhornEpochs?: number;
  steEpochs?: number;
  /** Sinkhorn temperature τ, fixed or a schedule, for every Sinkhorn method (default: widthTau for the weight costs, 1 for Mid/Rnd as the reference). */
  tau?: number | TauSchedule;
  /** AdamW learning rate of every Sinkhorn method's matrices (default: each method's, WEIGHT_COST_DEFAULTS/DATA_COST_DEFAULTS). */
  sinkhornLr?: number;
  /** Which step's permutations every Sinkhorn method returns (default: each method's). */
  sinkhornKeep?: SinkhornKeep;
  /**
   * 'fixed': block permutations (attention heads) held at the identity, each head's inner
   * permutations still matched — the ablation that shows what moving heads adds. Default 'permuted'.
   */
  heads?: 'permuted' | 'fixed';
  /** Retrain endpoints even when their checkpoints exist in outDir. */
  retrain?: boolean;
  dataDir?: string;
  quiet?: boolean;
}

export interface LmcRow extends BarrierSummary {
  task: string;
  method: string;
  seed: number;
  seconds: number;
  /** Models with attention heads: the share of heads, and of positions inside heads, the alignment moved. */
  moved?: { heads: number; inner: number };
}

/**
 * The share of heads (block permutations of `spec`) and of head dimensions (their inner
 * permutations) that `perms` moves (an id it lacks stays in place: the heads of the ablation);
 * null for a spec without heads.
 */
export function movedShares(spec: PermutationSpec, perms: Perms): { heads: number; inner: number } | null {
  const heads = new Set<string>();
  const inner = new Set<string>();
  for (const entries of Object.values(spec.axes)) {
    for (const a of entries) {
      const blocks = isBlockAxis(a) ? [a] : isSegmentsAxis(a) ? a.segments.filter(isBlockAxis) : [];
      for (const b of blocks) {
        heads.add(b.blocks);
        (typeof b.within === 'string' ? [b.within] : b.within).forEach((w) => inner.add(w));
      }
    }
  }
  if (!heads.size) return null;
  const share = (ids: Set<string>) => {
    let moved = 0;
    let all = 0;
    for (const id of ids) {
      all += spec.perms[id];
      perms[id]?.forEach((v, i) => { if (v !== i) moved++; });
    }
    return all ? moved / all : 0;
  };
  return { heads: share(heads), inner: share(inner) };
}

export interface LmcReport {
  rows: LmcRow[];
  curves: { task: string; method: string; seed: number; points: CurvePoint[] }[];
  trainSeconds: number;
  /** Rows taken from an interrupted or earlier run in the same folder with the same settings. */
  reused: number;
  /** Cached endpoints that were retrained because their recipe differs, and why. */
  notes: string[];
  files: string[];
}

export interface EndpointOptions {
  /** The architecture to train (setup.model or setup.modelB). */
  model: Model;
  path: string;
  seed: number;
  /** Train even when a matching checkpoint is at `path`. */
  retrain: boolean;
  label: string;
  quiet: boolean;
}

/**
 * Everything that decides an endpoint's weights besides the task's data, as stored in its
 * checkpoint's metadata (values as saveCheckpoint stores them: strings, or JSON).
 */
function endpointRecipe(setup: TaskSetup, model: Model, seed: number): Record<string, string> {
  return { model: JSON.stringify(model.config), seed: String(seed), epochs: String(setup.epochs), batchSize: String(setup.batchSize), lr: String(setup.lr), criterion: setup.criterion };
}

/**
 * Why the checkpoint with `metadata` is not the endpoint `recipe` asks for (the first differing
 * setting, both values), or undefined when it is.
 */
export function recipeMismatch(metadata: Record<string, string>, recipe: Record<string, string>): string | undefined {
  for (const [key, want] of Object.entries(recipe)) {
    const have = metadata[key];
    if (have === want) continue;
    if (have === undefined) return `it does not record ${key}`;
    if (key === 'model') {
      const a = JSON.parse(have) as Record<string, unknown>;
      const b = JSON.parse(want) as Record<string, unknown>;
      const k = [...new Set([...Object.keys(a), ...Object.keys(b)])].find((x) => JSON.stringify(a[x]) !== JSON.stringify(b[x]));
      if (k !== undefined) return `it was trained with model ${k} ${JSON.stringify(a[k] ?? null)}, this run needs ${JSON.stringify(b[k] ?? null)}`;
    }
    return `it was trained with ${key} ${have}, this run needs ${want}`;
  }
  return undefined;
}

/**
 * A trained endpoint of `setup`: loaded from `path` when the checkpoint there was trained with the
 * same recipe (architecture, seed, epochs, batch size, learning rate, loss) unless `retrain`, else
 * trained and saved there. A checkpoint with another recipe is retrained, and `note` says why
 * (also written to stderr unless quiet).
 */
export async function endpoint(setup: TaskSetup, o: EndpointOptions): Promise<{ state: Params; seconds: number; note?: string }> {
  const recipe = endpointRecipe(setup, o.model, o.seed);
  let note: string | undefined;
  if (!o.retrain && existsSync(o.path)) {
    const ck = await loadCheckpoint(o.path);
    const why = recipeMismatch(ck.metadata, recipe);
    if (!why) return { state: mergeState(ck.params, ck.buffers), seconds: 0 };
    note = `${o.label}: not reusing ${o.path}: ${why}; retraining`;
    if (!o.quiet) process.stderr.write(note + '\n');
  }
  const t0 = performance.now();
  const bar = trainingProgress(o.label, { quiet: o.quiet });
  const r = trainModel({ model: o.model, data: setup.train, epochs: setup.epochs, batchSize: setup.batchSize, lr: setup.lr, seed: o.seed, criterion: setup.criterion, onBatch: bar.onBatch });
  bar.finish(r.history);
  const seconds = (performance.now() - t0) / 1000;
  const { model: _, ...extra } = recipe;
  await saveCheckpoint(o.path, o.model, r, extra);
  return { state: mergeState(r.params, r.buffers), seconds, note };
}

/**
 * Everything besides the endpoints that decides a row's numbers: a row in an earlier run's
 * lmc.json with the same settings, on endpoints reused from the same folder, is not recomputed.
 */
function rowSettings(o: LmcOptions): string {
  return JSON.stringify({ points: o.points ?? 25, bn: o.bn ?? null, epochs: o.epochs ?? null, testLimit: o.testLimit ?? null, sinkhornEpochs: o.sinkhornEpochs ?? null, steEpochs: o.steEpochs ?? null, tau: o.tau === undefined ? null : describeTau(o.tau), sinkhornLr: o.sinkhornLr ?? null, sinkhornKeep: o.sinkhornKeep ?? null, heads: o.heads ?? 'permuted', dataDir: o.dataDir ?? null });
}

/** The rows and curves of an earlier (possibly interrupted) run in `outDir` with the same settings. */
function earlierRows(o: LmcOptions): { rows: LmcRow[]; curves: LmcReport['curves'] } {
  const path = join(o.outDir, 'lmc.json');
  if (o.retrain || !existsSync(path)) return { rows: [], curves: [] };
  let file: { settings?: unknown; rows?: unknown; curves?: unknown };
  try {
    file = JSON.parse(readFileSync(path, 'utf8')) as typeof file;
  } catch (e) {
    throw new FormatError(path, 'json', `not readable as an earlier run's results (${(e as Error).message}); move it away or pass --retrain`, { label: 'results' });
  }
  if (file.settings !== rowSettings(o) || !Array.isArray(file.rows) || !Array.isArray(file.curves)) return { rows: [], curves: [] };
  return { rows: file.rows as LmcRow[], curves: file.curves as LmcReport['curves'] };
}

const rowKey = (r: { task: string; seed: number; method: string }) => `${r.task}\u0000${r.seed}\u0000${r.method}`;

export async function runLmc(o: LmcOptions): Promise<LmcReport> {
  if (!(Number.isInteger(o.seeds) && o.seeds >= 1)) throw new Error(`lmc: seeds must be an integer ≥ 1, got ${o.seeds}`);
  ensureDirSync(o.outDir);
  const earlier = earlierRows(o);
  const earlierRow = new Map(earlier.rows.map((r) => [rowKey(r), r]));
  const earlierCurve = new Map(earlier.curves.map((c) => [rowKey(c), c]));
  const rows: LmcRow[] = [];
  const curves: LmcReport['curves'] = [];
  const notes: string[] = [];
  let trainSeconds = 0;
  let reused = 0;
  const progress = new Progress({ label: 'lmc', total: o.tasks.length * o.seeds * o.methods.length, quiet: o.quiet });
  for (const task of o.tasks) {
    const setup = taskSetup(task, { epochs: o.epochs, testLimit: o.testLimit, dataDir: o.dataDir });
    const derived = setup.model.permutationSpec();
    const spec = o.heads === 'fixed' ? fixBlocks(derived) : derived;
    for (let seed = 0; seed < o.seeds; seed++) {
      const dir = join(o.outDir, 'checkpoints', task);
      ensureDirSync(dir);
      const common = { retrain: Boolean(o.retrain), quiet: Boolean(o.quiet) };
      const A = await endpoint(setup, { model: setup.model, path: join(dir, `seed${seed}-A.safetensors`), seed: 2 * seed + 1, label: `${task} A`, ...common });
      const B = await endpoint(setup, { model: setup.modelB, path: join(dir, `seed${seed}-B.safetensors`), seed: 2 * seed + 2, label: `${task} B`, ...common });
      trainSeconds += A.seconds + B.seconds;
      for (const e of [A, B]) if (e.note) notes.push(e.note);
      // Rows of an interrupted run stand only when both endpoints are the cached ones they were measured on.
      const endpointsReused = A.seconds === 0 && B.seconds === 0;
      for (const method of o.methods) {
        const key = rowKey({ task, seed, method });
        const before = earlierRow.get(key);
        const beforeCurve = earlierCurve.get(key);
        if (endpointsReused && before && beforeCurve) {
          rows.push(before);
          curves.push(beforeCurve);
          reused++;
          progress.tick(1, `${task} seed ${seed}: ${method} barrier ${before.lossBarrier.toFixed(4)} (from the earlier run)`);
          continue;
        }
        progress.tick(0, `${task} seed ${seed}: ${method}…`);
        const result = alignModels(method, { spec, a: A.state, b: B.state }, {
          model: setup.model,
          data: setup.train,
          criterion: setup.criterion,
          batchSize: setup.batchSize,
          seed,
        }, {
          // Read by the methods that have these options: epochs by STE and the data-cost Sinkhorns, τ by every Sinkhorn.
          epochs: method === 'ste' ? o.steEpochs ?? setup.steEpochs : o.sinkhornEpochs ?? setup.sinkhornEpochs,
          tau: o.tau,
          // STE has an lr of its own; --lr is the Sinkhorn matrices'.
          ...(method.startsWith('sinkhorn') ? { lr: o.sinkhornLr, keep: o.sinkhornKeep } : {}),
        });
        const points = interpolationCurve({ model: setup.model, a: A.state, b: result.aligned, data: setup.test, criterion: setup.criterion, points: o.points ?? 25, bn: o.bn ?? setup.bn, bnData: setup.train });
        const moved = movedShares(derived, result.perms);
        rows.push({ task, method, seed, seconds: result.seconds, ...barrier(points), ...(moved ? { moved } : {}) });
        curves.push({ task, method, seed, points });
        // Written after every row, so a stopped run resumes from here.
        writeLmcOutputs(o, rows, curves, false);
        progress.tick(1, `${task} seed ${seed}: ${method} barrier ${rows.at(-1)!.lossBarrier.toFixed(4)}`);
      }
    }
  }
  progress.finish();
  const files = writeLmcOutputs(o, rows, curves, true);
  return { rows, curves, trainSeconds, reused, notes, files };
}

function writeLmcOutputs(o: LmcOptions, rows: LmcRow[], curves: LmcReport['curves'], complete: boolean): string[] {
  const files: string[] = [];
  const put = (name: string, text: string) => {
    const p = join(o.outDir, name);
    writeFileAtomicSync(p, text);
    files.push(p);
  };
  put('lmc.json', JSON.stringify({ options: o, settings: rowSettings(o), complete, rows, curves }, null, 1) + '\n');
  put('lmc.md', lmcMarkdown(o, rows));
  for (const task of o.tasks) {
    const seed0 = curves.filter((c) => c.task === task && c.seed === 0);
    if (!seed0.length) continue;
    put(`lmc-${task}.svg`, lmcPlot(task, seed0));
  }
  return files;
}

export function lmcPlot(task: string, curves: { method: string; points: CurvePoint[] }[]): string {
  const panels: Panel[] = [{
    title: `${task}: loss along the path`, xLabel: 'λ  (0 = model A, 1 = aligned B)', yLabel: 'loss',
    series: curves.map((c) => ({ label: c.method, x: c.points.map((p) => p.lambda), y: c.points.map((p) => p.loss) })),
  }];
  if (curves.every((c) => c.points.every((p) => p.accuracy !== undefined))) {
    panels.push({
      title: `${task}: accuracy along the path`, xLabel: 'λ  (0 = model A, 1 = aligned B)', yLabel: 'accuracy',
      series: curves.map((c) => ({ label: c.method, x: c.points.map((p) => p.lambda), y: c.points.map((p) => p.accuracy!) })),
    });
  }
  return linePlots(panels, { cols: panels.length });
}

export function lmcMarkdown(o: LmcOptions, rows: LmcRow[]): string {
  const heads = rows.some((r) => r.moved);
  const header = ['task', 'method', 'loss barrier', 'loss AUC', 'acc barrier', 'endpoint loss A / B', 'endpoint acc A / B', ...(heads ? ['heads moved', 'head dims moved'] : []), 'seconds'];
  const body: string[][] = [];
  for (const task of o.tasks) {
    for (const method of o.methods) {
      const rs = rows.filter((r) => r.task === task && r.method === method);
      if (!rs.length) continue;
      const acc = rs.every((r) => r.accBarrier !== undefined);
      body.push([
        task, method,
        fmtMeanStd(rs.map((r) => r.lossBarrier)),
        fmtMeanStd(rs.map((r) => r.auc)),
        acc ? fmtMeanStd(rs.map((r) => r.accBarrier!)) : '-',
        `${fmtMeanStd(rs.map((r) => r.endpoints.lossA), 3)} / ${fmtMeanStd(rs.map((r) => r.endpoints.lossB), 3)}`,
        acc ? `${fmtMeanStd(rs.map((r) => r.endpoints.accA!), 3)} / ${fmtMeanStd(rs.map((r) => r.endpoints.accB!), 3)}` : '-',
        ...(heads ? (['heads', 'inner'] as const).map((k) => (rs.every((r) => r.moved) ? fmtMeanStd(rs.map((r) => r.moved![k]), 2) : '-')) : []),
        fmtMeanStd(rs.map((r) => r.seconds), 3),
      ]);
    }
  }
  return `# Linear mode connectivity\n\n${o.seeds} seed pair(s); ${o.points ?? 25} λ points; BN mode ${o.bn ?? 'per task (re-estimated for mnist-vgg, as the reference)'}${o.tau !== undefined ? `; Sinkhorn ${describeTau(o.tau)}` : ''}${o.sinkhornLr !== undefined ? `; Sinkhorn lr ${o.sinkhornLr}` : ''}${o.sinkhornKeep !== undefined ? `; Sinkhorn keeps its ${o.sinkhornKeep} step` : ''}. ` +
    'Barrier = max over λ of the loss above the straight line between the endpoint losses (accuracy: below). Mean ± std over seeds.\n\n' +
    markdownTable(header, body);
}
