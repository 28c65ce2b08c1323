// The time the weight costs' defaults take on one trained seed pair against the reference's
// setting (README, "The learning rate of the weight costs"): Sinkhorn-L2 at lr 1 with the best step
// for 300 and for 100 steps, and at lr 0.1 with the last step for 300, one after the other, with
// the KKT solves that fell back to least squares; and whether 100 steps return the same
// permutations as 300.
//
//   npx tsc -p tsconfig.json
//   node scripts/lr-time.mjs out/lmc-mnist/checkpoints/mnist-mlp mnist-mlp [SEED_PAIR]
import { alignModels } from '../dist/src/methods/registry.js';
import { loadSeedPair } from './seed-pair.mjs';

const { pair, setup, a, b } = await loadSeedPair('node scripts/lr-time.mjs CHECKPOINT_DIR TASK [SEED_PAIR]');
const spec = setup.model.permutationSpec();
const run = (label, options) => {
  const r = alignModels('sinkhorn-l2', { spec, a, b }, { seed: Number(pair) }, options);
  console.log(`${label}: ${r.seconds.toFixed(1)} s, ${r.steps} steps, ${r.diagnostics.lstsqFallbacks} of ${r.diagnostics.cgSolves} solves fell back to least squares`);
  return r;
};
const full = run('lr 1, best step, 300 steps (the defaults)', {});
const short = run('lr 1, best step, 100 steps', { steps: 100 });
run('lr 0.1, last step, 300 steps (the reference\'s)', { lr: 0.1, keep: 'last' });
const same = Object.keys(full.perms).every((id) => full.perms[id].every((v, i) => v === short.perms[id][i]));
console.log(`100 steps return the same permutations as 300: ${same}`);
