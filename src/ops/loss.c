/* loss.c - fused losses, each the mean over its elements and a (1,)-shaped result:
 *   softmax cross-entropy with integer labels (logits (B, C), labels (B)), and against a
 *   distribution (targets (B, C); or its KL divergence, the same less the targets' entropy),
 *   binary cross-entropy on logits, and mean squared error.
 * Fusing keeps them stable (log-sum-exp, softplus) and makes the gradient one pass:
 * d/dlogits of softmax CE is (softmax - onehot) / B. */
#include "ops/ops.h"

#include <math.h>

/* ------------------------------------------------------------------ softmax cross-entropy */

static damo_status softmax_ce_infer(damo_node *n) {
  const damo_node *x = n->in[0], *y = n->in[1];
  if (x->dtype != DAMO_F32 || x->ndim != 2) return damo_shape_error(n, "logits must be f32 of shape (batch, classes)", x, y);
  if (y->dtype != DAMO_I32 || y->ndim != 1) return damo_shape_error(n, "labels must be i32 of shape (batch,)", x, y);
  if (y->shape[0] != x->shape[0]) return damo_shape_error(n, "logits and labels have different batch sizes", x, y);
  n->ndim = 1;
  n->shape[0] = 1;
  n->batched = 0;
  n->aux_bytes = (size_t)damo_node_count(x) * sizeof(float); /* softmax probabilities */
  return DAMO_OK;
}

static damo_status softmax_ce_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *x = damo_f32(n->in[0]);
  const int32_t *labels = n->in[1]->value;
  float *prob = n->aux;
  int64_t B = n->in[0]->shape[0], C = n->in[0]->shape[1];
  for (int64_t b = 0; b < B; b++)
    if (labels[b] < 0 || labels[b] >= C)
      return damo_error(DAMO_ERR_INVALID_ARG, "label %d at batch row %lld is outside [0, %lld)", labels[b], (long long)b,
                        (long long)C);
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (B * C > DAMO_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t b = 0; b < B; b++) {
    const float *xr = x + b * C;
    float *pr = prob + b * C;
    float mx = xr[0];
    for (int64_t c = 1; c < C; c++) mx = xr[c] > mx ? xr[c] : mx;
    float sum = 0;
    for (int64_t c = 0; c < C; c++) {
      pr[c] = expf(xr[c] - mx);
      sum += pr[c];
    }
    float inv = 1.0f / sum;
    for (int64_t c = 0; c < C; c++) pr[c] *= inv;
    total += (double)(mx + logf(sum) - xr[labels[b]]);
  }
  damo_f32(n)[0] = (float)(total / (double)B);
  return DAMO_OK;
}

static void softmax_ce_backward(damo_graph *g, damo_node *n) {
  (void)g;
  if (!n->in[0]->in_backward) return;
  const int32_t *labels = n->in[1]->value;
  const float *prob = n->aux;
  float *dx = damo_node_grad_acc(n->in[0]);
  int64_t B = n->in[0]->shape[0], C = n->in[0]->shape[1];
  float scale = n->grad[0] / (float)B;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(B * C, DAMO_NS_MAP))
  for (int64_t b = 0; b < B; b++) {
    for (int64_t c = 0; c < C; c++) dx[b * C + c] += prob[b * C + c] * scale;
    dx[b * C + labels[b]] -= scale;
  }
}

const damo_op_def damo_op_def_softmax_ce = {"softmax_cross_entropy", 2, softmax_ce_infer, softmax_ce_forward,
                                            softmax_ce_backward, DAMO_OPF_BWD_INPUTS | DAMO_OPF_LOSS};

damo_node *damo_softmax_cross_entropy(damo_graph *g, damo_node *logits, damo_node *labels) {
  damo_node *in[2] = {logits, labels};
  return damo_graph_add_node(g, DAMO_OP_SOFTMAX_CE, 2, in, NULL, 0, NULL, 0);
}

/* ------------------------------------------------------------------ soft-target cross-entropy */

