/* softmax.c - softmax and log-softmax over the last axis, row by row, max-shifted so large
 * logits do not overflow. Both backward rules read only the output:
 *   softmax:     dx = y * (dy - sum(dy * y))
 *   log-softmax: dx = dy - exp(y) * sum(dy) */
#include "ops/ops.h"

#include <math.h>

static damo_status softmax_infer(damo_node *n) {
  const damo_node *a = n->in[0];
  if (a->dtype != DAMO_F32 || a->ndim < 1) return damo_shape_error(n, "operand must be f32 with at least one axis", a, NULL);
  n->ndim = a->ndim;
  memcpy(n->shape, a->shape, sizeof n->shape);
  return DAMO_OK;
}

static void softmax_rows(const float *x, float *y, int64_t rows, int64_t C, int log_space) {
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(rows * C, DAMO_NS_EXP))
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * C;
    float *yr = y + r * C;
    float mx = xr[0];
    for (int64_t c = 1; c < C; c++) mx = xr[c] > mx ? xr[c] : mx;
    float sum = 0;
    for (int64_t c = 0; c < C; c++) sum += expf(xr[c] - mx);
    if (log_space) {
      float lse = mx + logf(sum);
      for (int64_t c = 0; c < C; c++) yr[c] = xr[c] - lse;
    } else {
      float inv = 1.0f / sum;
      for (int64_t c = 0; c < C; c++) yr[c] = expf(xr[c] - mx) * inv;
    }
  }
}

static damo_status softmax_forward(damo_graph *g, damo_node *n) {
  (void)g;
  int64_t C = n->shape[n->ndim - 1];
  softmax_rows(damo_f32(n->in[0]), damo_f32(n), C ? damo_node_count(n) / C : 0, C, 0);
  return DAMO_OK;
}

static damo_status log_softmax_forward(damo_graph *g, damo_node *n) {
  (void)g;
  int64_t C = n->shape[n->ndim - 1];
  softmax_rows(damo_f32(n->in[0]), damo_f32(n), C ? damo_node_count(n) / C : 0, C, 1);
  return DAMO_OK;
}

static void softmax_backward_any(damo_node *n, int log_space) {
  if (!n->in[0]->in_backward) return;
  int64_t C = n->shape[n->ndim - 1], rows = C ? damo_node_count(n) / C : 0;
  const float *y = damo_f32(n), *dy = n->grad;
  float *dx = damo_node_grad_acc(n->in[0]);
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(rows * C, DAMO_NS_EXP))
  for (int64_t r = 0; r < rows; r++) {
    const float *yr = y + r * C, *gr = dy + r * C;
    float *dr = dx + r * C;
    float dot = 0;
    if (log_space) {
      for (int64_t c = 0; c < C; c++) dot += gr[c];
      for (int64_t c = 0; c < C; c++) dr[c] += gr[c] - expf(yr[c]) * dot;
    } else {
      for (int64_t c = 0; c < C; c++) dot += gr[c] * yr[c];
      for (int64_t c = 0; c < C; c++) dr[c] += yr[c] * (gr[c] - dot);
    }
  }
}

static void softmax_backward(damo_graph *g, damo_node *n) {
  (void)g;
  softmax_backward_any(n, 0);
}
static void log_softmax_backward(damo_graph *g, damo_node *n) {
  (void)g;
  softmax_backward_any(n, 1);
}

const damo_op_def damo_op_def_softmax = {"softmax", 1, softmax_infer, softmax_forward, softmax_backward, DAMO_OPF_BWD_OUTPUT};
const damo_op_def damo_op_def_log_softmax = {"log_softmax", 1, softmax_infer, log_softmax_forward, log_softmax_backward,
                                             DAMO_OPF_BWD_OUTPUT};

damo_node *damo_softmax(damo_graph *g, damo_node *a) { return damo_graph_add_node(g, DAMO_OP_SOFTMAX, 1, &a, NULL, 0, NULL, 0); }
damo_node *damo_log_softmax(damo_graph *g, damo_node *a) {
  return damo_graph_add_node(g, DAMO_OP_LOG_SOFTMAX, 1, &a, NULL, 0, NULL, 0);
}
