/* model.c - the model: the Sequential shorthand (each layer called on the one before,
 * through functional.c's node list), creating the weights in one flat block, compile, and
 * the graphs behind fit/evaluate/predict.
 *
 * Classification losses read logits: when the last layer ends in softmax (sparse CE) or
 * sigmoid (binary CE) the loss takes the node before that activation, which is both
 * stabler and cheaper, and the activation is applied for predict. */
#include "train/history.h"
#include "train/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

damo_model *damo_sequential_new(int ndim, const int64_t *input_shape) {
  if (ndim < 1 || ndim > DAMO_MAX_DIMS - 1) {
    damo_error(DAMO_ERR_SHAPE, "sequential: input rank %d is outside 1..%d (the batch axis is added)", ndim,
               DAMO_MAX_DIMS - 1);
    return NULL;
  }
  for (int i = 0; i < ndim; i++)
    if (input_shape[i] <= 0) {
      damo_error(DAMO_ERR_SHAPE, "sequential: input dimension %d is %lld, expected > 0", i, (long long)input_shape[i]);
      return NULL;
    }
  damo_model *m = calloc(1, sizeof *m);
  if (!m) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for a model");
    return NULL;
  }
  m->output = -1;
  int node;
  if (damo_model_add_input(m, "input", ndim, input_shape, &node) != DAMO_OK) {
    damo_model_free(m);
    return NULL;
  }
  return m;
}

void damo_model_graph_release(damo_model_graph *mg) {
  damo_graph_free(mg->g);
  for (int k = 0; k < DAMO_MODEL_MAX_INPUTS; k++) damo_free(mg->x_stages[k]);
  for (int k = 0; k < DAMO_MODEL_MAX_OUTPUTS; k++) damo_free(mg->heads[k].y_stage);
  damo_free(mg->soft_stage);
  memset(mg, 0, sizeof *mg);
}

void damo_model_free(damo_model *m) {
  if (!m) return;
  for (int i = 0; i < m->n_layers; i++) {
    for (int p = 0; p < m->layers[i]->n_params; p++) {
      damo_tensor_free(m->layers[i]->params[p].value);
      damo_tensor_free(m->layers[i]->params[p].grad);
    }
    damo_layer_free(m->layers[i]);
  }
  free(m->layers);
  free(m->nodes);
  param_store_free(&m->params);
  param_store_free(&m->state);
  damo_optimizer_free(m->opt);
  damo_model_graph_release(&m->train);
  damo_model_graph_release(&m->infer);
  damo_model_graph_release(&m->distill_graph);
  cJSON_Delete(m->fit_defaults);
  cJSON_Delete(m->quantization);
  free(m->config_source);
  for (int i = 0; i < m->n_class_names; i++) free(m->class_names[i]);
  free(m->class_names);
  free(m);
}

damo_status damo_model_set_class_names(damo_model *m, int n, const char *const *names) {
  if (!m || n < 0 || (n && !names)) return damo_error(DAMO_ERR_INVALID_ARG, "set_class_names: bad arguments");
  if (n && damo_model_output_layer(m)) { /* one name per class: a single (sigmoid) output has two */
    const damo_layer *last = damo_model_output_layer(m);
    int64_t outputs = 1;
    for (int d = 0; d < last->out_ndim; d++) outputs *= last->out_shape[d];
    int64_t classes = outputs == 1 ? 2 : outputs;
    if (n != classes)
      return damo_error(DAMO_ERR_INVALID_ARG, "%d class names for a model with %lld classes (last layer '%s' has %lld "
                        "outputs)", n, (long long)classes, last->name, (long long)outputs);
  }
  char **copy = n ? calloc((size_t)n, sizeof *copy) : NULL;
  if (n && !copy) return damo_error(DAMO_ERR_NOMEM, "set_class_names: out of memory");
  for (int i = 0; i < n; i++) {
    if (!names[i] || !(copy[i] = strdup(names[i]))) {
      for (int k = 0; k < i; k++) free(copy[k]);
      free(copy);
      return names[i] ? damo_error(DAMO_ERR_NOMEM, "set_class_names: out of memory")
                      : damo_error(DAMO_ERR_INVALID_ARG, "set_class_names: name %d is NULL", i);
    }
  }
  for (int i = 0; i < m->n_class_names; i++) free(m->class_names[i]);
  free(m->class_names);
  m->class_names = copy;
  m->n_class_names = n;
  return DAMO_OK;
}

