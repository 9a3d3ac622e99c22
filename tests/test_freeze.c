/* test_freeze.c - training part of a model (issue 26: private fine-tuning of a BERT's top, as
 * Opacus trains it): tensor name patterns and their errors; a partly frozen graph's gradients
 * (the trained tensors' as without freezing, none for the frozen, backward stopping below the
 * lowest trained tensor) and per-example norms over the trained tensors only; AdamW and
 * DP-SGD steps that leave the frozen weights and the padding between tensors as they were;
 * GPT-2 with its tied token table frozen; refusals; `damo train --train-only / --freeze` for
 * BERT and (with --init) GPT-2. */
#include "damo.h"
#include "graph/graph.h"
#include "models/bert.h"
#include "models/gpt2.h"
#include "cli_run.h"
#include "harness.h"
#include "gpt2_fixtures.h"
#include "mail_fixtures.h"
#include "tmpfiles.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { BB = 4, TT = 6 };

static const char *const TOP = "encoder.layer.1.*,pooler.*,classifier.*";

static damo_bert *tiny_bert(void) {
  damo_bert_config c = damo_bert_config_default();
  c.vocab_size = 30, c.hidden_size = 16, c.num_hidden_layers = 2, c.num_attention_heads = 2;
  c.intermediate_size = 24, c.max_position_embeddings = 8, c.num_labels = 2, c.hidden_dropout_prob = 0.0f;
  damo_bert *m = NULL;
  CHECK(damo_bert_new(&c, 3, &m) == DAMO_OK);
  return m;
}

static int in_top(const char *name) {
  return !strncmp(name, "encoder.layer.1.", 16) || !strncmp(name, "pooler.", 7) || !strncmp(name, "classifier.", 11);
}

/* Offset and size of tensor i in the store's blocks. */
static int64_t offset_of(const param_store *s, int i) { return damo_tensor_f32(s->values[i]) - s->param_block; }

/* 1 when every padding float between the tensors of s is zero in block. */
static int padding_zero(const param_store *s, const float *block) {
  int64_t end = 0;
  for (int i = 0; i < s->n_tensors; i++) {
    const int64_t at = offset_of(s, i);
    for (int64_t k = end; k < at; k++)
      if (block[k] != 0.0f) return 0;
    end = at + damo_tensor_numel(s->values[i]);
  }
  for (int64_t k = end; k < s->n_params_padded; k++)
    if (block[k] != 0.0f) return 0;
  return 1;
}

/* Frozen tensors equal to before (bit for bit) and every trained one moved. */
static void check_moved(const param_store *s, const float *before, const char *what) {
  int frozen_kept = 1, trained_moved = 1;
  for (int i = 0; i < s->n_tensors; i++) {
    const int64_t at = offset_of(s, i), count = damo_tensor_numel(s->values[i]);
    const int same = !memcmp(s->param_block + at, before + at, (size_t)count * sizeof(float));
    if (param_store_trained(s, i)) trained_moved &= !same;
    else frozen_kept &= same;
    if (param_store_trained(s, i) && same) fprintf(stderr, "  %s: trained tensor %s did not move\n", what, s->names[i]);
  }
  CHECK_MSG(frozen_kept, "%s: a frozen tensor changed", what);
  CHECK_MSG(trained_moved, "%s: a trained tensor stayed", what);
  CHECK_MSG(padding_zero(s, s->param_block), "%s: the padding between tensors is no longer zero", what);
}

