/* model.h - the Sequential model's internals: layers, the flat parameter and gradient
 * blocks, the optimizer, and the graphs compiled for training and for inference (kept and
 * reused while the batch size allows). */
#ifndef DAMO_MODEL_H
#define DAMO_MODEL_H

#include "nn/layers.h"
#include "train/param_store.h"

#include <cjson/cJSON.h>

#define DAMO_MODEL_MAX_INPUTS 8

/* One symbolic tensor of a model: a model input, or the output of one call of a layer. The
 * nodes are kept in an order where each comes after the nodes it takes. A Sequential model is
 * the chain input -> layer 1 -> layer 2 ...; a functional model any such graph. */
typedef struct damo_model_node {
  damo_layer *layer;         /* NULL: a model input */
  char name[DAMO_NAME_MAX];  /* an input's name, a layer's (its first call), "<layer>_<k>" (its k-th call) */
  int n_in;
  int in[DAMO_LAYER_MAX_INPUTS]; /* the nodes this call takes */
  damo_dtype dtype;          /* f32, or i32 for an input that embeddings read */
  damo_layer_shape shape;    /* without the batch axis */
} damo_model_node;

/* One output of a graph: its targets, what its loss reads, what predict returns, its loss. */
typedef struct damo_model_head {
  damo_node *y;      /* the targets (only with a loss) */
  damo_node *logits; /* what the loss reads (pre-activation when fused) */
  damo_node *output; /* probabilities for classification, raw values for MSE */
  damo_node *loss;   /* this output's mean loss (NULL for inference graphs) */
  void *y_stage;     /* (batch, targets...) i32 labels or f32 targets */
} damo_model_head;

/* A graph built from the model for one purpose and batch size. */
typedef struct damo_model_graph {
  damo_graph *g;
  int64_t batch;
  damo_node *xs[DAMO_MODEL_MAX_INPUTS]; /* the model's inputs, in order */
  float *x_stages[DAMO_MODEL_MAX_INPUTS];
  damo_model_head heads[DAMO_MODEL_MAX_OUTPUTS]; /* one per output, in order */
  int n_heads;
  damo_node *x, *y;    /* the first input (xs[0]) and heads[0]'s targets */
  damo_node *logits;   /* heads[0]'s */
  damo_node *output;   /* heads[0]'s */
  damo_node *loss;     /* the loss trained: heads[0]'s, or the weighted sum of several; NULL for inference */
  float *x_stage;      /* x_stages[0]: (batch, input...) staged rows (i32 ids as their bits) */
  void *y_stage;       /* heads[0]'s */
  damo_node *soft;     /* a distillation graph's soft targets (batch, classes), else NULL */
  float *soft_stage;
} damo_model_graph;

/* What damo_model_graph_get builds: the inference graph, the training graph (its loss), or
 * the training graph of a distillation (the loss mixes the teacher's soft targets in). */
enum { DAMO_GRAPH_INFER = 0, DAMO_GRAPH_TRAIN = 1, DAMO_GRAPH_DISTILL = 2 };

struct damo_model {
  int in_ndim; /* the first input's shape */
  int64_t in_shape[DAMO_MAX_DIMS];
  damo_layer **layers; /* every layer once, in the order of its first call (owned) */
  int n_layers, cap_layers;
  int functional;      /* made by damo_functional_new: inputs and output named by the user */
  damo_model_node *nodes;
  int n_nodes, cap_nodes;
  int inputs[DAMO_MODEL_MAX_INPUTS], n_inputs; /* the input nodes, in the order data is given */
  int output;          /* the (first) output node; -1 (Sequential): the last */
  int outputs[DAMO_MODEL_MAX_OUTPUTS], n_outputs; /* set_outputs: every output node (outputs[0] == output) */
  damo_status builder_status; /* a functional builder's first failure, returned again by later calls */
  char builder_error[256];    /* and its message */

  int recompute; /* damo_model_set_recompute: transformer blocks run again in backward */
  int keep_forward; /* damo_model_set_keep_forward: training graphs serve two backward passes (DP-SGD) */
  int built;
  /* The trained weights (named "layer/slot", in layer order) and the frozen values such as
   * running statistics, each in the one parameter store every kind uses; the blocks below
   * are theirs (params.n_params_padded and state.n_params_padded floats). */
  param_store params, state;
  int64_t n_params;                /* trainable parameters (a count, without the padding) */
  float *param_block, *grad_block;
  int64_t n_state;                 /* frozen values (a count) */
  float *state_block;

  int has_compile_options;         /* from compile() or a config file */
  int compiled;
  damo_compile_options copt;
  damo_optimizer *opt;

