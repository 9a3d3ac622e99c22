/* test_distributed.c - data-parallel training under mpirun equals one process.
 *
 * For every model kind (a Sequential MLP, GPT-2, BERT masked-LM pre-training, BERT
 * fine-tuning) `damo train` runs once as one process, then as 2 and 3 ranks (uneven shares
 * of every batch: 5 = 3 + 2 = 2 + 2 + 1), with ZeRO stage 1, with small buckets (many
 * overlapped all-reduces), with gradient accumulation, and over TCP on loopback (--mca btl
 * tcp,self); the saved weights must agree with the single process's within 1e-5 (absolute
 * for weights in [-1, 1], else relative), the history's figures within 1e-5 relative. Then: a run
 * killed on rank 1 (SIGKILL) makes the others stop within 60 s, and its last checkpoint
 * resumes on another number of ranks to the same weights; ranks given different data refuse
 * to start; `damo train --np 2` starts mpirun itself.
 *
 * The runs use no dropout (each rank draws its own masks, so a run with dropout is a
 * different, equally valid run); BatchNorm is compared with --sync-batchnorm (the default,
 * per-rank batch statistics, is a different run too). A build without MPI checks the world
 * of one only. */
#include "damo.h"
#include "harness.h"
#include "cli_run.h"
#include "tmpfiles.h"
#include "mail_fixtures.h"

#include <ctype.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef DAMO_CLI_PATH
#define DAMO_CLI_PATH "build/damo"
#endif

/* Open MPI's mpirun; DAMO_TEST_MPICH=1 runs the same tests with MPICH's launcher (a build
 * against MPICH: cmake -DMPI_C_COMPILER=mpicc.mpich). */
static const char *mpirun_prefix(void) {
  return getenv("DAMO_TEST_MPICH") ? "mpiexec.mpich -genv DAMO_NUM_THREADS 1 "
                                   : "mpirun --allow-run-as-root --oversubscribe --bind-to none -x DAMO_NUM_THREADS=1 ";
}
static int mpich(void) { return getenv("DAMO_TEST_MPICH") != NULL; }
#define WEIGHT_TOL 1e-5
#define FIGURE_TOL 1e-5

static void write_file(const char *name, const char *text) { write_bytes(tmp_path(name), text, strlen(text)); }

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The largest difference between the F32 tensors of two safetensors files, relative to each
 * tensor's largest magnitude where that exceeds 1 (absolute below: Adam moves a weight whose
 * true gradient is 0, such as a key bias, by noise-level gradients in either direction, so
 * a relative figure on such a tensor measures noise); INFINITY when the tensors differ. */
static double weights_diff(const char *a, const char *b) {
  damo_tensor_dict *x = NULL, *y = NULL;
  double worst = INFINITY;
  if (damo_safetensors_load(a, &x) == DAMO_OK && damo_safetensors_load(b, &y) == DAMO_OK && x->count == y->count) {
    worst = 0;
    for (int i = 0; i < x->count; i++) {
      const damo_tensor *p = x->tensors[i], *q = damo_tensor_dict_get(y, x->names[i]);
      if (!q || damo_tensor_numel(p) != damo_tensor_numel(q)) return INFINITY;
      if (p->dtype != DAMO_F32) continue;
      double scale = 1.0, diff = 0; /* absolute for weights within [-1, 1], relative above */
      for (int64_t k = 0; k < damo_tensor_numel(p); k++) {
        const double u = damo_tensor_f32(p)[k], v = damo_tensor_f32(q)[k];
        scale = fmax(scale, fabs(u));
        diff = fmax(diff, fabs(u - v));
        if (!isfinite(v)) diff = INFINITY;
      }
      worst = fmax(worst, diff / scale);
    }
  }
  damo_tensor_dict_free(x);
  damo_tensor_dict_free(y);
  return worst;
}

/* The largest relative difference between the numbers of two history.csv files of the same
 * shape (the header and the epoch/step column must be equal). */
