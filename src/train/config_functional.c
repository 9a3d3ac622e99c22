/* config_functional.c - the functional form of config.json, as Keras' functional configs:
 *
 *   "format": "damo.functional",
 *   "inputs":  [{"name": "image", "shape": [28, 28, 1]}, ...],
 *   "layers":  [{"type": "conv2d", "name": "conv_1", "inputs": ["image"], ...},
 *               {"type": "add", "name": "skip_1", "inputs": ["conv_2", "conv_1"]},
 *               {"shared": "dense_1", "name": "dense_1_b", "inputs": ["side"]}, ...],
 *   "outputs": ["logits"]            (or several: ["class", "box"]; see config.c for their losses)
 *
 * Every entry of "layers" makes one named node: a new layer called on the nodes it names, or
 * ("shared") one more call of a layer defined elsewhere in the list, with its weights. Entries
 * may come in any order; they are called once their inputs exist, so an unknown name or a
 * cycle is reported as such, naming the entries involved. */
#include "train/model.h"

#include <math.h>
#include <stdio.h>

static void add_names(cJSON *o, const char *key, const damo_model *m, int n, const int *nodes) {
  cJSON *arr = cJSON_AddArrayToObject(o, key);
  for (int k = 0; k < n; k++) cJSON_AddItemToArray(arr, cJSON_CreateString(m->nodes[nodes[k]].name));
}

void damo_model_functional_to_json(const damo_model *m, cJSON *root) {
  cJSON *inputs = cJSON_AddArrayToObject(root, "inputs");
  for (int k = 0; k < m->n_inputs; k++) {
    const damo_model_node *n = &m->nodes[m->inputs[k]];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", n->name);
    cJSON *shape = cJSON_AddArrayToObject(o, "shape");
    for (int d = 0; d < n->shape.ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)n->shape.dim[d]));
    cJSON_AddItemToArray(inputs, o);
  }
  cJSON *layers = cJSON_AddArrayToObject(root, "layers");
  for (int i = 0; i < m->n_nodes; i++) {
    const damo_model_node *n = &m->nodes[i];
    if (!n->layer) continue;
    cJSON *o;
    if (!strcmp(n->name, n->layer->name)) { /* the layer's first call defines it */
      o = damo_layer_to_json(n->layer);
    } else {
      o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "name", n->name);
      cJSON_AddStringToObject(o, "shared", n->layer->name);
    }
    add_names(o, "inputs", m, n->n_in, n->in);
    cJSON_AddItemToArray(layers, o);
  }
  int outs[DAMO_MODEL_MAX_OUTPUTS];
  for (int k = 0; k < damo_model_num_outputs(m); k++) outs[k] = damo_model_output_index(m, k);
  add_names(root, "outputs", m, damo_model_num_outputs(m), outs);
}

/* ------------------------------------------------------------------ reading */

typedef struct entry {
  damo_config_obj *o;
  const char *name, *shared; /* shared: the layer this entry calls again, or NULL */
  const char *const *inputs;
  int n_inputs;
  int node; /* once called; -1 before */
} entry;

static int find_node(const damo_model *m, const char *name) {
  for (int i = 0; i < m->n_nodes; i++)
    if (!strcmp(m->nodes[i].name, name)) return i;
  return -1;
}

static int find_entry(const entry *e, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(e[i].name, name)) return i;
  return -1;
}

/* Reads "inputs": each {"name", "shape"}. */
static damo_status parse_inputs(damo_config_obj *root, damo_model *m, const char *source) {
  int n = 0;
  TRY(damo_config_get_list(root, "inputs", 1, DAMO_MODEL_MAX_INPUTS, DAMO_CFG_REQUIRED, &n));
  for (int k = 0; k < n; k++) {
    damo_config_obj *o;
    TRY(damo_config_list_object(root, "inputs", k, &o));
    char where[64];
    snprintf(where, sizeof where, "input %d", k);
    TRY(damo_config_set_label(o, where));
    const char *name = NULL;
    int64_t shape[DAMO_MAX_DIMS];
    int ndim = 0;
    TRY(damo_config_get_string(o, "name", DAMO_CFG_REQUIRED, &name));
    TRY(damo_config_get_ints(o, "shape", 1, DAMO_MAX_DIMS - 1, 1, 1000000000000, 0, DAMO_CFG_REQUIRED, shape, &ndim));
    TRY(damo_config_close(o));
    int node;
    damo_status st = damo_model_add_input(m, name, ndim, shape, &node);
    if (st != DAMO_OK) return damo_error_prefix(st, "%s: ", source);
  }
  return DAMO_OK;
}

