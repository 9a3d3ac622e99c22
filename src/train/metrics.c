/* metrics.c - classification figures beyond accuracy: precision, recall, F1 and ROC AUC for
 * binary tasks, and the confusion matrix for any number of classes, computed from a
 * model's predictions. AUC is the Mann-Whitney statistic: the chance that a random positive
 * scores above a random negative (ties count half), from one sort of the scores. */
#include "internal.h"

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

damo_status damo_classification_metrics(const damo_tensor *probs, const damo_tensor *labels, damo_metrics *out) {
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
  scored *s = binary ? malloc((size_t)n * sizeof *s) : NULL;
  if (binary && !s) return damo_error(DAMO_ERR_NOMEM, "metrics: out of memory for %lld scores", (long long)n);
  int64_t tp = 0, fp = 0, fn = 0, correct = 0;
  const float *p = probs->data;
  for (int64_t i = 0; i < n; i++) {
    int truth = labels->dtype == DAMO_I32 ? damo_tensor_i32(labels)[i] : (int)(damo_tensor_f32(labels)[i] > 0.5f);
    if (truth < 0 || truth >= classes) {
      free(s);
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
    free(s);
  }
  return DAMO_OK;
}
