/* gemm_amx.c - damo_gemm with bf16 operands on AMX (Intel's tile unit: TDPBF16PS multiplies
 * a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32 sums, 16 k a row per instruction).
 *
 * The whole of op(A) and op(B) is packed once per product into the tiles' layouts, in bf16
 * rounded as damo_bf16_from_f32 rounds (nearest even, NaN kept):
 *   A: panels of 32 rows; per chunk of 32 k, the 32 rows of 32 values, 64 bytes each (tiles
 *      A0 = rows 0..15 and A1 = rows 16..31, stride 64);
 *   B: panels of 32 columns; per chunk of 32 k, 16 rows of k-pairs, each the 32 columns'
 *      pairs (k, k + 1) side by side, 128 bytes (tiles B0 = columns 0..15, B1 = 16..31,
 *      stride 128);
 * with K padded to whole chunks and M, N to whole panels by zeros. Each 32 x 32 tile of C
 * lives in four accumulator tiles (A0B0, A0B1, A1B0, A1B1) over all of K, then goes through
 * alpha and beta into C. Threads take tiles in row-panel order, so a thread reuses its A
 * panel from cache across the columns. The tile unit is configured per thread; Linux hands
 * a process the AMX registers only after it asks (arch_prctl), once. */
#define _GNU_SOURCE /* syscall */
#include "kernels/cpu/bf16_pairs.h"
#include "kernels/cpu/cpu_kernels.h"

#include <immintrin.h>
#include <omp.h>
#include <stdatomic.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* KC_CHUNKS: chunks of K per block (A block 16 KB, for L1); B_BLOCK_BYTES: the column panels
 * one row panel meets before the next (kept in L2, 2 MB a core on Sapphire Rapids). */
enum { TILE = 32, CHUNK = 32, KC_CHUNKS = 8, B_BLOCK_BYTES = 1 << 20, STRIP_PANELS = 32 };

typedef struct tile_config {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

/* 0 unknown, 1 usable, 2 not: the CPU has AMX-BF16 and the kernel gave this process the
 * tile data state. */
static atomic_int amx_state, amx_refused;

int damo_amx_allow(int allowed) { return !atomic_exchange(&amx_refused, !allowed); }

int damo_amx_ready(void) {
  if (atomic_load(&amx_refused)) return 0;
  int s = atomic_load(&amx_state);
  if (s) return s == 1;
  int ok = damo_cpu_has_bf16() == 2 && damo_cpu_has_avx512_bf16();
#if defined(__linux__)
  /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA (18). */
  if (ok) ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
  ok = 0;
#endif
  atomic_store(&amx_state, ok ? 1 : 2);
  return ok;
}

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Rows k and k + 1 (16 values each from `at`, rows `ld` apart; a row past K reads as 0). */
__attribute__((target("avx512f,avx512bw,avx512bf16"), always_inline)) static inline __m512i
pairs_of_rows(const float *at, int64_t ld, int64_t k, int64_t K, __mmask16 lanes) {
  return damo_bf16_pair_rows(k < K ? at : NULL, k + 1 < K ? at + ld : NULL, lanes);
}

/* 32 consecutive values (n of them, the rest 0) as 32 bf16 in order: 16 pairs. */
__attribute__((target("avx512f,avx512bw,avx512bf16"), always_inline)) static inline __m512i run_of_32(const float *at,
                                                                                                     int64_t n) {
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(damo_lanes16(n - 16), at + 16),
                                      _mm512_maskz_loadu_ps(damo_lanes16(n), at));
}

/* Rows [q * 32, q * 32 + 32) of op(A) into panel q: per chunk, 32 rows of 32 k. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void pack_a_panel(const float *A, int64_t lda, int trans,
                                                                               int64_t M, int64_t K, int64_t q,
                                                                               uint16_t *dst) {
  const int64_t chunks = round_up(K, CHUNK) / CHUNK, i0 = q * TILE, rows = M - i0 < TILE ? M - i0 : TILE;
  if (!trans) { /* along each row, so the reads stream */
    for (int64_t r = 0; r < TILE; r++)
      for (int64_t c = 0; c < chunks; c++)
        _mm512_storeu_si512((void *)(dst + c * TILE * CHUNK + r * CHUNK),
                            r < rows ? run_of_32(A + (i0 + r) * lda + c * CHUNK, K - c * CHUNK) : _mm512_setzero_si512());
    return;
  }
  for (int64_t c = 0; c < chunks; c++) {
    const int64_t k0 = c * CHUNK;
    uint16_t *out = dst + c * TILE * CHUNK;
    /* A is stored K x M: rows k, k + 1 give 16 rows' pairs at a time, scattered to their rows. */
    const __m512i row_step = _mm512_mullo_epi32(_mm512_set1_epi32(CHUNK / 2),
                                                _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
    for (int64_t r0 = 0; r0 < TILE; r0 += 16)
      for (int64_t p = 0; p < CHUNK / 2; p++) {
        const int64_t k = k0 + 2 * p;
        const __m512i v = pairs_of_rows(A + k * lda + i0 + r0, lda, k, K, damo_lanes16(rows - r0));
        _mm512_i32scatter_epi32((int32_t *)(void *)(out + r0 * CHUNK) + p, row_step, v, 4);
      }
  }
}

