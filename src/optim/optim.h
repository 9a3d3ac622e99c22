/* optim.h - the optimizer layer's settings read by the layers above (not public API). */
#ifndef DAMO_OPTIM_H
#define DAMO_OPTIM_H

#include "core/core.h"

/* What the optimizer and schedule read for a config field left 0 (the C API's "default").
 * A config file has no such marker: it is written with these values filled in. */
#define DAMO_ADAM_DEFAULT_BETA1 0.9f
#define DAMO_ADAM_DEFAULT_BETA2 0.999f
#define DAMO_ADAM_DEFAULT_EPS 1e-8f
#define DAMO_DEFAULT_GAMMA 0.1

/* Zeroes the moments (momentum, Adam's m and v) of every parameter outside the n_ranges
 * (offset, count) pairs of the whole block (ranges NULL: none zeroed). A trainer resumed with
 * tensors frozen that were trained before calls it, so their old momentum cannot move them. */
void optimizer_clear_moments_outside(damo_optimizer *o, const int64_t *ranges, int n_ranges);

#endif
