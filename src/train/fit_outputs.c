/* fit_outputs.c - per-output figures of fit (see fit_outputs.h). */
#include "train/fit_outputs.h"

#include <math.h>
#include <stdio.h>

static int add_column(fit_outputs *f, const char *prefix, const char *output, const char *suffix) {
  const int j = f->n_names++;
  snprintf(f->names[j], sizeof f->names[j], "%s%.*s%s", prefix, DAMO_NAME_MAX, output, suffix);
  f->name_list[j] = f->names[j];
  return DAMO_HISTORY_COLUMNS + j;
}

void fit_outputs_init(fit_outputs *f, const damo_model *m, int with_val) {
  memset(f, 0, sizeof *f);
  f->n = damo_model_num_outputs(m);
  for (int k = 0; k < DAMO_MODEL_MAX_OUTPUTS; k++) f->loss[k] = f->acc[k] = f->val_loss[k] = f->val_acc[k] = -1;
  if (f->n < 2) return;
  /* Keras' order: every output's loss, then their accuracies; the same for validation */
  for (int val = 0; val <= with_val; val++) {
    const char *prefix = val ? "val_" : "";
    for (int k = 0; k < f->n; k++) *(val ? &f->val_loss[k] : &f->loss[k]) =
        add_column(f, prefix, damo_model_output_node_at(m, k)->name, "_loss");
    for (int k = 0; k < f->n; k++) {
      const damo_output_compile c = damo_model_output_compile(m, k);
      if ((c.metrics & DAMO_METRIC_ACCURACY) && c.loss != DAMO_LOSS_MSE)
        *(val ? &f->val_acc[k] : &f->acc[k]) = add_column(f, prefix, damo_model_output_node_at(m, k)->name, "_accuracy");
    }
  }
}

void fit_outputs_observe(fit_outputs *f, const damo_model *m, const damo_model_graph *mg, int64_t n) {
  if (f->n < 2) return;
  for (int k = 0; k < f->n; k++) {
    int64_t c;
    f->sums.loss[k] += (double)damo_node_data(mg->heads[k].loss)[0] * (double)n;
    f->sums.rows[k] += n;
    f->sums.correct[k] += damo_model_batch_correct(m, mg, k, n, &c);
    f->sums.counted[k] += c;
  }
}

void fit_outputs_train_figures(fit_outputs *f, damo_dist *dist, double *row) {
  if (f->n < 2) return;
  double s[4 * DAMO_MODEL_MAX_OUTPUTS];
  for (int k = 0; k < f->n; k++)
    s[4 * k] = f->sums.loss[k], s[4 * k + 1] = (double)f->sums.rows[k], s[4 * k + 2] = (double)f->sums.correct[k],
    s[4 * k + 3] = (double)f->sums.counted[k];
  if (damo_dist_size(dist) > 1 && damo_dist_allreduce_f64(dist, s, 4 * f->n) != DAMO_OK) return; /* the next collective fails */
  for (int k = 0; k < f->n; k++) {
    if (f->loss[k] >= 0) row[f->loss[k]] = s[4 * k + 1] > 0 ? s[4 * k] / s[4 * k + 1] : NAN;
    if (f->acc[k] >= 0) row[f->acc[k]] = s[4 * k + 3] > 0 ? s[4 * k + 2] / s[4 * k + 3] : NAN;
  }
}

void fit_outputs_val_figures(const fit_outputs *f, const double *losses, const double *accs, double *row) {
  for (int k = 0; f->n > 1 && k < f->n; k++) {
    if (f->val_loss[k] >= 0) row[f->val_loss[k]] = losses[k];
    if (f->val_acc[k] >= 0) row[f->val_acc[k]] = accs[k] >= 0 ? accs[k] : NAN;
  }
}

int fit_outputs_column(const fit_outputs *f, const char *name) {
  for (int j = 0; j < f->n_names; j++)
    if (!strcmp(f->names[j], name)) return DAMO_HISTORY_COLUMNS + j;
  return -1;
}
