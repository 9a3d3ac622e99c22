/* graph.c - building, running and differentiating define-then-run graphs.
 *
 * Builders append nodes in topological order (a node's inputs always exist before it), so
 * creation order is a valid execution order. Compiling marks what the outputs and the loss
 * need, plans every intermediate buffer into one arena (see plan.c), and from then on a
 * training step is: bind inputs, forward in order, backward in reverse order, each node's
 * kernel taken from the graph's backend (backend.h). */
#include "graph/backend.h"
#include "graph/graph.h"
#include "graph/profile.h"

#include <math.h>
#include <stdio.h>

damo_graph *damo_graph_new(uint64_t seed) {
  damo_graph *g = calloc(1, sizeof *g);
  if (!g) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for a graph");
    return NULL;
  }
  damo_rng_seed(&g->rng, seed);
  g->backend = damo_backend_cpu();
  return g;
}

void damo_graph_free(damo_graph *g) {
  if (!g) return;
  const damo_backend *b = g->backend;
  for (int i = 0; i < g->n_nodes; i++) {
    damo_node *n = g->nodes[i];
    if (n->constant && n->value != n->constant->data) b->free(b, n->value); /* its copy on the device */
    damo_tensor_free(n->constant);
    free(n);
  }
  free(g->nodes);
  free(g->order);
  free(g->release_at);
  free(g->release);
  free(g->recompute_from);
  free(g->example_acc);
  damo_free(g->scratch);
  if (g->arena) b->free(b, g->arena);
  free(g);
}

damo_status damo_graph_status(const damo_graph *g) {
  if (!g) return DAMO_ERR_INVALID_ARG;
  return g->status;
}

/* Remembers the first builder error so a chain of builders can be checked once at the end. */
static damo_node *builder_fail(damo_graph *g, damo_status st) {
  if (g->status == DAMO_OK) {
    g->status = st;
    snprintf(g->status_msg, sizeof g->status_msg, "%s", damo_last_error());
  } else {
    /* Keep reporting the first error, which is the one that explains the rest. */
    damo_error(g->status, "%s", g->status_msg);
  }
  return NULL;
}

static damo_node *node_alloc(damo_graph *g, damo_op op) {
  if (g->compiled) {
    damo_error(DAMO_ERR_STATE, "graph is already compiled: build every node before damo_graph_compile");
    return builder_fail(g, DAMO_ERR_STATE);
  }
  if (g->n_nodes == g->cap_nodes) {
    int cap = g->cap_nodes ? g->cap_nodes * 2 : 64;
    damo_node **nodes = realloc(g->nodes, (size_t)cap * sizeof *nodes);
    if (!nodes) {
      damo_error(DAMO_ERR_NOMEM, "out of memory growing a graph to %d nodes", cap);
      return builder_fail(g, DAMO_ERR_NOMEM);
    }
    g->nodes = nodes;
    g->cap_nodes = cap;
  }
  damo_node *n = calloc(1, sizeof *n);
  if (!n) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for a graph node");
    return builder_fail(g, DAMO_ERR_NOMEM);
  }
  n->id = g->n_nodes;
  n->op = op;
  n->dtype = DAMO_F32;
  n->segment = g->open_segment;
  g->nodes[g->n_nodes++] = n;
  return n;
}

void damo_graph_recompute_begin(damo_graph *g) {
  if (!g || g->status != DAMO_OK) return;
  if (g->open_segment) {
    damo_error(DAMO_ERR_STATE, "recompute_begin: segment %d is still open (segments do not nest)", g->open_segment);
    builder_fail(g, DAMO_ERR_STATE);
    return;
  }
  g->open_segment = ++g->n_segments;
}

void damo_graph_recompute_end(damo_graph *g) {
  if (g) g->open_segment = 0;
}

static void default_name(damo_node *n) {
  snprintf(n->name, sizeof n->name, "%s_%d", damo_op_table[n->op]->name, n->id);
}

damo_node *damo_graph_add_node(damo_graph *g, damo_op op, int n_in, damo_node *const *in, const int *iparam,
                               int n_iparam, const float *fparam, int n_fparam) {
  return damo_graph_add_node_data(g, op, n_in, in, iparam, n_iparam, fparam, n_fparam, NULL);
}

