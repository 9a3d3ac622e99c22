/* args.c - the argument helpers of the damo command: option tables checked and printed
 * from the same data (so the help lists exactly what is accepted), numbers with ranges,
 * failure messages and the clock. */
#include "args.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *cli_kind_name(cli_kind k) {
  return k == CLI_GPT2 ? "GPT-2" : k == CLI_BERT ? "BERT" : "Sequential";
}

double cli_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *cli_opt(int argc, char **argv, const char *name) {
  for (int i = 2; i < argc - 1; i++)
    if (!strcmp(argv[i], name)) return argv[i + 1];
  return NULL;
}

int cli_flag(int argc, char **argv, const char *name) {
  for (int i = 2; i < argc; i++)
    if (!strcmp(argv[i], name)) return 1;
  return 0;
}

/* The option called name in a group of c for one of `kinds` (CLI_ALL_KINDS: any), or NULL;
 * *other_kinds collects the kinds of the groups that have it but are not in `kinds`. */
static const cli_option *find_option(const cli_command *c, const char *name, unsigned kinds, unsigned *other_kinds) {
  const cli_option *found = NULL;
  for (const cli_group *g = c->groups; g && g->options; g++)
    for (const cli_option *o = g->options; o->name; o++) {
      if (strcmp(o->name, name)) continue;
      if (g->kinds & kinds) found = found ? found : o;
      else if (other_kinds) *other_kinds |= g->kinds;
    }
  return found;
}

int cli_wants_help(const cli_command *c, int argc, char **argv) {
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    const cli_option *o = find_option(c, argv[i], CLI_ALL_KINDS, NULL);
    if (o && o->takes_value) i++;
  }
  return 0;
}

int cli_check_options(const cli_command *c, int argc, char **argv, unsigned kinds) {
  for (int i = c->first_option ? c->first_option : 2; i < argc; i++) {
    unsigned other = 0;
    const cli_option *o = find_option(c, argv[i], kinds, &other);
    if (o) {
      if (o->takes_value && i + 1 >= argc) {
        fprintf(stderr, "damo %s: option %s needs a value (%s)\n", c->name, argv[i], o->metavar);
        return 0;
      }
      i += o->takes_value;
    } else if (other) { /* an option of another kind of model: say so, not "unknown" */
      char which[64] = "";
      for (int k = 0; k < CLI_N_KINDS; k++)
        if (other & CLI_KIND_BIT(k))
          snprintf(which + strlen(which), sizeof which - strlen(which), "%s%s", which[0] ? " or " : "",
                   cli_kind_name((cli_kind)k));
      const char *this_kind = "";
      for (int k = 0; k < CLI_N_KINDS; k++)
        if (kinds == CLI_KIND_BIT(k)) this_kind = cli_kind_name((cli_kind)k);
      fprintf(stderr, "damo %s: %s is an option for a %s model, and this one is %s (see damo %s --help)\n", c->name,
              argv[i], which, this_kind, c->name);
      return 0;
    } else if (!(c->positional && argv[i][0] != '-')) {
      fprintf(stderr, "damo %s: unknown option '%s' (see damo %s --help)\n", c->name, argv[i], c->name);
      return 0;
    }
  }
  return 1;
}

/* Text whose new lines continue at column `indent`. */
static void print_indented(FILE *f, const char *text, int indent) {
  for (const char *s = text; *s; s++) {
    fputc(*s, f);
    if (*s == '\n' && s[1]) fprintf(f, "%*s", indent, "");
  }
}

void cli_print_help(FILE *f, const cli_command *c) {
  enum { COLUMN = 28 };
  fprintf(f, "usage: ");
  print_indented(f, c->usage, 7);
  fprintf(f, "\n\n");
  print_indented(f, c->summary, 0);
  fprintf(f, "\n");
  for (const cli_group *g = c->groups; g && g->options; g++) {
    if (!g->options->name) continue;
    if (g->title) fprintf(f, "\noptions for %s:\n", g->title);
    else fprintf(f, "\noptions:\n");
    for (const cli_option *o = g->options; o->name; o++) {
      char left[96];
      snprintf(left, sizeof left, "%s%s%s", o->name, o->takes_value ? " " : "", o->takes_value ? o->metavar : "");
      if (strlen(left) + 4 > COLUMN) fprintf(f, "  %s\n%*s", left, COLUMN, "");
      else fprintf(f, "  %-*s", COLUMN - 2, left);
      print_indented(f, o->help, COLUMN);
      fprintf(f, "\n");
    }
  }
  if (c->notes) {
    fprintf(f, "\n");
    print_indented(f, c->notes, 0);
    fprintf(f, "\n");
  }
}

int cli_fail(const char *what) {
  /* The library names its function ("predict: x has shape ..."): no "predict: predict:". */
  const char *msg = damo_last_error();
  size_t n = strlen(what);
  if (!strncmp(msg, what, n) && msg[n] == ':') fprintf(stderr, "damo: %s\n", msg);
  else fprintf(stderr, "damo: %s: %s\n", what, msg);
  return 1;
}

int cli_parse_long(const char *s, const char *name, long lo, long hi, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "damo: %s must be an integer in [%ld, %ld], got '%s'\n", name, lo, hi, s);
    return 0;
  }
  *out = v;
  return 1;
}

int cli_parse_double(const char *s, const char *name, double lo, int lo_open, double hi, double *out) {
  char *end;
  double v = strtod(s, &end);
  int in_range = (lo_open ? v > lo : v >= lo) && v <= hi;
  if (*s == '\0' || *end != '\0' || v != v || !in_range) {
    char high[32];
    if (hi == HUGE_VAL) snprintf(high, sizeof high, "inf)");
    else snprintf(high, sizeof high, "%g]", hi);
    fprintf(stderr, "damo: %s must be a number in %c%g, %s, got '%s'\n", name, lo_open ? '(' : '[', lo, high, s);
    return 0;
  }
  *out = v;
  return 1;
}

void cli_warn_warmup(int64_t steps, int64_t warmup_steps) {
  if (warmup_steps > steps)
    fprintf(stderr, "damo train: warning: the warm-up (%lld steps) is longer than the run (%lld steps): the learning "
            "rate never reaches its peak\n", (long long)warmup_steps, (long long)steps);
}

int cli_freeze_options(int argc, char **argv, cli_set_trainable set, void *model) {
  const char *only = cli_opt(argc, argv, "--train-only"), *freeze = cli_opt(argc, argv, "--freeze"), *failed = NULL;
  if (only && (set(model, "*", 0) != DAMO_OK || set(model, only, 1) != DAMO_OK)) failed = "--train-only";
  if (!failed && freeze && set(model, freeze, 0) != DAMO_OK) failed = "--freeze";
  if (failed) fprintf(stderr, "damo train: %s: %s\n", failed, damo_last_error());
  return failed == NULL;
}

void cli_print_trained(int argc, char **argv, int64_t trained, int64_t total) {
  const char *only = cli_opt(argc, argv, "--train-only"), *freeze = cli_opt(argc, argv, "--freeze");
  if (!only && !freeze) return;
  printf("trained: %lld of %lld parameters (%s%s%s%s%s); the rest frozen\n", (long long)trained, (long long)total,
         only ? "--train-only " : "", only ? only : "", only && freeze ? ", " : "", freeze ? "--freeze " : "",
         freeze ? freeze : "");
}
