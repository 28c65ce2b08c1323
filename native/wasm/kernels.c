/*
 * The wasm backend's kernels: portable C compiled to wasm32 with SIMD128 (scripts/build-wasm.mjs),
 * no libc, no threads. The x86/OpenBLAS/pthreads parts of native/ stay there; the scalar
 * transcendental functions (../rb_math.h), the portable elementwise and optimiser loops
 * (../rb_loops.h) and the op codes (../rb.h) are shared with the native build.
 *
 * Memory is owned by the JS side (src/core/backend/wasm.ts): it copies the arguments to linear
 * memory above __heap_base, passes byte offsets (wasm32 pointers) and copies the results back.
 * Scratch space a kernel needs beyond its arguments is passed the same way; only the gemm packing
 * buffers are static. Semantics follow src/core/backend/js.ts (the reference), like native/kernels.c.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <wasm_simd128.h>

#include "../rb_loops.h"
#include "../rb_math.h"

#define EXPORT __attribute__((visibility("default")))

typedef int32_t i32;

/* clang lowers struct copies and zeroing loops to these even without libc. */
void *(memcpy)(void *restrict dst, const void *restrict src, size_t n) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  while (n--) *d++ = *s++;
  return dst;
}

void *(memset)(void *dst, int c, size_t n) {
  unsigned char *d = dst;
  while (n--) *d++ = (unsigned char)c;
  return dst;
}

/* ------------------------------------------------------------------------------------------------
 * Vector and double helpers
 * ---------------------------------------------------------------------------------------------- */

/* rb_expf on 4 lanes: the same Cody-Waite reduction and polynomial, without FMA. */
static inline v128_t exp4(v128_t x) {
  v128_t xc = wasm_f32x4_pmin(wasm_f32x4_pmax(x, wasm_f32x4_splat(-104.0f)), wasm_f32x4_splat(89.0f));
  v128_t n = wasm_f32x4_nearest(wasm_f32x4_mul(xc, wasm_f32x4_splat(1.44269504088896341f)));
  v128_t r = wasm_f32x4_add(wasm_f32x4_mul(n, wasm_f32x4_splat(-0.693359375f)), xc);
  r = wasm_f32x4_add(wasm_f32x4_mul(n, wasm_f32x4_splat(2.12194440e-4f)), r);
  v128_t p = wasm_f32x4_splat(1.9875691500e-4f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.3981999507e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(8.3334519073e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(4.1665795894e-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.6666665459e-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(5.0000001201e-1f));
  p = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_mul(p, wasm_f32x4_mul(r, r)), r), wasm_f32x4_splat(1.0f));
  v128_t ni = wasm_i32x4_trunc_sat_f32x4(n);
  v128_t n1 = wasm_i32x4_shr(ni, 1);
  v128_t n2 = wasm_i32x4_sub(ni, n1);
  v128_t bias = wasm_i32x4_splat(127);
  v128_t s1 = wasm_i32x4_shl(wasm_i32x4_add(n1, bias), 23);
  v128_t s2 = wasm_i32x4_shl(wasm_i32x4_add(n2, bias), 23);
  v128_t res = wasm_f32x4_mul(wasm_f32x4_mul(p, s1), s2);
  return wasm_v128_bitselect(x, res, wasm_f32x4_ne(x, x));
}

static inline float hmax4(v128_t v) {
  float m = wasm_f32x4_extract_lane(v, 0);
  float b = wasm_f32x4_extract_lane(v, 1), c = wasm_f32x4_extract_lane(v, 2), d = wasm_f32x4_extract_lane(v, 3);
  m = b > m ? b : m;
  m = c > m ? c : m;
  return d > m ? d : m;
}

static inline float hsum4(v128_t v) {
  return (wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1)) +
         (wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3));
}

