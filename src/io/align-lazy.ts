/**
 * Alignment streamed from and to safetensors checkpoints, for checkpoints larger than memory: a
 * `TensorSource` over a file or a sharded checkpoint (tensors read on demand, for
 * methods/weight-matching-lazy.ts), and π(B) written tensor by tensor — each tensor permuted as
 * its stored bytes, so it keeps its dtype (F16/BF16 stay F16/BF16, buffers of any dtype are
 * copied), and a sharded B is written sharded the same way (same shard files, a new index).
 */
import { basename, dirname, join } from 'node:path';
import { Tensor } from '../core/tensor.js';
import { CheckFailedError, InputError } from '../errors.js';
import type { TensorSource } from '../methods/weight-matching-lazy.js';
import { entryIndex, invertPerms, validatePerms, type Perms } from '../permutation/apply.js';
import type { PermutationSpec } from '../permutation/spec.js';
import { isBatchCounter } from '../state/params.js';
import { withOutputBatch, writeFileAtomic, type OutputBatch } from './atomic.js';
import { openCheckpoint, type CheckpointReader } from './safetensors-sharded.js';
import { safetensorsDtypeSize, writeSafetensorsStreaming, type SafetensorsDtype, type SafetensorsEntry } from './safetensors.js';

export interface SafetensorsSource extends TensorSource {
  path: string;
  metadata: Record<string, string>;
  /** The stored dtype of a tensor. */
  dtype(name: string): SafetensorsDtype;
  /** Stored bytes per file tensor, for reports (what reading it costs). */
  byteLength(name: string): number;
  /** The underlying checkpoint (shards, raw reads). */
  reader: CheckpointReader;
  close(): Promise<void>;
}

/**
 * A lazy source over a safetensors file or a sharded checkpoint's index. num_batches_tracked is
 * left out, as readModelFile does for the in-memory path (the aligned output never carries it).
 * Call close().
 */
export async function safetensorsSource(path: string): Promise<SafetensorsSource> {
  const r = await openCheckpoint(path);
  return {
    path,
    metadata: r.metadata,
    names: r.names.filter((n) => !isBatchCounter(n)),
    shape: (name) => r.info(name).shape,
    dtype: (name) => r.info(name).dtype,
    byteLength: (name) => r.info(name).byteLength,
    read: async (name) => {
      const rec = await r.read(name);
      return new Tensor(rec.data, rec.shape);
    },
    reader: r,
    close: () => r.close(),
  };
}

/** Gathers whole elements (of `elem` bytes) along `axis`: out[…, i, …] = in[…, index[i], …]. */
function gatherBytes(bytes: Uint8Array, shape: readonly number[], axis: number, index: Int32Array, elem: number): Uint8Array {
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const n = shape[axis];
  const innerBytes = shape.slice(axis + 1).reduce((a, b) => a * b, 1) * elem;
  const out = new Uint8Array(bytes.length);
  // Copy in the widest unit that divides a row (readRaw's buffers start aligned).
  const unit = innerBytes % 4 === 0 ? 4 : innerBytes % 2 === 0 ? 2 : 1;
  const View = unit === 4 ? Uint32Array : unit === 2 ? Uint16Array : Uint8Array;
  const src = new View(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.length / unit);
  const dst = new View(out.buffer, 0, out.length / unit);
  const w = innerBytes / unit;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < n; i++) {
      const from = (o * n + index[i]) * w;
      const to = (o * n + i) * w;
      if (w > 64) dst.set(src.subarray(from, from + w), to);
      else for (let k = 0; k < w; k++) dst[to + k] = src[from + k];
    }
  }
  return out;
}

/** A tensor's stored bytes permuted by the spec (exact for every dtype: elements are moved, not converted). */
export function permuteBytes(spec: PermutationSpec, name: string, shape: readonly number[], bytes: Uint8Array, dtype: SafetensorsDtype, perms: Perms): Uint8Array {
  const entries = spec.axes[name];
  if (!entries || entries.length !== shape.length) throw new Error(`permuteBytes: tensor "${name}" has ${shape.length} axes but the spec lists ${entries?.length ?? 'none'}`);
  let out = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes);
  entries.forEach((a, axis) => {
    if (a === null) return;
    out = gatherBytes(out, shape, axis, entryIndex(spec, a, perms), safetensorsDtypeSize(dtype));
  });
  return out;
}

/** The files π(B) is written to for `-o outPath`: the file itself, or for a sharded B the shards next to the index `outPath`. */
export function checkpointOutputFiles(src: SafetensorsSource, outPath: string): string[] {
  const shards = src.reader.shards;
  if (!shards) return [outPath];
  if (!/\.index\.json$/i.test(outPath)) throw new InputError(`-o ${outPath}: ${src.path} is sharded, so the output is too: name its index, e.g. ${join(dirname(outPath), basename(src.path))} (the shards are written next to it)`);
  return [...shards.files.map((f) => join(dirname(outPath), f)), outPath];
}

export interface StreamingApplyResult {
  tensors: number;
  /** Structural check: max |undo(π(B)) − B| over every tensor (0 when the permutation is exact). */
  maxAbsDiff: number;
  /** The files written (shards, then the index). */
  files: string[];
}

/**
 * Writes π(B) to `outPath` atomically (with `batch`, staged in it), reading B one tensor at a time:
 * each tensor in its stored dtype; a sharded B (its index) as the same shards plus an index at
 * `outPath`. Each permuted tensor is also un-permuted and compared with B's bytes; a difference
 * aborts the write (CheckFailedError), so a bad result is never left on disk. `spec` must cover
 * every tensor of B (InputError naming the first that it does not).
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
    validatePerms(spec, perms);
    const inverse = invertPerms(perms, spec);
    let maxAbsDiff = 0;
    const produce = async (name: string): Promise<Uint8Array> => {
      const shape = src.shape(name);
      const dtype = src.dtype(name);
      const raw = await src.reader.readRaw(name);
      const out = permuteBytes(spec, name, shape, raw, dtype, perms);
      const back = permuteBytes(spec, name, shape, out, dtype, inverse);
      for (let i = 0; i < raw.length; i++) {
        if (back[i] !== raw[i]) throw new CheckFailedError(`tensor "${name}": undoing the permutation differs from B at byte ${i}; nothing was written`);
      }
      return out;
    };
    const entry = (name: string): SafetensorsEntry => ({ name, shape: src.shape(name).slice(), dtype: src.dtype(name) });
    const shards = src.reader.shards;
    const files = checkpointOutputFiles(src, outPath);
    const write = async (batch: OutputBatch) => {
      if (!shards) {
        await writeSafetensorsStreaming(outPath, src.names.map(entry), produce, { metadata, batch });
        return;
      }
      const weightMap: Record<string, string> = {};
      let total = 0;
      for (const file of shards.files) {
        const names = src.names.filter((n) => shards.fileOf.get(n) === file);
        for (const n of names) {
          weightMap[n] = file;
          total += src.byteLength(n);
        }
        await writeSafetensorsStreaming(join(dirname(outPath), file), names.map(entry), produce, { metadata: { ...shards.metadataOf.get(file), ...metadata }, batch });
      }
      const index = { metadata: { ...shards.indexMetadata, total_size: total }, weight_map: weightMap };
      await writeFileAtomic(outPath, JSON.stringify(index, null, 2) + '\n', { batch });
    };
    // Every file or none.
    await (batch ? write(batch) : withOutputBatch(write));
    return { tensors: src.names.length, maxAbsDiff, files };
  } finally {
    await src.close();
  }
}
