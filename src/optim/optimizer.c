/* optimizer.c - SGD (momentum, Nesterov), Adam and AdamW over one flat parameter array, with
 * global-norm gradient clipping and checkpointable state. The update rules follow PyTorch 1.13
 * (torch.optim.SGD / Adam / AdamW, torch.nn.utils.clip_grad_norm_) operation for operation,
 * in float32, so a run can be checked against torch step by step.
 *
 * Here: configs, the step's scalars (schedule, bias corrections, the clip factor, computed on
 * the host in double as PyTorch does) and checkpoint state. The update itself is one fused
 * pass over params, grads and moments run by the optimizer's backend (the CPU's loops are
 * kernels/cpu/optim_update.c), as is the gradient norm; moments live in the backend's
 * memory. */
#include "graph/backend.h"
#include "graph/profile.h"
#include "kernels/kernels.h"
#include "optim/optim.h"

#include <math.h>

struct damo_optimizer {
  damo_optimizer_config cfg; /* defaults resolved */
  int64_t n;                 /* parameter count */
  int64_t steps;             /* updates taken */
  int64_t n_blocks;
  float *m;        /* SGD momentum buffer, or Adam's first moment; NULL if unused */
  float *v;        /* Adam's second moment; NULL if unused */
  double *partial; /* per-block sums of squared gradients (host scratch for the backend) */
  uint8_t *decay_mask; /* NULL: weight decay on every element; else only where mask[i] != 0 */
  const damo_backend *b; /* runs the update and owns m, v and decay_mask */
  /* ZeRO-1 (damo_optimizer_set_shard): n above is the shard's length, starting at shard_lo of
   * n_full parameters; the norm's sum of squares goes through reduce. Else n_full == n. */
  int64_t n_full, shard_lo;
  damo_status (*reduce)(void *ctx, double *sum_squares);
  void *reduce_ctx;
};

/* ------------------------------------------------------------------ configs */

damo_optimizer_config damo_sgd(float lr, float momentum, int nesterov) {
  damo_optimizer_config c;
  memset(&c, 0, sizeof c);
  c.kind = DAMO_OPT_SGD;
  c.lr = lr;
  c.momentum = momentum;
  c.nesterov = nesterov ? 1 : 0;
  c.schedule.kind = DAMO_SCHED_CONSTANT;
  c.schedule.gamma = 0.1f;
  return c;
}

damo_optimizer_config damo_adam(float lr) {
  damo_optimizer_config c = damo_sgd(lr, 0.0f, 0);
  c.kind = DAMO_OPT_ADAM;
  c.beta1 = 0.9f;
  c.beta2 = 0.999f;
  c.eps = 1e-8f;
  return c;
}

damo_optimizer_config damo_adamw(float lr, float weight_decay) {
  damo_optimizer_config c = damo_adam(lr);
  c.kind = DAMO_OPT_ADAMW;
  c.weight_decay = weight_decay;
  return c;
}

static int finite_nonneg(float x) { return isfinite(x) && x >= 0.0f; }

