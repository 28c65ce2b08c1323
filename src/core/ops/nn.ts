/** Neural-network ops: conv, pooling, batch norm, dropout, softmax and the losses. */
import { kernels } from '../backend/index.js';
import type { ConvGeometry, FloatArray, PoolGeometry } from '../backend/types.js';
import type { Rng } from '../random.js';
import { allocLike, allocUninit, makeResult, numel, shapeStr, Tensor } from '../tensor.js';
import { convGeneral } from './conv.js';
import { exp, sub } from './elementwise.js';
import { logsumexp } from './reduce.js';
import { pad } from './spatial.js';

export interface Conv2dOptions {
  /** One stride for both axes, or [sh, sw]. */
  stride?: number | readonly [number, number];
  /** Zero padding on all four sides, or [top, left, bottom, right] (ONNX pads order for 2-D). */
  padding?: number | readonly [number, number, number, number];
  /** One dilation for both axes, or [dh, dw]. */
  dilation?: number | readonly [number, number];
  /** Channel groups: w is [O, C/groups, KH, KW]; groups = C is a depthwise convolution. */
  groups?: number;
  /**
   * Apply ReLU in the same kernel: the same values and gradients as F.relu(conv2d(...)), without a
   * separate pass and array for the pre-activation in either direction.
   */
  relu?: boolean;
}

/**
 * 2-D convolution, NCHW input, weight [O, C/groups, KH, KW] (PyTorch layout), optional bias [O].
 * Square stride, equal padding on all sides, no dilation and one group run on the conv kernels
 * (native when the addon loads); other paddings pad explicitly and then do the same; rectangular
 * strides, dilation and groups take the general path (im2col + gemm per group, a direct loop for
 * depthwise).
 */
export function conv2d(x: Tensor, w: Tensor, b: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  const [sh, sw] = typeof opts.stride === 'object' ? opts.stride : [opts.stride ?? 1, opts.stride ?? 1];
  const p = opts.padding ?? 0;
  const pads = typeof p === 'object' ? p : [p, p, p, p];
  const [pt, pl, pb, pr] = pads;
  const [dh, dw] = typeof opts.dilation === 'object' ? opts.dilation : [opts.dilation ?? 1, opts.dilation ?? 1];
  const groups = opts.groups ?? 1;
  if (x.ndim !== 4 || w.ndim !== 4) throw new Error(`conv2d: expects x [N,C,H,W] and w [O,C,KH,KW], got ${shapeStr(x.shape)} and ${shapeStr(w.shape)}`);
  const [N, C, H, W] = x.shape;
  const [O, Cg, KH, KW] = w.shape;
  if (!(Number.isInteger(groups) && groups >= 1) || C % groups !== 0 || O % groups !== 0) {
    throw new Error(`conv2d: ${groups} groups do not divide input ${shapeStr(x.shape)} and weight ${shapeStr(w.shape)}`);
  }
  if (C / groups !== Cg) {
    throw new Error(`conv2d: input ${shapeStr(x.shape)} has ${C} channels but weight ${shapeStr(w.shape)} expects ${Cg * groups}${groups > 1 ? ` (${groups} groups)` : ''}`);
  }
  if (b && (b.ndim !== 1 || b.shape[0] !== O)) throw new Error(`conv2d: bias ${shapeStr(b.shape)} does not match ${O} output channels`);
  if (x.dtype !== w.dtype || (b && b.dtype !== x.dtype)) throw new Error(`conv2d: dtypes differ (${x.dtype}, ${w.dtype}${b ? `, ${b.dtype}` : ''})`);
  if (pads.length !== 4 || [sh, sw, dh, dw].some((v) => !(Number.isInteger(v) && v >= 1)) || pads.some((v) => !(Number.isInteger(v) && v >= 0))) {
    throw new Error(`conv2d: invalid stride [${sh}, ${sw}], padding [${pads.join(', ')}] or dilation [${dh}, ${dw}]`);
  }
  const relu = opts.relu ?? false;
  const OH = Math.floor((H + pt + pb - ((KH - 1) * dh + 1)) / sh) + 1;
  const OW = Math.floor((W + pl + pr - ((KW - 1) * dw + 1)) / sw) + 1;
  if (OH < 1 || OW < 1) throw new Error(`conv2d: kernel ${KH}×${KW} (dilation [${dh}, ${dw}]) does not fit input ${H}×${W} with padding [${pads.join(', ')}]`);
  if (sh === sw && dh === 1 && dw === 1 && groups === 1) {
    if (pt === pl && pt === pb && pt === pr) return conv2dKernel(x, w, b, sh, pt, relu);
    // Unequal padding: pad the excess explicitly, the common part in the kernel.
    const m = Math.min(pt, pl, pb, pr);
    return conv2dKernel(pad(x, [0, 0, pt - m, pl - m, 0, 0, pb - m, pr - m]), w, b, sh, m, relu);
  }
  return convGeneral(x, w, b, { N, C, H, W, O, KH, KW, sh, sw, pt, pl, dh, dw, groups, OH, OW }, relu);
}

