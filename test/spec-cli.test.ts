/**
 * `rebasin spec infer` / `rebasin spec check`, run as a user runs them (a child process), on the
 * committed PyTorch ONNX exports and on a TF.js model written here.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/core/index.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const FIX = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { ...process.env, NODE_NO_WARNINGS: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

let tmp = '';
before(() => { tmp = mkdtempSync(join(tmpdir(), 'rebasin-spec-cli-')); });
after(() => { rmSync(tmp, { recursive: true, force: true }); });

/** A Sequential Conv2D → ReLU → Flatten → Dense TF.js model in `dir`. */
function writeTfjsModel(dir: string): string {
  const rng = new Rng(1);
  const w = (n: number) => {
    const d = new Float32Array(n);
    rng.fillUniform(d, -1, 1);
    return d;
  };
  const weights: [string, number[], Float32Array][] = [
    ['conv2d/kernel', [3, 3, 1, 4], w(36)], ['conv2d/bias', [4], w(4)], ['dense/kernel', [64, 3], w(192)], ['dense/bias', [3], w(3)],
  ];
  writeFileSync(join(dir, 'weights.bin'), Buffer.concat(weights.map(([, , d]) => Buffer.from(d.buffer))));
  const json = {
    format: 'layers-model',
    modelTopology: {
      class_name: 'Sequential', config: {
        name: 's', layers: [
          { class_name: 'Conv2D', config: { name: 'conv2d', filters: 4, kernel_size: [3, 3], padding: 'same', activation: 'relu', batch_input_shape: [null, 4, 4, 1] } },
          { class_name: 'Flatten', config: { name: 'flatten' } },
          { class_name: 'Dense', config: { name: 'dense', units: 3 } },
        ],
      },
    },
    weightsManifest: [{ paths: ['weights.bin'], weights: weights.map(([name, shape]) => ({ name, shape, dtype: 'float32' })) }],
  };
  const path = join(dir, 'model.json');
  writeFileSync(path, JSON.stringify(json));
  return path;
}

describe('rebasin spec infer', () => {
  test('ONNX + checkpoint: spec keyed by the checkpoint, summary, atomic write', () => {
    const out = join(tmp, 'resnet.spec.json');
    const r = run('spec', 'infer', `${FIX}resnet20.onnx`, '-o', out, '--checkpoint', `${FIX}resnet20.safetensors`, '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.names, 'pytorch');
    assert.equal(j.perms.length, 12);
    assert.deepEqual(j.perms[0], { id: 'P_conv1', size: 4 });
    assert.deepEqual(j.fixed.map((g: { reasons: string[] }) => g.reasons[0]).sort(), ['model output', 'network input']);
    assert.deepEqual(j.warnings, []);
    assert.deepEqual(j.problems, []);
    const spec = JSON.parse(readFileSync(out, 'utf8'));
    assert.equal(spec.format, 'rebasin-permutation-spec');
    assert.deepEqual(spec.axes['layer2.0.downsample.0.weight'], ['P_layer2.0.conv2', 'P_conv1', null, null]);
    const c = run('spec', 'check', out, `${FIX}resnet20.safetensors`, '--strict');
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /valid .* \(12 permutations over 107 tensors, every tensor covered\)/);
  });

  test('text summary; initializer names by default; --names pytorch', () => {
    const out = join(tmp, 'mm.spec.json');
    const r = run('spec', 'infer', `${FIX}mlp_matmul.onnx`, '-o', out);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /2 permutations over 6 tensors \(names: initializer\)/);
    assert.match(r.stdout, /P_layers\.0: 16/);
    assert.match(r.stdout, /fixed groups: 2/);
    assert.match(r.stdout, /warnings: none/);
    const spec = JSON.parse(readFileSync(out, 'utf8'));
    assert.ok(Object.keys(spec.axes).some((k) => k.startsWith('onnx::MatMul_')));
    // The initializer-keyed spec fits the ONNX file's own initializers.
    assert.equal(run('spec', 'check', out, `${FIX}mlp_matmul.onnx`, '--strict').code, 0);
    const out2 = join(tmp, 'mm.pt.json');
    assert.equal(run('spec', 'infer', `${FIX}mlp_matmul.onnx`, '-o', out2, '--names', 'pytorch').code, 0);
    assert.deepEqual(Object.keys(JSON.parse(readFileSync(out2, 'utf8')).axes).sort(), ['layers.0.bias', 'layers.0.weight', 'layers.2.bias', 'layers.2.weight', 'layers.4.bias', 'layers.4.weight']);
    assert.equal(run('spec', 'check', out2, `${FIX}mlp.safetensors`, '--strict').code, 0);
  });

  test('without -o the spec goes to stdout and the summary to stderr', () => {
    const r = run('spec', 'infer', `${FIX}vgg_small.onnx`);
    assert.equal(r.code, 0, r.stderr);
    const spec = JSON.parse(r.stdout);
    assert.deepEqual(spec.axes['classifier.weight'], [null, { perm: 'P_features.11', inner: 49 }]);
    assert.match(r.stderr, /4 permutations/);
  });

  test('TF.js model.json: PyTorch names and layouts, checked against the model itself', () => {
    const path = writeTfjsModel(tmp);
    const out = join(tmp, 'tfjs.spec.json');
    const r = run('spec', 'infer', path, '-o', out, '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(j.perms, [{ id: 'P_conv2d', size: 4 }]);
    const spec = JSON.parse(readFileSync(out, 'utf8'));
    assert.deepEqual(spec.axes['dense.weight'], [null, { perm: 'P_conv2d', inner: 16 }]);
    const c = run('spec', 'check', out, path, '--strict', '--json');
    assert.equal(c.code, 0, c.stderr);
    assert.equal(JSON.parse(c.stdout).valid, true);
    // --input-shape: the Keras shape with the batch; one that contradicts the model is exit 3.
    const s = run('spec', 'infer', path, '--input-shape', '1,4,4,1', '--json');
    assert.equal(s.code, 0, s.stderr);
    assert.deepEqual(JSON.parse(s.stdout).perms, [{ id: 'P_conv2d', size: 4 }]);
    const bad = run('spec', 'infer', path, '--input-shape', '1,5,4,1');
    assert.equal(bad.code, 3);
    assert.match(bad.stderr + bad.stdout, /input shape \[5, 4, 1\] given does not fit input/);
  });

  test('a checkpoint the spec does not fit: exit 3, problems listed, nothing written', () => {
    const out = join(tmp, 'never.json');
    const r = run('spec', 'infer', `${FIX}mlp.onnx`, '-o', out, '--checkpoint', `${FIX}vgg_small.safetensors`);
    assert.equal(r.code, 3);
    assert.match(r.stdout, /does not fit .*vgg_small\.safetensors .*nothing written/);
    assert.match(r.stdout, /tensor "layers\.0\.weight": in the spec but missing from the parameters/);
    assert.equal(existsSync(out), false);
  });

  test('bad input files: exit 3 naming the file', () => {
    const cut = join(tmp, 'cut.onnx');
    writeFileSync(cut, readFileSync(`${FIX}vgg_small.onnx`).subarray(0, 5000));
    const r = run('spec', 'infer', cut, '-o', join(tmp, 'x.json'));
    assert.equal(r.code, 3);
    assert.match(r.stderr, new RegExp(`${cut.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: ModelProto: not a valid ONNX model.*truncated or corrupt`));
    const missing = run('spec', 'infer', join(tmp, 'nope.onnx'));
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /nope\.onnx: cannot read \(no such file\)/);
    const missingW = run('spec', 'check', join(tmp, 'resnet.spec.json'), join(tmp, 'nope.safetensors'));
    assert.equal(missingW.code, 3);
    assert.match(missingW.stderr, /nope\.safetensors: cannot read \(no such file\)/);
  });

  test('usage errors: exit 2', () => {
    assert.equal(run('spec', 'infer').code, 2);
    assert.equal(run('spec').code, 2);
    assert.equal(run('spec', 'check', 'only-one.json').code, 2);
    assert.equal(run('spec', 'infer', 'm.onnx', '--names', 'weird').code, 2);
  });
});

