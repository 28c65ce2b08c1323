// How well the weight-matching objective ⟨A, π(B)⟩ tracks the loss barrier on one cached seed pair
// (README, "Transformers: linear mode connectivity"): weight matching with visiting-order seeds
// 0–5 (objective, residual-stream units moved, barrier), STE's alignment scored on the same
// objective, and Sinkhorn-L2 — which optimises that objective through its relaxation — at its
// defaults, with 900 steps and from a noisy start. Barriers on the first 2000 test samples at 13
// points of the path. The numbers the README gives "before the change" are this script run at a
// commit before weight matching's first sweep took the groups with the most tensors first
// (2d1853e: copy the script there and build).
//
//   npx tsc -p tsconfig.json
//   node scripts/wm-objective.mjs out/lmc-tf/checkpoints/mnist-vit mnist-vit [SEED_PAIR]
import { alignModels } from '../dist/src/methods/registry.js';
import { matchingPlan } from '../dist/src/methods/weight-matching.js';
import { loadSeedPair, testBarrier, weightObjective } from './seed-pair.mjs';

const { task, pair, setup, a, b } = await loadSeedPair('node scripts/wm-objective.mjs CHECKPOINT_DIR TASK [SEED_PAIR]', { testLimit: 2000 });
const spec = setup.model.permutationSpec();
const objective = (aligned) => weightObjective(spec, a, aligned);
// The residual stream: the group with the most tensors on its axes.
const { ids, byPerm } = matchingPlan(spec);
const residual = ids.reduce((x, y) => (new Set(byPerm[y].map((e) => e.name)).size > new Set(byPerm[x].map((e) => e.name)).size ? y : x));
const report = (label, r) => {
  const moved = r.perms[residual].filter((v, i) => v !== i).length;
  console.log(`  ${label}: objective ${objective(r.aligned).toFixed(2)}, ${residual} moved ${moved}/${spec.perms[residual]}, loss barrier ${testBarrier(setup, a, r.aligned, 13).toFixed(4)}`);
};
console.log(`${task} seed pair ${pair}; naive objective ${objective(b).toFixed(2)}, loss barrier ${testBarrier(setup, a, b, 13).toFixed(4)}`);
for (let seed = 0; seed < 6; seed++) report(`weight matching, order seed ${seed}`, alignModels('wm', { spec, a, b }, { seed }));
const data = { model: setup.model, data: setup.train, criterion: setup.criterion, batchSize: setup.batchSize, seed: Number(pair) };
report(`STE (${setup.steEpochs} epoch)`, alignModels('ste', { spec, a, b }, data, { epochs: setup.steEpochs }));
// lr 0.1 and the last step: the defaults before lr 1 / keep 'best' (the README's figures); then the defaults.
const before = { lr: 0.1, keep: 'last' };
for (const [label, o] of [['lr 0.1, last step', before], ['lr 0.1, last step, 900 steps', { ...before, steps: 900 }], ['lr 0.1, last step, noisy start', { ...before, init: 'noisy' }], ['defaults', {}]]) {
  report(`Sinkhorn-L2, ${label}`, alignModels('sinkhorn-l2', { spec, a, b }, { seed: 0 }, o));
}
