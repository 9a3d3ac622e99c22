/* test_rnn.c - the recurrent ops (plain, masked, reversed, bidirectional) against PyTorch
 * (tests/fixtures/rnn.safetensors, made by tests/ref/gen_rnn.py) and against central finite
 * differences; padding invariance; and a small masked text model that trains and reloads. */
#include "harness.h"

#include <damo.h>
#include <stdlib.h>
#include <unistd.h>

static damo_tensor_dict *fx;

static damo_tensor *get(const char *cas, const char *what) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", cas, what);
  damo_tensor *t = damo_tensor_dict_get(fx, key);
  if (!t) fprintf(stderr, "fixture %s missing\n", key);
  return t;
}

/* The fixture's tensor or NULL, silently (optional entries such as a mask). */
static damo_tensor *find(const char *cas, const char *what) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", cas, what);
  return damo_tensor_dict_get(fx, key);
}

static damo_tensor *zeros_like(const damo_tensor *t) { return damo_tensor_new(DAMO_F32, t->ndim, t->shape); }

typedef struct lstm_graph {
  damo_graph *g;
  damo_node *out, *loss;
  damo_tensor *params[4], *grads[4];
} lstm_graph;

static const char *const names[4] = {"x", "kernel", "recurrent_kernel", "bias"};

/* The case's op with its mask (when the fixture has one) and direction. */
static lstm_graph build(const char *cas, int return_sequences, int gru, int reverse) {
  lstm_graph L = {0};
  L.g = damo_graph_new(1);
  damo_node *in[4];
  for (int i = 0; i < 4; i++) {
    L.params[i] = damo_tensor_clone(get(cas, names[i]));
    L.grads[i] = zeros_like(L.params[i]);
    in[i] = damo_param(L.g, names[i], L.params[i], L.grads[i]);
  }
  const damo_tensor *mask_t = find(cas, "mask");
  damo_node *mask = mask_t ? damo_constant(L.g, mask_t) : NULL;
  if (!mask && !reverse) /* the original entry points */
    L.out = gru ? damo_gru(L.g, in[0], in[1], in[2], in[3], return_sequences)
              : damo_lstm(L.g, in[0], in[1], in[2], in[3], return_sequences);
  else
    L.out = gru ? damo_gru_ex(L.g, in[0], in[1], in[2], in[3], mask, return_sequences, reverse)
                : damo_lstm_ex(L.g, in[0], in[1], in[2], in[3], mask, return_sequences, reverse);
  L.loss = damo_sum(L.g, damo_mul(L.g, L.out, damo_constant(L.g, get(cas, "dout"))), DAMO_ALL_AXES, 0);
  damo_node *outs[2] = {L.out, L.loss};
  CHECK_MSG(damo_graph_compile(L.g, L.loss, 2, outs) == DAMO_OK, "%s", damo_last_error());
  return L;
}

static void release(lstm_graph *L) {
  damo_graph_free(L->g);
  for (int i = 0; i < 4; i++) {
    damo_tensor_free(L->params[i]);
    damo_tensor_free(L->grads[i]);
  }
}

static void check_case(const char *cas, int return_sequences, int gru, int reverse) {
  lstm_graph L = build(cas, return_sequences, gru, reverse);
  CHECK(damo_graph_forward(L.g, 1) == DAMO_OK && damo_graph_backward(L.g) == DAMO_OK);
  const damo_tensor *out = get(cas, "out");
  CHECK(damo_node_numel(L.out) == damo_tensor_numel(out));
  CHECK_CLOSE(damo_node_data(L.out), damo_tensor_f32(out), damo_tensor_numel(out), 1e-5, 1e-4);
  for (int i = 0; i < 4; i++) {
    char what[64];
    snprintf(what, sizeof what, "grad_%s", names[i]);
    const damo_tensor *ref = get(cas, what);
    CHECK_MSG(test_close_ratio(damo_tensor_f32(L.grads[i]), damo_tensor_f32(ref), damo_tensor_numel(ref), 1e-5, 1e-4) <= 1,
              "%s %s", cas, what);
  }
  /* Central differences on every element of every input. */
  double worst = 0;
  for (int i = 0; i < 4; i++) {
    float *p = damo_tensor_f32(L.params[i]);
    for (int64_t k = 0; k < damo_tensor_numel(L.params[i]); k++) {
      float keep = p[k], h = 1e-2f;
      p[k] = keep + h;
      damo_graph_forward(L.g, 1);
      double up = damo_node_data(L.loss)[0];
      p[k] = keep - h;
      damo_graph_forward(L.g, 1);
      double down = damo_node_data(L.loss)[0];
      p[k] = keep;
      double fd = (up - down) / (2.0 * h), an = damo_tensor_f32(L.grads[i])[k];
      double err = fabs(fd - an) / (2e-3 + 2e-2 * fabs(an));
      if (err > worst) worst = err;
    }
  }
  CHECK_MSG(worst <= 1.0, "%s: finite differences off by %.3g x tolerance", cas, worst);
  release(&L);
}

