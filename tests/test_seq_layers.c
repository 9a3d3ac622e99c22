/* test_seq_layers.c - the sequence and transformer layers (LayerNormalization,
 * MultiHeadAttention, TransformerEncoder/Decoder, PositionEmbedding,
 * TokenAndPositionEmbedding, Conv1D, MaxPooling1D, AveragePooling1D) equal to PyTorch
 * (tests/fixtures/seq_layers.safetensors from tests/ref/gen_seq_layers.py): each case is a
 * small functional model, built in C or from config JSON; its output and the gradients of
 * sum(out * dout) for every weight and float input are compared. Every model is saved and
 * loaded back and predicts the same bytes; masks from mask_zero reach the attention; the
 * attention probabilities can be captured; a tiny transformer classifier learns; and the
 * errors name what is wrong. */
#include "harness.h"
#include "nn/layers.h"
#include "tmpfiles.h"
#include "train/model.h"

#include <damo.h>
#include <stdlib.h>

#define BATCH 2

static damo_tensor_dict *fx;

static const damo_tensor *fixture(const char *cas, const char *kind, const char *what) {
  char key[192];
  snprintf(key, sizeof key, "%s.%s%s%s", cas, kind, *what ? "." : "", what);
  const damo_tensor *t = damo_tensor_dict_get(fx, key);
  if (!t) fprintf(stderr, "  fixture tensor '%s' missing\n", key);
  return t;
}

static int set_output(damo_model *m, int node) {
  if (damo_model_set_output(m, node) == DAMO_OK) return 1;
  fprintf(stderr, "  set_output: %s\n", damo_last_error());
  return 0;
}

/* ------------------------------------------------------------------ the cases' models */

static const int64_t SEQ_3x5[] = {3, 5}, SEQ_4x6[] = {4, 6}, SEQ_3x6[] = {3, 6}, SEQ_5x4[] = {5, 4},
                     SEQ_5x3[] = {5, 3}, IDS_5[] = {5}, SEQ_7x3[] = {7, 3}, SEQ_6x3[] = {6, 3}, SEQ_7x2[] = {7, 2};

/* input "x" of shape -> layer named name */
static damo_model *one_layer(const int64_t *shape, const char *input, damo_layer *l, const char *name) {
  damo_model *m = damo_functional_new();
  int x = damo_model_input(m, input, 2, shape);
  int y = damo_model_call1(m, damo_layer_set_name(l, name), x);
  if (!set_output(m, y)) damo_model_free(m), m = NULL;
  return m;
}

static damo_model *build_ln(void) { return one_layer(SEQ_3x5, "x", damo_layer_norm_layer(1e-3f, 1, 1), "ln"); }
static damo_model *build_ln_plain(void) {
  return one_layer(SEQ_3x5, "x", damo_layer_norm_layer(1e-3f, 0, 0), "ln");
}
static damo_model *build_mha_self(void) {
  return one_layer(SEQ_4x6, "q", damo_multi_head_attention_layer(2, 3, 0, 0, 0, 1, 0), "mha");
}
static damo_model *build_mha_causal(void) {
  return one_layer(SEQ_4x6, "q", damo_multi_head_attention_layer(2, 4, 4, 0, 0, 1, 1), "mha");
}
static damo_model *build_pos(void) { return one_layer(SEQ_4x6, "x", damo_position_embedding_layer(6), "pos"); }
static damo_model *build_enc_plain(void) {
  return one_layer(SEQ_4x6, "x", damo_transformer_encoder_layer(10, 2, 0, 0, 1e-5f, 0), "enc");
}
static damo_model *build_dec_self(void) {
  return one_layer(SEQ_4x6, "x", damo_transformer_decoder_layer(8, 2, 0, 0, 1e-5f, 0), "dec");
}
static damo_model *build_conv_valid(void) {
  return one_layer(SEQ_7x3, "x", damo_conv1d_layer(4, 3, 1, DAMO_PADDING_VALID, DAMO_ACT_RELU), "conv");
}
static damo_model *build_conv_same_s2(void) {
  return one_layer(SEQ_7x3, "x", damo_conv1d_layer(4, 3, 2, DAMO_PADDING_SAME, DAMO_ACT_NONE), "conv");
}
static damo_model *build_conv_causal(void) {
  return one_layer(SEQ_6x3, "x", damo_conv1d_layer(2, 2, 1, DAMO_PADDING_CAUSAL, DAMO_ACT_RELU), "conv");
}
static damo_model *build_maxpool_valid(void) { return one_layer(SEQ_7x3, "x", damo_max_pool1d_layer(2, 0, 0), "pool"); }
static damo_model *build_maxpool_same_s2(void) {
  return one_layer(SEQ_7x3, "x", damo_max_pool1d_layer(3, 2, 1), "pool");
}
static damo_model *build_avgpool_same(void) { return one_layer(SEQ_7x2, "x", damo_avg_pool1d_layer(2, 0, 1), "pool"); }

/* ids -> embedding(mask_zero) -> self-attention: the padding masks the keys */
static damo_model *build_mha_masked(void) {
  damo_model *m = damo_functional_new();
  int ids = damo_model_input(m, "ids", 1, IDS_5);
  int e = damo_model_call1(m, damo_layer_set_name(damo_embedding_layer(7, 6, 1), "emb"), ids);
  int y = damo_model_call1(m, damo_layer_set_name(damo_multi_head_attention_layer(2, 3, 0, 0, 0, 1, 0), "mha"), e);
  if (!set_output(m, y)) damo_model_free(m), m = NULL;
  return m;
}

