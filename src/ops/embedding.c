/* embedding.c - table lookup: ids (B, T) i32 and a table (V, D) give (B, T, D), row ids[b,t]
 * of the table. Backward adds each output row's gradient into its table row (rows in order,
 * one thread, so repeated ids sum the same way every run). An id outside [0, V) fails the
 * forward with its value and position. */
#include "ops/ops.h"

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

static void embedding_backward(damo_graph *g, damo_node *n) {
  (void)g;
  if (!n->in[1]->in_backward) return;
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
                                           DAMO_OPF_BWD_INPUTS};

damo_node *damo_embedding(damo_graph *g, damo_node *ids, damo_node *table) {
  damo_node *in[2] = {ids, table};
  return damo_graph_add_node(g, DAMO_OP_EMBEDDING, 2, in, NULL, 0, NULL, 0);
}
