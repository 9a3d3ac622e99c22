/* accountant.c - the privacy accountant of DP-SGD: Rényi differential privacy (RDP) of the
 * Poisson-subsampled Gaussian mechanism, composed over training steps and converted to
 * (epsilon, delta).
 *
 * One step samples each example with probability q and adds N(0, sigma^2 C^2) to the clipped
 * sum. Its RDP at order alpha is log(A_alpha) / (alpha - 1) with (Mironov, Talwar & Zhang 2019)
 *   A_alpha = E_{z ~ N(0, sigma^2)} [((1 - q) + q exp((2z - 1) / (2 sigma^2)))^alpha],
 * the alpha-th moment of the privacy loss ratio of the mixture (1 - q) N(0, s^2) + q N(1, s^2)
 * against N(0, s^2). Integer alpha: the binomial expansion gives the exact finite sum
 *   A = sum_{k=0..alpha} C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 sigma^2)).
 * Fractional alpha: the same expansion as an infinite series split at z0 = sigma^2 log(1/q - 1)
 * + 1/2 (where the ratio crosses the mixture's two terms), each half a Gaussian tail (erfc),
 * summed until the terms vanish. Everything is kept in logs. RDP adds up over steps; the
 * conversion to (epsilon, delta) takes the best order: classic (Mironov 2017)
 *   eps = RDP(alpha) + log(1/delta) / (alpha - 1),
 * or the tighter one of Balle et al. 2020 (as Opacus uses)
 *   eps = RDP(alpha) + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1). */
#define _DEFAULT_SOURCE /* M_PI, M_SQRT2 */
#include "core/core.h"

#include <float.h>
#include <math.h>

/* log(exp(a) + exp(b)) and log(exp(a) - exp(b)) (a >= b) without overflow. */
static double log_add(double a, double b) {
  if (a == -INFINITY) return b;
  if (b == -INFINITY) return a;
  const double hi = a > b ? a : b, lo = a > b ? b : a;
  return hi + log1p(exp(lo - hi));
}
static double log_sub(double a, double b) {
  if (b == -INFINITY) return a;
  if (b >= a) return -INFINITY;
  return a + log1p(-exp(b - a));
}

/* log(erfc(x)), accurate far into the tail (erfc underflows past x ~ 26). */
static double log_erfc(double x) {
  if (x < 20) return log(erfc(x));
  /* the asymptotic series: erfc(x) ~ exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6)) */
  const double r = 1 / (x * x);
  return -x * x - log(x) - 0.5 * log(M_PI) + log1p(-0.5 * r + 0.75 * r * r - 1.875 * r * r * r);
}

/* Steps the log of the generalised binomial coefficient |C(alpha, k)| and its sign from k - 1
 * to k: C(alpha, k) = C(alpha, k - 1) (alpha - k + 1) / k (a running product, so a series of
 * K terms costs K, not K^2). */
static void next_binom(double alpha, int k, double *log_abs, int *sign) {
  const double f = (alpha - k + 1) / k;
  if (f < 0) *sign = -*sign;
  *log_abs = f == 0 ? -INFINITY : *log_abs + log(fabs(f));
}

/* log A_alpha for one step. */
static double log_a(double q, double sigma, double alpha) {
  const double s2 = sigma * sigma;
  double lb = 0; /* log |C(alpha, 0)| */
  int sign = 1;
  if (alpha == floor(alpha)) { /* the finite binomial sum */
    double acc = -INFINITY;
    for (int k = 0; k <= (int)alpha; k++) {
      if (k) next_binom(alpha, k, &lb, &sign);
      const double term = lb + (k ? k * log(q) : 0) + (alpha - k) * log1p(-q) + (double)(k * k - k) / (2 * s2);
      acc = log_add(acc, term);
    }
    return acc;
  }
  /* fractional: two series of Gaussian tails around z0 */
  const double z0 = s2 * log(1 / q - 1) + 0.5;
  double lo = -INFINITY, hi = -INFINITY;
  for (int k = 0; k < 100000; k++) {
    if (k) next_binom(alpha, k, &lb, &sign);
    const double j = alpha - k;
    const double t0 = lb + k * log(q) + j * log1p(-q), t1 = lb + j * log(q) + k * log1p(-q);
    const double e0 = log(0.5) + log_erfc((k - z0) / (M_SQRT2 * sigma));
    const double e1 = log(0.5) + log_erfc((z0 - j) / (M_SQRT2 * sigma));
    const double s0 = t0 + (k * (double)k - k) / (2 * s2) + e0, s1 = t1 + (j * j - j) / (2 * s2) + e1;
    if (sign > 0) lo = log_add(lo, s0), hi = log_add(hi, s1);
    else lo = log_sub(lo, s0), hi = log_sub(hi, s1);
    if ((s0 > s1 ? s0 : s1) < -30 && k > alpha) break;
  }
  return log_add(lo, hi);
}

