/* checkpoint.c - the trainer's and the loop's part of a checkpoint, and taking it back.
 *
 * A checkpoint holds everything the rest of the run depends on, so a resumed run computes
 * the same numbers as an uninterrupted one: the parameters and state (BatchNorm's running
 * statistics), the optimizer's moments and step, the steps done, the loop's position (epoch,
 * step in it, the epoch's running loss), early stopping's best figure, patience used and
 * best weights, and the history rows so far. The kind adds its own generators and orders.
 * Doubles (running loss, history) are stored as their bytes (U8 tensors, host byte order,
 * little-endian on every CPU damo builds for) so nothing is rounded on the way. */
#include "graph/backend.h"
#include "optim/optim.h"
#include "train/data_parallel.h"
#include "train/history.h"
#include "train/trainer.h"

#include <math.h>

#define K_PARAMS "trainer.params"
#define K_STATE "trainer.state"
#define K_STEP "trainer.step"
#define K_POSITION "loop.position"
#define K_EARLY "loop.early_stop"
#define K_BEST "loop.best_weights"
#define K_HISTORY "loop.history"
#define K_HISTORY_EXTRA "loop.history_extra" /* the named columns (a model of several outputs) */

void loop_resume_clear(loop_resume *r) {
  free(r->best_weights);
  free(r->history);
  free(r->history_extra);
  memset(r, 0, sizeof *r);
}

/* n floats of a block on backend b as a tensor: a view on the host, a copy from a device. */
static damo_tensor *block_tensor(const damo_backend *b, float *block, int64_t n) {
  if (damo_backend_is_host(b)) return damo_tensor_wrap(DAMO_F32, 1, &n, block);
  damo_tensor *t = damo_tensor_new(DAMO_F32, 1, &n);
  if (t && b->to_host(b, t->data, block, (size_t)n * sizeof(float)) != DAMO_OK) {
    damo_tensor_free(t);
    return NULL;
  }
  return t;
}

static damo_status add(damo_tensor_dict *d, const char *name, damo_tensor *t) {
  if (!t) return damo_error(DAMO_ERR_NOMEM, "checkpoint: out of memory for '%s'", name);
  return damo_tensor_dict_add(d, name, t);
}

damo_status damo_trainer_checkpoint_add(const damo_train_event *e, damo_tensor_dict *d) {
  if (!e || !e->run || !d) return damo_error(DAMO_ERR_INVALID_ARG, "trainer_checkpoint_add: needs a run's event");
  const struct damo_train_run *r = e->run;
  const damo_trainer *t = r->t;
  const damo_train_adapter *a = &t->a;
  int64_t n = a->n_params;
  damo_status st = add(d, K_PARAMS, block_tensor(a->backend, a->params, n));
  if (st == DAMO_OK && a->n_state) st = add(d, K_STATE, block_tensor(a->backend, a->state, a->n_state));
  int64_t two = 2;
  damo_tensor *step = damo_tensor_new(DAMO_I32, 1, &two);
  if (step) {
    int32_t *v = damo_tensor_i32(step);
    v[0] = (int32_t)(t->steps_done & 0x7fffffff), v[1] = (int32_t)(t->steps_done >> 31);
  }
  if (st == DAMO_OK) st = add(d, K_STEP, step);
  else damo_tensor_free(step);
  if (st == DAMO_OK) st = dp_optimizer_state(t->dp, t->opt, d); /* ZeRO: the gathered moments */
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, K_POSITION, &e->position, sizeof e->position);
  if (st == DAMO_OK && r->es.active) {
    const double early[3] = {r->es.best, (double)r->es.wait, (double)r->es.best_at};
    st = damo_tensor_dict_add_bytes(d, K_EARLY, early, sizeof early);
    if (st == DAMO_OK && r->es.best_weights && r->es.best_at > 0) {
      int64_t nb = a->n_params + a->n_state;
      st = add(d, K_BEST, damo_tensor_wrap(DAMO_F32, 1, &nb, r->es.best_weights));
    }
  }
  if (st == DAMO_OK && r->history->n > 0) {
    const size_t cols = DAMO_HISTORY_COLUMNS + 1, rows = (size_t)r->history->n;
    double *flat = malloc(rows * cols * sizeof *flat);
    if (!flat) return damo_error(DAMO_ERR_NOMEM, "checkpoint: out of memory for the history");
    for (size_t i = 0; i < rows; i++) {
      flat[i * cols] = r->history->epoch[i];
      memcpy(flat + i * cols + 1, r->history->values + i * DAMO_HISTORY_ROW, DAMO_HISTORY_COLUMNS * sizeof *flat);
    }
    st = damo_tensor_dict_add_bytes(d, K_HISTORY, flat, rows * cols * sizeof *flat);
    free(flat);
  }
  const size_t extra = (size_t)r->history->n_extra;
  if (st == DAMO_OK && r->history->n > 0 && extra > 0) {
    const size_t rows = (size_t)r->history->n;
    double *flat = malloc(rows * extra * sizeof *flat);
    if (!flat) return damo_error(DAMO_ERR_NOMEM, "checkpoint: out of memory for the history");
    for (size_t i = 0; i < rows; i++)
      memcpy(flat + i * extra, r->history->values + i * DAMO_HISTORY_ROW + DAMO_HISTORY_COLUMNS, extra * sizeof *flat);
    st = damo_tensor_dict_add_bytes(d, K_HISTORY_EXTRA, flat, rows * extra * sizeof *flat);
    free(flat);
  }
  return st;
}

