/* trainer.c - the one training step every model kind takes.
 *
 * A step: for each of grad_accum micro-batches, stage it, run the training forward, refuse
 * a non-finite loss (naming the first non-finite node when the kind can), let the kind
 * observe the forward (metrics from the logits in memory), run backward; then average the
 * micro-batch gradients, watch for divergence, call the gradient hook, and take the
 * optimizer step (which clips). The gradient hook is the seam for data-parallel training:
 * it sees the step's final gradient before clipping, so an all-reduce placed there makes
 * every rank clip and step on the same numbers.
 *
 * Model kinds plug in through damo_train_adapter (Sequential in fit.c, GPT-2 in
 * models/gpt2_train.c, BERT's masked LM and classifier in models/bert_train.c); the loops
 * around the step (epochs or steps, validation, checkpoints) call damo_trainer_step. */
#include "graph/backend.h"
#include "graph/graph.h"
#include "train/data_parallel.h"
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

struct private_state {
  double clip, noise, expected_batch;
  uint64_t seed;
  float *sum;   /* the clipped sum over the step's micro-batches */
  float *norms; /* per example of a micro-batch: squared norms, then weights */
  int64_t norms_cap;
  float last_loss; /* reported for a step that sampled no example */
};

static void private_free(struct private_state *p) {
  if (!p) return;
  damo_free(p->sum);
  free(p->norms);
  free(p);
}

static damo_status private_step(damo_trainer *t, damo_train_report *report);

damo_status damo_trainer_new(const damo_train_adapter *a, damo_optimizer *opt, int64_t grad_accum, int64_t total_steps,
                             damo_trainer **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "trainer_new: NULL output");
  *out = NULL;
  if (!a || !opt || !a->params || !a->grads || !a->stage || !a->forward || !a->backward)
    return damo_error(DAMO_ERR_INVALID_ARG, "trainer_new: the adapter needs params, grads, stage, forward and backward");
  if (grad_accum < 1 || total_steps < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "trainer_new: grad_accum %lld and total_steps %lld must be >= 1",
                      (long long)grad_accum, (long long)total_steps);
  const damo_backend *b = a->backend ? a->backend : damo_backend_cpu();
  if (damo_optimizer_backend(opt)->device != b->device)
    return damo_error(DAMO_ERR_INVALID_ARG, "trainer_new: the parameters are on %s (backend '%s') but the optimizer "
                      "steps on %s (backend '%s'); damo_optimizer_set_backend puts them on one device",
                      damo_device_name(b->device), b->name, damo_device_name(damo_optimizer_backend(opt)->device),
                      damo_optimizer_backend(opt)->name);
  damo_trainer *t = calloc(1, sizeof *t);
  if (!t) return damo_error(DAMO_ERR_NOMEM, "trainer_new: out of memory");
  t->a = *a;
  t->a.backend = b;
  if (!t->a.name) t->a.name = "training";
  t->opt = opt;
  t->grad_accum = grad_accum;
  t->total_steps = total_steps;
  damo_divergence_init(&t->diverge);
  if (grad_accum > 1 && !(t->grad_sum = b->alloc(b, (size_t)(a->n_params ? a->n_params : 1) * sizeof(float)))) {
    free(t);
    return damo_error(DAMO_ERR_NOMEM, "trainer_new: out of memory for the accumulated gradients (%lld floats)",
                      (long long)a->n_params);
  }
  *out = t;
  return DAMO_OK;
}

void damo_trainer_free(damo_trainer *t) {
  if (!t) return;
  loop_resume_clear(&t->resume);
  dp_free(t->dp);
  private_free(t->priv);
  if (t->grad_sum) t->a.backend->free(t->a.backend, t->grad_sum);
  free(t);
}

void damo_trainer_set_grad_hook(damo_trainer *t, damo_grad_hook hook, void *ctx) {
  if (!t) return;
  t->hook = hook;
  t->hook_ctx = ctx;
}

