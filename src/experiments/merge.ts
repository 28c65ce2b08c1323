/**
 * Merging many models, measured: for each task and seed, train N models, then for n = 2…N merge
 * the first n with every merge variant (naive averaging, align-to-first with WM and Sinkhorn-L2,
 * and every other strategy of the merge-strategy table), beside the individual models' mean and
 * the inputs' output ensemble (the ceiling). Merged models of BatchNorm tasks get re-estimated
 * statistics. At n = N each order-dependent variant is also run on rotated input orders (model k
 * first, seed k), to show how much the merged accuracy depends on the order.
 */
import { InputError } from '../errors.js';
import { join } from 'node:path';
import { ensureDirSync, writeFileAtomicSync } from '../io/atomic.js';
import { MERGE_STRATEGY_NAMES, mergeModels, type FirstOptions, type MergeStrategyName, type MergeStrategyOptions } from '../methods/merge.js';
import type { MethodName } from '../methods/registry.js';
import type { SinkhornKeep } from '../methods/sinkhorn-rebasin.js';
import { fmtMeanStd, markdownTable, meanStd } from '../report/markdown.js';
import { Progress } from '../report/progress.js';
import { linePlots, type Panel } from '../report/svg.js';
import { splitState, type Params } from '../state/params.js';
import { hasBatchNorm } from '../training/common.js';
import { evaluate, evaluateEnsemble, reestimateBatchNorm } from '../training/evaluate.js';
import { endpoint, taskSetup, type TaskSetup } from './lmc.js';

/** The classification tasks of the LMC experiment (the setups and cached models are shared). */
export const MERGE_TASKS = ['mnist-mlp', 'fashion-mlp', 'mnist-vgg'] as const;
export type MergeTask = (typeof MERGE_TASKS)[number];

/** The pairwise methods `first` is measured with: no alignment (naive averaging), WM and Sinkhorn-L2. */
export const FIRST_METHODS: readonly MethodName[] = ['naive', 'wm', 'sinkhorn-l2'];

export interface MergeVariant {
  name: string;
  strategy: MergeStrategyName;
  options: MergeStrategyOptions<MergeStrategyName>;
  /** Whether the result can depend on the order of the models (naive averaging cannot). */
  orderDependent: boolean;
}

/** Every variant measured: `first` with each of FIRST_METHODS, then every other strategy of the table with its defaults. */
export const MERGE_VARIANTS: readonly MergeVariant[] = MERGE_STRATEGY_NAMES.flatMap((strategy): MergeVariant[] => strategy === 'first'
  ? FIRST_METHODS.map((method) => ({ name: method === 'naive' ? 'naive' : `first/${method}`, strategy, options: { method }, orderDependent: method !== 'naive' }))
  : [{ name: strategy, strategy, options: {}, orderDependent: true }]);
export const MERGE_VARIANT_NAMES = MERGE_VARIANTS.map((v) => v.name);

export interface MergeExperimentOptions {
  tasks: MergeTask[];
  /** N: models trained per task and seed (≥ 2). */
  models: number;
  seeds: number;
  /** Variant names (default: all of MERGE_VARIANTS). */
  variants?: string[];
  /** Input orders at n = N for the order spread (1: none). Default 3. */
  orders?: number;
  outDir: string;
  epochs?: number;
  testLimit?: number;
  dataDir?: string;
  retrain?: boolean;
  quiet?: boolean;
  /** AdamW lr, kept step and step cap of first/sinkhorn-l2's alignments (default: the weight costs' defaults). */
  sinkhornL2?: { lr?: number; keep?: SinkhornKeep; steps?: number };
}

export interface Figures {
  loss: number;
  accuracy: number;
}

export interface MergeRow extends Figures {
  task: string;
  seed: number;
  n: number;
  /** A variant name, or 'individual mean' / 'ensemble'. */
  variant: string;
  seconds: number;
}

export interface OrderRow extends Figures {
  task: string;
  seed: number;
  n: number;
  variant: string;
  /** Models rotated by `order` (model `order` first), strategy seed `order`. */
  order: number;
}

export interface MergeExperimentReport {
  rows: MergeRow[];
  orders: OrderRow[];
  trainSeconds: number;
  files: string[];
}

export const INDIVIDUAL = 'individual mean';
export const ENSEMBLE = 'ensemble';

