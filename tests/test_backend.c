/* test_backend.c - the backend seam (src/graph/backend.h).
 *
 * A "CPU twin" backend is defined here, in a test file: it wraps the CPU backend's kernels
 * and flat-block entries and counts every call. That it can be written and registered
 * without touching src/ops is the point; the tests then check that
 *   - a graph on the twin reaches the twin's kernels for every op it runs, forward and
 *     backward, and computes bit for bit what the CPU backend does;
 *   - the trainer and the optimizer go through the backend (gradient averaging, the norm, the
 *     update, the loss read) with results equal to the CPU's;
 *   - mixing devices is refused with a message naming both: a tensor of another device bound
 *     to a graph, a graph moved to a device its params are not on, an optimizer on another
 *     device than the trainer's parameters, host-only tensor functions on device data;
 *   - a backend missing a kernel is refused at compile, naming the op and the node;
 *   - a GPT-2 moved to a device backend trains there exactly as on the CPU, and what still
 *     reads host memory (saving, decoding, quantising) refuses it until it is moved back;
 *   - registration checks completeness and unique names, and backends are found by name. */
#include "damo.h"
#include "graph/backend.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ the twin backend */

static const damo_backend *cpu;
static int64_t fwd_calls[DAMO_OP_COUNT], bwd_calls[DAMO_OP_COUNT];
static int64_t n_alloc, n_to_host, n_fill, n_update, n_sumsq, n_axpby;

static damo_status twin_forward(damo_graph *g, damo_node *n) {
  fwd_calls[n->op]++;
  return cpu->kernels[n->op].forward(g, n);
}
static void twin_backward(damo_graph *g, damo_node *n) {
  bwd_calls[n->op]++;
  cpu->kernels[n->op].backward(g, n);
}
static void *twin_alloc(const damo_backend *b, size_t bytes) {
  (void)b;
  n_alloc++;
  return cpu->alloc(cpu, bytes);
}
static damo_status twin_to_host(const damo_backend *b, void *dst, const void *src, size_t bytes) {
  (void)b;
  n_to_host++;
  return cpu->to_host(cpu, dst, src, bytes);
}
static void twin_fill(const damo_backend *b, float *dst, float value, int64_t n) {
  (void)b;
  n_fill++;
  cpu->fill(cpu, dst, value, n);
}
static void twin_update(const damo_backend *b, const damo_opt_update *u) {
  (void)b;
  n_update++;
  cpu->opt_update(cpu, u);
}
static double twin_sumsq(const damo_backend *b, const float *x, int64_t n, double *scratch) {
  (void)b;
  n_sumsq++;
  return cpu->sum_squares(cpu, x, n, scratch);
}
static void twin_axpby(const damo_backend *b, int64_t n, float alpha, const float *x, float beta, float *y) {
  (void)b;
  n_axpby++;
  cpu->axpby(cpu, n, alpha, x, beta, y);
}

static damo_backend twin;      /* device CPU, every entry counted */
static damo_backend fake_cuda; /* the twin under another device tag: host memory, but tagged CUDA */

static void make_backends(void) {
  cpu = damo_backend_cpu();
  twin = *cpu; /* free, from_host: the CPU's own */
  twin.name = "cpu-twin";
  twin.alloc = twin_alloc;
  twin.to_host = twin_to_host;
  twin.fill = twin_fill;
  twin.opt_update = twin_update;
  twin.sum_squares = twin_sumsq;
  twin.axpby = twin_axpby;
  for (int op = 0; op < DAMO_OP_COUNT; op++)
    twin.kernels[op] = (damo_kernel){cpu->kernels[op].forward ? twin_forward : NULL,
                                     cpu->kernels[op].backward ? twin_backward : NULL};
  fake_cuda = twin;
  fake_cuda.name = "fake-cuda";
  fake_cuda.device = DAMO_DEVICE_CUDA;
}

static void reset_counts(void) {
  memset(fwd_calls, 0, sizeof fwd_calls);
  memset(bwd_calls, 0, sizeof bwd_calls);
  n_alloc = n_to_host = n_fill = n_update = n_sumsq = n_axpby = 0;
}

