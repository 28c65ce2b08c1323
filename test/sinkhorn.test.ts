/**
 * The Sinkhorn operator: forward against a naive exp-domain Sinkhorn–Knopp, the implicit gradient
 * against finite differences at convergence, implicit vs unrolled, dense vs Schur-CG, the singular
 * (lstsq) case, the caller-owned diagnostics and workspace, input validation, and a small
 * permutation-recovery run with AdamW.
 * Gradient checks run in float64 on the pure-TS kernels.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsBackend, nativeBackend, setBackend, wasmBackend } from '../src/core/backend/index.js';
import * as F from '../src/core/ops/index.js';
import { AdamW } from '../src/core/optim/optimizers.js';
import { Rng } from '../src/core/random.js';
import { eye, noGrad, Tensor } from '../src/core/tensor.js';
import type { FloatArray } from '../src/core/backend/types.js';
import {
  implicitSinkhornGrad, newSinkhornDiagnostics, newSinkhornWorkspace, sinkhorn,
} from '../src/permutation/sinkhorn.js';
import type { SinkhornFallback, SinkhornOptions } from '../src/permutation/sinkhorn.js';
import { solveWithFallback } from '../src/permutation/kkt.js';
import { normalEquationResidual, readRecordedSystem } from './helpers/linear-system.js';

setBackend(jsBackend);

function randn(n: number, rng: Rng, dtype: 'float32' | 'float64' = 'float64'): FloatArray {
  const a = dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
  rng.fillNormal(a);
  return a;
}

function mat(data: FloatArray, shape: number[], grad = false): Tensor {
  return new Tensor(data.slice(), shape, grad);
}

/** L(X) = ⟨S(X), W⟩ without recording gradients. */
function lossValue(x: FloatArray, shape: number[], W: FloatArray, opts: SinkhornOptions): number {
  const S = noGrad(() => sinkhorn(mat(x, shape), opts));
  let s = 0;
  for (let i = 0; i < S.size; i++) s += S.data[i] * W[i];
  return s;
}

function analyticGrad(x: FloatArray, shape: number[], W: FloatArray, opts: SinkhornOptions): FloatArray {
  const X = mat(x, shape, true);
  sinkhorn(X, opts).backward(mat(W, shape));
  assert.ok(X.grad, 'X.grad is set');
  return X.grad.data;
}

function finiteDiff(x: FloatArray, shape: number[], W: FloatArray, opts: SinkhornOptions, h = 1e-5): Float64Array {
  const g = new Float64Array(x.length);
  for (let q = 0; q < x.length; q++) {
    const xp = Float64Array.from(x);
    const xm = Float64Array.from(x);
    xp[q] += h;
    xm[q] -= h;
    g[q] = (lossValue(xp, shape, W, opts) - lossValue(xm, shape, W, opts)) / (2 * h);
  }
  return g;
}

/** max |a − b| / max |b|. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / (den || 1);
}

/** Naive Sinkhorn–Knopp in the exp domain (float64), same order: columns then rows. */
function naiveSinkhorn(x: ArrayLike<number>, m: number, n: number, factor: number, iters: number, colTarget = 1): Float64Array {
  const K = new Float64Array(m * n);
  for (let i = 0; i < m * n; i++) K[i] = Math.exp(factor * x[i]);
  for (let it = 0; it < iters; it++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = 0; i < m; i++) s += K[i * n + j];
      for (let i = 0; i < m; i++) K[i * n + j] *= colTarget / s;
    }
    for (let i = 0; i < m; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += K[i * n + j];
      for (let j = 0; j < n; j++) K[i * n + j] /= s;
    }
  }
  return K;
}

function marginalErrors(S: FloatArray, m: number, n: number, colTarget = 1): { row: number; col: number } {
  let row = 0;
  let col = 0;
  for (let i = 0; i < m; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += S[i * n + j];
    row = Math.max(row, Math.abs(s - 1));
  }
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < m; i++) s += S[i * n + j];
    col = Math.max(col, Math.abs(s - colTarget));
  }
  return { row, col };
}

// ---------------------------------------------------------------- forward

