/* quant_layers.c - the int8 state of a quantised layer: which parameter slots become int8
 * (kernels with one scale per output column, embedding tables with one per row), the
 * calibrated quantisation of a dense or conv2d input, and the packed kernels the int8 ops
 * read (ops/qlinear.c, the int8 paths of lstm.c and gru.c). Building the layer then emits
 * those ops; a table needs none (its f32 slot holds the dequantised values). */
#include "nn/layers.h"

#include <math.h>
#include <stdio.h>

static int recurrent(const damo_layer *l) {
  return l->type == &damo_layer_lstm || l->type == &damo_layer_gru || l->type == &damo_layer_bidirectional;
}

int damo_layer_quantizable(const damo_layer *l, const char **why) {
  const char *reason = NULL;
  if (l->type != &damo_layer_dense && l->type != &damo_layer_conv2d && l->type != &damo_layer_embedding &&
      !recurrent(l))
    reason = "only dense, conv2d, lstm, gru (and bidirectional) and embedding layers have int8 forms";
  else if (l->calls > 1)
    reason = "a layer called more than once (shared weights) is kept in f32";
  else if (l->n_params < 1 || l->params[0].ndim < 2)
    reason = "no kernel";
  if (why) *why = reason;
  return reason == NULL;
}

int damo_layer_int8_slot(const damo_layer *l, int p) {
  if (!damo_layer_quantizable(l, NULL) || p < 0 || p >= l->n_params) return 0;
  if (l->type == &damo_layer_embedding) return p == 0 ? 2 : 0;
  if (recurrent(l)) return p % 3 != 2; /* kernel, recurrent_kernel of each direction; not the bias */
  return p == 0;
}

int damo_layer_static_input(const damo_layer *l) {
  return l->type == &damo_layer_dense || l->type == &damo_layer_conv2d;
}

int64_t damo_layer_qslot_scales(const damo_layer *l, int p) {
  const damo_param_slot *k = &l->params[p];
  return damo_layer_int8_slot(l, p) == 2 ? k->shape[0] : k->shape[k->ndim - 1];
}

void damo_layer_quant_free(damo_layer_quant *quant) {
  if (!quant) return;
  for (int p = 0; p < DAMO_LAYER_MAX_PARAMS; p++) {
    free(quant->slot[p].q);
    free(quant->slot[p].scale);
    damo_qweight_free(quant->slot[p].packed);
  }
  free(quant);
}

/* What the recurrent ops read: each direction's (kernel, recurrent kernel) pair. */
static void bind_recurrent(damo_layer *l) {
  damo_layer_quant *quant = l->quant;
  for (int d = 0; d < 2 && 3 * d + 1 < l->n_params; d++) {
    quant->rnn[d].kernel = quant->slot[3 * d].packed;
    quant->rnn[d].recurrent = quant->slot[3 * d + 1].packed;
  }
}

damo_status damo_layer_quantize_slot(damo_layer *l, int p, const int8_t *q, const float *scale) {
  const char *why;
  if (!damo_layer_quantizable(l, &why)) return damo_error(DAMO_ERR_INVALID_ARG, "layer '%s': %s", l->name, why);
  const int kind = damo_layer_int8_slot(l, p);
  if (!kind)
    return damo_error(DAMO_ERR_INVALID_ARG, "layer '%s': parameter %d ('%s') has no int8 form", l->name, p,
                      p >= 0 && p < l->n_params ? l->params[p].name : "?");
  const damo_param_slot *k = &l->params[p];
  if (!k->value) return damo_error(DAMO_ERR_STATE, "layer '%s': quantised before its weights exist", l->name);
  const int64_t count = damo_tensor_numel(k->value), S = damo_layer_qslot_scales(l, p);
  for (int64_t n = 0; n < S; n++)
    if (!(scale[n] > 0.0f) || !isfinite(scale[n]))
      return damo_error(DAMO_ERR_FORMAT, "layer '%s': %s scale %lld is %g (a positive finite number expected)", l->name,
                        k->name, (long long)n, (double)scale[n]);
  for (int64_t i = 0; i < count; i++)
    if (q[i] == -128)
      return damo_error(DAMO_ERR_FORMAT, "layer '%s': %s value %lld is -128 (symmetric int8 is -127..127)", l->name,
                        k->name, (long long)i);
  damo_layer_quant *quant = l->quant ? l->quant : calloc(1, sizeof *quant);
  damo_layer_qslot slot = {malloc((size_t)count), malloc((size_t)S * sizeof *scale), kind == 2, NULL};
  if (quant && slot.q && slot.scale && kind == 1)
    slot.packed = damo_qweight_pack(q, count / S, S, scale, DAMO_QLAYOUT_AUTO);
  if (!quant || !slot.q || !slot.scale || (kind == 1 && !slot.packed)) {
    free(slot.q);
    free(slot.scale);
    damo_qweight_free(slot.packed);
    if (quant != l->quant) free(quant);
    return damo_error(DAMO_ERR_NOMEM, "layer '%s': no memory for its int8 %s", l->name, k->name);
  }
  memcpy(slot.q, q, (size_t)count);
  memcpy(slot.scale, scale, (size_t)S * sizeof *scale);
  float *w = damo_tensor_f32(k->value);
  const int64_t per_scale = count / S;
  for (int64_t i = 0; i < count; i++) w[i] = scale[kind == 2 ? i / per_scale : i % S] * (float)q[i];
  free(quant->slot[p].q);
  free(quant->slot[p].scale);
  damo_qweight_free(quant->slot[p].packed);
  quant->slot[p] = slot;
  l->quant = quant;
  if (recurrent(l)) bind_recurrent(l);
  return DAMO_OK;
}

damo_status damo_layer_set_input_quant(damo_layer *l, float x_scale, int x_zero_point) {
  if (!l->quant || !damo_layer_static_input(l))
    return damo_error(DAMO_ERR_INVALID_ARG, "layer '%s': only an int8 dense or conv2d takes a calibrated input", l->name);
  if (!(x_scale >= 0.0f) || !isfinite(x_scale) || x_zero_point < 0 || x_zero_point > 255)
    return damo_error(DAMO_ERR_FORMAT, "layer '%s': input scale %g / zero point %d (expected a scale >= 0, 0 meaning "
                      "per batch, and a zero point in 0..255)", l->name, (double)x_scale, x_zero_point);
  l->quant->x_scale = x_scale;
  l->quant->x_zero_point = x_zero_point;
  return DAMO_OK;
}
