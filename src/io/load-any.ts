/**
 * One entry point for named tensors from any supported file, and for spec files.
 *
 * `loadTensors(path)` dispatches on the extension (content sniffing when it says nothing):
 * - `.safetensors` → every tensor (all dtypes converted to float32); `….index.json` → the tensors
 *   of a sharded safetensors checkpoint (io/safetensors-sharded.ts);
 * - `.bin`/`.pt`/`.pth`/`.ckpt` (PyTorch pickles) → InputError with the conversion step;
 * - `.npz` → every array; `.npy` → one array named after the file's stem;
 * - `model.json` / `.json` → a TF.js layers model, converted to PyTorch names and layouts
 *   (io/tfjs-import.ts `tfjsToPytorchLayout`), since specs are in PyTorch layout; `layout: 'native'`
 *   keeps the Keras names and layouts;
 * - `.onnx` → the float initializers under their initializer names (ONNX layouts).
 * Every file is opened under the file-access policy (io/files.ts): regular files only, .npy/.npz/
 * safetensors read piecewise (files over 2 GiB work), ONNX and JSON read whole within their
 * limits. Unreadable files (missing, a directory, a FIFO or device, no permission) are InputError;
 * malformed ones FormatError naming the file.
 */
import { basename } from 'node:path';
import { InputError } from '../errors.js';
import { specFromJSON, type PermutationSpec } from '../permutation/spec.js';
import type { Params } from '../state/params.js';
import { recordsToState } from './checkpoint.js';
import { isErrno, readText, unreadable, withOpenFile } from './files.js';
import { readNpy, readNpz } from './npy.js';
import { onnxInitializersToState, readOnnx } from './onnx.js';
import { readSafetensors } from './safetensors.js';
import { openCheckpoint, refusePickle } from './safetensors-sharded.js';
import { readTfjs } from './tfjs.js';
import { tfjsToPytorchLayout } from './tfjs-import.js';
import type { StateDict } from './records.js';

export interface LoadedTensors {
  path: string;
  format: TensorFileFormat;
  /** Name → float32 tensor, in file order. */
  tensors: Params;
  /** safetensors `__metadata__`, ONNX `metadata_props`, TF.js generatedBy/convertedBy. */
  metadata: Record<string, string>;
  /** What was done on the way (layout conversions), for messages. */
  notes: string[];
}

export interface LoadTensorsOptions {
  /** TF.js only: 'pytorch' (default) converts names and layouts; 'native' keeps Keras ones. */
  layout?: 'pytorch' | 'native';
}

interface FormatRead {
  records: StateDict;
  metadata?: Record<string, string>;
  notes?: string[];
}

interface TensorFormat {
  /** File name extensions (lower case, with the dot). */
  extensions: readonly string[];
  /** Recognises the format from the file's first 8 bytes when the extension says nothing. */
  sniff(head: Uint8Array): boolean;
  read(path: string, opts: LoadTensorsOptions): Promise<FormatRead>;
}

/**
 * Every tensor file format rebasin reads, by name: adding one is one entry here (plus its parser).
 * Sniffing tries the entries in this order; safetensors (a u64 header size) is the last resort.
 */
