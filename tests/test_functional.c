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

/* ------------------------------------------------------------------ several outputs */

/* x (4) -> trunk (8, relu) -> "cls" (3, softmax) and "reg" (1): Keras' Model(x, [cls, reg]).
 * only: "cls" or "reg" for the one-output model of that head (same layer names). */
static damo_model *two_head_model(const char *only) {
  damo_model *m = damo_functional_new();
  const int64_t four[] = {4};
  int x = damo_model_input(m, "x", 1, four);
  int t = damo_model_call1(m, damo_layer_set_name(damo_dense(8, DAMO_ACT_TANH), "trunk"), x);
  int outs[2], n = 0;
  if (!only || !strcmp(only, "cls"))
    outs[n++] = damo_model_call1(m, damo_layer_set_name(damo_dense(3, DAMO_ACT_SOFTMAX), "cls"), t);
  if (!only || !strcmp(only, "reg"))
    outs[n++] = damo_model_call1(m, damo_layer_set_name(damo_dense(1, DAMO_ACT_NONE), "reg"), t);
  CHECK_MSG(damo_model_set_outputs(m, n, outs) == DAMO_OK, "%s", damo_last_error());
  return m;
}

/* Rows of x in [-1, 1]; the class is the sign pattern of x0 + x1 and x2 (3 classes); the
 * regression target 0.5 x0 - x3 + 0.2. */
static void two_head_data(int64_t n, uint64_t seed, damo_tensor **x, damo_tensor **cls, damo_tensor **reg) {
  const int64_t xs[] = {n, 4}, ys[] = {n}, rs[] = {n, 1};
  *x = damo_tensor_new(DAMO_F32, 2, xs), *cls = damo_tensor_new(DAMO_I32, 1, ys), *reg = damo_tensor_new(DAMO_F32, 2, rs);
  damo_rng rng;
  damo_rng_seed(&rng, seed);
  float *xd = damo_tensor_f32(*x);
  for (int64_t i = 0; i < n; i++) {
    for (int k = 0; k < 4; k++) xd[i * 4 + k] = 2.0f * damo_rng_uniform(&rng) - 1.0f;
    damo_tensor_i32(*cls)[i] = xd[i * 4] + xd[i * 4 + 1] < 0 ? 0 : xd[i * 4 + 2] < 0 ? 1 : 2;
    damo_tensor_f32(*reg)[i] = 0.5f * xd[i * 4] - xd[i * 4 + 3] + 0.2f;
  }
}

static damo_compile_options two_head_compile(float lr, float w_cls, float w_reg) {
  damo_compile_options c = {.optimizer = damo_sgd(lr, 0, 0), .n_outputs = 2};
  c.outputs[0] = (damo_output_compile){DAMO_LOSS_SPARSE_CATEGORICAL_CE, w_cls, DAMO_METRIC_ACCURACY};
  c.outputs[1] = (damo_output_compile){DAMO_LOSS_MSE, w_reg, 0};
  return c;
}

static void copy_weights(damo_model *to, const damo_model *from) {
  const char *names[] = {"trunk", "cls", "reg"};
  for (int i = 0; i < 3; i++) {
    damo_layer *l = damo_model_find_layer(to, names[i]), *src = damo_model_find_layer(from, names[i]);
    for (int p = 0; l && src && p < l->n_params; p++)
      memcpy(l->params[p].value->data, src->params[p].value->data, (size_t)damo_tensor_numel(l->params[p].value) * 4);
  }
}

/* The loss is w1 * loss1 + w2 * loss2, each output's loss as computed from its predictions;
 * predict gives one tensor per output. */
