/* embedding.c - table lookup: ids (B, T) i32 and a table (V, D) give (B, T, D), row ids[b,t]
 * of the table. Backward adds each output row's gradient into its table row (rows in order,
 * one thread, so repeated ids sum the same way every run). An id outside [0, V) fails the
 * forward with its value and position. */
#include "ops/ops.h"

#include <stdlib.h>

static damo_status embedding_infer(damo_node *n) {
  const damo_node *ids = n->in[0], *table = n->in[1];
  if (ids->dtype != DAMO_I32 || ids->ndim < 1 || ids->ndim > DAMO_MAX_DIMS - 1)
    return damo_shape_error(n, "ids must be i32 of shape (batch, ...)", ids, table);
  if (table->dtype != DAMO_F32 || table->ndim != 2) return damo_shape_error(n, "table must be f32 (vocabulary, dim)", ids, table);
  n->ndim = ids->ndim + 1;
  memcpy(n->shape, ids->shape, (size_t)ids->ndim * sizeof *n->shape);
  n->shape[ids->ndim] = table->shape[1];
  n->dtype = DAMO_F32;
  return DAMO_OK;
}

static damo_status embedding_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const int32_t *ids = n->in[0]->value;
  const float *table = damo_f32(n->in[1]);
  float *y = damo_f32(n);
  int64_t count = damo_node_count(n->in[0]), V = n->in[1]->shape[0], D = n->in[1]->shape[1];
  for (int64_t i = 0; i < count; i++) {
    if (ids[i] < 0 || ids[i] >= V)
      return damo_error(DAMO_ERR_INVALID_ARG, "embedding: id %d at position %lld is outside the vocabulary [0, %lld)", ids[i],
                        (long long)i, (long long)V);
    memcpy(y + i * D, table + (int64_t)ids[i] * D, (size_t)D * sizeof(float));
  }
  return DAMO_OK;
}

typedef struct id_at {
  int32_t id, at;
} id_at;

static int by_id(const void *a, const void *b) {
  const id_at *p = a, *q = b;
  return p->id != q->id ? (p->id < q->id ? -1 : 1) : (p->at > q->at) - (p->at < q->at);
}

/* DP-SGD's norm pass: an example's table gradient has one row per distinct id, the sum of
 * the output gradients at that id's positions; sorting the positions by id finds them. */
static void embedding_example_norms(damo_graph *g, damo_node *n) {
  const int32_t *ids = n->in[0]->value;
  const float *dy = n->grad;
  const int64_t B = g->batch, T = damo_node_count(n->in[0]) / (B > 0 ? B : 1), D = n->in[1]->shape[1];
  id_at *order = damo_graph_scratch(g, (size_t)T * sizeof(id_at) + (size_t)D * sizeof(float) + 64);
  if (!order) return;
  float *row = (float *)(void *)((char *)order + ((size_t)T * sizeof(id_at) + 63) / 64 * 64);
  for (int64_t i = 0; i < B; i++) {
    for (int64_t t = 0; t < T; t++) order[t] = (id_at){ids[i * T + t], (int32_t)t};
    qsort(order, (size_t)T, sizeof *order, by_id);
    double sq = 0;
    for (int64_t a = 0; a < T;) {
      int64_t e = a + 1;
      while (e < T && order[e].id == order[a].id) e++;
      memcpy(row, dy + (i * T + order[a].at) * D, (size_t)D * sizeof(float));
      for (int64_t k = a + 1; k < e; k++)
        for (int64_t d = 0; d < D; d++) row[d] += dy[(i * T + order[k].at) * D + d];
      sq += damo_sum_squares(row, D);
      a = e;
    }
    damo_example_norm_add(g, n->in[1], i, sq);
  }
}

static void embedding_backward(damo_graph *g, damo_node *n) {
  if (damo_wants_weight_norms(g, n->in[1]) && n->in[0]->batched) embedding_example_norms(g, n);
  if (!damo_wants_weight_grad(g, n->in[1])) return;
  const int32_t *ids = n->in[0]->value;
  const float *dy = n->grad;
  float *dtable = damo_node_grad_acc(n->in[1]);
  int64_t count = damo_node_count(n->in[0]), D = n->in[1]->shape[1];
  for (int64_t i = 0; i < count; i++) {
    float *row = dtable + (int64_t)ids[i] * D;
    const float *src = dy + i * D;
    for (int64_t k = 0; k < D; k++) row[k] += src[k];
  }
}

/* Backward reads the ids (an input). */
const damo_op_def damo_op_def_embedding = {"embedding", 2, embedding_infer, embedding_forward, embedding_backward,
                                           DAMO_OPF_BWD_INPUTS | DAMO_OPF_EXAMPLE_NORMS};

damo_node *damo_embedding(damo_graph *g, damo_node *ids, damo_node *table) {
  damo_node *in[2] = {ids, table};
  return damo_graph_add_node(g, DAMO_OP_EMBEDDING, 2, in, NULL, 0, NULL, 0);
}
