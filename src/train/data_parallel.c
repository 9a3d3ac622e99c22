/* data_parallel.c - data-parallel training inside the one trainer step.
 *
 * Every rank holds the whole model and runs the step on its share of the global batch. The
 * loss of a micro-batch is reduced first (sum of loss x items and of items), so every rank
 * knows the step's loss and its own share `scale` = items / all items before backward: a
 * rank's gradient times its scale, summed over ranks, is the gradient of the mean loss over
 * the whole batch, whatever the shares (uneven ones, a rank with none).
 *
 * Buckets. Gradients are reduced in contiguous ranges of the flat store. The first step
 * records the order in which backward finishes the parameters (damo_graph_set_grad_ready)
 * and reduces everything at its end, blocking (the time it takes is the "blocking" figure);
 * then the parameters are grouped in that order into buckets of at most bucket_mb (a larger
 * tensor alone), each bucket's range being its tensors' span (ranges that overlap are
 * merged; the gaps between them, such as alignment padding or parameters backward never
 * reaches, are buckets that are sent last). From the second step on, when a bucket's last tensor is final its range is
 * scaled (with grad_accum, averaged with the accumulated micro-batches) and its non-blocking
 * all-reduce starts while backward goes on. Buckets start strictly in their number order,
 * the same on every rank, as MPI requires of collectives: a bucket finished early waits for
 * the ones before it.
 *
 * ZeRO stage 1. Rank r owns parameters [lo_r, hi_r) (damo_dist_share of the store) and only
 * their optimizer moments; a bucket is reduce-scattered (each rank receives the sum of its
 * own part into a shard-sized gradient), each rank steps its shard (the clipping norm's sum
 * of squares all-reduced), and the parameters are all-gathered. */
#include "graph/backend.h"
#include "train/data_parallel.h"

#include <math.h>

typedef struct bucket {
  int64_t lo, hi;  /* its range of the store */
  int members;     /* tensors whose gradients it waits for (0: a gap, sent at the end) */
  int pending;     /* of them, not final yet in this backward */
  int request;     /* its collective in flight, or -1 */
  int sent;
} bucket;

typedef struct record {
  int64_t off, count;
} record;

struct dp_state {
  damo_dist *d;
  int rank, size, zero;
  int64_t bucket_floats;
  float *params, *grads, *grad_sum, *state;
  int64_t n, n_state, K;
  const damo_backend *b;
  /* the first step's record of the finishing order; then the buckets */
  record *rec;
  int n_rec, cap_rec, learnt;
  bucket *bk;     /* in send order */
  int n_bk, next; /* next: the first bucket not sent in this backward */
  int *by_lo;     /* bucket numbers sorted by lo, for the lookup */
  int armed;
  float scale;
  damo_status error; /* the first failure inside the callback */
  /* ZeRO */
  int64_t shard_lo, shard_n, *shard_first, *shard_count;
  float *shard_grad;
  float *gathered[2];
  const char *gathered_name[2];
  int n_gathered;
  /* figures */
  int64_t steps_measured;
  double exposed, blocking;
};

damo_dist *dp_dist(const dp_state *p) { return p ? p->d : NULL; }

static damo_status reduce_sum_squares(void *ctx, double *x) { return damo_dist_allreduce_f64(ctx, x, 1); }

static void on_grad_ready(void *ctx, float *grad, int64_t count);

void dp_free(dp_state *p) {
  if (!p) return;
  free(p->rec);
  free(p->bk);
  free(p->by_lo);
  free(p->shard_first);
  free(p->shard_grad);
  dp_release_moments(p);
  free(p);
}

/* One bucket over the whole store: what the first step sends. */
static damo_status whole_store_bucket(dp_state *p) {
  free(p->bk);
  free(p->by_lo);
  p->bk = calloc(1, sizeof *p->bk);
  p->by_lo = calloc(1, sizeof *p->by_lo);
  if (!p->bk || !p->by_lo) return damo_error(DAMO_ERR_NOMEM, "data parallel: out of memory");
  p->bk[0] = (bucket){0, p->n, 0, 0, -1, 0};
  p->n_bk = 1;
  return DAMO_OK;
}

