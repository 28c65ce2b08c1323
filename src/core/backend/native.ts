/**
 * The native backend: an N-API addon (native/*.c) over Debian's OpenBLAS, built by `npm install`
 * into build/Release/rebasin_native.node. Float32Array work runs in C; Float64Array work (used by
 * float64 gradient checks) goes to the pure-TypeScript kernels, except `solve`, which LAPACK does
 * in float64 too. Loading never throws: callers get `{ error }` and fall back to the JS backend.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertFiniteSystem, jsKernels } from './js.js';
import type { BackendInfo, Kernels } from './types.js';

/** The raw addon. Its functions take the same arguments as the `Kernels` methods of the same name. */
export interface NativeAddon {
  gemm: Kernels['gemm'];
  gemmStrided: Kernels['gemmStrided'];
  solve: Kernels['solve'];
  logsumexp: Kernels['logsumexp'];
  sinkhornLog: Kernels['sinkhornLog'];
  sumAxis: Kernels['sumAxis'];
  maxAxis: Kernels['maxAxis'];
  unary: Kernels['unary'];
  binary: Kernels['binary'];
  axpy: Kernels['axpy'];
  affine: Kernels['affine'];
  reluBackward: Kernels['reluBackward'];
  gather: Kernels['gather'];
  scatterAdd: Kernels['scatterAdd'];
  copyStrided: Kernels['copyStrided'];
  conv2dForward: Kernels['conv2dForward'];
  conv2dBackward: Kernels['conv2dBackward'];
  im2col: Kernels['im2col'];
  col2im: Kernels['col2im'];
  maxPool2dForward: Kernels['maxPool2dForward'];
  maxPool2dBackward: Kernels['maxPool2dBackward'];
  avgPool2dForward: Kernels['avgPool2dForward'];
  avgPool2dBackward: Kernels['avgPool2dBackward'];
  softmaxCrossEntropy: Kernels['softmaxCrossEntropy'];
  adamw: Kernels['adamw'];
  sgd: Kernels['sgd'];
  sumSquares: Kernels['sumSquares'];
  setThreads(n: number): void;
  getThreads(): number;
  config(): string;
  /** Bench hook: conv strategy 0 auto / 1 our threads over samples / 2 OpenBLAS threads / 3 explicit im2col under our gemm; >= 100 sets the im2col chunk (floats). */
  convTune(mode: number): void;
  /** True when the addon raised glibc's mmap/trim thresholds (off with REBASIN_MALLOC=system). */
  allocatorTuned(): boolean;
  /** The sgemm path in use; with an argument, switches it (throws when the CPU cannot run that path). */
  gemmImpl(impl?: GemmChoice): GemmPath;
}

const REQUIRED: readonly (keyof NativeAddon)[] = [
  'gemm', 'gemmStrided', 'solve', 'logsumexp', 'sinkhornLog', 'sumAxis', 'maxAxis', 'unary', 'binary', 'axpy',
  'affine', 'reluBackward', 'gather', 'scatterAdd', 'copyStrided', 'conv2dForward', 'conv2dBackward', 'im2col',
  'col2im', 'maxPool2dForward', 'maxPool2dBackward', 'avgPool2dForward', 'avgPool2dBackward', 'softmaxCrossEntropy',
  'adamw', 'sgd', 'sumSquares', 'setThreads', 'getThreads', 'config', 'convTune', 'allocatorTuned', 'gemmImpl',
];

/** Where the package root is: this file runs as dist/src/core/backend/native.js (or from src/ under a TS runner). */
function packageRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const fourUp = join(here, '..', '..', '..', '..');
  const threeUp = join(here, '..', '..', '..');
  if (existsSync(join(fourUp, 'package.json'))) return fourUp;
  if (existsSync(join(threeUp, 'package.json'))) return threeUp;
  return fourUp;
}

/** Path of the compiled addon. */
export function nativeAddonPath(): string {
  return join(packageRoot(), 'build', 'Release', 'rebasin_native.node');
}

type LoadResult = { kernels: Kernels; info: BackendInfo } | { error: string };

let cached: LoadResult | null = null;
let addon: NativeAddon | null = null;

