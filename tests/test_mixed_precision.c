/* test_mixed_precision.c - bf16 matmul operands (damo_set_matmul_precision): every SIMD
 * path's GEMM equals the f32 product of the bf16-rounded operands (and so differs from the
 * f32 product), special values survive the rounding, the setting is checked, and training
 * with bf16 products stays within 1% of f32 training for GPT-2 and BERT (loss curve and
 * gradients). */
#include "damo.h"
#include "harness.h"
#include "kernels/cpu/cpu_kernels.h"
#include "models/bert.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static float bf16_round(float x) { return damo_f32_from_bf16(damo_bf16_from_f32(x)); }

/* One product checked at the level in force: with bf16 operands it must match the double
 * reference on rounded copies to f32 accumulation error, and be further than that from the
 * reference on the unrounded operands somewhere. */
static void check_product(int ta, int tb, int64_t M, int64_t N, int64_t K, damo_rng *r) {
  const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
  const int64_t a_rows = ta ? K : M, b_rows = tb ? N : K;
  float *A = malloc((size_t)(a_rows * lda) * sizeof *A), *B = malloc((size_t)(b_rows * ldb) * sizeof *B);
  float *Ar = malloc((size_t)(a_rows * lda) * sizeof *A), *Br = malloc((size_t)(b_rows * ldb) * sizeof *B);
  float *C0 = malloc((size_t)(M * ldc) * sizeof *C0), *C = malloc((size_t)(M * ldc) * sizeof *C);
  float *want = malloc((size_t)(M * ldc) * sizeof *C), *plain = malloc((size_t)(M * ldc) * sizeof *C);
  for (int64_t i = 0; i < a_rows * lda; i++) A[i] = damo_rng_uniform(r) * 2 - 1, Ar[i] = bf16_round(A[i]);
  for (int64_t i = 0; i < b_rows * ldb; i++) B[i] = damo_rng_uniform(r) * 2 - 1, Br[i] = bf16_round(B[i]);
  for (int64_t i = 0; i < M * ldc; i++) C0[i] = damo_rng_uniform(r);
  const float alpha = 1.5f, beta = 0.5f;
  /* One thread first: the threaded product must give the same bits, however it splits. */
  memcpy(C, C0, (size_t)(M * ldc) * sizeof *C);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  damo_set_matmul_precision(DAMO_MATMUL_BF16);
  damo_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  omp_set_num_threads(threads);
  memcpy(want, C, (size_t)(M * ldc) * sizeof *C);
  memcpy(C, C0, (size_t)(M * ldc) * sizeof *C);
  damo_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  CHECK_MSG(memcmp(want, C, (size_t)(M * ldc) * sizeof *C) == 0, "%s bf16 trans %d%d %lldx%lldx%lld: 1 and %d threads differ",
            damo_simd_path(), ta, tb, (long long)M, (long long)N, (long long)K, threads);
  memcpy(C, C0, (size_t)(M * ldc) * sizeof *C);
  memcpy(want, C0, (size_t)(M * ldc) * sizeof *C);
  memcpy(plain, C0, (size_t)(M * ldc) * sizeof *C);
  damo_set_matmul_precision(DAMO_MATMUL_BF16);
  damo_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  damo_set_matmul_precision(DAMO_MATMUL_F32);
  damo_gemm_reference(ta, tb, M, N, K, alpha, Ar, lda, Br, ldb, beta, want, ldc);
  damo_gemm_reference(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, plain, ldc);
  double worst = 0, furthest = 0;
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      /* |alpha| sum |a b| + |beta c| bounds the f32 accumulation error (K + 2 roundings). */
      double scale = fabs(beta * C0[i * ldc + j]);
      for (int64_t p = 0; p < K; p++) {
        const float a = ta ? A[p * lda + i] : A[i * lda + p], b = tb ? B[j * ldb + p] : B[p * ldb + j];
        scale += fabs(alpha * a * b);
      }
      const double err = fabs(C[i * ldc + j] - want[i * ldc + j]) / (scale * (double)(K + 2) * 1.2e-7);
      if (err > worst) worst = err;
      const double off = fabs(C[i * ldc + j] - plain[i * ldc + j]) / (scale * (double)(K + 2) * 1.2e-7);
      if (off > furthest) furthest = off;
    }
  CHECK_MSG(worst <= 1.0, "%s %s trans %d%d %lldx%lldx%lld: %.2f of the f32 error bound from the rounded product",
            damo_simd_path(), "bf16", ta, tb, (long long)M, (long long)N, (long long)K, worst);
  if (K >= 4)
    CHECK_MSG(furthest > 1.0, "%s trans %d%d %lldx%lldx%lld: the bf16 product is the f32 one (operands not rounded)",
              damo_simd_path(), ta, tb, (long long)M, (long long)N, (long long)K);
  free(A), free(B), free(Ar), free(Br), free(C0), free(C), free(want), free(plain);
}