int damo_model_input_shape(const damo_model *m, int64_t *shape) {
  if (!m) return 0;
  if (shape) memcpy(shape, m->in_shape, (size_t)m->in_ndim * sizeof *shape);
  return m->in_ndim;
}

int damo_model_class_names(const damo_model *m, const char *const **names) {
  if (names) *names = m ? (const char *const *)m->class_names : NULL;
  return m ? m->n_class_names : 0;
}

damo_status damo_model_add(damo_model *m, damo_layer *l) {
  if (!m || !l) {
    damo_layer_free(l);
    return damo_error(DAMO_ERR_INVALID_ARG, "model_add: NULL %s", m ? "layer" : "model");
  }
  if (m->functional) {
    damo_layer_free(l);
    return damo_error(DAMO_ERR_STATE, "model_add: a functional model calls its layers on nodes (damo_model_call)");
  }
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i] == l) return damo_error(DAMO_ERR_INVALID_ARG, "model_add: layer '%s' is already in the model", l->name);
  if (l->type->takes_ids && m->n_layers > 0) {
    damo_status st = damo_error(DAMO_ERR_INVALID_ARG,
                                "model_add: %s layer%s%s%s must be the first layer (it takes the model's integer ids)",
                                l->type->type, l->named ? " '" : "", l->named ? l->name : "", l->named ? "'" : "");
    damo_layer_free(l);
    return st;
  }
  const int index = m->n_layers, prev = m->n_nodes - 1;
  int node;
  return damo_model_append_call(m, l, 1, &prev, index, &node);
}

int damo_model_num_layers(const damo_model *m) { return m ? m->n_layers : 0; }

damo_dtype damo_model_input_dtype(const damo_model *m) {
  return m->n_inputs ? m->nodes[m->inputs[0]].dtype : DAMO_F32;
}

static int64_t slot_numel(const damo_param_slot *p) {
  int64_t n = 1;
  for (int i = 0; i < p->ndim; i++) n *= p->shape[i];
  return n;
}

int64_t damo_model_num_params(const damo_model *m) {
  if (!m) return 0;
  int64_t n = 0;
  for (int i = 0; i < m->n_layers; i++)
    for (int p = 0; p < m->layers[i]->n_params; p++) n += slot_numel(&m->layers[i]->params[p]);
  return n;
}

int64_t damo_model_output_size_at(const damo_model *m, int k) {
  const damo_model_node *o = damo_model_output_node_at(m, k);
  int64_t n = 1;
  for (int i = 0; o && i < o->shape.ndim; i++) n *= o->shape.dim[i];
  return n;
}

int64_t damo_model_output_size(const damo_model *m) { return damo_model_output_size_at(m, 0); }

damo_output_compile damo_model_output_compile(const damo_model *m, int k) {
  damo_output_compile c = {m->copt.loss, 1.0f, m->copt.metrics};
  if (m->copt.n_outputs > 0 && k < m->copt.n_outputs) c = m->copt.outputs[k];
  if (c.loss_weight == 0.0f) c.loss_weight = 1.0f;
  return c;
}

damo_status damo_model_check_output_compile(const damo_model *m, const damo_compile_options *o, const char *what) {
  const int n = damo_model_num_outputs(m);
  if (o->n_outputs != 0 && o->n_outputs != n)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: %d per-output settings for a model of %d output%s", what,
                      o->n_outputs, n, n == 1 ? "" : "s");
  for (int k = 0; k < n; k++) {
    const damo_model_node *node = damo_model_output_node_at(m, k);
    const damo_output_compile c = o->n_outputs ? o->outputs[k] : (damo_output_compile){o->loss, 1.0f, o->metrics};
    char label[DAMO_NAME_MAX + 16] = "";
    if (n > 1) snprintf(label, sizeof label, "output '%s': ", node->name);
    if ((unsigned)c.loss > DAMO_LOSS_MSE)
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: %sunknown loss %d", what, label, (int)c.loss);
    if (!(c.loss_weight >= 0) || !isfinite(c.loss_weight))
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: %sloss weight %g must be finite and >= 0", what, label,
                        (double)c.loss_weight);
    if (c.loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE && (node->shape.ndim != 1 || node->shape.dim[0] < 2))
      return damo_error(DAMO_ERR_SHAPE,
                        "%s: %ssparse categorical cross-entropy needs a last layer of shape (classes,) with at "
                        "least 2 classes; layer '%s' gives %d axes of which the last is %lld",
                        what, label, node->layer->name, node->shape.ndim,
                        (long long)node->shape.dim[node->shape.ndim - 1]);
    if (n > 1 && damo_binary_metrics_check(c.metrics, c.loss, damo_model_output_size_at(m, k), "") != DAMO_OK) {
      char why[512];
      snprintf(why, sizeof why, "%s", damo_last_error() + 2); /* past ": " */
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: %s%s", what, label, why);
    }
  }
  return DAMO_OK;
}

