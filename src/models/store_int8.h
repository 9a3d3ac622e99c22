/* store_int8.h - dynamic int8 for a named-tensor model (BERT, GPT-2): tensors of its
 * parameter store kept as symmetric int8 with a scale per output feature (or per row of a
 * table), the products packed for kernels/cpu/gemm_int8.c, and inference graphs whose dense
 * nodes over such a tensor run as dynamic qdense (inputs quantised per batch). */
#ifndef DAMO_MODELS_STORE_INT8_H
#define DAMO_MODELS_STORE_INT8_H

#include "models/param_store.h"
#include "ops/ops.h"

/* How a tensor (2-D) is made int8, by the model's rule:
 *   INT8_OUT_ROWS  (out, in), nn.Linear's layout: a scale per row, packed transposed (K x N);
 *                  a tied embedding that is also the output product (GPT-2's wte) too;
 *   INT8_OUT_COLS  (in, out), GPT-2's Conv1D layout: a scale per column, packed as is;
 *   INT8_TABLE     an embedding table looked up only: a scale per row, weight-only. */
typedef enum int8_form { INT8_NONE = 0, INT8_OUT_ROWS, INT8_OUT_COLS, INT8_TABLE } int8_form;

typedef struct store_int8 {
  int8_t **q;            /* per tensor, NULL where it stays f32; the arrays NULL: an f32 model */
  float **scale;
  damo_qweight **packed; /* NULL for a table */
  int defer_f32;         /* take leaves the store's f32 values to store_int8_materialize ... */
  int pending;           /* ... which has not run since (their pages untouched, so not resident) */
} store_int8;

damo_status store_int8_begin(store_int8 *s, int n_tensors);
void store_int8_free(store_int8 *s, int n_tensors);
/* The scales tensor i of shape t takes in form f: its rows, or its columns for INT8_OUT_COLS. */
int64_t store_int8_scale_count(const damo_tensor *t, int8_form f);
/* Tensor i of p from int8 values q (t's shape) and scales: checked (positive finite scales,
 * no -128; where names the caller or file), packed, and p's f32 values set to scale * q
 * (with defer_f32: later, by store_int8_materialize). */
damo_status store_int8_take(store_int8 *s, const param_store *p, int i, int8_form f, const int8_t *q,
                            const float *scale, const char *where);
/* Writes scale * q into the store's f32 values of every int8 tensor a deferred take left
 * (cannot fail). */
void store_int8_materialize(store_int8 *s, const param_store *p, int8_form (*form)(const void *model, int i),
                            const void *model);
/* Tensor i rounded from its f32 values: scale = max |w| / 127 over each output feature. */
damo_status store_int8_quantize(store_int8 *s, const param_store *p, int i, int8_form f, const char *where);
/* Every tensor of p that form(model, i) names, rounded as above into fresh tables; on failure
 * none is kept. */
damo_status store_int8_quantize_all(store_int8 *s, const param_store *p, int8_form (*form)(const void *model, int i),
                                    const void *model, const char *where);
/* Rewrites g's dense nodes whose kernel is a packed tensor into dynamic qdense, in place
 * (linear or ReLU; others stay f32); *rewritten counts them. */
damo_status store_int8_rewrite(const store_int8 *s, const param_store *p, damo_graph *g, const char *what,
                               int *rewritten);
/* A param_store_writer's work for tensor i: NAME as I8 (its shape) and NAME.scale F32. */
damo_status store_int8_write(const store_int8 *s, const param_store *p, int i, int8_form f, const char *name,
                             damo_tensor_dict *d, int *written);
/* config.json's "quantization": {"format": "int8", "activations": "dynamic"}. */
void store_int8_json(cJSON *config);

#endif
