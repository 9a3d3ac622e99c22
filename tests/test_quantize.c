/* test_quantize.c - int8 post-training quantisation: the int8 product against integer
 * arithmetic (every SIMD path), the qdense and qconv2d ops against the f32 ops on the
 * dequantised operands, quantised Fashion-MNIST models (MLP and CNN) against their f32
 * selves, the saved directory (I8 kernels, sizes, bit-identical reload), and bad input. */
#include "harness.h"
#include "kernels/cpu/cpu_kernels.h" /* damo_amx_allow, damo_amx_ready */
#include "ops/ops.h"
#include "tmpfiles.h"

#include <damo.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int quick(void) { return getenv("DAMO_TEST_QUICK") != NULL; }

static uint64_t lcg = 12345;
static uint32_t next_u32(void) {
  lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(lcg >> 33);
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(next_u32() % 100000) / 100000.0f; }

/* ------------------------------------------------------------------ the int8 product */

/* C from damo_gemm_q8 (each SIMD path that runs here, and the plain loops) against the same
 * sums in 64-bit integers, for both weight layouts. */
static void check_product(int64_t M, int64_t K, int64_t N, int relu, int with_bias, damo_qlayout layout) {
  int8_t *w = malloc((size_t)(K * N));
  float *scale = malloc((size_t)N * sizeof *scale), *bias = malloc((size_t)N * sizeof *bias);
  float *x = malloc((size_t)(M * K) * sizeof *x);
  for (int64_t i = 0; i < K * N; i++) w[i] = (int8_t)((int)(next_u32() % 255) - 127);
  for (int64_t n = 0; n < N; n++) scale[n] = uniform(0.001f, 0.02f), bias[n] = uniform(-1, 1);
  for (int64_t i = 0; i < M * K; i++) x[i] = uniform(-3, 5);
  float xs;
  int zp;
  damo_quant_params(-3, 5, &xs, &zp);
  damo_qweight *qw = damo_qweight_pack(w, K, N, scale, layout);
  const int64_t Mp = damo_qrows_padded(M);
  void *a = calloc((size_t)Mp, damo_qrow_bytes(qw));
  damo_quantize_rows(x, M, K, K, xs, zp, qw->layout, a, qw->Kp);
  float *c = malloc((size_t)(M * N) * sizeof *c);
  int ok = 1, range_ok = 1;
  /* the dispatched path (AMX-INT8 where it runs, else VNNI or AVX2), the plain loops, and the
   * dispatched path with AMX refused (VNNI on the same packing) */
  for (int path = 0; path < 3; path++) {
    damo_simd_level before = damo_simd_level_get();
    if (path == 1) damo_simd_level_force(DAMO_SIMD_SCALAR);
    if (path == 2) damo_amx_allow(0);
    const damo_q8_out out = damo_q8_f32(c, N, relu);
    damo_gemm_q8(M, a, qw, xs, zp, with_bias ? bias : NULL, &out);
    /* The same product requantised to uint8 for a next layer: exactly the f32 output
     * quantised by damo_quantize_rows (one epilogue value, one rounding). */
    float lo = 0, hi = 0, os;
    int oz;
    for (int64_t i = 0; i < M * N; i++) lo = c[i] < lo ? c[i] : lo, hi = c[i] > hi ? c[i] : hi;
    damo_quant_params(lo * 0.8f, hi * 0.8f, &os, &oz); /* some values clamp */
    uint8_t *c8 = malloc((size_t)(M * N)), *want8 = malloc((size_t)(M * N));
    const damo_q8_out out8 = {.c = c8, .ldc = N, .relu = relu, .out_inv_scale = 1.0f / os, .out_zero_point = oz};
    damo_gemm_q8(M, a, qw, xs, zp, with_bias ? bias : NULL, &out8);
    damo_simd_level_force(before); /* the reference quantiser on the dispatched path */
    damo_quantize_rows(c, M, N, N, os, oz, DAMO_QLAYOUT_VNNI, want8, N);
    CHECK_MSG(memcmp(c8, want8, (size_t)(M * N)) == 0, "uint8 output: path %d layout %d M %lld N %lld relu %d", path,
              (int)layout, (long long)M, (long long)N, relu);
    free(c8);
    free(want8);
    /* A residual added in the epilogue: the f32 output plus it, one rounding as the add op's */
    if (path == 1) damo_simd_level_force(DAMO_SIMD_SCALAR);
    float *cr = malloc((size_t)(M * N) * sizeof *cr), *res = malloc((size_t)(M * N) * sizeof *res);
    for (int64_t i = 0; i < M * N; i++) res[i] = uniform(-2, 2);
    damo_q8_out orr = damo_q8_f32(cr, N, relu);
    orr.residual = res, orr.ldr = N;
    damo_gemm_q8(M, a, qw, xs, zp, with_bias ? bias : NULL, &orr);
    int res_ok = 1;
    for (int64_t i = 0; i < M * N; i++) res_ok &= cr[i] == c[i] + res[i];
    CHECK_MSG(res_ok, "residual: path %d layout %d M %lld N %lld relu %d", path, (int)layout, (long long)M, (long long)N,
              relu);
    damo_simd_level_force(before);
    free(cr), free(res);
    /* A fused GELU (both forms): the f32 output with the gelu op's own loop applied, bit for
     * bit, on the same path. */
    if (!relu) {
      if (path == 1) damo_simd_level_force(DAMO_SIMD_SCALAR);
      float *cg = malloc((size_t)(M * N) * sizeof *cg), *want = malloc((size_t)(M * N) * sizeof *want);
      for (int form = 1; form <= 2; form++) {
        damo_q8_out og = damo_q8_f32(cg, N, 0);
        og.gelu = form;
        damo_gemm_q8(M, a, qw, xs, zp, with_bias ? bias : NULL, &og);
        damo_gelu_forward_loop(form == 2, c, want, M * N);
        CHECK_MSG(memcmp(cg, want, (size_t)(M * N) * sizeof *cg) == 0, "fused GELU form %d: path %d layout %d M %lld "
                  "N %lld", form, path, (int)layout, (long long)M, (long long)N);
        /* before a uint8 output: the GELU's f32 values quantised as the next layer would */
        uint8_t *g8 = malloc((size_t)(M * N)), *want8 = malloc((size_t)(M * N));
        float glo = 0, ghi = 0, gs;
        int gz;
        for (int64_t i = 0; i < M * N; i++) glo = fminf(glo, want[i]), ghi = fmaxf(ghi, want[i]);
        damo_quant_params(glo, ghi * 0.7f, &gs, &gz); /* some clamp at 255 */
        damo_q8_out o8 = {.c = g8, .ldc = N, .out_inv_scale = 1.0f / gs, .out_zero_point = gz, .gelu = form};
        damo_gemm_q8(M, a, qw, xs, zp, with_bias ? bias : NULL, &o8);
        damo_quantize_rows(want, M, N, N, gs, gz, DAMO_QLAYOUT_VNNI, want8, N);
        CHECK_MSG(memcmp(g8, want8, (size_t)(M * N)) == 0, "fused GELU form %d into uint8: path %d layout %d M %lld "
                  "N %lld", form, path, (int)layout, (long long)M, (long long)N);
        free(g8), free(want8);
      }
      damo_simd_level_force(before);
      free(cg), free(want);
    }
    damo_amx_allow(1);
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        int64_t sum = 0;
        for (int64_t k = 0; k < K; k++) {
          float r = nearbyintf(x[m * K + k] / xs) + (float)zp;
          const int q = (int)(r < 0 ? 0 : r > 255 ? 255 : r);
          sum += (int64_t)(q - zp) * w[k * N + n];
          const int stored = layout == DAMO_QLAYOUT_VNNI ? ((uint8_t *)a)[m * qw->Kp + k] - zp
                                                         : ((int16_t *)a)[m * qw->Kp + k];
          if (abs(stored - (q - zp)) > 1) range_ok = 0; /* x / s against x * (1 / s): one step at a tie */
        }
        double want = (double)sum * ((double)xs * scale[n]) + (with_bias ? bias[n] : 0);
        if (relu && want < 0) want = 0;
        if (fabs(c[m * N + n] - want) > 2e-2 * xs * scale[n] * K + 1e-5 * (1 + fabs(want))) ok = 0;
      }
  }
  CHECK_MSG(ok && range_ok, "layout %d M %lld K %lld N %lld relu %d bias %d", (int)layout, (long long)M, (long long)K,
            (long long)N, relu, with_bias);
  /* Exactly the integer sums of what was stored: recompute from the buffer itself. */
  int exact = 1;
  const damo_q8_out plain = damo_q8_f32(c, N, 0);
  damo_gemm_q8(M, a, qw, 1.0f, zp, NULL, &plain);
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      int64_t sum = 0;
      for (int64_t k = 0; k < K; k++)
        sum += (int64_t)(layout == DAMO_QLAYOUT_VNNI ? ((uint8_t *)a)[m * qw->Kp + k] - zp : ((int16_t *)a)[m * qw->Kp + k]) *
               w[k * N + n];
      if (c[m * N + n] != (float)((double)sum * scale[n])) exact = 0;
    }
  CHECK_MSG(exact, "layout %d M %lld K %lld N %lld: int32 sums", (int)layout, (long long)M, (long long)K, (long long)N);
  damo_qweight_free(qw);
  free(w), free(scale), free(bias), free(x), free(a), free(c);
}