/* ------------------------------------------------------------------ a graph of many ops */

enum { B = 3, T = 4, C = 8, V = 11, K = 5, U = 3, HW = 4, CH = 2, F = 3 };

/* Parameter slots in one flat block, as models keep them. */
typedef struct slot {
  const char *name;
  int ndim;
  int64_t shape[3];
  int trained;
} slot;
static const slot SLOTS[] = {
    {"table", 2, {V, C}, 1},         {"ln_g", 1, {C}, 1},          {"ln_b", 1, {C}, 1},
    {"wq", 2, {C, C}, 1},            {"bq", 1, {C}, 1},            {"w2", 2, {C, C}, 1},
    {"wo", 2, {T * C, K}, 1},        {"bo", 1, {K}, 1},            {"conv", 3, {3 * 3, CH, F}, 1},
    {"bn_g", 1, {F}, 1},             {"bn_b", 1, {F}, 1},          {"bn_mean", 1, {F}, 0},
    {"bn_var", 1, {F}, 0},           {"lstm_k", 2, {C, 4 * U}, 1}, {"lstm_r", 2, {U, 4 * U}, 1},
    {"lstm_b", 1, {4 * U}, 1},
};
#define N_SLOTS ((int)(sizeof SLOTS / sizeof SLOTS[0]))

typedef struct net {
  damo_graph *g;
  damo_node *loss;
  damo_tensor *values[N_SLOTS], *grads[N_SLOTS];
  float *params, *grad_block;
  int64_t n_params;
  float x[B * T * C], img[B * HW * HW * CH], target[B * K];
  int32_t ids[B * T], labels[B];
} net;

static int64_t slot_count(const slot *s) {
  int64_t c = 1;
  for (int i = 0; i < s->ndim; i++) c *= s->shape[i];
  return c;
}

