/* bert.c - BERT on the command line (options: damo train --help). damo train --pretrain:
 * masked-LM pre-training on texts (spam-assassin: its training split only) tokenised with
 * WordPiece and joined with [SEP]. damo train: fine-tunes the classifier on [CLS] text [SEP]
 * (head+tail cut with --head-tokens) from --init or from scratch, keeping the epoch with the
 * best validation F1, then scores the test split once. Encoding, predict and evaluate of a
 * fine-tuned directory (raw e-mails) are in bert_text.c.
 *
 * bert.json is a HuggingFace BERT config.json with optional "pretrain" and "finetune"
 * objects (steps/epochs, batch_size, seq_len, head_tokens, predictions, lr, min_lr,
 * warmup_steps, weight_decay, log_every, eval_every, seed) giving defaults; command-line options win. The
 * output directory is a HuggingFace BERT directory plus vocab.txt. */
#include "bert_text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct bert_run {
  damo_bert_train_options opt;
  long epochs, log_every, eval_every;
  long head_tokens; /* fine-tuning: head+tail truncation keeping this many first tokens; -1 off */
  long checkpoint_every; /* -1: pre-training checkpoints at each validation, fine-tuning at epoch ends */
} bert_run;

/* Numbers of the config's "pretrain" or "finetune" object and, unless the model comes from
 * --init, the model config itself into *model: one read of the file, through the library's config
 * reader. Each key has its range (a rate must be above 0, counts are integers); an unknown
 * key is an error, as a typo would otherwise leave the default in force unnoticed. The
 * rest of the file is HuggingFace's config.json, whose extra keys are fine. 0 after
 * printing what is wrong. */
static int read_section(const char *path, const char *section, const char *init, bert_run *r,
                        damo_bert_config *model) {
  damo_config *c = NULL;
  damo_config_obj *root, *obj = NULL;
  damo_status st = damo_config_read_file(path, &c);
  if (st == DAMO_OK) st = damo_config_root(c, &root);
  if (st == DAMO_OK) st = damo_config_get_object(root, section, 0, &obj);
  int64_t v[9] = {r->opt.steps, r->epochs,    r->opt.batch_size,    r->opt.seq_len,    r->opt.predictions,
                  r->opt.warmup_steps, r->log_every, r->eval_every, (int64_t)r->opt.seed};
  static const struct {
    const char *key;
    int64_t lo, hi;
  } ints[9] = {{"steps", 1, 1000000000},       {"epochs", 1, 100000},        {"batch_size", 1, 1 << 20},
               {"seq_len", 2, 1 << 16},        {"predictions", 1, 1 << 16},  {"warmup_steps", 0, 1000000000},
               {"log_every", 1, 1000000000},   {"eval_every", 0, 1000000000}, {"seed", 0, 2147483647}};
  for (int k = 0; k < 9 && obj && st == DAMO_OK; k++)
    st = damo_config_get_int(obj, ints[k].key, ints[k].lo, ints[k].hi, 0, &v[k]);
  const unsigned open = DAMO_CFG_LO_OPEN | DAMO_CFG_HI_OPEN;
  if (obj && st == DAMO_OK) st = damo_config_get_float(obj, "lr", 0, 10, DAMO_CFG_LO_OPEN, &r->opt.lr);
  if (obj && st == DAMO_OK) st = damo_config_get_float(obj, "min_lr", 0, 10, 0, &r->opt.min_lr);
  if (obj && st == DAMO_OK) st = damo_config_get_float(obj, "weight_decay", 0, 10, 0, &r->opt.weight_decay);
  if (obj && st == DAMO_OK) st = damo_config_get_float(obj, "mask_prob", 0, 1, open, &r->opt.mask_prob);
  int64_t head = r->head_tokens;
  if (obj && st == DAMO_OK) st = damo_config_get_int(obj, "head_tokens", 0, 1 << 16, 0, &head);
  if (st == DAMO_OK) st = damo_config_close(obj);
  if (st == DAMO_OK && !init) st = damo_bert_config_read(c, model);
  damo_config_free(c);
  if (st != DAMO_OK) {
    fprintf(stderr, "damo train: %s\n", damo_last_error());
    return 0;
  }
  r->opt.steps = v[0], r->epochs = (long)v[1], r->opt.batch_size = v[2], r->opt.seq_len = v[3];
  r->opt.predictions = v[4], r->opt.warmup_steps = v[5], r->log_every = (long)v[6], r->eval_every = (long)v[7];
  r->opt.seed = (uint64_t)v[8], r->head_tokens = (long)head;
  return 1;
}

