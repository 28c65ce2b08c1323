/*
 * Our own single-precision gemm for CPUs with AVX2 and FMA (no AVX-512): the same BLIS-style loop
 * nest as gemm.c (Goto's blocking, packed panels) with a register tile that fits the 16 ymm
 * registers: MR×NR = 6×16 is 12 accumulators, two B vectors and one broadcast of A. Compiled
 * through function target attributes, so the addon still loads on any x86-64 CPU; gemm.c selects
 * it at run time (REBASIN_GEMM=avx2, or auto on a CPU with AVX2+FMA and no AVX-512).
 * Row-major throughout: C[M×N] = alpha·op(A)[M×K]·op(B)[K×N] + beta·C.
 *
 * The convolution entry points read im2col's panels from a zero-padded copy of the sample, so no
 * lane ever needs masking (AVX2 has no cheap masked loads): with stride 1 and OW a multiple of 8
 * the micro-kernel loads B straight from that copy (no packing of B at all); otherwise B's panels
 * are packed from it, by plain loads where 8 columns are contiguous and by gathers elsewhere.
 */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_avx2.h"

/* Measured single-threaded on Zen 5 (AVX2 forced), best of many runs under load: 6×16 at 512²
 * ran at ~100 GFLOP/s, level with OpenBLAS's Haswell kernel; 4×24 ~93, 8×8 ~73. KC/MC within
 * noise of each other over 256–512 / 72–240; KC_IMAGE 384 marginally ahead of 128–288 on the CNN
 * conv shapes (fewer passes over C). */
#ifndef MR
#define MR 6
#endif
#ifndef NV
#define NV 2 /* ymm vectors per row of the register tile */
#endif
#define NR (8 * NV)
#ifndef KC
#define KC 384
#endif
#ifndef MC
#define MC 168
#endif
#ifndef NC
#define NC 2048
#endif
/* K slice when B is read from the image: its kc rows stay in L1 while all of A passes over them. */
#ifndef KC_IMAGE
#define KC_IMAGE 384
#endif
#define KC_MAX (KC > KC_IMAGE ? KC : KC_IMAGE)

#define AVX2 __attribute__((target("avx2,fma")))

