/* test_vision.c - the image workflow around the CNN layers: training with on-the-fly
 * augmentation (deterministic under a seed, really applied, still learning), the config's
 * fit.augment and class_names (parsed, checked, saved), and the command line on pictures:
 * train writes its curves, evaluate its confusion matrix, predict classifies PNG files of
 * another size and colour, one by one and as a folder, and rejects a corrupt one.
 *
 * The task is synthetic and quick: 16x16 images holding one light bar on black, horizontal
 * (class 0) or vertical (class 1), at a random place and length. */
#include "cli_run.h"
#include "harness.h"
#include "tmpfiles.h"

#include <damo.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIDE 16

/* n images (n, SIDE, SIDE) U8 and labels (n) I32. */
static void make_bars(int64_t n, uint64_t seed, damo_tensor **x, damo_tensor **y) {
  const int64_t xs[] = {n, SIDE, SIDE}, ys[] = {n};
  *x = damo_tensor_new(DAMO_U8, 3, xs);
  *y = damo_tensor_new(DAMO_I32, 1, ys);
  damo_rng r;
  damo_rng_seed(&r, seed);
  uint8_t *px = (*x)->data;
  memset(px, 0, (size_t)(n * SIDE * SIDE));
  for (int64_t i = 0; i < n; i++) {
    int vertical = (int)damo_rng_below(&r, 2), len = 7 + (int)damo_rng_below(&r, 6);
    int at = 3 + (int)damo_rng_below(&r, SIDE - 6), from = 1 + (int)damo_rng_below(&r, (uint64_t)(SIDE - len - 1));
    for (int k = 0; k < len; k++)
      for (int t = 0; t < 2; t++) {
        int row = vertical ? from + k : at + t, col = vertical ? at + t : from + k;
        px[i * SIDE * SIDE + row * SIDE + col] = (uint8_t)(200 + damo_rng_below(&r, 56));
      }
    damo_tensor_i32(*y)[i] = vertical;
  }
}

static const char *bars_config =
    "{\"format\": \"damo.sequential\", \"input_shape\": [16, 16],"
    " \"layers\": [{\"type\": \"rescaling\", \"scale\": 0.00392156862745098},"
    "  {\"type\": \"reshape\", \"target_shape\": [16, 16, 1]},"
    "  {\"type\": \"conv2d\", \"filters\": 8, \"kernel_size\": 3, \"padding\": \"same\", \"activation\": \"relu\"},"
    "  {\"type\": \"max_pooling2d\", \"pool_size\": 2},"
    "  {\"type\": \"conv2d\", \"filters\": 8, \"kernel_size\": 3, \"padding\": \"same\", \"activation\": \"relu\"},"
    "  {\"type\": \"global_average_pooling2d\"}, {\"type\": \"dense\", \"units\": 2}],"
    " \"loss\": \"sparse_categorical_crossentropy\", \"optimizer\": {\"type\": \"adam\", \"learning_rate\": 0.01},"
    " \"metrics\": [\"accuracy\"], \"class_names\": [\"horizontal\", \"vertical\"],"
    " \"fit\": {\"epochs\": 6, \"batch_size\": 32, \"seed\": 5,"
    "  \"augment\": {\"max_shift\": 2, \"max_rotation_deg\": 5, \"zoom\": [0.9, 1.1], \"erase_prob\": 0.2}}}";

/* Trains the bars model from the config with its fit options (seed given) and returns
 * its predictions on xt; *acc gets the test accuracy. */
static damo_tensor *train_bars(const damo_tensor *x, const damo_tensor *y, const damo_tensor *xt,
                               const damo_tensor *yt, uint64_t seed, int augment, float *acc) {
  damo_model *m = NULL;
  damo_tensor *p = NULL;
  CHECK_MSG(damo_model_from_config_json(bars_config, "bars.json", &m) == DAMO_OK, "%s", damo_last_error());
  if (!m) return NULL;
  damo_compile_options c;
  damo_fit_options f = {.verbose = 0};
  CHECK(damo_model_config_compile_options(m, &c) == DAMO_OK);
  CHECK(damo_model_config_fit_options(m, &f) == DAMO_OK);
  CHECK(f.augment != NULL && f.augment->max_shift == 2 && f.augment->zoom_max > 1.09f);
  f.seed = seed;
  if (!augment) f.augment = NULL;
  CHECK(damo_model_build(m, 1) == DAMO_OK && damo_model_compile(m, &c) == DAMO_OK);
  CHECK_MSG(damo_model_fit(m, x, y, &f, NULL) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_model_evaluate(m, xt, yt, 100, NULL, acc) == DAMO_OK);
  CHECK(damo_model_predict(m, xt, 100, &p) == DAMO_OK);
  damo_model_free(m);
  return p;
}

