/* gemm_avx2.c - the AVX2 + FMA GEMM micro-kernel and panel packer (see kernels.h for their
 * contracts).
 *
 * A 6 x 16 tile of C lives in 12 ymm accumulators for the whole k loop; each step loads two
 * vectors of the packed B panel and broadcasts 6 values of the packed A panel. That leaves 3 of
 * the 16 ymm registers for operands, so nothing spills, and 12 chains cover the FMA latency.
 * Compiled for AVX2 regardless of the build flags; damo_gemm only calls it after run-time
 * detection. */
#include "kernels/cpu/cpu_kernels.h"

#include <immintrin.h>

#define MR DAMO_GEMM_AVX2_MR
#define NR DAMO_GEMM_AVX2_NR
#define VECTORS_PER_ROW (NR / 8)

/* A maskload/maskstore mask (a lane is active when its sign bit is set) of the first
 * `lanes` lanes (none when lanes <= 0, all when lanes >= 8). */
__attribute__((target("avx2"))) static inline __m256i first_lanes(int64_t lanes) {
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int clamped = lanes < 0 ? 0 : lanes > 8 ? 8 : (int)lanes;
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(clamped), lane_index);
}

/* C[0..m)[0..n) = alpha * acc + beta * C (beta == 0: C not read). A full tile takes plain
 * loads and stores; an edge tile masked ones, so nothing outside the m x n corner is touched. */
__attribute__((target("avx2,fma"), always_inline)) static inline void store_tile(__m256 acc[MR][VECTORS_PER_ROW], float *c,
                                                                  int64_t ldc, int m, int n, float alpha, float beta) {
  const __m256 alpha_v = _mm256_set1_ps(alpha), beta_v = _mm256_set1_ps(beta);
  if (m == MR && n == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
      for (int v = 0; v < VECTORS_PER_ROW; v++) {
        float *out = c + i * ldc + 8 * v;
        __m256 scaled = _mm256_mul_ps(acc[i][v], alpha_v);
        if (beta != 0.0f) scaled = _mm256_fmadd_ps(_mm256_loadu_ps(out), beta_v, scaled);
        _mm256_storeu_ps(out, scaled);
      }
    return;
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++) {
    if (i >= m) break;
#pragma GCC unroll 4
    for (int v = 0; v < VECTORS_PER_ROW; v++) {
      __m256i mask = first_lanes(n - 8 * v);
      float *out = c + i * ldc + 8 * v;
      __m256 scaled = _mm256_mul_ps(acc[i][v], alpha_v);
      if (beta != 0.0f) scaled = _mm256_fmadd_ps(_mm256_maskload_ps(out, mask), beta_v, scaled);
      _mm256_maskstore_ps(out, mask, scaled);
    }
  }
}

__attribute__((target("avx2,fma"))) void damo_gemm_microkernel_avx2(int64_t k, const float *packed_a,
                                                                    const float *packed_b, float *c, int64_t ldc, int m,
                                                                    int n, float alpha, float beta) {
  __m256 acc[MR][VECTORS_PER_ROW];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < VECTORS_PER_ROW; v++) acc[i][v] = _mm256_setzero_ps();

  /* C is only touched after the k loop; asking for it now hides its miss behind the FMAs. */
  for (int i = 0; i < m; i++) {
    _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
  }

#pragma GCC unroll 4
  for (int64_t p = 0; p < k; p++) {
    __m256 b[VECTORS_PER_ROW];
#pragma GCC unroll 4
    for (int v = 0; v < VECTORS_PER_ROW; v++) b[v] = _mm256_load_ps(packed_b + 8 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      __m256 a = _mm256_set1_ps(packed_a[i]);
#pragma GCC unroll 4
      for (int v = 0; v < VECTORS_PER_ROW; v++) acc[i][v] = _mm256_fmadd_ps(a, b[v], acc[i][v]);
    }
    packed_a += MR;
    packed_b += NR;
  }

  store_tile(acc, c, ldc, m, n, alpha, beta);
}

/* The same tile with op(A) read where it lies: step p of row i is rows[i][k_off[p]] (a
 * strided matrix, or convolution patches gathered from the image: damo_gemm_gather). The
 * caller points rows past m at a real row; they are not stored. */
__attribute__((target("avx2,fma"))) void damo_gemm_microkernel_avx2_gather(int64_t k, const float *const *rows,
                                                                           const int64_t *k_off,
                                                                           const float *packed_b, float *c,
                                                                           int64_t ldc, int m, int n, float alpha,
                                                                           float beta) {
  const float *r[MR];
  for (int i = 0; i < MR; i++) r[i] = rows[i];
  __m256 acc[MR][VECTORS_PER_ROW];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < VECTORS_PER_ROW; v++) acc[i][v] = _mm256_setzero_ps();