void damo_graph_move_after(damo_graph *g, damo_node *n, const damo_node *after) {
  if (!g || g->compiled || !n || !after || n->id <= after->id + 1 || g->nodes[n->id] != n) return;
  for (int i = n->id; i > after->id + 1; i--) {
    g->nodes[i] = g->nodes[i - 1];
    g->nodes[i]->id = i;
  }
  g->nodes[after->id + 1] = n;
  n->id = after->id + 1;
}

damo_node *damo_graph_add_node_data(damo_graph *g, damo_op op, int n_in, damo_node *const *in, const int *iparam,
                                    int n_iparam, const float *fparam, int n_fparam, const void *op_data) {
  if (!g) return NULL;
  if (g->status != DAMO_OK) return builder_fail(g, g->status);
  for (int i = 0; i < n_in; i++) {
    if (!in[i]) {
      damo_error(DAMO_ERR_INVALID_ARG, "%s: input %d is NULL", damo_op_table[op]->name, i);
      return builder_fail(g, DAMO_ERR_INVALID_ARG);
    }
  }
  damo_node *n = node_alloc(g, op);
  if (!n) return NULL;
  n->n_in = n_in;
  for (int i = 0; i < n_in; i++) {
    n->in[i] = in[i];
    if (in[i]->requires_grad) n->requires_grad = 1;
    if (in[i]->batched) n->batched = 1; /* infer may clear it (reductions over the batch) */
  }
  if (iparam) memcpy(n->iparam, iparam, (size_t)n_iparam * sizeof *iparam);
  if (fparam) memcpy(n->fparam, fparam, (size_t)n_fparam * sizeof *fparam);
  n->op_data = op_data;
  default_name(n);
  damo_status st = damo_op_table[op]->infer(n);
  if (st != DAMO_OK) {
    g->nodes[--g->n_nodes] = NULL;
    free(n);
    return builder_fail(g, st);
  }
  return n;
}

damo_status damo_shape_error(const damo_node *n, const char *what, const damo_node *a, const damo_node *b) {
  char sa[96], sb[96];
  damo_shape_string(a->ndim, a->shape, sa, sizeof sa);
  if (b) damo_shape_string(b->ndim, b->shape, sb, sizeof sb);
  return damo_error(DAMO_ERR_SHAPE, "%s: %s: got %s ('%s')%s%s%s%s%s", damo_op_table[n->op]->name, what, sa, a->name,
                    b ? " and " : "", b ? sb : "", b ? " ('" : "", b ? b->name : "", b ? "')" : "");
}

damo_node *damo_input(damo_graph *g, const char *name, damo_dtype dtype, int ndim, const int64_t *shape) {
  if (!g) return NULL;
  if (g->status != DAMO_OK) return builder_fail(g, g->status);
  if (ndim < 1 || ndim > DAMO_MAX_DIMS) {
    damo_error(DAMO_ERR_SHAPE, "input '%s': rank %d is outside 1..%d (axis 0 is the batch)", name ? name : "?", ndim,
               DAMO_MAX_DIMS);
    return builder_fail(g, DAMO_ERR_SHAPE);
  }
  for (int i = 0; i < ndim; i++) {
    if (shape[i] <= 0) {
      damo_error(DAMO_ERR_SHAPE, "input '%s': dimension %d is %lld, expected > 0", name ? name : "?", i,
                 (long long)shape[i]);
      return builder_fail(g, DAMO_ERR_SHAPE);
    }
  }
  damo_node *n = node_alloc(g, DAMO_OP_INPUT);
  if (!n) return NULL;
  n->dtype = dtype;
  n->ndim = ndim;
  memcpy(n->shape, shape, (size_t)ndim * sizeof *shape);
  n->batched = 1;
  if (g->built_batch == 0 || shape[0] > g->built_batch) g->built_batch = shape[0];
  snprintf(n->name, sizeof n->name, "%s", name ? name : "input");
  return n;
}

