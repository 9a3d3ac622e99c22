/* loop.c - the one training loop: a run of epochs (Sequential fit, BERT fine-tuning) or of
 * steps (GPT-2, BERT masked LM) around damo_trainer_step, with validation at epoch ends or
 * every validate_every steps, early stopping that keeps the best weights (the adapter's
 * parameters and state), history rows and CSV, and checkpoints. It prints nothing: callers
 * turn its events into progress bars or log lines, so a data-parallel run can let one rank
 * speak. */
#include "graph/backend.h"
#include "train/data_parallel.h"
#include "train/history.h"
#include "train/trainer.h"

#include <math.h>

static damo_status early_stop_init(early_stop *es, const damo_train_loop *o, const damo_train_adapter *a) {
  memset(es, 0, sizeof *es);
  if (o->patience <= 0) return DAMO_OK;
  if (o->monitor < 0 || o->monitor >= DAMO_HISTORY_COLUMNS + o->n_extra || o->monitor == DAMO_H_LR)
    return damo_error(DAMO_ERR_INVALID_ARG, "training loop: cannot monitor column %d", o->monitor);
  es->active = 1;
  es->column = o->monitor;
  es->higher_is_better = o->higher_is_better;
  es->best = es->higher_is_better ? -INFINITY : INFINITY;
  es->min_delta = fabs(o->min_delta);
  if (o->restore_best) {
    es->best_weights = malloc((size_t)(a->n_params + a->n_state + 1) * sizeof(float));
    if (!es->best_weights) return damo_error(DAMO_ERR_NOMEM, "training loop: out of memory keeping the best weights");
  }
  return DAMO_OK;
}

/* 1 when patience is used up, -1 when the best weights could not be copied. A NaN figure
 * never counts as better. */
static int early_stop_update(early_stop *es, const double *row, int64_t at, const damo_train_adapter *a, int patience) {
  if (!es->active) return 0;
  double v = row[es->column];
  int better = es->higher_is_better ? v > es->best + es->min_delta : v < es->best - es->min_delta;
  if (better) {
    es->best = v;
    es->best_at = at;
    es->wait = 0;
    if (es->best_weights) { /* a host copy, read through the adapter's backend */
      const damo_backend *b = a->backend;
      if (b->to_host(b, es->best_weights, a->params, (size_t)a->n_params * sizeof(float)) != DAMO_OK ||
          (a->n_state && b->to_host(b, es->best_weights + a->n_params, a->state, (size_t)a->n_state * sizeof(float)) != DAMO_OK))
        return -1;
    }
    return 0;
  }
  return ++es->wait >= patience;
}

typedef struct damo_train_run run;

static void blank(double *row) {
  for (int k = 0; k < DAMO_HISTORY_ROW; k++) row[k] = NAN;
}

/* Events reach the caller on rank 0 only (a data-parallel run speaks and writes once); a
 * checkpoint first gathers a ZeRO run's moments on every rank. */
static damo_status emit(run *r, damo_train_event *e) {
  e->recorded = r->recorded;
  e->run = r;
  e->position = r->position;
  e->report = r->have_last ? &r->last : NULL;
  const int speaker = damo_dist_rank(damo_trainer_dist(r->t)) == 0;
  if (e->kind == DAMO_EVENT_CHECKPOINT && r->h->checkpoint) {
    damo_status st = r->t->dp ? dp_gather_moments(r->t->dp, r->t->opt) : DAMO_OK;
    if (st == DAMO_OK && speaker) st = r->h->checkpoint(r->h->ctx, e);
    dp_release_moments(r->t->dp);
    if (st != DAMO_OK) return st;
  }
  return r->h->on_event && speaker ? r->h->on_event(r->h->ctx, e) : DAMO_OK;
}

static damo_status one_step(run *r, int64_t step, int64_t *examples) {
  *examples = 1;
  damo_status st = r->h->step_begin ? r->h->step_begin(r->h->ctx, step, examples) : DAMO_OK;
  if (st == DAMO_OK) st = damo_trainer_step(r->t, &r->last);
  if (st == DAMO_OK) r->have_last = 1;
  return st;
}

