/* bert.c - BERT as HuggingFace's BertModel and heads define it: parameters and the
 * classifier graph.
 *
 * Parameters live in one flat block (gradients in a second of the same layout), 64-byte
 * aligned tensors in HuggingFace's order, names and layouts: nn.Linear weights are (out, in),
 * which damo_linear_op multiplies as stored. One encoder layer (post-LN), x (B, T, H):
 *   q, k, v = x Wq^T + bq, ...; a = attention(q, k, v, heads, key mask = attention_mask)
 *   x = LayerNorm(x + dropout(a Wo^T + bo))
 *   x = LayerNorm(x + dropout(gelu_erf(x Wi^T + bi) Wout^T + bout))
 * Embeddings: LayerNorm(word[ids] + position[0..T) + token_type[types]) then dropout. The
 * classifier reads the [CLS] position: logits = classifier(dropout(tanh(pooler(h_0)))).
 * The attention probabilities are dropped at attention_probs_dropout_prob inside the fused
 * attention op (its mask is regenerated from a seed, never stored). */
#include "models/bert.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ parameters */

typedef struct tensor_shape {
  const char *suffix;
  char rows, cols; /* 'H' hidden, 'V' vocabulary, 'L' labels; cols 0 for a vector */
} tensor_shape;

enum { POOL_W, POOL_B, CLS_W, CLS_B, MLM_W, MLM_B, MLM_LN_W, MLM_LN_B, MLM_BIAS };
static const tensor_shape head_tensors[BERT_HEAD_TENSORS] = {
    {"pooler.dense.weight", 'H', 'H'},
    {"pooler.dense.bias", 'H', 0},
    {"classifier.weight", 'L', 'H'},
    {"classifier.bias", 'L', 0},
    {"cls.predictions.transform.dense.weight", 'H', 'H'},
    {"cls.predictions.transform.dense.bias", 'H', 0},
    {"cls.predictions.transform.LayerNorm.weight", 'H', 0},
    {"cls.predictions.transform.LayerNorm.bias", 'H', 0},
    {"cls.predictions.bias", 'V', 0},
};

damo_bert_config damo_bert_config_default(void) {
  damo_bert_config c = {30522, 768, 12, 12, 3072, 512, 2, 1e-12f, 0.1f, 0.1f, 2};
  return c;
}

damo_status bert_check_config(const damo_bert_config *c, const char *where) {
  if (c->vocab_size < 1 || c->hidden_size < 1 || c->num_hidden_layers < 1 || c->num_attention_heads < 1 ||
      c->intermediate_size < 1 || c->max_position_embeddings < 1 || c->type_vocab_size < 1 || c->num_labels < 1)
    return damo_error(DAMO_ERR_INVALID_ARG,
                      "%s: BERT config needs positive vocab_size (%d), hidden_size (%d), num_hidden_layers (%d), "
                      "num_attention_heads (%d), intermediate_size (%d), max_position_embeddings (%d), "
                      "type_vocab_size (%d) and num_labels (%d)",
                      where, c->vocab_size, c->hidden_size, c->num_hidden_layers, c->num_attention_heads,
                      c->intermediate_size, c->max_position_embeddings, c->type_vocab_size, c->num_labels);
  if (c->hidden_size % c->num_attention_heads)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: hidden_size %d is not a multiple of num_attention_heads %d", where,
                      c->hidden_size, c->num_attention_heads);
  if (!(c->layer_norm_eps > 0) || !isfinite(c->layer_norm_eps))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: layer_norm_eps must be positive (got %g)", where, (double)c->layer_norm_eps);
  if (!(c->hidden_dropout_prob >= 0 && c->hidden_dropout_prob < 1) ||
      !(c->attention_probs_dropout_prob >= 0 && c->attention_probs_dropout_prob < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: dropout probabilities must lie in [0, 1) (got %g, %g)", where,
                      (double)c->hidden_dropout_prob, (double)c->attention_probs_dropout_prob);
  if ((int64_t)c->num_hidden_layers * c->hidden_size * c->intermediate_size > ((int64_t)1 << 40) ||
      c->hidden_size > (1 << 20) || c->intermediate_size > (1 << 22) || c->vocab_size > (1 << 24) ||
      c->max_position_embeddings > (1 << 20) || c->type_vocab_size > (1 << 16) || c->num_labels > (1 << 20) ||
      c->num_hidden_layers > 4096)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: BERT config is implausibly large", where);
  return DAMO_OK;
}

static int64_t dim_of(const damo_bert_config *c, char d) {
  switch (d) {
  case 'H': return c->hidden_size;
  case 'V': return c->vocab_size;
  case 'L': return c->num_labels;
  default: return 1;
  }
}

/* Name and shape of head tensor i (the weights that are no layer's, after the layers'). */
static void head_spec(const void *config, int i, char *name, size_t cap, int *ndim, int64_t *shape) {
  const tensor_shape *ts = &head_tensors[i];
  snprintf(name, cap, "%s", ts->suffix);
  *ndim = ts->cols ? 2 : 1;
  shape[0] = dim_of(config, ts->rows);
  shape[1] = ts->cols ? dim_of(config, ts->cols) : 0;
}

static void free_label_names(damo_bert *m) {
  for (int i = 0; m->label_names && i < m->config.num_labels; i++) free(m->label_names[i]);
  free(m->label_names);
  m->label_names = NULL;
}

void damo_bert_free(damo_bert *m) {
  if (!m) return;
  bert_int8_free(m);
  param_store_free(&m->p);
  free_label_names(m);
  free(m->loaded);
  free(m);
}

