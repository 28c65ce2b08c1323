/*
 * N-API glue: argument checking and dispatch to the compute files. Every exported function takes
 * the same arguments as the matching method of the `Kernels` interface (src/core/backend/types.ts)
 * and works on the caller's typed arrays in place (zero copy). Float arrays must be Float32Array
 * (solve also takes Float64Array, and refuses non-finite entries); anything malformed throws a TypeError or RangeError that names
 * the kernel and the argument, before any memory is touched.
 */
#define _DEFAULT_SOURCE /* madvise */
#include <cblas.h>
#include <malloc.h>
#include <math.h>
#include <node_api.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rb.h"

/* Everything the addon exports, by its JS name: the kernels (KERNEL_TABLE in
 * src/core/backend/types.ts, same order) and the controls (NATIVE_CONTROLS in native.ts). Each
 * is implemented below as api_<name>; these lists declare those functions and register them in
 * NAPI_MODULE_INIT, and test/backend-native.test.ts checks the exports against the TS lists. */
#define RB_KERNELS(X)                                                                                      \
  X(gemm) X(gemmStrided) X(solve) X(logsumexp) X(logsumexpBackward) X(sinkhornLog) X(sumAxis) X(maxAxis)  \
  X(unary) X(binary) X(axpy) X(affine) X(reluBackward) X(standardizeRows) X(standardizeRowsBackward) X(gelu) X(geluBackward) X(gather) X(scatterAdd) X(copyStrided) X(conv2dForward)              \
  X(conv2dBackward) X(maxPool2dForward) X(maxPool2dBackward) X(avgPool2dForward) X(avgPool2dBackward)    \
  X(softmaxCrossEntropy) X(adamw) X(sgd) X(sumSquares)
#define RB_CONTROLS(X) X(setThreads) X(getThreads) X(config) X(convTune) X(convStrategy) X(allocatorTuned) X(gemmImpl) X(setErfTable)

#define DECLARE(name) static napi_value api_##name(napi_env env, napi_callback_info info);
RB_KERNELS(DECLARE)
RB_CONTROLS(DECLARE)
#undef DECLARE

#define MAX_ARGS 20
#define MAX_INDEX 9007199254740991.0 /* 2^53 - 1: exact in a JS number */

typedef struct {
  napi_env env;
  const char *kernel;
  size_t argc;
  napi_value argv[MAX_ARGS];
  bool failed;
} call_t;

static void fail(call_t *c, bool range, const char *fmt, ...) {
  if (c->failed) return;
  c->failed = true;
  char msg[512];
  int k = snprintf(msg, sizeof msg, "rebasin native %s: ", c->kernel);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
  va_end(ap);
  bool pending = false;
  napi_is_exception_pending(c->env, &pending);
  if (pending) return;
  if (range) napi_throw_range_error(c->env, NULL, msg);
  else napi_throw_type_error(c->env, NULL, msg);
}

static bool begin(call_t *c, napi_env env, napi_callback_info info, const char *kernel, size_t want) {
  c->env = env;
  c->kernel = kernel;
  c->failed = false;
  c->argc = MAX_ARGS;
  if (napi_get_cb_info(env, info, &c->argc, c->argv, NULL, NULL) != napi_ok) {
    fail(c, false, "could not read arguments");
    return false;
  }
  if (c->argc < want) {
    fail(c, false, "expected %zu arguments, got %zu", want, c->argc);
    return false;
  }
  return true;
}

static const char *typed_name(napi_typedarray_type t) {
  switch (t) {
  case napi_int8_array: return "Int8Array";
  case napi_uint8_array: return "Uint8Array";
  case napi_uint8_clamped_array: return "Uint8ClampedArray";
  case napi_int16_array: return "Int16Array";
  case napi_uint16_array: return "Uint16Array";
  case napi_int32_array: return "Int32Array";
  case napi_uint32_array: return "Uint32Array";
  case napi_float32_array: return "Float32Array";
  case napi_float64_array: return "Float64Array";
  default: return "a typed array of another kind";
  }
}

static const char *js_type_name(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return "unknown";
  switch (t) {
  case napi_undefined: return "undefined";
  case napi_null: return "null";
  case napi_boolean: return "boolean";
  case napi_number: return "number";
  case napi_string: return "string";
  case napi_object: return "an object";
  case napi_function: return "a function";
  default: return "another type";
  }
}

/* Returns the data of typed-array argument i if it has type `want`, else fails the call. */
static void *get_typed(call_t *c, size_t i, const char *name, napi_typedarray_type want, size_t *len) {
  *len = 0;
  if (c->failed) return NULL;
  napi_value v = c->argv[i];
  bool is = false;
  napi_is_typedarray(c->env, v, &is);
  napi_typedarray_type t;
  void *data = NULL;
  size_t n = 0;
  if (!is || napi_get_typedarray_info(c->env, v, &t, &n, &data, NULL, NULL) != napi_ok) {
    fail(c, false, "argument '%s' must be a %s, got %s", name, typed_name(want), js_type_name(c->env, v));
    return NULL;
  }
  if (t != want) {
    fail(c, false, "argument '%s' must be a %s, got %s", name, typed_name(want), typed_name(t));
    return NULL;
  }
  *len = n;
  /* An empty or detached array may report a NULL pointer; hand out a valid one. */
  static float empty[1];
  return data ? data : (void *)empty;
}

static float *get_f32(call_t *c, size_t i, const char *name, size_t *len) {
  return get_typed(c, i, name, napi_float32_array, len);
}

static bool is_nullish(call_t *c, size_t i) {
  napi_valuetype t;
  if (i >= c->argc) return true;
  if (napi_typeof(c->env, c->argv[i], &t) != napi_ok) return false;
  return t == napi_null || t == napi_undefined;
}

static float *get_f32_or_null(call_t *c, size_t i, const char *name, size_t *len) {
  *len = 0;
  if (c->failed || is_nullish(c, i)) return NULL;
  return get_f32(c, i, name, len);
}

static int32_t *get_i32(call_t *c, size_t i, const char *name, size_t *len) {
  return get_typed(c, i, name, napi_int32_array, len);
}

static double get_num(call_t *c, size_t i, const char *name) {
  if (c->failed) return 0;
  double d = 0;
  if (napi_get_value_double(c->env, c->argv[i], &d) != napi_ok) {
    fail(c, false, "argument '%s' must be a number, got %s", name, js_type_name(c->env, c->argv[i]));
    return 0;
  }
  return d;
}

static int64_t get_int(call_t *c, size_t i, const char *name, double lo, double hi) {
  double d = get_num(c, i, name);
  if (c->failed) return 0;
  if (!(d == floor(d)) || d < lo || d > hi) {
    fail(c, true, "argument '%s' must be an integer in [%.0f, %.0f], got %g", name, lo, hi, d);
    return 0;
  }
  return (int64_t)d;
}

/* Non-negative size/offset argument. */
static int64_t get_size(call_t *c, size_t i, const char *name) { return get_int(c, i, name, 0, MAX_INDEX); }

/* Dimension that reaches BLAS/LAPACK (32-bit integers there). */
static int64_t get_dim(call_t *c, size_t i, const char *name) { return get_int(c, i, name, 0, 2147483647.0); }

static bool get_bool(call_t *c, size_t i, const char *name) {
  if (c->failed) return false;
  bool b = false;
  if (napi_get_value_bool(c->env, c->argv[i], &b) != napi_ok) {
    fail(c, false, "argument '%s' must be a boolean, got %s", name, js_type_name(c->env, c->argv[i]));
    return false;
  }
  return b;
}

