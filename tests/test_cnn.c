/* test_cnn.c - convolution, pooling and batch normalisation against PyTorch
 * (tests/fixtures/cnn.safetensors from tests/ref/gen_cnn.py) and central finite
 * differences; convolutions (output and both gradients) against direct loops at larger
 * sizes, on the scalar and the best SIMD path and with 1 and 2 threads (bit for bit); the
 * batch-norm running statistics (once per training forward) and inference mode; shape
 * errors. */
#include "harness.h"

#include <damo.h>
#include <stdlib.h>

#include "kernels/kernels.h" /* damo_simd_level_force */

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

/* ------------------------------------------------------------------ direct loops */

typedef struct conv_dims {
  int N, H, W, C, KH, KW, F, sh, sw, pt, pl, pb, pr;
} conv_dims;

static int out_h(const conv_dims *d) { return (d->H + d->pt + d->pb - d->KH) / d->sh + 1; }
static int out_w(const conv_dims *d) { return (d->W + d->pl + d->pr - d->KW) / d->sw + 1; }

/* y, dx, dk of loss = sum(y * dout) by the definition, summed in double. */
static void direct_conv(const conv_dims *d, const float *x, const float *k, const float *dout, float *y, float *dx,
                        float *dk) {
  const int OH = out_h(d), OW = out_w(d);
  double *gx = calloc((size_t)d->N * d->H * d->W * d->C, sizeof *gx);
  double *gk = calloc((size_t)d->KH * d->KW * d->C * d->F, sizeof *gk);
  for (int n = 0; n < d->N; n++)
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++)
        for (int f = 0; f < d->F; f++) {
          double s = 0, go = dout[((n * OH + oh) * OW + ow) * d->F + f];
          for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
              int ih = oh * d->sh - d->pt + kh, iw = ow * d->sw - d->pl + kw;
              if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) continue;
              for (int c = 0; c < d->C; c++) {
                size_t xi = (((size_t)n * d->H + ih) * d->W + iw) * d->C + c, ki = (((size_t)kh * d->KW + kw) * d->C + c) * d->F + f;
                s += (double)x[xi] * k[ki];
                gx[xi] += go * k[ki];
                gk[ki] += go * x[xi];
              }
            }
          y[((n * OH + oh) * OW + ow) * d->F + f] = (float)s;
        }
  for (size_t i = 0; i < (size_t)d->N * d->H * d->W * d->C; i++) dx[i] = (float)gx[i];
  for (size_t i = 0; i < (size_t)d->KH * d->KW * d->C * d->F; i++) dk[i] = (float)gk[i];
  free(gx);
  free(gk);
}

static void fill_uniform(damo_tensor *t, damo_rng *r) {
  for (int64_t i = 0; i < damo_tensor_numel(t); i++) damo_tensor_f32(t)[i] = damo_rng_uniform(r) - 0.5f;
}

/* Output, dx and dk of the op against the direct loops, on the scalar and the best SIMD
 * path, with 1 and 2 threads (which must agree bit for bit). */
