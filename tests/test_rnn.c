/* test_rnn.c - the recurrent ops against PyTorch (tests/fixtures/rnn.safetensors, made by
 * tests/ref/gen_rnn.py) and against central finite differences. */
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

static damo_tensor *zeros_like(const damo_tensor *t) { return damo_tensor_new(DAMO_F32, t->ndim, t->shape); }

typedef struct lstm_graph {
  damo_graph *g;
  damo_node *out, *loss;
  damo_tensor *params[4], *grads[4];
} lstm_graph;

static const char *const names[4] = {"x", "kernel", "recurrent_kernel", "bias"};

static lstm_graph build(const char *cas, int return_sequences, int gru) {
  lstm_graph L = {0};
  L.g = damo_graph_new(1);
  damo_node *in[4];
  for (int i = 0; i < 4; i++) {
    L.params[i] = damo_tensor_clone(get(cas, names[i]));
    L.grads[i] = zeros_like(L.params[i]);
    in[i] = damo_param(L.g, names[i], L.params[i], L.grads[i]);
  }
  L.out = gru ? damo_gru(L.g, in[0], in[1], in[2], in[3], return_sequences)
            : damo_lstm(L.g, in[0], in[1], in[2], in[3], return_sequences);
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

static void check_case(const char *cas, int return_sequences, int gru) {
  lstm_graph L = build(cas, return_sequences, gru);
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
  check_case("lstm_seq", 1, 0);
  check_case("lstm_last", 0, 0);
  check_case("lstm_one_step", 0, 0);
  check_case("lstm_long", 1, 0);
  check_case("lstm_wide", 0, 0);
}

static void test_gru_against_torch(void) {
  check_case("gru_seq", 1, 1);
  check_case("gru_last", 0, 1);
  check_case("gru_one_step", 1, 1);
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
  damo_tensor_dict_free(fx);
  return test_summary("rnn");
}
