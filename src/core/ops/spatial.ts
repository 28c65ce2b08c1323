/**
 * Spatial ops of imported graphs: ONNX Pad (constant / reflect / edge, negative pads crop), general
 * 2-D pooling (MaxPool / AveragePool with asymmetric pads, dilation, ceil_mode, count_include_pad)
 * and Resize (nearest, bilinear), each with its gradient. Plain TS loops (both backends), except
 * that pool2d hands the square, symmetric cases F.maxPool2d / F.avgPool2d cover to the same kernels.
 */
import { kernels } from '../backend/index.js';
import type { FloatArray, PoolGeometry } from '../backend/types.js';
import { allocLike, allocUninit, makeResult, numel, shapeStr, Tensor } from '../tensor.js';

export type PadMode = 'constant' | 'reflect' | 'edge';

/** Source index of each output position along one axis (-1: outside, takes the constant). */
function padMap(op: string, len: number, begin: number, end: number, mode: PadMode): Int32Array {
  const outLen = len + begin + end;
  const map = new Int32Array(outLen);
  if (mode !== 'constant' && len === 0 && outLen > 0) throw new Error(`${op}: ${mode} padding of an empty axis`);
  if (mode === 'reflect' && (begin >= len || end >= len) && len > 0 && (begin > 0 || end > 0)) {
    throw new Error(`${op}: reflect pads (${begin}, ${end}) must be smaller than the axis length ${len}`);
  }
  for (let o = 0; o < outLen; o++) {
    let i = o - begin;
    if (i < 0 || i >= len) {
      if (mode === 'constant') i = -1;
      else if (mode === 'edge') i = i < 0 ? 0 : len - 1;
      else if (len === 1) i = 0;
      else {
        const period = 2 * (len - 1);
        i = ((i % period) + period) % period;
        if (i >= len) i = period - i;
      }
    }
    map[o] = i;
  }
  return map;
}

/**
 * ONNX Pad: pads = [x1_begin, x2_begin, …, x1_end, x2_end, …] over all axes; negative pads crop.
 * 'constant' fills with `value`; 'reflect' mirrors without repeating the edge (NumPy reflect);
 * 'edge' repeats the edge value. The gradient adds each output's gradient to its source.
 */
export function pad(x: Tensor, pads: readonly number[], value = 0, mode: PadMode = 'constant'): Tensor {
  const nd = x.ndim;
  if (pads.length !== 2 * nd || pads.some((p) => !Number.isInteger(p))) {
    throw new Error(`pad: pads [${pads.join(', ')}] must be ${2 * nd} integers for ${shapeStr(x.shape)}`);
  }
  if (mode !== 'constant' && mode !== 'reflect' && mode !== 'edge') throw new Error(`pad: unknown mode ${String(mode)}`);
  const shape = x.shape.map((d, i) => d + pads[i] + pads[i + nd]);
  if (shape.some((d) => d < 0)) throw new Error(`pad: pads [${pads.join(', ')}] crop more than ${shapeStr(x.shape)} holds`);
  const maps = x.shape.map((d, i) => padMap('pad', d, pads[i], pads[i + nd], mode));
  const inStrides = new Array<number>(nd);
  for (let i = nd - 1, s = 1; i >= 0; i--) { inStrides[i] = s; s *= x.shape[i]; }
  const n = numel(shape);
  const src = padSources(shape, maps, inStrides);
  const y = allocUninit(x.dtype, n);
  gatherOrFill(x.data, src, y, value);
  return makeResult('pad', shape, y, [x], (g) => {
    const gx = allocLike(x.dtype, x.size);
    scatterAddBySource(g, src, gx);
    return [gx];
  });
}

/*
 * The hot loops live in small functions of their own (as the kernels do): inline in a large op
 * function they deoptimise on every call as the closures and array kinds around them change.
 */

/**
 * src[o] = flat input index of output o, or -1 for a constant cell: an odometer over the output
 * rows (all axes but the last), each row filled from the last axis's map.
 */
