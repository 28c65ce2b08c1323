// Do the head-aware alignments pair heads that attend alike? (README, "Transformers: linear mode
// connectivity".) On one cached seed pair of an LMC task: records every head's attention map
// (softmax output, [T, T] per sample) of A and of B on training samples, and per layer prints the
// H×H correlation of A's and B's maps, the head assignment that maximises it, and the ones weight
// matching and activation matching chose, with the mean map correlation of each. Then activation
// matching is run with the heads first paired by attention map and held there (each head's
// dimensions still matched), and its loss barrier printed beside AM with heads moving and fixed.
//
//   npx tsc -p tsconfig.json
//   node scripts/head-patterns.mjs out/lmc-tf/checkpoints/mnist-vit mnist-vit [seedPair] [samples]
import { weightMatching } from '../dist/src/methods/weight-matching.js';
import { activationMatching } from '../dist/src/methods/activation-matching.js';
import { linearSumAssignment } from '../dist/src/permutation/assignment.js';
import { applyHard } from '../dist/src/permutation/apply.js';
import { fixBlocks, isBlockAxis } from '../dist/src/permutation/spec.js';
import { forwardRecording } from '../dist/src/models/activations.js';
import { Tensor } from '../dist/src/core/index.js';
import { loadSeedPair, testBarrier } from './seed-pair.mjs';

const { task, pair, extra: [samplesArg = '1000'], setup, a, b } = await loadSeedPair('node scripts/head-patterns.mjs CHECKPOINT_DIR TASK [SEED_PAIR] [SAMPLES]');
const { model } = setup;
const graph = model.graph();
const spec = model.permutationSpec();
const samples = Math.min(Number(samplesArg), setup.train.n);
const softmaxIds = graph.nodes.filter((n) => n.op === 'softmax').map((n) => n.id);
// The head (block) permutation of each layer: the block entry on the layer's query weight.
const headPerm = softmaxIds.map((id) => {
  const layer = id.slice(0, id.indexOf('.attn.'));
  return spec.axes[`${layer}.attn.q.weight`].find(isBlockAxis).blocks;
});

/** Per layer, every head's attention maps over the samples: maps[l][h] = Float64Array(samples·T·T), centred. */
function attentionMaps(state) {
  const d = setup.train.x.length / setup.train.n;
  const maps = softmaxIds.map(() => null);
  const batch = 250;
  for (let s0 = 0; s0 < samples; s0 += batch) {
    const k = Math.min(batch, samples - s0);
    const x = new Tensor(setup.train.x.subarray(s0 * d, (s0 + k) * d), [k, ...setup.train.sampleShape]);
    const { values } = forwardRecording(graph, state, x, { training: false, buffers: state }, softmaxIds);
    softmaxIds.forEach((id, l) => {
      const v = values.get(id); // [k, H, T, T]
      const [, H, T] = v.shape;
      maps[l] ??= Array.from({ length: H }, () => new Float64Array(samples * T * T));
      for (let i = 0; i < k; i++) for (let h = 0; h < H; h++) {
        maps[l][h].set(v.data.subarray((i * H + h) * T * T, (i * H + h + 1) * T * T), (s0 + i) * T * T);
      }
    });
  }
  for (const layer of maps) for (const m of layer) {
    const mu = m.reduce((s, v) => s + v, 0) / m.length;
    for (let i = 0; i < m.length; i++) m[i] -= mu;
  }
  return maps;
}

function correlation(x, y) {
  let xy = 0, xx = 0, yy = 0;
  for (let i = 0; i < x.length; i++) { xy += x[i] * y[i]; xx += x[i] * x[i]; yy += y[i] * y[i]; }
  return xy / Math.sqrt(xx * yy);
}

const mapsA = attentionMaps(a);
const mapsB = attentionMaps(b);
const C = mapsA.map((la, l) => la.map((ma) => mapsB[l].map((mb) => correlation(ma, mb))));
const byPattern = C.map((c) => {
  const H = c.length;
  return Int32Array.from(linearSumAssignment(Float64Array.from(c.flat()), H, H, { maximize: true }).colInd);
});
const meanCorr = (l, sigma) => sigma.reduce((s, j, i) => s + C[l][i][j], 0) / sigma.length;
const identity = (n) => Int32Array.from({ length: n }, (_, i) => i);

const barrierOf = (aligned) => testBarrier(setup, a, aligned);
const wm = weightMatching({ spec, a, b }, { seed: 0 });
const amMoving = activationMatching({ spec, a, b }, { model, data: setup.train, statistic: 'correlation', maxSamples: 3000 });
const amFixed = activationMatching({ spec: fixBlocks(spec), a, b }, { model, data: setup.train, statistic: 'correlation', maxSamples: 3000 });
// Heads paired by attention map first, then AM with those heads held (inner permutations matched).
const pairing = Object.fromEntries(Object.entries(spec.perms).map(([id, n]) => [id, identity(n)]));
headPerm.forEach((id, l) => { pairing[id] = byPattern[l]; });
const bPaired = applyHard(spec, b, pairing);
const amPaired = activationMatching({ spec: fixBlocks(spec), a, b: bPaired }, { model, data: setup.train, statistic: 'correlation', maxSamples: 3000 });

console.log(`${task} seed pair ${pair}: attention maps of ${samples} training samples`);
softmaxIds.forEach((id, l) => {
  const fmt = (s) => `[${[...s].join(' ')}] ${meanCorr(l, s).toFixed(3)}`;
  console.log(`${id}: correlation of A's head i (row) with B's head j\n${C[l].map((r) => '  ' + r.map((v) => v.toFixed(3).padStart(7)).join('')).join('\n')}`);
  console.log(`  heads paired (B head per A head) and mean map correlation: identity ${fmt(identity(C[l].length))}; by map ${fmt(byPattern[l])}; WM ${fmt(wm.perms[headPerm[l]])}; AM ${fmt(amMoving.perms[headPerm[l]])}`);
});
// The pairing convention check: after applying byPattern, A's head i should attend like B's aligned head i.
const mapsPaired = attentionMaps(bPaired);
console.log(`check: mean diagonal map correlation after pairing ${softmaxIds.map((_, l) => (mapsA[l].reduce((s, m, h) => s + correlation(m, mapsPaired[l][h]), 0) / mapsA[l].length).toFixed(3)).join(', ')}`);
console.log(`loss barrier: naive ${barrierOf(b).toFixed(4)}, WM ${barrierOf(wm.aligned).toFixed(4)}, AM heads moving ${barrierOf(amMoving.aligned).toFixed(4)}, AM heads fixed ${barrierOf(amFixed.aligned).toFixed(4)}, AM heads paired by attention map ${barrierOf(amPaired.aligned).toFixed(4)}`);
