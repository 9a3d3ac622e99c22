/* gemm_avx512.c - the AVX-512 GEMM micro-kernel and panel packer (see kernels.h for their
 * contracts).
 *
 * A 14 x 32 tile of C lives in 28 zmm accumulators for the whole k loop; each step loads two
 * vectors of the packed B panel and broadcasts 14 values of the packed A panel straight into
 * the FMAs. 28 independent chains cover the FMA latency of both pipes, and the tile's 16 loads
 * per 28 FMAs stay within what the load ports deliver; in cache it runs at ~99% of the FMA
 * peak, as fast as 12 x 32 or 6 x 64 (8 x 48 was slower). 14 divides 784 (the MNIST width),
 * and 32 columns waste less than 64 on narrow products. The packer transposes 16 x 16 blocks
 * in registers, so packing an untransposed A costs about as little as copying. The tile that
 * reads op(A) in place (damo_gemm_gather) has the same shape, and an 8 x 16 one for products of
 * at most 16 columns (one zmm per row: a 10-class classifier filled 10 of the AVX2 tile's 16
 * lanes at half the width). Compiled for AVX-512 regardless of the build flags; damo_gemm only
 * calls these after run-time detection. */
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/transpose16.h"

#include <immintrin.h>

#define MR DAMO_GEMM_AVX512_MR
#define NR DAMO_GEMM_AVX512_NR
#define VECTORS_PER_ROW (NR / 16)

/* The first `lanes` lanes (0..16). */
static inline __mmask16 first_lanes(int64_t lanes) {
  if (lanes <= 0) return 0;
  if (lanes >= 16) return (__mmask16)0xFFFF;
  return (__mmask16)((1u << lanes) - 1u);
}

/* C[0..m)[0..n) = alpha * acc + beta * C (beta 0: C not read) for a tile of `rows` x
 * 16 * `vectors` accumulators, acc[i * vectors + v]. Callers pass constants, so after inlining the
 * loops unroll and the accumulators stay in registers. */
__attribute__((target("avx512f,fma"), always_inline)) static inline void store_tile(const __m512 *acc, int rows,
                                                                                    int vectors, float *c, int64_t ldc,
                                                                                    int m, int n, float alpha,
                                                                                    float beta) {
  const __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
  if (m == rows && n == 16 * vectors) {
#pragma GCC unroll 32
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
      for (int v = 0; v < vectors; v++) {
        float *out = c + i * ldc + 16 * v;
        __m512 scaled = _mm512_mul_ps(acc[i * vectors + v], alpha_v);
        if (beta != 0.0f) scaled = _mm512_fmadd_ps(_mm512_loadu_ps(out), beta_v, scaled);
        _mm512_storeu_ps(out, scaled);
      }
    return;
  }
  /* Edge tile: the same arithmetic, with masked loads and stores so nothing outside the
   * m x n corner is read or written. */
#pragma GCC unroll 32
  for (int i = 0; i < rows; i++) {
    if (i >= m) break;
#pragma GCC unroll 4
    for (int v = 0; v < vectors; v++) {
      __mmask16 mask = first_lanes(n - 16 * v);
      float *out = c + i * ldc + 16 * v;
      __m512 scaled = _mm512_mul_ps(acc[i * vectors + v], alpha_v);
      if (beta != 0.0f) scaled = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, out), beta_v, scaled);
      _mm512_mask_storeu_ps(out, mask, scaled);
    }
  }
}

/* C is only touched after the k loop; asking for it now hides its miss behind the FMAs. */
__attribute__((target("avx512f"), always_inline)) static inline void prefetch_c(const float *c, int64_t ldc, int m,
                                                                                  int width) {
  for (int i = 0; i < m; i++) {
    _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + i * ldc + width - 1), _MM_HINT_T0);
  }
}

