/* cli.h - what the files of cli/ share: data specs, text data, reports, and each command's
 * handlers (one per model kind; main.c's table dispatches them). args.h is the layer below. */
#ifndef DAMO_CLI_H
#define DAMO_CLI_H

#include "args.h"
#include "damo.h"

#include <math.h> /* HUGE_VAL for cli_parse_double */

/* ---- cli/report.c (below the command files) */

/* The one line every classifier prints per input (after "NAME: "): its top classes by
 * probability, "spam 0.982, ham 0.018"; a single sigmoid output counts as two classes. */
void cli_print_top_classes(const float *p, int64_t C, int top, const char *const *names, int n_names);
/* The picture files of a folder (sorted, malloc'd paths), or the one path given; 0 after a
 * message (cli/predict.c). */
int cli_list_images(const char *input, char ***paths, int *count);
/* 1 when path ends in a picture extension (.png, .jpg, .pgm, ...; any case). */
int cli_is_image_path(const char *path);
/* Loads a data SPEC's split ("train" or "test"). For a CSV or npy pair the whole file is
 * returned for either split. */
damo_status cli_load_data(const char *spec, const char *split, const char *label_column, damo_tensor **x,
                          damo_tensor **y);
/* A model of n_out outputs: SPEC "x.npy,y1.npy,...", the inputs and one targets array per
 * output in the model's order (ys[n_out]). */
damo_status cli_load_outputs(const char *spec, int n_out, damo_tensor **x, damo_tensor **ys);

/* Before a training run writes into out (locked by the caller): out holding a model or a run
 * is refused unless resume (which needs its trainer_state.safetensors) or overwrite (which
 * removes that state so the new run cannot be resumed as the old one); both at once is a
 * contradiction. 0 when the run may go on, else 2 after printing why. */
int cli_check_out(const char *out, int resume, int overwrite);
/* history.png: loss and accuracy curves (train, validation) per epoch, or per validation
 * step (by_step: GPT-2, BERT pre-training); 1 when written, else 0 after printing why. */
int cli_write_history_png(const damo_history *h, const char *path, const char *title, int by_step);
/* Per-class accuracy, binary figures, and a confusion-matrix PNG (png may be NULL). */
int cli_classification_report(damo_model *m, const damo_tensor *x, const damo_tensor *y, const char *png);
/* The same from class probabilities p (rows, classes) and labels y; names may be NULL. */
int cli_report_probabilities(const damo_tensor *p, const damo_tensor *y, const char *const *names, int n_names,
                             const char *png);

/* ---- cli/text.c (below the command files) */

/* Text data: a built-in text data set name or a folder of class folders. */
int cli_is_text_data(const char *spec);
/* Loads it prepared for model m: length = its input timesteps, vocabulary size = the
 * input_dim of the first embedding layer of config_path (if any). */
damo_status cli_text_load(const char *spec, const damo_model *m, const char *config_path, damo_text_dataset **out);
/* One split's rows encoded with the vocabulary saved in model directory dir. */
damo_status cli_text_split_for_model(const char *dir, const damo_model *m, const char *spec, int split,
                                     damo_text_dataset **data, damo_tensor **x, damo_tensor **y);
/* The texts of one split of d as token ids through the text model in dir (its vocab.txt, at
 * m's input length): what that model reads for them. */
damo_status cli_text_encode_for_model(const char *dir, const damo_model *m, const damo_text_dataset *d, int split,
                                      damo_tensor **ids);
void cli_text_describe(const char *spec, const damo_text_dataset *d);
/* Writes vocab.txt and text.json into a model directory; 1 on success. */
int cli_text_save(const char *dir, const damo_text_dataset *d, int max_len);
/* A text model's settings in dir (text.json: its input length, number handling) and its
 * vocab.txt: 1 read, 0 dir is not a text model, -1 broken (message printed). */
int cli_text_settings(const char *dir, damo_vocab **vocab, int *max_len, int *numbers_to_token);
/* Predicts raw e-mail files (a file or a folder) with a text model: 2 done, 0 dir is not a
 * text model (nothing done), -1 failed (message printed). */
int cli_predict_text(damo_model *m, const char *dir, const char *input, const char *output);

/* The whole of a file, NUL-terminated (malloc'd; NULL if unreadable). */
char *cli_read_file(const char *path, size_t *len);
/* A file, or the files of a folder (not starting with '.', sorted), as malloc'd paths. */
char **cli_list_documents(const char *input, int *count);

