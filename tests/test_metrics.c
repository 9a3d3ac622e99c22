/* test_metrics.c - precision, recall, F1, ROC AUC and the confusion matrix on hand-worked
 * examples; the same figures as fit's metrics (history, progress line, CSV, config,
 * early stopping). */
#include "harness.h"

#include <damo.h>
#include <stdlib.h>
#include <unistd.h>

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

/* ------------------------------------------------------------------ metrics in fit */

#define ALL_BINARY_METRICS (DAMO_METRIC_ACCURACY | DAMO_METRIC_PRECISION | DAMO_METRIC_RECALL | DAMO_METRIC_F1 | DAMO_METRIC_AUC)

/* n rows of 4 features; label 1 when a noisy linear score is positive (overlapping classes,
 * so no metric is trivially 1). binary_targets: f32 (n, 1) 0/1, else i32 (n). */
static void synthetic_binary(int64_t n, uint32_t seed, int binary_targets, damo_tensor **x, damo_tensor **y) {
  int64_t xs[2] = {n, 4}, ys[2] = {n, 1};
  *x = damo_tensor_new(DAMO_F32, 2, xs);
  *y = binary_targets ? damo_tensor_new(DAMO_F32, 2, ys) : damo_tensor_new(DAMO_I32, 1, ys);
  uint32_t state = seed;
  for (int64_t i = 0; i < n; i++) {
    float *row = damo_tensor_f32(*x) + i * 4, noise;
    for (int k = 0; k < 5; k++) {
      state = state * 1664525u + 1013904223u;
      float u = (float)(state >> 8) / 16777216.0f * 2.0f - 1.0f;
      if (k < 4) row[k] = u;
      else noise = u;
    }
    int label = row[0] + 0.5f * row[1] - 0.3f * row[2] + 0.6f * noise > 0;
    if (binary_targets) damo_tensor_f32(*y)[i] = (float)label;
    else damo_tensor_i32(*y)[i] = label;
  }
}

static damo_model *binary_model(int outputs, int metrics) {
  const int64_t in[] = {4};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_dense(8, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(outputs, outputs == 1 ? DAMO_ACT_SIGMOID : DAMO_ACT_NONE));
  damo_model_build(m, 3);
  damo_compile_options c = {.optimizer = damo_adam(1e-2f),
                            .loss = outputs == 1 ? DAMO_LOSS_BINARY_CE : DAMO_LOSS_SPARSE_CATEGORICAL_CE,
                            .metrics = metrics};
  CHECK_MSG(damo_model_compile(m, &c) == DAMO_OK, "%s", damo_last_error());
  return m;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  char *text = calloc(1, 1 << 16);
  size_t n = text ? fread(text, 1, (1 << 16) - 1, f) : 0;
  (void)n;
  fclose(f);
  return text;
}

/* The history's val_ figures are damo_classification_metrics on predict's output for the
 * validation rows, exactly; for a sigmoid output and for two softmax classes. */
