/* fit.c - the training loop.
 *
 * One step: stage a shuffled batch, forward, check the loss, backward, optimizer update.
 * (evaluate and predict are in evaluate.c.)
 * Nothing is allocated inside the loop: the graph's arena and the staging buffers were
 * sized when the graph was built. Validation reuses the training graph in inference mode. */
#include "data/prefetch.h"
#include "train/distill.h"
#include "train/fit_outputs.h"
#include "train/progress.h"

#include <math.h>
#include <stdio.h>

/* ------------------------------------------------------------------ early stopping */

/* The column fit's early stopping watches (the loop does the watching); -1: none asked.
 * recorded: the history columns of this run (1u << DAMO_H_*). */
static damo_status monitor_column(const damo_fit_options *o, unsigned recorded, const fit_outputs *outs, int has_val,
                                  int *column) {
  *column = -1;
  if (o->patience <= 0) return DAMO_OK;
  const char *mon = o->monitor ? o->monitor : (has_val ? "val_loss" : "loss");
  for (int c = 0; c < DAMO_HISTORY_COLUMNS; c++)
    if (!strcmp(mon, damo_history_columns[c])) *column = c;
  if (*column < 0 && (*column = fit_outputs_column(outs, mon)) >= 0) {
    if (!strncmp(mon, "val_", 4) && !has_val)
      return damo_error(DAMO_ERR_INVALID_ARG, "fit: early stopping monitors '%s' but there is no validation data", mon);
    return DAMO_OK;
  }
  if (*column < 0 && outs->n > 1 && !strncmp(mon, "val_", 4) && !has_val && fit_outputs_column(outs, mon + 4) >= 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: early stopping monitors '%s' but there is no validation data", mon);
  if (*column < 0 && outs->n > 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: cannot monitor '%s' (use loss, val_loss or an output's figure such as "
                      "'%s')", mon, outs->names[0]);
  if (*column < 0 || *column == DAMO_H_LR)
    return damo_error(DAMO_ERR_INVALID_ARG,
                      "fit: cannot monitor '%s' (use loss, accuracy, val_loss, val_accuracy or a compiled metric such "
                      "as val_auc)",
                      mon);
  if (*column >= DAMO_H_VAL_LOSS && *column <= DAMO_H_VAL_AUC && !has_val)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: early stopping monitors '%s' but there is no validation data", mon);
  if (!(recorded >> *column & 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: early stopping monitors '%s' but the model was not compiled with that metric",
                      mon);
  return DAMO_OK;
}

/* ------------------------------------------------------------------ augmentation feed */

/* With augmentation, a background thread gathers and augments batch k+1 while the step
 * trains on batch k. Batch b of epoch e draws from a generator seeded by (fit seed, e, b)
 * alone, so a seed gives the same batches whatever the timing, and a run resumed in the
 * middle of an epoch needs no generator state to carry on. */
typedef struct augment_feed {
  const damo_model *m;
  const damo_tensor *x, *y; /* augmentation: a model of one image input */
  const int64_t *idx;
  int64_t n_train, batch;
  int h, w, c;
  damo_augment_options opt;
  uint64_t seed;
  int rank, size; /* data parallel: this rank's share of each batch, its own draws */
  int64_t epoch; /* set before each epoch's producer starts */
  float *scratch;
  damo_prefetcher *pf;
} augment_feed;

static damo_status produce_augmented(void *ctx, int64_t b, float *xb, void *yb) {
  augment_feed *f = ctx;
  int64_t first = b * f->batch, n = f->n_train - first < f->batch ? f->n_train - first : f->batch, share_first;
  damo_dist_share(n, f->rank, f->size, &share_first, &n);
  if (n == 0) return DAMO_OK;
  damo_model_gather_rows(f->m, f->x, f->y, f->idx + first + share_first, n, xb, yb);
  damo_rng rng;
  damo_rng_seed(&rng, f->seed ^ ((uint64_t)f->epoch * 0x9e3779b97f4a7c15ULL + (uint64_t)b * 0xbf58476d1ce4e5b9ULL) ^
                          (uint64_t)f->rank * 0x94d049bb133111ebULL); /* rank 0: as one process */
  return damo_augment_batch(&f->opt, xb, xb, n, f->h, f->w, f->c, &rng, f->scratch);
}

static damo_status augment_feed_init(augment_feed *f, const damo_model *m, const damo_fit_options *o,
                                     const damo_tensor *x, const damo_tensor *y, const int64_t *idx, int64_t n_train,
                                     int64_t batch) {
  memset(f, 0, sizeof *f);
  if (!o->augment) return DAMO_OK;
  if (m->n_inputs != 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: augmentation needs a model of one image input, this one takes %d",
                      m->n_inputs);
  if (damo_model_num_outputs(m) != 1)
    return damo_error(DAMO_ERR_UNSUPPORTED, "fit: augmentation is for a model of one output, this one has %d",
                      damo_model_num_outputs(m));
  if (m->in_ndim != 2 && !(m->in_ndim == 3 && m->in_shape[2] <= 4))
    return damo_error(DAMO_ERR_INVALID_ARG,
                      "fit: augmentation needs image inputs (height, width) or (height, width, channels), the model "
                      "takes rank %d",
                      m->in_ndim);
  f->m = m, f->x = x, f->y = y, f->idx = idx, f->n_train = n_train, f->batch = batch;
  f->h = (int)m->in_shape[0], f->w = (int)m->in_shape[1], f->c = m->in_ndim == 3 ? (int)m->in_shape[2] : 1;
  f->opt = *o->augment;
  f->opt.parallel = 0; /* the training step owns the cores */
  f->seed = o->seed ^ 0x6175676d656e74ULL;
  f->rank = damo_dist_rank(o->dist), f->size = damo_dist_size(o->dist);
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
  if (st != DAMO_OK || n == 0) return st; /* a data-parallel rank without rows takes its (empty) slot */
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
  damo_model_graph *val_mg;    /* validation's: mg, or under distillation the plain loss's */
  const damo_tensor *const *x; /* every input's data */
  const damo_tensor *const *y; /* every output's targets */
  augment_feed *feed;
  const int64_t *rows; /* this rank's rows of the batch (no feed) */
  int64_t b;           /* how many */
  damo_dist *dist;     /* data parallel (NULL: alone) */
  int rank, size;
  int metrics, outputs;
  int binary_metrics;
  int64_t correct, counted;
  damo_binary_counts counts;
  /* the loop's side */
  int64_t *idx, n_train, batch, steps_per_epoch;
  int shuffle;
  damo_rng rng;
  damo_progress pr;
  int patience;
  damo_history *history;
  const damo_fit_options *o;
  uint64_t seed;
  /* validation rows, and the predictions kept for the exact binary figures */
  const damo_tensor *const *xv;
  const damo_tensor *const *yv;
  fit_outputs *outs; /* figures per output (a model of several) */
  int64_t *val_idx, val_count;
  fit_val_preds *val; /* the predictions of the outputs with binary metrics */
  /* DP-SGD: the options, this step's sampled rows (dp_count) taken dp_physical at a time,
   * the history column of epsilon, the trainer (its steps spend the budget) */
  damo_dp_options *dp;
  double *dp_rdp; /* one step's RDP at each default order: epsilon after k steps is k times that */
  int64_t *dp_rows, dp_count, dp_physical;
  int dp_column;
  damo_trainer *trainer;
} fit_adapter;

static damo_status fit_stage(void *ctx, int64_t micro) {
  fit_adapter *f = ctx;
  if (f->dp) { /* pass `micro` of the sampled rows */
    const int64_t first = micro * f->dp_physical;
    f->rows = f->dp_rows + first;
    f->b = f->dp_count - first < f->dp_physical ? f->dp_count - first : f->dp_physical;
  }
  if (f->b == 0) return f->feed->pf ? augment_feed_stage(f->feed, f->mg, 0) : DAMO_OK; /* a rank without rows */
  if (!f->feed->pf) return damo_model_stage_batch(f->m, f->mg, f->x, f->y, f->rows, f->b);
  damo_status st = augment_feed_stage(f->feed, f->mg, f->b);
  return st == DAMO_OK ? damo_distill_score_batch(f->m, f->mg, f->b) : st; /* a distillation's teacher, on these views */
}

static double fit_rows(void *ctx) { return (double)((fit_adapter *)ctx)->b; }

static void fit_set_grad_ready(void *ctx, damo_grad_ready_fn fn, void *fn_ctx) {
  damo_graph_set_grad_ready(((fit_adapter *)ctx)->mg->g, fn, fn_ctx);
}

static damo_status fit_forward(void *ctx, float *loss) {
  fit_adapter *f = ctx;
  damo_status st = damo_graph_forward(f->mg->g, 1);
  if (st == DAMO_OK) st = damo_graph_read(f->mg->g, f->mg->loss, 0, 1, loss); /* through the backend */
  return st;
}

static damo_status fit_backward(void *ctx) { return damo_graph_backward(((fit_adapter *)ctx)->mg->g); }

static damo_graph *fit_graph(void *ctx) { return ((fit_adapter *)ctx)->mg->g; }

static int64_t fit_passes(void *ctx) {
  const fit_adapter *f = ctx;
  return (f->dp_count + f->dp_physical - 1) / f->dp_physical;
}

/* DP-SGD's batch of step s: each training row with probability q (Poisson), or the shuffled
 * order's next batch. */
static void fit_dp_sample(fit_adapter *f, int64_t s) {
  f->dp_count = 0;
  if (f->dp->sampling == DAMO_DP_POISSON) {
    f->dp_count = damo_dp_poisson_sample(&f->rng, f->idx, f->n_train, f->dp->sample_rate, f->dp_rows);
    return;
  }
  const int64_t first = s * f->batch, b = f->n_train - first < f->batch ? f->n_train - first : f->batch;
  memcpy(f->dp_rows, f->idx + first, (size_t)b * sizeof *f->dp_rows);
  f->dp_count = b;
}

/* The privacy spent after the steps done so far (asked every step for the progress line:
 * from the per-step RDP worked out once). */
static double fit_epsilon(fit_adapter *f) {
  double eps = NAN, order = NAN;
  const int64_t steps = damo_trainer_steps_done(f->trainer);
  if (steps > 0 && damo_dp_epsilon_rdp(f->dp_rdp, (double)steps, f->dp->delta, (damo_dp_conversion)f->dp->conversion,
                                       &eps, &order) != DAMO_OK)
    eps = NAN;
  f->dp->steps = steps, f->dp->epsilon = steps > 0 ? eps : 0.0, f->dp->best_order = order;
  return eps;
}

static const char *fit_locate_nonfinite(void *ctx) {
  fit_adapter *f = ctx;
  return damo_model_find_nonfinite(f->m, f->mg);
}

/* Training metrics from the logits the forward left in memory. */
static void fit_observe(void *ctx) {
  fit_adapter *f = ctx;
  int64_t c;
  f->correct += damo_model_batch_correct(f->m, f->mg, 0, f->b, &c);
  f->counted += c;
  if (f->b) fit_outputs_observe(f->outs, f->m, f->mg, f->b);
  if (f->binary_metrics)
    damo_binary_counts_add(&f->counts, damo_node_data(f->mg->logits), f->outputs, f->mg->y_stage, f->m->copt.loss, f->b,
                           f->metrics & DAMO_METRIC_AUC);
}

/* The loop's hooks. */
static damo_status fit_epoch_begin(void *ctx, int64_t epoch, int64_t first_step) {
  fit_adapter *f = ctx;
  if (first_step == 0) { /* a resumed epoch keeps its restored order and running figures */
    if (f->shuffle) damo_shuffle_indices(f->idx, f->n_train, &f->rng);
    f->correct = f->counted = 0;
    memset(&f->outs->sums, 0, sizeof f->outs->sums);
    if (f->binary_metrics) memset(&f->counts, 0, sizeof f->counts);
  }
  f->feed->epoch = epoch;
  damo_status st = f->feed->pf ? damo_prefetcher_start(f->feed->pf, first_step, f->steps_per_epoch - first_step) : DAMO_OK;
  damo_progress_epoch_begin(&f->pr, (int)epoch + 1, f->pr.epochs, f->steps_per_epoch);
  return st;
}

static damo_status fit_step_begin(void *ctx, int64_t s, int64_t *examples) {
  fit_adapter *f = ctx;
  if (f->dp) {
    fit_dp_sample(f, s);
    *examples = f->dp_count;
    return DAMO_OK;
  }
  const int64_t b = f->n_train - s * f->batch < f->batch ? f->n_train - s * f->batch : f->batch;
  int64_t first;
  damo_dist_share(b, f->rank, f->size, &first, &f->b);
  f->rows = f->idx + s * f->batch + first;
  *examples = b; /* the loss is the whole batch's */
  return DAMO_OK;
}

/* The epoch's running figures over every rank (each counted its own rows). */
static void fit_train_figures(void *ctx, double *row) {
  fit_adapter *f = ctx;
  double c[2 + 4 + 2 * DAMO_AUC_BINS];
  damo_binary_counts all = f->counts;
  c[0] = (double)f->correct, c[1] = (double)f->counted;
  const int n = f->binary_metrics ? (int)(sizeof c / sizeof *c) : 2;
  if (f->size > 1) {
    const int64_t *counts = &all.tp; /* tp, fp, fn, tn, then the two histograms: int64 throughout */
    for (int k = 2; k < n; k++) c[k] = (double)counts[k - 2];
    if (damo_dist_allreduce_f64(f->dist, c, n) != DAMO_OK) c[1] = 0; /* the next collective fails the step */
    int64_t *out = &all.tp;
    for (int k = 2; k < n; k++) out[k - 2] = (int64_t)c[k];
  }
  row[DAMO_H_ACCURACY] = c[1] > 0 ? c[0] / c[1] : NAN;
  fit_outputs_train_figures(f->outs, f->dist, row);
  if (f->binary_metrics) damo_binary_counts_to_row(&all, f->metrics, row);
  if (f->dp) row[f->dp_column] = fit_epsilon(f);
}

static const struct {
  int metric, val_column;
} binary_val_columns[] = {{DAMO_METRIC_PRECISION, DAMO_H_VAL_PRECISION},
                          {DAMO_METRIC_RECALL, DAMO_H_VAL_RECALL},
                          {DAMO_METRIC_F1, DAMO_H_VAL_F1},
                          {DAMO_METRIC_AUC, DAMO_H_VAL_AUC}};

/* Validation shared by the ranks: each its share of the rows; sums reduced, predictions
 * gathered for the exact binary figures. */
static damo_status validate_shared(fit_adapter *f, double *vl, double *va, double *ls, double *as) {
  int64_t first, n;
  damo_dist_share(f->val_count, f->rank, f->size, &first, &n);
  const int heads = f->outs->n;
  float *probs[DAMO_MODEL_MAX_OUTPUTS] = {0};
  int32_t *truth[DAMO_MODEL_MAX_OUTPUTS] = {0};
  for (int k = 0; k < heads; k++)
    if (f->val->probs[k]) probs[k] = f->val->probs[k] + first * f->val->size[k], truth[k] = f->val->truth[k] + first;
  double l = 0, a = -1, sums[3 * (DAMO_MODEL_MAX_OUTPUTS + 1)] = {0};
  for (int k = 0; k < heads; k++) ls[k] = 0, as[k] = -1;
  damo_status st = n ? damo_model_evaluate_rows(f->m, f->val_mg, f->xv, f->yv, f->val_idx + first, n, &l, &a, ls, as,
                                                probs, truth)
                     : DAMO_OK;
  if (st != DAMO_OK) return st;
  /* evaluate_rows counts every row it scores: the total, then each output's */
  for (int k = -1; k < heads; k++) {
    const double lk = k < 0 ? l : ls[k], ak = k < 0 ? a : as[k];
    double *s = sums + 3 * (k + 1);
    s[0] = lk * (double)n, s[1] = ak >= 0 ? ak * (double)n : 0, s[2] = ak >= 0 ? (double)n : 0;
  }
  if ((st = damo_dist_allreduce_f64(f->dist, sums, 3 * (heads + 1))) != DAMO_OK) return st;
  *vl = sums[0] / (double)f->val_count;
  *va = sums[2] > 0 ? sums[1] / sums[2] : -1;
  for (int k = 0; k < heads; k++) {
    const double *s = sums + 3 * (k + 1);
    ls[k] = s[0] / (double)f->val_count, as[k] = s[2] > 0 ? s[1] / s[2] : -1;
  }
  if (f->val->any) {
    int64_t *counts = malloc((size_t)f->size * sizeof *counts);
    if (!counts) return damo_error(DAMO_ERR_NOMEM, "validation: out of memory");
    for (int k = 0; k < heads && st == DAMO_OK; k++) {
      if (!f->val->probs[k]) continue;
      for (int r = 0; r < f->size; r++) damo_dist_share(f->val_count, r, f->size, &first, &counts[r]);
      st = damo_dist_allgather_f32(f->dist, (float *)f->val->truth[k], counts); /* i32 labels travel as their bits */
      for (int r = 0; r < f->size; r++) counts[r] *= f->val->size[k];
      if (st == DAMO_OK) st = damo_dist_allgather_f32(f->dist, f->val->probs[k], counts);
    }
    free(counts);
  }
  return st;
}

static damo_status fit_validate(void *ctx, double *row) {
  fit_adapter *f = ctx;
  double vl, va, ls[DAMO_MODEL_MAX_OUTPUTS], as[DAMO_MODEL_MAX_OUTPUTS];
  damo_status st = f->size > 1 ? validate_shared(f, &vl, &va, ls, as)
                               : damo_model_evaluate_rows(f->m, f->val_mg, f->xv, f->yv, f->val_idx, f->val_count, &vl,
                                                          &va, ls, as, f->val->probs, f->val->truth);
  if (st != DAMO_OK) return st;
  row[DAMO_H_VAL_LOSS] = vl;
  row[DAMO_H_VAL_ACCURACY] = va >= 0 ? va : NAN;
  fit_outputs_val_figures(f->outs, ls, as, row);
  for (int k = 0; k < f->outs->n; k++) { /* exact figures from the validation predictions */
    if (!f->val->probs[k]) continue;
    damo_metrics vm = {0};
    if ((st = damo_classification_metrics_scratch(f->val->probs_t[k], f->val->truth_t[k], f->val->scratch, &vm)) !=
        DAMO_OK)
      return st;
    if (f->outs->n > 1) {
      fit_outputs_val_binary(f->outs, k, &vm, row);
      continue;
    }
    const double exact[] = {vm.precision, vm.recall, vm.f1, vm.auc};
    for (size_t j = 0; j < sizeof binary_val_columns / sizeof *binary_val_columns; j++)
      if (f->metrics & binary_val_columns[j].metric) row[binary_val_columns[j].val_column] = exact[j];
  }
  return DAMO_OK;
}

/* Keras-style output: the bar (or a line per epoch) from the loop's events. */
static damo_status fit_on_event(void *ctx, const damo_train_event *e) {
  fit_adapter *f = ctx;
  damo_progress *pr = &f->pr;
  switch (e->kind) {
  case DAMO_EVENT_STEP:
    if (damo_progress_due(pr, e->step)) damo_progress_step(pr, e->step, e->figures, e->recorded);
    break;
  case DAMO_EVENT_EPOCH:
    damo_progress_epoch_end(pr, e->steps, e->figures, e->recorded);
    f->m->epochs_done = e->epoch;
    break;
  case DAMO_EVENT_EARLY_STOP:
    if (pr->verbose)
      fprintf(pr->f, "Early stopping at epoch %lld: %s did not improve for %d epochs (best %.4f at epoch %lld)\n",
              (long long)e->epoch, damo_history_column_name(f->history, e->monitor), f->patience, e->best, (long long)e->best_at);
    break;
  case DAMO_EVENT_RESTORED:
    if (pr->verbose) fprintf(pr->f, "Restored the weights of epoch %lld\n", (long long)e->best_at);
    break;
  default: break;
  }
  return DAMO_OK;
}

/* ------------------------------------------------------------------ checkpoints */

#define STATE_FILE "trainer_state.safetensors"

/* What identifies the run a checkpoint belongs to: resuming with other data, batch size or
 * seed would silently train something else. */
typedef struct fit_run_id {
  int64_t n_train, batch, steps_per_epoch;
  uint64_t seed;
} fit_run_id;

/* The fit side of a checkpoint: the data order and the generators (shuffle, dropout), the
 * epoch's running figures; the trainer adds weights, moments, position and history. */
typedef struct fit_counters {
  int64_t correct, counted;
  damo_binary_counts counts;
} fit_counters;

static damo_status fit_checkpoint(void *ctx, const damo_train_event *e) {
  fit_adapter *f = ctx;
  const char *dir = f->o->checkpoint_dir;
  damo_dir_save *tx;
  damo_status st = damo_dir_save_begin(dir, &tx);
  if (st != DAMO_OK) return damo_error_prefix(st, "checkpoint: ");
  const char *folder = damo_dir_save_folder(tx);
  char path[4096];
  st = damo_model_save(f->m, folder);
  damo_tensor_dict *d = st == DAMO_OK ? damo_tensor_dict_new() : NULL;
  if (st == DAMO_OK && !d) st = damo_error(DAMO_ERR_NOMEM, "out of memory");
  if (st == DAMO_OK) st = damo_trainer_checkpoint_add(e, d);
  fit_run_id id = {f->n_train, f->batch, f->steps_per_epoch, f->seed};
  fit_counters c = {f->correct, f->counted, f->counts};
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "fit.run", &id, sizeof id);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "fit.order", f->idx, (size_t)f->n_train * sizeof *f->idx);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "fit.shuffle_rng", &f->rng, sizeof f->rng);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "fit.dropout_rng", &f->mg->g->rng, sizeof f->mg->g->rng);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "fit.counters", &c, sizeof c);
  if (st == DAMO_OK && f->outs->n > 1)
    st = damo_tensor_dict_add_bytes(d, "fit.outputs", &f->outs->sums, sizeof f->outs->sums);
  if (st == DAMO_OK) {
    snprintf(path, sizeof path, "%s/%s", folder, STATE_FILE);
    st = damo_safetensors_save(path, d, NULL, 0);
  }
  damo_tensor_dict_free(d);
  if (st == DAMO_OK) {
    snprintf(path, sizeof path, "%s/history.csv", folder);
    st = damo_history_csv_write(f->history, path);
  }
  if (st == DAMO_OK && f->o->checkpoint_files) st = f->o->checkpoint_files(f->o->checkpoint_ctx, folder, f->history);
  if (st != DAMO_OK) {
    damo_dir_save_abort(tx);
    return damo_error_prefix(st, "checkpoint after %lld steps: ", (long long)damo_optimizer_steps(f->m->opt));
  }
  return damo_dir_save_commit(tx);
}

