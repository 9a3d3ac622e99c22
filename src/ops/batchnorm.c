/* batchnorm.c - batch normalisation over every axis but the last (channels-last):
 *   training:  y = gamma (x - mean_B) / sqrt(var_B + eps) + beta, with the batch's mean and
 *              biased variance, and the running statistics moved towards the batch's:
 *              running = momentum * running + (1 - momentum) * batch (Keras' momentum, 0.99 by
 *              default; torch's momentum m is Keras' 1 - m), the unbiased variance for the
 *              running variance as torch keeps it;
 *   inference: the running statistics instead, a fixed affine map.
 * Inputs: x (..., C), gamma, beta (C) trainable; running_mean, running_var (C) as params
 * without gradients, updated in place once per training forward. aux keeps the batch mean
 * and 1/std per channel for backward:
 *   dx = gamma rstd / R (R dy - sum(dy) - xhat sum(dy xhat)),  dgamma = sum(dy xhat),
 *   dbeta = sum(dy)   (sums over the R = numel / C rows).
 * Synchronised (damo_graph_set_sync_batchnorm, data-parallel training): the training
 * statistics are the whole global batch's (the sums all-reduced over the ranks), and so are
 * backward's sums. A rank's gradients are in the units of its own mean loss (the trainer
 * scales them by its share R / R_all afterwards), so its sums enter the reduction times that
 * share and leave it divided by it; dgamma and dbeta stay the rank's own sums. */
#include "ops/ops.h"

#include <math.h>

static damo_status bn_infer(damo_node *n) {
  const damo_node *x = n->in[0];
  if (x->dtype != DAMO_F32 || x->ndim < 2) return damo_shape_error(n, "input must be f32 (batch, ..., channels)", x, NULL);
  int64_t C = x->shape[x->ndim - 1];
  for (int i = 1; i < 5; i++) {
    const damo_node *p = n->in[i];
    if (p->dtype != DAMO_F32 || p->ndim != 1 || p->shape[0] != C)
      return damo_shape_error(n, "gamma, beta and the running statistics must be (channels,)", x, p);
  }
  if (!(n->fparam[0] >= 0 && n->fparam[0] < 1) || !(n->fparam[1] > 0))
    return damo_error(DAMO_ERR_INVALID_ARG, "batch_norm: momentum must be in [0, 1) and epsilon > 0");
  n->ndim = x->ndim;
  memcpy(n->shape, x->shape, sizeof n->shape);
  n->dtype = DAMO_F32;
  n->aux_bytes = (size_t)(4 * C) * sizeof(float) + (size_t)(2 * C + 1) * sizeof(double); /* see bn_scratch */
  return DAMO_OK;
}

/* aux: mean, rstd, a, b (C floats each), then two C-double sums and the global batch's row
 * count (synchronised): nothing is allocated per step. */
typedef struct bn_scratch {
  float *mean, *rstd, *a, *b;
  double *s1, *s2, *rows_all;
} bn_scratch;

static bn_scratch scratch_of(const damo_node *n, int64_t C) {
  bn_scratch s;
  s.mean = n->aux;
  s.rstd = s.mean + C;
  s.a = s.rstd + C;
  s.b = s.a + C;
  s.s1 = (double *)(s.b + C);
  s.s2 = s.s1 + C;
  s.rows_all = s.s2 + C;
  return s;
}

/* Per-channel sums over rows in double, rows in order (vectorised over channels). */
static void channel_stats(const float *x, int64_t R, int64_t C, double *sum, double *sumsq, const float *center) {
  for (int64_t c = 0; c < C; c++) sum[c] = sumsq[c] = 0;
  for (int64_t r = 0; r < R; r++) {
    const float *row = x + r * C;
    for (int64_t c = 0; c < C; c++) {
      double d = (double)row[c] - (center ? (double)center[c] : 0.0);
      sum[c] += d;
      sumsq[c] += d * d;
    }
  }
}