static double history_diff(const char *a, const char *b) {
  FILE *f = fopen(a, "r"), *g = fopen(b, "r");
  double worst = f && g ? 0 : INFINITY;
  char la[4096], lb[4096];
  while (f && g && worst < INFINITY) {
    char *ra = fgets(la, sizeof la, f), *rb = fgets(lb, sizeof lb, g);
    if (!ra || !rb) {
      if (ra || rb) worst = INFINITY;
      break;
    }
    if (isalpha((unsigned char)la[0])) {
      if (strcmp(la, lb)) worst = INFINITY;
      continue;
    }
    char *pa = la, *pb = lb;
    for (;;) {
      char *ea, *eb;
      const double u = strtod(pa, &ea), v = strtod(pb, &eb);
      if (ea == pa || eb == pb) break;
      if (!(isnan(u) && isnan(v))) worst = fmax(worst, fabs(u - v) / fmax(fabs(u), 1e-12));
      pa = ea + (*ea == ','), pb = eb + (*eb == ',');
    }
  }
  if (f) fclose(f);
  if (g) fclose(g);
  return worst;
}

/* Trains `train --out DIR` with `prefix` before it (one process: an environment setting); 1
 * on success. */
static int train(const char *prefix, const char *train_cmd, const char *dir) {
  int rc = run("rm -rf %s; %s%s --out %s", dir, prefix, train_cmd, dir);
  if (rc != 0) fprintf(stderr, "    failed (%d): %s%s --out %s\n%s\n", rc, prefix, train_cmd, dir, cli_out);
  return rc == 0;
}

/* The same under the MPI launcher with mpi_args ("-np 2 "). */
static int train_ranks(const char *mpi_args, const char *train_cmd, const char *dir) {
  char prefix[512];
  snprintf(prefix, sizeof prefix, "%s%s", mpirun_prefix(), mpi_args);
  return train(prefix, train_cmd, dir);
}

/* The single-process run of train_cmd, then each variant; weights and history must agree. */
static void compare_variants(const char *kind, const char *train_cmd) {
  char ref[1024], path_a[1100], path_b[1100];
  snprintf(ref, sizeof ref, "%s", tmp_path("ref"));
  CHECK_MSG(train("DAMO_NUM_THREADS=1 ", train_cmd, ref), "%s: the single-process run", kind);
  static const struct {
    const char *mpi_args, *extra, *what;
  } variants[] = {
      {"-np 2 ", "", "2 ranks"},
      {"-np 3 ", "", "3 ranks"},
      {"-np 2 ", " --zero 1", "2 ranks, ZeRO-1"},
      {"-np 3 ", " --zero 1 --bucket-mb 0.002", "3 ranks, ZeRO-1, 2 kB buckets"},
      {"-np 2 ", " --bucket-mb 0.002", "2 ranks, 2 kB buckets"},
      {"--mca btl tcp,self -np 2 ", "", "2 ranks over TCP"}, /* Open MPI's option */
  };
  for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
    if (getenv("DAMO_TEST_QUICK") && v != 1 && v != 3) continue; /* ASan: 3 ranks, plain and the harshest */
    if (mpich() && v == 5) continue;
    char cmd[3000], dir[1024];
    snprintf(cmd, sizeof cmd, "%s%s", train_cmd, variants[v].extra);
    snprintf(dir, sizeof dir, "%s", tmp_path("dp"));
    const double t0 = now();
    if (!train_ranks(variants[v].mpi_args, cmd, dir)) {
      CHECK_MSG(0, "%s, %s: the run failed", kind, variants[v].what);
      continue;
    }
    snprintf(path_a, sizeof path_a, "%s/model.safetensors", ref);
    snprintf(path_b, sizeof path_b, "%s/model.safetensors", dir);
    const double w = weights_diff(path_a, path_b);
    snprintf(path_a, sizeof path_a, "%s/history.csv", ref);
    snprintf(path_b, sizeof path_b, "%s/history.csv", dir);
    const double h = history_diff(path_a, path_b);
    printf("    %-18s %-32s weights %.2e, history %.2e (%.1f s)\n", kind, variants[v].what, w, h, now() - t0);
    CHECK_MSG(w <= WEIGHT_TOL, "%s, %s: weights differ by %.3g of their scale", kind, variants[v].what, w);
    CHECK_MSG(h <= FIGURE_TOL, "%s, %s: history figures differ by %.3g", kind, variants[v].what, h);
  }
}

