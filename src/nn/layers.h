/* layers.h - layer objects: a type (a table of functions) plus the settings, shapes and
 * parameter slots of one instance. Layers only compose graph ops; none has its own
 * backward. Parameters live in the model's one flat block; a layer's slots point into it. */
#ifndef DAMO_LAYERS_H
#define DAMO_LAYERS_H

#include "graph/graph.h"
#include "ops/ops.h"

#define DAMO_LAYER_MAX_PARAMS 32 /* a transformer decoder with cross-attention: 26 */
#define DAMO_LAYER_MAX_INPUTS 8 /* a merge layer's inputs */

/* A shape without the batch axis. */
typedef struct damo_layer_shape {
  int ndim;
  int64_t dim[DAMO_MAX_DIMS];
} damo_layer_shape;

typedef struct damo_param_slot {
  char name[48]; /* "kernel", "bias", "backward_lstm.recurrent_kernel", "cross_attention/attention_output/kernel" */
  int ndim;
  int64_t shape[DAMO_MAX_DIMS];
  damo_init init;
  int frozen;                /* not trained (batch-norm running statistics): no gradient */
  damo_tensor *value, *grad; /* views into the model's flat blocks (set by the model); grad NULL when frozen */
} damo_param_slot;

/* One int8 parameter slot: its values as int8 in the slot's layout, with a scale per output
 * column (a kernel: the last axis) or per row (an embedding table); the f32 slot holds the
 * dequantised values, scale * q. Kernels are packed for the int8 product; a table is
 * weight-only (its lookup reads the f32 slot). */
typedef struct damo_layer_qslot {
  int8_t *q;                    /* NULL: the slot stays f32 */
  float *scale;
  int per_row;                  /* the scale's axis: 1 rows (tables), 0 columns (kernels) */
  struct damo_qweight *packed;  /* kernels; NULL for a table */
} damo_layer_qslot;

/* The int8 state of a quantised layer (compress/quantize.c makes it; the model directory
 * saves and loads it): dense and conv2d (kernel; input static or per batch), lstm and gru
 * and their bidirectional wrapper (kernel and recurrent kernel, inputs per batch),
 * embedding (its table, weight-only). */
typedef struct damo_layer_quant {
  damo_layer_qslot slot[DAMO_LAYER_MAX_PARAMS];
  float x_scale;         /* dense/conv2d: the input's affine uint8 scale; 0: per batch (dynamic) */
  int32_t x_zero_point;  /* 0..255 */
  damo_rnn_int8 rnn[2];  /* lstm/gru: each direction's packed kernels, what the ops read */
} damo_layer_quant;

typedef struct damo_layer_type {
  const char *type; /* "dense", as written in config.json */
  /* Output shape (without batch) from the input shape; declares parameter slots. */
  damo_status (*infer)(damo_layer *l);
  /* Adds the layer's ops on top of x; *pre_activation gets the node before the activation
   * (for losses that fuse it), or the output. */
  damo_node *(*build)(damo_layer *l, damo_graph *g, damo_node *x, damo_node **pre_activation);
  /* Layers of several inputs (merge layers, attention) say how many they take, min_inputs
   * (0: 2) to max_inputs (0: exactly one, through infer/build above); infer reads every
   * input's shape from l->ins, and build_multi gets every input node, their timestep masks
   * in l->in_masks (NULL: none) and may leave one for its output in l->out_mask. */
  int max_inputs, min_inputs;
  damo_node *(*build_multi)(damo_layer *l, damo_graph *g, int n, damo_node *const *xs);
  /* Reads i32 token ids (embedding, token_and_position_embedding): it must take a model
   * input, which then holds ids and feeds only such layers. */
  int takes_ids;
  /* A block a model recomputing activations runs again in backward as a whole (transformer
   * blocks: damo_model_set_recompute); its input and output are kept, nothing inside. */
  int recompute_unit;
} damo_layer_type;