bool rb_gemm_avx2_supported(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* Per-thread workspace, kept for the process (fetched once per call: a thread-local in a shared
 * object costs a __tls_get_addr call per access). */
typedef struct {
  float *a_pack, *b_pack;
  int32_t k_off[KC_MAX]; /* per row k of a slice: offset of (c, kh, kw) in the padded image */
  int32_t pos[NC + NR];  /* per column l of a block: offset of (oh, ow) in the padded image */
  bool contiguous[(NC + NR) / 8];
  float *padded; /* zero-padded copy of one sample */
  size_t padded_cap;
} workspace;

static _Thread_local workspace *thread_ws;

static workspace *get_workspace(void) {
  workspace *ws = thread_ws;
  if (ws) return ws;
  ws = calloc(1, sizeof *ws);
  if (!ws) return NULL;
  ws->a_pack = aligned_alloc(64, (size_t)(MC + MR) * KC_MAX * sizeof(float));
  ws->b_pack = aligned_alloc(64, (size_t)(NC + NR) * KC_MAX * sizeof(float));
  if (!ws->a_pack || !ws->b_pack) {
    free(ws->a_pack);
    free(ws->b_pack);
    free(ws);
    return NULL;
  }
  return thread_ws = ws;
}

/* Transposes the 8×8 block src[r·lds + c] into dst[c·ldd + r]. */
AVX2 static inline void transpose8x8(const float *src, int64_t lds, float *dst, int64_t ldd) {
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

/* K in equal slices of at most `max` (rounded up to 8): a short last slice would cost a whole
 * extra pass over C for little work. */
static int64_t slice_step(int64_t K, int64_t max) {
  int64_t slices = (K + max - 1) / max;
  return ((K + slices - 1) / slices + 7) & ~(int64_t)7;
}

/* Ap[panel][k][r] = alpha·op(A)[i0 + panel·MR + r][k0 + k], rows past mc zero. */
AVX2 static void pack_a(bool ta, const float *A, int64_t lda, int64_t i0, int64_t k0, int64_t mc, int64_t kc,
                        float alpha, float *Ap) {
  for (int64_t p = 0; p < mc; p += MR) {
    int64_t rows = mc - p < MR ? mc - p : MR;
    float *dst = Ap + p * kc;
    if (ta) {
      /* op(A)[i][k] = A[k][i]: the MR values of one k are contiguous. */
      for (int64_t k = 0; k < kc; k++) {
        const float *src = A + (k0 + k) * lda + i0 + p;
        for (int64_t r = 0; r < MR; r++) dst[k * MR + r] = r < rows ? alpha * src[r] : 0.0f;
      }
    } else if (rows == MR) {
      /* Rows of A run along k: eight k at a time from each row, interleaved by 8×8 transposes
       * into a scratch block (MR ≤ 8 of its columns are kept). */
      const float *src = A + (i0 + p) * lda + k0;
      int64_t k = 0;
      const __m256 va = _mm256_set1_ps(alpha);
      for (; k + 8 <= kc; k += 8) {
        __m256 v[MR];
        for (int64_t r = 0; r < MR; r++) v[r] = _mm256_mul_ps(va, _mm256_loadu_ps(src + r * lda + k));
        float t[MR][8];
        for (int64_t r = 0; r < MR; r++) _mm256_storeu_ps(t[r], v[r]);
        for (int64_t kk = 0; kk < 8; kk++)
          for (int64_t r = 0; r < MR; r++) dst[(k + kk) * MR + r] = t[r][kk];
      }
      for (; k < kc; k++)
        for (int64_t r = 0; r < MR; r++) dst[k * MR + r] = alpha * src[r * lda + k];
    } else {
      const float *src = A + (i0 + p) * lda + k0;
      for (int64_t k = 0; k < kc; k++)
        for (int64_t r = 0; r < MR; r++) dst[k * MR + r] = r < rows ? alpha * src[r * lda + k] : 0.0f;
    }
  }
}

/* Bp[panel][k][j] = op(B)[k0 + k][j0 + panel·NR + j], columns past nc zero. */
AVX2 static void pack_b(bool tb, const float *B, int64_t ldb, int64_t k0, int64_t j0, int64_t kc, int64_t nc,
                        float *Bp) {
  for (int64_t q = 0; q < nc; q += NR) {
    int64_t cols = nc - q < NR ? nc - q : NR;
    float *dst = Bp + q * kc;
    if (!tb) {
      const float *src = B + k0 * ldb + j0 + q;
      if (cols == NR) {
        for (int64_t k = 0; k < kc; k++, src += ldb)
          for (int64_t v = 0; v < NV; v++) _mm256_store_ps(dst + k * NR + 8 * v, _mm256_loadu_ps(src + 8 * v));
      } else {
        for (int64_t k = 0; k < kc; k++, src += ldb)
          for (int64_t j = 0; j < NR; j++) dst[k * NR + j] = j < cols ? src[j] : 0.0f;
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

/*
 * C tile (m ≤ MR rows, n ≤ NR columns) from kc steps of an MR-row A and an NR-column B.
 * A comes packed (a: kc columns of MR) or from an image (element (r, k) at a_rows[r][a_pos[k]]);
 * B packed (b: kc rows of NR) or from an image (vector v of row k at b_img[v] + off[k]).
 * Epilogue: `bias` (per row, with the first K slice) and `relu` (with the last) let a conv write
 * its finished output in the gemm's only pass over C.
 */
__attribute__((always_inline)) AVX2 static inline void micro_kernel_body(
    int64_t kc, const float *restrict a, const float *const *a_rows, const int32_t *a_pos, bool a_image,
    const float *restrict b, const float *const *b_img, const int32_t *off, bool b_image, float *restrict c,
    int64_t ldc, int64_t m, int64_t n, int store, float beta, const float *bias, bool relu) {
  __m256 acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();
  for (int64_t r = 0; r < m; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
  const float *ar[MR], *bi[NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++) ar[r] = a_image ? a_rows[r] : NULL;
#pragma GCC unroll 4
  for (int v = 0; v < NV; v++) bi[v] = b_image ? b_img[v] : NULL;
  for (int64_t k = 0; k < kc; k++) {
    __m256 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) bv[v] = b_image ? _mm256_loadu_ps(bi[v] + off[k]) : _mm256_load_ps(b + 8 * v);
    const int64_t q = a_image ? a_pos[k] : 0;
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      __m256 x = a_image ? _mm256_set1_ps(ar[r][q]) : _mm256_broadcast_ss(a + r);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(x, bv[v], acc[r][v]);
    }
    if (!b_image) b += NR;
    if (!a_image) a += MR;
  }
  if (n == NR) {
    const __m256 vb = _mm256_set1_ps(beta), zero = _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      if (r >= m) break;
      float *cr = c + r * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) {
        __m256 x = acc[r][v];
        if (store == STORE_ADD) x = _mm256_add_ps(x, _mm256_loadu_ps(cr + 8 * v));
        else if (store == STORE_BETA) x = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8 * v), x);
        if (bias) x = _mm256_add_ps(x, _mm256_set1_ps(bias[r]));
        if (relu) x = _mm256_max_ps(x, zero);
        _mm256_storeu_ps(cr + 8 * v, x);
      }
    }
  } else {
    /* A ragged right edge: through a scratch row, since AVX2's masked stores are slow. (Every loop
     * over acc is unrolled so that it stays in registers.) */
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      if (r >= m) break;
      float t[NR], *cr = c + r * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) _mm256_storeu_ps(t + 8 * v, acc[r][v]);
      for (int64_t j = 0; j < n; j++) {
        float x = t[j];
        if (store == STORE_ADD) x += cr[j];
        else if (store == STORE_BETA) x = __builtin_fmaf(beta, cr[j], x);
        if (bias) x += bias[r];
        if (relu) x = x > 0.0f ? x : 0.0f;
        cr[j] = x;
      }
    }
  }
}

