/* report.c - what several commands load and print: a data SPEC's arrays, a classifier's
 * top classes per input and its classification report, and whether a path is a picture.
 * Below the command files (with text.c); above args.c only. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

damo_status cli_load_outputs(const char *spec, int n_out, damo_tensor **x, damo_tensor **ys) {
  *x = NULL;
  for (int k = 0; k < n_out; k++) ys[k] = NULL;
  char *copy = strdup(spec), *save = NULL;
  int n = 0;
  damo_status st = copy ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "out of memory");
  for (char *part = copy ? strtok_r(copy, ",", &save) : NULL; part && st == DAMO_OK; part = strtok_r(NULL, ",", &save)) {
    if (n > n_out) st = damo_error(DAMO_ERR_INVALID_ARG, "%s: more arrays than x and one target per output (%d)", spec, n_out);
    else st = damo_npy_load(part, n ? &ys[n - 1] : x);
    n++;
  }
  if (st == DAMO_OK && n != n_out + 1)
    st = damo_error(DAMO_ERR_INVALID_ARG, "%s: a model of %d outputs trains on x.npy and one targets .npy per output "
                    "(x.npy,%s), got %d array%s", spec, n_out, n_out == 2 ? "y1.npy,y2.npy" : "y1.npy,...", n,
                    n == 1 ? "" : "s");
  free(copy);
  if (st != DAMO_OK) {
    damo_tensor_free(*x);
    *x = NULL;
    for (int k = 0; k < n_out; k++) damo_tensor_free(ys[k]), ys[k] = NULL;
  }
  return st;
}

int cli_is_image_path(const char *path) {
  static const char *const ext[] = {".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pnm", ".bmp", ".gif", ".tga", NULL};
  const char *dot = strrchr(path, '.');
  if (!dot) return 0;
  for (int i = 0; ext[i]; i++) {
    size_t n = strlen(ext[i]);
    if (strlen(dot) != n) continue;
    int same = 1;
    for (size_t k = 0; k < n && same; k++) same = tolower((unsigned char)dot[k]) == ext[i][k];
    if (same) return 1;
  }
  return 0;
}

/* "Sneaker 0.912, Sandal 0.051, Ankle boot 0.030" for one row of probabilities. */
void cli_print_top_classes(const float *p, int64_t C, int top, const char *const *names, int n_names) {
  float two[2];
  if (C == 1) { /* a sigmoid output is class 1's probability: print both classes */
    two[0] = 1.0f - p[0], two[1] = p[0];
    p = two, C = 2;
  }
  char used[1024] = {0};
  for (int k = 0; k < top && k < C && k < 1024; k++) {
    int64_t best = -1;
    for (int64_t c = 0; c < C && c < 1024; c++)
      if (!used[c] && (best < 0 || p[c] > p[best])) best = c;
    used[best] = 1;
    if (best < n_names) printf("%s%s %.3f", k ? ", " : "", names[best], (double)p[best]);
    else printf("%sclass %lld %.3f", k ? ", " : "", (long long)best, (double)p[best]);
  }
  printf("\n");
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

int cli_check_out(const char *out, int resume, int overwrite) {
  static const char *const run_files[] = {"trainer_state.safetensors", "model.safetensors", "config.json", "history.csv"};
  char path[4096], found[256] = "";
  for (size_t i = 0; i < sizeof run_files / sizeof *run_files; i++) {
    snprintf(path, sizeof path, "%s/%s", out, run_files[i]);
    if (access(path, F_OK) == 0)
      snprintf(found + strlen(found), sizeof found - strlen(found), "%s%s", *found ? ", " : "", run_files[i]);
  }
  snprintf(path, sizeof path, "%s/trainer_state.safetensors", out);
  const int has_state = access(path, F_OK) == 0;
  if (resume && overwrite) {
    fprintf(stderr, "damo train: --resume continues the run in %s and --overwrite replaces it; give one of them\n", out);
    return 2;
  }
  if (resume && !has_state) {
    fprintf(stderr, "damo train: --resume: %s holds no checkpoint (no trainer_state.safetensors)%s\n", out,
            *found ? "; it holds a model only: give --overwrite to train a new one there" : "");
    return 2;
  }
  if (!resume && !overwrite && *found) {
    fprintf(stderr, "damo train: %s already holds a model or a run (%s); give --resume to continue it or --overwrite "
            "to replace it\n", out, found);
    return 2;
  }
  if (overwrite && has_state && unlink(path) != 0) {
    fprintf(stderr, "damo train: --overwrite: cannot remove %s: %s\n", path, strerror(errno));
    return 1;
  }
  return 0;
}

/* The training curves of a history as a PNG, by epoch, step (by_step 1) or federated round
 * (2); 1 when written (a failure is printed). */
int cli_write_history_png(const damo_history *h, const char *path, const char *title, int by_step) {
  int n = damo_history_epochs(h);
  if (n < 1) return 0;
  float *v = malloc((size_t)n * 5 * sizeof *v), *at = v ? v + 4 * n : NULL;
  if (!v) return 0;
  for (int e = 0; e < n; e++) at[e] = (float)damo_history_at(h, e);
  static const char *const series[] = {"loss", "val_loss", "accuracy", "val_accuracy"};
  int any[4] = {0};
  for (int k = 0; k < 4; k++)
    for (int e = 0; e < n; e++) {
      v[k * n + e] = damo_history_get(h, series[k], e);
      any[k] |= v[k * n + e] == v[k * n + e];
    }
  damo_status st = damo_plot_history_png_at(path, title, n, by_step ? at : NULL,
                                            by_step == 2 ? "round" : by_step ? "step" : "epoch",
                                            any[0] ? v : NULL, any[1] ? v + n : NULL, any[2] ? v + 2 * n : NULL,
                                            any[3] ? v + 3 * n : NULL);
  free(v);
  if (st != DAMO_OK) cli_fail("train: writing the training curves");
  return st == DAMO_OK;
}
