/*
 * The own sgemm for CPUs with AVX2 and FMA but no AVX-512 (gemm_avx2.c). Same entry points and
 * contracts as gemm.c's AVX-512 kernels (see rb.h: rb_gemm_own_f32, rb_conv_gemm_own_f32,
 * rb_conv_dwt_own_f32); gemm.c dispatches to these when REBASIN_GEMM selects the AVX2 path.
 */
#ifndef RB_GEMM_AVX2_H
#define RB_GEMM_AVX2_H

#include "rb.h"

bool rb_gemm_avx2_supported(void);
bool rb_gemm_avx2_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
bool rb_conv_gemm_avx2_f32(const float *A, int64_t M, const float *x, const rb_conv_geom *g, const float *bias,
                           bool relu, float *C);
bool rb_conv_dwt_avx2_f32(const float *dy, const float *x, const rb_conv_geom *g, float *dwt);

#endif
