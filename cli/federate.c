/* federate.c - damo federate: federated averaging of a Sequential or functional config over
 * clients that each keep their own rows of --data (damo_model_federate), in this process or
 * over the ranks of an MPI job (--np N); a line per round, the global model, history.csv and
 * history.png in --out after every round (--resume continues), and the rounds it took to
 * reach --target-accuracy. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fed_cli {
  const char *config, *out;
  int target_round;
  double target;
} fed_cli;

static damo_status on_round(void *ctx, const damo_fed_round *r) {
  fed_cli *c = ctx;
  if (cli_rank() != 0) return DAMO_OK;
  printf("round %d/%d - %d clients, %lld examples - %.1fs - loss: %.4f - test_loss: %.4f - test_accuracy: %.4f", r->round,
         r->rounds, r->clients, (long long)r->examples, r->seconds, r->train_loss, r->test_loss, r->test_accuracy);
  if (!isnan(r->epsilon)) printf(" - epsilon: %.4g", r->epsilon);
  printf("\n");
  fflush(stdout);
  if (c->target > 0 && !c->target_round && r->test_accuracy >= c->target) c->target_round = r->round;
  return DAMO_OK;
}

static damo_status write_curves(void *ctx, const char *folder, const damo_history *h) {
  const fed_cli *c = ctx;
  char path[4096];
  snprintf(path, sizeof path, "%s/history.csv", folder);
  damo_status st = damo_history_csv_write(h, path);
  snprintf(path, sizeof path, "%s/history.png", folder);
  const char *name = strrchr(c->config, '/') ? strrchr(c->config, '/') + 1 : c->config;
  if (st == DAMO_OK) cli_write_history_png(h, path, name, 2);
  return st;
}

/* --partition iid | shards:S | dirichlet:ALPHA */
static int parse_partition(const char *v, damo_fed_options *o) {
  char *end;
  if (!strcmp(v, "iid")) {
    o->partition = DAMO_FED_IID;
    return 1;
  }
  if (!strncmp(v, "shards:", 7)) {
    const long s = strtol(v + 7, &end, 10);
    if (end != v + 7 && !*end && s >= 1 && s <= 1000) {
      o->partition = DAMO_FED_SHARDS, o->shards = (int)s;
      return 1;
    }
  } else if (!strncmp(v, "dirichlet:", 10)) {
    const double a = strtod(v + 10, &end);
    if (end != v + 10 && !*end && a > 0 && isfinite(a)) {
      o->partition = DAMO_FED_DIRICHLET, o->alpha = a;
      return 1;
    }
  }
  fprintf(stderr, "damo federate: --partition is iid, shards:S (S >= 1 label shards per client) or dirichlet:ALPHA "
                  "(ALPHA > 0), not '%s'\n", v);
  return 0;
}

static int parse(int argc, char **argv, damo_fed_options *o, double *lr) {
  const char *v;
  long n;
  double d;
  struct {
    const char *name;
    int *dst;
    long lo, hi;
  } ints[] = {{"--clients", &o->clients, 1, 1000000},    {"--rounds", &o->rounds, 1, 10000000},
              {"--local-epochs", &o->local_epochs, 1, 100000}, {"--batch-size", &o->batch_size, 0, 1 << 20}};
  for (size_t k = 0; k < sizeof ints / sizeof *ints; k++)
    if ((v = cli_opt(argc, argv, ints[k].name))) {
      if (!cli_parse_long(v, ints[k].name, ints[k].lo, ints[k].hi, &n)) return 0;
      *ints[k].dst = (int)n;
    }
  if ((v = cli_opt(argc, argv, "--fraction")) && !cli_parse_double(v, "--fraction", 0, 1, 1, &o->fraction)) return 0;
  if ((v = cli_opt(argc, argv, "--seed"))) {
    if (!cli_parse_long(v, "--seed", 0, 0x7fffffffL, &n)) return 0;
    o->seed = (uint64_t)n;
  }
  if ((v = cli_opt(argc, argv, "--partition")) && !parse_partition(v, o)) return 0;
  if ((v = cli_opt(argc, argv, "--algorithm"))) {
    if (!strcmp(v, "fedsgd")) {
      if (cli_opt(argc, argv, "--local-epochs") || cli_opt(argc, argv, "--batch-size")) {
        fprintf(stderr, "damo federate: --algorithm fedsgd is one full-batch step per client: leave out "
                        "--local-epochs and --batch-size\n");
        return 0;
      }
      o->local_epochs = 1, o->batch_size = 0;
    } else if (strcmp(v, "fedavg")) {
      fprintf(stderr, "damo federate: --algorithm is fedavg or fedsgd, not '%s'\n", v);
      return 0;
    }
  }
  if ((v = cli_opt(argc, argv, "--lr")) && !cli_parse_double(v, "--lr", 0, 1, HUGE_VAL, lr)) return 0;
  if ((v = cli_opt(argc, argv, "--dp-clip")) && !cli_parse_double(v, "--dp-clip", 0, 1, HUGE_VAL, &o->dp_clip)) return 0;
  if ((v = cli_opt(argc, argv, "--dp-noise")) && !cli_parse_double(v, "--dp-noise", 0, 0, 1e6, &o->dp_noise)) return 0;
  if ((v = cli_opt(argc, argv, "--dp-delta")) && !cli_parse_double(v, "--dp-delta", 0, 1, 1, &o->dp_delta)) return 0;
  if ((cli_opt(argc, argv, "--dp-noise") || cli_opt(argc, argv, "--dp-delta")) && !cli_opt(argc, argv, "--dp-clip")) {
    fprintf(stderr, "damo federate: --dp-noise and --dp-delta need --dp-clip S (each client's update is clipped to S)\n");
    return 0;
  }
  if ((v = cli_opt(argc, argv, "--target-accuracy")) && !cli_parse_double(v, "--target-accuracy", 0, 1, 1, &d)) return 0;
  if (v) o->target_accuracy = d;
  o->secure_agg = cli_flag(argc, argv, "--secure-agg");
  o->resume = cli_flag(argc, argv, "--resume");
  return 1;
}

