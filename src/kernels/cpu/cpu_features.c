/* cpu_features.c - which SIMD level the CPU kernels dispatch on.
 *
 * The library is built without -march flags, so the fast kernels live in functions compiled
 * for a target ISA and are chosen here at run time. The level is detected once (lazily, on
 * first use), may be lowered by the DAMO_SIMD environment variable, and may be forced by
 * tests; a request above what the CPU has is clamped to the best it has. */
#include "kernels/kernels.h"

#include <stdatomic.h>
#include <stdio.h>

/* -1 until the first query; then a damo_simd_level. Detection is deterministic, so two
 * threads racing through the first query store the same value and no lock is needed. */
static atomic_int current_level = -1;

static damo_simd_level detect_cpu_level(void) {
  __builtin_cpu_init();
  /* __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0). */
  int has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (has_avx2 && __builtin_cpu_supports("avx512f")) return DAMO_SIMD_AVX512;
  if (has_avx2) return DAMO_SIMD_AVX2;
  return DAMO_SIMD_SCALAR;
}

static damo_simd_level clamp_to_cpu(damo_simd_level wanted) {
  damo_simd_level best = detect_cpu_level();
  if ((int)wanted < (int)DAMO_SIMD_SCALAR) return DAMO_SIMD_SCALAR;
  return wanted > best ? best : wanted;
}

/* The level named by DAMO_SIMD, or the CPU's best when unset or unrecognised (warned about). */
static damo_simd_level initial_level(void) {
  const char *env = getenv("DAMO_SIMD");
  if (env) {
    if (strcmp(env, "scalar") == 0) return DAMO_SIMD_SCALAR;
    if (strcmp(env, "avx2") == 0) return clamp_to_cpu(DAMO_SIMD_AVX2);
    if (strcmp(env, "avx512") == 0) return clamp_to_cpu(DAMO_SIMD_AVX512);
    if (*env) fprintf(stderr, "damo: warning: ignoring DAMO_SIMD='%s' (expected scalar, avx2 or avx512)\n", env);
  }
  return detect_cpu_level();
}

damo_simd_level damo_simd_level_get(void) {
  int level = atomic_load_explicit(&current_level, memory_order_acquire);
  if (level < 0) {
    int detected = (int)initial_level();
    int expected = -1;
    /* A concurrent damo_simd_level_force wins over the lazy default. */
    if (!atomic_compare_exchange_strong(&current_level, &expected, detected)) detected = expected;
    level = detected;
  }
  return (damo_simd_level)level;
}

damo_simd_level damo_simd_level_force(damo_simd_level level) {
  damo_simd_level in_force = clamp_to_cpu(level);
  atomic_store_explicit(&current_level, (int)in_force, memory_order_release);
  return in_force;
}

const char *damo_simd_path(void) {
  switch (damo_simd_level_get()) {
  case DAMO_SIMD_AVX512:
    return "avx512";
  case DAMO_SIMD_AVX2:
    return "avx2";
  default:
    return "scalar";
  }
}

int damo_cpu_has_bf16(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("amx-bf16")) return 2;
  return __builtin_cpu_supports("avx512bf16") ? 1 : 0;
}

/* Written for what this project's machines have (AVX2 and AVX-512F, no bf16 unit): a native
 * kernel is added here as a path name and a micro-kernel when a machine to test it exists. */
const char *damo_bf16_matmul_path(void) { return "emulated"; }
