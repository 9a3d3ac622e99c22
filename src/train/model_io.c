/* model_io.c - a model directory: config.json (architecture and training settings) and
 * model.safetensors (weights named "<layer>.<param>", e.g. "dense_1.kernel"). A save moves
 * the directory from one complete state to the next (damo_dir_save: both files are written
 * into a staging folder that replaces the directory with one rename), so an interrupted save
 * leaves the previous model intact. Weights that are not finite are refused on save and on
 * load: such a model would only ever predict NaN. Loading is strict: every weight must be
 * present with the shape the config implies.
 *
 * A kernel at least half zeros (a pruned one) is stored sparse: "<name>.mask", U8,
 * one bit per value in row-major order (bit j of byte i is value 8 i + j; set = nonzero), and
 * "<name>.values", F32, the nonzeros in that order; 4.1 bytes a value at 0% zeros, 0.53 at
 * 90%. Loading takes either form. */
#include "train/model.h"

#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

/* The smallest dense kernel the sparse product is used for (see load_sparse). */
#define SPARSE_MIN_WEIGHTS (1 << 20)

static void join(char *buf, size_t cap, const char *dir, const char *file) { snprintf(buf, cap, "%s/%s", dir, file); }

/* DAMO_ERR_NUMERIC naming the tensor and the first non-finite element, if there is one. */
static damo_status check_finite(const damo_tensor *t, const char *what, const char *name) {
  const float *v = damo_tensor_f32(t);
  const int64_t n = damo_tensor_numel(t);
  for (int64_t j = 0; j < n; j++)
    if (!isfinite(v[j]))
      return damo_error(DAMO_ERR_NUMERIC, "%s: tensor '%s' holds %s at flat index %lld; a model with non-finite "
                        "weights only predicts NaN", what, name, isnan(v[j]) ? "NaN" : "Inf", (long long)j);
  return DAMO_OK;
}

/* A header over memory the writer only reads, added under "<layer>.<what>". */
static damo_status add_view(damo_tensor_dict *d, const damo_layer *l, const char *what, damo_dtype dtype, int ndim,
                            const int64_t *shape, const void *data) {
  char name[2 * DAMO_NAME_MAX + 2];
  snprintf(name, sizeof name, "%s.%s", l->name, what);
  damo_tensor *view = damo_tensor_wrap(dtype, ndim, shape, (void *)data);
  return view ? damo_tensor_dict_add(d, name, view) : DAMO_ERR_NOMEM;
}

/* An int8 slot's scales beside it (I8, in the slot's shape): "<slot>_scale" (one per column
 * of a kernel, per row of a table: "kernel_scale", "backward_lstm.recurrent_kernel_scale"). */
static void scale_name(const damo_param_slot *s, char *out, size_t cap) { snprintf(out, cap, "%s_scale", s->name); }

/* A static dense/conv2d's input quantisation: input_scale (1) and input_zero_point (1, I32). */
static damo_status add_input_quant(damo_tensor_dict *d, const damo_layer *l) {
  const int64_t one = 1;
  damo_status st = add_view(d, l, "input_scale", DAMO_F32, 1, &one, &l->quant->x_scale);
  return st == DAMO_OK ? add_view(d, l, "input_zero_point", DAMO_I32, 1, &one, &l->quant->x_zero_point) : st;
}

/* Whether a kernel is stored sparse: at least half its values zero (biases, norms and
 * embeddings are always dense, as pruning leaves them). */
static int store_sparse(const damo_param_slot *s) {
  if (strcmp(s->name, "kernel")) return 0;
  const damo_tensor *t = s->value;
  const float *v = damo_tensor_f32(t);
  int64_t zeros = 0, n = damo_tensor_numel(t);
  for (int64_t j = 0; j < n; j++) zeros += v[j] == 0.0f;
  return n >= 16 && 2 * zeros >= n;
}

