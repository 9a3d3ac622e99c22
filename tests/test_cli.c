/* test_cli.c - the damo command end to end on a small CSV problem it generates: train,
 * evaluate, predict, summary and export, plus the exit codes and messages of bad input. */
#include "cli_run.h"
#include "harness.h"

#include <damo.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/damo_cli_XXXXXX";


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
  damo_tensor_free(p);
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
