/* sequence.c - small ops around masked sequence models:
 *   sequence_mask   ids (B, T) i32 -> (B, T) f32, 1 where id != 0 (Keras' mask_zero); no gradient
 *   concat          (..., A) and (..., C) -> (..., A + C) along the last axis
 *   global_pool1d   (B, T, C) -> (B, C), the mean or the max over the steps whose mask is
 *                   not 0 (all steps without a mask); a row with no step left gives 0
 * All loops run in a fixed order on one thread, so results do not depend on threads. */
#include "ops/ops.h"

/* ------------------------------------------------------------------ sequence_mask */

static damo_status sequence_mask_infer(damo_node *n) {
  const damo_node *ids = n->in[0];
  if (ids->dtype != DAMO_I32 || ids->ndim != 2) return damo_shape_error(n, "ids must be i32 (batch, timesteps)", ids, NULL);
  n->ndim = 2;
  n->shape[0] = ids->shape[0];
  n->shape[1] = ids->shape[1];
  n->dtype = DAMO_F32;
  return DAMO_OK;
}

static damo_status sequence_mask_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const int32_t *ids = n->in[0]->value;
  float *y = damo_f32(n);
  for (int64_t i = 0; i < damo_node_count(n); i++) y[i] = ids[i] != 0 ? 1.0f : 0.0f;
  return DAMO_OK;
}

/* Integer ids have no gradient. */
static void sequence_mask_backward(damo_graph *g, damo_node *n) {
  (void)g;
  (void)n;
}

const damo_op_def damo_op_def_sequence_mask = {"sequence_mask", 1, sequence_mask_infer, sequence_mask_forward,
                                               sequence_mask_backward, 0};

damo_node *damo_sequence_mask(damo_graph *g, damo_node *ids) {
  return damo_graph_add_node(g, DAMO_OP_SEQUENCE_MASK, 1, &ids, NULL, 0, NULL, 0);
}

/* ------------------------------------------------------------------ concat */

/* iparam[0]: the axis (>= 0, counting the batch axis). Both inputs are `outer` blocks (the
 * product of the axes before it) of A and C floats (their extent along it times the axes
 * after it), so one loop of two copies serves every axis. */
static damo_status concat_infer(damo_node *n) {
  const damo_node *a = n->in[0], *b = n->in[1];
  const int axis = n->iparam[0];
  int ok = a->dtype == DAMO_F32 && b->dtype == DAMO_F32 && a->ndim == b->ndim && axis >= 0 && axis < a->ndim;
  for (int i = 0; ok && i < a->ndim; i++) ok = i == axis || a->shape[i] == b->shape[i];
  if (!ok) {
    char what[96];
    snprintf(what, sizeof what, "inputs must be f32 of the same rank and shape except along axis %d", axis);
    return damo_shape_error(n, what, a, b);
  }
  n->ndim = a->ndim;
  memcpy(n->shape, a->shape, sizeof n->shape);
  n->shape[axis] = a->shape[axis] + b->shape[axis];
  n->dtype = DAMO_F32;
  return DAMO_OK;
}

typedef struct concat_blocks {
  int64_t outer, A, C;
} concat_blocks;

static concat_blocks concat_blocks_of(const damo_node *n) {
  const damo_node *a = n->in[0], *b = n->in[1];
  const int axis = n->iparam[0];
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis; i++) outer *= a->shape[i];
  for (int i = axis + 1; i < a->ndim; i++) inner *= a->shape[i];
  return (concat_blocks){outer, a->shape[axis] * inner, b->shape[axis] * inner};
}

static damo_status concat_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const concat_blocks k = concat_blocks_of(n);
  const float *pa = damo_f32(n->in[0]), *pb = damo_f32(n->in[1]);
  float *y = damo_f32(n);
  for (int64_t r = 0; r < k.outer; r++) {
    memcpy(y + r * (k.A + k.C), pa + r * k.A, (size_t)k.A * sizeof(float));
    memcpy(y + r * (k.A + k.C) + k.A, pb + r * k.C, (size_t)k.C * sizeof(float));
  }
  return DAMO_OK;
}

static void concat_backward(damo_graph *g, damo_node *n) {
  (void)g;
  const concat_blocks k = concat_blocks_of(n);
  const float *dy = n->grad;
  for (int part = 0; part < 2; part++) {
    damo_node *in = n->in[part];
    if (!in->in_backward) continue;
    int64_t width = part ? k.C : k.A, offset = part ? k.A : 0;
    float *dx = damo_node_grad_acc(in);
    for (int64_t r = 0; r < k.outer; r++)
      for (int64_t j = 0; j < width; j++) dx[r * width + j] += dy[r * (k.A + k.C) + offset + j];
  }
}

const damo_op_def damo_op_def_concat = {"concat", 2, concat_infer, concat_forward, concat_backward, 0};

damo_node *damo_concat_axis(damo_graph *g, damo_node *a, damo_node *b, int axis) {
  damo_node *in[2] = {a, b};
  if (a && axis < 0) axis += a->ndim;
  return damo_graph_add_node(g, DAMO_OP_CONCAT, 2, in, &axis, 1, NULL, 0);
}