/* A finished row (an epoch's or a validation's): history, CSV, event, early stopping.
 * *stop is set when patience ran out. */
static damo_status record_row(run *r, damo_train_event *e, const double *row, int64_t at, int *stop) {
  damo_status st = DAMO_OK;
  if (r->history && (st = damo_history_append(r->history, (int)at, row)) != DAMO_OK) return st;
  if (r->o->history_csv && damo_dist_rank(damo_trainer_dist(r->t)) == 0 &&
      (st = damo_history_csv_append(r->o->history_csv, r->history, (int)at, row)) != DAMO_OK)
    return st;
  e->figures = row;
  if ((st = emit(r, e)) != DAMO_OK) return st;
  *stop = early_stop_update(&r->es, row, at, &r->t->a, r->o->patience);
  if (*stop < 0) return damo_error_prefix(DAMO_ERR_IO, "keeping the best weights: ");
  /* rank 0 decides for all: reduced figures may differ in their last bit between ranks, and
   * a rank that stopped alone would leave the others waiting in a collective */
  damo_dist *d = damo_trainer_dist(r->t);
  if (damo_dist_size(d) > 1 && r->es.active && (st = damo_dist_broadcast(d, stop, sizeof *stop, 0)) != DAMO_OK) return st;
  return DAMO_OK;
}

static damo_status run_epochs(run *r) {
  const damo_train_loop *o = r->o;
  const damo_train_hooks *h = r->h;
  damo_status st = DAMO_OK;
  const damo_train_position from = r->position; /* a resumed run's start */
  for (int64_t epoch = from.epoch > o->initial_epoch ? from.epoch : o->initial_epoch; epoch < o->epochs; epoch++) {
    const int64_t first = epoch == from.epoch ? from.step : 0;
    double loss_sum = first ? from.loss_sum : 0, row[DAMO_HISTORY_ROW];
    int64_t seen = first ? from.seen : 0;
    r->position = (damo_train_position){epoch, first, loss_sum, seen};
    if (h->epoch_begin && (st = h->epoch_begin(h->ctx, epoch, first)) != DAMO_OK) return st;
    for (int64_t s = first; s < o->steps_per_epoch; s++) {
      int64_t examples;
      if ((st = one_step(r, s, &examples)) != DAMO_OK) return damo_error_prefix(st, "epoch %lld: ", (long long)epoch + 1);
      loss_sum += (double)r->last.loss * (double)examples;
      seen += examples;
      r->position = (damo_train_position){epoch, s + 1, loss_sum, seen};
      int last = s + 1 == o->steps_per_epoch;
      if (last || (o->log_every > 0 && (s + 1) % o->log_every == 0)) {
        blank(row);
        row[DAMO_H_LOSS] = loss_sum / (double)seen;
        if (h->train_figures) h->train_figures(h->ctx, row);
        damo_train_event e = {.kind = DAMO_EVENT_STEP, .epoch = epoch + 1, .epochs = o->epochs, .step = s + 1,
                              .steps = o->steps_per_epoch, .figures = row};
        if ((st = emit(r, &e)) != DAMO_OK) return st;
      }
      if (!last && h->checkpoint && o->checkpoint_every > 0 && r->t->steps_done % o->checkpoint_every == 0) {
        damo_train_event e = {.kind = DAMO_EVENT_CHECKPOINT, .epoch = epoch + 1, .epochs = o->epochs, .step = s + 1,
                              .steps = o->steps_per_epoch};
        if ((st = emit(r, &e)) != DAMO_OK) return st;
      }
    }
    blank(row);
    row[DAMO_H_LOSS] = loss_sum / (double)seen;
    if (h->train_figures) h->train_figures(h->ctx, row);
    row[DAMO_H_LR] = r->last.lr;
    if (h->validate && (st = h->validate(h->ctx, row)) != DAMO_OK) return st;
    damo_train_event e = {.kind = DAMO_EVENT_EPOCH, .epoch = epoch + 1, .epochs = o->epochs,
                          .step = o->steps_per_epoch, .steps = o->steps_per_epoch};
    int stop = 0;
    if ((st = record_row(r, &e, row, epoch + 1, &stop)) != DAMO_OK) return st;
    /* the epoch is whole: a checkpoint now resumes at the next one */
    r->position = (damo_train_position){epoch + 1, 0, 0.0, 0};
    damo_train_event c = {.kind = DAMO_EVENT_CHECKPOINT, .epoch = epoch + 1, .epochs = o->epochs,
                          .step = o->steps_per_epoch, .steps = o->steps_per_epoch};
    if (h->checkpoint && (st = emit(r, &c)) != DAMO_OK) return st;
    if (stop) {
      damo_train_event s = {.kind = DAMO_EVENT_EARLY_STOP, .epoch = epoch + 1, .epochs = o->epochs,
                            .monitor = r->es.column, .best = r->es.best, .best_at = r->es.best_at};
      return emit(r, &s);
    }
  }
  return DAMO_OK;
}

