/*
 * Dense solve A X = B for row-major A (n×n) and B (n×nrhs) through OpenBLAS's LAPACK.
 *
 * LAPACK is column-major, so the row-major A it sees is Aᵀ: we factor that and solve with
 * getrs('T'), which needs no copy of A. B is transposed in and out when nrhs > 1 (a row-major
 * n×1 vector already is column-major).
 *
 * A is treated as singular when a pivot is not above max|A| times a tolerance (float32:
 * FLT_EPSILON; float64: n·1e-14, js.ts's rule), when the smallest pivot is merely suspicious
 * (below sqrt(eps)·max|A|) and gecon's reciprocal condition number is under 10·eps (so the LU
 * answer would have no correct digits), or when A or the solution has non-finite values. The
 * condition estimate costs ~25% of a solve, hence only for suspicious pivots. Then the
 * minimum-norm least-squares solution comes from gelsd (SVD). That
 * path needs the original A, which getrf overwrote: rather than copying A before every solve
 * (~8% of the solve at 1023²), the rare fallback rebuilds it as P·L·U (trmm + laswp).
 *
 * The rebuilt matrix is only A when the factors are finite: a denormal pivot (a near-hard Sinkhorn
 * plan in float) overflows L, P·L·U then holds NaN, and gelsd would loop forever on it (seen: a
 * 7×7 KKT system of a ViT's heads with τ annealed, test/fixtures/kkt-nan-rebuild-7.f32.gz). Then
 * the solve fails with code -3 and the caller, which still has A, solves it otherwise (kkt.ts).
 *
 * Debian's OpenBLAS exports the Fortran symbols only (no LAPACKE), so the prototypes are declared
 * here. Character arguments carry a hidden length argument in the gfortran ABI.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "rb.h"

typedef blasint lp_int;

/*
 * LAPACK reports an illegal argument through xerbla_, whose OpenBLAS version prints "** On entry
 * to …" on stdout and returns. gelsd meets one on some near-hard Sinkhorn KKT systems with many
 * float32 denormals (SLASCL parameter 4, inside its SVD; test/fixtures/kkt-slascl-1023.f32.gz, a
 * trained MNIST MLP pair at lr 1) and still returns a least-squares answer. Printed, the line would
 * corrupt `--json` output on stdout. Defined here, xerbla_ comes first in the lookup scope of the
 * OpenBLAS the addon loads: it keeps the report for the solve's error message instead.
 */
static _Thread_local char lapack_report[96];

void xerbla_(const char *srname, const lp_int *info, size_t srname_len) {
  size_t n = 0;
  while (n < srname_len && n < 16 && srname[n] != ' ' && srname[n] != '\0') n++;
  snprintf(lapack_report, sizeof lapack_report, "%.*s: parameter %d had an illegal value", (int)n, srname, (int)*info);
}

const char *rb_lapack_report(void) { return lapack_report; }
void rb_lapack_report_clear(void) { lapack_report[0] = '\0'; }


extern void sgetrf_(const lp_int *m, const lp_int *n, float *a, const lp_int *lda, lp_int *ipiv, lp_int *info);
extern void dgetrf_(const lp_int *m, const lp_int *n, double *a, const lp_int *lda, lp_int *ipiv, lp_int *info);
extern void sgetrs_(const char *trans, const lp_int *n, const lp_int *nrhs, const float *a, const lp_int *lda,
                    const lp_int *ipiv, float *b, const lp_int *ldb, lp_int *info, size_t trans_len);
extern void dgetrs_(const char *trans, const lp_int *n, const lp_int *nrhs, const double *a, const lp_int *lda,
                    const lp_int *ipiv, double *b, const lp_int *ldb, lp_int *info, size_t trans_len);
extern void sgecon_(const char *norm, const lp_int *n, const float *a, const lp_int *lda, const float *anorm,
                    float *rcond, float *work, lp_int *iwork, lp_int *info, size_t norm_len);
extern void dgecon_(const char *norm, const lp_int *n, const double *a, const lp_int *lda, const double *anorm,
                    double *rcond, double *work, lp_int *iwork, lp_int *info, size_t norm_len);
extern void slaswp_(const lp_int *n, float *a, const lp_int *lda, const lp_int *k1, const lp_int *k2,
                    const lp_int *ipiv, const lp_int *incx);
extern void dlaswp_(const lp_int *n, double *a, const lp_int *lda, const lp_int *k1, const lp_int *k2,
                    const lp_int *ipiv, const lp_int *incx);
extern void sgelsd_(const lp_int *m, const lp_int *n, const lp_int *nrhs, float *a, const lp_int *lda, float *b,
                    const lp_int *ldb, float *s, const float *rcond, lp_int *rank, float *work, const lp_int *lwork,
                    lp_int *iwork, lp_int *info);
