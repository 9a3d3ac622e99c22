/* gemm_gather.c - products whose op(A) is read where it lies instead of being packed:
 * element (i, p) of op(A) at base[row_off[i] + k_off[p]]. Two users:
 *  - narrow products (damo_gemm with op(B) at most 128 columns): with so few columns to reuse
 *    it for, packing A was a pass over it as long as the multiply itself;
 *  - convolutions (ops/conv.c): the patches matrix is the padded image seen through two
 *    offset tables (output pixel -> window corner, kernel position -> offset in the window),
 *    or its transpose for the kernel's gradient, so no im2col buffer is written or read.
 * Threads split the rows in whole tiles; each packs the KC x N slices of op(B) itself (they
 * stay in L2) and runs every tile of its rows against every B panel, the A tile staying in
 * L1 across them. K is cut in the same KC slices, in order, whatever the thread count, so
 * results do not depend on it. AVX2 and AVX-512 (its 14 x 32 tile, or an 8 x 16 one when op(B)
 * has at most 16 columns); the scalar path answers 0 and the caller does it the packed way. */
#include "kernels/cpu/cpu_kernels.h"

#include <omp.h>

enum { KC = 512, MAX_MR = 32 };

typedef void (*gather_kernel_fn)(int64_t k, const float *const *rows, const int64_t *k_off, const float *packed_b,
                                 float *c, int64_t ldc, int m, int n, float alpha, float beta);

/* A tile shape, its B packer and its kernel. */
typedef struct gather_kernel {
  int mr, nr;
  damo_gemm_pack_fn pack_b;
  gather_kernel_fn multiply;
} gather_kernel;

static const gather_kernel avx2_kernel = {DAMO_GEMM_AVX2_MR, DAMO_GEMM_AVX2_NR, damo_gemm_pack_avx2,
                                          damo_gemm_microkernel_avx2_gather};
static const gather_kernel avx512_kernel = {DAMO_GEMM_AVX512_MR, DAMO_GEMM_AVX512_NR, damo_gemm_pack_avx512,
                                            damo_gemm_microkernel_avx512_gather};
static const gather_kernel avx512_narrow_kernel = {DAMO_GEMM_AVX512_NARROW_MR, 16, damo_gemm_pack_avx512,
                                                   damo_gemm_microkernel_avx512_gather16};

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

typedef struct gather_problem {
  const gather_kernel *kern;
  const damo_gemm_gather_a *a;
  int trans_b;
  int64_t M, N, K;
  float alpha, beta;
  const float *B;
  int64_t ldb;
  float *C;
  int64_t ldc;
} gather_problem;

static const float *row_of(const damo_gemm_gather_a *a, int64_t r) {
  return a->base + (a->row_off ? a->row_off[r] : r * a->row_stride);
}

/* Rows [row0, row1) without any buffer (a thread that could not get one): plain loops. */
static void gather_rows_unpacked(const gather_problem *pr, int64_t row0, int64_t row1) {
  for (int64_t i = row0; i < row1; i++) {
    const float *row = row_of(pr->a, i);
    for (int64_t j = 0; j < pr->N; j++) {
      double sum = 0;
      for (int64_t p = 0; p < pr->K; p++)
        sum += (double)row[pr->a->k_off ? pr->a->k_off[p] : p] *
               (pr->trans_b ? pr->B[j * pr->ldb + p] : pr->B[p * pr->ldb + j]);
      float *out = pr->C + i * pr->ldc + j;
      *out = (float)(pr->alpha * sum + (pr->beta == 0.0f ? 0.0 : (double)pr->beta * *out));
    }
  }
}

/* Rows [row0, row1) of C. */
static void gather_rows(const gather_problem *pr, int64_t row0, int64_t row1) {
  const int MR = pr->kern->mr, NR = pr->kern->nr;
  const int64_t n_panels = (pr->N + NR - 1) / NR;
  float *packed_b = damo_gemm_pack_buffer((size_t)(n_panels * NR * min64(KC, pr->K)));
  if (!packed_b) {
    gather_rows_unpacked(pr, row0, row1);
    return;
  }
  const damo_gemm_gather_a *a = pr->a;
  for (int64_t pc = 0; pc < pr->K; pc += KC) {
    const int64_t kc = min64(KC, pr->K - pc);
    const float beta = pc == 0 ? pr->beta : 1.0f;
    pr->kern->pack_b(pr->trans_b, pr->B, pr->ldb, 0, pc, pr->N, kc, NR, packed_b);
    for (int64_t row = row0; row < row1; row += MR) {
      const int m = (int)min64(MR, row1 - row);
      const float *rows[MAX_MR];
      /* Past m: a real row, not stored. Without k_off the rows start at this K slice. */
      for (int i = 0; i < MR; i++) rows[i] = row_of(a, row + (i < m ? i : m - 1)) + (a->k_off ? 0 : pc);
      for (int64_t col = 0; col < pr->N; col += NR)
        pr->kern->multiply(kc, rows, a->k_off ? a->k_off + pc : NULL, packed_b + col * kc,
                           pr->C + row * pr->ldc + col, pr->ldc, m, (int)min64(NR, pr->N - col), pr->alpha, beta);
    }
  }
}

/* Part `part` of `parts` of [0, count) cut at multiples of `tile`. */
static void tile_share(int64_t count, int64_t tile, int64_t part, int64_t parts, int64_t *begin, int64_t *end) {
  const int64_t tiles = (count + tile - 1) / tile;
  *begin = min64(tiles * part / parts * tile, count);
  *end = min64(tiles * (part + 1) / parts * tile, count);
}

int damo_gemm_gather_available(void) {
  const damo_simd_level level = damo_simd_level_get();
  return (level == DAMO_SIMD_AVX2 || level == DAMO_SIMD_AVX512) && damo_get_matmul_precision() == DAMO_MATMUL_F32;
}

int damo_gemm_gather(const damo_gemm_gather_a *a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (!damo_gemm_gather_available()) return 0;
  if (M <= 0 || N <= 0 || K <= 0 || alpha == 0.0f) return 0; /* damo_gemm's degenerate cases */
  /* At most 16 columns the 32-wide AVX-512 tile would be half padding: one zmm per row. */
  const gather_kernel *kern = damo_simd_level_get() != DAMO_SIMD_AVX512 ? &avx2_kernel
                              : N > 16                                   ? &avx512_kernel
                                                                         : &avx512_narrow_kernel;
  const gather_problem pr = {kern, a, trans_b, M, N, K, alpha, beta, B, ldb, C, ldc};
  const int threads = damo_gemm_threads((double)M * (double)N * (double)K, 1.0);
  const int64_t row_tiles = (M + kern->mr - 1) / kern->mr;
  const int parts = row_tiles < threads ? (int)row_tiles : threads;
  if (parts <= 1) {
    gather_rows(&pr, 0, M);
    return 1;
  }
#pragma omp parallel num_threads(parts)
  {
    /* A smaller team than asked for still covers every part. */
    const int team = omp_get_num_threads();
    for (int part = omp_get_thread_num(); part < parts; part += team) {
      int64_t row0, row1;
      tile_share(M, kern->mr, part, parts, &row0, &row1);
      if (row0 < row1) gather_rows(&pr, row0, row1);
    }
  }
  return 1;
}