static void write_rows(void) {
  FILE *f = fopen(tmp_path("rows.csv"), "w");
  if (!f) return;
  damo_rng r;
  damo_rng_seed(&r, 11);
  fprintf(f, "label,a,b,c,d,e,f\n");
  for (int i = 0; i < 202; i++) { /* 162 training rows: batches of 10 end with 2 rows (3 ranks: one has none) */
    float v[6];
    for (int k = 0; k < 6; k++) v[k] = damo_rng_normal(&r);
    fprintf(f, "%d", v[0] + v[1] - v[2] > 0);
    for (int k = 0; k < 6; k++) fprintf(f, ",%.5f", (double)v[k]);
    fprintf(f, "\n");
  }
  fclose(f);
}

static void test_sequential(void) {
  write_rows();
  write_file("mlp.json", "{\"format\": \"damo.sequential\", \"input_shape\": [6], \"layers\": ["
                         "{\"type\": \"dense\", \"units\": 24, \"activation\": \"relu\"},"
                         "{\"type\": \"dense\", \"units\": 12, \"activation\": \"tanh\"},"
                         "{\"type\": \"dense\", \"units\": 2, \"activation\": \"softmax\"}],"
                         "\"optimizer\": {\"type\": \"adam\", \"learning_rate\": 0.01, \"clipnorm\": 1.0},"
                         "\"loss\": \"sparse_categorical_crossentropy\", \"metrics\": [\"accuracy\"]}");
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s --epochs 4 --batch-size 10 --validation-split 0.2 "
           "--verbose 2 --patience 2", DAMO_CLI_PATH, tmp_path("mlp.json"), tmp_path("rows.csv"));
  compare_variants("sequential", cmd); /* early stopping on (rank 0 decides, best weights kept) */
}

/* A model of two outputs: each output's loss, accuracy, precision and AUC, trained and
 * validated on shares of the rows, reduce to one process's figures (the history's
 * per-output columns). */
static void test_two_outputs(void) {
  const int64_t n = 202, xs[] = {n, 6}, ys[] = {n}, rs[] = {n, 1};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 2, xs), *c = damo_tensor_new(DAMO_I32, 1, ys);
  damo_tensor *t = damo_tensor_new(DAMO_F32, 2, rs);
  damo_rng r;
  damo_rng_seed(&r, 12);
  for (int64_t i = 0; x && c && t && i < n; i++) {
    float *v = damo_tensor_f32(x) + i * 6;
    for (int k = 0; k < 6; k++) v[k] = damo_rng_normal(&r);
    damo_tensor_i32(c)[i] = v[0] + v[1] - v[2] > 0;
    damo_tensor_f32(t)[i] = 0.5f * v[3] - v[4];
  }
  char xp[600], cp[600], tp[600];
  snprintf(xp, sizeof xp, "%s", tmp_path("two_x.npy"));
  snprintf(cp, sizeof cp, "%s", tmp_path("two_c.npy"));
  snprintf(tp, sizeof tp, "%s", tmp_path("two_t.npy"));
  CHECK(damo_npy_save(xp, x) == DAMO_OK && damo_npy_save(cp, c) == DAMO_OK && damo_npy_save(tp, t) == DAMO_OK);
  damo_tensor_free(x), damo_tensor_free(c), damo_tensor_free(t);
  write_file("two.json", "{\"format\": \"damo.functional\", \"inputs\": [{\"name\": \"x\", \"shape\": [6]}], \"layers\": ["
                         "{\"type\": \"dense\", \"name\": \"trunk\", \"units\": 16, \"activation\": \"relu\", \"inputs\": [\"x\"]},"
                         "{\"type\": \"dense\", \"name\": \"cls\", \"units\": 2, \"activation\": \"softmax\", \"inputs\": [\"trunk\"]},"
                         "{\"type\": \"dense\", \"name\": \"reg\", \"units\": 1, \"inputs\": [\"trunk\"]}],"
                         "\"outputs\": [\"cls\", \"reg\"], \"loss\": [\"sparse_categorical_crossentropy\", \"mse\"],"
                         "\"loss_weights\": [1, 0.5], \"metrics\": {\"cls\": [\"accuracy\", \"precision\", \"auc\"]},"
                         "\"optimizer\": {\"type\": \"adam\", \"learning_rate\": 0.01}}");
  char cmd[3000];
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s,%s,%s --epochs 3 --batch-size 10 --validation-split 0.2 "
           "--verbose 2", DAMO_CLI_PATH, tmp_path("two.json"), xp, cp, tp);
  compare_variants("two outputs", cmd);
}