static void test_gemm_every_path(void) {
  /* 153: an odd tail between 16 and 32 of the pair conversion; the last two: two K slices,
   * the second of odd depth, and two column blocks, split between threads. */
  const int64_t shapes[][3] = {{1, 1, 1},     {7, 13, 5},      {37, 70, 153},   {130, 67, 600},
                               {96, 1100, 64}, {70, 1100, 300}, {250, 100, 1031}, {230, 1040, 40}};
  damo_rng r;
  damo_rng_seed(&r, 21);
  const damo_simd_level levels[] = {DAMO_SIMD_SCALAR, DAMO_SIMD_AVX2, DAMO_SIMD_AVX512};
  const damo_simd_level original = damo_simd_level_get();
  for (int l = 0; l < 3; l++) {
    if (damo_simd_level_force(levels[l]) != levels[l]) continue; /* a path this CPU lacks */
    /* On AVX-512: AMX where there is one, then without it (VDPBF16PS or emulated). */
    for (int amx = 1; amx >= 0; amx--) {
      if (levels[l] != DAMO_SIMD_AVX512 && !amx) break;
      damo_amx_allow(amx);
      printf("  %s: bf16 path %s\n", damo_simd_path(), damo_bf16_matmul_path());
      for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++) check_product(t >> 1, t & 1, shapes[s][0], shapes[s][1], shapes[s][2], &r);
    }
    damo_amx_allow(1);
  }
  damo_simd_level_force(original);
}

/* NaN and infinity pass through; a finite value too large for bf16 becomes infinite. */
static void test_special_values(void) {
  enum { M = 3, N = 16, K = 8 };
  float A[M * K], B[K * N], C[M * N];
  for (int i = 0; i < M * K; i++) A[i] = 0.25f;
  for (int i = 0; i < K * N; i++) B[i] = 1.0f;
  A[0] = NAN;
  A[K] = INFINITY;
  A[2 * K] = FLT_MAX;
  damo_set_matmul_precision(DAMO_MATMUL_BF16);
  damo_gemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
  damo_set_matmul_precision(DAMO_MATMUL_F32);
  for (int j = 0; j < N; j++) CHECK(isnan(C[j]) && isinf(C[N + j]) && C[N + j] > 0 && isinf(C[2 * N + j]));
  damo_gemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
  CHECK(isfinite(C[2 * N])); /* f32: FLT_MAX + 7 * 0.25 stays finite */
}