test('forward: doubly stochastic after enough iterations; rows exact after the last row step', () => {
  const rng = new Rng(1);
  const n = 12;
  const S = sinkhorn(mat(randn(n * n, rng), [n, n]), { iters: 300 });
  const e = marginalErrors(S.data, n, n);
  assert.ok(e.row < 1e-14, `row error ${e.row}`);
  assert.ok(e.col < 1e-12, `column error ${e.col}`);
  const few = sinkhorn(mat(randn(n * n, rng, 'float64').map((v) => 3 * v), [n, n]), { iters: 2 });
  assert.ok(marginalErrors(few.data, n, n).row < 1e-14, 'rows are exact even after 2 iterations');
  // float32 too.
  const S32 = sinkhorn(mat(randn(n * n, rng, 'float32'), [n, n]));
  const e32 = marginalErrors(S32.data, n, n);
  assert.ok(e32.row < 1e-5 && e32.col < 1e-4, `float32 marginals ${JSON.stringify(e32)}`);
});

test('forward: matches a naive exp-domain Sinkhorn–Knopp (square, rectangular, batched)', () => {
  const rng = new Rng(2);
  for (const [m, n, tau, scale, iters] of [[7, 7, 1, 1, 20], [9, 9, 0.5, 2, 5], [4, 6, 1, 1, 50], [6, 4, 0.7, 1, 50]] as const) {
    const x = randn(m * n, rng);
    const S = sinkhorn(mat(x, [m, n]), { tau, scale, iters });
    const ref = naiveSinkhorn(x, m, n, scale / tau, iters, m / n);
    assert.ok(relErr(S.data, ref) < 1e-12, `${m}×${n} τ=${tau} l=${scale}: ${relErr(S.data, ref)}`);
    if (m !== n) {
      const e = marginalErrors(sinkhorn(mat(x, [m, n]), { iters: 500 }).data, m, n, m / n);
      assert.ok(e.row < 1e-12 && e.col < 1e-10, `rectangular marginals ${JSON.stringify(e)}`);
    }
  }
  // A batch is the items one by one.
  const B = 3;
  const n = 5;
  const xb = randn(B * n * n, rng);
  const Sb = sinkhorn(mat(xb, [B, n, n]), { tau: 0.8 });
  assert.deepEqual(Sb.shape, [B, n, n]);
  for (let b = 0; b < B; b++) {
    const Si = sinkhorn(mat(xb.slice(b * n * n, (b + 1) * n * n), [n, n]), { tau: 0.8 });
    assert.ok(relErr(Sb.data.subarray(b * n * n, (b + 1) * n * n), Si.data) < 1e-15);
  }
});

test('forward: -Inf entries are forbidden assignments; huge entries stay finite', () => {
  const n = 4;
  const x = new Float64Array(n * n).fill(0);
  x[0 * n + 1] = -Infinity;
  x[2 * n + 3] = -Infinity;
  const X = mat(x, [n, n], true);
  const S = sinkhorn(X, { iters: 200 });
  assert.equal(S.data[1], 0);
  assert.equal(S.data[2 * n + 3], 0);
  const e = marginalErrors(S.data, n, n);
  assert.ok(e.row < 1e-12 && e.col < 1e-10);
  S.backward(mat(randn(n * n, new Rng(3)), [n, n]));
  assert.ok(X.grad!.data.every(Number.isFinite));
  assert.ok(X.grad!.data[1] === 0);

  const big = new Float64Array(n * n).map((_, i) => (i % (n + 1) === 0 ? 1e6 : -3e5 * (i % 3)));
  const Sb = sinkhorn(mat(big, [n, n]));
  assert.ok(Sb.data.every(Number.isFinite));
  for (let i = 0; i < n; i++) assert.equal(Sb.data[i * n + i], 1);
});