/* Fills in the "0 means default" fields and rejects what PyTorch would reject. */
static damo_status resolve_config(const damo_optimizer_config *in, damo_optimizer_config *c) {
  *c = *in;
  if (c->kind != DAMO_OPT_SGD && c->kind != DAMO_OPT_ADAM && c->kind != DAMO_OPT_ADAMW)
    return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: unknown kind %d", (int)c->kind);
  if (!finite_nonneg(c->lr)) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: learning rate %g is not a finite value >= 0", (double)c->lr);
  if (!finite_nonneg(c->weight_decay))
    return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: weight_decay %g is not a finite value >= 0", (double)c->weight_decay);
  if (!finite_nonneg(c->clip_norm))
    return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: clip_norm %g is not a finite value >= 0 (0 = off)", (double)c->clip_norm);
  if (c->kind == DAMO_OPT_SGD) {
    if (!finite_nonneg(c->momentum))
      return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: SGD momentum %g is not a finite value >= 0", (double)c->momentum);
    if (c->nesterov && c->momentum == 0.0f)
      return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: Nesterov SGD needs a momentum > 0");
  } else {
    if (c->beta1 == 0.0f) c->beta1 = DAMO_ADAM_DEFAULT_BETA1;
    if (c->beta2 == 0.0f) c->beta2 = DAMO_ADAM_DEFAULT_BETA2;
    if (c->eps == 0.0f) c->eps = DAMO_ADAM_DEFAULT_EPS;
    if (!(c->beta1 > 0.0f && c->beta1 < 1.0f) || !(c->beta2 > 0.0f && c->beta2 < 1.0f))
      return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: Adam betas (%g, %g) must lie in (0, 1)", (double)c->beta1,
                        (double)c->beta2);
    if (!finite_nonneg(c->eps)) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: Adam eps %g is not a finite value > 0", (double)c->eps);
  }
  damo_schedule *s = &c->schedule;
  if (s->kind != DAMO_SCHED_CONSTANT && s->kind != DAMO_SCHED_STEP && s->kind != DAMO_SCHED_COSINE)
    return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: unknown schedule kind %d", (int)s->kind);
  if (s->warmup_steps < 0 || s->total_steps < 0 || s->step_size < 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: schedule step counts must be >= 0 (warmup %lld, step_size %lld, total %lld)",
                      (long long)s->warmup_steps, (long long)s->step_size, (long long)s->total_steps);
  if (s->kind == DAMO_SCHED_STEP && s->step_size == 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: a STEP schedule needs step_size > 0");
  if (!finite_nonneg(s->gamma)) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: schedule gamma %g is not a finite value >= 0", (double)s->gamma);
  if (!finite_nonneg(s->min_lr)) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer: schedule min_lr %g is not a finite value >= 0", (double)s->min_lr);
  return DAMO_OK;
}

/* ------------------------------------------------------------------ lifetime */

static int uses_momentum(const damo_optimizer *o) { return o->cfg.kind == DAMO_OPT_SGD && o->cfg.momentum != 0.0f; }
static int is_adam(const damo_optimizer *o) { return o->cfg.kind != DAMO_OPT_SGD; }

/* The moments this configuration keeps, zeroed, in b's memory (unused ones stay NULL). */
static damo_status alloc_moments(const damo_optimizer *o, const damo_backend *b, float **m, float **v) {
  const size_t bytes = (size_t)o->n * sizeof(float);
  *m = *v = NULL;
  if (uses_momentum(o) || is_adam(o)) {
    if (!(*m = b->alloc(b, bytes))) return DAMO_ERR_NOMEM;
    b->fill(b, *m, 0.0f, o->n);
  }
  if (is_adam(o)) {
    if (!(*v = b->alloc(b, bytes))) {
      b->free(b, *m);
      *m = NULL;
      return DAMO_ERR_NOMEM;
    }
    b->fill(b, *v, 0.0f, o->n);
  }
  return DAMO_OK;
}

damo_optimizer *damo_optimizer_new(const damo_optimizer_config *cfg, int64_t n_params) {
  if (!cfg) {
    damo_error(DAMO_ERR_INVALID_ARG, "optimizer: NULL config");
    return NULL;
  }
  if (n_params < 0) {
    damo_error(DAMO_ERR_INVALID_ARG, "optimizer: negative parameter count %lld", (long long)n_params);
    return NULL;
  }
  damo_optimizer_config c;
  if (resolve_config(cfg, &c) != DAMO_OK) return NULL;
  size_t bytes;
  if (damo_mul_overflow((size_t)n_params, sizeof(float), &bytes)) {
    damo_error(DAMO_ERR_NOMEM, "optimizer: %lld parameters overflow the address space", (long long)n_params);
    return NULL;
  }
  damo_optimizer *o = calloc(1, sizeof *o);
  if (!o) {
    damo_error(DAMO_ERR_NOMEM, "optimizer: out of memory");
    return NULL;
  }
  o->cfg = c;
  o->n = o->n_full = n_params;
  o->n_blocks = (n_params + DAMO_OPT_BLOCK - 1) / DAMO_OPT_BLOCK;
  o->b = damo_backend_cpu();
  o->partial = damo_calloc((size_t)o->n_blocks * sizeof(double));
  if (!o->partial || alloc_moments(o, o->b, &o->m, &o->v) != DAMO_OK) {
    damo_optimizer_free(o);
    return NULL;
  }
  return o;
}

void damo_optimizer_free(damo_optimizer *o) {
  if (!o) return;
  o->b->free(o->b, o->m);
  o->b->free(o->b, o->v);
  o->b->free(o->b, o->decay_mask);
  damo_free(o->partial);
  free(o);
}

