{
  "targets": [
    {
      "target_name": "rebasin_native",
      "sources": ["native/addon.c", "native/kernels.c", "native/exact.c", "native/conv.c", "native/lapack.c", "native/gemm.c", "native/gemm_avx2.c"],
      "include_dirs": ["/usr/include/x86_64-linux-gnu"],
      "libraries": ["-lopenblas", "-lm", "-lpthread"],
      "cflags!": ["-O2", "-O3", "-Os"],
      "cflags_c": ["-std=c11", "-O3", "-march=haswell", "-mfma", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
                   "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