/* query (3, 6) and value (5, 4) through 2 heads of key_dim 3 */
static damo_model *mha_on_query_value(int value_dim, int output_shape) {
  damo_model *m = damo_functional_new();
  int q = damo_model_input(m, "q", 2, SEQ_3x6), v = damo_model_input(m, "v", 2, SEQ_5x4);
  damo_layer *mha = damo_multi_head_attention_layer(2, 3, value_dim, output_shape, 0, 1, 0);
  int y = damo_model_call2(m, damo_layer_set_name(mha, "mha"), q, v);
  if (!set_output(m, y)) damo_model_free(m), m = NULL;
  return m;
}
static damo_model *build_mha_cross(void) { return mha_on_query_value(0, 5); }
static damo_model *build_mha_vdim(void) { return mha_on_query_value(4, 0); }

static damo_model *build_mha_cross3(void) {
  damo_model *m = damo_functional_new();
  const int in[3] = {damo_model_input(m, "q", 2, SEQ_3x6), damo_model_input(m, "v", 2, SEQ_5x4),
                     damo_model_input(m, "k", 2, SEQ_5x3)};
  int y = damo_model_call(m, damo_layer_set_name(damo_multi_head_attention_layer(3, 2, 0, 0, 0, 1, 0), "mha"), 3, in);
  if (!set_output(m, y)) damo_model_free(m), m = NULL;
  return m;
}

static damo_model *build_tokpos(void) {
  damo_model *m = damo_functional_new();
  int ids = damo_model_input(m, "ids", 1, IDS_5);
  int y = damo_model_call1(m, damo_layer_set_name(damo_token_and_position_embedding_layer(9, 7, 6, 1), "tokpos"), ids);
  if (!set_output(m, y)) damo_model_free(m), m = NULL;
  return m;
}

static damo_model *build_enc_post_relu(void) {
  damo_model *m = damo_functional_new();
  int ids = damo_model_input(m, "ids", 1, IDS_5);
  int e = damo_model_call1(m, damo_layer_set_name(damo_token_and_position_embedding_layer(9, 7, 6, 1), "tokpos"), ids);
  int y = damo_model_call1(m, damo_layer_set_name(damo_transformer_encoder_layer(10, 2, 0, 0, 1e-5f, 0), "enc"), e);
  if (!set_output(m, y)) damo_model_free(m), m = NULL;
  return m;
}

/* The others come from config JSON (keras_hub's argument names). */
static const char *const enc_pre_gelu_json =
    "{\"format\": \"damo.functional\", \"inputs\": [{\"name\": \"ids\", \"shape\": [5]}],\n"
    " \"layers\": [{\"type\": \"token_and_position_embedding\", \"name\": \"tokpos\", \"vocabulary_size\": 9,\n"
    "              \"sequence_length\": 7, \"embedding_dim\": 6, \"mask_zero\": true, \"inputs\": [\"ids\"]},\n"
    "             {\"type\": \"transformer_encoder\", \"name\": \"enc\", \"intermediate_dim\": 10, \"num_heads\": 2,\n"
    "              \"activation\": \"gelu\", \"normalize_first\": true, \"inputs\": [\"tokpos\"]}],\n"
    " \"outputs\": [\"enc\"]}";
static const char *const dec_cross_json =
    "{\"format\": \"damo.functional\",\n"
    " \"inputs\": [{\"name\": \"x\", \"shape\": [4, 6]}, {\"name\": \"enc_ids\", \"shape\": [5]}],\n"
    " \"layers\": [{\"type\": \"transformer_decoder\", \"name\": \"dec\", \"intermediate_dim\": 8, \"num_heads\": 2,\n"
    "              \"activation\": \"gelu\", \"normalize_first\": true, \"layer_norm_epsilon\": 1e-5,\n"
    "              \"inputs\": [\"x\", \"tokpos\"]},\n"
    "             {\"type\": \"token_and_position_embedding\", \"name\": \"tokpos\", \"vocabulary_size\": 9,\n"
    "              \"sequence_length\": 5, \"embedding_dim\": 4, \"mask_zero\": true, \"inputs\": [\"enc_ids\"]}],\n"
    " \"outputs\": [\"dec\"]}";
static const char *const conv_causal_s2_json =
    "{\"format\": \"damo.functional\", \"inputs\": [{\"name\": \"x\", \"shape\": [8, 2]}],\n"
    " \"layers\": [{\"type\": \"conv1d\", \"name\": \"conv\", \"filters\": 3, \"kernel_size\": [3], \"strides\": 2,\n"
    "              \"padding\": \"causal\", \"inputs\": [\"x\"]}],\n"
    " \"outputs\": [\"conv\"]}";

static const char *const mha_nobias_json =
    "{\"format\": \"damo.functional\",\n"
    " \"inputs\": [{\"name\": \"q\", \"shape\": [3, 6]}, {\"name\": \"v\", \"shape\": [5, 4]}],\n"
    " \"layers\": [{\"type\": \"multi_head_attention\", \"name\": \"mha\", \"num_heads\": 2, \"key_dim\": 2,\n"
    "              \"value_dim\": 2, \"use_bias\": false, \"inputs\": [\"q\", \"v\"]}],\n"
    " \"outputs\": [\"mha\"]}";

typedef struct seq_case {
  const char *name;
  damo_model *(*build)(void);
  const char *config; /* when build is NULL */
} seq_case;

static const seq_case cases[] = {
    {"ln", build_ln, NULL},
    {"ln_plain", build_ln_plain, NULL},
    {"mha_self", build_mha_self, NULL},
    {"mha_causal", build_mha_causal, NULL},
    {"mha_masked", build_mha_masked, NULL},
    {"mha_cross", build_mha_cross, NULL},
    {"mha_cross3", build_mha_cross3, NULL},
    {"pos", build_pos, NULL},
    {"tokpos", build_tokpos, NULL},
    {"enc_post_relu", build_enc_post_relu, NULL},
    {"enc_pre_gelu", NULL, enc_pre_gelu_json},
    {"enc_plain", build_enc_plain, NULL},
    {"dec_self", build_dec_self, NULL},
    {"dec_cross", NULL, dec_cross_json},
    {"conv_valid", build_conv_valid, NULL},
    {"conv_same_s2", build_conv_same_s2, NULL},
    {"conv_causal_s2", NULL, conv_causal_s2_json},
    {"conv_causal", build_conv_causal, NULL},
    {"maxpool_valid", build_maxpool_valid, NULL},
    {"maxpool_same_s2", build_maxpool_same_s2, NULL},
    {"avgpool_same", build_avgpool_same, NULL},
    {"mha_nobias", NULL, mha_nobias_json},
    {"mha_vdim", build_mha_vdim, NULL},
};

