/* test_gpt2_train.c - GPT-2 training and sampling (src/models/gpt2_train.c, gpt2_data.c,
 * gpt2_sample.c) on a tiny random model and a synthetic token stream: the loss falls,
 * gradient accumulation equals one bigger batch, a resumed run equals an uninterrupted one
 * bit for bit, the weight-decay mask spares biases and LayerNorm, and sampling (temperature
 * 0, top-k 1, seeds, top-p) behaves as documented. Needs no downloaded data; the BPE file
 * test is skipped when the GPT-2 vocabulary is not installed. */
#include "damo.h"
#include "cli_run.h"
#include "harness.h"
#include "tmpfiles.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VOCAB 64
#define STREAM 3000

static damo_gpt2_config tiny_config(void) {
  damo_gpt2_config c = {2, 2, 32, 32, VOCAB, 1e-5f};
  return c;
}

/* A learnable stream: a few fixed "sentences" of ids chosen at random (seeded). */
static damo_token_data *synthetic_data(void) {
  int32_t sentences[6][12];
  damo_rng r;
  damo_rng_seed(&r, 7);
  for (int s = 0; s < 6; s++)
    for (int j = 0; j < 12; j++) sentences[s][j] = (int32_t)damo_rng_below(&r, VOCAB);
  int32_t *ids = malloc(STREAM * sizeof *ids);
  for (int i = 0; i < STREAM;) {
    int s = (int)damo_rng_below(&r, 6);
    for (int j = 0; j < 12 && i < STREAM; j++) ids[i++] = sentences[s][j];
  }
  damo_token_data *d = NULL;
  damo_token_data_from_ids(ids, STREAM, 0.1, &d);
  free(ids);
  return d;
}

static damo_gpt2_train_options tiny_options(int64_t steps) {
  damo_gpt2_train_options o = damo_gpt2_train_defaults();
  o.steps = steps;
  o.batch_size = 4;
  o.seq_len = 16;
  o.lr = 1e-2f;
  o.min_lr = 1e-3f;
  o.warmup_steps = 3;
  o.eval_windows = 8;
  o.seed = 5;
  return o;
}

static damo_gpt2 *tiny_model(uint64_t seed) {
  damo_gpt2_config c = tiny_config();
  damo_gpt2 *m = NULL;
  CHECK(damo_gpt2_new(&c, seed, &m) == DAMO_OK);
  return m;
}

static void test_token_split(void) {
  int32_t ids[100];
  for (int i = 0; i < 100; i++) ids[i] = i;
  damo_token_data *d;
  CHECK(damo_token_data_from_ids(ids, 100, 0.1, &d) == DAMO_OK);
  CHECK(d->n_tokens == 100 && d->n_train == 90);
  CHECK(d->ids[99] == 99);
  damo_token_data_free(d);
  CHECK(damo_token_data_from_ids(ids, 100, 1.0, &d) == DAMO_ERR_INVALID_ARG);
}

static void test_loss_goes_down(void) {
  damo_token_data *d = synthetic_data();
  damo_gpt2 *m = tiny_model(1);
  damo_gpt2_train_options o = tiny_options(30);
  damo_gpt2_trainer *t = NULL;
  CHECK(damo_gpt2_trainer_new(m, d, &o, &t) == DAMO_OK);
  if (!t) goto done;
  float val0, val1, first = 0, last = 0;
  CHECK(damo_gpt2_trainer_eval(t, &val0) == DAMO_OK);
  CHECK_NEAR(val0, log(VOCAB), 0.3); /* a fresh model is near uniform */
  for (int s = 0; s < 30; s++) {
    damo_gpt2_step_report r;
    CHECK(damo_gpt2_trainer_step(t, &r) == DAMO_OK);
    CHECK(r.step == s + 1 && r.tokens == 4 * 16);
    if (s < 3) first += r.loss / 3;
    if (s >= 27) last += r.loss / 3;
  }
  CHECK(damo_gpt2_trainer_eval(t, &val1) == DAMO_OK);
  CHECK_MSG(last < first - 1.0f, "train loss %g -> %g", (double)first, (double)last);
  CHECK_MSG(val1 < val0 - 1.0f, "val loss %g -> %g", (double)val0, (double)val1);
  float again;
  CHECK(damo_gpt2_trainer_eval(t, &again) == DAMO_OK);
  CHECK(again == val1); /* fixed validation windows */
done:
  damo_gpt2_trainer_free(t);
  damo_gpt2_free(m);
  damo_token_data_free(d);
}

