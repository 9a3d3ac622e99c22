/* gpt2_sample.c - sampling the next id from logits (temperature, top-k, top-p) and sampled
 * generation through the KV cache.
 *
 * The order is HuggingFace's: logits / temperature, then top-k, then top-p over the
 * probabilities of what top-k kept. Candidates are ranked by probability, ties broken by the
 * lower id, so top_k = 1 is exactly the greedy argmax. top-p keeps the smallest prefix of that
 * ranking whose summed probability reaches p (at least one id). */
#include "core/core.h"
#include "models/gpt2.h"

#include <math.h>

damo_gpt2_sampling damo_gpt2_sampling_default(void) {
  damo_gpt2_sampling s = {1.0f, 0, 0.0f, 0};
  return s;
}

static damo_status check_sampling(const damo_gpt2_sampling *s, int64_t n) {
  if (!s) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 sampling: NULL options");
  if (n < 1 || n > INT32_MAX) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 sampling: %lld logits, expected 1..2^31-1", (long long)n);
  if (!isfinite(s->temperature) || s->temperature < 0.0f)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 sampling: temperature %g must be a finite value >= 0", (double)s->temperature);
  if (s->top_k < 0) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 sampling: top_k %d must be >= 0 (0 = off)", s->top_k);
  if (!(s->top_p >= 0.0f) || !isfinite(s->top_p))
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 sampling: top_p %g must be a finite value >= 0 (0 or >= 1 = off)", (double)s->top_p);
  return DAMO_OK;
}

static int32_t argmax_id(const float *row, int64_t n) {
  int32_t best = 0;
  for (int64_t j = 1; j < n; j++)
    if (row[j] > row[best]) best = (int32_t)j;
  return best;
}

typedef struct ranked_id {
  float prob; /* the logit: same ranking as the probability */
  int32_t id;
} ranked_id;

/* Probability descending; equal probabilities: lower id first. */
static int by_prob_desc(const void *a, const void *b) {
  const ranked_id *x = a, *y = b;
  if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
  return (x->id > y->id) - (x->id < y->id);
}

damo_status damo_gpt2_sampling_probs(const float *logits, int64_t n, const damo_gpt2_sampling *s, float *probs) {
  damo_status st = check_sampling(s, n);
  if (st != DAMO_OK) return st;
  if (!logits || !probs) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 sampling: NULL logits or probs");
  for (int64_t j = 0; j < n; j++)
    if (isnan(logits[j])) return damo_error(DAMO_ERR_NUMERIC, "gpt2 sampling: logit %lld is NaN", (long long)j);
  if (s->temperature == 0.0f) {
    memset(probs, 0, (size_t)n * sizeof *probs);
    probs[argmax_id(logits, n)] = 1.0f;
    return DAMO_OK;
  }
  /* softmax(logits / T) in double, stored as float */
  float mx = logits[argmax_id(logits, n)];
  double sum = 0.0, inv_t = 1.0 / (double)s->temperature;
  for (int64_t j = 0; j < n; j++) sum += exp(((double)logits[j] - mx) * inv_t);
  for (int64_t j = 0; j < n; j++) probs[j] = (float)(exp(((double)logits[j] - mx) * inv_t) / sum);

  int use_k = s->top_k > 0 && s->top_k < n, use_p = s->top_p > 0.0f && s->top_p < 1.0f;
  if (!use_k && !use_p) return DAMO_OK;
  ranked_id *order = malloc((size_t)n * sizeof *order);
  if (!order) return damo_error(DAMO_ERR_NOMEM, "gpt2 sampling: out of memory ranking %lld ids", (long long)n);
  for (int64_t j = 0; j < n; j++) order[j] = (ranked_id){logits[j], (int32_t)j}; /* logits rank as probs do, without ties from rounding */
  qsort(order, (size_t)n, sizeof *order, by_prob_desc);
  int64_t keep = use_k ? s->top_k : n;
  if (use_p) {
    /* probabilities of the top-k set, renormalised, summed down the ranking until they reach p */
    double kept_total = 0.0, cum = 0.0;
    for (int64_t r = 0; r < keep; r++) kept_total += probs[order[r].id];
    int64_t r = 0;
    while (r < keep) {
      cum += probs[order[r].id] / kept_total;
      r++;
      if (cum >= (double)s->top_p) break;
    }
    keep = r;
  }
  double kept = 0.0;
  for (int64_t r = 0; r < keep; r++) kept += probs[order[r].id];
  for (int64_t r = keep; r < n; r++) probs[order[r].id] = 0.0f;
  for (int64_t r = 0; r < keep; r++) probs[order[r].id] = (float)(probs[order[r].id] / kept);
  free(order);
  return DAMO_OK;
}

