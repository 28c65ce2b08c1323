/**
 * The compiled kernels against the pure-TypeScript reference kernels, kernel by kernel, in float32
 * on seeded random inputs plus the edge cases (transposes, offsets, zero strides, padding, -Inf,
 * singular systems, malformed arguments): the native (C/OpenBLAS) addon, skipped when it is not
 * built, and the wasm (C → wasm32 + SIMD128) module, skipped where WebAssembly SIMD is missing.
 * Tests titled "native:" only concern the addon (its gemm paths, threads, argument checks).
 */
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CONV_STRATEGIES, NATIVE_CONTROLS, blasThreads, GEMM_PATHS, loadNative, nativeAddon, setBlasThreads, supportedGemmPaths, type ConvStrategy, type GemmPath, type NativeLoad } from '../src/core/backend/native.js';
import type { WasmLoad } from '../src/core/backend/wasm.js';
import { InputError } from '../src/errors.js';
import { col2im, im2col, jsKernels } from '../src/core/backend/js.js';
import { KERNEL_TABLE } from '../src/core/backend/types.js';
import { chooseBackend, loadWasm } from '../src/core/backend/index.js';
import type { ConvGeometry, FloatArray, Kernels, PoolGeometry } from '../src/core/backend/types.js';
import { Rng } from '../src/core/random.js';
import { normalEquationResidual, readRecordedSystem } from './helpers/linear-system.js';

const loaded = loadNative();
const nk: Kernels | null = 'backend' in loaded ? loaded.backend.kernels : null;
const skip: string | false = nk ? false : `native addon not available: ${'error' in loaded ? loaded.error : ''}`;
const js = jsKernels;
const wasmLoaded = loadWasm();
const wk: Kernels | null = 'backend' in wasmLoaded ? wasmLoaded.backend.kernels : null;

/** The backends every kernel test runs on. */
const COMPILED = [
  { name: 'native', kernels: nk, skip },
  { name: 'wasm', kernels: wk, skip: wk ? false : `wasm kernels not available: ${'error' in wasmLoaded ? wasmLoaded.error : ''}` },
] as const;
/** The kernels of the backend under test (tests run one at a time within a file). */
let under: Kernels | null = null;

/** Non-null accessor for use inside (skipped-when-null) tests: the backend under test, else native. */
function N(): Kernels {
  const k = under ?? nk;
  if (!k) throw new Error('unreachable: test should have been skipped');
  return k;
}

/** One test per compiled backend, titled "<backend>: <title>". */
function each(title: string, fn: () => void): void {
  for (const b of COMPILED) {
    test(`${b.name}: ${title}`, { skip: b.skip }, () => {
      under = b.kernels;
      try {
        fn();
      } finally {
        under = null;
      }
    });
  }
}

/** Like `each`, with the native test repeated under every sgemm path the CPU supports. */
function eachGemm(title: (impl: string) => string, fn: (impl: GemmPath | 'simd128') => void): void {
  for (const impl of supportedGemmPaths()) test(`native: ${title(impl)}`, { skip }, () => fn(impl));
  const w = COMPILED[1];
  test(`wasm: ${title('simd128')}`, { skip: w.skip }, () => {
    under = w.kernels;
    try {
      fn('simd128');
    } finally {
      under = null;
    }
  });
}

function randn(n: number, rng: Rng, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

function randu(n: number, rng: Rng, lo: number, hi: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rng.uniform();
  return a;
}

/** |a - e| <= atol + rtol |e| elementwise; NaN must match NaN and infinities must match exactly. */
function close(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(e) || !Number.isFinite(e)) {
      if (!Object.is(a, e) && !(Number.isNaN(a) && Number.isNaN(e))) {
        assert.fail(`${what}[${i}]: got ${a}, expected ${e}`);
      }
      continue;
    }
    const err = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(err <= worst)) { worst = Number.isNaN(err) ? Infinity : err; at = i; }
  }
  if (at >= 0) assert.fail(`${what}[${at}]: got ${actual[at]}, expected ${expected[at]} (rtol ${rtol}, atol ${atol})`);
}

function exact(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  close(actual, expected, 0, 0, what);
}

/** Runs fn with the sgemm path switched to impl (the kernel tests that reach sgemm run under every path the CPU supports). */
function withGemm<T>(impl: GemmPath | 'simd128', fn: () => T): T {
  if (impl === 'simd128') return fn(); // the wasm backend has one sgemm
  const a = nativeAddon()!;
  const prev = a.gemmImpl();
  a.gemmImpl(impl);
  try {
    return fn();
  } finally {
    a.gemmImpl(prev);
  }
}

// ------------------------------------------------------------------------------------------------

test('native: loads and reports OpenBLAS', { skip }, () => {
  assert.ok('backend' in loaded);
  const { name, info } = loaded.backend;
  assert.equal(name, 'native');
  assert.match(info.detail, /OpenBLAS/);
  assert.ok(info.blasThreads >= 1);
  assert.equal(info.sgemm, loaded.addon.gemmImpl());
  // Loading the addon must not switch the process to flush-to-zero (a -ffast-math link side effect).
  assert.ok(5e-324 > 0 && 2.2250738585072014e-308 / 4 > 0);
  const d = new Float32Array([-100]);
  N().unary('exp', d, d);
  assert.ok(d[0] > 0 && d[0] < 1.2e-38, `exp(-100) should be a float32 subnormal, got ${d[0]}`);
});

test('native: the addon exports exactly the kernel table and the controls (the C list matches the TS one)', { skip }, () => {
  const raw = nativeAddon()! as unknown as Record<string, unknown>;
  const exported = Object.keys(raw).filter((k) => typeof raw[k] === 'function').sort();
  assert.deepEqual(exported, [...Object.keys(KERNEL_TABLE), ...Object.keys(NATIVE_CONTROLS)].sort());
  // The dispatch: float32 at the table's argument runs in C, which names that kernel in its errors.
  assert.throws(() => N().axpy(1, new Float32Array(2), new Float64Array(2)), /rebasin native axpy: argument 'y'/);
});

/**
 * A KKT system from Sinkhorn-Rnd's implicit backward (mnist-vit seed pair 0, `--tau anneal`, the
 * 256-unit MLP group near hard; denormal entries), recorded when single-threaded OpenBLAS's sgelsd
 * failed to converge on it and the solve threw "LAPACK reported an error" (exit 1 mid-experiment).
 * File: int32 n, then A (n×n row-major) and b (n) as float32, gzipped.
 */
test('native: a float32 least-squares solve that sgelsd fails to converge on is redone in double (1 BLAS thread)', { skip }, () => {
  const { n, A, b } = readRecordedSystem('kkt-sgelsd-511.f32.gz');
  const prev = blasThreads();
  setBlasThreads(1);
  try {
    const x = b.slice();
    assert.equal(nk!.solve(n, 1, A.slice(), x), 'lstsq');
    // A least-squares solution: the normal-equation residual Aᵀ(Ax − b) is tiny against Aᵀb.
    const res = normalEquationResidual(A, x, b, n);
    assert.ok(res < 1e-4, `normal-equation residual ${res}`);
  } finally {
    setBlasThreads(prev);
  }
});

test('native: a system whose LU factors overflow fails at once with a LAPACK error (gelsd would loop forever on the NaN rebuild)', { skip }, () => {
  // Recorded near-hard Sinkhorn KKT systems (float32 denormal pivots): the 7×7 one hung the solve in
  // sbdsqr before; the 255×255 one made gelsd report "SLASCL parameter 4" (a NaN norm). In a child
  // process with a timeout, so a regression cannot hang the suite.
  for (const file of ['kkt-nan-rebuild-7.f32.gz', 'kkt-slascl-255.f32.gz']) {
    const script = `
      import { readRecordedSystem } from ${JSON.stringify(new URL('./helpers/linear-system.js', import.meta.url).href)};
      import { nativeAddon } from ${JSON.stringify(new URL('../src/core/backend/native.js', import.meta.url).href)};
      const { n, A, b } = readRecordedSystem(${JSON.stringify(file)});
      try { console.log(nativeAddon().solve(n, 1, A, b)); } catch (e) { console.log(e.message); }`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, OPENBLAS_NUM_THREADS: '1' } });
    assert.equal(r.signal, null, `${file}: the solve did not return within 60 s`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /LAPACK reported an error \(the LU factors overflowed/, file);
    assert.doesNotMatch(r.stderr, /On entry to/, file);
  }
});

