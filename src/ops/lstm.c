/* lstm.c - a fused LSTM layer op over a whole sequence, Keras gate order (i, f, c, o).
 *
 *   z_t = x_t W + h_{t-1} R + b          (B, 4U)
 *   i, f, o = sigmoid(z_i, z_f, z_o); g = tanh(z_c)
 *   c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
 *
 * x is (B, T, F), W (F, 4U), R (U, 4U), b (4U); the output is h for every step (B, T, U)
 * or the last one (B, U). The input projection of all steps is one GEMM; each step then
 * adds h_{t-1} R with a (B, U) x (U, 4U) GEMM. Internally everything is time-major
 * (T, B, ...) so each step's rows are contiguous and backward's weight gradients are single
 * GEMMs over all steps:
 *   dW = X^T dZ,  dR = H_{0..T-2}^T dZ_{1..T-1},  db = column sums of dZ,  dX = dZ W^T.
 * Saved for backward (aux): the gate activations, c and h of every step, and x time-major.
 *
 * Optional mask (B, T) as a 5th input: a step with mask 0 keeps h and c (its gates are
 * computed by the batched GEMMs but not used) and outputs 0, as a PyTorch packed sequence;
 * backward gives it no gate gradient, so it changes neither dx nor the weights. reverse
 * runs from t = T-1 down to 0 and writes outputs at their original positions. Both only
 * change the layout moves and a per-step row copy, so the unmasked path is as before. */
#include "ops/recurrent.h"
#include "kernels/cpu/vmath.h"

#include <math.h>

enum { LSTM_RETURN_SEQUENCES = 0, LSTM_REVERSE = 1 };

typedef struct lstm_dims {
  int64_t B, T, F, U;
} lstm_dims;

static lstm_dims dims_of(const damo_node *n) {
  lstm_dims d = {n->in[0]->shape[0], n->in[0]->shape[1], n->in[0]->shape[2], n->in[2]->shape[0]};
  return d;
}

/* aux layout, floats: gates (T,B,4U) | c (T,B,U) | h (T,B,U) | x (T,B,F) | dz (T,B,4U) |
 * dh (B,U) | dc (B,U) carried between backward steps | zeros (B,U), the state before t = 0 |
 * mask (T,B) with a mask input. All time-major in processing order. */
typedef struct lstm_buffers {
  float *gates, *c, *h, *x, *dz, *dh, *dc, *zeros, *mask;
} lstm_buffers;

static lstm_buffers buffers_of(const damo_node *n, lstm_dims d) {
  lstm_buffers s;
  int64_t tb = d.T * d.B;
  s.gates = n->aux;
  s.c = s.gates + tb * 4 * d.U;
  s.h = s.c + tb * d.U;
  s.x = s.h + tb * d.U;
  s.dz = s.x + tb * d.F;
  s.dh = s.dz + tb * 4 * d.U;
  s.dc = s.dh + d.B * d.U;
  s.zeros = s.dc + d.B * d.U;
  s.mask = n->n_in > 4 ? s.zeros + d.B * d.U : NULL;
  return s;
}

static size_t f32_bytes(const damo_node *n, lstm_dims d) {
  return (size_t)(d.T * d.B * (4 * d.U + d.U + d.U + d.F + 4 * d.U) + 3 * d.B * d.U + (n->n_in > 4 ? d.T * d.B : 0)) *
         sizeof(float);
}

static damo_status lstm_infer(damo_node *n) {
  const damo_node *x = n->in[0], *w = n->in[1], *r = n->in[2], *b = n->in[3];
  if (x->dtype != DAMO_F32 || x->ndim != 3) return damo_shape_error(n, "input must be f32 (batch, timesteps, features)", x, NULL);
  if (r->ndim != 2 || r->shape[1] != 4 * r->shape[0])
    return damo_shape_error(n, "recurrent kernel must be (units, 4*units)", r, NULL);
  int64_t U = r->shape[0];
  if (w->ndim != 2 || w->shape[0] != x->shape[2] || w->shape[1] != 4 * U)
    return damo_shape_error(n, "kernel must be (features, 4*units)", x, w);
  if (b->ndim != 1 || b->shape[0] != 4 * U) return damo_shape_error(n, "bias must be (4*units,)", r, b);
  int64_t B = x->shape[0], T = x->shape[1], F = x->shape[2];
  if (n->n_in > 4) {
    const damo_node *m = n->in[4];
    if (m->dtype != DAMO_F32 || m->ndim != 2 || m->shape[0] != B || m->shape[1] != T)
      return damo_shape_error(n, "mask must be f32 (batch, timesteps) matching the input", x, m);
  }
  if (n->iparam[LSTM_RETURN_SEQUENCES]) {
    n->ndim = 3;
    n->shape[0] = B;
    n->shape[1] = T;
    n->shape[2] = U;
  } else {
    n->ndim = 2;
    n->shape[0] = B;
    n->shape[1] = U;
  }
  n->dtype = DAMO_F32;
  return damo_rnn_int8_size(n, f32_bytes(n, dims_of(n)), B, T, F, U, 4 * U);
}

