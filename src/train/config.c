/* config.c - the model config (config.json): a Keras-like description of a Sequential
 * model (input shape, layers) and of how to train it (loss, optimizer, metrics, fit
 * defaults). Reading is strict: an unknown key, layer type or value names the layer and
 * what was expected, so a typo never silently changes a model. Schema: docs/model-config.md. */
#include "optim/optim.h"
#include "train/history.h"
#include "train/model.h"

#include <math.h>
#include <stdio.h>

/* The names of the DAMO_METRIC_* bits in "metrics". */
static const struct {
  const char *name;
  int bit;
} metric_names[] = {{"accuracy", DAMO_METRIC_ACCURACY},
                    {"precision", DAMO_METRIC_PRECISION},
                    {"recall", DAMO_METRIC_RECALL},
                    {"f1", DAMO_METRIC_F1},
                    {"auc", DAMO_METRIC_AUC}};

/* ------------------------------------------------------------------ writing */

static void add_shape(cJSON *obj, const char *key, int ndim, const int64_t *shape) {
  cJSON *arr = cJSON_AddArrayToObject(obj, key);
  for (int i = 0; i < ndim; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)shape[i]));
}

static const char *optimizer_name(damo_optimizer_kind k) {
  return k == DAMO_OPT_SGD ? "sgd" : k == DAMO_OPT_ADAM ? "adam" : "adamw";
}
static const char *schedule_name(damo_schedule_kind k) {
  return k == DAMO_SCHED_CONSTANT ? "constant" : k == DAMO_SCHED_STEP ? "step" : "cosine";
}

cJSON *damo_model_to_json(const damo_model *m) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "format", "damo.sequential");
  cJSON_AddStringToObject(root, "damo_version", DAMO_VERSION);
  add_shape(root, "input_shape", m->in_ndim, m->in_shape);
  cJSON *layers = cJSON_AddArrayToObject(root, "layers");
  for (int i = 0; i < m->n_layers; i++) {
    const damo_layer *l = m->layers[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", l->type->type);
    cJSON_AddStringToObject(o, "name", l->name);
    if (l->type == &damo_layer_dense) {
      cJSON_AddNumberToObject(o, "units", l->units);
      cJSON_AddStringToObject(o, "activation", damo_activation_name(l->act));
      cJSON_AddStringToObject(o, "kernel_initializer", damo_init_name(l->kernel_init));
      cJSON_AddBoolToObject(o, "use_bias", l->use_bias);
    } else if (l->type == &damo_layer_activation) {
      cJSON_AddStringToObject(o, "activation", damo_activation_name(l->act));
    } else if (l->type == &damo_layer_dropout) {
      cJSON_AddNumberToObject(o, "rate", l->rate);
    } else if (l->type == &damo_layer_rescaling) {
      cJSON_AddNumberToObject(o, "scale", l->scale);
      cJSON_AddNumberToObject(o, "offset", l->offset);
    } else if (l->type == &damo_layer_reshape) {
      add_shape(o, "target_shape", l->out_ndim, l->out_shape);
    } else if (l->type == &damo_layer_conv2d) {
      cJSON_AddNumberToObject(o, "filters", l->units);
      int64_t ks[2] = {l->kernel[0], l->kernel[1]}, ss[2] = {l->stride[0], l->stride[1]};
      add_shape(o, "kernel_size", 2, ks);
      add_shape(o, "strides", 2, ss);
      cJSON_AddStringToObject(o, "padding", l->padding_same ? "same" : "valid");
      cJSON_AddStringToObject(o, "activation", damo_activation_name(l->act));
      cJSON_AddStringToObject(o, "kernel_initializer", damo_init_name(l->kernel_init));
      cJSON_AddBoolToObject(o, "use_bias", l->use_bias);
    } else if (l->type == &damo_layer_max_pool2d || l->type == &damo_layer_avg_pool2d) {
      int64_t ks[2] = {l->kernel[0], l->kernel[1]}, ss[2] = {l->stride[0], l->stride[1]};
      add_shape(o, "pool_size", 2, ks);
      add_shape(o, "strides", 2, ss);
      cJSON_AddStringToObject(o, "padding", l->padding_same ? "same" : "valid");
    } else if (l->type == &damo_layer_batch_norm) {
      cJSON_AddNumberToObject(o, "momentum", l->momentum);
      cJSON_AddNumberToObject(o, "epsilon", l->epsilon);
    } else if (l->type == &damo_layer_lstm || l->type == &damo_layer_gru) {
      cJSON_AddNumberToObject(o, "units", l->units);
      cJSON_AddBoolToObject(o, "return_sequences", l->return_sequences);
    } else if (l->type == &damo_layer_embedding) {
      cJSON_AddNumberToObject(o, "input_dim", l->input_dim);
      cJSON_AddNumberToObject(o, "output_dim", l->units);
      cJSON_AddBoolToObject(o, "mask_zero", l->mask_zero);
    } else if (l->type == &damo_layer_bidirectional) {
      cJSON *inner = cJSON_AddObjectToObject(o, "layer");
      cJSON_AddStringToObject(inner, "type", l->inner->type->type);
      cJSON_AddNumberToObject(inner, "units", l->inner->units);
      cJSON_AddBoolToObject(inner, "return_sequences", l->inner->return_sequences);
      cJSON_AddStringToObject(o, "merge_mode", damo_merge_mode_name(l->merge));
    }
    cJSON_AddItemToArray(layers, o);
  }
  if (m->has_compile_options) {
    const damo_optimizer_config *c = &m->copt.optimizer;
    cJSON_AddStringToObject(root, "loss", damo_loss_name(m->copt.loss));
    cJSON *o = cJSON_AddObjectToObject(root, "optimizer");
    cJSON_AddStringToObject(o, "type", optimizer_name(c->kind));
    cJSON_AddNumberToObject(o, "learning_rate", c->lr);
    if (c->kind == DAMO_OPT_SGD) {
      cJSON_AddNumberToObject(o, "momentum", c->momentum);
      cJSON_AddBoolToObject(o, "nesterov", c->nesterov);
    } else {
      /* the values in force: a 0 ("default" in C) would not be read back */
      cJSON_AddNumberToObject(o, "beta_1", c->beta1 != 0.0f ? c->beta1 : DAMO_ADAM_DEFAULT_BETA1);
      cJSON_AddNumberToObject(o, "beta_2", c->beta2 != 0.0f ? c->beta2 : DAMO_ADAM_DEFAULT_BETA2);
      cJSON_AddNumberToObject(o, "epsilon", c->eps != 0.0f ? c->eps : DAMO_ADAM_DEFAULT_EPS);
    }
    cJSON_AddNumberToObject(o, "weight_decay", c->weight_decay);
    cJSON_AddNumberToObject(o, "clipnorm", c->clip_norm);
    cJSON *s = cJSON_AddObjectToObject(o, "schedule");
    cJSON_AddStringToObject(s, "type", schedule_name(c->schedule.kind));
    cJSON_AddNumberToObject(s, "warmup_steps", (double)c->schedule.warmup_steps);
    if (c->schedule.kind == DAMO_SCHED_STEP) {
      cJSON_AddNumberToObject(s, "step_size", (double)c->schedule.step_size);
      cJSON_AddNumberToObject(s, "gamma", c->schedule.gamma != 0.0f ? c->schedule.gamma : DAMO_DEFAULT_GAMMA);
    } else if (c->schedule.kind == DAMO_SCHED_COSINE) {
      cJSON_AddNumberToObject(s, "total_steps", (double)c->schedule.total_steps);
      cJSON_AddNumberToObject(s, "min_lr", c->schedule.min_lr);
    }
    cJSON *metrics = cJSON_AddArrayToObject(root, "metrics");
    for (size_t k = 0; k < sizeof metric_names / sizeof *metric_names; k++)
      if (m->copt.metrics & metric_names[k].bit) cJSON_AddItemToArray(metrics, cJSON_CreateString(metric_names[k].name));
  }
  if (m->fit_defaults) cJSON_AddItemToObject(root, "fit", cJSON_Duplicate(m->fit_defaults, 1));
  if (m->n_class_names)
    cJSON_AddItemToObject(root, "class_names",
                          cJSON_CreateStringArray((const char *const *)m->class_names, m->n_class_names));
  return root;
}

