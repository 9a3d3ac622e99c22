/* prune.c - damo prune: a saved model's dense and conv2d kernels pruned by magnitude while it
 * fine-tunes on the training split of --data (damo_model_prune), with each kernel's sparsity
 * and the test accuracy before and after; or (--sweep) a list of sparsities each from the
 * saved model, scored on the test split, with the curve as a PNG. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int parse(int argc, char **argv, damo_prune_options *o, damo_fit_options *fo, float *lr, int sweeping) {
  const char *v;
  double d;
  long n;
  if (sweeping == !!cli_opt(argc, argv, "--sparsity")) {
    fprintf(stderr, "damo prune: give --sparsity S (the fraction of kernel weights to zero, in (0, 1)), or --sweep\n");
    return 0;
  }
  if (!sweeping && !cli_parse_double(cli_opt(argc, argv, "--sparsity"), "--sparsity", 0, 1, 1, &d)) return 0;
  if (!sweeping && d >= 1) {
    fprintf(stderr, "damo prune: --sparsity must be below 1 (got %s)\n", cli_opt(argc, argv, "--sparsity"));
    return 0;
  }
  if (!sweeping) o->sparsity = (float)d;
  if (!sweeping && cli_opt(argc, argv, "--curve")) {
    fprintf(stderr, "damo prune: --curve goes with --sweep\n");
    return 0;
  }
  if ((v = cli_opt(argc, argv, "--schedule"))) {
    if (strcmp(v, "gradual") && strcmp(v, "oneshot")) {
      fprintf(stderr, "damo prune: --schedule is gradual or oneshot, not '%s'\n", v);
      return 0;
    }
    o->schedule = !strcmp(v, "oneshot") ? DAMO_PRUNE_ONESHOT : DAMO_PRUNE_GRADUAL;
  }
  if ((v = cli_opt(argc, argv, "--scope"))) {
    if (strcmp(v, "global") && strcmp(v, "layer")) {
      fprintf(stderr, "damo prune: --scope is global or layer, not '%s'\n", v);
      return 0;
    }
    o->scope = !strcmp(v, "layer") ? DAMO_PRUNE_LAYER : DAMO_PRUNE_GLOBAL;
  }
  if ((v = cli_opt(argc, argv, "--frequency"))) {
    if (!cli_parse_long(v, "--frequency", 1, 1L << 30, &n)) return 0;
    o->frequency = n;
  }
  if ((v = cli_opt(argc, argv, "--epochs"))) {
    if (!cli_parse_long(v, "--epochs", 1, 100000, &n)) return 0;
    fo->epochs = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--batch-size"))) {
    if (!cli_parse_long(v, "--batch-size", 1, 1 << 20, &n)) return 0;
    fo->batch_size = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--seed"))) {
    if (!cli_parse_long(v, "--seed", 0, 0x7fffffffL, &n)) return 0;
    fo->seed = (uint64_t)n;
  }
  if ((v = cli_opt(argc, argv, "--verbose"))) {
    if (!cli_parse_long(v, "--verbose", 0, 2, &n)) return 0;
    fo->verbose = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--lr"))) {
    if (!cli_parse_double(v, "--lr", 0, 1, 1e9, &d)) return 0;
    *lr = (float)d;
  }
  return 1;
}

static void print_sparsity(damo_model *m) {
  const char *name;
  int64_t zeros, weights;
  for (int k = 0; damo_model_kernel_sparsity(m, k, &name, &zeros, &weights) == DAMO_OK; k++)
    printf("  %-24s %9lld of %9lld kernel weights zero (%.1f%%)\n", name, (long long)zeros, (long long)weights,
           100.0 * (double)zeros / (double)weights);
  damo_clear_error(); /* the loop's end */
  if (damo_model_kernel_sparsity(m, -1, &name, &zeros, &weights) == DAMO_OK)
    printf("  %-24s %9lld of %9lld kernel weights zero (%.1f%%)\n", "all kernels", (long long)zeros, (long long)weights,
           100.0 * (double)zeros / (double)weights);
}