static damo_status soft_ce_infer(damo_node *n) {
  const damo_node *x = n->in[0], *t = n->in[1];
  if (x->dtype != DAMO_F32 || x->ndim != 2) return damo_shape_error(n, "logits must be f32 of shape (batch, classes)", x, t);
  if (t->dtype != DAMO_F32 || t->ndim != 2 || t->shape[0] != x->shape[0] || t->shape[1] != x->shape[1])
    return damo_shape_error(n, "targets must be f32 of the logits' shape (batch, classes)", x, t);
  n->ndim = 1;
  n->shape[0] = 1;
  n->batched = 0;
  n->aux_bytes = (size_t)damo_node_count(x) * sizeof(float); /* log softmax */
  return DAMO_OK;
}

static damo_status soft_ce_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *x = damo_f32(n->in[0]), *t = damo_f32(n->in[1]);
  float *logp = n->aux;
  const int64_t B = n->in[0]->shape[0], C = n->in[0]->shape[1];
  const int relative = n->iparam[0];
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (B * C > DAMO_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t b = 0; b < B; b++) {
    const float *xr = x + b * C, *tr = t + b * C;
    float *lr = logp + b * C;
    float mx = xr[0];
    for (int64_t c = 1; c < C; c++) mx = xr[c] > mx ? xr[c] : mx;
    float sum = 0;
    for (int64_t c = 0; c < C; c++) sum += expf(xr[c] - mx);
    const float lse = mx + logf(sum);
    double row = 0;
    for (int64_t c = 0; c < C; c++) {
      lr[c] = xr[c] - lse;
      row -= (double)tr[c] * lr[c];
      if (relative && tr[c] > 0) row += (double)tr[c] * log((double)tr[c]); /* KL: minus the targets' entropy */
    }
    total += row;
  }
  damo_f32(n)[0] = (float)(total / (double)B);
  return DAMO_OK;
}

/* d/dx = (softmax(x) sum_c t - t) / B (targets need not sum to 1); d/dt = -log softmax(x) / B,
 * plus (log t + 1) / B for KL where t > 0. */
static void soft_ce_backward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *t = damo_f32(n->in[1]), *logp = n->aux;
  const int64_t B = n->in[0]->shape[0], C = n->in[0]->shape[1];
  const float scale = n->grad[0] / (float)B;
  float *dx = n->in[0]->in_backward ? damo_node_grad_acc(n->in[0]) : NULL;
  float *dt = n->in[1]->in_backward ? damo_node_grad_acc(n->in[1]) : NULL;
  const int relative = n->iparam[0];
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(B * C, DAMO_NS_MAP))
  for (int64_t b = 0; b < B; b++) {
    const float *tr = t + b * C, *lr = logp + b * C;
    float mass = 0;
    for (int64_t c = 0; c < C; c++) mass += tr[c];
    for (int64_t c = 0; c < C; c++) {
      if (dx) dx[b * C + c] += (expf(lr[c]) * mass - tr[c]) * scale;
      if (dt) dt[b * C + c] += (relative && tr[c] > 0 ? logf(tr[c]) + 1.0f - lr[c] : -lr[c]) * scale;
    }
  }
}

const damo_op_def damo_op_def_soft_ce = {"soft_cross_entropy", 2, soft_ce_infer, soft_ce_forward, soft_ce_backward,
                                         DAMO_OPF_BWD_INPUTS | DAMO_OPF_LOSS};

damo_node *damo_soft_cross_entropy(damo_graph *g, damo_node *logits, damo_node *targets) {
  damo_node *in[2] = {logits, targets};
  const int relative = 0;
  return damo_graph_add_node(g, DAMO_OP_SOFT_CE, 2, in, &relative, 1, NULL, 0);
}

damo_node *damo_kl_divergence(damo_graph *g, damo_node *logits, damo_node *targets) {
  damo_node *in[2] = {logits, targets};
  const int relative = 1;
  return damo_graph_add_node(g, DAMO_OP_SOFT_CE, 2, in, &relative, 1, NULL, 0);
}

