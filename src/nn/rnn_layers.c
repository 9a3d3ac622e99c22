/* rnn_layers.c - sequence layers of a Sequential model: LSTM, GRU, Bidirectional, Embedding
 * and the 1-D global poolings. The recurrent ones follow Keras: inputs (timesteps,
 * features), kernel glorot-uniform, recurrent kernel orthogonal; LSTM's bias is zero except
 * the forget gate's, which starts at 1 (unit_forget_bias) so early training keeps memory
 * instead of erasing it. Masks (l->in_mask, from an embedding with mask_zero) go into the
 * recurrent ops; a layer returning sequences passes its mask on, as Keras does. */
#include "nn/layers.h"

#include <math.h>
#include <stdio.h>

/* Shared by LSTM (4 gates) and GRU (3 gates, two bias rows). */
static damo_status recurrent_infer(damo_layer *l, int gates, int bias_rows, damo_init bias_init) {
  if (l->units <= 0) return damo_error(DAMO_ERR_INVALID_ARG, "units must be positive, got %d", l->units);
  if (l->in_ndim != 2) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE, "%s needs (timesteps, features) inputs, got %s", l->type->type,
                      damo_shape_string(l->in_ndim, l->in_shape, s, sizeof s));
  }
  int64_t U = l->units, F = l->in_shape[1];
  l->out_ndim = l->return_sequences ? 2 : 1;
  l->out_shape[0] = l->return_sequences ? l->in_shape[0] : U;
  l->out_shape[1] = U;
  l->n_params = 3;
  damo_param_slot *k = &l->params[0], *r = &l->params[1], *b = &l->params[2];
  snprintf(k->name, sizeof k->name, "kernel");
  k->ndim = 2, k->shape[0] = F, k->shape[1] = gates * U, k->init = l->kernel_init;
  snprintf(r->name, sizeof r->name, "recurrent_kernel");
  r->ndim = 2, r->shape[0] = U, r->shape[1] = gates * U, r->init = DAMO_INIT_ORTHOGONAL;
  snprintf(b->name, sizeof b->name, "bias");
  if (bias_rows == 1) b->ndim = 1, b->shape[0] = gates * U;
  else b->ndim = 2, b->shape[0] = bias_rows, b->shape[1] = gates * U;
  b->init = bias_init;
  return DAMO_OK;
}

static damo_status lstm_layer_infer(damo_layer *l) { return recurrent_infer(l, 4, 1, DAMO_INIT_UNIT_FORGET_BIAS); }
static damo_status gru_layer_infer(damo_layer *l) { return recurrent_infer(l, 3, 2, DAMO_INIT_ZEROS); }

/* One direction: the op over params[first .. first+2] of l, named "<layer>/<what>". */
static damo_node *recurrent_op(damo_layer *l, damo_graph *g, damo_node *x, int first, int gru, int reverse,
                               const char *what) {
  damo_node *p[3];
  for (int i = 0; i < 3; i++) {
    char name[DAMO_NAME_MAX + 48];
    snprintf(name, sizeof name, "%.40s.%s", l->name, l->params[first + i].name);
    p[i] = damo_param(g, name, l->params[first + i].value, l->params[first + i].grad);
  }
  char name[DAMO_NAME_MAX];
  snprintf(name, sizeof name, "%.40s/%s", l->name, what);
  damo_node *y;
  if (l->quant) /* int8 kernels (quant_layers.c) */
    y = damo_recurrent_int8_op(g, gru, x, p[0], p[1], p[2], l->in_mask, l->return_sequences, reverse,
                               &l->quant->rnn[first / 3]);
  else if (gru)
    y = damo_gru_ex(g, x, p[0], p[1], p[2], l->in_mask, l->return_sequences, reverse);
  else
    y = damo_lstm_ex(g, x, p[0], p[1], p[2], l->in_mask, l->return_sequences, reverse);
  return damo_node_set_name(y, name);
}

static damo_node *recurrent_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre, int gru) {
  *pre = recurrent_op(l, g, x, 0, gru, 0, gru ? "gru" : "lstm");
  l->out_mask = l->return_sequences ? l->in_mask : NULL;
  return *pre;
}

static damo_node *lstm_layer_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  return recurrent_build(l, g, x, pre, 0);
}
static damo_node *gru_layer_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  return recurrent_build(l, g, x, pre, 1);
}

