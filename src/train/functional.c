/* functional.c - a model as a graph of layer calls (Keras' functional API). Inputs and layer
 * calls are the model's nodes; a call names the nodes it takes, so a model can branch, join
 * (merge layers), take several inputs and call one layer more than once (shared weights: a
 * layer's slots are created once and its graph params are one node per graph, so the
 * gradients of its calls add up). A Sequential model is the same list, each layer called on
 * the node before it, so both kinds share every step after this file: build, graphs,
 * fit/evaluate/predict, save and load.
 *
 * Builder calls return a node number, or -1 after a failure; a failure is also kept in the
 * model, so a chain of calls is checked once, where the output is set. */
#include "train/model.h"

#include <stdio.h>

damo_model *damo_functional_new(void) {
  damo_model *m = calloc(1, sizeof *m);
  if (!m) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for a model");
    return NULL;
  }
  m->functional = 1;
  m->output = -1;
  return m;
}

static damo_status grow_nodes(damo_model *m) {
  if (m->n_nodes < m->cap_nodes) return DAMO_OK;
  int cap = m->cap_nodes ? m->cap_nodes * 2 : 16;
  damo_model_node *nodes = realloc(m->nodes, (size_t)cap * sizeof *nodes);
  if (!nodes) return damo_error(DAMO_ERR_NOMEM, "out of memory for a model node");
  m->nodes = nodes;
  m->cap_nodes = cap;
  return DAMO_OK;
}

/* The index of the node named name, or -1. */
static int node_named(const damo_model *m, const char *name) {
  for (int i = 0; i < m->n_nodes; i++)
    if (!strcmp(m->nodes[i].name, name)) return i;
  return -1;
}

static int layer_index(const damo_model *m, const damo_layer *l) {
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i] == l) return i;
  return -1;
}

/* Keeps the first failure of a functional builder call. */
static int builder_fail(damo_model *m, damo_status st) {
  if (m && m->builder_status == DAMO_OK) {
    m->builder_status = st;
    snprintf(m->builder_error, sizeof m->builder_error, "%s", damo_last_error());
  }
  return -1;
}

damo_status damo_model_add_input(damo_model *m, const char *name, int ndim, const int64_t *shape, int *out) {
  *out = -1;
  if (m->built) return damo_error(DAMO_ERR_STATE, "model input: the model is already built");
  if (m->n_inputs == DAMO_MODEL_MAX_INPUTS)
    return damo_error(DAMO_ERR_INVALID_ARG, "model input '%s': a model takes at most %d inputs", name ? name : "",
                      DAMO_MODEL_MAX_INPUTS);
  if (ndim < 1 || ndim > DAMO_MAX_DIMS - 1 || !shape)
    return damo_error(DAMO_ERR_SHAPE, "model input '%s': rank %d is outside 1..%d (the batch axis is added)",
                      name ? name : "", ndim, DAMO_MAX_DIMS - 1);
  for (int i = 0; i < ndim; i++)
    if (shape[i] <= 0)
      return damo_error(DAMO_ERR_SHAPE, "model input '%s': dimension %d is %lld, expected > 0", name ? name : "", i,
                        (long long)shape[i]);
  char auto_name[DAMO_NAME_MAX];
  snprintf(auto_name, sizeof auto_name, "input_%d", m->n_inputs + 1);
  if (!name || !*name) name = auto_name;
  if (strlen(name) >= DAMO_NAME_MAX)
    return damo_error(DAMO_ERR_INVALID_ARG, "model input '%.40s...': names are at most %d bytes", name, DAMO_NAME_MAX - 1);
  if (node_named(m, name) >= 0 || damo_model_find_layer(m, name))
    return damo_error(DAMO_ERR_INVALID_ARG, "model input '%s': the name is already taken", name);
  damo_status st = grow_nodes(m);
  if (st != DAMO_OK) return st;
  damo_model_node *n = &m->nodes[m->n_nodes];
  memset(n, 0, sizeof *n);
  snprintf(n->name, sizeof n->name, "%s", name);
  n->dtype = DAMO_F32;
  n->shape.ndim = ndim;
  memcpy(n->shape.dim, shape, (size_t)ndim * sizeof *shape);
  if (m->n_inputs == 0) {
    m->in_ndim = ndim;
    memcpy(m->in_shape, shape, (size_t)ndim * sizeof *shape);
  }
  m->inputs[m->n_inputs++] = m->n_nodes;
  *out = m->n_nodes++;
  return DAMO_OK;
}

