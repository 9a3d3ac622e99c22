/* commands.c - the damo subcommands: train, evaluate, predict, summary, export. Each one
 * parses its options, calls the public API and reports failures with the library's
 * message (which names the file, offset or layer). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

damo_status cli_load_data(const char *spec, const char *split, const char *label_column, damo_tensor **x,
                          damo_tensor **y) {
  *x = *y = NULL;
  const char *comma = strchr(spec, ',');
  if (comma) { /* x.npy,y.npy */
    char xpath[4096];
    snprintf(xpath, sizeof xpath, "%.*s", (int)(comma - spec), spec);
    damo_status st = damo_npy_load(xpath, x);
    if (st == DAMO_OK) st = damo_npy_load(comma + 1, y);
    if (st != DAMO_OK) {
      damo_tensor_free(*x);
      *x = NULL;
    }
    return st;
  }
  if (ends_with(spec, ".csv")) {
    damo_csv_options o = {1, label_column ? label_column : "label", ','};
    return damo_csv_load(spec, &o, x, y);
  }
  return damo_dataset_load(spec, split, x, y);
}

/* Training curves from the history as a PNG; 1 when written. */
static int write_history_png(const damo_history *h, const char *path, const char *title) {
  int n = damo_history_epochs(h);
  if (n < 1) return 0;
  float *v = malloc((size_t)n * 4 * sizeof *v);
  if (!v) return 0;
  static const char *const series[] = {"loss", "val_loss", "accuracy", "val_accuracy"};
  int any[4] = {0};
  for (int k = 0; k < 4; k++)
    for (int e = 0; e < n; e++) {
      v[k * n + e] = damo_history_get(h, series[k], e);
      any[k] |= v[k * n + e] == v[k * n + e];
    }
  damo_status st = damo_plot_history_png(path, title, n, v, any[1] ? v + n : NULL, any[2] ? v + 2 * n : NULL,
                                         any[3] ? v + 3 * n : NULL);
  free(v);
  if (st != DAMO_OK) cli_fail("train: writing the training curves");
  return st == DAMO_OK;
}

/* The trained model, its text preparation and its training curves as one directory save:
 * out changes from the previous model to this one, whole. 1 when saved. */
static int save_trained(damo_model *m, const damo_history *h, const damo_text_dataset *text, int max_len,
                        const char *out, const char *config) {
  damo_dir_save *tx;
  if (damo_dir_save_begin(out, &tx) != DAMO_OK) return !cli_fail("train: saving");
  const char *folder = damo_dir_save_folder(tx);
  if (damo_model_save(m, folder) != DAMO_OK) {
    damo_dir_save_abort(tx);
    return !cli_fail("train: saving");
  }
  if (text && !cli_text_save(folder, text, max_len)) {
    damo_dir_save_abort(tx);
    return 0;
  }
  char png[4096];
  snprintf(png, sizeof png, "%s/history.png", folder);
  int curves = write_history_png(h, png, strrchr(config, '/') ? strrchr(config, '/') + 1 : config);
  if (damo_dir_save_commit(tx) != DAMO_OK) return !cli_fail("train: saving");
  printf("saved model to %s/ (config.json, model.safetensors, history.csv%s%s)\n", out, text ? ", vocab.txt, text.json" : "",
         curves ? ", history.png" : "");
  return 1;
}

