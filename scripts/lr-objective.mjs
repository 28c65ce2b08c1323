// How well Sinkhorn-L2 optimises its own objective on one trained seed pair at lr 0.1 (the
// reference's) and lr 1 (the default), returning the last step or the step with the lowest hard
// cost (README, "The learning rate of the weight costs"): the weight objective ⟨A, π(B)⟩ and the
// test loss barrier (25 points, as the LMC experiment) of weight matching and of each Sinkhorn-L2
// run (with where its hard cost was lowest), all with the pair's seed as the LMC experiment uses it.
//
//   npx tsc -p tsconfig.json
//   node scripts/lr-objective.mjs out/lmc-mnist/checkpoints/mnist-mlp mnist-mlp [SEED_PAIR] [LR…]
import { alignModels } from '../dist/src/methods/registry.js';
import { SINKHORN_KEEP } from '../dist/src/methods/sinkhorn-rebasin.js';
import { loadSeedPair, testBarrier, weightObjective } from './seed-pair.mjs';

const { pair, extra, setup, a, b } = await loadSeedPair('node scripts/lr-objective.mjs CHECKPOINT_DIR TASK [SEED_PAIR] [LR…]');
const spec = setup.model.permutationSpec();
const objective = (aligned) => weightObjective(spec, a, aligned);
// The hard L2 cost along the run: its lowest point and where it ends.
const path = (log) => {
  const best = log.reduce((x, y) => (y.hardCost < x.hardCost ? y : x));
  return `; hard cost lowest ${best.hardCost.toExponential(3)} at step ${best.step}, last ${log.at(-1).hardCost.toExponential(3)}`;
};
const report = (label, r) => console.log(`${label}: objective ${objective(r.aligned).toFixed(2)}, loss barrier ${testBarrier(setup, a, r.aligned).toFixed(4)}${r.method.startsWith('sinkhorn') ? path(r.log) : ''}`);
const seed = Number(pair);
console.log(`seed pair ${pair}; naive objective ${objective(b).toFixed(2)}`);
report('weight matching', alignModels('wm', { spec, a, b }, { seed }));
for (const lr of (extra.length ? extra : ['0.1', '1']).map(Number)) {
  for (const keep of SINKHORN_KEEP) report(`Sinkhorn-L2, lr ${lr}, ${keep} step`, alignModels('sinkhorn-l2', { spec, a, b }, { seed }, { lr, keep }));
}