int damo_model_input(damo_model *m, const char *name, int ndim, const int64_t *shape) {
  if (!m) return -1;
  if (!m->functional) return builder_fail(m, damo_error(DAMO_ERR_INVALID_ARG, "model input: a Sequential model has "
                                                        "its one input; make the model with damo_functional_new"));
  int node;
  damo_status st = damo_model_add_input(m, name, ndim, shape, &node);
  return st == DAMO_OK ? node : builder_fail(m, st);
}

damo_layer *damo_model_find_layer(const damo_model *m, const char *name) {
  for (int i = 0; m && name && i < m->n_layers; i++)
    if (!strcmp(m->layers[i]->name, name)) return m->layers[i];
  return NULL;
}

/* The token-id rule: a layer that reads ids (embedding, token_and_position_embedding: its
 * type's takes_ids) takes a model input, which then holds i32 ids and feeds nothing else. */
static damo_status check_ids_input(damo_model *m, const damo_layer *l, int n_in, const int *in) {
  const int reads_ids = l->type->takes_ids;
  for (int k = 0; k < n_in; k++) {
    damo_model_node *src = &m->nodes[in[k]];
    if (reads_ids && src->layer)
      return damo_error(DAMO_ERR_INVALID_ARG, "%s layer '%s' must take a model input (token ids), not the output of "
                        "'%s'", l->type->type, l->name, src->name);
    if (!reads_ids && src->dtype == DAMO_I32)
      return damo_error(DAMO_ERR_INVALID_ARG, "layer '%s' (%s) takes input '%s', which holds token ids (only "
                        "embedding and token_and_position_embedding layers may read it)", l->name, l->type->type,
                        src->name);
    if (reads_ids && !src->layer) {
      for (int i = 0; i < m->n_nodes; i++)
        for (int j = 0; j < m->nodes[i].n_in; j++)
          if (m->nodes[i].in[j] == in[k] && !m->nodes[i].layer->type->takes_ids)
            return damo_error(DAMO_ERR_INVALID_ARG, "%s layer '%s' takes input '%s', which layer '%s' already reads as "
                              "numbers (an input of token ids feeds only embedding layers)", l->type->type, l->name,
                              src->name, m->nodes[i].name);
      src->dtype = DAMO_I32;
    }
  }
  return DAMO_OK;
}

/* Infers l's output from the nodes it takes (first call), or checks that a later call gets
 * the shapes the first one did (the weights were made for them). */
static damo_status infer_call(damo_model *m, damo_layer *l, int n_in, const int *in, int first_call) {
  const int max_in = l->type->max_inputs ? l->type->max_inputs : 1;
  const int min_in = !l->type->max_inputs ? 1 : l->type->min_inputs ? l->type->min_inputs : 2;
  if (n_in < min_in || n_in > max_in) {
    char count[32];
    if (min_in == max_in) snprintf(count, sizeof count, "%d input%s", min_in, min_in == 1 ? "" : "s");
    else snprintf(count, sizeof count, "%d to %d inputs", min_in, max_in);
    return damo_error(DAMO_ERR_INVALID_ARG, "layer '%s' (%s) takes %s, got %d", l->name, l->type->type, count, n_in);
  }
  if (!first_call) {
    int same = n_in == l->n_in;
    for (int k = 0; same && k < n_in; k++) {
      const damo_layer_shape *a = &m->nodes[in[k]].shape, *b = &l->ins[k];
      same = a->ndim == b->ndim && !memcmp(a->dim, b->dim, (size_t)a->ndim * sizeof *a->dim);
    }
    if (!same) {
      char a[96], b[96];
      return damo_error(DAMO_ERR_SHAPE, "layer '%s' is shared: this call takes %s from '%s', its first call took %s",
                        l->name, damo_shape_string(m->nodes[in[0]].shape.ndim, m->nodes[in[0]].shape.dim, a, sizeof a),
                        m->nodes[in[0]].name, damo_shape_string(l->ins[0].ndim, l->ins[0].dim, b, sizeof b));
    }
    return DAMO_OK;
  }
  l->n_in = n_in;
  for (int k = 0; k < n_in; k++) l->ins[k] = m->nodes[in[k]].shape;
  l->in_ndim = l->ins[0].ndim;
  memcpy(l->in_shape, l->ins[0].dim, sizeof l->in_shape);
  return l->type->infer(l);
}

