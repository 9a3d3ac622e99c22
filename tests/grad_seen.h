/* grad_seen.h - a gradient hook for the DP-SGD tests: the largest step gradient norm and the
 * mean square of its coordinates over the steps seen. */
#ifndef DAMO_TEST_GRAD_SEEN_H
#define DAMO_TEST_GRAD_SEEN_H

#include "damo.h"
#include "graph/graph.h" /* damo_sum_squares */

#include <math.h>

typedef struct grad_seen {
  double max_norm, sum_sq;
  int64_t count, steps;
} grad_seen;

static damo_status see_grads(void *ctx, float *g, int64_t n, int64_t step) {
  grad_seen *s = ctx;
  (void)step;
  const double sq = damo_sum_squares(g, n);
  if (sqrt(sq) > s->max_norm) s->max_norm = sqrt(sq);
  s->sum_sq += sq, s->count += n, s->steps++;
  return DAMO_OK;
}

#endif
