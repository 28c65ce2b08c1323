// The time the weight costs' defaults take on one trained seed pair against the reference's
// setting (README, "The learning rate of the weight costs"): Sinkhorn-L2 at lr 1 with the best step
// for 300 and for 100 steps, and at lr 0.1 with the last step for 300, interleaved over ROUNDS
// rounds (default 3), medians, with the KKT solves that fell back to least squares; and whether
// 100 steps return the same permutations as 300.
//
//   npx tsc -p tsconfig.json
//   OPENBLAS_NUM_THREADS=1 node scripts/lr-time.mjs out/lmc-mnist/checkpoints/mnist-mlp mnist-mlp [SEED_PAIR] [ROUNDS]
import { alignModels } from '../dist/src/methods/registry.js';
import { loadSeedPair } from './seed-pair.mjs';

const { pair, extra, setup, a, b } = await loadSeedPair('node scripts/lr-time.mjs CHECKPOINT_DIR TASK [SEED_PAIR] [ROUNDS]');
const rounds = Number(extra[0] ?? 3);
const spec = setup.model.permutationSpec();
const settings = [
  ['lr 1, best step, 300 steps (the defaults)', {}],
  ['lr 1, best step, 100 steps', { steps: 100 }],
  ["lr 0.1, last step, 300 steps (the reference's)", { lr: 0.1, keep: 'last' }],
];
const seconds = settings.map(() => []);
const last = [];
for (let round = 0; round < rounds; round++) {
  settings.forEach(([, options], k) => {
    const r = alignModels('sinkhorn-l2', { spec, a, b }, { seed: Number(pair) }, options);
    seconds[k].push(r.seconds);
    last[k] = r;
  });
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
settings.forEach(([label], k) => {
  const d = last[k].diagnostics;
  console.log(`${label}: median ${median(seconds[k]).toFixed(1)} s of ${rounds} (${seconds[k].map((s) => s.toFixed(1)).join(', ')}), ${last[k].steps} steps, ${d.lstsqFallbacks} of ${d.cgSolves} solves fell back to least squares`);
});
const [full, short] = last;
const same = Object.keys(full.perms).every((id) => full.perms[id].every((v, i) => v === short.perms[id][i]));
console.log(`100 steps return the same permutations as 300: ${same}`);