damo_status dp_new(damo_dist *d, const damo_data_parallel_options *o, const damo_train_adapter *a,
                   damo_optimizer *opt, float *grad_sum, int64_t grad_accum, dp_state **out) {
  *out = NULL;
  const damo_backend *b = a->backend ? a->backend : damo_backend_cpu();
  if (!damo_backend_is_host(b))
    return damo_error(DAMO_ERR_UNSUPPORTED, "data parallel: the parameters are on %s (backend '%s'); the MPI "
                      "collectives take host memory", damo_device_name(b->device), b->name);
  const double mb = o && o->bucket_mb > 0 ? o->bucket_mb : 25.0;
  if (!(mb <= 1e6)) return damo_error(DAMO_ERR_INVALID_ARG, "data parallel: bucket of %g MB is not a size", mb);
  if (o && o->zero != 0 && o->zero != 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "data parallel: ZeRO stage %d is not built (0 or 1)", o->zero);
  dp_state *p = calloc(1, sizeof *p);
  if (!p) return damo_error(DAMO_ERR_NOMEM, "data parallel: out of memory");
  p->d = d;
  p->rank = damo_dist_rank(d), p->size = damo_dist_size(d);
  p->zero = o ? o->zero : 0;
  p->bucket_floats = (int64_t)(mb * 1024.0 * 1024.0 / sizeof(float));
  if (p->bucket_floats < 1) p->bucket_floats = 1;
  p->params = a->params, p->grads = a->grads, p->grad_sum = grad_sum, p->state = a->state;
  p->n = a->n_params, p->n_state = a->n_state, p->K = grad_accum, p->b = b;
  damo_status st = whole_store_bucket(p);
  /* the same model on every rank, then rank 0's weights everywhere */
  uint64_t shape = (uint64_t)p->n * 1000003u ^ (uint64_t)p->n_state * 7919u ^ (uint64_t)grad_accum;
  if (st == DAMO_OK) st = damo_dist_check_same(d, shape, "parameter count, state size and gradient accumulation");
  if (st == DAMO_OK) st = damo_dist_broadcast(d, p->params, (size_t)p->n * sizeof(float), 0);
  if (st == DAMO_OK && p->n_state) st = damo_dist_broadcast(d, p->state, (size_t)p->n_state * sizeof(float), 0);
  if (st == DAMO_OK && p->zero) {
    p->shard_first = malloc((size_t)p->size * 2 * sizeof *p->shard_first);
    if (!p->shard_first) st = damo_error(DAMO_ERR_NOMEM, "data parallel: out of memory");
    else {
      p->shard_count = p->shard_first + p->size;
      for (int r = 0; r < p->size; r++) damo_dist_share(p->n, r, p->size, &p->shard_first[r], &p->shard_count[r]);
      p->shard_lo = p->shard_first[p->rank], p->shard_n = p->shard_count[p->rank];
      p->shard_grad = malloc((size_t)(p->shard_n ? p->shard_n : 1) * sizeof(float));
      if (!p->shard_grad) st = damo_error(DAMO_ERR_NOMEM, "data parallel: out of memory for the gradient shard");
      if (st == DAMO_OK)
        st = damo_optimizer_set_shard(opt, p->shard_lo, p->shard_lo + p->shard_n, reduce_sum_squares, d);
    }
  }
  if (st != DAMO_OK) {
    dp_free(p);
    return damo_error_prefix(st, "data parallel setup (rank %d of %d): ", damo_dist_rank(d), damo_dist_size(d));
  }
  if (a->set_grad_ready) a->set_grad_ready(a->ctx, on_grad_ready, p);
  *out = p;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ buckets */

static int cmp_lo(const void *x, const void *y, void *bk) {
  const bucket *b = bk;
  int64_t a = b[*(const int *)x].lo, c = b[*(const int *)y].lo;
  return a < c ? -1 : a > c;
}

/* qsort without a context argument: the buckets are few, an insertion sort does. */
static void sort_by_lo(int *idx, int n, const bucket *bk) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && cmp_lo(&idx[j - 1], &idx[j], (void *)bk) > 0; j--) {
      int t = idx[j];
      idx[j] = idx[j - 1], idx[j - 1] = t;
    }
}

