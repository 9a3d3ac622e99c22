/* privacy.c - the command line of DP-SGD: the --dp-* options, the privacy.json a private
 * model directory keeps (what was spent and how), and its lines in damo train and summary. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* v is a (index 0) or b (index 1); else a message naming the option. */
static int one_of(const char *v, const char *option, const char *a, const char *b, int *out) {
  if (strcmp(v, a) && strcmp(v, b)) {
    fprintf(stderr, "damo train: %s is %s or %s, not '%s'\n", option, a, b, v);
    return 0;
  }
  *out = strcmp(v, a) != 0;
  return 1;
}

int cli_privacy_options(int argc, char **argv, damo_dp_options *o, const char *one_model_kind) {
  static const char *const names[] = {"--dp-noise", "--dp-epsilon", "--dp-delta", "--dp-sampling", "--dp-accountant",
                                      "--dp-physical-batch", "--dp-sweep", "--dp-curve"};
  memset(o, 0, sizeof *o);
  const char *v = cli_opt(argc, argv, "--dp-clip");
  if (!v) {
    for (size_t k = 0; k < sizeof names / sizeof *names; k++)
      if (cli_opt(argc, argv, names[k])) {
        fprintf(stderr, "damo train: %s needs --dp-clip C (DP-SGD clips every example's gradient to norm C)\n", names[k]);
        return -1;
      }
    return 0;
  }
  long n;
  if (one_model_kind && cli_opt(argc, argv, "--dp-sweep")) {
    fprintf(stderr, "damo train: --dp-sweep trains Sequential configs; give %s --dp-epsilon or --dp-noise\n",
            one_model_kind);
    return -1;
  }
  if (!cli_parse_double(v, "--dp-clip", 0, 1, HUGE_VAL, &o->clip)) return -1;
  if ((v = cli_opt(argc, argv, "--dp-noise")) && !cli_parse_double(v, "--dp-noise", 0, 0, 1e6, &o->noise)) return -1;
  if ((v = cli_opt(argc, argv, "--dp-epsilon")) && !cli_parse_double(v, "--dp-epsilon", 0, 1, 1e6, &o->target_epsilon))
    return -1;
  if ((v = cli_opt(argc, argv, "--dp-delta")) && !cli_parse_double(v, "--dp-delta", 0, 1, 1, &o->delta)) return -1;
  if (cli_opt(argc, argv, "--dp-sweep") && (cli_opt(argc, argv, "--dp-noise") || cli_opt(argc, argv, "--dp-epsilon"))) {
    fprintf(stderr, "damo train: --dp-sweep sets each run's epsilon; leave out --dp-noise and --dp-epsilon\n");
    return -1;
  }
  const int sweep = cli_opt(argc, argv, "--dp-sweep") != NULL;
  if (cli_opt(argc, argv, "--dp-noise") && cli_opt(argc, argv, "--dp-epsilon")) {
    fprintf(stderr, "damo train: give --dp-noise or --dp-epsilon, not both (the target epsilon decides the noise)\n");
    return -1;
  }
  if (!sweep && !cli_opt(argc, argv, "--dp-noise") && !cli_opt(argc, argv, "--dp-epsilon")) {
    fprintf(stderr, "damo train: --dp-clip needs --dp-noise SIGMA or --dp-epsilon EPS (clipping alone protects nothing)\n");
    return -1;
  }
  if ((v = cli_opt(argc, argv, "--dp-sampling")) && !one_of(v, "--dp-sampling", "poisson", "shuffle", &o->sampling))
    return -1;
  if ((v = cli_opt(argc, argv, "--dp-accountant")) && !one_of(v, "--dp-accountant", "rdp", "balle2020", &o->conversion))
    return -1;
  if ((v = cli_opt(argc, argv, "--dp-physical-batch"))) {
    if (!cli_parse_long(v, "--dp-physical-batch", 1, 1 << 20, &n)) return -1;
    o->physical_batch = n;
  }
  return 1;
}

void cli_privacy_report(const damo_dp_options *o) {
  printf("privacy: epsilon %.4g at delta %g after %lld DP-SGD steps (clip %g, noise multiplier %.4g%s, sampling rate %.4g, "
         "%s sampling, %s accountant, order %g)\n",
         o->epsilon, o->delta, (long long)o->steps, o->clip, o->used_noise, o->target_epsilon > 0 ? " for the target" : "",
         o->sample_rate, damo_dp_sampling_name(o->sampling), damo_dp_conversion_name(o->conversion), o->best_order);
  if (o->sampling == DAMO_DP_SHUFFLE)
    printf("privacy: the batches were a shuffled order's, not Poisson samples: the accountant's epsilon assumes Poisson "
           "sampling and does not bound this run\n");
}

damo_status cli_privacy_save(const char *folder, const damo_dp_options *o, int64_t examples) {
  cJSON *j = cJSON_CreateObject();
  if (!j) return damo_error(DAMO_ERR_NOMEM, "privacy.json: out of memory");
  cJSON_AddStringToObject(j, "mechanism", "DP-SGD");
  cJSON_AddNumberToObject(j, "epsilon", o->epsilon);
  cJSON_AddNumberToObject(j, "delta", o->delta);
  cJSON_AddStringToObject(j, "accountant", damo_dp_conversion_name(o->conversion));
  cJSON_AddNumberToObject(j, "order", isfinite(o->best_order) ? o->best_order : 0);
  cJSON_AddNumberToObject(j, "clip", o->clip);
  cJSON_AddNumberToObject(j, "noise_multiplier", o->used_noise);
  if (o->target_epsilon > 0) cJSON_AddNumberToObject(j, "target_epsilon", o->target_epsilon);
  cJSON_AddStringToObject(j, "sampling", damo_dp_sampling_name(o->sampling));
  cJSON_AddNumberToObject(j, "sample_rate", o->sample_rate);
  cJSON_AddNumberToObject(j, "steps", (double)o->steps);
  cJSON_AddNumberToObject(j, "examples", (double)examples);
  char *text = cJSON_Print(j);
  cJSON_Delete(j);
  if (!text) return damo_error(DAMO_ERR_NOMEM, "privacy.json: out of memory");
  char path[4096];
  snprintf(path, sizeof path, "%s/privacy.json", folder);
  damo_status st = damo_write_file_atomic(path, text, strlen(text));
  free(text);
  return st;
}