static damo_model *make_case_model(const seq_case *c) {
  if (c->build) return c->build();
  damo_model *m = NULL;
  if (damo_model_from_config_json(c->config, c->name, &m) != DAMO_OK) {
    fprintf(stderr, "  %s: %s\n", c->name, damo_last_error());
    return NULL;
  }
  return m;
}

/* Every weight of the model from the fixture (a missing one fails the case). */
static int copy_weights(const char *cas, damo_model *m) {
  int ok = 1;
  for (int i = 0; i < m->n_layers; i++) {
    const damo_layer *l = m->layers[i];
    for (int p = 0; p < l->n_params; p++) {
      char what[160];
      snprintf(what, sizeof what, "%s/%s", l->name, l->params[p].name);
      const damo_tensor *t = fixture(cas, "w", what);
      const int64_t n = damo_tensor_numel(l->params[p].value);
      if (!t || damo_tensor_numel(t) != n) {
        CHECK_MSG(0, "%s: weight %s: the fixture has %s", cas, what, t ? "another size" : "none");
        ok = 0;
        continue;
      }
      memcpy(l->params[p].value->data, t->data, (size_t)n * sizeof(float));
    }
  }
  return ok;
}

static void check_close(const char *cas, const char *what, const float *got, const damo_tensor *want, int64_t n) {
  CHECK_MSG(want && damo_tensor_numel(want) == n, "%s %s: %lld values, the fixture %lld", cas, what, (long long)n,
            want ? (long long)damo_tensor_numel(want) : -1LL);
  if (!want || damo_tensor_numel(want) != n || !got) return;
  const double r = test_close_ratio(got, damo_tensor_f32(want), (long)n, 1e-5, 1e-4);
  CHECK_MSG(r <= 1.0, "%s %s: worst error %.3g x tolerance", cas, what, r);
}

/* The model's inputs' fixture tensors, in order. */
static int case_inputs(const char *cas, const damo_model *m, const damo_tensor **xs) {
  for (int k = 0; k < damo_model_num_inputs(m); k++) {
    const char *name = NULL;
    damo_model_input_info(m, k, &name, NULL, NULL);
    xs[k] = fixture(cas, "in", name);
    if (!xs[k]) return 0;
  }
  return 1;
}

/* Forward and backward of sum(out * dout) through a graph of the model, against torch. */
static void check_case_against_torch(const seq_case *c, damo_model *m) {
  const char *cas = c->name;
  const damo_tensor *xs[DAMO_MODEL_MAX_INPUTS];
  const damo_tensor *dout = fixture(cas, "dout", ""), *want = fixture(cas, "out", "");
  if (!case_inputs(cas, m, xs) || !dout || !want || !copy_weights(cas, m)) {
    CHECK_MSG(0, "%s: fixture incomplete", cas);
    return;
  }
  damo_graph *g = damo_graph_new(7);
  damo_node *in[DAMO_MODEL_MAX_INPUTS] = {0}, *out = NULL, *pre = NULL;
  damo_status st = damo_model_build_nodes(m, g, BATCH, in, &out, &pre);
  damo_node *loss = damo_sum(g, damo_mul(g, out, damo_constant(g, dout)), DAMO_ALL_AXES, 0);
  const int n_in = damo_model_num_inputs(m);
  for (int k = 0; k < n_in; k++)
    if (xs[k]->dtype == DAMO_F32) damo_node_keep_grad(in[k]);
  damo_node *outs[2] = {out, loss};
  if (st == DAMO_OK) st = damo_graph_compile(g, loss, 2, outs);
  for (int k = 0; st == DAMO_OK && k < n_in; k++) st = damo_graph_bind(g, in[k], xs[k]->data);
  /* mha_masked: the attention probabilities through the layer's attention node */
  const damo_tensor *want_probs = damo_tensor_dict_get(fx, "mha_masked.probs");
  damo_layer *mha = damo_model_find_layer(m, "mha");
  float *probs = NULL;
  if (st == DAMO_OK && !strcmp(cas, "mha_masked") && want_probs && mha) {
    probs = calloc((size_t)damo_tensor_numel(want_probs), sizeof *probs);
    st = damo_attention_capture_probs(mha->attention, probs);
  }
  if (st == DAMO_OK) st = damo_graph_forward(g, 1);
  if (st == DAMO_OK) st = damo_graph_backward(g);
  CHECK_MSG(st == DAMO_OK, "%s: %s", cas, damo_last_error());
  if (st == DAMO_OK) {
    check_close(cas, "output", damo_node_data(out), want, damo_node_numel(out));
    for (int k = 0; k < n_in; k++) {
      if (xs[k]->dtype != DAMO_F32) continue;
      const char *name = NULL;
      damo_model_input_info(m, k, &name, NULL, NULL);
      char what[96];
      snprintf(what, sizeof what, "gradient of input %s", name);
      check_close(cas, what, damo_node_grad(in[k]), fixture(cas, "grad_in", name), damo_node_numel(in[k]));
    }
    for (int i = 0; i < m->n_layers; i++) {
      const damo_layer *l = m->layers[i];
      for (int p = 0; p < l->n_params; p++) {
        char what[160];
        snprintf(what, sizeof what, "%s/%s", l->name, l->params[p].name);
        check_close(cas, what, damo_tensor_f32(l->params[p].grad), fixture(cas, "grad", what),
                    damo_tensor_numel(l->params[p].grad));
      }
    }
    if (probs) {
      check_close(cas, "attention probabilities", probs, want_probs, damo_tensor_numel(want_probs));
      /* the padded keys (ids 3 and 4 of the first row) get nothing */
      double masked = 0;
      for (int h = 0; h < 2; h++)
        for (int q = 0; q < 5; q++) masked += probs[(h * 5 + q) * 5 + 3] + probs[(h * 5 + q) * 5 + 4];
      CHECK_MSG(masked == 0, "%s: padded keys got %g of the attention", cas, masked);
    }
  }
  free(probs);
  damo_graph_free(g);
}

