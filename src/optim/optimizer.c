/* optimizer.c - SGD (momentum, Nesterov), Adam and AdamW over one flat parameter array, with
 * global-norm gradient clipping and checkpointable state. The update rules follow PyTorch 1.13
 * (torch.optim.SGD / Adam / AdamW, torch.nn.utils.clip_grad_norm_) operation for operation,
 * in float32, so a run can be checked against torch step by step.
 *
 * Each update is one fused pass over params, grads and moments. Large arrays are split into
 * fixed blocks shared out by OpenMP; every element is updated independently, so results do
 * not depend on the thread count. The gradient norm sums per-block partials in block order
 * for the same reason. */
#include "graph/profile.h"
#include "kernels/kernels.h"
#include "optim/optim.h"

#include <math.h>

/* The Adam loop vectorises only under -fno-math-errno (see adam_block); without it clang
 * would warn that the requested `omp simd` was not honoured. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

/* Elements per block: the unit of threading and of the norm's partial sums. */
#define OPT_BLOCK ((int64_t)1 << 12)
/* Below this many parameters a thread team costs more than it saves. */
#define OPT_PARALLEL_MIN ((int64_t)1 << 15)

#if defined(__GNUC__)
#define OPT_INLINE static inline __attribute__((always_inline))
#else
#define OPT_INLINE static inline
#endif

struct damo_optimizer {
  damo_optimizer_config cfg; /* defaults resolved */
  int64_t n;                 /* parameter count */
  int64_t steps;             /* updates taken */
  int64_t n_blocks;
  float *m;        /* SGD momentum buffer, or Adam's first moment; NULL if unused */
  float *v;        /* Adam's second moment; NULL if unused */
  double *partial; /* per-block sums of squared gradients */
  uint8_t *decay_mask; /* NULL: weight decay on every element; else only where mask[i] != 0 */
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
  o->n = n_params;
  o->n_blocks = (n_params + OPT_BLOCK - 1) / OPT_BLOCK;
  o->partial = damo_calloc((size_t)o->n_blocks * sizeof(double));
  int ok = o->partial != NULL;
  if (ok && (uses_momentum(o) || is_adam(o))) ok = (o->m = damo_calloc(bytes)) != NULL;
  if (ok && is_adam(o)) ok = (o->v = damo_calloc(bytes)) != NULL;
  if (!ok) {
    damo_optimizer_free(o);
    return NULL;
  }
  return o;
}

void damo_optimizer_free(damo_optimizer *o) {
  if (!o) return;
  damo_free(o->m);
  damo_free(o->v);
  damo_free(o->partial);
  free(o->decay_mask);
  free(o);
}

int64_t damo_optimizer_steps(const damo_optimizer *o) { return o ? o->steps : 0; }

