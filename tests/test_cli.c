/* test_cli.c - the damo command end to end on a small CSV problem it generates: train,
 * evaluate, predict, summary and export, plus the exit codes and messages of bad input. */
#include "cli_run.h"
#include "harness.h"

#include <damo.h>
#include <sys/stat.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/damo_cli_XXXXXX";


static void write_file(const char *name, const char *text) { cli_write_file(dir, name, text); }

/* Two Gaussian blobs per class in 4-D: separable, so a tiny MLP gets it right. */
static void write_csv(const char *name, int rows, uint64_t seed) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (!f) return;
  damo_rng r;
  damo_rng_seed(&r, seed);
  fprintf(f, "f0,f1,f2,f3,label\n");
  for (int i = 0; i < rows; i++) {
    int c = (int)damo_rng_below(&r, 3);
    for (int k = 0; k < 4; k++) fprintf(f, "%.4f,", (k == c ? 3.0 : 0.0) + 0.5 * damo_rng_normal(&r));
    fprintf(f, "%d\n", c);
  }
  fclose(f);
}

static void test_train_evaluate_predict(void) {
  write_csv("train.csv", 600, 1);
  write_csv("test.csv", 200, 2);
  write_file("model.json", "{\"input_shape\":[4],\"layers\":[{\"type\":\"dense\",\"units\":16,\"activation\":\"relu\"},"
                           "{\"type\":\"dense\",\"units\":3,\"activation\":\"softmax\"}],"
                           "\"optimizer\":{\"type\":\"adam\",\"learning_rate\":0.01},\"metrics\":[\"accuracy\"]}");
  int rc = run("%s train --config %s/model.json --data %s/train.csv --epochs 8 --batch-size 32 --seed 3 --out %s/m",
               DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 0, "%s", cli_out);
  CHECK_MSG(strstr(cli_out, "damo ") && strstr(cli_out, "simd:") && strstr(cli_out, "threads:"), "first line: %s", cli_out);
  CHECK_MSG(strstr(cli_out, "Epoch 8/8") && !strchr(cli_out, '\r'), "%s", cli_out); /* a pipe gets plain lines */
  rc = run("%s evaluate --model %s/m --data %s/test.csv", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 0, "%s", cli_out);
  const char *acc_at = strstr(cli_out, "accuracy: ");
  double acc = acc_at ? atof(acc_at + 10) : -1.0;
  CHECK_MSG(acc > 0.95, "%s", cli_out);
  /* export the test CSV to .npy, predict, and the accuracy must match evaluate's */
  rc = run("%s export --data %s/test.csv --x %s/x.npy --y %s/y.npy", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 0, "%s", cli_out);
  char expected[32];
  snprintf(expected, sizeof expected, "accuracy: %.4f", acc);
  rc = run("%s predict --model %s/m --input %s/x.npy --labels %s/y.npy --output %s/p.npy", DAMO_CLI_PATH, dir, dir, dir,
           dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, expected), "expected '%s' in: %s", expected, cli_out);
  char path[512];
  snprintf(path, sizeof path, "%s/p.npy", dir);
  damo_tensor *p = NULL;
  CHECK(damo_npy_load(path, &p) == DAMO_OK && p->shape[0] == 200 && p->shape[1] == 3);
  /* bf16 matmul operands: the same probabilities to bf16's precision, not bit for bit */
  rc = run("%s predict --model %s/m --input %s/x.npy --output %s/p16.npy --precision bf16", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 0, "%s", cli_out);
  snprintf(path, sizeof path, "%s/p16.npy", dir);
  damo_tensor *p16 = NULL;
  CHECK(damo_npy_load(path, &p16) == DAMO_OK);
  if (p && p16 && damo_tensor_numel(p16) == damo_tensor_numel(p)) {
    double worst = 0;
    for (int64_t i = 0; i < damo_tensor_numel(p); i++)
      worst = fmax(worst, fabs(damo_tensor_f32(p16)[i] - damo_tensor_f32(p)[i]));
    CHECK_MSG(worst > 0 && worst < 0.02, "bf16 probabilities up to %g from f32's", worst);
  }
  damo_tensor_free(p16);
  damo_tensor_free(p);
  /* A CSV scores directly: with its label column it is also measured, without one it is
   * just scored (it was refused). */
  rc = run("%s predict --model %s/m --input %s/test.csv", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, expected), "expected '%s' in: %s", expected, cli_out);
  write_file("unlabelled.csv", "f0,f1,f2,f3\n3.1,0.2,-0.1,0.3\n0.1,0.2,2.9,0.1\n");
  rc = run("%s predict --model %s/m --input %s/unlabelled.csv", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 0 && !strstr(cli_out, "accuracy") && strchr(cli_out, '\n') && strchr(strchr(cli_out, '\n') + 1, '\n'),
            "%s", cli_out);
  rc = run("%s summary --model %s/m", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "Total params: 131"), "%s", cli_out);
  snprintf(path, sizeof path, "%s/m/history.csv", dir);
  FILE *f = fopen(path, "r");
  int lines = 0;
  char line[256];
  while (f && fgets(line, sizeof line, f)) lines++;
  if (f) fclose(f);
  CHECK(lines == 9);
}

/* issue 23: damo quantize on the model above; the int8 directory evaluates, predicts and
 * summarises as any other; what it refuses. */
static void test_quantize(void) {
  int rc = run("%s quantize --model %s/m --out %s/mq --data %s/train.csv --method percentile --evaluate", DAMO_CLI_PATH,
               dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "dense_1                  int8") && strstr(cli_out, "test accuracy: f32 ") &&
                strstr(cli_out, "percentile calibration on 600 training examples"),
            "%s", cli_out);
  rc = run("%s evaluate --model %s/m --data %s/test.csv", DAMO_CLI_PATH, dir, dir);
  const char *at = strstr(cli_out, "accuracy: ");
  const double acc32 = at ? atof(at + 10) : -1;
  rc = run("%s evaluate --model %s/mq --data %s/test.csv", DAMO_CLI_PATH, dir, dir);
  at = strstr(cli_out, "accuracy: ");
  const double acc8 = at ? atof(at + 10) : -1;
  CHECK_MSG(rc == 0 && acc32 > 0.9 && fabs(acc8 - acc32) <= 0.02, "f32 %.4f int8 %.4f: %s", acc32, acc8, cli_out);
  rc = run("%s predict --model %s/mq --input %s/x.npy --labels %s/y.npy", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "accuracy: "), "%s", cli_out);
  rc = run("%s summary --model %s/mq", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "Int8 layers: dense_1, dense_2"), "%s", cli_out);
  /* Q1's damo side: the test split predicted whole; its accuracy is evaluate's. */
  rc = run("%s bench predict --model %s/mq --data %s/test.csv --repeats 2", DAMO_CLI_PATH, dir, dir);
  at = strstr(cli_out, "\"accuracy\": ");
  CHECK_MSG(rc == 0 && strstr(cli_out, "\"int8\": true") && strstr(cli_out, "\"examples\": 200") && at &&
                fabs(atof(at + 12) - acc8) < 1e-4,
            "%s", cli_out);
  /* Refused, with the reason, and nothing written. */
  rc = run("%s quantize --model %s/mq --out %s/mq2 --data %s/train.csv", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "already int8-quantised"), "%s", cli_out);
  rc = run("%s quantize --model %s/m --out %s/m --data %s/train.csv", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "own directory"), "%s", cli_out);
  rc = run("%s quantize --model %s/m --out %s/mq3 --data %s/train.csv --method fancy", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "minmax, percentile or histogram"), "%s", cli_out);
  rc = run("%s quantize --model %s/m --out %s/mq3 --dynamic --method minmax", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "do not apply"), "%s", cli_out);
  rc = run("%s quantize --model %s/m --out %s/mq3", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--dynamic"), "%s", cli_out);
  rc = run("%s quantize --model %s/m --out %s/mq3 --data %s/test.csv --calibration 0", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--calibration"), "%s", cli_out);
  char path[512];
  snprintf(path, sizeof path, "%s/mq3", dir);
  struct stat st;
  CHECK(stat(path, &st) != 0);
  rc = run("%s quantize --model %s/m --out %s/mq4 --dynamic", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "dynamic activations"), "%s", cli_out);
}