/* Builds the same graph (same data, same initial weights) on backend b; NULL b keeps the CPU. */
static int net_build(net *m, const damo_backend *b) {
  memset(m, 0, sizeof *m);
  for (int i = 0; i < N_SLOTS; i++) m->n_params += slot_count(&SLOTS[i]);
  m->params = calloc((size_t)m->n_params, sizeof(float));
  m->grad_block = calloc((size_t)m->n_params, sizeof(float));
  damo_rng r;
  damo_rng_seed(&r, 7);
  for (int64_t i = 0; i < m->n_params; i++) m->params[i] = 0.3f * damo_rng_normal(&r);
  for (int i = 0; i < B * T * C; i++) m->x[i] = damo_rng_normal(&r);
  for (int i = 0; i < B * HW * HW * CH; i++) m->img[i] = damo_rng_normal(&r);
  for (int i = 0; i < B * K; i++) m->target[i] = damo_rng_uniform(&r);
  for (int i = 0; i < B * T; i++) m->ids[i] = (int32_t)damo_rng_below(&r, V);
  for (int i = 0; i < B; i++) m->labels[i] = (int32_t)damo_rng_below(&r, K);

  damo_graph *g = m->g = damo_graph_new(42);
  if (b && damo_graph_set_backend(g, b) != DAMO_OK) return 0;
  damo_node *p[N_SLOTS];
  int64_t off = 0;
  for (int i = 0; i < N_SLOTS; i++) {
    const slot *s = &SLOTS[i];
    if (!strcmp(s->name, "bn_var"))
      for (int64_t k = 0; k < slot_count(s); k++) m->params[off + k] = 1.0f + 0.1f * (float)k; /* a variance */
    m->values[i] = damo_tensor_wrap(DAMO_F32, s->ndim, s->shape, m->params + off);
    m->grads[i] = s->trained ? damo_tensor_wrap(DAMO_F32, s->ndim, s->shape, m->grad_block + off) : NULL;
    p[i] = damo_param(g, s->name, m->values[i], m->grads[i]);
    off += slot_count(s);
  }
  const int64_t xs[] = {B, T, C}, is[] = {B, T}, ls[] = {B}, ims[] = {B, HW, HW, CH}, ts[] = {B, K};
  damo_node *x = damo_input(g, "x", DAMO_F32, 3, xs), *ids = damo_input(g, "ids", DAMO_I32, 2, is);
  damo_node *labels = damo_input(g, "labels", DAMO_I32, 1, ls), *img = damo_input(g, "img", DAMO_F32, 4, ims);
  damo_node *target = damo_input(g, "target", DAMO_F32, 2, ts);

  /* A transformer-ish block. */
  damo_node *h = damo_add(g, x, damo_embedding(g, ids, p[0]));
  h = damo_layer_norm(g, h, p[1], p[2], 1e-5f);
  damo_node *q = damo_dense_op(g, h, p[3], p[4], DAMO_ACT_RELU);
  damo_node *a = damo_gelu(g, damo_attention(g, q, h, h, 2, 1, NULL), 0);
  damo_node *mm = damo_sub(g, damo_matmul(g, a, p[5], 0, 0), h);
  mm = damo_tanh(g, damo_mul(g, mm, damo_sigmoid(g, mm)));
  const int64_t flat[] = {0, T * C};
  damo_node *drop = damo_dropout(g, damo_reshape(g, mm, 2, flat), 0.1f);
  damo_node *logits = damo_dense_op(g, drop, p[6], p[7], DAMO_ACT_NONE);
  damo_node *loss = damo_softmax_cross_entropy(g, logits, labels);
  loss = damo_add(g, loss, damo_mse(g, damo_softmax(g, logits), target));
  damo_node *ent = damo_mean(g, damo_mul(g, damo_exp(g, damo_log_softmax(g, logits)), damo_transpose(g, damo_transpose(g, logits, NULL), NULL)), DAMO_ALL_AXES, 0);
  loss = damo_add(g, loss, damo_scale_by(g, ent, 0.5f));
  loss = damo_add(g, loss, damo_mean(g, damo_log(g, damo_div(g, damo_exp(g, logits), damo_exp(g, logits))), DAMO_ALL_AXES, 0));
  /* A vision branch. */
  const int64_t ks[] = {3, 3, CH, F};
  damo_node *kern = damo_reshape(g, p[8], 4, ks);
  damo_node *cv = damo_conv2d(g, img, kern, 1, 1, 1, 1, 1, 1);
  cv = damo_batch_norm(g, cv, p[9], p[10], p[11], p[12], 0.9f, 1e-3f);
  cv = damo_max_pool2d(g, damo_relu(g, cv), 2, 2, 2, 2, 0, 0, 0, 0);
  loss = damo_add(g, loss, damo_sum(g, damo_global_avg_pool2d(g, cv), DAMO_ALL_AXES, 0));
  /* A recurrent branch. */
  damo_node *lstm = damo_lstm(g, h, p[13], p[14], p[15], 0);
  loss = damo_add(g, loss, damo_mean(g, lstm, DAMO_ALL_AXES, 0));
  m->loss = loss;
  if (damo_graph_status(g) != DAMO_OK || damo_graph_compile(g, loss, 1, &logits) != DAMO_OK) return 0;
  damo_graph_bind(g, x, m->x);
  damo_graph_bind(g, ids, m->ids);
  damo_graph_bind(g, labels, m->labels);
  damo_graph_bind(g, img, m->img);
  damo_graph_bind(g, target, m->target);
  return 1;
}

static void net_free(net *m) {
  damo_graph_free(m->g);
  for (int i = 0; i < N_SLOTS; i++) {
    damo_tensor_free(m->values[i]);
    damo_tensor_free(m->grads[i]);
  }
  free(m->params);
  free(m->grad_block);
}