static void test_patterns(void) {
  damo_bert *m = tiny_bert();
  if (!m) return;
  CHECK(damo_bert_num_trainable_params(m) == damo_bert_num_params(m));
  EXPECT_FAIL(damo_bert_set_trainable(m, "nope.*", 0), DAMO_ERR_INVALID_ARG, "no tensor is named like 'nope.*'");
  /* one bad pattern in the list: nothing changes */
  EXPECT_FAIL(damo_bert_set_trainable(m, "classifier.*,nope", 0), DAMO_ERR_INVALID_ARG, "'nope'");
  CHECK(damo_bert_num_trainable_params(m) == damo_bert_num_params(m));
  EXPECT_FAIL(damo_bert_set_trainable(m, "", 0), DAMO_ERR_INVALID_ARG, "no tensor name pattern");
  char long_pattern[400];
  memset(long_pattern, '*', sizeof long_pattern - 1);
  long_pattern[sizeof long_pattern - 1] = '\0';
  EXPECT_FAIL(damo_bert_set_trainable(m, long_pattern, 0), DAMO_ERR_INVALID_ARG, "(399 characters)");
  EXPECT_FAIL(damo_bert_set_trainable(m, "classifier.*,,pooler.*", 0), DAMO_ERR_INVALID_ARG, "named like ''");
  CHECK(damo_bert_set_trainable(m, "*", 0) == DAMO_OK && damo_bert_num_trainable_params(m) == 0);
  damo_bert_train_options o = damo_bert_train_defaults();
  o.seq_len = TT, o.batch_size = BB, o.cls_id = 1, o.sep_id = 2, o.mask_id = 3;
  damo_bert_finetuner *f = NULL;
  EXPECT_FAIL(damo_bert_finetuner_new(m, &o, &f), DAMO_ERR_INVALID_ARG, "every tensor is frozen");
  CHECK(damo_bert_set_trainable(m, TOP, 1) == DAMO_OK);
  int64_t want = 0;
  int flags_ok = 1;
  for (int i = 0; i < damo_bert_num_tensors(m); i++) {
    const char *name = damo_bert_tensor_name(m, i);
    flags_ok &= damo_bert_tensor_trainable(m, i) == in_top(name);
    if (in_top(name)) want += damo_tensor_numel(damo_bert_param(m, name));
  }
  CHECK_MSG(flags_ok, "the tensors trained are not those named like %s", TOP);
  CHECK_MSG(damo_bert_num_trainable_params(m) == want && want > 0 && want < damo_bert_num_params(m) / 2,
            "%lld trainable, want %lld", (long long)damo_bert_num_trainable_params(m), (long long)want);
  /* the trained ranges cover exactly the trained tensors */
  int64_t covered = 0;
  for (int k = 0; k < m->p.n_trained_ranges; k++) covered += m->p.trained_ranges[2 * k + 1];
  CHECK(covered == want);
  CHECK(damo_bert_set_trainable(m, "*.bias", 0) == DAMO_OK && damo_bert_num_trainable_params(m) < want);
  damo_bert_free(m);
}

static void make_batch(int32_t *ids, int32_t *types, int32_t *mask, int32_t *labels) {
  for (int i = 0; i < BB * TT; i++) ids[i] = 1 + (i * 7) % 29, types[i] = (i % TT) > 3, mask[i] = (i % TT) < 5 || i < TT;
  for (int b = 0; b < BB; b++) labels[b] = b % 2;
}

/* The gradient of the full model, then of the model with only its top trained: the same
 * numbers for the trained tensors, zero for the frozen; each example's norm over the trained
 * tensors against that example alone. */
