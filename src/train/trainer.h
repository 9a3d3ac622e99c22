/* trainer.h - the trainer's insides, shared by the step (trainer.c) and the loop (loop.c). */
#ifndef DAMO_TRAIN_TRAINER_H
#define DAMO_TRAIN_TRAINER_H

#include "internal.h"

struct damo_trainer {
  damo_train_adapter a;
  damo_optimizer *opt; /* borrowed */
  int64_t grad_accum, total_steps, steps_done;
  float *grad_sum; /* the micro-batch sum (grad_accum > 1): backward overwrites the grads */
  damo_grad_hook hook;
  void *hook_ctx;
  damo_divergence diverge;
};

#endif