/* "<name>.mask" and "<name>.values" of t (new tensors the dict owns). */
static damo_status add_sparse(damo_tensor_dict *d, const char *name, const damo_tensor *t) {
  const float *v = damo_tensor_f32(t);
  const int64_t n = damo_tensor_numel(t), mask_bytes = (n + 7) / 8;
  int64_t nnz = 0;
  for (int64_t j = 0; j < n; j++) nnz += v[j] != 0.0f;
  damo_tensor *mask = damo_tensor_new(DAMO_U8, 1, &mask_bytes), *values = damo_tensor_new(DAMO_F32, 1, &nnz);
  if (!mask || !values) {
    damo_tensor_free(mask), damo_tensor_free(values);
    return damo_error(DAMO_ERR_NOMEM, "model_save: out of memory for the sparse form of '%s'", name);
  }
  uint8_t *bits = mask->data;
  float *out = damo_tensor_f32(values);
  memset(bits, 0, (size_t)mask_bytes);
  for (int64_t j = 0, k = 0; j < n; j++)
    if (v[j] != 0.0f) bits[j >> 3] |= (uint8_t)(1u << (j & 7)), out[k++] = v[j];
  char key[2 * DAMO_NAME_MAX + 16];
  snprintf(key, sizeof key, "%s.mask", name);
  damo_status st = damo_tensor_dict_add(d, key, mask);
  snprintf(key, sizeof key, "%s.values", name);
  if (st == DAMO_OK) st = damo_tensor_dict_add(d, key, values);
  else damo_tensor_free(values);
  return st;
}

static damo_status write_model_files(damo_model *m, const char *folder, const char *dir) {
  damo_tensor_dict *d = damo_tensor_dict_new();
  if (!d) return DAMO_ERR_NOMEM;
  damo_status st = DAMO_OK;
  for (int i = 0; i < m->n_layers && st == DAMO_OK; i++)
    for (int p = 0; p < m->layers[i]->n_params && st == DAMO_OK; p++) {
      const damo_param_slot *s = &m->layers[i]->params[p];
      char name[2 * DAMO_NAME_MAX + 2];
      snprintf(name, sizeof name, "%s.%s", m->layers[i]->name, s->name);
      st = check_finite(s->value, dir, name);
      const damo_layer *l = m->layers[i];
      if (st == DAMO_OK && l->quant && l->quant->slot[p].q) {
        char scale[64];
        const int64_t n = damo_layer_qslot_scales(l, p);
        scale_name(s, scale, sizeof scale);
        st = add_view(d, l, s->name, DAMO_I8, s->ndim, s->shape, l->quant->slot[p].q);
        if (st == DAMO_OK) st = add_view(d, l, scale, DAMO_F32, 1, &n, l->quant->slot[p].scale);
        if (st == DAMO_OK && p == 0 && l->quant->x_scale > 0.0f) st = add_input_quant(d, l);
      } else if (st == DAMO_OK && store_sparse(s)) {
        st = add_sparse(d, name, s->value);
      } else if (st == DAMO_OK) {
        st = add_view(d, l, s->name, DAMO_F32, s->value->ndim, s->value->shape, s->value->data);
      }
    }
  char path[4096];
  const char *meta[] = {"format", "damo", "damo_version", DAMO_VERSION};
  join(path, sizeof path, folder, "model.safetensors");
  if (st == DAMO_OK) st = damo_safetensors_save(path, d, meta, 2);
  damo_tensor_dict_free(d);
  if (st != DAMO_OK) return st;

  cJSON *root = damo_model_to_json(m);
  char *text = root ? cJSON_Print(root) : NULL;
  cJSON_Delete(root);
  if (!text) return damo_error(DAMO_ERR_NOMEM, "model_save: out of memory writing config.json");
  join(path, sizeof path, folder, "config.json");
  st = damo_write_file_atomic(path, text, strlen(text));
  cJSON_free(text);
  return st;
}

damo_status damo_model_save(damo_model *m, const char *dir) {
  if (!m || !dir) return damo_error(DAMO_ERR_INVALID_ARG, "model_save: NULL argument");
  damo_status st = damo_model_build(m, m->seed);
  if (st != DAMO_OK) return st;
  damo_dir_save *tx;
  if ((st = damo_dir_save_begin(dir, &tx)) != DAMO_OK) return st;
  st = write_model_files(m, damo_dir_save_folder(tx), dir);
  if (st != DAMO_OK) {
    damo_dir_save_abort(tx);
    return damo_error_prefix(st, "saving %s: ", dir);
  }
  return damo_dir_save_commit(tx);
}

/* Whether config.json's "quantization" lists layer name as int8. */
static int quantized_layer(const damo_model *m, const char *name) {
  const cJSON *layers = m->quantization ? cJSON_GetObjectItemCaseSensitive(m->quantization, "layers") : NULL, *e;
  cJSON_ArrayForEach(e, layers) if (cJSON_IsString(e) && !strcmp(e->valuestring, name)) return 1;
  return 0;
}

static int quantized_static(const damo_model *m) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(m->quantization, "activations");
  return cJSON_IsString(a) && !strcmp(a->valuestring, "static");
}

