/* metrics.c - classification figures beyond accuracy: precision, recall, F1 and ROC AUC for
 * binary tasks, and the confusion matrix for any number of classes, computed from a
 * model's predictions. AUC is the Mann-Whitney statistic: the chance that a random positive
 * scores above a random negative (ties count half), from one sort of the scores. */
#include "train/history.h"

#include <math.h>

typedef struct scored {
  float score;
  int positive;
} scored;

static int by_score(const void *a, const void *b) {
  float x = ((const scored *)a)->score, y = ((const scored *)b)->score;
  return (x > y) - (x < y);
}

/* ROC AUC of scores against 0/1 labels; NAN when one class is absent. */
static double roc_auc(scored *s, int64_t n) {
  qsort(s, (size_t)n, sizeof *s, by_score);
  double rank_sum = 0; /* sum of the positives' (average, 1-based) ranks */
  int64_t pos = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j < n && s[j].score == s[i].score) j++;
    double avg_rank = 0.5 * (double)(i + 1 + j); /* ranks i+1 .. j share their mean */
    for (int64_t k = i; k < j; k++)
      if (s[k].positive) {
        rank_sum += avg_rank;
        pos++;
      }
    i = j;
  }
  int64_t neg = n - pos;
  if (pos == 0 || neg == 0) return NAN;
  return (rank_sum - (double)pos * (double)(pos + 1) / 2.0) / ((double)pos * (double)neg);
}

size_t damo_metrics_scratch_bytes(int64_t n) { return (size_t)(n > 0 ? n : 1) * sizeof(scored); }

damo_status damo_classification_metrics(const damo_tensor *probs, const damo_tensor *labels, damo_metrics *out) {
  return damo_classification_metrics_scratch(probs, labels, NULL, out);
}

/* scratch: damo_metrics_scratch_bytes(n) bytes, or NULL to allocate them here. */
damo_status damo_classification_metrics_scratch(const damo_tensor *probs, const damo_tensor *labels, void *scratch,
                                                damo_metrics *out) {
  if (!probs || !labels || !out) return damo_error(DAMO_ERR_INVALID_ARG, "metrics: NULL argument");
  int64_t *confusion = out->confusion;
  int n_classes = out->n_classes;
  memset(out, 0, sizeof *out);
  out->confusion = confusion;
  out->n_classes = n_classes;
  out->precision = out->recall = out->f1 = out->auc = NAN;
  int64_t n = probs->ndim ? probs->shape[0] : 0;
  int64_t C = n ? damo_tensor_numel(probs) / n : 0;
  if (probs->dtype != DAMO_F32 || n < 1 || C < 1)
    return damo_error(DAMO_ERR_SHAPE, "metrics: predictions must be f32 (N, classes) or (N, 1)");
  int binary = C == 1 || C == 2;
  int64_t classes = C == 1 ? 2 : C;
  if (damo_tensor_numel(labels) != n)
    return damo_error(DAMO_ERR_SHAPE, "metrics: %lld predictions but %lld labels", (long long)n,
                      (long long)damo_tensor_numel(labels));
  scored *owned = binary && !scratch ? malloc((size_t)n * sizeof *owned) : NULL;
  scored *s = scratch ? scratch : owned;
  if (binary && !s) return damo_error(DAMO_ERR_NOMEM, "metrics: out of memory for %lld scores", (long long)n);
  int64_t tp = 0, fp = 0, fn = 0, correct = 0;
  const float *p = probs->data;
  for (int64_t i = 0; i < n; i++) {
    int truth = labels->dtype == DAMO_I32 ? damo_tensor_i32(labels)[i] : (int)(damo_tensor_f32(labels)[i] > 0.5f);
    if (truth < 0 || truth >= classes) {
      free(owned);
      return damo_error(DAMO_ERR_INVALID_ARG, "metrics: label %d at index %lld is outside [0, %lld)", truth, (long long)i,
                        (long long)classes);
    }
    int pred;
    float score; /* probability of the positive class (binary) */
    if (C == 1) {
      score = p[i];
      pred = score > 0.5f;
    } else {
      const float *row = p + i * C;
      pred = 0;
      for (int64_t c = 1; c < C; c++)
        if (row[c] > row[pred]) pred = (int)c;
      score = C == 2 ? row[1] : 0;
    }
    correct += pred == truth;
    if (out->confusion && (int64_t)out->n_classes == classes) out->confusion[truth * classes + pred]++;
    if (binary) {
      s[i].score = score;
      s[i].positive = truth == 1;
      tp += pred == 1 && truth == 1;
      fp += pred == 1 && truth == 0;
      fn += pred == 0 && truth == 1;
    }
  }
  out->accuracy = (double)correct / (double)n;
  out->count = n;
  if (binary) {
    out->precision = tp + fp ? (double)tp / (double)(tp + fp) : 0.0;
    out->recall = tp + fn ? (double)tp / (double)(tp + fn) : 0.0;
    out->f1 = out->precision + out->recall > 0 ? 2 * out->precision * out->recall / (out->precision + out->recall) : 0.0;
    out->auc = roc_auc(s, n);
  }
  free(owned);
  return DAMO_OK;
}

