/* federated.c - federated averaging (McMahan et al. 2017): the training rows are split among
 * K clients and never pooled; each round a fraction F of the clients, chosen afresh, each
 * trains the global model on its own rows for E epochs (fit, batches of B; B = 0 takes a
 * client's whole data per step, so E = 1 is FedSGD: one gradient step per client), and the
 * server moves the global model by the clients' changes weighted by their example counts.
 *
 * Clients run one after another in this process, or spread over the ranks of an MPI job
 * (client j of a round on rank j mod size), each rank summing its clients' changes and one
 * all-reduce joining them. Options: user-level differential privacy (McMahan et al. 2018:
 * every client's change clipped to norm S, equal weights, N(0, sigma^2 S^2) on the sum, the
 * accountant counting rounds with the client sampling rate) and pairwise-mask secure
 * aggregation (src/privacy/secure_agg.c: the server only ever adds masked words). The global
 * model is evaluated after every round, recorded in a history (rows numbered by round) and
 * checkpointed (model directory + federated.json) for resuming. */
#include "io/io.h"
#include "train/history.h"
#include "train/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ partitions */

/* A row's class: an i32 label, or a single f32 target read as 0/1. */
static damo_status label_of(const damo_tensor *y, int64_t i, int32_t *out) {
  if (y->dtype == DAMO_I32 && (y->ndim == 1 || damo_tensor_numel(y) == y->shape[0])) {
    *out = ((const int32_t *)y->data)[i];
    return DAMO_OK;
  }
  if (y->dtype == DAMO_F32 && damo_tensor_numel(y) == y->shape[0]) {
    *out = ((const float *)y->data)[i] > 0.5f;
    return DAMO_OK;
  }
  return damo_error(DAMO_ERR_INVALID_ARG, "federated partition: label shards and Dirichlet splits need class labels "
                    "(i32, or one 0/1 target per row)");
}

/* Gamma(alpha, 1) (Marsaglia and Tsang; alpha < 1 through Gamma(alpha + 1) U^(1/alpha)). */
static double gamma_draw(damo_rng *r, double alpha) {
  const double boost = alpha < 1 ? pow((double)damo_rng_uniform(r) + 1e-12, 1.0 / alpha) : 1.0;
  const double a = alpha < 1 ? alpha + 1 : alpha, d = a - 1.0 / 3, c = 1.0 / sqrt(9 * d);
  for (;;) {
    double x, v;
    do {
      x = damo_rng_normal(r);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = (double)damo_rng_uniform(r) + 1e-12;
    if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v * boost;
  }
}

static int cmp_label_then_row(const void *a, const void *b, const int32_t *labels) {
  const int64_t p = *(const int64_t *)a, q = *(const int64_t *)b;
  return labels[p] != labels[q] ? (labels[p] < labels[q] ? -1 : 1) : 0;
}

/* Stable by label: an insertion-free merge sort over row ids (qsort has no context and is
 * not stable). */
static void sort_by_label(int64_t *rows, int64_t *tmp, int64_t n, const int32_t *labels) {
  for (int64_t width = 1; width < n; width *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * width) {
      int64_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n, i = lo, j = mid, k = lo;
      while (i < mid && j < hi) tmp[k++] = cmp_label_then_row(&rows[j], &rows[i], labels) < 0 ? rows[j++] : rows[i++];
      while (i < mid) tmp[k++] = rows[i++];
      while (j < hi) tmp[k++] = rows[j++];
    }
    memcpy(rows, tmp, (size_t)n * sizeof *rows);
  }
}

