/* test_gpt2_blocks.c - quantised GPT-2. Weight-only blocks (Q8_0, Q4_0): the block kernels
 * against their definition on every SIMD path, a quantised GPT-2's key/value-cache decoding
 * against its graph on the same (dequantised) weights, the directory round trip, and bad
 * input. Dynamic int8: decoder and graph against f32 and each other (the inputs really
 * quantised), the directory (I8 with per-column or per-row scales), refusals, bad files. */
#include "harness.h"
#include "kernels/kernels.h"
#include "tmpfiles.h"

#include <damo.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t lcg = 99;
static float uniform(void) { /* in [-1, 1) */
  lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((lcg >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static const damo_block_format formats[2] = {DAMO_BLOCKS_Q8_0, DAMO_BLOCKS_Q4_0};

/* A matrix with a zero block, a block with one outlier and a block of one sign. */
static float *test_matrix(int64_t rows, int64_t cols) {
  float *w = malloc((size_t)(rows * cols) * sizeof *w);
  for (int64_t i = 0; i < rows * cols; i++) w[i] = uniform() * 0.1f;
  for (int i = 0; i < 32; i++) w[i] = 0;              /* block 0: zeros */
  w[32 + 5] = 3.0f;                                    /* block 1: an outlier */
  for (int i = 64; i < 96; i++) w[i] = fabsf(w[i]);    /* block 2: positive only */
  w[96 + 31] = -0.5f;                                  /* block 3: a negative extreme */
  return w;
}

static void test_round_trip(void) {
  enum { ROWS = 5, COLS = 96 };
  float *w = test_matrix(ROWS, COLS), back[ROWS * COLS], scales[ROWS * COLS / 32];
  uint8_t q[ROWS * COLS];
  for (int fi = 0; fi < 2; fi++) {
    const damo_block_format f = formats[fi];
    CHECK(damo_blocks_quantize(f, w, ROWS, COLS, q, scales) == DAMO_OK);
    damo_blocks_dequantize(f, q, scales, ROWS, COLS, back);
    int bad_error = 0, bad_scale = 0;
    for (int b = 0; b < ROWS * COLS / 32; b++) {
      const float s = scales[b];
      bad_scale += damo_f32_from_bf16(damo_bf16_from_f32(s)) != s || (f == DAMO_BLOCKS_Q8_0 && s < 0);
      float amax = 0;
      for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(w[b * 32 + i]));
      for (int i = 0; i < 32; i++) {
        const float x = w[b * 32 + i], err = fabsf(back[b * 32 + i] - x), r = s != 0 ? x / s : 0;
        /* half a step, except Q4_0's clipped side (x / d in (7.5, 8]) which may lose a whole one */
        const float bound = (f == DAMO_BLOCKS_Q4_0 && r > 7.5f ? 1.0f : 0.5f) * fabsf(s) * 1.0001f;
        bad_error += err > bound;
      }
      if (amax == 0) bad_scale += s != 0;
    }
    CHECK_MSG(bad_error == 0, "%s: %d values off by more than their bound", damo_block_format_name(f), bad_error);
    CHECK(bad_scale == 0);
    CHECK(back[0] == 0 && back[31] == 0);
    CHECK_NEAR(back[37], 3.0, 3.0 / 127);   /* the outlier keeps its value, to a step */
    CHECK_NEAR(back[127], -0.5, 0.5 / 127); /* so does a negative extreme */
    if (f == DAMO_BLOCKS_Q8_0) {
      int minus128 = 0;
      for (int i = 0; i < ROWS * COLS; i++) minus128 += ((int8_t *)q)[i] == -128;
      CHECK(minus128 == 0);
    }
    /* Quantising the dequantised values gives the same blocks back. */
    uint8_t q2[ROWS * COLS];
    float s2[ROWS * COLS / 32];
    CHECK(damo_blocks_quantize(f, back, ROWS, COLS, q2, s2) == DAMO_OK);
    int differ = 0;
    for (int b = 0; b < ROWS * COLS / 32; b++) differ += scales[b] != s2[b];
    for (int i = 0; i < damo_block_row_bytes(f, COLS) * ROWS; i++) differ += q[i] != q2[i];
    CHECK_MSG(differ == 0, "%s: %d scales or bytes differ", damo_block_format_name(f), differ);
  }
  w[40] = NAN;
  CHECK(damo_blocks_quantize(DAMO_BLOCKS_Q8_0, w, ROWS, COLS, q, scales) == DAMO_ERR_NUMERIC);
  CHECK(damo_blocks_quantize(DAMO_BLOCKS_Q8_0, w, ROWS, 48, q, scales) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_blocks_quantize(DAMO_BLOCKS_NONE, w, ROWS, COLS, q, scales) == DAMO_ERR_INVALID_ARG);
  free(w);
}

/* Row dots on every SIMD path the CPU has, against double sums of the dequantised values;
 * rows outside [r0, r1) untouched. */
static void test_row_dots(void) {
  enum { ROWS = 23, COLS = 160 };
  float *w = test_matrix(ROWS, COLS), deq[ROWS * COLS], scales[ROWS * COLS / 32], x[COLS], out[ROWS];
  uint8_t q[ROWS * COLS];
  for (int i = 0; i < COLS; i++) x[i] = uniform();
  const damo_simd_level original = damo_simd_level_get();
  for (int fi = 0; fi < 2; fi++) {
    const damo_block_format f = formats[fi];
    CHECK(damo_blocks_quantize(f, w, ROWS, COLS, q, scales) == DAMO_OK);
    damo_blocks_dequantize(f, q, scales, ROWS, COLS, deq);
    for (int level = DAMO_SIMD_SCALAR; level <= DAMO_SIMD_AVX512; level++) {
      if (damo_simd_level_force((damo_simd_level)level) != (damo_simd_level)level) continue;
      for (int r = 0; r < ROWS; r++) out[r] = -99.0f;
      damo_blocks_row_dots(f, x, q, scales, COLS, 2, 21, out); /* four-row groups and a tail */
      int bad = out[0] != -99.0f || out[1] != -99.0f || out[21] != -99.0f || out[22] != -99.0f;
      for (int r = 2; r < 21; r++) {
        double ref = 0, mag = 0;
        for (int c = 0; c < COLS; c++) ref += (double)deq[r * COLS + c] * x[c], mag += fabs(deq[r * COLS + c] * x[c]);
        bad += fabs(out[r] - ref) > 1e-5 * mag + 1e-7;
      }
      CHECK_MSG(bad == 0, "%s on SIMD level %d: %d rows wrong", damo_block_format_name(f), level, bad);
    }
  }
  damo_simd_level_force(original);
  free(w);
}

/* ------------------------------------------------------------------ GPT-2 */

static const damo_gpt2_config tiny = {2, 2, 64, 16, 101, 1e-5f};

static void cache_logits(damo_gpt2 *m, const int32_t *ids, int T, float *out) {
  damo_gpt2_cache *c = NULL;
  CHECK(damo_gpt2_cache_new(m, T, &c) == DAMO_OK);
  for (int t = 0; c && t < T; t++) {
    const float *row = NULL;
    CHECK(damo_gpt2_cache_step(c, ids[t], &row) == DAMO_OK);
    if (row) memcpy(out + t * tiny.vocab_size, row, (size_t)tiny.vocab_size * sizeof *out);
  }
  damo_gpt2_cache_free(c);
}

static float max_abs_diff(const float *a, const float *b, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
  return m;
}

static int64_t file_bytes(const char *dir) {
  char path[600];
  struct stat s;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  return stat(path, &s) == 0 ? (int64_t)s.st_size : -1;
}

/* Decoding from blocks equals the graph on the dequantised weights; q8 stays near f32. */
static void test_gpt2_decode(void) {
  enum { T = 12 };
  const int64_t V = tiny.vocab_size;
  int32_t ids[T];
  for (int t = 0; t < T; t++) ids[t] = (t * 37 + 5) % (int)V;
  damo_gpt2 *f32 = NULL;
  CHECK(damo_gpt2_new(&tiny, 3, &f32) == DAMO_OK);
  if (!f32) return;
  float *ref = malloc((size_t)(T * V) * sizeof *ref), *got = malloc((size_t)(T * V) * sizeof *got),
        *graph = malloc((size_t)(T * V) * sizeof *graph);
  cache_logits(f32, ids, T, ref);
  float q8_error = 0;
  for (int fi = 0; fi < 2; fi++) {
    damo_gpt2 *m = NULL;
    CHECK(damo_gpt2_new(&tiny, 3, &m) == DAMO_OK);
    if (!m) break;
    CHECK(damo_gpt2_block_format(m) == DAMO_BLOCKS_NONE);
    CHECK_MSG(damo_gpt2_quantize(m, formats[fi]) == DAMO_OK, "%s", damo_last_error());
    CHECK(damo_gpt2_block_format(m) == formats[fi]);
    cache_logits(m, ids, T, got);
    damo_gpt2_graph *g = NULL;
    CHECK(damo_gpt2_graph_new(m, 1, T, 0, &g) == DAMO_OK);
    if (g && damo_gpt2_graph_forward(g, ids, NULL, NULL) == DAMO_OK)
      memcpy(graph, damo_gpt2_graph_logits(g), (size_t)(T * V) * sizeof *graph);
    damo_gpt2_graph_free(g);
    const float to_graph = max_abs_diff(got, graph, T * V), to_f32 = max_abs_diff(got, ref, T * V);
    float ref_max = 0;
    for (int64_t i = 0; i < T * V; i++) ref_max = fmaxf(ref_max, fabsf(ref[i]));

    CHECK_MSG(to_graph < 2e-5f, "%s: cache vs graph on the same weights differ by %g", damo_block_format_name(formats[fi]),
              to_graph);
    /* random weights of std 0.02: logits of size ~0.1; 8-bit blocks move them a little, 4-bit more */
    CHECK_MSG(to_f32 > 0 && to_f32 < (fi == 0 ? 0.02f : 0.2f) * ref_max, "%s vs f32: %g (logits up to %g)",
              damo_block_format_name(formats[fi]), to_f32, ref_max);
    if (fi == 0) q8_error = to_f32;
    else CHECK(to_f32 > q8_error);
    /* the inference precision is not read once the weights are blocks */
    CHECK(damo_gpt2_set_inference_precision(m, DAMO_BF16) == DAMO_OK);
    cache_logits(m, ids, T, graph);
    CHECK(memcmp(graph, got, (size_t)(T * V) * sizeof *got) == 0);
    damo_gpt2_free(m);
  }
  free(ref), free(got), free(graph);
  damo_gpt2_free(f32);
}

/* Several caches stepped together give each row exactly what stepping it alone gives, for
 * every form the decoder reads (f32, bf16 copy, Q8_0, Q4_0, dynamic int8); caches at
 * different lengths; bad batches are refused and move nothing. */
static void test_step_many(void) {
  enum { N = 3, ROUNDS = 4 };
  const int64_t V = tiny.vocab_size;
  static const int prompt_len[N] = {3, 5, 1};
  for (int form = 0; form < 5; form++) {
    damo_gpt2 *m = NULL;
    CHECK(damo_gpt2_new(&tiny, 21, &m) == DAMO_OK);
    if (!m) return;
    damo_status st = form == 1 ? damo_gpt2_set_inference_precision(m, DAMO_BF16)
                     : form == 2 ? damo_gpt2_quantize(m, DAMO_BLOCKS_Q8_0)
                     : form == 3 ? damo_gpt2_quantize(m, DAMO_BLOCKS_Q4_0)
                     : form == 4 ? damo_gpt2_quantize_int8(m)
                                 : DAMO_OK;
    CHECK_MSG(st == DAMO_OK, "form %d: %s", form, damo_last_error());
    damo_gpt2_cache *together[N] = {NULL}, *alone[N] = {NULL};
    for (int r = 0; r < N; r++) {
      CHECK(damo_gpt2_cache_new(m, 16, &together[r]) == DAMO_OK && damo_gpt2_cache_new(m, 16, &alone[r]) == DAMO_OK);
      for (int t = 0; t < prompt_len[r]; t++) {
        const int32_t id = (int32_t)((r * 11 + t * 7 + 1) % V);
        CHECK(damo_gpt2_cache_step(together[r], id, NULL) == DAMO_OK && damo_gpt2_cache_step(alone[r], id, NULL) == DAMO_OK);
      }
    }
    int same = 1;
    for (int k = 0; k < ROUNDS; k++) {
      int32_t ids[N];
      const float *rows[N] = {NULL}, *row = NULL;
      for (int r = 0; r < N; r++) ids[r] = (int32_t)((k * 13 + r * 29 + 3) % V);
      CHECK(damo_gpt2_cache_step_many(together, ids, N, rows) == DAMO_OK);
      for (int r = 0; r < N; r++) {
        CHECK(damo_gpt2_cache_step(alone[r], ids[r], &row) == DAMO_OK);
        same &= rows[r] && row && memcmp(rows[r], row, (size_t)V * sizeof *row) == 0;
      }
    }
    CHECK_MSG(same, "form %d: a row stepped with others differs from the same row alone", form);
    for (int r = 0; r < N; r++) CHECK(damo_gpt2_cache_length(together[r]) == prompt_len[r] + ROUNDS);
    /* refused batches: a cache twice, another model's cache, a full cache (nothing moves) */
    damo_gpt2_cache *twice[2] = {together[0], together[0]}, *mixed[2] = {together[0], NULL}, *full = NULL;
    const int32_t ids2[2] = {1, 2};
    EXPECT_FAIL(damo_gpt2_cache_step_many(twice, ids2, 2, NULL), DAMO_ERR_INVALID_ARG, "given twice");
    damo_gpt2 *other = NULL;
    CHECK(damo_gpt2_new(&tiny, 22, &other) == DAMO_OK && damo_gpt2_cache_new(other, 4, &mixed[1]) == DAMO_OK);
    EXPECT_FAIL(damo_gpt2_cache_step_many(mixed, ids2, 2, NULL), DAMO_ERR_INVALID_ARG, "different models");
    CHECK(damo_gpt2_cache_new(m, 1, &full) == DAMO_OK && damo_gpt2_cache_step(full, 1, NULL) == DAMO_OK);
    damo_gpt2_cache *with_full[2] = {together[1], full};
    EXPECT_FAIL(damo_gpt2_cache_step_many(with_full, ids2, 2, NULL), DAMO_ERR_STATE, "cache is full");
    CHECK(damo_gpt2_cache_length(together[1]) == prompt_len[1] + ROUNDS);
    EXPECT_FAIL(damo_gpt2_cache_step_many(together, ids2, 0, NULL), DAMO_ERR_INVALID_ARG, "1 to 256");
    damo_gpt2_cache_free(full);
    damo_gpt2_cache_free(mixed[1]);
    damo_gpt2_free(other);
    for (int r = 0; r < N; r++) {
      damo_gpt2_cache_free(together[r]);
      damo_gpt2_cache_free(alone[r]);
    }
    damo_gpt2_free(m);
  }
}

static void test_gpt2_files(void) {
  damo_gpt2 *m = NULL, *back = NULL;
  CHECK(damo_gpt2_new(&tiny, 4, &m) == DAMO_OK);
  if (!m) return;
  char f32_dir[512];
  snprintf(f32_dir, sizeof f32_dir, "%s", tmp_path("f32"));
  CHECK(damo_gpt2_save(m, f32_dir) == DAMO_OK);
  for (int fi = 0; fi < 2; fi++) {
    damo_gpt2 *q = NULL;
    CHECK(damo_gpt2_load(f32_dir, &q) == DAMO_OK);
    if (!q) break;
    CHECK(damo_gpt2_quantize(q, formats[fi]) == DAMO_OK);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", tmp_path(fi ? "q4" : "q8"));
    CHECK_MSG(damo_gpt2_save(q, dir) == DAMO_OK, "%s", damo_last_error());
    CHECK_MSG(damo_gpt2_load(dir, &back) == DAMO_OK, "%s", damo_last_error());
    if (back) {
      CHECK(damo_gpt2_block_format(back) == formats[fi]);
      /* decoding first: a loaded model decodes from its blocks before its f32 weights exist */
      enum { T = 6 };
      int32_t ids[T] = {1, 7, 100, 3, 3, 50};
      float a[T * 101], b[T * 101];
      cache_logits(q, ids, T, a);
      cache_logits(back, ids, T, b);
      CHECK(memcmp(a, b, sizeof a) == 0);
      int64_t n1, n2;
      const float *p1 = damo_gpt2_param_block(q, &n1), *p2 = damo_gpt2_param_block(back, &n2);
      CHECK(n1 == n2 && memcmp(p1, p2, (size_t)n1 * sizeof(float)) == 0);
      EXPECT_FAIL(damo_gpt2_quantize(back, DAMO_BLOCKS_Q8_0), DAMO_ERR_STATE, "already quantised");
      CHECK(memcmp(p2, damo_gpt2_param_block(back, NULL), (size_t)n1 * sizeof(float)) == 0);
      EXPECT_FAIL(damo_gpt2_save_as(back, tmp_path("bf16"), DAMO_BF16), DAMO_ERR_INVALID_ARG, "saved as its blocks");
      damo_token_data *data = NULL;
      int32_t tokens[400];
      for (int i = 0; i < 400; i++) tokens[i] = (i * 13) % 101;
      CHECK(damo_token_data_from_ids(tokens, 400, 0.1, &data) == DAMO_OK);
      damo_gpt2_train_options o = damo_gpt2_train_defaults();
      o.batch_size = 1, o.seq_len = 8, o.steps = 1;
      damo_gpt2_trainer *t = NULL;
      if (data) EXPECT_FAIL(damo_gpt2_trainer_new(back, data, &o, &t), DAMO_ERR_UNSUPPORTED, "train the f32 model");
      CHECK(t == NULL);
      damo_token_data_free(data);
      damo_gpt2_free(back);
      back = NULL;
    }
    /* sizes: weights 1 + 2/32 bytes (q8) or 0.5 + 2/32 (q4) against 4; the f32 biases and
     * norms weigh more in a model this small than at 124M (26.6% and 14.1% there) */
    const double ratio = (double)file_bytes(dir) / (double)file_bytes(f32_dir);
    CHECK_MSG(fi == 0 ? ratio < 0.30 && ratio > 0.26 : ratio < 0.17 && ratio > 0.13, "%s file is %.3f of f32",
              damo_block_format_name(formats[fi]), ratio);
    damo_gpt2_free(q);
  }
  damo_gpt2_config odd = {1, 2, 48, 8, 50, 1e-5f};
  damo_gpt2 *o = NULL;
  CHECK(damo_gpt2_new(&odd, 1, &o) == DAMO_OK);
  if (o) {
    int64_t n;
    float *p = damo_gpt2_param_block(o, &n), first = p[0];
    EXPECT_FAIL(damo_gpt2_quantize(o, DAMO_BLOCKS_Q4_0), DAMO_ERR_UNSUPPORTED, "n_embd 48");
    CHECK(damo_gpt2_block_format(o) == DAMO_BLOCKS_NONE && p[0] == first);
  }
  damo_gpt2_free(o);
  EXPECT_FAIL(damo_gpt2_quantize(m, DAMO_BLOCKS_NONE), DAMO_ERR_INVALID_ARG, "q8_0 or q4_0");
  damo_gpt2_free(m);
}

/* A copy of tmpdir/q8 (or q4) as tmpdir/name with its tensors edited and its config's
 * "quantization" object replaced (NULL: kept). */
static const char *variant(const char *from, const char *name, void (*edit)(damo_tensor_dict *), const char *quant) {
  const char *dir = tmp_path(name);
  char path[600];
  mkdir(dir, 0755);
  damo_tensor_dict *d = NULL;
  snprintf(path, sizeof path, "%s/model.safetensors", tmp_path(from));
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  if (!d) return dir;
  if (edit) edit(d);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
  damo_tensor_dict_free(d);
  char cfg[1024];
  snprintf(cfg, sizeof cfg, "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_head\": 2, \"n_embd\": 64, \"n_positions\": "
           "16, \"vocab_size\": 101%s%s}", quant && !quant[0] ? "" : ", \"quantization\": ",
           quant ? quant : "{\"format\": \"q8_0\", \"block_size\": 32}");
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_bytes(path, cfg, strlen(cfg));
  return dir;
}

static void nan_scale(damo_tensor_dict *d) { damo_tensor_f32(damo_tensor_dict_get(d, "h.1.mlp.c_fc.weight.scale"))[3] = NAN; }
static void negative_scale(damo_tensor_dict *d) { damo_tensor_f32(damo_tensor_dict_get(d, "wte.weight.scale"))[0] = -1; }
static void minus128(damo_tensor_dict *d) { ((int8_t *)damo_tensor_dict_get(d, "wpe.weight")->data)[9] = -128; }
static void stray_scale(damo_tensor_dict *d) {
  int64_t shape[2] = {2, 2};
  damo_tensor_dict_add(d, "h.9.attn.c_attn.weight.scale", damo_tensor_new(DAMO_F32, 2, shape));
}
static void bias_scale(damo_tensor_dict *d) {
  int64_t shape[2] = {2, 2};
  damo_tensor_dict_add(d, "h.0.ln_1.bias.scale", damo_tensor_new(DAMO_F32, 2, shape));
}
static void short_blocks(damo_tensor_dict *d) { /* half the rows */
  const int64_t shape[2] = {32, 64};
  damo_tensor *t = damo_tensor_dict_get(d, "h.0.attn.c_proj.weight"), *c = damo_tensor_new(DAMO_I8, 2, shape);
  memcpy(c->data, t->data, 32 * 64);
  for (int i = 0; i < d->count; i++)
    if (d->tensors[i] == t) damo_tensor_free(t), d->tensors[i] = c;
}

static damo_tensor *copy_of(const damo_tensor *t) {
  damo_tensor *c = damo_tensor_new(t->dtype, t->ndim, t->shape);
  if (c) memcpy(c->data, t->data, damo_tensor_nbytes(t));
  return c;
}

/* A quantised directory may keep some matrices f32 (a file not written by damo): here wte
 * and wpe as f32 (their blocks' values) beside the layers' blocks. The decoder reads each
 * matrix in the form it has, to the same logits. */
static void test_mixed_file(void) {
  damo_gpt2 *q = NULL, *m = NULL;
  CHECK(damo_gpt2_load(tmp_path("q8"), &q) == DAMO_OK);
  if (!q) return;
  char path[600], dir[512];
  snprintf(dir, sizeof dir, "%s", tmp_path("mixed"));
  mkdir(dir, 0755);
  damo_tensor_dict *d = NULL, *mixed = damo_tensor_dict_new();
  snprintf(path, sizeof path, "%s/model.safetensors", tmp_path("q8"));
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  for (int i = 0; d && i < d->count; i++) {
    const char *name = d->names[i];
    const int embedding = !strncmp(name, "wte.", 4) || !strncmp(name, "wpe.", 4);
    if (embedding && strstr(name, ".scale")) continue;
    damo_tensor_dict_add(mixed, name, copy_of(embedding ? damo_gpt2_param(q, name) : d->tensors[i]));
  }
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(damo_safetensors_save(path, mixed, NULL, 0) == DAMO_OK);
  const char *cfg = "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_head\": 2, \"n_embd\": 64, \"n_positions\": 16, "
                    "\"vocab_size\": 101, \"quantization\": {\"format\": \"q8_0\", \"float_tensors\": [\"wte.weight\", "
                    "\"wpe.weight\"]}}";
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_bytes(path, cfg, strlen(cfg));
  CHECK_MSG(damo_gpt2_load(dir, &m) == DAMO_OK, "%s", damo_last_error());
  if (m) {
    enum { T = 5 };
    int32_t ids[T] = {4, 99, 0, 17, 17};
    float a[T * 101], b[T * 101];
    cache_logits(q, ids, T, a);
    cache_logits(m, ids, T, b);
    CHECK_MSG(max_abs_diff(a, b, T * 101) < 1e-5f, "%g", max_abs_diff(a, b, T * 101));
  }
  damo_tensor_dict_free(d);
  damo_tensor_dict_free(mixed);
  damo_gpt2_free(m);
  damo_gpt2_free(q);
}

static void test_bad_files(void) {
  damo_gpt2 *m = NULL;
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "nan_scale", nan_scale, NULL), &m), DAMO_ERR_FORMAT,
              "'h.1.mlp.c_fc.weight.scale' holds nan");
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "neg_scale", negative_scale, NULL), &m), DAMO_ERR_FORMAT, ">= 0");
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "minus128", minus128, NULL), &m), DAMO_ERR_FORMAT, "holds -128");
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "stray", stray_scale, NULL), &m), DAMO_ERR_FORMAT,
              "scales a tensor 'h.9.attn.c_attn.weight'");
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "bias_scale", bias_scale, NULL), &m), DAMO_ERR_FORMAT,
              "'h.0.ln_1.bias' is not a matrix of whole blocks");
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "short", short_blocks, NULL), &m), DAMO_ERR_SHAPE,
              "'h.0.attn.c_proj.weight' is i8 (32, 64)");
  /* q4 blocks (U8) read as q8 (I8) */
  EXPECT_FAIL(damo_gpt2_load(variant("q4", "q4_as_q8", NULL, NULL), &m), DAMO_ERR_SHAPE, "needs i8");
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "q5", NULL, "{\"format\": \"q5_0\"}"), &m), DAMO_ERR_FORMAT, "q5_0");
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "block64", NULL, "{\"format\": \"q8_0\", \"block_size\": 64}"), &m),
              DAMO_ERR_FORMAT, "block_size");
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "extra", NULL, "{\"format\": \"q8_0\", \"zero_point\": 1}"), &m),
              DAMO_ERR_FORMAT, "zero_point");
  EXPECT_FAIL(damo_gpt2_load(variant("q8", "noformat", NULL, "{}"), &m), DAMO_ERR_FORMAT, "format");
  /* blocks in a file whose config says nothing of quantisation: not f32 tensors, refused */
  const char *plain = variant("q8", "plain", NULL, "");
  CHECK(damo_gpt2_load(plain, &m) != DAMO_OK && strstr(damo_last_error(), "plain/model.safetensors"));
  CHECK(m == NULL);
}

