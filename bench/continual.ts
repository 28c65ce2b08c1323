/**
 * The full RebasinIL run on Rotated MNIST (20 tasks, reference hyper-parameters, evaluation on all
 * 20 test sets after every task), timed end to end; goal ≤ 15 minutes on the 2-core machine.
 * With ctx.quick only tasks 1–3 run and the rest is extrapolated: a re-basin step's cost is taken
 * as proportional to the samples it processes (task batch + replayed batch, whose size grows with
 * the memory), which the row labels say.
 */
import { Rng } from '../src/core/index.js';
import { accuracyRow, continualModel, loadBenchmark, RebasinIL, REBASIN_IL_DEFAULTS, stepsPerEpoch } from '../src/continual/index.js';
import { continualMetrics } from '../src/continual/metrics.js';
import type { BenchContext, BenchRow } from './harness.js';

const GOAL_MINUTES = 15;

/** Samples processed by one epoch of task t (0-based) with a memory of `mem` samples. */
function epochSamples(n: number, batch: number, mem: number, memBatch: number): number {
  const steps = stepsPerEpoch(n, batch);
  if (mem === 0) return n;
  // The memory is cycled in batches of memBatch, the last of each pass possibly smaller.
  let replayed = 0;
  let pos = 0;
  for (let s = 0; s < steps; s++) {
    if (pos >= mem) pos = 0;
    const take = Math.min(memBatch, mem - pos);
    replayed += take;
    pos += take;
  }
  return n + replayed;
}

export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const o = REBASIN_IL_DEFAULTS;
  const tasks = 20;
  const ran = ctx.quick ? 3 : tasks;
  const bench = loadBenchmark('rotated-mnist', { tasks });
  const model = continualModel(bench);
  const s = new RebasinIL({ model, bench, rng: new Rng(0) }, model.init(new Rng(0)).params, o);
  const trainSec: number[] = [];
  const evalSec: number[] = [];
  const R: number[][] = [];
  for (let t = 0; t < ran; t++) {
    let t0 = performance.now();
    s.runUnit(t);
    trainSec.push((performance.now() - t0) / 1000);
    t0 = performance.now();
    R.push(accuracyRow(model, bench, s.params()));
    evalSec.push((performance.now() - t0) / 1000);
    ctx.log(`continual: task ${t + 1}/${ran} trained in ${trainSec[t].toFixed(1)} s, evaluated in ${evalSec[t].toFixed(1)} s`);
  }
  const n = bench.tasks[0].train.n;
  const samples = (t: number) => o.epochs * epochSamples(n, o.batchSize, t * 10 * o.replayPerClass, o.memBatch);
  const evalMean = evalSec.reduce((a, b) => a + b, 0) / evalSec.length;
  let total: number;
  let label: string;
  if (ran === tasks) {
    total = trainSec.reduce((a, b) => a + b, 0) + evalSec.reduce((a, b) => a + b, 0);
    label = 'RebasinIL, Rotated MNIST 20 tasks (measured)';
  } else {
    // Seconds per processed sample of the re-basin tasks measured (tasks 2..ran).
    let sec = 0;
    let smp = 0;
    for (let t = 1; t < ran; t++) {
      sec += trainSec[t];
      smp += samples(t);
    }
    total = trainSec[0] + evalMean * tasks;
    for (let t = 1; t < tasks; t++) total += (sec / smp) * samples(t);
    label = `RebasinIL, Rotated MNIST 20 tasks (extrapolated from ${ran} measured tasks)`;
  }
  const rebasinSteps = o.epochs * stepsPerEpoch(n, o.batchSize);
  const perStep = trainSec.slice(1).reduce((a, b) => a + b, 0) / Math.max(1, (ran - 1) * rebasinSteps);
  const m = continualMetrics(R);
  return [
    {
      section: 'continual', name: label, value: total / 60, unit: 'min', higherIsBetter: false, goal: `≤ ${GOAL_MINUTES} min`,
      note: (ran === tasks ? `average accuracy ${(100 * m.averageAccuracy).toFixed(2)}% (paper 78.14%)` : `first ${ran} tasks: mean accuracy on seen tasks ${(100 * R[ran - 1].slice(0, ran).reduce((a, b) => a + b, 0) / ran).toFixed(2)}%`)
        + `; hidden units moved by the hard P per task: ${s.movedUnits.join(',')}`,
    },
    { section: 'continual', name: `RebasinIL re-basin step (batch 500 + replay, tasks 2–${ran})`, value: perStep * 1000, unit: 'ms', higherIsBetter: false },
    { section: 'continual', name: 'evaluation on the 20 test sets (200k images)', value: evalMean, unit: 's', higherIsBetter: false },
  ];
}
