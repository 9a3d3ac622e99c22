/* test_reliability.c - what saving must survive (issue 18): an I/O error or a kill at every
 * file-system step of a save leaves the directory as the old model or the new one, never a
 * mix (Sequential, GPT-2 checkpoints, BERT); outputs that are FIFOs, devices or symlinks are
 * written through, not replaced; two runs cannot write one directory; stale temp files of
 * dead processes go; weights holding NaN are neither saved nor loaded; a run whose loss
 * explodes without a NaN stops with an error. */
#define _XOPEN_SOURCE 700 /* mknod */
#include "harness.h"
#include "cli_run.h"
#include "tmpfiles.h"
#include "io/io.h"
#include "train/model.h"

#include <damo.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static int quick(void) { return getenv("DAMO_TEST_QUICK") != NULL; }

static damo_tensor *small_tensor(float base) {
  int64_t shape[2] = {3, 4};
  damo_tensor *t = damo_tensor_new(DAMO_F32, 2, shape);
  float *v = damo_tensor_f32(t);
  for (int i = 0; i < 12; i++) v[i] = base + (float)i;
  return t;
}

static int is_type(const char *path, mode_t type) {
  struct stat st;
  return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == type;
}

/* Names in tmpdir that start with prefix (leftover staging folders). */
static int count_prefixed(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  if (d) closedir(d);
  return n;
}

static int count_containing(const char *dir, const char *part) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) n += strstr(e->d_name, part) != NULL;
  if (d) closedir(d);
  return n;
}

static int file_equals(const char *path, const char *text) {
  char buf[256] = {0};
  FILE *f = fopen(path, "rb");
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  if (f) fclose(f);
  return f && n == strlen(text) && !memcmp(buf, text, n);
}

/* ------------------------------------------------------------------ outputs that are not files */

