/* public_api.c - the kernels layer's entries in the public API: damo_sgemm (damo.h's name for
 * damo_gemm) and the one-line build/runtime description printed by `damo info`. They live
 * here, not in core, because they call into the kernels. */
#include "kernels/kernels.h"

#include <stdio.h>

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
