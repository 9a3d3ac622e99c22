/* dropout.c - inverted dropout: while training each element is zeroed with probability
 * `rate` and survivors are scaled by 1/(1-rate), so evaluation is the identity. The keep
 * mask (one byte per element, in aux) is drawn from the graph's seeded generator, so a
 * given seed gives the same masks run after run. */
#include "graph/graph.h"

static damo_status dropout_infer(damo_node *n) {
  const damo_node *a = n->in[0];
  if (a->dtype != DAMO_F32) return damo_shape_error(n, "operand must be f32", a, NULL);
  float rate = n->fparam[0];
  if (!(rate >= 0.0f && rate < 1.0f))
    return damo_error(DAMO_ERR_INVALID_ARG, "dropout: rate %g is outside [0, 1)", (double)rate);
  n->ndim = a->ndim;
  memcpy(n->shape, a->shape, sizeof n->shape);
  n->aux_bytes = (size_t)damo_node_count(n);
  return DAMO_OK;
}

static damo_status dropout_forward(damo_graph *g, damo_node *n) {
  const float *x = damo_f32(n->in[0]);
  float *y = damo_f32(n);
  unsigned char *keep = n->aux;
  int64_t count = damo_node_count(n);
  float rate = n->fparam[0];
  if (!g->training || rate == 0.0f) {
    memcpy(y, x, (size_t)count * sizeof *y);
    return DAMO_OK;
  }
  float scale = 1.0f / (1.0f - rate);
  uint32_t threshold = (uint32_t)((double)rate * 4294967296.0);
  for (int64_t i = 0; i < count; i++) keep[i] = damo_rng_u32(&g->rng) >= threshold;
#pragma omp parallel for schedule(static) if (count > DAMO_PARALLEL_MIN)
  for (int64_t i = 0; i < count; i++) y[i] = keep[i] ? x[i] * scale : 0.0f;
  return DAMO_OK;
}

static void dropout_backward(damo_graph *g, damo_node *n) {
  if (!n->in[0]->in_backward) return;
  const float *dy = n->grad;
  float *dx = damo_node_grad_acc(n->in[0]);
  const unsigned char *keep = n->aux;
  int64_t count = damo_node_count(n);
  float rate = n->fparam[0];
  if (!g->training || rate == 0.0f) {
    for (int64_t i = 0; i < count; i++) dx[i] += dy[i];
    return;
  }
  float scale = 1.0f / (1.0f - rate);
#pragma omp parallel for schedule(static) if (count > DAMO_PARALLEL_MIN)
  for (int64_t i = 0; i < count; i++) dx[i] += keep[i] ? dy[i] * scale : 0.0f;
}

const damo_op_def damo_op_def_dropout = {"dropout", 1, dropout_infer, dropout_forward, dropout_backward, 0};

damo_node *damo_dropout(damo_graph *g, damo_node *a, float rate) {
  return damo_graph_add_node(g, DAMO_OP_DROPOUT, 1, &a, NULL, 0, &rate, 1);
}
