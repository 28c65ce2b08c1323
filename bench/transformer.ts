/**
 * Transformer training steps (the LMC tasks' models: GPT-2-style d64×2 on Debian's licence texts,
 * ViT d64×2 on MNIST) with the native GELU, softmax-gradient and LayerNorm kernels (native/exact.c)
 * beside the same steps with those kernels taken from the JS backend, timed in alternation in one
 * process. Both compute the same bits (checked here on the losses), so the ratio is the kernels'.
 */
import { kernels } from '../src/core/backend/index.js';
import { jsKernels } from '../src/core/backend/js.js';
import type { Kernels } from '../src/core/backend/types.js';
import { loadMnist } from '../src/data/mnist.js';
import { loadLicenseText, TEXT_VOCAB } from '../src/data/text.js';
import { gpt, vit } from '../src/models/index.js';
import { trainModel } from '../src/training/train.js';
import { timeInterleaved, type BenchContext, type BenchRow } from './harness.js';

/** The kernels this comparison swaps. */
const SWAPPED = ['gelu', 'geluBackward', 'logsumexpBackward', 'standardizeRows', 'standardizeRowsBackward'] as const;

function withJsKernels<T>(fn: () => T): T {
  const k = kernels() as unknown as Record<string, unknown>;
  const saved = SWAPPED.map((name) => k[name]);
  for (const name of SWAPPED) k[name] = jsKernels[name as keyof Kernels];
  try {
    return fn();
  } finally {
    SWAPPED.forEach((name, i) => { k[name] = saved[i]; });
  }
}

export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const batches = ctx.quick ? 2 : 8;
  const tasks = [
    { label: 'GPT-2-style d64×2, 4 heads, context 64, batch 64 (text-gpt)', model: gpt({ vocab: TEXT_VOCAB.length, context: 64, width: 64, layers: 2, heads: 4 }),
      data: loadLicenseText('train', { context: 64, limit: 64 * batches }), batchSize: 64, lr: 3e-3 },
    { label: 'ViT d64×2, 4 heads, 7×7 patches, batch 128 (mnist-vit)', model: vit({ imageShape: [1, 28, 28], patch: 7, classes: 10, width: 64, layers: 2, heads: 4 }),
      data: loadMnist('train', { limit: 128 * batches, layout: 'chw' }), batchSize: 128, lr: 1e-3 },
  ];
  const rows: BenchRow[] = [];
  for (const t of tasks) {
    const step = () => trainModel({ model: t.model, data: t.data, criterion: 'ce', epochs: 1, batchSize: t.batchSize, lr: t.lr, seed: 0 }).history[0].trainLoss;
    const native = step();
    const js = withJsKernels(step);
    if (native !== js) throw new Error(`bench transformer: ${t.label}: the two kernel sets trained differently (loss ${native} vs ${js})`);
    ctx.log(`bench transformer: ${t.label}`);
    const [a, b] = await timeInterleaved([step, () => withJsKernels(step)], ctx.quick ? 2 : 7, 1);
    rows.push({ section: 'transformer', name: `training step, ${t.label}`, value: a / batches, unit: 'ms', higherIsBetter: false,
      anchor: b / batches, anchorSource: 'measured', anchorLabel: 'same step, GELU, softmax gradient and LayerNorm in the JS kernels', note: 'same bits (losses checked equal)' });
  }
  return rows;
}
