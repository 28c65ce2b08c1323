/**
 * The linear algebra of the implicit Sinkhorn backward (method.md §2.3; Eisenberger et al.,
 * "A Unified Framework for Implicit Sinkhorn Differentiation", CVPR 2022, as copied into
 * fagp/sinkhorn-rebasin). For one m×n plan P with G = ∂L/∂P, λ = τ, â = P·1, b̂ = Pᵀ·1:
 *
 *     G̃ = −(1/λ) G ⊙ P,   t_a = G̃·1,   t_b = G̃ᵀ·1
 *     [[diag(â), P'], [P'ᵀ, diag(b̂')]] [d_a; d_b'] = [t_a; t_b']     (P' = P[:, :n−1], d_b = [d_b'; 0])
 *     ∂L/∂c = G̃ − P ⊙ (d_a 1ᵀ + 1 d_bᵀ),   ∂L/∂X = −scale · ∂L/∂c = scale · P ⊙ (G/λ + d_a 1ᵀ + 1 d_bᵀ)
 *
 * Solvers:
 * - 'dense' builds the (m+n−1)² matrix and calls kernels().solve (LU, least squares when singular),
 *   like the reference's torch.linalg.solve.
 * - 'schur-cg' eliminates d_a = diag(â)⁻¹(t_a − P d_b). The Schur complement
 *   L = diag(b̂) − Pᵀdiag(â)⁻¹P is a weighted graph Laplacian on the columns (weights
 *   W = Pᵀdiag(â)⁻¹P ≥ 0 with W·1 = b̂): symmetric positive semidefinite, null space 1 when P's
 *   support graph is connected. Instead of grounding one node (the reference's deletion; measured
 *   1.3–1.5× more CG iterations) we solve the consistent singular system L d_b = t_b − Pᵀdiag(â)⁻¹t_a (its right side
 *   sums to 0) by Jacobi-preconditioned CG; solutions differ only by the gauge (d_a + c, d_b − c),
 *   which leaves the gradient unchanged.
 *
 * Precision: for a sharp P (near a permutation) L is a small difference of O(1) terms
 * (b̂_j ≈ Σ_i P_ij²/â_i), so forming L·v as b̂⊙v − Pᵀ(diag(â)⁻¹Pv) in float32 is pure rounding noise
 * and CG breaks down. We therefore split each row's largest entry off, P = D + E with
 * D_{i,r(i)} = P_{i,r(i)}, and use the exact rewrite (s_i = Σ_{k≠r(i)} P_ik = â_i − P_{i,r(i)})
 *     m_i = ((E v)_i + P_{i,r(i)} v_{r(i)})/â_i,   e_i = (s_i v_{r(i)} − (E v)_i)/â_i = v_{r(i)} − m_i
 *     (L v)_j = c_j v_j − (Eᵀ m)_j + Σ_{i: r(i)=j} P_ij e_i,   c = Eᵀ·1,
 * in which no two O(1) terms cancel (the E products are small-times-large). The two products
 * with E go through kernels().gemm (matrix–vector, so the native backend runs them); the O(n)
 * remainder and the CG recurrences are float64.
 *
 * Nothing here keeps state between calls: the n² scratch buffer lives in a caller-owned
 * SinkhornWorkspace, and each call returns what it did (ImplicitGradInfo), which countSolve adds
 * to a caller-owned SinkhornDiagnostics.
 */
import { kernels } from '../core/backend/index.js';
import { jsKernels } from '../core/backend/js.js';
import type { FloatArray, Kernels } from '../core/backend/types.js';

/** The native addon's solve reports a LAPACK failure (not a bad argument) with this message. */
export function isLapackFailure(e: unknown): boolean {
  return e instanceof RangeError && e.message.includes('LAPACK reported an error');
}

export type KktSolver = 'dense' | 'schur-cg';