static int read_flags(int argc, char **argv, bert_run *r) {
  long v;
  double d;
  const char *s;
  if ((s = cli_opt(argc, argv, "--steps"))) {
    if (!cli_parse_long(s, "--steps", 1, 1L << 30, &v)) return 0;
    r->opt.steps = v;
  }
  if ((s = cli_opt(argc, argv, "--epochs"))) {
    if (!cli_parse_long(s, "--epochs", 1, 100000, &v)) return 0;
    r->epochs = v;
  }
  if ((s = cli_opt(argc, argv, "--batch-size"))) {
    if (!cli_parse_long(s, "--batch-size", 1, 1 << 20, &v)) return 0;
    r->opt.batch_size = v;
  }
  if ((s = cli_opt(argc, argv, "--seq-len"))) {
    if (!cli_parse_long(s, "--seq-len", 2, 1 << 16, &v)) return 0;
    r->opt.seq_len = v;
  }
  if ((s = cli_opt(argc, argv, "--predictions"))) {
    if (!cli_parse_long(s, "--predictions", 1, 1 << 16, &v)) return 0;
    r->opt.predictions = v;
  }
  if ((s = cli_opt(argc, argv, "--warmup-steps"))) {
    if (!cli_parse_long(s, "--warmup-steps", 0, 1L << 30, &v)) return 0;
    r->opt.warmup_steps = v;
  }
  if ((s = cli_opt(argc, argv, "--head-tokens"))) {
    if (!cli_parse_long(s, "--head-tokens", 0, 1 << 16, &v)) return 0;
    r->head_tokens = v;
  }
  if ((s = cli_opt(argc, argv, "--seed"))) {
    if (!cli_parse_long(s, "--seed", 0, 0x7fffffffL, &v)) return 0;
    r->opt.seed = (uint64_t)v;
  }
  if ((s = cli_opt(argc, argv, "--lr"))) {
    if (!cli_parse_double(s, "--lr", 0, 1, 10, &d)) return 0;
    r->opt.lr = (float)d;
  }
  r->checkpoint_every = -1;
  if ((s = cli_opt(argc, argv, "--checkpoint-every"))) {
    if (!cli_parse_long(s, "--checkpoint-every", 1, 1L << 30, &v)) return 0;
    r->checkpoint_every = v;
  }
  if (r->log_every < 1) r->log_every = 20;
  return 1;
}

/* The model: from --init (heads it lacks initialised from the seed) or fresh from the
 * config read_section read. */
static damo_status make_model(const damo_bert_config *config, const char *init, int num_labels, uint64_t seed,
                              int recompute, damo_bert **m) {
  damo_bert_config c = *config;
  if (num_labels > 0) c.num_labels = num_labels;
  damo_status st = init ? damo_bert_load(init, num_labels, seed, m) : damo_bert_new(&c, seed, m);
  return st == DAMO_OK ? damo_bert_set_recompute(*m, recompute) : st; /* --recompute */
}

static damo_status set_trainable(void *m, const char *patterns, int trainable) {
  return damo_bert_set_trainable(m, patterns, trainable);
}


/* config.json, model.safetensors, vocab.txt and tokenizer_config.json (uncased, truncation
 * at seq_len, the length the weights were trained at, and head_tokens when head >= 0), as one
 * directory save: out holds the previous model or this one, never a mix. */
/* The model directory (HF files, vocab.txt, tokenizer_config.json) and, with state, a
 * checkpoint's trainer_state.safetensors, in one directory save. */
/* DP-SGD fine-tuning: what privacy.json records (NULL: a model trained without). */
static const damo_dp_options *saved_privacy;
static int64_t saved_examples;

static int save_model(const damo_bert *m, const damo_wordpiece *wp, const char *out, int64_t seq_len, long head,
                      const damo_tensor_dict *state, const damo_history *history, int by_step) {
  damo_dir_save *tx;
  if (damo_dir_save_begin(out, &tx) != DAMO_OK) return cli_fail("train: saving");
  const char *folder = damo_dir_save_folder(tx);
  char path[4096], text[256], head_line[64] = "";
  snprintf(path, sizeof path, "%s/vocab.txt", folder);
  damo_status st = damo_bert_save(m, folder);
  if (st == DAMO_OK) st = damo_wordpiece_save(wp, path);
  if (head >= 0) snprintf(head_line, sizeof head_line, ",\n  \"head_tokens\": %ld", head);
  snprintf(text, sizeof text,
           "{\n  \"tokenizer_class\": \"BertTokenizer\",\n  \"do_lower_case\": true,\n  \"model_max_length\": %lld%s\n}\n",
           (long long)seq_len, head_line);
  snprintf(path, sizeof path, "%s/tokenizer_config.json", folder);
  if (st == DAMO_OK) st = damo_write_file_atomic(path, text, strlen(text));
  snprintf(path, sizeof path, "%s/trainer_state.safetensors", folder);
  if (st == DAMO_OK && state) st = damo_safetensors_save(path, state, NULL, 0);
  snprintf(path, sizeof path, "%s/history.csv", folder);
  if (st == DAMO_OK && history) st = damo_history_csv_write(history, path);
  if (st == DAMO_OK && saved_privacy) st = cli_privacy_save(folder, saved_privacy, saved_examples);
  snprintf(path, sizeof path, "%s/history.png", folder);
  if (st == DAMO_OK && history) cli_write_history_png(history, path, by_step ? "BERT pre-training" : "BERT fine-tuning",
                                                      by_step);
  if (st == DAMO_OK) st = damo_dir_save_commit(tx);
  else damo_dir_save_abort(tx);
  if (st != DAMO_OK) return cli_fail("train: saving");
  if (!state) printf("saved %s (config.json, model.safetensors, vocab.txt, tokenizer_config.json)\n", out);
  return 0;
}