/* Every name in "layers" is a layer that can be int8, listed once. */
static damo_status check_quantized_names(const damo_model *m, const char *path) {
  const cJSON *layers = m->quantization ? cJSON_GetObjectItemCaseSensitive(m->quantization, "layers") : NULL, *e, *f;
  cJSON_ArrayForEach(e, layers) {
    int found = 0;
    for (int i = 0; i < m->n_layers; i++) {
      const char *why = NULL;
      if (strcmp(m->layers[i]->name, e->valuestring)) continue;
      found = 1;
      if (!damo_layer_quantizable(m->layers[i], &why))
        return damo_error(DAMO_ERR_FORMAT, "%s: quantization.layers names '%s', which cannot be int8: %s", path,
                          e->valuestring, why);
    }
    if (!found) return damo_error(DAMO_ERR_FORMAT, "%s: quantization.layers names '%s', which is no layer of the model",
                                  path, e->valuestring);
    cJSON_ArrayForEach(f, layers) if (f != e && !strcmp(f->valuestring, e->valuestring))
      return damo_error(DAMO_ERR_FORMAT, "%s: quantization.layers names '%s' twice", path, e->valuestring);
  }
  return DAMO_OK;
}

/* The tensor "<layer>.<what>" of dtype and shape, or an error naming the file and the layer. */
static damo_status need_tensor(const damo_tensor_dict *d, const char *path, const damo_layer *l, const char *what,
                               damo_dtype dtype, int ndim, const int64_t *shape, const damo_tensor **out) {
  char name[2 * DAMO_NAME_MAX + 2], a[96], b[96];
  snprintf(name, sizeof name, "%s.%s", l->name, what);
  const damo_tensor *t = *out = damo_tensor_dict_get(d, name);
  if (!t) return damo_error(DAMO_ERR_FORMAT, "%s: missing tensor '%s' for layer '%s'", path, name, l->name);
  if (t->dtype != dtype || t->ndim != ndim || memcmp(t->shape, shape, (size_t)ndim * sizeof *shape))
    return damo_error(DAMO_ERR_SHAPE, "%s: tensor '%s' is %s %s, layer '%s' expects %s %s", path, name,
                      damo_dtype_name(t->dtype), damo_shape_string(t->ndim, t->shape, a, sizeof a), l->name,
                      damo_dtype_name(dtype), damo_shape_string(ndim, shape, b, sizeof b));
  return DAMO_OK;
}

/* A weight stored sparse ("<name>.mask" and "<name>.values") into slot s; *found 0 when the
 * file holds no mask for it (then it must be dense). */
static damo_status load_sparse(const damo_tensor_dict *d, const char *path, damo_layer *l, const damo_param_slot *s,
                               int *found, int *used) {
  char name[2 * DAMO_NAME_MAX + 16];
  snprintf(name, sizeof name, "%s.%s.mask", l->name, s->name);
  const damo_tensor *mask = damo_tensor_dict_get(d, name), *values;
  *found = mask != NULL;
  if (!mask) return DAMO_OK;
  const int64_t n = damo_tensor_numel(s->value), mask_bytes = (n + 7) / 8;
  snprintf(name, sizeof name, "%s.%s.values", l->name, s->name);
  if (mask->dtype != DAMO_U8 || mask->ndim != 1 || mask->shape[0] != mask_bytes)
    return damo_error(DAMO_ERR_SHAPE, "%s: tensor '%s.%s.mask' must be u8 (%lld) (a bit for each of the %lld values of "
                      "layer '%s')", path, l->name, s->name, (long long)mask_bytes, (long long)n, l->name);
  const uint8_t *bits = mask->data;
  int64_t nnz = 0;
  for (int64_t j = 0; j < mask_bytes; j++) nnz += __builtin_popcount(bits[j]);
  if (n % 8 && bits[mask_bytes - 1] >> (n % 8))
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s.%s.mask' sets bits past the layer's %lld values", path, l->name,
                      s->name, (long long)n);
  if (!(values = damo_tensor_dict_get(d, name)))
    return damo_error(DAMO_ERR_FORMAT, "%s: missing tensor '%s' beside its mask", path, name);
  if (values->dtype != DAMO_F32 || values->ndim != 1 || values->shape[0] != nnz)
    return damo_error(DAMO_ERR_SHAPE, "%s: tensor '%s' must be f32 (%lld), the count of bits its mask sets", path, name,
                      (long long)nnz);
  damo_status st = check_finite(values, path, name);
  if (st != DAMO_OK) return st;
  const float *v = damo_tensor_f32(values);
  float *out = damo_tensor_f32(s->value);
  for (int64_t j = 0, k = 0; j < n; j++) out[j] = bits[j >> 3] >> (j & 7) & 1 ? v[k++] : 0.0f;
  *used += 2;
  /* Past 70% zeros a dense kernel of a million weights or more multiplies through the CSR
   * product at inference (make bench P: the crossover lies between 50 and 70% for W2's
   * 3136 x 1024; a 784 x 256 kernel is still 0.88x the dense GEMM at 90%, its transposes and
   * thread start costing more than the zeros save); fit drops it (damo_model_drop_sparse). */
  const int mostly_zero = 10 * (n - nnz) >= 7 * n;
  /* A conv2d kernel past 70% zeros convolves directly from its CSR (damo bench sparse-conv:
   * W2's second convolution is 1.1x the dense one at 70%, 3x at 90%; its first, one input
   * channel, 1.6x at 70%), whatever its size: convolutions reuse each weight at every pixel. */
  const int sparse_conv = l->type == &damo_layer_conv2d && s->ndim == 4 && mostly_zero;
  if ((l->type == &damo_layer_dense && s->ndim == 2 && mostly_zero && n >= SPARSE_MIN_WEIGHTS) || sparse_conv) {
    damo_csr_free(l->sparse);
    l->sparse = NULL;
    const int64_t rows = s->ndim == 4 ? s->shape[0] * s->shape[1] * s->shape[2] : s->shape[0];
    if ((st = damo_csr_from_dense_transposed(out, rows, s->shape[s->ndim - 1], &l->sparse)) != DAMO_OK)
      return damo_error_prefix(st, "%s: layer '%s': ", path, l->name);
  }
  return DAMO_OK;
}

