// Moving attention heads or holding them fixed, on one trained pair of an LMC task (README,
// "Transformers: linear mode connectivity"): weight matching with visiting-order seeds 0, 1, 2 and
// activation matching with the correlation statistic, each with the derived spec and with
// fixBlocks(spec); prints the matching objective, the share of heads/head dimensions moved and the
// loss barrier on the task's test set.
//
//   npx tsc -p tsconfig.json
//   node scripts/heads-ablation.mjs out/lmc-tf/checkpoints/text-gpt text-gpt [seedPair]
import { weightMatching } from '../dist/src/methods/weight-matching.js';
import { activationMatching } from '../dist/src/methods/activation-matching.js';
import { fixBlocks } from '../dist/src/permutation/spec.js';
import { movedShares } from '../dist/src/experiments/lmc.js';
import { loadSeedPair, testBarrier } from './seed-pair.mjs';

const { task, setup, a, b } = await loadSeedPair('node scripts/heads-ablation.mjs CHECKPOINT_DIR TASK [SEED_PAIR]');
const full = setup.model.permutationSpec();
const specs = [['heads moving', full], ['heads fixed', fixBlocks(full)]];
const report = (label, r) => {
  const m = movedShares(full, r.perms);
  console.log(`${task} ${label}: objective ${(-r.log.at(-1).cost).toFixed(2)}, heads/dims moved ${m.heads.toFixed(2)}/${m.inner.toFixed(2)}, loss barrier ${testBarrier(setup, a, r.aligned).toFixed(4)}`);
};
for (const seed of [0, 1, 2]) for (const [name, spec] of specs) report(`wm seed ${seed}, ${name}`, weightMatching({ spec, a, b }, { seed }));
for (const [name, spec] of specs) report(`am correlation (3000 samples), ${name}`, activationMatching({ spec, a, b }, { model: setup.model, data: setup.train, statistic: 'correlation', maxSamples: 3000 }));