/* Groups the recorded tensors, in finishing order, into buckets (see the top). */
static damo_status learn_buckets(dp_state *p) {
  p->learnt = 1;
  if (p->n_rec == 0) return DAMO_OK; /* no callback from the adapter: the whole store at the end */
  bucket *g = calloc((size_t)p->n_rec + 1, sizeof *g);
  if (!g) return damo_error(DAMO_ERR_NOMEM, "data parallel: out of memory for buckets");
  int ng = 0;
  int64_t floats = 0;
  for (int i = 0; i < p->n_rec; i++) { /* groups in finishing order, none over the size unless one tensor is */
    const record *r = &p->rec[i];
    if (floats > 0 && floats + r->count > p->bucket_floats) ng++, floats = 0;
    if (floats == 0) g[ng] = (bucket){r->off, r->off + r->count, 0, 0, -1, 0};
    if (r->off < g[ng].lo) g[ng].lo = r->off;
    if (r->off + r->count > g[ng].hi) g[ng].hi = r->off + r->count;
    floats += r->count;
  }
  if (floats > 0) ng++;
  /* merge groups whose spans overlap (a tensor finished out of place), keeping the earlier number */
  for (int changed = 1; changed;) {
    changed = 0;
    for (int i = 0; i < ng && !changed; i++)
      for (int j = i + 1; j < ng && !changed; j++)
        if (g[i].lo < g[j].hi && g[j].lo < g[i].hi) {
          if (g[j].lo < g[i].lo) g[i].lo = g[j].lo;
          if (g[j].hi > g[i].hi) g[i].hi = g[j].hi;
          memmove(g + j, g + j + 1, (size_t)(ng - j - 1) * sizeof *g);
          ng--, changed = 1;
        }
  }
  for (int i = 0; i < p->n_rec; i++)
    for (int k = 0; k < ng; k++)
      if (p->rec[i].off >= g[k].lo && p->rec[i].off < g[k].hi) {
        g[k].members++;
        break;
      }
  /* the gaps, sent last, in store order */
  int *idx = malloc((size_t)(2 * ng + 2) * sizeof *idx);
  bucket *all = calloc((size_t)(2 * ng + 2), sizeof *all);
  if (!idx || !all) {
    free(g), free(idx), free(all);
    return damo_error(DAMO_ERR_NOMEM, "data parallel: out of memory for buckets");
  }
  for (int k = 0; k < ng; k++) idx[k] = k;
  sort_by_lo(idx, ng, g);
  memcpy(all, g, (size_t)ng * sizeof *g);
  int n_all = ng;
  int64_t at = 0;
  for (int k = 0; k <= ng; k++) {
    int64_t until = k < ng ? g[idx[k]].lo : p->n;
    if (until > at) all[n_all++] = (bucket){at, until, 0, 0, -1, 0};
    if (k < ng) at = g[idx[k]].hi;
  }
  free(g);
  for (int k = 0; k < n_all; k++) idx[k] = k;
  sort_by_lo(idx, n_all, all);
  free(p->bk);
  free(p->by_lo);
  p->bk = all, p->n_bk = n_all, p->by_lo = idx;
  return DAMO_OK;
}

/* Scales bucket k's range into the step's gradient (see dp_arm) and starts its collective. */
static damo_status send_bucket(dp_state *p, int k) {
  bucket *bk = &p->bk[k];
  const damo_backend *b = p->b;
  const int64_t lo = bk->lo, len = bk->hi - bk->lo;
  bk->sent = 1;
  if (len <= 0) return DAMO_OK;
  if (p->K > 1) { /* (accumulated + scale x this micro-batch) / K, as the single-process step averages */
    b->axpby(b, len, p->scale, p->grads + lo, 1.0f, p->grad_sum + lo);
    b->axpby(b, len, 1.0f / (float)p->K, p->grad_sum + lo, 0.0f, p->grads + lo);
  } else if (p->scale != 1.0f) {
    b->axpby(b, len, p->scale, p->grads + lo, 0.0f, p->grads + lo);
  }
  if (!p->zero) return damo_dist_iallreduce_f32(p->d, p->grads + lo, len, &bk->request);
  /* ZeRO: the parts of [lo, hi) in each rank's shard, this rank's into its shard gradient */
  int64_t counts[p->size > 0 ? p->size : 1];
  for (int r = 0; r < p->size; r++) {
    int64_t a = p->shard_first[r] > lo ? p->shard_first[r] : lo;
    int64_t e = p->shard_first[r] + p->shard_count[r] < bk->hi ? p->shard_first[r] + p->shard_count[r] : bk->hi;
    counts[r] = e > a ? e - a : 0;
  }
  int64_t mine = p->shard_lo > lo ? p->shard_lo : lo;
  float *recv = p->shard_grad + (counts[p->rank] ? mine - p->shard_lo : 0);
  return damo_dist_ireduce_scatter_f32(p->d, p->grads + lo, recv, counts, &bk->request);
}

