/* kernels.h - what the kernels layer offers the layers above it (not public API): the SIMD
 * level the CPU kernels dispatch on, GEMM, multiversioned hot loops and the optimizer's
 * update loops. The CPU files' own declarations (micro-kernels, packers, the FMA probe) are
 * in kernels/cpu/cpu_kernels.h. */
#ifndef DAMO_KERNELS_H
#define DAMO_KERNELS_H

#include "core/core.h"

/* Compiles a hot loop for AVX-512, AVX2 and baseline x86-64 and picks one at load time
 * (GCC function multi-versioning): the library itself is built without -march flags.
 * DAMO_MULTIVERSION_FUSED also lets the clones that have FMA fuse a * b + c (ISO C mode keeps
 * them apart): for the loops that evaluate vmath.h's polynomials (exp, erf, tanh), which take
 * half the instructions and round once per step. Their results may then differ from the
 * baseline clone's in the last bits (never between runs on one machine), so loops whose
 * results are compared bit for bit with another path stay unfused. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define DAMO_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define DAMO_MULTIVERSION_FUSED \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), optimize("fp-contract=fast")))
#else
#define DAMO_MULTIVERSION
#define DAMO_MULTIVERSION_FUSED
#endif

/* CPU feature level the kernels dispatch on (set once, overridable by DAMO_SIMD). */
typedef enum damo_simd_level { DAMO_SIMD_SCALAR = 0, DAMO_SIMD_AVX2 = 1, DAMO_SIMD_AVX512 = 2 } damo_simd_level;
damo_simd_level damo_simd_level_get(void);
/* Forces a level for tests (clamped to what the CPU has); returns the level in force. */
damo_simd_level damo_simd_level_force(damo_simd_level level);

/* y = GELU(x) over [0, count): the exact form (x Phi(x), through erf) or, tanh_form, GPT-2's
 * tanh approximation; y == x works in place. One thread; callers split the work. */
void damo_gelu_forward_loop(int tanh_form, const float *x, float *y, int64_t count);

/* Row-major single-precision GEMM: C = alpha * op(A) op(B) + beta * C, with op(A) (M, K),
 * op(B) (K, N), C (M, N). trans_a: A is stored (K, M) with leading dimension lda; likewise B.
 * beta == 0 never reads C (NaN in C is overwritten). Threads over blocks with OpenMP. */
