/* store_int8.c - int8 tensors of a named-tensor model's store (store_int8.h). What PyTorch's
 * quantize_dynamic does for nn.Linear: weights symmetric int8 with one scale per output
 * feature, inputs quantised per batch inside the product (ops/qlinear.c's dynamic qdense);
 * or, with each product's input quantisation calibrated (static), what its static
 * quantisation does, the products handing each other uint8 where one feeds the next. The
 * store's f32 values become scale * q, so whatever reads f32 (a head not rewritten, an
 * embedding lookup) sees the weights the int8 products use. */
#include "models/store_int8.h"

#include <math.h>
#include <stdio.h>

damo_status store_int8_begin(store_int8 *s, int n) {
  s->q = calloc((size_t)n, sizeof *s->q);
  s->scale = calloc((size_t)n, sizeof *s->scale);
  s->packed = calloc((size_t)n, sizeof *s->packed);
  if (s->q && s->scale && s->packed) return DAMO_OK;
  store_int8_free(s, n);
  return damo_error(DAMO_ERR_NOMEM, "int8: out of memory");
}

void store_int8_free(store_int8 *s, int n) {
  for (int i = 0; s->q && i < n; i++) {
    free(s->q[i]);
    free(s->scale[i]);
    damo_qweight_free(s->packed[i]);
  }
  free(s->q);
  free(s->scale);
  free(s->packed);
  free(s->x_scale);
  free(s->x_zero);
  s->q = NULL, s->scale = NULL, s->packed = NULL, s->x_scale = NULL, s->x_zero = NULL;
  s->defer_f32 = s->pending = 0;
  s->method = DAMO_CALIB_MINMAX, s->calibration_examples = 0;
  s->attention = DAMO_MATMUL_F32;
}

/* The static arrays (every product without its input's quantisation yet), once. */
static damo_status begin_inputs(store_int8 *s, int n_tensors, const char *where) {
  if (s->x_scale) return DAMO_OK;
  s->x_scale = calloc((size_t)n_tensors, sizeof *s->x_scale);
  s->x_zero = calloc((size_t)n_tensors, sizeof *s->x_zero);
  if (s->x_scale && s->x_zero) return DAMO_OK;
  free(s->x_scale), free(s->x_zero);
  s->x_scale = NULL, s->x_zero = NULL;
  return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", where);
}

damo_status store_int8_set_input(store_int8 *s, int n_tensors, int i, float scale, int zero_point, const char *name,
                                 const char *where) {
  if (!(scale > 0.0f) || !isfinite(scale) || zero_point < 0 || zero_point > 255)
    return damo_error(DAMO_ERR_FORMAT, "%s: the input of '%s' has scale %g and zero point %d (a positive finite scale "
                      "and a zero point in 0..255 expected)", where, name, (double)scale, zero_point);
  damo_status st = begin_inputs(s, n_tensors, where);
  if (st == DAMO_OK) s->x_scale[i] = scale, s->x_zero[i] = zero_point;
  return st;
}

int store_int8_is_static(const store_int8 *s) { return s->x_scale != NULL; }

int store_int8_input_base(const char *name, char *base, size_t size) {
  const size_t len = strlen(name), suffix = strlen(".weight");
  if (len <= suffix || strcmp(name + len - suffix, ".weight") || len - suffix >= size) return 0;
  memcpy(base, name, len - suffix);
  base[len - suffix] = 0;
  return 1;
}

int64_t store_int8_scale_count(const damo_tensor *t, int8_form f) { return t->shape[f == INT8_OUT_COLS ? 1 : 0]; }

/* Value (row r, column c) belongs to scale r, or c for INT8_OUT_COLS. */
static int64_t scale_of(int8_form f, int64_t r, int64_t c) { return f == INT8_OUT_COLS ? c : r; }

static void dequantize_into(float *w, int64_t R, int64_t C, int8_form f, const int8_t *q, const float *scales) {
  for (int64_t r = 0; r < R; r++)
    for (int64_t c = 0; c < C; c++) w[r * C + c] = scales[scale_of(f, r, c)] * (float)q[r * C + c];
}

void store_int8_materialize(store_int8 *s, const param_store *p, int8_form (*form)(const void *model, int i),
                            const void *model) {
  if (!s->q || !s->pending) return;
  for (int i = 0; i < p->n_tensors; i++)
    if (s->q[i])
      dequantize_into(damo_tensor_f32(p->values[i]), p->values[i]->shape[0], p->values[i]->shape[1], form(model, i),
                      s->q[i], s->scale[i]);
  s->pending = 0;
}