test('forward: small τ gives the hard assignment of a diagonally dominant X', () => {
  const rng = new Rng(4);
  const n = 20;
  const perm = rng.permutation(n);
  const x = randn(n * n, rng).map((v) => 0.3 * v);
  for (let i = 0; i < n; i++) x[i * n + perm[i]] += 2;
  const S = sinkhorn(mat(x, [n, n]), { tau: 0.01, iters: 50 });
  const am = F.argmax(S, 1);
  const amX = F.argmax(mat(x, [n, n]), 1);
  for (let i = 0; i < n; i++) {
    assert.equal(am[i], perm[i]);
    assert.equal(amX[i], perm[i]);
    assert.ok(S.data[i * n + perm[i]] > 1 - 1e-6, `S[${i}, σ(i)] = ${S.data[i * n + perm[i]]}`);
  }
});

test('validation: options and X are checked with clear messages', () => {
  const X = mat(new Float64Array(9), [3, 3]);
  assert.throws(() => sinkhorn(X, { tau: 0 }), /tau must be a finite number > 0, got 0/);
  assert.throws(() => sinkhorn(X, { tau: -1 }), /tau/);
  assert.throws(() => sinkhorn(X, { tau: Infinity }), /tau/);
  assert.throws(() => sinkhorn(X, { tau: NaN }), /tau/);
  assert.throws(() => sinkhorn(X, { iters: 0 }), /iters must be an integer ≥ 1, got 0/);
  assert.throws(() => sinkhorn(X, { iters: 2.5 }), /iters/);
  assert.throws(() => sinkhorn(X, { scale: NaN }), /scale must be a finite number/);
  assert.throws(() => sinkhorn(X, { scale: Infinity }), /scale/);
  assert.throws(() => sinkhorn(X, { backward: 'magic' as never }), /backward must be/);
  assert.throws(() => sinkhorn(X, { kkt: 'qr' as never }), /kkt must be/);
  assert.throws(() => sinkhorn(X, { cg: { tol: 0 } }), /cg.tol/);
  assert.throws(() => sinkhorn(mat(new Float64Array(3), [3]), {}), /X must be \[m, n\] or \[B, m, n\]/);
  const xn = new Float64Array(9);
  xn[5] = NaN;
  assert.throws(() => sinkhorn(mat(xn, [3, 3])), /sinkhorn: X contains NaN at \[1, 2\]/);
  assert.throws(() => sinkhorn(mat(xn, [1, 3, 3])), /sinkhorn: X contains NaN at \[0, 1, 2\]/);
  const xi = new Float64Array(9);
  xi[0] = Infinity;
  assert.throws(() => sinkhorn(mat(xi, [3, 3])), /\+Inf at \[0, 0\]/);
  const row = new Float64Array(9);
  row.fill(-Infinity, 3, 6);
  assert.throws(() => sinkhorn(mat(row, [3, 3])), /row 1 of X is entirely -Inf/);
  const xm = new Float64Array(9);
  xm[4] = -Infinity;
  assert.throws(() => sinkhorn(mat(xm, [3, 3]), { scale: 0 }), /-Inf at \[1, 1\], which needs scale > 0/);
  assert.throws(() => sinkhorn(mat(new Float64Array(9).fill(1e300), [3, 3]), { tau: 1e-10 }), /overflows at \[0, 0\]/);
});

// ---------------------------------------------------------------- gradients

test('implicit gradient matches central finite differences at convergence (several τ, scale, both solvers)', () => {
  const rng = new Rng(5);
  const cases: [number, number, number][] = [[5, 1, 1], [6, 0.7, 1], [7, 0.3, 2], [5, 2, 0.5], [6, 1, -1.5]];
  for (const [n, tau, scale] of cases) {
    const x = randn(n * n, rng);
    const W = randn(n * n, rng);
    const opts = { tau, scale, iters: 1500 };
    const fd = finiteDiff(x, [n, n], W, opts);
    for (const kkt of ['dense', 'schur-cg'] as const) {
      const g = analyticGrad(x, [n, n], W, { ...opts, kkt });
      const e = relErr(g, fd);
      assert.ok(e < 1e-6, `n=${n} τ=${tau} l=${scale} ${kkt}: relative error ${e}`);
    }
  }
});