static void test_int8_product(void) {
  /* {1, 200, 70}: one row through several column tiles (the decoding step's own VNNI loop) */
  const int64_t shapes[][3] = {{1, 1, 1}, {1, 200, 70}, {5, 7, 3},    {6, 2, 16},
                               {13, 784, 17}, {64, 31, 33}, {7, 128, 10}, {100, 288, 64}};
  for (int layout = DAMO_QLAYOUT_S16; layout <= DAMO_QLAYOUT_VNNI; layout++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (int v = 0; v < 4; v++) check_product(shapes[s][0], shapes[s][1], shapes[s][2], v & 1, v >> 1, (damo_qlayout)layout);
  printf("  int8 product: VNNI kernel %s; AMX-INT8 kernel %s\n",
         damo_cpu_has_vnni() ? "run (this CPU has AVX512-VNNI)" : "not run (no AVX512-VNNI): its layout checked by the plain loops",
         damo_cpu_has_amx_int8() && damo_amx_ready() ? "run" : "not run (no AMX-INT8 here)");
  /* Rounding and clamping of the activation: zero is exact, out-of-range values clamp. */
  float s;
  int z;
  damo_quant_params(-1, 3, &s, &z);
  const float x[] = {0.0f, -1.0f, 3.0f, 100.0f, -100.0f, s * 0.5f};
  int16_t q[6];
  uint8_t u[8];
  damo_quantize_rows(x, 1, 6, 6, s, z, DAMO_QLAYOUT_S16, q, 6);
  damo_quantize_rows(x, 1, 6, 6, s, z, DAMO_QLAYOUT_VNNI, u, 8);
  CHECK(q[0] == 0 && u[0] == z);
  CHECK(q[1] == -z && q[2] == 255 - z && u[1] == 0 && u[2] == 255);
  CHECK(q[3] == 255 - z && q[4] == -z && u[3] == 255 && u[4] == 0);
  CHECK(q[5] == 0 && u[5] == z); /* 0.5 rounds to the even 0 */
  CHECK(u[6] == 0 && u[7] == 0);  /* the padding */
  damo_quant_params(0, 0, &s, &z); /* an all-zero input still gets a usable scale */
  CHECK(s > 0 && z == 0);

  /* Long rows (the SIMD loops, not only their tails) give the same codes on every path:
   * ties, out-of-range and infinite values and -0 among them, each layout, rows with a leading
   * dimension and padding. (NaN, refused before any product, maps to the zero point in the
   * scalar loop and to 0 in the SIMD ones: defined, not compared.) */
  enum { R = 3, K = 83, LDX = 90, LDO = 96 };
  float xs[R * LDX];
  damo_quant_params(-0.7f, 2.3f, &s, &z);
  for (int i = 0; i < R * LDX; i++) xs[i] = uniform(-1.0f, 3.0f);
  for (int i = 0; i < R * LDX; i += 7) xs[i] = s * (float)(i % 9 - 4) + 0.5f * s; /* exactly halfway */
  xs[17] = -0.0f, xs[40] = 1e30f, xs[41] = -1e30f, xs[LDX + 20] = INFINITY;
  const damo_simd_level dispatched = damo_simd_level_get();
  for (int layout = DAMO_QLAYOUT_S16; layout <= DAMO_QLAYOUT_VNNI; layout++) {
    int16_t ref[R * LDO], got[R * LDO]; /* room for either layout's codes */
    for (int level = DAMO_SIMD_SCALAR; level <= (int)dispatched; level++) {
      damo_simd_level_force((damo_simd_level)level);
      memset(level == DAMO_SIMD_SCALAR ? ref : got, 0xA5, sizeof ref);
      damo_quantize_rows(xs, R, K, LDX, s, z, (damo_qlayout)layout, level == DAMO_SIMD_SCALAR ? ref : got, LDO);
      if (level != DAMO_SIMD_SCALAR)
        CHECK_MSG(memcmp(ref, got, sizeof ref) == 0, "layout %d: SIMD level %d's codes differ from the scalar ones",
                  layout, level);
    }
    damo_simd_level_force(dispatched);
  }
}

/* ------------------------------------------------------------------ the ops */

/* Runs one op graph on x and returns its output (malloc'd). */
static float *run_graph(damo_graph *g, damo_node *in, damo_node *out, const float *x) {
  if (damo_graph_compile(g, NULL, 1, &out) != DAMO_OK || damo_graph_bind(g, in, x) != DAMO_OK ||
      damo_graph_forward(g, 0) != DAMO_OK)
    return NULL;
  float *y = malloc(sizeof(float) * (size_t)damo_node_numel(out));
  memcpy(y, damo_node_data(out), sizeof(float) * (size_t)damo_node_numel(out));
  return y;
}

/* qconv2d (and qdense as a 1x1 window over a 1x1 image) against conv2d on the dequantised
 * kernel and input: the same numbers up to float rounding, padding and strides included. */
static void check_qconv(int N, int H, int W, int C, int KH, int KW, int F, int stride, int pad, int dense,
                        damo_qlayout layout) {
  const int64_t K = (int64_t)KH * KW * C, xn = (int64_t)N * H * W * C;
  int8_t *q = malloc((size_t)(K * F));
  float *scale = malloc((size_t)F * sizeof *scale), *bias = malloc((size_t)F * sizeof *bias);
  float *kern = malloc((size_t)(K * F) * sizeof *kern), *x = malloc((size_t)xn * sizeof *x);
  float *xd = malloc((size_t)xn * sizeof *xd);
  for (int64_t i = 0; i < K * F; i++) q[i] = (int8_t)((int)(next_u32() % 255) - 127);
  for (int f = 0; f < F; f++) scale[f] = uniform(0.001f, 0.01f), bias[f] = uniform(-0.5f, 0.5f);
  for (int64_t i = 0; i < K * F; i++) kern[i] = scale[i % F] * q[i];
  for (int64_t i = 0; i < xn; i++) x[i] = uniform(-1, 2);
  float s;
  int z;
  damo_quant_params(-1, 2, &s, &z);
  int16_t *xq = malloc((size_t)xn * sizeof *xq);
  damo_quantize_rows(x, 1, xn, xn, s, z, DAMO_QLAYOUT_S16, xq, xn);
  for (int64_t i = 0; i < xn; i++) xd[i] = s * xq[i];
  damo_qweight *qw = damo_qweight_pack(q, K, F, scale, layout);

  damo_graph *g8 = damo_graph_new(1), *g32 = damo_graph_new(1);
  const int64_t xshape[4] = {N, H, W, C}, kshape[4] = {KH, KW, C, F}, bshape[1] = {F};
  const int64_t dshape[2] = {(int64_t)N * H * W, C}, wshape[2] = {C, F};
  damo_tensor *kt = dense ? damo_tensor_wrap(DAMO_F32, 2, wshape, kern) : damo_tensor_wrap(DAMO_F32, 4, kshape, kern);
  damo_tensor *bt = damo_tensor_wrap(DAMO_F32, 1, bshape, bias);
  damo_node *x8 = damo_input(g8, "x", DAMO_F32, dense ? 2 : 4, dense ? dshape : xshape);
  damo_node *x32 = damo_input(g32, "x", DAMO_F32, dense ? 2 : 4, dense ? dshape : xshape);
  damo_node *b8 = damo_param(g8, "b", bt, NULL), *b32 = damo_param(g32, "b", bt, NULL), *k32 = damo_param(g32, "k", kt, NULL);
  const int pb = pad, pr = pad;
  damo_node *y8 = dense ? damo_qdense_op(g8, x8, qw, b8, DAMO_ACT_RELU, s, z)
                        : damo_qconv2d_op(g8, x8, qw, KH, KW, b8, DAMO_ACT_RELU, stride, stride, pad, pad, pb, pr, s, z);
  damo_node *y32 = dense ? damo_dense_op(g32, x32, k32, b32, DAMO_ACT_RELU)
                         : damo_conv2d_ex(g32, x32, k32, b32, DAMO_ACT_RELU, stride, stride, pad, pad, pb, pr);
  float *o8 = y8 ? run_graph(g8, x8, y8, x) : NULL, *o32 = y32 ? run_graph(g32, x32, y32, xd) : NULL;
  CHECK_MSG(o8 && o32, "graphs: %s", damo_last_error());
  if (o8 && o32) {
    CHECK(damo_node_numel(y8) == damo_node_numel(y32));
    CHECK_CLOSE(o8, o32, (long)damo_node_numel(y32), 1e-5, 1e-4);
  }
  /* Dynamic: the batch's own range, here the same as the static one's widened to 0. */
  free(o8), free(o32);
  damo_graph_free(g8), damo_graph_free(g32);
  damo_tensor_free(kt), damo_tensor_free(bt);
  damo_qweight_free(qw);
  free(q), free(scale), free(bias), free(kern), free(x), free(xd), free(xq);
}

/* A GELU after a qdense folds into it (damo_qdense_absorb_gelu): the same values as the two
 * ops apart, bit for bit, in a graph with one node fewer to run; not folded when the
 * product's value is read elsewhere too. */
static void test_gelu_folds_into_qdense(void) {
  enum { M = 37, K = 96, N = 70 };
  int8_t q[K * N];
  float scale[N], bias[N], x[M * K];
  for (int i = 0; i < K * N; i++) q[i] = (int8_t)((int)(next_u32() % 255) - 127);
  for (int n = 0; n < N; n++) scale[n] = uniform(0.002f, 0.02f), bias[n] = uniform(-1, 1);
  for (int i = 0; i < M * K; i++) x[i] = uniform(-2, 2);
  damo_qweight *qw = damo_qweight_pack(q, K, N, scale, DAMO_QLAYOUT_AUTO);
  const int64_t xshape[2] = {M, K}, bshape[1] = {N};
  damo_tensor *bt = damo_tensor_wrap(DAMO_F32, 1, bshape, bias);
  for (int form = 0; form <= 1; form++) {
    float *out[2] = {NULL, NULL};
    for (int fold = 0; fold <= 1; fold++) {
      damo_graph *g = damo_graph_new(1);
      damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape);
      damo_node *y = damo_gelu(g, damo_qdense_op(g, in, qw, damo_param(g, "b", bt, NULL), DAMO_ACT_NONE, 0.0f, 0), form);
      if (fold) CHECK(damo_qdense_absorb_gelu(g, y) == 1);
      out[fold] = run_graph(g, in, y, x);
      CHECK_MSG(out[fold], "%s", damo_last_error());
      damo_graph_free(g);
    }
    CHECK_MSG(out[0] && out[1] && !memcmp(out[0], out[1], sizeof(float) * M * N), "GELU form %d folded differs", form);
    free(out[0]), free(out[1]);
  }
  /* calibrated: the GELU folds into a static qdense too, and chained into a second static
   * one it hands that one uint8, the same values bit for bit as the f32 hand-over */
  {
    float s1, s2, *out[2] = {NULL, NULL};
    int z1, z2;
    damo_quant_params(-2, 2, &s1, &z1);
    damo_quant_params(-0.2f, 3.0f, &s2, &z2);
    int8_t q2[N * 5];
    float scale2[5];
    for (int i = 0; i < N * 5; i++) q2[i] = (int8_t)((int)(next_u32() % 255) - 127);
    for (int n = 0; n < 5; n++) scale2[n] = uniform(0.002f, 0.02f);
    damo_qweight *qw2 = damo_qweight_pack(q2, N, 5, scale2, DAMO_QLAYOUT_AUTO);
    for (int link = 0; link <= 1; link++) {
      damo_graph *g = damo_graph_new(1);
      damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape);
      damo_node *y = damo_gelu(g, damo_qdense_op(g, in, qw, damo_param(g, "b", bt, NULL), DAMO_ACT_NONE, s1, z1), 0);
      damo_node *z = damo_qdense_op(g, y, qw2, NULL, DAMO_ACT_NONE, s2, z2);
      CHECK(damo_qdense_absorb_gelu(g, y) == 1 && y->op == DAMO_OP_QDENSE);
      if (link) CHECK(damo_int8_chain(g, 1, &z) == DAMO_OK && y->dtype == DAMO_U8 && z->dtype == DAMO_F32);
      out[link] = run_graph(g, in, z, x);
      CHECK_MSG(out[link], "%s", damo_last_error());
      damo_graph_free(g);
    }
    CHECK_MSG(out[0] && out[1] && !memcmp(out[0], out[1], sizeof(float) * M * 5), "the GELU chain's output differs");
    free(out[0]), free(out[1]);
    /* BERT's feed-forward as the int8 rewrite leaves it: the GELU and the residual add folded
     * first (the nodes they replace left behind, read by no one), then the chain still links
     * the two products */
    damo_graph *g = damo_graph_new(1);
    damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape);
    float res[M * 5];
    for (int i = 0; i < M * 5; i++) res[i] = uniform(-1, 1);
    damo_tensor *rt = damo_tensor_wrap(DAMO_F32, 2, (int64_t[]){M, 5}, res);
    damo_node *y = damo_gelu(g, damo_qdense_op(g, in, qw, damo_param(g, "b", bt, NULL), DAMO_ACT_NONE, s1, z1), 0);
    damo_node *z = damo_add(g, damo_qdense_op(g, y, qw2, NULL, DAMO_ACT_NONE, s2, z2), damo_param(g, "r", rt, NULL));
    CHECK(damo_qdense_absorb_gelu(g, y) == 1 && damo_qdense_absorb_add(g, z) == 1);
    CHECK(damo_int8_chain(g, 1, &z) == DAMO_OK && y->dtype == DAMO_U8 && z->dtype == DAMO_F32);
    damo_graph_free(g);
    damo_tensor_free(rt);
    damo_qweight_free(qw2);
  }
  /* a residual connection's add folds into the product before it (either side, with a
   * ReLU too): the two ops' values bit for bit; not with a GELU folded in, nor when the
   * product is read elsewhere */
  for (int side = 0; side <= 1; side++) {
    float *out[2] = {NULL, NULL}, r[M * N];
    for (int i = 0; i < M * N; i++) r[i] = uniform(-3, 3);
    damo_tensor *rt = damo_tensor_wrap(DAMO_F32, 2, (int64_t[]){M, N}, r);
    for (int fold = 0; fold <= 1; fold++) {
      damo_graph *g = damo_graph_new(1);
      damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape), *res = damo_param(g, "r", rt, NULL);
      damo_node *q = damo_qdense_op(g, in, qw, side ? NULL : damo_param(g, "b", bt, NULL),
                                    side ? DAMO_ACT_RELU : DAMO_ACT_NONE, 0.0f, 0);
      damo_node *y = side ? damo_add(g, res, q) : damo_add(g, q, res);
      if (fold) CHECK(damo_qdense_absorb_add(g, y) == 1 && y->op == DAMO_OP_QDENSE && y->n_in == (side ? 2 : 3));
      out[fold] = run_graph(g, in, y, x);
      CHECK_MSG(out[fold], "%s", damo_last_error());
      damo_graph_free(g);
    }
    CHECK_MSG(out[0] && out[1] && !memcmp(out[0], out[1], sizeof(float) * M * N), "residual fold (side %d) differs",
              side);
    free(out[0]), free(out[1]);
    damo_graph *g = damo_graph_new(1);
    damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape), *res = damo_param(g, "r", rt, NULL);
    damo_node *gq = damo_gelu(g, damo_qdense_op(g, in, qw, NULL, DAMO_ACT_NONE, 0.0f, 0), 0);
    CHECK(damo_qdense_absorb_gelu(g, gq) == 1);
    damo_node *sum2 = damo_add(g, gq, res);
    CHECK(damo_qdense_absorb_add(g, sum2) == 0 && sum2->op == DAMO_OP_ADD);
    damo_node *q2 = damo_qdense_op(g, in, qw, NULL, DAMO_ACT_NONE, 0.0f, 0);
    damo_node *sum3 = damo_add(g, q2, res);
    damo_scale_by(g, q2, 2.0f); /* a second reader */
    CHECK(damo_qdense_absorb_add(g, sum3) == 0);
    damo_graph_free(g);
    damo_tensor_free(rt);
  }
  /* the product also read by an add: left as two ops */
  damo_graph *g = damo_graph_new(1);
  damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape);
  damo_node *p = damo_qdense_op(g, in, qw, NULL, DAMO_ACT_NONE, 0.0f, 0), *y = damo_gelu(g, p, 0);
  damo_node *sum = damo_add(g, y, p);
  CHECK(damo_qdense_absorb_gelu(g, y) == 0 && y->op == DAMO_OP_GELU);
  CHECK(damo_qdense_absorb_gelu(g, sum) == 0);
  damo_graph_free(g);
  damo_tensor_free(bt);
  damo_qweight_free(qw);
}

