/* attention_layers.c - the transformer layers of a model, Keras' and keras_hub's:
 * LayerNormalization, MultiHeadAttention, TransformerEncoder and TransformerDecoder. They
 * compose graph ops (dense, layer_norm, the fused attention op, add, dropout, gelu) and have
 * no backward of their own.
 *
 * Weight layout. Keras keeps an attention's projections as EinsumDense kernels of shape
 * (C, heads, key_dim) and the output's as (heads, key_dim, out). Here each is the same
 * numbers as one 2-D dense kernel: query/kernel (C, heads * key_dim) with head h in columns
 * [h key_dim, (h+1) key_dim) (a reshape of Keras' kernel, no transpose), bias
 * (heads * key_dim); attention_output/kernel (heads * key_dim, out). The fused op splits the
 * projected channels into heads in that same order, and scales the scores by
 * 1 / sqrt(key_dim) as Keras does.
 *
 * Masks. The attention's key mask is the timestep mask of its value input (and of its key
 * input, if that has one too), as Keras derives it from an embedding with mask_zero; the
 * output carries the query's mask. Keras also masks the rows of padded queries; here those
 * rows still attend to the real keys (their values differ from Keras', and every mask-aware
 * layer after ignores them). */
#include "nn/layers.h"

#include <stdio.h>

/* ------------------------------------------------------------------ shared parts */

static damo_status need_sequence(const damo_layer *l, const damo_layer_shape *in, const char *what) {
  if (in->ndim == 2) return DAMO_OK;
  char s[96];
  return damo_error(DAMO_ERR_SHAPE, "%s layer '%s': the %s must be (timesteps, features), got %s", l->type->type,
                    l->name, what, damo_shape_string(in->ndim, in->dim, s, sizeof s));
}

/* A kernel's shape: (in, out) as Keras' Dense, or (out, in) as PyTorch's nn.Linear when the
 * layer keeps its kernels that way (kernels_out_in: BERT's files). */
static void kernel_shape(const damo_layer *l, int64_t in, int64_t out, int64_t *shape) {
  shape[0] = l->kernels_out_in ? out : in;
  shape[1] = l->kernels_out_in ? in : out;
}

/* x times the kernel at slot k plus the bias at slot k + 1 (no bias: bias 0), in the layer's
 * kernel layout. */
static damo_node *project(damo_layer *l, damo_graph *g, damo_node *x, int k, int bias, damo_activation act) {
  damo_node *w = damo_layer_param_node(l, g, k), *b = bias ? damo_layer_param_node(l, g, k + 1) : NULL;
  return l->kernels_out_in ? damo_linear_op(g, x, w, b, act) : damo_dense_op(g, x, w, b, act);
}

/* Declares an attention's projections, prefix "" or "self_attention/": query and key
 * (kernel, bias) from widths cq, ck to heads * head_dim, value from cv to heads * value_dim,
 * and attention_output back to out; 8 slots (4 without biases) from l->params[l->n_params]. fused (self-attention, cq ==
 * ck == cv) declares one "query_key_value" projection to 3 heads * head_dim instead, the
 * query's columns first (GPT-2's c_attn): 4 slots. */
static void declare_attention(damo_layer *l, const char *prefix, int64_t cq, int64_t ck, int64_t cv, int64_t heads,
                              int64_t head_dim, int64_t value_dim, int64_t out, int use_bias, int fused) {
  static const char *const parts[] = {"query", "key", "value", "attention_output", "query_key_value"};
  const int64_t in_width[4] = {cq, ck, cv, heads * value_dim};
  for (int p = fused ? 2 : 0; p < 4; p++) {
    char name[48];
    const int part = fused && p == 2 ? 4 : p;
    const int64_t cols = p == 3 ? out : part == 4 ? 3 * heads * head_dim : heads * (p == 2 ? value_dim : head_dim);
    int64_t kshape[2];
    kernel_shape(l, in_width[p], cols, kshape);
    snprintf(name, sizeof name, "%s%s/kernel", prefix, parts[part]);
    damo_layer_declare_param(l, name, 2, kshape, DAMO_INIT_GLOROT_UNIFORM);
    if (use_bias) {
      snprintf(name, sizeof name, "%s%s/bias", prefix, parts[part]);
      damo_layer_declare_param(l, name, 1, &cols, DAMO_INIT_ZEROS);
    }
  }
}

