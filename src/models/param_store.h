/* param_store.h - the parameters of a named-tensor model (GPT-2, BERT): every tensor in one
 * flat block and its gradient at the same offset of a second block, each tensor 64-byte
 * aligned, in the order and under the names of the model's HuggingFace checkpoints. One flat
 * block is what the optimizer steps and what checkpoints copy; the per-tensor views are what
 * graphs bind and files name. Also the reading and writing of such a model's directory. */
#ifndef DAMO_MODELS_PARAM_STORE_H
#define DAMO_MODELS_PARAM_STORE_H

#include "core/core.h"

#include <cjson/cJSON.h>

typedef struct param_store {
  int n_tensors;
  char **names;          /* the model's names (no task prefix such as "transformer." or "bert.") */
  damo_tensor **values;  /* views into param_block */
  damo_tensor **grads;   /* views into grad_block, same layout */
  float *param_block, *grad_block;
  int64_t n_params;        /* parameter count */
  int64_t n_params_padded; /* floats in each block */
} param_store;

/* Name and shape (ndim 1 or 2) of tensor i of a model with this config. */
typedef void (*param_spec_fn)(const void *config, int i, char *name, size_t cap, int *ndim, int64_t *shape);

/* Lays out n zero-filled tensors; what names the model in messages. */
damo_status param_store_alloc(param_store *s, int n, param_spec_fn spec, const void *config, const char *what);
void param_store_free(param_store *s);
/* Index of a tensor by name, -1 if none. */
int param_store_index(const param_store *s, const char *name);
/* Copies a file's tensor (named `stored` in file `path`) into tensor i: f32, the right
 * shape (else an error naming both shapes and config, a description of the config), finite. */
damo_status param_store_take(const param_store *s, int i, const damo_tensor *t, const char *path, const char *stored,
                             const char *config);
/* Writes dir/model.safetensors (tensor i under file_name(i), metadata format "pt") and
 * dir/config.json (config_json, consumed) as one directory save (damo_dir_save: the old
 * directory or the new one, never a mix); creates dir if needed; refuses non-finite weights. */
damo_status param_store_save_dir(const param_store *s, const char *dir, void (*file_name)(const param_store *s, int i,
                                                                                          char *name, size_t cap),
                                 cJSON *config_json);
/* The weight-decay mask of a transformer's AdamW: 1 for every element of a 2-D tensor
 * (embeddings and matrices), 0 for biases, LayerNorm and the padding between tensors, as
 * nanoGPT (decay iff dim >= 2) and HuggingFace's Trainer do. mask holds n_params_padded. */
void param_store_decay_mask(const param_store *s, uint8_t *mask);
/* An optimizer over the whole padded block with that decay mask. */
damo_status param_store_optimizer(const param_store *s, const damo_optimizer_config *c, damo_optimizer **out);
/* Adds key: value to a cJSON object as the float's shortest decimal that reads back the same. */
void param_store_json_float(cJSON *root, const char *key, float value);

#endif
