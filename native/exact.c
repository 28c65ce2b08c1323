/*
 * Kernels that compute a JS formula of the pure-TypeScript backend bit for bit: every operation in
 * double, in the JS expression's order (the build has -ffp-contract=off, so no fused multiply-add),
 * rounded to float once at the end, with V8's exp (below) where the JS calls Math.exp. GELU reads
 * the erf table of src/core/backend/erf.ts, handed over once at load (rb_set_erf_table). Results
 * therefore do not depend on the backend, and trained models stay the same when these ops move
 * from JS to C.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>

#include "rb.h"

/* ------------------------------------------------------------------------------------------------
 * exp as V8's Math.exp computes it (the fdlibm algorithm, which V8 ports): argument reduction
 * x = k·ln2 + r with ln2 split in a high and a low part, then a degree-5 rational correction.
 * ---------------------------------------------------------------------------------------------- */

static inline int32_t high_word(double x) {
  uint64_t u;
  memcpy(&u, &x, 8);
  return (int32_t)(u >> 32);
}

static inline double add_to_exponent(double y, int32_t k) {
  uint64_t u;
  memcpy(&u, &y, 8);
  u += (uint64_t)(int64_t)k << 52;
  memcpy(&y, &u, 8);
  return y;
}

static double exp_v8(double x) {
  static const double ln2_hi[2] = {6.93147180369123816490e-01, -6.93147180369123816490e-01};
  static const double ln2_lo[2] = {1.90821492927058770002e-10, -1.90821492927058770002e-10};
  static const double half[2] = {0.5, -0.5};
  const double inv_ln2 = 1.44269504088896338700e+00;
  const double P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03, P3 = 6.61375632143793436117e-05,
               P4 = -1.65339022054652515390e-06, P5 = 4.13813679705723846039e-08;
  int32_t h = high_word(x);
  int sign = (int)(((uint32_t)h >> 31) & 1);
  h &= 0x7fffffff;
  if (h >= 0x40862E42) { /* |x| ≥ 709.78 */
    if (isnan(x)) return x + x;
    if (h >= 0x7ff00000) return sign ? 0.0 : x; /* exp(+Inf) = +Inf, exp(-Inf) = 0 */
    if (x > 7.09782712893383973096e+02) return INFINITY;
    if (x < -7.45133219101941108420e+02) return 0.0;
  }
  double hi = 0, lo = 0;
  int k = 0;
  if (h > 0x3fd62e42) { /* |x| > ½ln2 */
    if (h < 0x3FF0A2B2) { /* and < 1.5 ln2 */
      hi = x - ln2_hi[sign];
      lo = ln2_lo[sign];
      k = 1 - sign - sign;
    } else {
      k = (int)(inv_ln2 * x + half[sign]);
      double t = k;
      hi = x - t * ln2_hi[0];
      lo = t * ln2_lo[0];
    }
    x = hi - lo;
  } else if (h < 0x3e300000) { /* |x| < 2^-28 */
    return 1.0 + x;
  }
  double t = x * x;
  double c = x - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
  if (k == 0) return 1.0 - ((x * c) / (c - 2.0) - x);
  double y = 1.0 - ((lo - (x * c) / (2.0 - c)) - hi);
  if (k >= -1021) return add_to_exponent(y, k);
  return add_to_exponent(y, k + 1000) * 9.33263618503218878990e-302; /* 2^-1000 */
}

/* ------------------------------------------------------------------------------------------------
 * erf by erf.ts's Taylor table, GELU and its derivative (erf.ts: erfFast, geluScalar, geluDerivative)
 * ---------------------------------------------------------------------------------------------- */

enum { ERF_STEPS = 32, ERF_DEG = 8, ERF_KNOTS = 6 * ERF_STEPS + 1 };
static double erf_table[ERF_KNOTS * (ERF_DEG + 1)];
static int erf_table_set = 0;

int rb_set_erf_table(const double *t, size_t n) {
  if (n != sizeof erf_table / sizeof erf_table[0]) return -1;
  memcpy(erf_table, t, sizeof erf_table);
  erf_table_set = 1;
  return 0;
}

int rb_erf_table_ready(void) { return erf_table_set; }

static inline double erf_fast(double x) {
  double a = fabs(x);
  if (!(a < 6)) return x != x ? x : x > 0 ? 1.0 : -1.0;
  /* Math.round(a·32): a·32 + ½ is exact below 2^47, so floor gives JS's round-half-up. */
  int i = (int)floor(a * ERF_STEPS + 0.5);
  double d = a - (double)i / ERF_STEPS;
  const double *t = erf_table + i * (ERF_DEG + 1);
  double r = t[0] + d * (t[1] + d * (t[2] + d * (t[3] + d * (t[4] + d * (t[5] + d * (t[6] + d * (t[7] + d * t[8])))))));
  return x < 0 ? -r : r;
}

