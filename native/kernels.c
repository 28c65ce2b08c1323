/*
 * Elementwise, reduction, Sinkhorn, pooling and optimiser kernels on float32, plus the small thread
 * pool they (and conv.c) share. Semantics follow src/core/backend/js.ts (the reference) exactly,
 * including NaN handling; arithmetic that js.ts does in float64 is done in double here too where
 * it is cheap, so results agree to the last float32 ulp or so.
 *
 * Built without -ffast-math/-fassociative-math (see binding.gyp), so the compiler never reorders
 * float arithmetic: reductions that need several vector accumulators are written with intrinsics.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "rb.h"
#include "rb_loops.h"
#include "rb_math.h"

/* ------------------------------------------------------------------------------------------------
 * Thread pool. Workers are created lazily and kept: creating pthreads per call costs ~30 µs,
 * which matters for Sinkhorn and conv layers called many times per training step.
 * ---------------------------------------------------------------------------------------------- */

#define RB_POOL_MAX 64

static struct {
  pthread_mutex_t mu;
  pthread_cond_t work_cv, done_cv;
  pthread_mutex_t busy; /* held by the one caller that owns the pool for a job */
  int nworkers;
  unsigned long gen;
  rb_task_fn fn;
  void *ctx;
  int nthreads;
  int pending;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, 0, 0, NULL, NULL, 0, 0};

/* Generation current when each worker was created: a worker spawned by a dispatch must still see
 * that dispatch as new, even though it only gets the lock after the generation was bumped. */
static unsigned long start_gen[RB_POOL_MAX];

static void *pool_worker(void *arg) {
  int tid = (int)(intptr_t)arg;
  pthread_mutex_lock(&pool.mu);
  unsigned long seen = start_gen[tid];
  for (;;) {
    while (pool.gen == seen) pthread_cond_wait(&pool.work_cv, &pool.mu);
    seen = pool.gen;
    if (tid >= pool.nthreads) continue;
    rb_task_fn fn = pool.fn;
    void *ctx = pool.ctx;
    int n = pool.nthreads;
    pthread_mutex_unlock(&pool.mu);
    fn(ctx, tid, n);
    pthread_mutex_lock(&pool.mu);
    if (--pool.pending == 0) pthread_cond_signal(&pool.done_cv);
  }
  return NULL;
}

int rb_threads(void) {
  int n = openblas_get_num_threads();
  if (n < 1) n = 1;
  if (n > RB_POOL_MAX) n = RB_POOL_MAX;
  return n;
}

void rb_parallel(int n, rb_task_fn fn, void *ctx) {
  if (n > RB_POOL_MAX) n = RB_POOL_MAX;
  /* A second caller (a JS worker thread using the addon concurrently) runs serially instead of
   * waiting; every task must therefore be correct for any thread count, including 1. */
  if (n <= 1 || pthread_mutex_trylock(&pool.busy) != 0) {
    fn(ctx, 0, 1);
    return;
  }
  pthread_mutex_lock(&pool.mu);
  while (pool.nworkers < n - 1) {
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    start_gen[pool.nworkers + 1] = pool.gen;
    int rc = pthread_create(&th, &attr, pool_worker, (void *)(intptr_t)(pool.nworkers + 1));
    pthread_attr_destroy(&attr);
    if (rc != 0) break;
    pool.nworkers++;
  }
  if (pool.nworkers < n - 1) n = pool.nworkers + 1;
  if (n <= 1) {
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.busy);
    fn(ctx, 0, 1);
    return;
  }
  pool.fn = fn;
  pool.ctx = ctx;
  pool.nthreads = n;
  pool.pending = n - 1;
  pool.gen++;
  pthread_cond_broadcast(&pool.work_cv);
  pthread_mutex_unlock(&pool.mu);
  fn(ctx, 0, n);
  pthread_mutex_lock(&pool.mu);
  while (pool.pending > 0) pthread_cond_wait(&pool.done_cv, &pool.mu);
  pthread_mutex_unlock(&pool.mu);
  pthread_mutex_unlock(&pool.busy);
}

/* Spin barrier for phases inside one pool job; jobs are short (Sinkhorn phases are ~100 µs), so a
 * futex sleep would cost more than the wait. Yields after a while in case cores are oversubscribed. */
typedef struct {
  atomic_int count;
  atomic_int gen;
} rb_barrier;

static void rb_barrier_wait(rb_barrier *b, int n) {
  if (n <= 1) return;
  int g = atomic_load_explicit(&b->gen, memory_order_acquire);
  if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == n - 1) {
    atomic_store_explicit(&b->count, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->gen, 1, memory_order_release);
    return;
  }
  for (long spins = 0; atomic_load_explicit(&b->gen, memory_order_acquire) == g; spins++) {
    if (spins > 2000) sched_yield();
#ifdef __AVX2__
    else _mm_pause();
#endif
  }
}


/* ------------------------------------------------------------------------------------------------
 * Reduction helpers
 * ---------------------------------------------------------------------------------------------- */

