/* dist.c - the process group of data-parallel training: the only file that calls MPI.
 *
 * Under a launcher (mpirun/mpiexec of Open MPI or MPICH: the launcher's environment says so)
 * a build with MPI joins MPI_COMM_WORLD; otherwise, and in a build without MPI, the group is
 * a world of one whose collectives leave the data as it is. Both go through the same calls,
 * so the training code has one path. MPI is initialised with MPI_THREAD_FUNNELED: only the
 * thread that initialised it communicates (OpenMP workers and the prefetcher never do).
 *
 * Errors: MPI_ERRORS_RETURN on the world, so a failed collective (a peer that died) comes
 * back as DAMO_ERR_IO with MPI's message instead of killing the process from inside MPI; the
 * command line then ends the whole job (damo_dist_abort). Counts above INT_MAX are sent in
 * pieces. Non-blocking calls hand back a slot in a small table of MPI requests. */
#include "core/core.h"

#include <limits.h>
#include <stdio.h>

#ifdef DAMO_HAVE_MPI
#include <mpi.h>
#endif

#define MAX_REQUESTS 4096
#define MAX_ENGINE 300
#define PIECE ((int64_t)1 << 30) /* elements per MPI call: counts are int */

struct damo_dist {
  int rank, size;
  int mpi;          /* joined MPI_COMM_WORLD (this process initialised MPI) */
  char engine[MAX_ENGINE]; /* "Open MPI v4.1.4 ..." or "none (one process)" */
#ifdef DAMO_HAVE_MPI
  MPI_Request req[MAX_REQUESTS];
  unsigned char used[MAX_REQUESTS];
  int newest; /* the last request started (damo_dist_progress), or -1 */
#endif
};

static damo_dist world;
static int world_ready;

/* Whether a launcher started this process as one of several: Open MPI's, MPICH/Hydra's or
 * PMIx's variables. A plain `damo train` does not try to start MPI (a singleton MPI_Init
 * forks helper daemons and can fail in a container). */
static int launched_by_mpi(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
    if (getenv(vars[i])) return 1;
  return 0;
}

#ifdef DAMO_HAVE_MPI
static damo_status mpi_fail(int rc, const char *what) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", rc);
  return damo_error(DAMO_ERR_IO, "rank %d of %d: %s failed: %s (another rank stopped or died?)", world.rank, world.size,
                    what, msg);
}
#endif

damo_status damo_dist_world(damo_dist **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "dist_world: NULL output");
  *out = &world;
  if (world_ready) return DAMO_OK;
  world.rank = 0, world.size = 1;
#ifdef DAMO_HAVE_MPI
  world.newest = -1;
#endif
  snprintf(world.engine, sizeof world.engine, "none (one process)");
#ifdef DAMO_HAVE_MPI
  if (launched_by_mpi()) {
    int provided = 0, inited = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      return damo_error(DAMO_ERR_IO, "dist: MPI_Init_thread failed");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world.size);
    world.mpi = !inited; /* finalise only what this process started */
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    version[strcspn(version, ",\n")] = '\0';
    snprintf(world.engine, sizeof world.engine, "%.*s", MAX_ENGINE - 1, version);
  }
#else
  if (launched_by_mpi())
    fprintf(stderr, "damo: started by an MPI launcher, but this build has no MPI (install libopenmpi-dev and rebuild); "
                    "each process trains alone\n");
#endif
  world_ready = 1;
  return DAMO_OK;
}

int damo_dist_rank(const damo_dist *d) { return d ? d->rank : 0; }
int damo_dist_size(const damo_dist *d) { return d ? d->size : 1; }
const char *damo_dist_engine(const damo_dist *d) { return d ? d->engine : "none (one process)"; }

void damo_dist_finalize(void) {
#ifdef DAMO_HAVE_MPI
  if (world_ready && world.mpi) {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
  }
#endif
  world_ready = 0;
}

