/* test_transformer_ops.c - layer norm, GELU (exact and tanh) and fused multi-head attention
 * against PyTorch references (tests/fixtures/transformer_ops.safetensors, written by
 * tests/ref/gen_transformer_ops.py; each case carries its own settings in <case>.cfg) and
 * against central finite differences; attention's probabilities capture, aliasing q = k = v,
 * a smaller batch than built, thread-count independence, memory linear in T, dropout on the
 * probabilities, builder errors.
 *
 * For each case the differentiable inputs become params, the key mask a bound input, and
 *     loss = sum(op(inputs) * dout)
 * so after backward each param's grad is what the fixture's <case>.grad<i> holds.
 * TEST_OPS_VERBOSE=1 prints each case's worst error / tolerance ratios. */
#include "damo.h"
#include "ops/ops.h" /* aux_bytes for the memory check, damo_linear_cross_entropy_chunked */
#include "harness.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE DAMO_SOURCE_DIR "/tests/fixtures/transformer_ops.safetensors"
#define FIXTURE_CASES 22

/* Against the PyTorch reference (float64, stored as float32). */
#define REF_ATOL 1e-5
#define REF_RTOL 1e-5
/* Finite differences in float32: |fd - analytic| <= FD_ATOL + FD_RTOL |analytic|. */
#define FD_ATOL 2e-3
#define FD_RTOL 2e-2
#define FD_H 1e-2
/* Cases with at most this many parameter values also run finite differences. */
#define FD_MAX_VALUES 1300

enum { OP_LAYER_NORM = 0, OP_GELU = 1, OP_ATTENTION = 2 };
enum { CFG_OP, CFG_HEADS, CFG_CAUSAL, CFG_HAS_MASK, CFG_APPROXIMATE };

static damo_tensor_dict *fx;

static damo_tensor *fixture(const char *cname, const char *suffix) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", cname, suffix);
  return fx ? damo_tensor_dict_get(fx, key) : NULL;
}

/* Worst |a-b| / (atol + rtol |b|) with its index. */
static double worst_ratio(const float *a, const float *b, int64_t n, double atol, double rtol, int64_t *at) {
  double worst = 0;
  *at = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
    if (!(d <= worst)) {
      worst = d;
      *at = i;
      if (isnan(d)) break;
    }
  }
  return worst;
}

static void fill_random(float *x, int64_t n, uint32_t seed, float scale) {
  uint32_t s = seed * 2654435761u + 1;
  for (int64_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = scale * ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f);
  }
}

/* Central finite differences of the scalar loss w.r.t. every value of every param (perturbed
 * in place), forward only, against the analytic gradients; one CHECK per param. */
/* Non-zero: every finite-difference forward first reseeds the graph's generator with it, so
 * a random op (attention dropout) draws the same mask each time. */
static uint64_t fd_reseed;

static damo_status fd_forward(damo_graph *g) {
  if (fd_reseed) damo_rng_seed(&g->rng, fd_reseed);
  return damo_graph_forward(g, 1);
}

static double fd_check(const char *cname, damo_graph *g, damo_node *loss, int n, damo_tensor *const *vals,
                       damo_tensor *const *grads) {
  double worst_all = 0;
  for (int p = 0; p < n; p++) {
    float *v = damo_tensor_f32(vals[p]);
    const float *an = damo_tensor_f32(grads[p]);
    int64_t ne = damo_tensor_numel(vals[p]), at = -1;
    double worst = 0, fd_at = 0, an_at = 0;
    int failed = 0;
    for (int64_t i = 0; i < ne; i++) {
      float orig = v[i], vp = (float)(orig + FD_H), vm = (float)(orig - FD_H);
      v[i] = vp;
      damo_status s1 = fd_forward(g);
      double lp = damo_node_data(loss)[0];
      v[i] = vm;
      damo_status s2 = fd_forward(g);
      double lm = damo_node_data(loss)[0];
      v[i] = orig;
      if (s1 != DAMO_OK || s2 != DAMO_OK) {
        failed = 1;
        CHECK_MSG(0, "%s: forward failed during finite differences: %s", cname, damo_last_error());
        break;
      }
      double fd = (lp - lm) / ((double)vp - (double)vm);
      double r = fabs(fd - an[i]) / (FD_ATOL + FD_RTOL * fabs((double)an[i]));
      if (!(r <= worst)) {
        worst = r;
        at = i;
        fd_at = fd;
        an_at = an[i];
      }
    }
    damo_graph_forward(g, 1);
    if (!failed)
      CHECK_MSG(worst <= 1.0, "%s: grad%d vs finite differences: worst %.3g x tolerance at [%lld]: fd %.7g analytic %.7g",
                cname, p, worst, (long long)at, fd_at, an_at);
    if (!(worst <= worst_all)) worst_all = worst;
  }
  return worst_all;
}

/* ------------------------------------------------------------------ fixture cases */

static damo_node *build_case_op(damo_graph *g, const int32_t *cfg, const damo_tensor *eps, damo_node *const *in) {
  switch (cfg[CFG_OP]) {
  case OP_LAYER_NORM: return damo_layer_norm(g, in[0], in[1], in[2], damo_tensor_f32(eps)[0]);
  case OP_GELU: return damo_gelu(g, in[0], cfg[CFG_APPROXIMATE]);
  case OP_ATTENTION:
    return damo_attention(g, in[0], in[1], in[2], cfg[CFG_HEADS], cfg[CFG_CAUSAL], cfg[CFG_HAS_MASK] ? in[3] : NULL);
  }
  return NULL;
}

