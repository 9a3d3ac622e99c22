/* fma_peak.c - measures the achievable single-precision FMA throughput of this machine.
 *
 * The loops below keep everything in registers and run many independent accumulator chains,
 * so neither memory nor FMA latency limits them: what they reach is the ceiling a GEMM can be
 * judged against. The vector width follows the dispatched SIMD level. */
#include "kernels/cpu/cpu_kernels.h"

#include <immintrin.h>
#include <omp.h>

/* Independent chains: enough to cover latency x pipes (4 cycles x 2 FMA pipes on recent
 * cores) with room to spare, while staying inside the 16 (AVX2) / 32 (AVX-512) registers. */
#define PEAK_CHAINS 12
#define PEAK_ITERATIONS 4000000L

/* Each call returns the number of floating-point operations it performed; the sum of the
 * accumulators is written to *sink so the work cannot be optimised away. */

__attribute__((target("avx512f,fma"))) static double fma_loop_avx512(long iterations, float *sink) {
  __m512 acc[PEAK_CHAINS];
  for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm512_set1_ps(0.001f * (float)c);
  /* x * 1 + tiny keeps values bounded (no overflow, no denormals) for any iteration count. */
  const __m512 mul = _mm512_set1_ps(0.9999999f), add = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 16
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], mul, add);
  }
  __m512 total = acc[0];
  for (int c = 1; c < PEAK_CHAINS; c++) total = _mm512_add_ps(total, acc[c]);
  *sink = _mm512_reduce_add_ps(total);
  return 2.0 * 16.0 * PEAK_CHAINS * (double)iterations;
}

__attribute__((target("avx2,fma"))) static double fma_loop_avx2(long iterations, float *sink) {
  __m256 acc[PEAK_CHAINS];
  for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm256_set1_ps(0.001f * (float)c);
  const __m256 mul = _mm256_set1_ps(0.9999999f), add = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 16
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], mul, add);
  }
  __m256 total = acc[0];
  for (int c = 1; c < PEAK_CHAINS; c++) total = _mm256_add_ps(total, acc[c]);
  float lanes[8];
  _mm256_storeu_ps(lanes, total);
  float sum = 0;
  for (int l = 0; l < 8; l++) sum += lanes[l];
  *sink = sum;
  return 2.0 * 8.0 * PEAK_CHAINS * (double)iterations;
}

/* Portable C: a multiply and an add per element (what the scalar GEMM kernel does). Four
 * lanes per chain lets an SSE2 compiler vectorise it the way it vectorises the kernel. */
static double fma_loop_scalar(long iterations, float *sink) {
  float acc[PEAK_CHAINS][4];
  for (int c = 0; c < PEAK_CHAINS; c++)
    for (int l = 0; l < 4; l++) acc[c][l] = 0.001f * (float)(c + l);
  const float mul = 0.9999999f, add = 1e-7f;
  for (long i = 0; i < iterations; i++)
    for (int c = 0; c < PEAK_CHAINS; c++)
      for (int l = 0; l < 4; l++) acc[c][l] = acc[c][l] * mul + add;
  float sum = 0;
  for (int c = 0; c < PEAK_CHAINS; c++)
    for (int l = 0; l < 4; l++) sum += acc[c][l];
  *sink = sum;
  return 2.0 * 4.0 * PEAK_CHAINS * (double)iterations;
}

static double fma_loop(int level, long iterations, double *sink) {
  float s = 0;
  double done = level == DAMO_SIMD_AVX512 ? fma_loop_avx512(iterations, &s)
                : level == DAMO_SIMD_AVX2 ? fma_loop_avx2(iterations, &s)
                                          : fma_loop_scalar(iterations / 4, &s);
  *sink = s;
  return done;
}

/* Every thread runs the loop `iterations` times at once; returns the seconds taken and adds
 * the operations done to *ops. */
static double timed_run(damo_peak_loop loop, int variant, int threads, long iterations, double *ops, double *sink) {
  double done = 0, start = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : done)
  {
    double local_sink = 0;
    done += loop(variant, iterations, &local_sink);
#pragma omp critical(damo_peak_sink)
    *sink += local_sink;
  }
  *ops = done;
  return omp_get_wtime() - start;
}

double damo_peak_best_gops(int threads, damo_peak_loop loop, int variant, long iterations) {
  if (threads <= 0) threads = damo_threads();
  /* Short warm-up so the first timed run does not pay for clock ramp-up or thread start. */
  double sink = 0, best = 0;
  for (int attempt = 0; attempt < 4; attempt++) {
    double ops;
    double seconds = timed_run(loop, variant, threads, attempt == 0 ? iterations / 8 : iterations, &ops, &sink);
    if (attempt > 0 && seconds > 0 && ops / seconds > best) best = ops / seconds;
  }
  /* sink is finite by construction; the test keeps the compiler from dropping the loops. */
  return sink == sink ? best * 1e-9 : 0.0;
}

double damo_fma_peak_gflops(int threads) {
  return damo_peak_best_gops(threads, fma_loop, (int)damo_simd_level_get(), PEAK_ITERATIONS);
}

double damo_fma_sustained_gflops(int threads, double seconds) {
  if (threads <= 0) threads = damo_threads();
  const int level = (int)damo_simd_level_get();
  double sink = 0;
  /* Size the run from one short burst on this thread, then time the whole of it. */
  long iterations = PEAK_ITERATIONS / 16;
  double start = omp_get_wtime();
  fma_loop(level, iterations, &sink);
  double burst = omp_get_wtime() - start;
  if (burst > 0 && seconds * (double)iterations / burst > (double)iterations)
    iterations = (long)((double)iterations * seconds / burst);
  double ops, elapsed = timed_run(fma_loop, level, threads, iterations, &ops, &sink);
  return sink == sink && elapsed > 0 ? ops / elapsed * 1e-9 : 0.0;
}