static void test_outputs_weighted_loss_and_predict(void) {
  damo_model *m = two_head_model(NULL);
  damo_compile_options c = two_head_compile(0.1f, 1.0f, 0.5f);
  CHECK_MSG(damo_model_compile(m, &c) == DAMO_OK, "%s", damo_last_error());
  const char *name = NULL;
  int64_t shape[4];
  CHECK(damo_model_num_outputs(m) == 2 && damo_model_output_info(m, 1, &name, shape) == 1 && !strcmp(name, "reg") &&
        shape[0] == 1);
  damo_tensor *x, *cls, *reg;
  two_head_data(40, 1, &x, &cls, &reg);
  const damo_tensor *ys[] = {cls, reg};
  float loss = 0, losses[2] = {0}, accs[2] = {0};
  CHECK_MSG(damo_model_evaluate_outputs(m, 1, (const damo_tensor *const *)&x, 2, ys, 16, &loss, losses, accs) == DAMO_OK,
            "%s", damo_last_error());
  damo_tensor *pred[2] = {NULL, NULL};
  CHECK_MSG(damo_model_predict_outputs(m, 1, (const damo_tensor *const *)&x, 7, 2, pred) == DAMO_OK, "%s",
            damo_last_error());
  CHECK(pred[0] && pred[0]->ndim == 2 && pred[0]->shape[0] == 40 && pred[0]->shape[1] == 3);
  CHECK(pred[1] && pred[1]->ndim == 2 && pred[1]->shape[0] == 40 && pred[1]->shape[1] == 1);
  double ce = 0, se = 0, right = 0;
  for (int i = 0; pred[0] && pred[1] && i < 40; i++) {
    const float *p = damo_tensor_f32(pred[0]) + i * 3;
    const int label = damo_tensor_i32(cls)[i];
    ce -= log(p[label]);
    right += p[label] >= p[0] && p[label] >= p[1] && p[label] >= p[2];
    const double d = damo_tensor_f32(pred[1])[i] - damo_tensor_f32(reg)[i];
    se += d * d;
  }
  CHECK_NEAR(losses[0], ce / 40, 1e-5);
  CHECK_NEAR(losses[1], se / 40, 1e-5);
  CHECK_NEAR(loss, 1.0 * losses[0] + 0.5 * losses[1], 1e-5);
  CHECK_NEAR(accs[0], right / 40, 1e-6);
  CHECK(accs[1] < 0); /* MSE: no accuracy */
  /* the one-tensor forms refuse a model of two outputs, and counts are checked */
  damo_tensor *one = NULL;
  CHECK(damo_model_predict(m, x, 0, &one) != DAMO_OK && strstr(damo_last_error(), "use damo_model_predict_outputs"));
  CHECK(damo_model_evaluate(m, x, cls, 0, &loss, NULL) != DAMO_OK && strstr(damo_last_error(), "2 outputs, got 1"));
  const damo_tensor *wrong[] = {reg, cls};
  CHECK(damo_model_evaluate_outputs(m, 1, (const damo_tensor *const *)&x, 2, wrong, 0, &loss, NULL, NULL) != DAMO_OK &&
        strstr(damo_last_error(), "output 'cls'"));
  damo_tensor_free(pred[0]);
  damo_tensor_free(pred[1]);
  damo_tensor_free(x), damo_tensor_free(cls), damo_tensor_free(reg);
  damo_model_free(m);
}

/* One SGD step of learning rate 1 on the whole batch moves each weight by its gradient: the
 * two-output model's step is w1 * (the "cls" model's) + w2 * (the "reg" model's), with the
 * same starting weights. */
