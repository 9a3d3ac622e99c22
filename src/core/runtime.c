/* runtime.c - process-wide settings: the kernel thread count (damo_set_num_threads,
 * DAMO_NUM_THREADS, else OpenMP's setting) and the monotonic clock. */
#include "core/core.h"

#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* The thread count of every parallel region (each names it with num_threads): set by
 * damo_set_num_threads, else DAMO_NUM_THREADS, else OpenMP's own setting (OMP_NUM_THREADS,
 * or what the program set with omp_set_num_threads), read at each region so a program's
 * later change is followed. Nothing global changes when the library loads: it used to call
 * omp_set_num_threads(all cores) from a constructor, overriding the program and
 * OMP_NUM_THREADS. */
static atomic_int chosen_threads; /* damo_set_num_threads; 0 = not set */
static atomic_int env_threads = -1; /* DAMO_NUM_THREADS parsed once; 0 = unset or invalid */

static int read_env_threads(void) {
  const char *s = getenv("DAMO_NUM_THREADS");
  if (!s || !*s) return 0;
  char *end;
  long n = strtol(s, &end, 10);
  if (*end == '\0' && n > 0 && n <= 4096) return (int)n;
  fprintf(stderr, "damo: warning: ignoring DAMO_NUM_THREADS='%s' (expected a whole number in 1..4096)\n", s);
  return 0;
}

int damo_threads(void) {
  int n = atomic_load_explicit(&chosen_threads, memory_order_relaxed);
  if (n > 0) return n;
  n = atomic_load_explicit(&env_threads, memory_order_acquire);
  if (n < 0) {
    n = read_env_threads();
    int expected = -1;
    if (!atomic_compare_exchange_strong(&env_threads, &expected, n)) n = expected; /* warn once */
  }
  return n > 0 ? n : omp_get_max_threads();
}

void damo_set_num_threads(int n) { atomic_store(&chosen_threads, n > 0 ? n : 0); }

int damo_num_threads(void) { return damo_threads(); }

double damo_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
