/**
 * Pure-TypeScript kernels: always available, dtype-generic (float32 or float64), and the reference
 * the native kernels are tested against. Written for clarity first, with the loops that dominate
 * training (gemm, conv, elementwise) arranged to be cache-friendly.
 */
import { geluDerivative, geluScalar } from './erf.js';
import type { BinaryOp, ConvGeometry, FloatArray, Kernels, PoolGeometry, UnaryOp } from './types.js';

function gemm(
  transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  A: FloatArray, aOff: number, lda: number,
  B: FloatArray, bOff: number, ldb: number,
  beta: number, C: FloatArray, cOff: number, ldc: number,
): void {
  for (let i = 0; i < M; i++) {
    const c0 = cOff + i * ldc;
    if (beta === 0) for (let j = 0; j < N; j++) C[c0 + j] = 0;
    else if (beta !== 1) for (let j = 0; j < N; j++) C[c0 + j] *= beta;
  }
  if (alpha === 0 || K === 0) return;
  if (N === 1 && !transA) {
    // Matrix–vector: one contiguous dot product per row of A (the i-k-j loop below would run its
    // inner loop over a single column).
    const contiguous = transB || ldb === 1;
    for (let i = 0; i < M; i++) {
      const a0 = aOff + i * lda;
      let s = 0;
      if (contiguous) for (let k = 0; k < K; k++) s += A[a0 + k] * B[bOff + k];
      else for (let k = 0; k < K; k++) s += A[a0 + k] * B[bOff + k * ldb];
      C[cOff + i * ldc] += alpha * s;
    }
    return;
  }
  // i-k-j order keeps the innermost loop contiguous in B and C when B is not transposed.
  if (!transB) {
    for (let i = 0; i < M; i++) {
      const c0 = cOff + i * ldc;
      for (let k = 0; k < K; k++) {
        const a = alpha * (transA ? A[aOff + k * lda + i] : A[aOff + i * lda + k]);
        if (a === 0) continue;
        const b0 = bOff + k * ldb;
        for (let j = 0; j < N; j++) C[c0 + j] += a * B[b0 + j];
      }
    }
  } else {
    for (let i = 0; i < M; i++) {
      const c0 = cOff + i * ldc;
      for (let j = 0; j < N; j++) {
        const b0 = bOff + j * ldb;
        let s = 0;
        if (transA) for (let k = 0; k < K; k++) s += A[aOff + k * lda + i] * B[b0 + k];
        else {
          const a0 = aOff + i * lda;
          for (let k = 0; k < K; k++) s += A[a0 + k] * B[b0 + k];
        }
        C[c0 + j] += alpha * s;
      }
    }
  }
}

function gemmStrided(
  transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  A: FloatArray, aOff: number, strideA: number,
  B: FloatArray, bOff: number, strideB: number,
  beta: number, C: FloatArray, cOff: number, strideC: number, count: number,
): void {
  const lda = transA ? M : K;
  const ldb = transB ? K : N;
  for (let b = 0; b < count; b++) {
    gemm(transA, transB, M, N, K, alpha, A, aOff + b * strideA, lda, B, bOff + b * strideB, ldb, beta, C, cOff + b * strideC, N);
  }
}

/** LU with partial pivoting in float64; returns false when a pivot is (numerically) zero. */
function luSolve(n: number, nrhs: number, A: Float64Array, B: Float64Array): boolean {
  let maxAbs = 0;
  for (let i = 0; i < n * n; i++) maxAbs = Math.max(maxAbs, Math.abs(A[i]));
  const tiny = maxAbs * n * 1e-14;
  for (let k = 0; k < n; k++) {
    let p = k;
    let best = Math.abs(A[k * n + k]);
    for (let i = k + 1; i < n; i++) {
      const v = Math.abs(A[i * n + k]);
      if (v > best) { best = v; p = i; }
    }
    if (!(best > tiny)) return false;
    if (p !== k) {
      for (let j = 0; j < n; j++) { const t = A[k * n + j]; A[k * n + j] = A[p * n + j]; A[p * n + j] = t; }
      for (let j = 0; j < nrhs; j++) { const t = B[k * nrhs + j]; B[k * nrhs + j] = B[p * nrhs + j]; B[p * nrhs + j] = t; }
    }
    const piv = A[k * n + k];
    for (let i = k + 1; i < n; i++) {
      const f = A[i * n + k] / piv;
      if (f === 0) continue;
      A[i * n + k] = f;
      for (let j = k + 1; j < n; j++) A[i * n + j] -= f * A[k * n + j];
      for (let j = 0; j < nrhs; j++) B[i * nrhs + j] -= f * B[k * nrhs + j];
    }
  }
  for (let k = n - 1; k >= 0; k--) {
    const piv = A[k * n + k];
    for (let j = 0; j < nrhs; j++) {
      let s = B[k * nrhs + j];
      for (let i = k + 1; i < n; i++) s -= A[k * n + i] * B[i * nrhs + j];
      B[k * nrhs + j] = s / piv;
    }
  }
  for (let i = 0; i < n * nrhs; i++) if (!Number.isFinite(B[i])) return false;
  return true;
}

