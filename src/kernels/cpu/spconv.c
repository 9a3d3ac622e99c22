/* spconv.c - direct sparse convolution for inference: a pruned conv2d kernel in CSR (one row
 * per filter, its nonzero patch positions p = (kh KW + kw) C + c, as
 * damo_csr_from_dense_transposed makes it from the (KH KW C x F) kernel) against a
 * channels-last image, with no patches matrix.
 *
 * The image is first copied planar and zero-padded, each padded row split into its
 * stride_w phases (phase q of a row holds padded columns q, q + sw, q + 2 sw, ...), so that
 * one kernel tap (c, kh, kw) seen by consecutive output columns is a contiguous run of
 * floats: output column ow reads phase kw % sw at index ow + kw / sw. A tile of up to
 * MAX_ROWS output rows by one vector of output columns keeps its sums in registers while it
 * walks a filter's nonzeros: one broadcast weight, then a vector load and multiply-add per
 * row. The work is the nonzeros' (2 nnz OH OW N flops), against the dense convolution's
 * 2 KH KW C F OH OW N: a win once enough of the kernel is zero (damo bench sparse-conv
 * measures where). Every path sums a filter's taps in CSR order. Filters go in groups of
 * GROUP through a small buffer, transposed back into channels-last output with the bias and
 * ReLU on the way. */
#include "kernels/cpu/transpose16.h"
#include "kernels/kernels.h"

#include <immintrin.h>
#include <omp.h>
#include <string.h>

enum { LANES = 16, MAX_ROWS = 8, GROUP = 16 };

/* Where things are in the planar copy (floats), and how output rows split into tiles. */
typedef struct spconv_plan {
  int64_t OH, OW, HP, WQ; /* output size; padded height; floats in one phase of a row */
  int64_t row, plane, image;
  int64_t tile_rows, tiles_h, tiles_w;
} spconv_plan;

static int shape_ok(const damo_conv2d_shape *s) {
  return s->batch > 0 && s->height > 0 && s->width > 0 && s->channels > 0 && s->kernel_h > 0 && s->kernel_w > 0 &&
         s->filters > 0 && s->stride_h > 0 && s->stride_w > 0 && s->pad_top >= 0 && s->pad_bottom >= 0 &&
         s->pad_left >= 0 && s->pad_right >= 0 && s->height + s->pad_top + s->pad_bottom >= s->kernel_h &&
         s->width + s->pad_left + s->pad_right >= s->kernel_w;
}

static spconv_plan plan_of(const damo_conv2d_shape *s) {
  spconv_plan p;
  const int64_t WP = s->width + s->pad_left + s->pad_right, sw = s->stride_w;
  p.HP = s->height + s->pad_top + s->pad_bottom;
  p.OH = (p.HP - s->kernel_h) / s->stride_h + 1;
  p.OW = (WP - s->kernel_w) / sw + 1;
  p.tiles_w = (p.OW + LANES - 1) / LANES;
  /* every padded column, and every lane a tile loads (those past OW are computed and dropped) */
  const int64_t columns = (WP + sw - 1) / sw, lanes = p.tiles_w * LANES + (s->kernel_w - 1) / sw;
  p.WQ = columns > lanes ? columns : lanes;
  p.row = sw * p.WQ, p.plane = p.HP * p.row, p.image = s->channels * p.plane;
  p.tiles_h = (p.OH + MAX_ROWS - 1) / MAX_ROWS;
  p.tile_rows = (p.OH + p.tiles_h - 1) / p.tiles_h; /* even tiles: 14 rows are 7 + 7, not 8 + 6 */
  return p;
}

/* The planar copies, rounded to 64 bytes: the tap offsets follow them. */
static int64_t planar_bytes(const damo_conv2d_shape *s, const spconv_plan *p) {
  return (s->batch * p->image * (int64_t)sizeof(float) + 63) / 64 * 64;
}