  damo_model_graph train, infer; /* cached graphs */
  /* During a fit with distillation: its graph, temperature, mixing weight, the soft targets'
   * width, and either the teacher's soft targets for every row of the training data (n rows x
   * classes, at the temperature) or, with on-the-fly augmentation, the teacher that scores
   * each augmented batch as it is staged. */
  damo_model_graph distill_graph;
  float distill_temperature, distill_alpha;
  int64_t distill_classes;
  const damo_tensor *distill_soft;
  damo_model *distill_teacher;
  uint64_t seed;
  int64_t epochs_done;
  cJSON *fit_defaults; /* the config's optional "fit" object (owned) */
  cJSON *quantization; /* config.json's "quantization" object (owned): which layers are int8
                        * (compress/quantize.c writes it), or NULL for an f32 model */
  char *config_source; /* the config's file name, for messages (owned), or NULL */
  int has_augment;     /* the "fit" object had an "augment" object, parsed into: */
  damo_augment_options augment;
  float augment_mean[4], augment_std[4];
  char **class_names;  /* n_class_names names (owned), or NULL */
  int n_class_names;
};

/* The dtype of the model's first input: i32 token ids when embeddings read it. */
damo_dtype damo_model_input_dtype(const damo_model *m);
/* The node the model outputs, and the layer whose call made it (NULL: the output is an input). */
const damo_model_node *damo_model_output_node(const damo_model *m);
damo_layer *damo_model_output_layer(const damo_model *m);
/* Output k's node index (k < damo_model_num_outputs), its node and its values per example. */
int damo_model_output_index(const damo_model *m, int k);
const damo_model_node *damo_model_output_node_at(const damo_model *m, int k);
int64_t damo_model_output_size_at(const damo_model *m, int k);
/* Output k's loss, weight (0 taken as 1) and metrics from the compile options. */
damo_output_compile damo_model_output_compile(const damo_model *m, int k);
/* Checks a compile's per-output settings against the model (what: the message's prefix). */
damo_status damo_model_check_output_compile(const damo_model *m, const damo_compile_options *o, const char *what);
/* Appends a call of l on nodes in[0..n_in) to the model's list (the layer is the model's from
 * here, also on failure); seq_index >= 0 labels errors as Sequential layer seq_index. */
damo_status damo_model_append_call(damo_model *m, damo_layer *l, int n_in, const int *in, int seq_index, int *out);
/* Adds a model input node named name (NULL: "input_<k>"). */
damo_status damo_model_add_input(damo_model *m, const char *name, int ndim, const int64_t *shape, int *out);
/* The model's nodes as graph nodes: the inputs into xs (in order), the output's value and
 * the node before its activation into out and pre. */
damo_status damo_model_build_nodes(damo_model *m, damo_graph *g, int64_t batch, damo_node **xs, damo_node **out,
                                   damo_node **pre);
/* (out and pre: one node per output, in order.) The same, also giving model node tap's value
 * in *tapped (what an explainer reads inside the model); with rewrite (single-input layers),
 * the layers after tap read rewrite(ctx, g, value) instead (an explainer scales embeddings). */
typedef damo_node *(*damo_tap_rewrite)(void *ctx, damo_graph *g, damo_node *value);
/* The index of the model node (an input, or a layer's call) named `name`; -1 when none. */
int damo_model_node_index(const damo_model *m, const char *name);
damo_status damo_model_build_nodes_at(damo_model *m, damo_graph *g, int64_t batch, damo_node **xs, damo_node **out,
                                      damo_node **pre, int tap, damo_node **tapped, damo_tap_rewrite rewrite,
                                      void *ctx);
/* Output features per example (product of the last layer's output shape). */
int64_t damo_model_output_size(const damo_model *m);
/* Builds (or reuses) the graph of that purpose (DAMO_GRAPH_*: with_loss 0 or 1 as before)
 * for batch rows. */
damo_status damo_model_graph_get(damo_model *m, int with_loss, int64_t batch, damo_model_graph **out);
void damo_model_graph_release(damo_model_graph *mg);
/* Frees every layer's sparse kernel (layers.h) and the graphs built over them: before
 * anything changes the kernels (fit). */
void damo_model_drop_sparse(damo_model *m);
/* Copies rows idx[0..n) of input k's data x (f32, u8 or i32, as f32; i32 ids as they are for
 * an input that embeddings read) into x_dst. Thread-safe: reads only. */
void damo_model_gather_input(const damo_model *m, int k, const damo_tensor *x, const int64_t *idx, int64_t n,
                             float *x_dst);
/* The same for the first input, and rows of y (if y and y_dst) into y_dst as the loss wants
 * them (i32 labels or f32 targets). */
void damo_model_gather_rows(const damo_model *m, const damo_tensor *x, const damo_tensor *y, const int64_t *idx,
                            int64_t n, float *x_dst, void *y_dst);
/* Copies rows idx[0..n) of every input's data xs[k] (and every output's targets ys[k], if ys)
 * into the graph's stages. */
damo_status damo_model_stage_batch(damo_model *m, damo_model_graph *mg, const damo_tensor *const *xs,
                                   const damo_tensor *const *ys, const int64_t *idx, int64_t n);
/* Checks the data of every input, and every output's targets ys[k] (if ys), against the model
 * (shapes, dtypes, rows, label range, NaN). */
damo_status damo_model_check_data(const damo_model *m, const damo_tensor *const *xs, const damo_tensor *const *ys,
                                  const char *what);