/* ------------------------------------------------------------------ reading */

typedef struct reader {
  const char *source; /* file name for messages */
  char where[160];    /* "layer 2 ('dense_1')" */
} reader;

static damo_status fail(const reader *r, damo_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static damo_status fail(const reader *r, damo_status code, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return damo_error(code, "%s: %s%s%s", r->source, r->where, r->where[0] ? ": " : "", msg);
}

/* Every key of obj must be in the space-separated list `known`. The list is walked word by
 * word (a substring search would match "" everywhere and never advance). */
static damo_status check_keys(const reader *r, const cJSON *obj, const char *known) {
  for (const cJSON *it = obj->child; it; it = it->next) {
    size_t n = strlen(it->string);
    int found = 0;
    for (const char *p = known; *p && !found;) {
      size_t w = strcspn(p, " ");
      found = w == n && n > 0 && memcmp(p, it->string, n) == 0;
      p += w;
      while (*p == ' ') p++;
    }
    if (!found && n == 0) return fail(r, DAMO_ERR_FORMAT, "empty key \"\" (known keys: %s)", known);
    if (!found) return fail(r, DAMO_ERR_FORMAT, "unknown key '%s' (known keys: %s)", it->string, known);
  }
  return DAMO_OK;
}

static damo_status get_number(const reader *r, const cJSON *obj, const char *key, double *out, int required) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) return required ? fail(r, DAMO_ERR_FORMAT, "missing '%s'", key) : DAMO_OK;
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return fail(r, DAMO_ERR_FORMAT, "'%s' must be a finite number", key);
  *out = v->valuedouble;
  return DAMO_OK;
}

static damo_status get_int(const reader *r, const cJSON *obj, const char *key, int64_t *out, int required) {
  double d = (double)*out;
  damo_status st = get_number(r, obj, key, &d, required);
  if (st != DAMO_OK) return st;
  if (d != floor(d) || fabs(d) > 9e15) return fail(r, DAMO_ERR_FORMAT, "'%s' must be an integer, got %g", key, d);
  *out = (int64_t)d;
  return DAMO_OK;
}

/* Leaves *out as it is (the default) when the key is absent. */
static damo_status get_float(const reader *r, const cJSON *obj, const char *key, float *out) {
  double d = (double)*out;
  damo_status st = get_number(r, obj, key, &d, 0);
  *out = (float)d;
  return st;
}

/* A number within lo..hi (each end excluded when its *_open flag is set); absent leaves *out
 * as it is. The message names the key, the range and the value. */
static damo_status get_float_limits(const reader *r, const cJSON *obj, const char *key, double lo, int lo_open,
                                    double hi, int hi_open, float *out) {
  if (!cJSON_GetObjectItemCaseSensitive(obj, key)) return DAMO_OK;
  double d = (double)*out;
  damo_status st = get_number(r, obj, key, &d, 0);
  if (st != DAMO_OK) return st;
  if (lo_open ? !(d > lo) : !(d >= lo)) goto bad;
  if (hi_open ? !(d < hi) : !(d <= hi)) goto bad;
  *out = (float)d;
  return DAMO_OK;
bad:
  return fail(r, DAMO_ERR_FORMAT, "'%s' must be in %c%g, %g%c, got %g", key, lo_open ? '(' : '[', lo, hi,
              hi_open ? ')' : ']', d);
}

static damo_status get_string(const reader *r, const cJSON *obj, const char *key, const char **out, int required) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) return required ? fail(r, DAMO_ERR_FORMAT, "missing '%s'", key) : DAMO_OK;
  if (!cJSON_IsString(v)) return fail(r, DAMO_ERR_FORMAT, "'%s' must be a string", key);
  *out = v->valuestring;
  return DAMO_OK;
}

