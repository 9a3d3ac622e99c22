/* bert_text.c - a fine-tuned BERT directory's texts on the command line: WordPiece encoding of
 * labelled splits and single mails ([CLS] text [SEP], head+tail cut), classifying a split in
 * batches, and damo evaluate / damo predict of such a directory (raw e-mails in, the model's
 * label names out). bert.c trains; both share these helpers through bert_text.h. */
#include "bert_text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How a fine-tuned directory's texts were cut, from tokenizer_config.json: the length
 * (model_max_length, HuggingFace's truncation length; else 128 or the positions' count) and
 * damo's head_tokens for head+tail truncation (-1 when absent: plain truncation). */
static int saved_inputs(const char *dir, const damo_bert *m, int *seq_len, int *head) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
  const int P = damo_bert_get_config(m)->max_position_embeddings;
  *seq_len = P < 128 ? P : 128;
  *head = -1;
  if (access(path, F_OK) != 0) return 1; /* a directory without one: the defaults */
  /* HuggingFace's file: other keys are fine */
  damo_config *c = NULL;
  damo_config_obj *root;
  damo_status st = damo_config_read_file(path, &c);
  if (st == DAMO_OK) st = damo_config_root(c, &root);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "model_max_length", 2, P, 0, seq_len);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "head_tokens", 0, P, 0, head);
  damo_config_free(c);
  if (st != DAMO_OK) fprintf(stderr, "damo: %s\n", damo_last_error());
  return st == DAMO_OK;
}

/* [CLS] text [SEP] at length T, cut head+tail when head >= 0; a head of T or more (head < 0)
 * is plain truncation, the same inputs as damo_wordpiece_encode gives. */
damo_status cli_bert_encode_text(const damo_wordpiece *wp, const char *text, int T, int head, int32_t *ids,
                               int32_t *types, int32_t *mask) {
  return damo_wordpiece_encode_head_tail(wp, text, T, head >= 0 ? head : T, ids, types, mask, NULL);
}


static damo_status encode_split(const damo_wordpiece *wp, const damo_text_dataset *d, int split, int64_t T,
                                int head, encoded_split *e) {
  const int64_t n = d->n[split];
  e->n = n;
  e->ids = malloc((size_t)(n * T) * sizeof(int32_t));
  e->types = malloc((size_t)(n * T) * sizeof(int32_t));
  e->mask = malloc((size_t)(n * T) * sizeof(int32_t));
  e->labels = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
  if (!e->ids || !e->types || !e->mask || !e->labels) return DAMO_ERR_NOMEM;
  for (int64_t i = 0; i < n; i++) {
    damo_status st = cli_bert_encode_text(wp, d->texts[split][i], (int)T, head, e->ids + i * T, e->types + i * T,
                                 e->mask + i * T);
    if (st != DAMO_OK) {
      fprintf(stderr, "damo train: encoding %s\n", d->paths[split][i]);
      return st;
    }
    e->labels[i] = damo_tensor_i32(d->y[split])[i];
  }
  return DAMO_OK;
}

/* A labelled text set (spam-assassin or a folder of class folders) with all three splits
 * encoded at length T; 0 after printing what failed. */
int cli_bert_load_encoded(const char *spec, const damo_wordpiece *wp, int64_t T, int head, damo_text_dataset **d,
                        encoded_split sp[3], int only_split /* -1: all three */) {
  damo_text_dataset_options o = {0};
  damo_status st = !strcmp(spec, "spam-assassin") ? damo_text_dataset_load(spec, &o, d) : damo_text_folder_load(spec, &o, d);
  for (int s = 0; s < 3 && st == DAMO_OK; s++)
    if (only_split < 0 || s == only_split) st = encode_split(wp, *d, s, T, head, &sp[s]);
  if (st != DAMO_OK) cli_fail(spec);
  return st == DAMO_OK;
}

void cli_bert_free_split(encoded_split *e) {
  free(e->ids);
  free(e->types);
  free(e->mask);
  free(e->labels);
}

/* Class probabilities (e->n, L) of a split from an inference graph, in batches of B. */
damo_status cli_bert_classify_split(damo_bert_graph *g, const encoded_split *e, int64_t B, int64_t T, damo_tensor *probs) {
  const int64_t L = probs->shape[1];
  damo_status st = DAMO_OK;
  for (int64_t first = 0; st == DAMO_OK && first < e->n; first += B) {
    const int64_t b = e->n - first < B ? e->n - first : B;
    st = damo_bert_classify(g, b, e->ids + first * T, e->types + first * T, e->mask + first * T,
                            damo_tensor_f32(probs) + first * L);
  }
  return st;
}

