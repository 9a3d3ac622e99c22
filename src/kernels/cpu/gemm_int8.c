/* gemm_int8.c - the int8 product of quantised layers: C = s_x * s_w[n] * (Xq - z) Wq + b.
 *
 * Weights are symmetric int8 per output column (scale s_w[n], zero point 0); activations
 * are affine uint8 per tensor (scale s_x, zero point z). The kernel multiplies (q - z),
 * which lies in [-255, 255], by the weight in 16-bit lanes with VPMADDWD: two products per
 * 32-bit lane summed exactly into int32. Subtracting z before the product removes the
 * zero-point correction (no column sums), and nothing saturates: VPMADDUBSW (u8 x s8 into
 * int16) would need 7-bit activations to stay exact, and on AVX2 it computes no more
 * products per cycle than VPMADDWD once its int16 pairs are widened to int32.
 *
 * Where the CPU has AVX512-VNNI, VPDPBUSD multiplies uint8 q by int8 w four at a time into
 * int32 with no saturation, twice the products of VPMADDWD per instruction; there the
 * activations stay uint8 and the zero point comes off in the epilogue as z * sum_k w[k][n]
 * (the column sums, computed when the weights are packed).
 *
 * Layouts (damo_qweight_pack): S16 panels of 8 columns hold, per pair of rows k, k+1 of W,
 * the 16 int16 values c0k c0k+1 c1k c1k+1 ..., so one 256-bit load feeds VPMADDWD against a
 * broadcast pair (x_k, x_k+1) of one row; VNNI panels of 16 columns hold, per group of four
 * rows, 64 int8 values c0k..c0k+3 c1k..., fed against a broadcast group of four uint8. K is
 * padded to the group and N to whole pairs of panels with zero weights; the activation
 * rows come in tiles of QMR (damo_qrows_padded), so the micro-kernels have no edges. */
#include "kernels/cpu/cpu_kernels.h" /* damo_amx_ready, damo_amx_configure */

#include <immintrin.h>
#include <math.h>
#include <omp.h>

#define QNR 16 /* columns per micro-tile: two panels */

#define VNR 32 /* VNNI: columns per micro-tile, two 16-column panels */

int64_t damo_qrows_padded(int64_t M) { return (M + DAMO_QROWS_ALIGN - 1) / DAMO_QROWS_ALIGN * DAMO_QROWS_ALIGN; }

/* AMX-INT8 (TDPBUSD) may run the VNNI layout's products: the CPU has it and the OS gave this
 * process the tiles (gemm_amx.c asks once). */
int damo_amx_int8_ready(void) { return damo_cpu_has_amx_int8() && damo_amx_ready(); }

size_t damo_qrow_bytes(const damo_qweight *w) {
  return (size_t)w->Kp * (w->layout == DAMO_QLAYOUT_VNNI ? 1 : sizeof(int16_t));
}

damo_qweight *damo_qweight_pack(const int8_t *w, int64_t K, int64_t N, const float *scale, damo_qlayout layout) {
  if (K <= 0 || N <= 0 || !w || !scale) {
    damo_error(DAMO_ERR_INVALID_ARG, "int8 weights: bad shape (%lld, %lld) or NULL data", (long long)K, (long long)N);
    return NULL;
  }
  damo_qweight *q = calloc(1, sizeof *q);
  if (!q) return NULL;
  if (layout == DAMO_QLAYOUT_AUTO) layout = damo_cpu_has_vnni() ? DAMO_QLAYOUT_VNNI : DAMO_QLAYOUT_S16;
  const int vnni = layout == DAMO_QLAYOUT_VNNI, group = vnni ? 4 : 2, width = vnni ? 16 : 8;
  /* AMX takes K in whole tiles of 64: the padding's weights are 0, as are the rows' values there */
  const int align = vnni && damo_amx_int8_ready() ? 64 : group;
  q->layout = layout;
  q->K = K, q->N = N, q->Kp = (K + align - 1) / align * align;
  q->panels = (N + 2 * width - 1) / (2 * width) * 2;
  const size_t bytes = (size_t)q->panels * (size_t)q->Kp * (size_t)width * (vnni ? 1 : sizeof(int16_t));
  q->packed = damo_alloc(bytes);
  q->scale = damo_alloc((size_t)N * sizeof *q->scale);
  q->colsum = damo_alloc((size_t)N * sizeof *q->colsum);
  if (!q->packed || !q->scale || !q->colsum) {
    damo_qweight_free(q);
    damo_error(DAMO_ERR_NOMEM, "int8 weights: no memory for a (%lld, %lld) kernel", (long long)K, (long long)N);
    return NULL;
  }
  memcpy(q->scale, scale, (size_t)N * sizeof *scale);
  for (int64_t n = 0; n < N; n++) {
    int32_t sum = 0;
    for (int64_t k = 0; k < K; k++) sum += w[k * N + n];
    q->colsum[n] = sum;
  }
  for (int64_t p = 0; p < q->panels; p++)
    for (int64_t g = 0; g < q->Kp / group; g++)
      for (int c = 0; c < width; c++)
        for (int h = 0; h < group; h++) {
          const int64_t col = p * width + c, k = g * group + h, at = (p * (q->Kp / group) + g) * width * group + c * group + h;
          const int8_t v = col < N && k < K ? w[k * N + col] : 0;
          if (vnni) ((int8_t *)q->packed)[at] = v;
          else ((int16_t *)q->packed)[at] = v;
        }
  return q;
}