static void conv_vs_direct(const conv_dims *d, const char *label) {
  int64_t xs[4] = {d->N, d->H, d->W, d->C}, ks[4] = {d->KH, d->KW, d->C, d->F},
          ys[4] = {d->N, out_h(d), out_w(d), d->F};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 4, xs), *k = damo_tensor_new(DAMO_F32, 4, ks);
  damo_tensor *dout = damo_tensor_new(DAMO_F32, 4, ys), *gx = damo_tensor_new(DAMO_F32, 4, xs),
              *gk = damo_tensor_new(DAMO_F32, 4, ks);
  damo_rng r;
  damo_rng_seed(&r, 3);
  fill_uniform(x, &r);
  fill_uniform(k, &r);
  fill_uniform(dout, &r);
  const int64_t ny = damo_tensor_numel(dout), nx = damo_tensor_numel(x), nk = damo_tensor_numel(k);
  float *ref_y = malloc(ny * sizeof(float)), *ref_dx = malloc(nx * sizeof(float)), *ref_dk = malloc(nk * sizeof(float));
  direct_conv(d, damo_tensor_f32(x), damo_tensor_f32(k), damo_tensor_f32(dout), ref_y, ref_dx, ref_dk);

  damo_graph *g = damo_graph_new(1);
  damo_node *y = damo_conv2d(g, damo_param(g, "x", x, gx), damo_param(g, "kernel", k, gk), d->sh, d->sw, d->pt, d->pl,
                             d->pb, d->pr);
  damo_node *loss = damo_sum(g, damo_mul(g, y, damo_constant(g, dout)), DAMO_ALL_AXES, 0);
  CHECK_MSG(damo_graph_compile(g, loss, 1, &y) == DAMO_OK, "%s: %s", label, damo_last_error());

  float *first_y = malloc(ny * sizeof(float)), *first_dx = malloc(nx * sizeof(float)), *first_dk = malloc(nk * sizeof(float));
  const damo_simd_level original = damo_simd_level_get();
  const damo_simd_level levels[2] = {DAMO_SIMD_SCALAR, DAMO_SIMD_AVX512}; /* clamped to the CPU's best */
  const char *paths[2];
  for (int l = 0; l < 2; l++) {
    damo_simd_level_force(levels[l]);
    for (int threads = 1; threads <= 2; threads++) {
      damo_set_num_threads(threads);
      CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
      const char *path = damo_simd_path();
      CHECK_MSG(test_close_ratio(damo_node_data(y), ref_y, ny, 1e-5, 1e-4) <= 1, "%s %s out", label, path);
      CHECK_MSG(test_close_ratio(damo_tensor_f32(gx), ref_dx, nx, 1e-5, 1e-4) <= 1, "%s %s dx", label, path);
      CHECK_MSG(test_close_ratio(damo_tensor_f32(gk), ref_dk, nk, 1e-4, 1e-4) <= 1, "%s %s dkernel", label, path);
      if (threads == 1) {
        memcpy(first_y, damo_node_data(y), ny * sizeof(float));
        memcpy(first_dx, damo_tensor_f32(gx), nx * sizeof(float));
        memcpy(first_dk, damo_tensor_f32(gk), nk * sizeof(float));
      } else {
        CHECK_MSG(!memcmp(first_y, damo_node_data(y), ny * sizeof(float)) &&
                      !memcmp(first_dx, damo_tensor_f32(gx), nx * sizeof(float)) &&
                      !memcmp(first_dk, damo_tensor_f32(gk), nk * sizeof(float)),
                  "%s %s: 1 and 2 threads differ", label, path);
      }
    }
    paths[l] = damo_simd_path();
  }
  fprintf(stderr, "  %s: %s and %s paths, 1 and 2 threads\n", label, paths[0], paths[1]);
  damo_simd_level_force(original);
  damo_set_num_threads(0);
  damo_graph_free(g);
  free(first_y), free(first_dx), free(first_dk), free(ref_y), free(ref_dx), free(ref_dk);
  damo_tensor_free(x), damo_tensor_free(k), damo_tensor_free(dout), damo_tensor_free(gx), damo_tensor_free(gk);
}

static void test_conv_direct_loop(void) {
  /* 3x3 stride-1 "same" at a moderate size */
  conv_dims a = {4, 16, 16, 8, 3, 3, 16, 1, 1, 1, 1, 1, 1};
  conv_vs_direct(&a, "4x16x16x8 3x3 same");
  /* K = 5*5*96 = 2400: the ~4 MB patch blocks hold 436 pixels, so 440 outputs take two
   * blocks split inside an image row; stride 2 with TensorFlow's asymmetric "same" */
  conv_dims b = {4, 21, 20, 96, 5, 5, 8, 2, 2, 2, 1, 2, 2};
  conv_vs_direct(&b, "4x21x20x96 5x5 stride 2");
  /* a 1x1 kernel (no im2col); a 2x4 kernel whose last output row and column see padding only */
  conv_dims c = {2, 5, 7, 6, 1, 1, 3, 1, 1, 0, 0, 0, 0};
  conv_vs_direct(&c, "1x1");
  conv_dims e = {2, 6, 5, 3, 2, 4, 4, 1, 3, 0, 3, 3, 6};
  conv_vs_direct(&e, "2x4 stride (1, 3), windows in the padding");
}