/* The vocabulary's special ids into the options, after checking every id fits the model's
 * embedding table; 0 after printing why not. */
int cli_bert_match_vocabulary(const damo_wordpiece *wp, const damo_bert *m, damo_bert_train_options *opt) {
  const int32_t n = damo_wordpiece_vocab_size(wp), V = damo_bert_get_config(m)->vocab_size;
  if (n > V) {
    fprintf(stderr, "damo: the vocabulary has %d tokens but the model's vocab_size is %d\n", (int)n, (int)V);
    return 0;
  }
  if (opt) {
    opt->cls_id = damo_wordpiece_token_id(wp, "[CLS]");
    opt->sep_id = damo_wordpiece_token_id(wp, "[SEP]");
    opt->mask_id = damo_wordpiece_token_id(wp, "[MASK]");
  }
  return 1;
}

/* Appends the WordPiece ids of text and a [SEP] to the stream. */
static damo_status append_ids(const damo_wordpiece *wp, const char *text, size_t len, int32_t **ids, int64_t *n,
                              int64_t *cap) {
  int32_t *piece;
  int64_t count;
  damo_status st = damo_wordpiece_tokenize(wp, text, len, &piece, &count);
  if (st != DAMO_OK) return st;
  if (*n + count + 1 > *cap) {
    int64_t c = *cap ? *cap : 1 << 20;
    while (c < *n + count + 1) c *= 2;
    int32_t *bigger = realloc(*ids, (size_t)c * sizeof *bigger);
    if (!bigger) {
      free(piece);
      fprintf(stderr, "damo train: out of memory for %lld tokens\n", (long long)c);
      return DAMO_ERR_NOMEM;
    }
    *ids = bigger, *cap = c;
  }
  memcpy(*ids + *n, piece, (size_t)count * sizeof *piece);
  *n += count;
  (*ids)[(*n)++] = damo_wordpiece_token_id(wp, "[SEP]");
  free(piece);
  return DAMO_OK;
}

/* The pre-training stream of a comma-separated list of corpora. */
static damo_status pretrain_stream(const char *spec, const damo_wordpiece *wp, int32_t **ids, int64_t *n) {
  char *list = strdup(spec), *save = NULL;
  int64_t cap = 0;
  *ids = NULL, *n = 0;
  damo_status st = list ? DAMO_OK : DAMO_ERR_NOMEM;
  for (char *name = list ? strtok_r(list, ",", &save) : NULL; name && st == DAMO_OK; name = strtok_r(NULL, ",", &save)) {
    const int64_t before = *n;
    if (cli_is_text_data(name)) { /* a labelled set: the training split's texts only */
      damo_text_dataset *d = NULL;
      damo_text_dataset_options o = {0};
      st = !strcmp(name, "spam-assassin") ? damo_text_dataset_load(name, &o, &d) : damo_text_folder_load(name, &o, &d);
      for (int64_t i = 0; st == DAMO_OK && i < d->n[DAMO_SPLIT_TRAIN]; i++)
        st = append_ids(wp, d->texts[DAMO_SPLIT_TRAIN][i], strlen(d->texts[DAMO_SPLIT_TRAIN][i]), ids, n, &cap);
      damo_text_dataset_free(d);
    } else {
      char *text = NULL;
      size_t len = 0;
      st = damo_corpus_text_load(name, &text, &len);
      if (st == DAMO_OK) st = append_ids(wp, text, len, ids, n, &cap);
      free(text);
    }
    if (st == DAMO_OK) printf("pre-training text %s: %lld WordPiece tokens\n", name, (long long)(*n - before));
  }
  free(list);
  return st;
}

/* The checkpoint state in out (--resume); 0 after printing why there is none. */
static int resume_state(const char *out, damo_tensor_dict **state) {
  char path[4096];
  snprintf(path, sizeof path, "%s/trainer_state.safetensors", out);
  if (damo_safetensors_load(path, state) == DAMO_OK) return 1;
  *state = NULL;
  cli_fail("train --resume");
  return 0;
}

/* Pre-training's output and saves, from the training loop's events (seq/s over training
 * time only). */