static void run_case(const char *name) {
  damo_tensor *cfgt = fixture(name, "cfg"), *out_ref = fixture(name, "out"), *dout = fixture(name, "dout");
  CHECK_MSG(cfgt && out_ref && dout, "%s: fixture lacks .cfg/.out/.dout", name);
  if (!cfgt || !out_ref || !dout) return;
  const int32_t *cfg = (const int32_t *)cfgt->data;
  int n_in = cfg[CFG_OP] == OP_LAYER_NORM ? 3 : cfg[CFG_OP] == OP_GELU ? 1 : 3 + cfg[CFG_HAS_MASK];
  int mask_input = cfg[CFG_OP] == OP_ATTENTION && cfg[CFG_HAS_MASK] ? 3 : -1;
  damo_tensor *in[4] = {0}, *vals[4] = {0}, *grads[4] = {0}, *probs_ref = fixture(name, "probs");
  damo_node *nodes[4] = {0};
  int param_of[4] = {0}, nparam = 0;
  int64_t param_values = 0;
  float *probs = NULL;
  damo_graph *g = damo_graph_new(1);
  for (int i = 0; i < n_in; i++) {
    char suf[16];
    snprintf(suf, sizeof suf, "in%d", i);
    in[i] = fixture(name, suf);
    CHECK_MSG(in[i] != NULL, "%s: fixture lacks .%s", name, suf);
    if (!in[i]) goto done;
    if (i == mask_input) {
      nodes[i] = damo_input(g, "mask", DAMO_F32, in[i]->ndim, in[i]->shape);
    } else {
      vals[nparam] = damo_tensor_clone(in[i]);
      grads[nparam] = damo_tensor_new(DAMO_F32, in[i]->ndim, in[i]->shape);
      nodes[i] = damo_param(g, suf, vals[nparam], grads[nparam]);
      param_values += damo_tensor_numel(in[i]);
      param_of[nparam++] = i;
    }
  }
  damo_node *out = build_case_op(g, cfg, fixture(name, "eps"), nodes);
  CHECK_MSG(out != NULL, "%s: builder failed: %s", name, damo_last_error());
  if (!out) goto done;
  CHECK_MSG(damo_node_numel(out) == damo_tensor_numel(out_ref), "%s: output size %lld, PyTorch %lld", name,
            (long long)damo_node_numel(out), (long long)damo_tensor_numel(out_ref));
  if (damo_node_numel(out) != damo_tensor_numel(out_ref)) goto done;
  damo_node *loss = damo_sum(g, damo_mul(g, out, damo_constant(g, dout)), DAMO_ALL_AXES, 0);
  damo_node *outs[2] = {out, loss};
  damo_status st = damo_graph_compile(g, loss, 2, outs);
  CHECK_MSG(st == DAMO_OK, "%s: compile: %s", name, damo_last_error());
  if (st != DAMO_OK) goto done;
  if (mask_input >= 0) CHECK(damo_graph_bind(g, nodes[mask_input], in[mask_input]->data) == DAMO_OK);
  if (probs_ref) {
    probs = malloc((size_t)damo_tensor_numel(probs_ref) * sizeof(float));
    CHECK(damo_attention_capture_probs(out, probs) == DAMO_OK);
  }
  st = damo_graph_forward(g, 1);
  CHECK_MSG(st == DAMO_OK, "%s: forward: %s", name, damo_last_error());
  if (st != DAMO_OK) goto done;

  int64_t at;
  double r_out = worst_ratio(damo_node_data(out), damo_tensor_f32(out_ref), damo_tensor_numel(out_ref), REF_ATOL,
                             REF_RTOL, &at), r_worst = r_out;
  CHECK_MSG(r_out <= 1.0, "%s: forward vs PyTorch: worst %.3g x tolerance at [%lld]: damo %.8g torch %.8g", name,
            r_out, (long long)at, damo_node_data(out)[at], damo_tensor_f32(out_ref)[at]);
  if (probs_ref) {
    double r = worst_ratio(probs, damo_tensor_f32(probs_ref), damo_tensor_numel(probs_ref), REF_ATOL, REF_RTOL, &at);
    CHECK_MSG(r <= 1.0, "%s: captured probabilities vs PyTorch: worst %.3g x tolerance at [%lld]", name, r,
              (long long)at);
  }

  st = damo_graph_backward(g);
  CHECK_MSG(st == DAMO_OK, "%s: backward: %s", name, damo_last_error());
  if (st != DAMO_OK) goto done;
  for (int p = 0; p < nparam; p++) {
    char suf[16];
    snprintf(suf, sizeof suf, "grad%d", param_of[p]);
    damo_tensor *gref = fixture(name, suf);
    CHECK_MSG(gref != NULL, "%s: fixture lacks .%s", name, suf);
    if (!gref) continue;
    double r = worst_ratio(damo_tensor_f32(grads[p]), damo_tensor_f32(gref), damo_tensor_numel(gref), REF_ATOL,
                           REF_RTOL, &at);
    CHECK_MSG(r <= 1.0, "%s: %s vs PyTorch: worst %.3g x tolerance at [%lld]: damo %.8g torch %.8g", name, suf, r,
              (long long)at, damo_tensor_f32(grads[p])[at], damo_tensor_f32(gref)[at]);
    if (r > r_worst) r_worst = r;
  }
  double rfd = -1;
  if (param_values <= FD_MAX_VALUES) {
    damo_attention_capture_probs(out, NULL);
    rfd = fd_check(name, g, loss, nparam, vals, grads);
  }
  if (getenv("TEST_OPS_VERBOSE"))
    fprintf(stderr, "    %-22s worst/tol: forward %.3f, all %.3f, finite differences %.3f\n", name, r_out, r_worst,
            rfd);
done:
  damo_graph_free(g);
  free(probs);
  for (int p = 0; p < 4; p++) {
    damo_tensor_free(vals[p]);
    damo_tensor_free(grads[p]);
  }
}

