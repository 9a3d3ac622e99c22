/* compress.h - model compression above the trainer: int8 post-training quantisation
 * (quantize.c), magnitude pruning with fine-tuning (prune.c; distillation is fit's, in
 * train/distill.c, since it changes the loss). Kernels live in kernels/, the int8 ops in ops/qlinear.c. */
#ifndef DAMO_COMPRESS_H
#define DAMO_COMPRESS_H

#include "nn/layers.h"
#include "ops/ops.h"
#include "train/model.h"

#endif
