/* seq_layers.c - layers over (timesteps, features) sequences: keras_hub's PositionEmbedding
 * and TokenAndPositionEmbedding, Keras' Conv1D, MaxPooling1D and AveragePooling1D. The 1-D
 * convolution and poolings run the 2-D ops on the sequence seen as a (1, timesteps) image:
 * (B, T, C) -> reshape (B, 1, T, C) -> op with a (1, k) window -> reshape (B, T', F). */
#include "nn/layers.h"

#include <stdio.h>

static damo_status need_sequence(const damo_layer *l) {
  if (l->in_ndim == 2) return DAMO_OK;
  char s[96];
  return damo_error(DAMO_ERR_SHAPE, "%s layer '%s' needs (timesteps, features) inputs, got %s", l->type->type, l->name,
                    damo_shape_string(l->in_ndim, l->in_shape, s, sizeof s));
}

static damo_status fits_sequence_length(const damo_layer *l, int64_t timesteps) {
  if (l->sequence_length < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s layer '%s': sequence_length must be >= 1, got %d", l->type->type,
                      l->name, l->sequence_length);
  if (timesteps > l->sequence_length)
    return damo_error(DAMO_ERR_SHAPE, "%s layer '%s': the input has %lld timesteps, more than its sequence_length %d",
                      l->type->type, l->name, (long long)timesteps, l->sequence_length);
  return DAMO_OK;
}

/* Rows [0, T) of a (sequence_length, C) table: an embedding lookup of the constant ids
 * 0 .. T-1, (T, C), which broadcasts over the batch when added. */
static damo_node *positions(damo_layer *l, damo_graph *g, int slot, int64_t timesteps) {
  damo_tensor *ids = damo_tensor_new(DAMO_I32, 1, &timesteps);
  if (!ids) return damo_constant(g, NULL);
  for (int64_t t = 0; t < timesteps; t++) damo_tensor_i32(ids)[t] = (int32_t)t;
  damo_node *pos = damo_constant(g, ids);
  damo_tensor_free(ids);
  return damo_layer_name_node(l, damo_embedding(g, pos, damo_layer_param_node(l, g, slot)), "positions");
}

/* ------------------------------------------------------------------ PositionEmbedding */

static damo_status position_embedding_infer(damo_layer *l) {
  damo_status st = need_sequence(l);
  if (st == DAMO_OK) st = fits_sequence_length(l, l->in_shape[0]);
  if (st != DAMO_OK) return st;
  l->out_ndim = 2;
  memcpy(l->out_shape, l->in_shape, sizeof l->out_shape);
  const int64_t table[2] = {l->sequence_length, l->in_shape[1]};
  l->n_params = 0;
  damo_layer_declare_param(l, "embeddings", 2, table, DAMO_INIT_GLOROT_UNIFORM);
  return DAMO_OK;
}

static damo_node *position_embedding_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  *pre = damo_layer_name_node(l, damo_add(g, x, positions(l, g, 0, l->in_shape[0])), "add");
  l->out_mask = l->in_mask;
  return *pre;
}

const damo_layer_type damo_layer_position_embedding = {.type = "position_embedding",
                                                       .infer = position_embedding_infer,
                                                       .build = position_embedding_build};

damo_layer *damo_position_embedding_layer(int sequence_length) {
  damo_layer *l = damo_layer_alloc(&damo_layer_position_embedding);
  if (l) l->sequence_length = sequence_length;
  return l;
}

/* ------------------------------------------------------------------ TokenAndPositionEmbedding */

static damo_status token_and_position_infer(damo_layer *l) {
  if (l->input_dim < 1 || l->units < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "token_and_position_embedding layer '%s': vocabulary_size and "
                      "embedding_dim must be >= 1, got %d and %d", l->name, l->input_dim, l->units);
  if (l->in_ndim != 1) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE, "token_and_position_embedding layer '%s' needs integer ids of shape "
                      "(timesteps,), got %s", l->name, damo_shape_string(l->in_ndim, l->in_shape, s, sizeof s));
  }
  damo_status st = fits_sequence_length(l, l->in_shape[0]);
  if (st != DAMO_OK) return st;
  l->out_ndim = 2;
  l->out_shape[0] = l->in_shape[0];
  l->out_shape[1] = l->units;
  const int64_t tokens[2] = {l->input_dim, l->units}, table[2] = {l->sequence_length, l->units};
  l->n_params = 0;
  /* keras_hub's default initializer for both is "uniform": [-0.05, 0.05] */
  damo_layer_declare_param(l, "token_embedding/embeddings", 2, tokens, DAMO_INIT_RANDOM_UNIFORM);
  damo_layer_declare_param(l, "position_embedding/embeddings", 2, table, DAMO_INIT_RANDOM_UNIFORM);
  return DAMO_OK;
}

