/* test_functional.c - the functional API: a two-input model with a shared layer, every merge
 * layer and a residual connection, equal to PyTorch (tests/fixtures/functional.safetensors
 * from tests/ref/gen_functional.py) in logits, loss and every weight's gradient; the same
 * model from config JSON, saved and loaded; Sequential as the chain it is; and the errors a
 * functional description can hold (unknown names, cycles, shapes that do not merge, a shared
 * layer on other shapes, a dangling input). */
#include "cli_run.h"
#include "harness.h"
#include "nn/layers.h"
#include "tmpfiles.h"

#include <damo.h>
#include <stdlib.h>

static damo_tensor_dict *fx;

static const float *fixture(const char *name) {
  const damo_tensor *t = damo_tensor_dict_get(fx, name);
  if (!t) fprintf(stderr, "  fixture tensor '%s' missing\n", name);
  return t ? t->data : NULL;
}

/* The fixture's model through the C API; node numbers of its inputs in *a, *b. */
static damo_model *build_reference_model(void) {
  damo_model *m = damo_functional_new();
  const int64_t five[] = {5};
  int a = damo_model_input(m, "a", 1, five), b = damo_model_input(m, "b", 1, five);
  damo_layer *shared = damo_layer_set_name(damo_dense(4, DAMO_ACT_RELU), "shared");
  int sa = damo_model_call1(m, shared, a), sb = damo_model_call1(m, shared, b);
  int cat = damo_model_call2(m, damo_concatenate_layer(-1), sa, sb);
  int h = damo_model_call1(m, damo_layer_set_name(damo_dense(8, DAMO_ACT_NONE), "dense_h"), cat);
  int r = damo_model_call2(m, damo_add_layer(), h, cat);
  int avg = damo_model_call2(m, damo_average_layer(), sa, sb);
  int diff = damo_model_call2(m, damo_subtract_layer(), sa, sb);
  int prod = damo_model_call2(m, damo_multiply_layer(), sa, sb);
  const int parts[] = {r, avg, diff, prod};
  int j = damo_model_call(m, damo_concatenate_layer(-1), 4, parts);
  int logits = damo_model_call1(m, damo_layer_set_name(damo_dense(3, DAMO_ACT_SOFTMAX), "logits"), j);
  if (damo_model_set_output(m, logits) != DAMO_OK) {
    fprintf(stderr, "  set_output: %s\n", damo_last_error());
    damo_model_free(m);
    return NULL;
  }
  return m;
}

static void copy_fixture_weights(damo_model *m) {
  const char *layers[] = {"shared", "dense_h", "logits"};
  for (int i = 0; i < 3; i++) {
    damo_layer *l = damo_model_find_layer(m, layers[i]);
    for (int p = 0; l && p < l->n_params && l->params[p].value; p++) {
      char name[64];
      snprintf(name, sizeof name, "%s.%s", layers[i], l->params[p].name);
      const float *src = fixture(name);
      if (src) memcpy(l->params[p].value->data, src, (size_t)damo_tensor_numel(l->params[p].value) * sizeof(float));
    }
  }
}

