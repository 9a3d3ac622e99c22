/* fit.c - the training loop and its Keras-style companions, evaluate and predict.
 *
 * One step: stage a shuffled batch, forward, check the loss, backward, optimizer update.
 * Nothing is allocated inside the loop: the graph's arena and the staging buffers were
 * sized when the graph was built. Validation reuses the training graph in inference mode. */
#include "data/prefetch.h"
#include "train/history.h"
#include "train/model.h"
#include "train/progress.h"

#include <math.h>
#include <stdio.h>

#define DEFAULT_EVAL_BATCH 256

/* Mean loss and accuracy of rows idx[0..n) through a graph that has a loss. For a binary
 * task probs (n x outputs) and truth (n, 0/1) may collect the predictions, or be NULL. */
static damo_status evaluate_rows(damo_model *m, damo_model_graph *mg, const damo_tensor *x, const damo_tensor *y,
                                 const int64_t *idx, int64_t n, double *loss, double *accuracy, float *probs,
                                 int32_t *truth) {
  int64_t outputs = damo_model_output_size(m);
  double loss_sum = 0;
  int64_t correct = 0, counted = 0;
  for (int64_t start = 0; start < n; start += mg->batch) {
    int64_t b = n - start < mg->batch ? n - start : mg->batch;
    damo_status st = damo_model_stage_batch(m, mg, x, y, idx + start, b);
    if (st == DAMO_OK) st = damo_graph_forward(mg->g, 0);
    if (st != DAMO_OK) return st;
    loss_sum += (double)damo_node_data(mg->loss)[0] * (double)b;
    int64_t c;
    correct += damo_model_batch_correct(m, mg, b, &c);
    counted += c;
    if (probs) damo_binary_probs_from_logits(damo_node_data(mg->logits), outputs, b, probs + start * outputs);
    for (int64_t r = 0; truth && r < b; r++)
      truth[start + r] = m->copt.loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE ? ((const int32_t *)mg->y_stage)[r] == 1
                                                                         : ((const float *)mg->y_stage)[r] > 0.5f;
  }
  *loss = loss_sum / (double)n;
  *accuracy = counted ? (double)correct / (double)counted : -1.0;
  return DAMO_OK;
}

static int64_t *iota(int64_t n, int64_t first) {
  int64_t *idx = malloc((size_t)(n ? n : 1) * sizeof *idx);
  if (!idx) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for %lld row indices", (long long)n);
    return NULL;
  }
  for (int64_t i = 0; i < n; i++) idx[i] = first + i;
  return idx;
}

damo_status damo_model_evaluate(damo_model *m, const damo_tensor *x, const damo_tensor *y, int batch_size, float *loss,
                                float *accuracy) {
  if (!m || !m->compiled) return damo_error(DAMO_ERR_STATE, "evaluate: compile the model first");
  damo_status st = damo_model_check_data(m, x, y, "evaluate");
  if (st != DAMO_OK) return st;
  if (!y) return damo_error(DAMO_ERR_INVALID_ARG, "evaluate: y is NULL");
  int64_t n = x->shape[0], batch = batch_size > 0 ? batch_size : DEFAULT_EVAL_BATCH;
  if (batch > n) batch = n;
  damo_model_graph *mg;
  if ((st = damo_model_graph_get(m, 1, batch, &mg)) != DAMO_OK) return st;
  int64_t *idx = iota(n, 0);
  if (!idx) return DAMO_ERR_NOMEM;
  double l, a;
  st = evaluate_rows(m, mg, x, y, idx, n, &l, &a, NULL, NULL);
  free(idx);
  if (st != DAMO_OK) return st;
  if (loss) *loss = (float)l;
  if (accuracy) *accuracy = (float)a;
  return DAMO_OK;
}