function padSources(shape: readonly number[], maps: Int32Array[], inStrides: readonly number[]): Int32Array {
  const nd = shape.length;
  const n = numel(shape);
  const src = new Int32Array(n);
  if (nd === 0) return src;
  if (n === 0) return src;
  const last = maps[nd - 1];
  const rowLen = last.length;
  const rows = n / rowLen;
  const idx = new Int32Array(Math.max(nd - 1, 1));
  for (let r = 0; r < rows; r++) {
    let base = 0;
    for (let d = 0; d < nd - 1 && base >= 0; d++) {
      const s = maps[d][idx[d]];
      base = s < 0 ? -1 : base + s * inStrides[d];
    }
    const o = r * rowLen;
    if (base < 0) src.fill(-1, o, o + rowLen);
    else for (let k = 0; k < rowLen; k++) src[o + k] = last[k] < 0 ? -1 : base + last[k];
    for (let d = nd - 2; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return src;
}

function gatherOrFill(x: FloatArray, src: Int32Array, y: FloatArray, value: number): void {
  for (let i = 0; i < y.length; i++) { const s = src[i]; y[i] = s >= 0 ? x[s] : value; }
}

function scatterAddBySource(g: FloatArray, src: Int32Array, gx: FloatArray): void {
  for (let i = 0; i < g.length; i++) { const s = src[i]; if (s >= 0) gx[s] += g[i]; }
}

export interface Pool2dOptions {
  kind: 'max' | 'avg';
  kernel: readonly [number, number];
  /** Default: 1 on both axes (ONNX's default). */
  stride?: readonly [number, number];
  /** [top, left, bottom, right]; default none. */
  padding?: readonly [number, number, number, number];
  dilation?: readonly [number, number];
  /** Output size rounds up; the last window must still start inside the input or the top/left padding. */
  ceilMode?: boolean;
  /** Average pooling: whether padded cells count in the divisor (ONNX default false). */
  countIncludePad?: boolean;
}

/** Output length of one pooled axis (ONNX / PyTorch rule, ceil_mode included). */
function pooledLen(len: number, k: number, s: number, p0: number, p1: number, d: number, ceil: boolean): number {
  const span = len + p0 + p1 - ((k - 1) * d + 1);
  if (span < 0) return 0;
  let out = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  if (ceil && (out - 1) * s >= len + p0) out--;
  return out;
}

/**
 * 2-D max or average pooling of NCHW input with ONNX MaxPool / AveragePool semantics: max pools
 * ignore padding (pads with −∞); average pools divide by the number of input cells in the window,
 * or with countIncludePad by the cells inside the padded input (ceil-mode overhang never counts).
 */
export function pool2d(x: Tensor, opts: Pool2dOptions): Tensor {
  const { kind } = opts;
  const [kh, kw] = opts.kernel;
  const [sh, sw] = opts.stride ?? [1, 1];
  const [pt, pl, pb, pr] = opts.padding ?? [0, 0, 0, 0];
  const [dh, dw] = opts.dilation ?? [1, 1];
  const ceil = opts.ceilMode ?? false;
  const includePad = opts.countIncludePad ?? false;
  const desc = `kernel [${kh}, ${kw}], stride [${sh}, ${sw}], padding [${pt}, ${pl}, ${pb}, ${pr}], dilation [${dh}, ${dw}]`;
  if (kind !== 'max' && kind !== 'avg') throw new Error(`pool2d: kind must be 'max' or 'avg', got ${String(kind)}`);
  if (x.ndim !== 4) throw new Error(`pool2d: expects [N,C,H,W], got ${shapeStr(x.shape)}`);
  const ints = [kh, kw, sh, sw, dh, dw];
  if (ints.some((v) => !(Number.isInteger(v) && v >= 1)) || [pt, pl, pb, pr].some((v) => !(Number.isInteger(v) && v >= 0))) {
    throw new Error(`pool2d: invalid ${desc}`);
  }
  const [N, C, H, W] = x.shape;
  const OH = pooledLen(H, kh, sh, pt, pb, dh, ceil);
  const OW = pooledLen(W, kw, sw, pl, pr, dw, ceil);
  if (OH < 1 || OW < 1) throw new Error(`pool2d: ${desc} does not fit input ${shapeStr(x.shape)}`);
  const shape = [N, C, OH, OW];

  // The square, symmetric, undilated windows F.maxPool2d / F.avgPool2d cover run on their kernels.
  const p = pt;
  if (kh === kw && sh === sw && pl === p && pb === p && pr === p && dh === 1 && dw === 1 && 2 * p <= kh
    && OH === Math.floor((H + 2 * p - kh) / sh) + 1 && OW === Math.floor((W + 2 * p - kw) / sw) + 1
    && (kind === 'max' || includePad || p === 0)) {
    const g: PoolGeometry = { N, C, H, W, K: kh, stride: sh, pad: p, OH, OW };
    if (kind === 'max') {
      const out = allocUninit(x.dtype, N * C * OH * OW);
      const arg = new Int32Array(out.length);
      kernels().maxPool2dForward(x.data, out, arg, g);
      return makeResult('pool2d', shape, out, [x], (grad) => {
        const dx = allocUninit(x.dtype, x.size);
        kernels().maxPool2dBackward(grad, arg, dx, g);
        return [dx];
      });
    }
    const out = allocLike(x.dtype, N * C * OH * OW);
    kernels().avgPool2dForward(x.data, out, g);
    return makeResult('pool2d', shape, out, [x], (grad) => {
      const dx = allocLike(x.dtype, x.size);
      kernels().avgPool2dBackward(grad, dx, g);
      return [dx];
    });
  }

  // Per output row / column: the taps that fall inside the input, and (avg) the divisor count.
  const taps = (outLen: number, len: number, k: number, s: number, p0: number, p1: number, d: number) => {
    const idx: number[][] = [];
    const padded = new Int32Array(outLen);
    for (let o = 0; o < outLen; o++) {
      const row: number[] = [];
      let inPad = 0;
      for (let t = 0; t < k; t++) {
        const i = o * s - p0 + t * d;
        if (i >= 0 && i < len) row.push(i);
        if (i >= -p0 && i < len + p1) inPad++;
      }
      idx.push(row);
      padded[o] = inPad;
    }
    return { idx, padded };
  };
  const th = taps(OH, H, kh, sh, pt, pb, dh);
  const tw = taps(OW, W, kw, sw, pl, pr, dw);
  const xd = x.data;
  const out = allocUninit(x.dtype, N * C * OH * OW);
  if (kind === 'max') {
    const arg = new Int32Array(out.length);
    for (let q = 0; q < N * C; q++) {
      const xb = q * H * W;
      for (let oh = 0; oh < OH; oh++) {
        const rows = th.idx[oh];
        for (let ow = 0; ow < OW; ow++) {
          const cols = tw.idx[ow];
          let best = -Infinity;
          let at = -1;
          for (const ih of rows) {
            for (const iw of cols) {
              const v = xd[xb + ih * W + iw];
              if (at < 0 || v > best || Number.isNaN(v)) { best = v; at = xb + ih * W + iw; }
            }
          }
          const oi = (q * OH + oh) * OW + ow;
          out[oi] = best;
          arg[oi] = at;
        }
      }
    }
    return makeResult('pool2d', shape, out, [x], (grad) => {
      const dx = allocLike(x.dtype, x.size);
      for (let i = 0; i < arg.length; i++) if (arg[i] >= 0) dx[arg[i]] += grad[i];
      return [dx];
    });
  }
  const inv = new Float64Array(OH * OW);
  for (let oh = 0; oh < OH; oh++) {
    for (let ow = 0; ow < OW; ow++) {
      const count = includePad ? th.padded[oh] * tw.padded[ow] : th.idx[oh].length * tw.idx[ow].length;
      inv[oh * OW + ow] = count > 0 ? 1 / count : 0;
    }
  }
  for (let q = 0; q < N * C; q++) {
    const xb = q * H * W;
    for (let oh = 0; oh < OH; oh++) {
      const rows = th.idx[oh];
      for (let ow = 0; ow < OW; ow++) {
        const cols = tw.idx[ow];
        let s = 0;
        for (const ih of rows) for (const iw of cols) s += xd[xb + ih * W + iw];
        out[(q * OH + oh) * OW + ow] = s * inv[oh * OW + ow];
      }
    }
  }
  return makeResult('pool2d', shape, out, [x], (grad) => {
    const dx = allocLike(x.dtype, x.size);
    for (let q = 0; q < N * C; q++) {
      const xb = q * H * W;
      for (let oh = 0; oh < OH; oh++) {
        const rows = th.idx[oh];
        for (let ow = 0; ow < OW; ow++) {
          const cols = tw.idx[ow];
          const d = grad[(q * OH + oh) * OW + ow] * inv[oh * OW + ow];
          for (const ih of rows) for (const iw of cols) dx[xb + ih * W + iw] += d;
        }
      }
    }
    return [dx];
  });
}

function checkResize(op: string, x: Tensor, outH: number, outW: number): void {
  if (x.ndim !== 4) throw new Error(`${op}: expects [N,C,H,W], got ${shapeStr(x.shape)}`);
  if (!(Number.isInteger(outH) && outH >= 1 && Number.isInteger(outW) && outW >= 1)) {
    throw new Error(`${op}: invalid output size ${outH}×${outW} for ${shapeStr(x.shape)}`);
  }
  if (x.shape[2] === 0 || x.shape[3] === 0) throw new Error(`${op}: cannot resize the empty input ${shapeStr(x.shape)}`);
}

/**
 * Nearest-neighbour resize of NCHW input to outH×outW: source index floor(o · in / out) (ONNX
 * Resize mode nearest, coordinate_transformation_mode asymmetric, nearest_mode floor — what
 * PyTorch's F.interpolate(mode='nearest') exports). The gradient sums into each source pixel.
 */
export function resizeNearest(x: Tensor, outH: number, outW: number): Tensor {
  checkResize('resizeNearest', x, outH, outW);
  const [N, C, H, W] = x.shape;
  const hs = Int32Array.from({ length: outH }, (_, o) => Math.min(Math.floor((o * H) / outH), H - 1));
  const ws = Int32Array.from({ length: outW }, (_, o) => Math.min(Math.floor((o * W) / outW), W - 1));
  const xd = x.data;
  const out = allocUninit(x.dtype, N * C * outH * outW);
  for (let q = 0; q < N * C; q++) {
    for (let oh = 0; oh < outH; oh++) {
      const xr = (q * H + hs[oh]) * W;
      const orow = (q * outH + oh) * outW;
      for (let ow = 0; ow < outW; ow++) out[orow + ow] = xd[xr + ws[ow]];
    }
  }
  return makeResult('resizeNearest', [N, C, outH, outW], out, [x], (g) => {
    const dx = allocLike(x.dtype, x.size);
    for (let q = 0; q < N * C; q++) {
      for (let oh = 0; oh < outH; oh++) {
        const xr = (q * H + hs[oh]) * W;
        const orow = (q * outH + oh) * outW;
        for (let ow = 0; ow < outW; ow++) dx[xr + ws[ow]] += g[orow + ow];
      }
    }
    return [dx];
  });
}

/** Linear-interpolation taps of one axis: lower index, upper index, weight of the upper one. */
function linearTaps(len: number, outLen: number, alignCorners: boolean): { i0: Int32Array; i1: Int32Array; l1: Float64Array } {
  const i0 = new Int32Array(outLen);
  const i1 = new Int32Array(outLen);
  const l1 = new Float64Array(outLen);
  for (let o = 0; o < outLen; o++) {
    let src = alignCorners ? (outLen > 1 ? (o * (len - 1)) / (outLen - 1) : 0) : ((o + 0.5) * len) / outLen - 0.5;
    if (src < 0) src = 0;
    const lo = Math.min(Math.floor(src), len - 1);
    i0[o] = lo;
    i1[o] = Math.min(lo + 1, len - 1);
    l1[o] = Math.min(src - lo, 1);
  }
  return { i0, i1, l1 };
}

/**
 * Bilinear resize of NCHW input to outH×outW, PyTorch F.interpolate(mode='bilinear') semantics:
 * with alignCorners false the source coordinate is (o + ½)·in/out − ½ clamped at 0 (ONNX
 * half_pixel / pytorch_half_pixel), with alignCorners true o·(in − 1)/(out − 1). Edges repeat.
 */
export function resizeBilinear(x: Tensor, outH: number, outW: number, alignCorners: boolean): Tensor {
  checkResize('resizeBilinear', x, outH, outW);
  const [N, C, H, W] = x.shape;
  const th = linearTaps(H, outH, alignCorners);
  const tw = linearTaps(W, outW, alignCorners);
  const xd = x.data;
  const out = allocUninit(x.dtype, N * C * outH * outW);
  for (let q = 0; q < N * C; q++) {
    const xb = q * H * W;
    for (let oh = 0; oh < outH; oh++) {
      const r0 = xb + th.i0[oh] * W;
      const r1 = xb + th.i1[oh] * W;
      const b = th.l1[oh];
      const a = 1 - b;
      const orow = (q * outH + oh) * outW;
      for (let ow = 0; ow < outW; ow++) {
        const c0 = tw.i0[ow];
        const c1 = tw.i1[ow];
        const d = tw.l1[ow];
        const c = 1 - d;
        out[orow + ow] = a * (c * xd[r0 + c0] + d * xd[r0 + c1]) + b * (c * xd[r1 + c0] + d * xd[r1 + c1]);
      }
    }
  }
  return makeResult('resizeBilinear', [N, C, outH, outW], out, [x], (g) => {
    const dx = allocLike(x.dtype, x.size);
    for (let q = 0; q < N * C; q++) {
      const xb = q * H * W;
      for (let oh = 0; oh < outH; oh++) {
        const r0 = xb + th.i0[oh] * W;
        const r1 = xb + th.i1[oh] * W;
        const b = th.l1[oh];
        const a = 1 - b;
        const orow = (q * outH + oh) * outW;
        for (let ow = 0; ow < outW; ow++) {
          const gv = g[orow + ow];
          const c0 = tw.i0[ow];
          const c1 = tw.i1[ow];
          const d = tw.l1[ow];
          const c = 1 - d;
          dx[r0 + c0] += a * c * gv;
          dx[r0 + c1] += a * d * gv;
          dx[r1 + c0] += b * c * gv;
          dx[r1 + c1] += b * d * gv;
        }
      }
    }
    return [dx];
  });
}