/* Calls entry e (its inputs all exist). */
static damo_status call_entry(damo_model *m, entry *e, const char *source) {
  int in[DAMO_LAYER_MAX_INPUTS];
  for (int k = 0; k < e->n_inputs; k++) in[k] = find_node(m, e->inputs[k]);
  damo_layer *l;
  if (e->shared) {
    TRY(damo_config_close(e->o));
    l = damo_model_find_layer(m, e->shared);
    if (!l) return damo_config_fail(e->o, "shared", DAMO_ERR_FORMAT, "no layer named '%s' is called before", e->shared);
    if (find_node(m, e->name) >= 0 || damo_model_find_layer(m, e->name))
      return damo_config_fail(e->o, "name", DAMO_ERR_FORMAT, "'%s' is already the name of another node", e->name);
  } else {
    TRY(damo_config_parse_layer(e->o, &l));
  }
  damo_status st = damo_model_append_call(m, l, e->n_inputs, in, -1, &e->node);
  if (st != DAMO_OK) return damo_error_prefix(st, "%s: ", source);
  if (e->shared) snprintf(m->nodes[e->node].name, sizeof m->nodes[e->node].name, "%s", e->name);
  return DAMO_OK;
}

/* The entry e[at] waits for: the first of its inputs (or its shared layer) not called yet. */
static int waits_for(const damo_model *m, const entry *e, int n, int at) {
  for (int k = 0; k < e[at].n_inputs; k++)
    if (find_node(m, e[at].inputs[k]) < 0) return find_entry(e, n, e[at].inputs[k]);
  return e[at].shared ? find_entry(e, n, e[at].shared) : -1;
}

/* No entry could be called: an input nobody defines, or a cycle (each entry of it waits for
 * the next). */
static damo_status report_stuck(const damo_model *m, const entry *e, int n, const char *source) {
  for (int i = 0; i < n; i++)
    for (int k = 0; e[i].node < 0 && k < e[i].n_inputs; k++)
      if (find_node(m, e[i].inputs[k]) < 0 && find_entry(e, n, e[i].inputs[k]) < 0)
        return damo_config_fail(e[i].o, "inputs", DAMO_ERR_FORMAT, "no input or layer is named '%s'", e[i].inputs[k]);
  int *path = malloc((size_t)n * sizeof *path), len = 0, at = 0;
  if (!path) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", source);
  while (e[at].node >= 0) at++;
  for (;;) { /* walk the waits until an entry repeats: from there on it is the cycle */
    int k = 0;
    while (k < len && path[k] != at) k++;
    if (k < len || at < 0) {
      char chain[512];
      int used = 0;
      for (int j = k < len ? k : 0; j < len && used < (int)sizeof chain - 70; j++)
        used += snprintf(chain + used, sizeof chain - (size_t)used, "%s -> ", e[path[j]].name);
      snprintf(chain + used, sizeof chain - (size_t)used, "%s", at >= 0 ? e[at].name : "?");
      free(path);
      return damo_error(DAMO_ERR_FORMAT, "%s: the layers form a cycle (each waits for the next): %s", source, chain);
    }
    path[len++] = at;
    at = waits_for(m, e, n, at);
  }
}

