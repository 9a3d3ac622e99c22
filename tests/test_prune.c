/* test_prune.c - magnitude pruning while fine-tuning (damo_model_prune): the sparsity asked
 * for is what the kernels end with (over all of them, or each), one-shot masks are the
 * smallest magnitudes of the start, biases are never touched, zeros survive a save (a kernel
 * at least half zeros stored as a bit mask and its nonzeros), a pruned model still
 * classifies, and bad options and corrupted sparse tensors are refused. */
#include "harness.h"
#include "ops/ops.h" /* damo_spdense_op, damo_spconv2d_op */

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

/* A kernel of n values as the file holds it: dense under its name, or sparse as the
 * documented "<name>.mask" (bit j of byte i: value 8 i + j is nonzero) and "<name>.values". */
static damo_tensor *file_kernel(const damo_tensor_dict *d, const char *name, int64_t n) {
  const damo_tensor *t = damo_tensor_dict_get(d, name);
  damo_tensor *out = damo_tensor_new(DAMO_F32, 1, &n);
  if (t) {
    memcpy(out->data, t->data, (size_t)n * sizeof(float));
    return out;
  }
  char key[128];
  snprintf(key, sizeof key, "%s.mask", name);
  const damo_tensor *mask = damo_tensor_dict_get(d, key);
  snprintf(key, sizeof key, "%s.values", name);
  const damo_tensor *values = damo_tensor_dict_get(d, key);
  if (!mask || !values) {
    damo_tensor_free(out);
    return NULL;
  }
  const uint8_t *bits = mask->data;
  for (int64_t j = 0, k = 0; j < n; j++) damo_tensor_f32(out)[j] = bits[j / 8] >> (j % 8) & 1 ? damo_tensor_f32(values)[k++] : 0;
  return out;
}

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
    const damo_tensor *a = damo_tensor_dict_get(start, kernels[k]);
    damo_tensor *b = a ? file_kernel(end, kernels[k], damo_tensor_numel(a)) : NULL;
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
    damo_tensor_free(b);
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

/* Rewrites dir/model.safetensors with edit applied; the load then fails naming needle. */
static void expect_corrupt(const char *dir, void (*edit)(damo_tensor_dict *), const char *needle) {
  char path[300];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  if (!d) return;
  char copy[320];
  snprintf(copy, sizeof copy, "%s.good", path);
  CHECK(rename(path, copy) == 0);
  edit(d);
  CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
  damo_tensor_dict_free(d);
  damo_model *m = NULL;
  CHECK(damo_model_load(dir, &m) != DAMO_OK && m == NULL);
  CHECK_MSG(strstr(damo_last_error(), needle) != NULL, "'%s' lacks '%s'", damo_last_error(), needle);
  CHECK(rename(copy, path) == 0);
}
static void swap_in(damo_tensor_dict *d, const char *name, damo_tensor *t) {
  for (int i = 0; i < d->count; i++)
    if (!strcmp(d->names[i], name)) damo_tensor_free(d->tensors[i]), d->tensors[i] = t;
}
static void short_mask(damo_tensor_dict *d) {
  const int64_t n = 3;
  swap_in(d, "dense_2.kernel.mask", damo_tensor_new(DAMO_U8, 1, &n));
}
static void extra_value(damo_tensor_dict *d) {
  const damo_tensor *v = damo_tensor_dict_get(d, "dense_2.kernel.values");
  const int64_t n = v->shape[0] + 1;
  damo_tensor *w = damo_tensor_new(DAMO_F32, 1, &n);
  memset(w->data, 0, (size_t)n * sizeof(float));
  swap_in(d, "dense_2.kernel.values", w);
}
static void nan_value(damo_tensor_dict *d) { damo_tensor_f32(damo_tensor_dict_get(d, "dense_2.kernel.values"))[1] = NAN; }
static void no_values(damo_tensor_dict *d) { /* renamed away */
  for (int i = 0; i < d->count; i++)
    if (!strcmp(d->names[i], "dense_2.kernel.values")) strcpy(d->names[i], "dense_2.kernel.valuez");
}

/* back, m saved and loaded, predicts through the sparse op (and m, never saved, through the
 * dense one) the same values to float rounding (another summation order); training back
 * drops the sparse forms: the steps run (no backward through them) and it predicts through
 * the dense op again. Frees back. */