/* ---- cli/parallel.c (below the command files): the process group of data-parallel runs */
damo_dist *cli_world(void); /* the world every command runs in (one process unless mpirun) */
int cli_rank(void);
int cli_world_begin(void);     /* joins it; ranks other than 0 print nothing on stdout; 0 on failure */
int cli_world_end(int rc);     /* a failed rank ends every rank; returns rc */
/* --bucket-mb and --zero; 0 after printing why they are wrong. */
int cli_data_parallel_options(int argc, char **argv, damo_data_parallel_options *o);
/* --np N: replaces this process by mpirun running the same command on N ranks (returns only
 * on failure). */
int cli_launch(int argc, char **argv, const char *np);
/* Appends the trainer's data-parallel figures to a benchmark's JSON object. */
void cli_print_parallel_json(damo_trainer *t);

/* ---- cli/main.c: the command table, and the kind of model a directory (its config.json) or
 * a config file holds: GPT-2 or BERT by model_type, else Sequential; CLI_KIND_UNKNOWN when
 * there is no readable JSON at path. */
cli_kind cli_kind_of(const char *path);

/* ---- the command files: handlers (argc, argv as main got them; options already checked
 * against the command's table for the model's kind). */
int cli_train_sequential(int argc, char **argv); /* cli/commands.c */
int cli_distill(int argc, char **argv);          /* cli/commands.c */
int cli_evaluate_sequential(int argc, char **argv);
int cli_summary_sequential(int argc, char **argv);
/* DP-SGD (cli/privacy.c): the --dp-* options into o (1: asked, 0: not, -1: bad, said why;
 * one_model_kind not NULL: a kind that trains one model, which --dp-sweep is refused for),
 * the run's report, privacy.json in a model directory, and its line in damo summary (0 when
 * the file is there but unreadable). */
int cli_privacy_options(int argc, char **argv, damo_dp_options *o, const char *one_model_kind);
int cli_federate(int argc, char **argv); /* cli/federate.c */
void cli_privacy_report(const damo_dp_options *o);
damo_status cli_privacy_save(const char *folder, const damo_dp_options *o, int64_t examples);
int cli_privacy_show(const char *dir);
/* --dp-sweep E1,E2,...: up to 16 increasing targets (0 and a message when bad); a model
 * trained per target from the config and scored on the test split, the curve as a PNG. */
int cli_privacy_sweep_parse(const char *v, double *eps, int *n);
int cli_privacy_sweep(const char *config, const damo_compile_options *copt, const damo_fit_options *fo,
                      const damo_dp_options *base, const double *eps, int n, const damo_tensor *x, const damo_tensor *y,
                      const damo_tensor *tx, const damo_tensor *ty, const char *curve);
/* cli/compress.c; and damo bench predict (cli/bench.c): JSON of a classifier's inference speed */
int cli_bench_predict(int argc, char **argv);
int cli_bench_decode(int argc, char **argv); /* cli/bench.c: GPT-2 decoding, n sequences stepped together */
int cli_quantize_sequential(int argc, char **argv);
int cli_quantize_bert(int argc, char **argv);
int cli_quantize_gpt2(int argc, char **argv); /* weight-only Q8_0/Q4_0 blocks */
int cli_prune_sequential(int argc, char **argv); /* cli/prune.c */
int cli_export(int argc, char **argv);
int cli_predict_sequential(int argc, char **argv); /* cli/predict.c */
int cli_predict_bert(int argc, char **argv);
int cli_evaluate_bert(int argc, char **argv);
int cli_bench(int argc, char **argv); /* cli/bench.c: peak, gemm */
int cli_bench_fit(int argc, char **argv);
/* Ends a benchmark's JSON object: the median of the n step times (sorted in place) and
 * the peak RSS. */
void cli_bench_finish(double *seconds, const float *losses, long n);
/* Writes n int32 values to dir/name (little-endian, raw); 1 on success. */
int cli_write_i32(const char *dir, const char *name, const int32_t *v, int64_t n);
int cli_tokenize(int argc, char **argv); /* cli/tokenize.c: GPT-2 BPE, BERT WordPiece */
int cli_evaluate_gpt2(int argc, char **argv); /* cli/gpt_eval.c: loss, perplexity */
/* GPT-2's validation part of --data as damo evaluate scores it (--seq-len, --windows,
 * --batch-size, --vocab): tokenised once, scored for as many models as need it. open
 * returns 0, or an exit code with the message printed (nothing left to close). */
