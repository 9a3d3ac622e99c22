/* conv.c - 2-D convolution, channels-last: x (N, H, W, C), kernel (KH, KW, C, F) as Keras
 * stores it, output (N, OH, OW, F), with strides and explicit (possibly asymmetric)
 * padding.
 *
 * The output is the patches matrix (pixels, KH*KW*C) times the kernel seen as (KH*KW*C, F),
 * already in NHWC order. Where the CPU path has the kernel (damo_gemm_gather: AVX2) the
 * patches are never written: the GEMM reads them from a zero-padded copy of the image (no
 * copy without padding) through two offset tables, pixel -> window corner and kernel
 * position -> offset in the window; the kernel's gradient patches^T dY reads them the same
 * way with the tables swapped. Otherwise (and always for dX) they are built per block of
 * output pixels by im2col, blocks of at most ~4 MB: dPatches = dY W^T is scattered back
 * (col2im) into dX. The scatter is threaded over input rows, each dx element summed by
 * one thread in a fixed order, so results do not depend on the thread count (no atomics).
 * A 1x1 stride-1 unpadded convolution skips im2col.
 * An optional bias and activation are fused as the epilogue of each block (as in dense.c),
 * tested against conv -> add -> activation. */
#include "ops/ops.h"
#include "kernels/cpu/vmath.h"

#include <omp.h>

enum { CV_SH, CV_SW, CV_PT, CV_PL, CV_PB, CV_PR, CV_ACT };

typedef struct conv_geom {
  int64_t N, H, W, C, KH, KW, F, OH, OW, K; /* K = KH * KW * C */
  int sh, sw, pt, pl;
} conv_geom;

static conv_geom geom_of(const damo_node *n) {
  const damo_node *x = n->in[0], *k = n->in[1];
  conv_geom g;
  g.N = x->shape[0], g.H = x->shape[1], g.W = x->shape[2], g.C = x->shape[3];
  g.KH = k->shape[0], g.KW = k->shape[1], g.F = k->shape[3];
  g.sh = n->iparam[CV_SH], g.sw = n->iparam[CV_SW], g.pt = n->iparam[CV_PT], g.pl = n->iparam[CV_PL];
  g.OH = (g.H + g.pt + n->iparam[CV_PB] - g.KH) / g.sh + 1;
  g.OW = (g.W + g.pl + n->iparam[CV_PR] - g.KW) / g.sw + 1;
  g.K = g.KH * g.KW * g.C;
  return g;
}

/* The padded image and the offset tables of the gather path sit at the start of aux, the
 * im2col block after them. A padded copy larger than this is not made (im2col instead). */
#define GATHER_MAX_PAD_BYTES ((int64_t)256 << 20)

typedef struct conv_layout {
  int64_t HP, WP;             /* padded height and width */
  int64_t pad_floats;         /* 0 when the image is read as it is (no padding) */
  size_t gather_bytes;        /* padded copy + both tables; 0: no gather path */
} conv_layout;

static conv_layout layout_of(const damo_node *n, const conv_geom *g) {
  conv_layout l;
  l.HP = g->H + g->pt + n->iparam[CV_PB], l.WP = g->W + g->pl + n->iparam[CV_PR];
  const int padded = l.HP != g->H || l.WP != g->W;
  /* rounded up to an even count: the int64 tables after the copy stay 8-byte aligned */
  l.pad_floats = padded ? (g->N * l.HP * l.WP * g->C + 1) / 2 * 2 : 0;
  l.gather_bytes = (size_t)(l.pad_floats * (int64_t)sizeof(float)) + (size_t)(g->N * g->OH * g->OW + g->K) * sizeof(int64_t);
  if (l.pad_floats * (int64_t)sizeof(float) > GATHER_MAX_PAD_BYTES) l.gather_bytes = 0, l.pad_floats = 0;
  l.gather_bytes = (l.gather_bytes + 63) / 64 * 64;
  return l;
}

