/* bert_io.c - BERT in HuggingFace's directory format: config.json and model.safetensors.
 *
 * Loading takes the state dicts transformers writes for BertModel (no prefix),
 * BertForSequenceClassification, BertForMaskedLM and BertForPreTraining ("bert." prefix):
 * the embeddings and every encoder layer must be present; the heads may not be (a BertModel
 * has no classifier, BertForMaskedLM no pooler), and a missing head tensor is initialised
 * as transformers would (damo_bert_tensor_loaded says which). Tied or derived copies are
 * checked, not stored: cls.predictions.decoder.weight must equal the word embeddings and
 * cls.predictions.decoder.bias cls.predictions.bias. The position_ids buffer and the
 * next-sentence head (cls.seq_relationship.*) are ignored. Old TensorFlow-converted files
 * name LayerNorm parameters gamma / beta; those are read as weight / bias. */
#include "models/bert.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

static void join(char *buf, size_t cap, const char *dir, const char *file) { snprintf(buf, cap, "%s/%s", dir, file); }

/* ------------------------------------------------------------------ config.json */

/* A string field, if present, must be one of the allowed values. */
static damo_status check_string(damo_config_obj *root, const char *path, const char *key, const char *allowed) {
  const char *v = NULL;
  damo_status st = damo_config_get_string(root, key, 0, &v);
  if (st != DAMO_OK || !v || !strcmp(v, allowed)) return st;
  return damo_error(DAMO_ERR_UNSUPPORTED, "%s: \"%s\" is %s; damo's BERT supports \"%s\"", path, key, v, allowed);
}

/* The id2label names when they are "0" .. "n-1" and not transformers' LABEL_i defaults. */
static char **read_label_names(damo_config_obj *root, int n) {
  damo_config_obj *labels = NULL;
  if (damo_config_get_object(root, "id2label", 0, &labels) != DAMO_OK || !labels || damo_config_count(labels) != n)
    return NULL;
  char **names = calloc((size_t)n, sizeof *names);
  int defaults = 1;
  for (int i = 0; names && i < n; i++) {
    char key[32], dflt[40];
    snprintf(key, sizeof key, "%d", i);
    snprintf(dflt, sizeof dflt, "LABEL_%d", i);
    const char *v = NULL;
    if (damo_config_get_string(labels, key, DAMO_CFG_REQUIRED, &v) != DAMO_OK || !(names[i] = damo_strdup(v))) {
      for (int j = 0; j < i; j++) free(names[j]);
      free(names);
      damo_clear_error(); /* names that are not "0".."n-1" are not used, not an error */
      return NULL;
    }
    defaults &= !strcmp(v, dflt);
  }
  if (names && defaults) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    names = NULL;
  }
  return names;
}

/* HuggingFace writes many keys damo has no use for (architectures, label2id, ...), so the
 * object is not closed: only the keys below are read and checked. */
/* config.json's "quantization" object (bert_int8.c writes it): *int8 is 1 for an int8
 * model (dynamic or static: *q), 0 when absent. */
static damo_status read_quantization(damo_config_obj *root, int *int8, int8_config *q) {
  damo_config_obj *obj = NULL;
  *int8 = 0;
  damo_status st = damo_config_get_object(root, "quantization", 0, &obj);
  if (st != DAMO_OK || !obj) return st;
  st = store_int8_read_json(obj, q);
  *int8 = st == DAMO_OK;
  return st;
}

