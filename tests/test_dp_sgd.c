/* test_dp_sgd.c - DP-SGD (issue 26): every op's per-example gradient norms against the
 * gradient of that example alone (a batch of one), the weighted backward against the
 * weighted sum of those gradients, for dense (single rows, ghost and direct sequence forms),
 * conv2d (im2col and pointwise), conv1d's reshaped kernel, embedding (repeated ids), LSTM,
 * GRU (two biases), layer norm, attention's projections and position embeddings; then fit:
 * the clipped gradient's norm, the noise's spread, passes of a sampled batch, epsilon in the
 * history, and the refusals. */
#include "damo.h"
#include "graph/graph.h"
#include "models/bert.h"
#include "cli_run.h"
#include "harness.h"
#include "tmpfiles.h"
#include "mail_fixtures.h"
#include "grad_seen.h"
#include "train/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 6

/* The model of a config, built and compiled by its own settings. */
static damo_model *model_of(const char *json) {
  damo_model *m = NULL;
  damo_compile_options copt;
  if (damo_model_from_config_json(json, "dp.json", &m) != DAMO_OK || damo_model_build(m, 7) != DAMO_OK ||
      damo_model_config_compile_options(m, &copt) != DAMO_OK || damo_model_compile(m, &copt) != DAMO_OK) {
    CHECK_MSG(0, "%s", damo_last_error());
    damo_model_free(m);
    return NULL;
  }
  return m;
}

/* ROWS examples of the model's input: ids in [0, vocab) (with zeros, the mask, and repeats)
 * when vocab > 0, else uniform floats; labels in [0, classes). */
static void make_data(const damo_model *m, int vocab, int classes, damo_tensor **x, damo_tensor **y) {
  int64_t shape[DAMO_MAX_DIMS + 1] = {ROWS};
  damo_dtype dtype;
  const int nd = damo_model_input_info(m, 0, NULL, shape + 1, &dtype);
  *x = damo_tensor_new(vocab ? DAMO_I32 : DAMO_F32, nd + 1, shape);
  const int64_t ylen = ROWS;
  *y = damo_tensor_new(DAMO_I32, 1, &ylen);
  damo_rng r;
  damo_rng_seed(&r, 11);
  const int64_t count = damo_tensor_numel(*x);
  for (int64_t i = 0; i < count; i++) {
    if (vocab) ((int32_t *)(*x)->data)[i] = (i % 7 == 6) ? 0 : 1 + (int32_t)(damo_rng_uniform(&r) * (float)(vocab - 1)) % 4;
    else ((float *)(*x)->data)[i] = damo_rng_uniform(&r) * 2.0f - 1.0f;
  }
  for (int64_t i = 0; i < ROWS; i++) ((int32_t *)(*y)->data)[i] = (int32_t)(i % classes);
}

