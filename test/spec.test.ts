/** Permutation specs: derivation from model graphs, JSON round trip, validation, union–find. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deriveSpec, graphTensors, GraphBuilder, mlp, resnet18, resnet20, vgg, vggSmall, type Model } from '../src/models/index.js';
import {
  assertValidSpec, axisPermId, permToAxes, specFromJSON, specToJSON, validateSpec, type PermutationSpec,
} from '../src/permutation/spec.js';
import { UnionFind } from '../src/permutation/union-find.js';

/** Spec checked against the model's own tensors (strict: every tensor covered). */
function checkedSpec(model: Model): PermutationSpec {
  const spec = model.permutationSpec();
  const shapes = new Map(graphTensors(model.graph()).map((t) => [t.name, { shape: t.shape }]));
  assertValidSpec(spec, shapes, { strict: true });
  return spec;
}

/** Permutation acting on the output axis of a tensor. */
const outPerm = (spec: PermutationSpec, name: string) => axisPermId(spec.axes[name][0]);
const inPerm = (spec: PermutationSpec, name: string) => spec.axes[name][1];

test('union-find: unions, connectivity, deterministic groups, range errors', () => {
  const uf = new UnionFind(6);
  assert.equal(uf.size, 6);
  uf.union(4, 1);
  uf.union(5, 4);
  uf.union(2, 3);
  assert.ok(uf.connected(1, 5));
  assert.ok(!uf.connected(0, 1));
  assert.equal(uf.union(1, 5), uf.find(4)); // already joined: same root
  assert.deepEqual(uf.groups(), [[0], [1, 4, 5], [2, 3]]);
  const e = uf.add();
  assert.equal(e, 6);
  uf.union(6, 0);
  assert.deepEqual(uf.groups(), [[0, 6], [1, 4, 5], [2, 3]]);
  assert.throws(() => uf.find(7), /out of range/);
  // A long chain stays correct (path halving).
  const big = new UnionFind(1000);
  for (let i = 1; i < 1000; i++) big.union(i - 1, i);
  assert.equal(big.groups().length, 1);
});

test('MLP spec: one perm per hidden layer, first layer no input perm, output layer only input-permuted', () => {
  const spec = checkedSpec(mlp({ sizes: [784, 512, 256, 10] }));
  assert.deepEqual(spec, {
    perms: { 'P_layers.0': 512, 'P_layers.2': 256 },
    axes: {
      'layers.0.weight': ['P_layers.0', null], 'layers.0.bias': ['P_layers.0'],
      'layers.2.weight': ['P_layers.2', 'P_layers.0'], 'layers.2.bias': ['P_layers.2'],
      'layers.4.weight': [null, 'P_layers.2'], 'layers.4.bias': [null],
    },
  });
  for (const depth of [2, 4, 8]) {
    const s = checkedSpec(mlp({ sizes: [5, ...Array(depth - 1).fill(7), 3] }));
    assert.equal(Object.keys(s.perms).length, depth - 1);
  }
  // Dropout is channel-wise: the spec does not change.
  assert.deepEqual(mlp({ sizes: [784, 512, 256, 10], dropout: 0.3 }).permutationSpec(), spec);
});

test('VGG11/13/16/19 ± BN: one perm per conv, BN tied to its conv, chained inputs, classifier', () => {
  for (const depth of [11, 13, 16, 19] as const) {
    for (const batchNorm of [false, true]) {
      const model = vgg({ depth, batchNorm, widthMultiplier: 0.25 });
      const spec = checkedSpec(model);
      const convs = graphTensors(model.graph()).filter((t) => t.shape.length === 4);
      assert.equal(Object.keys(spec.perms).length, convs.length, `vgg${depth}${batchNorm ? '-bn' : ''}: one perm per conv`);
      let prev: string | null = null;
      for (const c of convs) {
        const p = outPerm(spec, c.name)!;
        assert.equal(spec.perms[p], c.shape[0]);
        assert.deepEqual(spec.axes[c.name], [p, prev, null, null]);
        assert.deepEqual(spec.axes[c.name.replace('weight', 'bias')], [p]);
        if (batchNorm) {
          // torchvision puts the BN right after its conv: features.(i+1).
          const bn = `features.${Number(c.name.split('.')[1]) + 1}`;
          for (const s of ['weight', 'bias', 'running_mean', 'running_var']) assert.deepEqual(spec.axes[`${bn}.${s}`], [p]);
        }
        prev = p;
      }
      // 32×32 → a 1×1 map: the classifier's input axis is the last conv's perm, plain.
      assert.deepEqual(spec.axes['classifier.0.weight'], [null, prev]);
      assert.deepEqual(spec.axes['classifier.0.bias'], [null]);
    }
  }
});

