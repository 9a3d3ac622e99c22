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

void bert_int8_free(damo_bert *m) {
  if (!m->q8) return;
  for (int i = 0; i < m->p.n_tensors; i++) {
    free(m->q8[i]);
    free(m->q8_scale[i]);
    damo_qweight_free(m->q8_packed[i]);
  }
  free(m->q8);
  free(m->q8_scale);
  free(m->q8_packed);
  m->q8 = NULL;
  m->q8_scale = NULL;
  m->q8_packed = NULL;
}

damo_status bert_int8_begin(damo_bert *m) {
  const size_t n = (size_t)m->p.n_tensors;
  m->q8 = calloc(n, sizeof *m->q8);
  m->q8_scale = calloc(n, sizeof *m->q8_scale);
  m->q8_packed = calloc(n, sizeof *m->q8_packed);
  if (m->q8 && m->q8_scale && m->q8_packed) return DAMO_OK;
  bert_int8_free(m);
  return damo_error(DAMO_ERR_NOMEM, "bert int8: out of memory");
}

damo_status bert_int8_take(damo_bert *m, int i, const int8_t *q, const float *scale, const char *where) {
  const damo_tensor *t = m->p.values[i];
  const int64_t N = t->shape[0], K = t->shape[1];
  for (int64_t n = 0; n < N; n++)
    if (!(scale[n] > 0.0f) || !isfinite(scale[n]))
      return damo_error(DAMO_ERR_FORMAT, "%s: '%s.scale' %lld is %g (a positive finite scale expected)", where,
                        m->p.names[i], (long long)n, (double)scale[n]);
  for (int64_t k = 0; k < N * K; k++)
    if (q[k] == -128)
      return damo_error(DAMO_ERR_FORMAT, "%s: '%s' value %lld is -128 (symmetric int8 is -127..127)", where,
                        m->p.names[i], (long long)k);
  const int product = bert_int8_tensor(m, i) == 1; /* an embedding table is looked up, never multiplied */
  int8_t *copy = malloc((size_t)(N * K)), *kn = product ? malloc((size_t)(N * K)) : NULL;
  float *scales = malloc((size_t)N * sizeof *scales);
  damo_qweight *packed = NULL;
  int ok = copy && scales && (kn || !product);
  if (ok) {
    memcpy(copy, q, (size_t)(N * K));
    memcpy(scales, scale, (size_t)N * sizeof *scales);
    for (int64_t n = 0; product && n < N; n++) /* nn.Linear's (out, in) to the product's (K x N) */
      for (int64_t k = 0; k < K; k++) kn[k * N + n] = q[n * K + k];
    packed = product ? damo_qweight_pack(kn, K, N, scales, DAMO_QLAYOUT_AUTO) : NULL;
    ok = packed || !product;
  }
  free(kn);
  if (!ok) {
    free(copy);
    free(scales);
    return damo_error(DAMO_ERR_NOMEM, "%s: no memory for '%s' in int8", where, m->p.names[i]);
  }
  float *w = damo_tensor_f32(t);
  for (int64_t k = 0; k < N * K; k++) w[k] = scales[k / K] * (float)q[k];
  free(m->q8[i]);
  free(m->q8_scale[i]);
  damo_qweight_free(m->q8_packed[i]);
  m->q8[i] = copy, m->q8_scale[i] = scales, m->q8_packed[i] = packed;
  return DAMO_OK;
}

damo_status damo_bert_quantize(damo_bert *m) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "bert_quantize: NULL model");
  if (m->q8) return damo_error(DAMO_ERR_INVALID_ARG, "bert_quantize: the model is already int8");
  damo_status st = bert_int8_begin(m);
  for (int i = 0; i < m->p.n_tensors && st == DAMO_OK; i++) {
    if (!bert_int8_tensor(m, i)) continue;
    const damo_tensor *t = m->p.values[i];
    const int64_t N = t->shape[0], K = t->shape[1];
    const float *w = damo_tensor_f32(t);
    int8_t *q = malloc((size_t)(N * K));
    float *scale = malloc((size_t)N * sizeof *scale);
    if (!q || !scale) st = damo_error(DAMO_ERR_NOMEM, "bert_quantize: out of memory");
    for (int64_t n = 0; n < N && st == DAMO_OK; n++) { /* one scale per output feature: max |w| / 127 */
      float amax = 0;
      for (int64_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(w[n * K + k]));
      scale[n] = amax > 0 ? amax / 127.0f : 1.0f;
      for (int64_t k = 0; k < K; k++) {
        float v = nearbyintf(w[n * K + k] / scale[n]);
        q[n * K + k] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
      }
    }
    if (st == DAMO_OK) st = bert_int8_take(m, i, q, scale, "bert_quantize");
    free(q);
    free(scale);
  }
  if (st != DAMO_OK) bert_int8_free(m);
  return st;
}

int damo_bert_is_quantized(const damo_bert *m) { return m && m->q8 != NULL; }

damo_status bert_int8_rewrite(const damo_bert *m, damo_graph *g, int *rewritten) {
  *rewritten = 0;
  if (!m->q8) return DAMO_OK;
  for (int j = 0; j < g->n_nodes; j++) {
    damo_node *n = g->nodes[j];
    if (n->op != DAMO_OP_DENSE || n->in[1]->op != DAMO_OP_PARAM || !n->in[1]->param_value) continue;
    const void *data = n->in[1]->param_value->data;
    for (int i = 0; i < m->p.n_tensors; i++) {
      if (!m->q8_packed[i] || m->p.values[i]->data != data) continue;
      if (n->iparam[0] != DAMO_ACT_NONE && n->iparam[0] != DAMO_ACT_RELU) break; /* stays f32 */
      damo_status st = damo_dense_to_qdense(n, m->q8_packed[i]);
      if (st != DAMO_OK) return damo_error_prefix(st, "bert int8 graph: ");
      ++*rewritten;
      break;
    }
  }
  return DAMO_OK;
}

void bert_int8_json(const damo_bert *m, cJSON *config) {
  if (!m->q8) return;
  cJSON *q = cJSON_AddObjectToObject(config, "quantization");
  cJSON_AddStringToObject(q, "format", "int8");
  cJSON_AddStringToObject(q, "activations", "dynamic");
}

/* param_store_save_dir_with's writer: a quantised tensor as I8 (out, in) and NAME.scale F32 (out,),
 * headers over the model's own memory. */
damo_status bert_int8_writer(const void *ctx, int i, const char *name, damo_tensor_dict *d, int *written) {
  const damo_bert *m = ctx;
  *written = 0;
  if (!m->q8 || !m->q8[i]) return DAMO_OK;
  const damo_tensor *t = m->p.values[i];
  char scale_name[256];
  snprintf(scale_name, sizeof scale_name, "%s.scale", name);
  damo_tensor *q = damo_tensor_wrap(DAMO_I8, 2, t->shape, m->q8[i]);
  damo_status st = q ? damo_tensor_dict_add(d, name, q) : DAMO_ERR_NOMEM;
  damo_tensor *s = st == DAMO_OK ? damo_tensor_wrap(DAMO_F32, 1, t->shape, m->q8_scale[i]) : NULL;
  if (st == DAMO_OK) st = s ? damo_tensor_dict_add(d, scale_name, s) : DAMO_ERR_NOMEM;
  *written = st == DAMO_OK;
  return st == DAMO_OK ? DAMO_OK : damo_error(st, "bert_save: out of memory");
}