damo_status damo_fed_partition_rows(const damo_tensor *y, int64_t n, int clients, int kind, int shards, double alpha,
                                    uint64_t seed, int64_t *rows, int64_t *offsets) {
  if (!rows || !offsets || n < 1 || clients < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "federated partition: %lld rows for %d clients", (long long)n, clients);
  if (clients > n)
    return damo_error(DAMO_ERR_INVALID_ARG, "federated partition: %d clients for %lld training examples: every client "
                      "needs at least one", clients, (long long)n);
  damo_rng r;
  damo_rng_seed(&r, seed ^ 0x70617274ULL);
  for (int64_t i = 0; i < n; i++) rows[i] = i;
  damo_shuffle_indices(rows, n, &r);
  if (kind == DAMO_FED_IID) {
    for (int c = 0; c <= clients; c++) offsets[c] = n * c / clients;
    return DAMO_OK;
  }
  if (!y) return damo_error(DAMO_ERR_INVALID_ARG, "federated partition: label splits need the labels");
  int32_t *labels = malloc((size_t)n * sizeof *labels);
  int64_t *tmp = malloc((size_t)n * sizeof *tmp);
  damo_status st = labels && tmp ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "federated partition: out of memory");
  int32_t classes = 0;
  for (int64_t i = 0; i < n && st == DAMO_OK; i++)
    if ((st = label_of(y, i, &labels[i])) == DAMO_OK) {
      if (labels[i] < 0) st = damo_error(DAMO_ERR_INVALID_ARG, "federated partition: label %d at row %lld", labels[i], (long long)i);
      else if (labels[i] >= classes) classes = labels[i] + 1;
    }
  if (st == DAMO_OK) sort_by_label(rows, tmp, n, labels); /* classes in order, shuffled within each */
  if (st == DAMO_OK && kind == DAMO_FED_SHARDS) { /* K * S equal shards of the sorted rows, S to each client */
    const int64_t count = (int64_t)clients * shards;
    if (shards < 1 || count > n) {
      st = damo_error(DAMO_ERR_INVALID_ARG, "federated partition: %d shards per client of %d clients need at least %lld "
                      "examples, there are %lld", shards, clients, (long long)count, (long long)n);
    } else {
      int64_t *order = malloc((size_t)count * sizeof *order);
      if (!order) st = damo_error(DAMO_ERR_NOMEM, "federated partition: out of memory");
      for (int64_t s = 0; order && s < count; s++) order[s] = s;
      if (order) damo_shuffle_indices(order, count, &r);
      int64_t at = 0;
      for (int c = 0; order && c < clients; c++) {
        offsets[c] = at;
        for (int k = 0; k < shards; k++) {
          const int64_t s = order[(int64_t)c * shards + k], lo = n * s / count, hi = n * (s + 1) / count;
          memcpy(tmp + at, rows + lo, (size_t)(hi - lo) * sizeof *tmp);
          at += hi - lo;
        }
      }
      offsets[clients] = at;
      if (order) memcpy(rows, tmp, (size_t)n * sizeof *rows);
      free(order);
    }
  } else if (st == DAMO_OK && kind == DAMO_FED_DIRICHLET) { /* each class split by proportions ~ Dir(alpha) */
    double *p = malloc((size_t)clients * sizeof *p);
    int64_t *cut = malloc(((size_t)clients + 1) * sizeof *cut);
    if (!(alpha > 0)) st = damo_error(DAMO_ERR_INVALID_ARG, "federated partition: dirichlet:%g needs alpha > 0", alpha);
    else if (!p || !cut) st = damo_error(DAMO_ERR_NOMEM, "federated partition: out of memory");
    int64_t *counts = st == DAMO_OK ? calloc((size_t)clients * (size_t)classes, sizeof *counts) : NULL;
    if (st == DAMO_OK && !counts) st = damo_error(DAMO_ERR_NOMEM, "federated partition: out of memory");
    for (int64_t lo = 0; st == DAMO_OK && lo < n;) { /* the rows of one class: [lo, hi) */
      int64_t hi = lo;
      while (hi < n && labels[rows[hi]] == labels[rows[lo]]) hi++;
      double total = 0;
      for (int c = 0; c < clients; c++) total += p[c] = gamma_draw(&r, alpha);
      double acc = 0;
      for (int c = 0; c <= clients; c++) {
        cut[c] = lo + (int64_t)llround((double)(hi - lo) * (c == clients ? 1.0 : acc / total));
        if (c < clients) acc += p[c];
      }
      for (int c = 0; c < clients; c++) counts[(int64_t)c * classes + labels[rows[lo]]] = cut[c + 1] - cut[c];
      lo = hi;
    }
    if (st == DAMO_OK) { /* lay the clients out: client c takes its count of each class in turn */
      int64_t at = 0, *class_start = malloc(((size_t)classes + 1) * sizeof *class_start);
      if (!class_start) st = damo_error(DAMO_ERR_NOMEM, "federated partition: out of memory");
      for (int32_t k = 0; class_start && k <= classes; k++) class_start[k] = 0;
      for (int64_t i = 0; class_start && i < n; i++) class_start[labels[rows[i]] + 1]++;
      for (int32_t k = 0; class_start && k < classes; k++) class_start[k + 1] += class_start[k];
      int64_t *cursor = class_start ? malloc(((size_t)classes + 1) * sizeof *cursor) : NULL;
      if (class_start && !cursor) st = damo_error(DAMO_ERR_NOMEM, "federated partition: out of memory");
      for (int32_t k = 0; cursor && k < classes; k++) cursor[k] = class_start[k];
      for (int c = 0; cursor && c < clients; c++) {
        offsets[c] = at;
        for (int32_t k = 0; k < classes; k++) {
          const int64_t take = counts[(int64_t)c * classes + k];
          memcpy(tmp + at, rows + cursor[k], (size_t)take * sizeof *tmp);
          cursor[k] += take, at += take;
        }
      }
      offsets[clients] = at;
      if (cursor) memcpy(rows, tmp, (size_t)n * sizeof *rows);
      free(cursor);
      free(class_start);
    }
    free(counts);
    free(p);
    free(cut);
  } else if (st == DAMO_OK) {
    st = damo_error(DAMO_ERR_INVALID_ARG, "federated partition: unknown kind %d (iid, shards or dirichlet)", kind);
  }
  free(labels);
  free(tmp);
  return st;
}

