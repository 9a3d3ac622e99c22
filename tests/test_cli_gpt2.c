/* test_cli_gpt2.c - the damo command on a GPT-2 directory: evaluate (loss and perplexity of
 * a text's validation part) and quantize (weight-only blocks, static int8) with the commands
 * that read the result. Skipped without the GPT-2 vocabulary. */
#include "cli_run.h"
#include "harness.h"
#include "tmpfiles.h" /* tmpdir: the test's scratch directory */

#include <damo.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void write_file(const char *name, const char *text) { cli_write_file(tmpdir, name, text); }

/* A fresh one-layer GPT-2 (2 heads, context 32, GPT-2's vocabulary) n_embd wide, saved as tmpdir/name. */
static void save_gpt2(const char *name, int n_embd, uint64_t seed) {
  damo_gpt2_config c = {1, 2, n_embd, 32, 50257, 1e-5f};
  damo_gpt2 *g = NULL;
  CHECK(damo_gpt2_new(&c, seed, &g) == DAMO_OK && damo_gpt2_save(g, tmp_path(name)) == DAMO_OK);
  damo_gpt2_free(g);
}

/* evaluate of a GPT-2 directory: the validation part's loss and perplexity = exp(loss); an
 * untrained model scores about ln(vocab_size) (g/: 1 layer, 16 wide, context 32). */
static void test_gpt2_evaluate(void) {
  char text[6000] = "";
  for (int i = 0; i < 40; i++) strcat(text, "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. ");
  write_file("corpus.txt", text);
  int rc = run("%s evaluate --model %s/g --data %s/corpus.txt", DAMO_CLI_PATH, tmpdir, tmpdir);
  const char *l = strstr(cli_out, "val loss: "), *p = strstr(cli_out, "perplexity: ");
  const double loss = l ? atof(l + 10) : NAN, ppl = p ? atof(p + 12) : NAN;
  CHECK_MSG(rc == 0 && isfinite(loss) && fabs(ppl - exp(loss)) <= 1e-3 * ppl && fabs(loss - log(50257.0)) < 0.5 &&
                strstr(cli_out, "the last 10% of its") && strstr(cli_out, "windows of 32 tokens"), "%s", cli_out);
  rc = run("%s evaluate --model %s/g --data %s/corpus.txt --seq-len=8 --windows 2", DAMO_CLI_PATH, tmpdir, tmpdir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "2 windows of 8 tokens (16 predictions), evenly spaced") && strstr(cli_out, "val loss"),
            "%s", cli_out);
  rc = run("%s evaluate --model %s/g --data %s/corpus.txt --seq-len 64", DAMO_CLI_PATH, tmpdir, tmpdir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "longer than the model's context (n_positions 32)"), "%s", cli_out);
}

/* quantize of a GPT-2 directory into weight-only blocks, and the commands that read it.
 * Runs after test_gpt2_evaluate (its corpus.txt). */
static void test_gpt2_quantize(void) {
  save_gpt2("g32", 32, 5);
  int rc = run("%s quantize --model %s/g32 --out %s/g32q4 --format q4_0 --evaluate --data %s/corpus.txt --seq-len 8",
               DAMO_CLI_PATH, tmpdir, tmpdir, tmpdir);
  const char *at = strstr(cli_out, "perplexity ");
  double before = at ? atof(at + 11) : NAN, after = NAN;
  if (at && (at = strstr(at, "-> "))) after = atof(at + 3);
  CHECK_MSG(rc == 0 && strstr(cli_out, "in q4_0 blocks of 32") && strstr(cli_out, "model.safetensors: ") &&
                fabs(log(after / before)) < 0.05, "%s", cli_out);
  rc = run("%s evaluate --model %s/g32q4 --data %s/corpus.txt --seq-len 8", DAMO_CLI_PATH, tmpdir, tmpdir);
  at = strstr(cli_out, "perplexity: ");
  CHECK_MSG(rc == 0 && strstr(cli_out, "weights in blocks q4_0") && at && fabs(atof(at + 12) - after) < 1e-3 * after,
            "%s", cli_out);
  rc = run("{ %s generate --model %s/g32q4 --prompt hello --temperature 0 --max-new-tokens 4 2>&1; }", DAMO_CLI_PATH,
           tmpdir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "4 tokens in") && strstr(cli_out, "q4_0 weights"), "%s", cli_out);
  rc = run("%s summary --model %s/g32q4", DAMO_CLI_PATH, tmpdir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "every matrix in q4_0 blocks of 32"), "%s", cli_out);
  /* static int8: calibrated on windows of the corpus' training part, scored on its validation part */
  rc = run("%s quantize --model %s/g32 --out %s/g32i8 --format int8 --data %s/corpus.txt --seq-len 8 --calibration 4 "
           "--method minmax --evaluate", DAMO_CLI_PATH, tmpdir, tmpdir, tmpdir);
  at = strstr(cli_out, "perplexity ");
  before = at ? atof(at + 11) : NAN, after = NAN;
  if (at && (at = strstr(at, "-> "))) after = atof(at + 3);
  CHECK_MSG(rc == 0 && strstr(cli_out, "calibrated (minmax) on 4 windows of 8 tokens") && fabs(log(after / before)) < 0.05,
            "%s", cli_out);
  rc = run("{ %s generate --model %s/g32i8 --prompt hello --temperature 0 --max-new-tokens 4 2>&1; }", DAMO_CLI_PATH,
           tmpdir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "4 tokens in"), "%s", cli_out);
  /* refusals: the model, what follows --out, the exit status and the message (NULL: any) */
  static const struct {
    const char *model, *rest;
    int rc;
    const char *message;
  } refused[] = {
      {"g32", "never --format int8", 2, "static int8 calibrates on the training part of --data TEXT"},
      {"g32", "never --format q8_0 --method minmax", 2, "--method goes with --format int8"},
      {"g32q4", "twice", 1, "already quantised (q4_0)"},
      {"g", "never --format q8_0", 1, "n_embd 16 is not a multiple of the block size 32"},
      {"g32", "never --format q5_0", 2, "--format is q8_0 or q4_0"},
      {"g32", "never --dynamic", 2, NULL},
  };
  for (size_t k = 0; k < sizeof refused / sizeof *refused; k++) {
    rc = run("%s quantize --model %s/%s --out %s/%s", DAMO_CLI_PATH, tmpdir, refused[k].model, tmpdir, refused[k].rest);
    CHECK_MSG(rc == refused[k].rc && (!refused[k].message || strstr(cli_out, refused[k].message)), "%s/%s: rc %d: %s",
              refused[k].model, refused[k].rest, rc, cli_out);
  }
  struct stat st;
  CHECK(stat(tmp_path("never"), &st) != 0); /* nothing written for a refused command */
}

int main(void) {
  tmpdir_template("cli_gpt2");
  if (!mkdtemp(tmpdir)) return 1;
  damo_bpe *bpe = NULL;
  if (damo_bpe_load(NULL, &bpe) != DAMO_OK) {
    fprintf(stderr, "test_cli_gpt2: skipped (GPT-2 vocabulary not installed)\n");
    remove_tmpdir();
    return test_summary("cli_gpt2");
  }
  damo_bpe_free(bpe);
  save_gpt2("g", 16, 1);
  RUN(test_gpt2_evaluate);
  RUN(test_gpt2_quantize); /* uses corpus.txt */
  remove_tmpdir();
  return test_summary("cli_gpt2");
}
