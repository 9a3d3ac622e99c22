/* quantize.c - post-training int8 quantisation of a model's dense, conv2d, lstm, gru and
 * embedding layers.
 *
 * Kernels: symmetric int8, one scale per output channel (max |w| / 127); embedding tables
 * one per row (weight-only: the lookup reads the dequantised table). Recurrent layers
 * quantise their products' inputs per batch and step (PyTorch's dynamic LSTM). Inputs of
 * dense and conv2d: affine uint8 per tensor, calibrated on training examples run through the
 * f32 model: each target layer's input is observed right before its op runs (the graph is
 * run node by node, since planned buffers are reused later in the pass) by kernels'
 * damo_observer (minmax, percentile or histogram: kernels/cpu/quant_observer.c).
 * With dynamic activations nothing is calibrated: the ops take each batch's own range.
 * Layers of other kinds keep f32 and are named, with the reason, in the config. */
#include "compress/compress.h"

#include <math.h>
#include <stdio.h>

typedef struct observer {
  damo_layer *layer;
  damo_observer seen;
} observer;

/* The position in the graph's order of each target's op, as obs index (-1: none). */
static damo_status map_targets(const damo_graph *g, observer *obs, int n_obs, int *target_at) {
  for (int k = 0; k < g->n_order; k++) {
    const damo_node *n = g->nodes[g->order[k]];
    target_at[k] = -1;
    if (n->op != DAMO_OP_DENSE && n->op != DAMO_OP_CONV2D) continue;
    for (int t = 0; t < n_obs; t++) {
      const size_t len = strlen(obs[t].layer->name);
      if (!strncmp(n->name, obs[t].layer->name, len) && n->name[len] == '/') target_at[k] = t;
    }
  }
  for (int t = 0; t < n_obs; t++) {
    int found = 0;
    for (int k = 0; k < g->n_order; k++) found |= target_at[k] == t;
    if (!found) return damo_error(DAMO_ERR_STATE, "quantize: layer '%s' has no op in the inference graph", obs[t].layer->name);
  }
  return DAMO_OK;
}

/* Runs the calibration rows through the inference graph, observing the targets' inputs. */
static damo_status calibrate_pass(damo_model *m, const damo_tensor *x, int64_t rows, int64_t batch, observer *obs,
                                  int n_obs) {
  damo_model_graph *mg;
  damo_status st = damo_model_graph_get(m, 0, batch, &mg);
  if (st != DAMO_OK) return st;
  damo_graph *g = mg->g;
  int *target_at = malloc((size_t)g->n_order * sizeof *target_at);
  int64_t *idx = malloc((size_t)batch * sizeof *idx);
  if (!target_at || !idx) st = damo_error(DAMO_ERR_NOMEM, "quantize: out of memory");
  if (st == DAMO_OK) st = map_targets(g, obs, n_obs, target_at);
  const int64_t step = x->shape[0] / rows; /* examples spread over the whole set */
  for (int64_t r0 = 0; r0 < rows && st == DAMO_OK; r0 += batch) {
    const int64_t n = rows - r0 < batch ? rows - r0 : batch;
    for (int64_t i = 0; i < n; i++) idx[i] = (r0 + i) * step;
    const damo_tensor *xs[1] = {x};
    st = damo_model_stage_batch(m, mg, xs, NULL, idx, n);
    g->training = 0;
    for (int k = 0; k < g->n_order && st == DAMO_OK; k++) {
      damo_node *n = g->nodes[g->order[k]];
      if (target_at[k] >= 0) damo_observer_see(&obs[target_at[k]].seen, damo_f32(n->in[0]), damo_node_count(n->in[0]));
      st = damo_graph_forward_node(g, n);
    }
  }
  free(target_at);
  free(idx);
  return st;
}

/* Symmetric int8 of slot p of l: one scale per column (kernels, max |w| / 127 over the
 * column) or per row (tables). */
