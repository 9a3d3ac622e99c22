/* gpt.c - GPT-2 on the command line: training from an HF-style config and sampling
 * (options: damo train --help, damo generate --help; past the context the window slides).
 *
 * gpt.json is a HuggingFace GPT-2 config.json (model_type "gpt2", n_layer, n_head, n_embd,
 * n_positions, vocab_size, ...) with an optional "train" object giving defaults for the
 * options below (steps, batch_size, seq_len, grad_accum, lr, min_lr, warmup_steps,
 * weight_decay, beta1, beta2, eps, clip_norm, eval_every, eval_windows, log_every,
 * checkpoint_every, seed); command-line options win. The output directory is a checkpoint
 * (see damo_gpt2_trainer_save) and a HuggingFace model directory that generate reads. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* The training options and the CLI-only cadences. */
typedef struct gpt_run {
  damo_gpt2_train_options opt;
  long eval_every, log_every, checkpoint_every;
  int64_t private_examples; /* DP-SGD: the disjoint windows */
} gpt_run;

/* The config's "train" object (defaults for the options, command-line options win) and,
 * when model is not NULL, the model's sizes: one read of the file, through the library's
 * config reader. An unknown key in "train" is an error (a typo would leave a default in
 * force); the rest of the file is HuggingFace's config.json, whose extra keys are fine.
 * 0 after printing what is wrong. */
static int read_train_object(const char *path, gpt_run *r, damo_gpt2_config *model) {
  damo_config *c = NULL;
  damo_config_obj *root, *train = NULL;
  damo_status st = damo_config_read_file(path, &c);
  if (st == DAMO_OK) st = damo_config_root(c, &root);
  if (st == DAMO_OK) st = damo_config_get_object(root, "train", 0, &train);
  damo_gpt2_train_options *o = &r->opt;
  int64_t v[10] = {o->steps, o->batch_size, o->seq_len, o->grad_accum, o->warmup_steps, o->eval_windows,
                   (int64_t)o->seed, r->eval_every, r->log_every, r->checkpoint_every};
  static const struct {
    const char *key;
    int64_t lo, hi;
  } ints[10] = {{"steps", 1, 1000000000},      {"batch_size", 1, 1 << 20},       {"seq_len", 1, 1 << 20},
                {"grad_accum", 1, 1 << 20},    {"warmup_steps", 0, 1000000000},  {"eval_windows", 1, 1 << 20},
                {"seed", 0, 2147483647},       {"eval_every", 0, 1000000000},    {"log_every", 1, 1000000000},
                {"checkpoint_every", 0, 1000000000}};
  for (int k = 0; k < 10 && train && st == DAMO_OK; k++)
    st = damo_config_get_int(train, ints[k].key, ints[k].lo, ints[k].hi, 0, &v[k]);
  struct {
    const char *key;
    double lo, hi;
    unsigned flags;
    float *field;
  } floats[7] = {{"lr", 0, 10, DAMO_CFG_LO_OPEN, &o->lr},        {"min_lr", 0, 10, 0, &o->min_lr},
                 {"weight_decay", 0, 10, 0, &o->weight_decay},    {"beta1", 0, 1, 0, &o->beta1},
                 {"beta2", 0, 1, 0, &o->beta2},                   {"eps", 0, 1, DAMO_CFG_LO_OPEN, &o->eps},
                 {"clip_norm", 0, 1e9, 0, &o->clip_norm}};
  for (int k = 0; k < 7 && train && st == DAMO_OK; k++)
    st = damo_config_get_float(train, floats[k].key, floats[k].lo, floats[k].hi, floats[k].flags, floats[k].field);
  if (st == DAMO_OK) st = damo_config_close(train);
  /* only a default floor above a given peak is lowered to it */
  if (st == DAMO_OK && train && damo_config_type_of(train, "min_lr") && damo_config_type_of(train, "lr") &&
      o->min_lr > o->lr)
    st = damo_config_fail(train, "min_lr", DAMO_ERR_FORMAT, "%g is above \"lr\" %g", (double)o->min_lr, (double)o->lr);
  if (st == DAMO_OK && model) st = damo_gpt2_config_read(c, model);
  damo_config_free(c);
  if (st != DAMO_OK) {
    fprintf(stderr, "damo train: %s\n", damo_last_error());
    return 0;
  }
  o->steps = v[0], o->batch_size = v[1], o->seq_len = v[2], o->grad_accum = v[3], o->warmup_steps = v[4];
  o->eval_windows = v[5], o->seed = (uint64_t)v[6];
  r->eval_every = (long)v[7], r->log_every = (long)v[8], r->checkpoint_every = (long)v[9];
  return 1;
}