typedef struct pretrain_output {
  damo_bert_pretrainer *t;
  const damo_bert *m;
  const damo_wordpiece *wp;
  const char *out;
  int64_t seq_len, batch, window_steps;
  double window_start, paused;
  int save_failed; /* save_model printed why */
  damo_history *history;
} pretrain_output;

static damo_status pretrain_validate(void *ctx, double *row) {
  pretrain_output *o = ctx;
  const double start = cli_seconds();
  float val;
  damo_status st = damo_bert_pretrainer_eval(o->t, &val);
  row[DAMO_H_VAL_LOSS] = val;
  o->paused += cli_seconds() - start;
  return st;
}

static damo_status pretrain_save(void *ctx, const damo_train_event *e) {
  pretrain_output *o = ctx;
  const double start = cli_seconds();
  damo_tensor_dict *state = damo_tensor_dict_new();
  damo_status st = state ? damo_bert_pretrainer_checkpoint_add(o->t, e, state) : DAMO_ERR_NOMEM;
  if (st != DAMO_OK) {
    damo_tensor_dict_free(state);
    return st;
  }
  int failed = save_model(o->m, o->wp, o->out, o->seq_len, -1, state, o->history, 1);
  damo_tensor_dict_free(state);
  if (failed) {
    o->save_failed = 1;
    return damo_error(DAMO_ERR_IO, "saving the model");
  }
  printf("checkpoint: step %lld -> %s\n", (long long)e->step, o->out);
  o->paused += cli_seconds() - start;
  return DAMO_OK;
}

static damo_status pretrain_event(void *ctx, const damo_train_event *e) {
  pretrain_output *o = ctx;
  if (e->kind == DAMO_EVENT_STEP) {
    const double now = cli_seconds();
    printf("step %6lld/%lld | loss %.4f | lr %.3e | grad norm %.3f | %.1f seq/s\n", (long long)e->step,
           (long long)e->steps, (double)e->report->loss, (double)e->report->lr, (double)e->report->grad_norm,
           (double)((e->step - o->window_steps) * o->batch) / (now - o->window_start - o->paused));
    o->window_start = now, o->paused = 0, o->window_steps = e->step;
  } else if (e->kind == DAMO_EVENT_VALIDATION) {
    printf("step %6lld | val loss %.4f\n", (long long)e->step, e->figures[DAMO_H_VAL_LOSS]);
  }
  fflush(stdout);
  return DAMO_OK;
}

static int run_pretraining(int argc, char **argv, const char *config, const char *out, const damo_wordpiece *wp) {
  if (cli_opt(argc, argv, "--dp-clip")) {
    fprintf(stderr, "damo train: DP-SGD fine-tunes a BERT classifier; masked-LM pre-training (--pretrain) runs without "
                    "it (pre-train on public text, then fine-tune privately)\n");
    return 2;
  }
  bert_run r = {damo_bert_train_defaults(), 0, 20, 200, -1, -1};
  damo_bert_config model;
  if (!read_section(config, "pretrain", cli_opt(argc, argv, "--init"), &r, &model) || !read_flags(argc, argv, &r))
    return 2;
  cli_warn_warmup(r.opt.steps, r.opt.warmup_steps);
  if (r.head_tokens >= 0) {
    fprintf(stderr, "damo train: --head-tokens is for fine-tuning; pre-training reads windows of the text stream\n");
    return 2;
  }
  const char *data = cli_opt(argc, argv, "--data");
  damo_bert *m = NULL;
  damo_bert_pretrainer *t = NULL;
  damo_tensor_dict *resumed = NULL;
  int32_t *ids = NULL;
  int64_t n = 0;
  int rc = 1;
  if (make_model(&model, cli_opt(argc, argv, "--init"), 0, r.opt.seed, cli_flag(argc, argv, "--recompute"), &m) != DAMO_OK ||
      pretrain_stream(data, wp, &ids, &n) != DAMO_OK) {
    rc = cli_fail("train --pretrain");
    goto done;
  }
  if (!cli_bert_match_vocabulary(wp, m, &r.opt)) goto done;
  damo_data_parallel_options dp;
  if (!cli_data_parallel_options(argc, argv, &dp) || !cli_freeze_options(argc, argv, set_trainable, m)) {
    rc = 2;
    goto done;
  }
  if (damo_bert_pretrainer_new(m, ids, n, &r.opt, &t) != DAMO_OK ||
      damo_bert_pretrainer_set_data_parallel(t, cli_world(), &dp) != DAMO_OK) {
    rc = cli_fail("train --pretrain");
    goto done;
  }
  const damo_bert_config *c = damo_bert_get_config(m);
  printf("%s\nBERT: %d layers, %d heads, width %d, inner %d, vocab %d: %lld parameters\n", damo_info_string(),
         c->num_hidden_layers, c->num_attention_heads, c->hidden_size, c->intermediate_size, c->vocab_size,
         (long long)damo_bert_num_params(m));
  cli_print_trained(argc, argv, damo_bert_num_trainable_params(m), damo_bert_num_params(m));
  printf("masked LM: %lld tokens (last 10%% validation), %lld steps of %lld x %lld, %lld slots, lr %g, warm-up %lld\n",
         (long long)n, (long long)r.opt.steps, (long long)r.opt.batch_size, (long long)r.opt.seq_len,
         (long long)r.opt.predictions, (double)r.opt.lr, (long long)r.opt.warmup_steps);
  pretrain_output o = {.t = t, .m = m, .wp = wp, .out = out, .seq_len = r.opt.seq_len, .batch = r.opt.batch_size,
                       .window_start = cli_seconds()};
  const double t0 = o.window_start;
  /* validated first, then every eval_every steps and at the end, each time saved */
  damo_train_loop loop = {.steps = r.opt.steps, .log_every = r.log_every, .validate_every = r.eval_every,
                          .validate_first = 1,
                          .checkpoint_every = r.checkpoint_every > 0 ? r.checkpoint_every : r.eval_every};
  if (cli_flag(argc, argv, "--resume")) {
    if (!resume_state(out, &resumed) || damo_bert_pretrainer_resume(t, resumed, "trainer_state.safetensors") != DAMO_OK) {
      rc = resumed ? cli_fail("train --resume") : 1;
      goto done;
    }
    printf("resumed from %s at step %lld\n", out, (long long)damo_bert_pretrainer_steps_done(t));
  }
  damo_train_hooks hooks = {.ctx = &o, .validate = pretrain_validate, .checkpoint = pretrain_save,
                            .on_event = pretrain_event};
  o.history = damo_history_create(0);
  damo_status run_st = o.history ? damo_trainer_run(damo_bert_pretrainer_core(t), &loop, &hooks, o.history) : DAMO_ERR_NOMEM;
  damo_history_free(o.history);
  if (run_st != DAMO_OK) {
    if (!o.save_failed) rc = cli_fail("train --pretrain");
    goto done;
  }
  printf("done in %.1f s\n", cli_seconds() - t0);
  rc = 0;
done:
  damo_tensor_dict_free(resumed);
  damo_bert_pretrainer_free(t);
  damo_bert_free(m);
  free(ids);
  return rc;
}