void damo_trainer_set_param_hook(damo_trainer *t, damo_param_hook hook, void *ctx) {
  if (!t) return;
  t->param_hook = hook;
  t->param_hook_ctx = ctx;
}

/* The parameter hook once the step's update is in (every rank holds the same parameters). */
static damo_status after_step(damo_trainer *t) {
  if (!t->param_hook) return DAMO_OK;
  const damo_status st = t->param_hook(t->param_hook_ctx, t->a.params, t->a.n_params, t->steps_done);
  return st == DAMO_OK ? st : damo_error_prefix(st, "%s step %lld, parameter hook: ", t->a.name, (long long)t->steps_done);
}

int64_t damo_trainer_steps_done(const damo_trainer *t) { return t ? t->steps_done : 0; }
void damo_trainer_set_steps_done(damo_trainer *t, int64_t steps) {
  if (t) t->steps_done = steps;
}
damo_optimizer *damo_trainer_optimizer(const damo_trainer *t) { return t ? t->opt : NULL; }

/* Where a failure happened, as the start of its message. */
static damo_status step_error(const damo_trainer *t, damo_status st, int64_t k) {
  if (t->grad_accum > 1 && k >= 0)
    return damo_error_prefix(st, "%s step %lld, micro-batch %lld of %lld: ", t->a.name, (long long)t->steps_done + 1,
                             (long long)k + 1, (long long)t->grad_accum);
  return damo_error_prefix(st, "%s step %lld: ", t->a.name, (long long)t->steps_done + 1);
}

/* The non-finite loss message (locating the value when this rank's own loss is the one). */
static damo_status nonfinite_loss(const damo_trainer *t, double loss, int local) {
  const damo_train_adapter *a = &t->a;
  const char *where = local && a->locate_nonfinite ? a->locate_nonfinite(a->ctx) : NULL;
  const char *what = isnan(loss) ? "NaN" : "Inf";
  if (where)
    return damo_error(DAMO_ERR_NUMERIC, "the loss became %s; the first non-finite value is in '%s' (try a lower "
                      "learning rate or check the data)", what, where);
  if (!local)
    return damo_error(DAMO_ERR_NUMERIC, "the loss became %s on another rank (try a lower learning rate or check the "
                      "data)", what);
  return damo_error(DAMO_ERR_NUMERIC, "the loss became %s (try a lower learning rate or check the data)", what);
}

/* The end of a step in one process, once the gradient is in the grad block: divergence
 * watched (when the step had a loss), the gradient hook, the optimizer, the report. */
static damo_status finish_step(damo_trainer *t, float mean_loss, int watch, damo_train_report *report) {
  const damo_train_adapter *a = &t->a;
  damo_status st;
  if (watch && (st = damo_divergence_check(&t->diverge, mean_loss)) != DAMO_OK) return step_error(t, st, -1);
  if (t->hook && (st = t->hook(t->hook_ctx, a->grads, a->n_params, t->steps_done)) != DAMO_OK)
    return damo_error_prefix(st, "%s step %lld, gradient hook: ", a->name, (long long)t->steps_done + 1);
  const float lr = damo_optimizer_lr(t->opt, t->total_steps);
  float norm = 0.0f;
  if ((st = damo_optimizer_step(t->opt, a->params, a->grads, t->total_steps, &norm)) != DAMO_OK)
    return step_error(t, st, -1);
  t->steps_done++;
  if (report) *report = (damo_train_report){t->steps_done, mean_loss, lr, norm};
  return after_step(t);
}

/* A step in a data-parallel run (damo_trainer_set_data_parallel; a world of one included):
 * the loss is reduced before backward, the gradient during it (data_parallel.c). */
