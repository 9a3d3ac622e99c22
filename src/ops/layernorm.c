/* layernorm.c - layer normalisation over the last axis (torch.nn.LayerNorm):
 *   y = gamma xhat + beta,  xhat = (x - mean) rstd,  rstd = 1 / sqrt(var + eps),
 * with each row's mean and biased variance over its C values. Inputs: x (..., C), gamma and
 * beta (C). aux keeps mean and rstd per row (R = numel / C rows) for backward, then two
 * C-double sums for the parameter gradients, so a step allocates nothing.
 *
 * Backward, per row with g = dy * gamma (the gradient reaching xhat):
 *   dx = rstd (g - mean(g) - xhat mean(g xhat))
 * (xhat has zero mean and unit variance over the row, so the two projections remove the
 * directions that change the row's mean and scale); over all rows
 *   dgamma = sum(dy xhat),  dbeta = sum(dy). */
#include "ops/ops.h"

#include <math.h>

static damo_status ln_infer(damo_node *n) {
  const damo_node *x = n->in[0];
  if (x->dtype != DAMO_F32 || x->ndim < 1) return damo_shape_error(n, "input must be f32 (..., channels)", x, NULL);
  int64_t C = x->shape[x->ndim - 1];
  for (int i = 1; i < 3; i++) {
    const damo_node *p = n->in[i];
    if (p->dtype != DAMO_F32 || p->ndim != 1 || p->shape[0] != C)
      return damo_shape_error(n, "gamma and beta must be (channels,) f32", x, p);
  }
  if (!(n->fparam[0] > 0)) return damo_error(DAMO_ERR_INVALID_ARG, "layer_norm: epsilon must be > 0");
  n->ndim = x->ndim;
  memcpy(n->shape, x->shape, sizeof n->shape);
  n->dtype = DAMO_F32;
  int64_t R = damo_node_count(x) / C;
  n->aux_bytes = (size_t)(2 * R) * sizeof(float) + (size_t)(2 * C) * sizeof(double);
  return DAMO_OK;
}

typedef struct ln_scratch {
  float *mean, *rstd; /* R each */
  double *sum_dy_xhat, *sum_dy; /* C each */
} ln_scratch;

static ln_scratch scratch_of(const damo_node *n, int64_t R, int64_t C) {
  ln_scratch s;
  s.mean = n->aux;
  s.rstd = s.mean + R;
  /* the doubles start 8-byte aligned: the arena is 64-aligned and 2R floats are 8R bytes */
  s.sum_dy_xhat = (double *)(s.rstd + R);
  s.sum_dy = s.sum_dy_xhat + C;
  return s;
}

/* The 8 running lanes' total, added pairwise, and a tail's. */
static inline double lanes_total(const double *lane, double tail) {
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])) + tail;
}

/* A row's mean and sum of squared deviations, in double, each sum over 8 running lanes (one
 * running sum is a chain of dependent adds, 4 cycles each, 2 x C per row; lanes vectorise and
 * overlap). Two passes: no cancellation in the variance. The order is fixed, so the result
 * does not depend on the thread count. */
DAMO_MULTIVERSION static void row_moments(const float *x, int64_t C, double *mean_out, double *sumsq_out) {
  const int64_t body = C - C % 8;
  double lane[8] = {0}, tail = 0;
  for (int64_t c = 0; c < body; c += 8)
    for (int k = 0; k < 8; k++) lane[k] += x[c + k];
  for (int64_t c = body; c < C; c++) tail += x[c];
  const double mean = lanes_total(lane, tail) / (double)C;
  double sq[8] = {0}, sq_tail = 0;
  for (int64_t c = 0; c < body; c += 8)
    for (int k = 0; k < 8; k++) sq[k] += ((double)x[c + k] - mean) * ((double)x[c + k] - mean);
  for (int64_t c = body; c < C; c++) sq_tail += ((double)x[c] - mean) * ((double)x[c] - mean);
  *mean_out = mean;
  *sumsq_out = lanes_total(sq, sq_tail);
}

static damo_status ln_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const damo_node *xn = n->in[0];
  int64_t C = xn->shape[xn->ndim - 1], R = damo_node_count(xn) / C;
  const float *x = damo_f32(xn), *gamma = damo_f32(n->in[1]), *beta = damo_f32(n->in[2]);
  float *y = damo_f32(n), eps = n->fparam[0];
  ln_scratch s = scratch_of(n, R, C);
  const int record = n->records_range;
  float lo = 0.0f, hi = 0.0f;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(R * C, DAMO_NS_MAP)) reduction(min : lo) \
    reduction(max : hi)
  for (int64_t r = 0; r < R; r++) {
    const float *xr = x + r * C;
    double mean, sumsq;
    row_moments(xr, C, &mean, &sumsq);
    float m = (float)mean, rstd = (float)(1.0 / sqrt(sumsq / (double)C + (double)eps));
    s.mean[r] = m;
    s.rstd[r] = rstd;
    float *yr = y + r * C;
    for (int64_t c = 0; c < C; c++) yr[c] = gamma[c] * ((xr[c] - m) * rstd) + beta[c];
    if (record) { /* the row's range while it is in cache, for a dynamic int8 reader */
      float a, b;
      damo_range_f32(yr, C, &a, &b);
      lo = a < lo ? a : lo;
      hi = b > hi ? b : hi;
    }
  }
  if (record) n->out_range[0] = lo, n->out_range[1] = hi;
  return DAMO_OK;
}