/* ------------------------------------------------------------------ rounds */

#define FED_STATE "federated.json"

typedef struct fed_run {
  damo_model *m;
  const damo_fed_options *o;
  int64_t n;            /* floats in the parameter block */
  int64_t n_state;      /* in the state block (BatchNorm statistics) */
  int64_t *rows, *offsets;
  int per;              /* clients a round */
  float *start;         /* the global weights (params then state) at the round's start */
  double *sum;          /* sum of weighted changes (params then state), then the weight */
  float *change;        /* one client's */
  uint32_t *masked, *masked_sum;
  damo_history *h;
} fed_run;

/* The clients of round r: a seeded partial shuffle of 0..K-1. */
static void choose_clients(const fed_run *f, int r, int *chosen) {
  const int K = f->o->clients;
  int *all = malloc((size_t)K * sizeof *all);
  damo_rng g;
  damo_rng_seed(&g, f->o->seed ^ 0x726f756e64ULL ^ (uint64_t)(r + 1) * 0x9e3779b97f4a7c15ULL);
  for (int c = 0; all && c < K; c++) all[c] = c;
  for (int j = 0; all && j < f->per; j++) {
    const int k = j + (int)damo_rng_below(&g, (uint32_t)(K - j)), t = all[j];
    all[j] = all[k], all[k] = t;
    chosen[j] = all[j];
  }
  for (int j = 0; !all && j < f->per; j++) chosen[j] = (j + r * f->per) % K; /* out of memory: still a valid choice */
  free(all);
}

/* A fresh optimizer for each client: FedAvg's local training starts from no moments. */
static damo_status fresh_optimizer(damo_model *m) {
  damo_optimizer *o = damo_optimizer_new(&m->copt.optimizer, m->params.n_params_padded);
  if (!o) return damo_error_prefix(DAMO_ERR_INVALID_ARG, "federate: the clients' optimizer: ");
  damo_optimizer_free(m->opt);
  m->opt = o;
  return DAMO_OK;
}

/* Client c trains the round's starting weights on its rows; its change (weighted) goes into
 * the sums, or masked into the masked sum. */
