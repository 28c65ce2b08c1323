/**
 * Memory of `align --lazy` beside the in-memory `align --method wm` on the same pair of
 * GPT-2-layout checkpoints (Hugging Face names, Conv1D weights, config.json; random weights — the
 * permutations do not matter here, what is held does). Each run is a child process; its peak
 * resident set comes from process.resourceUsage() at exit, and the lazy run's own report gives the
 * tensors it held. Runs alternate (in-memory, lazy, in-memory, …) and medians are quoted.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/core/random.js';
import { writeSafetensorsStreaming } from '../src/io/safetensors.js';
import { median, type BenchContext, type BenchRow } from './harness.js';

/** GPT-2's tensors for width d, L layers, vocabulary V, context T (shapes as Hugging Face stores them). */
function gpt2Tensors(d: number, L: number, V: number, T: number): { name: string; shape: number[] }[] {
  const out = [{ name: 'transformer.wte.weight', shape: [V, d] }, { name: 'transformer.wpe.weight', shape: [T, d] }];
  for (let l = 0; l < L; l++) {
    const p = `transformer.h.${l}`;
    out.push(
      { name: `${p}.ln_1.weight`, shape: [d] }, { name: `${p}.ln_1.bias`, shape: [d] },
      { name: `${p}.attn.c_attn.weight`, shape: [d, 3 * d] }, { name: `${p}.attn.c_attn.bias`, shape: [3 * d] },
      { name: `${p}.attn.c_proj.weight`, shape: [d, d] }, { name: `${p}.attn.c_proj.bias`, shape: [d] },
      { name: `${p}.ln_2.weight`, shape: [d] }, { name: `${p}.ln_2.bias`, shape: [d] },
      { name: `${p}.mlp.c_fc.weight`, shape: [d, 4 * d] }, { name: `${p}.mlp.c_fc.bias`, shape: [4 * d] },
      { name: `${p}.mlp.c_proj.weight`, shape: [4 * d, d] }, { name: `${p}.mlp.c_proj.bias`, shape: [d] },
    );
  }
  out.push({ name: 'transformer.ln_f.weight', shape: [d] }, { name: 'transformer.ln_f.bias', shape: [d] });
  return out;
}

async function writeCheckpoint(folder: string, seed: number, o: { d: number; L: number; V: number; T: number; heads: number }) {
  mkdirSync(folder, { recursive: true });
  const rng = new Rng(seed);
  const tensors = gpt2Tensors(o.d, o.L, o.V, o.T);
  await writeSafetensorsStreaming(join(folder, 'model.safetensors'), tensors.map((t) => ({ ...t })), (name) => {
    const t = tensors.find((x) => x.name === name)!;
    return rng.fillNormal(new Float32Array(t.shape.reduce((a, b) => a * b, 1)), 0, 0.02) as Float32Array;
  });
  writeFileSync(join(folder, 'config.json'), JSON.stringify({ model_type: 'gpt2', vocab_size: o.V, n_positions: o.T, n_embd: o.d, n_head: o.heads, n_layer: o.L, tie_word_embeddings: true }));
}

const PRELOAD = `data:text/javascript,process.on('exit',()=>process.stderr.write('\\nMAXRSS '+process.resourceUsage().maxRSS+'\\n'))`;

/** Peak RSS (MB) of one `align` run, and its JSON summary. */
function alignRss(cli: string, args: string[]): { rssMb: number; summary: Record<string, unknown> } {
  const r = spawnSync(process.execPath, ['--import', PRELOAD, cli, 'align', ...args, '--json'], { encoding: 'utf8', maxBuffer: 1 << 24, env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
  if (r.status !== 0) throw new Error(`bench lazy: align ${args.join(' ')} failed (exit ${r.status}): ${r.stderr.slice(-400)}`);
  const m = /MAXRSS (\d+)/.exec(r.stderr);
  if (!m) throw new Error('bench lazy: the child did not report its peak RSS');
  return { rssMb: Number(m[1]) / 1024, summary: JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown> };
}

export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const shape = ctx.quick ? { d: 256, L: 4, V: 4096, T: 256, heads: 4 } : { d: 512, L: 12, V: 16384, T: 512, heads: 8 };
  const cli = resolve(dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-bench-lazy-'));
  try {
    await writeCheckpoint(join(dir, 'a'), 1, shape);
    await writeCheckpoint(join(dir, 'b'), 2, shape);
    const [a, b] = [join(dir, 'a/model.safetensors'), join(dir, 'b/model.safetensors')];
    const label = `GPT-2 layout d=${shape.d}, ${shape.L} layers, vocab ${shape.V}`;
    ctx.log(`bench lazy: ${label}`);
    const eager: number[] = [];
    const lazy: number[] = [];
    let reads: Record<string, number> = {};
    const reps = ctx.quick ? 1 : 3;
    for (let i = 0; i < reps; i++) {
      eager.push(alignRss(cli, [a, b, '--method', 'wm', '-o', join(dir, 'eager.safetensors')]).rssMb);
      const l = alignRss(cli, [a, b, '--lazy', '-o', join(dir, 'lazy.safetensors')]);
      lazy.push(l.rssMb);
      reads = l.summary.reads as Record<string, number>;
    }
    const checkpointMb = reads.checkpointBytes / 1e6;
    return [
      { section: 'lazy', name: `align --lazy peak RSS, ${label} (A+B ${checkpointMb.toFixed(0)} MB as float32)`, value: median(lazy), unit: 'MB', higherIsBetter: false,
        anchor: median(eager), anchorSource: 'measured', anchorLabel: 'in-memory align --method wm, same pair', goal: 'peak ≪ A+B' },
      { section: 'lazy', name: `align --lazy tensors held at once (bound: the largest tensor of A and B, ${(reads.boundBytes / 1e6).toFixed(1)} MB)`, value: reads.peakBytes / 1e6, unit: 'MB', higherIsBetter: false,
        anchor: checkpointMb, anchorSource: 'measured', anchorLabel: 'A+B as float32' },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
