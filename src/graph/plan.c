/* plan.c - compiling a graph: what to run, what to differentiate, and where every
 * intermediate buffer lives.
 *
 * A training step is a fixed schedule: forward of each needed node in order (steps
 * 0..n-1), then backward in reverse (steps n..2n-1). Each buffer (a value, a gradient, an
 * op's aux) is alive over an interval of that schedule, known at compile time from which
 * ops read what (DAMO_OPF_* flags). Buffers whose intervals do not overlap share memory:
 * they are placed largest first at the lowest offset that conflicts with no live buffer.
 * The arena is sized for the batch the graph was built with and allocated once, by the
 * graph's backend (so it is on the backend's device, as its kernels expect). */
#include "graph/backend.h"
#include "graph/graph.h"

#include <limits.h>

typedef struct planned_buffer {
  size_t bytes, offset;
  int start, end;   /* inclusive schedule steps */
  int start2, end2; /* a second interval (a recomputed value: forward, then again in backward); start2 < 0: none */
  void **slot;      /* where the address goes once the arena exists */
} planned_buffer;

static int intervals_meet(int s1, int e1, int s2, int e2) { return s1 <= e2 && s2 <= e1; }

static int buffers_meet(const planned_buffer *a, const planned_buffer *b) {
  if (intervals_meet(a->start, a->end, b->start, b->end)) return 1;
  if (a->start2 >= 0 && intervals_meet(a->start2, a->end2, b->start, b->end)) return 1;
  if (b->start2 >= 0 && intervals_meet(a->start, a->end, b->start2, b->end2)) return 1;
  return a->start2 >= 0 && b->start2 >= 0 && intervals_meet(a->start2, a->end2, b->start2, b->end2);
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static int by_size_desc(const void *a, const void *b) {
  const planned_buffer *x = a, *y = b;
  if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
  return x->start - y->start;
}

/* Greedy offset assignment; returns the arena size. */
static size_t place_buffers(planned_buffer *bufs, int n) {
  qsort(bufs, (size_t)n, sizeof *bufs, by_size_desc);
  size_t total = 0;
  int *live = malloc((size_t)(n ? n : 1) * sizeof *live);
  if (!live) return SIZE_MAX;
  for (int i = 0; i < n; i++) {
    /* Placed buffers alive at the same time as buffer i, in offset order. */
    int n_live = 0;
    for (int j = 0; j < i; j++)
      if (buffers_meet(&bufs[j], &bufs[i])) live[n_live++] = j;
    for (int a = 1; a < n_live; a++) /* insertion sort by offset: lists are short */
      for (int b = a; b > 0 && bufs[live[b - 1]].offset > bufs[live[b]].offset; b--) {
        int t = live[b];
        live[b] = live[b - 1];
        live[b - 1] = t;
      }
    size_t offset = 0;
    for (int k = 0; k < n_live; k++) {
      planned_buffer *o = &bufs[live[k]];
      if (o->offset >= offset + bufs[i].bytes) break; /* the gap before o fits */
      if (o->offset + o->bytes > offset) offset = o->offset + o->bytes;
    }
    bufs[i].offset = offset;
    if (offset + bufs[i].bytes > total) total = offset + bufs[i].bytes;
  }
  free(live);
  return total;
}

static int is_leaf(const damo_node *n) {
  return n->op == DAMO_OP_INPUT || n->op == DAMO_OP_PARAM || n->op == DAMO_OP_CONSTANT;
}

/* Every op the graph runs has a kernel on its backend: refused here rather than mid-run. */
static damo_status check_kernels(const damo_graph *g) {
  const damo_backend *b = g->backend;
  for (int i = 0; i < g->n_nodes; i++) {
    const damo_node *n = g->nodes[i];
    if (!n->needed || is_leaf(n)) continue;
    /* an inference-only op (no backward anywhere) may sit in a graph with a loss that is only
     * evaluated; damo_graph_backward refuses it */
    const int inference_only = !damo_op_table[n->op]->cpu_backward;
    const char *dir = !b->kernels[n->op].forward                                         ? "forward"
                      : n->in_backward && !b->kernels[n->op].backward && !inference_only ? "backward"
                                                                                         : NULL;
    if (dir)
      return damo_error(DAMO_ERR_INVALID_ARG, "compile: backend '%s' has no %s kernel for op '%s' (node '%s')", b->name,
                        dir, damo_op_table[n->op]->name, n->name);
  }
  return DAMO_OK;
}

/* Constants are copied at build time into host memory; a backend on another device gets its
 * own copy, which damo_graph_free releases. */
static damo_status upload_constants(damo_graph *g) {
  const damo_backend *b = g->backend;
  if (damo_backend_is_host(b)) return DAMO_OK;
  for (int i = 0; i < g->n_nodes; i++) {
    damo_node *n = g->nodes[i];
    if (n->op != DAMO_OP_CONSTANT || !n->needed) continue;
    size_t bytes = damo_tensor_nbytes(n->constant);
    void *dev = b->alloc(b, bytes);
    if (!dev) return damo_error_prefix(DAMO_ERR_NOMEM, "compile: constant '%s' on backend '%s': ", n->name, b->name);
    damo_status st = b->from_host(b, dev, n->constant->data, bytes);
    if (st != DAMO_OK) {
      b->free(b, dev);
      return damo_error_prefix(st, "compile: constant '%s' on backend '%s': ", n->name, b->name);
    }
    n->value = dev;
  }
  return DAMO_OK;
}

/* Marks the nodes of recomputed segments whose value and aux are dropped after forward (read
 * only inside their segment, not an output) and fills g->recompute_from; *hi_out gets each
 * segment's last order position. Only a graph with a backward recomputes; a segment without
 * a gradient in it is stored as usual. */
static damo_status plan_segments(damo_graph *g, int has_loss, const unsigned char *is_output, int **hi_out) {
  free(g->recompute_from);
  g->recompute_from = NULL;
  for (int i = 0; i < g->n_nodes; i++) g->nodes[i]->recomputed = 0;
  if (!has_loss || g->n_segments == 0) return DAMO_OK;
  const int S = g->n_segments + 1, K = g->n_order;
  int *lo = malloc((size_t)S * sizeof *lo), *hi = malloc((size_t)S * sizeof *hi);
  unsigned char *has_grad = calloc((size_t)S, 1);
  g->recompute_from = malloc((size_t)(K ? K : 1) * sizeof *g->recompute_from);
  if (!lo || !hi || !has_grad || !g->recompute_from) {
    free(lo), free(hi), free(has_grad), free(g->recompute_from);
    g->recompute_from = NULL;
    return damo_error(DAMO_ERR_NOMEM, "compile: out of memory planning recomputed segments");
  }
  for (int s = 0; s < S; s++) lo[s] = hi[s] = -1;
  for (int k = 0; k < K; k++) {
    damo_node *n = g->nodes[g->order[k]];
    g->recompute_from[k] = -1;
    if (is_leaf(n) || !n->segment) continue;
    if (lo[n->segment] < 0) lo[n->segment] = k;
    hi[n->segment] = k;
    if (n->in_backward) has_grad[n->segment] = 1;
  }
  for (int k = 0; k < K; k++) {
    damo_node *n = g->nodes[g->order[k]];
    n->recomputed = !is_leaf(n) && n->segment && has_grad[n->segment] && !is_output[n->id];
  }
  for (int k = 0; k < K; k++) { /* a value read outside its segment is kept */
    damo_node *m = g->nodes[g->order[k]];
    for (int j = 0; j < m->n_in; j++)
      if (m->in[j]->segment != m->segment) m->in[j]->recomputed = 0;
  }
  for (int k = 0; k < K; k++) {
    damo_node *n = g->nodes[g->order[k]];
    if (n->recomputed) g->recompute_from[hi[n->segment]] = lo[n->segment];
  }
  free(lo);
  free(has_grad);
  *hi_out = hi;
  return DAMO_OK;
}

damo_status damo_graph_compile(damo_graph *g, damo_node *loss, int n_outputs, damo_node *const *outputs) {
  if (!g) return damo_error(DAMO_ERR_INVALID_ARG, "compile: NULL graph");
  if (g->status != DAMO_OK) return damo_error(g->status, "compile: graph has a builder error: %s", g->status_msg);
  if (g->compiled) return damo_error(DAMO_ERR_STATE, "compile: graph is already compiled");
  if (!loss && n_outputs == 0) return damo_error(DAMO_ERR_INVALID_ARG, "compile: nothing to compute (no loss, no outputs)");
  if (loss && loss->dtype != DAMO_F32) return damo_error(DAMO_ERR_INVALID_ARG, "compile: loss '%s' is not f32", loss->name);
  for (int i = 0; i < n_outputs; i++)
    if (!outputs[i]) return damo_error(DAMO_ERR_INVALID_ARG, "compile: output %d is NULL", i);

  int N = g->n_nodes;
  unsigned char *is_output = calloc((size_t)N, 1), *reaches_loss = calloc((size_t)N, 1);
  int *pos = malloc((size_t)N * sizeof *pos);
  int *last_consumer = malloc((size_t)N * sizeof *last_consumer);
  free(g->release_at); /* the gradient release lists follow the order: planned again */
  free(g->release);
  g->release_at = g->release = NULL;
  free(g->order); /* a compile refused before (no kernel on the backend) may be retried */
  g->order = malloc((size_t)N * sizeof *g->order);
  /* At most three buffers per node. */
  planned_buffer *bufs = calloc((size_t)N * 3 + 1, sizeof *bufs);
  int *seg_hi = NULL;
  damo_status st = DAMO_OK;
  if (!is_output || !reaches_loss || !pos || !last_consumer || !g->order || !bufs) {
    st = damo_error(DAMO_ERR_NOMEM, "compile: out of memory planning %d nodes", N);
    goto done;
  }

  /* What is needed, and what lies on a path to the loss. */
  for (int i = 0; i < n_outputs; i++) is_output[outputs[i]->id] = 1;
  if (loss) is_output[loss->id] = 1, reaches_loss[loss->id] = 1;
  for (int i = 0; i < N; i++) g->nodes[i]->needed = is_output[i];
  for (int i = N - 1; i >= 0; i--) {
    damo_node *n = g->nodes[i];
    for (int k = 0; k < n->n_in; k++) {
      if (n->needed) n->in[k]->needed = 1;
      if (reaches_loss[i]) reaches_loss[n->in[k]->id] = 1;
    }
  }
  /* Gradients flow to params with gradient storage and to nodes asked to keep theirs. */
  for (int i = 0; i < N; i++) {
    damo_node *n = g->nodes[i];
    if (n->op == DAMO_OP_PARAM) n->requires_grad = n->param_grad != NULL && !g->frozen_params;
    else if (n->op == DAMO_OP_INPUT || n->op == DAMO_OP_CONSTANT) n->requires_grad = n->keep_grad;
    else {
      n->requires_grad = n->keep_grad;
      for (int k = 0; k < n->n_in; k++) n->requires_grad |= n->in[k]->requires_grad;
    }
    n->in_backward = loss && reaches_loss[i] && n->requires_grad;
    if (n->op == DAMO_OP_PARAM && n->in_backward) n->grad = n->param_grad->data;
  }
  /* Each param node zero-fills its gradient on first use in a backward pass, so two nodes
   * over one gradient buffer would each wipe the other's share (a tied weight added twice). */
  for (int i = 0; i < N && st == DAMO_OK; i++)
    for (int j = i + 1; j < N && g->nodes[i]->op == DAMO_OP_PARAM && g->nodes[i]->in_backward; j++)
      if (g->nodes[j]->op == DAMO_OP_PARAM && g->nodes[j]->in_backward && g->nodes[j]->grad == g->nodes[i]->grad)
        st = damo_error(DAMO_ERR_INVALID_ARG, "compile: params '%s' and '%s' share one gradient buffer; use one param "
                        "node for a tied weight", g->nodes[i]->name, g->nodes[j]->name);
  if (st != DAMO_OK) goto done;
  if ((st = check_kernels(g)) != DAMO_OK) goto done;

  g->n_order = 0;
  for (int i = 0; i < N; i++) {
    pos[i] = -1;
    last_consumer[i] = -1;
    if (g->nodes[i]->needed) {
      pos[i] = g->n_order;
      g->order[g->n_order++] = i;
    }
  }
  const int n_steps = g->n_order;
#define FWD(k) (k)
#define BWD(k) (2 * n_steps - 1 - (k))
  for (int k = 0; k < n_steps; k++) {
    damo_node *n = g->nodes[g->order[k]];
    for (int j = 0; j < n->n_in; j++)
      if (n->in_backward && n->in[j]->in_backward) last_consumer[n->in[j]->id] = k; /* ends as the last one */
  }

  if ((st = plan_segments(g, loss != NULL, is_output, &seg_hi)) != DAMO_OK) goto done;

  int nb = 0;
  g->unplanned_bytes = 0;
  for (int k = 0; k < n_steps; k++) {
    damo_node *n = g->nodes[g->order[k]];
    const damo_op_def *def = damo_op_table[n->op];
    n->value_capacity = (size_t)damo_node_count(n) * damo_dtype_size(n->dtype);
    n->aux_capacity = n->aux_bytes;
    if (!is_leaf(n) && n->recomputed) {
      /* Alive in the segment's forward, then from its recompute to its last backward use. */
      const int again = BWD(seg_hi[n->segment]);
      int end = FWD(k), end2 = again;
      if (n->in_backward && (def->flags & DAMO_OPF_BWD_OUTPUT) && BWD(k) > end2) end2 = BWD(k);
      for (int c = k + 1; c < n_steps; c++) {
        damo_node *m = g->nodes[g->order[c]];
        for (int j = 0; j < m->n_in; j++) {
          if (m->in[j] != n) continue;
          if (FWD(c) > end) end = FWD(c);
          if (m->in_backward && (damo_op_table[m->op]->flags & DAMO_OPF_BWD_INPUTS) && BWD(c) > end2) end2 = BWD(c);
        }
      }
      bufs[nb++] = (planned_buffer){align64(n->value_capacity), 0, FWD(k), end, again, end2, &n->value};
      if (n->aux_capacity)
        bufs[nb++] = (planned_buffer){align64(n->aux_capacity), 0,       FWD(k), FWD(k),
                                      again, n->in_backward ? BWD(k) : again, &n->aux};
    } else if (!is_leaf(n)) {
      int end = FWD(k);
      if (is_output[n->id]) end = INT_MAX;
      if (n->in_backward && (def->flags & DAMO_OPF_BWD_OUTPUT)) end = end > BWD(k) ? end : BWD(k);
      for (int c = k + 1; c < n_steps; c++) { /* consumers come later in the order */
        damo_node *m = g->nodes[g->order[c]];
        for (int j = 0; j < m->n_in; j++) {
          if (m->in[j] != n) continue;
          if (FWD(c) > end) end = FWD(c);
          if (m->in_backward && (damo_op_table[m->op]->flags & DAMO_OPF_BWD_INPUTS) && BWD(c) > end) end = BWD(c);
          /* a recomputed consumer reads it again when its segment runs again */
          if (m->recomputed && BWD(seg_hi[m->segment]) > end) end = BWD(seg_hi[m->segment]);
        }
      }
      /* keep_forward: what backward reads lives to its end (a second backward reads it again) */
      if (g->keep_forward && end >= n_steps && end != INT_MAX) end = 2 * n_steps - 1;
      bufs[nb++] = (planned_buffer){align64(n->value_capacity), 0, FWD(k), end, -1, -1, &n->value};
      if (n->aux_capacity)
        bufs[nb++] = (planned_buffer){align64(n->aux_capacity), 0, FWD(k),
                                      n->in_backward ? (g->keep_forward ? 2 * n_steps - 1 : BWD(k)) : FWD(k), -1, -1, &n->aux};
    }
    if (n->in_backward && n->op != DAMO_OP_PARAM) {
      int start = n == loss ? n_steps : (last_consumer[n->id] >= 0 ? BWD(last_consumer[n->id]) : BWD(k));
      int end = n->keep_grad ? INT_MAX : BWD(k);
      if (start > BWD(k)) start = BWD(k);
      bufs[nb++] = (planned_buffer){align64((size_t)damo_node_count(n) * sizeof(float)), 0, start, end, -1, -1,
                                    (void **)&n->grad};
    }
  }
#undef FWD
#undef BWD
  for (int i = 0; i < nb; i++) g->unplanned_bytes += bufs[i].bytes;
  g->arena_bytes = place_buffers(bufs, nb);
  if (g->arena_bytes == SIZE_MAX) {
    st = damo_error(DAMO_ERR_NOMEM, "compile: out of memory planning buffers");
    goto done;
  }
  g->arena = g->backend->alloc(g->backend, g->arena_bytes ? g->arena_bytes : 64);
  if (!g->arena) {
    st = damo_error(DAMO_ERR_NOMEM, "compile: cannot allocate the %zu-byte activation arena on backend '%s'",
                    g->arena_bytes, g->backend->name);
    goto done;
  }
  if ((st = upload_constants(g)) != DAMO_OK) goto done;
  for (int i = 0; i < nb; i++) *bufs[i].slot = g->arena + bufs[i].offset;
  g->loss = loss;
  g->batch = g->built_batch;
  g->compiled = 1;

done:
  free(is_output);
  free(reaches_loss);
  free(pos);
  free(last_consumer);
  free(bufs);
  free(seg_hi);
  return st;
}