/* Command-line overrides; 0 after printing what is wrong. */
static int read_train_flags(int argc, char **argv, gpt_run *r) {
  const char *v;
  long n;
  double d;
  struct {
    const char *name;
    int64_t *field;
    long lo;
  } ints[] = {{"--steps", &r->opt.steps, 1}, {"--batch-size", &r->opt.batch_size, 1}, {"--seq-len", &r->opt.seq_len, 1},
              {"--grad-accum", &r->opt.grad_accum, 1}, {"--warmup-steps", &r->opt.warmup_steps, 0}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    if ((v = cli_opt(argc, argv, ints[i].name))) {
      if (!cli_parse_long(v, ints[i].name, ints[i].lo, 1L << 30, &n)) return 0;
      *ints[i].field = n;
    }
  if ((v = cli_opt(argc, argv, "--seed"))) {
    if (!cli_parse_long(v, "--seed", 0, 0x7fffffffL, &n)) return 0;
    r->opt.seed = (uint64_t)n;
  }
  if ((v = cli_opt(argc, argv, "--eval-every"))) {
    if (!cli_parse_long(v, "--eval-every", 0, 1L << 30, &r->eval_every)) return 0;
  }
  if ((v = cli_opt(argc, argv, "--log-every"))) {
    if (!cli_parse_long(v, "--log-every", 1, 1L << 30, &r->log_every)) return 0;
  }
  if ((v = cli_opt(argc, argv, "--checkpoint-every"))) {
    if (!cli_parse_long(v, "--checkpoint-every", 0, 1L << 30, &r->checkpoint_every)) return 0;
  }
  if ((v = cli_opt(argc, argv, "--lr"))) {
    if (!cli_parse_double(v, "--lr", 0, 1, HUGE_VAL, &d)) return 0;
    /* keep the floor in the same proportion to the peak */
    r->opt.min_lr = (float)((double)r->opt.min_lr * d / (double)r->opt.lr);
    r->opt.lr = (float)d;
  }
  return 1;
}

static damo_status set_trainable(void *m, const char *patterns, int trainable) {
  return damo_gpt2_set_trainable(m, patterns, trainable);
}

/* What is about to be trained, on what, and how. */
static void print_header(const damo_gpt2_config *c, const damo_gpt2 *m, const damo_token_data *data, const gpt_run *r,
                         const char *spec) {
  const damo_gpt2_train_options *o = &r->opt;
  printf("%s\n", damo_info_string());
  printf("GPT-2: %d layers, %d heads, width %d, context %d, vocab %d: %lld parameters\n", c->n_layer, c->n_head,
         c->n_embd, c->n_positions, c->vocab_size, (long long)damo_gpt2_num_params(m));
  printf("data %s: %lld tokens, %lld train, %lld validation (the last 10%%)\n", spec, (long long)data->n_tokens,
         (long long)data->n_train, (long long)(data->n_tokens - data->n_train));
  printf("steps %lld, batch %lld x accum %lld x T %lld = %lld tokens/step; AdamW lr %g -> %g (warm-up %lld, cosine), "
         "wd %g (2-D only), betas (%g, %g), clip %g, seed %llu\n",
         (long long)o->steps, (long long)o->batch_size, (long long)o->grad_accum, (long long)o->seq_len,
         (long long)(o->batch_size * o->grad_accum * o->seq_len), (double)o->lr, (double)o->min_lr,
         (long long)o->warmup_steps, (double)o->weight_decay, (double)o->beta1, (double)o->beta2,
         (double)o->clip_norm, (unsigned long long)o->seed);
  fflush(stdout);
}

/* The run's output and checkpoints, from the training loop's events. tokens/s counts
 * training time only: validation and checkpoint time is taken out of the window. */
typedef struct gpt_output {
  damo_gpt2_trainer *t;
  damo_history *history;
  const damo_dp_options *privacy; /* DP-SGD: epsilon at each validation, privacy.json */
  int64_t private_examples;
  const char *out;
  int64_t tokens_per_step, window_steps;
  double window_start, paused;
} gpt_output;

static damo_status gpt_validate(void *ctx, double *row) {
  gpt_output *o = ctx;
  double start = cli_seconds();
  float val;
  damo_status st = damo_gpt2_trainer_eval(o->t, &val);
  row[DAMO_H_VAL_LOSS] = val;
  double eps; /* DP-SGD: the epsilon column */
  if (st == DAMO_OK && o->privacy && (st = damo_gpt2_trainer_epsilon(o->t, &eps)) == DAMO_OK) row[DAMO_HISTORY_COLUMNS] = eps;
  o->paused += cli_seconds() - start;
  return st;
}

/* history.csv (step, loss, val_loss, lr of every validation so far) and history.png in the checkpoint. */
static damo_status gpt_files(void *ctx, const char *folder) {
  char path[4096];
  const damo_history *h = ((gpt_output *)ctx)->history;
  snprintf(path, sizeof path, "%s/history.csv", folder);
  damo_status st = damo_history_csv_write(h, path);
  snprintf(path, sizeof path, "%s/history.png", folder);
  if (st == DAMO_OK) cli_write_history_png(h, path, "GPT-2", 1); /* curves are a courtesy: a failure is printed */
  gpt_output *o = ctx;
  double eps;
  if (st == DAMO_OK && o->privacy && (st = damo_gpt2_trainer_epsilon(o->t, &eps)) == DAMO_OK)
    st = cli_privacy_save(folder, o->privacy, o->private_examples);
  return st;
}

static damo_status gpt_checkpoint(void *ctx, const damo_train_event *e) {
  gpt_output *o = ctx;
  double start = cli_seconds();
  damo_status st = damo_gpt2_trainer_checkpoint(o->t, o->out, e, gpt_files, o);
  if (st != DAMO_OK) return st; /* "checkpoint at step N: ..." */
  printf("checkpoint: step %lld -> %s\n", (long long)e->step, o->out);
  fflush(stdout);
  o->paused += cli_seconds() - start;
  return DAMO_OK;
}

static damo_status gpt_event(void *ctx, const damo_train_event *e) {
  gpt_output *o = ctx;
  if (e->kind == DAMO_EVENT_STEP) {
    const double now = cli_seconds(), seconds = now - o->window_start - o->paused;
    const int64_t steps = e->step - o->window_steps;
    printf("step %6lld/%lld | loss %.4f | lr %.3e | grad norm %.3f | %.0f tokens/s\n", (long long)e->step,
           (long long)e->steps, (double)e->report->loss, (double)e->report->lr, (double)e->report->grad_norm,
           (double)(steps * o->tokens_per_step) / seconds);
    o->window_start = now, o->paused = 0, o->window_steps = e->step;
  } else if (e->kind == DAMO_EVENT_VALIDATION) {
    printf("step %6lld | val loss %.4f", (long long)e->step, e->figures[DAMO_H_VAL_LOSS]);
    if (o->privacy) printf(" | epsilon %.4g", e->figures[DAMO_HISTORY_COLUMNS]); /* gpt_validate's column */
    printf("\n");
  }
  fflush(stdout);
  return DAMO_OK;
}

static int run_training(damo_gpt2_trainer *t, const gpt_run *r, const char *out) {
  const double t0 = cli_seconds();
  gpt_output o = {.t = t, .out = out, .tokens_per_step = r->opt.batch_size * r->opt.grad_accum * r->opt.seq_len,
                  .window_steps = damo_gpt2_trainer_steps_done(t), .window_start = t0, .privacy = r->opt.privacy,
                  .private_examples = r->private_examples};
  damo_train_loop loop = {.steps = r->opt.steps, .log_every = r->log_every, .validate_every = r->eval_every,
                          .validate_first = r->eval_every > 0, .checkpoint_every = r->checkpoint_every};
  damo_train_hooks hooks = {.ctx = &o, .validate = gpt_validate, .checkpoint = gpt_checkpoint, .on_event = gpt_event};
  const char *const epsilon[1] = {"epsilon"}; /* DP-SGD: a column of the history */
  loop.n_extra = r->opt.privacy ? 1 : 0, loop.extra_columns = epsilon;
  o.history = damo_history_create(0);
  if (!o.history) return cli_fail("train");
  damo_status st = damo_trainer_run(damo_gpt2_trainer_core(t), &loop, &hooks, o.history);
  damo_history_free(o.history);
  if (st != DAMO_OK) return cli_fail("train");
  double eps;
  if (r->opt.privacy && damo_gpt2_trainer_epsilon(t, &eps) == DAMO_OK) cli_privacy_report(r->opt.privacy);
  printf("done in %.1f s\n", cli_seconds() - t0);
  return 0;
}

int cli_train_gpt2(int argc, char **argv) {
  const char *config = cli_opt(argc, argv, "--config"), *spec = cli_opt(argc, argv, "--data");
  const char *out = cli_opt(argc, argv, "--out");
  if (!config || !spec || !out) {
    fprintf(stderr, "damo train: a GPT-2 config needs --config FILE, --data moby-dick|sotu|FILE and --out DIR\n");
    return 2;
  }
  gpt_run r = {damo_gpt2_train_defaults(), 100, 10, 0, 0};
  damo_gpt2_config cfg;
  if (!read_train_object(config, &r, &cfg) || !read_train_flags(argc, argv, &r)) return 2;
  damo_dp_options privacy;
  const int private_run = cli_privacy_options(argc, argv, &privacy, "GPT-2");
  if (private_run < 0) return 2;
  r.opt.privacy = private_run ? &privacy : NULL;
  cli_warn_warmup(r.opt.steps, r.opt.warmup_steps);
  if (r.opt.min_lr > r.opt.lr) r.opt.min_lr = r.opt.lr;

  damo_bpe *bpe = NULL;
  damo_token_data *data = NULL;
  damo_gpt2 *m = NULL;
  damo_gpt2_trainer *t = NULL;
  damo_dir_lock *lock = NULL;
  int rc = 1;
  /* Held for the whole run: a second run into out is refused, and an unwritable out fails
   * before training rather than at the first checkpoint. */
  damo_data_parallel_options dp;
  if (!cli_data_parallel_options(argc, argv, &dp)) return 2;
  if (cli_rank() == 0 && damo_dir_lock_acquire(out, &lock) != DAMO_OK) { /* rank 0 writes */
    rc = cli_fail("train: the output directory");
    goto done;
  }
  if (damo_bpe_load(cli_opt(argc, argv, "--vocab"), &bpe) != DAMO_OK) {
    rc = cli_fail("train: loading the GPT-2 tokenizer");
    goto done;
  }
  const char *init = cli_opt(argc, argv, "--init");
  if (init ? damo_gpt2_load(init, &m) != DAMO_OK : damo_gpt2_new(&cfg, r.opt.seed, &m) != DAMO_OK) {
    rc = cli_fail(init ? "train --init" : "train");
    goto done;
  }
  cfg = *damo_gpt2_get_config(m); /* --init: the directory's shape */
  if (damo_bpe_vocab_size(bpe) > cfg.vocab_size) {
    fprintf(stderr, "damo train: the %s vocab_size %d is smaller than the tokenizer's %d ids\n",
            init ? "initial model's" : "config's", cfg.vocab_size, damo_bpe_vocab_size(bpe));
    goto done;
  }
  if (damo_token_data_load(spec, bpe, &data) != DAMO_OK ||
      damo_gpt2_set_recompute(m, cli_flag(argc, argv, "--recompute")) != DAMO_OK) {
    rc = cli_fail("train");
    goto done;
  }
  if (!cli_freeze_options(argc, argv, set_trainable, m)) {
    rc = 2;
    goto done;
  }
  if (damo_gpt2_trainer_new(m, data, &r.opt, &t) != DAMO_OK ||
      damo_gpt2_trainer_set_data_parallel(t, cli_world(), &dp) != DAMO_OK) {
    rc = cli_fail("train");
    goto done;
  }
  /* after the settings were checked against the model and data: those errors come first */
  if (cli_rank() == 0 &&
      (rc = cli_check_out(out, cli_flag(argc, argv, "--resume"), cli_flag(argc, argv, "--overwrite"))) != 0)
    goto done;
  rc = 1;
  r.private_examples = data->n_train / (r.opt.seq_len + 1);
  print_header(&cfg, m, data, &r, spec);
  if (init) printf("initial weights: %s\n", init);
  cli_print_trained(argc, argv, damo_gpt2_num_trainable_params(m), damo_gpt2_num_params(m));
  if (r.opt.privacy)
    printf("DP-SGD: %lld disjoint windows of %lld tokens, each in a step with probability %.4g; clip %g, noise "
           "multiplier %.4g, delta %g\n", (long long)r.private_examples, (long long)(r.opt.seq_len + 1),
           privacy.sample_rate, privacy.clip, privacy.used_noise, privacy.delta);
  if (cli_flag(argc, argv, "--resume")) {
    if (damo_gpt2_trainer_resume(t, out) != DAMO_OK) {
      rc = cli_fail("train --resume");
      goto done;
    }
    printf("resumed from %s at step %lld\n", out, (long long)damo_gpt2_trainer_steps_done(t));
  }
  rc = run_training(t, &r, out);
done:
  damo_dir_lock_release(lock);
  damo_gpt2_trainer_free(t);
  damo_gpt2_free(m);
  damo_token_data_free(data);
  damo_bpe_free(bpe);
  return rc;
}

/* ------------------------------------------------------------------ bench (W4) */

/* `damo bench gpt2 --config FILE --init DIR [--steps N] [--probe-steps P] [--recompute]`: damo's
 * side of W4 and W6. Writes the initial weights (a HuggingFace directory) and the Moby Dick tokens
 * (tokens.bin, little-endian int32) to DIR for bench/torch_gpt2.py, then prints one JSON
 * object: the validation loss at the initial weights (PyTorch must agree before speed is
 * compared), every step's seconds, and after the whole budget the validation loss and the
 * peak RSS. --probe-steps trains only that many steps (no final validation). */
int cli_bench_gpt2(int argc, char **argv) {
  const char *config = cli_opt(argc, argv, "--config"), *init = cli_opt(argc, argv, "--init");
  long steps = 0, probe = 0;
  if (!config || !init) {
    fprintf(stderr, "damo bench gpt2: --config FILE and --init DIR are required\n");
    return 2;
  }
  if ((cli_opt(argc, argv, "--steps") && !cli_parse_long(cli_opt(argc, argv, "--steps"), "--steps", 1, 1L << 30, &steps)) ||
      (cli_opt(argc, argv, "--probe-steps") &&
       !cli_parse_long(cli_opt(argc, argv, "--probe-steps"), "--probe-steps", 1, 1L << 30, &probe)))
    return 2;
  gpt_run r = {damo_gpt2_train_defaults(), 100, 10, 0, 0};
  damo_gpt2_config cfg;
  if (!read_train_object(config, &r, &cfg)) return 2;
  if (steps) r.opt.steps = steps;
  damo_bpe *bpe = NULL;
  damo_token_data *data = NULL;
  damo_gpt2 *m = NULL;
  damo_gpt2_trainer *t = NULL;
  double *seconds = NULL;
  float *losses = NULL;
  int rc = 1;
  char path[4096];
  snprintf(path, sizeof path, "%s/tokens.bin", init);
  damo_data_parallel_options dp;
  if (!cli_data_parallel_options(argc, argv, &dp)) return 2;
  const int writer = cli_rank() == 0;
  if (damo_bpe_load(NULL, &bpe) != DAMO_OK ||
      damo_token_data_load("moby-dick", bpe, &data) != DAMO_OK || damo_gpt2_new(&cfg, r.opt.seed, &m) != DAMO_OK ||
      damo_gpt2_set_recompute(m, cli_flag(argc, argv, "--recompute")) != DAMO_OK ||
      (writer && damo_gpt2_save(m, init) != DAMO_OK) ||
      (writer && damo_write_file_atomic(path, data->ids, (size_t)data->n_tokens * sizeof *data->ids) != DAMO_OK) ||
      damo_gpt2_trainer_new(m, data, &r.opt, &t) != DAMO_OK ||
      damo_gpt2_trainer_set_data_parallel(t, cli_world(), &dp) != DAMO_OK) {
    rc = cli_fail("bench gpt2");
    goto done;
  }
  float first_loss, val_loss = NAN;
  if (damo_gpt2_trainer_eval(t, &first_loss) != DAMO_OK) {
    rc = cli_fail("bench gpt2");
    goto done;
  }
  const long n_steps = probe ? probe : (long)r.opt.steps;
  if (!(seconds = malloc((size_t)n_steps * sizeof *seconds)) || !(losses = malloc((size_t)n_steps * sizeof *losses)))
    goto done;
  damo_gpt2_step_report rep = {0};
  for (long s = 0; s < n_steps; s++) {
    double t0 = cli_seconds();
    if (damo_gpt2_trainer_step(t, &rep) != DAMO_OK) {
      rc = cli_fail("bench gpt2");
      goto done;
    }
    seconds[s] = cli_seconds() - t0;
    losses[s] = rep.loss;
  }
  if (!probe && damo_gpt2_trainer_eval(t, &val_loss) != DAMO_OK) {
    rc = cli_fail("bench gpt2");
    goto done;
  }
  printf("{\"threads\": %d, \"simd\": \"%s\", \"first_loss\": %.7f, \"steps\": %ld, \"tokens_per_step\": %lld, "
         "\"step_seconds\": [",
         damo_num_threads(), damo_simd_path(), (double)first_loss, n_steps,
         (long long)(r.opt.batch_size * r.opt.seq_len * r.opt.grad_accum));
  for (long s = 0; s < n_steps; s++) printf("%s%.5f", s ? ", " : "", seconds[s]);
  printf("], \"last_train_loss\": %.5f", (double)rep.loss);
  if (!probe) printf(", \"val_loss\": %.5f", (double)val_loss);
  cli_print_parallel_json(damo_gpt2_trainer_core(t));
  cli_bench_finish(seconds, losses, n_steps);
  rc = 0;
done:
  free(seconds);
  free(losses);
  damo_gpt2_trainer_free(t);
  damo_gpt2_free(m);
  damo_token_data_free(data);
  damo_bpe_free(bpe);
  return rc;
}

/* ------------------------------------------------------------------ generate */

static int parse_sampling(int argc, char **argv, damo_gpt2_sampling *s, long *max_new) {
  const char *v;
  double d;
  long n;
  if ((v = cli_opt(argc, argv, "--max-new-tokens")) && !cli_parse_long(v, "--max-new-tokens", 0, 1L << 20, max_new))
    return 0;
  if ((v = cli_opt(argc, argv, "--temperature"))) {
    if (!cli_parse_double(v, "--temperature (0 = greedy)", 0, 0, HUGE_VAL, &d)) return 0;
    s->temperature = (float)d;
  }
  if ((v = cli_opt(argc, argv, "--top-k"))) {
    if (!cli_parse_long(v, "--top-k", 0, 1L << 30, &n)) return 0;
    s->top_k = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--top-p"))) {
    if (!cli_parse_double(v, "--top-p (0 or 1 = off)", 0, 0, 1, &d)) return 0;
    s->top_p = (float)d;
  }
  if ((v = cli_opt(argc, argv, "--seed"))) {
    if (!cli_parse_long(v, "--seed", 0, 0x7fffffffL, &n)) return 0;
    s->seed = (uint64_t)n;
  }
  return 1;
}

/* Generates n_new ids after history[0..n_prompt) into history[n_prompt..). Once the context
 * is full the window slides: the cache is refilled with the last half-context of ids and generation
 * continues (chunk k seeds its sampler with seed + k, so a seed still repeats). */
static int generate_sliding(damo_gpt2 *m, int32_t *history, int64_t n_prompt, int64_t n_new, int64_t context,
                            const damo_gpt2_sampling *s) {
  int64_t len = n_prompt, chunk_index = 0;
  while (len < n_prompt + n_new) {
    int64_t remaining = n_prompt + n_new - len;
    int64_t keep = len < context ? len : context / 2; /* the whole history while it fits */
    int64_t chunk = remaining < context - keep ? remaining : context - keep;
    damo_gpt2_sampling cs = *s;
    cs.seed = s->seed + (uint64_t)chunk_index++;
    if (damo_gpt2_generate(m, history + len - keep, keep, chunk, &cs, history + len) != DAMO_OK) return 1;
    len += chunk;
  }
  return 0;
}

int cli_generate(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *prompt = cli_opt(argc, argv, "--prompt");
  if (!dir || !prompt) {
    fprintf(stderr, "damo generate: --model DIR and --prompt TEXT are required\n");
    return 2;
  }
  damo_gpt2_sampling s = damo_gpt2_sampling_default();
  long max_new = 50;
  if (!parse_sampling(argc, argv, &s, &max_new)) return 2;

  damo_bpe *bpe = NULL;
  damo_gpt2 *m = NULL;
  int32_t *ids = NULL;
  char *text = NULL;
  int64_t n_ids = 0;
  int rc = 1;
  if (damo_bpe_load(cli_opt(argc, argv, "--vocab"), &bpe) != DAMO_OK) {
    rc = cli_fail("generate: loading the GPT-2 tokenizer");
    goto done;
  }
  /* main.c checked --precision and set the matmuls' precision; the decoder's weights follow. */
  const int bf16 = damo_get_matmul_precision() == DAMO_MATMUL_BF16;
  if (damo_gpt2_load(dir, &m) != DAMO_OK || damo_gpt2_set_inference_precision(m, bf16 ? DAMO_BF16 : DAMO_F32) != DAMO_OK) {
    rc = cli_fail("generate");
    goto done;
  }
  if (damo_bpe_encode(bpe, prompt, strlen(prompt), &ids, &n_ids) != DAMO_OK) {
    rc = cli_fail("generate: encoding the prompt");
    goto done;
  }
  if (n_ids == 0) { /* an empty prompt starts from <|endoftext|>, as GPT-2 was trained */
    int32_t eot = damo_bpe_token_id(bpe, "<|endoftext|>");
    ids = malloc(sizeof *ids);
    if (!ids || eot < 0) {
      fprintf(stderr, "damo generate: an empty prompt needs <|endoftext|> in the vocabulary\n");
      goto done;
    }
    ids[0] = eot;
    n_ids = 1;
  }
  int64_t context = damo_gpt2_get_config(m)->n_positions;
  if (n_ids >= context) {
    fprintf(stderr, "damo generate: the prompt is %lld tokens; the model's context is %lld\n", (long long)n_ids,
            (long long)context);
    goto done;
  }
  /* history = prompt + generated ids; out points at the generated part */
  int32_t *history = realloc(ids, (size_t)(n_ids + max_new + 1) * sizeof *ids);
  if (!history) goto done;
  ids = history;
  const double t0 = cli_seconds();
  if (generate_sliding(m, history, n_ids, max_new, context, &s) != 0) {
    rc = cli_fail("generate");
    goto done;
  }
  const double seconds = cli_seconds() - t0;
  const int32_t *generated = history + n_ids;
  size_t len = 0;
  if (damo_bpe_decode(bpe, generated, max_new, &text, &len) != DAMO_OK) {
    rc = cli_fail("generate: decoding");
    goto done;
  }
  fputs(prompt, stdout);
  fwrite(text, 1, len, stdout);
  putchar('\n');
  /* on stderr, so the text alone can be piped; after the text when both go to one place */
  fflush(stdout);
  fprintf(stderr, "%ld tokens in %.2f s (%.1f tokens/s, prompt %lld tokens, %s weights, KV cache)\n", max_new, seconds,
          seconds > 0 ? (double)max_new / seconds : 0.0, (long long)n_ids,
          damo_gpt2_block_format(m) ? damo_block_format_name(damo_gpt2_block_format(m))
          : damo_gpt2_is_int8(m)   ? "int8 (dynamic)"
          : bf16                   ? "bf16"
                                   : "f32");
  rc = 0;
done:
  free(text);
  free(ids);
  damo_gpt2_free(m);
  damo_bpe_free(bpe);
  return rc;
}
