/* bench.c - `damo bench`: damo's side of the benchmark workloads (../shared/BENCHMARKS.md).
 * Each subcommand prints one JSON object on stdout; bench/run.sh runs the PyTorch side
 * with the same shapes and data and writes the side-by-side table.
 *
 *   damo bench peak                       FMA peak (register-only loop), GFLOP/s
 *   damo bench gemm M N K [...]           GEMM GFLOP/s for each M,N,K triple
 *   damo bench gemm-bf16 M N K [...]      the same with bf16 operands (G2)
 *   damo bench gemm-int8 M N K [...]      the int8 product of quantised layers (u8 x s8),
 *                                         GOP/s against the int8 path's peak
 *   damo bench fit --config FILE --init DIR [--repeats R --accuracy-epochs E]
 *       a Fashion-MNIST workload (W1, W3, ...) from its model config: writes the initial
 *       weights to DIR (for PyTorch), the first batch's loss, whole-epoch training times,
 *       test accuracy after E epochs, peak RSS.
 *   damo bench gpt2 --config FILE --init DIR [--steps N --probe-steps P]
 *       W4, GPT-2 on Moby Dick (cli_bench_gpt2 in cli/gpt.c): initial weights and tokens to
 *       DIR, the initial validation loss, every step's seconds, the final validation loss,
 *       peak RSS.
 *   damo bench bert --config FILE --init DIR [--epochs E --probe-steps P]
 *       W5, BERT fine-tuned on SpamAssassin (cli_bench_bert in cli/bert.c): the same, with
 *       the test F1.
 * main.c dispatches fit, gpt2 and bert by the kind of --config; all end with
 * cli_bench_finish. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

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
  double g = damo_fma_peak_gflops(damo_num_threads()), b = damo_bf16_peak_gflops(damo_num_threads());
  double q = damo_int8_peak_gops(damo_num_threads());
  printf("{\"fma_peak_gflops\": %.2f, \"bf16_peak_gflops\": %.2f, \"bf16_path\": \"%s\", \"int8_peak_gops\": %.2f, "
         "\"int8_path\": \"%s\", \"threads\": %d, \"simd\": \"%s\"}\n",
         g, b, damo_bf16_matmul_path(), q, damo_int8_path(), damo_num_threads(), damo_simd_path());
  return 0;
}

/* One product of a bench gemm row: f32 or bf16 through damo_sgemm, or int8 (gemm-int8) on
 * weights and rows quantised once beforehand, so that only the product is timed. */
typedef struct gemm_case {
  long M, N, K;
  float *A, *B, *C;
  damo_int8_matrix *w8;
  damo_int8_rows *x8;
} gemm_case;

static void run_product(const gemm_case *c) {
  if (c->w8) damo_int8_gemm(c->x8, c->w8, NULL, 0, c->C, c->N);
  else damo_sgemm(0, 0, c->M, c->N, c->K, 1.0f, c->A, c->K, c->B, c->N, 0.0f, c->C, c->N);
}

/* Random operands; for int8 the quantised forms of them (per-column weight scales). */
static int gemm_case_new(gemm_case *c, long M, long N, long K, int int8) {
  memset(c, 0, sizeof *c);
  c->M = M, c->N = N, c->K = K;
  c->A = malloc(sizeof(float) * (size_t)(M * K)), c->B = malloc(sizeof(float) * (size_t)(K * N));
  c->C = malloc(sizeof(float) * (size_t)(M * N));
  if (!c->A || !c->B || !c->C) return 0;
  damo_rng r;
  damo_rng_seed(&r, 1);
  for (long k = 0; k < M * K; k++) c->A[k] = damo_rng_uniform(&r) - 0.5f;
  for (long k = 0; k < K * N; k++) c->B[k] = damo_rng_uniform(&r) - 0.5f;
  if (!int8) return 1;
  int8_t *q = malloc((size_t)(K * N));
  float *scale = malloc(sizeof(float) * (size_t)N);
  int ok = q && scale;
  for (long n = 0; ok && n < N; n++) scale[n] = 0.5f / 127.0f;
  for (long k = 0; ok && k < K * N; k++) q[k] = (int8_t)lrintf(c->B[k] / scale[k % N]);
  ok = ok && damo_int8_matrix_new(q, K, N, scale, &c->w8) == DAMO_OK &&
       damo_int8_rows_new(c->w8, c->A, M, 1.0f / 255.0f, 128, &c->x8) == DAMO_OK;
  free(q);
  free(scale);
  return ok;
}