damo_status damo_model_functional_parse(damo_config_obj *root, damo_model *m, const char *source) {
  TRY(parse_inputs(root, m, source));
  int n = 0;
  TRY(damo_config_get_list(root, "layers", 1, INT32_MAX, DAMO_CFG_REQUIRED, &n));
  entry *e = calloc((size_t)n, sizeof *e);
  if (!e) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", source);
  damo_status st = DAMO_OK;
  for (int i = 0; i < n && st == DAMO_OK; i++) {
    e[i].node = -1;
    if ((st = damo_config_list_object(root, "layers", i, &e[i].o)) != DAMO_OK) break;
    const char *nm = NULL;
    if (damo_config_type_of(e[i].o, "name") == DAMO_CFG_STRING) damo_config_get_string(e[i].o, "name", 0, &nm);
    char where[160];
    snprintf(where, sizeof where, "layer %d%s%.64s%s", i, nm ? " ('" : "", nm ? nm : "", nm ? "')" : "");
    if ((st = damo_config_set_label(e[i].o, where)) != DAMO_OK) break;
    if ((st = damo_config_get_string(e[i].o, "name", DAMO_CFG_REQUIRED, &e[i].name)) != DAMO_OK) break;
    if ((st = damo_config_get_strings(e[i].o, "inputs", 1, DAMO_LAYER_MAX_INPUTS, DAMO_CFG_REQUIRED, &e[i].inputs,
                                      &e[i].n_inputs)) != DAMO_OK)
      break;
    if (damo_config_type_of(e[i].o, "shared") != DAMO_CFG_ABSENT &&
        (st = damo_config_get_string(e[i].o, "shared", 0, &e[i].shared)) != DAMO_OK)
      break;
    if (find_entry(e, i, e[i].name) >= 0 || find_node(m, e[i].name) >= 0)
      st = damo_config_fail(e[i].o, "name", DAMO_ERR_FORMAT, "'%s' names another input or layer too", e[i].name);
  }
  /* Call every entry whose inputs exist, until all are called or none can be. */
  for (int called = 0; st == DAMO_OK && called < n;) {
    int progress = 0;
    for (int i = 0; i < n && st == DAMO_OK; i++) {
      int ready = e[i].node < 0;
      for (int k = 0; ready && k < e[i].n_inputs; k++) ready = find_node(m, e[i].inputs[k]) >= 0;
      if (e[i].shared && ready) ready = damo_model_find_layer(m, e[i].shared) || find_entry(e, n, e[i].shared) < 0;
      if (!ready) continue;
      st = call_entry(m, &e[i], source);
      called++, progress = 1;
    }
    if (st == DAMO_OK && !progress) st = report_stuck(m, e, n, source);
  }
  const char *const *outs = NULL;
  int n_out = 0;
  if (st == DAMO_OK) st = damo_config_get_strings(root, "outputs", 1, 16, DAMO_CFG_REQUIRED, &outs, &n_out);
  if (st == DAMO_OK && n_out > DAMO_MODEL_MAX_OUTPUTS)
    st = damo_config_fail(root, "outputs", DAMO_ERR_FORMAT, "names %d outputs; a model has at most %d", n_out,
                          DAMO_MODEL_MAX_OUTPUTS);
  int nodes[DAMO_MODEL_MAX_OUTPUTS];
  for (int k = 0; st == DAMO_OK && k < n_out; k++) {
    nodes[k] = find_node(m, outs[k]);
    if (nodes[k] < 0) st = damo_config_fail(root, "outputs", DAMO_ERR_FORMAT, "no input or layer is named '%s'", outs[k]);
    for (int j = 0; st == DAMO_OK && j < k; j++)
      if (nodes[j] == nodes[k]) st = damo_config_fail(root, "outputs", DAMO_ERR_FORMAT, "names '%s' twice", outs[k]);
  }
  if (st == DAMO_OK && (st = damo_model_set_outputs(m, n_out, nodes)) != DAMO_OK)
    damo_error_prefix(st, "%s: ", source);
  free(e);
  return st;
}

/* ------------------------------------------------------------------ several outputs' compile
 *
 * Keras' compile arguments for a model of several outputs, each output named as in "outputs":
 *   "loss":         "mse" (every output) | ["sparse_categorical_crossentropy", "mse"] (in the
 *                   outputs' order) | {"class": "sparse_categorical_crossentropy", "box": "mse"}
 *                   (every output named)
 *   "loss_weights": [1.0, 0.5] | {"box": 0.5} (an output left out weighs 1); each > 0
 *   "metrics":      ["accuracy"] (every output) | {"class": ["accuracy"]} (left out: none)
 * The loss trained is the weighted sum of the outputs' losses. */