static void test_bert_gradients(void) {
  damo_bert *m = tiny_bert();
  if (!m) return;
  m->keep_forward = 1;
  int32_t ids[BB * TT], types[BB * TT], mask[BB * TT], labels[BB];
  make_batch(ids, types, mask, labels);
  const int64_t n = m->p.n_params_padded;
  float *full = malloc((size_t)n * sizeof(float)), *alone = calloc((size_t)(BB * n), sizeof(float)), sq[BB], loss;
  damo_bert_graph *bg = NULL;
  CHECK_MSG(damo_bert_classifier_new(m, BB, TT, 1, &bg) == DAMO_OK, "%s", damo_last_error());
  if (bg) {
    CHECK(damo_bert_graph_forward(bg, BB, ids, types, mask, labels, 0, &loss) == DAMO_OK);
    CHECK(damo_bert_graph_backward(bg) == DAMO_OK);
    memcpy(full, m->p.grad_block, (size_t)n * sizeof(float));
    for (int b = 0; b < BB; b++) {
      CHECK(damo_bert_graph_forward(bg, 1, ids + b * TT, types + b * TT, mask + b * TT, labels + b, 0, &loss) == DAMO_OK);
      CHECK(damo_bert_graph_backward(bg) == DAMO_OK);
      memcpy(alone + b * n, m->p.grad_block, (size_t)n * sizeof(float));
    }
  }
  damo_bert_graph_free(bg);
  bg = NULL;
  CHECK(damo_bert_set_trainable(m, "*", 0) == DAMO_OK && damo_bert_set_trainable(m, TOP, 1) == DAMO_OK);
  int zeroed = 1; /* gradients left from before are no step's: freezing zeroes them */
  for (int i = 0; i < m->p.n_tensors; i++)
    if (!param_store_trained(&m->p, i))
      for (int64_t k = 0; k < damo_tensor_numel(m->p.grads[i]); k++) zeroed &= damo_tensor_f32(m->p.grads[i])[k] == 0.0f;
  CHECK_MSG(zeroed, "a frozen tensor kept its old gradient");
  CHECK_MSG(damo_bert_classifier_new(m, BB, TT, 1, &bg) == DAMO_OK, "%s", damo_last_error());
  if (bg) {
    CHECK(damo_bert_graph_forward(bg, BB, ids, types, mask, labels, 0, &loss) == DAMO_OK);
    CHECK(damo_bert_graph_backward(bg) == DAMO_OK);
    int trained_same = 1, frozen_zero = 1, in_backward = 0;
    for (int i = 0; i < m->p.n_tensors; i++) {
      const int64_t at = offset_of(&m->p, i), count = damo_tensor_numel(m->p.grads[i]);
      if (param_store_trained(&m->p, i))
        trained_same &= test_close_ratio(m->p.grad_block + at, full + at, (long)count, 1e-6, 1e-5) <= 1.0;
      else
        for (int64_t k = 0; k < count; k++) frozen_zero &= m->p.grad_block[at + k] == 0.0f;
    }
    for (int p = 0; p < bg->graph->n_nodes; p++) {
      const damo_node *pn = bg->graph->nodes[p];
      in_backward += pn->op == DAMO_OP_PARAM && pn->in_backward;
      /* below the lowest trained tensor nothing is differentiated: the embeddings' gather */
      if (pn->op == DAMO_OP_EMBEDDING) CHECK_MSG(!pn->in_backward, "the embeddings are in backward");
    }
    CHECK_MSG(trained_same, "a trained tensor's gradient differs from the full model's");
    CHECK_MSG(frozen_zero, "a frozen tensor got a gradient");
    int trained_tensors = 0;
    for (int i = 0; i < m->p.n_tensors; i++) trained_tensors += param_store_trained(&m->p, i);
    CHECK_MSG(in_backward == trained_tensors, "%d params in backward for %d trained tensors", in_backward,
              trained_tensors);
    /* per-example norms: the trained tensors' part of each example's gradient */
    CHECK(damo_bert_graph_forward(bg, BB, ids, types, mask, labels, 0, &loss) == DAMO_OK);
    CHECK_MSG(damo_graph_example_norms(bg->graph, sq) == DAMO_OK, "%s", damo_last_error());
    double worst = 0;
    for (int b = 0; b < BB; b++) {
      double exact = 0;
      for (int k = 0; k < m->p.n_trained_ranges; k++)
        exact += damo_sum_squares(alone + b * n + m->p.trained_ranges[2 * k], m->p.trained_ranges[2 * k + 1]);
      worst = fmax(worst, fabs(sqrt((double)sq[b]) * BB - sqrt(exact)) / sqrt(exact));
    }
    CHECK_MSG(worst < 2e-4, "worst relative error of an example's norm over the trained tensors %.3g", worst);
  }
  damo_bert_graph_free(bg);
  damo_bert_free(m);
  free(full);
  free(alone);
}

/* Labelled examples for the fine-tuner: label 1 iff id 4 occurs. */
static void make_examples(int64_t count, int32_t *ids, int32_t *types, int32_t *mask, int32_t *labels) {
  damo_rng r;
  damo_rng_seed(&r, 17);
  for (int64_t i = 0; i < count; i++) {
    labels[i] = (int32_t)(i % 2);
    for (int t = 0; t < TT; t++) {
      ids[i * TT + t] = t == 0 ? 1 : t == TT - 1 ? 2 : 5 + (int32_t)damo_rng_below(&r, 25);
      types[i * TT + t] = 0, mask[i * TT + t] = 1;
    }
    if (labels[i]) ids[i * TT + 1 + damo_rng_below(&r, TT - 2)] = 4;
  }
}

