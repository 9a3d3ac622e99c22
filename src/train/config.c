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

cJSON *damo_metrics_to_json(int metrics) {
  cJSON *list = cJSON_CreateArray();
  for (size_t k = 0; list && k < sizeof metric_names / sizeof *metric_names; k++)
    if (metrics & metric_names[k].bit) cJSON_AddItemToArray(list, cJSON_CreateString(metric_names[k].name));
  return list;
}

damo_status damo_config_metrics(damo_config_obj *o, const char *where, const char *const *names, int n, int *bits) {
  for (int k = 0; k < n; k++) {
    int bit = !strcmp(names[k], "acc") ? DAMO_METRIC_ACCURACY : 0; /* Keras' alias */
    for (size_t j = 0; j < sizeof metric_names / sizeof *metric_names; j++)
      if (!strcmp(names[k], metric_names[j].name)) bit = metric_names[j].bit;
    if (!bit)
      return damo_config_fail(o, NULL, DAMO_ERR_FORMAT,
                              "unknown metric '%s' in %s (known: accuracy, precision, recall, f1, auc)", names[k], where);
    *bits |= bit;
  }
  return DAMO_OK;
}

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

cJSON *damo_layer_to_json(const damo_layer *l) {
  {
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
    } else if (l->type == &damo_layer_concatenate) {
      cJSON_AddNumberToObject(o, "axis", l->axis);
    } else {
      damo_seq_layer_to_json(l, o);
    }
    return o;
  }
}

cJSON *damo_model_to_json(const damo_model *m) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "format", m->functional ? "damo.functional" : "damo.sequential");
  cJSON_AddStringToObject(root, "damo_version", DAMO_VERSION);
  if (m->functional) {
    damo_model_functional_to_json(m, root);
  } else {
    add_shape(root, "input_shape", m->in_ndim, m->in_shape);
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    for (int i = 0; i < m->n_layers; i++) cJSON_AddItemToArray(layers, damo_layer_to_json(m->layers[i]));
  }
  if (m->has_compile_options) {
    const damo_optimizer_config *c = &m->copt.optimizer;
    if (damo_model_num_outputs(m) > 1) damo_output_compile_to_json(m, root); /* loss, loss_weights, metrics */
    else cJSON_AddStringToObject(root, "loss", damo_loss_name(m->copt.loss));
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
    if (damo_model_num_outputs(m) == 1) cJSON_AddItemToObject(root, "metrics", damo_metrics_to_json(m->copt.metrics));
  }
  if (m->fit_defaults) cJSON_AddItemToObject(root, "fit", cJSON_Duplicate(m->fit_defaults, 1));
  if (m->quantization) cJSON_AddItemToObject(root, "quantization", cJSON_Duplicate(m->quantization, 1));
  if (m->n_class_names)
    cJSON_AddItemToObject(root, "class_names",
                          cJSON_CreateStringArray((const char *const *)m->class_names, m->n_class_names));
  return root;
}

/* ------------------------------------------------------------------ reading */

/* Read through the library's config reader (src/core/config_reader.c). Each object is
 * labelled for messages as the Sequential config always named its parts ("layer 2
 * ('dense_1')", "fit.early_stopping"), and checks its keys before any value, so a typo is
 * reported as the typo rather than as a missing key. */

damo_status damo_config_check_keys(damo_config_obj *o, const char *known) {
  char word[64];
  for (const char *p = known; *p;) {
    size_t w = strcspn(p, " ");
    snprintf(word, sizeof word, "%.*s", (int)w, p);
    damo_config_type_of(o, word);
    p += w;
    while (*p == ' ') p++;
  }
  return damo_config_close(o);
}

static const char *const padding_names[] = {"valid", "same", NULL};