/* ------------------------------------------------------------------ binary metrics in fit */

damo_status damo_binary_metrics_check(int metrics, damo_loss loss, int64_t outputs, const char *what) {
  const int binary_only = DAMO_METRIC_PRECISION | DAMO_METRIC_RECALL | DAMO_METRIC_F1 | DAMO_METRIC_AUC;
  if (!(metrics & binary_only)) return DAMO_OK;
  if ((loss == DAMO_LOSS_BINARY_CE && outputs == 1) || (loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE && outputs == 2))
    return DAMO_OK;
  const char *name = metrics & DAMO_METRIC_PRECISION ? "precision"
                     : metrics & DAMO_METRIC_RECALL  ? "recall"
                     : metrics & DAMO_METRIC_F1      ? "f1"
                                                     : "auc";
  return damo_error(DAMO_ERR_INVALID_ARG,
                    "%s: metric '%s' needs a binary task (binary_crossentropy with 1 output, or "
                    "sparse_categorical_crossentropy with 2 classes; class 1 is positive), but the model has %s "
                    "with %lld outputs",
                    what, name, damo_loss_name(loss), (long long)outputs);
}

/* The same formulas as the sigmoid and softmax ops, so validation figures match
 * damo_classification_metrics on damo_model_predict's output bit for bit. */
static inline float sigmoid_as_op(float x) {
  if (x >= 0) return 1.0f / (1.0f + expf(-x));
  float e = expf(x);
  return e / (1.0f + e);
}

void damo_binary_probs_from_logits(const float *logits, int64_t outputs, int64_t n, float *probs) {
  if (outputs == 1) {
    for (int64_t i = 0; i < n; i++) probs[i] = sigmoid_as_op(logits[i]);
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    const float *x = logits + 2 * i;
    float mx = x[1] > x[0] ? x[1] : x[0];
    float sum = 0;
    for (int c = 0; c < 2; c++) sum += expf(x[c] - mx);
    float inv = 1.0f / sum;
    for (int c = 0; c < 2; c++) probs[2 * i + c] = expf(x[c] - mx) * inv;
  }
}

void damo_binary_counts_add(damo_binary_counts *c, const float *logits, int64_t outputs, const void *targets,
                            damo_loss loss, int64_t n, int with_auc) {
  for (int64_t i = 0; i < n; i++) {
    int truth = loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE ? ((const int32_t *)targets)[i] == 1
                                                        : ((const float *)targets)[i] > 0.5f;
    /* logit > 0 is probability > 0.5; with two logits, argmax (a tie is class 0) */
    int predicted = outputs == 1 ? logits[i] > 0 : logits[2 * i + 1] > logits[2 * i];
    c->tp += predicted && truth;
    c->fp += predicted && !truth;
    c->fn += !predicted && truth;
    c->tn += !predicted && !truth;
    if (with_auc) {
      /* positive-class probability: softmax of two logits is the sigmoid of their difference */
      float p = sigmoid_as_op(outputs == 1 ? logits[i] : logits[2 * i + 1] - logits[2 * i]);
      int bin = (int)(p * DAMO_AUC_BINS);
      bin = bin < 0 ? 0 : bin >= DAMO_AUC_BINS ? DAMO_AUC_BINS - 1 : bin;
      if (truth) c->positives_in_bin[bin]++;
      else c->negatives_in_bin[bin]++;
    }
  }
}

void damo_binary_counts_to_row(const damo_binary_counts *c, int metrics, double *row) {
  double precision = c->tp + c->fp ? (double)c->tp / (double)(c->tp + c->fp) : 0.0;
  double recall = c->tp + c->fn ? (double)c->tp / (double)(c->tp + c->fn) : 0.0;
  if (metrics & DAMO_METRIC_PRECISION) row[DAMO_H_PRECISION] = precision;
  if (metrics & DAMO_METRIC_RECALL) row[DAMO_H_RECALL] = recall;
  if (metrics & DAMO_METRIC_F1) row[DAMO_H_F1] = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
  if (metrics & DAMO_METRIC_AUC) {
    /* Mann-Whitney over the bins: a positive beats the negatives of lower bins, ties half */
    double pairs_won = 0;
    int64_t negatives_below = 0, positives = 0;
    for (int b = 0; b < DAMO_AUC_BINS; b++) {
      pairs_won += (double)c->positives_in_bin[b] * ((double)negatives_below + 0.5 * (double)c->negatives_in_bin[b]);
      negatives_below += c->negatives_in_bin[b];
      positives += c->positives_in_bin[b];
    }
    row[DAMO_H_AUC] = positives && negatives_below ? pairs_won / ((double)positives * (double)negatives_below) : NAN;
  }
}