test('VGG flatten: {perm, inner} for a 2×2 map and for torchvision\'s 7×7 avgpool; hidden linears get perms', () => {
  const spec = checkedSpec(vgg({ depth: 11, batchNorm: true, widthMultiplier: 0.125, inputShape: [3, 64, 64], classifier: 'three-layer' }));
  const last = outPerm(spec, 'features.25.weight')!;
  assert.deepEqual(spec.axes['classifier.0.weight'], ['P_classifier.0', { perm: last, inner: 4 }]);
  assert.deepEqual(spec.axes['classifier.3.weight'], ['P_classifier.3', 'P_classifier.0']);
  assert.deepEqual(spec.axes['classifier.6.weight'], [null, 'P_classifier.3']);
  assert.equal(Object.keys(spec.perms).length, 8 + 2);
  const tv = checkedSpec(vgg({ depth: 11, batchNorm: false, widthMultiplier: 0.125, avgpool: [7, 7] }));
  assert.deepEqual(tv.axes['classifier.0.weight'], [null, { perm: outPerm(tv, 'features.18.weight'), inner: 49 }]);
  const small = checkedSpec(vggSmall());
  assert.deepEqual(small.axes['classifier.weight'], [null, { perm: 'P_features.11', inner: 49 }]);
  assert.deepEqual(small.perms, { 'P_features.0': 8, 'P_features.4': 32, 'P_features.8': 64, 'P_features.11': 128 });
});

test('ResNet-20: one stream perm per stage (stem/shortcuts + every conv2/bn2), a private perm per conv1', () => {
  const spec = checkedSpec(resnet20({ widthMultiplier: 1 }));
  assert.equal(Object.keys(spec.perms).length, 3 + 9);
  const blocks = [0, 1, 2];
  const streams = [1, 2, 3].map((s) => {
    const members = blocks.map((b) => `layer${s}.${b}.conv2.weight`);
    members.push(s === 1 ? 'conv1.weight' : `layer${s}.0.downsample.0.weight`);
    const ids = new Set(members.map((n) => outPerm(spec, n)));
    assert.equal(ids.size, 1, `stage ${s} shares one permutation`);
    return [...ids][0]!;
  });
  assert.equal(new Set(streams).size, 3);
  assert.deepEqual(streams.map((p) => spec.perms[p]), [16, 32, 64]);
  // BN follows its producer.
  assert.deepEqual(spec.axes['bn1.running_var'], [streams[0]]);
  for (const s of [1, 2, 3]) {
    for (const b of blocks) {
      const p = `layer${s}.${b}`;
      const inner = outPerm(spec, `${p}.conv1.weight`)!;
      assert.ok(!streams.includes(inner));
      assert.deepEqual(spec.axes[`${p}.bn1.weight`], [inner]);
      assert.deepEqual(spec.axes[`${p}.bn2.running_mean`], [streams[s - 1]]);
      assert.deepEqual(inPerm(spec, `${p}.conv2.weight`), inner);
      // A block reads the stream it sits on (block 0 of stages 2/3 reads the previous stage's).
      assert.deepEqual(inPerm(spec, `${p}.conv1.weight`), streams[b === 0 && s > 1 ? s - 2 : s - 1]);
    }
  }
  assert.deepEqual(spec.axes['layer2.0.downsample.0.weight'], [streams[1], streams[0], null, null]);
  assert.deepEqual(spec.axes['layer3.0.downsample.1.bias'], [streams[2]]);
  assert.deepEqual(spec.axes['fc.weight'], [null, streams[2]]);
  assert.deepEqual(spec.axes['conv1.weight'], [streams[0], null, null, null]);
  // Each perm's axes, inverted: the stage-1 stream touches the stem, 3 conv2 + 6 conv1-inputs, BNs, fc none.
  const byPerm = permToAxes(spec);
  assert.equal(byPerm[streams[0]].filter((a) => a.axis === 0).length, 4 + 4 * 4); // 4 weights + 4 BNs × 4 tensors
});

