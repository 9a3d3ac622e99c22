/* gemm.c - single-precision matrix multiply: the blocked, packed, threaded driver behind
 * damo_gemm, the portable scalar micro-kernel and packer, and the reference triple loop.
 *
 * The driver follows the GotoBLAS/BLIS layering. For each NC-wide column block of C and each
 * KC-deep slice of K, a KC x NC block of op(B) is packed into NR-column micro-panels; for each
 * MC-row block, an MC x KC block of op(A) is packed into MR-row micro-panels (it stays in L2);
 * then the micro-kernel sweeps every MR x NR tile of that C block, one A micro-panel against
 * one B micro-panel per tile, B panel outermost so it is reused from cache across the row
 * block. Packing makes both operands contiguous whatever the transposes and leading
 * dimensions, and pads edges with zeros so the kernel always runs full-width; only its final
 * load and store of C are masked.
 *
 * Threads split C into a grid of blocks (whole tiles) and each runs the blocked product on its
 * block with its own packing buffer: no barriers, no shared writes. That packs some of A or B
 * twice, which costs less than synchronising did in measurements, and keeps a thread that
 * the OS preempts from stalling the others mid-product. Every element of C is written by one
 * thread and its sum over K is taken in the same order (KC slices in turn, each inside one
 * kernel call) whatever the split, so results do not depend on the thread count. */
#include "kernels/cpu/cpu_kernels.h"

#include <omp.h>
#include <stdatomic.h>
#include <threads.h>

/* Everything the driver needs to know about one SIMD level. */
typedef struct gemm_config {
  int mr, nr;     /* micro-kernel tile */
  int kc, mc, nc; /* block sizes: MC x KC A block ~ L2, KC x NC B block ~ L3 */
  damo_gemm_microkernel_fn kernel;
  damo_gemm_pack_fn pack;
} gemm_config;

/* Block sizes were tuned on a Zen 5 core (48 KiB L1D, 1 MiB L2) and suit other recent cores
 * of similar cache sizes; mc and nc are multiples of mr and nr. A deep KC matters most: each
 * KC slice is one more pass of C through memory, and with both cores busy memory traffic, not
 * the FMAs, ran out first (KC 1024 beat 256 by 4-8% on two threads). The kernels stream a
 * B micro-panel too big for L1 from L2 at full speed. Per thread the buffer holds an A block
 * and a B block: 4.5 MiB at most for AVX-512, kept for reuse (see damo_gemm_pack_buffer). */
static const gemm_config config_avx512 = {.mr = DAMO_GEMM_AVX512_MR,
                                          .nr = DAMO_GEMM_AVX512_NR,
                                          .kc = 1024,
                                          .mc = 112,
                                          .nc = 1024,
                                          .kernel = damo_gemm_microkernel_avx512,
                                          .pack = damo_gemm_pack_avx512};
static const gemm_config config_avx2 = {.mr = DAMO_GEMM_AVX2_MR,
                                        .nr = DAMO_GEMM_AVX2_NR,
                                        .kc = 512,
                                        .mc = 96,
                                        .nc = 1024,
                                        .kernel = damo_gemm_microkernel_avx2,
                                        .pack = damo_gemm_pack_avx2};
static const gemm_config config_scalar = {.mr = DAMO_GEMM_SCALAR_MR,
                                          .nr = DAMO_GEMM_SCALAR_NR,
                                          .kc = 256,
                                          .mc = 128,
                                          .nc = 1024,
                                          .kernel = damo_gemm_microkernel_scalar,
                                          .pack = damo_gemm_pack_portable};

static const gemm_config *config_for_level(damo_simd_level level) {
  if (level == DAMO_SIMD_AVX512) return &config_avx512;
  if (level == DAMO_SIMD_AVX2) return &config_avx2;
  return &config_scalar;
}

/* Below this many multiply-adds a product is done by the calling thread alone: waking the
 * other threads would cost more than they save (measured crossover on bare metal: about
 * 64 x 64 x 128). Above it damo_gemm_threads weighs the product's length against the
 * measured cost of starting a region. */