/* BatchNorm with --sync-batchnorm: the whole batch's statistics, so 2 and 3 ranks equal one
 * process (160 training rows in batches of 10: no short batch); a short last batch is
 * refused by name. */
static void test_sync_batchnorm(void) {
  write_rows();
  run("head -n 201 %s > %s", tmp_path("rows.csv"), tmp_path("rows200.csv")); /* 200 rows: 160 train, 40 val */
  write_file("bn.json", "{\"format\": \"damo.sequential\", \"input_shape\": [6], \"layers\": ["
                        "{\"type\": \"dense\", \"units\": 16},"
                        "{\"type\": \"batch_normalization\", \"momentum\": 0.9},"
                        "{\"type\": \"activation\", \"activation\": \"relu\"},"
                        "{\"type\": \"dense\", \"units\": 2, \"activation\": \"softmax\"}],"
                        "\"optimizer\": {\"type\": \"sgd\", \"learning_rate\": 0.05, \"momentum\": 0.9},"
                        "\"loss\": \"sparse_categorical_crossentropy\", \"metrics\": [\"accuracy\"]}");
  char cmd[2000], ref[1024], dir[1024], a[1100], b[1100];
  snprintf(ref, sizeof ref, "%s", tmp_path("bn_ref"));
  snprintf(dir, sizeof dir, "%s", tmp_path("bn_dp"));
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s --epochs 3 --batch-size 10 --validation-split 0.2 "
           "--verbose 2 --sync-batchnorm", DAMO_CLI_PATH, tmp_path("bn.json"), tmp_path("rows200.csv"));
  CHECK(train("DAMO_NUM_THREADS=1 ", cmd, ref));
  for (int ranks = 2; ranks <= 3; ranks++) {
    char np[64];
    snprintf(np, sizeof np, "-np %d ", ranks);
    if (!train_ranks(np, cmd, dir)) {
      CHECK_MSG(0, "sync batchnorm on %d ranks failed", ranks);
      continue;
    }
    snprintf(a, sizeof a, "%s/model.safetensors", ref); /* weights and the running statistics */
    snprintf(b, sizeof b, "%s/model.safetensors", dir);
    const double w = weights_diff(a, b);
    snprintf(a, sizeof a, "%s/history.csv", ref);
    snprintf(b, sizeof b, "%s/history.csv", dir);
    const double h = history_diff(a, b);
    printf("    batchnorm, synchronised, %d ranks: weights %.2e, history %.2e\n", ranks, w, h);
    CHECK_MSG(w <= WEIGHT_TOL && h <= FIGURE_TOL, "sync batchnorm on %d ranks: weights %.3g, history %.3g", ranks, w, h);
  }
  /* 162 training rows: the last batch of 2 rows cannot give 3 ranks one each */
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s --epochs 1 --batch-size 10 --validation-split 0.2 "
           "--sync-batchnorm", DAMO_CLI_PATH, tmp_path("bn.json"), tmp_path("rows.csv"));
  CHECK(!train_ranks("-np 3 ", cmd, dir) && strstr(cli_out, "synchronised BatchNorm on 3 ranks needs at least 3 rows"));
}

