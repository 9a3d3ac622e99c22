/* spmm.c - y = x W with W mostly zeros (a pruned dense kernel): W^T in CSR (one row per output
 * column, its nonzero k and values), x dense.
 *
 * A block of up to 64 rows of x is transposed once (K x 64, each k's 64 values contiguous);
 * then every output column n is the sum over W^T row n's nonzeros of w * xT[k][0..64), a
 * vector multiply-add the width of the block, into a row of yT, transposed back into y at
 * the end (the sums in registers on AVX-512 and AVX2). Threads split the output columns. Work is 2 B nnz multiply-adds against the dense
 * product's 2 B K N, at a lower rate (each nonzero reloads 64 values from L1/L2), so it pays
 * only past a crossover sparsity (damo bench sparse measures it). */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { BLOCK = 64 };

void damo_csr_free(damo_csr *c) {
  if (!c) return;
  free(c->row_start);
  free(c->col);
  free(c->val);
  free(c);
}

damo_status damo_csr_from_dense_transposed(const float *w, int64_t K, int64_t N, damo_csr **out) {
  *out = NULL;
  if (!w || K <= 0 || N <= 0 || K > INT32_MAX)
    return damo_error(DAMO_ERR_INVALID_ARG, "csr_from_dense: a %lld x %lld matrix", (long long)K, (long long)N);
  damo_csr *c = calloc(1, sizeof *c);
  if (!c) return damo_error(DAMO_ERR_NOMEM, "csr_from_dense: out of memory");
  c->rows = N, c->cols = K;
  c->row_start = malloc((size_t)(N + 1) * sizeof *c->row_start);
  int64_t nnz = 0;
  for (int64_t i = 0; i < K * N; i++) nnz += w[i] != 0.0f;
  c->nnz = nnz;
  c->col = malloc((size_t)(nnz ? nnz : 1) * sizeof *c->col);
  c->val = malloc((size_t)(nnz ? nnz : 1) * sizeof *c->val);
  if (!c->row_start || !c->col || !c->val) {
    damo_csr_free(c);
    return damo_error(DAMO_ERR_NOMEM, "csr_from_dense: out of memory for %lld nonzeros", (long long)nnz);
  }
  int64_t at = 0;
  for (int64_t n = 0; n < N; n++) { /* row n of W^T is column n of W */
    c->row_start[n] = at;
    for (int64_t k = 0; k < K; k++)
      if (w[k * N + n] != 0.0f) c->col[at] = (int32_t)k, c->val[at++] = w[k * N + n];
  }
  c->row_start[N] = at;
  *out = c;
  return DAMO_OK;
}

/* yT row = sum over the nonzeros of w * xT[k] for one output column, BLOCK values wide. */
static void column_portable(const damo_csr *wt, int64_t n, const float *xT, float *yT) {
  float acc[BLOCK] = {0};
  for (int64_t e = wt->row_start[n]; e < wt->row_start[n + 1]; e++) {
    const float v = wt->val[e], *xr = xT + (int64_t)wt->col[e] * BLOCK;
    for (int i = 0; i < BLOCK; i++) acc[i] += v * xr[i];
  }
  memcpy(yT, acc, sizeof acc);
}

/* The same with the 64 sums in registers: four zmm (AVX-512) or eight ymm (AVX2). */
__attribute__((target("avx512f"))) static void column_avx512(const damo_csr *wt, int64_t n, const float *xT,
                                                             float *yT) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t e = wt->row_start[n]; e < wt->row_start[n + 1]; e++) {
    const __m512 v = _mm512_set1_ps(wt->val[e]);
    const float *xr = xT + (int64_t)wt->col[e] * BLOCK;
    a0 = _mm512_fmadd_ps(v, _mm512_load_ps(xr), a0);
    a1 = _mm512_fmadd_ps(v, _mm512_load_ps(xr + 16), a1);
    a2 = _mm512_fmadd_ps(v, _mm512_load_ps(xr + 32), a2);
    a3 = _mm512_fmadd_ps(v, _mm512_load_ps(xr + 48), a3);
  }
  _mm512_store_ps(yT, a0), _mm512_store_ps(yT + 16, a1), _mm512_store_ps(yT + 32, a2), _mm512_store_ps(yT + 48, a3);
}

__attribute__((target("avx2,fma"))) static void column_avx2(const damo_csr *wt, int64_t n, const float *xT, float *yT) {
  __m256 a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
  for (int64_t e = wt->row_start[n]; e < wt->row_start[n + 1]; e++) {
    const __m256 v = _mm256_set1_ps(wt->val[e]);
    const float *xr = xT + (int64_t)wt->col[e] * BLOCK;
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) a[i] = _mm256_fmadd_ps(v, _mm256_load_ps(xr + 8 * i), a[i]);
  }
  for (int i = 0; i < 8; i++) _mm256_store_ps(yT + 8 * i, a[i]);
}

damo_status damo_sparse_dense_product(const float *x, int64_t B, int64_t K, const damo_csr *wt, float *y,
                                      int64_t ldy) {
  if (!x || !wt || !y || B < 0 || K != wt->cols || ldy < wt->rows)
    return damo_error(DAMO_ERR_INVALID_ARG, "sparse_dense_product: x has %lld columns, the sparse matrix %lld (and y "
                      "%lld, at least %lld)", (long long)K, (long long)(wt ? wt->cols : -1), (long long)ldy,
                      (long long)(wt ? wt->rows : -1));
  const int64_t N = wt->rows;
  /* 64-byte aligned: the kernels' aligned loads */
  float *xT = aligned_alloc(64, (size_t)K * BLOCK * sizeof(float)), *yT = aligned_alloc(64, (size_t)N * BLOCK * sizeof(float));
  const damo_simd_level level = damo_simd_level_get();
  void (*column)(const damo_csr *, int64_t, const float *, float *) =
      level == DAMO_SIMD_AVX512 ? column_avx512 : level == DAMO_SIMD_AVX2 ? column_avx2 : column_portable;
  if (!xT || !yT) {
    free(xT), free(yT);
    return damo_error(DAMO_ERR_NOMEM, "sparse_dense_product: out of memory");
  }
  for (int64_t b0 = 0; b0 < B; b0 += BLOCK) {
    const int b = (int)(B - b0 < BLOCK ? B - b0 : BLOCK);
    memset(xT, 0, (size_t)K * BLOCK * sizeof(float)); /* lanes past b stay 0 */
    for (int i = 0; i < b; i++)
      for (int64_t k = 0; k < K; k++) xT[k * BLOCK + i] = x[(b0 + i) * K + k];
#pragma omp parallel for schedule(static) if (wt->nnz * b > (1 << 16)) num_threads(damo_threads())
    for (int64_t n = 0; n < N; n++) column(wt, n, xT, yT + n * BLOCK);
    for (int i = 0; i < b; i++)
      for (int64_t n = 0; n < N; n++) y[(b0 + i) * ldy + n] = yT[n * BLOCK + i];
  }
  free(xT);
  free(yT);
  return DAMO_OK;
}