static damo_status get_bool(const reader *r, const cJSON *obj, const char *key, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) return DAMO_OK;
  if (!cJSON_IsBool(v)) return fail(r, DAMO_ERR_FORMAT, "'%s' must be true or false", key);
  *out = cJSON_IsTrue(v);
  return DAMO_OK;
}

/* An integer or a list of integers (Keras accepts kernel_size 3 or [3, 3]); a single number
 * is repeated `fill` times. Leaves out as it is when the key is absent and not required. */
static damo_status get_pair_or_list(const reader *r, const cJSON *obj, const char *key, int64_t *out, int *n, int fill,
                                    int max, int required) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) return required ? fail(r, DAMO_ERR_FORMAT, "missing '%s'", key) : DAMO_OK;
  if (cJSON_IsNumber(v)) {
    if (v->valuedouble < 1 || v->valuedouble != floor(v->valuedouble) || v->valuedouble > 1e9)
      return fail(r, DAMO_ERR_FORMAT, "'%s' must be a positive integer", key);
    for (int i = 0; i < fill; i++) out[i] = (int64_t)v->valuedouble;
    *n = fill;
    return DAMO_OK;
  }
  int count = cJSON_GetArraySize(v);
  if (!cJSON_IsArray(v) || count < 1 || count > max || (fill > 1 && count != fill))
    return fail(r, DAMO_ERR_FORMAT, "'%s' must be a positive integer or a list of %d", key, fill > 1 ? fill : max);
  for (int i = 0; i < count; i++) {
    const cJSON *d = cJSON_GetArrayItem(v, i);
    if (!cJSON_IsNumber(d) || d->valuedouble < 1 || d->valuedouble != floor(d->valuedouble) || d->valuedouble > 1e9)
      return fail(r, DAMO_ERR_FORMAT, "'%s' entry %d must be a positive integer", key, i);
    out[i] = (int64_t)d->valuedouble;
  }
  *n = count;
  return DAMO_OK;
}

static damo_status get_padding(const reader *r, const cJSON *obj, int *same) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "padding");
  if (!v) return DAMO_OK;
  if (cJSON_IsString(v) && !strcmp(v->valuestring, "same")) *same = 1;
  else if (cJSON_IsString(v) && !strcmp(v->valuestring, "valid")) *same = 0;
  else return fail(r, DAMO_ERR_FORMAT, "'padding' must be \"same\" or \"valid\"");
  return DAMO_OK;
}

#define TRY(expr)                                                                                                      \
  do {                                                                                                                 \
    damo_status st_ = (expr);                                                                                          \
    if (st_ != DAMO_OK) return st_;                                                                                    \
  } while (0)

