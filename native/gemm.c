/*
 * Our own single-precision gemm for CPUs with AVX-512.
 *
 * The environment pins OpenBLAS to its Haswell (AVX2) kernels (OPENBLAS_CORETYPE, which we must
 * not change), so on this machine kind OpenBLAS uses half of each core's vector width. This file
 * is a compact BLIS-style gemm (Goto's loop nest, packed panels, an 8×32 register-tile
 * micro-kernel) compiled for AVX-512 through function target attributes, so the rest of the addon
 * still runs on any x86-64 CPU; the selection at the end of this file picks it at run time only
 * when the CPU reports AVX-512 (F, VL, DQ, BW), else the AVX2 kernels of gemm_avx2.c.
 * Row-major throughout: C[M×N] = alpha·op(A)[M×K]·op(B)[K×N] + beta·C.
 *
 * Blocking (Zen 5 here: 48 KiB L1d, 1 MiB L2): MR×KC panels of A stream from an MC×KC block
 * (192 KiB) held in L2 against one KC×NR panel of B; the KC×NC block of B (4 MiB) lives in L3.
 * The sizes were picked by timing a grid of them on the CNN, MLP and 2048² shapes (within ~5% of
 * each other); the micro-kernel itself runs at ~97% of the measured FMA peak (225 GFLOP/s/core).
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_avx2.h"
#include "rb.h"

#define MR 8
#define NR 32
#ifndef KC
#define KC 512
#endif
#ifndef MC
#define MC 96
#endif
#ifndef NC
#define NC 2048
#endif

/* Widest kernel whose stride-1 lane masks pack_b_image tabulates (wider ones take a scalar path). */
#define MAX_KW_TABLE 11

#define AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw")))

static bool avx512_supported(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
}

/* A run of consecutive im2col columns within one output row: what pack_b_image copies per row. */
typedef struct {
  int32_t oh, ow, len, j; /* output row, first output column, length, offset in its panel */
} image_run;

/* Per-thread workspace (the caller's thread and each pool thread get one, kept for the process):
 * packing buffers and pack_b_image's tables. Fetched once per gemm: thread-locals in a shared
 * object cost a __tls_get_addr call per access. */
typedef struct {
  float *a_pack, *b_pack;
  image_run runs[NC];
  int32_t first[NC / NR + 1];
  __mmask16 valid[MAX_KW_TABLE][NC][2], store[NC][2];
  int32_t k_plane[KC], k_kh[KC], k_kw[KC];
  int32_t k_off[KC];
  float *padded; /* zero-padded copy of one sample, for conv_gemm_image */
  size_t padded_cap;
} workspace;

static _Thread_local workspace *thread_ws;

static workspace *get_workspace(void) {
  workspace *ws = thread_ws;
  if (ws) return ws;
  ws = calloc(1, sizeof *ws);
  if (!ws) return NULL;
  ws->a_pack = aligned_alloc(64, (size_t)MC * KC * sizeof(float));
  ws->b_pack = aligned_alloc(64, (size_t)NC * KC * sizeof(float));
  if (!ws->a_pack || !ws->b_pack) {
    free(ws->a_pack);
    free(ws->b_pack);
    free(ws);
    return NULL;
  }
  return thread_ws = ws;
}

static inline __mmask16 mask_upto(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

/* Transposes the 8×8 block src[r·lds + c] into dst[c·ldd + r] (rows and columns of 8 floats). */
AVX512 static inline void transpose8x8(const float *src, int64_t lds, float *dst, int64_t ldd) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds), r2 = _mm256_loadu_ps(src + 2 * lds),
         r3 = _mm256_loadu_ps(src + 3 * lds), r4 = _mm256_loadu_ps(src + 4 * lds),
         r5 = _mm256_loadu_ps(src + 5 * lds), r6 = _mm256_loadu_ps(src + 6 * lds),
         r7 = _mm256_loadu_ps(src + 7 * lds);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
         u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
         u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
         u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* The reduction dimension K in equal slices of at most `max` (rounded up to 8): a short last slice
 * would cost a whole extra pass over C for little work. */
static int64_t slice_step(int64_t K, int64_t max) {
  int64_t slices = (K + max - 1) / max;
  return ((K + slices - 1) / slices + 7) & ~(int64_t)7;
}