DAMO_MULTIVERSION_FUSED static void lstm_cell(float *restrict z, float *restrict c, float *restrict h,
                                              const float *restrict c_prev, int64_t B, int64_t U) {
  for (int64_t b = 0; b < B; b++) {
    float *zr = z + b * 4 * U;
    const float *cp = c_prev + b * U;
    for (int64_t u = 0; u < U; u++) {
      float i = damo_sigmoidf(zr[u]), f = damo_sigmoidf(zr[U + u]), g = damo_tanhf(zr[2 * U + u]);
      float o = damo_sigmoidf(zr[3 * U + u]);
      float cn = f * cp[u] + i * g;
      zr[u] = i;
      zr[U + u] = f;
      zr[2 * U + u] = g;
      zr[3 * U + u] = o;
      c[b * U + u] = cn;
      h[b * U + u] = o * damo_tanhf(cn);
    }
  }
}

static damo_status lstm_forward(damo_graph *g, damo_node *n) {
  (void)g;
  lstm_dims d = dims_of(n);
  lstm_buffers s = buffers_of(n, d);
  const float *x = damo_f32(n->in[0]), *w = damo_f32(n->in[1]), *r = damo_f32(n->in[2]), *bias = damo_f32(n->in[3]);
  int64_t B = d.B, T = d.T, F = d.F, U = d.U, G = 4 * U;
  int reverse = n->iparam[LSTM_REVERSE];
  memset(s.zeros, 0, (size_t)(B * U) * sizeof(float));
  damo_rnn_to_time_major(x, s.x, B, T, F, reverse);
  if (s.mask) damo_rnn_mask_to_time_major(damo_f32(n->in[4]), s.mask, B, T, reverse);
  const damo_rnn_int8 *q = n->op_data;
  float *stage = NULL;
  void *rows = NULL;
  if (q) {
    damo_rnn_int8_scratch(n, f32_bytes(n, d), B, G, &stage, &rows);
    damo_q8_dynamic_product(s.x, T * B, q->kernel, bias, rows, s.gates, G);
  } else {
    for (int64_t row = 0; row < T * B; row++) memcpy(s.gates + row * G, bias, (size_t)G * sizeof(float));
    damo_gemm(0, 0, T * B, G, F, 1.0f, s.x, F, w, G, 1.0f, s.gates, G);
  }
  for (int64_t t = 0; t < T; t++) {
    float *z = s.gates + t * B * G;
    if (t > 0 && q) {
      damo_q8_dynamic_product(s.h + (t - 1) * B * U, B, q->recurrent, NULL, rows, stage, G);
      for (int64_t i = 0; i < B * G; i++) z[i] += stage[i];
    } else if (t > 0) {
      damo_gemm(0, 0, B, G, U, 1.0f, s.h + (t - 1) * B * U, U, r, G, 1.0f, z, G);
    }
    const float *c_prev = t > 0 ? s.c + (t - 1) * B * U : s.zeros, *h_prev = t > 0 ? s.h + (t - 1) * B * U : s.zeros;
    lstm_cell(z, s.c + t * B * U, s.h + t * B * U, c_prev, B, U);
    if (s.mask) {
      damo_rnn_carry_masked(s.c + t * B * U, c_prev, s.mask + t * B, B, U);
      damo_rnn_carry_masked(s.h + t * B * U, h_prev, s.mask + t * B, B, U);
    }
  }
  damo_rnn_output(s.h, damo_f32(n), s.mask, B, T, U, n->iparam[LSTM_RETURN_SEQUENCES], reverse);
  return DAMO_OK;
}

/* One step of backpropagation through time: from dh (B, U) and the carried dc, writes the
 * gate gradients dz (B, 4U) and updates dc to the gradient w.r.t. c_{t-1}. A masked row
 * (mask_s[b] == 0, mask_s NULL for none) passed its state through: zero dz, dc unchanged. */