static void gemm_case_free(gemm_case *c) {
  free(c->A), free(c->B), free(c->C);
  damo_int8_rows_free(c->x8);
  damo_int8_matrix_free(c->w8);
}

/* Median GFLOP/s (int8: GOP/s) of repeated C = A B: seven samples of ~0.2 s after a warm-up,
 * each right after a ~0.2 s run of the peak loop, so that every product sample has a peak
 * reading of the same length taken in the same moment (this host's speed drifts by +-5% from
 * one second to the next); the efficiency quoted is the median of the seven per-sample ratios.
 * f32 is judged against the FMA peak, bf16 on a bf16 unit against that unit's, int8 against
 * the int8 path's (VPDPBUSD where the CPU has AVX512-VNNI). */
static int bench_gemm(int argc, char **argv, int int8) {
  printf("{\"threads\": %d, \"simd\": \"%s\", \"matmul_precision\": \"%s\", \"bf16_path\": \"%s\", "
         "\"int8_path\": \"%s\", \"gemm\": [", damo_num_threads(), damo_simd_path(),
         int8 ? "int8" : damo_get_matmul_precision() == DAMO_MATMUL_BF16 ? "bf16" : "f32", damo_bf16_matmul_path(),
         damo_int8_path());
  const int bf16_unit = !int8 && damo_get_matmul_precision() == DAMO_MATMUL_BF16 &&
                        strcmp(damo_bf16_matmul_path(), "emulated");
  const int threads = damo_num_threads();
  for (int i = 3; i + 2 < argc; i += 3) {
    long M = atol(argv[i]), N = atol(argv[i + 1]), K = atol(argv[i + 2]);
    if (M <= 0 || N <= 0 || K <= 0) {
      fprintf(stderr, "damo bench gemm: sizes must be positive\n");
      return 2;
    }
    gemm_case c;
    if (!gemm_case_new(&c, M, N, K, int8)) {
      gemm_case_free(&c);
      return cli_fail("bench gemm");
    }
    double flop = 2.0 * (double)M * (double)N * (double)K;
    /* Warm-up of at least half a second: page faults, packing buffers, and the host, whose
     * cores run the first few hundred milliseconds of a busy process far slower (the first
     * size measured used to read 40-70% of peak and the next one 85%). The warm-up's pace
     * sizes the samples to ~0.2 s each. */
    double warm_start = cli_seconds(), warm_time;
    long warm_reps = 0;
    do {
      run_product(&c);
      warm_reps++;
      warm_time = cli_seconds() - warm_start;
    } while (warm_time < 0.5);
    int reps = (int)fmax(3, fmin(1e6, 0.2 * warm_reps / warm_time));
    double samples[7], peaks[7], ratios[7];
    for (int s = 0; s < 7; s++) {
      peaks[s] = int8 ? damo_int8_peak_gops(threads) : bf16_unit ? damo_bf16_peak_gflops(threads)
                                                                 : damo_fma_sustained_gflops(threads, 0.2);
      double t0 = cli_seconds();
      for (int k = 0; k < reps; k++) run_product(&c);
      samples[s] = flop * reps / (cli_seconds() - t0) / 1e9;
      ratios[s] = peaks[s] > 0 ? samples[s] / peaks[s] : 0;
    }
    qsort(samples, 7, sizeof *samples, cmp_double);
    qsort(peaks, 7, sizeof *peaks, cmp_double);
    qsort(ratios, 7, sizeof *ratios, cmp_double);
    double burst_peak = int8 ? damo_int8_peak_gops(threads) : bf16_unit ? damo_bf16_peak_gflops(threads)
                                                                       : damo_fma_peak_gflops(threads);
    printf("%s{\"m\": %ld, \"n\": %ld, \"k\": %ld, \"gflops\": %.2f, \"min\": %.2f, \"max\": %.2f, "
           "\"peak_nearby\": %.2f, \"efficiency\": %.4f, \"efficiency_min\": %.4f, \"efficiency_max\": %.4f, "
           "\"burst_peak\": %.2f, \"peak_of\": \"%s\"}",
           i > 3 ? ", " : "", M, N, K, samples[3], samples[0], samples[6], peaks[3], ratios[3], ratios[0], ratios[6],
           burst_peak, int8 ? damo_int8_path() : bf16_unit ? damo_bf16_matmul_path() : "f32 FMA");
    gemm_case_free(&c);
  }
  printf("]}\n");
  return 0;
}

