/* test_quantize_rnn.c - int8 LSTM and GRU with dynamic inputs (what PyTorch's quantize_dynamic
 * does for nn.LSTM) and int8 embedding tables: the ops against a scalar reference that
 * quantises x and each step's h the same way (so only the order of the sums differs), with
 * masks and reverse; a quantised embedding + bidirectional LSTM model and a GRU model against
 * their f32 selves; the saved directory (I8 slots with their scales, a bit-identical reload)
 * and bad input. */
#include "harness.h"
#include "ops/ops.h"
#include "tmpfiles.h"

#include <damo.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

static uint64_t lcg = 777;
static uint32_t next_u32(void) {
  lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(lcg >> 33);
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(next_u32() % 100000) / 100000.0f; }
static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

/* x quantised to affine uint8 over its own range and back, as the int8 products see it. */
static void fake_quant(const float *x, int64_t n, double *out) {
  float lo = 0, hi = 0, s;
  int zp;
  for (int64_t i = 0; i < n; i++) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
  damo_quant_params(lo, hi, &s, &zp);
  for (int64_t i = 0; i < n; i++) {
    float r = nearbyintf(x[i] / s) + (float)zp;
    r = r < 0 ? 0 : r > 255 ? 255 : r;
    out[i] = ((double)r - zp) * s;
  }
}

/* A random int8 kernel (K x N) with column scales in [lo, hi): q, scale, and w = scale * q. */
static void random_kernel(int64_t K, int64_t N, float lo, float hi, int8_t *q, float *scale, float *w) {
  for (int64_t n = 0; n < N; n++) scale[n] = uniform(lo, hi);
  for (int64_t i = 0; i < K * N; i++) {
    q[i] = (int8_t)((int)(next_u32() % 255) - 127);
    w[i] = scale[i % N] * (float)q[i];
  }
}

/* The reference: y (B, T, U) or (B, U), in double, from the dequantised weights. */
static void reference(int gru, const float *x, const float *mask, const float *w, const float *r, const float *bias,
                      int64_t B, int64_t T, int64_t F, int64_t U, int sequences, int reverse, double *y) {
  const int64_t G = (gru ? 3 : 4) * U;
  double *xq = malloc((size_t)(B * T * F) * sizeof *xq), *hq = calloc((size_t)(B * U), sizeof *hq);
  double *z = malloc((size_t)G * sizeof *z);
  float *h = calloc((size_t)(B * U), sizeof *h), *c = calloc((size_t)(B * U), sizeof *c);
  float *h_new = malloc((size_t)(B * U) * sizeof *h_new), *c_new = malloc((size_t)(B * U) * sizeof *c_new);
  fake_quant(x, B * T * F, xq);
  memset(y, 0, (size_t)(B * (sequences ? T : 1) * U) * sizeof *y);
  for (int64_t s = 0; s < T; s++) {
    const int64_t t = reverse ? T - 1 - s : s;
    if (s > 0) fake_quant(h, B * U, hq);
    for (int64_t b = 0; b < B; b++) {
      double gh[3 * 64] = {0};
      for (int64_t g = 0; g < G; g++) {
        double sx = gru ? bias[g] : bias[g], sh = gru ? bias[G + g] : 0.0;
        for (int64_t f = 0; f < F; f++) sx += xq[(b * T + t) * F + f] * w[f * G + g];
        for (int64_t u = 0; s > 0 && u < U; u++) sh += hq[b * U + u] * r[u * G + g];
        z[g] = gru ? sx : sx + sh;
        if (gru) gh[g] = sh;
      }
      for (int64_t u = 0; u < U; u++) {
        const float hp = h[b * U + u], cp = c[b * U + u];
        if (gru) {
          double zz = sigmoid(z[u] + gh[u]), rr = sigmoid(z[U + u] + gh[U + u]);
          double nn = tanh(z[2 * U + u] + rr * gh[2 * U + u]);
          h_new[b * U + u] = (float)(zz * hp + (1 - zz) * nn);
        } else {
          double i = sigmoid(z[u]), f = sigmoid(z[U + u]), g = tanh(z[2 * U + u]), o = sigmoid(z[3 * U + u]);
          c_new[b * U + u] = (float)(f * cp + i * g);
          h_new[b * U + u] = (float)(o * tanh(c_new[b * U + u]));
        }
      }
    }
    for (int64_t b = 0; b < B; b++) {
      const int present = !mask || mask[b * T + t] != 0.0f;
      for (int64_t u = 0; u < U && present; u++) h[b * U + u] = h_new[b * U + u], c[b * U + u] = c_new[b * U + u];
      for (int64_t u = 0; u < U && sequences && present; u++) y[(b * T + t) * U + u] = h[b * U + u];
    }
  }
  for (int64_t k = 0; !sequences && k < B * U; k++) y[k] = h[k];
  free(xq), free(hq), free(z), free(h), free(c), free(h_new), free(c_new);
}