/**
 * Minimum-norm least squares through a ridge-regularised normal equation
 * (AᵀA + εI) x = Aᵀb solved by Cholesky-free LU; ε is scaled to AᵀA's trace so the
 * answer minimises the residual on the column space and stays bounded on the null space.
 */
function lstsqSolve(n: number, nrhs: number, A: Float64Array, B: Float64Array): void {
  const AtA = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    for (let i = 0; i < n; i++) {
      const aki = A[k * n + i];
      if (aki === 0) continue;
      for (let j = 0; j < n; j++) AtA[i * n + j] += aki * A[k * n + j];
    }
  }
  let trace = 0;
  for (let i = 0; i < n; i++) trace += AtA[i * n + i];
  const eps = Math.max(trace / Math.max(n, 1), 1e-300) * 1e-10;
  for (let i = 0; i < n; i++) AtA[i * n + i] += eps;
  const AtB = new Float64Array(n * nrhs);
  for (let k = 0; k < n; k++) {
    for (let i = 0; i < n; i++) {
      const aki = A[k * n + i];
      if (aki === 0) continue;
      for (let j = 0; j < nrhs; j++) AtB[i * nrhs + j] += aki * B[k * nrhs + j];
    }
  }
  if (!luSolve(n, nrhs, AtA, AtB)) AtB.fill(0);
  B.set(AtB);
}

/** Both backends refuse non-finite systems up front: LU would only turn them into NaN answers. */
function assertFiniteSystem(n: number, nrhs: number, A: FloatArray, B: FloatArray): void {
  for (let i = 0; i < n * n; i++) {
    if (!Number.isFinite(A[i])) throw new RangeError(`solve: the ${n}×${n} matrix has a non-finite value (${A[i]}) at row ${Math.floor(i / n)}, column ${i % n}`);
  }
  for (let i = 0; i < n * nrhs; i++) {
    if (!Number.isFinite(B[i])) throw new RangeError(`solve: the right-hand side has a non-finite value (${B[i]}) at row ${Math.floor(i / nrhs)}, column ${i % nrhs}`);
  }
}

function solve(n: number, nrhs: number, A: FloatArray, B: FloatArray): 'lu' | 'lstsq' {
  if (A.length < n * n || B.length < n * nrhs) {
    throw new RangeError(`solve: arrays too small for n=${n}, nrhs=${nrhs} (A has ${A.length}, B has ${B.length})`);
  }
  assertFiniteSystem(n, nrhs, A, B);
  const A64 = Float64Array.from(A.subarray(0, n * n));
  const B64 = Float64Array.from(B.subarray(0, n * nrhs));
  const origA = Float64Array.from(A64);
  const origB = Float64Array.from(B64);
  let method: 'lu' | 'lstsq' = 'lu';
  if (!luSolve(n, nrhs, A64, B64)) {
    method = 'lstsq';
    B64.set(origB);
    lstsqSolve(n, nrhs, origA, B64);
  }
  for (let i = 0; i < n * nrhs; i++) B[i] = B64[i];
  return method;
}

function logsumexp(x: FloatArray, outer: number, len: number, inner: number, out: FloatArray): void {
  for (let o = 0; o < outer; o++) {
    const base = o * len * inner;
    for (let i = 0; i < inner; i++) {
      let m = -Infinity;
      for (let l = 0; l < len; l++) {
        const v = x[base + l * inner + i];
        if (v > m) m = v;
      }
      if (m === -Infinity || !Number.isFinite(m)) {
        out[o * inner + i] = Number.isNaN(m) ? NaN : m;
        continue;
      }
      let s = 0;
      for (let l = 0; l < len; l++) s += Math.exp(x[base + l * inner + i] - m);
      out[o * inner + i] = m + Math.log(s);
    }
  }
}

