// The measurement behind the weight costs' τ schedule (README, "Choosing τ for the weight costs"):
// Sinkhorn-L2 recovery of a planted permutation under a candidate τ schedule, one JSON line per run.
//   node scripts/tau-candidates.mjs SCHEDULE MODELS SEEDS [STEPS] [LR]
//   SCHEDULE: fixed:T | anneal:T0:T1:K (geometric T0 → T1 over K steps) | gap:C (τ = C · mean row gap
//             max − mean of X) | logn:K (τ = K/ln(n + 1), the default at K = 1) | softlogn:A:K
//             [:B] (τ = B · A^(1 − (step − 1)/K) / ln(n + 1): A times softer at first, B/ln(n + 1)
//             from step K + 1; B defaults to 1: the default schedule is softlogn:3:50) |
//             softsqrt:A:K:C (τ = C · A^(1 − (step − 1)/K) / √n)
//   MODELS:   comma-separated names (scripts/recovery-models.mjs)
//   LR:       AdamW's learning rate on X (default: the weight costs' default, 1, chosen at
//             softlogn:3:50; the schedule was chosen at 0.1: pass 0.1 to repeat that)
// Needs a build (npx tsc -p tsconfig.json). Same seeds, init and planted permutation as
// `rebasin experiment recovery`, so its softlogn:3:50 runs without LR equal the experiment's default runs.
import { plantedPair } from '../dist/src/experiments/recovery.js';
import { sinkhornRebasin } from '../dist/src/methods/sinkhorn-rebasin.js';
import { invertPermutation } from '../dist/src/permutation/apply.js';
import { build } from './recovery-models.mjs';

const [scheduleArg, modelsArg, seedsArg, stepsArg, lrArg] = process.argv.slice(2);
if (!seedsArg) {
  console.error('usage: node scripts/tau-candidates.mjs SCHEDULE MODELS SEEDS [STEPS] [LR]');
  process.exit(2);
}

function rowGap(x, n) {
  let total = 0;
  for (let i = 0; i < n; i++) {
    let max = -Infinity, sum = 0;
    for (let j = 0; j < n; j++) { const v = x.data[i * n + j]; sum += v; if (v > max) max = v; }
    total += max - sum / n;
  }
  return total / n;
}

/** τ as a number or a TauSchedule (n, step, X) → τ. */
function schedule(arg) {
  const [kind, ...p] = arg.split(':');
  const q = p.map(Number);
  if (kind === 'fixed') return q[0];
  if (kind === 'anneal') return (n, step) => q[0] * Math.pow(q[1] / q[0], Math.min(1, (step - 1) / q[2]));
  if (kind === 'gap') return (n, step, x) => q[0] * rowGap(x, n);
  if (kind === 'logn') return (n) => q[0] / Math.log(n + 1);
  if (kind === 'softsqrt') return (n, step) => q[2] * Math.pow(q[0], Math.max(0, 1 - (step - 1) / q[1])) / Math.sqrt(n);
  if (kind === 'softlogn') return (n, step) => (q[2] ?? 1) * Math.pow(q[0], Math.max(0, 1 - (step - 1) / q[1])) / Math.log(n + 1);
  throw new Error(`unknown schedule ${arg}`);
}


for (const name of modelsArg.split(',')) {
  const model = build(name);
  const spec = model.permutationSpec();
  for (let seed = 0; seed < Number(seedsArg); seed++) {
    const { a, b, planted } = plantedPair(model, seed);
    const result = sinkhornRebasin({ spec, a, b }, { cost: 'l2', tau: schedule(scheduleArg), seed, steps: Number(stepsArg ?? 300), ...(lrArg ? { lr: Number(lrArg) } : {}) });
    const wrong = [];
    for (const [id, p] of Object.entries(planted)) {
      const expected = invertPermutation(p);
      let k = 0;
      for (let i = 0; i < expected.length; i++) if (result.perms[id][i] !== expected[i]) k++;
      if (k) wrong.push(`${id}(${expected.length}):${k}`);
    }
    console.log(JSON.stringify({ schedule: scheduleArg, lr: lrArg ? Number(lrArg) : 'default', model: name, seed, exact: wrong.length === 0, steps: result.steps, wrong: wrong.join(' ') }));
  }
}