/* The attention declared at slot `first` (fused: its one query_key_value projection):
 * projections, the fused op (whose node goes to *node) and the output projection. */
static damo_node *attention_block(damo_layer *l, damo_graph *g, int first, int use_bias, int fused, const char *what,
                                  damo_node *query, damo_node *value, damo_node *key, damo_node *key_mask, int heads,
                                  int causal, float rate, damo_node **node) {
  damo_node *proj[3];
  damo_node *const from[3] = {query, key, value};
  static const char *const parts[] = {"query", "key", "value"};
  const int step = use_bias ? 2 : 1;
  char label[64];
  if (fused) {
    const int64_t width = (int64_t)heads * l->key_dim;
    snprintf(label, sizeof label, "%squery_key_value", what);
    damo_node *qkv = damo_layer_name_node(l, project(l, g, query, first, use_bias, DAMO_ACT_NONE), label);
    for (int p = 0; p < 3; p++) {
      snprintf(label, sizeof label, "%s%s", what, parts[p]);
      proj[p] = damo_layer_name_node(l, damo_slice_last(g, qkv, p * width, width), label);
    }
  } else {
    for (int p = 0; p < 3; p++) {
      snprintf(label, sizeof label, "%s%s", what, parts[p]);
      proj[p] = damo_layer_name_node(l, project(l, g, from[p], first + p * step, use_bias, DAMO_ACT_NONE), label);
    }
  }
  damo_node *att = damo_attention(g, proj[0], proj[1], proj[2], heads, causal, key_mask);
  snprintf(label, sizeof label, "%sattention", what);
  att = damo_layer_name_node(l, att, label);
  if (att && rate > 0) damo_attention_set_dropout(att, rate);
  *node = att;
  snprintf(label, sizeof label, "%sattention_output", what);
  return damo_layer_name_node(l, project(l, g, att, first + (fused ? 1 : 3) * step, use_bias, DAMO_ACT_NONE), label);
}

/* Both masks kept where both are (NULL: none). */
static damo_node *both_masks(damo_graph *g, damo_node *a, damo_node *b) {
  if (!a) return b;
  if (!b || a == b) return a;
  return damo_mul(g, a, b);
}

/* A constant (C,) filled with v: the gamma or beta of a layer norm without scale/center. */
static damo_node *filled(damo_graph *g, int64_t c, float v) {
  damo_tensor *t = damo_tensor_new(DAMO_F32, 1, &c);
  if (!t) return damo_constant(g, NULL);
  for (int64_t i = 0; i < c; i++) damo_tensor_f32(t)[i] = v;
  damo_node *n = damo_constant(g, t);
  damo_tensor_free(t);
  return n;
}

/* ------------------------------------------------------------------ LayerNormalization */

static damo_status layer_norm_infer(damo_layer *l) {
  if (l->in_ndim < 1) return damo_error(DAMO_ERR_SHAPE, "layer_normalization needs an input with a feature axis");
  if (!(l->epsilon > 0)) return damo_error(DAMO_ERR_INVALID_ARG, "layer_normalization: epsilon must be > 0");
  l->out_ndim = l->in_ndim;
  memcpy(l->out_shape, l->in_shape, sizeof l->out_shape);
  const int64_t c = l->in_shape[l->in_ndim - 1];
  l->n_params = 0;
  if (l->ln_scale) damo_layer_declare_param(l, "gamma", 1, &c, DAMO_INIT_ONES);
  if (l->ln_center) damo_layer_declare_param(l, "beta", 1, &c, DAMO_INIT_ZEROS);
  return DAMO_OK;
}

