/*
 * Internal interface between the N-API glue (addon.c) and the compute files. Everything here works
 * on raw pointers whose bounds addon.c has already checked; these functions never touch N-API.
 */
#ifndef RB_H
#define RB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  int64_t N, C, H, W, O, KH, KW, stride, pad, OH, OW;
} rb_conv_geom;

typedef struct {
  int64_t N, C, H, W, K, stride, pad, OH, OW;
} rb_pool_geom;

enum rb_unary { RB_NEG, RB_EXP, RB_LOG, RB_RELU, RB_TANH, RB_SIGMOID, RB_SQRT, RB_ABS, RB_SQUARE, RB_UNARY_COUNT };
enum rb_binary { RB_ADD, RB_SUB, RB_MUL, RB_DIV, RB_MAX, RB_MIN, RB_BINARY_COUNT };

#define RB_MAXDIM 32

/* ---- threads (kernels.c) ---- */
typedef void (*rb_task_fn)(void *ctx, int tid, int nthreads);
/* Runs fn(ctx, t, n) for t in [0, n): t = 0 on the caller, the rest on fresh pthreads. */
void rb_parallel(int nthreads, rb_task_fn fn, void *ctx);
/* How many threads our own C loops may use: follows OpenBLAS's setting so setThreads(1) means one. */
int rb_threads(void);

/* Thread tid's share [lo, hi) of total items among n threads, in chunks of `align` items. */
static inline void rb_split_range(size_t total, int tid, int n, size_t align, size_t *lo, size_t *hi) {
  size_t chunks = (total + align - 1) / align;
  size_t a = chunks * (size_t)tid / (size_t)n, b = chunks * (size_t)(tid + 1) / (size_t)n;
  *lo = a * align < total ? a * align : total;
  *hi = b * align < total ? b * align : total;
}

/* ---- elementwise and reductions (kernels.c) ---- */
/* Σ x[i] accumulated in double, vectorised without relying on -fassociative-math. */
double rb_sum_f32(const float *x, size_t n);
void rb_unary_f32(int op, const float *x, float *out, size_t n);
/* shape/aStr/bStr have nd entries; out is packed. */
void rb_binary_f32(int op, const float *a, const int64_t *aStr, const float *b, const int64_t *bStr,
                   float *out, const int64_t *shape, int nd);
void rb_copy_strided_f32(const float *x, int64_t offset, const int64_t *strides, float *out,
                         const int64_t *shape, int nd);
void rb_axpy_f32(double alpha, const float *x, float *y, size_t n);
void rb_affine_f32(const float *x, double alpha, double beta, float *out, size_t n);
void rb_relu_backward_f32(const float *x, const float *dy, float *dx, size_t n);
/* exact.c: JS formulas bit for bit (erf table from erf.ts, V8's exp). */
int rb_set_erf_table(const double *t, size_t n);
int rb_erf_table_ready(void);
void rb_gelu_f32(const float *x, float *out, size_t n);
void rb_standardize_rows_f32(const float *x, size_t R, size_t D, double eps, float *y, double *inv_std);
void rb_standardize_rows_backward_f32(const float *g, const float *y, const double *inv_std, size_t R, size_t D, float *gx);
void rb_gelu_backward_f32(const float *x, const float *dy, float *dx, size_t n);
void rb_logsumexp_backward_f32(const float *x, size_t outer, size_t len, size_t inner, const float *lse, const float *g,
                               float *gx);
double rb_sum_squares_f32(const float *x, size_t n);
int rb_logsumexp_f32(const float *x, size_t outer, size_t len, size_t inner, float *out);
int rb_sum_axis_f32(const float *x, size_t outer, size_t len, size_t inner, float *out);
void rb_max_axis_f32(const float *x, size_t outer, size_t len, size_t inner, float *out, int32_t *argmax);
int rb_sinkhorn_log_f32(float *logP, size_t batch, size_t m, size_t n, size_t iters,
                        const float *logA, const float *logB);
void rb_gather_f32(const float *x, size_t outer, size_t len, size_t inner, const int32_t *index, size_t k,
                   float *out);
void rb_scatter_add_f32(const float *dy, size_t outer, size_t len, size_t inner, const int32_t *index,
                        size_t k, float *dx);