static const double SQRT_HALF = 0.7071067811865476; /* Math.SQRT1_2 */
static const double INV_SQRT_2PI = 0.3989422804014327;

/* ------------------------------------------------------------------------------------------------
 * The same two functions on 4 doubles (AVX2): every lane takes the scalar code's path and does the
 * scalar code's operations (no FMA), so each lane's result has the scalar result's bits.
 * ---------------------------------------------------------------------------------------------- */

static inline __m256d abs4(__m256d x) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), x); }

/* erf_fast on 4 lanes. */
static inline __m256d erf_fast4(__m256d x) {
  __m256d a = abs4(x);
  __m256d in = _mm256_cmp_pd(a, _mm256_set1_pd(6.0), _CMP_LT_OQ); /* false for NaN */
  __m256d ac = _mm256_and_pd(a, in);                              /* 0 outside: a valid index */
  __m256d f = _mm256_floor_pd(_mm256_add_pd(_mm256_mul_pd(ac, _mm256_set1_pd(ERF_STEPS)), _mm256_set1_pd(0.5)));
  /* i/32 = i·(1/32) exactly (a power of two). */
  __m256d d = _mm256_sub_pd(ac, _mm256_mul_pd(f, _mm256_set1_pd(1.0 / ERF_STEPS)));
  /* Each lane's 9 coefficients are contiguous: two 4-wide loads per lane, transposed to 4 lanes per
   * coefficient (cheaper than 9 gathers), plus the last coefficient. */
  int idx[4];
  _mm_storeu_si128((__m128i *)idx, _mm_mullo_epi32(_mm256_cvttpd_epi32(f), _mm_set1_epi32(ERF_DEG + 1)));
  const double *t0 = erf_table + idx[0], *t1 = erf_table + idx[1], *t2 = erf_table + idx[2], *t3 = erf_table + idx[3];
  __m256d c[9];
  for (int h = 0; h < 2; h++) {
    __m256d r0 = _mm256_loadu_pd(t0 + 4 * h), r1 = _mm256_loadu_pd(t1 + 4 * h), r2 = _mm256_loadu_pd(t2 + 4 * h), r3 = _mm256_loadu_pd(t3 + 4 * h);
    __m256d lo01 = _mm256_unpacklo_pd(r0, r1), hi01 = _mm256_unpackhi_pd(r0, r1);
    __m256d lo23 = _mm256_unpacklo_pd(r2, r3), hi23 = _mm256_unpackhi_pd(r2, r3);
    c[4 * h + 0] = _mm256_permute2f128_pd(lo01, lo23, 0x20);
    c[4 * h + 1] = _mm256_permute2f128_pd(hi01, hi23, 0x20);
    c[4 * h + 2] = _mm256_permute2f128_pd(lo01, lo23, 0x31);
    c[4 * h + 3] = _mm256_permute2f128_pd(hi01, hi23, 0x31);
  }
  c[8] = _mm256_set_pd(t3[8], t2[8], t1[8], t0[8]);
  __m256d r = c[8];
  for (int k = 7; k >= 0; k--) r = _mm256_add_pd(c[k], _mm256_mul_pd(d, r));
  __m256d isnan = _mm256_cmp_pd(x, x, _CMP_UNORD_Q);
  __m256d out = _mm256_blendv_pd(_mm256_blendv_pd(_mm256_set1_pd(1.0), x, isnan), r, in);
  __m256d neg = _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_LT_OQ);
  return _mm256_blendv_pd(out, _mm256_xor_pd(out, _mm256_set1_pd(-0.0)), neg);
}

/* exp_v8 on 4 lanes whose arguments are ≤ 0 or NaN (the callers' case); *ok is false when a lane
 * is positive, and the caller then takes the scalar code for those 4. */
