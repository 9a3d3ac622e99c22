/* test_gemm.c - damo_gemm against damo_gemm_reference, for every SIMD level this CPU has and
 * for 1, 2 and 3 threads: odd shapes that are not multiples of any tile or block size, all four
 * transpose combinations, alpha/beta variants, padded leading dimensions (the padding must
 * stay untouched), beta == 0 over NaN-filled C, degenerate sizes, and bitwise agreement
 * between thread counts. Also the SIMD level selection and the FMA peak probe.
 * DAMO_TEST_QUICK=1 runs a smaller shape set (for sanitizer builds). */
#include "harness.h"
#include "kernels/cpu/cpu_kernels.h" /* damo_amx_int8_ready, damo_gemm_threads (and core.h) */

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

double damo_fma_peak_gflops(int threads); /* src/kernels/cpu/cpu_kernels.h */
double damo_fma_sustained_gflops(int threads, double seconds);

/* Written into the padding of every matrix; a kernel that writes outside its tile changes it. */
#define SENTINEL 12345.0f

static int quick_mode(void) {
  const char *env = getenv("DAMO_TEST_QUICK");
  return env && env[0] && strcmp(env, "0") != 0;
}

/* ------------------------------------------------------------------ helpers */

static uint64_t lcg_state = 0x9E3779B97F4A7C15ull;

