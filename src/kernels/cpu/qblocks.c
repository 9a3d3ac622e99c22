/* qblocks.c - weight-only block formats for decoding: every row of a (rows x cols) matrix cut
 * into blocks of 32 values that share one scale.
 *
 *   Q8_0: int8 q in [-127, 127], value = s q, s = max|w| / 127 >= 0 (one byte a value).
 *   Q4_0: 4-bit q in [-8, 7], value = d q, d = m / -8 where m is the block's value of largest
 *         magnitude (d carries m's sign, so m lands on -8 exactly and the other side has 7
 *         steps); q + 8 in a nibble, byte j of a block holding value j (low nibble) and
 *         value j + 16 (high), 16 bytes a block.
 *
 * Scales are rounded to bfloat16 (what the files store) *before* the values are rounded
 * against them, so the file reloads to the same numbers. Decoding a
 * token streams every weight once, so the kernels widen each block in registers and multiply
 * by f32 activations: no dequantised copy is ever written. Paths: AVX-512, AVX2, portable
 * (damo_simd_level_force picks one, as tests do). */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

enum { QB = DAMO_BLOCK_SIZE };

const char *damo_block_format_name(damo_block_format f) {
  return f == DAMO_BLOCKS_Q8_0 ? "q8_0" : f == DAMO_BLOCKS_Q4_0 ? "q4_0" : "f32";
}

int64_t damo_block_row_bytes(damo_block_format f, int64_t cols) {
  return f == DAMO_BLOCKS_Q8_0 ? cols : f == DAMO_BLOCKS_Q4_0 ? cols / 2 : 0;
}

/* s rounded to the nearest bfloat16 (8 significant bits): the block's extreme then divides to
 * within 0.4% of 127 (or -8) and still rounds there, so no value clips by more than a
 * rounding, and blocks of dequantised values quantise to themselves. */
static float bf16_scale(float s) { return damo_f32_from_bf16(damo_bf16_from_f32(s)); }

static void quantize_block(damo_block_format f, const float *w, uint8_t *q, float *scale) {
  float amax = 0, m = 0;
  for (int i = 0; i < QB; i++)
    if (fabsf(w[i]) > amax) amax = fabsf(w[i]), m = w[i];
  if (f == DAMO_BLOCKS_Q8_0) {
    const float s = amax > 0 ? bf16_scale(amax / 127.0f) : 0.0f, inv = s > 0 ? 1.0f / s : 0.0f;
    for (int i = 0; i < QB; i++) {
      float r = nearbyintf(w[i] * inv);
      ((int8_t *)q)[i] = (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
    }
    *scale = s;
  } else {
    const float d = m != 0 ? bf16_scale(m / -8.0f) : 0.0f, inv = d != 0 ? 1.0f / d : 0.0f;
    uint8_t nib[QB];
    for (int i = 0; i < QB; i++) {
      float r = nearbyintf(w[i] * inv);
      nib[i] = (uint8_t)((r > 7 ? 7 : r < -8 ? -8 : r) + 8);
    }
    for (int j = 0; j < QB / 2; j++) q[j] = (uint8_t)(nib[j] | nib[j + QB / 2] << 4);
    *scale = d;
  }
}

damo_status damo_blocks_quantize(damo_block_format f, const float *w, int64_t rows, int64_t cols, uint8_t *q,
                                 float *scales) {
  if ((f != DAMO_BLOCKS_Q8_0 && f != DAMO_BLOCKS_Q4_0) || !w || !q || !scales || rows < 0 || cols <= 0 || cols % QB)
    return damo_error(DAMO_ERR_INVALID_ARG, "blocks_quantize: %s of a %lld x %lld matrix (columns must be a positive "
                      "multiple of %d)", damo_block_format_name(f), (long long)rows, (long long)cols, QB);
  for (int64_t i = 0; i < rows * cols; i++)
    if (!isfinite(w[i]))
      return damo_error(DAMO_ERR_NUMERIC, "blocks_quantize: non-finite value at flat index %lld", (long long)i);
  const int64_t bytes = damo_block_format_bytes(f);
  for (int64_t b = 0; b < rows * cols / QB; b++) quantize_block(f, w + b * QB, q + b * bytes, scales + b);
  return DAMO_OK;
}

int64_t damo_block_format_bytes(damo_block_format f) { return f == DAMO_BLOCKS_Q4_0 ? QB / 2 : QB; }

/* One block's 32 values (value i = scale * q_i). */
static void block_values(damo_block_format f, const uint8_t *q, float scale, float *out) {
  if (f == DAMO_BLOCKS_Q8_0) {
    for (int i = 0; i < QB; i++) out[i] = scale * (float)((const int8_t *)q)[i];
  } else {
    for (int j = 0; j < QB / 2; j++) {
      out[j] = scale * (float)((q[j] & 15) - 8);
      out[j + QB / 2] = scale * (float)((q[j] >> 4) - 8);
    }
  }
}

void damo_blocks_dequantize(damo_block_format f, const uint8_t *q, const float *scales, int64_t rows, int64_t cols,
                            float *w) {
  const int64_t bytes = damo_block_format_bytes(f);
  for (int64_t b = 0; b < rows * cols / QB; b++) block_values(f, q + b * bytes, scales[b], w + b * QB);
}

/* ------------------------------------------------------------------ out[r] = W[r] . x */

/* A block's 32 values widened to f32 in registers: two zmm (values 0-15, 16-31). */
#define Q8_HALF512(p) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p))))
__attribute__((target("avx512f"))) static inline void widen512(damo_block_format f, const uint8_t *qb, __m512 *w0,
                                                               __m512 *w1) {
  if (f == DAMO_BLOCKS_Q8_0) {
    *w0 = Q8_HALF512(qb);
    *w1 = Q8_HALF512(qb + 16);
  } else {
    /* a nibble indexes a table of the 16 values -8..7: vpermps reads only an index's low four
     * bits, so the high nibble needs a shift and neither needs a mask, an offset or a convert */
    const __m512 table = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qb));
    *w0 = _mm512_permutexvar_ps(v, table);
    *w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table);
  }
}