/* Max pooling's edge cases: ties send the gradient to the first pixel (row-major, as
 * torch), padding never wins even over negative pixels, a NaN propagates. */
static void test_max_pool_ties_padding_nan(void) {
  int64_t xs[4] = {1, 2, 2, 2}; /* channel 0: 1 3 / 3 2; channel 1: -5 -7 / -6 -9 */
  float x[8] = {1, -5, 3, -7, 3, -6, 2, -9}, gx[8];
  damo_tensor *xt = damo_tensor_wrap(DAMO_F32, 4, xs, x), *gt = damo_tensor_wrap(DAMO_F32, 4, xs, gx);
  damo_graph *g = damo_graph_new(1);
  damo_node *xn = damo_param(g, "x", xt, gt);
  damo_node *y = damo_max_pool2d(g, xn, 2, 2, 2, 2, 0, 0, 0, 0); /* one window of the 4 pixels */
  damo_node *yp = damo_max_pool2d(g, xn, 2, 2, 1, 1, 1, 1, 0, 0); /* padded above and left: 2x2 outputs */
  damo_node *loss = damo_sum(g, y, DAMO_ALL_AXES, 0);
  damo_node *outs[2] = {y, yp};
  CHECK(damo_graph_compile(g, loss, 2, outs) == DAMO_OK);
  CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
  CHECK(damo_node_numel(y) == 2 && damo_node_data(y)[0] == 3.0f && damo_node_data(y)[1] == -5.0f);
  const float want[8] = {0, 1, 1, 0, 0, 0, 0, 0}; /* the first 3 (pixel 1); -5 (pixel 0) */
  for (int i = 0; i < 8; i++) CHECK_MSG(gx[i] == want[i], "grad[%d] = %g, expected %g", i, gx[i], want[i]);
  /* the corner window holds padding and pixel (0, 0) only: 1 and -5, not 0 */
  const float want_p[8] = {1, -5, 3, -5, 3, -5, 3, -5};
  CHECK(damo_node_numel(yp) == 8);
  for (int i = 0; i < 8; i++)
    CHECK_MSG(damo_node_data(yp)[i] == want_p[i], "padded[%d] = %g, expected %g", i, damo_node_data(yp)[i], want_p[i]);
  x[6] = NAN; /* channel 0, last pixel */
  CHECK(damo_graph_forward(g, 1) == DAMO_OK);
  CHECK(isnan(damo_node_data(y)[0]) && damo_node_data(y)[1] == -5.0f);
  damo_graph_free(g);
  /* Compiled without a loss nothing goes backward, and pooling keeps no argmax: the same
   * maxima, padding and NaN included. */
  x[6] = 2.0f;
  damo_graph *gi = damo_graph_new(1);
  damo_node *xi = damo_param(gi, "x", xt, NULL);
  damo_node *outs_i[2] = {damo_max_pool2d(gi, xi, 2, 2, 2, 2, 0, 0, 0, 0), damo_max_pool2d(gi, xi, 2, 2, 1, 1, 1, 1, 0, 0)};
  CHECK(damo_graph_compile(gi, NULL, 2, outs_i) == DAMO_OK && damo_graph_forward(gi, 0) == DAMO_OK);
  CHECK(damo_node_data(outs_i[0])[0] == 3.0f && damo_node_data(outs_i[0])[1] == -5.0f);
  for (int i = 0; i < 8; i++)
    CHECK_MSG(damo_node_data(outs_i[1])[i] == want_p[i], "inference padded[%d] = %g, expected %g", i,
              damo_node_data(outs_i[1])[i], want_p[i]);
  x[6] = NAN;
  CHECK(damo_graph_forward(gi, 0) == DAMO_OK);
  CHECK(isnan(damo_node_data(outs_i[0])[0]) && damo_node_data(outs_i[0])[1] == -5.0f);
  damo_graph_free(gi);
  damo_tensor_free(xt), damo_tensor_free(gt);
}

/* ------------------------------------------------------------------ batch norm state */

