/* gpt2_int8.c - int8 GPT-2 (models/store_int8.c): each layer's four matrices (c_attn,
 * attn.c_proj, c_fc, mlp.c_proj; Conv1D's (in, out)) become symmetric int8 with one scale per
 * output column, and the tied wte one per row (a row is one output of the logits product, and
 * the lookup reads scale * q); wpe is stored the same way, weight-only. The products' inputs
 * are affine uint8,
 *   dynamic (damo_gpt2_quantize_int8): quantised per batch inside every product (per token
 *            while decoding);
 *   static (damo_gpt2_quantize_int8_static): with a scale and zero point per product
 *            calibrated on windows of training tokens run through the f32 graph node by node
 *            (store_int8_calibrate), in graphs and in the decoder alike; c_fc, its GELU in the
 *            epilogue, hands mlp.c_proj uint8.
 * The products run on the int8 kernels (AMX-INT8 tiles or VPDPBUSD), where Q8_0/Q4_0 blocks
 * (gpt2_blocks.c) widen their weights to multiply f32 activations. Layer norms, attention and
 * biases stay f32.
 *
 * On disk: NAME as I8 in its f32 shape and NAME.scale as F32 (out,) or (rows,); a static
 * product's BASE.input_scale F32 (1,) and BASE.input_zero_point I32 (1,) (BASE: NAME without
 * ".weight"); config.json gains "quantization": {"format": "int8", "activations": "dynamic"}
 * or "static" with "method" and "calibration_examples" (windows). */
#include "models/gpt2.h"

#include <stdio.h>

int8_form gpt2_int8_form(const damo_gpt2 *m, int i) {
  if (i == 0) return INT8_OUT_ROWS; /* wte: lookup and logits */
  if (i == 1) return INT8_TABLE;    /* wpe */
  const int within = (i - 2) % GPT2_TENSORS_PER_LAYER;
  if (i - 2 >= m->config.n_layer * GPT2_TENSORS_PER_LAYER) return INT8_NONE; /* ln_f */
  return within == 2 || within == 4 || within == 8 || within == 10 ? INT8_OUT_COLS : INT8_NONE;
}

static int8_form form_any(const void *m, int i) { return gpt2_int8_form(m, i); }

void gpt2_int8_free(damo_gpt2 *m) { store_int8_free(&m->q8, m->p.n_tensors); }

/* A loaded model's f32 copies are written only when something reads f32 weights (a graph, the
 * parameter accessors), as for blocks: decoding reads the int8 tables alone. */
damo_status gpt2_int8_begin(damo_gpt2 *m, const int8_config *c) {
  damo_status st = store_int8_begin_as(&m->q8, m->p.n_tensors, c);
  m->q8.defer_f32 = 1;
  return st;
}

void gpt2_int8_materialize(damo_gpt2 *m) { store_int8_materialize(&m->q8, &m->p, form_any, m); }

damo_status damo_gpt2_quantize_int8(damo_gpt2 *m) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_quantize_int8: NULL model");
  if (gpt2_on_host(m, "gpt2_quantize_int8") != DAMO_OK) return DAMO_ERR_STATE;
  if (m->q8.q || m->blocks != DAMO_BLOCKS_NONE)
    return damo_error(DAMO_ERR_STATE, "gpt2_quantize_int8: the model is already quantised (%s); quantise the f32 model",
                      m->q8.q ? "int8" : damo_block_format_name(m->blocks));
  return store_int8_quantize_all(&m->q8, &m->p, form_any, m, "gpt2_quantize_int8");
}

int damo_gpt2_is_int8(const damo_gpt2 *m) { return m && m->q8.q != NULL; }

damo_status gpt2_int8_take(damo_gpt2 *m, int i, const damo_tensor_dict *d, int k, const damo_tensor *scale,
                           const char *path) {
  const damo_tensor *t = d->tensors[k];
  const char *stored = d->names[k];
  const int8_form f = gpt2_int8_form(m, i);
  const damo_tensor *want = m->p.values[i];
  char got[64], expected[64];
  if (f == INT8_NONE)
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' has a scale, but dynamic int8 covers wte, wpe and the layers' "
                      "four matrices only", path, stored);
  if (t->dtype != DAMO_I8 || t->ndim != 2 || memcmp(t->shape, want->shape, 2 * sizeof *t->shape))
    return damo_error(DAMO_ERR_FORMAT, "%s: int8 tensor '%s' is %s %s, expected I8 %s", path, stored,
                      damo_dtype_name(t->dtype), damo_shape_string(t->ndim, t->shape, got, sizeof got),
                      damo_shape_string(want->ndim, want->shape, expected, sizeof expected));
  const int64_t S = store_int8_scale_count(want, f);
  if (scale->dtype != DAMO_F32 || scale->ndim != 1 || scale->shape[0] != S)
    return damo_error(DAMO_ERR_FORMAT, "%s: '%s.scale' is %s %s, expected F32 (%lld,)", path, stored,
                      damo_dtype_name(scale->dtype), damo_shape_string(scale->ndim, scale->shape, got, sizeof got),
                      (long long)S);
  damo_status st = store_int8_take(&m->q8, &m->p, i, f, (const int8_t *)t->data, damo_tensor_f32(scale), path);
  if (st != DAMO_OK || !store_int8_is_static(&m->q8) || f == INT8_TABLE) return st;
  return store_int8_take_input(&m->q8, m->p.n_tensors, i, d, stored, path);
}

