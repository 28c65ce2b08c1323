/**
 * The same permutations on every compute path: for a given seed, weight matching and Sinkhorn-L2
 * find the same permutations whichever sgemm runs (our AVX-512 or AVX2 kernels, OpenBLAS) and on
 * the wasm and pure-TypeScript backends, though their float32 rounding differs. Checked both on a
 * planted permutation (recovery) and between two independent initialisations, where the answer
 * rests on the numbers rather than on an exact optimum.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { currentBackend, jsBackend, setBackend, wasmBackend, type Backend } from '../src/core/backend/index.js';
import { nativeAddon, supportedGemmPaths } from '../src/core/backend/native.js';
import { Rng } from '../src/core/random.js';
import { noGrad } from '../src/core/tensor.js';
import { recoveryModel } from '../src/experiments/recovery.js';
import { alignModels } from '../src/methods/registry.js';
import { applyHard, invertPermutation, randomPerms } from '../src/permutation/apply.js';
import { mergeState } from '../src/state/params.js';

/** The permutations of wm and Sinkhorn-L2 (30 steps) on a small MLP, planted and between two inits. */
function permutations(): Record<string, number[]> {
  const model = recoveryModel('mlp2-in64', 24);
  const spec = model.permutationSpec();
  const out: Record<string, number[]> = {};
  for (const seed of [0, 1]) {
    const A = model.init(new Rng(seed));
    const a = mergeState(A.params, A.buffers);
    const rng = new Rng(seed + 10);
    const planted = randomPerms(spec, rng);
    const B = model.init(new Rng(seed + 100));
    const pairs = { planted: noGrad(() => applyHard(spec, a, planted)), independent: mergeState(B.params, B.buffers) };
    for (const [pair, b] of Object.entries(pairs)) for (const method of ['wm', 'sinkhorn-l2'] as const) {
      const r = alignModels(method, { spec, a, b }, { seed }, method === 'wm' ? {} : { steps: 30 });
      for (const [id, p] of Object.entries(r.perms)) out[`seed ${seed} ${pair} ${method} ${id}`] = Array.from(p);
      if (pair === 'planted') {
        for (const [id, p] of Object.entries(planted)) assert.deepEqual(Array.from(r.perms[id]), Array.from(invertPermutation(p)), `${method} seed ${seed}: ${id} not recovered`);
      }
    }
  }
  return out;
}

function on<T>(b: Backend, fn: () => T): T {
  const prev = setBackend(b);
  try {
    return fn();
  } finally {
    setBackend(prev);
  }
}

test('the same permutations on every sgemm path and backend (wm and Sinkhorn-L2, planted and independent models)', () => {
  const runs: { path: string; perms: Record<string, number[]> }[] = [];
  const addon = nativeAddon();
  if (addon && currentBackend().name === 'native') {
    const prev = addon.gemmImpl();
    try {
      for (const path of supportedGemmPaths()) {
        addon.gemmImpl(path);
        runs.push({ path: `native ${path}`, perms: permutations() });
      }
    } finally {
      addon.gemmImpl(prev);
    }
  }
  const wasm = wasmBackend();
  if (wasm) runs.push({ path: 'wasm', perms: on(wasm, permutations) });
  runs.push({ path: 'js', perms: on(jsBackend, permutations) });
  for (const r of runs.slice(1)) assert.deepEqual(r.perms, runs[0].perms, `${r.path} vs ${runs[0].path}`);
});