int64_t damo_sparse_conv2d_scratch_bytes(const damo_conv2d_shape *s, const damo_csr *wt) {
  if (!s || !wt || !shape_ok(s)) return 0;
  const spconv_plan p = plan_of(s);
  return planar_bytes(s, &p) + (wt->nnz + 1) * (int64_t)sizeof(int64_t);
}

/* The planar, phase-split, zero-padded copy of image n. */
static void planar_copy(const damo_conv2d_shape *s, const spconv_plan *p, const float *x, float *dst) {
  const int64_t C = s->channels, sw = s->stride_w;
  memset(dst, 0, (size_t)p->image * sizeof(float));
  for (int64_t h = 0; h < s->height; h++)
    for (int64_t w = 0; w < s->width; w++) {
      const float *px = x + (h * s->width + w) * C;
      const int64_t col = w + s->pad_left;
      float *to = dst + (h + s->pad_top) * p->row + (col % sw) * p->WQ + col / sw;
      for (int64_t c = 0; c < C; c++) to[c * p->plane] = px[c];
    }
}

/* One tile: rows x lanes output pixels, every filter. src is the planar image at the tile's
 * first row and column, rstep the floats between its output rows; out the tile's first
 * output pixel (channels-last, OW pixels a row). */
typedef struct spconv_tile {
  const damo_csr *wt;
  const int64_t *off;
  const float *src, *bias;
  float *out;
  int64_t rstep, F, OW;
  int rows, lanes, relu;
} spconv_tile;

/* Group sums buf[j][r][lane] for filters f0 + j out to channels-last pixels, with the bias
 * and ReLU. */
static void write_group(const spconv_tile *t, int64_t f0, int nf, const float *buf) {
  for (int r = 0; r < t->rows; r++)
    for (int i = 0; i < t->lanes; i++) {
      float *out = t->out + (r * t->OW + i) * t->F + f0;
      for (int j = 0; j < nf; j++) {
        const float v = buf[(j * MAX_ROWS + r) * LANES + i] + (t->bias ? t->bias[f0 + j] : 0.0f);
        out[j] = t->relu && !(v > 0.0f) ? 0.0f : v;
      }
    }
}

static void tile_scalar(const spconv_tile *t) {
  float buf[GROUP * MAX_ROWS * LANES];
  for (int64_t f0 = 0; f0 < t->F; f0 += GROUP) {
    const int nf = (int)(t->F - f0 < GROUP ? t->F - f0 : GROUP);
    for (int j = 0; j < nf; j++) {
      float *acc = buf + j * MAX_ROWS * LANES;
      memset(acc, 0, sizeof(float) * MAX_ROWS * LANES);
      for (int64_t e = t->wt->row_start[f0 + j]; e < t->wt->row_start[f0 + j + 1]; e++) {
        const float v = t->wt->val[e];
        for (int r = 0; r < t->rows; r++) {
          const float *in = t->src + t->off[e] + r * t->rstep;
          for (int i = 0; i < LANES; i++) acc[r * LANES + i] += v * in[i];
        }
      }
    }
    write_group(t, f0, nf, buf);
  }
}

/* AVX2: a row's 16 lanes in two registers, up to 4 rows at a time (8 sums, the weight and
 * the loads in 16 registers). */
static inline __attribute__((always_inline, target("avx2,fma"))) void rows_avx2(const spconv_tile *t, int64_t f,
                                                                                  int r0, const int ROWS, float *acc) {
  __m256 lo[4], hi[4];
  for (int r = 0; r < ROWS; r++) lo[r] = hi[r] = _mm256_setzero_ps();
  const float *src = t->src + r0 * t->rstep;
  for (int64_t e = t->wt->row_start[f]; e < t->wt->row_start[f + 1]; e++) {
    const __m256 v = _mm256_set1_ps(t->wt->val[e]);
    const float *in = src + t->off[e];
    for (int r = 0; r < ROWS; r++) {
      lo[r] = _mm256_fmadd_ps(v, _mm256_loadu_ps(in + r * t->rstep), lo[r]);
      hi[r] = _mm256_fmadd_ps(v, _mm256_loadu_ps(in + r * t->rstep + 8), hi[r]);
    }
  }
  for (int r = 0; r < ROWS; r++) {
    _mm256_storeu_ps(acc + (r0 + r) * LANES, lo[r]);
    _mm256_storeu_ps(acc + (r0 + r) * LANES + 8, hi[r]);
  }
}