damo_status damo_config_parse_layer(damo_config_obj *o, damo_layer **out) {
  *out = NULL;
  const char *type = NULL, *name = NULL, *act = NULL;
  TRY(damo_config_get_string(o, "type", REQ, &type));
  TRY(damo_config_get_string(o, "name", 0, &name));
  const damo_layer_type *lt = damo_layer_type_find(type);
  if (!lt)
    return damo_config_fail(o, NULL, DAMO_ERR_NOT_FOUND, "unknown layer type '%s' (known: %s)", type,
                            damo_layer_type_names());
  damo_activation a = DAMO_ACT_NONE;
  damo_layer *l = NULL;
  if (lt == &damo_layer_dense) {
    TRY(damo_config_check_keys(o, "type name units activation kernel_initializer use_bias"));
    int units = 0, use_bias = 1;
    const char *init = "glorot_uniform";
    TRY(damo_config_get_int32(o, "units", 1, INT32_MAX, REQ, &units));
    TRY(damo_config_get_string(o, "activation", 0, &act));
    TRY(damo_config_get_string(o, "kernel_initializer", 0, &init));
    TRY(damo_config_get_bool(o, "use_bias", 0, &use_bias));
    damo_init ki;
    if (damo_activation_parse(act, &a) != DAMO_OK || damo_init_parse(init, &ki) != DAMO_OK)
      return damo_config_fail(o, NULL, DAMO_ERR_FORMAT, "%s", damo_last_error());
    l = damo_dense_ex(units, a, ki, use_bias);
  } else if (lt == &damo_layer_activation) {
    TRY(damo_config_check_keys(o, "type name activation"));
    TRY(damo_config_get_string(o, "activation", REQ, &act));
    if (damo_activation_parse(act, &a) != DAMO_OK) return damo_config_fail(o, NULL, DAMO_ERR_FORMAT, "%s", damo_last_error());
    l = damo_activation_layer(a);
  } else if (lt == &damo_layer_dropout) {
    TRY(damo_config_check_keys(o, "type name rate"));
    float rate = 0;
    TRY(damo_config_get_float(o, "rate", 0, 1, REQ | DAMO_CFG_HI_OPEN, &rate));
    l = damo_dropout_layer(rate);
  } else if (lt == &damo_layer_reshape) {
    TRY(damo_config_check_keys(o, "type name target_shape"));
    int64_t shape[DAMO_MAX_DIMS];
    int nd = 0;
    TRY(damo_config_get_ints(o, "target_shape", 1, DAMO_MAX_DIMS - 1, 1, 1000000000, 1, REQ, shape, &nd));
    l = damo_reshape_layer(nd, shape);
  } else if (lt == &damo_layer_conv2d) {
    TRY(damo_config_check_keys(o, "type name filters kernel_size strides padding activation kernel_initializer use_bias"));
    int64_t ks[2] = {0, 0}, ss[2] = {1, 1};
    int filters = 0, nd = 0, use_bias = 1, same = 0;
    const char *init = "glorot_uniform";
    TRY(damo_config_get_int32(o, "filters", 1, INT32_MAX, REQ, &filters));
    TRY(damo_config_get_ints(o, "kernel_size", 2, 2, 1, 1000000000, 2, REQ, ks, &nd));
    TRY(damo_config_get_ints(o, "strides", 2, 2, 1, 1000000000, 2, 0, ss, &nd));
    TRY(damo_config_get_enum(o, "padding", padding_names, 0, &same));
    TRY(damo_config_get_string(o, "activation", 0, &act));
    TRY(damo_config_get_string(o, "kernel_initializer", 0, &init));
    TRY(damo_config_get_bool(o, "use_bias", 0, &use_bias));
    damo_init ki;
    if (damo_activation_parse(act, &a) != DAMO_OK || damo_init_parse(init, &ki) != DAMO_OK)
      return damo_config_fail(o, NULL, DAMO_ERR_FORMAT, "%s", damo_last_error());
    l = damo_conv2d_layer(filters, (int)ks[0], (int)ks[1], 1, same, a);
    if (l) {
      l->stride[0] = (int)ss[0];
      l->stride[1] = (int)ss[1];
      l->kernel_init = ki;
      l->use_bias = use_bias;
    }
  } else if (lt == &damo_layer_max_pool2d || lt == &damo_layer_avg_pool2d) {
    TRY(damo_config_check_keys(o, "type name pool_size strides padding"));
    int64_t ks[2] = {2, 2}, ss[2] = {0, 0};
    int nd = 0, same = 0;
    TRY(damo_config_get_ints(o, "pool_size", 2, 2, 1, 1000000000, 2, 0, ks, &nd));
    TRY(damo_config_get_ints(o, "strides", 2, 2, 1, 1000000000, 2, 0, ss, &nd));
    TRY(damo_config_get_enum(o, "padding", padding_names, 0, &same));
    l = lt == &damo_layer_max_pool2d ? damo_max_pool2d_layer((int)ks[0], 0, same) : damo_avg_pool2d_layer((int)ks[0], 0, same);
    if (l) {
      l->kernel[1] = (int)ks[1];
      l->stride[0] = ss[0] > 0 ? (int)ss[0] : (int)ks[0]; /* Keras: strides default to pool_size */
      l->stride[1] = ss[1] > 0 ? (int)ss[1] : (int)ks[1];
    }
  } else if (lt == &damo_layer_global_avg_pool2d) {
    TRY(damo_config_check_keys(o, "type name"));
    l = damo_global_avg_pool2d_layer();
  } else if (lt == &damo_layer_batch_norm) {
    TRY(damo_config_check_keys(o, "type name momentum epsilon"));
    float momentum = 0.99f, eps = 1e-3f;
    TRY(damo_config_get_float(o, "momentum", 0, 1, 0, &momentum));
    TRY(damo_config_get_float(o, "epsilon", 0, 1, DAMO_CFG_LO_OPEN, &eps));
    l = damo_batch_norm_layer(momentum, eps);
  } else if (lt == &damo_layer_lstm || lt == &damo_layer_gru) {
    TRY(damo_config_check_keys(o, "type name units return_sequences"));
    int units = 0, seq = 0;
    TRY(damo_config_get_int32(o, "units", 1, INT32_MAX, REQ, &units));
    TRY(damo_config_get_bool(o, "return_sequences", 0, &seq));
    l = lt == &damo_layer_gru ? damo_gru_layer(units, seq) : damo_lstm_layer(units, seq);
  } else if (lt == &damo_layer_embedding) {
    TRY(damo_config_check_keys(o, "type name input_dim output_dim mask_zero"));
    int input_dim = 0, output_dim = 0, mask_zero = 0;
    TRY(damo_config_get_int32(o, "input_dim", 1, INT32_MAX, REQ, &input_dim));
    TRY(damo_config_get_int32(o, "output_dim", 1, INT32_MAX, REQ, &output_dim));
    TRY(damo_config_get_bool(o, "mask_zero", 0, &mask_zero));
    l = damo_embedding_layer(input_dim, output_dim, mask_zero);
  } else if (lt == &damo_layer_bidirectional) {
    TRY(damo_config_check_keys(o, "type name layer merge_mode"));
    const char *merge_names[DAMO_MERGE_AVE + 2];
    for (int k = 0; k <= DAMO_MERGE_AVE; k++) merge_names[k] = damo_merge_mode_name((damo_merge_mode)k);
    merge_names[DAMO_MERGE_AVE + 1] = NULL;
    int mode = DAMO_MERGE_CONCAT;
    TRY(damo_config_get_enum(o, "merge_mode", merge_names, 0, &mode));
    damo_config_obj *inner_o;
    TRY(damo_config_get_object(o, "layer", REQ, &inner_o));
    damo_layer *inner;
    TRY(damo_config_parse_layer(inner_o, &inner));
    if (inner->type != &damo_layer_lstm && inner->type != &damo_layer_gru) {
      const char *got = inner->type->type;
      damo_layer_free(inner);
      return damo_config_fail(o, "layer", DAMO_ERR_FORMAT, "must be an lstm or gru layer, got %s", got);
    }
    l = damo_bidirectional_layer(inner, (damo_merge_mode)mode);
  } else if (lt == &damo_layer_global_avg_pool1d || lt == &damo_layer_global_max_pool1d) {
    TRY(damo_config_check_keys(o, "type name"));
    l = lt == &damo_layer_global_max_pool1d ? damo_global_max_pool1d_layer() : damo_global_avg_pool1d_layer();
  } else if (lt == &damo_layer_flatten) {
    TRY(damo_config_check_keys(o, "type name"));
    l = damo_flatten();
  } else if (lt == &damo_layer_add || lt == &damo_layer_subtract || lt == &damo_layer_multiply ||
             lt == &damo_layer_average) {
    TRY(damo_config_check_keys(o, "type name"));
    l = damo_layer_alloc(lt);
  } else if (lt == &damo_layer_concatenate) {
    TRY(damo_config_check_keys(o, "type name axis"));
    int axis = -1;
    TRY(damo_config_get_int32(o, "axis", -DAMO_MAX_DIMS, DAMO_MAX_DIMS - 1, 0, &axis));
    l = damo_concatenate_layer(axis);
  } else if (damo_is_seq_layer(lt)) {
    TRY(damo_config_parse_seq_layer(o, lt, &l));
  } else {
    TRY(damo_config_check_keys(o, "type name scale offset"));
    double scale = 1, offset = 0;
    TRY(damo_config_get_double(o, "scale", -HUGE_VAL, HUGE_VAL, REQ, &scale));
    TRY(damo_config_get_double(o, "offset", -HUGE_VAL, HUGE_VAL, 0, &offset));
    l = damo_rescaling((float)scale, (float)offset);
  }
  if (!l) return DAMO_ERR_NOMEM;
  if (name) damo_layer_set_name(l, name);
  *out = l;
  return DAMO_OK;
}

