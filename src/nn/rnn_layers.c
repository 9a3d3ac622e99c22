/* rnn_layers.c - recurrent layers of a Sequential model. LSTM follows Keras: inputs
 * (timesteps, features), kernel glorot-uniform, recurrent kernel orthogonal, bias zero
 * except the forget gate's, which starts at 1 (unit_forget_bias) so early training keeps
 * memory instead of erasing it. */
#include "nn/layers.h"

#include <math.h>
#include <stdio.h>

static damo_status lstm_layer_infer(damo_layer *l) {
  if (l->units <= 0) return damo_error(DAMO_ERR_INVALID_ARG, "layer '%s': units must be positive, got %d", l->name, l->units);
  if (l->in_ndim != 2) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE, "layer '%s': lstm needs (timesteps, features) inputs, got %s", l->name,
                      damo_shape_string(l->in_ndim, l->in_shape, s, sizeof s));
  }
  int64_t U = l->units, F = l->in_shape[1];
  l->out_ndim = l->return_sequences ? 2 : 1;
  l->out_shape[0] = l->return_sequences ? l->in_shape[0] : U;
  l->out_shape[1] = U;
  l->n_params = 3;
  damo_param_slot *k = &l->params[0], *r = &l->params[1], *b = &l->params[2];
  snprintf(k->name, sizeof k->name, "kernel");
  k->ndim = 2, k->shape[0] = F, k->shape[1] = 4 * U, k->init = l->kernel_init;
  snprintf(r->name, sizeof r->name, "recurrent_kernel");
  r->ndim = 2, r->shape[0] = U, r->shape[1] = 4 * U, r->init = DAMO_INIT_ORTHOGONAL;
  snprintf(b->name, sizeof b->name, "bias");
  b->ndim = 1, b->shape[0] = 4 * U, b->init = DAMO_INIT_UNIT_FORGET_BIAS;
  return DAMO_OK;
}

static damo_node *lstm_layer_build(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre) {
  damo_node *p[3];
  for (int i = 0; i < 3; i++) {
    char name[DAMO_NAME_MAX + 24];
    snprintf(name, sizeof name, "%.40s.%s", l->name, l->params[i].name);
    p[i] = damo_param(g, name, l->params[i].value, l->params[i].grad);
  }
  char name[DAMO_NAME_MAX];
  snprintf(name, sizeof name, "%.40s/lstm", l->name);
  *pre = damo_node_set_name(damo_lstm(g, x, p[0], p[1], p[2], l->return_sequences), name);
  return *pre;
}

const damo_layer_type damo_layer_lstm = {"lstm", lstm_layer_infer, lstm_layer_build};

damo_layer *damo_lstm_layer(int units, int return_sequences) {
  damo_layer *l = calloc(1, sizeof *l);
  if (!l) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for an lstm layer");
    return NULL;
  }
  l->type = &damo_layer_lstm;
  l->units = units;
  l->return_sequences = return_sequences != 0;
  l->kernel_init = DAMO_INIT_GLOROT_UNIFORM;
  return l;
}