/* A block's 32 values as four ymm: values 0-7, 8-15, 16-23, 24-31. */
__attribute__((target("avx2,fma"))) static inline void widen256(damo_block_format f, const uint8_t *qb, __m256 w[4]) {
  if (f == DAMO_BLOCKS_Q8_0) {
    for (int i = 0; i < 4; i++)
      w[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(qb + 8 * i))));
  } else {
    const __m256i low = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
    for (int h = 0; h < 2; h++) { /* bytes 8h..8h+7: values 8h.. (low nibbles) and 16 + 8h.. (high) */
      const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qb + 8 * h)));
      w[h] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(v, low), eight));
      w[2 + h] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(v, 4), eight));
    }
  }
}


static void dots_portable(damo_block_format f, const float *x, const uint8_t *q, const float *scales, int64_t cols,
                          int64_t r0, int64_t r1, float *out) {
  const int64_t row_bytes = damo_block_row_bytes(f, cols), bytes = damo_block_format_bytes(f), nb = cols / QB;
  float v[QB];
  for (int64_t r = r0; r < r1; r++) {
    double sum = 0;
    for (int64_t b = 0; b < nb; b++) {
      block_values(f, q + r * row_bytes + b * bytes, scales[r * nb + b], v);
      for (int i = 0; i < QB; i++) sum += (double)v[i] * x[b * QB + i];
    }
    out[r] = (float)sum;
  }
}

/* Each block's values times x, scaled once into its row's sum; four rows at a time (four
 * streams in flight, x loaded once for them). */
__attribute__((target("avx512f"))) static void dots_avx512(damo_block_format f, const float *x, const uint8_t *q,
                                                           const float *scales, int64_t cols, int64_t r0, int64_t r1,
                                                           float *out) {
  const int64_t row_bytes = damo_block_row_bytes(f, cols), bytes = damo_block_format_bytes(f), nb = cols / QB;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const uint8_t *qr = q + r * row_bytes;
    const float *sr = scales + r * nb;
    /* Rows 16 ahead fetched early: four interleaved streams defeat the hardware prefetcher
     * enough to halve the speed without it. */
    const uint8_t *ahead = r + 20 <= r1 ? qr + 16 * row_bytes : qr;
    for (int64_t b = 0; b < nb; b++) {
      const __m512 x0 = _mm512_loadu_ps(x + b * QB), x1 = _mm512_loadu_ps(x + b * QB + 16);
      for (int i = 0; i < 4; i++) {
        __m512 w0, w1;
        _mm_prefetch((const char *)(ahead + i * row_bytes + b * bytes), _MM_HINT_T0);
        widen512(f, qr + i * row_bytes + b * bytes, &w0, &w1);
        const __m512 p = _mm512_fmadd_ps(w1, x1, _mm512_mul_ps(w0, x0));
        acc[i] = _mm512_fmadd_ps(p, _mm512_set1_ps(sr[i * nb + b]), acc[i]);
      }
    }
    for (int i = 0; i < 4; i++) out[r + i] = _mm512_reduce_add_ps(acc[i]);
  }
  for (; r < r1; r++) {
    __m512 acc = _mm512_setzero_ps(), w0, w1;
    const uint8_t *qr = q + r * row_bytes;
    for (int64_t b = 0; b < nb; b++) {
      widen512(f, qr + b * bytes, &w0, &w1);
      const __m512 p = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + b * QB + 16), _mm512_mul_ps(w0, _mm512_loadu_ps(x + b * QB)));
      acc = _mm512_fmadd_ps(p, _mm512_set1_ps(scales[r * nb + b]), acc);
    }
    out[r] = _mm512_reduce_add_ps(acc);
  }
}

__attribute__((target("avx2,fma"))) static void dots_avx2(damo_block_format f, const float *x, const uint8_t *q,
                                                          const float *scales, int64_t cols, int64_t r0, int64_t r1,
                                                          float *out) {
  const int64_t row_bytes = damo_block_row_bytes(f, cols), bytes = damo_block_format_bytes(f), nb = cols / QB;
  for (int64_t r = r0; r < r1; r++) {
    __m256 acc = _mm256_setzero_ps(), w[4];
    const uint8_t *qr = q + r * row_bytes;
    for (int64_t b = 0; b < nb; b++) {
      widen256(f, qr + b * bytes, w);
      __m256 p = _mm256_mul_ps(w[0], _mm256_loadu_ps(x + b * QB));
      for (int i = 1; i < 4; i++) p = _mm256_fmadd_ps(w[i], _mm256_loadu_ps(x + b * QB + 8 * i), p);
      acc = _mm256_fmadd_ps(p, _mm256_set1_ps(scales[r * nb + b]), acc);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    out[r] = _mm_cvtss_f32(s);
  }
}

void damo_blocks_row_dots(damo_block_format f, const float *x, const uint8_t *q, const float *scales, int64_t cols,
                          int64_t r0, int64_t r1, float *out) {
  const damo_simd_level level = damo_simd_level_get();
  if (level == DAMO_SIMD_AVX512) dots_avx512(f, x, q, scales, cols, r0, r1, out);
  else if (level == DAMO_SIMD_AVX2) dots_avx2(f, x, q, scales, cols, r0, r1, out);
  else dots_portable(f, x, q, scales, cols, r0, r1, out);
}