/* The model's slots of one kind (trained or frozen) as a parameter store's tensors. */
typedef struct slot_list {
  const damo_model *m;
  int frozen;
} slot_list;

static void slot_spec(const void *ctx, int k, char *name, size_t cap, int *ndim, int64_t *shape) {
  const slot_list *list = ctx;
  for (int i = 0; i < list->m->n_layers; i++) {
    const damo_layer *l = list->m->layers[i];
    for (int p = 0; p < l->n_params; p++) {
      const damo_param_slot *s = &l->params[p];
      if ((s->frozen != 0) != list->frozen || k--) continue;
      snprintf(name, cap, "%s/%s", l->name, s->name);
      *ndim = s->ndim;
      memcpy(shape, s->shape, (size_t)s->ndim * sizeof *shape);
      return;
    }
  }
}

damo_status damo_model_build(damo_model *m, uint64_t seed) {
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "model_build: NULL model");
  if (m->built) return DAMO_OK;
  if (m->n_layers == 0) return damo_error(DAMO_ERR_STATE, "model_build: the model has no layers");
  int counts[2] = {0, 0}; /* trained, frozen slots */
  for (int i = 0; i < m->n_layers; i++)
    for (int p = 0; p < m->layers[i]->n_params; p++) counts[m->layers[i]->params[p].frozen != 0]++;
  slot_list trained = {m, 0}, frozen = {m, 1};
  damo_status st = param_store_alloc(&m->params, counts[0], slot_spec, &trained, "model");
  if (st == DAMO_OK) st = param_store_alloc(&m->state, counts[1], slot_spec, &frozen, "model");
  if (st != DAMO_OK) return st;
  m->n_params = m->params.n_params, m->n_state = m->state.n_params;
  m->param_block = m->params.param_block, m->grad_block = m->params.grad_block;
  m->state_block = m->state.param_block;
  damo_rng rng;
  damo_rng_seed(&rng, seed);
  int k[2] = {0, 0};
  for (int i = 0; i < m->n_layers; i++)
    for (int p = 0; p < m->layers[i]->n_params; p++) {
      damo_param_slot *s = &m->layers[i]->params[p];
      /* the slot's views are its own (the layer frees them), over the store's memory */
      const param_store *store = s->frozen ? &m->state : &m->params;
      const int j = k[s->frozen != 0]++;
      s->value = damo_tensor_wrap(DAMO_F32, s->ndim, s->shape, store->values[j]->data);
      s->grad = s->frozen ? NULL : damo_tensor_wrap(DAMO_F32, s->ndim, s->shape, store->grads[j]->data);
      if (!s->value || (!s->frozen && !s->grad)) return DAMO_ERR_NOMEM;
      damo_param_init(s, &rng);
    }
  m->seed = seed;
  m->built = 1;
  return DAMO_OK;
}

