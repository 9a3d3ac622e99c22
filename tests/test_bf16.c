/* test_bf16.c - bfloat16 storage and inference: rounding (nearest even, NaN, infinities),
 * BF16 safetensors written and read back, a GPT-2 directory saved as bf16, and the KV-cache
 * decoder reading bf16 weights: equal to the f32 decoder on weights that are bf16 already,
 * and within a stated tolerance of it on f32 weights. */
#include "damo.h"
#include "harness.h"
#include "tmpfiles.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_rounding(void) {
  CHECK(damo_bf16_from_f32(1.0f) == 0x3f80);
  CHECK(damo_f32_from_bf16(0x3f80) == 1.0f);
  /* 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1) */
  CHECK(damo_bf16_from_f32(1.0f + 1.0f / 256) == 0x3f80);
  /* 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even) */
  CHECK(damo_bf16_from_f32(1.0f + 3.0f / 256) == 0x3f82);
  CHECK(damo_bf16_from_f32(1.0f + 1.0f / 256 + 1.0f / 65536) == 0x3f81); /* above half: up */
  CHECK(damo_bf16_from_f32(-2.5f) == 0xc020);
  CHECK(isinf(damo_f32_from_bf16(damo_bf16_from_f32(INFINITY))));
  CHECK(isinf(damo_f32_from_bf16(damo_bf16_from_f32(3.4e38f)))); /* rounds past the largest bf16 */
  CHECK(isnan(damo_f32_from_bf16(damo_bf16_from_f32(NAN))));
  /* a NaN whose payload sits in the low half only must not become infinity */
  union { uint32_t u; float f; } low_nan = {.u = 0x7f800001u};
  CHECK(isnan(damo_f32_from_bf16(damo_bf16_from_f32(low_nan.f))));
  /* the relative error of rounding to 8 significant bits is at most 2^-8 */
  float worst = 0;
  for (int i = 1; i < 10000; i++) {
    float x = (float)i * 0.7311f - 3000.0f;
    float r = damo_f32_from_bf16(damo_bf16_from_f32(x));
    if (x != 0) worst = fmaxf(worst, fabsf(r - x) / fabsf(x));
  }
  CHECK_MSG(worst <= 1.0f / 256 && worst > 1.0f / 1024, "worst relative rounding error %g", (double)worst);
}

static void test_safetensors_bf16(void) {
  const char *path = tmp_path("w.safetensors");
  int64_t shape[2] = {3, 5};
  damo_tensor *t = damo_tensor_new(DAMO_F32, 2, shape);
  for (int i = 0; i < 15; i++) damo_tensor_f32(t)[i] = (float)i / 7.0f - 1.0f;
  damo_tensor *b = damo_tensor_to_bf16(t);
  CHECK(b && b->dtype == DAMO_BF16 && damo_tensor_nbytes(b) == 30);
  damo_tensor_dict *d = damo_tensor_dict_new();
  damo_tensor_dict_add(d, "w", b);
  CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
  damo_tensor_dict *back = NULL;
  CHECK(damo_safetensors_load(path, &back) == DAMO_OK);
  const damo_tensor *r = back ? damo_tensor_dict_get(back, "w") : NULL;
  CHECK(r && r->dtype == DAMO_F32 && r->shape[0] == 3 && r->shape[1] == 5);
  for (int i = 0; r && i < 15; i++) {
    float want = damo_f32_from_bf16(damo_bf16_from_f32(damo_tensor_f32(t)[i]));
    CHECK(damo_tensor_f32(r)[i] == want);
  }
  damo_tensor *i32 = damo_tensor_new(DAMO_I32, 2, shape);
  CHECK(damo_tensor_to_bf16(i32) == NULL); /* only f32 rounds */
  damo_tensor_free(i32);
  damo_tensor_dict_free(back);
  damo_tensor_dict_free(d);
  damo_tensor_free(t);
  unlink(path);
}

