/* Runs the damo command (or any shell command) for the command-line tests: stdout and
 * stderr land together in cli_out, the exit status is returned. */
#ifndef DAMO_TEST_CLI_RUN_H
#define DAMO_TEST_CLI_RUN_H
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>

static char cli_out[65536];

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  char cmd[4096], full[4300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  snprintf(full, sizeof full, "%s 2>&1", cmd);
  FILE *p = popen(full, "r");
  size_t n = p ? fread(cli_out, 1, sizeof cli_out - 1, p) : 0;
  cli_out[n] = '\0';
  int st = p ? pclose(p) : -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Writes text to dir/name (a test's input file). */
static inline void cli_write_file(const char *dir, const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}
#endif
