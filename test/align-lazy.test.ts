import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { noGrad } from '../src/core/tensor.js';
import { recordsToState, stateToRecords } from '../src/io/checkpoint.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { weightMatching } from '../src/methods/weight-matching.js';
import { applyPermutationsStreaming, safetensorsSource } from '../src/io/align-lazy.js';
import { lazyMemoryBound, weightMatchingLazy, type TensorSource } from '../src/methods/weight-matching-lazy.js';
import { isBufferName, type Params } from '../src/state/params.js';
import { mlp, resnet20 } from '../src/models/index.js';
import { gpt } from '../src/models/transformer.js';
import type { Model } from '../src/models/model.js';
import { applyHard, randomPerms } from '../src/permutation/apply.js';
import { permToAxes, specToJSON, type PermutationSpec } from '../src/permutation/spec.js';

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');
let dir = '';

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, REBASIN_QUIET_BACKEND: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function stateOf(model: Model, seed: number): Params {
  const { params, buffers } = model.init(new Rng(seed));
  return new Map([...params, ...buffers]);
}

async function save(name: string, state: Params): Promise<string> {
  const p = join(dir, name);
  await writeSafetensors(p, stateToRecords(state), { dtype: 'F32' });
  return p;
}

async function load(p: string): Promise<Params> {
  return recordsToState((await readSafetensors(p)).tensors);
}

function assertSameState(got: Params, want: Params, what: string): void {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), `${what}: tensor names`);
  for (const [name, t] of want) {
    const g = got.get(name)!;
    assert.deepEqual(g.shape, t.shape, `${what}: ${name} shape`);
    assert.deepEqual(Array.from(g.data), Array.from(t.data), `${what}: ${name} values`);
  }
}

function assertSamePerms(got: Record<string, Int32Array>, want: Record<string, Int32Array>): void {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  for (const k of Object.keys(want)) assert.deepEqual(Array.from(got[k]), Array.from(want[k]), `permutation ${k}`);
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'rebasin-lazy-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const cases: [string, () => Model, number][] = [
  ['MLP', () => mlp({ sizes: [12, 16, 16, 5] }), 100],
  ['ResNet-20 ×0.5', () => resnet20({ widthMultiplier: 0.5 }), 100],
  // Heads (block groups, held together) beside the streamed residual and MLP groups.
  ['GPT', () => gpt(GPT), 100],
];

for (const [label, build, maxSweeps] of cases) {
  test(`${label}: lazy weight matching = in-memory weight matching; streamed output = applyHard(B)`, async () => {
    const model = build();
    const spec = model.permutationSpec();
    const a = stateOf(model, 1);
    const b = stateOf(model, 2);
    const [aPath, bPath] = [await save(`${label}-A.safetensors`, a), await save(`${label}-B.safetensors`, b)];
    const ref = weightMatching({ spec, a, b }, { seed: 3, maxSweeps });
    const sa = await safetensorsSource(aPath);
    const sb = await safetensorsSource(bPath);
    let lazy;
    try {
      lazy = await weightMatchingLazy({ spec, a: sa, b: sb }, { seed: 3, maxSweeps });
    } finally {
      await sa.close();
      await sb.close();
    }
    assert.equal(lazy.steps, ref.steps);
    assert.ok(ref.steps >= 2, 'several sweeps, so a stale share would show');
    assert.deepEqual(lazy.log.map((e) => e.cost), ref.log.map((e) => e.cost));
    // Both log the whole objective Σ ⟨W_A, π(W_B)⟩ over the matched tensors, not the last group's share.
    const aligned = noGrad(() => applyHard(spec, b, lazy.perms));
    let objective = 0;
    for (const name of new Set(Object.values(permToAxes(spec)).flat().map((e) => e.name).filter((n) => !isBufferName(n)))) {
      const x = a.get(name)!.data;
      const y = aligned.get(name)!.data;
      for (let i = 0; i < x.length; i++) objective += x[i] * y[i];
    }
    const last = lazy.log.at(-1)!.cost;
    assert.ok(Math.abs(last + objective) <= 1e-9 * Math.abs(objective), `logged ${last}, objective ${-objective}`);
    assertSamePerms(lazy.perms, ref.perms);
    const out = join(dir, `${label}-out.safetensors`);
    const r = await applyPermutationsStreaming(spec, bPath, lazy.perms, out, { note: 'x' });
    assert.equal(r.maxAbsDiff, 0);
    assertSameState(await load(out), noGrad(() => applyHard(spec, b, ref.perms)), label);
    assert.equal((await readSafetensors(out)).metadata.note, 'x');
  });
}

