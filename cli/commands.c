/* commands.c - damo train (and distill), evaluate and summary of Sequential models (evaluate of a BERT
 * classifier too), and export. Each reads its options (main.c checked them against the
 * command's table), calls the public API and reports failures with the library's message
 * (which names the file, offset or layer). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* Training curves from the history as a PNG; 1 when written. */

/* What a Sequential model directory holds besides the model: vocab.txt and text.json for
 * a text model, history.csv and history.png. Written into a directory save's folder. */
typedef struct checkpoint_extras {
  const damo_text_dataset *text;
  int max_len;
  const char *config;
  const damo_dp_options *privacy; /* DP-SGD: privacy.json too */
  int64_t examples;
} checkpoint_extras;

static damo_status add_checkpoint_files(void *ctx, const char *folder, const damo_history *h) {
  const checkpoint_extras *e = ctx;
  if (e->text && !cli_text_save(folder, e->text, e->max_len)) return damo_error(DAMO_ERR_IO, "%s: the text files", folder);
  char path[4096];
  snprintf(path, sizeof path, "%s/history.csv", folder);
  damo_status st = damo_history_csv_write(h, path);
  if (st == DAMO_OK && e->privacy) st = cli_privacy_save(folder, e->privacy, e->examples);
  snprintf(path, sizeof path, "%s/history.png", folder);
  if (st == DAMO_OK) cli_write_history_png(h, path, strrchr(e->config, '/') ? strrchr(e->config, '/') + 1 : e->config, 0);
  return st;
}

/* The trained model, its text preparation and its training curves as one directory save:
 * out changes from the previous model (or checkpoint) to this one, whole. 1 when saved. */
static int save_trained(damo_model *m, const damo_history *h, const checkpoint_extras *extras, const char *out) {
  damo_dir_save *tx;
  if (damo_dir_save_begin(out, &tx) != DAMO_OK) return !cli_fail("train: saving");
  const char *folder = damo_dir_save_folder(tx);
  if (damo_model_save(m, folder) != DAMO_OK || add_checkpoint_files((void *)extras, folder, h) != DAMO_OK) {
    damo_dir_save_abort(tx);
    return !cli_fail("train: saving");
  }
  char png[4096];
  snprintf(png, sizeof png, "%s/history.png", folder);
  const int curves = access(png, F_OK) == 0;
  if (damo_dir_save_commit(tx) != DAMO_OK) return !cli_fail("train: saving");
  printf("saved model to %s/ (config.json, model.safetensors, history.csv%s%s%s)\n", out,
         extras->text ? ", vocab.txt, text.json" : "", curves ? ", history.png" : "", extras->privacy ? ", privacy.json" : "");
  return 1;
}

/* A distillation teacher on text: the teacher in dir reads the training mails its own way (a
 * fine-tuned BERT through WordPiece, a text model through its vocabulary), and its class
 * probabilities go to fit as d->teacher_probs. 1 done, 0 failed (printed). */
static int text_teacher(const char *dir, damo_distill_options *d, const damo_text_dataset *text, damo_tensor **probs) {
  if (!d->teacher) { /* cli_distill leaves only a BERT teacher unloaded */
    if (cli_bert_teacher_probs(dir, text, DAMO_SPLIT_TRAIN, probs) != 2) return 0;
  } else {
    damo_tensor *ids = NULL;
    damo_status st = cli_text_encode_for_model(dir, d->teacher, text, DAMO_SPLIT_TRAIN, &ids);
    if (st == DAMO_OK) st = damo_model_predict(d->teacher, ids, 256, probs);
    damo_tensor_free(ids);
    if (st != DAMO_OK) {
      cli_fail("distill: the teacher on the training mails");
      return 0;
    }
  }
  d->teacher_probs = *probs;
  d->teacher = NULL;
  return 1;
}

/* damo train of a Sequential (or functional) config, and damo distill: the same run with a
 * teacher's soft targets mixed into the loss (distill non-NULL; teacher_dir its directory). */
