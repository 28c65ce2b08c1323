/**
 * Permutation recovery (the paper's first experiment, method.md §5.1): take a randomly initialised
 * model A, build B = π*(A) with a random hard permutation π*, and ask each method to align B back
 * to A. Success is exact recovery: the found permutation equals π*⁻¹ (hard weight cost 0).
 */
import { InputError } from '../errors.js';
import { join } from 'node:path';
import { Rng } from '../core/random.js';
import { noGrad } from '../core/tensor.js';
import { ensureDirSync, writeFileAtomicSync } from '../io/atomic.js';
import { weightCost } from '../methods/costs.js';
import { alignModels, BUILTIN_METHOD_NAMES, METHODS, type MethodName } from '../methods/registry.js';
import { describeTau, WEIGHT_COST_DEFAULTS, type TauSchedule } from '../methods/sinkhorn-rebasin.js';
import { mlp, resnet20, vgg, type Model } from '../models/index.js';
import { applyHard, invertPermutation, randomPerms, type Perms } from '../permutation/apply.js';
import type { Params } from '../state/params.js';
import { fmtMeanStd, markdownTable } from '../report/markdown.js';
import { Progress } from '../report/progress.js';
import { linePlots, type Series } from '../report/svg.js';

export const RECOVERY_MODELS = ['mlp2', 'mlp4', 'mlp8', 'mlp16', 'vgg11', 'vgg13', 'vgg16', 'vgg19'] as const;
/** The methods that align from the weights alone. */
export const RECOVERY_METHODS: readonly MethodName[] = BUILTIN_METHOD_NAMES.filter((m) => !METHODS[m].needsData);
/** The paper's comparison: weight matching against Sinkhorn with the L2 cost. */
export const RECOVERY_DEFAULT_METHODS: readonly MethodName[] = ['wm', 'sinkhorn-l2'];

export interface RecoveryOptions {
  models: string[];
  methods: MethodName[];
  seeds: number;
  outDir: string;
  /**
   * Widths swept, each the channel count of the first hidden layer: an MLP's hidden width, a VGG's
   * width multiplier width/64 (64 = the standard 64…512 channels), ResNet-20's width/16.
   */
  widths: number[];
  /** Sinkhorn τ, fixed or a schedule (default: the weight costs' schedule, WEIGHT_COST_DEFAULTS.tau). */
  tau?: number | TauSchedule;
  lr?: number;
  steps?: number;
  quiet?: boolean;
}

export interface RecoveryRow {
  model: string;
  width: number;
  method: string;
  seed: number;
  perm: string;
  /** Fraction of rows of this permutation recovered exactly (0 to 1). */
  recovered: number;
  steps: number;
  seconds: number;
  /** Mean squared weight difference between A and the aligned B under the hard permutations. */
  hardCost: number;
}

export interface RecoveryReport {
  rows: RecoveryRow[];
  /** Hard L2 cost after each step, per model, method and seed. */
  curves: { model: string; width: number; method: string; seed: number; steps: number[]; cost: number[] }[];
  files: string[];
}

/**
 * The model named `name` with first hidden layer `width` wide: mlpN (N hidden layers, 784 inputs,
 * 10 outputs; suffixes -tanh, -in<K> and -out<K> change the activation and the input/output
 * sizes, e.g. mlp2-tanh-in1-out1), vgg11/13/16/19 (32×32×3 input) or resnet20.
 */
export function recoveryModel(name: string, width: number): Model {
  if (!(Number.isInteger(width) && width >= 1)) throw new InputError(`recovery: width must be an integer ≥ 1, got ${width}`);
  const m = /^mlp(\d+)(-tanh)?(?:-in(\d+))?(?:-out(\d+))?$/.exec(name);
  if (m) {
    const depth = Number(m[1]);
    if (!(depth >= 1 && depth <= 64)) throw new Error(`recovery: ${name}: hidden layer count must be 1–64`);
    const io = [m[3], m[4]].map((k, i) => (k === undefined ? [784, 10][i] : Number(k)));
    return mlp({ sizes: [io[0], ...Array<number>(depth).fill(width), io[1]], activation: m[2] ? 'tanh' : 'relu' });
  }
  const v = /^vgg(11|13|16|19)$/.exec(name);
  if (v) return vgg({ depth: Number(v[1]) as 11 | 13 | 16 | 19, batchNorm: false, inputShape: [3, 32, 32], numClasses: 10, widthMultiplier: width / 64 });
  if (name === 'resnet20') return resnet20({ widthMultiplier: width / 16 });
  throw new InputError(`recovery: unknown model "${name}" (use mlpN[-tanh][-inK][-outK] for N hidden layers, vgg11/13/16/19 or resnet20)`);
}


/** The recovery task of one seed: A = `model` initialised from the seed, B = A under random permutations `planted` drawn after it. */
export function plantedPair(model: Model, seed: number): { a: Params; b: Params; planted: Perms } {
  const rng = new Rng(seed);
  const { params, buffers } = model.init(rng);
  const a: Params = new Map([...params, ...buffers]);
  const spec = model.permutationSpec();
  const planted = randomPerms(spec, rng);
  return { a, b: noGrad(() => applyHard(spec, a, planted)), planted };
}

