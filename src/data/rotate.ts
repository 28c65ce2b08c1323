/**
 * Image rotation for Rotated MNIST: about the image centre ((h−1)/2, (w−1)/2), same size, zero
 * fill, bilinear. Matches scipy.ndimage.rotate(x, angle, reshape=False, order=1) up to float
 * rounding; the reference's cubic spline (order=3) is not reproduced (bilinear is our documented
 * choice). Positive angles turn the picture counter-clockwise as displayed (row 0 at the top),
 * the same direction as scipy.
 */
import type { Dataset } from './dataset.js';

/**
 * 'bilinear' (default) = scipy order=1. 'nearest' = PIL's Image.rotate(NEAREST), which is what
 * Avalanche's RotatedMNIST (torchvision RandomRotation) applies in RebasinIL.
 */
export type Interpolation = 'bilinear' | 'nearest';

/** Gather table: output pixel p = Σ_q wt[taps·p+q] · in[idx[taps·p+q]]. */
interface Table {
  taps: 1 | 4;
  idx: Int32Array;
  wt: Float64Array;
}

/** Snap to an integer when within rounding noise, so right angles become exact permutations. */
function snap(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - r) < 1e-9 ? r : v;
}

/**
 * Per output pixel, 4 source indices and bilinear weights (out-of-image neighbours get weight 0).
 * Built once per angle and shared by every image.
 */
function bilinearTable(h: number, w: number, angleDegrees: number): Table {
  const a = (angleDegrees * Math.PI) / 180;
  const cos = Math.cos(a);
  const sin = Math.sin(a);
  const cy = (h - 1) / 2;
  const cx = (w - 1) / 2;
  const idx = new Int32Array(4 * h * w);
  const wt = new Float64Array(4 * h * w);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      // Output (r, c) samples the source point rotated back by −θ; y axis points up on screen.
      const dx = c - cx;
      const dy = cy - r;
      const sc = snap(cx + dx * cos + dy * sin);
      const sr = snap(cy - (-dx * sin + dy * cos));
      const r0 = Math.floor(sr);
      const c0 = Math.floor(sc);
      const fr = sr - r0;
      const fc = sc - c0;
      const k = 4 * (r * w + c);
      const corners: [number, number, number][] = [
        [r0, c0, (1 - fr) * (1 - fc)],
        [r0, c0 + 1, (1 - fr) * fc],
        [r0 + 1, c0, fr * (1 - fc)],
        [r0 + 1, c0 + 1, fr * fc],
      ];
      // Like scipy's mode='constant': a source point outside the pixel-centre grid gives 0
      // (no blending with the fill value inside the last half pixel).
      const valid = sr >= 0 && sr <= h - 1 && sc >= 0 && sc <= w - 1;
      for (let q = 0; q < 4; q++) {
        const [rr, cc, ww] = corners[q];
        const inside = valid && rr >= 0 && rr < h && cc >= 0 && cc < w;
        idx[k + q] = inside ? rr * w + cc : 0;
        wt[k + q] = inside ? ww : 0;
      }
    }
  }
  return { taps: 4, idx, wt };
}

/**
 * Nearest-neighbour table reproducing PIL's Image.rotate(angle, NEAREST) (Pillow 9.x), which
 * torchvision's RandomRotation((a, a)) calls and Avalanche's RotatedMNIST uses: the same
 * 15-decimal rounded matrix about (w/2, h/2) in pixel-corner coordinates and the same 16.16
 * fixed-point stepping, so ties fall the same way. The angle is first rounded to float32, as
 * torch draws it from a float32 tensor.
 */