/* Ap[panel][k][r] = alpha·op(A)[i0 + panel·MR + r][k0 + k], rows past mc zero. */
AVX512 static void pack_a(bool ta, const float *A, int64_t lda, int64_t i0, int64_t k0, int64_t mc, int64_t kc,
                          float alpha, float *Ap) {
  for (int64_t p = 0; p < mc; p += MR) {
    int64_t rows = mc - p < MR ? mc - p : MR;
    float *dst = Ap + p * kc;
    if (ta) {
      /* op(A)[i][k] = A[k][i]: the MR values of one k are contiguous. */
      __mmask16 m = mask_upto(rows);
      __m256 va = _mm256_set1_ps(alpha);
      for (int64_t k = 0; k < kc; k++) {
        __m256 v = _mm256_maskz_loadu_ps((__mmask8)m, A + (k0 + k) * lda + i0 + p);
        _mm256_storeu_ps(dst + k * MR, _mm256_mul_ps(v, va));
      }
    } else {
      /* Rows of A run along k: transpose 8×8 blocks, then scale (alpha is usually 1). */
      const float *src = A + (i0 + p) * lda + k0;
      int64_t k = 0;
      if (rows == MR) {
        for (; k + 8 <= kc; k += 8) transpose8x8(src + k, lda, dst + k * MR, MR);
      } else {
        memset(dst, 0, (size_t)(kc * MR) * sizeof(float));
      }
      for (int64_t r = 0; r < rows; r++)
        for (int64_t kk = k; kk < kc; kk++) dst[kk * MR + r] = src[r * lda + kk];
      if (alpha != 1.0f) {
        __m256 va = _mm256_set1_ps(alpha);
        for (int64_t i = 0; i < kc * MR; i += 8) _mm256_storeu_ps(dst + i, _mm256_mul_ps(va, _mm256_loadu_ps(dst + i)));
      }
    }
  }
}

/* Bp[panel][k][j] = op(B)[k0 + k][j0 + panel·NR + j], columns past nc zero. */
AVX512 static void pack_b(bool tb, const float *B, int64_t ldb, int64_t k0, int64_t j0, int64_t kc, int64_t nc,
                          float *Bp) {
  for (int64_t q = 0; q < nc; q += NR) {
    int64_t cols = nc - q < NR ? nc - q : NR;
    float *dst = Bp + q * kc;
    if (!tb) {
      __mmask16 m0 = mask_upto(cols), m1 = mask_upto(cols > 16 ? cols - 16 : 0);
      const float *src = B + k0 * ldb + j0 + q;
      for (int64_t k = 0; k < kc; k++, src += ldb) {
        _mm512_store_ps(dst + k * NR, _mm512_maskz_loadu_ps(m0, src));
        _mm512_store_ps(dst + k * NR + 16, _mm512_maskz_loadu_ps(m1, src + 16));
      }
    } else {
      /* op(B)[k][j] = B[j][k]: whole groups of 8 columns by 8×8 transposes, the rest one by one. */
      if (cols < NR) memset(dst, 0, (size_t)(kc * NR) * sizeof(float));
      const float *src = B + (j0 + q) * ldb + k0;
      int64_t k8 = kc & ~(int64_t)7, j8 = cols & ~(int64_t)7;
      for (int64_t j = 0; j < j8; j += 8)
        for (int64_t k = 0; k < k8; k += 8) transpose8x8(src + j * ldb + k, ldb, dst + k * NR + j, NR);
      for (int64_t j = 0; j < cols; j++)
        for (int64_t k = j < j8 ? k8 : 0; k < kc; k++) dst[k * NR + j] = src[j * ldb + k];
    }
  }
}

enum { STORE_SET, STORE_ADD, STORE_BETA };

/* C tile (m ≤ MR rows, n ≤ NR columns) from an MR×kc panel of A and a kc×NR panel of B. */
/* Epilogue: `bias` (per row of the tile, added with the first K slice) and `relu` (applied with
 * the last) let a conv write its finished output in the gemm's only pass over C. */
/* B comes either packed (b: kc rows of NR) or, for a convolution, straight from a zero-padded
 * image: row k's two 16-lane halves start at b_lo + off[k] and b_hi + off[k]. Likewise A comes
 * packed (a: kc columns of MR) or from an image: element (r, k) at a_rows[r][a_pos[k]]. */