static void test_fit_validation_metrics_are_exact(void) {
  for (int outputs = 1; outputs <= 2; outputs++) {
    damo_tensor *x, *y, *xv, *yv;
    synthetic_binary(512, 11, outputs == 1, &x, &y);
    synthetic_binary(200, 12, outputs == 1, &xv, &yv);
    damo_model *m = binary_model(outputs, ALL_BINARY_METRICS);
    char log[] = "/tmp/damo_fit_metrics_XXXXXX", csv[] = "/tmp/damo_fit_metrics_csv_XXXXXX";
    int fd = mkstemp(log), fd_csv = mkstemp(csv);
    close(fd_csv);
    unlink(csv); /* a new file gets this run's header */
    FILE *out = fdopen(fd, "w");
    damo_fit_options f = {.epochs = 3, .batch_size = 32, .seed = 5, .verbose = 2, .out = out, .x_val = xv, .y_val = yv,
                          .history_csv = csv};
    damo_history *h = NULL;
    CHECK_MSG(damo_model_fit(m, x, y, &f, &h) == DAMO_OK, "%s", damo_last_error());
    fclose(out);
    damo_tensor *p = NULL;
    CHECK(damo_model_predict(m, xv, 32, &p) == DAMO_OK);
    damo_metrics exact = {0};
    CHECK(p && damo_classification_metrics(p, yv, &exact) == DAMO_OK);
    CHECK_MSG(exact.auc > 0.75 && exact.auc < 1 && exact.f1 > 0.5 && exact.f1 < 1, "auc %.4f f1 %.4f", exact.auc, exact.f1);
    CHECK(damo_history_get(h, "val_precision", 2) == (float)exact.precision);
    CHECK(damo_history_get(h, "val_recall", 2) == (float)exact.recall);
    CHECK(damo_history_get(h, "val_f1", 2) == (float)exact.f1);
    CHECK_MSG(damo_history_get(h, "val_auc", 2) == (float)exact.auc, "history %.8f exact %.8f",
              damo_history_get(h, "val_auc", 2), exact.auc);
    CHECK_NEAR(damo_history_get(h, "val_accuracy", 2), exact.accuracy, 1e-6);
    /* the train side: counted per batch, in range; AUC approximated */
    for (int e = 0; e < 3; e++) {
      float tp = damo_history_get(h, "precision", e), tr = damo_history_get(h, "recall", e);
      float tf = damo_history_get(h, "f1", e), ta = damo_history_get(h, "auc", e);
      CHECK_MSG(tp >= 0 && tp <= 1 && tr >= 0 && tr <= 1 && ta > 0.5f && ta <= 1, "epoch %d: %g %g %g", e, tp, tr, ta);
      CHECK_NEAR(tf, tp + tr > 0 ? 2 * tp * tr / (tp + tr) : 0, 1e-5);
    }
    /* the per-epoch line shows them after accuracy, validation ones after val_accuracy */
    char *text = read_text(log);
    CHECK(text && strstr(text, "Epoch 3/3"));
    const char *acc = text ? strstr(text, " - accuracy: ") : NULL, *prec = text ? strstr(text, " - precision: ") : NULL;
    const char *vauc = text ? strstr(text, " - val_auc: ") : NULL, *vacc = text ? strstr(text, " - val_accuracy: ") : NULL;
    CHECK_MSG(acc && prec && acc < prec && strstr(text, " - recall: ") && strstr(text, " - f1: ") &&
                  strstr(text, " - auc: ") && vacc && vauc && vacc < vauc && strstr(text, " - val_precision: ") &&
                  strstr(text, " - val_recall: ") && strstr(text, " - val_f1: "),
              "%s", text ? text : "(no log)");
    free(text);
    text = read_text(csv);
    const char *header = "epoch,loss,accuracy,precision,recall,f1,auc,val_loss,val_accuracy,val_precision,val_recall,"
                         "val_f1,val_auc,lr\n";
    CHECK_MSG(text && !strncmp(text, header, strlen(header)), "%s", text ? text : "(no CSV)");
    free(text);
    damo_history_free(h);
    /* appending a run with other columns to that CSV is refused before training */
    damo_model *other = binary_model(outputs, DAMO_METRIC_ACCURACY);
    f.out = NULL;
    f.verbose = 0;
    CHECK(damo_model_fit(other, x, y, &f, &h) == DAMO_ERR_INVALID_ARG);
    CHECK_MSG(strstr(damo_last_error(), "history CSV has the columns"), "%s", damo_last_error());
    damo_history_free(h);
    damo_model_free(other);
    unlink(csv);
    unlink(log);
    damo_tensor_free(p);
    damo_model_free(m);
    damo_tensor_free(x);
    damo_tensor_free(y);
    damo_tensor_free(xv);
    damo_tensor_free(yv);
  }
}

/* One feature, kernel 1, no bias: the logit is x, so every figure can be counted by hand.
 * One step of a tiny learning rate: the training counts come from these weights and the
 * validation predictions keep their signs and order. */