function logsumexpBackward(x: FloatArray, outer: number, len: number, inner: number, lse: FloatArray, g: FloatArray, gx: FloatArray): void {
  for (let o = 0; o < outer; o++) {
    for (let l = 0; l < len; l++) {
      const base = (o * len + l) * inner;
      for (let i = 0; i < inner; i++) {
        const m = lse[o * inner + i];
        gx[base + i] = m === -Infinity ? 0 : g[o * inner + i] * Math.exp(x[base + i] - m);
      }
    }
  }
}

function sinkhornLog(logP: FloatArray, batch: number, m: number, n: number, iters: number,
  logA: FloatArray | null, logB: FloatArray | null): void {
  const colLse = new Float64Array(n);
  for (let b = 0; b < batch; b++) {
    const off = b * m * n;
    for (let it = 0; it < iters; it++) {
      // Columns: running max then sum of exps, row-major friendly.
      colLse.fill(-Infinity);
      for (let i = 0; i < m; i++) {
        const r = off + i * n;
        for (let j = 0; j < n; j++) if (logP[r + j] > colLse[j]) colLse[j] = logP[r + j];
      }
      const colMax = Float64Array.from(colLse);
      const colSum = new Float64Array(n);
      for (let i = 0; i < m; i++) {
        const r = off + i * n;
        for (let j = 0; j < n; j++) if (colMax[j] !== -Infinity) colSum[j] += Math.exp(logP[r + j] - colMax[j]);
      }
      for (let j = 0; j < n; j++) {
        colLse[j] = colMax[j] === -Infinity ? -Infinity : colMax[j] + Math.log(colSum[j]);
        if (logB) colLse[j] -= logB[j];
      }
      for (let i = 0; i < m; i++) {
        const r = off + i * n;
        for (let j = 0; j < n; j++) logP[r + j] -= colLse[j];
      }
      // Rows.
      for (let i = 0; i < m; i++) {
        const r = off + i * n;
        let mx = -Infinity;
        for (let j = 0; j < n; j++) if (logP[r + j] > mx) mx = logP[r + j];
        let lse = mx;
        if (mx !== -Infinity) {
          let s = 0;
          for (let j = 0; j < n; j++) s += Math.exp(logP[r + j] - mx);
          lse = mx + Math.log(s);
        }
        if (logA) lse -= logA[i];
        for (let j = 0; j < n; j++) logP[r + j] -= lse;
      }
    }
  }
}

function sumAxis(x: FloatArray, outer: number, len: number, inner: number, out: FloatArray): void {
  for (let o = 0; o < outer; o++) {
    const ob = o * inner;
    for (let i = 0; i < inner; i++) out[ob + i] = 0;
    const base = o * len * inner;
    for (let l = 0; l < len; l++) {
      const r = base + l * inner;
      for (let i = 0; i < inner; i++) out[ob + i] += x[r + i];
    }
  }
}

function maxAxis(x: FloatArray, outer: number, len: number, inner: number, out: FloatArray, argmax: Int32Array): void {
  for (let o = 0; o < outer; o++) {
    const base = o * len * inner;
    for (let i = 0; i < inner; i++) {
      let best = x[base + i];
      let arg = 0;
      // NaN propagates, like PyTorch's max.
      for (let l = 1; l < len && !Number.isNaN(best); l++) {
        const v = x[base + l * inner + i];
        if (v > best || Number.isNaN(v)) { best = v; arg = l; }
      }
      out[o * inner + i] = best;
      argmax[o * inner + i] = arg;
    }
  }
}