/* One SGD step with learning rate 1 moves every weight by exactly its gradient. */
static void check_against_torch(damo_model *m, const char *how) {
  test_current = how;
  damo_compile_options c = {.optimizer = damo_sgd(1.0f, 0, 0), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = 0};
  CHECK(damo_model_compile(m, &c) == DAMO_OK);
  copy_fixture_weights(m); /* compile builds; weights as the fixture's */
  const damo_tensor *a = damo_tensor_dict_get(fx, "a"), *b = damo_tensor_dict_get(fx, "b");
  const damo_tensor *labels = damo_tensor_dict_get(fx, "labels");
  const damo_tensor *xs[] = {a, b};
  damo_tensor *probs = NULL;
  CHECK(damo_model_predict_inputs(m, 2, xs, 0, &probs) == DAMO_OK);
  /* predict gives softmax(logits): compare the log-ratios, which are the logits up to a shift */
  const float *want = fixture("logits");
  double worst = 0;
  for (int r = 0; probs && want && r < 6; r++)
    for (int k = 1; k < 3; k++) {
      const float *p = damo_tensor_f32(probs) + r * 3;
      double got = log(p[k] / p[0]), ref = want[r * 3 + k] - want[r * 3];
      worst = fmax(worst, fabs(got - ref));
    }
  CHECK_MSG(probs && worst < 1e-5, "logit differences off by %g", worst);
  damo_tensor_free(probs);
  float loss = 0;
  CHECK(damo_model_evaluate_inputs(m, 2, xs, labels, 0, &loss, NULL) == DAMO_OK);
  CHECK_NEAR(loss, fixture("loss")[0], 1e-5);

  const char *layers[] = {"shared", "dense_h", "logits"};
  float before[3][2][64];
  for (int i = 0; i < 3; i++) {
    damo_layer *l = damo_model_find_layer(m, layers[i]);
    for (int p = 0; p < 2; p++) memcpy(before[i][p], l->params[p].value->data, (size_t)damo_tensor_numel(l->params[p].value) * 4);
  }
  damo_fit_options o = {.epochs = 1, .batch_size = 6, .shuffle = 0, .verbose = 0};
  CHECK(damo_model_fit_inputs(m, 2, xs, labels, &o, NULL) == DAMO_OK);
  for (int i = 0; i < 3; i++) {
    damo_layer *l = damo_model_find_layer(m, layers[i]);
    for (int p = 0; p < 2; p++) {
      const int64_t n = damo_tensor_numel(l->params[p].value);
      float grad[64];
      for (int64_t k = 0; k < n; k++) grad[k] = before[i][p][k] - ((const float *)l->params[p].value->data)[k];
      char name[64];
      snprintf(name, sizeof name, "grad.%s.%s", layers[i], l->params[p].name);
      const float *ref = fixture(name);
      CHECK_MSG(ref && test_close_ratio(grad, ref, (long)n, 1e-5, 1e-4) <= 1.0, "%s: worst %.3g x tolerance", name,
                ref ? test_close_ratio(grad, ref, (long)n, 1e-5, 1e-4) : -1.0);
    }
  }
}

static void test_c_api_matches_torch(void) {
  damo_model *m = build_reference_model();
  CHECK(m != NULL);
  if (!m) return;
  CHECK(damo_model_num_inputs(m) == 2);
  CHECK(damo_model_num_layers(m) == 9); /* the shared layer once */
  CHECK(damo_model_num_params(m) == 5 * 4 + 4 + 8 * 8 + 8 + 20 * 3 + 3);
  check_against_torch(m, "test_c_api_matches_torch");
  damo_model_free(m);
}

static const char *config_text =
    "{\"format\": \"damo.functional\",\n"
    " \"inputs\": [{\"name\": \"a\", \"shape\": [5]}, {\"name\": \"b\", \"shape\": [5]}],\n"
    " \"layers\": [\n"
    "  {\"type\": \"concatenate\", \"name\": \"j\", \"inputs\": [\"r\", \"avg\", \"diff\", \"prod\"]},\n"
    "  {\"type\": \"dense\", \"name\": \"shared\", \"units\": 4, \"activation\": \"relu\", \"inputs\": [\"a\"]},\n"
    "  {\"shared\": \"shared\", \"name\": \"shared_b\", \"inputs\": [\"b\"]},\n"
    "  {\"type\": \"concatenate\", \"name\": \"cat\", \"inputs\": [\"shared\", \"shared_b\"]},\n"
    "  {\"type\": \"dense\", \"name\": \"dense_h\", \"units\": 8, \"inputs\": [\"cat\"]},\n"
    "  {\"type\": \"add\", \"name\": \"r\", \"inputs\": [\"dense_h\", \"cat\"]},\n"
    "  {\"type\": \"average\", \"name\": \"avg\", \"inputs\": [\"shared\", \"shared_b\"]},\n"
    "  {\"type\": \"subtract\", \"name\": \"diff\", \"inputs\": [\"shared\", \"shared_b\"]},\n"
    "  {\"type\": \"multiply\", \"name\": \"prod\", \"inputs\": [\"shared\", \"shared_b\"]},\n"
    "  {\"type\": \"dense\", \"name\": \"logits\", \"units\": 3, \"activation\": \"softmax\", \"inputs\": [\"j\"]}],\n"
    " \"outputs\": [\"logits\"]}\n";

