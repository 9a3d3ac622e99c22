/* gpt2.c - GPT-2 (Radford et al. 2019) as HuggingFace's GPT2LMHeadModel defines it:
 * parameters, graphs (training loss and logits), greedy generation.
 *
 * Parameters live in ONE flat block (and gradients in a second block of the same layout),
 * each tensor starting on a 64-byte boundary, in HuggingFace's order and under its names
 * and layouts: Conv1D weights are (in, out), so x @ W is damo_dense_op's kernel layout
 * directly. The language-model head is tied to wte: logits = h wte^T.
 *
 * The graphs are the library's layers, composed as a user composes them (gpt2_layers): a
 * token_and_position_embedding (wte, wpe), n_layer pre-LN transformer_decoder blocks and a
 * layer_normalization, their weights views of this store. One block, with x (B, T, C):
 *   a = ln_1(x); qkv = a c_attn.W + c_attn.b (B, T, 3C); q, k, v = channels [0,C), [C,2C), [2C,3C)
 *   x = x + (causal_attention(q, k, v) c_proj.W + c_proj.b)
 *   x = x + (gelu_tanh(ln_2(x) c_fc.W + c_fc.b) mlp.c_proj.W + mlp.c_proj.b)
 * and around the blocks: x = wte[ids] + wpe[0..T), logits = ln_f(x) wte^T.
 * Files (config.json, model.safetensors) are in gpt2_io.c, one-position-at-a-time inference
 * with a key/value cache in gpt2_cache.c. */
#include "models/gpt2.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>

/* ------------------------------------------------------------------ parameters */

damo_gpt2_config damo_gpt2_config_default(void) {
  damo_gpt2_config c = {12, 12, 768, 1024, 50257, 1e-5f};
  return c;
}

damo_status gpt2_check_config(const damo_gpt2_config *c, const char *where) {
  if (c->n_layer < 1 || c->n_head < 1 || c->n_embd < 1 || c->n_positions < 1 || c->vocab_size < 1)
    return damo_error(DAMO_ERR_INVALID_ARG,
                      "%s: GPT-2 config needs positive n_layer (%d), n_head (%d), n_embd (%d), n_positions (%d) and "
                      "vocab_size (%d)",
                      where, c->n_layer, c->n_head, c->n_embd, c->n_positions, c->vocab_size);
  if (c->n_embd % c->n_head)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: n_embd %d is not a multiple of n_head %d", where, c->n_embd, c->n_head);
  if (!(c->layer_norm_epsilon > 0) || !isfinite(c->layer_norm_epsilon))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: layer_norm_epsilon must be positive (got %g)", where,
                      (double)c->layer_norm_epsilon);
  if ((int64_t)c->n_layer * c->n_embd * c->n_embd > ((int64_t)1 << 40) || c->n_embd > (1 << 20) ||
      c->vocab_size > (1 << 24) || c->n_positions > (1 << 20) || c->n_layer > 4096)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: GPT-2 config is implausibly large", where);
  return DAMO_OK;
}

void damo_gpt2_free(damo_gpt2 *m) {
  if (!m) return;
  gpt2_blocks_free(m);
  gpt2_int8_free(m);
  param_store_free(&m->p);
  free(m);
}

/* The layers' weights under HuggingFace's names (see hf_slot_name). */
static const hf_slot_name gpt2_names[] = {
    {"token_embedding/embeddings", "wte.weight"},
    {"position_embedding/embeddings", "wpe.weight"},
    {"self_attention_layer_norm/gamma", ".ln_1.weight"},
    {"self_attention_layer_norm/beta", ".ln_1.bias"},
    {"self_attention/query_key_value/kernel", ".attn.c_attn.weight"},
    {"self_attention/query_key_value/bias", ".attn.c_attn.bias"},
    {"self_attention/attention_output/kernel", ".attn.c_proj.weight"},
    {"self_attention/attention_output/bias", ".attn.c_proj.bias"},
    {"feedforward_layer_norm/gamma", ".ln_2.weight"},
    {"feedforward_layer_norm/beta", ".ln_2.bias"},
    {"feedforward_intermediate_dense/kernel", ".mlp.c_fc.weight"},
    {"feedforward_intermediate_dense/bias", ".mlp.c_fc.bias"},
    {"feedforward_output_dense/kernel", ".mlp.c_proj.weight"},
    {"feedforward_output_dense/bias", ".mlp.c_proj.bias"},
    {"gamma", ".weight"}, /* ln_f */
    {"beta", ".bias"},
};

