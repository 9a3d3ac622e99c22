/* param_store.c - the one parameter store of every model kind (see param_store.h): layout,
 * per-tensor views, the decay mask and the optimizer over the whole block. */
#include "train/param_store.h"

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
  const size_t slots = (size_t)(n > 0 ? n : 1); /* a model may have no tensors of a kind */
  s->names = calloc(slots, sizeof *s->names);
  s->values = calloc(slots, sizeof *s->values);
  s->grads = calloc(slots, sizeof *s->grads);
  int64_t *offsets = malloc(slots * sizeof *offsets);
  if (!s->names || !s->values || !s->grads || !offsets) {
    free(offsets);
    param_store_free(s);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %d tensors", what, n);
  }
  s->n_tensors = n;
  int ndim;
  int64_t shape[DAMO_MAX_DIMS], total = 0;
  char name[160];
  for (int i = 0; i < n; i++) {
    spec(config, i, name, sizeof name, &ndim, shape);
    offsets[i] = total;
    int64_t count = 1;
    for (int d = 0; d < ndim; d++) count *= shape[d];
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