void damo_dist_abort(const damo_dist *d, int code) {
#ifdef DAMO_HAVE_MPI
  if (d && d->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  (void)d, (void)code;
}

void damo_dist_share(int64_t n, int rank, int size, int64_t *first, int64_t *count) {
  if (size < 1) size = 1;
  const int64_t base = n / size, extra = n % size;
  *count = base + (rank < extra ? 1 : 0);
  *first = (int64_t)rank * base + (rank < extra ? rank : extra);
}

/* ------------------------------------------------------------------ collectives */

#ifdef DAMO_HAVE_MPI
/* Sums n values of `size` bytes (MPI type t) in place, in pieces MPI's int counts can hold. */
static damo_status allreduce_sum(void *x, int64_t n, size_t size, MPI_Datatype t) {
  for (int64_t at = 0; at < n; at += PIECE) {
    int c = (int)(n - at < PIECE ? n - at : PIECE), rc;
    if ((rc = MPI_Allreduce(MPI_IN_PLACE, (char *)x + (size_t)at * size, c, t, MPI_SUM, MPI_COMM_WORLD)) != MPI_SUCCESS)
      return mpi_fail(rc, "all-reduce");
  }
  return DAMO_OK;
}
#endif

damo_status damo_dist_allreduce_f64(damo_dist *d, double *x, int64_t n) {
  if (!d || d->size == 1 || n == 0) return DAMO_OK;
#ifdef DAMO_HAVE_MPI
  return allreduce_sum(x, n, sizeof *x, MPI_DOUBLE);
#else
  return DAMO_OK;
#endif
}

damo_status damo_dist_allreduce_f32(damo_dist *d, float *x, int64_t n) {
  if (!d || d->size == 1 || n == 0) return DAMO_OK;
#ifdef DAMO_HAVE_MPI
  return allreduce_sum(x, n, sizeof *x, MPI_FLOAT);
#else
  return DAMO_OK;
#endif
}

damo_status damo_dist_max_i64(damo_dist *d, int64_t *x) {
  if (!d || d->size == 1) return DAMO_OK;
#ifdef DAMO_HAVE_MPI
  int rc = MPI_Allreduce(MPI_IN_PLACE, x, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "all-reduce (max)");
#endif
  return DAMO_OK;
}

damo_status damo_dist_broadcast(damo_dist *d, void *buf, size_t bytes, int root) {
  if (!d || d->size == 1 || bytes == 0) return DAMO_OK;
#ifdef DAMO_HAVE_MPI
  for (size_t at = 0; at < bytes; at += (size_t)PIECE) {
    int c = (int)(bytes - at < (size_t)PIECE ? bytes - at : (size_t)PIECE), rc;
    if ((rc = MPI_Bcast((char *)buf + at, c, MPI_BYTE, root, MPI_COMM_WORLD)) != MPI_SUCCESS)
      return mpi_fail(rc, "broadcast");
  }
#endif
  (void)buf, (void)root;
  return DAMO_OK;
}

damo_status damo_dist_barrier(damo_dist *d) {
  if (!d || d->size == 1) return DAMO_OK;
#ifdef DAMO_HAVE_MPI
  int rc = MPI_Barrier(MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "barrier");
#endif
  return DAMO_OK;
}

damo_status damo_dist_check_same(damo_dist *d, uint64_t hash, const char *what) {
  if (!d || d->size == 1) return DAMO_OK;
  uint64_t root = hash;
  damo_status st = damo_dist_broadcast(d, &root, sizeof root, 0);
  if (st != DAMO_OK) return st;
  double differ = root != hash ? 1.0 : 0.0;
  if ((st = damo_dist_allreduce_f64(d, &differ, 1)) != DAMO_OK) return st;
  if (differ == 0.0) return DAMO_OK;
  if (root != hash)
    return damo_error(DAMO_ERR_INVALID_ARG, "rank %d of %d: its %s (hash %016llx) differs from rank 0's (%016llx); every "
                      "rank must run the same command on the same data", d->rank, d->size, what,
                      (unsigned long long)hash, (unsigned long long)root);
  return damo_error(DAMO_ERR_INVALID_ARG, "rank %d of %d: %d other rank(s) have another %s than this one (hash "
                    "%016llx); every rank must run the same command on the same data", d->rank, d->size, (int)differ,
                    what, (unsigned long long)hash);
}

/* Gathers counts[r] floats of every rank into x (laid out rank after rank, x holding this
 * rank's part at its place already), on every rank. */
damo_status damo_dist_allgather_f32(damo_dist *d, float *x, const int64_t *counts) {
  if (!d || d->size == 1) return DAMO_OK;
#ifdef DAMO_HAVE_MPI
  int *c = malloc((size_t)d->size * 2 * sizeof *c), *displ = c ? c + d->size : NULL;
  if (!c) return damo_error(DAMO_ERR_NOMEM, "all-gather: out of memory");
  int64_t at = 0;
  damo_status st = DAMO_OK;
  for (int r = 0; r < d->size; r++) {
    if (counts[r] > INT_MAX || at > INT_MAX) st = damo_error(DAMO_ERR_UNSUPPORTED, "all-gather: %lld floats per rank "
                                                            "exceed MPI's int counts", (long long)counts[r]);
    c[r] = (int)counts[r], displ[r] = (int)at;
    at += counts[r];
  }
  int rc = st == DAMO_OK ? MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, c, displ, MPI_FLOAT, MPI_COMM_WORLD)
                         : MPI_SUCCESS;
  free(c);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "all-gather");
  return st;
