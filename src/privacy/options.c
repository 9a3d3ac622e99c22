/* options.c - DP-SGD's settings checked against a run and resolved: the sampling rate the
 * accountant assumes and, for a target epsilon, the noise that reaches it over the run. */
#include "core/core.h"

#include <math.h>

const char *damo_dp_sampling_name(int sampling) {
  return sampling == DAMO_DP_POISSON ? "poisson" : sampling == DAMO_DP_SHUFFLE ? "shuffle" : "?";
}

const char *damo_dp_conversion_name(int conversion) {
  return conversion == DAMO_DP_CLASSIC ? "rdp" : conversion == DAMO_DP_BALLE2020 ? "balle2020" : "?";
}

damo_status damo_dp_options_check(const damo_dp_options *o, int64_t n, int64_t batch) {
  if (!o) return damo_error(DAMO_ERR_INVALID_ARG, "privacy: NULL options");
  if (!(o->clip > 0) || !isfinite(o->clip))
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: the clipping norm (--dp-clip) must be a finite number > 0, not %g",
                      o->clip);
  if (o->noise != 0 && o->target_epsilon != 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: give the noise multiplier (--dp-noise %g) or a target epsilon "
                      "(--dp-epsilon %g), not both: one determines the other", o->noise, o->target_epsilon);
  if (o->noise == 0 && o->target_epsilon == 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: give a noise multiplier (--dp-noise) or a target epsilon "
                      "(--dp-epsilon); without noise clipping alone protects nothing");
  if (!(o->noise >= 0) || !isfinite(o->noise))
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: the noise multiplier (--dp-noise) must be >= 0, not %g", o->noise);
  if (!(o->target_epsilon >= 0) || !isfinite(o->target_epsilon))
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: the target epsilon (--dp-epsilon) must be > 0, not %g",
                      o->target_epsilon);
  if (n < 1 || batch < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: %lld examples in batches of %lld", (long long)n, (long long)batch);
  const double delta = o->delta ? o->delta : 1e-5;
  if (!(delta > 0 && delta < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: delta (--dp-delta) must lie in (0, 1), not %g", delta);
  if (delta >= 1.0 / (double)n)
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: delta %g is not below 1/N = %g for the %lld training examples: "
                      "such a delta allows publishing a whole example; choose delta < 1/N", delta, 1.0 / (double)n,
                      (long long)n);
  if (o->sampling != DAMO_DP_POISSON && o->sampling != DAMO_DP_SHUFFLE)
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: unknown sampling %d (poisson or shuffle)", o->sampling);
  if (o->conversion != DAMO_DP_CLASSIC && o->conversion != DAMO_DP_BALLE2020)
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: unknown conversion %d (rdp or balle2020)", o->conversion);
  if (o->physical_batch < 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: the physical batch %lld must be >= 0", (long long)o->physical_batch);
  if (batch > n)
    return damo_error(DAMO_ERR_INVALID_ARG, "privacy: the batch size %lld exceeds the %lld training examples",
                      (long long)batch, (long long)n);
  return DAMO_OK;
}

damo_status damo_dp_options_resolve(damo_dp_options *o, int64_t n, int64_t batch, int64_t steps) {
  damo_status st = damo_dp_options_check(o, n, batch);
  if (st != DAMO_OK) return st;
  if (!o->delta) o->delta = 1e-5;
  o->sample_rate = (double)batch / (double)n;
  o->used_noise = o->noise;
  if (o->target_epsilon > 0 &&
      (st = damo_dp_sigma_for_epsilon(o->sample_rate, (double)steps, o->target_epsilon, o->delta,
                                      (damo_dp_conversion)o->conversion, &o->used_noise)) != DAMO_OK)
    return damo_error_prefix(st, "privacy: epsilon %g over %lld steps: ", o->target_epsilon, (long long)steps);
  o->steps = 0;
  o->epsilon = 0;
  o->best_order = NAN;
  return DAMO_OK;
}

damo_status damo_dp_options_spent(damo_dp_options *o, int64_t steps) {
  if (!o) return damo_error(DAMO_ERR_INVALID_ARG, "dp_options_spent: NULL options");
  o->steps = steps, o->epsilon = 0, o->best_order = NAN;
  if (steps <= 0) return DAMO_OK;
  return damo_dp_epsilon(o->sample_rate, o->used_noise, (double)steps, o->delta, (damo_dp_conversion)o->conversion,
                         &o->epsilon, &o->best_order);
}

int64_t damo_dp_poisson_sample(damo_rng *r, const int64_t *rows, int64_t n, double q, int64_t *out) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; i++)
    if ((double)damo_rng_uniform(r) < q) out[count++] = rows ? rows[i] : i;
  return count;
}