/* One step of (batch 2, accum 1) against (batch 1, accum 2): same windows, same gradient. */
static void test_grad_accum(void) {
  damo_token_data *d = synthetic_data();
  damo_gpt2 *a = tiny_model(3), *b = tiny_model(3);
  damo_gpt2_train_options oa = tiny_options(10), ob;
  oa.batch_size = 2;
  oa.clip_norm = 0.0f;
  ob = oa;
  ob.batch_size = 1;
  ob.grad_accum = 2;
  damo_gpt2_trainer *ta = NULL, *tb = NULL;
  CHECK(damo_gpt2_trainer_new(a, d, &oa, &ta) == DAMO_OK);
  CHECK(damo_gpt2_trainer_new(b, d, &ob, &tb) == DAMO_OK);
  if (!ta || !tb) goto done;
  damo_gpt2_step_report ra, rb;
  CHECK(damo_gpt2_trainer_step(ta, &ra) == DAMO_OK);
  CHECK(damo_gpt2_trainer_step(tb, &rb) == DAMO_OK);
  CHECK(ra.tokens == rb.tokens);
  CHECK_NEAR(ra.loss, rb.loss, 1e-5);
  CHECK_NEAR(ra.grad_norm, rb.grad_norm, 1e-5 * ra.grad_norm);
  int64_t n;
  const float *ga = damo_gpt2_grad_block(a, &n), *gb = damo_gpt2_grad_block(b, NULL);
  CHECK_CLOSE(gb, ga, (long)n, 1e-6, 1e-4);
  const float *pa = damo_gpt2_param_block(a, NULL), *pb = damo_gpt2_param_block(b, NULL);
  CHECK_CLOSE(pb, pa, (long)n, 1e-5, 1e-4);
done:
  damo_gpt2_trainer_free(ta);
  damo_gpt2_trainer_free(tb);
  damo_gpt2_free(a);
  damo_gpt2_free(b);
  damo_token_data_free(d);
}

/* 6 steps straight vs 3 steps, checkpoint, a new process-like start (other init seed), resume,
 * 3 steps: the same losses and weights, bit for bit. Accumulation on, to cover its buffer. */