/* AdamW (weight decay on) and DP-SGD steps on a model with only its top trained. */
static void test_bert_steps(void) {
  enum { NEX = 64 };
  int32_t ids[NEX * TT], types[NEX * TT], mask[NEX * TT], labels[NEX];
  make_examples(NEX, ids, types, mask, labels);
  for (int private = 0; private < 2; private++) {
    const char *what = private ? "DP-SGD" : "AdamW";
    damo_bert *m = tiny_bert();
    if (!m) return;
    CHECK(damo_bert_set_trainable(m, "*", 0) == DAMO_OK && damo_bert_set_trainable(m, TOP, 1) == DAMO_OK);
    const int64_t n = m->p.n_params_padded;
    float *before = malloc((size_t)n * sizeof(float));
    memcpy(before, m->p.param_block, (size_t)n * sizeof(float));
    damo_bert_train_options o = damo_bert_train_defaults();
    o.seq_len = TT, o.batch_size = 8, o.steps = 8, o.warmup_steps = 0, o.lr = 1e-2f, o.weight_decay = 0.1f;
    o.cls_id = 1, o.sep_id = 2, o.mask_id = 3;
    damo_dp_options dp = {.clip = 1, .noise = 3, .delta = 1e-3};
    o.privacy = private ? &dp : NULL;
    damo_bert_finetuner *f = NULL;
    CHECK_MSG(damo_bert_finetuner_new(m, &o, &f) == DAMO_OK, "%s: %s", what, damo_last_error());
    const damo_bert_examples train = {NEX, ids, types, mask, labels};
    if (f && private) {
      damo_bert_fit_options fit = {.epochs = 1};
      CHECK_MSG(damo_bert_finetuner_fit(f, &train, &train, &fit) == DAMO_OK, "%s: %s", what, damo_last_error());
    }
    for (int s = 0; f && !private && s < 8; s++)
      CHECK(damo_bert_finetuner_step(f, 8, ids + s * 8 * TT, types + s * 8 * TT, mask + s * 8 * TT, labels + s * 8,
                                     NULL) == DAMO_OK);
    check_moved(&m->p, before, what);
    damo_bert_finetuner_free(f);
    damo_bert_free(m);
    free(before);
  }
}

/* The tiny GPT-2 of these tests (2 blocks, width 8, 24 ids), its token stream and options. */
static damo_gpt2 *tiny_gpt2(void) {
  damo_gpt2_config c = {2, 2, 8, 8, 24, 1e-5f};
  damo_gpt2 *m = NULL;
  CHECK(damo_gpt2_new(&c, 9, &m) == DAMO_OK);
  return m;
}

static damo_token_data *tiny_stream(void) {
  int32_t stream[1200];
  for (int i = 0; i < 1200; i++) stream[i] = (i * 7 + i / 13) % 24;
  damo_token_data *d = NULL;
  CHECK(damo_token_data_from_ids(stream, 1200, 0.1, &d) == DAMO_OK);
  return d;
}

static damo_gpt2_train_options tiny_options(int64_t steps) {
  damo_gpt2_train_options o = damo_gpt2_train_defaults();
  o.steps = steps, o.batch_size = 4, o.seq_len = 5, o.lr = 1e-2f, o.warmup_steps = 0, o.eval_windows = 2, o.seed = 8;
  return o;
}

/* GPT-2 with its token and position tables frozen (the token table is also the tied LM
 * head): plain and private steps move the blocks only. */
static void test_gpt2(void) {
  damo_token_data *d = tiny_stream();
  for (int private = 0; d && private < 2; private++) {
    const char *what = private ? "GPT-2 DP-SGD" : "GPT-2 AdamW";
    damo_gpt2 *m = tiny_gpt2();
    if (!m) break;
    EXPECT_FAIL(damo_gpt2_set_trainable(m, "h.9.*", 0), DAMO_ERR_INVALID_ARG, "'h.9.*'");
    CHECK(damo_gpt2_set_trainable(m, "wte.weight,wpe.weight", 0) == DAMO_OK);
    CHECK(damo_gpt2_num_trainable_params(m) == damo_gpt2_num_params(m) - 24 * 8 - 8 * 8);
    const int64_t n = m->p.n_params_padded;
    float *before = malloc((size_t)n * sizeof(float));
    memcpy(before, m->p.param_block, (size_t)n * sizeof(float));
    damo_gpt2_train_options o = tiny_options(4);
    damo_dp_options dp = {.clip = 1, .noise = 2, .delta = 1e-3};
    o.privacy = private ? &dp : NULL;
    damo_gpt2_trainer *t = NULL;
    CHECK_MSG(damo_gpt2_trainer_new(m, d, &o, &t) == DAMO_OK, "%s: %s", what, damo_last_error());
    for (int s = 0; t && s < 4; s++) CHECK_MSG(damo_gpt2_trainer_step(t, NULL) == DAMO_OK, "%s", damo_last_error());
    check_moved(&m->p, before, what);
    damo_gpt2_trainer_free(t);
    /* everything frozen: nothing to train */
    CHECK(damo_gpt2_set_trainable(m, "*", 0) == DAMO_OK);
    EXPECT_FAIL(damo_gpt2_trainer_new(m, d, &o, &t), DAMO_ERR_INVALID_ARG, "every tensor is frozen");
    damo_gpt2_free(m);
    free(before);
  }
  damo_token_data_free(d);
}