static damo_status quantize_slot(damo_layer *l, int p) {
  const damo_param_slot *k = &l->params[p];
  const int per_row = damo_layer_int8_slot(l, p) == 2;
  const int64_t S = damo_layer_qslot_scales(l, p), count = damo_tensor_numel(k->value), K = count / S;
  /* value j of scale group s sits at s * K + j (rows) or j * S + s (columns) */
  const int64_t group_step = per_row ? K : 1, value_step = per_row ? 1 : S;
  const float *w = damo_tensor_f32(k->value);
  int8_t *q = malloc((size_t)count);
  float *scale = malloc((size_t)S * sizeof *scale);
  damo_status st = q && scale ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "quantize: out of memory");
  for (int64_t n = 0; n < S && st == DAMO_OK; n++) {
    const float *v = w + n * group_step;
    float amax = 0;
    for (int64_t j = 0; j < K; j++) amax = fabsf(v[j * value_step]) > amax ? fabsf(v[j * value_step]) : amax;
    scale[n] = amax > 0 ? amax / 127.0f : 1.0f;
    for (int64_t j = 0; j < K; j++) {
      float r = nearbyintf(v[j * value_step] / scale[n]);
      q[n * group_step + j * value_step] = (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
    }
  }
  if (st == DAMO_OK) st = damo_layer_quantize_slot(l, p, q, scale);
  free(q);
  free(scale);
  return st;
}

/* Every int8 slot of l, then a static input's calibrated quantisation. */
static damo_status quantize_layer(damo_layer *l, float x_scale, int x_zero_point) {
  damo_status st = DAMO_OK;
  for (int p = 0; p < l->n_params && st == DAMO_OK; p++)
    if (damo_layer_int8_slot(l, p)) st = quantize_slot(l, p);
  if (st == DAMO_OK && damo_layer_static_input(l)) st = damo_layer_set_input_quant(l, x_scale, x_zero_point);
  return st;
}

static damo_status check_options(const damo_model *m, const damo_tensor *x, damo_quantize_options *o) {
  if (!m || !o) return damo_error(DAMO_ERR_INVALID_ARG, "quantize: NULL argument");
  if (m->quantization) return damo_error(DAMO_ERR_STATE, "quantize: the model is already int8-quantised; quantise the f32 model");
  if (m->n_inputs != 1) return damo_error(DAMO_ERR_INVALID_ARG, "quantize: models of one input only (this one has %d)", m->n_inputs);
  damo_status st = damo_quantize_options_resolve(o, "quantize");
  if (st != DAMO_OK || o->dynamic) return st;
  if (!x) return damo_error(DAMO_ERR_INVALID_ARG, "quantize: static activations need calibration examples (or dynamic)");
  if (damo_model_input_dtype(m) != DAMO_F32)
    return damo_error(DAMO_ERR_INVALID_ARG, "quantize: the model reads token ids; use dynamic activations");
  const damo_tensor *xs[1] = {x};
  return damo_model_check_data(m, xs, NULL, "quantize: calibration data"); /* shapes, NaN */
}

static void add_name(cJSON *q, const char *list, const char *name) {
  cJSON *a = cJSON_GetObjectItemCaseSensitive(q, list);
  if (!a) a = cJSON_AddArrayToObject(q, list);
  cJSON_AddItemToArray(a, cJSON_CreateString(name));
}

/* config.json's "quantization" object: what is int8 and what stays f32, with why. */
static damo_status record(damo_model *m, const damo_quantize_options *o, int64_t examples) {
  cJSON *q = cJSON_CreateObject(), *layers = cJSON_AddArrayToObject(q, "layers");
  cJSON *floats = cJSON_AddArrayToObject(q, "float_layers");
  cJSON_AddStringToObject(q, "format", "int8");
  cJSON_AddStringToObject(q, "activations", o->dynamic ? "dynamic" : "static");
  cJSON_AddStringToObject(q, "method", o->dynamic ? "none" : damo_calibration_names[o->method]);
  cJSON_AddNumberToObject(q, "calibration_examples", (double)examples);
  for (int i = 0; i < m->n_layers; i++) {
    const damo_layer *l = m->layers[i];
    const char *why = NULL;
    if (l->quant) {
      cJSON_AddItemToArray(layers, cJSON_CreateString(l->name));
      if (l->type == &damo_layer_embedding) add_name(q, "weight_only", l->name);
      else if (!o->dynamic && !damo_layer_static_input(l)) add_name(q, "dynamic_layers", l->name);
    } else if (l->n_params > 0) {
      damo_layer_quantizable(l, &why);
      cJSON *f = cJSON_CreateObject();
      cJSON_AddStringToObject(f, "name", l->name);
      cJSON_AddStringToObject(f, "reason", why ? why : "kept in f32");
      cJSON_AddItemToArray(floats, f);
    }
  }
  if (!cJSON_GetArraySize(layers)) {
    cJSON_Delete(q);
    return damo_error(DAMO_ERR_INVALID_ARG, "quantize: the model has no layer with an int8 form (dense, conv2d, lstm, "
                      "gru, embedding)");
  }
  m->quantization = q;
  return DAMO_OK;
}

