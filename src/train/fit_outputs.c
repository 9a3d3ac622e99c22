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
  for (int k = 0; k < DAMO_MODEL_MAX_OUTPUTS; k++) {
    f->loss[k] = f->acc[k] = f->val_loss[k] = f->val_acc[k] = -1;
    for (int j = 0; j < FIT_BINARY; j++) f->bin[k][j] = f->val_bin[k][j] = -1;
  }
  if (f->n < 2) return;
  static const struct {
    int metric;
    const char *suffix;
  } binary[FIT_BINARY] = {{DAMO_METRIC_PRECISION, "_precision"}, {DAMO_METRIC_RECALL, "_recall"},
                          {DAMO_METRIC_F1, "_f1"}, {DAMO_METRIC_AUC, "_auc"}};
  /* Keras' order: every output's loss, then each output's metrics; the same for validation */
  for (int val = 0; val <= with_val; val++) {
    const char *prefix = val ? "val_" : "";
    for (int k = 0; k < f->n; k++) *(val ? &f->val_loss[k] : &f->loss[k]) =
        add_column(f, prefix, damo_model_output_node_at(m, k)->name, "_loss");
    for (int k = 0; k < f->n; k++) {
      const damo_output_compile c = damo_model_output_compile(m, k);
      const char *name = damo_model_output_node_at(m, k)->name;
      if ((c.metrics & DAMO_METRIC_ACCURACY) && c.loss != DAMO_LOSS_MSE)
        *(val ? &f->val_acc[k] : &f->acc[k]) = add_column(f, prefix, name, "_accuracy");
      for (int j = 0; j < FIT_BINARY; j++)
        if (c.metrics & binary[j].metric) {
          f->binary[k] = 1;
          *(val ? &f->val_bin[k][j] : &f->bin[k][j]) = add_column(f, prefix, name, binary[j].suffix);
        }
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
    if (f->binary[k]) {
      const damo_output_compile oc = damo_model_output_compile(m, k);
      damo_binary_counts_add(&f->sums.counts[k], damo_node_data(mg->heads[k].logits), damo_model_output_size_at(m, k),
                             mg->heads[k].y_stage, oc.loss, n, oc.metrics & DAMO_METRIC_AUC);
    }
  }
}

/* The int64 fields of a damo_binary_counts (tp, fp, fn, tn, then the two histograms). */
#define COUNTS_N ((int)(sizeof(damo_binary_counts) / sizeof(int64_t)))

void fit_outputs_train_figures(fit_outputs *f, damo_dist *dist, double *row) {
  if (f->n < 2) return;
  static _Thread_local double s[DAMO_MODEL_MAX_OUTPUTS * (4 + COUNTS_N)];
  int n = 0;
  for (int k = 0; k < f->n; k++) {
    s[n++] = f->sums.loss[k], s[n++] = (double)f->sums.rows[k], s[n++] = (double)f->sums.correct[k];
    s[n++] = (double)f->sums.counted[k];
    const int64_t *counts = &f->sums.counts[k].tp;
    for (int j = 0; f->binary[k] && j < COUNTS_N; j++) s[n++] = (double)counts[j];
  }
  if (damo_dist_size(dist) > 1 && damo_dist_allreduce_f64(dist, s, n) != DAMO_OK) return; /* the next collective fails */
  n = 0;
  for (int k = 0; k < f->n; k++) {
    const double *v = s + n;
    n += 4;
    if (f->loss[k] >= 0) row[f->loss[k]] = v[1] > 0 ? v[0] / v[1] : NAN;
    if (f->acc[k] >= 0) row[f->acc[k]] = v[3] > 0 ? v[2] / v[3] : NAN;
    if (!f->binary[k]) continue;
    damo_binary_counts all;
    int64_t *counts = &all.tp;
    for (int j = 0; j < COUNTS_N; j++) counts[j] = (int64_t)s[n++];
    double fixed[DAMO_HISTORY_COLUMNS]; /* the one-output columns, moved to this output's */
    for (int j = 0; j < DAMO_HISTORY_COLUMNS; j++) fixed[j] = NAN;
    damo_binary_counts_to_row(&all, DAMO_METRIC_PRECISION | DAMO_METRIC_RECALL | DAMO_METRIC_F1 | DAMO_METRIC_AUC, fixed);
    const int from[FIT_BINARY] = {DAMO_H_PRECISION, DAMO_H_RECALL, DAMO_H_F1, DAMO_H_AUC};
    for (int j = 0; j < FIT_BINARY; j++)
      if (f->bin[k][j] >= 0) row[f->bin[k][j]] = fixed[from[j]];
  }
}

void fit_outputs_val_binary(const fit_outputs *f, int k, const damo_metrics *vm, double *row) {
  const double exact[FIT_BINARY] = {vm->precision, vm->recall, vm->f1, vm->auc};
  for (int j = 0; j < FIT_BINARY; j++)
    if (f->val_bin[k][j] >= 0) row[f->val_bin[k][j]] = exact[j];
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

damo_status fit_val_preds_init(fit_val_preds *v, const damo_model *m, const int *want, int64_t n) {
  memset(v, 0, sizeof *v);
  int ok = 1;
  for (int k = 0; k < damo_model_num_outputs(m); k++) {
    if (!want[k]) continue;
    v->any = 1;
    v->size[k] = damo_model_output_size_at(m, k);
    const int64_t shape[2] = {n, v->size[k]};
    v->probs[k] = malloc((size_t)(n * v->size[k]) * sizeof *v->probs[k]);
    v->truth[k] = malloc((size_t)n * sizeof *v->truth[k]);
    v->probs_t[k] = v->probs[k] ? damo_tensor_wrap(DAMO_F32, 2, shape, v->probs[k]) : NULL;
    v->truth_t[k] = v->truth[k] ? damo_tensor_wrap(DAMO_I32, 1, shape, v->truth[k]) : NULL;
    ok = ok && v->probs_t[k] && v->truth_t[k];
  }
  if (v->any && !(v->scratch = malloc(damo_metrics_scratch_bytes(n)))) ok = 0;
  return ok ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "fit: out of memory for %lld validation predictions", (long long)n);
}

void fit_val_preds_free(fit_val_preds *v) {
  for (int k = 0; k < DAMO_MODEL_MAX_OUTPUTS; k++) {
    damo_tensor_free(v->probs_t[k]); /* wraps, not owning their buffers */
    damo_tensor_free(v->truth_t[k]);
    free(v->probs[k]);
    free(v->truth[k]);
  }
  free(v->scratch);
  memset(v, 0, sizeof *v);
}
