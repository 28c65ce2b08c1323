/**
 * Backends as values. A `Backend` is `{ name, kernels, info }`: `jsBackend` always, the native one
 * when its addon loads, the wasm one when its module compiles. Every op runs on the current
 * backend, which is the process default until `setBackend` swaps it (tests run the same ops on
 * each this way).
 *
 * The default is resolved once, synchronously, on first use: REBASIN_BACKEND=js|wasm|native forces
 * a choice (forcing one that cannot load is an error that says why); without it native is used when
 * the addon loads, else wasm (WebAssembly SIMD, no build needed) with one warning, else the
 * pure-TypeScript kernels with one warning. REBASIN_GEMM=auto|own|avx512|avx2|openblas picks the
 * native sgemm (by default our own AVX-512 kernels, else our AVX2 ones, else OpenBLAS);
 * REBASIN_CONV=auto|direct|im2col the native convolution strategy (CONV_STRATEGIES).
 */
import { readFileSync } from 'node:fs';
import { InputError } from '../../errors.js';
import { jsKernels } from './js.js';
import { CONV_STRATEGIES, GEMM_CHOICES, loadNative, nativeAddon, wasmModulePath, type NativeLoad } from './native.js';
import { BACKEND_NAMES, type Backend, type BackendName, type Kernels } from './types.js';
import { instantiateWasm, type WasmLoad } from './wasm.js';

export type { Backend, BackendInfo, Kernels, KernelName, FloatArray, UnaryOp, BinaryOp, ConvGeometry, PoolGeometry } from './types.js';
export { KERNEL_TABLE } from './types.js';

export const jsBackend: Backend = {
  name: 'js',
  kernels: jsKernels,
  info: { blasThreads: 0, detail: 'pure TypeScript kernels', sgemm: null, allocatorTuned: false },
};

interface Resolved {
  default: Backend;
  /** The native backend, or why it is not available (null: not tried, REBASIN_BACKEND=js|wasm). */
  native: Backend | { error: string } | null;
  /** Why this default was chosen (`rebasin doctor` prints it). */
  reason: string;
}

let wasmCached: WasmLoad | null = null;

/** Loads the wasm backend from the package's native/wasm/rebasin.wasm once; never throws. */
export function loadWasm(): WasmLoad {
  if (wasmCached === null) {
    let file = 'native/wasm/rebasin.wasm';
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      file = wasmModulePath();
      bytes = new Uint8Array(readFileSync(file));
    } catch (e) {
      return (wasmCached = { error: `the wasm kernels cannot be read (${file}): ${(e as Error).message}` });
    }
    wasmCached = instantiateWasm(bytes, 'native/wasm/rebasin.wasm');
  }
  return wasmCached;
}

/** The wasm backend if its module compiles here (it needs WebAssembly SIMD), else null. */
export function wasmBackend(): Backend | null {
  const w = loadWasm();
  return 'backend' in w ? w.backend : null;
}

/** Why the wasm backend is not available, or null. */
export function wasmLoadError(): string | null {
  const w = loadWasm();
  return 'error' in w ? w.error : null;
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

/** The loaders `chooseBackend` tries (tests pass failing ones to check the fallback order). */
export interface BackendLoaders {
  native(): NativeLoad;
  wasm(): WasmLoad;
}

/** The outcome of choosing: the backend, the native load's outcome, why, and a warning to print. */
export interface BackendChoice extends Resolved {
  warning: string | null;
}

/**
 * The default backend for a REBASIN_BACKEND value (undefined: not set): the requested one (an
 * InputError saying why when it cannot load), else native, else wasm, else pure TypeScript, with a
 * warning when it is not native. Loaders are only called when their backend may be used.
 */
export function chooseBackend(requested: BackendName | undefined, load: BackendLoaders): BackendChoice {
  if (requested === 'js') return { default: jsBackend, native: null, reason: 'REBASIN_BACKEND=js', warning: null };
  if (requested === 'wasm') {
    const w = load.wasm();
    if ('error' in w) throw new InputError(`REBASIN_BACKEND=wasm, but the wasm kernels cannot be loaded: ${w.error}`);
    return { default: w.backend, native: null, reason: 'REBASIN_BACKEND=wasm', warning: null };
  }
  const n = load.native();
  if ('backend' in n) {
    return { default: n.backend, native: n.backend, reason: requested === 'native' ? 'REBASIN_BACKEND=native' : 'the native addon loaded (the first choice)', warning: null };
  }
  if (requested === 'native') throw new InputError(`REBASIN_BACKEND=native, but the native addon cannot be loaded: ${n.error}`);
  const w = load.wasm();
  if ('backend' in w) {
    return {
      default: w.backend, native: { error: n.error }, reason: `the native addon did not load (${n.error})`,
      warning: `rebasin: using the wasm backend (single-threaded): ${n.error}`,
    };
  }
  return {
    default: jsBackend, native: { error: n.error }, reason: `neither the native addon (${n.error}) nor the wasm kernels (${w.error}) loaded`,
    warning: `rebasin: using the pure-TypeScript backend (slow): ${n.error}; ${w.error}`,
  };
}

function resolveFromEnv(): Resolved {
  const requested = choice('REBASIN_BACKEND', BACKEND_NAMES);
  const gemm = choice('REBASIN_GEMM', GEMM_CHOICES);
  const conv = choice('REBASIN_CONV', CONV_STRATEGIES);
  // The addon is only loaded when it may be used; a load failure is reported, never thrown here.
  const chosen = chooseBackend(requested, { native: loadNative, wasm: loadWasm });
  if (chosen.warning && process.env.REBASIN_QUIET_BACKEND !== '1') process.emitWarning(chosen.warning, { code: 'REBASIN_BACKEND' });
  const addon = nativeAddon();
  if (gemm && addon && chosen.default.name === 'native') {
    try {
      addon.gemmImpl(gemm);
    } catch (e) {
      throw new InputError(`REBASIN_GEMM=${gemm}: ${(e as Error).message}`);
    }
  }
  if (conv && addon && chosen.default.name === 'native') {
    if (conv === 'direct' && addon.gemmImpl() === 'openblas') {
      throw new InputError('REBASIN_CONV=direct needs our own sgemm kernels, but OpenBLAS runs (REBASIN_GEMM or the CPU)');
    }
    addon.convStrategy(conv);
  }
  return { default: chosen.default, native: chosen.native, reason: chosen.reason };
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

/** Why the process default backend is the one it is (REBASIN_BACKEND, or which loads failed). */
export function defaultBackendReason(): string {
  return resolve().reason;
}

/** Why the native backend is not available, or null. */
export function nativeLoadError(): string | null {
  const n = resolve().native;
  return n && 'error' in n ? n.error : null;
}
