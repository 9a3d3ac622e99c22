/* test_cnn.c - convolution, pooling and batch normalisation against PyTorch
 * (tests/fixtures/cnn.safetensors from tests/ref/gen_cnn.py) and central finite
 * differences, plus a convolution checked against a direct loop at a larger size. */
#include "harness.h"

#include <damo.h>
#include <stdlib.h>

static damo_tensor_dict *fx;

static damo_tensor *get(const char *cas, const char *what) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", cas, what);
  damo_tensor *t = damo_tensor_dict_get(fx, key);
  if (!t) fprintf(stderr, "fixture %s missing\n", key);
  return t;
}

typedef struct op_case {
  const char *name;
  int kind; /* 0 conv, 1 max pool, 2 avg pool, 3 global avg pool, 4 batch norm */
  int k[2], s[2], p[4];
  int training;
} op_case;

static const op_case cases[] = {
    {"conv_3x3_same", 0, {3, 3}, {1, 1}, {1, 1, 1, 1}, 0},
    {"conv_valid_odd", 0, {3, 3}, {1, 1}, {0, 0, 0, 0}, 0},
    {"conv_stride2_same", 0, {3, 3}, {2, 2}, {1, 1, 1, 1}, 0},
    {"conv_asym_same", 0, {3, 3}, {2, 2}, {0, 0, 1, 1}, 0},
    {"conv_5x5", 0, {5, 5}, {1, 1}, {2, 2, 2, 2}, 0},
    {"conv_1x1", 0, {1, 1}, {1, 1}, {0, 0, 0, 0}, 0},
    {"conv_2x3_strided", 0, {2, 3}, {2, 3}, {0, 1, 1, 1}, 0},
    {"maxpool_2x2", 1, {2, 2}, {2, 2}, {0, 0, 0, 0}, 0},
    {"maxpool_3x3_s2_same", 1, {3, 3}, {2, 2}, {1, 1, 1, 1}, 0},
    {"maxpool_odd_valid", 1, {3, 3}, {1, 1}, {0, 0, 0, 0}, 0},
    {"avgpool_2x2", 2, {2, 2}, {2, 2}, {0, 0, 0, 0}, 0},
    {"avgpool_3x3_s2_same", 2, {3, 3}, {2, 2}, {1, 1, 1, 1}, 0},
    {"avgpool_2x2_odd_same", 2, {2, 2}, {2, 2}, {0, 0, 1, 1}, 0},
    {"global_avg_pool", 3, {0, 0}, {0, 0}, {0, 0, 0, 0}, 0},
    {"bn_train_4d", 4, {0, 0}, {0, 0}, {0, 0, 0, 0}, 1},
    {"bn_train_2d", 4, {0, 0}, {0, 0}, {0, 0, 0, 0}, 1},
    {"bn_infer_4d", 4, {0, 0}, {0, 0}, {0, 0, 0, 0}, 0},
};

/* Trainable inputs (name in the fixture) per kind, then the graph. */
typedef struct built {
  damo_graph *g;
  damo_node *out, *loss;
  int n;
  const char *names[3];
  damo_tensor *vals[3], *grads[3], *mean, *var;
} built;

static built build(const op_case *c) {
  built b = {0};
  b.g = damo_graph_new(1);
  b.names[b.n++] = "x";
  if (c->kind == 0) b.names[b.n++] = "kernel";
  if (c->kind == 4) b.names[b.n++] = "gamma", b.names[b.n++] = "beta";
  damo_node *in[3];
  for (int i = 0; i < b.n; i++) {
    b.vals[i] = damo_tensor_clone(get(c->name, b.names[i]));
    b.grads[i] = damo_tensor_new(DAMO_F32, b.vals[i]->ndim, b.vals[i]->shape);
    in[i] = damo_param(b.g, b.names[i], b.vals[i], b.grads[i]);
  }
  switch (c->kind) {
  case 0: b.out = damo_conv2d(b.g, in[0], in[1], c->s[0], c->s[1], c->p[0], c->p[1], c->p[2], c->p[3]); break;
  case 1: b.out = damo_max_pool2d(b.g, in[0], c->k[0], c->k[1], c->s[0], c->s[1], c->p[0], c->p[1], c->p[2], c->p[3]); break;
  case 2: b.out = damo_avg_pool2d(b.g, in[0], c->k[0], c->k[1], c->s[0], c->s[1], c->p[0], c->p[1], c->p[2], c->p[3]); break;
  case 3: b.out = damo_global_avg_pool2d(b.g, in[0]); break;
  default:
    b.mean = damo_tensor_clone(get(c->name, "mean"));
    b.var = damo_tensor_clone(get(c->name, "var"));
    b.out = damo_batch_norm(b.g, in[0], in[1], in[2], damo_param(b.g, "mean", b.mean, NULL),
                            damo_param(b.g, "var", b.var, NULL), 0.9f, 1e-3f);
  }
  b.loss = damo_sum(b.g, damo_mul(b.g, b.out, damo_constant(b.g, get(c->name, "dout"))), DAMO_ALL_AXES, 0);
  damo_node *outs[2] = {b.out, b.loss};
  CHECK_MSG(damo_graph_compile(b.g, b.loss, 2, outs) == DAMO_OK, "%s: %s", c->name, damo_last_error());
  return b;
}

