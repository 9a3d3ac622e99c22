/* bert_int8.c - dynamic int8 quantisation of BERT (PyTorch's quantize_dynamic for its
 * nn.Linear layers): every encoder layer's six projections (query, key, value, attention
 * output, intermediate, output) and the classifier get symmetric int8 weights with one scale
 * per output feature; activations are quantised per batch, from each input's own range, to
 * affine uint8 inside the product (ops/qlinear.c's dynamic qdense over kernels/cpu/gemm_int8.c).
 * The embedding tables are stored the same way (one scale per row) and looked up in f32 from
 * scale * q: weight-only, for the file's size. The pooler stays f32 (its tanh is not fused
 * into the int8 product) and so do the layer norms, attention and biases.
 *
 * The store's f32 values of a quantised weight become scale * q, so anything reading f32
 * (the masked-LM head, a graph not rewritten) sees the weights the int8 product uses.
 * Classifier inference graphs are built as usual and then rewritten: each dense node whose
 * kernel is a quantised tensor becomes a dynamic qdense in place (damo_dense_to_qdense).
 *
 * On disk: NAME as I8 (out, in), as nn.Linear stores it, and NAME.scale as F32 (out,);
 * config.json gains "quantization": {"format": "int8", "activations": "dynamic"}. */
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

damo_status bert_int8_begin(damo_bert *m) { return store_int8_begin(&m->q8, m->p.n_tensors); }

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
  return store_int8_quantize_all(&m->q8, &m->p, form_any, m, "bert_quantize");
}

int damo_bert_is_quantized(const damo_bert *m) { return m && m->q8.q != NULL; }

damo_status bert_int8_rewrite(const damo_bert *m, damo_graph *g, int *rewritten) {
  return store_int8_rewrite(&m->q8, &m->p, g, "bert", rewritten);
}

void bert_int8_json(const damo_bert *m, cJSON *config) {
  if (m->q8.q) store_int8_json(config);
}

/* param_store_save_dir_with's writer: a quantised tensor as I8 (its shape) and NAME.scale F32,
 * headers over the model's own memory. */
damo_status bert_int8_writer(const void *ctx, int i, const char *name, damo_tensor_dict *d, int *written) {
  const damo_bert *m = ctx;
  return store_int8_write(&m->q8, &m->p, i, form_of(m, i), name, d, written);
}