/* ------------------------------------------------------------------ dynamic int8 GPT-2
 * (damo_gpt2_quantize_int8): the decoder quantises each token's row on its own, the graph the
 * window's rows together; both on the int8 products. */

static void graph_logits(damo_gpt2 *m, const int32_t *ids, int T, float *out) {
  damo_gpt2_graph *g = NULL;
  CHECK_MSG(damo_gpt2_graph_new(m, 1, T, 0, &g) == DAMO_OK, "%s", damo_last_error());
  if (g && damo_gpt2_graph_forward(g, ids, NULL, NULL) == DAMO_OK)
    memcpy(out, damo_gpt2_graph_logits(g), (size_t)(T * tiny.vocab_size) * sizeof *out);
  damo_gpt2_graph_free(g);
}

/* Decoder and graph of the int8 model near the f32 model's logits and near each other, and
 * unlike the f32 graph on the same dequantised weights (the inputs really are quantised). */
static void test_int8_decode_and_graph(void) {
  enum { T = 12 };
  const int64_t V = tiny.vocab_size;
  int32_t ids[T];
  for (int t = 0; t < T; t++) ids[t] = (t * 37 + 5) % (int)V;
  damo_gpt2 *f32 = NULL, *m = NULL;
  CHECK(damo_gpt2_new(&tiny, 3, &f32) == DAMO_OK && damo_gpt2_new(&tiny, 3, &m) == DAMO_OK);
  if (!f32 || !m) return;
  float *ref = malloc((size_t)(T * V) * sizeof *ref), *dec = malloc((size_t)(T * V) * sizeof *dec),
        *gra = malloc((size_t)(T * V) * sizeof *gra), *deq = malloc((size_t)(T * V) * sizeof *deq);
  cache_logits(f32, ids, T, ref);
  CHECK(!damo_gpt2_is_int8(m));
  CHECK_MSG(damo_gpt2_quantize_int8(m) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_gpt2_is_int8(m) && damo_gpt2_block_format(m) == DAMO_BLOCKS_NONE);
  cache_logits(m, ids, T, dec);
  graph_logits(m, ids, T, gra);
  /* the f32 weights now hold scale * q: an f32 model over them differs by the inputs' rounding only */
  damo_gpt2 *dq = NULL;
  CHECK(damo_gpt2_new(&tiny, 3, &dq) == DAMO_OK);
  for (int i = 0; dq && i < damo_gpt2_num_tensors(dq); i++) {
    const damo_tensor *a = damo_gpt2_param(m, damo_gpt2_tensor_name(m, i));
    damo_tensor *b = damo_gpt2_param(dq, damo_gpt2_tensor_name(dq, i));
    memcpy(b->data, a->data, damo_tensor_nbytes(a));
  }
  if (dq) cache_logits(dq, ids, T, deq);
  float ref_max = 0;
  for (int64_t i = 0; i < T * V; i++) ref_max = fmaxf(ref_max, fabsf(ref[i]));
  const float to_f32 = max_abs_diff(dec, ref, T * V), dec_graph = max_abs_diff(dec, gra, T * V),
              to_deq = max_abs_diff(dec, deq, T * V);
  CHECK_MSG(to_f32 > 0 && to_f32 < 0.03f * ref_max, "decoder vs f32: %g (logits up to %g)", to_f32, ref_max);
  CHECK_MSG(dec_graph < 0.03f * ref_max, "decoder vs graph: %g", dec_graph);
  CHECK_MSG(to_deq > 0, "the int8 decoder equals f32 on the dequantised weights: were the inputs quantised?");
  printf("  logits up to %.4f: int8 decoder vs f32 %.2g, vs the int8 graph %.2g, vs f32 on the dequantised weights "
         "%.2g\n", ref_max, to_f32, dec_graph, to_deq);
  /* greedy tokens agree with f32 on the first step at least */
  int a = 0, b = 0;
  for (int64_t v = 1; v < V; v++) a = ref[v] > ref[a] ? (int)v : a, b = dec[v] > dec[b] ? (int)v : b;
  CHECK(a == b);
  /* refused: quantising again, blocks on top, a trainer, a device */
  CHECK(damo_gpt2_quantize_int8(m) == DAMO_ERR_STATE && strstr(damo_last_error(), "already quantised (int8)"));
  CHECK(damo_gpt2_quantize(m, DAMO_BLOCKS_Q8_0) == DAMO_ERR_STATE);
  damo_gpt2 *blocks = NULL;
  CHECK(damo_gpt2_new(&tiny, 3, &blocks) == DAMO_OK && damo_gpt2_quantize(blocks, DAMO_BLOCKS_Q4_0) == DAMO_OK);
  CHECK(blocks && damo_gpt2_quantize_int8(blocks) == DAMO_ERR_STATE && strstr(damo_last_error(), "q4_0"));
  damo_gpt2_free(blocks);
  damo_gpt2_graph *train = NULL;
  CHECK(damo_gpt2_graph_new(m, 1, T, 1, &train) == DAMO_OK); /* a scoring graph builds; backward refuses */
  if (train) {
    int32_t targets[T];
    for (int t = 0; t < T; t++) targets[t] = ids[(t + 1) % T];
    float loss = 0;
    CHECK(damo_gpt2_graph_forward(train, ids, targets, &loss) == DAMO_OK && loss > 0 && isfinite(loss));
  }
  damo_gpt2_graph_free(train);
  free(ref), free(dec), free(gra), free(deq);
  damo_gpt2_free(dq), damo_gpt2_free(f32), damo_gpt2_free(m);
}