static void test_fifo_written_in_place(void) {
  const char *fifo = tmp_path("out.fifo");
  CHECK(mkfifo(fifo, 0644) == 0);
  int reader = open(fifo, O_RDWR | O_NONBLOCK); /* a reader, so the writer's open does not block */
  CHECK(reader >= 0);
  damo_tensor *t = small_tensor(1);
  CHECK_MSG(damo_npy_save(fifo, t) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(is_type(fifo, S_IFIFO), "the FIFO was replaced by another kind of file");
  char head[8] = {0};
  CHECK(read(reader, head, 6) == 6 && !memcmp(head, "\x93NUMPY", 6));
  close(reader);
  damo_tensor_free(t);
  unlink(fifo);
}

static void test_char_device_written_in_place(void) {
  if (geteuid() != 0) {
    fprintf(stderr, "  (character device: skipped, mknod needs root)\n");
    return;
  }
  const char *dev = tmp_path("null");
  CHECK(mknod(dev, S_IFCHR | 0666, makedev(1, 3)) == 0); /* a private /dev/null */
  damo_tensor *t = small_tensor(2);
  CHECK_MSG(damo_npy_save(dev, t) == DAMO_OK, "%s", damo_last_error());
  CHECK(is_type(dev, S_IFCHR));
  CHECK(count_containing(tmpdir, "null.tmp.") == 0);
  damo_tensor_free(t);
  unlink(dev);
}

static void test_symlinks_followed(void) {
  const char *real = tmp_path("real.npy"), *link = tmp_path("link.npy");
  damo_tensor *a = small_tensor(1), *b = small_tensor(100), *back = NULL;
  CHECK(damo_npy_save(real, a) == DAMO_OK);
  CHECK(chmod(real, 0600) == 0);
  CHECK(symlink("real.npy", link) == 0); /* relative, as users make them */
  CHECK(damo_npy_save(link, b) == DAMO_OK);
  CHECK_MSG(is_type(link, S_IFLNK), "the symlink was replaced");
  CHECK(damo_npy_load(real, &back) == DAMO_OK && damo_tensor_f32(back)[0] == 100.0f);
  struct stat st;
  CHECK(stat(real, &st) == 0 && (st.st_mode & 0777) == 0600); /* permissions kept */
  damo_tensor_free(back);
  /* A dangling link: its target is created. */
  const char *dangling = tmp_path("dangling.npy"), *target = tmp_path("created.npy");
  CHECK(symlink("created.npy", dangling) == 0);
  CHECK(damo_npy_save(dangling, a) == DAMO_OK);
  CHECK(is_type(dangling, S_IFLNK) && is_type(target, S_IFREG));
  /* A directory is refused with its name. */
  CHECK(damo_npy_save(tmpdir, a) == DAMO_ERR_IO && strstr(damo_last_error(), "is a directory"));
  unlink(real), unlink(link), unlink(dangling), unlink(target);
  damo_tensor_free(a);
  damo_tensor_free(b);
}

/* A save of `what` to dir, for the kill matrix. */
typedef struct save_job {
  int kind; /* 0 Sequential, 1 GPT-2 checkpoint, 2 BERT */
  const void *what;
  const char *dir;
} save_job;

static damo_status run_save(const save_job *j) {
  switch (j->kind) {
  case 0: return damo_model_save((damo_model *)j->what, j->dir);
  case 1: return damo_gpt2_trainer_save(j->what, j->dir);
  default: return damo_bert_save(j->what, j->dir);
  }
}

/* Runs the save in a child process that is SIGKILLed at its k-th file-system step; 1 when
 * the child died there. */
static int killed_at_step(int k, const save_job *j) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    damo_io_fault_arm(k, DAMO_IO_FAULT_KILL);
    _exit(run_save(j) == DAMO_OK ? 0 : 3);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

/* ------------------------------------------------------------------ Sequential fault matrix */

static damo_model *tiny_mlp_width(uint64_t seed, int width) {
  const int64_t in[] = {6};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_dense(width, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(3, DAMO_ACT_SOFTMAX));
  damo_model_build(m, seed);
  damo_compile_options c = {.optimizer = damo_adam(1e-3f),
                            .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = DAMO_METRIC_ACCURACY};
  damo_model_compile(m, &c);
  return m;
}

static damo_model *tiny_mlp(uint64_t seed) { return tiny_mlp_width(seed, 5); }

/* 1 when dir loads and holds exactly model m's weights. */
static int dir_holds(const char *dir, const damo_model *m) {
  damo_model *got = NULL;
  if (damo_model_load(dir, &got) != DAMO_OK) return 0;
  int same = got->n_params == m->n_params && !memcmp(got->param_block, m->param_block, (size_t)m->n_params * sizeof(float));
  damo_model_free(got);
  return same;
}

typedef struct outcome {
  int steps, failed_old, ok_new, failed_new, bad, monotonic_broken;
} outcome;

static void test_sequential_save_faults(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/seq", tmpdir);
  /* Another architecture, as in the report: new weights beside the old config.json would
   * not load at all ("dense_1.kernel is f32 (6, 7), layer expects (6, 5)"). */
  damo_model *a = tiny_mlp(1), *b = tiny_mlp_width(2, 7);
  CHECK(damo_model_save(a, dir) == DAMO_OK);
  char notes[600];
  snprintf(notes, sizeof notes, "%s/notes.txt", dir);
  write_bytes(notes, "keep", 4); /* a user's file in the model directory */
  CHECK(dir_holds(dir, a));

  damo_io_fault_arm(LONG_MAX, DAMO_IO_FAULT_FAIL); /* counts the steps of one save */
  CHECK(damo_model_save(b, dir) == DAMO_OK);
  outcome o = {(int)damo_io_fault_steps(), 0, 0, 0, 0, 0};
  damo_io_fault_arm(0, DAMO_IO_FAULT_FAIL);
  CHECK_MSG(o.steps >= 10, "a save has %d steps", o.steps);

  /* An I/O error at step k. */
  for (int k = 1; k <= o.steps; k++) {
    CHECK(damo_model_save(a, dir) == DAMO_OK);
    damo_io_fault_arm(k, DAMO_IO_FAULT_FAIL);
    damo_status st = damo_model_save(b, dir);
    damo_io_fault_arm(0, DAMO_IO_FAULT_FAIL);
    int old = dir_holds(dir, a), new = dir_holds(dir, b);
    if (old && (o.ok_new || o.failed_new)) o.monotonic_broken = 1;
    if (st != DAMO_OK && old) o.failed_old++;
    else if (st == DAMO_OK && new) o.ok_new++;
    else if (st != DAMO_OK && new) o.failed_new++; /* only the sync after the switch */
    else o.bad++, fprintf(stderr, "  fault at step %d: status %d, old %d, new %d\n", k, st, old, new);
    CHECK_MSG(st == DAMO_OK || strstr(damo_last_error(), dir), "%s", damo_last_error());
    CHECK(file_equals(notes, "keep"));
  }
  /* Before the switch every fault leaves the old model, after it the new one. */
  CHECK_MSG(o.bad == 0 && !o.monotonic_broken && o.failed_old > o.steps / 2,
            "fail: %d steps, %d old, %d new, %d failed-but-new, %d broken", o.steps, o.failed_old, o.ok_new, o.failed_new,
            o.bad);
  CHECK(damo_model_save(a, dir) == DAMO_OK); /* cleans what a failed clean-up left */
  CHECK(count_prefixed(tmpdir, ".seq.") == 0);

  /* A kill at step k (a child process dies by SIGKILL in the middle of its save). */
  int kills = 0, bad = 0;
  for (int k = 1; k <= o.steps; k++) {
    CHECK(damo_model_save(a, dir) == DAMO_OK);
    save_job job = {0, b, dir};
    int killed = killed_at_step(k, &job);
    kills += killed;
    int old = dir_holds(dir, a), new = dir_holds(dir, b);
    if (!(old || new) || (!killed && !new)) bad++, fprintf(stderr, "  kill at step %d: old %d new %d\n", k, old, new);
    CHECK(file_equals(notes, "keep"));
  }
  CHECK_MSG(bad == 0 && kills == o.steps, "%d kills of %d steps, %d broken directories", kills, o.steps, bad);
  /* The dead children's staging folders are removed by the next save. */
  CHECK(damo_model_save(a, dir) == DAMO_OK);
  CHECK_MSG(count_prefixed(tmpdir, ".seq.") == 0, "stale staging folders left");
  CHECK(dir_holds(dir, a) && file_equals(notes, "keep"));
  printf("  sequential save: %d steps; I/O error: %d old, %d new, %d failed after the switch; kill: %d old-or-new\n",
         o.steps, o.failed_old, o.ok_new, o.failed_new, kills);
  damo_model_free(a);
  damo_model_free(b);
  run("rm -rf '%s'", dir);
}

/* ------------------------------------------------------------------ GPT-2 checkpoints */

static damo_token_data *token_stream(void) {
  int32_t ids[2000];
  for (int i = 0; i < 2000; i++) ids[i] = (i * 7 + i / 13) % 32;
  damo_token_data *d = NULL;
  damo_token_data_from_ids(ids, 2000, 0.1, &d);
  return d;
}

static damo_gpt2_train_options gpt_options(void) {
  damo_gpt2_train_options o = damo_gpt2_train_defaults();
  o.steps = 50;
  o.batch_size = 2;
  o.seq_len = 8;
  o.lr = 1e-2f;
  o.min_lr = 1e-3f;
  o.warmup_steps = 2;
  o.eval_windows = 2;
  return o;
}

/* The step of the checkpoint in dir, or -1 when it is broken: the trainer state must resume
 * and the HuggingFace weights beside it must be the state's parameters. */
static int64_t checkpoint_step(const char *dir, const damo_token_data *data) {
  damo_gpt2_config c = {1, 2, 16, 16, 32, 1e-5f};
  damo_gpt2 *m = NULL, *hf = NULL;
  damo_gpt2_trainer *t = NULL;
  damo_gpt2_train_options o = gpt_options();
  int64_t step = -1;
  if (damo_gpt2_new(&c, 9, &m) == DAMO_OK && damo_gpt2_trainer_new(m, data, &o, &t) == DAMO_OK &&
      damo_gpt2_trainer_resume(t, dir) == DAMO_OK && damo_gpt2_load(dir, &hf) == DAMO_OK) {
    int64_t n = 0, n2 = 0;
    const float *p = damo_gpt2_param_block(m, &n), *q = damo_gpt2_param_block(hf, &n2);
    if (n == n2 && !memcmp(p, q, (size_t)n * sizeof *p)) step = damo_gpt2_trainer_steps_done(t);
  }
  damo_gpt2_trainer_free(t);
  damo_gpt2_free(m);
  damo_gpt2_free(hf);
  return step;
}

/* A trainer of the tiny model after `steps` steps. */
static damo_gpt2_trainer *gpt_trainer(const damo_token_data *data, int steps, damo_gpt2 **model) {
  damo_gpt2_config c = {1, 2, 16, 16, 32, 1e-5f};
  damo_gpt2_train_options o = gpt_options();
  damo_gpt2_trainer *t = NULL;
  CHECK(damo_gpt2_new(&c, 9, model) == DAMO_OK && damo_gpt2_trainer_new(*model, data, &o, &t) == DAMO_OK);
  for (int i = 0; i < steps; i++) CHECK(damo_gpt2_trainer_step(t, NULL) == DAMO_OK);
  return t;
}

static void test_gpt2_checkpoint_faults(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/gpt", tmpdir);
  damo_token_data *data = token_stream();
  damo_gpt2 *m1 = NULL, *m2 = NULL;
  damo_gpt2_trainer *t1 = gpt_trainer(data, 1, &m1), *t2 = gpt_trainer(data, 2, &m2);
  CHECK(damo_gpt2_trainer_save(t1, dir) == DAMO_OK);
  damo_io_fault_arm(LONG_MAX, DAMO_IO_FAULT_FAIL); /* the steps of saving over a checkpoint */
  CHECK(damo_gpt2_trainer_save(t1, dir) == DAMO_OK);
  int steps = (int)damo_io_fault_steps();
  damo_io_fault_arm(0, DAMO_IO_FAULT_FAIL);
  CHECK(checkpoint_step(dir, data) == 1);
  int old = 0, new = 0, late = 0, bad = 0, kills = 0;
  for (int k = 1; k <= steps; k++) {
    CHECK(damo_gpt2_trainer_save(t1, dir) == DAMO_OK);
    damo_io_fault_arm(k, DAMO_IO_FAULT_FAIL);
    damo_status st = damo_gpt2_trainer_save(t2, dir);
    damo_io_fault_arm(0, DAMO_IO_FAULT_FAIL);
    int64_t s = checkpoint_step(dir, data);
    if (s == 1 && st != DAMO_OK) old++;
    else if (s == 2 && st == DAMO_OK) new++;
    else if (s == 2) late++;
    else bad++, fprintf(stderr, "  gpt2 fault at step %d: status %d, checkpoint step %lld\n", k, st, (long long)s);
  }
  for (int k = 1; k <= steps; k++) {
    CHECK(damo_gpt2_trainer_save(t1, dir) == DAMO_OK);
    save_job job = {1, t2, dir};
    kills += killed_at_step(k, &job);
    int64_t s = checkpoint_step(dir, data);
    if (s != 1 && s != 2) bad++, fprintf(stderr, "  gpt2 kill at step %d: checkpoint step %lld\n", k, (long long)s);
  }
  CHECK(damo_gpt2_trainer_save(t2, dir) == DAMO_OK && checkpoint_step(dir, data) == 2);
  CHECK(count_prefixed(tmpdir, ".gpt.") == 0);
  CHECK_MSG(bad == 0 && kills == steps && old > steps / 2 && new > 0,
            "gpt2 checkpoint: %d steps, I/O error -> old %d, new %d, late %d, broken %d; %d kills", steps, old, new, late,
            bad, kills);
  printf("  gpt2 checkpoint: %d steps; I/O error: %d old, %d new, %d failed after the switch; kill: %d old-or-new\n",
         steps, old, new, late, kills);
  damo_gpt2_trainer_free(t1);
  damo_gpt2_trainer_free(t2);
  damo_gpt2_free(m1);
  damo_gpt2_free(m2);
  damo_token_data_free(data);
  run("rm -rf '%s'", dir);
}

/* ------------------------------------------------------------------ BERT */

static damo_bert *tiny_bert(uint64_t seed) {
  damo_bert_config c = damo_bert_config_default();
  c.vocab_size = 40, c.hidden_size = 8, c.num_hidden_layers = 1, c.num_attention_heads = 2;
  c.intermediate_size = 16, c.max_position_embeddings = 16;
  damo_bert *m = NULL;
  CHECK(damo_bert_new(&c, seed, &m) == DAMO_OK);
  return m;
}

static int bert_dir_holds(const char *dir, const damo_bert *m) {
  damo_bert *got = NULL;
  if (damo_bert_load(dir, 0, 1, &got) != DAMO_OK) return 0;
  int64_t n = 0, n2 = 0;
  const float *p = damo_bert_param_block(m, &n), *q = damo_bert_param_block(got, &n2);
  int same = n == n2 && !memcmp(p, q, (size_t)n * sizeof *p);
  damo_bert_free(got);
  return same;
}

static void test_bert_save_faults(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/bert", tmpdir);
  damo_bert *a = tiny_bert(1), *b = tiny_bert(2);
  CHECK(damo_bert_save(a, dir) == DAMO_OK && bert_dir_holds(dir, a));
  damo_io_fault_arm(LONG_MAX, DAMO_IO_FAULT_FAIL);
  CHECK(damo_bert_save(b, dir) == DAMO_OK);
  int steps = (int)damo_io_fault_steps(), bad = 0, kills = 0;
  damo_io_fault_arm(0, DAMO_IO_FAULT_FAIL);
  for (int k = 1; k <= steps; k++) {
    CHECK(damo_bert_save(a, dir) == DAMO_OK);
    damo_io_fault_arm(k, DAMO_IO_FAULT_FAIL);
    damo_status st = damo_bert_save(b, dir);
    damo_io_fault_arm(0, DAMO_IO_FAULT_FAIL);
    if (!(st != DAMO_OK ? bert_dir_holds(dir, a) || bert_dir_holds(dir, b) : bert_dir_holds(dir, b))) bad++;
    CHECK(damo_bert_save(a, dir) == DAMO_OK);
    save_job job = {2, b, dir};
    kills += killed_at_step(k, &job);
    if (!bert_dir_holds(dir, a) && !bert_dir_holds(dir, b)) bad++;
  }
  CHECK(damo_bert_save(a, dir) == DAMO_OK);
  CHECK(count_prefixed(tmpdir, ".bert.") == 0);
  CHECK_MSG(bad == 0 && kills == steps, "bert: %d steps, %d broken, %d kills", steps, bad, kills);
  printf("  bert save: %d steps, every I/O error and kill left the old or the new model\n", steps);
  damo_bert_free(a);
  damo_bert_free(b);
  run("rm -rf '%s'", dir);
}

/* Two saves of one directory open at once in one process (two threads of a server) would
 * share the staging name: the second is refused instead of wiping the first's folder. */
static void test_second_save_in_process_refused(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/twice", tmpdir);
  damo_model *a = tiny_mlp(1), *b = tiny_mlp(2);
  CHECK(damo_model_save(a, dir) == DAMO_OK);
  damo_dir_save *tx = NULL;
  CHECK(damo_dir_save_begin(dir, &tx) == DAMO_OK);
  CHECK(damo_model_save(b, dir) == DAMO_ERR_STATE && strstr(damo_last_error(), "another thread"));
  CHECK(damo_model_save(b, damo_dir_save_folder(tx)) == DAMO_OK); /* joining it is the way */
  CHECK(dir_holds(dir, a));
  CHECK(damo_dir_save_commit(tx) == DAMO_OK && dir_holds(dir, b));
  damo_model_free(a);
  damo_model_free(b);
  run("rm -rf '%s'", dir);
}

/* ------------------------------------------------------------------ stale files */

static long dead_pid(void) {
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, NULL, 0);
  return (long)pid;
}