#define GEMM_THREADING_MIN_FMAS (512 * 1024)

static int64_t round_up(int64_t x, int64_t multiple) { return (x + multiple - 1) / multiple * multiple; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ------------------------------------------------------------------ reference */

void damo_gemm_reference(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                         int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) {
      /* Double accumulation makes this the more exact side of every comparison. */
      double sum = 0.0;
      for (int64_t p = 0; p < K; p++) {
        float a = trans_a ? A[p * lda + i] : A[i * lda + p];
        float b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
        sum += (double)a * (double)b;
      }
      float *out = &C[i * ldc + j];
      double prior = beta == 0.0f ? 0.0 : (double)beta * (double)*out;
      *out = (float)((double)alpha * sum + prior);
    }
  }
}

/* ------------------------------------------------------------------ scalar micro-kernel */

void damo_gemm_microkernel_scalar(int64_t k, const float *packed_a, const float *packed_b, float *c, int64_t ldc, int m,
                                  int n, float alpha, float beta) {
  enum { mr = DAMO_GEMM_SCALAR_MR, nr = DAMO_GEMM_SCALAR_NR };
  /* Rows of nr independent sums: a compiler targeting any SIMD width vectorises the j loop. */
  float acc[mr][nr] = {{0}};
  for (int64_t p = 0; p < k; p++) {
    for (int i = 0; i < mr; i++) {
      float a = packed_a[i];
      for (int j = 0; j < nr; j++) acc[i][j] += a * packed_b[j];
    }
    packed_a += mr;
    packed_b += nr;
  }
  for (int i = 0; i < m; i++) {
    float *out = c + i * ldc;
    for (int j = 0; j < n; j++) {
      float scaled = acc[i][j] * alpha;
      out[j] = beta == 0.0f ? scaled : out[j] * beta + scaled;
    }
  }
}

/* ------------------------------------------------------------------ packing */

/* See damo_gemm_pack_fn. Plain C for the levels without a packer of their own. */
void damo_gemm_pack_portable(int x_major, const float *src, int64_t ld, int64_t x0, int64_t k0, int64_t x_count,
                             int64_t depth, int width, float *dst) {
  const int64_t panels = (x_count + width - 1) / width;
  if (!x_major) {
    /* Each group is a run of one source row; row by row over all panels reads sequentially. */
    for (int64_t p = 0; p < depth; p++) {
      const float *row = src + (k0 + p) * ld + x0;
      for (int64_t q = 0; q < panels; q++) {
        float *group = dst + (q * depth + p) * width;
        const int64_t valid = min64(width, x_count - q * width);
        int64_t x = 0;
        for (; x < valid; x++) group[x] = row[q * width + x];
        for (; x < width; x++) group[x] = 0.0f;
      }
    }
    return;
  }
  /* Each source row becomes one lane of every group: read it once, scatter it down. */
  for (int64_t q = 0; q < panels; q++) {
    float *panel = dst + q * depth * width;
    for (int x = 0; x < width; x++) {
      const int64_t source_x = q * width + x;
      if (source_x < x_count) {
        const float *row = src + (x0 + source_x) * ld + k0;
        for (int64_t p = 0; p < depth; p++) panel[p * width + x] = row[p];
      } else {
        for (int64_t p = 0; p < depth; p++) panel[p * width + x] = 0.0f;
      }
    }
  }
}

/* ------------------------------------------------------------------ packing buffers */

/* Each calling thread keeps one buffer for the packed blocks and grows it on demand, so
 * repeated products (a training loop) do not allocate. A thread's buffer is freed when the
 * thread exits; the main thread's lives until the process ends. */
typedef struct pack_buffer {
  float *data;
  size_t floats;
} pack_buffer;

static tss_t pack_buffer_key;
static int pack_buffer_key_ok;
static once_flag pack_buffer_once = ONCE_FLAG_INIT;

