/* test_ops.c - every primitive op's forward and backward against PyTorch references
 * (tests/fixtures/ops.safetensors, written by tests/ref/gen_ops.py) and against central
 * finite differences; dropout statistics; builder shape errors; running a graph with a
 * smaller batch than it was built for.
 *
 * For each fixture case the differentiable inputs become params (value from the fixture,
 * zero-filled grad), integer labels become a bound input, and the graph computes
 *     loss = sum(op(inputs) * dout)
 * with dout a constant, so after backward each param's grad is d sum(out*dout)/d in_i,
 * which is what the fixture's <case>.grad<i> holds.
 * TEST_OPS_VERBOSE=1 prints each case's worst error / tolerance ratios. */
#include "damo.h"
#include "harness.h"
#include "kernels/cpu/vmath.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE DAMO_SOURCE_DIR "/tests/fixtures/ops.safetensors"

/* Tolerances against the PyTorch reference (float64 computed, stored as float32). */
#define REF_ATOL 1e-5
#define REF_RTOL 1e-4
/* Finite differences: |fd - analytic| <= FD_ATOL + FD_RTOL * |analytic|. */
#define FD_ATOL 2e-3
#define FD_RTOL 2e-2
#define FD_H 1e-2

static damo_tensor_dict *fx;

/* ------------------------------------------------------------------ case table */

typedef enum {
  OP_MATMUL,
  OP_ADD,
  OP_SUB,
  OP_MUL,
  OP_DIV,
  OP_SCALE,
  OP_RELU,
  OP_SIGMOID,
  OP_TANH,
  OP_EXP,
  OP_LOG,
  OP_SOFTMAX,
  OP_LOG_SOFTMAX,
  OP_SUM,
  OP_MEAN,
  OP_RESHAPE,
  OP_TRANSPOSE,
  OP_SCE,
  OP_BCE,
  OP_MSE,
  OP_SOFT_CE,
  OP_KL
} op_kind;

typedef struct {
  const char *name;
  op_kind op;
  int nin;
  int int_mask; /* bit i: input i is integer (labels): a bound damo_input, no gradient */
  int a0, a1;   /* matmul: trans_a, trans_b; reductions: axis, keepdims */
  int nshape;   /* reshape */
  int64_t shape[4];
  int nperm; /* transpose: 0 = perm NULL */
  int perm[4];
  float factor; /* scale_by */
} op_case;

#define MM(n, ta, tb) {.name = n, .op = OP_MATMUL, .nin = 2, .a0 = ta, .a1 = tb}
#define BIN(n, o) {.name = n, .op = o, .nin = 2}
#define UN(n, o) {.name = n, .op = o, .nin = 1}
#define RED(n, o, ax, k) {.name = n, .op = o, .nin = 1, .a0 = ax, .a1 = k}
#define BIN_SET(prefix, o)                                                                          \
  BIN(prefix "_same", o), BIN(prefix "_row", o), BIN(prefix "_colrow", o), BIN(prefix "_3d", o),    \
      BIN(prefix "_scalar", o), BIN(prefix "_rev", o)
#define RED_SET(prefix, o)                                                                          \
  RED(prefix "_ax0_k0", o, 0, 0), RED(prefix "_ax0_k1", o, 0, 1), RED(prefix "_ax1_k0", o, 1, 0),   \
      RED(prefix "_ax1_k1", o, 1, 1), RED(prefix "_axm1_k0", o, -1, 0), RED(prefix "_axm1_k1", o, -1, 1), \
      RED(prefix "_all_k0", o, DAMO_ALL_AXES, 0), RED(prefix "_all_k1", o, DAMO_ALL_AXES, 1)

static const op_case CASES[] = {
    MM("matmul_nn", 0, 0),
    MM("matmul_tn", 1, 0),
    MM("matmul_nt", 0, 1),
    MM("matmul_tt", 1, 1),
    MM("matmul_bcast4d", 0, 0),
    MM("matmul_bcast4d_nt", 0, 1),
    MM("matmul_batched", 0, 0),
    MM("matmul_batched_tt", 1, 1),
    MM("matmul_bcast_a2d", 0, 0),
    BIN_SET("add", OP_ADD),
    BIN_SET("sub", OP_SUB),
    BIN_SET("mul", OP_MUL),
    BIN_SET("div", OP_DIV),
    {.name = "scale_by", .op = OP_SCALE, .nin = 1, .factor = 0.37f},
    UN("relu", OP_RELU),
    UN("relu_3d", OP_RELU),
    UN("sigmoid", OP_SIGMOID),
    UN("tanh", OP_TANH),
    UN("exp", OP_EXP),
    UN("log", OP_LOG),
    UN("softmax_2d", OP_SOFTMAX),
    UN("softmax_3d", OP_SOFTMAX),
    UN("softmax_big", OP_SOFTMAX),
    UN("log_softmax_2d", OP_LOG_SOFTMAX),
    UN("log_softmax_3d", OP_LOG_SOFTMAX),
    UN("log_softmax_big", OP_LOG_SOFTMAX),
    RED_SET("sum", OP_SUM),
    RED_SET("mean", OP_MEAN),
    {.name = "reshape_3x20", .op = OP_RESHAPE, .nin = 1, .nshape = 2, .shape = {3, 20}},
    {.name = "reshape_3xm1x2", .op = OP_RESHAPE, .nin = 1, .nshape = 3, .shape = {3, -1, 2}},
    {.name = "reshape_0x5x4", .op = OP_RESHAPE, .nin = 1, .nshape = 3, .shape = {0, 5, 4}},
    {.name = "transpose_2d", .op = OP_TRANSPOSE, .nin = 1, .nperm = 0},
    {.name = "transpose_3d_null", .op = OP_TRANSPOSE, .nin = 1, .nperm = 0},
    {.name = "transpose_3d_102", .op = OP_TRANSPOSE, .nin = 1, .nperm = 3, .perm = {1, 0, 2}},
    {.name = "transpose_3d_201", .op = OP_TRANSPOSE, .nin = 1, .nperm = 3, .perm = {2, 0, 1}},
    {.name = "sce", .op = OP_SCE, .nin = 2, .int_mask = 2},
    {.name = "sce_big", .op = OP_SCE, .nin = 2, .int_mask = 2},
    BIN("bce", OP_BCE),
    BIN("bce_big", OP_BCE),
    BIN("mse", OP_MSE),
    BIN("soft_ce", OP_SOFT_CE),
    BIN("soft_ce_big", OP_SOFT_CE),
    BIN("kl_div", OP_KL),
    BIN("kl_div_big", OP_KL),
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

static damo_node *build_op(damo_graph *g, const op_case *c, damo_node **in) {
  switch (c->op) {
  case OP_MATMUL: return damo_matmul(g, in[0], in[1], c->a0, c->a1);
  case OP_ADD: return damo_add(g, in[0], in[1]);
  case OP_SUB: return damo_sub(g, in[0], in[1]);
  case OP_MUL: return damo_mul(g, in[0], in[1]);
  case OP_DIV: return damo_div(g, in[0], in[1]);
  case OP_SCALE: return damo_scale_by(g, in[0], c->factor);
  case OP_RELU: return damo_relu(g, in[0]);
  case OP_SIGMOID: return damo_sigmoid(g, in[0]);
  case OP_TANH: return damo_tanh(g, in[0]);
  case OP_EXP: return damo_exp(g, in[0]);
  case OP_LOG: return damo_log(g, in[0]);
  case OP_SOFTMAX: return damo_softmax(g, in[0]);
  case OP_LOG_SOFTMAX: return damo_log_softmax(g, in[0]);
  case OP_SUM: return damo_sum(g, in[0], c->a0, c->a1);
  case OP_MEAN: return damo_mean(g, in[0], c->a0, c->a1);
  case OP_RESHAPE: return damo_reshape(g, in[0], c->nshape, c->shape);
  case OP_TRANSPOSE: return damo_transpose(g, in[0], c->nperm ? c->perm : NULL);
  case OP_SCE: return damo_softmax_cross_entropy(g, in[0], in[1]);
  case OP_BCE: return damo_bce_with_logits(g, in[0], in[1]);
  case OP_MSE: return damo_mse(g, in[0], in[1]);
  case OP_SOFT_CE: return damo_soft_cross_entropy(g, in[0], in[1]);
  case OP_KL: return damo_kl_divergence(g, in[0], in[1]);
  }
  return NULL;
}

/* ------------------------------------------------------------------ helpers */

static damo_tensor *fixture(const char *cname, const char *suffix) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", cname, suffix);
  return fx ? damo_tensor_dict_get(fx, key) : NULL;
}