AVX2 static void micro_kernel(int64_t kc, const float *restrict a, const float *restrict b, float *restrict c,
                              int64_t ldc, int64_t m, int64_t n, int store, float beta, const float *bias, bool relu) {
  micro_kernel_body(kc, a, NULL, NULL, false, b, NULL, NULL, false, c, ldc, m, n, store, beta, bias, relu);
}

AVX2 static void micro_kernel_image(int64_t kc, const float *restrict a, const float *const *b_img,
                                    const int32_t *off, float *restrict c, int64_t ldc, int64_t m, int64_t n,
                                    int store, const float *bias, bool relu) {
  micro_kernel_body(kc, a, NULL, NULL, false, NULL, b_img, off, true, c, ldc, m, n, store, 0.0f, bias, relu);
}

AVX2 static void micro_kernel_image_a(int64_t kc, const float *const *a_rows, const int32_t *a_pos,
                                      const float *restrict b, float *restrict c, int64_t ldc, int64_t m, int64_t n) {
  micro_kernel_body(kc, NULL, a_rows, a_pos, true, b, NULL, NULL, false, c, ldc, m, n, STORE_ADD, 0.0f, NULL, false);
}

/* Where op(B) comes from: a matrix, or a zero-padded image read as its im2col matrix. */
typedef struct {
  const float *B; /* matrix source */
  int64_t ldb;
  bool tb;
  const float *img; /* image source: padded sample [C][Hp][Wp] of geometry g */
  const rb_conv_geom *g;
} b_source;

/* Bp[panel][k][j] = im2col(x)[k0 + k][j0 + panel·NR + j] read from the padded sample: element
 * (k = (c, kh, kw), l = (oh, ow)) is img[k_off[k] + pos[l]]. Eight columns within one output row
 * at stride 1 are one load; other groups are gathered. Columns past nc read a valid element and
 * are never stored. */
AVX2 static void pack_b_image(workspace *ws, const float *img, const rb_conv_geom *g, int64_t k0, int64_t j0,
                              int64_t kc, int64_t nc, float *Bp) {
  const int64_t KH = g->KH, KW = g->KW, OW = g->OW, s = g->stride;
  const int64_t Wp = g->W + 2 * g->pad, Hp = g->H + 2 * g->pad;
  int32_t *off = ws->k_off, *pos = ws->pos;
  {
    int64_t c = k0 / (KH * KW), kh = (k0 / KW) % KH, kw = k0 % KW;
    for (int64_t k = 0; k < kc; k++) {
      off[k] = (int32_t)((c * Hp + kh) * Wp + kw);
      if (++kw == KW) {
        kw = 0;
        if (++kh == KH) { kh = 0; c++; }
      }
    }
  }
  int64_t ncr = (nc + NR - 1) / NR * NR, groups = ncr / 8;
  for (int64_t j = 0; j < ncr; j++) {
    int64_t l = j0 + j;
    pos[j] = j < nc ? (int32_t)((l / OW) * s * Wp + (l % OW) * s) : 0;
  }
  for (int64_t gi = 0; gi < groups; gi++) {
    int64_t j = gi * 8, l = j0 + j;
    ws->contiguous[gi] = s == 1 && j + 8 <= nc && l % OW + 8 <= OW;
  }
  /* k outermost: the rows of one input plane are read for all panels while they are in L1. */
  for (int64_t k = 0; k < kc; k++) {
    const float *base = img + off[k];
    for (int64_t gi = 0; gi < groups; gi++) {
      int64_t j = gi * 8;
      float *d = Bp + (j / NR) * NR * kc + k * NR + j % NR;
      __m256 v = ws->contiguous[gi]
                     ? _mm256_loadu_ps(base + pos[j])
                     : _mm256_i32gather_ps(base, _mm256_loadu_si256((const __m256i *)(pos + j)), 4);
      _mm256_store_ps(d, v);
    }
  }
}