/* Saved and loaded: I8 tensors with their scales, a quarter of the f32 file and a bit, the
 * same decoding; corrupted scales, -128 and a scale on a tensor int8 does not cover refused. */
static void test_int8_files(void) {
  enum { T = 12 };
  const int64_t V = tiny.vocab_size;
  int32_t ids[T];
  for (int t = 0; t < T; t++) ids[t] = (t * 11 + 3) % (int)V;
  damo_gpt2 *m = NULL, *back = NULL;
  CHECK(damo_gpt2_new(&tiny, 5, &m) == DAMO_OK);
  if (!m) return;
  char f32_dir[512], dir[512], path[600];
  snprintf(f32_dir, sizeof f32_dir, "%s", tmp_path("f32"));
  snprintf(dir, sizeof dir, "%s", tmp_path("int8"));
  CHECK(damo_gpt2_save(m, f32_dir) == DAMO_OK);
  CHECK(damo_gpt2_quantize_int8(m) == DAMO_OK);
  CHECK(damo_gpt2_save_as(m, dir, DAMO_BF16) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(damo_gpt2_save(m, dir) == DAMO_OK, "%s", damo_last_error());
  const double ratio = (double)file_bytes(dir) / (double)file_bytes(f32_dir);
  CHECK_MSG(ratio > 0.25 && ratio < 0.30, "int8 file %.3f of f32", ratio);
  float *a = malloc((size_t)(T * V) * sizeof *a), *b = malloc((size_t)(T * V) * sizeof *b);
  cache_logits(m, ids, T, a);
  CHECK_MSG(damo_gpt2_load(dir, &back) == DAMO_OK, "%s", damo_last_error());
  CHECK(back && damo_gpt2_is_int8(back));
  if (back) cache_logits(back, ids, T, b);
  CHECK(back && !memcmp(a, b, (size_t)(T * V) * sizeof *a));
  damo_gpt2_free(back);
  back = NULL;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  damo_tensor *fc = d ? damo_tensor_dict_get(d, "h.1.mlp.c_fc.weight") : NULL,
              *fc_scale = d ? damo_tensor_dict_get(d, "h.1.mlp.c_fc.weight.scale") : NULL,
              *wte_scale = d ? damo_tensor_dict_get(d, "wte.weight.scale") : NULL;
  CHECK(fc && fc->dtype == DAMO_I8 && fc->shape[0] == 64 && fc->shape[1] == 256);
  CHECK(fc_scale && fc_scale->ndim == 1 && fc_scale->shape[0] == 256);   /* per output column */
  CHECK(wte_scale && wte_scale->ndim == 1 && wte_scale->shape[0] == V);  /* per row */
  if (fc && fc_scale) {
    damo_tensor_f32(fc_scale)[7] = NAN;
    CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
    CHECK(damo_gpt2_load(dir, &back) == DAMO_ERR_FORMAT && !back);
    CHECK_MSG(strstr(damo_last_error(), "h.1.mlp.c_fc.weight.scale' 7"), "%s", damo_last_error());
    damo_tensor_f32(fc_scale)[7] = 0.01f;
    ((int8_t *)fc->data)[9] = -128;
    CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
    CHECK(damo_gpt2_load(dir, &back) == DAMO_ERR_FORMAT && strstr(damo_last_error(), "-128"));
    ((int8_t *)fc->data)[9] = 1;
    const int64_t n = 64;
    damo_tensor_dict_add(d, "h.0.ln_1.weight.scale", damo_tensor_new(DAMO_F32, 1, &n));
    CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
    CHECK(damo_gpt2_load(dir, &back) == DAMO_ERR_FORMAT && strstr(damo_last_error(), "h.0.ln_1.weight"));
  }
  CHECK(!back);
  damo_tensor_dict_free(d);
  free(a), free(b);
  damo_gpt2_free(m);
}

/* Static int8 (damo_gpt2_quantize_int8_static): calibrated on windows of a token stream, the
 * graph and the decoder quantise with the same ranges, so they agree closer than dynamic
 * int8's two (each row its own range in the decoder); both stay near f32; c_fc's uint8
 * hand-over gives the f32 hand-over's values bit for bit; a save and reload decodes the same;
 * the input quantisations are on disk beside each product (not wpe); bad calls and stray
 * input tensors are refused. */
static void test_int8_static(void) {
  enum { T = 12, N = 240 };
  const int64_t V = tiny.vocab_size;
  int32_t ids[T], stream[N];
  for (int t = 0; t < T; t++) ids[t] = (t * 37 + 5) % (int)V;
  for (int t = 0; t < N; t++) stream[t] = (t * 53 + 11) % (int)V;
  damo_gpt2 *f32 = NULL, *m = NULL, *dyn = NULL, *back = NULL;
  CHECK(damo_gpt2_new(&tiny, 3, &f32) == DAMO_OK && damo_gpt2_new(&tiny, 3, &m) == DAMO_OK &&
        damo_gpt2_new(&tiny, 3, &dyn) == DAMO_OK);
  if (!f32 || !m || !dyn) return;
  float *ref = malloc((size_t)(T * V) * sizeof *ref), *dec = malloc((size_t)(T * V) * sizeof *dec),
        *gra = malloc((size_t)(T * V) * sizeof *gra), *unc = malloc((size_t)(T * V) * sizeof *unc),
        *ddec = malloc((size_t)(T * V) * sizeof *ddec), *dgra = malloc((size_t)(T * V) * sizeof *dgra);
  graph_logits(f32, ids, T, ref);
  damo_quantize_options o = {.method = DAMO_CALIB_HISTOGRAM, .calibration_examples = 7, .batch_size = 3};
  CHECK_MSG(damo_gpt2_quantize_int8_static(m, stream, N, T, &o) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_gpt2_is_int8(m) && damo_gpt2_quantize_int8(dyn) == DAMO_OK);
  cache_logits(m, ids, T, dec);
  graph_logits(m, ids, T, gra);
  cache_logits(dyn, ids, T, ddec);
  graph_logits(dyn, ids, T, dgra);
  setenv("DAMO_INT8_CHAIN", "0", 1);
  graph_logits(m, ids, T, unc);
  unsetenv("DAMO_INT8_CHAIN");
  float ref_max = 0;
  for (int64_t i = 0; i < T * V; i++) ref_max = fmaxf(ref_max, fabsf(ref[i]));
  const float to_f32 = max_abs_diff(gra, ref, T * V), dec_graph = max_abs_diff(dec, gra, T * V),
              dyn_dec_graph = max_abs_diff(ddec, dgra, T * V);
  printf("  logits up to %.4f: static int8 graph vs f32 %.2g; decoder vs graph: static %.2g, dynamic %.2g\n", ref_max,
         to_f32, dec_graph, dyn_dec_graph);
  CHECK_MSG(to_f32 > 0 && to_f32 < 0.03f * ref_max, "static graph vs f32: %g (logits up to %g)", to_f32, ref_max);
  CHECK_MSG(dec_graph < dyn_dec_graph, "static decoder vs graph %g, dynamic %g", dec_graph, dyn_dec_graph);
  CHECK(memcmp(gra, dgra, (size_t)(T * V) * sizeof *gra) != 0);
  CHECK(!memcmp(gra, unc, (size_t)(T * V) * sizeof *gra));
  /* saved and read back */
  char dir[512], path[600];
  snprintf(dir, sizeof dir, "%s", tmp_path("int8_static"));
  CHECK_MSG(damo_gpt2_save(m, dir) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(damo_gpt2_load(dir, &back) == DAMO_OK, "%s", damo_last_error());
  if (back) {
    float *again = malloc((size_t)(T * V) * sizeof *again);
    cache_logits(back, ids, T, again);
    CHECK(!memcmp(again, dec, (size_t)(T * V) * sizeof *dec));
    free(again);
  }
  damo_gpt2_free(back);
  back = NULL;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  if (d) {
    const damo_tensor *xs = damo_tensor_dict_get(d, "h.1.mlp.c_proj.input_scale");
    CHECK(xs && xs->dtype == DAMO_F32 && damo_tensor_f32(xs)[0] > 0);
    CHECK(damo_tensor_dict_get(d, "wte.input_zero_point") && !damo_tensor_dict_get(d, "wpe.input_scale"));
    damo_tensor_dict_free(d);
  }
  /* a dynamic model's file with an input quantisation in it */
  char dyn_dir[512];
  snprintf(dyn_dir, sizeof dyn_dir, "%s", tmp_path("int8_dyn"));
  CHECK(damo_gpt2_save(dyn, dyn_dir) == DAMO_OK);
  snprintf(path, sizeof path, "%s/model.safetensors", dyn_dir);
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  if (d) {
    const int64_t one = 1;
    damo_tensor *xs = damo_tensor_new(DAMO_F32, 1, &one);
    damo_tensor_f32(xs)[0] = 0.1f;
    damo_tensor_dict_add(d, "h.0.attn.c_attn.input_scale", xs);
    CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
    damo_tensor_dict_free(d);
    CHECK(damo_gpt2_load(dyn_dir, &back) == DAMO_ERR_FORMAT && !back);
    CHECK_MSG(strstr(damo_last_error(), "input quantisation of no int8 tensor of a static int8 model"), "%s",
              damo_last_error());
  }
  /* refused */
  damo_gpt2 *fresh = NULL;
  CHECK(damo_gpt2_quantize_int8_static(m, stream, N, T, &o) == DAMO_ERR_STATE);
  CHECK(damo_gpt2_new(&tiny, 3, &fresh) == DAMO_OK);
  CHECK(damo_gpt2_quantize_int8_static(fresh, stream, T - 1, T, &o) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_gpt2_quantize_int8_static(fresh, stream, N, tiny.n_positions + 1, &o) == DAMO_ERR_INVALID_ARG);
  stream[5] = (int32_t)V;
  CHECK(damo_gpt2_quantize_int8_static(fresh, stream, N, T, &o) == DAMO_ERR_INVALID_ARG &&
        strstr(damo_last_error(), "token 5"));
  CHECK(!damo_gpt2_is_int8(fresh));
  damo_gpt2_free(fresh);
  free(ref), free(dec), free(gra), free(unc), free(ddec), free(dgra);
  damo_gpt2_free(f32), damo_gpt2_free(m), damo_gpt2_free(dyn);
}

int main(void) {
  tmpdir_template("gpt2_blocks");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(test_round_trip);
  RUN(test_row_dots);
  RUN(test_gpt2_decode);
  RUN(test_step_many);
  RUN(test_gpt2_files);
  RUN(test_bad_files);
  RUN(test_mixed_file);
  RUN(test_int8_decode_and_graph);
  RUN(test_int8_files);
  RUN(test_int8_static);
  static const char *const dirs[] = {"f32", "q8", "q4", "bf16", "nan_scale", "neg_scale", "minus128", "stray", "bias_scale", "short",
                                     "q4_as_q8", "q5", "block64", "extra", "noformat", "plain", "mixed"};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) remove_model_dir(tmp_path(dirs[i]));
  remove_tmpdir();
  return test_summary("gpt2_blocks");
}