damo_status damo_optimizer_set_backend(damo_optimizer *o, const damo_backend *b) {
  if (!o || !b) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer set_backend: NULL optimizer or backend");
  if (b == o->b) return DAMO_OK;
  if (o->steps > 0 || o->decay_mask)
    return damo_error(DAMO_ERR_STATE, "optimizer set_backend: choose the backend before the first step and before "
                      "the decay mask");
  float *m = NULL, *v = NULL;
  damo_status st = alloc_moments(o, b, &m, &v);
  if (st != DAMO_OK) return damo_error_prefix(st, "optimizer set_backend '%s': ", b->name);
  o->b->free(o->b, o->m);
  o->b->free(o->b, o->v);
  o->m = m;
  o->v = v;
  o->b = b;
  return DAMO_OK;
}

const damo_backend *damo_optimizer_backend(const damo_optimizer *o) { return o ? o->b : NULL; }

int64_t damo_optimizer_steps(const damo_optimizer *o) { return o ? o->steps : 0; }

damo_status damo_optimizer_set_decay_mask(damo_optimizer *o, const uint8_t *mask) {
  if (!o) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer decay mask: NULL optimizer");
  if (!mask) {
    o->b->free(o->b, o->decay_mask);
    o->decay_mask = NULL;
    return DAMO_OK;
  }
  const size_t bytes = o->n > 0 ? (size_t)o->n : 1;
  const int host = damo_backend_is_host(o->b);
  uint8_t *dev = o->b->alloc(o->b, bytes), *copy = host ? dev : malloc(bytes); /* the CPU writes in place */
  if (!dev || !copy) {
    if (!host) free(copy);
    o->b->free(o->b, dev);
    return damo_error(DAMO_ERR_NOMEM, "optimizer decay mask: out of memory for %lld flags", (long long)o->n);
  }
  for (int64_t i = 0; i < o->n; i++) copy[i] = mask[o->shard_lo + i] ? 1 : 0; /* the shard's slice */
  damo_status st = host ? DAMO_OK : o->b->from_host(o->b, dev, copy, bytes);
  if (!host) free(copy);
  if (st != DAMO_OK) {
    o->b->free(o->b, dev);
    return st;
  }
  o->b->free(o->b, o->decay_mask);
  o->decay_mask = dev;
  return DAMO_OK;
}

/* Zeroes the moments of parameters [lo, hi) of the whole block (this shard's part of them). */
static void clear_moments(damo_optimizer *o, int64_t lo, int64_t hi) {
  if (lo < o->shard_lo) lo = o->shard_lo;
  if (hi > o->shard_lo + o->n) hi = o->shard_lo + o->n;
  if (hi <= lo) return;
  if (o->m) o->b->fill(o->b, o->m + (lo - o->shard_lo), 0.0f, hi - lo);
  if (o->v) o->b->fill(o->b, o->v + (lo - o->shard_lo), 0.0f, hi - lo);
}

void optimizer_clear_moments_outside(damo_optimizer *o, const int64_t *ranges, int n_ranges) {
  if (!o || !ranges) return;
  int64_t at = 0;
  for (int k = 0; k <= n_ranges; k++) {
    clear_moments(o, at, k < n_ranges ? ranges[2 * k] : o->n_full);
    if (k < n_ranges) at = ranges[2 * k] + ranges[2 * k + 1];
  }
}

/* ------------------------------------------------------------------ the step */

/* The first non-finite gradient, for the message (an error path: a device copies to host). */
static damo_status non_finite_error(const damo_optimizer *o, const float *g) {
  float *host = NULL;
  if (!damo_backend_is_host(o->b) && (host = malloc((size_t)(o->n ? o->n : 1) * sizeof(float))) &&
      o->b->to_host(o->b, host, g, (size_t)o->n * sizeof(float)) == DAMO_OK)
    g = host;
  damo_status st = DAMO_OK;
  if (damo_backend_is_host(o->b) || g == host)
    for (int64_t i = 0; i < o->n && st == DAMO_OK; i++)
      if (!isfinite(g[i]))
        st = damo_error(DAMO_ERR_NUMERIC, "optimizer step %lld: gradient %lld of %lld is %g; parameters left unchanged",
                        (long long)o->steps, (long long)i, (long long)o->n, (double)g[i]);
  free(host);
  if (st != DAMO_OK) return st;
  /* Every element finite but the norm is not: cannot happen for float inputs summed in double. */
  return damo_error(DAMO_ERR_NUMERIC, "optimizer step %lld: gradient norm is not finite; parameters left unchanged",
                    (long long)o->steps);
}