damo_status damo_bert_set_label_names(damo_bert *m, int n, const char *const *names) {
  if (!m || !names) return damo_error(DAMO_ERR_INVALID_ARG, "bert_set_label_names: NULL argument");
  if (n != m->config.num_labels)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert_set_label_names: %d names for %d labels", n, m->config.num_labels);
  char **copy = calloc((size_t)n, sizeof *copy);
  for (int i = 0; copy && i < n; i++)
    if (!names[i] || !(copy[i] = damo_strdup(names[i]))) {
      for (int j = 0; j < i; j++) free(copy[j]);
      free(copy);
      return damo_error(DAMO_ERR_INVALID_ARG, "bert_set_label_names: name %d is NULL or out of memory", i);
    }
  if (!copy) return damo_error(DAMO_ERR_NOMEM, "bert_set_label_names: out of memory");
  free_label_names(m);
  m->label_names = copy;
  return DAMO_OK;
}

const char *damo_bert_label_name(const damo_bert *m, int i) {
  if (!m || i < 0 || i >= m->config.num_labels) return NULL;
  return m->label_names ? m->label_names[i] : NULL;
}

/* The layers' weights under HuggingFace's names (see hf_slot_name). */
static const hf_slot_name bert_names[] = {
    {"token_embedding/embeddings", "embeddings.word_embeddings.weight"},
    {"position_embedding/embeddings", "embeddings.position_embeddings.weight"},
    {"embeddings", ".weight"}, /* embeddings.token_type_embeddings */
    {"gamma", ".weight"},      /* embeddings.LayerNorm */
    {"beta", ".bias"},
    {"self_attention/query/kernel", ".attention.self.query.weight"},
    {"self_attention/query/bias", ".attention.self.query.bias"},
    {"self_attention/key/kernel", ".attention.self.key.weight"},
    {"self_attention/key/bias", ".attention.self.key.bias"},
    {"self_attention/value/kernel", ".attention.self.value.weight"},
    {"self_attention/value/bias", ".attention.self.value.bias"},
    {"self_attention/attention_output/kernel", ".attention.output.dense.weight"},
    {"self_attention/attention_output/bias", ".attention.output.dense.bias"},
    {"self_attention_layer_norm/gamma", ".attention.output.LayerNorm.weight"},
    {"self_attention_layer_norm/beta", ".attention.output.LayerNorm.bias"},
    {"feedforward_intermediate_dense/kernel", ".intermediate.dense.weight"},
    {"feedforward_intermediate_dense/bias", ".intermediate.dense.bias"},
    {"feedforward_output_dense/kernel", ".output.dense.weight"},
    {"feedforward_output_dense/bias", ".output.dense.bias"},
    {"feedforward_layer_norm/gamma", ".output.LayerNorm.weight"},
    {"feedforward_layer_norm/beta", ".output.LayerNorm.bias"},
};

/* BERT's encoder for sequences of seq_len as a functional model of the library's layers:
 * inputs input_ids, token_type_ids (T,) and attention_mask (T,) 0/1 floats;
 * token_and_position_embedding "embeddings" (word, position) + embedding
 * "embeddings.token_type_embeddings", add, layer_normalization "embeddings.LayerNorm",
 * dropout, then num_hidden_layers post-LN transformer_encoder blocks "encoder.layer.0" ...
 * (exact GELU, kernels in nn.Linear's (out, in) layout, the attention mask as their second
 * input). The store is laid out from these layers (bert_alloc); a graph's layers are views
 * of it. */
static damo_status bert_layers(const damo_bert_config *c, int64_t seq_len, damo_model **out) {
  damo_model *fm = *out = damo_functional_new();
  if (!fm) return damo_error(DAMO_ERR_NOMEM, "bert: out of memory");
  const int ids = damo_model_input(fm, "input_ids", 1, &seq_len);
  const int types = damo_model_input(fm, "token_type_ids", 1, &seq_len);
  const int mask = damo_model_input(fm, "attention_mask", 1, &seq_len);
  damo_layer *words = damo_token_and_position_embedding_layer(c->vocab_size, c->max_position_embeddings,
                                                              c->hidden_size, 0);
  const int e = damo_model_call1(fm, damo_layer_set_name(words, "embeddings"), ids);
  damo_layer *type_table = damo_embedding_layer(c->type_vocab_size, c->hidden_size, 0);
  const int t = damo_model_call1(fm, damo_layer_set_name(type_table, "embeddings.token_type_embeddings"), types);
  int x = damo_model_call2(fm, damo_layer_set_name(damo_add_layer(), "embeddings.sum"), e, t);
  x = damo_model_call1(fm, damo_layer_set_name(damo_layer_norm_layer(c->layer_norm_eps, 1, 1), "embeddings.LayerNorm"), x);
  if (c->hidden_dropout_prob > 0)
    x = damo_model_call1(fm, damo_layer_set_name(damo_dropout_layer(c->hidden_dropout_prob), "embeddings.dropout"), x);
  for (int i = 0; i < c->num_hidden_layers; i++) {
    char name[40];
    snprintf(name, sizeof name, "encoder.layer.%d", i);
    damo_layer *block = damo_transformer_encoder_layer(c->intermediate_size, c->num_attention_heads,
                                                       c->hidden_dropout_prob, 1, c->layer_norm_eps, 0);
    if (block && damo_transformer_set_layout(block, 0, 1, c->attention_probs_dropout_prob) != DAMO_OK)
      damo_layer_free(block), block = NULL;
    x = damo_model_call2(fm, damo_layer_set_name(block, name), x, mask);
  }
  return damo_model_set_output(fm, x);
}