static void test_resume(void) {
  damo_token_data *d = synthetic_data();
  damo_gpt2_train_options o = tiny_options(6);
  o.batch_size = 2;
  o.grad_accum = 2;
  float straight[6], resumed[6];
  damo_gpt2 *m = tiny_model(11), *m2 = NULL;
  damo_gpt2_trainer *t = NULL;
  CHECK(damo_gpt2_trainer_new(m, d, &o, &t) == DAMO_OK);
  if (!t) goto done;
  for (int s = 0; s < 6; s++) {
    damo_gpt2_step_report r;
    CHECK(damo_gpt2_trainer_step(t, &r) == DAMO_OK);
    straight[s] = r.loss;
  }
  damo_gpt2_trainer_free(t);
  t = NULL;

  m2 = tiny_model(11);
  const char *dir = tmp_path("ckpt");
  CHECK(damo_gpt2_trainer_new(m2, d, &o, &t) == DAMO_OK);
  if (!t) goto done;
  for (int s = 0; s < 3; s++) {
    damo_gpt2_step_report r;
    CHECK(damo_gpt2_trainer_step(t, &r) == DAMO_OK);
    resumed[s] = r.loss;
  }
  CHECK(damo_gpt2_trainer_save(t, dir) == DAMO_OK);
  damo_gpt2_trainer_free(t);
  t = NULL;
  damo_gpt2_free(m2);

  m2 = tiny_model(999); /* different weights: resume must replace them */
  CHECK(damo_gpt2_trainer_new(m2, d, &o, &t) == DAMO_OK);
  if (!t) goto done;
  CHECK(damo_gpt2_trainer_resume(t, dir) == DAMO_OK);
  CHECK(damo_gpt2_trainer_steps_done(t) == 3);
  for (int s = 3; s < 6; s++) {
    damo_gpt2_step_report r;
    CHECK(damo_gpt2_trainer_step(t, &r) == DAMO_OK);
    CHECK(r.step == s + 1);
    resumed[s] = r.loss;
  }
  CHECK_MSG(memcmp(straight, resumed, sizeof straight) == 0, "losses %.9g %.9g %.9g vs %.9g %.9g %.9g",
            (double)straight[3], (double)straight[4], (double)straight[5], (double)resumed[3], (double)resumed[4],
            (double)resumed[5]);
  int64_t n;
  const float *pa = damo_gpt2_param_block(m, &n), *pb = damo_gpt2_param_block(m2, NULL);
  CHECK(memcmp(pa, pb, (size_t)n * sizeof(float)) == 0);

  /* the checkpoint is also a HuggingFace directory generate can load */
  damo_gpt2 *loaded = NULL;
  CHECK(damo_gpt2_load(dir, &loaded) == DAMO_OK);
  damo_gpt2_free(loaded);

  /* a different batch shape is refused with a message naming it */
  damo_gpt2_trainer_free(t);
  t = NULL;
  o.grad_accum = 1;
  CHECK(damo_gpt2_trainer_new(m2, d, &o, &t) == DAMO_OK);
  if (t) {
    CHECK(damo_gpt2_trainer_resume(t, dir) == DAMO_ERR_INVALID_ARG);
    CHECK(strstr(damo_last_error(), "grad_accum") != NULL);
  }
  /* another token stream (the same length, one id changed) is refused too: it was resumed
   * without a word */
  damo_gpt2_trainer_free(t);
  t = NULL;
  o.grad_accum = 2;
  damo_token_data *other = NULL;
  d->ids[100] = (d->ids[100] + 1) % VOCAB;
  CHECK(damo_token_data_from_ids(d->ids, d->n_tokens, 0.1, &other) == DAMO_OK);
  d->ids[100] = (d->ids[100] + VOCAB - 1) % VOCAB;
  CHECK(other && damo_gpt2_trainer_new(m2, other, &o, &t) == DAMO_OK);
  if (t) {
    CHECK(damo_gpt2_trainer_resume(t, dir) == DAMO_ERR_INVALID_ARG);
    CHECK_MSG(strstr(damo_last_error(), "trained on a token stream of 3000 tokens"), "%s", damo_last_error());
  }
  damo_gpt2_trainer_free(t);
  t = NULL;
  damo_token_data_free(other);
  char path[600];
  snprintf(path, sizeof path, "%s/config.json", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/trainer_state.safetensors", dir);
  unlink(path);
  rmdir(dir);
done:
  damo_gpt2_trainer_free(t);
  damo_gpt2_free(m);
  damo_gpt2_free(m2);
  damo_token_data_free(d);
}

/* With zero gradients AdamW only decays: matrices shrink by (1 - lr wd), biases and LayerNorm
 * stay exactly as they were. */
static void test_decay_mask(void) {
  damo_gpt2 *m = tiny_model(2);
  int64_t n;
  float *p = damo_gpt2_param_block(m, &n), *g = damo_gpt2_grad_block(m, NULL);
  uint8_t *mask = malloc((size_t)n);
  float *before = malloc((size_t)n * sizeof *before);
  memcpy(before, p, (size_t)n * sizeof *before);
  memset(g, 0, (size_t)n * sizeof *g);
  CHECK(damo_gpt2_decay_mask(m, mask) == DAMO_OK);
  damo_optimizer_config c = damo_adamw(0.1f, 0.5f);
  damo_optimizer *o = damo_optimizer_new(&c, n);
  CHECK(damo_optimizer_set_decay_mask(o, mask) == DAMO_OK);
  CHECK(damo_optimizer_step(o, p, g, 1, NULL) == DAMO_OK);
  int bad_decayed = 0, bad_kept = 0, matrices = 0, vectors = 0;
  const float decay = (float)(1.0 - 0.1 * 0.5);
  for (int i = 0; i < damo_gpt2_num_tensors(m); i++) {
    const char *name = damo_gpt2_tensor_name(m, i);
    const damo_tensor *t = damo_gpt2_param(m, name);
    int64_t off = (const float *)t->data - p, cnt = damo_tensor_numel(t);
    int is_matrix = t->ndim == 2;
    matrices += is_matrix;
    vectors += !is_matrix;
    for (int64_t j = off; j < off + cnt; j++) {
      if (mask[j] != is_matrix) *(is_matrix ? &bad_decayed : &bad_kept) += 1;
      if (is_matrix && p[j] != before[j] * decay) bad_decayed++;
      if (!is_matrix && memcmp(&p[j], &before[j], sizeof(float)) != 0) bad_kept++;
    }
  }
  CHECK(matrices == 2 + 4 * 2 && vectors == 8 * 2 + 2);
  CHECK_MSG(bad_decayed == 0, "%d matrix elements not decayed by (1 - lr wd)", bad_decayed);
  CHECK_MSG(bad_kept == 0, "%d bias/LayerNorm elements changed", bad_kept);
  CHECK(strcmp(damo_gpt2_tensor_name(m, 0), "wte.weight") == 0 && mask[0] == 1);
  /* NULL restores decay everywhere */
  CHECK(damo_optimizer_set_decay_mask(o, NULL) == DAMO_OK);
  const damo_tensor *ln = damo_gpt2_param(m, "ln_f.weight");
  float ln0 = damo_tensor_f32(ln)[0];
  CHECK(damo_optimizer_step(o, p, g, 2, NULL) == DAMO_OK);
  CHECK(damo_tensor_f32(ln)[0] != ln0);
  damo_optimizer_free(o);
  free(mask);
  free(before);
  damo_gpt2_free(m);
}

static void test_sampling_greedy_and_seeds(void) {
  damo_gpt2 *m = tiny_model(4);
  int32_t prompt[3] = {1, 2, 3}, greedy[12], out[12], out2[12];
  CHECK(damo_gpt2_generate_greedy(m, prompt, 3, 12, 1, greedy) == DAMO_OK);
  damo_gpt2_sampling s = damo_gpt2_sampling_default();
  s.temperature = 0.0f;
  s.seed = 77;
  CHECK(damo_gpt2_generate(m, prompt, 3, 12, &s, out) == DAMO_OK);
  CHECK(memcmp(out, greedy, sizeof out) == 0);
  s.temperature = 1.0f;
  s.top_k = 1;
  CHECK(damo_gpt2_generate(m, prompt, 3, 12, &s, out) == DAMO_OK);
  CHECK(memcmp(out, greedy, sizeof out) == 0);
  s.top_k = 0;
  s.temperature = 1.5f;
  CHECK(damo_gpt2_generate(m, prompt, 3, 12, &s, out) == DAMO_OK);
  CHECK(damo_gpt2_generate(m, prompt, 3, 12, &s, out2) == DAMO_OK);
  CHECK(memcmp(out, out2, sizeof out) == 0);
  s.seed = 78;
  CHECK(damo_gpt2_generate(m, prompt, 3, 12, &s, out2) == DAMO_OK);
  CHECK(memcmp(out, out2, sizeof out) != 0); /* near-uniform model: another seed differs */
  s.top_p = -1.0f;
  CHECK(damo_gpt2_generate(m, prompt, 3, 12, &s, out2) == DAMO_ERR_INVALID_ARG);
  s.top_p = 0.0f;
  CHECK(damo_gpt2_generate(m, prompt, 30, 12, &s, out2) == DAMO_ERR_INVALID_ARG); /* past n_positions */
  damo_gpt2_free(m);
}

static void test_top_p(void) {
  const float p4[4] = {0.5f, 0.3f, 0.15f, 0.05f};
  float logits[4], probs[4];
  for (int i = 0; i < 4; i++) logits[i] = logf(p4[i]) + 3.0f; /* any shift: softmax gives p4 */
  damo_gpt2_sampling s = damo_gpt2_sampling_default();
  struct {
    float top_p;
    int kept;
  } cases[] = {{0.45f, 1}, {0.79f, 2}, {0.81f, 3}, {0.96f, 4}, {0.0f, 4}, {1.0f, 4}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    s.top_p = cases[c].top_p;
    CHECK(damo_gpt2_sampling_probs(logits, 4, &s, probs) == DAMO_OK);
    double kept_mass = 0;
    for (int i = 0; i < cases[c].kept; i++) kept_mass += p4[i];
    for (int i = 0; i < 4; i++) {
      double want = i < cases[c].kept ? p4[i] / kept_mass : 0.0;
      CHECK_MSG(fabs(probs[i] - want) < 1e-6, "top_p %g id %d: %g, expected %g", (double)s.top_p, i, (double)probs[i], want);
    }
  }
  /* top-k first, then top-p over the renormalised top-k set: {0.625, 0.375}, p 0.6 keeps one */
  s.top_k = 2;
  s.top_p = 0.6f;
  CHECK(damo_gpt2_sampling_probs(logits, 4, &s, probs) == DAMO_OK);
  CHECK(probs[0] == 1.0f && probs[1] == 0.0f && probs[2] == 0.0f);
  /* draws only from the kept set, and from all of it */
  s.top_k = 0;
  s.top_p = 0.79f;
  damo_rng r;
  damo_rng_seed(&r, 3);
  int count[4] = {0, 0, 0, 0};
  for (int i = 0; i < 2000; i++) {
    int32_t id = -1;
    CHECK(damo_gpt2_sample_id(logits, 4, &s, &r, &id) == DAMO_OK);
    if (id >= 0 && id < 4) count[id]++;
  }
  CHECK(count[2] == 0 && count[3] == 0);
  CHECK_MSG(count[0] > 1100 && count[0] < 1400 && count[1] > 600, "counts %d %d", count[0], count[1]); /* 1250 / 750 */
  /* temperature 0: one-hot argmax, ties to the lower id */
  float tie[3] = {1.0f, 2.0f, 2.0f};
  s.temperature = 0.0f;
  CHECK(damo_gpt2_sampling_probs(tie, 3, &s, probs) == DAMO_OK);
  CHECK(probs[0] == 0.0f && probs[1] == 1.0f && probs[2] == 0.0f);
  s.temperature = 1.0f;
  s.top_k = 1;
  s.top_p = 0.0f;
  CHECK(damo_gpt2_sampling_probs(tie, 3, &s, probs) == DAMO_OK);
  CHECK(probs[1] == 1.0f && probs[2] == 0.0f);
}

static void test_errors(void) {
  damo_token_data *d = synthetic_data();
  damo_gpt2 *m = tiny_model(1);
  damo_gpt2_trainer *t = NULL;
  damo_gpt2_train_options o = tiny_options(5);
  o.seq_len = 33;
  CHECK(damo_gpt2_trainer_new(m, d, &o, &t) == DAMO_ERR_INVALID_ARG && !t);
  CHECK(strstr(damo_last_error(), "n_positions") != NULL);
  o = tiny_options(5);
  d->ids[5] = VOCAB; /* outside the vocabulary */
  CHECK(damo_gpt2_trainer_new(m, d, &o, &t) == DAMO_ERR_INVALID_ARG && !t);
  CHECK(strstr(damo_last_error(), "token 5") != NULL);
  d->ids[5] = 0;
  d->n_train = d->n_tokens - 10; /* validation part shorter than a window */
  CHECK(damo_gpt2_trainer_new(m, d, &o, &t) == DAMO_ERR_INVALID_ARG && !t);
  CHECK(strstr(damo_last_error(), "validation") != NULL);
  damo_gpt2_free(m);
  damo_token_data_free(d);
}

/* A text file through the BPE: skipped when the GPT-2 vocabulary is not installed. */
static void test_text_file(void) {
  damo_bpe *bpe = NULL;
  if (damo_bpe_load(NULL, &bpe) != DAMO_OK) {
    fprintf(stderr, "  (skipped: GPT-2 vocabulary not installed: %s)\n", damo_last_error());
    return;
  }
  const char *path = tmp_path("text.txt");
  const char *text = "Call me Ishmael. Some years ago, never mind how long precisely, having little money.";
  write_bytes(path, text, strlen(text));
  damo_token_data *d = NULL;
  CHECK(damo_token_data_load(path, bpe, &d) == DAMO_OK);
  if (d) {
    int32_t *ids;
    int64_t n;
    CHECK(damo_bpe_encode(bpe, text, strlen(text), &ids, &n) == DAMO_OK);
    CHECK(d->n_tokens == n && d->n_train == n - (int64_t)(n * 0.1));
    CHECK(memcmp(d->ids, ids, (size_t)n * sizeof *ids) == 0);
    free(ids);
  }
  damo_token_data_free(d);
  d = NULL;
  CHECK(damo_token_data_load(tmp_path("missing.txt"), bpe, &d) != DAMO_OK && !d);
  CHECK(strstr(damo_last_error(), "missing.txt") != NULL);
  unlink(path);
  damo_bpe_free(bpe);
}

static int contains(const char *s) { return strstr(cli_out, s) != NULL; }

/* Drops generate's timing line (stderr, "N tokens in ... s") from captured output. */
static void cut_timing(char *s) {
  char *t = strstr(s, " tokens in ");
  while (t && t > s && t[-1] != '\n') t--;
  if (t) *t = '\0';
}

/* damo train / generate end to end on a text file with a tiny full-vocabulary model; skipped
 * without the GPT-2 vocabulary. */
static void test_cli(void) {
  damo_bpe *bpe = NULL;
  if (damo_bpe_load(NULL, &bpe) != DAMO_OK) {
    fprintf(stderr, "  (skipped: GPT-2 vocabulary not installed)\n");
    return;
  }
  damo_bpe_free(bpe);
  const char *cfg = tmp_path("gpt.json"), *txt = tmp_path("corpus.txt"), *out = tmp_path("model");
  const char *json = "{\"model_type\": \"gpt2\", \"vocab_size\": 50257, \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 16, "
                     "\"n_positions\": 32, \"train\": {\"steps\": 4, \"batch_size\": 2, \"seq_len\": 16, "
                     "\"log_every\": 1, \"eval_every\": 2, \"eval_windows\": 2, \"warmup_steps\": 1}}";
  write_bytes(cfg, json, strlen(json));
  char text[4000] = "";
  for (int i = 0; i < 20; i++)
    strcat(text, "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. ");
  write_bytes(txt, text, strlen(text));
  const char *cli = DAMO_CLI_PATH;
  CHECK(run("%s train --config %s --data %s --out %s", cli, cfg, txt, out) == 0);
  CHECK(contains("step      4/4 | loss") && contains("tokens/s") && contains("step      4 | val loss"));
  CHECK(contains("the last 10%") && contains("checkpoint: step 4"));
  CHECK(run("%s train --config %s --data %s --out %s --resume --steps 5 --log-every 1", cli, cfg, txt, out) == 0);
  CHECK(contains("resumed from") && contains("at step 4") && contains("step      5/5"));
  /* A warm-up longer than the run is a contradiction worth a warning (it trains anyway). */
  const char *cfg_w = tmp_path("gpt_warm.json");
  const char *json_w = "{\"model_type\": \"gpt2\", \"vocab_size\": 50257, \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 16, "
                       "\"n_positions\": 32, \"train\": {\"steps\": 2, \"batch_size\": 2, \"seq_len\": 16, "
                       "\"eval_every\": 0, \"eval_windows\": 2, \"warmup_steps\": 5}}";
  write_bytes(cfg_w, json_w, strlen(json_w));
  CHECK(run("%s train --config %s --data %s --out %s_w", cli, cfg_w, txt, out) == 0);
  CHECK_MSG(contains("warning: the warm-up (5 steps) is longer than the run (2 steps)"), "%s", cli_out);
  run("rm -rf '%s_w'", out);
  unlink(cfg_w);
  CHECK(run("%s train --config %s --data %s --out %s --bogus 1", cli, cfg, txt, out) == 2);
  CHECK(run("%s train --config %s --data %s", cli, cfg, txt) == 2);
  CHECK(run("%s train --config %s --data %s --out %s --seq-len 64", cli, cfg, txt, out) == 1);
  CHECK(contains("n_positions"));
  CHECK(run("%s generate --model %s --prompt 'Call me' --max-new-tokens 40 --temperature 0", cli, out) == 0);
  char first[sizeof cli_out];
  snprintf(first, sizeof first, "%s", cli_out);
  CHECK(strncmp(first, "Call me", 7) == 0);
  CHECK_MSG(strstr(first, "40 tokens in") && strstr(first, "f32 weights, KV cache"), "%s", first);
  cut_timing(first);
  CHECK(run("%s generate --model %s --prompt 'Call me' --max-new-tokens 40 --temperature 0", cli, out) == 0);
  cut_timing(cli_out);
  CHECK(strcmp(first, cli_out) == 0);
  /* bf16 weights: the same kind of text, timed as bf16 */
  CHECK(run("%s generate --model %s --prompt 'Call me' --max-new-tokens 10 --temperature 0 --precision bf16", cli, out) == 0);
  CHECK_MSG(strncmp(cli_out, "Call me", 7) == 0 && contains("bf16 weights"), "%s", cli_out);
  CHECK(run("%s generate --model %s --prompt x --precision f16", cli, out) == 2 && contains("f32 or bf16"));
  /* --recompute trains the same run: the same losses as the stored graph */
  CHECK(run("%s train --config %s --data %s --out %s_r --steps 2 --log-every 1 --eval-every 0", cli, cfg, txt, out) == 0);
  char stored[sizeof cli_out];
  snprintf(stored, sizeof stored, "%s", strstr(cli_out, "step      2/2 | loss") ? strstr(cli_out, "step      2/2") : "");
  CHECK(run("%s train --config %s --data %s --out %s_r --overwrite --steps 2 --log-every 1 --eval-every 0 --recompute",
            cli, cfg, txt, out) == 0);
  const char *again = strstr(cli_out, "step      2/2");
  CHECK_MSG(stored[0] && again && !strncmp(stored, again, strlen("step      2/2 | loss 0.0000")),
            "with --recompute: %s", cli_out);
  /* --precision bf16: the same run with bf16 matmul operands, within 1% of f32's loss */
  CHECK(run("%s train --config %s --data %s --out %s_r --overwrite --steps 2 --log-every 1 --eval-every 0 "
            "--precision bf16", cli, cfg, txt, out) == 0);
  const char *mixed = strstr(cli_out, "step      2/2 | loss");
  const double loss32 = stored[0] ? atof(stored + strlen("step      2/2 | loss")) : 0;
  const double loss16 = mixed ? atof(mixed + strlen("step      2/2 | loss")) : 0;
  CHECK_MSG(loss32 > 1 && fabs(loss16 - loss32) < 0.01 * loss32, "f32 loss %g, bf16 %g", loss32, loss16);
  CHECK(run("%s train --config %s --data %s --out %s_r --overwrite --precision f16", cli, cfg, txt, out) == 2);
  CHECK_MSG(contains("--precision is f32 or bf16, not 'f16'"), "%s", cli_out);
  run("rm -rf '%s_r'", out);
  CHECK(run("%s generate --model %s --prompt 'Call me' --max-new-tokens 5 --top-k 5 --top-p 0.9 --seed 2", cli, out) == 0);
  CHECK(run("%s generate --model %s --prompt x --top-p 2", cli, out) == 2);
  CHECK(run("%s generate --model %s/nothing --prompt x", cli, out) == 1 && contains("config.json"));
  run("rm -rf '%s'", out);
  unlink(cfg);
  unlink(txt);
}

int main(void) {
  tmpdir_template("gpt2_train");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(test_token_split);
  RUN(test_loss_goes_down);
  RUN(test_grad_accum);
  RUN(test_resume);
  RUN(test_decay_mask);
  RUN(test_sampling_greedy_and_seeds);
  RUN(test_top_p);
  RUN(test_errors);
  RUN(test_text_file);
  RUN(test_cli);
  rmdir(tmpdir);
  return test_summary("gpt2_train");
}