void damo_qweight_free(damo_qweight *q) {
  if (!q) return;
  damo_free(q->packed);
  damo_free(q->scale);
  damo_free(q->colsum);
  free(q);
}

/* Affine quantisation of one value to uint8, returned as q - z. nearbyintf rounds half to
 * even, as PyTorch's quantize_per_tensor does. */
static inline int16_t quantize_one(float v, float inv_scale, int zero_point) {
  float r = nearbyintf(v * inv_scale) + (float)zero_point;
  r = r < 0.0f ? 0.0f : r > 255.0f ? 255.0f : r;
  if (v != v) r = (float)zero_point; /* NaN: the caller has refused it; keep the kernel defined */
  return (int16_t)((int)r - zero_point);
}

/* Eight values to q - z as int32 lanes: the AVX2 form of quantize_one (a NaN clamps to 0). */
__attribute__((target("avx2"), always_inline)) static inline __m256i quantize8(const float *src, __m256 inv, __m256 zf,
                                                                               __m256 top) {
  __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(src), inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, zf), _mm256_setzero_ps()), top);
  return _mm256_sub_epi32(_mm256_cvttps_epi32(r), _mm256_cvttps_epi32(zf));
}

/* Rows of x quantised with 1 / scale (inv_scale, as damo_quantize_rows takes it) to uint8
 * (u8) or q - z as int16, rows of ldo values. */
__attribute__((target("avx2"))) static void quantize_avx2(const float *x, int64_t rows, int64_t K, int64_t ldx,
                                                          float inv_scale, int zero_point, void *out, int64_t ldo,
                                                          int u8) {
  const __m256 inv = _mm256_set1_ps(inv_scale), zf = _mm256_set1_ps((float)zero_point), top = _mm256_set1_ps(255.0f);
  const __m256i zi = _mm256_set1_epi32(zero_point);
  for (int64_t r = 0; r < rows; r++) {
    const float *src = x + r * ldx;
    int64_t k = 0;
    if (u8) {
      uint8_t *dst = (uint8_t *)out + r * ldo;
      for (; k + 16 <= K; k += 16) {
        const __m256i a = _mm256_add_epi32(quantize8(src + k, inv, zf, top), zi);
        const __m256i b = _mm256_add_epi32(quantize8(src + k + 8, inv, zf, top), zi);
        const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
        const __m128i w8 = _mm_packus_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
        _mm_storeu_si128((__m128i *)(dst + k), w8);
      }
      for (; k < K; k++) dst[k] = (uint8_t)(quantize_one(src[k], inv_scale, zero_point) + zero_point);
      for (; k < ldo; k++) dst[k] = 0;
    } else {
      int16_t *dst = (int16_t *)out + r * ldo;
      for (; k + 16 <= K; k += 16) {
        const __m256i w16 = _mm256_permute4x64_epi64(
            _mm256_packs_epi32(quantize8(src + k, inv, zf, top), quantize8(src + k + 8, inv, zf, top)), 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + k), w16);
      }
      for (; k < K; k++) dst[k] = quantize_one(src[k], inv_scale, zero_point);
      for (; k < ldo; k++) dst[k] = 0;
    }
  }
}

/* The uint8 form in 16 lanes: the same multiply, rounding, offset and clamp as quantize8
 * (a NaN clamps to 0 the same way: max returns its second operand), then one narrowing store
 * in place of AVX2's packs and permutes (W5's int8 pass spends ~3% here). */