static int get_enum(call_t *c, size_t i, const char *name, const char *const *names, int count) {
  if (c->failed) return -1;
  char buf[32];
  size_t n = 0;
  if (napi_get_value_string_utf8(c->env, c->argv[i], buf, sizeof buf, &n) != napi_ok) {
    fail(c, false, "argument '%s' must be a string, got %s", name, js_type_name(c->env, c->argv[i]));
    return -1;
  }
  for (int k = 0; k < count; k++)
    if (strcmp(buf, names[k]) == 0) return k;
  fail(c, true, "unknown %s '%s'", name, buf);
  return -1;
}

/* Reads a JS array (or typed array) of integers; `neg` allows negative values (strides). */
static int get_int_list(call_t *c, size_t i, const char *name, int64_t *out, bool neg) {
  if (c->failed) return -1;
  napi_value v = c->argv[i];
  bool is = false;
  uint32_t n = 0;
  napi_is_array(c->env, v, &is);
  if (is) {
    napi_get_array_length(c->env, v, &n);
  } else {
    napi_is_typedarray(c->env, v, &is);
    if (is) {
      napi_typedarray_type t;
      size_t len;
      napi_get_typedarray_info(c->env, v, &t, &len, NULL, NULL, NULL);
      n = (uint32_t)len;
    }
  }
  if (!is) {
    fail(c, false, "argument '%s' must be an array of integers, got %s", name, js_type_name(c->env, v));
    return -1;
  }
  if (n > RB_MAXDIM) {
    fail(c, true, "argument '%s' has %u entries; at most %d dimensions are supported", name, n, RB_MAXDIM);
    return -1;
  }
  for (uint32_t k = 0; k < n; k++) {
    napi_value e;
    double d;
    if (napi_get_element(c->env, v, k, &e) != napi_ok || napi_get_value_double(c->env, e, &d) != napi_ok) {
      fail(c, false, "argument '%s'[%u] must be a number", name, k);
      return -1;
    }
    if (!(d == floor(d)) || d > MAX_INDEX || d < (neg ? -MAX_INDEX : 0)) {
      fail(c, true, "argument '%s'[%u] must be an integer%s, got %g", name, k, neg ? "" : " >= 0", d);
      return -1;
    }
    out[k] = (int64_t)d;
  }
  return (int)n;
}

/* Product of non-negative sizes; fails on overflow past 2^53. */
static int64_t prod(call_t *c, const char *what, int64_t a, int64_t b) {
  if (c->failed) return 0;
  if (a != 0 && b > (int64_t)MAX_INDEX / a) {
    fail(c, true, "%s is too large", what);
    return 0;
  }
  return a * b;
}

static void need_len(call_t *c, const char *name, size_t have, int64_t need) {
  if (c->failed) return;
  if ((int64_t)have < need) fail(c, true, "argument '%s' has length %zu, needs at least %lld", name, have, (long long)need);
}

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static napi_value number(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static void oom(call_t *c) { fail(c, true, "out of memory"); }

/* Output arrays are usually fresh allocations (the tensor layer allocates per op), whose pages the
 * kernel faults in on first write; in this VM a 4 KiB fault costs ~15 µs, so writing a fresh
 * 32 MiB array costs ~120 ms against ~2 ms of actual work. Asking for transparent huge pages on
 * the 2 MiB-aligned interior makes that 16 faults instead of 8192. Advice only: no effect on
 * contents, and harmless on memory that is already populated. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
static void hint_huge(void *p, size_t bytes) {
  const uintptr_t huge = (uintptr_t)2 << 20, small = 4096;
  if (bytes < 2 * huge) return;
  uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), b = ((uintptr_t)p + bytes) & ~(huge - 1);
  if (b > a) madvise((void *)a, b - a, MADV_HUGEPAGE);
  /* The unaligned ends stay 4 KiB pages: fault them in with one call instead of one trap each. */
  uintptr_t s0 = ((uintptr_t)p + small - 1) & ~(small - 1), e0 = ((uintptr_t)p + bytes) & ~(small - 1);
  if (e0 > s0) madvise((void *)s0, e0 - s0, MADV_POPULATE_WRITE);
}


/* ------------------------------------------------------------------------------------------------
 * Geometry objects
 * ---------------------------------------------------------------------------------------------- */

static int64_t geom_field(call_t *c, napi_value obj, const char *arg, const char *key, double lo) {
  if (c->failed) return 0;
  napi_value v;
  double d = 0;
  if (napi_get_named_property(c->env, obj, key, &v) != napi_ok || napi_get_value_double(c->env, v, &d) != napi_ok) {
    fail(c, false, "argument '%s' must have a numeric field '%s'", arg, key);
    return 0;
  }
  if (!(d == floor(d)) || d < lo || d > 2147483647.0) {
    fail(c, true, "argument '%s': field '%s' must be an integer >= %.0f, got %g", arg, key, lo, d);
    return 0;
  }
  return (int64_t)d;
}

static bool get_object(call_t *c, size_t i, const char *name, napi_value *obj) {
  if (c->failed) return false;
  napi_valuetype t;
  napi_typeof(c->env, c->argv[i], &t);
  if (t != napi_object) {
    fail(c, false, "argument '%s' must be an object, got %s", name, js_type_name(c->env, c->argv[i]));
    return false;
  }
  *obj = c->argv[i];
  return true;
}

/* A geometry struct's fields in the order they are read: name, lowest allowed value, and place. */
typedef struct {
  const char *key;
  double lo;
  size_t at;
} geom_key;

#define CONV_KEY(f, lo) {#f, lo, offsetof(rb_conv_geom, f)}
static const geom_key conv_keys[] = {
    CONV_KEY(N, 0), CONV_KEY(C, 1), CONV_KEY(H, 1), CONV_KEY(W, 1), CONV_KEY(O, 1), CONV_KEY(KH, 1),
    CONV_KEY(KW, 1), CONV_KEY(stride, 1), CONV_KEY(pad, 0), CONV_KEY(OH, 1), CONV_KEY(OW, 1)};
#define POOL_KEY(f, lo) {#f, lo, offsetof(rb_pool_geom, f)}
static const geom_key pool_keys[] = {
    POOL_KEY(N, 0), POOL_KEY(C, 1), POOL_KEY(H, 1), POOL_KEY(W, 1), POOL_KEY(K, 1),
    POOL_KEY(stride, 1), POOL_KEY(pad, 0), POOL_KEY(OH, 1), POOL_KEY(OW, 1)};

/* Reads geometry argument i (always named 'g') into the int64_t fields of g. */
static bool get_geom(call_t *c, size_t i, const geom_key *keys, size_t n, void *g) {
  napi_value o;
  if (!get_object(c, i, "g", &o)) return false;
  for (size_t k = 0; k < n; k++) *(int64_t *)((char *)g + keys[k].at) = geom_field(c, o, "g", keys[k].key, keys[k].lo);
  return !c->failed;
}