damo_tensor *cli_bert_split_labels(const encoded_split *e) {
  int64_t ls[1] = {e->n};
  damo_tensor *labels = damo_tensor_new(DAMO_I32, 1, ls);
  if (labels) memcpy(labels->data, e->labels, (size_t)e->n * sizeof(int32_t));
  return labels;
}
/* A fine-tuned directory's model, vocabulary and training length; 0 if dir is not a BERT
 * directory, -1 on failure (message printed), 1 loaded. */
int cli_bert_open(const char *dir, const char *what, damo_bert **m, damo_wordpiece **wp, int *seq_len,
                          int *head) {
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  char kind[16];
  if (damo_config_model_type_file(path, kind, sizeof kind) != DAMO_OK || strcmp(kind, "bert")) return 0;
  snprintf(path, sizeof path, "%s/vocab.txt", dir);
  if (damo_bert_load(dir, 0, 0, m) != DAMO_OK || damo_wordpiece_load(path, wp) != DAMO_OK) {
    cli_fail(what);
    return -1;
  }
  if (!saved_inputs(dir, *m, seq_len, head)) return -1;
  return cli_bert_match_vocabulary(*wp, *m, NULL) ? 1 : -1;
}

const char *cli_bert_label_name(const damo_bert *m, int i, char fallback[32]) {
  const char *name = damo_bert_label_name(m, i);
  snprintf(fallback, 32, "LABEL_%d", i);
  return name ? name : fallback;
}

int cli_bert_predict_files(const char *dir, const char *input) {
  damo_bert *m = NULL;
  damo_wordpiece *wp = NULL;
  damo_bert_graph *g = NULL;
  int32_t *ids = NULL;
  float *probs = NULL;
  const char **names = NULL;
  char (*fallback)[32] = NULL;
  int count = 0, T = 0, head = -1;
  char **paths = NULL;
  int rc = cli_bert_open(dir, "predict", &m, &wp, &T, &head);
  if (rc != 1) goto done;
  rc = -1;
  const int L = damo_bert_get_config(m)->num_labels;
  paths = cli_list_documents(input, &count);
  if (!paths) goto done; /* cli_list_documents said why */
  ids = malloc((size_t)T * 3 * sizeof *ids);
  probs = malloc((size_t)L * sizeof *probs);
  names = malloc((size_t)L * sizeof *names);
  fallback = malloc((size_t)L * sizeof *fallback);
  if (!ids || !probs || !names || !fallback) {
    fprintf(stderr, "damo predict: out of memory\n");
    goto done;
  }
  for (int c = 0; c < L; c++) names[c] = cli_bert_label_name(m, c, fallback[c]);
  if (damo_bert_classifier_new(m, 1, T, 0, &g) != DAMO_OK) {
    cli_fail("predict");
    goto done;
  }
  for (int i = 0; i < count; i++) {
    size_t len = 0, clean_len = 0;
    char *raw = cli_read_file(paths[i], &len), *clean = NULL;
    damo_status st = raw ? damo_email_clean(raw, len, &clean, &clean_len) : DAMO_ERR_IO;
    if (st == DAMO_OK) st = cli_bert_encode_text(wp, clean, T, head, ids, ids + T, ids + 2 * T);
    if (st == DAMO_OK) st = damo_bert_classify(g, 1, ids, ids + T, ids + 2 * T, probs);
    free(raw);
    free(clean);
    if (st != DAMO_OK) {
      cli_fail(paths[i]);
      goto done;
    }
    printf("%s: ", paths[i]);
    cli_print_top_classes(probs, L, 3, names, L);
  }
  rc = 2;
done:
  for (int i = 0; i < count; i++) free(paths[i]);
  free(names);
  free(fallback);
  free(paths);
  free(ids);
  free(probs);
  damo_bert_graph_free(g);
  damo_wordpiece_free(wp);
  damo_bert_free(m);
  return rc;
}