static int have_gpt2_vocab(void) {
  damo_bpe *bpe = NULL;
  if (damo_bpe_load(NULL, &bpe) != DAMO_OK) return 0;
  damo_bpe_free(bpe);
  return 1;
}

static void write_gpt2(void) {
  write_file("gpt.json", "{\"model_type\": \"gpt2\", \"vocab_size\": 50257, \"n_layer\": 2, \"n_head\": 2, \"n_embd\": 32,"
                         " \"n_positions\": 32, \"train\": {\"steps\": 16, \"batch_size\": 5, \"seq_len\": 32,"
                         " \"grad_accum\": 2, \"log_every\": 4, \"eval_every\": 4, \"eval_windows\": 10,"
                         " \"warmup_steps\": 3, \"lr\": 0.002}}");
  char text[40000] = "";
  for (int i = 0; i < 120; i++)
    strcat(text, i % 3 ? "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. "
                       : "It is a way I have of driving off the spleen and regulating the circulation. ");
  write_file("corpus.txt", text);
}

static void test_gpt2(void) {
  if (!have_gpt2_vocab()) {
    fprintf(stderr, "  (GPT-2 skipped: its vocabulary is not installed)\n");
    return;
  }
  write_gpt2();
  char cmd[2000]; /* under ASan (DAMO_TEST_QUICK) 6 of the 16 steps */
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s%s", DAMO_CLI_PATH, tmp_path("gpt.json"),
           tmp_path("corpus.txt"), getenv("DAMO_TEST_QUICK") ? " --steps 6" : "");
  compare_variants("gpt2 (accum 2)", cmd);
}

static void write_mails(void) {
  write_labelled_mails(90);
  write_file("bert.json", "{\"model_type\": \"bert\", \"vocab_size\": 40, \"hidden_size\": 32, \"num_hidden_layers\": 2,"
                          "\"num_attention_heads\": 4, \"intermediate_size\": 64, \"max_position_embeddings\": 64,"
                          "\"hidden_dropout_prob\": 0, \"attention_probs_dropout_prob\": 0,"
                          "\"pretrain\": {\"steps\": 12, \"batch_size\": 5, \"seq_len\": 32, \"predictions\": 6,"
                          "\"lr\": 0.002, \"warmup_steps\": 3, \"eval_every\": 6},"
                          "\"finetune\": {\"epochs\": 2, \"batch_size\": 7, \"seq_len\": 24, \"lr\": 0.003,"
                          "\"warmup_steps\": 3, \"seed\": 3, \"log_every\": 4}}");
}

static void test_bert(void) {
  write_mails();
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s --vocab %s --pretrain", DAMO_CLI_PATH,
           tmp_path("bert.json"), tmp_path("mails"), tmp_path("vocab.txt"));
  compare_variants("bert pre-training", cmd);
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s --vocab %s", DAMO_CLI_PATH, tmp_path("bert.json"),
           tmp_path("mails"), tmp_path("vocab.txt"));
  compare_variants("bert fine-tuning", cmd);
  /* only the top trained: the frozen tensors are gaps in the buckets that no backward fills */
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s --vocab %s --train-only 'encoder.layer.1.*,classifier.*'",
           DAMO_CLI_PATH, tmp_path("bert.json"), tmp_path("mails"), tmp_path("vocab.txt"));
  compare_variants("bert top only", cmd);
}

/* A rank killed with SIGKILL after the first checkpoint: mpirun ends the job within 60 s with
 * a failure; the checkpoint resumes on 3 ranks (another N) to the uninterrupted weights. */