static damo_bert_examples examples_of(const encoded_split *e) {
  return (damo_bert_examples){e->n, e->ids, e->types, e->mask, e->labels};
}

/* Fine-tuning's output, from the training loop's events: a progress line every log_every
 * steps (redrawn on a terminal; a line of its own in a log, which would otherwise hear
 * nothing until the epoch ended, minutes on 2 cores), the validation figures per epoch. */
typedef struct finetune_saver {
  const damo_history *history;
  const damo_bert *m;
  const damo_wordpiece *wp;
  const char *out;
  int64_t seq_len;
  long head;
} finetune_saver;

typedef struct finetune_output {
  const finetune_saver *saver;
  const damo_dp_options *privacy; /* DP-SGD: epsilon at each epoch's end */
  long epochs;
  int64_t per_epoch, batch;
  int tty, best_epoch;
  double t0, best_f1;
} finetune_output;

/* A fine-tuning checkpoint: the model as it is now, and the run's state to resume from. */
static damo_status save_finetune_checkpoint(void *ctx, const damo_tensor_dict *state) {
  const finetune_saver *s = ((finetune_output *)ctx)->saver;
  if (save_model(s->m, s->wp, s->out, s->seq_len, s->head, state, s->history, 0))
    return damo_error(DAMO_ERR_IO, "saving a checkpoint");
  return DAMO_OK;
}

static damo_status print_finetune_event(void *ctx, const damo_train_event *e) {
  finetune_output *o = ctx;
  const double *v = e->figures;
  switch (e->kind) {
  case DAMO_EVENT_STEP:
    if (e->step == 1) o->t0 = cli_seconds();
    printf("%sepoch %lld/%ld %5lld/%lld | loss %.4f | %.1f seq/s%s", o->tty ? "\r" : "", (long long)e->epoch, o->epochs,
           (long long)e->step, (long long)o->per_epoch, v[DAMO_H_LOSS],
           (double)(e->step * o->batch) / (cli_seconds() - o->t0), e->step == o->per_epoch || !o->tty ? "\n" : "");
    break;
  case DAMO_EVENT_EPOCH:
    printf("epoch %lld: val accuracy %.4f, precision %.4f, recall %.4f, F1 %.4f (%.1f s)", (long long)e->epoch,
           v[DAMO_H_VAL_ACCURACY], v[DAMO_H_VAL_PRECISION], v[DAMO_H_VAL_RECALL], v[DAMO_H_VAL_F1], cli_seconds() - o->t0);
    if (o->privacy) {
      double eps = NAN;
      damo_dp_epsilon(o->privacy->sample_rate, o->privacy->used_noise, (double)(e->epoch * o->per_epoch),
                      o->privacy->delta, (damo_dp_conversion)o->privacy->conversion, &eps, NULL);
      printf(" - epsilon %.4g", eps);
    }
    printf("\n");
    break;
  case DAMO_EVENT_RESTORED: o->best_epoch = (int)e->best_at, o->best_f1 = e->best; break;
  default: break;
  }
  fflush(stdout);
  return DAMO_OK;
}

