/**
 * The kernel interface every backend implements. Kernels are plain functions over typed arrays:
 * they know nothing of tensors or autodiff (the tensor layer composes them). All layouts are
 * row-major (C order) and match PyTorch: images NCHW, conv weights [O, C, KH, KW].
 *
 * Float32Array is the working precision. Float64Array is accepted by every kernel too, so the
 * pure-TypeScript backend can run float64 finite-difference gradient checks; the native backend
 * serves Float32Array (and float64 solves) itself and hands other float64 work to the JS kernels.
 * Unless a kernel says it accumulates, it overwrites its output.
 */
export type FloatArray = Float32Array | Float64Array;

export type UnaryOp = 'neg' | 'exp' | 'log' | 'relu' | 'tanh' | 'sigmoid' | 'sqrt' | 'abs' | 'square';
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min';

export interface ConvGeometry {
  N: number; // batch
  C: number; // input channels
  H: number; // input height
  W: number; // input width
  O: number; // output channels
  KH: number;
  KW: number;
  stride: number;
  pad: number;
  OH: number; // (H + 2*pad - KH) / stride + 1
  OW: number;
}

export interface PoolGeometry {
  N: number;
  C: number;
  H: number;
  W: number;
  K: number; // window (square)
  stride: number;
  pad: number;
  OH: number;
  OW: number;
}

export interface Kernels {
  /** C[cOff + i*ldc + j] = alpha * Σ_k op(A)[i,k] op(B)[k,j] + beta * C[...]. op(A) is M×K, op(B) K×N. */
  gemm(
    transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: FloatArray, aOff: number, lda: number,
    B: FloatArray, bOff: number, ldb: number,
    beta: number, C: FloatArray, cOff: number, ldc: number,
  ): void;

  /**
   * `count` independent packed gemms: matrix b of A starts at aOff + b*strideA (likewise B, C).
   * Leading dimensions are those of packed matrices (A: transA ? M : K, B: transB ? K : N, C: N).
   * A stride of 0 broadcasts one matrix over the batch.
   */
  gemmStrided(
    transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: FloatArray, aOff: number, strideA: number,
    B: FloatArray, bOff: number, strideB: number,
    beta: number, C: FloatArray, cOff: number, strideC: number, count: number,
  ): void;

  /**
   * Solves A X = B in place: A is n×n row-major (destroyed), B is n×nrhs row-major (overwritten by X).
   * Uses LU with partial pivoting; when A is singular (or LU yields non-finite values) falls back to a
   * minimum-norm least-squares solution and returns 'lstsq'. Both arrays have the same dtype.
   */
  solve(n: number, nrhs: number, A: FloatArray, B: FloatArray): 'lu' | 'lstsq';

  /** out[o, i] = log Σ_l exp(x[o, l, i]) over a [outer, len, inner] view (max-shifted, -Inf safe). */
  logsumexp(x: FloatArray, outer: number, len: number, inner: number, out: FloatArray): void;
  /**
   * logsumexp's gradient: gx[o, l, i] = g[o, i] · exp(x[o, l, i] − lse[o, i]) (0 where lse is −∞),
   * per element in double (the same exp as JS's Math.exp on every backend).
   */
  logsumexpBackward(x: FloatArray, outer: number, len: number, inner: number, lse: FloatArray, g: FloatArray, gx: FloatArray): void;

  /**
   * Log-domain Sinkhorn in place on logP, a batch of m×n matrices. Each of `iters` iterations first
   * normalises columns (logP[:, j] -= logsumexp_i logP[i, j] - logB[j]) then rows
   * (logP[i, :] -= logsumexp_j logP[i, j] - logA[i]). logA (length m) / logB (length n) null = zeros.
   */
  sinkhornLog(logP: FloatArray, batch: number, m: number, n: number, iters: number,
    logA: FloatArray | null, logB: FloatArray | null): void;

  /** out[o, i] = Σ_l x[o, l, i] over a [outer, len, inner] view. */
  sumAxis(x: FloatArray, outer: number, len: number, inner: number, out: FloatArray): void;
  /** out[o, i] = max_l x[o, l, i]; argmax[o, i] = the l attaining it (first on ties). */
  maxAxis(x: FloatArray, outer: number, len: number, inner: number, out: FloatArray, argmax: Int32Array): void;