static void test_setting(void) {
  CHECK(damo_get_matmul_precision() == DAMO_MATMUL_F32);
  CHECK(damo_set_matmul_precision(DAMO_MATMUL_BF16) == DAMO_OK && damo_get_matmul_precision() == DAMO_MATMUL_BF16);
  CHECK(damo_set_matmul_precision((damo_matmul_precision)7) == DAMO_ERR_INVALID_ARG);
  CHECK(strstr(damo_last_error(), "DAMO_MATMUL_BF16") != NULL);
  CHECK(damo_get_matmul_precision() == DAMO_MATMUL_BF16); /* a refused value changes nothing */
  damo_set_matmul_precision(DAMO_MATMUL_F32);
  char want[64];
  snprintf(want, sizeof want, "bf16 matmul: %s", damo_bf16_matmul_path());
  CHECK(strstr(damo_info_string(), want) != NULL);
  /* The native kernels only on the AVX-512 path, and only where the CPU has them. */
  const char *path = damo_bf16_matmul_path();
  CHECK(!strcmp(path, "emulated") || !strcmp(path, "avx512_bf16") || !strcmp(path, "amx_bf16"));
  if (damo_simd_level_get() != DAMO_SIMD_AVX512 || !damo_cpu_has_bf16()) CHECK(!strcmp(path, "emulated"));
  /* The bf16 peak probe of that path: AMX tiles far above the f32 FMA loop. */
  const double bf16_peak = damo_bf16_peak_gflops(1), fma_peak = damo_fma_peak_gflops(1);
  printf("  bf16 peak (%s) %.0f GFLOP/s, f32 FMA peak %.0f, one thread\n", path, bf16_peak, fma_peak);
  CHECK(bf16_peak > 0 && fma_peak > 0);
  if (!strcmp(path, "amx_bf16")) CHECK_MSG(bf16_peak > 4 * fma_peak, "AMX %.0f vs FMA %.0f", bf16_peak, fma_peak);
}

/* ||a - b|| / ||b||. */
static double relative_distance(const float *a, const float *b, int64_t n) {
  double d = 0, s = 0;
  for (int64_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), s += (double)b[i] * b[i];
  return sqrt(d / s);
}

enum { VOCAB = 64, STREAM = 4000, STEPS = 40 };

/* A learnable token stream: a few fixed sentences in random order. */
static damo_token_data *sentences(void) {
  int32_t words[5][10], *ids = malloc(STREAM * sizeof *ids);
  damo_rng r;
  damo_rng_seed(&r, 8);
  for (int s = 0; s < 5; s++)
    for (int j = 0; j < 10; j++) words[s][j] = (int32_t)damo_rng_below(&r, VOCAB);
  for (int i = 0; i < STREAM;) {
    const int s = (int)damo_rng_below(&r, 5);
    for (int j = 0; j < 10 && i < STREAM; j++) ids[i++] = words[s][j];
  }
  damo_token_data *d = NULL;
  CHECK(damo_token_data_from_ids(ids, STREAM, 0.1, &d) == DAMO_OK);
  free(ids);
  return d;
}

/* STEPS steps of a small GPT-2 at one precision: the per-step losses, the final validation
 * loss and the first step's gradient. */
static float gpt2_run(damo_matmul_precision precision, const damo_token_data *d, float *losses, float **grad0,
                      int64_t *n) {
  damo_gpt2_config c = {2, 4, 64, 32, VOCAB, 1e-5f};
  damo_gpt2 *m = NULL;
  damo_gpt2_trainer *t = NULL;
  float val = NAN;
  CHECK(damo_gpt2_new(&c, 3, &m) == DAMO_OK);
  damo_gpt2_train_options o = damo_gpt2_train_defaults();
  o.steps = STEPS, o.batch_size = 4, o.seq_len = 32, o.lr = 3e-3f, o.min_lr = 3e-4f, o.warmup_steps = 4;
  o.eval_windows = 8, o.seed = 2;
  if (!m || damo_gpt2_trainer_new(m, d, &o, &t) != DAMO_OK) goto done;
  damo_set_matmul_precision(precision);
  for (int s = 0; s < STEPS; s++) {
    damo_gpt2_step_report r;
    CHECK(damo_gpt2_trainer_step(t, &r) == DAMO_OK);
    losses[s] = r.loss;
    if (s == 0) {
      const float *g = damo_gpt2_grad_block(m, n);
      *grad0 = malloc((size_t)*n * sizeof **grad0);
      memcpy(*grad0, g, (size_t)*n * sizeof **grad0);
    }
  }
  CHECK(damo_gpt2_trainer_eval(t, &val) == DAMO_OK);
done:
  damo_set_matmul_precision(DAMO_MATMUL_F32);
  damo_gpt2_trainer_free(t);
  damo_gpt2_free(m);
  return val;
}