static void test_int8_ops_match_f32_on_dequantised(void) {
  for (int l = DAMO_QLAYOUT_S16; l <= DAMO_QLAYOUT_VNNI; l++) {
    check_qconv(2, 9, 7, 3, 3, 3, 5, 1, 1, 0, (damo_qlayout)l);   /* same padding */
    check_qconv(3, 10, 10, 4, 3, 3, 17, 2, 0, 0, (damo_qlayout)l); /* strided, valid */
    check_qconv(1, 28, 28, 1, 5, 5, 8, 1, 2, 0, (damo_qlayout)l);  /* one channel, 5x5 */
    check_qconv(2, 6, 6, 16, 1, 1, 9, 1, 0, 0, (damo_qlayout)l);   /* 1x1 */
    /* channels a multiple of 4: with VNNI (no AMX) the windows are read in the padded image */
    check_qconv(2, 9, 8, 8, 3, 3, 40, 1, 1, 0, (damo_qlayout)l);   /* a partial column tile */
    check_qconv(3, 14, 14, 16, 3, 3, 64, 1, 1, 0, (damo_qlayout)l); /* 16 channels, two column tiles */
    check_qconv(2, 11, 9, 12, 3, 2, 7, 2, 1, 0, (damo_qlayout)l);  /* strided, padded, 3x2 */
    check_qconv(1, 70, 1, 37, 1, 1, 23, 1, 0, 1, (damo_qlayout)l); /* qdense: 70 rows of 37 */
  }
}

