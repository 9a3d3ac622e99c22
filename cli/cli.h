/* cli.h - shared helpers of the damo command (argument parsing, data specs). */
#ifndef DAMO_CLI_H
#define DAMO_CLI_H

#include "damo.h"

#include <math.h> /* HUGE_VAL for cli_parse_double */

/* The value after option `name`, or NULL. */
const char *cli_opt(int argc, char **argv, const char *name);
/* Seconds on a monotonic clock, for timing intervals (steps, epochs, benchmarks). */
double cli_seconds(void);
int cli_flag(int argc, char **argv, const char *name);
/* 1 if every argument is a known option; else prints what is wrong and returns 0. */
int cli_check_options(int argc, char **argv, const char *const *known_with_value, const char *const *known_flags);
/* Prints "damo: what: <last error>" and returns 1. */
int cli_fail(const char *what);
int cli_parse_long(const char *s, const char *name, long lo, long hi, long *out);
/* A number in [lo, hi] ((lo, hi] when lo_open; hi HUGE_VAL for none), else a message naming
 * the option, the range and the value, and 0. */
int cli_parse_double(const char *s, const char *name, double lo, int lo_open, double hi, double *out);
/* The one line every classifier prints per input (after "NAME: "): its top classes by
 * probability, "spam 0.982, ham 0.018"; a single sigmoid output counts as two classes. */
void cli_print_top_classes(const float *p, int64_t C, int top, const char *const *names, int n_names);
/* 1 when path ends in a picture extension (.png, .jpg, .pgm, ...; any case). */
int cli_is_image_path(const char *path);
/* Warns on stderr when a warm-up is longer than the whole run (the settings contradict). */
void cli_warn_warmup(int64_t steps, int64_t warmup_steps);
/* Loads a data SPEC's split ("train" or "test"). For a CSV or npy pair the whole file is
 * returned for either split. */
damo_status cli_load_data(const char *spec, const char *split, const char *label_column, damo_tensor **x,
                          damo_tensor **y);

/* Text data (cli/text.c): a built-in text data set name or a folder of class folders. */
int cli_is_text_data(const char *spec);
/* Loads it prepared for model m: length = its input timesteps, vocabulary size = the
 * input_dim of the first embedding layer of config_path (if any). */
damo_status cli_text_load(const char *spec, const damo_model *m, const char *config_path, damo_text_dataset **out);
/* One split's rows encoded with the vocabulary saved in model directory dir. */
damo_status cli_text_split_for_model(const char *dir, const damo_model *m, const char *spec, int split,
                                     damo_text_dataset **data, damo_tensor **x, damo_tensor **y);
void cli_text_describe(const char *spec, const damo_text_dataset *d);
/* Writes vocab.txt and text.json into a model directory; 1 on success. */
int cli_text_save(const char *dir, const damo_text_dataset *d, int max_len);
/* Predicts raw e-mail files (a file or a folder) with a text model: 2 done, 0 dir is not a
 * text model (nothing done), -1 failed (message printed). */
int cli_predict_text(damo_model *m, const char *dir, const char *input, const char *output);
/* Per-class accuracy, binary figures, and a confusion-matrix PNG (png may be NULL). */
int cli_classification_report(damo_model *m, const damo_tensor *x, const damo_tensor *y, const char *png);
/* The same from class probabilities p (rows, classes) and labels y; names may be NULL. */
int cli_report_probabilities(const damo_tensor *p, const damo_tensor *y, const char *const *names, int n_names,
                             const char *png);

/* The whole of a file, NUL-terminated (malloc'd; NULL if unreadable). */
char *cli_read_file(const char *path, size_t *len);
/* A file, or the files of a folder (not starting with '.', sorted), as malloc'd paths. */
char **cli_list_documents(const char *input, int *count);

int cli_train(int argc, char **argv);
int cli_evaluate(int argc, char **argv);
int cli_predict(int argc, char **argv);
int cli_summary(int argc, char **argv);
int cli_export(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_tokenize(int argc, char **argv); /* cli/tokenize.c: GPT-2 BPE, BERT WordPiece */
/* cli/gpt.c: GPT-2 training (cli_train hands configs with model_type "gpt2" over) and sampling. */
int cli_train_gpt2(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_bench_gpt2(int argc, char **argv); /* `damo bench gpt2` (W4) */
/* cli/bert.c: BERT pre-training and fine-tuning (cli_train hands configs with model_type
 * "bert" over), and predicting raw e-mails with a fine-tuned BERT directory. */
int cli_train_bert(int argc, char **argv);
/* 2 done, 0 dir is not a BERT model, -1 failed (message printed). */
int cli_predict_bert(const char *dir, const char *input);
/* damo evaluate of a fine-tuned BERT directory on a split (NULL: test) of a labelled text
 * set: 2 done, 0 dir is not a BERT model, -1 failed (message printed). */
int cli_evaluate_bert(const char *dir, const char *data, const char *split, const char *png);
int cli_bench_bert(int argc, char **argv); /* `damo bench bert` (W5) */

#endif