static damo_status validate_at(run *r, int64_t step, int *stop) {
  double row[DAMO_HISTORY_ROW];
  blank(row);
  if (r->have_last) row[DAMO_H_LOSS] = r->last.loss, row[DAMO_H_LR] = r->last.lr;
  damo_status st = r->h->validate(r->h->ctx, row);
  if (st != DAMO_OK) return st;
  damo_train_event e = {.kind = DAMO_EVENT_VALIDATION, .step = step, .steps = r->o->steps};
  return record_row(r, &e, row, step, stop);
}

static damo_status run_steps(run *r) {
  const damo_train_loop *o = r->o;
  damo_trainer *t = r->t;
  damo_status st = DAMO_OK;
  int stop = 0;
  if (o->validate_first && t->steps_done == 0 && r->h->validate && (st = validate_at(r, 0, &stop)) != DAMO_OK) return st;
  while (t->steps_done < o->steps) {
    int64_t examples;
    if ((st = one_step(r, t->steps_done, &examples)) != DAMO_OK) return st;
    const int64_t s = t->steps_done;
    r->position = (damo_train_position){0, s, 0.0, 0};
    int last = s == o->steps;
    if (last || (o->log_every > 0 && s % o->log_every == 0)) {
      double row[DAMO_HISTORY_ROW];
      blank(row);
      row[DAMO_H_LOSS] = r->last.loss;
      row[DAMO_H_LR] = r->last.lr;
      damo_train_event e = {.kind = DAMO_EVENT_STEP, .step = s, .steps = o->steps, .figures = row};
      if ((st = emit(r, &e)) != DAMO_OK) return st;
    }
    if (r->h->validate && (last || (o->validate_every > 0 && s % o->validate_every == 0)) &&
        (st = validate_at(r, s, &stop)) != DAMO_OK)
      return st;
    if (r->h->checkpoint && (last || stop || (o->checkpoint_every > 0 && s % o->checkpoint_every == 0))) {
      damo_train_event c = {.kind = DAMO_EVENT_CHECKPOINT, .step = s, .steps = o->steps};
      if ((st = emit(r, &c)) != DAMO_OK) return st;
    }
    if (stop) {
      damo_train_event e = {.kind = DAMO_EVENT_EARLY_STOP, .step = s, .steps = o->steps, .monitor = r->es.column,
                            .best = r->es.best, .best_at = r->es.best_at};
      return emit(r, &e);
    }
  }
  return DAMO_OK;
}

