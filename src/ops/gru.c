/* gru.c - a fused GRU layer op over a whole sequence: Keras' GRU with reset_after=True (its
 * default, and the same function as torch.nn.GRU), gate order (z, r, h):
 *
 *   gx = x_t W + b_in,  gh = h_{t-1} R + b_rec                    (B, 3U) each
 *   z = sigmoid(gx_z + gh_z),  r = sigmoid(gx_r + gh_r)
 *   n = tanh(gx_h + r * gh_h)
 *   h_t = z * h_{t-1} + (1 - z) * n
 *
 * x (B, T, F), W (F, 3U), R (U, 3U), bias (2, 3U) = [b_in; b_rec]. The input projection of
 * all steps is one GEMM, each step one (B, U) x (U, 3U) GEMM; internals are time-major as in
 * lstm.c so every weight gradient is one GEMM over all steps:
 *   dW = X^T dGX,  dR = H_{0..T-2}^T dGH_{1..T-1},  dh_{t-1} = dGH R^T + z dh.
 * An optional mask (B, T) and reverse work as in lstm.c: a masked step keeps h, outputs 0
 * and gets no gate gradient (its dh passes straight to h_{t-1}). */
#include "ops/recurrent.h"
#include "kernels/cpu/vmath.h"

enum { GRU_RETURN_SEQUENCES = 0, GRU_REVERSE = 1 };

typedef struct gru_dims {
  int64_t B, T, F, U;
} gru_dims;

/* aux, floats: gx (T,B,3U) | gh (T,B,3U) | h (T,B,U) | x (T,B,F) | dgx (T,B,3U) |
 * dgh (T,B,3U) | dh (B,U) | zeros (B,U) | mask (T,B) with a mask input. gx holds the
 * activated z, r, n after forward; gh keeps h_{t-1} R + b_rec (its h part is needed for
 * r's gradient). Time-major in processing order. */
typedef struct gru_buffers {
  float *gx, *gh, *h, *x, *dgx, *dgh, *dh, *zeros, *mask;
} gru_buffers;

static gru_dims dims_of(const damo_node *n) {
  gru_dims d = {n->in[0]->shape[0], n->in[0]->shape[1], n->in[0]->shape[2], n->in[2]->shape[0]};
  return d;
}

static gru_buffers buffers_of(const damo_node *n, gru_dims d) {
  gru_buffers s;
  int64_t tb = d.T * d.B, G = 3 * d.U;
  s.gx = n->aux;
  s.gh = s.gx + tb * G;
  s.h = s.gh + tb * G;
  s.x = s.h + tb * d.U;
  s.dgx = s.x + tb * d.F;
  s.dgh = s.dgx + tb * G;
  s.dh = s.dgh + tb * G;
  s.zeros = s.dh + d.B * d.U;
  s.mask = n->n_in > 4 ? s.zeros + d.B * d.U : NULL;
  return s;
}

static size_t f32_bytes(const damo_node *n, gru_dims d) {
  return (size_t)(d.T * d.B * (3 * d.U * 4 + d.U + d.F) + 2 * d.B * d.U + (n->n_in > 4 ? d.T * d.B : 0)) * sizeof(float);
}

static damo_status gru_infer(damo_node *n) {
  const damo_node *x = n->in[0], *w = n->in[1], *r = n->in[2], *b = n->in[3];
  if (x->dtype != DAMO_F32 || x->ndim != 3) return damo_shape_error(n, "input must be f32 (batch, timesteps, features)", x, NULL);
  if (r->ndim != 2 || r->shape[1] != 3 * r->shape[0])
    return damo_shape_error(n, "recurrent kernel must be (units, 3*units)", r, NULL);
  int64_t U = r->shape[0], B = x->shape[0], T = x->shape[1], F = x->shape[2];
  if (w->ndim != 2 || w->shape[0] != F || w->shape[1] != 3 * U) return damo_shape_error(n, "kernel must be (features, 3*units)", x, w);
  if (b->ndim != 2 || b->shape[0] != 2 || b->shape[1] != 3 * U) return damo_shape_error(n, "bias must be (2, 3*units)", r, b);
  if (n->n_in > 4) {
    const damo_node *m = n->in[4];
    if (m->dtype != DAMO_F32 || m->ndim != 2 || m->shape[0] != B || m->shape[1] != T)
      return damo_shape_error(n, "mask must be f32 (batch, timesteps) matching the input", x, m);
  }
  n->ndim = n->iparam[GRU_RETURN_SEQUENCES] ? 3 : 2;
  n->shape[0] = B;
  n->shape[1] = n->iparam[GRU_RETURN_SEQUENCES] ? T : U;
  n->shape[2] = U;
  n->dtype = DAMO_F32;
  return damo_rnn_int8_size(n, f32_bytes(n, dims_of(n)), B, T, F, U, 3 * U);
}