/* issue 23: damo distill from the model above into a smaller student; what it refuses. */
static void test_distill(void) {
  write_file("student.json", "{\"input_shape\":[4],\"layers\":[{\"type\":\"dense\",\"units\":4,\"activation\":\"relu\"},"
                             "{\"type\":\"dense\",\"units\":3}],\"loss\":\"sparse_categorical_crossentropy\","
                             "\"optimizer\":{\"type\":\"adam\",\"learning_rate\":0.02},\"metrics\":[\"accuracy\"]}");
  int rc = run("%s distill --teacher %s/m --student %s/student.json --data %s/train.csv --temperature 2 --alpha 0.7 "
               "--epochs 8 --batch-size 32 --out %s/s",
               DAMO_CLI_PATH, dir, dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "temperature 2, alpha 0.7") && strstr(cli_out, "Epoch 8/8"), "%s", cli_out);
  rc = run("%s evaluate --model %s/s --data %s/test.csv", DAMO_CLI_PATH, dir, dir);
  const char *acc_at = strstr(cli_out, "accuracy: ");
  CHECK_MSG(rc == 0 && acc_at && atof(acc_at + 10) > 0.9, "%s", cli_out);
  /* Refused, with the reason, and no student written. */
  rc = run("%s distill --teacher %s/m --student %s/student.json --data %s/train.csv --alpha 1.5 --out %s/s2",
           DAMO_CLI_PATH, dir, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--alpha"), "%s", cli_out);
  rc = run("%s distill --teacher %s/m --student %s/student.json --data %s/train.csv --temperature 0 --out %s/s2",
           DAMO_CLI_PATH, dir, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--temperature"), "%s", cli_out);
  rc = run("%s distill --teacher %s/no-such-model --student %s/student.json --data %s/train.csv --out %s/s2",
           DAMO_CLI_PATH, dir, dir, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "no-such-model"), "%s", cli_out);
  write_file("student4.json", "{\"input_shape\":[4],\"layers\":[{\"type\":\"dense\",\"units\":4}],"
                              "\"loss\":\"sparse_categorical_crossentropy\",\"optimizer\":{\"type\":\"adam\"}}");
  rc = run("%s distill --teacher %s/m --student %s/student4.json --data %s/train.csv --out %s/s2", DAMO_CLI_PATH, dir,
           dir, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "teacher predicts 3 classes, the student 4"), "%s", cli_out);
  char path[512];
  snprintf(path, sizeof path, "%s/s2/model.safetensors", dir);
  struct stat st;
  CHECK(stat(path, &st) != 0);
  /* A student config that augments keeps its augmentation and the teacher scores each view:
   * 6 x 5 images whose class says which half is brighter, every view flipped (flip_prob 1,
   * so its class is the opposite of its row's), soft targets alone (alpha 1). Taught on the
   * views, the student gets the flipped images right. */
  enum { IMAGES = 400, H = 6, W = 5 };
  const int64_t xs[] = {IMAGES, H, W}, ys[] = {IMAGES};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 3, xs), *flipped = damo_tensor_new(DAMO_F32, 3, xs);
  damo_tensor *y = damo_tensor_new(DAMO_I32, 1, ys), *y_flipped = damo_tensor_new(DAMO_I32, 1, ys);
  uint64_t r = 99;
  for (int i = 0; i < IMAGES; i++) {
    float *img = damo_tensor_f32(x) + i * H * W, left = 0, right = 0;
    for (int p = 0; p < H * W; p++) {
      r = r * 6364136223846793005ULL + 1442695040888963407ULL;
      img[p] = (float)(r >> 40) / (float)(1 << 24);
      if (p % W < W / 2) left += img[p];
      if (p % W > W / 2) right += img[p];
    }
    ((int32_t *)y->data)[i] = left > right, ((int32_t *)y_flipped->data)[i] = left <= right;
    for (int p = 0; p < H * W; p++) damo_tensor_f32(flipped)[i * H * W + p] = img[p - p % W + (W - 1 - p % W)];
  }
  const char *names[4] = {"img_x.npy", "img_y.npy", "flip_x.npy", "flip_y.npy"};
  const damo_tensor *arrays[4] = {x, y, flipped, y_flipped};
  for (int k = 0; k < 4; k++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[k]);
    CHECK(damo_npy_save(path, arrays[k]) == DAMO_OK);
  }
  const char *mlp = "{\"input_shape\":[6,5],\"layers\":[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":12,"
                    "\"activation\":\"relu\"},{\"type\":\"dense\",\"units\":2}],\"loss\":"
                    "\"sparse_categorical_crossentropy\",\"optimizer\":{\"type\":\"adam\",\"learning_rate\":0.01},"
                    "\"metrics\":[\"accuracy\"]%s}";
  char config[1024];
  snprintf(config, sizeof config, mlp, "");
  write_file("img_teacher.json", config);
  snprintf(config, sizeof config, mlp, ",\"fit\":{\"augment\":{\"flip_prob\":1}}");
  write_file("img_student.json", config);
  rc = run("%s train --config %s/img_teacher.json --data %s/img_x.npy,%s/img_y.npy --epochs 40 --batch-size 50 "
           "--out %s/it", DAMO_CLI_PATH, dir, dir, dir, dir);
  CHECK_MSG(rc == 0, "%s", cli_out);
  rc = run("%s distill --teacher %s/it --student %s/img_student.json --data %s/img_x.npy,%s/img_y.npy --alpha 1 "
           "--temperature 2 --epochs 15 --batch-size 50 --out %s/is", DAMO_CLI_PATH, dir, dir, dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "augmented on the fly"), "%s", cli_out);
  rc = run("%s evaluate --model %s/is --data %s/flip_x.npy,%s/flip_y.npy", DAMO_CLI_PATH, dir, dir, dir);
  acc_at = strstr(cli_out, "accuracy: ");
  CHECK_MSG(rc == 0 && acc_at && atof(acc_at + 10) > 0.85, "%s", cli_out);
  damo_tensor_free(x), damo_tensor_free(flipped), damo_tensor_free(y), damo_tensor_free(y_flipped);
}