test('a planted permutation is recovered exactly', async () => {
  const model = mlp({ sizes: [10, 24, 24, 4] });
  const spec = model.permutationSpec();
  const a = stateOf(model, 4);
  const planted = randomPerms(spec, new Rng(9));
  const b = noGrad(() => applyHard(spec, a, planted));
  const [aPath, bPath] = [await save('plant-A.safetensors', a), await save('plant-B.safetensors', b)];
  const sa = await safetensorsSource(aPath);
  const sb = await safetensorsSource(bPath);
  const r = await weightMatchingLazy({ spec, a: sa, b: sb }, { seed: 0 });
  await sa.close();
  await sb.close();
  const out = join(dir, 'plant-out.safetensors');
  await applyPermutationsStreaming(spec, bPath, r.perms, out);
  assertSameState(await load(out), a, 'recovered');
});

/** An in-memory source that counts reads, to show tensors are read per group, not per model. */
function countingSource(state: Params, reads: string[]): TensorSource {
  return {
    names: [...state.keys()],
    shape: (n) => [...state.get(n)!.shape],
    read: async (n) => {
      reads.push(n);
      return state.get(n)!;
    },
  };
}

const GPT = { vocab: 11, context: 6, width: 16, layers: 2, heads: 4 };

test('every group, the residual stream and the heads included, holds one tensor pair at a time; the peak is lazyMemoryBound (GPT)', async () => {
  const model = gpt(GPT);
  const spec: PermutationSpec = model.permutationSpec();
  const a = stateOf(model, 1);
  const b = stateOf(model, 2);
  const readsA: string[] = [];
  const readsB: string[] = [];
  const byPerm = permToAxes(spec);
  const namesOf = (p: string) => new Set(byPerm[p].filter((e) => !isBufferName(e.name)).map((e) => e.name));
  const bytesOf = (n: string) => 4 * a.get(n)!.size;
  const residual = Object.keys(spec.perms).reduce((x, y) => (namesOf(y).size > namesOf(x).size ? y : x));
  const heads = Object.keys(spec.perms).find((p) => p.endsWith('.heads'))!;
  const seen = new Map<string, { tensorsRead: number; peakTensors: number; peakBytes: number }>();
  const r = await weightMatchingLazy({ spec, a: countingSource(a, readsA), b: countingSource(b, readsB) }, {
    seed: 0, maxSweeps: 2,
    onGroup: (p, reads) => { if (!seen.has(p)) seen.set(p, reads); },
  });
  // The residual stream touches most of the model but is never held at once.
  assert.ok(namesOf(residual).size > 10, `${residual} has ${namesOf(residual).size} tensors`);
  for (const p of [residual, heads]) {
    const g = seen.get(p)!;
    assert.equal(g.peakTensors, 2, p);
    assert.ok(g.tensorsRead >= 2 * namesOf(p).size, p);
    assert.equal(g.peakBytes, 2 * Math.max(...[...namesOf(p)].map(bytesOf)), p);
  }
  const bound = lazyMemoryBound(spec, (n) => a.get(n)!.shape);
  assert.equal(r.peakBytes, bound.bytes);
  const modelBytes = 2 * [...a.keys()].filter((n) => !isBufferName(n)).reduce((t, n) => t + bytesOf(n), 0);
  assert.ok(bound.bytes < modelBytes / 5, `bound ${bound.bytes} of ${modelBytes}`);
  // Buffers (the causal mask) are never read.
  assert.ok(![...readsA, ...readsB].some(isBufferName));
});

test('CLI align --lazy writes the same tensors as align; refuses non-wm methods', async () => {
  const model = mlp({ sizes: [6, 8, 8, 3] });
  const spec = model.permutationSpec();
  const aPath = await save('cli-A.safetensors', stateOf(model, 1));
  const bPath = await save('cli-B.safetensors', stateOf(model, 2));
  const specPath = join(dir, 'cli-spec.json');
  writeFileSync(specPath, specToJSON(spec));
  const eager = join(dir, 'cli-eager.safetensors');
  const lazy = join(dir, 'cli-lazy.safetensors');
  const r1 = run('align', aPath, bPath, '--spec', specPath, '--method', 'wm', '-o', eager, '--quiet');
  assert.equal(r1.code, 0, r1.stderr);
  const r2 = run('align', aPath, bPath, '--spec', specPath, '--method', 'wm', '--lazy', '-o', lazy, '--json');
  assert.equal(r2.code, 0, r2.stderr);
  const summary = JSON.parse(r2.stdout) as { lazy: boolean; equivalence: { kind: string; maxAbsDiff: number; passed: boolean } };
  assert.equal(summary.lazy, true);
  assert.equal(summary.equivalence.kind, 'structural');
  assert.equal(summary.equivalence.maxAbsDiff, 0);
  assertSameState(await load(lazy), await load(eager), 'lazy vs eager');
  const r3 = run('align', aPath, bPath, '--spec', specPath, '--lazy', '-o', lazy);
  assert.match(r3.stderr, /structural|lazy mode/);
  const bad = join(dir, 'cli-bad.safetensors');
  const r4 = run('align', aPath, bPath, '--spec', specPath, '--method', 'sinkhorn-l2', '--lazy', '-o', bad);
  assert.equal(r4.code, 2, r4.stderr);
  assert.match(r4.stderr, /--lazy/);
  assert.equal(existsSync(bad), false);
});