/* GPT-2 for sequences of seq_len as a functional model of the library's layers, the same a
 * user would write: ids (T,) -> token_and_position_embedding "embeddings" (wte, wpe) ->
 * n_layer pre-LN transformer_decoder blocks "h.0" ... (causal, tanh GELU, GPT-2's fused
 * c_attn, kernels in its Conv1D (in, out) layout, no dropout) -> layer_normalization "ln_f".
 * The store is laid out from these layers (gpt2_alloc); a graph's layers are views of it. */
static damo_status gpt2_layers(const damo_gpt2_config *c, int64_t seq_len, damo_model **out) {
  damo_model *fm = *out = damo_functional_new();
  if (!fm) return damo_error(DAMO_ERR_NOMEM, "gpt2: out of memory");
  int x = damo_model_input(fm, "ids", 1, &seq_len);
  damo_layer *embed = damo_token_and_position_embedding_layer(c->vocab_size, c->n_positions, c->n_embd, 0);
  x = damo_model_call1(fm, damo_layer_set_name(embed, "embeddings"), x);
  for (int i = 0; i < c->n_layer; i++) {
    char name[32];
    snprintf(name, sizeof name, "h.%d", i);
    damo_layer *block = damo_transformer_decoder_layer(4 * c->n_embd, c->n_head, 0, 2, c->layer_norm_epsilon, 1);
    if (block && damo_transformer_set_layout(block, 1, 0, 0) != DAMO_OK) damo_layer_free(block), block = NULL;
    x = damo_model_call1(fm, damo_layer_set_name(block, name), x);
  }
  x = damo_model_call1(fm, damo_layer_set_name(damo_layer_norm_layer(c->layer_norm_epsilon, 1, 1), "ln_f"), x);
  return damo_model_set_output(fm, x);
}

#define N_NAMES ((int)(sizeof gpt2_names / sizeof *gpt2_names))

/* A model with its tensors laid out (in HuggingFace's order, from the layers) and zero-filled. */
damo_status gpt2_alloc(const damo_gpt2_config *cfg, damo_gpt2 **out) {
  *out = NULL;
  damo_status st = gpt2_check_config(cfg, "gpt2");
  if (st != DAMO_OK) return st;
  damo_gpt2 *m = calloc(1, sizeof *m);
  if (!m) return damo_error(DAMO_ERR_NOMEM, "gpt2: out of memory");
  m->config = *cfg;
  damo_model *fm;
  st = gpt2_layers(cfg, 1, &fm);
  if (st == DAMO_OK) st = param_store_alloc_layers(&m->p, fm, gpt2_names, N_NAMES, 0, NULL, NULL, "gpt2");
  damo_model_free(fm);
  if (st != DAMO_OK) {
    free(m);
    return st;
  }
  *out = m;
  return DAMO_OK;
}

damo_status damo_gpt2_new(const damo_gpt2_config *cfg, uint64_t seed, damo_gpt2 **out) {
  if (!cfg || !out) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_new: NULL argument");
  damo_gpt2 *m;
  damo_status st = gpt2_alloc(cfg, &m);
  if (st != DAMO_OK) return st;
  damo_rng rng;
  damo_rng_seed(&rng, seed);
  float std = 0.02f, residual_std = (float)(0.02 / sqrt(2.0 * cfg->n_layer));
  for (int i = 0; i < m->p.n_tensors; i++) {
    const char *name = m->p.names[i];
    float *v = damo_tensor_f32(m->p.values[i]);
    int64_t count = damo_tensor_numel(m->p.values[i]);
    size_t len = strlen(name);
    int is_ln = strstr(name, "ln_") != NULL;
    int is_weight = len > 7 && strcmp(name + len - 7, ".weight") == 0;
    if (is_ln) {
      if (is_weight)
        for (int64_t j = 0; j < count; j++) v[j] = 1.0f;
    } else if (is_weight) {
      float s = strstr(name, "c_proj.weight") ? residual_std : std;
      for (int64_t j = 0; j < count; j++) v[j] = s * damo_rng_normal(&rng);
    } /* biases stay zero */
  }
  *out = m;
  return DAMO_OK;
}