/** Counters of implicit-backward solves, owned by the caller (newSinkhornDiagnostics, then countSolve per solve). */
export interface SinkhornDiagnostics {
  /** Dense KKT solves (including those used as CG fallback). */
  denseSolves: number;
  /** Dense solves where LU failed (singular K: P's support is disconnected) and lstsq was used. */
  lstsqFallbacks: number;
  /** Schur-complement CG solves attempted. */
  cgSolves: number;
  /** CG iterations summed over all solves. */
  cgIterations: number;
  /** CG solves that missed the tolerance and were redone densely. */
  cgFallbacks: number;
  /** Iterations and achieved relative residual of the last CG solve. */
  lastCgIterations: number;
  lastCgResidual: number;
}

export function newSinkhornDiagnostics(): SinkhornDiagnostics {
  return { denseSolves: 0, lstsqFallbacks: 0, cgSolves: 0, cgIterations: 0, cgFallbacks: 0, lastCgIterations: 0, lastCgResidual: 0 };
}

/** Adds one implicitSinkhornGrad call, described by its returned info, to the counters. */
export function countSolve(d: SinkhornDiagnostics, info: ImplicitGradInfo): void {
  if (info.cgIterations !== undefined) {
    d.cgSolves++;
    d.cgIterations += info.cgIterations;
    d.lastCgIterations = info.cgIterations;
    d.lastCgResidual = info.cgResidual ?? NaN;
    if (info.cgFailed) d.cgFallbacks++;
  }
  if (info.method !== 'cg') d.denseSolves++;
  if (info.method === 'lstsq') d.lstsqFallbacks++;
}

/**
 * Scratch memory of the Schur-CG solver, owned by the caller: E (P minus each row's largest
 * entry) is m·n values, and reusing one buffer across backward passes avoids a fresh,
 * page-faulting allocation each time. Grown on demand; one buffer per dtype.
 */
export interface SinkhornWorkspace {
  f32: Float32Array | null;
  f64: Float64Array | null;
}

export function newSinkhornWorkspace(): SinkhornWorkspace {
  return { f32: null, f64: null };
}

/** Options of implicitSinkhornGrad. */
export interface ImplicitGradOptions {
  tau: number;
  scale: number;
  solver: KktSolver;
  cg?: CgOptions;
  /** Initial guess of d_b for Schur-CG (n values), e.g. the previous step's solution. */
  x0?: Float64Array | null;
  /** Where the n² scratch buffer lives; a fresh one per call when omitted. */
  workspace?: SinkhornWorkspace;
}

export interface CgOptions {
  /** Relative residual ‖r‖/‖rhs‖ to reach; default 1e-6 for float32 P, 1e-10 for float64. */
  tol?: number;
  /** Iteration cap (default 300); missing the tolerance triggers the dense fallback. */
  maxIter?: number;
}

/** What one implicitSinkhornGrad call did (countSolve turns it into counters). */
export interface ImplicitGradInfo {
  method: 'lu' | 'lstsq' | 'cg';
  /** Set when Schur-CG was tried: its iterations and final relative residual (also on failure). */
  cgIterations?: number;
  cgResidual?: number;
  /** True when CG missed its tolerance and the dense solve was used instead. */
  cgFailed?: boolean;
  /** The CG solution d_b (for warm starts), when CG succeeded. */
  db?: Float64Array;
}

function alloc(like: FloatArray, n: number): FloatArray {
  return like instanceof Float64Array ? new Float64Array(n) : new Float32Array(n);
}

/** n values of the workspace's buffer of like's dtype, grown if needed. */
function scratchLike(ws: SinkhornWorkspace, like: FloatArray, n: number): FloatArray {
  if (like instanceof Float64Array) {
    if (!ws.f64 || ws.f64.length < n) ws.f64 = new Float64Array(n);
    return ws.f64.subarray(0, n);
  }
  if (!ws.f32 || ws.f32.length < n) ws.f32 = new Float32Array(n);
  return ws.f32.subarray(0, n);
}

/** out = E v (E m×n row-major) as a gemm with N = 1 (every backend's gemm has a matrix–vector path). */
function matVec(k: Kernels, E: FloatArray, m: number, n: number, v: FloatArray, out: FloatArray): void {
  k.gemm(false, false, m, 1, n, 1, E, 0, n, v, 0, 1, 0, out, 0, 1);
}

