/* quant_layers.c - the int8 state of a quantised Dense or Conv2D: its kernel as int8 with
 * one scale per output channel, the calibrated quantisation of its input, and the packed
 * form the int8 ops read (ops/qlinear.c). Building the layer then emits qdense/qconv2d. */
#include "nn/layers.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>

int damo_layer_quantizable(const damo_layer *l, const char **why) {
  const char *reason = NULL;
  if (l->type != &damo_layer_dense && l->type != &damo_layer_conv2d)
    reason = "only dense and conv2d layers have int8 kernels";
  else if (l->calls > 1)
    reason = "a layer called more than once (shared weights) is kept in f32";
  else if (l->n_params < 1 || l->params[0].ndim < 2)
    reason = "no kernel";
  if (why) *why = reason;
  return reason == NULL;
}

void damo_layer_quant_free(damo_layer_quant *quant) {
  if (!quant) return;
  free(quant->q);
  free(quant->scale);
  damo_qweight_free(quant->packed);
  free(quant);
}

damo_status damo_layer_quantize(damo_layer *l, const int8_t *q, const float *scale, float x_scale, int x_zero_point) {
  const char *why;
  if (!damo_layer_quantizable(l, &why)) return damo_error(DAMO_ERR_INVALID_ARG, "layer '%s': %s", l->name, why);
  const damo_param_slot *k = &l->params[0];
  if (!k->value) return damo_error(DAMO_ERR_STATE, "layer '%s': quantised before its weights exist", l->name);
  const int64_t N = k->shape[k->ndim - 1], count = damo_tensor_numel(k->value), K = count / N;
  for (int64_t n = 0; n < N; n++)
    if (!(scale[n] > 0.0f) || !isfinite(scale[n]))
      return damo_error(DAMO_ERR_FORMAT, "layer '%s': kernel scale %lld is %g (a positive finite number expected)",
                        l->name, (long long)n, (double)scale[n]);
  if (!(x_scale >= 0.0f) || !isfinite(x_scale) || x_zero_point < 0 || x_zero_point > 255)
    return damo_error(DAMO_ERR_FORMAT, "layer '%s': input scale %g / zero point %d (expected a scale >= 0, 0 meaning "
                      "per batch, and a zero point in 0..255)", l->name, (double)x_scale, x_zero_point);
  for (int64_t i = 0; i < count; i++)
    if (q[i] == -128)
      return damo_error(DAMO_ERR_FORMAT, "layer '%s': kernel value %lld is -128 (symmetric int8 is -127..127)", l->name,
                        (long long)i);
  damo_layer_quant *quant = calloc(1, sizeof *quant);
  if (quant) {
    quant->q = malloc((size_t)count);
    quant->scale = malloc((size_t)N * sizeof *scale);
  }
  if (!quant || !quant->q || !quant->scale) {
    damo_layer_quant_free(quant);
    return damo_error(DAMO_ERR_NOMEM, "layer '%s': no memory for its int8 kernel", l->name);
  }
  memcpy(quant->q, q, (size_t)count);
  memcpy(quant->scale, scale, (size_t)N * sizeof *scale);
  quant->x_scale = x_scale;
  quant->x_zero_point = x_zero_point;
  quant->packed = damo_qweight_pack(q, K, N, scale, DAMO_QLAYOUT_AUTO);
  if (!quant->packed) {
    damo_layer_quant_free(quant);
    return damo_error_prefix(DAMO_ERR_NOMEM, "layer '%s': ", l->name);
  }
  float *w = damo_tensor_f32(k->value);
  for (int64_t i = 0; i < count; i++) w[i] = scale[i % N] * (float)q[i];
  damo_layer_quant_free(l->quant);
  l->quant = quant;
  return DAMO_OK;
}