const damo_gpt2_config *damo_gpt2_get_config(const damo_gpt2 *m) { return m ? &m->config : NULL; }
int damo_gpt2_num_tensors(const damo_gpt2 *m) { return m ? m->p.n_tensors : 0; }
const char *damo_gpt2_tensor_name(const damo_gpt2 *m, int i) {
  return m && i >= 0 && i < m->p.n_tensors ? m->p.names[i] : NULL;
}

damo_tensor *damo_gpt2_param(const damo_gpt2 *m, const char *name) {
  gpt2_blocks_materialize(m);
  int i = param_store_index(&m->p, name);
  return i >= 0 ? m->p.values[i] : NULL;
}
damo_tensor *damo_gpt2_grad(const damo_gpt2 *m, const char *name) {
  int i = param_store_index(&m->p, name);
  return i >= 0 ? m->p.grads[i] : NULL;
}
float *damo_gpt2_param_block(const damo_gpt2 *m, int64_t *n_floats) {
  gpt2_blocks_materialize(m);
  if (n_floats) *n_floats = m ? m->p.n_params_padded : 0;
  return m ? param_store_params(&m->p) : NULL;
}
float *damo_gpt2_grad_block(const damo_gpt2 *m, int64_t *n_floats) {
  if (n_floats) *n_floats = m ? m->p.n_params_padded : 0;
  return m ? param_store_grads(&m->p) : NULL;
}
int64_t damo_gpt2_num_params(const damo_gpt2 *m) { return m ? m->p.n_params : 0; }
damo_status damo_gpt2_set_trainable(damo_gpt2 *m, const char *patterns, int trainable) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_set_trainable: NULL model");
  return param_store_set_trainable(&m->p, patterns, trainable, "gpt2_set_trainable");
}
int damo_gpt2_tensor_trainable(const damo_gpt2 *m, int i) {
  return m && i >= 0 && i < m->p.n_tensors ? param_store_trained(&m->p, i) : 0;
}
int64_t damo_gpt2_num_trainable_params(const damo_gpt2 *m) { return m ? m->p.n_trainable : 0; }

/* ------------------------------------------------------------------ graphs */

damo_status damo_gpt2_set_inference_precision(damo_gpt2 *m, damo_dtype dtype) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_set_inference_precision: NULL model");
  if (dtype != DAMO_F32 && dtype != DAMO_BF16)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 inference precision is f32 or bf16, not %s", damo_dtype_name(dtype));
  m->inference_dtype = dtype;
  return DAMO_OK;
}

damo_status damo_gpt2_set_recompute(damo_gpt2 *m, int on) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_set_recompute: NULL model");
  m->recompute = on != 0;
  return DAMO_OK;
}

damo_status gpt2_on_host(const damo_gpt2 *m, const char *what) {
  if (!m->p.backend) return DAMO_OK;
  return damo_error(DAMO_ERR_STATE, "%s: the model's weights are on backend '%s'; this runs on the host only (move "
                    "them back first: damo_gpt2_to_backend(m, damo_backend_cpu()))", what, m->p.backend->name);
}

damo_status damo_gpt2_to_backend(damo_gpt2 *m, const damo_backend *b) {
  if (!m || !b) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_to_backend: NULL argument");
  if ((m->q || m->q8.q) && !damo_backend_is_host(b))
    return damo_error(DAMO_ERR_UNSUPPORTED, "gpt2_to_backend: a quantised model runs on the CPU only");
  return param_store_to_backend(&m->p, b, "gpt2_to_backend");
}

const damo_backend *damo_gpt2_backend(const damo_gpt2 *m) {
  return m && m->p.backend ? m->p.backend : damo_backend_cpu();
}

