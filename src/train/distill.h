/* distill.h - fit's knowledge distillation (distill.c). */
#ifndef DAMO_DISTILL_H
#define DAMO_DISTILL_H

#include "train/model.h"

/* Checks o->distill against the student m and the data x and sets m up so that
 * damo_model_graph_get(m, DAMO_GRAPH_DISTILL, ...) builds the mixed loss. Without
 * augmentation it predicts the teacher's soft targets for every row of x (into *soft, owned
 * by the caller); with it *soft stays NULL and damo_distill_score_batch gives each batch's. */
damo_status damo_distill_begin(damo_model *m, const damo_fit_options *o, int n_x, const damo_tensor *const *x,
                               damo_tensor **soft);
/* Under augmentation: the teacher's soft targets for the n rows staged in mg's x_stage (the
 * augmented views), into mg's soft stage. Nothing to do otherwise. */
damo_status damo_distill_score_batch(damo_model *m, damo_model_graph *mg, int64_t n);
/* Undoes damo_distill_begin (after a failed one too) and frees soft. */
void damo_distill_end(damo_model *m, damo_tensor *soft);

#endif
