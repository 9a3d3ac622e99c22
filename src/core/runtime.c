/* runtime.c - process-wide settings: the kernel thread count (DAMO_NUM_THREADS, default
 * all cores) and the one-line build/runtime description printed by `damo info`. */
#include "internal.h"

#include <omp.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static int threads_from_env(void) {
  const char *s = getenv("DAMO_NUM_THREADS");
  if (s && *s) {
    char *end;
    long n = strtol(s, &end, 10);
    if (*end == '\0' && n > 0 && n <= 4096) return (int)n;
  }
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? (int)cores : 1;
}

/* Applied when the library loads so kernels honour DAMO_NUM_THREADS without any call. */
__attribute__((constructor)) static void runtime_init(void) { omp_set_num_threads(threads_from_env()); }

void damo_set_num_threads(int n) { omp_set_num_threads(n > 0 ? n : threads_from_env()); }

int damo_num_threads(void) { return omp_get_max_threads(); }

double damo_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *damo_info_string(void) {
  static _Thread_local char buf[160];
  snprintf(buf, sizeof buf, "damo %s | simd: %s | threads: %d", DAMO_VERSION, damo_simd_path(), damo_num_threads());
  return buf;
}

void damo_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  damo_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