static const char *const optimizer_names[] = {"sgd", "adam", "adamw", NULL};

static damo_optimizer_config optimizer_default(int kind) {
  return kind == 0 ? damo_sgd(1e-2f, 0, 0) : kind == 1 ? damo_adam(1e-3f) : damo_adamw(1e-3f, 0.01f);
}

/* "optimizer": a name (the defaults) or an object. */
static damo_status parse_optimizer(damo_config_obj *root, damo_optimizer_config *c) {
  int kind = 1;
  if (damo_config_type_of(root, "optimizer") != DAMO_CFG_OBJECT) {
    TRY(damo_config_get_enum(root, "optimizer", optimizer_names, 0, &kind)); /* "optimizer": "adam" */
    *c = optimizer_default(kind);
    return DAMO_OK;
  }
  damo_config_obj *o;
  TRY(damo_config_get_object(root, "optimizer", 0, &o));
  TRY(damo_config_check_keys(o, "type learning_rate momentum nesterov beta_1 beta_2 epsilon weight_decay clipnorm schedule"));
  TRY(damo_config_get_enum(o, "type", optimizer_names, REQ, &kind));
  *c = optimizer_default(kind);
  /* Absent keys keep the type's defaults; a value given must be valid (the optimizer reads
   * 0 as "the default" for some fields, so a written 0 would otherwise be replaced). */
  const unsigned lo_open = DAMO_CFG_LO_OPEN, open = DAMO_CFG_LO_OPEN | DAMO_CFG_HI_OPEN;
  TRY(damo_config_get_float(o, "learning_rate", 0, 1e6, lo_open, &c->lr));
  TRY(damo_config_get_float(o, "momentum", 0, 1, 0, &c->momentum));
  TRY(damo_config_get_bool(o, "nesterov", 0, &c->nesterov));
  TRY(damo_config_get_float(o, "beta_1", 0, 1, open, &c->beta1));
  TRY(damo_config_get_float(o, "beta_2", 0, 1, open, &c->beta2));
  TRY(damo_config_get_float(o, "epsilon", 0, 1, lo_open, &c->eps));
  TRY(damo_config_get_float(o, "weight_decay", 0, 1e6, 0, &c->weight_decay));
  TRY(damo_config_get_float(o, "clipnorm", 0, 1e30, 0, &c->clip_norm));
  if (c->nesterov && c->momentum == 0.0f)
    return damo_config_fail(o, "nesterov", DAMO_ERR_FORMAT, "needs a 'momentum' above 0");
  damo_config_obj *s;
  TRY(damo_config_get_object(o, "schedule", 0, &s));
  if (s) {
    static const char *const schedules[] = {"constant", "step", "cosine", NULL};
    TRY(damo_config_check_keys(s, "type warmup_steps step_size gamma total_steps min_lr"));
    int sk = 0;
    TRY(damo_config_get_enum(s, "type", schedules, 0, &sk));
    c->schedule.kind = sk == 0 ? DAMO_SCHED_CONSTANT : sk == 1 ? DAMO_SCHED_STEP : DAMO_SCHED_COSINE;
    const int64_t any = (int64_t)1 << 53;
    TRY(damo_config_get_int(s, "warmup_steps", -any, any, 0, &c->schedule.warmup_steps));
    TRY(damo_config_get_int(s, "step_size", -any, any, c->schedule.kind == DAMO_SCHED_STEP ? REQ : 0,
                            &c->schedule.step_size));
    TRY(damo_config_get_int(s, "total_steps", -any, any, 0, &c->schedule.total_steps));
    if (c->schedule.warmup_steps < 0 || c->schedule.total_steps < 0 ||
        (c->schedule.kind == DAMO_SCHED_STEP && c->schedule.step_size < 1))
      return damo_config_fail(s, NULL, DAMO_ERR_FORMAT,
                              "'warmup_steps' and 'total_steps' must be >= 0 and 'step_size' >= 1, got %lld, %lld and "
                              "%lld", (long long)c->schedule.warmup_steps, (long long)c->schedule.total_steps,
                              (long long)c->schedule.step_size);
    TRY(damo_config_get_float(s, "gamma", 0, 1e6, lo_open, &c->schedule.gamma));
    TRY(damo_config_get_float(s, "min_lr", 0, 1e6, 0, &c->schedule.min_lr));
  }
  return DAMO_OK;
}