int cli_privacy_show(const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/privacy.json", dir);
  if (access(path, F_OK) != 0) return 1;
  cJSON *j;
  if (damo_json_read_file(path, 0, &j) != DAMO_OK) return cli_fail("summary: the privacy record") == 0;
  const cJSON *e = cJSON_GetObjectItem(j, "epsilon"), *d = cJSON_GetObjectItem(j, "delta");
  const cJSON *s = cJSON_GetObjectItem(j, "sampling"), *a = cJSON_GetObjectItem(j, "accountant");
  const cJSON *c = cJSON_GetObjectItem(j, "clip"), *z = cJSON_GetObjectItem(j, "noise_multiplier");
  const cJSON *n = cJSON_GetObjectItem(j, "steps"), *q = cJSON_GetObjectItem(j, "sample_rate");
  int ok = cJSON_IsNumber(e) && cJSON_IsNumber(d) && cJSON_IsString(s) && cJSON_IsString(a) && cJSON_IsNumber(c) &&
           cJSON_IsNumber(z) && cJSON_IsNumber(n) && cJSON_IsNumber(q);
  if (!ok) fprintf(stderr, "damo summary: %s lacks one of epsilon, delta, sampling, accountant, clip, noise_multiplier, "
                   "steps, sample_rate\n", path);
  else
    printf("Differential privacy: (epsilon %.4g, delta %g) by DP-SGD over %.0f steps: clip %g, noise multiplier %.4g, "
           "%s sampling at rate %.4g, %s accountant%s\n",
           e->valuedouble, d->valuedouble, n->valuedouble, c->valuedouble, z->valuedouble, s->valuestring,
           q->valuedouble, a->valuestring,
           strcmp(s->valuestring, "shuffle") ? "" : " (shuffled batches: the figure assumes Poisson sampling)");
  cJSON_Delete(j);
  return ok;
}

#define MAX_SWEEP 16

int cli_privacy_sweep_parse(const char *v, double *eps, int *n) {
  *n = 0;
  for (const char *at = v; *at;) {
    char *end;
    const double d = strtod(at, &end);
    if (end == at || !(d > 0 && isfinite(d)) || (*n && !(d > eps[*n - 1])) || *n == MAX_SWEEP || (*end && *end != ',')) {
      fprintf(stderr, "damo train: --dp-sweep takes up to %d increasing epsilons > 0 separated by commas, not '%s'\n",
              MAX_SWEEP, v);
      return 0;
    }
    eps[(*n)++] = d;
    at = *end ? end + 1 : end;
  }
  return *n > 0;
}

/* One model per target epsilon, each from the config's initial weights: the noise found,
 * the test figures, and (curve) a PNG of both against epsilon. Nothing is saved. */
int cli_privacy_sweep(const char *config, const damo_compile_options *copt, const damo_fit_options *fo,
                      const damo_dp_options *base, const double *eps, int n, const damo_tensor *x, const damo_tensor *y,
                      const damo_tensor *tx, const damo_tensor *ty, const char *curve) {
  float at[MAX_SWEEP], acc[MAX_SWEEP], loss[MAX_SWEEP];
  int rc = 0;
  for (int k = 0; k < n && rc == 0; k++) {
    damo_model *m = NULL;
    damo_dp_options dp = *base;
    dp.noise = 0, dp.target_epsilon = eps[k];
    damo_fit_options o = *fo;
    o.privacy = &dp, o.verbose = 0, o.checkpoint_dir = NULL, o.checkpoint_files = NULL, o.history_csv = NULL, o.resume = 0;
    const double t0 = cli_seconds();
    if (damo_model_from_config_file(config, &m) != DAMO_OK || damo_model_build(m, fo->seed) != DAMO_OK ||
        damo_model_compile(m, copt) != DAMO_OK || damo_model_fit(m, x, y, &o, NULL) != DAMO_OK ||
        damo_model_evaluate(m, tx, ty, 256, &loss[k], &acc[k]) != DAMO_OK)
      rc = cli_fail("train: --dp-sweep");
    at[k] = (float)eps[k];
    if (rc == 0)
      printf("epsilon %g (spent %.4g, noise multiplier %.4g): test accuracy %.4f, loss %.4f (%.0f s)\n", eps[k], dp.epsilon,
             dp.used_noise, acc[k], loss[k], cli_seconds() - t0);
    fflush(stdout);
    damo_model_free(m);
  }
  if (rc == 0 && curve) {
    const char *names[2] = {strrchr(config, '/') ? strrchr(config, '/') + 1 : config, NULL};
    char title[200];
    snprintf(title, sizeof title, "DP-SGD by epsilon (delta %g, clip %g)", base->delta ? base->delta : 1e-5, base->clip);
    if (damo_plot_series_png(curve, title, n, at, "epsilon", names, loss, NULL, acc, NULL) != DAMO_OK)
      rc = cli_fail("train: the --dp-curve");
    else
      printf("wrote %s\n", curve);
  }
  return rc;
}