/* issue 23: damo prune of the model above; what it refuses. */
static void test_prune(void) {
  int rc = run("%s prune --model %s/m --out %s/p --data %s/train.csv --sparsity 0.5 --epochs 2 --verbose 0", DAMO_CLI_PATH,
               dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "all kernels") && strstr(cli_out, "(50.0%)"), "%s", cli_out);
  rc = run("%s evaluate --model %s/p --data %s/test.csv", DAMO_CLI_PATH, dir, dir);
  const char *acc_at = strstr(cli_out, "accuracy: ");
  CHECK_MSG(rc == 0 && acc_at && atof(acc_at + 10) > 0.9, "%s", cli_out);
  rc = run("%s prune --model %s/m --out %s/p2 --data %s/train.csv --sparsity 1.2", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--sparsity"), "%s", cli_out);
  rc = run("%s prune --model %s/m --out %s/m --data %s/train.csv --sparsity 0.5", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "own directory"), "%s", cli_out);
  rc = run("%s prune --model %s/m --out %s/p2 --data %s/train.csv --sparsity 0.5 --schedule sometimes", DAMO_CLI_PATH,
           dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "gradual or oneshot"), "%s", cli_out);
  rc = run("%s prune --model %s/m --data %s/train.csv --sweep 0.9,0.5", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "increasing"), "%s", cli_out);
  char path[512];
  snprintf(path, sizeof path, "%s/p2", dir);
  struct stat st;
  CHECK(stat(path, &st) != 0);
  /* make bench P's kernel rows: the sparse convolution measured against the dense one, and agreeing */
  rc = run("%s bench sparse-conv 2 9 9 3 3 5", DAMO_CLI_PATH);
  const char *diff = strstr(cli_out, "\"max_abs_diff\": ");
  int levels = 0;
  for (const char *at = cli_out; (at = strstr(at, "\"speedup\": ")); at++) levels++;
  CHECK_MSG(rc == 0 && levels == 7 && strstr(cli_out, "first_faster_at") && diff && atof(diff + 16) < 1e-4, "%s", cli_out);
  rc = run("%s bench sparse-conv 2 9 9 3 0 5", DAMO_CLI_PATH);
  CHECK_MSG(rc == 2 && strstr(cli_out, "six positive sizes"), "%s", cli_out);
}

static void test_bad_input_messages(void) {
  write_file("bad.json", "{\"input_shape\":[4],\"layers\":[{\"type\":\"dense\",\"units\":3},{\"type\":\"lstmz\"}]}");
  int rc = run("%s train --config %s/bad.json --data %s/train.csv", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "bad.json") && strstr(cli_out, "layer 1") && strstr(cli_out, "lstmz"), "%s", cli_out);
  rc = run("%s train --config %s/model.json --data no-such-data-set", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "no-such-data-set") && strstr(cli_out, "fashion-mnist"), "%s", cli_out);
  write_file("labels.csv", "a,b,c,d,label\n1,2,3,4,0\n1,2,3,4,7\n");
  rc = run("%s train --config %s/model.json --data %s/labels.csv --epochs 1", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "7") && strstr(cli_out, "label"), "%s", cli_out);
  rc = run("%s train --config %s/model.json --data %s/train.csv --epochz 3", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--epochz"), "%s", cli_out);
  rc = run("%s predict --model %s/nothing --input x.npy", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "config.json"), "%s", cli_out);
  rc = run("%s frobnicate", DAMO_CLI_PATH);
  CHECK(rc == 2);
  /* Messages say each context once: not "damo: predict: predict: ..." nor "layer 0 (...): layer 'x': ...". */
  rc = run("%s predict --model %s/m --input %s/f4_2x3.npy", DAMO_CLI_PATH, dir, DAMO_SOURCE_DIR "/tests/fixtures/npy");
  CHECK_MSG(rc == 1 && strstr(cli_out, "damo: predict: x has shape (2, 3), the model expects (N, 4)\n"), "%s", cli_out);
  write_file("lstm.json", "{\"input_shape\": [6], \"layers\": [{\"type\": \"lstm\", \"name\": \"lstm_1\", \"units\": 4}]}");
  rc = run("%s summary --config %s/lstm.json", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "layer 0 ('lstm_1', lstm): lstm needs (timesteps, features) inputs, got (6,)"),
            "%s", cli_out);
  /* An out-of-range number says which option, its range and the value (it printed nothing). */
  static const char *const bad_lr[] = {"0", "-1", "abc"};
  for (int i = 0; i < 3; i++) {
    rc = run("%s train --config %s/model.json --data %s/train.csv --lr %s", DAMO_CLI_PATH, dir, dir, bad_lr[i]);
    CHECK_MSG(rc == 2 && strstr(cli_out, "--lr must be a number in (0, inf)") && strstr(cli_out, bad_lr[i]), "%s", cli_out);
  }
  rc = run("%s train --config=%s/model.json --data=%s/train.csv --lr=-1", DAMO_CLI_PATH, dir, dir); /* --opt=value */
  CHECK_MSG(rc == 2 && strstr(cli_out, "--lr must be a number in (0, inf), got '-1'"), "%s", cli_out);
  rc = run("%s train --config %s/model.json --data %s/train.csv --validation-split 1", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--validation-split must be a number in [0, 0.99]"), "%s", cli_out);
  /* Every source --data takes is listed; the header counts what trains; --patience without
   * validation data warns. */
  rc = run("%s train --config %s/model.json --data no-such-data-set", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "spam-assassin") && strstr(cli_out, "moby-dick") && strstr(cli_out, "CSV"), "%s",
            cli_out);
  rc = run("%s train --config %s/model.json --data %s/train.csv --epochs 1 --validation-split 0.25 --out %s/vs",
           DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "training on 450 examples (150 more for validation)"), "%s", cli_out);
  rc = run("%s train --config %s/model.json --data %s/train.csv --epochs 1 --patience 1 --out %s/vs2", DAMO_CLI_PATH,
           dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "warning: --patience 1 watches the validation loss"), "%s", cli_out);
}

/* predict of the folder new/ (mails 116-119) with the model in dir/model: the lines for a ham
 * and a spam mail as expected; a missing file is an error naming it. */