int cli_bert_evaluate_split(const char *dir, const char *data, const char *split, const char *png) {
  damo_bert *m = NULL;
  damo_wordpiece *wp = NULL;
  damo_bert_graph *g = NULL;
  damo_text_dataset *d = NULL;
  damo_tensor *probs = NULL, *labels = NULL;
  encoded_split sp[3] = {{0}};
  int T = 0, head = -1;
  const int which = !split || !strcmp(split, "test") ? DAMO_SPLIT_TEST : !strcmp(split, "train") ? DAMO_SPLIT_TRAIN
                                                                                                   : DAMO_SPLIT_VAL;
  int rc = cli_bert_open(dir, "evaluate", &m, &wp, &T, &head);
  if (rc != 1) goto done;
  rc = -1;
  const int L = damo_bert_get_config(m)->num_labels;
  const int64_t B = 64;
  if (!cli_bert_load_encoded(data, wp, T, head, &d, sp, which)) goto done;
  if (d->n_classes != L) {
    fprintf(stderr, "damo evaluate: %s has %d classes, the model in %s has %d\n", data, d->n_classes, dir, L);
    goto done;
  }
  int64_t ps[2] = {sp[which].n, L};
  probs = damo_tensor_new(DAMO_F32, 2, ps);
  labels = cli_bert_split_labels(&sp[which]);
  double t0 = 0;
  if (!probs || !labels || damo_bert_classifier_new(m, B, T, 0, &g) != DAMO_OK || (t0 = cli_seconds()) < 0 ||
      cli_bert_classify_split(g, &sp[which], B, T, probs) != DAMO_OK) {
    cli_fail("evaluate");
    goto done;
  }
  const double seconds = cli_seconds() - t0;
  double loss = 0;
  int64_t right = 0;
  for (int64_t i = 0; i < sp[which].n; i++) {
    const float *p = damo_tensor_f32(probs) + i * L;
    int top = 0;
    for (int c = 1; c < L; c++) top = p[c] > p[top] ? c : top;
    right += top == sp[which].labels[i];
    loss -= log(fmax((double)p[sp[which].labels[i]], 1e-30));
  }
  printf("loss: %.4f - accuracy: %.4f (%lld mails, BERT at length %d%s; classified in %.2f s: %.1f mails/s at batch "
         "%lld)\n", loss / (double)sp[which].n, (double)right / (double)sp[which].n, (long long)sp[which].n, T,
         damo_bert_is_quantized(m) ? ", int8" : "", seconds, (double)sp[which].n / seconds, (long long)B);
  const char **names = malloc((size_t)L * sizeof *names);
  char(*fallback)[32] = malloc((size_t)L * sizeof *fallback);
  if (names && fallback) {
    for (int c = 0; c < L; c++) names[c] = cli_bert_label_name(m, c, fallback[c]);
    rc = cli_report_probabilities(probs, labels, names, L, png) == 0 ? 2 : -1;
  } else {
    fprintf(stderr, "damo evaluate: out of memory\n");
  }
  free(names);
  free(fallback);
done:
  for (int s = 0; s < 3; s++) cli_bert_free_split(&sp[s]);
  damo_tensor_free(probs);
  damo_tensor_free(labels);
  damo_text_dataset_free(d);
  damo_bert_graph_free(g);
  damo_wordpiece_free(wp);
  damo_bert_free(m);
  return rc;
}

int cli_bert_teacher_probs(const char *dir, const damo_text_dataset *d, int split, damo_tensor **probs) {
  damo_bert *m = NULL;
  damo_wordpiece *wp = NULL;
  damo_bert_graph *g = NULL;
  encoded_split e = {0};
  int T = 0, head = -1;
  *probs = NULL;
  int rc = cli_bert_open(dir, "distill: the teacher", &m, &wp, &T, &head);
  if (rc != 1) goto done;
  rc = -1;
  const int L = damo_bert_get_config(m)->num_labels;
  if (d->n_classes != L) {
    fprintf(stderr, "damo distill: the data has %d classes, the BERT teacher in %s %d\n", d->n_classes, dir, L);
    goto done;
  }
  const int64_t B = 64, ps[2] = {d->n[split], L};
  printf("the BERT teacher (%s) reads the %lld training mails as WordPiece ids at length %d\n", dir, (long long)ps[0], T);
  fflush(stdout);
  if (encode_split(wp, d, split, T, head, &e) != DAMO_OK || !(*probs = damo_tensor_new(DAMO_F32, 2, ps)) ||
      damo_bert_classifier_new(m, B, T, 0, &g) != DAMO_OK || cli_bert_classify_split(g, &e, B, T, *probs) != DAMO_OK) {
    cli_fail("distill: the teacher");
    damo_tensor_free(*probs);
    *probs = NULL;
    goto done;
  }
  rc = 2;
done:
  cli_bert_free_split(&e);
  damo_bert_graph_free(g);
  damo_wordpiece_free(wp);
  damo_bert_free(m);
  return rc;
}