void damo_gpt2_graph_free(damo_gpt2_graph *gg) {
  if (!gg) return;
  if (gg->backend) {
    gg->backend->free(gg->backend, gg->device_ids);
    gg->backend->free(gg->backend, gg->device_targets);
  }
  damo_graph_free(gg->graph);
  damo_model_free(gg->layers); /* after the graph: its param nodes hold the layers' views */
  free(gg);
}

damo_status damo_gpt2_graph_new(damo_gpt2 *m, int64_t batch, int64_t seq_len, int training, damo_gpt2_graph **out) {
  if (!m || !out) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_graph_new: NULL argument");
  *out = NULL;
  gpt2_blocks_materialize(m);
  if (batch < 1 || seq_len < 1 || seq_len > m->config.n_positions)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_graph_new: batch %lld and sequence length %lld must be >= 1, the "
                      "length at most n_positions %d", (long long)batch, (long long)seq_len, m->config.n_positions);
  damo_gpt2_graph *gg = calloc(1, sizeof *gg);
  if (!gg) return damo_error(DAMO_ERR_NOMEM, "gpt2_graph_new: out of memory");
  gg->batch = batch;
  gg->seq_len = seq_len;
  damo_graph *g = gg->graph = damo_graph_new(0);
  damo_status st = g ? DAMO_OK : DAMO_ERR_NOMEM;
  if (st == DAMO_OK && m->p.backend) { /* before the params join: each is checked against it */
    const damo_backend *b = gg->backend = m->p.backend;
    const size_t bytes = (size_t)(batch * seq_len) * sizeof(int32_t);
    st = damo_graph_set_backend(g, b);
    if (st == DAMO_OK) gg->device_ids = b->alloc(b, bytes);
    if (st == DAMO_OK && training) gg->device_targets = b->alloc(b, bytes);
    if (st == DAMO_OK && (!gg->device_ids || (training && !gg->device_targets))) st = DAMO_ERR_NOMEM;
  }
  if (st == DAMO_OK) st = gpt2_layers(&m->config, seq_len, &gg->layers);
  if (st == DAMO_OK) st = param_store_bind_layers(&m->p, gg->layers, gpt2_names, N_NAMES, "gpt2");
  if (st == DAMO_OK) st = damo_model_set_recompute(gg->layers, m->recompute);
  damo_node *x = NULL, *pre;
  if (st == DAMO_OK) st = damo_model_build_nodes(gg->layers, g, batch, &gg->ids, &x, &pre);
  if (st == DAMO_OK && training) {
    /* The head, tied to the token table, and the loss in one op that never holds all
     * (B T, V) logits. */
    int64_t shape[2] = {batch, seq_len}, flat_x[2] = {-1, m->config.n_embd}, flat_targets[1] = {-1};
    gg->targets = damo_input(g, "targets", DAMO_I32, 2, shape);
    damo_node *wte = damo_layer_param_node(gg->layers->layers[0], g, 0);
    gg->loss = damo_linear_cross_entropy(g, damo_reshape(g, x, 2, flat_x), wte, NULL,
                                         damo_reshape(g, gg->targets, 1, flat_targets));
    if (gg->loss) damo_node_set_name(gg->loss, "loss");
  } else if (st == DAMO_OK) {
    /* an int8 model: logits from the int8 wte (K = n_embd, N = vocab), as the decoder's */
    const float x_scale = m->q8.x_scale ? m->q8.x_scale[0] : 0.0f; /* static: ln_f's calibrated range */
    const int x_zero = m->q8.x_zero ? m->q8.x_zero[0] : 0;
    gg->logits = m->q8.q && m->q8.packed[0] ? damo_qdense_op(g, x, m->q8.packed[0], NULL, DAMO_ACT_NONE, x_scale, x_zero)
                                            : damo_matmul(g, x, damo_layer_param_node(gg->layers->layers[0], g, 0), 0, 1);
    if (gg->logits) damo_node_set_name(gg->logits, "logits");
  }
  /* An int8 model: the layers' dense nodes over int8 matrices become dynamic qdense (a loss
   * graph scores with them; its head reads wte's dequantised f32 values; backward refuses). */
  int rewritten = 0, expected = 0;
  for (int i = 2; m->q8.q && i < m->p.n_tensors; i++) expected += m->q8.packed[i] != NULL;
  if (st == DAMO_OK && m->q8.q && damo_graph_status(g) == DAMO_OK &&
      (st = store_int8_rewrite(&m->q8, &m->p, g, 0, NULL, 0, "gpt2", &rewritten)) == DAMO_OK && rewritten != expected)
    st = damo_error(DAMO_ERR_STATE, "gpt2 int8 graph: %d of the %d int8 matrices found", rewritten, expected);
  if (st == DAMO_OK) st = damo_graph_status(g);
  if (st == DAMO_OK && training && m->keep_forward) damo_graph_keep_forward(g);
  if (st == DAMO_OK) st = training ? damo_graph_compile(g, gg->loss, 0, NULL) : damo_graph_compile(g, NULL, 1, &gg->logits);
  if (st != DAMO_OK) {
    damo_error_prefix(st, "building the GPT-2 graph (batch %lld, length %lld): ", (long long)batch,
                      (long long)seq_len);
    damo_gpt2_graph_free(gg);
    return st;
  }
  *out = gg;
  return DAMO_OK;
}