static void test_killed_rank_and_resume(void) {
  if (!have_gpt2_vocab()) return;
  write_gpt2();
  char cmd[2000], ref[1024], dir[1024], a[1100], b[1100];
  snprintf(ref, sizeof ref, "%s", tmp_path("ref"));
  snprintf(dir, sizeof dir, "%s", tmp_path("killed"));
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s --steps %d --checkpoint-every 4", DAMO_CLI_PATH,
           tmp_path("gpt.json"), tmp_path("corpus.txt"), getenv("DAMO_TEST_QUICK") ? 16 : 60); /* ASan is slow */
  CHECK(train("DAMO_NUM_THREADS=1 ", cmd, ref));
  run("rm -rf %s", dir);
  char full[6000];
  snprintf(full, sizeof full, "exec %s-np 2 %s --out %s > %s 2>&1", mpirun_prefix(), cmd, dir, tmp_path("killed.log"));
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", full, (char *)NULL);
    _exit(127);
  }
  char state[1100];
  snprintf(state, sizeof state, "%s/trainer_state.safetensors", dir);
  int status = 0, killed = 0;
  double t0 = now(), killed_at = 0;
  for (;;) {
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    if (!killed && access(state, F_OK) == 0) { /* rank 1: the process with OMPI_COMM_WORLD_RANK=1 */
      killed = run("for p in $(pgrep -f 'damo train --config %s'); do "
                   "grep -qzE '^(OMPI_COMM_WORLD_RANK|PMI_RANK)=1$' /proc/$p/environ 2>/dev/null && kill -9 $p && echo $p; done; true",
                   tmp_path("gpt.json")) == 0 && strlen(cli_out) > 0;
      killed_at = now();
    }
    if (now() - t0 > 300) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      CHECK_MSG(0, "the job did not end after a rank was killed");
      return;
    }
    nanosleep(&(struct timespec){0, 5000000}, NULL);
  }
  run("cat %s", tmp_path("killed.log"));
  if (!killed) { /* it finished before the kill could land: nothing to test about faults */
    fprintf(stderr, "  (the run ended before rank 1 could be killed)\n");
  } else {
    printf("    killed rank 1; the job ended %.1f s later with status %d\n", now() - killed_at,
           WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    CHECK_MSG(now() - killed_at < 60, "the job took %.0f s to end after rank 1 died", now() - killed_at);
    CHECK_MSG(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the job reported success with a dead rank");
  }
  /* the last checkpoint resumes on 3 ranks */
  const double t1 = now();
  int rc = run("%s-np 3 %s --out %s --resume", mpirun_prefix(), cmd, dir);
  CHECK_MSG(rc == 0, "resume on 3 ranks: %s", cli_out);
  snprintf(a, sizeof a, "%s/model.safetensors", ref);
  snprintf(b, sizeof b, "%s/model.safetensors", dir);
  const double w = weights_diff(a, b);
  printf("    resumed on 3 ranks: weights %.2e (%.1f s)\n", w, now() - t1);
  CHECK_MSG(w <= WEIGHT_TOL, "resumed on 3 ranks: weights differ by %.3g", w);
}

/* Ranks that would train on different data refuse to start, naming what differs. */
static void test_same_run_check(void) {
  write_rows();
  run("head -n 150 %s > %s", tmp_path("rows.csv"), tmp_path("rows_short.csv"));
  char log[1100], config[1100], rows[1100], rows_short[1100], out[1100]; /* tmp_path has 4 buffers */
  snprintf(log, sizeof log, "%s", tmp_path("mixed.log"));
  snprintf(config, sizeof config, "%s", tmp_path("mlp.json"));
  snprintf(rows, sizeof rows, "%s", tmp_path("rows.csv"));
  snprintf(rows_short, sizeof rows_short, "%s", tmp_path("rows_short.csv"));
  snprintf(out, sizeof out, "%s", tmp_path("mixed"));
  int rc = run("%s-np 1 %s train --config %s --data %s --epochs 1 --out %s : "
               "-np 1 %s train --config %s --data %s --epochs 1 --out %s > %s 2>&1",
               mpirun_prefix(), DAMO_CLI_PATH, config, rows, out, DAMO_CLI_PATH, config, rows_short, out, log);
  CHECK_MSG(rc != 0, "ranks on different data trained");
  CHECK_MSG(run("grep -q \"rank 1 of 2: its training data and fit options (hash [0-9a-f]*) differs from rank 0's\" %s",
                log) == 0, "no clear refusal in %s", log);
}

/* `damo train --np 2` runs mpirun itself, with the same result as mpirun -np 2. */
static void test_np_option(void) {
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "%sDAMO_NUM_THREADS=1 %s train --config %s --data %s --epochs 2 --batch-size 10 --np 2",
           mpich() ? "DAMO_MPIRUN=mpiexec.mpich " : "", DAMO_CLI_PATH, tmp_path("mlp.json"), tmp_path("rows.csv"));
  CHECK(train("", cmd, tmp_path("np")));
  snprintf(cmd, sizeof cmd, "%s train --config %s --data %s --epochs 2 --batch-size 10", DAMO_CLI_PATH,
           tmp_path("mlp.json"), tmp_path("rows.csv"));
  CHECK(train("DAMO_NUM_THREADS=1 ", cmd, tmp_path("one")));
  char a[1100], b[1100];
  snprintf(a, sizeof a, "%s/model.safetensors", tmp_path("np"));
  snprintf(b, sizeof b, "%s/model.safetensors", tmp_path("one"));
  CHECK_MSG(weights_diff(a, b) <= WEIGHT_TOL, "--np 2 against one process: %.3g", weights_diff(a, b));
}