const damo_layer_type damo_layer_lstm = {.type = "lstm", .infer = lstm_layer_infer, .build = lstm_layer_build};
const damo_layer_type damo_layer_gru = {.type = "gru", .infer = gru_layer_infer, .build = gru_layer_build};

static damo_layer *recurrent_new(const damo_layer_type *type, int units, int return_sequences) {
  damo_layer *l = damo_layer_alloc(type);
  if (!l) return NULL;
  l->units = units;
  l->return_sequences = return_sequences != 0;
  l->kernel_init = DAMO_INIT_GLOROT_UNIFORM;
  return l;
}

damo_layer *damo_lstm_layer(int units, int return_sequences) { return recurrent_new(&damo_layer_lstm, units, return_sequences); }
damo_layer *damo_gru_layer(int units, int return_sequences) { return recurrent_new(&damo_layer_gru, units, return_sequences); }

/* ------------------------------------------------------------------ Bidirectional */

static const char *merge_name(damo_merge_mode m) {
  switch (m) {
  case DAMO_MERGE_CONCAT: return "concat";
  case DAMO_MERGE_SUM: return "sum";
  case DAMO_MERGE_MUL: return "mul";
  case DAMO_MERGE_AVE: return "ave";
  }
  return "?";
}

/* Infers a copy of the inner layer on this input and takes its three slots twice, named
 * "forward_lstm.kernel" ... "backward_lstm.bias" (Keras' forward_/backward_ prefixes). */
static damo_status bidirectional_infer(damo_layer *l) {
  const damo_layer *in = l->inner;
  if (!in || (in->type != &damo_layer_lstm && in->type != &damo_layer_gru))
    return damo_error(DAMO_ERR_INVALID_ARG, "bidirectional wraps an lstm or gru layer, got %s",
                      in ? in->type->type : "none");
  if (strcmp(merge_name(l->merge), "?") == 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "unknown merge mode %d (expected concat, sum, mul or ave)",
                      (int)l->merge);
  damo_layer half = *in;
  half.inner = NULL;
  snprintf(half.name, sizeof half.name, "%s", l->name); /* errors name the bidirectional layer */
  half.in_ndim = l->in_ndim;
  memcpy(half.in_shape, l->in_shape, sizeof half.in_shape);
  damo_status st = in->type->infer(&half);
  if (st != DAMO_OK) return st;
  l->units = in->units;
  l->return_sequences = in->return_sequences;
  l->out_ndim = half.out_ndim;
  memcpy(l->out_shape, half.out_shape, sizeof l->out_shape);
  if (l->merge == DAMO_MERGE_CONCAT) l->out_shape[l->out_ndim - 1] *= 2;
  l->n_params = 2 * half.n_params;
  for (int d = 0; d < 2; d++)
    for (int i = 0; i < half.n_params; i++) {
      damo_param_slot *slot = &l->params[d * half.n_params + i];
      *slot = half.params[i];
      snprintf(slot->name, sizeof slot->name, "%s_%.4s.%.20s", d ? "backward" : "forward", in->type->type,
               half.params[i].name);
    }
  return DAMO_OK;
}

static damo_node *bidirectional_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  int gru = l->inner->type == &damo_layer_gru;
  damo_node *fwd = recurrent_op(l, g, x, 0, gru, 0, "forward");
  damo_node *bwd = recurrent_op(l, g, x, 3, gru, 1, "backward");
  damo_node *y;
  switch (l->merge) {
  case DAMO_MERGE_SUM: y = damo_add(g, fwd, bwd); break;
  case DAMO_MERGE_MUL: y = damo_mul(g, fwd, bwd); break;
  case DAMO_MERGE_AVE: y = damo_scale_by(g, damo_add(g, fwd, bwd), 0.5f); break;
  default: y = damo_concat(g, fwd, bwd); break;
  }
  char name[DAMO_NAME_MAX];
  snprintf(name, sizeof name, "%.40s/%s", l->name, merge_name(l->merge));
  *pre = damo_node_set_name(y, name);
  l->out_mask = l->return_sequences ? l->in_mask : NULL;
  return *pre;
}

const damo_layer_type damo_layer_bidirectional = {.type = "bidirectional", .infer = bidirectional_infer,
                                                  .build = bidirectional_build};

