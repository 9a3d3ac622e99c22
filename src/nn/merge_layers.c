/* merge_layers.c - the layers that join several tensors of a functional model (Keras' merge
 * layers): Add, Subtract, Multiply and Average take shapes that are equal or broadcast
 * (NumPy rules over the axes after the batch, a 1 stretching), Concatenate joins along one
 * axis. Like every layer they only compose graph ops; they have no weights. */
#include "nn/layers.h"

#include <stdio.h>

static damo_status merge_fail(const damo_layer *l, const char *what) {
  char shapes[256];
  int len = 0;
  for (int i = 0; i < l->n_in && len < (int)sizeof shapes - 32; i++) {
    char one[96];
    len += snprintf(shapes + len, sizeof shapes - (size_t)len, "%s%s", i ? " and " : "",
                    damo_shape_string(l->ins[i].ndim, l->ins[i].dim, one, sizeof one));
  }
  return damo_error(DAMO_ERR_SHAPE, "%s layer: %s; got %s", l->type->type, what, shapes);
}

/* Add, Subtract, Multiply, Average: the broadcast shape of all inputs. */
static damo_status elementwise_merge_infer(damo_layer *l) {
  if (l->type == &damo_layer_subtract && l->n_in != 2) return merge_fail(l, "subtract takes exactly 2 inputs");
  if (l->n_in < 2) return merge_fail(l, "needs at least 2 inputs");
  const int nd = l->ins[0].ndim;
  int64_t out[DAMO_MAX_DIMS];
  memcpy(out, l->ins[0].dim, sizeof out);
  for (int i = 1; i < l->n_in; i++) {
    if (l->ins[i].ndim != nd) return merge_fail(l, "inputs must have the same rank");
    for (int d = 0; d < nd; d++) {
      const int64_t b = l->ins[i].dim[d];
      if (b == out[d] || b == 1) continue;
      if (out[d] != 1) return merge_fail(l, "shapes must be equal or broadcast (a 1 stretches)");
      out[d] = b;
    }
  }
  l->out_ndim = nd;
  memcpy(l->out_shape, out, sizeof out);
  l->n_params = 0;
  return DAMO_OK;
}

static damo_node *elementwise_merge_build(damo_layer *l, damo_graph *g, int n, damo_node *const *xs) {
  damo_node *y = xs[0];
  for (int i = 1; i < n; i++) {
    if (l->type == &damo_layer_subtract) y = damo_sub(g, y, xs[i]);
    else if (l->type == &damo_layer_multiply) y = damo_mul(g, y, xs[i]);
    else y = damo_add(g, y, xs[i]);
  }
  if (l->type == &damo_layer_average) y = damo_scale_by(g, y, 1.0f / (float)n);
  return damo_node_set_name(y, l->name);
}

static damo_status concatenate_infer(damo_layer *l) {
  if (l->n_in < 2) return merge_fail(l, "needs at least 2 inputs");
  const int nd = l->ins[0].ndim;
  /* Keras counts the axis with the batch: -1 is the last, 1 the first after the batch. */
  const int axis = l->axis < 0 ? nd + 1 + l->axis : l->axis;
  if (axis < 1 || axis > nd) {
    char what[96];
    snprintf(what, sizeof what, "axis %d is not an axis after the batch of rank-%d inputs", l->axis, nd);
    return merge_fail(l, what);
  }
  l->out_ndim = nd;
  memcpy(l->out_shape, l->ins[0].dim, sizeof l->out_shape);
  for (int i = 1; i < l->n_in; i++) {
    if (l->ins[i].ndim != nd) return merge_fail(l, "inputs must have the same rank");
    for (int d = 0; d < nd; d++)
      if (d != axis - 1 && l->ins[i].dim[d] != l->ins[0].dim[d]) {
        char what[96];
        snprintf(what, sizeof what, "shapes must agree on every axis but %d", l->axis);
        return merge_fail(l, what);
      }
    l->out_shape[axis - 1] += l->ins[i].dim[axis - 1];
  }
  l->n_params = 0;
  return DAMO_OK;
}

static damo_node *concatenate_build(damo_layer *l, damo_graph *g, int n, damo_node *const *xs) {
  const int axis = l->axis < 0 ? l->ins[0].ndim + 1 + l->axis : l->axis;
  damo_node *y = xs[0];
  for (int i = 1; i < n; i++) y = damo_concat_axis(g, y, xs[i], axis);
  return damo_node_set_name(y, l->name);
}

const damo_layer_type damo_layer_add = {.type = "add", .infer = elementwise_merge_infer,
                                        .max_inputs = DAMO_LAYER_MAX_INPUTS, .build_multi = elementwise_merge_build};
const damo_layer_type damo_layer_subtract = {.type = "subtract", .infer = elementwise_merge_infer, .max_inputs = 2,
                                             .build_multi = elementwise_merge_build};
const damo_layer_type damo_layer_multiply = {.type = "multiply", .infer = elementwise_merge_infer,
                                             .max_inputs = DAMO_LAYER_MAX_INPUTS,
                                             .build_multi = elementwise_merge_build};
const damo_layer_type damo_layer_average = {.type = "average", .infer = elementwise_merge_infer,
                                            .max_inputs = DAMO_LAYER_MAX_INPUTS,
                                            .build_multi = elementwise_merge_build};
const damo_layer_type damo_layer_concatenate = {.type = "concatenate", .infer = concatenate_infer,
                                                .max_inputs = DAMO_LAYER_MAX_INPUTS, .build_multi = concatenate_build};

damo_layer *damo_add_layer(void) { return damo_layer_alloc(&damo_layer_add); }
damo_layer *damo_subtract_layer(void) { return damo_layer_alloc(&damo_layer_subtract); }
damo_layer *damo_multiply_layer(void) { return damo_layer_alloc(&damo_layer_multiply); }
damo_layer *damo_average_layer(void) { return damo_layer_alloc(&damo_layer_average); }

damo_layer *damo_concatenate_layer(int axis) {
  damo_layer *l = damo_layer_alloc(&damo_layer_concatenate);
  if (l) l->axis = axis;
  return l;
}