static void pack_buffer_destroy(void *p) {
  pack_buffer *buffer = p;
  if (buffer) damo_free(buffer->data);
  free(buffer);
}

static void pack_buffer_key_create(void) {
  pack_buffer_key_ok = tss_create(&pack_buffer_key, pack_buffer_destroy) == thrd_success;
}

/* A 64-byte aligned buffer of at least `floats` floats, or NULL when memory or a
 * thread-specific slot is unavailable (the caller then allocates for the one call). */
float *damo_gemm_pack_buffer(size_t floats) {
  call_once(&pack_buffer_once, pack_buffer_key_create);
  if (!pack_buffer_key_ok) return NULL;
  pack_buffer *buffer = tss_get(pack_buffer_key);
  if (!buffer) {
    buffer = calloc(1, sizeof *buffer);
    if (!buffer) return NULL;
    if (tss_set(pack_buffer_key, buffer) != thrd_success) {
      free(buffer);
      return NULL;
    }
  }
  if (buffer->floats < floats) {
    damo_free(buffer->data);
    buffer->data = damo_alloc(floats * sizeof(float));
    buffer->floats = buffer->data ? floats : 0;
  }
  return buffer->data;
}

/* ------------------------------------------------------------------ driver */

/* C = beta * C for the degenerate products (K == 0 or alpha == 0). */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    float *row = C + i * ldc;
    if (beta == 0.0f)
      memset(row, 0, (size_t)N * sizeof(float));
    else if (beta != 1.0f)
      for (int64_t j = 0; j < N; j++) row[j] *= beta;
  }
}

typedef struct gemm_problem {
  int trans_a, trans_b;
  int bf16;        /* round both packed operands to bfloat16 (damo_set_matmul_precision) */
  int native_bf16; /* and multiply them with VDPBF16PS (gemm_bf16.c) */
  int64_t M, N, K;
  float alpha, beta;
  const float *A, *B;
  float *C;
  int64_t lda, ldb, ldc;
  const damo_gemm_packed_b *packed; /* op(B) packed beforehand (NULL: packed here, block by block) */
  int64_t packed_col0;              /* the column of op(B) this problem's column 0 is (a multiple of NR) */
} gemm_problem;

/* Floats of one packed MC x KC block of op(A), rounded so a block that follows stays 64-byte
 * aligned; and of one packed KC x NC block of op(B). The native bf16 path packs bf16 pairs
 * instead (two bf16 a pair: one float's bytes). */
static int64_t packed_block_floats(const gemm_problem *pr, int64_t block, int width, int64_t kc, int64_t X) {
  const int64_t depth = min64(kc, pr->K);
  return round_up(round_up(min64(block, X), width) * (pr->native_bf16 ? (depth + 1) / 2 : depth), 16);
}
static int64_t packed_a_floats(const gemm_config *cfg, const gemm_problem *pr) {
  return packed_block_floats(pr, cfg->mc, cfg->mr, cfg->kc, pr->M);
}
static int64_t packed_b_floats(const gemm_config *cfg, const gemm_problem *pr) {
  return packed_block_floats(pr, cfg->nc, cfg->nr, cfg->kc, pr->N);
}

/* ------------------------------------------------------------------ bf16 operands */

/* DAMO_MATMUL_F32 or DAMO_MATMUL_BF16, read once per product. */
static atomic_int matmul_precision = DAMO_MATMUL_F32;

damo_status damo_set_matmul_precision(damo_matmul_precision precision) {
  if (precision != DAMO_MATMUL_F32 && precision != DAMO_MATMUL_BF16)
    return damo_error(DAMO_ERR_INVALID_ARG, "set_matmul_precision: %d is neither DAMO_MATMUL_F32 nor DAMO_MATMUL_BF16",
                      (int)precision);
  atomic_store(&matmul_precision, (int)precision);
  return DAMO_OK;
}

damo_matmul_precision damo_get_matmul_precision(void) {
  return (damo_matmul_precision)atomic_load(&matmul_precision);
}