/* Sends the finished buckets that are next in number order. */
static void send_ready(dp_state *p) {
  while (p->next < p->n_bk && p->bk[p->next].members > 0 && p->bk[p->next].pending == 0 && p->error == DAMO_OK) {
    p->error = send_bucket(p, p->next);
    p->next++;
  }
}

static int bucket_of(const dp_state *p, int64_t off) {
  int lo = 0, hi = p->n_bk - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    const bucket *b = &p->bk[p->by_lo[mid]];
    if (off < b->lo) hi = mid - 1;
    else if (off >= b->hi) lo = mid + 1;
    else return p->by_lo[mid];
  }
  return -1;
}

static void on_grad_ready(void *ctx, float *grad, int64_t count) {
  dp_state *p = ctx;
  if (!p->armed || grad < p->grads || grad >= p->grads + p->n) return; /* not the store's */
  const int64_t off = grad - p->grads;
  if (!p->learnt) { /* the first step: record the order */
    if (p->n_rec == p->cap_rec) {
      int cap = p->cap_rec ? 2 * p->cap_rec : 64;
      record *r = realloc(p->rec, (size_t)cap * sizeof *r);
      if (!r) {
        p->error = damo_error(DAMO_ERR_NOMEM, "data parallel: out of memory recording gradients");
        return;
      }
      p->rec = r, p->cap_rec = cap;
    }
    p->rec[p->n_rec++] = (record){off, count};
    return;
  }
  int k = bucket_of(p, off);
  if (k < 0 || p->bk[k].members == 0) return;
  if (p->bk[k].pending > 0 && --p->bk[k].pending == 0) send_ready(p);
  else damo_dist_progress(p->d);
}

/* ------------------------------------------------------------------ the step */

damo_status dp_reduce_loss(dp_state *p, double loss, double weight, double *global, float *scale) {
  if (p->size == 1) { /* one process: the loss as it is (no rounding through a product) */
    *global = weight > 0 ? loss : NAN;
    *scale = 1.0f;
    return DAMO_OK;
  }
  double v[2] = {weight > 0 ? loss * weight : 0.0, weight};
  damo_status st = damo_dist_allreduce_f64(p->d, v, 2);
  if (st != DAMO_OK) return st;
  if (!(v[1] > 0)) return damo_error(DAMO_ERR_INVALID_ARG, "the global batch has no items on any of the %d ranks", p->size);
  *global = v[0] / v[1];
  *scale = (float)(weight / v[1]);
  return DAMO_OK;
}

void dp_arm(dp_state *p, float scale) {
  p->scale = scale;
  p->armed = 1;
  p->next = 0;
  p->error = DAMO_OK;
  for (int k = 0; k < p->n_bk; k++) {
    p->bk[k].pending = p->bk[k].members;
    p->bk[k].sent = 0;
    p->bk[k].request = -1;
  }
}

damo_status dp_finish(dp_state *p, float **grads, int64_t *n) {
  p->armed = 0;
  const double t0 = damo_now_seconds();
  damo_status st = p->error;
  for (int k = p->next; k < p->n_bk && st == DAMO_OK; k++) /* the rest, in number order */
    st = send_bucket(p, k);
  p->next = p->n_bk;
  for (int k = 0; k < p->n_bk; k++) { /* every started request is waited for, even after a failure */
    damo_status w = damo_dist_wait(p->d, p->bk[k].request);
    p->bk[k].request = -1;
    if (st == DAMO_OK) st = w;
  }
  const double waited = damo_now_seconds() - t0;
  if (st != DAMO_OK) return damo_error_prefix(st, "gradient reduction: ");
  if (!p->learnt) {
    p->blocking = waited;
    if ((st = learn_buckets(p)) != DAMO_OK) return st;
  } else {
    p->exposed += waited;
    p->steps_measured++;
  }
  *grads = p->zero ? p->shard_grad : p->grads;
  *n = p->zero ? p->shard_n : p->n;
  return DAMO_OK;
}

damo_status dp_optimizer_step(dp_state *p, damo_optimizer *opt, int64_t total_steps, float *norm) {
  damo_status st;
  if (!p->zero) {
    st = damo_optimizer_step(opt, p->params, p->grads, total_steps, norm);
  } else {
    st = damo_optimizer_step(opt, p->params + p->shard_lo, p->shard_grad, total_steps, norm);
    /* every rank learns of a failure in the step (a NaN in one shard) through the norm's
     * all-reduce, so all of them stop here together; else the gather */
    const double t0 = damo_now_seconds();
    if (st == DAMO_OK) st = damo_dist_allgather_f32(p->d, p->params, p->shard_count);
    if (p->learnt && p->steps_measured) p->exposed += damo_now_seconds() - t0;
  }
  if (st == DAMO_OK && p->n_state && p->size > 1) st = damo_dist_broadcast(p->d, p->state, (size_t)p->n_state * sizeof(float), 0);
  return st;
}

