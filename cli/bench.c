/* bench.c - `damo bench`: damo's side of the benchmark workloads (../shared/BENCHMARKS.md).
 * Each subcommand prints one JSON object on stdout; bench/run.sh runs the PyTorch side
 * with the same shapes and data and writes the side-by-side table.
 *
 *   damo bench peak                       FMA peak (register-only loop), GFLOP/s
 *   damo bench gemm M N K [...]           GEMM GFLOP/s for each M,N,K triple
 *   damo bench w1 --init DIR [--repeats R --accuracy-epochs E]
 *       W1 MLP: writes the initial weights to DIR (for PyTorch), the first batch's loss,
 *       training samples/s over whole epochs, test accuracy after E epochs, peak RSS. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long peak_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int bench_peak(void) {
  double g = damo_fma_peak_gflops(damo_num_threads());
  printf("{\"fma_peak_gflops\": %.2f, \"threads\": %d, \"simd\": \"%s\"}\n", g, damo_num_threads(), damo_simd_path());
  return 0;
}

/* Median GFLOP/s of repeated C = A B over at least ~1 s after a warm-up. */
static int bench_gemm(int argc, char **argv) {
  printf("{\"threads\": %d, \"simd\": \"%s\", \"gemm\": [", damo_num_threads(), damo_simd_path());
  for (int i = 3; i + 2 < argc; i += 3) {
    long M = atol(argv[i]), N = atol(argv[i + 1]), K = atol(argv[i + 2]);
    if (M <= 0 || N <= 0 || K <= 0) {
      fprintf(stderr, "damo bench gemm: sizes must be positive\n");
      return 2;
    }
    float *A = malloc(sizeof(float) * (size_t)(M * K)), *B = malloc(sizeof(float) * (size_t)(K * N));
    float *C = malloc(sizeof(float) * (size_t)(M * N));
    if (!A || !B || !C) return 1;
    damo_rng r;
    damo_rng_seed(&r, 1);
    for (long k = 0; k < M * K; k++) A[k] = damo_rng_uniform(&r) - 0.5f;
    for (long k = 0; k < K * N; k++) B[k] = damo_rng_uniform(&r) - 0.5f;
    double flop = 2.0 * (double)M * (double)N * (double)K;
    damo_sgemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N); /* warm-up: page faults, packing buffers */
    int reps = (int)fmax(3, fmin(1e6, 0.2e9 / flop));      /* ~0.1-1 s per sample */
    double samples[7];
    for (int s = 0; s < 7; s++) {
      double t0 = now();
      for (int k = 0; k < reps; k++) damo_sgemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
      samples[s] = flop * reps / (now() - t0) / 1e9;
    }
    qsort(samples, 7, sizeof *samples, cmp_double);
    printf("%s{\"m\": %ld, \"n\": %ld, \"k\": %ld, \"gflops\": %.2f, \"min\": %.2f, \"max\": %.2f}", i > 3 ? ", " : "", M,
           N, K, samples[3], samples[0], samples[6]);
    free(A);
    free(B);
    free(C);
  }
  printf("]}\n");
  return 0;
}

