/* gpt2_cache.c - GPT-2 inference one position at a time with a key/value cache.
 *
 * The graphs of gpt2.c recompute every position; decoding needs only the new one: its
 * query attends to the keys and values of all earlier positions, which never change, so
 * each layer keeps them (max_len x C each) and a step costs one row through every layer
 * plus the (V x C) logits product. The math is the graph's (pre-LN block, tanh GELU,
 * causal softmax attention scaled by 1/sqrt(head_dim), logits = ln_f(x) wte^T); only the
 * summation order differs, so logits agree to float rounding.
 *
 * Decoding one row is a matrix-vector product per weight: memory-bound, each weight read
 * once per token. With the model's inference precision set to bf16 the cache keeps its own
 * bfloat16 copy of the matrices (wte and each block's four) and reads half the bytes,
 * widening each value to f32 (a shift) before the f32 multiply-add. A block-quantised model
 * (gpt2_blocks.c) is decoded from its Q8_0/Q4_0 blocks instead, widened in registers by the
 * qblocks kernels: a quarter or an eighth of the f32 bytes. A dynamic int8 model
 * (gpt2_int8.c) quantises each token's row to uint8 and multiplies on the int8 kernels. */
#include "kernels/kernels.h"
#include "models/gpt2.h"
#include "ops/ops.h"

#include <float.h>
#include <math.h>

struct damo_gpt2_cache {
  const damo_gpt2 *model;
  int64_t max_len, len;
  float *keys, *values; /* n_layer x max_len x C each */
  float *x, *normed, *qkv, *att, *hidden, *scores, *logits;
  uint16_t *w16; /* bf16 inference: wte (V x C), then per layer c_attn, attn.c_proj, c_fc, mlp.c_proj; or NULL */
  void *q8_rows; /* an int8 model: the token's quantised row for the int8 products */
};

/* Where matrix `which` (0 c_attn, 1 attn.c_proj, 2 c_fc, 3 mlp.c_proj) of layer l starts in w16. */
static int64_t w16_offset(const damo_gpt2_config *c, int l, int which) {
  const int64_t C = c->n_embd, per_layer = 12 * C * C, before[4] = {0, 3 * C * C, 4 * C * C, 8 * C * C};
  return (int64_t)c->vocab_size * C + l * per_layer + before[which];
}

/* The bf16 copy of the matrices the decoder reads (tensor indices as in gpt2.c's order). */
static uint16_t *bf16_weights(const damo_gpt2 *m) {
  const damo_gpt2_config *c = &m->config;
  uint16_t *w = damo_alloc((size_t)w16_offset(c, c->n_layer, 0) * sizeof *w);
  if (!w) return NULL;
  const int64_t C = c->n_embd, V = c->vocab_size;
  const float *wte = damo_tensor_f32(m->p.values[0]);
  for (int64_t i = 0; i < V * C; i++) w[i] = damo_bf16_from_f32(wte[i]);
  const int slot[4] = {2, 4, 8, 10}; /* weight tensors within a layer's 12 */
  for (int l = 0; l < c->n_layer; l++)
    for (int k = 0; k < 4; k++) {
      const damo_tensor *t = m->p.values[2 + l * GPT2_TENSORS_PER_LAYER + slot[k]];
      const float *src = damo_tensor_f32(t);
      uint16_t *dst = w + w16_offset(c, l, k);
      for (int64_t i = 0, n = damo_tensor_numel(t); i < n; i++) dst[i] = damo_bf16_from_f32(src[i]);
    }
  return w;
}

void damo_gpt2_cache_free(damo_gpt2_cache *c) {
  if (!c) return;
  damo_free(c->keys);
  damo_free(c->values);
  damo_free(c->x);
  damo_free(c->w16);
  damo_free(c->q8_rows);
  free(c);
}

