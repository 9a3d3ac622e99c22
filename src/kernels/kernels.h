/* kernels.h - what the kernels layer offers the layers above it (not public API): the SIMD
 * level the CPU kernels dispatch on, GEMM, and multiversioned hot loops. The CPU files' own
 * declarations (micro-kernels, packers, the FMA probe) are in kernels/cpu/cpu_kernels.h. */
#ifndef DAMO_KERNELS_H
#define DAMO_KERNELS_H

#include "core/core.h"

/* Compiles a hot loop for AVX-512, AVX2 and baseline x86-64 and picks one at load time
 * (GCC function multi-versioning): the library itself is built without -march flags. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define DAMO_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DAMO_MULTIVERSION
#endif

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
