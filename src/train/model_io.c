/* model_io.c - a model directory: config.json (architecture and training settings) and
 * model.safetensors (weights named "<layer>.<param>", e.g. "dense_1.kernel"). A save moves
 * the directory from one complete state to the next (damo_dir_save: both files are written
 * into a staging folder that replaces the directory with one rename), so an interrupted save
 * leaves the previous model intact. Weights that are not finite are refused on save and on
 * load: such a model would only ever predict NaN. Loading is strict: every weight must be
 * present with the shape the config implies. */
#include "train/model.h"

#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

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
      /* A header over the model's memory: the writer only reads it. */
      damo_tensor *view = st == DAMO_OK ? damo_tensor_wrap(DAMO_F32, s->value->ndim, s->value->shape, s->value->data) : NULL;
      if (st == DAMO_OK) st = view ? damo_tensor_dict_add(d, name, view) : DAMO_ERR_NOMEM;
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

damo_status damo_model_load(const char *dir, damo_model **out) {
  if (!out || !dir) return damo_error(DAMO_ERR_INVALID_ARG, "model_load: NULL argument");
  *out = NULL;
  char path[4096];
  join(path, sizeof path, dir, "config.json");
  damo_model *m;
  damo_status st = damo_model_from_config_file(path, &m);
  if (st != DAMO_OK) return st;
  /* The weights the config declares must fit in the file before they are allocated: a
   * hostile "units" must not cost gigabytes (2 bytes a value: F16/BF16 files are accepted).
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
  if (stat(path, &fst) == 0 && (double)fst.st_size < 2.0 * declared) {
    st = damo_error(DAMO_ERR_FORMAT, "%s: config.json declares %.0f weights (at least %.0f bytes) but the file has %lld "
                    "bytes", path, declared, 2.0 * declared, (long long)fst.st_size);
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
  for (int i = 0; i < m->n_layers && st == DAMO_OK; i++)
    for (int p = 0; p < m->layers[i]->n_params && st == DAMO_OK; p++) {
      const damo_param_slot *s = &m->layers[i]->params[p];
      char name[2 * DAMO_NAME_MAX + 2], a[96], b[96];
      snprintf(name, sizeof name, "%s.%s", m->layers[i]->name, s->name);
      const damo_tensor *t = damo_tensor_dict_get(d, name);
      if (!t) {
        st = damo_error(DAMO_ERR_FORMAT, "%s: missing tensor '%s' for layer '%s'", path, name, m->layers[i]->name);
        break;
      }
      if (t->dtype != DAMO_F32 || t->ndim != s->ndim || memcmp(t->shape, s->shape, (size_t)s->ndim * sizeof *s->shape)) {
        st = damo_error(DAMO_ERR_SHAPE, "%s: tensor '%s' is %s %s, layer '%s' expects f32 %s", path, name,
                        damo_dtype_name(t->dtype), damo_shape_string(t->ndim, t->shape, a, sizeof a),
                        m->layers[i]->name, damo_shape_string(s->ndim, s->shape, b, sizeof b));
        break;
      }
      if ((st = check_finite(t, path, name)) != DAMO_OK) break;
      memcpy(s->value->data, t->data, damo_tensor_nbytes(t));
      used++;
    }
  if (st == DAMO_OK && used != d->count) {
    for (int k = 0; k < d->count; k++) {
      int known = 0;
      for (int i = 0; i < m->n_layers && !known; i++)
        for (int p = 0; p < m->layers[i]->n_params; p++) {
          char name[2 * DAMO_NAME_MAX + 2];
          snprintf(name, sizeof name, "%s.%s", m->layers[i]->name, m->layers[i]->params[p].name);
          known |= !strcmp(name, d->names[k]);
        }
      if (!known) {
        st = damo_error(DAMO_ERR_FORMAT, "%s: unexpected tensor '%s' that no layer of config.json uses", path, d->names[k]);
        break;
      }
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