static void check_predict_folder(const char *model, const char *ham_line, const char *spam_line) {
  int rc = run("%s predict --model %s/%s --input %s/new", DAMO_CLI_PATH, dir, model, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, ham_line) && strstr(cli_out, spam_line), "%s", cli_out);
  rc = run("%s predict --model %s/%s --input %s/new/nothing.txt", DAMO_CLI_PATH, dir, model, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "nothing.txt"), "%s", cli_out);
}

/* Mail i of a generated set: labelled ones (i < labelled) go to folder/ham or folder/spam
 * (odd i is spam), the rest to held_out/ for predict. Creates the folders on the first call. */
static FILE *open_mail(const char *folder, const char *held_out, int i, int labelled) {
  char path[600];
  if (i == 0) {
    snprintf(path, sizeof path, "mkdir -p %s/%s/ham %s/%s/spam %s/%s", dir, folder, dir, folder, dir, held_out);
    if (system(path) != 0) return NULL;
  }
  snprintf(path, sizeof path, "%s/%s/%s/%03d.txt", dir, i < labelled ? folder : held_out,
           i < labelled ? (i % 2 ? "spam" : "ham") : "", i);
  return fopen(path, "w");
}

/* A labelled folder of e-mails (ham/, spam/) drawn from two word pools: train, evaluate,
 * and predict on raw mail files through the saved vocabulary. */
static void test_text_folder_train_predict(void) {
  static const char *const ham_words[] = {"meeting", "project", "lunch", "report", "schedule", "team", "review", "notes"};
  static const char *const spam_words[] = {"winner", "free", "cash", "offer", "click", "viagra", "prize", "credit"};
  damo_rng r;
  damo_rng_seed(&r, 11);
  for (int i = 0; i < 120; i++) {
    const char *const *pool = i % 2 ? spam_words : ham_words;
    FILE *f = open_mail("mails", "new", i, 116);
    if (!f) {
      CHECK_MSG(0, "cannot write mail %d", i);
      return;
    }
    fprintf(f, "From: someone%d@example.com\nSubject: %s %s\n\n", i, pool[damo_rng_below(&r, 8)],
            pool[damo_rng_below(&r, 8)]);
    for (int w = 0; w < 12 + (int)damo_rng_below(&r, 20); w++) /* a few shared words blur the line */
      fprintf(f, "%s ", damo_rng_below(&r, 4) ? pool[damo_rng_below(&r, 8)] : "the");
    fprintf(f, "\n");
    fclose(f);
  }
  write_file("text.json", "{\"input_shape\": [24], \"layers\": ["
                          "{\"type\": \"embedding\", \"input_dim\": 40, \"output_dim\": 8, \"mask_zero\": true},"
                          "{\"type\": \"lstm\", \"units\": 8}, {\"type\": \"dense\", \"units\": 1, \"activation\": \"sigmoid\"}],"
                          "\"loss\": \"binary_crossentropy\", \"optimizer\": {\"type\": \"adam\", \"learning_rate\": 0.02},"
                          "\"metrics\": [\"accuracy\"], \"fit\": {\"epochs\": 8, \"batch_size\": 16, \"seed\": 1}}");
  int rc = run("%s train --config %s/text.json --data %s/mails --out %s/tm", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "116 documents read") && strstr(cli_out, "f1: "), "%s", cli_out);
  char vocab[600];
  snprintf(vocab, sizeof vocab, "%s/tm/vocab.txt", dir);
  CHECK(access(vocab, R_OK) == 0);
  rc = run("%s evaluate --model %s/tm --data %s/mails", DAMO_CLI_PATH, dir, dir);
  const char *acc_at = strstr(cli_out, "accuracy: ");
  CHECK_MSG(rc == 0 && acc_at && atof(acc_at + 10) >= 0.9 && strstr(cli_out, "spam"), "%s", cli_out);
  rc = run("%s predict --model %s/tm --input %s/new/117.txt", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "117.txt: spam 0."), "%s", cli_out);
  check_predict_folder("tm", "116.txt: ham", "119.txt: spam");
  /* int8 (dynamic: embedding table, LSTM kernels, dense), scored on the same test split */
  rc = run("%s quantize --model %s/tm --out %s/tm8 --dynamic --evaluate --data %s/mails", DAMO_CLI_PATH, dir, dir, dir);
  const char *f1_at = strstr(cli_out, "test f1: f32 ");
  CHECK_MSG(rc == 0 && f1_at && strstr(cli_out, "int8 table") && fabs(atof(f1_at + 13) - atof(strstr(f1_at, "int8 ") + 5)) <= 0.05,
            "%s", cli_out);
  rc = run("%s predict --model %s/tm8 --input %s/new/117.txt", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "117.txt: spam 0."), "%s", cli_out);
  /* A picture given to a text model is refused, not cleaned as an e-mail and scored. */
  write_file("pic.png", "\x89PNG\r\n\x1a\n");
  rc = run("%s predict --model %s/tm --input %s/pic.png", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "pic.png is a picture, and this model reads text"), "%s", cli_out);
}

/* BERT on the same folder of mails, with a small vocabulary: masked-LM pre-training, then
 * fine-tuning from it; the fine-tuned directory keeps its length (tokenizer_config.json) and
 * evaluate / predict read it. */
