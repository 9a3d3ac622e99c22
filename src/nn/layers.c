/* layers.c - the Keras-style layers of a Sequential model: Dense, Activation, Dropout,
 * Flatten and Rescaling, each a composition of graph ops. */
#include "nn/layers.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>

damo_layer *damo_layer_alloc(const damo_layer_type *type) {
  damo_layer *l = calloc(1, sizeof *l);
  if (!l) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for a %s layer", type->type);
    return NULL;
  }
  l->type = type;
  l->n_in = 1;
  l->axis = -1;
  return l;
}

void damo_layer_free(damo_layer *l) {
  if (l) damo_layer_free(l->inner);
  if (l) damo_layer_quant_free(l->quant);
  if (l) damo_csr_free(l->sparse);
  free(l);
}

damo_layer *damo_layer_set_name(damo_layer *l, const char *name) {
  if (l && name) {
    snprintf(l->name, sizeof l->name, "%s", name);
    l->named = 1;
  }
  return l;
}

const char *damo_activation_name(damo_activation a) {
  switch (a) {
  case DAMO_ACT_NONE: return "linear";
  case DAMO_ACT_RELU: return "relu";
  case DAMO_ACT_SIGMOID: return "sigmoid";
  case DAMO_ACT_TANH: return "tanh";
  case DAMO_ACT_SOFTMAX: return "softmax";
  }
  return "?";
}

damo_status damo_activation_parse(const char *name, damo_activation *out) {
  static const damo_activation all[] = {DAMO_ACT_NONE, DAMO_ACT_RELU, DAMO_ACT_SIGMOID, DAMO_ACT_TANH, DAMO_ACT_SOFTMAX};
  if (!name || !strcmp(name, "none") || !strcmp(name, "")) {
    *out = DAMO_ACT_NONE;
    return DAMO_OK;
  }
  for (size_t i = 0; i < sizeof all / sizeof *all; i++)
    if (!strcmp(name, damo_activation_name(all[i]))) {
      *out = all[i];
      return DAMO_OK;
    }
  return damo_error(DAMO_ERR_NOT_FOUND, "unknown activation '%s' (expected linear, relu, sigmoid, tanh or softmax)", name);
}

const char *damo_init_name(damo_init i) {
  switch (i) {
  case DAMO_INIT_GLOROT_UNIFORM: return "glorot_uniform";
  case DAMO_INIT_HE_NORMAL: return "he_normal";
  case DAMO_INIT_HE_UNIFORM: return "he_uniform";
  case DAMO_INIT_ZEROS: return "zeros";
  case DAMO_INIT_ONES: return "ones";
  case DAMO_INIT_ORTHOGONAL: return "orthogonal";
  case DAMO_INIT_UNIT_FORGET_BIAS: return "unit_forget_bias";
  case DAMO_INIT_RANDOM_UNIFORM: return "random_uniform";
  }
  return "?";
}

damo_status damo_init_parse(const char *name, damo_init *out) {
  static const damo_init all[] = {DAMO_INIT_GLOROT_UNIFORM, DAMO_INIT_HE_NORMAL, DAMO_INIT_HE_UNIFORM, DAMO_INIT_ZEROS,
                                  DAMO_INIT_ONES, DAMO_INIT_ORTHOGONAL, DAMO_INIT_UNIT_FORGET_BIAS,
                                  DAMO_INIT_RANDOM_UNIFORM};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++)
    if (!strcmp(name, damo_init_name(all[i]))) {
      *out = all[i];
      return DAMO_OK;
    }
  return damo_error(DAMO_ERR_NOT_FOUND, "unknown initializer '%s' (expected glorot_uniform, he_normal, he_uniform or zeros)",
                    name);
}