struct damo_layer {
  const damo_layer_type *type;
  char name[DAMO_NAME_MAX];
  int named;                /* name given by the user (else the model assigns one) */
  int units;                /* dense, conv filters, embedding output_dim; multi_head_attention output_shape (0: the query's) */
  damo_activation act;      /* dense, activation */
  int separate_activation;  /* conv2d: build the activation as its own node (an explainer reads the layer's
                             * output and its gradient there; fused, the kept gradient is the one before it) */
  damo_init kernel_init;    /* dense */
  int use_bias;             /* dense */
  float rate;               /* dropout; attention and transformer blocks: their dropout */
  float scale, offset;      /* rescaling: x * scale + offset */
  int return_sequences;     /* lstm, gru */
  int kernel[2], stride[2]; /* conv2d, pooling: window and strides (h, w); 1-D layers use [0] */
  int pad[4];               /* top, left, bottom, right, from padding_same and the input size */
  int padding_same;         /* 1: "same", 0: "valid" (conv1d "causal": causal set, padding_same 0) */
  float momentum, epsilon;  /* batch_normalization; epsilon also layer_normalization, transformer blocks */
  int input_dim, mask_zero; /* embedding (output_dim is units); token_and_position_embedding vocabulary_size */
  damo_layer *inner;        /* bidirectional: the wrapped lstm/gru (owned; a template, its slots unused) */
  damo_merge_mode merge;    /* bidirectional */
  /* The timestep mask (B, T) f32 around build: in_mask is set by the model before build
   * (NULL: none), out_mask by build for the next layer (NULL: dropped). */
  damo_node *in_mask, *out_mask;
  damo_node *in_masks[DAMO_LAYER_MAX_INPUTS]; /* build_multi: each input's mask (NULL: none) */
  int axis;                 /* concatenate: the axis, counting the batch (negative: from the end) */
  int num_heads, key_dim, value_dim; /* multi_head_attention (per-head sizes); transformer blocks: num_heads */
  int intermediate_dim;     /* transformer blocks: the feed-forward width */
  int causal;               /* multi_head_attention: use_causal_mask; conv1d: "causal" padding */
  int normalize_first;      /* transformer blocks: 1 pre-LN (GPT-2), 0 post-LN (BERT) */
  int ff_gelu;              /* transformer blocks: feed-forward activation 0 relu, 1 gelu (exact erf form), 2 gelu (tanh) */
  int fused_qkv;            /* transformer blocks: one (hidden, 3 hidden) query_key_value projection (GPT-2's c_attn) */
  int kernels_out_in;       /* transformer blocks: kernels (out, in) as PyTorch's nn.Linear keeps them (BERT) */
  float attention_rate;     /* transformer blocks: dropout of the attention probabilities (rate: the residuals') */
  int ln_center, ln_scale;  /* layer_normalization: beta and gamma are used */
  int sequence_length;      /* position_embedding, token_and_position_embedding */
  /* The last attention node build made (self-attention for transformer blocks; their
   * cross-attention in cross_attention), for damo_attention_capture_probs. */
  damo_node *attention, *cross_attention;
  int n_in;                 /* inputs per call: 1, or a merge layer's count */
  damo_layer_shape ins[DAMO_LAYER_MAX_INPUTS]; /* every input's shape; in_ndim/in_shape is the first */
  int calls;                /* times its model calls it (a shared layer: more than once) */
  int in_ndim, out_ndim;    /* shapes without the batch axis */
  int64_t in_shape[DAMO_MAX_DIMS], out_shape[DAMO_MAX_DIMS];
  int n_params;
  damo_param_slot params[DAMO_LAYER_MAX_PARAMS];
  damo_layer_quant *quant;  /* int8 slots (damo_layer_quantizable), or NULL: f32 */
  damo_csr *sparse;         /* dense: W^T in CSR while the kernel is mostly zeros (damo_model_load sets it,
                               fit drops it), which inference graphs multiply by; NULL: the dense op */
};

extern const damo_layer_type damo_layer_dense, damo_layer_activation, damo_layer_dropout, damo_layer_flatten,
    damo_layer_rescaling, damo_layer_lstm, damo_layer_gru, damo_layer_reshape, damo_layer_conv2d, damo_layer_max_pool2d,
    damo_layer_avg_pool2d, damo_layer_global_avg_pool2d, damo_layer_batch_norm, damo_layer_embedding,
    damo_layer_bidirectional, damo_layer_global_avg_pool1d, damo_layer_global_max_pool1d, damo_layer_add,
    damo_layer_subtract, damo_layer_multiply, damo_layer_average, damo_layer_concatenate, damo_layer_layer_norm,
    damo_layer_multi_head_attention, damo_layer_transformer_encoder, damo_layer_transformer_decoder,
    damo_layer_position_embedding, damo_layer_token_and_position_embedding, damo_layer_conv1d,
    damo_layer_max_pool1d, damo_layer_avg_pool1d;

/* Whether l has int8 slots (dense, conv2d, lstm, gru, bidirectional, embedding); else why
 * not, in why (a static string). */
int damo_layer_quantizable(const damo_layer *l, const char **why);
/* What slot p of a quantizable layer becomes: 0 stays f32, 1 an int8 kernel (per column),
 * 2 an int8 table (per row). */
int damo_layer_int8_slot(const damo_layer *l, int p);
/* Whether l's input can have a calibrated (static) quantisation: dense and conv2d; the
 * others quantise their products' inputs per batch. */
int damo_layer_static_input(const damo_layer *l);
/* Makes slot p of l int8 from q (the slot's shape, int8, no -128) and its scales (one per
 * column or row, as damo_layer_int8_slot says): writes scale * q into the f32 slot (which
 * must be bound) and packs a kernel. Every value is checked; on failure l is unchanged. */
damo_status damo_layer_quantize_slot(damo_layer *l, int p, const int8_t *q, const float *scale);
/* The input quantisation of a static dense/conv2d (x_scale > 0, zero point 0..255); before
 * it, or with x_scale 0, the input is quantised per batch. */
damo_status damo_layer_set_input_quant(damo_layer *l, float x_scale, int x_zero_point);
/* The scales' count of slot p (columns or rows). */
int64_t damo_layer_qslot_scales(const damo_layer *l, int p);
void damo_layer_quant_free(damo_layer_quant *quant);

/* A new layer of this type with its defaults (the constructors' common start). */
damo_layer *damo_layer_alloc(const damo_layer_type *type);
/* The type registered under a config name, or NULL. */
const damo_layer_type *damo_layer_type_find(const char *type);
/* Space-separated list of known layer types, for error messages. */
const char *damo_layer_type_names(void);
/* Helpers of the layer files: declares parameter slot l->params[l->n_params++]; the graph
 * param of slot i, named "<layer>.<slot>"; names node n "<layer>/<what>" (returns n). */
void damo_layer_declare_param(damo_layer *l, const char *name, int ndim, const int64_t *shape, damo_init init);
damo_node *damo_layer_param_node(damo_layer *l, damo_graph *g, int i);
damo_node *damo_layer_name_node(const damo_layer *l, damo_node *n, const char *what);
/* Applies an activation op to x. */
damo_node *damo_apply_activation(damo_graph *g, damo_node *x, damo_activation act);
/* Fills a parameter according to its initializer; fan_in/fan_out from its shape. */
void damo_param_init(damo_param_slot *p, damo_rng *rng);
const char *damo_init_name(damo_init i);
const char *damo_merge_mode_name(damo_merge_mode m); /* "concat", "sum", "mul", "ave" */
damo_status damo_init_parse(const char *name, damo_init *out);

#endif