static void test_stale_files_removed(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/stale", tmpdir);
  damo_model *a = tiny_mlp(1);
  CHECK(damo_model_save(a, dir) == DAMO_OK);
  long dead = dead_pid();
  char path[700], host[64] = "host";
  gethostname(host, sizeof host);
  host[sizeof host - 1] = '\0';
  snprintf(path, sizeof path, "%s/trainer_state.safetensors.tmp.%ld", dir, dead);
  write_bytes(path, "partial", 7); /* an interrupted write of an earlier version */
  char live[700];
  snprintf(live, sizeof live, "%s/data.tmp.1", dir); /* pid 1 is alive: not ours to remove */
  write_bytes(live, "x", 1);
  char staging[700];
  snprintf(staging, sizeof staging, "%s/.stale.saving.%ld.%s", tmpdir, dead, host);
  CHECK(mkdir(staging, 0755) == 0);
  CHECK(damo_model_save(a, dir) == DAMO_OK);
  CHECK_MSG(access(path, F_OK) != 0, "a dead process's temp file survived the save");
  CHECK(access(live, F_OK) == 0);
  CHECK_MSG(access(staging, F_OK) != 0, "a dead process's staging folder survived the save");
  /* A single output file: a killed writer's temp file goes at the next write of that file. */
  char out[700], temp[720];
  snprintf(out, sizeof out, "%s/probs.npy", tmpdir);
  snprintf(temp, sizeof temp, "%s.tmp.%ld", out, dead);
  write_bytes(temp, "partial", 7);
  damo_tensor *t = small_tensor(3);
  CHECK(damo_npy_save(out, t) == DAMO_OK);
  CHECK_MSG(access(temp, F_OK) != 0, "a dead writer's temp file survived the next write");
  damo_tensor_free(t);
  unlink(out);
  damo_model_free(a);
  run("rm -rf '%s'", dir);
}

