/* core.h - the core layer's helpers for every source file of the library (not public API):
 * the error slot, aligned allocation, file reads, JSON, random words, threads, the clock and
 * where data sets are looked for. Headers of the layers above declare their own helpers
 * (kernels/kernels.h: GEMM and SIMD level; see ARCHITECTURE.md's layer table). */
#ifndef DAMO_CORE_H
#define DAMO_CORE_H

#include "damo.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Records a failure message (printf-style) for damo_last_error() and returns code, so a
 * failing path reads: return damo_error(DAMO_ERR_IO, "%s: cannot open: %s", path, strerror(errno)); */
damo_status damo_error(damo_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends context ("loading model dir/: ") to the current error message; returns code. */
damo_status damo_error_prefix(damo_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 64-byte aligned allocation (NULL and an error message on failure); free with damo_free. */
void *damo_alloc(size_t bytes);
void *damo_calloc(size_t bytes);
void damo_free(void *p);
/* Asks Linux for transparent huge pages over [p, p + bytes) where the buffer is large enough
 * to gain from them (first-touch faults are per 4 KiB page otherwise); advice only. */
void damo_advise_huge_pages(void *p, size_t bytes);
/* strdup that records DAMO_ERR_NOMEM on failure. */
char *damo_strdup(const char *s);

/* A counter-based random word: the high half of splitmix64's finaliser applied to
 * seed + index * golden ratio. Dropout masks use it so that each element's draw depends only
 * on (seed, index): it runs in parallel, vectorises, and backward can recompute it. */
static inline uint32_t damo_counter_random(uint64_t seed, uint64_t index) {
  uint64_t z = seed + index * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (uint32_t)(z >> 32);
}

/* A 64-bit seed from two draws, high word first (one statement with two calls would leave
 * their order to the compiler). */
static inline uint64_t damo_rng_draw_seed(damo_rng *r) {
  uint64_t high = damo_rng_u32(r);
  return high << 32 | damo_rng_u32(r);
}

/* FNV-1a (64-bit) over n bytes, continuing from h (start: DAMO_HASH_START): what a
 * data-parallel run compares between ranks to know they train on the same data and options. */
#define DAMO_HASH_START 1469598103934665603ull
static inline uint64_t damo_hash_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p; /* a cast: C++ (the CUDA files) needs it */
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* Threads for a parallel region (core/runtime.c): damo_set_num_threads, else
 * DAMO_NUM_THREADS, else omp_get_max_threads(); every "omp parallel" names it. */
int damo_threads(void);

/* What starting a parallel region of damo_threads() threads costs, in seconds (core/runtime.c):
 * measured once per thread count (0 inside a region or with one thread), unless set by
 * damo_parallel_region_seconds_set (a negative value: measure again) or by the environment
 * variable DAMO_PARALLEL_REGION_US (the test runner sets 0, so small products still take the
 * threaded paths the tests check). */
double damo_parallel_region_seconds(void);
void damo_parallel_region_seconds_set(double seconds);
/* Threads for work that would take single_thread_seconds on one: damo_threads() when that is
 * long enough to repay starting a region, else 1 (and 1 inside a region). Only for work whose
 * result does not depend on the thread count. */
int damo_threads_for_seconds(double single_thread_seconds);

/* Seconds on a monotonic clock (core/runtime.c): for intervals only. */
double damo_now_seconds(void);

/* Multiply with overflow check: returns 0 and sets *out, or -1 on overflow. */
static inline int damo_mul_overflow(size_t a, size_t b, size_t *out) {
  if (a && b > SIZE_MAX / a) return -1;
  *out = a * b;
  return 0;
}

/* Whole-file read (binary); *data is malloc'd and NUL-terminated (size excludes the NUL). */
damo_status damo_read_file(const char *path, char **data, size_t *size);

/* damo_json_parse (core/json.c) for a text found at byte `base` of a larger file (the
 * safetensors header): offsets in messages are the file's. */
damo_status damo_json_parse_at(const char *text, size_t len, size_t base, const char *source, unsigned flags,
                               struct cJSON **out);

/* A config reader over a tree parsed elsewhere (core/config_reader.c): root is not copied
 * and not freed, so it must outlive the damo_config (the model's saved "fit" object). */
damo_status damo_config_borrow(const struct cJSON *root, const char *source, damo_config **out);

/* Where data sets, corpora and vocabularies are looked for (core/data_dir.c, the one place
 * that reads DAMO_DATA_DIR). Each reader tries some of these roots, in this order:
 *   DAMO_DATA_ROOT_USER    $DAMO_DATA_DIR, the user's folder
 *   DAMO_DATA_ROOT_NPM     $HOME/.cache/damo/npm/node_modules (scripts/setup.sh --text)
 *   DAMO_DATA_ROOT_SYSTEM  $DAMO_SYSTEM_DATA_DIR, else /usr/share/datasets (Debian's packages)
 * damo_data_path writes root/rel into out (the root alone when rel is NULL) and returns 1,
 * or returns 0 when the root is not set (its variable unset or empty). */
typedef enum damo_data_root { DAMO_DATA_ROOT_USER, DAMO_DATA_ROOT_NPM, DAMO_DATA_ROOT_SYSTEM } damo_data_root;
int damo_data_path(damo_data_root root, const char *rel, char *out, size_t cap);

#endif
