// How large the weight cost's gradient on the Sinkhorn matrices is, against AdamW's ε = 1e-8
// (README, "The learning rate of the weight costs"): the L2 cost is a mean over all parameters, so the
// gradient on X shrinks with the model's size, and where it is far below ε AdamW's step is
// lr·m/ε — proportional to the gradient, like SGD — instead of about lr per entry.
//   node scripts/sinkhorn-grad-scale.mjs MODELS [SEED]            planted permutations of random models
//   node scripts/sinkhorn-grad-scale.mjs CHECKPOINT_DIR TASK [SEED_PAIR]   a trained pair of `experiment lmc`
// MODELS: comma-separated names (scripts/recovery-models.mjs). One line per model: each group's
// width and mean |∂C/∂X| at the first step (X = I, τ of the default schedule at step 1).
// Needs a build (npx tsc -p tsconfig.json).
import { existsSync } from 'node:fs';
import { AdamW } from '../dist/src/core/optim/optimizers.js';
import { eye } from '../dist/src/core/tensor.js';
import { plantedPair } from '../dist/src/experiments/recovery.js';
import { weightCost } from '../dist/src/methods/costs.js';
import { widthTau, WEIGHT_COST_DEFAULTS } from '../dist/src/methods/sinkhorn-rebasin.js';
import { applySoft } from '../dist/src/permutation/apply.js';
import { sinkhorn } from '../dist/src/permutation/sinkhorn.js';
import { build } from './recovery-models.mjs';
import { loadSeedPair } from './seed-pair.mjs';

/** AdamW's default ε, the one Sinkhorn re-basin's optimiser uses. */
const ADAMW_EPS = new AdamW([]).eps;
const USAGE = 'node scripts/sinkhorn-grad-scale.mjs MODELS [SEED] | CHECKPOINT_DIR TASK [SEED_PAIR]';

function report(name, spec, a, b) {
  const X = Object.fromEntries(Object.entries(spec.perms).map(([id, n]) => [id, eye(n).requireGrad()]));
  const S = Object.fromEntries(Object.entries(X).map(([id, x]) => [id, sinkhorn(x, { tau: widthTau(x.shape[0], 1), iters: WEIGHT_COST_DEFAULTS.iters })]));
  weightCost('l2', a, applySoft(spec, b, S)).backward();
  const groups = Object.values(X).map((x) => {
    let s = 0;
    for (const v of x.grad.data) s += Math.abs(v);
    return { n: x.shape[0], meanAbsGrad: s / x.size };
  });
  const smallest = Math.min(...groups.map((g) => g.meanAbsGrad));
  console.log(`${name}: ${groups.map((g) => `${g.n}:${g.meanAbsGrad.toExponential(1)}`).join(' ')}  (ε/smallest = ${(ADAMW_EPS / smallest).toPrecision(2)})`);
}

const [first, second] = process.argv.slice(2);
if (!first) {
  console.error(`usage: ${USAGE}`);
  process.exit(2);
}
if (existsSync(first)) {
  const { task, pair, setup, a, b } = await loadSeedPair(USAGE);
  report(`${task} seed pair ${pair}`, setup.model.permutationSpec(), a, b);
} else {
  for (const name of first.split(',')) {
    const model = build(name);
    const { a, b } = plantedPair(model, Number(second ?? 0));
    report(name, model.permutationSpec(), a, b);
  }
}
