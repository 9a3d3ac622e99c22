/* prune.c - magnitude pruning with fine-tuning (Zhu and Gupta, 2017) of a model's dense and
 * conv2d kernels.
 *
 * fit does the fine-tuning through the one trainer; pruning is its parameter hook: after every
 * optimizer step the masks are applied (pruned weights back to 0), and on the schedule's
 * update steps they are chosen again from the weights' magnitudes. Gradual: the sparsity in
 * force rises from 0 to the target along s(t) = s_f (1 - (1 - (t - t0) / (t1 - t0))^3) over
 * [t0, t1] (fractions of the run's steps), re-chosen every `frequency` steps and at t1, then
 * held; one-shot: the masks are chosen once before the first step. Scope global ranks every
 * kernel weight of the model together (one threshold); scope layer gives each kernel the
 * target sparsity. A pruned weight stays 0 (its magnitude is the smallest), so masks only
 * grow. Biases, normalisation and embeddings are never pruned. */
#include "compress/compress.h"

#include <math.h>
#include <stdlib.h>

enum { MAX_TARGETS = 256 };

typedef struct prune_target {
  const damo_layer *layer;
  int64_t offset, n; /* the kernel's floats in the parameter block */
} prune_target;

typedef struct prune_state {
  damo_model *m;
  damo_prune_options o;
  prune_target t[MAX_TARGETS];
  int n_targets;
  int64_t weights;        /* over every target */
  uint8_t *keep;          /* per weight, targets in order */
  float *scratch;         /* magnitudes while choosing */
  int64_t begin, end;     /* gradual: the ramp's steps */
  int64_t first;          /* the trainer's step count before this run's first step (-1: not yet) */
} prune_state;

static int prunable(const damo_layer *l) {
  return (l->type == &damo_layer_dense || l->type == &damo_layer_conv2d) && !l->quant;
}

/* The kernels pruning applies to, as ranges of the parameter block. */
static damo_status find_targets(damo_model *m, prune_target *t, int *n, int64_t *weights) {
  *n = 0, *weights = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const damo_layer *l = m->layers[i];
    if (!prunable(l)) continue;
    for (int p = 0; p < l->n_params; p++) {
      const damo_param_slot *s = &l->params[p];
      if (strcmp(s->name, "kernel") || s->frozen || !s->value) continue;
      if (*n == MAX_TARGETS) return damo_error(DAMO_ERR_INVALID_ARG, "prune: more than %d kernels", MAX_TARGETS);
      t[*n] = (prune_target){l, (float *)s->value->data - m->param_block, damo_tensor_numel(s->value)};
      *weights += t[(*n)++].n;
    }
  }
  return *n ? DAMO_OK : damo_error(DAMO_ERR_INVALID_ARG, "prune: the model has no dense or conv2d kernel to prune");
}

static void swap(float *a, float *b) {
  const float t = *a;
  *a = *b, *b = t;
}

/* The value of rank k (0-based, ascending) of v[0..n), reordering v (quickselect). */
static float kth_smallest(float *v, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2; /* median of three as the pivot */
    if (v[mid] < v[lo]) swap(&v[mid], &v[lo]);
    if (v[hi] < v[lo]) swap(&v[hi], &v[lo]);
    if (v[hi] < v[mid]) swap(&v[hi], &v[mid]);
    const float pivot = v[mid];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (v[i] < pivot) i++;
      while (v[j] > pivot) j--;
      if (i <= j) swap(&v[i++], &v[j--]);
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return v[k];
  }
  return v[k];
}

/* Masks for targets [k0, k1) (their keep flags from keep_at) that zero exactly floor(s n) of
 * their n weights: every magnitude below the threshold, then ties at it in order. The
 * magnitudes are gathered into scratch, so the kernels need not sit side by side. */