static void test_gpt2_training_close(void) {
  damo_token_data *d = sentences();
  if (!d) return;
  float f32[STEPS], bf16[STEPS], *g32 = NULL, *g16 = NULL;
  int64_t n = 0;
  const float val32 = gpt2_run(DAMO_MATMUL_F32, d, f32, &g32, &n), val16 = gpt2_run(DAMO_MATMUL_BF16, d, bf16, &g16, &n);
  if (g32 && g16) {
    const double gap = relative_distance(g16, g32, n);
    CHECK_MSG(gap < 0.02 && gap > 1e-5, "first-step gradient: bf16 is %.2e from f32 (want (1e-5, 0.02))", gap);
  }
  CHECK_MSG(f32[STEPS - 1] < f32[0] - 1.0f, "f32 loss %g -> %g: nothing learnt", (double)f32[0], (double)f32[STEPS - 1]);
  double worst = 0;
  for (int s = 0; s < STEPS; s++) worst = fmax(worst, fabs(bf16[s] - f32[s]) / f32[s]);
  CHECK_MSG(worst < 0.01, "bf16 training loss up to %.2f%% from f32's", 100 * worst);
  CHECK_MSG(fabs(val16 - val32) / val32 < 0.01, "validation loss bf16 %g, f32 %g", (double)val16, (double)val32);
  free(g32);
  free(g16);
  damo_token_data_free(d);
}

/* One BERT classifier step (dropout off): the bf16 gradient is near the f32 one. */
static float bert_grad(damo_matmul_precision precision, float **grads, int64_t *n) {
  damo_bert_config c = damo_bert_config_default();
  c.vocab_size = 60, c.hidden_size = 64, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.intermediate_size = 128, c.max_position_embeddings = 32;
  c.hidden_dropout_prob = c.attention_probs_dropout_prob = 0.0f;
  damo_bert *m = NULL;
  damo_bert_graph *bg = NULL;
  float loss = NAN;
  CHECK(damo_bert_new(&c, 4, &m) == DAMO_OK);
  if (!m || damo_bert_classifier_new(m, 4, 24, 1, &bg) != DAMO_OK) goto done;
  int32_t ids[96], types[96], mask[96], labels[4] = {1, 0, 1, 1};
  for (int i = 0; i < 96; i++) ids[i] = (i * 13 + 5) % 60, types[i] = i % 24 >= 12, mask[i] = i % 24 < 20;
  damo_set_matmul_precision(precision);
  CHECK(damo_bert_graph_forward(bg, 4, ids, types, mask, labels, 1, &loss) == DAMO_OK);
  CHECK(damo_bert_graph_backward(bg) == DAMO_OK);
  damo_set_matmul_precision(DAMO_MATMUL_F32);
  *n = m->p.n_params_padded;
  *grads = malloc((size_t)*n * sizeof **grads);
  memcpy(*grads, m->p.grad_block, (size_t)*n * sizeof **grads);
done:
  damo_bert_graph_free(bg);
  damo_bert_free(m);
  return loss;
}

static void test_bert_gradient_close(void) {
  float *g32 = NULL, *g16 = NULL;
  int64_t n = 0;
  const float l32 = bert_grad(DAMO_MATMUL_F32, &g32, &n), l16 = bert_grad(DAMO_MATMUL_BF16, &g16, &n);
  CHECK_MSG(fabs(l16 - l32) / l32 < 0.01 && l16 != l32, "BERT loss bf16 %.7g, f32 %.7g", (double)l16, (double)l32);
  if (g32 && g16) {
    const double gap = relative_distance(g16, g32, n);
    CHECK_MSG(gap < 0.03 && gap > 1e-5, "BERT gradient: bf16 is %.2e from f32", gap);
  }
  free(g32);
  free(g16);
}

int main(void) {
  RUN(test_setting);
  RUN(test_gemm_every_path);
  RUN(test_special_values);
  RUN(test_gpt2_training_close);
  RUN(test_bert_gradient_close);
  return test_summary("mixed_precision");
}
