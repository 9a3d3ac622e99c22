/* conv_layers.c - the image layers of a Sequential model, channels-last (N, H, W, C) as in
 * Keras: Reshape, Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D and
 * BatchNormalization. Like every layer they only compose graph ops. */
#include "nn/layers.h"
#include "ops/ops.h"

#include <stdio.h>

static damo_node *named(damo_layer *l, damo_node *n, const char *what) {
  char buf[DAMO_NAME_MAX];
  snprintf(buf, sizeof buf, "%.40s/%s", l->name, what);
  return damo_node_set_name(n, buf);
}

static damo_node *slot_param(damo_layer *l, damo_graph *g, int i) { return damo_layer_param_node(l, g, i); }

static void declare_slot(damo_layer *l, const char *name, int ndim, const int64_t *shape, damo_init init, int frozen) {
  damo_param_slot *s = &l->params[l->n_params++];
  snprintf(s->name, sizeof s->name, "%s", name);
  s->ndim = ndim;
  memcpy(s->shape, shape, (size_t)ndim * sizeof *shape);
  s->init = init;
  s->frozen = frozen;
}

/* Output size and padding of one spatial axis. */
static damo_status spatial(damo_layer *l, int64_t in, int k, int stride, int *before, int *after, int64_t *out) {
  if (l->padding_same) {
    damo_conv2d_same_padding((int)in, k, stride, before, after);
  } else {
    *before = *after = 0;
  }
  int64_t span = in + *before + *after - k;
  if (span < 0)
    return damo_error(DAMO_ERR_SHAPE, "window %d is larger than the input size %lld with %s padding", k,
                      (long long)in, l->padding_same ? "same" : "valid");
  *out = span / stride + 1;
  return DAMO_OK;
}

static damo_status need_image(damo_layer *l) {
  if (l->in_ndim != 3) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE,
                      "%s needs (height, width, channels) inputs, got %s (add a reshape layer, e.g. "
                      "target_shape [28, 28, 1])",
                      l->type->type, damo_shape_string(l->in_ndim, l->in_shape, s, sizeof s));
  }
  return DAMO_OK;
}

/* ------------------------------------------------------------------ Reshape */

static damo_status reshape_layer_infer(damo_layer *l) {
  int64_t have = 1, want = 1;
  for (int i = 0; i < l->in_ndim; i++) have *= l->in_shape[i];
  for (int i = 0; i < l->out_ndim; i++) want *= l->out_shape[i];
  if (l->out_ndim < 1 || have != want) {
    char a[96], b[96];
    return damo_error(DAMO_ERR_SHAPE, "cannot reshape %s to %s",
                      damo_shape_string(l->in_ndim, l->in_shape, a, sizeof a),
                      damo_shape_string(l->out_ndim, l->out_shape, b, sizeof b));
  }
  return DAMO_OK;
}

static damo_node *reshape_layer_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  int64_t shape[DAMO_MAX_DIMS] = {0}; /* 0: keep the batch axis */
  memcpy(shape + 1, l->out_shape, (size_t)l->out_ndim * sizeof *shape);
  *pre = named(l, damo_reshape(g, x, l->out_ndim + 1, shape), "reshape");
  return *pre;
}

const damo_layer_type damo_layer_reshape = {.type = "reshape", .infer = reshape_layer_infer,
                                            .build = reshape_layer_build};

damo_layer *damo_reshape_layer(int ndim, const int64_t *target_shape) {
  damo_layer *l = damo_layer_alloc(&damo_layer_reshape);
  if (!l) return NULL;
  if (ndim < 1 || ndim > DAMO_MAX_DIMS - 1) ndim = 0; /* infer reports it */
  l->out_ndim = ndim;
  memcpy(l->out_shape, target_shape, (size_t)ndim * sizeof *target_shape);
  return l;
}

/* ------------------------------------------------------------------ Conv2D */

