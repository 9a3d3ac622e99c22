/* spdense.c - the dense op over a sparse kernel, for inference: y = act(x W + b) with W^T in
 * CSR (a pruned model's kernel, as damo_model_load builds it past the crossover sparsity),
 * through damo_sparse_dense_product. Linear or ReLU fused; no backward: fit drops the CSR
 * and the graphs holding it before any step changes the kernel. */
#include "ops/ops.h"

enum { SP_ACT = 0 }; /* iparam slot */

static const damo_csr *csr_of(const damo_node *n) { return n->op_data; }

static damo_status spdense_infer(damo_node *n) {
  const damo_node *x = n->in[0], *b = n->n_in > 1 ? n->in[1] : NULL;
  const damo_csr *w = csr_of(n);
  if (!w || x->dtype != DAMO_F32 || x->ndim < 1 || x->shape[x->ndim - 1] != w->cols)
    return damo_shape_error(n, "needs f32 x (..., K) with K the sparse kernel's rows", x, NULL);
  if (b && (b->ndim != 1 || b->shape[0] != w->rows || b->dtype != DAMO_F32))
    return damo_shape_error(n, "bias must be f32 of shape (N,)", x, b);
  if (n->iparam[SP_ACT] != DAMO_ACT_NONE && n->iparam[SP_ACT] != DAMO_ACT_RELU)
    return damo_error(DAMO_ERR_INVALID_ARG, "spdense: only linear or relu is fused (got activation %d)",
                      n->iparam[SP_ACT]);
  n->ndim = x->ndim;
  memcpy(n->shape, x->shape, sizeof n->shape);
  n->shape[n->ndim - 1] = w->rows;
  n->dtype = DAMO_F32;
  return DAMO_OK;
}

static damo_status spdense_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const damo_csr *w = csr_of(n);
  const damo_node *xn = n->in[0];
  const float *b = n->n_in > 1 ? damo_f32(n->in[1]) : NULL;
  const int64_t K = w->cols, N = w->rows, rows = damo_node_count(xn) / K;
  float *y = damo_f32(n);
  damo_status st = damo_sparse_dense_product(damo_f32(xn), rows, K, w, y, N);
  if (st != DAMO_OK) return st;
  const int relu = n->iparam[SP_ACT] == DAMO_ACT_RELU;
  for (int64_t r = 0; r < rows; r++) {
    float *row = y + r * N;
    for (int64_t j = 0; b && j < N; j++) row[j] += b[j];
    for (int64_t j = 0; relu && j < N; j++) row[j] = row[j] > 0 ? row[j] : 0.0f;
  }
  return DAMO_OK;
}

const damo_op_def damo_op_def_spdense = {"spdense", 2, spdense_infer, spdense_forward, NULL, 0}; /* inference only */

damo_node *damo_spdense_op(damo_graph *g, damo_node *x, const damo_csr *wt, damo_node *bias, damo_activation act) {
  damo_node *in[2] = {x, bias};
  int p[1] = {(int)act};
  return damo_graph_add_node_data(g, DAMO_OP_SPDENSE, bias ? 2 : 1, in, p, 1, NULL, 0, wt);
}
