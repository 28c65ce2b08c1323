/**
 * The general 2-D convolution behind F.conv2d for what the conv kernels do not cover: rectangular
 * stride, dilation, asymmetric padding and groups. Grouped convolutions run a TS im2col per group
 * and the backend's gemm (native sgemm for float32); depthwise ones (one input channel per group,
 * MobileNet / ConvNeXt) a direct loop, which beats groups × tiny gemms.
 */
import { kernels } from '../backend/index.js';
import type { FloatArray } from '../backend/types.js';
import { allocLike, allocUninit, makeResult, Tensor } from '../tensor.js';

/** Everything the general path needs to know about one convolution. */
export interface ConvPlan {
  N: number; C: number; H: number; W: number;
  O: number; KH: number; KW: number;
  sh: number; sw: number;
  /** Padding: top, left (bottom/right only enter through OH/OW). */
  pt: number; pl: number;
  dh: number; dw: number;
  groups: number;
  OH: number; OW: number;
}

/** im2col of input channels [c0, c0 + Cg) of image n: col[(c·KH + kh)·KW + kw, oh·OW + ow]. */
function im2colGroup(x: FloatArray, xOff: number, Cg: number, col: FloatArray, p: ConvPlan): void {
  const { H, W, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW } = p;
  const L = OH * OW;
  for (let c = 0; c < Cg; c++) {
    for (let kh = 0; kh < KH; kh++) {
      for (let kw = 0; kw < KW; kw++) {
        const row = ((c * KH + kh) * KW + kw) * L;
        const dwOff = kw * dw - pl;
        for (let oh = 0; oh < OH; oh++) {
          const ih = oh * sh - pt + kh * dh;
          const r = row + oh * OW;
          if (ih < 0 || ih >= H) { for (let ow = 0; ow < OW; ow++) col[r + ow] = 0; continue; }
          const xr = xOff + (c * H + ih) * W;
          for (let ow = 0; ow < OW; ow++) {
            const iw = ow * sw + dwOff;
            col[r + ow] = iw >= 0 && iw < W ? x[xr + iw] : 0;
          }
        }
      }
    }
  }
}

/** Adjoint of im2colGroup: accumulates col into dx. */
function col2imGroup(col: FloatArray, dx: FloatArray, dxOff: number, Cg: number, p: ConvPlan): void {
  const { H, W, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW } = p;
  const L = OH * OW;
  for (let c = 0; c < Cg; c++) {
    for (let kh = 0; kh < KH; kh++) {
      for (let kw = 0; kw < KW; kw++) {
        const row = ((c * KH + kh) * KW + kw) * L;
        const dwOff = kw * dw - pl;
        for (let oh = 0; oh < OH; oh++) {
          const ih = oh * sh - pt + kh * dh;
          if (ih < 0 || ih >= H) continue;
          const xr = dxOff + (c * H + ih) * W;
          const r = row + oh * OW;
          for (let ow = 0; ow < OW; ow++) {
            const iw = ow * sw + dwOff;
            if (iw >= 0 && iw < W) dx[xr + iw] += col[r + ow];
          }
        }
      }
    }
  }
}

/** The range [lo, hi) of output columns whose tap kw falls inside the input. */
function validCols(p: ConvPlan, kw: number): [number, number] {
  const off = kw * p.dw - p.pl; // iw = ow·sw + off
  const lo = Math.max(0, Math.ceil(-off / p.sw));
  const hi = Math.min(p.OW, Math.floor((p.W - 1 - off) / p.sw) + 1);
  return [lo, Math.max(lo, hi)];
}

