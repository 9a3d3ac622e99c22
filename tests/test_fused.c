/* test_fused.c - every fused op equals the composition of primitive ops it replaces, in
 * forward and in every gradient: dense = matmul -> add(bias) -> activation (also with the
 * weight stored transposed, damo_linear_op), and
 * conv2d_ex = conv2d -> add(bias) -> activation. */
#include "harness.h"

#include <damo.h>
#include <stdlib.h>

static damo_tensor *random_tensor(int ndim, const int64_t *shape, damo_rng *r, float scale) {
  damo_tensor *t = damo_tensor_new(DAMO_F32, ndim, shape);
  for (int64_t i = 0; i < damo_tensor_numel(t); i++) damo_tensor_f32(t)[i] = (damo_rng_uniform(r) * 2 - 1) * scale;
  return t;
}

typedef struct run_result {
  damo_tensor *y, *dx, *dw, *db;
} run_result;

/* Builds y = act(x W + b) fused or composed, loss = sum(y * dout); returns y and grads. */
static run_result run(int fused, damo_activation act, int use_bias, int batched, int64_t B, int64_t K, int64_t N,
                      uint64_t seed) {
  damo_rng r;
  damo_rng_seed(&r, seed);
  int64_t xs3[3] = {2, B, K}, xs2[2] = {B, K}, ws[2] = {K, N}, bs[1] = {N};
  int xnd = batched ? 3 : 2;
  const int64_t *xs = batched ? xs3 : xs2;
  damo_tensor *x = random_tensor(xnd, xs, &r, 1.0f), *w = random_tensor(2, ws, &r, 0.5f), *b = random_tensor(1, bs, &r, 0.5f);
  int64_t ys3[3] = {2, B, N}, ys2[2] = {B, N};
  damo_tensor *dout = random_tensor(xnd, batched ? ys3 : ys2, &r, 1.0f);
  run_result res = {NULL, damo_tensor_new(DAMO_F32, xnd, xs), damo_tensor_new(DAMO_F32, 2, ws), damo_tensor_new(DAMO_F32, 1, bs)};
  damo_graph *g = damo_graph_new(1);
  /* fused 2: damo_linear_op with the same weights stored (N, K), as torch.nn.Linear does. */
  int64_t wts[2] = {N, K};
  damo_tensor *wt = damo_tensor_new(DAMO_F32, 2, wts), *gwt = damo_tensor_new(DAMO_F32, 2, wts);
  for (int64_t k = 0; k < K; k++)
    for (int64_t j = 0; j < N; j++) damo_tensor_f32(wt)[j * K + k] = damo_tensor_f32(w)[k * N + j];
  damo_node *xn = damo_param(g, "x", x, res.dx);
  damo_node *wn = fused == 2 ? damo_param(g, "w", wt, gwt) : damo_param(g, "w", w, res.dw);
  damo_node *bn = use_bias ? damo_param(g, "b", b, res.db) : NULL, *y;
  if (fused == 2) {
    y = damo_linear_op(g, xn, wn, bn, act);
  } else if (fused) {
    y = damo_dense_op(g, xn, wn, bn, act);
  } else {
    y = damo_matmul(g, xn, wn, 0, 0);
    if (bn) y = damo_add(g, y, bn);
    if (act == DAMO_ACT_RELU) y = damo_relu(g, y);
    if (act == DAMO_ACT_SIGMOID) y = damo_sigmoid(g, y);
    if (act == DAMO_ACT_TANH) y = damo_tanh(g, y);
  }
  damo_node *loss = damo_sum(g, damo_mul(g, y, damo_constant(g, dout)), DAMO_ALL_AXES, 0);
  CHECK(damo_graph_compile(g, loss, 1, &y) == DAMO_OK);
  CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
  res.y = damo_tensor_new(DAMO_F32, damo_node_ndim(y), damo_node_shape(y));
  memcpy(res.y->data, damo_node_data(y), damo_tensor_nbytes(res.y));
  if (fused == 2)
    for (int64_t k = 0; k < K; k++)
      for (int64_t j = 0; j < N; j++) damo_tensor_f32(res.dw)[k * N + j] = damo_tensor_f32(gwt)[j * K + k];
  damo_tensor_free(wt);
  damo_tensor_free(gwt);
  damo_graph_free(g);
  damo_tensor_free(x);
  damo_tensor_free(w);
  damo_tensor_free(b);
  damo_tensor_free(dout);
  return res;
}