void damo_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
               const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* damo_gemm with the operands' precision given instead of read from damo_set_matmul_precision:
 * for a product whose precision belongs to the model (an int8 BERT's attention), not to the
 * process. */
void damo_gemm_at(damo_matmul_precision precision, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc);
/* op(B) packed once for several products that share it (a language model's tied head, read by
 * every chunk of rows): damo_gemm_pack_b packs it as damo_gemm would pack it per call for the
 * SIMD path and precision in force, into caller-owned storage (64-byte aligned, at least
 * damo_gemm_packed_b_bytes(K, N)); damo_gemm_packed then multiplies by it with damo_gemm's
 * bits. Where the form does not serve (too little storage, the path or precision changed since,
 * AMX, a narrow product) damo_gemm_packed multiplies the source B, which must outlive it. */
typedef struct damo_gemm_packed_b {
  int trans_b;
  int64_t K, N, ldb;
  const float *B;
  void *data; /* NULL: not packed */
  int bf16, native_bf16, nr, kc;
} damo_gemm_packed_b;
size_t damo_gemm_packed_b_bytes(int64_t K, int64_t N);
void damo_gemm_pack_b(damo_gemm_packed_b *pb, int trans_b, int64_t K, int64_t N, const float *B, int64_t ldb,
                      void *storage, size_t bytes);
/* C = alpha op(A) op(B) + beta C, op(B) (pb->K, pb->N) from pb. */
void damo_gemm_packed(int trans_a, int64_t M, float alpha, const float *A, int64_t lda, const damo_gemm_packed_b *pb,
                      float beta, float *C, int64_t ldc);
/* An op(A) read where it lies, never packed: element (i, p) at base[row_off[i] + k_off[p]]
 * (row_off NULL: i * row_stride; k_off NULL: p, each row contiguous). k_off has K entries. */
typedef struct damo_gemm_gather_a {
  const float *base;
  const int64_t *row_off;
  int64_t row_stride;
  const int64_t *k_off;
} damo_gemm_gather_a;
/* C = alpha op(A) op(B) + beta C with such an op(A): convolution patches straight from a
 * padded image (no im2col buffer), or their transpose. Same threading and K order as
 * damo_gemm. Returns 1 when done; 0 (C untouched) where no kernel exists for it (the scalar
 * path; bf16 operands; degenerate sizes): the caller then builds A and calls damo_gemm. */
/* Whether damo_gemm_gather has a kernel for this moment's SIMD path and precision. */
int damo_gemm_gather_available(void);
int damo_gemm_gather(const damo_gemm_gather_a *a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* The plain triple loop every fast path is tested against. */
void damo_gemm_reference(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                         int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* ---- int8 products of quantised layers (kernels/cpu/gemm_int8.c): symmetric int8 weights
 * per output column, affine uint8 activations per tensor, int32 sums, f32 out. */
#define DAMO_QMR 6 /* rows per micro-tile: activation buffers hold whole tiles (damo_qrows_padded) */
#define DAMO_QROWS_ALIGN 48 /* activation rows come in multiples of this: whole 6- and 12-row VNNI and 16-row AMX tiles */
/* How the packed weights are laid out, which decides the activations' form:
 *   S16:  int16 (q - z) activations, VPMADDWD on AVX2 (any x86-64 with AVX2; exact);
 *   VNNI: uint8 q activations, VPDPBUSD on AVX512-VNNI, the zero point taken off afterwards
 *         with the weights' column sums (four products per 32-bit lane: twice S16's rate). */
typedef enum damo_qlayout { DAMO_QLAYOUT_AUTO = 0, DAMO_QLAYOUT_S16, DAMO_QLAYOUT_VNNI } damo_qlayout;
typedef struct damo_qweight {
  damo_qlayout layout;
  int64_t K, N, Kp; /* Kp: K rounded up to the layout's group (2 or 4; VNNI where AMX-INT8 runs: 64, whole tiles) */
  int64_t panels;   /* 16-column panels of VNNI, 8-column panels of S16 (an even count) */
  void *packed;     /* see gemm_int8.c */
  float *scale;     /* N: w = scale[n] * q */
  int32_t *colsum;  /* VNNI: N column sums of q */
} damo_qweight;
/* Packs W (K x N int8, row-major) with its column scales; AUTO picks VNNI where the CPU has
 * it. NULL (error set) on failure. */
damo_qweight *damo_qweight_pack(const int8_t *w, int64_t K, int64_t N, const float *scale, damo_qlayout layout);
void damo_qweight_free(damo_qweight *q);
int damo_cpu_has_vnni(void);
int damo_cpu_has_amx_int8(void); /* TDPBUSD (the OS saving the tiles too) */
int64_t damo_qrows_padded(int64_t M);
/* Bytes of one activation row in w's form (Kp values of 2 or 1 bytes). */
size_t damo_qrow_bytes(const damo_qweight *w);
/* The scale and zero point of affine uint8 over [lo, hi] widened to hold 0. */
void damo_quant_params(float lo, float hi, float *scale, int *zero_point);
/* A calibration observer (quant_observer.c): the range of an int8 layer's input over the
 * calibration examples, then, for percentile and histogram, a histogram of
 * DAMO_OBSERVER_BINS bins over that range (a second pass, once damo_observer_count_bins has
 * allocated it; 0 when out of memory). Zero-initialised to begin; the range starts at 0,
 * which quantisation keeps exact anyway. damo_observer_range settles the range by method. */
enum { DAMO_OBSERVER_BINS = 2048 };
typedef struct damo_observer {
  float lo, hi;
  double *hist;
} damo_observer;
void damo_observer_see(damo_observer *o, const float *x, int64_t count);
int damo_observer_count_bins(damo_observer *o);
void damo_observer_free(damo_observer *o);
void damo_observer_range(const damo_observer *o, damo_calibration method, double percentile, float *lo, float *hi);
/* The methods' names as config files and `--method` spell them, by damo_calibration. */
extern const char *const damo_calibration_names[];
/* o's zeros replaced by the defaults (2048 examples, batches of 64, the 99.99th percentile)
 * and the whole checked; where names the caller in errors. */
damo_status damo_quantize_options_resolve(damo_quantize_options *o, const char *where);
/* Rows of x (ldx apart) quantised to uint8 q = clamp(round(x / scale) + z, 0, 255) in the
 * layout's form, rows of ldo values (S16: q - z as int16; VNNI: q as uint8); the columns from
 * K to ldo are 0, whose weights are 0. For a product: layout and ldo of w (damo_qrow_bytes). */
void damo_quantize_rows(const float *x, int64_t rows, int64_t K, int64_t ldx, float scale, int zero_point,
                        damo_qlayout layout, void *out, int64_t ldo);
/* [*lo, *hi]: the least and greatest of x[0, n), widened to hold 0; a NaN is passed over.
 * What a dynamic int8 input's scale and zero point are made from (damo_quant_params). */
void damo_range_f32(const float *x, int64_t n, float *lo, float *hi);
/* Rows of uint8 q (K apart: a chained layer's input, see damo_q8_out) in the layout's form,
 * as damo_quantize_rows would have left them. */
void damo_stage_u8_rows(const uint8_t *q, int64_t rows, int64_t K, int zero_point, damo_qlayout layout, void *out,
                        int64_t ldo);
/* Where an int8 product's epilogue puts row m, column n: v = x_scale * w->scale[n] * sum_k
 * (q[m][k] - z) w[k][n] + bias[n], then max(0, v) if relu, as f32 at c + m ldc + n, or
 * (out_inv_scale > 0: 1 / the next layer's input scale, taken once by the caller as
 * damo_quantize_rows takes it) requantised to that layer's uint8, clamp(round(v *
 * out_inv_scale) + out_zero_point, 0, 255) (half to even) at (uint8_t *)c + m ldc + n: an int8 layer feeding another (and the
 * max pooling between them, which commutes with a monotone quantisation) passes a quarter of
 * the bytes, and the next layer quantises nothing. The rounding is damo_quantize_rows', so
 * the chain's values equal those of the f32 output quantised by the next layer. */
typedef struct damo_q8_out {
  void *c;
  int64_t ldc;
  int relu;
  float out_inv_scale;
  int out_zero_point;
  int gelu; /* 1 GELU (exact), 2 its tanh form, applied after the bias to each tile while it is
               in cache, by damo_gelu_forward_loop (the gelu op's values); before a uint8
               output's requantisation (the tile goes through an f32 scratch first), so a
               chained GELU layer gives the uint8 its f32 output would have been quantised to */
  int64_t col_origin; /* the column stored at c (0; a scratch tile's first column inside) */
  const float *residual; /* an f32 output without GELU only: v += residual[m ldr + n] last */
  int64_t ldr;           /* (a residual connection's add, folded in: damo_qdense_absorb_add) */
  float *range; /* an f32 output only, or NULL: range[0], range[1] get the least and greatest
                   value stored, 0 included (NaN skipped), taken from each tile while it is in
                   cache, so a dynamic int8 reader need not read the output once more for it */
} damo_q8_out;
static inline damo_q8_out damo_q8_f32(float *c, int64_t ldc, int relu) {
  return (damo_q8_out){c, ldc, relu, 0.0f, 0, 0, 0, NULL, 0, NULL};
}
/* The product into *out; a: damo_qrows_padded(M) rows from damo_quantize_rows (those past M
 * quantised zeros). Exact in int32; threads over tiles. */
void damo_gemm_q8(int64_t M, const void *a, const damo_qweight *w, float x_scale, int zero_point, const float *bias,
                  const damo_q8_out *out);
/* The same product with uint8 activation rows read where they lie (VNNI without AMX): row
 * m's values k = 4q .. 4q + 3 at base[row_off[m] + k_off[q]], q < w->Kp / 4 (a convolution's
 * windows in a zero-point-padded image, channels a multiple of 4). Returns 0, out untouched,
 * where this path does not run (damo_gemm_q8_gather_available 0): the caller packs the rows. */
int damo_gemm_q8_gather_available(const damo_qweight *w);
int damo_gemm_q8_gather(int64_t M, const uint8_t *base, const int64_t *row_off, const int64_t *k_off,
                        const damo_qweight *w, float x_scale, int zero_point, const float *bias,
                        const damo_q8_out *out);

/* ---- optimizer updates: the CPU backend's flat-block kernels (kernels/cpu/optim_update.c).
 * The optimizer computes the step's scalars on the host (schedule, bias corrections, the
 * clip factor) and hands one of these to its backend. */

/* Elements per block: the unit of threading and of the norm's partial sums. */
#define DAMO_OPT_BLOCK ((int64_t)1 << 12)

typedef enum damo_opt_rule { DAMO_RULE_SGD = 0, DAMO_RULE_SGD_MOMENTUM, DAMO_RULE_ADAM, DAMO_RULE_ADAMW } damo_opt_rule;

typedef struct damo_opt_update {
  damo_opt_rule rule;
  int clip;                      /* scale the gradient by coef first (and store it back) */
  float *params, *grads, *m, *v; /* m: momentum or Adam's first moment; v: second moment */
  const uint8_t *mask;           /* NULL: weight decay everywhere, else where mask[i] != 0 */
  int64_t n;
  /* Per-step scalars, computed once in double (as PyTorch does in Python) and used as float. */
  float lr, wd, mu, coef;
  int first, nesterov;
  float b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, neg_step_size, decay;
} damo_opt_update;

/* One fused pass of the update over [0, n), threads over DAMO_OPT_BLOCK blocks. */
void damo_cpu_opt_update(const damo_opt_update *u);
/* Sum of squares of x[0, n) in double, summed per block into partial (one double per block)
 * and then in block order, so the result does not depend on the thread count. */
double damo_cpu_sum_squares(const float *x, int64_t n, double *partial);

#endif