__attribute__((target("avx512f"))) static void quantize_u8_avx512(const float *x, int64_t rows, int64_t K,
                                                                  int64_t ldx, float inv_scale, int zero_point,
                                                                  uint8_t *out, int64_t ldo) {
  const __m512 inv = _mm512_set1_ps(inv_scale), zf = _mm512_set1_ps((float)zero_point), top = _mm512_set1_ps(255.0f);
  for (int64_t r = 0; r < rows; r++) {
    const float *src = x + r * ldx;
    uint8_t *dst = out + r * ldo;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(src + k), inv),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, zf), _mm512_setzero_ps()), top);
      _mm_storeu_si128((__m128i *)(dst + k), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
    }
    for (; k < K; k++) dst[k] = (uint8_t)(quantize_one(src[k], inv_scale, zero_point) + zero_point);
    for (; k < ldo; k++) dst[k] = 0;
  }
}

static void quantize_scalar(const float *x, int64_t rows, int64_t K, int64_t ldx, float inv, int zero_point,
                            void *out, int64_t ldo, int u8) {
  for (int64_t r = 0; r < rows; r++) {
    const float *src = x + r * ldx;
    for (int64_t k = 0; k < ldo; k++) {
      const int16_t v = k < K ? quantize_one(src[k], inv, zero_point) : 0;
      if (u8) ((uint8_t *)out)[r * ldo + k] = (uint8_t)(k < K ? v + zero_point : 0);
      else ((int16_t *)out)[r * ldo + k] = v;
    }
  }
}

/* The quantiser of the dispatched SIMD level. */
static void quantize_at(damo_simd_level level, const float *x, int64_t rows, int64_t K, int64_t ldx, float inv,
                        int zero_point, void *out, int64_t ldo, int u8) {
  if (u8 && level >= DAMO_SIMD_AVX512) quantize_u8_avx512(x, rows, K, ldx, inv, zero_point, out, ldo);
  else if (level >= DAMO_SIMD_AVX2) quantize_avx2(x, rows, K, ldx, inv, zero_point, out, ldo, u8);
  else quantize_scalar(x, rows, K, ldx, inv, zero_point, out, ldo, u8);
}

void damo_quantize_rows(const float *x, int64_t rows, int64_t K, int64_t ldx, float scale, int zero_point,
                        damo_qlayout layout, void *out, int64_t ldo) {
  const int u8 = layout == DAMO_QLAYOUT_VNNI;
  const damo_simd_level level = damo_simd_level_get();
  const size_t row_bytes = (size_t)ldo * (u8 ? 1 : sizeof(int16_t));
  const float inv = 1.0f / scale;
  /* Blocks of 64 rows over the threads (each row's values are independent), about 0.5 ns a
   * value on one. */
  const int threads = rows * K >= (1 << 16) ? damo_threads_for_seconds((double)rows * (double)K * 0.5e-9) : 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r0 = 0; r0 < rows; r0 += 64) {
    const int64_t n = rows - r0 < 64 ? rows - r0 : 64;
    void *dst = (char *)out + (size_t)r0 * row_bytes;
    quantize_at(level, x + r0 * ldx, n, K, ldx, inv, zero_point, dst, ldo, u8);
  }
}

void damo_stage_u8_rows(const uint8_t *q, int64_t rows, int64_t K, int zero_point, damo_qlayout layout, void *out,
                        int64_t ldo) {
  const int u8 = layout == DAMO_QLAYOUT_VNNI;
  const int threads = rows * K >= (1 << 16) ? damo_threads_for_seconds((double)rows * (double)K * 0.25e-9) : 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t *src = q + r * K;
    if (u8) {
      uint8_t *dst = (uint8_t *)out + r * ldo;
      memcpy(dst, src, (size_t)K);
      memset(dst + K, 0, (size_t)(ldo - K));
    } else {
      int16_t *dst = (int16_t *)out + r * ldo;
      for (int64_t k = 0; k < ldo; k++) dst[k] = (int16_t)(k < K ? src[k] - zero_point : 0);
    }
  }
}

void damo_quant_params(float lo, float hi, float *scale, int *zero_point) {
  /* The range must hold 0 exactly (zero padding and ReLU zeros stay exact). */
  if (lo > 0.0f) lo = 0.0f;
  if (hi < 0.0f) hi = 0.0f;
  float s = (hi - lo) / 255.0f;
  if (!(s > 1e-12f)) s = 1.0f; /* an all-zero input: any scale represents it */
  int z = (int)nearbyintf(-lo / s);
  *scale = s;
  *zero_point = z < 0 ? 0 : z > 255 ? 255 : z;
}

/* The epilogue of output row m's `width` columns from n0: the zero point's column sums
 * (VNNI), the scales, the bias, ReLU, and the requantisation of a uint8 output (see
 * damo_q8_out); only the columns < N are written. */