/* A run checkpointed with every tensor trained and resumed with the first block frozen: the
 * frozen block keeps its checkpointed values although Adam's moments for it were not zero. */
static void test_resume_frozen(void) {
  damo_token_data *d = tiny_stream();
  damo_gpt2 *m = tiny_gpt2(), *m2 = tiny_gpt2();
  damo_gpt2_train_options o = tiny_options(6);
  damo_gpt2_trainer *t = NULL, *t2 = NULL;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", tmp_path("frozen_ckpt"));
  CHECK(d && m && damo_gpt2_trainer_new(m, d, &o, &t) == DAMO_OK);
  for (int s = 0; t && s < 3; s++) CHECK(damo_gpt2_trainer_step(t, NULL) == DAMO_OK);
  if (t) CHECK_MSG(damo_gpt2_trainer_save(t, dir) == DAMO_OK, "%s", damo_last_error());
  CHECK(m2 && damo_gpt2_set_trainable(m2, "h.0.*", 0) == DAMO_OK);
  CHECK(m2 && damo_gpt2_trainer_new(m2, d, &o, &t2) == DAMO_OK);
  if (t2) CHECK_MSG(damo_gpt2_trainer_resume(t2, dir) == DAMO_OK, "%s", damo_last_error());
  float *before = m2 ? malloc((size_t)m2->p.n_params_padded * sizeof(float)) : NULL;
  if (before) memcpy(before, m2->p.param_block, (size_t)m2->p.n_params_padded * sizeof(float));
  for (int s = 0; t2 && s < 3; s++) CHECK(damo_gpt2_trainer_step(t2, NULL) == DAMO_OK);
  if (before) check_moved(&m2->p, before, "resumed with h.0 frozen");
  free(before);
  damo_gpt2_trainer_free(t);
  damo_gpt2_trainer_free(t2);
  damo_gpt2_free(m);
  damo_gpt2_free(m2);
  damo_token_data_free(d);
}

/* Fine-tuning from the command line: a first model, then only its classifier trained from it. */
static void test_cli(void) {
  write_labelled_mails(80);
  char cfg[512], first[512], top[512];
  snprintf(cfg, sizeof cfg, "%s", tmp_path("freeze_bert.json"));
  snprintf(first, sizeof first, "%s", tmp_path("first"));
  snprintf(top, sizeof top, "%s", tmp_path("top"));
  FILE *f = fopen(cfg, "w");
  if (!f) return;
  fputs("{\"model_type\": \"bert\", \"vocab_size\": 40, \"hidden_size\": 16, \"num_hidden_layers\": 2, "
        "\"num_attention_heads\": 2, \"intermediate_size\": 32, \"max_position_embeddings\": 32, "
        "\"finetune\": {\"epochs\": 1, \"batch_size\": 8, \"seq_len\": 16, \"lr\": 0.003, \"seed\": 3}}", f);
  fclose(f);
  int rc = run("%s train --config %s --data %s --vocab %s --out %s", DAMO_CLI_PATH, cfg, tmp_path("mails"),
               tmp_path("vocab.txt"), first);
  CHECK_MSG(rc == 0, "%s", cli_out);
  rc = run("%s train --config %s --data %s --vocab %s --init %s --out %s --train-only 'encoder.layer.1.*,classifier.*' "
           "--freeze '*.bias' --dp-clip 1 --dp-noise 1 --dp-delta 1e-3", DAMO_CLI_PATH, cfg, tmp_path("mails"),
           tmp_path("vocab.txt"), first, top);
  CHECK_MSG(rc == 0 && strstr(cli_out, "trained: ") && strstr(cli_out, "--train-only encoder.layer.1.*,classifier.*, "
                                                                      "--freeze *.bias); the rest frozen"), "%s", cli_out);
  damo_bert *a = NULL, *b = NULL;
  CHECK_MSG(damo_bert_load(first, 2, 1, &a) == DAMO_OK && damo_bert_load(top, 2, 1, &b) == DAMO_OK, "%s",
            damo_last_error());
  for (int i = 0; a && b && i < damo_bert_num_tensors(a); i++) {
    const char *name = damo_bert_tensor_name(a, i);
    const damo_tensor *x = damo_bert_param(a, name), *y = damo_bert_param(b, name);
    const int same = !memcmp(x->data, y->data, (size_t)damo_tensor_numel(x) * sizeof(float));
    const size_t len = strlen(name);
    const int trained = (!strncmp(name, "encoder.layer.1.", 16) || !strncmp(name, "classifier.", 11)) &&
                        !(len > 5 && !strcmp(name + len - 5, ".bias"));
    if (!strncmp(name, "cls.", 4)) continue; /* the masked-LM head: not the classifier's */
    CHECK_MSG(same != trained, "%s: %s", name, trained ? "trained but unchanged" : "frozen but changed");
  }
  damo_bert_free(a);
  damo_bert_free(b);
  rc = run("%s train --config %s --data %s --vocab %s --init %s --out %s --overwrite --freeze 'nope*'", DAMO_CLI_PATH,
           cfg, tmp_path("mails"), tmp_path("vocab.txt"), first, top);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--freeze: bert_set_trainable: no tensor is named like 'nope*'"), "%s", cli_out);
}