  /** out[i] = op(x[i]). out may alias x. */
  unary(op: UnaryOp, x: FloatArray, out: FloatArray): void;
  /**
   * Broadcasting binary op over an N-d output of shape `shape`: out[idx] = a[Σ idx_d aStrides_d] op b[...].
   * Strides are in elements; a stride of 0 broadcasts that axis. out is packed row-major.
   */
  binary(op: BinaryOp, a: FloatArray, aStrides: readonly number[], b: FloatArray, bStrides: readonly number[],
    out: FloatArray, shape: readonly number[]): void;
  /** y[i] += alpha * x[i]. */
  axpy(alpha: number, x: FloatArray, y: FloatArray): void;
  /** out[i] = alpha * x[i] + beta (out may alias x). */
  affine(x: FloatArray, alpha: number, beta: number, out: FloatArray): void;
  /** dx[i] = dy[i] * (x[i] > 0 ? 1 : 0). */
  reluBackward(x: FloatArray, dy: FloatArray, dx: FloatArray): void;
  /**
   * Standardises R rows of D values: y = (x − mean)/√(var + eps) (population variance), row sums in
   * double in index order; invStd[r] gets row r's 1/√(var + eps). Bit-identical on every backend.
   */
  standardizeRows(x: FloatArray, R: number, D: number, eps: number, y: FloatArray, invStd: Float64Array): void;
  /** Its gradient: gx = invStd · (g − mean(g) − y · mean(g · y)) per row (sums as the forward's). */
  standardizeRowsBackward(g: FloatArray, y: FloatArray, invStd: Float64Array, R: number, D: number, gx: FloatArray): void;
  /** out[i] = GELU(x[i]) = x·Φ(x), exact (erf), per element in double (erf.ts; bit-identical on every backend). */
  gelu(x: FloatArray, out: FloatArray): void;
  /** dx[i] = dy[i] · GELU′(x[i]) (erf.ts; bit-identical on every backend). */
  geluBackward(x: FloatArray, dy: FloatArray, dx: FloatArray): void;
  /** Gathers along the middle axis: out[o, j, i] = x[o, index[j], i]; x is [outer, len, inner]. */
  gather(x: FloatArray, outer: number, len: number, inner: number, index: Int32Array, out: FloatArray): void;
  /** Scatter-add, the adjoint of gather: dx[o, index[j], i] += dy[o, j, i]. dx is not cleared. */
  scatterAdd(dy: FloatArray, outer: number, len: number, inner: number, index: Int32Array, dx: FloatArray): void;
  /** Copies an N-d strided view of x (starting at offset) into packed out of shape `shape`. */
  copyStrided(x: FloatArray, offset: number, strides: readonly number[], out: FloatArray, shape: readonly number[]): void;

  /**
   * Conv2d forward, NCHW x [N,C,H,W], w [O,C,KH,KW], bias [O] or null, out [N,O,OH,OW].
   * With `relu`, out = max(0, conv + bias) in the same pass.
   */
  conv2dForward(x: FloatArray, w: FloatArray, bias: FloatArray | null, out: FloatArray, g: ConvGeometry, relu?: boolean): void;
  /**
   * Conv2d backward. Writes (overwrites) whichever of dx [N,C,H,W], dw [O,C,KH,KW], db [O] is non-null.
   * `reluOut` is the output of a fused-ReLU forward: dy then only counts where reluOut > 0.
   */
  conv2dBackward(x: FloatArray, w: FloatArray, dy: FloatArray,
    dx: FloatArray | null, dw: FloatArray | null, db: FloatArray | null, g: ConvGeometry, reluOut?: FloatArray | null): void;

