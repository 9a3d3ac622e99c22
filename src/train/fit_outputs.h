/* fit_outputs.h - fit's figures per output for a model of several outputs: the history's
 * named columns ("<output>_loss", "<output>_accuracy", their "val_" forms) and the running
 * sums behind them (fit_outputs.c). A model of one output has none: its figures are the
 * DAMO_H_* columns as ever. */
#ifndef DAMO_FIT_OUTPUTS_H
#define DAMO_FIT_OUTPUTS_H

#include "train/history.h"
#include "train/model.h"

/* The running sums of an epoch (a checkpoint keeps them as bytes). */
typedef struct fit_output_sums {
  double loss[DAMO_MODEL_MAX_OUTPUTS];
  int64_t rows[DAMO_MODEL_MAX_OUTPUTS], correct[DAMO_MODEL_MAX_OUTPUTS], counted[DAMO_MODEL_MAX_OUTPUTS];
} fit_output_sums;

typedef struct fit_outputs {
  int n; /* the model's outputs; the columns below exist when n > 1 */
  /* history columns (DAMO_HISTORY_COLUMNS + j), -1 where not recorded */
  int loss[DAMO_MODEL_MAX_OUTPUTS], acc[DAMO_MODEL_MAX_OUTPUTS];
  int val_loss[DAMO_MODEL_MAX_OUTPUTS], val_acc[DAMO_MODEL_MAX_OUTPUTS];
  int n_names;
  char names[DAMO_HISTORY_MAX_EXTRA][DAMO_HISTORY_NAME_MAX];
  const char *name_list[DAMO_HISTORY_MAX_EXTRA];
  fit_output_sums sums;
} fit_outputs;

/* The columns of a run of m (with_val: it has validation data). */
void fit_outputs_init(fit_outputs *f, const damo_model *m, int with_val);
/* Adds the current batch of mg (n rows, forward done) to the sums. */
void fit_outputs_observe(fit_outputs *f, const damo_model *m, const damo_model_graph *mg, int64_t n);
/* The epoch's figures so far into row (summed over the ranks of dist, when there are several). */
void fit_outputs_train_figures(fit_outputs *f, damo_dist *dist, double *row);
/* Validation figures (each output's loss and accuracy, -1: none) into row. */
void fit_outputs_val_figures(const fit_outputs *f, const double *losses, const double *accs, double *row);
/* The column named name (DAMO_HISTORY_COLUMNS + j), or -1. */
int fit_outputs_column(const fit_outputs *f, const char *name);

#endif