/* Uniform in [-1, 1): inputs of both signs make cancellation (and so ordering bugs) visible. */
static float next_value(void) {
  lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((lcg_state >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

/* A rows x cols matrix with leading dimension ld >= cols; the padding holds SENTINEL. */
static float *random_matrix(int64_t rows, int64_t cols, int64_t ld) {
  size_t count = (size_t)(rows > 0 ? rows : 1) * (size_t)ld;
  float *m = malloc(count * sizeof(float));
  for (int64_t i = 0; i < (rows > 0 ? rows : 1); i++)
    for (int64_t j = 0; j < ld; j++) m[i * ld + j] = j < cols ? next_value() : SENTINEL;
  return m;
}

static int padding_intact(const float *m, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = cols; j < ld; j++)
      if (m[i * ld + j] != SENTINEL) return 0;
  return 1;
}

static int all_finite(const float *m, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++)
      if (!isfinite(m[i * ld + j])) return 0;
  return 1;
}

/* The levels this CPU runs, lowest first; returns how many. */
static int supported_levels(damo_simd_level levels[3]) {
  damo_simd_level original = damo_simd_level_get();
  int count = 0;
  for (int l = DAMO_SIMD_SCALAR; l <= DAMO_SIMD_AVX512; l++)
    if (damo_simd_level_force((damo_simd_level)l) == (damo_simd_level)l) levels[count++] = (damo_simd_level)l;
  damo_simd_level_force(original);
  return count;
}

static const char *level_name(damo_simd_level level) {
  return level == DAMO_SIMD_AVX512 ? "avx512" : level == DAMO_SIMD_AVX2 ? "avx2" : "scalar";
}

/* ------------------------------------------------------------------ one comparison */

typedef struct gemm_case {
  int trans_a, trans_b;
  int64_t M, N, K;
  float alpha, beta;
  int64_t pad_a, pad_b, pad_c; /* extra columns in each leading dimension */
  int nan_c;                   /* fill C with NaN first (only meaningful with beta == 0) */
} gemm_case;

/* Runs one case at every supported level with 1 and 2 threads and checks each result against
 * the reference. Float sums of K terms of size <= |alpha| differ from the double-accumulated
 * reference by a few ulps per term at worst, hence a tolerance growing with K. */
static void check_case(const gemm_case *c) {
  const int64_t a_rows = c->trans_a ? c->K : c->M, a_cols = c->trans_a ? c->M : c->K;
  const int64_t b_rows = c->trans_b ? c->N : c->K, b_cols = c->trans_b ? c->K : c->N;
  const int64_t lda = a_cols + c->pad_a, ldb = b_cols + c->pad_b, ldc = c->N + c->pad_c;
  float *A = random_matrix(a_rows, a_cols, lda);
  float *B = random_matrix(b_rows, b_cols, ldb);
  float *C0 = random_matrix(c->M, c->N, ldc);
  if (c->nan_c)
    for (int64_t i = 0; i < c->M; i++)
      for (int64_t j = 0; j < c->N; j++) C0[i * ldc + j] = NAN;
  const size_t c_count = (size_t)(c->M > 0 ? c->M : 1) * (size_t)ldc;
  float *expected = malloc(c_count * sizeof(float));
  float *got = malloc(c_count * sizeof(float));
  float *single_thread = malloc(c_count * sizeof(float));
  memcpy(expected, C0, c_count * sizeof(float));
  damo_gemm_reference(c->trans_a, c->trans_b, c->M, c->N, c->K, c->alpha, A, lda, B, ldb, c->beta, expected, ldc);

  const double atol = 1e-6 * (double)(c->K + 4) * (fabs(c->alpha) + fabs(c->beta) + 1.0);
  damo_simd_level levels[3];
  const int level_count = supported_levels(levels);
  const damo_simd_level original = damo_simd_level_get();
  const int original_threads = omp_get_max_threads();
  for (int l = 0; l < level_count; l++) {
    damo_simd_level_force(levels[l]);
    for (int threads = 1; threads <= 3; threads++) { /* 3: shares that do not divide evenly */
      omp_set_num_threads(threads);
      memcpy(got, C0, c_count * sizeof(float));
      damo_gemm(c->trans_a, c->trans_b, c->M, c->N, c->K, c->alpha, A, lda, B, ldb, c->beta, got, ldc);
      double worst = 0;
      for (int64_t i = 0; i < c->M; i++) {
        double r = test_close_ratio(got + i * ldc, expected + i * ldc, (long)c->N, atol, 1e-5);
        if (!(r <= worst)) worst = r;
      }
      CHECK_MSG(worst <= 1.0,
                "%s, %d thread(s), M=%lld N=%lld K=%lld ta=%d tb=%d alpha=%g beta=%g: worst error %.3g x tol",
                level_name(levels[l]), threads, (long long)c->M, (long long)c->N, (long long)c->K, c->trans_a,
                c->trans_b, (double)c->alpha, (double)c->beta, worst);
      CHECK_MSG(padding_intact(got, c->M, c->N, ldc), "%s, %d thread(s), M=%lld N=%lld K=%lld: C padding written",
                level_name(levels[l]), threads, (long long)c->M, (long long)c->N, (long long)c->K);
      if (c->nan_c)
        CHECK_MSG(all_finite(got, c->M, c->N, ldc), "%s: beta == 0 let NaN through (M=%lld N=%lld K=%lld)",
                  level_name(levels[l]), (long long)c->M, (long long)c->N, (long long)c->K);
      /* The summation order must not depend on how the work was split. */
      if (threads == 1)
        memcpy(single_thread, got, c_count * sizeof(float));
      else
        CHECK_MSG(memcmp(single_thread, got, c_count * sizeof(float)) == 0,
                  "%s: 1 and %d threads differ (M=%lld N=%lld K=%lld)", level_name(levels[l]), threads, (long long)c->M,
                  (long long)c->N, (long long)c->K);
    }
  }
  damo_simd_level_force(original);
  omp_set_num_threads(original_threads);
  free(A);
  free(B);
  free(C0);
  free(expected);
  free(got);
  free(single_thread);
}

/* ------------------------------------------------------------------ cases */

static void test_simd_levels(void) {
  const char *path = damo_simd_path();
  CHECK(strcmp(path, "avx512") == 0 || strcmp(path, "avx2") == 0 || strcmp(path, "scalar") == 0);
  damo_simd_level original = damo_simd_level_get();
  CHECK(damo_simd_level_force(DAMO_SIMD_SCALAR) == DAMO_SIMD_SCALAR);
  CHECK(strcmp(damo_simd_path(), "scalar") == 0);
  /* Forcing above what the CPU has is clamped, never granted. */
  damo_simd_level top = damo_simd_level_force(DAMO_SIMD_AVX512);
  CHECK(top <= DAMO_SIMD_AVX512 && top >= DAMO_SIMD_SCALAR);
  CHECK(strcmp(damo_simd_path(), level_name(top)) == 0);
  CHECK(damo_simd_level_force(original) == original);
  damo_simd_level levels[3];
  CHECK(supported_levels(levels) >= 1 && levels[0] == DAMO_SIMD_SCALAR);
  fprintf(stderr, "  simd path: %s\n", damo_simd_path());
}

/* Every combination of the odd sizes, each with one transpose pair, alpha/beta pair and
 * padding chosen in turn, so all of those meet every size class. */
static void test_odd_shapes(void) {
  static const int64_t full_sizes[] = {1, 7, 17, 33, 65, 129, 255, 300};
  static const int64_t quick_sizes[] = {1, 17, 65, 255};
  static const float alphas[] = {1.0f, 0.5f, -2.0f};
  static const float betas[] = {0.0f, 1.0f, 0.3f};
  static const int64_t pads[] = {0, 3, 16};
  const int quick = quick_mode();
  const int64_t *sizes = quick ? quick_sizes : full_sizes;
  const int count = quick ? 4 : 8;
  int index = 0;
  for (int mi = 0; mi < count; mi++)
    for (int ni = 0; ni < count; ni++)
      for (int ki = 0; ki < count; ki++, index++) {
        gemm_case c = {0};
        c.M = sizes[mi];
        c.N = sizes[ni];
        c.K = sizes[ki];
        c.trans_a = index & 1;
        c.trans_b = (index >> 1) & 1;
        c.alpha = alphas[index % 3];
        c.beta = betas[(index / 3) % 3];
        c.pad_a = pads[index % 3];
        c.pad_b = pads[(index + 1) % 3];
        c.pad_c = pads[(index / 2) % 3];
        check_case(&c);
      }
}

/* All transposes x all alpha/beta values on shapes that cross every level's block sizes
 * (K > KC, M > MC, N > NC) with padded leading dimensions. */
static void test_transposes_and_scaling(void) {
  static const int64_t shapes[][3] = {{37, 45, 300}, {170, 33, 261}, {9, 2085, 70}, {20, 40, 2100}};
  static const float alphas[] = {1.0f, 0.5f, -2.0f};
  static const float betas[] = {0.0f, 1.0f, 0.3f};
  const int shape_count = quick_mode() ? 1 : 4;
  for (int s = 0; s < shape_count; s++)
    for (int t = 0; t < 4; t++)
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
          gemm_case c = {t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], alphas[a], betas[b], 5, 1, 7, 0};
          check_case(&c);
        }
}