static void test_fixture_loads(void) {
  damo_status st = damo_safetensors_load(FIXTURE, &fx);
  CHECK_MSG(st == DAMO_OK, "loading %s: %s (regenerate with /usr/bin/python3 tests/ref/gen_transformer_ops.py)",
            FIXTURE, damo_last_error());
  if (st != DAMO_OK) {
    fx = NULL;
    return;
  }
  int cases = 0;
  for (int i = 0; i < fx->count; i++) {
    size_t len = strlen(fx->names[i]);
    if (len > 4 && strcmp(fx->names[i] + len - 4, ".cfg") == 0) cases++;
  }
  CHECK_MSG(cases == FIXTURE_CASES, "fixture has %d cases, expected %d", cases, FIXTURE_CASES);
}

/* Runs every fixture case whose name starts with prefix. */
static void run_family(const char *prefix) {
  int n = 0;
  if (!fx) {
    CHECK_MSG(0, "no fixture");
    return;
  }
  for (int i = 0; i < fx->count; i++) {
    const char *k = fx->names[i];
    size_t len = strlen(k);
    if (len < 4 || strcmp(k + len - 4, ".cfg") != 0 || strncmp(k, prefix, strlen(prefix)) != 0) continue;
    char name[96];
    snprintf(name, sizeof name, "%.*s", (int)(len - 4), k);
    run_case(name);
    n++;
  }
  CHECK_MSG(n > 0, "no fixture case starts with %s", prefix);
}

static void test_layer_norm(void) { run_family("ln_"); }
static void test_gelu(void) { run_family("gelu_"); }
static void test_attention(void) { run_family("attn_"); }

/* ------------------------------------------------------------------ attention specifics */

/* Self-attention on one param x used as q, k and v: the three gradients land in one buffer,
 * written by several threads; finite differences check the sum. */
static void test_attention_shared_qkv(void) {
  int64_t shape[3] = {3, 6, 8};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 3, shape), *gx = damo_tensor_new(DAMO_F32, 3, shape);
  damo_tensor *dout = damo_tensor_new(DAMO_F32, 3, shape);
  fill_random(damo_tensor_f32(x), 144, 7, 1.0f);
  fill_random(damo_tensor_f32(dout), 144, 8, 1.0f);
  for (int causal = 0; causal < 2; causal++) {
    damo_graph *g = damo_graph_new(1);
    damo_node *xn = damo_param(g, "x", x, gx);
    damo_node *att = damo_attention(g, xn, xn, xn, 2, causal, NULL);
    damo_node *loss = damo_sum(g, damo_mul(g, att, damo_constant(g, dout)), DAMO_ALL_AXES, 0);
    CHECK(damo_graph_compile(g, loss, 1, &loss) == DAMO_OK);
    CHECK(damo_graph_forward(g, 1) == DAMO_OK);
    CHECK(damo_graph_backward(g) == DAMO_OK);
    fd_check(causal ? "shared_qkv_causal" : "shared_qkv", g, loss, 1, &x, &gx);
    damo_graph_free(g);
  }
  damo_tensor_free(x);
  damo_tensor_free(gx);
  damo_tensor_free(dout);
}

/* An inference graph with q, k, v and the mask as inputs, built for 3 and run with 2: the
 * output equals the reference's first two batch rows. */
static void test_attention_smaller_batch(void) {
  const char *name = "attn_mask_h2";
  damo_tensor *t[4], *out_ref = fixture(name, "out");
  for (int i = 0; i < 4; i++) {
    char suf[8];
    snprintf(suf, sizeof suf, "in%d", i);
    t[i] = fixture(name, suf);
    if (!t[i] || !out_ref) {
      CHECK_MSG(0, "no fixture case %s", name);
      return;
    }
  }
  damo_graph *g = damo_graph_new(1);
  damo_node *in[4];
  for (int i = 0; i < 4; i++) in[i] = damo_input(g, "in", DAMO_F32, t[i]->ndim, t[i]->shape);
  damo_node *att = damo_attention(g, in[0], in[1], in[2], 2, 0, in[3]);
  CHECK(damo_graph_compile(g, NULL, 1, &att) == DAMO_OK);
  CHECK(damo_graph_set_batch(g, 2) == DAMO_OK);
  for (int i = 0; i < 4; i++) CHECK(damo_graph_bind(g, in[i], t[i]->data) == DAMO_OK);
  CHECK(damo_graph_forward(g, 0) == DAMO_OK);
  CHECK(damo_node_shape(att)[0] == 2);
  CHECK_CLOSE(damo_node_data(att), damo_tensor_f32(out_ref), 2 * 6 * 8, REF_ATOL, REF_RTOL);
  damo_graph_free(g);
}

/* Results do not depend on the thread count: every (batch, head) is one thread's, in a fixed
 * order of GEMMs. Compared bit for bit, forward and gradients. */