/* ------------------------------------------------------------------ pairwise mean losses */

static damo_status pair_loss_infer(damo_node *n) {
  const damo_node *a = n->in[0], *b = n->in[1];
  if (a->dtype != DAMO_F32 || b->dtype != DAMO_F32) return damo_shape_error(n, "operands must be f32", a, b);
  if (a->ndim != b->ndim || memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) != 0)
    return damo_shape_error(n, "operands must have the same shape", a, b);
  n->ndim = 1;
  n->shape[0] = 1;
  n->batched = 0;
  return DAMO_OK;
}

/* Binary cross-entropy of sigmoid(x) against t: max(x, 0) - x t + log(1 + exp(-|x|)). */
static damo_status bce_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *x = damo_f32(n->in[0]), *t = damo_f32(n->in[1]);
  int64_t count = damo_node_count(n->in[0]);
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (count > DAMO_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t i = 0; i < count; i++) total += (double)((x[i] > 0 ? x[i] : 0) - x[i] * t[i] + log1pf(expf(-fabsf(x[i]))));
  damo_f32(n)[0] = count ? (float)(total / (double)count) : 0.0f;
  return DAMO_OK;
}

static void bce_backward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *x = damo_f32(n->in[0]), *t = damo_f32(n->in[1]);
  int64_t count = damo_node_count(n->in[0]);
  float scale = n->grad[0] / (float)(count ? count : 1);
  if (n->in[0]->in_backward) {
    float *dx = damo_node_grad_acc(n->in[0]);
    for (int64_t i = 0; i < count; i++) {
      float s = x[i] >= 0 ? 1.0f / (1.0f + expf(-x[i])) : expf(x[i]) / (1.0f + expf(x[i]));
      dx[i] += (s - t[i]) * scale;
    }
  }
  if (n->in[1]->in_backward) {
    float *dt = damo_node_grad_acc(n->in[1]);
    for (int64_t i = 0; i < count; i++) dt[i] -= x[i] * scale;
  }
}

const damo_op_def damo_op_def_bce_logits = {"bce_with_logits", 2, pair_loss_infer, bce_forward, bce_backward,
                                            DAMO_OPF_BWD_INPUTS | DAMO_OPF_LOSS};

damo_node *damo_bce_with_logits(damo_graph *g, damo_node *logits, damo_node *targets) {
  damo_node *in[2] = {logits, targets};
  return damo_graph_add_node(g, DAMO_OP_BCE_LOGITS, 2, in, NULL, 0, NULL, 0);
}

static damo_status mse_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *a = damo_f32(n->in[0]), *b = damo_f32(n->in[1]);
  int64_t count = damo_node_count(n->in[0]);
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (count > DAMO_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t i = 0; i < count; i++) {
    double d = (double)a[i] - (double)b[i];
    total += d * d;
  }
  damo_f32(n)[0] = count ? (float)(total / (double)count) : 0.0f;
  return DAMO_OK;
}

static void mse_backward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *a = damo_f32(n->in[0]), *b = damo_f32(n->in[1]);
  int64_t count = damo_node_count(n->in[0]);
  float scale = 2.0f * n->grad[0] / (float)(count ? count : 1);
  float *da = n->in[0]->in_backward ? damo_node_grad_acc(n->in[0]) : NULL;
  float *db = n->in[1]->in_backward ? damo_node_grad_acc(n->in[1]) : NULL;
  for (int64_t i = 0; i < count; i++) {
    float d = (a[i] - b[i]) * scale;
    if (da) da[i] += d;
    if (db) db[i] -= d;
  }
}

const damo_op_def damo_op_def_mse = {"mse", 2, pair_loss_infer, mse_forward, mse_backward, DAMO_OPF_BWD_INPUTS | DAMO_OPF_LOSS};

damo_node *damo_mse(damo_graph *g, damo_node *a, damo_node *b) {
  damo_node *in[2] = {a, b};
  return damo_graph_add_node(g, DAMO_OP_MSE, 2, in, NULL, 0, NULL, 0);
}
