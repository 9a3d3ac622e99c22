/* trainer.h - the trainer's insides, shared by the step (trainer.c) and the loop (loop.c). */
#ifndef DAMO_TRAIN_TRAINER_H
#define DAMO_TRAIN_TRAINER_H

#include "core/core.h"

/* Early stopping's state: the best figure so far, since when, and (restore_best) the weights
 * then: the adapter's params followed by its state. */
typedef struct early_stop {
  int active, column, higher_is_better, wait;
  int64_t best_at;
  double best, min_delta;
  float *best_weights;
} early_stop;

/* What a checkpoint carries for the loop, kept by damo_trainer_resume until the next run. */
typedef struct loop_resume {
  int pending;
  damo_train_position position;
  int es_saved; /* the early-stopping fields below were in the checkpoint */
  double best;
  int64_t wait, best_at;
  float *best_weights; /* NULL: none saved */
  int64_t history_rows;
  double *history; /* rows of (at, DAMO_HISTORY_COLUMNS values) */
  double *history_extra;      /* rows of history_extra_cols named columns' values, or NULL */
  int64_t history_extra_cols;
} loop_resume;

/* One damo_trainer_run in progress (events point at it for checkpoints). */
struct damo_train_run {
  damo_trainer *t;
  const damo_train_loop *o;
  const damo_train_hooks *h;
  damo_history *history;
  unsigned recorded;
  damo_train_report last;
  int have_last;
  early_stop es;
  damo_train_position position; /* where a checkpoint taken now resumes */
};

struct damo_trainer {
  damo_train_adapter a;
  damo_optimizer *opt; /* borrowed */
  int64_t grad_accum, total_steps, steps_done;
  float *grad_sum; /* the micro-batch sum (grad_accum > 1): backward overwrites the grads */
  damo_grad_hook hook;
  void *hook_ctx;
  damo_param_hook param_hook; /* after each optimizer step */
  void *param_hook_ctx;
  damo_divergence diverge;
  loop_resume resume;
  struct dp_state *dp; /* data-parallel (data_parallel.c), or NULL */
  struct private_state *priv; /* DP-SGD (trainer.c), or NULL */
};

void loop_resume_clear(loop_resume *r);

#endif
