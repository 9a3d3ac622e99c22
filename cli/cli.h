/* cli.h - shared helpers of the damo command (argument parsing, data specs). */
#ifndef DAMO_CLI_H
#define DAMO_CLI_H

#include "damo.h"

/* The value after option `name`, or NULL. */
const char *cli_opt(int argc, char **argv, const char *name);
int cli_flag(int argc, char **argv, const char *name);
/* 1 if every argument is a known option; else prints what is wrong and returns 0. */
int cli_check_options(int argc, char **argv, const char *const *known_with_value, const char *const *known_flags);
/* Prints "damo: what: <last error>" and returns 1. */
int cli_fail(const char *what);
int cli_parse_long(const char *s, const char *name, long lo, long hi, long *out);
int cli_parse_double(const char *s, const char *name, double *out);
/* Loads a data SPEC's split ("train" or "test"). For a CSV or npy pair the whole file is
 * returned for either split. */
damo_status cli_load_data(const char *spec, const char *split, const char *label_column, damo_tensor **x,
                          damo_tensor **y);

int cli_train(int argc, char **argv);
int cli_evaluate(int argc, char **argv);
int cli_predict(int argc, char **argv);
int cli_summary(int argc, char **argv);
int cli_export(int argc, char **argv);
int cli_bench(int argc, char **argv);

#endif