static void check_op(int gru, int masked, int sequences, int reverse) {
  const int64_t B = 5, T = 7, F = 6, U = 4, G = (gru ? 3 : 4) * U;
  const int64_t xs[3] = {B, T, F}, ws[2] = {F, G}, rs[2] = {U, G}, bs1[1] = {G}, bs2[2] = {2, G}, ms[2] = {B, T};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 3, xs), *w = damo_tensor_new(DAMO_F32, 2, ws);
  damo_tensor *r = damo_tensor_new(DAMO_F32, 2, rs), *b = damo_tensor_new(DAMO_F32, gru ? 2 : 1, gru ? bs2 : bs1);
  damo_tensor *mask = damo_tensor_new(DAMO_F32, 2, ms);
  int8_t *wq = malloc((size_t)(F * G)), *rq = malloc((size_t)(U * G));
  float *w_scale = malloc((size_t)G * sizeof(float)), *r_scale = malloc((size_t)G * sizeof(float));
  for (int64_t i = 0; i < B * T * F; i++) damo_tensor_f32(x)[i] = uniform(-2.0f, 3.0f);
  for (int64_t i = 0; i < damo_tensor_numel(b); i++) damo_tensor_f32(b)[i] = uniform(-0.5f, 0.5f);
  for (int64_t bb = 0; bb < B; bb++) /* row bb keeps its first T - bb steps; row 0 all */
    for (int64_t t = 0; t < T; t++) damo_tensor_f32(mask)[bb * T + t] = t < T - bb ? 1.0f : 0.0f;
  random_kernel(F, G, 0.002f, 0.01f, wq, w_scale, damo_tensor_f32(w));
  random_kernel(U, G, 0.005f, 0.02f, rq, r_scale, damo_tensor_f32(r)); /* a recurrence that matters */
  damo_qweight *wp = damo_qweight_pack(wq, F, G, w_scale, DAMO_QLAYOUT_AUTO);
  damo_qweight *rp = damo_qweight_pack(rq, U, G, r_scale, DAMO_QLAYOUT_AUTO);
  damo_rnn_int8 q = {wp, rp};
  damo_graph *g = damo_graph_new(1);
  damo_node *out = damo_recurrent_int8_op(g, gru, damo_constant(g, x), damo_constant(g, w), damo_constant(g, r),
                                          damo_constant(g, b), masked ? damo_constant(g, mask) : NULL, sequences,
                                          reverse, &q);
  CHECK_MSG(out && damo_graph_compile(g, NULL, 1, &out) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(damo_graph_forward(g, 0) == DAMO_OK, "%s", damo_last_error());
  double *want = malloc((size_t)(B * T * U) * sizeof *want);
  reference(gru, damo_tensor_f32(x), masked ? damo_tensor_f32(mask) : NULL, damo_tensor_f32(w), damo_tensor_f32(r),
            damo_tensor_f32(b), B, T, F, U, sequences, reverse, want);
  const float *got = damo_node_data(out);
  double worst = 0, size = 0;
  for (int64_t k = 0; got && k < B * (sequences ? T : 1) * U; k++)
    worst = fmax(worst, fabs(got[k] - want[k])), size = fmax(size, fabs(want[k]));
  CHECK_MSG(got && worst < 2e-5 && size > 0.1, "%s masked %d sequences %d reverse %d: off by %.3g (outputs up to %.3g)",
            gru ? "gru" : "lstm", masked, sequences, reverse, worst, size);
  /* the f32 op on the same (dequantised) weights differs by the activations' rounding only */
  damo_graph *g32 = damo_graph_new(1);
  damo_node *in[4] = {damo_constant(g32, x), damo_constant(g32, w), damo_constant(g32, r), damo_constant(g32, b)};
  damo_node *mk = masked ? damo_constant(g32, mask) : NULL;
  damo_node *o32 = gru ? damo_gru_ex(g32, in[0], in[1], in[2], in[3], mk, sequences, reverse)
                       : damo_lstm_ex(g32, in[0], in[1], in[2], in[3], mk, sequences, reverse);
  CHECK(damo_graph_compile(g32, NULL, 1, &o32) == DAMO_OK && damo_graph_forward(g32, 0) == DAMO_OK);
  double moved = 0;
  for (int64_t k = 0; got && k < B * (sequences ? T : 1) * U; k++) moved = fmax(moved, fabs(got[k] - damo_node_data(o32)[k]));
  CHECK_MSG(moved > 0 && moved < 0.05, "int8 against f32: %.3g", moved);
  damo_graph_free(g32);
  damo_graph_free(g);
  /* no gradient flows through it: a graph with a loss compiles and runs forward, backward
   * refuses and names the op (it used to leave a silent zero gradient) */
  damo_graph *gb = damo_graph_new(1);
  damo_node *xin = damo_input(gb, "x", DAMO_F32, 3, xs);
  damo_node_keep_grad(xin);
  damo_node *ob = damo_recurrent_int8_op(gb, gru, xin, damo_constant(gb, w), damo_constant(gb, r), damo_constant(gb, b),
                                         NULL, sequences, reverse, &q);
  damo_node *lb = damo_sum(gb, ob, DAMO_ALL_AXES, 0);
  CHECK(damo_graph_compile(gb, lb, 1, &ob) == DAMO_OK && damo_graph_bind(gb, xin, x->data) == DAMO_OK &&
        damo_graph_forward(gb, 1) == DAMO_OK);
  CHECK_MSG(damo_graph_backward(gb) == DAMO_ERR_UNSUPPORTED && strstr(damo_last_error(), gru ? "'gru'" : "'lstm'") &&
                strstr(damo_last_error(), "inference only"),
            "%s", damo_last_error());
  damo_graph_free(gb);
  /* kernels of the wrong shape are refused when the op is added */
  damo_graph *bad = damo_graph_new(1);
  damo_rnn_int8 swapped = {rp, wp};
  CHECK(damo_recurrent_int8_op(bad, gru, damo_constant(bad, x), damo_constant(bad, w), damo_constant(bad, r),
                               damo_constant(bad, b), NULL, sequences, reverse, &swapped) == NULL);
  CHECK_MSG(strstr(damo_last_error(), "int8 kernels"), "%s", damo_last_error());
  damo_graph_free(bad);
  free(want), free(wq), free(rq), free(w_scale), free(r_scale);
  damo_qweight_free(wp), damo_qweight_free(rp);
  damo_tensor_free(x), damo_tensor_free(w), damo_tensor_free(r), damo_tensor_free(b), damo_tensor_free(mask);
}

