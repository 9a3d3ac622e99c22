/* graph.h - the define-then-run graph's internal structures and the op table.
 *
 * A node records an op, its inputs, its current shape and pointers into one planned arena
 * for its value, its gradient and an op-private buffer ("aux": softmax probabilities,
 * dropout masks). Every op is described once, in one damo_op_def in src/ops/<family>.c:
 * shape inference, CPU forward kernel and backward rule side by side (declared in ops/ops.h).
 * The executor reaches the kernels through the graph's backend (graph/backend.h). */
#ifndef DAMO_GRAPH_H
#define DAMO_GRAPH_H

#include "core/core.h"

#define DAMO_MAX_INPUTS 5
#define DAMO_NAME_MAX 64

typedef enum damo_op {
  DAMO_OP_INPUT = 0,
  DAMO_OP_PARAM,
  DAMO_OP_CONSTANT,
  DAMO_OP_MATMUL,
  DAMO_OP_ADD,
  DAMO_OP_SUB,
  DAMO_OP_MUL,
  DAMO_OP_DIV,
  DAMO_OP_SCALE,
  DAMO_OP_RELU,
  DAMO_OP_SIGMOID,
  DAMO_OP_TANH,
  DAMO_OP_EXP,
  DAMO_OP_LOG,
  DAMO_OP_SOFTMAX,
  DAMO_OP_LOG_SOFTMAX,
  DAMO_OP_SUM,
  DAMO_OP_MEAN,
  DAMO_OP_RESHAPE,
  DAMO_OP_TRANSPOSE,
  DAMO_OP_DROPOUT,
  DAMO_OP_SOFTMAX_CE,
  DAMO_OP_BCE_LOGITS,
  DAMO_OP_MSE,
  DAMO_OP_DENSE,
  DAMO_OP_LSTM,
  DAMO_OP_EMBEDDING,
  DAMO_OP_GRU,
  DAMO_OP_CONV2D,
  DAMO_OP_MAX_POOL2D,
  DAMO_OP_AVG_POOL2D,
  DAMO_OP_GLOBAL_AVG_POOL2D,
  DAMO_OP_BATCH_NORM,
  DAMO_OP_SEQUENCE_MASK,
  DAMO_OP_CONCAT,
  DAMO_OP_GLOBAL_POOL1D,
  DAMO_OP_LAYER_NORM,
  DAMO_OP_GELU,
  DAMO_OP_ATTENTION,
  DAMO_OP_SLICE_LAST,
  DAMO_OP_LINEAR_CE,
  DAMO_OP_QDENSE,
  DAMO_OP_QCONV2D,
  DAMO_OP_SOFT_CE,
  DAMO_OP_SPDENSE,
  DAMO_OP_SPCONV2D,
  DAMO_OP_QUANTIZE_U8,
  DAMO_OP_COUNT
} damo_op;

/* What an op's backward reads besides the output gradient; the planner keeps those alive. */
enum {
  DAMO_OPF_BWD_INPUTS = 1, /* backward reads the input values */
  DAMO_OPF_BWD_OUTPUT = 2, /* backward reads the node's own output value */
  DAMO_OPF_EXAMPLE_NORMS = 4, /* in a norm pass its weights get per-example norms (DP-SGD) */
  DAMO_OPF_LOSS = 8           /* a loss: example weights scale its inputs' gradients */
};

struct damo_node {
  int id;
  damo_op op;
  int n_in;
  damo_node *in[DAMO_MAX_INPUTS];
  damo_dtype dtype;
  int ndim;
  int64_t shape[DAMO_MAX_DIMS]; /* current shape */
  int batched;                  /* axis 0 follows the graph's batch size */
  int iparam[DAMO_MAX_DIMS + 2];  /* op parameters: axes, flags, target shapes */
  float fparam[2];
  char name[DAMO_NAME_MAX];

  void *value; /* current value (arena, external for inputs/params, owned for constants) */
  float *grad; /* gradient of the loss w.r.t. value (arena, or external for params) */
  void *aux;   /* op-private buffer, aux_bytes at the built batch size */
  size_t aux_bytes;
  size_t value_capacity, aux_capacity; /* bytes reserved at the built batch size */

