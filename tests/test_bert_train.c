/* test_bert_train.c - BERT's trainers on small synthetic tasks a tiny model must learn:
 * masked-LM pre-training on a stream whose tokens follow from their neighbours (validation
 * loss must fall far below chance, the same numbers for the same seed), and classifier
 * fine-tuning on sequences labelled by whether a marker token occurs (held-out accuracy),
 * plus the options' checks. */
#include "damo.h"
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { V = 40, T = 16 };

static damo_bert_config tiny_config(void) {
  damo_bert_config c = damo_bert_config_default();
  c.vocab_size = V, c.hidden_size = 32, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.intermediate_size = 64, c.max_position_embeddings = T, c.num_labels = 2;
  c.hidden_dropout_prob = 0.0f;
  return c;
}

static damo_bert_train_options tiny_options(int64_t steps) {
  damo_bert_train_options o = damo_bert_train_defaults();
  o.steps = steps, o.batch_size = 16, o.seq_len = T, o.predictions = 5, o.lr = 3e-3f, o.warmup_steps = 10;
  o.mask_prob = 0.3f, o.eval_windows = 32, o.cls_id = 1, o.sep_id = 2, o.mask_id = 3;
  return o;
}

/* Ids 5..39 in runs of one repeated id (a new run with probability 1/12): a masked token is
 * its neighbours' id, except at run boundaries. */
static int32_t *counting_stream(int64_t n, uint64_t seed) {
  int32_t *ids = malloc((size_t)n * sizeof *ids);
  damo_rng r;
  damo_rng_seed(&r, seed);
  int32_t cur = 5;
  for (int64_t i = 0; i < n; i++) {
    if (damo_rng_below(&r, 12) == 0) cur = 5 + (int32_t)damo_rng_below(&r, V - 5); /* a new run */
    ids[i] = cur;
  }
  return ids;
}

static void pretrain(uint64_t seed, int steps, float *first_val, float *last_val, float *last_train) {
  damo_bert_config c = tiny_config();
  damo_bert *m = NULL;
  CHECK(damo_bert_new(&c, seed, &m) == DAMO_OK);
  int32_t *ids = counting_stream(6000, 9);
  damo_bert_train_options o = tiny_options(steps);
  damo_bert_pretrainer *t = NULL;
  CHECK_MSG(damo_bert_pretrainer_new(m, ids, 6000, &o, &t) == DAMO_OK, "%s", damo_last_error());
  if (t) {
    CHECK(damo_bert_pretrainer_eval(t, first_val) == DAMO_OK);
    damo_bert_step_report rep = {0};
    for (int s = 0; s < steps; s++) CHECK(damo_bert_pretrainer_step(t, &rep) == DAMO_OK);
    CHECK(rep.step == steps && damo_bert_pretrainer_steps_done(t) == steps);
    CHECK(damo_bert_pretrainer_eval(t, last_val) == DAMO_OK);
    *last_train = rep.loss;
  }
  damo_bert_pretrainer_free(t);
  damo_bert_free(m);
  free(ids);
}

static void test_pretraining_learns(void) {
  float v0, v1, tr, w0, w1, wtr;
  pretrain(3, 300, &v0, &v1, &tr);
  fprintf(stderr, "  masked LM: validation loss %.3f -> %.3f after 300 steps (chance ln %d = %.3f)\n", v0, v1, V,
          log((double)V));
  CHECK_MSG(fabsf(v0 - (float)log((double)V)) < 0.5f, "initial loss %.3f, chance %.3f", v0, log((double)V));
  CHECK_MSG(v1 < 0.7f * (float)log((double)V), "validation loss %.3f after 300 steps", v1);
  pretrain(3, 300, &w0, &w1, &wtr); /* the same seed: the same run */
  CHECK(v0 == w0 && v1 == w1 && tr == wtr);
}

/* Label 1 iff marker id 4 occurs among the real tokens; lengths vary, the rest is padding. */
static void make_examples(int64_t n, uint64_t seed, int32_t *ids, int32_t *types, int32_t *mask, int32_t *labels) {
  damo_rng r;
  damo_rng_seed(&r, seed);
  for (int64_t i = 0; i < n; i++) {
    const int64_t len = 4 + (int64_t)damo_rng_below(&r, T - 4);
    labels[i] = (int32_t)damo_rng_below(&r, 2);
    for (int64_t t = 0; t < T; t++) {
      const int real = t < len;
      ids[i * T + t] = !real ? 0 : t == 0 ? 1 : t == len - 1 ? 2 : 5 + (int32_t)damo_rng_below(&r, V - 5);
      types[i * T + t] = 0;
      mask[i * T + t] = real;
    }
    if (labels[i]) ids[i * T + 1 + (int64_t)damo_rng_below(&r, (uint32_t)(len - 2))] = 4;
  }
}

