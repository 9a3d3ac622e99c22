/* test_bert.c - BERT against a PyTorch reference (tests/ref/gen_bert.py writes
 * tests/fixtures/bert_tiny/, a HuggingFace directory with the "bert." prefix, every head and
 * the tied decoder, and tests/fixtures/bert_tiny_ref.safetensors): classifier logits, loss and
 * every gradient with padded rows and a sentence pair; a smaller running batch; save / reload
 * in HuggingFace's layout; checkpoints without heads; dropout; clear errors for bad files and
 * bad inputs; fresh initialisation; a few descent steps. TEST_BERT_VERBOSE=1 prints the worst
 * errors. */
#include "damo.h"
#include "harness.h"
#include "model_ref.h"
#include "tmpfiles.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL_DIR DAMO_SOURCE_DIR "/tests/fixtures/bert_tiny"
#define REF_PATH DAMO_SOURCE_DIR "/tests/fixtures/bert_tiny_ref.safetensors"

static int32_t *ref_i32(const char *name) {
  damo_tensor *t = ref_get(name);
  return t ? damo_tensor_i32(t) : NULL;
}

enum { B = 3, T = 12, LABELS = 3 };

static damo_status forward_ref(damo_bert_graph *bg, int64_t batch, int dropout, float *loss) {
  return damo_bert_graph_forward(bg, batch, ref_i32("input_ids"), ref_i32("token_type_ids"), ref_i32("attention_mask"),
                                 ref_i32("labels"), dropout, loss);
}

/* Every parameter gradient of m against the reference's "<prefix><name>" tensors; a tensor
 * without one must be an `absent_ok` one (it takes no part in that loss) and then have a zero
 * gradient. Returns how many were compared; *worst_err / *worst get the largest error. */
static int compare_grads(const damo_bert *m, const char *prefix, int (*absent_ok)(const char *name), double *worst_err,
                         const char **worst) {
  int compared = 0;
  *worst_err = 0, *worst = "";
  for (int i = 0; i < damo_bert_num_tensors(m); i++) {
    const char *name = damo_bert_tensor_name(m, i);
    char key[160];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    damo_tensor *want = damo_tensor_dict_get(ref, key), *got = damo_bert_grad(m, name);
    if (!want) {
      CHECK_MSG(absent_ok(name), "no reference gradient for %s", name);
      const float *g = damo_tensor_f32(got);
      for (int64_t j = 0; j < damo_tensor_numel(got); j++) CHECK(g[j] == 0.0f);
      continue;
    }
    compared++;
    CHECK(damo_tensor_numel(want) == damo_tensor_numel(got));
    double r = test_close_ratio(damo_tensor_f32(got), damo_tensor_f32(want), (long)damo_tensor_numel(want), GRAD_ATOL,
                                GRAD_RTOL);
    CHECK_MSG(r <= 1.0, "gradient %s%s: worst error %.3g x tolerance", prefix, name, r);
    double e = max_rel_error(damo_tensor_f32(got), damo_tensor_f32(want), damo_tensor_numel(want));
    if (e > *worst_err) *worst_err = e, *worst = name;
  }
  return compared;
}

/* The masked-LM head takes no part in the classifier's loss, the pooler and classifier none
 * in the masked-LM loss. */
static int is_mlm_head(const char *name) { return strncmp(name, "cls.", 4) == 0; }
static int is_classifier_head(const char *name) {
  return !strncmp(name, "pooler.", 7) || !strncmp(name, "classifier.", 11);
}

/* ------------------------------------------------------------------ reference equality */

