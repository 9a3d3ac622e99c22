/* parallel.c - the command line's side of data-parallel training: the process group every
 * command runs in (a world of one unless mpirun started it), `--np N` (which starts mpirun
 * on this same command), the --bucket-mb / --zero options, and ending the whole job when one
 * rank fails. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static damo_dist *world;

damo_dist *cli_world(void) { return world; }
int cli_rank(void) { return damo_dist_rank(world); }

/* Cores per rank when the user set no thread count: the node's cores shared by the ranks on
 * it, as mpirun does not (every rank would start one OpenMP thread per core). */
static void share_threads(void) {
  if (getenv("DAMO_NUM_THREADS") || getenv("OMP_NUM_THREADS")) return;
  const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (!local) local = getenv("MPI_LOCALNRANKS");
  long ranks = local ? strtol(local, NULL, 10) : damo_dist_size(world);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (ranks < 1) ranks = 1;
  damo_set_num_threads(cores / ranks > 1 ? (int)(cores / ranks) : 1);
}

int cli_world_begin(void) {
  if (damo_dist_world(&world) != DAMO_OK) {
    fprintf(stderr, "damo: %s\n", damo_last_error());
    return 0;
  }
  if (damo_dist_size(world) > 1) {
    share_threads();
    /* rank 0 alone speaks: the others' progress would repeat it; errors still go to stderr */
    if (cli_rank() != 0 && !freopen("/dev/null", "w", stdout)) fprintf(stderr, "damo: cannot silence rank %d\n", cli_rank());
  }
  return 1;
}

int cli_world_end(int rc) {
  if (rc != 0 && damo_dist_size(world) > 1) {
    fprintf(stderr, "damo: rank %d of %d failed (exit %d); stopping every rank\n", cli_rank(), damo_dist_size(world), rc);
    fflush(NULL);
    damo_dist_abort(world, rc);
  }
  damo_dist_finalize();
  return rc;
}

int cli_data_parallel_options(int argc, char **argv, damo_data_parallel_options *o) {
  memset(o, 0, sizeof *o);
  const char *mb = cli_opt(argc, argv, "--bucket-mb"), *zero = cli_opt(argc, argv, "--zero");
  long z = 0;
  if (mb && !cli_parse_double(mb, "--bucket-mb", 0, 1, 65536, &o->bucket_mb)) return 0;
  if (zero && !cli_parse_long(zero, "--zero", 0, 1, &z)) return 0;
  o->zero = (int)z;
  o->sync_batchnorm = cli_flag(argc, argv, "--sync-batchnorm");
  return 1;
}

/* `damo train --np N ...`: runs `mpirun -np N <this damo> train ...` (the same arguments
 * without --np), with what Open MPI's mpirun needs as root and in a container. DAMO_MPIRUN
 * names another launcher (given no options of Open MPI's: mpiexec.mpich); DAMO_MPIRUN_ARGS
 * adds arguments before -np (a hostfile, --mca settings). */
int cli_launch(int argc, char **argv, const char *np) {
  long n;
  if (!cli_parse_long(np, "--np", 1, 4096, &n)) return 2;
  if (damo_dist_size(world) > 1) {
    fprintf(stderr, "damo: --np given to a process that mpirun started already (%d ranks): drop one of them\n",
            damo_dist_size(world));
    return 2;
  }
  /* Open MPI's mpirun with its settings, or another launcher (MPICH's mpiexec) as it is */
  const char *launcher = getenv("DAMO_MPIRUN") ? getenv("DAMO_MPIRUN") : "mpirun";
  const int open_mpi = !getenv("DAMO_MPIRUN");
  char *extra = getenv("DAMO_MPIRUN_ARGS") ? strdup(getenv("DAMO_MPIRUN_ARGS")) : NULL;
  char **args = calloc((size_t)argc + 64, sizeof *args);
  if (!args) return 1;
  int k = 0;
  args[k++] = (char *)launcher;
  if (open_mpi && geteuid() == 0) args[k++] = "--allow-run-as-root";
  if (open_mpi) {
    args[k++] = "--oversubscribe"; /* more ranks than cores is slow but allowed */
    args[k++] = "--bind-to", args[k++] = "none"; /* each rank's OpenMP threads may use any core */
  }
  for (char *tok = extra ? strtok(extra, " ") : NULL; tok && k < 40; tok = strtok(NULL, " ")) args[k++] = tok;
  char count[32];
  snprintf(count, sizeof count, "%ld", n);
  args[k++] = "-np", args[k++] = count;
  char self[4096];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len > 0) self[len] = '\0';
  args[k++] = len > 0 ? self : argv[0];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--np")) {
      i++;
      continue;
    }
    args[k++] = argv[i];
  }
  args[k] = NULL;
  setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0); /* containers forbid the cross-memory attach */
  fflush(NULL);
  execvp(launcher, args);
  fprintf(stderr, "damo: --np %ld: cannot start %s: %s (install it: sh scripts/setup.sh)\n", n, launcher, strerror(errno));
  free(args);
  free(extra);
  return 1;
}

/* The data-parallel figures of a benchmark's JSON object (", \"ranks\": ..."): ranks, ZeRO,
 * buckets, bytes reduced per step, the communication left exposed after backward, the first
 * step's blocking reduction, and this rank's peak RSS gathered from every rank (max, MB). */
void cli_print_parallel_json(damo_trainer *t) {
  damo_data_parallel_stats s;
  if (damo_trainer_data_parallel_stats(t, &s) != DAMO_OK) return;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  int64_t rss = ru.ru_maxrss; /* a collective: every rank calls this */
  if (damo_dist_max_i64(cli_world(), &rss) == DAMO_OK) printf(", \"peak_rss_kb_max_rank\": %lld", (long long)rss);
  printf(", \"ranks\": %d, \"zero\": %d, \"buckets\": %d, \"bytes_per_step\": %.0f, \"exposed_comm_seconds\": %.6f, "
         "\"blocking_comm_seconds\": %.6f, \"hidden_share\": %.4f",
         s.ranks, s.zero, s.buckets, s.bytes_per_step, s.exposed_seconds, s.blocking_seconds, s.hidden_share);
}
