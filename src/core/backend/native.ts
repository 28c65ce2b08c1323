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
import { ERF_TABLE } from './erf.js';
import { jsKernels } from './js.js';
import { KERNEL_TABLE, type Backend, type BackendInfo, type KernelName, type Kernels } from './types.js';

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
 * REBASIN_CONV's values: 'direct' has our own gemm kernels read im2col's panels straight from the
 * image, 'im2col' writes an explicit im2col buffer (and col2im for dx) under the sgemm in use,
 * 'auto' picks per layer shape by a fixed rule read off measurements (native/conv.c). Under
 * OpenBLAS every convolution is im2col.
 */
export const CONV_STRATEGIES = ['auto', 'direct', 'im2col'] as const;
export type ConvStrategy = (typeof CONV_STRATEGIES)[number];

/** The addon's functions besides the kernels: threads, build facts and bench/test switches. */
export interface NativeControls {
  setThreads(n: number): void;
  getThreads(): number;
  config(): string;
  /** Bench hook: conv threading 0 auto / 1 our threads over samples / 2 OpenBLAS threads; >= 100 sets the im2col chunk (floats). */
  convTune(mode: number): void;
  /** The conv strategy setting (REBASIN_CONV); with an argument, sets it. */
  convStrategy(strategy?: ConvStrategy): ConvStrategy;
  /** True when the addon raised glibc's mmap/trim thresholds (off with REBASIN_MALLOC=system). */
  allocatorTuned(): boolean;
  /** The sgemm path in use; with an argument, switches it (throws when the CPU cannot run that path). */
  gemmImpl(impl?: GemmChoice): GemmPath;
  /** Hands erf.ts's table to the C GELU kernels (at load), so they compute what the JS kernels do. */
  setErfTable(table: Float64Array): void;
}

/** The controls by name, so the load-time check (and a test) can list them. */
export const NATIVE_CONTROLS = {
  setThreads: true, getThreads: true, config: true, convTune: true, convStrategy: true, allocatorTuned: true, gemmImpl: true,
  setErfTable: true,
} as const satisfies Record<keyof NativeControls, true>;

/**
 * The raw addon: every kernel of the table (taking the same arguments as the `Kernels` method of
 * the same name, Float32Array only except where the table says 'all') plus the controls.
 */
export type NativeAddon = Pick<Kernels, KernelName> & NativeControls;

/** Every function the addon must export; an older build missing one is reported, not called. */
const REQUIRED = [...Object.keys(KERNEL_TABLE), ...Object.keys(NATIVE_CONTROLS)] as (keyof NativeAddon)[];

/** Where the package root is: this file runs as dist/src/core/backend/native.js (or from src/ under a TS runner). */
function packageRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const fourUp = join(here, '..', '..', '..', '..');
  const threeUp = join(here, '..', '..', '..');
  if (existsSync(join(fourUp, 'package.json'))) return fourUp;
  if (existsSync(join(threeUp, 'package.json'))) return threeUp;
  return fourUp;
}

/** Path of the wasm backend's module (built by scripts/build-wasm.mjs, shipped in the package). */
export function wasmModulePath(): string {
  return join(packageRoot(), 'native', 'wasm', 'rebasin.wasm');
}

/** Path of the compiled addon. */
export function nativeAddonPath(): string {
  return join(packageRoot(), 'build', 'Release', 'rebasin_native.node');
}

export type NativeLoad = { backend: Backend; addon: NativeAddon } | { error: string };

let cached: NativeLoad | null = null;

function tryLoad(): NativeLoad {
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
  a.setErfTable(ERF_TABLE);
  const config = a.config().trim();
  const info: BackendInfo = {
    // Getters, so setBlasThreads / gemmImpl switches are reflected in what doctor/bench report.
    get blasThreads() { return a.getThreads(); },
    get detail() {
      const path = a.gemmImpl();
      const gemm = path === 'openblas' ? 'sgemm: OpenBLAS' : `sgemm: own ${path === 'avx512' ? 'AVX-512' : 'AVX2'} kernels`;
      const conv = path === 'openblas' ? 'conv: im2col' : `conv: ${a.convStrategy()}`;
      return `N-API addon over ${config}; ${gemm}; ${conv}${a.allocatorTuned() ? '; large allocations kept mapped' : ''}`;
    },
    get sgemm() { return a.gemmImpl(); },
    get allocatorTuned() { return a.allocatorTuned(); },
  };
  return { backend: { name: 'native', kernels: dispatchKernels(a, jsKernels), info }, addon: a };
}

/** Loads the addon once (it is process-wide); never throws. */
export function loadNative(): NativeLoad {
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
  const load = loadNative();
  return 'addon' in load ? load.addon : null;
}

/** Sets OpenBLAS's thread count (also used by the addon's own threaded loops). No-op without the addon. */
export function setBlasThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`setBlasThreads: n must be a positive integer, got ${n}`);
  nativeAddon()?.setThreads(n);
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

type AnyKernel = (...args: unknown[]) => unknown;

/**
 * The native kernels, derived from the table: for each kernel, a Float32Array at its dtype argument
 * goes to C (which also checks that the other arrays are Float32Array and throws a TypeError naming
 * the argument when they are not) and anything else to the JS kernels; 'all' goes to C as is.
 */
function dispatchKernels(addon: NativeAddon, js: Kernels): Kernels {
  const out: Partial<Record<KernelName, AnyKernel>> = {};
  for (const name of Object.keys(KERNEL_TABLE) as KernelName[]) {
    const native = addon[name] as AnyKernel;
    const fallback = js[name] as AnyKernel;
    const at = KERNEL_TABLE[name];
    out[name] = at === 'all' ? native : (...args) => (args[at] instanceof Float32Array ? native(...args) : fallback(...args));
  }
  return out as Kernels;
}
