/* text.c - text data on the command line: `--data spam-assassin` (or a folder whose
 * sub-folders are the classes) for train and evaluate, and predict on raw e-mail files.
 *
 * A text model's directory holds, besides config.json and model.safetensors, the
 * vocabulary (vocab.txt) and how documents become ids (text.json: the document kind, the
 * length, the number token), so predict turns a raw mail into exactly the ids training saw.
 * The length comes from the model's input shape (timesteps) and the vocabulary size from
 * its embedding layer's input_dim, so the config alone says how text is prepared. */
#include "cli.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_is_text_data(const char *spec) {
  if (!strcmp(spec, "spam-assassin")) return 1;
  struct stat sb;
  return !strchr(spec, ',') && stat(spec, &sb) == 0 && S_ISDIR(sb.st_mode);
}

damo_status cli_text_load(const char *spec, const damo_model *m, const char *config_path, damo_text_dataset **out) {
  int64_t shape[DAMO_MAX_DIMS];
  int nd = damo_model_input_shape(m, shape);
  damo_text_dataset_options o = {0};
  o.max_len = nd == 1 ? (int)shape[0] : 0;
  int dim = config_path ? damo_model_embedding_input_dim(m) : 0;
  if (dim > 2) o.max_vocab = dim;
  return !strcmp(spec, "spam-assassin") ? damo_text_dataset_load(spec, &o, out) : damo_text_folder_load(spec, &o, out);
}

int cli_text_save(const char *dir, const damo_text_dataset *d, int max_len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/vocab.txt", dir);
  if (damo_vocab_save(d->vocab, path) != DAMO_OK) return 0;
  char text[256];
  snprintf(text, sizeof text,
           "{\n  \"documents\": \"email\",\n  \"vocabulary\": \"vocab.txt\",\n  \"max_len\": %d,\n"
           "  \"numbers_to_token\": false\n}\n",
           max_len);
  snprintf(path, sizeof path, "%s/text.json", dir);
  int ok = damo_write_file_atomic(path, text, strlen(text)) == DAMO_OK;
  if (!ok) fprintf(stderr, "damo: cannot write %s\n", path);
  return ok;
}

/* The model directory's text preparation: 1 found (vocab and length set), 0 none, -1 a
 * broken one (message printed). */
int cli_text_settings(const char *dir, damo_vocab **vocab, int *max_len, int *numbers_to_token) {
  char path[4096];
  snprintf(path, sizeof path, "%s/text.json", dir);
  if (access(path, F_OK) != 0) return 0;
  /* damo's own file: an unknown key is an error (strict JSON: trailing data, repeated keys) */
  damo_config *c = NULL;
  damo_config_obj *root;
  const char *documents = "email", *vocabulary = "vocab.txt";
  *numbers_to_token = 0;
  damo_status st = damo_config_read_file(path, &c);
  if (st == DAMO_OK) st = damo_config_root(c, &root);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "max_len", 1, 1 << 24, DAMO_CFG_REQUIRED, max_len);
  if (st == DAMO_OK) st = damo_config_get_bool(root, "numbers_to_token", 0, numbers_to_token);
  if (st == DAMO_OK) st = damo_config_get_string(root, "documents", 0, &documents);
  if (st == DAMO_OK) st = damo_config_get_string(root, "vocabulary", 0, &vocabulary);
  if (st == DAMO_OK) st = damo_config_close(root);
  damo_config_free(c);
  if (st != DAMO_OK) {
    fprintf(stderr, "damo: %s\n", damo_last_error());
    return -1;
  }
  snprintf(path, sizeof path, "%s/vocab.txt", dir);
  if (damo_vocab_load(path, vocab) != DAMO_OK) {
    cli_fail("predict");
    return -1;
  }
  return 1;
}