/* The world of one: one process through the same data-parallel path trains as before. */
static void test_world_of_one(void) {
  damo_dist *d = NULL;
  CHECK(damo_dist_world(&d) == DAMO_OK && damo_dist_size(d) == 1 && damo_dist_rank(d) == 0);
  double x[2] = {1.5, -2};
  CHECK(damo_dist_allreduce_f64(d, x, 2) == DAMO_OK && x[0] == 1.5 && x[1] == -2);
  CHECK(damo_dist_check_same(d, 42, "anything") == DAMO_OK);
  int64_t first, count, total = 0;
  for (int r = 0; r < 3; r++) {
    damo_dist_share(5, r, 3, &first, &count);
    CHECK(first == total && count == (r < 2 ? 2 : 1));
    total += count;
  }
  damo_dist_finalize();
}

int main(void) {
  tmpdir_template("distributed");
  if (!mkdtemp(tmpdir)) {
    printf("distributed: 0 passed, 1 failed\n");
    return 1;
  }
  RUN(test_world_of_one);
#ifdef DAMO_TEST_HAVE_MPI
  setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
  /* Under ASan the ranks would report Open MPI's own allocations at exit as leaks; damo's
   * side of data parallelism is leak-checked in one process (test_world_of_one, the trainer). */
  setenv("ASAN_OPTIONS", "detect_leaks=0", 0);
  setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
  if (run("%s", mpich() ? "mpiexec.mpich --version" : "mpirun --version") != 0) {
    CHECK_MSG(0, "this build has MPI but mpirun is missing: sh scripts/setup.sh installs Open MPI");
  } else {
    RUN(test_sequential);
    RUN(test_sync_batchnorm);
    RUN(test_two_outputs);
    RUN(test_gpt2);
    RUN(test_bert);
    RUN(test_killed_rank_and_resume);
    RUN(test_same_run_check);
    RUN(test_np_option);
  }
#else
  fprintf(stderr, "  (built without MPI: the multi-rank tests are skipped)\n");
#endif
  run("rm -rf '%s'", tmpdir);
  return test_summary("distributed");
}