damo_status store_int8_take(store_int8 *s, const param_store *p, int i, int8_form f, const int8_t *q,
                            const float *scale, const char *where) {
  const damo_tensor *t = p->values[i];
  const int64_t R = t->shape[0], C = t->shape[1], S = store_int8_scale_count(t, f);
  for (int64_t n = 0; n < S; n++)
    if (!(scale[n] > 0.0f) || !isfinite(scale[n]))
      return damo_error(DAMO_ERR_FORMAT, "%s: '%s.scale' %lld is %g (a positive finite scale expected)", where,
                        p->names[i], (long long)n, (double)scale[n]);
  for (int64_t k = 0; k < R * C; k++)
    if (q[k] == -128)
      return damo_error(DAMO_ERR_FORMAT, "%s: '%s' value %lld is -128 (symmetric int8 is -127..127)", where, p->names[i],
                        (long long)k);
  const int transpose = f == INT8_OUT_ROWS;
  int8_t *copy = malloc((size_t)(R * C)), *kn = transpose ? malloc((size_t)(R * C)) : NULL;
  float *scales = malloc((size_t)S * sizeof *scales);
  damo_qweight *packed = NULL;
  int ok = copy && scales && (kn || !transpose);
  if (ok) {
    memcpy(copy, q, (size_t)(R * C));
    memcpy(scales, scale, (size_t)S * sizeof *scales);
    for (int64_t r = 0; transpose && r < R; r++) /* (out, in) to the product's K x N */
      for (int64_t c = 0; c < C; c++) kn[c * R + r] = q[r * C + c];
    if (f == INT8_OUT_ROWS) packed = damo_qweight_pack(kn, C, R, scales, DAMO_QLAYOUT_AUTO);
    if (f == INT8_OUT_COLS) packed = damo_qweight_pack(q, R, C, scales, DAMO_QLAYOUT_AUTO);
    ok = packed || f == INT8_TABLE;
  }
  free(kn);
  if (!ok) {
    free(copy);
    free(scales);
    return damo_error(DAMO_ERR_NOMEM, "%s: no memory for '%s' in int8", where, p->names[i]);
  }
  if (s->defer_f32) s->pending = 1;
  else dequantize_into(damo_tensor_f32(t), R, C, f, q, scales);
  free(s->q[i]);
  free(s->scale[i]);
  damo_qweight_free(s->packed[i]);
  s->q[i] = copy, s->scale[i] = scales, s->packed[i] = packed;
  return DAMO_OK;
}

damo_status store_int8_quantize(store_int8 *s, const param_store *p, int i, int8_form f, const char *where) {
  const damo_tensor *t = p->values[i];
  const int64_t R = t->shape[0], C = t->shape[1], S = store_int8_scale_count(t, f);
  const float *w = damo_tensor_f32(t);
  int8_t *q = malloc((size_t)(R * C));
  float *scale = calloc((size_t)S, sizeof *scale);
  damo_status st = q && scale ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "%s: out of memory", where);
  for (int64_t r = 0; r < R && st == DAMO_OK; r++) /* max |w| per output feature */
    for (int64_t c = 0; c < C; c++) {
      float *m = &scale[scale_of(f, r, c)];
      *m = fabsf(w[r * C + c]) > *m ? fabsf(w[r * C + c]) : *m;
    }
  for (int64_t n = 0; n < S && st == DAMO_OK; n++) scale[n] = scale[n] > 0 ? scale[n] / 127.0f : 1.0f;
  for (int64_t r = 0; r < R && st == DAMO_OK; r++)
    for (int64_t c = 0; c < C; c++) {
      const float v = nearbyintf(w[r * C + c] / scale[scale_of(f, r, c)]);
      q[r * C + c] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
  if (st == DAMO_OK) st = store_int8_take(s, p, i, f, q, scale, where);
  free(q);
  free(scale);
  return st;
}

damo_status store_int8_quantize_all(store_int8 *s, const param_store *p, int8_form (*form)(const void *model, int i),
                                    const void *model, const char *where) {
  damo_status st = store_int8_begin(s, p->n_tensors);
  for (int i = 0; i < p->n_tensors && st == DAMO_OK; i++)
    if (form(model, i) != INT8_NONE) st = store_int8_quantize(s, p, i, form(model, i), where);
  if (st != DAMO_OK) store_int8_free(s, p->n_tensors);
  return st;
}

