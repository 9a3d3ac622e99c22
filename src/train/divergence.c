/* divergence.c - telling a run that has blown up without a NaN (a learning rate 1e6 drives
 * the loss to 1e20 while every value stays finite) from one that is merely noisy. The lowest
 * loss of the first 5 steps is the reference; 20 of the last 50 steps with a loss above 100
 * times that (and at least 100 above it, for references near zero) is divergence. A healthy
 * run never comes near: a classifier at chance sits at its starting loss, and its noise
 * spikes are single steps. A blown-up run is spiky too (Adam at lr 1e6 on Fashion-MNIST
 * swings between 1e1 and 1e20), which is why steps are counted in a window, not in a row. */
#include "core/core.h"

#include <math.h>

#define REFERENCE_STEPS 5
#define WINDOW 50
#define OVER_IN_WINDOW 20
#define FACTOR 100.0

void damo_divergence_init(damo_divergence *d) { memset(d, 0, sizeof *d); }

double damo_divergence_threshold(const damo_divergence *d) {
  if (d->seen < REFERENCE_STEPS) return INFINITY;
  double ref = d->reference;
  double t = FACTOR * ref;
  return t > ref + FACTOR ? t : ref + FACTOR;
}

damo_status damo_divergence_check(damo_divergence *d, float loss) {
  if (!damo_divergence_update(d, loss)) return DAMO_OK;
  return damo_error(DAMO_ERR_NUMERIC, "training diverged: the loss (now %g) has been over %g, 100 times its starting "
                    "value %g, on 20 of the last 50 steps (try a lower learning rate or check the data)", (double)loss,
                    damo_divergence_threshold(d), d->reference);
}

int damo_divergence_update(damo_divergence *d, float loss) {
  if (d->seen < REFERENCE_STEPS) {
    /* The lowest, not the mean: a run can blow up at its second step (Adam at lr 1e6 reads
     * 2.4 then 1.9e23 on Fashion-MNIST), and the mean would take the explosion as normal. */
    if (d->seen == 0 || (double)loss < d->reference) d->reference = (double)loss;
    d->seen++;
    return 0;
  }
  d->seen++;
  d->recent = (d->recent << 1 | ((double)loss > damo_divergence_threshold(d))) & ((1ull << WINDOW) - 1);
  d->over = __builtin_popcountll(d->recent);
  return d->over >= OVER_IN_WINDOW;
}