static damo_status parse_layer(reader *r, const cJSON *o, damo_layer **out) {
  *out = NULL;
  if (!cJSON_IsObject(o)) return fail(r, DAMO_ERR_FORMAT, "a layer must be a JSON object");
  const char *type = NULL, *name = NULL, *act = NULL;
  TRY(get_string(r, o, "type", &type, 1));
  TRY(get_string(r, o, "name", &name, 0));
  const damo_layer_type *lt = damo_layer_type_find(type);
  if (!lt) return fail(r, DAMO_ERR_NOT_FOUND, "unknown layer type '%s' (known: %s)", type, damo_layer_type_names());
  damo_activation a = DAMO_ACT_NONE;
  damo_layer *l = NULL;
  if (lt == &damo_layer_dense) {
    TRY(check_keys(r, o, "type name units activation kernel_initializer use_bias"));
    int64_t units = 0;
    const char *init = "glorot_uniform";
    int use_bias = 1;
    TRY(get_int(r, o, "units", &units, 1));
    TRY(get_string(r, o, "activation", &act, 0));
    TRY(get_string(r, o, "kernel_initializer", &init, 0));
    TRY(get_bool(r, o, "use_bias", &use_bias));
    if (units <= 0 || units > INT32_MAX) return fail(r, DAMO_ERR_FORMAT, "'units' must be a positive integer, got %lld", (long long)units);
    damo_init ki;
    if (damo_activation_parse(act, &a) != DAMO_OK || damo_init_parse(init, &ki) != DAMO_OK)
      return fail(r, DAMO_ERR_FORMAT, "%s", damo_last_error());
    l = damo_dense_ex((int)units, a, ki, use_bias);
  } else if (lt == &damo_layer_activation) {
    TRY(check_keys(r, o, "type name activation"));
    TRY(get_string(r, o, "activation", &act, 1));
    if (damo_activation_parse(act, &a) != DAMO_OK) return fail(r, DAMO_ERR_FORMAT, "%s", damo_last_error());
    l = damo_activation_layer(a);
  } else if (lt == &damo_layer_dropout) {
    TRY(check_keys(r, o, "type name rate"));
    double rate = 0;
    TRY(get_number(r, o, "rate", &rate, 1));
    if (!(rate >= 0 && rate < 1)) return fail(r, DAMO_ERR_FORMAT, "'rate' must be in [0, 1), got %g", rate);
    l = damo_dropout_layer((float)rate);
  } else if (lt == &damo_layer_reshape) {
    TRY(check_keys(r, o, "type name target_shape"));
    int64_t shape[DAMO_MAX_DIMS];
    int nd = 0;
    TRY(get_pair_or_list(r, o, "target_shape", shape, &nd, 1, DAMO_MAX_DIMS - 1, 1));
    l = damo_reshape_layer(nd, shape);
  } else if (lt == &damo_layer_conv2d) {
    TRY(check_keys(r, o, "type name filters kernel_size strides padding activation kernel_initializer use_bias"));
    int64_t filters = 0, ks[2] = {0, 0}, ss[2] = {1, 1};
    int nd = 0, use_bias = 1, same = 0;
    const char *init = "glorot_uniform";
    TRY(get_int(r, o, "filters", &filters, 1));
    TRY(get_pair_or_list(r, o, "kernel_size", ks, &nd, 2, 2, 1));
    TRY(get_pair_or_list(r, o, "strides", ss, &nd, 2, 2, 0));
    TRY(get_padding(r, o, &same));
    TRY(get_string(r, o, "activation", &act, 0));
    TRY(get_string(r, o, "kernel_initializer", &init, 0));
    TRY(get_bool(r, o, "use_bias", &use_bias));
    damo_init ki;
    if (damo_activation_parse(act, &a) != DAMO_OK || damo_init_parse(init, &ki) != DAMO_OK)
      return fail(r, DAMO_ERR_FORMAT, "%s", damo_last_error());
    if (filters <= 0 || filters > INT32_MAX) return fail(r, DAMO_ERR_FORMAT, "'filters' must be a positive integer");
    l = damo_conv2d_layer((int)filters, (int)ks[0], (int)ks[1], 1, same, a);
    if (l) {
      l->stride[0] = (int)ss[0];
      l->stride[1] = (int)ss[1];
      l->kernel_init = ki;
      l->use_bias = use_bias;
    }
  } else if (lt == &damo_layer_max_pool2d || lt == &damo_layer_avg_pool2d) {
    TRY(check_keys(r, o, "type name pool_size strides padding"));
    int64_t ks[2] = {2, 2}, ss[2] = {0, 0};
    int nd = 0, same = 0;
    TRY(get_pair_or_list(r, o, "pool_size", ks, &nd, 2, 2, 0));
    TRY(get_pair_or_list(r, o, "strides", ss, &nd, 2, 2, 0));
    TRY(get_padding(r, o, &same));
    l = lt == &damo_layer_max_pool2d ? damo_max_pool2d_layer((int)ks[0], 0, same) : damo_avg_pool2d_layer((int)ks[0], 0, same);
    if (l) {
      l->kernel[1] = (int)ks[1];
      l->stride[0] = ss[0] > 0 ? (int)ss[0] : (int)ks[0]; /* Keras: strides default to pool_size */
      l->stride[1] = ss[1] > 0 ? (int)ss[1] : (int)ks[1];
    }
  } else if (lt == &damo_layer_global_avg_pool2d) {
    TRY(check_keys(r, o, "type name"));
    l = damo_global_avg_pool2d_layer();
  } else if (lt == &damo_layer_batch_norm) {
    TRY(check_keys(r, o, "type name momentum epsilon"));
    float momentum = 0.99f, eps = 1e-3f;
    TRY(get_float_limits(r, o, "momentum", 0, 0, 1, 0, &momentum));
    TRY(get_float_limits(r, o, "epsilon", 0, 1, 1, 0, &eps));
    l = damo_batch_norm_layer(momentum, eps);
  } else if (lt == &damo_layer_lstm || lt == &damo_layer_gru) {
    TRY(check_keys(r, o, "type name units return_sequences"));
    int64_t units = 0;
    int seq = 0;
    TRY(get_int(r, o, "units", &units, 1));
    TRY(get_bool(r, o, "return_sequences", &seq));
    if (units <= 0 || units > INT32_MAX) return fail(r, DAMO_ERR_FORMAT, "'units' must be a positive integer, got %lld", (long long)units);
    l = lt == &damo_layer_gru ? damo_gru_layer((int)units, seq) : damo_lstm_layer((int)units, seq);
  } else if (lt == &damo_layer_embedding) {
    TRY(check_keys(r, o, "type name input_dim output_dim mask_zero"));
    int64_t input_dim = 0, output_dim = 0;
    int mask_zero = 0;
    TRY(get_int(r, o, "input_dim", &input_dim, 1));
    TRY(get_int(r, o, "output_dim", &output_dim, 1));
    TRY(get_bool(r, o, "mask_zero", &mask_zero));
    if (input_dim <= 0 || input_dim > INT32_MAX || output_dim <= 0 || output_dim > INT32_MAX)
      return fail(r, DAMO_ERR_FORMAT, "'input_dim' and 'output_dim' must be positive integers");
    l = damo_embedding_layer((int)input_dim, (int)output_dim, mask_zero);
  } else if (lt == &damo_layer_bidirectional) {
    TRY(check_keys(r, o, "type name layer merge_mode"));
    const char *merge = "concat";
    TRY(get_string(r, o, "merge_mode", &merge, 0));
    damo_merge_mode mode = DAMO_MERGE_CONCAT;
    while (strcmp(damo_merge_mode_name(mode), merge) && mode < DAMO_MERGE_AVE) mode++;
    if (strcmp(damo_merge_mode_name(mode), merge))
      return fail(r, DAMO_ERR_FORMAT, "unknown merge_mode '%s' (expected concat, sum, mul or ave)", merge);
    const cJSON *inner_o = cJSON_GetObjectItemCaseSensitive(o, "layer");
    if (!inner_o) return fail(r, DAMO_ERR_FORMAT, "missing 'layer' (the lstm or gru layer to run both ways)");
    damo_layer *inner;
    TRY(parse_layer(r, inner_o, &inner));
    if (inner->type != &damo_layer_lstm && inner->type != &damo_layer_gru) {
      const char *got = inner->type->type;
      damo_layer_free(inner);
      return fail(r, DAMO_ERR_FORMAT, "'layer' must be an lstm or gru layer, got %s", got);
    }
    l = damo_bidirectional_layer(inner, mode);
  } else if (lt == &damo_layer_global_avg_pool1d || lt == &damo_layer_global_max_pool1d) {
    TRY(check_keys(r, o, "type name"));
    l = lt == &damo_layer_global_max_pool1d ? damo_global_max_pool1d_layer() : damo_global_avg_pool1d_layer();
  } else if (lt == &damo_layer_flatten) {
    TRY(check_keys(r, o, "type name"));
    l = damo_flatten();
  } else {
    TRY(check_keys(r, o, "type name scale offset"));
    double scale = 1, offset = 0;
    TRY(get_number(r, o, "scale", &scale, 1));
    TRY(get_number(r, o, "offset", &offset, 0));
    l = damo_rescaling((float)scale, (float)offset);
  }
  if (!l) return DAMO_ERR_NOMEM;
  if (name) damo_layer_set_name(l, name);
  *out = l;
  return DAMO_OK;
}