/* Saved and loaded, the model predicts the same bytes, and those are the fixture's. */
static void check_round_trip(const seq_case *c, damo_model *m) {
  const damo_tensor *xs[DAMO_MODEL_MAX_INPUTS];
  if (!case_inputs(c->name, m, xs)) return;
  const int n_in = damo_model_num_inputs(m);
  damo_tensor *p1 = NULL, *p2 = NULL;
  char dir[512];
  snprintf(dir, sizeof dir, "%s", tmp_path(c->name));
  damo_model *back = NULL;
  CHECK_MSG(damo_model_predict_inputs(m, n_in, xs, 0, &p1) == DAMO_OK, "%s: %s", c->name, damo_last_error());
  CHECK_MSG(damo_model_save(m, dir) == DAMO_OK, "%s: %s", c->name, damo_last_error());
  CHECK_MSG(damo_model_load(dir, &back) == DAMO_OK, "%s: %s", c->name, damo_last_error());
  CHECK_MSG(back && damo_model_predict_inputs(back, n_in, xs, 0, &p2) == DAMO_OK, "%s: %s", c->name,
            damo_last_error());
  CHECK_MSG(p1 && p2 && damo_tensor_numel(p1) == damo_tensor_numel(p2) &&
                !memcmp(p1->data, p2->data, (size_t)damo_tensor_numel(p1) * sizeof(float)),
            "%s: the loaded model predicts other numbers", c->name);
  if (p1) check_close(c->name, "predict", damo_tensor_f32(p1), fixture(c->name, "out", ""), damo_tensor_numel(p1));
  /* the layers' settings came back: the config texts are equal */
  if (back) {
    cJSON *a = damo_model_to_json(m), *b = damo_model_to_json(back);
    char *ta = cJSON_PrintUnformatted(a), *tb = cJSON_PrintUnformatted(b);
    CHECK_MSG(ta && tb && !strcmp(ta, tb), "%s: configs differ:\n%s\n%s", c->name, ta ? ta : "", tb ? tb : "");
    free(ta);
    free(tb);
    cJSON_Delete(a);
    cJSON_Delete(b);
  }
  damo_tensor_free(p1);
  damo_tensor_free(p2);
  damo_model_free(back);
}

static void test_cases_match_torch(void) {
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const seq_case *c = &cases[i];
    damo_model *m = make_case_model(c);
    CHECK_MSG(m != NULL, "%s: no model", c->name);
    if (!m) continue;
    CHECK_MSG(damo_model_build(m, 3) == DAMO_OK, "%s: %s", c->name, damo_last_error());
    check_case_against_torch(c, m);
    check_round_trip(c, m);
    damo_model_free(m);
  }
}

/* The transformer blocks' weights, named as keras_hub's sublayers. */
static void test_weight_names(void) {
  damo_model *m = make_case_model(&cases[13]); /* dec_cross */
  CHECK(m && damo_model_build(m, 1) == DAMO_OK);
  const damo_layer *dec = m ? damo_model_find_layer(m, "dec") : NULL;
  CHECK(dec && dec->n_params == 26);
  if (dec && dec->n_params == 26) {
    CHECK(!strcmp(dec->params[0].name, "self_attention/query/kernel"));
    CHECK(!strcmp(dec->params[8].name, "self_attention_layer_norm/gamma"));
    CHECK(!strcmp(dec->params[12].name, "cross_attention/key/kernel") && dec->params[12].shape[0] == 4 &&
          dec->params[12].shape[1] == 6);
    CHECK(!strcmp(dec->params[17].name, "cross_attention/attention_output/bias"));
    CHECK(!strcmp(dec->params[22].name, "feedforward_intermediate_dense/kernel") && dec->params[22].shape[1] == 8);
    CHECK(!strcmp(dec->params[25].name, "feedforward_output_dense/bias"));
  }
  damo_model_free(m);
}

/* Attention dropout acts in training forwards only: inference gives the fixture's numbers. */
static void test_attention_dropout(void) {
  damo_model *m = one_layer(SEQ_4x6, "q", damo_multi_head_attention_layer(2, 3, 0, 0, 0.5f, 1, 0), "mha");
  CHECK(m && damo_model_build(m, 1) == DAMO_OK && copy_weights("mha_self", m));
  if (!m) return;
  const damo_tensor *q = fixture("mha_self", "in", "q"), *want = fixture("mha_self", "out", "");
  damo_graph *g = damo_graph_new(3);
  damo_node *in[DAMO_MODEL_MAX_INPUTS] = {0}, *out = NULL, *pre = NULL;
  damo_status st = damo_model_build_nodes(m, g, BATCH, in, &out, &pre);
  if (st == DAMO_OK) st = damo_graph_compile(g, NULL, 1, &out);
  if (st == DAMO_OK && q) st = damo_graph_bind(g, in[0], q->data);
  if (st == DAMO_OK) st = damo_graph_forward(g, 0);
  CHECK_MSG(st == DAMO_OK && q && want, "%s", damo_last_error());
  if (st == DAMO_OK && want) {
    check_close("mha dropout", "inference output", damo_node_data(out), want, damo_node_numel(out));
    st = damo_graph_forward(g, 1);
    const double r = test_close_ratio(damo_node_data(out), damo_tensor_f32(want), (long)damo_tensor_numel(want), 1e-5, 1e-4);
    CHECK_MSG(st == DAMO_OK && r > 10, "a training forward with dropout 0.5 is %.3g x tolerance from inference", r);
  }
  damo_graph_free(g);
  damo_model_free(m);
}