/* Greedy ids and the last logits of n steps through a cache. */
static void decode(damo_gpt2 *m, damo_dtype precision, int n, int32_t *ids, float *last_logits) {
  CHECK(damo_gpt2_set_inference_precision(m, precision) == DAMO_OK);
  damo_gpt2_cache *c = NULL;
  CHECK(damo_gpt2_cache_new(m, n + 1, &c) == DAMO_OK);
  if (!c) return;
  const int V = damo_gpt2_get_config(m)->vocab_size;
  int32_t id = 3;
  for (int s = 0; s < n; s++) {
    const float *logits = NULL;
    CHECK(damo_gpt2_cache_step(c, id, &logits) == DAMO_OK);
    if (!logits) break;
    int best = 0;
    for (int v = 1; v < V; v++)
      if (logits[v] > logits[best]) best = v;
    ids[s] = id = best;
    if (s == n - 1) memcpy(last_logits, logits, (size_t)V * sizeof *logits);
  }
  damo_gpt2_cache_free(c);
}

static void test_gpt2_bf16(void) {
  damo_gpt2_config cfg = {2, 4, 64, 32, 300, 1e-5f};
  damo_gpt2 *m = NULL, *loaded = NULL;
  CHECK(damo_gpt2_new(&cfg, 8, &m) == DAMO_OK);
  if (!m) return;
  enum { N = 12 };
  int32_t ids_f32[N], ids_bf16[N];
  float *l32 = malloc(300 * sizeof *l32), *l16 = malloc(300 * sizeof *l16);
  /* f32 weights: the bf16 decoder's logits stay within 2% of the logits' spread */
  decode(m, DAMO_F32, N, ids_f32, l32);
  decode(m, DAMO_BF16, N, ids_bf16, l16);
  float spread = 0, diff = 0;
  for (int v = 0; v < 300; v++) spread = fmaxf(spread, fabsf(l32[v])), diff = fmaxf(diff, fabsf(l32[v] - l16[v]));
  CHECK_MSG(diff > 0 && diff < 0.02f * spread, "bf16 logits differ by %g (largest logit %g)", (double)diff,
            (double)spread);

  /* saved as bf16: half the weights file, and loaded back the values are the rounded ones */
  char path[512];
  snprintf(path, sizeof path, "%s", tmp_path("model"));
  CHECK(damo_gpt2_save_as(m, path, DAMO_BF16) == DAMO_OK);
  CHECK(damo_gpt2_save_as(m, path, DAMO_I32) == DAMO_ERR_INVALID_ARG);
  char file[600];
  snprintf(file, sizeof file, "%s/model.safetensors", path);
  struct stat st;
  CHECK(stat(file, &st) == 0 && st.st_size > 2 * damo_gpt2_num_params(m) &&
        st.st_size < 2 * damo_gpt2_num_params(m) + 16384);
  CHECK(damo_gpt2_load(path, &loaded) == DAMO_OK);
  if (loaded) {
    const damo_tensor *a = damo_gpt2_param(m, "h.1.mlp.c_fc.weight"), *b = damo_gpt2_param(loaded, "h.1.mlp.c_fc.weight");
    int exact = 1;
    for (int64_t i = 0; i < damo_tensor_numel(a); i++)
      exact &= damo_tensor_f32(b)[i] == damo_f32_from_bf16(damo_bf16_from_f32(damo_tensor_f32(a)[i]));
    CHECK_MSG(exact, "a bf16 file does not load as the rounded weights");
    /* weights that are bf16 already: both decoders read the same values, the same ids come out */
    decode(loaded, DAMO_F32, N, ids_f32, l32);
    decode(loaded, DAMO_BF16, N, ids_bf16, l16);
    CHECK(!memcmp(ids_f32, ids_bf16, sizeof ids_f32));
    CHECK_CLOSE(l16, l32, 300, 1e-5, 1e-5);
  }
  damo_gpt2_free(loaded);
  damo_gpt2_free(m);
  free(l32);
  free(l16);
  snprintf(file, sizeof file, "%s/config.json", path);
  unlink(file);
  snprintf(file, sizeof file, "%s/model.safetensors", path);
  unlink(file);
  rmdir(path);
}

int main(void) {
  tmpdir_template("bf16");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  (void)write_bytes; /* tmpfiles.h helper this suite does not need */
  RUN(test_rounding);
  RUN(test_safetensors_bf16);
  RUN(test_gpt2_bf16);
  rmdir(tmpdir);
  return test_summary("bf16");
}