/* Binds host ids (and targets) to the graph's inputs, through the device copies on a device
 * backend; rows: the batch being run. */
damo_status gpt2_bind_tokens(damo_gpt2_graph *gg, const int32_t *ids, const int32_t *targets) {
  if (gg->backend) {
    const size_t bytes = (size_t)(gg->graph->batch * gg->seq_len) * sizeof(int32_t);
    damo_status st = gg->backend->from_host(gg->backend, gg->device_ids, ids, bytes);
    if (st == DAMO_OK && gg->targets) st = gg->backend->from_host(gg->backend, gg->device_targets, targets, bytes);
    if (st != DAMO_OK) return st;
    ids = gg->device_ids;
    targets = gg->device_targets;
  }
  damo_status st = damo_graph_bind(gg->graph, gg->ids, ids);
  if (st == DAMO_OK && gg->targets) st = damo_graph_bind(gg->graph, gg->targets, targets);
  return st;
}

damo_status damo_gpt2_graph_forward(damo_gpt2_graph *gg, const int32_t *ids, const int32_t *targets, float *loss) {
  if (!gg || !ids) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_forward: NULL argument");
  if (gg->targets && !targets) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_forward: a training graph needs targets");
  damo_status st = gpt2_bind_tokens(gg, ids, targets);
  if (st == DAMO_OK) st = damo_graph_forward(gg->graph, gg->loss != NULL);
  if (st == DAMO_OK && loss) *loss = NAN;
  if (st == DAMO_OK && loss && gg->loss) st = damo_graph_read(gg->graph, gg->loss, 0, 1, loss);
  return st;
}

damo_status damo_gpt2_graph_evaluate(damo_gpt2_graph *gg, const int32_t *ids, const int32_t *targets, float *loss) {
  if (!gg || !ids || !targets || !loss) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_evaluate: NULL argument");
  if (!gg->loss) return damo_error(DAMO_ERR_STATE, "gpt2_evaluate: needs a training graph (training = 1)");
  damo_status st = gpt2_bind_tokens(gg, ids, targets);
  if (st == DAMO_OK) st = damo_graph_forward(gg->graph, 0); /* not training: no gradient work */
  if (st == DAMO_OK) st = damo_graph_read(gg->graph, gg->loss, 0, 1, loss);
  return st;
}

damo_status damo_gpt2_graph_backward(damo_gpt2_graph *gg) {
  if (!gg || !gg->loss) return damo_error(DAMO_ERR_STATE, "gpt2_backward: needs a training graph (training = 1)");
  return damo_graph_backward(gg->graph);
}

const float *damo_gpt2_graph_logits(const damo_gpt2_graph *gg) {
  return gg && gg->logits ? damo_node_data(gg->logits) : NULL;
}

/* ------------------------------------------------------------------ generation */