__attribute__((always_inline)) AVX512 static inline void micro_kernel_body(
    int64_t kc, const float *restrict a, const float *const *a_rows, const int32_t *a_pos, bool a_image,
    const float *restrict b, const float *b_lo, const float *b_hi, const int32_t *off, bool image,
    float *restrict c, int64_t ldc, int64_t m, int64_t n, int store, float beta, const float *bias, bool relu) {
  __m512 c0a = _mm512_setzero_ps(), c0b = _mm512_setzero_ps(), c1a = _mm512_setzero_ps(),
         c1b = _mm512_setzero_ps(), c2a = _mm512_setzero_ps(), c2b = _mm512_setzero_ps(),
         c3a = _mm512_setzero_ps(), c3b = _mm512_setzero_ps(), c4a = _mm512_setzero_ps(),
         c4b = _mm512_setzero_ps(), c5a = _mm512_setzero_ps(), c5b = _mm512_setzero_ps(),
         c6a = _mm512_setzero_ps(), c6b = _mm512_setzero_ps(), c7a = _mm512_setzero_ps(),
         c7b = _mm512_setzero_ps();
  /* Start fetching the C tile now so its misses overlap the k loop instead of stalling the stores. */
  for (int64_t r = 0; r < m; r++) {
    _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + r * ldc + 16), _MM_HINT_T0);
  }
  const float *ap0 = a_image ? a_rows[0] : NULL, *ap1 = a_image ? a_rows[1] : NULL,
              *ap2 = a_image ? a_rows[2] : NULL, *ap3 = a_image ? a_rows[3] : NULL,
              *ap4 = a_image ? a_rows[4] : NULL, *ap5 = a_image ? a_rows[5] : NULL,
              *ap6 = a_image ? a_rows[6] : NULL, *ap7 = a_image ? a_rows[7] : NULL;
#define RB_ROW(r)                                                    \
  {                                                                  \
    __m512 ar = _mm512_set1_ps(a_image ? ap##r[q] : a[r]);           \
    c##r##a = _mm512_fmadd_ps(ar, b0, c##r##a);                      \
    c##r##b = _mm512_fmadd_ps(ar, b1, c##r##b);                      \
  }
  for (int64_t k = 0; k < kc; k++) {
    const int64_t q = a_image ? a_pos[k] : 0;
    __m512 b0, b1;
    if (image) {
      b0 = _mm512_loadu_ps(b_lo + off[k]);
      b1 = _mm512_loadu_ps(b_hi + off[k]);
    } else {
      b0 = _mm512_load_ps(b);
      b1 = _mm512_load_ps(b + 16);
      b += NR;
    }
    RB_ROW(0) RB_ROW(1) RB_ROW(2) RB_ROW(3) RB_ROW(4) RB_ROW(5) RB_ROW(6) RB_ROW(7)
    if (!a_image) a += MR;
  }
#undef RB_ROW
  __mmask16 m0 = mask_upto(n), m1 = mask_upto(n > 16 ? n - 16 : 0);
  __m512 vb = _mm512_set1_ps(beta);
#define RB_STORE(r)                                                                             \
  if (r < m) {                                                                                  \
    float *cr = c + r * ldc;                                                                    \
    __m512 xa = c##r##a, xb = c##r##b;                                                          \
    if (store == STORE_ADD) {                                                                   \
      xa = _mm512_add_ps(xa, _mm512_maskz_loadu_ps(m0, cr));                                    \
      xb = _mm512_add_ps(xb, _mm512_maskz_loadu_ps(m1, cr + 16));                               \
    } else if (store == STORE_BETA) {                                                           \
      xa = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), xa);                              \
      xb = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), xb);                         \
    }                                                                                           \
    if (bias) {                                                                                 \
      xa = _mm512_add_ps(xa, _mm512_set1_ps(bias[r]));                                          \
      xb = _mm512_add_ps(xb, _mm512_set1_ps(bias[r]));                                          \
    }                                                                                           \
    if (relu) {                                                                                 \
      xa = _mm512_max_ps(xa, _mm512_setzero_ps());                                              \
      xb = _mm512_max_ps(xb, _mm512_setzero_ps());                                              \
    }                                                                                           \
    _mm512_mask_storeu_ps(cr, m0, xa);                                                          \
    _mm512_mask_storeu_ps(cr + 16, m1, xb);                                                     \
  }
  RB_STORE(0) RB_STORE(1) RB_STORE(2) RB_STORE(3) RB_STORE(4) RB_STORE(5) RB_STORE(6) RB_STORE(7)
#undef RB_STORE
}

AVX512 static void micro_kernel(int64_t kc, const float *restrict a, const float *restrict b, float *restrict c,
                                int64_t ldc, int64_t m, int64_t n, int store, float beta, const float *bias,
                                bool relu) {
  micro_kernel_body(kc, a, NULL, NULL, false, b, NULL, NULL, NULL, false, c, ldc, m, n, store, beta, bias, relu);
}

AVX512 static void micro_kernel_image(int64_t kc, const float *restrict a, const float *b_lo, const float *b_hi,
                                      const int32_t *off, float *restrict c, int64_t ldc, int64_t m, int64_t n,
                                      int store, const float *bias, bool relu) {
  micro_kernel_body(kc, a, NULL, NULL, false, NULL, b_lo, b_hi, off, true, c, ldc, m, n, store, 0.0f, bias, relu);
}