damo_status damo_model_append_call(damo_model *m, damo_layer *l, int n_in, const int *in, int seq_index, int *out) {
  *out = -1;
  if (m->built) {
    damo_status st = damo_error(DAMO_ERR_STATE, "layer call: the model is already built; add layers before build/compile");
    if (layer_index(m, l) < 0) damo_layer_free(l);
    return st;
  }
  const int first_call = layer_index(m, l) < 0;
  damo_status st = DAMO_OK;
  if (first_call) {
    /* Keras-style default names: dense_1, dense_2, ... counted per type. */
    if (!l->named) {
      int same = 0;
      for (int i = 0; i < m->n_layers; i++) same += m->layers[i]->type == l->type;
      snprintf(l->name, sizeof l->name, "%s_%d", l->type->type, same + 1);
    }
    if (damo_model_find_layer(m, l->name) || node_named(m, l->name) >= 0)
      st = damo_error(DAMO_ERR_INVALID_ARG, "%sa layer named '%s' already exists", seq_index >= 0 ? "model_add: " : "",
                      l->name);
  }
  for (int k = 0; st == DAMO_OK && k < n_in; k++)
    if (in[k] < 0 || in[k] >= m->n_nodes)
      st = damo_error(DAMO_ERR_INVALID_ARG, "layer '%s': input %d is not a node of this model (%d)", l->name, k, in[k]);
  if (st == DAMO_OK) st = check_ids_input(m, l, n_in, in);
  if (st == DAMO_OK && (st = infer_call(m, l, n_in, in, first_call)) != DAMO_OK && first_call) {
    if (seq_index >= 0) damo_error_prefix(st, "layer %d ('%s', %s): ", seq_index, l->name, l->type->type);
    else damo_error_prefix(st, "layer '%s' (%s): ", l->name, l->type->type);
  }
  if (st == DAMO_OK) st = grow_nodes(m);
  if (st == DAMO_OK && first_call && m->n_layers == m->cap_layers) {
    int cap = m->cap_layers ? m->cap_layers * 2 : 8;
    damo_layer **ls = realloc(m->layers, (size_t)cap * sizeof *ls);
    if (!ls) st = damo_error(DAMO_ERR_NOMEM, "out of memory adding a layer");
    else m->layers = ls, m->cap_layers = cap;
  }
  if (st != DAMO_OK) {
    if (first_call) damo_layer_free(l);
    return st;
  }
  if (first_call) m->layers[m->n_layers++] = l;
  l->calls++;
  damo_model_node *n = &m->nodes[m->n_nodes];
  memset(n, 0, sizeof *n);
  n->layer = l;
  if (l->calls == 1) snprintf(n->name, sizeof n->name, "%s", l->name);
  else snprintf(n->name, sizeof n->name, "%.*s_%d", DAMO_NAME_MAX - 12, l->name, l->calls);
  n->n_in = n_in;
  memcpy(n->in, in, (size_t)n_in * sizeof *in);
  n->dtype = DAMO_F32;
  n->shape.ndim = l->out_ndim;
  memcpy(n->shape.dim, l->out_shape, sizeof n->shape.dim);
  *out = m->n_nodes++;
  return DAMO_OK;
}

int damo_model_call(damo_model *m, damo_layer *l, int n_in, const int *in) {
  if (!m || !l) {
    damo_layer_free(l);
    return builder_fail(m, damo_error(DAMO_ERR_INVALID_ARG, "layer call: NULL %s", m ? "layer" : "model"));
  }
  if (m->builder_status != DAMO_OK) { /* the first failure stands; the layer is still the model's to free */
    if (layer_index(m, l) < 0) damo_layer_free(l);
    return -1;
  }
  if (n_in < 1 || n_in > DAMO_LAYER_MAX_INPUTS || !in) {
    if (layer_index(m, l) < 0) damo_layer_free(l);
    return builder_fail(m, damo_error(DAMO_ERR_INVALID_ARG, "layer call: %d inputs (1..%d)", n_in, DAMO_LAYER_MAX_INPUTS));
  }
  int node;
  damo_status st = damo_model_append_call(m, l, n_in, in, -1, &node);
  return st == DAMO_OK ? node : builder_fail(m, st);
}

