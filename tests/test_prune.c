/* test_prune.c - magnitude pruning while fine-tuning (damo_model_prune): the sparsity asked
 * for is what the kernels end with (over all of them, or each), one-shot masks are the
 * smallest magnitudes of the start, biases are never touched, zeros survive a save, a pruned
 * model still classifies, and bad options are refused with the model untouched. */
#include "harness.h"

#include <damo.h>
#include <stdlib.h>
#include <unistd.h>

enum { N = 1200, FEATURES = 6, CLASSES = 3 };

static damo_tensor *x, *y;

/* Class c: feature c well above the rest (separable, as the CLI test's blobs). */
static void make_data(void) {
  const int64_t xs[] = {N, FEATURES}, ys[] = {N};
  x = damo_tensor_new(DAMO_F32, 2, xs);
  y = damo_tensor_new(DAMO_I32, 1, ys);
  damo_rng r;
  damo_rng_seed(&r, 11);
  for (int i = 0; i < N; i++) {
    const int c = (int)damo_rng_below(&r, CLASSES);
    ((int32_t *)y->data)[i] = c;
    for (int k = 0; k < FEATURES; k++) damo_tensor_f32(x)[i * FEATURES + k] = (k == c ? 3.0f : 0.0f) + damo_rng_normal(&r);
  }
}

static damo_model *mlp(uint64_t seed) {
  const int64_t in[] = {FEATURES};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_dense(64, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(32, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(CLASSES, DAMO_ACT_SOFTMAX));
  damo_model_build(m, seed);
  damo_compile_options c = {.optimizer = damo_adam(5e-3f), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE,
                            .metrics = DAMO_METRIC_ACCURACY};
  damo_model_compile(m, &c);
  return m;
}

static const damo_fit_options fit2 = {.epochs = 2, .batch_size = 40, .seed = 3, .verbose = 0};

static double sparsity(damo_model *m, int layer) {
  int64_t zeros = 0, weights = 1;
  damo_model_kernel_sparsity(m, layer, NULL, &zeros, &weights);
  return (double)zeros / (double)weights;
}

static void test_global_and_layer_scope(void) {
  for (int scope = 0; scope < 2; scope++) {
    damo_model *m = mlp(1);
    CHECK(damo_model_fit(m, x, y, &fit2, NULL) == DAMO_OK);
    damo_prune_options o = {.sparsity = 0.8f, .scope = (damo_prune_scope)scope, .frequency = 10};
    damo_history *h = NULL;
    CHECK_MSG(damo_model_prune(m, x, y, &o, &fit2, &h) == DAMO_OK, "%s", damo_last_error());
    CHECK(h && damo_history_epochs(h) == 2);
    const int64_t sizes[] = {6 * 64, 64 * 32, 32 * 3}, total = sizes[0] + sizes[1] + sizes[2];
    /* exactly floor(0.8 n) zeros: of all the weights, or of each kernel */
    const int64_t zeros = scope == DAMO_PRUNE_GLOBAL ? (int64_t)(0.8 * (double)total)
                                                     : (int64_t)(0.8 * (double)sizes[0]) + (int64_t)(0.8 * (double)sizes[1]) +
                                                           (int64_t)(0.8 * (double)sizes[2]);
    CHECK_NEAR(sparsity(m, -1), (double)zeros / (double)total, 1e-9);
    if (scope == DAMO_PRUNE_LAYER)
      for (int k = 0; k < 3; k++) CHECK_NEAR(sparsity(m, k), 0.8, 0.02);
    else /* one threshold: the layers end unequal */
      CHECK(fabs(sparsity(m, 0) - sparsity(m, 1)) > 0.01 || fabs(sparsity(m, 1) - sparsity(m, 2)) > 0.01);
    float loss, acc;
    CHECK(damo_model_evaluate(m, x, y, 256, &loss, &acc) == DAMO_OK);
    CHECK_MSG(acc > 0.9, "scope %d: accuracy %.3f at 80%% sparsity", scope, (double)acc);
    damo_history_free(h);
    damo_model_free(m);
  }
}

/* One shot: the zeros at the end are the smallest 50% of the starting magnitudes. */
static void test_oneshot_masks_the_smallest(void) {
  damo_model *m = mlp(2);
  CHECK(damo_model_fit(m, x, y, &fit2, NULL) == DAMO_OK);
  char dir[] = "/tmp/damo_prune_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  CHECK(damo_model_save(m, dir) == DAMO_OK);
  damo_tensor_dict *start = NULL;
  char path[256];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(damo_safetensors_load(path, &start) == DAMO_OK);
  damo_prune_options o = {.sparsity = 0.5f, .schedule = DAMO_PRUNE_ONESHOT, .scope = DAMO_PRUNE_LAYER};
  CHECK(damo_model_prune(m, x, y, &o, &fit2, NULL) == DAMO_OK);
  CHECK(damo_model_save(m, dir) == DAMO_OK);
  damo_tensor_dict *end = NULL;
  CHECK(damo_safetensors_load(path, &end) == DAMO_OK);
  const char *kernels[] = {"dense_1.kernel", "dense_2.kernel", "dense_3.kernel"};
  for (int k = 0; start && end && k < 3; k++) {
    const damo_tensor *a = damo_tensor_dict_get(start, kernels[k]), *b = damo_tensor_dict_get(end, kernels[k]);
    CHECK_MSG(a && b, "%s", kernels[k]);
    if (!a || !b) continue;
    const int64_t n = damo_tensor_numel(a);
    float *mag = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) mag[i] = fabsf(damo_tensor_f32(a)[i]);
    int64_t wrong = 0, zeros = 0;
    for (int64_t i = 0; i < n; i++) {
      int64_t smaller = 0; /* the weight's rank among the start's magnitudes */
      for (int64_t j = 0; j < n; j++) smaller += mag[j] < mag[i];
      const int pruned = damo_tensor_f32(b)[i] == 0.0f;
      zeros += pruned;
      wrong += pruned != (smaller < n / 2);
    }
    CHECK_MSG(wrong == 0 && zeros == n / 2, "%s: %lld of %lld zeros, %lld not the smallest", kernels[k],
              (long long)zeros, (long long)n, (long long)wrong);
    free(mag);
  }
  /* biases are not pruned */
  const damo_tensor *bias = end ? damo_tensor_dict_get(end, "dense_1.bias") : NULL;
  int64_t bias_zeros = 0;
  for (int64_t i = 0; bias && i < damo_tensor_numel(bias); i++) bias_zeros += damo_tensor_f32(bias)[i] == 0.0f;
  CHECK(bias && bias_zeros < damo_tensor_numel(bias) / 4);
  /* the zeros come back with the model */
  damo_model *loaded = NULL;
  CHECK(damo_model_load(dir, &loaded) == DAMO_OK);
  if (loaded) CHECK_NEAR(sparsity(loaded, -1), sparsity(m, -1), 0);
  damo_model_free(loaded);
  damo_tensor_dict_free(start);
  damo_tensor_dict_free(end);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  damo_model_free(m);
}