__attribute__((target("avx2,fma"))) static void tile_avx2(const spconv_tile *t) {
  float buf[GROUP * MAX_ROWS * LANES];
  for (int64_t f0 = 0; f0 < t->F; f0 += GROUP) {
    const int nf = (int)(t->F - f0 < GROUP ? t->F - f0 : GROUP);
    for (int j = 0; j < nf; j++)
      for (int r0 = 0; r0 < t->rows; r0 += 4) {
        float *acc = buf + j * MAX_ROWS * LANES;
        switch (t->rows - r0) {
        case 1: rows_avx2(t, f0 + j, r0, 1, acc); break;
        case 2: rows_avx2(t, f0 + j, r0, 2, acc); break;
        case 3: rows_avx2(t, f0 + j, r0, 3, acc); break;
        default: rows_avx2(t, f0 + j, r0, 4, acc); break;
        }
      }
    write_group(t, f0, nf, buf);
  }
}

/* AVX-512: a row's 16 lanes in one register, ROWS rows (inlined once per count). The group's
 * sums of one row, 16 filters by 16 pixels, are transposed in registers into 16 pixels' runs
 * of filters and stored masked (the group's filters, the tile's pixels). */
static inline __attribute__((always_inline, target("avx512f"))) void tile_rows_avx512(const spconv_tile *t,
                                                                                        const int ROWS) {
  float buf[GROUP * MAX_ROWS * LANES] __attribute__((aligned(64)));
  for (int64_t f0 = 0; f0 < t->F; f0 += GROUP) {
    const int nf = (int)(t->F - f0 < GROUP ? t->F - f0 : GROUP);
    const float *row[MAX_ROWS]; /* each row's own base: no chain of address adds in the loop */
    for (int r = 0; r < ROWS; r++) {
      row[r] = t->src + r * t->rstep;
      __asm__("" : "+r"(row[r])); /* or GCC rebuilds the chain from their equal spacing */
    }
    for (int j = 0; j < GROUP; j++) {
      __m512 acc[MAX_ROWS];
      for (int r = 0; r < ROWS; r++) acc[r] = _mm512_setzero_ps();
      for (int64_t e = j < nf ? t->wt->row_start[f0 + j] : 0, end = j < nf ? t->wt->row_start[f0 + j + 1] : 0; e < end;
           e++) {
        const __m512 v = _mm512_set1_ps(t->wt->val[e]);
        const int64_t o = t->off[e];
        for (int r = 0; r < ROWS; r++) acc[r] = _mm512_fmadd_ps(v, _mm512_loadu_ps(row[r] + o), acc[r]);
      }
      for (int r = 0; r < ROWS; r++) _mm512_store_ps(buf + (j * MAX_ROWS + r) * LANES, acc[r]);
    }
    const __mmask16 filters = (__mmask16)((1u << nf) - 1);
    const __m512 bias = t->bias ? _mm512_maskz_loadu_ps(filters, t->bias + f0) : _mm512_setzero_ps();
    for (int r = 0; r < ROWS; r++) {
      __m512 v[16];
      for (int j = 0; j < 16; j++) v[j] = _mm512_load_ps(buf + (j * MAX_ROWS + r) * LANES);
      damo_transpose_16x16(v);
      float *out = t->out + r * t->OW * t->F + f0;
      for (int i = 0; i < t->lanes; i++) {
        __m512 y = _mm512_add_ps(v[i], bias);
        if (t->relu) y = _mm512_max_ps(y, _mm512_setzero_ps()); /* NaN -> 0, as the scalar rule */
        _mm512_mask_storeu_ps(out + i * t->F, filters, y);
      }
    }
  }
}