/* DP-SGD's norm pass: an example's gamma and beta gradients are sums over its rows of
 * dy * xhat and dy; made in the double sums backward has anyway, one example at a time. */
static void ln_example_norms(damo_graph *g, damo_node *n, const float *x, const float *dy, ln_scratch s, int64_t R,
                             int64_t C) {
  damo_node *gn = n->in[1], *bn = n->in[2];
  const int64_t B = g->batch, rows = R / (B > 0 ? B : 1);
  double *sdx = s.sum_dy_xhat, *sdy = s.sum_dy;
  for (int64_t i = 0; i < B; i++) {
    for (int64_t c = 0; c < C; c++) sdx[c] = sdy[c] = 0;
    for (int64_t r = i * rows; r < (i + 1) * rows; r++) {
      const float *xr = x + r * C, *dyr = dy + r * C;
      for (int64_t c = 0; c < C; c++) {
        sdx[c] += (double)(dyr[c] * ((xr[c] - s.mean[r]) * s.rstd[r]));
        sdy[c] += dyr[c];
      }
    }
    double qx = 0, qy = 0;
    for (int64_t c = 0; c < C; c++) qx += sdx[c] * sdx[c], qy += sdy[c] * sdy[c];
    if (damo_wants_weight_norms(g, gn)) damo_example_norm_add(g, gn, i, qx);
    if (damo_wants_weight_norms(g, bn)) damo_example_norm_add(g, bn, i, qy);
  }
}

static void ln_backward(damo_graph *g, damo_node *n) {
  damo_node *xn = n->in[0], *gn = n->in[1], *bn = n->in[2];
  int64_t C = xn->shape[xn->ndim - 1], R = damo_node_count(xn) / C;
  const float *x = damo_f32(xn), *gamma = damo_f32(gn), *dy = n->grad;
  ln_scratch s = scratch_of(n, R, C);
  if (g->norm_pass && (damo_wants_weight_norms(g, gn) || damo_wants_weight_norms(g, bn))) ln_example_norms(g, n, x, dy, s, R, C);
  if (damo_wants_weight_grad(g, gn) || damo_wants_weight_grad(g, bn)) {
    double *sdx = s.sum_dy_xhat, *sdy = s.sum_dy;
    for (int64_t c = 0; c < C; c++) sdx[c] = sdy[c] = 0;
    for (int64_t r = 0; r < R; r++) { /* rows in order: the same sums on any thread count */
      const float *xr = x + r * C, *dyr = dy + r * C;
      float m = s.mean[r], rstd = s.rstd[r];
      for (int64_t c = 0; c < C; c++) {
        sdx[c] += (double)(dyr[c] * ((xr[c] - m) * rstd));
        sdy[c] += dyr[c];
      }
    }
    if (damo_wants_weight_grad(g, gn)) {
      float *dg = damo_node_grad_acc(gn);
      for (int64_t c = 0; c < C; c++) dg[c] += (float)sdx[c];
    }
    if (damo_wants_weight_grad(g, bn)) {
      float *db = damo_node_grad_acc(bn);
      for (int64_t c = 0; c < C; c++) db[c] += (float)sdy[c];
    }
  }
  if (!xn->in_backward) return;
  float *dx = damo_node_grad_acc(xn);
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(R * C, DAMO_NS_MAP))
  for (int64_t r = 0; r < R; r++) {
    const float *xr = x + r * C, *dyr = dy + r * C;
    float m = s.mean[r], rstd = s.rstd[r];
    double sum_g = 0, sum_g_xhat = 0;
    for (int64_t c = 0; c < C; c++) {
      float gc = dyr[c] * gamma[c];
      sum_g += gc;
      sum_g_xhat += (double)(gc * ((xr[c] - m) * rstd));
    }
    float mean_g = (float)(sum_g / (double)C), mean_g_xhat = (float)(sum_g_xhat / (double)C);
    float *dxr = dx + r * C;
    for (int64_t c = 0; c < C; c++) {
      float xhat = (xr[c] - m) * rstd;
      dxr[c] += rstd * (dyr[c] * gamma[c] - mean_g - xhat * mean_g_xhat);
    }
  }
}

/* Backward reads x and gamma (inputs) and its own aux. */
const damo_op_def damo_op_def_layer_norm = {"layer_norm", 3, ln_infer, ln_forward, ln_backward,
                                            DAMO_OPF_BWD_INPUTS | DAMO_OPF_EXAMPLE_NORMS};

damo_node *damo_layer_norm(damo_graph *g, damo_node *x, damo_node *gamma, damo_node *beta, float eps) {
  damo_node *in[3] = {x, gamma, beta};
  float f[1] = {eps};
  return damo_graph_add_node(g, DAMO_OP_LAYER_NORM, 3, in, NULL, 0, f, 1);
}