/* Max ignoring NaN, from -Inf (js.ts's `if (v > m) m = v`); pmax(m, v) keeps m when v is NaN. */
static float max_f32(const float *x, i32 n) {
  i32 i = 0;
  float m = -INFINITY;
  if (n >= 8) {
    v128_t m0 = wasm_f32x4_splat(-INFINITY), m1 = m0;
    for (; i + 8 <= n; i += 8) {
      m0 = wasm_f32x4_pmax(m0, wasm_v128_load(x + i));
      m1 = wasm_f32x4_pmax(m1, wasm_v128_load(x + i + 4));
    }
    m = hmax4(wasm_f32x4_pmax(m0, m1));
  }
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

/* Σ exp(x[i] - shift), storing the exps when out != NULL: float partial sums over blocks of 512,
 * blocks added in double (as native/kernels.c does). */
static double exp_shift_sum(const float *x, i32 n, float shift, float *out) {
  double total = 0;
  i32 i = 0;
  v128_t sh = wasm_f32x4_splat(shift);
  while (i + 4 <= n) {
    i32 end = i + 512 < n ? i + 512 : n;
    v128_t a0 = wasm_f32x4_splat(0), a1 = a0;
    for (; i + 8 <= end; i += 8) {
      v128_t e0 = exp4(wasm_f32x4_sub(wasm_v128_load(x + i), sh));
      v128_t e1 = exp4(wasm_f32x4_sub(wasm_v128_load(x + i + 4), sh));
      if (out) { wasm_v128_store(out + i, e0); wasm_v128_store(out + i + 4, e1); }
      a0 = wasm_f32x4_add(a0, e0);
      a1 = wasm_f32x4_add(a1, e1);
    }
    for (; i + 4 <= end; i += 4) {
      v128_t e0 = exp4(wasm_f32x4_sub(wasm_v128_load(x + i), sh));
      if (out) wasm_v128_store(out + i, e0);
      a0 = wasm_f32x4_add(a0, e0);
    }
    total += hsum4(wasm_f32x4_add(a0, a1));
  }
  float s = 0;
  for (; i < n; i++) {
    float e = rb_expf(x[i] - shift);
    if (out) out[i] = e;
    s += e;
  }
  return total + s;
}

/* Natural log in double (no libm): x = 2^e · m with m in [√½, √2), log m = 2 atanh((m-1)/(m+1)). */
static double log_d(double x) {
  if (x != x || x < 0) return __builtin_nan("");
  if (x == 0) return -__builtin_inf();
  if (x == __builtin_inf()) return x;
  uint64_t b;
  __builtin_memcpy(&b, &x, 8);
  int e = (int)((b >> 52) & 0x7ff);
  if (e == 0) { /* subnormal: scale by 2^54 */
    x *= 18014398509481984.0;
    __builtin_memcpy(&b, &x, 8);
    e = (int)((b >> 52) & 0x7ff) - 54;
  }
  e -= 1023;
  b = (b & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
  double m;
  __builtin_memcpy(&m, &b, 8);
  if (m > 1.4142135623730951) { m *= 0.5; e++; }
  double f = (m - 1) / (m + 1), f2 = f * f;
  /* |f| < 0.1716, f2 < 0.0295: 11 odd terms reach double precision. */
  double s = 1.0 / 23;
  s = s * f2 + 1.0 / 21; s = s * f2 + 1.0 / 19; s = s * f2 + 1.0 / 17; s = s * f2 + 1.0 / 15;
  s = s * f2 + 1.0 / 13; s = s * f2 + 1.0 / 11; s = s * f2 + 1.0 / 9; s = s * f2 + 1.0 / 7;
  s = s * f2 + 1.0 / 5; s = s * f2 + 1.0 / 3; s = s * f2 + 1.0;
  return (double)e * 0.6931471805599453 + 2 * f * s;
}

/* ------------------------------------------------------------------------------------------------
 * sgemm: packed panels (GotoBLAS blocking) around a 4×8 SIMD128 micro-kernel (8 accumulators, two
 * B vectors and one broadcast A value fit the 16 registers V8 has on x86-64 without spilling; 6×8,
 * 5×8 and 3×12 tiles measured slower, as did unrolling k). wasm has no FMA, so each step is a
 * multiply and an add. The packing routines stay out of line and small: V8 runs a function in its
 * baseline tier until the optimising compile finishes, and one large rb_gemm (everything inlined
 * and auto-vectorised) took ~0.5 s to compile, ~50 calls of a 256² product at baseline speed.
 * ---------------------------------------------------------------------------------------------- */

#define MR 4
#define NR 8
#define KC 256
#define MC 128
#define NC 2048

static float packA[MC * KC] __attribute__((aligned(16)));
static float packB[KC * NC] __attribute__((aligned(16)));

/* The 4×4 block at rows r[0..3], columns k..k+3, transposed: out + q·stride holds column k + q. */
static inline void transpose4(const float *r0, const float *r1, const float *r2, const float *r3, float *out, i32 stride) {
  v128_t a = wasm_v128_load(r0), b = wasm_v128_load(r1), c = wasm_v128_load(r2), d = wasm_v128_load(r3);
  v128_t ab0 = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), ab1 = wasm_i32x4_shuffle(a, b, 2, 6, 3, 7);
  v128_t cd0 = wasm_i32x4_shuffle(c, d, 0, 4, 1, 5), cd1 = wasm_i32x4_shuffle(c, d, 2, 6, 3, 7);
  wasm_v128_store(out, wasm_i64x2_shuffle(ab0, cd0, 0, 2));
  wasm_v128_store(out + stride, wasm_i64x2_shuffle(ab0, cd0, 1, 3));
  wasm_v128_store(out + 2 * stride, wasm_i64x2_shuffle(ab1, cd1, 0, 2));
  wasm_v128_store(out + 3 * stride, wasm_i64x2_shuffle(ab1, cd1, 1, 3));
}

/* A(i, k) of op(A) into MR-row panels: panel p holds rows p*MR.., k-major, zero-padded. Full
 * panels move 4×4 blocks (rows of A transposed by shuffles, or columns of Aᵀ as they are). */
__attribute__((noinline)) static void pack_a(bool ta, const float *A, i32 lda, i32 i0, i32 mc, i32 k0, i32 kc) {
  float *dst = packA;
  for (i32 ip = 0; ip < mc; ip += MR, dst += kc * MR) {
    i32 mr = mc - ip < MR ? mc - ip : MR, i = i0 + ip;
    if (mr == MR && ta) {
      for (i32 k = 0; k < kc; k++) wasm_v128_store(dst + k * MR, wasm_v128_load(A + (k0 + k) * lda + i));
      continue;
    }
    i32 k = 0;
    if (mr == MR) {
      const float *r0 = A + i * lda + k0, *r1 = r0 + lda, *r2 = r1 + lda, *r3 = r2 + lda;
      for (; k + 4 <= kc; k += 4) transpose4(r0 + k, r1 + k, r2 + k, r3 + k, dst + k * MR, MR);
    }
#pragma clang loop vectorize(disable) unroll(disable)
    for (; k < kc; k++)
#pragma clang loop vectorize(disable) unroll(disable)
      for (i32 ii = 0; ii < MR; ii++) {
        i32 r = i + ii, kk = k0 + k;
        dst[k * MR + ii] = ii < mr ? (ta ? A[kk * lda + r] : A[r * lda + kk]) : 0.0f;
      }
  }
}

/* B(k, j) of op(B) into NR-column panels, k-major, zero-padded. Full panels move whole vectors
 * (rows of B as they are, or 4×4 blocks of Bᵀ's rows transposed). */
__attribute__((noinline)) static void pack_b(bool tb, const float *B, i32 ldb, i32 k0, i32 kc, i32 j0, i32 nc) {
  float *dst = packB;
  for (i32 jp = 0; jp < nc; jp += NR, dst += kc * NR) {
    i32 nr = nc - jp < NR ? nc - jp : NR, j = j0 + jp, k = 0;
    if (nr == NR && !tb) {
      for (; k < kc; k++) {
        const float *src = B + (k0 + k) * ldb + j;
        wasm_v128_store(dst + k * NR, wasm_v128_load(src));
        wasm_v128_store(dst + k * NR + 4, wasm_v128_load(src + 4));
      }
    } else if (nr == NR) {
      for (; k + 4 <= kc; k += 4)
        for (i32 h = 0; h < NR; h += 4) {
          const float *r0 = B + (j + h) * ldb + k0 + k;
          transpose4(r0, r0 + ldb, r0 + 2 * ldb, r0 + 3 * ldb, dst + k * NR + h, NR);
        }
    }
#pragma clang loop vectorize(disable) unroll(disable)
    for (; k < kc; k++)
#pragma clang loop vectorize(disable) unroll(disable)
      for (i32 jj = 0; jj < NR; jj++) {
        i32 c = j + jj, kk = k0 + k;
        dst[k * NR + jj] = jj < nr ? (tb ? B[c * ldb + kk] : B[kk * ldb + c]) : 0.0f;
      }
  }
}

/* C[0..mr, 0..nr] += alpha · Apanel · Bpanel over kc steps. */
static void micro_kernel(i32 kc, const float *pa, const float *pb, float *C, i32 ldc, float alpha, i32 mr, i32 nr) {
  v128_t c00 = wasm_f32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (i32 k = 0; k < kc; k++) {
    v128_t b0 = wasm_v128_load(pb), b1 = wasm_v128_load(pb + 4);
    v128_t a = wasm_v128_load32_splat(pa);
    c00 = wasm_f32x4_add(c00, wasm_f32x4_mul(a, b0));
    c01 = wasm_f32x4_add(c01, wasm_f32x4_mul(a, b1));
    a = wasm_v128_load32_splat(pa + 1);
    c10 = wasm_f32x4_add(c10, wasm_f32x4_mul(a, b0));
    c11 = wasm_f32x4_add(c11, wasm_f32x4_mul(a, b1));
    a = wasm_v128_load32_splat(pa + 2);
    c20 = wasm_f32x4_add(c20, wasm_f32x4_mul(a, b0));
    c21 = wasm_f32x4_add(c21, wasm_f32x4_mul(a, b1));
    a = wasm_v128_load32_splat(pa + 3);
    c30 = wasm_f32x4_add(c30, wasm_f32x4_mul(a, b0));
    c31 = wasm_f32x4_add(c31, wasm_f32x4_mul(a, b1));
    pa += MR;
    pb += NR;
  }
  v128_t al = wasm_f32x4_splat(alpha);
  if (alpha != 1.0f) {
    c00 = wasm_f32x4_mul(c00, al); c01 = wasm_f32x4_mul(c01, al);
    c10 = wasm_f32x4_mul(c10, al); c11 = wasm_f32x4_mul(c11, al);
    c20 = wasm_f32x4_mul(c20, al); c21 = wasm_f32x4_mul(c21, al);
    c30 = wasm_f32x4_mul(c30, al); c31 = wasm_f32x4_mul(c31, al);
  }
  if (mr == MR && nr == NR) {
    float *r = C;
    wasm_v128_store(r, wasm_f32x4_add(wasm_v128_load(r), c00));
    wasm_v128_store(r + 4, wasm_f32x4_add(wasm_v128_load(r + 4), c01));
    r += ldc;
    wasm_v128_store(r, wasm_f32x4_add(wasm_v128_load(r), c10));
    wasm_v128_store(r + 4, wasm_f32x4_add(wasm_v128_load(r + 4), c11));
    r += ldc;
    wasm_v128_store(r, wasm_f32x4_add(wasm_v128_load(r), c20));
    wasm_v128_store(r + 4, wasm_f32x4_add(wasm_v128_load(r + 4), c21));
    r += ldc;
    wasm_v128_store(r, wasm_f32x4_add(wasm_v128_load(r), c30));
    wasm_v128_store(r + 4, wasm_f32x4_add(wasm_v128_load(r + 4), c31));
    return;
  }
  float t[MR * NR] __attribute__((aligned(16)));
  wasm_v128_store(t, c00); wasm_v128_store(t + 4, c01);
  wasm_v128_store(t + 8, c10); wasm_v128_store(t + 12, c11);
  wasm_v128_store(t + 16, c20); wasm_v128_store(t + 20, c21);
  wasm_v128_store(t + 24, c30); wasm_v128_store(t + 28, c31);
  for (i32 i = 0; i < mr; i++)
    for (i32 j = 0; j < nr; j++) C[i * ldc + j] += t[i * NR + j];
}

static void scale_c(i32 M, i32 N, float beta, float *C, i32 ldc) {
  if (beta == 1.0f) return;
  for (i32 i = 0; i < M; i++) {
    float *r = C + i * ldc;
    if (beta == 0.0f) for (i32 j = 0; j < N; j++) r[j] = 0.0f;
    else for (i32 j = 0; j < N; j++) r[j] *= beta;
  }
}

/* Dot product with 4 vector accumulators (row of A with a contiguous B column). */
static float dot_f32(const float *a, const float *b, i32 n) {
  i32 k = 0;
  v128_t s0 = wasm_f32x4_splat(0), s1 = s0;
  for (; k + 8 <= n; k += 8) {
    s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(wasm_v128_load(a + k), wasm_v128_load(b + k)));
    s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(wasm_v128_load(a + k + 4), wasm_v128_load(b + k + 4)));
  }
  float s = hsum4(wasm_f32x4_add(s0, s1));
  for (; k < n; k++) s += a[k] * b[k];
  return s;
}

