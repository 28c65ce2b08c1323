/**
 * End-to-end re-basin timings on the reference's MNIST LMC setup (../shared/reference/data.md):
 * MLP 784-512-512-10, first 10k MNIST training images split 9000/1000 (seed 1), batch 1000.
 * With --vs-torch the same workloads run in PyTorch (bench/torch_ref.py --rebasin) in this run.
 */
import { barrier, interpolationCurve } from '../src/analysis/lmc.js';
import { loadMnist, splitTrainVal } from '../src/data/index.js';
import { alignModels } from '../src/methods/registry.js';
import { REFERENCE_SINKHORN } from '../src/methods/sinkhorn-rebasin.js';
import { mlp, REFERENCE_DROPOUT_B } from '../src/models/index.js';
import { mergeState } from '../src/state/params.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import { Rng } from '../src/core/random.js';
import { trainModel } from '../src/training/train.js';
import type { BenchContext, BenchRow } from './harness.js';
import type { TorchFigures } from './training.js';

const LABEL = 'reference PyTorch code';

export async function run(ctx: BenchContext, torch?: TorchFigures): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const t = torch?.rebasin;
  const anchor = (key: keyof NonNullable<TorchFigures['rebasin']>, quoted: number) =>
    t?.[key] !== undefined
      ? { anchor: t[key]!, anchorSource: 'measured' as const, anchorLabel: 'PyTorch 1.13, same workload' }
      : { anchor: quoted, anchorSource: 'quoted' as const, anchorLabel: LABEL };

  const model = mlp({ sizes: [784, 512, 512, 10] });
  const full = loadMnist('train', { limit: 10000, layout: 'flat' });
  const { train, val } = splitTrainVal(full, 1000, 1);
  const test = loadMnist('test', { layout: 'flat' });
  const epochs = ctx.quick ? 5 : 50;

  let t0 = performance.now();
  const A = trainModel({ model, data: train, epochs, batchSize: 1000, lr: 1e-3, seed: 1, criterion: 'ce' });
  const B = trainModel({ model, data: train, epochs, batchSize: 1000, lr: 1e-3, seed: 2, criterion: 'ce' });
  const trainSec = (performance.now() - t0) / 1000;
  rows.push({ section: 'rebasin', name: `train 2 MNIST MLPs, ${epochs} epochs each`, value: trainSec, unit: 's', higherIsBetter: false,
    ...anchor('trainTwoSec', ctx.quick ? 4.7 : 47), goal: '≤ 0.5× reference', note: ctx.quick ? 'quick: 5 epochs, quoted anchor scaled from 50' : undefined });

  // The reference's exact setup: B with dropout 0.25, both validated after every epoch.
  t0 = performance.now();
  trainModel({ model, data: train, val, epochs, batchSize: 1000, lr: 1e-3, seed: 1, criterion: 'ce' });
  trainModel({ model: mlp({ sizes: [784, 512, 512, 10], dropout: REFERENCE_DROPOUT_B }), data: train, val, epochs, batchSize: 1000, lr: 1e-3, seed: 2, criterion: 'ce' });
  rows.push({ section: 'rebasin', name: `train 2 MNIST MLPs, ${epochs} epochs each, B with dropout 0.25, per-epoch validation`,
    value: (performance.now() - t0) / 1000, unit: 's', higherIsBetter: false,
    anchor: ctx.quick ? 4.7 : 47, anchorSource: 'quoted', anchorLabel: LABEL, goal: '≤ 0.5× reference' });

  const a = mergeState(A.params, A.buffers);
  const b = mergeState(B.params, B.buffers);
  const spec = model.permutationSpec();

  t0 = performance.now();
  alignModels('wm', { spec, a, b }, { seed: 0 });
  rows.push({ section: 'rebasin', name: 'weight matching, MNIST MLP', value: (performance.now() - t0) / 1000, unit: 's', higherIsBetter: false, ...anchor('wmSec', 0.35) });

  const sinkEpochs = ctx.quick ? 2 : 20;
  t0 = performance.now();
  const mid = alignModels('sinkhorn-mid', { spec, a, b }, { model, data: train, batchSize: 1000, seed: 0 }, { epochs: sinkEpochs });
  rows.push({ section: 'rebasin', name: `Sinkhorn-Mid, ${sinkEpochs} epochs (${mid.steps} steps)`, value: (performance.now() - t0) / 1000, unit: 's', higherIsBetter: false,
    ...anchor('midSec', ctx.quick ? 10.2 : 101.5), goal: '≤ 0.5× reference', note: ctx.quick ? 'quick: 2 epochs, quoted anchor scaled from 20' : undefined });

  // Sinkhorn-L2, 50 steps at τ = 1 and lr 0.1 on a planted permutation of A (the reference's recovery setup).
  const planted = applyHard(spec, a, randomPerms(spec, new Rng(3)));
  t0 = performance.now();
  const l2 = alignModels('sinkhorn-l2', { spec, a, b: planted }, {}, { tau: REFERENCE_SINKHORN.tau, lr: REFERENCE_SINKHORN.lr, keep: REFERENCE_SINKHORN.keep, steps: ctx.quick ? 10 : 50, stopAtZero: false });
  rows.push({ section: 'rebasin', name: `Sinkhorn-L2, ${l2.steps} steps at width 512 (τ = 1)`, value: (performance.now() - t0) / 1000, unit: 's', higherIsBetter: false,
    ...anchor('l2Sec', ctx.quick ? 4.4 : 22) });

  t0 = performance.now();
  for (const method of ['naive', 'wm', 'sinkhorn-mid', 'sinkhorn-l2'] as const) {
    const aligned = method === 'naive' ? b : method === 'wm' ? alignModels('wm', { spec, a, b }).aligned : method === 'sinkhorn-mid' ? mid.aligned : l2.aligned;
    barrier(interpolationCurve({ model, a, b: aligned, data: test, criterion: 'ce', points: 25 }));
  }
  rows.push({ section: 'rebasin', name: 'LMC sweep: 4 methods × 25 λ on the 10k test set', value: (performance.now() - t0) / 1000, unit: 's', higherIsBetter: false, ...anchor('lmcSweepSec', 15) });
  return rows;
}
