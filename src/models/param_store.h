/* param_store.h - a named-tensor model's (GPT-2, BERT) parameter store (train/param_store.h)
 * in files: taking a file's tensor into it, and writing a HuggingFace directory from it. */
#ifndef DAMO_MODELS_PARAM_STORE_H
#define DAMO_MODELS_PARAM_STORE_H

#include "train/model.h" /* the parameter store, and models of layers over one */

#include <cjson/cJSON.h>

/* Copies a file's tensor (named `stored` in file `path`) into tensor i: f32, the right
 * shape (else an error naming both shapes and config, a description of the config), finite. */
damo_status param_store_take(const param_store *s, int i, const damo_tensor *t, const char *path, const char *stored,
                             const char *config);
/* Writes dir/model.safetensors (tensor i under file_name(i), metadata format "pt") and
 * dir/config.json (config_json, consumed) as one directory save (damo_dir_save: the old
 * directory or the new one, never a mix); creates dir if needed; refuses non-finite weights.
 * dtype DAMO_BF16 writes the tensors rounded to BF16 (else F32). */
damo_status param_store_save_dir(const param_store *s, const char *dir, void (*file_name)(const param_store *s, int i,
                                                                                          char *name, size_t cap),
                                 cJSON *config_json, damo_dtype dtype);
/* The same where writer may store tensor i its own way (int8 values and their scales):
 * it adds what it writes under name (and names derived from it) to d and sets *written;
 * tensors it leaves are written as above. */
typedef damo_status (*param_store_writer)(const void *ctx, int i, const char *name, damo_tensor_dict *d, int *written);
damo_status param_store_save_dir_with(const param_store *s, const char *dir,
                                      void (*file_name)(const param_store *s, int i, char *name, size_t cap),
                                      cJSON *config_json, damo_dtype dtype, param_store_writer writer,
                                      const void *ctx);
/* The same for tensors already gathered in d (consumed, as is config_json). */
damo_status param_store_save_dict(const char *dir, damo_tensor_dict *d, cJSON *config_json);
/* Adds key: value to a cJSON object as the float's shortest decimal that reads back the same. */
void param_store_json_float(cJSON *root, const char *key, float value);

#endif