AVX512 static void micro_kernel_image_a(int64_t kc, const float *const *a_rows, const int32_t *a_pos,
                                        const float *restrict b, float *restrict c, int64_t ldc, int64_t m,
                                        int64_t n) {
  micro_kernel_body(kc, NULL, a_rows, a_pos, true, b, NULL, NULL, NULL, false, c, ldc, m, n, STORE_ADD, 0.0f, NULL,
                    false);
}

/* Where op(B) comes from: a matrix, or an image read as its im2col matrix without forming it. */
typedef struct {
  const float *B; /* matrix source */
  int64_t ldb;
  bool tb;
  const float *x; /* image source: one sample [C,H,W] of geometry g */
  const rb_conv_geom *g;
} b_source;

AVX512 static void pack_b_image(workspace *ws, const float *x, const rb_conv_geom *g, int64_t k0, int64_t j0,
                                int64_t kc, int64_t nc, float *Bp);

AVX512 static void pack_b_from(workspace *ws, const b_source *src, int64_t k0, int64_t j0, int64_t kc, int64_t nc,
                               float *Bp) {
  if (src->x) pack_b_image(ws, src->x, src->g, k0, j0, kc, nc, Bp);
  else pack_b(src->tb, src->B, src->ldb, k0, j0, kc, nc, Bp);
}

/* One thread's gemm over the whole of its C block. Returns false when buffers cannot be allocated. */
AVX512 static bool gemm_serial(bool ta, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                               const b_source *bsrc, float beta, float *C, int64_t ldc, const float *row_bias,
                               bool relu) {
  workspace *ws = get_workspace();
  if (!ws) return false;
  float *a_pack = ws->a_pack, *b_pack = ws->b_pack;
  int64_t kstep = slice_step(K, KC);
  for (int64_t jc = 0; jc < N; jc += NC) {
    int64_t nc = N - jc < NC ? N - jc : NC;
    for (int64_t pc = 0; pc < K; pc += kstep) {
      int64_t kc = K - pc < kstep ? K - pc : kstep;
      int store = pc > 0 ? STORE_ADD : beta == 0.0f ? STORE_SET : beta == 1.0f ? STORE_ADD : STORE_BETA;
      pack_b_from(ws, bsrc, pc, jc, kc, nc, b_pack);
      for (int64_t ic = 0; ic < M; ic += MC) {
        int64_t mc = M - ic < MC ? M - ic : MC;
        pack_a(ta, A, lda, ic, pc, mc, kc, alpha, a_pack);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          int64_t n = nc - jr < NR ? nc - jr : NR;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            int64_t m = mc - ir < MR ? mc - ir : MR;
            micro_kernel(kc, a_pack + ir * kc, b_pack + jr * kc, C + (ic + ir) * ldc + jc + jr, ldc, m, n, store,
                         beta, pc == 0 && row_bias ? row_bias + ic + ir : NULL, relu && pc + kc == K);
          }
        }
      }
    }
  }
  return true;
}

typedef struct {
  bool ta, tb, split_n;
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
  const float *A, *B;
  float *C;
  bool ok[64];
} gemm_job;

/* Thread t takes a contiguous share of C's columns (or rows), in whole register tiles. */
static void gemm_task(void *p, int tid, int nth) {
  gemm_job *J = p;
  int64_t unit = J->split_n ? NR : MR, extent = J->split_n ? J->N : J->M;
  int64_t tiles = (extent + unit - 1) / unit;
  int64_t lo = tiles * tid / nth * unit, hi = tiles * (tid + 1) / nth * unit;
  if (hi > extent) hi = extent;
  bool ok = true;
  if (hi > lo) {
    if (J->split_n) {
      b_source src = {.B = J->tb ? J->B + lo * J->ldb : J->B + lo, .ldb = J->ldb, .tb = J->tb};
      ok = gemm_serial(J->ta, J->M, hi - lo, J->K, J->alpha, J->A, J->lda, &src, J->beta, J->C + lo, J->ldc, NULL, false);
    } else {
      const float *A = J->ta ? J->A + lo : J->A + lo * J->lda;
      b_source src = {.B = J->B, .ldb = J->ldb, .tb = J->tb};
      ok = gemm_serial(J->ta, hi - lo, J->N, J->K, J->alpha, A, J->lda, &src, J->beta, J->C + lo * J->ldc, J->ldc,
                       NULL, false);
    }
  }
  J->ok[tid] = ok;
}