static inline void store_row(const int32_t *acc, int width, const damo_qweight *w, int64_t n0, float x_scale,
                             int zero_point, const float *bias, const damo_q8_out *o, int64_t m) {
  for (int j = 0; j < width && n0 + j < w->N; j++) {
    const int32_t sum = acc[j] - zero_point * w->colsum[n0 + j];
    float v = (float)sum * (x_scale * w->scale[n0 + j]) + (bias ? bias[n0 + j] : 0.0f);
    v = o->relu && v < 0.0f ? 0.0f : v;
    if (o->residual) v += o->residual[m * o->ldr + n0 + j];
    const int64_t at = m * o->ldc + n0 + j - o->col_origin;
    if (o->out_inv_scale > 0.0f)
      ((uint8_t *)o->c)[at] = (uint8_t)(quantize_one(v, o->out_inv_scale, o->out_zero_point) + o->out_zero_point);
    else
      ((float *)o->c)[at] = v;
  }
}

/* Any layout, plain loops: the reference of the SIMD tiles and the path without them. */
static void tile_scalar(const void *a, const damo_qweight *w, int64_t tile, float x_scale, int zero_point,
                        const float *bias, const damo_q8_out *o, int64_t row0, int rows) {
  const int vnni = w->layout == DAMO_QLAYOUT_VNNI, group = vnni ? 4 : 2, width = vnni ? 16 : 8;
  const int64_t groups = w->Kp / group, panel = groups * width * group;
  for (int r = 0; r < rows; r++) {
    int32_t acc[2 * 16] = {0};
    for (int half = 0; half < 2; half++)
      for (int64_t g = 0; g < groups; g++)
        for (int j = 0; j < width; j++)
          for (int h = 0; h < group; h++) {
            const int64_t k = g * group + h, at = (2 * tile + half) * panel + (g * width + j) * group + h;
            const int32_t x = vnni ? ((const uint8_t *)a)[r * w->Kp + k] : ((const int16_t *)a)[r * w->Kp + k];
            acc[half * width + j] += x * (vnni ? ((const int8_t *)w->packed)[at] : ((const int16_t *)w->packed)[at]);
          }
    store_row(acc, 2 * width, w, tile * 2 * width, x_scale, vnni ? zero_point : 0, bias, o, row0 + r);
  }
}

/* S16, QMR rows x 16 columns: 2 x QMR int32 accumulators, two weight vectors, one broadcast. */
__attribute__((target("avx2"))) static void tile_avx2(const int16_t *a, const damo_qweight *w, int64_t tile,
                                                      float x_scale, const float *bias, const damo_q8_out *o,
                                                      int64_t row0, int rows) {
  const int64_t pairs = w->Kp / 2, lda = w->Kp;
  const int16_t *b0 = (const int16_t *)w->packed + (2 * tile) * pairs * 16, *b1 = b0 + pairs * 16;
  __m256i acc[DAMO_QMR][2];
  for (int r = 0; r < DAMO_QMR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  for (int64_t q = 0; q < pairs; q++) {
    const __m256i w0 = _mm256_load_si256((const __m256i *)(b0 + q * 16));
    const __m256i w1 = _mm256_load_si256((const __m256i *)(b1 + q * 16));
    for (int r = 0; r < DAMO_QMR; r++) {
      int32_t pair;
      memcpy(&pair, a + r * lda + 2 * q, sizeof pair);
      const __m256i x = _mm256_set1_epi32(pair);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(x, w0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(x, w1));
    }
  }
  for (int r = 0; r < rows; r++) {
    int32_t lanes[QNR];
    _mm256_storeu_si256((__m256i *)lanes, acc[r][0]);
    _mm256_storeu_si256((__m256i *)(lanes + 8), acc[r][1]);
    store_row(lanes, QNR, w, tile * QNR, x_scale, 0, bias, o, row0 + r);
  }
}

/* The epilogue of a 32-column tile's int32 sums: row r's two halves at acc[2 r], acc[2 r + 1];
 * v = x_scale * scale[n] * (sum - z * colsum[n]) + bias[n], then max(0, .) if relu, stored
 * (f32, or requantised to uint8: damo_q8_out) for the tile's columns inside N and its first
 * `rows` rows, output rows from row0. */
__attribute__((target("avx512f,avx512bw"))) static inline void store_tile(const __m512i *acc, const damo_qweight *w,
                                                                         int64_t tile, float x_scale, int zero_point,
                                                                         const float *bias, const damo_q8_out *o,
                                                                         int64_t row0, int rows) {
  const int u8 = o->out_inv_scale > 0.0f, relu = o->relu;
  const __m512 inv = _mm512_set1_ps(o->out_inv_scale);
  const __m512 zf = _mm512_set1_ps((float)o->out_zero_point), top = _mm512_set1_ps(255.0f);
  for (int h = 0; h < 2; h++) {
    const int64_t col = tile * VNR + 16 * h, left = w->N - col;
    if (left <= 0) break;
    const __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    const __m512 s = _mm512_mul_ps(_mm512_set1_ps(x_scale), _mm512_maskz_loadu_ps(mask, w->scale + col));
    const __m512i zsum = _mm512_mullo_epi32(_mm512_set1_epi32(zero_point), _mm512_maskz_loadu_epi32(mask, w->colsum + col));
    const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + col) : _mm512_setzero_ps();
    for (int r = 0; r < rows; r++) {
      __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[2 * r + h], zsum)), s, b);
      if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
      if (o->residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, o->residual + (row0 + r) * o->ldr + col));
      if (u8) { /* as damo_quantize_rows: round half to even, add z, clamp to 0..255 */
        v = _mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, zf), _mm512_setzero_ps()), top);
        /* packed in a register, then stored: VPMOVDB to memory is microcoded on Zen */
        const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v));
        uint8_t *dst = (uint8_t *)o->c + ((row0 + r) * o->ldc + col - o->col_origin);
        if (left >= 16) {
          _mm_storeu_si128((__m128i *)dst, bytes);
        } else {
          uint8_t part[16];
          _mm_storeu_si128((__m128i *)part, bytes);
          memcpy(dst, part, (size_t)left);
        }
      } else {
        _mm512_mask_storeu_ps((float *)o->c + ((row0 + r) * o->ldc + col - o->col_origin), mask, v);
      }
    }
  }
}