EXPORT void rb_gemm(i32 ta, i32 tb, i32 M, i32 N, i32 K, float alpha, const float *A, i32 lda, const float *B,
                    i32 ldb, float beta, float *C, i32 ldc) {
  scale_c(M, N, beta, C, ldc);
  if (alpha == 0.0f || K == 0 || M == 0 || N == 0) return;
  if (N == 1 && !ta && (tb || ldb == 1)) {
    for (i32 i = 0; i < M; i++) C[i * ldc] += alpha * dot_f32(A + i * lda, B, K);
    return;
  }
  for (i32 jc = 0; jc < N; jc += NC) {
    i32 nc = N - jc < NC ? N - jc : NC;
    for (i32 pc = 0; pc < K; pc += KC) {
      i32 kc = K - pc < KC ? K - pc : KC;
      pack_b(tb, B, ldb, pc, kc, jc, nc);
      for (i32 ic = 0; ic < M; ic += MC) {
        i32 mc = M - ic < MC ? M - ic : MC;
        pack_a(ta, A, lda, ic, mc, pc, kc);
        for (i32 jr = 0; jr < nc; jr += NR) {
          i32 nr = nc - jr < NR ? nc - jr : NR;
          const float *pb = packB + jr * kc;
          for (i32 ir = 0; ir < mc; ir += MR) {
            i32 mr = mc - ir < MR ? mc - ir : MR;
            micro_kernel(kc, packA + ir * kc, pb, C + (ic + ir) * ldc + jc + jr, ldc, alpha, mr, nr);
          }
        }
      }
    }
  }
}