static void test_lstm_against_torch(void) {
  check_case("lstm_seq", 1, 0, 0);
  check_case("lstm_last", 0, 0, 0);
  check_case("lstm_one_step", 0, 0, 0);
  check_case("lstm_long", 1, 0, 0);
  check_case("lstm_wide", 0, 0, 0);
}

static void test_gru_against_torch(void) {
  check_case("gru_seq", 1, 1, 0);
  check_case("gru_last", 0, 1, 0);
  check_case("gru_one_step", 1, 1, 0);
}

static void test_lstm_shape_errors(void) {
  damo_graph *g = damo_graph_new(1);
  int64_t xs[3] = {2, 5, 4}, ws[2] = {3, 8}, rs[2] = {2, 8}, bs[1] = {8};
  damo_tensor *w = damo_tensor_new(DAMO_F32, 2, ws), *r = damo_tensor_new(DAMO_F32, 2, rs), *b = damo_tensor_new(DAMO_F32, 1, bs);
  damo_node *x = damo_input(g, "x", DAMO_F32, 3, xs);
  CHECK(damo_lstm(g, x, damo_param(g, "w", w, NULL), damo_param(g, "r", r, NULL), damo_param(g, "b", b, NULL), 0) == NULL);
  CHECK_MSG(damo_graph_status(g) == DAMO_ERR_SHAPE && strstr(damo_last_error(), "(2, 5, 4)") &&
                strstr(damo_last_error(), "(3, 8)"),
            "%s", damo_last_error());
  damo_graph_free(g);
  damo_tensor_free(w);
  damo_tensor_free(r);
  damo_tensor_free(b);
}

static void test_masked_against_torch(void) {
  check_case("lstm_mask_right_seq", 1, 0, 0);
  check_case("lstm_mask_right_last", 0, 0, 0);
  check_case("lstm_mask_left_seq", 1, 0, 0);
  check_case("lstm_mask_holes_last", 0, 0, 0);
  check_case("lstm_mask_reverse_seq", 1, 0, 1);
  check_case("lstm_mask_reverse_last", 0, 0, 1);
  check_case("lstm_mask_reverse_left_last", 0, 0, 1);
  check_case("gru_mask_right_seq", 1, 1, 0);
  check_case("gru_mask_left_last", 0, 1, 0);
  check_case("gru_mask_holes_seq", 1, 1, 0);
  check_case("gru_mask_reverse_seq", 1, 1, 1);
  check_case("gru_mask_reverse_last", 0, 1, 1);
}

/* Masked steps added before (2) and after (3) every sequence, holding random inputs, change
 * neither the outputs at the original positions nor any gradient; they output 0 and get no
 * gradient themselves, even with a random upstream gradient there. */