/** The conv kernels' case: square stride, equal padding, no dilation, one group. */
function conv2dKernel(x: Tensor, w: Tensor, b: Tensor | null, stride: number, padding: number, relu: boolean): Tensor {
  const [N, C, H, W] = x.shape;
  const [O, , KH, KW] = w.shape;
  const OH = Math.floor((H + 2 * padding - KH) / stride) + 1;
  const OW = Math.floor((W + 2 * padding - KW) / stride) + 1;
  const g: ConvGeometry = { N, C, H, W, O, KH, KW, stride, pad: padding, OH, OW };
  const out = allocUninit(x.dtype, N * O * OH * OW);
  const K = kernels();
  K.conv2dForward(x.data, w.data, b ? b.data : null, out, g, relu);
  const inputs = b ? [x, w, b] : [x, w];
  return makeResult(relu ? 'conv2d+relu' : 'conv2d', [N, O, OH, OW], out, inputs, (grad) => {
    const dx = x.requiresGrad ? allocUninit(x.dtype, x.size) : null;
    const dw = w.requiresGrad ? allocLike(x.dtype, w.size) : null;
    const db = b && b.requiresGrad ? allocLike(x.dtype, O) : null;
    K.conv2dBackward(x.data, w.data, grad, dx, dw, db, g, relu ? out : null);
    return b ? [dx, dw, db] : [dx, dw];
  });
}

function poolGeometry(op: string, x: Tensor, k: number, stride: number, pad: number): PoolGeometry {
  if (x.ndim !== 4) throw new Error(`${op}: expects [N,C,H,W], got ${shapeStr(x.shape)}`);
  const [N, C, H, W] = x.shape;
  if (!(k >= 1 && stride >= 1 && pad >= 0 && pad * 2 <= k)) throw new Error(`${op}: invalid kernel ${k}, stride ${stride}, padding ${pad}`);
  const OH = Math.floor((H + 2 * pad - k) / stride) + 1;
  const OW = Math.floor((W + 2 * pad - k) / stride) + 1;
  if (OH < 1 || OW < 1) throw new Error(`${op}: window ${k} does not fit input ${H}×${W}`);
  return { N, C, H, W, K: k, stride, pad, OH, OW };
}

export function maxPool2d(x: Tensor, kernel: number, stride = kernel, padding = 0): Tensor {
  const g = poolGeometry('maxPool2d', x, kernel, stride, padding);
  const out = allocUninit(x.dtype, g.N * g.C * g.OH * g.OW);
  const arg = new Int32Array(out.length);
  kernels().maxPool2dForward(x.data, out, arg, g);
  return makeResult('maxPool2d', [g.N, g.C, g.OH, g.OW], out, [x], (grad) => {
    const dx = allocUninit(x.dtype, x.size);
    kernels().maxPool2dBackward(grad, arg, dx, g);
    return [dx];
  });
}