static damo_node *layer_norm_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  const int64_t c = l->in_shape[l->in_ndim - 1];
  damo_node *gamma = l->ln_scale ? damo_layer_param_node(l, g, 0) : filled(g, c, 1.0f);
  damo_node *beta = l->ln_center ? damo_layer_param_node(l, g, l->ln_scale ? 1 : 0) : filled(g, c, 0.0f);
  *pre = damo_layer_name_node(l, damo_layer_norm(g, x, gamma, beta, l->epsilon), "layer_norm");
  l->out_mask = l->in_mask; /* per timestep: the padding stays where it was */
  return *pre;
}

const damo_layer_type damo_layer_layer_norm = {.type = "layer_normalization", .infer = layer_norm_infer,
                                               .build = layer_norm_build};

damo_layer *damo_layer_norm_layer(float epsilon, int center, int scale) {
  damo_layer *l = damo_layer_alloc(&damo_layer_layer_norm);
  if (!l) return NULL;
  l->epsilon = epsilon;
  l->ln_center = center != 0;
  l->ln_scale = scale != 0;
  return l;
}

/* ------------------------------------------------------------------ MultiHeadAttention */

/* Inputs: (query), (query, value) or (query, value, key); the key is the value when absent. */
static int value_input(const damo_layer *l) { return l->n_in >= 2 ? 1 : 0; }
static int key_input(const damo_layer *l) { return l->n_in == 3 ? 2 : value_input(l); }