/* Puts a checkpoint's loop state (damo_trainer_resume) into the run. */
static damo_status take_resume(run *r) {
  loop_resume *res = &r->t->resume;
  if (!res->pending) {
    r->position = (damo_train_position){0, r->o->epochs > 0 ? 0 : r->t->steps_done, 0.0, 0};
    return DAMO_OK;
  }
  r->position = res->position;
  if (r->o->epochs > 0 && r->position.step > r->o->steps_per_epoch) {
    loop_resume_clear(res);
    return damo_error(DAMO_ERR_INVALID_ARG, "resume: the checkpoint is %lld steps into an epoch of %lld steps (another "
                      "batch size or data?)", (long long)r->position.step, (long long)r->o->steps_per_epoch);
  }
  if (res->es_saved && r->es.active) {
    r->es.best = res->best, r->es.best_at = res->best_at;
    r->es.wait = res->wait < r->o->patience ? (int)res->wait : r->o->patience;
    const damo_train_adapter *a = &r->t->a;
    if (r->es.best_weights && res->best_weights)
      memcpy(r->es.best_weights, res->best_weights, (size_t)(a->n_params + a->n_state) * sizeof(float));
  }
  damo_status st = DAMO_OK;
  for (int64_t i = 0; i < res->history_rows && st == DAMO_OK; i++) {
    const double *saved = res->history + i * (DAMO_HISTORY_COLUMNS + 1);
    double row[DAMO_HISTORY_ROW]; /* the named columns come apart (loop.history_extra) */
    blank(row);
    memcpy(row, saved + 1, DAMO_HISTORY_COLUMNS * sizeof *row);
    const int64_t extra = res->history_extra_cols < r->history->n_extra ? res->history_extra_cols : r->history->n_extra;
    if (res->history_extra)
      memcpy(row + DAMO_HISTORY_COLUMNS, res->history_extra + i * res->history_extra_cols, (size_t)extra * sizeof *row);
    st = damo_history_append(r->history, (int)saved[0], row);
  }
  loop_resume_clear(res);
  return st;
}

damo_status damo_trainer_run(damo_trainer *t, const damo_train_loop *loop, const damo_train_hooks *hooks,
                             damo_history *history) {
  if (!t || !loop) return damo_error(DAMO_ERR_INVALID_ARG, "trainer_run: NULL argument");
  const damo_train_hooks none = {0};
  run r = {.t = t, .o = loop, .h = hooks ? hooks : &none, .history = history};
  const int by_epoch = loop->epochs > 0;
  if (by_epoch ? loop->steps_per_epoch < 1 : loop->steps < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "trainer_run: %s", by_epoch ? "an epoch needs at least one step"
                                                                         : "give epochs and steps_per_epoch, or steps");
  r.recorded = loop->recorded ? loop->recorded : (1u << DAMO_H_LOSS) | (1u << DAMO_H_VAL_LOSS) | (1u << DAMO_H_LR);
  if (!by_epoch) r.recorded |= DAMO_H_BY_STEP;
  /* The loop keeps a history even when the caller does not want one: checkpoints carry it. */
  damo_history *own = history ? NULL : damo_history_new(r.recorded);
  if (!history && !own) return DAMO_ERR_NOMEM;
  if (!history) r.history = own;
  r.history->recorded = r.recorded;
  damo_status st = damo_history_set_extra(r.history, loop->n_extra, loop->extra_columns);
  if (st == DAMO_OK) st = early_stop_init(&r.es, loop, &t->a);
  const char *watched = st == DAMO_OK && loop->patience > 0 ? damo_history_column_name(r.history, loop->monitor) : NULL;
  if (watched && !r.h->validate && !strncmp(watched, "val_", 4))
    st = damo_error(DAMO_ERR_INVALID_ARG, "early stopping monitors '%s' but there is no validation", watched);
  if (st == DAMO_OK && loop->history_csv && damo_dist_rank(damo_trainer_dist(t)) == 0)
    st = damo_history_csv_check(loop->history_csv, r.history);
  if (st == DAMO_OK) st = take_resume(&r);
  if (st == DAMO_OK) st = by_epoch ? run_epochs(&r) : run_steps(&r);
  if (st == DAMO_OK && r.es.best_weights && r.es.best_at > 0) {
    const damo_train_adapter *a = &t->a;
    const damo_backend *b = a->backend;
    st = b->from_host(b, a->params, r.es.best_weights, (size_t)a->n_params * sizeof(float));
    if (st == DAMO_OK && a->n_state)
      st = b->from_host(b, a->state, r.es.best_weights + a->n_params, (size_t)a->n_state * sizeof(float));
  }
  if (st == DAMO_OK && r.es.best_weights && r.es.best_at > 0) {
    damo_train_event e = {.kind = DAMO_EVENT_RESTORED, .epochs = loop->epochs, .steps = loop->steps,
                          .monitor = r.es.column, .best = r.es.best, .best_at = r.es.best_at};
    st = emit(&r, &e);
  }
  free(r.es.best_weights);
  damo_history_free(own);
  return st;
}