function tryLoad(): LoadResult {
  const file = nativeAddonPath();
  if (!existsSync(file)) {
    return { error: `the native addon is not built (${file} is missing); run npm install with libopenblas-dev installed` };
  }
  let mod: Partial<NativeAddon>;
  try {
    mod = createRequire(import.meta.url)(file) as Partial<NativeAddon>;
  } catch (e) {
    return { error: `the native addon failed to load (${file}): ${(e as Error).message}` };
  }
  const missing = REQUIRED.filter((k) => typeof mod[k] !== 'function');
  if (missing.length > 0) {
    return { error: `the native addon at ${file} is out of date (missing ${missing.join(', ')}); run npm install again` };
  }
  const a = mod as NativeAddon;
  addon = a;
  const config = a.config().trim();
  const info: BackendInfo = {
    name: 'native',
    // Getters, so setBlasThreads / gemmImpl switches are reflected in what doctor/bench report.
    get blasThreads() { return a.getThreads(); },
    get detail() {
      const path = a.gemmImpl();
      const gemm = path === 'openblas' ? 'sgemm: OpenBLAS' : `sgemm: own ${path === 'avx512' ? 'AVX-512' : 'AVX2'} kernels`;
      return `N-API addon over ${config}; ${gemm}${a.allocatorTuned() ? '; large allocations kept mapped' : ''}`;
    },
  };
  return { kernels: makeKernels(a), info };
}

/** Loads the addon once; never throws. */
export function loadNativeKernels(): LoadResult {
  if (cached === null) {
    try {
      cached = tryLoad();
    } catch (e) {
      cached = { error: `the native addon failed to load: ${(e as Error).message}` };
    }
  }
  return cached;
}

/** The raw addon if it loaded (benchmarks and tests only). */
export function nativeAddon(): NativeAddon | null {
  loadNativeKernels();
  return addon;
}

/** Sets OpenBLAS's thread count (also used by the addon's own threaded loops). No-op without the addon. */
export function setBlasThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`setBlasThreads: n must be a positive integer, got ${n}`);
  nativeAddon()?.setThreads(n);
}

/**
 * REBASIN_GEMM's values. The paths, best first: our own 'avx512' or 'avx2' kernels, or 'openblas';
 * 'own' is the best own kernel the CPU supports; 'auto' is that, else OpenBLAS.
 */
export const GEMM_PATHS = ['avx512', 'avx2', 'openblas'] as const;
export const GEMM_CHOICES = ['auto', 'own', ...GEMM_PATHS] as const;
export type GemmChoice = (typeof GEMM_CHOICES)[number];
/** The sgemm paths themselves (what `gemmImpl()` reports). */
export type GemmPath = (typeof GEMM_PATHS)[number];

/**
 * Chooses the sgemm behind every matmul and conv (see GEMM_CHOICES). Throws when the CPU cannot
 * run the path asked for. Returns the path now in use, or null without the addon.
 */
export function setGemmImpl(choice: GemmChoice): GemmPath | null {
  const a = nativeAddon();
  return a ? a.gemmImpl(choice) : null;
}

/** The sgemm paths this CPU can run, best first (tests and benchmarks cover each); [] without the addon. */
export function supportedGemmPaths(): GemmPath[] {
  const a = nativeAddon();
  if (!a) return [];
  const prev = a.gemmImpl();
  try {
    return GEMM_PATHS.filter((path) => {
      try {
        return a.gemmImpl(path) === path;
      } catch {
        return false; // the CPU lacks it
      }
    });
  } finally {
    a.gemmImpl(prev);
  }
}

/** OpenBLAS's thread count, or 0 when the addon is not loaded. */
export function blasThreads(): number {
  return nativeAddon()?.getThreads() ?? 0;
}

const F32 = Float32Array;

/**
 * Float32Array (judged by the first array argument) goes to C, which also checks that the other
 * arrays are Float32Array and throws a TypeError naming the argument when they are not; float64
 * goes to the JS kernels.
 */
