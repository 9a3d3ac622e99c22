/* test_int8_chain.c - int8 layers handing each other their outputs (damo_int8_chain): the
 * uint8 chains of calibrated layers (through max pooling, reshapes and dropout; multiplied in
 * place where the rows are the kernel's own) and the dynamic hand-over, whose reader
 * quantises with the range its producer recorded. Each is compared bit for bit with the
 * unlinked graph's f32 hand-overs; a layer norm's recorded range too. Split from
 * test_quantize.c. */
#include "graph/graph.h" /* the nodes' order, after the rewrite */
#include "harness.h"
#include "ops/ops.h"

#include <damo.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t lcg = 777;
static uint32_t next_u32(void) {
  lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(lcg >> 33);
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(next_u32() % 100000) / 100000.0f; }

/* Random int8 weights (K x N), scales in [0.002, 0.02), packed in the layout. */
static damo_qweight *random_qweight(int64_t K, int64_t N, damo_qlayout layout) {
  int8_t *q = malloc((size_t)(K * N));
  float *scale = malloc((size_t)N * sizeof *scale);
  for (int64_t j = 0; j < K * N; j++) q[j] = (int8_t)((int)(next_u32() % 255) - 127);
  for (int64_t j = 0; j < N; j++) scale[j] = uniform(0.002f, 0.02f);
  damo_qweight *w = damo_qweight_pack(q, K, N, scale, layout);
  free(q), free(scale);
  return w;
}

/* The output of a one-input graph on x (malloc'd), or NULL when it does not compile or run. */
static float *forward_once(damo_graph *g, damo_node *in, damo_node *out, const float *x) {
  if (damo_graph_compile(g, NULL, 1, &out) != DAMO_OK || damo_graph_bind(g, in, x) != DAMO_OK ||
      damo_graph_forward(g, 0) != DAMO_OK)
    return NULL;
  const size_t bytes = sizeof(float) * (size_t)damo_node_numel(out);
  float *y = malloc(bytes);
  if (y) memcpy(y, damo_node_data(out), bytes);
  return y;
}

/* An int8 chain, qconv (relu) -> max pool -> qconv (relu) -> reshape -> dropout -> qdense,
 * each calibrated. Linked by damo_int8_chain, the activations between them are uint8 and the
 * output is bit for bit the unlinked graph's: max pooling commutes with the monotone
 * quantisation, and the epilogue rounds as the next layer's quantiser does. */
typedef struct chain_net {
  damo_qweight *w[3];
  float *bias[3], s[3];
  int z[3];
} chain_net;

static float *run_chain(const chain_net *c, damo_tensor *const *bt, const float *x, int link) {
  damo_graph *g = damo_graph_new(1);
  const int64_t xshape[4] = {2, 10, 10, 3}, flat[2] = {2, 5 * 5 * 16};
  damo_node *in = damo_input(g, "x", DAMO_F32, 4, xshape);
  damo_node *b[3];
  for (int i = 0; i < 3; i++) b[i] = damo_param(g, "b", bt[i], NULL);
  damo_node *h1 = damo_qconv2d_op(g, in, c->w[0], 3, 3, b[0], DAMO_ACT_RELU, 1, 1, 1, 1, 1, 1, c->s[0], c->z[0]);
  damo_node *p1 = damo_max_pool2d(g, h1, 2, 2, 2, 2, 0, 0, 0, 0);
  damo_node *h2 = damo_qconv2d_op(g, p1, c->w[1], 3, 3, b[1], DAMO_ACT_RELU, 1, 1, 1, 1, 1, 1, c->s[1], c->z[1]);
  damo_node *d = damo_dropout(g, damo_reshape(g, h2, 2, flat), 0.5f);
  damo_node *out = damo_qdense_op(g, d, c->w[2], b[2], DAMO_ACT_NONE, c->s[2], c->z[2]);
  if (link) {
    CHECK_MSG(damo_int8_chain(g, 1, &out) == DAMO_OK, "%s", damo_last_error());
    CHECK(h1->dtype == DAMO_U8 && p1->dtype == DAMO_U8 && h2->dtype == DAMO_U8 && out->dtype == DAMO_F32);
    CHECK(out->in[0] != d); /* the dropout is stepped over */
  }
  float *y = forward_once(g, in, out, x);
  CHECK_MSG(y != NULL, "chain graph (link %d): %s", link, damo_last_error());
  damo_graph_free(g);
  return y;
}