static damo_status train_client(fed_run *f, const damo_tensor *x, const damo_tensor *y, int r, int j, int c,
                                double *loss_sum, int64_t *examples) {
  const damo_fed_options *o = f->o;
  damo_model *m = f->m;
  const int64_t first = f->offsets[c], count = f->offsets[c + 1] - first, total = f->n + f->n_state;
  memcpy(m->param_block, f->start, (size_t)f->n * sizeof(float));
  if (f->n_state) memcpy(m->state_block, f->start + f->n, (size_t)f->n_state * sizeof(float));
  damo_status st = count ? fresh_optimizer(m) : DAMO_OK;
  double weight = 0;
  if (count && st == DAMO_OK) {
    damo_tensor *xc = damo_tensor_gather_rows(x, f->rows + first, count), *yc = damo_tensor_gather_rows(y, f->rows + first, count);
    damo_fit_options fo = {.epochs = o->local_epochs, .batch_size = o->batch_size > 0 ? o->batch_size : (int)count,
                           .seed = o->seed ^ (uint64_t)(r + 1) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(c + 1) * 0xbf58476d1ce4e5b9ULL,
                           .shuffle = 1, .verbose = 0};
    damo_history *h = NULL;
    st = xc && yc ? damo_model_fit(m, xc, yc, &fo, &h) : damo_error(DAMO_ERR_NOMEM, "federate: out of memory");
    if (st == DAMO_OK) {
      *loss_sum += (double)damo_history_get(h, "loss", damo_history_epochs(h) - 1) * (double)count;
      *examples += count;
    }
    damo_history_free(h);
    damo_tensor_free(xc);
    damo_tensor_free(yc);
    if (st != DAMO_OK) return damo_error_prefix(st, "federate: round %d, client %d: ", r + 1, c);
    for (int64_t i = 0; i < f->n; i++) f->change[i] = m->param_block[i] - f->start[i];
    for (int64_t i = 0; i < f->n_state; i++) f->change[f->n + i] = m->state_block[i] - f->start[f->n + i];
    weight = (double)count;
    if (o->dp_clip > 0) { /* user-level DP: the change clipped, every client the same weight */
      double sq = 0;
      for (int64_t i = 0; i < f->n; i++) sq += (double)f->change[i] * f->change[i];
      const double scale = sqrt(sq) > o->dp_clip ? o->dp_clip / sqrt(sq) : 1.0;
      for (int64_t i = 0; i < f->n; i++) f->change[i] = (float)(f->change[i] * scale);
      weight = 1;
    }
  }
  if (!o->secure_agg) {
    for (int64_t i = 0; i < total; i++) f->sum[i] += weight * f->change[i];
    f->sum[total] += weight;
    return DAMO_OK;
  }
  /* secure aggregation: the weighted change over the round's expected weight (so the words
   * stay in range) and the weight itself, masked; the server adds words it cannot read */
  const double unit = o->dp_clip > 0 ? 1.0 : (double)f->offsets[o->clients] / o->clients;
  for (int64_t i = 0; i < total; i++) f->change[i] = count ? (float)(weight / unit * f->change[i]) : 0.0f;
  f->change[total] = (float)(weight / unit);
  const double scale = o->secure_scale > 0 ? o->secure_scale : 1048576.0;
  st = damo_secagg_mask(f->change, total + 1, scale, j, f->per, o->seed ^ (uint64_t)(r + 1) * 0xd1b54a32d192ed03ULL,
                        f->masked);
  if (st != DAMO_OK) return damo_error_prefix(st, "federate: round %d, client %d: ", r + 1, c);
  damo_secagg_add(f->masked_sum, f->masked, total + 1);
  return DAMO_OK;
}

/* The round's sums into the global weights: weighted mean change, or under DP the noised sum
 * over the clients per round. Returns |change| of the params. */