static int run_finetuning(int argc, char **argv, const char *config, const char *out, const damo_wordpiece *wp) {
  bert_run r = {damo_bert_train_defaults(), 3, 20, 0, -1, -1};
  r.opt.warmup_steps = 0;
  damo_bert_config model;
  if (!read_section(config, "finetune", cli_opt(argc, argv, "--init"), &r, &model) || !read_flags(argc, argv, &r))
    return 2;
  if (cli_opt(argc, argv, "--predictions")) {
    fprintf(stderr, "damo train: --predictions is for --pretrain (masked-LM slots per window)\n");
    return 2;
  }
  const char *data = cli_opt(argc, argv, "--data"), *init = cli_opt(argc, argv, "--init");
  damo_dp_options privacy;
  const int private_run = cli_privacy_options(argc, argv, &privacy, "a BERT classifier");
  if (private_run < 0) return 2;
  r.opt.privacy = private_run ? &privacy : NULL;
  damo_text_dataset *d = NULL;
  encoded_split sp[3] = {{0}};
  damo_bert *m = NULL;
  damo_bert_finetuner *f = NULL;
  damo_tensor_dict *resumed = NULL;
  damo_history *history = NULL;
  int rc = 1;
  const int64_t T = r.opt.seq_len, B = r.opt.batch_size;
  if (r.head_tokens > T - 2) { /* [CLS] and [SEP] take two of the T places */
    fprintf(stderr, "damo train: head_tokens %ld must be at most seq_len - 2 = %lld (it keeps that many first tokens of "
            "a long text, the rest of the places hold its last tokens)\n", r.head_tokens, (long long)(T - 2));
    return 2;
  }
  if (!cli_bert_load_encoded(data, wp, T, (int)r.head_tokens, &d, sp, -1)) goto done;
  cli_text_describe(data, d);
  const int64_t per_epoch = (sp[0].n + B - 1) / B;
  r.opt.steps = r.epochs * per_epoch;
  cli_warn_warmup(r.opt.steps, r.opt.warmup_steps);
  if (make_model(&model, init, d->n_classes, r.opt.seed, cli_flag(argc, argv, "--recompute"), &m) != DAMO_OK ||
      damo_bert_set_label_names(m, d->n_classes, (const char *const *)d->class_names) != DAMO_OK) {
    rc = cli_fail("train");
    goto done;
  }
  if (!cli_bert_match_vocabulary(wp, m, &r.opt)) goto done;
  damo_data_parallel_options dp;
  if (!cli_data_parallel_options(argc, argv, &dp) || !cli_freeze_options(argc, argv, set_trainable, m)) {
    rc = 2;
    goto done;
  }
  if (damo_bert_finetuner_new(m, &r.opt, &f) != DAMO_OK ||
      damo_bert_finetuner_set_data_parallel(f, cli_world(), &dp) != DAMO_OK) {
    rc = cli_fail("train");
    goto done;
  }
  char cut[96] = "";
  if (r.head_tokens >= 0 && r.head_tokens < T - 2)
    snprintf(cut, sizeof cut, " (long texts: first %ld + last %lld tokens)", r.head_tokens, (long long)(T - 2 - r.head_tokens));
  printf("BERT classifier %s: %lld parameters; %ld epochs x %lld steps of %lld, T %lld%s, lr %g\n",
         init ? "from the pre-trained weights" : "from random initialisation", (long long)damo_bert_num_params(m),
         r.epochs, (long long)per_epoch, (long long)B, (long long)T, cut, (double)r.opt.lr);
  cli_print_trained(argc, argv, damo_bert_num_trainable_params(m), damo_bert_num_params(m));
  finetune_output fo = {.epochs = r.epochs, .per_epoch = per_epoch, .batch = B, .tty = isatty(fileno(stdout)),
                        .t0 = cli_seconds(), .best_epoch = (int)r.epochs, .best_f1 = NAN, .privacy = r.opt.privacy};
  saved_privacy = r.opt.privacy, saved_examples = sp[0].n;
  const damo_bert_examples train = examples_of(&sp[0]), val = examples_of(&sp[1]), test_set = examples_of(&sp[2]);
  if (!(history = damo_history_create(0))) goto fail;
  finetune_saver saver = {history, m, wp, out, T, r.head_tokens};
  damo_bert_fit_options fit = {.epochs = r.epochs, .log_every = r.log_every, .on_event = print_finetune_event,
                               .checkpoint = save_finetune_checkpoint, .ctx = &fo,
                               .checkpoint_every = r.checkpoint_every > 0 ? r.checkpoint_every : 0,
                               .history = history};
  fo.saver = &saver;
  if (cli_flag(argc, argv, "--resume")) {
    if (!resume_state(out, &resumed)) goto done;
    fit.resume = resumed, fit.resume_path = "trainer_state.safetensors";
    printf("resuming the run checkpointed in %s\n", out);
  }
  if (damo_bert_finetuner_fit(f, &train, &val, &fit) != DAMO_OK) goto fail;
  if (r.opt.privacy && cli_rank() == 0) cli_privacy_report(r.opt.privacy);
  damo_metrics test;
  if (damo_bert_finetuner_score(f, &test_set, &test) != DAMO_OK) goto fail;
  printf("test (weights of epoch %d, best validation F1 %.4f): accuracy %.4f, precision %.4f, recall %.4f, F1 %.4f, "
         "AUC %.4f (%lld mails)\n", fo.best_epoch, fo.best_f1, test.accuracy, test.precision, test.recall, test.f1,
         test.auc, (long long)sp[2].n);
  rc = cli_rank() == 0 ? save_model(m, wp, out, T, r.head_tokens, NULL, history, 0) : 0;
  goto done;
fail:
  rc = cli_fail("train");
done:
  damo_tensor_dict_free(resumed);
  damo_history_free(history);
  for (int s = 0; s < 3; s++) cli_bert_free_split(&sp[s]);
  damo_bert_finetuner_free(f);
  damo_bert_free(m);
  damo_text_dataset_free(d);
  return rc;
}

