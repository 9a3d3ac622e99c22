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
} damo_progress;

double damo_now_seconds(void);
/* verbose -1 picks 1 on a terminal and 2 otherwise. */
void damo_progress_init(damo_progress *p, FILE *f, int verbose);
void damo_progress_epoch_begin(damo_progress *p, int epoch, int epochs, int64_t total_steps);
/* Redraws at most ~10 times a second; accuracy < 0 is left out. */
void damo_progress_step(damo_progress *p, int64_t step, double loss, double accuracy);
/* The epoch's closing line with validation figures (NAN ones are left out). */
void damo_progress_epoch_end(damo_progress *p, int64_t steps, double loss, double accuracy, double val_loss,
                             double val_accuracy);

#endif