/* One step: gx (B,3U) pre-activations in, activated z, r, n out; gh (B,3U) recurrent part. */
DAMO_MULTIVERSION_FUSED static void gru_cell(float *restrict gx, const float *restrict gh,
                                             const float *restrict h_prev, float *restrict h, int64_t B, int64_t U) {
  for (int64_t b = 0; b < B; b++) {
    float *a = gx + b * 3 * U;
    const float *c = gh + b * 3 * U, *hp = h_prev + b * U;
    for (int64_t u = 0; u < U; u++) {
      float z = damo_sigmoidf(a[u] + c[u]), r = damo_sigmoidf(a[U + u] + c[U + u]);
      float nn = damo_tanhf(a[2 * U + u] + r * c[2 * U + u]);
      a[u] = z;
      a[U + u] = r;
      a[2 * U + u] = nn;
      h[b * U + u] = z * hp[u] + (1.0f - z) * nn;
    }
  }
}

static damo_status gru_forward(damo_graph *g, damo_node *n) {
  (void)g;
  gru_dims d = dims_of(n);
  gru_buffers s = buffers_of(n, d);
  const float *x = damo_f32(n->in[0]), *w = damo_f32(n->in[1]), *r = damo_f32(n->in[2]), *bias = damo_f32(n->in[3]);
  int64_t B = d.B, T = d.T, F = d.F, U = d.U, G = 3 * U;
  int reverse = n->iparam[GRU_REVERSE];
  memset(s.zeros, 0, (size_t)(B * U) * sizeof(float));
  damo_rnn_to_time_major(x, s.x, B, T, F, reverse);
  if (s.mask) damo_rnn_mask_to_time_major(damo_f32(n->in[4]), s.mask, B, T, reverse);
  const damo_rnn_int8 *q = n->op_data;
  float *stage = NULL; /* unused: the recurrent product writes gh directly */
  void *rows = NULL;
  if (q) damo_rnn_int8_scratch(n, f32_bytes(n, d), B, G, &stage, &rows);
  for (int64_t row = 0; row < T * B; row++) {
    if (!q) memcpy(s.gx + row * G, bias, (size_t)G * sizeof(float));
    if (!q || row < B) memcpy(s.gh + row * G, bias + G, (size_t)G * sizeof(float));
  }
  if (q) damo_q8_dynamic_product(s.x, T * B, q->kernel, bias, rows, s.gx, G);
  else damo_gemm(0, 0, T * B, G, F, 1.0f, s.x, F, w, G, 1.0f, s.gx, G);
  for (int64_t t = 0; t < T; t++) {
    const float *h_prev = t > 0 ? s.h + (t - 1) * B * U : s.zeros;
    if (t > 0 && q) damo_q8_dynamic_product(h_prev, B, q->recurrent, bias + G, rows, s.gh + t * B * G, G);
    else if (t > 0) damo_gemm(0, 0, B, G, U, 1.0f, h_prev, U, r, G, 1.0f, s.gh + t * B * G, G);
    gru_cell(s.gx + t * B * G, s.gh + t * B * G, h_prev, s.h + t * B * U, B, U);
    if (s.mask) damo_rnn_carry_masked(s.h + t * B * U, h_prev, s.mask + t * B, B, U);
  }
  damo_rnn_output(s.h, damo_f32(n), s.mask, B, T, U, n->iparam[GRU_RETURN_SEQUENCES], reverse);
  return DAMO_OK;
}

/* Gate gradients of one step from dh (B,U); dh is left holding z * dh (the direct path to
 * h_{t-1}); the caller adds dGH R^T. A masked row (mask_s[b] == 0; mask_s NULL for none)
 * gets zero gate gradients and keeps its dh, as h_t = h_{t-1} there. */