/* ------------------------------------------------------------------ models */

static damo_tensor *xs, *ys, *xt, *yt;

static int load_data(void) {
  damo_tensor *x, *y;
  if (damo_dataset_load("fashion-mnist", "train", &x, &y) != DAMO_OK) return 0;
  const int64_t n = quick() ? 4000 : 10000;
  xs = damo_tensor_slice_rows(x, 0, n), ys = damo_tensor_slice_rows(y, 0, n);
  damo_tensor_free(x), damo_tensor_free(y);
  if (damo_dataset_load("fashion-mnist", "test", &x, &y) != DAMO_OK) return 0;
  xt = damo_tensor_slice_rows(x, 0, 2000), yt = damo_tensor_slice_rows(y, 0, 2000);
  damo_tensor_free(x), damo_tensor_free(y);
  const int64_t s1[4] = {xs->shape[0], 28, 28, 1}, s2[4] = {xt->shape[0], 28, 28, 1};
  return damo_tensor_reshape(xs, 4, s1) == DAMO_OK && damo_tensor_reshape(xt, 4, s2) == DAMO_OK;
}

static damo_model *trained(int cnn) {
  const int64_t in[] = {28, 28, 1};
  damo_model *m = damo_sequential_new(3, in);
  damo_model_add(m, damo_rescaling(1.0f / 255.0f, 0.0f));
  if (cnn) {
    damo_model_add(m, damo_conv2d_layer(8, 3, 3, 1, 1, DAMO_ACT_RELU));
    damo_model_add(m, damo_max_pool2d_layer(2, 2, 0));
    damo_model_add(m, damo_conv2d_layer(16, 3, 3, 2, 0, DAMO_ACT_RELU));
  }
  damo_model_add(m, damo_flatten());
  damo_model_add(m, damo_dense(64, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(10, DAMO_ACT_SOFTMAX));
  damo_model_build(m, 3);
  damo_compile_options c = {.optimizer = damo_adam(2e-3f), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE,
                            .metrics = DAMO_METRIC_ACCURACY};
  damo_model_compile(m, &c);
  damo_fit_options f = {.epochs = 2, .batch_size = 64, .seed = 3, .verbose = 0};
  if (damo_model_fit(m, xs, ys, &f, NULL) != DAMO_OK) {
    damo_model_free(m);
    return NULL;
  }
  return m;
}

static long long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void check_quantised_model(int cnn, damo_calibration method) {
  damo_model *m = trained(cnn);
  CHECK_MSG(m != NULL, "training: %s", damo_last_error());
  if (!m) return;
  const char *f32dir = tmp_path(cnn ? "cnn_f32" : "mlp_f32"), *i8dir = tmp_path(cnn ? "cnn_i8" : "mlp_i8");
  CHECK(damo_model_save(m, f32dir) == DAMO_OK);
  float loss32, acc32, loss8, acc8;
  damo_tensor *p32 = NULL, *p8 = NULL, *p8b = NULL;
  CHECK(damo_model_evaluate(m, xt, yt, 256, &loss32, &acc32) == DAMO_OK);
  CHECK(damo_model_predict(m, xt, 256, &p32) == DAMO_OK);
  damo_quantize_options o = {.method = method, .calibration_examples = 1024};
  CHECK_MSG(damo_model_quantize(m, xs, &o) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_model_is_quantized(m));
  CHECK(damo_model_evaluate(m, xt, yt, 256, &loss8, &acc8) == DAMO_OK);
  CHECK(damo_model_predict(m, xt, 256, &p8) == DAMO_OK);
  /* Every dense and conv2d layer runs int8; the outputs move, but little. */
  int int8 = 0;
  const char *name, *why;
  for (int i = 0; damo_model_layer_precision(m, i, &name, &why) >= 0; i++) int8 += damo_model_layer_precision(m, i, NULL, NULL);
  CHECK(int8 == (cnn ? 4 : 2));
  double moved = 0, worst = 0;
  for (int64_t i = 0; p32 && p8 && i < damo_tensor_numel(p8); i++) {
    const double d = fabs((double)damo_tensor_f32(p8)[i] - damo_tensor_f32(p32)[i]);
    moved += d, worst = d > worst ? d : worst;
  }
  CHECK_MSG(moved > 0, "int8 predictions equal the f32 ones: the int8 ops did not run");
  CHECK_MSG(worst < 0.25, "a probability moved by %.3f", worst);
  CHECK_MSG(fabsf(acc8 - acc32) <= 0.015f, "accuracy f32 %.4f int8 %.4f", acc32, acc8);
  printf("  %s %s: accuracy f32 %.4f int8 %.4f, loss %.4f -> %.4f\n", cnn ? "cnn" : "mlp",
         method == DAMO_CALIB_MINMAX ? "minmax" : method == DAMO_CALIB_PERCENTILE ? "percentile" : "histogram", acc32,
         acc8, loss32, loss8);

  /* Saved: I8 kernels with their scales; a quarter of the f32 file; the same predictions. */
  CHECK(damo_model_save(m, i8dir) == DAMO_OK);
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", i8dir);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  const damo_tensor *k = d ? damo_tensor_dict_get(d, "dense_1.kernel") : NULL;
  CHECK(k && k->dtype == DAMO_I8);
  CHECK(d && damo_tensor_dict_get(d, "dense_1.kernel_scale") && damo_tensor_dict_get(d, "dense_1.input_zero_point"));
  damo_tensor_dict_free(d);
  char f32path[600];
  snprintf(f32path, sizeof f32path, "%s/model.safetensors", f32dir);
  const double ratio = (double)file_size(path) / (double)file_size(f32path);
  CHECK_MSG(ratio > 0.2 && ratio <= 0.30, "int8 file is %.1f%% of the f32 one", 100 * ratio);
  damo_model *back = NULL;
  CHECK_MSG(damo_model_load(i8dir, &back) == DAMO_OK, "%s", damo_last_error());
  if (back) {
    CHECK(damo_model_is_quantized(back));
    CHECK(damo_model_predict(back, xt, 256, &p8b) == DAMO_OK);
    CHECK(p8 && p8b && !memcmp(p8->data, p8b->data, damo_tensor_nbytes(p8)));
    /* Its int8 layers hand each other uint8 (damo_int8_chain); handing f32 instead gives the
     * same predictions, bit for bit. */
    damo_model *unlinked = NULL;
    damo_tensor *p8c = NULL;
    setenv("DAMO_INT8_CHAIN", "0", 1);
    CHECK(damo_model_load(i8dir, &unlinked) == DAMO_OK && damo_model_predict(unlinked, xt, 256, &p8c) == DAMO_OK);
    unsetenv("DAMO_INT8_CHAIN");
    CHECK(p8 && p8c && !memcmp(p8->data, p8c->data, damo_tensor_nbytes(p8)));
    damo_tensor_free(p8c);
    damo_model_free(unlinked);
    /* A quantised model does not train, and is not quantised twice. */
    damo_fit_options f = {.epochs = 1, .batch_size = 64, .verbose = 0};
    CHECK(damo_model_fit(back, xs, ys, &f, NULL) == DAMO_ERR_STATE);
    CHECK(strstr(damo_last_error(), "int8") != NULL);
    CHECK(damo_model_quantize(back, xs, &o) == DAMO_ERR_STATE);
    damo_model_free(back);
  }
  damo_tensor_free(p32), damo_tensor_free(p8), damo_tensor_free(p8b);
  damo_model_free(m);
}

static void test_quantised_mlp(void) {
  check_quantised_model(0, DAMO_CALIB_HISTOGRAM);
  if (!quick()) check_quantised_model(0, DAMO_CALIB_MINMAX);
}

static void test_quantised_cnn(void) { check_quantised_model(1, quick() ? DAMO_CALIB_PERCENTILE : DAMO_CALIB_HISTOGRAM); }

static void test_dynamic_activations(void) {
  damo_model *m = trained(0);
  if (!m) return;
  float l32, a32, l8, a8;
  CHECK(damo_model_evaluate(m, xt, yt, 256, &l32, &a32) == DAMO_OK);
  damo_quantize_options o = {.dynamic = 1};
  CHECK(damo_model_quantize(m, NULL, &o) == DAMO_OK);
  CHECK(damo_model_evaluate(m, xt, yt, 256, &l8, &a8) == DAMO_OK);
  CHECK_MSG(fabsf(a8 - a32) <= 0.015f, "dynamic: accuracy f32 %.4f int8 %.4f", a32, a8);
  CHECK(damo_model_save(m, tmp_path("dyn")) == DAMO_OK);
  damo_model *back = NULL;
  CHECK(damo_model_load(tmp_path("dyn"), &back) == DAMO_OK);
  float lb, ab;
  CHECK(back && damo_model_evaluate(back, xt, yt, 256, &lb, &ab) == DAMO_OK && ab == a8);
  damo_model_free(back);
  damo_model_free(m);
}

/* ------------------------------------------------------------------ bad input */

static char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc(*n + 1);
  if (b && fread(b, 1, *n, f) != *n) *n = 0;
  fclose(f);
  if (b) b[*n] = 0;
  return b;
}

