// The README's library examples, run on small models and the committed ONNX fixtures, through the
// package entry point, so the documented calls keep working.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import {
  alignModels, barrier, checkEquivalence, eye, F, importedModel, importOnnx, inferSpecFromOnnx, readNpz, Tensor, interpolationCurve, loadCheckpoint, loadMnist,
  loadTensors, mergeState, mlp, newSinkhornDiagnostics, newSinkhornWorkspace, randn, readOnnx, Rng, saveCheckpoint, sinkhorn, sinkhornRebasin, splitState, trainModel,
  validateSpec, weightCost, weightedAverage, weightMatching,
} from '../src/index.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));

test('README: align two checkpoints, check equivalence, Sinkhorn costs, LMC and merging', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-readme-'));
  try {
    const model = mlp({ sizes: [784, 32, 32, 10] });
    const data = loadMnist('train', { limit: 600, layout: 'flat' });
    for (const [name, seed] of [['A', 1], ['B', 2]] as const) {
      const r = trainModel({ model, data, epochs: 2, batchSize: 100, lr: 1e-3, seed, criterion: 'ce' });
      await saveCheckpoint(join(dir, `${name}.safetensors`), model, r);
    }
    // --- as in the README
    const A = await loadCheckpoint(join(dir, 'A.safetensors'));
    const B = await loadCheckpoint(join(dir, 'B.safetensors'));
    const spec = A.model.permutationSpec();
    const a = mergeState(A.params, A.buffers);
    const b = mergeState(B.params, B.buffers);
    const { perms, aligned, steps } = weightMatching({ spec, a, b });
    const x = randn([64, ...A.model.inputShape], new Rng(0));
    const { maxAbsDiff } = checkEquivalence(A.model, B.params, B.buffers, splitState(aligned).params, splitState(aligned).buffers, x, { training: false });
    await saveCheckpoint(join(dir, 'B_aligned.safetensors'), A.model, splitState(aligned));
    assert.ok(steps >= 1 && Object.keys(perms).length === 2);
    assert.ok(maxAbsDiff < 1e-4, `max abs diff ${maxAbsDiff}`);

    const mid = alignModels('sinkhorn-mid', { spec, a, b }, { model: A.model, data, batchSize: 300 }, { epochs: 2 });
    const custom = sinkhornRebasin({ spec, a, b }, { cost: (alignedB) => weightCost('l1', a, alignedB), tau: 0.1, steps: 5 });
    assert.equal(mid.steps, 4);
    const last = custom.log.at(-1)!;
    assert.ok(typeof last.cost === 'number' && typeof last.hardCost === 'number');
    assert.equal(custom.diagnostics.cgSolves, custom.steps * Object.keys(spec.perms).length);
    assert.equal(mid.diagnostics?.cgFallbacks, 0);

    const test = loadMnist('test', { limit: 500, layout: 'flat' });
    const curve = interpolationCurve({ model: A.model, a, b: aligned, data: test, criterion: 'ce', points: 5 });
    const { lossBarrier, accBarrier, auc } = barrier(curve);
    const merged = weightedAverage([a, aligned], [0.5, 0.5]);
    assert.ok([lossBarrier, accBarrier!, auc].every(Number.isFinite));
    const w = 'layers.0.weight';
    assert.ok(Math.abs(merged.get(w)!.data[3] - 0.5 * (a.get(w)!.data[3] + aligned.get(w)!.data[3])) < 1e-6);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('README: the Sinkhorn operator on its own', () => {
  const n = 16;
  const target = randn([n, n], new Rng(1));
  const X = eye(n).requireGrad();
  const workspace = newSinkhornWorkspace();
  const diagnostics = newSinkhornDiagnostics();
  const S = sinkhorn(X, { tau: 1, iters: 20, workspace, diagnostics });
  F.sum(F.mul(S, target)).backward();
  assert.ok(X.grad && X.grad.data.every(Number.isFinite));
  assert.deepEqual([diagnostics.cgSolves, diagnostics.cgFallbacks, diagnostics.lstsqFallbacks], [1, 0, 0]);
  assert.ok(workspace.f32 && workspace.f32.length === n * n);
  for (let i = 0; i < n; i++) {
    let row = 0;
    for (let j = 0; j < n; j++) row += S.data[i * n + j];
    assert.ok(Math.abs(row - 1) < 1e-5);
  }
});

test('README: a spec from ONNX, checked against the weights', async () => {
  const weights = (await loadTensors(`${FIXTURES}resnet20.safetensors`)).tensors;
  const { spec, groups, fixed, warnings } = inferSpecFromOnnx(await readOnnx(`${FIXTURES}resnet20.onnx`), { checkpoint: weights });
  const problems = validateSpec(spec, weights);
  assert.deepEqual(problems, []);
  assert.ok(groups.length > 0 && Array.isArray(fixed) && Array.isArray(warnings));
  const imported = importOnnx(await readOnnx(`${FIXTURES}resnet20.onnx`), { checkpoint: weights });
  const model = importedModel({ graph: imported.graph });
  const { params, buffers } = splitState(weights);
  const io = await readNpz(`${FIXTURES}resnet20.io.npz`);
  const x = new Tensor(io.get('x')!.data, io.get('x')!.shape);
  const logits = model.forward(params, x, { training: false, buffers });
  // The imported graph computes what PyTorch recorded for the exported model.
  const y = io.get('y')!.data;
  for (let i = 0; i < logits.size; i++) assert.ok(Math.abs(logits.data[i] - y[i]) < 1e-4);
  assert.deepEqual(imported.flow.spec, spec);
});
