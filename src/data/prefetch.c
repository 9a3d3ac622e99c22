/* prefetch.c - the background batch producer behind prefetch.h: one pthread, two slots.
 * The producer fills slot b % 2 for batch b once the consumer has given it back (the
 * consumer gives a slot back by asking for the next batch), so at most one batch waits
 * ready while the other is being trained on. One mutex and one condition variable guard
 * the slot states; the produce callback runs unlocked. Stopping never needs a timeout:
 * the producer checks the stop flag whenever it waits, and a produce call in progress is
 * simply allowed to finish before the join. */
#include "prefetch.h"

#include <pthread.h>
#include <stdio.h>

enum { SLOT_EMPTY = 0, SLOT_READY = 1 };

typedef struct pf_slot {
  float *x;
  void *y;
  int state;
  damo_status status;
  char msg[1024]; /* the producer's error message (its thread's damo_last_error) */
} pf_slot;

struct damo_prefetcher {
  size_t x_bytes, y_bytes;
  damo_produce_fn produce;
  void *ctx;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pf_slot slot[2];
  pthread_t thread;
  int thread_live; /* a thread exists and must be joined */
  int started;     /* start() was called successfully */
  int stop;        /* ask the producer to quit */
  int ended;       /* the consumer received an error: the run is over */
  int held;        /* slot the consumer holds, or -1 */
  int64_t first, count, consumed;
};

static void *producer_main(void *arg) {
  damo_prefetcher *p = arg;
  pthread_mutex_lock(&p->mu);
  for (int64_t i = 0; i < p->count; i++) {
    pf_slot *s = &p->slot[i % 2];
    while (s->state != SLOT_EMPTY && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
    if (p->stop) break;
    int64_t b = p->first + i;
    pthread_mutex_unlock(&p->mu);
    damo_clear_error();
    damo_status st = p->produce(p->ctx, b, s->x, s->y);
    if (st) {
      const char *m = damo_last_error();
      snprintf(s->msg, sizeof s->msg, "prefetch: batch %lld: %s", (long long)b, m[0] ? m : damo_status_name(st));
    }
    pthread_mutex_lock(&p->mu);
    s->status = st;
    s->state = SLOT_READY;
    pthread_cond_broadcast(&p->cv);
    if (st) break;
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* Stops and joins the producer of the current run, if any. */
static void stop_run(damo_prefetcher *p) {
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  if (p->thread_live) pthread_join(p->thread, NULL);
  p->thread_live = 0;
  p->started = 0;
}

damo_prefetcher *damo_prefetcher_new(size_t x_bytes, size_t y_bytes, damo_produce_fn produce, void *ctx) {
  if (!produce) {
    damo_error(DAMO_ERR_INVALID_ARG, "prefetcher_new: NULL produce callback");
    return NULL;
  }
  damo_prefetcher *p = calloc(1, sizeof *p);
  if (!p) {
    damo_error(DAMO_ERR_NOMEM, "prefetcher_new: out of memory");
    return NULL;
  }
  p->x_bytes = x_bytes;
  p->y_bytes = y_bytes;
  p->produce = produce;
  p->ctx = ctx;
  p->held = -1;
  int ok = 1;
  for (int k = 0; k < 2; k++) {
    p->slot[k].x = damo_alloc(x_bytes ? x_bytes : 64);
    p->slot[k].y = y_bytes ? damo_alloc(y_bytes) : NULL;
    if (!p->slot[k].x || (y_bytes && !p->slot[k].y)) ok = 0;
  }
  int mu_ok = pthread_mutex_init(&p->mu, NULL) == 0;
  int cv_ok = pthread_cond_init(&p->cv, NULL) == 0;
  if (!ok || !mu_ok || !cv_ok) {
    for (int k = 0; k < 2; k++) {
      damo_free(p->slot[k].x);
      damo_free(p->slot[k].y);
    }
    if (mu_ok) pthread_mutex_destroy(&p->mu);
    if (cv_ok) pthread_cond_destroy(&p->cv);
    free(p);
    damo_error(DAMO_ERR_NOMEM, "prefetcher_new: out of memory for two batches of %zu + %zu bytes", x_bytes, y_bytes);
    return NULL;
  }
  return p;
}

damo_status damo_prefetcher_start(damo_prefetcher *p, int64_t first_batch, int64_t n_batches) {
  if (!p) return damo_error(DAMO_ERR_INVALID_ARG, "prefetcher_start: NULL prefetcher");
  if (first_batch < 0 || n_batches < 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "prefetcher_start: first batch %lld and count %lld must be >= 0",
                      (long long)first_batch, (long long)n_batches);
  stop_run(p);
  p->stop = 0;
  p->ended = 0;
  p->held = -1;
  p->first = first_batch;
  p->count = n_batches;
  p->consumed = 0;
  for (int k = 0; k < 2; k++) {
    p->slot[k].state = SLOT_EMPTY;
    p->slot[k].status = DAMO_OK;
    p->slot[k].msg[0] = '\0';
  }
  if (n_batches > 0) {
    int rc = pthread_create(&p->thread, NULL, producer_main, p);
    if (rc != 0) return damo_error(DAMO_ERR_NOMEM, "prefetcher_start: cannot start the producer thread: %s", strerror(rc));
    p->thread_live = 1;
  }
  p->started = 1;
  return DAMO_OK;
}

damo_status damo_prefetcher_next(damo_prefetcher *p, float **x, void **y) {
  if (!p || !x) return damo_error(DAMO_ERR_INVALID_ARG, "prefetcher_next: NULL prefetcher or output");
  *x = NULL;
  if (y) *y = NULL;
  if (!p->started) return damo_error(DAMO_ERR_STATE, "prefetcher_next: start() was not called");
  pthread_mutex_lock(&p->mu);
  if (p->held >= 0) { /* the consumer is done with the previous batch */
    p->slot[p->held].state = SLOT_EMPTY;
    p->held = -1;
    pthread_cond_broadcast(&p->cv);
  }
  if (p->ended || p->consumed >= p->count) {
    int64_t cnt = p->count;
    int ended = p->ended;
    pthread_mutex_unlock(&p->mu);
    if (ended) return damo_error(DAMO_ERR_STATE, "prefetcher_next: the run stopped at a producer error");
    return damo_error(DAMO_ERR_STATE, "prefetcher_next: all %lld batches of this run were taken", (long long)cnt);
  }
  int k = (int)(p->consumed % 2);
  pf_slot *s = &p->slot[k];
  while (s->state != SLOT_READY) pthread_cond_wait(&p->cv, &p->mu);
  p->consumed++;
  if (s->status) {
    damo_status st = s->status;
    char msg[sizeof s->msg];
    memcpy(msg, s->msg, sizeof msg);
    s->state = SLOT_EMPTY;
    p->ended = 1;
    pthread_mutex_unlock(&p->mu);
    return damo_error(st, "%s", msg);
  }
  p->held = k;
  *x = s->x;
  if (y) *y = s->y;
  pthread_mutex_unlock(&p->mu);
  return DAMO_OK;
}

void damo_prefetcher_free(damo_prefetcher *p) {
  if (!p) return;
  stop_run(p);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  for (int k = 0; k < 2; k++) {
    damo_free(p->slot[k].x);
    damo_free(p->slot[k].y);
  }
  free(p);
}