static damo_status mha_infer(damo_layer *l) {
  if (l->num_heads < 1 || l->key_dim < 1 || l->value_dim < 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "multi_head_attention layer '%s': num_heads and key_dim must be >= 1 and "
                      "value_dim >= 0 (0: key_dim), got %d, %d and %d", l->name, l->num_heads, l->key_dim, l->value_dim);
  if (l->units < 0 || !(l->rate >= 0 && l->rate < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "multi_head_attention layer '%s': output_shape must be >= 1 and dropout in "
                      "[0, 1)", l->name);
  static const char *const roles[] = {"query", "value", "key"};
  for (int k = 0; k < l->n_in; k++) {
    damo_status st = need_sequence(l, &l->ins[k], roles[k]);
    if (st != DAMO_OK) return st;
  }
  const damo_layer_shape *q = &l->ins[0], *v = &l->ins[value_input(l)], *k = &l->ins[key_input(l)];
  if (k->dim[0] != v->dim[0])
    return damo_error(DAMO_ERR_SHAPE, "multi_head_attention layer '%s': key and value need the same timesteps, got "
                      "%lld and %lld", l->name, (long long)k->dim[0], (long long)v->dim[0]);
  if (l->causal && q->dim[0] != k->dim[0])
    return damo_error(DAMO_ERR_SHAPE, "multi_head_attention layer '%s': use_causal_mask needs as many query as key "
                      "timesteps, got %lld and %lld", l->name, (long long)q->dim[0], (long long)k->dim[0]);
  const int64_t out = l->units ? l->units : q->dim[1];
  l->out_ndim = 2;
  l->out_shape[0] = q->dim[0];
  l->out_shape[1] = out;
  l->n_params = 0;
  declare_attention(l, "", q->dim[1], k->dim[1], v->dim[1], l->num_heads, l->key_dim,
                    l->value_dim ? l->value_dim : l->key_dim, out, l->use_bias, 0);
  return DAMO_OK;
}

static damo_node *mha_build(damo_layer *l, damo_graph *g, int n, damo_node *const *xs) {
  damo_node *key_mask = both_masks(g, l->in_masks[value_input(l)], l->in_masks[key_input(l)]);
  damo_node *y = attention_block(l, g, 0, l->use_bias, 0, "", xs[0], xs[value_input(l)], xs[key_input(l)], key_mask,
                                 l->num_heads, l->causal, l->rate, &l->attention);
  l->out_mask = l->in_masks[0];
  return y;
}

const damo_layer_type damo_layer_multi_head_attention = {.type = "multi_head_attention", .infer = mha_infer,
                                                         .min_inputs = 1, .max_inputs = 3, .build_multi = mha_build};

damo_layer *damo_multi_head_attention_layer(int num_heads, int key_dim, int value_dim, int output_shape, float dropout,
                                            int use_bias, int use_causal_mask) {
  damo_layer *l = damo_layer_alloc(&damo_layer_multi_head_attention);
  if (!l) return NULL;
  l->num_heads = num_heads;
  l->key_dim = key_dim;
  l->value_dim = value_dim;
  l->units = output_shape;
  l->rate = dropout;
  l->use_bias = use_bias != 0;
  l->causal = use_causal_mask != 0;
  return l;
}

/* ------------------------------------------------------------------ Transformer blocks */

/* A decoder called on (decoder sequence, encoder sequence) cross-attends; an encoder's second
 * input is its padding mask. */
static int has_cross(const damo_layer *l) { return l->type == &damo_layer_transformer_decoder && l->n_in > 1; }

/* Slot indices of a transformer block (keras_hub's sublayers, in its order). */
typedef struct block_slots {
  int self_attention, self_norm;   /* 8 slots (4 with fused_qkv), 2 slots */
  int cross_attention, cross_norm; /* -1: no cross-attention */
  int ff_norm, ff_intermediate, ff_output;
} block_slots;

static block_slots slots_of(const damo_layer *l) {
  block_slots s = {0, l->fused_qkv ? 4 : 8, -1, -1, 0, 0, 0};
  int next = s.self_norm + 2;
  if (has_cross(l)) s.cross_attention = next, s.cross_norm = next + 8, next += 10;
  s.ff_norm = next, s.ff_intermediate = next + 2, s.ff_output = next + 4;
  return s;
}

static void declare_norm(damo_layer *l, const char *prefix, int64_t c) {
  char name[48];
  snprintf(name, sizeof name, "%s_layer_norm/gamma", prefix);
  damo_layer_declare_param(l, name, 1, &c, DAMO_INIT_ONES);
  snprintf(name, sizeof name, "%s_layer_norm/beta", prefix);
  damo_layer_declare_param(l, name, 1, &c, DAMO_INIT_ZEROS);
}

static damo_status block_infer(damo_layer *l) {
  const char *kind = l->type->type;
  if (l->num_heads < 1 || l->intermediate_dim < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s layer '%s': num_heads and intermediate_dim must be >= 1, got %d and %d",
                      kind, l->name, l->num_heads, l->intermediate_dim);
  if (!(l->rate >= 0 && l->rate < 1) || !(l->attention_rate >= 0 && l->attention_rate < 1) || !(l->epsilon > 0))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s layer '%s': dropout and attention_dropout must be in [0, 1) and "
                      "layer_norm_epsilon > 0", kind, l->name);
  const int cross = has_cross(l);
  damo_status st = need_sequence(l, &l->ins[0], cross ? "decoder sequence" : "input");
  if (st == DAMO_OK && cross) st = need_sequence(l, &l->ins[1], "encoder sequence");
  if (st != DAMO_OK) return st;
  if (l->n_in > 1 && !cross && (l->ins[1].ndim != 1 || l->ins[1].dim[0] != l->ins[0].dim[0])) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE, "%s layer '%s': its second input is the padding mask, (timesteps,) = (%lld,), "
                      "got %s", kind, l->name, (long long)l->ins[0].dim[0],
                      damo_shape_string(l->ins[1].ndim, l->ins[1].dim, s, sizeof s));
  }
  const int64_t hidden = l->ins[0].dim[1];
  /* keras_hub: each head gets hidden // num_heads channels; the output projection goes back
   * to hidden, so the residual adds fit. */
  if (hidden < l->num_heads)
    return damo_error(DAMO_ERR_SHAPE, "%s layer '%s': %lld features do not give %d heads at least one channel each "
                      "(key_dim = features / num_heads)", kind, l->name, (long long)hidden, l->num_heads);
  l->key_dim = (int)(hidden / l->num_heads);
  l->out_ndim = 2;
  memcpy(l->out_shape, l->ins[0].dim, sizeof l->out_shape);
  l->n_params = 0;
  declare_attention(l, "self_attention/", hidden, hidden, hidden, l->num_heads, l->key_dim, l->key_dim, hidden, 1,
                    l->fused_qkv);
  declare_norm(l, "self_attention", hidden);
  if (cross) {
    const int64_t enc = l->ins[1].dim[1];
    declare_attention(l, "cross_attention/", hidden, enc, enc, l->num_heads, l->key_dim, l->key_dim, hidden, 1, 0);
    declare_norm(l, "cross_attention", hidden);
  }
  declare_norm(l, "feedforward", hidden);
  int64_t inter[2], outk[2];
  const int64_t inter_width = l->intermediate_dim;
  kernel_shape(l, hidden, inter_width, inter);
  kernel_shape(l, inter_width, hidden, outk);
  damo_layer_declare_param(l, "feedforward_intermediate_dense/kernel", 2, inter, DAMO_INIT_GLOROT_UNIFORM);
  damo_layer_declare_param(l, "feedforward_intermediate_dense/bias", 1, &inter_width, DAMO_INIT_ZEROS);
  damo_layer_declare_param(l, "feedforward_output_dense/kernel", 2, outk, DAMO_INIT_GLOROT_UNIFORM);
  damo_layer_declare_param(l, "feedforward_output_dense/bias", 1, &hidden, DAMO_INIT_ZEROS);
  return DAMO_OK;
}