static void test_outputs_gradient_is_weighted_sum(void) {
  const float w1 = 0.7f, w2 = 2.5f;
  damo_model *both = two_head_model(NULL), *a = two_head_model("cls"), *b = two_head_model("reg");
  damo_compile_options c = two_head_compile(1.0f, w1, w2);
  damo_compile_options ca = {.optimizer = damo_sgd(1.0f, 0, 0), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE};
  damo_compile_options cb = {.optimizer = damo_sgd(1.0f, 0, 0), .loss = DAMO_LOSS_MSE};
  CHECK(damo_model_compile(both, &c) == DAMO_OK && damo_model_compile(a, &ca) == DAMO_OK &&
        damo_model_compile(b, &cb) == DAMO_OK);
  copy_weights(a, both);
  copy_weights(b, both);
  float before[3][2][64];
  const char *layers[] = {"trunk", "cls", "reg"};
  for (int i = 0; i < 3; i++)
    for (int p = 0; p < 2; p++) {
      const damo_tensor *v = damo_model_find_layer(both, layers[i])->params[p].value;
      memcpy(before[i][p], v->data, (size_t)damo_tensor_numel(v) * 4);
    }
  damo_tensor *x, *cls, *reg;
  two_head_data(24, 2, &x, &cls, &reg);
  const damo_tensor *ys[] = {cls, reg};
  damo_fit_options o = {.epochs = 1, .batch_size = 24, .shuffle = 0, .verbose = 0};
  CHECK_MSG(damo_model_fit_outputs(both, 1, (const damo_tensor *const *)&x, 2, ys, &o, NULL) == DAMO_OK, "%s",
            damo_last_error());
  CHECK(damo_model_fit(a, x, cls, &o, NULL) == DAMO_OK && damo_model_fit(b, x, reg, &o, NULL) == DAMO_OK);
  double worst = 0, largest = 0;
  for (int i = 0; i < 3; i++)
    for (int p = 0; p < 2; p++) {
      const damo_tensor *v = damo_model_find_layer(both, layers[i])->params[p].value;
      const damo_layer *la = damo_model_find_layer(a, layers[i]), *lb = damo_model_find_layer(b, layers[i]);
      for (int64_t k = 0; k < damo_tensor_numel(v); k++) {
        const double g = before[i][p][k] - damo_tensor_f32(v)[k];
        const double ga = la ? before[i][p][k] - damo_tensor_f32(la->params[p].value)[k] : 0;
        const double gb = lb ? before[i][p][k] - damo_tensor_f32(lb->params[p].value)[k] : 0;
        worst = fmax(worst, fabs(g - (w1 * ga + w2 * gb)));
        largest = fmax(largest, fabs(g));
      }
    }
  CHECK_MSG(worst < 1e-5 && largest > 1e-3, "gradients differ by %g (largest %g)", worst, largest);
  damo_tensor_free(x), damo_tensor_free(cls), damo_tensor_free(reg);
  damo_model_free(both), damo_model_free(a), damo_model_free(b);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  char *text = f ? calloc(1, 1 << 16) : NULL;
  if (text && fread(text, 1, (1 << 16) - 1, f) == 0) text[0] = '\0';
  if (f) fclose(f);
  return text;
}

/* Training lowers both losses; the history and its CSV have Keras' per-output columns, and
 * early stopping can watch one of them. */