const TENSOR_FORMATS = {
  // Before tfjs: both end in .json, and the longer extension wins by coming first.
  safetensorsIndex: {
    extensions: ['.index.json'],
    sniff: () => false,
    async read(path) {
      const r = await openCheckpoint(path);
      try {
        return { records: await r.readAll(), metadata: r.metadata, notes: [`sharded: ${r.shards!.files.length} shard files`] };
      } finally {
        await r.close();
      }
    },
  },
  npz: {
    extensions: ['.npz'],
    // A zip starts with "PK".
    sniff: (b) => b[0] === 0x50 && b[1] === 0x4b,
    read: async (path) => ({ records: await readNpz(path) }),
  },
  npy: {
    extensions: ['.npy'],
    sniff: (b) => b[0] === 0x93 && String.fromCharCode(...b.subarray(1, 6)) === 'NUMPY',
    read: async (path) => ({ records: new Map([[basename(path).replace(/\.npy$/i, ''), await readNpy(path)]]) }),
  },
  tfjs: {
    extensions: ['.json'],
    sniff: (b) => b[0] === 0x7b,
    async read(path, opts) {
      const m = await readTfjs(path);
      const metadata: Record<string, string> = {};
      if (m.modelJson.generatedBy) metadata.generatedBy = m.modelJson.generatedBy;
      if (m.modelJson.convertedBy) metadata.convertedBy = m.modelJson.convertedBy;
      if (opts.layout === 'native') return { records: m.tensors, metadata };
      const conv = tfjsToPytorchLayout(m);
      const notes = ['TF.js weights converted to PyTorch names and layouts (Dense [out, in], Conv [out, in, kh, kw])'];
      if (conv.spec.params.some((p) => p.reorder)) notes.push('Dense kernels after a channels-last Flatten reordered to channel-major');
      return { records: conv.tensors, metadata, notes };
    },
  },
  onnx: {
    extensions: ['.onnx'],
    // ONNX files start with field 1 (ir_version, varint): tag 0x08.
    sniff: (b) => b[0] === 0x08,
    async read(path) {
      const m = await readOnnx(path);
      return {
        records: onnxInitializersToState(m),
        metadata: { ...m.metadata, producer: `${m.producerName} ${m.producerVersion}`.trim() },
        notes: ['ONNX initializers under their initializer names, ONNX layouts (MatMul weights [in, out])'],
      };
    },
  },
  safetensors: {
    extensions: ['.safetensors'],
    sniff: () => true,
    async read(path) {
      const r = await readSafetensors(path);
      return { records: r.tensors, metadata: r.metadata };
    },
  },
} satisfies Record<string, TensorFormat>;

export type TensorFileFormat = keyof typeof TENSOR_FORMATS;
const FORMAT_NAMES = Object.keys(TENSOR_FORMATS) as TensorFileFormat[];

async function head(path: string, n: number): Promise<Uint8Array> {
  return withOpenFile(path, {}, async ({ handle }) => {
    const b = new Uint8Array(n);
    const { bytesRead } = await handle.read(b, 0, n, 0);
    return b.subarray(0, bytesRead);
  });
}

/** The format by extension, else by the first bytes. */
export async function detectTensorFormat(path: string): Promise<TensorFileFormat> {
  const lower = path.toLowerCase();
  const byExtension = FORMAT_NAMES.find((f) => (TENSOR_FORMATS[f].extensions as readonly string[]).some((e) => lower.endsWith(e)));
  if (byExtension) return byExtension;
  const b = await head(path, 8);
  return FORMAT_NAMES.find((f) => TENSOR_FORMATS[f].sniff(b))!;
}

/** Loads named tensors from any supported file (see the module comment). */
export async function loadTensors(path: string, opts: LoadTensorsOptions = {}): Promise<LoadedTensors> {
  refusePickle(path);
  let format: TensorFileFormat;
  try {
    format = await detectTensorFormat(path);
  } catch (e) {
    throw isErrno(e) ? unreadable(path, e) : e;
  }
  let read: FormatRead;
  try {
    read = await (TENSOR_FORMATS[format] as TensorFormat).read(path, opts);
  } catch (e) {
    throw isErrno(e) ? unreadable(path, e) : e;
  }
  return { path, format, tensors: recordsToState(read.records), metadata: read.metadata ?? {}, notes: read.notes ?? [] };
}

/** Reads a spec file written by `specToJSON` (or `rebasin spec infer`); InputError naming the file and every problem. */
export async function loadSpecFile(path: string): Promise<PermutationSpec> {
  const text = await readText(path);
  try {
    return specFromJSON(text);
  } catch (e) {
    throw new InputError(`${path}: ${(e as Error).message}`);
  }
}