static void test_finetuning_learns(void) {
  enum { N_TRAIN = 512, N_TEST = 128, STEPS = 160, B = 16 };
  damo_bert_config c = tiny_config();
  damo_bert *m = NULL;
  CHECK(damo_bert_new(&c, 5, &m) == DAMO_OK);
  damo_bert_train_options o = tiny_options(STEPS);
  o.lr = 1e-3f;
  damo_bert_finetuner *f = NULL;
  CHECK_MSG(damo_bert_finetuner_new(m, &o, &f) == DAMO_OK, "%s", damo_last_error());
  int32_t *ids = malloc(sizeof(int32_t) * (N_TRAIN + N_TEST) * T), *types = malloc(sizeof(int32_t) * (N_TRAIN + N_TEST) * T);
  int32_t *mask = malloc(sizeof(int32_t) * (N_TRAIN + N_TEST) * T), *labels = malloc(sizeof(int32_t) * (N_TRAIN + N_TEST));
  make_examples(N_TRAIN + N_TEST, 77, ids, types, mask, labels);
  for (int s = 0; f && s < STEPS; s++) {
    const int64_t first = (int64_t)s * B % N_TRAIN;
    CHECK(damo_bert_finetuner_step(f, B, ids + first * T, types + first * T, mask + first * T, labels + first, NULL) ==
          DAMO_OK);
  }
  int correct = 0;
  float probs[B * 2];
  for (int64_t first = N_TRAIN; f && first < N_TRAIN + N_TEST; first += B) {
    CHECK(damo_bert_finetuner_predict(f, B, ids + first * T, types + first * T, mask + first * T, probs) == DAMO_OK);
    for (int b = 0; b < B; b++) {
      CHECK(fabsf(probs[2 * b] + probs[2 * b + 1] - 1.0f) < 1e-5f);
      correct += (probs[2 * b + 1] > 0.5f) == (labels[first + b] == 1);
    }
  }
  fprintf(stderr, "  classifier: held-out accuracy %.3f after %d steps\n", correct / (double)N_TEST, STEPS);
  CHECK_MSG(correct >= 0.95 * N_TEST, "held-out accuracy %d / %d", correct, N_TEST);
  damo_bert_finetuner_free(f);
  damo_bert_free(m);
  free(ids);
  free(types);
  free(mask);
  free(labels);
}

static void test_option_errors(void) {
  damo_bert_config c = tiny_config();
  damo_bert *m = NULL;
  CHECK(damo_bert_new(&c, 1, &m) == DAMO_OK);
  int32_t *ids = counting_stream(200, 1);
  damo_bert_pretrainer *t = NULL;
  damo_bert_train_options o = tiny_options(10);
  o.seq_len = T + 1;
  CHECK(damo_bert_pretrainer_new(m, ids, 200, &o, &t) == DAMO_ERR_INVALID_ARG);
  o = tiny_options(10);
  o.predictions = T - 1;
  CHECK(damo_bert_pretrainer_new(m, ids, 200, &o, &t) == DAMO_ERR_INVALID_ARG);
  o = tiny_options(10);
  o.mask_id = V;
  CHECK(damo_bert_pretrainer_new(m, ids, 200, &o, &t) == DAMO_ERR_INVALID_ARG);
  o = tiny_options(10);
  CHECK(damo_bert_pretrainer_new(m, ids, 20, &o, &t) == DAMO_ERR_INVALID_ARG); /* too short */
  ids[50] = V;
  CHECK(damo_bert_pretrainer_new(m, ids, 200, &o, &t) == DAMO_ERR_INVALID_ARG);
  CHECK(strstr(damo_last_error(), "token 50") != NULL);
  CHECK(t == NULL);
  damo_clear_error();
  free(ids);
  damo_bert_free(m);
}

int main(void) {
  RUN(test_pretraining_learns);
  RUN(test_finetuning_learns);
  RUN(test_option_errors);
  return test_summary("test_bert_train");
}