test('native: a least-squares solve on which LAPACK reports an illegal argument inside gelsd prints nothing and still answers', { skip }, () => {
  // A recorded 1023×1023 KKT system (a trained MNIST MLP pair at lr 1, 13,312 float32 denormals):
  // OpenBLAS's xerbla_ printed "** On entry to SLASCL parameter number 4" on stdout, which would
  // corrupt --json output; the addon's own xerbla_ keeps the report instead. Child process: the
  // report would go to its stdout.
  const script = `
    import { normalEquationResidual, readRecordedSystem } from ${JSON.stringify(new URL('./helpers/linear-system.js', import.meta.url).href)};
    import { nativeAddon } from ${JSON.stringify(new URL('../src/core/backend/native.js', import.meta.url).href)};
    const { n, A, b } = readRecordedSystem('kkt-slascl-1023.f32.gz');
    const x = b.slice();
    const method = nativeAddon().solve(n, 1, A.slice(), x);
    console.log(JSON.stringify({ method, residual: normalEquationResidual(A, x, b, n) }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, OPENBLAS_NUM_THREADS: '1' } });
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stdout + r.stderr, /On entry to/);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, r.stdout);
  const { method, residual } = JSON.parse(lines[0]);
  assert.equal(method, 'lstsq');
  assert.ok(residual < 1e-3, `normal-equation residual ${residual}`);
});

test('native: setBlasThreads / blasThreads round-trip', { skip }, () => {
  const prev = blasThreads();
  setBlasThreads(1);
  assert.equal(blasThreads(), 1);
  setBlasThreads(prev);
  assert.equal(blasThreads(), prev);
  assert.throws(() => setBlasThreads(0), RangeError);
});

test('native: gemm impl switch: auto and own pick the best own kernel the CPU has; bad names are refused', { skip }, () => {
  const a = nativeAddon()!;
  const prev = a.gemmImpl();
  const paths = supportedGemmPaths();
  assert.ok(paths.includes('openblas'));
  const best = paths.includes('avx512') ? 'avx512' : paths.includes('avx2') ? 'avx2' : null;
  try {
    // A path the CPU lacks is refused by name, saying what it needs.
    for (const path of GEMM_PATHS.filter((p) => !paths.includes(p))) {
      assert.throws(() => a.gemmImpl(path), new RegExp(`the ${path} sgemm needs .*which this CPU does not report`));
    }
    assert.equal(a.gemmImpl('auto'), best ?? 'openblas');
    if (best) assert.equal(a.gemmImpl('own'), best);
    else assert.throws(() => a.gemmImpl('own'), /the own sgemm needs/);
    assert.equal(a.gemmImpl('openblas'), 'openblas');
    assert.throws(() => a.gemmImpl('mkl' as 'own'), /unknown gemm implementation 'mkl'/);
  } finally {
    a.gemmImpl(prev);
  }
});

eachGemm((impl) => `gemm (${impl}), all transposes, offsets, padded leading dimensions`, (impl) => withGemm(impl, () => {
  const rng = new Rng(1);
  // Small, and large enough for several K slices, row blocks and ragged register tiles.
  for (const [M, Nn, K] of [[37, 29, 45], [203, 77, 1100], [9, 2100, 70]]) for (const tA of [false, true]) {
    for (const tB of [false, true]) {
      for (const [alpha, beta] of [[1, 0], [0.7, 0.3], [-1.5, 1]]) {
        const lda = (tA ? M : K) + 3, ldb = (tB ? K : Nn) + 1, ldc = Nn + 5;
        const aOff = 7, bOff = 2, cOff = 11;
        const A = randn(aOff + (tA ? K : M) * lda, rng);
        const B = randn(bOff + (tB ? Nn : K) * ldb, rng);
        const C0 = randn(cOff + M * ldc, rng);
        const Cn = C0.slice(), Cj = C0.slice();
        N().gemm(tA, tB, M, Nn, K, alpha, A, aOff, lda, B, bOff, ldb, beta, Cn, cOff, ldc);
        js.gemm(tA, tB, M, Nn, K, alpha, A, aOff, lda, B, bOff, ldb, beta, Cj, cOff, ldc);
        close(Cn, Cj, 1e-5, 2e-5 * Math.sqrt(K), `gemm ${M}×${Nn}×${K} tA=${tA} tB=${tB} alpha=${alpha} beta=${beta}`);
      }
    }
  }
  // beta = 0 must not read C (BLAS convention): NaN garbage in C is overwritten.
  const A = randn(8 * 40, rng), B = randn(40 * 33, rng), Cnan = new Float32Array(8 * 33).fill(NaN), Cref = new Float32Array(8 * 33);
  N().gemm(false, false, 8, 33, 40, 1, A, 0, 40, B, 0, 33, 0, Cnan, 0, 33);
  js.gemm(false, false, 8, 33, 40, 1, A, 0, 40, B, 0, 33, 0, Cref, 0, 33);
  close(Cnan, Cref, 1e-5, 1e-4, 'gemm beta=0 over NaN');
  // K = 0 leaves beta*C; M = 0 touches nothing.
  const C = new Float32Array([1, 2, 3, 4]);
  N().gemm(false, false, 2, 2, 0, 1, new Float32Array(0), 0, 1, new Float32Array(0), 0, 2, 0.5, C, 0, 2);
  exact(C, [0.5, 1, 1.5, 2], 'gemm K=0');
  N().gemm(false, false, 0, 2, 2, 1, new Float32Array(0), 0, 2, new Float32Array(4), 0, 2, 0, C, 0, 2);
  exact(C, [0.5, 1, 1.5, 2], 'gemm M=0');
}));

eachGemm((impl) => `gemmStrided (${impl}), including broadcast (stride 0) and the fused tall-gemm case`, (impl) => withGemm(impl, () => {
  const rng = new Rng(2);
  const M = 6, Nn = 7, K = 5, count = 9;
  for (const tA of [false, true]) {
    for (const tB of [false, true]) {
      for (const [sA, sB] of [[M * K, K * Nn], [0, K * Nn], [M * K, 0], [M * K + 3, K * Nn + 1]]) {
        const A = randn(4 + count * Math.max(sA, M * K), rng);
        const B = randn(3 + count * Math.max(sB, K * Nn), rng);
        const sC = M * Nn + 2;
        const C0 = randn(1 + count * sC, rng);
        const Cn = C0.slice(), Cj = C0.slice();
        N().gemmStrided(tA, tB, M, Nn, K, 0.9, A, 4, sA, B, 3, sB, 0.5, Cn, 1, sC, count);
        js.gemmStrided(tA, tB, M, Nn, K, 0.9, A, 4, sA, B, 3, sB, 0.5, Cj, 1, sC, count);
        close(Cn, Cj, 1e-5, 1e-5, `gemmStrided tA=${tA} tB=${tB} sA=${sA} sB=${sB}`);
      }
      // Packed C and shared B: the path that runs as one tall gemm.
      const A = randn(count * M * K, rng), B = randn(K * Nn, rng);
      const Cn = new Float32Array(count * M * Nn), Cj = new Float32Array(count * M * Nn);
      N().gemmStrided(tA, tB, M, Nn, K, 1, A, 0, M * K, B, 0, 0, 0, Cn, 0, M * Nn, count);
      js.gemmStrided(tA, tB, M, Nn, K, 1, A, 0, M * K, B, 0, 0, 0, Cj, 0, M * Nn, count);
      close(Cn, Cj, 1e-5, 1e-5, `gemmStrided packed tA=${tA} tB=${tB}`);
    }
  }
  // Many small products: the batch is split over threads.
  const cnt = 64, A = randn(cnt * 16 * 16, rng), B = randn(cnt * 16 * 16, rng);
  const Cn = new Float32Array(cnt * 256), Cj = new Float32Array(cnt * 256);
  N().gemmStrided(false, true, 16, 16, 16, 1, A, 0, 256, B, 0, 256, 0, Cn, 0, 256, cnt);
  js.gemmStrided(false, true, 16, 16, 16, 1, A, 0, 256, B, 0, 256, 0, Cj, 0, 256, cnt);
  close(Cn, Cj, 1e-5, 1e-5, 'gemmStrided many small');
}));

function wellConditioned(n: number, rng: Rng, Ctor: typeof Float32Array | typeof Float64Array): FloatArray {
  const A = new Ctor(n * n);
  for (let i = 0; i < n * n; i++) A[i] = rng.normal() / Math.sqrt(n);
  for (let i = 0; i < n; i++) A[i * n + i] += 2;
  return A;
}

each('solve (LU) in float32 and float64, one and several right-hand sides', () => {
  const rng = new Rng(3);
  for (const Ctor of [Float32Array, Float64Array]) {
    for (const nrhs of [1, 3]) {
      const n = 40;
      const A = wellConditioned(n, rng, Ctor);
      const B = new Ctor(n * nrhs);
      for (let i = 0; i < B.length; i++) B[i] = rng.normal();
      const An = A.slice(), Bn = B.slice(), Aj = A.slice(), Bj = B.slice();
      assert.equal(N().solve(n, nrhs, An, Bn), 'lu');
      assert.equal(js.solve(n, nrhs, Aj, Bj), 'lu');
      const tol = Ctor === Float32Array ? 2e-5 : 1e-12;
      close(Bn, Bj, tol, tol, `solve ${Ctor.name} nrhs=${nrhs}`);
      // Residual of the native answer against the original system.
      for (let i = 0; i < n; i++) {
        for (let r = 0; r < nrhs; r++) {
          let s = 0;
          for (let k = 0; k < n; k++) s += A[i * n + k] * Bn[k * nrhs + r];
          assert.ok(Math.abs(s - B[i * nrhs + r]) < 10 * tol, `residual ${s - B[i * nrhs + r]}`);
        }
      }
    }
  }
});

test('native: singular solve falls back to minimum-norm least squares', { skip }, () => {
  const rng = new Rng(4);
  for (const Ctor of [Float32Array, Float64Array]) {
    for (const nrhs of [1, 2]) {
      // Rank 3 of 5: A = U V with U 5×3, V 3×5, built from small integers so it is exactly singular.
      const n = 5, r = 3;
      const U = Array.from({ length: n * r }, () => rng.int(5) - 2);
      const V = Array.from({ length: r * n }, () => rng.int(5) - 2);
      const A = new Ctor(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < r; k++) s += U[i * r + k] * V[k * n + j];
        A[i * n + j] = s;
      }
      const B = new Ctor(n * nrhs);
      for (let i = 0; i < B.length; i++) B[i] = rng.normal();
      const An = A.slice(), Bn = B.slice();
      assert.equal(N().solve(n, nrhs, An, Bn), 'lstsq', `${Ctor.name} nrhs=${nrhs}`);
      const Aj = A.slice(), Bj = B.slice();
      assert.equal(js.solve(n, nrhs, Aj, Bj), 'lstsq');
      const tol = Ctor === Float32Array ? 2e-4 : 1e-7;
      // Residual-minimising: Aᵀ (A X - B) = 0.
      for (let c = 0; c < nrhs; c++) {
        const res = new Float64Array(n);
        for (let i = 0; i < n; i++) {
          let s = -B[i * nrhs + c];
          for (let k = 0; k < n; k++) s += A[i * n + k] * Bn[k * nrhs + c];
          res[i] = s;
        }
        for (let j = 0; j < n; j++) {
          let g = 0;
          for (let i = 0; i < n; i++) g += A[i * n + j] * res[i];
          assert.ok(Math.abs(g) < tol * 50, `normal equations ${Ctor.name}: ${g}`);
        }
      }
      // Minimum norm: the reference's ridge-regularised solve approaches the same answer (its
      // ridge bias is ~1e-7 relative, hence the looser float64 tolerance here).
      close(Bn, Bj, Math.max(tol, 1e-5), Math.max(tol, 1e-5), `lstsq vs js ${Ctor.name} nrhs=${nrhs}`);
    }
  }
  // Numerically singular: a rank-50 product of Gaussians, 60×60, whose float32 rounding leaves
  // it just barely full-rank. The answer must still minimise the residual (no blow-up).
  for (const Ctor of [Float32Array, Float64Array]) {
    const n = 60, r = 50, nrhs = 3;
    const U = randn(n * r, rng), V = randn(r * n, rng);
    const A = new Ctor(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += U[i * r + k] * V[k * n + j];
      A[i * n + j] = s;
    }
    const B = new Ctor(n * nrhs);
    for (let i = 0; i < B.length; i++) B[i] = rng.normal();
    const An = A.slice(), Bn = B.slice();
    assert.equal(N().solve(n, nrhs, An, Bn), 'lstsq', `near-singular ${Ctor.name}`);
    let xnorm = 0;
    for (let c = 0; c < nrhs; c++) {
      const res = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        let s = -B[i * nrhs + c];
        for (let k = 0; k < n; k++) s += A[i * n + k] * Bn[k * nrhs + c];
        res[i] = s;
      }
      for (let j = 0; j < n; j++) {
        let g = 0;
        for (let i = 0; i < n; i++) g += A[i * n + j] * res[i];
        assert.ok(Math.abs(g) < (Ctor === Float32Array ? 2e-2 : 1e-8), `near-singular normal equations ${Ctor.name}: ${g}`);
      }
      for (let k = 0; k < n; k++) xnorm = Math.max(xnorm, Math.abs(Bn[k * nrhs + c]));
    }
    assert.ok(xnorm < 10, `minimum-norm answer stays small, got max |x| = ${xnorm}`);
  }
  // The zero matrix: x = 0.
  const b = new Float32Array([3]);
  assert.equal(N().solve(1, 1, new Float32Array([0]), b), 'lstsq');
  exact(b, [0], 'solve 0x0');
});

each('logsumexp with -Inf rows, +Inf and NaN, inner = 1 and > 1', () => {
  const rng = new Rng(5);
  for (const [outer, len, inner] of [[3, 50, 1], [2, 7, 13], [1, 1000, 1], [4, 1, 3]]) {
    const x = randn(outer * len * inner, rng, 5);
    // An all -Inf slice, a partially -Inf slice, a +Inf and a NaN.
    for (let l = 0; l < len; l++) x[l * inner] = -Infinity;
    if (len > 2) x[(outer - 1) * len * inner + inner] = -Infinity;
    if (outer > 2) x[2 * len * inner] = Infinity;
    if (outer > 1 && inner > 1) x[len * inner + 1] = NaN;
    const on = new Float32Array(outer * inner), oj = new Float32Array(outer * inner);
    N().logsumexp(x, outer, len, inner, on);
    js.logsumexp(x, outer, len, inner, oj);
    close(on, oj, 1e-6, 1e-6, `logsumexp ${outer}x${len}x${inner}`);
    assert.equal(on[0], -Infinity);
  }
});

each('sinkhornLog matches the reference (batched, threaded, marginals, masked entries)', () => {
  const rng = new Rng(6);
  // [batch, m, n, iters, marginals, scale of the log-values]; scale 300 is a small temperature,
  // where entries underflow in the linear domain and LSEs are large.
  const cases: [number, number, number, number, boolean, number][] = [
    [3, 7, 9, 10, true, 2], [2, 16, 16, 20, false, 2], [1, 300, 450, 5, true, 2], [2, 256, 260, 3, false, 2],
    [1, 1, 5, 2, true, 2], [1, 40, 50, 10, false, 300], [2, 30, 20, 6, true, 1000],
  ];
  for (const [batch, m, n, iters, marg, scale] of cases) {
    const P = randn(batch * m * n, rng, scale);
    for (let i = 0; i < P.length; i += 17) P[i] = -Infinity; // masked entries stay -Inf
    let logA: Float32Array | null = null, logB: Float32Array | null = null;
    if (marg) {
      // Marginals with equal total mass n: a_i = n/m · u_i / mean(u), b_j likewise with total n.
      const a = randu(m, rng, 0.5, 1.5), b = randu(n, rng, 0.5, 1.5);
      const sa = a.reduce((p, c) => p + c, 0), sb = b.reduce((p, c) => p + c, 0);
      logA = a.map((v) => Math.log((v * n) / sa));
      logB = b.map((v) => Math.log((v * n) / sb));
    }
    const Pn = P.slice(), Pj = P.slice();
    N().sinkhornLog(Pn, batch, m, n, iters, logA, logB);
    js.sinkhornLog(Pj, batch, m, n, iters, logA, logB);
    // Both sides store float32 after every step, so an entry keeps the rounding it picked up while
    // its magnitude was ~3·scale: the absolute tolerance grows with the scale.
    close(Pn, Pj, 2e-6, 2e-5 + 1e-6 * 3 * scale, `sinkhorn ${batch}x${m}x${n} it=${iters} scale=${scale}`);
  }
});

each('sumAxis and maxAxis (ties, NaN, inner = 1 and > 1)', () => {
  const rng = new Rng(7);
  for (const [outer, len, inner] of [[4, 33, 1], [3, 9, 17], [1, 1, 5], [2, 0, 3]]) {
    const x = randn(outer * len * inner, rng);
    // Ties: round to a coarse grid.
    for (let i = 0; i < x.length; i += 2) x[i] = Math.round(x[i]);
    if (x.length > 20) { x[5] = NaN; x[x.length - 3] = NaN; }
    const sn = new Float32Array(outer * inner), sj = new Float32Array(outer * inner);
    N().sumAxis(x, outer, len, inner, sn);
    js.sumAxis(x, outer, len, inner, sj);
    close(sn, sj, 1e-5, 1e-5, `sumAxis ${outer}x${len}x${inner}`);
    if (len === 0) continue;
    const mn = new Float32Array(outer * inner), mj = new Float32Array(outer * inner);
    const an = new Int32Array(outer * inner), aj = new Int32Array(outer * inner);
    N().maxAxis(x, outer, len, inner, mn, an);
    js.maxAxis(x, outer, len, inner, mj, aj);
    exact(mn, mj, `maxAxis ${outer}x${len}x${inner}`);
    exact(an, aj, `argmax ${outer}x${len}x${inner}`);
  }
});

each('unary ops, including specials and aliasing', () => {
  const rng = new Rng(8);
  const specials = [0, -0, 1, -1, Infinity, -Infinity, NaN, 1e-30, -1e-30, 1e-40, 88.7, 89, -87.5, -104, 1e-4, -1e-4, 0.6, -0.65, 20, -20];
  const x = new Float32Array(2000 + specials.length);
  x.set(randn(2000, rng, 4));
  x.set(specials, 2000);
  const tol: Record<string, number> = { exp: 3e-7, log: 3e-7, tanh: 3e-7, sigmoid: 4e-7 };
  for (const op of ['neg', 'exp', 'log', 'relu', 'tanh', 'sigmoid', 'sqrt', 'abs', 'square'] as const) {
    const on = new Float32Array(x.length), oj = new Float32Array(x.length);
    N().unary(op, x, on);
    js.unary(op, x, oj);
    close(on, oj, tol[op] ?? 0, 1e-45, `unary ${op}`);
    const alias = x.slice();
    N().unary(op, alias, alias);
    exact(alias, on, `unary ${op} in place`);
  }
});

each('binary broadcasting (same shape, row/column broadcast, scalar, general strides)', () => {
  const rng = new Rng(9);
  type Case = { shape: number[]; as: number[]; bs: number[]; la: number; lb: number };
  const cases: Case[] = [
    { shape: [4, 5], as: [5, 1], bs: [5, 1], la: 20, lb: 20 },
    { shape: [4, 5], as: [5, 1], bs: [0, 1], la: 20, lb: 5 }, // bias row
    { shape: [4, 5], as: [5, 1], bs: [1, 0], la: 20, lb: 4 }, // per-row scalar
    { shape: [4, 5], as: [0, 0], bs: [5, 1], la: 1, lb: 20 }, // scalar a
    { shape: [3, 4, 5], as: [1, 3, 12], bs: [20, 5, 1], la: 60, lb: 60 }, // transposed a
    { shape: [3, 4, 5], as: [20, 0, 1], bs: [0, 1, 0], la: 60, lb: 4 }, // middle-axis broadcast
    { shape: [2, 1, 3, 1], as: [3, 0, 1, 0], bs: [0, 0, 0, 0], la: 6, lb: 1 }, // size-1 axes
    { shape: [], as: [], bs: [], la: 1, lb: 1 }, // 0-d
    { shape: [0, 3], as: [3, 1], bs: [3, 1], la: 0, lb: 0 }, // empty
    { shape: [6, 2], as: [1, 6], bs: [2, 1], la: 12, lb: 12 }, // short strided inner axis
  ];
  for (const c of cases) {
    const a = randn(c.la, rng), b = randn(c.lb, rng);
    if (c.la > 3) { a[1] = NaN; a[2] = 0.25; }
    if (c.lb > 3) { b[2] = 0.25; b[3] = NaN; }
    const total = c.shape.reduce((p, d) => p * d, 1);
    for (const op of ['add', 'sub', 'mul', 'div', 'max', 'min'] as const) {
      const on = new Float32Array(total), oj = new Float32Array(total);
      N().binary(op, a, c.as, b, c.bs, on, c.shape);
      js.binary(op, a, c.as, b, c.bs, oj, c.shape);
      exact(on, oj, `binary ${op} shape=[${c.shape}] as=[${c.as}] bs=[${c.bs}]`);
    }
  }
});

each('axpy, affine (in place), reluBackward, sumSquares', () => {
  const rng = new Rng(10);
  const x = randn(1001, rng), y = randn(1001, rng);
  const yn = y.slice(), yj = y.slice();
  N().axpy(0.37, x, yn);
  js.axpy(0.37, x, yj);
  exact(yn, yj, 'axpy');
  const an = x.slice(), aj = new Float32Array(x.length);
  N().affine(an, -1.3, 0.2, an);
  js.affine(x, -1.3, 0.2, aj);
  exact(an, aj, 'affine');
  const dn = new Float32Array(x.length), dj = new Float32Array(x.length);
  N().reluBackward(x, y, dn);
  js.reluBackward(x, y, dj);
  exact(dn, dj, 'reluBackward');
  const sn = N().sumSquares(x), sj = js.sumSquares(x);
  assert.ok(Math.abs(sn - sj) <= 1e-12 * sj, `sumSquares ${sn} vs ${sj}`);
});

// The wasm backend serves these five kernels from the JS kernels themselves ("wasm: loads…" asserts it): only the addon is compared.
test('native: gelu, geluBackward and logsumexpBackward compute the JS kernels\' values bit for bit (erf table, V8\'s exp), edge values included', { skip }, () => {
  const rng = new Rng(12);
  const n = 40003; // not a multiple of the vector width
  const x = new Float32Array(n), dy = randn(n, rng);
  for (let i = 0; i < n; i++) x[i] = i % 3 === 0 ? rng.normal() * 4 : i % 3 === 1 ? rng.normal() * 0.01 : rng.normal() * 40;
  // Both erf branches' boundaries (|x/√2| = 6, table knots), exp's ranges (−½v² across ½ln2, 1.5ln2, −709.78, −745.13), specials.
  x.set([0, -0, NaN, Infinity, -Infinity, 1e-38, -1e-30, 6 * Math.SQRT2, -6 * Math.SQRT2, 8.4852, -8.48, Math.SQRT2 / 64, 0.8326, -1.4419, 37.68, -38.6, 38.61, 1e20]);
  const [gn, gj] = [new Float32Array(n), new Float32Array(n)];
  N().gelu(x, gn);
  js.gelu(x, gj);
  exact(gn, gj, 'gelu');
  N().geluBackward(x, dy, gn);
  js.geluBackward(x, dy, gj);
  exact(gn, gj, 'geluBackward');
  // logsumexp's gradient over the last axis (softmax rows) and over a middle axis, with −∞ and NaN rows.
  for (const [outer, len, inner] of [[400, 97, 1], [7, 13, 41]]) {
    const size = outer * len * inner;
    const xs = x.subarray(0, size).map((v) => (Number.isFinite(v) ? v : 0));
    xs[5] = -Infinity;
    const lse = new Float32Array(outer * inner);
    js.logsumexp(xs, outer, len, inner, lse);
    lse[1] = -Infinity;
    lse[2] = NaN;
    const g = dy.subarray(0, outer * inner);
    const [ln, lj] = [new Float32Array(size), new Float32Array(size)];
    N().logsumexpBackward(xs, outer, len, inner, lse, g, ln);
    js.logsumexpBackward(xs, outer, len, inner, lse, g, lj);
    exact(ln, lj, `logsumexpBackward [${outer}, ${len}, ${inner}]`);
  }
});

test('native: standardizeRows and its backward compute the JS kernels\' values bit for bit (LayerNorm rows, constant and NaN rows)', { skip }, () => {
  const rng = new Rng(13);
  for (const [R, D] of [[300, 64], [7, 1], [33, 257]]) {
    const x = randn(R * D, rng, 3), g = randn(R * D, rng);
    for (let i = 0; i < D; i++) x[i] = 2.5; // a constant row: variance 0, eps decides
    if (R > 2) x[D + 1] = NaN;
    const [yn, yj] = [new Float32Array(R * D), new Float32Array(R * D)];
    const [sn, sj] = [new Float64Array(R), new Float64Array(R)];
    N().standardizeRows(x, R, D, 1e-5, yn, sn);
    js.standardizeRows(x, R, D, 1e-5, yj, sj);
    exact(yn, yj, `standardizeRows [${R}, ${D}]`);
    exact(sn, sj, `standardizeRows invStd [${R}, ${D}]`);
    const [gn, gj] = [new Float32Array(R * D), new Float32Array(R * D)];
    N().standardizeRowsBackward(g, yj, sj, R, D, gn);
    js.standardizeRowsBackward(g, yj, sj, R, D, gj);
    exact(gn, gj, `standardizeRowsBackward [${R}, ${D}]`);
  }
});

each('gather and scatterAdd (repeated indices), index range checks', () => {
  const rng = new Rng(11);
  for (const [outer, len, inner] of [[3, 10, 1], [2, 6, 7]]) {
    const x = randn(outer * len * inner, rng);
    const index = new Int32Array([3, 0, 5, 5, 1, 3, 3]);
    const k = index.length;
    const gn = new Float32Array(outer * k * inner), gj = new Float32Array(outer * k * inner);
    N().gather(x, outer, len, inner, index, gn);
    js.gather(x, outer, len, inner, index, gj);
    exact(gn, gj, `gather inner=${inner}`);
    const dy = randn(outer * k * inner, rng);
    const d0 = randn(outer * len * inner, rng);
    const dn = d0.slice(), dj = d0.slice();
    N().scatterAdd(dy, outer, len, inner, index, dn);
    js.scatterAdd(dy, outer, len, inner, index, dj);
    close(dn, dj, 1e-6, 1e-6, `scatterAdd inner=${inner}`);
    assert.throws(() => N().gather(x, outer, len, inner, new Int32Array([len]), gn), RangeError);
    assert.throws(() => N().scatterAdd(dy, outer, len, inner, new Int32Array([-1]), dn), RangeError);
  }
});

each('copyStrided (transpose, negative strides, broadcast, 0-d)', () => {
  const rng = new Rng(12);
  const x = randn(120, rng);
  const cases: [number, number[], number[]][] = [
    [0, [1, 4, 20], [4, 5, 6]], // permuted axes
    [119, [-20, -1], [6, 20]], // reversed
    [7, [0, 3, 1], [5, 4, 3]], // broadcast leading axis
    [10, [2], [30]], // strided 1-d
    [5, [], []], // 0-d
    [0, [20, 1], [6, 20]], // contiguous
  ];
  for (const [off, strides, shape] of cases) {
    const total = shape.reduce((p, d) => p * d, 1);
    const on = new Float32Array(total), oj = new Float32Array(total);
    N().copyStrided(x, off, strides, on, shape);
    js.copyStrided(x, off, strides, oj, shape);
    exact(on, oj, `copyStrided off=${off} strides=[${strides}]`);
  }
  assert.throws(() => N().copyStrided(x, 100, [1], new Float32Array(30), [30]), RangeError);
  assert.throws(() => N().copyStrided(x, 0, [-1], new Float32Array(2), [2]), RangeError);
});

function convGeom(N_: number, C: number, H: number, W: number, O: number, KH: number, KW: number, stride: number, pad: number): ConvGeometry {
  return {
    N: N_, C, H, W, O, KH, KW, stride, pad,
    OH: Math.floor((H + 2 * pad - KH) / stride) + 1, OW: Math.floor((W + 2 * pad - KW) / stride) + 1,
  };
}

eachGemm((impl) => `conv2d (${impl} sgemm) forward/backward (stride 2, padding, 1×1, rectangular kernels, partial grads)`, (impl) => withGemm(impl, () => {
  const rng = new Rng(13);
  const geoms = [
    convGeom(3, 3, 9, 8, 4, 3, 3, 1, 1),
    convGeom(4, 2, 11, 10, 5, 3, 3, 2, 1),
    convGeom(2, 6, 5, 7, 3, 1, 1, 1, 0),
    convGeom(3, 4, 8, 9, 2, 2, 3, 2, 0),
    convGeom(1, 2, 6, 6, 3, 5, 5, 1, 2),
    convGeom(5, 3, 7, 7, 4, 3, 3, 3, 2),
    // Wider planes: register panels of 32 output positions span several output rows (OW 13), one
    // row exactly (OW 32) or parts of two (OW 33); padding 0 and KH-1 bound the flipped-kernel dx.
    convGeom(2, 5, 13, 13, 9, 3, 3, 1, 1),
    convGeom(2, 3, 32, 32, 17, 3, 3, 1, 1),
    convGeom(2, 4, 12, 33, 6, 3, 3, 1, 0),
    convGeom(2, 3, 10, 11, 5, 3, 3, 1, 2),
    convGeom(1, 70, 9, 9, 12, 3, 3, 1, 1), // K = 630: two K slices
    // OW a multiple of 16: B read straight from a zero-padded copy of the sample (pad 0, 1, 2; a
    // last half-width panel; 9 output channels = a ragged register tile).
    convGeom(2, 4, 18, 18, 8, 3, 3, 1, 0),
    convGeom(2, 5, 3, 16, 9, 3, 3, 1, 1),
    convGeom(2, 3, 14, 14, 6, 3, 3, 1, 2),
    convGeom(1, 40, 8, 32, 11, 3, 3, 1, 1), // K = 360: two K slices of the image path
    // OW a multiple of 8 but not 16 (the AVX2 kernel's direct path, a half last panel), OW 33 (one
    // lane past a panel), and stride 2 at width 17 (the AVX2 packing gathers every group).
    convGeom(2, 3, 10, 24, 7, 3, 3, 1, 1),
    convGeom(2, 3, 6, 33, 4, 3, 3, 1, 1),
    convGeom(2, 3, 17, 33, 6, 3, 3, 2, 1),
  ];
  for (const g of geoms) {
    const label = JSON.stringify(g);
    const K = g.C * g.KH * g.KW;
    const x = randn(g.N * g.C * g.H * g.W, rng), w = randn(g.O * K, rng), bias = randn(g.O, rng);
    for (const b of [bias, null]) {
      const on = new Float32Array(g.N * g.O * g.OH * g.OW), oj = on.slice();
      N().conv2dForward(x, w, b, on, g);
      js.conv2dForward(x, w, b, oj, g);
      close(on, oj, 1e-5, 1e-5 * Math.sqrt(K), `conv fwd ${label} bias=${b !== null}`);
    }
    const dy = randn(g.N * g.O * g.OH * g.OW, rng);
    const mk = () => ({ dx: randn(x.length, rng), dw: randn(w.length, rng), db: randn(g.O, rng) }); // garbage: must be overwritten
    const n = mk(), j = mk();
    N().conv2dBackward(x, w, dy, n.dx, n.dw, n.db, g);
    js.conv2dBackward(x, w, dy, j.dx, j.dw, j.db, g);
    const tol = 1e-5 * Math.sqrt(g.N * g.OH * g.OW);
    close(n.dx, j.dx, 1e-5, 1e-5 * Math.sqrt(g.O * g.KH * g.KW), `conv dx ${label}`);
    close(n.dw, j.dw, 1e-5, tol, `conv dw ${label}`);
    close(n.db, j.db, 1e-5, tol, `conv db ${label}`);
    // Only some gradients requested.
    const dw2 = new Float32Array(w.length);
    N().conv2dBackward(x, w, dy, null, dw2, null, g);
    close(dw2, j.dw, 1e-5, tol, `conv dw only ${label}`);
    const dx2 = new Float32Array(x.length);
    N().conv2dBackward(x, w, dy, dx2, null, null, g);
    close(dx2, j.dx, 1e-5, 1e-5 * Math.sqrt(g.O * g.KH * g.KW), `conv dx only ${label}`);
    // Fused ReLU: forward equals relu(conv); backward with the fused output equals the backward of
    // the conv fed dy masked by that output (the JS reference, itself checked against finite
    // differences in core-grad).
    const fn = new Float32Array(g.N * g.O * g.OH * g.OW), fj = fn.slice();
    N().conv2dForward(x, w, bias, fn, g, true);
    js.conv2dForward(x, w, bias, fj, g, true);
    close(fn, fj, 1e-5, 1e-5 * Math.sqrt(K), `conv+relu fwd ${label}`);
    const rn = mk(), rj = mk();
    N().conv2dBackward(x, w, dy, rn.dx, rn.dw, rn.db, g, fj);
    const masked = dy.map((v, i) => (fj[i] > 0 ? v : 0));
    js.conv2dBackward(x, w, masked, rj.dx, rj.dw, rj.db, g);
    close(rn.dx, rj.dx, 1e-5, 1e-5 * Math.sqrt(g.O * g.KH * g.KW), `conv+relu dx ${label}`);
    close(rn.dw, rj.dw, 1e-5, tol, `conv+relu dw ${label}`);
    close(rn.db, rj.db, 1e-5, tol, `conv+relu db ${label}`);
  }
}));

test('native: conv2d gives the same answer with 1 and 2 BLAS threads', { skip }, () => {
  const rng = new Rng(14);
  const g = convGeom(8, 16, 12, 12, 24, 3, 3, 1, 1);
  const x = randn(g.N * g.C * g.H * g.W, rng), w = randn(g.O * g.C * 9, rng), dy = randn(g.N * g.O * g.OH * g.OW, rng);
  const prev = blasThreads();
  const run = (t: number) => {
    setBlasThreads(t);
    const out = new Float32Array(dy.length), dx = new Float32Array(x.length), dw = new Float32Array(w.length), db = new Float32Array(g.O);
    N().conv2dForward(x, w, null, out, g);
    N().conv2dBackward(x, w, dy, dx, dw, db, g);
    return { out, dx, dw, db };
  };
  const a = run(1), b = run(2);
  setBlasThreads(prev);
  close(a.out, b.out, 1e-6, 1e-5, 'conv out 1 vs 2 threads');
  close(a.dx, b.dx, 1e-6, 1e-5, 'conv dx 1 vs 2 threads');
  close(a.dw, b.dw, 1e-5, 1e-4, 'conv dw 1 vs 2 threads');
  close(a.db, b.db, 1e-6, 1e-5, 'conv db 1 vs 2 threads');
});

/** Runs fn with the conv strategy (REBASIN_CONV) switched to s. */
function withConv<T>(s: ConvStrategy, fn: () => T): T {
  const a = nativeAddon()!;
  const prev = a.convStrategy();
  a.convStrategy(s);
  try {
    return fn();
  } finally {
    a.convStrategy(prev);
  }
}

// Every conv strategy on every sgemm path: forward (bias, fused ReLU) and backward (dx, dw, db, the
// fused-ReLU mask) equal the JS conv and one another. 256→256 at 4² is a shape where auto takes dw
// through im2col (few output positions, a large dw) and the rest direct; 8² and stride 2 are all
// direct under auto.
for (const impl of supportedGemmPaths()) test(`native: conv2d gives the same results with REBASIN_CONV=auto, direct and im2col (${impl} sgemm)`, { skip }, () => withGemm(impl, () => {
  const rng = new Rng(17);
  for (const g of [convGeom(1, 256, 4, 4, 256, 3, 3, 1, 1), convGeom(3, 8, 8, 8, 12, 3, 3, 1, 1), convGeom(2, 5, 9, 9, 6, 3, 3, 2, 1)]) {
    const label = `${impl} ${JSON.stringify(g)}`;
    const K = g.C * g.KH * g.KW, P = g.OH * g.OW;
    const x = randn(g.N * g.C * g.H * g.W, rng), w = randn(g.O * K, rng, 1 / Math.sqrt(K)), bias = randn(g.O, rng);
    const dy = randn(g.N * g.O * P, rng);
    const ref = { out: new Float32Array(dy.length), dx: new Float32Array(x.length), dw: new Float32Array(w.length), db: new Float32Array(g.O) };
    js.conv2dForward(x, w, bias, ref.out, g, true);
    js.conv2dBackward(x, w, dy.map((v, i) => (ref.out[i] > 0 ? v : 0)), ref.dx, ref.dw, ref.db, g);
    const runs = CONV_STRATEGIES.map((s) => withConv(s, () => {
      const r = { out: new Float32Array(dy.length), dx: randn(x.length, rng), dw: randn(w.length, rng), db: randn(g.O, rng) };
      N().conv2dForward(x, w, bias, r.out, g, true);
      N().conv2dBackward(x, w, dy, r.dx, r.dw, r.db, g, r.out);
      return r;
    }));
    CONV_STRATEGIES.forEach((s, i) => {
      const r = runs[i];
      close(r.out, ref.out, 1e-5, 1e-5 * Math.sqrt(K), `conv+relu fwd ${s} ${label}`);
      close(r.dx, ref.dx, 1e-5, 1e-5 * Math.sqrt(g.O * g.KH * g.KW), `conv dx ${s} ${label}`);
      close(r.dw, ref.dw, 1e-5, 1e-5 * Math.sqrt(g.N * P), `conv dw ${s} ${label}`);
      close(r.db, ref.db, 1e-5, 1e-5 * Math.sqrt(g.N * P), `conv db ${s} ${label}`);
    });
  }
}));

test('native: convStrategy sets and reports REBASIN_CONV\'s values and refuses others by name', { skip }, () => {
  const a = nativeAddon()!;
  const prev = a.convStrategy();
  try {
    for (const s of CONV_STRATEGIES) assert.equal(a.convStrategy(s), s);
    assert.throws(() => a.convStrategy('winograd' as 'auto'), /unknown conv strategy 'winograd'/);
  } finally {
    a.convStrategy(prev);
  }
});

// im2col / col2im are internal to conv: the explicit-buffer path (REBASIN_CONV=im2col), in small
// chunks of output rows (a chunk of 100 floats), must match the JS conv, whose im2col is checked
// directly below.
for (const impl of supportedGemmPaths()) test(`native: conv2d through explicit im2col/col2im in row chunks (${impl} sgemm)`, { skip }, () => withGemm(impl, () => withConv('im2col', () => {
  const rng = new Rng(15);
  const raw = nativeAddon()!;
  raw.convTune(100);
  try {
    for (const g of [convGeom(2, 3, 7, 6, 4, 3, 3, 2, 1), convGeom(1, 2, 5, 5, 3, 2, 2, 1, 0), convGeom(2, 3, 9, 9, 5, 3, 3, 1, 1)]) {
      const label = JSON.stringify(g);
      const K = g.C * g.KH * g.KW;
      const x = randn(g.N * g.C * g.H * g.W, rng), w = randn(g.O * K, rng), dy = randn(g.N * g.O * g.OH * g.OW, rng);
      const on = new Float32Array(dy.length), oj = on.slice();
      N().conv2dForward(x, w, null, on, g);
      js.conv2dForward(x, w, null, oj, g);
      close(on, oj, 1e-5, 1e-5 * Math.sqrt(K), `conv fwd ${label}`);
      const n = { dx: new Float32Array(x.length), dw: new Float32Array(w.length) }, j = { dx: new Float32Array(x.length), dw: new Float32Array(w.length) };
      N().conv2dBackward(x, w, dy, n.dx, n.dw, null, g);
      js.conv2dBackward(x, w, dy, j.dx, j.dw, null, g);
      close(n.dx, j.dx, 1e-5, 1e-5 * Math.sqrt(g.O * K), `conv dx ${label}`);
      close(n.dw, j.dw, 1e-5, 1e-5 * Math.sqrt(g.N * g.OH * g.OW), `conv dw ${label}`);
    }
  } finally {
    raw.convTune(1 << 17);
    raw.convTune(0);
  }
})));

test('js im2col / col2im: the layout they document, at an offset, and col2im as the adjoint', () => {
  const g = convGeom(1, 2, 5, 4, 1, 3, 2, 2, 1);
  const L = g.OH * g.OW;
  const x = Float32Array.from({ length: 3 + g.C * g.H * g.W }, (_, i) => i + 1);
  const col = new Float32Array(g.C * g.KH * g.KW * L).fill(NaN);
  im2col(x, 3, col, g);
  for (let c = 0; c < g.C; c++) for (let kh = 0; kh < g.KH; kh++) for (let kw = 0; kw < g.KW; kw++) {
    for (let oh = 0; oh < g.OH; oh++) for (let ow = 0; ow < g.OW; ow++) {
      const ih = oh * g.stride - g.pad + kh, iw = ow * g.stride - g.pad + kw;
      const want = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W ? x[3 + (c * g.H + ih) * g.W + iw] : 0;
      assert.equal(col[((c * g.KH + kh) * g.KW + kw) * L + oh * g.OW + ow], want);
    }
  }
  // <im2col(x), y> = <x, col2im(y)> for random y, and col2im accumulates.
  const rng = new Rng(21);
  const y = randn(col.length, rng);
  const dx = new Float32Array(x.length).fill(1);
  col2im(y, dx, 3, g);
  let lhs = 0, rhs = 0;
  for (let i = 0; i < col.length; i++) lhs += col[i] * y[i];
  for (let i = 3; i < x.length; i++) rhs += x[i] * (dx[i] - 1);
  assert.ok(Math.abs(lhs - rhs) <= 1e-3 * Math.abs(lhs), `${lhs} vs ${rhs}`);
  assert.deepEqual([...dx.subarray(0, 3)], [1, 1, 1]);
});

function poolGeom(N_: number, C: number, H: number, W: number, K: number, stride: number, pad: number): PoolGeometry {
  return { N: N_, C, H, W, K, stride, pad, OH: Math.floor((H + 2 * pad - K) / stride) + 1, OW: Math.floor((W + 2 * pad - K) / stride) + 1 };
}

each('max and average pooling with padding, ties and NaN', () => {
  const rng = new Rng(16);
  for (const g of [poolGeom(2, 3, 8, 8, 2, 2, 0), poolGeom(2, 2, 7, 9, 2, 2, 0), poolGeom(1, 3, 7, 6, 3, 2, 1),
    poolGeom(2, 1, 5, 5, 3, 1, 1), poolGeom(1, 2, 4, 4, 2, 2, 1), poolGeom(1, 1, 3, 3, 3, 3, 2)]) {
    const label = JSON.stringify(g);
    const x = randn(g.N * g.C * g.H * g.W, rng);
    for (let i = 0; i < x.length; i += 3) x[i] = Math.round(x[i]); // ties
    x[4] = NaN;
    const on = g.N * g.C * g.OH * g.OW;
    const mn = new Float32Array(on), mj = new Float32Array(on), an = new Int32Array(on), aj = new Int32Array(on);
    N().maxPool2dForward(x, mn, an, g);
    js.maxPool2dForward(x, mj, aj, g);
    exact(mn, mj, `maxpool ${label}`);
    exact(an, aj, `maxpool argmax ${label}`);
    const dy = randn(on, rng);
    const dxn = randn(x.length, rng), dxj = randn(x.length, rng);
    N().maxPool2dBackward(dy, an, dxn, g);
    js.maxPool2dBackward(dy, aj, dxj, g);
    close(dxn, dxj, 1e-6, 1e-6, `maxpool bwd ${label}`);
    const xa = randn(x.length, rng);
    const pn = new Float32Array(on), pj = new Float32Array(on);
    N().avgPool2dForward(xa, pn, g);
    js.avgPool2dForward(xa, pj, g);
    close(pn, pj, 1e-6, 1e-6, `avgpool ${label}`);
    const vn = randn(x.length, rng), vj = randn(x.length, rng);
    N().avgPool2dBackward(dy, vn, g);
    js.avgPool2dBackward(dy, vj, g);
    close(vn, vj, 1e-6, 1e-6, `avgpool bwd ${label}`);
  }
});

each('softmaxCrossEntropy', () => {
  const rng = new Rng(17);
  const n = 33, c = 10;
  const logits = randn(n * c, rng, 3);
  logits[5] = -Infinity;
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) labels[i] = rng.int(c);
  const pn = new Float32Array(n * c), pj = new Float32Array(n * c);
  const ln = N().softmaxCrossEntropy(logits, labels, n, c, pn);
  const lj = js.softmaxCrossEntropy(logits, labels, n, c, pj);
  assert.ok(Math.abs(ln - lj) <= 1e-6 * Math.abs(lj), `loss ${ln} vs ${lj}`);
  close(pn, pj, 1e-6, 1e-9, 'softmax probs');
  labels[3] = c;
  assert.throws(() => N().softmaxCrossEntropy(logits, labels, n, c, pn), RangeError);
});

each('adamw and sgd steps (PyTorch semantics)', () => {
  const rng = new Rng(18);
  const n = 777;
  const p0 = randn(n, rng);
  const st = { pn: p0.slice(), pj: p0.slice(), mn: new Float32Array(n), mj: new Float32Array(n), vn: new Float32Array(n), vj: new Float32Array(n) };
  for (let step = 1; step <= 5; step++) {
    const g = randn(n, rng);
    N().adamw(st.pn, g, st.mn, st.vn, 1e-2, 0.9, 0.999, 1e-8, 0.05, step);
    js.adamw(st.pj, g, st.mj, st.vj, 1e-2, 0.9, 0.999, 1e-8, 0.05, step);
  }
  close(st.pn, st.pj, 1e-6, 1e-7, 'adamw param');
  close(st.mn, st.mj, 1e-6, 1e-8, 'adamw m');
  close(st.vn, st.vj, 1e-6, 1e-10, 'adamw v');
  for (const [mom, damp, nest, wd] of [[0, 0, false, 0], [0.9, 0, false, 1e-3], [0.9, 0.1, false, 0], [0.8, 0, true, 5e-4]] as const) {
    const pn = p0.slice(), pj = p0.slice(), bn = new Float32Array(n), bj = new Float32Array(n);
    for (let s = 0; s < 4; s++) {
      const g = randn(n, rng);
      N().sgd(pn, g, bn, 0.1, mom, damp, nest, wd, s === 0);
      js.sgd(pj, g, bj, 0.1, mom, damp, nest, wd, s === 0);
    }
    close(pn, pj, 1e-6, 1e-7, `sgd mom=${mom} nesterov=${nest}`);
    close(bn, bj, 1e-6, 1e-7, `sgd buf mom=${mom}`);
  }
});

each('float64 arrays are served by the JS kernels (native: solve by LAPACK)', () => {
  const rng = new Rng(19);
  const x = Float64Array.from(randn(50, rng));
  const on = new Float64Array(50), oj = new Float64Array(50);
  N().unary('tanh', x, on);
  js.unary('tanh', x, oj);
  exact(on, oj, 'float64 unary');
  const g = convGeom(2, 2, 5, 5, 3, 3, 3, 1, 1);
  const xc = Float64Array.from(randn(2 * 2 * 25, rng)), w = Float64Array.from(randn(3 * 18, rng));
  const cn = new Float64Array(2 * 3 * 25), cj = new Float64Array(2 * 3 * 25);
  N().conv2dForward(xc, w, null, cn, g);
  js.conv2dForward(xc, w, null, cj, g);
  exact(cn, cj, 'float64 conv');
});

test('native: malformed arguments throw TypeError / RangeError naming kernel and argument', { skip }, () => {
  const f = new Float32Array(16), d = new Float64Array(16);
  const raw = nativeAddon();
  assert.ok(raw);
  const expectErr = (fn: () => unknown, type: typeof TypeError | typeof RangeError, re: RegExp) => {
    assert.throws(fn, (e: unknown) => e instanceof type && re.test((e as Error).message));
  };
  // Mixed dtypes, wrong kinds, missing arguments.
  expectErr(() => N().gemm(false, false, 2, 2, 2, 1, f, 0, 2, f, 0, 2, 0, d, 0, 2), TypeError, /gemm.*'C'.*Float32Array.*Float64Array/);
  expectErr(() => N().axpy(1, f, d), TypeError, /axpy.*'y'/);
  expectErr(() => raw.unary('exp', [1, 2, 3] as unknown as Float32Array, f), TypeError, /unary.*'x'/);
  expectErr(() => (raw.sumSquares as unknown as () => number)(), TypeError, /sumSquares.*expected 1 arguments/);
  expectErr(() => raw.gemm('yes' as unknown as boolean, false, 2, 2, 2, 1, f, 0, 2, f, 0, 2, 0, f, 0, 2), TypeError, /gemm.*'transA'.*boolean/);
  expectErr(() => N().solve(2, 1, new Int32Array(4) as unknown as Float32Array, f), TypeError, /solve.*'A'/);
  expectErr(() => N().solve(2, 1, new Float32Array(4), new Float64Array(2)), TypeError, /solve.*'B'/);
  // Sizes and ranges.
  expectErr(() => N().gemm(false, false, 4, 4, 4, 1, f, 1, 4, f, 0, 4, 0, f, 0, 4), RangeError, /gemm.*'A'.*length 16/);
  expectErr(() => N().gemm(false, false, 2, 2, 3, 1, f, 0, 2, f, 0, 2, 0, f, 0, 2), RangeError, /gemm.*lda/);
  expectErr(() => N().gemm(false, false, 2.5, 2, 2, 1, f, 0, 2, f, 0, 2, 0, f, 0, 2), RangeError, /gemm.*'M'/);
  expectErr(() => N().unary('cube' as 'exp', f, f), RangeError, /unary.*unknown op 'cube'/);
  expectErr(() => N().unary('exp', f, new Float32Array(3)), RangeError, /unary.*'out'/);
  expectErr(() => N().binary('add', f, [4, 1], f, [4], f, [4, 4]), RangeError, /binary.*same length/);
  expectErr(() => N().binary('add', f, [4, 1], f, [5, 1], f, [4, 4]), RangeError, /binary.*'b'.*strided view/);
  expectErr(() => N().logsumexp(f, 2, 9, 1, f), RangeError, /logsumexp.*'x'/);
  expectErr(() => N().sinkhornLog(f, 1, 4, 4, 1, new Float32Array(3), null), RangeError, /sinkhornLog.*'logA'/);
  const g = convGeom(1, 1, 4, 4, 1, 3, 3, 1, 0);
  expectErr(() => N().conv2dForward(f, f, null, f, { ...g, OH: 3 }), RangeError, /conv2dForward.*geometry/);
  expectErr(() => N().conv2dForward(f, f, null, f, { ...g, stride: 0 }), RangeError, /conv2dForward.*'stride'/);
  expectErr(() => N().conv2dForward(f, f, d as unknown as Float32Array, f, g), TypeError, /conv2dForward.*'bias'/);
  expectErr(() => raw.conv2dForward(f, f, null, f, null as unknown as ConvGeometry), TypeError, /conv2dForward.*'g'/);
  expectErr(() => N().maxPool2dForward(f, f, new Int32Array(1), poolGeom(1, 1, 4, 4, 2, 2, 0)), RangeError, /maxPool2dForward.*'argmax'/);
  expectErr(() => N().maxPool2dBackward(f, new Int32Array(4).fill(16), f, poolGeom(1, 1, 4, 4, 2, 2, 0)), RangeError, /maxPool2dBackward.*argmax/);
  expectErr(() => N().sgd(f, new Float32Array(3), f, 0.1, 0, 0, false, 0, true), RangeError, /sgd.*'grad'/);
  expectErr(() => N().maxAxis(f, 2, 8, 1, f, new Float32Array(2) as unknown as Int32Array), TypeError, /maxAxis.*'argmax'.*Int32Array/);
});

const wskip = COMPILED[1].skip;

test('wasm: loads, names itself, and runs the heavy kernels in wasm (the rest in the JS kernels)', { skip: wskip }, () => {
  assert.ok('backend' in wasmLoaded);
  const { backend, served } = wasmLoaded;
  assert.equal(backend.name, 'wasm');
  assert.match(backend.info.detail, /SIMD128/);
  for (const k of ['gemm', 'gemmStrided', 'conv2dForward', 'conv2dBackward', 'sinkhornLog', 'logsumexp', 'unary', 'binary'] as const) {
    assert.ok(served.includes(k), `${k} runs in wasm`);
  }
  for (const k of served) assert.ok(k in KERNEL_TABLE, `${k} is a kernel of the table`);
  // Kernels not served are the JS kernels themselves.
  for (const k of Object.keys(KERNEL_TABLE) as (keyof Kernels)[]) {
    if (!served.includes(k)) assert.equal(backend.kernels[k], js[k], `${k} falls back to js`);
  }
});

test('wasm: memory grows for large arguments and results stay right; copies are counted', { skip: wskip }, () => {
  assert.ok('backend' in wasmLoaded);
  const rng = new Rng(30);
  const M = 700, K = 650, Nn = 720; // ~5.6 MB of operands, beyond the module's initial memory
  const A = randn(M * K, rng), B = randn(K * Nn, rng);
  const Cw = new Float32Array(M * Nn), Cj = new Float32Array(M * Nn);
  const before = wasmLoaded.heap.copiedBytes;
  N_wasm().gemm(false, false, M, Nn, K, 1, A, 0, K, B, 0, Nn, 0, Cw, 0, Nn);
  js.gemm(false, false, M, Nn, K, 1, A, 0, K, B, 0, Nn, 0, Cj, 0, Nn);
  close(Cw, Cj, 1e-5, 2e-5 * Math.sqrt(K), 'large gemm');
  assert.equal(wasmLoaded.heap.copiedBytes - before, 4 * (M * K + K * Nn + M * Nn * 1), 'A, B in and C out (beta = 0: C not copied in)');
  // A small call after the large one still works (the heap is reset per call).
  const y = Float32Array.from([1, 2, 3]);
  N_wasm().axpy(2, Float32Array.from([1, 1, 1]), y);
  exact(y, [3, 4, 5], 'axpy after growth');
});

function N_wasm(): Kernels {
  if (!wk) throw new Error('unreachable: test should have been skipped');
  return wk;
}

test('backend choice: native, else wasm, else js, with the reason and a warning; forced choices that cannot load say why', () => {
  const wasmOk = { backend: { name: 'wasm' } } as unknown as WasmLoad;
  const nativeOk = { backend: { name: 'native' } } as unknown as NativeLoad;
  const nativeBad: NativeLoad = { error: 'no addon here' };
  const wasmBad: WasmLoad = { error: 'no SIMD here' };
  const never = (): never => { throw new Error('this loader must not be called'); };
  let c = chooseBackend(undefined, { native: () => nativeOk, wasm: never });
  assert.equal(c.default.name, 'native');
  assert.equal(c.warning, null);
  c = chooseBackend(undefined, { native: () => nativeBad, wasm: () => wasmOk });
  assert.equal(c.default.name, 'wasm');
  assert.match(c.reason, /native addon did not load \(no addon here\)/);
  assert.match(c.warning ?? '', /wasm backend/);
  c = chooseBackend(undefined, { native: () => nativeBad, wasm: () => wasmBad });
  assert.equal(c.default.name, 'js');
  assert.match(c.reason, /no addon here.*no SIMD here/);
  assert.equal(chooseBackend('js', { native: never, wasm: never }).default.name, 'js');
  assert.equal(chooseBackend('wasm', { native: never, wasm: () => wasmOk }).default.name, 'wasm');
  assert.throws(() => chooseBackend('wasm', { native: never, wasm: () => wasmBad }), (e: unknown) => e instanceof InputError && /REBASIN_BACKEND=wasm.*no SIMD here/.test((e as Error).message));
  assert.throws(() => chooseBackend('native', { native: () => nativeBad, wasm: never }), (e: unknown) => e instanceof InputError && /REBASIN_BACKEND=native.*no addon here/.test((e as Error).message));
});