static damo_status parse_optimizer(reader *r, const cJSON *o, damo_optimizer_config *c) {
  snprintf(r->where, sizeof r->where, "optimizer");
  if (cJSON_IsString(o)) { /* "optimizer": "adam" takes the defaults */
    if (!strcmp(o->valuestring, "adam")) *c = damo_adam(1e-3f);
    else if (!strcmp(o->valuestring, "adamw")) *c = damo_adamw(1e-3f, 0.01f);
    else if (!strcmp(o->valuestring, "sgd")) *c = damo_sgd(1e-2f, 0, 0);
    else return fail(r, DAMO_ERR_FORMAT, "unknown optimizer '%s' (expected sgd, adam or adamw)", o->valuestring);
    return DAMO_OK;
  }
  if (!cJSON_IsObject(o)) return fail(r, DAMO_ERR_FORMAT, "must be a name or an object");
  TRY(check_keys(r, o, "type learning_rate momentum nesterov beta_1 beta_2 epsilon weight_decay clipnorm schedule"));
  const char *type = NULL;
  TRY(get_string(r, o, "type", &type, 1));
  if (!strcmp(type, "adam")) *c = damo_adam(1e-3f);
  else if (!strcmp(type, "adamw")) *c = damo_adamw(1e-3f, 0.01f);
  else if (!strcmp(type, "sgd")) *c = damo_sgd(1e-2f, 0, 0);
  else return fail(r, DAMO_ERR_FORMAT, "unknown optimizer type '%s' (expected sgd, adam or adamw)", type);
  /* Absent keys keep the type's defaults; a value given must be valid (the optimizer reads
   * 0 as "the default" for some fields, so a written 0 would otherwise be replaced). */
  TRY(get_float_limits(r, o, "learning_rate", 0, 1, 1e6, 0, &c->lr));
  TRY(get_float_limits(r, o, "momentum", 0, 0, 1, 0, &c->momentum));
  TRY(get_bool(r, o, "nesterov", &c->nesterov));
  TRY(get_float_limits(r, o, "beta_1", 0, 1, 1, 1, &c->beta1));
  TRY(get_float_limits(r, o, "beta_2", 0, 1, 1, 1, &c->beta2));
  TRY(get_float_limits(r, o, "epsilon", 0, 1, 1, 0, &c->eps));
  TRY(get_float_limits(r, o, "weight_decay", 0, 0, 1e6, 0, &c->weight_decay));
  TRY(get_float_limits(r, o, "clipnorm", 0, 0, 1e30, 0, &c->clip_norm));
  if (c->nesterov && c->momentum == 0.0f) return fail(r, DAMO_ERR_FORMAT, "'nesterov' needs a 'momentum' above 0");
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "schedule");
  if (s) {
    snprintf(r->where, sizeof r->where, "optimizer.schedule");
    if (!cJSON_IsObject(s)) return fail(r, DAMO_ERR_FORMAT, "must be an object");
    TRY(check_keys(r, s, "type warmup_steps step_size gamma total_steps min_lr"));
    const char *st = "constant";
    TRY(get_string(r, s, "type", &st, 0));
    if (!strcmp(st, "constant")) c->schedule.kind = DAMO_SCHED_CONSTANT;
    else if (!strcmp(st, "step")) c->schedule.kind = DAMO_SCHED_STEP;
    else if (!strcmp(st, "cosine")) c->schedule.kind = DAMO_SCHED_COSINE;
    else return fail(r, DAMO_ERR_FORMAT, "unknown schedule '%s' (expected constant, step or cosine)", st);
    TRY(get_int(r, s, "warmup_steps", &c->schedule.warmup_steps, 0));
    TRY(get_int(r, s, "step_size", &c->schedule.step_size, c->schedule.kind == DAMO_SCHED_STEP));
    TRY(get_int(r, s, "total_steps", &c->schedule.total_steps, 0));
    if (c->schedule.warmup_steps < 0 || c->schedule.total_steps < 0 ||
        (c->schedule.kind == DAMO_SCHED_STEP && c->schedule.step_size < 1))
      return fail(r, DAMO_ERR_FORMAT, "'warmup_steps' and 'total_steps' must be >= 0 and 'step_size' >= 1, got %lld, "
                  "%lld and %lld", (long long)c->schedule.warmup_steps, (long long)c->schedule.total_steps,
                  (long long)c->schedule.step_size);
    TRY(get_float_limits(r, s, "gamma", 0, 1, 1e6, 0, &c->schedule.gamma));
    TRY(get_float_limits(r, s, "min_lr", 0, 0, 1e6, 0, &c->schedule.min_lr));
  }
  return DAMO_OK;
}

/* A [min, max] pair of numbers within [lo, hi] (min <= max); absent leaves out as it is. */
static damo_status get_range(const reader *r, const cJSON *obj, const char *key, float lo, float hi, float *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) return DAMO_OK;
  const cJSON *a = cJSON_GetArrayItem(v, 0), *b = cJSON_GetArrayItem(v, 1);
  if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) ||
      !(a->valuedouble >= lo && a->valuedouble <= b->valuedouble && b->valuedouble <= hi))
    return fail(r, DAMO_ERR_FORMAT, "'%s' must be [min, max] with %g <= min <= max <= %g", key, lo, hi);
  out[0] = (float)a->valuedouble, out[1] = (float)b->valuedouble;
  return DAMO_OK;
}

