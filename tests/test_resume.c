/* test_resume.c - killed and resumed training ends with the weights of an uninterrupted run.
 *
 * For every model kind (a Sequential MLP with dropout, GPT-2, BERT masked-LM pre-training,
 * BERT fine-tuning) `damo train` runs once to the end, then again into another directory
 * killed with SIGKILL at random moments (checkpoints every few steps), each time continued
 * with --resume, until a run ends by itself. Its model.safetensors must equal the
 * uninterrupted run's byte for byte (same thread count). Also: --out reuse without --resume
 * or --overwrite is refused, and --resume without a checkpoint says so. */
#include "damo.h"
#include "harness.h"
#include "cli_run.h"
#include "tmpfiles.h"
#include "mail_fixtures.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef DAMO_CLI_PATH
#define DAMO_CLI_PATH "build/damo"
#endif

static int quick(void) { return getenv("DAMO_TEST_QUICK") != NULL; }

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void write_file(const char *name, const char *text) { write_bytes(tmp_path(name), text, strlen(text)); }

static int exists(const char *dir, const char *file) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  return access(path, F_OK) == 0;
}

/* The inode of dir's checkpoint state (0: none): a new checkpoint is a new file. */
static ino_t state_inode(const char *dir) {
  char path[1024];
  struct stat sb;
  snprintf(path, sizeof path, "%s/trainer_state.safetensors", dir);
  return stat(path, &sb) == 0 ? sb.st_ino : 0;
}

/* Runs cmd (its output to log) and, once it has written a new checkpoint into dir (dir NULL:
 * at once), kills it with SIGKILL `delay` seconds later if it is still running (delay < 0:
 * never): a kill lands at a random moment of a run that has made progress. Returns 1 if it
 * was killed, else 0 with its exit status. */
static int run_killed_after(const char *cmd, const char *dir, double delay, int *status) {
  char full[4096];
  snprintf(full, sizeof full, "exec %s > %s 2>&1", cmd, tmp_path("run.log"));
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", full, (char *)NULL);
    _exit(127);
  }
  if (pid < 0) return *status = -1, 0;
  const ino_t first = dir ? state_inode(dir) : 0;
  double start = dir ? -1 : now();
  int st = 0;
  for (;;) {
    pid_t done = waitpid(pid, &st, WNOHANG);
    if (done == pid) break;
    if (start < 0 && state_inode(dir) != first) start = now();
    if (delay >= 0 && start >= 0 && now() - start >= delay) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      break;
    }
    nanosleep(&(struct timespec){0, 2000000}, NULL);
  }
  if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) return 1;
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return 0;
}

static int same_file(const char *a, const char *b) { return run("cmp -s '%s' '%s'", a, b) == 0; }

/* One kind: `train` (without --out) trains to the end into ref/, then into cut/ killed
 * `kills` times at random moments, resumed after each kill. */
