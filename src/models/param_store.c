/* param_store.c - a named-tensor model's parameter store in files (see param_store.h). */
#include "models/param_store.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

damo_status param_store_take(const param_store *s, int i, const damo_tensor *t, const char *path, const char *stored,
                             const char *config) {
  const damo_tensor *want = s->values[i];
  char a[96], b[96];
  if (t->dtype != DAMO_F32 || t->ndim != want->ndim || memcmp(t->shape, want->shape, (size_t)want->ndim * sizeof *t->shape))
    return damo_error(DAMO_ERR_SHAPE, "%s: tensor '%s' is %s %s, the config (%s) needs f32 %s", path, stored,
                      damo_dtype_name(t->dtype), damo_shape_string(t->ndim, t->shape, a, sizeof a), config,
                      damo_shape_string(want->ndim, want->shape, b, sizeof b));
  const float *src = damo_tensor_f32(t);
  const int64_t count = damo_tensor_numel(t);
  for (int64_t j = 0; j < count; j++)
    if (!isfinite(src[j]))
      return damo_error(DAMO_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value at flat index %lld", path, stored,
                        (long long)j);
  memcpy(want->data, src, (size_t)count * sizeof(float));
  return DAMO_OK;
}

/* Both files into one staging folder that replaces dir with one rename (damo_dir_save);
 * consumes d and text. */
static damo_status save_files(const char *dir, damo_tensor_dict *d, char *text) {
  char path[4096];
  damo_dir_save *tx = NULL;
  damo_status st = damo_dir_save_begin(dir, &tx);
  const char *meta[] = {"format", "pt"};
  snprintf(path, sizeof path, "%s/model.safetensors", tx ? damo_dir_save_folder(tx) : dir);
  if (st == DAMO_OK) st = damo_safetensors_save(path, d, meta, 1);
  damo_tensor_dict_free(d);
  snprintf(path, sizeof path, "%s/config.json", tx ? damo_dir_save_folder(tx) : dir);
  if (st == DAMO_OK) st = damo_write_file_atomic(path, text, strlen(text));
  cJSON_free(text);
  if (st == DAMO_OK) return damo_dir_save_commit(tx);
  damo_dir_save_abort(tx);
  return tx ? damo_error_prefix(st, "saving %s: ", dir) : st;
}

damo_status param_store_save_dict(const char *dir, damo_tensor_dict *d, cJSON *config_json) {
  char *text = config_json ? cJSON_Print(config_json) : NULL;
  cJSON_Delete(config_json);
  if (!text || !d) {
    cJSON_free(text);
    damo_tensor_dict_free(d);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory writing the model", dir);
  }
  return save_files(dir, d, text);
}

damo_status param_store_save_dir(const param_store *s, const char *dir,
                                 void (*file_name)(const param_store *s, int i, char *name, size_t cap),
                                 cJSON *config_json, damo_dtype dtype) {
  return param_store_save_dir_with(s, dir, file_name, config_json, dtype, NULL, NULL);
}

damo_status param_store_save_dir_with(const param_store *s, const char *dir,
                                      void (*file_name)(const param_store *s, int i, char *name, size_t cap),
                                      cJSON *config_json, damo_dtype dtype, param_store_writer writer,
                                      const void *ctx) {
  char name[192];
  damo_tensor_dict *d = damo_tensor_dict_new();
  damo_status st = d ? DAMO_OK : DAMO_ERR_NOMEM;
  for (int i = 0; i < s->n_tensors && st == DAMO_OK; i++) {
    const damo_tensor *v = s->values[i];
    file_name(s, i, name, sizeof name);
    int written = 0;
    if (writer && (st = writer(ctx, i, name, d, &written)) == DAMO_OK && written) continue;
    const float *x = damo_tensor_f32(v);
    for (int64_t j = 0, n = damo_tensor_numel(v); j < n && st == DAMO_OK; j++)
      if (!isfinite(x[j]))
        st = damo_error(DAMO_ERR_NUMERIC, "%s: tensor '%s' holds %s at flat index %lld; a model with non-finite "
                        "weights is not saved", dir, name, isnan(x[j]) ? "NaN" : "Inf", (long long)j);
    /* A header over the model's memory (the writer only reads it), or its bf16 rounding. */
    damo_tensor *view = st == DAMO_OK ? damo_tensor_wrap(DAMO_F32, v->ndim, v->shape, v->data) : NULL;
    if (view && dtype == DAMO_BF16) {
      damo_tensor *rounded = damo_tensor_to_bf16(view);
      damo_tensor_free(view);
      view = rounded;
    }
    if (st == DAMO_OK) st = view ? damo_tensor_dict_add(d, name, view) : DAMO_ERR_NOMEM;
  }
  if (st != DAMO_OK) {
    damo_tensor_dict_free(d);
    cJSON_Delete(config_json);
    return st;
  }
  return param_store_save_dict(dir, d, config_json);
}

void param_store_json_float(cJSON *root, const char *key, float value) {
  char text[32];
  for (int digits = 6; digits <= 9; digits++) {
    snprintf(text, sizeof text, "%.*g", digits, (double)value);
    if ((float)strtod(text, NULL) == value) break;
  }
  cJSON_AddItemToObject(root, key, cJSON_CreateRaw(text));
}