test('implicit gradient: rectangular and batched inputs match finite differences', () => {
  const rng = new Rng(6);
  for (const shape of [[4, 6], [6, 4], [2, 4, 4]]) {
    const size = shape.reduce((a, b) => a * b, 1);
    const x = randn(size, rng);
    const W = randn(size, rng);
    const opts = { tau: 0.8, iters: 2000 };
    const fd = finiteDiff(x, shape, W, opts);
    for (const kkt of ['dense', 'schur-cg'] as const) {
      const e = relErr(analyticGrad(x, shape, W, { ...opts, kkt }), fd);
      assert.ok(e < 1e-6, `${JSON.stringify(shape)} ${kkt}: relative error ${e}`);
    }
  }
});

test('unrolled gradient is exact for the truncated map; implicit and unrolled agree at convergence', (t) => {
  const rng = new Rng(7);
  const n = 6;
  const x = randn(n * n, rng).map((v) => 1.5 * v);
  const W = randn(n * n, rng);
  // Exact for few iterations (it differentiates what the forward computes).
  for (const iters of [1, 3]) {
    const opts = { tau: 0.5, iters, backward: 'unrolled' as const };
    const e = relErr(analyticGrad(x, [n, n], W, opts), finiteDiff(x, [n, n], W, opts));
    assert.ok(e < 1e-7, `unrolled, ${iters} iterations: relative error ${e}`);
  }
  const rect = randn(4 * 5, rng);
  const Wr = randn(4 * 5, rng);
  const ro = { iters: 4, backward: 'unrolled' as const };
  assert.ok(relErr(analyticGrad(rect, [4, 5], Wr, ro), finiteDiff(rect, [4, 5], Wr, ro)) < 1e-7);

  // Both backward modes run the same forward.
  const Su = sinkhorn(mat(x, [n, n], true), { tau: 0.5, backward: 'unrolled' });
  const Si = sinkhorn(mat(x, [n, n], true), { tau: 0.5 });
  assert.ok(relErr(Su.data, Si.data) < 1e-14);

  const many = { tau: 0.5, iters: 2000 };
  const gi = analyticGrad(x, [n, n], W, many);
  const gu = analyticGrad(x, [n, n], W, { ...many, backward: 'unrolled' });
  assert.ok(relErr(gi, gu) < 1e-8, `implicit vs unrolled at 2000 iterations: ${relErr(gi, gu)}`);
  const diffs = [5, 20, 100].map((iters) => {
    const a = analyticGrad(x, [n, n], W, { tau: 0.5, iters });
    const b = analyticGrad(x, [n, n], W, { tau: 0.5, iters, backward: 'unrolled' });
    return `${iters} it: ${relErr(a, b).toExponential(2)}`;
  });
  t.diagnostic(`implicit vs unrolled relative difference (τ = 0.5, n = 6): ${diffs.join(', ')}`);
});

test('dense and Schur-CG solves agree (n = 50, 200; float64 and float32); warm start', (t) => {
  const rng = new Rng(8);
  for (const n of [50, 200]) {
    for (const tau of [1, 0.3]) {
      const x = randn(n * n, rng);
      const W = randn(n * n, rng);
      const d = newSinkhornDiagnostics();
      const gd = analyticGrad(x, [n, n], W, { tau, kkt: 'dense', diagnostics: d });
      const gc = analyticGrad(x, [n, n], W, { tau, kkt: 'schur-cg', diagnostics: d });
      assert.deepEqual([d.denseSolves, d.cgSolves, d.cgFallbacks, d.lstsqFallbacks], [1, 1, 0, 0]);
      assert.ok(d.lastCgIterations > 0 && d.cgIterations === d.lastCgIterations && d.lastCgResidual < 1e-10, JSON.stringify(d));
      const e = relErr(gc, gd);
      t.diagnostic(`n=${n} τ=${tau}: CG ${d.lastCgIterations} iterations, relative difference ${e.toExponential(2)}`);
      assert.ok(e < 1e-8, `float64 n=${n} τ=${tau}: ${e}`);
      const x32 = Float32Array.from(x);
      const W32 = Float32Array.from(W);
      const e32 = relErr(analyticGrad(x32, [n, n], W32, { tau, kkt: 'schur-cg' }), analyticGrad(x32, [n, n], W32, { tau, kkt: 'dense' }));
      assert.ok(e32 < 1e-4, `float32 n=${n} τ=${tau}: ${e32}`);
    }
  }
  // Warm start: same answer, fewer iterations after a small change of X.
  const n = 100;
  const x = randn(n * n, rng);
  const W = randn(n * n, rng);
  const warm = { db: null };
  const dCold = newSinkhornDiagnostics();
  analyticGrad(x, [n, n], W, { tau: 0.3, warmStart: warm, diagnostics: dCold });
  const cold = dCold.cgIterations;
  assert.ok(warm.db !== null);
  const x2 = x.map((v, i) => v + 1e-3 * Math.sin(i));
  const dWarm = newSinkhornDiagnostics();
  const gWarm = analyticGrad(x2, [n, n], W, { tau: 0.3, warmStart: warm, diagnostics: dWarm });
  const itWarm = dWarm.cgIterations;
  assert.equal(dCold.cgIterations, cold, 'the second run counts into its own object only');
  const gDense = analyticGrad(x2, [n, n], W, { tau: 0.3, kkt: 'dense' });
  assert.ok(relErr(gWarm, gDense) < 1e-8);
  assert.ok(itWarm < cold, `warm start: ${itWarm} iterations vs ${cold} cold`);
});

