/* pool.c - max and average pooling over (N, H, W, C) windows with strides and padding, and
 * global average pooling (N, H, W, C) -> (N, C).
 *
 * Padding never takes part: a max is over the window's real pixels, an average divides by
 * their count (Keras' behaviour, torch's count_include_pad=False). Max pooling keeps the
 * winning input index per output (the first on ties, as torch; a NaN in a window wins and
 * propagates, as torch) in aux, so backward is a scatter. Work is split by image, which
 * never share input pixels, so the scatter needs no atomics and the result is the same for
 * any thread count. Max pooling also takes uint8 (an int8 chain's activations between layers,
 * qlinear.c): forward only, the same maxima, as quantisation is monotone. */
#include "ops/ops.h"

enum { PL_KH, PL_KW, PL_SH, PL_SW, PL_PT, PL_PL, PL_PB, PL_PR };

typedef struct pool_geom {
  int64_t N, H, W, C, OH, OW;
  int kh, kw, sh, sw, pt, pl;
} pool_geom;

static pool_geom geom_of(const damo_node *n) {
  const damo_node *x = n->in[0];
  pool_geom g = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], 0, 0, n->iparam[PL_KH], n->iparam[PL_KW],
                 n->iparam[PL_SH], n->iparam[PL_SW], n->iparam[PL_PT], n->iparam[PL_PL]};
  g.OH = (g.H + g.pt + n->iparam[PL_PB] - g.kh) / g.sh + 1;
  g.OW = (g.W + g.pl + n->iparam[PL_PR] - g.kw) / g.sw + 1;
  return g;
}

static damo_status pool_infer(damo_node *n) {
  const damo_node *x = n->in[0];
  const int u8 = x->dtype == DAMO_U8 && n->op == DAMO_OP_MAX_POOL2D;
  if ((x->dtype != DAMO_F32 && !u8) || x->ndim != 4)
    return damo_shape_error(n, "input must be f32 (batch, height, width, channels)", x, NULL);
  for (int i = 0; i < 8; i++)
    if (n->iparam[i] < (i < 4 ? 1 : 0)) return damo_shape_error(n, "window and strides must be >= 1, paddings >= 0", x, NULL);
  if (n->iparam[PL_PT] >= n->iparam[PL_KH] || n->iparam[PL_PB] >= n->iparam[PL_KH] || n->iparam[PL_PL] >= n->iparam[PL_KW] ||
      n->iparam[PL_PR] >= n->iparam[PL_KW])
    return damo_shape_error(n, "padding must be smaller than the window (a window of padding only has no value)", x, NULL);
  if (x->shape[1] + n->iparam[PL_PT] + n->iparam[PL_PB] < n->iparam[PL_KH] ||
      x->shape[2] + n->iparam[PL_PL] + n->iparam[PL_PR] < n->iparam[PL_KW])
    return damo_shape_error(n, "the window is larger than the padded input", x, NULL);
  pool_geom g = geom_of(n);
  n->ndim = 4;
  n->shape[0] = g.N, n->shape[1] = g.OH, n->shape[2] = g.OW, n->shape[3] = g.C;
  n->dtype = x->dtype;
  n->aux_bytes = n->op == DAMO_OP_MAX_POOL2D && !u8 ? (size_t)damo_node_count(n) * sizeof(int32_t) : 0;
  return DAMO_OK;
}

/* The window of output (oh, ow) clipped to the image: rows [h0, h1), columns [w0, w1). */
static void window(const pool_geom *g, int64_t oh, int64_t ow, int64_t *h0, int64_t *h1, int64_t *w0, int64_t *w1) {
  *h0 = oh * g->sh - g->pt;
  *w0 = ow * g->sw - g->pl;
  *h1 = *h0 + g->kh < g->H ? *h0 + g->kh : g->H;
  *w1 = *w0 + g->kw < g->W ? *w0 + g->kw : g->W;
  if (*h0 < 0) *h0 = 0;
  if (*w0 < 0) *w0 = 0;
}

/* Max over one window's real pixels, channels innermost (vectorised): yo (C) gets the
 * maxima, ao (C) their indices in the image's (H, W, C) block. Pixels are visited in row-major
 * order and only a strictly larger value (or a NaN, which then sticks) takes over, so ties go
 * to the first index and NaN propagates, both as in torch. */
DAMO_MULTIVERSION static void max_window(const float *restrict xb, int64_t W, int64_t C, int64_t h0, int64_t h1,
                                         int64_t w0, int64_t w1, float *restrict yo, int32_t *restrict ao) {
  const int64_t first = (h0 * W + w0) * C;
  for (int64_t c = 0; c < C; c++) yo[c] = xb[first + c], ao[c] = (int32_t)(first + c);
  for (int64_t h = h0; h < h1; h++)
    for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; w++) {
      const int32_t base = (int32_t)((h * W + w) * C);
      const float *xi = xb + base;
      for (int64_t c = 0; c < C; c++) {
        float v = xi[c];
        int take = v > yo[c] || v != v;
        yo[c] = take ? v : yo[c];
        ao[c] = take ? base + (int32_t)c : ao[c];
      }
    }
}