double damo_dp_rdp(double q, double sigma, double steps, double alpha) {
  if (!(q >= 0 && q <= 1) || !(sigma >= 0) || !(steps >= 0) || !(alpha > 1)) return NAN;
  if (q == 0 || steps == 0) return 0;
  if (sigma == 0) return INFINITY;
  if (q == 1) return steps * alpha / (2 * sigma * sigma); /* the Gaussian mechanism itself */
  return steps * log_a(q, sigma, alpha) / (alpha - 1);
}

int damo_dp_default_orders(double *orders) {
  int n = 0;
  for (int x = 1; x <= 99; x++, n++)
    if (orders) orders[n] = 1 + x / 10.0; /* 1.1 .. 10.9 */
  for (int a = 12; a <= 63; a++, n++)
    if (orders) orders[n] = a;
  return n;
}

static double convert(double rdp, double alpha, double delta, damo_dp_conversion conv) {
  if (conv == DAMO_DP_BALLE2020)
    return rdp + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1);
  return rdp - log(delta) / (alpha - 1);
}

damo_status damo_dp_epsilon_rdp(const double *rdp_step, double steps, double delta, damo_dp_conversion conv,
                                double *epsilon, double *best_order) {
  if (!epsilon || !rdp_step) return damo_error(DAMO_ERR_INVALID_ARG, "dp_epsilon: NULL argument");
  if (!(steps >= 0) || !(delta > 0 && delta < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "dp_epsilon: needs steps >= 0 and delta in (0, 1) (got %g, %g)", steps,
                      delta);
  if (conv != DAMO_DP_CLASSIC && conv != DAMO_DP_BALLE2020)
    return damo_error(DAMO_ERR_INVALID_ARG, "dp_epsilon: unknown conversion %d", (int)conv);
  double orders[160], best = INFINITY, at = 0;
  const int n = damo_dp_default_orders(orders);
  for (int i = 0; i < n; i++) {
    const double e = convert(steps > 0 ? steps * rdp_step[i] : 0.0, orders[i], delta, conv);
    if (e < best) best = e, at = orders[i];
  }
  *epsilon = best > 0 ? best : 0;
  if (best_order) *best_order = at;
  return DAMO_OK;
}

damo_status damo_dp_epsilon(double q, double sigma, double steps, double delta, damo_dp_conversion conv,
                            double *epsilon, double *best_order) {
  if (!epsilon) return damo_error(DAMO_ERR_INVALID_ARG, "dp_epsilon: NULL output");
  if (!(q > 0 && q <= 1) || !(sigma > 0) || !(steps >= 0) || !(delta > 0 && delta < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "dp_epsilon: needs a sampling rate in (0, 1], a noise multiplier > 0, "
                      "steps >= 0 and delta in (0, 1) (got %g, %g, %g, %g)", q, sigma, steps, delta);
  double orders[160], rdp[160];
  const int n = damo_dp_default_orders(orders);
  for (int i = 0; i < n; i++) rdp[i] = damo_dp_rdp(q, sigma, 1, orders[i]);
  return damo_dp_epsilon_rdp(rdp, steps, delta, conv, epsilon, best_order);
}

damo_status damo_dp_sigma_for_epsilon(double q, double steps, double epsilon, double delta, damo_dp_conversion conv,
                                      double *sigma) {
  if (!sigma) return damo_error(DAMO_ERR_INVALID_ARG, "dp_sigma_for_epsilon: NULL output");
  if (!(epsilon > 0)) return damo_error(DAMO_ERR_INVALID_ARG, "dp_sigma_for_epsilon: epsilon %g must be > 0", epsilon);
  double lo = 0.01, hi = 0.01, e = 0;
  damo_status st;
  do { /* grow until the noise is enough, then bisect: epsilon falls as sigma grows */
    hi *= 2;
    if ((st = damo_dp_epsilon(q, hi, steps, delta, conv, &e, NULL)) != DAMO_OK) return st;
  } while (e > epsilon && hi < 1e4);
  if (e > epsilon)
    return damo_error(DAMO_ERR_INVALID_ARG, "dp_sigma_for_epsilon: epsilon %g is out of reach (sigma 1e4 gives %g)",
                      epsilon, e);
  for (int it = 0; it < 60; it++) {
    const double mid = 0.5 * (lo + hi);
    if ((st = damo_dp_epsilon(q, mid, steps, delta, conv, &e, NULL)) != DAMO_OK) return st;
    if (e > epsilon) lo = mid;
    else hi = mid;
  }
  *sigma = hi; /* the smallest noise found whose epsilon is within the target */
  return DAMO_OK;
}