int damo_model_call1(damo_model *m, damo_layer *l, int x) { return damo_model_call(m, l, 1, &x); }

int damo_model_call2(damo_model *m, damo_layer *l, int a, int b) {
  const int in[2] = {a, b};
  return damo_model_call(m, l, 2, in);
}

/* Marks in `reach` every node the output depends on. */
static void mark_reach(const damo_model *m, int node, char *reach) {
  if (reach[node]) return;
  reach[node] = 1;
  for (int k = 0; k < m->nodes[node].n_in; k++) mark_reach(m, m->nodes[node].in[k], reach);
}

damo_status damo_model_set_outputs(damo_model *m, int n, const int *nodes) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "set_output: NULL model");
  if (m->builder_status != DAMO_OK)
    return damo_error(m->builder_status, "set_output: an earlier layer call failed: %s", m->builder_error);
  if (n > 1 && !m->functional)
    return damo_error(DAMO_ERR_INVALID_ARG, "set_outputs: a Sequential model has one output");
  if (n > 1 && m->built) return damo_error(DAMO_ERR_STATE, "set_outputs: the model is already built");
  if (n < 1 || n > DAMO_MODEL_MAX_OUTPUTS || !nodes)
    return damo_error(DAMO_ERR_INVALID_ARG, "set_outputs: %d outputs (1..%d)", n, DAMO_MODEL_MAX_OUTPUTS);
  for (int k = 0; k < n; k++) {
    const int node = nodes[k];
    if (node < 0 || node >= m->n_nodes)
      return damo_error(DAMO_ERR_INVALID_ARG, "set_output: %d is not a node of this model", node);
    if (!m->nodes[node].layer)
      return damo_error(DAMO_ERR_INVALID_ARG, "set_output: '%s' is a model input; the output must be a layer's",
                        m->nodes[node].name);
    for (int j = 0; j < k; j++)
      if (nodes[j] == node)
        return damo_error(DAMO_ERR_INVALID_ARG, "set_outputs: '%s' is given twice", m->nodes[node].name);
  }
  char *reach = calloc((size_t)m->n_nodes, 1);
  if (!reach) return damo_error(DAMO_ERR_NOMEM, "set_output: out of memory");
  for (int k = 0; k < n; k++) mark_reach(m, nodes[k], reach);
  damo_status st = DAMO_OK;
  for (int i = 0; i < m->n_nodes && st == DAMO_OK; i++)
    if (!reach[i])
      st = damo_error(DAMO_ERR_INVALID_ARG, "%s '%s' does not lead to the output%s '%s'%s (a model uses every input "
                      "and layer call it has)", m->nodes[i].layer ? "layer call" : "input", m->nodes[i].name,
                      n > 1 ? "s" : "", m->nodes[nodes[0]].name, n > 1 ? ", ..." : "");
  free(reach);
  if (st != DAMO_OK) return st;
  m->output = nodes[0];
  m->n_outputs = n;
  memcpy(m->outputs, nodes, (size_t)n * sizeof *nodes);
  return DAMO_OK;
}

damo_status damo_model_set_output(damo_model *m, int node) { return damo_model_set_outputs(m, 1, &node); }

int damo_model_num_outputs(const damo_model *m) { return !m ? 0 : m->n_outputs > 1 ? m->n_outputs : 1; }

int damo_model_output_index(const damo_model *m, int k) {
  if (k > 0) return m->outputs[k];
  return m->output >= 0 ? m->output : m->n_nodes - 1;
}

const damo_model_node *damo_model_output_node_at(const damo_model *m, int k) {
  if (!m || m->n_nodes == 0 || k < 0 || k >= damo_model_num_outputs(m)) return NULL;
  return &m->nodes[damo_model_output_index(m, k)];
}

const damo_model_node *damo_model_output_node(const damo_model *m) { return damo_model_output_node_at(m, 0); }

damo_layer *damo_model_output_layer(const damo_model *m) {
  const damo_model_node *n = damo_model_output_node(m);
  return n ? n->layer : NULL;
}

int damo_model_output_info(const damo_model *m, int k, const char **name, int64_t *shape) {
  const damo_model_node *n = damo_model_output_node_at(m, k);
  if (!n) return 0;
  if (name) *name = n->name;
  if (shape) memcpy(shape, n->shape.dim, (size_t)n->shape.ndim * sizeof *shape);
  return n->shape.ndim;
}

