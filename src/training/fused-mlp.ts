/**
 * A fused training step for plain MLP graphs (input → [linear → relu → dropout? | linear → tanh]*
 * → linear → output), the hot case of the reference experiments. It calls the same kernels with the same
 * arguments as the autodiff path (F.linear, F.relu/tanh, F.crossEntropy/mse and their
 * backwards), so without dropout it produces bit-identical weights, but over activation and
 * gradient buffers allocated once: fresh multi-megabyte outputs on every op cost page faults
 * inside the BLAS threads, and the tape's bookkeeping is not free either.
 *
 * Dropout masks come from F.dropout's generator (dropoutInto) on the same stream, so with dropout
 * too the two paths give bit-identical weights (tested).
 */
import { F, kernels, Tensor, type Rng } from '../core/index.js';
import type { Model } from '../models/model.js';
import type { Params } from '../state/params.js';
import type { Criterion } from '../models/loss.js';

interface LayerPlan {
  weight: string;
  bias: string | null;
  inF: number;
  outF: number;
  act: 'relu' | 'tanh' | null;
  dropout: number;
}

/** The layer list of a plain MLP graph, or null when the graph is anything else. */
export function mlpPlan(model: Model): LayerPlan[] | null {
  const nodes = model.graph().nodes;
  if (nodes.length < 3 || nodes[0].op !== 'input' || nodes[0].shape.length !== 1) return null;
  const layers: LayerPlan[] = [];
  let prev = nodes[0].id;
  let sawOutput = false;
  for (const n of nodes.slice(1)) {
    if (sawOutput || !('input' in n) || n.input !== prev) return null;
    const last = layers[layers.length - 1];
    if (n.op === 'linear') {
      layers.push({ weight: n.weight, bias: n.bias, inF: n.inFeatures, outF: n.outFeatures, act: null, dropout: 0 });
    } else if ((n.op === 'relu' || n.op === 'tanh') && last && !last.act && !last.dropout) {
      last.act = n.op;
    } else if (n.op === 'dropout' && last && !last.dropout) {
      last.dropout = n.p;
    } else if (n.op === 'output') {
      sawOutput = true;
    } else return null;
    prev = n.id;
  }
  const top = layers[layers.length - 1];
  return sawOutput && top && !top.act && !top.dropout ? layers : null;
}

/**
 * Dropout then ReLU backward in one pass: ga[k] · scale where the unit was kept and active, else 0.
 * With scale ≥ 1, d = relu(z)·mask is > 0 exactly there, so d alone replaces both the mask and
 * the activations (the same products as F.dropout's then F.relu's backward).
 */
function reluDropoutBackward(ga: Float32Array, d: Float32Array, m: number, scale: number): void {
  const keepValue = Math.fround(scale);
  for (let k = 0; k < m; k++) ga[k] = ga[k] * (keepValue * +(d[k] > 0));
}

interface LayerState extends LayerPlan {
  w: Tensor;
  b: Tensor | null;
  /** Linear output, then the activation in place: [maxBatch, outF]. */
  z: Float32Array;
  /** The dropped-out output (hidden layers with dropout). */
  d: Float32Array | null;
  /** Gradient with respect to z (after activation/dropout backward). */
  g: Float32Array;
  gw: Float32Array;
  gb: Float32Array | null;
}

export interface FusedStepResult {
  /** Mean batch loss, rounded to float32 like the autodiff path's scalar. */
  loss: number;
  /** Logits [size, outputs] (valid until the next step). */
  logits: Float32Array;
}

export class FusedMlp {
  private readonly layers: LayerState[];

  /** `params` must be float32 and hold every tensor of the plan; their .grad are set to our buffers. */
  constructor(plan: LayerPlan[], params: Params, maxBatch: number) {
    this.layers = plan.map((l, i) => {
      const w = params.get(l.weight)!;
      const b = l.bias ? params.get(l.bias)! : null;
      const hidden = i < plan.length - 1;
      const gw = new Float32Array(l.outF * l.inF);
      const gb = b ? new Float32Array(l.outF) : null;
      w.grad = new Tensor(gw, w.shape);
      if (b && gb) b.grad = new Tensor(gb, b.shape);
      return {
        ...l, w, b, gw, gb,
        z: new Float32Array(maxBatch * l.outF),
        d: hidden && l.dropout > 0 ? new Float32Array(maxBatch * l.outF) : null,
        g: new Float32Array(maxBatch * l.outF),
      };
    });
  }