static damo_status parallel_step(damo_trainer *t, damo_train_report *report) {
  const damo_train_adapter *a = &t->a;
  const damo_backend *b = a->backend;
  const int64_t K = t->grad_accum, n = a->n_params;
  double loss_sum = 0.0;
  damo_status st = DAMO_OK;
  for (int64_t k = 0; k < K; k++) {
    float loss = 0.0f, scale = 1.0f;
    double global;
    st = a->stage(a->ctx, k);
    const double weight = st != DAMO_OK ? 0.0 : a->loss_weight ? a->loss_weight(a->ctx) : 1.0;
    if (st == DAMO_OK && weight > 0) st = a->forward(a->ctx, &loss);
    if (st != DAMO_OK) return step_error(t, st, k); /* the other ranks end with the job (damo_dist_abort) */
    if ((st = dp_reduce_loss(t->dp, loss, weight, &global, &scale)) != DAMO_OK) return step_error(t, st, k);
    if (!isfinite(global)) return step_error(t, nonfinite_loss(t, global, weight > 0 && !isfinite(loss)), k);
    if (weight > 0 && a->observe) a->observe(a->ctx);
    const int last = k + 1 == K;
    if (last) dp_arm(t->dp, scale);
    if (weight > 0) st = a->backward(a->ctx);
    else b->fill(b, a->grads, 0.0f, n); /* no items here: this rank adds nothing */
    if (st != DAMO_OK) return step_error(t, st, k);
    loss_sum += global;
    if (!last) b->axpby(b, n, scale, a->grads, k == 0 ? 0.0f : 1.0f, t->grad_sum);
  }
  float *grads;
  int64_t len;
  if ((st = dp_finish(t->dp, &grads, &len)) != DAMO_OK) return step_error(t, st, -1);
  const float mean_loss = (float)(loss_sum / (double)K);
  if ((st = damo_divergence_check(&t->diverge, mean_loss)) != DAMO_OK) return step_error(t, st, -1);
  if (t->hook && (st = t->hook(t->hook_ctx, grads, len, t->steps_done)) != DAMO_OK)
    return damo_error_prefix(st, "%s step %lld, gradient hook: ", a->name, (long long)t->steps_done + 1);
  const float lr = damo_optimizer_lr(t->opt, t->total_steps);
  float norm = 0.0f;
  if ((st = dp_optimizer_step(t->dp, t->opt, t->total_steps, &norm)) != DAMO_OK) return step_error(t, st, -1);
  t->steps_done++;
  if (report) *report = (damo_train_report){t->steps_done, mean_loss, lr, norm};
  return after_step(t);
}

damo_status damo_trainer_step(damo_trainer *t, damo_train_report *report) {
  if (!t) return damo_error(DAMO_ERR_INVALID_ARG, "trainer_step: NULL trainer");
  if (t->dp) return parallel_step(t, report);
  if (t->priv) return private_step(t, report);
  const damo_train_adapter *a = &t->a;
  const damo_backend *b = a->backend; /* micro-batch gradients are summed where they are */
  const int64_t K = t->grad_accum, n = a->n_params;
  double loss_sum = 0.0;
  damo_status st = DAMO_OK;
  for (int64_t k = 0; k < K; k++) {
    float loss = 0.0f;
    st = a->stage(a->ctx, k);
    if (st == DAMO_OK) st = a->forward(a->ctx, &loss);
    if (st != DAMO_OK) return step_error(t, st, k);
    if (!isfinite(loss)) return step_error(t, nonfinite_loss(t, loss, 1), k);
    if (a->observe) a->observe(a->ctx);
    if ((st = a->backward(a->ctx)) != DAMO_OK) return step_error(t, st, k);
    loss_sum += loss;
    if (K == 1) break;
    b->axpby(b, n, 1.0f, a->grads, k == 0 ? 0.0f : 1.0f, t->grad_sum);
  }
  if (K > 1) /* the gradient of the mean loss over the micro-batches */
    b->axpby(b, n, 1.0f / (float)K, t->grad_sum, 0.0f, a->grads);
  return finish_step(t, (float)(loss_sum / (double)K), 1, report);
}