damo_status damo_model_quantize(damo_model *m, const damo_tensor *x, const damo_quantize_options *opt) {
  damo_quantize_options o = opt ? *opt : (damo_quantize_options){0};
  damo_status st = check_options(m, x, &o);
  if (st != DAMO_OK || (st = damo_model_build(m, m->seed)) != DAMO_OK) return st;
  observer *obs = calloc((size_t)m->n_layers, sizeof *obs);
  if (!obs) return damo_error(DAMO_ERR_NOMEM, "quantize: out of memory");
  int n_obs = 0; /* the layers with a calibrated input: dense and conv2d */
  for (int i = 0; i < m->n_layers; i++)
    if (damo_layer_quantizable(m->layers[i], NULL) && damo_layer_static_input(m->layers[i])) obs[n_obs++].layer = m->layers[i];
  int64_t examples = 0;
  if (!o.dynamic && n_obs) {
    const int64_t available = x->shape[0];
    int64_t batch = o.batch_size < available ? o.batch_size : available;
    const int64_t rows = o.calibration_examples < available ? o.calibration_examples : available;
    examples = rows;
    for (int pass = 0; pass < (o.method == DAMO_CALIB_MINMAX ? 1 : 2) && st == DAMO_OK; pass++) {
      for (int t = 0; pass == 1 && t < n_obs && st == DAMO_OK; t++)
        if (!damo_observer_count_bins(&obs[t].seen)) st = damo_error(DAMO_ERR_NOMEM, "quantize: out of memory");
      if (st == DAMO_OK) st = calibrate_pass(m, x, rows, batch, obs, n_obs);
    }
  }
  /* Every input range is settled before the first layer changes. */
  float *x_scale = calloc((size_t)n_obs + 1, sizeof *x_scale);
  int *x_zero = calloc((size_t)n_obs + 1, sizeof *x_zero);
  if (st == DAMO_OK && (!x_scale || !x_zero)) st = damo_error(DAMO_ERR_NOMEM, "quantize: out of memory");
  for (int t = 0; t < n_obs && st == DAMO_OK && !o.dynamic; t++) {
    float lo, hi;
    damo_observer_range(&obs[t].seen, o.method, o.percentile, &lo, &hi);
    if (!isfinite(lo) || !isfinite(hi))
      st = damo_error(DAMO_ERR_NUMERIC, "quantize: the input of layer '%s' is not finite on the calibration data",
                      obs[t].layer->name);
    else
      damo_quant_params(lo, hi, &x_scale[t], &x_zero[t]);
  }
  for (int t = 0; t < n_obs && st == DAMO_OK; t++) st = quantize_layer(obs[t].layer, x_scale[t], x_zero[t]);
  for (int i = 0; i < m->n_layers && st == DAMO_OK; i++)
    if (damo_layer_quantizable(m->layers[i], NULL) && !damo_layer_static_input(m->layers[i]))
      st = quantize_layer(m->layers[i], 0.0f, 0);
  if (st == DAMO_OK) st = record(m, &o, examples);
  for (int t = 0; t < n_obs; t++) damo_observer_free(&obs[t].seen);
  free(obs);
  free(x_scale);
  free(x_zero);
  damo_model_graph_release(&m->train); /* rebuilt with the int8 ops */
  damo_model_graph_release(&m->infer);
  return st;
}

int damo_model_is_quantized(const damo_model *m) { return m && m->quantization != NULL; }

int damo_model_layer_precision(const damo_model *m, int i, const char **name, const char **why) {
  if (!m || i < 0 || i >= m->n_layers) return -1;
  const damo_layer *l = m->layers[i];
  if (name) *name = l->name;
  if (why) *why = NULL;
  if (l->quant) return l->type == &damo_layer_embedding ? 2 : 1;
  if (why && m->quantization && l->n_params > 0) damo_layer_quantizable(l, why);
  return 0;
}
