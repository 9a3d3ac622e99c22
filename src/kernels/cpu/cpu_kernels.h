/* cpu_kernels.h - declarations shared by the CPU kernel files (not public API): the GEMM
 * micro-kernels of each SIMD level, the packed-panel layout they read, and the FMA peak probe.
 * What the layers above use is in kernels/kernels.h. */
#ifndef DAMO_KERNELS_CPU_KERNELS_H
#define DAMO_KERNELS_CPU_KERNELS_H

#include "kernels/kernels.h"

/* Achievable FMA throughput (GFLOP/s, an FMA counted as two) with threads threads (<= 0: all),
 * measured with a register-only loop at the dispatched SIMD level. Takes about 0.1 s. */
double damo_fma_peak_gflops(int threads);
/* A register-only loop (fma_peak.c, bf16_peak.c, int8_peak.c): runs `iterations` steps of its
 * variant, returns the operations done and leaves a value that depends on them in *sink, so
 * the compiler keeps the loop. damo_peak_best_gops runs it on every thread at once, a short
 * warm-up and then three times, and returns the best rate in G operations/s (0 when the sink
 * is not finite). */
typedef double (*damo_peak_loop)(int variant, long iterations, double *sink);
double damo_peak_best_gops(int threads, damo_peak_loop loop, int variant, long iterations);
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
#define DAMO_GEMM_AVX512_NARROW_MR 8 /* rows of the 16-column tile: 8 row pointers and 8 sums stay in registers */

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
/* The AVX-512 tile reading op(A) the same way (gemm_avx512.c). */
void damo_gemm_microkernel_avx512_gather(int64_t k, const float *const *rows, const int64_t *k_off,
                                         const float *packed_b, float *c, int64_t ldc, int m, int n, float alpha,
                                         float beta);
/* The same with a MR x 16 tile (MR = DAMO_GEMM_AVX512_NARROW_MR), for op(B) of at most 16 columns. */
void damo_gemm_microkernel_avx512_gather16(int64_t k, const float *const *rows, const int64_t *k_off,
                                           const float *packed_b, float *c, int64_t ldc, int m, int n, float alpha,
                                           float beta);
/* The native bf16 path (gemm_bf16.c, AVX512_BF16): packs as damo_gemm_pack_fn does, but
 * straight into bf16 pairs along k: panel q starts at dst + q * width * 2 * pairs (pairs =
 * ceil(depth / 2)) and its group p holds each row's/column's values at k = 2p, 2p + 1 (zero
 * past depth and past x_count), rounded to nearest even. */
void damo_gemm_pack_bf16(int x_major, const float *src, int64_t ld, int64_t x0, int64_t k0, int64_t x_count,
                         int64_t depth, int width, uint16_t *dst);
/* The 14 x 32 tile over such panels (pairs = ceil(k / 2)). */
void damo_gemm_microkernel_avx512_bf16(int64_t pairs, const uint16_t *packed_a, const uint16_t *packed_b, float *c,
                                       int64_t ldc, int m, int n, float alpha, float beta);
int damo_cpu_has_avx512_bf16(void);
/* AMX (gemm_amx.c): whether this process may use the tiles (asks the OS once), and the
 * whole bf16 product on them; 0 (C untouched) when it cannot run. */
int damo_amx_ready(void);
/* Tests: 0 keeps damo_gemm off AMX (the AVX512_BF16 kernel then runs where the CPU has it);
 * returns the previous setting. */
int damo_amx_allow(int allowed);
/* This thread's tile unit as eight 16-row x 64-byte tiles (damo_amx_ready() first), and back. */
void damo_amx_configure(void);
/* AMX-INT8 (TDPBUSD) usable: the CPU has it and damo_amx_ready(); the int8 product's VNNI
 * layout then pads K to whole 64-byte tiles and runs on the tiles (gemm_int8.c). */
int damo_amx_int8_ready(void);
/* The AMX register-only loop of the peak probes (bf16_peak.c): TDPBUSD when int8, else
 * TDPBF16PS; returns the operations done, a value depending on them in *sink. */
double damo_amx_peak_loop(int int8, long iterations, double *sink);
void damo_amx_release(void);
int damo_gemm_amx(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* This thread's 64-byte aligned packing buffer of at least `floats` floats, kept for reuse
 * (gemm.c); NULL without memory. */
float *damo_gemm_pack_buffer(size_t floats);
/* Threads for a product of `fmas` multiply-adds running `speedup` times faster per
 * multiply-add than a small f32 product (gemm.c): 1 below 512K multiply-adds, inside a
 * parallel region, or where the product is too short to repay starting a region
 * (damo_threads_for_seconds, timed against a small f32 product measured once). */
int damo_gemm_threads(double fmas, double speedup);
void damo_gemm_microkernel_avx512(int64_t k, const float *packed_a, const float *packed_b, float *c, int64_t ldc, int m,
                                  int n, float alpha, float beta);

#endif