/* max_window without the argmax, for passes that will not go backward (inference): half the
 * stores, and the compares vectorise. */
DAMO_MULTIVERSION static void max_window_value(const float *restrict xb, int64_t W, int64_t C, int64_t h0,
                                               int64_t h1, int64_t w0, int64_t w1, float *restrict yo) {
  const float *first = xb + (h0 * W + w0) * C;
  for (int64_t c = 0; c < C; c++) yo[c] = first[c];
  for (int64_t h = h0; h < h1; h++)
    for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; w++) {
      const float *xi = xb + (h * W + w) * C;
      for (int64_t c = 0; c < C; c++) yo[c] = xi[c] > yo[c] || xi[c] != xi[c] ? xi[c] : yo[c];
    }
}

/* max_window_value over uint8 (no NaN to carry). */
DAMO_MULTIVERSION static void max_window_u8(const uint8_t *restrict xb, int64_t W, int64_t C, int64_t h0, int64_t h1,
                                            int64_t w0, int64_t w1, uint8_t *restrict yo) {
  memcpy(yo, xb + (h0 * W + w0) * C, (size_t)C);
  for (int64_t h = h0; h < h1; h++)
    for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; w++) {
      const uint8_t *xi = xb + (h * W + w) * C;
      for (int64_t c = 0; c < C; c++) yo[c] = xi[c] > yo[c] ? xi[c] : yo[c];
    }
}

static damo_status max_pool_forward(damo_graph *gr, damo_node *n) {
  (void)gr;
  pool_geom g = geom_of(n);
  const int u8 = n->dtype == DAMO_U8;
  const float *x = u8 ? NULL : damo_f32(n->in[0]);
  float *y = u8 ? NULL : damo_f32(n);
  int32_t *arg = n->aux; /* (N, OH, OW, C): index into the image's (H, W, C) block */
  const int keep_arg = n->in[0]->in_backward && !u8;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(4 * damo_node_count(n), DAMO_NS_MAP))
  for (int64_t b = 0; b < g.N; b++) {
    const float *xb = u8 ? NULL : x + b * g.H * g.W * g.C;
    for (int64_t oh = 0; oh < g.OH; oh++)
      for (int64_t ow = 0; ow < g.OW; ow++) {
        int64_t h0, h1, w0, w1, o = ((b * g.OH + oh) * g.OW + ow) * g.C;
        window(&g, oh, ow, &h0, &h1, &w0, &w1); /* never empty: padding < window */
        if (u8)
          max_window_u8((const uint8_t *)n->in[0]->value + b * g.H * g.W * g.C, g.W, g.C, h0, h1, w0, w1,
                        (uint8_t *)n->value + o);
        else if (keep_arg) max_window(xb, g.W, g.C, h0, h1, w0, w1, y + o, arg + o);
        else max_window_value(xb, g.W, g.C, h0, h1, w0, w1, y + o);
      }
  }
  return DAMO_OK;
}

static void max_pool_backward(damo_graph *gr, damo_node *n) {
  (void)gr;
  if (!n->in[0]->in_backward) return;
  pool_geom g = geom_of(n);
  /* A first writer zeroes each image's block of dx in the thread that scatters into it (in
   * parallel and while it is in cache) instead of the whole gradient up front. */
  float beta;
  float *dx = damo_node_grad_out(n->in[0], &beta);
  const float *dy = n->grad;
  const int32_t *arg = n->aux;
  int64_t per_out = g.OH * g.OW * g.C, per_in = g.H * g.W * g.C;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(4 * damo_node_count(n), DAMO_NS_MAP))
  for (int64_t b = 0; b < g.N; b++) {
    if (beta == 0.0f) memset(dx + b * per_in, 0, (size_t)per_in * sizeof *dx);
    for (int64_t o = 0; o < per_out; o++) dx[b * per_in + arg[b * per_out + o]] += dy[b * per_out + o];
  }
}

static damo_status avg_pool_forward(damo_graph *gr, damo_node *n) {
  (void)gr;
  pool_geom g = geom_of(n);
  const float *x = damo_f32(n->in[0]);
  float *y = damo_f32(n);
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(4 * damo_node_count(n), DAMO_NS_MAP))
  for (int64_t b = 0; b < g.N; b++)
    for (int64_t oh = 0; oh < g.OH; oh++)
      for (int64_t ow = 0; ow < g.OW; ow++) {
        int64_t h0, h1, w0, w1;
        window(&g, oh, ow, &h0, &h1, &w0, &w1);
        float *yo = y + ((b * g.OH + oh) * g.OW + ow) * g.C;
        for (int64_t c = 0; c < g.C; c++) yo[c] = 0;
        for (int64_t h = h0; h < h1; h++)
          for (int64_t w = w0; w < w1; w++) {
            const float *xi = x + ((b * g.H + h) * g.W + w) * g.C;
            for (int64_t c = 0; c < g.C; c++) yo[c] += xi[c];
          }
        float inv = 1.0f / (float)((h1 - h0) * (w1 - w0));
        for (int64_t c = 0; c < g.C; c++) yo[c] *= inv;
      }
  return DAMO_OK;
}

