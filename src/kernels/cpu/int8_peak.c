/* int8_peak.c - the multiply-add ceiling of the int8 product's path (gemm_int8.c), measured as
 * fma_peak.c measures the f32 one: operands in registers, nothing read from memory in the
 * loop, every thread at once. "amx_int8": TDPBUSD on tiles (16 x 16 x 64 products an
 * instruction); "avx512_vnni": VPDPBUSD, 64 u8 x s8 products a zmm
 * instruction; "avx2": VPMADDWD on int16 pairs (16 products a ymm) and the VPADDD that sums
 * them, the instruction pair the S16 micro-kernel issues; "portable": the f32 FMA peak. An
 * operation is a multiply or an add (a multiply-add counts 2), as GFLOP/s counts them. */
#include "kernels/cpu/cpu_kernels.h"

#include <immintrin.h>
#include <math.h>

#define ITERATIONS 4000000L
#define CHAINS 12

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double vnni_loop(long iterations, int *sink) {
  __m512i acc[CHAINS];
  for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_setzero_si512();
  const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(1);
  for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 12
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbusd_epi32(acc[c], a, b);
  }
  __m512i total = acc[0];
  for (int c = 1; c < CHAINS; c++) total = _mm512_add_epi32(total, acc[c]);
  *sink = _mm_cvtsi128_si32(_mm512_castsi512_si128(total)); /* 4 x 12 x iterations: no overflow */
  return 2.0 * 64.0 * CHAINS * (double)iterations;
}

/* 6 chains: 12 live registers of the 16 AVX2 has (the sums depend on one VPADDD a step). */
#define MADD_CHAINS 6
__attribute__((target("avx2"))) static double madd_loop(long iterations, int *sink) {
  __m256i acc[MADD_CHAINS];
  for (int c = 0; c < MADD_CHAINS; c++) acc[c] = _mm256_setzero_si256();
  __m256i a[MADD_CHAINS];
  for (int c = 0; c < MADD_CHAINS; c++) a[c] = _mm256_set1_epi16(1);
  const __m256i b = _mm256_set1_epi16(1);
  for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 6
    for (int c = 0; c < MADD_CHAINS; c++) {
      __asm__("" : "+x"(a[c])); /* a[c] "changes": its product is neither hoisted nor shared */
      acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(a[c], b));
    }
  }
  __m256i total = acc[0];
  for (int c = 1; c < MADD_CHAINS; c++) total = _mm256_add_epi32(total, acc[c]);
  int lanes[8];
  _mm256_storeu_si256((__m256i *)lanes, total);
  *sink = lanes[0];
  return 2.0 * 16.0 * MADD_CHAINS * (double)iterations;
}

const char *damo_int8_path(void) {
  const damo_simd_level level = damo_simd_level_get();
  if (level >= DAMO_SIMD_AVX512 && damo_amx_int8_ready()) return "amx_int8";
  if (level >= DAMO_SIMD_AVX512 && damo_cpu_has_vnni()) return "avx512_vnni";
  return level >= DAMO_SIMD_AVX2 ? "avx2" : "portable";
}

enum { INT8_MADD, INT8_VNNI, INT8_AMX };

static double int8_loop(int kind, long iterations, double *sink) {
  if (kind == INT8_AMX) return damo_amx_peak_loop(1, iterations / 10, sink);
  int s = 0;
  double done = kind == INT8_VNNI ? vnni_loop(iterations, &s) : madd_loop(iterations, &s);
  *sink = s != 0 ? 1.0 : NAN; /* 0: the loop did not run (NaN makes the peak 0) */
  return done;
}

double damo_int8_peak_gops(int threads) {
  const char *path = damo_int8_path();
  const int kind = !strcmp(path, "amx_int8") ? INT8_AMX : !strcmp(path, "avx512_vnni") ? INT8_VNNI : INT8_MADD;
  if (kind == INT8_MADD && strcmp(path, "avx2")) return damo_fma_peak_gflops(threads);
  return damo_peak_best_gops(threads, int8_loop, kind, ITERATIONS);
}
