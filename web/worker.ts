/**
 * The page's worker: runs the library (wasm kernels when WebAssembly SIMD is there, else pure
 * TypeScript, and the page says so) so the page stays responsive. Aligns B to A the way
 * `rebasin align` does and returns the aligned safetensors: the same library calls and checks, so
 * the same tensors bit for bit as the CLI on the same backend, and the CLI's messages.
 */
import { currentBackend, jsBackend, setBackend } from '../src/core/backend/index.js';
import { instantiateWasm } from '../src/core/backend/wasm.js';
import { noGrad } from '../src/core/tensor.js';
import { checkpointFromSafetensors, CHECKPOINT_FORMAT, stateToRecords } from '../src/io/checkpoint.js';
import { parseSafetensors, serializeSafetensors } from '../src/io/safetensors.js';
import { recordsToState } from '../src/io/checkpoint.js';
import { alignModels } from '../src/methods/registry.js';
import { applyHard, invertPerms } from '../src/permutation/apply.js';
import { specFromJSON, type PermutationSpec } from '../src/permutation/spec.js';
import { isBatchCounter } from '../src/state/params.js';
import { checkModelSet } from '../src/cli/align.js';
import { equivalenceCheck, onnxDefinition, type ModelFile } from '../src/cli/model-files.js';
import { parseOnnx } from '../src/io/onnx.js';
import { barrier, interpolationCurve } from '../src/analysis/lmc.js';
import type { Dataset } from '../src/data/dataset.js';
import { mlp, REFERENCE_DROPOUT_B } from '../src/models/index.js';
import { mergeState as merge } from '../src/state/params.js';
import { evaluate } from '../src/training/evaluate.js';
import { trainModel } from '../src/training/train.js';
import { DEMO_METHODS, type AlignRequest, type AlignSummary, type DemoMethod, type DemoRequest, type WorkerMessage, type WorkerRequest } from './protocol.js';

/** The worker's global scope (typed here: the page's sources are checked against the DOM lib). */
const scope = globalThis as unknown as {
  postMessage(m: WorkerMessage, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
  location: { href: string };
};

function post(m: WorkerMessage, transfer: Transferable[] = []): void {
  scope.postMessage(m, transfer);
}

/** The smallest module using SIMD128 (one function returning a v128 constant): it validates iff the engine has WebAssembly SIMD. */
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12, ...new Array<number>(16).fill(0), 11]);

async function init(): Promise<void> {
  let note: string | null = null;
  // `?simd=off` on the page's address: behave as in a browser without WebAssembly SIMD (the fallback's test).
  const simulated = new URLSearchParams(new URL(scope.location.href).search).get('simd') === 'off';
  if (simulated || !WebAssembly.validate(SIMD_PROBE)) {
    setBackend(jsBackend);
    note = `this browser has no WebAssembly SIMD${simulated ? ' (simulated: ?simd=off)' : ''}, so the pure-TypeScript kernels run: the same results as \`REBASIN_BACKEND=js\`, several times slower`;
    post({ type: 'ready', backend: jsBackend.name, detail: jsBackend.info.detail, note });
    return;
  }
  try {
    const res = await fetch(new URL('rebasin.wasm', scope.location.href));
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const load = instantiateWasm(new Uint8Array(await res.arrayBuffer()), 'rebasin.wasm');
    if ('backend' in load) setBackend(load.backend);
    else { setBackend(jsBackend); note = `${load.error}; using the pure-TypeScript kernels (slower)`; }
  } catch (e) {
    setBackend(jsBackend);
    note = `the wasm kernels could not be fetched (${(e as Error).message}); using the pure-TypeScript kernels (slower)`;
  }
  const b = currentBackend();
  post({ type: 'ready', backend: b.name, detail: b.info.detail, note });
}