static damo_node *token_and_position_build(damo_layer *l, damo_graph *g, damo_node *ids, damo_node **pre) {
  damo_node *tokens = damo_layer_name_node(l, damo_embedding(g, ids, damo_layer_param_node(l, g, 0)), "tokens");
  *pre = damo_layer_name_node(l, damo_add(g, tokens, positions(l, g, 1, l->in_shape[0])), "add");
  if (l->mask_zero) l->out_mask = damo_layer_name_node(l, damo_sequence_mask(g, ids), "mask");
  return *pre;
}

const damo_layer_type damo_layer_token_and_position_embedding = {.type = "token_and_position_embedding",
                                                                 .infer = token_and_position_infer,
                                                                 .build = token_and_position_build, .takes_ids = 1};

damo_layer *damo_token_and_position_embedding_layer(int vocabulary_size, int sequence_length, int embedding_dim,
                                                    int mask_zero) {
  damo_layer *l = damo_layer_alloc(&damo_layer_token_and_position_embedding);
  if (!l) return NULL;
  l->input_dim = vocabulary_size;
  l->sequence_length = sequence_length;
  l->units = embedding_dim;
  l->mask_zero = mask_zero != 0;
  return l;
}

/* ------------------------------------------------------------------ Conv1D and 1-D pooling */

/* The output length and the padding before/after (pad[0], pad[1]) of a window k, stride s:
 * valid none, same TensorFlow's (the odd one after), causal k - 1 before (output t sees
 * inputs <= t at stride 1). */
static damo_status window_1d(damo_layer *l) {
  const int k = l->kernel[0], s = l->stride[0];
  if (k < 1 || s < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s layer '%s': the window and strides must be >= 1, got %d and %d",
                      l->type->type, l->name, k, s);
  const int64_t t = l->in_shape[0];
  if (l->causal) l->pad[0] = k - 1, l->pad[1] = 0;
  else if (l->padding_same) damo_conv2d_same_padding((int)t, k, s, &l->pad[0], &l->pad[1]);
  else l->pad[0] = l->pad[1] = 0;
  const int64_t span = t + l->pad[0] + l->pad[1] - k;
  if (span < 0)
    return damo_error(DAMO_ERR_SHAPE, "%s layer '%s': window %d is longer than the %lld timesteps with %s padding",
                      l->type->type, l->name, k, (long long)t, l->causal ? "causal" : l->padding_same ? "same" : "valid");
  l->out_ndim = 2;
  l->out_shape[0] = span / s + 1;
  return DAMO_OK;
}

static damo_status conv1d_infer(damo_layer *l) {
  damo_status st = need_sequence(l);
  if (st == DAMO_OK && l->units < 1)
    st = damo_error(DAMO_ERR_INVALID_ARG, "conv1d layer '%s': filters must be >= 1, got %d", l->name, l->units);
  if (st == DAMO_OK) st = window_1d(l);
  if (st != DAMO_OK) return st;
  l->out_shape[1] = l->units;
  const int64_t kernel[3] = {l->kernel[0], l->in_shape[1], l->units}, bias = l->units;
  l->n_params = 0;
  damo_layer_declare_param(l, "kernel", 3, kernel, l->kernel_init);
  if (l->use_bias) damo_layer_declare_param(l, "bias", 1, &bias, DAMO_INIT_ZEROS);
  return DAMO_OK;
}

/* (B, T, C) as the (B, 1, T, C) image the 2-D ops take. */
static damo_node *as_image(damo_layer *l, damo_graph *g, damo_node *x) {
  const int64_t shape[4] = {0, 1, l->in_shape[0], l->in_shape[1]};
  return damo_layer_name_node(l, damo_reshape(g, x, 4, shape), "as_image");
}