/* Stride 1 with each padding at most the kernel's extent - 1: dX is itself a convolution, of
 * dY padded by (KH-1-pt, KW-1-pl, KH-1-pb, KW-1-pr) with the kernel turned half a turn and
 * its channels swapped, and goes through the gather path too (no dPatches, no col2im). Its
 * buffers (padded dY, tables, turned kernel) share aux's im2col region. */
typedef struct dx_layout {
  int64_t HP, WP, pad_floats;
  int64_t tables_at; /* floats before the int64 tables: the padded dY and the turned kernel, rounded up to even */
  size_t bytes;      /* 0: not this way */
} dx_layout;

static dx_layout dx_layout_of(const damo_node *n, const conv_geom *g) {
  dx_layout l = {g->H + g->KH - 1, g->W + g->KW - 1, 0, 0, 0};
  if (g->sh != 1 || g->sw != 1 || g->pt > g->KH - 1 || n->iparam[CV_PB] > g->KH - 1 || g->pl > g->KW - 1 ||
      n->iparam[CV_PR] > g->KW - 1)
    return l;
  l.pad_floats = g->N * l.HP * l.WP * g->F;
  if (l.pad_floats * (int64_t)sizeof(float) > GATHER_MAX_PAD_BYTES) return l;
  const int64_t taps = g->KH * g->KW * g->F;
  l.tables_at = (l.pad_floats + taps * g->C + 1) / 2 * 2;
  l.bytes = (size_t)l.tables_at * sizeof(float) + (size_t)(g->N * g->H * g->W + taps) * sizeof(int64_t);
  return l;
}

static int is_pointwise(const conv_geom *g) {
  return g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 && g->OH == g->H && g->OW == g->W;
}

/* Output pixels per block: patches of at most ~4 MB, at least one image row. */
static int64_t block_pixels(const conv_geom *g) {
  int64_t rows = (4 << 20) / (int64_t)sizeof(float) / (g->K > 0 ? g->K : 1);
  if (rows < g->OW) rows = g->OW;
  int64_t total = g->N * g->OH * g->OW;
  return rows < total ? rows : total;
}

static damo_status conv_infer(damo_node *n) {
  const damo_node *x = n->in[0], *k = n->in[1];
  if (x->dtype != DAMO_F32 || x->ndim != 4) return damo_shape_error(n, "input must be f32 (batch, height, width, channels)", x, k);
  if (k->dtype != DAMO_F32 || k->ndim != 4) return damo_shape_error(n, "kernel must be f32 (kh, kw, in_channels, filters)", x, k);
  if (k->shape[2] != x->shape[3]) return damo_shape_error(n, "kernel in_channels differ from the input's channels", x, k);
  for (int i = 0; i < 6; i++)
    if (n->iparam[i] < (i < 2 ? 1 : 0)) return damo_shape_error(n, "strides must be >= 1 and paddings >= 0", x, k);
  const damo_node *b = n->n_in > 2 ? n->in[2] : NULL;
  if (b && (b->dtype != DAMO_F32 || b->ndim != 1 || b->shape[0] != k->shape[3]))
    return damo_shape_error(n, "bias must be f32 (filters,)", k, b);
  int act = n->iparam[CV_ACT];
  if (act != DAMO_ACT_NONE && act != DAMO_ACT_RELU && act != DAMO_ACT_SIGMOID && act != DAMO_ACT_TANH)
    return damo_error(DAMO_ERR_INVALID_ARG, "conv2d: activation %d cannot be fused (linear, relu, sigmoid or tanh)", act);
  if (x->shape[1] + n->iparam[CV_PT] + n->iparam[CV_PB] < k->shape[0] ||
      x->shape[2] + n->iparam[CV_PL] + n->iparam[CV_PR] < k->shape[1])
    return damo_shape_error(n, "the kernel is larger than the padded input", x, k);
  conv_geom g = geom_of(n);
  n->ndim = 4;
  n->shape[0] = g.N, n->shape[1] = g.OH, n->shape[2] = g.OW, n->shape[3] = g.F;
  n->dtype = DAMO_F32;
  const size_t block_bytes = (size_t)(block_pixels(&g) * g.K) * sizeof(float), dx_bytes = dx_layout_of(n, &g).bytes;
  n->aux_bytes = is_pointwise(&g) ? 0 : layout_of(n, &g).gather_bytes + (block_bytes > dx_bytes ? block_bytes : dx_bytes);
  return DAMO_OK;
}

