/* gemm_bf16.c - the native bf16 path of damo_gemm (DAMO_MATMUL_BF16 on a CPU with
 * AVX512_BF16): VDPBF16PS multiplies pairs of bfloat16 values and adds both products into
 * one f32 lane, twice the multiply-adds of an f32 FMA per instruction.
 *
 * The driver's blocking is f32's (gemm.c), but op(A) and op(B) are packed straight from
 * the f32 source into pairs along k (damo_gemm_pack_bf16): group p of a panel of width w
 * holds, for each of its w rows (A) or columns (B), the two bf16 values at k = 2p and 2p + 1
 * side by side (a zero after an odd k). The 14 x 32 micro-kernel then loads 32 columns' pairs in two zmm
 * and broadcasts one row's pair per VDPBF16PS, as the f32 kernel broadcasts one value per
 * FMA. The rounding is damo_bf16_from_f32's (nearest even, NaN kept), the emulated path's;
 * the products are exact in f32 and accumulate in f32, two per step, so results match the
 * emulated path to f32 rounding (VDPBF16PS treats denormal inputs and outputs as zero). */
#include "kernels/cpu/bf16_pairs.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/transpose16.h"

#include <immintrin.h>

#define MR DAMO_GEMM_AVX512_MR
#define NR DAMO_GEMM_AVX512_NR
/* Rows of a k-major source are often a few cache lines each, read a pair at a time: without
 * a prefetch this far ahead, packing waited on memory more than it converted (a 1024-row
 * slice of a 2048 x 1024 activation, cold: 2x faster with it). */
#define PACK_PREFETCH_PAIRS 8

__attribute__((target("avx512f,avx512bw,avx512bf16"))) void damo_gemm_pack_bf16(int x_major, const float *src,
                                                                                int64_t ld, int64_t x0, int64_t k0,
                                                                                int64_t x_count, int64_t depth,
                                                                                int width, uint16_t *dst) {
  const int64_t panels = (x_count + width - 1) / width, pairs = (depth + 1) / 2;
  const int vectors = (width + 15) / 16;
  if (!x_major) {
    /* Element (x, k) at src[k * ld + x]: pair p interleaves two source rows, read in order. */
    for (int64_t p = 0; p < pairs; p++) {
      const float *row0 = src + (k0 + 2 * p) * ld + x0, *row1 = 2 * p + 1 < depth ? row0 + ld : NULL;
      if (2 * (p + PACK_PREFETCH_PAIRS) + 1 < depth) /* both rows of a pair a few pairs on, every line of them */
        for (int64_t x = 0; x < x_count; x += 16) {
          _mm_prefetch((const char *)(row0 + 2 * PACK_PREFETCH_PAIRS * ld + x), _MM_HINT_T0);
          _mm_prefetch((const char *)(row0 + (2 * PACK_PREFETCH_PAIRS + 1) * ld + x), _MM_HINT_T0);
        }
      for (int64_t q = 0; q < panels; q++)
        for (int v = 0; v < vectors; v++) {
          const int64_t offset = q * width + 16 * v;
          const __m512i two = damo_bf16_pair_rows(row0 + offset, row1 ? row1 + offset : NULL, damo_lanes16(x_count - offset));
          _mm512_mask_storeu_epi32(dst + (q * width * pairs + p * width + 16 * v) * 2, damo_lanes16(width - 16 * v), two);
        }
    }
    return;
  }
  /* Element (x, k) at src[x * ld + k]: a row's 32 values from k = 2p are its pairs p .. p + 15
   * in order (VCVTNE2PS2BF16 of the two halves); 16 rows of them transposed give 16 groups. */
  for (int64_t q = 0; q < panels; q++) {
    uint16_t *panel = dst + q * width * 2 * pairs;
    for (int v = 0; v < vectors; v++) {
      const int64_t first_x = q * width + 16 * v, rows_here = x_count - first_x;
      const __mmask16 store_mask = damo_lanes16(width - 16 * v);
      for (int64_t p = 0; p < pairs; p += 16) {
        const __mmask16 low = damo_lanes16(depth - 2 * p), high = damo_lanes16(depth - 2 * p - 16);
        __m512 block[16];
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++) {
          if (r < rows_here) {
            const float *at = src + (x0 + first_x + r) * ld + k0 + 2 * p;
            const __m512bh both = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(high, at + 16), _mm512_maskz_loadu_ps(low, at));
            block[r] = _mm512_castsi512_ps((__m512i)both);
          } else {
            block[r] = _mm512_setzero_ps();
          }
        }
        damo_transpose_16x16(block);
        const int groups = pairs - p < 16 ? (int)(pairs - p) : 16;
        for (int t = 0; t < groups; t++)
          _mm512_mask_storeu_epi32(panel + ((p + t) * width + 16 * v) * 2, store_mask, _mm512_castps_si512(block[t]));
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