/* A product big enough that each of two threads runs several row blocks, K slices and
 * column blocks of its own. */
static void test_large_blocks(void) {
  if (quick_mode()) return;
  gemm_case nn = {0, 0, 260, 1100, 1100, 0.5f, 0.3f, 3, 0, 5, 0};
  gemm_case tt = {1, 1, 260, 1100, 1100, 1.0f, 0.0f, 0, 7, 0, 1};
  check_case(&nn);
  check_case(&tt);
}

/* Called from inside a parallel region each caller runs alone, on its own packing buffer:
 * concurrent products must not disturb each other. */
static void test_called_from_threads(void) {
  enum { callers = 4, M = 64, N = 96, K = 130 }; /* above the threading threshold */
  float *A = random_matrix(M, K, K), *B = random_matrix(K, N, N);
  float *expected = malloc(sizeof(float) * M * N), *got = malloc(sizeof(float) * callers * M * N);
  int mismatches = 0;
  for (int c = 0; c < callers; c++) {
    /* Caller c computes (c + 1) * A B, so a mixed-up buffer shows. */
    damo_gemm_reference(0, 0, M, N, K, (float)(c + 1), A, K, B, N, 0.0f, expected, N);
#pragma omp parallel for num_threads(callers)
    for (int t = 0; t < callers; t++)
      damo_gemm(0, 0, M, N, K, (float)(c + 1), A, K, B, N, 0.0f, got + (size_t)t * M * N, N);
    for (int t = 0; t < callers; t++)
      if (test_close_ratio(got + (size_t)t * M * N, expected, M * N, 1e-6 * (K + 4) * (c + 2), 1e-5) > 1.0)
        mismatches++;
  }
  CHECK(mismatches == 0);
  free(A);
  free(B);
  free(expected);
  free(got);
}

/* beta == 0 must overwrite C without reading it: NaN there may not leak into the result. */
static void test_beta_zero_ignores_nan(void) {
  static const int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 17}, {65, 129, 33}, {300, 255, 7}};
  for (int s = 0; s < 4; s++)
    for (int t = 0; t < 4; t++) {
      gemm_case c = {t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], t == 3 ? -2.0f : 1.0f, 0.0f, 0, 2, 3, 1};
      check_case(&c);
    }
}

/* The layer shapes of the MLP training loop: forward X W, weight gradient X^T dY, input
 * gradient dY W^T, and the small output layer. */
static void test_mlp_shapes(void) {
  static const gemm_case cases[] = {
      {0, 0, 64, 256, 784, 1.0f, 0.0f, 0, 0, 0, 0}, {1, 0, 784, 256, 64, 1.0f, 0.0f, 0, 0, 0, 0},
      {0, 1, 64, 784, 256, 1.0f, 0.0f, 0, 0, 0, 0}, {0, 0, 64, 128, 256, 1.0f, 1.0f, 0, 0, 0, 0},
      {1, 0, 256, 128, 64, 1.0f, 1.0f, 0, 0, 0, 0}, {0, 0, 64, 10, 128, 1.0f, 0.0f, 0, 0, 0, 0},
      {0, 1, 64, 128, 10, 1.0f, 0.0f, 0, 0, 0, 0},  {1, 0, 128, 10, 64, 1.0f, 0.0f, 0, 0, 0, 0},
  };
  const int count = quick_mode() ? 3 : (int)(sizeof cases / sizeof cases[0]);
  for (int i = 0; i < count; i++) check_case(&cases[i]);
}

