/* gelu.c - the Gaussian error linear unit y = x Phi(x), Phi the standard normal CDF.
 *   exact (BERT):         Phi(x) = (1 + erf(x / sqrt 2)) / 2
 *     dy/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
 *   tanh form (GPT-2's "gelu_new"): y = x (1 + t) / 2, t = tanh(u), u = k0 (x + k1 x^3),
 *     k0 = sqrt(2 / pi), k1 = 0.044715
 *     dy/dx = (1 + t) / 2 + x (1 - t^2) k0 (1 + 3 k1 x^2) / 2
 * Backward reads the input x (the output alone does not determine x). iparam[0] = 1 selects
 * the tanh form. */
#include "ops/ops.h"
#include "kernels/cpu/vmath.h"

#include <math.h>

static damo_status gelu_infer(damo_node *n) {
  const damo_node *a = n->in[0];
  if (a->dtype != DAMO_F32) return damo_shape_error(n, "operand must be f32", a, NULL);
  n->ndim = a->ndim;
  memcpy(n->shape, a->shape, sizeof n->shape);
  return DAMO_OK;
}

/* The backward loops, one per form, each compiled for every SIMD level (vmath's erf, exp and
 * tanh vectorise; libm's would keep them scalar). The forward ones are the kernels layer's
 * (damo_gelu_forward_loop), shared with the int8 product's fused epilogue. */
DAMO_MULTIVERSION_FUSED static void gelu_erf_backward(const float *x, const float *dy, float *dx, int64_t count) {
  for (int64_t i = 0; i < count; i++) {
    float xi = x[i];
    float cdf = 0.5f * (1.0f + damo_erff(xi * GELU_INV_SQRT_2));
    float pdf = GELU_INV_SQRT_2PI * damo_expf(-0.5f * xi * xi);
    dx[i] += dy[i] * (cdf + xi * pdf);
  }
}

DAMO_MULTIVERSION_FUSED static void gelu_tanh_backward(const float *x, const float *dy, float *dx, int64_t count) {
  for (int64_t i = 0; i < count; i++) {
    float xi = x[i], x2 = xi * xi;
    float t = damo_tanhf(GELU_SQRT_2_OVER_PI * xi * (1.0f + GELU_K1 * x2));
    float du = GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_K1 * x2);
    dx[i] += dy[i] * (0.5f * (1.0f + t) + 0.5f * xi * (1.0f - t * t) * du);
  }
}

static damo_status gelu_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *x = damo_f32(n->in[0]);
  float *y = damo_f32(n);
  const int64_t count = damo_node_count(n), chunks = (count + DAMO_CHUNK - 1) / DAMO_CHUNK;
  const int tanh_form = n->iparam[0];
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_EXP))
  for (int64_t c = 0; c < chunks; c++) {
    int64_t len;
    const int64_t first = damo_chunk(count, c, &len);
    damo_gelu_forward_loop(tanh_form, x + first, y + first, len);
  }
  return DAMO_OK;
}

static void gelu_backward(damo_graph *g, damo_node *n) {
  (void)g;
  if (!n->in[0]->in_backward) return;
  const float *x = damo_f32(n->in[0]), *dy = n->grad;
  float *dx = damo_node_grad_acc(n->in[0]);
  const int64_t count = damo_node_count(n), chunks = (count + DAMO_CHUNK - 1) / DAMO_CHUNK;
  const int tanh_form = n->iparam[0];
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_EXP))
  for (int64_t c = 0; c < chunks; c++) {
    int64_t len;
    const int64_t first = damo_chunk(count, c, &len);
    if (tanh_form) gelu_tanh_backward(x + first, dy + first, dx + first, len);
    else gelu_erf_backward(x + first, dy + first, dx + first, len);
  }
}

const damo_op_def damo_op_def_gelu = {"gelu", 1, gelu_infer, gelu_forward, gelu_backward, DAMO_OPF_BWD_INPUTS};

damo_node *damo_gelu(damo_graph *g, damo_node *x, int approximate) {
  damo_node *in[1] = {x};
  int p[1] = {approximate != 0};
  return damo_graph_add_node(g, DAMO_OP_GELU, 1, in, p, 1, NULL, 0);
}