/* A number in [lo, hi]; absent leaves *out as it is. */
static damo_status get_float_in(const reader *r, const cJSON *obj, const char *key, float lo, float hi, float *out) {
  TRY(get_float(r, obj, key, out));
  if (!(*out >= lo && *out <= hi)) return fail(r, DAMO_ERR_FORMAT, "'%s' must be in [%g, %g], got %g", key, lo, hi, *out);
  return DAMO_OK;
}

/* "fit": epochs, batch_size, seed and validation_split into o; an absent key leaves o's
 * value (the caller's default), a present one must be valid: a bad value is an error naming
 * the key, never replaced by the default. */
static damo_status parse_fit_numbers(const reader *r, const cJSON *f, damo_fit_options *o) {
  int64_t epochs = o->epochs, batch = o->batch_size, seed = o->seed > (uint64_t)INT64_MAX ? 0 : (int64_t)o->seed;
  TRY(get_int(r, f, "epochs", &epochs, 0));
  if (cJSON_GetObjectItemCaseSensitive(f, "epochs") && (epochs < 1 || epochs > 1000000))
    return fail(r, DAMO_ERR_FORMAT, "'epochs' must be an integer in [1, 1000000], got %lld", (long long)epochs);
  TRY(get_int(r, f, "batch_size", &batch, 0));
  if (cJSON_GetObjectItemCaseSensitive(f, "batch_size") && (batch < 1 || batch > INT32_MAX))
    return fail(r, DAMO_ERR_FORMAT, "'batch_size' must be an integer in [1, %d], got %lld", INT32_MAX, (long long)batch);
  TRY(get_int(r, f, "seed", &seed, 0));
  if (cJSON_GetObjectItemCaseSensitive(f, "seed") && seed < 0)
    return fail(r, DAMO_ERR_FORMAT, "'seed' must be an integer >= 0, got %lld", (long long)seed);
  TRY(get_float_limits(r, f, "validation_split", 0, 0, 1, 1, &o->validation_split));
  if (cJSON_GetObjectItemCaseSensitive(f, "epochs")) o->epochs = (int)epochs;
  if (cJSON_GetObjectItemCaseSensitive(f, "batch_size")) o->batch_size = (int)batch;
  if (cJSON_GetObjectItemCaseSensitive(f, "seed")) o->seed = (uint64_t)seed;
  return DAMO_OK;
}

/* "fit": {"early_stopping": {"monitor", "patience", "min_delta", "restore_best_weights"}}, as
 * Keras' EarlyStopping callback (restore_best_weights defaults to true here). monitor points
 * into the config, which lives as long as the model. */
static damo_status parse_early_stopping(const reader *r, const cJSON *es, damo_fit_options *o) {
  int64_t patience = 0;
  int restore = 1;
  const char *monitor = NULL;
  TRY(get_int(r, es, "patience", &patience, 1));
  if (patience < 1 || patience > 100000) return fail(r, DAMO_ERR_FORMAT, "'patience' must be a positive number of epochs");
  TRY(get_string(r, es, "monitor", &monitor, 0));
  TRY(get_float_limits(r, es, "min_delta", 0, 0, 1e30, 0, &o->min_delta));
  TRY(get_bool(r, es, "restore_best_weights", &restore));
  o->patience = (int)patience;
  o->monitor = monitor;
  o->restore_best_weights = restore;
  return DAMO_OK;
}

/* "fit": {"augment": {...}}: the damo_augment_options fields by their names; see
 * docs/model-config.md. mean/std (one number per channel) point into the model. */
static damo_status parse_augment(reader *r, const cJSON *a, damo_model *m) {
  snprintf(r->where, sizeof r->where, "fit.augment");
  if (!cJSON_IsObject(a)) return fail(r, DAMO_ERR_FORMAT, "must be an object");
  TRY(check_keys(r, a,
                 "max_shift edge_fill flip_prob max_rotation_deg zoom erase_prob erase_area erase_aspect "
                 "erase_fill_max mean std"));
  damo_augment_options *o = &m->augment;
  memset(o, 0, sizeof *o);
  int64_t shift = 0;
  TRY(get_int(r, a, "max_shift", &shift, 0));
  if (shift < 0 || shift > 1024) return fail(r, DAMO_ERR_FORMAT, "'max_shift' must be in [0, 1024] pixels");
  o->max_shift = (int)shift;
  const char *fill = "zero";
  TRY(get_string(r, a, "edge_fill", &fill, 0));
  if (strcmp(fill, "zero") && strcmp(fill, "nearest"))
    return fail(r, DAMO_ERR_FORMAT, "'edge_fill' must be \"zero\" or \"nearest\", got '%s'", fill);
  o->edge_fill = !strcmp(fill, "nearest");
  TRY(get_float_in(r, a, "flip_prob", 0, 1, &o->flip_prob));
  TRY(get_float_in(r, a, "max_rotation_deg", 0, 180, &o->max_rotation_deg));
  float zoom[2] = {0, 0}, area[2] = {0, 0}, aspect[2] = {0, 0};
  TRY(get_range(r, a, "zoom", 0.05f, 20, zoom));
  TRY(get_float_in(r, a, "erase_prob", 0, 1, &o->erase_prob));
  TRY(get_range(r, a, "erase_area", 0, 1, area));
  TRY(get_range(r, a, "erase_aspect", 0.01f, 100, aspect));
  TRY(get_float_in(r, a, "erase_fill_max", 0, 1e9f, &o->erase_fill_max));
  o->zoom_min = zoom[0], o->zoom_max = zoom[1];
  o->erase_area_min = area[0], o->erase_area_max = area[1];
  o->erase_aspect_min = aspect[0], o->erase_aspect_max = aspect[1];
  const cJSON *mean = cJSON_GetObjectItemCaseSensitive(a, "mean"), *std = cJSON_GetObjectItemCaseSensitive(a, "std");
  if (!mean != !std) return fail(r, DAMO_ERR_FORMAT, "'mean' and 'std' go together");
  if (mean) {
    int channels = m->in_ndim == 3 ? (int)m->in_shape[2] : 1;
    if (!cJSON_IsArray(mean) || !cJSON_IsArray(std) || cJSON_GetArraySize(mean) != channels ||
        cJSON_GetArraySize(std) != channels)
      return fail(r, DAMO_ERR_FORMAT, "'mean' and 'std' must list one number per input channel (%d)", channels);
    for (int c = 0; c < channels && c < 4; c++) {
      const cJSON *mu = cJSON_GetArrayItem(mean, c), *sd = cJSON_GetArrayItem(std, c);
      if (!cJSON_IsNumber(mu) || !cJSON_IsNumber(sd) || !isfinite(mu->valuedouble) || !(sd->valuedouble > 0))
        return fail(r, DAMO_ERR_FORMAT, "channel %d: mean must be a number and std a positive number", c);
      m->augment_mean[c] = (float)mu->valuedouble, m->augment_std[c] = (float)sd->valuedouble;
    }
    o->mean = m->augment_mean, o->std = m->augment_std;
  }
  m->has_augment = 1;
  return DAMO_OK;
}

