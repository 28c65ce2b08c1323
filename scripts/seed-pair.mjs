// What the investigation scripts share: one cached seed pair of an LMC task (the checkpoints that
// `rebasin experiment lmc` writes to OUT/checkpoints/TASK) and its loss barrier on the task's test set.
import { loadCheckpoint } from '../dist/src/io/checkpoint.js';
import { mergeState } from '../dist/src/state/params.js';
import { taskSetup } from '../dist/src/experiments/lmc.js';
import { barrier, interpolationCurve } from '../dist/src/analysis/lmc.js';
import { matchingPlan } from '../dist/src/methods/weight-matching.js';

/**
 * Reads `CHECKPOINT_DIR TASK [SEED_PAIR] [extra…]` from the command line (exit 2 with `usage`
 * when the first two are missing) and loads the pair: { task, pair, extra, setup, a, b }.
 * `taskOptions` go to taskSetup (e.g. { testLimit } for a quicker, coarser test barrier).
 */
export async function loadSeedPair(usage, taskOptions = {}) {
  const [dir, task, pair = '0', ...extra] = process.argv.slice(2);
  if (!dir || !task) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return { task, pair, extra, setup: taskSetup(task, taskOptions), ...await loadPair(dir, pair) };
}

/** The cached endpoints A and B of seed pair `pair` in CHECKPOINT_DIR (states with their buffers). */
export async function loadPair(dir, pair) {
  const load = async (end) => {
    const ck = await loadCheckpoint(`${dir}/seed${pair}-${end}.safetensors`);
    return mergeState(ck.params, ck.buffers);
  };
  return { a: await load('A'), b: await load('B') };
}

/** Loss barrier of the path from `a` to `b` on the test set, 25 points unless said, the task's BN handling (as the LMC experiment). */
export function testBarrier(setup, a, b, points = 25) {
  return barrier(interpolationCurve({ model: setup.model, a, b, data: setup.test, criterion: setup.criterion, points, bn: setup.bn, bnData: setup.train })).lossBarrier;
}

/** The weight-matching objective ⟨A, π(B)⟩ over the tensors the spec permutes. */
export function weightObjective(spec, a, aligned) {
  let s = 0;
  for (const n of matchingPlan(spec).tensors) {
    const x = a.get(n).data;
    const y = aligned.get(n).data;
    for (let i = 0; i < x.length; i++) s += x[i] * y[i];
  }
  return s;
}