/* Columns [kw0, kw1) of the kernel that land inside the image for an output column whose
 * window starts at input column iw0 (negative inside the left padding). */
static void kernel_cols_inside(const conv_geom *g, int64_t iw0, int64_t *kw0, int64_t *kw1) {
  int64_t lo = iw0 < 0 ? -iw0 : 0, hi = g->W - iw0 < g->KW ? g->W - iw0 : g->KW;
  *kw0 = lo;
  *kw1 = hi > lo ? hi : lo;
}

/* Patches of output pixels [p0, p0 + count) into cols (count, K), K ordered (kh, kw, c).
 * For one pixel and one kernel row the KW * C values are one contiguous run of x (an image
 * row is (W, C)), so each is a single copy clipped at the image edges: with C = 1 (grey
 * images) copying per kernel column cost more than the GEMM. */
static void im2col(const conv_geom *g, const float *x, int64_t p0, int64_t count, float *cols) {
  const int64_t run = g->KW * g->C;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count * g->K, DAMO_NS_MAP))
  for (int64_t i = 0; i < count; i++) {
    int64_t p = p0 + i, ow = p % g->OW, oh = (p / g->OW) % g->OH, nn = p / (g->OW * g->OH);
    int64_t iw0 = ow * g->sw - g->pl, kw0, kw1;
    kernel_cols_inside(g, iw0, &kw0, &kw1);
    const int64_t j0 = kw0 * g->C, j1 = kw1 * g->C;
    float *row = cols + i * g->K; /* (KH, KW, C) */
    for (int64_t kh = 0; kh < g->KH; kh++) {
      int64_t ih = oh * g->sh - g->pt + kh;
      float *dst = row + kh * run;
      if (ih < 0 || ih >= g->H) {
        for (int64_t j = 0; j < run; j++) dst[j] = 0.0f;
        continue;
      }
      for (int64_t j = 0; j < j0; j++) dst[j] = 0.0f;
      if (j1 > j0) {
        const float *src = x + ((nn * g->H + ih) * g->W + iw0 + kw0) * g->C; /* first pixel inside */
        for (int64_t j = 0; j < j1 - j0; j++) dst[j0 + j] = src[j];
      }
      for (int64_t j = j1; j < run; j++) dst[j] = 0.0f;
    }
  }
}

/* Adds cols (count, K) of output pixels [p0, p0 + count) back into dx (N, H, W, C) where
 * im2col read them. Threads take whole input rows (image, ih): every dx element is written
 * by one thread, and its terms are added in one order (kernel row, then output column) for
 * any thread count, so the result is deterministic without atomics. */
static void col2im(const conv_geom *g, const float *cols, int64_t p0, int64_t count, float *dx) {
  const int64_t run = g->KW * g->C, per_image = g->OH * g->OW;
  const int64_t n_first = p0 / per_image, n_last = (p0 + count - 1) / per_image;
  const int64_t units = (n_last - n_first + 1) * g->H;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count * g->K, DAMO_NS_MAP))
  for (int64_t u = 0; u < units; u++) {
    int64_t nn = n_first + u / g->H, ih = u % g->H;
    float *dx_row = dx + (nn * g->H + ih) * g->W * g->C; /* (W, C) */
    for (int64_t kh = 0; kh < g->KH; kh++) {
      int64_t t = ih + g->pt - kh; /* oh * sh for the output row whose kernel row kh reads ih */
      if (t < 0 || t % g->sh) continue;
      int64_t oh = t / g->sh;
      if (oh >= g->OH) continue;
      int64_t first = (nn * g->OH + oh) * g->OW; /* pixel index of (nn, oh, 0) */
      int64_t ow0 = p0 > first ? p0 - first : 0, ow1 = p0 + count - first < g->OW ? p0 + count - first : g->OW;
      for (int64_t ow = ow0; ow < ow1; ow++) {
        int64_t iw0 = ow * g->sw - g->pl, kw0, kw1;
        kernel_cols_inside(g, iw0, &kw0, &kw1);
        if (kw1 == kw0) continue; /* a window wholly in the padding */
        const float *src = cols + (first + ow - p0) * g->K + kh * run + kw0 * g->C;
        float *dst = dx_row + (iw0 + kw0) * g->C;
        for (int64_t j = 0; j < (kw1 - kw0) * g->C; j++) dst[j] += src[j];
      }
    }
  }
}