export async function runMergeExperiment(o: MergeExperimentOptions): Promise<MergeExperimentReport> {
  if (!(Number.isInteger(o.models) && o.models >= 2)) throw new InputError(`merge experiment: models must be an integer ≥ 2, got ${o.models}`);
  if (!(Number.isInteger(o.seeds) && o.seeds >= 1)) throw new InputError(`merge experiment: seeds must be an integer ≥ 1, got ${o.seeds}`);
  const orders = o.orders ?? 3;
  if (!(Number.isInteger(orders) && orders >= 1 && orders <= o.models)) throw new InputError(`merge experiment: orders must be an integer in [1, models], got ${orders}`);
  const variants = (o.variants ?? MERGE_VARIANT_NAMES).map((name) => {
    const v = MERGE_VARIANTS.find((x) => x.name === name);
    if (!v) throw new InputError(`merge experiment: unknown variant "${name}" (have ${MERGE_VARIANT_NAMES.join(', ')})`);
    return v;
  });
  ensureDirSync(o.outDir);
  const rows: MergeRow[] = [];
  const orderRows: OrderRow[] = [];
  let trainSeconds = 0;
  const spreadRuns = variants.filter((v) => v.orderDependent).length * (orders - 1);
  const progress = new Progress({ label: 'merge experiment', total: o.tasks.length * o.seeds * ((o.models - 1) * variants.length + spreadRuns), quiet: o.quiet });
  for (const task of o.tasks) {
    const setup = taskSetup(task, { epochs: o.epochs, testLimit: o.testLimit, dataDir: o.dataDir });
    const dir = join(o.outDir, 'checkpoints', task);
    ensureDirSync(dir);
    for (let seed = 0; seed < o.seeds; seed++) {
      const models: Params[] = [];
      for (let i = 0; i < o.models; i++) {
        // Named by training seed, so a run with more models or seeds reuses the ones trained before.
        const trainSeed = 100 * seed + i + 1;
        const e = await endpoint(setup, { model: setup.model, path: join(dir, `model-seed${trainSeed}.safetensors`), seed: trainSeed, retrain: Boolean(o.retrain), label: `${task} model ${i + 1}`, quiet: Boolean(o.quiet) });
        trainSeconds += e.seconds;
        models.push(e.state);
      }
      const individual = models.map((m) => evalState(setup, m));
      for (let n = 2; n <= o.models; n++) {
        const inputs = models.slice(0, n);
        const mean = (k: keyof Figures) => individual.slice(0, n).reduce((s, r) => s + r[k], 0) / n;
        rows.push({ task, seed, n, variant: INDIVIDUAL, loss: mean('loss'), accuracy: mean('accuracy'), seconds: 0 });
        rows.push({ task, seed, n, variant: ENSEMBLE, ...ensembleOf(setup, inputs), seconds: 0 });
        for (const v of variants) {
          progress.tick(0, `${task} seed ${seed} n ${n}: ${v.name}…`);
          const r = runVariant(setup, v, inputs, seed, o.sinkhornL2);
          rows.push({ task, seed, n, variant: v.name, ...r });
          progress.tick(1, `${task} seed ${seed} n ${n}: ${v.name} ${(100 * r.accuracy).toFixed(2)}%`);
        }
      }
      // Order spread at n = N: order 0 is the run above.
      for (const v of variants.filter((x) => x.orderDependent)) {
        const first = rows.find((r) => r.task === task && r.seed === seed && r.n === o.models && r.variant === v.name)!;
        orderRows.push({ task, seed, n: o.models, variant: v.name, order: 0, loss: first.loss, accuracy: first.accuracy });
        for (let order = 1; order < orders; order++) {
          const rotated = [...models.slice(order), ...models.slice(0, order)];
          const r = runVariant(setup, v, rotated, order, o.sinkhornL2);
          orderRows.push({ task, seed, n: o.models, variant: v.name, order, loss: r.loss, accuracy: r.accuracy });
          progress.tick(1, `${task} seed ${seed}: ${v.name} order ${order} ${(100 * r.accuracy).toFixed(2)}%`);
        }
      }
    }
  }
  progress.finish();
  const files = writeMergeOutputs(o, variants.map((v) => v.name), rows, orderRows);
  return { rows, orders: orderRows, trainSeconds, files };
}

function runVariant(setup: TaskSetup, v: MergeVariant, models: Params[], seed: number, sinkhornL2: MergeExperimentOptions['sinkhornL2']): Figures & { seconds: number } {
  const sinkhorn = v.strategy === 'first' && (v.options as FirstOptions).method === 'sinkhorn-l2';
  const tuning = Object.fromEntries(Object.entries(sinkhornL2 ?? {}).filter(([, x]) => x !== undefined));
  const options = sinkhorn ? { ...v.options, methodOptions: tuning } : v.options;
  const r = mergeModels(v.strategy, { spec: setup.model.permutationSpec(), models }, {
    model: setup.model, data: setup.train, criterion: setup.criterion, batchSize: setup.batchSize, seed,
  }, options);
  return { ...evalState(setup, r.merged, true), seconds: r.seconds };
}

/** Test loss and accuracy; a merged model of a BatchNorm task gets statistics re-estimated on the training data. */
function evalState(setup: TaskSetup, state: Params, merged = false): Figures {
  const { params, buffers } = splitState(state);
  const bn = merged && hasBatchNorm(setup.model) ? reestimateBatchNorm(setup.model, params, setup.train, { batchSize: setup.batchSize }) : buffers;
  const r = evaluate(setup.model, { params, buffers: bn }, setup.test, { criterion: setup.criterion, batchSize: setup.batchSize });
  return { loss: r.loss, accuracy: r.accuracy! };
}