static void test_attention_thread_independent(void) {
  int64_t shape[3] = {4, 140, 16}, mshape[2] = {4, 140};
  int64_t n = 4 * 140 * 16;
  damo_tensor *v[3], *gr[3], *mask = damo_tensor_new(DAMO_F32, 2, mshape), *dout = damo_tensor_new(DAMO_F32, 3, shape);
  float *first = malloc((size_t)(4 * n) * sizeof(float));
  for (int i = 0; i < 3; i++) {
    v[i] = damo_tensor_new(DAMO_F32, 3, shape);
    gr[i] = damo_tensor_new(DAMO_F32, 3, shape);
    fill_random(damo_tensor_f32(v[i]), n, 20 + i, 1.5f);
  }
  fill_random(damo_tensor_f32(dout), n, 30, 1.0f);
  for (int i = 0; i < 4 * 140; i++) damo_tensor_f32(mask)[i] = (i % 140) < 140 - 17 * (i / 140) ? 1.0f : 0.0f;
  for (int run = 0; run < 2; run++) {
    damo_set_num_threads(run == 0 ? 1 : 0);
    damo_graph *g = damo_graph_new(1);
    damo_node *q = damo_param(g, "q", v[0], gr[0]), *k = damo_param(g, "k", v[1], gr[1]);
    damo_node *vv = damo_param(g, "v", v[2], gr[2]), *m = damo_input(g, "mask", DAMO_F32, 2, mshape);
    damo_node *att = damo_attention(g, q, k, vv, 4, 0, m);
    damo_node *loss = damo_sum(g, damo_mul(g, att, damo_constant(g, dout)), DAMO_ALL_AXES, 0);
    damo_node *outs[2] = {att, loss};
    CHECK(damo_graph_compile(g, loss, 2, outs) == DAMO_OK);
    CHECK(damo_graph_bind(g, m, mask->data) == DAMO_OK);
    CHECK(damo_graph_forward(g, 1) == DAMO_OK);
    CHECK(damo_graph_backward(g) == DAMO_OK);
    const float *now[4] = {damo_node_data(att), damo_tensor_f32(gr[0]), damo_tensor_f32(gr[1]), damo_tensor_f32(gr[2])};
    for (int i = 0; i < 4; i++) {
      if (run == 0) memcpy(first + i * n, now[i], (size_t)n * sizeof(float));
      else CHECK_MSG(memcmp(first + i * n, now[i], (size_t)n * sizeof(float)) == 0, "tensor %d differs", i);
    }
    damo_graph_free(g);
  }
  damo_set_num_threads(0);
  free(first);
  for (int i = 0; i < 3; i++) {
    damo_tensor_free(v[i]);
    damo_tensor_free(gr[i]);
  }
  damo_tensor_free(mask);
  damo_tensor_free(dout);
}

/* Dropout on the probabilities: off in evaluation (the output equals a graph without it);
 * in training each visible probability is either dropped or scaled by 1 / (1 - rate) (seen
 * through the capture), the dropped share is near the rate, the output is the dropped
 * probabilities times V, the same seed gives the same mask and the next forward another,
 * and the gradients (q, k, v) match finite differences taken under the same mask. */
