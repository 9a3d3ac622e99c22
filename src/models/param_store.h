/* param_store.h - a named-tensor model's (GPT-2, BERT) parameter store (train/param_store.h)
 * in files: taking a file's tensor into it, and writing a HuggingFace directory from it. */
#ifndef DAMO_MODELS_PARAM_STORE_H
#define DAMO_MODELS_PARAM_STORE_H

#include "train/model.h"
#include "train/param_store.h"

#include <cjson/cJSON.h>

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
/* A layer weight's HuggingFace name: slot (keras_hub's name, "self_attention/query/kernel")
 * to hf; an hf starting with '.' follows the layer's name ("encoder.layer.3" +
 * ".attention.self.query.weight"), any other is the whole name ("wte.weight"). */
typedef struct hf_slot_name {
  const char *slot, *hf;
} hf_slot_name;

/* Points every weight slot of fm's layers at the tensor of s that map names (value and
 * gradient views over the store's blocks, freed with fm): the model of layers then trains
 * the store's weights in place. An unmapped slot or a shape that differs is an error (a
 * table out of step with the layers). */
damo_status param_store_bind_layers(const param_store *s, damo_model *fm, const hf_slot_name *map, int n_map,
                                    const char *what);

/* Adds key: value to a cJSON object as the float's shortest decimal that reads back the same. */
void param_store_json_float(cJSON *root, const char *key, float value);

#endif