/* A [min, max] pair of numbers within [lo, hi] (min <= max); absent leaves out as it is. */
static damo_status get_range(damo_config_obj *o, const char *key, double lo, double hi, float *out) {
  double v[2];
  int n = 0;
  TRY(damo_config_get_doubles(o, key, 2, 2, lo, hi, 0, v, &n));
  if (n == 2 && v[0] > v[1])
    return damo_config_fail(o, key, DAMO_ERR_FORMAT, "must be [min, max] with %g <= min <= max <= %g", lo, hi);
  if (n == 2) out[0] = (float)v[0], out[1] = (float)v[1];
  return DAMO_OK;
}

/* "fit": epochs, batch_size, seed and validation_split into o; an absent key leaves o's
 * value (the caller's default), a present one must be valid: a bad value is an error naming
 * the key, never replaced by the default. */
static damo_status parse_fit_numbers(damo_config_obj *f, damo_fit_options *o) {
  int64_t seed = o->seed > (uint64_t)INT64_MAX ? 0 : (int64_t)o->seed;
  TRY(damo_config_get_int32(f, "epochs", 1, 1000000, 0, &o->epochs));
  TRY(damo_config_get_int32(f, "batch_size", 1, INT32_MAX, 0, &o->batch_size));
  if (damo_config_type_of(f, "seed") != DAMO_CFG_ABSENT) {
    TRY(damo_config_get_int(f, "seed", 0, INT64_MAX, 0, &seed));
    o->seed = (uint64_t)seed;
  }
  TRY(damo_config_get_float(f, "validation_split", 0, 1, DAMO_CFG_HI_OPEN, &o->validation_split));
  return DAMO_OK;
}