static bool avx512_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  gemm_job J = {.ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc,
                .alpha = alpha, .beta = beta, .A = A, .B = B, .C = C};
  int nth = rb_threads();
  if (nth > 64) nth = 64;
  /* Below ~2 MFLOP a second thread costs more to wake than it saves. */
  if (2.0 * (double)M * (double)N * (double)K < 2e6) nth = 1;
  /* Split the longer side of C so each thread keeps whole tiles busy. */
  J.split_n = (N + NR - 1) / NR >= (M + MR - 1) / MR;
  int64_t tiles = J.split_n ? (N + NR - 1) / NR : (M + MR - 1) / MR;
  if (nth > tiles) nth = (int)tiles;
  if (nth < 1) nth = 1;
  for (int t = 0; t < nth; t++) J.ok[t] = true;
  rb_parallel(nth, gemm_task, &J);
  for (int t = 0; t < nth; t++)
    if (!J.ok[t]) return false;
  return true;
}

/* ------------------------------------------------------------------------------------------------
 * Convolution without an im2col buffer: B panels are packed straight from the image.
 * ---------------------------------------------------------------------------------------------- */

/* Bp[panel][k][j] = im2col(x)[k0 + k][j0 + panel·NR + j], where row k = (c, kh, kw) and column
 * l = (oh, ow). A panel's NR columns are a few runs, each within one output row; each run is
 * copied from the image row it reads, with the lanes that fall in the zero padding zeroed. */
AVX512 static void pack_b_image(workspace *ws, const float *x, const rb_conv_geom *g, int64_t k0, int64_t j0,
                                int64_t kc, int64_t nc, float *Bp) {
  const int64_t H = g->H, W = g->W, KH = g->KH, KW = g->KW, OW = g->OW, s = g->stride, pad = g->pad;
  const float *x_end = x + g->C * H * W;
  /* Per row k of the slice: its channel plane offset, kh and kw (no divisions in the loops). */
  int32_t *k_plane = ws->k_plane, *k_kh = ws->k_kh, *k_kw = ws->k_kw;
  {
    int64_t c = k0 / (KH * KW), kh = (k0 / KW) % KH, kw = k0 % KW;
    for (int64_t k = 0; k < kc; k++) {
      k_plane[k] = (int32_t)(c * H * W);
      k_kh[k] = (int32_t)kh;
      k_kw[k] = (int32_t)kw;
      if (++kw == KW) {
        kw = 0;
        if (++kh == KH) { kh = 0; c++; }
      }
    }
  }
  /* The runs of every panel. A run never crosses a panel or an output row: at most nc of them. */
  image_run *runs = ws->runs;
  int32_t *first = ws->first;
  int64_t nruns = 0, panels = (nc + NR - 1) / NR;
  for (int64_t q = 0; q < nc; q += NR) {
    int64_t cols = nc - q < NR ? nc - q : NR;
    first[q / NR] = (int32_t)nruns;
    if (cols < NR) memset(Bp + q * kc, 0, (size_t)(kc * NR) * sizeof(float));
    for (int64_t j = 0; j < cols;) {
      int64_t l = j0 + q + j, oh = l / OW, ow = l % OW;
      int64_t len = OW - ow < cols - j ? OW - ow : cols - j;
      runs[nruns++] = (image_run){(int32_t)oh, (int32_t)ow, (int32_t)len, (int32_t)j};
      j += len;
    }
  }
  first[panels] = (int32_t)nruns;
  /* Stride 1: which lanes of a run's (at most two) 16-lane chunks are inside the image depends
   * only on the run and kw, so those masks are tabulated once per call. */
  bool table = s == 1 && KW <= MAX_KW_TABLE;
  if (table) {
    for (int64_t r = 0; r < nruns; r++) {
      int64_t len = runs[r].len;
      ws->store[r][0] = mask_upto(len);
      ws->store[r][1] = mask_upto(len > 16 ? len - 16 : 0);
      for (int64_t kw = 0; kw < KW; kw++) {
        int64_t iw0 = (int64_t)runs[r].ow - pad + kw;
        int64_t lo = iw0 < 0 ? -iw0 : 0, hi = W - iw0 < len ? W - iw0 : len;
        for (int64_t ch = 0; ch < 2; ch++) {
          int64_t t = 16 * ch, a = lo > t ? lo - t : 0, b = hi - t < 16 ? hi - t : 16;
          ws->valid[kw][r][ch] = b > a ? (__mmask16)(mask_upto(b) & ~mask_upto(a)) : 0;
        }
      }
    }
  }
  /* k outermost: the rows of one input plane are read for all panels while they are in L1. */
  for (int64_t k = 0; k < kc; k++) {
    const float *xc = x + k_plane[k];
    const int64_t kh = k_kh[k], kw = k_kw[k];
    const __mmask16(*valid)[2] = ws->valid[table ? kw : 0];
    for (int64_t p = 0; p < panels; p++) {
      float *row = Bp + p * NR * kc + k * NR;
      for (int64_t r = first[p], rend = first[p + 1]; r < rend; r++) {
        const image_run R = runs[r];
        const int64_t ih = (int64_t)R.oh * s - pad + kh, iw0 = (int64_t)R.ow * s - pad + kw;
        float *d = row + R.j;
        if (ih < 0 || ih >= H) {
          for (int64_t t = 0; t < R.len; t += 16) _mm512_mask_storeu_ps(d + t, mask_upto(R.len - t), _mm512_setzero_ps());
        } else if (table) {
          /* Lanes outside the image must read as zero. A plain load that stays inside the sample
           * then zeroes them: masked loads whose masked-off lanes leave the row are several times
           * slower on this CPU. Only loads that would leave the sample's array are masked. */
          const float *src = xc + ih * W + iw0;
          for (int64_t ch = 0; ch * 16 < R.len; ch++) {
            const float *at = src + 16 * ch;
            __m512 v;
            if (at >= x && at + 16 <= x_end) {
              v = _mm512_loadu_ps(at);
              __asm__("" : "+v"(v)); /* keep the compiler from folding this back into a masked load */
              v = _mm512_maskz_mov_ps(valid[r][ch], v);
            } else {
              v = _mm512_maskz_loadu_ps(valid[r][ch], at);
            }
            _mm512_mask_storeu_ps(d + 16 * ch, ws->store[r][ch], v);
          }
        } else {
          for (int64_t t = 0; t < R.len; t++) {
            int64_t iw = iw0 + t * s;
            d[t] = iw >= 0 && iw < W ? xc[ih * W + iw] : 0.0f;
          }
        }
      }
    }
  }
}