static void test_int8_recurrent_ops(void) {
  for (int gru = 0; gru < 2; gru++)
    for (int variant = 0; variant < 4; variant++) check_op(gru, variant & 1, variant >> 1 & 1, variant == 3);
}

/* ------------------------------------------------------------------ models */

/* Token sequences (T = 12, ids 1..39, trailing zeros as padding); label 1 when id 7 occurs
 * before id 9 (an order a bag of words cannot see). */
static void toy_text(int64_t n, uint64_t seed, damo_tensor **x, damo_tensor **y) {
  const int64_t xs[2] = {n, 12}, ys[1] = {n};
  *x = damo_tensor_new(DAMO_I32, 2, xs), *y = damo_tensor_new(DAMO_F32, 1, ys);
  lcg = seed;
  for (int64_t r = 0; r < n; r++) {
    const int len = 5 + (int)(next_u32() % 8);
    int seen7 = 0, label = 0;
    for (int t = 0; t < 12; t++) {
      int id = t < len ? 1 + (int)(next_u32() % 39) : 0;
      damo_tensor_i32(*x)[r * 12 + t] = id;
      seen7 |= id == 7;
      label |= id == 9 && seen7;
    }
    damo_tensor_f32(*y)[r] = (float)label;
  }
}

static damo_model *trained_text_model(int gru, damo_tensor *x, damo_tensor *y) {
  const int64_t in[1] = {12};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_embedding_layer(40, 8, 1));
  damo_model_add(m, gru ? damo_gru_layer(12, 0) : damo_bidirectional_layer(damo_lstm_layer(8, 0), DAMO_MERGE_CONCAT));
  damo_model_add(m, damo_dense(1, DAMO_ACT_SIGMOID));
  damo_compile_options c = {.optimizer = damo_adam(1e-2f), .loss = DAMO_LOSS_BINARY_CE, .metrics = DAMO_METRIC_ACCURACY};
  damo_fit_options f = {.epochs = 6, .batch_size = 32, .seed = 4, .verbose = 0};
  if (damo_model_build(m, 4) != DAMO_OK || damo_model_compile(m, &c) != DAMO_OK ||
      damo_model_fit(m, x, y, &f, NULL) != DAMO_OK) {
    damo_model_free(m);
    return NULL;
  }
  return m;
}