EXPORT void rb_gemm_strided(i32 ta, i32 tb, i32 M, i32 N, i32 K, float alpha, const float *A, i32 strideA,
                            const float *B, i32 strideB, float beta, float *C, i32 strideC, i32 count) {
  i32 lda = ta ? M : K, ldb = tb ? K : N;
  for (i32 b = 0; b < count; b++)
    rb_gemm(ta, tb, M, N, K, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta, C + b * strideC, N);
}

/* ------------------------------------------------------------------------------------------------
 * Convolution: im2col per sample into caller-provided scratch, then the gemm above.
 * Geometry: int32[11] = N, C, H, W, O, KH, KW, stride, pad, OH, OW.
 * ---------------------------------------------------------------------------------------------- */

typedef struct { i32 N, C, H, W, O, KH, KW, stride, pad, OH, OW; } conv_geom;

static void im2col(const float *x, float *col, const conv_geom *g) {
  i32 L = g->OH * g->OW;
  for (i32 c = 0; c < g->C; c++)
    for (i32 kh = 0; kh < g->KH; kh++)
      for (i32 kw = 0; kw < g->KW; kw++) {
        float *row = col + ((c * g->KH + kh) * g->KW + kw) * L;
        for (i32 oh = 0; oh < g->OH; oh++) {
          i32 ih = oh * g->stride - g->pad + kh;
          float *r = row + oh * g->OW;
          if (ih < 0 || ih >= g->H) { for (i32 ow = 0; ow < g->OW; ow++) r[ow] = 0.0f; continue; }
          const float *xr = x + (c * g->H + ih) * g->W;
          if (g->stride == 1) {
            /* Zeros, then a straight copy of the valid columns, then zeros. */
            i32 base = kw - g->pad;
            i32 lo = base < 0 ? -base : 0, hi = g->W - base < g->OW ? g->W - base : g->OW;
            if (hi < lo) hi = lo;
            for (i32 ow = 0; ow < lo; ow++) r[ow] = 0.0f;
            for (i32 ow = lo; ow < hi; ow++) r[ow] = xr[ow + base];
            for (i32 ow = hi; ow < g->OW; ow++) r[ow] = 0.0f;
          } else {
            for (i32 ow = 0; ow < g->OW; ow++) {
              i32 iw = ow * g->stride - g->pad + kw;
              r[ow] = iw >= 0 && iw < g->W ? xr[iw] : 0.0f;
            }
          }
        }
      }
}

