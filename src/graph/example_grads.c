/* example_grads.c - what DP-SGD needs from backward: each example's gradient norm and a
 * backward whose loss gradient is weighted per example.
 *
 * DP-SGD clips every example's gradient to a norm C. The clipped sum is sum_i c_i g_i with
 * c_i = min(1, C / |g_i|), which is the gradient of sum_i c_i loss_i: so one backward with the
 * loss gradient of example i scaled by c_i gives it, once the norms are known. The norms
 * come from a first backward pass (the norm pass) in which the ops that hold weights compute
 * per-example norms of their weight gradients from what backward has anyway (x and dz of a
 * dense layer, the patches of a convolution, a recurrent layer's gate gradients) instead of
 * the gradients themselves. The graph is planned with keep_forward so the second pass finds
 * the forward values the first one read. */
#include "graph/graph.h"

#include <math.h>
#include <stdio.h>

void damo_graph_keep_forward(damo_graph *g) {
  if (g) g->keep_forward = 1;
}

void damo_graph_set_example_weights(damo_graph *g, const float *weights) {
  if (g) g->example_weights = weights;
}

double damo_sum_squares(const float *x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  return s;
}

void *damo_graph_scratch(damo_graph *g, size_t bytes) {
  if (bytes <= g->scratch_bytes) return g->scratch;
  void *p = damo_alloc(bytes);
  if (!p) {
    if (g->norm_status == DAMO_OK)
      g->norm_status = damo_error(DAMO_ERR_NOMEM, "example norms: out of memory for a %zu-byte scratch buffer", bytes);
    return NULL;
  }
  damo_free(g->scratch);
  g->scratch = p;
  g->scratch_bytes = bytes;
  return p;
}

/* The param under a weight input: the input itself, what a chain of reshapes reads, or the
 * table of an embedding of fixed ids (position embeddings, which an add broadcasts over the
 * batch; its caller measures the table's rows). */
static const damo_node *weight_root(const damo_node *w) {
  while (w && w->op == DAMO_OP_RESHAPE) w = w->in[0];
  if (w && w->op == DAMO_OP_EMBEDDING && !w->batched && !w->in[0]->batched) w = w->in[1];
  return w && w->op == DAMO_OP_PARAM ? w : NULL;
}

void damo_example_norm_add(damo_graph *g, const damo_node *weight, int64_t example, double sq) {
  const damo_node *p = weight_root(weight);
  if (!p || !g->example_acc || example < 0 || example >= g->batch) return; /* refused before the pass */
  g->example_acc[(int64_t)p->id * g->built_batch + example] += (float)sqrt(sq > 0 ? sq : 0);
}

/* Every op that processes examples and takes a weight must know its weights' per-example
 * norms; a loss's inputs must be read by the loss alone (their gradient rows are scaled). */