static void check_sparse_inference(damo_model *m, damo_model *back, const char *sparse_op, const char *dense_op) {
  damo_profile_enable(1);
  damo_profile_reset();
  damo_tensor *p1 = predictions(m);
  CHECK(damo_profile_seconds(sparse_op, 0) == 0 && damo_profile_seconds(dense_op, 0) > 0);
  damo_profile_reset();
  damo_tensor *p2 = back ? predictions(back) : NULL;
  CHECK_MSG(damo_profile_seconds(sparse_op, 0) > 0, "no %s after the load", sparse_op);
  float worst = 0;
  for (int64_t i = 0; p1 && p2 && i < damo_tensor_numel(p1); i++)
    worst = fmaxf(worst, fabsf(damo_tensor_f32(p1)[i] - damo_tensor_f32(p2)[i]));
  CHECK_MSG(p1 && p2 && worst < 1e-5f, "predictions through %s differ by %g", sparse_op, worst);
  damo_tensor_free(p2);
  damo_fit_options one = fit2;
  one.epochs = 1;
  CHECK(back && damo_model_fit(back, x, y, &one, NULL) == DAMO_OK);
  damo_profile_reset();
  p2 = back ? predictions(back) : NULL;
  CHECK(p2 && damo_profile_seconds(sparse_op, 0) == 0 && damo_profile_seconds(dense_op, 0) > 0);
  damo_profile_enable(0);
  damo_tensor_free(p1), damo_tensor_free(p2);
  damo_model_free(back);
}

/* A 90%-sparse model saves its kernels as masks and nonzeros, a fraction of the dense file,
 * and loads back to the same predictions; corrupted sparse tensors are refused. */
static void test_sparse_storage(void) {
  /* a 1024 x 1024 middle kernel: large enough for the sparse product (a million weights) */
  const int64_t in[] = {FEATURES};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_dense(1024, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(1024, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(CLASSES, DAMO_ACT_SOFTMAX));
  damo_model_build(m, 4);
  damo_compile_options c = {.optimizer = damo_adam(1e-3f), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE,
                            .metrics = DAMO_METRIC_ACCURACY};
  damo_model_compile(m, &c);
  CHECK(damo_model_fit(m, x, y, &fit2, NULL) == DAMO_OK);
  char dir[] = "/tmp/damo_prune_XXXXXX", path[256];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(damo_model_save(m, dir) == DAMO_OK);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  CHECK(d && damo_tensor_dict_get(d, "dense_2.kernel") && !damo_tensor_dict_get(d, "dense_2.kernel.mask"));
  damo_tensor_dict_free(d);
  FILE *f = fopen(path, "rb");
  long dense_bytes = f && !fseek(f, 0, SEEK_END) ? ftell(f) : -1;
  if (f) fclose(f);
  const damo_prune_options o = {.sparsity = 0.9f, .schedule = DAMO_PRUNE_ONESHOT};
  CHECK(damo_model_prune(m, x, y, &o, &fit2, NULL) == DAMO_OK);
  CHECK(damo_model_save(m, dir) == DAMO_OK);
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  CHECK(d && !damo_tensor_dict_get(d, "dense_2.kernel") && damo_tensor_dict_get(d, "dense_2.kernel.mask") &&
        damo_tensor_dict_get(d, "dense_2.kernel.values") && damo_tensor_dict_get(d, "dense_2.bias"));
  damo_tensor_dict_free(d);
  f = fopen(path, "rb");
  long sparse_bytes = f && !fseek(f, 0, SEEK_END) ? ftell(f) : -1;
  if (f) fclose(f);
  /* 0.9 of the kernel values gone, a bit a value added; biases and the header stay */
  CHECK_MSG(sparse_bytes > 0 && sparse_bytes < 0.3 * (double)dense_bytes, "%ld vs %ld bytes", sparse_bytes, dense_bytes);
  damo_model *back = NULL;
  CHECK_MSG(damo_model_load(dir, &back) == DAMO_OK, "%s", damo_last_error());
  /* the loaded model's mostly-zero dense kernels multiply through the sparse product */
  check_sparse_inference(m, back, "spdense", "dense");
  expect_corrupt(dir, short_mask, "'dense_2.kernel.mask' must be u8 (131072)");
  expect_corrupt(dir, extra_value, "'dense_2.kernel.values' must be f32");
  expect_corrupt(dir, nan_value, "'dense_2.kernel.values' holds NaN");
  expect_corrupt(dir, no_values, "missing tensor 'dense_2.kernel.values'");
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  damo_model_free(m);
}

/* A pruned CNN: loaded back, its mostly-zero conv2d kernels convolve directly from their
 * CSR (the spconv2d op: a stride-1 and a stride-2 convolution) and predict what the dense
 * convolutions did, to float rounding; training goes back to the dense op. */
static void test_sparse_conv_model(void) {
  const int64_t in[] = {FEATURES}, image[] = {4, 4, 3};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_dense(48, DAMO_ACT_RELU));
  damo_model_add(m, damo_reshape_layer(3, image));
  damo_model_add(m, damo_conv2d_layer(24, 3, 3, 1, 1, DAMO_ACT_RELU));
  damo_model_add(m, damo_conv2d_layer(20, 3, 2, 2, 1, DAMO_ACT_TANH));
  damo_model_add(m, damo_flatten());
  damo_model_add(m, damo_dense(CLASSES, DAMO_ACT_SOFTMAX));
  damo_model_build(m, 5);
  damo_compile_options c = {.optimizer = damo_adam(5e-3f), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE,
                            .metrics = DAMO_METRIC_ACCURACY};
  damo_model_compile(m, &c);
  const damo_prune_options o = {.sparsity = 0.85f, .schedule = DAMO_PRUNE_ONESHOT, .scope = DAMO_PRUNE_LAYER};
  CHECK(damo_model_prune(m, x, y, &o, &fit2, NULL) == DAMO_OK);
  char dir[] = "/tmp/damo_prune_conv_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  CHECK(damo_model_save(m, dir) == DAMO_OK);
  damo_model *back = NULL;
  CHECK_MSG(damo_model_load(dir, &back) == DAMO_OK, "%s", damo_last_error());
  check_sparse_inference(m, back, "spconv2d", "conv2d");
  /* explaining a loaded pruned model differentiates through it: its dense ops come back */
  CHECK(damo_model_load(dir, &back) == DAMO_OK);
  damo_explainer *e1 = NULL, *e2 = NULL;
  CHECK(damo_explainer_new_at(m, 2, NULL, &e1) == DAMO_OK);
  CHECK_MSG(back && damo_explainer_new_at(back, 2, NULL, &e2) == DAMO_OK, "%s", damo_last_error());
  const int32_t targets[2] = {0, 2};
  float g1[2 * FEATURES] = {0}, g2[2 * FEATURES] = {0};
  CHECK(e1 && damo_explainer_run(e1, damo_tensor_f32(x), 2, targets, NULL, g1) == DAMO_OK);
  CHECK_MSG(e2 && damo_explainer_run(e2, damo_tensor_f32(x), 2, targets, NULL, g2) == DAMO_OK, "%s", damo_last_error());
  float worst = 0, size = 0;
  for (int i = 0; i < 2 * FEATURES; i++) worst = fmaxf(worst, fabsf(g1[i] - g2[i])), size = fmaxf(size, fabsf(g1[i]));
  CHECK_MSG(size > 0 && worst < 1e-5f, "gradients %g apart (largest %g)", worst, size);
  damo_explainer_free(e1), damo_explainer_free(e2);
  damo_model_free(back);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  damo_model_free(m);
}