/* The thread's workspace with a zero-padded copy [C][H+2p][W+2p] of one sample in ws->padded, or
 * NULL when either cannot be allocated. */
static workspace *padded_copy(const float *x, const rb_conv_geom *g) {
  workspace *ws = get_workspace();
  if (!ws) return NULL;
  const int64_t Cn = g->C, H = g->H, W = g->W, pad = g->pad, Hp = H + 2 * pad, Wp = W + 2 * pad;
  size_t need = (size_t)(Cn * Hp * Wp + 32);
  if (ws->padded_cap < need) {
    free(ws->padded);
    ws->padded = aligned_alloc(64, ((need * sizeof(float)) + 63) & ~(size_t)63);
    ws->padded_cap = ws->padded ? need : 0;
    if (!ws->padded) return NULL;
  }
  float *img = ws->padded;
  for (int64_t c = 0; c < Cn; c++) {
    float *pc = img + c * Hp * Wp;
    memset(pc, 0, (size_t)(pad * Wp) * sizeof(float));
    for (int64_t ih = 0; ih < H; ih++) {
      float *row = pc + (ih + pad) * Wp;
      memset(row, 0, (size_t)pad * sizeof(float));
      memcpy(row + pad, x + (c * H + ih) * W, (size_t)W * sizeof(float));
      memset(row + pad + W, 0, (size_t)pad * sizeof(float));
    }
    memset(pc + (H + pad) * Wp, 0, (size_t)(pad * Wp) * sizeof(float));
  }
  return ws;
}

/* K slice for conv_gemm_image: the rows of x a register tile reads for one slice (kc rows of 128 B
 * per half-panel pair) then stay in L1 while every row panel of A passes over them. */
#define KC_IMAGE 192

/*
 * Stride-1 convolution as a gemm whose B is read from a zero-padded copy of the sample: im2col row
 * k = (c, kh, kw) at output row oh, columns ow0..ow0+15, is the contiguous run
 * padded[c][oh + kh][ow0 + kw ...]. With OW a multiple of 16 every 16-lane half of a register
 * panel lies in one output row, so the micro-kernel loads B directly at a per-k offset: no
 * packing of B at all, which for these small-M gemms costs a sizeable share of the multiply.
 */