/* One thread's gemm over the whole of its C block. Returns false when buffers cannot be allocated. */
AVX2 static bool gemm_serial(bool ta, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
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
      if (bsrc->img) pack_b_image(ws, bsrc->img, bsrc->g, pc, jc, kc, nc, b_pack);
      else pack_b(bsrc->tb, bsrc->B, bsrc->ldb, pc, jc, kc, nc, b_pack);
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

bool rb_gemm_avx2_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  gemm_job J = {.ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc,
                .alpha = alpha, .beta = beta, .A = A, .B = B, .C = C};
  int nth = rb_threads();
  if (nth > 64) nth = 64;
  /* Below ~2 MFLOP a second thread costs more to wake than it saves. */
  if (2.0 * (double)M * (double)N * (double)K < 2e6) nth = 1;
  /* Split the longer side of C (in tiles) so each thread keeps whole tiles busy. */
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
 * Convolution without an im2col buffer.
 * ---------------------------------------------------------------------------------------------- */

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
  /* The slack past the last plane: loads of columns past N may reach it. */
  memset(img + Cn * Hp * Wp, 0, 32 * sizeof(float));
  return ws;
}

/*
 * Stride-1 convolution with OW a multiple of 8: every 8-lane vector of a register panel lies in one
 * output row, so im2col row k = (c, kh, kw) of that vector is the contiguous run
 * padded[c][oh + kh][ow0 + kw ...] and the micro-kernel loads B straight from the padded copy at a
 * per-k offset: no packing of B at all.
 */
AVX2 static bool conv_gemm_image(const float *A, int64_t M, const float *img, workspace *ws, const rb_conv_geom *g,
                                 const float *bias, bool relu, float *C) {
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
        const float *bases[NV];
        for (int64_t v = 0; v < NV; v++) {
          int64_t l = jr + 8 * v < N ? jr + 8 * v : jr; /* vectors past N repeat a real one, unstored */
          bases[v] = img + (l / OW) * Wp + l % OW;
        }
        for (int64_t ir = 0; ir < mc; ir += MR) {
          int64_t m = mc - ir < MR ? mc - ir : MR;
          micro_kernel_image(kc, ws->a_pack + ir * kc, bases, off, C + (ic + ir) * N + jr, N, m, n, store,
                             pc == 0 && bias ? bias + ic + ir : NULL, relu && last);
        }
      }
    }
  }
  return true;
}

bool rb_conv_gemm_avx2_f32(const float *A, int64_t M, const float *x, const rb_conv_geom *g, const float *bias,
                           bool relu, float *C) {
  workspace *ws = padded_copy(x, g);
  if (!ws) return false;
  if (g->stride == 1 && g->OW % 8 == 0) return conv_gemm_image(A, M, ws->padded, ws, g, bias, relu, C);
  int64_t K = g->C * g->KH * g->KW, N = g->OH * g->OW;
  b_source src = {.img = ws->padded, .g = g};
  return gemm_serial(false, M, N, K, 1.0f, A, K, &src, 0.0f, C, N, bias, relu);
}

/*
 * Conv weight gradient, transposed: dwt[K × O] += im2col(x)[K × P] · dy[O × P]ᵀ for one sample.
 * A (im2col) is read from the padded copy, element (k, p) at padded[off(k) + pos(p)], never formed
 * or packed; B = dyᵀ is packed once per P slice and serves all K/MR row panels. Any stride.
 */
bool rb_conv_dwt_avx2_f32(const float *dy, const float *x, const rb_conv_geom *g, float *dwt) {
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