static damo_tensor *predictions(damo_model *m) {
  damo_tensor *p = NULL;
  damo_model_predict(m, x, 256, &p);
  return p;
}

static void test_refused(void) {
  damo_model *m = mlp(3);
  damo_tensor *before = predictions(m);
  const damo_prune_options bad[] = {{.sparsity = 0.0f},
                                    {.sparsity = 1.0f},
                                    {.sparsity = NAN},
                                    {.sparsity = 0.5f, .ramp_begin = 0.6f, .ramp_end = 0.4f},
                                    {.sparsity = 0.5f, .ramp_end = 1.5f},
                                    {.sparsity = 0.5f, .frequency = -3},
                                    {.sparsity = 0.5f, .schedule = (damo_prune_schedule)7}};
  const char *why[] = {"sparsity", "sparsity", "sparsity", "ramp", "ramp", "frequency", "schedule"};
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    CHECK(damo_model_prune(m, x, y, &bad[k], &fit2, NULL) == DAMO_ERR_INVALID_ARG);
    CHECK_MSG(strstr(damo_last_error(), why[k]), "case %zu: %s", k, damo_last_error());
  }
  damo_fit_options hooked = fit2;
  hooked.param_hook = (damo_param_hook)(void (*)(void))abort;
  const damo_prune_options fine = {.sparsity = 0.5f};
  CHECK(damo_model_prune(m, x, y, &fine, &hooked, NULL) == DAMO_ERR_INVALID_ARG);
  const int64_t bad_shape[] = {N, FEATURES + 1};
  damo_tensor *wide = damo_tensor_new(DAMO_F32, 2, bad_shape);
  CHECK(damo_model_prune(m, wide, y, &fine, &fit2, NULL) == DAMO_ERR_SHAPE);
  damo_tensor *after = predictions(m);
  CHECK(before && after && !memcmp(before->data, after->data, (size_t)damo_tensor_numel(before) * sizeof(float)));
  damo_tensor_free(wide);
  damo_tensor_free(before);
  damo_tensor_free(after);
  damo_model_free(m);
}

int main(void) {
  make_data();
  RUN(test_global_and_layer_scope);
  RUN(test_oneshot_masks_the_smallest);
  RUN(test_refused);
  damo_tensor_free(x);
  damo_tensor_free(y);
  return test_summary("prune");
}