/* The lowest id with the largest logit. */
static int32_t argmax(const float *row, int64_t n) {
  int32_t best = 0;
  for (int64_t j = 1; j < n; j++)
    if (row[j] > row[best]) best = (int32_t)j;
  return best;
}

/* Whole-sequence recompute through one inference graph for the whole length; positions after
 * the current one hold id 0 and, attention being causal, cannot change the logits before them. */
static damo_status generate_recompute(damo_gpt2 *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                                      int32_t *out) {
  int64_t total = n_prompt + n_new, V = m->config.vocab_size;
  int32_t *ids = calloc((size_t)total, sizeof *ids);
  if (!ids) return damo_error(DAMO_ERR_NOMEM, "gpt2_generate: out of memory");
  memcpy(ids, prompt, (size_t)n_prompt * sizeof *ids);
  damo_gpt2_graph *gg = NULL;
  damo_status st = damo_gpt2_graph_new(m, 1, total, 0, &gg);
  for (int64_t len = n_prompt; st == DAMO_OK && len < total; len++) {
    st = damo_gpt2_graph_forward(gg, ids, NULL, NULL);
    if (st != DAMO_OK) break;
    ids[len] = out[len - n_prompt] = argmax(damo_gpt2_graph_logits(gg) + (len - 1) * V, V);
  }
  damo_gpt2_graph_free(gg);
  free(ids);
  return st;
}

static damo_status generate_cached(damo_gpt2 *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new, int32_t *out) {
  damo_gpt2_cache *c;
  damo_status st = damo_gpt2_cache_new(m, n_prompt + n_new, &c);
  const float *logits = NULL;
  for (int64_t i = 0; st == DAMO_OK && i < n_prompt; i++) st = damo_gpt2_cache_step(c, prompt[i], &logits);
  for (int64_t i = 0; st == DAMO_OK && i < n_new; i++) {
    out[i] = argmax(logits, m->config.vocab_size);
    if (i + 1 < n_new) st = damo_gpt2_cache_step(c, out[i], &logits);
  }
  damo_gpt2_cache_free(c);
  return st;
}

damo_status damo_gpt2_check_prompt(const damo_gpt2 *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                                   const int32_t *out) {
  if (!m || !prompt || !out || n_prompt < 1 || n_new < 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_generate: needs a model, a prompt of at least one id and n_new >= 0");
  int64_t V = m->config.vocab_size;
  if (n_prompt + n_new > m->config.n_positions)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_generate: %lld prompt + %lld new ids exceed n_positions %d",
                      (long long)n_prompt, (long long)n_new, m->config.n_positions);
  for (int64_t i = 0; i < n_prompt; i++)
    if (prompt[i] < 0 || prompt[i] >= V)
      return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_generate: prompt id %d at %lld is outside [0, %lld)", prompt[i],
                        (long long)i, (long long)V);
  return DAMO_OK;
}

damo_status damo_gpt2_generate_greedy(damo_gpt2 *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                                      int use_kv_cache, int32_t *out) {
  damo_status st = damo_gpt2_check_prompt(m, prompt, n_prompt, n_new, out);
  if (st != DAMO_OK || n_new == 0) return st;
  return use_kv_cache ? generate_cached(m, prompt, n_prompt, n_new, out)
                      : generate_recompute(m, prompt, n_prompt, n_new, out);
}

/* ------------------------------------------------------------------ explaining */

damo_status damo_gpt2_attention_maps(damo_gpt2 *m, const int32_t *ids, int64_t T, float *maps) {
  if (!m || !ids || !maps) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_attention_maps: NULL argument");
  damo_gpt2_graph *gg = NULL;
  damo_status st = damo_gpt2_graph_new(m, 1, T, 0, &gg);
  if (st != DAMO_OK) return st;
  const int L = m->config.n_layer, H = m->config.n_head;
  damo_node *att[256];
  const int n = damo_graph_attention_nodes(gg->graph, att, 256);
  if (n != L) st = damo_error(DAMO_ERR_STATE, "gpt2_attention_maps: %d attention nodes for %d layers", n, L);
  for (int l = 0; st == DAMO_OK && l < L; l++) st = damo_attention_capture_probs(att[l], maps + (int64_t)l * H * T * T);
  if (st == DAMO_OK) st = damo_gpt2_graph_forward(gg, ids, NULL, NULL);
  damo_gpt2_graph_free(gg);
  return st;
}