void rb_maxpool_fwd_f32(const float *x, float *out, int32_t *argmax, const rb_pool_geom *g);
void rb_maxpool_bwd_f32(const float *dy, const int32_t *argmax, float *dx, const rb_pool_geom *g);
void rb_avgpool_fwd_f32(const float *x, float *out, const rb_pool_geom *g);
void rb_avgpool_bwd_f32(const float *dy, float *dx, const rb_pool_geom *g);
double rb_softmax_ce_f32(const float *logits, const int32_t *labels, size_t N, size_t C, float *probs);
void rb_adamw_f32(float *param, const float *grad, float *m, float *v, size_t n, double lr, double beta1,
                  double beta2, double eps, double wd, double step);
void rb_sgd_f32(float *param, const float *grad, float *buf, size_t n, double lr, double momentum,
                double dampening, bool nesterov, double wd, bool first);

/* ---- sgemm (gemm.c): our own kernels (gemm.c: AVX-512; gemm_avx2.c: AVX2+FMA) or OpenBLAS, picked
 * in one place ---- */
/* avx512 / avx2: those own kernels; own: the best own kernel the CPU supports; auto: that, else
 * OpenBLAS. */
enum { RB_GEMM_AUTO = 0, RB_GEMM_OPENBLAS = 1, RB_GEMM_OWN = 2, RB_GEMM_AVX512 = 3, RB_GEMM_AVX2 = 4 };
/* Chooses the sgemm behind rb_gemm_f32 and the convolutions. -1 if the CPU cannot run that path. */
int rb_gemm_set_impl(int impl);
/* RB_GEMM_OPENBLAS, RB_GEMM_AVX512 or RB_GEMM_AVX2: what runs now. */
int rb_gemm_impl(void);
/* The own gemm in use: same contract as rb_gemm_f32 (K > 0, alpha != 0); false when OpenBLAS is
 * selected or buffers cannot be allocated (the caller then falls back to OpenBLAS). */
bool rb_gemm_own_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void rb_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void rb_gemm_strided_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                         int64_t strideA, const float *B, int64_t strideB, float beta, float *C, int64_t strideC,
                         int64_t count);

/* The own kernels' convolution entry points (false while OpenBLAS is selected). Single-threaded
 * C[M × OH·OW] = A[M × C·KH·KW] · im2col(x) (+ bias[row]) (then ReLU) for one sample x [C,H,W],
 * packing im2col's panels straight from the image. bias may be NULL. False when packing buffers
 * cannot be allocated. */
bool rb_conv_gemm_own_f32(const float *A, int64_t M, const float *x, const rb_conv_geom *g, const float *bias,
                          bool relu, float *C);

/* dwt[C·KH·KW × O] += im2col(x_n) · dy_nᵀ for one sample (the conv weight gradient, transposed),
 * reading x directly. False when buffers cannot be allocated or O exceeds the packing width. */
bool rb_conv_dwt_own_f32(const float *dy, const float *x, const rb_conv_geom *g, float *dwt);

/* ---- convolution (conv.c) ---- */
/* Return 0, or -1 when scratch memory could not be allocated. */
/* relu: out = max(0, conv + bias) in the same pass. */
int rb_conv_fwd_f32(const float *x, const float *w, const float *bias, float *out, const rb_conv_geom *g,
                    bool relu);
/* relu_y (or NULL): the output of a fused-ReLU forward; dy then only counts where relu_y > 0. */
int rb_conv_bwd_f32(const float *x, const float *w, const float *dy, const float *relu_y, float *dx, float *dw,
                    float *db, const rb_conv_geom *g);
/* Bench hook: 0 = auto, 1 = our threads over samples, 2 = OpenBLAS threads; >= 100 sets the
 * im2col chunk (floats). */
void rb_conv_set_mode(int mode);
/* Conv strategy (REBASIN_CONV): panels read straight from the image by our gemm, an explicit im2col
 * buffer, or auto, a fixed rule on the layer shape (conv.c). */
enum { RB_CONV_AUTO = 0, RB_CONV_DIRECT = 1, RB_CONV_IM2COL = 2 };
void rb_conv_set_strategy(int strategy);
int rb_conv_strategy(void);

/* ---- LAPACK (lapack.c) ---- */
/* Return 0 = LU, 1 = least squares, -1 = allocation failure, -2 = LAPACK error, -3 = the LU factors
 * overflowed (the matrix for least squares cannot be rebuilt; the caller solves it otherwise). */
int rb_solve_f32(int n, int nrhs, float *A, float *B);
int rb_solve_f64(int n, int nrhs, double *A, double *B);
/* The last illegal-argument report of LAPACK on this thread (lapack.c's xerbla_), "" when none. */
const char *rb_lapack_report(void);
void rb_lapack_report_clear(void);

#endif