static void test_bert_folder_train_predict(void) {
  write_file("bert_vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nfrom\nsubject\n:\n.\n@\nmeeting\nproject\n"
                               "lunch\nreport\nschedule\nteam\nreview\nnotes\nwinner\nfree\ncash\noffer\nclick\n"
                               "via\n##gra\nprize\ncredit\nsomeone\nexample\ncom\n");
  write_file("bert.json", "{\"model_type\": \"bert\", \"vocab_size\": 40, \"hidden_size\": 32, \"num_hidden_layers\": 2,"
                          "\"num_attention_heads\": 4, \"intermediate_size\": 64, \"max_position_embeddings\": 64,"
                          "\"pretrain\": {\"steps\": 20, \"batch_size\": 8, \"seq_len\": 32, \"predictions\": 6,"
                          "\"lr\": 0.002, \"warmup_steps\": 5, \"eval_every\": 10},"
                          "\"finetune\": {\"epochs\": 6, \"batch_size\": 16, \"seq_len\": 20, \"lr\": 0.003,"
                          "\"warmup_steps\": 5, \"seed\": 3, \"log_every\": 2}}");
  int rc = run("%s train --config %s/bert.json --pretrain --data %s/mails --vocab %s/bert_vocab.txt --out %s/bp"
               " --predictions 5 --warmup-steps 4",
               DAMO_CLI_PATH, dir, dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "step     20 | val loss") && strstr(cli_out, "5 slots") &&
                strstr(cli_out, "warm-up 4"), "%s", cli_out);
  /* Options of the other stage are refused, not ignored. */
  rc = run("%s train --config %s/bert.json --pretrain --data %s/mails --vocab %s/bert_vocab.txt --out %s/bx"
           " --head-tokens 3", DAMO_CLI_PATH, dir, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--head-tokens is for fine-tuning"), "%s", cli_out);
  rc = run("%s train --config %s/bert.json --data %s/mails --vocab %s/bert_vocab.txt --out %s/bx --predictions 3",
           DAMO_CLI_PATH, dir, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--predictions is for --pretrain"), "%s", cli_out);
  rc = run("%s train --config %s/bert.json --data %s/mails --vocab %s/bert_vocab.txt --init %s/bp --out %s/bs --seq-len 24",
           DAMO_CLI_PATH, dir, dir, dir, dir, dir);
  const char *f1_at = strstr(cli_out, "test (weights of epoch");
  f1_at = f1_at ? strstr(f1_at, "F1 ") : NULL;
  CHECK_MSG(rc == 0 && strstr(cli_out, "from the pre-trained weights") && f1_at && atof(f1_at + 3) >= 0.8, "%s", cli_out);
  /* Off a terminal, progress comes every log_every steps as lines of their own. */
  CHECK_MSG(strstr(cli_out, "epoch 1/6     2/") && strstr(cli_out, "epoch 1/6     4/") && !strchr(cli_out, '\r'), "%s",
            cli_out);
  /* Output to a pipe: one progress line per epoch, no carriage returns. */
  CHECK_MSG(!strchr(cli_out, '\r') && strstr(cli_out, "epoch 6/6 "), "%s", cli_out);
  char path[600];
  snprintf(path, sizeof path, "%s/bs/tokenizer_config.json", dir);
  FILE *f = fopen(path, "r");
  char text[512] = {0};
  if (f) {
    if (fread(text, 1, sizeof text - 1, f) == 0) text[0] = '\0';
    fclose(f);
  }
  CHECK_MSG(strstr(text, "\"model_max_length\": 24"), "%s: %s", path, text);
  rc = run("%s evaluate --model %s/bs --data %s/mails --confusion-png %s/bs_cm.png", DAMO_CLI_PATH, dir, dir, dir);
  const char *acc_at = strstr(cli_out, "accuracy: ");
  CHECK_MSG(rc == 0 && acc_at && atof(acc_at + 10) >= 0.8 && strstr(cli_out, "BERT at length 24") &&
                strstr(cli_out, "1 spam"), "%s", cli_out);
  rc = run("%s evaluate --model %s/bs --data %s/mails --split validation", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "accuracy: "), "%s", cli_out);
  check_predict_folder("bs", "116.txt: ham 0.", "119.txt: spam 0.");
  /* static int8: calibrated on the training mails, read as the model was trained (length 24) */
  rc = run("%s quantize --model %s/bs --out %s/bs8 --data %s/mails --method minmax --evaluate", DAMO_CLI_PATH, dir, dir,
           dir);
  acc_at = strstr(cli_out, "int8 (");
  acc_at = acc_at ? strstr(acc_at, "accuracy: ") : NULL;
  CHECK_MSG(rc == 0 && strstr(cli_out, "static int8, 13 products") && strstr(cli_out, "(minmax) on ") && acc_at &&
                atof(acc_at + 10) >= 0.8 && strstr(acc_at, "BERT at length 24, int8"), "%s", cli_out);
  check_predict_folder("bs8", "116.txt: ham 0.", "119.txt: spam 0.");
  /* BERT teaching the LSTM text model: each reads the mails its own way (WordPiece, vocab.txt) */
  rc = run("%s distill --teacher %s/bs --student %s/text.json --data %s/mails --out %s/kd --alpha 1", DAMO_CLI_PATH, dir,
           dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "BERT teacher") && (acc_at = strstr(cli_out, "test_accuracy: ")) && atof(acc_at + 15) >= 0.8, "%s", cli_out);
}

/* Mails whose class shows only in their last words: a BERT that sees the first tokens only
 * cannot tell them apart, one fine-tuned with head+tail truncation (--head-tokens) can, and
 * evaluate and predict cut texts the way it was trained (tokenizer_config.json). */
static void test_bert_head_tail_truncation(void) {
  static const char *const filler[] = {"the", "notes", "team", "review", "project", "schedule"};
  static const char *const ham_end[] = {"lunch", "meeting", "report"}, *const spam_end[] = {"free", "cash", "prize"};
  damo_rng r;
  damo_rng_seed(&r, 5);
  for (int i = 0; i < 162; i++) {
    const int spam = i % 2;
    FILE *f = open_mail("tails", "tails_new", i, 160);
    if (!f) {
      CHECK_MSG(0, "cannot write mail %d", i);
      return;
    }
    fprintf(f, "Subject: notes\n\n");
    for (int w = 0; w < 30 + (int)damo_rng_below(&r, 10); w++) fprintf(f, "%s ", filler[damo_rng_below(&r, 6)]);
    for (int w = 0; w < 3; w++) fprintf(f, "%s ", (spam ? spam_end : ham_end)[damo_rng_below(&r, 3)]);
    fprintf(f, "\n");
    fclose(f);
  }
  const char *train = "%s train --config %s/bert.json --data %s/tails --vocab %s/bert_vocab.txt --out %s/%s --seq-len 16%s";
  double accuracy[2] = {0, 0};
  for (int head_tail = 0; head_tail < 2; head_tail++) {
    const char *out = head_tail ? "tail_ht" : "tail_h";
    int rc = run(train, DAMO_CLI_PATH, dir, dir, dir, dir, out, head_tail ? " --head-tokens 4" : "");
    CHECK_MSG(rc == 0 && (!head_tail || strstr(cli_out, "first 4 + last 10 tokens")), "%s", cli_out);
    rc = run("%s evaluate --model %s/%s --data %s/tails", DAMO_CLI_PATH, dir, out, dir);
    const char *acc_at = strstr(cli_out, "accuracy: ");
    CHECK_MSG(rc == 0 && acc_at, "%s", cli_out);
    accuracy[head_tail] = acc_at ? atof(acc_at + 10) : 0;
  }
  CHECK_MSG(accuracy[0] <= 0.75 && accuracy[1] >= 0.9, "test accuracy: first tokens only %.3f, head+tail %.3f",
            accuracy[0], accuracy[1]);
  int rc = run("%s predict --model %s/tail_ht --input %s/tails_new", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "160.txt: ham 0.") && strstr(cli_out, "161.txt: spam 0."), "%s", cli_out);
  /* More head tokens than the window holds was accepted (and cut nothing as asked). */
  rc = run(train, DAMO_CLI_PATH, dir, dir, dir, dir, "tail_bad", " --head-tokens 15");
  CHECK_MSG(rc == 2 && strstr(cli_out, "head_tokens 15 must be at most seq_len - 2 = 14"), "%s", cli_out);
}