/* The explaining graph's rewrite of the embeddings: positions + alpha (ctx[0]) x the token
 * part (the embeddings less the positions, ctx[2]), gradient kept there (ctx[1]). Scaling the
 * whole sum toward zero would not do: the first layer norm undoes any scale, so the output
 * would only move in a sliver next to alpha 0; without the token part the positions remain. */
static damo_node *scale_embeddings(void *ctx, damo_graph *g, damo_node *v) {
  damo_node **nodes = ctx;
  nodes[1] = damo_add(g, nodes[2], damo_mul(g, damo_sub(g, v, nodes[2]), nodes[0]));
  if (nodes[1]) damo_node_keep_grad(nodes[1]);
  return nodes[1];
}

damo_status damo_gpt2_explain_next(damo_gpt2 *m, const int32_t *ids, int64_t T, int32_t *next, int steps, float *attr,
                                   float *logprob, float *baseline_logprob) {
  if (!m || !ids || !next || !attr) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_explain_next: NULL argument");
  const damo_gpt2_config *c = &m->config;
  if (T < 1 || T > c->n_positions || steps < 1 || steps > 4096)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_explain_next: %lld tokens (1 to %d) and %d steps (1 to 4096)",
                      (long long)T, c->n_positions, steps);
  if (m->blocks != DAMO_BLOCKS_NONE || m->q8.q)
    return damo_error(DAMO_ERR_UNSUPPORTED, "gpt2_explain_next: a quantised model has no gradients; explain the f32 model");
  if (*next >= c->vocab_size)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_explain_next: token %d is outside the vocabulary", *next);
  damo_status st = gpt2_on_host(m, "gpt2_explain_next");
  if (st != DAMO_OK) return st;
  const int64_t B = steps < 16 ? steps : 16, C = c->n_embd, V = c->vocab_size;
  damo_model *layers = NULL;
  damo_graph *g = damo_graph_new(0);
  int32_t *id_rows = malloc((size_t)(B * T) * sizeof *id_rows);
  float *alpha = malloc((size_t)B * sizeof *alpha), *onehot = calloc((size_t)(B * V), sizeof *onehot);
  float *emb = malloc((size_t)(T * C) * sizeof *emb);
  double *acc = calloc((size_t)(T * C), sizeof *acc);
  if (!g || !id_rows || !alpha || !onehot || !emb || !acc) st = damo_error(DAMO_ERR_NOMEM, "gpt2_explain_next: out of memory");
  if (st == DAMO_OK) st = gpt2_layers(c, T, &layers);
  if (st == DAMO_OK) st = param_store_bind_layers(&m->p, layers, gpt2_names, N_NAMES, "gpt2");
  damo_node *nodes[3] = {NULL, NULL, NULL}, *idn = NULL, *x = NULL, *pre = NULL, *embedded = NULL, *logp = NULL,
            *pick = NULL;
  float *pos = st == DAMO_OK ? malloc((size_t)(B * T * C) * sizeof *pos) : NULL;
  if (st == DAMO_OK && !pos) st = damo_error(DAMO_ERR_NOMEM, "gpt2_explain_next: out of memory");
  for (int64_t b = 0; st == DAMO_OK && b < B; b++) /* the position rows wpe[0..T), for every row of the batch */
    memcpy(pos + b * T * C, damo_tensor_f32(m->p.values[1]), (size_t)(T * C) * sizeof *pos);
  if (st == DAMO_OK) {
    const int64_t ashape[3] = {B, 1, 1}, flat[2] = {0, T * C}, vshape[2] = {B, V}, pshape[3] = {B, T, C};
    nodes[0] = damo_input(g, "alpha", DAMO_F32, 3, ashape);
    nodes[2] = damo_input(g, "positions", DAMO_F32, 3, pshape);
    st = damo_model_build_nodes_at(layers, g, B, &idn, &x, &pre, damo_model_node_index(layers, "embeddings"), &embedded,
                                   scale_embeddings, nodes);
    damo_node *last = damo_slice_last(g, damo_reshape(g, x, 2, flat), (T - 1) * C, C);
    logp = damo_log_softmax(g, damo_matmul(g, last, damo_layer_param_node(layers->layers[0], g, 0), 0, 1));
    pick = damo_input(g, "next", DAMO_F32, 2, vshape);
    damo_node *loss = damo_sum(g, damo_mul(g, logp, pick), DAMO_ALL_AXES, 0), *outs[2] = {logp, embedded};
    if (st == DAMO_OK) st = damo_graph_status(g);
    if (st == DAMO_OK && !embedded) st = damo_error(DAMO_ERR_STATE, "gpt2_explain_next: no embeddings node");
    damo_graph_freeze_params(g);
    if (st == DAMO_OK) st = damo_graph_compile(g, loss, 2, outs);
  }
  /* one row at alpha 1 (the prompt as it is), one at 0 (zero embeddings), then the path */
  for (int k = 0; st == DAMO_OK && k < 2; k++) {
    alpha[0] = k == 0 ? 1.0f : 0.0f;
    st = damo_graph_set_batch(g, 1);
    if (st == DAMO_OK) st = damo_graph_bind(g, idn, ids);
    if (st == DAMO_OK) st = damo_graph_bind(g, nodes[0], alpha);
    if (st == DAMO_OK) st = damo_graph_bind(g, nodes[2], pos);
    if (st == DAMO_OK) st = damo_graph_bind(g, pick, onehot);
    if (st == DAMO_OK) st = damo_graph_forward(g, 0);
    const float *lp = st == DAMO_OK ? damo_node_data(logp) : NULL;
    if (lp && k == 0) {
      if (*next < 0) {
        *next = 0;
        for (int64_t v = 1; v < V; v++) *next = lp[v] > lp[*next] ? (int32_t)v : *next;
      }
      if (logprob) *logprob = lp[*next];
      memcpy(emb, damo_node_data(embedded), (size_t)(T * C) * sizeof *emb);
    }
    if (lp && k == 1 && baseline_logprob) *baseline_logprob = lp[*next];
  }
  for (int64_t b = 0; st == DAMO_OK && b < B; b++) {
    onehot[b * V + *next] = 1.0f;
    memcpy(id_rows + b * T, ids, (size_t)T * sizeof *ids);
  }
  for (int k0 = 0; st == DAMO_OK && k0 < steps; k0 += (int)B) {
    const int n = steps - k0 < B ? steps - k0 : (int)B;
    for (int k = 0; k < n; k++) alpha[k] = (float)((k0 + k + 0.5) / steps);
    st = damo_graph_set_batch(g, n);
    if (st == DAMO_OK) st = damo_graph_bind(g, idn, id_rows);
    if (st == DAMO_OK) st = damo_graph_bind(g, nodes[0], alpha);
    if (st == DAMO_OK) st = damo_graph_bind(g, nodes[2], pos);
    if (st == DAMO_OK) st = damo_graph_bind(g, pick, onehot);
    if (st == DAMO_OK) st = damo_graph_forward(g, 0);
    if (st == DAMO_OK) st = damo_graph_backward(g);
    const float *grad = st == DAMO_OK ? damo_node_grad(nodes[1]) : NULL;
    for (int64_t i = 0; grad && i < n * T * C; i++) acc[i % (T * C)] += grad[i] / steps;
  }
  for (int64_t t = 0; st == DAMO_OK && t < T; t++) {
    double v = 0;
    for (int64_t d = 0; d < C; d++) v += ((double)emb[t * C + d] - pos[t * C + d]) * acc[t * C + d];
    attr[t] = (float)v;
  }
  if (st != DAMO_OK) damo_error_prefix(st, "gpt2_explain_next: ");
  damo_graph_free(g);
  damo_model_free(layers);
  free(id_rows), free(alpha), free(onehot), free(emb), free(acc), free(pos);
  return st;
}
