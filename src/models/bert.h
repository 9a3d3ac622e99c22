/* bert.h - BERT's internal structures, shared by bert.c (parameters, graphs) and bert_io.c
 * (HuggingFace config.json and model.safetensors). */
#ifndef DAMO_MODELS_BERT_H
#define DAMO_MODELS_BERT_H

#include "graph/graph.h"
#include "kernels/kernels.h" /* damo_qweight: the int8 weights */
#include "models/store_int8.h"

/* After the layers: pooler (2), classifier (2), masked-LM head (5): the "heads". */
#define BERT_HEAD_TENSORS 9

struct damo_bert {
  damo_bert_config config;
  int recompute;          /* damo_bert_set_recompute: graphs made after it recompute each layer */
  int keep_forward;       /* training graphs made after it serve two backward passes (DP-SGD) */
  param_store p;          /* embeddings, layers, heads, in HuggingFace order, without "bert." */
  int first_head;         /* index of pooler.dense.weight: tensors from here on may be absent from a file */
  unsigned char *loaded;  /* per tensor: 1 read from a file, 0 initialised here */
  char **label_names;     /* num_labels names (config.json's id2label), or NULL: LABEL_i */
  /* int8, dynamic or static (bert_int8.c over models/store_int8.c): q8.q NULL for an f32 model. */
  store_int8 q8;
};

struct damo_bert_graph {
  damo_bert *model;
  damo_graph *graph;
  damo_model *layers; /* the model of layers the encoder is built from (weights: views of the store) */
  damo_node *ids, *token_types, *mask, *labels, *logits, *loss;
  damo_node *word_embeddings; /* the param node, shared by the input and the masked-LM decoder */
  damo_node *mlm_rows; /* masked-LM: the rows of (B T, H) each slot predicts */
  damo_node *hidden, *pooled; /* an encoder graph's outputs: (B, T H) and (B, H) */
  float *mask_f32;     /* the attention mask as the attention op takes it, (built batch, T) */
  int32_t *rows_i32;   /* masked-LM: mlm_rows' values, (built batch, predictions) */
  int64_t batch, seq_len, predictions; /* predictions: slots per sequence (0: classifier) */
  int int8_products; /* dense nodes rewritten into int8 (an int8 model's classifier) */
};

damo_status bert_check_config(const damo_bert_config *c, const char *where);
/* Checks and binds a batch's inputs (rows <= the built batch) to bg's graph, for a forward. */
damo_status bert_bind_inputs(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                             const int32_t *mask);

/* bert_int8.c: which tensors int8 covers (1 a product, 2 a table); the per-tensor arrays
 * (begin, of config.json's kind) and their release; tensor i from int8 values (out, in) and
 * scales (checked, packed, and the f32 values set to scale * q; where names the caller or
 * file); the rewrite of a graph's dense nodes over quantised kernels into qdense (*rewritten:
 * how many; outputs in keep stay f32); config.json's "quantization" object; the writer that
 * saves int8 tensors with their scales (and a static product's input quantisation). */
int bert_int8_tensor(const damo_bert *m, int i);
damo_status bert_int8_begin(damo_bert *m, const int8_config *c);
void bert_int8_free(damo_bert *m);
damo_status bert_int8_take(damo_bert *m, int i, const int8_t *q, const float *scale, const char *where);
damo_status bert_int8_rewrite(const damo_bert *m, damo_graph *g, int n_keep, damo_node *const *keep, int *rewritten);
void bert_int8_json(const damo_bert *m, cJSON *config);
damo_status bert_int8_writer(const void *ctx, int i, const char *name, damo_tensor_dict *d, int *written);
/* A model with every tensor laid out and zero-filled. */
damo_status bert_alloc(const damo_bert_config *cfg, damo_bert **out);
/* Initialises tensor i as HuggingFace's _init_weights does (N(0, 0.02) weights and
 * embeddings with the [PAD] row 0 zeroed, LayerNorm 1 / 0, biases 0). */
void bert_init_tensor(damo_bert *m, int i, damo_rng *rng);

#endif
