/* elementwise.c - add, sub, mul, div with NumPy broadcasting, and scaling by a constant.
 *
 * Shapes are aligned from the right; an axis of size 1 (or a missing one) is repeated.
 * Kernels walk the output row by row (the last axis), with each operand's stride 0 along
 * broadcast axes, so the bias-add of a Dense layer runs as a plain vector loop. Backward
 * accumulates into a broadcast operand across the repeated positions (a reduction), kept
 * sequential in that case so results do not depend on the thread count. */
#include "ops/ops.h"

typedef enum { EW_ADD, EW_SUB, EW_MUL, EW_DIV } ew_kind;

typedef struct bcast {
  int D;
  int64_t shape[DAMO_MAX_DIMS];
  int64_t sa[DAMO_MAX_DIMS], sb[DAMO_MAX_DIMS]; /* element strides, 0 on broadcast axes */
  int64_t rows, L;                              /* output = rows x L (L: last axis) */
} bcast;

static void strides_for(const damo_node *x, int D, const int64_t *out_shape, int64_t *s) {
  int64_t stride = 1;
  for (int i = D - 1; i >= 0; i--) {
    int xi = i - (D - x->ndim);
    int64_t dim = xi >= 0 ? x->shape[xi] : 1;
    s[i] = (dim == 1 && out_shape[i] != 1) ? 0 : stride;
    stride *= dim;
  }
}

static void bcast_init(bcast *bc, const damo_node *n) {
  bc->D = n->ndim;
  memcpy(bc->shape, n->shape, sizeof bc->shape);
  strides_for(n->in[0], bc->D, bc->shape, bc->sa);
  strides_for(n->in[1], bc->D, bc->shape, bc->sb);
  bc->L = bc->D ? bc->shape[bc->D - 1] : 1;
  bc->rows = bc->L ? damo_node_count(n) / bc->L : 0;
}

/* Offsets of a and b at the start of output row r. */
static void row_offsets(const bcast *bc, int64_t r, int64_t *oa, int64_t *ob) {
  int64_t a = 0, b = 0;
  for (int i = bc->D - 2; i >= 0; i--) {
    int64_t idx = r % bc->shape[i];
    r /= bc->shape[i];
    a += idx * bc->sa[i];
    b += idx * bc->sb[i];
  }
  *oa = a;
  *ob = b;
}

static damo_status ew_infer(damo_node *n) {
  const damo_node *a = n->in[0], *b = n->in[1];
  if (a->dtype != DAMO_F32 || b->dtype != DAMO_F32) return damo_shape_error(n, "operands must be f32", a, b);
  int D = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int i = 0; i < D; i++) {
    int ai = i - (D - a->ndim), bi = i - (D - b->ndim);
    int64_t da = ai >= 0 ? a->shape[ai] : 1, db = bi >= 0 ? b->shape[bi] : 1;
    if (da != db && da != 1 && db != 1) return damo_shape_error(n, "shapes do not broadcast", a, b);
    n->shape[i] = da == 1 ? db : da;
  }
  n->ndim = D;
  n->dtype = DAMO_F32;
  return DAMO_OK;
}

static inline float ew_apply(ew_kind k, float x, float y) {
  switch (k) {
  case EW_ADD: return x + y;
  case EW_SUB: return x - y;
  case EW_MUL: return x * y;
  default: return x / y;
  }
}

static damo_status ew_forward_kind(damo_node *n, ew_kind k) {
  const float *A = damo_f32(n->in[0]), *B = damo_f32(n->in[1]);
  float *C = damo_f32(n);
  int64_t count = damo_node_count(n);
  if (damo_node_count(n->in[0]) == count && damo_node_count(n->in[1]) == count) {
#pragma omp parallel for schedule(static) if (count > DAMO_PARALLEL_MIN) num_threads(damo_threads())
    for (int64_t i = 0; i < count; i++) C[i] = ew_apply(k, A[i], B[i]);
    return DAMO_OK;
  }
  bcast bc;
  bcast_init(&bc, n);
  int64_t sa = bc.D ? bc.sa[bc.D - 1] : 0, sb = bc.D ? bc.sb[bc.D - 1] : 0;
#pragma omp parallel for schedule(static) if (count > DAMO_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t r = 0; r < bc.rows; r++) {
    int64_t oa, ob;
    row_offsets(&bc, r, &oa, &ob);
    const float *a = A + oa, *b = B + ob;
    float *c = C + r * bc.L;
    switch (k) { /* one loop per kind so each vectorises */
    case EW_ADD: for (int64_t i = 0; i < bc.L; i++) c[i] = a[i * sa] + b[i * sb]; break;
    case EW_SUB: for (int64_t i = 0; i < bc.L; i++) c[i] = a[i * sa] - b[i * sb]; break;
    case EW_MUL: for (int64_t i = 0; i < bc.L; i++) c[i] = a[i * sa] * b[i * sb]; break;
    case EW_DIV: for (int64_t i = 0; i < bc.L; i++) c[i] = a[i * sa] / b[i * sb]; break;
    }
  }
  return DAMO_OK;
}