static void test_outputs_training_and_history(void) {
  damo_model *m = two_head_model(NULL);
  damo_compile_options c = two_head_compile(0.01f, 1.0f, 0.5f);
  c.optimizer = damo_adam(0.02f);
  CHECK(damo_model_compile(m, &c) == DAMO_OK);
  damo_tensor *x, *cls, *reg, *xv, *clsv, *regv;
  two_head_data(256, 3, &x, &cls, &reg);
  two_head_data(64, 4, &xv, &clsv, &regv);
  const damo_tensor *ys[] = {cls, reg}, *yv[] = {clsv, regv}, *xvs[] = {xv};
  char csv[600];
  snprintf(csv, sizeof csv, "%s", tmp_path("outputs_history.csv"));
  damo_fit_options o = {.epochs = 25, .batch_size = 32, .seed = 5, .verbose = 0, .x_val_inputs = xvs,
                        .y_val_outputs = yv, .history_csv = csv, .patience = 100, .monitor = "val_cls_accuracy"};
  damo_history *h = NULL;
  CHECK_MSG(damo_model_fit_outputs(m, 1, (const damo_tensor *const *)&x, 2, ys, &o, &h) == DAMO_OK, "%s",
            damo_last_error());
  const int last = damo_history_epochs(h) - 1;
  CHECK(last == 24);
  const float cls0 = damo_history_get(h, "cls_loss", 0), cls1 = damo_history_get(h, "cls_loss", last);
  const float reg0 = damo_history_get(h, "reg_loss", 0), reg1 = damo_history_get(h, "reg_loss", last);
  CHECK_MSG(cls1 < 0.6f * cls0 && reg1 < 0.3f * reg0, "cls_loss %g -> %g, reg_loss %g -> %g", cls0, cls1, reg0, reg1);
  CHECK(damo_history_get(h, "val_cls_accuracy", last) > 0.8f);
  CHECK_NEAR(damo_history_get(h, "val_loss", last),
             damo_history_get(h, "val_cls_loss", last) + 0.5 * damo_history_get(h, "val_reg_loss", last), 1e-4);
  CHECK(isnan(damo_history_get(h, "accuracy", last)) && isnan(damo_history_get(h, "reg_accuracy", last)));
  char *text = read_text(csv);
  const char *header = "epoch,loss,cls_loss,reg_loss,cls_accuracy,val_loss,val_cls_loss,val_reg_loss,val_cls_accuracy,lr\n";
  CHECK_MSG(text && !strncmp(text, header, strlen(header)), "%.200s", text ? text : "(no file)");
  free(text);
  /* evaluate after training agrees with the history's last validation figures */
  float loss, losses[2];
  CHECK(damo_model_evaluate_outputs(m, 1, xvs, 2, yv, 0, &loss, losses, NULL) == DAMO_OK);
  CHECK_NEAR(losses[1], damo_history_get(h, "val_reg_loss", last), 1e-5);
  damo_history_free(h);
  /* a figure no output has, or validation figures without validation data */
  o = (damo_fit_options){.epochs = 1, .verbose = 0, .patience = 2, .monitor = "val_box_loss", .x_val_inputs = xvs,
                         .y_val_outputs = yv};
  CHECK(damo_model_fit_outputs(m, 1, (const damo_tensor *const *)&x, 2, ys, &o, NULL) != DAMO_OK &&
        strstr(damo_last_error(), "cannot monitor 'val_box_loss'"));
  o = (damo_fit_options){.epochs = 1, .verbose = 0, .patience = 2, .monitor = "val_reg_loss"};
  CHECK(damo_model_fit_outputs(m, 1, (const damo_tensor *const *)&x, 2, ys, &o, NULL) != DAMO_OK &&
        strstr(damo_last_error(), "no validation data"));
  o = (damo_fit_options){.epochs = 1, .verbose = 0, .x_val = xv, .y_val = clsv};
  CHECK(damo_model_fit_outputs(m, 1, (const damo_tensor *const *)&x, 2, ys, &o, NULL) != DAMO_OK &&
        strstr(damo_last_error(), "give validation targets as y_val_outputs"));
  damo_tensor_free(x), damo_tensor_free(cls), damo_tensor_free(reg);
  damo_tensor_free(xv), damo_tensor_free(clsv), damo_tensor_free(regv);
  damo_model_free(m);
}

/* A run checkpointed after 2 of 4 epochs and resumed ends as the uninterrupted one, with
 * every output's history columns of the epochs before the break. */
static void test_outputs_resume(void) {
  damo_tensor *x, *cls, *reg;
  two_head_data(64, 8, &x, &cls, &reg);
  const damo_tensor *ys[] = {cls, reg};
  damo_history *h[2] = {NULL, NULL};
  damo_tensor *p[2][2] = {{NULL}};
  for (int run_i = 0; run_i < 2; run_i++) {
    damo_model *m = two_head_model(NULL);
    damo_compile_options c = two_head_compile(0.01f, 1.0f, 0.5f);
    c.optimizer = damo_adam(0.01f);
    CHECK(damo_model_compile(m, &c) == DAMO_OK);
    char dir[600];
    snprintf(dir, sizeof dir, "%s", tmp_path(run_i ? "outputs_ckpt_b" : "outputs_ckpt_a"));
    damo_fit_options o = {.epochs = run_i ? 2 : 4, .batch_size = 16, .seed = 9, .verbose = 0, .validation_split = 0.25f,
                          .checkpoint_dir = dir};
    CHECK_MSG(damo_model_fit_outputs(m, 1, (const damo_tensor *const *)&x, 2, ys, &o, &h[run_i]) == DAMO_OK, "%s",
              damo_last_error());
    if (run_i) { /* a new process: a fresh model resumes the checkpoint */
      damo_history_free(h[run_i]);
      damo_model_free(m);
      m = two_head_model(NULL);
      CHECK(damo_model_compile(m, &c) == DAMO_OK);
      o.epochs = 4, o.resume = 1;
      CHECK_MSG(damo_model_fit_outputs(m, 1, (const damo_tensor *const *)&x, 2, ys, &o, &h[run_i]) == DAMO_OK, "%s",
                damo_last_error());
    }
    CHECK(damo_model_predict_outputs(m, 1, (const damo_tensor *const *)&x, 0, 2, p[run_i]) == DAMO_OK);
    damo_model_free(m);
  }
  CHECK(damo_history_epochs(h[0]) == 4 && damo_history_epochs(h[1]) == 4);
  for (int e = 0; e < 4; e++) {
    CHECK(!isnan(damo_history_get(h[1], "val_reg_loss", e)) && !isnan(damo_history_get(h[1], "cls_accuracy", e)));
    CHECK(damo_history_get(h[0], "cls_loss", e) == damo_history_get(h[1], "cls_loss", e));
    CHECK(damo_history_get(h[0], "val_reg_loss", e) == damo_history_get(h[1], "val_reg_loss", e));
  }
  CHECK(p[0][0] && p[1][0] && !memcmp(p[0][0]->data, p[1][0]->data, 64 * 3 * 4));
  CHECK(p[0][1] && p[1][1] && !memcmp(p[0][1]->data, p[1][1]->data, 64 * 4));
  for (int k = 0; k < 2; k++) damo_history_free(h[k]), damo_tensor_free(p[k][0]), damo_tensor_free(p[k][1]);
  damo_tensor_free(x), damo_tensor_free(cls), damo_tensor_free(reg);
}