static damo_status bn_forward(damo_graph *g, damo_node *n) {
  const damo_node *xn = n->in[0];
  int64_t C = xn->shape[xn->ndim - 1], R = damo_node_count(xn) / C;
  const float *x = damo_f32(xn), *gamma = damo_f32(n->in[1]), *beta = damo_f32(n->in[2]);
  float *rmean = damo_f32(n->in[3]), *rvar = damo_f32(n->in[4]), *y = damo_f32(n);
  bn_scratch s = scratch_of(n, C);
  float *mean = s.mean, *rstd = s.rstd, momentum = n->fparam[0], eps = n->fparam[1];
  if (g->training) {
    double *sum = s.s1, *sumsq = s.s2, rows = (double)R;
    channel_stats(x, R, C, sum, sumsq, NULL);
    if (g->sync_dist) { /* the global batch: its row count with the sums (sumsq is the scratch) */
      sumsq[0] = rows;
      damo_status st = damo_dist_allreduce_f64(g->sync_dist, sumsq, 1);
      if (st == DAMO_OK) st = damo_dist_allreduce_f64(g->sync_dist, sum, C);
      if (st != DAMO_OK) return damo_error_prefix(st, "synchronised batch_norm '%s': ", n->name);
      rows = sumsq[0];
    }
    *s.rows_all = rows;
    for (int64_t c = 0; c < C; c++) mean[c] = (float)(sum[c] / rows);
    channel_stats(x, R, C, sum, sumsq, mean); /* two passes: no cancellation in the variance */
    if (g->sync_dist) {
      damo_status st = damo_dist_allreduce_f64(g->sync_dist, sumsq, C);
      if (st != DAMO_OK) return damo_error_prefix(st, "synchronised batch_norm '%s': ", n->name);
    }
    for (int64_t c = 0; c < C; c++) {
      double var = sumsq[c] / rows;
      rstd[c] = (float)(1.0 / sqrt(var + (double)eps));
      double unbiased = rows > 1 ? sumsq[c] / (rows - 1) : var;
      if (g->recomputing) continue; /* the first forward moved them already */
      rmean[c] = momentum * rmean[c] + (1.0f - momentum) * mean[c];
      rvar[c] = momentum * rvar[c] + (1.0f - momentum) * (float)unbiased;
    }
  } else {
    for (int64_t c = 0; c < C; c++) {
      mean[c] = rmean[c];
      rstd[c] = 1.0f / sqrtf(rvar[c] + eps);
    }
  }
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(R * C, DAMO_NS_MAP))
  for (int64_t r = 0; r < R; r++)
    for (int64_t c = 0; c < C; c++) y[r * C + c] = gamma[c] * (x[r * C + c] - mean[c]) * rstd[c] + beta[c];
  return DAMO_OK;
}

static void bn_backward(damo_graph *g, damo_node *n) {
  damo_node *xn = n->in[0], *gn = n->in[1], *bn = n->in[2];
  int64_t C = xn->shape[xn->ndim - 1], R = damo_node_count(xn) / C;
  bn_scratch s = scratch_of(n, C);
  const float *x = damo_f32(xn), *gamma = damo_f32(gn), *dy = n->grad, *mean = s.mean, *rstd = s.rstd;
  double *sdy = s.s1, *sdyx = s.s2;
  for (int64_t c = 0; c < C; c++) sdy[c] = sdyx[c] = 0;
  for (int64_t r = 0; r < R; r++)
    for (int64_t c = 0; c < C; c++) {
      double d = dy[r * C + c];
      sdy[c] += d;
      sdyx[c] += d * (double)((x[r * C + c] - mean[c]) * rstd[c]);
    }
  if (gn->in_backward) {
    float *dg = damo_node_grad_acc(gn);
    for (int64_t c = 0; c < C; c++) dg[c] += (float)sdyx[c];
  }
  if (bn->in_backward) {
    float *db = damo_node_grad_acc(bn);
    for (int64_t c = 0; c < C; c++) db[c] += (float)sdy[c];
  }
  if (xn->in_backward) {
    float *dx = damo_node_grad_acc(xn);
    if (g->training) {
      float *a = s.a, *b = s.b;
      double rows = (double)R, share = 1.0;
      if (g->sync_dist) { /* the global sums, in this rank's units (see the top); a failed peer fails the step */
        rows = *s.rows_all, share = (double)R / rows;
        double *both = s.s1; /* sdy then sdyx: contiguous C + C doubles */
        for (int64_t c = 0; c < 2 * C; c++) both[c] *= share;
        damo_dist_allreduce_f64(g->sync_dist, both, 2 * C);
        for (int64_t c = 0; c < 2 * C; c++) both[c] /= share;
      }
      for (int64_t c = 0; c < C; c++) {
        a[c] = (float)(sdy[c] / rows);
        b[c] = (float)(sdyx[c] / rows);
      }
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(R * C, DAMO_NS_MAP))
      for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) {
          float xhat = (x[r * C + c] - mean[c]) * rstd[c];
          dx[r * C + c] += gamma[c] * rstd[c] * (dy[r * C + c] - a[c] - xhat * b[c]);
        }
    } else { /* a fixed affine map */
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(R * C, DAMO_NS_MAP))
      for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) dx[r * C + c] += gamma[c] * rstd[c] * dy[r * C + c];
    }
  }
}

/* Backward reads x (inputs) and its own aux. */
const damo_op_def damo_op_def_batch_norm = {"batch_norm", 5, bn_infer, bn_forward, bn_backward, DAMO_OPF_BWD_INPUTS};

damo_node *damo_batch_norm(damo_graph *g, damo_node *x, damo_node *gamma, damo_node *beta, damo_node *running_mean,
                           damo_node *running_var, float momentum, float eps) {
  damo_node *in[5] = {x, gamma, beta, running_mean, running_var};
  float f[2] = {momentum, eps};
  return damo_graph_add_node(g, DAMO_OP_BATCH_NORM, 5, in, NULL, 0, f, 2);
}