/* Chunk c of every column panel of B (K x N, not transposed): per pair of rows k, k + 1,
 * 16 columns at a time along the rows (a panel at a time would touch a new page per row). */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void pack_b_chunk(const float *B, int64_t ldb, int64_t N,
                                                                               int64_t K, int64_t c, int64_t panel_values,
                                                                               uint16_t *pb) {
  const int64_t padded = round_up(N, TILE);
  for (int64_t p = 0; p < CHUNK / 2; p++) {
    const int64_t k = c * CHUNK + 2 * p;
    for (int64_t j = 0; j < padded; j += 16)
      _mm512_storeu_si512((void *)(pb + (j / TILE) * panel_values + c * CHUNK * TILE + p * 2 * TILE + j % TILE * 2),
                          pairs_of_rows(B + k * ldb + j, ldb, k, K, damo_lanes16(N - j)));
  }
}

/* Columns [q * 32, q * 32 + 32) of op(B) = B^T (B stored N x K) into panel q: per chunk, 16
 * rows of 32 pairs. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void pack_bt_panel(const float *B, int64_t ldb,
                                                                               int64_t N, int64_t K, int64_t q,
                                                                               uint16_t *dst) {
  const int64_t chunks = round_up(K, CHUNK) / CHUNK, j0 = q * TILE, cols = N - j0 < TILE ? N - j0 : TILE;
  const __m512i pair_step = _mm512_mullo_epi32(_mm512_set1_epi32(TILE),
                                               _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
  for (int64_t c = 0; c < chunks; c++) {
    const int64_t k0 = c * CHUNK;
    uint16_t *out = dst + c * CHUNK * TILE;
    /* B is stored N x K: a column's 32 k are contiguous, 16 pairs scattered down the rows. */
    for (int64_t j = 0; j < TILE; j++) {
      const __m512i v = j < cols ? run_of_32(B + (j0 + j) * ldb + k0, K - k0) : _mm512_setzero_si512();
      _mm512_i32scatter_epi32((int32_t *)(void *)out + j, pair_step, v, 4);
    }
  }
}

/* Chunks [c0, c0 + n) of one 32 x 32 tile of C into its four accumulator tiles, which start
 * from `acc` (32 x 32 f32, 128-byte rows) unless `first`, and are stored back there. */
__attribute__((target("amx-tile,amx-bf16"))) static void tile_chunks(const uint16_t *a, const uint16_t *b, int64_t n,
                                                                   float *acc, int first) {
  if (first) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, acc, TILE * 4);
    _tile_loadd(1, acc + 16, TILE * 4);
    _tile_loadd(2, acc + 16 * TILE, TILE * 4);
    _tile_loadd(3, acc + 16 * TILE + 16, TILE * 4);
  }
  for (int64_t ch = 0; ch < n; ch++) {
    const uint16_t *ap = a + ch * TILE * CHUNK, *bp = b + ch * (CHUNK / 2) * 2 * TILE;
    _tile_loadd(4, ap, CHUNK * 2);
    _tile_loadd(6, bp, 4 * TILE);
    _tile_loadd(5, ap + 16 * CHUNK, CHUNK * 2);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, bp + 32, 4 * TILE);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, acc, TILE * 4);
  _tile_stored(1, acc + 16, TILE * 4);
  _tile_stored(2, acc + 16 * TILE, TILE * 4);
  _tile_stored(3, acc + 16 * TILE + 16, TILE * 4);
}

/* C = alpha * sums + beta * C for the m x n corner of one 32 x 32 tile of sums. */
__attribute__((target("avx512f"))) static void tile_out(const float *sums, float *c, int64_t ldc, int m, int n,
                                                       float alpha, float beta) {
  const __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
  for (int i = 0; i < m; i++)
    for (int v = 0; v < 2; v++) {
      const int left = n - 16 * v;
      if (left <= 0) break;
      const __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
      float *out = c + i * ldc + 16 * v;
      __m512 s = _mm512_mul_ps(_mm512_load_ps(sums + i * TILE + 16 * v), alpha_v);
      if (beta != 0.0f) s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, out), beta_v, s);
      _mm512_mask_storeu_ps(out, mask, s);
    }
}