/* "fit": {"early_stopping": {"monitor", "patience", "min_delta", "restore_best_weights"}}, as
 * Keras' EarlyStopping callback (restore_best_weights defaults to true here). monitor points
 * into the config, which lives as long as the model. */
static damo_status parse_early_stopping(damo_config_obj *es, damo_fit_options *o) {
  int patience = 0, restore = 1;
  const char *monitor = NULL;
  TRY(damo_config_get_int32(es, "patience", 1, 100000, REQ, &patience));
  TRY(damo_config_get_string(es, "monitor", 0, &monitor));
  TRY(damo_config_get_float(es, "min_delta", 0, 1e30, 0, &o->min_delta));
  TRY(damo_config_get_bool(es, "restore_best_weights", 0, &restore));
  o->patience = patience;
  o->monitor = monitor;
  o->restore_best_weights = restore;
  return DAMO_OK;
}

/* "fit": {"augment": {...}}: the damo_augment_options fields by their names; see
 * docs/model-config.md. mean/std (one number per channel) point into the model. */
static damo_status parse_augment(damo_config_obj *fit, damo_model *m) {
  if (damo_config_type_of(fit, "augment") != DAMO_CFG_OBJECT)
    return damo_error(DAMO_ERR_FORMAT, "%s: fit.augment: must be an object", m->config_source ? m->config_source : "config");
  damo_config_obj *a;
  TRY(damo_config_get_object(fit, "augment", 0, &a));
  TRY(damo_config_check_keys(a, "max_shift edge_fill flip_prob max_rotation_deg zoom erase_prob erase_area erase_aspect "
                    "erase_fill_max mean std"));
  damo_augment_options *o = &m->augment;
  memset(o, 0, sizeof *o);
  static const char *const fills[] = {"zero", "nearest", NULL};
  TRY(damo_config_get_int32(a, "max_shift", 0, 1024, 0, &o->max_shift));
  TRY(damo_config_get_enum(a, "edge_fill", fills, 0, &o->edge_fill));
  TRY(damo_config_get_float(a, "flip_prob", 0, 1, 0, &o->flip_prob));
  TRY(damo_config_get_float(a, "max_rotation_deg", 0, 180, 0, &o->max_rotation_deg));
  float zoom[2] = {0, 0}, area[2] = {0, 0}, aspect[2] = {0, 0};
  TRY(get_range(a, "zoom", 0.05, 20, zoom));
  TRY(damo_config_get_float(a, "erase_prob", 0, 1, 0, &o->erase_prob));
  TRY(get_range(a, "erase_area", 0, 1, area));
  TRY(get_range(a, "erase_aspect", 0.01, 100, aspect));
  TRY(damo_config_get_float(a, "erase_fill_max", 0, 1e9, 0, &o->erase_fill_max));
  o->zoom_min = zoom[0], o->zoom_max = zoom[1];
  o->erase_area_min = area[0], o->erase_area_max = area[1];
  o->erase_aspect_min = aspect[0], o->erase_aspect_max = aspect[1];
  const int has_mean = damo_config_type_of(a, "mean") != DAMO_CFG_ABSENT;
  if (has_mean != (damo_config_type_of(a, "std") != DAMO_CFG_ABSENT))
    return damo_config_fail(a, NULL, DAMO_ERR_FORMAT, "'mean' and 'std' go together");
  if (has_mean) {
    const int channels = m->in_ndim == 3 ? (int)m->in_shape[2] : 1;
    double mean[64], std[64];
    int n_mean = 0, n_std = 0;
    TRY(damo_config_get_doubles(a, "mean", 1, 64, -HUGE_VAL, HUGE_VAL, 0, mean, &n_mean));
    TRY(damo_config_get_doubles(a, "std", 1, 64, 0, HUGE_VAL, DAMO_CFG_LO_OPEN, std, &n_std));
    if (n_mean != channels || n_std != channels)
      return damo_config_fail(a, NULL, DAMO_ERR_FORMAT, "'mean' and 'std' must list one number per input channel (%d)",
                              channels);
    for (int c = 0; c < channels && c < 4; c++) m->augment_mean[c] = (float)mean[c], m->augment_std[c] = (float)std[c];
    o->mean = m->augment_mean, o->std = m->augment_std;
  }
  m->has_augment = 1;
  return DAMO_OK;
}