damo_node *damo_param(damo_graph *g, const char *name, damo_tensor *value, damo_tensor *grad) {
  if (!g) return NULL;
  if (g->status != DAMO_OK) return builder_fail(g, g->status);
  if (!value || value->dtype != DAMO_F32) {
    damo_error(DAMO_ERR_INVALID_ARG, "param '%s': value must be an f32 tensor", name ? name : "?");
    return builder_fail(g, DAMO_ERR_INVALID_ARG);
  }
  if (grad && (grad->dtype != DAMO_F32 || damo_tensor_numel(grad) != damo_tensor_numel(value))) {
    damo_error(DAMO_ERR_SHAPE, "param '%s': gradient tensor does not match the value's shape", name ? name : "?");
    return builder_fail(g, DAMO_ERR_SHAPE);
  }
  char what[DAMO_NAME_MAX + 32];
  snprintf(what, sizeof what, "param '%s' value", name ? name : "?");
  damo_status st = damo_backend_check_tensor(g->backend, value, what);
  snprintf(what, sizeof what, "param '%s' gradient", name ? name : "?");
  if (st == DAMO_OK) st = damo_backend_check_tensor(g->backend, grad, what);
  if (st != DAMO_OK) return builder_fail(g, st);
  /* A layer called twice (shared weights) asks again for the same storage: it is one node,
   * so both uses' gradients sum into it (two nodes over one gradient would each zero it). */
  for (int i = 0; i < g->n_nodes; i++) {
    damo_node *seen = g->nodes[i];
    if (seen->op == DAMO_OP_PARAM && seen->param_value && seen->param_value->data == value->data) {
      if (damo_tensor_numel(seen->param_value) == damo_tensor_numel(value) && seen->param_grad == grad) return seen;
      damo_error(DAMO_ERR_INVALID_ARG, "param '%s': its storage is already param '%s' of another shape or gradient",
                 name ? name : "?", seen->name);
      return builder_fail(g, DAMO_ERR_INVALID_ARG);
    }
  }
  damo_node *n = node_alloc(g, DAMO_OP_PARAM);
  if (!n) return NULL;
  n->ndim = value->ndim;
  memcpy(n->shape, value->shape, sizeof n->shape);
  n->param_value = value;
  n->param_grad = grad;
  n->value = value->data;
  n->requires_grad = grad != NULL;
  snprintf(n->name, sizeof n->name, "%s", name ? name : "param");
  return n;
}

damo_node *damo_constant(damo_graph *g, const damo_tensor *value) {
  if (!g) return NULL;
  if (g->status != DAMO_OK) return builder_fail(g, g->status);
  damo_tensor *copy = value ? damo_tensor_clone(value) : NULL;
  if (!copy) {
    if (!value) damo_error(DAMO_ERR_INVALID_ARG, "constant: NULL tensor");
    return builder_fail(g, value ? DAMO_ERR_NOMEM : DAMO_ERR_INVALID_ARG);
  }
  damo_node *n = node_alloc(g, DAMO_OP_CONSTANT);
  if (!n) {
    damo_tensor_free(copy);
    return NULL;
  }
  n->dtype = copy->dtype;
  n->ndim = copy->ndim;
  memcpy(n->shape, copy->shape, sizeof n->shape);
  n->constant = copy;
  n->value = copy->data;
  default_name(n);
  return n;
}

/* ------------------------------------------------------------------ running */

damo_status damo_graph_set_batch(damo_graph *g, int64_t batch) {
  if (!g || !g->compiled) return damo_error(DAMO_ERR_STATE, "set_batch: graph is not compiled");
  if (batch < 1 || batch > g->built_batch)
    return damo_error(DAMO_ERR_INVALID_ARG, "set_batch: batch %lld is outside 1..%lld (the size the graph was built for)",
                      (long long)batch, (long long)g->built_batch);
  if (batch == g->batch) return DAMO_OK;
  g->batch = batch;
  for (int k = 0; k < g->n_order; k++) {
    damo_node *n = g->nodes[g->order[k]];
    if (n->op == DAMO_OP_INPUT) {
      n->shape[0] = batch;
    } else if (n->op != DAMO_OP_PARAM && n->op != DAMO_OP_CONSTANT) {
      damo_status st = damo_op_table[n->op]->infer(n);
      if (st != DAMO_OK) return st; /* cannot happen for shapes that inferred at the built size */
    }
  }
  return DAMO_OK;
}