static void test_twin_runs_every_kernel_and_matches_cpu(void) {
  net a, b;
  CHECK_MSG(net_build(&a, NULL), "%s", damo_last_error());
  CHECK_MSG(net_build(&b, &twin), "%s", damo_last_error());
  CHECK(damo_graph_backend(a.g) == damo_backend_cpu());
  CHECK(damo_graph_backend(b.g) == &twin);
  CHECK(n_alloc >= 1); /* the arena came from the twin */
  reset_counts();
  float la = 0, lb = 0;
  for (int step = 0; step < 2; step++) { /* twice: dropout draws and running statistics move */
    CHECK(damo_graph_forward(a.g, 1) == DAMO_OK && damo_graph_backward(a.g) == DAMO_OK);
    CHECK(damo_graph_forward(b.g, 1) == DAMO_OK && damo_graph_backward(b.g) == DAMO_OK);
  }
  CHECK(damo_graph_read(a.g, a.loss, 0, 1, &la) == DAMO_OK);
  CHECK(damo_graph_read(b.g, b.loss, 0, 1, &lb) == DAMO_OK);
  CHECK(isfinite(la) && memcmp(&la, &lb, sizeof la) == 0);
  CHECK(memcmp(a.grad_block, b.grad_block, (size_t)a.n_params * sizeof(float)) == 0);
  CHECK(memcmp(a.params, b.params, (size_t)a.n_params * sizeof(float)) == 0); /* running stats */
  CHECK(n_to_host == 1 && n_fill > 0 && n_alloc == 0); /* steps allocate nothing */

  /* Every op the graph runs went through the twin, once per node and step. */
  int64_t nodes_f[DAMO_OP_COUNT] = {0}, nodes_b[DAMO_OP_COUNT] = {0};
  int distinct = 0;
  for (int k = 0; k < b.g->n_order; k++) {
    const damo_node *n = b.g->nodes[b.g->order[k]];
    if (n->op == DAMO_OP_INPUT || n->op == DAMO_OP_PARAM || n->op == DAMO_OP_CONSTANT) continue;
    if (nodes_f[n->op]++ == 0) distinct++;
    if (n->in_backward) nodes_b[n->op]++;
  }
  for (int op = 0; op < DAMO_OP_COUNT; op++) {
    CHECK_MSG(fwd_calls[op] == 2 * nodes_f[op], "op %s: %lld forward calls, expected %lld", damo_op_table[op]->name,
              (long long)fwd_calls[op], (long long)(2 * nodes_f[op]));
    CHECK_MSG(bwd_calls[op] == 2 * nodes_b[op], "op %s: %lld backward calls, expected %lld", damo_op_table[op]->name,
              (long long)bwd_calls[op], (long long)(2 * nodes_b[op]));
  }
  CHECK_MSG(distinct >= 30, "the graph runs %d distinct ops", distinct);
  net_free(&a);
  net_free(&b);
}

/* ------------------------------------------------------------------ trainer and optimizer */

static damo_status net_stage(void *ctx, int64_t micro) {
  (void)ctx, (void)micro;
  return DAMO_OK; /* the inputs stay bound */
}
static damo_status net_forward(void *ctx, float *loss) {
  net *m = ctx;
  damo_status st = damo_graph_forward(m->g, 1);
  return st == DAMO_OK ? damo_graph_read(m->g, m->loss, 0, 1, loss) : st;
}
static damo_status net_backward(void *ctx) { return damo_graph_backward(((net *)ctx)->g); }

/* Three steps of AdamW with clipping and two micro-batches on backend b (NULL: the CPU). */
static int net_train(net *m, const damo_backend *b, float *last_loss) {
  if (!net_build(m, b)) return 0;
  damo_optimizer_config c = damo_adamw(1e-2f, 0.01f);
  c.clip_norm = 0.1f;
  damo_optimizer *opt = damo_optimizer_new(&c, m->n_params);
  if (b && damo_optimizer_set_backend(opt, b) != DAMO_OK) return 0;
  damo_train_adapter a = {.name = "backend test", .ctx = m, .params = m->params, .grads = m->grad_block,
                          .n_params = m->n_params, .stage = net_stage, .forward = net_forward,
                          .backward = net_backward, .backend = b};
  damo_trainer *t = NULL;
  damo_train_report r = {0};
  int ok = damo_trainer_new(&a, opt, 2, 3, &t) == DAMO_OK;
  for (int s = 0; s < 3 && ok; s++) ok = damo_trainer_step(t, &r) == DAMO_OK;
  *last_loss = r.loss;
  damo_trainer_free(t);
  damo_optimizer_free(opt);
  return ok;
}