static void check_padding_invariance(const char *cas, int return_sequences, int gru, int reverse) {
  lstm_graph L = build(cas, return_sequences, gru, reverse);
  CHECK(damo_graph_forward(L.g, 1) == DAMO_OK && damo_graph_backward(L.g) == DAMO_OK);
  const damo_tensor *x = get(cas, "x"), *mask = get(cas, "mask"), *dout = get(cas, "dout");
  const int64_t B = x->shape[0], T = x->shape[1], F = x->shape[2], U = L.params[2]->shape[0], P0 = 2, T2 = T + 5;
  int64_t xs[3] = {B, T2, F}, ms[2] = {B, T2}, ds[3] = {B, T2, U};
  damo_tensor *x2 = damo_tensor_new(DAMO_F32, 3, xs), *m2 = damo_tensor_new(DAMO_F32, 2, ms);
  damo_tensor *d2 = return_sequences ? damo_tensor_new(DAMO_F32, 3, ds) : damo_tensor_clone(dout);
  damo_rng rng;
  damo_rng_seed(&rng, 5);
  float *px = damo_tensor_f32(x2), *pm = damo_tensor_f32(m2), *pd = damo_tensor_f32(d2);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T2; t++) {
      int64_t src = t - P0, inside = src >= 0 && src < T;
      pm[b * T2 + t] = inside ? damo_tensor_f32(mask)[b * T + src] : 0.0f;
      for (int64_t f = 0; f < F; f++)
        px[(b * T2 + t) * F + f] = inside ? damo_tensor_f32(x)[(b * T + src) * F + f] : 3.0f * damo_rng_normal(&rng);
      for (int64_t u = 0; return_sequences && u < U; u++)
        pd[(b * T2 + t) * U + u] = inside ? damo_tensor_f32(dout)[(b * T + src) * U + u] : damo_rng_normal(&rng);
    }
  damo_graph *g = damo_graph_new(1);
  damo_tensor *grads[4] = {zeros_like(x2), zeros_like(L.params[1]), zeros_like(L.params[2]), zeros_like(L.params[3])};
  damo_node *in[4] = {damo_param(g, "x", x2, grads[0])};
  for (int i = 1; i < 4; i++) in[i] = damo_param(g, names[i], L.params[i], grads[i]);
  damo_node *mn = damo_constant(g, m2);
  damo_node *out = gru ? damo_gru_ex(g, in[0], in[1], in[2], in[3], mn, return_sequences, reverse)
                       : damo_lstm_ex(g, in[0], in[1], in[2], in[3], mn, return_sequences, reverse);
  damo_node *loss = damo_sum(g, damo_mul(g, out, damo_constant(g, d2)), DAMO_ALL_AXES, 0);
  CHECK_MSG(damo_graph_compile(g, loss, 1, &out) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
  const float *y = damo_node_data(L.out), *y2 = damo_node_data(out);
  double worst = 0, padded = 0;
  if (return_sequences) {
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < T2; t++)
        for (int64_t u = 0; u < U; u++) {
          int64_t src = t - P0;
          float v = y2[(b * T2 + t) * U + u];
          if (src < 0 || src >= T) padded += fabs(v);
          else worst = fmax(worst, fabs(v - y[(b * T + src) * U + u]));
        }
  } else {
    for (int64_t k = 0; k < B * U; k++) worst = fmax(worst, fabs(y2[k] - y[k]));
  }
  const float *dx = damo_tensor_f32(L.grads[0]), *dx2 = damo_tensor_f32(grads[0]);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T2; t++)
      for (int64_t f = 0; f < F; f++) {
        int64_t src = t - P0;
        float v = dx2[(b * T2 + t) * F + f];
        if (src < 0 || src >= T) padded += fabs(v);
        else worst = fmax(worst, fabs(v - dx[(b * T + src) * F + f]));
      }
  for (int i = 1; i < 4; i++)
    for (int64_t k = 0; k < damo_tensor_numel(grads[i]); k++)
      worst = fmax(worst, fabs(damo_tensor_f32(grads[i])[k] - damo_tensor_f32(L.grads[i])[k]));
  CHECK_MSG(worst <= 1e-6 && padded == 0.0, "%s: padding changed a value by %.3g; padded outputs/gradients sum %.3g", cas,
            worst, padded);
  damo_graph_free(g);
  for (int i = 0; i < 4; i++) damo_tensor_free(grads[i]);
  damo_tensor_free(x2);
  damo_tensor_free(m2);
  damo_tensor_free(d2);
  release(&L);
}