static damo_node *norm(damo_layer *l, damo_graph *g, damo_node *x, int slot, const char *what) {
  return damo_layer_name_node(l, damo_layer_norm(g, x, damo_layer_param_node(l, g, slot),
                                                 damo_layer_param_node(l, g, slot + 1), l->epsilon), what);
}

static damo_node *drop(damo_graph *g, damo_node *x, float rate) { return rate > 0 ? damo_dropout(g, x, rate) : x; }

/* The feed-forward network: intermediate dense, relu (the GEMM's epilogue) or GELU, output
 * dense. */
static damo_node *feedforward(damo_layer *l, damo_graph *g, damo_node *h) {
  const block_slots s = slots_of(l);
  h = project(l, g, h, s.ff_intermediate, 1, l->ff_gelu ? DAMO_ACT_NONE : DAMO_ACT_RELU);
  h = damo_layer_name_node(l, h, "feedforward_intermediate_dense");
  if (l->ff_gelu) h = damo_layer_name_node(l, damo_gelu(g, h, l->ff_gelu == 2), "feedforward_gelu");
  return damo_layer_name_node(l, project(l, g, h, s.ff_output, 1, DAMO_ACT_NONE), "feedforward_output_dense");
}

/* One residual sub-block: x + f(x) then the norm (post-LN), or x + f(norm(x)) (pre-LN). The
 * sub-block is an attention (query x, value/key memory: itself when NULL) or, with
 * attention_slot < 0, the feed-forward network. */
static damo_node *residual_block(damo_layer *l, damo_graph *g, damo_node *x, int norm_slot, const char *norm_name,
                                 int attention_slot, const char *what, damo_node *memory, damo_node *key_mask,
                                 int causal, damo_node **att_node) {
  damo_node *h = l->normalize_first ? norm(l, g, x, norm_slot, norm_name) : x;
  if (attention_slot >= 0) {
    damo_node *kv = memory ? memory : h;
    const int fused = !memory && l->fused_qkv;
    h = attention_block(l, g, attention_slot, 1, fused, what, h, kv, kv, key_mask, l->num_heads, causal,
                        l->attention_rate, att_node);
  } else {
    h = feedforward(l, g, h);
  }
  char label[64];
  snprintf(label, sizeof label, "%sresidual", what);
  damo_node *y = damo_layer_name_node(l, damo_add(g, drop(g, h, l->rate), x), label);
  return l->normalize_first ? y : norm(l, g, y, norm_slot, norm_name);
}