/* Rounds a packed block in place to the nearest bfloat16 (ties to even, NaN kept quiet: the
 * bits of damo_bf16_from_f32 widened back). The micro-kernels then multiply bf16 values and
 * accumulate in f32, which is what VDPBF16PS and AMX compute; a packed block is rounded once
 * and read by every tile of its row or column block, so this costs about one more pass of
 * packing. */
DAMO_MULTIVERSION static void round_to_bf16(float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, &x[i], sizeof bits);
    const uint32_t nan = (bits & 0x7fffffffu) > 0x7f800000u;
    bits = nan ? bits | 0x00400000u : bits + 0x7fffu + ((bits >> 16) & 1u);
    bits &= 0xffff0000u;
    memcpy(&x[i], &bits, sizeof bits);
  }
}

/* Packs op(B)'s columns [j0, j0 + count), K slice [pc, pc + kc), as the kernel reads them. */
static void pack_b(const gemm_problem *pr, const gemm_config *cfg, int64_t j0, int64_t count, int64_t pc, int64_t kc,
                   float *dst) {
  if (pr->native_bf16) {
    damo_gemm_pack_bf16(pr->trans_b, pr->B, pr->ldb, j0, pc, count, kc, cfg->nr, (uint16_t *)dst);
    return;
  }
  cfg->pack(pr->trans_b, pr->B, pr->ldb, j0, pc, count, kc, cfg->nr, dst);
  if (pr->bf16) round_to_bf16(dst, round_up(count, cfg->nr) * kc);
}

/* ------------------------------------------------------------------ op(B) packed once */

/* A damo_gemm_packed_b holds op(B) as pack_b writes it, KC slice after KC slice, each slice's
 * NR-column panels across all N columns: the block of columns [j, j + nc) (j a multiple of
 * NR) of the slice at pc is then one contiguous run, where the driver would have packed it.
 * Floats a column takes in a slice `depth` deep (the native bf16 form packs pairs). */
static int64_t packed_column_floats(int native_bf16, int64_t depth) { return native_bf16 ? (depth + 1) / 2 : depth; }

static const float *packed_b_block(const damo_gemm_packed_b *pb, int64_t pc, int64_t col) {
  const int64_t kc = pb->kc, depth = min64(kc, pb->K - pc);
  const int64_t slice = round_up(pb->N, pb->nr) * packed_column_floats(pb->native_bf16, kc);
  return (const float *)pb->data + pc / kc * slice + col / pb->nr * pb->nr * packed_column_floats(pb->native_bf16, depth);
}

/* Rows [ic, ic + mc) of C times the packed block of op(B) at columns [jc, jc + nc), K slice
 * [pc, pc + kc): packs that row block of op(A), then runs the micro-kernel over its tiles. */