static void test_attention_dropout(void) {
  enum { B = 2, T = 24, C = 8, H = 2 };
  const float rate = 0.4f;
  int64_t shape[3] = {B, T, C}, mshape[2] = {B, T}, n = B * T * C;
  damo_tensor *v[3], *gr[3], *mask = damo_tensor_new(DAMO_F32, 2, mshape), *dout = damo_tensor_new(DAMO_F32, 3, shape);
  for (int i = 0; i < 3; i++) {
    v[i] = damo_tensor_new(DAMO_F32, 3, shape);
    gr[i] = damo_tensor_new(DAMO_F32, 3, shape);
    fill_random(damo_tensor_f32(v[i]), n, 40 + i, 1.0f);
  }
  fill_random(damo_tensor_f32(dout), n, 50, 1.0f);
  for (int i = 0; i < B * T; i++) damo_tensor_f32(mask)[i] = i / T == 1 && i % T >= T - 5 ? 0.0f : 1.0f;
  float *p_eval = malloc(sizeof(float) * B * H * T * T), *p_train = malloc(sizeof(float) * B * H * T * T);
  float *o_eval = malloc(sizeof(float) * (size_t)n), *o_first = malloc(sizeof(float) * (size_t)n);
  for (int causal = 0; causal < 2; causal++) {
    damo_graph *g = damo_graph_new(3), *plain = damo_graph_new(3);
    damo_node *att = NULL, *loss = NULL, *plain_att = NULL;
    for (int which = 0; which < 2; which++) {
      damo_graph *gg = which ? plain : g;
      damo_node *q = damo_param(gg, "q", v[0], gr[0]), *k = damo_param(gg, "k", v[1], gr[1]);
      damo_node *vv = damo_param(gg, "v", v[2], gr[2]), *m = damo_constant(gg, mask);
      damo_node *a = damo_attention(gg, q, k, vv, H, causal, m);
      damo_node *l = damo_sum(gg, damo_mul(gg, a, damo_constant(gg, dout)), DAMO_ALL_AXES, 0);
      damo_node *outs[2] = {a, l};
      CHECK(damo_graph_compile(gg, l, 2, outs) == DAMO_OK);
      if (which) plain_att = a;
      else att = a, loss = l;
    }
    CHECK(damo_attention_set_dropout(att, rate) == DAMO_OK);
    CHECK(damo_attention_capture_probs(att, p_eval) == DAMO_OK);
    CHECK(damo_graph_forward(g, 0) == DAMO_OK && damo_graph_forward(plain, 0) == DAMO_OK);
    CHECK(memcmp(damo_node_data(att), damo_node_data(plain_att), sizeof(float) * (size_t)n) == 0);
    memcpy(o_eval, damo_node_data(att), sizeof(float) * (size_t)n);

    CHECK(damo_attention_capture_probs(att, p_train) == DAMO_OK);
    damo_rng_seed(&g->rng, 5);
    CHECK(damo_graph_forward(g, 1) == DAMO_OK);
    int visible = 0, dropped = 0, wrong = 0;
    for (int64_t e = 0; e < B * H * T * T; e++) {
      if (p_eval[e] == 0.0f) {
        wrong += p_train[e] != 0.0f;
        continue;
      }
      visible++;
      if (p_train[e] == 0.0f) dropped++;
      else wrong += fabsf(p_train[e] - p_eval[e] / (1.0f - rate)) > 1e-6f * p_train[e];
    }
    CHECK_MSG(wrong == 0, "causal %d: %d probabilities neither dropped nor scaled by 1/(1-rate)", causal, wrong);
    CHECK_MSG(fabs((double)dropped / visible - rate) < 0.06, "causal %d: %d of %d dropped at rate %.2f", causal, dropped,
              visible, (double)rate);
    double worst = 0; /* out = P_dropped V, per head */
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++)
        for (int i = 0; i < T; i++)
          for (int c = 0; c < C / H; c++) {
            double ref = 0;
            for (int j = 0; j < T; j++)
              ref += (double)p_train[((b * H + h) * T + i) * T + j] * damo_tensor_f32(v[2])[(b * T + j) * C + h * (C / H) + c];
            double got = damo_node_data(att)[(b * T + i) * C + h * (C / H) + c];
            worst = fmax(worst, fabs(got - ref) / (1e-5 + 1e-5 * fabs(ref)));
          }
    CHECK_MSG(worst <= 1.0, "causal %d: output is not the dropped probabilities times V (%.3g x tol)", causal, worst);
    memcpy(o_first, damo_node_data(att), sizeof(float) * (size_t)n);
    CHECK(damo_graph_forward(g, 1) == DAMO_OK); /* the generator moved on: another mask */
    CHECK(memcmp(o_first, damo_node_data(att), sizeof(float) * (size_t)n) != 0);
    CHECK(damo_attention_capture_probs(att, NULL) == DAMO_OK);

    fd_reseed = 5;
    CHECK(fd_forward(g) == DAMO_OK);
    CHECK(memcmp(o_first, damo_node_data(att), sizeof(float) * (size_t)n) == 0); /* same seed, same mask */
    for (int i = 0; i < 3; i++) memset(gr[i]->data, 0, sizeof(float) * (size_t)n);
    CHECK(damo_graph_backward(g) == DAMO_OK);
    fd_check(causal ? "attention_dropout_causal" : "attention_dropout", g, loss, 3, v, gr);
    fd_reseed = 0;
    damo_graph_free(g);
    damo_graph_free(plain);
  }
  damo_graph *g = damo_graph_new(1);
  damo_node *x = damo_input(g, "x", DAMO_F32, 3, shape);
  damo_node *a = damo_attention(g, x, x, x, H, 0, NULL);
  CHECK(damo_attention_set_dropout(a, 1.0f) == DAMO_ERR_INVALID_ARG && strstr(damo_last_error(), "outside [0, 1)"));
  CHECK(damo_attention_set_dropout(x, 0.1f) == DAMO_ERR_INVALID_ARG && strstr(damo_last_error(), "not an attention"));
  damo_clear_error();
  damo_graph_free(g);
  free(p_eval), free(p_train), free(o_eval), free(o_first);
  for (int i = 0; i < 3; i++) {
    damo_tensor_free(v[i]);
    damo_tensor_free(gr[i]);
  }
  damo_tensor_free(mask);
  damo_tensor_free(dout);
}

/* No (T x T) buffer per head: the op's private memory grows linearly with T and stays far
 * below B H T^2 floats. */
static void test_attention_memory_linear(void) {
  size_t aux[2];
  int64_t B = 4, H = 4, C = 64;
  for (int i = 0; i < 2; i++) {
    int64_t T = 1024 << i, shape[3] = {B, T, C};
    damo_graph *g = damo_graph_new(1);
    damo_node *x = damo_input(g, "x", DAMO_F32, 3, shape);
    damo_node *att = damo_attention(g, x, x, x, (int)H, 1, NULL);
    CHECK(att != NULL);
    if (!att) {
      damo_graph_free(g);
      return;
    }
    aux[i] = att->aux_bytes;
    size_t per_head_matrices = (size_t)(B * H * T * T) * sizeof(float);
    CHECK_MSG(aux[i] * 8 < per_head_matrices, "T=%lld: aux %zu bytes, B H T^2 floats %zu", (long long)T, aux[i],
              per_head_matrices);
    damo_graph_free(g);
  }
  CHECK_MSG(aux[1] <= 2 * aux[0] + 64, "aux grows faster than T: %zu -> %zu bytes", aux[0], aux[1]);
}

/* Output and gradients (q, k, v) of one masked attention forward and backward, at the node's
 * precision `node` (-1: not set) under the process-wide precision `process`. */
static void attention_at(int node, damo_matmul_precision process, damo_tensor *const *v, damo_tensor *const *gr,
                         const damo_tensor *mask, const damo_tensor *dout, float *out) {
  const int64_t n = damo_tensor_numel(v[0]);
  CHECK(damo_set_matmul_precision(process) == DAMO_OK);
  damo_graph *g = damo_graph_new(1);
  damo_node *q = damo_param(g, "q", v[0], gr[0]), *k = damo_param(g, "k", v[1], gr[1]);
  damo_node *vv = damo_param(g, "v", v[2], gr[2]);
  damo_node *att = damo_attention(g, q, k, vv, 2, 0, damo_constant(g, mask));
  damo_node *loss = damo_sum(g, damo_mul(g, att, damo_constant(g, dout)), DAMO_ALL_AXES, 0);
  if (node >= 0) CHECK(damo_attention_set_precision(att, (damo_matmul_precision)node) == DAMO_OK);
  damo_node *outs[2] = {att, loss};
  for (int i = 0; i < 3; i++) memset(gr[i]->data, 0, damo_tensor_nbytes(gr[i]));
  CHECK(damo_graph_compile(g, loss, 2, outs) == DAMO_OK && damo_graph_forward(g, 1) == DAMO_OK &&
        damo_graph_backward(g) == DAMO_OK);
  memcpy(out, damo_node_data(att), (size_t)n * sizeof(float));
  for (int i = 0; i < 3; i++) memcpy(out + (i + 1) * n, gr[i]->data, (size_t)n * sizeof(float));
  damo_graph_free(g);
  CHECK(damo_set_matmul_precision(DAMO_MATMUL_F32) == DAMO_OK);
}