static void test_int8_chain(void) {
  const int64_t K[3] = {27, 72, 400}, N[3] = {8, 16, 10};
  for (int l = DAMO_QLAYOUT_S16; l <= DAMO_QLAYOUT_VNNI; l++) {
    chain_net c;
    damo_tensor *bt[3];
    for (int i = 0; i < 3; i++) {
      int8_t *q = malloc((size_t)(K[i] * N[i]));
      float *scale = malloc((size_t)N[i] * sizeof *scale);
      c.bias[i] = malloc((size_t)N[i] * sizeof(float));
      for (int64_t j = 0; j < K[i] * N[i]; j++) q[j] = (int8_t)((int)(next_u32() % 255) - 127);
      for (int64_t n = 0; n < N[i]; n++) scale[n] = uniform(0.002f, 0.01f), c.bias[i][n] = uniform(-0.3f, 0.3f);
      c.w[i] = damo_qweight_pack(q, K[i], N[i], scale, (damo_qlayout)l);
      const int64_t bshape[1] = {N[i]};
      bt[i] = damo_tensor_wrap(DAMO_F32, 1, bshape, c.bias[i]);
      free(q), free(scale);
    }
    /* the ranges: the input's, then narrow enough that some activations clamp at 255 */
    damo_quant_params(-1, 2, &c.s[0], &c.z[0]);
    damo_quant_params(-0.5f, 1.5f, &c.s[1], &c.z[1]);
    damo_quant_params(-0.5f, 1.0f, &c.s[2], &c.z[2]);
    float x[2 * 10 * 10 * 3];
    for (int i = 0; i < 600; i++) x[i] = uniform(-1, 2);
    float *plain = run_chain(&c, bt, x, 0), *linked = run_chain(&c, bt, x, 1);
    CHECK_MSG(plain && linked && memcmp(plain, linked, 20 * sizeof(float)) == 0, "layout %d: the chain's output differs",
              l);
    int moved = 0;
    for (int i = 1; plain && i < 20; i++) moved += plain[i] != plain[0];
    CHECK(moved > 0); /* a real output, not a constant */
    free(plain), free(linked);
    for (int i = 0; i < 3; i++) damo_qweight_free(c.w[i]), damo_tensor_free(bt[i]), free(c.bias[i]);
  }
}

/* A chained input in the kernels' own row form (VNNI, K a multiple of 64) is multiplied where
 * it lies, its rows past the last 48-row group staged: three products, the first's GELU and
 * the last's residual add folded, the middle one handing the last uint8, over 101 rows (two
 * groups and 5 more) give the f32 hand-overs' values bit for bit. */