damo_status damo_graph_bind(damo_graph *g, damo_node *input, const void *data) {
  if (!g || !input || input->op != DAMO_OP_INPUT)
    return damo_error(DAMO_ERR_INVALID_ARG, "bind: node is not an input of this graph");
  input->value = (void *)data;
  return DAMO_OK;
}

damo_status damo_graph_set_backend(damo_graph *g, const damo_backend *b) {
  if (!g || !b) return damo_error(DAMO_ERR_INVALID_ARG, "set_backend: NULL graph or backend");
  if (g->compiled)
    return damo_error(DAMO_ERR_STATE, "set_backend: the graph is compiled on backend '%s'; choose the backend before "
                      "damo_graph_compile", g->backend->name);
  for (int i = 0; i < g->n_nodes; i++) {
    const damo_node *n = g->nodes[i];
    if (n->op != DAMO_OP_PARAM) continue;
    char what[DAMO_NAME_MAX + 32];
    snprintf(what, sizeof what, "param '%s' value", n->name);
    damo_status st = damo_backend_check_tensor(b, n->param_value, what);
    snprintf(what, sizeof what, "param '%s' gradient", n->name);
    if (st == DAMO_OK) st = damo_backend_check_tensor(b, n->param_grad, what);
    if (st != DAMO_OK) return damo_error_prefix(st, "set_backend '%s': ", b->name);
  }
  g->backend = b;
  return DAMO_OK;
}

const damo_backend *damo_graph_backend(const damo_graph *g) { return g ? g->backend : NULL; }

damo_status damo_graph_read(const damo_graph *g, const damo_node *n, int64_t first, int64_t count, void *dst) {
  if (!g || !n || (!dst && count)) return damo_error(DAMO_ERR_INVALID_ARG, "graph read: NULL argument");
  if (first < 0 || count < 0 || first + count > damo_node_count(n))
    return damo_error(DAMO_ERR_INVALID_ARG, "graph read: values [%lld, %lld) are outside node '%s' (%lld values)",
                      (long long)first, (long long)(first + count), n->name, (long long)damo_node_count(n));
  if (!n->value) return damo_error(DAMO_ERR_STATE, "graph read: node '%s' has no value (not compiled or not bound)", n->name);
  const size_t es = damo_dtype_size(n->dtype);
  return g->backend->to_host(g->backend, dst, (const char *)n->value + (size_t)first * es, (size_t)count * es);
}

damo_status damo_graph_forward_node(damo_graph *g, damo_node *n) {
  if (n->op == DAMO_OP_INPUT || n->op == DAMO_OP_PARAM || n->op == DAMO_OP_CONSTANT) return DAMO_OK;
  return g->backend->kernels[n->op].forward(g, n);
}

damo_status damo_graph_forward(damo_graph *g, int training) {
  if (!g || !g->compiled) return damo_error(DAMO_ERR_STATE, "forward: graph is not compiled");
  g->training = training;
  const damo_kernel *kernels = g->backend->kernels;
  for (int k = 0; k < g->n_order; k++) {
    damo_node *n = g->nodes[g->order[k]];
    if (n->op == DAMO_OP_INPUT) {
      if (!n->value) return damo_error(DAMO_ERR_STATE, "forward: input '%s' is not bound to data", n->name);
      continue;
    }
    if (n->op == DAMO_OP_PARAM || n->op == DAMO_OP_CONSTANT) continue;
    const double t0 = damo_profile_on ? damo_now_seconds() : 0.0;
    damo_status st = kernels[n->op].forward(g, n);
    if (damo_profile_on) damo_profile_record(n->op, 0, damo_now_seconds() - t0);
    if (st != DAMO_OK) return damo_error_prefix(st, "node '%s': ", n->name);
  }
  return DAMO_OK;
}

float *damo_node_grad_acc(damo_node *n) {
  if (!n->grad_ready) {
    memset(n->grad, 0, (size_t)damo_node_count(n) * sizeof(float));
    n->grad_ready = 1;
  }
  return n->grad;
}

float *damo_node_grad_out(damo_node *n, float *beta) {
  *beta = n->grad_ready ? 1.0f : 0.0f;
  n->grad_ready = 1;
  return n->grad;
}

