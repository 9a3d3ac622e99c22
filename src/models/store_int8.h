/* store_int8.h - int8 for a named-tensor model (BERT, GPT-2): tensors of its parameter store
 * kept as symmetric int8 with a scale per output feature (or per row of a table), the
 * products packed for kernels/cpu/gemm_int8.c, and inference graphs whose dense nodes over
 * such a tensor run as qdense: inputs quantised per batch (dynamic), or with a scale and zero
 * point calibrated per product (static, BERT: bert_int8.c), in which case a product whose
 * output only feeds another (the feed-forward's, through its GELU) hands it uint8. */
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
  float *x_scale;        /* static: per tensor, its product's calibrated input scale (0: none); */
  int *x_zero;           /* and zero point; both NULL: every product dynamic */
  damo_calibration method; /* static: how the ranges were chosen, on how many examples */
  int64_t calibration_examples;
  damo_matmul_precision attention; /* of the attention products in inference graphs (BERT) */
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
/* Tensor i's product takes its input as affine uint8 with this scale (> 0, finite) and zero
 * point (0..255): static from then on (where names the caller or file in errors). */
damo_status store_int8_set_input(store_int8 *s, int n_tensors, int i, float scale, int zero_point, const char *name,
                                 const char *where);
int store_int8_is_static(const store_int8 *s);
/* Rewrites g's dense nodes whose kernel is a packed tensor into qdense, in place (linear or
 * ReLU; others stay f32), static where the tensor has its input's quantisation; folds each
 * GELU after one into its epilogue; for a graph that never trains (inference_only: its
 * forwards never apply dropout) drops the dropout nodes, folds residual adds into the
 * products before them and gives attention nodes the store's attention precision (BERT's
 * bf16); for a static store, chains the products (outputs in keep stay f32).
 * *rewritten counts the products. */
damo_status store_int8_rewrite(const store_int8 *s, const param_store *p, damo_graph *g, int n_keep,
                               damo_node *const *keep, int inference_only, const char *what, int *rewritten);
/* A param_store_writer's work for tensor i: NAME as I8 (its shape) and NAME.scale F32, and for
 * a static product BASE.input_scale F32 (1,) and BASE.input_zero_point I32 (1,), BASE being
 * NAME without ".weight" (a Sequential layer's names). */
damo_status store_int8_write(const store_int8 *s, const param_store *p, int i, int8_form f, const char *name,
                             damo_tensor_dict *d, int *written);
/* Static int8 calibrated on `rows` examples in batches of `batch`: bind(ctx, first, n, &g)
 * stages examples [first, first + n) into an f32 inference graph g and hands it over; each
 * pass (one, or two for percentile and histogram) runs g node by node, every product's input
 * (a dense or matmul node over a tensor form() makes ROWS or COLS) seen by its observer; then
 * the ranges are settled by o->method, the weights quantised as store_int8_quantize_all does,
 * and each product's input quantisation set. On failure the store is left empty. */
typedef damo_status (*store_int8_bind)(void *ctx, int64_t first, int64_t n, damo_graph **g);
damo_status store_int8_calibrate(store_int8 *s, const param_store *p, int8_form (*form)(const void *model, int i),
                                 const void *model, int64_t rows, int64_t batch, store_int8_bind bind, void *ctx,
                                 const damo_quantize_options *o, const char *where);
/* Reading a static model: the length of name's ".input_scale" or ".input_zero_point" ending
 * (0: neither); tensor i's product input from BASE.input_scale and BASE.input_zero_point of d
 * (stored: the I8 tensor's name in the file; path for errors); and the check that such a
 * tensor belongs to an I8 tensor of a static model. */
int store_int8_input_suffix(const char *name);
damo_status store_int8_take_input(store_int8 *s, int n_tensors, int i, const damo_tensor_dict *d, const char *stored,
                                  const char *path);
damo_status store_int8_check_input(const store_int8 *s, const damo_tensor_dict *d, const char *stored,
                                   const char *path);
/* BASE of store_int8_write into base (false when name does not end in ".weight" or base is
 * too short). */
int store_int8_input_base(const char *name, char *base, size_t size);
/* config.json's "quantization": {"format": "int8", "activations": "dynamic"}, or "static"
 * with the calibration's "method" and "calibration_examples"; store_int8_read_json reads
 * either back (and closes the object), store_int8_begin_as begins a store of that kind. */
typedef struct int8_config {
  int is_static;
  damo_calibration method;
  int64_t calibration_examples;
  damo_matmul_precision attention; /* "attention" ("f32" where absent: written before it was) */
} int8_config;
void store_int8_json(const store_int8 *s, cJSON *config);
damo_status store_int8_read_json(damo_config_obj *quantization, int8_config *out);
damo_status store_int8_begin_as(store_int8 *s, int n_tensors, const int8_config *c);

#endif