static damo_status one_loss(damo_config_obj *root, const char *name, const char *output, damo_loss *out) {
  if (damo_loss_parse(name, out) == DAMO_OK) return DAMO_OK;
  return damo_config_fail(root, NULL, DAMO_ERR_FORMAT, "'loss'%s%s%s: %s", output ? " of output '" : "",
                          output ? output : "", output ? "'" : "", damo_last_error());
}

/* "a, b" for messages. */
static const char *output_list(const damo_model *m) {
  static _Thread_local char buf[DAMO_MODEL_MAX_OUTPUTS * (DAMO_NAME_MAX + 2)];
  size_t w = 0;
  buf[0] = '\0';
  for (int k = 0; k < damo_model_num_outputs(m) && w < sizeof buf; k++)
    w += (size_t)snprintf(buf + w, sizeof buf - w, "%s%s", k ? ", " : "", damo_model_output_node_at(m, k)->name);
  return buf;
}

static damo_status parse_output_losses(damo_config_obj *root, damo_model *m, const char *const *names) {
  const int n = damo_model_num_outputs(m);
  damo_output_compile *oc = m->copt.outputs;
  const char *one = NULL, *const *list = NULL;
  int count = 0;
  damo_config_obj *o;
  switch (damo_config_type_of(root, "loss")) {
  case DAMO_CFG_ABSENT: return DAMO_OK;
  case DAMO_CFG_STRING:
    TRY(damo_config_get_string(root, "loss", 0, &one));
    TRY(one_loss(root, one, NULL, &oc[0].loss));
    for (int k = 1; k < n; k++) oc[k].loss = oc[0].loss;
    return DAMO_OK;
  case DAMO_CFG_ARRAY:
    TRY(damo_config_get_strings(root, "loss", 1, 64, 0, &list, &count));
    if (count != n)
      return damo_config_fail(root, "loss", DAMO_ERR_FORMAT, "lists %d losses for %d outputs (%s)", count, n,
                              output_list(m));
    for (int k = 0; k < n; k++) TRY(one_loss(root, list[k], names[k], &oc[k].loss));
    return DAMO_OK;
  case DAMO_CFG_OBJECT:
    TRY(damo_config_get_object(root, "loss", 0, &o));
    for (int k = 0; k < n; k++) {
      if (damo_config_type_of(o, names[k]) == DAMO_CFG_ABSENT)
        return damo_config_fail(root, "loss", DAMO_ERR_FORMAT, "has no loss for output '%s' (outputs: %s)", names[k],
                                output_list(m));
      TRY(damo_config_get_string(o, names[k], 0, &one));
      TRY(one_loss(root, one, names[k], &oc[k].loss));
    }
    return damo_config_close(o); /* a key that names no output */
  default:
    return damo_config_fail(root, "loss", DAMO_ERR_FORMAT,
                            "must be a loss name, a list of one per output, or an object by output name (%s)",
                            output_list(m));
  }
}

static damo_status parse_output_weights(damo_config_obj *root, damo_model *m, const char *const *names) {
  const int n = damo_model_num_outputs(m);
  damo_output_compile *oc = m->copt.outputs;
  damo_config_obj *o;
  double w[64];
  int count = 0;
  switch (damo_config_type_of(root, "loss_weights")) {
  case DAMO_CFG_ABSENT: return DAMO_OK;
  case DAMO_CFG_ARRAY:
    TRY(damo_config_get_doubles(root, "loss_weights", 1, 64, 0, HUGE_VAL, DAMO_CFG_LO_OPEN, w, &count));
    if (count != n)
      return damo_config_fail(root, "loss_weights", DAMO_ERR_FORMAT, "lists %d weights for %d outputs (%s)", count, n,
                              output_list(m));
    for (int k = 0; k < n; k++) oc[k].loss_weight = (float)w[k];
    return DAMO_OK;
  case DAMO_CFG_OBJECT:
    TRY(damo_config_get_object(root, "loss_weights", 0, &o));
    for (int k = 0; k < n; k++) TRY(damo_config_get_float(o, names[k], 0, HUGE_VAL, DAMO_CFG_LO_OPEN, &oc[k].loss_weight));
    return damo_config_close(o);
  default:
    return damo_config_fail(root, "loss_weights", DAMO_ERR_FORMAT,
                            "must be a list of one weight per output, or an object by output name (%s)", output_list(m));
  }
}

