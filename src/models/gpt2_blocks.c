/* gpt2_blocks.c - GPT-2 with block-quantised weights (Q8_0 / Q4_0, src/kernels/cpu/qblocks.c)
 * for decoding: rounding a model, and its directory form.
 *
 * The matrices quantised are every 2-D weight: wte and wpe (rows of n_embd) and each layer's
 * c_attn, attn.c_proj, c_fc and mlp.c_proj. Blocks run along the dimension a product sums
 * over, as the decoder's dot products read them: the layers' matrices (HF Conv1D layout
 * (in, out)) are kept transposed, (out, in), so each output is one contiguous row of blocks.
 * Biases and layer norms stay f32. The model keeps the blocks, which the
 * key/value-cache decoder reads, and its f32 store holds their values exactly, so graphs
 * (evaluate's perplexity) score the very weights the decoder uses; after a load those f32
 * values are written only when something reads them (gpt2_blocks_materialize).
 *
 * On disk (model.safetensors beside config.json's "quantization" object):
 *   NAME         I8 (rows, cols) for q8_0; U8 (rows, cols / 2) for q4_0, nibbles as qblocks.c;
 *                rows, cols = the tensor's shape for wte and wpe, its shape reversed (out, in)
 *                for the layers' matrices
 *   NAME.scale   BF16 (rows, cols / 32), one scale a block
 * A matrix without NAME.scale is read as f32. */
#include "models/gpt2.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>

/* The blocks' rows and columns for tensor i: its shape, reversed for the layers' matrices
 * (tensors 2 on; wte and wpe are 0 and 1). 0 if it is not a matrix of whole blocks. */
static int block_geometry(const damo_gpt2 *m, int i, int64_t *rows, int64_t *cols) {
  const damo_tensor *t = m->p.values[i];
  *rows = *cols = 0;
  if (t->ndim != 2) return 0;
  *rows = i >= 2 ? t->shape[1] : t->shape[0];
  *cols = i >= 2 ? t->shape[0] : t->shape[1];
  return *cols % DAMO_BLOCK_SIZE == 0;
}

/* Tensor i's f32 values from its blocks, a block at a time (no scratch: it cannot fail). */
static void dequantize_into(damo_gpt2 *m, int i) {
  int64_t rows, cols;
  block_geometry(m, i, &rows, &cols);
  float *w = damo_tensor_f32(m->p.values[i]), v[DAMO_BLOCK_SIZE];
  const int64_t bytes = damo_block_format_bytes(m->blocks), per_row = cols / DAMO_BLOCK_SIZE;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t b = 0; b < per_row; b++) {
      const int64_t at = r * per_row + b;
      damo_blocks_dequantize(m->blocks, m->q[i] + at * bytes, m->q_scales[i] + at, 1, DAMO_BLOCK_SIZE, v);
      for (int j = 0; j < DAMO_BLOCK_SIZE; j++) {
        const int64_t c = b * DAMO_BLOCK_SIZE + j; /* (r, c) of the blocks; (c, r) of a transposed tensor */
        w[i >= 2 ? c * rows + r : r * cols + c] = v[j];
      }
    }
}

/* Loading leaves the f32 copies of the quantised matrices unwritten (their pages untouched,
 * so a model that only decodes never holds them); whatever reads f32 weights (graphs, the
 * parameter accessors) writes them first. A fill of a cache, so m is taken as const. */
void gpt2_blocks_materialize(const damo_gpt2 *m) {
  damo_gpt2 *w = (damo_gpt2 *)m;
  if (m && m->q8.pending) gpt2_int8_materialize(w);
  if (!m || !m->blocks_pending) return;
  for (int i = 0; i < m->p.n_tensors; i++)
    if (m->q[i]) dequantize_into(w, i);
  w->blocks_pending = 0;
}

void gpt2_blocks_free(damo_gpt2 *m) {
  if (!m->q) return;
  for (int i = 0; i < m->p.n_tensors; i++) {
    damo_free(m->q[i]);
    damo_free(m->q_scales[i]);
  }
  free(m->q);
  free(m->q_scales);
  m->q = NULL;
  m->q_scales = NULL;
  m->blocks = DAMO_BLOCKS_NONE;
}

/* The block arrays for every tensor (NULL each), the format set. */
static damo_status blocks_alloc(damo_gpt2 *m, damo_block_format f) {
  m->q = calloc((size_t)m->p.n_tensors, sizeof *m->q);
  m->q_scales = calloc((size_t)m->p.n_tensors, sizeof *m->q_scales);
  if (!m->q || !m->q_scales) {
    gpt2_blocks_free(m);
    return damo_error(DAMO_ERR_NOMEM, "gpt2: out of memory for the block tables");
  }
  m->blocks = f;
  return DAMO_OK;
}

