/* matmul.c - batched matrix product over the last two axes, with transposes.
 *
 * C = op(A) op(B): op(A) is (..., M, K), op(B) is (..., K, N), C is (..., M, N). A 2-D
 * operand is shared by every batch entry (a Dense kernel). Gradients, with dC (M, N):
 *   dA = dC op(B)^T  (stored back transposed when trans_a)
 *   dB = op(A)^T dC  (stored back transposed when trans_b)
 * Every product goes through damo_gemm, accumulating (beta = 1) into zeroed gradients. */
#include "ops/ops.h"

enum { MM_TRANS_A = 0, MM_TRANS_B = 1 };

typedef struct mm_dims {
  int64_t M, N, K, batches;
  int a_batched, b_batched;
} mm_dims;

static mm_dims mm_dims_of(const damo_node *n) {
  const damo_node *a = n->in[0], *b = n->in[1];
  int ta = n->iparam[MM_TRANS_A], tb = n->iparam[MM_TRANS_B];
  mm_dims d;
  d.M = ta ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
  d.K = ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
  d.N = tb ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
  d.a_batched = a->ndim > 2;
  d.b_batched = b->ndim > 2;
  d.batches = 1;
  for (int i = 0; i < n->ndim - 2; i++) d.batches *= n->shape[i];
  return d;
}

static damo_status matmul_infer(damo_node *n) {
  const damo_node *a = n->in[0], *b = n->in[1];
  if (a->dtype != DAMO_F32 || b->dtype != DAMO_F32) return damo_shape_error(n, "operands must be f32", a, b);
  if (a->ndim < 2 || b->ndim < 2) return damo_shape_error(n, "operands need at least 2 axes", a, b);
  int ta = n->iparam[MM_TRANS_A], tb = n->iparam[MM_TRANS_B];
  int64_t ka = ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
  int64_t kb = tb ? b->shape[b->ndim - 1] : b->shape[b->ndim - 2];
  if (ka != kb) return damo_shape_error(n, "inner dimensions differ", a, b);
  if (a->ndim > 2 && b->ndim > 2) {
    if (a->ndim != b->ndim) return damo_shape_error(n, "batched operands need the same rank", a, b);
    for (int i = 0; i < a->ndim - 2; i++)
      if (a->shape[i] != b->shape[i]) return damo_shape_error(n, "batch axes differ", a, b);
  }
  const damo_node *lead = a->ndim >= b->ndim ? a : b;
  n->ndim = lead->ndim;
  for (int i = 0; i < lead->ndim - 2; i++) n->shape[i] = lead->shape[i];
  n->shape[n->ndim - 2] = ta ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
  n->shape[n->ndim - 1] = tb ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
  n->dtype = DAMO_F32;
  return DAMO_OK;
}

static damo_status matmul_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const float *A = damo_f32(n->in[0]), *B = damo_f32(n->in[1]);
  float *C = damo_f32(n);
  int ta = n->iparam[MM_TRANS_A], tb = n->iparam[MM_TRANS_B];
  mm_dims d = mm_dims_of(n);
  int64_t lda = ta ? d.M : d.K, ldb = tb ? d.K : d.N;
  if (d.a_batched && !d.b_batched && !ta) { /* rows of every batch entry stack into one product */
    damo_gemm(0, tb, d.batches * d.M, d.N, d.K, 1.0f, A, lda, B, ldb, 0.0f, C, d.N);
    return DAMO_OK;
  }
  for (int64_t l = 0; l < d.batches; l++)
    damo_gemm(ta, tb, d.M, d.N, d.K, 1.0f, A + (d.a_batched ? l * d.M * d.K : 0), lda,
              B + (d.b_batched ? l * d.K * d.N : 0), ldb, 0.0f, C + l * d.M * d.N, d.N);
  return DAMO_OK;
}

static void matmul_backward(damo_graph *g, damo_node *n) {
  (void)g;
  damo_node *a = n->in[0], *b = n->in[1];
  const float *A = damo_f32(a), *B = damo_f32(b), *dC = n->grad;
  int ta = n->iparam[MM_TRANS_A], tb = n->iparam[MM_TRANS_B];
  mm_dims d = mm_dims_of(n);
  int64_t lda = ta ? d.M : d.K, ldb = tb ? d.K : d.N, M = d.M, N = d.N, K = d.K;
  if (a->in_backward) {
    float *dA = damo_node_grad_acc(a);
    for (int64_t l = 0; l < (d.a_batched ? d.batches : 1); l++) {
      const float *Bl = B + (d.b_batched ? l * K * N : 0), *dCl = dC + l * M * N;
      float *dAl = dA + l * M * K;
      if (!d.a_batched) /* a shared 2-D A collects every batch entry's contribution */
        for (int64_t m = 0; m < d.batches; m++) {
          const float *Bm = B + (d.b_batched ? m * K * N : 0), *dCm = dC + m * M * N;
          if (!ta) damo_gemm(0, !tb, M, K, N, 1.0f, dCm, N, Bm, ldb, 1.0f, dA, K);
          else damo_gemm(tb, 1, K, M, N, 1.0f, Bm, ldb, dCm, N, 1.0f, dA, M);
        }
      else if (!ta) damo_gemm(0, !tb, M, K, N, 1.0f, dCl, N, Bl, ldb, 1.0f, dAl, K);
      else damo_gemm(tb, 1, K, M, N, 1.0f, Bl, ldb, dCl, N, 1.0f, dAl, M);
    }
  }
  if (b->in_backward) {
    float *dB = damo_node_grad_acc(b);
    if (d.a_batched && !d.b_batched && !ta) {
      int64_t rows = d.batches * M;
      if (!tb) damo_gemm(1, 0, K, N, rows, 1.0f, A, lda, dC, N, 1.0f, dB, N);
      else damo_gemm(1, 0, N, K, rows, 1.0f, dC, N, A, lda, 1.0f, dB, K);
      return;
    }
    for (int64_t l = 0; l < d.batches; l++) {
      const float *Al = A + (d.a_batched ? l * M * K : 0), *dCl = dC + l * M * N;
      float *dBl = dB + (d.b_batched ? l * K * N : 0);
      if (!tb) damo_gemm(!ta, 0, K, N, M, 1.0f, Al, lda, dCl, N, 1.0f, dBl, N);
      else damo_gemm(1, ta, N, K, M, 1.0f, dCl, N, Al, lda, 1.0f, dBl, K);
    }
  }
}

const damo_op_def damo_op_def_matmul = {"matmul", 2, matmul_infer, matmul_forward, matmul_backward, DAMO_OPF_BWD_INPUTS};

damo_node *damo_matmul(damo_graph *g, damo_node *a, damo_node *b, int trans_a, int trans_b) {
  damo_node *in[2] = {a, b};
  int p[2] = {trans_a != 0, trans_b != 0};
  return damo_graph_add_node(g, DAMO_OP_MATMUL, 2, in, p, 2, NULL, 0);
}