describe('rebasin spec check', () => {
  test('reports every problem at once; exit 3', () => {
    const good = run('spec', 'infer', `${FIX}vgg_small.onnx`, '--checkpoint', `${FIX}vgg_small.safetensors`);
    assert.equal(good.code, 0, good.stderr);
    const spec = JSON.parse(good.stdout);
    spec.version = 2;
    spec.perms['P_features.0'] = 5; // wrong size: every axis of it now mismatches
    spec.perms.P_unused = 3;
    spec.axes['features.4.weight'][1] = 'P_nope';
    delete spec.axes['classifier.bias'];
    spec.axes['ghost.weight'] = [null];
    spec.axes['features.8.bias'] = ['P_features.8', null];
    const path = join(tmp, 'broken.json');
    writeFileSync(path, JSON.stringify(spec));
    const r = run('spec', 'check', path, `${FIX}vgg_small.safetensors`, '--strict');
    assert.equal(r.code, 3);
    const expected = [
      /"version" must be 1, got 2/,
      /perms\["P_unused"\]: permutation is not used by any axis/,
      /axes\["features\.4\.weight"\]\[1\]: unknown permutation "P_nope"/,
      /tensor "ghost\.weight": in the spec but missing from the parameters/,
      /tensor "features\.8\.bias": spec has 2 axis entries but the tensor has shape \[8\]/,
      /tensor "features\.0\.weight" axis 0: length 4 does not match permutation "P_features\.0" \(size 5\)/,
      /tensor "features\.1\.running_var" axis 0: length 4 does not match/,
      /tensor "classifier\.bias": not covered by the spec/,
    ];
    for (const re of expected) assert.match(r.stderr, re);
    const j = run('spec', 'check', path, `${FIX}vgg_small.safetensors`, '--strict', '--json');
    assert.equal(j.code, 3);
    const out = JSON.parse(j.stdout);
    assert.equal(out.valid, false);
    assert.ok(out.problems.length >= expected.length, `${out.problems.length} problems`);
    // Strict is the default (align refuses an uncovered tensor too); with --no-strict it is not a problem.
    const def = JSON.parse(run('spec', 'check', path, `${FIX}vgg_small.safetensors`, '--json').stdout);
    assert.ok(def.problems.some((p: string) => p.includes('not covered')));
    const ns = JSON.parse(run('spec', 'check', path, `${FIX}vgg_small.safetensors`, '--no-strict', '--json').stdout);
    assert.ok(!ns.problems.some((p: string) => p.includes('not covered')));
  });

  test('a spec file that is not JSON: exit 3', () => {
    const path = join(tmp, 'notjson.json');
    writeFileSync(path, '{"format": ');
    const r = run('spec', 'check', path, `${FIX}mlp.safetensors`);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /not valid JSON/);
  });
});