damo_status damo_model_from_json(const cJSON *root, const char *source, damo_model **out) {
  *out = NULL;
  reader r = {source ? source : "config", ""};
  if (!cJSON_IsObject(root)) return fail(&r, DAMO_ERR_FORMAT, "the config must be a JSON object");
  TRY(check_keys(&r, root, "format damo_version input_shape layers loss optimizer metrics fit class_names"));
  const char *format = NULL;
  TRY(get_string(&r, root, "format", &format, 0));
  if (format && strcmp(format, "damo.sequential"))
    return fail(&r, DAMO_ERR_UNSUPPORTED, "format '%s' is not supported (expected damo.sequential)", format);
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(root, "input_shape");
  int ndim = cJSON_GetArraySize(shape);
  if (!cJSON_IsArray(shape) || ndim < 1 || ndim > DAMO_MAX_DIMS - 1)
    return fail(&r, DAMO_ERR_FORMAT, "'input_shape' must be a list of 1 to %d positive integers", DAMO_MAX_DIMS - 1);
  int64_t in_shape[DAMO_MAX_DIMS];
  for (int i = 0; i < ndim; i++) {
    const cJSON *d = cJSON_GetArrayItem(shape, i);
    if (!cJSON_IsNumber(d) || d->valuedouble < 1 || d->valuedouble != floor(d->valuedouble) || d->valuedouble > 1e12)
      return fail(&r, DAMO_ERR_FORMAT, "'input_shape' entry %d must be a positive integer", i);
    in_shape[i] = (int64_t)d->valuedouble;
  }
  const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
  if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) == 0)
    return fail(&r, DAMO_ERR_FORMAT, "'layers' must be a non-empty list of layer objects");
  damo_model *m = damo_sequential_new(ndim, in_shape);
  if (!m) return DAMO_ERR_NOMEM;
  if (source && !(m->config_source = damo_strdup(source))) {
    damo_model_free(m);
    return DAMO_ERR_NOMEM;
  }
  damo_status st = DAMO_OK;
  int i = 0;
  for (const cJSON *lo = layers->child; lo && st == DAMO_OK; lo = lo->next, i++) {
    const cJSON *nm = cJSON_IsObject(lo) ? cJSON_GetObjectItemCaseSensitive(lo, "name") : NULL;
    snprintf(r.where, sizeof r.where, "layer %d%s%.64s%s", i, cJSON_IsString(nm) ? " ('" : "",
             cJSON_IsString(nm) ? nm->valuestring : "", cJSON_IsString(nm) ? "')" : "");
    damo_layer *l;
    st = parse_layer(&r, lo, &l);
    if (st == DAMO_OK && (st = damo_model_add(m, l)) != DAMO_OK) damo_error_prefix(st, "%s: ", r.source);
  }
  const cJSON *loss = cJSON_GetObjectItemCaseSensitive(root, "loss");
  const cJSON *opt = cJSON_GetObjectItemCaseSensitive(root, "optimizer");
  /* "metrics" alone also makes compile options (with the default loss and optimizer): it
   * used to be dropped silently, and with it the check that binary metrics fit the model. */
  if (st == DAMO_OK && (loss || opt || cJSON_GetObjectItemCaseSensitive(root, "metrics"))) {
    r.where[0] = '\0';
    m->copt.optimizer = damo_adam(1e-3f);
    m->copt.loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE;
    if (loss && (!cJSON_IsString(loss) || damo_loss_parse(loss->valuestring, &m->copt.loss) != DAMO_OK))
      st = fail(&r, DAMO_ERR_FORMAT, "'loss': %s", cJSON_IsString(loss) ? damo_last_error() : "must be a string");
    if (st == DAMO_OK && opt) st = parse_optimizer(&r, opt, &m->copt.optimizer);
    const cJSON *metrics = cJSON_GetObjectItemCaseSensitive(root, "metrics");
    r.where[0] = '\0';
    if (metrics && !cJSON_IsArray(metrics)) st = fail(&r, DAMO_ERR_FORMAT, "'metrics' must be a list of names");
    for (const cJSON *mt = metrics ? metrics->child : NULL; mt && st == DAMO_OK; mt = mt->next) {
      int bit = 0;
      for (size_t k = 0; k < sizeof metric_names / sizeof *metric_names && cJSON_IsString(mt); k++)
        if (!strcmp(mt->valuestring, metric_names[k].name)) bit = metric_names[k].bit;
      if (cJSON_IsString(mt) && !strcmp(mt->valuestring, "acc")) bit = DAMO_METRIC_ACCURACY; /* Keras' alias */
      if (bit) m->copt.metrics |= bit;
      else
        st = fail(&r, DAMO_ERR_FORMAT, "unknown metric %s%s%s in 'metrics' (known: accuracy, precision, recall, f1, auc)",
                  cJSON_IsString(mt) ? "'" : "", cJSON_IsString(mt) ? mt->valuestring : "(not a string)",
                  cJSON_IsString(mt) ? "'" : "");
    }
    if (st == DAMO_OK && m->n_layers > 0) { /* the layers' output shapes are known once added */
      const damo_layer *last = m->layers[m->n_layers - 1];
      int64_t outputs = 1;
      for (int d = 0; d < last->out_ndim; d++) outputs *= last->out_shape[d];
      if (damo_binary_metrics_check(m->copt.metrics, m->copt.loss, outputs, "'metrics'") != DAMO_OK)
        st = fail(&r, DAMO_ERR_FORMAT, "%s", damo_last_error());
    }
    m->has_compile_options = 1;
  }
  const cJSON *fit = cJSON_GetObjectItemCaseSensitive(root, "fit");
  if (st == DAMO_OK && fit) {
    snprintf(r.where, sizeof r.where, "fit");
    if (!cJSON_IsObject(fit)) st = fail(&r, DAMO_ERR_FORMAT, "must be an object");
    else st = check_keys(&r, fit, "epochs batch_size seed validation_split augment early_stopping");
    damo_fit_options numbers = {0};
    if (st == DAMO_OK) st = parse_fit_numbers(&r, fit, &numbers);
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(fit, "early_stopping");
    if (st == DAMO_OK && es) {
      snprintf(r.where, sizeof r.where, "fit.early_stopping");
      if (!cJSON_IsObject(es)) st = fail(&r, DAMO_ERR_FORMAT, "must be an object");
      else st = check_keys(&r, es, "monitor patience min_delta restore_best_weights");
      damo_fit_options probe = {0};
      if (st == DAMO_OK) st = parse_early_stopping(&r, es, &probe);
    }
    const cJSON *aug = cJSON_GetObjectItemCaseSensitive(fit, "augment");
    if (st == DAMO_OK && aug) st = parse_augment(&r, aug, m);
    if (st == DAMO_OK && !(m->fit_defaults = cJSON_Duplicate(fit, 1))) st = DAMO_ERR_NOMEM;
  }
  const cJSON *names = cJSON_GetObjectItemCaseSensitive(root, "class_names");
  if (st == DAMO_OK && names) {
    snprintf(r.where, sizeof r.where, "class_names");
    int n = cJSON_GetArraySize(names);
    const char *list[1024];
    if (!cJSON_IsArray(names) || n < 1 || n > 1024) st = fail(&r, DAMO_ERR_FORMAT, "must be a list of 1 to 1024 strings");
    for (int k = 0; k < n && st == DAMO_OK; k++) {
      const cJSON *it = cJSON_GetArrayItem(names, k);
      if (!cJSON_IsString(it)) st = fail(&r, DAMO_ERR_FORMAT, "entry %d must be a string", k);
      else list[k] = it->valuestring;
    }
    if (st == DAMO_OK && damo_model_set_class_names(m, n, list) != DAMO_OK)
      st = fail(&r, DAMO_ERR_FORMAT, "%s", damo_last_error());
  }
  if (st != DAMO_OK) {
    damo_model_free(m);
    return st;
  }
  *out = m;
  return DAMO_OK;
}

