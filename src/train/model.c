/* model.c - the Sequential model: adding layers with shape checks, creating the weights in
 * one flat block, the summary table, compile, and the graphs behind fit/evaluate/predict.
 *
 * Classification losses read logits: when the last layer ends in softmax (sparse CE) or
 * sigmoid (binary CE) the loss takes the node before that activation, which is both
 * stabler and cheaper, and the activation is applied for predict. */
#include "train/model.h"

#include <math.h>
#include <stdio.h>

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
  m->in_ndim = ndim;
  memcpy(m->in_shape, input_shape, (size_t)ndim * sizeof *input_shape);
  return m;
}

void damo_model_graph_release(damo_model_graph *mg) {
  damo_graph_free(mg->g);
  damo_free(mg->x_stage);
  damo_free(mg->y_stage);
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
  param_store_free(&m->params);
  param_store_free(&m->state);
  damo_optimizer_free(m->opt);
  damo_model_graph_release(&m->train);
  damo_model_graph_release(&m->infer);
  cJSON_Delete(m->fit_defaults);
  free(m->config_source);
  for (int i = 0; i < m->n_class_names; i++) free(m->class_names[i]);
  free(m->class_names);
  free(m);
}

damo_status damo_model_set_class_names(damo_model *m, int n, const char *const *names) {
  if (!m || n < 0 || (n && !names)) return damo_error(DAMO_ERR_INVALID_ARG, "set_class_names: bad arguments");
  if (n && m->n_layers > 0) { /* one name per class: a single (sigmoid) output has two */
    const damo_layer *last = m->layers[m->n_layers - 1];
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
  if (m->built) {
    damo_layer_free(l);
    return damo_error(DAMO_ERR_STATE, "model_add: the model is already built; add layers before build/compile");
  }
  /* Keras-style default names: dense_1, dense_2, ... counted per type. */
  if (!l->named) {
    int same = 0;
    for (int i = 0; i < m->n_layers; i++) same += m->layers[i]->type == l->type;
    snprintf(l->name, sizeof l->name, "%s_%d", l->type->type, same + 1);
  }
  for (int i = 0; i < m->n_layers; i++)
    if (!strcmp(m->layers[i]->name, l->name)) {
      damo_status st = damo_error(DAMO_ERR_INVALID_ARG, "model_add: a layer named '%s' already exists", l->name);
      damo_layer_free(l);
      return st;
    }
  if (l->type == &damo_layer_embedding && m->n_layers > 0) {
    damo_status st = damo_error(DAMO_ERR_INVALID_ARG,
                                "model_add: embedding layer '%s' must be the first layer (it takes the model's integer ids)",
                                l->name);
    damo_layer_free(l);
    return st;
  }
  const damo_layer *prev = m->n_layers ? m->layers[m->n_layers - 1] : NULL;
  l->in_ndim = prev ? prev->out_ndim : m->in_ndim;
  memcpy(l->in_shape, prev ? prev->out_shape : m->in_shape, sizeof l->in_shape);
  damo_status st = l->type->infer(l);
  if (st != DAMO_OK) {
    damo_error_prefix(st, "layer %d ('%s', %s): ", m->n_layers, l->name, l->type->type);
    damo_layer_free(l);
    return st;
  }
  if (m->n_layers == m->cap_layers) {
    int cap = m->cap_layers ? m->cap_layers * 2 : 8;
    damo_layer **ls = realloc(m->layers, (size_t)cap * sizeof *ls);
    if (!ls) {
      damo_layer_free(l);
      return damo_error(DAMO_ERR_NOMEM, "out of memory adding a layer");
    }
    m->layers = ls;
    m->cap_layers = cap;
  }
  m->layers[m->n_layers++] = l;
  return DAMO_OK;
}

int damo_model_num_layers(const damo_model *m) { return m ? m->n_layers : 0; }

damo_dtype damo_model_input_dtype(const damo_model *m) {
  return m->n_layers && m->layers[0]->type == &damo_layer_embedding ? DAMO_I32 : DAMO_F32;
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

int64_t damo_model_output_size(const damo_model *m) {
  const damo_layer *last = m->n_layers ? m->layers[m->n_layers - 1] : NULL;
  int nd = last ? last->out_ndim : m->in_ndim;
  const int64_t *s = last ? last->out_shape : m->in_shape;
  int64_t n = 1;
  for (int i = 0; i < nd; i++) n *= s[i];
  return n;
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

damo_status damo_model_summary(damo_model *m, FILE *f) {
  if (!m || !f) return damo_error(DAMO_ERR_INVALID_ARG, "model_summary: NULL argument");
  char shape[96], full[128];
  const char *rule = "_______________________________________________________________________";
  const char *thick = "=======================================================================";
  fprintf(f, "Model: \"sequential\"\n%s\n", rule);
  fprintf(f, " %-36s %-22s %10s\n%s\n", "Layer (type)", "Output Shape", "Param #", thick);
  int64_t trainable = 0, frozen = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const damo_layer *l = m->layers[i];
    int64_t np = 0;
    for (int p = 0; p < l->n_params; p++) {
      np += slot_numel(&l->params[p]);
      *(l->params[p].frozen ? &frozen : &trainable) += slot_numel(&l->params[p]);
    }
    damo_shape_string(l->out_ndim, l->out_shape, shape, sizeof shape);
    snprintf(full, sizeof full, "(None, %s", shape + 1); /* Keras writes the batch as None */
    if (l->out_ndim == 1) snprintf(full, sizeof full, "(None, %lld)", (long long)l->out_shape[0]);
    char label[96];
    snprintf(label, sizeof label, "%.50s (%s)", l->name, l->type->type);
    fprintf(f, " %-36s %-22s %10lld\n", label, full, (long long)np);
    fprintf(f, "%s\n", i + 1 < m->n_layers ? "" : thick);
  }
  fprintf(f, "Total params: %lld (%.2f KB)\nTrainable params: %lld\nNon-trainable params: %lld\n%s\n",
          (long long)(trainable + frozen), (double)(trainable + frozen) * 4.0 / 1024.0, (long long)trainable,
          (long long)frozen, rule);
  return DAMO_OK;
}

damo_status damo_model_compile(damo_model *m, const damo_compile_options *opt) {
  if (!m || !opt) return damo_error(DAMO_ERR_INVALID_ARG, "model_compile: NULL argument");
  if (m->n_layers == 0) return damo_error(DAMO_ERR_STATE, "model_compile: the model has no layers");
  if (!(opt->optimizer.lr > 0) || !isfinite(opt->optimizer.lr))
    return damo_error(DAMO_ERR_INVALID_ARG, "model_compile: learning rate %g must be positive", (double)opt->optimizer.lr);
  const damo_layer *last = m->layers[m->n_layers - 1];
  if (opt->loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE && (last->out_ndim != 1 || last->out_shape[0] < 2))
    return damo_error(DAMO_ERR_SHAPE,
                      "model_compile: sparse categorical cross-entropy needs a last layer of shape (classes,) with at "
                      "least 2 classes; layer '%s' gives %d axes of which the last is %lld",
                      last->name, last->out_ndim, (long long)last->out_shape[last->out_ndim - 1]);
  damo_status st = damo_model_build(m, m->built ? m->seed : 0);
  if (st != DAMO_OK) return st;
  damo_optimizer *o = damo_optimizer_new(&opt->optimizer, m->params.n_params_padded);
  if (!o) return damo_error_prefix(DAMO_ERR_INVALID_ARG, "model_compile: ");
  damo_optimizer_free(m->opt);
  m->opt = o;
  m->copt = *opt;
  m->has_compile_options = 1;
  m->compiled = 1;
  damo_model_graph_release(&m->train); /* the loss may have changed */
  damo_model_graph_release(&m->infer);
  return DAMO_OK;
}

damo_status damo_model_config_compile_options(const damo_model *m, damo_compile_options *out) {
  if (!m || !out) return damo_error(DAMO_ERR_INVALID_ARG, "config_compile_options: NULL argument");
  if (!m->has_compile_options) return damo_error(DAMO_ERR_NOT_FOUND, "the model config names no optimizer/loss");
  *out = m->copt;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ graphs */

static damo_status build_model_graph(damo_model *m, int with_loss, int64_t batch, damo_model_graph *mg) {
  damo_model_graph_release(mg);
  mg->g = damo_graph_new(m->seed ^ 0x5eedULL ^ (uint64_t)m->epochs_done * 0x9e3779b97f4a7c15ULL);
  if (!mg->g) return DAMO_ERR_NOMEM;
  mg->batch = batch;
  int64_t shape[DAMO_MAX_DIMS];
  shape[0] = batch;
  memcpy(shape + 1, m->in_shape, (size_t)m->in_ndim * sizeof *shape);
  damo_graph *g = mg->g;
  damo_node *h = damo_input(g, "x", damo_model_input_dtype(m), m->in_ndim + 1, shape), *pre = h, *mask = NULL;
  mg->x = h;
  for (int i = 0; i < m->n_layers; i++) { /* each layer sees the timestep mask its predecessor left */
    damo_layer *l = m->layers[i];
    l->in_mask = mask;
    l->out_mask = NULL;
    h = l->type->build(l, g, h, &pre);
    mask = l->out_mask;
  }
  damo_activation last_act = m->layers[m->n_layers - 1]->act;
  const damo_layer_type *last_type = m->layers[m->n_layers - 1]->type;
  int has_act = last_type == &damo_layer_dense || last_type == &damo_layer_activation;
  damo_loss loss = m->copt.loss;
  int fused = has_act && ((loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE && last_act == DAMO_ACT_SOFTMAX) ||
                          (loss == DAMO_LOSS_BINARY_CE && last_act == DAMO_ACT_SIGMOID));
  mg->logits = fused ? pre : h;
  if (!m->has_compile_options || loss == DAMO_LOSS_MSE || fused) mg->output = h;
  else if (loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) mg->output = damo_softmax(g, mg->logits);
  else mg->output = damo_sigmoid(g, mg->logits);
  int64_t out_size = damo_model_output_size(m);
  if (with_loss) {
    if (loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) {
      mg->y = damo_input(g, "y", DAMO_I32, 1, &batch);
      mg->loss = damo_softmax_cross_entropy(g, mg->logits, mg->y);
    } else {
      int64_t yshape[DAMO_MAX_DIMS];
      int nd = damo_node_ndim(mg->logits);
      if (mg->logits) memcpy(yshape, damo_node_shape(mg->logits), (size_t)nd * sizeof *yshape);
      mg->y = mg->logits ? damo_input(g, "y", DAMO_F32, nd, yshape) : NULL;
      mg->loss = loss == DAMO_LOSS_BINARY_CE ? damo_bce_with_logits(g, mg->logits, mg->y) : damo_mse(g, mg->logits, mg->y);
    }
    damo_node_set_name(mg->loss, "loss");
  }
  damo_node *outs[2] = {mg->logits, mg->output}; /* training reads only the logits */
  damo_status st = damo_graph_status(g);
  if (st == DAMO_OK) st = damo_graph_compile(g, mg->loss, with_loss ? 1 : 2, outs);
  if (st != DAMO_OK) {
    damo_model_graph_release(mg);
    return damo_error_prefix(st, "building the model graph: ");
  }
  int64_t in_elems = 1;
  for (int i = 0; i < m->in_ndim; i++) in_elems *= m->in_shape[i];
  mg->x_stage = damo_alloc((size_t)(batch * in_elems) * sizeof(float));
  mg->y_stage = damo_alloc((size_t)(batch * (with_loss && loss != DAMO_LOSS_SPARSE_CATEGORICAL_CE ? out_size : 1)) * 4);
  if (!mg->x_stage || !mg->y_stage) {
    damo_model_graph_release(mg);
    return DAMO_ERR_NOMEM;
  }
  damo_graph_bind(g, mg->x, mg->x_stage);
  if (mg->y) damo_graph_bind(g, mg->y, mg->y_stage);
  return DAMO_OK;
}

damo_status damo_model_graph_get(damo_model *m, int with_loss, int64_t batch, damo_model_graph **out) {
  damo_status st = damo_model_build(m, m->seed);
  if (st != DAMO_OK) return st;
  damo_model_graph *mg = with_loss ? &m->train : &m->infer;
  if (!mg->g || mg->batch < batch) {
    st = build_model_graph(m, with_loss, batch, mg);
    if (st != DAMO_OK) return st;
  }
  *out = mg;
  return DAMO_OK;
}

void damo_model_gather_rows(const damo_model *m, const damo_tensor *x, const damo_tensor *y, const int64_t *idx,
                            int64_t n, float *x_dst, void *y_dst) {
  int64_t row = 1;
  for (int i = 1; i < x->ndim; i++) row *= x->shape[i];
  for (int64_t r = 0; r < n; r++) {
    if (damo_model_input_dtype(m) == DAMO_I32) { /* token ids for an embedding, as they are */
      memcpy((int32_t *)(void *)x_dst + r * row, (const int32_t *)x->data + idx[r] * row, (size_t)row * 4);
      continue;
    }
    float *dst = x_dst + r * row;
    if (x->dtype == DAMO_F32) memcpy(dst, (const float *)x->data + idx[r] * row, (size_t)row * sizeof(float));
    else if (x->dtype == DAMO_U8)
      for (int64_t k = 0; k < row; k++) dst[k] = (float)((const uint8_t *)x->data)[idx[r] * row + k];
    else
      for (int64_t k = 0; k < row; k++) dst[k] = (float)((const int32_t *)x->data)[idx[r] * row + k];
  }
  if (y && y_dst) {
    int64_t yrow = 1;
    for (int i = 1; i < y->ndim; i++) yrow *= y->shape[i];
    if (m->copt.loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) {
      int32_t *dst = y_dst;
      for (int64_t r = 0; r < n; r++) dst[r] = ((const int32_t *)y->data)[idx[r]];
    } else {
      float *dst = y_dst;
      for (int64_t r = 0; r < n; r++)
        for (int64_t k = 0; k < yrow; k++)
          dst[r * yrow + k] = y->dtype == DAMO_F32 ? ((const float *)y->data)[idx[r] * yrow + k]
                                                   : (float)((const int32_t *)y->data)[idx[r] * yrow + k];
    }
  }
}

damo_status damo_model_stage_batch(damo_model *m, damo_model_graph *mg, const damo_tensor *x, const damo_tensor *y,
                                   const int64_t *idx, int64_t n) {
  damo_model_gather_rows(m, x, y, idx, n, mg->x_stage, mg->y ? mg->y_stage : NULL);
  return damo_graph_set_batch(mg->g, n);
}

damo_status damo_model_check_data(const damo_model *m, const damo_tensor *x, const damo_tensor *y, const char *what) {
  char a[96], b[96];
  if (!x) return damo_error(DAMO_ERR_INVALID_ARG, "%s: x is NULL", what);
  int ok = x->ndim == m->in_ndim + 1;
  for (int i = 0; ok && i < m->in_ndim; i++) ok = x->shape[i + 1] == m->in_shape[i];
  if (!ok) {
    /* "(N, 28, 28)": the model's input shape after a batch axis */
    int len = snprintf(b, sizeof b, "(N");
    for (int i = 0; i < m->in_ndim && len < (int)sizeof b; i++)
      len += snprintf(b + len, sizeof b - (size_t)len, ", %lld", (long long)m->in_shape[i]);
    if (len < (int)sizeof b - 1) snprintf(b + len, sizeof b - (size_t)len, ")");
    return damo_error(DAMO_ERR_SHAPE, "%s: x has shape %s, the model expects %s", what,
                      damo_shape_string(x->ndim, x->shape, a, sizeof a), b);
  }
  if (x->shape[0] < 1) return damo_error(DAMO_ERR_SHAPE, "%s: x has no rows", what);
  if (damo_model_input_dtype(m) == DAMO_I32 && x->dtype != DAMO_I32)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: the model starts with embedding layer '%s', so x must hold i32 token ids, got %s",
                      what, m->layers[0]->name, damo_dtype_name(x->dtype));
  if (x->dtype == DAMO_F32) {
    damo_status st = damo_check_finite(x, what);
    if (st != DAMO_OK) return st;
  }
  if (!y) return DAMO_OK;
  if (y->shape[0] != x->shape[0] || y->ndim < 1)
    return damo_error(DAMO_ERR_SHAPE, "%s: x has %lld rows but y has shape %s", what, (long long)x->shape[0],
                      damo_shape_string(y->ndim, y->shape, a, sizeof a));
  int64_t out = damo_model_output_size(m);
  if (m->copt.loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) {
    if (y->dtype != DAMO_I32 || y->ndim != 1)
      return damo_error(DAMO_ERR_SHAPE, "%s: sparse categorical labels must be i32 of shape (N,), got %s %s", what,
                        damo_dtype_name(y->dtype), damo_shape_string(y->ndim, y->shape, a, sizeof a));
    return damo_check_labels(y, (int)out, what);
  }
  int64_t yrow = 1;
  for (int i = 1; i < y->ndim; i++) yrow *= y->shape[i];
  if (yrow != out)
    return damo_error(DAMO_ERR_SHAPE, "%s: targets have %lld values per row, the model outputs %lld", what,
                      (long long)yrow, (long long)out);
  if (y->dtype == DAMO_F32) return damo_check_finite(y, what);
  return DAMO_OK;
}

int64_t damo_model_batch_correct(const damo_model *m, const damo_model_graph *mg, int64_t n, int64_t *counted) {
  const float *logits = damo_node_data(mg->logits);
  int64_t C = damo_model_output_size(m), correct = 0;
  *counted = 0;
  if (m->copt.loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) {
    const int32_t *labels = mg->y_stage;
    for (int64_t r = 0; r < n; r++) {
      const float *row = logits + r * C;
      int64_t best = 0;
      for (int64_t c = 1; c < C; c++)
        if (row[c] > row[best]) best = c;
      correct += best == labels[r];
    }
    *counted = n;
  } else if (m->copt.loss == DAMO_LOSS_BINARY_CE) {
    const float *t = mg->y_stage;
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
