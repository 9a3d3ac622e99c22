/* gpt2.h - GPT-2's internal structures, shared by gpt2.c (parameters, graphs, generation)
 * and gpt2_io.c (HuggingFace config.json and model.safetensors). */
#ifndef DAMO_MODELS_GPT2_H
#define DAMO_MODELS_GPT2_H

#include "graph/backend.h"
#include "models/store_int8.h"

#define GPT2_TENSORS_PER_LAYER 12

struct damo_gpt2 {
  damo_gpt2_config config;
  int recompute; /* damo_gpt2_set_recompute: graphs made after it recompute each block */
  int keep_forward; /* training graphs made after it serve two backward passes (DP-SGD) */
  damo_dtype inference_dtype; /* damo_gpt2_set_inference_precision: what KV caches made after it read */
  param_store p; /* 2 + 12 n_layer + 2 tensors in HuggingFace order, "wte.weight", "h.0.ln_1.weight", ...
                    (no "transformer." prefix) */
  /* Block-quantised weights (gpt2_blocks.c): the format, and per tensor its blocks and scales
   * (NULL for a tensor kept f32; the arrays NULL for an f32 model). p holds their values. */
  damo_block_format blocks;
  uint8_t **q;
  float **q_scales;
  int blocks_pending; /* the f32 values of the quantised matrices not written yet (after a load) */
  /* int8, dynamic or static (gpt2_int8.c): q8.q NULL for an f32 or block model. */
  store_int8 q8;
};

struct damo_gpt2_graph {
  damo_graph *graph;
  damo_model *layers; /* the model of layers the graph is built from (weights: views of the store) */
  damo_node *ids, *targets, *logits, *loss;
  int64_t batch, seq_len;
  /* On a device backend: the ids and targets copied there before each run (else NULL). */
  const damo_backend *backend;
  int32_t *device_ids, *device_targets;
};

/* DAMO_OK when m's weights are in host memory; else a DAMO_ERR_STATE naming what cannot run
 * on the device yet and how to bring them back. */
damo_status gpt2_on_host(const damo_gpt2 *m, const char *what);

/* Checks a config's values; where names the caller or file in the message. */
damo_status gpt2_check_config(const damo_gpt2_config *c, const char *where);
/* A model with every tensor laid out and zero-filled. */
damo_status gpt2_alloc(const damo_gpt2_config *cfg, damo_gpt2 **out);

/* Checks a generation request: model, prompt ids in [0, vocab), n_prompt + n_new within
 * n_positions, out given. Shared by greedy and sampled generation. */
damo_status damo_gpt2_check_prompt(const damo_gpt2 *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                                   const int32_t *out);

/* gpt2_blocks.c: the block tables of format f (nothing for DAMO_BLOCKS_NONE), before the
 * tensors are read; tensor i from a file's blocks and scales (checked; its f32 values set);
 * the directory's tensors and config.json's "quantization" object; freeing the tables. */
damo_status gpt2_blocks_begin(damo_gpt2 *m, damo_block_format f);
damo_status gpt2_take_blocks(damo_gpt2 *m, int i, const damo_tensor *t, const damo_tensor *scale, const char *path,
                             const char *stored);
damo_status gpt2_blocks_dict(const damo_gpt2 *m, const char *dir, damo_tensor_dict *d);
void gpt2_blocks_json(const damo_gpt2 *m, cJSON *config);
void gpt2_blocks_free(damo_gpt2 *m);
/* gpt2_int8.c: which tensors int8 covers and how; the per-tensor arrays (of config.json's
 * kind); tensor i from a file's I8 tensor and its scales (checked; a static model's input
 * quantisation from d too); param_store_save_dir_with's writer. */
int8_form gpt2_int8_form(const damo_gpt2 *m, int i);
damo_status gpt2_int8_begin(damo_gpt2 *m, const int8_config *c);
void gpt2_int8_free(damo_gpt2 *m);
damo_status gpt2_int8_take(damo_gpt2 *m, int i, const damo_tensor_dict *d, int k, const damo_tensor *scale,
                           const char *path);
/* Binds a batch of token ids (and targets, for a training graph) to gg's graph. */
damo_status gpt2_bind_tokens(damo_gpt2_graph *gg, const int32_t *ids, const int32_t *targets);
damo_status gpt2_int8_writer(const void *ctx, int i, const char *name, damo_tensor_dict *d, int *written);
void gpt2_int8_materialize(damo_gpt2 *m); /* through gpt2_blocks_materialize */
/* Writes the f32 values of the quantised matrices if a load left them pending (before
 * anything reads the f32 weights; cannot fail). */
void gpt2_blocks_materialize(const damo_gpt2 *m);

#endif
