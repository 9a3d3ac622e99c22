/* evaluate.c - fit's Keras-style companions, evaluate and predict, for models of one or
 * several inputs and outputs; and the scoring of rows that fit's validation shares. */
#include "train/history.h"
#include "train/model.h"

#include <stdio.h>

#define DEFAULT_EVAL_BATCH 256

damo_status damo_model_evaluate_rows(damo_model *m, damo_model_graph *mg, const damo_tensor *const *x,
                                     const damo_tensor *const *y, const int64_t *idx, int64_t n, double *loss,
                                     double *accuracy, double *losses, double *accs, float *const *probs,
                                     int32_t *const *truth) {
  const int heads = mg->n_heads;
  double loss_sum = 0, head_loss[DAMO_MODEL_MAX_OUTPUTS] = {0};
  int64_t correct[DAMO_MODEL_MAX_OUTPUTS] = {0}, counted[DAMO_MODEL_MAX_OUTPUTS] = {0};
  for (int64_t start = 0; start < n; start += mg->batch) {
    int64_t b = n - start < mg->batch ? n - start : mg->batch;
    damo_status st = damo_model_stage_batch(m, mg, x, y, idx + start, b);
    if (st == DAMO_OK) st = damo_graph_forward(mg->g, 0);
    if (st != DAMO_OK) return st;
    loss_sum += (double)damo_node_data(mg->loss)[0] * (double)b;
    for (int k = 0; k < heads; k++) {
      const damo_node *hl = mg->heads[k].loss;
      head_loss[k] += (double)damo_node_data(hl == mg->loss || !hl ? mg->loss : hl)[0] * (double)b;
      int64_t c;
      correct[k] += damo_model_batch_correct(m, mg, k, b, &c);
      counted[k] += c;
      const int64_t size = damo_model_output_size_at(m, k);
      if (probs && probs[k])
        damo_binary_probs_from_logits(damo_node_data(mg->heads[k].logits), size, b, probs[k] + start * size);
      const int labels = damo_model_output_compile(m, k).loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE;
      for (int64_t r = 0; truth && truth[k] && r < b; r++)
        truth[k][start + r] = labels ? ((const int32_t *)mg->heads[k].y_stage)[r] == 1
                                     : ((const float *)mg->heads[k].y_stage)[r] > 0.5f;
    }
  }
  *loss = loss_sum / (double)n;
  *accuracy = counted[0] ? (double)correct[0] / (double)counted[0] : -1.0;
  for (int k = 0; k < heads; k++) {
    if (losses) losses[k] = head_loss[k] / (double)n;
    if (accs) accs[k] = counted[k] ? (double)correct[k] / (double)counted[k] : -1.0;
  }
  return DAMO_OK;
}

int64_t *damo_model_iota(int64_t n, int64_t first) {
  int64_t *idx = malloc((size_t)(n ? n : 1) * sizeof *idx);
  if (!idx) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for %lld row indices", (long long)n);
    return NULL;
  }
  for (int64_t i = 0; i < n; i++) idx[i] = first + i;
  return idx;
}

/* The model's inputs and outputs: as many tensors as it has. */
damo_status damo_model_check_counts(const damo_model *m, int n_x, const damo_tensor *const *xs, int n_y,
                                    const char *what) {
  if (n_x != m->n_inputs)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: the model takes %d input%s, got %d", what, m->n_inputs,
                      m->n_inputs == 1 ? "" : "s", n_x);
  const int outs = damo_model_num_outputs(m);
  if (n_y >= 0 && n_y != outs)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: the model has %d output%s, got %d target tensor%s", what, outs,
                      outs == 1 ? "" : "s", n_y, n_y == 1 ? "" : "s");
  return xs ? DAMO_OK : damo_error(DAMO_ERR_INVALID_ARG, "%s: x is NULL", what);
}

/* The graph evaluate (with_loss) or predict runs n rows through, batch_size at a time (0:
 * the default), never more than n. */
static damo_status eval_graph(damo_model *m, int with_loss, int64_t n, int batch_size, damo_model_graph **mg) {
  int64_t batch = batch_size > 0 ? batch_size : DEFAULT_EVAL_BATCH;
  return damo_model_graph_get(m, with_loss, batch < n ? batch : n, mg);
}