static void get_conv_geom(call_t *c, size_t i, rb_conv_geom *g) {
  if (!get_geom(c, i, conv_keys, sizeof conv_keys / sizeof conv_keys[0], g)) return;
  int64_t oh = (g->H + 2 * g->pad - g->KH) / g->stride + 1, ow = (g->W + 2 * g->pad - g->KW) / g->stride + 1;
  if (g->H + 2 * g->pad < g->KH || g->W + 2 * g->pad < g->KW || oh != g->OH || ow != g->OW)
    fail(c, true, "geometry mismatch: with H=%lld W=%lld KH=%lld KW=%lld stride=%lld pad=%lld, OH/OW must be %lld/%lld, got %lld/%lld",
         (long long)g->H, (long long)g->W, (long long)g->KH, (long long)g->KW, (long long)g->stride, (long long)g->pad,
         (long long)oh, (long long)ow, (long long)g->OH, (long long)g->OW);
  /* Every product the kernels form must stay in range. */
  prod(c, "N*C*H*W", prod(c, "N*C*H*W", prod(c, "N*C*H*W", g->N, g->C), g->H), g->W);
  prod(c, "N*O*OH*OW", prod(c, "N*O*OH*OW", prod(c, "N*O*OH*OW", g->N, g->O), g->OH), g->OW);
  prod(c, "C*KH*KW*OH*OW", prod(c, "C*KH*KW*OH*OW", prod(c, "C*KH*KW", prod(c, "C*KH*KW", g->C, g->KH), g->KW), g->OH), g->OW);
  prod(c, "O*C*KH*KW", prod(c, "O*C*KH*KW", g->O, g->C), g->KH * g->KW);
}

static void get_pool_geom(call_t *c, size_t i, rb_pool_geom *g) {
  if (!get_geom(c, i, pool_keys, sizeof pool_keys / sizeof pool_keys[0], g)) return;
  int64_t oh = (g->H + 2 * g->pad - g->K) / g->stride + 1, ow = (g->W + 2 * g->pad - g->K) / g->stride + 1;
  if (g->H + 2 * g->pad < g->K || g->W + 2 * g->pad < g->K || oh != g->OH || ow != g->OW)
    fail(c, true, "geometry mismatch: with H=%lld W=%lld K=%lld stride=%lld pad=%lld, OH/OW must be %lld/%lld, got %lld/%lld",
         (long long)g->H, (long long)g->W, (long long)g->K, (long long)g->stride, (long long)g->pad, (long long)oh,
         (long long)ow, (long long)g->OH, (long long)g->OW);
  prod(c, "N*C*H*W", prod(c, "N*C*H*W", prod(c, "N*C*H*W", g->N, g->C), g->H), g->W);
  prod(c, "N*C*OH*OW", prod(c, "N*C*OH*OW", prod(c, "N*C*OH*OW", g->N, g->C), g->OH), g->OW);
  if (!c->failed && g->H * g->W > 2147483647) fail(c, true, "H*W must fit in an Int32 argmax");
}

/* ------------------------------------------------------------------------------------------------
 * gemm / gemmStrided / solve
 * ---------------------------------------------------------------------------------------------- */

/* Elements a (rows×cols, leading dimension ld) starting at off reaches: 0 if empty. */
static int64_t extent(int64_t off, int64_t rows, int64_t cols, int64_t ld) {
  if (rows == 0 || cols == 0) return 0;
  return off + (rows - 1) * ld + cols;
}

/* A gemm operand: the array, where the matrix starts, and its leading dimension (gemm) or the
 * distance between consecutive matrices (gemmStrided). */
typedef struct {
  float *p;
  size_t len;
  int64_t off, ld;
} operand;

/* The arguments gemm and gemmStrided share (0..15), read in argument order. */
typedef struct {
  bool ta, tb;
  int64_t M, N, K;
  double alpha, beta;
  operand A, B, C;
} gemm_call;

static void get_operand(call_t *c, size_t i, const char *const names[3], double ld_max, operand *o) {
  o->p = get_f32(c, i, names[0], &o->len);
  o->off = get_size(c, i + 1, names[1]);
  o->ld = get_int(c, i + 2, names[2], 0, ld_max);
}

static bool get_gemm_call(call_t *c, bool strided, gemm_call *g) {
  static const char *const names[2][3][3] = {{{"A", "aOff", "lda"}, {"B", "bOff", "ldb"}, {"C", "cOff", "ldc"}},
                                             {{"A", "aOff", "strideA"}, {"B", "bOff", "strideB"}, {"C", "cOff", "strideC"}}};
  /* A leading dimension reaches BLAS (get_dim's range); a stride is only an offset (get_size's). */
  double ld_max = strided ? MAX_INDEX : 2147483647.0;
  g->ta = get_bool(c, 0, "transA");
  g->tb = get_bool(c, 1, "transB");
  g->M = get_dim(c, 2, "M");
  g->N = get_dim(c, 3, "N");
  g->K = get_dim(c, 4, "K");
  g->alpha = get_num(c, 5, "alpha");
  get_operand(c, 6, names[strided][0], ld_max, &g->A);
  get_operand(c, 9, names[strided][1], ld_max, &g->B);
  g->beta = get_num(c, 12, "beta");
  get_operand(c, 13, names[strided][2], ld_max, &g->C);
  return !c->failed;
}

static napi_value api_gemm(napi_env env, napi_callback_info info) {
  call_t c;
  gemm_call g;
  if (!begin(&c, env, info, "gemm", 16) || !get_gemm_call(&c, false, &g)) return NULL;
  int64_t M = g.M, N = g.N, K = g.K, lda = g.A.ld, ldb = g.B.ld, ldc = g.C.ld;
  int64_t ar = g.ta ? K : M, ac = g.ta ? M : K, br = g.tb ? N : K, bc = g.tb ? K : N;
  if (lda < (ac > 1 ? ac : 1)) fail(&c, true, "lda=%lld is less than the %lld columns of the stored A", (long long)lda, (long long)ac);
  if (ldb < (bc > 1 ? bc : 1)) fail(&c, true, "ldb=%lld is less than the %lld columns of the stored B", (long long)ldb, (long long)bc);
  if (ldc < (N > 1 ? N : 1)) fail(&c, true, "ldc=%lld is less than N=%lld", (long long)ldc, (long long)N);
  if (M > 0 && N > 0 && K > 0) {
    need_len(&c, "A", g.A.len, extent(g.A.off, ar, ac, lda));
    need_len(&c, "B", g.B.len, extent(g.B.off, br, bc, ldb));
  }
  need_len(&c, "C", g.C.len, extent(g.C.off, M, N, ldc));
  if (c.failed) return NULL;
  float *C = g.C.p + g.C.off;
  if (g.beta == 0 && M > 0) hint_huge(C, (size_t)((M - 1) * ldc + N) * sizeof(float));
  rb_gemm_f32(g.ta, g.tb, M, N, K, (float)g.alpha, g.A.p + g.A.off, lda, g.B.p + g.B.off, ldb, (float)g.beta, C, ldc);
  return undefined(env);
}

