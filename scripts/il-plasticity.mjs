// RebasinIL's plasticity on a class-split benchmark (README, "Continual learning (class splits)"):
// RebasinIL alone with the reference's residual clip and merge weight and with looser ones, with
// 1000 training images per task and with all of them; prints the average accuracy, forgetting and
// the accuracy on each task right after learning it (tasks 2…T).
//
//   npx tsc -p tsconfig.json
//   node scripts/il-plasticity.mjs [benchmark] [seed] [outDir]
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { runContinual } from '../dist/src/experiments/continual.js';

const [benchmark = 'split-mnist', seed = '0', out = join(tmpdir(), 'rebasin-il-plasticity')] = process.argv.slice(2);
const variants = [
  ['reference (clip ±0.001, α = 0.8)', {}],
  ['clip ±0.01', { residualClip: 0.01 }],
  ['clip ±0.1', { residualClip: 0.1 }],
  ['α = 0.5', { alpha: 0.5 }],
];
for (const samples of [1000, undefined]) {
  for (const [label, rebasin] of variants) {
    const r = await runContinual({ benchmark, methods: ['rebasin-il'], seed: Number(seed), samplesPerTask: samples, outDir: join(out, `${samples ?? 'all'}-${variants.findIndex((v) => v[0] === label)}`), quiet: true, rebasin });
    const { R, metrics } = r.results[0];
    const fresh = R.slice(1).map((row, i) => (100 * row[i + 1]).toFixed(1)).join(' / ');
    console.log(`${benchmark} seed ${seed}, ${samples ?? 'all'} images per task, ${label}: avg ${(100 * metrics.averageAccuracy).toFixed(2)}%, forgetting ${(100 * metrics.forgetting).toFixed(2)}, new-task acc ${fresh}`);
  }
}