/* A workload given as a model config (examples/configs/): its layers, optimizer and
 * batch size. Writes the initial weights to DIR for the PyTorch side, the first batch's
 * loss at those weights, whole-epoch training times, then the test accuracy after the
 * accuracy budget, trained from the same initial weights. */
int cli_bench_fit(int argc, char **argv) {
  const char *init = cli_opt(argc, argv, "--init"), *config = cli_opt(argc, argv, "--config");
  long repeats = 3, acc_epochs = 0;
  if (cli_opt(argc, argv, "--repeats") && !cli_parse_long(cli_opt(argc, argv, "--repeats"), "--repeats", 1, 100, &repeats))
    return 2;
  if (cli_opt(argc, argv, "--accuracy-epochs") &&
      !cli_parse_long(cli_opt(argc, argv, "--accuracy-epochs"), "--accuracy-epochs", 0, 1000, &acc_epochs))
    return 2;
  if (!init || !config) {
    fprintf(stderr, "damo bench fit: --config FILE and --init DIR are required\n");
    return 2;
  }
  damo_tensor *x, *y, *xt, *yt;
  if (damo_dataset_load("fashion-mnist", "train", &x, &y) != DAMO_OK ||
      damo_dataset_load("fashion-mnist", "test", &xt, &yt) != DAMO_OK)
    return cli_fail("bench fit");
  damo_model *m;
  damo_compile_options copt;
  damo_fit_options fo = {.epochs = 1, .batch_size = 64, .seed = 42, .verbose = 0};
  if (damo_model_from_config_file(config, &m) != DAMO_OK) return cli_fail("bench fit");
  if (damo_model_config_fit_options(m, &fo) != DAMO_OK || damo_model_config_compile_options(m, &copt) != DAMO_OK ||
      damo_model_build(m, fo.seed) != DAMO_OK || damo_model_compile(m, &copt) != DAMO_OK ||
      (cli_rank() == 0 && damo_model_save(m, init) != DAMO_OK))
    return cli_fail("bench fit");
  if (!cli_data_parallel_options(argc, argv, &fo.parallel)) return 2;
  fo.verbose = 0;
  fo.dist = cli_world(); /* under mpirun: data-parallel epochs (rank 0 reports) */
  int64_t batch = fo.batch_size;
  /* Loss of the first batch at the initial weights: PyTorch must agree. */
  damo_tensor *x0 = damo_tensor_slice_rows(x, 0, batch), *y0 = damo_tensor_slice_rows(y, 0, batch);
  float first_loss;
  if (damo_model_evaluate(m, x0, y0, (int)batch, &first_loss, NULL) != DAMO_OK) return cli_fail("bench fit");

  fo.epochs = 1;
  damo_tensor *xw = damo_tensor_slice_rows(x, 0, batch * 20), *yw = damo_tensor_slice_rows(y, 0, batch * 20);
  if (damo_model_fit(m, xw, yw, &fo, NULL) != DAMO_OK) return cli_fail("bench fit"); /* warm-up */
  printf("{\"threads\": %d, \"simd\": \"%s\", \"batch\": %lld, \"first_loss\": %.7f, \"epoch_seconds\": [",
         damo_num_threads(), damo_simd_path(), (long long)batch, first_loss);
  for (long r = 0; r < repeats; r++) {
    fo.seed = (uint64_t)r + 1;
    double t0 = cli_seconds();
    if (damo_model_fit(m, x, y, &fo, NULL) != DAMO_OK) return cli_fail("bench fit");
    printf("%s%.4f", r ? ", " : "", cli_seconds() - t0);
    fflush(stdout);
  }
  printf("], \"train_examples\": %lld", (long long)x->shape[0]);
  damo_model_free(m);
  if (acc_epochs > 0) { /* from the same initial weights, the whole budget */
    damo_model *fresh;
    if (damo_dist_barrier(cli_world()) != DAMO_OK || damo_model_load(init, &fresh) != DAMO_OK) return cli_fail("bench fit");
    fo.epochs = (int)acc_epochs;
    fo.seed = 42;
    double t0 = cli_seconds();
    if (damo_model_fit(fresh, x, y, &fo, NULL) != DAMO_OK) return cli_fail("bench fit");
    double took = cli_seconds() - t0;
    float loss, acc;
    if (damo_model_evaluate(fresh, xt, yt, 256, &loss, &acc) != DAMO_OK) return cli_fail("bench fit");
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

/* Q1: the test split of --data predicted whole at batch B, R times; the median rate and the
 * accuracy (argmax against the labels) as one JSON object. */
int cli_bench_predict(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *data = cli_opt(argc, argv, "--data");
  long batch = 64, repeats = 3;
  if (!dir || !data) {
    fprintf(stderr, "damo bench predict: --model DIR and --data SPEC are required\n");
    return 2;
  }
  if ((cli_opt(argc, argv, "--batch-size") &&
       !cli_parse_long(cli_opt(argc, argv, "--batch-size"), "--batch-size", 1, 1 << 20, &batch)) ||
      (cli_opt(argc, argv, "--repeats") && !cli_parse_long(cli_opt(argc, argv, "--repeats"), "--repeats", 1, 99, &repeats)))
    return 2;
  damo_model *m;
  damo_tensor *x, *y, *p = NULL;
  if (damo_model_load(dir, &m) != DAMO_OK) return cli_fail("bench predict");
  if (cli_load_data(data, "test", NULL, &x, &y) != DAMO_OK) {
    damo_model_free(m);
    return cli_fail("bench predict");
  }
  double seconds[99];
  int rc = 0;
  /* One untimed pass first: page faults, graph building, packing buffers. */
  for (long r = -1; r < repeats && rc == 0; r++) {
    damo_tensor_free(p);
    p = NULL;
    double t0 = cli_seconds();
    if (damo_model_predict(m, x, (int)batch, &p) != DAMO_OK) rc = cli_fail("bench predict");
    if (r >= 0) seconds[r] = cli_seconds() - t0;
  }
  if (rc == 0) {
    const int64_t n = p->shape[0], classes = damo_tensor_numel(p) / n;
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
      const float *row = damo_tensor_f32(p) + i * classes;
      int64_t best = 0;
      for (int64_t c = 1; c < classes; c++) best = row[c] > row[best] ? c : best;
      correct += y->dtype == DAMO_I32 && best == damo_tensor_i32(y)[i];
    }
    qsort(seconds, (size_t)repeats, sizeof *seconds, cmp_double);
    printf("{\"threads\": %d, \"simd\": \"%s\", \"int8\": %s, \"batch\": %ld, \"examples\": %lld, "
           "\"examples_per_s\": %.1f, \"accuracy\": %.4f, \"seconds\": [",
           damo_num_threads(), damo_simd_path(), damo_model_is_quantized(m) ? "true" : "false", batch, (long long)n,
           (double)n / seconds[repeats / 2], (double)correct / (double)n);
    for (long r = 0; r < repeats; r++) printf("%s%.4f", r ? ", " : "", seconds[r]);
    printf("], \"peak_rss_kb\": %ld}\n", peak_rss_kb());
  }
  damo_tensor_free(p);
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_model_free(m);
  return rc;
}

/* Median seconds of a call: repeated for ~0.2 s after a warm-up, 5 samples. */
static double median_seconds(void (*call)(void *), void *ctx) {
  double t0 = cli_seconds();
  long reps = 0;
  do call(ctx), reps++;
  while (cli_seconds() - t0 < 0.2);
  double samples[5];
  for (int s = 0; s < 5; s++) {
    const double t = cli_seconds();
    for (long k = 0; k < reps; k++) call(ctx);
    samples[s] = (cli_seconds() - t) / (double)reps;
  }
  qsort(samples, 5, sizeof *samples, cmp_double);
  return samples[2];
}

typedef struct sparse_case {
  long B, K, N;
  const float *x, *w;
  const damo_csr *wt;
  float *y;
} sparse_case;

static void run_dense(void *p) {
  const sparse_case *c = p;
  damo_sgemm(0, 0, c->B, c->N, c->K, 1.0f, c->x, c->K, c->w, c->N, 0.0f, c->y, c->N);
}

static void run_sparse(void *p) {
  const sparse_case *c = p;
  damo_sparse_dense_product(c->x, c->B, c->K, c->wt, c->y, c->N);
}

/* damo bench sparse B K N: y = x W (x B x K) by the dense GEMM and by the CSR product at
 * sparsities 50-99% of W (zeros at random places): where the sparse one starts to win. */
static int bench_sparse(int argc, char **argv) {
  const long B = argc > 3 ? atol(argv[3]) : 0, K = argc > 4 ? atol(argv[4]) : 0, N = argc > 5 ? atol(argv[5]) : 0;
  if (B <= 0 || K <= 0 || N <= 0) {
    fprintf(stderr, "damo bench sparse B K N: three positive sizes\n");
    return 2;
  }
  float *x = malloc(sizeof(float) * (size_t)(B * K)), *w = malloc(sizeof(float) * (size_t)(K * N));
  float *y = malloc(sizeof(float) * (size_t)(B * N)), *want = malloc(sizeof(float) * (size_t)(B * N));
  if (!x || !w || !y || !want) return 1;
  damo_rng r;
  damo_rng_seed(&r, 1);
  for (long k = 0; k < B * K; k++) x[k] = damo_rng_uniform(&r) - 0.5f;
  static const double levels[] = {0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99};
  printf("{\"threads\": %d, \"simd\": \"%s\", \"b\": %ld, \"k\": %ld, \"n\": %ld, \"levels\": [", damo_num_threads(),
         damo_simd_path(), B, K, N);
  double crossover = -1;
  int rc = 0;
  for (size_t l = 0; l < sizeof levels / sizeof *levels && rc == 0; l++) {
    for (long k = 0; k < K * N; k++) w[k] = damo_rng_uniform(&r) < levels[l] ? 0.0f : damo_rng_uniform(&r) - 0.5f;
    damo_csr *wt = NULL;
    if (damo_csr_from_dense_transposed(w, K, N, &wt) != DAMO_OK) {
      rc = cli_fail("bench sparse");
      break;
    }
    sparse_case c = {B, K, N, x, w, wt, want};
    const double dense = median_seconds(run_dense, &c);
    c.y = y;
    const double sparse = median_seconds(run_sparse, &c);
    double worst = 0;
    for (long i = 0; i < B * N; i++) worst = fmax(worst, fabs((double)y[i] - (double)want[i]));
    if (crossover < 0 && sparse < dense) crossover = 100.0 * (double)wt->nnz / (double)(K * N);
    printf("%s{\"sparsity\": %.4f, \"dense_ms\": %.4f, \"sparse_ms\": %.4f, \"speedup\": %.2f, \"max_abs_diff\": %.2e}",
           l ? ", " : "", 1.0 - (double)wt->nnz / (double)(K * N), 1e3 * dense, 1e3 * sparse, dense / sparse, worst);
    damo_csr_free(wt);
  }
  printf("], \"first_faster_at_density_percent\": %.2f}\n", crossover);
  free(x), free(w), free(y), free(want);
  return rc;
}

/* One conv2d layer's forward both ways: the dense op in a graph (what a dense model runs)
 * and the direct sparse convolution. */
typedef struct sparse_conv_case {
  damo_graph *g;
  damo_conv2d_shape s;
  const float *x;
  const damo_csr *wt;
  void *scratch;
  float *y;
} sparse_conv_case;

static void run_dense_conv(void *p) { damo_graph_forward(((sparse_conv_case *)p)->g, 0); }

static void run_sparse_conv(void *p) {
  const sparse_conv_case *c = p;
  damo_sparse_conv2d(&c->s, c->x, c->wt, NULL, 0, c->scratch, c->y);
}

/* damo bench sparse-conv N H W C K F: a K x K stride-1 "same" convolution of a batch of N
 * H x W x C images into F filters, by the dense conv2d op and by the direct sparse one at
 * kernel sparsities 50-99% (zeros at random places): where the sparse one starts to win. */
static int bench_sparse_conv(int argc, char **argv) {
  long v[6];
  for (int i = 0; i < 6; i++) v[i] = argc > 3 + i ? atol(argv[3 + i]) : 0;
  if (v[0] <= 0 || v[1] <= 0 || v[2] <= 0 || v[3] <= 0 || v[4] <= 0 || v[5] <= 0) {
    fprintf(stderr, "damo bench sparse-conv N H W C K F: six positive sizes (batch, height, width, channels, kernel, "
            "filters)\n");
    return 2;
  }
  int pb, pa, qb, qa;
  damo_conv2d_same_padding((int)v[1], (int)v[4], 1, &pb, &pa);
  damo_conv2d_same_padding((int)v[2], (int)v[4], 1, &qb, &qa);
  sparse_conv_case c = {NULL, {v[0], v[1], v[2], v[3], v[4], v[4], v[5], 1, 1, pb, pa, qb, qa}, NULL, NULL, NULL, NULL};
  const int64_t xshape[4] = {v[0], v[1], v[2], v[3]}, kshape[4] = {v[4], v[4], v[3], v[5]};
  const int64_t K = v[4] * v[4] * v[3], F = v[5], outputs = v[0] * v[1] * v[2] * v[5];
  damo_tensor *kernel = damo_tensor_new(DAMO_F32, 4, kshape);
  float *x = malloc(sizeof(float) * (size_t)(v[0] * v[1] * v[2] * v[3])), *y = malloc(sizeof(float) * (size_t)outputs);
  c.g = damo_graph_new(1);
  damo_node *in = damo_input(c.g, "x", DAMO_F32, 4, xshape);
  damo_node *out = damo_conv2d(c.g, in, damo_param(c.g, "kernel", kernel, NULL), 1, 1, pb, qb, pa, qa);
  if (!kernel || !x || !y || damo_graph_compile(c.g, NULL, 1, &out) != DAMO_OK || damo_graph_bind(c.g, in, x) != DAMO_OK) {
    int rc = cli_fail("bench sparse-conv");
    damo_graph_free(c.g), damo_tensor_free(kernel), free(x), free(y);
    return rc;
  }
  damo_rng r;
  damo_rng_seed(&r, 1);
  for (long k = 0; k < v[0] * v[1] * v[2] * v[3]; k++) x[k] = damo_rng_uniform(&r) - 0.5f;
  float *w = damo_tensor_f32(kernel);
  static const double levels[] = {0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99};
  printf("{\"threads\": %d, \"simd\": \"%s\", \"batch\": %ld, \"height\": %ld, \"width\": %ld, \"channels\": %ld, "
         "\"kernel\": %ld, \"filters\": %ld, \"levels\": [", damo_num_threads(), damo_simd_path(), v[0], v[1], v[2], v[3],
         v[4], v[5]);
  double crossover = -1;
  int rc = 0;
  c.x = x, c.y = y;
  for (size_t l = 0; l < sizeof levels / sizeof *levels && rc == 0; l++) {
    for (long k = 0; k < K * F; k++) w[k] = damo_rng_uniform(&r) < levels[l] ? 0.0f : damo_rng_uniform(&r) - 0.5f;
    damo_csr *wt = NULL;
    if (damo_csr_from_dense_transposed(w, K, F, &wt) != DAMO_OK ||
        !(c.scratch = aligned_alloc(64, (size_t)(damo_sparse_conv2d_scratch_bytes(&c.s, wt) + 63) / 64 * 64))) {
      damo_csr_free(wt);
      rc = cli_fail("bench sparse-conv");
      break;
    }
    c.wt = wt;
    const double dense = median_seconds(run_dense_conv, &c), sparse = median_seconds(run_sparse_conv, &c);
    const float *want = damo_node_data(out);
    double worst = 0;
    for (long i = 0; i < outputs; i++) worst = fmax(worst, fabs((double)y[i] - (double)want[i]));
    if (crossover < 0 && sparse < dense) crossover = 100.0 * (double)wt->nnz / (double)(K * F);
    printf("%s{\"sparsity\": %.4f, \"dense_ms\": %.4f, \"sparse_ms\": %.4f, \"speedup\": %.2f, \"max_abs_diff\": %.2e}",
           l ? ", " : "", 1.0 - (double)wt->nnz / (double)(K * F), 1e3 * dense, 1e3 * sparse, dense / sparse, worst);
    free(c.scratch);
    damo_csr_free(wt);
  }
  printf("], \"first_faster_at_density_percent\": %.2f}\n", crossover);
  damo_graph_free(c.g), damo_tensor_free(kernel), free(x), free(y);
  return rc;
}

/* peak, gemm and sparse; main.c hands fit, gpt2 and bert to the handler of the --config's kind. */
int cli_bench(int argc, char **argv) {
  if (!strcmp(argv[2], "gemm-bf16")) damo_set_matmul_precision(DAMO_MATMUL_BF16); /* G2 */
  if (!strcmp(argv[2], "sparse")) return bench_sparse(argc, argv);
  if (!strcmp(argv[2], "sparse-conv")) return bench_sparse_conv(argc, argv);
  return !strcmp(argv[2], "peak") ? bench_peak() : bench_gemm(argc, argv, !strcmp(argv[2], "gemm-int8"));
}

void cli_bench_finish(double *seconds, const float *losses, long n) {
  printf(", \"matmul_precision\": \"%s\", \"step_losses\": [", damo_get_matmul_precision() == DAMO_MATMUL_BF16 ? "bf16" : "f32");
  for (long s = 0; s < n; s++) printf("%s%.5f", s ? ", " : "", (double)losses[s]);
  printf("]");
  qsort(seconds, (size_t)n, sizeof *seconds, cmp_double);
  printf(", \"median_step_seconds\": %.5f, \"peak_rss_kb\": %ld}\n", n > 0 ? seconds[n / 2] : 0.0, peak_rss_kb());
}

int cli_write_i32(const char *dir, const char *name, const int32_t *v, int64_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return damo_write_file_atomic(path, v, (size_t)n * sizeof *v) == DAMO_OK;
}

/* damo bench decode: GPT-2 decoding speed through the KV cache, one sequence and n sequences
 * stepped together (damo_gpt2_cache_step_many, what damo serve's slots run): per n in 1, 2, 4,
 * ... up to --rows, the median step time over --steps steps after a 16-token prompt, as JSON. */
int cli_bench_decode(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model");
  long rows = 8, steps = 16;
  if (!dir) {
    fprintf(stderr, "damo bench decode: --model DIR is required\n");
    return 2;
  }
  if ((cli_opt(argc, argv, "--rows") && !cli_parse_long(cli_opt(argc, argv, "--rows"), "--rows", 1, 256, &rows)) ||
      (cli_opt(argc, argv, "--steps") && !cli_parse_long(cli_opt(argc, argv, "--steps"), "--steps", 1, 512, &steps)))
    return 2;
  damo_gpt2 *m = NULL;
  const int bf16 = damo_get_matmul_precision() == DAMO_MATMUL_BF16;
  if (damo_gpt2_load(dir, &m) != DAMO_OK || damo_gpt2_set_inference_precision(m, bf16 ? DAMO_BF16 : DAMO_F32) != DAMO_OK)
    return cli_fail("bench decode");
  const int64_t V = damo_gpt2_get_config(m)->vocab_size, prompt = 16;
  if (prompt + steps > damo_gpt2_get_config(m)->n_positions) {
    fprintf(stderr, "damo bench decode: %ld steps after a %lld-token prompt do not fit the context\n", steps,
            (long long)prompt);
    damo_gpt2_free(m);
    return 2;
  }
  damo_gpt2_cache **caches = calloc((size_t)rows, sizeof *caches);
  int32_t *ids = malloc((size_t)rows * sizeof *ids);
  double *seconds = malloc((size_t)steps * sizeof *seconds);
  int rc = 1;
  for (long r = 0; caches && r < rows; r++)
    if (damo_gpt2_cache_new(m, prompt + steps, &caches[r]) != DAMO_OK) goto done;
  if (!caches || !ids || !seconds) goto done;
  printf("{\"threads\": %d, \"simd\": \"%s\", \"parameters\": %lld, \"rows\": [", damo_num_threads(), damo_simd_path(),
         (long long)damo_gpt2_num_params(m));
  for (long n = 1;; n = n * 2 < rows ? n * 2 : rows) { /* 1, 2, 4, ..., rows */
    for (long r = 0; r < n; r++) {
      damo_gpt2_cache_reset(caches[r]);
      for (int64_t t = 0; t < prompt; t++)
        if (damo_gpt2_cache_step(caches[r], (int32_t)((r * 101 + t * 7) % V), NULL) != DAMO_OK) goto done;
    }
    for (long s = 0; s < steps; s++) {
      for (long r = 0; r < n; r++) ids[r] = (int32_t)((s * 13 + r * 29 + 3) % V);
      const double t0 = cli_seconds();
      if (damo_gpt2_cache_step_many(caches, ids, (int)n, NULL) != DAMO_OK) goto done;
      seconds[s] = cli_seconds() - t0;
    }
    qsort(seconds, (size_t)steps, sizeof *seconds, cmp_double);
    const double median = seconds[steps / 2];
    printf("%s{\"n\": %ld, \"step_ms\": %.2f, \"tokens_per_s\": %.1f}", n > 1 ? ", " : "", n, 1e3 * median,
           (double)n / median);
    if (n == rows) break;
  }
  printf("], \"weights\": \"%s\"}\n", damo_gpt2_block_format(m) ? damo_block_format_name(damo_gpt2_block_format(m))
                                       : damo_gpt2_is_int8(m)   ? "int8"
                                       : bf16                   ? "bf16"
                                                                : "f32");
  rc = 0;
done:
  if (rc) cli_fail("bench decode");
  for (long r = 0; caches && r < rows; r++) damo_gpt2_cache_free(caches[r]);
  free(caches);
  free(ids);
  free(seconds);
  damo_gpt2_free(m);
  return rc;
}
