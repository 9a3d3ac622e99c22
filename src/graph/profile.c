/* profile.c - time per op and direction across every graph run in the process: what a
 * training step spends besides the GEMM, without an external profiler. Off by default; on
 * with DAMO_PROFILE=1 in the environment (the report then goes to stderr at exit) or with
 * damo_profile_enable. The graph executor times each node's forward and backward with a
 * monotonic clock; ops parallelise inside themselves, so wall time per op is the honest
 * figure. Counters are process-wide and meant for one graph running at a time. */
#include "graph/graph.h"
#include "graph/profile.h"

#include <stdio.h>

int damo_profile_on;
/* One row per op, then the optimizer's step. */
enum { ROWS = DAMO_OP_COUNT + 1, OPTIMIZER_ROW = DAMO_OP_COUNT };
static double op_seconds[ROWS][2];
static int64_t op_calls[ROWS][2];

static const char *row_name(int row) { return row == OPTIMIZER_ROW ? "optimizer" : damo_op_table[row]->name; }

void damo_profile_record(int op, int backward, double seconds) {
  if (op == DAMO_PROFILE_OPTIMIZER) op = OPTIMIZER_ROW;
  op_seconds[op][backward] += seconds;
  op_calls[op][backward]++;
}

void damo_profile_enable(int on) { damo_profile_on = on != 0; }

void damo_profile_reset(void) {
  memset(op_seconds, 0, sizeof op_seconds);
  memset(op_calls, 0, sizeof op_calls);
}

double damo_profile_seconds(const char *op_name, int backward) {
  for (int row = 0; row < ROWS; row++)
    if ((row == OPTIMIZER_ROW || damo_op_table[row]) && !strcmp(row_name(row), op_name))
      return op_seconds[row][backward != 0];
  return 0.0;
}

void damo_profile_report(FILE *out) {
  int rows[2 * ROWS], n = 0;
  double total[2] = {0, 0};
  for (int r = 0; r < 2 * ROWS; r++)
    if (op_calls[r / 2][r % 2]) {
      rows[n++] = r;
      total[r % 2] += op_seconds[r / 2][r % 2];
    }
  /* Largest first; a handful of rows, so insertion sort. */
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && op_seconds[rows[j] / 2][rows[j] % 2] > op_seconds[rows[j - 1] / 2][rows[j - 1] % 2]; j--) {
      int t = rows[j];
      rows[j] = rows[j - 1];
      rows[j - 1] = t;
    }
  const double all = total[0] + total[1];
  fprintf(out, "damo profile: %.3f s in graph ops and optimizer steps (forward %.3f s, backward/step %.3f s)\n", all,
          total[0], total[1]);
  fprintf(out, "%-22s %-9s %9s %11s %7s\n", "op", "direction", "calls", "seconds", "share");
  for (int i = 0; i < n; i++) {
    const int op = rows[i] / 2, dir = rows[i] % 2;
    fprintf(out, "%-22s %-9s %9lld %11.4f %6.1f%%\n", row_name(op), op == OPTIMIZER_ROW ? "step" : dir ? "backward" : "forward",
            (long long)op_calls[op][dir], op_seconds[op][dir], all > 0 ? 100.0 * op_seconds[op][dir] / all : 0.0);
  }
}

static void report_at_exit(void) { damo_profile_report(stderr); }

/* DAMO_PROFILE=1 turns profiling on when the library loads and prints the report at exit. */
__attribute__((constructor)) static void profile_from_env(void) {
  const char *s = getenv("DAMO_PROFILE");
  if (s && *s && strcmp(s, "0") != 0) {
    damo_profile_on = 1;
    atexit(report_at_exit);
  }
}