static void multiply_row_block(const gemm_problem *pr, const gemm_config *cfg, float *packed_a, const float *packed_b,
                               int64_t ic, int64_t mc, int64_t jc, int64_t nc, int64_t pc, int64_t kc) {
  const int mr = cfg->mr, nr = cfg->nr;
  /* The first K slice applies the caller's beta; later slices accumulate onto it. */
  const float beta = pc == 0 ? pr->beta : 1.0f;
  const int64_t a_panels = (mc + mr - 1) / mr, b_panels = (nc + nr - 1) / nr;
  if (pr->native_bf16) {
    const int64_t pairs = (kc + 1) / 2;
    const uint16_t *a = (uint16_t *)packed_a, *b = (const uint16_t *)packed_b;
    damo_gemm_pack_bf16(!pr->trans_a, pr->A, pr->lda, ic, pc, mc, kc, mr, (uint16_t *)packed_a);
    for (int64_t jp = 0; jp < b_panels; jp++) {
      const int64_t col = jc + jp * nr;
      for (int64_t ip = 0; ip < a_panels; ip++) {
        const int64_t row = ic + ip * mr;
        damo_gemm_microkernel_avx512_bf16(pairs, a + ip * mr * 2 * pairs, b + jp * nr * 2 * pairs,
                                          pr->C + row * pr->ldc + col, pr->ldc, (int)min64(mr, pr->M - row),
                                          (int)min64(nr, pr->N - col), pr->alpha, beta);
      }
    }
    return;
  }
  cfg->pack(!pr->trans_a, pr->A, pr->lda, ic, pc, mc, kc, mr, packed_a);
  if (pr->bf16) round_to_bf16(packed_a, round_up(mc, mr) * kc);
  /* B micro-panel outermost: it stays in cache while the A block streams from L2. */
  for (int64_t jp = 0; jp < b_panels; jp++) {
    const int64_t col = jc + jp * nr;
    const int n = (int)min64(nr, pr->N - col);
    for (int64_t ip = 0; ip < a_panels; ip++) {
      const int64_t row = ic + ip * mr;
      cfg->kernel(kc, packed_a + ip * mr * kc, packed_b + jp * nr * kc, pr->C + row * pr->ldc + col, pr->ldc,
                  (int)min64(mr, pr->M - row), n, pr->alpha, beta);
    }
  }
}

/* The whole product on one thread; buffer holds a packed A block then a packed B block. */
static void gemm_blocked(const gemm_problem *pr, const gemm_config *cfg, float *buffer) {
  float *packed_a = buffer, *packed_b = buffer + packed_a_floats(cfg, pr);
  for (int64_t jc = 0; jc < pr->N; jc += cfg->nc) {
    const int64_t nc = min64(cfg->nc, pr->N - jc);
    for (int64_t pc = 0; pc < pr->K; pc += cfg->kc) {
      const int64_t kc = min64(cfg->kc, pr->K - pc);
      const float *block_b = packed_b;
      if (pr->packed)
        block_b = packed_b_block(pr->packed, pc, pr->packed_col0 + jc);
      else
        pack_b(pr, cfg, jc, nc, pc, kc, packed_b);
      for (int64_t ic = 0; ic < pr->M; ic += cfg->mc)
        multiply_row_block(pr, cfg, packed_a, block_b, ic, min64(cfg->mc, pr->M - ic), jc, nc, pc, kc);
    }
  }
}

static void gemm_reference_problem(const gemm_problem *pr) {
  damo_gemm_reference(pr->trans_a, pr->trans_b, pr->M, pr->N, pr->K, pr->alpha, pr->A, pr->lda, pr->B, pr->ldb,
                      pr->beta, pr->C, pr->ldc);
}

/* gemm_blocked with this thread's cached buffer, or a buffer of its own for this call, or
 * (no memory at all) the reference loop, which needs none. */
static void gemm_with_buffer(const gemm_problem *pr, const gemm_config *cfg) {
  const size_t floats = (size_t)(packed_a_floats(cfg, pr) + (pr->packed ? 0 : packed_b_floats(cfg, pr)));
  float *buffer = damo_gemm_pack_buffer(floats);
  if (buffer) {
    gemm_blocked(pr, cfg, buffer);
    return;
  }
  float *owned = damo_alloc(floats * sizeof(float));
  if (owned) {
    gemm_blocked(pr, cfg, owned);
    damo_free(owned);
    return;
  }
  gemm_reference_problem(pr);
}

/* Narrow products on AVX2 and AVX-512 (op(B) at most NARROW_MAX_N columns: a convolution's filters, a
 * classifier's classes, a small MLP layer) read op(A) in place (gemm_gather.c): packing it
 * was a pass as long as the multiply when there are so few columns to reuse it for.
 * Returns 0 when that path does not apply. */
#define NARROW_MAX_N 128

