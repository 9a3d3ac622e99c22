/* fit_outputs.h - fit's figures per output for a model of several outputs: the history's
 * named columns ("<output>_loss", "<output>_accuracy", "<output>_precision", ..., their
 * "val_" forms) and the running sums behind them (fit_outputs.c). A model of one output has
 * none: its figures are the DAMO_H_* columns as ever. Also the validation predictions kept
 * for exact binary figures (either kind of model). */
#ifndef DAMO_FIT_OUTPUTS_H
#define DAMO_FIT_OUTPUTS_H

#include "train/history.h"
#include "train/model.h"

/* The running sums of an epoch (a checkpoint keeps them as bytes). */
typedef struct fit_output_sums {
  double loss[DAMO_MODEL_MAX_OUTPUTS];
  int64_t rows[DAMO_MODEL_MAX_OUTPUTS], correct[DAMO_MODEL_MAX_OUTPUTS], counted[DAMO_MODEL_MAX_OUTPUTS];
  damo_binary_counts counts[DAMO_MODEL_MAX_OUTPUTS]; /* outputs with binary metrics */
} fit_output_sums;

/* The binary metrics' order in the column tables below. */
enum { FIT_PRECISION, FIT_RECALL, FIT_F1, FIT_AUC, FIT_BINARY };

typedef struct fit_outputs {
  int n; /* the model's outputs; the columns below exist when n > 1 */
  /* history columns (DAMO_HISTORY_COLUMNS + j), -1 where not recorded */
  int loss[DAMO_MODEL_MAX_OUTPUTS], acc[DAMO_MODEL_MAX_OUTPUTS];
  int val_loss[DAMO_MODEL_MAX_OUTPUTS], val_acc[DAMO_MODEL_MAX_OUTPUTS];
  int bin[DAMO_MODEL_MAX_OUTPUTS][FIT_BINARY], val_bin[DAMO_MODEL_MAX_OUTPUTS][FIT_BINARY];
  int binary[DAMO_MODEL_MAX_OUTPUTS]; /* the output asks for a binary metric */
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
/* Output k's exact validation precision, recall, F1 and AUC into row. */
void fit_outputs_val_binary(const fit_outputs *f, int k, const damo_metrics *vm, double *row);
/* The column named name (DAMO_HISTORY_COLUMNS + j), or -1. */
int fit_outputs_column(const fit_outputs *f, const char *name);

/* Validation predictions (probabilities, 0/1 truth) of the outputs with binary metrics. */
typedef struct fit_val_preds {
  int any;
  float *probs[DAMO_MODEL_MAX_OUTPUTS];
  int32_t *truth[DAMO_MODEL_MAX_OUTPUTS];
  damo_tensor *probs_t[DAMO_MODEL_MAX_OUTPUTS], *truth_t[DAMO_MODEL_MAX_OUTPUTS];
  int64_t size[DAMO_MODEL_MAX_OUTPUTS]; /* values per row */
  void *scratch;
} fit_val_preds;
/* want[k]: keep output k's predictions of n rows. */
damo_status fit_val_preds_init(fit_val_preds *v, const damo_model *m, const int *want, int64_t n);
void fit_val_preds_free(fit_val_preds *v);

#endif