static void test_padding_changes_nothing(void) {
  check_padding_invariance("lstm_mask_right_seq", 1, 0, 0);
  check_padding_invariance("lstm_mask_right_last", 0, 0, 0);
  check_padding_invariance("lstm_mask_holes_last", 0, 0, 0);
  check_padding_invariance("lstm_mask_reverse_seq", 1, 0, 1);
  check_padding_invariance("lstm_mask_reverse_last", 0, 0, 1);
  check_padding_invariance("gru_mask_left_last", 0, 1, 0);
  check_padding_invariance("gru_mask_reverse_seq", 1, 1, 1);
  check_padding_invariance("gru_mask_reverse_last", 0, 1, 1);
}

/* Two LSTM ops (forward, and reverse over the same mask) concatenated: what the
 * bidirectional layer builds, against torch.nn.LSTM(bidirectional=True) on packed data. */
static void check_bidirectional(const char *cas, int return_sequences) {
  static const char *const bi_names[7] = {"x",
                                          "forward_kernel",
                                          "forward_recurrent_kernel",
                                          "forward_bias",
                                          "backward_kernel",
                                          "backward_recurrent_kernel",
                                          "backward_bias"};
  damo_graph *g = damo_graph_new(1);
  damo_tensor *p[7], *gr[7];
  damo_node *n[7];
  for (int i = 0; i < 7; i++) {
    p[i] = damo_tensor_clone(get(cas, bi_names[i]));
    gr[i] = zeros_like(p[i]);
    n[i] = damo_param(g, bi_names[i], p[i], gr[i]);
  }
  damo_node *mask = damo_constant(g, get(cas, "mask"));
  damo_node *fwd = damo_lstm_ex(g, n[0], n[1], n[2], n[3], mask, return_sequences, 0);
  damo_node *bwd = damo_lstm_ex(g, n[0], n[4], n[5], n[6], mask, return_sequences, 1);
  damo_node *out = damo_concat(g, fwd, bwd);
  damo_node *loss = damo_sum(g, damo_mul(g, out, damo_constant(g, get(cas, "dout"))), DAMO_ALL_AXES, 0);
  CHECK_MSG(damo_graph_compile(g, loss, 1, &out) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
  const damo_tensor *ref = get(cas, "out");
  CHECK(damo_node_numel(out) == damo_tensor_numel(ref));
  CHECK_CLOSE(damo_node_data(out), damo_tensor_f32(ref), damo_tensor_numel(ref), 1e-5, 1e-4);
  for (int i = 0; i < 7; i++) {
    char what[64];
    snprintf(what, sizeof what, "grad_%s", bi_names[i]);
    const damo_tensor *gt = get(cas, what);
    CHECK_MSG(test_close_ratio(damo_tensor_f32(gr[i]), damo_tensor_f32(gt), damo_tensor_numel(gt), 1e-5, 1e-4) <= 1,
              "%s %s", cas, what);
  }
  damo_graph_free(g);
  for (int i = 0; i < 7; i++) {
    damo_tensor_free(p[i]);
    damo_tensor_free(gr[i]);
  }
}

static void test_bidirectional_against_torch(void) {
  check_bidirectional("bi_lstm_seq", 1);
  check_bidirectional("bi_lstm_last", 0);
}

/* ids with 0 as padding -> embedding -> LSTM masked by ids != 0: the padding row of the
 * table gets no gradient, as with torch's padding_idx. */
static void test_embedding_masked_lstm_against_torch(void) {
  static const char *const keys[4] = {"table", "kernel", "recurrent_kernel", "bias"};
  damo_graph *g = damo_graph_new(1);
  const damo_tensor *ids = get("emb_lstm", "ids");
  damo_tensor *p[4], *gr[4];
  damo_node *n[4];
  for (int i = 0; i < 4; i++) {
    p[i] = damo_tensor_clone(get("emb_lstm", keys[i]));
    gr[i] = zeros_like(p[i]);
    n[i] = damo_param(g, keys[i], p[i], gr[i]);
  }
  damo_node *in = damo_input(g, "ids", DAMO_I32, ids->ndim, ids->shape);
  damo_node *y = damo_lstm_ex(g, damo_embedding(g, in, n[0]), n[1], n[2], n[3], damo_sequence_mask(g, in), 0, 0);
  damo_node *loss = damo_sum(g, damo_mul(g, y, damo_constant(g, get("emb_lstm", "dout"))), DAMO_ALL_AXES, 0);
  CHECK_MSG(damo_graph_compile(g, loss, 1, &y) == DAMO_OK, "%s", damo_last_error());
  damo_graph_bind(g, in, ids->data);
  CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
  const damo_tensor *ref = get("emb_lstm", "out");
  CHECK_CLOSE(damo_node_data(y), damo_tensor_f32(ref), damo_tensor_numel(ref), 1e-5, 1e-4);
  for (int i = 0; i < 4; i++) {
    char what[64];
    snprintf(what, sizeof what, "grad_%s", keys[i]);
    const damo_tensor *gt = get("emb_lstm", what);
    CHECK_MSG(test_close_ratio(damo_tensor_f32(gr[i]), damo_tensor_f32(gt), damo_tensor_numel(gt), 1e-5, 1e-4) <= 1,
              "emb_lstm %s", what);
  }
  double row0 = 0;
  for (int64_t k = 0; k < p[0]->shape[1]; k++) row0 += fabs(damo_tensor_f32(gr[0])[k]);
  CHECK(row0 == 0.0);
  damo_graph_free(g);
  for (int i = 0; i < 4; i++) {
    damo_tensor_free(p[i]);
    damo_tensor_free(gr[i]);
  }
}

/* Masked mean / max over timesteps, and their gradients, written out by hand. */
static void test_global_pool1d(void) {
  int64_t xs[3] = {2, 4, 3}, ms[2] = {2, 4}, ws[2] = {2, 3};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 3, xs), *m = damo_tensor_new(DAMO_F32, 2, ms), *w = damo_tensor_new(DAMO_F32, 2, ws);
  const float mask[8] = {1, 1, 0, 1, 0, 0, 0, 0};
  for (int k = 0; k < 24; k++) damo_tensor_f32(x)[k] = (float)((k * 7) % 11) - 5.0f;
  memcpy(damo_tensor_f32(m), mask, sizeof mask);
  for (int k = 0; k < 6; k++) damo_tensor_f32(w)[k] = (float)((k % 3) + 1); /* dL/dy[b, c] = c + 1 */
  for (int max = 0; max < 2; max++) {
    damo_graph *g = damo_graph_new(1);
    damo_tensor *gx = zeros_like(x);
    damo_node *xn = damo_param(g, "x", x, gx), *mn = damo_constant(g, m);
    damo_node *y = max ? damo_global_max_pool1d(g, xn, mn) : damo_global_avg_pool1d(g, xn, mn);
    damo_node *loss = damo_sum(g, damo_mul(g, y, damo_constant(g, w)), DAMO_ALL_AXES, 0);
    CHECK_MSG(damo_graph_compile(g, loss, 1, &y) == DAMO_OK, "%s", damo_last_error());
    CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
    const float *px = damo_tensor_f32(x), *out = damo_node_data(y), *dx = damo_tensor_f32(gx);
    for (int c = 0; c < 3; c++) {
      float expect = max ? -1e30f : 0.0f;
      int arg = 0;
      for (int t = 0; t < 4; t++)
        if (mask[t] != 0.0f) {
          if (max && px[t * 3 + c] > expect) expect = px[t * 3 + c], arg = t;
          if (!max) expect += px[t * 3 + c] / 3.0f;
        }
      CHECK_NEAR(out[c], expect, 1e-6);
      CHECK_NEAR(out[3 + c], 0.0, 0.0); /* the second row has no step */
      for (int t = 0; t < 4; t++) {
        float g_expect = mask[t] == 0.0f ? 0.0f : max ? (t == arg ? (float)(c + 1) : 0.0f) : (float)(c + 1) / 3.0f;
        CHECK_NEAR(dx[t * 3 + c], g_expect, 1e-6);
        CHECK_NEAR(dx[12 + t * 3 + c], 0.0, 0.0);
      }
    }
    damo_graph_free(g);
    damo_tensor_free(gx);
  }
  damo_tensor_free(x);
  damo_tensor_free(m);
  damo_tensor_free(w);
}