/* Room for tensor i's blocks and scales. */
static damo_status blocks_room(damo_gpt2 *m, int i) {
  int64_t rows, cols;
  block_geometry(m, i, &rows, &cols);
  m->q[i] = damo_alloc((size_t)(rows * damo_block_row_bytes(m->blocks, cols)));
  m->q_scales[i] = damo_alloc((size_t)(rows * cols / DAMO_BLOCK_SIZE) * sizeof(float));
  return m->q[i] && m->q_scales[i] ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "gpt2: out of memory for the blocks of '%s'",
                                                            m->p.names[i]);
}

damo_block_format damo_gpt2_block_format(const damo_gpt2 *m) { return m ? m->blocks : DAMO_BLOCKS_NONE; }

damo_status damo_gpt2_quantize(damo_gpt2 *m, damo_block_format f) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_quantize: NULL model");
  if (gpt2_on_host(m, "gpt2_quantize") != DAMO_OK) return DAMO_ERR_STATE;
  if (f != DAMO_BLOCKS_Q8_0 && f != DAMO_BLOCKS_Q4_0)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_quantize: the block format is q8_0 or q4_0");
  if (m->blocks != DAMO_BLOCKS_NONE || m->q8.q)
    return damo_error(DAMO_ERR_STATE, "gpt2_quantize: the model is already quantised (%s); quantise the f32 model",
                      m->q8.q ? "int8" : damo_block_format_name(m->blocks));
  if (m->config.n_embd % DAMO_BLOCK_SIZE)
    return damo_error(DAMO_ERR_UNSUPPORTED, "gpt2_quantize: n_embd %d is not a multiple of the block size %d",
                      m->config.n_embd, DAMO_BLOCK_SIZE);
  const int64_t C = m->config.n_embd;
  float *scratch = damo_alloc((size_t)(4 * C * C) * sizeof(float)); /* the largest layer matrix, transposed */
  damo_status st = scratch ? blocks_alloc(m, f) : damo_error(DAMO_ERR_NOMEM, "gpt2_quantize: out of memory");
  /* Every matrix is rounded before any f32 weight changes: a failure leaves the model as it was. */
  for (int i = 0; i < m->p.n_tensors && st == DAMO_OK; i++) {
    int64_t rows, cols;
    if (!block_geometry(m, i, &rows, &cols)) continue;
    const float *w = damo_tensor_f32(m->p.values[i]);
    for (int64_t r = 0; i >= 2 && r < cols; r++) /* (in, out) -> (out, in) */
      for (int64_t c = 0; c < rows; c++) scratch[c * cols + r] = w[r * rows + c];
    if ((st = blocks_room(m, i)) == DAMO_OK)
      st = damo_blocks_quantize(f, i >= 2 ? scratch : w, rows, cols, m->q[i], m->q_scales[i]);
    if (st != DAMO_OK) st = damo_error_prefix(st, "gpt2_quantize: '%s': ", m->p.names[i]);
  }
  m->blocks_pending = st == DAMO_OK;
  gpt2_blocks_materialize(m);
  if (st != DAMO_OK) gpt2_blocks_free(m);
  damo_free(scratch);
  return st;
}

/* ------------------------------------------------------------------ files */

damo_status gpt2_take_blocks(damo_gpt2 *m, int i, const damo_tensor *t, const damo_tensor *scale, const char *path,
                             const char *stored) {
  damo_tensor *want = m->p.values[i];
  char a[96], b[96], c[96];
  int64_t rows, cols;
  if (!block_geometry(m, i, &rows, &cols))
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' is not a matrix of whole blocks and cannot be block-quantised",
                      path, stored);
  const int64_t q_shape[2] = {rows, damo_block_row_bytes(m->blocks, cols)}, s_shape[2] = {rows, cols / DAMO_BLOCK_SIZE};
  const damo_dtype q_dtype = m->blocks == DAMO_BLOCKS_Q8_0 ? DAMO_I8 : DAMO_U8;
  if (t->dtype != q_dtype || t->ndim != 2 || memcmp(t->shape, q_shape, sizeof q_shape) || scale->dtype != DAMO_F32 ||
      scale->ndim != 2 || memcmp(scale->shape, s_shape, sizeof s_shape))
    return damo_error(DAMO_ERR_SHAPE, "%s: %s tensor '%s' is %s %s with scales %s %s; a %s matrix needs %s %s and "
                      "scales %s", path, damo_block_format_name(m->blocks), stored, damo_dtype_name(t->dtype),
                      damo_shape_string(t->ndim, t->shape, a, sizeof a), damo_dtype_name(scale->dtype),
                      damo_shape_string(scale->ndim, scale->shape, b, sizeof b),
                      damo_shape_string(2, want->shape, c, sizeof c), damo_dtype_name(q_dtype),
                      damo_shape_string(2, q_shape, a, sizeof a), damo_shape_string(2, s_shape, b, sizeof b));
  const float *s = damo_tensor_f32(scale);
  for (int64_t j = 0; j < rows * cols / DAMO_BLOCK_SIZE; j++)
    if (!isfinite(s[j]) || (m->blocks == DAMO_BLOCKS_Q8_0 && s[j] < 0))
      return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s.scale' holds %g at flat index %lld (a %s scale is a finite "
                        "number%s)", path, stored, (double)s[j], (long long)j, damo_block_format_name(m->blocks),
                        m->blocks == DAMO_BLOCKS_Q8_0 ? ", >= 0" : "");
  if (m->blocks == DAMO_BLOCKS_Q8_0) {
    const int8_t *v = t->data;
    for (int64_t j = 0; j < rows * cols; j++)
      if (v[j] == -128)
        return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' holds -128 at flat index %lld (q8_0 values are in "
                          "[-127, 127])", path, stored, (long long)j);
  }
  damo_status st = blocks_room(m, i);
  if (st == DAMO_OK) {
    memcpy(m->q[i], t->data, (size_t)(rows * q_shape[1]));
    memcpy(m->q_scales[i], s, (size_t)(rows * s_shape[1]) * sizeof(float));
    m->blocks_pending = 1; /* the f32 values when something reads them */
  }
  return st;
}

