/**
 * Backend selection. The native OpenBLAS kernels are used when the addon loads; otherwise the
 * pure-TypeScript kernels, with one warning. REBASIN_BACKEND=js|native forces a choice (forcing
 * native when it cannot load is an error that says why). REBASIN_GEMM=auto|own|avx512|avx2|openblas
 * picks the native sgemm (by default our own AVX-512 kernels, else our AVX2 ones, else OpenBLAS).
 */
import { jsKernels } from './js.js';
import { GEMM_CHOICES, type GemmChoice } from './native.js';
import type { BackendInfo, Kernels } from './types.js';

export type { BackendInfo, Kernels, FloatArray, UnaryOp, BinaryOp, ConvGeometry, PoolGeometry } from './types.js';

type NativeLoad = { kernels: Kernels; info: BackendInfo } | { error: string };

const requested = process.env.REBASIN_BACKEND;
if (requested !== undefined && requested !== '' && requested !== 'js' && requested !== 'native') {
  throw new Error(`REBASIN_BACKEND must be "js" or "native", got "${requested}"`);
}

const gemmChoice = process.env.REBASIN_GEMM;
if (gemmChoice !== undefined && gemmChoice !== '' && !(GEMM_CHOICES as readonly string[]).includes(gemmChoice)) {
  throw new Error(`REBASIN_GEMM must be one of ${GEMM_CHOICES.map((c) => `"${c}"`).join(', ')}, got "${gemmChoice}"`);
}

// The addon is only loaded when it may be used; a load failure is reported, never thrown here.
const nativeLoad: NativeLoad | null = requested === 'js'
  ? null
  : await import('./native.js').then(
    (m) => {
      const load = m.loadNativeKernels() as NativeLoad;
      if ('kernels' in load && gemmChoice) {
        try {
          m.setGemmImpl(gemmChoice as GemmChoice);
        } catch (e) {
          throw new Error(`REBASIN_GEMM=${gemmChoice}: ${(e as Error).message}`);
        }
      }
      return load;
    },
    (e: unknown) => ({ error: `native backend module failed to import: ${(e as Error).message}` }),
  );

if (requested === 'native' && nativeLoad && 'error' in nativeLoad) {
  throw new Error(`REBASIN_BACKEND=native, but the native addon cannot be loaded: ${nativeLoad.error}`);
}

let active: Kernels;
let activeInfo: BackendInfo;
if (nativeLoad && 'kernels' in nativeLoad) {
  active = nativeLoad.kernels;
  activeInfo = nativeLoad.info;
} else {
  active = jsKernels;
  activeInfo = { name: 'js', blasThreads: 0, detail: 'pure TypeScript kernels' };
  if (nativeLoad && 'error' in nativeLoad && process.env.REBASIN_QUIET_BACKEND !== '1') {
    process.emitWarning(`rebasin: using the pure-TypeScript backend (slow): ${nativeLoad.error}`, { code: 'REBASIN_BACKEND' });
  }
}

/** The kernels every op dispatches to. */
export function kernels(): Kernels {
  return active;
}

export function backendInfo(): BackendInfo {
  return activeInfo;
}

/** The native kernels if they loaded (tests compare them against the JS ones). */
export function nativeKernels(): Kernels | null {
  return nativeLoad && 'kernels' in nativeLoad ? nativeLoad.kernels : null;
}

export function nativeLoadError(): string | null {
  return nativeLoad && 'error' in nativeLoad ? nativeLoad.error : null;
}

/** Switches the active kernels, returning the previous ones (tests run ops on both). */
export function setKernels(k: Kernels): Kernels {
  const prev = active;
  active = k;
  activeInfo = k.name === 'js' ? { name: 'js', blasThreads: 0, detail: 'pure TypeScript kernels' } : (nativeLoad && 'info' in nativeLoad ? nativeLoad.info : activeInfo);
  return prev;
}

export { jsKernels };