damo_status damo_gpt2_cache_new(const damo_gpt2 *m, int64_t max_len, damo_gpt2_cache **out) {
  if (!m || !out) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_cache_new: NULL argument");
  if (gpt2_on_host(m, "gpt2_cache_new") != DAMO_OK) return DAMO_ERR_STATE;
  *out = NULL;
  if (max_len < 1 || max_len > m->config.n_positions)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_cache_new: max_len %lld must be in [1, n_positions %d]",
                      (long long)max_len, m->config.n_positions);
  damo_gpt2_cache *c = calloc(1, sizeof *c);
  if (!c) return damo_error(DAMO_ERR_NOMEM, "gpt2_cache_new: out of memory");
  c->model = m;
  c->max_len = max_len;
  int64_t C = m->config.n_embd, L = m->config.n_layer, V = m->config.vocab_size;
  size_t kv_bytes = (size_t)(L * max_len * C) * sizeof(float);
  c->keys = damo_alloc(kv_bytes);
  c->values = damo_alloc(kv_bytes);
  /* One scratch allocation, each piece rounded to 16 floats. */
  int64_t pieces[7] = {C, C, 3 * C, C, 4 * C, max_len, V}, total = 0;
  for (int i = 0; i < 7; i++) total += (pieces[i] + 15) / 16 * 16;
  c->x = damo_alloc((size_t)total * sizeof(float));
  const int bf16 = m->inference_dtype == DAMO_BF16 && m->blocks == DAMO_BLOCKS_NONE && !m->q8.q;
  if (bf16) c->w16 = bf16_weights(m);
  size_t q8_bytes = 0;
  for (int i = 0; m->q8.q && i < m->p.n_tensors; i++) {
    const size_t b = m->q8.packed[i] ? damo_q8_scratch_bytes(1, m->q8.packed[i]) : 0;
    q8_bytes = b > q8_bytes ? b : q8_bytes;
  }
  if (q8_bytes) c->q8_rows = damo_alloc(q8_bytes);
  if (!c->keys || !c->values || !c->x || (bf16 && !c->w16) || (q8_bytes && !c->q8_rows)) {
    damo_gpt2_cache_free(c);
    return damo_error(DAMO_ERR_NOMEM, "gpt2_cache_new: out of memory for a %lld-position cache", (long long)max_len);
  }
  float **slots[7] = {&c->x, &c->normed, &c->qkv, &c->att, &c->hidden, &c->scores, &c->logits};
  float *p = c->x;
  for (int i = 0; i < 7; i++) {
    *slots[i] = p;
    p += (pieces[i] + 15) / 16 * 16;
  }
  *out = c;
  return DAMO_OK;
}

void damo_gpt2_cache_reset(damo_gpt2_cache *c) {
  if (c) c->len = 0;
}
int64_t damo_gpt2_cache_length(const damo_gpt2_cache *c) { return c ? c->len : 0; }

static const float *param(const damo_gpt2 *m, int index) { return damo_tensor_f32(m->p.values[index]); }

/* y = layer_norm(x) over n values, biased variance (as torch.nn.LayerNorm). */
static void layer_norm_row(const float *x, const float *gamma, const float *beta, float eps, int64_t n, float *y) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < n; i++) mean += x[i];
  mean /= (double)n;
  for (int64_t i = 0; i < n; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
  float inv_std = (float)(1.0 / sqrt(var / (double)n + eps));
  for (int64_t i = 0; i < n; i++) y[i] = gamma[i] * (((float)(x[i] - mean)) * inv_std) + beta[i];
}

/* y[r][j0 .. j0 + cols) += sum_k x[r][k] w[k][0 .. cols) for n rows x, W's K rows of stride ld:
 * one column block of n GEMVs as axpys over W's rows, four rows per pass so each y is loaded and
 * stored a quarter as often. Each 4-row strip of W is applied to every row while it is in L1,
 * so n sequences decoded together read each weight once; a row's sums are formed the same way
 * whatever n is (one sequence is n = 1), so its result does not depend on its companions.
 * Compiled per SIMD level; the OpenMP loops below call them. */