static damo_node *block_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node *memory, damo_node *self_mask,
                              damo_node *memory_mask, int causal) {
  const block_slots s = slots_of(l);
  damo_node *h = residual_block(l, g, x, s.self_norm, "self_attention_layer_norm", s.self_attention,
                                "self_attention/", NULL, self_mask, causal, &l->attention);
  if (memory)
    h = residual_block(l, g, h, s.cross_norm, "cross_attention_layer_norm", s.cross_attention, "cross_attention/",
                       memory, memory_mask, 0, &l->cross_attention);
  return residual_block(l, g, h, s.ff_norm, "feedforward_layer_norm", -1, "feedforward/", NULL, NULL, 0, NULL);
}

/* (sequence) or (sequence, padding mask (B, T) of 0/1 floats): the keys are masked by both
 * the sequence's own timestep mask and the given one. */
static damo_node *encoder_build(damo_layer *l, damo_graph *g, int n, damo_node *const *xs) {
  damo_node *y = block_build(l, g, xs[0], NULL, both_masks(g, l->in_masks[0], n > 1 ? xs[1] : NULL), NULL, 0);
  l->out_mask = l->in_masks[0];
  return y;
}

static damo_node *decoder_build(damo_layer *l, damo_graph *g, int n, damo_node *const *xs) {
  damo_node *y = block_build(l, g, xs[0], n > 1 ? xs[1] : NULL, l->in_masks[0], n > 1 ? l->in_masks[1] : NULL, 1);
  l->out_mask = l->in_masks[0];
  return y;
}

const damo_layer_type damo_layer_transformer_encoder = {.type = "transformer_encoder", .infer = block_infer,
                                                        .min_inputs = 1, .max_inputs = 2,
                                                        .build_multi = encoder_build, .recompute_unit = 1};
const damo_layer_type damo_layer_transformer_decoder = {.type = "transformer_decoder", .infer = block_infer,
                                                        .min_inputs = 1, .max_inputs = 2,
                                                        .build_multi = decoder_build, .recompute_unit = 1};

static damo_layer *block_new(const damo_layer_type *t, int intermediate_dim, int num_heads, float dropout, int gelu,
                             float layer_norm_epsilon, int normalize_first) {
  damo_layer *l = damo_layer_alloc(t);
  if (!l) return NULL;
  l->intermediate_dim = intermediate_dim;
  l->num_heads = num_heads;
  l->rate = l->attention_rate = dropout;
  l->ff_gelu = gelu == 2 ? 2 : gelu != 0;
  l->epsilon = layer_norm_epsilon;
  l->normalize_first = normalize_first != 0;
  return l;
}

damo_layer *damo_transformer_encoder_layer(int intermediate_dim, int num_heads, float dropout, int gelu,
                                           float layer_norm_epsilon, int normalize_first) {
  return block_new(&damo_layer_transformer_encoder, intermediate_dim, num_heads, dropout, gelu, layer_norm_epsilon,
                   normalize_first);
}

damo_layer *damo_transformer_decoder_layer(int intermediate_dim, int num_heads, float dropout, int gelu,
                                           float layer_norm_epsilon, int normalize_first) {
  return block_new(&damo_layer_transformer_decoder, intermediate_dim, num_heads, dropout, gelu, layer_norm_epsilon,
                   normalize_first);
}

damo_status damo_transformer_set_layout(damo_layer *l, int fused_qkv, int kernels_out_in, float attention_dropout) {
  if (!l || (l->type != &damo_layer_transformer_encoder && l->type != &damo_layer_transformer_decoder))
    return damo_error(DAMO_ERR_INVALID_ARG, "transformer_set_layout: needs a transformer_encoder or _decoder layer");
  if (l->calls)
    return damo_error(DAMO_ERR_STATE, "transformer_set_layout: layer '%s' is already called (its weights are "
                      "declared)", l->name);
  if (!(attention_dropout < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "transformer_set_layout: attention_dropout %g must be below 1",
                      (double)attention_dropout);
  l->fused_qkv = fused_qkv != 0;
  l->kernels_out_in = kernels_out_in != 0;
  l->attention_rate = attention_dropout < 0 ? l->rate : attention_dropout;
  return DAMO_OK;
}
