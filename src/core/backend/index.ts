/**
 * Backends as values. A `Backend` is `{ name, kernels, info }`: `jsBackend` always, the native one
 * when its addon loads. Every op runs on the current backend, which is the process default until
 * `setBackend` swaps it (tests run the same ops on both this way).
 *
 * The default is resolved once, synchronously, on first use: REBASIN_BACKEND=js|native forces a
 * choice (forcing native when it cannot load is an error that says why); without it native is used
 * when the addon loads, else the pure-TypeScript kernels with one warning. REBASIN_GEMM=auto|own|avx512|avx2|openblas
 * picks the native sgemm (by default our own AVX-512 kernels, else our AVX2 ones, else OpenBLAS).
 */
import { InputError } from '../../errors.js';
import { jsKernels } from './js.js';
import { GEMM_CHOICES, loadNative } from './native.js';
import { BACKEND_NAMES, type Backend, type Kernels } from './types.js';

export type { Backend, BackendInfo, Kernels, KernelName, FloatArray, UnaryOp, BinaryOp, ConvGeometry, PoolGeometry } from './types.js';
export { KERNEL_TABLE } from './types.js';

export const jsBackend: Backend = {
  name: 'js',
  kernels: jsKernels,
  info: { blasThreads: 0, detail: 'pure TypeScript kernels', sgemm: null, allocatorTuned: false },
};

interface Resolved {
  default: Backend;
  /** The native backend, or why it is not available (null: not tried, REBASIN_BACKEND=js). */
  native: Backend | { error: string } | null;
}

function choice<T extends string>(variable: string, allowed: readonly T[]): T | undefined {
  const v = process.env[variable];
  if (v === undefined || v === '') return undefined;
  if (!(allowed as readonly string[]).includes(v)) {
    const list = allowed.map((a) => `"${a}"`);
    throw new InputError(`${variable} must be ${list.slice(0, -1).join(', ')} or ${list[list.length - 1]}, got "${v}"`);
  }
  return v as T;
}

function resolveFromEnv(): Resolved {
  const requested = choice('REBASIN_BACKEND', BACKEND_NAMES);
  const gemm = choice('REBASIN_GEMM', GEMM_CHOICES);
  if (requested === 'js') return { default: jsBackend, native: null };
  // The addon is only loaded when it may be used; a load failure is reported, never thrown here.
  const load = loadNative();
  if ('error' in load) {
    if (requested === 'native') throw new InputError(`REBASIN_BACKEND=native, but the native addon cannot be loaded: ${load.error}`);
    if (process.env.REBASIN_QUIET_BACKEND !== '1') {
      process.emitWarning(`rebasin: using the pure-TypeScript backend (slow): ${load.error}`, { code: 'REBASIN_BACKEND' });
    }
    return { default: jsBackend, native: { error: load.error } };
  }
  if (gemm) {
    try {
      load.addon.gemmImpl(gemm);
    } catch (e) {
      throw new InputError(`REBASIN_GEMM=${gemm}: ${(e as Error).message}`);
    }
  }
  return { default: load.backend, native: load.backend };
}

// The process default, read from the environment once; and the backend ops run on now.
let resolved: Resolved | null = null;
let current: Backend | null = null;

function resolve(): Resolved {
  return (resolved ??= resolveFromEnv());
}

/** The process default backend (REBASIN_BACKEND), resolved on first use. */
export function defaultBackend(): Backend {
  return resolve().default;
}

/** The backend ops run on: the default unless `setBackend` chose another. */
export function currentBackend(): Backend {
  return (current ??= resolve().default);
}

/** Makes `b` the backend ops run on and returns the previous one (restore it with another call). */
export function setBackend(b: Backend): Backend {
  const prev = currentBackend();
  current = b;
  return prev;
}

/** The current backend's kernels: what every op calls. */
export function kernels(): Kernels {
  return (current ?? currentBackend()).kernels;
}

/** The native backend if its addon loaded (null under REBASIN_BACKEND=js, which never loads it). */
export function nativeBackend(): Backend | null {
  const n = resolve().native;
  return n && 'kernels' in n ? n : null;
}

/** Why the native backend is not available, or null. */
export function nativeLoadError(): string | null {
  const n = resolve().native;
  return n && 'error' in n ? n.error : null;
}
