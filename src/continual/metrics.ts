/**
 * Continual-learning metrics over the accuracy matrix R, where R[t][i] is the accuracy on task i's
 * test set after training on tasks 0..t (rows may be shorter or hold NaN where not evaluated).
 * With T tasks and the last row R[T−1] (0-based):
 *
 *   average accuracy  A   = (1/T) Σ_i R[T−1][i]                       (mean of the last row)
 *   forgetting        F   = (1/(T−1)) Σ_{i<T−1} ( max_{t<T−1} R[t][i] − R[T−1][i] )
 *   backward transfer BWT = (1/(T−1)) Σ_{i<T−1} ( R[T−1][i] − R[i][i] )
 *
 * (Lopez-Paz & Ranzato 2017 for A and BWT; Chaudhry et al. 2018 for F, whose max runs over every
 * earlier evaluation.) Avalanche's StreamForgetting, which the reference prints, uses R[i][i]
 * instead of the max, i.e. it equals −BWT. NaN entries are skipped; a metric with no terms is NaN.
 */

function finite(v: number | undefined): v is number {
  return v !== undefined && Number.isFinite(v);
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : NaN;
}

function checkMatrix(R: number[][]): void {
  if (!Array.isArray(R) || R.some((r) => !Array.isArray(r))) throw new Error('accuracy matrix must be an array of rows');
}

/** Mean of the last row (over tasks 0..T−1 where T = number of rows unless `tasks` says otherwise). */
export function averageAccuracy(R: number[][], tasks = R.length): number {
  checkMatrix(R);
  if (R.length === 0) return NaN;
  const last = R[R.length - 1];
  const vals: number[] = [];
  for (let i = 0; i < tasks; i++) if (finite(last[i])) vals.push(last[i]);
  return mean(vals);
}

/** Mean over i < T−1 of max_{t<T−1} R[t][i] − R[T−1][i] (T = number of rows). */
export function forgetting(R: number[][]): number {
  checkMatrix(R);
  const T = R.length;
  if (T < 2) return NaN;
  const last = R[T - 1];
  const terms: number[] = [];
  for (let i = 0; i < T - 1; i++) {
    if (!finite(last[i])) continue;
    let best = -Infinity;
    for (let t = 0; t < T - 1; t++) if (finite(R[t][i]) && R[t][i] > best) best = R[t][i];
    if (best > -Infinity) terms.push(best - last[i]);
  }
  return mean(terms);
}

/** Mean over i < T−1 of R[T−1][i] − R[i][i] (T = number of rows). */
export function backwardTransfer(R: number[][]): number {
  checkMatrix(R);
  const T = R.length;
  if (T < 2) return NaN;
  const last = R[T - 1];
  const terms: number[] = [];
  for (let i = 0; i < T - 1; i++) if (finite(last[i]) && finite(R[i][i])) terms.push(last[i] - R[i][i]);
  return mean(terms);
}

/** Mean accuracy over the tasks seen so far after each task: s[t] = mean_{i≤t} R[t][i]. */
export function accuracyOverTasksSeen(R: number[][]): number[] {
  checkMatrix(R);
  return R.map((row, t) => mean(row.slice(0, t + 1).filter(finite)));
}

export interface ContinualMetrics {
  averageAccuracy: number;
  forgetting: number;
  backwardTransfer: number;
}

export function continualMetrics(R: number[][]): ContinualMetrics {
  return { averageAccuracy: averageAccuracy(R, R.length ? R[R.length - 1].length : 0), forgetting: forgetting(R), backwardTransfer: backwardTransfer(R) };
}