static napi_value api_gemmStrided(napi_env env, napi_callback_info info) {
  call_t c;
  gemm_call g;
  if (!begin(&c, env, info, "gemmStrided", 17) || !get_gemm_call(&c, true, &g)) return NULL;
  int64_t count = get_size(&c, 16, "count");
  if (c.failed) return NULL;
  int64_t M = g.M, N = g.N, K = g.K, sA = g.A.ld, sB = g.B.ld, sC = g.C.ld;
  prod(&c, "M*N*count", prod(&c, "M*N", M, N), count);
  prod(&c, "M*K", M, K);
  prod(&c, "K*N", K, N);
  if (count > 0 && M > 0 && N > 0) {
    int64_t last = count - 1;
    if (K > 0) {
      need_len(&c, "A", g.A.len, g.A.off + prod(&c, "strideA*count", last, sA) + M * K);
      need_len(&c, "B", g.B.len, g.B.off + prod(&c, "strideB*count", last, sB) + K * N);
    }
    need_len(&c, "C", g.C.len, g.C.off + prod(&c, "strideC*count", last, sC) + M * N);
  }
  if (c.failed) return NULL;
  float *C = g.C.p + g.C.off;
  if (g.beta == 0 && count > 0 && sC > 0) hint_huge(C, (size_t)((count - 1) * sC + M * N) * sizeof(float));
  rb_gemm_strided_f32(g.ta, g.tb, M, N, K, (float)g.alpha, g.A.p + g.A.off, sA, g.B.p + g.B.off, sB, (float)g.beta, C,
                      sC, count);
  return undefined(env);
}

/* solve refuses non-finite systems up front (LU would only turn them into NaN answers), naming the
 * first bad entry in the words of the JS kernel. */
static void check_finite(call_t *c, const char *what, const void *p, bool f64, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows * cols && !c->failed; i++) {
    double v = f64 ? ((const double *)p)[i] : ((const float *)p)[i];
    if (!isfinite(v))
      fail(c, true, "%s has a non-finite value (%s) at row %lld, column %lld", what,
           isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity", (long long)(i / cols), (long long)(i % cols));
  }
}

static napi_value api_solve(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "solve", 4)) return NULL;
  int64_t n = get_int(&c, 0, "n", 0, 46340); /* n*n must fit a 32-bit LAPACK index */
  int64_t nrhs = get_dim(&c, 1, "nrhs");
  if (c.failed) return NULL;
  bool isA = false;
  napi_typedarray_type ta = napi_float32_array;
  napi_is_typedarray(env, c.argv[2], &isA);
  if (isA) napi_get_typedarray_info(env, c.argv[2], &ta, NULL, NULL, NULL, NULL);
  if (!isA || (ta != napi_float32_array && ta != napi_float64_array)) {
    fail(&c, false, "argument 'A' must be a Float32Array or Float64Array, got %s",
         isA ? typed_name(ta) : js_type_name(env, c.argv[2]));
    return NULL;
  }
  size_t la, lb;
  void *A = get_typed(&c, 2, "A", ta, &la);
  void *B = get_typed(&c, 3, "B", ta, &lb); /* same dtype as A */
  need_len(&c, "A", la, n * n);
  need_len(&c, "B", lb, prod(&c, "n*nrhs", n, nrhs));
  if (c.failed) return NULL;
  char matrix[64];
  snprintf(matrix, sizeof matrix, "the %lld×%lld matrix", (long long)n, (long long)n);
  check_finite(&c, matrix, A, ta == napi_float64_array, n, n);
  check_finite(&c, "the right-hand side", B, ta == napi_float64_array, n, nrhs);
  if (c.failed) return NULL;
  rb_lapack_report_clear();
  int r = ta == napi_float32_array ? rb_solve_f32((int)n, (int)nrhs, A, B) : rb_solve_f64((int)n, (int)nrhs, A, B);
  if (r == -1) { oom(&c); return NULL; }
  if (r == -3) { fail(&c, true, "LAPACK reported an error (the LU factors overflowed, so the matrix for least squares could not be rebuilt)"); return NULL; }
  if (r < 0) {
    const char *why = rb_lapack_report();
    if (why[0]) fail(&c, true, "LAPACK reported an error (%s)", why);
    else fail(&c, true, "LAPACK reported an error");
    return NULL;
  }
  napi_value s;
  napi_create_string_utf8(env, r == 0 ? "lu" : "lstsq", NAPI_AUTO_LENGTH, &s);
  return s;
}

/* ------------------------------------------------------------------------------------------------
 * Reductions over [outer, len, inner]
 * ---------------------------------------------------------------------------------------------- */

static bool get_oli(call_t *c, size_t i, int64_t *outer, int64_t *len, int64_t *inner, int64_t *total) {
  *outer = get_size(c, i, "outer");
  *len = get_size(c, i + 1, "len");
  *inner = get_size(c, i + 2, "inner");
  *total = prod(c, "outer*len*inner", prod(c, "outer*len*inner", *outer, *len), *inner);
  prod(c, "outer*inner", *outer, *inner);
  return !c->failed;
}

enum { AXIS_LOGSUMEXP, AXIS_SUM, AXIS_MAX };

/* logsumexp, sumAxis and maxAxis: x [outer, len, inner] reduced over len into out [outer, inner]
 * (and maxAxis's argmax [outer, inner]). */
static napi_value reduce_axis(napi_env env, napi_callback_info info, int op) {
  static const char *const kernels[] = {"logsumexp", "sumAxis", "maxAxis"};
  call_t c;
  if (!begin(&c, env, info, kernels[op], op == AXIS_MAX ? 6 : 5)) return NULL;
  size_t lx, lo, la = 0;
  float *x = get_f32(&c, 0, "x", &lx);
  int64_t outer, len, inner, total;
  get_oli(&c, 1, &outer, &len, &inner, &total);
  float *out = get_f32(&c, 4, "out", &lo);
  int32_t *arg = NULL;
  if (op == AXIS_MAX) {
    arg = get_i32(&c, 5, "argmax", &la);
    if (!c.failed && len > 2147483647) fail(&c, true, "len must fit in Int32 argmax");
  }
  need_len(&c, "x", lx, total);
  need_len(&c, "out", lo, outer * inner);
  if (op == AXIS_MAX) need_len(&c, "argmax", la, outer * inner);
  if (c.failed) return NULL;
  if (op == AXIS_MAX) {
    rb_max_axis_f32(x, (size_t)outer, (size_t)len, (size_t)inner, out, arg);
    return undefined(env);
  }
  int (*reduce)(const float *, size_t, size_t, size_t, float *) = op == AXIS_SUM ? rb_sum_axis_f32 : rb_logsumexp_f32;
  if (reduce(x, (size_t)outer, (size_t)len, (size_t)inner, out) != 0) { oom(&c); return NULL; }
  return undefined(env);
}

static napi_value api_logsumexp(napi_env env, napi_callback_info info) { return reduce_axis(env, info, AXIS_LOGSUMEXP); }
static napi_value api_sumAxis(napi_env env, napi_callback_info info) { return reduce_axis(env, info, AXIS_SUM); }
static napi_value api_maxAxis(napi_env env, napi_callback_info info) { return reduce_axis(env, info, AXIS_MAX); }

/* logsumexpBackward(x, outer, len, inner, lse, g, gx): exact.c. */
static napi_value api_logsumexpBackward(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "logsumexpBackward", 7)) return NULL;
  size_t lx, ll, lg, ld;
  float *x = get_f32(&c, 0, "x", &lx);
  int64_t outer, len, inner, total;
  get_oli(&c, 1, &outer, &len, &inner, &total);
  float *lse = get_f32(&c, 4, "lse", &ll);
  float *g = get_f32(&c, 5, "g", &lg);
  float *gx = get_f32(&c, 6, "gx", &ld);
  need_len(&c, "x", lx, total);
  need_len(&c, "lse", ll, outer * inner);
  need_len(&c, "g", lg, outer * inner);
  need_len(&c, "gx", ld, total);
  if (c.failed) return NULL;
  rb_logsumexp_backward_f32(x, (size_t)outer, (size_t)len, (size_t)inner, lse, g, gx);
  return undefined(env);
}