/* Example norms and the weighted backward of one batch against batches of one. */
static void check_model(const char *what, const char *json, int vocab, int classes) {
  damo_model *m = model_of(json);
  if (!m) return;
  damo_tensor *x, *y;
  make_data(m, vocab, classes, &x, &y);
  damo_model_set_keep_forward(m, 1);
  damo_model_graph *mg;
  CHECK_MSG(damo_model_graph_get(m, DAMO_GRAPH_TRAIN, ROWS + 3, &mg) == DAMO_OK, "%s: %s", what, damo_last_error());
  const int64_t n = m->params.n_params_padded;
  float *alone = calloc((size_t)(ROWS * n), sizeof(float)), *want = calloc((size_t)n, sizeof(float));
  const damo_tensor *xs[] = {x}, *ys[] = {y};
  int64_t rows[ROWS];
  float weights[ROWS], sq[ROWS];
  for (int i = 0; i < ROWS; i++) rows[i] = i, weights[i] = 0.25f + 0.3f * (float)i;
  /* each example alone: its own gradient (a batch of one: the mean is the example) */
  for (int i = 0; i < ROWS; i++) {
    CHECK(damo_model_stage_batch(m, mg, xs, ys, rows + i, 1) == DAMO_OK);
    CHECK(damo_graph_forward(mg->g, 1) == DAMO_OK);
    CHECK(damo_graph_backward(mg->g) == DAMO_OK);
    memcpy(alone + i * n, m->grad_block, (size_t)n * sizeof(float));
    for (int64_t k = 0; k < n; k++) want[k] += weights[i] / ROWS * alone[i * n + k];
  }
  /* the batch: norms of each example's share (1/ROWS of its gradient), then weighted */
  CHECK(damo_model_stage_batch(m, mg, xs, ys, rows, ROWS) == DAMO_OK);
  CHECK(damo_graph_forward(mg->g, 1) == DAMO_OK);
  damo_status st = damo_graph_example_norms(mg->g, sq);
  CHECK_MSG(st == DAMO_OK, "%s: %s", what, damo_last_error());
  double worst = 0;
  for (int i = 0; st == DAMO_OK && i < ROWS; i++) {
    double exact = 0;
    for (int64_t k = 0; k < n; k++) exact += (double)alone[i * n + k] * alone[i * n + k];
    const double got = sqrt((double)sq[i]) * ROWS, rel = fabs(got - sqrt(exact)) / (sqrt(exact) + 1e-12);
    if (rel > worst) worst = rel;
    CHECK_MSG(exact > 0, "%s: example %d has a zero gradient (the test would prove nothing)", what, i);
  }
  CHECK_MSG(worst < 2e-4, "%s: worst relative error of an example's norm %.3g", what, worst);
  damo_graph_set_example_weights(mg->g, weights);
  CHECK(damo_graph_backward(mg->g) == DAMO_OK);
  damo_graph_set_example_weights(mg->g, NULL);
  CHECK_MSG(test_close_ratio(m->grad_block, want, (long)n, 1e-6, 1e-4) <= 1.0, "%s: the weighted backward", what);
  /* the same rows in passes of 4 and 2 (weights scaled by each pass's size), summed */
  float *parts = calloc((size_t)n, sizeof(float));
  for (int first = 0; first < ROWS; first += 4) {
    const int b = ROWS - first < 4 ? ROWS - first : 4;
    float w[ROWS];
    for (int i = 0; i < b; i++) w[i] = weights[first + i] * (float)b / ROWS;
    CHECK(damo_model_stage_batch(m, mg, xs, ys, rows + first, b) == DAMO_OK);
    CHECK(damo_graph_forward(mg->g, 1) == DAMO_OK);
    CHECK(damo_graph_example_norms(mg->g, sq) == DAMO_OK);
    damo_graph_set_example_weights(mg->g, w);
    CHECK(damo_graph_backward(mg->g) == DAMO_OK);
    damo_graph_set_example_weights(mg->g, NULL);
    for (int64_t k = 0; k < n; k++) parts[k] += m->grad_block[k];
  }
  CHECK_MSG(test_close_ratio(parts, want, (long)n, 1e-6, 1e-4) <= 1.0, "%s: the weighted backward in passes: %g", what, test_close_ratio(parts, want, (long)n, 1e-6, 1e-4));
  free(parts);
  free(alone);
  free(want);
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_model_free(m);
}

#define HEAD "{\"format\": \"damo.sequential\", "
#define TAIL "\"loss\": \"sparse_categorical_crossentropy\", \"optimizer\": {\"type\": \"sgd\", \"learning_rate\": 0.1}}"

static void test_example_norms(void) {
  check_model("mlp", HEAD "\"input_shape\": [5], \"layers\": [{\"type\": \"dense\", \"units\": 7, \"activation\": \"tanh\"},"
              "{\"type\": \"dense\", \"units\": 3}], " TAIL, 0, 3);
  check_model("cnn", HEAD "\"input_shape\": [8, 8, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, \"kernel_size\": 3, "
              "\"padding\": \"same\", \"activation\": \"relu\"}, {\"type\": \"max_pooling2d\", \"pool_size\": 2},"
              "{\"type\": \"conv2d\", \"filters\": 4, \"kernel_size\": 1}, {\"type\": \"conv2d\", \"filters\": 2, "
              "\"kernel_size\": 3, \"strides\": 2, \"activation\": \"tanh\"}, {\"type\": \"flatten\"}, "
              "{\"type\": \"dense\", \"units\": 3}], " TAIL, 0, 3);
  /* dense on a sequence of 7: 6 -> 16 is measured directly, 16 -> 16 by Gram matrices */
  check_model("sequence", HEAD "\"input_shape\": [7], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 9, "
              "\"output_dim\": 4, \"mask_zero\": true}, {\"type\": \"gru\", \"units\": 6, \"return_sequences\": true},"
              "{\"type\": \"dense\", \"units\": 16, \"activation\": \"relu\"}, {\"type\": \"dense\", \"units\": 16},"
              "{\"type\": \"layer_normalization\"}, {\"type\": \"conv1d\", \"filters\": 3, \"kernel_size\": 2},"
              "{\"type\": \"global_average_pooling1d\"}, {\"type\": \"dense\", \"units\": 2}], " TAIL, 9, 2);
  check_model("bilstm", HEAD "\"input_shape\": [7], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 9, "
              "\"output_dim\": 5, \"mask_zero\": true}, {\"type\": \"bidirectional\", \"layer\": {\"type\": \"lstm\", "
              "\"units\": 4}}, {\"type\": \"dense\", \"units\": 2}], " TAIL, 9, 2);
  check_model("transformer", HEAD "\"input_shape\": [7], \"layers\": [{\"type\": \"token_and_position_embedding\", "
              "\"vocabulary_size\": 9, \"sequence_length\": 7, \"embedding_dim\": 8}, {\"type\": \"transformer_encoder\", "
              "\"intermediate_dim\": 12, \"num_heads\": 2}, {\"type\": \"global_average_pooling1d\"},"
              "{\"type\": \"dense\", \"units\": 2}], " TAIL, 9, 2);
}

