/* bf16_pairs.h - the conversion both native bf16 paths pack with (gemm_bf16.c, gemm_amx.c):
 * two rows of f32 (k and k + 1) into 16 pairs of bf16, one pair per 32-bit lane, as
 * VDPBF16PS and TDPBF16PS read them. VCVTNE2PS2BF16 rounds to nearest even and keeps NaN, as
 * damo_bf16_from_f32 does (it also reads denormal inputs as zero, as the multiplies would). */
#ifndef DAMO_BF16_PAIRS_H
#define DAMO_BF16_PAIRS_H

#include <immintrin.h>
#include <stdint.h>

/* The first n of 16 lanes. */
static inline __mmask16 damo_lanes16(int64_t n) {
  return n >= 16 ? (__mmask16)0xFFFF : n > 0 ? (__mmask16)((1u << n) - 1u) : (__mmask16)0;
}

/* 16 values at k0 and at k1 (lanes past `lanes` zero; a NULL row reads as zeros) as pairs. */
__attribute__((target("avx512f,avx512bw,avx512bf16"), always_inline)) static inline __m512i
damo_bf16_pair_rows(const float *k0, const float *k1, __mmask16 lanes) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                              21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512 a = k0 ? _mm512_maskz_loadu_ps(lanes, k0) : _mm512_setzero_ps();
  const __m512 b = k1 ? _mm512_maskz_loadu_ps(lanes, k1) : _mm512_setzero_ps();
  return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

#endif