test('ResNet-18: the grouping of method.md §2.5', () => {
  const spec = checkedSpec(resnet18({ inputShape: [3, 32, 32], numClasses: 10, widthMultiplier: 0.25 }));
  assert.equal(Object.keys(spec.perms).length, 4 + 8);
  const same = (names: string[]) => {
    const ids = new Set(names.map((n) => outPerm(spec, `${n}.weight`)));
    assert.equal(ids.size, 1, names.join(', '));
    return [...ids][0]!;
  };
  const groups = [
    same(['conv1', 'bn1', 'layer1.0.conv2', 'layer1.0.bn2', 'layer1.1.conv2', 'layer1.1.bn2']),
    ...[2, 3, 4].map((s) => same([`layer${s}.0.conv2`, `layer${s}.0.downsample.0`, `layer${s}.0.downsample.1`, `layer${s}.1.conv2`, `layer${s}.1.bn2`])),
  ];
  assert.equal(new Set(groups).size, 4);
  const privates = [1, 2, 3, 4].flatMap((s) => [0, 1].map((b) => same([`layer${s}.${b}.conv1`, `layer${s}.${b}.bn1`])));
  assert.equal(new Set([...groups, ...privates]).size, 12);
  assert.deepEqual(spec.axes['fc.weight'], [null, groups[3]]);
  assert.deepEqual(spec.axes['fc.bias'], [null]);
});

test('deriveSpec: skip from the network input fixes its stream; mismatched adds are rejected', () => {
  const b = new GraphBuilder();
  const x = b.input([4]);
  const a = b.act('act', b.linear('a', x, 4, 4), 'relu');
  const s = b.add('add', [x, a]);
  const h = b.linear('b', s, 4, 6);
  b.output(b.linear('c', b.act('act2', h, 'relu'), 6, 2));
  const spec = deriveSpec(b.build());
  // 'a' is added to the input, which is never permuted, so neither is 'a'.
  assert.deepEqual(spec.perms, { P_b: 6 });
  assert.deepEqual(spec.axes['a.weight'], [null, null]);
  assert.deepEqual(spec.axes['b.weight'], ['P_b', null]);
  assert.deepEqual(spec.axes['c.weight'], [null, 'P_b']);

  // Two residual branches of different widths: inferShapes rejects the add first.
  const g = new GraphBuilder();
  const i = g.input([4]);
  const p = g.linear('p', i, 4, 5);
  const q = g.linear('q', i, 4, 6);
  g.output(g.add('sum', [p, q]));
  assert.throws(() => deriveSpec(g.build()), /add "sum" sums different shapes/);
});

test('spec JSON: round trip with envelope, errors naming the field', () => {
  for (const model of [mlp({ sizes: [6, 5, 4, 3] }), vgg({ depth: 11, batchNorm: true, widthMultiplier: 0.125, inputShape: [3, 64, 64] }), resnet20({ widthMultiplier: 0.5 })]) {
    const spec = model.permutationSpec();
    const text = specToJSON(spec);
    const obj = JSON.parse(text);
    assert.equal(obj.format, 'rebasin-permutation-spec');
    assert.equal(obj.version, 1);
    assert.deepEqual(specFromJSON(text), spec);
    assert.deepEqual(specFromJSON(obj), spec);
    assert.deepEqual(Object.keys(specFromJSON(text).axes), Object.keys(spec.axes), 'order kept');
  }
  const good = JSON.parse(specToJSON(mlp({ sizes: [3, 4, 2] }).permutationSpec()));
  const bad = (patch: (o: any) => void) => { const o = structuredClone(good); patch(o); return () => specFromJSON(JSON.stringify(o)); };
  assert.throws(() => specFromJSON('{not json'), /not valid JSON/);
  assert.throws(bad((o) => { o.format = 'other'; }), /"format" must be "rebasin-permutation-spec"/);
  assert.throws(bad((o) => { o.version = 2; }), /"version" must be 1/);
  assert.throws(bad((o) => { o.perms['P_layers.0'] = 2.5; }), /perms\["P_layers.0"\]: size must be a positive integer/);
  assert.throws(bad((o) => { o.axes['layers.2.weight'][1] = 7; }), /axes\["layers.2.weight"\]\[1\]: must be null, a permutation id or \{perm, inner\}/);
  assert.throws(bad((o) => { o.axes['layers.2.weight'][1] = { perm: 'P_layers.0', inner: 0 }; }), /axes\["layers.2.weight"\]\[1\].inner: must be a positive integer/);
  assert.throws(bad((o) => { o.axes['layers.0.bias'] = ['P_nope']; }), /axes\["layers.0.bias"\]\[0\]: unknown permutation "P_nope"/);
  assert.throws(bad((o) => { delete o.axes; }), /"axes" must be an object/);
  // Several problems at once are all listed.
  const multi = bad((o) => { o.version = 3; o.perms.extra = 4; });
  assert.throws(multi, (e: Error) => /"version" must be 1/.test(e.message) && /perms\["extra"\]: permutation is not used/.test(e.message));
});