DAMO_MULTIVERSION static void axpy_rows_f32_many(float *const *x, int n, const float *w, int64_t ld, int64_t K,
                                                 int64_t j0, int64_t cols, float *const *y) {
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const float *restrict w0 = w + k * ld, *restrict w1 = w0 + ld, *restrict w2 = w1 + ld, *restrict w3 = w2 + ld;
    for (int r = 0; r < n; r++) {
      const float x0 = x[r][k], x1 = x[r][k + 1], x2 = x[r][k + 2], x3 = x[r][k + 3];
      float *restrict yr = y[r] + j0;
      for (int64_t j = 0; j < cols; j++) yr[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j];
    }
  }
  for (; k < K; k++)
    for (int r = 0; r < n; r++) {
      const float xk = x[r][k], *restrict wk = w + k * ld;
      float *restrict yr = y[r] + j0;
      for (int64_t j = 0; j < cols; j++) yr[j] += xk * wk[j];
    }
}
DAMO_MULTIVERSION static void axpy_rows_bf16_many(float *const *x, int n, const uint16_t *w, int64_t ld, int64_t K,
                                                  int64_t j0, int64_t cols, float *const *y) {
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const uint16_t *restrict w0 = w + k * ld, *restrict w1 = w0 + ld, *restrict w2 = w1 + ld, *restrict w3 = w2 + ld;
    for (int r = 0; r < n; r++) {
      const float x0 = x[r][k], x1 = x[r][k + 1], x2 = x[r][k + 2], x3 = x[r][k + 3];
      float *restrict yr = y[r] + j0;
      for (int64_t j = 0; j < cols; j++)
        yr[j] += x0 * damo_f32_from_bf16(w0[j]) + x1 * damo_f32_from_bf16(w1[j]) + x2 * damo_f32_from_bf16(w2[j]) +
                 x3 * damo_f32_from_bf16(w3[j]);
    }
  }
  for (; k < K; k++)
    for (int r = 0; r < n; r++) {
      const float xk = x[r][k];
      const uint16_t *restrict wk = w + k * ld;
      float *restrict yr = y[r] + j0;
      for (int64_t j = 0; j < cols; j++) yr[j] += xk * damo_f32_from_bf16(wk[j]);
    }
}

/* One weight matrix as the decoder reads it: f32, its bf16 copy, its blocks, or int8. */
typedef struct weights {
  const float *f32;
  const uint16_t *bf16;
  const uint8_t *q;
  const float *scales;
  damo_block_format format;
  const damo_qweight *int8; /* with the cache's scratch for the quantised row */
  void *rows;
  float x_scale; /* a static int8 model's calibrated input quantisation (0: each row's own range) */
  int x_zero;
} weights;

static weights weights_of(const damo_gpt2_cache *c, int index, const uint16_t *w16) {
  const damo_gpt2 *m = c->model;
  weights w = {.f32 = damo_tensor_f32(m->p.values[index]), .bf16 = w16};
  if (m->q && m->q[index]) w.q = m->q[index], w.scales = m->q_scales[index], w.format = m->blocks, w.bf16 = NULL;
  if (m->q8.q && m->q8.packed[index]) w.int8 = m->q8.packed[index], w.rows = c->q8_rows, w.bf16 = NULL;
  if (w.int8 && m->q8.x_scale) w.x_scale = m->q8.x_scale[index], w.x_zero = m->q8.x_zero[index];
  return w;
}

/* y[r] = x[r] W + b for n rows (n caches stepping together; one sequence: n = 1), W (K, N)
 * row-major: threads over column blocks when it is large (each thread streams its own columns
 * of W once for all rows). Blocks are stored transposed, (N, K): then each thread takes a range
 * of outputs, each a dot product along one contiguous row. int8 rows go one by one: each is
 * quantised from its own range (static: the calibrated one), as when it is decoded alone. */
static void linear_rows(float *const *x, weights w, const float *b, int64_t K, int64_t N, float *const *y, int n) {
  if (w.int8) { /* row by row; the product threads over its tiles */
    for (int r = 0; r < n; r++) damo_q8_product(x[r], 1, w.int8, w.x_scale, w.x_zero, b, w.rows, y[r], N);
    return;
  }
  if (w.q) {
    const int64_t rows = 128, n_chunks = (N + rows - 1) / rows;
#pragma omp parallel for schedule(static) if (K * N >= (1 << 18)) num_threads(damo_threads())
    for (int64_t i = 0; i < n_chunks; i++) {
      const int64_t n0 = i * rows, n1 = n0 + rows < N ? n0 + rows : N;
      for (int r = 0; r < n; r++) {
        damo_blocks_row_dots(w.format, x[r], w.q, w.scales, K, n0, n1, y[r]);
        for (int64_t j = n0; j < n1; j++) y[r][j] += b[j];
      }
    }
    return;
  }
  const int64_t block = 256, n_blocks = (N + block - 1) / block;
#pragma omp parallel for schedule(static) if (K * N >= (1 << 18)) num_threads(damo_threads())
  for (int64_t nb = 0; nb < n_blocks; nb++) {
    const int64_t n0 = nb * block, cols = n0 + block < N ? block : N - n0;
    for (int r = 0; r < n; r++) memcpy(y[r] + n0, b + n0, (size_t)cols * sizeof(float));
    if (w.bf16) axpy_rows_bf16_many(x, n, w.bf16 + n0, N, K, n0, cols, y);
    else axpy_rows_f32_many(x, n, w.f32 + n0, N, K, n0, cols, y);
  }
}