/* Bias and activation on a block of output pixels while it is in cache: the epilogue. */
DAMO_MULTIVERSION static void epilogue(float *y, const float *bias, int64_t rows, int64_t F, int act) {
  for (int64_t r = 0; r < rows; r++) {
    float *row = y + r * F;
    if (bias)
      for (int64_t f = 0; f < F; f++) row[f] += bias[f];
    if (act == DAMO_ACT_RELU)
      for (int64_t f = 0; f < F; f++) row[f] = row[f] > 0 ? row[f] : 0.0f;
    else if (act == DAMO_ACT_SIGMOID)
      for (int64_t f = 0; f < F; f++) row[f] = damo_sigmoidf(row[f]);
    else if (act == DAMO_ACT_TANH)
      for (int64_t f = 0; f < F; f++) row[f] = damo_tanhf(row[f]);
  }
}

/* dst (n, hp, wp, c): src (n, h, w, c) placed at row top, column left, zeros around it. */
static void pad_images(const float *src, int64_t n, int64_t h, int64_t w, int64_t c, int64_t top, int64_t left,
                       int64_t hp, int64_t wp, float *dst) {
  const int64_t row = wp * c, width = w * c, before = left * c;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(n * hp * row, DAMO_NS_MAP))
  for (int64_t r = 0; r < n * hp; r++) {
    const int64_t nn = r / hp, ih = r % hp - top;
    float *out = dst + r * row;
    if (ih < 0 || ih >= h) {
      memset(out, 0, (size_t)row * sizeof(float));
      continue;
    }
    memset(out, 0, (size_t)before * sizeof(float));
    memcpy(out + before, src + (nn * h + ih) * width, (size_t)width * sizeof(float));
    memset(out + before + width, 0, (size_t)(row - before - width) * sizeof(float));
  }
}

/* The gather path's view of the patches: the image (a zero-padded copy when the convolution
 * pads), rows = output pixels (offset of each window's corner), k = kernel positions (offset
 * inside a window). Fills aux's tables; NULL base when this convolution has no gather path. */
typedef struct patches_view {
  const float *base;
  int64_t *pixel_off, *kernel_off;
} patches_view;

static patches_view patches_view_build(const damo_node *n, const conv_geom *g, const float *x) {
  const conv_layout l = layout_of(n, g);
  patches_view v = {NULL, NULL, NULL};
  if (!l.gather_bytes || !damo_gemm_gather_available()) return v;
  float *pad = n->aux;
  v.pixel_off = (int64_t *)((char *)n->aux + l.pad_floats * (int64_t)sizeof(float));
  v.kernel_off = v.pixel_off + g->N * g->OH * g->OW;
  v.base = l.pad_floats ? pad : x;
  if (l.pad_floats) pad_images(x, g->N, g->H, g->W, g->C, g->pt, g->pl, l.HP, l.WP, pad);
  for (int64_t q = 0; q < g->N * g->OH * g->OW; q++) {
    const int64_t ow = q % g->OW, oh = (q / g->OW) % g->OH, nn = q / (g->OW * g->OH);
    v.pixel_off[q] = ((nn * l.HP + oh * g->sh) * l.WP + ow * g->sw) * g->C;
  }
  for (int64_t p = 0; p < g->K; p++) {
    const int64_t c = p % g->C, kw = (p / g->C) % g->KW, kh = p / (g->C * g->KW);
    v.kernel_off[p] = (kh * l.WP + kw) * g->C + c;
  }
  return v;
}