static void free_result(run_result *r) {
  damo_tensor_free(r->y);
  damo_tensor_free(r->dx);
  damo_tensor_free(r->dw);
  damo_tensor_free(r->db);
}

static void test_dense_equals_composition(void) {
  const damo_activation acts[] = {DAMO_ACT_NONE, DAMO_ACT_RELU, DAMO_ACT_SIGMOID, DAMO_ACT_TANH};
  const int64_t shapes[][3] = {{1, 1, 1}, {5, 7, 3}, {64, 96, 33}, {300, 17, 129}, {3, 784, 256}};
  for (size_t a = 0; a < 4; a++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      for (int bias = 0; bias < 2; bias++)
        for (int batched = 0; batched < 2; batched++) {
          int64_t B = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
          run_result c = run(0, acts[a], bias, batched, B, K, N, 10 + s);
          for (int fused = 1; fused <= 2; fused++) { /* dense (K, N) and linear (N, K) */
            run_result f = run(fused, acts[a], bias, batched, B, K, N, 10 + s);
            CHECK_CLOSE(damo_tensor_f32(f.y), damo_tensor_f32(c.y), damo_tensor_numel(c.y), 1e-5, 1e-5);
            CHECK_CLOSE(damo_tensor_f32(f.dx), damo_tensor_f32(c.dx), damo_tensor_numel(c.dx), 1e-5, 1e-4);
            CHECK_CLOSE(damo_tensor_f32(f.dw), damo_tensor_f32(c.dw), damo_tensor_numel(c.dw), 1e-4, 1e-4);
            if (bias) CHECK_CLOSE(damo_tensor_f32(f.db), damo_tensor_f32(c.db), damo_tensor_numel(c.db), 1e-4, 1e-4);
            free_result(&f);
          }
          free_result(&c);
        }
}

/* conv2d_ex(x, k, b, act) against conv2d -> add(b) -> act, forward and every gradient. */
static void test_conv_equals_composition(void) {
  const damo_activation acts[] = {DAMO_ACT_NONE, DAMO_ACT_RELU, DAMO_ACT_SIGMOID, DAMO_ACT_TANH};
  for (int a = 0; a < 4; a++)
    for (int variant = 0; variant < 2; variant++) {
      int64_t xs[4] = {3, 7, 6, 2}, ks[4] = {3, 3, 2, 5}, bs[1] = {5};
      int stride = variant ? 2 : 1, pad = variant ? 0 : 1;
      if (variant) ks[0] = ks[1] = 1, ks[2] = 2; /* also the pointwise path */
      float *results[2][4];
      for (int fused = 0; fused < 2; fused++) {
        damo_rng r;
        damo_rng_seed(&r, 5);
        damo_tensor *x = random_tensor(4, xs, &r, 1.0f), *k = random_tensor(4, ks, &r, 0.5f), *b = random_tensor(1, bs, &r, 0.5f);
        damo_tensor *gx = damo_tensor_new(DAMO_F32, 4, xs), *gk = damo_tensor_new(DAMO_F32, 4, ks), *gb = damo_tensor_new(DAMO_F32, 1, bs);
        damo_graph *g = damo_graph_new(1);
        damo_node *xn = damo_param(g, "x", x, gx), *kn = damo_param(g, "k", k, gk), *bn = damo_param(g, "b", b, gb), *y;
        int s1 = variant ? 1 : stride;
        if (fused) {
          y = damo_conv2d_ex(g, xn, kn, bn, acts[a], s1, s1, pad, pad, pad, pad);
        } else {
          y = damo_add(g, damo_conv2d(g, xn, kn, s1, s1, pad, pad, pad, pad), bn);
          if (acts[a] == DAMO_ACT_RELU) y = damo_relu(g, y);
          if (acts[a] == DAMO_ACT_SIGMOID) y = damo_sigmoid(g, y);
          if (acts[a] == DAMO_ACT_TANH) y = damo_tanh(g, y);
        }
        damo_tensor *dout = damo_tensor_new(DAMO_F32, damo_node_ndim(y), damo_node_shape(y));
        for (int64_t i = 0; i < damo_tensor_numel(dout); i++) damo_tensor_f32(dout)[i] = damo_rng_uniform(&r) - 0.5f;
        damo_node *loss = damo_sum(g, damo_mul(g, y, damo_constant(g, dout)), DAMO_ALL_AXES, 0);
        CHECK(damo_graph_compile(g, loss, 1, &y) == DAMO_OK);
        CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
        results[fused][0] = malloc(sizeof(float) * (size_t)damo_node_numel(y));
        memcpy(results[fused][0], damo_node_data(y), sizeof(float) * (size_t)damo_node_numel(y));
        results[fused][1] = gx->data, results[fused][2] = gk->data, results[fused][3] = gb->data;
        gx->owns_data = gk->owns_data = gb->owns_data = 0;
        if (fused) {
          CHECK_CLOSE(results[1][0], results[0][0], damo_node_numel(y), 1e-5, 1e-5);
          CHECK_CLOSE(results[1][1], results[0][1], damo_tensor_numel(x), 1e-5, 1e-4);
          CHECK_CLOSE(results[1][2], results[0][2], damo_tensor_numel(k), 1e-4, 1e-4);
          CHECK_CLOSE(results[1][3], results[0][3], 5, 1e-4, 1e-4);
          for (int f = 0; f < 2; f++) {
            free(results[f][0]);
            for (int q = 1; q < 4; q++) free(results[f][q]);
          }
        }
        damo_graph_free(g);
        damo_tensor_free(x);
        damo_tensor_free(k);
        damo_tensor_free(b);
        damo_tensor_free(gx);
        damo_tensor_free(gk);
        damo_tensor_free(gb);
        damo_tensor_free(dout);
      }
    }
}

static void test_dense_rejects_bad_input(void) {
  damo_graph *g = damo_graph_new(1);
  int64_t xs[2] = {4, 5}, ws[2] = {6, 3}, bs[1] = {4};
  damo_tensor *w = damo_tensor_new(DAMO_F32, 2, ws), *b = damo_tensor_new(DAMO_F32, 1, bs);
  damo_node *x = damo_input(g, "x", DAMO_F32, 2, xs);
  CHECK(damo_dense_op(g, x, damo_param(g, "w", w, NULL), NULL, DAMO_ACT_RELU) == NULL);
  CHECK_MSG(strstr(damo_last_error(), "(4, 5)") && strstr(damo_last_error(), "(6, 3)"), "%s", damo_last_error());
  damo_graph_free(g);
  g = damo_graph_new(1);
  ws[0] = 5;
  damo_tensor_free(w);
  w = damo_tensor_new(DAMO_F32, 2, ws);
  x = damo_input(g, "x", DAMO_F32, 2, xs);
  CHECK(damo_dense_op(g, x, damo_param(g, "w", w, NULL), damo_param(g, "b", b, NULL), DAMO_ACT_NONE) == NULL);
  CHECK(damo_graph_status(g) == DAMO_ERR_SHAPE);
  damo_graph_free(g);
  g = damo_graph_new(1);
  x = damo_input(g, "x", DAMO_F32, 2, xs);
  CHECK(damo_dense_op(g, x, damo_param(g, "w", w, NULL), NULL, DAMO_ACT_SOFTMAX) == NULL);
  damo_graph_free(g);
  damo_tensor_free(w);
  damo_tensor_free(b);
}

int main(void) {
  RUN(test_dense_equals_composition);
  RUN(test_dense_rejects_bad_input);
  RUN(test_conv_equals_composition);
  return test_summary("fused");
}