static void test_chain_in_place(void) {
  enum { M = 101, K0 = 64, K1 = 128, K2 = 64, N = 5 };
  const int64_t K[3] = {K0, K1, K2}, Nout[3] = {K1, K2, N};
  damo_qweight *w[3];
  float *bias[3], s[3];
  int z[3];
  for (int i = 0; i < 3; i++) {
    int8_t *q = malloc((size_t)(K[i] * Nout[i]));
    float *scale = malloc((size_t)Nout[i] * sizeof *scale);
    bias[i] = malloc((size_t)Nout[i] * sizeof(float));
    for (int64_t j = 0; j < K[i] * Nout[i]; j++) q[j] = (int8_t)((int)(next_u32() % 255) - 127);
    for (int64_t n = 0; n < Nout[i]; n++) scale[n] = uniform(0.002f, 0.02f), bias[i][n] = uniform(-0.3f, 0.3f);
    w[i] = damo_qweight_pack(q, K[i], Nout[i], scale, DAMO_QLAYOUT_VNNI);
    free(q), free(scale);
  }
  damo_quant_params(-1, 2, &s[0], &z[0]);
  damo_quant_params(-0.2f, 1.5f, &s[1], &z[1]); /* narrow: some GELU outputs clamp at 255 */
  damo_quant_params(-1.0f, 1.0f, &s[2], &z[2]);
  float *x = malloc(sizeof(float) * M * K0), *r = malloc(sizeof(float) * M * N), *out[2] = {NULL, NULL};
  for (int i = 0; i < M * K0; i++) x[i] = uniform(-1, 2);
  for (int i = 0; i < M * N; i++) r[i] = uniform(-1, 1);
  const int64_t xshape[2] = {M, K0}, rshape[2] = {M, N};
  damo_tensor *rt = damo_tensor_wrap(DAMO_F32, 2, rshape, r), *bt[3];
  for (int i = 0; i < 3; i++) bt[i] = damo_tensor_wrap(DAMO_F32, 1, &Nout[i], bias[i]);
  for (int link = 0; link <= 1; link++) {
    damo_graph *g = damo_graph_new(1);
    damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape), *b[3];
    for (int i = 0; i < 3; i++) b[i] = damo_param(g, "b", bt[i], NULL);
    damo_node *y1 = damo_gelu(g, damo_qdense_op(g, in, w[0], b[0], DAMO_ACT_NONE, s[0], z[0]), 0);
    damo_node *y2 = damo_qdense_op(g, y1, w[1], b[1], DAMO_ACT_NONE, s[1], z[1]);
    damo_node *y3 = damo_add(g, damo_qdense_op(g, y2, w[2], b[2], DAMO_ACT_NONE, s[2], z[2]), damo_param(g, "r", rt, NULL));
    CHECK(damo_qdense_absorb_gelu(g, y1) == 1 && damo_qdense_absorb_add(g, y3) == 1);
    if (link)
      CHECK(damo_int8_chain(g, 1, &y3) == DAMO_OK && y1->dtype == DAMO_U8 && y2->dtype == DAMO_U8 &&
            y3->dtype == DAMO_F32);
    out[link] = forward_once(g, in, y3, x);
    CHECK_MSG(out[link], "%s", damo_last_error());
    damo_graph_free(g);
  }
  CHECK_MSG(out[0] && out[1] && !memcmp(out[0], out[1], sizeof(float) * M * N), "the in-place chain's output differs");
  int moved = 0;
  for (int i = 1; out[0] && i < M * N; i++) moved += out[0][i] != out[0][0];
  CHECK(moved > 0);
  free(out[0]), free(out[1]), free(x), free(r);
  damo_tensor_free(rt);
  for (int i = 0; i < 3; i++) damo_qweight_free(w[i]), damo_tensor_free(bt[i]), free(bias[i]);
}

/* Dynamic int8: a qdense read only by a dynamic qdense records its f32 output's range in the
 * epilogue (damo_int8_chain) and the reader quantises with it instead of a pass of its own:
 * GELU folded into the first product, a residual into the second, on every SIMD path and
 * layout, 101 rows (tiles that end inside M). The output equals the unlinked graph's bit for
 * bit, and the recorded range is the first product's output's true range (0 included); one
 * row's inputs are 8 times the others', so the maximum lies there: the last row of a 12- or
 * 16-row tile, or M's last. */
