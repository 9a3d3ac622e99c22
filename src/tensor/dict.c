/* dict.c - an ordered name -> tensor list, the in-memory form of a safetensors file and of
 * checkpoints. Lookups are linear: dicts hold tens to hundreds of entries. */
#include "core/core.h"

damo_tensor_dict *damo_tensor_dict_new(void) {
  damo_tensor_dict *d = calloc(1, sizeof *d);
  if (!d) damo_error(DAMO_ERR_NOMEM, "out of memory for a tensor dict");
  return d;
}

void damo_tensor_dict_free(damo_tensor_dict *d) {
  if (!d) return;
  for (int i = 0; i < d->count; i++) {
    free(d->names[i]);
    damo_tensor_free(d->tensors[i]);
  }
  free(d->names);
  free(d->tensors);
  free(d);
}

damo_status damo_tensor_dict_add(damo_tensor_dict *d, const char *name, damo_tensor *t) {
  if (!d || !name || !t) {
    damo_tensor_free(t);
    return damo_error(DAMO_ERR_INVALID_ARG, "tensor dict add: NULL argument");
  }
  if (damo_tensor_dict_get(d, name)) {
    damo_tensor_free(t);
    return damo_error(DAMO_ERR_INVALID_ARG, "tensor dict already holds '%s'", name);
  }
  if (d->count == d->cap) {
    int cap = d->cap ? d->cap * 2 : 16;
    char **names = realloc(d->names, (size_t)cap * sizeof *names);
    if (names) d->names = names;
    damo_tensor **ts = names ? realloc(d->tensors, (size_t)cap * sizeof *ts) : NULL;
    if (!ts) {
      damo_tensor_free(t);
      return damo_error(DAMO_ERR_NOMEM, "out of memory growing a tensor dict");
    }
    d->tensors = ts;
    d->cap = cap;
  }
  char *copy = damo_strdup(name);
  if (!copy) {
    damo_tensor_free(t);
    return DAMO_ERR_NOMEM;
  }
  d->names[d->count] = copy;
  d->tensors[d->count] = t;
  d->count++;
  return DAMO_OK;
}

damo_tensor *damo_tensor_dict_get(const damo_tensor_dict *d, const char *name) {
  if (!d) return NULL;
  for (int i = 0; i < d->count; i++)
    if (strcmp(d->names[i], name) == 0) return d->tensors[i];
  return NULL;
}

damo_status damo_tensor_dict_add_bytes(damo_tensor_dict *d, const char *name, const void *p, size_t n) {
  int64_t count = (int64_t)n;
  damo_tensor *t = damo_tensor_new(DAMO_U8, 1, &count);
  if (!t) return damo_error(DAMO_ERR_NOMEM, "out of memory for '%s' (%zu bytes)", name, n);
  if (n) memcpy(t->data, p, n);
  return damo_tensor_dict_add(d, name, t);
}

damo_status damo_tensor_dict_get_bytes(const damo_tensor_dict *d, const char *path, const char *name, void *out,
                                       size_t n) {
  const damo_tensor *t = damo_tensor_dict_get(d, name);
  if (!t || t->dtype != DAMO_U8 || t->ndim != 1 || damo_tensor_numel(t) != (int64_t)n)
    return damo_error(DAMO_ERR_FORMAT, "%s: '%s' is missing or not %zu bytes", path ? path : "tensors", name, n);
  if (n) memcpy(out, t->data, n);
  return DAMO_OK;
}