export function avgPool2d(x: Tensor, kernel: number, stride = kernel, padding = 0): Tensor {
  const g = poolGeometry('avgPool2d', x, kernel, stride, padding);
  const out = allocLike(x.dtype, g.N * g.C * g.OH * g.OW);
  kernels().avgPool2dForward(x.data, out, g);
  return makeResult('avgPool2d', [g.N, g.C, g.OH, g.OW], out, [x], (grad) => {
    const dx = allocLike(x.dtype, x.size);
    kernels().avgPool2dBackward(grad, dx, g);
    return [dx];
  });
}

/** PyTorch adaptive average pooling: window i spans [floor(i·H/OH), ceil((i+1)·H/OH)). */
export function adaptiveAvgPool2d(x: Tensor, outH: number, outW = outH): Tensor {
  if (x.ndim !== 4) throw new Error(`adaptiveAvgPool2d: expects [N,C,H,W], got ${shapeStr(x.shape)}`);
  const [N, C, H, W] = x.shape;
  if (H % outH === 0 && W % outW === 0 && H / outH === W / outW) return avgPool2d(x, H / outH);
  const out = allocLike(x.dtype, N * C * outH * outW);
  const hs = (i: number) => Math.floor((i * H) / outH);
  const he = (i: number) => Math.ceil(((i + 1) * H) / outH);
  const ws = (j: number) => Math.floor((j * W) / outW);
  const we = (j: number) => Math.ceil(((j + 1) * W) / outW);
  for (let p = 0; p < N * C; p++) {
    for (let i = 0; i < outH; i++) {
      for (let j = 0; j < outW; j++) {
        let s = 0;
        for (let h = hs(i); h < he(i); h++) for (let w = ws(j); w < we(j); w++) s += x.data[p * H * W + h * W + w];
        out[(p * outH + i) * outW + j] = s / ((he(i) - hs(i)) * (we(j) - ws(j)));
      }
    }
  }
  return makeResult('adaptiveAvgPool2d', [N, C, outH, outW], out, [x], (grad) => {
    const dx = allocLike(x.dtype, x.size);
    for (let p = 0; p < N * C; p++) {
      for (let i = 0; i < outH; i++) {
        for (let j = 0; j < outW; j++) {
          const d = grad[(p * outH + i) * outW + j] / ((he(i) - hs(i)) * (we(j) - ws(j)));
          for (let h = hs(i); h < he(i); h++) for (let w = ws(j); w < we(j); w++) dx[p * H * W + h * W + w] += d;
        }
      }
    }
    return [dx];
  });
}

export interface BatchNormState {
  /** Running mean and (unbiased) variance, updated in place during training. */
  runningMean: Tensor;
  runningVar: Tensor;
}

export interface BatchNormOptions {
  training: boolean;
  momentum?: number; // PyTorch default 0.1
  eps?: number; // PyTorch default 1e-5
}

/**
 * Batch normalisation over [N, C] or [N, C, ...spatial] (per channel C; [N, C, L] is BatchNorm1d
 * over a sequence), PyTorch semantics: batch statistics in training (running stats updated with
 * the unbiased variance), running statistics in eval. With `state` null, batch statistics are
 * always used (track_running_stats=False).
 */