int cli_train_bert(int argc, char **argv) {
  const char *config = cli_opt(argc, argv, "--config"), *data = cli_opt(argc, argv, "--data");
  const char *out = cli_opt(argc, argv, "--out");
  if (!config || !data || !out) {
    fprintf(stderr, "damo train: a BERT config needs --config FILE, --data SPEC and --out DIR\n");
    return 2;
  }
  damo_wordpiece *wp = NULL;
  if (damo_wordpiece_load(cli_opt(argc, argv, "--vocab"), &wp) != DAMO_OK) return cli_fail("train: the vocabulary");
  /* Held for the whole run: a second run into out is refused, and an unwritable out fails now. */
  damo_dir_lock *lock = NULL;
  if (cli_rank() == 0 && damo_dir_lock_acquire(out, &lock) != DAMO_OK) { /* rank 0 writes */
    damo_wordpiece_free(wp);
    return cli_fail("train: the output directory");
  }
  int rc = cli_rank() == 0 ? cli_check_out(out, cli_flag(argc, argv, "--resume"), cli_flag(argc, argv, "--overwrite")) : 0;
  if (rc == 0)
    rc = cli_flag(argc, argv, "--pretrain") ? run_pretraining(argc, argv, config, out, wp)
                                            : run_finetuning(argc, argv, config, out, wp);
  damo_dir_lock_release(lock);
  damo_wordpiece_free(wp);
  return rc;
}

/* `damo bench bert --config FILE --init DIR [--epochs E --probe-steps P]`: damo's side of
 * W5. Fine-tunes a freshly initialised classifier on the spam-assassin training split, in
 * the split's (seeded) order without reshuffling, so PyTorch (bench/torch_bert.py) can take
 * the very same batches: DIR gets the initial weights and the encoded splits (train_* and
 * test_* .i32 files: ids, types, mask (N, T), labels (N); texts cut as the config's
 * finetune section says, head_tokens included). Prints one JSON object: the first
 * batch's loss without dropout, every step's seconds, the test figures after E epochs, and
 * the peak RSS. --probe-steps trains only that many steps. */