#define N_NAMES ((int)(sizeof bert_names / sizeof *bert_names))


damo_status bert_alloc(const damo_bert_config *cfg, damo_bert **out) {
  *out = NULL;
  damo_status st = bert_check_config(cfg, "bert");
  if (st != DAMO_OK) return st;
  damo_bert *m = calloc(1, sizeof *m);
  if (!m) return damo_error(DAMO_ERR_NOMEM, "bert: out of memory");
  m->config = *cfg;
  damo_model *fm;
  st = bert_layers(cfg, 1, &fm);
  if (st == DAMO_OK) st = param_store_alloc_layers(&m->p, fm, bert_names, N_NAMES, BERT_HEAD_TENSORS, head_spec, cfg, "bert");
  damo_model_free(fm);
  m->first_head = m->p.n_tensors - BERT_HEAD_TENSORS;
  m->loaded = st == DAMO_OK ? calloc((size_t)m->p.n_tensors, 1) : NULL;
  if (st == DAMO_OK && !m->loaded) st = damo_error(DAMO_ERR_NOMEM, "bert: out of memory");
  if (st != DAMO_OK) {
    param_store_free(&m->p);
    free(m->loaded);
    free(m);
    return st;
  }
  *out = m;
  return DAMO_OK;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

void bert_init_tensor(damo_bert *m, int i, damo_rng *rng) {
  const char *name = m->p.names[i];
  float *v = damo_tensor_f32(m->p.values[i]);
  const int64_t count = damo_tensor_numel(m->p.values[i]);
  if (strstr(name, "LayerNorm.")) {
    const float fill = ends_with(name, ".weight") ? 1.0f : 0.0f;
    for (int64_t j = 0; j < count; j++) v[j] = fill;
  } else if (m->p.values[i]->ndim == 2) {
    for (int64_t j = 0; j < count; j++) v[j] = 0.02f * damo_rng_normal(rng);
    /* nn.Embedding(padding_idx = pad_token_id = 0): the [PAD] row starts at zero. */
    if (i == 0) memset(v, 0, (size_t)m->config.hidden_size * sizeof *v);
  } else {
    memset(v, 0, (size_t)count * sizeof *v);
  }
}

damo_status damo_bert_new(const damo_bert_config *cfg, uint64_t seed, damo_bert **out) {
  if (!cfg || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_new: NULL argument");
  damo_bert *m;
  damo_status st = bert_alloc(cfg, &m);
  if (st != DAMO_OK) return st;
  damo_rng rng;
  damo_rng_seed(&rng, seed);
  for (int i = 0; i < m->p.n_tensors; i++) bert_init_tensor(m, i, &rng);
  *out = m;
  return DAMO_OK;
}

const damo_bert_config *damo_bert_get_config(const damo_bert *m) { return m ? &m->config : NULL; }
int damo_bert_num_tensors(const damo_bert *m) { return m ? m->p.n_tensors : 0; }
const char *damo_bert_tensor_name(const damo_bert *m, int i) { return m && i >= 0 && i < m->p.n_tensors ? m->p.names[i] : NULL; }
int64_t damo_bert_num_params(const damo_bert *m) { return m ? m->p.n_params : 0; }
damo_status damo_bert_set_trainable(damo_bert *m, const char *patterns, int trainable) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "bert_set_trainable: NULL model");
  return param_store_set_trainable(&m->p, patterns, trainable, "bert_set_trainable");
}
int damo_bert_tensor_trainable(const damo_bert *m, int i) {
  return m && i >= 0 && i < m->p.n_tensors ? param_store_trained(&m->p, i) : 0;
}
int64_t damo_bert_num_trainable_params(const damo_bert *m) { return m ? m->p.n_trainable : 0; }
int damo_bert_tensor_loaded(const damo_bert *m, int i) { return m && i >= 0 && i < m->p.n_tensors ? m->loaded[i] : 0; }

damo_tensor *damo_bert_param(const damo_bert *m, const char *name) {
  int i = param_store_index(&m->p, name);
  return i >= 0 ? m->p.values[i] : NULL;
}
damo_tensor *damo_bert_grad(const damo_bert *m, const char *name) {
  int i = param_store_index(&m->p, name);
  return i >= 0 ? m->p.grads[i] : NULL;
}
float *damo_bert_param_block(const damo_bert *m, int64_t *n_floats) {
  if (n_floats) *n_floats = m ? m->p.n_params_padded : 0;
  return m ? m->p.param_block : NULL;
}
float *damo_bert_grad_block(const damo_bert *m, int64_t *n_floats) {
  if (n_floats) *n_floats = m ? m->p.n_params_padded : 0;
  return m ? m->p.grad_block : NULL;
}

/* ------------------------------------------------------------------ graphs */

int damo_bert_graph_int8_products(const damo_bert_graph *bg) { return bg ? bg->int8_products : 0; }

void damo_bert_graph_free(damo_bert_graph *bg) {
  if (!bg) return;
  damo_graph_free(bg->graph);
  damo_model_free(bg->layers); /* after the graph: its param nodes hold the layers' views */
  free(bg->mask_f32);
  free(bg->rows_i32);
  free(bg);
}

static damo_node *param_node(damo_graph *g, const damo_bert *m, int i) {
  return damo_param(g, m->p.names[i], m->p.values[i], param_store_grad_view(&m->p, i));
}

