/*
 * Portable loops shared by the native build (kernels.c) and the wasm build (wasm/kernels.c): the
 * scalar forms of the elementwise ops, the broadcasting binary op's inner loop, and the optimiser
 * steps. Plain C on floats and doubles (rb_math.h for exp/log/tanh); each build puts its own
 * vector paths (AVX2, SIMD128) and threading around them. Semantics follow src/core/backend/js.ts.
 * Lengths and strides are ptrdiff_t: 64-bit natively, 32-bit in wasm32.
 */
#ifndef RB_LOOPS_H
#define RB_LOOPS_H

#include <stdbool.h>
#include <stddef.h>

#include "rb.h"
#include "rb_math.h"

/* out[i] = op(x[i]) for i in [from, n) (op: enum rb_unary); the builds vectorise exp and sigmoid
 * up to `from`. */
static void rb_unary_loop(int op, const float *x, float *out, ptrdiff_t from, ptrdiff_t n) {
  ptrdiff_t i = from;
  switch (op) {
  case RB_NEG: for (; i < n; i++) out[i] = -x[i]; break;
  case RB_EXP: for (; i < n; i++) out[i] = rb_expf(x[i]); break;
  case RB_LOG: for (; i < n; i++) out[i] = rb_logf(x[i]); break;
  case RB_RELU: for (; i < n; i++) out[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
  case RB_TANH: for (; i < n; i++) out[i] = rb_tanhf(x[i]); break;
  case RB_SIGMOID:
    for (; i < n; i++) {
      /* exp of -|x| never overflows, and e/(1+e) keeps relative precision for large negative x. */
      float v = x[i];
      float e = rb_expf(-fabsf(v));
      float r = 1.0f / (1.0f + e);
      out[i] = v >= 0.0f ? r : (v != v ? v : e * r);
    }
    break;
  case RB_SQRT: for (; i < n; i++) out[i] = sqrtf(x[i]); break;
  case RB_ABS: for (; i < n; i++) out[i] = fabsf(x[i]); break;
  case RB_SQUARE: for (; i < n; i++) out[i] = x[i] * x[i]; break;
  default: break;
  }
}

/* max/min like js.ts: NaN in a propagates; NaN only in b propagates too (comparison fails). */
#define RB_MAXF(x, y) (((x) >= (y) || (x) != (x)) ? (x) : (y))
#define RB_MINF(x, y) (((x) <= (y) || (x) != (x)) ? (x) : (y))

/* One strided inner loop per (op, stride pattern); the unit-stride and broadcast (stride 0) forms
 * are separate so each vectorises. */
#define RB_BIN_INNER(EXPR)                                                                   \
  do {                                                                                       \
    if (sa == 1 && sb == 1) {                                                                \
      for (ptrdiff_t i = 0; i < len; i++) { float x = pa[i], y = pb[i]; po[i] = (EXPR); }    \
    } else if (sa == 1 && sb == 0) {                                                         \
      float y = pb[0];                                                                       \
      for (ptrdiff_t i = 0; i < len; i++) { float x = pa[i]; po[i] = (EXPR); }               \
    } else if (sa == 0 && sb == 1) {                                                         \
      float x = pa[0];                                                                       \
      for (ptrdiff_t i = 0; i < len; i++) { float y = pb[i]; po[i] = (EXPR); }               \
    } else {                                                                                 \
      for (ptrdiff_t i = 0; i < len; i++) { float x = pa[i * sa], y = pb[i * sb]; po[i] = (EXPR); } \
    }                                                                                        \
  } while (0)

/* po[i] = op(pa[i·sa], pb[i·sb]) for i in [0, len) (op: enum rb_binary). */
static void rb_binary_inner(int op, const float *pa, ptrdiff_t sa, const float *pb, ptrdiff_t sb, float *po,
                            ptrdiff_t len) {
  switch (op) {
  case RB_ADD: RB_BIN_INNER(x + y); break;
  case RB_SUB: RB_BIN_INNER(x - y); break;
  case RB_MUL: RB_BIN_INNER(x * y); break;
  case RB_DIV: RB_BIN_INNER(x / y); break;
  case RB_MAX: RB_BIN_INNER(RB_MAXF(x, y)); break;
  case RB_MIN: RB_BIN_INNER(RB_MINF(x, y)); break;
  default: break;
  }
}

/* In double, like js.ts (one rounding to float at the end). */
static inline void rb_axpy_loop(double alpha, const float *x, float *y, ptrdiff_t n) {
  for (ptrdiff_t i = 0; i < n; i++) y[i] = (float)((double)y[i] + alpha * (double)x[i]);
}

static inline void rb_affine_loop(const float *x, double alpha, double beta, float *out, ptrdiff_t n) {
  for (ptrdiff_t i = 0; i < n; i++) out[i] = (float)(alpha * (double)x[i] + beta);
}

static inline void rb_relu_backward_loop(const float *x, const float *dy, float *dx, ptrdiff_t n) {
  for (ptrdiff_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

/* One AdamW step; the caller computes stepSize = lr / (1 - β1^t), bc2Sqrt = √(1 - β2^t) and
 * decay = 1 - lr·wd (the wasm build has no pow). */
static void rb_adamw_loop(float *param, const float *grad, float *m, float *v, ptrdiff_t n, double beta1, double beta2,
                          double eps, double stepSize, double bc2Sqrt, double decay) {
  double omb1 = 1.0 - beta1, omb2 = 1.0 - beta2;
  for (ptrdiff_t i = 0; i < n; i++) {
    double g = grad[i];
    float p = (float)((double)param[i] * decay);
    float mi = (float)(beta1 * (double)m[i] + omb1 * g);
    float vi = (float)(beta2 * (double)v[i] + omb2 * g * g);
    m[i] = mi;
    v[i] = vi;
    param[i] = (float)((double)p - stepSize * (double)mi / (sqrt((double)vi) / bc2Sqrt + eps));
  }
}

/* One SGD step (momentum, dampening, Nesterov, weight decay as torch.optim.SGD); buf is untouched
 * without momentum. */
static void rb_sgd_loop(float *param, const float *grad, float *buf, ptrdiff_t n, double lr, double momentum,
                        double dampening, bool nesterov, double wd, bool first) {
  if (momentum == 0) {
    for (ptrdiff_t i = 0; i < n; i++) {
      double g = (double)grad[i] + wd * (double)param[i];
      param[i] = (float)((double)param[i] - lr * g);
    }
    return;
  }
  double omd = 1.0 - dampening;
  for (ptrdiff_t i = 0; i < n; i++) {
    double g = (double)grad[i] + wd * (double)param[i];
    double b = first ? g : momentum * (double)buf[i] + omd * g;
    buf[i] = (float)b;
    g = nesterov ? g + momentum * b : b;
    param[i] = (float)((double)param[i] - lr * g);
  }
}

/* logsumexp over the middle axis of [outer, len, inner] with inner > 1, vectorisable across the
 * inner axis: a running max row, then a row of exp sums in double. Scratch rows mx, shift (floats)
 * and s (doubles) of `inner` each; `log_double` is the build's log (libc natively, its own in wasm). */
static void rb_logsumexp_inner(const float *x, ptrdiff_t outer, ptrdiff_t len, ptrdiff_t inner, float *out,
                               float *mx, float *shift, double *s, double (*log_double)(double)) {
  for (ptrdiff_t o = 0; o < outer; o++) {
    const float *base = x + o * len * inner;
    for (ptrdiff_t i = 0; i < inner; i++) { mx[i] = -INFINITY; s[i] = 0; }
    for (ptrdiff_t l = 0; l < len; l++) {
      const float *r = base + l * inner;
      for (ptrdiff_t i = 0; i < inner; i++) mx[i] = r[i] > mx[i] ? r[i] : mx[i];
    }
    for (ptrdiff_t i = 0; i < inner; i++) shift[i] = isfinite(mx[i]) ? mx[i] : 0.0f;
    for (ptrdiff_t l = 0; l < len; l++) {
      const float *r = base + l * inner;
      for (ptrdiff_t i = 0; i < inner; i++) s[i] += (double)rb_expf(r[i] - shift[i]);
    }
    float *po = out + o * inner;
    for (ptrdiff_t i = 0; i < inner; i++) po[i] = isfinite(mx[i]) ? (float)((double)mx[i] + log_double(s[i])) : mx[i];
  }
}

#endif
