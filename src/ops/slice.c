/* slice.c - slice_last: a contiguous window of the last axis.
 *   slice_last   (..., C) -> (..., len), channels [start, start + len)
 * Forward copies each row's window; backward adds the output gradient back into that
 * window of the input's gradient (the rest of the row gets nothing). Used to split a fused
 * projection, e.g. GPT-2's c_attn output (B, T, 3C) into q, k and v. */
#include "ops/ops.h"

enum { SLICE_START = 0, SLICE_LEN = 1 };

static damo_status slice_last_infer(damo_node *n) {
  const damo_node *x = n->in[0];
  if (x->dtype != DAMO_F32 || x->ndim < 1) return damo_shape_error(n, "input must be f32 with at least one axis", x, NULL);
  int64_t C = x->shape[x->ndim - 1], start = n->iparam[SLICE_START], len = n->iparam[SLICE_LEN];
  if (start < 0 || len < 1 || start + len > C)
    return damo_error(DAMO_ERR_SHAPE, "slice_last '%s': channels [%lld, %lld) are outside the input's %lld", n->name,
                      (long long)start, (long long)(start + len), (long long)C);
  n->ndim = x->ndim;
  memcpy(n->shape, x->shape, sizeof n->shape);
  n->shape[n->ndim - 1] = len;
  n->dtype = DAMO_F32;
  return DAMO_OK;
}

static damo_status slice_last_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const damo_node *x = n->in[0];
  int64_t C = x->shape[x->ndim - 1], start = n->iparam[SLICE_START], len = n->iparam[SLICE_LEN];
  int64_t rows = damo_node_count(n) / len;
  const float *src = damo_f32(x);
  float *y = damo_f32(n);
#pragma omp parallel for num_threads(damo_loop_threads(rows * len, DAMO_NS_MAP))
  for (int64_t r = 0; r < rows; r++) memcpy(y + r * len, src + r * C + start, (size_t)len * sizeof(float));
  return DAMO_OK;
}

static void slice_last_backward(damo_graph *g, damo_node *n) {
  (void)g;
  damo_node *x = n->in[0];
  if (!x->in_backward) return;
  int64_t C = x->shape[x->ndim - 1], start = n->iparam[SLICE_START], len = n->iparam[SLICE_LEN];
  int64_t rows = damo_node_count(n) / len;
  const float *dy = n->grad;
  float *dx = damo_node_grad_acc(x);
#pragma omp parallel for num_threads(damo_loop_threads(rows * len, DAMO_NS_MAP))
  for (int64_t r = 0; r < rows; r++) {
    float *d = dx + r * C + start;
    const float *s = dy + r * len;
    for (int64_t k = 0; k < len; k++) d[k] += s[k];
  }
}

const damo_op_def damo_op_def_slice_last = {"slice_last", 1, slice_last_infer, slice_last_forward, slice_last_backward, 0};

damo_node *damo_slice_last(damo_graph *g, damo_node *x, int64_t start, int64_t len) {
  /* Out-of-range values become -1, which shape inference reports with the input's width. */
  int p[2] = {start >= 0 && start <= INT32_MAX ? (int)start : -1, len >= 1 && len <= INT32_MAX ? (int)len : -1};
  return damo_graph_add_node(g, DAMO_OP_SLICE_LAST, 1, &x, p, 2, NULL, 0);
}
