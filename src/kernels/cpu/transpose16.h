/* transpose16.h - a 16 x 16 transpose of 32-bit lanes in zmm registers, shared by the
 * AVX-512 packers of f32 values (gemm_avx512.c) and of bf16 pairs (gemm_bf16.c), and the
 * sparse convolution's channels-last stores (spconv.c). */
#ifndef DAMO_TRANSPOSE16_H
#define DAMO_TRANSPOSE16_H

#include <immintrin.h>

/* In-register transpose: afterwards rows[k] lane x holds what rows[x] lane k held. Three
 * rounds of shuffles: 32-bit interleave, 64-bit interleave, then 128-bit lane moves. */
__attribute__((target("avx512f"), always_inline)) static inline void damo_transpose_16x16(__m512 rows[16]) {
  __m512 pairs[16], quads[16];
  for (int i = 0; i < 16; i += 2) {
    pairs[i] = _mm512_unpacklo_ps(rows[i], rows[i + 1]);
    pairs[i + 1] = _mm512_unpackhi_ps(rows[i], rows[i + 1]);
  }
  /* quads[4g + c], 128-bit lane L: column 4L + c of rows 4g .. 4g+3. */
  for (int g = 0; g < 16; g += 4) {
    __m512d lo = _mm512_castps_pd(pairs[g]), hi = _mm512_castps_pd(pairs[g + 1]);
    __m512d lo2 = _mm512_castps_pd(pairs[g + 2]), hi2 = _mm512_castps_pd(pairs[g + 3]);
    quads[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
    quads[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
    quads[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
    quads[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
  }
  /* A 4 x 4 transpose of 128-bit lanes for each c gives column 4L + c in full. */
  for (int c = 0; c < 4; c++) {
    __m512 low01 = _mm512_shuffle_f32x4(quads[c], quads[4 + c], 0x44);
    __m512 high01 = _mm512_shuffle_f32x4(quads[c], quads[4 + c], 0xEE);
    __m512 low23 = _mm512_shuffle_f32x4(quads[8 + c], quads[12 + c], 0x44);
    __m512 high23 = _mm512_shuffle_f32x4(quads[8 + c], quads[12 + c], 0xEE);
    rows[c] = _mm512_shuffle_f32x4(low01, low23, 0x88);
    rows[4 + c] = _mm512_shuffle_f32x4(low01, low23, 0xDD);
    rows[8 + c] = _mm512_shuffle_f32x4(high01, high23, 0x88);
    rows[12 + c] = _mm512_shuffle_f32x4(high01, high23, 0xDD);
  }
}

#endif