extern void dgelsd_(const lp_int *m, const lp_int *n, const lp_int *nrhs, double *a, const lp_int *lda, double *b,
                    const lp_int *ldb, double *s, const double *rcond, lp_int *rank, double *work,
                    const lp_int *lwork, lp_int *iwork, lp_int *info);

/* The AVX2 part of the norms loop below: L lanes of type V at a time (X = ps or pd). */
#ifdef __AVX2__
#define RB_NORMS_AVX2(T, V, L, X)                                                                      \
  const V sign = _mm256_set1_##X((T)-0.0);                                                             \
  V vs = _mm256_setzero_##X(), vm = _mm256_setzero_##X();                                              \
  for (; j + L <= n; j += L) {                                                                         \
    V v = _mm256_andnot_##X(sign, _mm256_loadu_##X(r + j));                                           \
    vs = _mm256_add_##X(vs, v);                                                                        \
    vm = _mm256_max_##X(vm, v);                                                                        \
  }                                                                                                    \
  T ls[L], lm[L];                                                                                      \
  _mm256_storeu_##X(ls, vs);                                                                           \
  _mm256_storeu_##X(lm, vm);                                                                           \
  for (int k = 0; k < L; k++) { rs += ls[k]; rm = lm[k] > rm ? lm[k] : rm; }
#else
#define RB_NORMS_AVX2(T, V, L, X)
#endif

/* max|a_ij| and the largest absolute row sum of a row-major n×n matrix, in one vectorised pass
 * (the plain loop stays scalar: its NaN-aware max does not auto-vectorise). NaN/Inf show up as a
 * non-finite row sum. One body for both precisions, so they cannot drift apart. */
#define RB_DEFINE_NORMS(NAME, T, FABS, V, L, X)                                                        \
  static void NAME(const T *A, lp_int n, T *amax, T *anorm) {                                          \
    T am = 0, an = 0;                                                                                  \
    for (lp_int i = 0; i < n; i++) {                                                                   \
      const T *r = A + (size_t)i * n;                                                                  \
      lp_int j = 0;                                                                                    \
      T rs = 0, rm = 0;                                                                                \
      RB_NORMS_AVX2(T, V, L, X)                                                                        \
      for (; j < n; j++) { T v = FABS(r[j]); rs += v; rm = v > rm ? v : rm; }                          \
      an = rs > an || rs != rs ? rs : an;                                                              \
      am = rm > am ? rm : am;                                                                          \
    }                                                                                                  \
    *amax = am;                                                                                        \
    *anorm = an;                                                                                       \
  }

RB_DEFINE_NORMS(s_norms, float, fabsf, __m256, 8, ps)
RB_DEFINE_NORMS(d_norms, double, fabs, __m256d, 4, pd)

static void s_trmm_lower_unit(lp_int n, const float *L, float *M) {
  cblas_strmm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasUnit, n, n, 1.0f, L, n, M, n);
}
static void d_trmm_lower_unit(lp_int n, const double *L, double *M) {
  cblas_dtrmm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasUnit, n, n, 1.0, L, n, M, n);
}

/* When sgelsd fails to converge (seen single-threaded on a near-hard Sinkhorn KKT system of
 * order 511 with denormal entries: info > 0), the same minimum-norm problem is solved in double,
 * with float's cut-off for small singular values, and rounded back. Acm and Bcm are column-major
 * copies taken before sgelsd destroyed them. Returns 1 (least squares) or -1/-2 as the solve. */
static int s_lstsq_in_double(lp_int n, lp_int nrhs, const float *Acm, float *Bcm) {
  size_t nn = (size_t)n * n, nb = (size_t)n * nrhs;
  double *A = malloc(nn * sizeof(double)), *B = malloc(nb * sizeof(double)), *sv = malloc((size_t)n * sizeof(double));
  double *work = NULL;
  lp_int *iwork = NULL;
  int result = -1;
  if (!A || !B || !sv) goto done;
  for (size_t i = 0; i < nn; i++) A[i] = Acm[i];
  for (size_t i = 0; i < nb; i++) B[i] = Bcm[i];
  double rcond = (double)n * FLT_EPSILON, wq = 0;
  lp_int rank = 0, info = 0, lwork = -1, iwq = 0;
  dgelsd_(&n, &n, &nrhs, A, &n, B, &n, sv, &rcond, &rank, &wq, &lwork, &iwq, &info);
  lwork = (lp_int)wq + 1;
  work = malloc((size_t)lwork * sizeof(double));
  iwork = malloc((size_t)(iwq > 1 ? iwq : 1) * sizeof(lp_int));
  if (!work || !iwork) goto done;
  dgelsd_(&n, &n, &nrhs, A, &n, B, &n, sv, &rcond, &rank, work, &lwork, iwork, &info);
  if (info != 0) { result = -2; goto done; }
  for (size_t i = 0; i < nb; i++) Bcm[i] = (float)B[i];
  result = 1;
done:
  free(A); free(B); free(sv); free(work); free(iwork);
  return result;
}

