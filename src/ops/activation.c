/* activation.c - elementwise unary functions: relu, sigmoid, tanh, exp, log.
 *
 * Each backward is written in terms of what is cheapest to keep: relu, sigmoid, tanh and
 * exp read their own output (y), log reads its input (x). */
#include "ops/ops.h"

#include <math.h>

typedef enum { UN_RELU, UN_SIGMOID, UN_TANH, UN_EXP, UN_LOG } unary_kind;

static damo_status unary_infer(damo_node *n) {
  const damo_node *a = n->in[0];
  if (a->dtype != DAMO_F32) return damo_shape_error(n, "operand must be f32", a, NULL);
  n->ndim = a->ndim;
  memcpy(n->shape, a->shape, sizeof n->shape);
  return DAMO_OK;
}

static inline float stable_sigmoid(float x) {
  if (x >= 0) return 1.0f / (1.0f + expf(-x));
  float e = expf(x);
  return e / (1.0f + e);
}

static void unary_forward_kind(damo_node *n, unary_kind k) {
  const float *x = damo_f32(n->in[0]);
  float *y = damo_f32(n);
  int64_t count = damo_node_count(n);
  switch (k) {
  case UN_RELU:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
    for (int64_t i = 0; i < count; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
    break;
  case UN_SIGMOID:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_EXP))
    for (int64_t i = 0; i < count; i++) y[i] = stable_sigmoid(x[i]);
    break;
  case UN_TANH:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_EXP))
    for (int64_t i = 0; i < count; i++) y[i] = tanhf(x[i]);
    break;
  case UN_EXP:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_EXP))
    for (int64_t i = 0; i < count; i++) y[i] = expf(x[i]);
    break;
  case UN_LOG:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_EXP))
    for (int64_t i = 0; i < count; i++) y[i] = logf(x[i]);
    break;
  }
}

static void unary_backward_kind(damo_node *n, unary_kind k) {
  if (!n->in[0]->in_backward) return;
  const float *y = damo_f32(n), *x = damo_f32(n->in[0]), *dy = n->grad;
  float *dx = damo_node_grad_acc(n->in[0]);
  int64_t count = damo_node_count(n);
  switch (k) {
  case UN_RELU:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
    for (int64_t i = 0; i < count; i++) dx[i] += y[i] > 0 ? dy[i] : 0.0f;
    break;
  case UN_SIGMOID:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
    for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * y[i] * (1.0f - y[i]);
    break;
  case UN_TANH:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
    for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
    break;
  case UN_EXP:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
    for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * y[i];
    break;
  case UN_LOG:
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
    for (int64_t i = 0; i < count; i++) dx[i] += dy[i] / x[i];
    break;
  }
}

#define UNARY_OP(lower, KIND, OPENUM, FLAGS)                                                       \
  static damo_status lower##_forward(damo_graph *g, damo_node *n) {                                \
    (void)g;                                                                                       \
    unary_forward_kind(n, KIND);                                                                   \
    return DAMO_OK;                                                                                \
  }                                                                                                \
  static void lower##_backward(damo_graph *g, damo_node *n) {                                      \
    (void)g;                                                                                       \
    unary_backward_kind(n, KIND);                                                                  \
  }                                                                                                \
  const damo_op_def damo_op_def_##lower = {#lower, 1, unary_infer, lower##_forward, lower##_backward, FLAGS}; \
  damo_node *damo_##lower(damo_graph *g, damo_node *a) { return damo_graph_add_node(g, OPENUM, 1, &a, NULL, 0, NULL, 0); }

UNARY_OP(relu, UN_RELU, DAMO_OP_RELU, DAMO_OPF_BWD_OUTPUT)
UNARY_OP(sigmoid, UN_SIGMOID, DAMO_OP_SIGMOID, DAMO_OPF_BWD_OUTPUT)
UNARY_OP(tanh, UN_TANH, DAMO_OP_TANH, DAMO_OPF_BWD_OUTPUT)
UNARY_OP(exp, UN_EXP, DAMO_OP_EXP, DAMO_OPF_BWD_OUTPUT)
UNARY_OP(log, UN_LOG, DAMO_OP_LOG, DAMO_OPF_BWD_INPUTS)