AVX512 static bool conv_gemm_image(const float *A, int64_t M, const float *x, const rb_conv_geom *g,
                                   const float *bias, bool relu, float *C) {
  workspace *ws = padded_copy(x, g);
  if (!ws) return false;
  const float *img = ws->padded;
  const int64_t Cn = g->C, KH = g->KH, KW = g->KW, OH = g->OH, OW = g->OW;
  const int64_t Hp = g->H + 2 * g->pad, Wp = g->W + 2 * g->pad, K = Cn * KH * KW, N = OH * OW;
  int64_t kstep = slice_step(K, KC_IMAGE);
  int32_t *off = ws->k_off;
  for (int64_t pc = 0; pc < K; pc += kstep) {
    int64_t kc = K - pc < kstep ? K - pc : kstep;
    int store = pc > 0 ? STORE_ADD : STORE_SET;
    bool last = pc + kc == K;
    {
      int64_t c = pc / (KH * KW), kh = (pc / KW) % KH, kw = pc % KW;
      for (int64_t k = 0; k < kc; k++) {
        off[k] = (int32_t)((c * Hp + kh) * Wp + kw);
        if (++kw == KW) {
          kw = 0;
          if (++kh == KH) { kh = 0; c++; }
        }
      }
    }
    for (int64_t ic = 0; ic < M; ic += MC) {
      int64_t mc = M - ic < MC ? M - ic : MC;
      pack_a(false, A, K, ic, pc, mc, kc, 1.0f, ws->a_pack);
      for (int64_t jr = 0; jr < N; jr += NR) {
        int64_t n = N - jr < NR ? N - jr : NR;
        const float *lo = img + (jr / OW) * Wp + jr % OW;
        const float *hi = n > 16 ? img + ((jr + 16) / OW) * Wp + (jr + 16) % OW : lo;
        for (int64_t ir = 0; ir < mc; ir += MR) {
          int64_t m = mc - ir < MR ? mc - ir : MR;
          micro_kernel_image(kc, ws->a_pack + ir * kc, lo, hi, off, C + (ic + ir) * N + jr, N, m, n, store,
                             pc == 0 && bias ? bias + ic + ir : NULL, relu && last);
        }
      }
    }
  }
  return true;
}

static bool avx512_conv_gemm(const float *A, int64_t M, const float *x, const rb_conv_geom *g, const float *bias,
                             bool relu, float *C) {
  int64_t K = g->C * g->KH * g->KW, N = g->OH * g->OW;
  if (g->stride == 1 && g->OW % 16 == 0) return conv_gemm_image(A, M, x, g, bias, relu, C);
  b_source src = {.x = x, .g = g};
  return gemm_serial(false, M, N, K, 1.0f, A, K, &src, 0.0f, C, N, bias, relu);
}

/*
 * Conv weight gradient, transposed: dwt[K × O] += im2col(x)[K × P] · dy[O × P]ᵀ for one sample.
 * A (im2col) is read from a zero-padded copy of the sample, element (k, p) at
 * padded[off(k) + pos(p)], so it is never formed or packed; B = dyᵀ is packed (transposed) once
 * per K slice and serves all K/MR row panels. The caller transposes dwt into dw once per block of
 * samples. Any stride.
 */
static bool avx512_conv_dwt(const float *dy, const float *x, const rb_conv_geom *g, float *dwt) {
  if (g->O > NC) return false;
  workspace *ws = padded_copy(x, g);
  if (!ws) return false;
  const float *img = ws->padded;
  const int64_t Cn = g->C, KH = g->KH, KW = g->KW, OW = g->OW, s = g->stride, O = g->O;
  const int64_t Wp = g->W + 2 * g->pad, Hp = g->H + 2 * g->pad, K = Cn * KH * KW, P = g->OH * OW;
  int64_t pstep = slice_step(P, KC_IMAGE);
  int32_t *pos = ws->k_off;
  for (int64_t pc = 0; pc < P; pc += pstep) {
    int64_t kc = P - pc < pstep ? P - pc : pstep;
    for (int64_t t = 0; t < kc; t++) {
      int64_t p = pc + t;
      pos[t] = (int32_t)((p / OW) * s * Wp + (p % OW) * s);
    }
    pack_b(true, dy, P, pc, 0, kc, O, ws->b_pack);
    for (int64_t ir = 0; ir < K; ir += MR) {
      int64_t m = K - ir < MR ? K - ir : MR;
      const float *rows[MR];
      for (int64_t r = 0; r < MR; r++) {
        int64_t k = ir + (r < m ? r : 0); /* rows past K repeat a real one; they are not stored */
        int64_t c = k / (KH * KW), kh = (k / KW) % KH, kw = k % KW;
        rows[r] = img + (c * Hp + kh) * Wp + kw;
      }
      for (int64_t jr = 0; jr < O; jr += NR) {
        int64_t n = O - jr < NR ? O - jr : NR;
        micro_kernel_image_a(kc, rows, pos, ws->b_pack + jr * kc, dwt + ir * O + jr, O, m, n);
      }
    }
  }
  return true;
}

/* ------------------------------------------------------------------------------------------------
 * The sgemm every caller uses (the addon's gemm/gemmStrided, conv.c): one of our own kernel sets
 * (AVX-512 above, AVX2 in gemm_avx2.c) when the CPU has it or as chosen by rb_gemm_set_impl, else
 * OpenBLAS (own_active == NULL). The one place that picks.
 * ---------------------------------------------------------------------------------------------- */