static napi_value api_sinkhornLog(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "sinkhornLog", 5)) return NULL;
  size_t lp, la, lb;
  float *P = get_f32(&c, 0, "logP", &lp);
  int64_t batch = get_size(&c, 1, "batch"), m = get_size(&c, 2, "m"), n = get_size(&c, 3, "n");
  int64_t iters = get_size(&c, 4, "iters");
  float *logA = get_f32_or_null(&c, 5, "logA", &la);
  float *logB = get_f32_or_null(&c, 6, "logB", &lb);
  need_len(&c, "logP", lp, prod(&c, "batch*m*n", prod(&c, "batch*m*n", batch, m), n));
  if (logA) need_len(&c, "logA", la, m);
  if (logB) need_len(&c, "logB", lb, n);
  if (c.failed) return NULL;
  if (rb_sinkhorn_log_f32(P, (size_t)batch, (size_t)m, (size_t)n, (size_t)iters, logA, logB) != 0) { oom(&c); return NULL; }
  return undefined(env);
}

/* ------------------------------------------------------------------------------------------------
 * Elementwise
 * ---------------------------------------------------------------------------------------------- */

static const char *const unary_names[RB_UNARY_COUNT] = {"neg", "exp", "log", "relu", "tanh", "sigmoid", "sqrt", "abs", "square"};
static const char *const binary_names[RB_BINARY_COUNT] = {"add", "sub", "mul", "div", "max", "min"};

static napi_value api_unary(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "unary", 3)) return NULL;
  int op = get_enum(&c, 0, "op", unary_names, RB_UNARY_COUNT);
  size_t lx, lo;
  float *x = get_f32(&c, 1, "x", &lx);
  float *out = get_f32(&c, 2, "out", &lo);
  need_len(&c, "out", lo, (int64_t)lx);
  if (c.failed) return NULL;
  hint_huge(out, lx * sizeof(float));
  rb_unary_f32(op, x, out, lx);
  return undefined(env);
}

/* Range of element offsets a strided view reaches; fails if it leaves [0, len). */
static void check_view(call_t *c, const char *name, size_t len, int64_t offset, const int64_t *shape,
                       const int64_t *strides, int nd) {
  if (c->failed) return;
  int64_t lo = offset, hi = offset;
  for (int d = 0; d < nd; d++) {
    if (shape[d] == 0) return; /* empty: nothing is read */
    int64_t span = (shape[d] - 1) * strides[d];
    if (strides[d] != 0 && (shape[d] - 1) > (int64_t)MAX_INDEX / (strides[d] < 0 ? -strides[d] : strides[d])) {
      fail(c, true, "argument '%s': strides reach too far", name);
      return;
    }
    if (span < 0) lo += span;
    else hi += span;
  }
  if (lo < 0 || hi >= (int64_t)len)
    fail(c, true, "argument '%s': the strided view reaches elements %lld..%lld but the array has length %zu", name,
         (long long)lo, (long long)hi, len);
}

static napi_value api_binary(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "binary", 7)) return NULL;
  int op = get_enum(&c, 0, "op", binary_names, RB_BINARY_COUNT);
  size_t la, lb, lo;
  int64_t as[RB_MAXDIM], bs[RB_MAXDIM], shape[RB_MAXDIM];
  float *a = get_f32(&c, 1, "a", &la);
  int na = get_int_list(&c, 2, "aStrides", as, true);
  float *b = get_f32(&c, 3, "b", &lb);
  int nb = get_int_list(&c, 4, "bStrides", bs, true);
  float *out = get_f32(&c, 5, "out", &lo);
  int nd = get_int_list(&c, 6, "shape", shape, false);
  if (c.failed) return NULL;
  if (na != nd || nb != nd) {
    fail(&c, true, "aStrides (%d), bStrides (%d) and shape (%d) must have the same length", na, nb, nd);
    return NULL;
  }
  int64_t total = 1;
  for (int d = 0; d < nd; d++) total = prod(&c, "shape size", total, shape[d]);
  need_len(&c, "out", lo, total);
  check_view(&c, "a", la, 0, shape, as, nd);
  check_view(&c, "b", lb, 0, shape, bs, nd);
  if (c.failed) return NULL;
  hint_huge(out, (size_t)total * sizeof(float));
  rb_binary_f32(op, a, as, b, bs, out, shape, nd);
  return undefined(env);
}

static napi_value api_copyStrided(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "copyStrided", 5)) return NULL;
  size_t lx, lo;
  int64_t st[RB_MAXDIM], shape[RB_MAXDIM];
  float *x = get_f32(&c, 0, "x", &lx);
  int64_t offset = get_size(&c, 1, "offset");
  int ns = get_int_list(&c, 2, "strides", st, true);
  float *out = get_f32(&c, 3, "out", &lo);
  int nd = get_int_list(&c, 4, "shape", shape, false);
  if (c.failed) return NULL;
  if (ns != nd) {
    fail(&c, true, "strides (%d) and shape (%d) must have the same length", ns, nd);
    return NULL;
  }
  int64_t total = 1;
  for (int d = 0; d < nd; d++) total = prod(&c, "shape size", total, shape[d]);
  need_len(&c, "out", lo, total);
  check_view(&c, "x", lx, offset, shape, st, nd);
  if (c.failed) return NULL;
  hint_huge(out, (size_t)total * sizeof(float));
  rb_copy_strided_f32(x, offset, st, out, shape, nd);
  return undefined(env);
}

static napi_value api_axpy(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "axpy", 3)) return NULL;
  double alpha = get_num(&c, 0, "alpha");
  size_t lx, ly;
  float *x = get_f32(&c, 1, "x", &lx);
  float *y = get_f32(&c, 2, "y", &ly);
  need_len(&c, "y", ly, (int64_t)lx);
  if (c.failed) return NULL;
  rb_axpy_f32(alpha, x, y, lx);
  return undefined(env);
}

static napi_value api_affine(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "affine", 4)) return NULL;
  size_t lx, lo;
  float *x = get_f32(&c, 0, "x", &lx);
  double alpha = get_num(&c, 1, "alpha"), beta = get_num(&c, 2, "beta");
  float *out = get_f32(&c, 3, "out", &lo);
  need_len(&c, "out", lo, (int64_t)lx);
  if (c.failed) return NULL;
  hint_huge(out, lx * sizeof(float));
  rb_affine_f32(x, alpha, beta, out, lx);
  return undefined(env);
}

static napi_value api_reluBackward(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "reluBackward", 3)) return NULL;
  size_t lx, ly, ld;
  float *x = get_f32(&c, 0, "x", &lx);
  float *dy = get_f32(&c, 1, "dy", &ly);
  float *dx = get_f32(&c, 2, "dx", &ld);
  need_len(&c, "dy", ly, (int64_t)lx);
  need_len(&c, "dx", ld, (int64_t)lx);
  if (c.failed) return NULL;
  hint_huge(dx, lx * sizeof(float));
  rb_relu_backward_f32(x, dy, dx, lx);
  return undefined(env);
}