static inline __m256d exp_v8_nonpositive4(__m256d x, int *ok) {
  const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
  *ok = _mm256_movemask_pd(_mm256_cmp_pd(x, zero, _CMP_GT_OQ)) == 0;
  __m256i bits = _mm256_castpd_si256(x);
  __m256i h = _mm256_and_si256(_mm256_srli_epi64(bits, 32), _mm256_set1_epi64x(0x7fffffff)); /* |x|'s high word */
#define HGT(c) _mm256_castsi256_pd(_mm256_cmpgt_epi64(h, _mm256_set1_epi64x(c)))
  __m256d below_tiny = _mm256_xor_pd(HGT(0x3e2fffff), _mm256_castsi256_pd(_mm256_set1_epi64x(-1))); /* h < 0x3e300000 */
  __m256d reduce = HGT(0x3fd62e42);                                                                   /* h > 0x3fd62e42 */
  __m256d general = HGT(0x3FF0A2B1);                                                                  /* h ≥ 0x3FF0A2B2 */
  __m256d huge = HGT(0x40862E41);                                                                     /* h ≥ 0x40862E42 */
#undef HGT
  /* k: 0 without reduction, −1 for ½ln2 < |x| < 1.5ln2 (x < 0), else (int)(inv_ln2·x − ½). */
  __m256d kg = _mm256_round_pd(_mm256_sub_pd(_mm256_mul_pd(_mm256_set1_pd(1.44269504088896338700e+00), x), _mm256_set1_pd(0.5)),
                               _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  __m256d k = _mm256_blendv_pd(_mm256_set1_pd(-1.0), kg, general);
  k = _mm256_and_pd(k, reduce);
  /* hi = x − k·ln2_hi, lo = k·ln2_lo (k = −1: x − (−ln2_hi) and −ln2_lo, the scalar's table values). */
  __m256d hi = _mm256_sub_pd(x, _mm256_mul_pd(k, _mm256_set1_pd(6.93147180369123816490e-01)));
  __m256d lo = _mm256_mul_pd(k, _mm256_set1_pd(1.90821492927058770002e-10));
  __m256d xr = _mm256_blendv_pd(x, _mm256_sub_pd(hi, lo), reduce);
  __m256d t = _mm256_mul_pd(xr, xr);
  __m256d p = _mm256_set1_pd(4.13813679705723846039e-08);
  p = _mm256_add_pd(_mm256_set1_pd(-1.65339022054652515390e-06), _mm256_mul_pd(t, p));
  p = _mm256_add_pd(_mm256_set1_pd(6.61375632143793436117e-05), _mm256_mul_pd(t, p));
  p = _mm256_add_pd(_mm256_set1_pd(-2.77777777770155933842e-03), _mm256_mul_pd(t, p));
  p = _mm256_add_pd(_mm256_set1_pd(1.66666666666666019037e-01), _mm256_mul_pd(t, p));
  __m256d c = _mm256_sub_pd(xr, _mm256_mul_pd(t, p));
  /* q = (x·c)/(c − 2); the k ≠ 0 formula's (x·c)/(2 − c) is −q exactly (IEEE rounding is sign-symmetric). */
  __m256d q = _mm256_div_pd(_mm256_mul_pd(xr, c), _mm256_sub_pd(c, _mm256_set1_pd(2.0)));
  /* k = 0: 1 − ((x·c)/(c − 2) − x). */
  __m256d y0 = _mm256_sub_pd(one, _mm256_sub_pd(q, xr));
  /* k ≠ 0: 1 − ((lo − (x·c)/(2 − c)) − hi) = 1 − ((lo + q) − hi), then × 2^k by the exponent
   * (k < −1021: 2^(k+1000) · 2^−1000). */
  __m256d yk = _mm256_sub_pd(one, _mm256_sub_pd(_mm256_add_pd(lo, q), hi));
  __m128i k32 = _mm256_cvttpd_epi32(k);
  __m256i k64 = _mm256_cvtepi32_epi64(k32);
  __m256d deep = _mm256_cmp_pd(k, _mm256_set1_pd(-1021.0), _CMP_LT_OQ);
  __m256i shift = _mm256_add_epi64(k64, _mm256_and_si256(_mm256_castpd_si256(deep), _mm256_set1_epi64x(1000)));
  __m256d scaled = _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(yk), _mm256_slli_epi64(shift, 52)));
  scaled = _mm256_blendv_pd(scaled, _mm256_mul_pd(scaled, _mm256_set1_pd(9.33263618503218878990e-302)), deep);
  __m256d y = _mm256_blendv_pd(y0, scaled, _mm256_cmp_pd(k, zero, _CMP_NEQ_OQ));
  y = _mm256_blendv_pd(y, _mm256_add_pd(one, x), below_tiny);
  /* |x| ≥ 709.78: x < −745.13 (or −∞) gives 0; NaN gives NaN (x + x). */
  __m256d under = _mm256_and_pd(huge, _mm256_cmp_pd(x, _mm256_set1_pd(-7.45133219101941108420e+02), _CMP_LT_OQ));
  y = _mm256_andnot_pd(under, y);
  return _mm256_blendv_pd(y, _mm256_add_pd(x, x), _mm256_cmp_pd(x, x, _CMP_UNORD_Q));
}