export function batchNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, state: BatchNormState | null, opts: BatchNormOptions): Tensor {
  if (x.ndim < 2) throw new Error(`batchNorm: expects [N,C] or [N,C,...spatial], got ${shapeStr(x.shape)}`);
  const N = x.shape[0];
  const C = x.shape[1];
  const S = numel(x.shape.slice(2));
  for (const [name, t] of [['weight', weight], ['bias', bias], ['runningMean', state?.runningMean], ['runningVar', state?.runningVar]] as const) {
    if (t && (t.ndim !== 1 || t.shape[0] !== C)) throw new Error(`batchNorm: ${name} ${shapeStr(t.shape)} does not match ${C} channels`);
  }
  const eps = opts.eps ?? 1e-5;
  const momentum = opts.momentum ?? 0.1;
  const M = N * S;
  const useBatch = opts.training || !state;
  const mean = new Float64Array(C);
  const invStd = new Float64Array(C);
  const xd = x.data;
  if (useBatch) {
    if (M < 2 && opts.training) throw new Error(`batchNorm: training needs more than one value per channel, got input ${shapeStr(x.shape)}`);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const o = (n * C + c) * S;
        let s = 0;
        for (let i = 0; i < S; i++) s += xd[o + i];
        mean[c] += s;
      }
    }
    for (let c = 0; c < C; c++) mean[c] /= M;
    const varSum = new Float64Array(C);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const o = (n * C + c) * S;
        const mu = mean[c];
        let s = 0;
        for (let i = 0; i < S; i++) { const d = xd[o + i] - mu; s += d * d; }
        varSum[c] += s;
      }
    }
    for (let c = 0; c < C; c++) invStd[c] = 1 / Math.sqrt(varSum[c] / M + eps);
    if (opts.training && state) {
      const rm = state.runningMean.data;
      const rv = state.runningVar.data;
      for (let c = 0; c < C; c++) {
        rm[c] = (1 - momentum) * rm[c] + momentum * mean[c];
        rv[c] = (1 - momentum) * rv[c] + momentum * (varSum[c] / Math.max(M - 1, 1));
      }
    }
  } else {
    const rm = state!.runningMean.data;
    const rv = state!.runningVar.data;
    for (let c = 0; c < C; c++) {
      mean[c] = rm[c];
      invStd[c] = 1 / Math.sqrt(rv[c] + eps);
    }
  }
  const out = allocLike(x.dtype, x.size);
  const wd = weight?.data;
  const bd = bias?.data;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const o = (n * C + c) * S;
      const scale = invStd[c] * (wd ? wd[c] : 1);
      const shift = (bd ? bd[c] : 0) - mean[c] * scale;
      for (let i = 0; i < S; i++) out[o + i] = xd[o + i] * scale + shift;
    }
  }
  const inputs = [x, weight, bias].filter((t): t is Tensor => t !== null);
  return makeResult('batchNorm', x.shape, out, inputs, (g) => {
    const sumG = new Float64Array(C);
    const sumGX = new Float64Array(C); // Σ g · x̂
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const o = (n * C + c) * S;
        const mu = mean[c];
        const is = invStd[c];
        let a = 0;
        let bsum = 0;
        for (let i = 0; i < S; i++) { a += g[o + i]; bsum += g[o + i] * (xd[o + i] - mu) * is; }
        sumG[c] += a;
        sumGX[c] += bsum;
      }
    }
    let dx: FloatArray | null = null;
    if (x.requiresGrad) {
      dx = allocLike(x.dtype, x.size);
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < C; c++) {
          const o = (n * C + c) * S;
          const gamma = wd ? wd[c] : 1;
          const is = invStd[c];
          const mu = mean[c];
          if (useBatch) {
            // dx = γ·σ⁻¹/M · (M·g − Σg − x̂·Σ(g·x̂))
            const k1 = (gamma * is) / M;
            for (let i = 0; i < S; i++) {
              const xh = (xd[o + i] - mu) * is;
              dx[o + i] = k1 * (M * g[o + i] - sumG[c] - xh * sumGX[c]);
            }
          } else {
            for (let i = 0; i < S; i++) dx[o + i] = g[o + i] * gamma * is;
          }
        }
      }
    }
    const grads: (FloatArray | null)[] = [dx];
    if (weight) grads.push(weight.requiresGrad ? toDtype(sumGX, x.dtype) : null);
    if (bias) grads.push(bias.requiresGrad ? toDtype(sumG, x.dtype) : null);
    return grads;
  });
}

function toDtype(a: Float64Array, dtype: 'float32' | 'float64'): FloatArray {
  return dtype === 'float64' ? a : Float32Array.from(a);
}

/** Inverted dropout: zeroes each value with probability p and scales the rest by 1/(1−p). */
/**
 * Inverted-dropout draws, the one mask generator of the project (F.dropout and the fused MLP step
 * both use it, so a seeded run gets the same masks on either path): for i < n, unit i is kept iff
 * the next 32-bit draw of `rng` is ≥ p·2³², and out[i] = x[i]·scale if kept, else 0, with
 * scale = 1/(1−p) in out's precision. With x = null, out receives the mask itself (scale or 0).
 * xoshiro128** is inlined on local state (the same numbers as rng.nextUint32()) and the state is
 * written back, so the generator continues after the mask; the keep test is branch-free, since a
 * random branch mispredicts half the time.
 */
