/* Replays the fuzz inputs through the same target bodies the libFuzzer harnesses run
 * (tests/fuzz/fuzz_targets.c), with the ordinary compiler, in every `make test` and under
 * ASan/UBSan in `make test-asan`:
 *  - tests/fuzz/regressions/<reader>/<name>: every crash, leak or hang the fuzzers found,
 *    minimised; the reader must return a status (OK or an error) without crashing;
 *  - tests/fuzz/corpus/<reader>/: the seed corpora, which must load at least once per reader
 *    (a harness whose valid seeds all fail would fuzz nothing but the error paths).
 * A regression file named known-* is an input of a known defect being fixed elsewhere (its
 * name says which); it is listed but not run until that fix lands. */
#include "fuzz/fuzz_targets.h"
#include "harness.h"

#include <damo.h>
#include <dirent.h>
#include <stdlib.h>

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The sorted file names of a folder (hidden ones skipped); *n their count. */
static char **list_files(const char *dir, int *n) {
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) return NULL;
  char **names = NULL;
  int cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (*n == cap) {
      cap = cap ? 2 * cap : 16;
      char **grown = realloc(names, (size_t)cap * sizeof *names);
      if (!grown) break;
      names = grown;
    }
    names[(*n)++] = strdup(e->d_name);
  }
  closedir(d);
  if (*n) qsort(names, (size_t)*n, sizeof *names, compare_names);
  return names;
}

static void free_list(char **names, int n) {
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

static uint8_t *read_all(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  *size = 0;
  if (!f) return NULL;
  size_t cap = 4096;
  uint8_t *buf = malloc(cap);
  while (buf) {
    *size += fread(buf + *size, 1, cap - *size, f);
    if (*size < cap) break;
    uint8_t *grown = realloc(buf, cap * 2);
    if (!grown) {
      free(buf);
      buf = NULL;
    }
    buf = grown, cap *= 2;
  }
  fclose(f);
  return buf;
}

/* Runs every file of root/<reader>/ through its target; returns the number of inputs the
 * reader accepted (DAMO_OK), -1 if the folder is missing. */
static int replay_folder(const char *root, const char *reader, const fuzz_target *t, int *n_run) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/%s", root, reader);
  int n = 0, ok = 0;
  char **files = list_files(dir, &n);
  if (!files) return -1;
  for (int i = 0; i < n; i++) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    if (!strncmp(files[i], "known-", 6)) {
      fprintf(stderr, "  not run until its fix lands: %s\n", path);
      continue;
    }
    size_t size;
    uint8_t *data = read_all(path, &size);
    CHECK_MSG(data != NULL, "%s: cannot read", path);
    if (!data) continue;
    int st = t->fn(data, size);
    CHECK_MSG(st == FUZZ_SKIPPED || (st >= DAMO_OK && st <= DAMO_ERR_STATE), "%s: status %d", path, st);
    ok += st == DAMO_OK;
    ++*n_run;
    free(data);
  }
  free_list(files, n);
  return ok;
}

static void test_regressions(void) {
  const char *root = DAMO_SOURCE_DIR "/tests/fuzz/regressions";
  int n = 0, n_run = 0;
  char **readers = list_files(root, &n);
  for (int i = 0; i < n; i++) {
    const fuzz_target *t = fuzz_target_find(readers[i]);
    CHECK_MSG(t != NULL, "tests/fuzz/regressions/%s: no fuzz target of that name", readers[i]);
    if (t) replay_folder(root, readers[i], t, &n_run);
  }
  fprintf(stderr, "  %d regression inputs replayed\n", n_run);
  free_list(readers, n);
}

static void test_seed_corpora(void) {
  const char *root = DAMO_SOURCE_DIR "/tests/fuzz/corpus";
  for (const fuzz_target *t = fuzz_targets; t->name; t++) {
    int n_run = 0, ok = replay_folder(root, t->name, t, &n_run);
    CHECK_MSG(ok > 0, "tests/fuzz/corpus/%s: %d of %d seeds load (%s)", t->name, ok, n_run,
              ok < 0 ? "no such folder" : damo_last_error());
  }
}

int main(void) {
  RUN(test_regressions);
  RUN(test_seed_corpora);
  return test_summary("fuzz_regressions");
}