damo_status store_int8_rewrite(const store_int8 *s, const param_store *p, damo_graph *g, int n_keep,
                               damo_node *const *keep, int inference_only, const char *what, int *rewritten) {
  *rewritten = 0;
  if (!s->q) return DAMO_OK;
  for (int j = 0; j < g->n_nodes; j++) {
    damo_node *n = g->nodes[j];
    if (n->op != DAMO_OP_DENSE || n->in[1]->op != DAMO_OP_PARAM || !n->in[1]->param_value) continue;
    const void *data = n->in[1]->param_value->data;
    for (int i = 0; i < p->n_tensors; i++) {
      if (!s->packed[i] || p->values[i]->data != data) continue;
      if (n->iparam[0] != DAMO_ACT_NONE && n->iparam[0] != DAMO_ACT_RELU) break; /* stays f32 */
      const float x_scale = s->x_scale ? s->x_scale[i] : 0.0f;
      damo_status st = damo_dense_to_qdense(n, s->packed[i], x_scale, s->x_zero ? s->x_zero[i] : 0);
      if (st != DAMO_OK) return damo_error_prefix(st, "%s int8 graph: ", what);
      ++*rewritten;
      break;
    }
  }
  /* a GELU after an int8 product runs in its epilogue, on the tile still in cache; in a
   * graph that only infers, so does a residual connection's add, the dropout before it gone */
  for (int j = 0; *rewritten && j < g->n_nodes; j++)
    if (g->nodes[j]->op == DAMO_OP_GELU) damo_qdense_absorb_gelu(g, g->nodes[j]);
  if (*rewritten && inference_only) damo_dropout_elide(g, n_keep, keep);
  for (int j = 0; *rewritten && inference_only && s->attention != DAMO_MATMUL_F32 && j < g->n_nodes; j++)
    if (g->nodes[j]->op == DAMO_OP_ATTENTION) damo_attention_set_precision(g->nodes[j], s->attention);
  for (int j = 0; *rewritten && inference_only && j < g->n_nodes; j++)
    if (g->nodes[j]->op == DAMO_OP_ADD) damo_qdense_absorb_add(g, g->nodes[j]);
  damo_status st = *rewritten ? damo_int8_chain(g, n_keep, keep) : DAMO_OK;
  return st == DAMO_OK ? DAMO_OK : damo_error_prefix(st, "%s int8 graph: ", what);
}

damo_status store_int8_write(const store_int8 *s, const param_store *p, int i, int8_form f, const char *name,
                             damo_tensor_dict *d, int *written) {
  *written = 0;
  if (!s->q || !s->q[i]) return DAMO_OK;
  const damo_tensor *t = p->values[i];
  const int64_t S = store_int8_scale_count(t, f);
  char scale_name[256];
  snprintf(scale_name, sizeof scale_name, "%s.scale", name);
  damo_tensor *q = damo_tensor_wrap(DAMO_I8, 2, t->shape, s->q[i]);
  damo_status st = q ? damo_tensor_dict_add(d, name, q) : DAMO_ERR_NOMEM;
  damo_tensor *sc = st == DAMO_OK ? damo_tensor_wrap(DAMO_F32, 1, &S, s->scale[i]) : NULL;
  if (st == DAMO_OK) st = sc ? damo_tensor_dict_add(d, scale_name, sc) : DAMO_ERR_NOMEM;
  if (st == DAMO_OK && s->x_scale && s->x_scale[i] > 0.0f) { /* views of the store's own values */
    char base[224], key[256];
    const int64_t one = 1;
    if (!store_int8_input_base(name, base, sizeof base))
      return damo_error(DAMO_ERR_INVALID_ARG, "saving '%s' in int8: a static product's name must end in .weight", name);
    snprintf(key, sizeof key, "%s.input_scale", base);
    damo_tensor *xs = damo_tensor_wrap(DAMO_F32, 1, &one, &s->x_scale[i]);
    st = xs ? damo_tensor_dict_add(d, key, xs) : DAMO_ERR_NOMEM;
    snprintf(key, sizeof key, "%s.input_zero_point", base);
    damo_tensor *xz = st == DAMO_OK ? damo_tensor_wrap(DAMO_I32, 1, &one, &s->x_zero[i]) : NULL;
    if (st == DAMO_OK) st = xz ? damo_tensor_dict_add(d, key, xz) : DAMO_ERR_NOMEM;
  }
  *written = st == DAMO_OK;
  return st == DAMO_OK ? DAMO_OK : damo_error(st, "saving '%s' in int8: out of memory", name);
}