static void release(built *b) {
  damo_graph_free(b->g);
  for (int i = 0; i < b->n; i++) {
    damo_tensor_free(b->vals[i]);
    damo_tensor_free(b->grads[i]);
  }
  damo_tensor_free(b->mean);
  damo_tensor_free(b->var);
}

static void check(const op_case *c) {
  built b = build(c);
  CHECK(damo_graph_forward(b.g, c->training) == DAMO_OK && damo_graph_backward(b.g) == DAMO_OK);
  const damo_tensor *out = get(c->name, "out");
  CHECK_MSG(damo_node_numel(b.out) == damo_tensor_numel(out), "%s: %lld outputs, torch %lld", c->name,
            (long long)damo_node_numel(b.out), (long long)damo_tensor_numel(out));
  CHECK_MSG(test_close_ratio(damo_node_data(b.out), damo_tensor_f32(out), damo_tensor_numel(out), 1e-5, 1e-4) <= 1, "%s out",
            c->name);
  for (int i = 0; i < b.n; i++) {
    char what[32];
    snprintf(what, sizeof what, "grad_%s", b.names[i]);
    const damo_tensor *ref = get(c->name, what);
    CHECK_MSG(test_close_ratio(damo_tensor_f32(b.grads[i]), damo_tensor_f32(ref), damo_tensor_numel(ref), 1e-5, 1e-4) <= 1,
              "%s %s", c->name, what);
  }
  if (c->kind == 4) { /* running statistics: moved exactly once by the training forward */
    const damo_tensor *nm = get(c->name, "new_mean"), *nv = get(c->name, "new_var");
    CHECK_MSG(test_close_ratio(damo_tensor_f32(b.mean), damo_tensor_f32(nm), damo_tensor_numel(nm), 1e-6, 1e-5) <= 1,
              "%s running mean", c->name);
    CHECK_MSG(test_close_ratio(damo_tensor_f32(b.var), damo_tensor_f32(nv), damo_tensor_numel(nv), 1e-6, 1e-5) <= 1,
              "%s running var", c->name);
  }
  /* central differences on every element (batch norm in training moves the running
   * statistics on every forward; they do not affect the training output) */
  double worst = 0;
  for (int i = 0; i < b.n; i++) {
    float *p = damo_tensor_f32(b.vals[i]);
    for (int64_t k = 0; k < damo_tensor_numel(b.vals[i]); k++) {
      float keep = p[k], h = 1e-2f;
      p[k] = keep + h;
      damo_graph_forward(b.g, c->training);
      double up = damo_node_data(b.loss)[0];
      p[k] = keep - h;
      damo_graph_forward(b.g, c->training);
      double down = damo_node_data(b.loss)[0];
      p[k] = keep;
      double fd = (up - down) / (2.0 * h), an = damo_tensor_f32(b.grads[i])[k];
      double err = fabs(fd - an) / (3e-3 + 2e-2 * fabs(an));
      if (err > worst) worst = err;
    }
  }
  CHECK_MSG(worst <= 1.0, "%s: finite differences off by %.3g x tolerance", c->name, worst);
  release(&b);
}

static void test_against_torch(void) {
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check(&cases[i]);
}