/* Issue 18.5: invalid settings are errors naming the file and key, never replaced by the
 * defaults with exit 0. Runs after the tests that made train.csv, tm/, bs/ and bert.json. */
static int stderr_lines(void) {
  int n = 0;
  for (const char *c = cli_out; *c; c++) n += *c == '\n';
  return n;
}

static void test_invalid_settings_are_errors(void) {
  /* Sequential config: a bad "fit" value (the run used to go on with the defaults) */
  static const char *const bad[][3] = {
      {"fit_epochs.json", "\"fit\": {\"epochs\": -3, \"batch_size\": 16}", "fit: 'epochs' must be an integer in [1, "},
      {"fit_split.json", "\"fit\": {\"epochs\": 2, \"validation_split\": 1.5}", "fit: 'validation_split' must be in [0, 1)"},
      {"lr_minus1.json", "\"optimizer\": {\"type\": \"adam\", \"learning_rate\": -1}",
       "optimizer: 'learning_rate' must be in (0, "},
      {"lr_zero.json", "\"optimizer\": {\"type\": \"sgd\", \"learning_rate\": 0}", "optimizer: 'learning_rate' must be in (0, "},
      {"dup.json", "\"fit\": {\"epochs\": 2, \"epochs\": 3}", "duplicate key \"epochs\" at byte offset "},
  };
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    char text[600];
    snprintf(text, sizeof text, "{\"input_shape\":[4],\"layers\":[{\"type\":\"dense\",\"units\":3,\"activation\":\"softmax\"}],%s}",
             bad[k][1]);
    write_file(bad[k][0], text);
    int rc = run("{ %s train --config %s/%s --data %s/train.csv --out %s/never 2>&1 >/dev/null; }", DAMO_CLI_PATH, dir,
                 bad[k][0], dir, dir);
    CHECK_MSG(rc == 1 && strstr(cli_out, bad[k][0]) && strstr(cli_out, bad[k][2]) && stderr_lines() == 1, "%s: rc %d: %s",
              bad[k][0], rc, cli_out);
  }
  write_file("trailing.json", "{\"input_shape\":[4],\"layers\":[{\"type\":\"dense\",\"units\":3}]}\n}\n");
  int rc = run("%s summary --config %s/trailing.json", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "trailing.json: unexpected data after the JSON value at byte offset 58 (line 2)"),
            "rc %d: %s", rc, cli_out);
  /* GPT-2 "train": a rate of 0, an unknown key (read before any data is loaded) */
  static const char *const gpt[][3] = {
      {"gpt_lr.json", "\"lr\": 0", "\"train\".\"lr\" must be a number in (0, 10]"},
      {"gpt_key.json", "\"learning_rate\": 0.001", "unknown key \"train\".\"learning_rate\""},
      {"gpt_steps.json", "\"steps\": -5", "\"train\".\"steps\" must be an integer in [1, "},
      {"gpt_floor.json", "\"lr\": 0.001, \"min_lr\": 0.01", "\"train\".\"min_lr\" 0.01 is above \"lr\" 0.001"},
  };
  for (size_t k = 0; k < sizeof gpt / sizeof *gpt; k++) {
    char text[400];
    snprintf(text, sizeof text, "{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 8, \"n_positions\": 16,"
             " \"vocab_size\": 300, \"train\": {%s}}", gpt[k][1]);
    write_file(gpt[k][0], text);
    rc = run("{ %s train --config %s/%s --data %s/train.csv --out %s/never 2>&1 >/dev/null; }", DAMO_CLI_PATH, dir, gpt[k][0],
             dir, dir);
    CHECK_MSG(rc == 2 && strstr(cli_out, gpt[k][0]) && strstr(cli_out, gpt[k][2]) && stderr_lines() == 1, "%s: rc %d: %s",
              gpt[k][0], rc, cli_out);
  }
  /* BERT "finetune" / "pretrain": 0 and negative values used to pass (0 meaning the default) */
  static const char *const bert[][3] = {
      {"bert_lr.json", "\"finetune\": {\"lr\": -1}", "\"finetune\".\"lr\" must be a number in (0, 10]"},
      {"bert_epochs.json", "\"finetune\": {\"epochs\": 0}", "\"finetune\".\"epochs\" must be an integer in [1, 100000]"},
      {"bert_frac.json", "\"finetune\": {\"batch_size\": 2.5}", "\"finetune\".\"batch_size\" must be an integer"},
      {"bert_key.json", "\"finetune\": {\"learning_rate\": 0.1}", "unknown key \"finetune\".\"learning_rate\""},
  };
  for (size_t k = 0; k < sizeof bert / sizeof *bert; k++) {
    char text[400];
    snprintf(text, sizeof text, "{\"model_type\": \"bert\", \"vocab_size\": 40, \"hidden_size\": 32, \"num_hidden_layers\": 1,"
             " \"num_attention_heads\": 4, \"intermediate_size\": 64, \"max_position_embeddings\": 64, %s}", bert[k][1]);
    write_file(bert[k][0], text);
    rc = run("{ %s train --config %s/%s --data %s/mails --vocab %s/bert_vocab.txt --out %s/never 2>&1 >/dev/null; }",
             DAMO_CLI_PATH, dir, bert[k][0], dir, dir, dir);
    CHECK_MSG(rc == 2 && strstr(cli_out, bert[k][0]) && strstr(cli_out, bert[k][2]) && stderr_lines() == 1, "%s: rc %d: %s",
              bert[k][0], rc, cli_out);
  }
  /* A model directory's text.json and tokenizer_config.json are read strictly too. */
  write_file("tm/text.json", "{\"max_len\": 24, \"numbers_to_token\": false} {\"max_len\": 8}");
  rc = run("%s predict --model %s/tm --input %s/new/117.txt", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "tm/text.json: unexpected data after the JSON value at byte offset 43"), "rc %d: %s",
            rc, cli_out);
  write_file("bs/tokenizer_config.json", "{\"model_max_length\": 24, \"model_max_length\": 12}");
  rc = run("%s predict --model %s/bs --input %s/new/117.txt", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "bs/tokenizer_config.json: duplicate key \"model_max_length\" at byte offset 25"),
            "rc %d: %s", rc, cli_out);
}

/* ---- issue 19.4: one command dispatch, help from the option tables */

static const char *const commands[] = {"info", "train", "evaluate", "predict", "generate", "summary", "export",
                                       "tokenize", "bench", "quantize"};

/* `damo CMD --help` and `damo help CMD`: exit 0, the same text, the usage line; `damo --help`
 * names every command; the options issue 19 found missing are listed. */