export function dropoutInto(rng: Rng, x: FloatArray | null, out: FloatArray, n: number, p: number): void {
  const thr = Math.min(0xffffffff, Math.round(p * 4294967296));
  // Unsigned r ≥ thr as a signed comparison of both shifted by 2³¹: everything stays int32.
  const thrS = (thr ^ 0x80000000) | 0;
  const keepValue = out instanceof Float32Array ? Math.fround(1 / (1 - p)) : 1 / (1 - p);
  const st = rng.getState();
  let s0 = st[0] | 0;
  let s1 = st[1] | 0;
  let s2 = st[2] | 0;
  let s3 = st[3] | 0;
  for (let i = 0; i < n; i++) {
    const m = Math.imul(s1, 5);
    const r = Math.imul((m << 7) | (m >>> 25), 9);
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    const keep = keepValue * +((r ^ -2147483648) >= thrS);
    out[i] = x ? x[i] * keep : keep;
  }
  rng.setState([s0 >>> 0, s1 >>> 0, s2 >>> 0, s3 >>> 0, st[4]]);
}

export function dropout(x: Tensor, p: number, rng: Rng, training: boolean): Tensor {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
  if (!training || p === 0) return x;
  const mask = allocUninit(x.dtype, x.size);
  dropoutInto(rng, null, mask, x.size, p);
  const out = allocUninit(x.dtype, x.size);
  for (let i = 0; i < out.length; i++) out[i] = x.data[i] * mask[i];
  return makeResult('dropout', x.shape, out, [x], (g) => {
    const gx = allocLike(x.dtype, g.length);
    for (let i = 0; i < g.length; i++) gx[i] = g[i] * mask[i];
    return [gx];
  });
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return sub(x, logsumexp(x, axis, true));
}

export function softmax(x: Tensor, axis = -1): Tensor {
  return exp(logSoftmax(x, axis));
}

/** Mean softmax cross-entropy of logits [N, C] against integer labels. */
export function crossEntropy(logits: Tensor, labels: Int32Array): Tensor {
  if (logits.ndim !== 2) throw new Error(`crossEntropy: logits must be [N, C], got ${shapeStr(logits.shape)}`);
  const [N, C] = logits.shape;
  if (labels.length !== N) throw new Error(`crossEntropy: ${labels.length} labels for ${N} rows of logits`);
  const probs = allocLike(logits.dtype, logits.size);
  const total = kernels().softmaxCrossEntropy(logits.data, labels, N, C, probs);
  const out = allocLike(logits.dtype, 1);
  out[0] = total / N;
  return makeResult('crossEntropy', [], out, [logits], (g) => {
    const s = g[0] / N;
    const gx = probs.slice();
    for (let n = 0; n < N; n++) gx[n * C + labels[n]] -= 1;
    kernels().affine(gx, s, 0, gx);
    return [gx];
  });
}

/** Mean squared error between same-shape tensors. */
export function mse(pred: Tensor, target: Tensor): Tensor {
  if (pred.size !== target.size) throw new Error(`mse: shapes ${shapeStr(pred.shape)} and ${shapeStr(target.shape)} differ`);
  const n = pred.size;
  let s = 0;
  for (let i = 0; i < n; i++) { const d = pred.data[i] - target.data[i]; s += d * d; }
  const out = allocLike(pred.dtype, 1);
  out[0] = s / n;
  return makeResult('mse', [], out, [pred, target], (g) => {
    const k = (2 * g[0]) / n;
    const gp = allocLike(pred.dtype, n);
    for (let i = 0; i < n; i++) gp[i] = k * (pred.data[i] - target.data[i]);
    let gt: FloatArray | null = null;
    if (target.requiresGrad) {
      gt = allocLike(pred.dtype, n);
      kernels().affine(gp, -1, 0, gt);
    }
    return [pred.requiresGrad ? gp : null, gt];
  });
}