/* M or N of 0 is a no-op; K == 0 or alpha == 0 leaves beta * C (zeros when beta == 0). */
static void test_degenerate_sizes(void) {
  float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 2, 3, 4, 5, 6};
  float C[4] = {1, 2, 3, 4};
  damo_gemm(0, 0, 0, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
  damo_gemm(0, 0, 2, 0, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
  CHECK(C[0] == 1 && C[3] == 4);
  damo_gemm(0, 0, 2, 2, 0, 1.0f, A, 3, B, 2, 0.5f, C, 2);
  CHECK(C[0] == 0.5f && C[1] == 1.0f && C[2] == 1.5f && C[3] == 2.0f);
  damo_gemm(0, 0, 2, 2, 3, 0.0f, A, 3, B, 2, 2.0f, C, 2);
  CHECK(C[0] == 1.0f && C[3] == 4.0f);
  C[0] = NAN;
  damo_gemm(0, 0, 2, 2, 0, 1.0f, A, 3, B, 2, 0.0f, C, 2);
  CHECK(C[0] == 0.0f && C[1] == 0.0f && C[2] == 0.0f && C[3] == 0.0f);
  /* A 2x3 by 3x2 product worked by hand: [[1,2,3],[4,5,6]] x [[1,2],[3,4],[5,6]]. */
  damo_gemm(0, 0, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
  CHECK(C[0] == 22.0f && C[1] == 28.0f && C[2] == 49.0f && C[3] == 64.0f);
}

static void test_fma_peak_probe(void) {
  double peak = damo_fma_peak_gflops(1);
  CHECK(peak > 0.1 && isfinite(peak));
  fprintf(stderr, "  FMA peak, 1 thread (%s): %.1f GFLOP/s\n", damo_simd_path(), peak);
  /* The sustained run times the same loop for ~0.1 s: the same order of speed (wide bounds:
   * on a busy machine either reading may catch the other work), and about as long as asked. */
  double t0 = omp_get_wtime(), sustained = damo_fma_sustained_gflops(1, 0.1), took = omp_get_wtime() - t0;
  CHECK_MSG(sustained > 0.1 * peak && sustained < 10 * peak, "sustained %.1f vs burst %.1f GFLOP/s", sustained, peak);
  CHECK_MSG(took > 0.05 && took < 2.0, "a 0.1 s sustained run took %.3f s", took);
}

/* When products and loops get threads: the cost of starting a region is measured once asked
 * for (positive, at most the 100 us cap) and kept; work much longer than it gets every thread
 * and shorter work one; a product under 512K multiply-adds stays on one thread whatever the
 * cost; inside a region, or with one thread, there is one. A set cost replaces the
 * measurement, 0 leaving only the fixed thresholds (as the test runner sets it). */
static void test_region_cost(void) {
  damo_set_num_threads(2);
  damo_parallel_region_seconds_set(-1);
  const double region = damo_parallel_region_seconds();
  fprintf(stderr, "  a parallel region of 2 threads: %.1f us\n", region * 1e6);
  CHECK_MSG(region > 0 && region <= 100e-6, "%g s", region);
  CHECK(damo_parallel_region_seconds() == region);
  CHECK(damo_threads_for_seconds(5 * region) == 2 && damo_threads_for_seconds(region / 2) == 1);
  CHECK(damo_gemm_threads(1e12, 1.0) == 2 && damo_gemm_threads(1e5, 1.0) == 1);
  /* 10 ms a region: a 600K product takes far less on any path, even unoptimised. */
  damo_parallel_region_seconds_set(10e-3);
  CHECK(damo_gemm_threads(6e5, 1.0) == 1 && damo_threads_for_seconds(41e-3) == 2);
  damo_parallel_region_seconds_set(0);
  CHECK(damo_gemm_threads(6e5, 1.0) == 2 && damo_gemm_threads(5e5, 1.0) == 1);
  int inside = 0;
#pragma omp parallel num_threads(2)
  if (omp_get_thread_num() == 0) inside = damo_threads_for_seconds(1.0);
  CHECK(inside == 1);
  damo_set_num_threads(1);
  CHECK(damo_threads_for_seconds(1.0) == 1);
  damo_set_num_threads(0);
}

/* The public int8 product (damo_int8_gemm) on every SIMD level against its definition
 * computed here: y = x_scale scale[n] sum_k (q - z) w + bias, relu, q the affine uint8 of x;
 * the path name follows the level; bad arguments are refused; the int8 peak probe reads a
 * plausible rate (on VNNI at least twice the f32 FMA peak: 64 products an instruction). */
static void test_int8_product(void) {
  enum { M = 13, K = 37, N = 45 };
  damo_rng r;
  damo_rng_seed(&r, 3);
  int8_t w[K * N];
  float scale[N], bias[N], x[M * K], y[M * N], want[M * N];
  for (int i = 0; i < K * N; i++) w[i] = (int8_t)((int)(damo_rng_uniform(&r) * 255.0f) - 127);
  for (int n = 0; n < N; n++) scale[n] = 0.001f + 0.01f * damo_rng_uniform(&r), bias[n] = damo_rng_uniform(&r) - 0.5f;
  for (int i = 0; i < M * K; i++) x[i] = 2.0f * damo_rng_uniform(&r) - 1.0f;
  const float xs = 2.0f / 255.0f;
  const int zp = 127;
  for (int relu = 0; relu < 2; relu++) {
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++) {
        int64_t acc = 0;
        for (int k = 0; k < K; k++) {
          long q = lrintf(x[m * K + k] / xs) + zp;
          q = q < 0 ? 0 : q > 255 ? 255 : q;
          acc += (q - zp) * w[k * N + n];
        }
        float v = xs * scale[n] * (float)acc + bias[n];
        want[m * N + n] = relu && v < 0 ? 0.0f : v;
      }
    damo_simd_level levels[3];
    const damo_simd_level original = damo_simd_level_get();
    const int n_levels = supported_levels(levels);
    for (int l = 0; l < n_levels; l++) {
      damo_simd_level_force(levels[l]);
      damo_int8_matrix *mat = NULL;
      damo_int8_rows *rows = NULL;
      CHECK(damo_int8_matrix_new(w, K, N, scale, &mat) == DAMO_OK);
      CHECK(damo_int8_rows_new(mat, x, M, xs, zp, &rows) == DAMO_OK);
      memset(y, 0, sizeof y);
      CHECK(damo_int8_gemm(rows, mat, bias, relu, y, N) == DAMO_OK);
      double worst = 0;
      for (int i = 0; i < M * N; i++) worst = fmax(worst, fabs((double)y[i] - (double)want[i]));
      CHECK_MSG(worst < 1e-4, "%s relu %d: max diff %g", level_name(levels[l]), relu, worst);
      const int avx512 = levels[l] == DAMO_SIMD_AVX512, amx = avx512 && damo_amx_int8_ready();
      const int vnni = avx512 && damo_cpu_has_vnni();
      CHECK(strcmp(damo_int8_path(), amx ? "amx_int8" : vnni ? "avx512_vnni" : levels[l] >= DAMO_SIMD_AVX2 ? "avx2"
                                                                                                 : "portable") == 0);
      damo_int8_rows_free(rows);
      damo_int8_matrix_free(mat);
    }
    damo_simd_level_force(original);
  }
  damo_int8_matrix *mat = NULL, *other = NULL;
  damo_int8_rows *rows = NULL;
  w[7] = -128;
  CHECK(damo_int8_matrix_new(w, K, N, scale, &mat) == DAMO_ERR_INVALID_ARG && !mat);
  CHECK(strstr(damo_last_error(), "value 7 is -128") != NULL);
  w[7] = 0;
  scale[3] = 0.0f;
  CHECK(damo_int8_matrix_new(w, K, N, scale, &mat) == DAMO_ERR_INVALID_ARG && strstr(damo_last_error(), "scale 3"));
  scale[3] = 0.01f;
  CHECK(damo_int8_matrix_new(w, K, N, scale, &mat) == DAMO_OK && damo_int8_matrix_new(w, K, N, scale, &other) == DAMO_OK);
  CHECK(damo_int8_rows_new(mat, x, M, xs, 256, &rows) == DAMO_ERR_INVALID_ARG && !rows);
  CHECK(damo_int8_rows_new(mat, x, M, xs, zp, &rows) == DAMO_OK);
  CHECK(damo_int8_gemm(rows, other, NULL, 0, y, N) == DAMO_ERR_INVALID_ARG);
  CHECK(strstr(damo_last_error(), "quantised for another matrix") != NULL);
  CHECK(damo_int8_gemm(rows, mat, NULL, 0, y, N - 1) == DAMO_ERR_INVALID_ARG);
  damo_int8_rows_free(rows);
  damo_int8_matrix_free(mat);
  damo_int8_matrix_free(other);
  const double peak = damo_int8_peak_gops(1), fma = damo_fma_peak_gflops(1);
  fprintf(stderr, "  int8 peak, 1 thread (%s): %.1f GOP/s (f32 FMA %.1f)\n", damo_int8_path(), peak, fma);
  CHECK(peak > 0.1 && isfinite(peak));
  if (!strcmp(damo_int8_path(), "avx512_vnni") || !strcmp(damo_int8_path(), "amx_int8"))
    CHECK_MSG(peak > 2.0 * fma, "int8 %.1f vs f32 %.1f", peak, fma);
}

/* damo_gemm_gather: op(A) read through offset tables (a shuffled, overlapping view of one
 * buffer, as convolution patches are) and as plain rows (no k_off, as narrow products read
 * it), on every path that has a kernel (AVX2; AVX-512, whose tile is 8 x 16 at most 16
 * columns), 1 and 2 threads, against the reference on the copied A; bit for bit between
 * thread counts; 0 and C untouched where no kernel exists. */
static void check_gather(int N, int trans_b) {
  enum { M = 131, K = 700, BASE = 5000 };
  float *base = malloc(BASE * sizeof(float)), *B = random_matrix(K, N, N);
  for (int i = 0; i < BASE; i++) base[i] = next_value();
  int64_t *row_off = malloc(M * sizeof(int64_t)), *k_off = malloc(K * sizeof(int64_t));
  for (int i = 0; i < M; i++) row_off[i] = (i * 37) % 2000;
  for (int p = 0; p < K; p++) k_off[p] = (p * 11) % 2999;
  float *A = malloc((size_t)M * K * sizeof(float)), *want = malloc(M * N * sizeof(float));
  float *c0 = malloc(M * N * sizeof(float)), *c1 = malloc(M * N * sizeof(float)), *c2 = malloc(M * N * sizeof(float));
  for (int i = 0; i < M; i++)
    for (int p = 0; p < K; p++) A[i * K + p] = base[row_off[i] + k_off[p]];
  for (int i = 0; i < M * N; i++) want[i] = c0[i] = next_value();
  /* B as given is K x N; transposed, the same numbers stored N x K. */
  float *Bt = malloc((size_t)K * N * sizeof(float));
  for (int p = 0; p < K; p++)
    for (int j = 0; j < N; j++) Bt[j * K + p] = B[p * N + j];
  const float *b = trans_b ? Bt : B;
  const int64_t ldb = trans_b ? K : N;
  damo_gemm_reference(0, 0, M, N, K, 0.5f, A, K, B, N, 0.3f, want, N);
  const damo_gemm_gather_a tables = {base, row_off, 0, k_off}, rows = {A, NULL, K, NULL};
  const damo_simd_level original = damo_simd_level_get();
  const damo_simd_level levels[] = {DAMO_SIMD_AVX2, DAMO_SIMD_AVX512};
  for (int run = 0; run < 4; run++) {
    const int l = run / 2;
    const damo_gemm_gather_a view = run % 2 ? rows : tables;
    if (damo_simd_level_force(levels[l]) != levels[l]) continue;
    memcpy(c1, c0, M * N * sizeof(float));
    memcpy(c2, c0, M * N * sizeof(float));
    damo_set_num_threads(1);
    CHECK(damo_gemm_gather(&view, trans_b, M, N, K, 0.5f, b, ldb, 0.3f, c1, N) == 1);
    damo_set_num_threads(2);
    CHECK(damo_gemm_gather(&view, trans_b, M, N, K, 0.5f, b, ldb, 0.3f, c2, N) == 1);
    damo_set_num_threads(0);
    double worst = 0;
    for (int i = 0; i < M * N; i++) worst = fmax(worst, fabs(c1[i] - want[i]));
    CHECK_MSG(worst < 1e-4, "%s gather product N %d trans_b %d %s: %g from the reference", damo_simd_path(), N,
              trans_b, run % 2 ? "rows" : "tables", worst);
    CHECK(memcmp(c1, c2, M * N * sizeof(float)) == 0);
  }
  damo_simd_level_force(DAMO_SIMD_SCALAR);
  memcpy(c2, c1, M * N * sizeof(float));
  CHECK(damo_gemm_gather(&tables, trans_b, M, N, K, 0.5f, b, ldb, 0.3f, c2, N) == 0 &&
        !memcmp(c1, c2, M * N * sizeof(float)));
  damo_simd_level_force(original);
  free(base), free(B), free(Bt), free(row_off), free(k_off), free(A), free(want), free(c0), free(c1), free(c2);
}

static void test_gather(void) {
  for (int trans_b = 0; trans_b < 2; trans_b++) {
    check_gather(40, trans_b); /* AVX-512: its own tile, a full and a partial panel */
    check_gather(12, trans_b); /* AVX-512: the 8 x 16 tile */
    check_gather(16, trans_b);
  }
}

/* y = x W through the CSR of W^T against the reference, on every SIMD path, at sparsities
 * from none to all, with a batch that is not a whole block and a wider y. */
static void test_sparse_product(void) {
  enum { B = 70, K = 130, N = 45, LDY = 50 };
  float *x = random_matrix(B, K, K), *w = random_matrix(K, N, N), *want = malloc(B * N * sizeof(float));
  float *y = malloc(B * LDY * sizeof(float));
  damo_rng r;
  damo_rng_seed(&r, 8);
  const double levels[] = {0.0, 0.5, 0.9, 1.0};
  const damo_simd_level original = damo_simd_level_get();
  for (int l = 0; l < 4; l++) {
    for (int i = 0; i < K * N; i++)
      if (damo_rng_uniform(&r) < levels[l]) w[i] = 0.0f;
    damo_gemm_reference(0, 0, B, N, K, 1.0f, x, K, w, N, 0.0f, want, N);
    damo_csr *wt = NULL;
    CHECK(damo_csr_from_dense_transposed(w, K, N, &wt) == DAMO_OK);
    if (!wt) continue;
    int64_t nonzero = 0;
    for (int i = 0; i < K * N; i++) nonzero += w[i] != 0.0f;
    CHECK(wt->nnz == nonzero && wt->rows == N && wt->cols == K && wt->row_start[N] == nonzero);
    const damo_simd_level paths[] = {DAMO_SIMD_SCALAR, DAMO_SIMD_AVX2, DAMO_SIMD_AVX512};
    for (int p = 0; p < 3; p++) {
      if (damo_simd_level_force(paths[p]) != paths[p]) continue;
      for (int i = 0; i < B * LDY; i++) y[i] = NAN; /* every value written, the gap left alone */
      CHECK(damo_sparse_dense_product(x, B, K, wt, y, LDY) == DAMO_OK);
      double worst = 0;
      int gap_kept = 1;
      for (int i = 0; i < B; i++) {
        for (int j = 0; j < N; j++) worst = fmax(worst, fabs(y[i * LDY + j] - want[i * N + j]));
        for (int j = N; j < LDY; j++) gap_kept &= isnan(y[i * LDY + j]);
      }
      CHECK_MSG(worst < 1e-4 && gap_kept, "%s sparsity %.1f: %g from the reference", damo_simd_path(), levels[l], worst);
    }
    damo_simd_level_force(original);
    CHECK(damo_sparse_dense_product(x, B, K + 1, wt, y, LDY) == DAMO_ERR_INVALID_ARG); /* K must match */
    damo_csr_free(wt);
  }
  damo_csr *none = NULL;
  CHECK(damo_csr_from_dense_transposed(w, 0, N, &none) == DAMO_ERR_INVALID_ARG && none == NULL);
  free(x), free(w), free(want), free(y);
}

/* The direct sparse convolution against a plain loop (double sums) over geometries that
 * exercise its edges: output rows that are not whole tiles, rows wider than a vector,
 * filters that are not whole groups, strides along either axis, asymmetric padding, a 1 x 1
 * output; with and without bias and ReLU, every SIMD path, sparsities from none to all. */
static void test_sparse_conv(void) {
  static const damo_conv2d_shape shapes[] = {
      {2, 9, 37, 3, 3, 5, 17, 1, 1, 1, 0, 2, 3},   /* OW 37: three vectors of columns */
      {3, 17, 14, 32, 5, 5, 64, 1, 1, 2, 2, 2, 2}, /* W2's second convolution, 17 rows */
      {1, 11, 20, 4, 3, 3, 5, 2, 3, 0, 2, 1, 1},   /* strides 2 and 3 */
      {2, 4, 4, 1, 4, 4, 1, 1, 1, 0, 0, 0, 0},     /* one output pixel */
      {1, 30, 6, 2, 1, 2, 33, 3, 2, 0, 0, 0, 0},
  };
  const double levels[] = {0.0, 0.5, 0.9, 1.0};
  const damo_simd_level original = damo_simd_level_get(), paths[] = {DAMO_SIMD_SCALAR, DAMO_SIMD_AVX2, DAMO_SIMD_AVX512};
  damo_rng r;
  damo_rng_seed(&r, 9);
  for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
    const damo_conv2d_shape *s = &shapes[c];
    const int64_t OH = (s->height + s->pad_top + s->pad_bottom - s->kernel_h) / s->stride_h + 1;
    const int64_t OW = (s->width + s->pad_left + s->pad_right - s->kernel_w) / s->stride_w + 1;
    const int64_t K = s->kernel_h * s->kernel_w * s->channels, outs = s->batch * OH * OW * s->filters;
    float *x = random_matrix(s->batch * s->height * s->width, s->channels, s->channels);
    float *w = random_matrix(K, s->filters, s->filters), *bias = random_matrix(1, s->filters, s->filters);
    float *want = malloc((size_t)outs * sizeof(float)), *y = malloc((size_t)(outs + 16) * sizeof(float));
    for (int l = 0; l < 4; l++) {
      for (int64_t i = 0; i < K * s->filters; i++)
        if (damo_rng_uniform(&r) < levels[l]) w[i] = 0.0f;
      const int with_bias = l % 2, relu = c % 2;
      for (int64_t n = 0; n < s->batch; n++)
        for (int64_t oh = 0; oh < OH; oh++)
          for (int64_t ow = 0; ow < OW; ow++)
            for (int64_t f = 0; f < s->filters; f++) {
              double sum = with_bias ? bias[f] : 0.0;
              for (int64_t kh = 0; kh < s->kernel_h; kh++)
                for (int64_t kw = 0; kw < s->kernel_w; kw++) {
                  const int64_t h = oh * s->stride_h + kh - s->pad_top, v = ow * s->stride_w + kw - s->pad_left;
                  if (h < 0 || h >= s->height || v < 0 || v >= s->width) continue;
                  for (int64_t ch = 0; ch < s->channels; ch++)
                    sum += (double)x[((n * s->height + h) * s->width + v) * s->channels + ch] *
                           w[((kh * s->kernel_w + kw) * s->channels + ch) * s->filters + f];
                }
              want[((n * OH + oh) * OW + ow) * s->filters + f] = (float)(relu && sum < 0 ? 0.0 : sum);
            }
      damo_csr *wt = NULL;
      CHECK(damo_csr_from_dense_transposed(w, K, s->filters, &wt) == DAMO_OK);
      const int64_t bytes = damo_sparse_conv2d_scratch_bytes(s, wt);
      void *scratch = bytes > 0 ? aligned_alloc(64, (size_t)(bytes + 63) / 64 * 64) : NULL;
      CHECK(wt && scratch);
      for (int p = 0; p < 3 && wt && scratch; p++) {
        if (damo_simd_level_force(paths[p]) != paths[p]) continue;
        for (int64_t i = 0; i < outs + 16; i++) y[i] = NAN; /* every output written, nothing past them */
        CHECK(damo_sparse_conv2d(s, x, wt, with_bias ? bias : NULL, relu, scratch, y) == DAMO_OK);
        double worst = 0;
        int past_kept = 1;
        for (int64_t i = 0; i < outs; i++) worst = fmax(worst, isnan(y[i]) ? INFINITY : fabs(y[i] - want[i]));
        for (int64_t i = outs; i < outs + 16; i++) past_kept &= isnan(y[i]);
        CHECK_MSG(worst < 1e-4 && past_kept, "shape %zu, %s, sparsity %.1f: %g from the loop", c, damo_simd_path(),
                  levels[l], worst);
      }
      damo_simd_level_force(original);
      if (c == 0 && wt && scratch) { /* a kernel of other taps, a zero stride: refused */
        damo_conv2d_shape other = *s;
        other.kernel_w += 1;
        CHECK(damo_sparse_conv2d(&other, x, wt, NULL, 0, scratch, y) == DAMO_ERR_INVALID_ARG);
        other = *s, other.stride_h = 0;
        CHECK(damo_sparse_conv2d(&other, x, wt, NULL, 0, scratch, y) == DAMO_ERR_INVALID_ARG);
        CHECK(damo_sparse_conv2d_scratch_bytes(&other, wt) == 0);
      }
      free(scratch);
      damo_csr_free(wt);
    }
    free(x), free(w), free(bias), free(want), free(y);
  }
}