static int train_sequential(int argc, char **argv, const char *config, const damo_distill_options *distill,
                            const char *teacher_dir) {
  const char *data = cli_opt(argc, argv, "--data");
  const char *out = cli_opt(argc, argv, "--out");
  if (!out) out = "damo_model";
  printf("%s\n", damo_info_string());

  damo_model *m;
  damo_dir_lock *lock = NULL;
  if (damo_model_from_config_file(config, &m) != DAMO_OK) return cli_fail("train");
  damo_compile_options copt;
  if (damo_model_config_compile_options(m, &copt) != DAMO_OK)
    copt = (damo_compile_options){.optimizer = damo_adam(1e-3f),
                                  .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = DAMO_METRIC_ACCURACY};
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
  if ((v = cli_opt(argc, argv, "--checkpoint-every"))) {
    if (!cli_parse_long(v, "--checkpoint-every", 0, 0x7fffffffL, &n)) goto done;
    fo.checkpoint_every = n;
  }
  fo.resume = cli_flag(argc, argv, "--resume");
  damo_dp_options privacy;
  const int private_run = cli_privacy_options(argc, argv, &privacy, NULL);
  if (private_run < 0) goto done;
  fo.privacy = private_run ? &privacy : NULL;
  if (private_run && fo.augment) {
    printf("augmentation off: DP-SGD samples and clips the rows as stored\n");
    fo.augment = NULL;
  }
  const char *const *names;
  int n_names = damo_dataset_class_names(data, &names);
  if (n_names > 0 && damo_model_class_names(m, NULL) == 0 && damo_model_set_class_names(m, n_names, names) != DAMO_OK) {
    rc = cli_fail("train");
    goto done;
  }
  rc = 1;
  /* Held until the end: a second run into the same directory is refused, and a directory
   * that cannot be written fails now rather than after training. */
  if (!cli_data_parallel_options(argc, argv, &fo.parallel)) {
    rc = 2;
    goto done;
  }
  fo.dist = cli_world();
  const int writer = cli_rank() == 0; /* in a data-parallel run rank 0 alone writes */
  if (writer && damo_dir_lock_acquire(out, &lock) != DAMO_OK) {
    rc = cli_fail("train: the output directory");
    goto done;
  }
  if (writer && (rc = cli_check_out(out, fo.resume, cli_flag(argc, argv, "--overwrite"))) != 0) goto done;
  rc = 1;
  /* Checkpoints switch out whole (model, trainer_state.safetensors, history.csv, ...) at each
   * epoch end and every --checkpoint-every steps; --history appends a CSV of its own too. */
  fo.checkpoint_dir = out;
  fo.history_csv = cli_opt(argc, argv, "--history");
  damo_distill_options distill_here = distill ? *distill : (damo_distill_options){0};
  damo_tensor *teacher_probs = NULL;
  fo.distill = distill ? &distill_here : NULL;

  if (damo_model_build(m, fo.seed) != DAMO_OK || damo_model_compile(m, &copt) != DAMO_OK ||
      damo_model_set_recompute(m, cli_flag(argc, argv, "--recompute")) != DAMO_OK) {
    rc = cli_fail("train");
    goto done;
  }
  if (fo.verbose != 0) damo_model_summary(m, stdout);

  damo_tensor *x = NULL, *y = NULL, *xt = NULL, *yt = NULL, *ys[DAMO_MODEL_MAX_OUTPUTS] = {NULL};
  const char *label_col = cli_opt(argc, argv, "--label-column");
  damo_text_dataset *text = NULL;
  const int n_out = damo_model_num_outputs(m);
  if (n_out > 1) { /* x.npy,y1.npy,y2.npy: a target array per output */
    if (cli_load_outputs(data, n_out, &x, ys) != DAMO_OK) {
      rc = cli_fail("train: loading the training data");
      goto done;
    }
  } else if (cli_is_text_data(data)) {
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
  if (distill && text && !text_teacher(teacher_dir, &distill_here, text, &teacher_probs)) {
    rc = 1;
    goto free_data;
  }
  if (distill && !text && !distill->teacher) {
    fprintf(stderr, "damo distill: the BERT teacher %s reads text; --data %s is not a text data set\n", teacher_dir, data);
    rc = 2;
    goto free_data;
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
  checkpoint_extras extras = {text, (int)x->shape[1], config, fo.privacy, n_train};
  fo.checkpoint_files = add_checkpoint_files;
  fo.checkpoint_ctx = &extras;
  if (fo.resume) printf("resuming the run checkpointed in %s\n", out);
  damo_history *h = NULL;
  const char *sweep_list = cli_opt(argc, argv, "--dp-sweep");
  if (sweep_list) { /* a model per epsilon, scored on the test split; none saved */
    double eps[16];
    int n_eps = 0;
    if (!xt && !strchr(data, ',') && !ends_with(data, ".csv")) cli_load_data(data, "test", label_col, &xt, &yt);
    if (!cli_privacy_sweep_parse(sweep_list, eps, &n_eps)) rc = 2;
    else if (!xt) rc = cli_fail("train: --dp-sweep scores a test split, and --data has none");
    else rc = cli_privacy_sweep(config, &copt, &fo, &privacy, eps, n_eps, x, y, xt, yt, cli_opt(argc, argv, "--dp-curve"));
    goto free_data;
  }
  const damo_status fit_st = n_out > 1 ? damo_model_fit_outputs(m, 1, (const damo_tensor *const *)&x, n_out,
                                                                 (const damo_tensor *const *)ys, &fo, &h)
                                       : damo_model_fit(m, x, y, &fo, &h);
  if (fit_st == DAMO_OK && writer && fo.privacy) cli_privacy_report(fo.privacy);
  if (fit_st != DAMO_OK) {
    rc = cli_fail("train");
  } else if (!writer) {
    rc = 0;
  } else if (!save_trained(m, h, &extras, out)) {
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
free_data:
  damo_tensor_free(teacher_probs);
  damo_tensor_free(x);
  damo_tensor_free(y);
  for (int k = 0; k < n_out; k++) damo_tensor_free(ys[k]);
  damo_tensor_free(xt);
  damo_tensor_free(yt);
  damo_text_dataset_free(text);
done:
  damo_dir_lock_release(lock);
  damo_model_free(m);
  return rc;
}

int cli_train_sequential(int argc, char **argv) {
  const char *config = cli_opt(argc, argv, "--config");
  if (!config || !cli_opt(argc, argv, "--data")) {
    fprintf(stderr, "damo train: --config FILE and --data SPEC are required\n");
    return 2;
  }
  return train_sequential(argc, argv, config, NULL, NULL);
}

int cli_distill(int argc, char **argv) {
  const char *teacher_dir = cli_opt(argc, argv, "--teacher"), *student = cli_opt(argc, argv, "--student");
  if (!teacher_dir || !student || !cli_opt(argc, argv, "--data")) {
    fprintf(stderr, "damo distill: --teacher DIR, --student CONFIG and --data SPEC are required\n");
    return 2;
  }
  damo_distill_options d = {.temperature = 4.0f, .alpha = 0.9f};
  const char *v;
  double value;
  if ((v = cli_opt(argc, argv, "--temperature"))) {
    if (!cli_parse_double(v, "--temperature", 0, 1, 1000, &value)) return 2;
    d.temperature = (float)value;
  }
  if ((v = cli_opt(argc, argv, "--alpha"))) {
    if (!cli_parse_double(v, "--alpha", 0, 0, 1, &value)) return 2;
    d.alpha = (float)value;
  }
  /* A BERT teacher is read when the mails are (train_sequential); any other is a model. */
  char path[4096], kind[16] = "";
  snprintf(path, sizeof path, "%s/config.json", teacher_dir);
  const int bert = damo_config_model_type_file(path, kind, sizeof kind) == DAMO_OK && !strcmp(kind, "bert");
  if (!bert && damo_model_load(teacher_dir, &d.teacher) != DAMO_OK) return cli_fail("distill: the teacher");
  printf("distilling %s into %s: temperature %g, alpha %g (the soft targets' weight; %g for the labels)\n", teacher_dir,
         student, (double)d.temperature, (double)d.alpha, 1.0 - (double)d.alpha);
  const int rc = train_sequential(argc, argv, student, &d, teacher_dir);
  damo_model_free(d.teacher);
  return rc;
}

/* A model of several outputs on x.npy,y1.npy,...: the total loss and each output's figures. */
static int evaluate_outputs(damo_model *m, const char *data, int batch) {
  const int n_out = damo_model_num_outputs(m);
  damo_tensor *x, *ys[DAMO_MODEL_MAX_OUTPUTS];
  if (cli_load_outputs(data, n_out, &x, ys) != DAMO_OK) return cli_fail("evaluate");
  float loss, losses[DAMO_MODEL_MAX_OUTPUTS], accs[DAMO_MODEL_MAX_OUTPUTS];
  int rc = 0;
  if (damo_model_evaluate_outputs(m, 1, (const damo_tensor *const *)&x, n_out, (const damo_tensor *const *)ys, batch,
                                  &loss, losses, accs) != DAMO_OK) {
    rc = cli_fail("evaluate");
  } else {
    printf("loss: %.4f", loss);
    for (int k = 0; k < n_out; k++) {
      const char *name;
      damo_model_output_info(m, k, &name, NULL);
      printf(" - %s_loss: %.4f", name, losses[k]);
      if (accs[k] >= 0) printf(" - %s_accuracy: %.4f", name, accs[k]);
    }
    printf(" (%lld examples)\n", (long long)x->shape[0]);
  }
  damo_tensor_free(x);
  for (int k = 0; k < n_out; k++) damo_tensor_free(ys[k]);
  return rc;
}

int cli_evaluate_sequential(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *data = cli_opt(argc, argv, "--data");
  char png[4096];
  if (cli_opt(argc, argv, "--confusion-png")) snprintf(png, sizeof png, "%s", cli_opt(argc, argv, "--confusion-png"));
  else if (dir) snprintf(png, sizeof png, "%s/confusion.png", dir);
  const char *split = cli_opt(argc, argv, "--split");
  if (!dir || !data) {
    fprintf(stderr, "damo evaluate: --model DIR and --data SPEC are required\n");
    return 2;
  }
  long batch = 256;
  if (cli_opt(argc, argv, "--batch-size") &&
      !cli_parse_long(cli_opt(argc, argv, "--batch-size"), "--batch-size", 1, 1 << 20, &batch))
    return 2;
  damo_model *m;
  if (damo_model_load(dir, &m) != DAMO_OK) return cli_fail("evaluate");
  if (damo_model_num_outputs(m) > 1) {
    int rc = evaluate_outputs(m, data, (int)batch);
    damo_model_free(m);
    return rc;
  }
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
    if (damo_model_evaluate(m, x, y, (int)batch, &loss, &acc) != DAMO_OK) rc = cli_fail("evaluate");
    else if (acc >= 0) printf("loss: %.4f - accuracy: %.4f (%lld examples)\n", loss, acc, (long long)x->shape[0]);
    else printf("loss: %.4f (%lld examples)\n", loss, (long long)x->shape[0]);
    if (rc == 0 && acc >= 0) rc = cli_classification_report(m, x, y, png);
    damo_tensor_free(x);
    damo_tensor_free(y);
  }
  damo_model_free(m);
  return rc;
}

/* A fine-tuned BERT directory on a split of a labelled text set. */
int cli_evaluate_bert(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *data = cli_opt(argc, argv, "--data");
  if (!dir || !data) {
    fprintf(stderr, "damo evaluate: --model DIR and --data spam-assassin|FOLDER are required\n");
    return 2;
  }
  if (!cli_is_text_data(data)) {
    fprintf(stderr, "damo evaluate: %s is a BERT classifier: it is scored on labelled texts (spam-assassin or a folder "
            "of class folders), not %s\n", dir, data);
    return 2;
  }
  char png[4096];
  const char *given = cli_opt(argc, argv, "--confusion-png");
  if (given) snprintf(png, sizeof png, "%s", given);
  else snprintf(png, sizeof png, "%s/confusion.png", dir);
  return cli_bert_evaluate_split(dir, data, cli_opt(argc, argv, "--split"), png) == 2 ? 0 : 1;
}

int cli_summary_sequential(int argc, char **argv) {
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
  return dir && !cli_privacy_show(dir) ? 1 : 0;
}

int cli_export(int argc, char **argv) {
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