  /** Max pooling; argmax holds the flat index h*W+w within each input plane (-1 if the window is all padding). */
  maxPool2dForward(x: FloatArray, out: FloatArray, argmax: Int32Array, g: PoolGeometry): void;
  /** dx (overwritten) from dy and the forward argmax. */
  maxPool2dBackward(dy: FloatArray, argmax: Int32Array, dx: FloatArray, g: PoolGeometry): void;
  /** Average pooling (count_include_pad = true, like PyTorch's default). */
  avgPool2dForward(x: FloatArray, out: FloatArray, g: PoolGeometry): void;
  avgPool2dBackward(dy: FloatArray, dx: FloatArray, g: PoolGeometry): void;

  /**
   * Softmax cross-entropy over rows of logits [N, C] with integer labels. Writes the softmax
   * probabilities into probs and returns the summed (not mean) negative log-likelihood.
   * A label outside [0, C) throws.
   */
  softmaxCrossEntropy(logits: FloatArray, labels: Int32Array, N: number, C: number, probs: FloatArray): number;

  /** One AdamW step in place (PyTorch semantics; step counts from 1). */
  adamw(param: FloatArray, grad: FloatArray, m: FloatArray, v: FloatArray,
    lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number): void;
  /**
   * One SGD step in place (PyTorch semantics). buf is the momentum buffer (ignored when momentum = 0);
   * `first` marks the first step, where PyTorch initialises buf to the gradient.
   */
  sgd(param: FloatArray, grad: FloatArray, buf: FloatArray, lr: number, momentum: number, dampening: number,
    nesterov: boolean, weightDecay: number, first: boolean): void;

  /** Σ x[i]² (accumulated in float64). */
  sumSquares(x: FloatArray): number;
}

export type KernelName = keyof Kernels;

/** The argument positions of kernel F whose type is exactly a float array (not `| null`), as numbers. */
type FloatArgIndex<F> = F extends (...args: infer P) => unknown
  ? { [I in keyof P]: P[I] extends FloatArray ? (I extends `${infer N extends number}` ? N : never) : never }[number]
  : never;

/**
 * The kernel table: every kernel once, with the argument whose dtype picks the implementation on
 * the native backend (a Float32Array there runs in C, anything else in the JS kernels), or 'all'
 * when the addon serves every float dtype itself (LAPACK solves in float64 too). It is typed
 * against `Kernels`, so a missing or extra entry, or a position that is not a float array, does
 * not compile; the native dispatch, the addon's type and its load-time check derive from it.
 */
export const KERNEL_TABLE = {
  gemm: 6, gemmStrided: 6, solve: 'all', logsumexp: 0, logsumexpBackward: 0, sinkhornLog: 0, sumAxis: 0, maxAxis: 0,
  unary: 1, binary: 1, axpy: 1, affine: 0, reluBackward: 0, standardizeRows: 0, standardizeRowsBackward: 0, gelu: 0, geluBackward: 0, gather: 0, scatterAdd: 0, copyStrided: 0,
  conv2dForward: 0, conv2dBackward: 0, maxPool2dForward: 0, maxPool2dBackward: 0, avgPool2dForward: 0,
  avgPool2dBackward: 0, softmaxCrossEntropy: 0, adamw: 0, sgd: 0, sumSquares: 0,
} as const satisfies { readonly [K in KernelName]: FloatArgIndex<Kernels[K]> | 'all' };

/** The backends by name (REBASIN_BACKEND's values). */
export const BACKEND_NAMES = ['js', 'wasm', 'native'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** What `rebasin doctor` and the bench report about a backend. */
export interface BackendInfo {
  /** OpenBLAS's thread count (0 without the addon). */
  blasThreads: number;
  detail: string;
  /** The sgemm behind matmul and conv (REBASIN_GEMM), or null without the addon. */
  sgemm: 'avx512' | 'avx2' | 'openblas' | null;
  /** Whether the addon keeps large allocations mapped (REBASIN_MALLOC). */
  allocatorTuned: boolean;
}

/**
 * A backend as a value: its kernels and what is reported about it. The process default comes from
 * REBASIN_BACKEND (see index.ts); `name` is for reporting only, nothing may branch on it.
 */
export interface Backend {
  readonly name: BackendName;
  readonly kernels: Kernels;
  readonly info: BackendInfo;
}