enum { MAX_SWEEP = 32 };

/* --sweep S1,S2,...: the sparsities, increasing, each in (0, 1). */
static int parse_sweep(const char *v, float *s, int *n) {
  *n = 0;
  for (const char *at = v; *at;) {
    char *end;
    const double d = strtod(at, &end);
    if (end == at || !(d > 0 && d < 1) || (*n && !(d > s[*n - 1])) || *n == MAX_SWEEP || (*end && *end != ',')) {
      fprintf(stderr, "damo prune: --sweep takes up to %d increasing sparsities in (0, 1) separated by commas, "
                      "not '%s'\n", MAX_SWEEP, v);
      return 0;
    }
    s[(*n)++] = (float)d;
    at = *end ? end + 1 : end;
  }
  return *n > 0;
}

/* Each sparsity of the sweep from the same saved model: test accuracy and loss, as a table
 * and (--curve) a PNG of both against sparsity. Nothing is saved. */
static int sweep(const char *dir, const char *curve, const float *levels, int n_levels, const damo_prune_options *o,
                 const damo_fit_options *fo, float lr, const damo_tensor *x, const damo_tensor *y,
                 const damo_tensor *tx, const damo_tensor *ty) {
  float at[MAX_SWEEP + 1], acc[MAX_SWEEP + 1], loss[MAX_SWEEP + 1];
  int rc = 0;
  for (int k = 0; k <= n_levels && rc == 0; k++) { /* k 0: the dense model */
    damo_model *m;
    damo_compile_options copt;
    if (damo_model_load(dir, &m) != DAMO_OK) return cli_fail("prune");
    if (damo_model_config_compile_options(m, &copt) != DAMO_OK) rc = cli_fail("prune");
    if (lr > 0) copt.optimizer.lr = lr;
    if (rc == 0 && damo_model_compile(m, &copt) != DAMO_OK) rc = cli_fail("prune");
    damo_prune_options ok = *o;
    at[k] = k ? 100.0f * levels[k - 1] : 0.0f;
    if (k) ok.sparsity = levels[k - 1];
    if (rc == 0 && k && damo_model_prune(m, x, y, &ok, fo, NULL) != DAMO_OK) rc = cli_fail("prune");
    if (rc == 0 && damo_model_evaluate(m, tx, ty, 256, &loss[k], &acc[k]) != DAMO_OK) rc = cli_fail("prune");
    if (rc == 0) printf("sparsity %5.1f%%: test accuracy %.4f, loss %.4f\n", (double)at[k], acc[k], loss[k]);
    fflush(stdout);
    damo_model_free(m);
  }
  if (rc == 0 && curve) {
    const char *names[2] = {dir, NULL};
    char title[160];
    snprintf(title, sizeof title, "test figures after pruning (%d epochs of fine-tuning each)", fo->epochs);
    if (damo_plot_series_png(curve, title, n_levels + 1, at, "sparsity %", names, loss, NULL, acc, NULL) != DAMO_OK)
      rc = cli_fail("prune: the curve");
    else
      printf("wrote %s\n", curve);
  }
  return rc;
}