/* ------------------------------------------------------------------ non-finite weights */

static void test_nan_weights_refused(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/nan", tmpdir);
  damo_model *a = tiny_mlp(1), *b = tiny_mlp(2);
  CHECK(damo_model_save(a, dir) == DAMO_OK);
  b->param_block[7] = NAN;
  CHECK(damo_model_save(b, dir) == DAMO_ERR_NUMERIC);
  CHECK_MSG(strstr(damo_last_error(), "NaN") && strstr(damo_last_error(), "kernel"), "%s", damo_last_error());
  CHECK(dir_holds(dir, a)); /* the saved model is untouched */
  /* A file that holds NaN (written by another tool) is refused on load, naming the tensor. */
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  damo_tensor_f32(d->tensors[0])[1] = INFINITY;
  CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
  damo_tensor_dict_free(d);
  damo_model *got = NULL;
  CHECK(damo_model_load(dir, &got) == DAMO_ERR_NUMERIC && !got);
  CHECK_MSG(strstr(damo_last_error(), "model.safetensors") && strstr(damo_last_error(), "Inf"), "%s", damo_last_error());
  /* GPT-2 and BERT directories refuse to save such weights too. */
  damo_bert *bert = tiny_bert(3);
  damo_bert_param_block(bert, NULL)[5] = NAN;
  CHECK(damo_bert_save(bert, tmp_path("nan_bert")) == DAMO_ERR_NUMERIC);
  damo_bert_free(bert);
  damo_model_free(a);
  damo_model_free(b);
  run("rm -rf '%s' '%s'", dir, tmp_path("nan_bert"));
}

