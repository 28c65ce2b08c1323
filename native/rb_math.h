/*
 * Branch-free float exp/log/tanh that GCC auto-vectorises. glibc's libmvec is only used under full
 * -ffast-math, and we keep -fno-finite-math-only so Inf/NaN stay correct; these inline versions
 * give vector speed with that flag set. Accuracy is within ~2 ulp over the whole range, and the
 * special values follow C99 (exp(-Inf)=0, log(0)=-Inf, NaN propagates).
 */
#ifndef RB_MATH_H
#define RB_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float rb_bits_to_f(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
static inline int32_t rb_f_to_bits(float f) { int32_t i; memcpy(&i, &f, 4); return i; }

static inline float rb_expf(float x) {
  // The clamp keeps the exponent arithmetic in range; results still saturate to 0 / Inf there.
  // Written as `a > b ? a : b` so it compiles to single maxps/minps (NaN is restored at the end).
  float xc = x > -104.0f ? x : -104.0f;
  xc = xc < 89.0f ? xc : 89.0f;
  float n = rintf(xc * 1.44269504088896341f);
  // ln2 split in two so n*ln2 is exact in the first step (Cody-Waite reduction).
  float r = fmaf(n, -0.693359375f, xc);
  r = fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  p = fmaf(p, r * r, r) + 1.0f;
  // 2^n in two halves so that n in [-150, 128] never leaves the normal range of either factor;
  // the last multiply then rounds once into the subnormals or overflows to Inf.
  int32_t ni = (int32_t)n;
  int32_t n1 = ni >> 1;
  int32_t n2 = ni - n1;
  float s1 = rb_bits_to_f((n1 + 127) << 23);
  float s2 = rb_bits_to_f((n2 + 127) << 23);
  float res = p * s1 * s2;
  return x != x ? x : res;
}

#ifdef __AVX2__
#include <immintrin.h>
/* rb_expf on 8 lanes. GCC's auto-vectorised rb_expf turns the NaN-honouring clamps into a chain
 * of compares and blends; with intrinsics the clamp is one max and one min. Same algorithm and
 * results as rb_expf. */
static inline __m256 rb_exp256(__m256 x) {
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-104.0f)), _mm256_set1_ps(89.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), xc);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i n1 = _mm256_srai_epi32(ni, 1);
  __m256i n2 = _mm256_sub_epi32(ni, n1);
  __m256i bias = _mm256_set1_epi32(127);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  __m256 res = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  __m256 isnan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  return _mm256_blendv_ps(res, x, isnan);
}
#endif

static inline float rb_logf(float x) {
  // Subnormals are scaled up by 2^23 first so the exponent field is meaningful.
  int sub = x < 1.17549435e-38f;
  float xs = sub ? x * 8388608.0f : x;
  int32_t ix = rb_f_to_bits(xs);
  int32_t e = ((ix >> 23) & 0xff) - 127 - (sub ? 23 : 0);
  float m = rb_bits_to_f((ix & 0x007fffff) | 0x3f800000); // [1, 2)
  // Centre the mantissa on 1 ([sqrt(1/2), sqrt(2))) so the series argument stays small.
  int big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = e + (big ? 1 : 0);
  float fe = (float)e;
  float f = m - 1.0f;
  float z = f * f;
  float y = 7.0376836292e-2f;
  y = fmaf(y, f, -1.1514610310e-1f);
  y = fmaf(y, f, 1.1676998740e-1f);
  y = fmaf(y, f, -1.2420140846e-1f);
  y = fmaf(y, f, 1.4249322787e-1f);
  y = fmaf(y, f, -1.6668057665e-1f);
  y = fmaf(y, f, 2.0000714765e-1f);
  y = fmaf(y, f, -2.4999993993e-1f);
  y = fmaf(y, f, 3.3333331174e-1f);
  y = y * f * z;
  y = fmaf(fe, -2.12194440e-4f, y);
  y = fmaf(z, -0.5f, y);
  float res = f + y;
  res = fmaf(fe, 0.693359375f, res);
  res = x > 0.0f ? res : (x == 0.0f ? -INFINITY : NAN);
  res = x == INFINITY ? x : res;
  return x != x ? x : res;
}

static inline float rb_tanhf(float x) {
  float ax = fabsf(x);
  // Near 0 the exp formula cancels; an odd polynomial keeps full relative precision there.
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = fmaf(p, z, 2.06390887954e-2f);
  p = fmaf(p, z, -5.37397155531e-2f);
  p = fmaf(p, z, 1.33314422036e-1f);
  p = fmaf(p, z, -3.33332819422e-1f);
  float small = fmaf(p * z, x, x);
  float e = rb_expf(2.0f * ax);
  float big = 1.0f - 2.0f / (e + 1.0f);
  big = copysignf(big, x);
  float res = ax < 0.625f ? small : big;
  return x != x ? x : res;
}

static inline float rb_sigmoidf(float x) {
  return 1.0f / (1.0f + rb_expf(-x));
}

#endif
