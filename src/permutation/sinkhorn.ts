/**
 * The Sinkhorn operator with implicit differentiation: the soft permutation of Sinkhorn re-basin
 * (Peña et al., "Re-basin via implicit Sinkhorn differentiation", CVPR 2023, §3; code
 * fagp/sinkhorn-rebasin `rebasin/rebasinnet/sinkhorn.py`, itself Eisenberger et al., CVPR 2022).
 * See the method reference (shared/reference/method.md) §2.1–2.3.
 *
 * Forward (log domain, fixed iteration count, no convergence test):
 *     logP ← scale·X/τ                         (the reference's c = −scale·X, λ = τ, logP = −c/λ)
 *     repeat iters times:
 *         logP[:, j] −= logsumexp_i logP[i, j] − log b_j     (columns first)
 *         logP[i, :] −= logsumexp_j logP[i, j] − log a_i     (then rows)
 *     S = exp(logP)
 * with a = 1_m, b = 1_n (square; for m ≠ n we use b = (m/n)·1_n so the marginals balance).
 *
 * Implicit backward (the derivative of the converged entropic OT plan by the implicit function
 * theorem, method.md §2.3 steps 1–7), G = ∂L/∂S, λ = τ, â = P·1, b̂ = Pᵀ·1 (achieved marginals):
 *     G̃ = −(1/λ) G ⊙ P;   t = [G̃·1 ; (G̃ᵀ·1)[0..n−2]]
 *     [[diag(â), P'], [P'ᵀ, diag(b̂')]] [d_a; d_b'] = t        (P' = P[:, :n−1]; see kkt.ts)
 *     U = d_a 1ᵀ + 1 d_bᵀ (d_b = [d_b'; 0]);   ∂L/∂c = G̃ − P ⊙ U;   ∂L/∂X = −scale · ∂L/∂c
 * i.e. ∂L/∂X = scale · P ⊙ (G/τ + U). Memory O(n²), independent of iters.
 *
 * `backward: 'unrolled'` instead back-propagates through the iterations (for comparison).
 */
import { kernels } from '../core/backend/index.js';
import type { FloatArray } from '../core/backend/types.js';
import { allocLike, makeResult, Tensor, shapeStr } from '../core/tensor.js';
import { countSolve, implicitSinkhornGrad, newSinkhornWorkspace } from './kkt.js';
import type { CgOptions, KktSolver, SinkhornDiagnostics, SinkhornWorkspace } from './kkt.js';

export { countSolve, implicitSinkhornGrad, newSinkhornDiagnostics, newSinkhornWorkspace, solveKktDense } from './kkt.js';
export type { SinkhornDiagnostics, SinkhornWorkspace, CgOptions, KktSolver, ImplicitGradInfo, ImplicitGradOptions } from './kkt.js';

/** Carries the previous Schur-CG solution between backward passes of one permutation. */
export interface CgWarmStart {
  /** d_b of the last solve, batch·n values, or null before the first. */
  db: Float64Array | null;
}

export interface SinkhornFallback {
  /** 'lstsq': the dense KKT matrix was singular; 'cg': Schur CG missed its tolerance (dense used). */
  kind: 'lstsq' | 'cg';
  /** Index in the batch (0 for a single matrix). */
  batchIndex: number;
  m: number;
  n: number;
  cgIterations?: number;
  cgResidual?: number;
}