/** Depthwise forward (one input channel per group): out[n, o] = Σ w[o] ⋆ x[n, o / m], m = O / C. */
function depthwiseForward(x: FloatArray, w: FloatArray, bias: FloatArray | null, out: FloatArray, p: ConvPlan): void {
  const { N, C, H, W, O, KH, KW, sh, sw, pt, dh, OH, OW } = p;
  const m = O / C;
  const L = OH * OW;
  const cols = Array.from({ length: KW }, (_, kw) => validCols(p, kw));
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      const xb = (n * C + Math.floor(o / m)) * H * W;
      const ob = (n * O + o) * L;
      out.fill(bias ? bias[o] : 0, ob, ob + L);
      for (let kh = 0; kh < KH; kh++) {
        for (let kw = 0; kw < KW; kw++) {
          const wv = w[(o * KH + kh) * KW + kw];
          const [lo, hi] = cols[kw];
          const off = kw * p.dw - p.pl;
          for (let oh = 0; oh < OH; oh++) {
            const ih = oh * sh - pt + kh * dh;
            if (ih < 0 || ih >= H) continue;
            const xr = xb + ih * W + off;
            const orow = ob + oh * OW;
            for (let ow = lo; ow < hi; ow++) out[orow + ow] += wv * x[xr + ow * sw];
          }
        }
      }
    }
  }
}

/** Depthwise backward: overwrites whichever of dx, dw, db is non-null. */
function depthwiseBackward(x: FloatArray, w: FloatArray, dy: FloatArray,
  dx: FloatArray | null, dW: FloatArray | null, db: FloatArray | null, p: ConvPlan): void {
  if (dx) { dx.fill(0); depthwiseBackwardInput(w, dy, dx, p); }
  if (dW) depthwiseBackwardWeight(x, dy, dW, p);
  if (db) {
    const L = p.OH * p.OW;
    db.fill(0);
    for (let n = 0; n < p.N; n++) {
      for (let o = 0; o < p.O; o++) { let s = 0; const ob = (n * p.O + o) * L; for (let l = 0; l < L; l++) s += dy[ob + l]; db[o] += s; }
    }
  }
}

/** dx[n, c] += Σ_taps w · dy over the output channels of input channel c (dx cleared by the caller). */
function depthwiseBackwardInput(w: FloatArray, dy: FloatArray, dx: FloatArray, p: ConvPlan): void {
  const { N, C, H, W, O, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW } = p;
  const m = O / C;
  const L = OH * OW;
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      const xb = (n * C + Math.floor(o / m)) * H * W;
      const ob = (n * O + o) * L;
      for (let kh = 0; kh < KH; kh++) {
        for (let kw = 0; kw < KW; kw++) {
          const wv = w[(o * KH + kh) * KW + kw];
          const off = kw * dw - pl;
          const lo = Math.max(0, Math.ceil(-off / sw));
          const hi = Math.min(OW, Math.floor((W - 1 - off) / sw) + 1);
          for (let oh = 0; oh < OH; oh++) {
            const ih = oh * sh - pt + kh * dh;
            if (ih < 0 || ih >= H) continue;
            const xr = xb + ih * W + off;
            const orow = ob + oh * OW;
            for (let ow = lo; ow < hi; ow++) dx[xr + ow * sw] += wv * dy[orow + ow];
          }
        }
      }
    }
  }
}

/** dW[o, kh, kw] = Σ_n Σ_out dy · x at the tap (overwritten). */
function depthwiseBackwardWeight(x: FloatArray, dy: FloatArray, dW: FloatArray, p: ConvPlan): void {
  const { N, C, H, W, O, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW } = p;
  const m = O / C;
  const L = OH * OW;
  dW.fill(0);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      const xb = (n * C + Math.floor(o / m)) * H * W;
      const ob = (n * O + o) * L;
      for (let kh = 0; kh < KH; kh++) {
        for (let kw = 0; kw < KW; kw++) {
          const off = kw * dw - pl;
          const lo = Math.max(0, Math.ceil(-off / sw));
          const hi = Math.min(OW, Math.floor((W - 1 - off) / sw) + 1);
          let acc = 0;
          for (let oh = 0; oh < OH; oh++) {
            const ih = oh * sh - pt + kh * dh;
            if (ih < 0 || ih >= H) continue;
            const xr = xb + ih * W + off;
            const orow = ob + oh * OW;
            for (let ow = lo; ow < hi; ow++) acc += dy[orow + ow] * x[xr + ow * sw];
          }
          dW[(o * KH + kh) * KW + kw] += acc;
        }
      }
    }
  }
}