void store_int8_json(const store_int8 *s, cJSON *config) {
  cJSON *q = cJSON_AddObjectToObject(config, "quantization");
  cJSON_AddStringToObject(q, "format", "int8");
  cJSON_AddStringToObject(q, "activations", s->x_scale ? "static" : "dynamic");
  if (s->attention == DAMO_MATMUL_BF16) cJSON_AddStringToObject(q, "attention", "bf16"); /* absent: f32 */
  if (!s->x_scale) return;
  cJSON_AddStringToObject(q, "method", damo_calibration_names[s->method]);
  cJSON_AddNumberToObject(q, "calibration_examples", (double)s->calibration_examples);
}

damo_status store_int8_read_json(damo_config_obj *q, int8_config *out) {
  static const char *const formats[] = {"int8", NULL}, *const activations[] = {"dynamic", "static", NULL};
  static const char *const precisions[] = {"f32", "bf16", NULL}; /* damo_matmul_precision's order */
  int format = 0, act = 0, method = 0, attention = DAMO_MATMUL_F32;
  int64_t examples = 0;
  damo_status st = damo_config_get_enum(q, "format", formats, DAMO_CFG_REQUIRED, &format);
  if (st == DAMO_OK) st = damo_config_get_enum(q, "activations", activations, DAMO_CFG_REQUIRED, &act);
  if (st == DAMO_OK) st = damo_config_get_enum(q, "attention", precisions, 0, &attention);
  if (st == DAMO_OK && act == 1) st = damo_config_get_enum(q, "method", damo_calibration_names, DAMO_CFG_REQUIRED, &method);
  if (st == DAMO_OK && act == 1)
    st = damo_config_get_int(q, "calibration_examples", 1, INT64_MAX, DAMO_CFG_REQUIRED, &examples);
  if (st == DAMO_OK) st = damo_config_close(q);
  *out = (int8_config){act == 1, (damo_calibration)method, examples, (damo_matmul_precision)attention};
  return st;
}

damo_status store_int8_begin_as(store_int8 *s, int n_tensors, const int8_config *c) {
  damo_status st = store_int8_begin(s, n_tensors);
  if (st == DAMO_OK) s->attention = c->attention;
  if (st == DAMO_OK && c->is_static && (st = begin_inputs(s, n_tensors, "int8")) == DAMO_OK)
    s->method = c->method, s->calibration_examples = c->calibration_examples;
  if (st != DAMO_OK) store_int8_free(s, n_tensors);
  return st;
}

int store_int8_input_suffix(const char *name) {
  static const char *const endings[] = {".input_scale", ".input_zero_point"};
  const size_t len = strlen(name);
  for (int k = 0; k < 2; k++) {
    const size_t e = strlen(endings[k]);
    if (len > e && !strcmp(name + len - e, endings[k])) return (int)e;
  }
  return 0;
}

damo_status store_int8_take_input(store_int8 *s, int n_tensors, int i, const damo_tensor_dict *d, const char *stored,
                                  const char *path) {
  char base[224], scale_name[256], zero_name[256];
  if (!store_int8_input_base(stored, base, sizeof base))
    return damo_error(DAMO_ERR_FORMAT, "%s: static int8 tensor '%s': a product's name ends in .weight", path, stored);
  snprintf(scale_name, sizeof scale_name, "%s.input_scale", base);
  snprintf(zero_name, sizeof zero_name, "%s.input_zero_point", base);
  const damo_tensor *xs = damo_tensor_dict_get(d, scale_name), *xz = damo_tensor_dict_get(d, zero_name);
  if (!xs || xs->dtype != DAMO_F32 || xs->ndim != 1 || xs->shape[0] != 1 || !xz || xz->dtype != DAMO_I32 ||
      xz->ndim != 1 || xz->shape[0] != 1)
    return damo_error(DAMO_ERR_FORMAT, "%s: static int8 tensor '%s' needs '%s' (F32 of shape (1,)) and '%s' (I32 of "
                      "shape (1,))", path, stored, scale_name, zero_name);
  return store_int8_set_input(s, n_tensors, i, damo_tensor_f32(xs)[0], damo_tensor_i32(xz)[0], scale_name, path);
}

damo_status store_int8_check_input(const store_int8 *s, const damo_tensor_dict *d, const char *stored,
                                   const char *path) {
  const int suffix = store_int8_input_suffix(stored);
  char owner[256];
  snprintf(owner, sizeof owner, "%.*s.weight", (int)(strlen(stored) - (size_t)suffix), stored);
  const damo_tensor *t = damo_tensor_dict_get(d, owner);
  if (!t || t->dtype != DAMO_I8 || !s->x_scale)
    return damo_error(DAMO_ERR_FORMAT, "%s: '%s' is the input quantisation of no int8 tensor of a static int8 model "
                      "(config.json's \"quantization\" says \"activations\": \"static\")", path, stored);
  return DAMO_OK;
}

