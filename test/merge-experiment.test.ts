import { strict as assert } from 'node:assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ENSEMBLE, INDIVIDUAL, MERGE_VARIANT_NAMES, MERGE_VARIANTS, runMergeExperiment } from '../src/experiments/merge.js';
import { taskSetup } from '../src/experiments/lmc.js';
import { loadCheckpoint } from '../src/io/checkpoint.js';
import { MERGE_STRATEGY_NAMES, mergeModels } from '../src/methods/merge.js';
import { weightedAverage, mergeState } from '../src/state/params.js';
import { evaluate } from '../src/training/evaluate.js';

test('the experiment measures every strategy of the table (first with each of its methods)', () => {
  for (const s of MERGE_STRATEGY_NAMES) assert.ok(MERGE_VARIANTS.some((v) => v.strategy === s), `strategy ${s} is not measured`);
  assert.ok(MERGE_VARIANT_NAMES.includes('naive') && MERGE_VARIANT_NAMES.includes('first/wm') && MERGE_VARIANT_NAMES.includes('first/sinkhorn-l2') && MERGE_VARIANT_NAMES.includes('mergemany'));
});

test('merge experiment (tiny): rows for n = 2…N, the naive row is the plain average, files written, checkpoints reused', async () => {
  const out = mkdtempSync(join(tmpdir(), 'rebasin-merge-exp-'));
  try {
    const o = { tasks: ['mnist-mlp' as const], models: 3, seeds: 1, variants: ['naive', 'first/wm', 'mergemany'], orders: 2, outDir: out, epochs: 1, testLimit: 200, quiet: true };
    const r = await runMergeExperiment(o);
    for (const n of [2, 3]) {
      for (const v of [INDIVIDUAL, ENSEMBLE, ...o.variants]) assert.equal(r.rows.filter((x) => x.n === n && x.variant === v).length, 1, `n ${n} ${v}`);
    }
    assert.deepEqual(r.orders.map((x) => `${x.variant}:${x.order}`), ['first/wm:0', 'first/wm:1', 'mergemany:0', 'mergemany:1']);
    // The naive row at n = 3 is the uniform average of the three trained models.
    const setup = taskSetup('mnist-mlp', { epochs: 1, testLimit: 200 });
    const dir = join(out, 'checkpoints', 'mnist-mlp');
    const states = await Promise.all([1, 2, 3].map(async (s) => {
      const ck = await loadCheckpoint(join(dir, `model-seed${s}.safetensors`));
      return mergeState(ck.params, ck.buffers);
    }));
    const want = evaluate(setup.model, { params: weightedAverage(states) }, setup.test, { criterion: 'ce' });
    const naive = r.rows.find((x) => x.n === 3 && x.variant === 'naive')!;
    assert.ok(Math.abs(naive.loss - want.loss) < 1e-6, `${naive.loss} vs ${want.loss}`);
    assert.equal(naive.accuracy, want.accuracy);
    const ind = r.rows.find((x) => x.n === 3 && x.variant === INDIVIDUAL)!;
    const ens = r.rows.find((x) => x.n === 3 && x.variant === ENSEMBLE)!;
    assert.ok(ens.accuracy >= naive.accuracy && ind.accuracy > 0.1);
    for (const f of ['merge.json', 'merge.md', 'merge-mnist-mlp.svg']) assert.ok(existsSync(join(out, f)), f);
    const md = readFileSync(join(out, 'merge.md'), 'utf8');
    assert.match(md, /## mnist-mlp: test accuracy \(%\)/);
    assert.match(md, /order dependence at n = 3/);
    assert.match(readFileSync(join(out, 'merge-mnist-mlp.svg'), 'utf8'), /^<svg/);
    // A second run reuses the trained models.
    const again = await runMergeExperiment({ ...o, variants: ['naive'], orders: 1 });
    assert.equal(again.trainSeconds, 0);
    assert.equal(again.rows.find((x) => x.n === 3 && x.variant === 'naive')!.accuracy, naive.accuracy);
    // first/sinkhorn-l2 with its own lr, kept step and steps: the same merge as the library call with them.
    const tuning = { lr: 0.1, keep: 'last' as const, steps: 5 };
    const tuned = await runMergeExperiment({ ...o, models: 2, variants: ['first/sinkhorn-l2'], orders: 1, sinkhornL2: tuning });
    const direct = mergeModels('first', { spec: setup.model.permutationSpec(), models: states.slice(0, 2) }, { seed: 0 }, { method: 'sinkhorn-l2', methodOptions: tuning });
    const merged = evaluate(setup.model, { params: direct.merged }, setup.test, { criterion: 'ce' });
    const row = tuned.rows.find((x) => x.n === 2 && x.variant === 'first/sinkhorn-l2')!;
    assert.ok(Math.abs(row.loss - merged.loss) < 1e-9, `${row.loss} vs ${merged.loss}`);
    assert.match(readFileSync(join(out, 'merge.md'), 'utf8'), /first\/sinkhorn-l2 at lr 0\.1\. first\/sinkhorn-l2 keeps its last step\./);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