/* Binary metrics per output: "<output>_precision", "<output>_auc", ... from the training
 * batches, and exact on the validation data (as damo_classification_metrics on predict's
 * probabilities of that output). */
static void test_outputs_binary_metrics(void) {
  damo_model *m = damo_functional_new();
  const int64_t four[] = {4};
  int x = damo_model_input(m, "x", 1, four);
  int t = damo_model_call1(m, damo_layer_set_name(damo_dense(8, DAMO_ACT_TANH), "trunk"), x);
  const int outs[] = {damo_model_call1(m, damo_layer_set_name(damo_dense(1, DAMO_ACT_SIGMOID), "pos"), t),
                      damo_model_call1(m, damo_layer_set_name(damo_dense(1, DAMO_ACT_NONE), "reg"), t)};
  CHECK(damo_model_set_outputs(m, 2, outs) == DAMO_OK);
  damo_compile_options c = {.optimizer = damo_adam(0.02f), .n_outputs = 2};
  c.outputs[0] = (damo_output_compile){DAMO_LOSS_BINARY_CE, 1.0f, DAMO_METRIC_PRECISION | DAMO_METRIC_RECALL | DAMO_METRIC_AUC};
  c.outputs[1] = (damo_output_compile){DAMO_LOSS_MSE, 1.0f, DAMO_METRIC_ACCURACY}; /* none for MSE */
  CHECK_MSG(damo_model_compile(m, &c) == DAMO_OK, "%s", damo_last_error());
  damo_tensor *xt, *cls, *reg, *xv, *clsv, *regv;
  two_head_data(128, 10, &xt, &cls, &reg);
  two_head_data(48, 11, &xv, &clsv, &regv);
  const int64_t n1[] = {128, 1}, n2[] = {48, 1};
  damo_tensor *pos = damo_tensor_new(DAMO_F32, 2, n1), *posv = damo_tensor_new(DAMO_F32, 2, n2);
  for (int i = 0; i < 128; i++) damo_tensor_f32(pos)[i] = damo_tensor_i32(cls)[i] == 2;
  for (int i = 0; i < 48; i++) damo_tensor_f32(posv)[i] = damo_tensor_i32(clsv)[i] == 2;
  const damo_tensor *ys[] = {pos, reg}, *yv[] = {posv, regv}, *xvs[] = {xv};
  damo_fit_options o = {.epochs = 3, .batch_size = 16, .verbose = 0, .x_val_inputs = xvs, .y_val_outputs = yv};
  damo_history *h = NULL;
  CHECK_MSG(damo_model_fit_outputs(m, 1, (const damo_tensor *const *)&xt, 2, ys, &o, &h) == DAMO_OK, "%s",
            damo_last_error());
  const float p = damo_history_get(h, "pos_precision", 2), auc = damo_history_get(h, "pos_auc", 2);
  CHECK(p >= 0 && p <= 1 && auc >= 0 && auc <= 1 && !isnan(damo_history_get(h, "pos_recall", 2)));
  CHECK(isnan(damo_history_get(h, "pos_f1", 2)) && isnan(damo_history_get(h, "reg_accuracy", 2)));
  damo_tensor *pred[2] = {NULL, NULL};
  CHECK(damo_model_predict_outputs(m, 1, xvs, 0, 2, pred) == DAMO_OK);
  damo_metrics vm = {0};
  CHECK(pred[0] && damo_classification_metrics(pred[0], posv, &vm) == DAMO_OK);
  CHECK_NEAR(damo_history_get(h, "val_pos_auc", 2), vm.auc, 1e-6);
  CHECK_NEAR(damo_history_get(h, "val_pos_precision", 2), vm.precision, 1e-6);
  CHECK_NEAR(damo_history_get(h, "val_pos_recall", 2), vm.recall, 1e-6);
  char csv[600];
  snprintf(csv, sizeof csv, "%s", tmp_path("binary_outputs.csv"));
  CHECK(damo_history_csv_write(h, csv) == DAMO_OK);
  char *text = read_text(csv);
  const char *header = "epoch,loss,pos_loss,reg_loss,pos_precision,pos_recall,pos_auc,val_loss,val_pos_loss,"
                       "val_reg_loss,val_pos_precision,val_pos_recall,val_pos_auc,lr\n";
  CHECK_MSG(text && !strncmp(text, header, strlen(header)), "%.300s", text ? text : "");
  free(text);
  damo_tensor_free(pred[0]), damo_tensor_free(pred[1]);
  damo_history_free(h);
  damo_tensor_free(xt), damo_tensor_free(cls), damo_tensor_free(reg), damo_tensor_free(pos);
  damo_tensor_free(xv), damo_tensor_free(clsv), damo_tensor_free(regv), damo_tensor_free(posv);
  damo_model_free(m);
}