static void test_embedding_against_torch(void) {
  damo_graph *g = damo_graph_new(1);
  damo_tensor *ids = get("embedding", "ids"), *table = damo_tensor_clone(get("embedding", "table"));
  damo_tensor *grad = zeros_like(table);
  damo_node *in = damo_input(g, "ids", DAMO_I32, ids->ndim, ids->shape);
  damo_node *y = damo_embedding(g, in, damo_param(g, "table", table, grad));
  damo_node *loss = damo_sum(g, damo_mul(g, y, damo_constant(g, get("embedding", "dout"))), DAMO_ALL_AXES, 0);
  CHECK(damo_graph_compile(g, loss, 1, &y) == DAMO_OK);
  damo_graph_bind(g, in, ids->data);
  CHECK(damo_graph_forward(g, 1) == DAMO_OK && damo_graph_backward(g) == DAMO_OK);
  const damo_tensor *out = get("embedding", "out"), *gt = get("embedding", "grad_table");
  CHECK(damo_node_ndim(y) == 3 && damo_node_shape(y)[2] == 5);
  CHECK_CLOSE(damo_node_data(y), damo_tensor_f32(out), damo_tensor_numel(out), 1e-7, 1e-7);
  CHECK_CLOSE(damo_tensor_f32(grad), damo_tensor_f32(gt), damo_tensor_numel(gt), 1e-6, 1e-5);
  /* an id outside the table is an error naming it, not a read out of bounds */
  int32_t bad[12];
  memcpy(bad, ids->data, sizeof bad);
  bad[7] = 6;
  damo_graph_bind(g, in, bad);
  CHECK(damo_graph_forward(g, 1) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(strstr(damo_last_error(), "id 6") && strstr(damo_last_error(), "position 7"), "%s", damo_last_error());
  damo_graph_free(g);
  damo_tensor_free(table);
  damo_tensor_free(grad);
}

/* Toy data: sequences of 3..T tokens in 1..V-1, padded with 0 (right-padded, every third
 * row left-padded); label 1 when token 7 appears (half the rows). */
static void make_token_data(int64_t N, int64_t T, int V, uint64_t seed, damo_tensor **x_out, damo_tensor **y_out) {
  int64_t xs[2] = {N, T}, ys[2] = {N, 1};
  damo_tensor *x = damo_tensor_new(DAMO_I32, 2, xs), *y = damo_tensor_new(DAMO_F32, 2, ys);
  damo_rng rng;
  damo_rng_seed(&rng, seed);
  int32_t *ids = x->data;
  for (int64_t n = 0; n < N; n++) {
    int64_t len = 3 + damo_rng_below(&rng, (uint32_t)(T - 2)), start = n % 3 == 2 ? T - len : 0;
    int positive = (int)damo_rng_below(&rng, 2);
    memset(ids + n * T, 0, (size_t)T * sizeof *ids);
    for (int64_t t = 0; t < len; t++) {
      int32_t tok;
      do tok = 1 + (int32_t)damo_rng_below(&rng, (uint32_t)(V - 1));
      while (tok == 7);
      ids[n * T + start + t] = tok;
    }
    if (positive) ids[n * T + start + damo_rng_below(&rng, (uint32_t)len)] = 7;
    damo_tensor_f32(y)[n] = (float)positive;
  }
  *x_out = x;
  *y_out = y;
}

/* Embedding(mask_zero) -> Bidirectional(LSTM) -> Dense(sigmoid) learns "does 7 appear",
 * refuses f32 inputs, and predicts bit for bit the same after save/load. */
static void test_text_model_learns_and_reloads(void) {
  const int64_t N = 640, T = 12;
  const int V = 12;
  damo_tensor *x, *y, *xv, *yv;
  make_token_data(N, T, V, 11, &x, &y);
  make_token_data(200, T, V, 12, &xv, &yv);
  damo_model *m = damo_sequential_new(1, &T);
  CHECK(damo_model_add(m, damo_embedding_layer(V, 8, 1)) == DAMO_OK);
  CHECK(damo_model_add(m, damo_bidirectional_layer(damo_lstm_layer(8, 0), DAMO_MERGE_CONCAT)) == DAMO_OK);
  CHECK(damo_model_add(m, damo_dense(1, DAMO_ACT_SIGMOID)) == DAMO_OK);
  damo_compile_options c = {.optimizer = damo_adam(0.01f),
                            .loss = DAMO_LOSS_BINARY_CE, .metrics = DAMO_METRIC_ACCURACY};
  CHECK_MSG(damo_model_compile(m, &c) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_model_num_params(m) == V * 8 + 2 * (8 * 32 + 8 * 32 + 32) + 16 + 1);
  damo_fit_options fo = {.epochs = 8, .batch_size = 32, .seed = 3, .verbose = 0};
  CHECK_MSG(damo_model_fit(m, x, y, &fo, NULL) == DAMO_OK, "%s", damo_last_error());
  float loss = 0, acc = 0;
  CHECK_MSG(damo_model_evaluate(m, xv, yv, 64, &loss, &acc) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(acc > 0.9f, "held-out accuracy %.3f (loss %.3f)", (double)acc, (double)loss);
  fprintf(stderr, "  text model: held-out accuracy %.3f, loss %.3f\n", (double)acc, (double)loss);

  /* f32 ids are refused with a message saying what is expected */
  int64_t fs[2] = {2, T};
  damo_tensor *xf = damo_tensor_new(DAMO_F32, 2, fs), *out = NULL, *out2 = NULL;
  CHECK(damo_model_predict(m, xf, 8, &out) == DAMO_ERR_INVALID_ARG && !out);
  CHECK_MSG(strstr(damo_last_error(), "i32") && strstr(damo_last_error(), "embedding"), "%s", damo_last_error());
  damo_tensor_free(xf);

  char dir[] = "/tmp/damo_rnn_model_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  CHECK_MSG(damo_model_save(m, dir) == DAMO_OK, "%s", damo_last_error());
  damo_model *back = NULL;
  CHECK_MSG(damo_model_load(dir, &back) == DAMO_OK, "%s", damo_last_error());
  char path[300];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  damo_tensor_dict *w = NULL;
  CHECK(damo_safetensors_load(path, &w) == DAMO_OK);
  CHECK(w && damo_tensor_dict_get(w, "embedding_1.embeddings") &&
        damo_tensor_dict_get(w, "bidirectional_1.forward_lstm.recurrent_kernel") &&
        damo_tensor_dict_get(w, "bidirectional_1.backward_lstm.bias"));
  damo_tensor_dict_free(w);
  CHECK(back && damo_model_predict(m, xv, 64, &out) == DAMO_OK && damo_model_predict(back, xv, 64, &out2) == DAMO_OK);
  CHECK(out && out2 && damo_tensor_numel(out) == 200 &&
        memcmp(out->data, out2->data, (size_t)damo_tensor_numel(out) * sizeof(float)) == 0);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  damo_tensor_free(out);
  damo_tensor_free(out2);
  damo_model_free(back);
  damo_model_free(m);
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_tensor_free(xv);
  damo_tensor_free(yv);
}

/* A config with every new layer type: the mask flows through bidirectional(return_sequences)
 * and dropout into the max pooling, so where the padding sits does not matter. */
static void test_config_and_mask_flow(void) {
  const char *json = "{\"input_shape\": [6], \"layers\": ["
                     "{\"type\": \"embedding\", \"input_dim\": 5, \"output_dim\": 4, \"mask_zero\": true},"
                     "{\"type\": \"bidirectional\", \"merge_mode\": \"sum\","
                     " \"layer\": {\"type\": \"gru\", \"units\": 3, \"return_sequences\": true}},"
                     "{\"type\": \"dropout\", \"rate\": 0.1},"
                     "{\"type\": \"global_max_pooling1d\"},"
                     "{\"type\": \"dense\", \"units\": 2}]}";
  damo_model *m = NULL;
  CHECK_MSG(damo_model_from_config_json(json, "test", &m) == DAMO_OK, "%s", damo_last_error());
  if (!m) return;
  CHECK(damo_model_build(m, 4) == DAMO_OK);
  int64_t xs[2] = {3, 6};
  damo_tensor *x = damo_tensor_new(DAMO_I32, 2, xs), *out = NULL;
  const int32_t rows[18] = {1, 2, 3, 0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 1, 0, 2, 3, 0};
  memcpy(x->data, rows, sizeof rows);
  CHECK_MSG(damo_model_predict(m, x, 3, &out) == DAMO_OK, "%s", damo_last_error());
  const float *p = out ? damo_tensor_f32(out) : NULL;
  CHECK(p && fabs(p[0] - p[2]) < 1e-6 && fabs(p[0] - p[4]) < 1e-6 && fabs(p[1] - p[3]) < 1e-6 && fabs(p[1] - p[5]) < 1e-6);
  damo_tensor_free(out);
  damo_tensor_free(x);
  damo_model_free(m);

  /* the same with average pooling over a concatenated bidirectional LSTM */
  const char *json2 = "{\"input_shape\": [6], \"layers\": ["
                      "{\"type\": \"embedding\", \"input_dim\": 5, \"output_dim\": 4, \"mask_zero\": true},"
                      "{\"type\": \"bidirectional\", \"layer\": {\"type\": \"lstm\", \"units\": 3, \"return_sequences\": true}},"
                      "{\"type\": \"global_average_pooling1d\"}, {\"type\": \"dense\", \"units\": 1}]}";
  CHECK_MSG(damo_model_from_config_json(json2, "test", &m) == DAMO_OK, "%s", damo_last_error());
  x = damo_tensor_new(DAMO_I32, 2, xs);
  memcpy(x->data, rows, sizeof rows);
  out = NULL;
  CHECK(m && damo_model_predict(m, x, 3, &out) == DAMO_OK);
  p = out ? damo_tensor_f32(out) : NULL;
  CHECK(p && damo_tensor_numel(out) == 3 && fabs(p[0] - p[1]) < 1e-6 && fabs(p[0] - p[2]) < 1e-6);
  damo_tensor_free(out);
  damo_tensor_free(x);
  damo_model_free(m);

  /* mistakes name the layer and what was expected */
  const char *bad[] = {
      "{\"input_shape\": [6], \"layers\": [{\"type\": \"bidirectional\", \"layer\": {\"type\": \"dense\", \"units\": 3}}]}",
      "{\"input_shape\": [6, 2], \"layers\": [{\"type\": \"bidirectional\", \"merge_mode\": \"max\", \"layer\": {\"type\": \"lstm\", \"units\": 3}}]}",
      "{\"input_shape\": [6], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 5}]}",
      "{\"input_shape\": [6, 2], \"layers\": [{\"type\": \"lstm\", \"units\": 3},"
      " {\"type\": \"embedding\", \"input_dim\": 5, \"output_dim\": 2}]}",
  };
  const char *expect[] = {"lstm or gru", "merge_mode", "output_dim", "first layer"};
  for (int i = 0; i < 4; i++) {
    m = NULL;
    CHECK(damo_model_from_config_json(bad[i], "bad", &m) != DAMO_OK && !m);
    CHECK_MSG(strstr(damo_last_error(), expect[i]), "case %d: %s", i, damo_last_error());
  }
}

int main(void) {
  if (damo_safetensors_load(DAMO_SOURCE_DIR "/tests/fixtures/rnn.safetensors", &fx) != DAMO_OK) {
    fprintf(stderr, "%s\n", damo_last_error());
    printf("rnn: 0 passed, 1 failed\n");
    return 1;
  }
  RUN(test_lstm_against_torch);
  RUN(test_lstm_shape_errors);
  RUN(test_gru_against_torch);
  RUN(test_embedding_against_torch);
  RUN(test_masked_against_torch);
  RUN(test_padding_changes_nothing);
  RUN(test_bidirectional_against_torch);
  RUN(test_embedding_masked_lstm_against_torch);
  RUN(test_global_pool1d);
  RUN(test_config_and_mask_flow);
  RUN(test_text_model_learns_and_reloads);
  damo_tensor_dict_free(fx);
  return test_summary("rnn");
}
