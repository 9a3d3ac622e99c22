/* bert_int8.c - int8 quantisation of BERT's linear layers: every encoder layer's six
 * projections (query, key, value, attention output, intermediate, output) and the classifier
 * get symmetric int8 weights with one scale per output feature. Their inputs are affine uint8,
 *   dynamic (damo_bert_quantize, PyTorch's quantize_dynamic): quantised per batch from each
 *            input's own range inside the product (ops/qlinear.c over kernels/cpu/gemm_int8.c);
 *   static (damo_bert_quantize_static): with a scale and zero point per product calibrated on
 *            training examples run through the f32 classifier node by node (each product's
 *            input seen just before it runs, by kernels' observer: minmax, percentile or
 *            histogram). No range is searched at inference, and the intermediate product,
 *            its GELU in the epilogue, hands the output product its uint8 (damo_int8_chain).
 * The embedding tables are stored the same way (one scale per row) and looked up in f32 from
 * scale * q: weight-only, for the file's size. The pooler stays f32 (its tanh is not fused
 * into the int8 product) and so do the layer norms, the softmax and biases; attention's two
 * products take bf16 operands (f32 sums) unless the options keep them f32: after the int8
 * products they were a third of the pass, and bf16 halves their multiply cost where the CPU
 * has VDPBF16PS (config "attention": "bf16"; absent in older directories: f32).
 *
 * The store's f32 values of a quantised weight become scale * q, so anything reading f32
 * (the masked-LM head, a graph not rewritten) sees the weights the int8 product uses.
 * Classifier inference graphs are built as usual and then rewritten: each dense node whose
 * kernel is a quantised tensor becomes a qdense in place (damo_dense_to_qdense).
 *
 * On disk: NAME as I8 (out, in), as nn.Linear stores it, and NAME.scale as F32 (out,); a
 * static product's BASE.input_scale F32 (1,) and BASE.input_zero_point I32 (1,) (BASE: NAME
 * without ".weight", as a Sequential layer's); config.json gains "quantization": {"format":
 * "int8", "activations": "dynamic", "attention": "bf16"} or "static" with "method" and
 * "calibration_examples". */
#include "models/bert.h"
#include "ops/ops.h"

#include <math.h>
#include <stdio.h>

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

int bert_int8_tensor(const damo_bert *m, int i) {
  static const char *const suffixes[] = {".attention.self.query.weight", ".attention.self.key.weight",
                                         ".attention.self.value.weight", ".attention.output.dense.weight",
                                         ".intermediate.dense.weight", ".output.dense.weight"};
  const char *name = m->p.names[i];
  if (!strcmp(name, "classifier.weight")) return 1;
  if (!strncmp(name, "embeddings.", 11) && ends_with(name, "_embeddings.weight")) return 2; /* tables: stored only */
  if (strncmp(name, "encoder.layer.", 14)) return 0;
  for (size_t k = 0; k < sizeof suffixes / sizeof *suffixes; k++)
    if (ends_with(name, suffixes[k])) return 1;
  return 0;
}

void bert_int8_free(damo_bert *m) { store_int8_free(&m->q8, m->p.n_tensors); }

damo_status bert_int8_begin(damo_bert *m, const int8_config *c) { return store_int8_begin_as(&m->q8, m->p.n_tensors, c); }

/* nn.Linear's (out, in): a scale per row; a table too, looked up only. */
static int8_form form_of(const damo_bert *m, int i) {
  const int k = bert_int8_tensor(m, i);
  return k == 1 ? INT8_OUT_ROWS : k == 2 ? INT8_TABLE : INT8_NONE;
}

static int8_form form_any(const void *m, int i) { return form_of(m, i); }

damo_status bert_int8_take(damo_bert *m, int i, const int8_t *q, const float *scale, const char *where) {
  return store_int8_take(&m->q8, &m->p, i, form_of(m, i), q, scale, where);
}

damo_status damo_bert_quantize(damo_bert *m) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "bert_quantize: NULL model");
  if (m->q8.q) return damo_error(DAMO_ERR_INVALID_ARG, "bert_quantize: the model is already int8");
  damo_status st = store_int8_quantize_all(&m->q8, &m->p, form_any, m, "bert_quantize");
  if (st == DAMO_OK) m->q8.attention = DAMO_MATMUL_BF16;
  return st;
}

