/* param_store.h - the one parameter store of every model kind: every trained tensor in one
 * flat block and its gradient at the same offset of a second block, each tensor 64-byte
 * aligned (zero padding between tensors: zero gradients, no decay, so it stays zero), in
 * the order and under the names the model's files use. The flat blocks are what the
 * optimizer steps, the trainer averages and hooks, and checkpoints copy; the per-tensor
 * views are what graphs bind and files name. Sequential models keep their trained weights
 * in one and BatchNorm's running statistics in another; GPT-2 and BERT theirs under
 * HuggingFace's names (models/param_store.h adds their directory reading and writing). */
#ifndef DAMO_TRAIN_PARAM_STORE_H
#define DAMO_TRAIN_PARAM_STORE_H

#include "core/core.h"

typedef struct param_store {
  int n_tensors;
  char **names;          /* the model's names (no task prefix such as "transformer." or "bert.") */
  damo_tensor **values;  /* views into param_block */
  damo_tensor **grads;   /* views into grad_block, same layout */
  float *param_block, *grad_block;
  int64_t n_params;        /* parameter count */
  int64_t n_params_padded; /* floats in each block */
  /* param_store_to_backend: the device blocks the views point into while the store lives on
   * a device backend (NULL on the host); the host blocks above keep the last copy back. */
  const damo_backend *backend;
  float *device_params, *device_grads;
  /* param_store_set_trainable: per tensor 1 when it is not trained (NULL: every tensor is);
   * the trained tensors' (offset, count) pairs in the blocks, n_trained_ranges of them. */
  uint8_t *frozen;
  int64_t *trained_ranges;
  int n_trained_ranges;
  int64_t n_trainable; /* parameters of the trained tensors */
} param_store;

/* Name and shape (ndim 1 to DAMO_MAX_DIMS) of tensor i of a model with this config. */
typedef void (*param_spec_fn)(const void *config, int i, char *name, size_t cap, int *ndim, int64_t *shape);

/* Lays out n zero-filled tensors; what names the model in messages. */
damo_status param_store_alloc(param_store *s, int n, param_spec_fn spec, const void *config, const char *what);
void param_store_free(param_store *s);
/* Index of a tensor by name, -1 if none. */
int param_store_index(const param_store *s, const char *name);
/* Freezes (trainable 0) or unfreezes the tensors whose names match any of the comma-separated
 * shell patterns (fnmatch: "encoder.layer.3.*", "*.bias", "*"), as Keras' layer.trainable and
 * PyTorch's requires_grad_(False): a frozen tensor's gradient view is not bound into graphs
 * (backward makes none and stops below the lowest trained tensor), its gradient is zero, it
 * gets no weight decay and no DP-SGD noise, so every optimizer leaves it as it is. Graphs,
 * optimizers and trainers made before keep what they bound. A pattern matching no tensor is
 * an error naming it (and nothing changes). */
damo_status param_store_set_trainable(param_store *s, const char *patterns, int trainable, const char *what);
static inline int param_store_trained(const param_store *s, int i) { return !s->frozen || !s->frozen[i]; }
/* Tensor i's gradient view for a graph: NULL when it is frozen. */
static inline damo_tensor *param_store_grad_view(const param_store *s, int i) {
  return param_store_trained(s, i) ? s->grads[i] : NULL;
}
/* DAMO_OK when at least one tensor is trained, else an error for `what`. */
damo_status param_store_check_trainable(const param_store *s, const char *what);
/* The weight-decay mask of a transformer's AdamW: 1 for every element of a trained 2-D tensor
 * (embeddings and matrices), 0 for biases, LayerNorm, frozen tensors and the padding between
 * tensors, as nanoGPT (decay iff dim >= 2) and HuggingFace's Trainer do. mask holds
 * n_params_padded. */
void param_store_decay_mask(const param_store *s, uint8_t *mask);
/* Moves the values to backend b's memory (b a device backend: the views then point there,
 * tagged with its device, and the gradients start at zero) or back to the host (b the CPU:
 * the values are copied back and the device blocks freed). */
damo_status param_store_to_backend(param_store *s, const damo_backend *b, const char *what);
/* Where the blocks the optimizer and trainer use live now: the device's, else the host's. */
float *param_store_params(const param_store *s);
float *param_store_grads(const param_store *s);
/* An optimizer over the whole padded block with that decay mask. */
damo_status param_store_optimizer(const param_store *s, const damo_optimizer_config *c, damo_optimizer **out);

#endif
