/* history.c - per-epoch metrics recorded by fit, and their CSV log. The CSV gets a header
 * only when the file is new or empty, so a resumed run appends rows under the first one. */
#include "train/history.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

const char *const damo_history_columns[DAMO_HISTORY_COLUMNS] = {
    "loss",     "accuracy",     "precision",     "recall",     "f1",     "auc", "val_loss",
    "val_accuracy", "val_precision", "val_recall", "val_f1", "val_auc", "lr"};

damo_history *damo_history_create(unsigned recorded) { return damo_history_new(recorded); }

damo_history *damo_history_new(unsigned recorded) {
  damo_history *h = calloc(1, sizeof *h);
  if (!h) damo_error(DAMO_ERR_NOMEM, "out of memory for a history");
  else h->recorded = recorded;
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

int damo_history_at(const damo_history *h, int i) { return h && i >= 0 && i < h->n ? h->epoch[i] : 0; }

float damo_history_get(const damo_history *h, const char *metric, int epoch) {
  if (!h || epoch < 0 || epoch >= h->n) return NAN;
  if (!metric) return NAN;
  for (int c = 0; c < DAMO_HISTORY_COLUMNS; c++)
    if ((h->recorded >> c & 1) && !strcmp(metric, damo_history_columns[c]))
      return (float)h->values[(size_t)epoch * DAMO_HISTORY_COLUMNS + c];
  return NAN;
}

/* "epoch,loss,..." for the recorded columns, without the newline. */
static void csv_header(unsigned recorded, char *buf, size_t cap) {
  size_t w = (size_t)snprintf(buf, cap, "%s", recorded & DAMO_H_BY_STEP ? "step" : "epoch");
  for (int c = 0; c < DAMO_HISTORY_COLUMNS && w < cap; c++)
    if (recorded >> c & 1) w += (size_t)snprintf(buf + w, cap - w, ",%s", damo_history_columns[c]);
}

/* One CSV line: the epoch (or step), then the recorded columns (empty where NAN). */
static void write_row(FILE *f, unsigned recorded, int at, const double *row) {
  fprintf(f, "%d", at);
  for (int c = 0; c < DAMO_HISTORY_COLUMNS; c++) {
    if (!(recorded >> c & 1)) continue;
    if (isnan(row[c])) fprintf(f, ",");
    else fprintf(f, ",%.6g", row[c]);
  }
  fprintf(f, "\n");
}

damo_status damo_history_csv_check(const char *path, unsigned recorded) {
  FILE *f = fopen(path, "r");
  if (!f) return DAMO_OK; /* a new file gets the header */
  char want[512], have[512] = "";
  csv_header(recorded, want, sizeof want);
  int empty = !fgets(have, sizeof have, f);
  fclose(f);
  have[strcspn(have, "\r\n")] = '\0';
  if (empty || !strcmp(have, want)) return DAMO_OK;
  return damo_error(DAMO_ERR_INVALID_ARG,
                    "%s: the history CSV has the columns '%s' but this run records '%s' (use another file)", path,
                    have, want);
}

damo_status damo_history_csv_append(const char *path, unsigned recorded, int epoch, const double *row) {
  struct stat st;
  int fresh = stat(path, &st) != 0 || st.st_size == 0;
  FILE *f = fopen(path, "a");
  if (!f) return damo_error(DAMO_ERR_IO, "%s: cannot open the history CSV: %s", path, strerror(errno));
  if (fresh) {
    char header[512];
    csv_header(recorded, header, sizeof header);
    fprintf(f, "%s\n", header);
  }
  write_row(f, recorded, epoch, row);
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) return damo_error(DAMO_ERR_IO, "%s: cannot write the history CSV", path);
  return DAMO_OK;
}

damo_status damo_history_csv_write(const damo_history *h, const char *path) {
  if (!h || !path) return damo_error(DAMO_ERR_INVALID_ARG, "history_csv_write: NULL argument");
  FILE *f = fopen(path, "w");
  if (!f) return damo_error(DAMO_ERR_IO, "%s: cannot create the history CSV: %s", path, strerror(errno));
  char header[512];
  csv_header(h->recorded, header, sizeof header);
  fprintf(f, "%s\n", header);
  for (int i = 0; i < h->n; i++) {
    write_row(f, h->recorded, h->epoch[i], h->values + (size_t)i * DAMO_HISTORY_COLUMNS);
  }
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) return damo_error(DAMO_ERR_IO, "%s: cannot write the history CSV", path);
  return DAMO_OK;
}