static damo_status fit_resume(fit_adapter *f, damo_trainer *trainer) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", f->o->checkpoint_dir, STATE_FILE);
  damo_tensor_dict *d = NULL;
  damo_status st = damo_safetensors_load(path, &d);
  if (st == DAMO_ERR_IO || st == DAMO_ERR_NOT_FOUND)
    return damo_error(DAMO_ERR_NOT_FOUND, "resume: %s holds no checkpoint (%s)", f->o->checkpoint_dir, damo_last_error());
  if (st != DAMO_OK) return st;
  fit_run_id id, want = {f->n_train, f->batch, f->steps_per_epoch, f->seed};
  fit_counters c;
  damo_rng shuffle = {{0}}, dropout = {{0}};
  int64_t *order = malloc((size_t)f->n_train * sizeof *order);
  if (!order) st = damo_error(DAMO_ERR_NOMEM, "resume: out of memory");
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "fit.run", &id, sizeof id);
  if (st == DAMO_OK && memcmp(&id, &want, sizeof id))
    st = damo_error(DAMO_ERR_INVALID_ARG, "%s: the checkpoint's run trained on %lld rows in batches of %lld with seed "
                    "%llu; this one has %lld rows, batch %lld, seed %llu (resume with the same data and settings)",
                    path, (long long)id.n_train, (long long)id.batch, (unsigned long long)id.seed, (long long)want.n_train,
                    (long long)want.batch, (unsigned long long)want.seed);
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "fit.order", order, (size_t)f->n_train * sizeof *order);
  for (int64_t i = 0; st == DAMO_OK && i < f->n_train; i++)
    if (order[i] < 0 || order[i] >= f->n_train) st = damo_error(DAMO_ERR_FORMAT, "%s: 'fit.order' is not a permutation", path);
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "fit.shuffle_rng", &shuffle, sizeof shuffle);
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "fit.dropout_rng", &dropout, sizeof dropout);
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "fit.counters", &c, sizeof c);
  fit_output_sums sums;
  memset(&sums, 0, sizeof sums);
  if (st == DAMO_OK && f->outs->n > 1) st = damo_tensor_dict_get_bytes(d, path, "fit.outputs", &sums, sizeof sums);
  if (st == DAMO_OK) st = damo_trainer_resume(trainer, d, path);
  if (st == DAMO_OK) {
    memcpy(f->idx, order, (size_t)f->n_train * sizeof *order);
    f->rng = shuffle;
    f->mg->g->rng = dropout;
    f->correct = c.correct, f->counted = c.counted, f->counts = c.counts;
    f->outs->sums = sums;
  }
  free(order);
  damo_tensor_dict_free(d);
  return st;
}