int cli_bench_bert(int argc, char **argv) {
  const char *config = cli_opt(argc, argv, "--config"), *init = cli_opt(argc, argv, "--init");
  long epochs = 1, probe = 0;
  if (!config || !init) {
    fprintf(stderr, "damo bench bert: --config FILE and --init DIR are required\n");
    return 2;
  }
  if ((cli_opt(argc, argv, "--epochs") && !cli_parse_long(cli_opt(argc, argv, "--epochs"), "--epochs", 1, 100, &epochs)) ||
      (cli_opt(argc, argv, "--probe-steps") &&
       !cli_parse_long(cli_opt(argc, argv, "--probe-steps"), "--probe-steps", 1, 1L << 20, &probe)))
    return 2;
  bert_run r = {damo_bert_train_defaults(), 1, 20, 0, -1, -1};
  r.opt.warmup_steps = 0;
  damo_bert_config model;
  if (!read_section(config, "finetune", NULL, &r, &model)) return 2;
  damo_wordpiece *wp = NULL;
  damo_text_dataset *d = NULL;
  encoded_split sp[3] = {{0}};
  damo_bert *m = NULL;
  damo_bert_finetuner *f = NULL;
  double *seconds = NULL;
  float *losses = NULL;
  int rc = 1;
  const int64_t T = r.opt.seq_len, B = r.opt.batch_size;
  if (damo_wordpiece_load(NULL, &wp) != DAMO_OK) goto fail;
  if (!cli_bert_load_encoded("spam-assassin", wp, T, (int)r.head_tokens, &d, sp, -1)) goto done;
  const int64_t per_epoch = sp[0].n / B; /* whole batches only: both sides see the same shapes */
  r.opt.steps = epochs * per_epoch;
  damo_data_parallel_options dp;
  if (!cli_data_parallel_options(argc, argv, &dp)) goto done;
  const int writer = cli_rank() == 0; /* under mpirun: data-parallel steps, rank 0 writes and reports */
  if (make_model(&model, NULL, d->n_classes, r.opt.seed, 0, &m) != DAMO_OK || (writer && damo_bert_save(m, init) != DAMO_OK) ||
      damo_bert_finetuner_new(m, &r.opt, &f) != DAMO_OK || damo_bert_finetuner_set_data_parallel(f, cli_world(), &dp) != DAMO_OK)
    goto fail;
  const int64_t nt = sp[0].n * T, ne = sp[2].n * T;
  if (writer && (!cli_write_i32(init, "train_ids.i32", sp[0].ids, nt) || !cli_write_i32(init, "train_types.i32", sp[0].types, nt) ||
      !cli_write_i32(init, "train_mask.i32", sp[0].mask, nt) || !cli_write_i32(init, "train_labels.i32", sp[0].labels, sp[0].n) ||
      !cli_write_i32(init, "test_ids.i32", sp[2].ids, ne) || !cli_write_i32(init, "test_types.i32", sp[2].types, ne) ||
      !cli_write_i32(init, "test_mask.i32", sp[2].mask, ne) || !cli_write_i32(init, "test_labels.i32", sp[2].labels, sp[2].n)))
    goto fail;
  /* The first batch's loss at the initial weights, without dropout: PyTorch must agree. */
  damo_bert_graph *g0 = NULL;
  float first_loss = NAN;
  if (damo_bert_classifier_new(m, B, T, 1, &g0) != DAMO_OK ||
      damo_bert_graph_forward(g0, B, sp[0].ids, sp[0].types, sp[0].mask, sp[0].labels, 0, &first_loss) != DAMO_OK) {
    damo_bert_graph_free(g0);
    goto fail;
  }
  damo_bert_graph_free(g0);
  const long n_steps = probe ? probe : (long)r.opt.steps;
  if (!(seconds = malloc((size_t)n_steps * sizeof *seconds)) || !(losses = malloc((size_t)n_steps * sizeof *losses)))
    goto fail;
  for (long s = 0; s < n_steps; s++) {
    const int64_t first = (s % per_epoch) * B;
    double t0 = cli_seconds();
    damo_bert_step_report rep;
    if (damo_bert_finetuner_step(f, B, sp[0].ids + first * T, sp[0].types + first * T, sp[0].mask + first * T,
                                 sp[0].labels + first, &rep) != DAMO_OK)
      goto fail;
    seconds[s] = cli_seconds() - t0;
    losses[s] = rep.loss;
  }
  printf("{\"threads\": %d, \"simd\": \"%s\", \"first_loss\": %.7f, \"steps\": %ld, \"batch\": %lld, \"seq_len\": %lld, "
         "\"train_examples\": %lld, \"step_seconds\": [",
         damo_num_threads(), damo_simd_path(), (double)first_loss, n_steps, (long long)B, (long long)T,
         (long long)sp[0].n);
  for (long s = 0; s < n_steps; s++) printf("%s%.5f", s ? ", " : "", seconds[s]);
  printf("]");
  cli_print_parallel_json(damo_bert_finetuner_core(f));
  if (!probe) {
    damo_metrics test;
    const damo_bert_examples test_set = examples_of(&sp[2]);
    if (damo_bert_finetuner_score(f, &test_set, &test) != DAMO_OK) goto fail;
    printf(", \"epochs\": %ld, \"test_accuracy\": %.4f, \"test_precision\": %.4f, \"test_recall\": %.4f, "
           "\"test_f1\": %.4f, \"test_examples\": %lld", epochs, test.accuracy, test.precision, test.recall, test.f1,
           (long long)sp[2].n);
  }
  cli_bench_finish(seconds, losses, n_steps);
  rc = 0;
  goto done;
fail:
  rc = cli_fail("bench bert");
done:
  free(seconds);
  free(losses);
  for (int s = 0; s < 3; s++) cli_bert_free_split(&sp[s]);
  damo_bert_finetuner_free(f);
  damo_bert_free(m);
  damo_text_dataset_free(d);
  damo_wordpiece_free(wp);
  return rc;
}