  damo_tensor *param_value, *param_grad; /* PARAM: caller-owned storage */
  damo_tensor *constant;                 /* CONSTANT: owned copy */
  const void *op_data; /* constant data an op reads, owned by its builder's caller (int8 ops:
                        * the layer's packed weights), or NULL */
  float *capture; /* caller buffer an op's forward also fills, or NULL (attention probabilities) */
  float out_range[2]; /* [lo, hi] (0 inside) of the f32 values behind a dynamic int8 hand-over,
                         left by the forward for the readers: the node's own output where it
                         records_range, a quantize_u8's input */
  uint64_t seed;  /* the random seed of the last training forward (dropout), reused when recomputed */
  int segment;    /* recomputed segment (damo_graph_recompute_begin), 0: none */

  unsigned char requires_grad; /* a param is upstream */
  unsigned char needed;        /* the outputs or loss depend on it */
  unsigned char in_backward;   /* its gradient is computed */
  unsigned char keep_grad;     /* its gradient must survive backward */
  unsigned char grad_ready;    /* the gradient was zeroed in this backward pass */
  unsigned char recomputed;    /* inside a segment and read only there: dropped after forward,
                                  computed again in backward (planned at compile) */
  unsigned char inference_only; /* no gradient flows through it (an int8 LSTM or GRU; ops with no
                                   backward kernel at all are inference-only as a whole) */
  unsigned char records_range;  /* its forward also leaves its output's range in out_range, for
                                   dynamic int8 readers (a qdense, a layer norm: damo_int8_chain) */
};

/* One op's kernels on one backend. forward computes n->value from the inputs and fails only
 * on bad data (labels out of range); backward adds d(loss)/d(input) into each input that is
 * in_backward (on the CPU via damo_node_grad_acc). */
typedef struct damo_kernel {
  damo_status (*forward)(damo_graph *g, damo_node *n);
  void (*backward)(damo_graph *g, damo_node *n);
} damo_kernel;

typedef struct damo_op_def {
  const char *name;
  int arity;
  /* Sets dtype, ndim, shape (from inputs and params) and aux_bytes; checks shapes. */
  damo_status (*infer)(damo_node *n);
  /* The CPU backend's kernels for this op (graph/backend.c copies them into its table);
   * other backends bring their own. */
  damo_status (*cpu_forward)(damo_graph *g, damo_node *n);
  void (*cpu_backward)(damo_graph *g, damo_node *n);
  unsigned flags;
} damo_op_def;

struct damo_graph {
  damo_node **nodes;
  int n_nodes, cap_nodes;
  damo_status status; /* first builder error (sticky) */
  char status_msg[512];
  damo_rng rng;       /* dropout and other random ops */
  int training;       /* mode of the last forward */
  int compiled;
  int frozen_params;  /* damo_graph_freeze_params: backward makes no param gradient */
  int64_t built_batch, batch;
  damo_node *loss;
  unsigned char *arena;
  size_t arena_bytes, unplanned_bytes;
  int *order;         /* ids of needed nodes in execution order */
  int n_order;
  const damo_backend *backend; /* runs the kernels and owns the arena (CPU unless set) */
  /* Told when a param's gradient is final in a backward pass (data-parallel overlap). */
  damo_grad_ready_fn grad_ready;
  void *grad_ready_ctx;
  /* For each position k of order: the params whose first consumer runs there, so backward
   * knows them final right after k's backward (CSR: release[release_at[k] .. release_at[k+1])). */
  int *release_at, *release;
  damo_dist *sync_dist; /* synchronised batch norm's process group (NULL: per-rank statistics) */
  /* Activation recomputation: the segment nodes are being built in (0: none), the last id
   * given, and per order position k the first position of the segment whose forward is run
   * again just before k's backward (-1: none). recomputing is set while that runs: random ops
   * reuse their node's seed and running statistics are left alone. */
  int open_segment, n_segments;
  int *recompute_from;
  int recomputing;
  /* DP-SGD (example_grads.c): keep_forward plans every value backward reads to the end of
   * backward, so backward can run twice on one forward; in a norm pass ops give their weights
   * per-example gradient norms (example_acc: per param node and example, the sum of the norms
   * of its contributions) instead of gradients; example_weights scale each example's share of
   * the loss gradient. */
  int keep_forward, norm_pass;
  damo_status norm_status;
  float *example_acc;
  const float *example_weights;
  void *scratch;
  size_t scratch_bytes;
};