#else
  (void)x, (void)counts;
  return DAMO_OK;
#endif
}

/* ------------------------------------------------------------------ non-blocking */

#ifdef DAMO_HAVE_MPI
static int take_slot(damo_dist *d) {
  for (int i = 0; i < MAX_REQUESTS; i++)
    if (!d->used[i]) {
      d->used[i] = 1;
      return d->newest = i;
    }
  return -1;
}
#endif

damo_status damo_dist_iallreduce_f32(damo_dist *d, float *x, int64_t n, int *request) {
  *request = -1;
  if (!d || d->size == 1 || n == 0) return DAMO_OK;
#ifdef DAMO_HAVE_MPI
  if (n > INT_MAX) return damo_error(DAMO_ERR_UNSUPPORTED, "all-reduce: a bucket of %lld floats exceeds MPI's int "
                                     "counts (use smaller buckets)", (long long)n);
  int slot = take_slot(d);
  if (slot < 0) return damo_error(DAMO_ERR_STATE, "all-reduce: more than %d requests in flight", MAX_REQUESTS);
  int rc = MPI_Iallreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &d->req[slot]);
  if (rc != MPI_SUCCESS) {
    d->used[slot] = 0;
    return mpi_fail(rc, "non-blocking all-reduce");
  }
  *request = slot;
#endif
  return DAMO_OK;
}

/* Sums `send` (the counts[0] + ... + counts[size-1] floats of every rank) over the ranks and
 * leaves part r of the sum in rank r's `recv` (counts[r] floats). */
damo_status damo_dist_ireduce_scatter_f32(damo_dist *d, const float *send, float *recv, const int64_t *counts,
                                          int *request) {
  *request = -1;
  if (!d || d->size == 1) {
    if (counts[0] && recv != send) memcpy(recv, send, (size_t)counts[0] * sizeof *recv);
    return DAMO_OK;
  }
#ifdef DAMO_HAVE_MPI
  int *c = malloc((size_t)d->size * sizeof *c);
  if (!c) return damo_error(DAMO_ERR_NOMEM, "reduce-scatter: out of memory");
  for (int r = 0; r < d->size; r++) {
    if (counts[r] > INT_MAX) {
      free(c);
      return damo_error(DAMO_ERR_UNSUPPORTED, "reduce-scatter: %lld floats exceed MPI's int counts", (long long)counts[r]);
    }
    c[r] = (int)counts[r];
  }
  int slot = take_slot(d), rc = MPI_SUCCESS;
  if (slot >= 0) rc = MPI_Ireduce_scatter(send, recv, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &d->req[slot]);
  free(c); /* MPI copies the counts when the call starts (MPI 3.1, 5.12: the arrays may be reused) */
  if (slot < 0) return damo_error(DAMO_ERR_STATE, "reduce-scatter: more than %d requests in flight", MAX_REQUESTS);
  if (rc != MPI_SUCCESS) {
    d->used[slot] = 0;
    return mpi_fail(rc, "non-blocking reduce-scatter");
  }
  *request = slot;
#endif
  return DAMO_OK;
}

damo_status damo_dist_wait(damo_dist *d, int request) {
  if (!d || request < 0) return DAMO_OK;
#ifdef DAMO_HAVE_MPI
  if (request >= MAX_REQUESTS || !d->used[request]) return damo_error(DAMO_ERR_INVALID_ARG, "dist_wait: no request %d", request);
  int rc = MPI_Wait(&d->req[request], MPI_STATUS_IGNORE);
  d->used[request] = 0;
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "waiting for a collective");
#endif
  return DAMO_OK;
}

/* Lets MPI move the requests in flight along (it progresses inside MPI calls only): one test
 * of the newest request pumps the whole progress engine. Called for every finished gradient,
 * so it looks at one slot, not the table. */
void damo_dist_progress(damo_dist *d) {
#ifdef DAMO_HAVE_MPI
  if (!d || d->size == 1 || d->newest < 0 || !d->used[d->newest]) return;
  int flag;
  MPI_Test(&d->req[d->newest], &flag, MPI_STATUS_IGNORE); /* a finished one becomes MPI_REQUEST_NULL */
#else
  (void)d;
#endif
}