/* damo_attention_set_precision: a node set to bf16 computes what the process-wide bf16
 * precision gives (forward and gradients, bit for bit), which is not f32's but close to it; a
 * node set to f32 under a bf16 process computes f32's; bad arguments are refused. */
static void test_attention_precision(void) {
  enum { B = 2, T = 40, C = 16 };
  int64_t shape[3] = {B, T, C}, mshape[2] = {B, T}, n = B * T * C;
  damo_tensor *v[3], *gr[3], *mask = damo_tensor_new(DAMO_F32, 2, mshape), *dout = damo_tensor_new(DAMO_F32, 3, shape);
  for (int i = 0; i < 3; i++) {
    v[i] = damo_tensor_new(DAMO_F32, 3, shape);
    gr[i] = damo_tensor_new(DAMO_F32, 3, shape);
    fill_random(damo_tensor_f32(v[i]), n, 60 + i, 1.0f);
  }
  fill_random(damo_tensor_f32(dout), n, 70, 1.0f);
  for (int i = 0; i < B * T; i++) damo_tensor_f32(mask)[i] = i % T < T - 7 * (i / T) ? 1.0f : 0.0f;
  float *f32 = malloc(sizeof(float) * 4 * (size_t)n), *node_bf16 = malloc(sizeof(float) * 4 * (size_t)n);
  float *process_bf16 = malloc(sizeof(float) * 4 * (size_t)n), *node_f32 = malloc(sizeof(float) * 4 * (size_t)n);
  attention_at(-1, DAMO_MATMUL_F32, v, gr, mask, dout, f32);
  attention_at(DAMO_MATMUL_BF16, DAMO_MATMUL_F32, v, gr, mask, dout, node_bf16);
  attention_at(-1, DAMO_MATMUL_BF16, v, gr, mask, dout, process_bf16);
  attention_at(DAMO_MATMUL_F32, DAMO_MATMUL_BF16, v, gr, mask, dout, node_f32);
  CHECK(memcmp(node_bf16, process_bf16, sizeof(float) * 4 * (size_t)n) == 0);
  CHECK(memcmp(node_f32, f32, sizeof(float) * 4 * (size_t)n) == 0);
  for (int part = 0; part < 4; part++) {
    double worst = 0, size = 0;
    for (int64_t i = part * n; i < (part + 1) * n; i++) {
      worst = fmax(worst, fabs((double)node_bf16[i] - f32[i]));
      size = fmax(size, fabs((double)f32[i]));
    }
    CHECK_MSG(worst > 0 && worst < 2e-2 * size, "part %d: bf16 products %.3g from f32 (values up to %.3g)", part, worst,
              size);
  }
  damo_graph *g = damo_graph_new(1);
  damo_node *x = damo_input(g, "x", DAMO_F32, 3, shape);
  damo_node *a = damo_attention(g, x, x, x, 2, 0, NULL);
  CHECK(damo_attention_set_precision(x, DAMO_MATMUL_BF16) == DAMO_ERR_INVALID_ARG &&
        strstr(damo_last_error(), "not an attention"));
  CHECK(damo_attention_set_precision(a, (damo_matmul_precision)7) == DAMO_ERR_INVALID_ARG &&
        strstr(damo_last_error(), "neither"));
  damo_clear_error();
  damo_graph_free(g);
  free(f32), free(node_bf16), free(process_bf16), free(node_f32);
  for (int i = 0; i < 3; i++) {
    damo_tensor_free(v[i]);
    damo_tensor_free(gr[i]);
  }
  damo_tensor_free(mask);
  damo_tensor_free(dout);
}

static void test_attention_errors(void) {
  damo_graph *g = damo_graph_new(1);
  int64_t s1[3] = {2, 5, 12}, s2[3] = {2, 7, 12}, sm[2] = {2, 6};
  damo_node *q = damo_input(g, "q", DAMO_F32, 3, s1), *k = damo_input(g, "k", DAMO_F32, 3, s2);
  damo_node *m = damo_input(g, "m", DAMO_F32, 2, sm);
  CHECK(damo_attention(g, q, q, q, 5, 0, NULL) == NULL); /* 12 channels, 5 heads */
  damo_graph_free(g);
  g = damo_graph_new(1);
  q = damo_input(g, "q", DAMO_F32, 3, s1);
  k = damo_input(g, "k", DAMO_F32, 3, s2);
  CHECK(damo_attention(g, q, k, k, 3, 1, NULL) == NULL); /* causal needs Tq == Tk */
  damo_graph_free(g);
  g = damo_graph_new(1);
  q = damo_input(g, "q", DAMO_F32, 3, s1);
  k = damo_input(g, "k", DAMO_F32, 3, s2);
  m = damo_input(g, "m", DAMO_F32, 2, sm);
  CHECK(damo_attention(g, q, k, k, 3, 0, m) == NULL); /* the mask must be (B, Tk) */
  damo_graph_free(g);
  g = damo_graph_new(1);
  q = damo_input(g, "q", DAMO_F32, 3, s1);
  k = damo_input(g, "k", DAMO_F32, 3, s2);
  damo_node *ok = damo_attention(g, q, k, k, 3, 0, NULL); /* cross attention: Tq != Tk */
  CHECK(ok != NULL && damo_node_shape(ok)[1] == 5);
  float buf[1];
  CHECK(damo_attention_capture_probs(q, buf) != DAMO_OK); /* not an attention node */
  damo_graph_free(g);
  g = damo_graph_new(1);
  int64_t gs[1] = {11};
  damo_node *x = damo_input(g, "x", DAMO_F32, 3, s1), *gm = damo_input(g, "gamma", DAMO_F32, 1, gs);
  CHECK(damo_layer_norm(g, x, gm, gm, 1e-5f) == NULL); /* gamma (11) vs 12 channels */
  damo_graph_free(g);
  damo_clear_error();
}

