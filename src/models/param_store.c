/* param_store.c - see param_store.h. */
#include "models/param_store.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

void param_store_free(param_store *s) {
  if (!s) return;
  for (int i = 0; i < s->n_tensors; i++) {
    if (s->names) free(s->names[i]);
    if (s->values) damo_tensor_free(s->values[i]);
    if (s->grads) damo_tensor_free(s->grads[i]);
  }
  free(s->names);
  free(s->values);
  free(s->grads);
  damo_free(s->param_block);
  damo_free(s->grad_block);
  memset(s, 0, sizeof *s);
}

damo_status param_store_alloc(param_store *s, int n, param_spec_fn spec, const void *config, const char *what) {
  memset(s, 0, sizeof *s);
  s->names = calloc((size_t)n, sizeof *s->names);
  s->values = calloc((size_t)n, sizeof *s->values);
  s->grads = calloc((size_t)n, sizeof *s->grads);
  int64_t *offsets = malloc((size_t)n * sizeof *offsets);
  if (!s->names || !s->values || !s->grads || !offsets) {
    free(offsets);
    param_store_free(s);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %d tensors", what, n);
  }
  s->n_tensors = n;
  int ndim;
  int64_t shape[2], total = 0;
  char name[160];
  for (int i = 0; i < n; i++) {
    spec(config, i, name, sizeof name, &ndim, shape);
    offsets[i] = total;
    int64_t count = ndim == 2 ? shape[0] * shape[1] : shape[0];
    total += (count + 15) / 16 * 16; /* every tensor starts 64-byte aligned */
  }
  s->n_params_padded = total;
  s->param_block = damo_calloc((size_t)total * sizeof(float));
  s->grad_block = s->param_block ? damo_calloc((size_t)total * sizeof(float)) : NULL;
  int ok = s->grad_block != NULL;
  for (int i = 0; i < n && ok; i++) {
    spec(config, i, name, sizeof name, &ndim, shape);
    s->names[i] = damo_strdup(name);
    s->values[i] = damo_tensor_wrap(DAMO_F32, ndim, shape, s->param_block + offsets[i]);
    s->grads[i] = damo_tensor_wrap(DAMO_F32, ndim, shape, s->grad_block + offsets[i]);
    ok = s->names[i] && s->values[i] && s->grads[i];
    if (ok) s->n_params += damo_tensor_numel(s->values[i]);
  }
  free(offsets);
  if (!ok) {
    param_store_free(s);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %lld parameters", what, (long long)total);
  }
  return DAMO_OK;
}

int param_store_index(const param_store *s, const char *name) {
  for (int i = 0; s && name && i < s->n_tensors; i++)
    if (strcmp(s->names[i], name) == 0) return i;
  return -1;
}

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

damo_status param_store_save_dir(const param_store *s, const char *dir,
                                 void (*file_name)(const param_store *s, int i, char *name, size_t cap),
                                 cJSON *config_json) {
  char *text = config_json ? cJSON_Print(config_json) : NULL;
  cJSON_Delete(config_json);
  if (!text) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory writing config.json", dir);
  char path[4096], name[192];
  damo_tensor_dict *d = damo_tensor_dict_new();
  damo_status st = d ? DAMO_OK : DAMO_ERR_NOMEM;
  for (int i = 0; i < s->n_tensors && st == DAMO_OK; i++) {
    const damo_tensor *v = s->values[i];
    file_name(s, i, name, sizeof name);
    const float *x = damo_tensor_f32(v);
    for (int64_t j = 0, n = damo_tensor_numel(v); j < n && st == DAMO_OK; j++)
      if (!isfinite(x[j]))
        st = damo_error(DAMO_ERR_NUMERIC, "%s: tensor '%s' holds %s at flat index %lld; a model with non-finite "
                        "weights is not saved", dir, name, isnan(x[j]) ? "NaN" : "Inf", (long long)j);
    /* A header over the model's memory: the writer only reads it. */
    damo_tensor *view = st == DAMO_OK ? damo_tensor_wrap(DAMO_F32, v->ndim, v->shape, v->data) : NULL;
    if (st == DAMO_OK) st = view ? damo_tensor_dict_add(d, name, view) : DAMO_ERR_NOMEM;
  }
  /* Both files go into one staging folder that replaces dir with one rename (damo_dir_save). */
  damo_dir_save *tx = NULL;
  if (st == DAMO_OK) st = damo_dir_save_begin(dir, &tx);
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

void param_store_json_float(cJSON *root, const char *key, float value) {
  char text[32];
  for (int digits = 6; digits <= 9; digits++) {
    snprintf(text, sizeof text, "%.*g", digits, (double)value);
    if ((float)strtod(text, NULL) == value) break;
  }
  cJSON_AddItemToObject(root, key, cJSON_CreateRaw(text));
}

void param_store_decay_mask(const param_store *s, uint8_t *mask) {
  memset(mask, 0, (size_t)s->n_params_padded);
  for (int i = 0; i < s->n_tensors; i++) {
    const damo_tensor *t = s->values[i];
    if (t->ndim == 2) memset(mask + ((const float *)t->data - s->param_block), 1, (size_t)damo_tensor_numel(t));
  }
}

damo_status param_store_optimizer(const param_store *s, const damo_optimizer_config *c, damo_optimizer **out) {
  *out = damo_optimizer_new(c, s->n_params_padded);
  if (!*out) return damo_error_prefix(DAMO_ERR_INVALID_ARG, "optimizer: ");
  uint8_t *mask = malloc((size_t)s->n_params_padded);
  damo_status st = mask ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "optimizer: out of memory for the decay mask");
  if (st == DAMO_OK) {
    param_store_decay_mask(s, mask);
    st = damo_optimizer_set_decay_mask(*out, mask);
  }
  free(mask);
  if (st != DAMO_OK) {
    damo_optimizer_free(*out);
    *out = NULL;
  }
  return st;
}