/* Slot p of an int8 layer: its I8 tensor t and the scales beside it; the f32 slot gets
 * scale * q. The first slot of a static dense/conv2d brings the input's quantisation too. */
static damo_status load_quantized(damo_layer *l, int p, const damo_tensor_dict *d, const char *path, int is_static,
                                  const damo_tensor *t, int *used) {
  const int64_t one = 1, n = damo_layer_qslot_scales(l, p);
  char name[64];
  scale_name(&l->params[p], name, sizeof name);
  const damo_tensor *scale, *x_scale = NULL, *x_zero = NULL;
  is_static = is_static && p == 0 && damo_layer_static_input(l);
  damo_status st = need_tensor(d, path, l, name, DAMO_F32, 1, &n, &scale);
  if (st == DAMO_OK && is_static) st = need_tensor(d, path, l, "input_scale", DAMO_F32, 1, &one, &x_scale);
  if (st == DAMO_OK && is_static) st = need_tensor(d, path, l, "input_zero_point", DAMO_I32, 1, &one, &x_zero);
  if (st == DAMO_OK && is_static && !(damo_tensor_f32(x_scale)[0] > 0.0f))
    st = damo_error(DAMO_ERR_FORMAT, "%s: '%s.input_scale' is %g (static activations need a positive scale)", path,
                    l->name, (double)damo_tensor_f32(x_scale)[0]);
  if (st == DAMO_OK) st = damo_layer_quantize_slot(l, p, t->data, damo_tensor_f32(scale));
  if (st == DAMO_OK && is_static)
    st = damo_layer_set_input_quant(l, damo_tensor_f32(x_scale)[0], damo_tensor_i32(x_zero)[0]);
  if (st != DAMO_OK) return damo_error_prefix(st, "%s: ", path);
  *used += 2 + 2 * is_static;
  return DAMO_OK;
}

/* A tensor name some layer's slot (or an int8 layer's scales) is saved under. */
static int known_tensor(const damo_model *m, const char *tensor) {
  static const char *const extras[] = {"input_scale", "input_zero_point"};
  char name[2 * DAMO_NAME_MAX + 2];
  for (int i = 0; i < m->n_layers; i++) {
    const damo_layer *l = m->layers[i];
    for (int p = 0; p < l->n_params; p++)
      for (int form = 0; form < 4; form++) { /* dense, sparse's two tensors, an int8 slot's scales */
        snprintf(name, sizeof name, "%s.%s%s", l->name, l->params[p].name,
                 form == 1 ? ".mask" : form == 2 ? ".values" : form == 3 ? "_scale" : "");
        if (!strcmp(name, tensor) && (form < 3 || (l->quant && l->quant->slot[p].q))) return 1;
      }
    for (int e = 0; l->quant && e < 2; e++) {
      snprintf(name, sizeof name, "%s.%s", l->name, extras[e]);
      if (!strcmp(name, tensor)) return 1;
    }
  }
  return 0;
}

/* Whether the first MiB of a safetensors file's JSON header holds needle (or the header is
 * larger than that: then assume so). Only sizes the up-front bound below; the load proper
 * validates everything. */
