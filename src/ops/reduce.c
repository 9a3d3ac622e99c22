/* reduce.c - sum and mean over one axis or over all axes.
 *
 * A reduction over one axis views the input as (outer, len, inner) and the output as
 * (outer, inner); backward spreads each output gradient back over len (divided by len for
 * mean). A full reduction (or a reduction of a rank-1 input without keepdims) yields shape
 * (1,): damo keeps scalars as rank-1 tensors of one element. Sums accumulate in double so
 * long reductions stay accurate. */
#include "ops/ops.h"

enum { RED_AXIS = 0, RED_KEEPDIMS = 1 };

typedef struct red_dims {
  int64_t outer, len, inner;
} red_dims;

static red_dims red_dims_of(const damo_node *n) {
  const damo_node *a = n->in[0];
  red_dims d = {1, 1, 1};
  int axis = n->iparam[RED_AXIS];
  if (axis == DAMO_ALL_AXES) {
    d.len = damo_node_count(a);
    return d;
  }
  if (axis < 0) axis += a->ndim;
  for (int i = 0; i < a->ndim; i++) {
    if (i < axis) d.outer *= a->shape[i];
    else if (i == axis) d.len = a->shape[i];
    else d.inner *= a->shape[i];
  }
  return d;
}

static damo_status reduce_infer(damo_node *n) {
  const damo_node *a = n->in[0];
  if (a->dtype != DAMO_F32) return damo_shape_error(n, "operand must be f32", a, NULL);
  int axis = n->iparam[RED_AXIS], keep = n->iparam[RED_KEEPDIMS];
  if (axis == DAMO_ALL_AXES) {
    n->batched = 0;
    if (keep) {
      n->ndim = a->ndim ? a->ndim : 1;
      for (int i = 0; i < n->ndim; i++) n->shape[i] = 1;
    } else {
      n->ndim = 1;
      n->shape[0] = 1;
    }
    return DAMO_OK;
  }
  int ax = axis < 0 ? axis + a->ndim : axis;
  if (ax < 0 || ax >= a->ndim) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE, "%s: axis %d is out of range for shape %s ('%s')", damo_op_table[n->op]->name, axis,
                      damo_shape_string(a->ndim, a->shape, s, sizeof s), a->name);
  }
  if (ax == 0) n->batched = 0;
  int k = 0;
  for (int i = 0; i < a->ndim; i++) {
    if (i != ax) n->shape[k++] = a->shape[i];
    else if (keep) n->shape[k++] = 1;
  }
  if (k == 0) n->shape[k++] = 1;
  n->ndim = k;
  return DAMO_OK;
}

static void reduce_forward_any(damo_node *n, int mean) {
  const float *x = damo_f32(n->in[0]);
  float *y = damo_f32(n);
  red_dims d = red_dims_of(n);
  double scale = mean && d.len ? 1.0 / (double)d.len : 1.0;
#pragma omp parallel for schedule(static) \
    num_threads(d.outer * d.inner > 1 ? damo_loop_threads(d.outer * d.len * d.inner, DAMO_NS_MAP) : 1)
  for (int64_t o = 0; o < d.outer * d.inner; o++) {
    int64_t oi = o / d.inner, ii = o % d.inner;
    const float *base = x + oi * d.len * d.inner + ii;
    double s = 0;
    for (int64_t l = 0; l < d.len; l++) s += base[l * d.inner];
    y[o] = (float)(s * scale);
  }
}

static void reduce_backward_any(damo_node *n, int mean) {
  if (!n->in[0]->in_backward) return;
  float *dx = damo_node_grad_acc(n->in[0]);
  const float *dy = n->grad;
  red_dims d = red_dims_of(n);
  float scale = mean && d.len ? 1.0f / (float)d.len : 1.0f;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(d.outer * d.len * d.inner, DAMO_NS_MAP))
  for (int64_t oi = 0; oi < d.outer; oi++)
    for (int64_t l = 0; l < d.len; l++) {
      float *row = dx + (oi * d.len + l) * d.inner;
      const float *g = dy + oi * d.inner;
      for (int64_t ii = 0; ii < d.inner; ii++) row[ii] += g[ii] * scale;
    }
}

static damo_status sum_forward(damo_graph *g, damo_node *n) {
  (void)g;
  reduce_forward_any(n, 0);
  return DAMO_OK;
}
static damo_status mean_forward(damo_graph *g, damo_node *n) {
  (void)g;
  reduce_forward_any(n, 1);
  return DAMO_OK;
}
static void sum_backward(damo_graph *g, damo_node *n) {
  (void)g;
  reduce_backward_any(n, 0);
}
static void mean_backward(damo_graph *g, damo_node *n) {
  (void)g;
  reduce_backward_any(n, 1);
}

const damo_op_def damo_op_def_sum = {"sum", 1, reduce_infer, sum_forward, sum_backward, 0};
const damo_op_def damo_op_def_mean = {"mean", 1, reduce_infer, mean_forward, mean_backward, 0};

damo_node *damo_sum(damo_graph *g, damo_node *a, int axis, int keepdims) {
  int p[2] = {axis, keepdims != 0};
  return damo_graph_add_node(g, DAMO_OP_SUM, 1, &a, p, 2, NULL, 0);
}
damo_node *damo_mean(damo_graph *g, damo_node *a, int axis, int keepdims) {
  int p[2] = {axis, keepdims != 0};
  return damo_graph_add_node(g, DAMO_OP_MEAN, 1, &a, p, 2, NULL, 0);
}