static damo_status parse_output_metrics(damo_config_obj *root, damo_model *m, const char *const *names) {
  const int n = damo_model_num_outputs(m);
  damo_output_compile *oc = m->copt.outputs;
  const char *const *list = NULL;
  int count = 0;
  damo_config_obj *o;
  char where[DAMO_NAME_MAX + 32];
  switch (damo_config_type_of(root, "metrics")) {
  case DAMO_CFG_ABSENT: return DAMO_OK;
  case DAMO_CFG_ARRAY:
    TRY(damo_config_get_strings(root, "metrics", 0, 64, 0, &list, &count));
    TRY(damo_config_metrics(root, "'metrics'", list, count, &oc[0].metrics));
    for (int k = 1; k < n; k++) oc[k].metrics = oc[0].metrics;
    return DAMO_OK;
  case DAMO_CFG_OBJECT:
    TRY(damo_config_get_object(root, "metrics", 0, &o));
    for (int k = 0; k < n; k++) {
      snprintf(where, sizeof where, "'metrics' of output '%s'", names[k]);
      if (damo_config_type_of(o, names[k]) == DAMO_CFG_STRING) {
        const char *one = NULL;
        TRY(damo_config_get_string(o, names[k], 0, &one));
        TRY(damo_config_metrics(root, where, &one, 1, &oc[k].metrics));
        continue;
      }
      list = NULL, count = 0;
      TRY(damo_config_get_strings(o, names[k], 0, 64, 0, &list, &count));
      TRY(damo_config_metrics(root, where, list, count, &oc[k].metrics));
    }
    return damo_config_close(o);
  default:
    return damo_config_fail(root, "metrics", DAMO_ERR_FORMAT,
                            "must be a list of metric names, or an object by output name (%s)", output_list(m));
  }
}

damo_status damo_config_parse_output_compile(damo_config_obj *root, damo_model *m) {
  const int n = damo_model_num_outputs(m);
  const char *names[DAMO_MODEL_MAX_OUTPUTS];
  damo_compile_options *c = &m->copt;
  c->n_outputs = n;
  for (int k = 0; k < n; k++) {
    names[k] = damo_model_output_node_at(m, k)->name;
    c->outputs[k] = (damo_output_compile){DAMO_LOSS_SPARSE_CATEGORICAL_CE, 1.0f, 0};
  }
  TRY(parse_output_losses(root, m, names));
  TRY(parse_output_weights(root, m, names));
  TRY(parse_output_metrics(root, m, names));
  c->loss = c->outputs[0].loss, c->metrics = c->outputs[0].metrics;
  if (damo_model_check_output_compile(m, c, "compile") != DAMO_OK)
    return damo_config_fail(root, NULL, DAMO_ERR_FORMAT, "%s", damo_last_error());
  return DAMO_OK;
}

void damo_output_compile_to_json(const damo_model *m, cJSON *root) {
  cJSON *loss = cJSON_AddObjectToObject(root, "loss"), *weights = cJSON_AddObjectToObject(root, "loss_weights");
  cJSON *metrics = cJSON_AddObjectToObject(root, "metrics");
  for (int k = 0; k < damo_model_num_outputs(m); k++) {
    const char *name = damo_model_output_node_at(m, k)->name;
    const damo_output_compile oc = damo_model_output_compile(m, k);
    cJSON_AddStringToObject(loss, name, damo_loss_name(oc.loss));
    cJSON_AddNumberToObject(weights, name, oc.loss_weight);
    cJSON_AddItemToObject(metrics, name, damo_metrics_to_json(oc.metrics));
  }
}