damo_status damo_model_predict(damo_model *m, const damo_tensor *x, int batch_size, damo_tensor **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "predict: NULL output");
  *out = NULL;
  if (!m) return damo_error(DAMO_ERR_INVALID_ARG, "predict: NULL model");
  damo_status st = damo_model_check_data(m, x, NULL, "predict");
  if (st != DAMO_OK) return st;
  int64_t n = x->shape[0], batch = batch_size > 0 ? batch_size : DEFAULT_EVAL_BATCH;
  if (batch > n) batch = n;
  damo_model_graph *mg;
  if ((st = damo_model_graph_get(m, 0, batch, &mg)) != DAMO_OK) return st;
  const damo_layer *last = m->layers[m->n_layers - 1];
  int64_t shape[DAMO_MAX_DIMS];
  shape[0] = n;
  memcpy(shape + 1, last->out_shape, (size_t)last->out_ndim * sizeof *shape);
  damo_tensor *y = damo_tensor_new(DAMO_F32, last->out_ndim + 1, shape);
  int64_t *idx = iota(n, 0);
  if (!y || !idx) {
    damo_tensor_free(y);
    free(idx);
    return DAMO_ERR_NOMEM;
  }
  int64_t row = damo_model_output_size(m);
  for (int64_t start = 0; start < n && st == DAMO_OK; start += batch) {
    int64_t b = n - start < batch ? n - start : batch;
    st = damo_model_stage_batch(m, mg, x, NULL, idx + start, b);
    if (st == DAMO_OK) st = damo_graph_forward(mg->g, 0);
    if (st == DAMO_OK) memcpy(damo_tensor_f32(y) + start * row, damo_node_data(mg->output), (size_t)(b * row) * sizeof(float));
  }
  free(idx);
  if (st != DAMO_OK) {
    damo_tensor_free(y);
    return st;
  }
  *out = y;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ early stopping */

typedef struct early_stop {
  int active, column, higher_is_better, wait, best_epoch;
  double best, min_delta;
  float *best_params;
} early_stop;