/* BERT's classifier (embeddings with positions and token types, attention, LayerNorms, the
 * pooler): each example's norm against that example alone, dropout off. */
static void test_bert_norms(void) {
  enum { BB = 4, TT = 6 };
  damo_bert_config c = damo_bert_config_default();
  c.vocab_size = 30, c.hidden_size = 16, c.num_hidden_layers = 2, c.num_attention_heads = 2;
  c.intermediate_size = 24, c.max_position_embeddings = 8, c.num_labels = 2;
  damo_bert *m = NULL;
  CHECK(damo_bert_new(&c, 3, &m) == DAMO_OK);
  if (!m) return;
  m->keep_forward = 1;
  damo_bert_graph *bg = NULL;
  CHECK_MSG(damo_bert_classifier_new(m, BB, TT, 1, &bg) == DAMO_OK, "%s", damo_last_error());
  if (!bg) {
    damo_bert_free(m);
    return;
  }
  int32_t ids[BB * TT], types[BB * TT], mask[BB * TT], labels[BB];
  for (int i = 0; i < BB * TT; i++) ids[i] = 1 + (i * 7) % 29, types[i] = (i % TT) > 3, mask[i] = (i % TT) < 5 || i < TT;
  for (int b = 0; b < BB; b++) labels[b] = b % 2;
  const int64_t n = m->p.n_params_padded;
  float *alone = calloc((size_t)(BB * n), sizeof(float)), sq[BB], loss;
  for (int b = 0; b < BB; b++) {
    CHECK(damo_bert_graph_forward(bg, 1, ids + b * TT, types + b * TT, mask + b * TT, labels + b, 0, &loss) == DAMO_OK);
    CHECK(damo_bert_graph_backward(bg) == DAMO_OK);
    memcpy(alone + b * n, m->p.grad_block, (size_t)n * sizeof(float));
  }
  CHECK(damo_bert_graph_forward(bg, BB, ids, types, mask, labels, 0, &loss) == DAMO_OK);
  CHECK_MSG(damo_graph_example_norms(bg->graph, sq) == DAMO_OK, "%s", damo_last_error());
  double worst = 0;
  for (int b = 0; b < BB; b++) {
    const double exact = sqrt(damo_sum_squares(alone + b * n, n)), got = sqrt((double)sq[b]) * BB;
    worst = fmax(worst, fabs(got - exact) / exact);
  }
  CHECK_MSG(worst < 2e-4, "BERT: worst relative error of an example's norm %.3g", worst);
  free(alone);
  damo_bert_graph_free(bg);
  damo_bert_free(m);
}

/* ---- fit */

#define N 64
#define WIDE HEAD "\"input_shape\": [20], \"layers\": [{\"type\": \"dense\", \"units\": 64, \"activation\": \"tanh\"}," \
             "{\"type\": \"dense\", \"units\": 3}], " TAIL