/* The executor's own gradient writes go through the backend (kernels use their backend's
 * helpers, on the CPU damo_node_grad_acc): zero-fill a gradient on its first use in a pass. */
static void grad_start(const damo_backend *b, damo_node *n) {
  if (n->grad_ready) return;
  b->fill(b, n->grad, 0.0f, damo_node_count(n));
  n->grad_ready = 1;
}

void damo_graph_set_sync_batchnorm(damo_graph *g, damo_dist *d) {
  if (g) g->sync_dist = damo_dist_size(d) > 1 ? d : NULL;
}

void damo_graph_set_grad_ready(damo_graph *g, damo_grad_ready_fn fn, void *ctx) {
  if (!g) return;
  g->grad_ready = fn;
  g->grad_ready_ctx = ctx;
}

/* The release lists of damo_graph_set_grad_ready: each param under the order position of its
 * first consumer in backward's reach (a param with none is released at its own position). */
static damo_status plan_release(damo_graph *g) {
  free(g->release_at);
  free(g->release);
  g->release = NULL;
  const int K = g->n_order;
  int *first = malloc((size_t)(g->n_nodes ? g->n_nodes : 1) * sizeof *first);
  g->release_at = calloc((size_t)K + 2, sizeof *g->release_at);
  if (!first || !g->release_at) {
    free(first);
    free(g->release_at);
    g->release_at = NULL;
    return damo_error(DAMO_ERR_NOMEM, "backward: out of memory planning gradient release");
  }
  for (int i = 0; i < g->n_nodes; i++) first[i] = -1;
  for (int k = 0; k < K; k++) {
    damo_node *n = g->nodes[g->order[k]];
    if (!n->in_backward || n->op == DAMO_OP_PARAM || n->op == DAMO_OP_INPUT || n->op == DAMO_OP_CONSTANT) continue;
    for (int j = 0; j < n->n_in; j++) {
      damo_node *p = n->in[j];
      if (p->op == DAMO_OP_PARAM && p->in_backward && first[p->id] < 0) first[p->id] = k;
    }
  }
  int count = 0;
  for (int k = 0; k < K; k++) {
    damo_node *n = g->nodes[g->order[k]];
    if (n->op != DAMO_OP_PARAM || !n->in_backward) continue;
    if (first[n->id] < 0) first[n->id] = k;
    g->release_at[first[n->id] + 1]++;
    count++;
  }
  for (int k = 0; k < K; k++) g->release_at[k + 1] += g->release_at[k];
  g->release = malloc((size_t)(count ? count : 1) * sizeof *g->release);
  int *fill = malloc((size_t)(K ? K : 1) * sizeof *fill);
  if (!g->release || !fill) {
    free(first);
    free(fill);
    free(g->release_at);
    g->release_at = NULL;
    return damo_error(DAMO_ERR_NOMEM, "backward: out of memory planning gradient release");
  }
  memcpy(fill, g->release_at, (size_t)K * sizeof *fill);
  for (int k = 0; k < K; k++) {
    damo_node *n = g->nodes[g->order[k]];
    if (n->op == DAMO_OP_PARAM && n->in_backward) g->release[fill[first[n->id]]++] = n->id;
  }
  free(first);
  free(fill);
  return DAMO_OK;
}

/* The forward of a segment's dropped nodes (order positions from..to) again, into the
 * buffers the plan gave them for backward. */
static damo_status recompute_segment(damo_graph *g, int from, int to) {
  const damo_kernel *kernels = g->backend->kernels;
  g->recomputing = 1;
  damo_status st = DAMO_OK;
  for (int k = from; k <= to && st == DAMO_OK; k++) {
    damo_node *n = g->nodes[g->order[k]];
    if (!n->recomputed) continue;
    const double t0 = damo_profile_on ? damo_now_seconds() : 0.0;
    st = kernels[n->op].forward(g, n);
    if (damo_profile_on) damo_profile_record(n->op, 0, damo_now_seconds() - t0);
    if (st != DAMO_OK) st = damo_error_prefix(st, "recomputing node '%s': ", n->name);
  }
  g->recomputing = 0;
  return st;
}