test('Schur complement is positive definite after removing the gauge (checked by Cholesky)', () => {
  const rng = new Rng(9);
  for (const tau of [1, 0.2]) {
    const n = 12;
    const P = noGrad(() => sinkhorn(mat(randn(n * n, rng), [n, n]), { tau })).data;
    const a = new Float64Array(n);
    const b = new Float64Array(n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { a[i] += P[i * n + j]; b[j] += P[i * n + j]; }
    // Grounded Schur complement (last column removed, as in the reference's K).
    const d = n - 1;
    const L = new Float64Array(d * d);
    for (let j = 0; j < d; j++) {
      for (let k = 0; k < d; k++) {
        let s = 0;
        for (let i = 0; i < n; i++) s += (P[i * n + j] * P[i * n + k]) / a[i];
        L[j * d + k] = (j === k ? b[j] : 0) - s;
      }
    }
    for (let j = 0; j < d; j++) for (let k = 0; k < j; k++) assert.ok(Math.abs(L[j * d + k] - L[k * d + j]) < 1e-15);
    // Cholesky succeeds with positive pivots.
    for (let j = 0; j < d; j++) {
      for (let k = 0; k < j; k++) L[j * d + j] -= L[j * d + k] ** 2;
      assert.ok(L[j * d + j] > 0, `pivot ${j} = ${L[j * d + j]}`);
      L[j * d + j] = Math.sqrt(L[j * d + j]);
      for (let i = j + 1; i < d; i++) {
        for (let k = 0; k < j; k++) L[i * d + j] -= L[i * d + k] * L[j * d + k];
        L[i * d + j] /= L[j * d + j];
      }
    }
  }
});

/** X whose plan is an exact permutation (off-support entries of P underflow to 0): a singular KKT system. */
function hardX(n: number, rng: Rng): FloatArray {
  const x = randn(n * n, rng);
  for (let i = 0; i < n; i++) x[i * n + ((i + 3) % n)] += 1000;
  return x;
}

test('singular KKT (rows of P underflow): lstsq fallback is counted, reported, and the gradient is finite', () => {
  const rng = new Rng(10);
  const n = 8;
  const x = hardX(n, rng);
  for (const kkt of ['dense', 'schur-cg'] as const) {
    const d = newSinkhornDiagnostics();
    const seen: SinkhornFallback[] = [];
    const X = mat(x, [n, n], true);
    const S = sinkhorn(X, { kkt, diagnostics: d, onFallback: (f) => seen.push(f) });
    assert.ok(S.data.some((v) => v === 0));
    S.backward(mat(randn(n * n, rng), [n, n]));
    // Schur-CG gives up at once (a column of the Laplacian is 0) and the dense solve is singular.
    const cg = kkt === 'schur-cg' ? 1 : 0;
    assert.deepEqual([d.lstsqFallbacks, d.cgFallbacks, d.cgSolves, d.denseSolves], [1, cg, cg, 1], kkt);
    assert.deepEqual(seen.map((f) => f.kind), kkt === 'schur-cg' ? ['cg', 'lstsq'] : ['lstsq'], `${kkt}: onFallback saw ${JSON.stringify(seen)}`);
    assert.ok(X.grad!.data.every(Number.isFinite));
    // P is a hard permutation here, so the true derivative is 0.
    assert.ok(X.grad!.data.every((v) => Math.abs(v) < 1e-6), `${kkt}: max |grad| ${Math.max(...X.grad!.data.map(Math.abs))}`);
  }
});

test('implicitSinkhornGrad: a batch of identical items gives identical gradients', () => {
  const rng = new Rng(11);
  const n = 9;
  const x = randn(n * n, rng);
  const P = noGrad(() => sinkhorn(mat(x, [n, n]), { iters: 100 })).data;
  const G = randn(n * n, rng);
  const S2 = new Float64Array(2 * n * n);
  S2.set(P);
  S2.set(P, n * n);
  const G2 = new Float64Array(2 * n * n);
  G2.set(G);
  G2.set(G, n * n);
  const gx = new Float64Array(2 * n * n);
  const i0 = implicitSinkhornGrad(S2, G2, 0, n, n, gx, { tau: 1, scale: 1, solver: 'schur-cg' });
  const i1 = implicitSinkhornGrad(S2, G2, n * n, n, n, gx, { tau: 1, scale: 1, solver: 'dense' });
  assert.equal(i0.method, 'cg');
  assert.equal(i1.method, 'lu');
  assert.ok(relErr(gx.subarray(0, n * n), gx.subarray(n * n)) < 1e-10);
});

test('diagnostics belong to the caller: separate runs keep separate counts, and nothing is printed', async () => {
  const rng = new Rng(14);
  const n = 8;
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  try {
    const singular = newSinkhornDiagnostics();
    const healthy = newSinkhornDiagnostics();
    const a = mat(hardX(n, rng), [n, n], true);
    const b = mat(randn(n * n, rng), [n, n], true);
    const Sa = sinkhorn(a, { diagnostics: singular });
    const Sb = sinkhorn(b, { diagnostics: healthy });
    Sa.backward(mat(randn(n * n, rng), [n, n]));
    Sb.backward(mat(randn(n * n, rng), [n, n]));
    Sa.backward(mat(randn(n * n, rng), [n, n])); // every backward of a call counts, into that call's object
    assert.deepEqual([singular.cgFallbacks, singular.lstsqFallbacks, singular.denseSolves], [2, 2, 2]);
    assert.deepEqual([healthy.cgSolves, healthy.cgFallbacks, healthy.lstsqFallbacks, healthy.denseSolves], [1, 0, 0, 0]);
    // Without a diagnostics object or onFallback a fallback is silent: the caller decides what to say.
    sinkhorn(mat(hardX(n, rng), [n, n], true)).backward(mat(randn(n * n, rng), [n, n]));
    await new Promise((resolve) => setImmediate(resolve)); // process warnings are emitted on the next tick
    assert.deepEqual(warnings.map((w) => w.message), []);
  } finally {
    process.off('warning', onWarning);
  }
});

test('workspace: the caller’s scratch buffer is used, grown on demand, and does not change the gradient', () => {
  const rng = new Rng(15);
  const ws = newSinkhornWorkspace();
  for (const [n, dtype] of [[20, 'float64'], [12, 'float64'], [30, 'float64'], [16, 'float32']] as const) {
    const x = randn(n * n, rng, dtype);
    const W = randn(n * n, rng, dtype);
    const fresh = analyticGrad(x, [n, n], W, { tau: 0.5 });
    const shared = analyticGrad(x, [n, n], W, { tau: 0.5, workspace: ws });
    assert.deepEqual(Array.from(shared), Array.from(fresh), `n=${n} ${dtype}`);
    const buf = dtype === 'float64' ? ws.f64 : ws.f32;
    assert.ok(buf && buf.length >= n * n, `n=${n} ${dtype}: workspace holds ${buf?.length} values`);
  }
  // Grown to the largest plan, and kept when a smaller one follows.
  assert.equal(ws.f64!.length, 30 * 30);
  assert.equal(ws.f32!.length, 16 * 16);
});

for (const [name, get] of [['native', nativeBackend], ['wasm', wasmBackend]] as const) test(`${name} backend (when available) agrees with the JS kernels in float32`, (t) => {
  const native = get();
  if (!native) {
    t.skip(`${name} backend not available`);
    return;
  }
  const rng = new Rng(13);
  const n = 64;
  const x = randn(n * n, rng, 'float32');
  const W = randn(n * n, rng, 'float32');
  const run = (kkt: 'dense' | 'schur-cg') => {
    const X = mat(x, [n, n], true);
    const S = sinkhorn(X, { tau: 0.5, kkt });
    S.backward(mat(W, [n, n]));
    return { S: S.data, g: X.grad!.data };
  };
  for (const kkt of ['schur-cg', 'dense'] as const) {
    const js = run(kkt);
    const prev = setBackend(native);
    try {
      const nat = run(kkt);
      assert.ok(relErr(nat.S, js.S) < 1e-5, `${kkt} forward: ${relErr(nat.S, js.S)}`);
      assert.ok(relErr(nat.g, js.g) < 1e-3, `${kkt} gradient: ${relErr(nat.g, js.g)}`);
    } finally {
      setBackend(prev);
    }
  }
});

// ---------------------------------------------------------------- end to end

test('end to end: AdamW on ⟨S(X), −P*⟩ from X = I recovers a planted permutation (n = 16)', () => {
  const rng = new Rng(12);
  const n = 16;
  const perm = rng.permutation(n);
  const target = new Float32Array(n * n);
  for (let i = 0; i < n; i++) target[i * n + perm[i]] = -1;
  const T = new Tensor(target, [n, n]);
  const X = eye(n).requireGrad();
  const opt = new AdamW([X], { lr: 0.1 });
  const d = newSinkhornDiagnostics();
  const workspace = newSinkhornWorkspace();
  let loss = 0;
  for (let step = 0; step < 60; step++) {
    const S = sinkhorn(X, { diagnostics: d, workspace });
    const L = F.sum(F.mul(S, T));
    loss = L.item();
    opt.zeroGrad();
    L.backward();
    opt.step();
  }
  const am = F.argmax(X, 1);
  for (let i = 0; i < n; i++) assert.equal(am[i], perm[i], `row ${i}`);
  assert.ok(loss < -0.9 * n, `final loss ${loss}`);
  assert.deepEqual([d.cgSolves, d.cgFallbacks, d.denseSolves], [60, 0, 0]);
});

/**
 * KKT systems from Sinkhorn-L2's implicit backward with `--tau anneal`, near-hard plans with
 * denormal entries whose float LU factors overflow: the 255×255 one from a planted 784-128×8-10 MLP
 * (gelsd stopped in its scaling, "SLASCL parameter number 4", then the solve threw: exit 1
 * mid-experiment), the 7×7 one from a ViT's heads (gelsd never returned). Files: int32 N, then K
 * (N×N row-major) and t (N), float32, gzipped. The dense KKT solve must return a least-squares answer.
 */
for (const file of ['kkt-slascl-255.f32.gz', 'kkt-nan-rebuild-7.f32.gz']) test(`solveWithFallback: a system the addon's LAPACK fails on is solved (pure-TS fallback), a least-squares answer: ${file}`, (t0) => {
  const native = nativeBackend();
  if (!native) {
    t0.skip('native backend not available');
    return;
  }
  const { n: N, A: K0, b: b0 } = readRecordedSystem(file);
  const K = new Float32Array(N * N);
  const t = new Float32Array(N);
  const prev = setBackend(native);
  try {
    const method = solveWithFallback(N, K, t, () => { K.set(K0); t.set(b0); });
    assert.ok(method === 'lu' || method === 'lstsq');
  } finally {
    setBackend(prev);
  }
  // Normal-equation residual Kᵀ(Kx − t) small against Kᵀt.
  const res = normalEquationResidual(K0, t, b0, N);
  assert.ok(res < 1e-3, `normal-equation residual ${res}`);
  assert.ok(t.every(Number.isFinite));
});