__attribute__((target("avx512f,fma"))) void damo_gemm_microkernel_avx512(int64_t k, const float *packed_a,
                                                                         const float *packed_b, float *c, int64_t ldc,
                                                                         int m, int n, float alpha, float beta) {
  __m512 acc[MR][VECTORS_PER_ROW];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < VECTORS_PER_ROW; v++) acc[i][v] = _mm512_setzero_ps();
  prefetch_c(c, ldc, m, NR);
#pragma GCC unroll 4
  for (int64_t p = 0; p < k; p++) {
    __m512 b[VECTORS_PER_ROW];
#pragma GCC unroll 4
    for (int v = 0; v < VECTORS_PER_ROW; v++) b[v] = _mm512_load_ps(packed_b + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      __m512 a = _mm512_set1_ps(packed_a[i]);
#pragma GCC unroll 4
      for (int v = 0; v < VECTORS_PER_ROW; v++) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
    packed_a += MR;
    packed_b += NR;
  }
  store_tile(&acc[0][0], MR, VECTORS_PER_ROW, c, ldc, m, n, alpha, beta);
}

/* The k loop of a gathered tile (below); `indexed` is a constant, so each caller gets a loop
 * without the test. */
__attribute__((target("avx512f,fma"), always_inline)) static inline void gather_k_loop(
    const int tile_rows, const int vectors, const int indexed, int64_t k, const float *const *r, const int64_t *k_off,
    const float *packed_b, __m512 *acc) {
#pragma GCC unroll 2
  for (int64_t p = 0; p < k; p++) {
    const int64_t at = indexed ? k_off[p] : p;
    __m512 b[4];
#pragma GCC unroll 4
    for (int v = 0; v < vectors; v++) b[v] = _mm512_load_ps(packed_b + 16 * v);
#pragma GCC unroll 32
    for (int i = 0; i < tile_rows; i++) {
      const __m512 a = _mm512_set1_ps(r[i][at]);
#pragma GCC unroll 4
      for (int v = 0; v < vectors; v++) acc[i * vectors + v] = _mm512_fmadd_ps(a, b[v], acc[i * vectors + v]);
    }
    packed_b += 16 * vectors;
  }
}

/* A tile of `rows` x 16 * `vectors` with op(A) read in place: step p of row i at
 * rows[i][k_off[p]] (a strided matrix, or convolution patches seen in the padded image:
 * damo_gemm_gather), or at rows[i][p] when k_off is NULL. The caller points rows past m at a
 * real row; they are not stored. */
__attribute__((target("avx512f,fma"), always_inline)) static inline void gather_tile(
    const int tile_rows, const int vectors, int64_t k, const float *const *rows, const int64_t *k_off,
    const float *packed_b, float *c, int64_t ldc, int m, int n, float alpha, float beta) {
  enum { MAX_ACC = 32 };
  const float *r[MAX_ACC];
  for (int i = 0; i < tile_rows; i++) r[i] = rows[i];
  __m512 acc[MAX_ACC];
#pragma GCC unroll 32
  for (int i = 0; i < tile_rows * vectors; i++) acc[i] = _mm512_setzero_ps();
  prefetch_c(c, ldc, m, 16 * vectors);
  if (k_off)
    gather_k_loop(tile_rows, vectors, 1, k, r, k_off, packed_b, acc);
  else
    gather_k_loop(tile_rows, vectors, 0, k, r, NULL, packed_b, acc);
  store_tile(acc, tile_rows, vectors, c, ldc, m, n, alpha, beta);
}

__attribute__((target("avx512f,fma"))) void damo_gemm_microkernel_avx512_gather(int64_t k, const float *const *rows,
                                                                                const int64_t *k_off,
                                                                                const float *packed_b, float *c,
                                                                                int64_t ldc, int m, int n, float alpha,
                                                                                float beta) {
  gather_tile(MR, VECTORS_PER_ROW, k, rows, k_off, packed_b, c, ldc, m, n, alpha, beta);
}

/* Narrow products (op(B) at most 16 columns: a classifier's classes, a first convolution's
 * filters) in one zmm per row: the 14 x 32 tile would be mostly padding there. */