export interface SinkhornOptions {
  /** Temperature τ > 0 (the reference's lambd_sink); default 1. */
  tau?: number;
  /** The method's l: logP = scale·X/τ; default 1. */
  scale?: number;
  /** Sinkhorn iterations (each = columns then rows); default 20. */
  iters?: number;
  /** 'implicit' (default, the method) or 'unrolled' (backprop through the iterations). */
  backward?: 'implicit' | 'unrolled';
  /** KKT solver of the implicit backward; default 'schur-cg' (falls back to 'dense' when needed). */
  kkt?: KktSolver;
  /** Schur-CG tolerance / iteration cap. */
  cg?: CgOptions;
  /** Warm start for Schur-CG: keep one object per permutation across training steps. */
  warmStart?: CgWarmStart;
  /**
   * Scratch memory of the Schur-CG backward (an m·n buffer): keep one (newSinkhornWorkspace())
   * across training steps to skip a fresh allocation per backward. Without it each sinkhorn()
   * call gets its own.
   */
  workspace?: SinkhornWorkspace;
  /** The backward counts its solves and fallbacks into this caller-owned object (newSinkhornDiagnostics()). */
  diagnostics?: SinkhornDiagnostics;
  /** Called on every solver fallback (they are also counted in `diagnostics`); nothing is printed. */
  onFallback?: (info: SinkhornFallback) => void;
}

function fmtIndex(batched: boolean, b: number, i: number, j: number): string {
  return batched ? `[${b}, ${i}, ${j}]` : `[${i}, ${j}]`;
}

interface Resolved {
  tau: number; scale: number; iters: number; backward: 'implicit' | 'unrolled'; kkt: KktSolver;
}

function resolveOptions(opts: SinkhornOptions): Resolved {
  const tau = opts.tau ?? 1;
  const scale = opts.scale ?? 1;
  const iters = opts.iters ?? 20;
  const backward = opts.backward ?? 'implicit';
  const kkt = opts.kkt ?? 'schur-cg';
  if (typeof tau !== 'number' || !(tau > 0) || !Number.isFinite(tau)) throw new Error(`sinkhorn: tau must be a finite number > 0, got ${tau}`);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new Error(`sinkhorn: scale must be a finite number, got ${scale}`);
  if (!Number.isInteger(iters) || iters < 1) throw new Error(`sinkhorn: iters must be an integer ≥ 1, got ${iters}`);
  if (backward !== 'implicit' && backward !== 'unrolled') throw new Error(`sinkhorn: backward must be 'implicit' or 'unrolled', got '${String(backward)}'`);
  if (kkt !== 'dense' && kkt !== 'schur-cg') throw new Error(`sinkhorn: kkt must be 'dense' or 'schur-cg', got '${String(kkt)}'`);
  const cg = opts.cg ?? {};
  if (cg.tol !== undefined && !(cg.tol > 0 && cg.tol < 1)) throw new Error(`sinkhorn: cg.tol must be in (0, 1), got ${cg.tol}`);
  if (cg.maxIter !== undefined && !(Number.isInteger(cg.maxIter) && cg.maxIter >= 1)) throw new Error(`sinkhorn: cg.maxIter must be an integer ≥ 1, got ${cg.maxIter}`);
  return { tau, scale, iters, backward, kkt };
}

/**
 * Soft permutation S = Sinkhorn(scale·X/τ) of a learnable X ([n, n], [m, n] or a batch [B, m, n]).
 * Rows of S sum to 1 exactly after the last (row) normalisation; columns to 1 (m/n if m ≠ n) up to
 * the convergence of `iters` iterations. −Inf entries of X are allowed (forbidden assignments, S = 0
 * there, zero gradient) as long as no row or column is entirely −Inf; NaN and +Inf are errors.
 */
