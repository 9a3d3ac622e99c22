/* Temp-file helpers shared by the tests that write files: each suite makes one mkdtemp
 * directory (tmpdir) in main() and names files inside it with tmp_path(). */
#ifndef DAMO_TEST_TMPFILES_H
#define DAMO_TEST_TMPFILES_H
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char tmpdir[256];

/* Sets tmpdir to the mkdtemp template $TMPDIR/damo_test_<suite>_XXXXXX (/tmp without TMPDIR);
 * the suite's main() then calls mkdtemp(tmpdir). */
static void tmpdir_template(const char *suite) {
  const char *base = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/damo_test_%s_XXXXXX", base && base[0] ? base : "/tmp", suite);
}

/* tmpdir/name; four rotating buffers so one call's result survives the next three. */
static const char *tmp_path(const char *name) {
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
  return buf[k];
}

static inline void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

/* Removes a saved model directory: its config.json and model.safetensors, then the folder. */
static inline void remove_model_dir(const char *dir) {
  char p[600];
  snprintf(p, sizeof p, "%s/config.json", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/model.safetensors", dir);
  unlink(p);
  rmdir(dir);
}

/* Removes everything under dir, subdirectories too, then dir itself if remove_self (a
 * suite's tmpdir with the models it saved, or a data folder it wrote). */
static inline void remove_tree(const char *dir, int remove_self) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[1024];
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) continue;
    if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) continue;
    if (unlink(p) != 0) remove_tree(p, 1); /* not a file: a directory */
  }
  closedir(d);
  if (remove_self) rmdir(dir);
}
static inline void remove_tmpdir(void) { remove_tree(tmpdir, 1); }
#endif
