/* schedule.c - learning-rate schedules: constant, step decay and cosine decay, each with an
 * optional linear warm-up. damo_schedule_lr is a pure function of the step, so resuming a run
 * from a checkpoint only needs the step count. */
#include "optim/optim.h"

#include <math.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* gamma 0 would zero the rate for good, so, like the other 0 fields of a config, it means the
 * default, DAMO_DEFAULT_GAMMA in optim/optim.h (PyTorch's StepLR uses 0.1). */
float damo_schedule_lr(const damo_schedule *s, float base_lr, int64_t step, int64_t total_steps) {
  if (!s) return base_lr;
  if (step < 0) step = 0;
  double lr = base_lr;
  int64_t warmup = s->warmup_steps > 0 ? s->warmup_steps : 0;

  /* The warm-up ramps linearly to the base rate: the first step already moves (lr / warmup),
   * and step warmup-1 uses the full rate. */
  if (step < warmup) return (float)(lr * (double)(step + 1) / (double)warmup);

  switch (s->kind) {
  case DAMO_SCHED_CONSTANT: return base_lr;
  case DAMO_SCHED_STEP: {
    /* Decay counts absolute steps (as torch's StepLR counts epochs): lr * gamma^(step / size). */
    if (s->step_size <= 0) return base_lr;
    double gamma = s->gamma != 0.0f ? (double)s->gamma : DAMO_DEFAULT_GAMMA;
    return (float)(lr * pow(gamma, (double)(step / s->step_size)));
  }
  case DAMO_SCHED_COSINE: {
    int64_t T = s->total_steps > 0 ? s->total_steps : total_steps;
    double p;
    if (T <= 0)
      p = 0.0; /* no horizon known: hold the base rate rather than guess one */
    else if (T <= warmup)
      p = 1.0; /* the whole horizon was warm-up */
    else {
      p = (double)(step - warmup) / (double)(T - warmup);
      if (p > 1.0) p = 1.0;
      if (p < 0.0) p = 0.0;
    }
    double min_lr = s->min_lr;
    return (float)(min_lr + (lr - min_lr) * 0.5 * (1.0 + cos(M_PI * p)));
  }
  }
  return base_lr;
}