#pragma GCC unroll 2
  for (int64_t p = 0; p < k; p++) {
    const int64_t at = k_off ? k_off[p] : p;
    const __m256 b0 = _mm256_load_ps(packed_b), b1 = _mm256_load_ps(packed_b + 8);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const __m256 av = _mm256_broadcast_ss(r[i] + at);
      acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
    }
    packed_b += NR;
  }
  store_tile(acc, c, ldc, m, n, alpha, beta);
}

/* ------------------------------------------------------------------ packing */

/* In-register transpose: afterwards rows[k] lane x holds what rows[x] lane k held. */
__attribute__((target("avx2"))) static inline void transpose_8x8(__m256 rows[8]) {
  __m256 pairs[8], quads[8];
  for (int i = 0; i < 8; i += 2) {
    pairs[i] = _mm256_unpacklo_ps(rows[i], rows[i + 1]);
    pairs[i + 1] = _mm256_unpackhi_ps(rows[i], rows[i + 1]);
  }
  /* quads[4g + c], 128-bit lane L: column 4L + c of rows 4g .. 4g+3. */
  for (int g = 0; g < 8; g += 4) {
    quads[g] = _mm256_shuffle_ps(pairs[g], pairs[g + 2], 0x44);
    quads[g + 1] = _mm256_shuffle_ps(pairs[g], pairs[g + 2], 0xEE);
    quads[g + 2] = _mm256_shuffle_ps(pairs[g + 1], pairs[g + 3], 0x44);
    quads[g + 3] = _mm256_shuffle_ps(pairs[g + 1], pairs[g + 3], 0xEE);
  }
  for (int c = 0; c < 4; c++) {
    rows[c] = _mm256_permute2f128_ps(quads[c], quads[4 + c], 0x20);
    rows[4 + c] = _mm256_permute2f128_ps(quads[c], quads[4 + c], 0x31);
  }
}

/* Stores the first `lanes` lanes of v at dst. Full vectors and the 6-lane groups of the A
 * panels take plain stores: masked stores are microcoded on AMD cores and made packing a
 * fifth of a GEMM's time there. */
__attribute__((target("avx2"))) static inline void store_lanes(float *dst, __m256 v, int lanes) {
  if (lanes >= 8) {
    _mm256_storeu_ps(dst, v);
  } else if (lanes == 6) {
    _mm_storeu_ps(dst, _mm256_castps256_ps128(v));
    _mm_storel_pi((__m64 *)(dst + 4), _mm256_extractf128_ps(v, 1));
  } else {
    _mm256_maskstore_ps(dst, first_lanes(lanes), v);
  }
}

/* The first `lanes` lanes at src (zeros beyond). */
__attribute__((target("avx2"))) static inline __m256 load_lanes(const float *src, int64_t lanes) {
  return lanes >= 8 ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, first_lanes(lanes));
}

/* See damo_gemm_pack_fn. width <= 16. */
__attribute__((target("avx2"))) void damo_gemm_pack_avx2(int x_major, const float *src, int64_t ld, int64_t x0,
                                                         int64_t k0, int64_t x_count, int64_t depth, int width,
                                                         float *dst) {
  const int64_t panels = (x_count + width - 1) / width;
  const int vectors = (width + 7) / 8;
  if (!x_major) {
    /* Element (x, k) at src[k * ld + x]: each group is a run of one source row. Going row by
     * row over all panels reads the source sequentially. */
    for (int64_t p = 0; p < depth; p++) {
      const float *row = src + (k0 + p) * ld + x0;
      for (int64_t q = 0; q < panels; q++)
        for (int v = 0; v < vectors; v++) {
          const int64_t offset = q * width + 8 * v;
          const int lanes = width - 8 * v < 8 ? width - 8 * v : 8;
          store_lanes(dst + (q * depth + p) * width + 8 * v, load_lanes(row + offset, x_count - offset), lanes);
        }
    }
    return;
  }
  /* Element (x, k) at src[x * ld + k]: read 8 k of up to 8 rows, transpose, write 8 groups. */
  for (int64_t q = 0; q < panels; q++) {
    float *panel = dst + q * depth * width;
    for (int v = 0; v < vectors; v++) {
      const int64_t first_x = q * width + 8 * v;
      const int lanes = width - 8 * v < 8 ? width - 8 * v : 8;
      const int64_t rows_here = x_count - first_x < lanes ? x_count - first_x : lanes;
      for (int64_t p = 0; p < depth; p += 8) {
        __m256 block[8];
        for (int r = 0; r < 8; r++)
          block[r] = r < rows_here ? load_lanes(src + (x0 + first_x + r) * ld + k0 + p, depth - p) : _mm256_setzero_ps();
        transpose_8x8(block);
        const int groups = depth - p < 8 ? (int)(depth - p) : 8;
        for (int t = 0; t < groups; t++) store_lanes(panel + (p + t) * width + 8 * v, block[t], lanes);
      }
    }
  }
}
