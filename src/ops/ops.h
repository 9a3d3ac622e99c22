/* ops.h - declarations shared by the op files (src/ops, the layer above graph): each
 * family's damo_op_def (registry.c puts them in graph's damo_op_table), test hooks and the
 * chunking of elementwise loops. */
#ifndef DAMO_OPS_H
#define DAMO_OPS_H

#include "graph/graph.h"
#include "kernels/kernels.h"

/* Ops' own definitions, one per op family file. */
extern const damo_op_def damo_op_def_matmul;
extern const damo_op_def damo_op_def_add, damo_op_def_sub, damo_op_def_mul, damo_op_def_div, damo_op_def_scale;
extern const damo_op_def damo_op_def_relu, damo_op_def_sigmoid, damo_op_def_tanh, damo_op_def_exp, damo_op_def_log;
extern const damo_op_def damo_op_def_softmax, damo_op_def_log_softmax;
extern const damo_op_def damo_op_def_sum, damo_op_def_mean;
extern const damo_op_def damo_op_def_reshape, damo_op_def_transpose;
extern const damo_op_def damo_op_def_dropout;
extern const damo_op_def damo_op_def_soft_ce;
extern const damo_op_def damo_op_def_softmax_ce, damo_op_def_bce_logits, damo_op_def_mse;
extern const damo_op_def damo_op_def_dense, damo_op_def_lstm, damo_op_def_embedding, damo_op_def_gru;
extern const damo_op_def damo_op_def_conv2d, damo_op_def_max_pool2d, damo_op_def_avg_pool2d,
    damo_op_def_global_avg_pool2d, damo_op_def_batch_norm;
extern const damo_op_def damo_op_def_sequence_mask, damo_op_def_concat, damo_op_def_global_pool1d;
extern const damo_op_def damo_op_def_layer_norm, damo_op_def_gelu, damo_op_def_attention;
extern const damo_op_def damo_op_def_slice_last, damo_op_def_linear_ce;
extern const damo_op_def damo_op_def_qdense, damo_op_def_qconv2d, damo_op_def_spdense, damo_op_def_spconv2d;
extern const damo_op_def damo_op_def_quantize_u8;

/* int8 inference ops (qlinear.c) over a layer's packed weights w (kept alive by the layer):
 * the input quantised to affine uint8 with x_scale and zero_point, or per batch from its
 * range when x_scale <= 0 (dynamic); bias (a param node) may be NULL; act linear or relu
 * fused, others refused. They have no backward: a quantised model does not train. */
damo_node *damo_qdense_op(damo_graph *g, damo_node *x, const damo_qweight *w, damo_node *bias, damo_activation act,
                          float x_scale, int zero_point);
/* Turns a dense node (before compile) into a qdense over w, in place, so that its consumers
 * need no change: the kernel input is dropped (its param is no longer read), the bias kept,
 * the input quantised with x_scale and zero_point (calibrated: static) or, x_scale 0, per
 * batch (dynamic). Its activation must be linear or relu, and w the (K x N) int8 form of its
 * kernel (either of dense's layouts). */
damo_status damo_dense_to_qdense(damo_node *n, const damo_qweight *w, float x_scale, int zero_point);
/* Folds a GELU into the qdense that feeds it, before compile (and before damo_int8_chain):
 * when gelu's input is a qdense (f32 output, linear) read by nothing else in g, the gelu node
 * becomes that qdense with the GELU in its epilogue (its consumers keep their pointers; the
 * old qdense, read by no one, is left out by compile). Returns 1 when folded, 0 when the
 * pattern does not hold (nothing changed). */
int damo_qdense_absorb_gelu(damo_graph *g, damo_node *gelu);
/* Folds a residual connection's add into the qdense that feeds it, before compile: when one
 * input of add is a qdense (f32 output, linear or relu, no GELU) read by nothing else and the
 * other has its shape, the add node becomes that qdense adding the other input in its
 * epilogue (y = act(x W + b) + r). Returns 1 when folded, 0 otherwise (nothing changed). */
int damo_qdense_absorb_add(damo_graph *g, damo_node *add);
/* For graphs that only ever run inference (an int8 model's): every dropout node not in keep
 * is stepped over (its readers read its input; compile then leaves it out), so no forward
 * copies it. Returns how many. */
int damo_dropout_elide(damo_graph *g, int n_keep, damo_node *const *keep);
/* out (M, N; ldo apart) = x (M, K) W + bias (may be NULL) through the int8 product, x
 * quantised with its own range (dynamic, as qdense without calibration); a is scratch of
 * damo_q8_scratch_bytes(M, w) bytes. What the int8 recurrent ops run their products on. */
size_t damo_q8_scratch_bytes(int64_t M, const damo_qweight *w);
void damo_q8_dynamic_product(const float *x, int64_t M, const damo_qweight *w, const float *bias, void *a, float *out,
                             int64_t ldo);
