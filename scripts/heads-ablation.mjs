// Moving attention heads or holding them fixed, on one trained pair of an LMC task (README,
// "Transformers: linear mode connectivity"): weight matching with visiting-order seeds 0, 1, 2 and
// activation matching with the correlation statistic, each with the derived spec and with
// fixBlocks(spec); prints the matching objective, the share of heads/head dimensions moved and the
// loss barrier on the task's test set.
//
//   npx tsc -p tsconfig.json
//   node scripts/heads-ablation.mjs out/lmc-tf/checkpoints/text-gpt text-gpt [seedPair]
import { loadCheckpoint } from '../dist/src/io/checkpoint.js';
import { weightMatching } from '../dist/src/methods/weight-matching.js';
import { activationMatching } from '../dist/src/methods/activation-matching.js';
import { fixBlocks } from '../dist/src/permutation/spec.js';
import { mergeState } from '../dist/src/state/params.js';
import { movedShares, taskSetup } from '../dist/src/experiments/lmc.js';
import { barrier, interpolationCurve } from '../dist/src/analysis/lmc.js';

const [dir, task, pair = '0'] = process.argv.slice(2);
if (!dir || !task) {
  console.error('usage: node scripts/heads-ablation.mjs CHECKPOINT_DIR TASK [SEED_PAIR]');
  process.exit(2);
}
const load = async (end) => {
  const ck = await loadCheckpoint(`${dir}/seed${pair}-${end}.safetensors`);
  return mergeState(ck.params, ck.buffers);
};
const [a, b] = [await load('A'), await load('B')];
const setup = taskSetup(task);
const full = setup.model.permutationSpec();
const specs = [['heads moving', full], ['heads fixed', fixBlocks(full)]];
const report = (label, r) => {
  const points = interpolationCurve({ model: setup.model, a, b: r.aligned, data: setup.test, criterion: setup.criterion, points: 25, bn: setup.bn });
  const m = movedShares(full, r.perms);
  console.log(`${task} ${label}: objective ${(-r.log.at(-1).cost).toFixed(2)}, heads/dims moved ${m.heads.toFixed(2)}/${m.inner.toFixed(2)}, loss barrier ${barrier(points).lossBarrier.toFixed(4)}`);
};
for (const seed of [0, 1, 2]) for (const [name, spec] of specs) report(`wm seed ${seed}, ${name}`, weightMatching({ spec, a, b }, { seed }));
for (const [name, spec] of specs) report(`am correlation (3000 samples), ${name}`, activationMatching({ spec, a, b }, { model: setup.model, data: setup.train, statistic: 'correlation', maxSamples: 3000 }));