function unary(op: UnaryOp, x: FloatArray, out: FloatArray): void {
  const n = x.length;
  switch (op) {
    case 'neg': for (let i = 0; i < n; i++) out[i] = -x[i]; break;
    case 'exp': for (let i = 0; i < n; i++) out[i] = Math.exp(x[i]); break;
    case 'log': for (let i = 0; i < n; i++) out[i] = Math.log(x[i]); break;
    case 'relu': for (let i = 0; i < n; i++) { const v = x[i]; out[i] = v > 0 ? v : 0; } break;
    case 'tanh': for (let i = 0; i < n; i++) out[i] = Math.tanh(x[i]); break;
    case 'sigmoid': for (let i = 0; i < n; i++) {
      const v = x[i];
      // Split by sign so exp never overflows.
      if (v >= 0) out[i] = 1 / (1 + Math.exp(-v));
      else { const e = Math.exp(v); out[i] = e / (1 + e); }
    } break;
    case 'sqrt': for (let i = 0; i < n; i++) out[i] = Math.sqrt(x[i]); break;
    case 'abs': for (let i = 0; i < n; i++) out[i] = Math.abs(x[i]); break;
    case 'square': for (let i = 0; i < n; i++) out[i] = x[i] * x[i]; break;
    default: throw new Error(`unary: unknown op ${op as string}`);
  }
}

function applyBinary(op: BinaryOp): (a: number, b: number) => number {
  switch (op) {
    case 'add': return (a, b) => a + b;
    case 'sub': return (a, b) => a - b;
    case 'mul': return (a, b) => a * b;
    case 'div': return (a, b) => a / b;
    case 'max': return (a, b) => (a >= b || Number.isNaN(a) ? a : b);
    case 'min': return (a, b) => (a <= b || Number.isNaN(a) ? a : b);
    default: throw new Error(`binary: unknown op ${op as string}`);
  }
}

function binary(op: BinaryOp, a: FloatArray, aStrides: readonly number[], b: FloatArray, bStrides: readonly number[],
  out: FloatArray, shape: readonly number[]): void {
  const nd = shape.length;
  let total = 1;
  for (const s of shape) total *= s;
  if (total === 0) return;
  // Fast path: both operands packed with the output's shape.
  let packedA = true;
  let packedB = true;
  let expect = 1;
  for (let d = nd - 1; d >= 0; d--) {
    if (shape[d] !== 1) {
      if (aStrides[d] !== expect) packedA = false;
      if (bStrides[d] !== expect) packedB = false;
    }
    expect *= shape[d];
  }
  if (packedA && packedB) {
    switch (op) {
      case 'add': for (let i = 0; i < total; i++) out[i] = a[i] + b[i]; return;
      case 'sub': for (let i = 0; i < total; i++) out[i] = a[i] - b[i]; return;
      case 'mul': for (let i = 0; i < total; i++) out[i] = a[i] * b[i]; return;
      case 'div': for (let i = 0; i < total; i++) out[i] = a[i] / b[i]; return;
      default: break;
    }
  }
  const f = applyBinary(op);
  if (nd === 0) { out[0] = f(a[0], b[0]); return; }
  // Odometer over all but the last axis; the last axis is the inner loop.
  const last = nd - 1;
  const inner = shape[last];
  const as = aStrides[last];
  const bs = bStrides[last];
  const idx = new Array<number>(nd).fill(0);
  let ao = 0;
  let bo = 0;
  let o = 0;
  const outerCount = total / inner;
  for (let r = 0; r < outerCount; r++) {
    for (let i = 0; i < inner; i++) out[o + i] = f(a[ao + i * as], b[bo + i * bs]);
    o += inner;
    for (let d = last - 1; d >= 0; d--) {
      idx[d]++;
      ao += aStrides[d];
      bo += bStrides[d];
      if (idx[d] < shape[d]) break;
      ao -= aStrides[d] * shape[d];
      bo -= bStrides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

function axpy(alpha: number, x: FloatArray, y: FloatArray): void {
  for (let i = 0; i < x.length; i++) y[i] += alpha * x[i];
}

function affine(x: FloatArray, alpha: number, beta: number, out: FloatArray): void {
  for (let i = 0; i < x.length; i++) out[i] = alpha * x[i] + beta;
}

function reluBackward(x: FloatArray, dy: FloatArray, dx: FloatArray): void {
  for (let i = 0; i < x.length; i++) dx[i] = x[i] > 0 ? dy[i] : 0;
}

function standardizeRows(x: FloatArray, R: number, D: number, eps: number, y: FloatArray, invStd: Float64Array): void {
  for (let r = 0; r < R; r++) {
    const o = r * D;
    let s = 0;
    for (let i = 0; i < D; i++) s += x[o + i];
    const mu = s / D;
    let v = 0;
    for (let i = 0; i < D; i++) { const d = x[o + i] - mu; v += d * d; }
    const is = 1 / Math.sqrt(v / D + eps);
    invStd[r] = is;
    for (let i = 0; i < D; i++) y[o + i] = (x[o + i] - mu) * is;
  }
}

function standardizeRowsBackward(g: FloatArray, y: FloatArray, invStd: Float64Array, R: number, D: number, gx: FloatArray): void {
  for (let r = 0; r < R; r++) {
    const o = r * D;
    let sg = 0;
    let sgy = 0;
    for (let i = 0; i < D; i++) { sg += g[o + i]; sgy += g[o + i] * y[o + i]; }
    const mg = sg / D;
    const mgy = sgy / D;
    const is = invStd[r];
    for (let i = 0; i < D; i++) gx[o + i] = is * (g[o + i] - mg - y[o + i] * mgy);
  }
}

function gelu(x: FloatArray, out: FloatArray): void {
  for (let i = 0; i < x.length; i++) out[i] = geluScalar(x[i]);
}

function geluBackward(x: FloatArray, dy: FloatArray, dx: FloatArray): void {
  for (let i = 0; i < x.length; i++) dx[i] = dy[i] * geluDerivative(x[i]);
}

function gather(x: FloatArray, outer: number, len: number, inner: number, index: Int32Array, out: FloatArray): void {
  const k = index.length;
  for (const j of index) if (j < 0 || j >= len) throw new RangeError(`gather: index ${j} out of range [0, ${len})`);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < k; j++) {
      const src = (o * len + index[j]) * inner;
      const dst = (o * k + j) * inner;
      for (let i = 0; i < inner; i++) out[dst + i] = x[src + i];
    }
  }
}

function scatterAdd(dy: FloatArray, outer: number, len: number, inner: number, index: Int32Array, dx: FloatArray): void {
  const k = index.length;
  for (const j of index) if (j < 0 || j >= len) throw new RangeError(`scatterAdd: index ${j} out of range [0, ${len})`);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < k; j++) {
      const dst = (o * len + index[j]) * inner;
      const src = (o * k + j) * inner;
      for (let i = 0; i < inner; i++) dx[dst + i] += dy[src + i];
    }
  }
}

