/* gelu_loops.c - the GELU forward loops, compiled for every SIMD level (vmath's erf and tanh
 * vectorise; libm's would keep them scalar). One place for both users: the gelu op
 * (ops/gelu.c) and the int8 product's epilogue (gemm_int8.c), so a GELU fused into an int8
 * dense gives the values the separate op gives. */
#include "kernels/kernels.h"
#include "kernels/cpu/vmath.h"

DAMO_MULTIVERSION_FUSED static void gelu_erf(const float *x, float *y, int64_t count) {
  for (int64_t i = 0; i < count; i++) y[i] = 0.5f * x[i] * (1.0f + damo_erff(x[i] * GELU_INV_SQRT_2));
}

DAMO_MULTIVERSION_FUSED static void gelu_tanh(const float *x, float *y, int64_t count) {
  for (int64_t i = 0; i < count; i++) {
    float xi = x[i], t = damo_tanhf(GELU_SQRT_2_OVER_PI * (xi + GELU_K1 * xi * xi * xi));
    y[i] = 0.5f * xi * (1.0f + t);
  }
}

void damo_gelu_forward_loop(int tanh_form, const float *x, float *y, int64_t count) {
  if (tanh_form) gelu_tanh(x, y, count);
  else gelu_erf(x, y, count);
}
