/* shape.c - reshape and transpose.
 *
 * Reshape keeps the element order; a target dimension of 0 copies the input's batch axis
 * (so a Flatten built for batch 64 still works at batch 16) and one -1 is inferred.
 * Transpose permutes axes with a strided copy; its backward is the inverse permutation. */
#include "ops/ops.h"

/* iparam layout for both ops: [0] = ndim, [1..ndim] = target shape or permutation. */

static damo_status reshape_infer(damo_node *n) {
  const damo_node *a = n->in[0];
  int nd = n->iparam[0];
  int64_t total = damo_node_count(a), known = 1;
  int infer_at = -1;
  for (int i = 0; i < nd; i++) {
    int64_t s = n->iparam[1 + i];
    if (s == 0 && i == 0) s = a->shape[0];
    if (s == -1) {
      if (infer_at >= 0) return damo_shape_error(n, "more than one -1 in the target shape", a, NULL);
      infer_at = i;
      continue;
    }
    if (s <= 0) return damo_shape_error(n, "target dimensions must be positive (or 0 for the batch, -1 to infer)", a, NULL);
    n->shape[i] = s;
    known *= s;
  }
  if (infer_at >= 0) {
    if (known == 0 || total % known) return damo_shape_error(n, "cannot infer the -1 dimension", a, NULL);
    n->shape[infer_at] = total / known;
    known = total;
  }
  n->ndim = nd;
  n->dtype = a->dtype;
  if (known != total) {
    char sa[96], sb[96];
    return damo_error(DAMO_ERR_SHAPE, "reshape: cannot reshape %s ('%s') to %s: %lld vs %lld elements",
                      damo_shape_string(a->ndim, a->shape, sa, sizeof sa), a->name,
                      damo_shape_string(nd, n->shape, sb, sizeof sb), (long long)total, (long long)known);
  }
  return DAMO_OK;
}

static damo_status reshape_forward(damo_graph *g, damo_node *n) {
  (void)g;
  memcpy(n->value, n->in[0]->value, (size_t)damo_node_count(n) * damo_dtype_size(n->dtype));
  return DAMO_OK;
}

static void reshape_backward(damo_graph *g, damo_node *n) {
  (void)g;
  if (!n->in[0]->in_backward) return;
  float *dx = damo_node_grad_acc(n->in[0]);
  const float *dy = n->grad;
  int64_t count = damo_node_count(n);
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
  for (int64_t i = 0; i < count; i++) dx[i] += dy[i];
}

const damo_op_def damo_op_def_reshape = {"reshape", 1, reshape_infer, reshape_forward, reshape_backward, 0};

damo_node *damo_reshape(damo_graph *g, damo_node *a, int ndim, const int64_t *shape) {
  if (ndim < 1 || ndim > DAMO_MAX_DIMS) {
    damo_error(DAMO_ERR_SHAPE, "reshape: rank %d is outside 1..%d", ndim, DAMO_MAX_DIMS);
    a = NULL; /* makes the builder fail with this message */
  }
  int p[DAMO_MAX_DIMS + 1] = {ndim};
  for (int i = 0; a && i < ndim; i++) {
    if (shape[i] < -1 || shape[i] > INT32_MAX) {
      damo_error(DAMO_ERR_SHAPE, "reshape: dimension %lld is out of range", (long long)shape[i]);
      a = NULL;
    } else {
      p[1 + i] = (int)shape[i];
    }
  }
  if (!a && g && g->status == DAMO_OK) {
    g->status = DAMO_ERR_SHAPE;
    snprintf(g->status_msg, sizeof g->status_msg, "%s", damo_last_error());
    return NULL;
  }
  return damo_graph_add_node(g, DAMO_OP_RESHAPE, 1, &a, p, ndim + 1, NULL, 0);
}

/* ------------------------------------------------------------------ transpose */

static damo_status transpose_infer(damo_node *n) {
  const damo_node *a = n->in[0];
  int nd = n->iparam[0];
  if (nd != a->ndim) return damo_shape_error(n, "permutation length differs from the rank", a, NULL);
  int seen[DAMO_MAX_DIMS] = {0};
  for (int i = 0; i < nd; i++) {
    int p = n->iparam[1 + i];
    if (p < 0 || p >= nd || seen[p]) return damo_shape_error(n, "not a permutation of the axes", a, NULL);
    seen[p] = 1;
    n->shape[i] = a->shape[p];
  }
  if (n->iparam[1] != 0) n->batched = 0;
  n->ndim = nd;
  n->dtype = a->dtype;
  return DAMO_OK;
}

/* Walks the output in order; in_off follows the input position of each output element.
 * to_output: y[out] = x[in]; otherwise (backward) dx[in] += dy[out]. */
static void transpose_walk(const damo_node *n, const float *src, float *dst, int to_output) {
  const damo_node *a = n->in[0];
  int nd = n->ndim;
  int64_t in_stride[DAMO_MAX_DIMS], stride = 1, idx[DAMO_MAX_DIMS] = {0};
  for (int i = a->ndim - 1; i >= 0; i--) {
    in_stride[i] = stride;
    stride *= a->shape[i];
  }
  int64_t step[DAMO_MAX_DIMS]; /* input stride of each output axis */
  for (int i = 0; i < nd; i++) step[i] = in_stride[n->iparam[1 + i]];
  int64_t count = damo_node_count(n), in_off = 0;
  for (int64_t out = 0; out < count; out++) {
    if (to_output) dst[out] = src[in_off];
    else dst[in_off] += src[out];
    for (int i = nd - 1; i >= 0; i--) { /* odometer increment */
      idx[i]++;
      in_off += step[i];
      if (idx[i] < n->shape[i]) break;
      in_off -= step[i] * n->shape[i];
      idx[i] = 0;
    }
  }
}

static damo_status transpose_forward(damo_graph *g, damo_node *n) {
  (void)g;
  transpose_walk(n, damo_f32(n->in[0]), damo_f32(n), 1);
  return DAMO_OK;
}

static void transpose_backward(damo_graph *g, damo_node *n) {
  (void)g;
  if (!n->in[0]->in_backward) return;
  transpose_walk(n, n->grad, damo_node_grad_acc(n->in[0]), 0);
}

const damo_op_def damo_op_def_transpose = {"transpose", 1, transpose_infer, transpose_forward, transpose_backward, 0};

damo_node *damo_transpose(damo_graph *g, damo_node *a, const int *perm) {
  int p[DAMO_MAX_DIMS + 1] = {0};
  int nd = a ? a->ndim : 0;
  p[0] = nd;
  for (int i = 0; i < nd; i++) p[1 + i] = perm ? perm[i] : i;
  if (!perm && nd >= 2) {
    p[nd - 1] = nd - 1;
    p[nd] = nd - 2;
  }
  return damo_graph_add_node(g, DAMO_OP_TRANSPOSE, 1, &a, p, nd + 1, NULL, 0);
}