/* ------------------------------------------------------------------ fused head + loss */

/* Loss and gradients of linear_cross_entropy(x, w, b, y) from one graph, x, w and b (b may
 * be NULL) params. With chunk_rows < 0 the unfused graph softmax_cross_entropy(matmul(x, w^T)
 * + b, y). training 0 runs the forward as a validation pass before the backward. */
static float linear_ce_run(int chunk_rows, int training, damo_tensor *x, damo_tensor *w, damo_tensor *b,
                           const int32_t *labels, damo_tensor *gx, damo_tensor *gw, damo_tensor *gb) {
  damo_graph *g = damo_graph_new(1);
  int64_t n_rows = x->shape[0];
  damo_node *xn = damo_param(g, "x", x, gx), *wn = damo_param(g, "w", w, gw), *bn = b ? damo_param(g, "b", b, gb) : NULL;
  damo_node *y = damo_input(g, "y", DAMO_I32, 1, &n_rows), *loss;
  if (chunk_rows < 0) {
    damo_node *logits = damo_matmul(g, xn, wn, 0, 1);
    loss = damo_softmax_cross_entropy(g, bn ? damo_add(g, logits, bn) : logits, y);
  } else {
    loss = damo_linear_cross_entropy_chunked(g, xn, wn, bn, y, chunk_rows);
  }
  float value = NAN;
  if (damo_graph_compile(g, loss, 0, NULL) == DAMO_OK && damo_graph_bind(g, y, labels) == DAMO_OK &&
      damo_graph_forward(g, training) == DAMO_OK && damo_graph_backward(g) == DAMO_OK)
    value = damo_node_data(loss)[0];
  damo_graph_free(g);
  return value;
}

/* The unfused reference over only the rows whose label is not ignored; gx_ref gets zeros in
 * the ignored rows. */
static float linear_ce_reference(damo_tensor *x, damo_tensor *w, damo_tensor *b, const int32_t *labels,
                                 damo_tensor *gx_ref, damo_tensor *gw_ref, damo_tensor *gb_ref) {
  const int64_t N = x->shape[0], C = x->shape[1];
  int64_t kept = 0;
  for (int64_t r = 0; r < N; r++) kept += labels[r] >= 0;
  int64_t ss[2] = {kept, C};
  damo_tensor *xs = damo_tensor_new(DAMO_F32, 2, ss), *gxs = damo_tensor_new(DAMO_F32, 2, ss);
  int32_t *ys = malloc((size_t)kept * sizeof *ys);
  for (int64_t r = 0, k = 0; r < N; r++)
    if (labels[r] >= 0) {
      memcpy(damo_tensor_f32(xs) + k * C, damo_tensor_f32(x) + r * C, (size_t)C * sizeof(float));
      ys[k++] = labels[r];
    }
  const float loss = linear_ce_run(-1, 1, xs, w, b, ys, gxs, gw_ref, gb_ref);
  memset(gx_ref->data, 0, damo_tensor_nbytes(gx_ref));
  for (int64_t r = 0, k = 0; r < N; r++)
    if (labels[r] >= 0) memcpy(damo_tensor_f32(gx_ref) + r * C, damo_tensor_f32(gxs) + k++ * C, (size_t)C * sizeof(float));
  damo_tensor_free(xs);
  damo_tensor_free(gxs);
  free(ys);
  return loss;
}