/* ------------------------------------------------------------------ masks */

/* ids -> token_and_position_embedding(mask_zero) -> the layer [-> global_average_pooling1d] */
static damo_model *masked_chain(damo_layer *(*make)(void), int pool) {
  damo_model *m = damo_functional_new();
  int x = damo_model_input(m, "ids", 1, IDS_5);
  x = damo_model_call1(m, damo_token_and_position_embedding_layer(9, 7, 6, 1), x);
  x = damo_model_call1(m, make(), x);
  if (pool) x = damo_model_call1(m, damo_global_avg_pool1d_layer(), x);
  if (!set_output(m, x) || damo_model_build(m, 5) != DAMO_OK) {
    damo_model_free(m);
    return NULL;
  }
  /* embeddings far apart, so the timesteps' outputs differ (the default init is +-0.05) */
  for (int p = 0; p < m->layers[0]->n_params; p++) {
    damo_tensor *w = m->layers[0]->params[p].value;
    for (int64_t k = 0; k < damo_tensor_numel(w); k++) damo_tensor_f32(w)[k] *= 20.0f;
  }
  return m;
}

static damo_layer *make_ln(void) { return damo_layer_norm_layer(1e-3f, 1, 1); }
static damo_layer *make_mha(void) { return damo_multi_head_attention_layer(2, 3, 0, 0, 0, 1, 0); }
static damo_layer *make_enc(void) { return damo_transformer_encoder_layer(8, 2, 0, 1, 1e-5f, 1); }
static damo_layer *make_dec(void) { return damo_transformer_decoder_layer(8, 2, 0, 0, 1e-5f, 0); }
static damo_layer *make_pos(void) { return damo_position_embedding_layer(5); }

/* The largest |a - b| over n floats. */
static double max_diff(const damo_tensor *a, const damo_tensor *b) {
  double d = a && b && damo_tensor_numel(a) == damo_tensor_numel(b) ? 0 : INFINITY;
  for (int64_t i = 0; d < INFINITY && i < damo_tensor_numel(a); i++)
    d = fmax(d, fabs(damo_tensor_f32(a)[i] - damo_tensor_f32(b)[i]));
  return d;
}

/* The layouts models' files fix (damo_transformer_set_layout) change where the numbers are,
 * not the math: a block with GPT-2's fused query_key_value kernel and PyTorch's (out, in)
 * kernels, given the plain block's weights rearranged, gives the same output; and the tanh
 * GELU is not the exact one. */
static void test_layouts(void) {
  damo_layer *plain_l = damo_transformer_encoder_layer(8, 2, 0, 2, 1e-5f, 1);
  damo_layer *hf_l = damo_transformer_encoder_layer(8, 2, 0, 2, 1e-5f, 1);
  damo_layer *erf_l = damo_transformer_encoder_layer(8, 2, 0, 1, 1e-5f, 1);
  CHECK(damo_transformer_set_layout(hf_l, 1, 1, -1) == DAMO_OK);
  damo_layer *dense = damo_dense(4, DAMO_ACT_NONE);
  CHECK(damo_transformer_set_layout(dense, 1, 0, 0) == DAMO_ERR_INVALID_ARG);
  damo_layer_free(dense);
  damo_model *plain = one_layer(SEQ_4x6, "x", plain_l, "enc"), *hf = one_layer(SEQ_4x6, "x", hf_l, "enc");
  damo_model *erf = one_layer(SEQ_4x6, "x", erf_l, "enc");
  CHECK(plain && hf && erf && damo_model_build(plain, 3) == DAMO_OK && damo_model_build(hf, 4) == DAMO_OK &&
        damo_model_build(erf, 3) == DAMO_OK);
  if (!plain || !hf || !erf || !plain->built || !hf->built || !erf->built) goto done;
  CHECK(damo_transformer_set_layout(plain_l, 1, 0, 0) == DAMO_ERR_STATE); /* already called */
  CHECK(hf_l->n_params == 12 && plain_l->n_params == 16 && !strcmp(hf_l->params[0].name, "self_attention/query_key_value/kernel") &&
        hf_l->params[0].shape[0] == 18 && hf_l->params[0].shape[1] == 6 && hf_l->params[1].shape[0] == 18);
  /* plain: q k v (kernel (6, 6), bias) at slots 0-5, output 6-7, then norms and the
   * feed-forward; hf: qkv kernel (18, 6) = [q|k|v]^T, bias [q|k|v], output 2-3, ... */
  for (int p = 0; p < hf_l->n_params; p++) {
    float *dst = damo_tensor_f32(hf_l->params[p].value);
    const damo_param_slot *h = &hf_l->params[p];
    if (p < 2) {
      for (int part = 0; part < 3; part++) {
        const float *src = damo_tensor_f32(plain_l->params[2 * part + p].value);
        for (int i = 0; i < (p ? 1 : 6); i++)
          for (int j = 0; j < 6; j++) {
            if (p) dst[part * 6 + j] = src[j];
            else dst[(part * 6 + j) * 6 + i] = src[i * 6 + j]; /* (out, in) */
          }
      }
      continue;
    }
    const damo_param_slot *s = &plain_l->params[p + 4];
    CHECK(!strcmp(s->name, h->name));
    const float *src = damo_tensor_f32(s->value);
    if (s->ndim == 2)
      for (int64_t i = 0; i < s->shape[0]; i++)
        for (int64_t j = 0; j < s->shape[1]; j++) dst[j * s->shape[0] + i] = src[i * s->shape[1] + j];
    else memcpy(dst, src, (size_t)damo_tensor_numel(s->value) * sizeof *dst);
  }
  const int64_t shape[3] = {BATCH, 4, 6};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 3, shape), *a = NULL, *b = NULL, *c = NULL;
  damo_rng rng;
  damo_rng_seed(&rng, 9);
  for (int64_t i = 0; x && i < damo_tensor_numel(x); i++) damo_tensor_f32(x)[i] = damo_rng_normal(&rng);
  const damo_tensor *xs[1] = {x};
  CHECK(damo_model_predict_inputs(plain, 1, xs, BATCH, &a) == DAMO_OK &&
        damo_model_predict_inputs(hf, 1, xs, BATCH, &b) == DAMO_OK &&
        damo_model_predict_inputs(erf, 1, xs, BATCH, &c) == DAMO_OK);
  CHECK_MSG(max_diff(a, b) < 1e-5, "fused/(out, in) block differs from the plain one by %g", max_diff(a, b));
  CHECK_MSG(max_diff(a, c) > 1e-6, "tanh GELU equals the exact one (%g)", max_diff(a, c));
  damo_tensor_free(x), damo_tensor_free(a), damo_tensor_free(b), damo_tensor_free(c);
  /* the layout is part of the config: written and read back */
  cJSON *json = damo_model_to_json(hf);
  damo_model *back = NULL;
  CHECK(json && damo_model_from_json(json, "layouts", &back) == DAMO_OK);
  const damo_layer *bl = back ? damo_model_find_layer(back, "enc") : NULL;
  CHECK(bl && bl->fused_qkv && bl->kernels_out_in && bl->ff_gelu == 2 && bl->attention_rate == 0);
  cJSON_Delete(json);
  damo_model_free(back);
