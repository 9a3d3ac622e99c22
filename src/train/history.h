/* history.h - what fit records per epoch (see history.c). */
#ifndef DAMO_HISTORY_H
#define DAMO_HISTORY_H

#include "core/core.h"

/* The columns (DAMO_H_* in damo.h): a run records a subset (a bit mask of 1u << column):
 * the first five always, so the CSV of a run without binary metrics keeps its format
 * (epoch,loss,accuracy,val_loss,val_accuracy,lr). */
#define DAMO_H_ALWAYS                                                                             \
  ((1u << DAMO_H_LOSS) | (1u << DAMO_H_ACCURACY) | (1u << DAMO_H_VAL_LOSS) | (1u << DAMO_H_VAL_ACCURACY) | \
   (1u << DAMO_H_LR))

/* Set in recorded: rows are numbered by step, not epoch (the CSV's first column "step"), or
 * by federated round ("round"). */
#define DAMO_H_BY_STEP (1u << 31)
#define DAMO_H_BY_ROUND (1u << 30)

#define DAMO_HISTORY_NAME_MAX 80 /* "val_" + an output name (DAMO_NAME_MAX 64) + "_accuracy" fits */

struct damo_history {
  int n, cap;
  unsigned recorded; /* columns of this run (1u << DAMO_H_*) */
  int n_extra;       /* named columns after those (DAMO_HISTORY_COLUMNS + j), all recorded */
  char extra[DAMO_HISTORY_MAX_EXTRA][DAMO_HISTORY_NAME_MAX];
  int *epoch;        /* 1-based epoch numbers */
  double *values;    /* n x DAMO_HISTORY_ROW, NAN where absent */
};

damo_history *damo_history_new(unsigned recorded);
/* The extra columns' names (a run of a model of several outputs). */
damo_status damo_history_set_extra(damo_history *h, int n, const char *const *names);
/* Column c's name (a DAMO_H_* one or an extra), or NULL. */
const char *damo_history_column_name(const damo_history *h, int c);
/* The recorded columns in the order CSV and progress lines show them: the training ones
 * (extras after the DAMO_H_* ones), then the validation ones likewise, then lr. Returns how
 * many went into cols (at most DAMO_HISTORY_ROW). */
int damo_history_order(const damo_history *h, int *cols);
damo_status damo_history_append(damo_history *h, int epoch, const double *row);
/* An existing non-empty CSV must already have this run's header (resuming appends rows). */
damo_status damo_history_csv_check(const char *path, const damo_history *h);
damo_status damo_history_csv_append(const char *path, const damo_history *h, int epoch, const double *row);

/* ------------------------------------------------------------------ binary metrics in fit
 * (metrics.c): precision/recall/F1/AUC for a binary task, class 1 positive. */

/* DAMO_ERR_INVALID_ARG unless metrics asks for no binary figure, or the task is binary
 * (binary CE with one output, sparse CE with 2 classes). */
damo_status damo_binary_metrics_check(int metrics, damo_loss loss, int64_t outputs, const char *what);

/* Counts over the training batches of an epoch; the histogram approximates AUC (as Keras). */
#define DAMO_AUC_BINS 200
typedef struct damo_binary_counts {
  int64_t tp, fp, fn, tn;
  int64_t positives_in_bin[DAMO_AUC_BINS], negatives_in_bin[DAMO_AUC_BINS];
} damo_binary_counts;
/* Adds n rows of logits (outputs 1: sigmoid, 2: softmax) against the staged targets (i32
 * labels for sparse CE, f32 0/1 for binary CE). with_auc fills the histogram too. */
void damo_binary_counts_add(damo_binary_counts *c, const float *logits, int64_t outputs, const void *targets,
                            damo_loss loss, int64_t n, int with_auc);
/* Fills the train-side columns of row that metrics asks for (precision, recall, f1, auc). */
void damo_binary_counts_to_row(const damo_binary_counts *c, int metrics, double *row);

/* Probabilities (n x outputs) from logits, exactly as the model's sigmoid/softmax output. */
void damo_binary_probs_from_logits(const float *logits, int64_t outputs, int64_t n, float *probs);
/* damo_classification_metrics with a caller-owned scratch of damo_metrics_scratch_bytes(n)
 * (no allocation). */
size_t damo_metrics_scratch_bytes(int64_t n);
damo_status damo_classification_metrics_scratch(const damo_tensor *probs, const damo_tensor *labels, void *scratch,
                                                damo_metrics *out);

#endif
