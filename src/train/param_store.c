/* param_store.c - the one parameter store of every model kind (see param_store.h): layout,
 * per-tensor views, the decay mask and the optimizer over the whole block; and a model of
 * layers laid out in, or pointed at, a store under other names (model.h). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "train/model.h"
#include "graph/backend.h"

#include <fnmatch.h>
#include <stdio.h>
#include <sys/mman.h>

/* n zero floats, page-aligned, as fresh pages from the kernel: a page costs memory only once
 * written, so a model that never trains never pays for its gradients, nor a block-quantised
 * GPT-2 that only decodes for f32 copies of its matrices. */
static size_t block_bytes(int64_t n) { return (size_t)(n > 0 ? n : 16) * sizeof(float); }
static float *zero_block(int64_t n) {
  void *p = mmap(NULL, block_bytes(n), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  damo_advise_huge_pages(p, block_bytes(n)); /* still only what is written costs memory */
  return p;
}
static void release_block(float *p, int64_t n) {
  if (p) munmap(p, block_bytes(n));
}

void param_store_free(param_store *s) {
  if (!s) return;
  for (int i = 0; i < s->n_tensors; i++) {
    if (s->names) free(s->names[i]);
    if (s->values) damo_tensor_free(s->values[i]);
    if (s->grads) damo_tensor_free(s->grads[i]);
  }
  if (s->backend) {
    s->backend->free(s->backend, s->device_params);
    s->backend->free(s->backend, s->device_grads);
  }
  free(s->names);
  free(s->values);
  free(s->grads);
  free(s->frozen);
  free(s->trained_ranges);
  release_block(s->param_block, s->n_params_padded);
  release_block(s->grad_block, s->n_params_padded);
  memset(s, 0, sizeof *s);
}

/* The trained tensors' (offset, count) pairs, adjacent tensors merged, and their count. */
static void trained_ranges(param_store *s) {
  int64_t *r = s->trained_ranges;
  int n = 0;
  s->n_trainable = 0;
  for (int i = 0; i < s->n_tensors; i++) {
    if (!param_store_trained(s, i)) continue;
    const int64_t at = (const float *)s->grads[i]->data - param_store_grads(s), count = damo_tensor_numel(s->grads[i]);
    s->n_trainable += count;
    if (n > 0 && r[2 * n - 2] + r[2 * n - 1] == at)
      r[2 * n - 1] += count;
    else
      r[2 * n] = at, r[2 * n + 1] = count, n++;
  }
  s->n_trained_ranges = n;
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
  s->param_block = zero_block(total);
  s->grad_block = s->param_block ? zero_block(total) : NULL;
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
  if (ok) ok = (s->trained_ranges = malloc(slots * 2 * sizeof *s->trained_ranges)) != NULL;
  if (!ok) {
    param_store_free(s);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %lld parameters", what, (long long)total);
  }
  trained_ranges(s);
  return DAMO_OK;
}

int param_store_index(const param_store *s, const char *name) {
  for (int i = 0; s && name && i < s->n_tensors; i++)
    if (strcmp(s->names[i], name) == 0) return i;
  return -1;
}

/* Calls fn (unless NULL) for every tensor each pattern of a comma-separated list matches;
 * 0, or -1 - k when pattern k matches none (its text in bad). */
static int match_patterns(const param_store *s, const char *patterns, char *bad, size_t cap,
                          void (*fn)(param_store *s, int i, int trainable), param_store *target, int trainable) {
  int k = 0;
  for (const char *p = patterns;; k++) {
    const char *end = strchr(p, ',');
    const size_t len = end ? (size_t)(end - p) : strlen(p);
    char pattern[256];
    if (len >= sizeof pattern) { /* no tensor name is that long */
      snprintf(bad, cap, "%.32s... (%zu characters)", p, len);
      return -1 - k;
    }
    snprintf(pattern, sizeof pattern, "%.*s", (int)len, p);
    int hits = 0;
    for (int i = 0; i < s->n_tensors; i++)
      if (len && fnmatch(pattern, s->names[i], 0) == 0) {
        hits++;
        if (fn) fn(target, i, trainable);
      }
    if (!hits) {
      snprintf(bad, cap, "%s", pattern);
      return -1 - k;
    }
    if (!end) return 0;
    p = end + 1;
  }
}

static void mark(param_store *s, int i, int trainable) {
  if (!trainable && !s->frozen[i]) { /* frozen now: a gradient left from before is no step's */
    float *g = s->grads[i]->data;
    if (s->backend)
      s->backend->fill(s->backend, g, 0.0f, damo_tensor_numel(s->grads[i]));
    else
      memset(g, 0, (size_t)damo_tensor_numel(s->grads[i]) * sizeof *g);
  }
  s->frozen[i] = !trainable;
}

damo_status param_store_set_trainable(param_store *s, const char *patterns, int trainable, const char *what) {
  if (!patterns || !*patterns)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: no tensor name pattern to %s", what, trainable ? "train" : "freeze");
  char bad[256];
  if (match_patterns(s, patterns, bad, sizeof bad, NULL, NULL, 0) < 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: no tensor is named like '%s' (names as in model.safetensors: '%s' ... "
                      "'%s'; shell patterns such as 'encoder.layer.3.*' or '*.bias')", what, bad,
                      s->n_tensors ? s->names[0] : "", s->n_tensors ? s->names[s->n_tensors - 1] : "");
  if (!s->frozen && !(s->frozen = calloc((size_t)(s->n_tensors > 0 ? s->n_tensors : 1), 1)))
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", what);
  match_patterns(s, patterns, bad, sizeof bad, mark, s, trainable);
  trained_ranges(s);
  return DAMO_OK;
}

damo_status param_store_check_trainable(const param_store *s, const char *what) {
  if (s->n_trainable > 0 || s->n_tensors == 0) return DAMO_OK;
  return damo_error(DAMO_ERR_INVALID_ARG, "%s: every tensor is frozen, so there is nothing to train", what);
}

void param_store_decay_mask(const param_store *s, uint8_t *mask) {
  memset(mask, 0, (size_t)s->n_params_padded);
  for (int i = 0; i < s->n_tensors; i++) {
    const damo_tensor *t = s->values[i];
    if (t->ndim == 2 && param_store_trained(s, i))
      memset(mask + ((const float *)t->data - param_store_params(s)), 1, (size_t)damo_tensor_numel(t));
  }
}

float *param_store_params(const param_store *s) { return s->backend ? s->device_params : s->param_block; }
float *param_store_grads(const param_store *s) { return s->backend ? s->device_grads : s->grad_block; }

/* Points every view into the blocks (params, grads) of device dev. */
static void point_views(param_store *s, float *params, float *grads, damo_device dev) {
  for (int i = 0; i < s->n_tensors; i++) {
    const ptrdiff_t offset = (float *)s->values[i]->data - param_store_params(s);
    s->values[i]->data = params + offset;
    s->grads[i]->data = grads + offset;
    s->values[i]->device = s->grads[i]->device = dev;
  }
}

damo_status param_store_to_backend(param_store *s, const damo_backend *b, const char *what) {
  if (!b) return damo_error(DAMO_ERR_INVALID_ARG, "%s: no backend", what);
  const size_t bytes = (size_t)s->n_params_padded * sizeof(float);
  if (s->backend) { /* first back to the host */
    if (s->backend == b) return DAMO_OK;
    damo_status st = s->backend->to_host(s->backend, s->param_block, s->device_params, bytes);
    if (st != DAMO_OK) return damo_error_prefix(st, "%s: copying the weights back from '%s': ", what, s->backend->name);
    point_views(s, s->param_block, s->grad_block, DAMO_DEVICE_CPU);
    s->backend->free(s->backend, s->device_params);
    s->backend->free(s->backend, s->device_grads);
    s->backend = NULL;
    s->device_params = s->device_grads = NULL;
  }
  if (damo_backend_is_host(b)) return DAMO_OK;
  float *params = b->alloc(b, bytes), *grads = params ? b->alloc(b, bytes) : NULL;
  damo_status st = grads ? b->from_host(b, params, s->param_block, bytes) : DAMO_ERR_NOMEM;
  if (st != DAMO_OK) {
    b->free(b, params);
    b->free(b, grads);
    return damo_error_prefix(st, "%s: moving %lld weights to backend '%s': ", what, (long long)s->n_params, b->name);
  }
  b->fill(b, grads, 0.0f, s->n_params_padded);
  point_views(s, params, grads, damo_backend_device(b));
  s->backend = b;
  s->device_params = params;
  s->device_grads = grads;
  return DAMO_OK;
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

static const damo_param_slot *find_slot(const damo_layer *l, const char *name) {
  for (int p = 0; p < l->n_params; p++)
    if (!strcmp(l->params[p].name, name)) return &l->params[p];
  return NULL;
}

/* Slot `slot`'s entry of the map, or NULL. */
static const hf_slot_name *map_entry(const hf_slot_name *map, int n_map, const char *slot) {
  for (int k = 0; k < n_map; k++)
    if (!strcmp(map[k].slot, slot)) return &map[k];
  return NULL;
}

/* The file name an entry gives a weight of layer l (see hf_slot_name). */
static void hf_name(const damo_layer *l, const hf_slot_name *e, char *name, size_t cap) {
  snprintf(name, cap, "%s%s", e->hf[0] == '.' ? l->name : "", e->hf);
}

damo_status param_store_bind_layers(const param_store *s, damo_model *fm, const hf_slot_name *map, int n_map,
                                    const char *what) {
  for (int i = 0; i < fm->n_layers; i++) {
    damo_layer *l = fm->layers[i];
    for (int p = 0; p < l->n_params; p++) {
      damo_param_slot *slot = &l->params[p];
      const hf_slot_name *e = map_entry(map, n_map, slot->name);
      char name[192] = "unmapped";
      if (e) hf_name(l, e, name, sizeof name);
      const int j = e ? param_store_index(s, name) : -1;
      const damo_tensor *v = j >= 0 ? s->values[j] : NULL;
      if (!v || v->ndim != slot->ndim || memcmp(v->shape, slot->shape, (size_t)slot->ndim * sizeof *slot->shape))
        return damo_error(DAMO_ERR_STATE, "%s: layer '%s' weight '%s' has no tensor of its shape in the model (%s)",
                          what, l->name, slot->name, name);
      damo_tensor_free(slot->value);
      damo_tensor_free(slot->grad);
      slot->value = damo_tensor_wrap(DAMO_F32, slot->ndim, slot->shape, v->data);
      const int trained = param_store_trained(s, j); /* a frozen weight: no gradient view */
      slot->grad = trained ? damo_tensor_wrap(DAMO_F32, slot->ndim, slot->shape, s->grads[j]->data) : NULL;
      if (!slot->value || (trained && !slot->grad)) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", what);
      slot->value->device = v->device;
      if (slot->grad) slot->grad->device = v->device;
    }
  }
  return DAMO_OK;
}

/* The context of param_store_alloc_layers' spec. */
typedef struct layer_tensors {
  const damo_model *fm;
  const hf_slot_name *map;
  int n_map, n_layer_tensors;
  param_spec_fn extra;
  const void *extra_config;
} layer_tensors;

static void layer_tensor_spec(const void *config, int i, char *name, size_t cap, int *ndim, int64_t *shape) {
  const layer_tensors *lt = config;
  if (i >= lt->n_layer_tensors) {
    lt->extra(lt->extra_config, i - lt->n_layer_tensors, name, cap, ndim, shape);
    return;
  }
  for (int j = 0; j < lt->fm->n_layers; j++) {
    const damo_layer *l = lt->fm->layers[j];
    for (int k = 0; k < lt->n_map; k++) {
      const damo_param_slot *slot = find_slot(l, lt->map[k].slot);
      if (!slot || i--) continue;
      hf_name(l, &lt->map[k], name, cap);
      *ndim = slot->ndim;
      memcpy(shape, slot->shape, (size_t)slot->ndim * sizeof *shape);
      return;
    }
  }
}

damo_status param_store_alloc_layers(param_store *s, const damo_model *fm, const hf_slot_name *map, int n_map,
                                     int n_extra, param_spec_fn extra, const void *extra_config, const char *what) {
  layer_tensors lt = {fm, map, n_map, 0, extra, extra_config};
  for (int j = 0; j < fm->n_layers; j++)
    for (int k = 0; k < n_map; k++) lt.n_layer_tensors += find_slot(fm->layers[j], map[k].slot) != NULL;
  return param_store_alloc(s, lt.n_layer_tensors + n_extra, layer_tensor_spec, &lt, what);
}