/* ------------------------------------------------------------------ fit */

damo_status damo_model_fit(damo_model *m, const damo_tensor *x, const damo_tensor *y, const damo_fit_options *opt,
                           damo_history **history) {
  return damo_model_fit_inputs(m, 1, &x, y, opt, history);
}

damo_status damo_model_fit_inputs(damo_model *m, int n_x, const damo_tensor *const *x, const damo_tensor *y,
                                  const damo_fit_options *opt, damo_history **history) {
  return damo_model_fit_outputs(m, n_x, x, 1, &y, opt, history);
}

static damo_status fit_run(damo_model *m, int n_x, const damo_tensor *const *x, int n_y, const damo_tensor *const *y,
                           const damo_fit_options *opt, damo_history **history, int purpose);

damo_status damo_model_fit_outputs(damo_model *m, int n_x, const damo_tensor *const *x, int n_y,
                                   const damo_tensor *const *y, const damo_fit_options *opt, damo_history **history) {
  if (!opt || !opt->distill) return fit_run(m, n_x, x, n_y, y, opt, history, DAMO_GRAPH_TRAIN);
  if (history) *history = NULL;
  if (!m || !m->compiled) return damo_error(DAMO_ERR_STATE, "fit: compile the model before fit");
  damo_status st = damo_model_check_counts(m, n_x, x, n_y, "fit");
  if (st == DAMO_OK && y && (st = damo_model_check_data(m, x, y, "fit")) != DAMO_OK) return st;
  damo_tensor *soft = NULL;
  if (st == DAMO_OK && (st = damo_distill_begin(m, opt, n_x, x, &soft)) == DAMO_OK) {
    st = fit_run(m, n_x, x, n_y, y, opt, history, DAMO_GRAPH_DISTILL);
    damo_distill_end(m, soft);
  }
  return st;
}