DAMO_MULTIVERSION_FUSED static void lstm_cell_backward(const float *restrict gates, const float *restrict c,
                                                       const float *restrict c_prev, const float *restrict dh,
                                                       float *restrict dc, float *restrict dz,
                                                       const float *restrict mask_s, int64_t B, int64_t U) {
  for (int64_t b = 0; b < B; b++) {
    const float *gr = gates + b * 4 * U;
    float *dzr = dz + b * 4 * U;
    if (mask_s && mask_s[b] == 0.0f) {
      memset(dzr, 0, (size_t)(4 * U) * sizeof(float));
      continue;
    }
    for (int64_t u = 0; u < U; u++) {
      float i = gr[u], f = gr[U + u], gg = gr[2 * U + u], o = gr[3 * U + u];
      float tc = damo_tanhf(c[b * U + u]), h_grad = dh[b * U + u];
      float dct = dc[b * U + u] + h_grad * o * (1.0f - tc * tc);
      float cp = c_prev[b * U + u];
      dzr[u] = dct * gg * i * (1.0f - i);
      dzr[U + u] = dct * cp * f * (1.0f - f);
      dzr[2 * U + u] = dct * i * (1.0f - gg * gg);
      dzr[3 * U + u] = h_grad * tc * o * (1.0f - o);
      dc[b * U + u] = dct * f;
    }
  }
}

static void lstm_backward(damo_graph *g, damo_node *n) {
  if (n->op_data) return; /* int8: inference only, damo_graph_backward refuses the node first */
  (void)g;
  lstm_dims d = dims_of(n);
  lstm_buffers s = buffers_of(n, d);
  damo_node *bn = n->in[3];
  const float *r = damo_f32(n->in[2]), *dy = n->grad;
  int64_t B = d.B, T = d.T, F = d.F, U = d.U, G = 4 * U;
  int reverse = n->iparam[LSTM_REVERSE];
  float *dh = s.dh, *dc = s.dc;
  memset(dh, 0, (size_t)(2 * B * U) * sizeof(float));
  for (int64_t t = T - 1; t >= 0; t--) {
    /* dh = dL/dh_t from the output (+ the recurrent part, already in dh) */
    damo_rnn_add_output_grad(dy, dh, s.mask, B, T, U, t, n->iparam[LSTM_RETURN_SEQUENCES], reverse);
    float *dz = s.dz + t * B * G;
    const float *mask_t = s.mask ? s.mask + t * B : NULL;
    lstm_cell_backward(s.gates + t * B * G, s.c + t * B * U, t > 0 ? s.c + (t - 1) * B * U : s.zeros, dh, dc, dz, mask_t,
                       B, U);
    if (t == 0) break;
    /* dh_{t-1} = dz R^T; a masked row's h_{t-1} is h_t, so its dh carries over unchanged
     * (its dz row is 0) while the others start from 0. */
    float beta = 0.0f;
    if (mask_t) {
      for (int64_t b = 0; b < B; b++)
        if (mask_t[b] != 0.0f) memset(dh + b * U, 0, (size_t)U * sizeof(float));
      beta = 1.0f;
    }
    damo_gemm(0, 1, B, U, G, 1.0f, dz, G, r, G, beta, dh, U);
  }
  if (damo_wants_weight_grad(g, bn)) damo_rnn_column_sums(damo_node_grad_acc(bn), s.dz, T * B, G);
  damo_rnn_weight_and_input_grads(g, n, s.x, s.h, s.dz, s.dz, B, T, F, U, G, reverse, 0);
}

/* Backward reads only aux (gates, c, h, x) and the weights (params, always alive). */
const damo_op_def damo_op_def_lstm = {"lstm", 4, lstm_infer, lstm_forward, lstm_backward, DAMO_OPF_EXAMPLE_NORMS};

damo_node *damo_lstm_ex(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel, damo_node *bias,
                        damo_node *mask, int return_sequences, int reverse) {
  damo_node *in[5] = {x, kernel, recurrent_kernel, bias, mask};
  int p[2] = {return_sequences != 0, reverse != 0};
  return damo_graph_add_node(g, DAMO_OP_LSTM, mask ? 5 : 4, in, p, 2, NULL, 0);
}

damo_node *damo_recurrent_int8_op(damo_graph *g, int gru, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel,
                                  damo_node *bias, damo_node *mask, int return_sequences, int reverse,
                                  const damo_rnn_int8 *q) {
  damo_node *in[5] = {x, kernel, recurrent_kernel, bias, mask};
  int p[2] = {return_sequences != 0, reverse != 0};
  damo_node *n = damo_graph_add_node_data(g, gru ? DAMO_OP_GRU : DAMO_OP_LSTM, mask ? 5 : 4, in, p, 2, NULL, 0, q);
  if (n) n->inference_only = 1; /* damo_graph_backward refuses it */
  return n;
}

damo_node *damo_lstm(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel, damo_node *bias,
                     int return_sequences) {
  return damo_lstm_ex(g, x, kernel, recurrent_kernel, bias, NULL, return_sequences, 0);
}