/**
 * Writes ∂L/∂X for one plan P = S[off .. off+m·n) with upstream G (same layout) into gx, using the
 * chosen solver ('schur-cg' falls back to 'dense' when it misses its tolerance).
 */
export function implicitSinkhornGrad(S: FloatArray, G: FloatArray, off: number, m: number, n: number,
  gx: FloatArray, opts: ImplicitGradOptions): ImplicitGradInfo {
  const { tau, scale } = opts;
  let info: ImplicitGradInfo | null = null;
  if (opts.solver === 'schur-cg' && n > 1) {
    info = schurCg(S, G, off, m, n, 1 / tau, scale, gx, opts.cg ?? {}, opts.x0 ?? null, opts.workspace ?? newSinkhornWorkspace());
    if (!info.cgFailed) return info;
  }
  const method = denseGrad(S, G, off, m, n, 1 / tau, scale, gx);
  return info ? { ...info, method } : { method };
}

/** The reference path: achieved marginals, the dense KKT solve, then the gradient. */
function denseGrad(S: FloatArray, G: FloatArray, off: number, m: number, n: number, invLambda: number,
  scale: number, gx: FloatArray): 'lu' | 'lstsq' {
  const aHat = new Float64Array(m);
  const bHat = new Float64Array(n);
  const ta = new Float64Array(m);
  const tb = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    const r = off + i * n;
    let sa = 0;
    let st = 0;
    for (let j = 0; j < n; j++) {
      const p = S[r + j];
      const gt = -invLambda * G[r + j] * p; // G̃
      sa += p;
      st += gt;
      bHat[j] += p;
      tb[j] += gt;
    }
    aHat[i] = sa;
    ta[i] = st;
  }
  const sol = solveKktDense(S, off, m, n, aHat, bHat, ta, tb);
  for (let i = 0; i < m; i++) {
    const r = off + i * n;
    const dai = sol.da[i];
    for (let j = 0; j < n; j++) gx[r + j] = scale * S[r + j] * (G[r + j] * invLambda + dai + sol.db[j]);
  }
  return sol.method;
}

/**
 * kernels().solve of the N×N system K x = t (x into t), writing K and t with `fill` first. When the
 * addon's LAPACK fails on it — gelsd's SVD can, on the near-hard plans of an annealed τ ("failed
 * to converge", or an illegal scaling inside it; seen single-threaded) — the pure-TS solve takes
 * the same system, refilled (the failed call overwrote K and t). Every entry `fill` does not write
 * must be 0.
 */
export function solveWithFallback(N: number, K: FloatArray, t: FloatArray, fill: () => void): 'lu' | 'lstsq' {
  fill();
  try {
    return kernels().solve(N, 1, K, t);
  } catch (e) {
    if (!isLapackFailure(e)) throw e;
    K.fill(0);
    fill();
    return jsKernels.solve(N, 1, K, t);
  }
}

/** Dense solve of the (m+n−1)² KKT system, exactly as in the reference. P is P[off .. off+m·n). */
export function solveKktDense(P: FloatArray, off: number, m: number, n: number,
  aHat: Float64Array, bHat: Float64Array, ta: Float64Array, tb: Float64Array): { da: Float64Array; db: Float64Array; method: 'lu' | 'lstsq' } {
  const N = m + n - 1;
  const K = alloc(P, N * N);
  const t = alloc(P, N);
  // Every entry it does not write is 0 (K is fresh; solveWithFallback zeroes it before a refill).
  const fill = () => {
    for (let i = 0; i < m; i++) {
      K[i * N + i] = aHat[i];
      t[i] = ta[i];
      K.set(P.subarray(off + i * n, off + i * n + n - 1), i * N + m);
    }
    // Lower-left block P'ᵀ, transposed in tiles so both sides stay in cache.
    const T = 32;
    for (let i0 = 0; i0 < m; i0 += T) {
      const i1 = Math.min(i0 + T, m);
      for (let j0 = 0; j0 < n - 1; j0 += T) {
        const j1 = Math.min(j0 + T, n - 1);
        for (let j = j0; j < j1; j++) {
          const row = (m + j) * N;
          for (let i = i0; i < i1; i++) K[row + i] = P[off + i * n + j];
        }
      }
    }
    for (let j = 0; j < n - 1; j++) {
      K[(m + j) * N + m + j] = bHat[j];
      t[m + j] = tb[j];
    }
  };
  const method = solveWithFallback(N, K, t, fill);
  const da = new Float64Array(m);
  const db = new Float64Array(n);
  for (let i = 0; i < m; i++) da[i] = t[i];
  for (let j = 0; j < n - 1; j++) db[j] = t[m + j];
  return { da, db, method };
}