static void test_dynamic_range_hand_over(void) {
  enum { M = 101, K0 = 40, K1 = 72, N = 6 };
  const damo_simd_level dispatched = damo_simd_level_get();
  float x[M * K0], r[M * N];
  for (int i = 0; i < M * N; i++) r[i] = uniform(-1, 1);
  static const int hot_rows[3] = {11, 15, M - 1};
  const int64_t xshape[2] = {M, K0}, rshape[2] = {M, N}, n1 = K1, n2 = N;
  float b1[K1], b2[N];
  for (int i = 0; i < K1; i++) b1[i] = uniform(-0.3f, 0.3f);
  for (int i = 0; i < N; i++) b2[i] = uniform(-0.3f, 0.3f);
  damo_tensor *rt = damo_tensor_wrap(DAMO_F32, 2, rshape, r), *bt1 = damo_tensor_wrap(DAMO_F32, 1, &n1, b1);
  damo_tensor *bt2 = damo_tensor_wrap(DAMO_F32, 1, &n2, b2);
  for (int hot = 0; hot < 3; hot++) {
    for (int i = 0; i < M * K0; i++) x[i] = uniform(-1, 2) * (i / K0 == hot_rows[hot] ? 8.0f : 1.0f);
    for (int l = DAMO_QLAYOUT_S16; l <= DAMO_QLAYOUT_VNNI; l++)
      for (int level = DAMO_SIMD_SCALAR; level <= (int)dispatched; level++) {
        damo_simd_level_force((damo_simd_level)level);
        damo_qweight *w[2] = {random_qweight(K0, K1, (damo_qlayout)l), random_qweight(K1, N, (damo_qlayout)l)};
        float *out[2] = {NULL, NULL}, range[2] = {0, 0}, *hidden = NULL;
        for (int link = 0; link <= 2; link++) { /* 2: the first product's output alone */
          damo_graph *g = damo_graph_new(1);
          damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape);
          damo_node *b1n = damo_param(g, "b1", bt1, NULL);
          damo_node *y1 = damo_gelu(g, damo_qdense_op(g, in, w[0], b1n, DAMO_ACT_NONE, 0, 0), 0);
          CHECK(damo_qdense_absorb_gelu(g, y1) == 1);
          if (link == 2) {
            hidden = forward_once(g, in, y1, x);
            damo_graph_free(g);
            break;
          }
          damo_node *y2 = damo_add(g, damo_qdense_op(g, y1, w[1], damo_param(g, "b2", bt2, NULL), DAMO_ACT_NONE, 0, 0),
                                   damo_param(g, "r", rt, NULL));
          CHECK(damo_qdense_absorb_add(g, y2) == 1);
          if (link) CHECK(damo_int8_chain(g, 1, &y2) == DAMO_OK && y1->dtype == DAMO_F32);
          out[link] = forward_once(g, in, y2, x);
          CHECK_MSG(out[link], "%s", damo_last_error());
          if (link) range[0] = y1->out_range[0], range[1] = y1->out_range[1];
          else CHECK(y1->out_range[0] == 0 && y1->out_range[1] == 0); /* nothing recorded unlinked */
          damo_graph_free(g);
        }
        CHECK_MSG(out[0] && out[1] && !memcmp(out[0], out[1], sizeof(float) * M * N),
                  "layout %d, SIMD level %d: the output with the recorded range differs", l, level);
        float lo = 0, hi = 0;
        for (int i = 0; hidden && i < M * K1; i++)
          lo = hidden[i] < lo ? hidden[i] : lo, hi = hidden[i] > hi ? hidden[i] : hi;
        CHECK_MSG(hidden && lo < 0 && hi > 0 && range[0] == lo && range[1] == hi,
                  "layout %d, SIMD level %d, row %d: recorded range [%g, %g], the output's [%g, %g]", l, level,
                  hot_rows[hot], (double)range[0], (double)range[1], (double)lo, (double)hi);
        free(out[0]), free(out[1]), free(hidden);
        damo_qweight_free(w[0]), damo_qweight_free(w[1]);
      }
  }
  damo_simd_level_force(dispatched);
  damo_tensor_free(rt), damo_tensor_free(bt1), damo_tensor_free(bt2);
}

/* Three qdense reading one input (BERT's query, key and value) quantise it once: damo_int8_chain
 * gives them one quantize_u8, placed right after the input, dynamic or with their common
 * calibrated scale; readers with different scales keep their own. 101 rows: VNNI readers
 * multiply its rows in place, then stage the 5 past the last 48-row group. The sum of the
 * three outputs equals the unshared graph's bit for bit. */
static void test_shared_input_quantisation(void) {
  enum { M = 101, K = 64, N = 24 };
  float x[M * K];
  for (int i = 0; i < M * K; i++) x[i] = uniform(-1, 2);
  const int64_t xshape[2] = {M, K};
  for (int l = DAMO_QLAYOUT_S16; l <= DAMO_QLAYOUT_VNNI; l++)
    for (int form = 0; form < 3; form++) { /* dynamic, static with one scale, static with two */
      damo_qweight *w[3];
      for (int i = 0; i < 3; i++) w[i] = random_qweight(K, N, (damo_qlayout)l);
      float s0, s1;
      int z0, z1;
      damo_quant_params(-1, 2, &s0, &z0);
      damo_quant_params(-1.5f, 2, &s1, &z1);
      float *out[2] = {NULL, NULL};
      int shared = 0;
      for (int link = 0; link <= 1; link++) {
        damo_graph *g = damo_graph_new(1);
        damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape), *y[3];
        for (int i = 0; i < 3; i++) {
          const int other = form == 2 && i == 2;
          y[i] = damo_qdense_op(g, in, w[i], NULL, DAMO_ACT_NONE, form ? (other ? s1 : s0) : 0, other ? z1 : z0);
        }
        damo_node *sum = damo_add(g, damo_add(g, y[0], y[1]), y[2]);
        if (link) CHECK_MSG(damo_int8_chain(g, 1, &sum) == DAMO_OK, "%s", damo_last_error());
        for (int i = 0; link && i < g->n_nodes; i++) {
          const damo_node *n = g->nodes[i];
          if (n->op != DAMO_OP_QUANTIZE_U8) continue;
          shared++;
          CHECK(n->in[0] == in && i == in->id + 1 && n->id == i); /* right after its input */
          for (int k = 0; k < 3; k++) CHECK(y[k]->in[0] == n && y[k]->id > n->id);
        }
        out[link] = forward_once(g, in, sum, x);
        CHECK_MSG(out[link], "%s", damo_last_error());
        damo_graph_free(g);
      }
      CHECK_MSG(shared == (form < 2), "layout %d form %d: %d quantize_u8 nodes", l, form, shared);
      CHECK_MSG(out[0] && out[1] && !memcmp(out[0], out[1], sizeof(float) * M * N),
                "layout %d form %d: the shared quantisation's output differs", l, form);
      int moved = 0;
      for (int i = 1; out[0] && i < M * N; i++) moved += out[0][i] != out[0][0];
      CHECK(moved > 0);
      free(out[0]), free(out[1]);
      for (int i = 0; i < 3; i++) damo_qweight_free(w[i]);
    }
}