static damo_status read_config(damo_config *c, damo_bert_config *cfg, char ***label_names, int *int8,
                               int8_config *q8) {
  const char *path = damo_config_source(c);
  damo_config_obj *root;
  damo_status st = damo_config_root(c, &root);
  if (st != DAMO_OK) return st;
  *cfg = damo_bert_config_default();
  const unsigned req = DAMO_CFG_REQUIRED;
  const int big = 1000000000;
  st = check_string(root, path, "model_type", "bert");
  if (st == DAMO_OK) st = check_string(root, path, "hidden_act", "gelu");
  if (st == DAMO_OK) st = check_string(root, path, "position_embedding_type", "absolute");
  if (st == DAMO_OK) st = damo_config_get_int32(root, "vocab_size", 1, big, req, &cfg->vocab_size);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "hidden_size", 1, big, req, &cfg->hidden_size);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "num_hidden_layers", 1, big, req, &cfg->num_hidden_layers);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "num_attention_heads", 1, big, req, &cfg->num_attention_heads);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "intermediate_size", 1, big, req, &cfg->intermediate_size);
  if (st == DAMO_OK)
    st = damo_config_get_int32(root, "max_position_embeddings", 1, big, req, &cfg->max_position_embeddings);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "type_vocab_size", 1, big, 0, &cfg->type_vocab_size);
  if (st == DAMO_OK) st = damo_config_get_float(root, "layer_norm_eps", 1e-30, 1.0, 0, &cfg->layer_norm_eps);
  if (st == DAMO_OK) st = damo_config_get_float(root, "hidden_dropout_prob", 0, 0.99, 0, &cfg->hidden_dropout_prob);
  if (st == DAMO_OK)
    st = damo_config_get_float(root, "attention_probs_dropout_prob", 0, 0.99, 0, &cfg->attention_probs_dropout_prob);
  if (st == DAMO_OK) { /* num_labels: given, else id2label's size, else the default */
    damo_config_obj *labels = NULL;
    if (damo_config_type_of(root, "id2label") == DAMO_CFG_OBJECT &&
        damo_config_get_object(root, "id2label", 0, &labels) == DAMO_OK && damo_config_count(labels) > 0)
      cfg->num_labels = damo_config_count(labels);
    st = damo_config_get_int32(root, "num_labels", 1, big, 0, &cfg->num_labels);
  }
  double pad = 0;
  if (st == DAMO_OK) st = damo_config_get_double(root, "pad_token_id", -HUGE_VAL, HUGE_VAL, 0, &pad);
  if (st == DAMO_OK && pad != 0)
    st = damo_error(DAMO_ERR_UNSUPPORTED, "%s: pad_token_id must be 0 ([PAD] of the BERT vocabularies)", path);
  if (st == DAMO_OK) st = bert_check_config(cfg, path);
  int quantized = 0;
  int8_config q = {0};
  if (st == DAMO_OK) st = read_quantization(root, &quantized, &q);
  if (int8) *int8 = quantized;
  if (q8) *q8 = q;
  /* Names only for a config that passed: a caller frees them on success only. */
  if (st == DAMO_OK && label_names) *label_names = read_label_names(root, cfg->num_labels);
  return st;
}

static damo_status parse_config_names(const char *path, damo_bert_config *cfg, char ***label_names, int *int8,
                                      int8_config *q8) {
  damo_config *c;
  damo_status st = damo_config_read_file(path, &c); /* strict: trailing data, repeated keys */
  if (st != DAMO_OK) return st;
  st = read_config(c, cfg, label_names, int8, q8);
  damo_config_free(c);
  return st;
}