static damo_status conv_infer(damo_layer *l) {
  damo_status st = need_image(l);
  if (st != DAMO_OK) return st;
  if (l->units <= 0 || l->kernel[0] <= 0 || l->kernel[1] <= 0 || l->stride[0] <= 0 || l->stride[1] <= 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "filters, kernel_size and strides must be positive");
  int64_t oh = 0, ow = 0;
  if ((st = spatial(l, l->in_shape[0], l->kernel[0], l->stride[0], &l->pad[0], &l->pad[2], &oh)) != DAMO_OK ||
      (st = spatial(l, l->in_shape[1], l->kernel[1], l->stride[1], &l->pad[1], &l->pad[3], &ow)) != DAMO_OK)
    return st;
  l->out_ndim = 3;
  l->out_shape[0] = oh;
  l->out_shape[1] = ow;
  l->out_shape[2] = l->units;
  l->n_params = 0;
  int64_t kshape[4] = {l->kernel[0], l->kernel[1], l->in_shape[2], l->units};
  declare_slot(l, "kernel", 4, kshape, l->kernel_init, 0);
  if (l->use_bias) {
    int64_t b = l->units;
    declare_slot(l, "bias", 1, &b, DAMO_INIT_ZEROS, 0);
  }
  return DAMO_OK;
}

/* One fused node (bias and activation as the epilogue); softmax stays a separate op. */
static damo_node *conv_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  int separate = l->act == DAMO_ACT_SOFTMAX || (l->separate_activation && l->act != DAMO_ACT_NONE);
  if (l->quant) {
    const int fused = l->act == DAMO_ACT_RELU;
    damo_node *h = damo_qconv2d_op(g, x, l->quant->slot[0].packed, l->kernel[0], l->kernel[1],
                                   l->use_bias ? slot_param(l, g, 1) : NULL, fused ? l->act : DAMO_ACT_NONE,
                                   l->stride[0], l->stride[1], l->pad[0], l->pad[1], l->pad[2], l->pad[3],
                                   l->quant->x_scale, l->quant->x_zero_point);
    h = named(l, h, "qconv");
    if (fused || l->act == DAMO_ACT_NONE) return *pre = h;
    damo_node *out = named(l, damo_apply_activation(g, h, l->act), damo_activation_name(l->act));
    *pre = separate ? h : out;
    return out;
  }
  if (l->sparse) { /* a pruned kernel at inference: the direct sparse convolution, ReLU fused */
    const int fused = l->act == DAMO_ACT_RELU;
    damo_node *h = damo_spconv2d_op(g, x, l->sparse, l->kernel[0], l->kernel[1], l->use_bias ? slot_param(l, g, 1) : NULL,
                                    fused ? l->act : DAMO_ACT_NONE, l->stride[0], l->stride[1], l->pad[0], l->pad[1],
                                    l->pad[2], l->pad[3]);
    h = named(l, h, "spconv");
    if (fused || l->act == DAMO_ACT_NONE) return *pre = h;
    damo_node *out = named(l, damo_apply_activation(g, h, l->act), damo_activation_name(l->act));
    *pre = separate ? h : out;
    return out;
  }
  damo_node *h = damo_conv2d_ex(g, x, slot_param(l, g, 0), l->use_bias ? slot_param(l, g, 1) : NULL,
                                separate ? DAMO_ACT_NONE : l->act, l->stride[0], l->stride[1], l->pad[0], l->pad[1],
                                l->pad[2], l->pad[3]);
  h = named(l, h, "conv");
  *pre = h;
  if (!separate) return h;
  return named(l, damo_apply_activation(g, h, l->act), damo_activation_name(l->act));
}

const damo_layer_type damo_layer_conv2d = {.type = "conv2d", .infer = conv_infer, .build = conv_build};

damo_layer *damo_conv2d_layer(int filters, int kernel_h, int kernel_w, int stride, int padding_same, damo_activation act) {
  damo_layer *l = damo_layer_alloc(&damo_layer_conv2d);
  if (!l) return NULL;
  l->units = filters;
  l->kernel[0] = kernel_h;
  l->kernel[1] = kernel_w;
  l->stride[0] = l->stride[1] = stride;
  l->padding_same = padding_same;
  l->act = act;
  l->kernel_init = DAMO_INIT_GLOROT_UNIFORM;
  l->use_bias = 1;
  return l;
}

/* ------------------------------------------------------------------ pooling */

static damo_status pool_infer(damo_layer *l) {
  damo_status st = need_image(l);
  if (st != DAMO_OK) return st;
  if (l->kernel[0] <= 0 || l->kernel[1] <= 0 || l->stride[0] <= 0 || l->stride[1] <= 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "pool_size and strides must be positive");
  int64_t oh = 0, ow = 0;
  if ((st = spatial(l, l->in_shape[0], l->kernel[0], l->stride[0], &l->pad[0], &l->pad[2], &oh)) != DAMO_OK ||
      (st = spatial(l, l->in_shape[1], l->kernel[1], l->stride[1], &l->pad[1], &l->pad[3], &ow)) != DAMO_OK)
    return st;
  l->out_ndim = 3;
  l->out_shape[0] = oh;
  l->out_shape[1] = ow;
  l->out_shape[2] = l->in_shape[2];
  return DAMO_OK;
}

