/* model.h - the Sequential model's internals: layers, the flat parameter and gradient
 * blocks, the optimizer, and the graphs compiled for training and for inference (kept and
 * reused while the batch size allows). */
#ifndef DAMO_MODEL_H
#define DAMO_MODEL_H

#include "nn/layers.h"
#include "train/param_store.h"

#include <cjson/cJSON.h>

/* A graph built from the model for one purpose and batch size. */
typedef struct damo_model_graph {
  damo_graph *g;
  int64_t batch;
  damo_node *x, *y;    /* inputs (y only with a loss) */
  damo_node *logits;   /* what the loss reads (pre-activation when fused) */
  damo_node *output;   /* probabilities for classification, raw values for MSE */
  damo_node *loss;     /* NULL for inference graphs */
  float *x_stage;      /* (batch, input...) staged rows */
  void *y_stage;       /* (batch, targets...) i32 labels or f32 targets */
} damo_model_graph;

struct damo_model {
  int in_ndim;
  int64_t in_shape[DAMO_MAX_DIMS];
  damo_layer **layers;
  int n_layers, cap_layers;

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
  uint64_t seed;
  int64_t epochs_done;
  cJSON *fit_defaults; /* the config's optional "fit" object (owned) */
  char *config_source; /* the config's file name, for messages (owned), or NULL */
  int has_augment;     /* the "fit" object had an "augment" object, parsed into: */
  damo_augment_options augment;
  float augment_mean[4], augment_std[4];
  char **class_names;  /* n_class_names names (owned), or NULL */
  int n_class_names;
};

/* The dtype of the model's input: i32 token ids when the first layer is an embedding. */
damo_dtype damo_model_input_dtype(const damo_model *m);
/* Output features per example (product of the last layer's output shape). */
int64_t damo_model_output_size(const damo_model *m);
/* Builds (or reuses) the training (with_loss) or inference graph for batch rows. */
damo_status damo_model_graph_get(damo_model *m, int with_loss, int64_t batch, damo_model_graph **out);
void damo_model_graph_release(damo_model_graph *mg);
/* Copies rows idx[0..n) of x (f32, u8 or i32, as f32; i32 ids as they are for a model
 * starting with an embedding) into x_dst and of y (if y and y_dst)
 * into y_dst as the loss wants it (i32 labels or f32 targets). Thread-safe: reads only. */
void damo_model_gather_rows(const damo_model *m, const damo_tensor *x, const damo_tensor *y, const int64_t *idx,
                            int64_t n, float *x_dst, void *y_dst);
/* Copies rows idx[0..n) of x (f32 or u8) and y into the graph's stages and binds them. */
damo_status damo_model_stage_batch(damo_model *m, damo_model_graph *mg, const damo_tensor *x, const damo_tensor *y,
                                   const int64_t *idx, int64_t n);
/* Checks x and y against the model's input and loss (shapes, dtypes, label range, NaN). */
damo_status damo_model_check_data(const damo_model *m, const damo_tensor *x, const damo_tensor *y, const char *what);
/* Correct predictions in the current batch of mg (argmax for sparse CE, threshold for BCE). */
int64_t damo_model_batch_correct(const damo_model *m, const damo_model_graph *mg, int64_t n, int64_t *counted);
/* The name of the first node (param or op) with a non-finite value; forward is re-run. */
const char *damo_model_find_nonfinite(damo_model *m, damo_model_graph *mg);

/* config.json <-> model */
cJSON *damo_model_to_json(const damo_model *m);
damo_status damo_model_from_json(const cJSON *root, const char *source, damo_model **out);

#endif