void damo_param_init(damo_param_slot *p, damo_rng *rng) {
  float *w = p->value->data;
  int64_t n = damo_tensor_numel(p->value);
  /* Kernels are (..., fan_in part, out): dense (in, out), conv (KH, KW, C, F), as Keras
   * counts them: fan_in = KH*KW*C, fan_out = KH*KW*F. */
  double fan_in = (double)n, fan_out = (double)n;
  if (p->ndim >= 2) {
    double receptive = 1;
    for (int i = 0; i < p->ndim - 2; i++) receptive *= (double)p->shape[i];
    fan_in = receptive * (double)p->shape[p->ndim - 2];
    fan_out = receptive * (double)p->shape[p->ndim - 1];
  }
  switch (p->init) {
  case DAMO_INIT_ZEROS: memset(w, 0, (size_t)n * sizeof *w); break;
  case DAMO_INIT_ONES:
    for (int64_t i = 0; i < n; i++) w[i] = 1.0f;
    break;
  case DAMO_INIT_UNIT_FORGET_BIAS: /* gates i, f, c, o: the f quarter starts at 1 */
    for (int64_t i = 0; i < n; i++) w[i] = (i >= n / 4 && i < n / 2) ? 1.0f : 0.0f;
    break;
  case DAMO_INIT_ORTHOGONAL: {
    /* Gram-Schmidt over the rows of a Gaussian (rows <= cols here: (U, 4U)); rows beyond
     * cols would be dependent, so those fall back to scaled Gaussians. */
    int64_t rows = p->ndim >= 2 ? n / p->shape[p->ndim - 1] : 1, cols = n / rows;
    for (int64_t i = 0; i < n; i++) w[i] = damo_rng_normal(rng);
    for (int64_t r = 0; r < rows && r < cols; r++) {
      float *row = w + r * cols;
      for (int64_t q = 0; q < r; q++) {
        const float *prev = w + q * cols;
        double dot = 0;
        for (int64_t j = 0; j < cols; j++) dot += (double)row[j] * prev[j];
        for (int64_t j = 0; j < cols; j++) row[j] -= (float)dot * prev[j];
      }
      double norm = 0;
      for (int64_t j = 0; j < cols; j++) norm += (double)row[j] * row[j];
      float inv = norm > 0 ? (float)(1.0 / sqrt(norm)) : 0.0f;
      for (int64_t j = 0; j < cols; j++) row[j] *= inv;
    }
    break;
  }
  case DAMO_INIT_RANDOM_UNIFORM:
    for (int64_t i = 0; i < n; i++) w[i] = (2.0f * damo_rng_uniform(rng) - 1.0f) * 0.05f;
    break;
  case DAMO_INIT_GLOROT_UNIFORM: {
    float limit = (float)sqrt(6.0 / (fan_in + fan_out));
    for (int64_t i = 0; i < n; i++) w[i] = (2.0f * damo_rng_uniform(rng) - 1.0f) * limit;
    break;
  }
  case DAMO_INIT_HE_UNIFORM: {
    float limit = (float)sqrt(6.0 / fan_in);
    for (int64_t i = 0; i < n; i++) w[i] = (2.0f * damo_rng_uniform(rng) - 1.0f) * limit;
    break;
  }
  case DAMO_INIT_HE_NORMAL: {
    float std = (float)sqrt(2.0 / fan_in);
    for (int64_t i = 0; i < n; i++) w[i] = damo_rng_normal(rng) * std;
    break;
  }
  }
}

damo_node *damo_apply_activation(damo_graph *g, damo_node *x, damo_activation act) {
  switch (act) {
  case DAMO_ACT_NONE: return x;
  case DAMO_ACT_RELU: return damo_relu(g, x);
  case DAMO_ACT_SIGMOID: return damo_sigmoid(g, x);
  case DAMO_ACT_TANH: return damo_tanh(g, x);
  case DAMO_ACT_SOFTMAX: return damo_softmax(g, x);
  }
  return x;
}

static void copy_shape(damo_layer *l) {
  l->out_ndim = l->in_ndim;
  memcpy(l->out_shape, l->in_shape, sizeof l->out_shape);
}

/* Names the node after the layer so errors and NaN reports point at it. */
static damo_node *named(damo_layer *l, damo_node *n, const char *what) {
  char buf[DAMO_NAME_MAX];
  snprintf(buf, sizeof buf, "%.40s/%s", l->name, what);
  return damo_node_set_name(n, buf);
}

void damo_layer_declare_param(damo_layer *l, const char *name, int ndim, const int64_t *shape, damo_init init) {
  damo_param_slot *s = &l->params[l->n_params++];
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "%s", name);
  s->ndim = ndim;
  memcpy(s->shape, shape, (size_t)ndim * sizeof *shape);
  s->init = init;
}

damo_node *damo_layer_param_node(damo_layer *l, damo_graph *g, int i) {
  char name[DAMO_NAME_MAX + 64];
  snprintf(name, sizeof name, "%.40s.%s", l->name, l->params[i].name);
  return damo_param(g, name, l->params[i].value, l->params[i].grad);
}

damo_node *damo_layer_name_node(const damo_layer *l, damo_node *n, const char *what) {
  char buf[DAMO_NAME_MAX];
  snprintf(buf, sizeof buf, "%.40s/%s", l->name, what);
  return damo_node_set_name(n, buf);
}

