/* backend.c - the CPU backend and the registry of backends.
 *
 * The CPU backend's memory is host memory (damo_alloc), its copies are memcpy, its op kernels
 * are the op definitions' cpu_forward/cpu_backward (copied from damo_op_table once, on first
 * use: the table is filled by the ops layer above, so it cannot be a constant here), and its
 * flat-block kernels are the loops in kernels/cpu/optim_update.c. */
#include "graph/backend.h"

#include <pthread.h>
#include <stdio.h>

static void *cpu_alloc(const damo_backend *b, size_t bytes) {
  (void)b;
  return damo_alloc(bytes ? bytes : 64);
}

static void cpu_free(const damo_backend *b, void *p) {
  (void)b;
  damo_free(p);
}

static damo_status cpu_copy(const damo_backend *b, void *dst, const void *src, size_t bytes) {
  (void)b;
  if (dst != src && bytes) memcpy(dst, src, bytes);
  return DAMO_OK;
}

static void cpu_fill(const damo_backend *b, float *dst, float value, int64_t n) {
  (void)b;
  if (value == 0.0f) {
    memset(dst, 0, (size_t)n * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; i++) dst[i] = value;
}

static void cpu_opt_update(const damo_backend *b, const damo_opt_update *u) {
  (void)b;
  damo_cpu_opt_update(u);
}

static double cpu_sum_squares(const damo_backend *b, const float *x, int64_t n, double *scratch) {
  (void)b;
  return damo_cpu_sum_squares(x, n, scratch);
}

/* Memory-bound: one pass, threads only for large blocks. beta 0 writes without reading y. */
static void cpu_axpby(const damo_backend *b, int64_t n, float alpha, const float *x, float beta, float *y) {
  (void)b;
  if (beta == 0.0f) {
#pragma omp parallel for schedule(static) if (n > (1 << 18)) num_threads(damo_threads())
    for (int64_t i = 0; i < n; i++) y[i] = alpha * x[i];
  } else {
#pragma omp parallel for schedule(static) if (n > (1 << 18)) num_threads(damo_threads())
    for (int64_t i = 0; i < n; i++) y[i] = alpha * x[i] + beta * y[i];
  }
}

static damo_backend cpu_backend = {
    .name = "cpu",
    .device = DAMO_DEVICE_CPU,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_host = cpu_copy,
    .from_host = cpu_copy,
    .fill = cpu_fill,
    .opt_update = cpu_opt_update,
    .sum_squares = cpu_sum_squares,
    .axpby = cpu_axpby,
};

static const damo_backend *registry[DAMO_MAX_BACKENDS];
static int n_registered;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void cpu_init(void) {
  for (int op = 0; op < DAMO_OP_COUNT; op++) {
    const damo_op_def *d = damo_op_table[op];
    cpu_backend.kernels[op] = (damo_kernel){d ? d->cpu_forward : NULL, d ? d->cpu_backward : NULL};
  }
  registry[n_registered++] = &cpu_backend;
}

const damo_backend *damo_backend_cpu(void) {
  pthread_once(&cpu_once, cpu_init);
  return &cpu_backend;
}

const char *damo_backend_name(const damo_backend *b) { return b ? b->name : ""; }
damo_device damo_backend_device(const damo_backend *b) { return b ? b->device : DAMO_DEVICE_CPU; }

damo_status damo_backend_register(const damo_backend *b) {
  damo_backend_cpu(); /* the CPU backend is always the first entry */
  if (!b || !b->name || !b->name[0]) return damo_error(DAMO_ERR_INVALID_ARG, "backend register: NULL backend or no name");
  const char *missing = !b->alloc ? "alloc" : !b->free ? "free" : !b->to_host ? "to_host" : !b->from_host ? "from_host"
                        : !b->fill ? "fill" : !b->opt_update ? "opt_update" : !b->sum_squares ? "sum_squares"
                        : !b->axpby ? "axpby" : NULL;
  if (missing) return damo_error(DAMO_ERR_INVALID_ARG, "backend register: backend '%s' has no %s", b->name, missing);
  damo_status st = DAMO_OK;
  pthread_mutex_lock(&registry_lock);
  for (int i = 0; i < n_registered && st == DAMO_OK; i++)
    if (!strcmp(registry[i]->name, b->name))
      st = damo_error(DAMO_ERR_INVALID_ARG, "backend register: a backend named '%s' is already registered", b->name);
  if (st == DAMO_OK && n_registered == DAMO_MAX_BACKENDS)
    st = damo_error(DAMO_ERR_INVALID_ARG, "backend register: no room for '%s' (%d backends at most)", b->name,
                    DAMO_MAX_BACKENDS);
  if (st == DAMO_OK) registry[n_registered++] = b;
  pthread_mutex_unlock(&registry_lock);
  return st;
}

const damo_backend *damo_backend_find(const char *name) {
  damo_backend_cpu();
  const damo_backend *found = NULL;
  pthread_mutex_lock(&registry_lock);
  for (int i = 0; i < n_registered && !found; i++)
    if (name && !strcmp(registry[i]->name, name)) found = registry[i];
  char known[256] = "";
  for (int i = 0; i < n_registered && !found; i++) {
    size_t len = strlen(known);
    snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "", registry[i]->name);
  }
  pthread_mutex_unlock(&registry_lock);
  if (!found) damo_error(DAMO_ERR_NOT_FOUND, "no backend named '%s' (registered: %s)", name ? name : "(null)", known);
  return found;
}

damo_status damo_backend_check_tensor(const damo_backend *b, const damo_tensor *t, const char *what) {
  if (!t || t->device == b->device) return DAMO_OK;
  return damo_error(DAMO_ERR_INVALID_ARG, "%s is on %s, but the graph runs on backend '%s' (%s); one graph runs on "
                    "one device", what, damo_device_name(t->device), b->name, damo_device_name(b->device));
}