/* gelu (2 arguments: x, out) and geluBackward (3: x, dy, dx), exact.c. */
static napi_value gelu_call(napi_env env, napi_callback_info info, bool backward) {
  call_t c;
  if (!begin(&c, env, info, backward ? "geluBackward" : "gelu", backward ? 3 : 2)) return NULL;
  size_t lx, ly = 0, lo;
  float *x = get_f32(&c, 0, "x", &lx);
  float *dy = backward ? get_f32(&c, 1, "dy", &ly) : NULL;
  float *out = get_f32(&c, backward ? 2 : 1, backward ? "dx" : "out", &lo);
  if (backward) need_len(&c, "dy", ly, (int64_t)lx);
  need_len(&c, backward ? "dx" : "out", lo, (int64_t)lx);
  if (!c.failed && !rb_erf_table_ready()) fail(&c, false, "the erf table was not set (setErfTable)");
  if (c.failed) return NULL;
  hint_huge(out, lx * sizeof(float));
  if (backward) rb_gelu_backward_f32(x, dy, out, lx);
  else rb_gelu_f32(x, out, lx);
  return undefined(env);
}

/* standardizeRows(x, R, D, eps, y, invStd) and standardizeRowsBackward(g, y, invStd, R, D, gx), exact.c. */
static napi_value api_standardizeRows(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "standardizeRows", 6)) return NULL;
  size_t lx, ly, ls;
  float *x = get_f32(&c, 0, "x", &lx);
  int64_t R = get_size(&c, 1, "R"), D = get_size(&c, 2, "D");
  double eps = get_num(&c, 3, "eps");
  float *y = get_f32(&c, 4, "y", &ly);
  double *inv = get_typed(&c, 5, "invStd", napi_float64_array, &ls);
  int64_t total = prod(&c, "R*D", R, D);
  need_len(&c, "x", lx, total);
  need_len(&c, "y", ly, total);
  need_len(&c, "invStd", ls, R);
  if (c.failed) return NULL;
  rb_standardize_rows_f32(x, (size_t)R, (size_t)D, eps, y, inv);
  return undefined(env);
}

static napi_value api_standardizeRowsBackward(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "standardizeRowsBackward", 6)) return NULL;
  size_t lg, ly, ls, lx;
  float *g = get_f32(&c, 0, "g", &lg);
  float *y = get_f32(&c, 1, "y", &ly);
  double *inv = get_typed(&c, 2, "invStd", napi_float64_array, &ls);
  int64_t R = get_size(&c, 3, "R"), D = get_size(&c, 4, "D");
  float *gx = get_f32(&c, 5, "gx", &lx);
  int64_t total = prod(&c, "R*D", R, D);
  need_len(&c, "g", lg, total);
  need_len(&c, "y", ly, total);
  need_len(&c, "invStd", ls, R);
  need_len(&c, "gx", lx, total);
  if (c.failed) return NULL;
  rb_standardize_rows_backward_f32(g, y, inv, (size_t)R, (size_t)D, gx);
  return undefined(env);
}

static napi_value api_gelu(napi_env env, napi_callback_info info) { return gelu_call(env, info, false); }
static napi_value api_geluBackward(napi_env env, napi_callback_info info) { return gelu_call(env, info, true); }

static napi_value api_sumSquares(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "sumSquares", 1)) return NULL;
  size_t lx;
  float *x = get_f32(&c, 0, "x", &lx);
  if (c.failed) return NULL;
  return number(env, rb_sum_squares_f32(x, lx));
}

static void check_index(call_t *c, const int32_t *index, size_t k, int64_t len) {
  if (c->failed) return;
  for (size_t j = 0; j < k; j++) {
    if (index[j] < 0 || index[j] >= len) {
      fail(c, true, "index[%zu] = %d is out of range [0, %lld)", j, index[j], (long long)len);
      return;
    }
  }
}

/* gather(x, outer, len, inner, index, out) and its adjoint scatterAdd(dy, outer, len, inner, index, dx):
 * `full` is x or dx ([outer, len, inner]), `part` out or dy ([outer, k, inner], k = index.length). */
typedef struct {
  float *full, *part;
  int32_t *index;
  size_t k;
  int64_t outer, len, inner;
} index_call;

static bool get_index_call(call_t *c, bool scatter, index_call *r) {
  const char *full_name = scatter ? "dx" : "x", *part_name = scatter ? "dy" : "out";
  size_t l0, l5;
  int64_t total;
  float *a0 = get_f32(c, 0, scatter ? part_name : full_name, &l0);
  get_oli(c, 1, &r->outer, &r->len, &r->inner, &total);
  r->index = get_i32(c, 4, "index", &r->k);
  float *a5 = get_f32(c, 5, scatter ? full_name : part_name, &l5);
  r->full = scatter ? a5 : a0;
  r->part = scatter ? a0 : a5;
  need_len(c, full_name, scatter ? l5 : l0, total);
  need_len(c, part_name, scatter ? l0 : l5,
           prod(c, "outer*k*inner", prod(c, "outer*k*inner", r->outer, (int64_t)r->k), r->inner));
  check_index(c, r->index, r->k, r->len);
  return !c->failed;
}

static napi_value api_gather(napi_env env, napi_callback_info info) {
  call_t c;
  index_call r;
  if (!begin(&c, env, info, "gather", 6) || !get_index_call(&c, false, &r)) return NULL;
  hint_huge(r.part, (size_t)(r.outer * (int64_t)r.k * r.inner) * sizeof(float));
  rb_gather_f32(r.full, (size_t)r.outer, (size_t)r.len, (size_t)r.inner, r.index, r.k, r.part);
  return undefined(env);
}

static napi_value api_scatterAdd(napi_env env, napi_callback_info info) {
  call_t c;
  index_call r;
  if (!begin(&c, env, info, "scatterAdd", 6) || !get_index_call(&c, true, &r)) return NULL;
  rb_scatter_add_f32(r.part, (size_t)r.outer, (size_t)r.len, (size_t)r.inner, r.index, r.k, r.full);
  return undefined(env);
}

/* ------------------------------------------------------------------------------------------------
 * Convolution and pooling
 * ---------------------------------------------------------------------------------------------- */

/* The typed arrays a conv or pool kernel takes as arguments 0..n-1, all sized by its geometry: read
 * in argument order, then length-checked, so a wrong type is reported before a wrong length. */
typedef struct {
  const char *name;
  char kind; /* 'f' Float32Array, 'n' Float32Array or null/undefined, 'i' Int32Array */
  int size;  /* index of the length it needs in the sizes passed to check_arrays */
} array_spec;

typedef struct {
  void *p; /* NULL for an absent 'n' array */
  size_t len;
} array_arg;

static bool get_arrays(call_t *c, const array_spec *spec, size_t n, array_arg *a) {
  for (size_t i = 0; i < n; i++) {
    const array_spec *s = &spec[i];
    if (s->kind == 'i') a[i].p = get_i32(c, i, s->name, &a[i].len);
    else if (s->kind == 'n') a[i].p = get_f32_or_null(c, i, s->name, &a[i].len);
    else a[i].p = get_f32(c, i, s->name, &a[i].len);
  }
  return !c->failed;
}

static bool check_arrays(call_t *c, const array_spec *spec, size_t n, const array_arg *a, const int64_t *sizes) {
  for (size_t i = 0; i < n; i++)
    if (a[i].p) need_len(c, spec[i].name, a[i].len, sizes[spec[i].size]);
  return !c->failed;
}

enum { CONV_X, CONV_W, CONV_B, CONV_Y };

static void conv_sizes(const rb_conv_geom *g, int64_t sizes[4]) {
  sizes[CONV_X] = g->N * g->C * g->H * g->W;
  sizes[CONV_W] = g->O * g->C * g->KH * g->KW;
  sizes[CONV_B] = g->O;
  sizes[CONV_Y] = g->N * g->O * g->OH * g->OW;
}