static void avg_pool_backward(damo_graph *gr, damo_node *n) {
  (void)gr;
  if (!n->in[0]->in_backward) return;
  pool_geom g = geom_of(n);
  float *dx = damo_node_grad_acc(n->in[0]);
  const float *dy = n->grad;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(4 * damo_node_count(n), DAMO_NS_MAP))
  for (int64_t b = 0; b < g.N; b++)
    for (int64_t oh = 0; oh < g.OH; oh++)
      for (int64_t ow = 0; ow < g.OW; ow++) {
        int64_t h0, h1, w0, w1;
        window(&g, oh, ow, &h0, &h1, &w0, &w1);
        const float *go = dy + ((b * g.OH + oh) * g.OW + ow) * g.C;
        float inv = 1.0f / (float)((h1 - h0) * (w1 - w0));
        for (int64_t h = h0; h < h1; h++)
          for (int64_t w = w0; w < w1; w++) {
            float *di = dx + ((b * g.H + h) * g.W + w) * g.C;
            for (int64_t c = 0; c < g.C; c++) di[c] += go[c] * inv;
          }
      }
}

/* max reads its indices (aux); avg reads nothing but the output gradient. */
const damo_op_def damo_op_def_max_pool2d = {"max_pool2d", 1, pool_infer, max_pool_forward, max_pool_backward, 0};
const damo_op_def damo_op_def_avg_pool2d = {"avg_pool2d", 1, pool_infer, avg_pool_forward, avg_pool_backward, 0};

static damo_node *pool_node(damo_graph *g, damo_op op, damo_node *x, int kh, int kw, int sh, int sw, int pt, int pl, int pb,
                            int pr) {
  int p[8] = {kh, kw, sh, sw, pt, pl, pb, pr};
  return damo_graph_add_node(g, op, 1, &x, p, 8, NULL, 0);
}

damo_node *damo_max_pool2d(damo_graph *g, damo_node *x, int pool_h, int pool_w, int stride_h, int stride_w, int pad_top,
                           int pad_left, int pad_bottom, int pad_right) {
  return pool_node(g, DAMO_OP_MAX_POOL2D, x, pool_h, pool_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right);
}

damo_node *damo_avg_pool2d(damo_graph *g, damo_node *x, int pool_h, int pool_w, int stride_h, int stride_w, int pad_top,
                           int pad_left, int pad_bottom, int pad_right) {
  return pool_node(g, DAMO_OP_AVG_POOL2D, x, pool_h, pool_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right);
}

/* ------------------------------------------------------------------ global average pooling */

static damo_status gap_infer(damo_node *n) {
  const damo_node *x = n->in[0];
  if (x->dtype != DAMO_F32 || x->ndim != 4) return damo_shape_error(n, "input must be f32 (batch, height, width, channels)", x, NULL);
  n->ndim = 2;
  n->shape[0] = x->shape[0];
  n->shape[1] = x->shape[3];
  n->dtype = DAMO_F32;
  return DAMO_OK;
}

static damo_status gap_forward(damo_graph *gr, damo_node *n) {
  (void)gr;
  const damo_node *x = n->in[0];
  int64_t N = x->shape[0], HW = x->shape[1] * x->shape[2], C = x->shape[3];
  const float *xs = damo_f32(x);
  float *y = damo_f32(n);
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(N * HW * C, DAMO_NS_MAP))
  for (int64_t b = 0; b < N; b++) {
    float *yb = y + b * C;
    for (int64_t c = 0; c < C; c++) yb[c] = 0;
    for (int64_t p = 0; p < HW; p++)
      for (int64_t c = 0; c < C; c++) yb[c] += xs[(b * HW + p) * C + c];
    for (int64_t c = 0; c < C; c++) yb[c] /= (float)HW;
  }
  return DAMO_OK;
}

static void gap_backward(damo_graph *gr, damo_node *n) {
  (void)gr;
  damo_node *x = n->in[0];
  if (!x->in_backward) return;
  int64_t N = x->shape[0], HW = x->shape[1] * x->shape[2], C = x->shape[3];
  float *dx = damo_node_grad_acc(x), inv = 1.0f / (float)HW;
  const float *dy = n->grad;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(N * HW * C, DAMO_NS_MAP))
  for (int64_t b = 0; b < N; b++)
    for (int64_t p = 0; p < HW; p++)
      for (int64_t c = 0; c < C; c++) dx[(b * HW + p) * C + c] += dy[b * C + c] * inv;
}

const damo_op_def damo_op_def_global_avg_pool2d = {"global_avg_pool2d", 1, gap_infer, gap_forward, gap_backward, 0};

damo_node *damo_global_avg_pool2d(damo_graph *g, damo_node *x) {
  return damo_graph_add_node(g, DAMO_OP_GLOBAL_AVG_POOL2D, 1, &x, NULL, 0, NULL, 0);
}