export function sinkhorn(X: Tensor, opts: SinkhornOptions = {}): Tensor {
  const o = resolveOptions(opts);
  if (X.ndim !== 2 && X.ndim !== 3) throw new Error(`sinkhorn: X must be [m, n] or [B, m, n], got ${shapeStr(X.shape)}`);
  const batched = X.ndim === 3;
  const batch = batched ? X.shape[0] : 1;
  const m = X.shape[X.ndim - 2];
  const n = X.shape[X.ndim - 1];
  if (m === 0 || n === 0) throw new Error(`sinkhorn: X must not be empty, got ${shapeStr(X.shape)}`);
  const factor = o.scale / o.tau;

  // logP = scale·X/τ by the backend; the detailed (slow) check only runs when something is not finite.
  const k = kernels();
  const logP = allocLike(X.dtype, X.size);
  k.affine(X.data, factor, 0, logP);
  let finite = true;
  for (let q = 0; q < logP.length; q++) {
    const v = logP[q];
    if (v - v !== 0) { finite = false; break; } // NaN or ±Inf
  }
  if (!finite) checkNonFinite(X, logP, batch, m, n, o.scale, factor);

  const logB = m === n ? null : allocLike(X.dtype, n).fill(Math.log(m / n));
  const unrolled = o.backward === 'unrolled' && X.requiresGrad;
  const lse = unrolled ? sinkhornLogRecorded(logP, batch, m, n, o.iters, logB) : null;
  if (!unrolled) k.sinkhornLog(logP, batch, m, n, o.iters, null, logB);
  // The implicit backward needs only S, so exponentiate in place unless the iterates are needed.
  const S = unrolled ? allocLike(X.dtype, X.size) : logP;
  k.unary('exp', logP, S);

  const opName = o.backward === 'implicit' ? 'sinkhorn' : 'sinkhornUnrolled';
  const workspace = opts.workspace ?? newSinkhornWorkspace();
  return makeResult(opName, X.shape, S, [X], (g) => {
    if (lse) return [unrolledBackward(g, logP, lse, batch, m, n, o.iters, logB, factor)];
    const gx = allocLike(X.dtype, X.size);
    for (let b = 0; b < batch; b++) implicitBackward(S, g, gx, b, m, n, o, opts, workspace);
    return [gx];
  });
}

/**
 * Explains the first non-finite value of logP = factor·X: NaN/+Inf in X, −Inf with scale ≤ 0,
 * overflow, or a row/column that is entirely −Inf (no feasible plan). Otherwise (only −Inf
 * entries, allowed) it returns.
 */
function checkNonFinite(X: Tensor, logP: FloatArray, batch: number, m: number, n: number, scale: number, factor: number): void {
  const batched = X.ndim === 3;
  const x = X.data;
  const f32 = logP instanceof Float32Array;
  for (let b = 0; b < batch; b++) {
    const rowOk = new Uint8Array(m);
    const colOk = new Uint8Array(n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        const idx = b * m * n + i * n + j;
        const v = x[idx];
        const at = fmtIndex(batched, b, i, j);
        if (v !== v) throw new Error(`sinkhorn: X contains NaN at ${at}`);
        if (v === Infinity) throw new Error(`sinkhorn: X contains +Inf at ${at}`);
        if (v === -Infinity) {
          if (!(scale > 0)) throw new Error(`sinkhorn: X contains -Inf at ${at}, which needs scale > 0 (got ${scale})`);
          continue;
        }
        const s = factor * v;
        if (!Number.isFinite(f32 ? Math.fround(s) : s)) {
          throw new Error(`sinkhorn: scale·X/τ overflows at ${at} (X = ${v}, scale/τ = ${factor})`);
        }
        rowOk[i] = 1;
        colOk[j] = 1;
      }
    }
    const where = batched ? ` of batch item ${b}` : '';
    const badRow = rowOk.indexOf(0);
    if (badRow >= 0) throw new Error(`sinkhorn: row ${badRow}${where} of X is entirely -Inf`);
    const badCol = colOk.indexOf(0);
    if (badCol >= 0) throw new Error(`sinkhorn: column ${badCol}${where} of X is entirely -Inf`);
  }
}

