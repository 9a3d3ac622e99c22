/* optim_update.c - the optimizer's update and gradient-norm loops on the CPU (the CPU
 * backend's opt_update and sum_squares; src/optim/optimizer.c computes the step's scalars).
 * The update rules follow PyTorch 1.13 (torch.optim.SGD / Adam / AdamW) operation for
 * operation, in float32.
 *
 * Each update is one fused pass over params, grads and moments. Large arrays are split into
 * fixed blocks shared out by OpenMP; every element is updated independently, so results do
 * not depend on the thread count. The norm sums per-block partials in block order for the
 * same reason. */
#include "kernels/kernels.h"

#include <math.h>

/* The Adam loop vectorises only under -fno-math-errno (see adam_block); without it clang
 * would warn that the requested `omp simd` was not honoured. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

/* Below this many parameters a thread team costs more than it saves. */
#define OPT_PARALLEL_MIN ((int64_t)1 << 15)

#if defined(__GNUC__)
#define OPT_INLINE static inline __attribute__((always_inline))
#else
#define OPT_INLINE static inline
#endif

/* SGD on [lo, hi). clip and mom are literal constants at every call, so inlining removes the
 * branches and leaves a straight vector loop. */
OPT_INLINE void sgd_block(float *restrict p, float *restrict g, float *restrict buf, const uint8_t *restrict mask,
                          int64_t lo, int64_t hi, const damo_opt_update *k, const int clip, const int mom) {
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
                           const uint8_t *restrict mask, int64_t lo, int64_t hi, const damo_opt_update *k,
                           const int clip, const int decoupled) {
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

double damo_cpu_sum_squares(const float *x, int64_t n, double *partial) {
  const int64_t nb = (n + DAMO_OPT_BLOCK - 1) / DAMO_OPT_BLOCK;
#pragma omp parallel for schedule(static) if (n > OPT_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t b = 0; b < nb; b++) {
    int64_t lo = b * DAMO_OPT_BLOCK, hi = lo + DAMO_OPT_BLOCK < n ? lo + DAMO_OPT_BLOCK : n;
    partial[b] = block_sumsq(x, lo, hi);
  }
  double total = 0.0;
  for (int64_t b = 0; b < nb; b++) total += partial[b];
  return total;
}

/* One block of the update, compiled per SIMD level (each clone inlines the block kernels).
 * variant 0..3: SGD plain/momentum x clip; 4..7: Adam/AdamW x clip. mask is NULL (decay
 * everywhere: the compiler drops the test) or the decay mask. */
DAMO_MULTIVERSION static void update_block(int variant, float *p, float *g, float *m, float *v, const uint8_t *mask,
                                           int64_t lo, int64_t hi, const damo_opt_update *k) {
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

void damo_cpu_opt_update(const damo_opt_update *u) {
  static const int base[] = {[DAMO_RULE_SGD] = 0, [DAMO_RULE_SGD_MOMENTUM] = 2, [DAMO_RULE_ADAM] = 4,
                             [DAMO_RULE_ADAMW] = 6};
  const int variant = base[u->rule] + (u->clip ? 1 : 0);
  const int64_t n = u->n, nb = (n + DAMO_OPT_BLOCK - 1) / DAMO_OPT_BLOCK;
  float *p = u->params, *g = u->grads, *m = u->m, *v = u->v;
  const uint8_t *mask = u->mask;
#pragma omp parallel for schedule(static) if (n > OPT_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t b = 0; b < nb; b++) {
    int64_t lo = b * DAMO_OPT_BLOCK, hi = lo + DAMO_OPT_BLOCK < n ? lo + DAMO_OPT_BLOCK : n;
    update_block(variant, p, g, m, v, mask, lo, hi, u);
  }
}
