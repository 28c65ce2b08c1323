/**
 * Straight-through estimator (Ainsworth et al., Git Re-Basin, ICLR 2023, §3.3 / Algorithm 2;
 * the `*_ste2.py` scripts the Sinkhorn paper compares with; method.md §8.4). It minimises
 *   ℒ(f(x; ½·(θ_A + proj(θ̃))), y),  proj(θ) = π(θ_B) with π = weight matching of B to θ,
 * over free parameters θ̃ initialised to θ_A. Every mini-batch:
 *   1. π ← weightMatching(θ̃ vs θ_B, init = previous π);
 *   2. projected = π(θ_B);
 *   3. θ_STE = projected + (θ̃ − stop_grad(θ̃))   (value: projected; ∂θ_STE/∂θ̃ = I);
 *   4. loss = ℒ(f(x; ½·(θ_A + θ_STE)), y)          (BN with batch statistics, no dropout);
 *   5. SGD (momentum) step on θ̃.
 * The result is the π with the lowest mini-batch loss seen, and π(B) under it: a hard
 * permutation of B, so the same function as B.
 *
 * Default epochs: 5, not the reference's 250. Every step runs weight matching (warm-started, so
 * usually a sweep or two of LAPs) plus a forward/backward pass; 250 epochs is hours in pure
 * TypeScript for the paper's models. Pass `epochs` to run longer.
 */
import { SGD } from '../core/optim/optimizers.js';
import { Rng } from '../core/random.js';
import { F, noGrad, Tensor } from '../core/index.js';
import { batches, targetSize, type Dataset } from '../data/dataset.js';
import { InputError } from '../errors.js';
import { assertDataFitsModel, assertStateFitsModel } from '../models/activations.js';
import type { Model } from '../models/model.js';
import { lerpState, splitState, type Params } from '../state/params.js';
import { applyHard, identityPerms } from '../permutation/apply.js';
import { assertValidSpec } from '../permutation/spec.js';
import { stateLoss, type Batch, type Criterion } from '../models/loss.js';
import type { AlignInput, AlignResult, StepCallback, StepLog } from './types.js';
import { assertCompatible } from './validate.js';
import { weightMatching } from './weight-matching.js';

export interface SteOptions {
  model: Model;
  /** Training data: class labels for 'ce', targets (numOutputs per sample) for 'mse'. */
  data: Dataset;
  /** Default 5 (reference: 250; see the note above). */
  epochs?: number;
  /** Default 500 (reference: 1000 for the MLPs, 500 for VGG). */
  batchSize?: number;
  /** Default 1e-2. */
  lr?: number;
  /** Default 0.9. */
  momentum?: number;
  /** Shuffle order and weight-matching visiting order. Default 0. */
  seed?: number;
  /** Default: 'ce' for class labels, 'mse' for regression targets. */
  criterion?: Criterion;
  /** Sweep limit of the weight matching inside every step (default 100, as weightMatching). */
  wmSweeps?: number;
  /** After every mini-batch; `cost` is that batch's midpoint loss. Return true to stop. */
  onStep?: StepCallback;
}

/** The defaults of the options above (see the note at the top for epochs). */
export const STE_DEFAULTS = { epochs: 5, batchSize: 500, lr: 1e-2, momentum: 0.9 };