damo_status damo_model_compile(damo_model *m, const damo_compile_options *opt) {
  if (!m || !opt) return damo_error(DAMO_ERR_INVALID_ARG, "model_compile: NULL argument");
  if (m->n_layers == 0) return damo_error(DAMO_ERR_STATE, "model_compile: the model has no layers");
  if (!(opt->optimizer.lr > 0) || !isfinite(opt->optimizer.lr))
    return damo_error(DAMO_ERR_INVALID_ARG, "model_compile: learning rate %g must be positive", (double)opt->optimizer.lr);
  if (m->functional && m->output < 0)
    return damo_error(DAMO_ERR_STATE, "model_compile: set the functional model's output first (damo_model_set_output)");
  damo_status st = damo_model_check_output_compile(m, opt, "model_compile");
  if (st != DAMO_OK) return st;
  st = damo_model_build(m, m->built ? m->seed : 0);
  if (st != DAMO_OK) return st;
  damo_optimizer *o = damo_optimizer_new(&opt->optimizer, m->params.n_params_padded);
  if (!o) return damo_error_prefix(DAMO_ERR_INVALID_ARG, "model_compile: ");
  damo_optimizer_free(m->opt);
  m->opt = o;
  m->copt = *opt;
  if (opt->n_outputs) m->copt.loss = opt->outputs[0].loss, m->copt.metrics = opt->outputs[0].metrics; /* output 0's */
  m->has_compile_options = 1;
  m->compiled = 1;
  damo_model_graph_release(&m->train); /* the loss may have changed */
  damo_model_graph_release(&m->infer);
  damo_model_graph_release(&m->distill_graph);
  return DAMO_OK;
}