static damo_status optimizer_step(damo_optimizer *o, float *params, float *grads, int64_t total_steps, float *grad_norm) {
  if (!o) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer step: NULL optimizer");
  if (o->n > 0 && (!params || !grads)) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer step: NULL params or grads");
  const damo_backend *b = o->b;

  /* The norm is always taken: it is reported, drives clipping, and keeps NaN/Inf gradients
   * from reaching the weights. */
  double sum_squares = b->sum_squares(b, grads, o->n, o->partial);
  if (o->reduce) { /* a shard: the norm is the whole gradient's */
    damo_status st = o->reduce(o->reduce_ctx, &sum_squares);
    if (st != DAMO_OK) return damo_error_prefix(st, "optimizer step %lld, gradient norm: ", (long long)o->steps);
  }
  double norm = sqrt(sum_squares);
  if (grad_norm) *grad_norm = (float)norm;
  if (!isfinite(norm)) return non_finite_error(o, grads);

  const damo_optimizer_config *c = &o->cfg;
  damo_opt_update k;
  memset(&k, 0, sizeof k);
  k.lr = damo_schedule_lr(&c->schedule, c->lr, o->steps, total_steps);
  k.wd = c->weight_decay;
  k.coef = 1.0f;
  if (c->clip_norm > 0.0f) {
    /* torch: coef = max_norm / (norm + 1e-6), clamped to 1 */
    double coef = (double)c->clip_norm / (norm + 1e-6);
    if (coef < 1.0) {
      k.coef = (float)coef;
      k.clip = 1;
    }
  }
  if (c->kind == DAMO_OPT_SGD) {
    k.rule = uses_momentum(o) ? DAMO_RULE_SGD_MOMENTUM : DAMO_RULE_SGD;
    k.mu = c->momentum;
    k.first = o->steps == 0;
    k.nesterov = c->nesterov;
  } else {
    k.rule = c->kind == DAMO_OPT_ADAMW ? DAMO_RULE_ADAMW : DAMO_RULE_ADAM;
    double t = (double)(o->steps + 1), b1 = c->beta1, b2 = c->beta2;
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    k.b1 = c->beta1;
    k.b2 = c->beta2;
    k.one_m_b1 = (float)(1.0 - b1);
    k.one_m_b2 = (float)(1.0 - b2);
    k.bc2_sqrt = (float)sqrt(bc2);
    k.eps = c->eps;
    k.neg_step_size = (float)(-(double)k.lr / bc1);
    k.decay = (float)(1.0 - (double)k.lr * (double)c->weight_decay);
  }
  k.params = params;
  k.grads = grads;
  k.m = o->m;
  k.v = o->v;
  k.mask = o->decay_mask;
  k.n = o->n;
  b->opt_update(b, &k);
  o->steps++;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ checkpoint state */

#define STATE_STEP "optimizer.step"
#define STATE_MOMENTUM "optimizer.momentum"
#define STATE_M "optimizer.m"
#define STATE_V "optimizer.v"

/* The moment tensors this optimizer keeps: names and storage, up to two. */
static int state_moments(damo_optimizer *o, const char **names, float **bufs) {
  if (uses_momentum(o)) {
    names[0] = STATE_MOMENTUM;
    bufs[0] = o->m;
    return 1;
  }
  if (is_adam(o)) {
    names[0] = STATE_M;
    bufs[0] = o->m;
    names[1] = STATE_V;
    bufs[1] = o->v;
    return 2;
  }
  return 0;
}

/* The state as copies, or as views of the live moment buffers (views: no copy). */
static damo_status state_into(damo_optimizer *o, damo_tensor_dict *out, int views) {
  if (!o || !out) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer state: NULL argument");
  const char *names[2];
  float *bufs[2];
  int nm = state_moments(o, names, bufs);
  if (views && nm && !damo_backend_is_host(o->b))
    return damo_error(DAMO_ERR_INVALID_ARG, "optimizer state views: the moments are on %s (backend '%s'), not in host "
                      "memory; take copies (damo_optimizer_state)", damo_device_name(o->b->device), o->b->name);
  /* Check the names first so a failure leaves the dict as it was. */
  if (damo_tensor_dict_get(out, STATE_STEP)) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer state: the dict already holds '%s'", STATE_STEP);
  for (int i = 0; i < nm; i++)
    if (damo_tensor_dict_get(out, names[i])) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer state: the dict already holds '%s'", names[i]);

  /* The step fits one int32 in any realistic run; beyond that it is stored as (low, high). */
  int64_t count = o->steps <= INT32_MAX ? 1 : 2;
  damo_tensor *st = damo_tensor_new(DAMO_I32, 1, &count);
  if (!st) return damo_error_prefix(DAMO_ERR_NOMEM, "optimizer state: ");
  uint64_t u = (uint64_t)o->steps;
  uint32_t words[2] = {(uint32_t)(u & 0xffffffffu), (uint32_t)(u >> 32)};
  memcpy(st->data, words, (size_t)count * sizeof(uint32_t));

  damo_tensor *ts[2] = {NULL, NULL};
  int64_t shape = o->n;
  for (int i = 0; i < nm; i++) {
    ts[i] = views ? damo_tensor_wrap(DAMO_F32, 1, &shape, bufs[i]) : damo_tensor_new(DAMO_F32, 1, &shape);
    if (!ts[i]) {
      damo_tensor_free(st);
      damo_tensor_free(ts[0]);
      return damo_error_prefix(DAMO_ERR_NOMEM, "optimizer state: ");
    }
  }
  damo_status s = DAMO_OK;
  for (int i = 0; i < nm && !views && s == DAMO_OK; i++)
    s = o->b->to_host(o->b, ts[i]->data, bufs[i], (size_t)o->n * sizeof(float));
  if (s != DAMO_OK) {
    damo_tensor_free(st);
    for (int i = 0; i < nm; i++) damo_tensor_free(ts[i]);
    return damo_error_prefix(s, "optimizer state: ");
  }
  s = damo_tensor_dict_add(out, STATE_STEP, st);
  for (int i = 0; i < nm; i++) {
    if (s == DAMO_OK)
      s = damo_tensor_dict_add(out, names[i], ts[i]);
    else
      damo_tensor_free(ts[i]);
  }
  return s;
}

damo_status damo_optimizer_state(damo_optimizer *o, damo_tensor_dict *out) { return state_into(o, out, 0); }

damo_status damo_optimizer_state_views(damo_optimizer *o, damo_tensor_dict *out) { return state_into(o, out, 1); }

/* Checks one saved moment: F32 with n elements, finite, and >= 0 when it is a second moment. */
static damo_status check_moment(const damo_optimizer *o, const damo_tensor *t, const char *name, int nonneg) {
  if (!t) return damo_error(DAMO_ERR_NOT_FOUND, "optimizer state: no tensor '%s'", name);
  if (t->dtype != DAMO_F32) return damo_error(DAMO_ERR_FORMAT, "optimizer state: '%s' is %s, expected f32", name, damo_dtype_name(t->dtype));
  if (damo_tensor_numel(t) != o->n_full)
    return damo_error(DAMO_ERR_SHAPE, "optimizer state: '%s' has %lld values, the optimizer has %lld parameters", name,
                      (long long)damo_tensor_numel(t), (long long)o->n_full);
  const float *x = damo_tensor_f32(t);
  for (int64_t i = 0; i < o->n_full; i++)
    if (!isfinite(x[i]) || (nonneg && x[i] < 0.0f))
      return damo_error(DAMO_ERR_FORMAT, "optimizer state: '%s'[%lld] = %g is not a valid %s", name, (long long)i,
                        (double)x[i], nonneg ? "second moment (finite, >= 0)" : "finite value");
  return DAMO_OK;
}

damo_status damo_optimizer_load_state(damo_optimizer *o, const damo_tensor_dict *d) {
  if (!o || !d) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer load state: NULL argument");
  const damo_tensor *st = damo_tensor_dict_get(d, STATE_STEP);
  if (!st) return damo_error(DAMO_ERR_NOT_FOUND, "optimizer state: no tensor '%s'", STATE_STEP);
  int64_t count = damo_tensor_numel(st);
  if (st->dtype != DAMO_I32 || (count != 1 && count != 2))
    return damo_error(DAMO_ERR_FORMAT, "optimizer state: '%s' must be i32 with 1 or 2 values, got %s with %lld", STATE_STEP,
                      damo_dtype_name(st->dtype), (long long)count);
  int64_t steps;
  if (count == 1) {
    steps = damo_tensor_i32(st)[0];
  } else {
    uint32_t w[2];
    memcpy(w, st->data, sizeof w);
    steps = (int64_t)(((uint64_t)w[1] << 32) | w[0]);
  }
  if (steps < 0) return damo_error(DAMO_ERR_FORMAT, "optimizer state: negative step count %lld", (long long)steps);

  const char *names[2];
  float *bufs[2];
  int nm = state_moments(o, names, bufs);
  const damo_tensor *ts[2] = {NULL, NULL};
  for (int i = 0; i < nm; i++) {
    ts[i] = damo_tensor_dict_get(d, names[i]);
    damo_status s = check_moment(o, ts[i], names[i], bufs[i] == o->v);
    if (s != DAMO_OK) return s;
  }
  for (int i = 0; i < nm; i++) {
    damo_status s = o->b->from_host(o->b, bufs[i], (const float *)ts[i]->data + o->shard_lo, (size_t)o->n * sizeof(float));
    if (s != DAMO_OK) return damo_error_prefix(s, "optimizer load state: ");
  }
  o->steps = steps;
  return DAMO_OK;
}

damo_status damo_optimizer_set_shard(damo_optimizer *o, int64_t lo, int64_t hi,
                                     damo_status (*reduce)(void *ctx, double *sum_squares), void *ctx) {
  if (!o) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer set_shard: NULL optimizer");
  if (o->steps > 0) return damo_error(DAMO_ERR_STATE, "optimizer set_shard: shard before the first step");
  if (o->n != o->n_full) return damo_error(DAMO_ERR_STATE, "optimizer set_shard: the optimizer is sharded already");
  if (lo < 0 || hi < lo || hi > o->n_full)
    return damo_error(DAMO_ERR_INVALID_ARG, "optimizer set_shard: [%lld, %lld) is not a range of the %lld parameters",
                      (long long)lo, (long long)hi, (long long)o->n_full);
  const damo_backend *b = o->b;
  const int64_t n_full = o->n;
  uint8_t *full_mask = NULL;
  if (o->decay_mask) { /* keep the shard's slice of the mask (host copy of the device's) */
    if (!(full_mask = malloc((size_t)(n_full ? n_full : 1)))) return damo_error(DAMO_ERR_NOMEM, "optimizer set_shard: out of memory");
    damo_status st = b->to_host(b, full_mask, o->decay_mask, (size_t)n_full);
    if (st != DAMO_OK) {
      free(full_mask);
      return st;
    }
  }
  float *m = NULL, *v = NULL;
  o->n = hi - lo; /* alloc_moments sizes by n */
  if (alloc_moments(o, b, &m, &v) != DAMO_OK) {
    o->n = n_full;
    free(full_mask);
    return damo_error(DAMO_ERR_NOMEM, "optimizer set_shard: out of memory for the moments of %lld parameters",
                      (long long)(hi - lo));
  }
  b->free(b, o->m);
  b->free(b, o->v);
  o->m = m, o->v = v;
  o->shard_lo = lo;
  o->reduce = reduce, o->reduce_ctx = ctx;
  damo_free(o->partial);
  o->n_blocks = (o->n + DAMO_OPT_BLOCK - 1) / DAMO_OPT_BLOCK;
  o->partial = damo_calloc((size_t)(o->n_blocks ? o->n_blocks : 1) * sizeof(double));
  damo_status st = o->partial ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "optimizer set_shard: out of memory");
  if (st == DAMO_OK && full_mask) { /* set_decay_mask keeps the slice at shard_lo */
    b->free(b, o->decay_mask);
    o->decay_mask = NULL;
    st = damo_optimizer_set_decay_mask(o, full_mask);
  }
  free(full_mask);
  return st;
}

int64_t damo_optimizer_shard(const damo_optimizer *o, int64_t *lo) {
  if (lo) *lo = o ? o->shard_lo : 0;
  return o ? o->n : 0;
}

float damo_optimizer_lr(const damo_optimizer *o, int64_t total_steps) {
  return o ? damo_schedule_lr(&o->cfg.schedule, o->cfg.lr, o->steps, total_steps) : 0.0f;
}

damo_status damo_optimizer_step(damo_optimizer *o, float *params, float *grads, int64_t total_steps, float *grad_norm) {
  const double t0 = damo_profile_on ? damo_now_seconds() : 0.0;
  damo_status st = optimizer_step(o, params, grads, total_steps, grad_norm);
  if (damo_profile_on) damo_profile_record(DAMO_PROFILE_OPTIMIZER, 1, damo_now_seconds() - t0);
  return st;
}