static napi_value api_conv2dForward(napi_env env, napi_callback_info info) {
  static const array_spec spec[] = {{"x", 'f', CONV_X}, {"w", 'f', CONV_W}, {"bias", 'n', CONV_B}, {"out", 'f', CONV_Y}};
  call_t c;
  if (!begin(&c, env, info, "conv2dForward", 5)) return NULL;
  rb_conv_geom g;
  get_conv_geom(&c, 4, &g);
  array_arg a[4];
  get_arrays(&c, spec, 4, a);
  bool relu = !is_nullish(&c, 5) && get_bool(&c, 5, "relu");
  if (c.failed) return NULL;
  int64_t sizes[4];
  conv_sizes(&g, sizes);
  if (!check_arrays(&c, spec, 4, a, sizes)) return NULL;
  hint_huge(a[3].p, (size_t)sizes[CONV_Y] * sizeof(float));
  if (rb_conv_fwd_f32(a[0].p, a[1].p, a[2].p, a[3].p, &g, relu) != 0) { oom(&c); return NULL; }
  return undefined(env);
}

static napi_value api_conv2dBackward(napi_env env, napi_callback_info info) {
  static const array_spec spec[] = {{"x", 'f', CONV_X},  {"w", 'f', CONV_W},  {"dy", 'f', CONV_Y},
                                    {"dx", 'n', CONV_X}, {"dw", 'n', CONV_W}, {"db", 'n', CONV_B}};
  call_t c;
  if (!begin(&c, env, info, "conv2dBackward", 7)) return NULL;
  rb_conv_geom g;
  get_conv_geom(&c, 6, &g);
  array_arg a[6];
  get_arrays(&c, spec, 6, a);
  size_t lr;
  float *relu_y = get_f32_or_null(&c, 7, "reluOut", &lr);
  if (c.failed) return NULL;
  int64_t sizes[4];
  conv_sizes(&g, sizes);
  if (relu_y) need_len(&c, "reluOut", lr, sizes[CONV_Y]);
  if (!check_arrays(&c, spec, 6, a, sizes)) return NULL;
  float *dx = a[3].p;
  if (dx) hint_huge(dx, (size_t)sizes[CONV_X] * sizeof(float));
  if (rb_conv_bwd_f32(a[0].p, a[1].p, a[2].p, relu_y, dx, a[4].p, a[5].p, &g) != 0) { oom(&c); return NULL; }
  return undefined(env);
}

enum { POOL_IN, POOL_OUT };

/* Starts a pooling call: geometry (the argument after the n arrays), the arrays, their lengths. */
static bool pool_call(call_t *c, napi_env env, napi_callback_info info, const char *kernel, const array_spec *spec,
                      size_t n, rb_pool_geom *g, array_arg *a) {
  if (!begin(c, env, info, kernel, n + 1)) return false;
  get_pool_geom(c, n, g);
  if (!get_arrays(c, spec, n, a)) return false;
  int64_t sizes[2] = {g->N * g->C * g->H * g->W, g->N * g->C * g->OH * g->OW};
  return check_arrays(c, spec, n, a, sizes);
}

static napi_value api_maxPool2dForward(napi_env env, napi_callback_info info) {
  static const array_spec spec[] = {{"x", 'f', POOL_IN}, {"out", 'f', POOL_OUT}, {"argmax", 'i', POOL_OUT}};
  call_t c;
  rb_pool_geom g;
  array_arg a[3];
  if (!pool_call(&c, env, info, "maxPool2dForward", spec, 3, &g, a)) return NULL;
  size_t on = (size_t)(g.N * g.C * g.OH * g.OW);
  hint_huge(a[1].p, on * sizeof(float));
  hint_huge(a[2].p, on * sizeof(int32_t));
  rb_maxpool_fwd_f32(a[0].p, a[1].p, a[2].p, &g);
  return undefined(env);
}

static napi_value api_maxPool2dBackward(napi_env env, napi_callback_info info) {
  static const array_spec spec[] = {{"dy", 'f', POOL_OUT}, {"argmax", 'i', POOL_OUT}, {"dx", 'f', POOL_IN}};
  call_t c;
  rb_pool_geom g;
  array_arg a[3];
  if (!pool_call(&c, env, info, "maxPool2dBackward", spec, 3, &g, a)) return NULL;
  /* A corrupt argmax would write outside its plane. */
  const int32_t *arg = a[1].p;
  int64_t on = g.N * g.C * g.OH * g.OW, plane = g.H * g.W;
  for (int64_t i = 0; i < on; i++) {
    if (arg[i] >= plane || arg[i] < -1) {
      fail(&c, true, "argmax[%lld] = %d is outside the %lld-element input plane", (long long)i, arg[i], (long long)plane);
      return NULL;
    }
  }
  hint_huge(a[2].p, (size_t)(g.N * g.C * g.H * g.W) * sizeof(float));
  rb_maxpool_bwd_f32(a[0].p, arg, a[2].p, &g);
  return undefined(env);
}

static napi_value api_avgPool2dForward(napi_env env, napi_callback_info info) {
  static const array_spec spec[] = {{"x", 'f', POOL_IN}, {"out", 'f', POOL_OUT}};
  call_t c;
  rb_pool_geom g;
  array_arg a[2];
  if (!pool_call(&c, env, info, "avgPool2dForward", spec, 2, &g, a)) return NULL;
  hint_huge(a[1].p, (size_t)(g.N * g.C * g.OH * g.OW) * sizeof(float));
  rb_avgpool_fwd_f32(a[0].p, a[1].p, &g);
  return undefined(env);
}

static napi_value api_avgPool2dBackward(napi_env env, napi_callback_info info) {
  static const array_spec spec[] = {{"dy", 'f', POOL_OUT}, {"dx", 'f', POOL_IN}};
  call_t c;
  rb_pool_geom g;
  array_arg a[2];
  if (!pool_call(&c, env, info, "avgPool2dBackward", spec, 2, &g, a)) return NULL;
  hint_huge(a[1].p, (size_t)(g.N * g.C * g.H * g.W) * sizeof(float));
  rb_avgpool_bwd_f32(a[0].p, a[1].p, &g);
  return undefined(env);
}

/* ------------------------------------------------------------------------------------------------
 * Loss and optimisers
 * ---------------------------------------------------------------------------------------------- */

static napi_value api_softmaxCrossEntropy(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "softmaxCrossEntropy", 5)) return NULL;
  size_t ll, lb, lp;
  float *logits = get_f32(&c, 0, "logits", &ll);
  int32_t *labels = get_i32(&c, 1, "labels", &lb);
  int64_t N = get_size(&c, 2, "N"), C = get_size(&c, 3, "C");
  float *probs = get_f32(&c, 4, "probs", &lp);
  int64_t NC = prod(&c, "N*C", N, C);
  need_len(&c, "logits", ll, NC);
  need_len(&c, "labels", lb, N);
  need_len(&c, "probs", lp, NC);
  if (c.failed) return NULL;
  for (int64_t n = 0; n < N; n++) {
    if (labels[n] < 0 || labels[n] >= C) {
      fail(&c, true, "label %d of sample %lld is outside [0, %lld)", labels[n], (long long)n, (long long)C);
      return NULL;
    }
  }
  hint_huge(probs, (size_t)NC * sizeof(float));
  return number(env, rb_softmax_ce_f32(logits, labels, (size_t)N, (size_t)C, probs));
}

