/* cpu_features.c - which SIMD level the CPU kernels dispatch on.
 *
 * The library is built without -march flags, so the fast kernels live in functions compiled
 * for a target ISA and are chosen here at run time. The level is detected once (lazily, on
 * first use), may be lowered by the DAMO_SIMD environment variable, and may be forced by
 * tests; a request above what the CPU has is clamped to the best it has. */
#include "kernels/cpu/cpu_kernels.h"

#include <cpuid.h>
#include <stdatomic.h>
#include <stdint.h>
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

/* Read from CPUID rather than __builtin_cpu_supports: the builtin's feature names for bf16
 * and AMX differ between GCC and clang versions (clang 14 rejects "amx-bf16" at compile
 * time), and a unit only counts when the OS also saves its registers (XCR0). */
static uint64_t os_saved_state(void) {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return 0; /* no OSXSAVE */
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

int damo_cpu_has_bf16(void) {
  unsigned eax, ebx, ecx, edx;
  if (__get_cpuid_max(0, NULL) < 7) return 0;
  uint64_t xcr0 = os_saved_state();
  const uint64_t avx512_state = 0xE6; /* SSE, AVX, opmask, ZMM upper halves, ZMM16-31 */
  const uint64_t amx_state = 3ull << 17; /* XTILECFG, XTILEDATA */
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  if ((edx & (1u << 22)) && (xcr0 & amx_state) == amx_state) return 2; /* AMX-BF16 */
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  if ((eax & (1u << 5)) && (xcr0 & avx512_state) == avx512_state) return 1; /* AVX512_BF16 */
  return 0;
}

int damo_cpu_has_avx512_bf16(void) {
  unsigned eax, ebx, ecx, edx;
  if (__get_cpuid_max(0, NULL) < 7) return 0;
  const uint64_t avx512_state = 0xE6;
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  return (eax & (1u << 5)) && (os_saved_state() & avx512_state) == avx512_state;
}

int damo_cpu_has_vnni(void) {
  unsigned eax, ebx, ecx, edx;
  if (__get_cpuid_max(0, NULL) < 7) return 0;
  const uint64_t avx512_state = 0xE6;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const int f = (ebx >> 16) & 1, bw = (ebx >> 30) & 1, vnni = (ecx >> 11) & 1;
  return f && bw && vnni && (os_saved_state() & avx512_state) == avx512_state;
}

/* On the AVX-512 path: AMX tiles where the CPU and the OS allow them (gemm_amx.c), else
 * VDPBF16PS where the CPU has AVX512_BF16 (gemm_bf16.c); otherwise the operands are rounded
 * and multiplied by the f32 kernels. */
const char *damo_bf16_matmul_path(void) {
  if (damo_simd_level_get() != DAMO_SIMD_AVX512) return "emulated";
  if (damo_amx_ready()) return "amx_bf16";
  return damo_cpu_has_avx512_bf16() ? "avx512_bf16" : "emulated";
}
