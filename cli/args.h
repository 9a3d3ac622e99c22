/* args.h - the bottom of cli/: option tables and their checking and help, number parsing,
 * messages and the clock. Depends on damo.h only; every other cli/ file may use it. */
#ifndef DAMO_CLI_ARGS_H
#define DAMO_CLI_ARGS_H

#include "damo.h"

#include <math.h> /* HUGE_VAL for cli_parse_double */
#include <stdio.h>

/* The kinds of model a directory or config can hold; a command has one handler per kind. */
/* UNKNOWN: no readable config (the handler says why); UNSUPPORTED: a model_type damo lacks. */
typedef enum { CLI_SEQUENTIAL, CLI_GPT2, CLI_BERT, CLI_N_KINDS, CLI_KIND_UNKNOWN = -1, CLI_KIND_UNSUPPORTED = -2 } cli_kind;
#define CLI_KIND_BIT(k) (1u << (k))
#define CLI_ALL_KINDS (CLI_KIND_BIT(CLI_SEQUENTIAL) | CLI_KIND_BIT(CLI_GPT2) | CLI_KIND_BIT(CLI_BERT))
/* "Sequential", "GPT-2", "BERT". */
const char *cli_kind_name(cli_kind k);

/* One option of a command: what is accepted is exactly what the help lists. */
typedef struct cli_option {
  const char *name;    /* "--epochs" */
  int takes_value;     /* 0: a flag */
  const char *metavar; /* the value's placeholder in the help ("N"); NULL for a flag */
  const char *help;
} cli_option;

/* A titled list of options (ending with {NULL}) for the model kinds in `kinds`. */
typedef struct cli_group {
  const char *title; /* NULL: the command's own options */
  unsigned kinds;    /* CLI_KIND_BIT()s, CLI_ALL_KINDS */
  const cli_option *options;
} cli_group;

typedef int (*cli_handler)(int argc, char **argv);

/* A command: its help text, its options and what runs it. A command without kinds has run;
 * one with kinds (the model of --model DIR or --config FILE decides) has by_kind, where a
 * NULL entry does not apply and not_applicable[kind] says what to use instead. */
typedef struct cli_command {
  const char *name, *synopsis, *summary;
  const char *usage;      /* the usage lines after "usage: " */
  const char *positional; /* e.g. "FILE...": arguments that are not options are accepted; NULL: none */
  const cli_group *groups; /* ending with {NULL, 0, NULL} */
  const char *notes;       /* printed after the options (NULL: none) */
  cli_handler run;
  cli_handler by_kind[CLI_N_KINDS];
  const char *not_applicable[CLI_N_KINDS];
  int first_option; /* argv index of the first option (0 means 2; 3 after a subcommand word) */
} cli_command;

/* The value after option `name`, or NULL. */
const char *cli_opt(int argc, char **argv, const char *name);
int cli_flag(int argc, char **argv, const char *name);
/* 1 if every argument from argv[c->first_option] on is an option of c's groups for the kinds
 * in `kinds` (with its value when it takes one) or, when c takes them, a positional one;
 * else prints what is wrong and returns 0. */
int cli_check_options(const cli_command *c, int argc, char **argv, unsigned kinds);
/* 1 when "--help" or "-h" stands among the options (not as an option's value). */
int cli_wants_help(const cli_command *c, int argc, char **argv);
/* Usage, summary, every option with its help (grouped by kind), notes. */
void cli_print_help(FILE *f, const cli_command *c);

/* Prints "damo: what: <last error>" and returns 1. */
int cli_fail(const char *what);
int cli_parse_long(const char *s, const char *name, long lo, long hi, long *out);
/* A number in [lo, hi] ((lo, hi] when lo_open; hi HUGE_VAL for none), else a message naming
 * the option, the range and the value, and 0. */
int cli_parse_double(const char *s, const char *name, double lo, int lo_open, double hi, double *out);
/* Seconds on a monotonic clock, for timing intervals (steps, epochs, benchmarks). */
double cli_seconds(void);
/* Warns on stderr when a warm-up is longer than the whole run (the settings contradict). */
void cli_warn_warmup(int64_t steps, int64_t warmup_steps);
/* --train-only PATTERNS (freeze every tensor but these) then --freeze PATTERNS (freeze these):
 * comma-separated shell patterns over the model's tensor names, applied with the model's
 * set_trainable (a wrapper of damo_{bert,gpt2}_set_trainable). Prints what is trained when
 * either is given (trained/total: the model's counts). 0 after printing the error, else 1. */
typedef damo_status (*cli_set_trainable)(void *model, const char *patterns, int trainable);
int cli_freeze_options(int argc, char **argv, cli_set_trainable set, void *model);
void cli_print_trained(int argc, char **argv, int64_t trained, int64_t total);

#endif
