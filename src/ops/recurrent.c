/* recurrent.c - layout moves and gradients shared by the fused recurrent ops (see
 * recurrent.h). Everything here is sequential or a GEMM, so results do not depend on the
 * thread count. */
#include "ops/recurrent.h"

void damo_rnn_to_time_major(const float *x, float *xt, int64_t B, int64_t T, int64_t F, int reverse) {
  for (int64_t s = 0; s < T; s++) {
    int64_t t = damo_rnn_time(s, T, reverse);
    for (int64_t b = 0; b < B; b++) memcpy(xt + (s * B + b) * F, x + (b * T + t) * F, (size_t)F * sizeof(float));
  }
}

void damo_rnn_mask_to_time_major(const float *mask, float *mt, int64_t B, int64_t T, int reverse) {
  for (int64_t s = 0; s < T; s++) {
    int64_t t = damo_rnn_time(s, T, reverse);
    for (int64_t b = 0; b < B; b++) mt[s * B + b] = mask[b * T + t] != 0.0f ? 1.0f : 0.0f;
  }
}

void damo_rnn_carry_masked(float *state, const float *prev, const float *mask_s, int64_t B, int64_t U) {
  for (int64_t b = 0; b < B; b++)
    if (mask_s[b] == 0.0f) memcpy(state + b * U, prev + b * U, (size_t)U * sizeof(float));
}

void damo_rnn_output(const float *ht, float *y, const float *mt, int64_t B, int64_t T, int64_t U, int sequences,
                     int reverse) {
  if (!sequences) {
    memcpy(y, ht + (T - 1) * B * U, (size_t)(B * U) * sizeof(float));
    return;
  }
  for (int64_t s = 0; s < T; s++) {
    int64_t t = damo_rnn_time(s, T, reverse);
    for (int64_t b = 0; b < B; b++) {
      float *dst = y + (b * T + t) * U;
      if (mt && mt[s * B + b] == 0.0f) memset(dst, 0, (size_t)U * sizeof(float));
      else memcpy(dst, ht + (s * B + b) * U, (size_t)U * sizeof(float));
    }
  }
}

void damo_rnn_add_output_grad(const float *dy, float *dh, const float *mt, int64_t B, int64_t T, int64_t U, int64_t s,
                              int sequences, int reverse) {
  if (sequences) {
    int64_t t = damo_rnn_time(s, T, reverse);
    for (int64_t b = 0; b < B; b++) {
      if (mt && mt[s * B + b] == 0.0f) continue;
      for (int64_t u = 0; u < U; u++) dh[b * U + u] += dy[(b * T + t) * U + u];
    }
  } else if (s == T - 1) {
    for (int64_t k = 0; k < B * U; k++) dh[k] += dy[k];
  }
}

void damo_rnn_column_sums(float *dst, const float *src, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t k = 0; k < cols; k++) dst[k] += src[i * cols + k];
}

/* The norm pass's per-example measures: example b's rows are b, B + b, ... of the
 * time-major blocks, so each gradient is one strided GEMM. */
static void rnn_example_norms(damo_graph *g, const damo_node *n, const float *xt, const float *h, const float *dgx,
                              const float *dgh, int64_t B, int64_t T, int64_t F, int64_t U, int64_t G, int two_bias) {
  const damo_node *wn = n->in[1], *rn = n->in[2], *bn = n->in[3];
  const int64_t big = F > U ? F : U;
  float *buf = damo_graph_scratch(g, (size_t)(big * G + 2 * G) * sizeof(float));
  if (!buf) return;
  float *bsum = buf + big * G;
  for (int64_t b = 0; b < B; b++) {
    if (damo_wants_weight_norms(g, wn)) {
      damo_gemm(1, 0, F, G, T, 1.0f, xt + b * F, B * F, dgx + b * G, B * G, 0.0f, buf, G);
      damo_example_norm_add(g, wn, b, damo_sum_squares(buf, F * G));
    }
    if (damo_wants_weight_norms(g, rn) && T > 1) {
      damo_gemm(1, 0, U, G, T - 1, 1.0f, h + b * U, B * U, dgh + B * G + b * G, B * G, 0.0f, buf, G);
      damo_example_norm_add(g, rn, b, damo_sum_squares(buf, U * G));
    }
    if (damo_wants_weight_norms(g, bn)) {
      memset(bsum, 0, (size_t)(2 * G) * sizeof *bsum);
      for (int64_t s = 0; s < T; s++)
        for (int64_t k = 0; k < G; k++) {
          bsum[k] += dgx[(s * B + b) * G + k];
          if (two_bias) bsum[G + k] += dgh[(s * B + b) * G + k];
        }
      damo_example_norm_add(g, bn, b, damo_sum_squares(bsum, two_bias ? 2 * G : G));
    }
  }
}

