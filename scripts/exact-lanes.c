/*
 * Checks native/exact.c's 4-lane GELU and GELU-gradient code against its scalar code for every
 * float32 input (2^32 values, about 2 minutes): `node scripts/exact-lanes.mjs` builds and runs it.
 * The scalar code is checked against the JS kernels by test/backend-compiled.test.ts.
 */
#include "../native/exact.c"

#include <stdio.h>

/* Serial stand-ins for the thread pool of kernels.c. */
void rb_parallel(int n, rb_task_fn fn, void *ctx) { (void)n; fn(ctx, 0, 1); }
int rb_threads(void) { return 1; }

enum { CHUNK = 1 << 16 };

static int differ(float a, float b) { return memcmp(&a, &b, 4) != 0 && !(a != a && b != b); }

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  static double table[ERF_KNOTS * (ERF_DEG + 1)];
  FILE *f = fopen(argv[1], "rb");
  if (!f || fread(table, sizeof table[0], ERF_KNOTS * (ERF_DEG + 1), f) != ERF_KNOTS * (ERF_DEG + 1)) return 2;
  fclose(f);
  if (rb_set_erf_table(table, ERF_KNOTS * (ERF_DEG + 1)) != 0) return 2;
  static float x[CHUNK], dy[CHUNK], lanes[CHUNK];
  long bad = 0;
  for (uint64_t u = 0; u < 0x100000000ull; u += CHUNK) {
    for (int j = 0; j < CHUNK; j++) {
      uint32_t w = (uint32_t)(u + (uint64_t)j);
      memcpy(&x[j], &w, 4);
      dy[j] = 0.37f;
    }
    rb_gelu_f32(x, lanes, CHUNK);
    for (int j = 0; j < CHUNK; j++) {
      float want = gelu_one(x[j]);
      if (differ(lanes[j], want) && bad++ < 5) printf("gelu(%a): lanes %a, scalar %a\n", x[j], lanes[j], want);
    }
    rb_gelu_backward_f32(x, dy, lanes, CHUNK);
    for (int j = 0; j < CHUNK; j++) {
      float want = gelu_backward_one(x[j], dy[j]);
      if (differ(lanes[j], want) && bad++ < 5) printf("gelu'(%a): lanes %a, scalar %a\n", x[j], lanes[j], want);
    }
  }
  printf("GELU and its gradient, 4 lanes vs scalar, every float32 input: %ld differ\n", bad);
  return bad != 0;
}