static void test_fit_metrics_hand_counts(void) {
  float xd[8] = {3, 2, 1, 0.5f, -0.5f, -1, -2, -3};
  float yd[8] = {1, 1, 0, 0, 1, 1, 1, 0};
  int64_t xs[2] = {8, 1};
  damo_tensor *x = damo_tensor_wrap(DAMO_F32, 2, xs, xd), *y = damo_tensor_wrap(DAMO_F32, 2, xs, yd);
  const int64_t in[] = {1};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_dense_ex(1, DAMO_ACT_SIGMOID, DAMO_INIT_ONES, 0));
  damo_compile_options c = {.optimizer = damo_sgd(1e-6f, 0, 0),
                            .loss = DAMO_LOSS_BINARY_CE, .metrics = ALL_BINARY_METRICS};
  CHECK(damo_model_compile(m, &c) == DAMO_OK);
  damo_fit_options f = {.epochs = 1, .batch_size = 8, .verbose = 0, .x_val = x, .y_val = y};
  damo_history *h = NULL;
  CHECK_MSG(damo_model_fit(m, x, y, &f, &h) == DAMO_OK, "%s", damo_last_error());
  /* predicted positive: 3, 2, 1, 0.5 -> tp 2 (3, 2), fp 2 (1, 0.5); fn 3 (-0.5, -1, -2) */
  const double precision = 0.5, recall = 0.4, f1 = 2 * 0.5 * 0.4 / 0.9;
  /* positives {3, 2, -0.5, -1, -2} vs negatives {1, 0.5, -3}: 3 + 3 + 1 + 1 + 1 of 15 pairs */
  const double auc = 9.0 / 15.0;
  const char *side[2] = {"", "val_"};
  for (int v = 0; v < 2; v++) {
    char name[32];
    snprintf(name, sizeof name, "%sprecision", side[v]);
    CHECK_NEAR(damo_history_get(h, name, 0), precision, 1e-6);
    snprintf(name, sizeof name, "%srecall", side[v]);
    CHECK_NEAR(damo_history_get(h, name, 0), recall, 1e-6);
    snprintf(name, sizeof name, "%sf1", side[v]);
    CHECK_NEAR(damo_history_get(h, name, 0), f1, 1e-6);
    snprintf(name, sizeof name, "%sauc", side[v]); /* the 200-bin histogram separates these scores */
    CHECK_NEAR(damo_history_get(h, name, 0), auc, 1e-6);
  }
  CHECK(isnan(damo_history_get(h, "val_f2", 0)));
  damo_history_free(h);
  /* without validation data: no val_ columns; the CSV lists only what the run records */
  char csv[] = "/tmp/damo_fit_metrics_csv_XXXXXX";
  int fd = mkstemp(csv);
  close(fd);
  c.metrics = DAMO_METRIC_ACCURACY | DAMO_METRIC_F1;
  CHECK(damo_model_compile(m, &c) == DAMO_OK);
  damo_fit_options g = {.epochs = 1, .batch_size = 8, .verbose = 0, .history_csv = csv};
  CHECK(damo_model_fit(m, x, y, &g, &h) == DAMO_OK);
  CHECK(isnan(damo_history_get(h, "val_f1", 0)) && isnan(damo_history_get(h, "precision", 0)));
  CHECK(!isnan(damo_history_get(h, "f1", 0)));
  char *text = read_text(csv);
  const char *header = "epoch,loss,accuracy,f1,val_loss,val_accuracy,lr\n";
  CHECK_MSG(text && !strncmp(text, header, strlen(header)), "%s", text ? text : "");
  free(text);
  unlink(csv);
  damo_history_free(h);
  damo_model_free(m);
  damo_tensor_free(x);
  damo_tensor_free(y);
}

static const char *binary_config =
    "{\"input_shape\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 1, \"activation\": \"sigmoid\"}],"
    " \"loss\": \"binary_crossentropy\", \"optimizer\": {\"type\": \"adam\", \"learning_rate\": 0.01},"
    " \"metrics\": [\"accuracy\", \"precision\", \"recall\", \"f1\", \"auc\"]}";

static void test_config_round_trip(void) {
  damo_model *m = NULL, *loaded = NULL;
  CHECK_MSG(damo_model_from_config_json(binary_config, "binary.json", &m) == DAMO_OK, "%s", damo_last_error());
  damo_compile_options c;
  CHECK(m && damo_model_config_compile_options(m, &c) == DAMO_OK);
  CHECK(c.metrics == ALL_BINARY_METRICS);
  CHECK(damo_model_compile(m, &c) == DAMO_OK);
  char dir[] = "/tmp/damo_metrics_model_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  CHECK_MSG(damo_model_save(m, dir) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(damo_model_load(dir, &loaded) == DAMO_OK, "%s", damo_last_error());
  damo_compile_options back = {0};
  CHECK(loaded && damo_model_config_compile_options(loaded, &back) == DAMO_OK);
  CHECK_MSG(back.metrics == ALL_BINARY_METRICS, "metrics %d", back.metrics);
  char path[256];
  snprintf(path, sizeof path, "%s/config.json", dir);
  char *text = read_text(path);
  CHECK_MSG(text && strstr(text, "\"precision\"") && strstr(text, "\"auc\""), "%s", text ? text : "");
  free(text);
  unlink(path);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  unlink(path);
  rmdir(dir);
  damo_model_free(loaded);
  damo_model_free(m);
}