void damo_rnn_weight_and_input_grads(damo_graph *g, damo_node *n, float *xt, const float *h, const float *dgx,
                                     const float *dgh, int64_t B, int64_t T, int64_t F, int64_t U, int64_t G,
                                     int reverse, int two_bias) {
  damo_node *xn = n->in[0], *wn = n->in[1], *rn = n->in[2];
  float beta, *grad;
  if (g->norm_pass) rnn_example_norms(g, n, xt, h, dgx, dgh, B, T, F, U, G, two_bias);
  if (damo_wants_weight_grad(g, wn)) {
    grad = damo_node_grad_out(wn, &beta);
    damo_gemm(1, 0, F, G, T * B, 1.0f, xt, F, dgx, G, beta, grad, G);
  }
  if (damo_wants_weight_grad(g, rn)) {
    grad = damo_node_grad_out(rn, &beta);
    if (T > 1) damo_gemm(1, 0, U, G, (T - 1) * B, 1.0f, h, U, dgh + B * G, G, beta, grad, G);
    else if (beta == 0.0f) memset(grad, 0, (size_t)(U * G) * sizeof(float));
  }
  if (xn->in_backward) { /* dX time-major into xt (no longer needed), then added to (B, T, F) */
    float *dxt = g->norm_pass ? damo_graph_scratch(g, (size_t)(T * B * F) * sizeof(float)) : xt; /* xt: read again */
    if (!dxt) return;
    damo_gemm(0, 1, T * B, F, G, 1.0f, dgx, G, damo_f32(wn), G, 0.0f, dxt, F);
    float *dx = damo_node_grad_acc(xn);
    for (int64_t s = 0; s < T; s++)
      for (int64_t b = 0; b < B; b++) {
        const float *src = dxt + (s * B + b) * F;
        float *dst = dx + (b * T + damo_rnn_time(s, T, reverse)) * F;
        for (int64_t f = 0; f < F; f++) dst[f] += src[f];
      }
  }
}

/* ---- int8 products (op_data a damo_rnn_int8): the scratch sits after the f32 aux, a (B, G)
 * f32 staging block then the quantised rows of the larger product. */
static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

damo_status damo_rnn_int8_size(damo_node *n, size_t f32_bytes, int64_t B, int64_t T, int64_t F, int64_t U, int64_t G) {
  const damo_rnn_int8 *q = n->op_data;
  n->aux_bytes = f32_bytes;
  if (!q) return DAMO_OK;
  if (!q->kernel || !q->recurrent || q->kernel->K != F || q->kernel->N != G || q->recurrent->K != U ||
      q->recurrent->N != G)
    return damo_error(DAMO_ERR_SHAPE, "%s: the int8 kernels are not (%lld x %lld) and (%lld x %lld)", n->name,
                      (long long)F, (long long)G, (long long)U, (long long)G);
  const size_t x_rows = damo_q8_scratch_bytes(T * B, q->kernel), h_rows = damo_q8_scratch_bytes(B, q->recurrent);
  n->aux_bytes = align64(f32_bytes) + align64((size_t)(B * G) * sizeof(float)) + (x_rows > h_rows ? x_rows : h_rows);
  return DAMO_OK;
}

void damo_rnn_int8_scratch(const damo_node *n, size_t f32_bytes, int64_t B, int64_t G, float **stage, void **rows) {
  char *base = (char *)n->aux + align64(f32_bytes);
  *stage = (float *)base;
  *rows = base + align64((size_t)(B * G) * sizeof(float));
}