static double apply_round(fed_run *f, int r) {
  const damo_fed_options *o = f->o;
  const int64_t total = f->n + f->n_state;
  double weight = f->sum[total], sq = 0;
  damo_rng g;
  damo_rng_seed(&g, o->seed ^ 0x6e6f697365ULL ^ (uint64_t)(r + 1) * 0x94d049bb133111ebULL);
  const double sd = o->dp_clip > 0 ? o->dp_noise * o->dp_clip : 0;
  if (o->dp_clip > 0) weight = f->per; /* the expected number of clients, not the count that trained */
  for (int64_t i = 0; i < total; i++) {
    double d = f->sum[i] + (sd > 0 && i < f->n ? sd * damo_rng_normal(&g) : 0.0);
    d = weight > 0 ? d / weight : 0.0;
    if (i < f->n) {
      f->m->param_block[i] = f->start[i] + (float)d;
      sq += d * d;
    } else {
      f->m->state_block[i - f->n] = f->start[i] + (float)d;
    }
  }
  return sqrt(sq);
}

/* federated.json: where the run is and its figures so far (the history's rows). */
static damo_status save_position(const fed_run *f, const char *folder, int round) {
  cJSON *j = cJSON_CreateObject(), *rows = cJSON_CreateArray();
  if (!j || !rows) {
    cJSON_Delete(j);
    cJSON_Delete(rows);
    return damo_error(DAMO_ERR_NOMEM, "federate: out of memory");
  }
  cJSON_AddNumberToObject(j, "round", round);
  cJSON_AddNumberToObject(j, "clients", f->o->clients);
  cJSON_AddNumberToObject(j, "seed", (double)f->o->seed);
  cJSON_AddNumberToObject(j, "examples", (double)f->offsets[f->o->clients]);
  for (int i = 0; i < f->h->n; i++) {
    cJSON *row = cJSON_CreateArray();
    cJSON_AddItemToArray(row, cJSON_CreateNumber(f->h->epoch[i]));
    for (int c = 0; c < DAMO_HISTORY_ROW; c++) {
      const double v = f->h->values[(size_t)i * DAMO_HISTORY_ROW + c];
      cJSON_AddItemToArray(row, isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull());
    }
    cJSON_AddItemToArray(rows, row);
  }
  cJSON_AddItemToObject(j, "history", rows);
  char *text = cJSON_Print(j), path[4096];
  cJSON_Delete(j);
  if (!text) return damo_error(DAMO_ERR_NOMEM, "federate: out of memory");
  snprintf(path, sizeof path, "%s/%s", folder, FED_STATE);
  damo_status st = damo_write_file_atomic(path, text, strlen(text));
  free(text);
  return st;
}

/* The global model after round `round` (1-based) as one directory save. */
static damo_status checkpoint(const fed_run *f, int round) {
  const damo_fed_options *o = f->o;
  damo_dir_save *tx;
  damo_status st = damo_dir_save_begin(o->checkpoint_dir, &tx);
  if (st != DAMO_OK) return damo_error_prefix(st, "federate: checkpoint: ");
  const char *folder = damo_dir_save_folder(tx);
  st = damo_model_save(f->m, folder);
  if (st == DAMO_OK) st = save_position(f, folder, round);
  if (st == DAMO_OK && o->checkpoint_files) st = o->checkpoint_files(o->checkpoint_ctx, folder, f->h);
  if (st != DAMO_OK) {
    damo_dir_save_abort(tx);
    return damo_error_prefix(st, "federate: checkpoint: ");
  }
  return damo_dir_save_commit(tx);
}

