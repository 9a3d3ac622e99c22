/* test_metrics.c - precision, recall, F1, ROC AUC and the confusion matrix on hand-worked
 * examples. */
#include "harness.h"

#include <damo.h>

static void test_binary_sigmoid_outputs(void) {
  /* scores and labels: positives at 0.9, 0.8, 0.35; negatives at 0.7, 0.3, 0.2, 0.1 */
  float p[7] = {0.9f, 0.8f, 0.35f, 0.7f, 0.3f, 0.2f, 0.1f};
  int32_t y[7] = {1, 1, 1, 0, 0, 0, 0};
  int64_t ps[2] = {7, 1}, ys[1] = {7}, confusion[4] = {0};
  damo_tensor *pt = damo_tensor_wrap(DAMO_F32, 2, ps, p), *yt = damo_tensor_wrap(DAMO_I32, 1, ys, y);
  damo_metrics m = {.confusion = confusion, .n_classes = 2};
  CHECK(damo_classification_metrics(pt, yt, &m) == DAMO_OK);
  /* threshold 0.5: predicted positive 0.9, 0.8, 0.7 -> tp 2, fp 1, fn 1 */
  CHECK_NEAR(m.precision, 2.0 / 3.0, 1e-12);
  CHECK_NEAR(m.recall, 2.0 / 3.0, 1e-12);
  CHECK_NEAR(m.f1, 2.0 / 3.0, 1e-12);
  CHECK_NEAR(m.accuracy, 5.0 / 7.0, 1e-12);
  /* AUC: of 12 (pos, neg) pairs only (0.35 vs 0.7) is misordered -> 11/12 */
  CHECK_NEAR(m.auc, 11.0 / 12.0, 1e-12);
  CHECK(confusion[0] == 3 && confusion[1] == 1 && confusion[2] == 1 && confusion[3] == 2);
  damo_tensor_free(pt);
  damo_tensor_free(yt);
}

static void test_ties_and_softmax_pairs(void) {
  /* two-column probabilities; all scores tie -> AUC 0.5 */
  float p[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
  int32_t y[4] = {0, 1, 0, 1};
  int64_t ps[2] = {4, 2}, ys[1] = {4};
  damo_tensor *pt = damo_tensor_wrap(DAMO_F32, 2, ps, p), *yt = damo_tensor_wrap(DAMO_I32, 1, ys, y);
  damo_metrics m = {0};
  CHECK(damo_classification_metrics(pt, yt, &m) == DAMO_OK);
  CHECK_NEAR(m.auc, 0.5, 1e-12);
  y[1] = y[3] = 0; /* one class only: AUC undefined */
  CHECK(damo_classification_metrics(pt, yt, &m) == DAMO_OK);
  CHECK(isnan(m.auc));
  y[2] = 3; /* a label outside the classes */
  CHECK(damo_classification_metrics(pt, yt, &m) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(strstr(damo_last_error(), "label 3 at index 2") != NULL, "%s", damo_last_error());
  damo_tensor_free(pt);
  damo_tensor_free(yt);
}

static void test_multiclass_confusion(void) {
  float p[9] = {0.7f, 0.2f, 0.1f, 0.1f, 0.1f, 0.8f, 0.3f, 0.4f, 0.3f};
  int32_t y[3] = {0, 1, 1};
  int64_t ps[2] = {3, 3}, ys[1] = {3}, confusion[9] = {0};
  damo_tensor *pt = damo_tensor_wrap(DAMO_F32, 2, ps, p), *yt = damo_tensor_wrap(DAMO_I32, 1, ys, y);
  damo_metrics m = {.confusion = confusion, .n_classes = 3};
  CHECK(damo_classification_metrics(pt, yt, &m) == DAMO_OK);
  CHECK_NEAR(m.accuracy, 2.0 / 3.0, 1e-12);
  CHECK(isnan(m.f1) && isnan(m.auc)); /* binary-only figures */
  CHECK(confusion[0] == 1 && confusion[1 * 3 + 2] == 1 && confusion[1 * 3 + 1] == 1);
  damo_tensor_free(pt);
  damo_tensor_free(yt);
}

int main(void) {
  RUN(test_binary_sigmoid_outputs);
  RUN(test_ties_and_softmax_pairs);
  RUN(test_multiclass_confusion);
  return test_summary("metrics");
}