/* Compile options: "loss", "optimizer" and "metrics". */
static damo_status parse_compile(damo_config_obj *root, damo_model *m) {
  m->copt.optimizer = damo_adam(1e-3f);
  m->copt.loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE;
  m->has_compile_options = 1;
  if (damo_model_num_outputs(m) > 1) { /* each output's loss, weight and metrics */
    if (damo_config_type_of(root, "optimizer") != DAMO_CFG_ABSENT) TRY(parse_optimizer(root, &m->copt.optimizer));
    return damo_config_parse_output_compile(root, m);
  }
  if (damo_config_type_of(root, "loss_weights") != DAMO_CFG_ABSENT)
    return damo_config_fail(root, "loss_weights", DAMO_ERR_FORMAT, "is for a model of several outputs; this one has one");
  const char *loss = NULL;
  TRY(damo_config_get_string(root, "loss", 0, &loss));
  if (loss && damo_loss_parse(loss, &m->copt.loss) != DAMO_OK)
    return damo_config_fail(root, NULL, DAMO_ERR_FORMAT, "'loss': %s", damo_last_error());
  if (damo_config_type_of(root, "optimizer") != DAMO_CFG_ABSENT) TRY(parse_optimizer(root, &m->copt.optimizer));
  const char *const *metrics = NULL;
  int n = 0;
  TRY(damo_config_get_strings(root, "metrics", 0, 64, 0, &metrics, &n));
  TRY(damo_config_metrics(root, "'metrics'", metrics, n, &m->copt.metrics));
  if (damo_model_output_layer(m)) { /* the layers' output shapes are known once added */
    const damo_layer *last = damo_model_output_layer(m);
    int64_t outputs = 1;
    for (int d = 0; d < last->out_ndim; d++) outputs *= last->out_shape[d];
    if (damo_binary_metrics_check(m->copt.metrics, m->copt.loss, outputs, "'metrics'") != DAMO_OK)
      return damo_config_fail(root, NULL, DAMO_ERR_FORMAT, "%s", damo_last_error());
  }
  return DAMO_OK;
}

/* "fit": checked here, kept as JSON in the model and read again by
 * damo_model_config_fit_options into the caller's defaults. */