/* Resuming: the checkpoint's global weights into m, its history rows, the rounds done. */
static damo_status resume(fed_run *f, int *done) {
  const damo_fed_options *o = f->o;
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", o->checkpoint_dir, FED_STATE);
  cJSON *j = NULL;
  damo_status st = damo_json_read_file(path, 0, &j);
  if (st != DAMO_OK) return damo_error_prefix(st, "federate: --resume: ");
  const cJSON *round = cJSON_GetObjectItem(j, "round"), *clients = cJSON_GetObjectItem(j, "clients");
  const cJSON *seed = cJSON_GetObjectItem(j, "seed"), *rows = cJSON_GetObjectItem(j, "history");
  if (!cJSON_IsNumber(round) || !cJSON_IsNumber(clients) || !cJSON_IsNumber(seed) || !cJSON_IsArray(rows))
    st = damo_error(DAMO_ERR_FORMAT, "%s: needs round, clients, seed and history", path);
  else if (!(seed->valuedouble >= 0 && seed->valuedouble < 18446744073709551616.0))
    st = damo_error(DAMO_ERR_FORMAT, "%s: seed %g is not a 64-bit unsigned integer", path, seed->valuedouble);
  else if (clients->valueint != o->clients || (uint64_t)seed->valuedouble != o->seed)
    st = damo_error(DAMO_ERR_INVALID_ARG, "%s: the run had %d clients and seed %.0f; resume it with the same ones", path,
                    clients->valueint, seed->valuedouble);
  else if (round->valueint < 0 || round->valueint > o->rounds)
    st = damo_error(DAMO_ERR_FORMAT, "%s: round %d is outside 0..%d", path, round->valueint, o->rounds);
  else if (cJSON_GetArraySize(rows) != round->valueint)
    st = damo_error(DAMO_ERR_FORMAT, "%s: %d history rows for %d rounds done", path, cJSON_GetArraySize(rows),
                    round->valueint);
  const cJSON *row, *list = st == DAMO_OK ? rows : NULL;
  cJSON_ArrayForEach(row, list) {
    double values[DAMO_HISTORY_ROW];
    const int at = f->h->n + 1; /* rows are rounds 1, 2, ... in order */
    if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != DAMO_HISTORY_ROW + 1 ||
        !cJSON_IsNumber(cJSON_GetArrayItem(row, 0)) || cJSON_GetArrayItem(row, 0)->valuedouble != at) {
      st = damo_error(DAMO_ERR_FORMAT, "%s: history row %d is not round %d and %d numbers", path, at, at,
                      DAMO_HISTORY_ROW);
      break;
    }
    for (int c = 0; c < DAMO_HISTORY_ROW; c++) {
      const cJSON *v = cJSON_GetArrayItem(row, c + 1);
      values[c] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    }
    if ((st = damo_history_append(f->h, at, values)) != DAMO_OK) break;
  }
  if (st == DAMO_OK) *done = round->valueint;
  cJSON_Delete(j);
  damo_model *saved = NULL;
  if (st == DAMO_OK && (st = damo_model_load(o->checkpoint_dir, &saved)) == DAMO_OK) {
    if (saved->params.n_params_padded != f->n || saved->state.n_params_padded != f->n_state)
      st = damo_error(DAMO_ERR_INVALID_ARG, "%s: the checkpoint's model has %lld parameters, this config %lld",
                      o->checkpoint_dir, (long long)saved->params.n_params_padded, (long long)f->n);
    else {
      memcpy(f->m->param_block, saved->param_block, (size_t)f->n * sizeof(float));
      if (f->n_state) memcpy(f->m->state_block, saved->state_block, (size_t)f->n_state * sizeof(float));
    }
  }
  damo_model_free(saved);
  return st;
}