static void test_linear_cross_entropy(void) {
  enum { N = 10, C = 8, V = 37 };
  int64_t xs[2] = {N, C}, ws[2] = {V, C}, bs[1] = {V};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 2, xs), *w = damo_tensor_new(DAMO_F32, 2, ws);
  damo_tensor *b = damo_tensor_new(DAMO_F32, 1, bs);
  damo_tensor *gx_ref = damo_tensor_new(DAMO_F32, 2, xs), *gw_ref = damo_tensor_new(DAMO_F32, 2, ws);
  damo_tensor *gb_ref = damo_tensor_new(DAMO_F32, 1, bs), *gb = damo_tensor_new(DAMO_F32, 1, bs);
  damo_tensor *gx = damo_tensor_new(DAMO_F32, 2, xs), *gw = damo_tensor_new(DAMO_F32, 2, ws);
  fill_random(damo_tensor_f32(x), N * C, 21, 1.0f);
  fill_random(damo_tensor_f32(w), V * C, 22, 1.0f);
  fill_random(damo_tensor_f32(b), V, 23, 1.0f);
  int32_t labels[N];
  for (int i = 0; i < N; i++) labels[i] = (i * 11 + 3) % V;
  labels[N - 1] = V - 1;
  /* Without and with a bias and ignored rows (BERT's masked-LM loss). */
  for (int variant = 0; variant < 2; variant++) {
    damo_tensor *bias = variant ? b : NULL;
    if (variant) labels[2] = labels[6] = -100;
    const float want = linear_ce_reference(x, w, bias, labels, gx_ref, gw_ref, gb_ref);
    CHECK(isfinite(want));
    /* One chunk, chunks that divide N, that do not, one row at a time; and a validation
     * forward (no gradient work) followed by a backward. */
    const int chunks[] = {0, 5, 3, 1, 4};
    for (int c = 0; c < 5; c++) {
      const int training = c != 4;
      float got = linear_ce_run(chunks[c], training, x, w, bias, labels, gx, gw, gb);
      CHECK_MSG(fabsf(got - want) <= 1e-6f * fabsf(want), "variant %d chunk %d: loss %.8g vs unfused %.8g", variant,
                chunks[c], got, want);
      CHECK_CLOSE(damo_tensor_f32(gx), damo_tensor_f32(gx_ref), N * C, 1e-6, 1e-5);
      CHECK_CLOSE(damo_tensor_f32(gw), damo_tensor_f32(gw_ref), V * C, 1e-6, 1e-5);
      if (bias) CHECK_CLOSE(damo_tensor_f32(gb), damo_tensor_f32(gb_ref), V, 1e-6, 1e-5);
    }
    /* bf16 products (W packed once per pass where the CPU multiplies bf16 pairs, and read by
     * every chunk): within bf16's rounding of the f32 reference. */
    damo_set_matmul_precision(DAMO_MATMUL_BF16);
    for (int c = 0; c < 5; c++) {
      float got = linear_ce_run(chunks[c], c != 4, x, w, bias, labels, gx, gw, gb);
      CHECK_MSG(fabsf(got - want) <= 1e-2f * fabsf(want), "bf16 variant %d chunk %d: loss %.8g vs f32 %.8g", variant,
                chunks[c], got, want);
      CHECK_CLOSE(damo_tensor_f32(gx), damo_tensor_f32(gx_ref), N * C, 2e-3, 2e-2);
      CHECK_CLOSE(damo_tensor_f32(gw), damo_tensor_f32(gw_ref), V * C, 2e-3, 2e-2);
    }
    damo_set_matmul_precision(DAMO_MATMUL_F32);
  }
  /* Finite differences through the fused op itself, chunked, with the bias. */
  damo_graph *g = damo_graph_new(1);
  int64_t n_rows = N;
  damo_node *xn = damo_param(g, "x", x, gx), *wn = damo_param(g, "w", w, gw), *bn = damo_param(g, "b", b, gb);
  damo_node *y = damo_input(g, "y", DAMO_I32, 1, &n_rows);
  damo_node *loss = damo_linear_cross_entropy_chunked(g, xn, wn, bn, y, 3);
  CHECK(damo_graph_compile(g, loss, 1, &loss) == DAMO_OK && damo_graph_bind(g, y, labels) == DAMO_OK);
  CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
  damo_tensor *params[3] = {x, w, b}, *grads[3] = {gx, gw, gb};
  fd_check("linear_ce", g, loss, 3, params, grads);
  /* Every row ignored: loss 0, no gradient. */
  int32_t none[N];
  for (int i = 0; i < N; i++) none[i] = -100;
  CHECK(damo_graph_bind(g, y, none) == DAMO_OK && damo_graph_forward(g, 1) == DAMO_OK);
  CHECK(damo_node_data(loss)[0] == 0.0f);
  CHECK(damo_graph_backward(g) == DAMO_OK);
  for (int i = 0; i < V; i++) CHECK(damo_tensor_f32(gb)[i] == 0.0f);
  /* A label past the vocabulary fails the forward and names the row. */
  CHECK(damo_graph_bind(g, y, labels) == DAMO_OK);
  labels[7] = V;
  CHECK(damo_graph_forward(g, 1) == DAMO_ERR_INVALID_ARG);
  CHECK(strstr(damo_last_error(), "row 7") != NULL);
  damo_clear_error();
  damo_graph_free(g);
  /* Shapes: the weight's channels must match x's; the bias must be (V,). */
  g = damo_graph_new(1);
  int64_t bad[2] = {V, C + 1}, bad_b[1] = {V + 1};
  damo_node *xi = damo_input(g, "x", DAMO_F32, 2, xs), *wi = damo_input(g, "w", DAMO_F32, 2, bad);
  CHECK(damo_linear_cross_entropy(g, xi, wi, NULL, damo_input(g, "y", DAMO_I32, 1, &n_rows)) == NULL);
  damo_graph_free(g);
  g = damo_graph_new(1);
  xi = damo_input(g, "x", DAMO_F32, 2, xs);
  wi = damo_input(g, "w", DAMO_F32, 2, ws);
  CHECK(damo_linear_cross_entropy(g, xi, wi, damo_input(g, "b", DAMO_F32, 1, bad_b),
                                  damo_input(g, "y", DAMO_I32, 1, &n_rows)) == NULL);
  damo_graph_free(g);
  damo_clear_error();
  damo_tensor *all[] = {x, w, b, gx_ref, gw_ref, gb_ref, gx, gw, gb};
  for (int i = 0; i < 9; i++) damo_tensor_free(all[i]);
}

int main(void) {
  RUN(test_fixture_loads);
  RUN(test_layer_norm);
  RUN(test_gelu);
  RUN(test_attention);
  RUN(test_attention_shared_qkv);
  RUN(test_attention_smaller_batch);
  RUN(test_attention_thread_independent);
  RUN(test_attention_memory_linear);
  RUN(test_attention_dropout);
  RUN(test_attention_precision);
  RUN(test_attention_errors);
  RUN(test_linear_cross_entropy);
  damo_tensor_dict_free(fx);
  return test_summary("test_transformer_ops");
}
