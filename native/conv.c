/*
 * 2-D convolution as im2col + sgemm (rb_gemm_f32, gemm.c), entirely in C so a whole batch is one call.
 *
 * A conv call is split over samples: each of our pool threads takes a slice of the batch and runs
 * single-threaded sgemm on it (OpenBLAS is switched to 1 thread for the duration). Per-sample
 * gemms of these CNN sizes are too small for OpenBLAS's own threading to scale well, and the
 * im2col/col2im work parallelises for free this way. Within a sample the output rows are
 * processed in chunks so the im2col buffer stays in L2 between being written and read by sgemm.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rb.h"

/* ------------------------------------------------------------------------------------------------
 * im2col / col2im over output rows [oh0, oh1); col has (oh1-oh0)*OW columns.
 * ---------------------------------------------------------------------------------------------- */

/* Output columns ow whose input column ow*s - pad + kw falls inside [0, W). */
static inline void valid_ow(int64_t W, int64_t OW, int64_t s, int64_t pad, int64_t kw, int64_t *lo, int64_t *hi) {
  int64_t a = pad - kw;
  int64_t l = a <= 0 ? 0 : (a + s - 1) / s;
  int64_t b = W - 1 + pad - kw;
  int64_t h = b < 0 ? 0 : b / s + 1;
  if (h > OW) h = OW;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

static void im2col_rows(const float *x, float *col, const rb_conv_geom *g, int64_t oh0, int64_t oh1) {
  int64_t C = g->C, H = g->H, W = g->W, KH = g->KH, KW = g->KW, s = g->stride, pad = g->pad, OW = g->OW;
  int64_t L = (oh1 - oh0) * OW;
  for (int64_t c = 0; c < C; c++) {
    const float *xc = x + c * H * W;
    for (int64_t kh = 0; kh < KH; kh++) {
      for (int64_t kw = 0; kw < KW; kw++) {
        float *row = col + ((c * KH + kh) * KW + kw) * L;
        int64_t lo, hi;
        valid_ow(W, OW, s, pad, kw, &lo, &hi);
        for (int64_t oh = oh0; oh < oh1; oh++) {
          float *r = row + (oh - oh0) * OW;
          int64_t ih = oh * s - pad + kh;
          if (ih < 0 || ih >= H || lo == hi) { memset(r, 0, (size_t)OW * sizeof(float)); continue; }
          const float *xr = xc + ih * W - pad + kw;
          if (lo > 0) memset(r, 0, (size_t)lo * sizeof(float));
          if (s == 1) memcpy(r + lo, xr + lo, (size_t)(hi - lo) * sizeof(float));
          else for (int64_t ow = lo; ow < hi; ow++) r[ow] = xr[ow * s];
          if (hi < OW) memset(r + hi, 0, (size_t)(OW - hi) * sizeof(float));
        }
      }
    }
  }
}

static void col2im_rows(const float *col, float *dx, const rb_conv_geom *g, int64_t oh0, int64_t oh1) {
  int64_t C = g->C, H = g->H, W = g->W, KH = g->KH, KW = g->KW, s = g->stride, pad = g->pad, OW = g->OW;
  int64_t L = (oh1 - oh0) * OW;
  for (int64_t c = 0; c < C; c++) {
    float *xc = dx + c * H * W;
    for (int64_t kh = 0; kh < KH; kh++) {
      for (int64_t kw = 0; kw < KW; kw++) {
        const float *row = col + ((c * KH + kh) * KW + kw) * L;
        int64_t lo, hi;
        valid_ow(W, OW, s, pad, kw, &lo, &hi);
        for (int64_t oh = oh0; oh < oh1; oh++) {
          int64_t ih = oh * s - pad + kh;
          if (ih < 0 || ih >= H) continue;
          const float *r = row + (oh - oh0) * OW;
          float *xr = xc + ih * W - pad + kw;
          if (s == 1) for (int64_t ow = lo; ow < hi; ow++) xr[ow] += r[ow];
          else for (int64_t ow = lo; ow < hi; ow++) xr[ow * s] += r[ow];
        }
      }
    }
  }
}


/* ------------------------------------------------------------------------------------------------
 * Convolution
 * ---------------------------------------------------------------------------------------------- */

static int conv_mode = 0; /* 0 auto, 1 our threads over samples, 2 OpenBLAS threads */
static int64_t conv_chunk = 1 << 17; /* im2col floats per chunk (512 KiB, about half of L2) */
static int conv_strategy = RB_CONV_AUTO;

void rb_conv_set_mode(int mode) {
  if (mode >= 100) conv_chunk = mode; /* bench hook: values >= 100 set the chunk size */
  else conv_mode = mode;
}

void rb_conv_set_strategy(int strategy) { conv_strategy = strategy; }
int rb_conv_strategy(void) { return conv_strategy; }

/*
 * Which parts of a convolution read im2col's panels straight from the image ("direct", only with
 * our own gemm kernels) instead of going through an explicit im2col buffer (and col2im for dx).
 * RB_CONV_DIRECT / RB_CONV_IM2COL force one (direct where the kernels can: not for 1×1 convs,
 * which are plain gemms, nor dx at stride > 1). RB_CONV_AUTO is a fixed rule on the shape, so a
 * seed gives the same bits in every run; it was read off interleaved timings of both strategies
 * per layer shape (bench/kernels-native.ts prints them), on the AVX-512 kernels and on the AVX2
 * ones forced on the same CPU: direct is as fast or faster for the forward pass and dx everywhere
 * measured (up to 3.5× on thin layers), and for dw except when few output positions (< 32, maps
 * of 5² and less) feed a dw larger than L2 (≥ 256 Ki floats): the direct dw accumulator is then
 * rewritten per sample for too little work, and the im2col gemm was 1.2–2× faster (256→256 and
 * 512→512 at 4², 512→512 at 2², batch 128). At 6² and 8², and for 128→128 at 4², direct stayed
 * as fast or faster. (At those small maps both strategies also give dw the same bits here: a
 * single slice over the positions, summed in the same order.)
 */
#define DW_DIRECT_MIN_POSITIONS 32
#define DW_DIRECT_MAX_FLOATS ((int64_t)1 << 18)

static bool own_direct(void) { return conv_strategy != RB_CONV_IM2COL && rb_gemm_impl() != RB_GEMM_OPENBLAS; }

static bool dw_from_image(const rb_conv_geom *g) {
  if (!own_direct()) return false;
  if (conv_strategy == RB_CONV_DIRECT) return true;
  return g->OH * g->OW >= DW_DIRECT_MIN_POSITIONS || g->O * g->C * g->KH * g->KW < DW_DIRECT_MAX_FLOATS;
}

/* dw/db are summed per fixed block of samples, then over blocks in order, so the rounding (and so
 * the result) is the same whatever the thread count and whichever thread ran which block. */
#define CONV_BLOCKS 8

typedef struct {
  const float *x, *w, *bias, *dy;
  const float *relu_y; /* backward of a fused ReLU: dy counts only where this output is > 0 */
  bool relu;           /* forward: apply ReLU to the output */
  float *out, *dx, *dw, *db;
  const rb_conv_geom *g;
  int64_t rows;   /* output rows per im2col chunk */
  float **col;    /* per thread: im2col buffer */
  float **dymask; /* per thread: dy of one sample masked by the fused ReLU (backward with relu_y) */
  float **dwt;          /* per thread: [C·KH·KW][O] transposed dw of the block in hand (our gemm) */
  float *wflip;         /* [C][O·KH·KW] flipped kernel when dx is computed as a convolution of dy */
  rb_conv_geom gflip;   /* that convolution's geometry (dy as the image) */
  float *dwblk;   /* [nblk][O*K] partial dw (dw itself when nblk == 1) */
  double *dbblk;  /* [nblk][O] partial db */
  int64_t nblk;
  atomic_llong next; /* next sample (forward) or block (backward) to take: dynamic scheduling
                        keeps both cores busy when one is slowed by other processes */
} conv_job;

static bool is_pointwise(const rb_conv_geom *g) {
  return g->KH == 1 && g->KW == 1 && g->stride == 1 && g->pad == 0;
}

static void conv_fwd_sample(const conv_job *J, float *col, int64_t n) {
  const rb_conv_geom *g = J->g;
  int64_t K = g->C * g->KH * g->KW, P = g->OH * g->OW, O = g->O, OW = g->OW;
  const float *xn = J->x + n * g->C * g->H * g->W;
  float *on = J->out + n * O * P;
  /* Our gemm reads im2col's panels straight from the image and adds bias and ReLU as it stores:
   * one pass over the output, no im2col buffer. */
  if (own_direct() && !is_pointwise(g) && rb_conv_gemm_own_f32(J->w, O, xn, g, J->bias, J->relu, on))
    return;
  /* Otherwise bias goes in first and sgemm accumulates onto it (beta = 1): that replaces both
   * OpenBLAS's zeroing pass over C (beta = 0) and a separate bias pass. */
  float beta = 0.0f;
  if (J->bias) {
    for (int64_t o = 0; o < O; o++) {
      float b = J->bias[o];
      float *r = on + o * P;
      for (int64_t q = 0; q < P; q++) r[q] = b;
    }
    beta = 1.0f;
  }
  if (is_pointwise(g)) {
    rb_gemm_f32(false, false, O, P, K, 1.0f, J->w, K, xn, P, beta, on, P);
    if (J->relu) rb_unary_f32(RB_RELU, on, on, (size_t)(O * P));
    return;
  }

  for (int64_t oh0 = 0; oh0 < g->OH; oh0 += J->rows) {
    int64_t oh1 = oh0 + J->rows < g->OH ? oh0 + J->rows : g->OH;
    int64_t L = (oh1 - oh0) * OW;
    im2col_rows(xn, col, g, oh0, oh1);
    rb_gemm_f32(false, false, O, L, K, 1.0f, J->w, K, col, L, beta, on + oh0 * OW, P);
    /* ReLU while the chunk is still in cache. */
    if (J->relu)
      for (int64_t o = 0; o < O; o++) rb_unary_f32(RB_RELU, on + o * P + oh0 * OW, on + o * P + oh0 * OW, (size_t)L);
  }
}

static void conv_fwd_task(void *p, int tid, int nth) {
  conv_job *J = p;
  (void)nth;
  for (;;) {
    int64_t n = atomic_fetch_add_explicit(&J->next, 1, memory_order_relaxed);
    if (n >= J->g->N) break;
    conv_fwd_sample(J, J->col[tid], n);
  }
}

static void conv_bwd_sample(const conv_job *J, float *col, float *dymask, float *dw, float *dwt, double *db,
                            int64_t n) {
  const rb_conv_geom *g = J->g;
  int64_t K = g->C * g->KH * g->KW, P = g->OH * g->OW, O = g->O, OW = g->OW;
  int64_t CHW = g->C * g->H * g->W;
  const float *xn = J->x + n * CHW;
  const float *dyn = J->dy + n * O * P;
  if (J->relu_y) {
    /* Fused ReLU: the gradient reaching the conv is dy where the ReLU output is positive. */
    rb_relu_backward_f32(J->relu_y + n * O * P, dyn, dymask, (size_t)(O * P));
    dyn = dymask;
  }
  float *dxn = J->dx ? J->dx + n * CHW : NULL;
  if (db) {
    for (int64_t o = 0; o < O; o++) {
      db[o] += rb_sum_f32(dyn + o * P, (size_t)P);
    }
  }
  if (is_pointwise(g)) {
    if (dw) rb_gemm_f32(false, true, O, K, P, 1.0f, dyn, P, xn, P, 1.0f, dw, K);
    if (dxn) rb_gemm_f32(true, false, K, P, O, 1.0f, J->w, K, dyn, P, 0.0f, dxn, P);
    return;
  }
  /* dx as a convolution of dy with the flipped, transposed kernel: one gemm reading dy's im2col
   * panels directly, instead of a column gradient scattered back by col2im. */
  bool dx_flipped = dxn && J->wflip && rb_conv_gemm_own_f32(J->wflip, g->C, dyn, &J->gflip, NULL, false, dxn);
  bool dx_cols = dxn && !dx_flipped;
  if (dx_cols) memset(dxn, 0, (size_t)CHW * sizeof(float));
  /* dw (transposed) with im2col read straight from the image: no im2col buffer, no transposes. */
  if (dw && dwt && rb_conv_dwt_own_f32(dyn, xn, g, dwt)) dw = NULL;
  for (int64_t oh0 = 0; oh0 < g->OH && (dw || dx_cols); oh0 += J->rows) {
    int64_t oh1 = oh0 + J->rows < g->OH ? oh0 + J->rows : g->OH;
    int64_t L = (oh1 - oh0) * OW;
    const float *dyc = dyn + oh0 * OW;
    if (dw) {
      im2col_rows(xn, col, g, oh0, oh1);
      rb_gemm_f32(false, true, O, K, L, 1.0f, dyc, P, col, L, 1.0f, dw, K);
    }
    if (dx_cols) {
      /* The same buffer now receives the column gradient: the im2col copy is no longer needed. */
      rb_gemm_f32(true, false, K, L, O, 1.0f, J->w, K, dyc, P, 0.0f, col, L);
      col2im_rows(col, dxn, g, oh0, oh1);
    }
  }
}

static void conv_bwd_task(void *p, int tid, int nth) {
  conv_job *J = p;
  (void)nth;
  const rb_conv_geom *g = J->g;
  int64_t OK = g->O * g->C * g->KH * g->KW;
  for (;;) {
    int64_t b = atomic_fetch_add_explicit(&J->next, 1, memory_order_relaxed);
    if (b >= J->nblk) break;
    float *dw = J->dw ? J->dwblk + b * OK : NULL;
    float *dwt = dw && J->dwt ? J->dwt[tid] : NULL;
    double *db = J->db ? J->dbblk + b * g->O : NULL;
    if (dw) memset(dw, 0, (size_t)OK * sizeof(float));
    if (dwt) memset(dwt, 0, (size_t)OK * sizeof(float));
    if (db) memset(db, 0, (size_t)g->O * sizeof(double));
    int64_t n0 = g->N * b / J->nblk, n1 = g->N * (b + 1) / J->nblk;
    for (int64_t n = n0; n < n1; n++)
      conv_bwd_sample(J, J->col[tid], J->relu_y ? J->dymask[tid] : NULL, dw, dwt, db, n);
    if (dwt) {
      int64_t O = g->O, K = OK / O;
      for (int64_t k = 0; k < K; k++)
        for (int64_t o = 0; o < O; o++) dw[o * K + k] += dwt[k * O + o];
    }
  }
}

static int64_t chunk_rows(const rb_conv_geom *g) {
  int64_t K = g->C * g->KH * g->KW;
  int64_t rows = conv_chunk / (K * g->OW > 0 ? K * g->OW : 1);
  if (rows < 1) rows = 1;
  if (rows > g->OH) rows = g->OH;
  return rows;
}

/* Scratch kept between calls: a fresh multi-megabyte malloc per conv call is served by mmap and
 * costs a page fault per 4 KiB on first touch, ~10% of a layer's time. One cached block, taken
 * with trylock so a concurrent caller just allocates its own. */
static pthread_mutex_t scratch_mu = PTHREAD_MUTEX_INITIALIZER;
static void *scratch_buf;
static size_t scratch_cap;
#define SCRATCH_CACHE_MAX ((size_t)256 << 20)

static void *scratch_get(size_t bytes, bool *cached) {
  *cached = false;
  if (bytes <= SCRATCH_CACHE_MAX && pthread_mutex_trylock(&scratch_mu) == 0) {
    if (scratch_cap < bytes) {
      free(scratch_buf);
      scratch_buf = malloc(bytes);
      scratch_cap = scratch_buf ? bytes : 0;
    }
    if (scratch_buf) {
      *cached = true;
      return scratch_buf;
    }
    pthread_mutex_unlock(&scratch_mu);
  }
  return malloc(bytes);
}

static void scratch_put(void *p, bool cached) {
  if (cached) pthread_mutex_unlock(&scratch_mu);
  else free(p);
}

static size_t round64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

/* Picks thread counts, switches OpenBLAS to one thread while our threads split the batch, and
 * hands out scratch. */
static int conv_run(conv_job *J, rb_task_fn fn, bool backward) {
  const rb_conv_geom *g = J->g;
  int64_t OK = g->O * g->C * g->KH * g->KW, O = g->O;
  int blas = rb_threads();
  int nth = blas;
  if (conv_mode == 2 || g->N < 2) nth = 1;
  if (nth > g->N) nth = (int)g->N;
  if (nth > RB_MAXDIM * 2) nth = RB_MAXDIM * 2;
  /* With OpenBLAS threading each gemm, bigger gemms thread better: take whole samples. */
  J->rows = nth == 1 && blas > 1 ? g->OH : chunk_rows(g);
  bool need_dw = backward && J->dw, need_db = backward && J->db;
  J->nblk = g->N < CONV_BLOCKS ? g->N : CONV_BLOCKS;
  bool direct_dw = J->nblk == 1; /* a single block accumulates straight into dw */
  size_t col_b = round64((size_t)(g->C * g->KH * g->KW * J->rows * g->OW) * sizeof(float));
  size_t dw_b = need_dw && !direct_dw ? round64((size_t)(J->nblk * OK) * sizeof(float)) : 0;
  size_t db_b = need_db ? round64((size_t)(J->nblk * O) * sizeof(double)) : 0;
  size_t mask_b = backward && J->relu_y ? round64((size_t)(O * g->OH * g->OW) * sizeof(float)) : 0;
  /* dx by the flipped-kernel convolution needs stride 1, a square kernel and pad < kernel size
   * (so the flipped convolution's padding KH-1-pad is >= 0), and our gemm. */
  bool flip = backward && J->dx && own_direct() && g->stride == 1 && g->KH == g->KW && g->pad < g->KH &&
              !is_pointwise(g);
  size_t flip_b = flip ? round64((size_t)OK * sizeof(float)) : 0;
  bool use_dwt = need_dw && dw_from_image(g);
  size_t dwt_b = use_dwt ? round64((size_t)OK * sizeof(float)) : 0;
  bool cached;
  char *base = scratch_get(col_b * (size_t)nth + dw_b + db_b + mask_b * (size_t)nth + flip_b + dwt_b * (size_t)nth,
                           &cached);
  if (!base) return -1;
  float *dwtbuf[RB_MAXDIM * 2];
  for (int t = 0; t < nth; t++)
    dwtbuf[t] = (float *)(void *)(base + col_b * (size_t)nth + dw_b + db_b + mask_b * (size_t)nth + flip_b +
                                  dwt_b * (size_t)t);
  J->dwt = use_dwt ? dwtbuf : NULL;
  J->wflip = NULL;
  if (flip) {
    /* wflip[c][o][kh][kw] = w[o][c][KH-1-kh][KW-1-kw] */
    float *wf = (float *)(void *)(base + col_b * (size_t)nth + dw_b + db_b + mask_b * (size_t)nth);
    int64_t C = g->C, KH = g->KH, KW = g->KW;
    for (int64_t c = 0; c < C; c++)
      for (int64_t o = 0; o < O; o++)
        for (int64_t kh = 0; kh < KH; kh++)
          for (int64_t kw = 0; kw < KW; kw++)
            wf[((c * O + o) * KH + kh) * KW + kw] = J->w[((o * C + c) * KH + (KH - 1 - kh)) * KW + (KW - 1 - kw)];
    J->wflip = wf;
    J->gflip = (rb_conv_geom){.N = g->N, .C = O, .H = g->OH, .W = g->OW, .O = C, .KH = KH, .KW = KW, .stride = 1,
                              .pad = KH - 1 - g->pad, .OH = g->H, .OW = g->W};
  }
  float *colbuf[RB_MAXDIM * 2], *maskbuf[RB_MAXDIM * 2];
  for (int t = 0; t < nth; t++) {
    colbuf[t] = (float *)(void *)(base + col_b * (size_t)t);
    maskbuf[t] = (float *)(void *)(base + col_b * (size_t)nth + dw_b + db_b + mask_b * (size_t)t);
  }
  J->col = colbuf;
  J->dymask = maskbuf;
  J->dwblk = need_dw ? (direct_dw ? J->dw : (float *)(void *)(base + col_b * (size_t)nth)) : NULL;
  J->dbblk = need_db ? (double *)(void *)(base + col_b * (size_t)nth + dw_b) : NULL;
  atomic_init(&J->next, 0);
  if (nth > 1) {
    openblas_set_num_threads(1);
    rb_parallel(nth, fn, J);
    openblas_set_num_threads(blas);
  } else {
    fn(J, 0, 1);
  }
  if (need_dw && !direct_dw) {
    memcpy(J->dw, J->dwblk, (size_t)OK * sizeof(float));
    for (int64_t b = 1; b < J->nblk; b++) {
      const float *src = J->dwblk + b * OK;
      for (int64_t i = 0; i < OK; i++) J->dw[i] += src[i];
    }
  }
  if (need_db) {
    for (int64_t o = 0; o < O; o++) {
      double s = 0;
      for (int64_t b = 0; b < J->nblk; b++) s += J->dbblk[b * O + o];
      J->db[o] = (float)s;
    }
  }
  scratch_put(base, cached);
  return 0;
}

int rb_conv_fwd_f32(const float *x, const float *w, const float *bias, float *out, const rb_conv_geom *g,
                    bool relu) {
  if (g->N == 0) return 0;
  conv_job J;
  memset(&J, 0, sizeof J);
  J.x = x; J.w = w; J.bias = bias; J.out = out; J.g = g; J.relu = relu;
  return conv_run(&J, conv_fwd_task, false);
}

int rb_conv_bwd_f32(const float *x, const float *w, const float *dy, const float *relu_y, float *dx, float *dw,
                    float *db, const rb_conv_geom *g) {
  int64_t K = g->C * g->KH * g->KW;
  if (g->N == 0) {
    if (dw) memset(dw, 0, (size_t)(g->O * K) * sizeof(float));
    if (db) memset(db, 0, (size_t)g->O * sizeof(float));
    return 0;
  }
  conv_job J;
  memset(&J, 0, sizeof J);
  J.x = x; J.w = w; J.dy = dy; J.relu_y = relu_y; J.dx = dx; J.dw = dw; J.db = db; J.g = g;
  return conv_run(&J, conv_bwd_task, true);
}