static void test_trainer_and_optimizer_go_through_the_backend(void) {
  net a, b;
  float la = 0, lb = 0;
  CHECK_MSG(net_train(&a, NULL, &la), "%s", damo_last_error());
  reset_counts();
  CHECK_MSG(net_train(&b, &twin, &lb), "%s", damo_last_error());
  CHECK(isfinite(la) && memcmp(&la, &lb, sizeof la) == 0);
  CHECK(memcmp(a.params, b.params, (size_t)a.n_params * sizeof(float)) == 0);
  /* Per step: one norm and one update; a sum over two micro-batches and the mean (3 axpby);
   * one loss read per micro-batch. */
  CHECK_MSG(n_update == 3 && n_sumsq == 3, "%lld updates, %lld norms", (long long)n_update, (long long)n_sumsq);
  CHECK_MSG(n_axpby == 9, "%lld axpby", (long long)n_axpby);
  CHECK_MSG(n_to_host == 6, "%lld reads", (long long)n_to_host);
  CHECK(fwd_calls[DAMO_OP_ATTENTION] == 6 && bwd_calls[DAMO_OP_ATTENTION] == 6);
  net_free(&a);
  net_free(&b);
}

/* ------------------------------------------------------------------ devices do not mix */

static int contains(const char *msg, const char *a, const char *b) { return strstr(msg, a) && strstr(msg, b); }

