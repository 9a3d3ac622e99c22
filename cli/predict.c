/* predict.c - `damo predict`: class probabilities for a .npy array, an image file or a
 * folder of images. Images of any size and colour are converted the way the training
 * pictures were made (grey, light-on-dark, fitted and centred; see
 * damo_image_to_model_input) and predicted as one batch; each prints its top classes with
 * the class names the model's config.json stores. */
#include "cli.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int cli_list_images(const char *input, char ***paths, int *count) {
  struct stat sb;
  *paths = NULL, *count = 0;
  if (stat(input, &sb) != 0) {
    fprintf(stderr, "damo predict: %s: no such file or folder\n", input);
    return 0;
  }
  if (!S_ISDIR(sb.st_mode)) {
    *paths = malloc(sizeof **paths);
    if (!*paths || !((*paths)[0] = strdup(input))) return 0;
    *count = 1;
    return 1;
  }
  DIR *d = opendir(input);
  if (!d) {
    fprintf(stderr, "damo predict: cannot read the folder %s\n", input);
    return 0;
  }
  int cap = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.' || !cli_is_image_path(e->d_name)) continue;
    if (*count == cap) {
      cap = cap ? 2 * cap : 64;
      char **grown = realloc(*paths, (size_t)cap * sizeof *grown);
      if (!grown) break;
      *paths = grown;
    }
    size_t n = strlen(input) + strlen(e->d_name) + 2;
    char *p = malloc(n);
    if (!p) break;
    snprintf(p, n, "%s/%s", input, e->d_name);
    (*paths)[(*count)++] = p;
  }
  closedir(d);
  if (*count == 0) {
    fprintf(stderr, "damo predict: %s holds no image files (png, jpg, pgm, ppm, bmp, gif, tga)\n", input);
    return 0;
  }
  qsort(*paths, (size_t)*count, sizeof **paths, compare_strings);
  return 1;
}

/* Loads every image as one model-input batch (N, input shape); 0 after printing why not.
 * invert != 0: pictures with a light background are inverted (Fashion-MNIST items are
 * light on black); 0: never. */
static int load_image_batch(const damo_model *m, char **paths, int count, int invert, damo_tensor **out) {
  int64_t in_shape[DAMO_MAX_DIMS], shape[DAMO_MAX_DIMS];
  int nd = damo_model_input_shape(m, in_shape);
  if (!(nd == 2 || (nd == 3 && (in_shape[2] == 1 || in_shape[2] == 3)))) {
    fprintf(stderr, "damo predict: the model takes inputs of rank %d, not images (height, width[, 1 or 3 channels])\n",
            nd);
    return 0;
  }
  int h = (int)in_shape[0], w = (int)in_shape[1], c = nd == 3 ? (int)in_shape[2] : 1;
  shape[0] = count;
  memcpy(shape + 1, in_shape, (size_t)nd * sizeof *shape);
  damo_tensor *batch = damo_tensor_new(DAMO_F32, nd + 1, shape);
  if (!batch) return cli_fail("predict");
  for (int i = 0; i < count; i++) {
    damo_tensor *img = NULL, *in = NULL;
    damo_status st = damo_image_load(paths[i], 0, &img);
    if (st == DAMO_OK) st = damo_image_to_model_input(img, h, w, c, invert != 0, &in);
    if (st == DAMO_OK) memcpy(damo_tensor_f32(batch) + (int64_t)i * h * w * c, in->data, (size_t)h * w * c * sizeof(float));
    damo_tensor_free(img);
    damo_tensor_free(in);
    if (st != DAMO_OK) {
      damo_tensor_free(batch);
      cli_fail("predict");
      return 0;
    }
  }
  *out = batch;
  return 1;
}

/* A CSV's numeric features; its labels too when it has the label column (--label-column
 * NAME, or a column named "label"), so an unlabelled CSV is scored and a labelled one is
 * also measured. 0 after a message. */
static int load_csv_features(const char *path, const char *label_column, damo_tensor **x, damo_tensor **y) {
  damo_csv_options o = {1, label_column ? label_column : "label", ','};
  damo_status st = damo_csv_load(path, &o, x, y);
  if (st == DAMO_ERR_NOT_FOUND && !label_column) { /* no "label" column: features only */
    o.label_column = NULL;
    st = damo_csv_load(path, &o, x, y);
  }
  return st == DAMO_OK || !cli_fail("predict");
}

/* --input a.npy,b.npy: one array per model input, in the order of its inputs; p gets one
 * tensor per model output. */