/* "quantization": {"format": "int8", "activations": "static"|"dynamic", "method",
 * "calibration_examples", "layers": [int8 layer names], "float_layers": [{"name", "reason"}],
 * "weight_only": [int8 tables], "dynamic_layers": [recurrent layers of a static model]}
 * (docs/compression.md). The layer names are checked against the model when its weights load;
 * the last two lists only say what the layers' kinds decide. */
static damo_status parse_quantization(damo_config_obj *root, const cJSON *json, damo_model *m) {
  static const char *const formats[] = {"int8", NULL}, *const activations[] = {"static", "dynamic", NULL},
                           *const methods[] = {"minmax", "percentile", "histogram", "none", NULL};
  damo_config_obj *q;
  TRY(damo_config_get_object(root, "quantization", REQ, &q));
  TRY(damo_config_check_keys(q, "format activations method calibration_examples layers float_layers weight_only "
                                 "dynamic_layers"));
  int format = 0, acts = 0, method = 0, n = 0, n_float = 0, n_said = 0;
  int64_t examples = 0;
  const char *const *names = NULL, *const *said = NULL;
  TRY(damo_config_get_strings(q, "weight_only", 1, 1 << 20, 0, &said, &n_said));
  TRY(damo_config_get_strings(q, "dynamic_layers", 1, 1 << 20, 0, &said, &n_said));
  TRY(damo_config_get_enum(q, "format", formats, REQ, &format));
  TRY(damo_config_get_enum(q, "activations", activations, REQ, &acts));
  TRY(damo_config_get_enum(q, "method", methods, 0, &method));
  TRY(damo_config_get_int(q, "calibration_examples", 0, INT64_MAX, 0, &examples));
  TRY(damo_config_get_strings(q, "layers", 1, 1 << 20, REQ, &names, &n));
  TRY(damo_config_get_list(q, "float_layers", 0, 1 << 20, 0, &n_float));
  for (int i = 0; i < n_float; i++) {
    damo_config_obj *f;
    const char *name = NULL, *reason = NULL;
    TRY(damo_config_list_object(q, "float_layers", i, &f));
    TRY(damo_config_check_keys(f, "name reason"));
    TRY(damo_config_get_string(f, "name", REQ, &name));
    TRY(damo_config_get_string(f, "reason", REQ, &reason));
  }
  m->quantization = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(json, "quantization"), 1);
  return m->quantization ? DAMO_OK : DAMO_ERR_NOMEM;
}

static damo_status parse_fit(damo_config_obj *root, const cJSON *json, damo_model *m) {
  damo_config_obj *fit;
  if (damo_config_type_of(root, "fit") != DAMO_CFG_OBJECT)
    return damo_config_fail(root, NULL, DAMO_ERR_FORMAT, "fit: must be an object");
  TRY(damo_config_get_object(root, "fit", 0, &fit));
  TRY(damo_config_check_keys(fit, "epochs batch_size seed validation_split augment early_stopping"));
  damo_fit_options numbers = {0};
  TRY(parse_fit_numbers(fit, &numbers));
  damo_config_obj *es;
  TRY(damo_config_get_object(fit, "early_stopping", 0, &es));
  if (es) {
    TRY(damo_config_check_keys(es, "monitor patience min_delta restore_best_weights"));
    damo_fit_options probe = {0};
    TRY(parse_early_stopping(es, &probe));
  }
  if (damo_config_type_of(fit, "augment") != DAMO_CFG_ABSENT) TRY(parse_augment(fit, m));
  if (!(m->fit_defaults = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(json, "fit"), 1)))
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", m->config_source ? m->config_source : "config");
  return DAMO_OK;
}

