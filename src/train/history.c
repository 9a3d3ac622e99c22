/* history.c - per-epoch metrics recorded by fit, and their CSV log. The CSV gets a header
 * only when the file is new or empty, so a resumed run appends rows under the first one. */
#include "train/history.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

const char *const damo_history_columns[DAMO_HISTORY_COLUMNS] = {"loss", "accuracy", "val_loss", "val_accuracy", "lr"};

damo_history *damo_history_new(void) {
  damo_history *h = calloc(1, sizeof *h);
  if (!h) damo_error(DAMO_ERR_NOMEM, "out of memory for a history");
  return h;
}

void damo_history_free(damo_history *h) {
  if (!h) return;
  free(h->epoch);
  free(h->values);
  free(h);
}

damo_status damo_history_append(damo_history *h, int epoch, const double *row) {
  if (h->n == h->cap) {
    int cap = h->cap ? h->cap * 2 : 16;
    int *ep = realloc(h->epoch, (size_t)cap * sizeof *ep);
    if (ep) h->epoch = ep;
    double *v = ep ? realloc(h->values, (size_t)cap * DAMO_HISTORY_COLUMNS * sizeof *v) : NULL;
    if (!v) return damo_error(DAMO_ERR_NOMEM, "out of memory growing the history");
    h->values = v;
    h->cap = cap;
  }
  h->epoch[h->n] = epoch;
  memcpy(h->values + (size_t)h->n * DAMO_HISTORY_COLUMNS, row, DAMO_HISTORY_COLUMNS * sizeof *row);
  h->n++;
  return DAMO_OK;
}

int damo_history_epochs(const damo_history *h) { return h ? h->n : 0; }

float damo_history_get(const damo_history *h, const char *metric, int epoch) {
  if (!h || epoch < 0 || epoch >= h->n) return NAN;
  for (int c = 0; c < DAMO_HISTORY_COLUMNS; c++)
    if (!strcmp(metric, damo_history_columns[c])) return (float)h->values[(size_t)epoch * DAMO_HISTORY_COLUMNS + c];
  return NAN;
}

damo_status damo_history_csv_append(const char *path, int epoch, const double *row) {
  struct stat st;
  int fresh = stat(path, &st) != 0 || st.st_size == 0;
  FILE *f = fopen(path, "a");
  if (!f) return damo_error(DAMO_ERR_IO, "%s: cannot open the history CSV: %s", path, strerror(errno));
  if (fresh) {
    fprintf(f, "epoch");
    for (int c = 0; c < DAMO_HISTORY_COLUMNS; c++) fprintf(f, ",%s", damo_history_columns[c]);
    fprintf(f, "\n");
  }
  fprintf(f, "%d", epoch);
  for (int c = 0; c < DAMO_HISTORY_COLUMNS; c++) {
    if (isnan(row[c])) fprintf(f, ",");
    else fprintf(f, ",%.6g", row[c]);
  }
  fprintf(f, "\n");
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) return damo_error(DAMO_ERR_IO, "%s: cannot write the history CSV", path);
  return DAMO_OK;
}