/** Grouped forward: per image and group, im2col then gemm into the group's output channels. */
function groupedForward(x: FloatArray, w: FloatArray, bias: FloatArray | null, out: FloatArray, p: ConvPlan): void {
  const { N, C, H, W, O, KH, KW, groups, OH, OW } = p;
  const Cg = C / groups;
  const Og = O / groups;
  const Kg = Cg * KH * KW;
  const L = OH * OW;
  const col = allocUninit(x instanceof Float64Array ? 'float64' : 'float32', Kg * L);
  const K = kernels();
  for (let n = 0; n < N; n++) {
    for (let gi = 0; gi < groups; gi++) {
      im2colGroup(x, (n * C + gi * Cg) * H * W, Cg, col, p);
      K.gemm(false, false, Og, L, Kg, 1, w, gi * Og * Kg, Kg, col, 0, L, 0, out, (n * O + gi * Og) * L, L);
    }
    if (bias) for (let o = 0; o < O; o++) { const b = bias[o]; const r = (n * O + o) * L; for (let l = 0; l < L; l++) out[r + l] += b; }
  }
}

function groupedBackward(x: FloatArray, w: FloatArray, dy: FloatArray,
  dx: FloatArray | null, dW: FloatArray | null, db: FloatArray | null, p: ConvPlan): void {
  const { N, C, H, W, O, KH, KW, groups, OH, OW } = p;
  const Cg = C / groups;
  const Og = O / groups;
  const Kg = Cg * KH * KW;
  const L = OH * OW;
  const col = allocUninit(x instanceof Float64Array ? 'float64' : 'float32', Kg * L);
  const K = kernels();
  dx?.fill(0);
  dW?.fill(0);
  db?.fill(0);
  for (let n = 0; n < N; n++) {
    for (let gi = 0; gi < groups; gi++) {
      const yOff = (n * O + gi * Og) * L;
      const xOff = (n * C + gi * Cg) * H * W;
      if (dW) {
        im2colGroup(x, xOff, Cg, col, p);
        K.gemm(false, true, Og, Kg, L, 1, dy, yOff, L, col, 0, L, 1, dW, gi * Og * Kg, Kg);
      }
      if (dx) {
        K.gemm(true, false, Kg, L, Og, 1, w, gi * Og * Kg, Kg, dy, yOff, L, 0, col, 0, L);
        col2imGroup(col, dx, xOff, Cg, p);
      }
    }
    if (db) for (let o = 0; o < O; o++) { let s = 0; const r = (n * O + o) * L; for (let l = 0; l < L; l++) s += dy[r + l]; db[o] += s; }
  }
}

/**
 * The general convolution as a differentiable op (shapes already checked by F.conv2d). With
 * `relu`, the output is max(0, ·) and the backward masks the gradient where the output is 0.
 */
export function convGeneral(x: Tensor, w: Tensor, b: Tensor | null, p: ConvPlan, relu: boolean): Tensor {
  const depthwise = p.C === p.groups;
  const out = allocUninit(x.dtype, p.N * p.O * p.OH * p.OW);
  if (depthwise) depthwiseForward(x.data, w.data, b ? b.data : null, out, p);
  else groupedForward(x.data, w.data, b ? b.data : null, out, p);
  if (relu) for (let i = 0; i < out.length; i++) if (!(out[i] > 0)) out[i] = 0;
  const inputs = b ? [x, w, b] : [x, w];
  return makeResult(relu ? 'conv2d+relu' : 'conv2d', [p.N, p.O, p.OH, p.OW], out, inputs, (grad) => {
    let dy = grad;
    if (relu) {
      dy = allocUninit(x.dtype, grad.length);
      for (let i = 0; i < grad.length; i++) dy[i] = out[i] > 0 ? grad[i] : 0;
    }
    const dx = x.requiresGrad ? allocUninit(x.dtype, x.size) : null;
    const dw = w.requiresGrad ? allocLike(x.dtype, w.size) : null;
    const db = b && b.requiresGrad ? allocLike(x.dtype, p.O) : null;
    if (depthwise) depthwiseBackward(x.data, w.data, dy, dx, dw, db, p);
    else groupedBackward(x.data, w.data, dy, dx, dw, db, p);
    return b ? [dx, dw, db] : [dx, dw];
  });
}