int cli_federate(int argc, char **argv) {
  fed_cli c = {.config = cli_opt(argc, argv, "--config"), .out = cli_opt(argc, argv, "--out")};
  const char *data = cli_opt(argc, argv, "--data"), *label = cli_opt(argc, argv, "--label-column");
  if (!c.config || !data || !c.out) {
    fprintf(stderr, "damo federate: --config FILE, --data SPEC and --out DIR are required\n");
    return 2;
  }
  damo_fed_options o = {.clients = 100, .fraction = 0.1, .rounds = 100, .local_epochs = 5, .batch_size = 10,
                        .partition = DAMO_FED_IID, .shards = 2, .seed = 42};
  double lr = 0;
  if (!parse(argc, argv, &o, &lr)) return 2;
  c.target = o.target_accuracy;
  damo_model *m = NULL;
  damo_compile_options copt;
  damo_tensor *x = NULL, *y = NULL, *tx = NULL, *ty = NULL;
  damo_dir_lock *lock = NULL;
  int rc = 1;
  const int writer = cli_rank() == 0;
  if (damo_model_from_config_file(c.config, &m) != DAMO_OK) return cli_fail("federate");
  if (damo_model_config_compile_options(m, &copt) != DAMO_OK)
    copt = (damo_compile_options){.optimizer = damo_sgd(0.1f, 0, 0), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE,
                                  .metrics = DAMO_METRIC_ACCURACY};
  if (lr > 0) copt.optimizer.lr = (float)lr;
  if (writer && damo_dir_lock_acquire(c.out, &lock) != DAMO_OK) {
    rc = cli_fail("federate: the output directory");
    goto done;
  }
  char state[4096];
  snprintf(state, sizeof state, "%s/federated.json", c.out);
  if (writer && o.resume && access(state, F_OK) != 0) {
    fprintf(stderr, "damo federate: --resume: %s holds no federated run (no federated.json)\n", c.out);
    rc = 2;
    goto done;
  }
  if (writer && !o.resume && (rc = cli_check_out(c.out, 0, cli_flag(argc, argv, "--overwrite"))) != 0) goto done;
  rc = 1;
  if (damo_model_build(m, o.seed) != DAMO_OK || damo_model_compile(m, &copt) != DAMO_OK) {
    rc = cli_fail("federate");
    goto done;
  }
  if (cli_load_data(data, "train", label, &x, &y) != DAMO_OK) {
    rc = cli_fail("federate: loading the training data");
    goto done;
  }
  if (!strchr(data, ',')) cli_load_data(data, "test", label, &tx, &ty); /* a built-in set's held-out split */
  const int per = (int)lround(o.fraction * o.clients) > 0 ? (int)lround(o.fraction * o.clients) : 1;
  char batch[24] = "all their rows";
  if (o.batch_size) snprintf(batch, sizeof batch, "%d", o.batch_size);
  if (writer)
    printf("federated averaging of %s: %lld examples over %d clients (%s), %d a round, %d local epochs of batch %s, "
           "%d rounds%s%s%s\n", c.config, (long long)x->shape[0], o.clients,
           o.partition == DAMO_FED_IID ? "iid" : o.partition == DAMO_FED_SHARDS ? "label shards" : "Dirichlet", per,
           o.local_epochs, batch, o.rounds, damo_dist_size(cli_world()) > 1 ? ", clients over ranks" : "",
           o.dp_clip > 0 ? ", user-level DP" : "", o.secure_agg ? ", secure aggregation" : "");
  fflush(stdout);
  o.dist = cli_world();
  o.x_test = tx, o.y_test = ty;
  o.checkpoint_dir = writer ? c.out : NULL;
  o.checkpoint_files = write_curves, o.checkpoint_ctx = &c;
  o.on_round = on_round, o.on_round_ctx = &c;
  damo_history *h = NULL;
  if (damo_model_federate(m, x, y, &o, &h) != DAMO_OK) {
    rc = cli_fail("federate");
    goto done;
  }
  rc = 0;
  if (writer) {
    printf("saved the global model to %s/ (config.json, model.safetensors, federated.json, history.csv, history.png)\n",
           c.out);
    if (c.target > 0) {
      if (c.target_round) printf("reached test accuracy %.4f in %d rounds\n", c.target, c.target_round);
      else printf("test accuracy %.4f not reached in %d rounds\n", c.target, damo_history_epochs(h));
    }
  }
  damo_history_free(h);
done:
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_tensor_free(tx);
  damo_tensor_free(ty);
  damo_model_free(m);
  damo_dir_lock_release(lock);
  return rc;
}
