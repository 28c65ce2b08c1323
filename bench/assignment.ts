/**
 * Linear assignment benchmark: linearSumAssignment on dense uniform [0, 1) float64 matrices against
 * scipy's linear_sum_assignment, plus re-basin-like matrices (a planted permutation under noise),
 * which are the easy case the library mostly meets.
 */
import { linearSumAssignment } from '../src/permutation/assignment.js';
import { Rng } from '../src/core/random.js';
import { timeMedian, type BenchContext, type BenchRow } from './harness.js';

/** scipy 1.10 linear_sum_assignment on this machine, ms (quoted figures). */
const SCIPY_MS: Record<number, number> = { 256: 1.7, 512: 6.6, 1024: 30, 2048: 175 };

function uniform(n: number, seed: number): Float64Array {
  return new Rng(seed).fillUniform(new Float64Array(n * n)) as Float64Array;
}

/** Similarity W_a·W_bᵀ-like: a permuted identity plus Gaussian noise, to be maximised. */
function planted(n: number, seed: number, noise: number): Float64Array {
  const rng = new Rng(seed);
  const perm = rng.permutation(n);
  const s = new Float64Array(n * n);
  for (let k = 0; k < s.length; k++) s[k] = noise * rng.normal();
  for (let i = 0; i < n; i++) s[i * n + perm[i]] += 1;
  return s;
}

export async function run(ctx: BenchContext, torch?: { lapMs?: Record<string, number> }): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const n of [256, 512, 1024, 2048]) {
    const measured = torch?.lapMs?.[String(n)];
    // bench/torch_ref.py times scipy with maximize=True; mirror it when comparing side by side.
    const maximize = measured !== undefined;
    const cost = uniform(n, n);
    const reps = ctx.quick ? (n >= 2048 ? 1 : 3) : n >= 2048 ? 5 : 9;
    // Small sizes need a few more calls before V8 has fully optimised the solver.
    const warmup = n <= 512 ? (ctx.quick ? 4 : 8) : ctx.quick ? 1 : 2;
    const ms = await timeMedian(() => linearSumAssignment(cost, n, n, { maximize }), reps, warmup);
    ctx.log(`assignment: uniform ${n}×${n} ${ms.toFixed(2)} ms`);
    rows.push({
      section: 'assignment',
      name: `linearSumAssignment uniform ${n}×${n}${maximize ? ' (maximize)' : ''}`,
      value: ms,
      unit: 'ms',
      anchor: measured ?? SCIPY_MS[n],
      anchorSource: measured !== undefined ? 'measured' : 'quoted',
      anchorLabel: measured !== undefined ? 'scipy linear_sum_assignment (this machine)' : 'scipy 1.10 linear_sum_assignment',
      goal: '≤ 1.5× scipy',
      higherIsBetter: false,
    });
  }
  for (const n of ctx.quick ? [1024] : [512, 2048]) {
    const sim = planted(n, 7 + n, 0.1);
    const ms = await timeMedian(() => linearSumAssignment(sim, n, n, { maximize: true }), ctx.quick ? 3 : 7, ctx.quick ? 1 : 3);
    rows.push({
      section: 'assignment',
      name: `linearSumAssignment planted permutation + noise ${n}×${n} (maximize)`,
      value: ms,
      unit: 'ms',
      higherIsBetter: false,
      note: 're-basin-like easy case: permuted identity + N(0, 0.1²) similarity',
    });
  }
  return rows;
}
