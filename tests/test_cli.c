/* test_cli.c - the damo command end to end on a small CSV problem it generates: train,
 * evaluate, predict, summary and export, plus the exit codes and messages of bad input. */
#include "harness.h"

#include <damo.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/damo_cli_XXXXXX";
static char out[65536];

/* Runs a shell command, captures stdout+stderr into out, returns the exit status. */
static int run(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  char full[4300];
  snprintf(full, sizeof full, "%s 2>&1", cmd);
  FILE *p = popen(full, "r");
  size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
  out[n] = '\0';
  int st = p ? pclose(p) : -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

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
  CHECK_MSG(rc == 0, "%s", out);
  CHECK_MSG(strstr(out, "damo ") && strstr(out, "simd:") && strstr(out, "threads:"), "first line: %s", out);
  CHECK_MSG(strstr(out, "Epoch 8/8") && !strchr(out, '\r'), "%s", out); /* a pipe gets plain lines */
  rc = run("%s evaluate --model %s/m --data %s/test.csv", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 0, "%s", out);
  const char *acc_at = strstr(out, "accuracy: ");
  double acc = acc_at ? atof(acc_at + 10) : -1.0;
  CHECK_MSG(acc > 0.95, "%s", out);
  /* export the test CSV to .npy, predict, and the accuracy must match evaluate's */
  rc = run("%s export --data %s/test.csv --x %s/x.npy --y %s/y.npy", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 0, "%s", out);
  char expected[32];
  snprintf(expected, sizeof expected, "accuracy: %.4f", acc);
  rc = run("%s predict --model %s/m --input %s/x.npy --labels %s/y.npy --output %s/p.npy", DAMO_CLI_PATH, dir, dir, dir,
           dir);
  CHECK_MSG(rc == 0 && strstr(out, expected), "expected '%s' in: %s", expected, out);
  char path[512];
  snprintf(path, sizeof path, "%s/p.npy", dir);
  damo_tensor *p = NULL;
  CHECK(damo_npy_load(path, &p) == DAMO_OK && p->shape[0] == 200 && p->shape[1] == 3);
  damo_tensor_free(p);
  rc = run("%s summary --model %s/m", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 0 && strstr(out, "Total params: 131"), "%s", out);
  snprintf(path, sizeof path, "%s/m/history.csv", dir);
  FILE *f = fopen(path, "r");
  int lines = 0;
  char line[256];
  while (f && fgets(line, sizeof line, f)) lines++;
  if (f) fclose(f);
  CHECK(lines == 9);
}

static void test_bad_input_messages(void) {
  write_file("bad.json", "{\"input_shape\":[4],\"layers\":[{\"type\":\"dense\",\"units\":3},{\"type\":\"lstmz\"}]}");
  int rc = run("%s train --config %s/bad.json --data %s/train.csv", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 1 && strstr(out, "bad.json") && strstr(out, "layer 1") && strstr(out, "lstmz"), "%s", out);
  rc = run("%s train --config %s/model.json --data no-such-data-set", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 1 && strstr(out, "no-such-data-set") && strstr(out, "fashion-mnist"), "%s", out);
  write_file("labels.csv", "a,b,c,d,label\n1,2,3,4,0\n1,2,3,4,7\n");
  rc = run("%s train --config %s/model.json --data %s/labels.csv --epochs 1", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 1 && strstr(out, "7") && strstr(out, "label"), "%s", out);
  rc = run("%s train --config %s/model.json --data %s/train.csv --epochz 3", DAMO_CLI_PATH, dir, dir);
  CHECK_MSG(rc == 2 && strstr(out, "--epochz"), "%s", out);
  rc = run("%s predict --model %s/nothing --input x.npy", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 1 && strstr(out, "config.json"), "%s", out);
  rc = run("%s frobnicate", DAMO_CLI_PATH);
  CHECK(rc == 2);
}

int main(void) {
  if (!mkdtemp(dir)) return 1;
  RUN(test_train_evaluate_predict);
  RUN(test_bad_input_messages);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return test_summary("cli");
}
