{
  "targets": [
    {
      "target_name": "rebasin_native",
      "sources": ["native/addon.c", "native/kernels.c", "native/conv.c", "native/lapack.c"],
      "include_dirs": ["/usr/include/x86_64-linux-gnu"],
      "libraries": ["-lopenblas"],
      "cflags": ["-O3", "-march=haswell", "-mfma", "-ffast-math", "-fno-finite-math-only", "-std=c11"],
      "cflags_c": ["-O3", "-march=haswell", "-mfma", "-ffast-math", "-fno-finite-math-only", "-std=c11"]
    }
  ]
}