/* VNNI, VMR rows x 32 columns: VPDPBUSD of a broadcast group of four uint8 against 16 columns
 * of four int8 each; the epilogue in 512-bit lanes, masked at the last columns. 12 rows keep
 * 24 sums in flight and load a weight vector for every 12 products (6 rows: 56-62% of the
 * int8 peak on a Zen 5 EPYC). Activation buffers come in whole 48-row blocks, so the rows past
 * M that a last tile reads exist. */
enum { VMR = 12 };
/* The tile over activation rows lda bytes apart from a (gathered 0), or with row r's quad q
 * at rows[r] + k_off[q] (gathered 1: damo_gemm_q8_gather); `gathered` is a constant in each
 * caller, so each gets its own loop. */
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline void tile_vnni_body(
    const int gathered, const int ROWS, const uint8_t *a, const uint8_t *const *rows, const int64_t *k_off,
    const damo_qweight *w, int64_t tile, float x_scale, int zero_point, const float *bias, const damo_q8_out *o,
    int64_t row0, int valid) {
  const int64_t quads = w->Kp / 4, lda = w->Kp;
  const int8_t *b0 = (const int8_t *)w->packed + (2 * tile) * quads * 64, *b1 = b0 + quads * 64;
  __m512i acc[VMR][2];
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  for (int64_t q = 0; q < quads; q++) {
    const __m512i w0 = _mm512_load_si512((const void *)(b0 + q * 64));
    const __m512i w1 = _mm512_load_si512((const void *)(b1 + q * 64));
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; r++) {
      int32_t quad;
      memcpy(&quad, gathered ? rows[r] + k_off[q] : a + r * lda + 4 * q, sizeof quad);
      const __m512i x = _mm512_set1_epi32(quad);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], x, w0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], x, w1);
    }
  }
  /* The epilogue reads the sums through a pointer; handing it acc itself made GCC keep acc in
   * memory and store all 24 sums at every step. */
  __m512i sums[2 * VMR];
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; r++) sums[2 * r] = acc[r][0], sums[2 * r + 1] = acc[r][1];
  store_tile(sums, w, tile, x_scale, zero_point, bias, o, row0, valid);
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void tile_vnni(const uint8_t *a, const damo_qweight *w,
                                                                             int64_t tile, float x_scale,
                                                                             int zero_point, const float *bias,
                                                                             const damo_q8_out *o, int64_t row0,
                                                                             int rows) {
  /* One row (a token being decoded): its own loop, two products a weight load instead of 24,
   * which left the single row bound by the multiply-adds rather than by streaming the weights. */
  if (rows == 1) tile_vnni_body(0, 1, a, NULL, NULL, w, tile, x_scale, zero_point, bias, o, row0, 1);
  else tile_vnni_body(0, VMR, a, NULL, NULL, w, tile, x_scale, zero_point, bias, o, row0, rows);
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void tile_vnni_gather(
    const uint8_t *const *rows, const int64_t *k_off, const damo_qweight *w, int64_t tile, float x_scale,
    int zero_point, const float *bias, const damo_q8_out *o, int64_t row0, int valid) {
  tile_vnni_body(1, VMR, NULL, rows, k_off, w, tile, x_scale, zero_point, bias, o, row0, valid);
}

/* AMX: rows [16 rt, 16 rt + rows) x columns of tile ct (32, two panels) by TDPBUSD, K in
 * chunks of 64 (Kp is a multiple of 64 here). A panel's quads are already B tiles: per quad,
 * 16 columns x 4 values, 64 bytes a tile row. The sums go through a buffer to the same
 * epilogue as tile_vnni. Needs the thread's tiles configured (damo_amx_configure). */
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw"))) static void tile_amx(const uint8_t *a,
                                                                                  const damo_qweight *w, int64_t ct,
                                                                                  float x_scale, int zero_point,
                                                                                  const float *bias,
                                                                                  const damo_q8_out *o, int64_t row0,
                                                                                  int rows) {
  const int64_t quads = w->Kp / 4, chunks = w->Kp / 64, lda = w->Kp;
  const int8_t *b0 = (const int8_t *)w->packed + (2 * ct) * quads * 64, *b1 = b0 + quads * 64;
  int32_t sums[16][32] __attribute__((aligned(64)));
  _tile_zero(0);
  _tile_zero(1);
  for (int64_t k = 0; k < chunks; k++) {
    _tile_loadd(2, a + k * 64, lda);
    _tile_loadd(3, b0 + k * 16 * 64, 64);
    _tile_loadd(4, b1 + k * 16 * 64, 64);
    _tile_dpbusd(0, 2, 3);
    _tile_dpbusd(1, 2, 4);
  }
  _tile_stored(0, &sums[0][0], 128);
  _tile_stored(1, &sums[0][16], 128);
  store_tile((const __m512i *)&sums[0][0], w, ct, x_scale, zero_point, bias, o, row0, rows);
}