int damo_model_num_inputs(const damo_model *m) { return m ? m->n_inputs : 0; }

int damo_model_input_info(const damo_model *m, int k, const char **name, int64_t *shape, damo_dtype *dtype) {
  if (!m || k < 0 || k >= m->n_inputs) return 0;
  const damo_model_node *n = &m->nodes[m->inputs[k]];
  if (name) *name = n->name;
  if (shape) memcpy(shape, n->shape.dim, (size_t)n->shape.ndim * sizeof *shape);
  if (dtype) *dtype = n->dtype;
  return n->shape.ndim;
}

/* ------------------------------------------------------------------ into a graph */

damo_status damo_model_set_recompute(damo_model *m, int on) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "model_set_recompute: NULL model");
  if (m->recompute == (on != 0)) return DAMO_OK;
  m->recompute = on != 0;
  damo_model_graph_release(&m->train); /* planned again on the next step */
  return DAMO_OK;
}

void damo_model_set_keep_forward(damo_model *m, int on) {
  if (!m || m->keep_forward == (on != 0)) return;
  m->keep_forward = on != 0;
  damo_model_graph_release(&m->train);
  damo_model_graph_release(&m->distill_graph);
}

int damo_model_node_index(const damo_model *m, const char *name) {
  for (int i = 0; m && name && i < m->n_nodes; i++)
    if (!strcmp(m->nodes[i].name, name)) return i;
  return -1;
}

damo_status damo_model_build_nodes(damo_model *m, damo_graph *g, int64_t batch, damo_node **xs, damo_node **out,
                                   damo_node **pre_out) {
  return damo_model_build_nodes_at(m, g, batch, xs, out, pre_out, -1, NULL, NULL, NULL);
}

damo_status damo_model_build_nodes_at(damo_model *m, damo_graph *g, int64_t batch, damo_node **xs, damo_node **out,
                                      damo_node **pre_out, int tap, damo_node **tapped, damo_tap_rewrite rewrite,
                                      void *ctx) {
  damo_node **value = calloc((size_t)m->n_nodes * 3, sizeof *value);
  if (!value) return damo_error(DAMO_ERR_NOMEM, "out of memory building the model graph");
  damo_node **pre = value + m->n_nodes, **mask = pre + m->n_nodes;
  int k_input = 0;
  for (int i = 0; i < m->n_nodes; i++) {
    damo_model_node *n = &m->nodes[i];
    if (!n->layer) {
      int64_t shape[DAMO_MAX_DIMS];
      shape[0] = batch;
      memcpy(shape + 1, n->shape.dim, (size_t)n->shape.ndim * sizeof *shape);
      value[i] = pre[i] = xs[k_input++] = damo_input(g, n->name, n->dtype, n->shape.ndim + 1, shape);
      continue;
    }
    damo_layer *l = n->layer;
    const int segment = m->recompute && l->type->recompute_unit;
    if (segment) damo_graph_recompute_begin(g);
    if (l->type->max_inputs) {
      damo_node *ins[DAMO_LAYER_MAX_INPUTS];
      for (int k = 0; k < n->n_in; k++) ins[k] = value[n->in[k]], l->in_masks[k] = mask[n->in[k]];
      l->in_mask = mask[n->in[0]];
      l->out_mask = NULL; /* merges drop timestep masks */
      value[i] = pre[i] = l->type->build_multi(l, g, n->n_in, ins);
      mask[i] = l->out_mask;
      if (segment) damo_graph_recompute_end(g);
      continue;
    }
    l->in_mask = mask[n->in[0]]; /* the timestep mask its input carries */
    l->out_mask = NULL;
    value[i] = l->type->build(l, g, value[n->in[0]], &pre[i]);
    mask[i] = l->out_mask;
    if (i == tap && rewrite) { /* what the later layers read instead (the tapped value stays readable) */
      if (tapped) *tapped = value[i];
      value[i] = pre[i] = rewrite(ctx, g, value[i]);
    }
    if (segment) damo_graph_recompute_end(g);
  }
  for (int k = 0; k < damo_model_num_outputs(m); k++) {
    const int o = damo_model_output_index(m, k);
    out[k] = value[o];
    pre_out[k] = pre[o];
  }
  if (tapped && !rewrite && tap >= 0 && tap < m->n_nodes) *tapped = value[tap];
  free(value);
  return damo_graph_status(g);
}