damo_layer *damo_bidirectional_layer(damo_layer *inner, damo_merge_mode merge_mode) {
  if (!inner) {
    damo_error(DAMO_ERR_INVALID_ARG, "bidirectional: the inner layer is NULL");
    return NULL;
  }
  damo_layer *l = damo_layer_alloc(&damo_layer_bidirectional);
  if (!l) {
    damo_layer_free(inner);
    return NULL;
  }
  l->inner = inner;
  l->merge = merge_mode;
  return l;
}

const char *damo_merge_mode_name(damo_merge_mode m) { return merge_name(m); }

/* ------------------------------------------------------------------ Embedding */

static damo_status embedding_layer_infer(damo_layer *l) {
  if (l->input_dim <= 0 || l->units <= 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "embedding needs input_dim and output_dim > 0, got %d and %d",
                      l->input_dim, l->units);
  if (l->in_ndim < 1 || l->in_ndim > DAMO_MAX_DIMS - 2 || (l->mask_zero && l->in_ndim != 1)) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE, "embedding needs integer ids of shape (timesteps,)%s, got %s",
                      l->mask_zero ? " with mask_zero" : "", damo_shape_string(l->in_ndim, l->in_shape, s, sizeof s));
  }
  l->out_ndim = l->in_ndim + 1;
  memcpy(l->out_shape, l->in_shape, sizeof l->out_shape);
  l->out_shape[l->in_ndim] = l->units;
  damo_param_slot *e = &l->params[0];
  snprintf(e->name, sizeof e->name, "embeddings");
  e->ndim = 2, e->shape[0] = l->input_dim, e->shape[1] = l->units, e->init = DAMO_INIT_RANDOM_UNIFORM;
  l->n_params = 1;
  return DAMO_OK;
}

static damo_node *embedding_layer_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  char name[DAMO_NAME_MAX + 48];
  snprintf(name, sizeof name, "%.40s.embeddings", l->name);
  damo_node *table = damo_param(g, name, l->params[0].value, l->params[0].grad);
  snprintf(name, sizeof name, "%.40s/embedding", l->name);
  *pre = damo_node_set_name(damo_embedding(g, x, table), name);
  if (l->mask_zero) {
    snprintf(name, sizeof name, "%.40s/mask", l->name);
    l->out_mask = damo_node_set_name(damo_sequence_mask(g, x), name);
  }
  return *pre;
}

const damo_layer_type damo_layer_embedding = {.type = "embedding", .infer = embedding_layer_infer,
                                              .build = embedding_layer_build, .takes_ids = 1};

damo_layer *damo_embedding_layer(int input_dim, int output_dim, int mask_zero) {
  damo_layer *l = damo_layer_alloc(&damo_layer_embedding);
  if (!l) return NULL;
  l->input_dim = input_dim;
  l->units = output_dim;
  l->mask_zero = mask_zero != 0;
  return l;
}

/* ------------------------------------------------------------------ 1-D global pooling */

static damo_status global_pool1d_layer_infer(damo_layer *l) {
  if (l->in_ndim != 2) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE, "%s needs (timesteps, features) inputs, got %s", l->type->type,
                      damo_shape_string(l->in_ndim, l->in_shape, s, sizeof s));
  }
  l->out_ndim = 1;
  l->out_shape[0] = l->in_shape[1];
  return DAMO_OK;
}

static damo_node *global_pool1d_layer_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  int max = l->type == &damo_layer_global_max_pool1d;
  char name[DAMO_NAME_MAX];
  snprintf(name, sizeof name, "%.40s/%s", l->name, max ? "max" : "mean");
  damo_node *y = max ? damo_global_max_pool1d(g, x, l->in_mask) : damo_global_avg_pool1d(g, x, l->in_mask);
  *pre = damo_node_set_name(y, name);
  return *pre;
}

const damo_layer_type damo_layer_global_avg_pool1d = {.type = "global_average_pooling1d",
                                                      .infer = global_pool1d_layer_infer,
                                                      .build = global_pool1d_layer_build};
const damo_layer_type damo_layer_global_max_pool1d = {.type = "global_max_pooling1d",
                                                      .infer = global_pool1d_layer_infer,
                                                      .build = global_pool1d_layer_build};

damo_layer *damo_global_avg_pool1d_layer(void) { return damo_layer_alloc(&damo_layer_global_avg_pool1d); }
damo_layer *damo_global_max_pool1d_layer(void) { return damo_layer_alloc(&damo_layer_global_max_pool1d); }