damo_status damo_model_config_compile_options(const damo_model *m, damo_compile_options *out) {
  if (!m || !out) return damo_error(DAMO_ERR_INVALID_ARG, "config_compile_options: NULL argument");
  if (!m->has_compile_options) return damo_error(DAMO_ERR_NOT_FOUND, "the model config names no optimizer/loss");
  *out = m->copt;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ graphs */

/* Output k's head: the logits its loss reads, its output, and (with_loss) targets and loss. */
static void build_head(damo_model *m, damo_graph *g, int k, int with_loss, int64_t batch, damo_node *h, damo_node *pre,
                       damo_model_head *hd) {
  const damo_layer *layer = damo_model_output_node_at(m, k)->layer;
  damo_activation last_act = layer->act;
  int has_act = layer->type == &damo_layer_dense || layer->type == &damo_layer_activation;
  damo_loss loss = damo_model_output_compile(m, k).loss;
  int fused = has_act && ((loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE && last_act == DAMO_ACT_SOFTMAX) ||
                          (loss == DAMO_LOSS_BINARY_CE && last_act == DAMO_ACT_SIGMOID));
  hd->logits = fused ? pre : h;
  if (!m->has_compile_options || loss == DAMO_LOSS_MSE || fused) hd->output = h;
  else if (loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) hd->output = damo_softmax(g, hd->logits);
  else hd->output = damo_sigmoid(g, hd->logits);
  if (!with_loss) return;
  char name[DAMO_NAME_MAX + 16];
  const int several = damo_model_num_outputs(m) > 1;
  if (several) snprintf(name, sizeof name, "y_%s", damo_model_output_node_at(m, k)->name);
  if (loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) {
    hd->y = damo_input(g, several ? name : "y", DAMO_I32, 1, &batch);
    hd->loss = damo_softmax_cross_entropy(g, hd->logits, hd->y);
  } else {
    int64_t yshape[DAMO_MAX_DIMS];
    int nd = damo_node_ndim(hd->logits);
    if (hd->logits) memcpy(yshape, damo_node_shape(hd->logits), (size_t)nd * sizeof *yshape);
    hd->y = hd->logits ? damo_input(g, several ? name : "y", DAMO_F32, nd, yshape) : NULL;
    hd->loss = loss == DAMO_LOSS_BINARY_CE ? damo_bce_with_logits(g, hd->logits, hd->y) : damo_mse(g, hd->logits, hd->y);
  }
  if (several) snprintf(name, sizeof name, "%s_loss", damo_model_output_node_at(m, k)->name);
  damo_node_set_name(hd->loss, several ? name : "loss");
}

static damo_status build_model_graph(damo_model *m, int purpose, int64_t batch, damo_model_graph *mg) {
  const int with_loss = purpose != DAMO_GRAPH_INFER;
  damo_model_graph_release(mg);
  mg->g = damo_graph_new(m->seed ^ 0x5eedULL ^ (uint64_t)m->epochs_done * 0x9e3779b97f4a7c15ULL);
  if (!mg->g) return DAMO_ERR_NOMEM;
  mg->batch = batch;
  damo_graph *g = mg->g;
  damo_node *h[DAMO_MODEL_MAX_OUTPUTS] = {0}, *pre[DAMO_MODEL_MAX_OUTPUTS] = {0};
  damo_status st = damo_model_build_nodes(m, g, batch, mg->xs, h, pre);
  if (st != DAMO_OK) {
    damo_model_graph_release(mg);
    return damo_error_prefix(st, "building the model graph: ");
  }
  mg->x = mg->xs[0];
  mg->n_heads = damo_model_num_outputs(m);
  /* The loss trained: one output's, or sum_k weight_k * loss_k as one scalar node. */
  damo_node *keep[3 * DAMO_MODEL_MAX_OUTPUTS];
  int n_keep = 0;
  for (int k = 0; k < mg->n_heads; k++) {
    damo_model_head *hd = &mg->heads[k];
    build_head(m, g, k, with_loss, batch, h[k], pre[k], hd);
    keep[n_keep++] = hd->logits; /* training reads only the logits (and the losses) */
    if (!with_loss) keep[n_keep++] = hd->output;
    if (!with_loss) continue;
    const float w = damo_model_output_compile(m, k).loss_weight;
    if (mg->n_heads > 1 || w != 1.0f) keep[n_keep++] = hd->loss; /* read after forward */
    damo_node *term = w == 1.0f ? hd->loss : damo_scale_by(g, hd->loss, w);
    mg->loss = k == 0 ? term : damo_add(g, mg->loss, term);
  }
  if (purpose == DAMO_GRAPH_DISTILL) { /* fit checked: one output, sparse categorical CE or one sigmoid unit */
    /* Hinton et al.: (1 - alpha) CE(student, labels) + alpha T^2 KL(soft || softmax(student / T));
     * T^2 keeps the soft term's gradient on the scale of the hard one's as T grows. A sigmoid
     * unit's logit z is the two-class softmax over (0, z). */
    const float T = m->distill_temperature, alpha = m->distill_alpha;
    const int64_t shape[2] = {batch, m->distill_classes};
    damo_node *z = damo_scale_by(g, mg->heads[0].logits, 1.0f / T);
    if (shape[1] == 2 && damo_model_output_size(m) == 1) z = damo_concat(g, damo_scale_by(g, z, 0.0f), z);
    mg->soft = damo_input(g, "soft_targets", DAMO_F32, 2, shape);
    damo_node *soft_loss = damo_kl_divergence(g, z, mg->soft);
    damo_node_set_name(soft_loss, "distillation_loss");
    keep[n_keep++] = mg->heads[0].loss;
    mg->loss = damo_add(g, damo_scale_by(g, mg->heads[0].loss, 1.0f - alpha), damo_scale_by(g, soft_loss, alpha * T * T));
    damo_node_set_name(mg->heads[0].loss, "student_loss");
  }
  if (with_loss && mg->loss != mg->heads[0].loss) damo_node_set_name(mg->loss, "loss");
  mg->y = mg->heads[0].y, mg->logits = mg->heads[0].logits, mg->output = mg->heads[0].output;
  st = damo_graph_status(g);
  if (with_loss && m->keep_forward) damo_graph_keep_forward(g);
  /* A quantised model never trains: its calibrated int8 layers pass uint8 between them. */
  if (st == DAMO_OK && m->quantization) st = damo_int8_chain(g, n_keep, keep);
  if (st == DAMO_OK) st = damo_graph_compile(g, mg->loss, n_keep, keep);
  if (st != DAMO_OK) {
    damo_model_graph_release(mg);
    return damo_error_prefix(st, "building the model graph: ");
  }
  int ok = 1;
  for (int k = 0; k < m->n_inputs; k++) {
    const damo_model_node *in = &m->nodes[m->inputs[k]];
    int64_t in_elems = 1;
    for (int i = 0; i < in->shape.ndim; i++) in_elems *= in->shape.dim[i];
    mg->x_stages[k] = damo_alloc((size_t)(batch * in_elems) * sizeof(float));
    ok = ok && mg->x_stages[k];
  }
  mg->x_stage = mg->x_stages[0];
  for (int k = 0; k < mg->n_heads; k++) {
    const int labels = damo_model_output_compile(m, k).loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE;
    mg->heads[k].y_stage = damo_alloc((size_t)(batch * (with_loss && !labels ? damo_model_output_size_at(m, k) : 1)) * 4);
    ok = ok && mg->heads[k].y_stage;
  }
  mg->y_stage = mg->heads[0].y_stage;
  if (mg->soft) ok = ok && (mg->soft_stage = damo_alloc((size_t)(batch * m->distill_classes) * sizeof(float)));
  if (!ok) {
    damo_model_graph_release(mg);
    return DAMO_ERR_NOMEM;
  }
  for (int k = 0; k < m->n_inputs; k++) damo_graph_bind(g, mg->xs[k], mg->x_stages[k]);
  for (int k = 0; k < mg->n_heads; k++)
    if (mg->heads[k].y) damo_graph_bind(g, mg->heads[k].y, mg->heads[k].y_stage);
  if (mg->soft) damo_graph_bind(g, mg->soft, mg->soft_stage);
  return DAMO_OK;
}

void damo_model_drop_sparse(damo_model *m) {
  int any = 0;
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i]->sparse) {
      damo_csr_free(m->layers[i]->sparse);
      m->layers[i]->sparse = NULL;
      any = 1;
    }
  if (!any) return;
  damo_model_graph_release(&m->train);
  damo_model_graph_release(&m->infer);
  damo_model_graph_release(&m->distill_graph);
}

