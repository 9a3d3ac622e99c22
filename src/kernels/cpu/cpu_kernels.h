/* cpu_kernels.h - declarations shared by the CPU kernel files (not public API): the GEMM
 * micro-kernels of each SIMD level, the packed-panel layout they read, and the FMA peak probe.
 * What the layers above use is in kernels/kernels.h. */
#ifndef DAMO_KERNELS_CPU_KERNELS_H
#define DAMO_KERNELS_CPU_KERNELS_H

#include "kernels/kernels.h"

/* Achievable FMA throughput (GFLOP/s, an FMA counted as two) with threads threads (<= 0: all),
 * measured with a register-only loop at the dispatched SIMD level. Takes about 0.1 s. */
double damo_fma_peak_gflops(int threads);
double damo_fma_sustained_gflops(int threads, double seconds);

/* GEMM micro-kernel. It multiplies an MR-row panel of op(A) by an NR-column panel of op(B),
 * both packed by damo_gemm:
 *   packed_a: k groups of MR floats; group p holds op(A)[0..MR)[p] (rows past the edge are 0)
 *   packed_b: k groups of NR floats; group p holds op(B)[p][0..NR) (columns past the edge are 0)
 * and stores C[0..m)[0..n) = alpha * product + beta * C (m <= MR, n <= NR; C has leading
 * dimension ldc). beta == 0 never reads C. packed_b is 64-byte aligned; packed_a is read
 * one float at a time and need not be. */
typedef void (*damo_gemm_microkernel_fn)(int64_t k, const float *packed_a, const float *packed_b, float *c, int64_t ldc,
                                         int m, int n, float alpha, float beta);

/* Panel packer. op(A) and op(B) are both seen as a grid of (x, k) with x the row of op(A)
 * or the column of op(B); the source holds element (x, k) at src[x * ld + k] when x_major
 * (A untransposed, B transposed), else at src[k * ld + x]. Packs x in [x0, x0 + x_count),
 * k in [k0, k0 + depth) into ceil(x_count / width) consecutive panels of width * depth floats:
 * panel q, group p holds the width values x = x0 + q * width + [0, width) at k = k0 + p, zero
 * past x_count. width is the kernel's MR (for A) or NR (for B). */
typedef void (*damo_gemm_pack_fn)(int x_major, const float *src, int64_t ld, int64_t x0, int64_t k0, int64_t x_count,
                                  int64_t depth, int width, float *dst);

/* Tile shapes (MR x NR) of each level's micro-kernel. */
#define DAMO_GEMM_SCALAR_MR 4
#define DAMO_GEMM_SCALAR_NR 8
#define DAMO_GEMM_AVX2_MR 6
#define DAMO_GEMM_AVX2_NR 16
#define DAMO_GEMM_AVX512_MR 14
#define DAMO_GEMM_AVX512_NR 32

/* The _avx2 and _avx512 functions below may only be called when damo_simd_level_get()
 * reports that level. The AVX2 packer takes width <= 16, the AVX-512 one width <= 32. */
void damo_gemm_pack_portable(int x_major, const float *src, int64_t ld, int64_t x0, int64_t k0, int64_t x_count,
                             int64_t depth, int width, float *dst);
void damo_gemm_pack_avx2(int x_major, const float *src, int64_t ld, int64_t x0, int64_t k0, int64_t x_count,
                         int64_t depth, int width, float *dst);
void damo_gemm_pack_avx512(int x_major, const float *src, int64_t ld, int64_t x0, int64_t k0, int64_t x_count,
                           int64_t depth, int width, float *dst);

void damo_gemm_microkernel_scalar(int64_t k, const float *packed_a, const float *packed_b, float *c, int64_t ldc, int m,
                                  int n, float alpha, float beta);
void damo_gemm_microkernel_avx2(int64_t k, const float *packed_a, const float *packed_b, float *c, int64_t ldc, int m,
                                int n, float alpha, float beta);
/* The AVX2 tile reading op(A) in place, step p of row i at rows[i][k_off[p]] (gemm_avx2.c). */
void damo_gemm_microkernel_avx2_gather(int64_t k, const float *const *rows, const int64_t *k_off,
                                       const float *packed_b, float *c, int64_t ldc, int m, int n, float alpha,
                                       float beta);
/* This thread's 64-byte aligned packing buffer of at least `floats` floats, kept for reuse
 * (gemm.c); NULL without memory. */
float *damo_gemm_pack_buffer(size_t floats);
void damo_gemm_microkernel_avx512(int64_t k, const float *packed_a, const float *packed_b, float *c, int64_t ldc, int m,
                                  int n, float alpha, float beta);

#endif