int cli_train(int argc, char **argv) {
  char kind[16] = "sequential"; /* the config's model_type, read once here */
  const char *config_path = cli_opt(argc, argv, "--config");
  if (config_path && damo_config_model_type_file(config_path, kind, sizeof kind) != DAMO_OK) return cli_fail("train");
  if (!strcmp(kind, "gpt2")) return cli_train_gpt2(argc, argv);
  if (!strcmp(kind, "bert")) return cli_train_bert(argc, argv);
  static const char *const with_value[] = {"--config", "--data", "--epochs", "--batch-size", "--lr", "--seed", "--out",
                                           "--validation-split", "--patience", "--verbose", "--history",
                                           "--label-column", NULL};
  static const char *const flags[] = {"--no-augment", NULL};
  if (!cli_check_options(argc, argv, with_value, flags)) return 2;
  const char *config = cli_opt(argc, argv, "--config"), *data = cli_opt(argc, argv, "--data");
  const char *out = cli_opt(argc, argv, "--out");
  if (!config || !data) {
    fprintf(stderr, "damo train: --config FILE and --data SPEC are required\n");
    return 2;
  }
  if (!out) out = "damo_model";
  printf("%s\n", damo_info_string());

  damo_model *m;
  damo_dir_lock *lock = NULL;
  if (damo_model_from_config_file(config, &m) != DAMO_OK) return cli_fail("train");
  damo_compile_options copt;
  if (damo_model_config_compile_options(m, &copt) != DAMO_OK)
    copt = (damo_compile_options){damo_adam(1e-3f), DAMO_LOSS_SPARSE_CATEGORICAL_CE, DAMO_METRIC_ACCURACY};
  damo_fit_options fo = {.epochs = 10, .batch_size = 32, .seed = 42, .verbose = -1, .shuffle = -1};
  /* a bad "fit" value is an error naming the file and key, never replaced by the defaults */
  if (damo_model_config_fit_options(m, &fo) != DAMO_OK) {
    damo_model_free(m);
    return cli_fail("train");
  }
  const char *v;
  long n;
  double d;
  int rc = 2;
  if ((v = cli_opt(argc, argv, "--lr"))) {
    if (!cli_parse_double(v, "--lr", 0, 1, HUGE_VAL, &d)) goto done;
    copt.optimizer.lr = (float)d;
  }
  if ((v = cli_opt(argc, argv, "--epochs"))) {
    if (!cli_parse_long(v, "--epochs", 1, 100000, &n)) goto done;
    fo.epochs = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--batch-size"))) {
    if (!cli_parse_long(v, "--batch-size", 1, 1 << 20, &n)) goto done;
    fo.batch_size = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--seed"))) {
    if (!cli_parse_long(v, "--seed", 0, 0x7fffffffL, &n)) goto done;
    fo.seed = (uint64_t)n;
  }
  if ((v = cli_opt(argc, argv, "--validation-split"))) {
    if (!cli_parse_double(v, "--validation-split", 0, 0, 0.99, &d)) goto done;
    fo.validation_split = (float)d;
  }
  if ((v = cli_opt(argc, argv, "--patience"))) {
    if (!cli_parse_long(v, "--patience", 0, 100000, &n)) goto done;
    fo.patience = (int)n;
    fo.restore_best_weights = 1;
  }
  if ((v = cli_opt(argc, argv, "--verbose"))) {
    if (!cli_parse_long(v, "--verbose", 0, 2, &n)) goto done;
    fo.verbose = (int)n;
  }
  if (cli_flag(argc, argv, "--no-augment")) fo.augment = NULL;
  const char *const *names;
  int n_names = damo_dataset_class_names(data, &names);
  if (n_names > 0 && damo_model_class_names(m, NULL) == 0 && damo_model_set_class_names(m, n_names, names) != DAMO_OK) {
    rc = cli_fail("train");
    goto done;
  }
  rc = 1;
  /* Held until the end: a second run into the same directory is refused, and a directory
   * that cannot be written fails now rather than after training. */
  if (damo_dir_lock_acquire(out, &lock) != DAMO_OK) {
    rc = cli_fail("train: the output directory");
    goto done;
  }
  char history[4096];
  snprintf(history, sizeof history, "%s/history.csv", out);
  fo.history_csv = cli_opt(argc, argv, "--history") ? cli_opt(argc, argv, "--history") : history;

  if (damo_model_build(m, fo.seed) != DAMO_OK || damo_model_compile(m, &copt) != DAMO_OK) {
    rc = cli_fail("train");
    goto done;
  }
  if (fo.verbose != 0) damo_model_summary(m, stdout);

  damo_tensor *x = NULL, *y = NULL, *xt = NULL, *yt = NULL;
  const char *label_col = cli_opt(argc, argv, "--label-column");
  damo_text_dataset *text = NULL;
  if (cli_is_text_data(data)) {
    if (cli_text_load(data, m, config, &text) != DAMO_OK) {
      rc = cli_fail("train: loading the training data");
      goto done;
    }
    cli_text_describe(data, text);
    x = damo_tensor_clone(text->x[DAMO_SPLIT_TRAIN]), y = damo_tensor_clone(text->y[DAMO_SPLIT_TRAIN]);
    xt = damo_tensor_clone(text->x[DAMO_SPLIT_TEST]), yt = damo_tensor_clone(text->y[DAMO_SPLIT_TEST]);
    if (!fo.validation_split) fo.x_val = text->x[DAMO_SPLIT_VAL], fo.y_val = text->y[DAMO_SPLIT_VAL];
    if (damo_model_class_names(m, NULL) == 0)
      damo_model_set_class_names(m, text->n_classes, (const char *const *)text->class_names);
  } else if (cli_load_data(data, "train", label_col, &x, &y) != DAMO_OK) {
    rc = cli_fail("train: loading the training data");
    goto done;
  }
  /* fit takes a validation split's rows off the end, as Keras does: say what trains. */
  long long n_val = fo.x_val ? (long long)fo.x_val->shape[0] : (long long)((double)x->shape[0] * fo.validation_split);
  long long n_train = fo.x_val ? (long long)x->shape[0] : (long long)x->shape[0] - n_val;
  char val_note[64] = "";
  if (n_val > 0) snprintf(val_note, sizeof val_note, " (%lld more for validation)", n_val);
  printf("training on %lld examples%s from %s, %d epochs, batch %d, lr %g, seed %llu%s\n", n_train, val_note, data,
         fo.epochs, fo.batch_size, (double)copt.optimizer.lr, (unsigned long long)fo.seed,
         fo.augment ? ", augmented on the fly" : "");
  if (fo.patience > 0 && n_val == 0)
    fprintf(stderr, "damo train: warning: --patience %d watches the validation loss, but there is no validation data "
            "(give --validation-split); early stopping will watch the training loss\n", fo.patience);
  fflush(stdout);
  damo_history *h = NULL;
  if (damo_model_fit(m, x, y, &fo, &h) != DAMO_OK) {
    rc = cli_fail("train");
  } else if (!save_trained(m, h, text, (int)x->shape[1], out, config)) {
    rc = 1;
  } else {
    rc = 0;
    /* A built-in data set has a held-out test split: report it (never used for training). */
    if (!xt && !strchr(data, ',') && !ends_with(data, ".csv")) cli_load_data(data, "test", label_col, &xt, &yt);
    if (xt) {
      float loss, acc;
      if (damo_model_evaluate(m, xt, yt, 256, &loss, &acc) != DAMO_OK) rc = cli_fail("train: evaluating");
      else printf("test_loss: %.4f - test_accuracy: %.4f (%lld test examples)\n", loss, acc, (long long)xt->shape[0]);
      if (rc == 0 && text) rc = cli_classification_report(m, xt, yt, NULL);
    }
  }
  damo_history_free(h);
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_tensor_free(xt);
  damo_tensor_free(yt);
  damo_text_dataset_free(text);
done:
  damo_dir_lock_release(lock);
  damo_model_free(m);
  return rc;
}