typedef struct cli_gpt2_validation {
  damo_token_data *data;
  int64_t *starts, n; /* the windows' first tokens */
  long T, B;
  char desc[512];     /* what is scored, in a line */
} cli_gpt2_validation;
int cli_gpt2_validation_open(const damo_gpt2 *m, int argc, char **argv, const char *command, cli_gpt2_validation *v);
int cli_gpt2_validation_score(damo_gpt2 *m, const cli_gpt2_validation *v, const char *command, double *loss);
void cli_gpt2_validation_close(cli_gpt2_validation *v);
int cli_summary_gpt2(int argc, char **argv);  /* cli/summary.c */
int cli_summary_bert(int argc, char **argv);
/* cli/gpt.c: GPT-2 training and sampling. */
int cli_train_gpt2(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_bench_gpt2(int argc, char **argv); /* `damo bench gpt2` (W4) */
/* cli/bert.c: BERT pre-training and fine-tuning, and using a fine-tuned directory. */
int cli_train_bert(int argc, char **argv);
/* Predicts raw e-mails (a file or a folder) with a fine-tuned BERT directory: 2 done, 0 dir
 * is not a BERT model, -1 failed (message printed). */
int cli_bert_predict_files(const char *dir, const char *input);
/* A fine-tuned BERT directory on a split (NULL: test) of a labelled text set: 2 done, 0 dir
 * is not a BERT model, -1 failed (message printed). */
int cli_bert_evaluate_split(const char *dir, const char *data, const char *split, const char *png);
int cli_bench_bert(int argc, char **argv); /* `damo bench bert` (W5) */
int cli_serve(int argc, char **argv);      /* cli/serve.c: `damo serve` (HTTP) */
int cli_explain(int argc, char **argv);    /* cli/explain.c: `damo explain` (attributions) */
/* The deletion test's shared parts (cli/deletion.c): the options (--data, --faithfulness N,
 * --curve; begin returns 0 after a message), the orders of one input's `count` parts (order[0..
 * count) holds their positions on entry and ends sorted by sign * score, largest first;
 * order[count..2 count) gets a random permutation of them), how many of `parts` go at step s
 * (5% steps), the sums per order and step, and the table and curves. */
enum { CLI_DELETION_STEPS = 11 };
typedef struct cli_deletion {
  const char *spec, *curve;
  long n, used;
  double p[2][CLI_DELETION_STEPS], logit[2][CLI_DELETION_STEPS];
  int has_logit;
  damo_rng rng;
} cli_deletion;
int cli_deletion_begin(cli_deletion *d, int argc, char **argv);
void cli_deletion_orders(cli_deletion *d, const float *score, float sign, int64_t count, int64_t *order);
int64_t cli_deletion_count(int step, int64_t parts);
void cli_deletion_add(cli_deletion *d, int kind, int step, double p, double logit, int has_logit);
int cli_deletion_report(cli_deletion *d, const char *what, const char *note, const char *x_label, const char *title);
/* Spearman's rank correlation of |a| and |b| (n values): damo explain --sanity (cli/explain.c). */
double cli_rank_correlation(const float *a, const float *b, int64_t n);
/* damo explain --data SPEC --faithfulness N for a text model (cli/explain_text.c). */
int cli_explain_text_faithfulness(damo_model *m, damo_explainer *e, const char *dir, int argc, char **argv,
                                  const damo_attribution_options *o);
/* Words shaded by their attributions (red for, blue against, by the share of vmax): a
 * self-contained page, or a PNG (cli/explain_text.c); 1 written, 0 after a message. */
int cli_words_html(const char *path, const char *title, char (*words)[48], const float *attr, int n, float vmax);
int cli_words_png(const char *path, const char *title, char (*words)[48], const float *attr, int n, float vmax);
int cli_explain_bert(int argc, char **argv); /* cli/explain_attention.c: BERT's and GPT-2's attention */
int cli_explain_gpt2(int argc, char **argv);
/* cli/explain_text.c: damo explain of one mail with a text model (vocabulary and length from its
 * text.json); 0 done, else the exit code after a message. */
int cli_explain_text(damo_model *m, damo_explainer *e, const damo_vocab *vocab, int max_len, int numbers, int argc,
                     char **argv, const damo_attribution_options *o, int32_t target);
/* A fine-tuned BERT directory's class probabilities (n, labels) for the texts of one split of
 * d (a distillation teacher's): 2 done, 0 dir is not a BERT model, -1 failed (printed). */
int cli_bert_teacher_probs(const char *dir, const damo_text_dataset *d, int split, damo_tensor **probs);

#endif