/* Where the im2col blocks go in aux: after the gather path's part. */
static float *block_buffer(const damo_node *n, const conv_geom *g) {
  return (float *)((char *)n->aux + layout_of(n, g).gather_bytes);
}

static damo_status conv_forward(damo_graph *gr, damo_node *n) {
  (void)gr;
  conv_geom g = geom_of(n);
  const float *x = damo_f32(n->in[0]), *k = damo_f32(n->in[1]), *bias = n->n_in > 2 ? damo_f32(n->in[2]) : NULL;
  float *y = damo_f32(n);
  int64_t total = g.N * g.OH * g.OW;
  int act = n->iparam[CV_ACT];
  if (is_pointwise(&g)) {
    damo_gemm(0, 0, total, g.F, g.K, 1.0f, x, g.K, k, g.F, 0.0f, y, g.F);
    epilogue(y, bias, total, g.F, act);
    return DAMO_OK;
  }
  const patches_view v = patches_view_build(n, &g, x);
  const damo_gemm_gather_a patches = {v.base, v.pixel_off, 0, v.kernel_off};
  if (v.base && damo_gemm_gather(&patches, 0, total, g.F, g.K, 1.0f, k, g.F, 0.0f, y, g.F)) {
    epilogue(y, bias, total, g.F, act);
    return DAMO_OK;
  }
  float *cols = block_buffer(n, &g);
  int64_t step = block_pixels(&g);
  for (int64_t p0 = 0; p0 < total; p0 += step) {
    int64_t count = total - p0 < step ? total - p0 : step;
    im2col(&g, x, p0, count, cols);
    damo_gemm(0, 0, count, g.F, g.K, 1.0f, cols, g.K, k, g.F, 0.0f, y + p0 * g.F, g.F);
    epilogue(y + p0 * g.F, bias, count, g.F, act);
  }
  return DAMO_OK;
}

/* dx += the convolution of padded dY with the turned kernel (see dx_layout); 0 when this
 * convolution or CPU path cannot. */
static int dx_by_gather(const damo_node *n, const conv_geom *g, const float *dy, const float *k, float *dx) {
  const dx_layout l = dx_layout_of(n, g);
  if (!l.bytes || !damo_gemm_gather_available()) return 0;
  const int64_t taps = g->KH * g->KW * g->F, pixels = g->N * g->H * g->W;
  float *dy_pad = block_buffer(n, g), *turned = dy_pad + l.pad_floats;
  int64_t *pixel_off = (int64_t *)(dy_pad + l.tables_at), *tap_off = pixel_off + pixels;
  pad_images(dy, g->N, g->OH, g->OW, g->F, g->KH - 1 - g->pt, g->KW - 1 - g->pl, l.HP, l.WP, dy_pad);
  for (int64_t q = 0; q < pixels; q++) {
    const int64_t iw = q % g->W, ih = (q / g->W) % g->H, nn = q / (g->W * g->H);
    pixel_off[q] = ((nn * l.HP + ih) * l.WP + iw) * g->F;
  }
  for (int64_t p = 0; p < taps; p++) { /* tap (kh', kw', f) reads kernel (KH-1-kh', KW-1-kw', c, f) */
    const int64_t f = p % g->F, kw = (p / g->F) % g->KW, kh = p / (g->F * g->KW);
    tap_off[p] = (kh * l.WP + kw) * g->F + f;
    const float *src = k + ((g->KH - 1 - kh) * g->KW + (g->KW - 1 - kw)) * g->C * g->F + f;
    for (int64_t c = 0; c < g->C; c++) turned[p * g->C + c] = src[c * g->F];
  }
  const damo_gemm_gather_a a = {dy_pad, pixel_off, 0, tap_off};
  return damo_gemm_gather(&a, 0, pixels, g->C, taps, 1.0f, turned, g->C, 1.0f, dx, g->C);
}

