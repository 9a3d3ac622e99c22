/* progress.h - Keras-style training output: a redrawn bar on a terminal, one plain line
 * per epoch otherwise (no carriage returns in logs). */
#ifndef DAMO_PROGRESS_H
#define DAMO_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct damo_progress {
  FILE *f;
  int verbose; /* 0 silent, 1 bar, 2 line per epoch */
  int tty;
  int epoch, epochs;
  int64_t total;
  double t_start, t_last_draw;
  const struct damo_history *h; /* when set: its columns (extras too) in its order */
} damo_progress;

/* verbose -1 picks 1 on a terminal and 2 otherwise. */
void damo_progress_init(damo_progress *p, FILE *f, int verbose);
void damo_progress_epoch_begin(damo_progress *p, int epoch, int epochs, int64_t total_steps);
/* Whether damo_progress_step would draw now (at most ~10 times a second, and the last
 * step), so the caller can skip working out figures nobody sees. */
int damo_progress_due(const damo_progress *p, int64_t step);
/* Redraws the bar with the figures of row (a history row, DAMO_H_* columns) that shown
 * (1u << column) selects, in column order; NAN ones are left out, and so is lr. */
void damo_progress_step(damo_progress *p, int64_t step, const double *row, unsigned shown);
/* The epoch's closing line, the same figures (validation ones included). */
void damo_progress_epoch_end(damo_progress *p, int64_t steps, const double *row, unsigned shown);

#endif