/* Draws from probs by inverse CDF in id order; the last id with nonzero probability catches
 * rounding at the top end. */
static int32_t draw(const float *probs, int64_t n, damo_rng *rng) {
  double u = (double)damo_rng_uniform(rng), cum = 0.0;
  int32_t last = 0;
  for (int64_t j = 0; j < n; j++) {
    if (probs[j] <= 0.0f) continue;
    last = (int32_t)j;
    cum += probs[j];
    if (u < cum) return (int32_t)j;
  }
  return last;
}

static damo_status sample_with(const float *logits, int64_t n, const damo_gpt2_sampling *s, damo_rng *rng, float *probs,
                               int32_t *out) {
  damo_status st = check_sampling(s, n);
  if (st != DAMO_OK) return st;
  if (s->temperature == 0.0f) {
    *out = argmax_id(logits, n);
    return DAMO_OK;
  }
  if (!rng) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 sampling: temperature > 0 needs an rng");
  st = damo_gpt2_sampling_probs(logits, n, s, probs);
  if (st == DAMO_OK) *out = draw(probs, n, rng);
  return st;
}

damo_status damo_gpt2_sample_id(const float *logits, int64_t n, const damo_gpt2_sampling *s, damo_rng *rng,
                                int32_t *out) {
  if (!logits || !out) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 sampling: NULL logits or output");
  damo_status st = check_sampling(s, n);
  if (st != DAMO_OK) return st;
  float *probs = malloc((size_t)n * sizeof *probs);
  if (!probs) return damo_error(DAMO_ERR_NOMEM, "gpt2 sampling: out of memory for %lld probabilities", (long long)n);
  st = sample_with(logits, n, s, rng, probs, out);
  free(probs);
  return st;
}

damo_status damo_gpt2_generate(damo_gpt2 *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                               const damo_gpt2_sampling *s, int32_t *out) {
  damo_status st = damo_gpt2_check_prompt(m, prompt, n_prompt, n_new, out);
  if (st != DAMO_OK) return st;
  int64_t V = m->config.vocab_size;
  if ((st = check_sampling(s, V)) != DAMO_OK) return st;
  if (n_new == 0) return DAMO_OK;
  damo_rng rng;
  damo_rng_seed(&rng, s->seed);
  float *probs = malloc((size_t)V * sizeof *probs);
  if (!probs) return damo_error(DAMO_ERR_NOMEM, "gpt2_generate: out of memory");
  damo_gpt2_cache *c = NULL;
  st = damo_gpt2_cache_new(m, n_prompt + n_new, &c);
  const float *logits = NULL;
  for (int64_t i = 0; st == DAMO_OK && i < n_prompt; i++) st = damo_gpt2_cache_step(c, prompt[i], &logits);
  for (int64_t i = 0; st == DAMO_OK && i < n_new; i++) {
    st = sample_with(logits, V, s, &rng, probs, &out[i]);
    if (st == DAMO_OK && i + 1 < n_new) st = damo_gpt2_cache_step(c, out[i], &logits);
  }
  if (st != DAMO_OK) damo_error_prefix(st, "gpt2_generate: ");
  damo_gpt2_cache_free(c);
  free(probs);
  return st;
}