/* A bigger convolution (several im2col blocks would be needed at larger sizes) against a
 * direct loop, on the scalar and the best SIMD paths. */
static void test_conv_direct_loop(void) {
  enum { N = 4, H = 16, W = 16, C = 8, KH = 3, KW = 3, Fo = 16 };
  int64_t xs[4] = {N, H, W, C}, ks[4] = {KH, KW, C, Fo};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 4, xs), *k = damo_tensor_new(DAMO_F32, 4, ks);
  damo_rng r;
  damo_rng_seed(&r, 3);
  for (int64_t i = 0; i < damo_tensor_numel(x); i++) damo_tensor_f32(x)[i] = damo_rng_uniform(&r) - 0.5f;
  for (int64_t i = 0; i < damo_tensor_numel(k); i++) damo_tensor_f32(k)[i] = damo_rng_uniform(&r) - 0.5f;
  static float ref[N * H * W * Fo];
  for (int n = 0; n < N; n++)
    for (int oh = 0; oh < H; oh++)
      for (int ow = 0; ow < W; ow++)
        for (int f = 0; f < Fo; f++) {
          double s = 0;
          for (int kh = 0; kh < KH; kh++)
            for (int kw = 0; kw < KW; kw++) {
              int ih = oh - 1 + kh, iw = ow - 1 + kw;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              for (int c = 0; c < C; c++)
                s += (double)damo_tensor_f32(x)[((n * H + ih) * W + iw) * C + c] *
                     damo_tensor_f32(k)[((kh * KW + kw) * C + c) * Fo + f];
            }
          ref[((n * H + oh) * W + ow) * Fo + f] = (float)s;
        }
  damo_graph *g = damo_graph_new(1);
  damo_node *y = damo_conv2d(g, damo_constant(g, x), damo_constant(g, k), 1, 1, 1, 1, 1, 1);
  CHECK(damo_graph_compile(g, NULL, 1, &y) == DAMO_OK);
  CHECK(damo_graph_forward(g, 0) == DAMO_OK);
  CHECK_CLOSE(damo_node_data(y), ref, N * H * W * Fo, 1e-5, 1e-4);
  damo_graph_free(g);
  damo_tensor_free(x);
  damo_tensor_free(k);
}

static void test_shape_errors(void) {
  damo_graph *g = damo_graph_new(1);
  int64_t xs[4] = {2, 5, 5, 3}, ks[4] = {3, 3, 4, 2};
  damo_tensor *k = damo_tensor_new(DAMO_F32, 4, ks);
  damo_node *x = damo_input(g, "x", DAMO_F32, 4, xs);
  CHECK(damo_conv2d(g, x, damo_param(g, "k", k, NULL), 1, 1, 0, 0, 0, 0) == NULL);
  CHECK_MSG(strstr(damo_last_error(), "(2, 5, 5, 3)") && strstr(damo_last_error(), "(3, 3, 4, 2)"), "%s", damo_last_error());
  damo_graph_free(g);
  g = damo_graph_new(1);
  x = damo_input(g, "x", DAMO_F32, 4, xs);
  CHECK(damo_max_pool2d(g, x, 7, 7, 1, 1, 0, 0, 0, 0) == NULL);
  CHECK(damo_graph_status(g) == DAMO_ERR_SHAPE);
  damo_graph_free(g);
  damo_tensor_free(k);
  int a, b;
  damo_conv2d_same_padding(28, 5, 1, &a, &b);
  CHECK(a == 2 && b == 2);
  damo_conv2d_same_padding(7, 3, 2, &a, &b);
  CHECK(a == 1 && b == 1);
  damo_conv2d_same_padding(6, 3, 2, &a, &b);
  CHECK(a == 0 && b == 1);
}

int main(void) {
  if (damo_safetensors_load(DAMO_SOURCE_DIR "/tests/fixtures/cnn.safetensors", &fx) != DAMO_OK) {
    fprintf(stderr, "%s\n", damo_last_error());
    printf("cnn: 0 passed, 1 failed\n");
    return 1;
  }
  RUN(test_against_torch);
  RUN(test_conv_direct_loop);
  RUN(test_shape_errors);
  damo_tensor_dict_free(fx);
  return test_summary("cnn");
}