/* The same model as config JSON, its entries out of order; saved and loaded again, it
 * predicts the same numbers. */
static void test_config_matches_torch_and_round_trips(void) {
  damo_model *m = NULL;
  CHECK_MSG(damo_model_from_config_json(config_text, "functional.json", &m) == DAMO_OK, "%s", damo_last_error());
  if (!m) return;
  check_against_torch(m, "test_config_matches_torch_and_round_trips");
  char dir[512];
  snprintf(dir, sizeof dir, "%s", tmp_path("functional_model"));
  CHECK_MSG(damo_model_save(m, dir) == DAMO_OK, "%s", damo_last_error());
  damo_model *back = NULL;
  CHECK_MSG(damo_model_load(dir, &back) == DAMO_OK, "%s", damo_last_error());
  const damo_tensor *xs[] = {damo_tensor_dict_get(fx, "a"), damo_tensor_dict_get(fx, "b")};
  damo_tensor *p1 = NULL, *p2 = NULL;
  CHECK(damo_model_predict_inputs(m, 2, xs, 0, &p1) == DAMO_OK);
  CHECK(back && damo_model_predict_inputs(back, 2, xs, 0, &p2) == DAMO_OK);
  CHECK(p1 && p2 && !memcmp(p1->data, p2->data, 18 * sizeof(float)));
  CHECK(back && damo_model_find_layer(back, "shared") && damo_model_find_layer(back, "shared")->calls == 2);
  /* the command line: one .npy per input, in the model's order; a missing one is refused */
  char a_npy[600], b_npy[600], p_npy[600];
  snprintf(a_npy, sizeof a_npy, "%s", tmp_path("a.npy"));
  snprintf(b_npy, sizeof b_npy, "%s", tmp_path("b.npy"));
  snprintf(p_npy, sizeof p_npy, "%s", tmp_path("p.npy"));
  CHECK(damo_npy_save(a_npy, xs[0]) == DAMO_OK && damo_npy_save(b_npy, xs[1]) == DAMO_OK);
  int rc = run("%s predict --model %s --input %s,%s --output %s", DAMO_CLI_PATH, dir, a_npy, b_npy, p_npy);
  damo_tensor *p_cli = NULL;
  CHECK_MSG(rc == 0 && damo_npy_load(p_npy, &p_cli) == DAMO_OK, "%s", cli_out);
  CHECK(p_cli && p1 && damo_tensor_numel(p_cli) == 18 && !memcmp(p_cli->data, p1->data, 18 * sizeof(float)));
  damo_tensor_free(p_cli);
  rc = run("%s predict --model %s --input %s", DAMO_CLI_PATH, dir, a_npy);
  CHECK_MSG(rc == 1 && strstr(cli_out, "the model takes 2 inputs, got 1"), "%s", cli_out);
  rc = run("%s summary --model %s", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "Connected to") && strstr(cli_out, "shared_b (dense)"), "%s", cli_out);
  /* the summary shows the graph's wiring */
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  CHECK(back && damo_model_summary(back, f) == DAMO_OK);
  fclose(f);
  CHECK_MSG(text && strstr(text, "Connected to") && strstr(text, "shared_b (dense)") && strstr(text, "dense_h,"),
            "%s", text ? text : "");
  free(text);
  damo_tensor_free(p1);
  damo_tensor_free(p2);
  damo_model_free(back);
  damo_model_free(m);
}

/* A Sequential model is the chain of its layers: the same weights give the same numbers as
 * the functional description of that chain. */