static int header_mentions(const char *path, const char *needle) {
  FILE *f = fopen(path, "rb");
  unsigned char len8[8];
  if (!f) return 0;
  uint64_t n = 0;
  if (fread(len8, 1, 8, f) == 8)
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
  const size_t cap = 1u << 20, want = n < cap ? (size_t)n : cap, k = strlen(needle);
  char *h = malloc(want + 1);
  size_t got = h ? fread(h, 1, want, f) : 0;
  fclose(f);
  int found = n > cap;
  for (size_t i = 0; h && !found && i + k <= got; i++) found = !memcmp(h + i, needle, k);
  free(h);
  return found;
}

damo_status damo_model_load(const char *dir, damo_model **out) {
  if (!out || !dir) return damo_error(DAMO_ERR_INVALID_ARG, "model_load: NULL argument");
  *out = NULL;
  char path[4096];
  join(path, sizeof path, dir, "config.json");
  damo_model *m;
  damo_status st = damo_model_from_config_file(path, &m);
  if (st != DAMO_OK) return st;
  /* The weights the config declares must fit in the file before they are allocated: a
   * hostile "units" must not cost gigabytes (2 bytes a value: F16/BF16 files are accepted;
   * a sparse tensor's mask is an eighth of a byte a value, so the file's head is read first
   * for whether it holds one).
   * Counted in double, not damo_model_num_params' int64: hostile shapes can overflow that. */
  double declared = 0;
  for (int i = 0; i < m->n_layers; i++)
    for (int p = 0; p < m->layers[i]->n_params; p++) {
      double count = 1;
      for (int d = 0; d < m->layers[i]->params[p].ndim; d++) count *= (double)m->layers[i]->params[p].shape[d];
      declared += count;
    }
  join(path, sizeof path, dir, "model.safetensors");
  struct stat fst;
  /* int8 kernels: a byte a value; sparse ones: a bit */
  const double per_value = header_mentions(path, ".mask\"") ? 0.125 : m->quantization ? 1.0 : 2.0;
  if (stat(path, &fst) == 0 && (double)fst.st_size < per_value * declared) {
    st = damo_error(DAMO_ERR_FORMAT, "%s: config.json declares %.0f weights (at least %.0f bytes) but the file has %lld "
                    "bytes", path, declared, per_value * declared, (long long)fst.st_size);
    damo_model_free(m);
    return st;
  }
  if ((st = damo_model_build(m, 0)) != DAMO_OK) {
    damo_model_free(m);
    return st;
  }
  join(path, sizeof path, dir, "model.safetensors");
  damo_tensor_dict *d;
  if ((st = damo_safetensors_load(path, &d)) != DAMO_OK) {
    damo_model_free(m);
    return st;
  }
  int used = 0;
  st = check_quantized_names(m, path);
  for (int i = 0; i < m->n_layers && st == DAMO_OK; i++)
    for (int p = 0; p < m->layers[i]->n_params && st == DAMO_OK; p++) {
      const damo_param_slot *s = &m->layers[i]->params[p];
      const int int8 = damo_layer_int8_slot(m->layers[i], p) && quantized_layer(m, m->layers[i]->name);
      const damo_tensor *t;
      int sparse = 0;
      if (!int8 && ((st = load_sparse(d, path, m->layers[i], s, &sparse, &used)) != DAMO_OK || sparse)) continue;
      if ((st = need_tensor(d, path, m->layers[i], s->name, int8 ? DAMO_I8 : DAMO_F32, s->ndim, s->shape, &t)) != DAMO_OK)
        break;
      if (int8) {
        st = load_quantized(m->layers[i], p, d, path, quantized_static(m), t, &used);
        continue;
      }
      char name[2 * DAMO_NAME_MAX + 2];
      snprintf(name, sizeof name, "%s.%s", m->layers[i]->name, s->name);
      if ((st = check_finite(t, path, name)) == DAMO_OK) {
        memcpy(s->value->data, t->data, damo_tensor_nbytes(t));
        used++;
      }
    }
  if (st == DAMO_OK && used != d->count) {
    for (int k = 0; k < d->count; k++)
      if (!known_tensor(m, d->names[k])) {
        st = damo_error(DAMO_ERR_FORMAT, "%s: unexpected tensor '%s' that no layer of config.json uses", path, d->names[k]);
        break;
      }
  }
  damo_tensor_dict_free(d);
  if (st == DAMO_OK && m->has_compile_options) st = damo_model_compile(m, &m->copt);
  if (st != DAMO_OK) {
    damo_model_free(m);
    return st;
  }
  *out = m;
  return DAMO_OK;
}
