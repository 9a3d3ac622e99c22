/* progress.c - the progress bar and per-epoch lines printed by fit (see progress.h). */
#include "train/progress.h"

#include "core/core.h"
#include "train/history.h"

#include <math.h>
#include <unistd.h>

void damo_progress_init(damo_progress *p, FILE *f, int verbose) {
  p->f = f ? f : stdout;
  p->h = NULL;
  p->tty = isatty(fileno(p->f));
  p->verbose = verbose < 0 ? (p->tty ? 1 : 2) : verbose;
  if (p->verbose == 1 && !p->tty) p->verbose = 2; /* never write \r into a log */
}

static void format_duration(char *buf, size_t cap, double seconds) {
  if (seconds >= 3600) snprintf(buf, cap, "%d:%02d:%02d", (int)(seconds / 3600), (int)fmod(seconds / 60, 60), (int)fmod(seconds, 60));
  else if (seconds >= 60) snprintf(buf, cap, "%d:%02d", (int)(seconds / 60), (int)fmod(seconds, 60));
  else snprintf(buf, cap, "%ds", (int)seconds);
}

static void format_per_step(char *buf, size_t cap, double seconds, int64_t steps) {
  double per = steps ? seconds / (double)steps : 0;
  if (per >= 1) snprintf(buf, cap, "%.0fs/step", per);
  else if (per >= 1e-3) snprintf(buf, cap, "%.0fms/step", per * 1e3);
  else snprintf(buf, cap, "%.0fus/step", per * 1e6);
}

void damo_progress_epoch_begin(damo_progress *p, int epoch, int epochs, int64_t total_steps) {
  p->epoch = epoch;
  p->epochs = epochs;
  p->total = total_steps;
  p->t_start = damo_now_seconds();
  p->t_last_draw = 0;
  if (p->verbose == 1) {
    fprintf(p->f, "Epoch %d/%d\n", epoch, epochs);
    fflush(p->f);
  }
}

static void draw_bar(damo_progress *p, int64_t step, char *buf, size_t cap) {
  const int width = 30;
  int filled = p->total ? (int)((double)width * (double)step / (double)p->total) : width;
  int w = snprintf(buf, cap, "%*lld/%lld [", (int)snprintf(NULL, 0, "%lld", (long long)p->total), (long long)step,
                   (long long)p->total);
  for (int i = 0; i < width && (size_t)w + 2 < cap; i++) buf[w++] = i < filled - 1 ? '=' : (i == filled - 1 ? (step == p->total ? '=' : '>') : '.');
  buf[w++] = ']';
  buf[w] = '\0';
}

/* " - loss: 0.1234 - accuracy: ..." for the shown, defined columns of row. */
static void print_figures(const damo_progress *p, const double *row, unsigned shown) {
  FILE *f = p->f;
  if (p->h) {
    int cols[DAMO_HISTORY_ROW], n = damo_history_order(p->h, cols);
    for (int k = 0; k < n; k++)
      if (cols[k] != DAMO_H_LR && !isnan(row[cols[k]]))
        fprintf(f, " - %s: %.4f", damo_history_column_name(p->h, cols[k]), row[cols[k]]);
    return;
  }
  for (int c = 0; c < DAMO_HISTORY_COLUMNS; c++)
    if (c != DAMO_H_LR && (shown >> c & 1) && !isnan(row[c])) fprintf(f, " - %s: %.4f", damo_history_columns[c], row[c]);
}

int damo_progress_due(const damo_progress *p, int64_t step) {
  return p->verbose == 1 && (step >= p->total || damo_now_seconds() - p->t_last_draw >= 0.1);
}

void damo_progress_step(damo_progress *p, int64_t step, const double *row, unsigned shown) {
  if (!damo_progress_due(p, step)) return;
  double now = damo_now_seconds();
  p->t_last_draw = now;
  char bar[128], eta[32];
  draw_bar(p, step, bar, sizeof bar);
  double elapsed = now - p->t_start;
  format_duration(eta, sizeof eta, step ? elapsed / (double)step * (double)(p->total - step) : 0);
  fprintf(p->f, "\r%s - ETA: %s", bar, eta);
  print_figures(p, row, shown);
  fprintf(p->f, "\033[K"); /* clear what a longer previous line left */
  fflush(p->f);
}

void damo_progress_epoch_end(damo_progress *p, int64_t steps, const double *row, unsigned shown) {
  if (p->verbose == 0) return;
  double elapsed = damo_now_seconds() - p->t_start;
  char took[32], per[32], bar[128];
  format_duration(took, sizeof took, elapsed);
  format_per_step(per, sizeof per, elapsed, steps);
  if (p->verbose == 1) {
    draw_bar(p, steps, bar, sizeof bar);
    fprintf(p->f, "\r%s - %s %s", bar, took, per);
  } else {
    fprintf(p->f, "Epoch %d/%d - %lld/%lld - %s %s", p->epoch, p->epochs, (long long)steps, (long long)p->total, took,
            per);
  }
  print_figures(p, row, shown);
  fprintf(p->f, p->verbose == 1 ? "\033[K\n" : "\n");
  fflush(p->f);
}