static void kill_and_resume(const char *kind, const char *train, int kills_wanted, const char *also_same) {
  char ref[600], cut[600], cmd[3000], a[700], b[700];
  snprintf(ref, sizeof ref, "%s/%s_ref", tmpdir, kind);
  snprintf(cut, sizeof cut, "%s/%s_cut", tmpdir, kind);
  snprintf(cmd, sizeof cmd, "%s --out %s", train, ref);
  int status = -1;
  const double t0 = now();
  CHECK(run_killed_after(cmd, NULL, -1, &status) == 0 && status == 0);
  const double full = now() - t0;
  if (status != 0) {
    run("cat %s", tmp_path("run.log"));
    fprintf(stderr, "  %s: the uninterrupted run failed:\n%s\n", kind, cli_out);
    return;
  }
  damo_rng r;
  damo_rng_seed(&r, 0xc0ffee ^ (uint64_t)strlen(kind));
  int kills = 0, runs = 0, resumed = 0;
  status = -1;
  for (int attempt = 0; attempt < 40; attempt++) {
    const int resume = exists(cut, "trainer_state.safetensors");
    snprintf(cmd, sizeof cmd, "%s --out %s%s", train, cut, resume ? " --resume" : "");
    /* a kill at a random moment within 10% of an uninterrupted run's time after the run's first
     * new checkpoint (mid-step, mid-save or mid-validation), then one run to the end */
    const double delay = kills < kills_wanted ? full * 0.1 * damo_rng_uniform(&r) : -1;
    runs++;
    resumed += resume;
    if (run_killed_after(cmd, cut, delay, &status)) {
      kills++;
      continue;
    }
    if (status != 0) {
      run("cat %s", tmp_path("run.log"));
      fprintf(stderr, "  %s: run %d (%s) failed:\n%s\n", kind, runs, resume ? "resumed" : "fresh", cli_out);
    }
    break;
  }
  snprintf(a, sizeof a, "%s/model.safetensors", ref);
  snprintf(b, sizeof b, "%s/model.safetensors", cut);
  const int same = same_file(a, b);
  CHECK_MSG(status == 0 && same && kills >= (kills_wanted + 1) / 2 && resumed >= 1,
            "%s: exit %d, %d kills, %d resumed runs, weights %s", kind, status, kills, resumed,
            same ? "equal" : "differ");
  if (also_same) {
    snprintf(a, sizeof a, "%s/%s", ref, also_same);
    snprintf(b, sizeof b, "%s/%s", cut, also_same);
    CHECK_MSG(same_file(a, b), "%s: %s differs after the kills", kind, also_same);
  }
  printf("  %s: %.1f s uninterrupted; killed %d times (SIGKILL), resumed %d times: model.safetensors %s\n", kind, full,
         kills, resumed, same ? "bit-identical" : "DIFFERENT");
}

static void test_sequential(void) {
  FILE *f = fopen(tmp_path("rows.csv"), "w");
  if (!f) return;
  damo_rng r;
  damo_rng_seed(&r, 11);
  for (int j = 0; j < 32; j++) fprintf(f, "f%d,", j);
  fprintf(f, "label\n");
  for (int i = 0; i < 3000; i++) {
    int label = (int)damo_rng_below(&r, 3);
    for (int j = 0; j < 32; j++) fprintf(f, "%.4f,", damo_rng_normal(&r) + (j % 3 == label ? 0.5 : 0.0));
    fprintf(f, "%d\n", label);
  }
  fclose(f);
  write_file("mlp.json", "{\"format\": \"damo.sequential\", \"input_shape\": [32], \"layers\": ["
                         "{\"type\": \"dense\", \"units\": 128, \"activation\": \"relu\"}, {\"type\": \"dropout\", \"rate\": 0.2},"
                         "{\"type\": \"dense\", \"units\": 128, \"activation\": \"relu\"}, {\"type\": \"dense\", \"units\": 3}],"
                         "\"loss\": \"sparse_categorical_crossentropy\", \"optimizer\": {\"type\": \"adam\", "
                         "\"learning_rate\": 0.001, \"schedule\": {\"type\": \"cosine\"}}, \"metrics\": [\"accuracy\"],"
                         "\"fit\": {\"epochs\": 5, \"batch_size\": 16, \"validation_split\": 0.2}}");
  char train[2000];
  snprintf(train, sizeof train, "%s train --config %s --data %s --verbose 2 --checkpoint-every 25 --patience 3",
           DAMO_CLI_PATH, tmp_path("mlp.json"), tmp_path("rows.csv"));
  kill_and_resume("sequential", train, quick() ? 2 : 5, "history.csv");

  /* Reusing an --out that holds a run: refused unless --resume or --overwrite. */
  char ref[600];
  snprintf(ref, sizeof ref, "%s/sequential_ref", tmpdir);
  int rc = run("%s --out %s", train, ref);
  CHECK_MSG(rc == 2 && strstr(cli_out, "already holds a model or a run") && strstr(cli_out, "--overwrite"), "%s", cli_out);
  rc = run("%s --out %s --resume --overwrite", train, ref);
  CHECK_MSG(rc == 2 && strstr(cli_out, "give one of them"), "%s", cli_out);
  rc = run("%s --out %s/none --resume", train, tmpdir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "holds no checkpoint"), "%s", cli_out);
  /* A finished run resumed: nothing left to train, the same weights. */
  run("cp %s/model.safetensors %s", ref, tmp_path("before.safetensors"));
  rc = run("%s --out %s --resume", train, ref);
  char after[700];
  snprintf(after, sizeof after, "%s/model.safetensors", ref);
  CHECK_MSG(rc == 0 && same_file(tmp_path("before.safetensors"), after), "%s", cli_out);
  /* Another batch size is another run: its checkpoint is not continued. */
  rc = run("%s --out %s --resume --batch-size 32", train, ref);
  CHECK_MSG(rc == 1 && strstr(cli_out, "batch") && strstr(cli_out, "same data and settings"), "%s", cli_out);
  /* --overwrite trains a new run there. */
  rc = run("%s --out %s --overwrite --epochs 1", train, ref);
  CHECK_MSG(rc == 0 && run("grep -c , %s/history.csv", ref) == 0 && atoi(cli_out) == 2, "%s", cli_out);
}