/* op(B) packed once (damo_gemm_pack_b) and multiplied by rows of several op(A)s gives
 * damo_gemm's bits: every SIMD level, f32 and bf16 operands, threads 1-3, K over several KC
 * slices with an odd last one, columns not whole panels, every transpose. A narrow op(B), too
 * little storage, or a precision changed after packing multiply the source instead (same bits). */
static void test_packed_b(void) {
  const struct { int64_t M, N, K; } shapes[] = {{40, 200, 1101}, {3, 97, 33}, {29, 64, 300}};
  damo_simd_level levels[3];
  const int level_count = supported_levels(levels);
  const damo_simd_level original = damo_simd_level_get();
  const int original_threads = omp_get_max_threads();
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const int64_t M = shapes[s].M, N = shapes[s].N, K = shapes[s].K;
    const int64_t a_side = M > K ? M : K, b_side = N > K ? N : K;
    float *A = random_matrix(a_side, a_side + 3, a_side + 3); /* read as (M, K) or (K, M), lda K + 3 or M + 3 */
    float *B = random_matrix(b_side, b_side + 5, b_side + 5); /* likewise, ldb N + 5 or K + 5 */
    float *want = malloc((size_t)M * N * sizeof(float)), *got = malloc((size_t)M * N * sizeof(float));
    for (int l = 0; l < level_count; l++)
      for (int bf16 = 0; bf16 <= 1; bf16++)
        for (int t = 0; t < 4; t++) {
          const int trans_a = t & 1, trans_b = t >> 1;
          const int64_t lda = trans_a ? M + 3 : K + 3, ldb = trans_b ? K + 5 : N + 5;
          damo_simd_level_force(levels[l]);
          damo_set_matmul_precision(bf16 ? DAMO_MATMUL_BF16 : DAMO_MATMUL_F32);
          const size_t bytes = damo_gemm_packed_b_bytes(K, N);
          void *storage = aligned_alloc(64, (bytes + 63) / 64 * 64);
          damo_gemm_packed_b pb;
          damo_gemm_pack_b(&pb, trans_b, K, N, B, ldb, storage, bytes);
          const int narrow = !bf16 && levels[l] != DAMO_SIMD_SCALAR && N <= 128;
          CHECK_MSG((pb.data != NULL) == !narrow, "%s bf16 %d N %lld: packed %d", level_name(levels[l]), bf16,
                    (long long)N, pb.data != NULL);
          for (int threads = 1; threads <= 3; threads++) {
            omp_set_num_threads(threads);
            for (int64_t i = 0; i < M * N; i++) want[i] = got[i] = (float)i;
            damo_gemm(trans_a, trans_b, M, N, K, 0.7f, A, lda, B, ldb, 0.5f, want, N);
            damo_gemm_packed(trans_a, M, 0.7f, A, lda, &pb, 0.5f, got, N);
            CHECK_MSG(memcmp(want, got, (size_t)M * N * sizeof(float)) == 0,
                      "%s bf16 %d %d threads M %lld N %lld K %lld ta %d tb %d: not damo_gemm's bits",
                      level_name(levels[l]), bf16, threads, (long long)M, (long long)N, (long long)K, trans_a, trans_b);
          }
          /* packed as bf16, multiplied as f32: the source serves */
          damo_set_matmul_precision(DAMO_MATMUL_F32);
          damo_gemm(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, want, N);
          damo_gemm_packed(trans_a, M, 1.0f, A, lda, &pb, 0.0f, got, N);
          CHECK(memcmp(want, got, (size_t)M * N * sizeof(float)) == 0);
          damo_gemm_pack_b(&pb, trans_b, K, N, B, ldb, storage, bytes / 2); /* too little storage */
          CHECK(pb.data == NULL);
          damo_gemm_packed(trans_a, M, 1.0f, A, lda, &pb, 0.0f, got, N);
          CHECK(memcmp(want, got, (size_t)M * N * sizeof(float)) == 0);
          free(storage);
        }
    free(A), free(B), free(want), free(got);
  }
  damo_set_matmul_precision(DAMO_MATMUL_F32);
  damo_simd_level_force(original);
  omp_set_num_threads(original_threads);
}

int main(void) {
  RUN(test_simd_levels);
  RUN(test_sparse_product);
  RUN(test_sparse_conv);
  RUN(test_gather);
  RUN(test_packed_b);
  RUN(test_degenerate_sizes);
  RUN(test_beta_zero_ignores_nan);
  RUN(test_mlp_shapes);
  RUN(test_transposes_and_scaling);
  RUN(test_odd_shapes);
  RUN(test_large_blocks);
  RUN(test_called_from_threads);
  RUN(test_fma_peak_probe);
  RUN(test_int8_product);
  RUN(test_region_cost);
  return test_summary("gemm");
}
