/*
 * The dense solve wrapper's overhead (native/lapack.c: norms, singularity checks, copies) against
 * sgetrf + sgetrs alone on the same 1023² float32 system (the KKT size of a 512-unit layer), the
 * two timed in alternation so machine load hits both alike; medians. Not part of the addon:
 *
 *   gcc -O3 -march=haswell -mfma -fno-math-errno -fno-trapping-math -ffp-contract=off -Inative \
 *       -o build/solve-overhead bench/solve-overhead.c native/lapack.c -lopenblas -lm
 *   build/solve-overhead [reps]          (OPENBLAS_NUM_THREADS=1 for one thread)
 *
 * (from the package folder; build/ is the addon's ignored build output)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cblas.h>
#include "rb.h"
typedef blasint lp_int;
extern void sgetrf_(const lp_int *m, const lp_int *n, float *a, const lp_int *lda, lp_int *ipiv, lp_int *info);
extern void sgetrs_(const char *trans, const lp_int *n, const lp_int *nrhs, const float *a, const lp_int *lda,
                    const lp_int *ipiv, float *b, const lp_int *ldb, lp_int *info, size_t trans_len);
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  int n=1023, reps=argc>1?atoi(argv[1]):21;
  float *A0=malloc(sizeof(float)*n*n),*B0=malloc(sizeof(float)*n),*A=malloc(sizeof(float)*n*n),*B=malloc(sizeof(float)*n);
  srand(1); for(int i=0;i<n*n;i++)A0[i]=((float)rand()/RAND_MAX-0.5f)*0.06f; for(int i=0;i<n;i++){A0[i*n+i]+=2;B0[i]=(float)rand()/RAND_MAX;}
  lp_int *ipiv=malloc(sizeof(lp_int)*n);
  double tw[200],tr[200],tc[200];
  for(int r=0;r<reps+2;r++){
    double t0=now(); memcpy(A,A0,4*n*n); memcpy(B,B0,4*n); double t1=now();
    rb_solve_f32(n,1,A,B); double t2=now();
    memcpy(A,A0,4*n*n); memcpy(B,B0,4*n); double t3=now();
    lp_int nn=n,one=1,info; sgetrf_(&nn,&nn,A,&nn,ipiv,&info); sgetrs_("T",&nn,&one,A,&nn,ipiv,B,&nn,&info,1); double t4=now();
    if(r>=2){tw[r-2]=t2-t1;tr[r-2]=t4-t3;tc[r-2]=t1-t0;}
  }
  qsort(tw,reps,8,cmp);qsort(tr,reps,8,cmp);qsort(tc,reps,8,cmp);
  printf("n=%d threads=%d: wrapper %.2f ms, sgetrf+sgetrs %.2f ms, copy %.2f ms (medians of %d, interleaved)\n",n,openblas_get_num_threads(),tw[reps/2],tr[reps/2],tc[reps/2],reps);
}