/* ------------------------------------------------------------------ summary */

/* "name (type)", the summary's first column. */
static void summary_label(const damo_model_node *n, char *label, size_t cap) {
  snprintf(label, cap, "%.50s (%s)", n->name, n->layer ? n->layer->type->type : "InputLayer");
}

static void put_chars(FILE *f, char c, int n) {
  for (int i = 0; i < n; i++) fputc(c, f);
}

damo_status damo_model_summary(damo_model *m, FILE *f) {
  if (!m || !f) return damo_error(DAMO_ERR_INVALID_ARG, "model_summary: NULL argument");
  char shape[96], full[128], label[96];
  const int wide = m->functional; /* Keras adds "Connected to" for functional models */
  int width = 36; /* the first column grows for long names and types (token_and_position_embedding) */
  for (int i = 0; i < m->n_nodes; i++) {
    summary_label(&m->nodes[i], label, sizeof label);
    if ((int)strlen(label) > width) width = (int)strlen(label);
  }
  const int line = width + 35 + (wide ? 28 : 0);
  fprintf(f, "Model: \"%s\"\n", wide ? "functional" : "sequential");
  put_chars(f, '_', line);
  fprintf(f, "\n %-*s %-22s %10s%s\n", width, "Layer (type)", "Output Shape", "Param #", wide ? "  Connected to" : "");
  put_chars(f, '=', line);
  fprintf(f, "\n");
  int64_t trainable = 0, frozen = 0;
  for (int i = 0; i < m->n_layers; i++)
    for (int p = 0; p < m->layers[i]->n_params; p++) {
      const damo_param_slot *s = &m->layers[i]->params[p];
      int64_t n = 1;
      for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
      *(s->frozen ? &frozen : &trainable) += n;
    }
  int printed = 0;
  for (int i = 0; i < m->n_nodes; i++) {
    const damo_model_node *n = &m->nodes[i];
    if (!n->layer && !wide) continue; /* a Sequential's input is not a row */
    int64_t np = 0;
    if (n->layer && n->layer->calls > 0 && !strcmp(n->name, n->layer->name)) /* weights counted at the first call */
      for (int p = 0; p < n->layer->n_params; p++) {
        int64_t c = 1;
        for (int d = 0; d < n->layer->params[p].ndim; d++) c *= n->layer->params[p].shape[d];
        np += c;
      }
    damo_shape_string(n->shape.ndim, n->shape.dim, shape, sizeof shape);
    snprintf(full, sizeof full, "(None, %s", shape + 1); /* Keras writes the batch as None */
    if (n->shape.ndim == 1) snprintf(full, sizeof full, "(None, %lld)", (long long)n->shape.dim[0]);
    summary_label(n, label, sizeof label);
    if (printed++) fprintf(f, "\n");
    fprintf(f, " %-*s %-22s %10lld", width, label, full, (long long)np);
    for (int k = 0; wide && k < n->n_in; k++) {
      if (k) {
        fprintf(f, ",\n");
        put_chars(f, ' ', width + 37); /* under the first input's name */
      } else {
        fprintf(f, "  ");
      }
      fprintf(f, "%s", m->nodes[n->in[k]].name);
    }
    fprintf(f, "\n");
  }
  put_chars(f, '=', line);
  for (int k = 0; damo_model_num_outputs(m) > 1 && k < damo_model_num_outputs(m); k++)
    fprintf(f, "%s%s", k ? ", " : "\nOutputs: ", damo_model_output_node_at(m, k)->name);
  fprintf(f, "\nTotal params: %lld (%.2f KB)\nTrainable params: %lld\nNon-trainable params: %lld\n",
          (long long)(trainable + frozen), (double)(trainable + frozen) * 4.0 / 1024.0, (long long)trainable,
          (long long)frozen);
  for (int i = 0, k = 0; m->quantization && i < m->n_layers; i++)
    if (m->layers[i]->quant) fprintf(f, "%s%s", k++ ? ", " : "Int8 layers: ", m->layers[i]->name);
  if (m->quantization) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(m->quantization, "activations");
    fprintf(f, " (kernels int8 per output channel, %s uint8 inputs)\n", cJSON_IsString(a) ? a->valuestring : "?");
  }
  put_chars(f, '_', line);
  fprintf(f, "\n");
  return DAMO_OK;
}