/* The same with x quantised by x_scale and zero_point (static; x_scale 0: dynamic). */
void damo_q8_product(const float *x, int64_t M, const damo_qweight *w, float x_scale, int zero_point,
                     const float *bias, void *a, float *out, int64_t ldo);
/* An int8 LSTM or GRU (lstm.c, gru.c): both products on int8 kernels with dynamic inputs
 * (the input projection over all steps, then h_{t-1} R each step, h quantised per step), as
 * PyTorch's dynamic quantised LSTM does. The f32 kernel inputs stay (their shapes are
 * checked) but are not read; inference only. */
typedef struct damo_rnn_int8 {
  const damo_qweight *kernel, *recurrent;
} damo_rnn_int8;
damo_node *damo_recurrent_int8_op(damo_graph *g, int gru, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel,
                                  damo_node *bias, damo_node *mask, int return_sequences, int reverse,
                                  const damo_rnn_int8 *q);
/* Links int8 layers of an inference graph: each qdense or qconv2d whose output reaches only
 * a calibrated one (through max pooling, reshapes, and dropout, which it steps over there:
 * a dropout elsewhere stays) writes that layer's uint8 (damo_q8_out; after a folded GELU
 * too) and the ops between carry it; outputs in keep stay f32. A qdense or layer norm that a
 * dynamic int8 reader reads directly keeps its f32 output and records its range while the
 * values are in cache, which the reader quantises with instead of reading its input once
 * more for it (the same scale and zero point). An input several qdense read (all dynamic,
 * or all with one calibrated scale and zero point) is quantised once for them by a
 * quantize_u8 node added after it.
 * DAMO_INT8_CHAIN=0 in the environment leaves every hand-over f32 and every quantisation
 * to its reader (the same values, to compare).
 * Call before damo_graph_compile, on graphs that never run backward. */
damo_status damo_int8_chain(damo_graph *g, int n_keep, damo_node *const *keep);
/* x (N, H, W, C) channels-last; w packs the (KH, KW, C, F) kernel as (KH*KW*C, F). */
damo_node *damo_qconv2d_op(damo_graph *g, damo_node *x, const damo_qweight *w, int kh, int kw, damo_node *bias,
                           damo_activation act, int stride_h, int stride_w, int pad_top, int pad_left, int pad_bottom,
                           int pad_right, float x_scale, int zero_point);

/* Dense over a sparse kernel (spdense.c): wt is W^T in CSR (damo_csr_from_dense_transposed),
 * kept alive by the layer; bias may be NULL; linear or relu fused. Inference only. */
damo_node *damo_spdense_op(damo_graph *g, damo_node *x, const damo_csr *wt, damo_node *bias, damo_activation act);
/* Conv2D over a sparse kernel (spconv.c): wt is the (KH KW C x F) kernel's CSR as
 * damo_csr_from_dense_transposed makes it; linear or relu fused, inference only. Paddings in
 * damo_conv2d_ex's order. */
damo_node *damo_spconv2d_op(damo_graph *g, damo_node *x, const damo_csr *wt, int kernel_h, int kernel_w,
                            damo_node *bias, damo_activation act, int stride_h, int stride_w, int pad_top,
                            int pad_left, int pad_bottom, int pad_right);

/* damo_linear_cross_entropy with chunk_rows logits rows at a time (0: the default chunk), so
 * tests can cover the chunk boundaries with small shapes. */
damo_node *damo_linear_cross_entropy_chunked(damo_graph *g, damo_node *x, damo_node *weight, damo_node *bias,
                                             damo_node *labels, int chunk_rows);

/* Loops of at most this many items run on one thread. */
#define DAMO_PARALLEL_MIN 32768
/* Rough single-thread costs of an item, in nanoseconds: a map of adds and multiplies, and
 * one with exp, tanh or erf. */
#define DAMO_NS_MAP 0.25
#define DAMO_NS_EXP 2.0
/* Threads for a loop of `items`, each about ns_per_item on one thread, whose results do not
 * depend on how the loop is split (a map, or rows each done by one thread): one up to
 * DAMO_PARALLEL_MIN items or where the loop is too short to repay starting a region
 * (damo_threads_for_seconds: 25 us per region on a paravirtualised EPYC). Loops that sum across
 * the split keep the fixed threshold: their last bits must not depend on a timing. */
static inline int damo_loop_threads(int64_t items, double ns_per_item) {
  if (items <= DAMO_PARALLEL_MIN) return 1;
  return damo_threads_for_seconds((double)items * ns_per_item * 1e-9);
}
/* Elementwise loops that call a multiversioned kernel split [0, count) into chunks of this
 * many elements (whole cache lines; enough work per chunk to amortise the call). */
#define DAMO_CHUNK 4096
/* Chunk c of [0, count): returns its first index and sets *len to its length. */
static inline int64_t damo_chunk(int64_t count, int64_t c, int64_t *len) {
  const int64_t first = c * DAMO_CHUNK;
  *len = count - first < DAMO_CHUNK ? count - first : DAMO_CHUNK;
  return first;
}

#endif