/* js.ts's gelu and geluBackward per element (erf.ts: geluScalar, geluDerivative). */
static inline float gelu_one(float x) {
  double v = x;
  return (float)(0.5 * v * (1.0 + erf_fast(v * SQRT_HALF)));
}
static inline float gelu_backward_one(float x, float dy) {
  double v = x;
  double dv = 0.5 * (1.0 + erf_fast(v * SQRT_HALF)) + v * INV_SQRT_2PI * exp_v8(-0.5 * v * v);
  return (float)((double)dy * dv);
}

typedef struct {
  const float *x, *dy;
  float *out;
  size_t n;
} pointwise_job;

/* Elementwise passes this large are split over the pool (each element as in the serial loop). */
#define EXACT_PARALLEL_MIN ((size_t)1 << 15)

static void gelu_task(void *p, int tid, int nth) {
  pointwise_job *J = p;
  size_t lo, hi;
  rb_split_range(J->n, tid, nth, 4, &lo, &hi);
  size_t i = lo;
  for (; i + 4 <= hi; i += 4) {
    __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(J->x + i));
    __m256d e = erf_fast4(_mm256_mul_pd(v, _mm256_set1_pd(SQRT_HALF)));
    __m256d y = _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(0.5), v), _mm256_add_pd(_mm256_set1_pd(1.0), e));
    _mm_storeu_ps(J->out + i, _mm256_cvtpd_ps(y));
  }
  for (; i < hi; i++) J->out[i] = gelu_one(J->x[i]);
}

static void gelu_backward_task(void *p, int tid, int nth) {
  pointwise_job *J = p;
  size_t lo, hi;
  rb_split_range(J->n, tid, nth, 4, &lo, &hi);
  size_t i = lo;
  for (; i + 4 <= hi; i += 4) {
    __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(J->x + i));
    __m256d e = erf_fast4(_mm256_mul_pd(v, _mm256_set1_pd(SQRT_HALF)));
    int ok;
    __m256d ex = exp_v8_nonpositive4(_mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(-0.5), v), v), &ok);
    if (!ok) break; /* cannot happen (−½v² ≤ 0); the scalar loop finishes */
    __m256d dv = _mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(0.5), _mm256_add_pd(_mm256_set1_pd(1.0), e)),
                               _mm256_mul_pd(_mm256_mul_pd(v, _mm256_set1_pd(INV_SQRT_2PI)), ex));
    __m256d g = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(J->dy + i)), dv);
    _mm_storeu_ps(J->out + i, _mm256_cvtpd_ps(g));
  }
  for (; i < hi; i++) J->out[i] = gelu_backward_one(J->x[i], J->dy[i]);
}

static int threads_for(size_t n) { return n >= EXACT_PARALLEL_MIN ? rb_threads() : 1; }

void rb_gelu_f32(const float *x, float *out, size_t n) {
  pointwise_job J = {x, NULL, out, n};
  rb_parallel(threads_for(n), gelu_task, &J);
}

void rb_gelu_backward_f32(const float *x, const float *dy, float *dx, size_t n) {
  pointwise_job J = {x, dy, dx, n};
  rb_parallel(threads_for(n), gelu_backward_task, &J);
}

/* ------------------------------------------------------------------------------------------------
 * logsumexp's gradient (js.ts logsumexpBackward): gx = g · exp(x − lse), 0 where lse = −∞
 * ---------------------------------------------------------------------------------------------- */

typedef struct {
  const float *x, *lse, *g;
  float *gx;
  size_t outer, len, inner;
} lse_backward_job;

static inline void lse_backward_one(const lse_backward_job *J, size_t at, size_t r) {
  double m = J->lse[r];
  J->gx[at] = m == -INFINITY ? 0.0f : (float)((double)J->g[r] * exp_v8((double)J->x[at] - m));
}