damo_status damo_graph_backward(damo_graph *g) {
  if (!g || !g->compiled || !g->loss) return damo_error(DAMO_ERR_STATE, "backward: graph was compiled without a loss");
  const damo_backend *b = g->backend;
  const damo_kernel *kernels = b->kernels;
  if (g->grad_ready && !g->release_at) {
    damo_status st = plan_release(g);
    if (st != DAMO_OK) return st;
  }
  for (int k = 0; k < g->n_order; k++) {
    damo_node *n = g->nodes[g->order[k]];
    n->grad_ready = 0;
    const int leaf = n->op == DAMO_OP_INPUT || n->op == DAMO_OP_PARAM || n->op == DAMO_OP_CONSTANT;
    if (n->in_backward && !leaf && (!kernels[n->op].backward || n->inference_only))
      return damo_error(DAMO_ERR_UNSUPPORTED, "backward: op '%s' (node '%s') runs inference only: no gradient flows "
                        "through it (a quantised or pruned layer; train or explain the model's f32 form)",
                        damo_op_table[n->op]->name, n->name);
  }
  damo_node *loss = g->loss;
  b->fill(b, loss->grad, 1.0f, damo_node_count(loss)); /* the seed d(loss)/d(loss) */
  loss->grad_ready = 1;
  for (int k = g->n_order - 1; k >= 0; k--) {
    damo_node *n = g->nodes[g->order[k]];
    if (g->recompute_from && g->recompute_from[k] >= 0) {
      damo_status st = recompute_segment(g, g->recompute_from[k], k);
      if (st != DAMO_OK) return st;
    }
    if (!n->in_backward) continue;
    if (n->op == DAMO_OP_INPUT || n->op == DAMO_OP_CONSTANT) continue;
    grad_start(b, n); /* a node no consumer reached contributes zeros (a param: a zero gradient) */
    if (n->op != DAMO_OP_PARAM) {
      const double t0 = damo_profile_on ? damo_now_seconds() : 0.0;
      kernels[n->op].backward(g, n);
      if (damo_profile_on) damo_profile_record(n->op, 1, damo_now_seconds() - t0);
      if (g->example_weights && (damo_op_table[n->op]->flags & DAMO_OPF_LOSS)) damo_graph_weight_loss_grads(g, n);
    }
    if (!g->grad_ready) continue;
    for (int r = g->release_at[k]; r < g->release_at[k + 1]; r++) { /* params now final */
      damo_node *p = g->nodes[g->release[r]];
      grad_start(b, p);
      g->grad_ready(g->grad_ready_ctx, p->grad, damo_node_count(p));
    }
  }
  return DAMO_OK;
}

size_t damo_graph_arena_bytes(const damo_graph *g, size_t *unplanned_bytes) {
  if (unplanned_bytes) *unplanned_bytes = g ? g->unplanned_bytes : 0;
  return g ? g->arena_bytes : 0;
}

/* ------------------------------------------------------------------ node access */

const float *damo_node_data(const damo_node *n) { return n ? (const float *)n->value : NULL; }
const float *damo_node_grad(const damo_node *n) { return n ? n->grad : NULL; }
int damo_node_ndim(const damo_node *n) { return n ? n->ndim : 0; }
const int64_t *damo_node_shape(const damo_node *n) { return n ? n->shape : NULL; }
int64_t damo_node_numel(const damo_node *n) { return n ? damo_node_count(n) : 0; }
const char *damo_node_name(const damo_node *n) { return n ? n->name : ""; }
const char *damo_node_op_name(const damo_node *n) { return n ? damo_op_table[n->op]->name : ""; }

damo_node *damo_node_set_name(damo_node *n, const char *name) {
  if (n && name) snprintf(n->name, sizeof n->name, "%s", name);
  return n;
}

void damo_node_keep_grad(damo_node *n) {
  if (n) n->keep_grad = 1;
}

int damo_graph_attention_nodes(const damo_graph *g, damo_node **out, int cap) {
  int n = 0;
  for (int i = 0; g && i < g->n_nodes; i++)
    if (g->nodes[i]->op == DAMO_OP_ATTENTION) {
      if (out && n < cap) out[n] = g->nodes[i];
      n++;
    }
  return n;
}

void damo_graph_freeze_params(damo_graph *g) {
  if (g) g->frozen_params = 1;
}
