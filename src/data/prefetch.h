/* prefetch.h - a background batch producer (internal): one pthread fills a double buffer
 * while the caller trains on the other half, so preparing batch k+1 (gathering rows,
 * augmenting) overlaps the training step on batch k.
 *
 *   p = damo_prefetcher_new(x_bytes, y_bytes, produce, ctx);
 *   damo_prefetcher_start(p, 0, n_batches);          per epoch; restarts cleanly
 *   for (...) { damo_prefetcher_next(p, &x, &y); train on x, y; }
 *   damo_prefetcher_free(p);                          joins the thread, even mid-epoch
 *
 * produce(ctx, b, x, y) runs on the background thread, for b = first, first+1, ... in order,
 * one call at a time; it fills x (x_bytes, 64-byte aligned) and y (y_bytes; NULL when
 * y_bytes is 0) and returns DAMO_OK or an error (its damo_last_error message is carried
 * over to the consumer's thread). It must be single-threaded (no OpenMP: the training step
 * owns the cores) and must not touch what the training step uses. The buffers next() returns
 * stay valid until the following next(), start() or free(). */
#ifndef DAMO_PREFETCH_H
#define DAMO_PREFETCH_H

#include "core/core.h"

typedef struct damo_prefetcher damo_prefetcher;
typedef damo_status (*damo_produce_fn)(void *ctx, int64_t batch_index, float *x, void *y);

/* NULL (and an error) on no memory or a NULL produce. */
damo_prefetcher *damo_prefetcher_new(size_t x_bytes, size_t y_bytes, damo_produce_fn produce, void *ctx);
/* Starts producing batches first .. first + n_batches - 1 (stopping any run in progress). */
damo_status damo_prefetcher_start(damo_prefetcher *p, int64_t first_batch, int64_t n_batches);
/* Blocks until the next batch is ready and points *x, *y at it. Returns the producer's
 * error for that batch (then the run is over), DAMO_ERR_STATE when not started or all
 * n_batches were taken. */
damo_status damo_prefetcher_next(damo_prefetcher *p, float **x, void **y);
/* Stops the run (waiting for a produce call in progress to return) and frees everything. */
void damo_prefetcher_free(damo_prefetcher *p);

#endif