damo_status damo_model_evaluate_outputs(damo_model *m, int n_x, const damo_tensor *const *x, int n_y,
                                        const damo_tensor *const *y, int batch_size, float *loss, float *losses,
                                        float *accuracies) {
  if (!m || !m->compiled) return damo_error(DAMO_ERR_STATE, "evaluate: compile the model first");
  damo_status st = damo_model_check_counts(m, n_x, x, n_y, "evaluate");
  if (st == DAMO_OK && !y) st = damo_error(DAMO_ERR_INVALID_ARG, "evaluate: y is NULL");
  if (st == DAMO_OK) st = damo_model_check_data(m, x, y, "evaluate");
  if (st != DAMO_OK) return st;
  const int64_t n = x[0]->shape[0];
  damo_model_graph *mg;
  if ((st = eval_graph(m, 1, n, batch_size, &mg)) != DAMO_OK) return st;
  int64_t *idx = damo_model_iota(n, 0);
  if (!idx) return DAMO_ERR_NOMEM;
  double l, a, ls[DAMO_MODEL_MAX_OUTPUTS], as[DAMO_MODEL_MAX_OUTPUTS];
  st = damo_model_evaluate_rows(m, mg, x, y, idx, n, &l, &a, ls, as, NULL, NULL);
  free(idx);
  if (st != DAMO_OK) return st;
  if (loss) *loss = (float)l;
  for (int k = 0; k < n_y; k++) {
    if (losses) losses[k] = (float)ls[k];
    if (accuracies) accuracies[k] = (float)as[k];
  }
  return DAMO_OK;
}

damo_status damo_model_evaluate_inputs(damo_model *m, int n_x, const damo_tensor *const *x, const damo_tensor *y,
                                       int batch_size, float *loss, float *accuracy) {
  return damo_model_evaluate_outputs(m, n_x, x, 1, &y, batch_size, loss, NULL, accuracy);
}

damo_status damo_model_evaluate(damo_model *m, const damo_tensor *x, const damo_tensor *y, int batch_size, float *loss,
                                float *accuracy) {
  return damo_model_evaluate_inputs(m, 1, &x, y, batch_size, loss, accuracy);
}

damo_status damo_model_predict_outputs(damo_model *m, int n_x, const damo_tensor *const *x, int batch_size, int n_out,
                                       damo_tensor **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "predict: NULL output");
  for (int k = 0; k < n_out; k++) out[k] = NULL;
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "predict: NULL model");
  damo_status st = damo_model_check_counts(m, n_x, x, -1, "predict");
  if (st == DAMO_OK && n_out != damo_model_num_outputs(m))
    st = damo_error(DAMO_ERR_INVALID_ARG, "predict: the model has %d outputs, room was given for %d",
                    damo_model_num_outputs(m), n_out);
  if (st == DAMO_OK) st = damo_model_check_data(m, x, NULL, "predict");
  if (st != DAMO_OK) return st;
  const int64_t n = x[0]->shape[0];
  damo_model_graph *mg;
  if ((st = eval_graph(m, 0, n, batch_size, &mg)) != DAMO_OK) return st;
  damo_tensor *y[DAMO_MODEL_MAX_OUTPUTS] = {0};
  int64_t row[DAMO_MODEL_MAX_OUTPUTS];
  for (int k = 0; k < n_out && st == DAMO_OK; k++) {
    const damo_model_node *o = damo_model_output_node_at(m, k);
    int64_t shape[DAMO_MAX_DIMS];
    shape[0] = n;
    memcpy(shape + 1, o->shape.dim, (size_t)o->shape.ndim * sizeof *shape);
    row[k] = damo_model_output_size_at(m, k);
    if (!(y[k] = damo_tensor_new(DAMO_F32, o->shape.ndim + 1, shape))) st = DAMO_ERR_NOMEM;
  }
  int64_t *idx = st == DAMO_OK ? damo_model_iota(n, 0) : NULL;
  if (!idx) st = DAMO_ERR_NOMEM;
  for (int64_t start = 0; start < n && st == DAMO_OK; start += mg->batch) {
    int64_t b = n - start < mg->batch ? n - start : mg->batch;
    st = damo_model_stage_batch(m, mg, x, NULL, idx + start, b);
    if (st == DAMO_OK) st = damo_graph_forward(mg->g, 0);
    for (int k = 0; k < n_out && st == DAMO_OK; k++)
      memcpy(damo_tensor_f32(y[k]) + start * row[k], damo_node_data(mg->heads[k].output),
             (size_t)(b * row[k]) * sizeof(float));
  }
  free(idx);
  for (int k = 0; k < n_out; k++) {
    if (st != DAMO_OK) damo_tensor_free(y[k]);
    else out[k] = y[k];
  }
  return st;
}

damo_status damo_model_predict_inputs(damo_model *m, int n_x, const damo_tensor *const *x, int batch_size,
                                      damo_tensor **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "predict: NULL output");
  *out = NULL;
  if (m && damo_model_num_outputs(m) != 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "predict: the model has %d outputs; use damo_model_predict_outputs",
                      damo_model_num_outputs(m));
  return damo_model_predict_outputs(m, n_x, x, batch_size, 1, out);
}

damo_status damo_model_predict(damo_model *m, const damo_tensor *x, int batch_size, damo_tensor **out) {
  return damo_model_predict_inputs(m, 1, &x, batch_size, out);
}