/* A fused GELU (damo_q8_out.gelu): the tile of column tile ct (32 wide in the VNNI layout,
 * 16 in the int16 one) and rows [row0, row0 + rows) goes to out's f32 rows and gets its GELU
 * there; before a uint8 output it goes to scratch (TILE_ROWS x VNR floats, the thread's), gets
 * its GELU and is requantised into out as damo_quantize_rows would. tile_out gives a tile
 * function the output (and first row) to store into; finish_tile does the rest. */
enum { TILE_ROWS = 16 }; /* the most rows of any tile: AMX's */
typedef struct tile_target {
  damo_q8_out out;
  int64_t row0;
} tile_target;

static tile_target tile_out(const damo_q8_out *o, const damo_qweight *w, int64_t ct, int64_t row0, float *scratch) {
  if (!o->gelu || !(o->out_inv_scale > 0.0f)) return (tile_target){*o, row0};
  const int64_t width = w->layout == DAMO_QLAYOUT_VNNI ? VNR : QNR;
  return (tile_target){{.c = scratch, .ldc = width, .relu = o->relu, .col_origin = ct * width}, 0};
}

static void finish_tile(const damo_q8_out *o, const damo_qweight *w, int64_t ct, int64_t row0, int rows,
                        float *scratch) {
  if (!o->gelu) return;
  const int64_t width = w->layout == DAMO_QLAYOUT_VNNI ? VNR : QNR, col = ct * width;
  const int64_t cols = w->N - col < width ? w->N - col : width;
  const int u8 = o->out_inv_scale > 0.0f;
  const damo_simd_level level = damo_simd_level_get();
  if (u8 && cols == width) /* the scratch tile is contiguous: one call for all its rows */
    damo_gelu_forward_loop(o->gelu == 2, scratch, scratch, rows * width);
  for (int r = 0; r < rows && cols > 0; r++) {
    if (!u8) {
      float *row = (float *)o->c + (row0 + r) * o->ldc + col;
      damo_gelu_forward_loop(o->gelu == 2, row, row, cols);
      continue;
    }
    float *row = scratch + r * width;
    if (cols < width) damo_gelu_forward_loop(o->gelu == 2, row, row, cols);
    uint8_t *dst = (uint8_t *)o->c + (row0 + r) * o->ldc + col;
    quantize_at(level, row, 1, cols, cols, o->out_inv_scale, o->out_zero_point, dst, cols, 1);
  }
}

/* damo_range_f32: in 16 running lanes (a vector each; one running min and max would be a
 * chain of dependent scalar compares). Written with GCC's vector types and a bitwise select:
 * GCC turned the same loop over float arrays into scalar minss/maxss. */
typedef float range_f32x16 __attribute__((vector_size(64)));
typedef int32_t range_i32x16 __attribute__((vector_size(64)));