damo_status damo_model_graph_get(damo_model *m, int with_loss, int64_t batch, damo_model_graph **out) {
  damo_status st = damo_model_build(m, m->seed);
  if (st != DAMO_OK) return st;
  damo_model_graph *mg = with_loss == DAMO_GRAPH_DISTILL ? &m->distill_graph : with_loss ? &m->train : &m->infer;
  if (!mg->g || mg->batch < batch) {
    st = build_model_graph(m, with_loss, batch, mg);
    if (st != DAMO_OK) return st;
  }
  *out = mg;
  return DAMO_OK;
}

void damo_model_gather_input(const damo_model *m, int k, const damo_tensor *x, const int64_t *idx, int64_t n,
                             float *x_dst) {
  int64_t row = 1;
  for (int i = 1; i < x->ndim; i++) row *= x->shape[i];
  const int ids = m->nodes[m->inputs[k]].dtype == DAMO_I32;
  for (int64_t r = 0; r < n; r++) {
    if (ids) { /* token ids for an embedding, as they are */
      memcpy((int32_t *)(void *)x_dst + r * row, (const int32_t *)x->data + idx[r] * row, (size_t)row * 4);
      continue;
    }
    float *dst = x_dst + r * row;
    if (x->dtype == DAMO_F32) memcpy(dst, (const float *)x->data + idx[r] * row, (size_t)row * sizeof(float));
    else if (x->dtype == DAMO_U8)
      for (int64_t j = 0; j < row; j++) dst[j] = (float)((const uint8_t *)x->data)[idx[r] * row + j];
    else
      for (int64_t j = 0; j < row; j++) dst[j] = (float)((const int32_t *)x->data)[idx[r] * row + j];
  }
}

static void gather_targets(const damo_model *m, int k, const damo_tensor *y, const int64_t *idx, int64_t n,
                           void *y_dst) {
  int64_t yrow = 1;
  for (int i = 1; i < y->ndim; i++) yrow *= y->shape[i];
  if (damo_model_output_compile(m, k).loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) {
    int32_t *dst = y_dst;
    for (int64_t r = 0; r < n; r++) dst[r] = ((const int32_t *)y->data)[idx[r]];
  } else {
    float *dst = y_dst;
    for (int64_t r = 0; r < n; r++)
      for (int64_t j = 0; j < yrow; j++)
        dst[r * yrow + j] = y->dtype == DAMO_F32 ? ((const float *)y->data)[idx[r] * yrow + j]
                                                 : (float)((const int32_t *)y->data)[idx[r] * yrow + j];
  }
}

void damo_model_gather_rows(const damo_model *m, const damo_tensor *x, const damo_tensor *y, const int64_t *idx,
                            int64_t n, float *x_dst, void *y_dst) {
  damo_model_gather_input(m, 0, x, idx, n, x_dst);
  if (y && y_dst) gather_targets(m, 0, y, idx, n, y_dst);
}