/* Dot products of the tied head, each summed in eight lanes (lane l takes elements l, l + 8,
 * ...; then the tail; then the lanes in order), written with GCC's vector type so that D dots
 * run as D independent chains of 8-wide adds (one chain waits on its own latency). Each dot
 * keeps that order whatever D is, so a logit is the same however it is reached. */
typedef float v8f __attribute__((vector_size(32)));

/* Eight values into a vector (bf16 widened first); macros, not functions: a function returning
 * a 32-byte vector would have a different ABI in the clones without AVX. */
#define LOAD8_F32(v, p) memcpy(&(v), (p), sizeof(v8f))
#define LOAD8_BF16(v, p)                                                                                 \
  do {                                                                                                   \
    float f_[8];                                                                                         \
    for (int l_ = 0; l_ < 8; l_++) f_[l_] = damo_f32_from_bf16((p)[l_]);                                 \
    memcpy(&(v), f_, sizeof(v8f));                                                                       \
  } while (0)
static inline float scalar_f32(const float *p) { return *p; }
static inline float scalar_bf16(const uint16_t *p) { return damo_f32_from_bf16(*p); }

/* out[d] = a[d] . b[d] for d < D (a: table rows, b: activations). */
#define DOTS(NAME, T, D, LOAD, SCALAR)                                                                   \
  static inline void NAME(const T *const *a, const float *const *b, int64_t C, float *out) {              \
    v8f acc[D];                                                                                          \
    for (int d = 0; d < D; d++) acc[d] = (v8f){0, 0, 0, 0, 0, 0, 0, 0};                                  \
    int64_t i = 0;                                                                                       \
    for (; i + 8 <= C; i += 8)                                                                           \
      for (int d = 0; d < D; d++) {                                                                      \
        v8f av, bv;                                                                                      \
        LOAD(av, a[d] + i);                                                                              \
        LOAD8_F32(bv, b[d] + i);                                                                         \
        acc[d] += av * bv;                                                                               \
      }                                                                                                  \
    for (int d = 0; d < D; d++) {                                                                        \
      float sum = 0;                                                                                     \
      for (int64_t k = i; k < C; k++) sum += SCALAR(a[d] + k) * b[d][k];                                 \
      for (int l = 0; l < 8; l++) sum += acc[d][l];                                                      \
      out[d] = sum;                                                                                      \
    }                                                                                                    \
  }
DOTS(dots4_f32, float, 4, LOAD8_F32, scalar_f32)
DOTS(dots1_f32, float, 1, LOAD8_F32, scalar_f32)
DOTS(dots4_bf16, uint16_t, 4, LOAD8_BF16, scalar_bf16)
DOTS(dots1_bf16, uint16_t, 1, LOAD8_BF16, scalar_bf16)

/* logits[r][v] = table[v] . x[r] over table rows [v0, v1) for n rows of x: one row, four
 * table rows at a time; several, each table row read once and dotted with every x (four at a
 * time) while it is in L1. */
#define ROW_DOTS(NAME, T, DOTS4, DOTS1)                                                                  \
  DAMO_MULTIVERSION static void NAME(float *const *x, int n, const T *table, int64_t v0, int64_t v1, int64_t C, \
                                     float *const *logits) {                                             \
    const T *a[4];                                                                                       \
    const float *b[4];                                                                                   \
    int64_t v = v0;                                                                                      \
    if (n == 1)                                                                                          \
      for (; v + 4 <= v1; v += 4) {                                                                      \
        for (int d = 0; d < 4; d++) a[d] = table + (v + d) * C, b[d] = x[0];                             \
        DOTS4(a, b, C, logits[0] + v);                                                                   \
      }                                                                                                  \
    for (; v < v1; v++) {                                                                                \
      int r = 0;                                                                                         \
      for (; r + 4 <= n; r += 4) {                                                                       \
        float out[4];                                                                                    \
        for (int d = 0; d < 4; d++) a[d] = table + v * C, b[d] = x[r + d];                               \
        DOTS4(a, b, C, out);                                                                             \
        for (int d = 0; d < 4; d++) logits[r + d][v] = out[d];                                           \
      }                                                                                                  \
      for (; r < n; r++) {                                                                               \
        a[0] = table + v * C, b[0] = x[r];                                                               \
        DOTS1(a, b, C, logits[r] + v);                                                                   \
      }                                                                                                  \
    }                                                                                                    \
  }
ROW_DOTS(row_dots_f32, float, dots4_f32, dots1_f32)
ROW_DOTS(row_dots_bf16, uint16_t, dots4_bf16, dots1_bf16)