char *cli_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    char *grown = cap < ((size_t)1 << 30) ? realloc(buf, cap * 2) : NULL;
    if (!grown) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = grown, cap *= 2;
  }
  fclose(f);
  *len = n;
  return buf;
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The files of a folder (sorted, hidden ones skipped) or the one file given. */
char **cli_list_documents(const char *input, int *count) {
  struct stat sb;
  *count = 0;
  if (stat(input, &sb) != 0) {
    fprintf(stderr, "damo predict: %s: no such file or folder\n", input);
    return NULL;
  }
  char **paths = NULL;
  if (!S_ISDIR(sb.st_mode)) {
    if (cli_is_image_path(input)) { /* it used to be cleaned as an e-mail and scored */
      fprintf(stderr, "damo predict: %s is a picture, and this model reads text (e-mails); give a text file or a "
              "folder of them\n", input);
      return NULL;
    }
    paths = malloc(sizeof *paths);
    if (paths && (paths[0] = strdup(input))) *count = 1;
    return paths;
  }
  DIR *d = opendir(input);
  int cap = 0;
  for (struct dirent *e; d && (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", input, e->d_name);
    if (stat(full, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
    if (*count == cap) {
      char **grown = realloc(paths, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *grown);
      if (!grown) break;
      paths = grown;
    }
    if (!(paths[*count] = strdup(full))) break;
    (*count)++;
  }
  if (d) closedir(d);
  if (*count) qsort(paths, (size_t)*count, sizeof *paths, compare_strings);
  else fprintf(stderr, "damo predict: %s holds no files\n", input);
  return paths;
}

int cli_predict_text(damo_model *m, const char *dir, const char *input, const char *output) {
  damo_vocab *vocab = NULL;
  int max_len = 0, numbers = 0;
  int found = cli_text_settings(dir, &vocab, &max_len, &numbers);
  if (found <= 0) return found; /* 0: not a text model, -1: broken */
  int count = 0, rc = 1;
  char **paths = cli_list_documents(input, &count);
  const int64_t shape[] = {count, max_len};
  damo_tensor *x = count ? damo_tensor_new(DAMO_I32, 2, shape) : NULL, *p = NULL;
  damo_text_clean_options co = {numbers};
  for (int i = 0; x && i < count; i++) {
    size_t len = 0, clean_len = 0;
    char *raw = cli_read_file(paths[i], &len), *clean = NULL;
    damo_status st = raw ? damo_email_clean_ex(raw, len, &co, &clean, &clean_len) : DAMO_ERR_IO;
    if (!raw) fprintf(stderr, "damo predict: cannot read %s\n", paths[i]);
    else if (st != DAMO_OK) cli_fail(paths[i]);
    else st = damo_vocab_encode(vocab, clean, clean_len, max_len, damo_tensor_i32(x) + (int64_t)i * max_len, NULL);
    free(raw);
    free(clean);
    if (st != DAMO_OK) goto done;
  }
  if (!x || damo_model_predict(m, x, 64, &p) != DAMO_OK || (output && damo_npy_save(output, p) != DAMO_OK)) {
    if (x) cli_fail("predict");
    goto done;
  }
  const char *const *names;
  int n_names = damo_model_class_names(m, &names);
  int64_t C = damo_tensor_numel(p) / count;
  for (int i = 0; i < count; i++) {
    printf("%s: ", paths[i]);
    cli_print_top_classes(damo_tensor_f32(p) + (int64_t)i * C, C, 3, names, n_names);
  }
  rc = 0;
done:
  for (int i = 0; i < count; i++) free(paths[i]);
  free(paths);
  damo_tensor_free(x);
  damo_tensor_free(p);
  damo_vocab_free(vocab);
  return rc == 0 ? 2 : -1; /* 2: done, -1: failed */
}

damo_status cli_text_encode_for_model(const char *dir, const damo_model *m, const damo_text_dataset *d, int split,
                                      damo_tensor **ids) {
  char vocab_path[4096];
  snprintf(vocab_path, sizeof vocab_path, "%s/vocab.txt", dir);
  *ids = NULL;
  int64_t shape[DAMO_MAX_DIMS];
  damo_dtype dtype = DAMO_F32;
  if (damo_model_input_info(m, 0, NULL, shape, &dtype) != 1 || dtype != DAMO_I32)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s does not read one sequence of token ids", dir);
  damo_vocab *vocab = NULL;
  damo_status st = damo_vocab_load(vocab_path, &vocab);
  if (st != DAMO_OK) return st;
  const int64_t rows = d->n[split], len = shape[0], s[2] = {rows, len};
  damo_tensor *t = damo_tensor_new(DAMO_I32, 2, s);
  for (int64_t r = 0; t && r < rows && st == DAMO_OK; r++) {
    const char *text = d->texts[split][r];
    st = damo_vocab_encode(vocab, text, strlen(text), (int)len, damo_tensor_i32(t) + r * len, NULL);
  }
  damo_vocab_free(vocab);
  if (!t || st != DAMO_OK) {
    damo_tensor_free(t);
    return t ? st : DAMO_ERR_NOMEM;
  }
  *ids = t;
  return DAMO_OK;
}

damo_status cli_text_split_for_model(const char *dir, const damo_model *m, const char *spec, int split,
                                     damo_text_dataset **data, damo_tensor **x, damo_tensor **y) {
  char config[4096];
  snprintf(config, sizeof config, "%s/config.json", dir);
  *x = *y = NULL;
  damo_status st = cli_text_load(spec, m, config, data);
  /* Encode with the model's own vocabulary (the data set rebuilt one from its training
   * split; with the same settings it is the same, but the saved one is what counts). */
  if (st == DAMO_OK) st = cli_text_encode_for_model(dir, m, *data, split, x);
  if (st != DAMO_OK) return st;
  *y = damo_tensor_clone((*data)->y[split]);
  return *y ? DAMO_OK : DAMO_ERR_NOMEM;
}

void cli_text_describe(const char *spec, const damo_text_dataset *d) {
  printf("%s: %lld documents read, %lld exact and %lld near duplicates removed, %lld empty; "
         "train %lld / validation %lld / test %lld; vocabulary %d words\n",
         spec, (long long)d->n_files, (long long)d->n_exact_dups, (long long)d->n_near_dups, (long long)d->n_empty,
         (long long)d->n[DAMO_SPLIT_TRAIN], (long long)d->n[DAMO_SPLIT_VAL], (long long)d->n[DAMO_SPLIT_TEST],
         (int)damo_vocab_size(d->vocab));
}