/* The tensor name of dtype dt with `count` elements (count < 0: any), or an error. */
static damo_status need(const damo_tensor_dict *d, const char *path, const char *name, damo_dtype dt, int64_t count,
                        const damo_tensor **out) {
  const damo_tensor *t = damo_tensor_dict_get(d, name);
  if (!t) return damo_error(DAMO_ERR_FORMAT, "%s: not a checkpoint of this run: no tensor '%s'", path, name);
  if (t->dtype != dt || t->ndim != 1 || (count >= 0 && t->shape[0] != count))
    return damo_error(DAMO_ERR_FORMAT, "%s: '%s' is %s with %lld values; expected %s with %lld", path, name,
                      damo_dtype_name(t->dtype), (long long)damo_tensor_numel(t), damo_dtype_name(dt), (long long)count);
  *out = t;
  return DAMO_OK;
}

static damo_status finite(const float *v, int64_t n, const char *path, const char *name) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(v[i]))
      return damo_error(DAMO_ERR_NUMERIC, "%s: '%s'[%lld] is %g; a checkpoint holds finite values", path, name,
                        (long long)i, (double)v[i]);
  return DAMO_OK;
}

static int is_count(double v) { return v >= 0 && v <= 9007199254740992.0 && v == floor(v); }

damo_status damo_trainer_resume(damo_trainer *t, const damo_tensor_dict *d, const char *path) {
  if (!t || !d) return damo_error(DAMO_ERR_INVALID_ARG, "trainer_resume: NULL argument");
  if (!path) path = "checkpoint";
  const damo_train_adapter *a = &t->a;
  const damo_tensor *params, *state = NULL, *step, *position, *early = NULL, *best = NULL, *history = NULL;
  const damo_tensor *extra = NULL;
  damo_status st = need(d, path, K_PARAMS, DAMO_F32, a->n_params, &params);
  if (st == DAMO_OK && a->n_state) st = need(d, path, K_STATE, DAMO_F32, a->n_state, &state);
  if (st == DAMO_OK) st = need(d, path, K_STEP, DAMO_I32, 2, &step);
  if (st == DAMO_OK) st = need(d, path, K_POSITION, DAMO_U8, (int64_t)sizeof(damo_train_position), &position);
  if (st == DAMO_OK && damo_tensor_dict_get(d, K_EARLY)) st = need(d, path, K_EARLY, DAMO_U8, 3 * sizeof(double), &early);
  if (st == DAMO_OK && damo_tensor_dict_get(d, K_BEST)) st = need(d, path, K_BEST, DAMO_F32, a->n_params + a->n_state, &best);
  if (st == DAMO_OK && damo_tensor_dict_get(d, K_HISTORY)) st = need(d, path, K_HISTORY, DAMO_U8, -1, &history);
  const size_t row_bytes = (DAMO_HISTORY_COLUMNS + 1) * sizeof(double);
  if (st == DAMO_OK && history && history->shape[0] % (int64_t)row_bytes)
    st = damo_error(DAMO_ERR_FORMAT, "%s: '%s' holds %lld bytes, not whole rows of %zu", path, K_HISTORY,
                    (long long)history->shape[0], row_bytes);
  if (st == DAMO_OK) st = finite(params->data, a->n_params, path, K_PARAMS);
  if (st == DAMO_OK && state) st = finite(state->data, a->n_state, path, K_STATE);
  if (st == DAMO_OK && best) st = finite(best->data, a->n_params + a->n_state, path, K_BEST);
  /* counts stored as doubles must be whole numbers a run can reach */
  double e[3] = {0, 0, 0};
  if (st == DAMO_OK && early) {
    memcpy(e, early->data, sizeof e);
    if (!is_count(e[1]) || !is_count(e[2]))
      st = damo_error(DAMO_ERR_FORMAT, "%s: '%s' holds patience used %g and best at %g; expected whole counts", path,
                      K_EARLY, e[1], e[2]);
  }
  const int64_t rows = history ? history->shape[0] / (int64_t)row_bytes : 0;
  if (st == DAMO_OK && rows && damo_tensor_dict_get(d, K_HISTORY_EXTRA))
    st = need(d, path, K_HISTORY_EXTRA, DAMO_U8, -1, &extra);
  const int64_t extra_cols = extra ? extra->shape[0] / (rows * (int64_t)sizeof(double)) : 0;
  if (st == DAMO_OK && extra && (extra->shape[0] != extra_cols * rows * (int64_t)sizeof(double) ||
                                 extra_cols > DAMO_HISTORY_MAX_EXTRA))
    st = damo_error(DAMO_ERR_FORMAT, "%s: '%s' holds %lld bytes, not whole rows of at most %d columns for %lld rows",
                    path, K_HISTORY_EXTRA, (long long)extra->shape[0], DAMO_HISTORY_MAX_EXTRA, (long long)rows);
  for (int64_t i = 0; st == DAMO_OK && i < rows; i++) {
    double at;
    memcpy(&at, (const char *)history->data + (size_t)i * row_bytes, sizeof at);
    if (!is_count(at) || at > 2147483647.0)
      st = damo_error(DAMO_ERR_FORMAT, "%s: '%s' row %lld is numbered %g; expected an epoch or step", path, K_HISTORY,
                      (long long)i, at);
  }
  damo_train_position pos;
  int64_t steps = 0;
  if (st == DAMO_OK) {
    memcpy(&pos, position->data, sizeof pos);
    const int32_t *v = damo_tensor_i32(step);
    if (v[0] < 0 || v[1] < 0 || pos.epoch < 0 || pos.step < 0 || pos.seen < 0 || !isfinite(pos.loss_sum))
      st = damo_error(DAMO_ERR_FORMAT, "%s: a negative step or a broken position (epoch %lld, step %lld)", path,
                      (long long)pos.epoch, (long long)pos.step);
    else
      steps = (int64_t)v[0] | (int64_t)v[1] << 31;
  }
  loop_resume res = {0};
  if (st == DAMO_OK && best && !(res.best_weights = malloc((size_t)(a->n_params + a->n_state) * sizeof(float))))
    st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory for the best weights", path);
  if (st == DAMO_OK && history && history->shape[0] && !(res.history = malloc((size_t)history->shape[0])))
    st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory for the history", path);
  if (st == DAMO_OK && extra_cols && !(res.history_extra = malloc((size_t)extra->shape[0])))
    st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory for the history", path);
  /* the optimizer checks its tensors before it changes anything; it goes last of the checks */
  if (st == DAMO_OK && (st = damo_optimizer_load_state(t->opt, d)) != DAMO_OK) damo_error_prefix(st, "%s: ", path);
  if (st == DAMO_OK) optimizer_clear_moments_outside(t->opt, a->trained_ranges, a->n_trained_ranges); /* now frozen */
  if (st == DAMO_OK && damo_optimizer_steps(t->opt) != steps)
    st = damo_error(DAMO_ERR_FORMAT, "%s: trainer step %lld and optimizer step %lld differ", path, (long long)steps,
                    (long long)damo_optimizer_steps(t->opt));
  if (st != DAMO_OK) {
    loop_resume_clear(&res);
    return st;
  }
  const damo_backend *b = a->backend;
  st = b->from_host(b, a->params, params->data, (size_t)a->n_params * sizeof(float));
  if (st == DAMO_OK && state) st = b->from_host(b, a->state, state->data, (size_t)a->n_state * sizeof(float));
  if (st != DAMO_OK) {
    loop_resume_clear(&res);
    return st;
  }
  t->steps_done = steps;
  res.pending = 1;
  res.position = pos;
  if (early) res.es_saved = 1, res.best = e[0], res.wait = (int64_t)e[1], res.best_at = (int64_t)e[2];
  if (best) memcpy(res.best_weights, best->data, (size_t)(a->n_params + a->n_state) * sizeof(float));
  if (res.history) {
    memcpy(res.history, history->data, (size_t)history->shape[0]);
    res.history_rows = rows;
  }
  if (res.history_extra) {
    memcpy(res.history_extra, extra->data, (size_t)extra->shape[0]);
    res.history_extra_cols = extra_cols;
  }
  loop_resume_clear(&t->resume);
  t->resume = res;
  return DAMO_OK;
}