static void choose_range(prune_state *p, const float *params, int k0, int k1, int64_t keep_at, double s) {
  int64_t n = 0;
  for (int k = k0; k < k1; k++)
    for (int64_t i = 0; i < p->t[k].n; i++) p->scratch[n++] = fabsf(params[p->t[k].offset + i]);
  const int64_t zeros = (int64_t)floor(s * (double)n);
  uint8_t *keep = p->keep + keep_at;
  if (zeros <= 0) {
    memset(keep, 1, (size_t)n);
    return;
  }
  const float threshold = kth_smallest(p->scratch, n, zeros - 1);
  int64_t pruned = 0, at = 0;
  for (int k = k0; k < k1; k++)
    for (int64_t i = 0; i < p->t[k].n; i++, at++) {
      const int below = fabsf(params[p->t[k].offset + i]) < threshold; /* NaN: neither below nor equal, kept */
      keep[at] = (uint8_t)!below;
      pruned += below;
    }
  at = 0;
  for (int k = k0; k < k1 && pruned < zeros; k++)
    for (int64_t i = 0; i < p->t[k].n && pruned < zeros; i++, at++)
      if (fabsf(params[p->t[k].offset + i]) == threshold) keep[at] = 0, pruned++;
}

/* The masks for sparsity s from the weights as they are: one threshold over every kernel
 * (global) or one per kernel. */
static void choose_masks(prune_state *p, const float *params, double s) {
  if (p->o.scope == DAMO_PRUNE_GLOBAL) {
    choose_range(p, params, 0, p->n_targets, 0, s);
    return;
  }
  int64_t at = 0;
  for (int k = 0; k < p->n_targets; k++) {
    choose_range(p, params, k, k + 1, at, s);
    at += p->t[k].n;
  }
}

static void apply_masks(const prune_state *p, float *params) {
  int64_t at = 0;
  for (int k = 0; k < p->n_targets; k++) {
    float *w = params + p->t[k].offset;
    const uint8_t *keep = p->keep + at;
    for (int64_t i = 0; i < p->t[k].n; i++)
      if (!keep[i]) w[i] = 0.0f;
    at += p->t[k].n;
  }
}

/* The sparsity the schedule asks for after `step` steps. */
static double scheduled(const prune_state *p, int64_t step) {
  if (p->o.schedule == DAMO_PRUNE_ONESHOT || step >= p->end) return p->o.sparsity;
  if (step <= p->begin) return 0.0;
  const double left = 1.0 - (double)(step - p->begin) / (double)(p->end - p->begin);
  return p->o.sparsity * (1.0 - left * left * left);
}

static damo_status after_step(void *ctx, float *params, int64_t n, int64_t steps_done) {
  (void)n;
  prune_state *p = ctx;
  if (p->first < 0) p->first = steps_done - 1; /* a model trained before counts on from its steps */
  const int64_t step = steps_done - p->first;
  const int update = p->o.schedule == DAMO_PRUNE_GRADUAL && step >= p->begin && step <= p->end &&
                     ((step - p->begin) % p->o.frequency == 0 || step == p->end);
  if (update) choose_masks(p, params, scheduled(p, step));
  apply_masks(p, params);
  return DAMO_OK;
}

