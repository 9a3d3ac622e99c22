/* data_parallel.h - the trainer's data-parallel engine (data_parallel.c), used by trainer.c,
 * loop.c and checkpoint.c only. */
#ifndef DAMO_TRAIN_DATA_PARALLEL_H
#define DAMO_TRAIN_DATA_PARALLEL_H

#include "core/core.h"

typedef struct dp_state dp_state;

/* Sets up data parallelism over a's flat store: broadcasts rank 0's params and state,
 * shards the optimizer (zero) and installs the gradient-ready callback. grad_sum is the
 * trainer's micro-batch accumulator (NULL when grad_accum is 1). */
damo_status dp_new(damo_dist *d, const damo_data_parallel_options *o, const damo_train_adapter *a,
                   damo_optimizer *opt, float *grad_sum, int64_t grad_accum, dp_state **out);
void dp_free(dp_state *p);
damo_dist *dp_dist(const dp_state *p);

/* The step's loss over every rank for one micro-batch: *global is the mean over every rank's
 * items, *scale this rank's share of them (weight / total). */
damo_status dp_reduce_loss(dp_state *p, double loss, double weight, double *global, float *scale);
/* Before the backward of the step's last micro-batch: gradients that become final now are
 * scaled (and averaged with the accumulated ones) and sent in buckets. */
void dp_arm(dp_state *p, float scale);
/* After it (or instead of it, on a rank without items): sends what is left, waits; the
 * reduced gradient is then in *grads (*n floats: the whole store, or the ZeRO shard). */
damo_status dp_finish(dp_state *p, float **grads, int64_t *n);
/* The optimizer step on the reduced gradient (ZeRO: the shard, then all-gathers the
 * parameters); then rank 0's state to everyone. */
damo_status dp_optimizer_step(dp_state *p, damo_optimizer *opt, int64_t total_steps, float *norm);
/* Before a checkpoint, on every rank: a ZeRO run gathers the moments (a collective). */
damo_status dp_gather_moments(dp_state *p, damo_optimizer *opt);
/* The optimizer's state for a checkpoint: the gathered moments (ZeRO) or views. */
damo_status dp_optimizer_state(dp_state *p, damo_optimizer *opt, damo_tensor_dict *d);
void dp_release_moments(dp_state *p);
void dp_stats(const dp_state *p, damo_data_parallel_stats *out);

#endif
