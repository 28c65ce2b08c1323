/** `rebasin doctor`: which backend runs, BLAS threads, and a measured matmul rate. */
import { currentBackend, defaultBackend, defaultBackendReason, nativeLoadError, wasmLoadError } from '../core/backend/index.js';
import { F, Rng, randn, noGrad } from '../core/index.js';
import { UsageError, type CommandSpec, type Parsed } from './args.js';

export const doctorSpec: CommandSpec = {
  name: 'doctor',
  summary: 'Report the compute backend in use, BLAS threads and a measured matmul GFLOP/s.',
  usage: 'rebasin doctor [--size N] [--json]',
  options: {
    size: { type: 'int', help: 'square matmul size to time', default: 1024 },
    json: { type: 'boolean', help: 'print one JSON object on stdout' },
  },
};

export async function doctor(args: Parsed): Promise<number> {
  const n = args.options.size as number;
  if (!(n >= 16 && n <= 8192)) throw new UsageError(`doctor: --size must be in [16, 8192], got ${n}`);
  const backend = currentBackend();
  const info = backend.info;
  const rng = new Rng(0);
  const a = randn([n, n], rng);
  const b = randn([n, n], rng);
  const times: number[] = [];
  noGrad(() => {
    F.matmul(a, b); // warm-up
    // Up to 7 timings, stopping after a second of them (one on a slow backend).
    for (let spent = 0; times.length < 7 && spent < 1;) {
      const t0 = process.hrtime.bigint();
      F.matmul(a, b);
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
      spent += times[times.length - 1];
    }
  });
  times.sort((x, y) => x - y);
  const med = times[times.length >> 1];
  const gflops = (2 * n * n * n) / med / 1e9;
  const report = {
    backend: backend.name,
    detail: info.detail,
    blasThreads: info.blasThreads,
    // Which sgemm runs (REBASIN_GEMM) and whether large allocations stay mapped (REBASIN_MALLOC).
    sgemm: info.sgemm,
    allocatorTuned: info.allocatorTuned,
    // Why this backend: REBASIN_BACKEND, or which of native → wasm → js loaded first.
    reason: backend === defaultBackend() ? defaultBackendReason() : 'chosen by the caller (setBackend)',
    nativeError: nativeLoadError(),
    wasmError: backend.name === 'js' ? wasmLoadError() : null,
    matmul: { size: n, medianMs: +(med * 1000).toFixed(3), gflops: +gflops.toFixed(1) },
    node: process.version,
    openblasCoretype: process.env.OPENBLAS_CORETYPE ?? null,
  };
  if (args.options.json) {
    process.stdout.write(JSON.stringify(report) + '\n');
  } else {
    const lines = [
      `backend        ${report.backend} (${report.detail})`,
      `why            ${report.reason}`,
      `BLAS threads   ${report.blasThreads || '-'}`,
      `matmul ${n}²   ${report.matmul.medianMs} ms median → ${report.matmul.gflops} GFLOP/s`,
      `node           ${report.node}`,
    ];
    if (report.nativeError) lines.push(`native addon   not loaded: ${report.nativeError}`);
    if (report.wasmError) lines.push(`wasm kernels   not loaded: ${report.wasmError}`);
    process.stdout.write(lines.join('\n') + '\n');
  }
  return 0;
}
