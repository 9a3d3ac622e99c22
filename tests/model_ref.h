/* model_ref.h - what the model-against-PyTorch suites (test_gpt2, test_bert) share: the
 * reference dictionary a suite loads in main(), tolerances for float32 results against a
 * float64 reference rounded to float32, a relative-error figure for the verbose report, and
 * a check that a call fails with a given status and message. Include after harness.h. */
#ifndef DAMO_TEST_MODEL_REF_H
#define DAMO_TEST_MODEL_REF_H

#include <math.h>
#include <string.h>

#define LOGIT_ATOL 1e-5
#define LOGIT_RTOL 1e-4
#define GRAD_ATOL 1e-6
#define GRAD_RTOL 1e-4

static damo_tensor_dict *ref;
static int verbose;

static damo_tensor *ref_get(const char *name) {
  damo_tensor *t = ref ? damo_tensor_dict_get(ref, name) : NULL;
  CHECK_MSG(t != NULL, "reference tensor '%s' is missing", name);
  return t;
}

/* Largest |a-b| / (|b| + 1e-3 max|b|): the relative error, with a floor so that entries
 * that are 0 in exact arithmetic (e.g. the key bias's gradient) do not dominate. */
static double max_rel_error(const float *a, const float *b, int64_t n) {
  double scale = 0, worst = 0;
  for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)b[i]));
  for (int64_t i = 0; i < n; i++) {
    double e = fabs((double)a[i] - (double)b[i]) / (fabs((double)b[i]) + 1e-3 * scale);
    if (!(e <= worst)) worst = e;
  }
  return worst;
}

#endif