/* ------------------------------------------------------------------ DP-SGD */

damo_status damo_trainer_set_privacy(damo_trainer *t, double clip, double noise, double expected_batch, uint64_t seed) {
  if (!t) return damo_error(DAMO_ERR_INVALID_ARG, "trainer_set_privacy: NULL trainer");
  if (t->dp) return damo_error(DAMO_ERR_UNSUPPORTED, "trainer_set_privacy: DP-SGD runs in one process (its noise and "
                               "clipping are not split over data-parallel ranks yet)");
  if (!t->a.graph) return damo_error(DAMO_ERR_UNSUPPORTED, "trainer_set_privacy: %s gives no graph for per-example "
                                     "gradients", t->a.name);
  if (t->a.backend->device != DAMO_DEVICE_CPU)
    return damo_error(DAMO_ERR_UNSUPPORTED, "trainer_set_privacy: per-example gradients run on the CPU only");
  if (!(clip > 0) || !(noise >= 0) || !(expected_batch > 0))
    return damo_error(DAMO_ERR_INVALID_ARG, "trainer_set_privacy: clip %g, noise %g and expected batch %g must be "
                      "positive (noise may be 0)", clip, noise, expected_batch);
  struct private_state *p = t->priv ? t->priv : calloc(1, sizeof *p);
  if (!p) return damo_error(DAMO_ERR_NOMEM, "trainer_set_privacy: out of memory");
  if (!p->sum && !(p->sum = damo_alloc((size_t)(t->a.n_params ? t->a.n_params : 1) * sizeof(float)))) {
    private_free(p);
    t->priv = NULL;
    return damo_error(DAMO_ERR_NOMEM, "trainer_set_privacy: out of memory for the clipped sum");
  }
  p->clip = clip, p->noise = noise, p->expected_batch = expected_batch, p->seed = seed;
  t->priv = p;
  return DAMO_OK;
}

/* One micro-batch of DP-SGD: forward, per-example norms, the weighted backward, added to the
 * clipped sum. The loss is a mean over the graph's b examples, so example i's own gradient is
 * b times its share, and the weight b * min(1, C / |g_i|) turns backward into sum_i c_i g_i. */
static damo_status private_micro(damo_trainer *t, int64_t k, float *loss, int *ran) {
  const damo_train_adapter *a = &t->a;
  struct private_state *p = t->priv;
  damo_status st = a->stage(a->ctx, k);
  if (st != DAMO_OK) return st;
  damo_graph *g = a->graph(a->ctx);
  const int64_t b = g ? g->batch : 0;
  *ran = 0;
  if (b == 0) return DAMO_OK;
  if ((st = a->forward(a->ctx, loss)) != DAMO_OK) return st;
  if (!isfinite(*loss)) return nonfinite_loss(t, *loss, 1);
  if (a->observe) a->observe(a->ctx);
  if (b > p->norms_cap) {
    float *grown = realloc(p->norms, (size_t)b * sizeof *grown);
    if (!grown) return damo_error(DAMO_ERR_NOMEM, "DP-SGD: out of memory for %lld example norms", (long long)b);
    p->norms = grown, p->norms_cap = b;
  }
  if ((st = damo_graph_example_norms(g, p->norms)) != DAMO_OK) return st;
  for (int64_t i = 0; i < b; i++) {
    const double norm = sqrt((double)p->norms[i]) * (double)b;
    p->norms[i] = (float)((double)b * (norm > p->clip ? p->clip / norm : 1.0));
  }
  damo_graph_set_example_weights(g, p->norms);
  a->backend->fill(a->backend, a->grads, 0.0f, a->n_params); /* the block's padding too: it is summed below */
  st = a->backward(a->ctx);
  damo_graph_set_example_weights(g, NULL);
  *ran = 1;
  return st;
}