/* GPT-2 from the command line: a model trained from scratch, then only its second block
 * trained from it (--init); skipped without the GPT-2 vocabulary. */
static void test_gpt2_cli(void) {
  char cfg[512], text[512], first[512], top[512];
  if (!gpt2_vocab_installed() || !write_tiny_gpt2("freeze_gpt2", 2, 200, cfg, text, sizeof cfg)) return;
  snprintf(first, sizeof first, "%s", tmp_path("gpt2_first"));
  snprintf(top, sizeof top, "%s", tmp_path("gpt2_top"));
  int rc = run("%s train --config %s --data %s --out %s --eval-every 0", DAMO_CLI_PATH, cfg, text, first);
  CHECK_MSG(rc == 0, "%s", cli_out);
  rc = run("%s train --config %s --data %s --out %s --eval-every 0 --init %s --train-only 'h.1.*' --dp-clip 1 "
           "--dp-noise 0.5 --dp-delta 1e-3", DAMO_CLI_PATH, cfg, text, top, first);
  CHECK_MSG(rc == 0 && strstr(cli_out, "initial weights: ") && strstr(cli_out, "(--train-only h.1.*); the rest frozen"),
            "%s", cli_out);
  damo_gpt2 *a = NULL, *b = NULL;
  CHECK_MSG(damo_gpt2_load(first, &a) == DAMO_OK && damo_gpt2_load(top, &b) == DAMO_OK, "%s", damo_last_error());
  int tensors = 0;
  for (int i = 0; a && b && i < damo_gpt2_num_tensors(a); i++, tensors++) {
    const char *name = damo_gpt2_tensor_name(a, i);
    const damo_tensor *x = damo_gpt2_param(a, name), *y = damo_gpt2_param(b, name);
    const int same = !memcmp(x->data, y->data, (size_t)damo_tensor_numel(x) * sizeof(float));
    CHECK_MSG(same == !!strncmp(name, "h.1.", 4), "%s: %s", name, same ? "trained but unchanged" : "frozen but changed");
  }
  CHECK(tensors == 2 + 2 * 12 + 2);
  damo_gpt2_free(a);
  damo_gpt2_free(b);
  /* --init names a directory that is no model */
  rc = run("%s train --config %s --data %s --out %s --overwrite --init %s", DAMO_CLI_PATH, cfg, text, top, tmp_path("mails"));
  CHECK_MSG(rc != 0 && strstr(cli_out, "train --init"), "%s", cli_out);
}

int main(void) {
  tmpdir_template("freeze");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_patterns);
  RUN(test_bert_gradients);
  RUN(test_bert_steps);
  RUN(test_gpt2);
  RUN(test_resume_frozen);
  RUN(test_cli);
  RUN(test_gpt2_cli);
  run("rm -rf %s", tmpdir);
  return test_summary("freeze");
}
