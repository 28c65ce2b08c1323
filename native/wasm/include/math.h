/* Freestanding <math.h> for the wasm32 build (no libc): only what rb_math.h and the wasm kernels
 * use, as compiler builtins that lower to single wasm instructions. wasm has no fused multiply-add
 * (outside relaxed-SIMD), so fmaf is a multiply then an add: results differ from the native build's
 * FMA by an ulp or so, within what the backend tests allow. */
#ifndef RB_WASM_MATH_H
#define RB_WASM_MATH_H
#define INFINITY (__builtin_inff())
#define NAN (__builtin_nanf(""))
#define rintf(x) __builtin_rintf(x)
#define fabsf(x) __builtin_fabsf(x)
#define fabs(x) __builtin_fabs(x)
#define copysignf(x, y) __builtin_copysignf(x, y)
#define sqrtf(x) __builtin_sqrtf(x)
#define sqrt(x) __builtin_sqrt(x)
#define fmaf(a, b, c) ((a) * (b) + (c))
#define isfinite(x) __builtin_isfinite(x)
#endif