/* Max ignoring NaN (matches `if (v > m) m = v` from -Inf). GCC will not vectorise that loop while
 * NaNs are honoured, so it is written with intrinsics. */
static float max_f32(const float *x, size_t n) {
  size_t i = 0;
  float m = -INFINITY;
#ifdef __AVX2__
  __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
  for (; i + 32 <= n; i += 32) {
    /* max_ps(a, b) returns b when a is NaN, so NaNs in x are skipped. */
    m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
    m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
    m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
  }
  for (; i + 8 <= n; i += 8) m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
  m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
  float lanes[8];
  _mm256_storeu_ps(lanes, m0);
  for (int k = 0; k < 8; k++) m = lanes[k] > m ? lanes[k] : m;
#endif
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

#ifdef __AVX2__
static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline double hsum256d(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
#endif

double rb_sum_f32(const float *x, size_t n) {
  size_t i = 0;
  double s = 0;
#ifdef __AVX2__
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(x + i)));
    a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)));
    a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)));
    a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12)));
  }
  s = hsum256d(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
#endif
  for (; i < n; i++) s += x[i];
  return s;
}

static double sum_squares(const float *x, size_t n) {
  size_t i = 0;
  double s = 0;
#ifdef __AVX2__
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  for (; i + 16 <= n; i += 16) {
    __m256d v0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), v1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    __m256d v2 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)), v3 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
    /* Separate multiply and add, not FMA: the same rounding as js.ts's s += x*x. */
    a0 = _mm256_add_pd(a0, _mm256_mul_pd(v0, v0));
    a1 = _mm256_add_pd(a1, _mm256_mul_pd(v1, v1));
    a2 = _mm256_add_pd(a2, _mm256_mul_pd(v2, v2));
    a3 = _mm256_add_pd(a3, _mm256_mul_pd(v3, v3));
  }
  s = hsum256d(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
#endif
  for (; i < n; i++) { double v = x[i]; s += v * v; }
  return s;
}

/* Σ exp(x[i] - shift), also storing the exps when out != NULL: float partial sums in blocks of
 * 512 (vectorised), blocks added in double so long rows keep float64-like accuracy. */
static double exp_shift_sum(const float *x, size_t n, float shift, float *out) {
  double total = 0;
  size_t i = 0;
#ifdef __AVX2__
  __m256 sh = _mm256_set1_ps(shift);
  while (i + 8 <= n) {
    size_t end = i + 512 < n ? i + 512 : n;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= end; i += 16) {
      __m256 e0 = rb_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
      __m256 e1 = rb_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), sh));
      if (out) { _mm256_storeu_ps(out + i, e0); _mm256_storeu_ps(out + i + 8, e1); }
      a0 = _mm256_add_ps(a0, e0);
      a1 = _mm256_add_ps(a1, e1);
    }
    for (; i + 8 <= end; i += 8) {
      __m256 e0 = rb_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
      if (out) _mm256_storeu_ps(out + i, e0);
      a0 = _mm256_add_ps(a0, e0);
    }
    total += hsum256(_mm256_add_ps(a0, a1));
  }
#endif
  float s = 0;
  for (; i < n; i++) {
    float e = rb_expf(x[i] - shift);
    if (out) out[i] = e;
    s += e;
  }
  return total + s;
}

static double sumexp_f32(const float *x, size_t n, float shift) { return exp_shift_sum(x, n, shift, NULL); }

/* A double c carried as two floats hi + lo (lo = the rounding error of hi), so float code can
 * subtract it with double-like accuracy: (x - hi) - lo is within ~1 ulp of the exact x - c, where
 * x - (float)c would be off by up to ulp(|c|), large when log-values are large (small temperatures).
 * Needs strict float semantics (no reassociation), which binding.gyp's flags guarantee. */
static inline void split_hi_lo(double c, float *hi, float *lo) {
  float h = (float)c;
  *hi = h;
  *lo = isfinite(h) ? (float)(c - (double)h) : 0.0f;
}

/* row[j] = (row[j] - hi[j]) - lo[j], returning the new row's max (NaN skipped, like max_f32). */
static float sub_max_f32(float *row, const float *hi, const float *lo, size_t n) {
  size_t j = 0;
  float m = -INFINITY;
#ifdef __AVX2__
  __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
  for (; j + 16 <= n; j += 16) {
    __m256 v0 = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(row + j), _mm256_loadu_ps(hi + j)), _mm256_loadu_ps(lo + j));
    __m256 v1 = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(row + j + 8), _mm256_loadu_ps(hi + j + 8)),
                              _mm256_loadu_ps(lo + j + 8));
    _mm256_storeu_ps(row + j, v0);
    _mm256_storeu_ps(row + j + 8, v1);
    m0 = _mm256_max_ps(v0, m0);
    m1 = _mm256_max_ps(v1, m1);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_max_ps(m0, m1));
  for (int k = 0; k < 8; k++) m = lanes[k] > m ? lanes[k] : m;
#endif
  for (; j < n; j++) {
    float v = (row[j] - hi[j]) - lo[j];
    row[j] = v;
    m = v > m ? v : m;
  }
  return m;
}

