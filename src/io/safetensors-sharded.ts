/**
 * Sharded safetensors checkpoints (`model.safetensors.index.json`, as Hugging Face writes them):
 * the index's `weight_map` names the shard file of each tensor; the shards sit next to the index.
 * Opened as one checkpoint (`openCheckpoint`: a single file or an index, the same reader), tensors
 * read on demand from their shard. The index must be exact: every tensor it lists is in its
 * shard, and every tensor of a shard is listed with that shard (else FormatError naming it).
 *
 * PyTorch pickles (`.bin`, `.pt`, `.pth`, `.ckpt`) are refused with the one-line conversion step
 * (`refusePickle`): unpickling runs code, and rebasin reads no Python formats.
 */
import { basename, dirname, extname, join } from 'node:path';
import { InputError } from '../errors.js';
import type { StateDict } from './records.js';
import { FormatError } from './errors.js';
import { readText } from './files.js';
import { openSafetensors, type SafetensorsReader, type SafetensorsTensorInfo } from './safetensors.js';

/** A shard index names its checkpoint `….index.json`. */
export function isShardIndex(path: string): boolean {
  return /\.index\.json$/i.test(path);
}

const PICKLE = /\.(bin|pt|pth|ckpt|pkl)(\.index\.json)?$/i;

/** InputError with the conversion step when `path` is a PyTorch pickle (by its name). */
export function refusePickle(path: string): void {
  if (!PICKLE.test(path)) return;
  const out = path.replace(PICKLE, '.safetensors');
  const step = /\.index\.json$/i.test(path)
    ? `convert each shard (or load the model and save_pretrained(dir, safe_serialization=True) with transformers)`
    : `convert it once: python3 -c "import torch; from safetensors.torch import save_file; sd = torch.load('${path}', map_location='cpu'); save_file({k: v.clone().contiguous() for k, v in sd.items()}, '${out}')"`;
  throw new InputError(`${path}: a PyTorch pickle (${extname(path.replace(/\.index\.json$/i, ''))}), which rebasin does not read (loading a pickle runs code); ${step}`);
}

/** A checkpoint readable tensor by tensor: one safetensors file, or the shards of an index. */
export interface CheckpointReader extends SafetensorsReader {
  /** For a sharded checkpoint: the shard file (name, next to the index) of each tensor, and the index's own "metadata". */
  shards?: { fileOf: ReadonlyMap<string, string>; files: string[]; indexMetadata: Record<string, unknown>; metadataOf: ReadonlyMap<string, Record<string, string>> };
}

/** Opens a safetensors file or a sharded checkpoint's index (see the module comment). Call close(). */
export async function openCheckpoint(path: string): Promise<CheckpointReader> {
  refusePickle(path);
  if (!isShardIndex(path)) return openSafetensors(path);
  let index: unknown;
  const text = await readText(path);
  try {
    index = JSON.parse(text);
  } catch (e) {
    throw new FormatError(path, 'index', `not valid JSON (${(e as Error).message})`);
  }
  const o = index && typeof index === 'object' && !Array.isArray(index) ? (index as Record<string, unknown>) : null;
  const map = o?.weight_map;
  if (!o || !map || typeof map !== 'object' || Array.isArray(map)) throw new FormatError(path, 'weight_map', 'missing or not an object of tensor name → shard file');
  const fileOf = new Map<string, string>();
  const files: string[] = [];
  for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
    if (typeof file !== 'string' || file !== basename(file) || file === '..' || file === '.' || file === '') throw new FormatError(path, name, `weight_map entry must be a shard file name next to the index, got ${JSON.stringify(file)}`, { label: `weight_map["${name}"]` });
    fileOf.set(name, file);
    if (!files.includes(file)) files.push(file);
  }
  if (files.length === 0) throw new FormatError(path, 'weight_map', 'lists no tensor');
  const readers: SafetensorsReader[] = [];
  try {
    for (const f of files) readers.push(await openSafetensors(join(dirname(path), f)));
  } catch (e) {
    await Promise.all(readers.map((r) => r.close()));
    throw e;
  }
  const byName = new Map<string, SafetensorsReader>();
  const names: string[] = [];
  const metadataOf = new Map<string, Record<string, string>>();
  try {
    readers.forEach((r, i) => {
      metadataOf.set(files[i], r.metadata);
      for (const n of r.names) {
        if (fileOf.get(n) !== files[i]) throw new FormatError(path, n, fileOf.has(n) ? `is in shard ${files[i]} but the index maps it to ${fileOf.get(n)}` : `is in shard ${files[i]} but not in the index's weight_map`, { label: `tensor "${n}"` });
        byName.set(n, r);
        names.push(n);
      }
    });
    for (const [n, f] of fileOf) if (!byName.has(n)) throw new FormatError(path, n, `is mapped to ${f} but that shard has no such tensor`, { label: `tensor "${n}"` });
  } catch (e) {
    // An index that disagrees with its shards: close them, or Node warns on stderr when it collects the handles.
    await Promise.all(readers.map((r) => r.close()));
    throw e;
  }
  const reader = (name: string) => {
    const r = byName.get(name);
    if (!r) throw new RangeError(`${path}: no tensor named ${JSON.stringify(name)}`);
    return r;
  };
  const indexMetadata = o.metadata && typeof o.metadata === 'object' && !Array.isArray(o.metadata) ? (o.metadata as Record<string, unknown>) : {};
  return {
    path,
    names,
    metadata: readers[0].metadata,
    shards: { fileOf, files, indexMetadata, metadataOf },
    has: (n) => byName.has(n),
    info: (n): SafetensorsTensorInfo => reader(n).info(n),
    read: (n) => reader(n).read(n),
    readRaw: (n) => reader(n).readRaw(n),
    async readAll(): Promise<StateDict> {
      const all: StateDict = new Map();
      for (const n of names) all.set(n, await reader(n).read(n));
      return all;
    },
    close: async () => { await Promise.all(readers.map((r) => r.close())); },
  };
}