/* d(out)/d(a) and d(out)/d(b) times the output gradient g, at one position. */
static inline float ew_grad_a(ew_kind k, float g, float x, float y) {
  (void)x;
  switch (k) {
  case EW_ADD:
  case EW_SUB: return g;
  case EW_MUL: return g * y;
  default: return g / y;
  }
}
static inline float ew_grad_b(ew_kind k, float g, float x, float y) {
  switch (k) {
  case EW_ADD: return g;
  case EW_SUB: return -g;
  case EW_MUL: return g * x;
  default: return -g * x / (y * y);
  }
}

static void ew_backward_kind(damo_node *n, ew_kind k) {
  damo_node *a = n->in[0], *b = n->in[1];
  const float *A = damo_f32(a), *B = damo_f32(b), *G = n->grad;
  /* add/sub do not keep their inputs alive: read them only where the rule needs them. */
  int reads = k == EW_MUL || k == EW_DIV;
  float *dA = a->in_backward ? damo_node_grad_acc(a) : NULL;
  float *dB = b->in_backward ? damo_node_grad_acc(b) : NULL;
  int64_t count = damo_node_count(n);
  int same = damo_node_count(a) == count && damo_node_count(b) == count;
  if (same) {
#pragma omp parallel for schedule(static) if (count > DAMO_PARALLEL_MIN) num_threads(damo_threads())
    for (int64_t i = 0; i < count; i++) {
      float x = reads ? A[i] : 0, y = reads ? B[i] : 0;
      if (dA) dA[i] += ew_grad_a(k, G[i], x, y);
      if (dB) dB[i] += ew_grad_b(k, G[i], x, y);
    }
    return;
  }
  bcast bc;
  bcast_init(&bc, n);
  int64_t sa = bc.D ? bc.sa[bc.D - 1] : 0, sb = bc.D ? bc.sb[bc.D - 1] : 0;
  for (int64_t r = 0; r < bc.rows; r++) {
    int64_t oa, ob;
    row_offsets(&bc, r, &oa, &ob);
    const float *g = G + r * bc.L;
    for (int64_t i = 0; i < bc.L; i++) {
      float x = reads ? A[oa + i * sa] : 0, y = reads ? B[ob + i * sb] : 0;
      if (dA) dA[oa + i * sa] += ew_grad_a(k, g[i], x, y);
      if (dB) dB[ob + i * sb] += ew_grad_b(k, g[i], x, y);
    }
  }
}

#define EW_OP(lower, KIND, FLAGS)                                                                 \
  static damo_status lower##_forward(damo_graph *g, damo_node *n) {                               \
    (void)g;                                                                                      \
    return ew_forward_kind(n, KIND);                                                              \
  }                                                                                               \
  static void lower##_backward(damo_graph *g, damo_node *n) {                                     \
    (void)g;                                                                                      \
    ew_backward_kind(n, KIND);                                                                    \
  }                                                                                               \
  const damo_op_def damo_op_def_##lower = {#lower, 2, ew_infer, lower##_forward, lower##_backward, FLAGS}; \
  damo_node *damo_##lower(damo_graph *g, damo_node *a, damo_node *b) {                            \
    damo_node *in[2] = {a, b};                                                                    \
    return damo_graph_add_node(g, DAMO_OP_##KIND##_NODE, 2, in, NULL, 0, NULL, 0);                \
  }

#define DAMO_OP_EW_ADD_NODE DAMO_OP_ADD
#define DAMO_OP_EW_SUB_NODE DAMO_OP_SUB
#define DAMO_OP_EW_MUL_NODE DAMO_OP_MUL
#define DAMO_OP_EW_DIV_NODE DAMO_OP_DIV
EW_OP(add, EW_ADD, 0)
EW_OP(sub, EW_SUB, 0)
EW_OP(mul, EW_MUL, DAMO_OPF_BWD_INPUTS)
EW_OP(div, EW_DIV, DAMO_OPF_BWD_INPUTS)

/* ------------------------------------------------------------------ scale by a constant */

static damo_status scale_infer(damo_node *n) {
  const damo_node *a = n->in[0];
  if (a->dtype != DAMO_F32) return damo_shape_error(n, "operand must be f32", a, NULL);
  n->ndim = a->ndim;
  memcpy(n->shape, a->shape, sizeof n->shape);
  return DAMO_OK;
}

static damo_status scale_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *x = damo_f32(n->in[0]);
  float *y = damo_f32(n), f = n->fparam[0];
  int64_t count = damo_node_count(n);
#pragma omp parallel for schedule(static) if (count > DAMO_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t i = 0; i < count; i++) y[i] = x[i] * f;
  return DAMO_OK;
}

static void scale_backward(damo_graph *g, damo_node *n) {
  (void)g;
  if (!n->in[0]->in_backward) return;
  float *dx = damo_node_grad_acc(n->in[0]), f = n->fparam[0];
  const float *dy = n->grad;
  int64_t count = damo_node_count(n);
#pragma omp parallel for schedule(static) if (count > DAMO_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * f;
}

const damo_op_def damo_op_def_scale = {"scale", 1, scale_infer, scale_forward, scale_backward, 0};

damo_node *damo_scale_by(damo_graph *g, damo_node *a, float factor) {
  return damo_graph_add_node(g, DAMO_OP_SCALE, 1, &a, NULL, 0, &factor, 1);
}
