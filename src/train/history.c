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

damo_status damo_history_set_extra(damo_history *h, int n, const char *const *names) {
  if (n < 0 || n > DAMO_HISTORY_MAX_EXTRA)
    return damo_error(DAMO_ERR_INVALID_ARG, "history: %d extra columns (at most %d)", n, DAMO_HISTORY_MAX_EXTRA);
  for (int j = 0; j < n; j++) {
    if (strlen(names[j]) >= DAMO_HISTORY_NAME_MAX)
      return damo_error(DAMO_ERR_INVALID_ARG, "history: column name '%.40s...' is too long", names[j]);
    snprintf(h->extra[j], sizeof h->extra[j], "%s", names[j]);
  }
  h->n_extra = n;
  return DAMO_OK;
}

const char *damo_history_column_name(const damo_history *h, int c) {
  if (c >= 0 && c < DAMO_HISTORY_COLUMNS) return damo_history_columns[c];
  if (h && c >= DAMO_HISTORY_COLUMNS && c < DAMO_HISTORY_COLUMNS + h->n_extra) return h->extra[c - DAMO_HISTORY_COLUMNS];
  return NULL;
}

int damo_history_order(const damo_history *h, int *cols) {
  int n = 0;
  for (int val = 0; val < 2; val++) {
    for (int c = val ? DAMO_H_VAL_LOSS : DAMO_H_LOSS; c < (val ? DAMO_H_LR : DAMO_H_VAL_LOSS); c++)
      if (h->recorded >> c & 1) cols[n++] = c;
    for (int j = 0; j < h->n_extra; j++)
      if ((strncmp(h->extra[j], "val_", 4) == 0) == val) cols[n++] = DAMO_HISTORY_COLUMNS + j;
  }
  if (h->recorded >> DAMO_H_LR & 1) cols[n++] = DAMO_H_LR;
  return n;
}

damo_status damo_history_append(damo_history *h, int epoch, const double *row) {
  if (h->n == h->cap) {
    int cap = h->cap ? h->cap * 2 : 16;
    int *ep = realloc(h->epoch, (size_t)cap * sizeof *ep);
    if (ep) h->epoch = ep;
    double *v = ep ? realloc(h->values, (size_t)cap * DAMO_HISTORY_ROW * sizeof *v) : NULL;
    if (!v) return damo_error(DAMO_ERR_NOMEM, "out of memory growing the history");
    h->values = v;
    h->cap = cap;
  }
  h->epoch[h->n] = epoch;
  double *dst = h->values + (size_t)h->n * DAMO_HISTORY_ROW;
  memcpy(dst, row, (size_t)(DAMO_HISTORY_COLUMNS + h->n_extra) * sizeof *row);
  for (int c = DAMO_HISTORY_COLUMNS + h->n_extra; c < DAMO_HISTORY_ROW; c++) dst[c] = NAN;
  h->n++;
  return DAMO_OK;
}

int damo_history_epochs(const damo_history *h) { return h ? h->n : 0; }

int damo_history_at(const damo_history *h, int i) { return h && i >= 0 && i < h->n ? h->epoch[i] : 0; }

float damo_history_get(const damo_history *h, const char *metric, int epoch) {
  if (!h || epoch < 0 || epoch >= h->n) return NAN;
  if (!metric) return NAN;
  for (int c = 0; c < DAMO_HISTORY_COLUMNS + h->n_extra; c++)
    if ((c >= DAMO_HISTORY_COLUMNS || h->recorded >> c & 1) && !strcmp(metric, damo_history_column_name(h, c)))
      return (float)h->values[(size_t)epoch * DAMO_HISTORY_ROW + c];
  return NAN;
}

#define HEADER_MAX (DAMO_HISTORY_ROW * (DAMO_HISTORY_NAME_MAX + 1) + 16)

/* "epoch,loss,..." for the recorded columns, without the newline. */
static void csv_header(const damo_history *h, char *buf, size_t cap) {
  int cols[DAMO_HISTORY_ROW], n = damo_history_order(h, cols);
  size_t w = (size_t)snprintf(buf, cap, "%s", h->recorded & DAMO_H_BY_STEP    ? "step"
                                                   : h->recorded & DAMO_H_BY_ROUND ? "round"
                                                                                   : "epoch");
  for (int k = 0; k < n && w < cap; k++) w += (size_t)snprintf(buf + w, cap - w, ",%s", damo_history_column_name(h, cols[k]));
}

/* One CSV line: the epoch (or step), then the recorded columns (empty where NAN). */
static void write_row(FILE *f, const damo_history *h, int at, const double *row) {
  int cols[DAMO_HISTORY_ROW], n = damo_history_order(h, cols);
  fprintf(f, "%d", at);
  for (int k = 0; k < n; k++) {
    if (isnan(row[cols[k]])) fprintf(f, ",");
    else fprintf(f, ",%.6g", row[cols[k]]);
  }
  fprintf(f, "\n");
}

damo_status damo_history_csv_check(const char *path, const damo_history *h) {
  FILE *f = fopen(path, "r");
  if (!f) return DAMO_OK; /* a new file gets the header */
  static _Thread_local char want[HEADER_MAX], have[HEADER_MAX];
  have[0] = '\0';
  csv_header(h, want, sizeof want);
  int empty = !fgets(have, sizeof have, f);
  fclose(f);
  have[strcspn(have, "\r\n")] = '\0';
  if (empty || !strcmp(have, want)) return DAMO_OK;
  return damo_error(DAMO_ERR_INVALID_ARG,
                    "%s: the history CSV has the columns '%s' but this run records '%s' (use another file)", path,
                    have, want);
}

damo_status damo_history_csv_append(const char *path, const damo_history *h, int epoch, const double *row) {
  struct stat st;
  int fresh = stat(path, &st) != 0 || st.st_size == 0;
  FILE *f = fopen(path, "a");
  if (!f) return damo_error(DAMO_ERR_IO, "%s: cannot open the history CSV: %s", path, strerror(errno));
  if (fresh) {
    static _Thread_local char header[HEADER_MAX];
    csv_header(h, header, sizeof header);
    fprintf(f, "%s\n", header);
  }
  write_row(f, h, epoch, row);
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) return damo_error(DAMO_ERR_IO, "%s: cannot write the history CSV", path);
  return DAMO_OK;
}

damo_status damo_history_csv_write(const damo_history *h, const char *path) {
  if (!h || !path) return damo_error(DAMO_ERR_INVALID_ARG, "history_csv_write: NULL argument");
  FILE *f = fopen(path, "w");
  if (!f) return damo_error(DAMO_ERR_IO, "%s: cannot create the history CSV: %s", path, strerror(errno));
  static _Thread_local char header[HEADER_MAX];
  csv_header(h, header, sizeof header);
  fprintf(f, "%s\n", header);
  for (int i = 0; i < h->n; i++) write_row(f, h, h->epoch[i], h->values + (size_t)i * DAMO_HISTORY_ROW);
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) return damo_error(DAMO_ERR_IO, "%s: cannot write the history CSV", path);
  return DAMO_OK;
}