damo_status damo_bert_config_load(const char *path, damo_bert_config *out) {
  if (!path || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_config_load: NULL argument");
  return parse_config_names(path, out, NULL, NULL, NULL);
}

damo_status damo_bert_config_read(damo_config *c, damo_bert_config *out) {
  if (!c || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_config_read: NULL argument");
  return read_config(c, out, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ load */

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* The model's name for a stored one: without "bert.", gamma/beta as weight/bias. */
static void canonical_name(const char *stored, char *name, size_t cap) {
  const char *s = starts_with(stored, "bert.") ? stored + 5 : stored;
  snprintf(name, cap, "%s", s);
  size_t len = strlen(name);
  if (len > 6 && !strcmp(name + len - 6, ".gamma")) snprintf(name + len - 6, cap - (len - 6), ".weight");
  else if (len > 5 && !strcmp(name + len - 5, ".beta")) snprintf(name + len - 5, cap - (len - 5), ".bias");
}

static int is_ignored(const char *name) {
  return !strcmp(name, "embeddings.position_ids") || starts_with(name, "cls.seq_relationship.");
}

static damo_status take_tensor(damo_bert *m, int i, const damo_tensor *t, const char *path, const char *stored) {
  char config[160];
  snprintf(config, sizeof config, "hidden_size %d, intermediate_size %d, vocab_size %d, num_labels %d",
           m->config.hidden_size, m->config.intermediate_size, m->config.vocab_size, m->config.num_labels);
  return param_store_take(&m->p, i, t, path, stored, config);
}

/* A tied or derived copy must equal the tensor it copies. */
static damo_status check_copy(const damo_bert *m, const damo_tensor *t, const char *of, const char *path,
                              const char *stored) {
  const damo_tensor *want = damo_bert_param(m, of);
  if (t->dtype != DAMO_F32 || t->ndim != want->ndim || memcmp(t->shape, want->shape, (size_t)t->ndim * sizeof *t->shape) ||
      memcmp(t->data, want->data, (size_t)damo_tensor_numel(want) * sizeof(float)))
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: tensor '%s' differs from '%s'; only a decoder tied to it is supported",
                      path, stored, of);
  return DAMO_OK;
}

/* An I8 tensor and its NAME.scale (and, static, its input's quantisation): only in an int8
 * model, only where int8 applies. */
static damo_status take_int8(damo_bert *m, int i, const damo_tensor_dict *d, int k, const char *path) {
  const char *stored = d->names[k];
  const damo_tensor *q = d->tensors[k], *want = m->p.values[i];
  char scale_name[192], got[64], expected[64];
  snprintf(scale_name, sizeof scale_name, "%s.scale", stored);
  const damo_tensor *scale = damo_tensor_dict_get(d, scale_name);
  if (!m->q8.q)
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' is I8 but config.json has no \"quantization\" object", path,
                      stored);
  if (!bert_int8_tensor(m, i))
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' is I8; dynamic int8 covers the encoder's projections and "
                      "the classifier only", path, stored);
  if (q->ndim != 2 || memcmp(q->shape, want->shape, 2 * sizeof *q->shape))
    return damo_error(DAMO_ERR_FORMAT, "%s: int8 tensor '%s' is %s, expected %s", path, stored,
                      damo_shape_string(q->ndim, q->shape, got, sizeof got),
                      damo_shape_string(want->ndim, want->shape, expected, sizeof expected));
  if (!scale || scale->dtype != DAMO_F32 || scale->ndim != 1 || scale->shape[0] != want->shape[0])
    return damo_error(DAMO_ERR_FORMAT, "%s: int8 tensor '%s' needs '%s', F32 of shape (%lld,)", path, stored, scale_name,
                      (long long)want->shape[0]);
  damo_status st = bert_int8_take(m, i, (const int8_t *)q->data, damo_tensor_f32(scale), path);
  if (st != DAMO_OK || !store_int8_is_static(&m->q8) || bert_int8_tensor(m, i) != 1) return st; /* a table: none */
  return store_int8_take_input(&m->q8, m->p.n_tensors, i, d, stored, path);
}

static damo_status fill_from_dict(damo_bert *m, const damo_tensor_dict *d, const char *path) {
  damo_status st = DAMO_OK;
  const damo_tensor *decoder_w = NULL, *decoder_b = NULL;
  const char *decoder_w_name = NULL, *decoder_b_name = NULL;
  char name[160];
  for (int k = 0; k < d->count && st == DAMO_OK; k++) {
    const char *stored = d->names[k];
    canonical_name(stored, name, sizeof name);
    if (is_ignored(name)) continue;
    size_t len = strlen(stored);
    if (len > 6 && !strcmp(stored + len - 6, ".scale")) { /* read with its int8 tensor */
      char base[160];
      snprintf(base, sizeof base, "%.*s", (int)(len - 6), stored);
      const damo_tensor *owner = damo_tensor_dict_get(d, base);
      if (!owner || owner->dtype != DAMO_I8)
        st = damo_error(DAMO_ERR_FORMAT, "%s: '%s' is the scale of no int8 tensor", path, stored);
      continue;
    }
    if (store_int8_input_suffix(stored)) { /* read with its static int8 tensor */
      st = store_int8_check_input(&m->q8, d, stored, path);
      continue;
    }
    if (!strcmp(name, "cls.predictions.decoder.weight")) {
      decoder_w = d->tensors[k], decoder_w_name = stored;
      continue;
    }
    if (!strcmp(name, "cls.predictions.decoder.bias")) {
      decoder_b = d->tensors[k], decoder_b_name = stored;
      continue;
    }
    int i = param_store_index(&m->p, name);
    if (i < 0)
      st = damo_error(DAMO_ERR_FORMAT, "%s: unexpected tensor '%s' (not part of a %d-layer BERT)", path, stored,
                      m->config.num_hidden_layers);
    else if (m->loaded[i])
      st = damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' appears twice (with and without \"bert.\" or as gamma/beta)",
                      path, name);
    else if (d->tensors[k]->dtype == DAMO_I8) {
      if ((st = take_int8(m, i, d, k, path)) == DAMO_OK) m->loaded[i] = 1;
    } else if ((st = take_tensor(m, i, d->tensors[k], path, stored)) == DAMO_OK)
      m->loaded[i] = 1;
  }
  for (int i = 0; i < m->first_head && st == DAMO_OK; i++)
    if (!m->loaded[i]) st = damo_error(DAMO_ERR_FORMAT, "%s: missing tensor '%s'", path, m->p.names[i]);
  if (st == DAMO_OK && decoder_w) st = check_copy(m, decoder_w, "embeddings.word_embeddings.weight", path, decoder_w_name);
  if (st == DAMO_OK && decoder_b) {
    if (!m->loaded[m->p.n_tensors - 1]) { /* only the decoder's copy of the bias was stored */
      st = take_tensor(m, m->p.n_tensors - 1, decoder_b, path, decoder_b_name);
      if (st == DAMO_OK) m->loaded[m->p.n_tensors - 1] = 1;
    } else {
      st = check_copy(m, decoder_b, "cls.predictions.bias", path, decoder_b_name);
    }
  }
  return st;
}

