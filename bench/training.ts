/**
 * Training-step and matmul benchmarks: the workloads of the reference measurements
 * (../shared/reference/backend.md), timed through the public tensor API.
 */
import { currentBackend, kernels } from '../src/core/backend/index.js';
import { nativeAddon, supportedGemmPaths, type GemmPath } from '../src/core/backend/native.js';
import { F, noGrad, randn, Rng, SGD, Tensor, zeros } from '../src/core/index.js';
import { timeInterleaved, timeMedian, type BenchContext, type BenchRow } from './harness.js';

export interface TorchFigures {
  sgemm2048Gflops?: number;
  mlpStepsPerSec?: number;
  cnnStepsPerSec?: number;
  sinkhorn1024x20Ms?: number;
  lapMs?: Record<string, number>;
  /** End-to-end MNIST LMC workloads (bench/torch_ref.py --rebasin). */
  rebasin?: { trainTwoSec?: number; wmSec?: number; midSec?: number; l2Sec?: number; lmcSweepSec?: number };
}

function kaiming(shape: number[], fanIn: number, rng: Rng): Tensor {
  const t = randn(shape, rng, Math.sqrt(2 / fanIn));
  return t.requireGrad();
}

/** 784-512-512-512-10 MLP, batch 512: forward, backward, SGD step. */
export function mlpWorkload(): () => void {
  const rng = new Rng(0);
  const sizes = [784, 512, 512, 512, 10];
  const params: Tensor[] = [];
  for (let i = 0; i + 1 < sizes.length; i++) {
    params.push(kaiming([sizes[i + 1], sizes[i]], sizes[i], rng));
    params.push(zeros([sizes[i + 1]]).requireGrad());
  }
  const x = randn([512, 784], rng);
  const labels = Int32Array.from({ length: 512 }, (_, i) => i % 10);
  const opt = new SGD(params, { lr: 0.01, momentum: 0.9 });
  return () => {
    let h = x;
    for (let i = 0; i < 4; i++) {
      h = F.linear(h, params[2 * i], params[2 * i + 1]);
      if (i < 3) h = F.relu(h);
    }
    const loss = F.crossEntropy(h, labels);
    opt.zeroGrad();
    loss.backward();
    opt.step();
  };
}

/**
 * VGG-like CNN on 32×32×3, batch 128: conv64, conv64, pool, conv128, conv128, pool, dense 10, each
 * conv followed by ReLU. `fused` writes conv+ReLU as one op (`F.conv2d(..., { relu: true })`, what
 * the model graphs run); otherwise F.relu(F.conv2d(...)) as two.
 */
export function cnnWorkload(batch = 128, fused = true): () => void {
  const rng = new Rng(0);
  const convs: [number, number][] = [[3, 64], [64, 64], [64, 128], [128, 128]];
  const params: Tensor[] = [];
  for (const [cin, cout] of convs) {
    params.push(kaiming([cout, cin, 3, 3], cin * 9, rng));
    params.push(zeros([cout]).requireGrad());
  }
  params.push(kaiming([10, 128 * 8 * 8], 128 * 64, rng));
  params.push(zeros([10]).requireGrad());
  const x = randn([batch, 3, 32, 32], rng);
  const labels = Int32Array.from({ length: batch }, (_, i) => i % 10);
  const opt = new SGD(params, { lr: 0.01, momentum: 0.9 });
  return () => {
    let h = x;
    for (let i = 0; i < 4; i++) {
      h = fused
        ? F.conv2d(h, params[2 * i], params[2 * i + 1], { padding: 1, relu: true })
        : F.relu(F.conv2d(h, params[2 * i], params[2 * i + 1], { padding: 1 }));
      if (i === 1 || i === 3) h = F.maxPool2d(h, 2);
    }
    const logits = F.linear(F.flatten(h), params[8], params[9]);
    const loss = F.crossEntropy(logits, labels);
    opt.zeroGrad();
    loss.backward();
    opt.step();
  };
}