static void test_sequential_is_a_chain(void) {
  const int64_t in[] = {5};
  damo_model *s = damo_sequential_new(1, in);
  damo_model_add(s, damo_dense(7, DAMO_ACT_TANH));
  damo_model_add(s, damo_dense(3, DAMO_ACT_SOFTMAX));
  damo_model *f = damo_functional_new();
  int x = damo_model_input(f, NULL, 1, in);
  int h = damo_model_call1(f, damo_dense(7, DAMO_ACT_TANH), x);
  CHECK(damo_model_set_output(f, damo_model_call1(f, damo_dense(3, DAMO_ACT_SOFTMAX), h)) == DAMO_OK);
  CHECK(damo_model_build(s, 5) == DAMO_OK && damo_model_build(f, 5) == DAMO_OK);
  const damo_tensor *a = damo_tensor_dict_get(fx, "a");
  damo_tensor *ps = NULL, *pf = NULL;
  CHECK(damo_model_predict(s, a, 0, &ps) == DAMO_OK);
  CHECK(damo_model_predict(f, a, 0, &pf) == DAMO_OK);
  CHECK(ps && pf && !memcmp(ps->data, pf->data, 18 * sizeof(float)));
  damo_tensor_free(ps);
  damo_tensor_free(pf);
  damo_model_free(s);
  damo_model_free(f);
}

/* Each bad description fails with a message naming what is wrong. */
static void expect_config_error(const char *layers, const char *outputs, const char *want) {
  char text[2048];
  snprintf(text, sizeof text,
           "{\"inputs\": [{\"name\": \"a\", \"shape\": [5]}, {\"name\": \"b\", \"shape\": [3]}], \"layers\": [%s], "
           "\"outputs\": [%s]}",
           layers, outputs);
  damo_model *m = NULL;
  damo_status st = damo_model_from_config_json(text, "bad.json", &m);
  CHECK_MSG(st != DAMO_OK && m == NULL && strstr(damo_last_error(), want), "want '%s', got: %s", want,
            st == DAMO_OK ? "success" : damo_last_error());
  damo_model_free(m);
}

static void test_config_errors(void) {
  expect_config_error("{\"type\": \"dense\", \"name\": \"d\", \"units\": 2, \"inputs\": [\"nowhere\"]}", "\"d\"",
                      "no input or layer is named 'nowhere'");
  expect_config_error("{\"type\": \"add\", \"name\": \"p\", \"inputs\": [\"a\", \"q\"]},"
                      "{\"type\": \"dense\", \"name\": \"q\", \"units\": 5, \"inputs\": [\"p\"]}",
                      "\"q\"", "cycle (each waits for the next): p -> q -> p");
  expect_config_error("{\"type\": \"add\", \"name\": \"s\", \"inputs\": [\"a\", \"b\"]}", "\"s\"",
                      "layer 's' (add): add layer: shapes must be equal or broadcast");
  expect_config_error("{\"type\": \"concatenate\", \"name\": \"c\", \"axis\": 2, \"inputs\": [\"a\", \"b\"]}", "\"c\"",
                      "axis 2 is not an axis after the batch of rank-1 inputs");
  expect_config_error("{\"type\": \"dense\", \"name\": \"d\", \"units\": 2, \"inputs\": [\"a\"]},"
                      "{\"shared\": \"d\", \"name\": \"d2\", \"inputs\": [\"b\"]},"
                      "{\"type\": \"add\", \"name\": \"s\", \"inputs\": [\"d\", \"d2\"]}",
                      "\"s\"", "layer 'd' is shared: this call takes (3,) from 'b', its first call took (5,)");
  expect_config_error("{\"type\": \"dense\", \"name\": \"d\", \"units\": 2, \"inputs\": [\"a\"]}", "\"d\"",
                      "input 'b' does not lead to the output 'd'");
  expect_config_error("{\"type\": \"dense\", \"name\": \"a\", \"units\": 2, \"inputs\": [\"b\"]}", "\"a\"",
                      "'a' names another input or layer too");
  expect_config_error("{\"type\": \"subtract\", \"name\": \"s\", \"inputs\": [\"a\", \"a\", \"a\"]}", "\"s\"",
                      "takes 2 inputs, got 3");
  expect_config_error("{\"type\": \"dense\", \"name\": \"d\", \"units\": 2, \"inputs\": [\"a\"], \"input\": 3}", "\"d\"",
                      "layer 0 ('d')");
  expect_config_error("{\"type\": \"dense\", \"name\": \"d\", \"units\": 2, \"inputs\": [\"a\"]},"
                      "{\"type\": \"embedding\", \"name\": \"e\", \"input_dim\": 9, \"output_dim\": 2, \"inputs\": [\"d\"]}",
                      "\"e\"", "embedding layer 'e' must take a model input (token ids), not the output of 'd'");
  expect_config_error("{\"type\": \"dense\", \"name\": \"d\", \"units\": 2, \"inputs\": [\"a\"]}", "\"d\", \"d\"",
                      "names 'd' twice");
}

