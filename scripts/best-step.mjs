// Where Sinkhorn-L2 with the defaults (lr 1, the best step returned) finds its lowest hard cost,
// and the longest stretch of steps without a new lowest before it (README, "The learning rate of
// the weight costs"): on trained LMC pairs, or on planted permutations of random models. One JSON
// line per run, with its seconds and the KKT solves that fell back to least squares.
//
//   npx tsc -p tsconfig.json
//   node scripts/best-step.mjs trained CHECKPOINT_DIR TASK PAIRS     (e.g. out/lmc-mnist/checkpoints/mnist-mlp mnist-mlp 0,1,2)
//   node scripts/best-step.mjs planted MODELS SEEDS                  (MODELS: scripts/recovery-models.mjs names)
import { plantedPair } from '../dist/src/experiments/recovery.js';
import { taskSetup } from '../dist/src/experiments/lmc.js';
import { alignModels } from '../dist/src/methods/registry.js';
import { build } from './recovery-models.mjs';
import { loadPair } from './seed-pair.mjs';

/** The step of the lowest hard cost and the longest run of steps before it without a new lowest. */
function bestStep(log) {
  let best = Infinity, last = 0, longestWait = 0, step = 0;
  for (const e of log) {
    if (e.hardCost < best) {
      longestWait = Math.max(longestWait, e.step - last);
      best = e.hardCost;
      last = step = e.step;
    }
  }
  return { bestStep: step, longestWait, steps: log.length };
}

const summary = (r) => ({ ...bestStep(r.log), seconds: Number(r.seconds.toFixed(1)), lstsqFallbacks: r.diagnostics.lstsqFallbacks });
const [kind, ...args] = process.argv.slice(2);
if (kind === 'trained' && args.length === 3) {
  const [dir, task, pairs] = args;
  const setup = taskSetup(task);
  const spec = setup.model.permutationSpec();
  for (const pair of pairs.split(',')) {
    const { a, b } = await loadPair(dir, pair);
    const r = alignModels('sinkhorn-l2', { spec, a, b }, { seed: Number(pair) });
    console.log(JSON.stringify({ task, pair: Number(pair), ...summary(r) }));
  }
} else if (kind === 'planted' && args.length === 2) {
  const [models, seeds] = args;
  for (const name of models.split(',')) {
    const model = build(name);
    for (let seed = 0; seed < Number(seeds); seed++) {
      const { a, b } = plantedPair(model, seed);
      const r = alignModels('sinkhorn-l2', { spec: model.permutationSpec(), a, b }, { seed });
      console.log(JSON.stringify({ model: name, seed, ...summary(r), recovered: r.log.at(-1).hardCost === 0 }));
    }
  }
} else {
  console.error('usage: node scripts/best-step.mjs trained CHECKPOINT_DIR TASK PAIRS | planted MODELS SEEDS');
  process.exit(2);
}
