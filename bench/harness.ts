/**
 * Shared benchmark plumbing. Each bench section exports `run(ctx)` returning rows; bench/run.ts
 * prints them as one table and writes JSON. Figures are medians of repeated timings after warm-up.
 */
export interface BenchRow {
  section: string; // e.g. 'kernels', 'assignment', 'training'
  name: string; // what was measured, e.g. 'sgemm 2048² via Tensor.matmul'
  value: number; // our measured figure
  unit: string; // 'ms', 'GFLOP/s', 'steps/s', ...
  /** The comparison figure: measured in this run (e.g. PyTorch side by side) or quoted from the reference docs. */
  anchor?: number;
  anchorSource?: 'measured' | 'quoted';
  anchorLabel?: string; // e.g. 'PyTorch 1.13 (2 threads)'
  /** Goal expressed as ratio ours/anchor (for 'higher is better' units) or anchor/ours (for times). */
  goal?: string;
  higherIsBetter?: boolean;
  note?: string;
}

export interface BenchContext {
  quick: boolean; // fewer repetitions (smoke run)
  vsTorch: boolean; // also time the PyTorch workloads side by side
  log: (msg: string) => void;
}

/** Median wall time in ms of `fn` over `reps` runs after `warmup` runs. */
export async function timeMedian(fn: () => unknown | Promise<unknown>, reps = 7, warmup = 2): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return median(times);
}

/**
 * Median wall times in ms of several functions timed in alternation (a, b, c, a, b, c, ...), so a
 * change in machine load during the run affects each of them alike: for side-by-side ratios.
 */
export async function timeInterleaved(fns: (() => unknown | Promise<unknown>)[], reps = 7, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) for (const f of fns) await f();
  const times: number[][] = fns.map(() => []);
  for (let i = 0; i < reps; i++) {
    for (let j = 0; j < fns.length; j++) {
      const t0 = process.hrtime.bigint();
      await fns[j]();
      times[j].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  return times.map(median);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