/* log Σ exp over a contiguous row, -Inf safe: an all -Inf row gives -Inf, a +Inf entry gives +Inf. */
static double lse_row_f32(const float *x, size_t n) {
  float m = max_f32(x, n);
  if (!isfinite(m)) return m;
  return (double)m + log(sumexp_f32(x, n, m));
}

/* ------------------------------------------------------------------------------------------------
 * Elementwise
 * ---------------------------------------------------------------------------------------------- */

/* The AVX2 paths for exp and sigmoid, then the shared scalar loop (rb_loops.h) for the rest. */
static void unary_serial(int op, const float *x, float *out, size_t n) {
  size_t i = 0;
#ifdef __AVX2__
  if (op == RB_EXP) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, rb_exp256(_mm256_loadu_ps(x + i)));
  } else if (op == RB_SIGMOID) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
      __m256 v = _mm256_loadu_ps(x + i);
      __m256 e = rb_exp256(_mm256_or_ps(v, sign)); /* exp(-|v|) */
      __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, e));
      __m256 res = _mm256_blendv_ps(_mm256_mul_ps(e, r), r, _mm256_cmp_ps(v, zero, _CMP_GE_OQ));
      _mm256_storeu_ps(out + i, _mm256_blendv_ps(res, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    }
  }
#endif
  rb_unary_loop(op, x, out, (ptrdiff_t)i, (ptrdiff_t)n);
}

/* Drops size-1 axes and merges axes that are contiguous in every operand (out is packed), so the
 * common cases (same shape, bias rows, per-row scalars) end up as one long inner loop. */
static int collapse_dims(int nd, const int64_t *shape, const int64_t *s1, const int64_t *s2, int64_t *cs,
                         int64_t *c1, int64_t *c2) {
  int k = 0;
  for (int d = 0; d < nd; d++) {
    if (shape[d] == 1) continue;
    if (k > 0 && c1[k - 1] == s1[d] * shape[d] && (!s2 || c2[k - 1] == s2[d] * shape[d])) {
      cs[k - 1] *= shape[d];
      c1[k - 1] = s1[d];
      if (s2) c2[k - 1] = s2[d];
      continue;
    }
    cs[k] = shape[d];
    c1[k] = s1[d];
    if (s2) c2[k] = s2[d];
    k++;
  }
  return k;
}

void rb_binary_f32(int op, const float *a, const int64_t *aStr, const float *b, const int64_t *bStr,
                   float *out, const int64_t *shape, int nd) {
  int64_t cs[RB_MAXDIM], ca[RB_MAXDIM], cb[RB_MAXDIM];
  for (int d = 0; d < nd; d++) if (shape[d] == 0) return;
  int k = collapse_dims(nd, shape, aStr, bStr, cs, ca, cb);
  if (k == 0) {
    rb_binary_inner(op, a, 1, b, 1, out, 1);
    return;
  }
  int last = k - 1;
  int64_t len = cs[last], sa = ca[last], sb = cb[last];
  int64_t idx[RB_MAXDIM] = {0};
  int64_t ao = 0, bo = 0, outer = 1;
  for (int d = 0; d < last; d++) outer *= cs[d];
  float *po = out;
  for (int64_t r = 0; r < outer; r++) {
    rb_binary_inner(op, a + ao, sa, b + bo, sb, po, len);
    po += len;
    for (int d = last - 1; d >= 0; d--) {
      ao += ca[d];
      bo += cb[d];
      if (++idx[d] < cs[d]) break;
      ao -= ca[d] * cs[d];
      bo -= cb[d] * cs[d];
      idx[d] = 0;
    }
  }
}

void rb_copy_strided_f32(const float *x, int64_t offset, const int64_t *strides, float *out,
                         const int64_t *shape, int nd) {
  int64_t cs[RB_MAXDIM], cx[RB_MAXDIM];
  for (int d = 0; d < nd; d++) if (shape[d] == 0) return;
  int k = collapse_dims(nd, shape, strides, NULL, cs, cx, NULL);
  if (k == 0) {
    out[0] = x[offset];
    return;
  }
  int last = k - 1;
  int64_t len = cs[last], s = cx[last];
  int64_t idx[RB_MAXDIM] = {0};
  int64_t xo = offset, outer = 1;
  for (int d = 0; d < last; d++) outer *= cs[d];
  float *po = out;
  for (int64_t r = 0; r < outer; r++) {
    const float *px = x + xo;
    if (s == 1) memcpy(po, px, (size_t)len * sizeof(float));
    else if (s == 0) { float v = px[0]; for (int64_t i = 0; i < len; i++) po[i] = v; }
    else for (int64_t i = 0; i < len; i++) po[i] = px[i * s];
    po += len;
    for (int d = last - 1; d >= 0; d--) {
      xo += cx[d];
      if (++idx[d] < cs[d]) break;
      xo -= cx[d] * cs[d];
      idx[d] = 0;
    }
  }
}