static void col2im(const float *col, float *dx, const conv_geom *g) {
  i32 L = g->OH * g->OW;
  for (i32 c = 0; c < g->C; c++)
    for (i32 kh = 0; kh < g->KH; kh++)
      for (i32 kw = 0; kw < g->KW; kw++) {
        const float *row = col + ((c * g->KH + kh) * g->KW + kw) * L;
        for (i32 oh = 0; oh < g->OH; oh++) {
          i32 ih = oh * g->stride - g->pad + kh;
          if (ih < 0 || ih >= g->H) continue;
          float *xr = dx + (c * g->H + ih) * g->W;
          const float *r = row + oh * g->OW;
          if (g->stride == 1) {
            i32 base = kw - g->pad;
            i32 lo = base < 0 ? -base : 0, hi = g->W - base < g->OW ? g->W - base : g->OW;
            for (i32 ow = lo; ow < hi; ow++) xr[ow + base] += r[ow];
            continue;
          }
          for (i32 ow = 0; ow < g->OW; ow++) {
            i32 iw = ow * g->stride - g->pad + kw;
            if (iw >= 0 && iw < g->W) xr[iw] += r[ow];
          }
        }
      }
}

/* A 1×1, stride-1, unpadded convolution reads the image as its own im2col matrix. */
static bool pointwise(const conv_geom *g) {
  return g->KH == 1 && g->KW == 1 && g->stride == 1 && g->pad == 0;
}