damo_status damo_model_stage_batch(damo_model *m, damo_model_graph *mg, const damo_tensor *const *xs,
                                   const damo_tensor *const *ys, const int64_t *idx, int64_t n) {
  for (int k = 0; k < m->n_inputs; k++) damo_model_gather_input(m, k, xs[k], idx, n, mg->x_stages[k]);
  for (int k = 0; ys && k < mg->n_heads; k++)
    if (ys[k] && mg->heads[k].y) gather_targets(m, k, ys[k], idx, n, mg->heads[k].y_stage);
  if (mg->soft && m->distill_soft) { /* the teacher's soft targets of the same rows */
    const int64_t C = m->distill_classes;
    for (int64_t r = 0; r < n; r++)
      memcpy(mg->soft_stage + r * C, (const float *)m->distill_soft->data + idx[r] * C, (size_t)C * sizeof(float));
  }
  return damo_graph_set_batch(mg->g, n);
}

/* Input k's data against the model: shape after the rows, dtype, finite values. */
static damo_status check_input(const damo_model *m, int k, const damo_tensor *x, const char *what) {
  char a[96], b[96], label[DAMO_NAME_MAX + 16] = "x";
  const damo_model_node *in = &m->nodes[m->inputs[k]];
  if (m->n_inputs > 1) snprintf(label, sizeof label, "input '%s'", in->name);
  if (!x) return damo_error(DAMO_ERR_INVALID_ARG, "%s: %s is NULL", what, label);
  int ok = x->ndim == in->shape.ndim + 1;
  for (int i = 0; ok && i < in->shape.ndim; i++) ok = x->shape[i + 1] == in->shape.dim[i];
  if (!ok) {
    /* "(N, 28, 28)": the model's input shape after a batch axis */
    int len = snprintf(b, sizeof b, "(N");
    for (int i = 0; i < in->shape.ndim && len < (int)sizeof b; i++)
      len += snprintf(b + len, sizeof b - (size_t)len, ", %lld", (long long)in->shape.dim[i]);
    if (len < (int)sizeof b - 1) snprintf(b + len, sizeof b - (size_t)len, ")");
    return damo_error(DAMO_ERR_SHAPE, "%s: %s has shape %s, the model expects %s", what, label,
                      damo_shape_string(x->ndim, x->shape, a, sizeof a), b);
  }
  if (x->shape[0] < 1) return damo_error(DAMO_ERR_SHAPE, "%s: %s has no rows", what, label);
  if (in->dtype == DAMO_I32 && x->dtype != DAMO_I32) {
    const char *reader = "?", *type = "embedding";
    for (int i = 0; i < m->n_nodes; i++)
      if (m->nodes[i].n_in && m->nodes[i].in[0] == m->inputs[k]) {
        reader = m->nodes[i].name;
        type = m->nodes[i].layer->type->type;
        break;
      }
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: the model starts with %s layer '%s', so %s must hold i32 token "
                      "ids, got %s", what, type, reader, label, damo_dtype_name(x->dtype));
  }
  return x->dtype == DAMO_F32 ? damo_check_finite(x, what) : DAMO_OK;
}

/* Output k's targets y against the model and the rows of x. */
static damo_status check_targets(const damo_model *m, int k, const damo_tensor *x, const damo_tensor *y,
                                 const char *what) {
  char a[96], label[DAMO_NAME_MAX + 24] = "y";
  if (damo_model_num_outputs(m) > 1) snprintf(label, sizeof label, "y of output '%s'", damo_model_output_node_at(m, k)->name);
  if (!y) return damo_error(DAMO_ERR_INVALID_ARG, "%s: %s is NULL", what, label);
  if (y->shape[0] != x->shape[0] || y->ndim < 1)
    return damo_error(DAMO_ERR_SHAPE, "%s: x has %lld rows but %s has shape %s", what, (long long)x->shape[0], label,
                      damo_shape_string(y->ndim, y->shape, a, sizeof a));
  int64_t out = damo_model_output_size_at(m, k);
  if (damo_model_output_compile(m, k).loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) {
    if (y->dtype != DAMO_I32 || y->ndim != 1)
      return damo_error(DAMO_ERR_SHAPE, "%s: sparse categorical labels%s%s must be i32 of shape (N,), got %s %s", what,
                        k || damo_model_num_outputs(m) > 1 ? " of " : "", damo_model_num_outputs(m) > 1 ? label + 5 : "",
                        damo_dtype_name(y->dtype), damo_shape_string(y->ndim, y->shape, a, sizeof a));
    return damo_check_labels(y, (int)out, what);
  }
  int64_t yrow = 1;
  for (int i = 1; i < y->ndim; i++) yrow *= y->shape[i];
  if (yrow != out)
    return damo_error(DAMO_ERR_SHAPE, "%s: %s%s %lld values per row, the model%s outputs %lld", what,
                      damo_model_num_outputs(m) > 1 ? label : "targets", damo_model_num_outputs(m) > 1 ? " has" : " have",
                      (long long)yrow, damo_model_num_outputs(m) > 1 ? "'s output" : "", (long long)out);
  if (y->dtype == DAMO_F32) return damo_check_finite(y, what);
  return DAMO_OK;
}