static damo_status check_options(const damo_model *m, const damo_tensor *x, const damo_fed_options *o) {
  if (!m || !m->compiled) return damo_error(DAMO_ERR_STATE, "federate: compile the model first");
  if (!x) return damo_error(DAMO_ERR_INVALID_ARG, "federate: no training data");
  const int64_t N = x->shape[0];
  if (o->clients < 1) return damo_error(DAMO_ERR_INVALID_ARG, "federate: --clients %d must be >= 1", o->clients);
  if (o->clients > N)
    return damo_error(DAMO_ERR_INVALID_ARG, "federate: %d clients but %lld training examples: every client needs at "
                      "least one", o->clients, (long long)N);
  if (!(o->fraction > 0 && o->fraction <= 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "federate: --fraction %g must lie in (0, 1]", o->fraction);
  if (o->rounds < 1 || o->local_epochs < 1 || o->batch_size < 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "federate: rounds %d and local epochs %d must be >= 1, batch size %d >= 0",
                      o->rounds, o->local_epochs, o->batch_size);
  if (o->dp_clip < 0 || (o->dp_clip == 0 && o->dp_noise != 0) || !(o->dp_noise >= 0))
    return damo_error(DAMO_ERR_INVALID_ARG, "federate: user-level DP needs a clip > 0 (--dp-clip) for its noise "
                      "(--dp-noise %g >= 0)", o->dp_noise);
  if (o->dp_clip > 0 && (o->dp_delta < 0 || o->dp_delta >= 1.0 / o->clients))
    return damo_error(DAMO_ERR_INVALID_ARG, "federate: delta %g is not below 1/K = %g: user-level DP protects a client, "
                      "so delta must be below one over the %d clients", o->dp_delta, 1.0 / o->clients, o->clients);
  if (o->dp_clip > 0 && m->state.n_params_padded)
    return damo_error(DAMO_ERR_UNSUPPORTED, "federate: user-level DP with BatchNormalization: its running statistics "
                      "would be averaged without noise; use LayerNormalization");
  if (o->resume && !o->checkpoint_dir) return damo_error(DAMO_ERR_INVALID_ARG, "federate: resume needs a checkpoint_dir");
  if ((o->x_test == NULL) != (o->y_test == NULL))
    return damo_error(DAMO_ERR_INVALID_ARG, "federate: give both test inputs and labels, or neither");
  return DAMO_OK;
}

damo_status damo_model_federate(damo_model *m, const damo_tensor *x, const damo_tensor *y, const damo_fed_options *opt,
                                damo_history **history) {
  if (history) *history = NULL;
  if (!opt) return damo_error(DAMO_ERR_INVALID_ARG, "federate: NULL options");
  damo_fed_options o = *opt;
  if (o.dp_clip > 0 && o.dp_delta == 0) o.dp_delta = 1.0 / (10.0 * o.clients) < 1e-5 ? 1.0 / (10.0 * o.clients) : 1e-5;
  damo_status st = check_options(m, x, &o);
  if (st == DAMO_OK) st = damo_model_check_data(m, &x, &y, "federate");
  if (st == DAMO_OK && o.x_test) st = damo_model_check_data(m, &o.x_test, &o.y_test, "federate (test data)");
  if (st != DAMO_OK) return st;
  const int64_t N = x->shape[0];
  fed_run f = {.m = m, .o = &o, .n = m->params.n_params_padded, .n_state = m->state.n_params_padded};
  f.per = (int)lround(o.fraction * o.clients);
  if (f.per < 1) f.per = 1;
  const int64_t total = f.n + f.n_state;
  const int rank = damo_dist_rank(o.dist), size = damo_dist_size(o.dist);
  f.rows = malloc((size_t)N * sizeof *f.rows);
  f.offsets = malloc(((size_t)o.clients + 1) * sizeof *f.offsets);
  f.start = malloc((size_t)(total + 1) * sizeof *f.start);
  f.sum = malloc((size_t)(total + 1) * sizeof *f.sum);
  f.change = malloc((size_t)(total + 1) * sizeof *f.change);
  f.masked = o.secure_agg ? malloc((size_t)(total + 1) * sizeof *f.masked) : NULL;
  f.masked_sum = o.secure_agg ? malloc((size_t)(total + 1) * sizeof *f.masked_sum) : NULL;
  int *chosen = malloc((size_t)f.per * sizeof *chosen);
  f.h = damo_history_new((1u << DAMO_H_LOSS) | (1u << DAMO_H_VAL_LOSS) | (1u << DAMO_H_VAL_ACCURACY) | DAMO_H_BY_ROUND);
  const char *eps_name[1] = {"epsilon"};
  if (!f.rows || !f.offsets || !f.start || !f.sum || !f.change || (o.secure_agg && (!f.masked || !f.masked_sum)) ||
      !chosen || !f.h)
    st = damo_error(DAMO_ERR_NOMEM, "federate: out of memory for %lld parameters", (long long)total);
  if (st == DAMO_OK && o.dp_clip > 0) st = damo_history_set_extra(f.h, 1, eps_name);
  if (st == DAMO_OK)
    st = damo_fed_partition_rows(y, N, o.clients, o.partition, o.shards ? o.shards : 2, o.alpha, o.seed, f.rows, f.offsets);
  int done = 0;
  if (st == DAMO_OK && o.resume) st = resume(&f, &done);
  for (int r = done; st == DAMO_OK && r < o.rounds; r++) {
    const double t0 = damo_now_seconds();
    choose_clients(&f, r, chosen);
    memcpy(f.start, m->param_block, (size_t)f.n * sizeof(float));
    if (f.n_state) memcpy(f.start + f.n, m->state_block, (size_t)f.n_state * sizeof(float));
    memset(f.sum, 0, (size_t)(total + 1) * sizeof *f.sum);
    if (f.masked_sum) memset(f.masked_sum, 0, (size_t)(total + 1) * sizeof *f.masked_sum);
    double loss_sum = 0, figures[2];
    int64_t examples = 0;
    for (int j = 0; st == DAMO_OK && j < f.per; j++)
      if (j % size == rank) st = train_client(&f, x, y, r, j, chosen[j], &loss_sum, &examples);
    if (st != DAMO_OK) break;
    if (f.masked_sum) { /* the server's part: the masked words of every client, added */
      for (int64_t i = 0; i <= total; i++) f.sum[i] = f.masked_sum[i];
      if (size > 1 && (st = damo_dist_allreduce_f64(o.dist, f.sum, total + 1)) != DAMO_OK) break;
      for (int64_t i = 0; i <= total; i++) f.masked_sum[i] = (uint32_t)(uint64_t)fmod(f.sum[i], 4294967296.0);
      damo_secagg_decode(f.masked_sum, total + 1, o.secure_scale > 0 ? o.secure_scale : 1048576.0, f.change);
      for (int64_t i = 0; i <= total; i++) f.sum[i] = f.change[i];
    } else if (size > 1 && (st = damo_dist_allreduce_f64(o.dist, f.sum, total + 1)) != DAMO_OK) {
      break;
    }
    figures[0] = loss_sum, figures[1] = (double)examples;
    if (size > 1 && (st = damo_dist_allreduce_f64(o.dist, figures, 2)) != DAMO_OK) break;
    damo_fed_round rep = {.round = r + 1, .rounds = o.rounds, .clients = f.per, .examples = (int64_t)figures[1],
                          .train_loss = figures[1] > 0 ? figures[0] / figures[1] : NAN, .test_loss = NAN,
                          .test_accuracy = NAN, .epsilon = NAN};
    rep.update_norm = apply_round(&f, r);
    float tl = NAN, ta = NAN;
    if (o.x_test && (st = damo_model_evaluate(m, o.x_test, o.y_test, 256, &tl, &ta)) != DAMO_OK) break;
    rep.test_loss = tl, rep.test_accuracy = ta;
    if (o.dp_clip > 0 &&
        damo_dp_epsilon((double)f.per / o.clients, o.dp_noise, r + 1, o.dp_delta, DAMO_DP_CLASSIC, &rep.epsilon, NULL) != DAMO_OK)
      rep.epsilon = INFINITY;
    rep.seconds = damo_now_seconds() - t0;
    double row[DAMO_HISTORY_ROW];
    for (int c = 0; c < DAMO_HISTORY_ROW; c++) row[c] = NAN;
    row[DAMO_H_LOSS] = rep.train_loss, row[DAMO_H_VAL_LOSS] = rep.test_loss, row[DAMO_H_VAL_ACCURACY] = rep.test_accuracy;
    row[DAMO_HISTORY_COLUMNS] = rep.epsilon;
    if ((st = damo_history_append(f.h, r + 1, row)) != DAMO_OK) break;
    if (rank == 0 && o.checkpoint_dir && (st = checkpoint(&f, r + 1)) != DAMO_OK) break;
    if (o.on_round && (st = o.on_round(o.on_round_ctx, &rep)) != DAMO_OK) break;
    if (o.target_accuracy > 0 && rep.test_accuracy >= o.target_accuracy) break;
  }
  free(f.rows);
  free(f.offsets);
  free(f.start);
  free(f.sum);
  free(f.change);
  free(f.masked);
  free(f.masked_sum);
  free(chosen);
  if (st != DAMO_OK && !strstr(damo_last_error(), "federate")) damo_error_prefix(st, "federate: ");
  if (history && st == DAMO_OK) *history = f.h;
  else damo_history_free(f.h);
  return st;
}
