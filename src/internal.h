/* internal.h - helpers shared by the library's source files (not public API). */
#ifndef DAMO_INTERNAL_H
#define DAMO_INTERNAL_H

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
/* strdup that records DAMO_ERR_NOMEM on failure. */
char *damo_strdup(const char *s);

/* Compiles a hot loop for AVX-512, AVX2 and baseline x86-64 and picks one at load time
 * (GCC function multi-versioning): the library itself is built without -march flags. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define DAMO_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DAMO_MULTIVERSION
#endif

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

/* What the optimizer and schedule read for a config field left 0 (the C API's "default").
 * A config file has no such marker: it is written with these values filled in. */
#define DAMO_ADAM_DEFAULT_BETA1 0.9f
#define DAMO_ADAM_DEFAULT_BETA2 0.999f
#define DAMO_ADAM_DEFAULT_EPS 1e-8f
#define DAMO_DEFAULT_GAMMA 0.1

/* Threads for a parallel region (core/runtime.c): damo_set_num_threads, else
 * DAMO_NUM_THREADS, else omp_get_max_threads(); every "omp parallel" names it. */
int damo_threads(void);

/* Seconds on a monotonic clock (core/runtime.c): for intervals only. */
double damo_now_seconds(void);

/* Per-op timing (graph/profile.c): the graph executor checks damo_profile_on and records
 * each node's forward (backward 0) or backward (1); the optimizer records its step under
 * DAMO_PROFILE_OPTIMIZER, a row after the ops. */
extern int damo_profile_on;
#define DAMO_PROFILE_OPTIMIZER (-1)
void damo_profile_record(int op, int backward, double seconds);

/* Multiply with overflow check: returns 0 and sets *out, or -1 on overflow. */
static inline int damo_mul_overflow(size_t a, size_t b, size_t *out) {
  if (a && b > SIZE_MAX / a) return -1;
  *out = a * b;
  return 0;
}

/* Whole-file read (binary); *data is malloc'd and NUL-terminated (size excludes the NUL). */
damo_status damo_read_file(const char *path, char **data, size_t *size);

/* Fault injection for the save tests (io/atomic.c): the k-th file-system step of saves
 * from now on (open, write, fsync, link, rename, ... counted from 1) fails with EIO or kills
 * the process; k = 0 disarms. The environment variable DAMO_IO_FAULT=fail:K or kill:K arms
 * it for a whole process (read at the first step). damo_io_fault_steps: steps counted since
 * arming, so a test learns how many steps a save has. */
typedef enum damo_io_fault_mode { DAMO_IO_FAULT_FAIL = 1, DAMO_IO_FAULT_KILL = 2 } damo_io_fault_mode;
void damo_io_fault_arm(long k, damo_io_fault_mode mode);
long damo_io_fault_steps(void);

/* damo_json_parse (core/json.c) for a text found at byte `base` of a larger file (the
 * safetensors header): offsets in messages are the file's. */
damo_status damo_json_parse_at(const char *text, size_t len, size_t base, const char *source, unsigned flags,
                               struct cJSON **out);

/* A config reader over a tree parsed elsewhere (core/config_reader.c): root is not copied
 * and not freed, so it must outlive the damo_config (the model's saved "fit" object). */
damo_status damo_config_borrow(const struct cJSON *root, const char *source, damo_config **out);

/* The epoch axis of a history plot (io/plot.c): whole-number ticks for epochs 1..n_epochs,
 * a 1-2-5 step, at most 10 and at most cap; returns how many. */
int damo_plot_epoch_ticks(int n_epochs, double *out, int cap);

/* CPU feature level the kernels dispatch on (set once, overridable by DAMO_SIMD). */
typedef enum damo_simd_level { DAMO_SIMD_SCALAR = 0, DAMO_SIMD_AVX2 = 1, DAMO_SIMD_AVX512 = 2 } damo_simd_level;
damo_simd_level damo_simd_level_get(void);
/* Forces a level for tests (clamped to what the CPU has); returns the level in force. */
damo_simd_level damo_simd_level_force(damo_simd_level level);

/* Row-major single-precision GEMM: C = alpha * op(A) op(B) + beta * C, with op(A) (M, K),
 * op(B) (K, N), C (M, N). trans_a: A is stored (K, M) with leading dimension lda; likewise B.
 * beta == 0 never reads C (NaN in C is overwritten). Threads over blocks with OpenMP. */
void damo_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
               const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* The plain triple loop every fast path is tested against. */
void damo_gemm_reference(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                         int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

#endif