/* Per-class accuracy (and precision/recall/F1/ROC AUC for two classes) from predictions. */
int cli_classification_report(damo_model *m, const damo_tensor *x, const damo_tensor *y, const char *png) {
  damo_tensor *p = NULL;
  if (damo_model_predict(m, x, 256, &p) != DAMO_OK) return cli_fail("evaluate");
  const char *const *names;
  int n_names = damo_model_class_names(m, &names);
  int rc = cli_report_probabilities(p, y, names, n_names, png);
  damo_tensor_free(p);
  return rc;
}

int cli_report_probabilities(const damo_tensor *p, const damo_tensor *y, const char *const *names, int n_names,
                             const char *png) {
  int64_t C = damo_tensor_numel(p) / p->shape[0], classes = C == 1 ? 2 : C;
  int64_t *confusion = calloc((size_t)(classes * classes), sizeof *confusion);
  damo_metrics mt = {.confusion = confusion, .n_classes = (int)classes};
  int rc = 0;
  if (!confusion || damo_classification_metrics(p, y, &mt) != DAMO_OK) {
    rc = confusion ? cli_fail("evaluate") : 1;
  } else {
    if (classes == 2)
      printf("precision: %.4f - recall: %.4f - f1: %.4f - roc_auc: %.4f (class 1 positive)\n", mt.precision, mt.recall,
             mt.f1, mt.auc);
    printf("per-class accuracy:\n");
    for (int64_t c = 0; c < classes; c++) {
      int64_t total = 0;
      for (int64_t k = 0; k < classes; k++) total += confusion[c * classes + k];
      printf("  %2lld %-14s %.4f (%lld)\n", (long long)c, c < n_names ? names[c] : "",
             total ? (double)confusion[c * classes + c] / (double)total : 0.0, (long long)total);
    }
    if (png && classes <= 200) {
      if (damo_plot_confusion_png(png, (int)classes, confusion, n_names == classes ? names : NULL) != DAMO_OK)
        rc = cli_fail("evaluate: writing the confusion matrix");
      else printf("confusion matrix written to %s\n", png);
    }
  }
  free(confusion);
  return rc;
}