/* Per-channel batch mean and unbiased variance of rows (R, C), in double. */
static void batch_stats(const float *x, int R, int C, double *mean, double *var) {
  for (int c = 0; c < C; c++) {
    double s = 0, q = 0;
    for (int r = 0; r < R; r++) s += x[r * C + c];
    mean[c] = s / R;
    for (int r = 0; r < R; r++) q += (x[r * C + c] - mean[c]) * (x[r * C + c] - mean[c]);
    var[c] = q / (R - 1);
  }
}

/* The running statistics move exactly once per training forward (not in backward, not in
 * inference, at a smaller batch with that batch's statistics), and inference normalises
 * with them. */
static void test_bn_running_stats(void) {
  enum { B = 6, H = 3, W = 2, C = 4 };
  const float momentum = 0.8f, eps = 1e-3f;
  int64_t xs[4] = {B, H, W, C}, cs[1] = {C};
  static float x[B * H * W * C];
  damo_rng r;
  damo_rng_seed(&r, 9);
  for (int i = 0; i < B * H * W * C; i++) x[i] = 3.0f * damo_rng_uniform(&r) + (float)(i % C);
  damo_tensor *gamma = damo_tensor_new(DAMO_F32, 1, cs), *beta = damo_tensor_new(DAMO_F32, 1, cs);
  damo_tensor *gg = damo_tensor_new(DAMO_F32, 1, cs), *gb = damo_tensor_new(DAMO_F32, 1, cs);
  damo_tensor *rm = damo_tensor_new(DAMO_F32, 1, cs), *rv = damo_tensor_new(DAMO_F32, 1, cs);
  for (int c = 0; c < C; c++) {
    damo_tensor_f32(gamma)[c] = 0.5f + 0.25f * c;
    damo_tensor_f32(beta)[c] = 0.1f * c - 0.2f;
    damo_tensor_f32(rm)[c] = 0.0f;
    damo_tensor_f32(rv)[c] = 1.0f;
  }
  damo_graph *g = damo_graph_new(1);
  damo_node *xin = damo_input(g, "x", DAMO_F32, 4, xs);
  damo_node *y = damo_batch_norm(g, xin, damo_param(g, "gamma", gamma, gg), damo_param(g, "beta", beta, gb),
                                 damo_param(g, "moving_mean", rm, NULL), damo_param(g, "moving_var", rv, NULL), momentum, eps);
  damo_node *loss = damo_sum(g, y, DAMO_ALL_AXES, 0);
  CHECK_MSG(damo_graph_compile(g, loss, 1, &y) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_graph_bind(g, xin, x) == DAMO_OK);

  double em[C], ev[C], mean[C], var[C];
  for (int c = 0; c < C; c++) em[c] = 0.0, ev[c] = 1.0;
  const int batches[3] = {B, B, 2};
  for (int step = 0; step < 3; step++) {
    if (batches[step] != B) CHECK(damo_graph_set_batch(g, batches[step]) == DAMO_OK);
    CHECK(damo_graph_forward(g, 1) == DAMO_OK);
    batch_stats(x, batches[step] * H * W, C, mean, var);
    for (int c = 0; c < C; c++) {
      em[c] = momentum * em[c] + (1 - momentum) * mean[c];
      ev[c] = momentum * ev[c] + (1 - momentum) * var[c];
    }
    CHECK(damo_graph_backward(g) == DAMO_OK); /* must not move them again */
    for (int c = 0; c < C; c++) {
      CHECK_MSG(fabs(damo_tensor_f32(rm)[c] - em[c]) <= 1e-5 * (1 + fabs(em[c])), "step %d mean[%d] %.7g, expected %.7g",
                step, c, damo_tensor_f32(rm)[c], em[c]);
      CHECK_MSG(fabs(damo_tensor_f32(rv)[c] - ev[c]) <= 1e-5 * (1 + fabs(ev[c])), "step %d var[%d] %.7g, expected %.7g",
                step, c, damo_tensor_f32(rv)[c], ev[c]);
    }
    /* training output: normalised by the batch's own (biased) statistics */
    double worst = 0;
    for (int i = 0; i < batches[step] * H * W * C; i++) {
      int c = i % C;
      double biased = var[c] * (batches[step] * H * W - 1) / (batches[step] * H * W);
      double want = damo_tensor_f32(gamma)[c] * (x[i] - mean[c]) / sqrt(biased + eps) + damo_tensor_f32(beta)[c];
      double e = fabs(damo_node_data(y)[i] - want) / (1e-5 + 1e-4 * fabs(want));
      if (e > worst) worst = e;
    }
    CHECK_MSG(worst <= 1, "step %d: training output off by %.3g x tolerance", step, worst);
  }
  /* inference: running statistics, left as they are */
  float keep_m[C], keep_v[C];
  memcpy(keep_m, damo_tensor_f32(rm), sizeof keep_m);
  memcpy(keep_v, damo_tensor_f32(rv), sizeof keep_v);
  CHECK(damo_graph_set_batch(g, B) == DAMO_OK);
  for (int rep = 0; rep < 2; rep++) CHECK(damo_graph_forward(g, 0) == DAMO_OK);
  CHECK(damo_graph_backward(g) == DAMO_OK);
  CHECK(!memcmp(keep_m, damo_tensor_f32(rm), sizeof keep_m) && !memcmp(keep_v, damo_tensor_f32(rv), sizeof keep_v));
  double worst = 0;
  for (int i = 0; i < B * H * W * C; i++) {
    int c = i % C;
    double want = damo_tensor_f32(gamma)[c] * (x[i] - keep_m[c]) / sqrt((double)keep_v[c] + eps) + damo_tensor_f32(beta)[c];
    double e = fabs(damo_node_data(y)[i] - want) / (1e-5 + 1e-4 * fabs(want));
    if (e > worst) worst = e;
  }
  CHECK_MSG(worst <= 1, "inference output off by %.3g x tolerance", worst);
  /* inference backward is the affine map's: d(sum y)/d(beta) = rows, d/d(gamma) = sum xhat */
  for (int c = 0; c < C; c++) {
    double sx = 0;
    for (int i = c; i < B * H * W * C; i += C) sx += (x[i] - keep_m[c]) / sqrt((double)keep_v[c] + eps);
    CHECK_NEAR(damo_tensor_f32(gb)[c], B * H * W, 1e-3);
    CHECK_NEAR(damo_tensor_f32(gg)[c], sx, 1e-4 * (1 + fabs(sx)));
  }
  damo_graph_free(g);
  damo_tensor_free(gamma), damo_tensor_free(beta), damo_tensor_free(gg), damo_tensor_free(gb);
  damo_tensor_free(rm), damo_tensor_free(rv);
}

