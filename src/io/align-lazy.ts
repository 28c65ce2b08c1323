/**
 * Alignment streamed from and to safetensors files, for checkpoints larger than memory: a
 * `TensorSource` over a file (tensors read on demand, for methods/weight-matching-lazy.ts), and
 * π(B) written tensor by tensor.
 */
import { noGrad, Tensor } from '../core/tensor.js';
import { CheckFailedError, InputError } from '../errors.js';
import type { TensorSource } from '../methods/weight-matching-lazy.js';
import { applyHard, invertPerms, type Perms } from '../permutation/apply.js';
import type { PermutationSpec } from '../permutation/spec.js';
import { isBatchCounter } from '../state/params.js';
import type { OutputBatch } from './atomic.js';
import { openSafetensors, writeSafetensorsStreaming } from './safetensors.js';

export interface SafetensorsSource extends TensorSource {
  path: string;
  metadata: Record<string, string>;
  close(): Promise<void>;
}

/**
 * A lazy source over a safetensors file. num_batches_tracked is left out, as readModelFile does
 * for the in-memory path (the aligned output never carries it). Call close().
 */
export async function safetensorsSource(path: string): Promise<SafetensorsSource> {
  const r = await openSafetensors(path);
  return {
    path,
    metadata: r.metadata,
    names: r.names.filter((n) => !isBatchCounter(n)),
    shape: (name) => r.info(name).shape,
    read: async (name) => {
      const rec = await r.read(name);
      return new Tensor(rec.data, rec.shape);
    },
    close: () => r.close(),
  };
}

export interface StreamingApplyResult {
  tensors: number;
  /** Structural check: max |undo(π(B)) − B| over every tensor (0 when the permutation is exact). */
  maxAbsDiff: number;
}

/**
 * Writes π(B) to `outPath` (F32 safetensors, atomically), reading B one tensor at a time. Each
 * permuted tensor is also un-permuted and compared with B exactly; a difference aborts the write
 * (CheckFailedError), so a bad result is never left on disk.
 */
export async function applyPermutationsStreaming(
  spec: PermutationSpec,
  bPath: string,
  perms: Perms,
  outPath: string,
  metadata: Record<string, string> = {},
  batch?: OutputBatch,
): Promise<StreamingApplyResult> {
  const src = await safetensorsSource(bPath);
  try {
    const missing = src.names.filter((n) => !Object.prototype.hasOwnProperty.call(spec.axes, n));
    if (missing.length) throw new InputError(`${bPath}: tensor "${missing[0]}" is not covered by the permutation spec${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ''}`);
    const inverse = invertPerms(perms, spec);
    let maxAbsDiff = 0;
    const entries = src.names.map((name) => ({ name, shape: src.shape(name).slice() }));
    await writeSafetensorsStreaming(outPath, entries, async (name) => {
      const t = await src.read(name);
      const one = new Map([[name, t]]);
      const out = noGrad(() => applyHard(spec, one, perms)).get(name)!;
      const back = noGrad(() => applyHard(spec, new Map([[name, out]]), inverse)).get(name)!;
      let diff = 0;
      for (let i = 0; i < t.size; i++) diff = Math.max(diff, Math.abs(back.data[i] - t.data[i]));
      if (!(diff === 0)) throw new CheckFailedError(`tensor "${name}": undoing the permutation differs from B by ${diff}; nothing was written`);
      maxAbsDiff = Math.max(maxAbsDiff, diff);
      return out.data instanceof Float32Array ? out.data : Float32Array.from(out.data);
    }, { dtype: 'F32', metadata, batch });
    return { tensors: entries.length, maxAbsDiff };
  } finally {
    await src.close();
  }
}