/* fit through the graph of that purpose: DAMO_GRAPH_TRAIN, or DAMO_GRAPH_DISTILL once
 * damo_distill_begin has set the model up. */
static damo_status fit_run(damo_model *m, int n_x, const damo_tensor *const *x, int n_y, const damo_tensor *const *y,
                           const damo_fit_options *opt, damo_history **history, int purpose) {
  if (history) *history = NULL;
  if (!m || !m->compiled) return damo_error(DAMO_ERR_STATE, "fit: compile the model before fit");
  if (m->quantization)
    return damo_error(DAMO_ERR_STATE, "fit: the model is int8-quantised (inference only): train the f32 model, then "
                      "quantise it again");
  damo_model_drop_sparse(m); /* the steps change the kernels the sparse products were built from */
  damo_status st = damo_model_check_counts(m, n_x, x, n_y, "fit");
  if (st == DAMO_OK && !y) st = damo_error(DAMO_ERR_INVALID_ARG, "fit: y is NULL");
  if (st != DAMO_OK) return st;
  const int n_out = damo_model_num_outputs(m);
  damo_fit_options o = opt ? *opt : (damo_fit_options){0};
  if (o.epochs <= 0) o.epochs = 1;
  if (o.batch_size <= 0) o.batch_size = 32;
  if (!opt) o.verbose = -1;
  const int rank = damo_dist_rank(o.dist), size = damo_dist_size(o.dist);
  if (rank != 0) o.verbose = 0; /* rank 0 speaks for all */
  if ((st = damo_model_check_data(m, x, y, "fit")) != DAMO_OK) return st;
  if (!(o.validation_split >= 0 && o.validation_split < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: validation_split %g is outside [0, 1)", (double)o.validation_split);
  if (o.x_val && o.x_val_inputs) return damo_error(DAMO_ERR_INVALID_ARG, "fit: give x_val or x_val_inputs, not both");
  if (o.x_val && m->n_inputs != 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: the model takes %d inputs; give validation data as x_val_inputs",
                      m->n_inputs);
  if (o.y_val && o.y_val_outputs) return damo_error(DAMO_ERR_INVALID_ARG, "fit: give y_val or y_val_outputs, not both");
  if (o.y_val && n_out != 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: the model has %d outputs; give validation targets as y_val_outputs",
                      n_out);
  const damo_tensor *const *given_val = o.x_val_inputs ? o.x_val_inputs : o.x_val ? &o.x_val : NULL;
  const damo_tensor *const *given_yv = o.y_val_outputs ? o.y_val_outputs : o.y_val ? &o.y_val : NULL;
  if (given_val && !given_yv)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: validation inputs given without %s", n_out > 1 ? "y_val_outputs" : "y_val");
  if (given_val && (st = damo_model_check_data(m, given_val, given_yv, "fit (validation data)")) != DAMO_OK) return st;

  /* validation_split takes the last rows before shuffling, as Keras does. */
  int64_t N = x[0]->shape[0], n_val = given_val ? 0 : (int64_t)((double)N * o.validation_split), n_train = N - n_val;
  if (n_train < 1) return damo_error(DAMO_ERR_INVALID_ARG, "fit: no training rows left after the validation split");
  const damo_tensor *const *xv = given_val ? given_val : (n_val ? x : NULL);
  const damo_tensor *const *yv = given_val ? given_yv : (n_val ? y : NULL);
  int64_t val_first = given_val ? 0 : n_train, val_count = given_val ? given_val[0]->shape[0] : n_val;
  int64_t batch = o.batch_size < n_train ? o.batch_size : n_train;

  /* Binary metrics add history columns: train-side ones always, val_ ones with validation data. */
  /* (a model of several outputs: per output, in fit_outputs' columns) */
  const int metrics = n_out > 1 ? 0 : m->copt.metrics, outputs = (int)damo_model_output_size(m);
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

  if (o.dist && size > 1) { /* every rank on the same rows and settings */
    uint64_t hash = DAMO_HASH_START;
    const damo_tensor *parts[2 * DAMO_MODEL_MAX_INPUTS + 2 * DAMO_MODEL_MAX_OUTPUTS] = {0};
    int n_parts = 0;
    for (int k = 0; k < n_out; k++) parts[n_parts++] = y[k], parts[n_parts++] = given_val ? given_yv[k] : NULL;
    for (int k = 0; k < m->n_inputs; k++) parts[n_parts++] = x[k], parts[n_parts++] = given_val ? given_val[k] : NULL;
    for (int k = 0; k < n_parts; k++)
      if (parts[k])
        hash = damo_hash_bytes(hash, parts[k]->data, (size_t)damo_tensor_numel(parts[k]) * damo_dtype_size(parts[k]->dtype));
    const int64_t settings[] = {o.epochs, o.batch_size, (int64_t)o.seed, o.shuffle, (int64_t)(o.validation_split * 1e9),
                                m->params.n_params_padded};
    hash = damo_hash_bytes(hash, settings, sizeof settings);
    if ((st = damo_dist_check_same(o.dist, hash, "training data and fit options")) != DAMO_OK)
      return damo_error_prefix(st, "fit: ");
  }
  if (o.privacy && size > 1)
    return damo_error(DAMO_ERR_UNSUPPORTED, "fit: DP-SGD runs in one process (its clipping and noise are not split over "
                      "%d ranks yet)", size);
  if (o.privacy && o.augment)
    return damo_error(DAMO_ERR_UNSUPPORTED, "fit: DP-SGD samples its own batches; turn augmentation off (--no-augment)");
  const int64_t planned_steps = (int64_t)o.epochs * ((n_train + batch - 1) / batch);
  if (o.privacy && (st = damo_dp_options_resolve(o.privacy, n_train, batch, planned_steps)) != DAMO_OK)
    return damo_error_prefix(st, "fit: ");
  damo_model_set_keep_forward(m, o.privacy != NULL); /* DP-SGD runs backward twice on a forward */
  /* A Poisson batch's size varies (sd about sqrt(batch)): its passes are 4 sd above the mean
   * unless asked, so a second pass is rare. */
  int64_t rows_per_pass = (batch + size - 1) / size;
  if (o.privacy)
    rows_per_pass = o.privacy->physical_batch > 0 ? o.privacy->physical_batch
                    : o.privacy->sampling == DAMO_DP_POISSON ? batch + (int64_t)ceil(4.0 * sqrt((double)batch)) : batch;
  if (rows_per_pass > n_train) rows_per_pass = n_train;
  damo_model_graph *mg; /* sized for this rank's largest share of a batch */
  if ((st = damo_model_graph_get(m, purpose, rows_per_pass, &mg)) != DAMO_OK) return st;
  damo_model_graph *val_mg = mg; /* a distillation validates the student on the labels alone */
  if (purpose != DAMO_GRAPH_TRAIN && xv && (st = damo_model_graph_get(m, DAMO_GRAPH_TRAIN, rows_per_pass, &val_mg)) != DAMO_OK)
    return st;
  if (o.parallel.sync_batchnorm && size > 1) {
    const int64_t last = n_train % batch;
    if (batch < size || (last > 0 && last < size))
      return damo_error(DAMO_ERR_INVALID_ARG, "fit: synchronised BatchNorm on %d ranks needs at least %d rows in every "
                        "batch, but %s has %lld (choose a batch size, or a number of training rows, that leaves "
                        "no short batch)", size, size, batch < size ? "a batch" : "the last batch of an epoch",
                        (long long)(batch < size ? batch : last));
  }
  /* the graph is the model's, kept between calls: set (or clear) every time */
  damo_graph_set_sync_batchnorm(mg->g, o.parallel.sync_batchnorm ? o.dist : NULL);
  if (rank != 0) /* dropout draws its own masks on each rank; rank 0 as one process would */
    damo_rng_seed(&mg->g->rng, o.seed ^ 0x64726f706f7574ULL ^ (uint64_t)rank * 0xd1b54a32d192ed03ULL);
  fit_outputs *outs = malloc(sizeof *outs);
  if (!outs) return damo_error(DAMO_ERR_NOMEM, "fit: out of memory");
  fit_outputs_init(outs, m, xv != NULL);
  if (n_out > 1) recorded = 1u << DAMO_H_LOSS | 1u << DAMO_H_VAL_LOSS | 1u << DAMO_H_LR; /* and the outputs' columns */
  int dp_column = -1;
  if (o.privacy) { /* epsilon spent, a named column after the outputs' */
    const int j = outs->n_names++;
    snprintf(outs->names[j], sizeof outs->names[j], "epsilon");
    outs->name_list[j] = outs->names[j];
    dp_column = DAMO_HISTORY_COLUMNS + j;
  }
  damo_history *h = damo_history_new(recorded);
  if (h && damo_history_set_extra(h, outs->n_names, outs->name_list) != DAMO_OK) st = DAMO_ERR_INVALID_ARG;
  int64_t *dp_rows = o.privacy ? malloc((size_t)n_train * sizeof *dp_rows) : NULL;
  double dp_rdp[160];
  if (o.privacy && !dp_rows) st = DAMO_ERR_NOMEM;
  if (o.privacy) {
    double orders[160];
    const int n_orders = damo_dp_default_orders(orders);
    for (int i = 0; i < n_orders; i++) dp_rdp[i] = damo_dp_rdp(o.privacy->sample_rate, o.privacy->used_noise, 1, orders[i]);
  }
  int64_t *idx = damo_model_iota(n_train, 0), *val_idx = xv ? damo_model_iota(val_count, val_first) : NULL;
  /* The validation predictions, collected for the exact binary figures at each epoch end. */
  int want_val[DAMO_MODEL_MAX_OUTPUTS] = {binary_metrics && xv};
  for (int k = 0; n_out > 1 && k < n_out; k++) want_val[k] = outs->binary[k] && xv;
  fit_val_preds val;
  damo_status st_val = fit_val_preds_init(&val, m, want_val, val_count);
  if (st == DAMO_OK) st = st_val;
  int monitor = -1;
  if (st == DAMO_OK) st = monitor_column(&o, recorded, outs, xv != NULL, &monitor);
  if (!h || !idx || (xv && !val_idx)) st = DAMO_ERR_NOMEM;
  augment_feed feed;
  damo_status st_feed = idx ? augment_feed_init(&feed, m, &o, x[0], y[0], idx, n_train, batch) : DAMO_ERR_NOMEM;
  if (st == DAMO_OK) st = st_feed;
  int64_t steps_per_epoch = (n_train + batch - 1) / batch;
  int64_t total_steps = (int64_t)o.epochs * steps_per_epoch;
  fit_adapter fa = {.m = m, .mg = mg, .val_mg = val_mg, .x = x, .y = y, .feed = &feed, .metrics = metrics, .outputs = outputs,
                    .binary_metrics = binary_metrics, .idx = idx, .n_train = n_train, .batch = batch,
                    .steps_per_epoch = steps_per_epoch, .shuffle = o.shuffle != 0, .patience = o.patience,
                    .xv = xv, .yv = yv, .val_idx = val_idx, .val_count = val_count, .val = &val, .history = h, .o = &o, .seed = o.seed, .dist = o.dist,
                    .rank = rank, .size = size, .outs = outs, .dp = o.privacy, .dp_rdp = dp_rdp, .dp_rows = dp_rows, .dp_column = dp_column,
                    .dp_physical = rows_per_pass};
  damo_progress_init(&fa.pr, o.out, o.verbose);
  fa.pr.h = n_out > 1 || o.privacy ? h : NULL; /* the outputs' columns (and epsilon) too */
  fa.pr.epochs = o.epochs;
  damo_rng_seed(&fa.rng, o.seed);
  damo_train_adapter adapter = {.name = "training", .ctx = &fa, .params = m->param_block, .grads = m->grad_block,
                                .n_params = m->params.n_params_padded, .stage = fit_stage, .forward = fit_forward,
                                .backward = fit_backward, .locate_nonfinite = fit_locate_nonfinite,
                                .observe = fit_observe, .state = m->state_block, .n_state = m->state.n_params_padded,
                                .loss_weight = fit_rows, .set_grad_ready = fit_set_grad_ready, .graph = fit_graph,
                                .micro_batches = o.privacy ? fit_passes : NULL,
                                .trained_ranges = m->params.trained_ranges,
                                .n_trained_ranges = m->params.n_trained_ranges};
  damo_trainer *trainer = NULL;
  if (st == DAMO_OK && (st = damo_trainer_new(&adapter, m->opt, 1, total_steps, &trainer)) == DAMO_OK) {
    damo_trainer_set_steps_done(trainer, damo_optimizer_steps(m->opt));
    damo_trainer_set_grad_hook(trainer, o.grad_hook, o.grad_hook_ctx);
    damo_trainer_set_param_hook(trainer, o.param_hook, o.param_hook_ctx);
    if (o.dist && !o.privacy) st = damo_trainer_set_data_parallel(trainer, o.dist, &o.parallel); /* DP: size 1 */
    fa.trainer = trainer;
    if (st == DAMO_OK && o.privacy) /* the noise's seed: the caller's, or one apart from the run's other draws */
      st = damo_trainer_set_privacy(trainer, o.privacy->clip, o.privacy->used_noise, (double)batch,
                                    o.privacy->seed ? o.privacy->seed : o.seed ^ 0x6e6f697365ULL);
  }
  if (st == DAMO_OK && (o.resume || o.checkpoint_every) && !o.checkpoint_dir)
    st = damo_error(DAMO_ERR_INVALID_ARG, "fit: resume and checkpoint_every need a checkpoint_dir");
  if (st == DAMO_OK && o.resume) st = fit_resume(&fa, trainer);
  /* The running figures behind the progress bar: every step alone; across ranks they are a
   * collective, so 20 times an epoch with a bar and only at epoch ends without one. */
  const int64_t log_every = size == 1 ? 1 : o.verbose == 1 ? (steps_per_epoch + 19) / 20 : steps_per_epoch;
  const int extra_loss = monitor >= DAMO_HISTORY_COLUMNS && strstr(outs->names[monitor - DAMO_HISTORY_COLUMNS], "_loss");
  damo_train_loop loop = {.epochs = o.epochs, .steps_per_epoch = steps_per_epoch, .initial_epoch = o.initial_epoch,
                          .log_every = log_every, .checkpoint_every = o.checkpoint_every, .recorded = recorded, .patience = o.patience, .monitor = monitor,
                          .higher_is_better = monitor != DAMO_H_LOSS && monitor != DAMO_H_VAL_LOSS && !extra_loss,
                          .n_extra = outs->n_names, .extra_columns = outs->name_list,
                          .restore_best = o.restore_best_weights, .min_delta = o.min_delta,
                          .history_csv = o.history_csv};
  damo_train_hooks hooks = {.ctx = &fa, .epoch_begin = fit_epoch_begin, .step_begin = fit_step_begin,
                            .train_figures = fit_train_figures, .validate = xv ? fit_validate : NULL,
                            .checkpoint = o.checkpoint_dir ? fit_checkpoint : NULL, .on_event = fit_on_event};
  if (st == DAMO_OK) st = damo_trainer_run(trainer, &loop, &hooks, h);
  if (o.privacy && trainer) fit_epsilon(&fa); /* what the run spent, into the caller's options */
  if (st != DAMO_OK && !strstr(damo_last_error(), "fit: ")) damo_error_prefix(st, "fit: ");
  damo_trainer_free(trainer);
  if (st_feed == DAMO_OK) augment_feed_free(&feed);
  free(idx);
  free(dp_rows);
  free(val_idx);
  fit_val_preds_free(&val);
  free(outs);
  if (history) *history = h;
  else damo_history_free(h);
  return st;
}
