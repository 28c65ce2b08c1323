/**
 * One entry point for named tensors from any supported file, and for spec files.
 *
 * `loadTensors(path)` dispatches on the extension (content sniffing when it says nothing):
 * - `.safetensors` → every tensor (all dtypes converted to float32);
 * - `.npz` → every array; `.npy` → one array named after the file's stem;
 * - `model.json` / `.json` → a TF.js layers model, converted to PyTorch names and layouts
 *   (io/tfjs.ts `tfjsToPytorchLayout`), since specs are in PyTorch layout; `layout: 'native'`
 *   keeps the Keras names and layouts;
 * - `.onnx` → the float initializers under their initializer names (ONNX layouts).
 * Unreadable files (missing, a directory, no permission) are InputError; malformed ones
 * FormatError naming the file.
 */
import { open, readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { InputError } from '../errors.js';
import { specFromJSON, type PermutationSpec } from '../permutation/spec.js';
import type { Params } from '../state/params.js';
import { recordsToState } from './checkpoint.js';
import { parseNpy, parseNpz } from './npy.js';
import { onnxInitializersToState, parseOnnx } from './onnx.js';
import { readSafetensors } from './safetensors.js';
import { readTfjs, tfjsToPytorchLayout } from './tfjs.js';
import type { StateDict } from './records.js';

export type TensorFileFormat = 'safetensors' | 'npz' | 'npy' | 'tfjs' | 'onnx';

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

function unreadable(path: string, e: unknown): InputError {
  const code = (e as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
  return new InputError(`${path}: cannot read (${why})`);
}

async function head(path: string, n: number): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const b = new Uint8Array(n);
    const { bytesRead } = await fh.read(b, 0, n, 0);
    return b.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The format by extension, else by the first bytes. */
export async function detectTensorFormat(path: string): Promise<TensorFileFormat> {
  const ext = extname(path).toLowerCase();
  if (ext === '.safetensors') return 'safetensors';
  if (ext === '.npz') return 'npz';
  if (ext === '.npy') return 'npy';
  if (ext === '.json') return 'tfjs';
  if (ext === '.onnx') return 'onnx';
  const b = await head(path, 8);
  if (b[0] === 0x50 && b[1] === 0x4b) return 'npz';
  if (b[0] === 0x93 && String.fromCharCode(...b.subarray(1, 6)) === 'NUMPY') return 'npy';
  if (b[0] === 0x7b) return 'tfjs';
  // ONNX files start with field 1 (ir_version, varint): tag 0x08; safetensors with a u64 size.
  if (b[0] === 0x08) return 'onnx';
  return 'safetensors';
}

/** Loads named tensors from any supported file (see the module comment). */
export async function loadTensors(path: string, opts: LoadTensorsOptions = {}): Promise<LoadedTensors> {
  let format: TensorFileFormat;
  try {
    format = await detectTensorFormat(path);
  } catch (e) {
    throw unreadable(path, e);
  }
  const notes: string[] = [];
  let records: StateDict;
  let metadata: Record<string, string> = {};
  try {
    switch (format) {
      case 'safetensors': {
        const r = await readSafetensors(path);
        records = r.tensors;
        metadata = r.metadata;
        break;
      }
      case 'npz':
        records = parseNpz(await readFile(path), path);
        break;
      case 'npy':
        records = new Map([[basename(path).replace(/\.npy$/i, ''), parseNpy(await readFile(path), path)]]);
        break;
      case 'onnx': {
        const m = parseOnnx(await readFile(path), path);
        records = onnxInitializersToState(m);
        metadata = { ...m.metadata, producer: `${m.producerName} ${m.producerVersion}`.trim() };
        notes.push('ONNX initializers under their initializer names, ONNX layouts (MatMul weights [in, out])');
        break;
      }
      case 'tfjs': {
        const m = await readTfjs(path);
        if (m.modelJson.generatedBy) metadata.generatedBy = m.modelJson.generatedBy;
        if (m.modelJson.convertedBy) metadata.convertedBy = m.modelJson.convertedBy;
        if (opts.layout === 'native') records = m.tensors;
        else {
          const conv = tfjsToPytorchLayout(m);
          records = conv.tensors;
          notes.push('TF.js weights converted to PyTorch names and layouts (Dense [out, in], Conv [out, in, kh, kw])');
          if (conv.spec.params.some((p) => p.reorder)) notes.push('Dense kernels after a channels-last Flatten reordered to channel-major');
        }
        break;
      }
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code) && (e as Error).name !== 'FormatError') throw unreadable(path, e);
    throw e;
  }
  return { path, format, tensors: recordsToState(records), metadata, notes };
}

/** Reads a spec file written by `specToJSON` (or `rebasin spec infer`); InputError naming the file and every problem. */
export async function loadSpecFile(path: string): Promise<PermutationSpec> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw unreadable(path, e);
  }
  try {
    return specFromJSON(text);
  } catch (e) {
    throw new InputError(`${path}: ${(e as Error).message}`);
  }
}