/* One row panel of C against `ncp` column panels: K in blocks of KC_CHUNKS, so a block of
 * the A panel (16 KB) stays in L1 while it meets every column panel, whose blocks come from
 * L2; the 32 x 32 sums wait in `strip` between K blocks. */
static void strip_product(const uint16_t *a, const uint16_t *b, int64_t panel_values, int64_t ncp, int64_t chunks,
                          float *strip, float *c, int64_t ldc, int m, int64_t n_left, float alpha, float beta) {
  for (int64_t k0 = 0; k0 < chunks; k0 += KC_CHUNKS) {
    const int64_t n = chunks - k0 < KC_CHUNKS ? chunks - k0 : KC_CHUNKS;
    for (int64_t j = 0; j < ncp; j++)
      tile_chunks(a + k0 * TILE * CHUNK, b + j * panel_values + k0 * CHUNK * TILE, n, strip + j * TILE * TILE, k0 == 0);
  }
  for (int64_t j = 0; j < ncp; j++) {
    const int64_t left = n_left - j * TILE;
    tile_out(strip + j * TILE * TILE, c + j * TILE, ldc, m, (int)(left < TILE ? left : TILE), alpha, beta);
  }
}

/* Eight tiles of 16 rows x 64 bytes. A constant object: GCC does not count LDTILECFG as a
 * read of its operand and dropped the stores that filled a local one. */
static const tile_config eight_full_tiles __attribute__((aligned(64))) = {
    .palette = 1, .colsb = {64, 64, 64, 64, 64, 64, 64, 64}, .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

__attribute__((target("amx-tile"))) void damo_amx_configure(void) { _tile_loadconfig(&eight_full_tiles); }

__attribute__((target("amx-tile"))) void damo_amx_release(void) { _tile_release(); }

int damo_gemm_amx(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (!damo_amx_ready()) return 0;
  const int64_t row_panels = round_up(M, TILE) / TILE, col_panels = round_up(N, TILE) / TILE;
  const int64_t chunks = round_up(K, CHUNK) / CHUNK, panel_values = TILE * chunks * CHUNK;
  int64_t block = B_BLOCK_BYTES / (panel_values * 2);
  block = block < 1 ? 1 : block > STRIP_PANELS ? STRIP_PANELS : block;
  if (block > col_panels) block = col_panels;
  const int64_t blocks = (col_panels + block - 1) / block, b_units = trans_b ? col_panels : chunks;
  /* Small products on the calling thread alone, as damo_gemm does. */
  const int threads = omp_in_parallel() || (double)M * (double)N * (double)K < 512.0 * 1024 ? 1 : damo_threads();
  /* The calling thread's buffer, kept between products (no page faults per call): packed A,
   * packed B, then each thread's strip of sums. */
  const size_t packed = (size_t)((row_panels + col_panels) * panel_values + 32) / 2;
  float *buffer = damo_gemm_pack_buffer(packed + (size_t)threads * STRIP_PANELS * TILE * TILE + 16);
  if (!buffer) return 0; /* the caller's path needs less memory */
  uint16_t *pa = (uint16_t *)buffer, *pb = pa + row_panels * panel_values;
  float *strips = (float *)(((uintptr_t)(buffer + packed) + 63) & ~(uintptr_t)63);
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t q = 0; q < row_panels + b_units; q++) {
      if (q < row_panels) pack_a_panel(A, lda, trans_a, M, K, q, pa + q * panel_values);
      else if (trans_b) pack_bt_panel(B, ldb, N, K, q - row_panels, pb + (q - row_panels) * panel_values);
      else pack_b_chunk(B, ldb, N, K, q - row_panels, panel_values, pb);
    }
    damo_amx_configure();
    float *strip = strips + (size_t)omp_get_thread_num() * STRIP_PANELS * TILE * TILE;
    /* Column blocks outermost, so every thread's row panels meet a block while it is in L2. */
#pragma omp for schedule(static)
    for (int64_t t = 0; t < blocks * row_panels; t++) {
      const int64_t bq = t / row_panels, rp = t % row_panels, cp = bq * block;
      const int64_t ncp = col_panels - cp < block ? col_panels - cp : block;
      const int m = (int)(M - rp * TILE < TILE ? M - rp * TILE : TILE);
      strip_product(pa + rp * panel_values, pb + cp * panel_values, panel_values, ncp, chunks, strip,
                    C + rp * TILE * ldc + cp * TILE, ldc, m, N - cp * TILE, alpha, beta);
    }
    damo_amx_release();
  }
  return 1;
}