static damo_status check_options(const damo_prune_options *o) {
  if (!(o->sparsity > 0 && o->sparsity < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "prune: sparsity %g is outside (0, 1)", (double)o->sparsity);
  if ((unsigned)o->schedule > DAMO_PRUNE_ONESHOT || (unsigned)o->scope > DAMO_PRUNE_LAYER)
    return damo_error(DAMO_ERR_INVALID_ARG, "prune: unknown schedule %d or scope %d", (int)o->schedule, (int)o->scope);
  if (!(o->ramp_begin >= 0 && o->ramp_begin < o->ramp_end && o->ramp_end <= 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "prune: the ramp [%g, %g] must satisfy 0 <= begin < end <= 1",
                      (double)o->ramp_begin, (double)o->ramp_end);
  if (o->frequency < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "prune: frequency %lld must be at least 1 step", (long long)o->frequency);
  return DAMO_OK;
}

damo_status damo_model_prune(damo_model *m, const damo_tensor *x, const damo_tensor *y, const damo_prune_options *opt,
                             const damo_fit_options *fit, damo_history **history) {
  if (history) *history = NULL;
  if (!m || !x || !y || !fit) return damo_error(DAMO_ERR_INVALID_ARG, "prune: NULL argument");
  if (!m->compiled) return damo_error(DAMO_ERR_STATE, "prune: compile the model before pruning (it fine-tunes)");
  if (fit->param_hook) return damo_error(DAMO_ERR_INVALID_ARG, "prune: fit's param_hook is pruning's own");
  damo_prune_options o = opt ? *opt : (damo_prune_options){0};
  if (o.ramp_begin == 0 && o.ramp_end == 0) o.ramp_end = 0.7f; /* the defaults: the first 70% of the run */
  if (o.frequency == 0) o.frequency = 100;
  damo_status st = check_options(&o);
  if (st != DAMO_OK) return st;
  prune_state *p = calloc(1, sizeof *p);
  if (!p) return damo_error(DAMO_ERR_NOMEM, "prune: out of memory");
  p->m = m, p->o = o;
  if ((st = find_targets(m, p->t, &p->n_targets, &p->weights)) != DAMO_OK) {
    free(p);
    return st;
  }
  p->keep = malloc((size_t)p->weights);
  p->scratch = malloc((size_t)p->weights * sizeof(float));
  if (!p->keep || !p->scratch) st = damo_error(DAMO_ERR_NOMEM, "prune: out of memory for %lld masks",
                                               (long long)p->weights);
  if (st == DAMO_OK) {
    /* the run's steps, as fit counts them (validation_split takes the last rows) */
    const int64_t rows = x->shape[0] - (fit->x_val ? 0 : (int64_t)((double)x->shape[0] * fit->validation_split));
    const int64_t batch = fit->batch_size > 0 ? fit->batch_size : 32;
    const int64_t steps = (int64_t)(fit->epochs > 0 ? fit->epochs : 1) * ((rows + batch - 1) / batch);
    p->begin = (int64_t)floor(o.ramp_begin * (double)steps);
    p->end = (int64_t)ceil(o.ramp_end * (double)steps);
    if (p->end <= p->begin) p->end = p->begin + 1;
    memset(p->keep, 1, (size_t)p->weights);
    p->first = -1;
    if (o.schedule == DAMO_PRUNE_ONESHOT) {
      choose_masks(p, m->param_block, o.sparsity);
      apply_masks(p, m->param_block);
    }
    damo_fit_options f = *fit;
    f.param_hook = after_step, f.param_hook_ctx = p;
    st = damo_model_fit(m, x, y, &f, history);
  }
  free(p->keep);
  free(p->scratch);
  free(p);
  return st == DAMO_OK ? st : damo_error_prefix(st, "prune: ");
}

damo_status damo_model_kernel_sparsity(damo_model *m, int layer, const char **name, int64_t *zeros, int64_t *weights) {
  if (!m || !zeros || !weights) return damo_error(DAMO_ERR_INVALID_ARG, "kernel_sparsity: NULL argument");
  prune_target t[MAX_TARGETS];
  int n;
  int64_t all;
  damo_status st = find_targets(m, t, &n, &all);
  if (st != DAMO_OK) return st;
  if (layer < -1 || layer >= n)
    return damo_error(DAMO_ERR_INVALID_ARG, "kernel_sparsity: layer %d of %d prunable ones", layer, n);
  *zeros = *weights = 0;
  for (int k = 0; k < n; k++) {
    if (layer >= 0 && k != layer) continue;
    const float *w = m->param_block + t[k].offset;
    for (int64_t i = 0; i < t[k].n; i++) *zeros += w[i] == 0.0f;
    *weights += t[k].n;
    if (name) *name = t[k].layer->name;
  }
  if (name && layer < 0) *name = "all";
  return DAMO_OK;
}