static int gemm_narrow(const gemm_problem *pr, const gemm_config *cfg) {
  if ((cfg != &config_avx2 && cfg != &config_avx512) || pr->bf16 || pr->N > NARROW_MAX_N) return 0;
  /* AVX-512 with a few rows and more than one panel of columns: packing A costs little and
   * its panels are reused across the columns (64 x 128 x 256: 163 packed, 149 in place). */
  if (cfg == &config_avx512 && pr->N > DAMO_GEMM_AVX512_NR && pr->M < 256) return 0;
  if (!pr->trans_a) {
    const damo_gemm_gather_a a = {pr->A, NULL, pr->lda, NULL};
    return damo_gemm_gather(&a, pr->trans_b, pr->M, pr->N, pr->K, pr->alpha, pr->B, pr->ldb, pr->beta, pr->C,
                            pr->ldc);
  }
  int64_t *k_off = malloc((size_t)pr->K * sizeof *k_off);
  if (!k_off) return 0;
  for (int64_t p = 0; p < pr->K; p++) k_off[p] = p * pr->lda;
  const damo_gemm_gather_a a = {pr->A, NULL, 1, k_off};
  const int done = damo_gemm_gather(&a, pr->trans_b, pr->M, pr->N, pr->K, pr->alpha, pr->B, pr->ldb, pr->beta, pr->C,
                                    pr->ldc);
  free(k_off);
  return done;
}

/* Part `part` of `parts` of [0, count) split at multiples of `tile` as evenly as tiles allow. */
static void tile_share(int64_t count, int64_t tile, int64_t part, int64_t parts, int64_t *begin, int64_t *end) {
  const int64_t tiles = (count + tile - 1) / tile;
  *begin = min64(tiles * part / parts * tile, count);
  *end = min64(tiles * (part + 1) / parts * tile, count);
}

/* ------------------------------------------------------------------ threading */

/* Seconds one thread takes per multiply-add of a small f32 product on each SIMD level's
 * path, measured once (a 96 x 64 x 256 product, the best of three). */
static atomic_llong fma_attoseconds[3];

static double seconds_per_fma(const gemm_config *cfg) {
  const int slot = cfg == &config_avx512 ? 2 : cfg == &config_avx2 ? 1 : 0;
  long long as = atomic_load(&fma_attoseconds[slot]);
  if (as > 0) return (double)as * 1e-18;
  enum { M = 96, N = 64, K = 256 };
  float *a = calloc((size_t)M * K + (size_t)K * N + (size_t)M * N, sizeof(float));
  if (!a) return 1e-9; /* a slow guess: products stay threaded */
  const gemm_problem pr = {0, 0, 0, 0, M, N, K, 1.0f, 0.0f, a, a + M * K, a + M * K + K * N, K, N, N, NULL, 0};
  double best = 1e30;
  for (int rep = 0; rep < 3; rep++) {
    const double t0 = damo_now_seconds();
    gemm_with_buffer(&pr, cfg);
    const double took = damo_now_seconds() - t0;
    if (took < best) best = took;
  }
  free(a);
  as = (long long)(best / ((double)M * N * K) * 1e18);
  atomic_store(&fma_attoseconds[slot], as > 0 ? as : 1);
  return (double)as * 1e-18;
}

int damo_gemm_threads(double fmas, double speedup) {
  if (omp_in_parallel() || fmas < GEMM_THREADING_MIN_FMAS) return 1;
  if (damo_parallel_region_seconds() <= 0) return damo_threads();
  const gemm_config *cfg = config_for_level(damo_simd_level_get());
  return damo_threads_for_seconds(fmas * seconds_per_fma(cfg) / speedup);
}

/* C is cut into a row_parts x col_parts grid of blocks, whole tiles each, one per thread. A
 * row split makes each thread pack all of op(B) and a column split all of op(A); the grid
 * that packs the fewest extra elements wins. An op(B) packed beforehand is only read (taken
 * as a quarter of the cost of packing it). */
typedef struct thread_grid {
  int row_parts, col_parts;
} thread_grid;