static void test_reference(void) {
  damo_bert *m = NULL;
  CHECK_MSG(damo_bert_load(MODEL_DIR, 0, 1, &m) == DAMO_OK, "%s", damo_last_error());
  if (!m) return;
  const damo_bert_config *c = damo_bert_get_config(m);
  CHECK(c->vocab_size == 99 && c->hidden_size == 32 && c->num_hidden_layers == 2 && c->num_attention_heads == 4 &&
        c->intermediate_size == 64 && c->max_position_embeddings == 24 && c->type_vocab_size == 2 &&
        c->num_labels == LABELS && c->hidden_dropout_prob == 0.0f && c->layer_norm_eps == 1e-12f);
  CHECK(damo_bert_num_tensors(m) == 5 + 2 * 16 + 9);
  for (int i = 0; i < damo_bert_num_tensors(m); i++)
    CHECK_MSG(damo_bert_tensor_loaded(m, i), "%s was not read from the file", damo_bert_tensor_name(m, i));

  damo_tensor *logits_ref = ref_get("logits"), *loss_ref = ref_get("loss");
  damo_bert_graph *bg = NULL;
  CHECK_MSG(damo_bert_classifier_new(m, B, T, 1, &bg) == DAMO_OK, "%s", damo_last_error());
  if (!bg || !logits_ref || !loss_ref) {
    damo_bert_free(m);
    return;
  }
  float loss = 0;
  CHECK_MSG(forward_ref(bg, B, 0, &loss) == DAMO_OK, "%s", damo_last_error());
  const float *logits = damo_bert_graph_logits(bg);
  CHECK_CLOSE(logits, damo_tensor_f32(logits_ref), B * LABELS, LOGIT_ATOL, LOGIT_RTOL);
  double logit_err = max_rel_error(logits, damo_tensor_f32(logits_ref), B * LABELS);
  double loss_err = fabs(loss - damo_tensor_f32(loss_ref)[0]) / fabs(damo_tensor_f32(loss_ref)[0]);
  CHECK_MSG(loss_err < 1e-5, "loss %.8g vs %.8g", loss, damo_tensor_f32(loss_ref)[0]);

  CHECK_MSG(damo_bert_graph_backward(bg) == DAMO_OK, "%s", damo_last_error());
  double grad_err;
  const char *worst;
  int compared = compare_grads(m, "grad.", is_mlm_head, &grad_err, &worst);
  CHECK(compared == 5 + 2 * 16 + 4);
  if (verbose)
    fprintf(stderr, "    max relative error vs PyTorch: logits %.3g, loss %.3g, gradients %.3g (%s)\n", logit_err,
            loss_err, grad_err, worst);

  /* An inference graph built for 3 rows run with 2: the first two rows' logits. */
  damo_bert_graph *inf = NULL;
  CHECK(damo_bert_classifier_new(m, B, T, 0, &inf) == DAMO_OK);
  if (inf) {
    CHECK(forward_ref(inf, 2, 0, NULL) == DAMO_OK);
    CHECK_CLOSE(damo_bert_graph_logits(inf), damo_tensor_f32(logits_ref), 2 * LABELS, LOGIT_ATOL, LOGIT_RTOL);
    CHECK(damo_bert_graph_backward(inf) == DAMO_ERR_STATE);
  }
  damo_bert_graph_free(inf);
  damo_bert_graph_free(bg);
  damo_bert_free(m);
}

/* Sentence embeddings from the encoder graph: the pooler's output for [CLS] and the mean of
 * the last hidden states over the real positions, against the reference's (padding rows of
 * different lengths); an encoder graph classifies nothing, and a pooling it lacks is refused. */
static void test_embeddings(void) {
  damo_bert *m = NULL;
  damo_bert_graph *enc = NULL;
  CHECK(damo_bert_load(MODEL_DIR, 0, 1, &m) == DAMO_OK);
  CHECK_MSG(m && damo_bert_encoder_new(m, B, T, &enc) == DAMO_OK, "%s", damo_last_error());
  if (!enc) {
    damo_bert_free(m);
    return;
  }
  const int H = damo_bert_get_config(m)->hidden_size;
  float *got = malloc((size_t)B * H * sizeof *got), probs[B * LABELS];
  static const char *const names[2] = {"pooled_cls", "pooled_mean"};
  for (int k = 0; k < 2; k++) {
    damo_tensor *want = ref_get(names[k]);
    CHECK(want && damo_tensor_numel(want) == (int64_t)B * H);
    CHECK(damo_bert_embed(enc, B, ref_i32("input_ids"), ref_i32("token_type_ids"), ref_i32("attention_mask"),
                          k ? DAMO_BERT_POOL_MEAN : DAMO_BERT_POOL_CLS, got) == DAMO_OK);
    if (want) CHECK_CLOSE(got, damo_tensor_f32(want), B * H, LOGIT_ATOL, LOGIT_RTOL);
  }
  EXPECT_FAIL(damo_bert_embed(enc, B, ref_i32("input_ids"), ref_i32("token_type_ids"), ref_i32("attention_mask"),
                              (damo_bert_pooling)7, got), DAMO_ERR_INVALID_ARG, "pooling 7");
  EXPECT_FAIL(damo_bert_classify(enc, B, ref_i32("input_ids"), ref_i32("token_type_ids"), ref_i32("attention_mask"),
                                 probs), DAMO_ERR_STATE, "inference classifier graph");
  free(got);
  damo_bert_graph_free(enc);
  damo_bert_free(m);
}