DAMO_MULTIVERSION void damo_range_f32(const float *x, int64_t n, float *lo, float *hi) {
  range_f32x16 l = {0}, h = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    range_f32x16 v;
    memcpy(&v, x + i, sizeof v);
    const range_i32x16 below = v < l, above = v > h;
    l = (range_f32x16)(((range_i32x16)v & below) | ((range_i32x16)l & ~below));
    h = (range_f32x16)(((range_i32x16)v & above) | ((range_i32x16)h & ~above));
  }
  float a = 0.0f, b = 0.0f;
  for (; i < n; i++) a = x[i] < a ? x[i] : a, b = x[i] > b ? x[i] : b;
  for (int k = 0; k < 16; k++) a = l[k] < a ? l[k] : a, b = h[k] > b ? h[k] : b;
  *lo = a, *hi = b;
}

/* Widens [*lo, *hi] by an f32 tile just stored (rows x the tile's columns inside N), as
 * qlinear.c's range pass would: a NaN is passed over (compared, it is never below or above). */
__attribute__((target("avx512f"))) static void tile_range_avx512(const float *c, int64_t ldc, int rows, int64_t cols,
                                                                 float *lo, float *hi) {
  __m512 l = _mm512_set1_ps(*lo), h = _mm512_set1_ps(*hi);
  for (int r = 0; r < rows; r++)
    for (int64_t j = 0; j < cols; j += 16) {
      const __mmask16 mask = cols - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - j)) - 1);
      /* masked-off lanes read 0, inside the range already; min(v, l) keeps l where v is NaN */
      const __m512 v = _mm512_maskz_loadu_ps(mask, c + r * ldc + j);
      l = _mm512_min_ps(v, l);
      h = _mm512_max_ps(v, h);
    }
  *lo = _mm512_reduce_min_ps(l);
  *hi = _mm512_reduce_max_ps(h);
}

static void tile_range(const damo_q8_out *o, const damo_qweight *w, int64_t ct, int64_t row0, int rows,
                       damo_simd_level level, float *lo, float *hi) {
  const int64_t width = w->layout == DAMO_QLAYOUT_VNNI ? VNR : QNR, col = ct * width;
  const int64_t cols = w->N - col < width ? w->N - col : width;
  const float *c = (const float *)o->c + row0 * o->ldc + col - o->col_origin;
  if (cols <= 0) return;
  if (level >= DAMO_SIMD_AVX512) {
    tile_range_avx512(c, o->ldc, rows, cols, lo, hi);
    return;
  }
  for (int r = 0; r < rows; r++) {
    float a, b;
    damo_range_f32(c + r * o->ldc, cols, &a, &b);
    *lo = a < *lo ? a : *lo;
    *hi = b > *hi ? b : *hi;
  }
}

/* Threads for an M-row int8 product: as damo_gemm's, counting an int8 multiply-add as a
 * third of an f32 one (VNNI's four products per lane; the peaks measured here differ 3.5x).
 * A product of a few rows (a decoding step) is bound by streaming its weights from memory,
 * not by the multiply-adds: a byte costs about 0.1 ns on one core, and a second core
 * streams in parallel. */
static int q8_threads(int64_t M, const damo_qweight *w) {
  const int compute = damo_gemm_threads((double)M * (double)w->Kp * (double)w->N, 3.0);
  const int stream = damo_threads_for_seconds((double)w->Kp * (double)w->N * 1e-10);
  return compute > stream ? compute : stream;
}

/* The AMX form of damo_gemm_q8: 16-row x 32-column tiles, column tiles outermost. */
static void gemm_q8_amx(int64_t M, const uint8_t *a, const damo_qweight *w, float x_scale, int zero_point,
                        const float *bias, const damo_q8_out *o) {
  const int64_t row_tiles = (M + 15) / 16, col_tiles = w->panels / 2, tiles = row_tiles * col_tiles;
  const int threads = tiles < 8 ? 1 : q8_threads(M, w);
  float lo = 0.0f, hi = 0.0f;
#pragma omp parallel num_threads(threads) reduction(min : lo) reduction(max : hi)
  {
    damo_amx_configure();
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
      const int64_t ct = t / row_tiles, rt = t % row_tiles;
      const int rows = (int)(M - rt * 16 < 16 ? M - rt * 16 : 16);
      float scratch[TILE_ROWS * VNR];
      const tile_target to = tile_out(o, w, ct, rt * 16, scratch);
      tile_amx(a + (size_t)(rt * 16) * (size_t)w->Kp, w, ct, x_scale, zero_point, bias, &to.out, to.row0, rows);
      finish_tile(o, w, ct, rt * 16, rows, scratch);
      if (o->range) tile_range(o, w, ct, rt * 16, rows, DAMO_SIMD_AVX512, &lo, &hi);
    }
    damo_amx_release();
  }
  if (o->range) o->range[0] = lo, o->range[1] = hi;
}