int damo_bert_is_quantized(const damo_bert *m) { return m && m->q8.q != NULL; }

damo_status bert_int8_rewrite(const damo_bert *m, damo_graph *g, int n_keep, damo_node *const *keep, int *rewritten) {
  return store_int8_rewrite(&m->q8, &m->p, g, n_keep, keep, 1, "bert", rewritten);
}

void bert_int8_json(const damo_bert *m, cJSON *config) {
  if (m->q8.q) store_int8_json(&m->q8, config);
}

/* ------------------------------------------------------------------ static: calibration */

/* store_int8_calibrate's staging: calibration rows [first, first + n), row r being example
 * r * step (the rows spread over the set). */
typedef struct calibration {
  damo_bert_graph *bg;
  const damo_bert_examples *e;
  int64_t step;
  int32_t *ids, *types, *mask;
} calibration;

static damo_status bind_examples(void *ctx, int64_t first, int64_t n, damo_graph **g) {
  calibration *c = ctx;
  const int64_t T = c->bg->seq_len;
  for (int64_t i = 0; i < n; i++) {
    const int64_t from = (first + i) * c->step * T;
    memcpy(c->ids + i * T, c->e->ids + from, (size_t)T * sizeof *c->ids);
    memcpy(c->types + i * T, c->e->types + from, (size_t)T * sizeof *c->types);
    memcpy(c->mask + i * T, c->e->mask + from, (size_t)T * sizeof *c->mask);
  }
  *g = c->bg->graph;
  return bert_bind_inputs(c->bg, n, c->ids, c->types, c->mask);
}

damo_status damo_bert_quantize_static(damo_bert *m, const damo_bert_examples *e, int64_t seq_len,
                                      const damo_quantize_options *opt) {
  damo_quantize_options o = opt ? *opt : (damo_quantize_options){0};
  damo_status st = damo_quantize_options_resolve(&o, "bert_quantize_static");
  if (st != DAMO_OK) return st;
  if (o.dynamic) {
    if ((st = damo_bert_quantize(m)) == DAMO_OK && o.attention_f32) m->q8.attention = DAMO_MATMUL_F32;
    return st;
  }
  if (!m || !e || !e->ids || !e->types || !e->mask)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert_quantize_static: NULL argument");
  if (m->q8.q) return damo_error(DAMO_ERR_INVALID_ARG, "bert_quantize_static: the model is already int8");
  if (e->n < 1) return damo_error(DAMO_ERR_INVALID_ARG, "bert_quantize_static: no calibration examples");
  const int64_t rows = o.calibration_examples < e->n ? o.calibration_examples : e->n;
  const int64_t batch = o.batch_size < rows ? o.batch_size : rows;
  calibration c = {.e = e, .step = e->n / rows};
  st = damo_bert_classifier_new(m, batch, seq_len, 0, &c.bg);
  if (st != DAMO_OK) return damo_error_prefix(st, "bert_quantize_static: ");
  int32_t *staged = malloc((size_t)(3 * batch * seq_len) * sizeof *staged);
  if (!staged) st = damo_error(DAMO_ERR_NOMEM, "bert_quantize_static: out of memory");
  c.ids = staged, c.types = staged + batch * seq_len, c.mask = staged + 2 * batch * seq_len;
  if (st == DAMO_OK)
    st = store_int8_calibrate(&m->q8, &m->p, form_any, m, rows, batch, bind_examples, &c, &o, "bert_quantize_static");
  if (st == DAMO_OK) m->q8.attention = o.attention_f32 ? DAMO_MATMUL_F32 : DAMO_MATMUL_BF16;
  damo_bert_graph_free(c.bg);
  free(staged);
  return st;
}

/* param_store_save_dir_with's writer: a quantised tensor as I8 (its shape) and NAME.scale F32,
 * headers over the model's own memory. */
damo_status bert_int8_writer(const void *ctx, int i, const char *name, damo_tensor_dict *d, int *written) {
  const damo_bert *m = ctx;
  return store_int8_write(&m->q8, &m->p, i, form_of(m, i), name, d, written);
}
