/* public_api.c - the kernels layer's entries in the public API: damo_sgemm (damo.h's name for
 * damo_gemm) and the one-line build/runtime description printed by `damo info`. They live
 * here, not in core, because they call into the kernels. */
#include "kernels/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *damo_info_string(void) {
  static _Thread_local char buf[200];
  static const char *const units[] = {"none", "avx512_bf16", "amx_bf16"};
  snprintf(buf, sizeof buf, "damo %s | simd: %s | threads: %d | bf16 matmul: %s (cpu bf16 unit: %s)", DAMO_VERSION,
           damo_simd_path(), damo_num_threads(), damo_bf16_matmul_path(), units[damo_cpu_has_bf16()]);
  return buf;
}

void damo_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  damo_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* The public int8 product over the quantised layers' kernels (see damo.h). */
struct damo_int8_matrix {
  damo_qweight *packed;
};

struct damo_int8_rows {
  const damo_int8_matrix *w; /* the matrix whose layout the rows are in */
  void *q;
  int64_t M;
  float scale;
  int zero_point;
};

damo_status damo_int8_matrix_new(const int8_t *w, int64_t K, int64_t N, const float *scale, damo_int8_matrix **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "int8_matrix_new: NULL argument");
  *out = NULL;
  if (!w || !scale || K < 1 || N < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "int8_matrix_new: a (%lld, %lld) matrix with values and scales expected",
                      (long long)K, (long long)N);
  for (int64_t n = 0; n < N; n++)
    if (!(scale[n] > 0.0f) || scale[n] == INFINITY)
      return damo_error(DAMO_ERR_INVALID_ARG, "int8_matrix_new: scale %lld is %g (positive and finite expected)",
                        (long long)n, (double)scale[n]);
  for (int64_t i = 0; i < K * N; i++)
    if (w[i] == -128)
      return damo_error(DAMO_ERR_INVALID_ARG, "int8_matrix_new: value %lld is -128 (symmetric int8 is -127..127)",
                        (long long)i);
  damo_int8_matrix *m = calloc(1, sizeof *m);
  if (!m) return damo_error(DAMO_ERR_NOMEM, "int8_matrix_new: out of memory");
  m->packed = damo_qweight_pack(w, K, N, scale, DAMO_QLAYOUT_AUTO);
  if (!m->packed) {
    free(m);
    return damo_error_prefix(DAMO_ERR_NOMEM, "int8_matrix_new: ");
  }
  *out = m;
  return DAMO_OK;
}

void damo_int8_matrix_free(damo_int8_matrix *w) {
  if (!w) return;
  damo_qweight_free(w->packed);
  free(w);
}

damo_status damo_int8_rows_new(const damo_int8_matrix *w, const float *x, int64_t M, float scale, int zero_point,
                               damo_int8_rows **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "int8_rows_new: NULL argument");
  *out = NULL;
  if (!w || !x || M < 1) return damo_error(DAMO_ERR_INVALID_ARG, "int8_rows_new: a matrix and at least one row expected");
  if (!(scale > 0.0f) || scale == INFINITY || zero_point < 0 || zero_point > 255)
    return damo_error(DAMO_ERR_INVALID_ARG, "int8_rows_new: scale %g / zero point %d (a positive scale and a zero "
                      "point in 0..255 expected)", (double)scale, zero_point);
  damo_int8_rows *r = calloc(1, sizeof *r);
  const size_t row_bytes = damo_qrow_bytes(w->packed);
  if (r) r->q = damo_alloc((size_t)damo_qrows_padded(M) * row_bytes);
  if (!r || !r->q) {
    free(r);
    return damo_error(DAMO_ERR_NOMEM, "int8_rows_new: no memory for %lld rows", (long long)M);
  }
  damo_quantize_rows(x, M, w->packed->K, w->packed->K, scale, zero_point, w->packed->layout, r->q, w->packed->Kp);
  memset((char *)r->q + (size_t)M * row_bytes, 0, (size_t)(damo_qrows_padded(M) - M) * row_bytes); /* tile padding */
  r->w = w, r->M = M, r->scale = scale, r->zero_point = zero_point;
  *out = r;
  return DAMO_OK;
}

void damo_int8_rows_free(damo_int8_rows *r) {
  if (!r) return;
  damo_free(r->q);
  free(r);
}

damo_status damo_int8_gemm(const damo_int8_rows *x, const damo_int8_matrix *w, const float *bias, int relu, float *y,
                           int64_t ldy) {
  if (!x || !w || !y) return damo_error(DAMO_ERR_INVALID_ARG, "int8_gemm: NULL argument");
  if (x->w != w)
    return damo_error(DAMO_ERR_INVALID_ARG, "int8_gemm: the rows were quantised for another matrix (its layout and K)");
  if (ldy < w->packed->N)
    return damo_error(DAMO_ERR_INVALID_ARG, "int8_gemm: ldy %lld is below N %lld", (long long)ldy,
                      (long long)w->packed->N);
  const damo_q8_out out = damo_q8_f32(y, ldy, relu != 0);
  damo_gemm_q8(x->M, x->q, w->packed, x->scale, x->zero_point, bias, &out);
  return DAMO_OK;
}