static thread_grid choose_thread_grid(const gemm_config *cfg, int64_t M, int64_t N, int threads, int b_packed) {
  const int64_t row_tiles = (M + cfg->mr - 1) / cfg->mr, col_tiles = (N + cfg->nr - 1) / cfg->nr;
  for (; threads > 1; threads--) {
    thread_grid best = {0, 0};
    double best_cost = 0;
    for (int rows = 1; rows <= threads; rows++) {
      if (threads % rows) continue;
      const int cols = threads / rows;
      if (rows > row_tiles || cols > col_tiles) continue;
      const double cost = (double)cols * (double)M + (double)rows * (double)N * (b_packed ? 0.25 : 1.0);
      if (best.row_parts == 0 || cost < best_cost) {
        best = (thread_grid){rows, cols};
        best_cost = cost;
      }
    }
    if (best.row_parts) return best;
  }
  return (thread_grid){1, 1};
}

static void gemm_grid_part(const gemm_problem *pr, const gemm_config *cfg, thread_grid grid, int part) {
  int64_t row0, row1, col0, col1;
  tile_share(pr->M, cfg->mr, part / grid.col_parts, grid.row_parts, &row0, &row1);
  tile_share(pr->N, cfg->nr, part % grid.col_parts, grid.col_parts, &col0, &col1);
  if (row0 >= row1 || col0 >= col1) return;
  gemm_problem block = *pr;
  block.M = row1 - row0;
  block.N = col1 - col0;
  block.A = pr->trans_a ? pr->A + row0 : pr->A + row0 * pr->lda;
  block.B = pr->trans_b ? pr->B + col0 * pr->ldb : pr->B + col0;
  block.C = pr->C + row0 * pr->ldc + col0;
  block.packed_col0 = pr->packed_col0 + col0;
  gemm_with_buffer(&block, cfg);
}

/* The product on this thread or on a grid of threads. */
static void gemm_run(const gemm_problem *pr, const gemm_config *cfg) {
  /* bf16 products run about twice as fast per multiply-add as the f32 ones measured. */
  const int threads = damo_gemm_threads((double)pr->M * (double)pr->N * (double)pr->K, pr->native_bf16 ? 2.0 : 1.0);
  const thread_grid grid = threads > 1 ? choose_thread_grid(cfg, pr->M, pr->N, threads, pr->packed != NULL)
                                       : (thread_grid){1, 1};
  const int parts = grid.row_parts * grid.col_parts;
  if (parts <= 1) {
    gemm_with_buffer(pr, cfg);
    return;
  }
#pragma omp parallel num_threads(parts)
  {
    /* A smaller team than asked for (omp_set_dynamic) still covers every part. */
    const int team = omp_get_num_threads();
    for (int part = omp_get_thread_num(); part < parts; part += team) gemm_grid_part(pr, cfg, grid, part);
  }
}

/* The SIMD level's configuration and the operands' precision a product takes now. */
typedef struct gemm_path {
  const gemm_config *cfg;
  int bf16, native_bf16;
} gemm_path;

static gemm_path path_for(int bf16) {
  gemm_path path = {config_for_level(damo_simd_level_get()), bf16, 0};
  path.native_bf16 = path.bf16 && path.cfg == &config_avx512 && damo_cpu_has_avx512_bf16();
  return path;
}

static gemm_path current_path(void) { return path_for(atomic_load(&matmul_precision) == DAMO_MATMUL_BF16); }