/* A layer norm read by dynamic int8 products records its output's range row by row (one
 * reader, or two through their shared quantize_u8), and they quantise with it: the same
 * output bit for bit as the unlinked graph, and the recorded range is the norm's output's. */
static void test_layer_norm_range(void) {
  enum { M = 77, K = 64, N = 16 };
  float x[M * K], gamma[K], beta[K];
  for (int i = 0; i < M * K; i++) x[i] = uniform(-2, 3);
  x[40 * K + 7] = 60.0f; /* one spike: row 40's normalised value there is the output's maximum */
  for (int i = 0; i < K; i++) gamma[i] = uniform(0.5f, 1.5f), beta[i] = uniform(-0.2f, 0.2f);
  const int64_t xshape[2] = {M, K}, kshape[1] = {K};
  damo_tensor *gt = damo_tensor_wrap(DAMO_F32, 1, kshape, gamma), *bt = damo_tensor_wrap(DAMO_F32, 1, kshape, beta);
  damo_qweight *w[2] = {random_qweight(K, N, DAMO_QLAYOUT_VNNI), random_qweight(K, N, DAMO_QLAYOUT_VNNI)};
  for (int readers = 1; readers <= 2; readers++) {
    float *out[3] = {NULL, NULL, NULL}, range[2] = {0, 0};
    int recorded = 0;
    for (int link = 0; link <= 2; link++) { /* 2: the norm's output alone */
      damo_graph *g = damo_graph_new(1);
      damo_node *in = damo_input(g, "x", DAMO_F32, 2, xshape);
      damo_node *ln = damo_layer_norm(g, in, damo_param(g, "gamma", gt, NULL), damo_param(g, "beta", bt, NULL), 1e-5f);
      damo_node *y = damo_qdense_op(g, ln, w[0], NULL, DAMO_ACT_NONE, 0, 0);
      if (readers == 2) y = damo_add(g, y, damo_qdense_op(g, ln, w[1], NULL, DAMO_ACT_NONE, 0, 0));
      if (link == 1) CHECK_MSG(damo_int8_chain(g, 1, &y) == DAMO_OK, "%s", damo_last_error());
      out[link] = forward_once(g, in, link == 2 ? ln : y, x);
      CHECK_MSG(out[link], "%s", damo_last_error());
      if (link == 1) recorded = ln->records_range, range[0] = ln->out_range[0], range[1] = ln->out_range[1];
      damo_graph_free(g);
    }
    CHECK_MSG(out[0] && out[1] && !memcmp(out[0], out[1], sizeof(float) * M * N),
              "%d reader(s): the output with the norm's recorded range differs", readers);
    float lo = 0, hi = 0;
    for (int i = 0; out[2] && i < M * K; i++)
      lo = out[2][i] < lo ? out[2][i] : lo, hi = out[2][i] > hi ? out[2][i] : hi;
    CHECK_MSG(recorded && range[0] == lo && range[1] == hi && lo < 0 && hi > 0,
              "%d reader(s): recorded %d, range [%g, %g], the norm's output [%g, %g]", readers, recorded,
              (double)range[0], (double)range[1], (double)lo, (double)hi);
    free(out[0]), free(out[1]), free(out[2]);
  }
  damo_qweight_free(w[0]), damo_qweight_free(w[1]);
  damo_tensor_free(gt), damo_tensor_free(bt);
}

int main(void) {
  RUN(test_int8_chain);
  RUN(test_chain_in_place);
  RUN(test_dynamic_range_hand_over);
  RUN(test_shared_input_quantisation);
  RUN(test_layer_norm_range);
  return test_summary("int8_chain");
}
