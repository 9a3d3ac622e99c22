/* rnn_layers.c - recurrent layers of a Sequential model: LSTM and GRU. The
 * recurrent ones follow Keras: inputs (timesteps, features), kernel glorot-uniform,
 * recurrent kernel orthogonal; LSTM's bias is zero except the forget gate's, which starts
 * at 1 (unit_forget_bias) so early training keeps memory instead of erasing it. */
#include "nn/layers.h"

#include <math.h>
#include <stdio.h>

/* Shared by LSTM (4 gates) and GRU (3 gates, two bias rows). */
static damo_status recurrent_infer(damo_layer *l, int gates, int bias_rows, damo_init bias_init) {
  if (l->units <= 0) return damo_error(DAMO_ERR_INVALID_ARG, "layer '%s': units must be positive, got %d", l->name, l->units);
  if (l->in_ndim != 2) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE, "layer '%s': %s needs (timesteps, features) inputs, got %s", l->name,
                      l->type->type, damo_shape_string(l->in_ndim, l->in_shape, s, sizeof s));
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

static damo_node *recurrent_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre, int gru) {
  damo_node *p[3];
  for (int i = 0; i < 3; i++) {
    char name[DAMO_NAME_MAX + 24];
    snprintf(name, sizeof name, "%.40s.%s", l->name, l->params[i].name);
    p[i] = damo_param(g, name, l->params[i].value, l->params[i].grad);
  }
  char name[DAMO_NAME_MAX];
  snprintf(name, sizeof name, "%.40s/%s", l->name, gru ? "gru" : "lstm");
  damo_node *y = gru ? damo_gru(g, x, p[0], p[1], p[2], l->return_sequences)
                     : damo_lstm(g, x, p[0], p[1], p[2], l->return_sequences);
  *pre = damo_node_set_name(y, name);
  return *pre;
}

static damo_node *lstm_layer_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  return recurrent_build(l, g, x, pre, 0);
}
static damo_node *gru_layer_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  return recurrent_build(l, g, x, pre, 1);
}

const damo_layer_type damo_layer_lstm = {"lstm", lstm_layer_infer, lstm_layer_build};
const damo_layer_type damo_layer_gru = {"gru", gru_layer_infer, gru_layer_build};

static damo_layer *recurrent_new(const damo_layer_type *type, int units, int return_sequences) {
  damo_layer *l = calloc(1, sizeof *l);
  if (!l) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for a %s layer", type->type);
    return NULL;
  }
  l->type = type;
  l->units = units;
  l->return_sequences = return_sequences != 0;
  l->kernel_init = DAMO_INIT_GLOROT_UNIFORM;
  return l;
}

damo_layer *damo_lstm_layer(int units, int return_sequences) { return recurrent_new(&damo_layer_lstm, units, return_sequences); }
damo_layer *damo_gru_layer(int units, int return_sequences) { return recurrent_new(&damo_layer_gru, units, return_sequences); }
