/* datasets.c - built-in data sets by name, so examples and the CLI can say
 * damo_dataset_load("fashion-mnist", "train", ...) without knowing where the files live.
 * Each data set is a row in a table: its IDX file names per split, the image shape and the
 * class count. Files are searched in $DAMO_DATA_DIR/<name>/, then the system install
 * directory /usr/share/datasets/<name>/ (where Debian's dataset-fashion-mnist puts them);
 * $DAMO_SYSTEM_DATA_DIR replaces that second directory (tests use it to simulate a machine
 * without the package). Each file may be gzipped (name.gz, tried first) or plain. Adding a
 * data set of the same kind is one more table row. */
#include "core/core.h"

#include <stdio.h>
#include <unistd.h>

typedef struct dataset_split {
  const char *split;
  const char *images; /* IDX file names without .gz */
  const char *labels;
} dataset_split;

typedef struct dataset_info {
  const char *name;
  int rows, cols;  /* image shape */
  int n_classes;
  const char *install_hint;
  dataset_split splits[2];
  const char *const *class_names;
} dataset_info;

static const char *const fashion_mnist_classes[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static const dataset_info datasets[] = {
    {"fashion-mnist",
     28,
     28,
     10,
     "apt-get install dataset-fashion-mnist, or set DAMO_DATA_DIR to a directory holding fashion-mnist/",
     {{"train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
      {"test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}},
     fashion_mnist_classes},
};

#define N_DATASETS ((int)(sizeof datasets / sizeof datasets[0]))

int damo_dataset_class_names(const char *name, const char *const **names) {
  for (int i = 0; name && i < N_DATASETS; i++)
    if (!strcmp(datasets[i].name, name)) {
      if (names) *names = datasets[i].class_names;
      return datasets[i].n_classes;
    }
  if (names) *names = NULL;
  return 0;
}

/* Appends to a fixed message buffer, truncating quietly. */
static void append(char *buf, size_t cap, const char *s) {
  size_t n = strlen(buf), m = strlen(s);
  if (n + m >= cap) m = cap - 1 - n;
  memcpy(buf + n, s, m);
  buf[n + m] = '\0';
}

/* Finds dir/name/base.gz or dir/name/base; on success fills out. */
static int find_file(const char *dir, const char *name, const char *base, char *out, size_t cap) {
  static const char *const suffixes[] = {".gz", ""};
  for (int i = 0; i < 2; i++) {
    snprintf(out, cap, "%s/%s/%s%s", dir, name, base, suffixes[i]);
    if (access(out, R_OK) == 0) return 1;
  }
  return 0;
}

static damo_status load_split(const dataset_info *ds, const dataset_split *sp, const char *img_path,
                              const char *lbl_path, damo_tensor **x, damo_tensor **y) {
  damo_tensor *img = NULL, *lbl = NULL, *fx = NULL, *iy = NULL;
  damo_status s = damo_idx_load(img_path, &img);
  if (!s) s = damo_idx_load(lbl_path, &lbl);
  if (s) goto done;
  if (img->ndim != 3 || img->shape[1] != ds->rows || img->shape[2] != ds->cols) {
    char sh[128];
    s = damo_error(DAMO_ERR_FORMAT, "%s: %s images have shape %s, expected (N, %d, %d)", img_path, ds->name,
                   damo_shape_string(img->ndim, img->shape, sh, sizeof sh), ds->rows, ds->cols);
    goto done;
  }
  if (lbl->ndim != 1) {
    char sh[128];
    s = damo_error(DAMO_ERR_FORMAT, "%s: %s labels have shape %s, expected (N,)", lbl_path, ds->name,
                   damo_shape_string(lbl->ndim, lbl->shape, sh, sizeof sh));
    goto done;
  }
  if (img->shape[0] != lbl->shape[0]) {
    s = damo_error(DAMO_ERR_FORMAT, "%s %s split: %lld images in %s but %lld labels in %s", ds->name, sp->split,
                   (long long)img->shape[0], img_path, (long long)lbl->shape[0], lbl_path);
    goto done;
  }
  const uint8_t *lb = lbl->data;
  for (int64_t i = 0; i < lbl->shape[0]; i++)
    if (lb[i] >= ds->n_classes) {
      s = damo_error(DAMO_ERR_FORMAT, "%s: label %d at index %lld is outside [0, %d)", lbl_path, lb[i], (long long)i,
                     ds->n_classes);
      goto done;
    }
  /* Images stay u8 (as Keras returns them): 4x less memory; batches convert on staging. */
  fx = img;
  img = NULL;
  iy = damo_tensor_new(DAMO_I32, 1, lbl->shape);
  if (!iy) {
    s = damo_error_prefix(DAMO_ERR_NOMEM, "loading %s %s: ", ds->name, sp->split);
    goto done;
  }
  for (int64_t i = 0; i < lbl->shape[0]; i++) damo_tensor_i32(iy)[i] = lb[i];
  *x = fx;
  *y = iy;
  fx = iy = NULL;
done:
  damo_tensor_free(img);
  damo_tensor_free(lbl);
  damo_tensor_free(fx);
  damo_tensor_free(iy);
  return s;
}

damo_status damo_dataset_load(const char *name, const char *split, damo_tensor **x, damo_tensor **y) {
  if (!x || !y) return damo_error(DAMO_ERR_INVALID_ARG, "dataset_load: NULL output");
  *x = *y = NULL;
  if (!name || !split) return damo_error(DAMO_ERR_INVALID_ARG, "dataset_load: NULL %s", name ? "split" : "name");

  const dataset_info *ds = NULL;
  for (int i = 0; i < N_DATASETS; i++)
    if (strcmp(datasets[i].name, name) == 0) ds = &datasets[i];
  if (!ds) {
    char known[256] = "";
    for (int i = 0; i < N_DATASETS; i++) {
      append(known, sizeof known, i ? ", " : "");
      append(known, sizeof known, datasets[i].name);
    }
    /* The text and token data sets are loaded by their own functions but named the same way
     * on the command line, so the list says all of them. */
    return damo_error(DAMO_ERR_NOT_FOUND, "unknown data set '%s' (known: %s; text: spam-assassin; language "
                      "modelling: moby-dick, sotu; or a file: a CSV, an x.npy,y.npy pair, a text file, a folder of "
                      "labelled text files)", name, known);
  }
  const dataset_split *sp = NULL;
  for (size_t i = 0; i < sizeof ds->splits / sizeof ds->splits[0]; i++)
    if (ds->splits[i].split && strcmp(ds->splits[i].split, split) == 0) sp = &ds->splits[i];
  if (!sp) {
    char known[256] = "";
    for (size_t i = 0; i < sizeof ds->splits / sizeof ds->splits[0]; i++)
      if (ds->splits[i].split) {
        append(known, sizeof known, i ? ", " : "");
        append(known, sizeof known, ds->splits[i].split);
      }
    return damo_error(DAMO_ERR_INVALID_ARG, "%s has no split '%s' (known: %s)", name, split, known);
  }

  char dirs[2][4096];
  int ndirs = 0;
  if (damo_data_path(DAMO_DATA_ROOT_USER, NULL, dirs[ndirs], sizeof dirs[0])) ndirs++;
  if (damo_data_path(DAMO_DATA_ROOT_SYSTEM, NULL, dirs[ndirs], sizeof dirs[0])) ndirs++;

  char tried[1024] = "";
  for (int d = 0; d < ndirs; d++) {
    char img[1024], lbl[1024];
    /* Both files must come from the same directory: never mix two copies. */
    int have_img = find_file(dirs[d], name, sp->images, img, sizeof img);
    int have_lbl = find_file(dirs[d], name, sp->labels, lbl, sizeof lbl);
    if (have_img && have_lbl) return load_split(ds, sp, img, lbl, x, y);
    char where[1100];
    const int len = snprintf(where, sizeof where, "%s%s/%s/%s", d ? " and " : "", dirs[d], name,
                             have_img ? " (labels missing)" : have_lbl ? " (images missing)" : "");
    if (len > 0) append(tried, sizeof tried, where); /* a path too long for the message is cut */
  }
  return damo_error(DAMO_ERR_NOT_FOUND, "data set %s (%s split) not found: looked for %s[.gz] and %s[.gz] in %s. To "
                    "install: %s", name, split, sp->images, sp->labels, tried, ds->install_hint);
}