damo_status gpt2_blocks_begin(damo_gpt2 *m, damo_block_format f) {
  return f == DAMO_BLOCKS_NONE ? DAMO_OK : blocks_alloc(m, f);
}

/* The directory's tensors: blocks and their bf16 scales where the model has them, f32 else
 * (refused if not finite, as every save refuses them). */
damo_status gpt2_blocks_dict(const damo_gpt2 *m, const char *dir, damo_tensor_dict *d) {
  char name[192];
  damo_status st = DAMO_OK;
  for (int i = 0; i < m->p.n_tensors && st == DAMO_OK; i++) {
    const damo_tensor *v = m->p.values[i];
    damo_tensor *t;
    if (!m->q[i]) {
      const float *x = damo_tensor_f32(v);
      for (int64_t j = 0, n = damo_tensor_numel(v); j < n; j++)
        if (!isfinite(x[j]))
          return damo_error(DAMO_ERR_NUMERIC, "%s: tensor '%s' holds %s at flat index %lld; a model with non-finite "
                            "weights is not saved", dir, m->p.names[i], isnan(x[j]) ? "NaN" : "Inf", (long long)j);
      t = damo_tensor_wrap(DAMO_F32, v->ndim, v->shape, v->data);
      st = t ? damo_tensor_dict_add(d, m->p.names[i], t) : DAMO_ERR_NOMEM;
      continue;
    }
    int64_t rows, cols;
    block_geometry(m, i, &rows, &cols);
    const int64_t q_shape[2] = {rows, damo_block_row_bytes(m->blocks, cols)}, s_shape[2] = {rows, cols / DAMO_BLOCK_SIZE};
    t = damo_tensor_wrap(m->blocks == DAMO_BLOCKS_Q8_0 ? DAMO_I8 : DAMO_U8, 2, q_shape, m->q[i]);
    st = t ? damo_tensor_dict_add(d, m->p.names[i], t) : DAMO_ERR_NOMEM;
    damo_tensor *s32 = st == DAMO_OK ? damo_tensor_wrap(DAMO_F32, 2, s_shape, m->q_scales[i]) : NULL;
    damo_tensor *s16 = s32 ? damo_tensor_to_bf16(s32) : NULL; /* exact: the scales are bf16 values */
    damo_tensor_free(s32);
    snprintf(name, sizeof name, "%s.scale", m->p.names[i]);
    if (st == DAMO_OK) st = s16 ? damo_tensor_dict_add(d, name, s16) : DAMO_ERR_NOMEM;
    else damo_tensor_free(s16);
  }
  return st;
}

/* config.json's "quantization" object. */
void gpt2_blocks_json(const damo_gpt2 *m, cJSON *config) {
  cJSON *q = cJSON_AddObjectToObject(config, "quantization");
  if (!q) return;
  cJSON_AddStringToObject(q, "format", damo_block_format_name(m->blocks));
  cJSON_AddNumberToObject(q, "block_size", DAMO_BLOCK_SIZE);
  cJSON_AddStringToObject(q, "scale_dtype", "bf16");
  cJSON *f32 = cJSON_AddArrayToObject(q, "float_tensors");
  for (int i = 0; f32 && i < m->p.n_tensors; i++)
    if (!m->q[i] && m->p.values[i]->ndim == 2) cJSON_AddItemToArray(f32, cJSON_CreateString(m->p.names[i]));
}