function copyStrided(x: FloatArray, offset: number, strides: readonly number[], out: FloatArray, shape: readonly number[]): void {
  const nd = shape.length;
  let total = 1;
  for (const s of shape) total *= s;
  if (total === 0) return;
  if (nd === 0) { out[0] = x[offset]; return; }
  const last = nd - 1;
  const inner = shape[last];
  const s = strides[last];
  const idx = new Array<number>(nd).fill(0);
  let xo = offset;
  let o = 0;
  for (let r = 0; r < total / inner; r++) {
    if (s === 1) for (let i = 0; i < inner; i++) out[o + i] = x[xo + i];
    else for (let i = 0; i < inner; i++) out[o + i] = x[xo + i * s];
    o += inner;
    for (let d = last - 1; d >= 0; d--) {
      idx[d]++;
      xo += strides[d];
      if (idx[d] < shape[d]) break;
      xo -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

/** im2col for one image: col[(c*KH + kh)*KW + kw, oh*OW + ow] = x[c, oh*s - p + kh, ow*s - p + kw] (0 outside). */
export function im2col(x: FloatArray, xOff: number, col: FloatArray, g: ConvGeometry): void {
  const { C, H, W, KH, KW, stride, pad, OH, OW } = g;
  const L = OH * OW;
  for (let c = 0; c < C; c++) {
    for (let kh = 0; kh < KH; kh++) {
      for (let kw = 0; kw < KW; kw++) {
        const row = ((c * KH + kh) * KW + kw) * L;
        for (let oh = 0; oh < OH; oh++) {
          const ih = oh * stride - pad + kh;
          const r = row + oh * OW;
          if (ih < 0 || ih >= H) { for (let ow = 0; ow < OW; ow++) col[r + ow] = 0; continue; }
          const xr = xOff + (c * H + ih) * W;
          for (let ow = 0; ow < OW; ow++) {
            const iw = ow * stride - pad + kw;
            col[r + ow] = iw >= 0 && iw < W ? x[xr + iw] : 0;
          }
        }
      }
    }
  }
}

/** Adjoint of im2col: accumulates col into dx (the region of one image is not cleared first). */
export function col2im(col: FloatArray, dx: FloatArray, dxOff: number, g: ConvGeometry): void {
  const { C, H, W, KH, KW, stride, pad, OH, OW } = g;
  const L = OH * OW;
  for (let c = 0; c < C; c++) {
    for (let kh = 0; kh < KH; kh++) {
      for (let kw = 0; kw < KW; kw++) {
        const row = ((c * KH + kh) * KW + kw) * L;
        for (let oh = 0; oh < OH; oh++) {
          const ih = oh * stride - pad + kh;
          if (ih < 0 || ih >= H) continue;
          const xr = dxOff + (c * H + ih) * W;
          const r = row + oh * OW;
          for (let ow = 0; ow < OW; ow++) {
            const iw = ow * stride - pad + kw;
            if (iw >= 0 && iw < W) dx[xr + iw] += col[r + ow];
          }
        }
      }
    }
  }
}

function newLike(a: FloatArray, n: number): FloatArray {
  return a instanceof Float64Array ? new Float64Array(n) : new Float32Array(n);
}

function conv2dForward(x: FloatArray, w: FloatArray, bias: FloatArray | null, out: FloatArray, g: ConvGeometry, relu = false): void {
  const { N, C, H, W, O, KH, KW, OH, OW } = g;
  const K = C * KH * KW;
  const L = OH * OW;
  const col = newLike(x, K * L);
  for (let n = 0; n < N; n++) {
    im2col(x, n * C * H * W, col, g);
    const oOff = n * O * L;
    gemm(false, false, O, L, K, 1, w, 0, K, col, 0, L, 0, out, oOff, L);
    if (bias) for (let o = 0; o < O; o++) { const b = bias[o]; const r = oOff + o * L; for (let l = 0; l < L; l++) out[r + l] += b; }
  }
  if (relu) for (let i = 0; i < N * O * L; i++) out[i] = out[i] > 0 ? out[i] : 0;
}

function conv2dBackward(x: FloatArray, w: FloatArray, dyIn: FloatArray,
  dx: FloatArray | null, dw: FloatArray | null, db: FloatArray | null, g: ConvGeometry, reluOut: FloatArray | null = null): void {
  const { N, C, H, W, O, KH, KW, OH, OW } = g;
  const K = C * KH * KW;
  const L = OH * OW;
  let dy = dyIn;
  if (reluOut) {
    dy = newLike(dyIn, N * O * L);
    reluBackward(reluOut, dyIn, dy);
  }
  const col = newLike(x, K * L);
  if (dw) dw.fill(0);
  if (db) db.fill(0);
  if (dx) dx.fill(0);
  for (let n = 0; n < N; n++) {
    const yOff = n * O * L;
    if (dw) {
      im2col(x, n * C * H * W, col, g);
      gemm(false, true, O, K, L, 1, dy, yOff, L, col, 0, L, 1, dw, 0, K);
    }
    if (db) for (let o = 0; o < O; o++) { let s = 0; const r = yOff + o * L; for (let l = 0; l < L; l++) s += dy[r + l]; db[o] += s; }
    if (dx) {
      gemm(true, false, K, L, O, 1, w, 0, K, dy, yOff, L, 0, col, 0, L);
      col2im(col, dx, n * C * H * W, g);
    }
  }
}

function maxPool2dForward(x: FloatArray, out: FloatArray, argmax: Int32Array, g: PoolGeometry): void {
  const { N, C, H, W, K, stride, pad, OH, OW } = g;
  for (let p = 0; p < N * C; p++) {
    const xb = p * H * W;
    const ob = p * OH * OW;
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        let best = -Infinity;
        let arg = -1;
        for (let kh = 0; kh < K; kh++) {
          const ih = oh * stride - pad + kh;
          if (ih < 0 || ih >= H) continue;
          for (let kw = 0; kw < K; kw++) {
            const iw = ow * stride - pad + kw;
            if (iw < 0 || iw >= W) continue;
            const v = x[xb + ih * W + iw];
            if (arg < 0 || v > best || Number.isNaN(v)) { best = v; arg = ih * W + iw; }
          }
        }
        out[ob + oh * OW + ow] = best;
        argmax[ob + oh * OW + ow] = arg;
      }
    }
  }
}

function maxPool2dBackward(dy: FloatArray, argmax: Int32Array, dx: FloatArray, g: PoolGeometry): void {
  const { N, C, H, W, OH, OW } = g;
  dx.fill(0);
  for (let p = 0; p < N * C; p++) {
    const xb = p * H * W;
    const ob = p * OH * OW;
    for (let i = 0; i < OH * OW; i++) {
      const a = argmax[ob + i];
      if (a >= 0) dx[xb + a] += dy[ob + i];
    }
  }
}

function avgPool2dForward(x: FloatArray, out: FloatArray, g: PoolGeometry): void {
  const { N, C, H, W, K, stride, pad, OH, OW } = g;
  const inv = 1 / (K * K);
  for (let p = 0; p < N * C; p++) {
    const xb = p * H * W;
    const ob = p * OH * OW;
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        let s = 0;
        for (let kh = 0; kh < K; kh++) {
          const ih = oh * stride - pad + kh;
          if (ih < 0 || ih >= H) continue;
          for (let kw = 0; kw < K; kw++) {
            const iw = ow * stride - pad + kw;
            if (iw >= 0 && iw < W) s += x[xb + ih * W + iw];
          }
        }
        out[ob + oh * OW + ow] = s * inv;
      }
    }
  }
}