damo_status damo_model_check_data(const damo_model *m, const damo_tensor *const *xs, const damo_tensor *const *ys,
                                  const char *what) {
  if (!xs) return damo_error(DAMO_ERR_INVALID_ARG, "%s: x is NULL", what);
  for (int k = 0; k < m->n_inputs; k++) {
    damo_status st = check_input(m, k, xs[k], what);
    if (st != DAMO_OK) return st;
    if (k && xs[k]->shape[0] != xs[0]->shape[0])
      return damo_error(DAMO_ERR_SHAPE, "%s: input '%s' has %lld rows but input '%s' has %lld", what,
                        m->nodes[m->inputs[k]].name, (long long)xs[k]->shape[0], m->nodes[m->inputs[0]].name,
                        (long long)xs[0]->shape[0]);
  }
  for (int k = 0; ys && k < damo_model_num_outputs(m); k++) {
    damo_status st = check_targets(m, k, xs[0], ys[k], what);
    if (st != DAMO_OK) return st;
  }
  return DAMO_OK;
}

int64_t damo_model_batch_correct(const damo_model *m, const damo_model_graph *mg, int k, int64_t n, int64_t *counted) {
  const float *logits = damo_node_data(mg->heads[k].logits);
  const damo_loss loss = damo_model_output_compile(m, k).loss;
  int64_t C = damo_model_output_size_at(m, k), correct = 0;
  *counted = 0;
  if (loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) {
    const int32_t *labels = mg->heads[k].y_stage;
    for (int64_t r = 0; r < n; r++) {
      const float *row = logits + r * C;
      int64_t best = 0;
      for (int64_t c = 1; c < C; c++)
        if (row[c] > row[best]) best = c;
      correct += best == labels[r];
    }
    *counted = n;
  } else if (loss == DAMO_LOSS_BINARY_CE) {
    const float *t = mg->heads[k].y_stage;
    for (int64_t i = 0; i < n * C; i++) correct += (logits[i] > 0) == (t[i] > 0.5f);
    *counted = n * C;
  }
  return correct;
}

const char *damo_model_find_nonfinite(damo_model *m, damo_model_graph *mg) {
  for (int i = 0; i < m->n_layers; i++)
    for (int p = 0; p < m->layers[i]->n_params; p++) {
      const damo_param_slot *s = &m->layers[i]->params[p];
      const float *v = s->value->data;
      for (int64_t k = 0; k < damo_tensor_numel(s->value); k++)
        if (!isfinite(v[k])) {
          static _Thread_local char where[DAMO_NAME_MAX * 2];
          snprintf(where, sizeof where, "%s.%s (a weight)", m->layers[i]->name, s->name);
          return where;
        }
    }
  /* Re-run forward one node at a time: buffers are reused, so check each right away. */
  damo_graph *g = mg->g;
  for (int k = 0; k < g->n_order; k++) {
    damo_node *n = g->nodes[g->order[k]];
    if (n->op == DAMO_OP_PARAM || n->op == DAMO_OP_CONSTANT || n->dtype != DAMO_F32) continue;
    if (damo_graph_forward_node(g, n) != DAMO_OK) return n->name;
    const float *v = n->value;
    for (int64_t i = 0; i < damo_node_count(n); i++)
      if (!isfinite(v[i])) return n->name;
  }
  return "an unknown node";
}