export function runRecovery(opts: RecoveryOptions): RecoveryReport {
  if (!(Number.isInteger(opts.seeds) && opts.seeds >= 1)) throw new Error(`recovery: --seeds must be an integer ≥ 1, got ${opts.seeds}`);
  const rows: RecoveryRow[] = [];
  const curves: RecoveryReport['curves'] = [];
  const progress = new Progress({ label: 'recovery', total: opts.models.length * opts.widths.length * opts.seeds * opts.methods.length, quiet: opts.quiet });
  for (const name of opts.models) for (const width of opts.widths) {
    const model = recoveryModel(name, width);
    const spec = model.permutationSpec();
    for (let seed = 0; seed < opts.seeds; seed++) {
      const { a, b, planted } = plantedPair(model, seed);
      const l2 = (aligned: Params) => noGrad(() => weightCost('l2', a, aligned).item());
      for (const method of opts.methods) {
        if (METHODS[method].needsData) throw new InputError(`recovery: method ${method} needs training data; have ${RECOVERY_METHODS.join(', ')}`);
        // Every curve plots the hard L2 cost; τ, lr and steps are read by the Sinkhorn methods.
        const result = alignModels(method, { spec, a, b }, {
          seed,
          onStep: (e) => { progress.tick(0, `${name} width ${width} seed ${seed} ${method} step ${e.step} cost ${e.hardCost?.toExponential(2)}`); },
        }, { hardCost: l2, tau: opts.tau, lr: opts.lr, steps: opts.steps });
        const hardCost = l2(result.aligned);
        for (const [perm, p] of Object.entries(planted)) {
          const expected = invertPermutation(p);
          let ok = 0;
          for (let i = 0; i < expected.length; i++) if (result.perms[perm][i] === expected[i]) ok++;
          rows.push({ model: name, width, method, seed, perm, recovered: ok / expected.length, steps: result.steps, seconds: result.seconds, hardCost });
        }
        const initial = l2(b);
        curves.push({
          model: name, width, method, seed,
          steps: [0, ...result.log.map((e) => e.step)],
          cost: [initial, ...result.log.map((e) => e.hardCost ?? NaN)],
        });
        progress.tick(1, `${name} width ${width} seed ${seed} ${method}: ${result.steps} steps, hard cost ${hardCost.toExponential(2)}`);
      }
    }
  }
  progress.finish();
  const files = writeRecoveryOutputs(opts, rows, curves);
  return { rows, curves, files };
}

function writeRecoveryOutputs(opts: RecoveryOptions, rows: RecoveryRow[], curves: RecoveryReport['curves']): string[] {
  const files: string[] = [];
  ensureDirSync(opts.outDir);
  const put = (name: string, text: string) => {
    const p = join(opts.outDir, name);
    writeFileAtomicSync(p, text);
    files.push(p);
  };
  put('recovery.json', JSON.stringify({ options: opts, rows }, null, 1) + '\n');
  put('recovery.md', recoveryMarkdown(opts, rows));
  for (const model of opts.models) {
    const panels = opts.widths.map((width) => {
      const series: Series[] = [];
      opts.methods.forEach((method, mi) => {
        for (const c of curves.filter((k) => k.model === model && k.width === width && k.method === method)) {
          series.push({ label: `${method} seed ${c.seed}`, x: c.steps, y: c.cost, color: ['#1f77b4', '#d62728', '#2ca02c'][mi % 3], dashed: c.seed > 0 });
        }
      });
      return { title: `${model}, width ${width}: recovery of a planted permutation`, xLabel: 'step (WM: sweep)', yLabel: 'hard L2 weight cost', series };
    });
    put(`cost-${model}.svg`, linePlots(panels, { cols: Math.min(2, panels.length), panelWidth: 640, panelHeight: 360 }));
  }
  return files;
}

export function recoveryMarkdown(opts: RecoveryOptions, rows: RecoveryRow[]): string {
  const header = ['model', 'width', 'method', 'recovered (mean over perms)', 'exact runs', 'steps', 'seconds', 'final hard cost'];
  const body: (string | number)[][] = [];
  for (const model of opts.models) for (const width of opts.widths) {
    for (const method of opts.methods) {
      const rs = rows.filter((r) => r.model === model && r.width === width && r.method === method);
      if (!rs.length) continue;
      const seeds = [...new Set(rs.map((r) => r.seed))];
      const perSeed = seeds.map((s) => rs.filter((r) => r.seed === s));
      const recovered = perSeed.map((g) => g.reduce((t, r) => t + r.recovered, 0) / g.length);
      const exact = perSeed.filter((g) => g.every((r) => r.recovered === 1)).length;
      body.push([
        model, width, method,
        fmtMeanStd(recovered.map((v) => v * 100), 4) + ' %',
        `${exact}/${seeds.length}`,
        fmtMeanStd(perSeed.map((g) => g[0].steps), 3),
        fmtMeanStd(perSeed.map((g) => g[0].seconds), 3),
        fmtMeanStd(perSeed.map((g) => g[0].hardCost), 3),
      ]);
    }
  }
  return `# Permutation recovery\n\nWidth = first hidden layer: MLP 784-width×N-10 (or -inK/-outK sizes), VGG ×width/64 and ResNet-20 ×width/16 on 32×32×3 inputs; random init; ${opts.seeds} seed(s). ` +
    `Sinkhorn-L2: ${describeTau(opts.tau ?? WEIGHT_COST_DEFAULTS.tau)}, lr = ${opts.lr ?? WEIGHT_COST_DEFAULTS.lr}, at most ${opts.steps ?? WEIGHT_COST_DEFAULTS.steps} steps. Mean ± std over seeds.\n\n` +
    markdownTable(header, body);
}
