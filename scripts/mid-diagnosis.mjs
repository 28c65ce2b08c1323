// Why Sinkhorn-Mid fails on the 50-epoch VGG pair (README, "Linear mode connectivity", VGG): runs
// Sinkhorn-Mid on one cached seed pair of an LMC task at each τ given and prints, once per epoch,
// the soft cost the optimiser sees (the midpoint of A and the soft-permuted B on the step's batch)
// beside the hard cost (the midpoint of A and the hard-projected B on the evaluation batch), then
// the loss barrier of the final hard alignment on the test set with the task's BN handling.
// A soft cost far below the hard one means the relaxation, not the optimiser, is what fails.
// τ "width" is the weight costs' schedule (it settles at 1/ln(n + 1) after 50 steps); "anneal"
// (annealTau, `--tau anneal`) keeps decaying to a tenth of that by step 156, to see whether
// hardening the relaxation over the run closes the gap.
//
//   npx tsc -p tsconfig.json
//   node scripts/mid-diagnosis.mjs out/lmc-vgg50/checkpoints/mnist-vgg mnist-vgg 0 1,0.1,width,anneal
import { alignModels } from '../dist/src/methods/registry.js';
import { annealTau, widthTau } from '../dist/src/methods/sinkhorn-rebasin.js';
import { loadSeedPair, testBarrier } from './seed-pair.mjs';

const { task, pair, extra: [taus = '1'], setup, a, b } = await loadSeedPair('node scripts/mid-diagnosis.mjs CHECKPOINT_DIR TASK [SEED_PAIR] [TAU,…: numbers, width, anneal]');
const spec = setup.model.permutationSpec();
const stepsPerEpoch = Math.ceil(setup.train.n / setup.batchSize);
console.log(`${task} seed pair ${pair}: groups ${Object.entries(spec.perms).map(([id, n]) => `${id}=${n}`).join(' ')}; ${stepsPerEpoch} steps per epoch`);
for (const t of taus.split(',')) {
  const tau = t === 'width' ? widthTau : t === 'anneal' ? annealTau : Number(t);
  const rows = [];
  const r = alignModels('sinkhorn-mid', { spec, a, b }, { model: setup.model, data: setup.train, criterion: setup.criterion, batchSize: setup.batchSize, seed: Number(pair) }, { epochs: setup.sinkhornEpochs, tau });
  for (let e = 1; e * stepsPerEpoch <= r.log.length; e++) {
    const epoch = r.log.slice((e - 1) * stepsPerEpoch, e * stepsPerEpoch);
    const mean = (k) => epoch.reduce((s, x) => s + x[k], 0) / epoch.length;
    rows.push(`  epoch ${String(e).padStart(2)}: soft cost ${mean('cost').toFixed(4)}, hard cost ${mean('hardCost').toFixed(4)}`);
  }
  const moved = Object.fromEntries(Object.entries(r.perms).map(([id, p]) => [id, p.filter((v, i) => v !== i).length]));
  console.log(`τ = ${t}:\n${rows.join('\n')}\n  loss barrier ${testBarrier(setup, a, r.aligned).toFixed(4)} (test, BN ${setup.bn}); units moved ${JSON.stringify(moved)}; ${r.seconds.toFixed(0)} s`);
}