/* A random op's seed for this forward: drawn from the graph's generator, or the one drawn by
 * the first forward when a recomputed segment runs again (same masks, same gradients). */
static inline uint64_t damo_node_forward_seed(damo_graph *g, damo_node *n) {
  if (!g->recomputing) n->seed = damo_rng_draw_seed(&g->rng);
  return n->seed;
}

/* The table of every op, indexed by damo_op. The graph owns its type and reads it; the ops
 * layer above fills it (src/ops/registry.c), so nothing here includes an ops header. */
extern const damo_op_def *const damo_op_table[DAMO_OP_COUNT];

/* Creates a node of op with inputs and runs shape inference; NULL (graph error set) on
 * failure or if any input is NULL. iparam/fparam are copied when not NULL. */
damo_node *damo_graph_add_node(damo_graph *g, damo_op op, int n_in, damo_node *const *in, const int *iparam,
                               int n_iparam, const float *fparam, int n_fparam);
/* The same with op_data set before shape inference. */
damo_node *damo_graph_add_node_data(damo_graph *g, damo_op op, int n_in, damo_node *const *in, const int *iparam,
                                    int n_iparam, const float *fparam, int n_fparam, const void *op_data);
/* Moves n, built after `after`, to run right after it (before compile: a rewrite that adds a
 * node for readers built earlier than itself; creation order is the execution order). The
 * nodes between move one place later and every id stays its index. */
void damo_graph_move_after(damo_graph *g, damo_node *n, const damo_node *after);
/* Records a shape error for a builder with both shapes spelled out; returns DAMO_ERR_SHAPE. */
damo_status damo_shape_error(const damo_node *n, const char *what, const damo_node *a, const damo_node *b);

/* Runs one node's forward through the graph's backend (re-running a forward node by node to
 * find the first non-finite value). */
damo_status damo_graph_forward_node(damo_graph *g, damo_node *n);

/* The gradient buffer of an input, zero-filled on first use in this backward pass, so every
 * backward rule accumulates with +=. */
float *damo_node_grad_acc(damo_node *n);
/* For a writer that overwrites the whole gradient when it is first (a GEMM with beta 0):
 * returns the buffer and sets *beta to 0 the first time in a pass (no zero-fill), else 1. */
float *damo_node_grad_out(damo_node *n, float *beta);

/* DP-SGD's norm pass, for ops with DAMO_OPF_EXAMPLE_NORMS: a weight input wants a gradient
 * in a normal backward and per-example norms in a norm pass. */
static inline int damo_wants_weight_grad(const damo_graph *g, const damo_node *w) {
  return w && w->in_backward && !g->norm_pass;
}
static inline int damo_wants_weight_norms(const damo_graph *g, const damo_node *w) {
  return w && w->in_backward && g->norm_pass;
}
/* Adds the squared norm of one example's gradient contribution to a weight (a param, or a
 * reshape of one); threads may call it for different examples at once. */
void damo_example_norm_add(damo_graph *g, const damo_node *weight, int64_t example, double sq);
/* A scratch buffer for a norm pass (kept by the graph); NULL (the pass fails) when out of memory. */
void *damo_graph_scratch(damo_graph *g, size_t bytes);
/* After a loss node's backward: its inputs' gradient rows times their example's weight. */
void damo_graph_weight_loss_grads(damo_graph *g, damo_node *loss);
/* The sum of squares of n floats. */
double damo_sum_squares(const float *x, int64_t n);

static inline int64_t damo_node_count(const damo_node *n) {
  int64_t c = 1;
  for (int i = 0; i < n->ndim; i++) c *= n->shape[i];
  return c;
}
static inline float *damo_f32(const damo_node *n) { return (float *)n->value; }

#endif