static void test_help_of_every_command(void) {
  int rc = run("%s --help", DAMO_CLI_PATH);
  CHECK_MSG(rc == 0 && strstr(cli_out, "damo COMMAND --help"), "%s", cli_out);
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
    char line[64];
    snprintf(line, sizeof line, "\n  %s ", commands[i]);
    CHECK_MSG(strstr(cli_out, line), "damo --help lacks %s: %s", commands[i], cli_out);
  }
  static char first[sizeof cli_out];
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
    rc = run("%s %s --help", DAMO_CLI_PATH, commands[i]);
    snprintf(first, sizeof first, "%s", cli_out);
    char usage[64];
    snprintf(usage, sizeof usage, "usage: damo %s", commands[i]);
    CHECK_MSG(rc == 0 && strstr(first, usage), "%s --help: rc %d: %s", commands[i], rc, first);
    rc = run("%s help %s", DAMO_CLI_PATH, commands[i]);
    CHECK_MSG(rc == 0 && !strcmp(first, cli_out), "damo help %s differs from damo %s --help", commands[i], commands[i]);
  }
  static const char *const listed[][2] = {
      {"train", "--no-augment"},   {"train", "--resume"},        {"train", "--head-tokens"}, {"train", "spam-assassin"},
      {"train", "moby-dick"},      {"train", "sotu"},            {"predict", "--top"},       {"predict", "--invert"},
      {"evaluate", "--confusion-png"}, {"evaluate", "--split"}, {"evaluate", "--windows"}, {"evaluate", "moby-dick"},
      {"evaluate", "perplexity"},  {"bench", "--probe-steps"},   {"tokenize", "--pair"},     {"generate", "--top-p"}};
  for (size_t i = 0; i < sizeof listed / sizeof *listed; i++) {
    run("%s %s --help", DAMO_CLI_PATH, listed[i][0]);
    CHECK_MSG(strstr(cli_out, listed[i][1]), "damo %s --help lacks %s", listed[i][0], listed[i][1]);
  }
  /* --help is found among options, not as one's value; an unknown command is an error. */
  rc = run("%s train --config x.json --help", DAMO_CLI_PATH);
  CHECK_MSG(rc == 0 && strstr(cli_out, "usage: damo train"), "%s", cli_out);
  rc = run("%s help frobnicate", DAMO_CLI_PATH);
  CHECK_MSG(rc == 2 && strstr(cli_out, "unknown command 'frobnicate'"), "%s", cli_out);
}

/* The arguments that pick the kind of a help section's options ("" for the common ones). */
static const char *kind_args(const char *command, const char *section, char *buf, size_t cap) {
  const char *kind = strstr(section, "GPT-2") ? "g" : strstr(section, "BERT") ? "b" : strstr(section, "Sequential") ? "s" : "";
  const int model = !strcmp(command, "evaluate") || !strcmp(command, "predict") || !strcmp(command, "generate") ||
                    !strcmp(command, "summary") || !strcmp(command, "quantize");
  static const char *const bench_word[] = {"fit", "gpt2", "bert"};
  const int k = *kind == 'g' ? 1 : *kind == 'b' ? 2 : 0;
  const char *config = k == 1 ? "gpt_ok.json" : k == 2 ? "bert.json" : "model.json";
  const char *model_dir = k == 1 ? "g" : k == 2 ? "bs" : "m";
  if (!strcmp(command, "bench")) snprintf(buf, cap, "%s%s%s/%s", bench_word[k], *kind ? " --config " : "", *kind ? dir : "",
                                          *kind ? config : "");
  else if (!*kind) snprintf(buf, cap, "%s", "");
  else if (model) snprintf(buf, cap, "--model %s/%s", dir, model_dir);
  else snprintf(buf, cap, "--config %s/%s", dir, config);
  if (!strcmp(command, "bench") && !*kind) snprintf(buf, cap, "fit");
  return buf;
}

/* Every option a command's help lists is accepted by it (for the kind its section names):
 * never "unknown option" nor "an option for" another kind. The values are dummies, so the
 * commands stop at a missing required option or a file that is not there. */
static void test_help_lists_accepted_options(void) {
  static char help[sizeof cli_out];
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
    run("%s %s --help", DAMO_CLI_PATH, commands[i]);
    snprintf(help, sizeof help, "%s", cli_out);
    char section[160] = "";
    int n_options = 0;
    for (char *line = help; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
      if (!strncmp(line, "options", 7)) {
        snprintf(section, sizeof section, "%.*s", (int)strcspn(line, "\n"), line);
        continue;
      }
      if (strncmp(line, "  --", 4)) continue;
      char name[64];
      size_t len = strcspn(line + 2, " \n");
      snprintf(name, sizeof name, "%.*s", (int)len, line + 2);
      const int takes_value = line[2 + len] == ' ' && line[3 + len] != ' ';
      char args[600];
      kind_args(commands[i], section, args, sizeof args);
      int rc = run("%s %s %s %s%s < /dev/null", DAMO_CLI_PATH, commands[i], args, name, takes_value ? " 1" : "");
      CHECK_MSG(rc != 0 || !strcmp(name, "--decode"), "damo %s %s %s ran: %s", commands[i], args, name, cli_out);
      CHECK_MSG(!strstr(cli_out, "unknown option") && !strstr(cli_out, "is an option for"), "damo %s %s %s: %s",
                commands[i], args, name, cli_out);
      n_options++;
    }
    CHECK_MSG(n_options > 0 || !strcmp(commands[i], "info"), "no options listed by damo %s --help", commands[i]);
  }
  /* and what is not listed is refused */
  int rc = run("%s evaluate --model %s/m --data x --windows 3", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--windows is an option for a GPT-2 model, and this one is Sequential"), "%s",
            cli_out);
  rc = run("%s info --bogus", DAMO_CLI_PATH);
  CHECK_MSG(rc == 2 && strstr(cli_out, "unknown option '--bogus'"), "%s", cli_out);
}

/* A command that does not apply to a model's kind says so and what to use. */
static void test_not_applicable_messages(void) {
  int rc = run("%s generate --model %s/m --prompt hello", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "is a Sequential model: use damo predict"), "%s", cli_out);
  rc = run("%s generate --model %s/bs --prompt hello", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "is a BERT model: use damo predict"), "%s", cli_out);
  rc = run("%s predict --model %s/g --input %s/x.npy", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "is a GPT-2 model: use damo generate") && !strstr(cli_out, "architectures"), "%s",
            cli_out);
  rc = run("%s predict --model %s/bs --input %s/x.npy", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "is a BERT model: it reads e-mails"), "%s", cli_out);
  rc = run("%s bench fit --config %s/gpt_ok.json --init %s/never", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "is a GPT-2 config: use damo bench gpt2"), "%s", cli_out);
  rc = run("%s train --config %s/gpt_ok.json --data x --out %s/never --epochs 2", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--epochs is an option for a Sequential or BERT model, and this one is GPT-2"),
            "%s", cli_out);
}

/* The "Total params: N" line's N, or -1. */
static long long total_params(void) {
  const char *at = strstr(cli_out, "Total params: ");
  return at ? atoll(at + 14) : -1;
}