static int predict_inputs(damo_model *m, const char *list, int batch, damo_tensor **p) {
  damo_tensor *xs[8] = {NULL};
  int n = 0, ok = 1;
  char *copy = strdup(list), *save = NULL;
  for (char *part = copy ? strtok_r(copy, ",", &save) : NULL; part && ok; part = strtok_r(NULL, ",", &save)) {
    if (n == 8) {
      fprintf(stderr, "damo predict: --input lists more than 8 arrays\n");
      ok = 0;
    } else if (damo_npy_load(part, &xs[n++]) != DAMO_OK) {
      ok = !cli_fail("predict");
    }
  }
  if (ok && n != damo_model_num_inputs(m)) {
    fprintf(stderr, "damo predict: --input lists %d arrays, the model takes %d inputs\n", n, damo_model_num_inputs(m));
    ok = 0;
  }
  if (ok && damo_model_predict_outputs(m, n, (const damo_tensor *const *)xs, batch, damo_model_num_outputs(m), p) !=
                DAMO_OK)
    ok = !cli_fail("predict");
  for (int k = 0; k < n; k++) damo_tensor_free(xs[k]);
  free(copy);
  return ok;
}

/* "p.npy" and output "box" -> "p_box.npy" (a model of several outputs writes one file each). */
static void output_path(const char *output, const char *name, char *buf, size_t cap) {
  size_t len = strlen(output);
  int npy = len > 4 && !strcmp(output + len - 4, ".npy");
  snprintf(buf, cap, "%.*s_%s.npy", (int)(npy ? len - 4 : len), output, name);
}

/* A model of several outputs: arrays in (--input a.npy[,b.npy]), one array per output out
 * (--output p.npy: p_<output>.npy each), or each output's first rows printed. */
static int predict_several(damo_model *m, const char *input, const char *output, int batch) {
  damo_tensor *p[DAMO_MODEL_MAX_OUTPUTS] = {NULL};
  const int n_out = damo_model_num_outputs(m);
  size_t len = strlen(input);
  if (len < 4 || strcmp(input + len - 4, ".npy")) {
    fprintf(stderr, "damo predict: a model of %d outputs reads .npy arrays (--input a.npy[,b.npy])\n", n_out);
    return 1;
  }
  int rc = predict_inputs(m, input, batch, p) ? 0 : 1;
  for (int k = 0; rc == 0 && k < n_out; k++) {
    const char *name;
    damo_model_output_info(m, k, &name, NULL);
    const int64_t rows = p[k]->shape[0], C = damo_tensor_numel(p[k]) / (rows ? rows : 1);
    if (output) {
      char path[4096];
      output_path(output, name, path, sizeof path);
      if (damo_npy_save(path, p[k]) != DAMO_OK) {
        rc = cli_fail("predict");
        break;
      }
      printf("wrote %lld predictions of %lld values (output '%s') to %s\n", (long long)rows, (long long)C, name, path);
      continue;
    }
    printf("%s:\n", name);
    for (int64_t r = 0; r < rows && r < 10; r++) {
      for (int64_t c = 0; c < C; c++) printf(c ? " %.4f" : "%.4f", damo_tensor_f32(p[k])[r * C + c]);
      printf("\n");
    }
  }
  for (int k = 0; k < n_out; k++) damo_tensor_free(p[k]);
  return rc;
}

