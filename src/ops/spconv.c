/* spconv.c - the conv2d op over a sparse kernel, for inference: y = act(x conv W + b) with W's
 * (KH KW C x F) form in CSR (a pruned model's kernel, as damo_model_load builds it past the
 * crossover sparsity), through damo_sparse_conv2d. Linear or ReLU fused; no backward: fit
 * drops the CSR and the graphs holding it before any step changes the kernel. */
#include "ops/ops.h"

/* iparam slots; the kernel's height and width share one (each below 2^15) */
enum { SC_KERNEL, SC_SH, SC_SW, SC_PT, SC_PL, SC_PB, SC_PR, SC_ACT };

static damo_conv2d_shape shape_of(const damo_node *n) {
  const damo_node *x = n->in[0];
  const damo_csr *w = n->op_data;
  damo_conv2d_shape s = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], n->iparam[SC_KERNEL] >> 15,
                         n->iparam[SC_KERNEL] & 0x7fff, w->rows, n->iparam[SC_SH], n->iparam[SC_SW],
                         n->iparam[SC_PT], n->iparam[SC_PB], n->iparam[SC_PL], n->iparam[SC_PR]};
  return s;
}

static damo_status spconv_infer(damo_node *n) {
  const damo_node *x = n->in[0], *b = n->n_in > 1 ? n->in[1] : NULL;
  const damo_csr *w = n->op_data;
  if (!w || x->dtype != DAMO_F32 || x->ndim != 4)
    return damo_shape_error(n, "needs f32 x (batch, height, width, channels) and a sparse kernel", x, NULL);
  const damo_conv2d_shape s = shape_of(n);
  if (w->cols != s.kernel_h * s.kernel_w * s.channels)
    return damo_shape_error(n, "the sparse kernel's taps are not kernel_h x kernel_w x the input's channels", x, NULL);
  if (b && (b->ndim != 1 || b->shape[0] != w->rows || b->dtype != DAMO_F32))
    return damo_shape_error(n, "bias must be f32 of shape (filters,)", x, b);
  if (n->iparam[SC_ACT] != DAMO_ACT_NONE && n->iparam[SC_ACT] != DAMO_ACT_RELU)
    return damo_error(DAMO_ERR_INVALID_ARG, "spconv2d: only linear or relu is fused (got activation %d)",
                      n->iparam[SC_ACT]);
  const int64_t bytes = damo_sparse_conv2d_scratch_bytes(&s, w);
  if (bytes <= 0) return damo_shape_error(n, "strides must be >= 1, paddings >= 0 and the kernel fit the padded input", x, NULL);
  n->ndim = 4;
  n->shape[0] = s.batch;
  n->shape[1] = (s.height + s.pad_top + s.pad_bottom - s.kernel_h) / s.stride_h + 1;
  n->shape[2] = (s.width + s.pad_left + s.pad_right - s.kernel_w) / s.stride_w + 1;
  n->shape[3] = s.filters;
  n->dtype = DAMO_F32;
  n->aux_bytes = (size_t)bytes;
  return DAMO_OK;
}

static damo_status spconv_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const damo_conv2d_shape s = shape_of(n);
  const float *b = n->n_in > 1 ? damo_f32(n->in[1]) : NULL;
  return damo_sparse_conv2d(&s, damo_f32(n->in[0]), n->op_data, b, n->iparam[SC_ACT] == DAMO_ACT_RELU, n->aux,
                            damo_f32(n));
}

const damo_op_def damo_op_def_spconv2d = {"spconv2d", 2, spconv_infer, spconv_forward, NULL, 0}; /* inference only */

damo_node *damo_spconv2d_op(damo_graph *g, damo_node *x, const damo_csr *wt, int kernel_h, int kernel_w,
                            damo_node *bias, damo_activation act, int stride_h, int stride_w, int pad_top,
                            int pad_left, int pad_bottom, int pad_right) {
  /* a size that does not fit its 15 bits becomes 0, which infer refuses */
  const int fits = kernel_h > 0 && kernel_w > 0 && kernel_h < 1 << 15 && kernel_w < 1 << 15;
  damo_node *in[2] = {x, bias};
  int p[8] = {fits ? kernel_h << 15 | kernel_w : 0, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, (int)act};
  return damo_graph_add_node_data(g, DAMO_OP_SPCONV2D, bias ? 2 : 1, in, p, 8, NULL, 0, wt);
}