/* summary of GPT-2 and BERT: layers, shapes, and the library's parameter count. */
static void test_transformer_summaries(void) {
  char path[600];
  snprintf(path, sizeof path, "%s/g", dir);
  damo_gpt2 *g = NULL;
  CHECK(damo_gpt2_load(path, &g) == DAMO_OK);
  int rc = run("%s summary --model %s/g", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 0 && total_params() == damo_gpt2_num_params(g) && strstr(cli_out, "h.0.attn.c_attn") &&
                strstr(cli_out, "(T, 48)") && strstr(cli_out, "lm_head"), "%lld vs %lld: %s", total_params(),
            (long long)damo_gpt2_num_params(g), cli_out);
  rc = run("%s summary --config %s/gpt_ok.json", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 0 && total_params() == damo_gpt2_num_params(g), "%s", cli_out);
  damo_gpt2_free(g);
  snprintf(path, sizeof path, "%s/bs", dir);
  damo_bert *b = NULL;
  CHECK(damo_bert_load(path, 0, 0, &b) == DAMO_OK);
  rc = run("%s summary --model %s/bs", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 0 && total_params() == damo_bert_num_params(b) && strstr(cli_out, "encoder.layer.1.intermediate.dense") &&
                strstr(cli_out, "(T, 64)") && strstr(cli_out, "classifier"), "%lld vs %lld: %s", total_params(),
            (long long)damo_bert_num_params(b), cli_out);
  damo_bert_free(b);
  damo_bert_config c;
  snprintf(path, sizeof path, "%s/bert.json", dir);
  CHECK(damo_bert_config_load(path, &c) == DAMO_OK && damo_bert_new(&c, 0, &b) == DAMO_OK);
  rc = run("%s summary --config %s/bert.json", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 0 && total_params() == damo_bert_num_params(b), "%s", cli_out);
  damo_bert_free(b);
}

/* The tiny GPT-2 the tests above use: a config (gpt_ok.json) and a saved directory (g/). */
static void make_gpt2(void) {
  write_file("gpt_ok.json", "{\"model_type\": \"gpt2\", \"vocab_size\": 50257, \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 16,"
                            " \"n_positions\": 32}");
  char path[600];
  snprintf(path, sizeof path, "%s/gpt_ok.json", dir);
  damo_gpt2_config c;
  damo_gpt2 *g = NULL;
  CHECK(damo_gpt2_config_load(path, &c) == DAMO_OK && damo_gpt2_new(&c, 1, &g) == DAMO_OK);
  snprintf(path, sizeof path, "%s/g", dir);
  CHECK(damo_gpt2_save(g, path) == DAMO_OK);
  damo_gpt2_free(g);
}

/* Issue 19.3: one config reader. A typo in damo's own objects of an HF config is refused
 * with the known keys and the closest one; a syntax error names line and column; HF's own
 * extra keys are accepted. Runs after the tests that made train.csv, mails and the vocabulary. */
static void test_config_typos(void) {
  static const char *const gpt_head = "{\"model_type\": \"gpt2\", \"n_layer\": 1, \"n_head\": 2, \"n_embd\": 8,"
                                      " \"n_positions\": 16, \"vocab_size\": 300, \"architectures\": [\"GPT2LMHeadModel\"],"
                                      " \"task_specific_params\": {\"text-generation\": {\"max_length\": 50}},";
  char text[800];
  snprintf(text, sizeof text, "%s \"train\": {\"steps\": 2, \"log_evry\": 1}}", gpt_head);
  write_file("gpt2_config_with_typo.json", text);
  int rc = run("{ %s train --config %s/gpt2_config_with_typo.json --data %s/train.csv --out %s/never 2>&1 >/dev/null; }",
               DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "gpt2_config_with_typo.json: unknown key \"train\".\"log_evry\" (known: steps,") &&
                strstr(cli_out, "log_every") && strstr(cli_out, "did you mean \"log_every\"?") && stderr_lines() == 1,
            "rc %d: %s", rc, cli_out);
  snprintf(text, sizeof text, "%s \"train\": {\"log_every\": 0.5}}", gpt_head);
  write_file("gpt2_half.json", text);
  rc = run("{ %s train --config %s/gpt2_half.json --data %s/train.csv --out %s/never 2>&1 >/dev/null; }", DAMO_CLI_PATH,
           dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "gpt2_half.json: \"train\".\"log_every\" must be an integer, got 0.5"), "rc %d: %s",
            rc, cli_out);
  /* BERT's "pretrain" section (HF's extra keys beside it are fine) */
  write_file("bert_typo.json", "{\"model_type\": \"bert\", \"vocab_size\": 40, \"hidden_size\": 32, \"num_hidden_layers\": 1,"
             " \"num_attention_heads\": 4, \"intermediate_size\": 64, \"max_position_embeddings\": 64,"
             " \"transformers_version\": \"4.6.0\", \"pretrain\": {\"step\": 3}}");
  rc = run("{ %s train --config %s/bert_typo.json --pretrain --data %s/mails --vocab %s/bert_vocab.txt --out %s/never "
           "2>&1 >/dev/null; }", DAMO_CLI_PATH, dir, dir, dir, dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "unknown key \"pretrain\".\"step\"") && strstr(cli_out, "did you mean \"steps\"?"),
            "rc %d: %s", rc, cli_out);
  /* a syntax error: line and column; an unknown model_type: said so */
  write_file("broken.json", "{\"input_shape\": [4],\n \"layers\": [{\"type\": \"dense\" \"units\": 3}]}");
  rc = run("{ %s train --config %s/broken.json --data %s/train.csv 2>&1 >/dev/null; }", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "broken.json: not valid JSON at byte offset 50 (line 2), column 30"), "rc %d: %s", rc,
            cli_out);
  write_file("llama.json", "{\"model_type\": \"llama\"}");
  rc = run("{ %s train --config %s/llama.json --data %s/train.csv 2>&1 >/dev/null; }", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, "llama.json: model_type \"llama\" is not supported"), "rc %d: %s", rc, cli_out);
}

int main(void) {
  if (!mkdtemp(dir)) return 1;
  RUN(test_train_evaluate_predict);
  RUN(test_quantize);
  RUN(test_distill);
  RUN(test_prune);
  RUN(test_bad_input_messages);
  RUN(test_text_folder_train_predict);
  RUN(test_bert_folder_train_predict); /* uses the mails made above */
  RUN(test_bert_head_tail_truncation); /* and the BERT config and vocabulary */
  RUN(test_invalid_settings_are_errors);
  make_gpt2();
  RUN(test_help_of_every_command);
  RUN(test_help_lists_accepted_options); /* uses m/, bs/, g/ and their configs */
  RUN(test_not_applicable_messages);
  RUN(test_transformer_summaries);
  RUN(test_config_typos);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return test_summary("cli");
}
