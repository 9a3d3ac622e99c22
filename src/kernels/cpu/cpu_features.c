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

enum { UNIT_AVX512_BF16 = 1, UNIT_AMX_BF16 = 2, UNIT_VNNI = 4, UNITS_KNOWN = 8, UNIT_AMX_INT8 = 16 };

/* The bf16 and int8 units, read once: the int8 and bf16 products ask on every call, and
 * CPUID traps to the hypervisor in a virtual machine (microseconds each). */
static int detect_units(void) {
  unsigned eax, ebx, ecx, edx;
  int units = UNITS_KNOWN;
  if (__get_cpuid_max(0, NULL) < 7) return units;
  const uint64_t xcr0 = os_saved_state();
  const int zmm = (xcr0 & 0xE6) == 0xE6;                /* SSE, AVX, opmask, ZMM upper halves, ZMM16-31 */
  const int tiles = (xcr0 & (3ull << 17)) == 3ull << 17; /* XTILECFG, XTILEDATA */
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const int avx512bw = ((ebx >> 16) & 1) && ((ebx >> 30) & 1); /* AVX512F and BW */
  if (avx512bw && ((ecx >> 11) & 1) && zmm) units |= UNIT_VNNI;
  if (((edx >> 22) & 1) && tiles) units |= UNIT_AMX_BF16;
  if (((edx >> 25) & 1) && tiles) units |= UNIT_AMX_INT8;
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  if (((eax >> 5) & 1) && zmm) units |= UNIT_AVX512_BF16;
  return units;
}

static int units_of_cpu(void) {
  static atomic_int units; /* 0 until detected; detection is deterministic, so racing is harmless */
  int u = atomic_load_explicit(&units, memory_order_relaxed);
  if (!u) atomic_store_explicit(&units, u = detect_units(), memory_order_relaxed);
  return u;
}

int damo_cpu_has_bf16(void) {
  const int u = units_of_cpu();
  return u & UNIT_AMX_BF16 ? 2 : u & UNIT_AVX512_BF16 ? 1 : 0;
}

int damo_cpu_has_avx512_bf16(void) { return (units_of_cpu() & UNIT_AVX512_BF16) != 0; }

int damo_cpu_has_vnni(void) { return (units_of_cpu() & UNIT_VNNI) != 0; }

int damo_cpu_has_amx_int8(void) { return (units_of_cpu() & UNIT_AMX_INT8) != 0; }

/* On the AVX-512 path: AMX tiles where the CPU and the OS allow them (gemm_amx.c), else
 * VDPBF16PS where the CPU has AVX512_BF16 (gemm_bf16.c); otherwise the operands are rounded
 * and multiplied by the f32 kernels. */
const char *damo_bf16_matmul_path(void) {
  if (damo_simd_level_get() != DAMO_SIMD_AVX512) return "emulated";
  if (damo_amx_ready()) return "amx_bf16";
  return damo_cpu_has_avx512_bf16() ? "avx512_bf16" : "emulated";
}