/* A config.json declaring a huge layer beside a small model.safetensors is refused before
 * the weights are allocated (not after a multi-gigabyte calloc and initialisation). */
static void test_hostile_units_refused_before_allocating(void) {
  char dir[512], path[600];
  snprintf(dir, sizeof dir, "%s/huge", tmpdir);
  damo_model *a = tiny_mlp(1);
  CHECK(damo_model_save(a, dir) == DAMO_OK);
  snprintf(path, sizeof path, "%s/config.json", dir);
  const char *cfg = "{\"format\": \"damo.sequential\", \"input_shape\": [6], \"layers\": ["
                    "{\"type\": \"dense\", \"name\": \"dense\", \"units\": 100000000}]}";
  write_bytes(path, cfg, strlen(cfg));
  struct rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  damo_model *m = NULL;
  CHECK(damo_model_load(dir, &m) == DAMO_ERR_FORMAT && !m);
  getrusage(RUSAGE_SELF, &after);
  CHECK_MSG(strstr(damo_last_error(), "declares 700000000 weights"), "%s", damo_last_error());
  CHECK_MSG(after.ru_maxrss - before.ru_maxrss < 65536, "peak RSS grew by %ld KiB", after.ru_maxrss - before.ru_maxrss);
  damo_model_free(a);
  run("rm -rf '%s'", dir);
}

