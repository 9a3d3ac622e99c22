/* bf16_peak.c - the bf16 multiply-add ceiling of the path damo_bf16_matmul_path() names,
 * measured as fma_peak.c measures the f32 one: operands held in registers (AMX: two source
 * tiles and four accumulator tiles; AVX512_BF16: zmm chains), nothing read from memory in
 * the loop, every thread at once. "emulated" has the f32 FMA peak. */
#include "kernels/cpu/cpu_kernels.h"

#include <immintrin.h>

#define AMX_ITERATIONS 400000L
#define DOT_ITERATIONS 4000000L

/* The AMX ceiling (bf16_peak.c and int8_peak.c): four sums tiles, each step four products of
 * operands held in tiles. bf16 (TDPBF16PS, 16 x 16 x 32 multiply-adds): ones times a small
 * number, accumulating slowly (never infinite in this many steps); int8 (TDPBUSD,
 * 16 x 16 x 64): byte ones. */
__attribute__((target("amx-tile,amx-bf16,amx-int8"))) double damo_amx_peak_loop(int int8, long iterations,
                                                                                double *sink) {
  /* Static storage: filled before the tile loads read it (GCC does not see those reads). */
  static _Thread_local uint16_t a[16 * 32] __attribute__((aligned(64))), b[16 * 32] __attribute__((aligned(64)));
  for (int i = 0; i < 16 * 32; i++) a[i] = int8 ? 0x0101 : 0x3f80, b[i] = int8 ? 0x0101 : 0x3380; /* 1.0, 2^-24 */
  union {
    float f[16 * 16];
    int32_t i[16 * 16];
  } out __attribute__((aligned(64)));
  damo_amx_configure();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, a, 64);
  _tile_loadd(5, a, 64);
  _tile_loadd(6, b, 64);
  _tile_loadd(7, b, 64);
  if (int8)
    for (long i = 0; i < iterations; i++) {
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 7);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
  else
    for (long i = 0; i < iterations; i++) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  _tile_stored(0, &out, 64);
  damo_amx_release();
  *sink = int8 ? (double)out.i[0] : (double)out.f[0];
  return 4.0 * 2.0 * 16 * 16 * (int8 ? 64 : 32) * (double)iterations;
}

__attribute__((target("avx512f,avx512bf16"))) static double dot_loop(long iterations, float *sink) {
  __m512 acc[12];
  for (int c = 0; c < 12; c++) acc[c] = _mm512_setzero_ps();
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33803380);
  for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 12
    for (int c = 0; c < 12; c++) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  }
  __m512 total = acc[0];
  for (int c = 1; c < 12; c++) total = _mm512_add_ps(total, acc[c]);
  *sink = _mm512_reduce_add_ps(total);
  return 2.0 * 32.0 * 12 * (double)iterations;
}

static double bf16_loop(int amx, long iterations, double *sink) {
  if (amx) return damo_amx_peak_loop(0, iterations, sink);
  float s = 0;
  double done = dot_loop(iterations, &s);
  *sink = s;
  return done;
}

double damo_bf16_peak_gflops(int threads) {
  const char *path = damo_bf16_matmul_path();
  const int amx = !strcmp(path, "amx_bf16");
  if (!amx && strcmp(path, "avx512_bf16")) return damo_fma_peak_gflops(threads);
  return damo_peak_best_gops(threads, bf16_loop, amx, amx ? AMX_ITERATIONS : DOT_ITERATIONS);
}