function pilNearestTable(h: number, w: number, angleDegrees: number): Table | null {
  const ang = ((Math.fround(angleDegrees) % 360) + 360) % 360;
  // PIL uses exact transposes for these; our snapped bilinear table is the same permutation.
  if (ang === 0 || ang === 180 || ((ang === 90 || ang === 270) && w === h)) return null;
  const rad = -(ang * (Math.PI / 180));
  const r15 = (v: number) => Number(v.toFixed(15));
  const m = [r15(Math.cos(rad)), r15(Math.sin(rad)), 0, r15(-Math.sin(rad)), r15(Math.cos(rad)), 0];
  const cx = w / 2;
  const cy = h / 2;
  m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
  m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
  const fix = (v: number) => Math.floor(v * 65536 + 0.5) | 0;
  const a0 = fix(m[0]);
  const a1 = fix(m[1]);
  const a3 = fix(m[3]);
  const a4 = fix(m[4]);
  let a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5);
  let a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
  const idx = new Int32Array(h * w);
  const wt = new Float64Array(h * w);
  for (let y = 0; y < h; y++) {
    let xx = a2;
    let yy = a5;
    for (let x = 0; x < w; x++) {
      const xin = xx >> 16;
      const yin = yy >> 16;
      if (xin >= 0 && xin < w && yin >= 0 && yin < h) {
        idx[y * w + x] = yin * w + xin;
        wt[y * w + x] = 1;
      }
      xx = (xx + a0) | 0;
      yy = (yy + a3) | 0;
    }
    a2 = (a2 + a1) | 0;
    a5 = (a5 + a4) | 0;
  }
  return { taps: 1, idx, wt };
}

/**
 * Rotates n images of h×w (sample-major in x) by angleDegrees; returns a new array. For
 * multi-channel images pass n·channels as n (each plane is rotated alike).
 */
export function rotateImages(
  x: Float32Array, n: number, h: number, w: number, angleDegrees: number, interpolation: Interpolation = 'bilinear',
): Float32Array {
  const hw = h * w;
  if (x.length !== n * hw) throw new Error(`rotateImages: x has ${x.length} floats, expected n×h×w = ${n}×${h}×${w} = ${n * hw}`);
  if (!Number.isFinite(angleDegrees)) throw new Error(`rotateImages: angle must be finite, got ${angleDegrees}`);
  const out = new Float32Array(x.length);
  if (interpolation !== 'bilinear' && interpolation !== 'nearest') throw new Error(`rotateImages: interpolation must be 'bilinear' or 'nearest', got '${interpolation}'`);
  const { taps, idx, wt } = (interpolation === 'nearest' ? pilNearestTable(h, w, angleDegrees) : null) ?? bilinearTable(h, w, angleDegrees);
  for (let i = 0; i < n; i++) {
    const base = i * hw;
    if (taps === 1) {
      for (let p = 0; p < hw; p++) out[base + p] = wt[p] * x[base + idx[p]];
      continue;
    }
    for (let p = 0, k = 0; p < hw; p++, k += 4) {
      out[base + p] =
        wt[k] * x[base + idx[k]] +
        wt[k + 1] * x[base + idx[k + 1]] +
        wt[k + 2] * x[base + idx[k + 2]] +
        wt[k + 3] * x[base + idx[k + 3]];
    }
  }
  return out;
}

/** Image planes and size from a sample shape: [c,h,w], [h,w], or [d] with d a perfect square. */
export function imageGeometry(sampleShape: number[]): { channels: number; h: number; w: number } {
  if (sampleShape.length === 3) return { channels: sampleShape[0], h: sampleShape[1], w: sampleShape[2] };
  if (sampleShape.length === 2) return { channels: 1, h: sampleShape[0], w: sampleShape[1] };
  if (sampleShape.length === 1) {
    const s = Math.round(Math.sqrt(sampleShape[0]));
    if (s * s === sampleShape[0]) return { channels: 1, h: s, w: s };
  }
  throw new Error(`cannot treat sampleShape [${sampleShape}] as images (need [c,h,w], [h,w] or a square [d])`);
}

/** A copy of `base` with every image rotated by `angle` degrees (labels unchanged). */
export function rotatedMnist(base: Dataset, angle: number, opts: { interpolation?: Interpolation } = {}): Dataset {
  const { channels, h, w } = imageGeometry(base.sampleShape);
  const x = rotateImages(base.x, base.n * channels, h, w, angle, opts.interpolation);
  const label = Number.isInteger(angle) ? String(angle) : angle.toFixed(2);
  return { ...base, name: `${base.name}-rot${label}`, x, sampleShape: [...base.sampleShape] };
}

/** `count` angles evenly spaced over [0, maxDegrees] inclusive, like numpy.linspace(0, 180, 20). */
export function rotationAngles(count = 20, maxDegrees = 180): number[] {
  if (!Number.isInteger(count) || count < 1) throw new Error(`rotationAngles: count must be a positive integer, got ${count}`);
  if (count === 1) return [0];
  return Array.from({ length: count }, (_, i) => (maxDegrees * i) / (count - 1));
}