/* ------------------------------------------------------------------ files */

static void test_save_reload(void) {
  damo_bert *m = NULL, *back = NULL;
  CHECK(damo_bert_load(MODEL_DIR, 0, 1, &m) == DAMO_OK);
  if (!m) return;
  const char *dir = tmp_path("saved");
  CHECK(damo_bert_label_name(m, 0) == NULL); /* the fixture has transformers' LABEL_i */
  const char *names[3] = {"ham", "spam", "other"};
  CHECK(damo_bert_set_label_names(m, 2, names) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_bert_set_label_names(m, 3, names) == DAMO_OK);
  damo_clear_error();
  CHECK_MSG(damo_bert_save(m, dir) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(damo_bert_load(dir, 0, 2, &back) == DAMO_OK, "%s", damo_last_error());
  if (back) {
    int64_t n1, n2;
    const float *p1 = damo_bert_param_block(m, &n1), *p2 = damo_bert_param_block(back, &n2);
    CHECK(n1 == n2 && memcmp(p1, p2, (size_t)n1 * sizeof(float)) == 0);
    CHECK(memcmp(damo_bert_get_config(m), damo_bert_get_config(back), sizeof(damo_bert_config)) == 0);
    CHECK(damo_bert_label_name(back, 1) && !strcmp(damo_bert_label_name(back, 1), "spam"));
  }
  /* HuggingFace's names: the encoder and pooler under "bert.", the heads as they are. */
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  if (d) {
    CHECK(damo_tensor_dict_get(d, "bert.embeddings.word_embeddings.weight") != NULL);
    CHECK(damo_tensor_dict_get(d, "bert.encoder.layer.1.output.LayerNorm.bias") != NULL);
    CHECK(damo_tensor_dict_get(d, "bert.pooler.dense.weight") != NULL);
    CHECK(damo_tensor_dict_get(d, "classifier.weight") != NULL);
    CHECK(damo_tensor_dict_get(d, "cls.predictions.bias") != NULL);
    damo_tensor_dict_free(d);
  }
  damo_bert_free(back);
  damo_bert_free(m);
}

/* Copies the fixture's tensors into dir/model.safetensors, leaving out those whose name
 * contains `drop` (NULL: none), renaming `rename_from` to `rename_to`, and replacing the
 * first value of `poison` (if any) with v. */
static void write_variant(const char *dir, const char *drop, const char *rename_from, const char *rename_to,
                          const char *poison, float v) {
  mkdir(dir, 0755);
  damo_tensor_dict *src = NULL, *out = damo_tensor_dict_new();
  CHECK(damo_safetensors_load(MODEL_DIR "/model.safetensors", &src) == DAMO_OK);
  for (int k = 0; src && k < src->count; k++) {
    const char *name = src->names[k];
    if (drop && strstr(name, drop)) continue;
    damo_tensor *t = src->tensors[k], *copy = damo_tensor_new(t->dtype, t->ndim, t->shape);
    memcpy(copy->data, t->data, damo_tensor_nbytes(t));
    if (poison && !strcmp(name, poison)) damo_tensor_f32(copy)[0] = v;
    damo_tensor_dict_add(out, rename_from && !strcmp(name, rename_from) ? rename_to : name, copy);
  }
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(damo_safetensors_save(path, out, NULL, 0) == DAMO_OK);
  damo_tensor_dict_free(src);
  damo_tensor_dict_free(out);
  char cfg[4096];
  FILE *f = fopen(MODEL_DIR "/config.json", "rb");
  size_t n = f ? fread(cfg, 1, sizeof cfg, f) : 0;
  if (f) fclose(f);
  CHECK(n > 0 && n < sizeof cfg);
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_bytes(path, cfg, n);
}

/* A BertModel checkpoint (no heads): the heads are initialised from the seed, the same for
 * the same seed, and num_labels may be chosen. */
static void test_missing_heads(void) {
  const char *dir = tmp_path("bert_model_only");
  write_variant(dir, "cls", NULL, NULL, NULL, 0);
  /* drop the classifier and pooler too */
  damo_tensor_dict *d = NULL;
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  damo_tensor_dict *kept = damo_tensor_dict_new();
  for (int k = 0; d && k < d->count; k++) {
    if (strstr(d->names[k], "pooler") || strstr(d->names[k], "classifier")) continue;
    damo_tensor *t = d->tensors[k], *copy = damo_tensor_new(t->dtype, t->ndim, t->shape);
    memcpy(copy->data, t->data, damo_tensor_nbytes(t));
    damo_tensor_dict_add(kept, d->names[k], copy);
  }
  CHECK(damo_safetensors_save(path, kept, NULL, 0) == DAMO_OK);
  damo_tensor_dict_free(d);
  damo_tensor_dict_free(kept);

  damo_bert *a = NULL, *b = NULL, *full = NULL;
  CHECK_MSG(damo_bert_load(dir, 2, 7, &a) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_bert_load(dir, 2, 7, &b) == DAMO_OK);
  CHECK(damo_bert_load(MODEL_DIR, 0, 7, &full) == DAMO_OK);
  if (a && b && full) {
    CHECK(damo_bert_get_config(a)->num_labels == 2);
    int fresh = 0;
    for (int i = 0; i < damo_bert_num_tensors(a); i++) {
      const char *name = damo_bert_tensor_name(a, i);
      int head = !strncmp(name, "pooler", 6) || !strncmp(name, "classifier", 10) || !strncmp(name, "cls.", 4);
      CHECK_MSG(damo_bert_tensor_loaded(a, i) == !head, "%s loaded flag", name);
      fresh += !damo_bert_tensor_loaded(a, i);
      if (!head)
        CHECK(!memcmp(damo_bert_param(a, name)->data, damo_bert_param(full, name)->data,
                      damo_tensor_nbytes(damo_bert_param(a, name))));
    }
    CHECK(fresh == 9);
    int64_t n;
    const float *pa = damo_bert_param_block(a, &n), *pb = damo_bert_param_block(b, NULL);
    CHECK(memcmp(pa, pb, (size_t)n * sizeof(float)) == 0);
    const damo_tensor *w = damo_bert_param(a, "classifier.weight");
    CHECK(w->shape[0] == 2 && w->shape[1] == 32);
    double sq = 0;
    for (int64_t j = 0; j < damo_tensor_numel(w); j++) sq += (double)damo_tensor_f32(w)[j] * damo_tensor_f32(w)[j];
    double std = sqrt(sq / (double)damo_tensor_numel(w));
    CHECK_MSG(std > 0.01 && std < 0.03, "fresh classifier std %.4f, want ~0.02", std);
  }
  /* A stored classifier of another width is refused. */
  damo_bert *wrong = NULL;
  EXPECT_FAIL(damo_bert_load(MODEL_DIR, 2, 7, &wrong), DAMO_ERR_SHAPE, "num_labels 2");
  damo_bert_free(a);
  damo_bert_free(b);
  damo_bert_free(full);
}

static void test_bad_files(void) {
  damo_bert *m = NULL;
  const char *dir = tmp_path("bad");
  write_variant(dir, "encoder.layer.1.output.dense.weight", NULL, NULL, NULL, 0);
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_FORMAT, "missing tensor 'encoder.layer.1.output.dense.weight'");
  write_variant(dir, NULL, "bert.pooler.dense.bias", "bert.pooler.dense.extra", NULL, 0);
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_FORMAT, "unexpected tensor 'bert.pooler.dense.extra'");
  write_variant(dir, NULL, NULL, NULL, "cls.predictions.decoder.weight", 5.0f);
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_UNSUPPORTED, "cls.predictions.decoder.weight");
  write_variant(dir, NULL, NULL, NULL, "bert.embeddings.LayerNorm.weight", NAN);
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_NUMERIC, "bert.embeddings.LayerNorm.weight");
  /* gamma / beta spellings of old checkpoints are read as weight / bias */
  write_variant(dir, NULL, "bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.gamma", NULL, 0);
  CHECK_MSG(damo_bert_load(dir, 0, 1, &m) == DAMO_OK, "%s", damo_last_error());
  damo_bert_free(m);
  m = NULL;
  /* config.json problems name the file and the field */
  char path[600];
  snprintf(path, sizeof path, "%s/config.json", dir);
  const char *relu = "{\"model_type\": \"bert\", \"hidden_act\": \"relu\", \"vocab_size\": 99}";
  write_bytes(path, relu, strlen(relu));
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_UNSUPPORTED, "hidden_act");
  const char *missing = "{\"model_type\": \"bert\", \"vocab_size\": 99, \"hidden_size\": 32}";
  write_bytes(path, missing, strlen(missing));
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_FORMAT, "num_hidden_layers");
  const char *odd = "{\"vocab_size\": 99, \"hidden_size\": 30, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
                    "\"intermediate_size\": 8, \"max_position_embeddings\": 8}";
  write_bytes(path, odd, strlen(odd));
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_INVALID_ARG, "not a multiple");
  /* Issue 18.6: sizes far beyond the weights file are refused before allocating them */
  const char *huge = "{\"vocab_size\": 30522, \"hidden_size\": 1024, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, "
                     "\"intermediate_size\": 4096, \"max_position_embeddings\": 512}";
  write_bytes(path, huge, strlen(huge));
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_FORMAT, "config.json: the sizes (num_hidden_layers 4, hidden_size 1024");
  CHECK_MSG(strstr(damo_last_error(), "need at least 82112512 weights but") && strstr(damo_last_error(), "model.safetensors holds"),
            "%s", damo_last_error());
  write_bytes(path, "{\"vocab", 7);
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_FORMAT, "config.json: not valid JSON at byte offset");
  /* Issue 18.5: strict JSON; a repeated key was "first wins", trailing data ignored */
  const char *twice = "{\"model_type\": \"bert\", \"hidden_act\": \"gelu\", \"hidden_act\": \"relu\"}";
  write_bytes(path, twice, strlen(twice));
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_FORMAT, "config.json: duplicate key \"hidden_act\" at byte offset 45");
  write_bytes(path, "{\"model_type\": \"bert\"} {}", 26);
  EXPECT_FAIL(damo_bert_load(dir, 0, 1, &m), DAMO_ERR_FORMAT, "config.json: unexpected data after the JSON value at byte offset 23");
  CHECK(m == NULL);
  damo_clear_error();
}