damo_status damo_optimizer_set_decay_mask(damo_optimizer *o, const uint8_t *mask) {
  if (!o) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer decay mask: NULL optimizer");
  if (!mask) {
    free(o->decay_mask);
    o->decay_mask = NULL;
    return DAMO_OK;
  }
  uint8_t *copy = malloc(o->n > 0 ? (size_t)o->n : 1);
  if (!copy) return damo_error(DAMO_ERR_NOMEM, "optimizer decay mask: out of memory for %lld flags", (long long)o->n);
  for (int64_t i = 0; i < o->n; i++) copy[i] = mask[i] ? 1 : 0;
  free(o->decay_mask);
  o->decay_mask = copy;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ update kernels */

/* Per-step scalars, computed once in double (as PyTorch does in Python) and used as float. */
typedef struct step_consts {
  float lr, wd, mu, coef;
  int first, nesterov;
  float b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, neg_step_size, decay;
} step_consts;

/* SGD on [lo, hi). clip and mom are literal constants at every call, so inlining removes the
 * branches and leaves a straight vector loop. */
OPT_INLINE void sgd_block(float *restrict p, float *restrict g, float *restrict buf, const uint8_t *restrict mask,
                          int64_t lo, int64_t hi, const step_consts *k, const int clip, const int mom) {
  const float lr = k->lr, wd = k->wd, mu = k->mu, coef = k->coef;
  const int first = k->first, nesterov = k->nesterov;
#pragma omp simd
  for (int64_t i = lo; i < hi; i++) {
    float gi = g[i];
    if (clip) {
      gi *= coef; /* clip_grad_norm_ scales the gradient in place */
      g[i] = gi;
    }
    gi += (mask && !mask[i] ? 0.0f : wd) * p[i]; /* L2: weight_decay 0 adds an exact 0 */
    if (mom) {
      /* torch creates the buffer as a copy of the first gradient */
      float b = first ? gi : mu * buf[i] + gi;
      buf[i] = b;
      gi = nesterov ? gi + mu * b : b;
    }
    p[i] -= lr * gi;
  }
}

/* Adam (decoupled = 0) or AdamW (decoupled = 1) on [lo, hi). GCC vectorises this loop only
 * under -fno-math-errno: otherwise sqrtf keeps a scalar errno path (never taken here). */
OPT_INLINE void adam_block(float *restrict p, float *restrict g, float *restrict m, float *restrict v,
                           const uint8_t *restrict mask, int64_t lo, int64_t hi, const step_consts *k, const int clip,
                           const int decoupled) {
  const float wd = k->wd, coef = k->coef, b1 = k->b1, omb1 = k->one_m_b1, b2 = k->b2, omb2 = k->one_m_b2;
  const float bc2s = k->bc2_sqrt, eps = k->eps, nss = k->neg_step_size, decay = k->decay;
#pragma omp simd
  for (int64_t i = lo; i < hi; i++) {
    float gi = g[i];
    if (clip) {
      gi *= coef;
      g[i] = gi;
    }
    float pi = p[i];
    if (decoupled)
      pi *= mask && !mask[i] ? 1.0f : decay; /* AdamW decays the weight before the update */
    else
      gi += (mask && !mask[i] ? 0.0f : wd) * pi; /* Adam adds L2 to the gradient */
    float mi = b1 * m[i] + omb1 * gi;
    float vi = b2 * v[i] + omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) / bc2s + eps;
    p[i] = pi + nss * mi / denom;
  }
}

DAMO_MULTIVERSION static double block_sumsq(const float *g, int64_t lo, int64_t hi) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = lo; i < hi; i++) s += (double)g[i] * (double)g[i];
  return s;
}

/* Sum of squared gradients, in double, summed block by block in a fixed order. */
static double grad_sumsq(damo_optimizer *o, const float *g) {
  const int64_t n = o->n, nb = o->n_blocks;
  double *part = o->partial;
#pragma omp parallel for schedule(static) if (n > OPT_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t b = 0; b < nb; b++) {
    int64_t lo = b * OPT_BLOCK, hi = lo + OPT_BLOCK < n ? lo + OPT_BLOCK : n;
    part[b] = block_sumsq(g, lo, hi);
  }
  double total = 0.0;
  for (int64_t b = 0; b < nb; b++) total += part[b];
  return total;
}

static damo_status non_finite_error(const damo_optimizer *o, const float *g) {
  for (int64_t i = 0; i < o->n; i++)
    if (!isfinite(g[i]))
      return damo_error(DAMO_ERR_NUMERIC, "optimizer step %lld: gradient %lld of %lld is %g; parameters left unchanged",
                        (long long)o->steps, (long long)i, (long long)o->n, (double)g[i]);
  /* Every element finite but the norm is not: cannot happen for float inputs summed in double. */
  return damo_error(DAMO_ERR_NUMERIC, "optimizer step %lld: gradient norm is not finite; parameters left unchanged",
                    (long long)o->steps);
}

