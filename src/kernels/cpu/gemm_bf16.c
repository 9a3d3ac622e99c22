/* gemm_bf16.c - the native bf16 path of damo_gemm (DAMO_MATMUL_BF16 on a CPU with
 * AVX512_BF16): VDPBF16PS multiplies pairs of bfloat16 values and adds both products into
 * one f32 lane, twice the multiply-adds of an f32 FMA per instruction.
 *
 * The driver packs op(A) and op(B) as for f32 (gemm.c) and then converts each packed panel
 * into pairs along k (damo_gemm_bf16_pairs): group p of a panel of width w holds, for each of
 * its w rows (A) or columns (B), the two bf16 values at k = 2p and 2p + 1 side by side (a
 * zero after an odd k). The 14 x 32 micro-kernel then loads 32 columns' pairs in two zmm
 * and broadcasts one row's pair per VDPBF16PS, as the f32 kernel broadcasts one value per
 * FMA. The rounding is damo_bf16_from_f32's (nearest even, NaN kept), the emulated path's;
 * the products are exact in f32 and accumulate in f32, two per step, so results match the
 * emulated path to f32 rounding (VDPBF16PS treats denormal inputs and outputs as zero). */
#include "kernels/cpu/bf16_pairs.h"
#include "kernels/cpu/cpu_kernels.h"

#include <immintrin.h>

#define MR DAMO_GEMM_AVX512_MR
#define NR DAMO_GEMM_AVX512_NR

__attribute__((target("avx512f,avx512bw,avx512bf16"))) void damo_gemm_bf16_pairs(const float *src, int64_t panels,
                                                                                 int width, int64_t depth,
                                                                                 uint16_t *dst) {
  const int64_t pairs = (depth + 1) / 2;
  for (int64_t q = 0; q < panels; q++) {
    const float *in = src + q * width * depth;
    uint16_t *out = dst + q * width * 2 * pairs;
    for (int64_t p = 0; p < pairs; p++) {
      const float *k0 = in + 2 * p * width, *k1 = 2 * p + 1 < depth ? k0 + width : NULL;
      for (int x = 0; x < width; x += 16) {
        const int lanes = width - x < 16 ? width - x : 16;
        const __m512i v = damo_bf16_pair_rows(k0 + x, k1 ? k1 + x : NULL, damo_lanes16(lanes));
        _mm512_mask_storeu_epi16(out + (p * width + x) * 2, lanes == 16 ? (__mmask32)0xFFFFFFFFu
                                                                        : (__mmask32)((1ull << (2 * lanes)) - 1), v);
      }
    }
  }
}

__attribute__((target("avx512f,avx512bf16"))) void damo_gemm_microkernel_avx512_bf16(
    int64_t pairs, const uint16_t *packed_a, const uint16_t *packed_b, float *c, int64_t ldc, int m, int n, float alpha,
    float beta) {
  __m512 acc[MR][2];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int i = 0; i < m; i++) {
    _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
  }
#pragma GCC unroll 2
  for (int64_t p = 0; p < pairs; p++) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)packed_b);
    const __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(packed_b + 32));
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      int32_t pair;
      memcpy(&pair, packed_a + 2 * i, sizeof pair);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
    }
    packed_a += 2 * MR;
    packed_b += 2 * NR;
  }
  const __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++) {
    if (i >= m) break;
    for (int v = 0; v < 2; v++) {
      const __mmask16 mask = damo_lanes16(n - 16 * v);
      float *out = c + i * ldc + 16 * v;
      __m512 scaled = _mm512_mul_ps(acc[i][v], alpha_v);
      if (beta != 0.0f) scaled = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, out), beta_v, scaled);
      _mm512_mask_storeu_ps(out, mask, scaled);
    }
  }
}
