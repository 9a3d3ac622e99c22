/* history.h - what fit records per epoch (see history.c). */
#ifndef DAMO_HISTORY_H
#define DAMO_HISTORY_H

#include "internal.h"

#define DAMO_HISTORY_COLUMNS 5
enum { DAMO_H_LOSS, DAMO_H_ACCURACY, DAMO_H_VAL_LOSS, DAMO_H_VAL_ACCURACY, DAMO_H_LR };
extern const char *const damo_history_columns[DAMO_HISTORY_COLUMNS];

struct damo_history {
  int n, cap;
  int *epoch;     /* 1-based epoch numbers */
  double *values; /* n x DAMO_HISTORY_COLUMNS, NAN where absent */
};

damo_history *damo_history_new(void);
damo_status damo_history_append(damo_history *h, int epoch, const double *row);
damo_status damo_history_csv_append(const char *path, int epoch, const double *row);

#endif