/* dy * act'(y) in place: the output gradient becomes the pre-activation gradient (nothing
 * reads this node's gradient after its own backward). */
DAMO_MULTIVERSION static void activation_grad(float *dy, const float *y, int64_t count, int act) {
  if (act == DAMO_ACT_RELU)
    for (int64_t i = 0; i < count; i++) dy[i] = y[i] > 0 ? dy[i] : 0.0f;
  else if (act == DAMO_ACT_SIGMOID)
    for (int64_t i = 0; i < count; i++) dy[i] *= y[i] * (1.0f - y[i]);
  else if (act == DAMO_ACT_TANH)
    for (int64_t i = 0; i < count; i++) dy[i] *= 1.0f - y[i] * y[i];
}

/* DP-SGD's norm pass: each image's kernel gradient patches_i^T dY_i (K x F) made and measured
 * (for a convolution this costs what the batch's kernel gradient does, where the Gram form
 * would cost pixels^2), and its bias gradient, the column sums of dY_i. Threads take whole
 * images, each with its own patches and kernel buffers (the GEMMs inside run on one thread). */
static void conv_example_norms(damo_graph *gr, const damo_node *n, const conv_geom *g, const float *x, const float *dy) {
  const damo_node *kn = n->in[1], *bn = n->n_in > 2 ? n->in[2] : NULL;
  const int64_t P = g->OH * g->OW, step = block_pixels(g) < P ? block_pixels(g) : P;
  const int threads = damo_threads(), pointwise = is_pointwise(g);
  const int64_t per = (g->K * g->F + g->F + (pointwise ? 0 : step * g->K) + 15) / 16 * 16;
  float *buf = damo_graph_scratch(gr, (size_t)(per * threads) * sizeof(float));
  if (!buf) return;
  const int want_k = damo_wants_weight_norms(gr, kn), want_b = damo_wants_weight_norms(gr, bn);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t i = 0; i < g->N; i++) {
    float *dk = buf + per * omp_get_thread_num(), *bsum = dk + g->K * g->F, *cols = bsum + g->F;
    const float *dyi = dy + i * P * g->F;
    if (want_b) {
      memset(bsum, 0, (size_t)g->F * sizeof *bsum);
      for (int64_t p = 0; p < P; p++)
        for (int64_t f = 0; f < g->F; f++) bsum[f] += dyi[p * g->F + f];
      damo_example_norm_add(gr, bn, i, damo_sum_squares(bsum, g->F));
    }
    if (!want_k) continue;
    if (pointwise) {
      damo_gemm(1, 0, g->K, g->F, P, 1.0f, x + i * P * g->K, g->K, dyi, g->F, 0.0f, dk, g->F);
    } else {
      for (int64_t p0 = 0; p0 < P; p0 += step) {
        const int64_t count = P - p0 < step ? P - p0 : step;
        im2col(g, x, i * P + p0, count, cols);
        damo_gemm(1, 0, g->K, g->F, count, 1.0f, cols, g->K, dyi + p0 * g->F, g->F, p0 ? 1.0f : 0.0f, dk, g->F);
      }
    }
    damo_example_norm_add(gr, kn, i, damo_sum_squares(dk, g->K * g->F));
  }
}