static void test_bad_input(void) {
  damo_model *m = trained(0);
  if (!m) return;
  /* Calibration data of the wrong shape, or with NaN: refused, the model left f32. */
  const int64_t bad_shape[3] = {100, 28, 27};
  damo_tensor *bad = damo_tensor_new(DAMO_F32, 3, bad_shape);
  damo_quantize_options o = {0};
  CHECK(damo_model_quantize(m, bad, &o) != DAMO_OK);
  CHECK(strstr(damo_last_error(), "calibration") != NULL);
  CHECK(!damo_model_is_quantized(m));
  damo_tensor *rows = damo_tensor_slice_rows(xs, 0, 128), *nan = damo_tensor_to_f32(rows);
  damo_tensor_free(rows);
  damo_tensor_f32(nan)[3 * 784 + 77] = NAN;
  CHECK(damo_model_quantize(m, nan, &o) != DAMO_OK && !damo_model_is_quantized(m));
  CHECK_MSG(strstr(damo_last_error(), "calibration") && strstr(damo_last_error(), "NaN at"), "%s", damo_last_error());
  o.percentile = 30, o.method = DAMO_CALIB_PERCENTILE;
  CHECK(damo_model_quantize(m, xs, &o) == DAMO_ERR_INVALID_ARG && !damo_model_is_quantized(m));
  o = (damo_quantize_options){0};
  CHECK(damo_model_quantize(m, NULL, &o) == DAMO_ERR_INVALID_ARG); /* static needs data */
  CHECK(damo_model_quantize(m, xs, &o) == DAMO_OK);
  const char *dir = tmp_path("bad_i8");
  CHECK(damo_model_save(m, dir) == DAMO_OK);
  damo_tensor_free(bad), damo_tensor_free(nan);
  damo_model_free(m);

  /* A corrupted scale, a kernel value outside symmetric int8, a layer list naming no layer. */
  char path[600], cfg[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  snprintf(cfg, sizeof cfg, "%s/config.json", dir);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  if (!d) return;
  damo_tensor *scale = damo_tensor_dict_get(d, "dense_2.kernel_scale");
  damo_tensor *kernel = damo_tensor_dict_get(d, "dense_2.kernel");
  CHECK(scale && kernel);
  if (!scale || !kernel) {
    damo_tensor_dict_free(d);
    return;
  }
  const char *broken = tmp_path("broken");
  mkdir(broken, 0755);
  char bpath[600], bcfg[600];
  snprintf(bpath, sizeof bpath, "%s/model.safetensors", broken);
  snprintf(bcfg, sizeof bcfg, "%s/config.json", broken);
  size_t n = 0;
  char *text = read_all(cfg, &n);
  write_bytes(bcfg, text, n);
  damo_model *back = NULL;
  damo_tensor_f32(scale)[3] = -1.0f;
  CHECK(damo_safetensors_save(bpath, d, NULL, 0) == DAMO_OK);
  CHECK(damo_model_load(broken, &back) == DAMO_ERR_FORMAT && !back);
  CHECK(strstr(damo_last_error(), "kernel scale 3") && strstr(damo_last_error(), "dense_2"));
  damo_tensor_f32(scale)[3] = 0.01f;
  ((int8_t *)kernel->data)[5] = -128;
  CHECK(damo_safetensors_save(bpath, d, NULL, 0) == DAMO_OK);
  CHECK(damo_model_load(broken, &back) == DAMO_ERR_FORMAT && strstr(damo_last_error(), "-128"));
  ((int8_t *)kernel->data)[5] = 3;
  CHECK(damo_safetensors_save(bpath, d, NULL, 0) == DAMO_OK);
  CHECK(damo_model_load(broken, &back) == DAMO_OK);
  damo_model_free(back);
  back = NULL;
  char *q = text ? strstr(text, "\"quantization\"") : NULL, *named = q ? strstr(q, "\"dense_2\"") : NULL;
  if (named) {
    memcpy(named, "\"dense_9\"", 9);
    write_bytes(bcfg, text, n);
    CHECK(damo_model_load(broken, &back) == DAMO_ERR_FORMAT && strstr(damo_last_error(), "dense_9"));
  }
  CHECK(!back);
  free(text);
  damo_tensor_dict_free(d);
}

int main(void) {
  tmpdir_template("quantize");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_int8_product);
  RUN(test_int8_ops_match_f32_on_dequantised);
  RUN(test_gelu_folds_into_qdense);
  if (!load_data()) {
    fprintf(stderr, "fashion-mnist is missing: sh scripts/setup.sh\n");
    return 1;
  }
  RUN(test_quantised_mlp);
  RUN(test_quantised_cnn);
  RUN(test_dynamic_activations);
  RUN(test_bad_input);
  damo_tensor_free(xs), damo_tensor_free(ys), damo_tensor_free(xt), damo_tensor_free(yt);
  remove_tmpdir();
  return test_summary("quantize");
}
