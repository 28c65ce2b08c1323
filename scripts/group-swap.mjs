// Which part of a transformer's alignment makes the midpoint bad (README, "Transformers: linear
// mode connectivity"): aligns one cached seed pair with two methods (default: weight matching,
// whose barrier on mnist-vit is above naive, and STE, whose is far below), then for every subset
// of the groups' kinds — residual stream, attention (heads with their inner permutations), MLP
// hidden units — takes those kinds from the first method and the rest from the second, and prints
// the loss barrier of each mix on the test set. Heads and their inner permutations move together
// (an inner permutation is indexed by the head's slot, so mixing them alone is not a group element).
// For speed the barriers are taken on the first 2000 test samples at 13 points of the path.
//
//   npx tsc -p tsconfig.json
//   node scripts/group-swap.mjs out/lmc-tf/checkpoints/mnist-vit mnist-vit [SEED_PAIR] [wm,ste]
import { alignModels } from '../dist/src/methods/registry.js';
import { applyHard, identityPerms } from '../dist/src/permutation/apply.js';
import { loadSeedPair, testBarrier } from './seed-pair.mjs';

const { task, pair, extra: [methods = 'wm,ste'], setup, a, b } = await loadSeedPair('node scripts/group-swap.mjs CHECKPOINT_DIR TASK [SEED_PAIR] [FIRST,SECOND]', { testLimit: 2000 });
const spec = setup.model.permutationSpec();
const kindOf = (id) => (id.includes('.attn.') ? 'attention' : id.includes('.mlp.') ? 'mlp' : 'residual');
const kinds = ['residual', 'attention', 'mlp'];
const ctx = { model: setup.model, data: setup.train, criterion: setup.criterion, batchSize: setup.batchSize, seed: Number(pair) };
const [first, second] = methods.split(',');
const run = (m) => alignModels(m, { spec, a, b }, ctx, m === 'ste' ? { epochs: setup.steEpochs } : {}).perms;
const p1 = run(first), p2 = run(second);
const ident = identityPerms(spec);
const barrierOf = (perms) => testBarrier(setup, a, applyHard(spec, b, perms), 13);
console.log(`${task} seed pair ${pair}: naive ${barrierOf(ident).toFixed(4)}`);
for (let mask = 0; mask < 1 << kinds.length; mask++) {
  const fromFirst = kinds.filter((_, i) => mask & (1 << i));
  const perms = Object.fromEntries(Object.keys(spec.perms).map((id) => [id, fromFirst.includes(kindOf(id)) ? p1[id] : p2[id]]));
  const label = kinds.map((k) => `${k} ${fromFirst.includes(k) ? first : second}`).join(', ');
  console.log(`  ${label}: loss barrier ${barrierOf(perms).toFixed(4)}`);
}
// Each kind from one method with the others held at the identity: how much each kind alone buys.
for (const [name, p] of [[first, p1], [second, p2]]) for (const k of kinds) {
  const perms = Object.fromEntries(Object.keys(spec.perms).map((id) => [id, kindOf(id) === k ? p[id] : ident[id]]));
  console.log(`  only ${k} from ${name} (rest identity): loss barrier ${barrierOf(perms).toFixed(4)}`);
}