static void test_gpt2(void) {
  damo_bpe *bpe = NULL;
  if (damo_bpe_load(NULL, &bpe) != DAMO_OK) {
    fprintf(stderr, "  (GPT-2 skipped: its vocabulary is not installed)\n");
    return;
  }
  damo_bpe_free(bpe);
  write_file("gpt.json", "{\"model_type\": \"gpt2\", \"vocab_size\": 50257, \"n_layer\": 2, \"n_head\": 2, \"n_embd\": 32,"
                         " \"n_positions\": 32, \"train\": {\"steps\": 30, \"batch_size\": 4, \"seq_len\": 32, \"grad_accum\": 2,"
                         " \"log_every\": 10, \"eval_every\": 10, \"eval_windows\": 4, \"warmup_steps\": 5}}");
  char text[20000] = "";
  for (int i = 0; i < 60; i++)
    strcat(text, i % 2 ? "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. "
                       : "It is a way I have of driving off the spleen and regulating the circulation. ");
  write_file("corpus.txt", text);
  char train[2000];
  snprintf(train, sizeof train, "%s train --config %s --data %s --checkpoint-every 3", DAMO_CLI_PATH,
           tmp_path("gpt.json"), tmp_path("corpus.txt"));
  kill_and_resume("gpt2", train, quick() ? 2 : 4, "history.csv");
}

/* The labelled mails and the vocabulary the BERT runs share. */
static void write_mails(void) {
  write_labelled_mails(120);
  write_file("bert.json", "{\"model_type\": \"bert\", \"vocab_size\": 40, \"hidden_size\": 32, \"num_hidden_layers\": 2,"
                          "\"num_attention_heads\": 4, \"intermediate_size\": 64, \"max_position_embeddings\": 64,"
                          "\"pretrain\": {\"steps\": 60, \"batch_size\": 8, \"seq_len\": 32, \"predictions\": 6,"
                          "\"lr\": 0.002, \"warmup_steps\": 5, \"eval_every\": 20},"
                          "\"finetune\": {\"epochs\": 4, \"batch_size\": 8, \"seq_len\": 24, \"lr\": 0.003,"
                          "\"warmup_steps\": 5, \"seed\": 3, \"log_every\": 4}}");
}

static void test_bert(void) {
  write_mails();
  char train[2000];
  snprintf(train, sizeof train, "%s train --config %s --data %s --vocab %s --pretrain --checkpoint-every 4",
           DAMO_CLI_PATH, tmp_path("bert.json"), tmp_path("mails"), tmp_path("vocab.txt"));
  kill_and_resume("bert-pretraining", train, quick() ? 2 : 4, "history.csv");
  snprintf(train, sizeof train, "%s train --config %s --data %s --vocab %s --checkpoint-every 3", DAMO_CLI_PATH,
           tmp_path("bert.json"), tmp_path("mails"), tmp_path("vocab.txt"));
  kill_and_resume("bert-finetuning", train, quick() ? 2 : 4, "history.csv");
}

int main(void) {
  tmpdir_template("resume");
  if (!mkdtemp(tmpdir)) {
    printf("resume: 0 passed, 1 failed\n");
    return 1;
  }
  RUN(test_sequential);
  RUN(test_gpt2);
  RUN(test_bert);
  run("rm -rf '%s'", tmpdir);
  return test_summary("resume");
}