static damo_node *max_pool_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  *pre = named(l, damo_max_pool2d(g, x, l->kernel[0], l->kernel[1], l->stride[0], l->stride[1], l->pad[0], l->pad[1],
                                  l->pad[2], l->pad[3]),
               "max_pool");
  return *pre;
}

static damo_node *avg_pool_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  *pre = named(l, damo_avg_pool2d(g, x, l->kernel[0], l->kernel[1], l->stride[0], l->stride[1], l->pad[0], l->pad[1],
                                  l->pad[2], l->pad[3]),
               "avg_pool");
  return *pre;
}

const damo_layer_type damo_layer_max_pool2d = {.type = "max_pooling2d", .infer = pool_infer, .build = max_pool_build};
const damo_layer_type damo_layer_avg_pool2d = {.type = "average_pooling2d", .infer = pool_infer,
                                               .build = avg_pool_build};

static damo_layer *pool_new(const damo_layer_type *t, int pool, int stride, int padding_same) {
  damo_layer *l = damo_layer_alloc(t);
  if (!l) return NULL;
  l->kernel[0] = l->kernel[1] = pool;
  l->stride[0] = l->stride[1] = stride > 0 ? stride : pool; /* Keras: strides default to pool_size */
  l->padding_same = padding_same;
  return l;
}

damo_layer *damo_max_pool2d_layer(int pool, int stride, int padding_same) {
  return pool_new(&damo_layer_max_pool2d, pool, stride, padding_same);
}
damo_layer *damo_avg_pool2d_layer(int pool, int stride, int padding_same) {
  return pool_new(&damo_layer_avg_pool2d, pool, stride, padding_same);
}

static damo_status gap_infer(damo_layer *l) {
  damo_status st = need_image(l);
  if (st != DAMO_OK) return st;
  l->out_ndim = 1;
  l->out_shape[0] = l->in_shape[2];
  return DAMO_OK;
}

static damo_node *gap_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  *pre = named(l, damo_global_avg_pool2d(g, x), "global_avg_pool");
  return *pre;
}

const damo_layer_type damo_layer_global_avg_pool2d = {.type = "global_average_pooling2d", .infer = gap_infer,
                                                      .build = gap_build};

damo_layer *damo_global_avg_pool2d_layer(void) { return damo_layer_alloc(&damo_layer_global_avg_pool2d); }

/* ------------------------------------------------------------------ BatchNormalization */

static damo_status bn_infer(damo_layer *l) {
  if (l->in_ndim < 1) return damo_error(DAMO_ERR_SHAPE, "batch normalization needs a feature axis");
  if (!(l->momentum >= 0 && l->momentum < 1) || !(l->epsilon > 0))
    return damo_error(DAMO_ERR_INVALID_ARG, "momentum must be in [0, 1) and epsilon positive");
  l->out_ndim = l->in_ndim;
  memcpy(l->out_shape, l->in_shape, sizeof l->out_shape);
  int64_t c = l->in_shape[l->in_ndim - 1];
  l->n_params = 0;
  declare_slot(l, "gamma", 1, &c, DAMO_INIT_ONES, 0);
  declare_slot(l, "beta", 1, &c, DAMO_INIT_ZEROS, 0);
  declare_slot(l, "moving_mean", 1, &c, DAMO_INIT_ZEROS, 1);
  declare_slot(l, "moving_variance", 1, &c, DAMO_INIT_ONES, 1);
  return DAMO_OK;
}

static damo_node *bn_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  damo_node *gamma = slot_param(l, g, 0), *beta = slot_param(l, g, 1);
  damo_node *mean = slot_param(l, g, 2), *var = slot_param(l, g, 3);
  damo_node *y = named(l, damo_batch_norm(g, x, gamma, beta, mean, var, l->momentum, l->epsilon), "batch_norm");
  *pre = y;
  return y;
}

const damo_layer_type damo_layer_batch_norm = {.type = "batch_normalization", .infer = bn_infer, .build = bn_build};

damo_layer *damo_batch_norm_layer(float momentum, float epsilon) {
  damo_layer *l = damo_layer_alloc(&damo_layer_batch_norm);
  if (!l) return NULL;
  l->momentum = momentum;
  l->epsilon = epsilon;
  return l;
}