int cli_prune_sequential(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *out = cli_opt(argc, argv, "--out");
  const char *data = cli_opt(argc, argv, "--data"), *label = cli_opt(argc, argv, "--label-column");
  const char *sweep_list = cli_opt(argc, argv, "--sweep");
  if (!dir || (!out && !sweep_list) || !data) {
    fprintf(stderr, "damo prune: --model DIR, --out DIR (or --sweep) and --data SPEC are required\n");
    return 2;
  }
  damo_prune_options o = {0};
  damo_fit_options fo = {.epochs = 2, .batch_size = 64, .seed = 42, .verbose = -1, .shuffle = -1};
  float lr = 0, levels[MAX_SWEEP];
  int n_levels = 0;
  if (sweep_list && !parse_sweep(sweep_list, levels, &n_levels)) return 2;
  if (!parse(argc, argv, &o, &fo, &lr, sweep_list != NULL)) return 2;
  if (sweep_list) {
    damo_tensor *x = NULL, *y = NULL, *tx = NULL, *ty = NULL;
    int rc = 0;
    if (cli_load_data(data, "train", label, &x, &y) != DAMO_OK || cli_load_data(data, "test", label, &tx, &ty) != DAMO_OK)
      rc = cli_fail("prune: --sweep scores the test split of --data");
    if (rc == 0) {
      if (fo.verbose < 0) fo.verbose = 0;
      rc = sweep(dir, cli_opt(argc, argv, "--curve"), levels, n_levels, &o, &fo, lr, x, y, tx, ty);
    }
    damo_tensor_free(x);
    damo_tensor_free(y);
    damo_tensor_free(tx);
    damo_tensor_free(ty);
    return rc;
  }
  struct stat a, b;
  if (stat(dir, &a) == 0 && stat(out, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
    fprintf(stderr, "damo prune: --out is the model's own directory; write the pruned model beside it\n");
    return 2;
  }
  if (cli_is_text_data(data)) {
    fprintf(stderr, "damo prune: fine-tuning on text data sets is not supported yet\n");
    return 2;
  }
  damo_model *m;
  if (damo_model_load(dir, &m) != DAMO_OK) return cli_fail("prune");
  damo_compile_options copt;
  int rc = 0;
  if (damo_model_config_compile_options(m, &copt) != DAMO_OK || damo_model_compile(m, &copt) != DAMO_OK)
    rc = cli_fail("prune: the model's optimizer and loss (fine-tuning needs them)");
  if (rc == 0 && lr > 0) {
    copt.optimizer.lr = lr;
    if (damo_model_compile(m, &copt) != DAMO_OK) rc = cli_fail("prune");
  }
  damo_tensor *x = NULL, *y = NULL, *tx = NULL, *ty = NULL;
  if (rc == 0 && cli_load_data(data, "train", label, &x, &y) != DAMO_OK) rc = cli_fail("prune: loading the data");
  if (rc == 0 && !strchr(data, ',') && cli_load_data(data, "test", label, &tx, &ty) != DAMO_OK) {
    damo_clear_error(); /* a CSV or .npy pair has no test split: nothing to score */
    tx = ty = NULL;
  }
  float loss0 = 0, acc0 = -1, loss1 = 0, acc1 = -1;
  if (rc == 0 && tx && damo_model_evaluate(m, tx, ty, 256, &loss0, &acc0) != DAMO_OK) rc = cli_fail("prune");
  if (rc == 0) {
    printf("pruning %s to %.1f%% sparsity (%s, %s scope) while fine-tuning %d epochs at lr %g on %lld examples\n", dir,
           100.0 * o.sparsity, o.schedule == DAMO_PRUNE_ONESHOT ? "one shot" : "gradual",
           o.scope == DAMO_PRUNE_LAYER ? "layer" : "global", fo.epochs, (double)copt.optimizer.lr,
           (long long)x->shape[0]);
    fflush(stdout);
  }
  if (rc == 0 && damo_model_prune(m, x, y, &o, &fo, NULL) != DAMO_OK) rc = cli_fail("prune");
  if (rc == 0 && tx && damo_model_evaluate(m, tx, ty, 256, &loss1, &acc1) != DAMO_OK) rc = cli_fail("prune");
  if (rc == 0 && damo_model_save(m, out) != DAMO_OK) rc = cli_fail("prune");
  if (rc == 0) {
    printf("saved the pruned model to %s/\n", out);
    print_sparsity(m);
    if (tx)
      printf("test accuracy: dense %.4f, pruned %.4f (%+.2f points; loss %.4f -> %.4f; %lld examples)\n", acc0, acc1,
             100.0 * (acc1 - acc0), loss0, loss1, (long long)tx->shape[0]);
  }
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_tensor_free(tx);
  damo_tensor_free(ty);
  damo_model_free(m);
  return rc;
}