static int64_t dict_dtype(const damo_tensor_dict *d, const char *name, damo_dtype *dtype, int64_t *numel) {
  const damo_tensor *t = damo_tensor_dict_get((damo_tensor_dict *)d, name);
  if (!t) return 0;
  *dtype = t->dtype, *numel = damo_tensor_numel(t);
  return 1;
}

static void check_text_model(int gru) {
  damo_tensor *x, *y, *xt, *yt;
  toy_text(1200, 11, &x, &y);
  toy_text(400, 12, &xt, &yt);
  damo_model *m = trained_text_model(gru, x, y);
  CHECK_MSG(m != NULL, "training: %s", damo_last_error());
  if (!m) return;
  float loss32, acc32, loss8, acc8;
  damo_tensor *p32 = NULL, *p8 = NULL, *back_p = NULL;
  CHECK(damo_model_evaluate(m, xt, yt, 64, &loss32, &acc32) == DAMO_OK && damo_model_predict(m, xt, 64, &p32) == DAMO_OK);
  CHECK_MSG(acc32 > 0.8, "the f32 model learnt too little to compare (%.3f)", acc32);
  damo_quantize_options o = {0};
  CHECK_MSG(damo_model_quantize(m, x, &o) == DAMO_ERR_INVALID_ARG && strstr(damo_last_error(), "token ids"), "%s",
            damo_last_error()); /* static calibration of an id model: refused */
  CHECK(!damo_model_is_quantized(m));
  o.dynamic = 1;
  CHECK_MSG(damo_model_quantize(m, NULL, &o) == DAMO_OK, "%s", damo_last_error());
  const char *name;
  CHECK(damo_model_layer_precision(m, 0, &name, NULL) == 2 && damo_model_layer_precision(m, 1, NULL, NULL) == 1 &&
        damo_model_layer_precision(m, 2, NULL, NULL) == 1);
  CHECK(damo_model_evaluate(m, xt, yt, 64, &loss8, &acc8) == DAMO_OK && damo_model_predict(m, xt, 64, &p8) == DAMO_OK);
  double worst = 0;
  for (int64_t i = 0; p32 && p8 && i < damo_tensor_numel(p8); i++)
    worst = fmax(worst, fabs(damo_tensor_f32(p8)[i] - damo_tensor_f32(p32)[i]));
  CHECK_MSG(worst > 0 && worst < 0.05 && fabsf(acc8 - acc32) <= 0.01f, "%s: int8 moved p by up to %.4f, accuracy %.4f -> %.4f",
            gru ? "gru" : "bilstm", worst, acc32, acc8);
  printf("  %s: accuracy f32 %.4f int8 %.4f, largest change of p %.4f\n", gru ? "gru" : "bilstm", acc32, acc8, worst);
  /* a quantised model neither trains nor quantises again */
  damo_fit_options f = {.epochs = 1, .batch_size = 32, .verbose = 0};
  CHECK(damo_model_fit(m, x, y, &f, NULL) != DAMO_OK);
  CHECK(damo_model_quantize(m, NULL, &o) == DAMO_ERR_STATE);

  /* On disk: I8 slots with a scale each (per column of a kernel, per row of the table). */
  const char *dir = tmp_path(gru ? "gru_i8" : "bilstm_i8");
  char dir_copy[600], path[700];
  snprintf(dir_copy, sizeof dir_copy, "%s", dir);
  snprintf(path, sizeof path, "%s/model.safetensors", dir_copy);
  CHECK_MSG(damo_model_save(m, dir_copy) == DAMO_OK, "%s", damo_last_error());
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  char emb[96], rk[160], rk_scale[176];
  damo_model_layer_precision(m, 0, &name, NULL);
  snprintf(emb, sizeof emb, "%s.embeddings", name);
  damo_model_layer_precision(m, 1, &name, NULL);
  snprintf(rk, sizeof rk, "%s.%s", name, gru ? "recurrent_kernel" : "backward_lstm.recurrent_kernel");
  snprintf(rk_scale, sizeof rk_scale, "%s_scale", rk);
  damo_dtype dt = DAMO_F32;
  int64_t count = 0;
  char emb_scale[128];
  snprintf(emb_scale, sizeof emb_scale, "%s_scale", emb);
  CHECK_MSG(d && dict_dtype(d, emb, &dt, &count) && dt == DAMO_I8 && count == 40 * 8, "%s", emb);
  CHECK_MSG(d && dict_dtype(d, emb_scale, &dt, &count) && dt == DAMO_F32 && count == 40, "%s", emb_scale);
  CHECK_MSG(d && dict_dtype(d, rk, &dt, &count) && dt == DAMO_I8, "%s", rk);
  CHECK_MSG(d && dict_dtype(d, rk_scale, &dt, &count) && dt == DAMO_F32 && count == (gru ? 36 : 32), "%s", rk_scale);
  damo_model *back = NULL;
  CHECK_MSG(damo_model_load(dir_copy, &back) == DAMO_OK, "%s", damo_last_error());
  CHECK(back && damo_model_predict(back, xt, 64, &back_p) == DAMO_OK);
  CHECK(back_p && p8 && !memcmp(back_p->data, p8->data, damo_tensor_nbytes(p8))); /* bit for bit */
  damo_model_free(back);
  back = NULL;

  /* A NaN recurrent scale, a stray scale beside an f32 bias: refused, naming them. */
  damo_tensor *scale = d ? damo_tensor_dict_get(d, rk_scale) : NULL;
  if (scale) {
    damo_tensor_f32(scale)[2] = NAN;
    CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
    CHECK(damo_model_load(dir_copy, &back) == DAMO_ERR_FORMAT && !back);
    CHECK_MSG(strstr(damo_last_error(), "recurrent_kernel scale 2"), "%s", damo_last_error());
    damo_tensor_f32(scale)[2] = 0.01f;
    const int64_t one = 1;
    char stray[160];
    snprintf(stray, sizeof stray, "%s.%s", name, gru ? "bias_scale" : "forward_lstm.bias_scale");
    damo_tensor_dict_add(d, stray, damo_tensor_new(DAMO_F32, 1, &one));
    CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
    CHECK(damo_model_load(dir_copy, &back) == DAMO_ERR_FORMAT && !back);
    CHECK_MSG(strstr(damo_last_error(), "bias_scale"), "%s", damo_last_error());
  }
  damo_tensor_dict_free(d);
  damo_tensor_free(p32), damo_tensor_free(p8), damo_tensor_free(back_p);
  damo_tensor_free(x), damo_tensor_free(y), damo_tensor_free(xt), damo_tensor_free(yt);
  damo_model_free(m);
}

static void test_bidirectional_lstm_model(void) { check_text_model(0); }
static void test_gru_model(void) { check_text_model(1); }

int main(void) {
  tmpdir_template("quantize_rnn");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_int8_recurrent_ops);
  RUN(test_bidirectional_lstm_model);
  RUN(test_gru_model);
  remove_tmpdir();
  return test_summary("quantize_rnn");
}