/** Like the CLI's readModelFile for a safetensors file without --model-config (the path is the file's name). */
function readModel(bytes: ArrayBuffer, name: string): ModelFile {
  const { tensors, metadata } = parseSafetensors(new Uint8Array(bytes), name);
  if (metadata.format === CHECKPOINT_FORMAT) {
    const ck = checkpointFromSafetensors(tensors, metadata, name);
    return { path: name, state: new Map([...ck.params, ...ck.buffers]), model: ck.model, metadata };
  }
  const state = recordsToState(tensors);
  for (const k of [...state.keys()]) if (isBatchCounter(k)) state.delete(k);
  return { path: name, state, metadata };
}

/** `rebasin align A B [--spec S | --onnx M] --method wm|sinkhorn-l2`, on the files' bytes. */
function align(req: AlignRequest): void {
  const a = readModel(req.a, req.aName);
  const b = readModel(req.b, req.bName);
  // --onnx: the imported graph is both models' definition and gives the spec (--spec still wins).
  const definition = req.onnx ? onnxDefinition(parseOnnx(new Uint8Array(req.onnx.bytes), req.onnx.name), { path: req.onnx.name, name: req.onnx.name }, a) : undefined;
  if (definition) a.model = b.model = definition.model;
  let spec: PermutationSpec;
  if (req.spec) {
    try {
      spec = specFromJSON(req.spec.text);
    } catch (e) {
      throw new Error(`${req.spec.name}: ${(e as Error).message}`);
    }
  } else if (definition) {
    spec = definition.spec!;
  } else if (a.model) {
    spec = a.model.permutationSpec();
  } else {
    throw new Error('no permutation spec: these are plain safetensors (not rebasin checkpoints), so add the ONNX model or the spec JSON (see `rebasin spec infer`)');
  }
  checkModelSet('align', [a, b], spec);
  const model = a.model ?? b.model;
  const result = alignModels(req.method, { spec, a: a.state, b: b.state }, {
    model, seed: req.seed, batchSize: 1000,
    onStep: (e) => post({ type: 'progress', step: e.step, cost: e.cost }),
  }, { steps: req.steps, tau: req.tau });
  const check = equivalenceCheck(model, b.state, result.aligned, () => noGrad(() => applyHard(spec, result.aligned, invertPerms(result.perms, spec))), undefined, definition?.unrunnable);
  if (!check.passed) throw new Error(`align: the permuted model does not compute the same function (max |difference| ${check.maxAbsDiff}); the spec probably does not describe this architecture — nothing was written`);
  const bytes = serializeSafetensors(stateToRecords(result.aligned), { dtype: 'F32', metadata: { ...b.metadata, rebasin_aligned_to: a.path, rebasin_method: req.method } });
  const summary: AlignSummary = {
    method: req.method, steps: result.steps, seconds: result.seconds, finalCost: result.log.at(-1)?.cost ?? null,
    equivalence: check,
    permutations: Object.entries(result.perms).map(([name, p]) => ({ name, size: p.length, moved: p.filter((v, i) => v !== i).length })),
    outputName: b.path.replace(/\.safetensors$/i, '') + '_aligned.safetensors',
  };
  const buf = bytes.buffer as ArrayBuffer;
  post({ type: 'done', bytes: buf, summary }, [buf]);
}

/** The subset asset: "RBMNIST1", u32 nTrain, u32 nTest (little-endian), pixels (u8, 784 each), labels (u8). */
function readSubset(buf: ArrayBuffer): { train: Dataset; test: Dataset } {
  const b = new Uint8Array(buf);
  if (String.fromCharCode(...b.subarray(0, 8)) !== 'RBMNIST1') throw new Error('mnist-subset.bin: not the demo\'s MNIST subset');
  const v = new DataView(buf);
  const counts = [v.getUint32(8, true), v.getUint32(12, true)];
  let pos = 16;
  const total = counts[0] + counts[1];
  const pixels = b.subarray(pos, pos + total * 784);
  const labels = b.subarray(pos + total * 784, pos + total * 785);
  const make = (name: string, start: number, n: number): Dataset => {
    const x = new Float32Array(n * 784);
    for (let i = 0; i < n * 784; i++) x[i] = pixels[start * 784 + i] / 255;
    return { name, x, sampleShape: [784], y: Int32Array.from(labels.subarray(start, start + n)), n, numClasses: 10 };
  };
  pos = 0;
  return { train: make('MNIST subset (train)', 0, counts[0]), test: make('MNIST subset (test)', counts[0], counts[1]) };
}