void damo_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
               const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  damo_gemm_at(damo_get_matmul_precision(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void damo_gemm_at(damo_matmul_precision precision, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  const gemm_path path = path_for(precision == DAMO_MATMUL_BF16);
  if (path.bf16 && path.cfg == &config_avx512 && damo_amx_ready() &&
      damo_gemm_amx(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
    return;
  const gemm_problem problem = {trans_a, trans_b, path.bf16, path.native_bf16, M, N, K, alpha, beta, A, B, C,
                                lda, ldb, ldc, NULL, 0};
  if (gemm_narrow(&problem, path.cfg)) return;
  gemm_run(&problem, path.cfg);
}

/* ------------------------------------------------------------------ op(B) packed once: API */

/* Whether products now take the path pb was packed for (else they multiply its source). */
static int packed_form_applies(const damo_gemm_packed_b *pb, const gemm_path *path) {
  if (!pb->data || pb->nr != path->cfg->nr || pb->kc != path->cfg->kc || pb->bf16 != path->bf16 ||
      pb->native_bf16 != path->native_bf16)
    return 0;
  if (path->bf16 && damo_amx_ready()) return 0; /* AMX tiles have a form of their own */
  /* a narrow product reads op(A) in place (gemm_narrow): damo_gemm's path, and its bits */
  return path->bf16 || path->cfg == &config_scalar || pb->N > NARROW_MAX_N;
}

static size_t packed_b_bytes(const gemm_path *path, int64_t K, int64_t N) {
  if (K <= 0 || N <= 0) return 0;
  const int64_t kc = path->cfg->kc, whole = K / kc, rest = K % kc;
  const int64_t column = whole * packed_column_floats(path->native_bf16, kc) + packed_column_floats(path->native_bf16, rest);
  return (size_t)(round_up(N, path->cfg->nr) * column) * sizeof(float);
}

size_t damo_gemm_packed_b_bytes(int64_t K, int64_t N) {
  const gemm_path path = current_path();
  return packed_b_bytes(&path, K, N);
}

void damo_gemm_pack_b(damo_gemm_packed_b *pb, int trans_b, int64_t K, int64_t N, const float *B, int64_t ldb,
                      void *storage, size_t bytes) {
  const gemm_path path = current_path();
  *pb = (damo_gemm_packed_b){trans_b, K, N, ldb, B, NULL, path.bf16, path.native_bf16, path.cfg->nr, path.cfg->kc};
  /* sized for the same path it packs for: the precision may be switched by another thread */
  const size_t need = packed_b_bytes(&path, K, N);
  if (need == 0 || !storage || bytes < need || ((uintptr_t)storage & 63)) return; /* products multiply the source */
  pb->data = storage;
  if (!packed_form_applies(pb, &path)) {
    pb->data = NULL;
    return;
  }
  const gemm_problem pr = {0, trans_b, path.bf16, path.native_bf16, 0, N, K, 1.0f, 0.0f, NULL, B, NULL, 0, ldb, 0,
                           NULL, 0};
  const int nr = path.cfg->nr, kc = path.cfg->kc;
  const int64_t panels = (N + nr - 1) / nr;
  /* Packing streams B once: worth both cores when B is large (a 50257 x 768 table) */
  const int threads = K * N >= (1 << 20) ? damo_threads() : 1;
#pragma omp parallel num_threads(threads)
  {
    const int team = omp_get_num_threads(), me = omp_get_thread_num();
    const int64_t first = panels * me / team, last = panels * (me + 1) / team;
    for (int64_t pc = 0; pc < K && first < last; pc += kc) {
      const int64_t depth = min64(kc, K - pc), col = first * nr;
      pack_b(&pr, path.cfg, col, min64(last * nr, N) - col, pc, depth, (float *)packed_b_block(pb, pc, col));
    }
  }
}

void damo_gemm_packed(int trans_a, int64_t M, float alpha, const float *A, int64_t lda, const damo_gemm_packed_b *pb,
                      float beta, float *C, int64_t ldc) {
  const gemm_path path = current_path();
  if (M <= 0 || pb->N <= 0 || pb->K <= 0 || alpha == 0.0f || !packed_form_applies(pb, &path)) {
    damo_gemm(trans_a, pb->trans_b, M, pb->N, pb->K, alpha, A, lda, pb->B, pb->ldb, beta, C, ldc);
    return;
  }
  const gemm_problem problem = {trans_a, pb->trans_b, path.bf16, path.native_bf16, M, pb->N, pb->K, alpha, beta, A,
                                pb->B, C, lda, pb->ldb, ldc, pb, 0};
  gemm_run(&problem, path.cfg);
}