export function straightThroughEstimator(input: AlignInput, opts: SteOptions): AlignResult {
  const { spec, a, b } = input;
  const { model, data } = opts;
  assertValidSpec(spec, a);
  assertCompatible(a, b);
  assertStateFitsModel(model, a, 'straightThroughEstimator', 'model A');
  assertDataFitsModel(model, data, 'straightThroughEstimator');
  const epochs = opts.epochs ?? STE_DEFAULTS.epochs;
  const batchSize = opts.batchSize ?? STE_DEFAULTS.batchSize;
  const lr = opts.lr ?? STE_DEFAULTS.lr;
  const momentum = opts.momentum ?? STE_DEFAULTS.momentum;
  const criterion: Criterion = opts.criterion ?? (data.y instanceof Int32Array ? 'ce' : 'mse');
  const who = 'straightThroughEstimator';
  if (!(Number.isInteger(epochs) && epochs >= 1)) throw new InputError(`${who}: epochs must be an integer ≥ 1, got ${epochs}`);
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new InputError(`${who}: batchSize must be an integer ≥ 1, got ${batchSize}`);
  if (!(lr > 0 && Number.isFinite(lr))) throw new InputError(`${who}: lr must be a finite number > 0, got ${lr}`);
  if (!(momentum >= 0 && momentum < 1)) throw new InputError(`${who}: momentum must be in [0, 1), got ${momentum}`);
  if (criterion !== 'ce' && criterion !== 'mse') throw new InputError(`${who}: criterion must be "ce" or "mse", got "${criterion as string}"`);
  const t = targetSize(data);
  if (criterion === 'ce' && !(data.y instanceof Int32Array)) throw new InputError(`${who}: criterion "ce" needs class labels, data "${data.name}" has regression targets`);
  if (criterion === 'mse' && (data.y instanceof Int32Array || t !== model.numOutputs)) {
    throw new InputError(`${who}: criterion "mse" needs ${model.numOutputs} float targets per sample, data "${data.name}" has ${data.y instanceof Int32Array ? 'class labels' : `${t}`}`);
  }

  // Detached: A's tensors are constants here (no gradient may reach the caller's tensors).
  const sa = splitState(new Map([...a].map(([k, v]) => [k, v.detach()])));
  // θ̃: trainable copy of A's weights. A's buffers ride along only so weight matching sees a full state.
  const theta: Params = new Map([...sa.params].map(([k, v]) => [k, v.clone().requireGrad()]));
  const opt = new SGD([...theta.values()], { lr, momentum });
  const rng = new Rng(opts.seed ?? 0);
  let perms = identityPerms(spec);
  let best = { loss: Infinity, perms, step: 0 };
  const log: StepLog[] = [];
  const t0 = performance.now();
  let step = 0;
  let stop = false;
  for (let epoch = 0; epoch < epochs && !stop; epoch++) {
    for (const raw of batches(data, batchSize, { shuffle: true, rng })) {
      step++;
      const batch: Batch = {
        x: new Tensor(raw.x.slice(), [raw.size, ...data.sampleShape]),
        y: raw.y instanceof Int32Array ? raw.y.slice() : new Tensor(Float32Array.from(raw.y), [raw.size, t]),
      };
      // 1–2. Project B onto θ̃ (warm start: consecutive θ̃ differ by one SGD step).
      const current: Params = new Map([...[...theta].map(([k, v]) => [k, v.detach()] as const), ...sa.buffers]);
      const wm = weightMatching({ spec, a: current, b }, { init: perms, seed: step, maxSweeps: opts.wmSweeps });
      perms = wm.perms;
      const projected = splitState(wm.aligned).params;
      // 3. Straight-through: the forward sees projected, the gradient reaches θ̃.
      const ste: Params = new Map([...theta].map(([k, th]) => [k, F.add(projected.get(k)!, F.sub(th, th.detach()))]));
      // 4–5. Midpoint loss, SGD on θ̃.
      const loss = stateLoss(model, lerpState(sa.params, ste, 0.5), batch, criterion);
      opt.zeroGrad();
      loss.backward();
      opt.step();
      const value = loss.item();
      if (!Number.isFinite(value)) throw new Error(`${who}: the midpoint loss is ${value} at step ${step}; lower lr (now ${lr})`);
      for (const [k, th] of theta) {
        if (!allFinite(th.data)) throw new Error(`${who}: θ̃ tensor "${k}" became non-finite at step ${step}; lower lr (now ${lr})`);
      }
      if (value < best.loss) best = { loss: value, perms, step };
      const entry: StepLog = { step, cost: value, hardCost: value, seconds: (performance.now() - t0) / 1000 };
      log.push(entry);
      if (opts.onStep?.(entry) === true) {
        stop = true;
        break;
      }
    }
  }
  const aligned = noGrad(() => applyHard(spec, b, best.perms));
  return { method: 'ste', perms: best.perms, aligned, log, steps: step, seconds: (performance.now() - t0) / 1000 };
}

function allFinite(d: ArrayLike<number>): boolean {
  for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i])) return false;
  return true;
}