  /** Whether this fused path can train `model` with these parameters. */
  static plan(model: Model, params: Params): LayerPlan[] | null {
    const plan = mlpPlan(model);
    if (!plan) return null;
    for (const l of plan) {
      if (l.dropout > 0 && l.act !== 'relu') return null; // the fused dropout backward assumes ReLU
      for (const name of [l.weight, l.bias]) {
        if (name === null) continue;
        const t = params.get(name);
        if (!t || !(t.data instanceof Float32Array)) return null;
      }
    }
    return plan;
  }

  /**
   * Forward, loss and backward for one batch; leaves the gradients in the parameters' .grad
   * (overwritten, not accumulated) for the optimiser.
   */
  step(x: Float32Array, y: Int32Array | Float32Array, size: number, criterion: Criterion, dropRng: Rng): FusedStepResult {
    const K = kernels();
    const L = this.layers;
    const inputOf = (i: number) => (i === 0 ? x : (L[i - 1].d ?? L[i - 1].z));
    for (let i = 0; i < L.length; i++) {
      const l = L[i];
      const z = l.z;
      const o = l.outF;
      if (l.b) for (let r = 0; r < size; r++) z.set(l.b.data, r * o);
      K.gemm(false, true, size, o, l.inF, 1, inputOf(i), 0, l.inF, l.w.data, 0, l.inF, l.b ? 1 : 0, z, 0, o);
      const n = size * o;
      const zs = n === z.length ? z : z.subarray(0, n);
      if (l.act) K.unary(l.act, zs, zs);
      if (l.d) F.dropoutInto(dropRng, z, l.d, n, l.dropout);
    }
    const top = L[L.length - 1];
    const C = top.outF;
    const n = size * C;
    const logits = top.z.subarray(0, n);
    const g = top.g.subarray(0, n);
    let loss: number;
    if (criterion === 'ce') {
      const labels = y as Int32Array;
      loss = Math.fround(K.softmaxCrossEntropy(logits, labels, size, C, g) / size);
      for (let r = 0; r < size; r++) g[r * C + labels[r]] -= 1;
      K.affine(g, 1 / size, 0, g);
    } else {
      let s = 0;
      for (let k = 0; k < n; k++) {
        const dk = logits[k] - y[k];
        s += dk * dk;
      }
      loss = Math.fround(s / n);
      const scale = 2 / n;
      for (let k = 0; k < n; k++) g[k] = scale * (logits[k] - y[k]);
    }
    for (let i = L.length - 1; i >= 0; i--) {
      const l = L[i];
      const o = l.outF;
      const inp = inputOf(i);
      K.gemm(true, false, o, l.inF, size, 1, l.g, 0, o, inp, 0, l.inF, 0, l.gw, 0, l.inF);
      if (l.gb) K.sumAxis(l.g, 1, size, o, l.gb);
      if (i === 0) break; // the input needs no gradient
      const below = L[i - 1];
      const m = size * below.outF;
      const ga = m === below.g.length ? below.g : below.g.subarray(0, m);
      K.gemm(false, false, size, l.inF, o, 1, l.g, 0, o, l.w.data, 0, l.inF, 0, ga, 0, l.inF);
      const a = m === below.z.length ? below.z : below.z.subarray(0, m);
      if (below.d) reluDropoutBackward(ga, below.d, m, 1 / (1 - below.dropout));
      else if (below.act === 'relu') K.reluBackward(a, ga, ga);
      else if (below.act === 'tanh') for (let k = 0; k < m; k++) ga[k] = ga[k] * (1 - a[k] * a[k]);
    }
    return { loss, logits };
  }
}