/* ------------------------------------------------------------------ divergence */

static void test_divergence_watch(void) {
  damo_divergence d;
  damo_divergence_init(&d);
  int fired = 0;
  for (int i = 0; i < 5; i++) fired |= damo_divergence_update(&d, 2.0f);
  CHECK_NEAR(d.reference, 2.0, 1e-9);
  CHECK_NEAR(damo_divergence_threshold(&d), 200.0, 1e-9);
  /* Spikes are noise while fewer than 20 of the last 50 steps have them. */
  for (int i = 0; i < 19; i++) fired |= damo_divergence_update(&d, 1e6f);
  for (int i = 0; i < 31; i++) fired |= damo_divergence_update(&d, 1.0f);
  for (int i = 0; i < 200; i++) fired |= damo_divergence_update(&d, i % 3 ? 2.5f : 150.0f); /* under 200 */
  for (int i = 0; i < 100; i++) fired |= damo_divergence_update(&d, i % 5 ? 2.5f : 1e9f); /* 10 of 50 */
  CHECK(!fired);
  /* A blown-up run is spiky: every other step far above. */
  int at = 0;
  for (int i = 0; i < 100 && !at; i++)
    if (damo_divergence_update(&d, i % 2 ? 1.0f : 5e20f)) at = i + 1;
  CHECK_MSG(at >= 20 && at <= 50, "fired at step %d", at);
}

