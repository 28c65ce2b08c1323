/**
 * Sinkhorn operator benchmarks: the forward (20 log-domain iterations at 1024², the reference's
 * workload; PyTorch 1.13 on this machine kind: 22 ms, ../shared/reference/backend.md) and the
 * implicit backward with the dense KKT solve (what the reference does, torch.linalg.solve on the
 * (2n−1)² system) against the Schur-complement CG, at n = 512, 1024, 2048.
 */
import { currentBackend, kernels } from '../src/core/backend/index.js';
import { Rng } from '../src/core/random.js';
import { noGrad, Tensor } from '../src/core/tensor.js';
import { newSinkhornDiagnostics, sinkhorn } from '../src/permutation/sinkhorn.js';
import type { KktSolver } from '../src/permutation/sinkhorn.js';
import { timeMedian, type BenchContext, type BenchRow } from './harness.js';
import type { TorchFigures } from './training.js';

const SECTION = 'sinkhorn';

function randomX(n: number, rng: Rng, diag: number, noise: number): Tensor {
  const d = new Float32Array(n * n);
  rng.fillNormal(d, 0, noise);
  for (let i = 0; i < n; i++) d[i * n + i] += diag;
  return new Tensor(d, [n, n]);
}

export async function run(ctx: BenchContext, torch?: TorchFigures): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const backend = currentBackend().name;
  const rng = new Rng(0);

  // Forward: the op as used in training (validation + scaling + 20 iterations + exp).
  const X = randomX(1024, rng, 0, 1);
  const fwd = await timeMedian(() => noGrad(() => sinkhorn(X)), ctx.quick ? 3 : 9, 1);
  const measured = torch?.sinkhorn1024x20Ms;
  rows.push({
    section: SECTION, name: `forward 1024², 20 iterations (sinkhorn(), ${backend})`, value: fwd, unit: 'ms',
    anchor: measured ?? 22, anchorSource: measured ? 'measured' : 'quoted', anchorLabel: 'PyTorch 1.13 (2 threads)',
    goal: '≤ 22 ms', higherIsBetter: false,
  });
  const lp = new Float32Array(X.data.length);
  const kern = await timeMedian(() => { lp.set(X.data); kernels().sinkhornLog(lp, 1, 1024, 1024, 20, null, null); }, ctx.quick ? 3 : 9, 1);
  rows.push({ section: SECTION, name: `  of which kernels().sinkhornLog (${backend})`, value: kern, unit: 'ms', higherIsBetter: false });

  // Implicit backward, float32. 'init': X = I + 0.1·N, the method's initialisation (P near uniform,
  // CG converges in a few iterations). 'sharp': X = 8·I + N, P near a permutation as late in
  // training (the hard case for CG). Dense LU cost does not depend on the regime.
  const sizes = [512, 1024, 2048];
  for (const n of sizes) {
    for (const [regime, diag, noise] of [['init', 1, 0.1], ['sharp', 8, 1]] as const) {
      const solvers: KktSolver[] = regime === 'init' ? ['dense', 'schur-cg'] : ['schur-cg'];
      for (const kkt of solvers) {
        const bigDense = kkt === 'dense' && (n >= 2048 || (backend === 'js' && n >= 1024));
        if (kkt === 'dense' && n >= 2048 && ctx.quick) continue;
        const Xn = randomX(n, new Rng(n), diag, noise).requireGrad();
        const d = newSinkhornDiagnostics();
        const S = sinkhorn(Xn, { kkt, diagnostics: d });
        const G = new Tensor(new Float32Array(n * n).map((_, i) => Math.sin(i)), [n, n]);
        const reps = bigDense ? 1 : ctx.quick ? 3 : 7;
        const ms = await timeMedian(() => { Xn.grad = null; S.backward(G); }, reps, bigDense ? 0 : 1);
        const calls = d.cgSolves + d.denseSolves - d.cgFallbacks;
        const note = kkt === 'schur-cg'
          ? `${(d.cgIterations / Math.max(d.cgSolves, 1)).toFixed(1)} CG iterations per solve, ${d.cgFallbacks} dense fallbacks`
          : `LU on ${2 * n - 1}²${d.lstsqFallbacks ? `, ${d.lstsqFallbacks} lstsq` : ''}; the reference's torch.linalg.solve`;
        ctx.log(`sinkhorn: backward n=${n} ${regime} ${kkt}: ${ms.toFixed(1)} ms (${calls} solves; ${note})`);
        rows.push({
          section: SECTION, name: `implicit backward n=${n}, ${kkt}${kkt === 'schur-cg' ? ` (${regime} P)` : ''} (${backend})`,
          value: ms, unit: 'ms', higherIsBetter: false, note,
        });
      }
    }
  }
  return rows;
}