static damo_status private_step(damo_trainer *t, damo_train_report *report) {
  const damo_train_adapter *a = &t->a;
  struct private_state *p = t->priv;
  const damo_backend *b = a->backend;
  const int64_t K = a->micro_batches ? a->micro_batches(a->ctx) : t->grad_accum, n = a->n_params;
  double loss_sum = 0.0;
  int64_t ran = 0;
  damo_status st = DAMO_OK;
  memset(p->sum, 0, (size_t)n * sizeof *p->sum);
  for (int64_t k = 0; k < K; k++) {
    float loss = 0.0f;
    int did = 0;
    if ((st = private_micro(t, k, &loss, &did)) != DAMO_OK) return step_error(t, st, k);
    if (!did) continue;
    b->axpby(b, n, 1.0f, a->grads, 1.0f, p->sum);
    loss_sum += loss;
    ran++;
  }
  /* the Gaussian mechanism: the step's own generator, so a resumed run draws the same noise */
  damo_rng r;
  damo_rng_seed(&r, p->seed ^ (uint64_t)(t->steps_done + 1) * 0x9e3779b97f4a7c15ULL);
  const float sd = (float)(p->noise * p->clip), inv = (float)(1.0 / p->expected_batch);
  const int64_t everything[2] = {0, n}, *range = a->trained_ranges ? a->trained_ranges : everything;
  const int n_ranges = a->trained_ranges ? a->n_trained_ranges : 1;
  int64_t at = 0;
  for (int k = 0; k <= n_ranges; k++) {
    const int64_t lo = k < n_ranges ? range[2 * k] : n;
    for (; at < lo; at++) a->grads[at] = p->sum[at] * inv; /* frozen or padding: no noise */
    if (k == n_ranges) break;
    for (; at < lo + range[2 * k + 1]; at++)
      a->grads[at] = (p->sum[at] + (sd > 0 ? sd * damo_rng_normal(&r) : 0.0f)) * inv;
  }
  if (ran) p->last_loss = (float)(loss_sum / (double)ran);
  return finish_step(t, p->last_loss, ran > 0, report);
}

damo_status damo_trainer_set_data_parallel(damo_trainer *t, damo_dist *d, const damo_data_parallel_options *o) {
  if (!t) return damo_error(DAMO_ERR_INVALID_ARG, "trainer_set_data_parallel: NULL trainer");
  if (t->dp) return damo_error(DAMO_ERR_STATE, "trainer_set_data_parallel: the trainer is data-parallel already");
  if (t->priv) return damo_error(DAMO_ERR_UNSUPPORTED, "trainer_set_data_parallel: DP-SGD runs in one process (its "
                                 "noise and clipping are not split over ranks yet)");
  return dp_new(d, o, &t->a, t->opt, t->grad_sum, t->grad_accum, &t->dp);
}

damo_dist *damo_trainer_dist(const damo_trainer *t) { return t ? dp_dist(t->dp) : NULL; }

damo_status damo_trainer_data_parallel_stats(const damo_trainer *t, damo_data_parallel_stats *out) {
  if (!t || !out) return damo_error(DAMO_ERR_INVALID_ARG, "trainer_data_parallel_stats: NULL argument");
  dp_stats(t->dp, out);
  return DAMO_OK;
}

damo_status damo_trainer_optimizer_state(damo_trainer *t, damo_tensor_dict *d) {
  if (!t || !d) return damo_error(DAMO_ERR_INVALID_ARG, "trainer_optimizer_state: NULL argument");
  if (!t->dp) return damo_optimizer_state_views(t->opt, d);
  damo_status st = dp_gather_moments(t->dp, t->opt); /* ZeRO: a collective; else nothing */
  if (st == DAMO_OK) st = dp_optimizer_state(t->dp, t->opt, d);
  return st;
}

void damo_trainer_release_optimizer_state(damo_trainer *t) {
  if (t) dp_release_moments(t->dp);
}