static void test_refused_for_non_binary_tasks(void) {
  /* a 10-class config asking for f1 */
  const char *ten =
      "{\"input_shape\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 10, \"activation\": \"softmax\"}],"
      " \"loss\": \"sparse_categorical_crossentropy\", \"metrics\": [\"accuracy\", \"f1\"]}";
  damo_model *m = NULL;
  CHECK(damo_model_from_config_json(ten, "ten.json", &m) == DAMO_ERR_FORMAT && m == NULL);
  const char *e = damo_last_error();
  CHECK_MSG(strstr(e, "ten.json") && strstr(e, "'f1'") && strstr(e, "binary") && strstr(e, "10 outputs"), "%s", e);
  const char *unknown = "{\"input_shape\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 1}],"
                        " \"loss\": \"mse\", \"metrics\": [\"f2\"]}";
  CHECK(damo_model_from_config_json(unknown, "u.json", &m) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(damo_last_error(), "'f2'") && strstr(damo_last_error(), "auc"), "%s", damo_last_error());
  /* the C API: compile takes the bits, fit refuses them before training */
  const int64_t in[] = {4};
  m = damo_sequential_new(1, in);
  damo_model_add(m, damo_dense(10, DAMO_ACT_NONE));
  damo_compile_options c = {.optimizer = damo_adam(1e-3f),
                            .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = DAMO_METRIC_ACCURACY | DAMO_METRIC_F1};
  CHECK(damo_model_compile(m, &c) == DAMO_OK);
  damo_tensor *x, *y;
  synthetic_binary(64, 1, 0, &x, &y);
  damo_fit_options f = {.epochs = 1, .verbose = 0};
  damo_history *h = NULL;
  CHECK(damo_model_fit(m, x, y, &f, &h) == DAMO_ERR_INVALID_ARG && h == NULL);
  e = damo_last_error();
  CHECK_MSG(strstr(e, "fit") && strstr(e, "'f1'") && strstr(e, "sparse_categorical_crossentropy with 10"), "%s", e);
  damo_model_free(m);
  damo_tensor_free(x);
  damo_tensor_free(y);
}

static void test_early_stopping_on_val_auc(void) {
  damo_tensor *x, *y;
  synthetic_binary(400, 21, 1, &x, &y);
  damo_model *m = binary_model(1, DAMO_METRIC_ACCURACY | DAMO_METRIC_AUC);
  char log[] = "/tmp/damo_fit_metrics_XXXXXX";
  FILE *out = fdopen(mkstemp(log), "w");
  /* min_delta so large that only the first epoch counts as an improvement (higher is better) */
  damo_fit_options f = {.epochs = 10, .batch_size = 32, .seed = 2, .verbose = 2, .out = out, .validation_split = 0.25f,
                        .patience = 2, .monitor = "val_auc", .min_delta = 100.0f, .restore_best_weights = 1};
  damo_history *h = NULL;
  CHECK_MSG(damo_model_fit(m, x, y, &f, &h) == DAMO_OK, "%s", damo_last_error());
  fclose(out);
  CHECK_MSG(damo_history_epochs(h) == 3, "ran %d epochs", damo_history_epochs(h));
  float first_auc = damo_history_get(h, "val_auc", 0);
  CHECK_MSG(first_auc > 0.5f && first_auc <= 1, "val_auc %g", first_auc);
  CHECK(isnan(damo_history_get(h, "val_f1", 0))); /* not compiled */
  char *text = read_text(log);
  CHECK_MSG(text && strstr(text, "Early stopping at epoch 3: val_auc") && strstr(text, "Restored the weights of epoch 1"),
            "%s", text ? text : "");
  free(text);
  unlink(log);
  damo_history_free(h);
  /* monitoring a metric the model was not compiled with, or a val_ one without validation data */
  f.out = NULL;
  f.verbose = 0;
  f.monitor = "val_f1";
  CHECK(damo_model_fit(m, x, y, &f, &h) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(strstr(damo_last_error(), "'val_f1'") && strstr(damo_last_error(), "not compiled"), "%s", damo_last_error());
  damo_history_free(h);
  f.monitor = "val_auc";
  f.validation_split = 0;
  CHECK(damo_model_fit(m, x, y, &f, &h) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(strstr(damo_last_error(), "no validation data"), "%s", damo_last_error());
  damo_history_free(h);
  damo_model_free(m);
  damo_tensor_free(x);
  damo_tensor_free(y);
}

int main(void) {
  RUN(test_binary_sigmoid_outputs);
  RUN(test_ties_and_softmax_pairs);
  RUN(test_multiclass_confusion);
  RUN(test_fit_validation_metrics_are_exact);
  RUN(test_fit_metrics_hand_counts);
  RUN(test_config_round_trip);
  RUN(test_refused_for_non_binary_tasks);
  RUN(test_early_stopping_on_val_auc);
  return test_summary("metrics");
}
