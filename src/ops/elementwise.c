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
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
    for (int64_t i = 0; i < count; i++) C[i] = ew_apply(k, A[i], B[i]);
    return DAMO_OK;
  }
  bcast bc;
  bcast_init(&bc, n);
  int64_t sa = bc.D ? bc.sa[bc.D - 1] : 0, sb = bc.D ? bc.sb[bc.D - 1] : 0;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
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

/* DP-SGD's norm pass for an add of a weight w broadcast over the batch (a bias, a position
 * embedding): example i's gradient of w is its output gradient summed over w's other
 * broadcast axes; for an embedding of fixed ids, rows of one id add into one table row. */
static void add_example_norms(damo_graph *g, const damo_node *n, const damo_node *w, const int64_t *sw) {
  const int64_t B = g->batch, count = damo_node_count(n), per = count / (B > 0 ? B : 1), size = damo_node_count(w);
  const int64_t L = n->ndim ? n->shape[n->ndim - 1] : 1, rows = per / (L > 0 ? L : 1);
  float *gw = damo_graph_scratch(g, (size_t)(2 * size) * sizeof(float));
  if (!gw) return;
  float *row = gw + size;
  const int table = w->op == DAMO_OP_EMBEDDING;
  const int32_t *ids = table ? w->in[0]->value : NULL;
  const int64_t D = table ? w->shape[w->ndim - 1] : 0, T = table ? size / D : 0;
  for (int64_t i = 0; i < B; i++) {
    memset(gw, 0, (size_t)size * sizeof *gw);
    for (int64_t r = 0; r < rows; r++) { /* the output row's offset in w, from w's strides */
      int64_t rem = i * rows + r, off = 0;
      for (int d = n->ndim - 2; d >= 0; d--) {
        off += (rem % n->shape[d]) * sw[d];
        rem /= n->shape[d];
      }
      const float *gr = n->grad + (i * rows + r) * L;
      for (int64_t e = 0; e < L; e++) gw[off + e * sw[n->ndim - 1]] += gr[e];
    }
    double sq = 0;
    if (!table) {
      sq = damo_sum_squares(gw, size);
    } else { /* one table row per distinct id: its positions' rows summed */
      for (int64_t t = 0; t < T; t++) {
        int first = 1;
        for (int64_t u = 0; u < t && first; u++) first = ids[u] != ids[t];
        if (!first) continue;
        memcpy(row, gw + t * D, (size_t)D * sizeof *row);
        for (int64_t u = t + 1; u < T; u++)
          if (ids[u] == ids[t])
            for (int64_t d = 0; d < D; d++) row[d] += gw[u * D + d];
        sq += damo_sum_squares(row, D);
      }
    }
    damo_example_norm_add(g, w, i, sq);
  }
}

static void ew_backward_kind(damo_graph *gr, damo_node *n, ew_kind k) {
  damo_node *a = n->in[0], *b = n->in[1];
  const float *A = damo_f32(a), *B = damo_f32(b), *G = n->grad;
  /* add/sub do not keep their inputs alive: read them only where the rule needs them. */
  int reads = k == EW_MUL || k == EW_DIV;
  if (gr->norm_pass && k == EW_ADD && n->batched) { /* weights get per-example norms, not gradients */
    bcast bc;
    bcast_init(&bc, n);
    if (a->in_backward && !a->batched) add_example_norms(gr, n, a, bc.sa);
    if (b->in_backward && !b->batched) add_example_norms(gr, n, b, bc.sb);
  }
  const int norms_only = gr->norm_pass && k == EW_ADD && n->batched;
  float *dA = a->in_backward && !(norms_only && !a->batched) ? damo_node_grad_acc(a) : NULL;
  float *dB = b->in_backward && !(norms_only && !b->batched) ? damo_node_grad_acc(b) : NULL;
  int64_t count = damo_node_count(n);
  int same = damo_node_count(a) == count && damo_node_count(b) == count;
  if (same) {
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
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
  static void lower##_backward(damo_graph *g, damo_node *n) { ew_backward_kind(g, n, KIND); }      \
  const damo_op_def damo_op_def_##lower = {#lower, 2, ew_infer, lower##_forward, lower##_backward, FLAGS}; \
  damo_node *damo_##lower(damo_graph *g, damo_node *a, damo_node *b) {                            \
    damo_node *in[2] = {a, b};                                                                    \
    return damo_graph_add_node(g, DAMO_OP_##KIND##_NODE, 2, in, NULL, 0, NULL, 0);                \
  }

#define DAMO_OP_EW_ADD_NODE DAMO_OP_ADD
#define DAMO_OP_EW_SUB_NODE DAMO_OP_SUB
#define DAMO_OP_EW_MUL_NODE DAMO_OP_MUL
#define DAMO_OP_EW_DIV_NODE DAMO_OP_DIV
EW_OP(add, EW_ADD, DAMO_OPF_EXAMPLE_NORMS)
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
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
  for (int64_t i = 0; i < count; i++) y[i] = x[i] * f;
  return DAMO_OK;
}

static void scale_backward(damo_graph *g, damo_node *n) {
  (void)g;
  if (!n->in[0]->in_backward) return;
  float *dx = damo_node_grad_acc(n->in[0]), f = n->fparam[0];
  const float *dy = n->grad;
  int64_t count = damo_node_count(n);
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
  for (int64_t i = 0; i < count; i++) dx[i] += dy[i] * f;
}

const damo_op_def damo_op_def_scale = {"scale", 1, scale_infer, scale_forward, scale_backward, 0};

damo_node *damo_scale_by(damo_graph *g, damo_node *a, float factor) {
  return damo_graph_add_node(g, DAMO_OP_SCALE, 1, &a, NULL, 0, &factor, 1);
}