/** Same iterations as kernels().sinkhornLog, but keeping every logsumexp vector for the unrolled backward. */
function sinkhornLogRecorded(logP: FloatArray, batch: number, m: number, n: number, iters: number,
  logB: FloatArray | null): Float64Array[] {
  const k = kernels();
  const mn = m * n;
  const colL = allocLike(logP instanceof Float64Array ? 'float64' : 'float32', n);
  const rowL = allocLike(logP instanceof Float64Array ? 'float64' : 'float32', m);
  const saved: Float64Array[] = [];
  for (let b = 0; b < batch; b++) {
    const P = logP.subarray(b * mn, (b + 1) * mn);
    for (let it = 0; it < iters; it++) {
      k.logsumexp(P, 1, m, n, colL);
      const c = new Float64Array(n);
      for (let j = 0; j < n; j++) c[j] = colL[j] - (logB ? logB[j] : 0);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) P[i * n + j] -= c[j];
      k.logsumexp(P, m, n, 1, rowL);
      const r = Float64Array.from(rowL);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) P[i * n + j] -= r[i];
      saved.push(c, r);
    }
  }
  return saved;
}

/**
 * Back-propagation through the iterations. A normalisation y = x − lse(x) (+ log marginal) has
 * the adjoint g_x = g_y − exp(y − log marginal) ⊙ Σ g_y along the normalised axis; x is recovered
 * from y by adding the stored lse back, so only the lse vectors are kept.
 */
function unrolledBackward(G: FloatArray, logP: FloatArray, lse: Float64Array[], batch: number, m: number, n: number,
  iters: number, logB: FloatArray | null, factor: number): FloatArray {
  const mn = m * n;
  const gx = allocLike(G instanceof Float64Array ? 'float64' : 'float32', G.length);
  const g = new Float64Array(mn);
  const y = new Float64Array(mn);
  const acc = new Float64Array(Math.max(m, n));
  for (let b = 0; b < batch; b++) {
    for (let q = 0; q < mn; q++) {
      y[q] = logP[b * mn + q];
      g[q] = G[b * mn + q] * Math.exp(y[q]); // through S = exp(logP)
    }
    for (let it = iters - 1; it >= 0; it--) {
      const c = lse[(b * iters + it) * 2];
      const r = lse[(b * iters + it) * 2 + 1];
      // Row step.
      for (let i = 0; i < m; i++) {
        let s = 0;
        for (let j = 0; j < n; j++) s += g[i * n + j];
        for (let j = 0; j < n; j++) { const q = i * n + j; g[q] -= Math.exp(y[q]) * s; y[q] += r[i]; }
      }
      // Column step.
      acc.fill(0, 0, n);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) acc[j] += g[i * n + j];
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          const q = i * n + j;
          g[q] -= Math.exp(y[q] - (logB ? logB[j] : 0)) * acc[j];
          y[q] += c[j];
        }
      }
    }
    for (let q = 0; q < mn; q++) gx[b * mn + q] = factor * g[q];
  }
  return gx;
}

/** Implicit gradient of batch item b into gx, with the warm start, the counters and fallback reporting. */
function implicitBackward(S: FloatArray, G: FloatArray, gx: FloatArray, b: number, m: number, n: number,
  o: Resolved, opts: SinkhornOptions, workspace: SinkhornWorkspace): void {
  const warm = opts.warmStart;
  const batch = S.length / (m * n);
  const x0 = warm?.db && warm.db.length === batch * n ? warm.db.subarray(b * n, (b + 1) * n) : null;
  const info = implicitSinkhornGrad(S, G, b * m * n, m, n, gx, { tau: o.tau, scale: o.scale, solver: o.kkt, cg: opts.cg, x0, workspace });
  if (warm && info.db) {
    if (!warm.db || warm.db.length !== batch * n) warm.db = new Float64Array(batch * n);
    warm.db.set(info.db, b * n);
  }
  if (opts.diagnostics) countSolve(opts.diagnostics, info);
  if (info.cgFailed) opts.onFallback?.({ kind: 'cg', batchIndex: b, m, n, cgIterations: info.cgIterations, cgResidual: info.cgResidual });
  if (info.method === 'lstsq') opts.onFallback?.({ kind: 'lstsq', batchIndex: b, m, n });
}