__attribute__((target("avx512f"))) static void tile_avx512(const spconv_tile *t) {
  switch (t->rows) {
#define ROWS_CASE(R)                                                                                                 \
  case R:                                                                                                            \
    tile_rows_avx512(t, R);                                                                                          \
    break;
    ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4) ROWS_CASE(5) ROWS_CASE(6) ROWS_CASE(7) ROWS_CASE(8)
#undef ROWS_CASE
  }
}

damo_status damo_sparse_conv2d(const damo_conv2d_shape *s, const float *x, const damo_csr *wt, const float *bias,
                               int relu, void *scratch, float *y) {
  if (!s || !x || !wt || !scratch || !y || !shape_ok(s))
    return damo_error(DAMO_ERR_INVALID_ARG, "sparse_conv2d: missing arrays or an impossible geometry (sizes and strides "
                      "must be positive, paddings >= 0, the kernel no larger than the padded image)");
  if (wt->cols != s->kernel_h * s->kernel_w * s->channels || wt->rows != s->filters)
    return damo_error(DAMO_ERR_INVALID_ARG, "sparse_conv2d: the sparse kernel is %lld x %lld, the geometry needs %lld "
                      "filters of %lld x %lld x %lld taps", (long long)wt->rows, (long long)wt->cols,
                      (long long)s->filters, (long long)s->kernel_h, (long long)s->kernel_w, (long long)s->channels);
  const spconv_plan p = plan_of(s);
  const int64_t N = s->batch, C = s->channels, F = s->filters, KW = s->kernel_w, sw = s->stride_w;
  float *planar = scratch;
  int64_t *off = (int64_t *)((char *)scratch + planar_bytes(s, &p));
  for (int64_t e = 0; e < wt->nnz; e++) {
    const int64_t t = wt->col[e], c = t % C, kw = (t / C) % KW, kh = t / (C * KW);
    off[e] = c * p.plane + kh * p.row + (kw % sw) * p.WQ + kw / sw;
  }
  const damo_simd_level level = damo_simd_level_get();
  void (*tile)(const spconv_tile *) =
      level == DAMO_SIMD_AVX512 ? tile_avx512 : level == DAMO_SIMD_AVX2 ? tile_avx2 : tile_scalar;
  const int64_t tiles = N * p.tiles_h * p.tiles_w, rstep = s->stride_h * p.row;
  /* rough single-thread seconds: the multiply-adds, the output written, the planar copies */
  const double work = 0.5e-9 * (double)(wt->nnz * p.OH * p.tiles_w * N) + 0.25e-9 * (double)(N * p.OH * p.OW * F) +
                      0.25e-9 * (double)(N * p.image);
  const int threads = damo_threads_for_seconds(work);
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) planar_copy(s, &p, x + n * s->height * s->width * C, planar + n * p.image);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < tiles; i++) {
      const int64_t tw = i % p.tiles_w, th = i / p.tiles_w % p.tiles_h, n = i / (p.tiles_w * p.tiles_h);
      const int64_t oh0 = th * p.tile_rows, ow0 = tw * LANES;
      const spconv_tile t = {wt, off, planar + n * p.image + oh0 * rstep + ow0, bias,
                             y + ((n * p.OH + oh0) * p.OW + ow0) * F, rstep, F, p.OW,
                             (int)(p.OH - oh0 < p.tile_rows ? p.OH - oh0 : p.tile_rows),
                             (int)(p.OW - ow0 < LANES ? p.OW - ow0 : LANES), relu};
      tile(&t);
    }
  }
  return DAMO_OK;
}