done:
  damo_model_free(plain), damo_model_free(hf), damo_model_free(erf);
}

/* An encoder's second input is a padding mask: the same numbers as the mask mask_zero makes
 * from the ids (HuggingFace's attention_mask, as BERT passes it). */
static void test_padding_mask_input(void) {
  const damo_tensor *ids = damo_tensor_dict_get(fx, "tokpos.in.ids");
  damo_model *from_ids = masked_chain(make_enc, 0);
  damo_model *m = damo_functional_new();
  int x = damo_model_input(m, "ids", 1, IDS_5), mask = damo_model_input(m, "mask", 1, IDS_5);
  int e = damo_model_call1(m, damo_token_and_position_embedding_layer(9, 7, 6, 0), x);
  CHECK(set_output(m, damo_model_call2(m, make_enc(), e, mask)) && damo_model_build(m, 1) == DAMO_OK);
  if (!ids || !from_ids || !m->built) goto done;
  for (int i = 0; i < 2; i++)
    for (int p = 0; p < m->layers[i]->n_params; p++)
      memcpy(m->layers[i]->params[p].value->data, from_ids->layers[i]->params[p].value->data,
             damo_tensor_nbytes(m->layers[i]->params[p].value));
  damo_tensor *mask_t = damo_tensor_new(DAMO_F32, 2, ids->shape), *a = NULL, *b = NULL, *unmasked = NULL;
  for (int64_t i = 0; mask_t && i < damo_tensor_numel(ids); i++)
    damo_tensor_f32(mask_t)[i] = damo_tensor_i32(ids)[i] != 0;
  damo_tensor *ones = damo_tensor_clone(mask_t);
  for (int64_t i = 0; ones && i < damo_tensor_numel(ones); i++) damo_tensor_f32(ones)[i] = 1;
  const damo_tensor *one[1] = {ids}, *two[2] = {ids, mask_t}, *none[2] = {ids, ones};
  CHECK(damo_model_predict_inputs(from_ids, 1, one, BATCH, &a) == DAMO_OK &&
        damo_model_predict_inputs(m, 2, two, BATCH, &b) == DAMO_OK &&
        damo_model_predict_inputs(m, 2, none, BATCH, &unmasked) == DAMO_OK);
  CHECK_MSG(max_diff(a, b) < 1e-5, "padding mask input differs from mask_zero's by %g", max_diff(a, b));
  CHECK_MSG(max_diff(a, unmasked) > 1e-4, "the mask changes nothing (%g)", max_diff(a, unmasked));
  damo_tensor_free(mask_t), damo_tensor_free(ones), damo_tensor_free(a), damo_tensor_free(b);
  damo_tensor_free(unmasked);
done:
  damo_model_free(from_ids), damo_model_free(m);
}

/* Each layer passes the padding mask on: pooled after it, the mean is over the real
 * timesteps (3 in the first row of ids), not all 5. */
static void test_masks_pass_through(void) {
  damo_layer *(*const makers[])(void) = {make_ln, make_mha, make_enc, make_dec, make_pos};
  const damo_tensor *ids = damo_tensor_dict_get(fx, "tokpos.in.ids");
  for (size_t i = 0; ids && i < sizeof makers / sizeof *makers; i++) {
    damo_model *seq = masked_chain(makers[i], 0), *pooled = masked_chain(makers[i], 1);
    damo_tensor *h = NULL, *p = NULL;
    CHECK(seq && pooled && damo_model_predict(seq, ids, 0, &h) == DAMO_OK &&
          damo_model_predict(pooled, ids, 0, &p) == DAMO_OK);
    if (h && p) {
      const char *type = seq->layers[1]->type->type;
      double worst = 0, all_steps = 0;
      for (int c = 0; c < 6; c++) {
        double real = 0, every = 0;
        for (int t = 0; t < 5; t++) {
          every += damo_tensor_f32(h)[t * 6 + c] / 5.0;
          if (t < 3) real += damo_tensor_f32(h)[t * 6 + c] / 3.0;
        }
        worst = fmax(worst, fabs(real - damo_tensor_f32(p)[c]));
        all_steps = fmax(all_steps, fabs(every - damo_tensor_f32(p)[c]));
      }
      CHECK_MSG(worst < 1e-5 && all_steps > 1e-3, "%s: pooled mean off the real steps' by %g (all steps' by %g)", type,
                worst, all_steps);
    }
    damo_tensor_free(h);
    damo_tensor_free(p);
    damo_model_free(seq);
    damo_model_free(pooled);
  }
}