damo_node *damo_concat(damo_graph *g, damo_node *a, damo_node *b) { return damo_concat_axis(g, a, b, -1); }

/* ------------------------------------------------------------------ global_pool1d */

enum { GP_MAX = 0 };

/* aux: the mean's weight of every step, mask / count (B, T) floats; or the max's winning
 * step per output (B, C) i32, -1 when the row has no step. Backward reads only aux. */
static damo_status global_pool1d_infer(damo_node *n) {
  const damo_node *x = n->in[0];
  if (x->dtype != DAMO_F32 || x->ndim != 3) return damo_shape_error(n, "input must be f32 (batch, timesteps, features)", x, NULL);
  if (n->n_in > 1) {
    const damo_node *m = n->in[1];
    if (m->dtype != DAMO_F32 || m->ndim != 2 || m->shape[0] != x->shape[0] || m->shape[1] != x->shape[1])
      return damo_shape_error(n, "mask must be f32 (batch, timesteps) matching the input", x, m);
  }
  n->ndim = 2;
  n->shape[0] = x->shape[0];
  n->shape[1] = x->shape[2];
  n->dtype = DAMO_F32;
  n->aux_bytes = (size_t)(x->shape[0] * (n->iparam[GP_MAX] ? x->shape[2] : x->shape[1])) * 4;
  return DAMO_OK;
}

static damo_status global_pool1d_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const damo_node *xn = n->in[0];
  int64_t B = xn->shape[0], T = xn->shape[1], C = xn->shape[2];
  const float *x = damo_f32(xn), *mask = n->n_in > 1 ? damo_f32(n->in[1]) : NULL;
  float *y = damo_f32(n);
  for (int64_t b = 0; b < B; b++) {
    float *yr = y + b * C;
    if (n->iparam[GP_MAX]) {
      int32_t *arg = (int32_t *)n->aux + b * C;
      for (int64_t c = 0; c < C; c++) arg[c] = -1, yr[c] = 0.0f;
      for (int64_t t = 0; t < T; t++) {
        if (mask && mask[b * T + t] == 0.0f) continue;
        const float *xr = x + (b * T + t) * C;
        for (int64_t c = 0; c < C; c++)
          if (arg[c] < 0 || xr[c] > yr[c]) arg[c] = (int32_t)t, yr[c] = xr[c];
      }
    } else {
      float *w = (float *)n->aux + b * T;
      int64_t count = 0;
      for (int64_t t = 0; t < T; t++) count += !mask || mask[b * T + t] != 0.0f;
      for (int64_t t = 0; t < T; t++) w[t] = (!mask || mask[b * T + t] != 0.0f) ? 1.0f / (float)count : 0.0f;
      memset(yr, 0, (size_t)C * sizeof(float));
      for (int64_t t = 0; t < T; t++) {
        if (w[t] == 0.0f) continue;
        const float *xr = x + (b * T + t) * C;
        for (int64_t c = 0; c < C; c++) yr[c] += xr[c];
      }
      if (count > 0)
        for (int64_t c = 0; c < C; c++) yr[c] /= (float)count;
    }
  }
  return DAMO_OK;
}

static void global_pool1d_backward(damo_graph *g, damo_node *n) {
  (void)g;
  damo_node *xn = n->in[0];
  if (!xn->in_backward) return;
  int64_t B = xn->shape[0], T = xn->shape[1], C = xn->shape[2];
  const float *dy = n->grad;
  float *dx = damo_node_grad_acc(xn);
  for (int64_t b = 0; b < B; b++) {
    if (n->iparam[GP_MAX]) {
      const int32_t *arg = (const int32_t *)n->aux + b * C;
      for (int64_t c = 0; c < C; c++)
        if (arg[c] >= 0) dx[(b * T + arg[c]) * C + c] += dy[b * C + c];
    } else {
      const float *w = (const float *)n->aux + b * T;
      for (int64_t t = 0; t < T; t++)
        for (int64_t c = 0; c < C; c++) dx[(b * T + t) * C + c] += w[t] * dy[b * C + c];
    }
  }
}

const damo_op_def damo_op_def_global_pool1d = {"global_pool1d", 2, global_pool1d_infer, global_pool1d_forward,
                                               global_pool1d_backward, 0};

static damo_node *global_pool1d(damo_graph *g, damo_node *x, damo_node *mask, int max) {
  damo_node *in[2] = {x, mask};
  int p[1] = {max};
  return damo_graph_add_node(g, DAMO_OP_GLOBAL_POOL1D, mask ? 2 : 1, in, p, 1, NULL, 0);
}

damo_node *damo_global_avg_pool1d(damo_graph *g, damo_node *x, damo_node *mask) { return global_pool1d(g, x, mask, 0); }
damo_node *damo_global_max_pool1d(damo_graph *g, damo_node *x, damo_node *mask) { return global_pool1d(g, x, mask, 1); }