/* A sparse op on a path that wants gradients: the graph compiles and runs forward (a loss
 * may be only evaluated), but backward refuses and names it (its forward has no backward; a
 * silent zero gradient was what an explainer got before). */
static void test_sparse_ops_refuse_gradients(void) {
  const float w[12] = {0, 1, 0, 0, 0, 2, 0, 0, 3, 0, 0, 0}; /* (K 4 x N 3), a (2 x 2 x 1 -> 3) conv kernel too */
  damo_csr *wt = NULL;
  CHECK(damo_csr_from_dense_transposed(w, 4, 3, &wt) == DAMO_OK);
  for (int conv = 0; conv < 2 && wt; conv++) {
    damo_graph *g = damo_graph_new(1);
    const int64_t flat[2] = {2, 4}, image[4] = {2, 2, 2, 1};
    damo_node *x = damo_input(g, "x", DAMO_F32, conv ? 4 : 2, conv ? image : flat);
    damo_node_keep_grad(x);
    damo_node *y = conv ? damo_spconv2d_op(g, x, wt, 2, 2, NULL, DAMO_ACT_NONE, 1, 1, 0, 0, 0, 0)
                        : damo_spdense_op(g, x, wt, NULL, DAMO_ACT_NONE);
    damo_node *loss = damo_sum(g, y, DAMO_ALL_AXES, 0);
    const float in[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(damo_graph_compile(g, loss, 1, &y) == DAMO_OK && damo_graph_bind(g, x, in) == DAMO_OK &&
          damo_graph_forward(g, 0) == DAMO_OK);
    /* y = x W: row 0 (1 2 3 4) -> (0, 1 * 1, 2 * 2 + 3 * 3); the conv's one pixel reads the same four values */
    const float *out = damo_node_data(y);
    CHECK_MSG(out && out[0] == 0 && out[1] == 1 && out[2] == 13, "%g %g %g", out[0], out[1], out[2]);
    CHECK_MSG(damo_graph_backward(g) == DAMO_ERR_UNSUPPORTED && strstr(damo_last_error(), conv ? "spconv2d" : "spdense") &&
                  strstr(damo_last_error(), "inference only"),
              "%s", damo_last_error());
    damo_graph_free(g);
  }
  damo_csr_free(wt);
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
  RUN(test_sparse_storage);
  RUN(test_sparse_conv_model);
  RUN(test_sparse_ops_refuse_gradients);
  damo_tensor_free(x);
  damo_tensor_free(y);
  return test_summary("prune");
}