/* The C builder keeps its first failure: later calls return -1, set_output reports it. */
static void test_builder_errors_are_sticky(void) {
  damo_model *m = damo_functional_new();
  const int64_t five[] = {5}, three[] = {3};
  int a = damo_model_input(m, "a", 1, five), b = damo_model_input(m, "b", 1, three);
  int s = damo_model_call2(m, damo_add_layer(), a, b);
  CHECK(s == -1);
  int d = damo_model_call1(m, damo_dense(2, DAMO_ACT_NONE), s);
  CHECK(d == -1);
  CHECK_MSG(damo_model_set_output(m, d) != DAMO_OK && strstr(damo_last_error(), "shapes must be equal or broadcast"),
            "%s", damo_last_error());
  const damo_tensor *xs[] = {NULL, NULL};
  damo_compile_options c = {.optimizer = damo_adam(1e-3f), .loss = DAMO_LOSS_MSE, .metrics = 0};
  CHECK(damo_model_compile(m, &c) != DAMO_OK);
  CHECK(damo_model_fit_inputs(m, 2, xs, NULL, NULL, NULL) != DAMO_OK);
  damo_model_free(m);

  m = damo_functional_new(); /* data of the wrong number of inputs, or rows that differ */
  a = damo_model_input(m, "a", 1, five), b = damo_model_input(m, "b", 1, five);
  CHECK(damo_model_set_output(m, damo_model_call2(m, damo_multiply_layer(), a, b)) == DAMO_OK);
  CHECK(damo_model_compile(m, &c) == DAMO_OK);
  const damo_tensor *x = damo_tensor_dict_get(fx, "a");
  damo_tensor *short_x = damo_tensor_slice_rows(x, 0, 4);
  CHECK(damo_model_fit(m, x, x, NULL, NULL) != DAMO_OK && strstr(damo_last_error(), "takes 2 inputs, got 1"));
  const damo_tensor *uneven[] = {x, short_x};
  CHECK(damo_model_fit_inputs(m, 2, uneven, x, NULL, NULL) != DAMO_OK &&
        strstr(damo_last_error(), "input 'b' has 4 rows but input 'a' has 6"));
  damo_tensor_free(short_x);
  damo_model_free(m);
}

int main(void) {
  (void)write_bytes;
  tmpdir_template("functional");
  if (!mkdtemp(tmpdir)) {
    printf("functional: 0 passed, 1 failed\n");
    return 1;
  }
  if (damo_safetensors_load(DAMO_SOURCE_DIR "/tests/fixtures/functional.safetensors", &fx) != DAMO_OK) {
    fprintf(stderr, "fixture missing (%s); run: make ref\n", damo_last_error());
    printf("functional: 0 passed, 1 failed\n");
    return 1;
  }
  RUN(test_c_api_matches_torch);
  RUN(test_config_matches_torch_and_round_trips);
  RUN(test_sequential_is_a_chain);
  RUN(test_config_errors);
  RUN(test_builder_errors_are_sticky);
  damo_tensor_dict_free(fx);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return test_summary("functional");
}