/**
 * Like `rebasin demo` at a browser's scale: MLP 784-128-128-10 on the subset, A without dropout and
 * B with the reference's dropout, naive / WM / Sinkhorn-Mid.
 */
function demo(req: DemoRequest): void {
  const t0 = performance.now();
  const { train, test } = readSubset(req.data);
  const sizes = [784, 128, 128, 10];
  const model = mlp({ sizes });
  const batchSize = 500;
  const stepsPerModel = req.epochs * Math.ceil(train.n / batchSize);
  const trained = [mlp({ sizes }), mlp({ sizes, dropout: REFERENCE_DROPOUT_B })].map((arch, k) => {
    const seed = k + 1;
    let done = 0;
    const r = trainModel({ model: arch, data: train, epochs: req.epochs, batchSize, lr: 1e-3, seed, criterion: 'ce',
      onBatch: () => { done++; if (done % 5 === 0) post({ type: 'demo-progress', text: `training model ${'AB'[k]}: step ${done}/${stepsPerModel}`, fraction: (0.6 * (k * stepsPerModel + done)) / (2 * stepsPerModel) }); } });
    return merge(r.params, r.buffers);
  });
  const [a, b] = trained;
  const accOf = (s: typeof a) => evaluate(model, { params: s }, test, { batchSize: 1000, criterion: 'ce' }).accuracy!;
  const spec = model.permutationSpec();
  const barriers = {} as Record<DemoMethod, { loss: number; accuracy: number }>;
  DEMO_METHODS.forEach((method, k) => {
    post({ type: 'demo-progress', text: method === 'naive' ? 'naive path (no alignment)' : `aligning B to A with ${method}…`, fraction: 0.6 + 0.13 * k });
    const aligned = method === 'naive' ? b : alignModels(method, { spec, a, b }, { model, data: train, batchSize, seed: 0 }, { epochs: 2 }).aligned;
    const curve = interpolationCurve({ model, a, b: aligned, data: test, criterion: 'ce', points: 11,
      onPoint: (p) => post({ type: 'demo-point', method, lambda: p.lambda, loss: p.loss, accuracy: p.accuracy! }) });
    const s = barrier(curve);
    barriers[method] = { loss: s.lossBarrier, accuracy: s.accBarrier ?? 0 };
  });
  post({ type: 'demo-done', seconds: (performance.now() - t0) / 1000, barriers, endpoints: { accA: accOf(a), accB: accOf(b) } });
}

const ready = init().catch((e: Error) => {
  post({ type: 'ready', backend: 'js', detail: 'pure TypeScript kernels', note: `start-up failed (${e.message}); using the pure-TypeScript kernels` });
});
scope.onmessage = (e) => {
  void ready.then(() => {
    try {
      if (e.data.type === 'align') align(e.data);
      else if (e.data.type === 'demo') demo(e.data);
    } catch (err) {
      const msg = (err as Error).message;
      // An allocation failure: the checkpoints do not fit in this tab's memory.
      const tooBig = err instanceof RangeError && /allocat|memory|invalid array length/i.test(msg);
      post({ type: 'error', message: tooBig ? `these checkpoints do not fit in the page's memory (${msg}); align them with the CLI instead: rebasin align A.safetensors B.safetensors --lazy -o B_aligned.safetensors` : msg });
    }
  });
};