/* A builder that must fail with DAMO_ERR_SHAPE and a message holding both strings. */
#define EXPECT_SHAPE_ERROR(g, node, want1, want2)                                                                  \
  do {                                                                                                            \
    damo_node *n_ = (node);                                                                                       \
    const char *e_ = damo_last_error();                                                                           \
    CHECK_MSG(n_ == NULL && damo_graph_status(g) == DAMO_ERR_SHAPE && strstr(e_, want1) && strstr(e_, want2), "%s", \
              e_);                                                                                                \
  } while (0)

static void test_shape_errors(void) {
  int64_t xs[4] = {2, 5, 5, 3}, ks[4] = {3, 3, 4, 2}, big[4] = {7, 7, 3, 2}, vs[1] = {3}, ws[1] = {4}, x3[3] = {2, 5, 3};
  damo_tensor *k = damo_tensor_new(DAMO_F32, 4, ks), *kb = damo_tensor_new(DAMO_F32, 4, big);
  damo_tensor *v = damo_tensor_new(DAMO_F32, 1, vs), *w = damo_tensor_new(DAMO_F32, 1, ws);
  damo_graph *g;
#define FRESH() (damo_graph_free(g), g = damo_graph_new(1), damo_input(g, "x", DAMO_F32, 4, xs))
  g = damo_graph_new(1);
  damo_node *x = damo_input(g, "x", DAMO_F32, 4, xs);
  /* conv2d: channels that differ, a kernel larger than the padded image, a 3-D input, stride 0 */
  EXPECT_SHAPE_ERROR(g, damo_conv2d(g, x, damo_param(g, "k", k, NULL), 1, 1, 0, 0, 0, 0), "(2, 5, 5, 3)", "(3, 3, 4, 2)");
  x = FRESH();
  EXPECT_SHAPE_ERROR(g, damo_conv2d(g, x, damo_param(g, "k", kb, NULL), 1, 1, 0, 0, 0, 0), "(2, 5, 5, 3)", "(7, 7, 3, 2)");
  x = FRESH();
  CHECK(damo_conv2d(g, x, damo_param(g, "k", kb, NULL), 1, 1, 1, 1, 1, 1) != NULL); /* 7 <= 5 + 2 */
  x = FRESH();
  EXPECT_SHAPE_ERROR(g, damo_conv2d(g, x, damo_param(g, "k", kb, NULL), 0, 1, 1, 1, 1, 1), "stride", "(7, 7, 3, 2)");
  x = FRESH();
  EXPECT_SHAPE_ERROR(g, damo_conv2d(g, damo_input(g, "x3", DAMO_F32, 3, x3), damo_param(g, "k", kb, NULL), 1, 1, 0, 0, 0, 0),
                     "(2, 5, 3)", "(7, 7, 3, 2)");
  /* pooling: a window larger than the image, padding as wide as the window, a 3-D input */
  x = FRESH();
  EXPECT_SHAPE_ERROR(g, damo_max_pool2d(g, x, 7, 7, 1, 1, 0, 0, 0, 0), "larger", "(2, 5, 5, 3)");
  x = FRESH();
  EXPECT_SHAPE_ERROR(g, damo_avg_pool2d(g, x, 2, 2, 2, 2, 0, 0, 2, 0), "padding", "(2, 5, 5, 3)");
  x = FRESH();
  EXPECT_SHAPE_ERROR(g, damo_global_avg_pool2d(g, damo_input(g, "x3", DAMO_F32, 3, x3)), "(2, 5, 3)", "channels");
  /* batch norm: a (4,) gamma for 3 channels names both shapes */
  x = FRESH();
  EXPECT_SHAPE_ERROR(g,
                     damo_batch_norm(g, x, damo_param(g, "gamma", w, NULL), damo_param(g, "beta", v, NULL),
                                     damo_param(g, "mean", v, NULL), damo_param(g, "var", v, NULL), 0.99f, 1e-3f),
                     "(2, 5, 5, 3)", "(4,)");
  x = FRESH();
  CHECK(damo_batch_norm(g, x, damo_param(g, "gamma", v, NULL), damo_param(g, "beta", v, NULL), damo_param(g, "mean", v, NULL),
                        damo_param(g, "var", v, NULL), 1.5f, 1e-3f) == NULL); /* momentum outside [0, 1) */
  CHECK(damo_graph_status(g) == DAMO_ERR_INVALID_ARG);
#undef FRESH
  damo_graph_free(g);
  damo_tensor_free(k), damo_tensor_free(kb), damo_tensor_free(v), damo_tensor_free(w);

  /* TensorFlow "same": output ceil(in / stride), the odd pixel of padding after */
  const int same[][5] = {/* in, k, stride, before, after */
                         {28, 5, 1, 2, 2}, {7, 3, 2, 1, 1}, {6, 3, 2, 0, 1}, {5, 1, 1, 0, 0},
                         {28, 2, 2, 0, 0}, {7, 2, 2, 0, 1}, {2, 5, 1, 2, 2}, {14, 4, 1, 1, 2}};
  for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
    int a = -1, b = -1;
    damo_conv2d_same_padding(same[i][0], same[i][1], same[i][2], &a, &b);
    CHECK_MSG(a == same[i][3] && b == same[i][4], "same padding of %d, kernel %d, stride %d: %d, %d", same[i][0], same[i][1],
              same[i][2], a, b);
  }
}

int main(void) {
  if (damo_safetensors_load(DAMO_SOURCE_DIR "/tests/fixtures/cnn.safetensors", &fx) != DAMO_OK) {
    fprintf(stderr, "%s\n", damo_last_error());
    printf("cnn: 0 passed, 1 failed\n");
    return 1;
  }
  RUN(test_against_torch);
  RUN(test_conv_direct_loop);
  RUN(test_max_pool_ties_padding_nan);
  RUN(test_bn_running_stats);
  RUN(test_shape_errors);
  damo_tensor_dict_free(fx);
  return test_summary("cnn");
}