/* ------------------------------------------------------------------ Dense */

static damo_status dense_infer(damo_layer *l) {
  if (l->units <= 0) return damo_error(DAMO_ERR_INVALID_ARG, "units must be positive, got %d", l->units);
  if (l->in_ndim < 1) return damo_error(DAMO_ERR_SHAPE, "dense needs an input with a feature axis");
  l->out_ndim = l->in_ndim;
  memcpy(l->out_shape, l->in_shape, sizeof l->out_shape);
  l->out_shape[l->out_ndim - 1] = l->units;
  damo_param_slot *k = &l->params[0];
  snprintf(k->name, sizeof k->name, "kernel");
  k->ndim = 2;
  k->shape[0] = l->in_shape[l->in_ndim - 1];
  k->shape[1] = l->units;
  k->init = l->kernel_init;
  l->n_params = 1;
  if (l->use_bias) {
    damo_param_slot *b = &l->params[1];
    snprintf(b->name, sizeof b->name, "bias");
    b->ndim = 1;
    b->shape[0] = l->units;
    b->init = DAMO_INIT_ZEROS;
    l->n_params = 2;
  }
  return DAMO_OK;
}

/* One fused dense node; softmax and sigmoid stay separate ops so a loss can take the
 * logits before them. */
static damo_node *dense_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  char pname[DAMO_NAME_MAX + 16];
  snprintf(pname, sizeof pname, "%.40s.kernel", l->name);
  damo_node *w = damo_param(g, pname, l->params[0].value, l->params[0].grad), *b = NULL;
  if (l->use_bias) {
    snprintf(pname, sizeof pname, "%.40s.bias", l->name);
    b = damo_param(g, pname, l->params[1].value, l->params[1].grad);
  }
  int separate = l->act == DAMO_ACT_SOFTMAX || l->act == DAMO_ACT_SIGMOID;
  if (l->quant || l->sparse) {
    /* int8 or sparse: ReLU is fused, any other activation follows as its own op. */
    const int fused = l->act == DAMO_ACT_RELU;
    const damo_activation a = fused ? l->act : DAMO_ACT_NONE;
    damo_node *h = l->quant ? named(l, damo_qdense_op(g, x, l->quant->slot[0].packed, b, a, l->quant->x_scale,
                                                      l->quant->x_zero_point), "qdense")
                            : named(l, damo_spdense_op(g, x, l->sparse, b, a), "spdense");
    if (fused || l->act == DAMO_ACT_NONE) return *pre = h;
    damo_node *out = named(l, damo_apply_activation(g, h, l->act), damo_activation_name(l->act));
    *pre = separate ? h : out;
    return out;
  }
  damo_node *h = named(l, damo_dense_op(g, x, w, b, separate ? DAMO_ACT_NONE : l->act), "dense");
  *pre = h;
  if (!separate) return h;
  return named(l, damo_apply_activation(g, h, l->act), damo_activation_name(l->act));
}

const damo_layer_type damo_layer_dense = {.type = "dense", .infer = dense_infer, .build = dense_build};

damo_layer *damo_dense_ex(int units, damo_activation act, damo_init kernel_init, int use_bias) {
  damo_layer *l = damo_layer_alloc(&damo_layer_dense);
  if (!l) return NULL;
  l->units = units;
  l->act = act;
  l->kernel_init = kernel_init;
  l->use_bias = use_bias;
  return l;
}

damo_layer *damo_dense(int units, damo_activation act) {
  return damo_dense_ex(units, act, DAMO_INIT_GLOROT_UNIFORM, 1);
}

/* ------------------------------------------------------------------ Activation */

static damo_status activation_infer(damo_layer *l) {
  copy_shape(l);
  return DAMO_OK;
}

static damo_node *activation_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  *pre = x;
  l->out_mask = l->in_mask; /* elementwise: the timesteps stay where they were */
  if (l->act == DAMO_ACT_NONE) return x;
  return named(l, damo_apply_activation(g, x, l->act), damo_activation_name(l->act));
}

const damo_layer_type damo_layer_activation = {.type = "activation", .infer = activation_infer,
                                               .build = activation_build};

damo_layer *damo_activation_layer(damo_activation act) {
  damo_layer *l = damo_layer_alloc(&damo_layer_activation);
  if (l) l->act = act;
  return l;
}

/* ------------------------------------------------------------------ Dropout */

static damo_status dropout_layer_infer(damo_layer *l) {
  if (!(l->rate >= 0.0f && l->rate < 1.0f))
    return damo_error(DAMO_ERR_INVALID_ARG, "dropout rate %g is outside [0, 1)", (double)l->rate);
  copy_shape(l);
  return DAMO_OK;
}