/* The W1 model of BENCHMARKS.md; the Rescaling layer does the /255. */
static damo_model *w1_model(uint64_t seed) {
  const int64_t in[] = {28, 28};
  damo_model *m = damo_sequential_new(2, in);
  damo_model_add(m, damo_rescaling(1.0f / 255.0f, 0.0f));
  damo_model_add(m, damo_flatten());
  damo_model_add(m, damo_dense(256, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(128, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(10, DAMO_ACT_NONE));
  damo_compile_options c = {damo_adam(1e-3f), DAMO_LOSS_SPARSE_CATEGORICAL_CE, DAMO_METRIC_ACCURACY};
  c.optimizer.schedule.kind = DAMO_SCHED_COSINE;
  if (damo_model_build(m, seed) != DAMO_OK || damo_model_compile(m, &c) != DAMO_OK) {
    damo_model_free(m);
    return NULL;
  }
  return m;
}

static int bench_w1(int argc, char **argv) {
  const char *init = cli_opt(argc, argv, "--init");
  long repeats = 3, acc_epochs = 10;
  if (cli_opt(argc, argv, "--repeats") && !cli_parse_long(cli_opt(argc, argv, "--repeats"), "--repeats", 1, 100, &repeats))
    return 2;
  if (cli_opt(argc, argv, "--accuracy-epochs") &&
      !cli_parse_long(cli_opt(argc, argv, "--accuracy-epochs"), "--accuracy-epochs", 0, 1000, &acc_epochs))
    return 2;
  if (!init) {
    fprintf(stderr, "damo bench w1: --init DIR is required (the initial weights go there)\n");
    return 2;
  }
  damo_tensor *x, *y, *xt, *yt;
  if (damo_dataset_load("fashion-mnist", "train", &x, &y) != DAMO_OK ||
      damo_dataset_load("fashion-mnist", "test", &xt, &yt) != DAMO_OK)
    return cli_fail("bench w1");
  damo_model *m = w1_model(42);
  if (!m || damo_model_save(m, init) != DAMO_OK) return cli_fail("bench w1");
  /* Loss of the first 64 training rows at the initial weights: PyTorch must agree. */
  damo_tensor *x0 = damo_tensor_slice_rows(x, 0, 64), *y0 = damo_tensor_slice_rows(y, 0, 64);
  float first_loss;
  if (damo_model_evaluate(m, x0, y0, 64, &first_loss, NULL) != DAMO_OK) return cli_fail("bench w1");

  damo_fit_options fo = {.epochs = 1, .batch_size = 64, .seed = 1, .verbose = 0};
  damo_tensor *xw = damo_tensor_slice_rows(x, 0, 64 * 20), *yw = damo_tensor_slice_rows(y, 0, 64 * 20);
  if (damo_model_fit(m, xw, yw, &fo, NULL) != DAMO_OK) return cli_fail("bench w1"); /* warm-up */
  printf("{\"threads\": %d, \"simd\": \"%s\", \"first_loss\": %.7f, \"epoch_seconds\": [", damo_num_threads(),
         damo_simd_path(), first_loss);
  for (long r = 0; r < repeats; r++) {
    fo.seed = (uint64_t)r + 1;
    double t0 = now();
    if (damo_model_fit(m, x, y, &fo, NULL) != DAMO_OK) return cli_fail("bench w1");
    printf("%s%.4f", r ? ", " : "", now() - t0);
    fflush(stdout);
  }
  printf("], \"train_examples\": %lld", (long long)x->shape[0]);
  damo_model_free(m);
  if (acc_epochs > 0) { /* from the same initial weights, the whole budget */
    damo_model *fresh;
    if (damo_model_load(init, &fresh) != DAMO_OK) return cli_fail("bench w1");
    fo.epochs = (int)acc_epochs;
    fo.seed = 42;
    double t0 = now();
    if (damo_model_fit(fresh, x, y, &fo, NULL) != DAMO_OK) return cli_fail("bench w1");
    double took = now() - t0;
    float loss, acc;
    if (damo_model_evaluate(fresh, xt, yt, 256, &loss, &acc) != DAMO_OK) return cli_fail("bench w1");
    printf(", \"accuracy_epochs\": %ld, \"accuracy_seconds\": %.2f, \"test_loss\": %.4f, \"test_accuracy\": %.4f",
           acc_epochs, took, loss, acc);
    damo_model_free(fresh);
  }
  printf(", \"peak_rss_kb\": %ld}\n", peak_rss_kb());
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_tensor_free(xt);
  damo_tensor_free(yt);
  damo_tensor_free(x0);
  damo_tensor_free(y0);
  damo_tensor_free(xw);
  damo_tensor_free(yw);
  return 0;
}

int cli_bench(int argc, char **argv) {
  const char *what = argc > 2 ? argv[2] : "";
  if (!strcmp(what, "peak")) return bench_peak();
  if (!strcmp(what, "gemm")) return bench_gemm(argc, argv);
  if (!strcmp(what, "w1")) return bench_w1(argc, argv);
  fprintf(stderr, "usage: damo bench peak | gemm M N K [M N K ...] | w1 --init DIR [--repeats R --accuracy-epochs E]\n"
                  "(make bench runs these next to PyTorch and writes bench/RESULTS.md)\n");
  return 2;
}