static void test_augmented_fit(void) {
  damo_tensor *x, *y, *xt, *yt;
  make_bars(1200, 1, &x, &y);
  make_bars(300, 2, &xt, &yt);
  float acc1 = 0, acc2 = 0, acc3 = 0, acc4 = 0;
  damo_tensor *a = train_bars(x, y, xt, yt, 7, 1, &acc1), *b = train_bars(x, y, xt, yt, 7, 1, &acc2);
  damo_tensor *c = train_bars(x, y, xt, yt, 8, 1, &acc3), *d = train_bars(x, y, xt, yt, 7, 0, &acc4);
  fprintf(stderr, "  bars accuracy: augmented %.4f, seed 8 %.4f, plain %.4f\n", acc1, acc3, acc4);
  CHECK_MSG(acc1 > 0.9f, "augmented training reached only %.4f", acc1);
  /* the background thread's timing must not matter: same seed, same weights */
  CHECK(a && b && memcmp(a->data, b->data, damo_tensor_nbytes(a)) == 0);
  CHECK(acc1 == acc2);
  CHECK(c && memcmp(a->data, c->data, damo_tensor_nbytes(a)) != 0); /* another seed, other batches */
  CHECK(d && memcmp(a->data, d->data, damo_tensor_nbytes(a)) != 0); /* augmentation was applied */
  damo_tensor_free(a), damo_tensor_free(b), damo_tensor_free(c), damo_tensor_free(d);

  /* augmentation needs image-shaped inputs */
  const int64_t flat[] = {256};
  damo_model *m = damo_sequential_new(1, flat);
  damo_model_add(m, damo_dense(2, DAMO_ACT_NONE));
  damo_compile_options co = {.optimizer = damo_adam(1e-3f), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = 0};
  CHECK(damo_model_build(m, 1) == DAMO_OK && damo_model_compile(m, &co) == DAMO_OK);
  damo_augment_options aug = {.max_shift = 1};
  damo_fit_options f = {.epochs = 1, .verbose = 0, .augment = &aug};
  const int64_t s2[] = {1200, 256};
  damo_tensor *x2 = damo_tensor_wrap(DAMO_U8, 2, s2, x->data);
  CHECK(damo_model_fit(m, x2, y, &f, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(strstr(damo_last_error(), "augmentation needs image inputs"), "%s", damo_last_error());
  damo_tensor_free(x2);
  damo_model_free(m);
  damo_tensor_free(x), damo_tensor_free(y), damo_tensor_free(xt), damo_tensor_free(yt);
}

/* A config with one fit.augment entry replaced must fail naming it. */
static void expect_augment_error(const char *augment, const char *needle) {
  char json[2048];
  snprintf(json, sizeof json,
           "{\"input_shape\": [8, 8], \"layers\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 2}],"
           " \"fit\": {\"augment\": %s}}",
           augment);
  damo_model *m = NULL;
  damo_status st = damo_model_from_config_json(json, "aug.json", &m);
  CHECK_MSG(st == DAMO_ERR_FORMAT && strstr(damo_last_error(), "aug.json") && strstr(damo_last_error(), "fit.augment") &&
                strstr(damo_last_error(), needle),
            "%s -> %s", augment, damo_last_error());
  damo_model_free(m);
}

static void test_config_augment_and_class_names(void) {
  expect_augment_error("{\"flip_prob\": 1.5}", "flip_prob");
  expect_augment_error("{\"zoom\": [1.2, 0.8]}", "zoom");
  expect_augment_error("{\"max_shift\": -1}", "max_shift");
  expect_augment_error("{\"edge_fill\": \"mirror\"}", "edge_fill");
  expect_augment_error("{\"rotate\": 10}", "unknown key 'rotate'");
  expect_augment_error("{\"mean\": [0.5, 0.5], \"std\": [0.2, 0.2]}", "one number per input channel");
  expect_augment_error("{\"mean\": [0.5]}", "go together");
  expect_augment_error("[]", "must be an object");

  damo_model *m = NULL, *l = NULL;
  CHECK(damo_model_from_config_json(bars_config, "bars.json", &m) == DAMO_OK);
  const char *const *names;
  CHECK(damo_model_class_names(m, &names) == 2 && !strcmp(names[1], "vertical"));
  const char *renamed[] = {"flat", "upright"};
  CHECK(damo_model_set_class_names(m, 2, renamed) == DAMO_OK);
  CHECK(damo_model_save(m, tmp_path("bars_model")) == DAMO_OK);
  CHECK_MSG(damo_model_load(tmp_path("bars_model"), &l) == DAMO_OK, "%s", damo_last_error());
  CHECK(l && damo_model_class_names(l, &names) == 2 && !strcmp(names[0], "flat") && !strcmp(names[1], "upright"));
  damo_fit_options f = {0};
  CHECK(l && damo_model_config_fit_options(l, &f) == DAMO_OK && f.augment && f.augment->erase_prob > 0.19f);
  damo_model_free(m);
  damo_model_free(l);
  m = NULL;
  CHECK(damo_model_from_config_json("{\"input_shape\": [2], \"layers\": [{\"type\": \"dense\", \"units\": 2}],"
                                    " \"class_names\": [\"a\", 3]}",
                                    "names.json", &m) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(damo_last_error(), "class_names") && strstr(damo_last_error(), "entry 1"), "%s", damo_last_error());
  damo_model_free(m);
  /* fit.early_stopping becomes the fit options Keras' EarlyStopping would set */
  m = NULL;
  CHECK(damo_model_from_config_json("{\"input_shape\": [2], \"layers\": [{\"type\": \"dense\", \"units\": 2}],"
                                    " \"fit\": {\"early_stopping\": {\"monitor\": \"val_accuracy\", \"patience\": 3}}}",
                                    "es.json", &m) == DAMO_OK);
  damo_fit_options fe = {0};
  CHECK(m && damo_model_config_fit_options(m, &fe) == DAMO_OK && fe.patience == 3 && fe.restore_best_weights == 1 &&
        fe.monitor && !strcmp(fe.monitor, "val_accuracy"));
  damo_model_free(m);
  m = NULL;
  CHECK(damo_model_from_config_json("{\"input_shape\": [2], \"layers\": [{\"type\": \"dense\", \"units\": 2}],"
                                    " \"fit\": {\"early_stopping\": {\"patience\": 0}}}",
                                    "es.json", &m) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(damo_last_error(), "fit.early_stopping") && strstr(damo_last_error(), "patience"), "%s",
            damo_last_error());
  damo_model_free(m);
  const char *const *fm;
  CHECK(damo_dataset_class_names("fashion-mnist", &fm) == 10 && !strcmp(fm[7], "Sneaker"));
  CHECK(damo_dataset_class_names("nope", &fm) == 0 && fm == NULL);
}

/* ------------------------------------------------------------------ the command line */



/* A photo-like picture: a dark bar on a light (white-ish) RGB background, h x w. */
static void write_bar_png(const char *path, int h, int w, int vertical) {
  const int64_t shape[] = {h, w, 3};
  damo_tensor *img = damo_tensor_new(DAMO_F32, 3, shape);
  float *p = damo_tensor_f32(img);
  for (int64_t i = 0; i < (int64_t)h * w; i++) p[3 * i] = 245, p[3 * i + 1] = 240, p[3 * i + 2] = 230;
  for (int r = 0; r < h; r++)
    for (int c = 0; c < w; c++) {
      int on = vertical ? (c >= w / 2 - w / 14 && c <= w / 2 + w / 14 && r > h / 5 && r < 4 * h / 5)
                        : (r >= h / 2 - h / 14 && r <= h / 2 + h / 14 && c > w / 5 && c < 4 * w / 5);
      if (on) p[3 * (r * w + c)] = 30, p[3 * (r * w + c) + 1] = 25, p[3 * (r * w + c) + 2] = 40;
    }
  CHECK(damo_image_save_png(path, img) == DAMO_OK);
  damo_tensor_free(img);
}

static void test_cli_pictures(void) {
  damo_tensor *x, *y, *xt, *yt;
  make_bars(1200, 3, &x, &y);
  make_bars(300, 4, &xt, &yt);
  CHECK(damo_npy_save(tmp_path("x.npy"), x) == DAMO_OK && damo_npy_save(tmp_path("y.npy"), y) == DAMO_OK);
  CHECK(damo_npy_save(tmp_path("xt.npy"), xt) == DAMO_OK && damo_npy_save(tmp_path("yt.npy"), yt) == DAMO_OK);
  write_bytes(tmp_path("bars.json"), bars_config, strlen(bars_config));
  int rc = run("%s train --config %s --data %s,%s --out %s", DAMO_CLI_PATH, tmp_path("bars.json"), tmp_path("x.npy"),
               tmp_path("y.npy"), tmp_path("cli_model"));
  CHECK_MSG(rc == 0 && strstr(cli_out, "augmented on the fly") && strstr(cli_out, "history.png"), "%s", cli_out);
  damo_tensor *curves = NULL;
  CHECK_MSG(damo_image_load(tmp_path("cli_model/history.png"), 0, &curves) == DAMO_OK, "%s", damo_last_error());
  CHECK(curves && curves->shape[1] > 300);
  damo_tensor_free(curves);

  rc = run("%s evaluate --model %s --data %s,%s", DAMO_CLI_PATH, tmp_path("cli_model"), tmp_path("xt.npy"),
           tmp_path("yt.npy"));
  CHECK_MSG(rc == 0 && strstr(cli_out, "vertical") && strstr(cli_out, "confusion matrix written"), "%s", cli_out);
  damo_tensor *cm = NULL;
  CHECK(damo_image_load(tmp_path("cli_model/confusion.png"), 0, &cm) == DAMO_OK);
  damo_tensor_free(cm);

  /* pictures of another size and colour, dark on light: converted like the training data */
  char folder[600];
  snprintf(folder, sizeof folder, "%s", tmp_path("pictures"));
  CHECK(mkdir(folder, 0755) == 0);
  write_bar_png(tmp_path("pictures/a_upright.png"), 90, 60, 1);
  write_bar_png(tmp_path("pictures/b_flat.png"), 50, 120, 0);
  rc = run("%s predict --model %s --input %s", DAMO_CLI_PATH, tmp_path("cli_model"), tmp_path("pictures/a_upright.png"));
  CHECK_MSG(rc == 0 && strstr(cli_out, "a_upright.png: vertical"), "%s", cli_out);
  rc = run("%s predict --model %s --input %s --top 2", DAMO_CLI_PATH, tmp_path("cli_model"), folder);
  CHECK_MSG(rc == 0 && strstr(cli_out, "a_upright.png: vertical") && strstr(cli_out, "b_flat.png: horizontal") &&
                strstr(cli_out, ", horizontal"),
            "%s", cli_out);
  write_bytes(tmp_path("pictures/c_broken.png"), "\x89PNG\r\n\x1a\nnot really", 18);
  rc = run("%s predict --model %s --input %s", DAMO_CLI_PATH, tmp_path("cli_model"), tmp_path("pictures/c_broken.png"));
  CHECK_MSG(rc == 1 && strstr(cli_out, "c_broken.png"), "%s", cli_out);
  rc = run("%s predict --model %s --input %s", DAMO_CLI_PATH, tmp_path("cli_model"), tmp_path("pictures/none.png"));
  CHECK_MSG(rc == 1 && strstr(cli_out, "none.png"), "%s", cli_out);
  damo_tensor_free(x), damo_tensor_free(y), damo_tensor_free(xt), damo_tensor_free(yt);
}

int main(void) {
  tmpdir_template("vision");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(test_augmented_fit);
  RUN(test_config_augment_and_class_names);
  RUN(test_cli_pictures);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (!test_failed && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return test_summary("vision");
}
