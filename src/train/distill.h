/* distill.h - fit's knowledge distillation (distill.c). */
#ifndef DAMO_DISTILL_H
#define DAMO_DISTILL_H

#include "train/model.h"

/* Checks o->distill against the student m and the data x, predicts the teacher's soft
 * targets for every row of x (into *soft, owned by the caller) and sets m up so that
 * damo_model_graph_get(m, DAMO_GRAPH_DISTILL, ...) builds the mixed loss. */
damo_status damo_distill_begin(damo_model *m, const damo_fit_options *o, int n_x, const damo_tensor *const *x,
                               damo_tensor **soft);
/* Undoes it and frees soft. */
void damo_distill_end(damo_model *m, damo_tensor *soft);

#endif
