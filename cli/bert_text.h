/* bert_text.h - what bert.c (training) and bert_text.c (encoding, evaluate, predict) share. */
#ifndef DAMO_CLI_BERT_TEXT_H
#define DAMO_CLI_BERT_TEXT_H

#include "cli.h"

/* WordPiece inputs of one split: (N, T) ids, types, mask; head >= 0: head+tail truncation. */
typedef struct encoded_split {
  int32_t *ids, *types, *mask, *labels;
  int64_t n;
} encoded_split;

/* [CLS] text [SEP] at length T, cut head+tail when head >= 0 (else plain truncation). */
damo_status cli_bert_encode_text(const damo_wordpiece *wp, const char *text, int T, int head, int32_t *ids,
                                 int32_t *types, int32_t *mask);
/* A labelled text set (spam-assassin or a folder of class folders) with its splits encoded at
 * length T (only_split < 0: all three); 0 after printing what failed. */
int cli_bert_load_encoded(const char *spec, const damo_wordpiece *wp, int64_t T, int head, damo_text_dataset **d,
                          encoded_split sp[3], int only_split);
void cli_bert_free_split(encoded_split *e);
/* Class probabilities (e->n, L) of a split from an inference graph, in batches of B. */
damo_status cli_bert_classify_split(damo_bert_graph *g, const encoded_split *e, int64_t B, int64_t T, damo_tensor *probs);
damo_tensor *cli_bert_split_labels(const encoded_split *e);
/* Checks that every id of the vocabulary fits the model's embedding table and, with opt, puts
 * the special ids into it; 0 after printing why not. */
int cli_bert_match_vocabulary(const damo_wordpiece *wp, const damo_bert *m, damo_bert_train_options *opt);

/* A fine-tuned BERT directory's model, WordPiece vocabulary, training length and head+tail
 * cut: 1 loaded, 0 dir is not a BERT directory, -1 failed (message printed, naming `what`). */
int cli_bert_open(const char *dir, const char *what, damo_bert **m, damo_wordpiece **wp, int *seq_len, int *head);
/* Class i's name from the config's id2label, else "LABEL_i" (written into fallback). */
const char *cli_bert_label_name(const damo_bert *m, int i, char fallback[32]);

#endif