damo_status damo_bert_set_recompute(damo_bert *m, int on) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "bert_set_recompute: NULL model");
  m->recompute = on != 0;
  return DAMO_OK;
}

static damo_node *dropout(damo_graph *g, damo_node *x, float rate) { return rate > 0 ? damo_dropout(g, x, rate) : x; }

/* A graph's inputs and encoder: bg with its graph, and the last layer's output in *x. */
/* The explaining graph reads the embeddings' output through a rewrite (tap: the model node of
 * embeddings.LayerNorm; NULL rewrite: none). */
typedef struct embed_tap {
  damo_tap_rewrite rewrite;
  void *ctx;
  damo_node *value; /* the embeddings' output as computed */
} embed_tap;

static damo_status graph_begin_at(damo_bert *m, int64_t batch, int64_t seq_len, const char *what, damo_bert_graph **out,
                                  damo_node **x, embed_tap *tap);

static damo_status graph_begin(damo_bert *m, int64_t batch, int64_t seq_len, const char *what, damo_bert_graph **out,
                               damo_node **x) {
  return graph_begin_at(m, batch, seq_len, what, out, x, NULL);
}

static damo_status graph_begin_at(damo_bert *m, int64_t batch, int64_t seq_len, const char *what, damo_bert_graph **out,
                                  damo_node **x, embed_tap *tap) {
  *out = NULL;
  const damo_bert_config *c = &m->config;
  if (batch < 1 || seq_len < 1 || seq_len > c->max_position_embeddings)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: batch %lld and sequence length %lld must be >= 1, the length at most "
                      "max_position_embeddings %d", what, (long long)batch, (long long)seq_len,
                      c->max_position_embeddings);
  damo_bert_graph *bg = calloc(1, sizeof *bg);
  if (!bg) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", what);
  bg->model = m;
  bg->batch = batch;
  bg->seq_len = seq_len;
  bg->mask_f32 = malloc((size_t)(batch * seq_len) * sizeof *bg->mask_f32);
  damo_graph *g = bg->graph = damo_graph_new(0);
  damo_status st = g && bg->mask_f32 ? bert_layers(c, seq_len, &bg->layers) : DAMO_ERR_NOMEM;
  if (st == DAMO_OK) st = param_store_bind_layers(&m->p, bg->layers, bert_names, N_NAMES, "bert");
  if (st == DAMO_OK) st = damo_model_set_recompute(bg->layers, m->recompute);
  damo_node *inputs[3] = {NULL, NULL, NULL}, *pre;
  if (st == DAMO_OK)
    st = tap ? damo_model_build_nodes_at(bg->layers, g, batch, inputs, x, &pre,
                                         damo_model_node_index(bg->layers, "embeddings.LayerNorm"), &tap->value,
                                         tap->rewrite, tap->ctx)
             : damo_model_build_nodes(bg->layers, g, batch, inputs, x, &pre);
  if (st != DAMO_OK) {
    damo_bert_graph_free(bg);
    return st == DAMO_ERR_NOMEM ? damo_error(DAMO_ERR_NOMEM, "%s: out of memory", what) : st;
  }
  bg->ids = inputs[0], bg->token_types = inputs[1], bg->mask = inputs[2];
  bg->word_embeddings = damo_layer_param_node(bg->layers->layers[0], g, 0);
  *out = bg;
  return DAMO_OK;
}

/* Compiles bg's graph for its loss (if any) and outputs; frees bg on failure. */
static damo_status graph_finish(damo_bert_graph *bg, const char *what) {
  damo_graph *g = bg->graph;
  damo_status st = damo_graph_status(g);
  if (bg->loss && bg->model->keep_forward) damo_graph_keep_forward(g);
  if (st == DAMO_OK) st = bg->logits ? damo_graph_compile(g, bg->loss, 1, &bg->logits) : damo_graph_compile(g, bg->loss, 0, NULL);
  if (st != DAMO_OK) {
    damo_error_prefix(st, "building the BERT %s graph (batch %lld, length %lld): ", what, (long long)bg->batch,
                      (long long)bg->seq_len);
    damo_bert_graph_free(bg);
  }
  return st;
}