static void test_mixing_devices_is_refused(void) {
  float w[4] = {0}, gw[4] = {0};
  const int64_t s[] = {2, 2};
  damo_tensor *value = damo_tensor_wrap(DAMO_F32, 2, s, w), *grad = damo_tensor_wrap(DAMO_F32, 2, s, gw);

  /* A tensor tagged CUDA bound to a CPU graph. */
  value->device = DAMO_DEVICE_CUDA;
  damo_graph *g = damo_graph_new(1);
  CHECK(damo_param(g, "w", value, grad) == NULL);
  CHECK(damo_graph_status(g) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(contains(damo_last_error(), "param 'w' value is on cuda", "backend 'cpu' (cpu)"), "%s", damo_last_error());
  damo_graph_free(g);

  /* The same tensor is fine on a graph of its device; its CPU gradient is not. */
  g = damo_graph_new(1);
  CHECK(damo_graph_set_backend(g, &fake_cuda) == DAMO_OK);
  CHECK(damo_param(g, "w", value, grad) == NULL);
  CHECK_MSG(contains(damo_last_error(), "param 'w' gradient is on cpu", "'fake-cuda' (cuda)"), "%s", damo_last_error());
  damo_graph_free(g);

  /* A graph with CPU params cannot move to another device, and not once compiled. */
  value->device = DAMO_DEVICE_CPU;
  g = damo_graph_new(1);
  damo_node *p = damo_param(g, "w", value, grad);
  CHECK(p != NULL);
  CHECK(damo_graph_set_backend(g, &fake_cuda) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(contains(damo_last_error(), "set_backend 'fake-cuda'", "param 'w' value is on cpu"), "%s", damo_last_error());
  CHECK(damo_graph_backend(g) == damo_backend_cpu());
  CHECK(damo_graph_set_backend(g, &twin) == DAMO_OK); /* same device: fine */
  damo_node *loss = damo_sum(g, damo_relu(g, p), DAMO_ALL_AXES, 0);
  CHECK(damo_graph_compile(g, loss, 0, NULL) == DAMO_OK);
  CHECK(damo_graph_set_backend(g, damo_backend_cpu()) == DAMO_ERR_STATE);
  CHECK(strstr(damo_last_error(), "compiled on backend 'cpu-twin'") != NULL);
  float out[2];
  CHECK(damo_graph_read(g, loss, 0, 2, out) == DAMO_ERR_INVALID_ARG); /* a (1,) loss has one value */
  damo_graph_free(g);

  /* Parameters on one device, the optimizer on another. */
  damo_optimizer_config c = damo_sgd(0.1f, 0.0f, 0);
  damo_optimizer *opt = damo_optimizer_new(&c, 4);
  CHECK(damo_optimizer_backend(opt) == damo_backend_cpu());
  damo_train_adapter a = {.params = w, .grads = gw, .n_params = 4, .stage = net_stage, .forward = net_forward,
                          .backward = net_backward, .backend = &fake_cuda};
  damo_trainer *t = NULL;
  CHECK(damo_trainer_new(&a, opt, 1, 1, &t) == DAMO_ERR_INVALID_ARG && t == NULL);
  CHECK_MSG(contains(damo_last_error(), "parameters are on cuda (backend 'fake-cuda')", "optimizer steps on cpu"), "%s",
            damo_last_error());
  CHECK(damo_optimizer_set_backend(opt, &fake_cuda) == DAMO_OK);
  CHECK(damo_trainer_new(&a, opt, 1, 1, &t) == DAMO_OK);
  damo_trainer_free(t);
  damo_tensor_dict *d = damo_tensor_dict_new();
  CHECK(damo_optimizer_state_views(opt, d) == DAMO_OK); /* plain SGD keeps no moments */
  damo_tensor_dict_free(d);
  CHECK(damo_optimizer_step(opt, w, gw, 1, NULL) == DAMO_OK);
  CHECK(damo_optimizer_set_backend(opt, damo_backend_cpu()) == DAMO_ERR_STATE); /* after a step */
  damo_optimizer_free(opt);

  /* Adam's moments on another device are not host memory: copies, never views. */
  c = damo_adam(0.1f);
  opt = damo_optimizer_new(&c, 4);
  CHECK(damo_optimizer_set_backend(opt, &fake_cuda) == DAMO_OK);
  d = damo_tensor_dict_new();
  CHECK(damo_optimizer_state_views(opt, d) == DAMO_ERR_INVALID_ARG);
  CHECK(strstr(damo_last_error(), "moments are on cuda") != NULL);
  CHECK(damo_optimizer_state(opt, d) == DAMO_OK && damo_tensor_dict_get(d, "optimizer.m"));
  damo_tensor_dict_free(d);
  damo_optimizer_free(opt);

  /* The tensor functions read with the CPU. */
  value->device = DAMO_DEVICE_CUDA;
  CHECK(damo_tensor_clone(value) == NULL);
  CHECK(strstr(damo_last_error(), "tensor is on cuda") != NULL);
  CHECK(damo_tensor_slice_rows(value, 0, 1) == NULL);
  damo_tensor_free(value);
  damo_tensor_free(grad);
}

/* A backend without a kernel an op needs is refused at compile, before anything runs. */
static void test_missing_kernel_is_refused_at_compile(void) {
  damo_backend partial = twin;
  partial.name = "partial";
  partial.kernels[DAMO_OP_GELU].backward = NULL;
  float w[3] = {1, 2, 3}, gw[3];
  const int64_t s[] = {3};
  damo_tensor *value = damo_tensor_wrap(DAMO_F32, 1, s, w), *grad = damo_tensor_wrap(DAMO_F32, 1, s, gw);
  damo_graph *g = damo_graph_new(1);
  CHECK(damo_graph_set_backend(g, &partial) == DAMO_OK);
  damo_node *y = damo_node_set_name(damo_gelu(g, damo_param(g, "w", value, grad), 1), "act");
  damo_node *loss = damo_sum(g, y, DAMO_ALL_AXES, 0);
  CHECK(damo_graph_compile(g, loss, 0, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(contains(damo_last_error(), "backend 'partial' has no backward kernel", "op 'gelu' (node 'act')"), "%s",
            damo_last_error());
  damo_graph_free(g);
  /* Inference needs only the forward. */
  g = damo_graph_new(1);
  CHECK(damo_graph_set_backend(g, &partial) == DAMO_OK);
  y = damo_gelu(g, damo_param(g, "w", value, NULL), 1);
  CHECK(damo_graph_compile(g, NULL, 1, &y) == DAMO_OK && damo_graph_forward(g, 0) == DAMO_OK);
  float out[3];
  CHECK(damo_graph_read(g, y, 0, 3, out) == DAMO_OK && out[2] > 2.9f);
  damo_graph_free(g);
  damo_tensor_free(value);
  damo_tensor_free(grad);
}

/* ------------------------------------------------------------------ GPT-2 on a device */

/* Three AdamW steps (clipped) of a small GPT-2 on backend b; the losses and, for a model on
 * a device, the twin's counts say where it ran. */
static damo_status gpt2_steps(damo_gpt2 *m, const damo_backend *b, const int32_t *ids, const int32_t *targets,
                              float *losses) {
  damo_optimizer_config oc = damo_adamw(1e-2f, 0.1f);
  oc.clip_norm = 0.5f;
  int64_t n = 0;
  float *params = damo_gpt2_param_block(m, &n), *grads = damo_gpt2_grad_block(m, NULL);
  damo_optimizer *opt = damo_optimizer_new(&oc, n);
  uint8_t *mask = malloc((size_t)n);
  damo_gpt2_graph *gg = NULL;
  damo_status st = damo_optimizer_set_backend(opt, b);
  if (st == DAMO_OK) st = damo_gpt2_decay_mask(m, mask);
  if (st == DAMO_OK) st = damo_optimizer_set_decay_mask(opt, mask);
  if (st == DAMO_OK) st = damo_gpt2_graph_new(m, 2, 8, 1, &gg);
  for (int s = 0; s < 3 && st == DAMO_OK; s++) {
    st = damo_gpt2_graph_forward(gg, ids, targets, &losses[s]);
    if (st == DAMO_OK) st = damo_gpt2_graph_backward(gg);
    if (st == DAMO_OK) st = damo_optimizer_step(opt, params, grads, 3, NULL);
  }
  if (st == DAMO_OK) st = damo_gpt2_graph_evaluate(gg, ids, targets, &losses[3]);
  damo_gpt2_graph_free(gg);
  damo_optimizer_free(opt);
  free(mask);
  return st;
}

/* A GPT-2 moved to a device backend trains there (its weights, gradients, optimizer state,
 * ids and targets in the device's memory, every kernel the device's) exactly as on the CPU;
 * what still reads host memory refuses it; moved back, its weights are the trained ones. */
static void test_gpt2_on_a_device(void) {
  damo_gpt2_config cfg = {.n_layer = 2, .n_head = 2, .n_embd = 32, .n_positions = 16, .vocab_size = 40,
                          .layer_norm_epsilon = 1e-5f};
  int32_t ids[16], targets[16];
  for (int i = 0; i < 16; i++) ids[i] = (i * 7 + 3) % 40, targets[i] = (i * 5 + 1) % 40;
  damo_gpt2 *host = NULL, *dev = NULL;
  CHECK(damo_gpt2_new(&cfg, 9, &host) == DAMO_OK && damo_gpt2_new(&cfg, 9, &dev) == DAMO_OK);
  if (!host || !dev) return;
  float *host_block = damo_gpt2_param_block(dev, NULL);
  reset_counts();
  CHECK(damo_gpt2_to_backend(dev, &fake_cuda) == DAMO_OK);
  CHECK(damo_gpt2_backend(dev) == &fake_cuda && damo_gpt2_backend(host) == cpu);
  CHECK(n_alloc == 2 && damo_gpt2_param_block(dev, NULL) != host_block); /* the device's blocks */
  CHECK(damo_gpt2_param(dev, "h.1.mlp.c_fc.weight")->device == DAMO_DEVICE_CUDA);
  CHECK(damo_gpt2_grad(dev, "wte.weight")->device == DAMO_DEVICE_CUDA);
  CHECK(damo_gpt2_to_backend(dev, &fake_cuda) == DAMO_OK && n_alloc == 2); /* already there */

  float lh[4], ld[4];
  CHECK(gpt2_steps(host, cpu, ids, targets, lh) == DAMO_OK);
  reset_counts();
  CHECK_MSG(gpt2_steps(dev, &fake_cuda, ids, targets, ld) == DAMO_OK, "%s", damo_last_error());
  CHECK(fwd_calls[DAMO_OP_ATTENTION] == 4 * 2 && bwd_calls[DAMO_OP_LINEAR_CE] == 3); /* 4 forwards, 2 layers */
  CHECK(n_update == 3 && n_sumsq == 3);
  CHECK_MSG(memcmp(lh, ld, sizeof lh) == 0, "losses cpu %.7f %.7f, device %.7f %.7f", lh[0], lh[3], ld[0], ld[3]);
  CHECK(ld[3] < ld[0]);

  /* what reads host memory refuses the model, naming the backend and the way back */
  damo_gpt2_cache *cache = NULL;
  CHECK(damo_gpt2_save(dev, "unused-dir") == DAMO_ERR_STATE);
  CHECK_MSG(contains(damo_last_error(), "gpt2_save", "backend 'fake-cuda'") &&
                strstr(damo_last_error(), "damo_gpt2_to_backend(m, damo_backend_cpu())"),
            "%s", damo_last_error());
  CHECK(damo_gpt2_cache_new(dev, 8, &cache) == DAMO_ERR_STATE && cache == NULL);
  CHECK(damo_gpt2_quantize(dev, DAMO_BLOCKS_Q8_0) == DAMO_ERR_STATE);

  /* back on the host: the trained weights, bit for bit the CPU model's */
  int64_t n = 0;
  CHECK(damo_gpt2_to_backend(dev, cpu) == DAMO_OK && damo_gpt2_backend(dev) == cpu);
  CHECK(damo_gpt2_param_block(dev, &n) == host_block);
  CHECK(damo_gpt2_param(dev, "wte.weight")->device == DAMO_DEVICE_CPU);
  CHECK(memcmp(host_block, damo_gpt2_param_block(host, NULL), (size_t)n * sizeof(float)) == 0);
  CHECK(damo_gpt2_cache_new(dev, 8, &cache) == DAMO_OK);
  damo_gpt2_cache_free(cache);

  /* a block-quantised model decodes on the CPU only */
  CHECK(damo_gpt2_quantize(dev, DAMO_BLOCKS_Q8_0) == DAMO_OK);
  CHECK(damo_gpt2_to_backend(dev, &fake_cuda) == DAMO_ERR_UNSUPPORTED);
  CHECK(damo_gpt2_to_backend(NULL, &fake_cuda) == DAMO_ERR_INVALID_ARG);
  damo_gpt2_free(host);
  damo_gpt2_free(dev);
}

/* ------------------------------------------------------------------ registry */

static void test_registry(void) {
  CHECK(damo_backend_find("cpu") == damo_backend_cpu());
  CHECK(damo_backend_find("cpu-twin") == NULL);
  CHECK_MSG(contains(damo_last_error(), "no backend named 'cpu-twin'", "registered: cpu"), "%s", damo_last_error());
  CHECK(damo_backend_register(&twin) == DAMO_OK);
  CHECK(damo_backend_find("cpu-twin") == &twin);
  CHECK(strcmp(damo_backend_name(damo_backend_find("cpu-twin")), "cpu-twin") == 0);
  CHECK(damo_backend_device(&fake_cuda) == DAMO_DEVICE_CUDA);
  CHECK(damo_backend_register(&twin) == DAMO_ERR_INVALID_ARG);
  CHECK(strstr(damo_last_error(), "already registered") != NULL);
  damo_backend incomplete = twin;
  incomplete.name = "incomplete";
  incomplete.to_host = NULL;
  CHECK(damo_backend_register(&incomplete) == DAMO_ERR_INVALID_ARG);
  CHECK(strstr(damo_last_error(), "backend 'incomplete' has no to_host") != NULL);
  CHECK(damo_backend_find("incomplete") == NULL);
  CHECK(strcmp(damo_device_name(DAMO_DEVICE_CUDA), "cuda") == 0);
}

int main(void) {
  make_backends();
  RUN(test_twin_runs_every_kernel_and_matches_cpu);
  RUN(test_trainer_and_optimizer_go_through_the_backend);
  RUN(test_mixing_devices_is_refused);
  RUN(test_missing_kernel_is_refused_at_compile);
  RUN(test_gpt2_on_a_device);
  RUN(test_registry);
  return test_summary("backend");
}