static damo_status parse_model(damo_config *c, const cJSON *json, damo_model **out) {
  const char *source = damo_config_source(c);
  damo_config_obj *root;
  if (damo_config_root(c, &root) != DAMO_OK)
    return damo_error(DAMO_ERR_FORMAT, "%s: the config must be a JSON object", source);
  TRY(damo_config_set_label(root, ""));
  const char *format = NULL;
  damo_config_type_of(root, "format");
  TRY(damo_config_get_string(root, "format", 0, &format));
  const int functional = format ? !strcmp(format, "damo.functional") : damo_config_type_of(root, "inputs") != DAMO_CFG_ABSENT;
  if (format && strcmp(format, "damo.sequential") && !functional)
    return damo_config_fail(root, NULL, DAMO_ERR_UNSUPPORTED,
                            "format '%s' is not supported (expected damo.sequential or damo.functional)", format);
  TRY(damo_config_check_keys(root, functional ? "format damo_version inputs layers outputs loss loss_weights optimizer metrics fit class_names quantization"
                                  : "format damo_version input_shape layers loss optimizer metrics fit class_names "
                                               "quantization"));
  int64_t in_shape[DAMO_MAX_DIMS];
  int ndim = 0, n_layers = 0;
  if (!functional)
    TRY(damo_config_get_ints(root, "input_shape", 1, DAMO_MAX_DIMS - 1, 1, 1000000000000, 0, REQ, in_shape, &ndim));
  TRY(damo_config_get_list(root, "layers", 1, INT32_MAX, REQ, &n_layers));
  damo_model *m = *out = functional ? damo_functional_new() : damo_sequential_new(ndim, in_shape);
  if (!m) return DAMO_ERR_NOMEM;
  if (!(m->config_source = damo_strdup(source))) return DAMO_ERR_NOMEM;
  if (functional) TRY(damo_model_functional_parse(root, m, source));
  for (int i = 0; !functional && i < n_layers; i++) {
    damo_config_obj *lo;
    TRY(damo_config_list_object(root, "layers", i, &lo));
    const char *nm = NULL;
    if (damo_config_type_of(lo, "name") == DAMO_CFG_STRING) TRY(damo_config_get_string(lo, "name", 0, &nm));
    char where[160];
    snprintf(where, sizeof where, "layer %d%s%.64s%s", i, nm ? " ('" : "", nm ? nm : "", nm ? "')" : "");
    TRY(damo_config_set_label(lo, where));
    damo_layer *l;
    TRY(damo_config_parse_layer(lo, &l));
    damo_status st = damo_model_add(m, l);
    if (st != DAMO_OK) return damo_error_prefix(st, "%s: ", source);
  }
  /* "metrics" alone also makes compile options (with the default loss and optimizer): it
   * used to be dropped silently, and with it the check that binary metrics fit the model. */
  if (damo_config_type_of(root, "loss") || damo_config_type_of(root, "optimizer") || damo_config_type_of(root, "metrics") ||
      damo_config_type_of(root, "loss_weights"))
    TRY(parse_compile(root, m));
  if (damo_config_type_of(root, "fit") != DAMO_CFG_ABSENT) TRY(parse_fit(root, json, m));
  if (damo_config_type_of(root, "quantization") != DAMO_CFG_ABSENT) TRY(parse_quantization(root, json, m));
  const char *const *names = NULL;
  int n = 0;
  TRY(damo_config_get_strings(root, "class_names", 1, 1024, 0, &names, &n));
  if (names && damo_model_set_class_names(m, n, names) != DAMO_OK)
    return damo_config_fail(root, NULL, DAMO_ERR_FORMAT, "class_names: %s", damo_last_error());
  return DAMO_OK;
}

damo_status damo_model_from_json(const cJSON *root, const char *source, damo_model **out) {
  *out = NULL;
  damo_config *c;
  damo_status st = damo_config_borrow(root, source ? source : "config", &c);
  if (st != DAMO_OK) return st;
  damo_model *m = NULL;
  st = parse_model(c, root, &m);
  damo_config_free(c);
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

int damo_model_embedding_input_dim(const damo_model *m) {
  for (int i = 0; m && i < m->n_layers; i++)
    if (m->layers[i]->type->takes_ids) return m->layers[i]->input_dim; /* the vocabulary size */
  return 0;
}

damo_status damo_model_config_fit_options(const damo_model *m, damo_fit_options *inout) {
  if (!m || !inout) return damo_error(DAMO_ERR_INVALID_ARG, "config_fit_options: NULL argument");
  if (!m->fit_defaults) return DAMO_OK;
  damo_config *c;
  damo_config_obj *f = NULL, *es = NULL;
  damo_status st = damo_config_borrow(m->fit_defaults, m->config_source ? m->config_source : "config", &c);
  if (st != DAMO_OK) return st;
  if ((st = damo_config_root(c, &f)) == DAMO_OK && (st = damo_config_set_label(f, "fit")) == DAMO_OK)
    st = parse_fit_numbers(f, inout);
  if (st == DAMO_OK && m->has_augment) inout->augment = &m->augment;
  if (st == DAMO_OK && (st = damo_config_get_object(f, "early_stopping", 0, &es)) == DAMO_OK && es)
    st = parse_early_stopping(es, inout);
  damo_config_free(c);
  return st;
}
