/* dense.c - the fused Dense op: y = act(x W + b), for x (..., K), W (K, N), b (N) and act in
 * {linear, relu, sigmoid, tanh}; or with W stored (N, K) as torch.nn.Linear keeps it (BERT's
 * HuggingFace weights), y = act(x W^T + b), the GEMMs taking the transpose. It is the composition matmul -> add -> activation done in
 * one node, tested against that composition (tests/test_fused.c):
 *   - forward runs the product per block of rows, then adds the bias and applies the
 *     activation to that block while it is still in cache (the GEMM epilogue);
 *   - no pre-activation buffer is kept: each activation's derivative is written in terms of
 *     its output (relu: y > 0, sigmoid: y(1-y), tanh: 1-y^2), so backward reads only y;
 *   - backward forms dz = dy * act'(y) once (in aux), then db = sum over rows of dz,
 *     dW += x^T dz and dx += dz W^T with the GEMM. */
#include "ops/ops.h"

#include <math.h>

enum { DENSE_ACT = 0, DENSE_TRANSPOSED = 1 }; /* iparam slots */

/* Rows per block: the block's outputs (rows x N floats) stay in L2 for the epilogue, but at
 * least 512 rows: every block's GEMM packs the whole kernel again, and 28-row blocks of a
 * (768, 2304) kernel spent more time packing than multiplying (the GPT-2 124M forward). */
static int64_t block_rows(int64_t N) {
  int64_t rows = (256 * 1024 / 4) / (N > 0 ? N : 1);
  return rows < 512 ? 512 : rows;
}

static damo_status dense_infer(damo_node *n) {
  const damo_node *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
  if (x->dtype != DAMO_F32 || w->dtype != DAMO_F32 || x->ndim < 1 || w->ndim != 2)
    return damo_shape_error(n, "needs f32 x (..., K) and kernel (K, N)", x, w);
  const int t = n->iparam[DENSE_TRANSPOSED]; /* kernel stored (N, K), torch.nn.Linear's layout */
  if (x->shape[x->ndim - 1] != w->shape[t]) return damo_shape_error(n, "inner dimensions differ", x, w);
  if (b && (b->ndim != 1 || b->shape[0] != w->shape[1 - t] || b->dtype != DAMO_F32))
    return damo_shape_error(n, "bias must be f32 of shape (N,)", w, b);
  int act = n->iparam[DENSE_ACT];
  if (act != DAMO_ACT_NONE && act != DAMO_ACT_RELU && act != DAMO_ACT_SIGMOID && act != DAMO_ACT_TANH)
    return damo_error(DAMO_ERR_INVALID_ARG, "dense: activation %d cannot be fused (linear, relu, sigmoid or tanh)", act);
  n->ndim = x->ndim;
  memcpy(n->shape, x->shape, sizeof n->shape);
  n->shape[n->ndim - 1] = w->shape[1 - t];
  n->dtype = DAMO_F32;
  n->aux_bytes = act == DAMO_ACT_NONE ? 0 : (size_t)damo_node_count(n) * sizeof(float); /* dz in backward */
  return DAMO_OK;
}

static inline float sigmoidf(float v) { return v >= 0 ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v)); }

/* Bias and activation over rows x N outputs: the epilogue. */
static void epilogue(float *y, const float *b, int64_t rows, int64_t N, int act) {
  for (int64_t r = 0; r < rows; r++) {
    float *row = y + r * N;
    if (b)
      for (int64_t j = 0; j < N; j++) row[j] += b[j];
    switch (act) {
    case DAMO_ACT_RELU:
      for (int64_t j = 0; j < N; j++) row[j] = row[j] > 0 ? row[j] : 0.0f;
      break;
    case DAMO_ACT_SIGMOID:
      for (int64_t j = 0; j < N; j++) row[j] = sigmoidf(row[j]);
      break;
    case DAMO_ACT_TANH:
      for (int64_t j = 0; j < N; j++) row[j] = tanhf(row[j]);
      break;
    default: break;
    }
  }
}

static damo_status dense_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const damo_node *xn = n->in[0], *wn = n->in[1];
  const float *x = damo_f32(xn), *w = damo_f32(wn), *b = n->n_in > 2 ? damo_f32(n->in[2]) : NULL;
  float *y = damo_f32(n);
  const int t = n->iparam[DENSE_TRANSPOSED];
  int64_t K = wn->shape[t], N = wn->shape[1 - t], M = damo_node_count(n) / N, step = block_rows(N);
  for (int64_t r0 = 0; r0 < M; r0 += step) {
    int64_t rows = M - r0 < step ? M - r0 : step;
    damo_gemm(0, t, rows, N, K, 1.0f, x + r0 * K, K, w, t ? K : N, 0.0f, y + r0 * N, N);
    epilogue(y + r0 * N, b, rows, N, n->iparam[DENSE_ACT]);
  }
  return DAMO_OK;
}

/* DP-SGD's norm pass: each example's |dW|^2 and |db|^2 from its rows of x (T, K) and dz (T, N).
 * One row: |x|^2 |dz|^2. A sequence: sum over (t, s) of (x_t . x_s)(dz_t . dz_s) from the two
 * T x T Gram matrices ("ghost" norms) where T (K + N) < K N, else dW_i = x_i^T dz_i itself. */