#define TWO_HEAD_LAYERS                                                                                         \
  "\"inputs\": [{\"name\": \"x\", \"shape\": [4]}], \"layers\": ["                                              \
  "{\"type\": \"dense\", \"name\": \"trunk\", \"units\": 8, \"activation\": \"tanh\", \"inputs\": [\"x\"]},"     \
  "{\"type\": \"dense\", \"name\": \"cls\", \"units\": 3, \"activation\": \"softmax\", \"inputs\": [\"trunk\"]}," \
  "{\"type\": \"dense\", \"name\": \"reg\", \"units\": 1, \"inputs\": [\"trunk\"]}]"

static void expect_outputs_error(const char *compile, const char *want) {
  char text[2048];
  snprintf(text, sizeof text, "{" TWO_HEAD_LAYERS ", \"outputs\": [\"cls\", \"reg\"], %s}", compile);
  damo_model *m = NULL;
  damo_status st = damo_model_from_config_json(text, "outputs.json", &m);
  CHECK_MSG(st != DAMO_OK && m == NULL && strstr(damo_last_error(), want), "want '%s', got: %s", want,
            st == DAMO_OK ? "success" : damo_last_error());
  damo_model_free(m);
}

/* Keras' per-output compile keys in config.json: read, written back the same, saved and
 * loaded, trained from the command line; and the errors naming the output or key. */