static damo_model *fashion_mlp(float lr) {
  const int64_t in[] = {28, 28};
  damo_model *m = damo_sequential_new(2, in);
  damo_model_add(m, damo_rescaling(1.0f / 255.0f, 0.0f));
  damo_model_add(m, damo_flatten());
  damo_model_add(m, damo_dense(256, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(128, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(10, DAMO_ACT_SOFTMAX));
  damo_model_build(m, 42);
  damo_compile_options c = {.optimizer = damo_adam(lr),
                            .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = DAMO_METRIC_ACCURACY};
  damo_model_compile(m, &c);
  return m;
}

/* The case: the demo MLP with Adam at lr 1e6 drove the loss to 4.8e20 (epoch mean)
 * while every value stayed finite, and the model was saved with exit 0. fit must stop it. */
static void test_fit_stops_diverging_run(void) {
  damo_tensor *xa, *ya;
  if (damo_dataset_load("fashion-mnist", "train", &xa, &ya) != DAMO_OK) {
    fprintf(stderr, "  (skipped: Fashion-MNIST not installed)\n");
    return;
  }
  damo_tensor *x = damo_tensor_slice_rows(xa, 0, 3200), *y = damo_tensor_slice_rows(ya, 0, 3200);
  damo_tensor_free(xa);
  damo_tensor_free(ya);
  damo_model *m = fashion_mlp(1e6f);
  damo_fit_options f = {.epochs = 2, .batch_size = 64, .seed = 1, .verbose = 0};
  damo_history *h = NULL;
  damo_status st = damo_model_fit(m, x, y, &f, &h);
  CHECK_MSG(st == DAMO_ERR_NUMERIC && strstr(damo_last_error(), "diverged"), "status %d: %s", st, damo_last_error());
  printf("  lr 1e6: %s\n", damo_last_error());
  damo_history_free(h);
  /* The same data at the demo's rate trains without the watch firing. */
  damo_model *ok = fashion_mlp(1e-3f);
  damo_history *h2 = NULL;
  CHECK(damo_model_fit(ok, x, y, &f, &h2) == DAMO_OK);
  damo_history_free(h2);
  damo_model_free(ok);
  damo_model_free(m);
  damo_tensor_free(x);
  damo_tensor_free(y);
}

/* ------------------------------------------------------------------ locks and races */

static void write_training_files(void) {
  int64_t n = quick() ? 600 : 3000, shape[2] = {n, 6};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 2, shape), *y = damo_tensor_new(DAMO_I32, 1, shape);
  damo_rng r;
  damo_rng_seed(&r, 5);
  for (int64_t i = 0; i < n; i++) {
    int c = (int)damo_rng_below(&r, 3);
    damo_tensor_i32(y)[i] = c;
    for (int k = 0; k < 6; k++) damo_tensor_f32(x)[i * 6 + k] = (float)damo_rng_normal(&r) + (k == c ? 2.0f : 0.0f);
  }
  CHECK(damo_npy_save(tmp_path("x.npy"), x) == DAMO_OK && damo_npy_save(tmp_path("y.npy"), y) == DAMO_OK);
  const char *json = "{\"input_shape\": [6], \"layers\": [{\"type\": \"dense\", \"units\": 32, \"activation\": \"relu\"},"
                     " {\"type\": \"dense\", \"units\": 3, \"activation\": \"softmax\"}],"
                     " \"optimizer\": {\"type\": \"adam\", \"learning_rate\": 0.01}, \"metrics\": [\"accuracy\"]}";
  write_bytes(tmp_path("mlp.json"), json, strlen(json));
  damo_tensor_free(x);
  damo_tensor_free(y);
}

static void test_lock_refuses_second_writer(void) {
  write_training_files();
  char dir[512];
  snprintf(dir, sizeof dir, "%s/locked", tmpdir);
  damo_dir_lock *lock = NULL;
  CHECK(damo_dir_lock_acquire(dir, &lock) == DAMO_OK && lock);
  damo_dir_lock *again = NULL;
  CHECK(damo_dir_lock_acquire(dir, &again) == DAMO_ERR_STATE && !again);
  /* Another process: its lock and its saves are refused, naming this process. */
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    damo_dir_lock *l = NULL;
    char want[32];
    snprintf(want, sizeof want, "process %ld", (long)getppid());
    int ok = damo_dir_lock_acquire(dir, &l) == DAMO_ERR_STATE && strstr(damo_last_error(), want);
    damo_model *m = tiny_mlp(1);
    ok = ok && damo_model_save(m, dir) == DAMO_ERR_STATE;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  /* The command line: refused before any training. */
  char want[64];
  snprintf(want, sizeof want, "being written by process %ld", (long)getpid());
  int rc = run("%s train --config %s --data %s,%s --epochs 1 --out %s", DAMO_CLI_PATH, tmp_path("mlp.json"),
               tmp_path("x.npy"), tmp_path("y.npy"), dir);
  CHECK_MSG(rc == 1 && strstr(cli_out, want) && !strstr(cli_out, "Epoch 1"), "rc %d: %s", rc, cli_out);
  damo_dir_lock_release(lock);
  rc = run("%s train --config %s --data %s,%s --epochs 1 --out %s", DAMO_CLI_PATH, tmp_path("mlp.json"),
           tmp_path("x.npy"), tmp_path("y.npy"), dir);
  CHECK_MSG(rc == 0, "rc %d: %s", rc, cli_out);
  char lockfile[600];
  snprintf(lockfile, sizeof lockfile, "%s/.damo.lock", dir);
  CHECK(access(lockfile, F_OK) != 0); /* released and removed */
  run("rm -rf '%s'", dir);
}

/* Two runs started together into one directory, many times: every time the directory loads,
 * and a run either wins, waits its turn (started after the other finished) or is refused. */
static void test_concurrent_runs(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/race", tmpdir);
  int trials = quick() ? 4 : 10, refused = 0, both = 0, broken = 0;
  for (int i = 0; i < trials; i++) {
    run("rm -rf '%s'", dir);
    int rc = run("cd %s && { (%s train --config mlp.json --data x.npy,y.npy --epochs 3 --verbose 0 --out race > a.log"
                 " 2>&1; echo $? > a.rc) & (%s train --config mlp.json --data x.npy,y.npy --epochs 3 --verbose 0 --out race"
                 " > b.log 2>&1; echo $? > b.rc) & wait; }",
                 tmpdir, DAMO_CLI_PATH, DAMO_CLI_PATH);
    CHECK(rc == 0);
    int a = -1, b = -1;
    FILE *f = fopen(tmp_path("a.rc"), "r");
    if (f) a = fscanf(f, "%d", &a) == 1 ? a : -1, fclose(f);
    f = fopen(tmp_path("b.rc"), "r");
    if (f) b = fscanf(f, "%d", &b) == 1 ? b : -1, fclose(f);
    run("cat %s %s", tmp_path("a.log"), tmp_path("b.log"));
    int said = strstr(cli_out, "being written by process") != NULL;
    damo_model *m = NULL;
    int loads = damo_model_load(dir, &m) == DAMO_OK;
    damo_model_free(m);
    if (!loads || (a != 0 && b != 0) || ((a != 0 || b != 0) && !said))
      broken++, fprintf(stderr, "  race %d: exit %d and %d, loads %d:\n%s\n", i, a, b, loads, cli_out);
    refused += a != 0 || b != 0;
    both += a == 0 && b == 0;
  }
  CHECK_MSG(broken == 0, "%d of %d races broke the directory or failed without the lock message", broken, trials);
  printf("  %d races: %d refused the second run, %d ran one after the other, %d broken\n", trials, refused, both, broken);
  run("rm -rf '%s' %s/a.* %s/b.*", dir, tmpdir, tmpdir);
}

/* The command line killed at every step of its final save (DAMO_IO_FAULT=kill:K): model
 * files, text files and history.png go in one switch, so the directory always loads as the
 * previous run's model or the new one, and history.csv goes with them (written whole at each checkpoint); --overwrite replaces the first run. */
static void test_cli_killed_while_saving(void) {
  char dir[512], cmd[2048];
  snprintf(dir, sizeof dir, "%s/killed", tmpdir);
  snprintf(cmd, sizeof cmd, "cd %s && %s train --config mlp.json --data x.npy,y.npy --epochs 1 --verbose 0 --out killed",
           tmpdir, DAMO_CLI_PATH);
  CHECK(run("%s --seed 1", cmd) == 0);
  damo_model *first = NULL;
  CHECK(damo_model_load(dir, &first) == DAMO_OK);
  CHECK(run("cp -a '%s' '%s.keep'", dir, dir) == 0); /* the state every kill starts from */
  int kills = 0, old = 0, new = 0, broken = 0, tried = 0;
  for (int k = 1; k <= 60; k += quick() ? 4 : 1) {
    run("rm -rf '%s' && cp -a '%s.keep' '%s'", dir, dir, dir);
    int rc = run("export DAMO_IO_FAULT=kill:%d; %s --seed 2 --overwrite", k, cmd);
    if (rc == 0) break; /* k is past the last step */
    tried++;
    kills += rc == 128 + SIGKILL; /* the shell reports its child's death so */
    damo_model *m = NULL;
    if (damo_model_load(dir, &m) != DAMO_OK) {
      broken++;
      fprintf(stderr, "  kill at step %d: %s\n", k, damo_last_error());
    } else if (!memcmp(m->param_block, first->param_block, (size_t)first->n_params * sizeof(float))) {
      old++;
    } else {
      new++;
    }
    damo_model_free(m);
  }
  CHECK_MSG(broken == 0 && kills == tried && old > 0 && new > 0, "%d kills: %d old, %d new, %d broken", tried, old, new,
            broken);
  printf("  damo train killed at %d save steps: %d left the old model, %d the new one, %d broken\n", tried, old, new,
         broken);
  damo_model_free(first);
  run("rm -rf '%s' '%s.keep'", dir, dir);
}

static void test_unwritable_out_fails_before_training(void) {
  const char *file = tmp_path("plainfile");
  write_bytes(file, "x", 1);
  int rc = run("%s train --config %s --data %s,%s --epochs 1 --out %s", DAMO_CLI_PATH, tmp_path("mlp.json"),
               tmp_path("x.npy"), tmp_path("y.npy"), file);
  CHECK_MSG(rc == 1 && strstr(cli_out, "not a directory") && !strstr(cli_out, "Epoch 1"), "rc %d: %s", rc, cli_out);
  rc = run("%s train --config %s --data %s,%s --epochs 1 --out /proc/damo_no/such", DAMO_CLI_PATH, tmp_path("mlp.json"),
           tmp_path("x.npy"), tmp_path("y.npy"));
  CHECK_MSG(rc == 1 && !strstr(cli_out, "Epoch 1"), "rc %d: %s", rc, cli_out);
  if (geteuid() != 0) { /* root writes anywhere: only a non-root run can test permissions */
    const char *ro = tmp_path("readonly");
    mkdir(ro, 0555);
    rc = run("%s train --config %s --data %s,%s --epochs 1 --out %s/m", DAMO_CLI_PATH, tmp_path("mlp.json"),
             tmp_path("x.npy"), tmp_path("y.npy"), ro);
    CHECK_MSG(rc == 1 && !strstr(cli_out, "Epoch 1"), "rc %d: %s", rc, cli_out);
    rmdir(ro);
  }
  unlink(file);
}

int main(void) {
  tmpdir_template("reliability");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(test_fifo_written_in_place);
  RUN(test_char_device_written_in_place);
  RUN(test_symlinks_followed);
  RUN(test_sequential_save_faults);
  RUN(test_gpt2_checkpoint_faults);
  RUN(test_bert_save_faults);
  RUN(test_second_save_in_process_refused);
  RUN(test_stale_files_removed);
  RUN(test_nan_weights_refused);
  RUN(test_hostile_units_refused_before_allocating);
  RUN(test_divergence_watch);
  RUN(test_fit_stops_diverging_run);
  RUN(test_lock_refuses_second_writer);
  RUN(test_concurrent_runs);
  RUN(test_cli_killed_while_saving);
  RUN(test_unwritable_out_fails_before_training);
  run("rm -rf '%s'", tmpdir);
  return test_summary("reliability");
}