/* ------------------------------------------------------------------ errors */

/* A functional model of one input of shape `in` (ids when is_ids) and one layer call. */
static void expect_call_error(int ndim, const int64_t *in, damo_layer *l, int n_calls, const char *want) {
  damo_model *m = damo_functional_new();
  int x = damo_model_input(m, "x", ndim, in);
  int xs[4] = {x, x, x, x};
  int y = damo_model_call(m, l, n_calls, xs);
  damo_status st = damo_model_set_output(m, y);
  CHECK_MSG(st != DAMO_OK && strstr(damo_last_error(), want), "want '%s', got: %s", want,
            st == DAMO_OK ? "success" : damo_last_error());
  damo_model_free(m);
}

static void test_errors(void) {
  const int64_t seq[] = {4, 6}, flat[] = {6}, image[] = {4, 4, 3}, long_seq[] = {8, 6}, ids[] = {5};
  /* input counts */
  expect_call_error(2, seq, damo_multi_head_attention_layer(2, 3, 0, 0, 0, 1, 0), 4,
                    "(multi_head_attention) takes 1 to 3 inputs, got 4");
  expect_call_error(2, seq, damo_transformer_decoder_layer(8, 2, 0, 0, 1e-5f, 0), 3,
                    "(transformer_decoder) takes 1 to 2 inputs, got 3");
  expect_call_error(2, seq, damo_transformer_encoder_layer(8, 2, 0, 0, 1e-5f, 0), 3,
                    "(transformer_encoder) takes 1 to 2 inputs, got 3");
  expect_call_error(2, seq, damo_transformer_encoder_layer(8, 2, 0, 0, 1e-5f, 0), 2,
                    "its second input is the padding mask, (timesteps,) = (4,), got (4, 6)");
  /* head sizes */
  expect_call_error(2, seq, damo_transformer_encoder_layer(8, 7, 0, 0, 1e-5f, 0), 1,
                    "6 features do not give 7 heads at least one channel each");
  expect_call_error(2, seq, damo_multi_head_attention_layer(0, 3, 0, 0, 0, 1, 0), 1, "num_heads and key_dim must be >= 1");
  /* ranks */
  expect_call_error(1, flat, damo_conv1d_layer(4, 3, 1, DAMO_PADDING_VALID, DAMO_ACT_NONE), 1,
                    "conv1d layer 'conv1d_1' needs (timesteps, features) inputs, got (6,)");
  expect_call_error(3, image, damo_conv1d_layer(4, 3, 1, DAMO_PADDING_VALID, DAMO_ACT_NONE), 1,
                    "needs (timesteps, features) inputs, got (4, 4, 3)");
  expect_call_error(1, flat, damo_multi_head_attention_layer(2, 3, 0, 0, 0, 1, 0), 1,
                    "the query must be (timesteps, features), got (6,)");
  expect_call_error(2, seq, damo_conv1d_layer(4, 5, 1, DAMO_PADDING_VALID, DAMO_ACT_NONE), 1,
                    "window 5 is longer than the 4 timesteps with valid padding");
  /* sequence lengths */
  expect_call_error(2, long_seq, damo_position_embedding_layer(6), 1,
                    "the input has 8 timesteps, more than its sequence_length 6");
  const int64_t nine[] = {9};
  expect_call_error(1, nine, damo_token_and_position_embedding_layer(20, 6, 4, 0), 1,
                    "the input has 9 timesteps, more than its sequence_length 6");

  /* token ids: only id layers read them, and id layers read only model inputs */
  damo_model *m = damo_functional_new();
  int x = damo_model_input(m, "ids", 1, ids);
  int e = damo_model_call1(m, damo_token_and_position_embedding_layer(20, 5, 4, 1), x);
  int d = damo_model_call1(m, damo_dense(3, DAMO_ACT_NONE), x);
  CHECK_MSG(e >= 0 && d < 0 && strstr(damo_last_error(), "layer 'dense_1' (dense) takes input 'ids', which holds token "
                                                         "ids"), "%s", damo_last_error());
  damo_model_free(m);
  m = damo_functional_new();
  x = damo_model_input(m, "x", 2, seq);
  d = damo_model_call1(m, damo_dense(3, DAMO_ACT_NONE), x);
  e = damo_model_call1(m, damo_token_and_position_embedding_layer(20, 5, 4, 1), d);
  CHECK_MSG(e < 0 && strstr(damo_last_error(), "token_and_position_embedding layer 'token_and_position_embedding_1' "
                                               "must take a model input (token ids), not the output of 'dense_1'"),
            "%s", damo_last_error());
  damo_model_free(m);
  /* in a Sequential model an id layer comes first */
  m = damo_sequential_new(1, ids);
  damo_model_add(m, damo_dense(4, DAMO_ACT_NONE));
  CHECK(damo_model_add(m, damo_token_and_position_embedding_layer(20, 5, 4, 1)) != DAMO_OK &&
        strstr(damo_last_error(), "model_add: token_and_position_embedding layer must be the first layer"));
  damo_model_free(m);
  /* causal attention needs as many queries as keys */
  m = damo_functional_new();
  const int64_t q_shape[] = {3, 6}, v_shape[] = {5, 6};
  int q = damo_model_input(m, "q", 2, q_shape), v = damo_model_input(m, "v", 2, v_shape);
  CHECK(damo_model_call2(m, damo_multi_head_attention_layer(2, 3, 0, 0, 0, 1, 1), q, v) < 0 &&
        strstr(damo_last_error(), "use_causal_mask needs as many query as key timesteps, got 3 and 5"));
  damo_model_free(m);
}