int cli_evaluate(int argc, char **argv) {
  static const char *const with_value[] = {"--model", "--data", "--batch-size", "--split", "--label-column",
                                           "--confusion-png", NULL};
  if (!cli_check_options(argc, argv, with_value, NULL)) return 2;
  const char *dir = cli_opt(argc, argv, "--model"), *data = cli_opt(argc, argv, "--data");
  char png[4096];
  if (cli_opt(argc, argv, "--confusion-png")) snprintf(png, sizeof png, "%s", cli_opt(argc, argv, "--confusion-png"));
  else if (dir) snprintf(png, sizeof png, "%s/confusion.png", dir);
  const char *split = cli_opt(argc, argv, "--split");
  if (!dir || !data) {
    fprintf(stderr, "damo evaluate: --model DIR and --data SPEC are required\n");
    return 2;
  }
  if (cli_is_text_data(data)) { /* a fine-tuned BERT directory */
    int bert = cli_evaluate_bert(dir, data, split, png);
    if (bert != 0) return bert == 2 ? 0 : 1;
  }
  damo_model *m;
  if (damo_model_load(dir, &m) != DAMO_OK) return cli_fail("evaluate");
  damo_tensor *x, *y;
  int rc = 0;
  damo_text_dataset *text = NULL;
  damo_status loaded;
  if (cli_is_text_data(data)) {
    int which = !split || !strcmp(split, "test") ? DAMO_SPLIT_TEST : !strcmp(split, "train") ? DAMO_SPLIT_TRAIN : DAMO_SPLIT_VAL;
    loaded = cli_text_split_for_model(dir, m, data, which, &text, &x, &y);
  } else {
    loaded = cli_load_data(data, split ? split : "test", cli_opt(argc, argv, "--label-column"), &x, &y);
  }
  damo_text_dataset_free(text);
  if (loaded != DAMO_OK) {
    rc = cli_fail("evaluate");
  } else {
    float loss, acc;
    if (damo_model_evaluate(m, x, y, 256, &loss, &acc) != DAMO_OK) rc = cli_fail("evaluate");
    else if (acc >= 0) printf("loss: %.4f - accuracy: %.4f (%lld examples)\n", loss, acc, (long long)x->shape[0]);
    else printf("loss: %.4f (%lld examples)\n", loss, (long long)x->shape[0]);
    if (rc == 0 && acc >= 0) rc = cli_classification_report(m, x, y, png);
    damo_tensor_free(x);
    damo_tensor_free(y);
  }
  damo_model_free(m);
  return rc;
}

int cli_summary(int argc, char **argv) {
  static const char *const with_value[] = {"--model", "--config", NULL};
  if (!cli_check_options(argc, argv, with_value, NULL)) return 2;
  const char *dir = cli_opt(argc, argv, "--model"), *config = cli_opt(argc, argv, "--config");
  if (!dir == !config) {
    fprintf(stderr, "damo summary: give --model DIR or --config FILE\n");
    return 2;
  }
  damo_model *m;
  damo_status st = dir ? damo_model_load(dir, &m) : damo_model_from_config_file(config, &m);
  if (st != DAMO_OK) return cli_fail("summary");
  damo_model_summary(m, stdout);
  damo_model_free(m);
  return 0;
}

int cli_export(int argc, char **argv) {
  static const char *const with_value[] = {"--data", "--split", "--x", "--y", "--label-column", NULL};
  if (!cli_check_options(argc, argv, with_value, NULL)) return 2;
  const char *data = cli_opt(argc, argv, "--data"), *split = cli_opt(argc, argv, "--split");
  const char *xpath = cli_opt(argc, argv, "--x"), *ypath = cli_opt(argc, argv, "--y");
  if (!data || !xpath) {
    fprintf(stderr, "damo export: --data SPEC and --x x.npy are required\n");
    return 2;
  }
  damo_tensor *x, *y;
  if (cli_load_data(data, split ? split : "test", cli_opt(argc, argv, "--label-column"), &x, &y) != DAMO_OK)
    return cli_fail("export");
  int rc = 0;
  if (damo_npy_save(xpath, x) != DAMO_OK || (ypath && y && damo_npy_save(ypath, y) != DAMO_OK)) rc = cli_fail("export");
  else printf("wrote %lld examples to %s%s%s\n", (long long)x->shape[0], xpath, ypath ? " and " : "", ypath ? ypath : "");
  damo_tensor_free(x);
  damo_tensor_free(y);
  return rc;
}