function makeKernels(n: NativeAddon): Kernels {
  const js = jsKernels;
  return {
    name: 'native',
    gemm(tA, tB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc) {
      if (A instanceof F32) n.gemm(tA, tB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc);
      else js.gemm(tA, tB, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc);
    },
    gemmStrided(tA, tB, M, N, K, alpha, A, aOff, sA, B, bOff, sB, beta, C, cOff, sC, count) {
      if (A instanceof F32) n.gemmStrided(tA, tB, M, N, K, alpha, A, aOff, sA, B, bOff, sB, beta, C, cOff, sC, count);
      else js.gemmStrided(tA, tB, M, N, K, alpha, A, aOff, sA, B, bOff, sB, beta, C, cOff, sC, count);
    },
    solve: (nn, nrhs, A, B) => {
      if (A.length >= nn * nn && B.length >= nn * nrhs) assertFiniteSystem(nn, nrhs, A, B);
      return n.solve(nn, nrhs, A, B);
    },
    logsumexp(x, outer, len, inner, out) {
      if (x instanceof F32) n.logsumexp(x, outer, len, inner, out);
      else js.logsumexp(x, outer, len, inner, out);
    },
    sinkhornLog(logP, batch, m, nn, iters, logA, logB) {
      if (logP instanceof F32) n.sinkhornLog(logP, batch, m, nn, iters, logA, logB);
      else js.sinkhornLog(logP, batch, m, nn, iters, logA, logB);
    },
    sumAxis(x, outer, len, inner, out) {
      if (x instanceof F32) n.sumAxis(x, outer, len, inner, out);
      else js.sumAxis(x, outer, len, inner, out);
    },
    maxAxis(x, outer, len, inner, out, argmax) {
      if (x instanceof F32) n.maxAxis(x, outer, len, inner, out, argmax);
      else js.maxAxis(x, outer, len, inner, out, argmax);
    },
    unary(op, x, out) {
      if (x instanceof F32) n.unary(op, x, out);
      else js.unary(op, x, out);
    },
    binary(op, a, aStrides, b, bStrides, out, shape) {
      if (a instanceof F32) n.binary(op, a, aStrides, b, bStrides, out, shape);
      else js.binary(op, a, aStrides, b, bStrides, out, shape);
    },
    axpy(alpha, x, y) {
      if (x instanceof F32) n.axpy(alpha, x, y);
      else js.axpy(alpha, x, y);
    },
    affine(x, alpha, beta, out) {
      if (x instanceof F32) n.affine(x, alpha, beta, out);
      else js.affine(x, alpha, beta, out);
    },
    reluBackward(x, dy, dx) {
      if (x instanceof F32) n.reluBackward(x, dy, dx);
      else js.reluBackward(x, dy, dx);
    },
    gather(x, outer, len, inner, index, out) {
      if (x instanceof F32) n.gather(x, outer, len, inner, index, out);
      else js.gather(x, outer, len, inner, index, out);
    },
    scatterAdd(dy, outer, len, inner, index, dx) {
      if (dy instanceof F32) n.scatterAdd(dy, outer, len, inner, index, dx);
      else js.scatterAdd(dy, outer, len, inner, index, dx);
    },
    copyStrided(x, offset, strides, out, shape) {
      if (x instanceof F32) n.copyStrided(x, offset, strides, out, shape);
      else js.copyStrided(x, offset, strides, out, shape);
    },
    conv2dForward(x, w, bias, out, g, relu = false) {
      if (x instanceof F32) n.conv2dForward(x, w, bias, out, g, relu);
      else js.conv2dForward(x, w, bias, out, g, relu);
    },
    conv2dBackward(x, w, dy, dx, dw, db, g, reluOut = null) {
      if (x instanceof F32) n.conv2dBackward(x, w, dy, dx, dw, db, g, reluOut);
      else js.conv2dBackward(x, w, dy, dx, dw, db, g, reluOut);
    },
    im2col(x, xOff, col, g) {
      if (x instanceof F32) n.im2col(x, xOff, col, g);
      else js.im2col(x, xOff, col, g);
    },
    col2im(col, dx, dxOff, g) {
      if (col instanceof F32) n.col2im(col, dx, dxOff, g);
      else js.col2im(col, dx, dxOff, g);
    },
    maxPool2dForward(x, out, argmax, g) {
      if (x instanceof F32) n.maxPool2dForward(x, out, argmax, g);
      else js.maxPool2dForward(x, out, argmax, g);
    },
    maxPool2dBackward(dy, argmax, dx, g) {
      if (dy instanceof F32) n.maxPool2dBackward(dy, argmax, dx, g);
      else js.maxPool2dBackward(dy, argmax, dx, g);
    },
    avgPool2dForward(x, out, g) {
      if (x instanceof F32) n.avgPool2dForward(x, out, g);
      else js.avgPool2dForward(x, out, g);
    },
    avgPool2dBackward(dy, dx, g) {
      if (dy instanceof F32) n.avgPool2dBackward(dy, dx, g);
      else js.avgPool2dBackward(dy, dx, g);
    },
    softmaxCrossEntropy(logits, labels, N, C, probs) {
      return logits instanceof F32 ? n.softmaxCrossEntropy(logits, labels, N, C, probs)
        : js.softmaxCrossEntropy(logits, labels, N, C, probs);
    },
    adamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step) {
      if (param instanceof F32) n.adamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step);
      else js.adamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step);
    },
    sgd(param, grad, buf, lr, momentum, dampening, nesterov, weightDecay, first) {
      if (param instanceof F32) n.sgd(param, grad, buf, lr, momentum, dampening, nesterov, weightDecay, first);
      else js.sgd(param, grad, buf, lr, momentum, dampening, nesterov, weightDecay, first);
    },
    sumSquares: (x) => (x instanceof F32 ? n.sumSquares(x) : js.sumSquares(x)),
  };
}