/* The tied head for n rows: logits[r] = table x[r] for table (V, C), each block of the table
 * applied to every row while it is in cache (int8: row by row, as linear_rows). */
static void tied_logits(float *const *x, weights table, int64_t V, int64_t C, float *const *logits, int n) {
  if (table.int8) {
    for (int r = 0; r < n; r++)
      damo_q8_product(x[r], 1, table.int8, table.x_scale, table.x_zero, NULL, table.rows, logits[r], V);
    return;
  }
  const int64_t block = 512, n_blocks = (V + block - 1) / block;
#pragma omp parallel for schedule(static) if (V * C >= (1 << 18)) num_threads(damo_threads())
  for (int64_t vb = 0; vb < n_blocks; vb++) {
    const int64_t v0 = vb * block, v1 = v0 + block < V ? v0 + block : V;
    if (table.q) {
      for (int r = 0; r < n; r++) damo_blocks_row_dots(table.format, x[r], table.q, table.scales, C, v0, v1, logits[r]);
    } else if (table.bf16) {
      row_dots_bf16(x, n, table.bf16, v0, v1, C, logits);
    } else {
      row_dots_f32(x, n, table.f32, v0, v1, C, logits);
    }
  }
}

/* Causal attention of the query at position t over cached keys/values 0..t of one layer. */
DAMO_MULTIVERSION static void attend(const damo_gpt2_cache *c, const float *q, const float *keys, const float *values,
                                     int64_t t, float *out) {
  int64_t C = c->model->config.n_embd, H = c->model->config.n_head, D = C / H;
  float scale = (float)(1.0 / sqrt((double)D));
  float *s = c->scores;
  for (int64_t h = 0; h < H; h++) {
    /* the query . key dots four keys at a time, as the tied head's (vectorised lanes) */
    const float *qh = q + h * D, *b[4] = {qh, qh, qh, qh}, *a[4];
    int64_t j = 0;
    for (; j + 4 <= t + 1; j += 4) {
      for (int d = 0; d < 4; d++) a[d] = keys + (j + d) * C + h * D;
      dots4_f32(a, b, D, s + j);
    }
    for (; j <= t; j++) {
      a[0] = keys + j * C + h * D;
      dots1_f32(a, b, D, s + j);
    }
    float m = -FLT_MAX;
    for (j = 0; j <= t; j++) {
      s[j] *= scale;
      m = s[j] > m ? s[j] : m;
    }
    float sum = 0;
    for (int64_t j = 0; j <= t; j++) {
      s[j] = expf(s[j] - m);
      sum += s[j];
    }
    float *o = out + h * D;
    for (int64_t d = 0; d < D; d++) o[d] = 0;
    for (int64_t j = 0; j <= t; j++) {
      const float *v = values + j * C + h * D;
      float p = s[j] / sum;
      for (int64_t d = 0; d < D; d++) o[d] += p * v[d];
    }
  }
}

/* Row r of embedding table `index` (0 wte, 1 wpe): from its blocks or int8 values when it has
 * them (the f32 copy may not be written), else the f32 row. */
static void embedding_row(const damo_gpt2 *m, int index, int64_t r, float *out) {
  const int64_t C = m->config.n_embd;
  if (m->q && m->q[index]) {
    const int64_t row = damo_block_row_bytes(m->blocks, C), nb = C / DAMO_BLOCK_SIZE;
    damo_blocks_dequantize(m->blocks, m->q[index] + r * row, m->q_scales[index] + r * nb, 1, C, out);
  } else if (m->q8.q && m->q8.q[index]) { /* int8 tables: a scale per row */
    for (int64_t c = 0; c < C; c++) out[c] = m->q8.scale[index][r] * (float)m->q8.q[index][r * C + c];
  } else {
    memcpy(out, param(m, index) + r * C, (size_t)C * sizeof *out);
  }
}

/* tanh GELU in place over n values. */
static void gelu_tanh(float *h, int64_t n) {
  const float k0 = 0.7978845608028654f; /* sqrt(2 / pi) */
  for (int64_t i = 0; i < n; i++) h[i] = 0.5f * h[i] * (1.0f + tanhf(k0 * (h[i] + 0.044715f * h[i] * h[i] * h[i])));
}

enum { STEP_MAX = 256 };