export async function run(ctx: BenchContext, torch?: TorchFigures): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const native = currentBackend().name === 'native';
  const torchLabel = 'PyTorch 1.13 CPU (2 threads)';
  const anchor = (measured: number | undefined, quoted: number) =>
    measured !== undefined
      ? { anchor: measured, anchorSource: 'measured' as const, anchorLabel: torchLabel }
      : { anchor: quoted, anchorSource: 'quoted' as const, anchorLabel: torchLabel };

  // sgemm 2048² through the tensor API vs the kernels called directly: OpenBLAS (the issue's
  // yardstick) and our own kernel (AVX-512 or AVX2), which F.matmul runs where the CPU has it. Timed
  // in alternation so load changes hit all three alike.
  const n = native ? 2048 : 256;
  const rng = new Rng(1);
  const a = randn([n, n], rng);
  const b = randn([n, n], rng);
  const c = new Float32Array(n * n);
  const reps = ctx.quick ? 3 : 9;
  const addon = native ? nativeAddon() : null;
  const impl = addon?.gemmImpl() ?? 'js';
  const ownPath = impl === 'avx512' || impl === 'avx2' ? impl : null;
  const own = ownPath !== null;
  const ownLabel = ownPath === 'avx512' ? 'AVX-512' : 'AVX2';
  const direct = (which: 'openblas' | 'avx512' | 'avx2') => () => {
    addon!.gemmImpl(which);
    try {
      addon!.gemm(false, false, n, n, n, 1, a.data as Float32Array, 0, n, b.data as Float32Array, 0, n, 0, c, 0, n);
    } finally {
      addon!.gemmImpl(ownPath ?? 'openblas');
    }
  };
  const api = () => noGrad(() => F.matmul(a, b));
  const gf = (ms: number) => (2 * n ** 3) / (ms / 1000) / 1e9;
  if (addon) {
    const fns = ownPath ? [direct('openblas'), direct(ownPath), api] : [direct('openblas'), api];
    const t = await timeInterleaved(fns, reps);
    const [blasMs, apiMs] = [t[0], t[t.length - 1]];
    rows.push({ section: 'training', name: `sgemm ${n}² OpenBLAS called directly`, value: gf(blasMs), unit: 'GFLOP/s', higherIsBetter: true,
      ...(torch?.sgemm2048Gflops !== undefined ? { anchor: torch.sgemm2048Gflops, anchorSource: 'measured' as const, anchorLabel: torchLabel } : { anchor: 250, anchorSource: 'quoted' as const, anchorLabel: 'numpy/OpenBLAS 2 threads' }) });
    if (own) {
      rows.push({ section: 'training', name: `sgemm ${n}² own ${ownLabel} kernel called directly`, value: gf(t[1]), unit: 'GFLOP/s', higherIsBetter: true,
        anchor: gf(blasMs), anchorSource: 'measured', anchorLabel: 'OpenBLAS directly, same run' });
    }
    rows.push({ section: 'training', name: `sgemm ${n}² via F.matmul (${own ? `own ${ownLabel} kernel` : 'OpenBLAS'})`, value: gf(apiMs), unit: 'GFLOP/s', higherIsBetter: true,
      anchor: gf(blasMs), anchorSource: 'measured', anchorLabel: 'OpenBLAS directly, same run', goal: '≥ 0.9×',
      ...(own ? { note: `${(t[1] / apiMs).toFixed(2)}× of the own kernel called directly` } : {}) });
  } else {
    const [directMs, apiMs] = await timeInterleaved([() => kernels().gemm(false, false, n, n, n, 1, a.data, 0, n, b.data, 0, n, 0, c, 0, n), api], reps);
    rows.push({ section: 'training', name: `sgemm ${n}² via F.matmul (pure TS)`, value: gf(apiMs), unit: 'GFLOP/s', higherIsBetter: true,
      anchor: gf(directMs), anchorSource: 'measured', anchorLabel: 'same kernel called directly', goal: '≥ 0.9×' });
  }

  if (!native) {
    ctx.log('training: pure-TS backend active; MLP/CNN steps skipped (they need the native addon)');
    return rows;
  }
  const mlp = mlpWorkload();
  const mlpMs = await timeMedian(mlp, ctx.quick ? 5 : 21, 3);
  rows.push({ section: 'training', name: 'MLP 784-512-512-512-10 step, batch 512', value: 1000 / mlpMs, unit: 'steps/s', higherIsBetter: true,
    ...anchor(torch?.mlpStepsPerSec, 43.5), goal: '≥ 1.2×' });
  // Timed one after the other, not interleaved: alternating two models' activations (0.5 GB)
  // through the caches slows both by ~5-10%, which is not what a training run sees.
  const cnnReps = ctx.quick ? 3 : 9;
  const fusedMs = await timeMedian(cnnWorkload(128, true), cnnReps, 2);
  const apartMs = await timeMedian(cnnWorkload(128, false), cnnReps, 2);
  rows.push({ section: 'training', name: 'VGG-like CNN step, batch 128, 32×32×3 (conv+ReLU fused, as the models run)', value: 1000 / fusedMs, unit: 'steps/s', higherIsBetter: true,
    ...anchor(torch?.cnnStepsPerSec, 2.82), goal: '≥ 1.0×' });
  rows.push({ section: 'training', name: 'VGG-like CNN step, same, F.relu(F.conv2d(...)) as two ops', value: 1000 / apartMs, unit: 'steps/s', higherIsBetter: true,
    ...anchor(torch?.cnnStepsPerSec, 2.82) });
  // The same fused step on every sgemm path this CPU runs, interleaved (one model, so the caches
  // see what a training run sees); an AVX2 path on an AVX-512 CPU is labelled as forced.
  if (addon && !ctx.quick) {
    const paths = supportedGemmPaths();
    const forced = paths.includes('avx512') ? ', forced on an AVX-512 CPU' : '';
    const step = cnnWorkload(128, true);
    const ms = await timeInterleaved(paths.map((p) => async () => {
      addon.gemmImpl(p);
      try { await step(); } finally { addon.gemmImpl(impl as GemmPath); }
    }), cnnReps);
    paths.forEach((p, i) => rows.push({
      section: 'training', name: `VGG-like CNN step, batch 128, ${p === 'openblas' ? 'OpenBLAS (explicit im2col)' : `own ${p === 'avx512' ? 'AVX-512' : `AVX2 kernels${forced}`}`}, interleaved`,
      value: 1000 / ms[i], unit: 'steps/s', higherIsBetter: true,
      ...(torch?.cnnStepsPerSec !== undefined ? { anchor: torch.cnnStepsPerSec, anchorSource: 'measured' as const, anchorLabel: torchLabel } : {}),
      ...(p === 'avx2' ? { goal: '≥ 2.5 steps/s (on a CPU without AVX-512)' } : {}),
    }));
  }
  return rows;
}