void rb_axpy_f32(double alpha, const float *x, float *y, size_t n) { rb_axpy_loop(alpha, x, y, (ptrdiff_t)n); }

void rb_affine_f32(const float *x, double alpha, double beta, float *out, size_t n) {
  rb_affine_loop(x, alpha, beta, out, (ptrdiff_t)n);
}

/* Large elementwise passes are memory-bound on one core; split them over the pool. Each element is
 * computed as in the serial loop, so results do not depend on the thread count. */
#define ELEMENTWISE_PARALLEL_MIN ((size_t)1 << 18)

typedef struct {
  int op;
  const float *x, *dy;
  float *out;
  size_t n;
} elementwise_job;

static void unary_task(void *p, int tid, int nth) {
  elementwise_job *J = p;
  size_t lo, hi;
  rb_split_range(J->n, tid, nth, 16, &lo, &hi);
  if (hi > lo) unary_serial(J->op, J->x + lo, J->out + lo, hi - lo);
}

static void relu_backward_task(void *p, int tid, int nth) {
  elementwise_job *J = p;
  size_t lo, hi;
  rb_split_range(J->n, tid, nth, 16, &lo, &hi);
  if (hi > lo) rb_relu_backward_loop(J->x + lo, J->dy + lo, J->out + lo, (ptrdiff_t)(hi - lo));
}

void rb_unary_f32(int op, const float *x, float *out, size_t n) {
  elementwise_job J = {op, x, NULL, out, n};
  rb_parallel(n >= ELEMENTWISE_PARALLEL_MIN ? rb_threads() : 1, unary_task, &J);
}

void rb_relu_backward_f32(const float *x, const float *dy, float *dx, size_t n) {
  elementwise_job J = {0, x, dy, dx, n};
  rb_parallel(n >= ELEMENTWISE_PARALLEL_MIN ? rb_threads() : 1, relu_backward_task, &J);
}

double rb_sum_squares_f32(const float *x, size_t n) { return sum_squares(x, n); }

/* ------------------------------------------------------------------------------------------------
 * Reductions over the middle axis of [outer, len, inner]
 * ---------------------------------------------------------------------------------------------- */

int rb_logsumexp_f32(const float *x, size_t outer, size_t len, size_t inner, float *out) {
  if (inner == 1) {
    for (size_t o = 0; o < outer; o++) out[o] = (float)lse_row_f32(x + o * len, len);
    return 0;
  }
  float *mx = malloc(inner * sizeof(float));
  float *shift = malloc(inner * sizeof(float));
  double *s = malloc(inner * sizeof(double));
  if (!mx || !shift || !s) { free(mx); free(shift); free(s); return -1; }
  rb_logsumexp_inner(x, (ptrdiff_t)outer, (ptrdiff_t)len, (ptrdiff_t)inner, out, mx, shift, s, log);
  free(mx); free(shift); free(s);
  return 0;
}

int rb_sum_axis_f32(const float *x, size_t outer, size_t len, size_t inner, float *out) {
  if (inner == 1) {
    for (size_t o = 0; o < outer; o++) {
      out[o] = (float)rb_sum_f32(x + o * len, len);
    }
    return 0;
  }
  double *acc = malloc(inner * sizeof(double));
  if (!acc) return -1;
  for (size_t o = 0; o < outer; o++) {
    const float *base = x + o * len * inner;
    for (size_t i = 0; i < inner; i++) acc[i] = 0;
    for (size_t l = 0; l < len; l++) {
      const float *r = base + l * inner;
      for (size_t i = 0; i < inner; i++) acc[i] += r[i];
    }
    for (size_t i = 0; i < inner; i++) out[o * inner + i] = (float)acc[i];
  }
  free(acc);
  return 0;
}

