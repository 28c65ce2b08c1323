/**
 * Native kernel benchmarks: raw sgemm, the C log-Sinkhorn, the LAPACK solve behind the implicit
 * Sinkhorn backward, and the conv layers of the VGG-like training workload (batch 128), each
 * called directly on the addon so the figures are the kernels' own, without tensor overhead.
 * Standalone: `node dist/bench/kernels-native.js [--quick]`.
 */
import { fileURLToPath } from 'node:url';
import { CONV_STRATEGIES, loadNative, supportedGemmPaths, type GemmPath } from '../src/core/backend/native.js';
import type { ConvGeometry, Kernels } from '../src/core/backend/types.js';
import { Rng } from '../src/core/random.js';
import { timeInterleaved, timeMedian, type BenchContext, type BenchRow } from './harness.js';

interface TorchAnchors {
  sgemm2048Gflops?: number;
  sinkhorn1024x20Ms?: number;
  cnnStepsPerSec?: number;
}

const SECTION = 'kernels';
const TORCH = 'PyTorch 1.13 CPU (2 threads)';

function randn(n: number, rng: Rng, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

/** The four conv layers of bench/training.ts's CNN: 3→64, 64→64 at 32², 64→128, 128→128 at 16². */
function cnnConvLayers(batch: number): { g: ConvGeometry; first: boolean; label: string }[] {
  const spec: [number, number, number][] = [[3, 64, 32], [64, 64, 32], [64, 128, 16], [128, 128, 16]];
  return spec.map(([C, O, H]) => ({
    g: { N: batch, C, H, W: H, O, KH: 3, KW: 3, stride: 1, pad: 1, OH: H, OW: H },
    first: C === 3,
    label: `conv3×3 ${C}→${O} ${H}²`,
  }));
}

/**
 * Deeper VGG shapes (CIFAR-sized maps after three and four poolings) on either side of
 * REBASIN_CONV=auto's rule (native/conv.c): few output positions and a large dw take dw through
 * im2col there.
 */
function ruleBoundaryLayers(batch: number): { g: ConvGeometry; first: boolean; label: string }[] {
  const spec: [number, number, number][] = [[128, 256, 8], [256, 256, 4], [512, 512, 2]];
  return spec.map(([C, O, H]) => ({
    g: { N: batch, C, H, W: H, O, KH: 3, KW: 3, stride: 1, pad: 1, OH: H, OW: H },
    first: false,
    label: `conv3×3 ${C}→${O} ${H}²`,
  }));
}

/**
 * Forward + backward of conv layers (by default all four of the CNN) with their ReLU fused, as a
 * training step of the model graphs runs them (no dx for the input layer).
 */
function convWorkload(k: Kernels, batch: number, rng: Rng, shapes = cnnConvLayers(batch)) {
  const layers = shapes.map(({ g, first, label }) => {
    const K = g.C * g.KH * g.KW;
    return {
      g, first, label,
      flops: 2 * g.N * g.O * K * g.OH * g.OW,
      x: randn(g.N * g.C * g.H * g.W, rng), w: randn(g.O * K, rng, Math.sqrt(2 / K)), b: randn(g.O, rng),
      out: new Float32Array(g.N * g.O * g.OH * g.OW), dy: randn(g.N * g.O * g.OH * g.OW, rng),
      dx: new Float32Array(g.N * g.C * g.H * g.W), dw: new Float32Array(g.O * K), db: new Float32Array(g.O),
    };
  });
  return layers.map((L) => ({
    ...L,
    fwd: () => k.conv2dForward(L.x, L.w, L.b, L.out, L.g, true),
    bwd: () => k.conv2dBackward(L.x, L.w, L.dy, L.first ? null : L.dx, L.dw, L.db, L.g, L.out),
  }));
}

export async function run(ctx: BenchContext, torch?: TorchAnchors): Promise<BenchRow[]> {
  const loaded = loadNative();
  if ('error' in loaded) {
    ctx.log(`kernels: skipped, ${loaded.error}`);
    return [];
  }
  const k = loaded.backend.kernels;
  const raw = loaded.addon;
  const rows: BenchRow[] = [];
  const reps = ctx.quick ? 3 : 9;
  const rng = new Rng(0);
  const threads = raw.getThreads();
  const thr = `${threads} thread${threads === 1 ? '' : 's'}`;

  // sgemm through the addon (zero-copy Float32Array) on every path this CPU runs (OpenBLAS and our
  // own AVX-512 / AVX2 kernels), timed in alternation so load changes hit all alike.
  const impl = raw.gemmImpl();
  const paths = supportedGemmPaths();
  const forced = paths.includes('avx512') ? ' forced on an AVX-512 CPU' : '';
  const pathLabel = (w: GemmPath) => (w === 'openblas' ? 'OpenBLAS' : w === 'avx512' ? 'own AVX-512 kernel' : `own AVX2 kernel${forced}`);
  const withImpl = (which: GemmPath, fn: () => void) => () => {
    raw.gemmImpl(which);
    try { fn(); } finally { raw.gemmImpl(impl); }
  };
  for (const n of [512, 1024, 2048]) {
    const a = randn(n * n, rng), b = randn(n * n, rng), c = new Float32Array(n * n);
    const call = () => k.gemm(false, false, n, n, n, 1, a, 0, n, b, 0, n, 0, c, 0, n);
    const ms = await timeInterleaved(paths.map((w) => withImpl(w, call)), n > 1000 ? Math.min(reps, 7) : reps * 3);
    const gflops = (i: number) => (2 * n ** 3) / ms[i] / 1e6;
    const blas = gflops(paths.indexOf('openblas'));
    const measured = n === 2048 ? torch?.sgemm2048Gflops : undefined;
    paths.forEach((w, i) => rows.push({
      section: SECTION, name: `sgemm ${n}² (${pathLabel(w)}, ${thr})`, value: gflops(i), unit: 'GFLOP/s', higherIsBetter: true,
      ...(w === 'avx2'
        ? { anchor: blas, anchorSource: 'measured' as const, anchorLabel: 'OpenBLAS, same run', goal: '≥ 1.0× (on a CPU without AVX-512)' }
        : measured !== undefined
          ? { anchor: measured, anchorSource: 'measured' as const, anchorLabel: TORCH }
          : n === 1024 ? {} : { anchor: n === 512 ? 249 : 251, anchorSource: 'quoted' as const, anchorLabel: 'numpy 1.24/OpenBLAS (2 threads)' }),
    }));
  }

  // Log-domain Sinkhorn, 20 iterations on 1024² (the matrix is refreshed each run).
  {
    const n = 1024;
    const src = randn(n * n, rng, 3);
    const P = new Float32Array(n * n);
    const ms = await timeMedian(() => { P.set(src); k.sinkhornLog(P, 1, n, n, 20, null, null); }, reps);
    const copyMs = await timeMedian(() => P.set(src), reps);
    const measured = torch?.sinkhorn1024x20Ms;
    rows.push({
      section: SECTION, name: `log-Sinkhorn 1024²×20 (C, ${thr})`, value: ms - copyMs, unit: 'ms', higherIsBetter: false,
      ...(measured !== undefined
        ? { anchor: measured, anchorSource: 'measured' as const, anchorLabel: TORCH }
        : { anchor: 22, anchorSource: 'quoted' as const, anchorLabel: TORCH }),
      goal: '≥ 1.0×',
    });
  }

  // Dense solve at the KKT size of a 512-unit layer ((2n-1)² with n = 512).
  {
    const n = 1023;
    const A0 = randn(n * n, rng, 1 / Math.sqrt(n));
    for (let i = 0; i < n; i++) A0[i * n + i] += 2;
    const B0 = randn(n, rng);
    const A = new Float32Array(n * n), B = new Float32Array(n);
    const ms = await timeMedian(() => { A.set(A0); B.set(B0); k.solve(n, 1, A, B); }, reps);
    const copyMs = await timeMedian(() => { A.set(A0); B.set(B0); }, reps);
    rows.push({
      section: SECTION, name: `solve 1023² float32 (LU with singularity checks, ${thr})`, value: ms - copyMs, unit: 'ms', higherIsBetter: false,
      anchor: 5.4, anchorSource: 'quoted', anchorLabel: 'sgetrf+sgetrs alone (backend.md)', goal: '≥ 0.9×',
    });
  }

  // Conv layers of the CNN training workload.
  {
    const batch = 128;
    const layers = convWorkload(k, batch, rng);
    const convReps = ctx.quick ? 2 : 5;
    let total = 0;
    let flops = 0;
    for (const L of layers) {
      const f = await timeMedian(L.fwd, convReps, 1);
      const b = await timeMedian(L.bwd, convReps, 1);
      total += f + b;
      flops += L.flops * (L.first ? 2 : 3);
      rows.push({ section: SECTION, name: `${L.label} fwd / bwd, batch ${batch}`, value: f + b, unit: 'ms', higherIsBetter: false,
        note: `fwd ${f.toFixed(1)} ms, bwd ${b.toFixed(1)} ms` });
    }
    const stepMs = 1000 / (torch?.cnnStepsPerSec ?? 2.82);
    rows.push({
      section: SECTION, name: `4 conv layers fwd+bwd, batch ${batch} (${thr}, ${pathLabel(impl)})`, value: total, unit: 'ms', higherIsBetter: false,
      anchor: stepMs, anchorSource: torch?.cnnStepsPerSec !== undefined ? 'measured' : 'quoted', anchorLabel: `${TORCH}: one whole CNN training step`,
      goal: '≥ 1.2× (conv is most of the step)', note: `${(flops / total / 1e6).toFixed(0)} GFLOP/s over ${(flops / 1e9).toFixed(1)} GFLOP`,
    });
    if (!ctx.quick) {
      // REBASIN_CONV's strategies per layer, fwd+bwd, interleaved: auto must be no slower than
      // the best of direct and im2col (its rule, native/conv.c, was read off these rows).
      if (impl !== 'openblas') {
        const prevConv = raw.convStrategy();
        for (const L of [...layers, ...convWorkload(k, batch, rng, ruleBoundaryLayers(batch))]) {
          const ms = await timeInterleaved(CONV_STRATEGIES.map((st) => () => {
            raw.convStrategy(st);
            try { L.fwd(); L.bwd(); } finally { raw.convStrategy(prevConv); }
          }), convReps);
          const best = Math.min(...ms.slice(1));
          rows.push({
            section: SECTION, name: `${L.label} fwd+bwd, REBASIN_CONV=auto (${pathLabel(impl)})`, value: ms[0], unit: 'ms', higherIsBetter: false,
            anchor: best, anchorSource: 'measured', anchorLabel: 'the faster of direct and im2col, interleaved', goal: '≥ 1.0× (within noise)',
            note: CONV_STRATEGIES.map((st, i) => `${st} ${ms[i].toFixed(1)}`).join(', '),
          });
        }
      }
      // The alternatives the default replaced: an explicit im2col buffer (and col2im for dx) under
      // our gemm, everything on OpenBLAS, and the other own kernels this CPU runs.
      const alternatives: { name: string; set: () => void }[] = [
        ...(impl !== 'openblas' ? [{ name: 'own gemm over an explicit im2col buffer (REBASIN_CONV=im2col)', set: () => raw.convStrategy('im2col') }] : []),
        { name: 'OpenBLAS sgemm (explicit im2col)', set: () => raw.gemmImpl('openblas') },
        ...paths.filter((w) => w !== impl && w !== 'openblas').map((w) => ({ name: pathLabel(w), set: () => raw.gemmImpl(w) })),
      ];
      // Whole 4-layer passes, the default and each alternative in alternation, so load changes on
      // a shared machine hit all alike; each is compared with the default's time in this loop.
      const conv0 = raw.convStrategy();
      const pass = (set: () => void) => () => {
        set();
        try {
          for (const L of layers) { L.fwd(); L.bwd(); }
        } finally {
          raw.convStrategy(conv0);
          raw.gemmImpl(impl);
        }
      };
      const ms = await timeInterleaved([pass(() => {}), ...alternatives.map((alt) => pass(alt.set))], convReps);
      alternatives.forEach((alt, i) => rows.push({
        section: SECTION, name: `4 conv layers fwd+bwd, ${alt.name}`, value: ms[i + 1], unit: 'ms', higherIsBetter: false,
        anchor: ms[0], anchorSource: 'measured', anchorLabel: 'default, interleaved in the same loop', note: 'strategy comparison',
      }));
    }
  }

  // Row logsumexp and a transcendental elementwise op (memory/exp throughput).
  {
    const n = 1024;
    const x = randn(n * n, rng, 3), out = new Float32Array(n);
    const ms = await timeMedian(() => k.logsumexp(x, n, n, 1, out), reps * 2);
    rows.push({ section: SECTION, name: 'logsumexp rows of 1024²', value: ms, unit: 'ms', higherIsBetter: false });
    const y = new Float32Array(n * n);
    const ems = await timeMedian(() => k.unary('exp', x, y), reps * 2);
    rows.push({ section: SECTION, name: 'exp over 1M floats', value: ems, unit: 'ms', higherIsBetter: false,
      note: `${(n * n / ems / 1e6).toFixed(2)} G elements/s` });
  }
  return rows;
}

// Standalone: print the rows.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const quick = process.argv.includes('--quick');
  run({ quick, vsTorch: false, log: (m) => process.stderr.write(m + '\n') }).then((rows) => {
    for (const r of rows) {
      const anchor = r.anchor !== undefined ? `  (anchor ${r.anchor.toFixed(2)} ${r.unit}, ${r.anchorSource}: ${r.anchorLabel})` : '';
      console.log(`${r.name}: ${r.value.toFixed(2)} ${r.unit}${anchor}${r.note ? `  [${r.note}]` : ''}`);
    }
  }, (e: Error) => { console.error(e); process.exitCode = 1; });
}