static void blobs(damo_tensor **x, damo_tensor **y) {
  const int64_t xs[2] = {N, 20}, ys = N;
  *x = damo_tensor_new(DAMO_F32, 2, xs);
  *y = damo_tensor_new(DAMO_I32, 1, &ys);
  damo_rng r;
  damo_rng_seed(&r, 5);
  for (int i = 0; i < N; i++) {
    const int c = i % 3;
    ((int32_t *)(*y)->data)[i] = c;
    for (int k = 0; k < 20; k++) ((float *)(*x)->data)[i * 20 + k] = (k == c ? 2.0f : 0.0f) + damo_rng_normal(&r);
  }
}

/* fit of the wide MLP for 2 epochs in batches of 16; the parameters after it into params (n). */
static damo_status fit_once(damo_dp_options *dp, grad_seen *seen, float *params, int64_t *n, damo_history **h) {
  damo_model *m = model_of(WIDE);
  if (!m) return DAMO_ERR_INVALID_ARG;
  damo_tensor *x, *y;
  blobs(&x, &y);
  damo_fit_options o = {.epochs = 2, .batch_size = 16, .seed = 3, .shuffle = 1, .verbose = 0, .privacy = dp,
                        .grad_hook = seen ? see_grads : NULL, .grad_hook_ctx = seen};
  damo_history *hist = NULL;
  damo_status st = damo_model_fit(m, x, y, &o, &hist);
  if (params) memcpy(params, m->param_block, (size_t)m->params.n_params_padded * sizeof(float));
  if (n) *n = m->params.n_params_padded;
  if (h) *h = hist;
  else damo_history_free(hist);
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_model_free(m);
  return st;
}