static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    float *r = C + i * ldc;
    if (beta == 0.0f) memset(r, 0, (size_t)N * sizeof(float));
    else if (beta != 1.0f) for (int64_t j = 0; j < N; j++) r[j] *= beta;
  }
}

typedef struct {
  int impl;
  bool (*supported)(void);
  bool (*gemm)(bool, bool, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *, int64_t, float,
               float *, int64_t);
  bool (*conv_gemm)(const float *, int64_t, const float *, const rb_conv_geom *, const float *, bool, float *);
  bool (*conv_dwt)(const float *, const float *, const rb_conv_geom *, float *);
} own_kernels;

/* Best first: auto and own take the first one the CPU supports. */
static const own_kernels own_list[] = {
    {RB_GEMM_AVX512, avx512_supported, avx512_gemm, avx512_conv_gemm, avx512_conv_dwt},
    {RB_GEMM_AVX2, rb_gemm_avx2_supported, rb_gemm_avx2_f32, rb_conv_gemm_avx2_f32, rb_conv_dwt_avx2_f32},
};

static const own_kernels *own_active;
static bool own_decided;

int rb_gemm_set_impl(int impl) {
  const own_kernels *pick = NULL;
  if (impl != RB_GEMM_OPENBLAS) {
    for (size_t i = 0; i < sizeof own_list / sizeof own_list[0] && !pick; i++)
      if ((impl == RB_GEMM_AUTO || impl == RB_GEMM_OWN || impl == own_list[i].impl) && own_list[i].supported())
        pick = &own_list[i];
    if (!pick && impl != RB_GEMM_AUTO) return -1;
  }
  own_active = pick;
  own_decided = true;
  return 0;
}

int rb_gemm_impl(void) {
  if (!own_decided) rb_gemm_set_impl(RB_GEMM_AUTO);
  return own_active ? own_active->impl : RB_GEMM_OPENBLAS;
}

bool rb_gemm_own_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  return own_active && own_active->gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

bool rb_conv_gemm_own_f32(const float *A, int64_t M, const float *x, const rb_conv_geom *g, const float *bias,
                          bool relu, float *C) {
  return own_active && own_active->conv_gemm(A, M, x, g, bias, relu, C);
}

bool rb_conv_dwt_own_f32(const float *dy, const float *x, const rb_conv_geom *g, float *dwt) {
  return own_active && own_active->conv_dwt(dy, x, g, dwt);
}

void rb_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  /* BLAS rejects K = 0 leading dimensions in some builds; the result is just beta*C. */
  if (K == 0 || alpha == 0.0f) { scale_c(M, N, beta, C, ldc); return; }
  if (rb_gemm_own_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
              (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

typedef struct {
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
  const float *A, *B;
  float *C;
  int64_t sA, sB, sC, count;
} gs_job;

static void gemm_strided_task(void *p, int tid, int nth) {
  gs_job *J = p;
  int64_t lo = J->count * tid / nth, hi = J->count * (tid + 1) / nth;
  int64_t lda = J->ta ? J->M : J->K, ldb = J->tb ? J->K : J->N;
  for (int64_t b = lo; b < hi; b++)
    rb_gemm_f32(J->ta, J->tb, J->M, J->N, J->K, J->alpha, J->A + b * J->sA, lda, J->B + b * J->sB, ldb, J->beta,
                J->C + b * J->sC, J->N);
}

void rb_gemm_strided_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                         int64_t strideA, const float *B, int64_t strideB, float beta, float *C, int64_t strideC,
                         int64_t count) {
  if (count <= 0 || M == 0 || N == 0) return;
  /* A batch of row blocks times one shared B is a single tall gemm (e.g. a linear layer over
   * [batch, tokens, features]); one big call runs far faster than many small ones. */
  if (!ta && strideB == 0 && strideA == M * K && strideC == M * N) {
    rb_gemm_f32(false, tb, M * count, N, K, alpha, A, K, B, tb ? K : N, beta, C, N);
    return;
  }
  gs_job J = {ta, tb, M, N, K, alpha, beta, A, B, C, strideA, strideB, strideC, count};
  int nth = rb_threads();
  double flops = 2.0 * (double)M * (double)N * (double)K;
  /* Many small products: split the batch over our threads with single-threaded BLAS. Large ones:
   * let OpenBLAS thread each product. */
  if (nth > 1 && count >= 2 * nth && flops < 8e6) {
    openblas_set_num_threads(1);
    rb_parallel(nth, gemm_strided_task, &J);
    openblas_set_num_threads(nth);
  } else {
    gemm_strided_task(&J, 0, 1);
  }
}