damo_status damo_gpt2_cache_step_many(damo_gpt2_cache *const *caches, const int32_t *ids, int n, const float **logits) {
  if (!caches || !ids || n < 1 || n > STEP_MAX)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_cache_step: needs 1 to %d caches and their ids", STEP_MAX);
  for (int r = 0; r < n; r++) {
    const damo_gpt2_cache *c = caches[r];
    if (!c) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_cache_step: NULL cache");
    if (c->model != caches[0]->model)
      return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_cache_step: caches %d and 0 belong to different models", r);
    for (int q = 0; q < r; q++)
      if (caches[q] == c) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_cache_step: cache %d is given twice", r);
    if (c->len >= c->max_len)
      return damo_error(DAMO_ERR_STATE, "gpt2_cache_step: the cache is full (%lld positions)", (long long)c->max_len);
    if (ids[r] < 0 || ids[r] >= c->model->config.vocab_size)
      return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_cache_step: id %d is outside the vocabulary [0, %d)", ids[r],
                        c->model->config.vocab_size);
  }
  const damo_gpt2_cache *c0 = caches[0];
  const damo_gpt2 *m = c0->model;
  const damo_gpt2_config *cfg = &m->config;
  const int64_t C = cfg->n_embd;
  const float eps = cfg->layer_norm_epsilon;
  float *x[STEP_MAX], *normed[STEP_MAX], *qkv[STEP_MAX], *att[STEP_MAX], *hidden[STEP_MAX], *out[STEP_MAX];
  for (int r = 0; r < n; r++) {
    damo_gpt2_cache *c = caches[r];
    x[r] = c->x, normed[r] = c->normed, qkv[r] = c->qkv, att[r] = c->att, hidden[r] = c->hidden, out[r] = c->logits;
    embedding_row(m, 0, ids[r], c->x);
    embedding_row(m, 1, c->len, c->normed);
    for (int64_t i = 0; i < C; i++) c->x[i] += c->normed[i];
  }
  for (int l = 0; l < cfg->n_layer; l++) {
    const int base = 2 + l * GPT2_TENSORS_PER_LAYER;
    const uint16_t *w16[4] = {NULL, NULL, NULL, NULL}; /* every cache holds the same bf16 copy: read the first's */
    for (int k = 0; k < 4 && c0->w16; k++) w16[k] = c0->w16 + w16_offset(cfg, l, k);
    for (int r = 0; r < n; r++) layer_norm_row(x[r], param(m, base + 0), param(m, base + 1), eps, C, normed[r]);
    linear_rows(normed, weights_of(c0, base + 2, w16[0]), param(m, base + 3), C, 3 * C, qkv, n);
    for (int r = 0; r < n; r++) {
      damo_gpt2_cache *c = caches[r];
      const int64_t t = c->len;
      float *keys = c->keys + (int64_t)l * c->max_len * C, *values = c->values + (int64_t)l * c->max_len * C;
      memcpy(keys + t * C, c->qkv + C, (size_t)C * sizeof(float));
      memcpy(values + t * C, c->qkv + 2 * C, (size_t)C * sizeof(float));
      attend(c, c->qkv, keys, values, t, c->att);
    }
    linear_rows(att, weights_of(c0, base + 4, w16[1]), param(m, base + 5), C, C, normed, n);
    for (int r = 0; r < n; r++) {
      for (int64_t i = 0; i < C; i++) x[r][i] += normed[r][i];
      layer_norm_row(x[r], param(m, base + 6), param(m, base + 7), eps, C, normed[r]);
    }
    linear_rows(normed, weights_of(c0, base + 8, w16[2]), param(m, base + 9), C, 4 * C, hidden, n);
    for (int r = 0; r < n; r++) gelu_tanh(hidden[r], 4 * C);
    linear_rows(hidden, weights_of(c0, base + 10, w16[3]), param(m, base + 11), 4 * C, C, normed, n);
    for (int r = 0; r < n; r++)
      for (int64_t i = 0; i < C; i++) x[r][i] += normed[r][i];
  }
  const int last = m->p.n_tensors - 2;
  for (int r = 0; r < n; r++) layer_norm_row(x[r], param(m, last), param(m, last + 1), eps, C, normed[r]);
  tied_logits(normed, weights_of(c0, 0, c0->w16), cfg->vocab_size, C, out, n);
  for (int r = 0; r < n; r++) {
    caches[r]->len++;
    if (logits) logits[r] = caches[r]->logits;
  }
  return DAMO_OK;
}

damo_status damo_gpt2_cache_step(damo_gpt2_cache *c, int32_t id, const float **logits) {
  return damo_gpt2_cache_step_many(&c, &id, 1, logits);
}