static void conv_backward(damo_graph *gr, damo_node *n) {
  conv_geom g = geom_of(n);
  damo_node *xn = n->in[0], *kn = n->in[1];
  const float *x = damo_f32(xn), *k = damo_f32(kn), *dy = n->grad;
  int64_t total = g.N * g.OH * g.OW;
  if (n->iparam[CV_ACT] != DAMO_ACT_NONE) activation_grad(n->grad, damo_f32(n), total * g.F, n->iparam[CV_ACT]);
  damo_node *bn = n->n_in > 2 ? n->in[2] : NULL;
  if (gr->norm_pass) conv_example_norms(gr, n, &g, x, dy);
  if (damo_wants_weight_grad(gr, bn)) { /* column sums in row order: the same for any thread count */
    float *db = damo_node_grad_acc(bn);
    for (int64_t r = 0; r < total; r++)
      for (int64_t f = 0; f < g.F; f++) db[f] += dy[r * g.F + f];
  }
  float kbeta = 1.0f, *dk = damo_wants_weight_grad(gr, kn) ? damo_node_grad_out(kn, &kbeta) : NULL;
  float *dx = xn->in_backward ? damo_node_grad_acc(xn) : NULL;
  if (is_pointwise(&g)) {
    if (dk) damo_gemm(1, 0, g.K, g.F, total, 1.0f, x, g.K, dy, g.F, kbeta, dk, g.F);
    if (dx) damo_gemm(0, 1, total, g.K, g.F, 1.0f, dy, g.F, k, g.F, 1.0f, dx, g.K);
    return;
  }
  /* The kernel's gradient: patches^T dY, through the tables forward left in aux (the
   * padded image included), kernel positions as rows and pixels as the sum. */
  if (dk && damo_gemm_gather_available()) {
    const conv_layout l = layout_of(n, &g);
    const int64_t *pixel_off = (const int64_t *)((const char *)n->aux + l.pad_floats * (int64_t)sizeof(float));
    const damo_gemm_gather_a patches_t = {l.pad_floats ? (const float *)n->aux : x, pixel_off + total, 0, pixel_off};
    if (l.gather_bytes && damo_gemm_gather(&patches_t, 0, g.K, g.F, total, 1.0f, dy, g.F, kbeta, dk, g.F)) dk = NULL;
  }
  if (dx && dx_by_gather(n, &g, dy, k, dx)) dx = NULL;
  if (!dk && !dx) return;
  float *cols = block_buffer(n, &g);
  int64_t step = block_pixels(&g);
  for (int64_t p0 = 0; p0 < total; p0 += step) {
    int64_t count = total - p0 < step ? total - p0 : step;
    const float *dyb = dy + p0 * g.F;
    if (dk) {
      im2col(&g, x, p0, count, cols);
      damo_gemm(1, 0, g.K, g.F, count, 1.0f, cols, g.K, dyb, g.F, kbeta, dk, g.F);
      kbeta = 1.0f;
    }
    if (dx) {
      damo_gemm(0, 1, count, g.K, g.F, 1.0f, dyb, g.F, k, g.F, 0.0f, cols, g.K);
      col2im(&g, cols, p0, count, dx);
    }
  }
}

/* Backward reads x (to rebuild patches), the kernel (a param) and, for a fused activation,
 * its own output. */
const damo_op_def damo_op_def_conv2d = {"conv2d", 3, conv_infer, conv_forward, conv_backward,
                                        DAMO_OPF_BWD_INPUTS | DAMO_OPF_BWD_OUTPUT | DAMO_OPF_EXAMPLE_NORMS};

damo_node *damo_conv2d_ex(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *bias, damo_activation act,
                          int stride_h, int stride_w, int pad_top, int pad_left, int pad_bottom, int pad_right) {
  damo_node *in[3] = {x, kernel, bias};
  int p[7] = {stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, (int)act};
  return damo_graph_add_node(g, DAMO_OP_CONV2D, bias ? 3 : 2, in, p, 7, NULL, 0);
}

damo_node *damo_conv2d(damo_graph *g, damo_node *x, damo_node *kernel, int stride_h, int stride_w, int pad_top,
                       int pad_left, int pad_bottom, int pad_right) {
  return damo_conv2d_ex(g, x, kernel, NULL, DAMO_ACT_NONE, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right);
}

void damo_conv2d_same_padding(int in, int k, int stride, int *pad_before, int *pad_after) {
  int out = (in + stride - 1) / stride;
  int total = (out - 1) * stride + k - in;
  if (total < 0) total = 0;
  *pad_before = total / 2;
  *pad_after = total - total / 2; /* the odd pixel goes after, as TensorFlow does */
}