static void test_fit(void) {
  static float plain[4096], priv[4096], chunked[4096];
  int64_t n = 0;
  /* clipping only (noise negligible): each step's gradient is a mean of vectors of norm <= C */
  grad_seen seen = {0};
  damo_dp_options dp = {.clip = 0.01, .noise = 1e-9, .sampling = DAMO_DP_SHUFFLE};
  CHECK_MSG(fit_once(&dp, &seen, NULL, NULL, NULL) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(seen.max_norm <= 0.01 * (1 + 1e-4) && seen.max_norm > 0.001 && seen.steps == 8, "largest %g over %lld steps",
            seen.max_norm, (long long)seen.steps);
  /* no clip in reach, no noise to speak of: plain SGD's run */
  CHECK(fit_once(NULL, NULL, plain, &n, NULL) == DAMO_OK);
  dp = (damo_dp_options){.clip = 1e6, .noise = 1e-12, .sampling = DAMO_DP_SHUFFLE};
  CHECK_MSG(fit_once(&dp, NULL, priv, NULL, NULL) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(n < 4096 && test_close_ratio(priv, plain, (long)n, 1e-5, 1e-4) <= 1.0, "DP-SGD without clip or noise");
  /* the noise: sd noise * C / B per coordinate (the clipped sum is tiny beside it) */
  memset(&seen, 0, sizeof seen);
  dp = (damo_dp_options){.clip = 1, .noise = 100};
  CHECK(fit_once(&dp, &seen, NULL, NULL, NULL) == DAMO_OK);
  const double sd = sqrt(seen.sum_sq / (double)seen.count) * 16;
  CHECK_MSG(fabs(sd - 100) < 4, "noise sd %g, want 100", sd);
  /* a Poisson batch in passes of 3 rows trains as in one pass; epsilon is the accountant's */
  damo_history *h = NULL;
  dp = (damo_dp_options){.clip = 0.5, .noise = 1.3};
  CHECK(fit_once(&dp, NULL, priv, NULL, &h) == DAMO_OK);
  damo_dp_options parts = {.clip = 0.5, .noise = 1.3, .physical_batch = 3};
  CHECK(fit_once(&parts, NULL, chunked, NULL, NULL) == DAMO_OK);
  CHECK_MSG(test_close_ratio(chunked, priv, (long)n, 1e-5, 1e-4) <= 1.0, "a sampled batch in passes of 3");
  double eps, order;
  CHECK(damo_dp_epsilon(16.0 / N, 1.3, 8, 1e-5, DAMO_DP_CLASSIC, &eps, &order) == DAMO_OK);
  CHECK_MSG(dp.steps == 8 && fabs(dp.epsilon - eps) < 1e-9 && dp.sample_rate == 16.0 / N && dp.delta == 1e-5,
            "steps %lld epsilon %g (want %g)", (long long)dp.steps, dp.epsilon, eps);
  CHECK_MSG(h && fabs(damo_history_get(h, "epsilon", 1) - eps) < 1e-4 * eps, "history's epsilon %g",
            h ? damo_history_get(h, "epsilon", 1) : -1.0);
  damo_history_free(h);
  /* a target epsilon: the noise that spends it over the planned steps */
  dp = (damo_dp_options){.clip = 0.5, .target_epsilon = 4, .conversion = DAMO_DP_BALLE2020};
  CHECK(fit_once(&dp, NULL, NULL, NULL, NULL) == DAMO_OK);
  CHECK_MSG(dp.epsilon <= 4 + 1e-6 && dp.epsilon > 3.9 && dp.used_noise > 0, "epsilon %g with noise %g", dp.epsilon,
            dp.used_noise);
}

static void test_refusals(void) {
  damo_dp_options dp = {.clip = 1, .noise = 1, .target_epsilon = 3};
  EXPECT_FAIL(fit_once(&dp, NULL, NULL, NULL, NULL), DAMO_ERR_INVALID_ARG, "not both");
  dp = (damo_dp_options){.clip = 1, .noise = 1, .delta = 1.0 / N};
  EXPECT_FAIL(fit_once(&dp, NULL, NULL, NULL, NULL), DAMO_ERR_INVALID_ARG, "below 1/N");
  dp = (damo_dp_options){.clip = 0, .noise = 1};
  EXPECT_FAIL(fit_once(&dp, NULL, NULL, NULL, NULL), DAMO_ERR_INVALID_ARG, "clipping norm");
  dp = (damo_dp_options){.clip = 1};
  EXPECT_FAIL(fit_once(&dp, NULL, NULL, NULL, NULL), DAMO_ERR_INVALID_ARG, "protects nothing");
  /* BatchNorm mixes the examples of a batch */
  damo_model *m = model_of(HEAD "\"input_shape\": [20], \"layers\": [{\"type\": \"dense\", \"units\": 4},"
                           "{\"type\": \"batch_normalization\"}, {\"type\": \"dense\", \"units\": 3}], " TAIL);
  damo_tensor *x, *y;
  blobs(&x, &y);
  dp = (damo_dp_options){.clip = 1, .noise = 1};
  damo_fit_options o = {.epochs = 1, .batch_size = 16, .verbose = 0, .privacy = &dp};
  if (m) EXPECT_FAIL(damo_model_fit(m, x, y, &o, NULL), DAMO_ERR_UNSUPPORTED, "batch_norm");
  damo_model_free(m);
  damo_tensor_free(x);
  damo_tensor_free(y);
}

/* damo train --dp-*: the run's report, privacy.json, the history's column, damo summary, and
 * the options' errors. */
static void test_cli(void) {
  const char *csv = tmp_path("dp_train.csv");
  FILE *f = fopen(csv, "w");
  if (!f) return;
  damo_rng r;
  damo_rng_seed(&r, 9);
  fprintf(f, "a,b,c,label\n");
  for (int i = 0; i < 300; i++)
    fprintf(f, "%.3f,%.3f,%.3f,%d\n", (i % 2 ? 1.5 : -1.5) + damo_rng_normal(&r), damo_rng_normal(&r),
            damo_rng_normal(&r), i % 2);
  fclose(f);
  const char *cfg = tmp_path("dp_model.json");
  f = fopen(cfg, "w");
  if (!f) return;
  fputs("{\"input_shape\":[3],\"layers\":[{\"type\":\"dense\",\"units\":8,\"activation\":\"tanh\"},"
        "{\"type\":\"dense\",\"units\":2}],\"optimizer\":{\"type\":\"sgd\",\"learning_rate\":0.5},"
        "\"metrics\":[\"accuracy\"]}", f);
  fclose(f);
  char out[512];
  snprintf(out, sizeof out, "%s", tmp_path("dp_model_dir"));
  int rc = run("%s train --config %s --data %s --epochs 3 --batch-size 30 --out %s --overwrite --verbose 2 "
               "--dp-clip 1 --dp-epsilon 5 --dp-delta 1e-3", DAMO_CLI_PATH, cfg, csv, out);
  const char *spent = strstr(cli_out, "privacy: epsilon ");
  CHECK_MSG(rc == 0 && strstr(cli_out, "epsilon: ") && spent && atof(spent + 17) <= 5 && atof(spent + 17) > 4.8 &&
            strstr(cli_out, "poisson sampling") && strstr(cli_out, "privacy.json"), "%s", cli_out);
  rc = run("grep -c epsilon %s/history.csv && grep '\"epsilon\"' %s/privacy.json", out, out);
  CHECK_MSG(rc == 0, "%s", cli_out);
  rc = run("%s summary --model %s", DAMO_CLI_PATH, out);
  CHECK_MSG(rc == 0 && strstr(cli_out, "Differential privacy: (epsilon "), "%s", cli_out);
  rc = run("%s train --config %s --data %s --epochs 1 --out %s --overwrite --dp-clip 1 --dp-noise 1 --dp-sampling shuffle",
           DAMO_CLI_PATH, cfg, csv, out);
  CHECK_MSG(rc == 0 && strstr(cli_out, "does not bound this run"), "%s", cli_out);
  rc = run("%s train --config %s --data %s --out %s --overwrite --dp-noise 1", DAMO_CLI_PATH, cfg, csv, out);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--dp-noise needs --dp-clip"), "%s", cli_out);
  rc = run("%s train --config %s --data %s --out %s --overwrite --dp-clip 1 --dp-noise 1 --dp-epsilon 2", DAMO_CLI_PATH,
           cfg, csv, out);
  CHECK_MSG(rc == 2 && strstr(cli_out, "not both"), "%s", cli_out);
  rc = run("%s train --config %s --data %s --out %s --overwrite --dp-clip 1 --dp-noise 1 --dp-delta 0.01", DAMO_CLI_PATH,
           cfg, csv, out);
  CHECK_MSG(rc != 0 && strstr(cli_out, "not below 1/N"), "%s", cli_out);
  rc = run("%s train --config %s --data %s --out %s --overwrite --dp-clip 1 --dp-noise 1 --dp-sampling random",
           DAMO_CLI_PATH, cfg, csv, out);
  CHECK_MSG(rc == 2 && strstr(cli_out, "poisson or shuffle"), "%s", cli_out);
}

/* Fine-tuning a small BERT classifier on labelled mails with DP-SGD from the command line. */
static void test_bert_cli(void) {
  write_labelled_mails(120);
  char cfg[512];
  snprintf(cfg, sizeof cfg, "%s", tmp_path("dp_bert.json"));
  FILE *f = fopen(cfg, "w");
  if (!f) return;
  fputs("{\"model_type\": \"bert\", \"vocab_size\": 40, \"hidden_size\": 16, \"num_hidden_layers\": 1, "
        "\"num_attention_heads\": 2, \"intermediate_size\": 32, \"max_position_embeddings\": 32, "
        "\"finetune\": {\"epochs\": 2, \"batch_size\": 8, \"seq_len\": 16, \"lr\": 0.003, \"seed\": 3}}", f);
  fclose(f);
  char out[512];
  snprintf(out, sizeof out, "%s", tmp_path("dp_bert_model"));
  int rc = run("%s train --config %s --data %s --vocab %s --out %s --dp-clip 1 --dp-epsilon 8 --dp-delta 1e-3",
               DAMO_CLI_PATH, cfg, tmp_path("mails"), tmp_path("vocab.txt"), out);
  const char *spent = strstr(cli_out, "privacy: epsilon ");
  CHECK_MSG(rc == 0 && strstr(cli_out, "epoch 2: val accuracy") && strstr(cli_out, " - epsilon ") && spent &&
            atof(spent + 17) <= 8 && atof(spent + 17) > 7.5, "%s", cli_out);
  rc = run("%s summary --model %s", DAMO_CLI_PATH, out);
  CHECK_MSG(rc == 0 && strstr(cli_out, "Differential privacy: (epsilon "), "%s", cli_out);
  rc = run("%s train --config %s --data %s --vocab %s --out %s --overwrite --pretrain --dp-clip 1 --dp-noise 1",
           DAMO_CLI_PATH, cfg, tmp_path("mails"), tmp_path("vocab.txt"), out);
  CHECK_MSG(rc == 2 && strstr(cli_out, "pre-train on public text"), "%s", cli_out);
}

int main(void) {
  tmpdir_template("dp_sgd");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_example_norms);
  RUN(test_bert_norms);
  RUN(test_fit);
  RUN(test_refusals);
  RUN(test_cli);
  RUN(test_bert_cli);
  run("rm -rf %s", tmpdir);
  return test_summary("dp_sgd");
}
