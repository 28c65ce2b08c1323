/**
 * The error function in double precision, and the exact GELU and its derivative built on it: the
 * numerics every backend shares. The JS kernels run these formulas; the native addon runs the same
 * formulas in C on this module's table (handed over at load) with V8's exp, so a float32 GELU or
 * softmax gradient is bit for bit the same on both backends.
 */

export const TWO_OVER_SQRT_PI = 1.1283791670955126; // 2/√π
const INV_SQRT_PI = 0.5641895835477563; // 1/√π

/**
 * erf(x) to double precision (|error| < 1e-15, far below the 1e-7 float32 needs), the slow reference
 * that builds erfFast's table: for |x| < 2 the
 * all-positive series erf(x) = 2x/√π · e^{−x²} · Σ (2x²)ⁿ / (1·3·…·(2n+1)) (no cancellation); for
 * 2 ≤ |x| < 6 erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))) evaluated by the
 * modified Lentz method; beyond 6, erf is ±1 in double precision (erfc(6) ≈ 2e−17).
 */
export function erfScalar(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  if (a >= 6) return x > 0 ? 1 : -1;
  const x2 = a * a;
  let r: number;
  if (a < 2) {
    let term = 1;
    let s = 1;
    const t = 2 * x2;
    for (let n = 1; n < 200; n++) {
      term *= t / (2 * n + 1);
      s += term;
      if (term < 1e-17 * s) break;
    }
    r = TWO_OVER_SQRT_PI * a * Math.exp(-x2) * s;
  } else {
    // Continued fraction b0 + a1/(b1 + a2/(b2 + …)) with b = x, a_k = k/2 (Lentz).
    const tiny = 1e-300;
    let f = a;
    let C = a;
    let D = 0;
    for (let k = 1; k < 500; k++) {
      const ak = k / 2;
      D = a + ak * D;
      if (D === 0) D = tiny;
      C = a + ak / C;
      if (C === 0) C = tiny;
      D = 1 / D;
      const delta = C * D;
      f *= delta;
      if (Math.abs(delta - 1) < 1e-16) break;
    }
    r = 1 - (INV_SQRT_PI * Math.exp(-x2)) / f;
  }
  return x < 0 ? -r : r;
}

/** Grid of the erf table: knots at i / ERF_STEPS on [0, 6], a Taylor polynomial of degree ERF_DEG at each. */
const ERF_STEPS = 32;
const ERF_DEG = 8;

/**
 * Taylor coefficients of erf at every knot x₀ = i/32 of [0, 6] (built once from erfScalar):
 * c₀ = erf(x₀), c_k = erf⁽ᵏ⁾(x₀)/k! with erf⁽ᵏ⁾(x) = 2/√π · (−1)^(k−1) H_(k−1)(x) e^{−x²}
 * (physicists' Hermite polynomials). With |x − x₀| ≤ 1/64 the degree-8 remainder is below 1e−16.
 */
export const ERF_TABLE: Float64Array = (() => {
  const n = 6 * ERF_STEPS + 1;
  const t = new Float64Array(n * (ERF_DEG + 1));
  for (let i = 0; i < n; i++) {
    const x0 = i / ERF_STEPS;
    const base = i * (ERF_DEG + 1);
    t[base] = erfScalar(x0);
    const g = TWO_OVER_SQRT_PI * Math.exp(-x0 * x0);
    let hPrev = 0; // H_(k−2)
    let h = 1; // H_(k−1)
    let fact = 1;
    for (let k = 1; k <= ERF_DEG; k++) {
      fact *= k;
      t[base + k] = ((k % 2 === 1 ? 1 : -1) * h * g) / fact;
      const next = 2 * x0 * h - 2 * (k - 1) * hPrev; // H_k
      hPrev = h;
      h = next;
    }
  }
  return t;
})();

/** erf by the Taylor table (about 20 flops; agrees with erfScalar to ~1e−16). */
export function erfFast(x: number): number {
  const a = Math.abs(x);
  if (!(a < 6)) return Number.isNaN(x) ? NaN : x > 0 ? 1 : -1;
  const i = Math.round(a * ERF_STEPS);
  const d = a - i / ERF_STEPS;
  const b = i * (ERF_DEG + 1);
  const t = ERF_TABLE;
  const r = t[b] + d * (t[b + 1] + d * (t[b + 2] + d * (t[b + 3] + d * (t[b + 4] + d * (t[b + 5] + d * (t[b + 6] + d * (t[b + 7] + d * t[b + 8])))))));
  return x < 0 ? -r : r;
}

const SQRT_HALF = Math.SQRT1_2;
const INV_SQRT_2PI = 0.3989422804014327; // 1/√(2π)

/** GELU(v) = v·Φ(v) = ½v(1 + erf(v/√2)), in double. */
export function geluScalar(v: number): number {
  return 0.5 * v * (1 + erfFast(v * SQRT_HALF));
}

/** GELU′(v) = Φ(v) + v·φ(v), in double. */
export function geluDerivative(v: number): number {
  return 0.5 * (1 + erfFast(v * SQRT_HALF)) + v * INV_SQRT_2PI * Math.exp(-0.5 * v * v);
}