/* store_int8_calibrate's staging: calibration windows [first, first + n), window r being the
 * T tokens from r * step (the windows spread over the calibration tokens). */
typedef struct calibration {
  damo_gpt2_graph *gg;
  const int32_t *tokens;
  int64_t step;
  int32_t *ids;
} calibration;

static damo_status bind_windows(void *ctx, int64_t first, int64_t n, damo_graph **g) {
  calibration *c = ctx;
  const int64_t T = c->gg->seq_len;
  for (int64_t i = 0; i < n; i++) memcpy(c->ids + i * T, c->tokens + (first + i) * c->step, (size_t)T * sizeof *c->ids);
  *g = c->gg->graph;
  damo_status st = damo_graph_set_batch(*g, n); /* a last batch may be short */
  return st == DAMO_OK ? gpt2_bind_tokens(c->gg, c->ids, NULL) : st;
}

damo_status damo_gpt2_quantize_int8_static(damo_gpt2 *m, const int32_t *tokens, int64_t n_tokens, int64_t seq_len,
                                           const damo_quantize_options *opt) {
  damo_quantize_options o = opt ? *opt : (damo_quantize_options){0};
  damo_status st = damo_quantize_options_resolve(&o, "gpt2_quantize_int8_static");
  if (st != DAMO_OK) return st;
  if (o.dynamic) return damo_gpt2_quantize_int8(m);
  if (!m || !tokens) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_quantize_int8_static: NULL argument");
  if (gpt2_on_host(m, "gpt2_quantize_int8_static") != DAMO_OK) return DAMO_ERR_STATE;
  if (m->q8.q || m->blocks != DAMO_BLOCKS_NONE)
    return damo_error(DAMO_ERR_STATE, "gpt2_quantize_int8_static: the model is already quantised (%s); quantise the "
                      "f32 model", m->q8.q ? "int8" : damo_block_format_name(m->blocks));
  if (seq_len < 1 || seq_len > m->config.n_positions || n_tokens < seq_len)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_quantize_int8_static: %lld calibration tokens make no window of "
                      "%lld (at most n_positions %d)", (long long)n_tokens, (long long)seq_len, m->config.n_positions);
  for (int64_t i = 0; i < n_tokens; i++)
    if (tokens[i] < 0 || tokens[i] >= m->config.vocab_size)
      return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_quantize_int8_static: token %lld is %d, outside [0, %d)",
                        (long long)i, tokens[i], m->config.vocab_size);
  const int64_t windows = n_tokens / seq_len;
  const int64_t rows = o.calibration_examples < windows ? o.calibration_examples : windows;
  const int64_t batch = o.batch_size < rows ? o.batch_size : rows;
  calibration c = {.tokens = tokens, .step = (n_tokens - seq_len) / (rows > 1 ? rows - 1 : 1)};
  st = damo_gpt2_graph_new(m, batch, seq_len, 0, &c.gg);
  if (st != DAMO_OK) return damo_error_prefix(st, "gpt2_quantize_int8_static: ");
  if (!(c.ids = malloc((size_t)(batch * seq_len) * sizeof *c.ids)))
    st = damo_error(DAMO_ERR_NOMEM, "gpt2_quantize_int8_static: out of memory");
  if (st == DAMO_OK)
    st = store_int8_calibrate(&m->q8, &m->p, form_any, m, rows, batch, bind_windows, &c, &o,
                              "gpt2_quantize_int8_static");
  damo_gpt2_graph_free(c.gg);
  free(c.ids);
  return st;
}

damo_status gpt2_int8_writer(const void *ctx, int i, const char *name, damo_tensor_dict *d, int *written) {
  const damo_gpt2 *m = ctx;
  return store_int8_write(&m->q8, &m->p, i, gpt2_int8_form(m, i), name, d, written);
}