static damo_node *as_sequence(damo_layer *l, damo_graph *g, damo_node *y) {
  const int64_t shape[3] = {0, l->out_shape[0], l->out_shape[1]};
  return damo_layer_name_node(l, damo_reshape(g, y, 3, shape), "as_sequence");
}

static damo_node *conv1d_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  const int64_t kshape[4] = {1, l->kernel[0], l->in_shape[1], l->units}; /* (k, C, F) as a (1, k) window */
  damo_node *kernel = damo_reshape(g, damo_layer_param_node(l, g, 0), 4, kshape);
  damo_node *bias = l->use_bias ? damo_layer_param_node(l, g, 1) : NULL;
  const int separate = l->act == DAMO_ACT_SOFTMAX; /* the other activations are the GEMM's epilogue */
  damo_node *y = damo_conv2d_ex(g, as_image(l, g, x), kernel, bias, separate ? DAMO_ACT_NONE : l->act, 1,
                                l->stride[0], 0, l->pad[0], 0, l->pad[1]);
  y = as_sequence(l, g, damo_layer_name_node(l, y, "conv"));
  *pre = y;
  if (!separate) return y;
  return damo_layer_name_node(l, damo_apply_activation(g, y, l->act), damo_activation_name(l->act));
}

const damo_layer_type damo_layer_conv1d = {.type = "conv1d", .infer = conv1d_infer, .build = conv1d_build};

damo_layer *damo_conv1d_layer(int filters, int kernel_size, int strides, damo_padding padding, damo_activation act) {
  damo_layer *l = damo_layer_alloc(&damo_layer_conv1d);
  if (!l) return NULL;
  l->units = filters;
  l->kernel[0] = kernel_size;
  l->stride[0] = strides;
  l->padding_same = padding == DAMO_PADDING_SAME;
  l->causal = padding == DAMO_PADDING_CAUSAL;
  l->act = act;
  l->kernel_init = DAMO_INIT_GLOROT_UNIFORM;
  l->use_bias = 1;
  return l;
}

static damo_status pool1d_infer(damo_layer *l) {
  damo_status st = need_sequence(l);
  if (st == DAMO_OK) st = window_1d(l);
  if (st != DAMO_OK) return st;
  l->out_shape[1] = l->in_shape[1];
  l->n_params = 0;
  return DAMO_OK;
}

static damo_node *pool1d_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  const int max = l->type == &damo_layer_max_pool1d;
  damo_node *img = as_image(l, g, x);
  damo_node *y = max ? damo_max_pool2d(g, img, 1, l->kernel[0], 1, l->stride[0], 0, l->pad[0], 0, l->pad[1])
                     : damo_avg_pool2d(g, img, 1, l->kernel[0], 1, l->stride[0], 0, l->pad[0], 0, l->pad[1]);
  *pre = as_sequence(l, g, damo_layer_name_node(l, y, max ? "max_pool" : "avg_pool"));
  return *pre;
}

const damo_layer_type damo_layer_max_pool1d = {.type = "max_pooling1d", .infer = pool1d_infer, .build = pool1d_build};
const damo_layer_type damo_layer_avg_pool1d = {.type = "average_pooling1d", .infer = pool1d_infer,
                                               .build = pool1d_build};

static damo_layer *pool1d_new(const damo_layer_type *t, int pool_size, int strides, int padding_same) {
  damo_layer *l = damo_layer_alloc(t);
  if (!l) return NULL;
  l->kernel[0] = pool_size;
  l->stride[0] = strides > 0 ? strides : pool_size; /* Keras: strides default to pool_size */
  l->padding_same = padding_same != 0;
  return l;
}

damo_layer *damo_max_pool1d_layer(int pool_size, int strides, int padding_same) {
  return pool1d_new(&damo_layer_max_pool1d, pool_size, strides, padding_same);
}
damo_layer *damo_avg_pool1d_layer(int pool_size, int strides, int padding_same) {
  return pool1d_new(&damo_layer_avg_pool1d, pool_size, strides, padding_same);
}
