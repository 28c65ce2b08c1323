/* Freestanding <string.h> for the wasm32 build: memcpy/memset are defined in kernels.c (clang may
 * emit calls to them for struct copies and zeroing loops). */
#ifndef RB_WASM_STRING_H
#define RB_WASM_STRING_H
#include <stddef.h>
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memset(void *dst, int c, size_t n);
#define memcpy(d, s, n) __builtin_memcpy(d, s, n)
#endif