static damo_node *dropout_layer_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  damo_node *y = named(l, damo_dropout(g, x, l->rate), "dropout");
  l->out_mask = l->in_mask;
  *pre = y;
  return y;
}

const damo_layer_type damo_layer_dropout = {.type = "dropout", .infer = dropout_layer_infer,
                                            .build = dropout_layer_build};

damo_layer *damo_dropout_layer(float rate) {
  damo_layer *l = damo_layer_alloc(&damo_layer_dropout);
  if (l) l->rate = rate;
  return l;
}

/* ------------------------------------------------------------------ Flatten */

static damo_status flatten_infer(damo_layer *l) {
  int64_t n = 1;
  for (int i = 0; i < l->in_ndim; i++) n *= l->in_shape[i];
  l->out_ndim = 1;
  l->out_shape[0] = n;
  return DAMO_OK;
}

static damo_node *flatten_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  int64_t shape[2] = {0, l->out_shape[0]}; /* 0: keep the batch axis */
  damo_node *y = named(l, damo_reshape(g, x, 2, shape), "reshape");
  *pre = y;
  return y;
}

const damo_layer_type damo_layer_flatten = {.type = "flatten", .infer = flatten_infer, .build = flatten_build};

damo_layer *damo_flatten(void) { return damo_layer_alloc(&damo_layer_flatten); }

/* ------------------------------------------------------------------ Rescaling */

static damo_status rescaling_infer(damo_layer *l) {
  if (!isfinite(l->scale) || !isfinite(l->offset))
    return damo_error(DAMO_ERR_INVALID_ARG, "rescaling scale and offset must be finite");
  copy_shape(l);
  return DAMO_OK;
}

static damo_node *rescaling_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  damo_node *y = named(l, damo_scale_by(g, x, l->scale), "scale");
  if (l->offset != 0.0f) {
    int64_t one = 1;
    damo_tensor *c = damo_tensor_new(DAMO_F32, 1, &one);
    if (c) damo_tensor_f32(c)[0] = l->offset;
    y = named(l, damo_add(g, y, damo_constant(g, c)), "offset");
    damo_tensor_free(c);
  }
  *pre = y;
  return y;
}

const damo_layer_type damo_layer_rescaling = {.type = "rescaling", .infer = rescaling_infer, .build = rescaling_build};

damo_layer *damo_rescaling(float scale, float offset) {
  damo_layer *l = damo_layer_alloc(&damo_layer_rescaling);
  if (l) {
    l->scale = scale;
    l->offset = offset;
  }
  return l;
}

/* ------------------------------------------------------------------ registry */

static const damo_layer_type *const layer_types[] = {
    &damo_layer_reshape, &damo_layer_conv2d, &damo_layer_max_pool2d, &damo_layer_avg_pool2d,
    &damo_layer_global_avg_pool2d, &damo_layer_batch_norm, &damo_layer_lstm, &damo_layer_gru, &damo_layer_dense,
    &damo_layer_activation, &damo_layer_dropout, &damo_layer_flatten, &damo_layer_rescaling, &damo_layer_embedding,
    &damo_layer_bidirectional, &damo_layer_global_avg_pool1d, &damo_layer_global_max_pool1d, &damo_layer_add,
    &damo_layer_subtract, &damo_layer_multiply, &damo_layer_average, &damo_layer_concatenate, &damo_layer_layer_norm,
    &damo_layer_multi_head_attention, &damo_layer_transformer_encoder, &damo_layer_transformer_decoder,
    &damo_layer_position_embedding, &damo_layer_token_and_position_embedding, &damo_layer_conv1d,
    &damo_layer_max_pool1d, &damo_layer_avg_pool1d};

const damo_layer_type *damo_layer_type_find(const char *type) {
  for (size_t i = 0; i < sizeof layer_types / sizeof *layer_types; i++)
    if (!strcmp(layer_types[i]->type, type)) return layer_types[i];
  return NULL;
}

const char *damo_layer_type_names(void) {
  return "dense activation dropout flatten rescaling reshape conv2d max_pooling2d average_pooling2d "
         "global_average_pooling2d batch_normalization lstm gru embedding bidirectional global_average_pooling1d "
         "global_max_pooling1d add subtract multiply average concatenate layer_normalization multi_head_attention "
         "transformer_encoder transformer_decoder position_embedding token_and_position_embedding conv1d "
         "max_pooling1d average_pooling1d";
}