/* ------------------------------------------------------------------ checkpoints */

void dp_release_moments(dp_state *p) {
  if (!p) return;
  for (int i = 0; i < p->n_gathered; i++) free(p->gathered[i]);
  p->n_gathered = 0;
}

damo_status dp_gather_moments(dp_state *p, damo_optimizer *opt) {
  dp_release_moments(p);
  if (!p->zero) return DAMO_OK;
  damo_tensor_dict *d = damo_tensor_dict_new();
  damo_status st = d ? damo_optimizer_state(opt, d) : damo_error(DAMO_ERR_NOMEM, "checkpoint: out of memory");
  for (int i = 0; d && st == DAMO_OK && i < d->count; i++) {
    const damo_tensor *t = d->tensors[i];
    if (t->dtype != DAMO_F32) continue; /* the step */
    float *full = malloc((size_t)(p->n ? p->n : 1) * sizeof *full);
    if (!full) {
      st = damo_error(DAMO_ERR_NOMEM, "checkpoint: out of memory gathering '%s'", d->names[i]);
      break;
    }
    memcpy(full + p->shard_lo, t->data, (size_t)p->shard_n * sizeof *full);
    p->gathered[p->n_gathered] = full;
    p->gathered_name[p->n_gathered++] = strcmp(d->names[i], "optimizer.v") == 0 ? "optimizer.v"
                                        : strcmp(d->names[i], "optimizer.m") == 0 ? "optimizer.m"
                                                                                  : "optimizer.momentum";
    st = damo_dist_allgather_f32(p->d, full, p->shard_count);
  }
  damo_tensor_dict_free(d);
  if (st != DAMO_OK) dp_release_moments(p);
  return st;
}

damo_status dp_optimizer_state(dp_state *p, damo_optimizer *opt, damo_tensor_dict *d) {
  if (!p || !p->zero) return damo_optimizer_state_views(opt, d);
  if (!p->n_gathered && damo_optimizer_shard(opt, NULL) != p->n)
    return damo_error(DAMO_ERR_STATE, "checkpoint: the sharded moments were not gathered (dp_gather_moments)");
  damo_tensor_dict *tmp = damo_tensor_dict_new(); /* the step, from the optimizer */
  damo_status st = tmp ? damo_optimizer_state(opt, tmp) : damo_error(DAMO_ERR_NOMEM, "checkpoint: out of memory");
  damo_tensor *step = st == DAMO_OK ? damo_tensor_dict_get(tmp, "optimizer.step") : NULL;
  if (step) {
    int64_t count = damo_tensor_numel(step);
    damo_tensor *copy = damo_tensor_new(DAMO_I32, 1, &count);
    if (copy) memcpy(copy->data, step->data, (size_t)count * sizeof(int32_t));
    st = copy ? damo_tensor_dict_add(d, "optimizer.step", copy) : damo_error(DAMO_ERR_NOMEM, "checkpoint: out of memory");
  }
  damo_tensor_dict_free(tmp);
  for (int i = 0; i < p->n_gathered && st == DAMO_OK; i++) {
    damo_tensor *t = damo_tensor_wrap(DAMO_F32, 1, &p->n, p->gathered[i]);
    st = t ? damo_tensor_dict_add(d, p->gathered_name[i], t) : damo_error(DAMO_ERR_NOMEM, "checkpoint: out of memory");
  }
  return st;
}

void dp_stats(const dp_state *p, damo_data_parallel_stats *o) {
  memset(o, 0, sizeof *o);
  if (!p) {
    o->ranks = 1;
    return;
  }
  o->ranks = p->size, o->zero = p->zero, o->steps = p->steps_measured;
  for (int k = 0; k < p->n_bk; k++) o->buckets += p->bk[k].members > 0;
  o->bytes_per_step = (double)p->n * sizeof(float) * (p->zero ? 2.0 : 1.0);
  o->exposed_seconds = p->steps_measured ? p->exposed / (double)p->steps_measured : 0.0;
  o->blocking_seconds = p->blocking;
  double h = p->blocking > 0 ? 1.0 - o->exposed_seconds / p->blocking : 0.0;
  o->hidden_share = h < 0 ? 0 : h > 1 ? 1 : h;
}