/* ------------------------------------------------------------------ static: calibration */

static int is_product(int8_form f) { return f == INT8_OUT_ROWS || f == INT8_OUT_COLS; }

/* The product tensor a dense or matmul node multiplies its input by, else -1. */
static int product_of(const param_store *p, int8_form (*form)(const void *model, int i), const void *model,
                      const damo_node *n) {
  if ((n->op != DAMO_OP_DENSE && n->op != DAMO_OP_MATMUL) || n->in[1]->op != DAMO_OP_PARAM || !n->in[1]->param_value)
    return -1;
  for (int i = 0; i < p->n_tensors; i++)
    if (p->values[i]->data == n->in[1]->param_value->data) return is_product(form(model, i)) ? i : -1;
  return -1;
}

/* One forward of g, node by node, each product's input seen by its tensor's observer just
 * before the product runs (the planned buffers are reused later in the pass). */
static damo_status observe_forward(const param_store *p, int8_form (*form)(const void *model, int i),
                                   const void *model, damo_graph *g, damo_observer *seen) {
  damo_status st = DAMO_OK;
  g->training = 0;
  for (int k = 0; k < g->n_order && st == DAMO_OK; k++) {
    damo_node *node = g->nodes[g->order[k]];
    if (node->op == DAMO_OP_INPUT || node->op == DAMO_OP_PARAM || node->op == DAMO_OP_CONSTANT) continue;
    const int i = product_of(p, form, model, node);
    if (i >= 0) damo_observer_see(&seen[i], damo_f32(node->in[0]), damo_node_count(node->in[0]));
    st = damo_graph_forward_node(g, node);
  }
  return st;
}

damo_status store_int8_calibrate(store_int8 *s, const param_store *p, int8_form (*form)(const void *model, int i),
                                 const void *model, int64_t rows, int64_t batch, store_int8_bind bind, void *ctx,
                                 const damo_quantize_options *o, const char *where) {
  const int n = p->n_tensors;
  damo_observer *seen = calloc((size_t)n, sizeof *seen);
  damo_status st = seen ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "%s: out of memory", where);
  for (int pass = 0; pass < (o->method == DAMO_CALIB_MINMAX ? 1 : 2) && st == DAMO_OK; pass++) {
    for (int i = 0; pass == 1 && i < n && st == DAMO_OK; i++)
      if (is_product(form(model, i)) && !damo_observer_count_bins(&seen[i]))
        st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", where);
    for (int64_t r0 = 0; r0 < rows && st == DAMO_OK; r0 += batch) {
      damo_graph *g = NULL;
      st = bind(ctx, r0, rows - r0 < batch ? rows - r0 : batch, &g);
      if (st == DAMO_OK) st = observe_forward(p, form, model, g, seen);
    }
  }
  /* Every input range settled before any weight changes. */
  float *x_scale = st == DAMO_OK ? calloc((size_t)n, sizeof *x_scale) : NULL;
  int *x_zero = st == DAMO_OK ? calloc((size_t)n, sizeof *x_zero) : NULL;
  if (st == DAMO_OK && (!x_scale || !x_zero)) st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", where);
  for (int i = 0; i < n && st == DAMO_OK; i++) {
    if (!is_product(form(model, i))) continue;
    float lo, hi;
    damo_observer_range(&seen[i], o->method, o->percentile, &lo, &hi);
    if (!isfinite(lo) || !isfinite(hi))
      st = damo_error(DAMO_ERR_NUMERIC, "%s: the input of '%s' is not finite on the calibration examples", where,
                      p->names[i]);
    else
      damo_quant_params(lo, hi, &x_scale[i], &x_zero[i]);
  }
  for (int i = 0; seen && i < n; i++) damo_observer_free(&seen[i]);
  free(seen);
  if (st == DAMO_OK) st = store_int8_quantize_all(s, p, form, model, where);
  for (int i = 0; i < n && st == DAMO_OK; i++)
    if (is_product(form(model, i))) st = store_int8_set_input(s, n, i, x_scale[i], x_zero[i], p->names[i], where);
  if (st == DAMO_OK) s->method = o->method, s->calibration_examples = rows;
  else store_int8_free(s, n);
  free(x_scale);
  free(x_zero);
  return st;
}
