/* runtime.c - process-wide settings: the kernel thread count (damo_set_num_threads,
 * DAMO_NUM_THREADS, else OpenMP's setting), the measured cost of a parallel region, and the
 * monotonic clock. */
#include "core/core.h"

#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ------------------------------------------------------------------ region cost */

/* Starting a parallel region wakes the other threads. With passive waiting (the CLI's
 * default, for sharing the machine) that is a futex call per thread, and in a virtual machine
 * an interrupt through the hypervisor: 3 us on bare metal, 25 us on the paravirtualised EPYC
 * these lines were written on. Measured once per thread count, as the median of empty regions
 * started back to back (each finds its threads asleep again). A setting (tests, or
 * DAMO_PARALLEL_REGION_US) replaces the measurement. */
static atomic_int measured_threads;             /* thread count of measured_ns; 0 = none yet */
static atomic_llong measured_ns;
static atomic_llong forced_ns = -2;             /* -2: DAMO_PARALLEL_REGION_US not read yet; -1: measure */

#define REGION_SECONDS_MAX 100e-6

static long long read_env_region_ns(void) {
  const char *s = getenv("DAMO_PARALLEL_REGION_US");
  if (!s || !*s) return -1;
  char *end;
  const double us = strtod(s, &end);
  if (*end == '\0' && us >= 0 && us <= 1e6) return (long long)(us * 1000.0);
  fprintf(stderr, "damo: warning: ignoring DAMO_PARALLEL_REGION_US='%s' (expected microseconds, 0..1e6)\n", s);
  return -1;
}

static int compare_doubles(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double measure_region_seconds(int threads) {
  enum { WARMUP = 3, SAMPLES = 15 };
  double took[SAMPLES];
  volatile int touched = 0;
  for (int s = -WARMUP; s < SAMPLES; s++) {
    const double t0 = damo_now_seconds();
#pragma omp parallel num_threads(threads)
    if (omp_get_thread_num() == 0) touched = 1;
    if (s >= 0) took[s] = damo_now_seconds() - t0;
  }
  (void)touched;
  qsort(took, SAMPLES, sizeof took[0], compare_doubles);
  return took[SAMPLES / 2];
}

double damo_parallel_region_seconds(void) {
  long long forced = atomic_load(&forced_ns);
  if (forced == -2) {
    long long expected = -2;
    forced = read_env_region_ns();
    if (!atomic_compare_exchange_strong(&forced_ns, &expected, forced)) forced = expected;
  }
  if (forced >= 0) return (double)forced * 1e-9;
  const int threads = damo_threads();
  if (threads <= 1) return 0;
  if (atomic_load(&measured_threads) == threads) return (double)atomic_load(&measured_ns) * 1e-9;
  /* Inside a region another region would not start threads: nothing to measure, and the
   * callers there run on one thread anyway. */
  if (omp_in_parallel()) return 0;
  /* A measurement taken while another process held the cores can read far above the usual
   * cost; capped so that it cannot keep every product on one thread for the whole run. */
  const double seconds = fmin(measure_region_seconds(threads), REGION_SECONDS_MAX);
  const long long ns = (long long)(seconds * 1e9);
  atomic_store(&measured_ns, ns);
  atomic_store(&measured_threads, threads);
  return (double)ns * 1e-9;
}

void damo_parallel_region_seconds_set(double seconds) {
  atomic_store(&forced_ns, seconds < 0 ? -1 : (long long)(seconds * 1e9));
  atomic_store(&measured_threads, 0);
}

int damo_threads_for_seconds(double single_thread_seconds) {
  if (omp_in_parallel()) return 1;
  const int threads = damo_threads();
  if (threads <= 1) return 1;
  /* Two threads save half the work's time and pay one region start: ask for twice the
   * break-even, since the estimate and the cost both vary from call to call. */
  return single_thread_seconds >= 4.0 * damo_parallel_region_seconds() ? threads : 1;
}

double damo_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