/* ------------------------------------------------------------------ inputs, dropout, training */

static void test_bad_inputs(void) {
  damo_bert *m = NULL;
  CHECK(damo_bert_load(MODEL_DIR, 0, 1, &m) == DAMO_OK);
  damo_bert_graph *bg = NULL;
  CHECK(damo_bert_classifier_new(m, B, T, 1, &bg) == DAMO_OK);
  if (bg) {
    int32_t ids[B * T], types[B * T], mask[B * T], labels[B] = {0, 1, 2};
    memcpy(ids, ref_i32("input_ids"), sizeof ids);
    memcpy(types, ref_i32("token_type_ids"), sizeof types);
    memcpy(mask, ref_i32("attention_mask"), sizeof mask);
    mask[5] = 2;
    EXPECT_FAIL(damo_bert_graph_forward(bg, B, ids, types, mask, labels, 0, NULL), DAMO_ERR_INVALID_ARG,
                "attention_mask[0][5]");
    mask[5] = 1;
    types[T + 3] = 2;
    EXPECT_FAIL(damo_bert_graph_forward(bg, B, ids, types, mask, labels, 0, NULL), DAMO_ERR_INVALID_ARG,
                "token_type_ids[1][3]");
    types[T + 3] = 0;
    ids[2] = 99;
    CHECK(damo_bert_graph_forward(bg, B, ids, types, mask, labels, 0, NULL) != DAMO_OK);
    ids[2] = 5;
    labels[1] = LABELS;
    CHECK(damo_bert_graph_forward(bg, B, ids, types, mask, labels, 0, NULL) == DAMO_ERR_INVALID_ARG);
    labels[1] = 1;
    EXPECT_FAIL(damo_bert_graph_forward(bg, B + 1, ids, types, mask, labels, 0, NULL), DAMO_ERR_INVALID_ARG, "batch");
    CHECK(damo_bert_graph_forward(bg, B, ids, types, mask, labels, 0, NULL) == DAMO_OK);
  }
  damo_bert_graph *too_long = NULL;
  EXPECT_FAIL(damo_bert_classifier_new(m, 1, 25, 0, &too_long), DAMO_ERR_INVALID_ARG, "max_position_embeddings 24");
  damo_bert_graph_free(bg);
  damo_bert_free(m);
  damo_clear_error();
}