static damo_status check_supported(const damo_graph *g) {
  for (int k = 0; k < g->n_order; k++) {
    const damo_node *n = g->nodes[g->order[k]];
    if (!n->in_backward || !n->batched) continue;
    const damo_op_def *def = damo_op_table[n->op];
    for (int j = 0; j < n->n_in; j++) {
      const damo_node *w = n->in[j];
      if (!w->in_backward || w->batched) continue;
      if (n->op == DAMO_OP_BATCH_NORM)
        return damo_error(DAMO_ERR_UNSUPPORTED, "node '%s' (batch_norm) mixes the examples of a batch, so an example's "
                          "gradient is not its own; DP-SGD needs a model without BatchNormalization (LayerNormalization "
                          "normalises each example alone)", n->name);
      if (!(def->flags & DAMO_OPF_EXAMPLE_NORMS))
        return damo_error(DAMO_ERR_UNSUPPORTED, "node '%s' (op %s) takes the weight '%s' but has no per-example gradient "
                          "norm rule, so DP-SGD cannot clip its examples", n->name, def->name, w->name);
      if (!weight_root(w))
        return damo_error(DAMO_ERR_UNSUPPORTED, "node '%s' (op %s) takes '%s', computed from weights (not a param or a "
                          "reshape of one): DP-SGD cannot attribute its per-example norms", n->name, def->name, w->name);
    }
  }
  if (!(damo_op_table[g->loss->op]->flags & DAMO_OPF_LOSS))
    return damo_error(DAMO_ERR_UNSUPPORTED, "the loss '%s' (op %s) is not a mean over examples whose gradient DP-SGD "
                      "can weight per example", g->loss->name, damo_op_table[g->loss->op]->name);
  for (int k = 0; k < g->n_order; k++) { /* a loss's input: no other consumer */
    const damo_node *n = g->nodes[g->order[k]];
    const unsigned flags = damo_op_table[n->op]->flags;
    if (!(flags & DAMO_OPF_LOSS)) continue;
    for (int j = 0; j < n->n_in; j++) {
      const damo_node *x = n->in[j];
      if (!x->in_backward) continue;
      if (!x->batched && (flags & DAMO_OPF_EXAMPLE_NORMS) && weight_root(x)) continue; /* it measures its weights */
      if (!x->batched)
        return damo_error(DAMO_ERR_UNSUPPORTED, "loss '%s' takes the weight '%s' directly: DP-SGD cannot clip it per "
                          "example", n->name, x->name);
      for (int c = 0; c < g->n_order; c++) {
        const damo_node *m = g->nodes[g->order[c]];
        for (int i = 0; m != n && i < m->n_in; i++)
          if (m->in[i] == x && m->in_backward)
            return damo_error(DAMO_ERR_UNSUPPORTED, "'%s' feeds the loss '%s' and also '%s': DP-SGD weights the loss "
                              "gradient per example at the loss, so its input must feed nothing else", x->name, n->name,
                              m->name);
      }
    }
  }
  return DAMO_OK;
}

damo_status damo_graph_example_norms(damo_graph *g, float *sq_norms) {
  if (!g || !sq_norms) return damo_error(DAMO_ERR_INVALID_ARG, "example_norms: NULL argument");
  if (!g->compiled || !g->loss) return damo_error(DAMO_ERR_STATE, "example_norms: the graph was compiled without a loss");
  if (!g->keep_forward)
    return damo_error(DAMO_ERR_STATE, "example_norms: the graph was planned without damo_graph_keep_forward, so "
                      "backward reuses the memory of the values a second pass needs");
  if (g->frozen_params) return damo_error(DAMO_ERR_STATE, "example_norms: the graph's params are frozen");
  damo_status st = check_supported(g);
  if (st != DAMO_OK) return damo_error_prefix(st, "DP-SGD: ");
  const int64_t B = g->batch, stride = g->built_batch;
  if (!g->example_acc && !(g->example_acc = calloc((size_t)(g->n_nodes * stride), sizeof(float))))
    return damo_error(DAMO_ERR_NOMEM, "example_norms: out of memory");
  memset(g->example_acc, 0, (size_t)(g->n_nodes * stride) * sizeof(float));
  const float *weights = g->example_weights;
  g->example_weights = NULL;
  g->norm_pass = 1;
  g->norm_status = DAMO_OK;
  st = damo_graph_backward(g);
  g->norm_pass = 0;
  g->example_weights = weights;
  if (st == DAMO_OK) st = g->norm_status;
  if (st != DAMO_OK) return st;
  for (int64_t i = 0; i < B; i++) {
    double sq = 0;
    for (int p = 0; p < g->n_nodes; p++)
      if (g->nodes[p]->op == DAMO_OP_PARAM) {
        const double a = g->example_acc[(int64_t)p * stride + i];
        sq += a * a;
      }
    sq_norms[i] = (float)sq;
  }
  return DAMO_OK;
}

/* After a loss's backward: its inputs' gradient rows scaled by their example's weight. */
void damo_graph_weight_loss_grads(damo_graph *g, damo_node *loss) {
  const float *w = g->example_weights;
  for (int j = 0; w && j < loss->n_in; j++) {
    damo_node *x = loss->in[j];
    if (!x->in_backward || !x->batched || !x->grad_ready) continue;
    const int64_t per = damo_node_count(x) / (g->batch > 0 ? g->batch : 1);
    for (int64_t i = 0; i < g->batch; i++)
      for (int64_t e = 0; e < per; e++) x->grad[i * per + e] *= w[i];
  }
}