static void expect_config_error(const char *layer, const char *want) {
  char text[1024];
  snprintf(text, sizeof text,
           "{\"format\": \"damo.functional\", \"inputs\": [{\"name\": \"x\", \"shape\": [4, 6]}], \"layers\": [%s], "
           "\"outputs\": [\"l\"]}",
           layer);
  damo_model *m = NULL;
  damo_status st = damo_model_from_config_json(text, "bad.json", &m);
  CHECK_MSG(st != DAMO_OK && !m && strstr(damo_last_error(), want), "want '%s', got: %s", want,
            st == DAMO_OK ? "success" : damo_last_error());
  damo_model_free(m);
}

static void test_config_errors(void) {
  expect_config_error("{\"type\": \"transformer_encoder\", \"name\": \"l\", \"intermediate_dim\": 8, \"num_head\": 2, "
                      "\"inputs\": [\"x\"]}", "num_head");
  expect_config_error("{\"type\": \"transformer_encoder\", \"name\": \"l\", \"intermediate_dim\": 8, \"num_heads\": 2, "
                      "\"activation\": \"tanh\", \"inputs\": [\"x\"]}", "activation");
  expect_config_error("{\"type\": \"multi_head_attention\", \"name\": \"l\", \"num_heads\": 2, \"inputs\": [\"x\"]}",
                      "key_dim");
  expect_config_error("{\"type\": \"max_pooling1d\", \"name\": \"l\", \"padding\": \"causal\", \"inputs\": [\"x\"]}",
                      "must be valid or same for a pooling");
  expect_config_error("{\"type\": \"conv1d\", \"name\": \"l\", \"filters\": 2, \"kernel_size\": 3, \"padding\": \"full\", "
                      "\"inputs\": [\"x\"]}", "padding");
  expect_config_error("{\"type\": \"layer_normalization\", \"name\": \"l\", \"epsilon\": 0, \"inputs\": [\"x\"]}",
                      "epsilon");
}

/* ------------------------------------------------------------------ training */

/* A Sequential transformer classifier (token_and_position_embedding with mask_zero ->
 * transformer_encoder -> global_average_pooling1d -> dense softmax) learns whether token 3
 * occurs in a padded sequence: its loss falls well below chance. */
static void test_transformer_classifier_learns(void) {
  const int64_t n = 128, T = 8;
  const int64_t ids_shape[] = {n, T}, labels_shape[] = {n};
  damo_tensor *x = damo_tensor_new(DAMO_I32, 2, ids_shape), *y = damo_tensor_new(DAMO_I32, 1, labels_shape);
  damo_rng rng;
  damo_rng_seed(&rng, 11);
  for (int64_t r = 0; r < n; r++) {
    const int len = 3 + (int)(damo_rng_uniform(&rng) * 5.0f); /* 3..7 tokens, then padding */
    const int label = (int)(r & 1);
    int32_t *row = damo_tensor_i32(x) + r * T;
    for (int t = 0; t < T; t++) row[t] = t < len ? 4 + (int)(damo_rng_uniform(&rng) * 6.0f) : 0;
    if (label) row[(int)(damo_rng_uniform(&rng) * (float)len)] = 3;
    damo_tensor_i32(y)[r] = label;
  }
  const int64_t in[] = {T};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_token_and_position_embedding_layer(10, T, 16, 1));
  damo_model_add(m, damo_transformer_encoder_layer(32, 2, 0.0f, 0, 1e-5f, 0));
  damo_model_add(m, damo_global_avg_pool1d_layer());
  damo_model_add(m, damo_dense(2, DAMO_ACT_SOFTMAX));
  damo_compile_options c = {.optimizer = damo_adam(3e-3f), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = 0};
  CHECK_MSG(damo_model_compile(m, &c) == DAMO_OK, "%s", damo_last_error());
  float before = 0, after = 0, acc = 0;
  CHECK(damo_model_evaluate(m, x, y, 0, &before, NULL) == DAMO_OK);
  damo_fit_options o = {.epochs = 30, .batch_size = 16, .seed = 5, .verbose = 0};
  CHECK_MSG(damo_model_fit(m, x, y, &o, NULL) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_model_evaluate(m, x, y, 0, &after, &acc) == DAMO_OK);
  CHECK_MSG(after < 0.2f && acc > 0.95f, "loss %.4f -> %.4f, accuracy %.3f", before, after, acc);
  damo_model_free(m);
  damo_tensor_free(x);
  damo_tensor_free(y);
}

int main(void) {
  (void)write_bytes;
  tmpdir_template("seq_layers");
  if (!mkdtemp(tmpdir)) {
    printf("seq_layers: 0 passed, 1 failed\n");
    return 1;
  }
  if (damo_safetensors_load(DAMO_SOURCE_DIR "/tests/fixtures/seq_layers.safetensors", &fx) != DAMO_OK) {
    fprintf(stderr, "fixture missing (%s); run: make ref\n", damo_last_error());
    printf("seq_layers: 0 passed, 1 failed\n");
    return 1;
  }
  RUN(test_cases_match_torch);
  RUN(test_weight_names);
  RUN(test_masks_pass_through);
  RUN(test_layouts);
  RUN(test_padding_mask_input);
  RUN(test_attention_dropout);
  RUN(test_errors);
  RUN(test_config_errors);
  RUN(test_transformer_classifier_learns);
  damo_tensor_dict_free(fx);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return test_summary("seq_layers");
}