__attribute__((target("avx512f,fma"))) void damo_gemm_microkernel_avx512_gather16(int64_t k, const float *const *rows,
                                                                                  const int64_t *k_off,
                                                                                  const float *packed_b, float *c,
                                                                                  int64_t ldc, int m, int n,
                                                                                  float alpha, float beta) {
  gather_tile(DAMO_GEMM_AVX512_NARROW_MR, 1, k, rows, k_off, packed_b, c, ldc, m, n, alpha, beta);
}

/* ------------------------------------------------------------------ packing */

/* How far ahead (in floats along a source row) the transposing packer prefetches. */
#define PACK_PREFETCH_FLOATS 64
/* How many rows ahead the k-major packer prefetches rows of at most PACK_PREFETCH_SHORT_ROW
 * floats (an MC-row block of a transposed activation: 2x faster cold; longer rows measured
 * faster with the next row only). */
#define PACK_PREFETCH_ROWS 16
#define PACK_PREFETCH_SHORT_ROW 256

/* See damo_gemm_pack_fn. width <= 32. */
__attribute__((target("avx512f"))) void damo_gemm_pack_avx512(int x_major, const float *src, int64_t ld, int64_t x0,
                                                              int64_t k0, int64_t x_count, int64_t depth, int width,
                                                              float *dst) {
  const int64_t panels = (x_count + width - 1) / width;
  const int vectors = (width + 15) / 16;
  if (!x_major) {
    /* Element (x, k) at src[k * ld + x]: each group is a run of one source row. Going row by
     * row over all panels reads the source sequentially. */
    const int64_t ahead = x_count <= PACK_PREFETCH_SHORT_ROW ? PACK_PREFETCH_ROWS : 1;
    for (int64_t p = 0; p < depth; p++) {
      const float *row = src + (k0 + p) * ld + x0;
      /* Rows are often only a few cache lines long: fetch every line of one a few rows on
       * (short rows), or of the next row (long ones, which the hardware streams itself). */
      if (p + ahead < depth)
        for (int64_t x = 0; x < x_count; x += 16) _mm_prefetch((const char *)(row + ahead * ld + x), _MM_HINT_T0);
      for (int64_t q = 0; q < panels; q++)
        for (int v = 0; v < vectors; v++) {
          const int64_t offset = q * width + 16 * v;
          __m512 values = _mm512_maskz_loadu_ps(first_lanes(x_count - offset), row + offset);
          _mm512_mask_storeu_ps(dst + (q * depth + p) * width + 16 * v, first_lanes(width - 16 * v), values);
        }
    }
    return;
  }
  /* Element (x, k) at src[x * ld + k]: read 16 k of 16 rows, transpose, write 16 groups. */
  for (int64_t q = 0; q < panels; q++) {
    float *panel = dst + q * depth * width;
    for (int v = 0; v < vectors; v++) {
      const int64_t first_x = q * width + 16 * v;
      const int64_t rows_here = x_count - first_x;
      const __mmask16 store_mask = first_lanes(width - 16 * v);
      for (int64_t p = 0; p < depth; p += 16) {
        const __mmask16 load_mask = first_lanes(depth - p);
        __m512 block[16];
        /* Sixteen short row segments defeat the hardware prefetcher: fetch a few lines ahead. */
        if (p + PACK_PREFETCH_FLOATS < depth)
          for (int r = 0; r < 16 && r < rows_here; r++)
            _mm_prefetch((const char *)(src + (x0 + first_x + r) * ld + k0 + p + PACK_PREFETCH_FLOATS), _MM_HINT_T0);
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++)
          block[r] = r < rows_here ? _mm512_maskz_loadu_ps(load_mask, src + (x0 + first_x + r) * ld + k0 + p)
                                   : _mm512_setzero_ps();
        damo_transpose_16x16(block);
        const int groups = depth - p < 16 ? (int)(depth - p) : 16;
        for (int t = 0; t < groups; t++) _mm512_mask_storeu_ps(panel + (p + t) * width + 16 * v, store_mask, block[t]);
      }
    }
  }
}
