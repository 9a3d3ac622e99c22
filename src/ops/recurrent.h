/* recurrent.h - what the fused recurrent ops (lstm.c, gru.c) share: moving sequences
 * between the batch-major layout of graph values (B, T, ...) and the time-major layout of
 * their internals (T, B, ...), and the weight and input gradients of a recurrence
 *   gates_t = x_t W + h_{t-1} R + ...
 * once backpropagation through time has produced each step's gate gradients. */
#ifndef DAMO_OPS_RECURRENT_H
#define DAMO_OPS_RECURRENT_H

#include "ops/ops.h"

/* Internals are in processing order: step s holds time t = s, or t = T-1-s with reverse,
 * so the recurrence and its weight gradients never look at the direction. */
static inline int64_t damo_rnn_time(int64_t s, int64_t T, int reverse) { return reverse ? T - 1 - s : s; }
/* x (B, T, F) -> xt (T, B, F) in processing order. */
void damo_rnn_to_time_major(const float *x, float *xt, int64_t B, int64_t T, int64_t F, int reverse);
/* mask (B, T) -> mt (T, B) in processing order, each entry exactly 0 or 1 (1: present). */
void damo_rnn_mask_to_time_major(const float *mask, float *mt, int64_t B, int64_t T, int reverse);
/* A masked step keeps the state: rows b with mask_s[b] == 0 get state[b] = prev[b]. */
void damo_rnn_carry_masked(float *state, const float *prev, const float *mask_s, int64_t B, int64_t U);
/* y (B, T, U) <- ht (T, B, U) at the original positions, masked steps as 0 (mt, or NULL for
 * none); or the last processed step's (B, U) when !sequences. */
void damo_rnn_output(const float *ht, float *y, const float *mt, int64_t B, int64_t T, int64_t U, int sequences,
                     int reverse);
/* Adds dy's share to the carried dh (B, U) at step s (masked steps output a constant 0). */
void damo_rnn_add_output_grad(const float *dy, float *dh, const float *mt, int64_t B, int64_t T, int64_t U, int64_t s,
                              int sequences, int reverse);
/* Gradients from the gate gradients of all steps, dgx (T, B, G) for the input side and
 * dgh (T, B, G) for the recurrent side (the same buffer for an LSTM):
 *   dW (F, G) = X^T dGX, dR (U, G) = H_{0..T-2}^T dGH_{1..T-1}, dX = dGX W^T.
 * xt (T, B, F) is overwritten by dX (time-major) on the way to x's gradient, except in
 * DP-SGD's norm pass, which measures each example's dW, dR and bias gradient (the bias: the
 * sums of dGX, and of dGH too for two_bias, GRU's (2, G)) instead, and keeps xt for the
 * weighted pass after it. Masked steps have zero gate gradients, so they add nothing to any
 * of these. */
void damo_rnn_weight_and_input_grads(damo_graph *g, damo_node *n, float *xt, const float *h, const float *dgx,
                                     const float *dgh, int64_t B, int64_t T, int64_t F, int64_t U, int64_t G,
                                     int reverse, int two_bias);
/* An int8 op (n->op_data set): checks the kernels against F -> G and U -> G and sizes aux
 * as f32_bytes plus the int8 products' scratch (aux_bytes = f32_bytes without op_data). */
damo_status damo_rnn_int8_size(damo_node *n, size_t f32_bytes, int64_t B, int64_t T, int64_t F, int64_t U, int64_t G);
/* That scratch: a (B, G) f32 staging block and the quantised rows. */
void damo_rnn_int8_scratch(const damo_node *n, size_t f32_bytes, int64_t B, int64_t G, float **stage, void **rows);
/* dst[k] += sum over rows of src (rows, cols), rows in order. */
void damo_rnn_column_sums(float *dst, const float *src, int64_t rows, int64_t cols);

#endif