void damo_gemm_q8(int64_t M, const void *a, const damo_qweight *w, float x_scale, int zero_point, const float *bias,
                  const damo_q8_out *o) {
  if (w->layout == DAMO_QLAYOUT_VNNI && w->Kp % 64 == 0 && damo_simd_level_get() >= DAMO_SIMD_AVX512 &&
      damo_amx_int8_ready()) {
    gemm_q8_amx(M, a, w, x_scale, zero_point, bias, o);
    return;
  }
  const int vnni = w->layout == DAMO_QLAYOUT_VNNI;
  const damo_simd_level level = damo_simd_level_get();
  const int fast = vnni ? level >= DAMO_SIMD_AVX512 && damo_cpu_has_vnni() : level >= DAMO_SIMD_AVX2;
  const int mr = fast && vnni ? VMR : DAMO_QMR;
  const int64_t row_tiles = (M + mr - 1) / mr, col_tiles = w->panels / 2, tiles = row_tiles * col_tiles;
  const int threads = tiles < 8 ? 1 : q8_threads(M, w);
  const size_t row_bytes = damo_qrow_bytes(w);
  /* Row tiles outermost: a tile's activation rows stay in L1 across the column tiles, and the
   * weights (256 KB for BERT's products) stay in L2. With column tiles outermost each column
   * tile streamed every activation row from L3 again (BERT's 8 MB feed-forward input, eight
   * times a product): W5's int8 pass took 10% longer. */
  float lo = 0.0f, hi = 0.0f;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(min : lo) reduction(max : hi)
  for (int64_t t = 0; t < tiles; t++) {
    const int64_t rt = t / col_tiles, ct = t % col_tiles;
    const int rows = (int)(M - rt * mr < mr ? M - rt * mr : mr);
    const void *ap = (const char *)a + (size_t)(rt * mr) * row_bytes;
    float scratch[TILE_ROWS * VNR];
    const tile_target to = tile_out(o, w, ct, rt * mr, scratch);
    if (fast && vnni)
      tile_vnni(ap, w, ct, x_scale, zero_point, bias, &to.out, to.row0, rows);
    else if (fast)
      tile_avx2(ap, w, ct, x_scale, bias, &to.out, to.row0, rows);
    else
      tile_scalar(ap, w, ct, x_scale, zero_point, bias, &to.out, to.row0, rows);
    finish_tile(o, w, ct, rt * mr, rows, scratch);
    if (o->range) tile_range(o, w, ct, rt * mr, rows, level, &lo, &hi);
  }
  if (o->range) o->range[0] = lo, o->range[1] = hi;
}

int damo_gemm_q8_gather_available(const damo_qweight *w) {
  return w->layout == DAMO_QLAYOUT_VNNI && damo_simd_level_get() >= DAMO_SIMD_AVX512 && damo_cpu_has_vnni() &&
         !damo_amx_int8_ready();
}

int damo_gemm_q8_gather(int64_t M, const uint8_t *base, const int64_t *row_off, const int64_t *k_off,
                        const damo_qweight *w, float x_scale, int zero_point, const float *bias,
                        const damo_q8_out *o) {
  if (!damo_gemm_q8_gather_available(w)) return 0;
  const int64_t row_tiles = (M + VMR - 1) / VMR, col_tiles = w->panels / 2, tiles = row_tiles * col_tiles;
  const int threads = tiles < 8 ? 1 : q8_threads(M, w);
  float lo = 0.0f, hi = 0.0f;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(min : lo) reduction(max : hi)
  for (int64_t t = 0; t < tiles; t++) {
    const int64_t ct = t / row_tiles, rt = t % row_tiles;
    const int valid = (int)(M - rt * VMR < VMR ? M - rt * VMR : VMR);
    const uint8_t *rows[VMR];
    for (int i = 0; i < VMR; i++) rows[i] = base + row_off[rt * VMR + (i < valid ? i : valid - 1)]; /* past M: not stored */
    float scratch[TILE_ROWS * VNR];
    const tile_target to = tile_out(o, w, ct, rt * VMR, scratch);
    tile_vnni_gather(rows, k_off, w, ct, x_scale, zero_point, bias, &to.out, to.row0, valid);
    finish_tile(o, w, ct, rt * VMR, valid, scratch);
    if (o->range) tile_range(o, w, ct, rt * VMR, valid, DAMO_SIMD_AVX512, &lo, &hi);
  }
  if (o->range) o->range[0] = lo, o->range[1] = hi;
  return 1;
}