static int same_shape(int nd, const int64_t *s, const damo_tensor *t) {
  if (nd != t->ndim) return 0;
  for (int i = 0; i < nd; i++)
    if (s[i] != t->shape[i]) return 0;
  return 1;
}

static const char *shape_str(int nd, const int64_t *s, char *buf, size_t cap) {
  return damo_shape_string(nd, s, buf, cap);
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

/* Central finite differences of the scalar loss node w.r.t. every element of every param
 * tensor (perturbed in place: params read the caller's storage), forward only, compared with
 * the analytic gradients in grads[] (already computed by backward). Returns the worst ratio of
 * error to tolerance (<= 1 passes); one CHECK per param. */
static double fd_check(const char *cname, damo_graph *g, damo_node *loss, int n, damo_tensor *const *vals,
                       damo_tensor *const *grads, double h) {
  double worst_all = 0;
  for (int p = 0; p < n; p++) {
    float *v = damo_tensor_f32(vals[p]);
    const float *an = damo_tensor_f32(grads[p]);
    int64_t ne = damo_tensor_numel(vals[p]);
    double worst = 0, fd_at = 0, an_at = 0;
    int64_t at = -1;
    int failed_run = 0;
    for (int64_t i = 0; i < ne && !failed_run; i++) {
      float orig = v[i];
      float vp = (float)(orig + h), vm = (float)(orig - h);
      v[i] = vp;
      damo_status s1 = damo_graph_forward(g, 0);
      double lp = s1 == DAMO_OK ? (double)damo_node_data(loss)[0] : NAN;
      v[i] = vm;
      damo_status s2 = damo_graph_forward(g, 0);
      double lm = s2 == DAMO_OK ? (double)damo_node_data(loss)[0] : NAN;
      v[i] = orig;
      if (s1 != DAMO_OK || s2 != DAMO_OK) {
        failed_run = 1;
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
    /* restore the forward state the caller had */
    damo_graph_forward(g, 0);
    if (!failed_run)
      CHECK_MSG(worst <= 1.0, "%s: grad%d vs finite differences: worst %.3g x tolerance at [%lld]: fd %.7g analytic %.7g",
                cname, p, worst, (long long)at, fd_at, an_at);
    if (!(worst <= worst_all)) worst_all = worst;
  }
  return worst_all;
}

/* ------------------------------------------------------------------ fixture cases */

static int run_case(const op_case *c) {
  int ok_before = test_failed;
  char sa[96], sb[96];
  damo_tensor *in[4] = {0}, *vals[4] = {0}, *grads[4] = {0};
  int param_of[4] = {0}, nparam = 0;
  damo_node *nodes[4] = {0};
  damo_tensor *out_ref = fixture(c->name, "out"), *dout = fixture(c->name, "dout");
  CHECK_MSG(out_ref && dout, "%s: fixture lacks .out/.dout", c->name);
  if (!out_ref || !dout) return 0;

  damo_graph *g = damo_graph_new(1);
  for (int i = 0; i < c->nin; i++) {
    char suf[16];
    snprintf(suf, sizeof suf, "in%d", i);
    in[i] = fixture(c->name, suf);
    CHECK_MSG(in[i] != NULL, "%s: fixture lacks .%s", c->name, suf);
    if (!in[i]) goto done;
    if (c->int_mask & (1 << i)) {
      CHECK(in[i]->dtype == DAMO_I32);
      nodes[i] = damo_input(g, "labels", DAMO_I32, in[i]->ndim, in[i]->shape);
    } else {
      vals[nparam] = damo_tensor_clone(in[i]);
      grads[nparam] = damo_tensor_new(DAMO_F32, in[i]->ndim, in[i]->shape);
      char pname[16];
      snprintf(pname, sizeof pname, "p%d", i);
      nodes[i] = damo_param(g, pname, vals[nparam], grads[nparam]);
      param_of[nparam++] = i;
    }
  }
  damo_node *out = build_op(g, c, nodes);
  CHECK_MSG(out != NULL, "%s: builder failed: %s: %s", c->name, damo_status_name(damo_graph_status(g)),
            damo_last_error());
  if (!out) goto done;
  CHECK_MSG(same_shape(damo_node_ndim(out), damo_node_shape(out), out_ref), "%s: output shape %s, PyTorch %s",
            c->name, shape_str(damo_node_ndim(out), damo_node_shape(out), sa, sizeof sa),
            shape_str(out_ref->ndim, out_ref->shape, sb, sizeof sb));
  if (!same_shape(damo_node_ndim(out), damo_node_shape(out), out_ref)) goto done;

  damo_node *dc = damo_constant(g, dout);
  damo_node *loss = damo_sum(g, damo_mul(g, out, dc), DAMO_ALL_AXES, 0);
  CHECK_MSG(loss != NULL, "%s: loss build failed: %s", c->name, damo_last_error());
  if (!loss) goto done;
  damo_node *outs[2] = {out, loss};
  damo_status st = damo_graph_compile(g, loss, 2, outs);
  CHECK_MSG(st == DAMO_OK, "%s: compile: %s: %s", c->name, damo_status_name(st), damo_last_error());
  if (st != DAMO_OK) goto done;
  for (int i = 0; i < c->nin; i++)
    if (c->int_mask & (1 << i)) {
      st = damo_graph_bind(g, nodes[i], in[i]->data);
      CHECK_MSG(st == DAMO_OK, "%s: bind: %s", c->name, damo_last_error());
    }
  st = damo_graph_forward(g, 1);
  CHECK_MSG(st == DAMO_OK, "%s: forward: %s: %s", c->name, damo_status_name(st), damo_last_error());
  if (st != DAMO_OK) goto done;

  int64_t n = damo_tensor_numel(out_ref), at;
  double r = worst_ratio(damo_node_data(out), damo_tensor_f32(out_ref), n, REF_ATOL, REF_RTOL, &at);
  CHECK_MSG(r <= 1.0, "%s: forward vs PyTorch: worst %.3g x tolerance at [%lld]: damo %.8g torch %.8g", c->name, r,
            (long long)at, damo_node_data(out)[at], damo_tensor_f32(out_ref)[at]);
  double r_out = r;

  /* the loss itself: sum(out * dout) in double from the reference */
  double lref = 0;
  for (int64_t i = 0; i < n; i++) lref += (double)damo_tensor_f32(out_ref)[i] * damo_tensor_f32(dout)[i];
  CHECK_MSG(fabs(damo_node_data(loss)[0] - lref) <= 1e-4 + 1e-4 * fabs(lref), "%s: loss %.8g, reference %.8g",
            c->name, damo_node_data(loss)[0], lref);

  st = damo_graph_backward(g);
  CHECK_MSG(st == DAMO_OK, "%s: backward: %s: %s", c->name, damo_status_name(st), damo_last_error());
  if (st != DAMO_OK) goto done;
  for (int p = 0; p < nparam; p++) {
    char suf[16];
    snprintf(suf, sizeof suf, "grad%d", param_of[p]);
    damo_tensor *gref = fixture(c->name, suf);
    CHECK_MSG(gref != NULL, "%s: fixture lacks .%s", c->name, suf);
    if (!gref) continue;
    r = worst_ratio(damo_tensor_f32(grads[p]), damo_tensor_f32(gref), damo_tensor_numel(gref), REF_ATOL, REF_RTOL,
                    &at);
    CHECK_MSG(r <= 1.0, "%s: %s vs PyTorch: worst %.3g x tolerance at [%lld]: damo %.8g torch %.8g", c->name, suf,
              r, (long long)at, damo_tensor_f32(grads[p])[at], damo_tensor_f32(gref)[at]);
  }
  double rfd = fd_check(c->name, g, loss, nparam, vals, grads, FD_H);
  if (getenv("TEST_OPS_VERBOSE"))
    fprintf(stderr, "    %-20s worst/tol: forward %.3f, finite differences %.3f\n", c->name, r_out, rfd);

done:
  damo_graph_free(g);
  for (int p = 0; p < 4; p++) {
    damo_tensor_free(vals[p]);
    damo_tensor_free(grads[p]);
  }
  return test_failed == ok_before;
}

static void test_fixture_loads(void) {
  damo_status st = damo_safetensors_load(FIXTURE, &fx);
  CHECK_MSG(st == DAMO_OK, "loading %s: %s: %s (regenerate with /usr/bin/python3 tests/ref/gen_ops.py)", FIXTURE,
            damo_status_name(st), damo_last_error());
  if (st != DAMO_OK) {
    fx = NULL;
    return;
  }
  /* every case in the file has an entry in the table, and vice versa */
  int n_out = 0;
  for (int i = 0; i < fx->count; i++) {
    const char *k = fx->names[i];
    size_t len = strlen(k);
    if (len < 4 || strcmp(k + len - 4, ".out") != 0) continue;
    n_out++;
    int found = 0;
    for (int c = 0; c < N_CASES; c++)
      if (strlen(CASES[c].name) == len - 4 && strncmp(CASES[c].name, k, len - 4) == 0) found = 1;
    CHECK_MSG(found, "fixture case %.*s has no entry in test_ops.c's table", (int)(len - 4), k);
  }
  CHECK_MSG(n_out == N_CASES, "fixture has %d cases, table %d", n_out, N_CASES);
}

/* One RUN per op family so the log says which family fails. */
static void run_family(const char *prefix) {
  size_t pl = strlen(prefix);
  int n = 0;
  if (!fx) {
    CHECK_MSG(0, "no fixture");
    return;
  }
  for (int c = 0; c < N_CASES; c++) {
    if (strncmp(CASES[c].name, prefix, pl) != 0) continue;
    /* "log_" must not swallow "log_softmax", "sum"/"mean" etc. are exact prefixes */
    if (strcmp(prefix, "log") == 0 && strcmp(CASES[c].name, "log") != 0) continue;
    n++;
    if (!run_case(&CASES[c])) fprintf(stderr, "    case %s failed\n", CASES[c].name);
  }
  CHECK_MSG(n > 0, "no cases with prefix %s", prefix);
}

static void test_matmul(void) { run_family("matmul"); }
static void test_add(void) { run_family("add_"); }
static void test_sub(void) { run_family("sub_"); }
static void test_mul(void) { run_family("mul_"); }
static void test_div(void) { run_family("div_"); }
static void test_scale_by(void) { run_family("scale_by"); }
static void test_relu(void) { run_family("relu"); }
static void test_sigmoid(void) { run_family("sigmoid"); }
static void test_tanh(void) { run_family("tanh"); }
static void test_exp(void) { run_family("exp"); }
static void test_log(void) { run_family("log"); }
static void test_softmax(void) { run_family("softmax_"); }
static void test_log_softmax(void) { run_family("log_softmax_"); }
static void test_sum(void) { run_family("sum_"); }
static void test_mean(void) { run_family("mean_"); }
static void test_reshape(void) { run_family("reshape_"); }
static void test_transpose(void) { run_family("transpose_"); }
static void test_softmax_cross_entropy(void) { run_family("sce"); }
static void test_bce_with_logits(void) { run_family("bce"); }
static void test_mse(void) { run_family("mse"); }
static void test_soft_cross_entropy(void) { run_family("soft_ce"); }
static void test_kl_divergence(void) { run_family("kl_div"); }

/* ------------------------------------------------------------------ dropout */

typedef struct {
  damo_graph *g;
  damo_node *d, *loss;
  damo_tensor *x, *gx, *dout;
} drop_graph;

static const int64_t DROP_SHAPE[2] = {100, 100};

static int drop_build(drop_graph *dg, uint64_t seed, float rate) {
  memset(dg, 0, sizeof *dg);
  damo_rng r;
  damo_rng_seed(&r, 7); /* same data for every graph; only the graph seed differs */
  dg->x = damo_tensor_new(DAMO_F32, 2, DROP_SHAPE);
  dg->gx = damo_tensor_new(DAMO_F32, 2, DROP_SHAPE);
  dg->dout = damo_tensor_new(DAMO_F32, 2, DROP_SHAPE);
  if (!dg->x || !dg->gx || !dg->dout) return 0;
  for (int i = 0; i < 10000; i++) {
    damo_tensor_f32(dg->x)[i] = 0.5f + damo_rng_uniform(&r); /* never 0: zeros mark dropped */
    damo_tensor_f32(dg->dout)[i] = damo_rng_normal(&r);
  }
  dg->g = damo_graph_new(seed);
  damo_node *x = damo_param(dg->g, "x", dg->x, dg->gx);
  dg->d = damo_dropout(dg->g, x, rate);
  dg->loss = damo_sum(dg->g, damo_mul(dg->g, dg->d, damo_constant(dg->g, dg->dout)), DAMO_ALL_AXES, 0);
  CHECK_MSG(dg->d && dg->loss, "dropout build: %s", damo_last_error());
  if (!dg->loss) return 0;
  damo_node *outs[2] = {dg->d, dg->loss};
  damo_status st = damo_graph_compile(dg->g, dg->loss, 2, outs);
  CHECK_MSG(st == DAMO_OK, "dropout compile: %s", damo_last_error());
  return st == DAMO_OK;
}

static void drop_free(drop_graph *dg) {
  damo_graph_free(dg->g);
  damo_tensor_free(dg->x);
  damo_tensor_free(dg->gx);
  damo_tensor_free(dg->dout);
}

static void test_dropout(void) {
  const float rates[2] = {0.3f, 0.5f};
  for (int ri = 0; ri < 2; ri++) {
    float rate = rates[ri];
    double scale = 1.0 / (1.0 - rate);
    drop_graph a, b, c;
    int ok = drop_build(&a, 42, rate);
    ok = drop_build(&b, 42, rate) && ok;
    ok = drop_build(&c, 43, rate) && ok;
    if (!ok) {
      drop_free(&a), drop_free(&b), drop_free(&c);
      return;
    }
    CHECK(damo_graph_forward(a.g, 1) == DAMO_OK);
    CHECK(damo_graph_backward(a.g) == DAMO_OK);
    const float *y = damo_node_data(a.d), *x = damo_tensor_f32(a.x), *gx = damo_tensor_f32(a.gx),
                *dout = damo_tensor_f32(a.dout);
    int dropped = 0, bad_val = 0, bad_grad = 0;
    double loss_ref = 0;
    for (int i = 0; i < 10000; i++) {
      if (y[i] == 0.0f) {
        dropped++;
        if (gx[i] != 0.0f) bad_grad++;
      } else {
        if (fabs(y[i] - x[i] * scale) > 1e-6 * fabs(x[i] * scale)) bad_val++;
        if (fabs(gx[i] - dout[i] * scale) > 1e-6 * fabs(dout[i] * scale) + 1e-7) bad_grad++;
        loss_ref += (double)y[i] * dout[i];
      }
    }
    double frac = dropped / 10000.0;
    CHECK_MSG(fabs(frac - rate) <= 0.05, "rate %.2f: dropped fraction %.4f", rate, frac);
    CHECK_MSG(bad_val == 0, "rate %.2f: %d survivors not scaled by 1/(1-rate)", rate, bad_val);
    CHECK_MSG(bad_grad == 0, "rate %.2f: %d gradients differ from dout*mask/(1-rate)", rate, bad_grad);
    CHECK_NEAR(damo_node_data(a.loss)[0], loss_ref, 1e-3 + 1e-5 * fabs(loss_ref));

    /* same seed, same mask; another seed, another mask */
    CHECK(damo_graph_forward(b.g, 1) == DAMO_OK);
    CHECK(damo_graph_forward(c.g, 1) == DAMO_OK);
    int same_b = 1, diff_c = 0;
    for (int i = 0; i < 10000; i++) {
      if ((y[i] == 0.0f) != (damo_node_data(b.d)[i] == 0.0f)) same_b = 0;
      if ((y[i] == 0.0f) != (damo_node_data(c.d)[i] == 0.0f)) diff_c++;
    }
    CHECK_MSG(same_b, "rate %.2f: two graphs with seed 42 drew different masks", rate);
    CHECK_MSG(diff_c > 1000, "rate %.2f: seeds 42 and 43 drew masks differing in only %d places", rate, diff_c);

    /* eval mode: identity */
    CHECK(damo_graph_forward(a.g, 0) == DAMO_OK);
    CHECK_CLOSE(damo_node_data(a.d), x, 10000, 1e-30, 0.0); /* exact */
    drop_free(&a), drop_free(&b), drop_free(&c);
  }
}

/* ------------------------------------------------------------------ builder errors */

static int msg_has(const char *needle) { return strstr(damo_last_error(), needle) != NULL; }

static void test_bad_shapes(void) {
  char s1[64], s2[64];
  int64_t sa[2] = {3, 4}, sb[2] = {5, 6}, sc[1] = {5};
  damo_tensor *ta = damo_tensor_new(DAMO_F32, 2, sa), *tb = damo_tensor_new(DAMO_F32, 2, sb),
              *tc = damo_tensor_new(DAMO_F32, 1, sc);

  /* matmul (3,4) x (5,6) */
  damo_graph *g = damo_graph_new(1);
  damo_clear_error();
  damo_node *a = damo_param(g, "a", ta, NULL), *b = damo_param(g, "b", tb, NULL);
  CHECK(a && b);
  damo_node *m = damo_matmul(g, a, b, 0, 0);
  CHECK(m == NULL);
  CHECK_MSG(damo_graph_status(g) == DAMO_ERR_SHAPE, "status %s", damo_status_name(damo_graph_status(g)));
  damo_shape_string(2, sa, s1, sizeof s1);
  damo_shape_string(2, sb, s2, sizeof s2);
  CHECK_MSG(msg_has(s1) && msg_has(s2), "matmul error should name %s and %s: \"%s\"", s1, s2, damo_last_error());
  /* the first error sticks: later builders with the NULL fail, compile refuses */
  CHECK(damo_relu(g, m) == NULL);
  CHECK(damo_graph_status(g) == DAMO_ERR_SHAPE);
  CHECK_MSG(strstr(damo_last_error(), s1) != NULL, "first error should stay readable: \"%s\"", damo_last_error());
  CHECK(damo_graph_compile(g, NULL, 0, NULL) != DAMO_OK);
  damo_graph_free(g);

  /* A weight bound twice (a tied or shared weight) is one param node, so backward adds both
   * uses into its one gradient: d/dW sum(W + W) = 2. */
  {
    damo_tensor *ga = damo_tensor_new(DAMO_F32, 2, sa);
    g = damo_graph_new(1);
    damo_node *p1 = damo_param(g, "tied_in", ta, ga), *p2 = damo_param(g, "tied_out", ta, ga);
    CHECK(p1 && p1 == p2);
    damo_node *loss = damo_sum(g, damo_add(g, p1, p2), DAMO_ALL_AXES, 0);
    CHECK(damo_graph_compile(g, loss, 0, NULL) == DAMO_OK);
    CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
    int twos = 1;
    for (int64_t i = 0; i < damo_tensor_numel(ga); i++) twos &= damo_tensor_f32(ga)[i] == 2.0f;
    CHECK(twos);
    /* the same storage with another gradient is refused, naming both */
    damo_tensor *other = damo_tensor_new(DAMO_F32, 2, sa);
    CHECK(damo_param(g, "other_grad", ta, other) == NULL);
    CHECK(strstr(damo_last_error(), "other_grad") && strstr(damo_last_error(), "tied_in"));
    damo_graph_free(g);
    damo_tensor_free(ga);
    damo_tensor_free(other);
    damo_clear_error();
  }
  /* matmul with transposes that make the inner sizes disagree: (3,4)^T x (3,4)^T -> K 3 vs 4 */
  g = damo_graph_new(1);
  a = damo_param(g, "a", ta, NULL);
  CHECK(damo_matmul(g, a, a, 1, 1) == NULL);
  CHECK(damo_graph_status(g) == DAMO_ERR_SHAPE);
  damo_graph_free(g);
  /* ... and ones that make them agree: (3,4)^T x (3,4) is fine */
  g = damo_graph_new(1);
  a = damo_param(g, "a", ta, NULL);
  m = damo_matmul(g, a, a, 1, 0);
  CHECK(m != NULL && damo_node_ndim(m) == 2 && damo_node_shape(m)[0] == 4 && damo_node_shape(m)[1] == 4);
  CHECK(damo_graph_status(g) == DAMO_OK);
  damo_graph_free(g);

  /* add (3,4) + (5,) */
  g = damo_graph_new(1);
  a = damo_param(g, "a", ta, NULL);
  damo_node *c = damo_param(g, "c", tc, NULL);
  CHECK(damo_add(g, a, c) == NULL);
  CHECK_MSG(damo_graph_status(g) == DAMO_ERR_SHAPE, "status %s", damo_status_name(damo_graph_status(g)));
  damo_shape_string(1, sc, s2, sizeof s2);
  CHECK_MSG(msg_has(s1) && msg_has(s2), "add error should name %s and %s: \"%s\"", s1, s2, damo_last_error());
  damo_graph_free(g);

  /* softmax cross-entropy: logits (6,5), labels (4) */
  int64_t sl[2] = {6, 5}, sy[1] = {4}, sy6[1] = {6};
  damo_tensor *tl = damo_tensor_new(DAMO_F32, 2, sl);
  g = damo_graph_new(1);
  damo_node *logits = damo_param(g, "logits", tl, NULL);
  damo_node *y = damo_input(g, "y", DAMO_I32, 1, sy);
  CHECK(logits && y);
  CHECK(damo_softmax_cross_entropy(g, logits, y) == NULL);
  CHECK_MSG(damo_graph_status(g) == DAMO_ERR_SHAPE, "status %s", damo_status_name(damo_graph_status(g)));
  damo_graph_free(g);

  /* a label out of range at forward time: a non-OK status naming it, no crash; the graph
   * works again once the labels are fixed */
  g = damo_graph_new(1);
  logits = damo_param(g, "logits", tl, NULL);
  y = damo_input(g, "y", DAMO_I32, 1, sy6);
  damo_node *l = damo_softmax_cross_entropy(g, logits, y);
  CHECK(l != NULL);
  if (l) {
    int32_t labels[6] = {0, 1, 7, 2, 3, 4};
    CHECK(damo_graph_compile(g, NULL, 1, &l) == DAMO_OK);
    CHECK(damo_graph_bind(g, y, labels) == DAMO_OK);
    damo_status st = damo_graph_forward(g, 0);
    CHECK_MSG(st != DAMO_OK, "label 7 of 5 classes was accepted");
    CHECK_MSG(msg_has("7"), "error should name the label 7: \"%s\"", damo_last_error());
    labels[2] = -1;
    st = damo_graph_forward(g, 0);
    CHECK_MSG(st != DAMO_OK, "label -1 was accepted");
    CHECK_MSG(msg_has("-1"), "error should name the label -1: \"%s\"", damo_last_error());
    labels[2] = 2;
    st = damo_graph_forward(g, 0);
    CHECK_MSG(st == DAMO_OK, "valid labels after a bad batch: %s", damo_last_error());
    /* all-zero logits: loss = log(5) */
    if (st == DAMO_OK) CHECK_NEAR(damo_node_data(l)[0], log(5.0), 1e-5);
  }
  damo_graph_free(g);

  /* a NULL input to a builder: NULL, and a status other than OK */
  g = damo_graph_new(1);
  CHECK(damo_sigmoid(g, NULL) == NULL);
  CHECK(damo_graph_status(g) != DAMO_OK);
  damo_graph_free(g);

  damo_tensor_free(ta);
  damo_tensor_free(tb);
  damo_tensor_free(tc);
  damo_tensor_free(tl);
}

/* ------------------------------------------------------------------ set_batch */

/* x (B,5) input -> matmul w (5,4) [+ b (4)] -> relu -> mean, or -> softmax_cross_entropy
 * with labels (B) input. */
enum { MLP_RELU_MEAN = 0, MLP_BIAS_RELU_MEAN, MLP_BIAS_SCE };

typedef struct {
  int kind;
  damo_graph *g;
  damo_node *x, *y, *mm, *loss;
  damo_tensor *w, *gw, *b, *gb;
} mlp;

static int mlp_build(mlp *m, int kind, int64_t batch, const float *wdata, const float *bdata) {
  memset(m, 0, sizeof *m);
  m->kind = kind;
  int64_t xs[2] = {batch, 5}, ws[2] = {5, 4}, bs[1] = {4}, ys[1] = {batch};
  m->w = damo_tensor_new(DAMO_F32, 2, ws);
  m->gw = damo_tensor_new(DAMO_F32, 2, ws);
  m->b = damo_tensor_new(DAMO_F32, 1, bs);
  m->gb = damo_tensor_new(DAMO_F32, 1, bs);
  if (!m->w || !m->gw || !m->b || !m->gb) return 0;
  memcpy(m->w->data, wdata, 20 * sizeof(float));
  memcpy(m->b->data, bdata, 4 * sizeof(float));
  m->g = damo_graph_new(3);
  m->x = damo_input(m->g, "x", DAMO_F32, 2, xs);
  m->mm = damo_matmul(m->g, m->x, damo_param(m->g, "w", m->w, m->gw), 0, 0);
  damo_node *z = m->mm;
  if (kind != MLP_RELU_MEAN) z = damo_add(m->g, z, damo_param(m->g, "b", m->b, m->gb));
  if (kind == MLP_BIAS_SCE) {
    m->y = damo_input(m->g, "y", DAMO_I32, 1, ys);
    m->loss = damo_softmax_cross_entropy(m->g, z, m->y);
  } else {
    m->loss = damo_mean(m->g, damo_relu(m->g, z), DAMO_ALL_AXES, 0);
  }
  CHECK_MSG(m->loss != NULL, "build: %s", damo_last_error());
  if (!m->loss) return 0;
  damo_status st = damo_graph_compile(m->g, m->loss, 1, &m->loss);
  CHECK_MSG(st == DAMO_OK, "compile: %s", damo_last_error());
  return st == DAMO_OK;
}

static void mlp_free(mlp *m) {
  damo_graph_free(m->g);
  damo_tensor_free(m->w);
  damo_tensor_free(m->gw);
  damo_tensor_free(m->b);
  damo_tensor_free(m->gb);
}

/* The loss over rows [0, n) in double, with its gradients w.r.t. w (20) and b (4). */
static double mlp_ref(int kind, const float *x, const int32_t *y, const float *w, const float *b, int n, float *gw,
                      float *gb) {
  double loss = 0, dw[20] = {0}, db[4] = {0};
  for (int i = 0; i < n; i++) {
    double z[4], dz[4];
    for (int j = 0; j < 4; j++) {
      z[j] = kind == MLP_RELU_MEAN ? 0 : b[j];
      for (int k = 0; k < 5; k++) z[j] += (double)x[i * 5 + k] * w[k * 4 + j];
    }
    if (kind == MLP_BIAS_SCE) {
      double mx = z[0], se = 0;
      for (int j = 1; j < 4; j++) mx = z[j] > mx ? z[j] : mx;
      for (int j = 0; j < 4; j++) se += exp(z[j] - mx);
      loss += mx + log(se) - z[y[i]];
      for (int j = 0; j < 4; j++) dz[j] = (exp(z[j] - mx) / se - (j == y[i])) / n;
    } else {
      for (int j = 0; j < 4; j++) {
        loss += z[j] > 0 ? z[j] : 0;
        dz[j] = z[j] > 0 ? 1.0 / (n * 4.0) : 0;
      }
    }
    for (int j = 0; j < 4; j++) {
      db[j] += dz[j];
      for (int k = 0; k < 5; k++) dw[k * 4 + j] += x[i * 5 + k] * dz[j];
    }
  }
  for (int k = 0; k < 20; k++) gw[k] = (float)dw[k];
  for (int j = 0; j < 4; j++) gb[j] = (float)db[j];
  return kind == MLP_BIAS_SCE ? loss / n : loss / (n * 4.0);
}

static int mlp_run(mlp *m, const float *x, const int32_t *y, float *loss) {
  damo_status st = damo_graph_bind(m->g, m->x, x);
  if (st == DAMO_OK && m->y) st = damo_graph_bind(m->g, m->y, y);
  CHECK_MSG(st == DAMO_OK, "bind: %s", damo_last_error());
  memset(m->gw->data, 0, 20 * sizeof(float));
  memset(m->gb->data, 0, 4 * sizeof(float));
  st = st ? st : damo_graph_forward(m->g, 1);
  CHECK_MSG(st == DAMO_OK, "forward: %s", damo_last_error());
  st = st ? st : damo_graph_backward(m->g);
  CHECK_MSG(st == DAMO_OK, "backward: %s", damo_last_error());
  *loss = st == DAMO_OK ? damo_node_data(m->loss)[0] : NAN;
  return st == DAMO_OK;
}

/* A graph built for batch 8 and run with set_batch(3) gives what a graph built for 3 gives
 * (means divide by the current batch), and both match a double-precision reference; back at 8
 * it matches the full-batch reference. */
static void set_batch_kind(int kind) {
  float x[8 * 5], w[20], b[4], gw_ref[20], gb_ref[4];
  int32_t y[8];
  damo_rng r;
  damo_rng_seed(&r, 11 + kind);
  for (int i = 0; i < 40; i++) x[i] = damo_rng_normal(&r);
  for (int i = 0; i < 20; i++) w[i] = damo_rng_normal(&r);
  for (int i = 0; i < 4; i++) b[i] = 0.5f * damo_rng_normal(&r);
  for (int i = 0; i < 8; i++) y[i] = (int32_t)damo_rng_below(&r, 4);

  mlp big, small;
  int ok = mlp_build(&big, kind, 8, w, b);
  ok = mlp_build(&small, kind, 3, w, b) && ok;
  if (ok) {
    float l_small, l_big3, l_big8, g_small[20], gb_small[4];
    /* built for 3 */
    if (mlp_run(&small, x, y, &l_small)) {
      memcpy(g_small, small.gw->data, sizeof g_small);
      memcpy(gb_small, small.gb->data, sizeof gb_small);
      double lr = mlp_ref(kind, x, y, w, b, 3, gw_ref, gb_ref);
      CHECK_NEAR(l_small, lr, 1e-5 + 1e-5 * fabs(lr));
      CHECK_CLOSE(g_small, gw_ref, 20, 1e-6, 1e-5);
      if (kind != MLP_RELU_MEAN) CHECK_CLOSE(gb_small, gb_ref, 4, 1e-6, 1e-5);
      /* built for 8, run with 3 */
      CHECK(damo_graph_set_batch(big.g, 3) == DAMO_OK);
      if (mlp_run(&big, x, y, &l_big3)) {
        CHECK(damo_node_ndim(big.mm) == 2 && damo_node_shape(big.mm)[0] == 3 && damo_node_shape(big.mm)[1] == 4);
        CHECK_NEAR(l_big3, l_small, 1e-6 + 1e-6 * fabs(l_small));
        CHECK_CLOSE(damo_tensor_f32(big.gw), g_small, 20, 1e-7, 1e-6);
        if (kind != MLP_RELU_MEAN) CHECK_CLOSE(damo_tensor_f32(big.gb), gb_small, 4, 1e-7, 1e-6);
      }
      /* back to 8 */
      CHECK(damo_graph_set_batch(big.g, 8) == DAMO_OK);
      if (mlp_run(&big, x, y, &l_big8)) {
        double lr8 = mlp_ref(kind, x, y, w, b, 8, gw_ref, gb_ref);
        CHECK_NEAR(l_big8, lr8, 1e-5 + 1e-5 * fabs(lr8));
        CHECK_CLOSE(damo_tensor_f32(big.gw), gw_ref, 20, 1e-6, 1e-5);
        if (kind != MLP_RELU_MEAN) CHECK_CLOSE(damo_tensor_f32(big.gb), gb_ref, 4, 1e-6, 1e-5);
      }
      /* beyond the built size, or not positive: refused */
      CHECK(damo_graph_set_batch(big.g, 9) != DAMO_OK);
      CHECK(damo_graph_set_batch(big.g, 0) != DAMO_OK);
    }
  }
  mlp_free(&big);
  mlp_free(&small);
}

static void test_set_batch(void) { set_batch_kind(MLP_RELU_MEAN); }
static void test_set_batch_bias(void) { set_batch_kind(MLP_BIAS_RELU_MEAN); }
static void test_set_batch_cross_entropy(void) { set_batch_kind(MLP_BIAS_SCE); }

/* Max pooling's gradient when its input feeds another op too: the pool's scatter must add to
 * what the other consumer wrote, or be zeroed first when it runs first (both orders), over
 * enough images to run in parallel. loss = sum(pool(x)) + sum(x): dx = 1 + [x wins its window]. */
static void test_max_pool_shared_input(void) {
  const int64_t shape[4] = {64, 16, 16, 8};
  const int64_t count = 64 * 16 * 16 * 8;
  for (int order = 0; order < 2; order++) {
    damo_tensor *x = damo_tensor_new(DAMO_F32, 4, shape), *gx = damo_tensor_new(DAMO_F32, 4, shape);
    damo_graph *g = damo_graph_new(1);
    if (!x || !gx || !g) {
      CHECK(0);
      damo_tensor_free(x), damo_tensor_free(gx), damo_graph_free(g);
      return;
    }
    damo_rng r;
    damo_rng_seed(&r, 3);
    for (int64_t i = 0; i < count; i++) damo_tensor_f32(x)[i] = damo_rng_uniform(&r);
    for (int64_t i = 0; i < count; i++) damo_tensor_f32(gx)[i] = 123.0f; /* stale: must not leak */
    damo_node *xn = damo_param(g, "x", x, gx);
    damo_node *pooled = damo_sum(g, damo_max_pool2d(g, xn, 2, 2, 2, 2, 0, 0, 0, 0), DAMO_ALL_AXES, 0);
    damo_node *direct = damo_sum(g, xn, DAMO_ALL_AXES, 0);
    damo_node *loss = order ? damo_add(g, direct, pooled) : damo_add(g, pooled, direct);
    int ok = loss && damo_graph_compile(g, loss, 1, &loss) == DAMO_OK && damo_graph_forward(g, 1) == DAMO_OK &&
             damo_graph_backward(g) == DAMO_OK;
    CHECK_MSG(ok, "pool graph: %s", damo_last_error());
    int64_t bad = 0;
    const float *xv = damo_tensor_f32(x), *gv = damo_tensor_f32(gx);
    for (int64_t b = 0; ok && b < 64; b++)
      for (int64_t h = 0; h < 16; h++)
        for (int64_t w = 0; w < 16; w++)
          for (int64_t c = 0; c < 8; c++) {
            const int64_t i = ((b * 16 + h) * 16 + w) * 8 + c;
            float best = -1.0f;
            for (int64_t dh = 0; dh < 2; dh++)
              for (int64_t dw = 0; dw < 2; dw++) {
                float v = xv[((b * 16 + (h / 2 * 2 + dh)) * 16 + (w / 2 * 2 + dw)) * 8 + c];
                best = v > best ? v : best;
              }
            bad += gv[i] != (xv[i] == best ? 2.0f : 1.0f);
          }
    CHECK_MSG(bad == 0, "order %d: %lld input gradients are not 1 + [wins its window]", order, (long long)bad);
    damo_graph_free(g);
    damo_tensor_free(x), damo_tensor_free(gx);
  }
}

/* The per-op profile counts every forward and backward of each op while on, nothing while
 * off, and starts again from zero after a reset. */
static void test_profile(void) {
  drop_graph dg;
  if (!drop_build(&dg, 42, 0.5f)) {
    drop_free(&dg);
    return;
  }
  damo_profile_reset();
  damo_profile_enable(1);
  for (int i = 0; i < 3; i++) CHECK(damo_graph_forward(dg.g, 1) == DAMO_OK && damo_graph_backward(dg.g) == DAMO_OK);
  damo_profile_enable(0);
  CHECK(damo_graph_forward(dg.g, 1) == DAMO_OK); /* not counted */
  const double forward = damo_profile_seconds("dropout", 0), backward = damo_profile_seconds("dropout", 1);
  CHECK_MSG(forward > 0 && backward > 0, "dropout: forward %g s, backward %g s", forward, backward);
  CHECK(damo_profile_seconds("conv2d", 0) == 0.0 && damo_profile_seconds("no such op", 0) == 0.0);
  FILE *f = tmpfile();
  if (f) {
    damo_profile_report(f);
    rewind(f);
    char line[256];
    int dropout_rows = 0, sum_rows = 0, header = 0;
    while (fgets(line, sizeof line, f)) {
      char op[64], dir[16];
      long long calls;
      if (strstr(line, "damo profile:")) header = 1;
      if (sscanf(line, "%63s %15s %lld", op, dir, &calls) != 3) continue;
      if (!strcmp(op, "dropout")) dropout_rows += calls == 3;
      if (!strcmp(op, "sum")) sum_rows += calls == 3;
    }
    fclose(f);
    CHECK_MSG(header && dropout_rows == 2 && sum_rows == 2, "report: header %d, dropout rows with 3 calls %d, sum %d",
              header, dropout_rows, sum_rows);
  }
  damo_profile_reset();
  CHECK(damo_profile_seconds("dropout", 0) == 0.0);
  drop_free(&dg);
}

/* The library follows the program's OpenMP setting and changes none of its own accord (a
 * load-time constructor used to set all cores, overriding OMP_NUM_THREADS and the program). */
static void test_thread_settings(void) {
  int before = omp_get_max_threads();
  omp_set_num_threads(1);
  CHECK(damo_num_threads() == 1 || getenv("DAMO_NUM_THREADS"));
  damo_set_num_threads(3);
  CHECK(damo_num_threads() == 3 && omp_get_max_threads() == 1); /* damo's choice stays damo's */
  damo_set_num_threads(0);
  CHECK(damo_num_threads() == 1 || getenv("DAMO_NUM_THREADS"));
  omp_set_num_threads(before);
  int rc = system("OMP_NUM_THREADS=1 DAMO_NUM_THREADS= " DAMO_CLI_PATH " info | grep -q 'threads: 1 |'");
  CHECK_MSG(rc == 0, "damo info does not honour OMP_NUM_THREADS=1");
  rc = system("DAMO_NUM_THREADS=lots DAMO_SIMD=avx3 " DAMO_CLI_PATH " info 2>&1 | grep -c warning | grep -q '^2$'");
  CHECK_MSG(rc == 0, "invalid DAMO_NUM_THREADS / DAMO_SIMD are not warned about");
}

/* A dropout big enough to run in parallel: the mask depends on the seed alone, not on the
 * thread count; each training forward draws a new one; the rate holds over 131,072 draws. */
static unsigned char *dropout_mask(int threads, int forwards) {
  enum { ROWS = 256, COLS = 512 };
  const int64_t shape[2] = {ROWS, COLS};
  damo_set_num_threads(threads);
  damo_tensor *x = damo_tensor_new(DAMO_F32, 2, shape);
  unsigned char *mask = malloc(ROWS * COLS);
  if (x)
    for (int64_t i = 0; i < ROWS * COLS; i++) damo_tensor_f32(x)[i] = 1.0f;
  damo_graph *g = damo_graph_new(5);
  damo_node *d = g && x ? damo_dropout(g, damo_constant(g, x), 0.1f) : NULL;
  int ok = mask && d && damo_graph_compile(g, d, 1, &d) == DAMO_OK;
  if (ok) {
    for (int f = 0; f < forwards && ok; f++) ok = damo_graph_forward(g, 1) == DAMO_OK;
    for (int64_t i = 0; ok && i < ROWS * COLS; i++) mask[i] = damo_node_data(d)[i] != 0.0f;
  }
  CHECK_MSG(ok, "dropout graph: %s", damo_last_error());
  damo_graph_free(g);
  damo_tensor_free(x);
  damo_set_num_threads(0);
  if (!ok) free(mask);
  return ok ? mask : NULL;
}

static void test_dropout_parallel(void) {
  unsigned char *one = dropout_mask(1, 1), *two = dropout_mask(2, 1), *second = dropout_mask(2, 2);
  if (one && two && second) {
    int64_t differ_threads = 0, differ_forward = 0, kept = 0;
    for (int64_t i = 0; i < 256 * 512; i++) {
      differ_threads += one[i] != two[i];
      differ_forward += one[i] != second[i];
      kept += one[i];
    }
    CHECK_MSG(differ_threads == 0, "dropout masks on 1 and 2 threads differ in %lld places", (long long)differ_threads);
    CHECK_MSG(differ_forward > 10000, "a second forward redrew only %lld places", (long long)differ_forward);
    double dropped = 1.0 - (double)kept / (256 * 512);
    CHECK_MSG(fabs(dropped - 0.1) < 0.005, "dropped fraction %.4f for rate 0.1", dropped);
  }
  free(one), free(two), free(second);
}

/* vmath.h's vectorisable exp, tanh and erf against libm in double, in units in the last
 * place of the float result, over a dense grid (and erf's odd symmetry and limits). */
static double ulps(float got, double want) {
  float w = (float)want;
  double spacing = fabs((double)nextafterf(fabsf(w), INFINITY) - fabs((double)w));
  if (spacing == 0 || !isfinite(spacing)) spacing = 1e-45;
  return fabs((double)got - want) / spacing;
}

static void test_vector_math(void) {
  double worst_exp = 0, worst_tanh = 0, worst_erf = 0;
  for (int i = 0; i <= 400000; i++) {
    float x = -10.0f + 20.0f * (float)i / 400000.0f;
    worst_exp = fmax(worst_exp, ulps(damo_expf(x), exp((double)x)));
    worst_tanh = fmax(worst_tanh, ulps(damo_tanhf(x), tanh((double)x)));
    worst_erf = fmax(worst_erf, ulps(damo_erff(x), erf((double)x)));
    if (damo_erff(-x) != -damo_erff(x)) worst_erf = 1e9;
  }
  CHECK_MSG(worst_exp <= 3, "damo_expf: %.2f ulp", worst_exp);
  CHECK_MSG(worst_tanh <= 4, "damo_tanhf: %.2f ulp", worst_tanh);
  CHECK_MSG(worst_erf <= 3, "damo_erff: %.2f ulp (or not odd)", worst_erf);
  CHECK(damo_erff(0.0f) == 0.0f && damo_erff(50.0f) == 1.0f && damo_erff(-50.0f) == -1.0f);
}

int main(void) {
  RUN(test_fixture_loads);
  RUN(test_matmul);
  RUN(test_add);
  RUN(test_sub);
  RUN(test_mul);
  RUN(test_div);
  RUN(test_scale_by);
  RUN(test_relu);
  RUN(test_sigmoid);
  RUN(test_tanh);
  RUN(test_exp);
  RUN(test_log);
  RUN(test_softmax);
  RUN(test_log_softmax);
  RUN(test_sum);
  RUN(test_mean);
  RUN(test_reshape);
  RUN(test_transpose);
  RUN(test_softmax_cross_entropy);
  RUN(test_bce_with_logits);
  RUN(test_mse);
  RUN(test_soft_cross_entropy);
  RUN(test_kl_divergence);
  RUN(test_dropout);
  RUN(test_dropout_parallel);
  RUN(test_profile);
  RUN(test_max_pool_shared_input);
  RUN(test_vector_math);
  RUN(test_bad_shapes);
  RUN(test_thread_settings);
  RUN(test_set_batch);
  RUN(test_set_batch_bias);
  RUN(test_set_batch_cross_entropy);
  damo_tensor_dict_free(fx);
  return test_summary("test_ops");
}