function avgPool2dBackward(dy: FloatArray, dx: FloatArray, g: PoolGeometry): void {
  const { N, C, H, W, K, stride, pad, OH, OW } = g;
  const inv = 1 / (K * K);
  dx.fill(0);
  for (let p = 0; p < N * C; p++) {
    const xb = p * H * W;
    const ob = p * OH * OW;
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const d = dy[ob + oh * OW + ow] * inv;
        for (let kh = 0; kh < K; kh++) {
          const ih = oh * stride - pad + kh;
          if (ih < 0 || ih >= H) continue;
          for (let kw = 0; kw < K; kw++) {
            const iw = ow * stride - pad + kw;
            if (iw >= 0 && iw < W) dx[xb + ih * W + iw] += d;
          }
        }
      }
    }
  }
}

function softmaxCrossEntropy(logits: FloatArray, labels: Int32Array, N: number, C: number, probs: FloatArray): number {
  let loss = 0;
  for (let n = 0; n < N; n++) {
    const y = labels[n];
    if (!(y >= 0 && y < C)) throw new RangeError(`softmaxCrossEntropy: label ${y} of sample ${n} is outside [0, ${C})`);
    const r = n * C;
    let m = -Infinity;
    for (let c = 0; c < C; c++) if (logits[r + c] > m) m = logits[r + c];
    let s = 0;
    for (let c = 0; c < C; c++) { const e = Math.exp(logits[r + c] - m); probs[r + c] = e; s += e; }
    for (let c = 0; c < C; c++) probs[r + c] /= s;
    loss += m + Math.log(s) - logits[r + y];
  }
  return loss;
}