DAMO_MULTIVERSION_FUSED static void gru_cell_backward(const float *restrict act, const float *restrict gh,
                                                      const float *restrict h_prev, float *restrict dh,
                                                      float *restrict dgx, float *restrict dgh,
                                                      const float *restrict mask_s, int64_t B, int64_t U) {
  for (int64_t b = 0; b < B; b++) {
    const float *a = act + b * 3 * U, *c = gh + b * 3 * U, *hp = h_prev + b * U;
    float *gxr = dgx + b * 3 * U, *ghr = dgh + b * 3 * U, *dhr = dh + b * U;
    if (mask_s && mask_s[b] == 0.0f) {
      memset(gxr, 0, (size_t)(3 * U) * sizeof(float));
      memset(ghr, 0, (size_t)(3 * U) * sizeof(float));
      continue;
    }
    for (int64_t u = 0; u < U; u++) {
      float z = a[u], r = a[U + u], nn = a[2 * U + u], g = dhr[u];
      float dz = g * (hp[u] - nn) * z * (1.0f - z);
      float dn = g * (1.0f - z) * (1.0f - nn * nn); /* w.r.t. the tanh's argument */
      float dr = dn * c[2 * U + u] * r * (1.0f - r);
      gxr[u] = dz;
      gxr[U + u] = dr;
      gxr[2 * U + u] = dn;
      ghr[u] = dz;
      ghr[U + u] = dr;
      ghr[2 * U + u] = dn * r;
      dhr[u] = g * z;
    }
  }
}

static void gru_backward(damo_graph *g, damo_node *n) {
  if (n->op_data) return; /* int8: inference only, damo_graph_backward refuses the node first */
  (void)g;
  gru_dims d = dims_of(n);
  gru_buffers s = buffers_of(n, d);
  damo_node *bn = n->in[3];
  const float *r = damo_f32(n->in[2]), *dy = n->grad;
  int64_t B = d.B, T = d.T, F = d.F, U = d.U, G = 3 * U;
  int reverse = n->iparam[GRU_REVERSE];
  float *dh = s.dh;
  memset(dh, 0, (size_t)(B * U) * sizeof(float));
  for (int64_t t = T - 1; t >= 0; t--) {
    damo_rnn_add_output_grad(dy, dh, s.mask, B, T, U, t, n->iparam[GRU_RETURN_SEQUENCES], reverse);
    const float *h_prev = t > 0 ? s.h + (t - 1) * B * U : s.zeros;
    float *dgh = s.dgh + t * B * G;
    gru_cell_backward(s.gx + t * B * G, s.gh + t * B * G, h_prev, dh, s.dgx + t * B * G, dgh,
                      s.mask ? s.mask + t * B : NULL, B, U);
    if (t > 0) damo_gemm(0, 1, B, U, G, 1.0f, dgh, G, r, G, 1.0f, dh, U); /* dh_{t-1} += dGH R^T */
  }
  if (damo_wants_weight_grad(g, bn)) {
    float *db = damo_node_grad_acc(bn);
    damo_rnn_column_sums(db, s.dgx, T * B, G);
    damo_rnn_column_sums(db + G, s.dgh, T * B, G);
  }
  damo_rnn_weight_and_input_grads(g, n, s.x, s.h, s.dgx, s.dgh, B, T, F, U, G, reverse, 1);
}

/* Backward reads only aux and the weights. */
const damo_op_def damo_op_def_gru = {"gru", 4, gru_infer, gru_forward, gru_backward, DAMO_OPF_EXAMPLE_NORMS};

damo_node *damo_gru_ex(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel, damo_node *bias,
                       damo_node *mask, int return_sequences, int reverse) {
  damo_node *in[5] = {x, kernel, recurrent_kernel, bias, mask};
  int p[2] = {return_sequences != 0, reverse != 0};
  return damo_graph_add_node(g, DAMO_OP_GRU, mask ? 5 : 4, in, p, 2, NULL, 0);
}

damo_node *damo_gru(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel, damo_node *bias,
                    int return_sequences) {
  return damo_gru_ex(g, x, kernel, recurrent_kernel, bias, NULL, return_sequences, 0);
}