damo_status damo_bert_classifier_new(damo_bert *m, int64_t batch, int64_t seq_len, int training, damo_bert_graph **out) {
  if (!m || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_classifier_new: NULL argument");
  if (training && m->q8.q)
    return damo_error(DAMO_ERR_UNSUPPORTED, "bert_classifier_new: an int8 model runs inference only; fine-tune the f32 "
                      "model and quantise it again");
  damo_bert_graph *bg;
  damo_node *x;
  damo_status st = graph_begin(m, batch, seq_len, "bert_classifier_new", &bg, &x);
  if (st != DAMO_OK) return st;
  damo_graph *g = bg->graph;
  const damo_bert_config *c = &m->config;
  const int64_t H = c->hidden_size;
  if (training) bg->labels = damo_input(g, "labels", DAMO_I32, 1, &batch);
  /* [CLS] is position 0: the first H channels of each row of (B, T H). */
  int64_t flat[2] = {0, seq_len * H};
  damo_node *cls = damo_slice_last(g, damo_reshape(g, x, 2, flat), 0, H);
  const int head = m->first_head;
  damo_node *pooled = damo_linear_op(g, cls, param_node(g, m, head + POOL_W), param_node(g, m, head + POOL_B), DAMO_ACT_TANH);
  pooled = dropout(g, pooled, c->hidden_dropout_prob);
  bg->logits = damo_linear_op(g, pooled, param_node(g, m, head + CLS_W), param_node(g, m, head + CLS_B), DAMO_ACT_NONE);
  if (bg->logits) damo_node_set_name(bg->logits, "logits");
  if (training) {
    bg->loss = damo_softmax_cross_entropy(g, bg->logits, bg->labels);
    if (bg->loss) damo_node_set_name(bg->loss, "loss");
  }
  int rewritten = 0;
  if (damo_graph_status(g) == DAMO_OK && (st = bert_int8_rewrite(m, g, 1, &bg->logits, &rewritten)) != DAMO_OK) {
    damo_bert_graph_free(bg);
    return st;
  }
  bg->int8_products = rewritten;
  if ((st = graph_finish(bg, "classifier")) == DAMO_OK) *out = bg;
  return st;
}

damo_status damo_bert_encoder_new(damo_bert *m, int64_t batch, int64_t seq_len, damo_bert_graph **out) {
  if (!m || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_encoder_new: NULL argument");
  damo_bert_graph *bg;
  damo_node *x;
  damo_status st = graph_begin(m, batch, seq_len, "bert_encoder_new", &bg, &x);
  if (st != DAMO_OK) return st;
  damo_graph *g = bg->graph;
  const int64_t H = m->config.hidden_size;
  int64_t flat[2] = {0, seq_len * H};
  bg->hidden = damo_reshape(g, x, 2, flat);
  damo_node *cls = damo_slice_last(g, bg->hidden, 0, H);
  const int head = m->first_head;
  bg->pooled = damo_linear_op(g, cls, param_node(g, m, head + POOL_W), param_node(g, m, head + POOL_B), DAMO_ACT_TANH);
  int rewritten = 0;
  damo_node *outs[2] = {bg->hidden, bg->pooled};
  if (damo_graph_status(g) == DAMO_OK && (st = bert_int8_rewrite(m, g, 2, outs, &rewritten)) != DAMO_OK) {
    damo_bert_graph_free(bg);
    return st;
  }
  bg->int8_products = rewritten;
  st = damo_graph_status(g);
  if (st == DAMO_OK) st = damo_graph_compile(g, NULL, 2, outs);
  if (st != DAMO_OK) {
    damo_error_prefix(st, "building the BERT encoder graph (batch %lld, length %lld): ", (long long)batch,
                      (long long)seq_len);
    damo_bert_graph_free(bg);
    return st;
  }
  *out = bg;
  return DAMO_OK;
}

damo_status damo_bert_mlm_new(damo_bert *m, int64_t batch, int64_t seq_len, int64_t predictions, damo_bert_graph **out) {
  if (!m || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_mlm_new: NULL argument");
  if (m->q8.q) return damo_error(DAMO_ERR_UNSUPPORTED, "bert_mlm_new: an int8 model is not pre-trained; quantise after");
  if (predictions < 1 || predictions > seq_len)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert_mlm_new: %lld predictions per sequence, expected 1 to the length %lld",
                      (long long)predictions, (long long)seq_len);
  damo_bert_graph *bg;
  damo_node *x;
  damo_status st = graph_begin(m, batch, seq_len, "bert_mlm_new", &bg, &x);
  if (st != DAMO_OK) return st;
  damo_graph *g = bg->graph;
  const damo_bert_config *c = &m->config;
  const int64_t H = c->hidden_size;
  bg->predictions = predictions;
  int64_t slots[2] = {batch, predictions};
  bg->rows_i32 = malloc((size_t)(batch * predictions) * sizeof *bg->rows_i32);
  if (!bg->rows_i32) {
    damo_bert_graph_free(bg);
    return damo_error(DAMO_ERR_NOMEM, "bert_mlm_new: out of memory");
  }
  bg->mlm_rows = damo_input(g, "mlm_rows", DAMO_I32, 2, slots);
  bg->labels = damo_input(g, "mlm_labels", DAMO_I32, 2, slots);
  /* The predicted positions' hidden states: rows b T + position of (B T, H). */
  int64_t flat[2] = {-1, H}, flat_labels[1] = {-1};
  damo_node *picked = damo_embedding(g, bg->mlm_rows, damo_reshape(g, x, 2, flat));
  const int head = m->first_head;
  damo_node *t = damo_gelu(g, damo_linear_op(g, picked, param_node(g, m, head + MLM_W), param_node(g, m, head + MLM_B),
                                             DAMO_ACT_NONE), 0);
  t = damo_layer_norm(g, t, param_node(g, m, head + MLM_LN_W), param_node(g, m, head + MLM_LN_B), c->layer_norm_eps);
  /* The same node as the input embedding's: one gradient buffer, both shares summed. */
  bg->loss = damo_linear_cross_entropy(g, damo_reshape(g, t, 2, flat), bg->word_embeddings,
                                       param_node(g, m, head + MLM_BIAS), damo_reshape(g, bg->labels, 1, flat_labels));
  if (bg->loss) damo_node_set_name(bg->loss, "mlm_loss");
  if ((st = graph_finish(bg, "masked-LM")) == DAMO_OK) *out = bg;
  return st;
}

void damo_bert_graph_seed(damo_bert_graph *bg, uint64_t seed) {
  if (bg) damo_rng_seed(&bg->graph->rng, seed);
}

/* Checks and binds the inputs every graph has, at `batch` rows. */
damo_status bert_bind_inputs(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                              const int32_t *mask) {
  if (!bg || !ids || !token_types || !mask) return damo_error(DAMO_ERR_INVALID_ARG, "bert_forward: NULL argument");
  if (batch < 1 || batch > bg->batch)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert_forward: batch %lld outside [1, %lld] (the built batch)",
                      (long long)batch, (long long)bg->batch);
  const int64_t n = batch * bg->seq_len;
  const int32_t type_vocab = bg->model->config.type_vocab_size;
  for (int64_t i = 0; i < n; i++) {
    if (mask[i] != 0 && mask[i] != 1)
      return damo_error(DAMO_ERR_INVALID_ARG, "bert_forward: attention_mask[%lld][%lld] is %d, expected 0 or 1",
                        (long long)(i / bg->seq_len), (long long)(i % bg->seq_len), mask[i]);
    if (token_types[i] < 0 || token_types[i] >= type_vocab)
      return damo_error(DAMO_ERR_INVALID_ARG, "bert_forward: token_type_ids[%lld][%lld] is %d, outside [0, %d)",
                        (long long)(i / bg->seq_len), (long long)(i % bg->seq_len), token_types[i], type_vocab);
    bg->mask_f32[i] = (float)mask[i];
  }
  damo_graph *g = bg->graph;
  damo_status st = damo_graph_set_batch(g, batch);
  if (st == DAMO_OK) st = damo_graph_bind(g, bg->ids, ids);
  if (st == DAMO_OK) st = damo_graph_bind(g, bg->token_types, token_types);
  if (st == DAMO_OK) st = damo_graph_bind(g, bg->mask, bg->mask_f32);
  return st;
}

damo_status damo_bert_graph_forward(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                                    const int32_t *mask, const int32_t *labels, int dropout_on, float *loss) {
  if (bg && bg->predictions) return damo_error(DAMO_ERR_STATE, "bert_forward: a masked-LM graph runs with bert_mlm_forward");
  if (bg && bg->labels && !labels) return damo_error(DAMO_ERR_INVALID_ARG, "bert_forward: a training graph needs labels");
  if (bg && bg->int8_products && dropout_on) /* its graph has no dropout nodes left (store_int8_rewrite) */
    return damo_error(DAMO_ERR_UNSUPPORTED, "bert_forward: an int8 model runs inference only: no dropout");
  damo_status st = bert_bind_inputs(bg, batch, ids, token_types, mask);
  if (st == DAMO_OK && bg->labels) st = damo_graph_bind(bg->graph, bg->labels, labels);
  if (st == DAMO_OK) st = damo_graph_forward(bg->graph, dropout_on);
  if (st == DAMO_OK && loss) *loss = NAN;
  if (st == DAMO_OK && loss && bg->loss) st = damo_graph_read(bg->graph, bg->loss, 0, 1, loss);
  return st;
}

damo_status damo_bert_mlm_forward(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                                  const int32_t *mask, const int32_t *positions, const int32_t *labels, int dropout_on,
                                  float *loss) {
  if (bg && !bg->predictions) return damo_error(DAMO_ERR_STATE, "bert_mlm_forward: needs a masked-LM graph");
  if (!positions || !labels) return damo_error(DAMO_ERR_INVALID_ARG, "bert_mlm_forward: NULL argument");
  damo_status st = bert_bind_inputs(bg, batch, ids, token_types, mask);
  if (st != DAMO_OK) return st;
  const int64_t M = bg->predictions, T = bg->seq_len;
  for (int64_t i = 0; i < batch * M; i++) {
    const int64_t b = i / M;
    if (labels[i] < 0) { /* an unused slot: any row will do, its loss is left out */
      bg->rows_i32[i] = (int32_t)(b * T);
      continue;
    }
    if (positions[i] < 0 || positions[i] >= T)
      return damo_error(DAMO_ERR_INVALID_ARG, "bert_mlm_forward: mlm position [%lld][%lld] is %d, outside [0, %lld)",
                        (long long)b, (long long)(i % M), positions[i], (long long)T);
    bg->rows_i32[i] = (int32_t)(b * T + positions[i]);
  }
  st = damo_graph_bind(bg->graph, bg->mlm_rows, bg->rows_i32);
  if (st == DAMO_OK) st = damo_graph_bind(bg->graph, bg->labels, labels);
  if (st == DAMO_OK) st = damo_graph_forward(bg->graph, dropout_on);
  if (st == DAMO_OK && loss) st = damo_graph_read(bg->graph, bg->loss, 0, 1, loss);
  return st;
}

damo_status damo_bert_graph_backward(damo_bert_graph *bg) {
  if (!bg || !bg->loss) return damo_error(DAMO_ERR_STATE, "bert_backward: needs a training graph (training = 1)");
  return damo_graph_backward(bg->graph);
}

damo_status damo_bert_embed(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                            const int32_t *mask, damo_bert_pooling pooling, float *out) {
  if (!bg || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_embed: NULL argument");
  if (!bg->hidden) return damo_error(DAMO_ERR_STATE, "bert_embed: needs an encoder graph (bert_encoder_new)");
  if (pooling != DAMO_BERT_POOL_CLS && pooling != DAMO_BERT_POOL_MEAN)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert_embed: pooling %d is neither CLS nor MEAN", (int)pooling);
  damo_status st = damo_bert_graph_forward(bg, batch, ids, token_types, mask, NULL, 0, NULL);
  if (st != DAMO_OK) return st;
  const int64_t T = bg->seq_len, H = bg->model->config.hidden_size;
  if (pooling == DAMO_BERT_POOL_CLS) {
    memcpy(out, damo_node_data(bg->pooled), (size_t)(batch * H) * sizeof *out);
    return DAMO_OK;
  }
  const float *h = damo_node_data(bg->hidden);
  for (int64_t b = 0; b < batch; b++) { /* the mean over the real (mask 1) positions */
    float *o = out + b * H;
    memset(o, 0, (size_t)H * sizeof *o);
    int64_t n = 0;
    for (int64_t t = 0; t < T; t++) {
      if (!mask[b * T + t]) continue;
      const float *row = h + (b * T + t) * H;
      for (int64_t k = 0; k < H; k++) o[k] += row[k];
      n++;
    }
    const float inv = n ? 1.0f / (float)n : 0.0f;
    for (int64_t k = 0; k < H; k++) o[k] *= inv;
  }
  return DAMO_OK;
}

const float *damo_bert_graph_logits(const damo_bert_graph *bg) {
  return bg && bg->logits ? damo_node_data(bg->logits) : NULL;
}

damo_status damo_bert_classify(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                               const int32_t *mask, float *probs) {
  if (!bg || !probs) return damo_error(DAMO_ERR_INVALID_ARG, "bert_classify: NULL argument");
  if (bg->labels || !bg->logits)
    return damo_error(DAMO_ERR_STATE, "bert_classify: needs an inference classifier graph (training 0)");
  damo_status st = damo_bert_graph_forward(bg, batch, ids, token_types, mask, NULL, 0, NULL);
  if (st != DAMO_OK) return st;
  const int64_t L = bg->model->config.num_labels;
  const float *logits = damo_bert_graph_logits(bg);
  for (int64_t b = 0; b < batch; b++) { /* a softmax per row, from the row's largest logit */
    const float *z = logits + b * L;
    float mx = z[0], sum = 0;
    for (int64_t j = 1; j < L; j++) mx = z[j] > mx ? z[j] : mx;
    for (int64_t j = 0; j < L; j++) sum += probs[b * L + j] = expf(z[j] - mx);
    for (int64_t j = 0; j < L; j++) probs[b * L + j] /= sum;
  }
  return DAMO_OK;
}

damo_status damo_bert_attention_maps(damo_bert *m, int64_t T, const int32_t *ids, const int32_t *token_types,
                                     const int32_t *mask, float *maps) {
  if (!m || !ids || !token_types || !mask || !maps) return damo_error(DAMO_ERR_INVALID_ARG, "bert_attention_maps: NULL argument");
  damo_bert_graph *bg = NULL;
  damo_status st = damo_bert_encoder_new(m, 1, T, &bg);
  if (st != DAMO_OK) return st;
  const int L = m->config.num_hidden_layers, H = m->config.num_attention_heads;
  damo_node *att[256];
  const int n = damo_graph_attention_nodes(bg->graph, att, 256);
  if (n != L) st = damo_error(DAMO_ERR_STATE, "bert_attention_maps: %d attention nodes for %d layers", n, L);
  for (int l = 0; st == DAMO_OK && l < L; l++) st = damo_attention_capture_probs(att[l], maps + (int64_t)l * H * T * T);
  if (st == DAMO_OK) st = damo_bert_graph_forward(bg, 1, ids, token_types, mask, NULL, 0, NULL);
  damo_bert_graph_free(bg);
  return st;
}

/* The explaining graph's rewrite: baseline + alpha x (the embeddings - baseline), with alpha
 * (batch, 1, 1) and the baseline's embeddings (batch, T, H) as inputs made here (ctx[0], ctx[2])
 * and the gradient kept on the result (ctx[1]): the path from the baseline text to the text. */
static damo_node *toward_text(void *ctx, damo_graph *g, damo_node *v) {
  damo_node **nodes = ctx;
  const int64_t *vs = damo_node_shape(v), ashape[3] = {vs[0], 1, 1}, bshape[3] = {vs[0], vs[1], vs[2]};
  nodes[0] = damo_input(g, "explain_alpha", DAMO_F32, 3, ashape);
  nodes[2] = damo_input(g, "explain_baseline", DAMO_F32, 3, bshape);
  nodes[1] = damo_add(g, nodes[2], damo_mul(g, damo_sub(g, v, nodes[2]), nodes[0]));
  if (nodes[1]) damo_node_keep_grad(nodes[1]);
  return nodes[1];
}

/* One forward of `n` rows at alpha values a (the text, or the baseline ids). */
static damo_status explain_forward(damo_bert_graph *bg, damo_node *const *nodes, damo_node *target_rows, float *pick,
                                   float *alpha, float *base, int64_t n, const int32_t *ids, const int32_t *types,
                                   const int32_t *mask) {
  damo_status st = damo_graph_bind(bg->graph, nodes[0], alpha);
  if (st == DAMO_OK) st = damo_graph_bind(bg->graph, nodes[2], base);
  if (st == DAMO_OK) st = damo_graph_bind(bg->graph, target_rows, pick);
  if (st == DAMO_OK) st = damo_bert_graph_forward(bg, n, ids, types, mask, NULL, 0, NULL);
  return st;
}

damo_status damo_bert_explain(damo_bert *m, int64_t T, const int32_t *ids, const int32_t *baseline_ids,
                              const int32_t *token_types, const int32_t *mask, int32_t *target, int steps, float *attr,
                              float *logit, float *baseline_logit) {
  if (!m || !ids || !baseline_ids || !token_types || !mask || !target || !attr)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert_explain: NULL argument");
  const damo_bert_config *c = &m->config;
  if (steps < 1 || steps > 4096) return damo_error(DAMO_ERR_INVALID_ARG, "bert_explain: steps %d outside [1, 4096]", steps);
  if (m->q8.q) return damo_error(DAMO_ERR_UNSUPPORTED, "bert_explain: an int8 model has no gradients; explain the f32 model");
  if (*target >= c->num_labels)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert_explain: class %d is outside the %d labels", *target, c->num_labels);
  const int64_t B = steps < 16 ? steps : 16, H = c->hidden_size, L = c->num_labels;
  damo_node *nodes[3] = {NULL, NULL, NULL};
  embed_tap tap = {toward_text, nodes, NULL};
  damo_bert_graph *bg = NULL;
  damo_node *x = NULL, *logits = NULL, *target_rows = NULL;
  int32_t *rows = malloc((size_t)(3 * B * T) * sizeof *rows);
  float *alpha = malloc((size_t)B * sizeof *alpha), *base = calloc((size_t)(B * T * H), sizeof *base);
  float *emb = malloc((size_t)(T * H) * sizeof *emb), *pick = calloc((size_t)(B * L), sizeof *pick);
  double *acc = calloc((size_t)(T * H), sizeof *acc);
  damo_status st = rows && alpha && base && emb && pick && acc ? DAMO_OK
                                                              : damo_error(DAMO_ERR_NOMEM, "bert_explain: out of memory");
  if (st == DAMO_OK) st = graph_begin_at(m, B, T, "bert_explain", &bg, &x, &tap);
  if (st == DAMO_OK) { /* the classifier's head, and the chosen logit as the loss */
    damo_graph *g = bg->graph;
    const int64_t flat[2] = {0, T * H}, lshape[2] = {B, L};
    damo_node *cls = damo_slice_last(g, damo_reshape(g, x, 2, flat), 0, H);
    const int head = m->first_head;
    damo_node *pooled = damo_linear_op(g, cls, param_node(g, m, head + POOL_W), param_node(g, m, head + POOL_B), DAMO_ACT_TANH);
    logits = damo_linear_op(g, pooled, param_node(g, m, head + CLS_W), param_node(g, m, head + CLS_B), DAMO_ACT_NONE);
    target_rows = damo_input(g, "explain_target", DAMO_F32, 2, lshape);
    damo_node *loss = damo_sum(g, damo_mul(g, logits, target_rows), DAMO_ALL_AXES, 0), *outs[2] = {logits, tap.value};
    st = damo_graph_status(g);
    if (st == DAMO_OK && !tap.value) st = damo_error(DAMO_ERR_STATE, "bert_explain: no embeddings.LayerNorm node");
    damo_graph_freeze_params(g);
    if (st == DAMO_OK) st = damo_graph_compile(g, loss, 2, outs);
  }
  /* the baseline's embeddings (alpha 1 passes them as they are), then the text's and its class */
  for (int64_t b = 0; b < B && alpha; b++) alpha[b] = 1;
  if (st == DAMO_OK) st = explain_forward(bg, nodes, target_rows, pick, alpha, base, 1, baseline_ids, token_types, mask);
  for (int64_t b = 0; st == DAMO_OK && b < B; b++)
    memcpy(base + b * T * H, damo_node_data(tap.value), (size_t)(T * H) * sizeof *base);
  if (st == DAMO_OK) st = explain_forward(bg, nodes, target_rows, pick, alpha, base, 1, ids, token_types, mask);
  if (st == DAMO_OK) {
    const float *lg = damo_node_data(logits);
    if (*target < 0) {
      *target = 0;
      for (int64_t l = 1; l < L; l++) *target = lg[l] > lg[*target] ? (int32_t)l : *target;
    }
    if (logit) *logit = lg[*target];
    memcpy(emb, damo_node_data(tap.value), (size_t)(T * H) * sizeof *emb);
    alpha[0] = 0; /* f(baseline): the text's path at 0 */
    st = explain_forward(bg, nodes, target_rows, pick, alpha, base, 1, ids, token_types, mask);
    if (st == DAMO_OK && baseline_logit) *baseline_logit = damo_node_data(logits)[*target];
  }
  int32_t *types_rows = rows + B * T, *mask_rows = rows + 2 * B * T;
  for (int64_t b = 0; st == DAMO_OK && b < B; b++) {
    pick[b * L + *target] = 1;
    memcpy(rows + b * T, ids, (size_t)T * sizeof *rows);
    memcpy(types_rows + b * T, token_types, (size_t)T * sizeof *rows);
    memcpy(mask_rows + b * T, mask, (size_t)T * sizeof *rows);
  }
  for (int k0 = 0; st == DAMO_OK && k0 < steps; k0 += (int)B) {
    const int n = steps - k0 < B ? steps - k0 : (int)B;
    for (int k = 0; k < n; k++) alpha[k] = (float)((k0 + k + 0.5) / steps);
    st = explain_forward(bg, nodes, target_rows, pick, alpha, base, n, rows, types_rows, mask_rows);
    if (st == DAMO_OK) st = damo_graph_backward(bg->graph);
    const float *grad = st == DAMO_OK ? damo_node_grad(nodes[1]) : NULL;
    for (int64_t i = 0; grad && i < n * T * H; i++) acc[i % (T * H)] += grad[i] / steps;
  }
  for (int64_t t = 0; st == DAMO_OK && t < T; t++) {
    double v = 0;
    for (int64_t d = 0; d < H; d++) v += ((double)emb[t * H + d] - base[t * H + d]) * acc[t * H + d];
    attr[t] = (float)v;
  }
  if (st != DAMO_OK) damo_error_prefix(st, "bert_explain: ");
  damo_bert_graph_free(bg);
  free(rows), free(alpha), free(base), free(emb), free(pick), free(acc);
  return st;
}