/* Strict JSON (damo_json_parse): trailing data and repeated keys are errors, not ignored. */
static damo_status from_config_text(const char *text, size_t len, const char *source, damo_model **out) {
  cJSON *root = NULL;
  damo_status st = damo_json_parse(text, len, source ? source : "config", 0, &root);
  if (st != DAMO_OK) return st;
  st = damo_model_from_json(root, source, out);
  cJSON_Delete(root);
  return st;
}

damo_status damo_model_from_config_json(const char *json_text, const char *source_name, damo_model **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "from_config_json: NULL output");
  *out = NULL;
  if (!json_text) return damo_error(DAMO_ERR_INVALID_ARG, "from_config_json: NULL text");
  return from_config_text(json_text, strlen(json_text), source_name, out);
}

damo_status damo_model_from_config_file(const char *path, damo_model **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "from_config_file: NULL output");
  *out = NULL;
  char *text;
  size_t len;
  damo_status st = damo_read_file(path, &text, &len);
  if (st != DAMO_OK) return st;
  st = from_config_text(text, len, path, out);
  free(text);
  return st;
}

const char *damo_loss_name(damo_loss l) {
  switch (l) {
  case DAMO_LOSS_SPARSE_CATEGORICAL_CE: return "sparse_categorical_crossentropy";
  case DAMO_LOSS_BINARY_CE: return "binary_crossentropy";
  case DAMO_LOSS_MSE: return "mse";
  }
  return "?";
}

damo_status damo_loss_parse(const char *name, damo_loss *out) {
  if (!strcmp(name, "sparse_categorical_crossentropy")) *out = DAMO_LOSS_SPARSE_CATEGORICAL_CE;
  else if (!strcmp(name, "binary_crossentropy")) *out = DAMO_LOSS_BINARY_CE;
  else if (!strcmp(name, "mse") || !strcmp(name, "mean_squared_error")) *out = DAMO_LOSS_MSE;
  else
    return damo_error(DAMO_ERR_NOT_FOUND,
                      "unknown loss '%s' (expected sparse_categorical_crossentropy, binary_crossentropy or mse)", name);
  return DAMO_OK;
}

damo_status damo_model_config_fit_options(const damo_model *m, damo_fit_options *inout) {
  if (!m || !inout) return damo_error(DAMO_ERR_INVALID_ARG, "config_fit_options: NULL argument");
  const cJSON *f = m->fit_defaults;
  if (!f) return DAMO_OK;
  reader r = {m->config_source ? m->config_source : "config", "fit"};
  TRY(parse_fit_numbers(&r, f, inout));
  if (m->has_augment) inout->augment = &m->augment;
  const cJSON *es = cJSON_GetObjectItemCaseSensitive(f, "early_stopping");
  if (es) {
    snprintf(r.where, sizeof r.where, "fit.early_stopping");
    TRY(parse_early_stopping(&r, es, inout));
  }
  return DAMO_OK;
}