/**
 * Schur-complement CG (see the file comment). Writes gx and returns its info on success; on
 * failure returns { cgFailed: true } and leaves gx to the dense path.
 */
function schurCg(S: FloatArray, G: FloatArray, off: number, m: number, n: number, invLambda: number, scale: number,
  gx: FloatArray, opts: CgOptions, x0: Float64Array | null, ws: SinkhornWorkspace): ImplicitGradInfo {
  const k = kernels();
  const f64 = S instanceof Float64Array;
  const tol = opts.tol ?? (f64 ? 1e-10 : 1e-6);
  const maxIter = opts.maxIter ?? 300;
  const fail = (iters: number, res: number): ImplicitGradInfo => ({ method: 'cg', cgIterations: iters, cgResidual: res, cgFailed: true });

  // Per row, one pass from memory and one over the cached row: â_i, t_a,i and r(i) first, then
  // s_i, the column sums c of E, the Jacobi diagonal diag(L)_j = Σ_i P_ij(â_i − P_ij)/â_i and
  // rhs_j = Σ_i (G̃_ij − P_ij t_a,i/â_i), whose dominant terms are rewritten without cancellation:
  // G̃_ir − P_ir t_a,i/â_i = (G̃_ir s_i − P_ir Σ_{k≠r} G̃_ik)/â_i.
  const mn = m * n;
  const E = scratchLike(ws, S, mn);
  E.set(S.subarray(off, off + mn));
  const rIdx = new Int32Array(m);
  const pr = new Float64Array(m);
  const sOff = new Float64Array(m);
  const ta = new Float64Array(m);
  const invA = new Float64Array(m);
  const c = new Float64Array(n);
  const diag = new Float64Array(n);
  const rhs = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    const row = off + i * n;
    let sa = 0;
    let sg = 0;
    let best = 0;
    let bv = -1;
    for (let j = 0; j < n; j++) {
      const p = S[row + j];
      sa += p;
      sg += G[row + j] * p;
      if (p > bv) { bv = p; best = j; }
    }
    const a = sa;
    const ia = 1 / a;
    const tai = -invLambda * sg;
    const q = tai * ia;
    let s = 0;
    let tOff = 0;
    for (let pass = 0; pass < 2; pass++) {
      const j0 = pass === 0 ? 0 : best + 1;
      const j1 = pass === 0 ? best : n;
      for (let j = j0; j < j1; j++) {
        const p = S[row + j];
        const gt = -invLambda * G[row + j] * p;
        s += p;
        tOff += gt;
        c[j] += p;
        diag[j] += p * (a - p) * ia;
        rhs[j] += gt - p * q;
      }
    }
    const gtr = -invLambda * G[row + best] * bv;
    diag[best] += bv * s * ia;
    rhs[best] += (gtr * s - bv * tOff) * ia;
    E[i * n + best] = 0;
    rIdx[i] = best;
    pr[i] = bv;
    sOff[i] = s;
    ta[i] = tai;
    invA[i] = ia;
  }
  let mean = 0;
  for (let j = 0; j < n; j++) mean += rhs[j];
  mean /= n;
  for (let j = 0; j < n; j++) rhs[j] -= mean; // 1ᵀ rhs = 0 up to rounding: make the system consistent
  const invD = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    if (!(diag[j] > 0) || !Number.isFinite(diag[j])) return fail(0, Infinity); // isolated column: disconnected support
    invD[j] = 1 / diag[j];
  }

  const vIn = alloc(S, n);
  const wOut = alloc(S, m);
  const mIn = alloc(S, m);
  const uOut = alloc(S, n);
  // y = L v by the cancellation-free split.
  const applyL = (v: Float64Array, y: Float64Array): void => {
    for (let j = 0; j < n; j++) vIn[j] = v[j];
    matVec(k, E, m, n, vIn, wOut);
    for (let i = 0; i < m; i++) mIn[i] = (wOut[i] + pr[i] * v[rIdx[i]]) * invA[i];
    k.gemm(false, false, 1, n, m, 1, mIn, 0, m, E, 0, n, 0, uOut, 0, n);
    for (let j = 0; j < n; j++) y[j] = c[j] * v[j] - uOut[j];
    for (let i = 0; i < m; i++) {
      const ri = rIdx[i];
      y[ri] += pr[i] * (sOff[i] * v[ri] - wOut[i]) * invA[i];
    }
  };

  const x = new Float64Array(n);
  const r = Float64Array.from(rhs);
  const q = new Float64Array(n);
  let rhsNorm = 0;
  for (let j = 0; j < n; j++) rhsNorm += rhs[j] * rhs[j];
  rhsNorm = Math.sqrt(rhsNorm);
  let iters = 0;
  let relres = 0;
  if (rhsNorm > 0) {
    if (x0 && x0.length === n) {
      x.set(x0);
      applyL(x, q);
      for (let j = 0; j < n; j++) r[j] -= q[j];
    }
    const z = new Float64Array(n);
    const p = new Float64Array(n);
    let rz = 0;
    let rr = 0;
    for (let j = 0; j < n; j++) { z[j] = r[j] * invD[j]; p[j] = z[j]; rz += r[j] * z[j]; rr += r[j] * r[j]; }
    relres = Math.sqrt(rr) / rhsNorm;
    while (relres > tol && iters < maxIter) {
      applyL(p, q);
      let pq = 0;
      for (let j = 0; j < n; j++) pq += p[j] * q[j];
      if (!(pq > 0)) break; // breakdown: not positive definite in floating point
      const alpha = rz / pq;
      rr = 0;
      for (let j = 0; j < n; j++) { x[j] += alpha * p[j]; r[j] -= alpha * q[j]; rr += r[j] * r[j]; }
      iters++;
      relres = Math.sqrt(rr) / rhsNorm;
      if (relres <= tol) break;
      let rzNew = 0;
      for (let j = 0; j < n; j++) { z[j] = r[j] * invD[j]; rzNew += r[j] * z[j]; }
      const beta = rzNew / rz;
      rz = rzNew;
      for (let j = 0; j < n; j++) p[j] = z[j] + beta * p[j];
    }
  } else {
    x.fill(0);
  }
  if (!(relres <= tol)) return fail(iters, relres);

  // Fix the gauge (mean 0) so warm starts do not drift. Then U_ij = μ_i + (d_b,j − d_b,r(i)) with
  // μ_i = d_a,i + d_b,r(i) = (t_a,i − Σ_k P_ik (d_b,k − d_b,r(i)))/â_i and
  // Σ_k P_ik (d_b,k − d_b,r(i)) = (E d_b)_i − s_i d_b,r(i): only gauge-free differences.
  let xm = 0;
  for (let j = 0; j < n; j++) xm += x[j];
  xm /= n;
  for (let j = 0; j < n; j++) { x[j] -= xm; vIn[j] = x[j]; }
  matVec(k, E, m, n, vIn, wOut);
  for (let i = 0; i < m; i++) {
    const row = off + i * n;
    const xr = x[rIdx[i]];
    const mu = (ta[i] - (wOut[i] - sOff[i] * xr)) * invA[i];
    // At the dominant entry x_j − x_r is exactly 0, so U_ir = μ_i carries no gauge rounding.
    for (let j = 0; j < n; j++) gx[row + j] = scale * S[row + j] * (G[row + j] * invLambda + mu + (x[j] - xr));
  }
  return { method: 'cg', cgIterations: iters, cgResidual: relres, db: x };
}