function ensembleOf(setup: TaskSetup, models: Params[]): Figures {
  const r = evaluateEnsemble(models.map((m) => ({ model: setup.model, ...splitState(m) })), setup.test, { criterion: setup.criterion, batchSize: setup.batchSize });
  return { loss: r.loss, accuracy: r.accuracy! };
}

function writeMergeOutputs(o: MergeExperimentOptions, variants: string[], rows: MergeRow[], orders: OrderRow[]): string[] {
  const files: string[] = [];
  const put = (name: string, text: string) => {
    const p = join(o.outDir, name);
    writeFileAtomicSync(p, text);
    files.push(p);
  };
  put('merge.json', JSON.stringify({ options: o, rows, orders }, null, 1) + '\n');
  put('merge.md', mergeMarkdown(o, variants, rows, orders));
  for (const task of o.tasks) put(`merge-${task}.svg`, mergePlot(task, [INDIVIDUAL, ...variants, ENSEMBLE], rows.filter((r) => r.task === task)));
  return files;
}

/** Test accuracy against n, one line per variant (mean over seeds). */
export function mergePlot(task: string, variants: string[], rows: MergeRow[]): string {
  const ns = [...new Set(rows.map((r) => r.n))].sort((a, b) => a - b);
  const panel: Panel = {
    title: `${task}: merging n models`, xLabel: 'n (models merged)', yLabel: 'test accuracy',
    series: variants.map((v) => ({
      label: v, dashed: v === INDIVIDUAL || v === ENSEMBLE,
      x: ns, y: ns.map((n) => meanStd(rows.filter((r) => r.n === n && r.variant === v).map((r) => r.accuracy)).mean),
    })),
  };
  return linePlots([panel], { cols: 1 });
}

/** Percentages with two decimals (a mean ± std over seeds when there are several). */
function pct(xs: number[]): string {
  const { mean, std } = meanStd(xs.map((x) => 100 * x));
  return xs.length > 1 ? `${mean.toFixed(2)} ± ${std.toFixed(2)}` : mean.toFixed(2);
}

export function mergeMarkdown(o: MergeExperimentOptions, variants: string[], rows: MergeRow[], orders: OrderRow[]): string {
  const columns = [INDIVIDUAL, ...variants, ENSEMBLE];
  let md = `# Merging many models\n\n${o.models} models per task and seed, ${o.seeds} seed(s); test split${o.testLimit ? ` (first ${o.testLimit} samples)` : ''}. ` +
    `Mean ± std over seeds. "${INDIVIDUAL}": the mean of the n inputs; "${ENSEMBLE}": their averaged probabilities (the ceiling). ` +
    'Merged models of BatchNorm tasks have re-estimated statistics.' +
    `${o.sinkhornL2?.lr !== undefined ? ` first/sinkhorn-l2 at lr ${o.sinkhornL2.lr}.` : ''}${o.sinkhornL2?.keep !== undefined ? ` first/sinkhorn-l2 keeps its ${o.sinkhornL2.keep} step.` : ''}\n`;
  for (const task of o.tasks) {
    const tr = rows.filter((r) => r.task === task);
    const ns = [...new Set(tr.map((r) => r.n))].sort((a, b) => a - b);
    for (const [what, key, fmt] of [['accuracy (%)', 'accuracy', pct], ['loss', 'loss', (xs: number[]) => fmtMeanStd(xs)]] as const) {
      md += `\n## ${task}: test ${what}\n\n` + markdownTable(['n', ...columns], ns.map((n) => [n, ...columns.map((v) => fmt(tr.filter((r) => r.n === n && r.variant === v).map((r) => r[key])))]));
    }
    const or = orders.filter((r) => r.task === task);
    if (or.length && new Set(or.map((r) => r.order)).size > 1) {
      const orderCount = new Set(or.map((r) => r.order)).size;
      md += `\n## ${task}: order dependence at n = ${o.models} (${orderCount} orders: model k first, seed k)\n\n` +
        markdownTable(['variant', 'accuracy (%) over orders and seeds', 'std over orders (mean over seeds)', 'range over orders (max − min, mean over seeds)'],
          [...new Set(or.map((r) => r.variant))].map((v) => {
            const vr = or.filter((r) => r.variant === v);
            const perSeed = [...new Set(vr.map((r) => r.seed))].map((s) => vr.filter((r) => r.seed === s).map((r) => 100 * r.accuracy));
            const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
            return [v, pct(vr.map((r) => r.accuracy)), avg(perSeed.map((xs) => meanStd(xs).std)).toFixed(2), avg(perSeed.map((xs) => Math.max(...xs) - Math.min(...xs))).toFixed(2)];
          }));
    }
  }
  return md;
}