test('validateSpec reports every planted problem at once; assertValidSpec lists them all', () => {
  const model = mlp({ sizes: [5, 4, 3, 2] });
  const spec = structuredClone(model.permutationSpec());
  const shapes = new Map(graphTensors(model.graph()).map((t) => [t.name, { shape: t.shape }]));
  assert.deepEqual(validateSpec(spec, shapes, { strict: true }), []);
  // Plant: a missing tensor, a wrong axis count, a wrong perm size, an unknown perm, an unused perm,
  // an uncovered tensor (strict only) and an {inner} entry whose product is off.
  spec.axes['ghost.weight'] = ['P_layers.0'];
  spec.axes['layers.0.bias'] = ['P_layers.0', null];
  spec.perms['P_layers.2'] = 5;
  spec.axes['layers.4.bias'] = ['P_unknown'];
  spec.perms['P_unused'] = 3;
  delete spec.axes['layers.4.weight'];
  spec.axes['layers.2.weight'] = [null, { perm: 'P_layers.0', inner: 2 }];
  const loose = validateSpec(spec, shapes);
  const strict = validateSpec(spec, shapes, { strict: true });
  const expectAll = [
    /tensor "ghost.weight": in the spec but missing/,
    /tensor "layers.0.bias": spec has 2 axis entries but the tensor has shape \[4\]/,
    /tensor "layers.2.bias" axis 0: length 3 does not match permutation "P_layers.2" \(size 5\)/,
    /axes\["layers.4.bias"\]\[0\]: unknown permutation "P_unknown"/,
    /perms\["P_unused"\]: permutation is not used/,
    /tensor "layers.2.weight" axis 1: length 4 does not match permutation "P_layers.0" \(size 4 × inner 2 = 8\)/,
  ];
  for (const re of expectAll) {
    assert.ok(loose.some((p) => re.test(p)), `missing ${re}: ${loose.join(' | ')}`);
  }
  assert.ok(!loose.some((p) => /not covered/.test(p)));
  assert.ok(strict.some((p) => /tensor "layers.4.weight": not covered by the spec/.test(p)));
  assert.equal(strict.length, loose.length + 1);
  assert.throws(() => assertValidSpec(spec, shapes, { strict: true }), (e: Error) => {
    assert.match(e.message, new RegExp(`invalid permutation spec \\(${strict.length} problems\\)`));
    for (const re of expectAll) assert.match(e.message, re);
    return true;
  });
});

test('permToAxes inverts the table (perm → name, axis, inner)', () => {
  const spec = vgg({ depth: 11, batchNorm: false, widthMultiplier: 0.125, inputShape: [3, 64, 64] }).permutationSpec();
  const inv = permToAxes(spec);
  assert.deepEqual(Object.keys(inv), Object.keys(spec.perms));
  assert.deepEqual(inv['P_features.18'], [
    { name: 'features.18.weight', axis: 0, inner: 1 },
    { name: 'features.18.bias', axis: 0, inner: 1 },
    { name: 'classifier.0.weight', axis: 1, inner: 4 },
  ]);
  assert.deepEqual(inv['P_features.0'].map((a) => `${a.name}:${a.axis}`), ['features.0.weight:0', 'features.0.bias:0', 'features.3.weight:1']);
});