/* First maximum wins; the first NaN wins over everything (like PyTorch's max). */
void rb_max_axis_f32(const float *x, size_t outer, size_t len, size_t inner, float *out, int32_t *argmax) {
  for (size_t o = 0; o < outer; o++) {
    const float *base = x + o * len * inner;
    float *po = out + o * inner;
    int32_t *pa = argmax + o * inner;
    if (len == 0) {
      for (size_t i = 0; i < inner; i++) { po[i] = -INFINITY; pa[i] = -1; }
      continue;
    }
    if (inner == 1) {
      float best = base[0];
      int32_t arg = 0;
      for (size_t l = 1; l < len && best == best; l++) {
        float v = base[l];
        if (v > best || v != v) { best = v; arg = (int32_t)l; }
      }
      po[0] = best;
      pa[0] = arg;
      continue;
    }
    for (size_t i = 0; i < inner; i++) { po[i] = base[i]; pa[i] = 0; }
    for (size_t l = 1; l < len; l++) {
      const float *r = base + l * inner;
      int32_t li = (int32_t)l;
      for (size_t i = 0; i < inner; i++) {
        float v = r[i], b = po[i];
        int upd = (v > b || v != v) && b == b;
        po[i] = upd ? v : b;
        pa[i] = upd ? li : pa[i];
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------------
 * Log-domain Sinkhorn
 *
 * One exp per entry per iteration and one sweep over the matrix: the row step computes
 * e_ij = exp(P_ij - max_i) for its log-sum-exp anyway, and after the row is normalised
 * exp(P'_ij) = e_ij · a_i / Σ_j e_ij, so the column sums the next column step needs are
 * accumulated during the row sweep. The column step then only takes logs of n sums.
 * Columns whose accumulated sum is tiny (their entries underflow in the linear domain) are
 * recomputed from the matrix with a max shift, and so is every column in the first iteration or
 * after a row that produced a non-finite value, so results stay -Inf/NaN-exact like js.ts.
 * With several threads the row sweep splits rows (each thread accumulates its own column sums)
 * and the column step splits columns, with a barrier between.
 * ---------------------------------------------------------------------------------------------- */

typedef struct {
  float *P;
  size_t m, n, iters;
  const float *logA, *logB;
  double *acc;  /* [nthreads][n] column sums of exp(P) from the last row sweep */
  float *clse;  /* [2n] column LSE - logB as hi (first n) + lo (next n), see split_hi_lo */
  float *ebuf;  /* [nthreads][n] exps of the current row */
  float *fbuf;  /* [nthreads][n] float partial column sums, flushed into acc */
  atomic_int robust[2]; /* per-iteration parity: some row went non-finite */
  rb_barrier bar;
} sk_job;

/* Column LSEs of columns [c0, c1) straight from P, max-shifted. Blocks of 64 columns keep the
 * accumulators in registers/L1 while walking down the rows. */
static void sk_cols_from_matrix(sk_job *J, size_t c0, size_t c1) {
  const float *P = J->P;
  size_t m = J->m, n = J->n;
  float cmax[64], shift[64], fs[64];
  double ds[64];
  for (size_t jb = c0; jb < c1; jb += 64) {
    size_t bw = c1 - jb < 64 ? c1 - jb : 64;
    for (size_t j = 0; j < bw; j++) { cmax[j] = -INFINITY; ds[j] = 0; }
    for (size_t i = 0; i < m; i++) {
      const float *row = P + i * n + jb;
      for (size_t j = 0; j < bw; j++) cmax[j] = row[j] > cmax[j] ? row[j] : cmax[j];
    }
    for (size_t j = 0; j < bw; j++) shift[j] = isfinite(cmax[j]) ? cmax[j] : 0.0f;
    for (size_t i0 = 0; i0 < m; i0 += 256) {
      size_t i1 = i0 + 256 < m ? i0 + 256 : m;
      for (size_t j = 0; j < bw; j++) fs[j] = 0;
      for (size_t i = i0; i < i1; i++) {
        const float *row = P + i * n + jb;
        size_t j = 0;
#ifdef __AVX2__
        for (; j + 8 <= bw; j += 8) {
          __m256 e = rb_exp256(_mm256_sub_ps(_mm256_loadu_ps(row + j), _mm256_loadu_ps(shift + j)));
          _mm256_storeu_ps(fs + j, _mm256_add_ps(_mm256_loadu_ps(fs + j), e));
        }
#endif
        for (; j < bw; j++) fs[j] += rb_expf(row[j] - shift[j]);
      }
      for (size_t j = 0; j < bw; j++) ds[j] += fs[j];
    }
    for (size_t j = 0; j < bw; j++) {
      double l = cmax[j] == -INFINITY ? -INFINITY : (double)shift[j] + log(ds[j]);
      if (J->logB) l -= J->logB[jb + j];
      split_hi_lo(l, &J->clse[jb + j], &J->clse[n + jb + j]);
    }
  }
}

static void sk_run(sk_job *J, int tid, int nth) {
  float *P = J->P;
  size_t m = J->m, n = J->n;
  size_t r0, r1, c0, c1;
  rb_split_range(m, tid, nth, 1, &r0, &r1);
  rb_split_range(n, tid, nth, 16, &c0, &c1); /* 64-byte column slices: no false sharing */
  double *acc = J->acc + (size_t)tid * n;
  float *e = J->ebuf + (size_t)tid * n;
  float *fs = J->fbuf + (size_t)tid * n;
  float *chi = J->clse, *clo = J->clse + n;
  bool robust = true;
  for (size_t it = 0; it < J->iters; it++) {
    /* Column step over [c0, c1). */
    if (tid == 0) atomic_store_explicit(&J->robust[it & 1], 0, memory_order_relaxed);
    if (robust) {
      sk_cols_from_matrix(J, c0, c1);
    } else {
      for (size_t j = c0; j < c1; j++) {
        double s = 0;
        for (int t = 0; t < nth; t++) s += J->acc[(size_t)t * n + j];
        /* Below 1e-30 the float terms behind s have lost precision (or s is 0): recompute. */
        if (!(s >= 1e-30) || !isfinite(s)) { sk_cols_from_matrix(J, j, j + 1); continue; }
        double l = log(s);
        if (J->logB) l -= J->logB[j];
        split_hi_lo(l, &chi[j], &clo[j]);
      }
    }
    rb_barrier_wait(&J->bar, nth);
    /* Row step over [r0, r1), accumulating the next column sums. */
    bool bad = false;
    for (size_t j = 0; j < n; j++) { acc[j] = 0; fs[j] = 0; }
    for (size_t i = r0; i < r1; i++) {
      float *row = P + i * n;
      float mx = sub_max_f32(row, chi, clo, n);
      double l, s = 0;
      if (mx == -INFINITY) {
        l = -INFINITY;
      } else {
        s = exp_shift_sum(row, n, mx, e);
        l = (double)mx + log(s);
      }
      double la = J->logA ? (double)J->logA[i] : 0.0;
      l -= la;
      float lh, ll;
      split_hi_lo(l, &lh, &ll);
      for (size_t j = 0; j < n; j++) row[j] = (row[j] - lh) - ll;
      if (!isfinite(l)) { bad = true; continue; }
      /* exp(new row) = e · a_i / s */
      float f = (float)(exp(la) / s);
      for (size_t j = 0; j < n; j++) fs[j] += e[j] * f;
      if (((i - r0) & 63) == 63) for (size_t j = 0; j < n; j++) { acc[j] += fs[j]; fs[j] = 0; }
    }
    for (size_t j = 0; j < n; j++) acc[j] += fs[j];
    if (bad) atomic_store_explicit(&J->robust[it & 1], 1, memory_order_relaxed);
    rb_barrier_wait(&J->bar, nth);
    robust = atomic_load_explicit(&J->robust[it & 1], memory_order_relaxed) != 0;
  }
}

typedef struct {
  float *logP;
  size_t batch, m, n, iters;
  const float *logA, *logB;
  float *scratch; /* per thread, batch mode: acc (2n floats' worth) + clse + ebuf + fbuf */
  sk_job *single; /* cooperative mode: one matrix shared by all threads */
} sk_task;

/* floats per thread: acc and clse as n doubles each, ebuf, fbuf */
#define SK_SCRATCH_PER_THREAD(n) (6 * (size_t)(n))

static void sk_batch_task(void *p, int tid, int nth) {
  sk_task *T = p;
  size_t b0, b1;
  rb_split_range(T->batch, tid, nth, 1, &b0, &b1);
  float *scr = T->scratch + (size_t)tid * SK_SCRATCH_PER_THREAD(T->n);
  for (size_t b = b0; b < b1; b++) {
    sk_job J;
    memset(&J, 0, sizeof J);
    J.P = T->logP + b * T->m * T->n;
    J.m = T->m; J.n = T->n; J.iters = T->iters; J.logA = T->logA; J.logB = T->logB;
    J.acc = (double *)(void *)scr;
    J.clse = scr + 2 * T->n;
    J.ebuf = scr + 4 * T->n;
    J.fbuf = scr + 5 * T->n;
    sk_run(&J, 0, 1);
  }
}

static void sk_coop_task(void *p, int tid, int nth) {
  sk_task *T = p;
  /* nth (not the requested count) sizes the barrier: the pool may have granted fewer threads. */
  sk_run(T->single, tid, nth);
}

int rb_sinkhorn_log_f32(float *logP, size_t batch, size_t m, size_t n, size_t iters, const float *logA,
                        const float *logB) {
  if (batch == 0 || m == 0 || n == 0 || iters == 0) return 0;
  int nth = rb_threads();
  /* Below ~64k entries per thread the barrier/wake-up cost outweighs the split. */
  size_t work = batch * m * n;
  if ((size_t)nth * 65536 > work) nth = (int)(work / 65536);
  if (nth < 1) nth = 1;
  sk_task T = {logP, batch, m, n, iters, logA, logB, NULL, NULL};
  if (batch >= (size_t)nth) {
    /* aligned_alloc-free: malloc is 16-byte aligned, enough for the double view at offset 0. */
    T.scratch = malloc((size_t)nth * SK_SCRATCH_PER_THREAD(n) * sizeof(float));
    if (!T.scratch) return -1;
    rb_parallel(nth, sk_batch_task, &T);
    free(T.scratch);
    return 0;
  }
  /* Fewer matrices than threads: split each matrix across the threads. */
  double *acc = malloc((size_t)nth * n * sizeof(double));
  float *fl = malloc(((size_t)2 * nth + 2) * n * sizeof(float));
  if (!acc || !fl) { free(acc); free(fl); return -1; }
  for (size_t b = 0; b < batch; b++) {
    sk_job J;
    memset(&J, 0, sizeof J);
    J.P = logP + b * m * n;
    J.m = m; J.n = n; J.iters = iters; J.logA = logA; J.logB = logB;
    J.acc = acc;
    J.clse = fl;
    J.ebuf = fl + 2 * n;
    J.fbuf = fl + 2 * n + (size_t)nth * n;
    atomic_init(&J.robust[0], 0);
    atomic_init(&J.robust[1], 0);
    atomic_init(&J.bar.count, 0);
    atomic_init(&J.bar.gen, 0);
    T.single = &J;
    rb_parallel(nth, sk_coop_task, &T);
  }
  free(acc); free(fl);
  return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Gather / scatter (indices already validated by the caller)
 * ---------------------------------------------------------------------------------------------- */

void rb_gather_f32(const float *x, size_t outer, size_t len, size_t inner, const int32_t *index, size_t k,
                   float *out) {
  for (size_t o = 0; o < outer; o++) {
    const float *xb = x + o * len * inner;
    float *ob = out + o * k * inner;
    if (inner == 1) {
      for (size_t j = 0; j < k; j++) ob[j] = xb[index[j]];
    } else {
      for (size_t j = 0; j < k; j++) memcpy(ob + j * inner, xb + (size_t)index[j] * inner, inner * sizeof(float));
    }
  }
}

void rb_scatter_add_f32(const float *dy, size_t outer, size_t len, size_t inner, const int32_t *index,
                        size_t k, float *dx) {
  for (size_t o = 0; o < outer; o++) {
    float *xb = dx + o * len * inner;
    const float *yb = dy + o * k * inner;
    if (inner == 1) {
      for (size_t j = 0; j < k; j++) xb[index[j]] += yb[j];
    } else {
      for (size_t j = 0; j < k; j++) {
        float *d = xb + (size_t)index[j] * inner;
        const float *s = yb + j * inner;
        for (size_t i = 0; i < inner; i++) d[i] += s[i];
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------------
 * Pooling
 * ---------------------------------------------------------------------------------------------- */

typedef struct {
  const float *x;
  float *out;
  int32_t *arg;
  const rb_pool_geom *g;
} pool_job;

/* Output position o's window along one axis starts at input o·s - pad (returned); its offsets
 * [k0, k1) are the ones inside [0, n). */
static inline int64_t pool_window(int64_t o, int64_t s, int64_t pad, int64_t K, int64_t n, int64_t *k0, int64_t *k1) {
  int64_t i0 = o * s - pad;
  *k0 = i0 < 0 ? -i0 : 0;
  *k1 = i0 + K > n ? n - i0 : K;
  return i0;
}

static void maxpool_planes(const pool_job *J, size_t p0, size_t p1) {
  const rb_pool_geom *g = J->g;
  int64_t H = g->H, W = g->W, K = g->K, s = g->stride, pad = g->pad, OH = g->OH, OW = g->OW;
  for (size_t p = p0; p < p1; p++) {
    const float *xp = J->x + p * H * W;
    float *op = J->out + p * OH * OW;
    int32_t *ap = J->arg + p * OH * OW;
    if (K == 2 && s == 2 && pad == 0) {
      /* The CNN case; every window is fully inside. */
      for (int64_t oh = 0; oh < OH; oh++) {
        const float *r0 = xp + 2 * oh * W, *r1 = r0 + W;
        int32_t base = (int32_t)(2 * oh * W);
        for (int64_t ow = 0; ow < OW; ow++) {
          float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
          int32_t i0 = base + (int32_t)(2 * ow);
          float best = a;
          int32_t arg = i0;
          if (b > best || b != b) { best = b; arg = i0 + 1; }
          if (c > best || c != c) { best = c; arg = i0 + (int32_t)W; }
          if (d > best || d != d) { best = d; arg = i0 + (int32_t)W + 1; }
          op[oh * OW + ow] = best;
          ap[oh * OW + ow] = arg;
        }
      }
      continue;
    }
    for (int64_t oh = 0; oh < OH; oh++) {
      int64_t kh0, kh1, h0 = pool_window(oh, s, pad, K, H, &kh0, &kh1);
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t kw0, kw1, w0 = pool_window(ow, s, pad, K, W, &kw0, &kw1);
        float best = -INFINITY;
        int32_t arg = -1;
        for (int64_t kh = kh0; kh < kh1; kh++) {
          const float *r = xp + (h0 + kh) * W;
          for (int64_t kw = kw0; kw < kw1; kw++) {
            float v = r[w0 + kw];
            if (arg < 0 || v > best || v != v) { best = v; arg = (int32_t)((h0 + kh) * W + w0 + kw); }
          }
        }
        op[oh * OW + ow] = best;
        ap[oh * OW + ow] = arg;
      }
    }
  }
}

static void maxpool_task(void *p, int tid, int nth) {
  pool_job *J = p;
  size_t lo, hi;
  rb_split_range((size_t)(J->g->N * J->g->C), tid, nth, 1, &lo, &hi);
  maxpool_planes(J, lo, hi);
}

void rb_maxpool_fwd_f32(const float *x, float *out, int32_t *argmax, const rb_pool_geom *g) {
  pool_job J = {x, out, argmax, g};
  size_t total = (size_t)(g->N * g->C * g->OH * g->OW * g->K * g->K);
  int nth = total >= (1u << 18) ? rb_threads() : 1;
  rb_parallel(nth, maxpool_task, &J);
}

typedef struct {
  const float *dy;
  const int32_t *argmax;
  float *dx;
  const rb_pool_geom *g;
} maxpool_bwd_job;

/* Planes are independent, so threads split them; each plane is cleared just before its scatter
 * (while it is in cache) rather than in one pass over all of dx. */
static void maxpool_bwd_task(void *p, int tid, int nth) {
  maxpool_bwd_job *J = p;
  const rb_pool_geom *g = J->g;
  size_t in = (size_t)(g->H * g->W), on = (size_t)(g->OH * g->OW), lo, hi;
  rb_split_range((size_t)(g->N * g->C), tid, nth, 1, &lo, &hi);
  for (size_t p = lo; p < hi; p++) {
    float *xp = J->dx + p * in;
    const float *yp = J->dy + p * on;
    const int32_t *ap = J->argmax + p * on;
    memset(xp, 0, in * sizeof(float));
    for (size_t i = 0; i < on; i++) {
      int32_t a = ap[i];
      if (a >= 0) xp[a] += yp[i];
    }
  }
}

void rb_maxpool_bwd_f32(const float *dy, const int32_t *argmax, float *dx, const rb_pool_geom *g) {
  maxpool_bwd_job J = {dy, argmax, dx, g};
  size_t total = (size_t)(g->N * g->C * g->H * g->W);
  int nth = total >= (1u << 18) ? rb_threads() : 1;
  rb_parallel(nth, maxpool_bwd_task, &J);
}

void rb_avgpool_fwd_f32(const float *x, float *out, const rb_pool_geom *g) {
  int64_t H = g->H, W = g->W, K = g->K, s = g->stride, pad = g->pad, OH = g->OH, OW = g->OW;
  double inv = 1.0 / (double)(K * K);
  size_t planes = (size_t)(g->N * g->C);
  for (size_t p = 0; p < planes; p++) {
    const float *xp = x + p * H * W;
    float *op = out + p * OH * OW;
    for (int64_t oh = 0; oh < OH; oh++) {
      int64_t kh0, kh1, h0 = pool_window(oh, s, pad, K, H, &kh0, &kh1);
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t kw0, kw1, w0 = pool_window(ow, s, pad, K, W, &kw0, &kw1);
        double acc = 0;
        for (int64_t kh = kh0; kh < kh1; kh++) {
          const float *r = xp + (h0 + kh) * W + w0;
          for (int64_t kw = kw0; kw < kw1; kw++) acc += r[kw];
        }
        op[oh * OW + ow] = (float)(acc * inv);
      }
    }
  }
}

void rb_avgpool_bwd_f32(const float *dy, float *dx, const rb_pool_geom *g) {
  int64_t H = g->H, W = g->W, K = g->K, s = g->stride, pad = g->pad, OH = g->OH, OW = g->OW;
  double inv = 1.0 / (double)(K * K);
  size_t planes = (size_t)(g->N * g->C);
  memset(dx, 0, planes * (size_t)(H * W) * sizeof(float));
  for (size_t p = 0; p < planes; p++) {
    float *xp = dx + p * H * W;
    const float *yp = dy + p * OH * OW;
    for (int64_t oh = 0; oh < OH; oh++) {
      int64_t kh0, kh1, h0 = pool_window(oh, s, pad, K, H, &kh0, &kh1);
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t kw0, kw1, w0 = pool_window(ow, s, pad, K, W, &kw0, &kw1);
        double d = (double)yp[oh * OW + ow] * inv;
        for (int64_t kh = kh0; kh < kh1; kh++) {
          float *r = xp + (h0 + kh) * W + w0;
          for (int64_t kw = kw0; kw < kw1; kw++) r[kw] = (float)((double)r[kw] + d);
        }
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------------
 * Loss and optimisers
 * ---------------------------------------------------------------------------------------------- */

double rb_softmax_ce_f32(const float *logits, const int32_t *labels, size_t N, size_t C, float *probs) {
  double loss = 0;
  for (size_t r = 0; r < N; r++) {
    const float *l = logits + r * C;
    float *p = probs + r * C;
    float m = max_f32(l, C);
    double s = exp_shift_sum(l, C, m, p);
    double inv = 1.0 / s;
    for (size_t c = 0; c < C; c++) p[c] = (float)((double)p[c] * inv);
    loss += (double)m + log(s) - (double)l[labels[r]];
  }
  return loss;
}

void rb_adamw_f32(float *param, const float *grad, float *m, float *v, size_t n, double lr, double beta1,
                  double beta2, double eps, double wd, double step) {
  double bc1 = 1.0 - pow(beta1, step), bc2 = 1.0 - pow(beta2, step);
  rb_adamw_loop(param, grad, m, v, (ptrdiff_t)n, beta1, beta2, eps, lr / bc1, sqrt(bc2), 1.0 - lr * wd);
}

void rb_sgd_f32(float *param, const float *grad, float *buf, size_t n, double lr, double momentum,
                double dampening, bool nesterov, double wd, bool first) {
  rb_sgd_loop(param, grad, buf, (ptrdiff_t)n, lr, momentum, dampening, nesterov, wd, first);
}