static void lse_backward_task(void *p, int tid, int nth) {
  lse_backward_job *J = p;
  const size_t len = J->len, inner = J->inner;
  size_t lo, hi;
  rb_split_range(J->outer, tid, nth, 1, &lo, &hi);
  for (size_t o = lo; o < hi; o++) {
    if (inner == 1) { /* softmax over the last axis: one row, 4 positions at a time */
      size_t l = 0;
      double m = J->lse[o];
      if (m != -INFINITY) {
        __m256d m4 = _mm256_set1_pd(m), g4 = _mm256_set1_pd((double)J->g[o]);
        for (; l + 4 <= len; l += 4) {
          int ok;
          __m256d e = exp_v8_nonpositive4(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(J->x + o * len + l)), m4), &ok);
          if (!ok) break; /* a position above the logsumexp: the scalar loop takes the rest */
          _mm_storeu_ps(J->gx + o * len + l, _mm256_cvtpd_ps(_mm256_mul_pd(g4, e)));
        }
      }
      for (; l < len; l++) lse_backward_one(J, o * len + l, o);
      continue;
    }
    for (size_t l = 0; l < len; l++) { /* 4 reduced positions i at a time */
      size_t base = (o * len + l) * inner, i = 0;
      for (; i + 4 <= inner; i += 4) {
        __m256d m4 = _mm256_cvtps_pd(_mm_loadu_ps(J->lse + o * inner + i));
        int ok;
        __m256d e = exp_v8_nonpositive4(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(J->x + base + i)), m4), &ok);
        if (!ok) break;
        __m256d y = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(J->g + o * inner + i)), e);
        y = _mm256_andnot_pd(_mm256_cmp_pd(m4, _mm256_set1_pd(-INFINITY), _CMP_EQ_OQ), y);
        _mm_storeu_ps(J->gx + base + i, _mm256_cvtpd_ps(y));
      }
      for (; i < inner; i++) lse_backward_one(J, base + i, o * inner + i);
    }
  }
}

void rb_logsumexp_backward_f32(const float *x, size_t outer, size_t len, size_t inner, const float *lse, const float *g,
                               float *gx) {
  lse_backward_job J = {x, lse, g, gx, outer, len, inner};
  rb_parallel(outer >= 2 && outer * len * inner >= EXACT_PARALLEL_MIN ? rb_threads() : 1, lse_backward_task, &J);
}

/* ------------------------------------------------------------------------------------------------
 * Row standardisation (LayerNorm, InstanceNorm; js.ts standardizeRows): the row sums run in index
 * order in double, as the JS loops add them.
 * ---------------------------------------------------------------------------------------------- */

typedef struct {
  const float *x, *g, *y;
  float *out;
  double *inv_std_out;
  const double *inv_std;
  size_t R, D;
  double eps;
} rows_job;

static void standardize_task(void *p, int tid, int nth) {
  rows_job *J = p;
  const size_t D = J->D;
  size_t lo, hi;
  rb_split_range(J->R, tid, nth, 1, &lo, &hi);
  for (size_t r = lo; r < hi; r++) {
    const float *x = J->x + r * D;
    float *y = J->out + r * D;
    double s = 0;
    for (size_t i = 0; i < D; i++) s += x[i];
    double mu = s / (double)D;
    double v = 0;
    for (size_t i = 0; i < D; i++) {
      double d = x[i] - mu;
      v += d * d;
    }
    double is = 1 / sqrt(v / (double)D + J->eps);
    J->inv_std_out[r] = is;
    for (size_t i = 0; i < D; i++) y[i] = (float)((x[i] - mu) * is);
  }
}

static void standardize_backward_task(void *p, int tid, int nth) {
  rows_job *J = p;
  const size_t D = J->D;
  size_t lo, hi;
  rb_split_range(J->R, tid, nth, 1, &lo, &hi);
  for (size_t r = lo; r < hi; r++) {
    const float *g = J->g + r * D, *y = J->y + r * D;
    float *gx = J->out + r * D;
    double sg = 0, sgy = 0;
    for (size_t i = 0; i < D; i++) {
      sg += g[i];
      sgy += (double)g[i] * y[i];
    }
    double mg = sg / (double)D, mgy = sgy / (double)D, is = J->inv_std[r];
    for (size_t i = 0; i < D; i++) gx[i] = (float)(is * ((g[i] - mg) - y[i] * mgy));
  }
}

static int row_threads(size_t R, size_t D) { return R >= 2 && R * D >= EXACT_PARALLEL_MIN ? rb_threads() : 1; }

void rb_standardize_rows_f32(const float *x, size_t R, size_t D, double eps, float *y, double *inv_std) {
  rows_job J = {.x = x, .out = y, .inv_std_out = inv_std, .R = R, .D = D, .eps = eps};
  rb_parallel(row_threads(R, D), standardize_task, &J);
}

void rb_standardize_rows_backward_f32(const float *g, const float *y, const double *inv_std, size_t R, size_t D, float *gx) {
  rows_job J = {.g = g, .y = y, .out = gx, .inv_std = inv_std, .R = R, .D = D};
  rb_parallel(row_threads(R, D), standardize_backward_task, &J);
}