static void dense_example_norms(damo_graph *g, const damo_node *n, const float *x, const float *dz, int64_t K, int64_t N,
                                int64_t M) {
  const damo_node *wn = n->in[1], *bn = n->n_in > 2 ? n->in[2] : NULL;
  const int64_t B = g->batch, T = M / (B > 0 ? B : 1);
  const int want_w = damo_wants_weight_norms(g, wn), want_b = damo_wants_weight_norms(g, bn);
  if (T == 1) {
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(M * (K + N), DAMO_NS_MAP))
    for (int64_t i = 0; i < B; i++) {
      const double sz = damo_sum_squares(dz + i * N, N);
      if (want_w) damo_example_norm_add(g, wn, i, damo_sum_squares(x + i * K, K) * sz);
      if (want_b) damo_example_norm_add(g, bn, i, sz);
    }
    return;
  }
  const int ghost = T * (K + N) < K * N;
  float *buf = damo_graph_scratch(g, (size_t)((ghost ? 2 * T * T : K * N) + N) * sizeof(float));
  if (!buf) return;
  float *bsum = buf + (ghost ? 2 * T * T : K * N);
  for (int64_t i = 0; i < B; i++) {
    const float *xi = x + i * T * K, *zi = dz + i * T * N;
    if (want_b) {
      memset(bsum, 0, (size_t)N * sizeof *bsum);
      for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < N; j++) bsum[j] += zi[t * N + j];
      damo_example_norm_add(g, bn, i, damo_sum_squares(bsum, N));
    }
    if (!want_w) continue;
    if (ghost) {
      float *gx = buf, *gz = buf + T * T;
      damo_gemm(0, 1, T, T, K, 1.0f, xi, K, xi, K, 0.0f, gx, T);
      damo_gemm(0, 1, T, T, N, 1.0f, zi, N, zi, N, 0.0f, gz, T);
      double sq = 0;
      for (int64_t e = 0; e < T * T; e++) sq += (double)gx[e] * gz[e];
      damo_example_norm_add(g, wn, i, sq);
    } else {
      damo_gemm(1, 0, K, N, T, 1.0f, xi, K, zi, N, 0.0f, buf, N);
      damo_example_norm_add(g, wn, i, damo_sum_squares(buf, K * N));
    }
  }
}

static void dense_backward(damo_graph *g, damo_node *n) {
  damo_node *xn = n->in[0], *wn = n->in[1], *bn = n->n_in > 2 ? n->in[2] : NULL;
  const float *x = damo_f32(xn), *w = damo_f32(wn), *y = damo_f32(n), *dy = n->grad;
  const int t = n->iparam[DENSE_TRANSPOSED];
  int64_t K = wn->shape[t], N = wn->shape[1 - t], M = damo_node_count(n) / N;
  int act = n->iparam[DENSE_ACT];
  const float *dz = dy;
  if (act != DAMO_ACT_NONE) { /* dz = dy * act'(y), once, into aux */
    float *z = n->aux;
    int64_t count = M * N;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
    for (int64_t i = 0; i < count; i++) {
      float d = act == DAMO_ACT_RELU ? (y[i] > 0 ? 1.0f : 0.0f)
                : act == DAMO_ACT_SIGMOID ? y[i] * (1.0f - y[i])
                                          : 1.0f - y[i] * y[i];
      z[i] = dy[i] * d;
    }
    dz = z;
  }
  if (g->norm_pass && (damo_wants_weight_norms(g, wn) || damo_wants_weight_norms(g, bn)))
    dense_example_norms(g, n, x, dz, K, N, M);
  if (damo_wants_weight_grad(g, bn)) { /* column sums, rows in order: the same result for any thread count */
    float beta, *db = damo_node_grad_out(bn, &beta);
    if (beta == 0.0f) memset(db, 0, (size_t)N * sizeof *db);
    for (int64_t r = 0; r < M; r++)
      for (int64_t j = 0; j < N; j++) db[j] += dz[r * N + j];
  }
  float beta, *grad;
  if (damo_wants_weight_grad(g, wn)) {
    grad = damo_node_grad_out(wn, &beta);
    if (t) /* dW (N, K) = dz^T x */
      damo_gemm(1, 0, N, K, M, 1.0f, dz, N, x, K, beta, grad, K);
    else /* dW (K, N) = x^T dz */
      damo_gemm(1, 0, K, N, M, 1.0f, x, K, dz, N, beta, grad, N);
  }
  if (xn->in_backward) { /* dx = dz W^T for (K, N) W, dz W for (N, K) */
    grad = damo_node_grad_out(xn, &beta);
    damo_gemm(0, !t, M, K, N, 1.0f, dz, N, w, t ? K : N, beta, grad, K);
  }
}

/* Backward reads x (for dW) and its own output y (for act'). */
const damo_op_def damo_op_def_dense = {"dense", 3, dense_infer, dense_forward, dense_backward,
                                       DAMO_OPF_BWD_INPUTS | DAMO_OPF_BWD_OUTPUT | DAMO_OPF_EXAMPLE_NORMS};

damo_node *damo_dense_op(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *bias, damo_activation act) {
  damo_node *in[3] = {x, kernel, bias};
  int p[2] = {(int)act, 0};
  return damo_graph_add_node(g, DAMO_OP_DENSE, bias ? 3 : 2, in, p, 2, NULL, 0);
}

damo_node *damo_linear_op(damo_graph *g, damo_node *x, damo_node *weight, damo_node *bias, damo_activation act) {
  damo_node *in[3] = {x, weight, bias};
  int p[2] = {(int)act, 1};
  return damo_graph_add_node(g, DAMO_OP_DENSE, bias ? 3 : 2, in, p, 2, NULL, 0);
}