/* One block of the update, compiled per SIMD level (each clone inlines the block kernels). */
/* mask is NULL (decay everywhere: the compiler drops the test) or the decay mask. */
DAMO_MULTIVERSION static void update_block(int variant, float *p, float *g, float *m, float *v, const uint8_t *mask,
                                           int64_t lo, int64_t hi, const step_consts *k) {
  if (!mask) {
    switch (variant) {
    case 0: sgd_block(p, g, m, NULL, lo, hi, k, 0, 0); break;
    case 1: sgd_block(p, g, m, NULL, lo, hi, k, 1, 0); break;
    case 2: sgd_block(p, g, m, NULL, lo, hi, k, 0, 1); break;
    case 3: sgd_block(p, g, m, NULL, lo, hi, k, 1, 1); break;
    case 4: adam_block(p, g, m, v, NULL, lo, hi, k, 0, 0); break;
    case 5: adam_block(p, g, m, v, NULL, lo, hi, k, 1, 0); break;
    case 6: adam_block(p, g, m, v, NULL, lo, hi, k, 0, 1); break;
    default: adam_block(p, g, m, v, NULL, lo, hi, k, 1, 1); break;
    }
    return;
  }
  switch (variant) {
  case 0: sgd_block(p, g, m, mask, lo, hi, k, 0, 0); break;
  case 1: sgd_block(p, g, m, mask, lo, hi, k, 1, 0); break;
  case 2: sgd_block(p, g, m, mask, lo, hi, k, 0, 1); break;
  case 3: sgd_block(p, g, m, mask, lo, hi, k, 1, 1); break;
  case 4: adam_block(p, g, m, v, mask, lo, hi, k, 0, 0); break;
  case 5: adam_block(p, g, m, v, mask, lo, hi, k, 1, 0); break;
  case 6: adam_block(p, g, m, v, mask, lo, hi, k, 0, 1); break;
  default: adam_block(p, g, m, v, mask, lo, hi, k, 1, 1); break;
  }
}

static damo_status optimizer_step(damo_optimizer *o, float *params, float *grads, int64_t total_steps, float *grad_norm) {
  if (!o) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer step: NULL optimizer");
  if (o->n > 0 && (!params || !grads)) return damo_error(DAMO_ERR_INVALID_ARG, "optimizer step: NULL params or grads");

  /* The norm is always taken: it is reported, drives clipping, and keeps NaN/Inf gradients
   * from reaching the weights. */
  double norm = sqrt(grad_sumsq(o, grads));
  if (grad_norm) *grad_norm = (float)norm;
  if (!isfinite(norm)) return non_finite_error(o, grads);

  const damo_optimizer_config *c = &o->cfg;
  step_consts k;
  memset(&k, 0, sizeof k);
  k.lr = damo_schedule_lr(&c->schedule, c->lr, o->steps, total_steps);
  k.wd = c->weight_decay;
  k.coef = 1.0f;
  int clip = 0;
  if (c->clip_norm > 0.0f) {
    /* torch: coef = max_norm / (norm + 1e-6), clamped to 1 */
    double coef = (double)c->clip_norm / (norm + 1e-6);
    if (coef < 1.0) {
      k.coef = (float)coef;
      clip = 1;
    }
  }
  if (c->kind == DAMO_OPT_SGD) {
    k.mu = c->momentum;
    k.first = o->steps == 0;
    k.nesterov = c->nesterov;
  } else {
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

  /* 0..3: SGD plain/momentum x clip; 4..7: Adam/AdamW x clip. */
  const int variant = (c->kind == DAMO_OPT_SGD ? (uses_momentum(o) ? 2 : 0) : (c->kind == DAMO_OPT_ADAMW ? 6 : 4)) + clip;
  const int64_t n = o->n, nb = o->n_blocks;
  float *p = params, *g = grads, *m = o->m, *v = o->v;
  const uint8_t *mask = o->decay_mask;
#pragma omp parallel for schedule(static) if (n > OPT_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t b = 0; b < nb; b++) {
    int64_t lo = b * OPT_BLOCK, hi = lo + OPT_BLOCK < n ? lo + OPT_BLOCK : n;
    update_block(variant, p, g, m, v, mask, lo, hi, &k);
  }
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
    if (!views) memcpy(ts[i]->data, bufs[i], (size_t)o->n * sizeof(float));
  }
  damo_status s = damo_tensor_dict_add(out, STATE_STEP, st);
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
  if (damo_tensor_numel(t) != o->n)
    return damo_error(DAMO_ERR_SHAPE, "optimizer state: '%s' has %lld values, the optimizer has %lld parameters", name,
                      (long long)damo_tensor_numel(t), (long long)o->n);
  const float *x = damo_tensor_f32(t);
  for (int64_t i = 0; i < o->n; i++)
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
  for (int i = 0; i < nm; i++) memcpy(bufs[i], ts[i]->data, (size_t)o->n * sizeof(float));
  o->steps = steps;
  return DAMO_OK;
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
