/* dropout.c - inverted dropout: while training each element is zeroed with probability
 * `rate` and survivors are scaled by 1/(1-rate), so evaluation is the identity. Each forward
 * draws one seed from the graph's seeded generator and element i is kept when
 * damo_counter_random(seed, i) clears the rate's threshold: the same seed gives the same masks
 * run after run, whatever the thread count, and the draws run in parallel. The keep mask is
 * stored (one byte per element, in aux) for backward. */
#include "ops/ops.h"

static damo_status dropout_infer(damo_node *n) {
  const damo_node *a = n->in[0];
  if (a->dtype != DAMO_F32) return damo_shape_error(n, "operand must be f32", a, NULL);
  float rate = n->fparam[0];
  if (!(rate >= 0.0f && rate < 1.0f))
    return damo_error(DAMO_ERR_INVALID_ARG, "dropout: rate %g is outside [0, 1)", (double)rate);
  n->ndim = a->ndim;
  memcpy(n->shape, a->shape, sizeof n->shape);
  n->aux_bytes = (size_t)damo_node_count(n);
  return DAMO_OK;
}

/* Elements [first, first + count) of one forward: draws, stores and applies their mask. */
DAMO_MULTIVERSION static void dropout_chunk(const float *x, float *y, unsigned char *keep, int64_t count, uint64_t seed,
                                           uint64_t first, uint32_t threshold, float scale) {
  for (int64_t i = 0; i < count; i++) {
    const unsigned char k = damo_counter_random(seed, first + (uint64_t)i) >= threshold;
    keep[i] = k;
    y[i] = k ? x[i] * scale : 0.0f;
  }
}

static damo_status dropout_forward(damo_graph *g, damo_node *n) {
  const float *x = damo_f32(n->in[0]);
  float *y = damo_f32(n);
  unsigned char *keep = n->aux;
  int64_t count = damo_node_count(n);
  float rate = n->fparam[0];
  if (!g->training || rate == 0.0f) {
    memcpy(y, x, (size_t)count * sizeof *y);
    return DAMO_OK;
  }
  const float scale = 1.0f / (1.0f - rate);
  const uint32_t threshold = (uint32_t)((double)rate * 4294967296.0);
  const uint64_t seed = damo_node_forward_seed(g, n);
  const int64_t chunks = (count + DAMO_CHUNK - 1) / DAMO_CHUNK;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
  for (int64_t c = 0; c < chunks; c++) {
    int64_t len;
    const int64_t first = damo_chunk(count, c, &len);
    dropout_chunk(x + first, y + first, keep + first, len, seed, (uint64_t)first, threshold, scale);
  }
  return DAMO_OK;
}

static void dropout_backward(damo_graph *g, damo_node *n) {
  if (!n->in[0]->in_backward) return;
  const float *dy = n->grad;
  float *dx = damo_node_grad_acc(n->in[0]);
  const unsigned char *keep = n->aux;
  int64_t count = damo_node_count(n);
  float rate = n->fparam[0];
  if (!g->training || rate == 0.0f) {
    for (int64_t i = 0; i < count; i++) dx[i] += dy[i];
    return;
  }
  float scale = 1.0f / (1.0f - rate);
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
  for (int64_t i = 0; i < count; i++) dx[i] += keep[i] ? dy[i] * scale : 0.0f;
}

const damo_op_def damo_op_def_dropout = {"dropout", 1, dropout_infer, dropout_forward, dropout_backward, 0};

damo_node *damo_dropout(damo_graph *g, damo_node *a, float rate) {
  return damo_graph_add_node(g, DAMO_OP_DROPOUT, 1, &a, NULL, 0, &rate, 1);
}

int damo_dropout_elide(damo_graph *g, int n_keep, damo_node *const *keep) {
  int elided = 0;
  for (int j = 0; j < g->n_nodes; j++) {
    damo_node *d = g->nodes[j];
    int kept = 0;
    for (int k = 0; k < n_keep; k++) kept |= keep[k] == d;
    if (d->op != DAMO_OP_DROPOUT || kept) continue;
    for (int i = 0; i < g->n_nodes; i++)
      for (int k = 0; k < g->nodes[i]->n_in; k++)
        if (g->nodes[i]->in[k] == d) g->nodes[i]->in[k] = d->in[0];
    d->n_in = 0; /* detached: read by nothing, reading nothing (compile leaves it out) */
    elided++;
  }
  return elided;
}