int cli_predict_sequential(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *input = cli_opt(argc, argv, "--input");
  const char *output = cli_opt(argc, argv, "--output"), *labels = cli_opt(argc, argv, "--labels");
  const char *invert_opt = cli_opt(argc, argv, "--invert");
  if (!dir || !input) {
    fprintf(stderr, "damo predict: --model DIR and --input x.npy|image|folder are required\n");
    return 2;
  }
  long top = 3, batch = 256;
  if (cli_opt(argc, argv, "--top") && !cli_parse_long(cli_opt(argc, argv, "--top"), "--top", 1, 1000, &top)) return 2;
  if (cli_opt(argc, argv, "--batch-size") &&
      !cli_parse_long(cli_opt(argc, argv, "--batch-size"), "--batch-size", 1, 1 << 20, &batch))
    return 2;
  int invert = -1;
  if (invert_opt) {
    if (!strcmp(invert_opt, "auto")) invert = -1;
    else if (!strcmp(invert_opt, "no")) invert = 0;
    else {
      fprintf(stderr, "damo predict: --invert must be auto or no, got '%s'\n", invert_opt);
      return 2;
    }
  }
  size_t len = strlen(input);
  int csv = len > 4 && !strcmp(input + len - 4, ".csv");
  int npy = csv || (len > 4 && !strcmp(input + len - 4, ".npy")); /* arrays: printed as rows */
  char **paths = NULL;
  int n_paths = 0;
  damo_model *m;
  damo_tensor *x = NULL, *y = NULL, *p = NULL;
  int rc = 0;
  if (damo_model_load(dir, &m) != DAMO_OK) return cli_fail("predict");
  if (damo_model_num_outputs(m) > 1) {
    rc = predict_several(m, input, output, (int)batch);
    damo_model_free(m);
    return rc;
  }
  if (!npy) { /* a text model (vocab.txt + text.json) reads raw e-mails */
    int text = cli_predict_text(m, dir, input, output);
    if (text != 0) {
      damo_model_free(m);
      return text == 2 ? 0 : 1;
    }
  }
  if (!npy && !cli_list_images(input, &paths, &n_paths)) {
    rc = 1;
    goto done;
  }
  if (!npy && !load_image_batch(m, paths, n_paths, invert, &x)) {
    rc = 1;
    goto done;
  }
  if (csv && !load_csv_features(input, cli_opt(argc, argv, "--label-column"), &x, &y)) {
    rc = 1;
    goto done;
  }
  if (npy && !csv && !strchr(input, ',') && damo_npy_load(input, &x) != DAMO_OK) {
    rc = cli_fail("predict");
    goto done;
  }
  if (npy && !csv && strchr(input, ',')) { /* a model of several inputs: a.npy,b.npy in the order of its inputs */
    if (!predict_inputs(m, input, (int)batch, &p)) {
      rc = 1;
      goto done;
    }
  } else if (damo_model_predict(m, x, (int)batch, &p) != DAMO_OK) {
    rc = cli_fail("predict");
    goto done;
  }
  if (output && damo_npy_save(output, p) != DAMO_OK) {
    rc = cli_fail("predict");
    goto done;
  }
  int64_t rows = p->shape[0], C = damo_tensor_numel(p) / (rows ? rows : 1);
  if (labels || y) { /* a CSV's label column, or --labels */
    if (!y && damo_npy_load(labels, &y) != DAMO_OK) {
      rc = cli_fail("predict");
      goto done;
    }
    if (!labels) labels = input;
    if (y->dtype != DAMO_I32 || damo_tensor_numel(y) != rows) {
      fprintf(stderr, "damo predict: %s must hold %lld integer labels\n", labels, (long long)rows);
      rc = 1;
      goto done;
    }
    int64_t correct = 0;
    for (int64_t r = 0; r < rows; r++) {
      const float *row = damo_tensor_f32(p) + r * C;
      int64_t best = 0;
      for (int64_t c = 1; c < C; c++)
        if (row[c] > row[best]) best = c;
      if (C == 1) best = row[0] >= 0.5f;
      correct += best == damo_tensor_i32(y)[r];
    }
    printf("accuracy: %.4f (%lld of %lld)\n", (double)correct / (double)rows, (long long)correct, (long long)rows);
  }
  const char *const *names;
  int n_names = damo_model_class_names(m, &names);
  if (!npy) {
    for (int64_t r = 0; r < rows; r++) {
      printf("%s: ", paths[r]);
      cli_print_top_classes(damo_tensor_f32(p) + r * C, C, (int)top, names, n_names);
    }
  } else if (output) {
    printf("wrote %lld predictions of %lld values to %s\n", (long long)rows, (long long)C, output);
  } else {
    for (int64_t r = 0; r < rows && r < 10; r++) {
      for (int64_t c = 0; c < C; c++) printf(c ? " %.4f" : "%.4f", damo_tensor_f32(p)[r * C + c]);
      printf("\n");
    }
  }
done:
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_tensor_free(p);
  damo_model_free(m);
  for (int i = 0; i < n_paths; i++) free(paths[i]);
  free(paths);
  return rc;
}

/* A fine-tuned BERT directory reads raw e-mails (a file or a folder of them). */
int cli_predict_bert(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *input = cli_opt(argc, argv, "--input");
  if (!dir || !input) {
    fprintf(stderr, "damo predict: --model DIR and --input MAIL|FOLDER are required\n");
    return 2;
  }
  size_t len = strlen(input);
  if (len > 4 && (!strcmp(input + len - 4, ".npy") || !strcmp(input + len - 4, ".csv"))) {
    fprintf(stderr, "damo predict: %s is a BERT model: it reads e-mails (a file or a folder of them), not %s\n", dir,
            input);
    return 2;
  }
  return cli_bert_predict_files(dir, input) == 2 ? 0 : 1;
}