damo_status damo_bert_load(const char *dir, int num_labels, uint64_t seed, damo_bert **out) {
  if (!dir || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_load: NULL argument");
  *out = NULL;
  char path[4096];
  damo_bert_config cfg;
  join(path, sizeof path, dir, "config.json");
  char **names = NULL;
  int int8 = 0;
  int8_config q8 = {0};
  damo_status st = parse_config_names(path, &cfg, &names, &int8, &q8);
  if (st != DAMO_OK) return st;
  const int stored_labels = cfg.num_labels;
  if (num_labels > 0) cfg.num_labels = num_labels;
  /* The weights first (their size is the file's), and the config's sizes checked against
   * them before the parameter block they declare is allocated: the embeddings and each
   * layer's 4 H^2 + 2 H I matrices are a lower bound of what any accepted file holds. Far
   * more than the file holds (twice, plus 1M) is refused here; a near miss gets
   * fill_from_dict's message naming the missing or mis-shaped tensor. */
  char weights[4096];
  join(weights, sizeof weights, dir, "model.safetensors");
  damo_tensor_dict *d = NULL;
  st = damo_safetensors_load(weights, &d);
  const double H = cfg.hidden_size;
  const double declared = ((double)cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * H +
                          (double)cfg.num_hidden_layers * (4.0 * H * H + 2.0 * H * cfg.intermediate_size);
  double held = 0;
  for (int i = 0; st == DAMO_OK && i < d->count; i++) held += (double)damo_tensor_numel(d->tensors[i]);
  if (st == DAMO_OK && declared > 2 * held + (1 << 20))
    st = damo_error(DAMO_ERR_FORMAT, "%s: the sizes (num_hidden_layers %d, hidden_size %d, intermediate_size %d, "
                    "vocab_size %d, max_position_embeddings %d) need at least %.0f weights but %s holds %.0f", path,
                    cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size,
                    cfg.max_position_embeddings, declared, weights, held);
  damo_bert *m = NULL;
  if (st != DAMO_OK || (st = bert_alloc(&cfg, &m)) != DAMO_OK) {
    for (int i = 0; names && i < stored_labels; i++) free(names[i]);
    free(names);
    damo_tensor_dict_free(d);
    return st;
  }
  if (names && stored_labels == cfg.num_labels) m->label_names = names;
  else {
    for (int i = 0; names && i < stored_labels; i++) free(names[i]);
    free(names);
  }
  st = int8 ? bert_int8_begin(m, &q8) : DAMO_OK;
  if (st == DAMO_OK) st = fill_from_dict(m, d, weights);
  damo_tensor_dict_free(d);
  if (st != DAMO_OK) {
    damo_bert_free(m);
    return st;
  }
  damo_rng rng;
  damo_rng_seed(&rng, seed);
  for (int i = m->first_head; i < m->p.n_tensors; i++)
    if (!m->loaded[i]) bert_init_tensor(m, i, &rng);
  *out = m;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ save */

static cJSON *config_json(const damo_bert_config *c, char *const *label_names) {
  cJSON *root = cJSON_CreateObject();
  cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
  if (arch) cJSON_AddItemToArray(arch, cJSON_CreateString("BertForSequenceClassification"));
  cJSON_AddStringToObject(root, "model_type", "bert");
  cJSON_AddNumberToObject(root, "vocab_size", c->vocab_size);
  cJSON_AddNumberToObject(root, "hidden_size", c->hidden_size);
  cJSON_AddNumberToObject(root, "num_hidden_layers", c->num_hidden_layers);
  cJSON_AddNumberToObject(root, "num_attention_heads", c->num_attention_heads);
  cJSON_AddNumberToObject(root, "intermediate_size", c->intermediate_size);
  cJSON_AddStringToObject(root, "hidden_act", "gelu");
  param_store_json_float(root, "hidden_dropout_prob", c->hidden_dropout_prob);
  param_store_json_float(root, "attention_probs_dropout_prob", c->attention_probs_dropout_prob);
  cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_position_embeddings);
  cJSON_AddNumberToObject(root, "type_vocab_size", c->type_vocab_size);
  param_store_json_float(root, "layer_norm_eps", c->layer_norm_eps);
  cJSON_AddNumberToObject(root, "initializer_range", 0.02);
  cJSON_AddNumberToObject(root, "pad_token_id", 0);
  cJSON_AddStringToObject(root, "position_embedding_type", "absolute");
  cJSON *id2label = cJSON_AddObjectToObject(root, "id2label"), *label2id = cJSON_AddObjectToObject(root, "label2id");
  for (int i = 0; i < c->num_labels && id2label && label2id; i++) {
    char key[32], label[128];
    snprintf(key, sizeof key, "%d", i);
    if (label_names) snprintf(label, sizeof label, "%s", label_names[i]);
    else snprintf(label, sizeof label, "LABEL_%d", i);
    cJSON_AddStringToObject(id2label, key, label);
    cJSON_AddNumberToObject(label2id, label, i);
  }
  cJSON_AddStringToObject(root, "torch_dtype", "float32");
  return root;
}

/* The encoder and pooler under "bert." as the task models name them; the heads as they are. */
static void file_name(const param_store *s, int i, char *name, size_t cap) {
  const char *n = s->names[i];
  int head = starts_with(n, "classifier.") || starts_with(n, "cls.");
  snprintf(name, cap, "%s%s", head ? "" : "bert.", n);
}

damo_status damo_bert_save(const damo_bert *m, const char *dir) {
  if (!m || !dir) return damo_error(DAMO_ERR_INVALID_ARG, "bert_save: NULL argument");
  cJSON *config = config_json(&m->config, m->label_names);
  if (!config) return damo_error(DAMO_ERR_NOMEM, "bert_save: out of memory");
  bert_int8_json(m, config);
  return param_store_save_dir_with(&m->p, dir, file_name, config, DAMO_F32, m->q8.q ? bert_int8_writer : NULL, m);
}