/* Dropout changes a training forward and leaves an inference one alone; a few plain
 * gradient steps on the reference batch lower its loss. */
static void test_dropout_and_descent(void) {
  damo_bert_config c = damo_bert_config_default();
  c.vocab_size = 99, c.hidden_size = 32, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.intermediate_size = 64, c.max_position_embeddings = 24, c.num_labels = LABELS;
  damo_bert *m = NULL;
  CHECK(damo_bert_new(&c, 3, &m) == DAMO_OK);
  if (!m) return;
  /* HuggingFace's initialisation: N(0, 0.02), the [PAD] row zero, LayerNorm 1 / 0. */
  const damo_tensor *we = damo_bert_param(m, "embeddings.word_embeddings.weight");
  for (int j = 0; j < 32; j++) CHECK(damo_tensor_f32(we)[j] == 0.0f);
  CHECK(damo_tensor_f32(damo_bert_param(m, "encoder.layer.0.output.LayerNorm.weight"))[7] == 1.0f);
  const damo_tensor *qw = damo_bert_param(m, "encoder.layer.1.attention.self.query.weight");
  double sq = 0;
  for (int64_t j = 0; j < damo_tensor_numel(qw); j++) sq += (double)damo_tensor_f32(qw)[j] * damo_tensor_f32(qw)[j];
  CHECK(fabs(sqrt(sq / (double)damo_tensor_numel(qw)) - 0.02) < 0.003);

  damo_bert_graph *bg = NULL;
  CHECK(damo_bert_classifier_new(m, B, T, 1, &bg) == DAMO_OK);
  if (!bg) {
    damo_bert_free(m);
    return;
  }
  float a, b, d1, d2;
  CHECK(forward_ref(bg, B, 0, &a) == DAMO_OK && forward_ref(bg, B, 0, &b) == DAMO_OK);
  CHECK(a == b);
  damo_bert_graph_seed(bg, 11);
  CHECK(forward_ref(bg, B, 1, &d1) == DAMO_OK && forward_ref(bg, B, 1, &d2) == DAMO_OK);
  CHECK_MSG(d1 != a && d1 != d2, "dropout: %g %g vs %g", d1, d2, a);
  damo_bert_graph_seed(bg, 11);
  CHECK(forward_ref(bg, B, 1, &d2) == DAMO_OK);
  CHECK(d1 == d2);

  int64_t n;
  float *p = damo_bert_param_block(m, &n);
  const float *g = damo_bert_grad_block(m, NULL);
  float first = 0, last = 0;
  for (int step = 0; step < 30; step++) {
    CHECK(forward_ref(bg, B, 0, &last) == DAMO_OK && damo_bert_graph_backward(bg) == DAMO_OK);
    if (step == 0) first = last;
    for (int64_t i = 0; i < n; i++) p[i] -= 0.5f * g[i];
  }
  CHECK_MSG(last < 0.5f * first, "loss %g -> %g after 30 steps", first, last);
  damo_bert_graph_free(bg);
  damo_bert_free(m);
}