static napi_value api_adamw(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "adamw", 10)) return NULL;
  size_t lp, lg, lm, lv;
  float *param = get_f32(&c, 0, "param", &lp);
  float *grad = get_f32(&c, 1, "grad", &lg);
  float *m = get_f32(&c, 2, "m", &lm);
  float *v = get_f32(&c, 3, "v", &lv);
  double lr = get_num(&c, 4, "lr"), b1 = get_num(&c, 5, "beta1"), b2 = get_num(&c, 6, "beta2");
  double eps = get_num(&c, 7, "eps"), wd = get_num(&c, 8, "weightDecay"), step = get_num(&c, 9, "step");
  need_len(&c, "grad", lg, (int64_t)lp);
  need_len(&c, "m", lm, (int64_t)lp);
  need_len(&c, "v", lv, (int64_t)lp);
  if (c.failed) return NULL;
  rb_adamw_f32(param, grad, m, v, lp, lr, b1, b2, eps, wd, step);
  return undefined(env);
}

static napi_value api_sgd(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "sgd", 9)) return NULL;
  size_t lp, lg, lb;
  float *param = get_f32(&c, 0, "param", &lp);
  float *grad = get_f32(&c, 1, "grad", &lg);
  float *buf = get_f32(&c, 2, "buf", &lb);
  double lr = get_num(&c, 3, "lr"), mom = get_num(&c, 4, "momentum"), damp = get_num(&c, 5, "dampening");
  bool nesterov = get_bool(&c, 6, "nesterov");
  double wd = get_num(&c, 7, "weightDecay");
  bool first = get_bool(&c, 8, "first");
  need_len(&c, "grad", lg, (int64_t)lp);
  if (mom != 0) need_len(&c, "buf", lb, (int64_t)lp);
  if (c.failed) return NULL;
  rb_sgd_f32(param, grad, buf, lp, lr, mom, damp, nesterov, wd, first);
  return undefined(env);
}

/* ------------------------------------------------------------------------------------------------
 * Threads and build information
 * ---------------------------------------------------------------------------------------------- */

static napi_value api_setThreads(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "setThreads", 1)) return NULL;
  int64_t n = get_int(&c, 0, "n", 1, 64);
  if (c.failed) return NULL;
  openblas_set_num_threads((int)n);
  return undefined(env);
}

/* setErfTable(table: Float64Array): erf.ts's ERF_TABLE, once at load (native.ts). */
static napi_value api_setErfTable(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "setErfTable", 1)) return NULL;
  size_t n;
  double *t = get_typed(&c, 0, "table", napi_float64_array, &n);
  if (c.failed) return NULL;
  if (rb_set_erf_table(t, n) != 0) {
    fail(&c, true, "argument 'table' has %zu entries, not the erf table's", n);
    return NULL;
  }
  return undefined(env);
}

static napi_value api_getThreads(napi_env env, napi_callback_info info) {
  (void)info;
  return number(env, openblas_get_num_threads());
}

static napi_value api_config(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value s;
  const char *cfg = openblas_get_config();
  napi_create_string_utf8(env, cfg ? cfg : "unknown", NAPI_AUTO_LENGTH, &s);
  return s;
}

/* Benchmark hook: 0 auto, 1 our threads, 2 OpenBLAS threads; >= 100 sets the im2col chunk size.
 * (Which strategy runs, direct or im2col, is convStrategy's.) */
static napi_value api_convTune(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "convTune", 1)) return NULL;
  int64_t mode = get_int(&c, 0, "mode", 0, 1 << 26);
  if (c.failed) return NULL;
  rb_conv_set_mode((int)mode);
  return undefined(env);
}

/* convStrategy() reports the conv strategy setting; convStrategy(name) with "auto" | "direct" |
 * "im2col" sets it (REBASIN_CONV). */
static napi_value api_convStrategy(napi_env env, napi_callback_info info) {
  static const char *const names[] = {"auto", "direct", "im2col"}; /* indexed by RB_CONV_* */
  call_t c;
  if (!begin(&c, env, info, "convStrategy", 0)) return NULL;
  if (c.argc >= 1) {
    napi_valuetype t;
    napi_typeof(env, c.argv[0], &t);
    if (t != napi_undefined) {
      int strategy = get_enum(&c, 0, "conv strategy", names, 3);
      if (c.failed) return NULL;
      rb_conv_set_strategy(strategy);
    }
  }
  napi_value s;
  napi_create_string_utf8(env, names[rb_conv_strategy()], NAPI_AUTO_LENGTH, &s);
  return s;
}

/* Tensors are fresh typed arrays, which Node allocates with calloc. Above glibc's mmap threshold
 * (at most 32 MiB, and a conv activation of batch 128 is exactly that) every such array is a new
 * mapping whose pages fault in one by one on first write, ~15 µs per 4 KiB page on this VM: a
 * third of a CNN training step. Serving large blocks from the heap and keeping freed memory
 * mapped makes reuse cost one memset instead. Process-wide, so done once, and skipped with
 * REBASIN_MALLOC=system for hosts that want glibc's defaults (memory then returns to the OS
 * sooner). Reported by allocatorTuned(). */
static bool malloc_tuned = false;

static void tune_malloc(void) {
  static bool done = false;
  if (done) return;
  done = true;
  const char *e = getenv("REBASIN_MALLOC");
  if (e && strcmp(e, "system") == 0) return;
  malloc_tuned = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
}

static napi_value api_allocatorTuned(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, malloc_tuned, &v);
  return v;
}

/* gemmImpl() reports which sgemm runs ("avx512" or "avx2": our own kernels; or "openblas");
 * gemmImpl(name) with "auto" | "openblas" | "own" | "avx512" | "avx2" switches it ("own" = the
 * best own kernel the CPU supports), for tests and the bench to compare every path. */
static napi_value api_gemmImpl(napi_env env, napi_callback_info info) {
  /* Indexed by RB_GEMM_*. */
  static const char *const names[] = {"auto", "openblas", "own", "avx512", "avx2"};
  static const char *const needs[] = {"", "", "AVX-512 (F, VL, DQ, BW) or AVX2 and FMA", "AVX-512 (F, VL, DQ, BW)",
                                      "AVX2 and FMA"};
  call_t c;
  if (!begin(&c, env, info, "gemmImpl", 0)) return NULL;
  if (c.argc >= 1) {
    napi_valuetype t;
    napi_typeof(env, c.argv[0], &t);
    if (t != napi_undefined) {
      int impl = get_enum(&c, 0, "gemm implementation", names, 5);
      if (c.failed) return NULL;
      if (rb_gemm_set_impl(impl) != 0) {
        fail(&c, false, "the %s sgemm needs %s, which this CPU does not report", names[impl], needs[impl]);
        return NULL;
      }
    }
  }
  napi_value s;
  napi_create_string_utf8(env, names[rb_gemm_impl()], NAPI_AUTO_LENGTH, &s);
  return s;
}

#define REGISTER(name) {#name, NULL, api_##name, NULL, NULL, NULL, napi_enumerable, NULL},

NAPI_MODULE_INIT() {
  tune_malloc();
  rb_gemm_impl(); /* decide once, before any thread can call rb_gemm_f32 */
  napi_property_descriptor props[] = {RB_KERNELS(REGISTER) RB_CONTROLS(REGISTER)};
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