/* dgelsd has no wider type to retry in: its failure stands. */
static int d_lstsq_no_retry(lp_int n, lp_int nrhs, const double *Acm, double *Bcm) {
  (void)n; (void)nrhs; (void)Acm; (void)Bcm;
  return -2;
}

/* The float and double versions are the same algorithm; a macro keeps them from drifting apart. */
#define RB_DEFINE_SOLVE(NAME, T, NORMS, GETRF, GETRS, GECON, TRMM, LASWP, GELSD, EPS, TOL, RETRY)                               \
  static void NAME##_transpose(const T *src, T *dst, int rows, int cols) {                             \
    /* dst (cols×rows) = srcᵀ, in 32×32 tiles to stay in cache. */                                     \
    for (int i0 = 0; i0 < rows; i0 += 32)                                                              \
      for (int j0 = 0; j0 < cols; j0 += 32) {                                                          \
        int i1 = i0 + 32 < rows ? i0 + 32 : rows, j1 = j0 + 32 < cols ? j0 + 32 : cols;                \
        for (int i = i0; i < i1; i++)                                                                  \
          for (int j = j0; j < j1; j++) dst[(size_t)j * rows + i] = src[(size_t)i * cols + j];         \
      }                                                                                                \
  }                                                                                                    \
                                                                                                       \
  static int NAME##_all_finite(const T *x, size_t n) {                                                 \
    int ok = 1;                                                                                        \
    for (size_t i = 0; i < n; i++) ok &= isfinite(x[i]) ? 1 : 0;                                       \
    return ok;                                                                                         \
  }                                                                                                    \
                                                                                                       \
  /* Minimum-norm least squares on column-major Acm (destroyed) and Bcm (n×nrhs, overwritten). */     \
  static int NAME##_lstsq(lp_int n, lp_int nrhs, T *Acm, T *Bcm) {                                     \
    size_t nn = (size_t)n * n, nb = (size_t)n * nrhs;                                                  \
    /* gelsd on a NaN never returns (sbdsqr iterates forever): refuse it. */                          \
    if (!NAME##_all_finite(Acm, nn) || !NAME##_all_finite(Bcm, nb)) return -3;                         \
    T *sv = malloc((size_t)n * sizeof(T));                                                             \
    /* Copies for RETRY, should gelsd fail to converge (it destroys both). */                          \
    T *A0 = malloc(nn * sizeof(T)), *B0 = malloc(nb * sizeof(T));                                      \
    if (!sv || !A0 || !B0) { free(sv); free(A0); free(B0); return -1; }                                \
    memcpy(A0, Acm, nn * sizeof(T));                                                                   \
    memcpy(B0, Bcm, nb * sizeof(T));                                                                   \
    /* Singular values below n·eps·σ_max count as zero, as in numpy.linalg.lstsq. */                   \
    T rcond = (T)n * EPS;                                                                              \
    lp_int rank = 0, info = 0, lwork = -1, iwq = 0;                                                    \
    T wq = 0;                                                                                          \
    GELSD(&n, &n, &nrhs, Acm, &n, Bcm, &n, sv, &rcond, &rank, &wq, &lwork, &iwq, &info);               \
    lwork = (lp_int)wq + 1;                                                                            \
    lp_int liwork = iwq > 1 ? iwq : 1;                                                                 \
    T *work = malloc((size_t)lwork * sizeof(T));                                                       \
    lp_int *iwork = malloc((size_t)liwork * sizeof(lp_int));                                           \
    if (!work || !iwork) { free(sv); free(work); free(iwork); free(A0); free(B0); return -1; }         \
    GELSD(&n, &n, &nrhs, Acm, &n, Bcm, &n, sv, &rcond, &rank, work, &lwork, iwork, &info);             \
    free(sv); free(work); free(iwork);                                                                 \
    int r = 1;                                                                                         \
    if (info != 0) {                                                                                   \
      r = RETRY(n, nrhs, A0, B0);                                                                      \
      if (r == 1) memcpy(Bcm, B0, nb * sizeof(T));                                                     \
    }                                                                                                  \
    free(A0); free(B0);                                                                                \
    return r;                                                                                          \
  }                                                                                                    \
                                                                                                       \
  int NAME(int n_, int nrhs_, T *A, T *B) {                                                            \
    if (n_ == 0 || nrhs_ == 0) return 0;                                                               \
    lp_int n = n_, nrhs = nrhs_, info = 0;                                                             \
    size_t nn = (size_t)n * n, nb = (size_t)n * nrhs;                                                  \
    T *Bcm = malloc(nb * sizeof(T));                                                                   \
    lp_int *ipiv = malloc((size_t)n * sizeof(lp_int));                                                 \
    T *Acm = NULL;                                                                                     \
    int result = -1;                                                                                   \
    if (!Bcm || !ipiv) goto done;                                                                      \
    /* max|A| and the 1-norm of the stored matrix (Aᵀ): the largest absolute row sum of A. */          \
    T amax, anorm;                                                                                     \
    NORMS(A, n, &amax, &anorm);                                                                        \
    int finite = isfinite(anorm);                                                                      \
    int factored = 0, singular = !finite;                                                              \
    if (!singular) {                                                                                   \
      GETRF(&n, &n, A, &n, ipiv, &info);                                                               \
      if (info < 0) { result = -2; goto done; }                                                        \
      factored = 1;                                                                                    \
      T pmin = INFINITY;                                                                               \
      for (lp_int k = 0; k < n; k++) {                                                                 \
        T u = fabs(A[(size_t)k * n + k]);                                                              \
        pmin = u < pmin ? u : pmin;                                                                    \
      }                                                                                                \
      singular = info > 0 || !(pmin > amax * (TOL));                                                   \
      if (!singular && pmin < amax * sqrt(EPS)) {                                                      \
        T rc = 0, *cw = malloc((size_t)4 * n * sizeof(T));                                             \
        lp_int *ciw = malloc((size_t)n * sizeof(lp_int));                                              \
        if (!cw || !ciw) { free(cw); free(ciw); goto done; }                                           \
        GECON("1", &n, A, &n, &anorm, &rc, cw, ciw, &info, 1);                                         \
        free(cw); free(ciw);                                                                           \
        singular = info != 0 || !(rc >= 10 * EPS);                                                     \
      }                                                                                                \
    }                                                                                                  \
    if (!singular) {                                                                                   \
      if (nrhs == 1) memcpy(Bcm, B, nb * sizeof(T));                                                   \
      else NAME##_transpose(B, Bcm, n, nrhs);                                                          \
      GETRS("T", &n, &nrhs, A, &n, ipiv, Bcm, &n, &info, 1);                                           \
      if (info != 0) { result = -2; goto done; }                                                       \
      if (NAME##_all_finite(Bcm, nb)) {                                                                \
        if (nrhs == 1) memcpy(B, Bcm, nb * sizeof(T));                                                 \
        else NAME##_transpose(Bcm, B, nrhs, n);                                                        \
        result = 0;                                                                                    \
        goto done;                                                                                     \
      }                                                                                                \
    }                                                                                                  \
    /* Least squares. Rebuild the stored matrix (Aᵀ, column-major) as P·L·U if getrf ran. */          \
    Acm = malloc(nn * sizeof(T));                                                                      \
    if (!Acm) goto done;                                                                               \
    if (factored) {                                                                                    \
      T *M = Acm;                                                                                      \
      for (lp_int j = 0; j < n; j++) /* column j of U, zero below the diagonal */                     \
        for (lp_int i = 0; i < n; i++) M[(size_t)j * n + i] = i <= j ? A[(size_t)j * n + i] : 0;       \
      TRMM(n, A, M);                                                                                   \
      lp_int k1 = 1, k2 = n, back = -1;                                                                \
      LASWP(&n, M, &n, &k1, &k2, ipiv, &back);                                                         \
      memcpy(A, M, nn * sizeof(T));                                                                    \
    }                                                                                                  \
    /* A now holds the original row-major matrix; gelsd wants it column-major. */                     \
    NAME##_transpose(A, Acm, n, n);                                                                    \
    if (nrhs == 1) memcpy(Bcm, B, nb * sizeof(T));                                                     \
    else NAME##_transpose(B, Bcm, n, nrhs);                                                            \
    result = NAME##_lstsq(n, nrhs, Acm, Bcm);                                                          \
    if (result == 1) {                                                                                 \
      if (nrhs == 1) memcpy(B, Bcm, nb * sizeof(T));                                                   \
      else NAME##_transpose(Bcm, B, nrhs, n);                                                          \
    }                                                                                                  \
  done:                                                                                                \
    free(Acm); free(Bcm); free(ipiv);                                                                  \
    return result;                                                                                     \
  }

RB_DEFINE_SOLVE(rb_solve_f32, float, s_norms, sgetrf_, sgetrs_, sgecon_, s_trmm_lower_unit, slaswp_, sgelsd_, FLT_EPSILON, FLT_EPSILON, s_lstsq_in_double)
RB_DEFINE_SOLVE(rb_solve_f64, double, d_norms, dgetrf_, dgetrs_, dgecon_, d_trmm_lower_unit, dlaswp_, dgelsd_, DBL_EPSILON, (double)n * 1e-14, d_lstsq_no_retry)