/* ------------------------------------------------------------------ masked LM */

/* The masked-LM loss and every gradient (the tied word embeddings get both the input and
 * the decoder's share) against PyTorch, with unused slots; and bad positions. */
static void test_mlm_reference(void) {
  damo_bert *m = NULL;
  CHECK(damo_bert_load(MODEL_DIR, 0, 1, &m) == DAMO_OK);
  damo_tensor *loss_ref = ref_get("mlm_loss");
  int32_t *positions = ref_i32("mlm_positions"), *labels = ref_i32("mlm_labels");
  damo_bert_graph *bg = NULL;
  CHECK_MSG(damo_bert_mlm_new(m, B, T, 4, &bg) == DAMO_OK, "%s", damo_last_error());
  if (!m || !bg || !loss_ref || !positions || !labels) {
    damo_bert_graph_free(bg);
    damo_bert_free(m);
    return;
  }
  float loss = 0;
  CHECK_MSG(damo_bert_mlm_forward(bg, B, ref_i32("input_ids"), ref_i32("token_type_ids"), ref_i32("attention_mask"),
                                  positions, labels, 0, &loss) == DAMO_OK, "%s", damo_last_error());
  double loss_err = fabs(loss - damo_tensor_f32(loss_ref)[0]) / fabs(damo_tensor_f32(loss_ref)[0]);
  CHECK_MSG(loss_err < 1e-5, "masked-LM loss %.8g vs %.8g", loss, damo_tensor_f32(loss_ref)[0]);
  CHECK(damo_bert_graph_logits(bg) == NULL);
  CHECK_MSG(damo_bert_graph_backward(bg) == DAMO_OK, "%s", damo_last_error());
  double grad_err;
  const char *worst;
  int compared = compare_grads(m, "grad_mlm.", is_classifier_head, &grad_err, &worst);
  CHECK(compared == 5 + 2 * 16 + 5);
  if (verbose)
    fprintf(stderr, "    masked LM vs PyTorch: loss %.3g, gradients %.3g (%s)\n", loss_err, grad_err, worst);
  int32_t bad[B * 4];
  memcpy(bad, positions, sizeof bad);
  bad[5] = T;
  EXPECT_FAIL(damo_bert_mlm_forward(bg, B, ref_i32("input_ids"), ref_i32("token_type_ids"), ref_i32("attention_mask"),
                                    bad, labels, 0, NULL), DAMO_ERR_INVALID_ARG, "mlm position [1][1] is 12");
  EXPECT_FAIL(damo_bert_graph_forward(bg, B, ref_i32("input_ids"), ref_i32("token_type_ids"), ref_i32("attention_mask"),
                                      labels, 0, NULL), DAMO_ERR_STATE, "bert_mlm_forward");
  damo_bert_graph *too_many = NULL;
  EXPECT_FAIL(damo_bert_mlm_new(m, B, T, T + 1, &too_many), DAMO_ERR_INVALID_ARG, "predictions");
  damo_clear_error();
  damo_bert_graph_free(bg);
  damo_bert_free(m);
}

int main(void) {
  verbose = getenv("TEST_BERT_VERBOSE") != NULL;
  tmpdir_template("bert");
  if (!mkdtemp(tmpdir)) {
    fprintf(stderr, "test_bert: cannot create a temp dir\n");
    return 1;
  }
  if (damo_safetensors_load(REF_PATH, &ref) != DAMO_OK) {
    fprintf(stderr, "test_bert: %s\n", damo_last_error());
    return 1;
  }
  RUN(test_reference);
  RUN(test_embeddings);
  RUN(test_save_reload);
  RUN(test_missing_heads);
  RUN(test_bad_files);
  RUN(test_bad_inputs);
  RUN(test_dropout_and_descent);
  RUN(test_mlm_reference);
  damo_tensor_dict_free(ref);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "test_bert: could not remove %s\n", tmpdir);
  return test_summary("test_bert");
}