/* Correct predictions of output k in the current batch of mg (argmax for sparse CE,
 * threshold for BCE). */
int64_t damo_model_batch_correct(const damo_model *m, const damo_model_graph *mg, int k, int64_t n, int64_t *counted);
/* Mean loss and accuracy of rows idx[0..n) of x, y through a graph with a loss (evaluate.c):
 * the total (accuracy: output 0's), and each output's loss and accuracy (-1: none) where
 * losses/accs are not NULL. For a binary output k, probs[k] (n x its values) and truth[k]
 * (n, 0/1) may collect its predictions (probs, truth or an entry NULL: not collected). */
damo_status damo_model_evaluate_rows(damo_model *m, damo_model_graph *mg, const damo_tensor *const *x,
                                     const damo_tensor *const *y, const int64_t *idx, int64_t n, double *loss,
                                     double *accuracy, double *losses, double *accs, float *const *probs,
                                     int32_t *const *truth);
/* n_x as the model has inputs, xs not NULL, and n_y (unless < 0) as it has outputs. */
damo_status damo_model_check_counts(const damo_model *m, int n_x, const damo_tensor *const *xs, int n_y,
                                    const char *what);
/* 0..n-1 shifted by first (malloc'ed; NULL with the error set). */
int64_t *damo_model_iota(int64_t n, int64_t first);
/* The name of the first node (param or op) with a non-finite value; forward is re-run. */
const char *damo_model_find_nonfinite(damo_model *m, damo_model_graph *mg);

/* Models of layers over another parameter store (train/param_store.c): GPT-2 and BERT keep
 * their weights under HuggingFace's names and build their graphs from layers.
 *
 * A layer weight's file name: slot (keras_hub's name, "self_attention/query/kernel")
 * to hf; an hf starting with '.' follows the layer's name ("encoder.layer.3" +
 * ".attention.self.query.weight"), any other is the whole name ("wte.weight"). */
typedef struct hf_slot_name {
  const char *slot, *hf;
} hf_slot_name;

/* Lays out s from fm's layers: layer by layer, each layer's slots in the order of map (so a
 * map listing a layer's names in HuggingFace's order gives its file order), named by map;
 * then n_extra tensors from extra (weights that are no layer's, such as BERT's heads). */
damo_status param_store_alloc_layers(param_store *s, const damo_model *fm, const hf_slot_name *map, int n_map,
                                     int n_extra, param_spec_fn extra, const void *extra_config, const char *what);

/* Points every weight slot of fm's layers at the tensor of s that map names (value and
 * gradient views over the store's blocks, freed with fm): the model of layers then trains
 * the store's weights in place. An unmapped slot or a shape that differs is an error (a
 * table out of step with the layers). */
damo_status param_store_bind_layers(const param_store *s, damo_model *fm, const hf_slot_name *map, int n_map,
                                    const char *what);

/* The config readers' early return (config.c, config_functional.c, config_seq.c). */
#define TRY(expr)                                                                                                      \
  do {                                                                                                                 \
    damo_status st_ = (expr);                                                                                          \
    if (st_ != DAMO_OK) return st_;                                                                                    \
  } while (0)
#define REQ DAMO_CFG_REQUIRED

/* config.json <-> model */
cJSON *damo_model_to_json(const damo_model *m);
damo_status damo_model_from_json(const cJSON *root, const char *source, damo_model **out);
/* One layer's settings as config JSON, and back (config.c; the object's keys are checked). */
cJSON *damo_layer_to_json(const damo_layer *l);
damo_status damo_config_parse_layer(damo_config_obj *o, damo_layer **out);
/* Every key of o must be in the space-separated list `known` (then o is closed). */
damo_status damo_config_check_keys(damo_config_obj *o, const char *known);
/* The sequence and transformer layers' part of those two (config_seq.c). */
int damo_is_seq_layer(const damo_layer_type *t);
void damo_seq_layer_to_json(const damo_layer *l, cJSON *o);
damo_status damo_config_parse_seq_layer(damo_config_obj *o, const damo_layer_type *lt, damo_layer **out);
/* "metrics" as a JSON list, and names[0..n) into DAMO_METRIC_* bits (where: "'metrics'" or the
 * like, for messages about o). */
cJSON *damo_metrics_to_json(int metrics);
damo_status damo_config_metrics(damo_config_obj *o, const char *where, const char *const *names, int n, int *bits);
/* A model of several outputs: "loss", "loss_weights" and "metrics" per output (config_functional.c). */
damo_status damo_config_parse_output_compile(damo_config_obj *root, damo_model *m);
void damo_output_compile_to_json(const damo_model *m, cJSON *root);
/* The functional form's "inputs", "layers" and "outputs" (config_functional.c). */
void damo_model_functional_to_json(const damo_model *m, cJSON *root);
damo_status damo_model_functional_parse(damo_config_obj *root, damo_model *m, const char *source);

/* Training graphs planned with damo_graph_keep_forward from now on (DP-SGD's two backward
 * passes); the cached training graph is dropped when this changes it. */
void damo_model_set_keep_forward(damo_model *m, int on);

#endif