static void test_outputs_config(void) {
  const char *text = "{\"format\": \"damo.functional\", " TWO_HEAD_LAYERS ", \"outputs\": [\"cls\", \"reg\"],"
                     " \"loss\": {\"reg\": \"mse\", \"cls\": \"sparse_categorical_crossentropy\"},"
                     " \"loss_weights\": {\"reg\": 0.5}, \"metrics\": {\"cls\": [\"accuracy\"]},"
                     " \"optimizer\": {\"type\": \"adam\", \"learning_rate\": 0.02}}";
  damo_model *m = NULL;
  CHECK_MSG(damo_model_from_config_json(text, "outputs.json", &m) == DAMO_OK, "%s", damo_last_error());
  if (!m) return;
  damo_compile_options c;
  CHECK(damo_model_config_compile_options(m, &c) == DAMO_OK && c.n_outputs == 2 &&
        c.outputs[0].loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE && c.outputs[1].loss == DAMO_LOSS_MSE &&
        c.outputs[0].loss_weight == 1.0f && c.outputs[1].loss_weight == 0.5f &&
        c.outputs[0].metrics == DAMO_METRIC_ACCURACY && c.outputs[1].metrics == 0);
  CHECK(damo_model_compile(m, &c) == DAMO_OK);
  char dir[600], dir2[600], path[700];
  snprintf(dir, sizeof dir, "%s", tmp_path("outputs_model"));
  snprintf(dir2, sizeof dir2, "%s", tmp_path("outputs_model2"));
  CHECK_MSG(damo_model_save(m, dir) == DAMO_OK, "%s", damo_last_error());
  damo_model *back = NULL;
  CHECK_MSG(damo_model_load(dir, &back) == DAMO_OK, "%s", damo_last_error());
  CHECK(back && damo_model_save(back, dir2) == DAMO_OK);
  snprintf(path, sizeof path, "%s/config.json", dir);
  char *t1 = read_text(path);
  snprintf(path, sizeof path, "%s/config.json", dir2);
  char *t2 = read_text(path);
  CHECK_MSG(t1 && t2 && !strcmp(t1, t2) && strstr(t1, "\"loss_weights\"") && strstr(t1, "\"outputs\""), "%s\n%s",
            t1 ? t1 : "", t2 ? t2 : "");
  free(t1), free(t2);
  damo_tensor *x, *cls, *reg;
  two_head_data(30, 6, &x, &cls, &reg);
  damo_tensor *p1[2] = {0}, *p2[2] = {0};
  CHECK(damo_model_predict_outputs(m, 1, (const damo_tensor *const *)&x, 0, 2, p1) == DAMO_OK);
  CHECK(back && damo_model_predict_outputs(back, 1, (const damo_tensor *const *)&x, 0, 2, p2) == DAMO_OK);
  CHECK(p1[0] && p2[0] && p1[1] && p2[1] && !memcmp(p1[0]->data, p2[0]->data, 90 * 4) &&
        !memcmp(p1[1]->data, p2[1]->data, 30 * 4));
  /* the command line: one .npy per output, named after it */
  char x_npy[600], p_npy[600], pc[700], pr[700];
  snprintf(x_npy, sizeof x_npy, "%s", tmp_path("ox.npy"));
  snprintf(p_npy, sizeof p_npy, "%s", tmp_path("op.npy"));
  snprintf(pc, sizeof pc, "%s", tmp_path("op_cls.npy"));
  snprintf(pr, sizeof pr, "%s", tmp_path("op_reg.npy"));
  CHECK(damo_npy_save(x_npy, x) == DAMO_OK);
  int rc = run("%s predict --model %s --input %s --output %s", DAMO_CLI_PATH, dir, x_npy, p_npy);
  damo_tensor *q[2] = {NULL, NULL};
  CHECK_MSG(rc == 0 && damo_npy_load(pc, &q[0]) == DAMO_OK && damo_npy_load(pr, &q[1]) == DAMO_OK, "%s", cli_out);
  CHECK(q[0] && q[1] && p1[0] && p1[1] && !memcmp(q[0]->data, p1[0]->data, 90 * 4) && !memcmp(q[1]->data, p1[1]->data, 30 * 4));
  rc = run("%s summary --model %s", DAMO_CLI_PATH, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "Outputs: cls, reg"), "%s", cli_out);
  /* train and evaluate from the command line: x.npy then one targets array per output */
  char yc[600], yr[600], cfg[600], out[600];
  snprintf(yc, sizeof yc, "%s", tmp_path("oyc.npy"));
  snprintf(yr, sizeof yr, "%s", tmp_path("oyr.npy"));
  snprintf(cfg, sizeof cfg, "%s", tmp_path("outputs.json"));
  snprintf(out, sizeof out, "%s", tmp_path("outputs_trained"));
  write_bytes(cfg, text, strlen(text));
  CHECK(damo_npy_save(yc, cls) == DAMO_OK && damo_npy_save(yr, reg) == DAMO_OK);
  rc = run("%s train --config %s --data %s,%s,%s --out %s --epochs 2 --batch-size 8 --verbose 2", DAMO_CLI_PATH, cfg,
           x_npy, yc, yr, out);
  CHECK_MSG(rc == 0 && strstr(cli_out, "cls_loss: ") && strstr(cli_out, "cls_accuracy: ") && strstr(cli_out, "reg_loss: "),
            "%s", cli_out);
  snprintf(path, sizeof path, "%s/history.csv", out);
  char *hist = read_text(path);
  CHECK_MSG(hist && !strncmp(hist, "epoch,loss,cls_loss,reg_loss,cls_accuracy,val_loss", 50), "%s", hist ? hist : "");
  free(hist);
  rc = run("%s evaluate --model %s --data %s,%s,%s", DAMO_CLI_PATH, out, x_npy, yc, yr);
  CHECK_MSG(rc == 0 && strstr(cli_out, "cls_accuracy: ") && strstr(cli_out, "reg_loss: ") && strstr(cli_out, "(30 examples)"),
            "%s", cli_out);
  rc = run("%s evaluate --model %s --data %s,%s", DAMO_CLI_PATH, out, x_npy, yc);
  CHECK_MSG(rc != 0 && strstr(cli_out, "one targets .npy per output"), "%s", cli_out);
  for (int k = 0; k < 2; k++) damo_tensor_free(p1[k]), damo_tensor_free(p2[k]), damo_tensor_free(q[k]);
  damo_tensor_free(x), damo_tensor_free(cls), damo_tensor_free(reg);
  damo_model_free(back);
  damo_model_free(m);

  expect_outputs_error("\"loss\": {\"cls\": \"sparse_categorical_crossentropy\"}", "has no loss for output 'reg'");
  expect_outputs_error("\"loss\": {\"cls\": \"mse\", \"reg\": \"mse\", \"box\": \"mse\"}", "loss: unknown key 'box' (known: cls, reg)");
  expect_outputs_error("\"loss\": [\"mse\"]", "lists 1 losses for 2 outputs (cls, reg)");
  expect_outputs_error("\"loss\": {\"cls\": \"hinge\", \"reg\": \"mse\"}", "'loss' of output 'cls'");
  expect_outputs_error("\"loss\": \"mse\", \"loss_weights\": {\"regg\": 2}", "loss_weights: unknown key 'regg'");
  expect_outputs_error("\"loss\": \"mse\", \"loss_weights\": [1, 2, 3]", "lists 3 weights for 2 outputs");
  expect_outputs_error("\"loss\": \"mse\", \"loss_weights\": {\"reg\": -1}", "loss_weights: 'reg' must be > 0");
  expect_outputs_error("\"loss\": \"mse\", \"metrics\": {\"cls\": [\"acuracy\"]}", "unknown metric 'acuracy' in 'metrics' of output 'cls'");
  expect_outputs_error("\"loss\": [\"sparse_categorical_crossentropy\", \"sparse_categorical_crossentropy\"]",
                       "output 'reg': sparse categorical cross-entropy needs");
  expect_outputs_error("\"metrics\": {\"cls\": [\"auc\"]}", "output 'cls': metric 'auc' needs a binary task");
  expect_config_error("{\"type\": \"dense\", \"name\": \"d\", \"units\": 2, \"inputs\": [\"a\"]},"
                      "{\"type\": \"dense\", \"name\": \"e\", \"units\": 2, \"inputs\": [\"b\"]}",
                      "\"d\", \"f\"", "no input or layer is named 'f'");
  expect_config_error("{\"type\": \"dense\", \"name\": \"d\", \"units\": 2, \"inputs\": [\"a\"]}", "\"d\", \"a\"",
                      "'a' is a model input");
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
  RUN(test_outputs_weighted_loss_and_predict);
  RUN(test_outputs_gradient_is_weighted_sum);
  RUN(test_outputs_training_and_history);
  RUN(test_outputs_resume);
  RUN(test_outputs_binary_metrics);
  RUN(test_outputs_config);
  damo_tensor_dict_free(fx);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return test_summary("functional");
}