/* recorded: the history columns of this run (1u << DAMO_H_*). */
static damo_status early_stop_init(early_stop *es, const damo_fit_options *o, unsigned recorded, int has_val,
                                   int64_t n_params) {
  memset(es, 0, sizeof *es);
  if (o->patience <= 0) return DAMO_OK;
  const char *mon = o->monitor ? o->monitor : (has_val ? "val_loss" : "loss");
  es->column = -1;
  for (int c = 0; c < DAMO_HISTORY_COLUMNS; c++)
    if (!strcmp(mon, damo_history_columns[c])) es->column = c;
  if (es->column < 0 || es->column == DAMO_H_LR)
    return damo_error(DAMO_ERR_INVALID_ARG,
                      "fit: cannot monitor '%s' (use loss, accuracy, val_loss, val_accuracy or a compiled metric such "
                      "as val_auc)",
                      mon);
  if (es->column >= DAMO_H_VAL_LOSS && es->column <= DAMO_H_VAL_AUC && !has_val)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: early stopping monitors '%s' but there is no validation data", mon);
  if (!(recorded >> es->column & 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: early stopping monitors '%s' but the model was not compiled with that metric",
                      mon);
  es->active = 1;
  es->higher_is_better = es->column != DAMO_H_LOSS && es->column != DAMO_H_VAL_LOSS;
  es->best = es->higher_is_better ? -INFINITY : INFINITY;
  es->min_delta = fabs((double)o->min_delta);
  if (o->restore_best_weights) {
    es->best_params = malloc((size_t)(n_params ? n_params : 1) * sizeof(float));
    if (!es->best_params) return damo_error(DAMO_ERR_NOMEM, "fit: out of memory keeping the best weights");
  }
  return DAMO_OK;
}

/* Returns 1 when training should stop after this epoch (patience used up). */
static int early_stop_update(early_stop *es, const double *row, int epoch, const damo_model *m, int patience) {
  if (!es->active) return 0;
  double v = row[es->column];
  int better = es->higher_is_better ? v > es->best + es->min_delta : v < es->best - es->min_delta;
  if (better) {
    es->best = v;
    es->best_epoch = epoch;
    es->wait = 0;
    if (es->best_params) {
      memcpy(es->best_params, m->param_block, (size_t)m->n_params * sizeof(float));
      memcpy(es->best_params + m->n_params, m->state_block, (size_t)m->n_state * sizeof(float));
    }
    return 0;
  }
  return ++es->wait >= patience;
}

/* ------------------------------------------------------------------ augmentation feed */

/* With augmentation, a background thread gathers and augments batch k+1 while the step
 * trains on batch k. Its generator is its own (seeded from the fit seed), and batches are
 * produced in order, so a seed gives the same batches whatever the timing. */
typedef struct augment_feed {
  const damo_model *m;
  const damo_tensor *x, *y;
  const int64_t *idx;
  int64_t n_train, batch;
  int h, w, c;
  damo_augment_options opt;
  damo_rng rng;
  float *scratch;
  damo_prefetcher *pf;
} augment_feed;

static damo_status produce_augmented(void *ctx, int64_t b, float *xb, void *yb) {
  augment_feed *f = ctx;
  int64_t first = b * f->batch, n = f->n_train - first < f->batch ? f->n_train - first : f->batch;
  damo_model_gather_rows(f->m, f->x, f->y, f->idx + first, n, xb, yb);
  return damo_augment_batch(&f->opt, xb, xb, n, f->h, f->w, f->c, &f->rng, f->scratch);
}

static damo_status augment_feed_init(augment_feed *f, const damo_model *m, const damo_fit_options *o,
                                     const damo_tensor *x, const damo_tensor *y, const int64_t *idx, int64_t n_train,
                                     int64_t batch) {
  memset(f, 0, sizeof *f);
  if (!o->augment) return DAMO_OK;
  if (m->in_ndim != 2 && !(m->in_ndim == 3 && m->in_shape[2] <= 4))
    return damo_error(DAMO_ERR_INVALID_ARG,
                      "fit: augmentation needs image inputs (height, width) or (height, width, channels), the model "
                      "takes rank %d",
                      m->in_ndim);
  f->m = m, f->x = x, f->y = y, f->idx = idx, f->n_train = n_train, f->batch = batch;
  f->h = (int)m->in_shape[0], f->w = (int)m->in_shape[1], f->c = m->in_ndim == 3 ? (int)m->in_shape[2] : 1;
  f->opt = *o->augment;
  f->opt.parallel = 0; /* the training step owns the cores */
  damo_rng_seed(&f->rng, o->seed ^ 0x6175676d656e74ULL);
  int64_t row = (int64_t)f->h * f->w * f->c;
  size_t y_row = m->copt.loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE ? 4 : (size_t)damo_model_output_size(m) * 4;
  f->scratch = malloc((size_t)row * sizeof(float));
  f->pf = f->scratch ? damo_prefetcher_new((size_t)(batch * row) * sizeof(float), (size_t)batch * y_row,
                                           produce_augmented, f)
                     : NULL;
  if (!f->pf) {
    free(f->scratch);
    return damo_error(DAMO_ERR_NOMEM, "fit: out of memory for the augmentation buffers");
  }
  return DAMO_OK;
}

static void augment_feed_free(augment_feed *f) {
  damo_prefetcher_free(f->pf); /* joins the thread before the scratch goes */
  free(f->scratch);
}

/* Takes the next prepared batch of n rows into the graph's stages. */
static damo_status augment_feed_stage(augment_feed *f, damo_model_graph *mg, int64_t n) {
  float *xb;
  void *yb;
  damo_status st = damo_prefetcher_next(f->pf, &xb, &yb);
  if (st != DAMO_OK) return st;
  size_t row = (size_t)f->h * f->w * f->c;
  memcpy(mg->x_stage, xb, (size_t)n * row * sizeof(float));
  size_t y_row = f->m->copt.loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE ? 4 : (size_t)damo_model_output_size(f->m) * 4;
  memcpy(mg->y_stage, yb, (size_t)n * y_row);
  return damo_graph_set_batch(mg->g, n);
}

/* ------------------------------------------------------------------ the trainer's adapter */

/* A Sequential model's side of damo_trainer_step: the loop sets the batch (rows of idx, or
 * the augmentation feed's next slot) and the step stages, runs and observes it. */
typedef struct fit_adapter {
  damo_model *m;
  damo_model_graph *mg;
  const damo_tensor *x, *y;
  augment_feed *feed;
  const int64_t *rows; /* the batch's row indices (no feed) */
  int64_t b;           /* its size */
  int metrics, outputs;
  int binary_metrics;
  int64_t correct, counted;
  damo_binary_counts counts;
} fit_adapter;

static damo_status fit_stage(void *ctx, int64_t micro) {
  fit_adapter *f = ctx;
  (void)micro;
  return f->feed->pf ? augment_feed_stage(f->feed, f->mg, f->b) : damo_model_stage_batch(f->m, f->mg, f->x, f->y, f->rows, f->b);
}

static damo_status fit_forward(void *ctx, float *loss) {
  fit_adapter *f = ctx;
  damo_status st = damo_graph_forward(f->mg->g, 1);
  if (st == DAMO_OK) *loss = damo_node_data(f->mg->loss)[0];
  return st;
}

static damo_status fit_backward(void *ctx) { return damo_graph_backward(((fit_adapter *)ctx)->mg->g); }

static const char *fit_locate_nonfinite(void *ctx) {
  fit_adapter *f = ctx;
  return damo_model_find_nonfinite(f->m, f->mg);
}

/* Training metrics from the logits the forward left in memory. */
static void fit_observe(void *ctx) {
  fit_adapter *f = ctx;
  int64_t c;
  f->correct += damo_model_batch_correct(f->m, f->mg, f->b, &c);
  f->counted += c;
  if (f->binary_metrics)
    damo_binary_counts_add(&f->counts, damo_node_data(f->mg->logits), f->outputs, f->mg->y_stage, f->m->copt.loss, f->b,
                           f->metrics & DAMO_METRIC_AUC);
}

/* ------------------------------------------------------------------ fit */

damo_status damo_model_fit(damo_model *m, const damo_tensor *x, const damo_tensor *y, const damo_fit_options *opt,
                           damo_history **history) {
  if (history) *history = NULL;
  if (!m || !m->compiled) return damo_error(DAMO_ERR_STATE, "fit: compile the model before fit");
  damo_fit_options o = opt ? *opt : (damo_fit_options){0};
  if (o.epochs <= 0) o.epochs = 1;
  if (o.batch_size <= 0) o.batch_size = 32;
  if (!opt) o.verbose = -1;
  damo_status st = damo_model_check_data(m, x, y, "fit");
  if (st != DAMO_OK) return st;
  if (!y) return damo_error(DAMO_ERR_INVALID_ARG, "fit: y is NULL");
  if (!(o.validation_split >= 0 && o.validation_split < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: validation_split %g is outside [0, 1)", (double)o.validation_split);
  if (o.x_val && (st = damo_model_check_data(m, o.x_val, o.y_val, "fit (validation data)")) != DAMO_OK) return st;
  if (o.x_val && !o.y_val) return damo_error(DAMO_ERR_INVALID_ARG, "fit: x_val given without y_val");

  /* validation_split takes the last rows before shuffling, as Keras does. */
  int64_t N = x->shape[0], n_val = o.x_val ? 0 : (int64_t)((double)N * o.validation_split), n_train = N - n_val;
  if (n_train < 1) return damo_error(DAMO_ERR_INVALID_ARG, "fit: no training rows left after the validation split");
  const damo_tensor *xv = o.x_val ? o.x_val : (n_val ? x : NULL), *yv = o.x_val ? o.y_val : (n_val ? y : NULL);
  int64_t val_first = o.x_val ? 0 : n_train, val_count = o.x_val ? o.x_val->shape[0] : n_val;
  int64_t batch = o.batch_size < n_train ? o.batch_size : n_train;

  /* Binary metrics add history columns: train-side ones always, val_ ones with validation data. */
  const int metrics = m->copt.metrics, outputs = (int)damo_model_output_size(m);
  if ((st = damo_binary_metrics_check(metrics, m->copt.loss, outputs, "fit")) != DAMO_OK) return st;
  static const struct {
    int metric, column, val_column;
  } binary_columns[] = {{DAMO_METRIC_PRECISION, DAMO_H_PRECISION, DAMO_H_VAL_PRECISION},
                        {DAMO_METRIC_RECALL, DAMO_H_RECALL, DAMO_H_VAL_RECALL},
                        {DAMO_METRIC_F1, DAMO_H_F1, DAMO_H_VAL_F1},
                        {DAMO_METRIC_AUC, DAMO_H_AUC, DAMO_H_VAL_AUC}};
  unsigned recorded = DAMO_H_ALWAYS;
  int binary_metrics = 0;
  for (size_t k = 0; k < sizeof binary_columns / sizeof *binary_columns; k++)
    if (metrics & binary_columns[k].metric) {
      binary_metrics = 1;
      recorded |= 1u << binary_columns[k].column | (xv ? 1u << binary_columns[k].val_column : 0u);
    }

  damo_model_graph *mg;
  if ((st = damo_model_graph_get(m, 1, batch, &mg)) != DAMO_OK) return st;
  damo_history *h = damo_history_new(recorded);
  int64_t *idx = iota(n_train, 0), *val_idx = xv ? iota(val_count, val_first) : NULL;
  /* The validation predictions, collected for the exact binary figures at each epoch end. */
  int collect_val = binary_metrics && xv;
  int64_t val_shape[2] = {val_count, outputs};
  float *val_probs = collect_val ? malloc((size_t)(val_count * outputs) * sizeof *val_probs) : NULL;
  int32_t *val_truth = collect_val ? malloc((size_t)val_count * sizeof *val_truth) : NULL;
  void *val_scratch = collect_val ? malloc(damo_metrics_scratch_bytes(val_count)) : NULL;
  damo_tensor *val_probs_t = val_probs ? damo_tensor_wrap(DAMO_F32, 2, val_shape, val_probs) : NULL;
  damo_tensor *val_truth_t = val_truth ? damo_tensor_wrap(DAMO_I32, 1, val_shape, val_truth) : NULL;
  early_stop es;
  st = early_stop_init(&es, &o, recorded, xv != NULL, m->n_params + m->n_state);
  if (!h || !idx || (xv && !val_idx)) st = DAMO_ERR_NOMEM;
  if (collect_val && (!val_probs_t || !val_truth_t || !val_scratch))
    st = damo_error(DAMO_ERR_NOMEM, "fit: out of memory for %lld validation predictions", (long long)val_count);
  if (st == DAMO_OK && o.history_csv) st = damo_history_csv_check(o.history_csv, recorded);
  augment_feed feed;
  damo_status st_feed = idx ? augment_feed_init(&feed, m, &o, x, y, idx, n_train, batch) : DAMO_ERR_NOMEM;
  if (st == DAMO_OK) st = st_feed;
  damo_progress pr;
  damo_progress_init(&pr, o.out, o.verbose);
  damo_rng rng;
  damo_rng_seed(&rng, o.seed);
  int64_t steps_per_epoch = (n_train + batch - 1) / batch;
  int64_t total_steps = (int64_t)o.epochs * steps_per_epoch;
  fit_adapter fa = {.m = m, .mg = mg, .x = x, .y = y, .feed = &feed, .metrics = metrics, .outputs = outputs,
                    .binary_metrics = binary_metrics};
  damo_train_adapter adapter = {.name = "training", .ctx = &fa, .params = m->param_block, .grads = m->grad_block,
                                .n_params = m->n_params, .stage = fit_stage, .forward = fit_forward,
                                .backward = fit_backward, .locate_nonfinite = fit_locate_nonfinite,
                                .observe = fit_observe};
  damo_trainer *trainer = NULL;
  if (st == DAMO_OK && (st = damo_trainer_new(&adapter, m->opt, 1, total_steps, &trainer)) == DAMO_OK) {
    damo_trainer_set_steps_done(trainer, damo_optimizer_steps(m->opt));
    damo_trainer_set_grad_hook(trainer, o.grad_hook, o.grad_hook_ctx);
  }

  for (int epoch = o.initial_epoch; epoch < o.epochs && st == DAMO_OK; epoch++) {
    if (o.shuffle != 0) damo_shuffle_indices(idx, n_train, &rng);
    if (feed.pf && (st = damo_prefetcher_start(feed.pf, 0, steps_per_epoch)) != DAMO_OK) break;
    damo_progress_epoch_begin(&pr, epoch + 1, o.epochs, steps_per_epoch);
    double loss_sum = 0;
    int64_t seen = 0;
    fa.correct = fa.counted = 0;
    if (binary_metrics) memset(&fa.counts, 0, sizeof fa.counts);
    float lr = damo_optimizer_lr(m->opt, total_steps);
    for (int64_t s = 0; s < steps_per_epoch && st == DAMO_OK; s++) {
      fa.rows = idx + s * batch;
      fa.b = n_train - s * batch < batch ? n_train - s * batch : batch;
      damo_train_report rep;
      if ((st = damo_trainer_step(trainer, &rep)) != DAMO_OK) {
        damo_error_prefix(st, "fit: epoch %d, ", epoch + 1);
        break;
      }
      lr = rep.lr;
      loss_sum += (double)rep.loss * (double)fa.b;
      seen += fa.b;
      if (damo_progress_due(&pr, s + 1)) {
        double running[DAMO_HISTORY_COLUMNS];
        for (int k = 0; k < DAMO_HISTORY_COLUMNS; k++) running[k] = NAN;
        running[DAMO_H_LOSS] = loss_sum / (double)seen;
        running[DAMO_H_ACCURACY] = fa.counted ? (double)fa.correct / (double)fa.counted : NAN;
        if (binary_metrics) damo_binary_counts_to_row(&fa.counts, metrics, running);
        damo_progress_step(&pr, s + 1, running, recorded);
      }
    }
    if (st != DAMO_OK) break;
    double row[DAMO_HISTORY_COLUMNS];
    for (int k = 0; k < DAMO_HISTORY_COLUMNS; k++) row[k] = NAN;
    row[DAMO_H_LOSS] = loss_sum / (double)seen;
    row[DAMO_H_ACCURACY] = fa.counted ? (double)fa.correct / (double)fa.counted : NAN;
    row[DAMO_H_LR] = lr;
    if (binary_metrics) damo_binary_counts_to_row(&fa.counts, metrics, row);
    if (xv) {
      double vl, va;
      if ((st = evaluate_rows(m, mg, xv, yv, val_idx, val_count, &vl, &va, val_probs, val_truth)) != DAMO_OK) break;
      row[DAMO_H_VAL_LOSS] = vl;
      row[DAMO_H_VAL_ACCURACY] = va >= 0 ? va : NAN;
      if (collect_val) {
        damo_metrics vm = {0};
        if ((st = damo_classification_metrics_scratch(val_probs_t, val_truth_t, val_scratch, &vm)) != DAMO_OK) break;
        const double exact[] = {vm.precision, vm.recall, vm.f1, vm.auc};
        for (size_t k = 0; k < sizeof binary_columns / sizeof *binary_columns; k++)
          if (metrics & binary_columns[k].metric) row[binary_columns[k].val_column] = exact[k];
      }
    }
    damo_progress_epoch_end(&pr, steps_per_epoch, row, recorded);
    m->epochs_done = epoch + 1;
    if ((st = damo_history_append(h, epoch + 1, row)) != DAMO_OK) break;
    if (o.history_csv && (st = damo_history_csv_append(o.history_csv, recorded, epoch + 1, row)) != DAMO_OK) break;
    if (early_stop_update(&es, row, epoch + 1, m, o.patience)) {
      if (pr.verbose)
        fprintf(pr.f, "Early stopping at epoch %d: %s did not improve for %d epochs (best %.4f at epoch %d)\n", epoch + 1,
                damo_history_columns[es.column], o.patience, es.best, es.best_epoch);
      break;
    }
  }
  if (st == DAMO_OK && es.best_params && es.best_epoch > 0) {
    memcpy(m->param_block, es.best_params, (size_t)m->n_params * sizeof(float));
    memcpy(m->state_block, es.best_params + m->n_params, (size_t)m->n_state * sizeof(float));
    if (pr.verbose) fprintf(pr.f, "Restored the weights of epoch %d\n", es.best_epoch);
  }
  damo_trainer_free(trainer);
  if (st_feed == DAMO_OK) augment_feed_free(&feed);
  free(es.best_params);
  free(idx);
  free(val_idx);
  damo_tensor_free(val_probs_t); /* wraps, not owning their buffers */
  damo_tensor_free(val_truth_t);
  free(val_probs);
  free(val_truth);
  free(val_scratch);
  if (history) *history = h;
  else damo_history_free(h);
  return st;
}