function adamw(param: FloatArray, grad: FloatArray, m: FloatArray, v: FloatArray,
  lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number): void {
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2 = 1 - Math.pow(beta2, step);
  const stepSize = lr / bc1;
  const bc2Sqrt = Math.sqrt(bc2);
  const decay = 1 - lr * weightDecay;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i];
    param[i] *= decay;
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    param[i] -= stepSize * m[i] / (Math.sqrt(v[i]) / bc2Sqrt + eps);
  }
}

function sgd(param: FloatArray, grad: FloatArray, buf: FloatArray, lr: number, momentum: number, dampening: number,
  nesterov: boolean, weightDecay: number, first: boolean): void {
  for (let i = 0; i < param.length; i++) {
    let g = grad[i] + weightDecay * param[i];
    if (momentum !== 0) {
      const b = first ? g : momentum * buf[i] + (1 - dampening) * g;
      buf[i] = b;
      g = nesterov ? g + momentum * b : b;
    }
    param[i] -= lr * g;
  }
}

function sumSquares(x: FloatArray): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return s;
}

export const jsKernels: Kernels = {
  gemm, gemmStrided, solve, logsumexp, logsumexpBackward, sinkhornLog, sumAxis, maxAxis, unary, binary, axpy, affine,
  reluBackward, standardizeRows, standardizeRowsBackward, gelu, geluBackward, gather, scatterAdd, copyStrided, conv2dForward, conv2dBackward,
  maxPool2dForward, maxPool2dBackward, avgPool2dForward, avgPool2dBackward, softmaxCrossEntropy,
  adamw, sgd, sumSquares,
};