/* col: scratch of C·KH·KW · OH·OW floats (unused for pointwise convolutions). */
EXPORT void rb_conv_fwd(const float *x, const float *w, const float *bias, float *out, const conv_geom *g,
                        i32 relu, float *col) {
  i32 K = g->C * g->KH * g->KW, L = g->OH * g->OW, O = g->O;
  for (i32 n = 0; n < g->N; n++) {
    const float *xn = x + n * g->C * g->H * g->W;
    float *on = out + n * O * L;
    const float *src = xn;
    if (!pointwise(g)) { im2col(xn, col, g); src = col; }
    rb_gemm(0, 0, O, L, K, 1.0f, w, K, src, L, 0.0f, on, L);
    if (bias)
      for (i32 o = 0; o < O; o++) {
        v128_t b = wasm_f32x4_splat(bias[o]);
        float *r = on + o * L;
        i32 l = 0;
        for (; l + 4 <= L; l += 4) wasm_v128_store(r + l, wasm_f32x4_add(wasm_v128_load(r + l), b));
        for (; l < L; l++) r[l] += bias[o];
      }
    if (relu)
      for (i32 i = 0; i < O * L; i++) on[i] = on[i] > 0.0f ? on[i] : 0.0f;
  }
}

/* col: scratch of C·KH·KW · OH·OW floats; dym: scratch of O·OH·OW floats (used with relu_y). */
EXPORT void rb_conv_bwd(const float *x, const float *w, const float *dy, const float *relu_y, float *dx, float *dw,
                        float *db, const conv_geom *g, float *col, float *dym) {
  i32 K = g->C * g->KH * g->KW, L = g->OH * g->OW, O = g->O, CHW = g->C * g->H * g->W;
  if (dw) for (i32 i = 0; i < O * K; i++) dw[i] = 0.0f;
  if (db) for (i32 o = 0; o < O; o++) db[o] = 0.0f;
  if (dx) for (i32 i = 0; i < g->N * CHW; i++) dx[i] = 0.0f;
  bool pw = pointwise(g);
  for (i32 n = 0; n < g->N; n++) {
    const float *dyn = dy + n * O * L;
    if (relu_y) {
      const float *ry = relu_y + n * O * L;
      for (i32 i = 0; i < O * L; i++) dym[i] = ry[i] > 0.0f ? dyn[i] : 0.0f;
      dyn = dym;
    }
    if (dw) {
      const float *src = x + n * CHW;
      if (!pw) { im2col(src, col, g); src = col; }
      rb_gemm(0, 1, O, K, L, 1.0f, dyn, L, src, L, 1.0f, dw, K);
    }
    if (db)
      for (i32 o = 0; o < O; o++) {
        double s = 0;
        const float *r = dyn + o * L;
        for (i32 l = 0; l < L; l++) s += r[l];
        db[o] += (float)s;
      }
    if (dx) {
      if (pw) {
        rb_gemm(1, 0, K, L, O, 1.0f, w, K, dyn, L, 0.0f, dx + n * CHW, L);
      } else {
        rb_gemm(1, 0, K, L, O, 1.0f, w, K, dyn, L, 0.0f, col, L);
        col2im(col, dx + n * CHW, g);
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------------
 * logsumexp and log-domain Sinkhorn
 * ---------------------------------------------------------------------------------------------- */

/* log Σ exp over a contiguous row, -Inf safe: an all -Inf row gives -Inf, a +Inf entry gives +Inf. */
static double lse_row(const float *x, i32 n) {
  float m = max_f32(x, n);
  if (!isfinite(m)) return m;
  return (double)m + log_d(exp_shift_sum(x, n, m, 0));
}

/* scratch: 4·inner floats (inner > 1 only). */
EXPORT void rb_logsumexp(const float *x, i32 outer, i32 len, i32 inner, float *out, float *scratch) {
  if (inner == 1) {
    for (i32 o = 0; o < outer; o++) out[o] = (float)lse_row(x + o * len, len);
    return;
  }
  float *mx = scratch, *shift = scratch + inner;
  double *s = (double *)(void *)(scratch + 2 * inner);
  rb_logsumexp_inner(x, outer, len, inner, out, mx, shift, s, log_d);
}

/* A double as float hi + lo, so (x - hi) - lo is within ~1 ulp of x - c (see native/kernels.c). */
static inline void split_hi_lo(double c, float *hi, float *lo) {
  float h = (float)c;
  *hi = h;
  *lo = isfinite(h) ? (float)(c - (double)h) : 0.0f;
}

/* scratch: 6·n floats. Each iteration normalises columns then rows, two passes of exps each. */
EXPORT void rb_sinkhorn(float *logP, i32 batch, i32 m, i32 n, i32 iters, const float *logA, const float *logB,
                        float *scratch) {
  float *cmax = scratch, *fs = scratch + n, *chi = scratch + 2 * n, *clo = scratch + 3 * n;
  double *ds = (double *)(void *)(scratch + 4 * n);
  for (i32 b = 0; b < batch; b++) {
    float *P = logP + b * m * n;
    for (i32 it = 0; it < iters; it++) {
      /* Columns: running max down the rows, then exp sums (float blocks of 256 rows into double). */
      for (i32 j = 0; j < n; j++) { cmax[j] = -INFINITY; ds[j] = 0; }
      for (i32 i = 0; i < m; i++) {
        const float *row = P + i * n;
        i32 j = 0;
        for (; j + 4 <= n; j += 4) wasm_v128_store(cmax + j, wasm_f32x4_pmax(wasm_v128_load(cmax + j), wasm_v128_load(row + j)));
        for (; j < n; j++) cmax[j] = row[j] > cmax[j] ? row[j] : cmax[j];
      }
      for (i32 j = 0; j < n; j++) chi[j] = isfinite(cmax[j]) ? cmax[j] : 0.0f; /* the shift, for now */
      for (i32 i0 = 0; i0 < m; i0 += 256) {
        i32 i1 = i0 + 256 < m ? i0 + 256 : m;
        for (i32 j = 0; j < n; j++) fs[j] = 0;
        for (i32 i = i0; i < i1; i++) {
          const float *row = P + i * n;
          i32 j = 0;
          for (; j + 4 <= n; j += 4) {
            v128_t e = exp4(wasm_f32x4_sub(wasm_v128_load(row + j), wasm_v128_load(chi + j)));
            wasm_v128_store(fs + j, wasm_f32x4_add(wasm_v128_load(fs + j), e));
          }
          for (; j < n; j++) fs[j] += rb_expf(row[j] - chi[j]);
        }
        for (i32 j = 0; j < n; j++) ds[j] += fs[j];
      }
      for (i32 j = 0; j < n; j++) {
        double l = cmax[j] == -INFINITY ? -__builtin_inf() : (double)chi[j] + log_d(ds[j]);
        if (logB) l -= logB[j];
        split_hi_lo(l, &chi[j], &clo[j]);
      }
      /* Rows: subtract the column LSEs, then the row's own LSE. */
      for (i32 i = 0; i < m; i++) {
        float *row = P + i * n;
        v128_t m0 = wasm_f32x4_splat(-INFINITY);
        i32 j = 0;
        for (; j + 4 <= n; j += 4) {
          v128_t v = wasm_f32x4_sub(wasm_f32x4_sub(wasm_v128_load(row + j), wasm_v128_load(chi + j)), wasm_v128_load(clo + j));
          wasm_v128_store(row + j, v);
          m0 = wasm_f32x4_pmax(m0, v);
        }
        float mx = hmax4(m0);
        for (; j < n; j++) {
          float v = (row[j] - chi[j]) - clo[j];
          row[j] = v;
          mx = v > mx ? v : mx;
        }
        double l = mx == -INFINITY ? -__builtin_inf() : (double)mx + log_d(exp_shift_sum(row, n, mx, 0));
        if (logA) l -= logA[i];
        float lh, ll;
        split_hi_lo(l, &lh, &ll);
        v128_t vh = wasm_f32x4_splat(lh), vl = wasm_f32x4_splat(ll);
        j = 0;
        for (; j + 4 <= n; j += 4) wasm_v128_store(row + j, wasm_f32x4_sub(wasm_f32x4_sub(wasm_v128_load(row + j), vh), vl));
        for (; j < n; j++) row[j] = (row[j] - lh) - ll;
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------------
 * Elementwise and small reductions
 * ---------------------------------------------------------------------------------------------- */

/* op: enum rb_unary (../rb.h). SIMD128 for exp and sigmoid, then the shared loop (../rb_loops.h). */
EXPORT void rb_unary(i32 op, const float *x, float *out, i32 n) {
  i32 i = 0;
  if (op == RB_EXP) {
    for (; i + 4 <= n; i += 4) wasm_v128_store(out + i, exp4(wasm_v128_load(x + i)));
  } else if (op == RB_SIGMOID) {
    v128_t one = wasm_f32x4_splat(1.0f), sign = wasm_f32x4_splat(-0.0f), zero = wasm_f32x4_splat(0.0f);
    for (; i + 4 <= n; i += 4) {
      v128_t v = wasm_v128_load(x + i);
      v128_t e = exp4(wasm_v128_or(v, sign)); /* exp(-|v|) */
      v128_t r = wasm_f32x4_div(one, wasm_f32x4_add(one, e));
      v128_t res = wasm_v128_bitselect(r, wasm_f32x4_mul(e, r), wasm_f32x4_ge(v, zero));
      wasm_v128_store(out + i, wasm_v128_bitselect(v, res, wasm_f32x4_ne(v, v)));
    }
  }
  rb_unary_loop(op, x, out, i, n);
}

/* Broadcasting binary op (op: enum rb_binary); shape/aStr/bStr: nd int32 each (nd >= 1), idx: nd int32 scratch. */
EXPORT void rb_binary(i32 op, const float *a, const i32 *aStr, const float *b, const i32 *bStr, float *out,
                      const i32 *shape, i32 nd, i32 *idx) {
  i32 last = nd - 1, inner = shape[last], total = 1;
  for (i32 d = 0; d < nd; d++) { total *= shape[d]; idx[d] = 0; }
  if (total == 0) return;
  i32 ao = 0, bo = 0;
  for (i32 o = 0; o < total; o += inner) {
    rb_binary_inner(op, a + ao, aStr[last], b + bo, bStr[last], out + o, inner);
    for (i32 d = last - 1; d >= 0; d--) {
      idx[d]++;
      ao += aStr[d];
      bo += bStr[d];
      if (idx[d] < shape[d]) break;
      ao -= aStr[d] * shape[d];
      bo -= bStr[d] * shape[d];
      idx[d] = 0;
    }
  }
}

/* Strided view of x (from its start; the JS side applies the offset) into packed out. */
EXPORT void rb_copy_strided(const float *x, const i32 *strides, float *out, const i32 *shape, i32 nd, i32 *idx) {
  i32 last = nd - 1, inner = shape[last], s = strides[last], total = 1;
  for (i32 d = 0; d < nd; d++) { total *= shape[d]; idx[d] = 0; }
  if (total == 0) return;
  i32 xo = 0;
  for (i32 o = 0; o < total; o += inner) {
    const float *src = x + xo;
    float *dst = out + o;
    if (s == 1) for (i32 i = 0; i < inner; i++) dst[i] = src[i];
    else for (i32 i = 0; i < inner; i++) dst[i] = src[i * s];
    for (i32 d = last - 1; d >= 0; d--) {
      idx[d]++;
      xo += strides[d];
      if (idx[d] < shape[d]) break;
      xo -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

EXPORT void rb_axpy(double alpha, const float *x, float *y, i32 n) { rb_axpy_loop(alpha, x, y, n); }

EXPORT void rb_affine(const float *x, double alpha, double beta, float *out, i32 n) { rb_affine_loop(x, alpha, beta, out, n); }

EXPORT void rb_relu_backward(const float *x, const float *dy, float *dx, i32 n) { rb_relu_backward_loop(x, dy, dx, n); }

EXPORT double rb_sum_squares(const float *x, i32 n) {
  i32 i = 0;
  v128_t a0 = wasm_f64x2_splat(0), a1 = a0;
  for (; i + 4 <= n; i += 4) {
    v128_t v = wasm_v128_load(x + i);
    v128_t lo = wasm_f64x2_promote_low_f32x4(v);
    v128_t hi = wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
    a0 = wasm_f64x2_add(a0, wasm_f64x2_mul(lo, lo));
    a1 = wasm_f64x2_add(a1, wasm_f64x2_mul(hi, hi));
  }
  v128_t a = wasm_f64x2_add(a0, a1);
  double s = wasm_f64x2_extract_lane(a, 0) + wasm_f64x2_extract_lane(a, 1);
  for (; i < n; i++) { double v = x[i]; s += v * v; }
  return s;
}

/* Labels are range-checked by the caller. */
EXPORT double rb_softmax_ce(const float *logits, const i32 *labels, i32 N, i32 C, float *probs) {
  double loss = 0;
  for (i32 r = 0; r < N; r++) {
    const float *l = logits + r * C;
    float *p = probs + r * C;
    float m = max_f32(l, C);
    double s = exp_shift_sum(l, C, m, p);
    double inv = 1.0 / s;
    for (i32 c = 0; c < C; c++) p[c] = (float)((double)p[c] * inv);
    loss += (double)m + log_d(s) - (double)l[labels[r]];
  }
  return loss;
}

/* The caller computes stepSize = lr / (1 - β1^t), bc2Sqrt = √(1 - β2^t) and decay = 1 - lr·wd (no pow here). */
EXPORT void rb_adamw(float *param, const float *grad, float *m, float *v, i32 n, double beta1, double beta2,
                     double eps, double stepSize, double bc2Sqrt, double decay) {
  rb_adamw_loop(param, grad, m, v, n, beta1, beta2, eps, stepSize, bc2Sqrt, decay);
}

EXPORT void rb_sgd(float *param, const float *grad, float *buf, i32 n, double lr, double momentum, double dampening,
                   i32 nesterov, double wd, i32 first) {
  rb_sgd_loop(param, grad, buf, n, lr, momentum, dampening, nesterov, wd, first);
}
