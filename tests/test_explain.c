/* test_explain.c - attributions (src/explain/attribution.c). The input gradient of a chosen
 * logit against central finite differences on an MLP, a CNN (conv, pooling) and a model with
 * batch normalisation; on a linear model Integrated Gradients equals (x - x') * w exactly, by
 * both path rules, and so does occlusion with one-element windows; completeness within 1% at
 * 64 steps on a smooth MLP; saliency, gradient x input and SmoothGrad without noise agree with
 * the gradient; saliency, gradient x input, IG and Grad-CAM equal PyTorch's on the same weights;
 * the predicted class is taken for -1; bad models and inputs are refused. */
#include "cli_run.h"
#include "damo.h"
#include "harness.h"
#include "tmpfiles.h"
#include "mail_fixtures.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static damo_model *model_of(const char *json, uint64_t seed) {
  damo_model *m = NULL;
  CHECK_MSG(damo_model_from_config_json(json, "test", &m) == DAMO_OK && damo_model_build(m, seed) == DAMO_OK, "%s",
            damo_last_error());
  return m;
}

static float uniform(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((*s >> 40) & 0xffffff) / 16777216.0f;
}

/* d logit_t / d x of one example against central differences (in double around float runs). */
static void check_gradient(damo_model *m, float scale, double tol) {
  damo_explainer *e = NULL;
  CHECK_MSG(m && damo_explainer_new(m, 4, &e) == DAMO_OK, "%s", damo_last_error());
  if (!e) return;
  const int64_t D = damo_explainer_input_size(e), C = damo_explainer_classes(e);
  float *x = malloc((size_t)(4 * D) * sizeof *x), *g = malloc((size_t)(4 * D) * sizeof *g);
  float *lp = malloc((size_t)C * sizeof *lp), *lm = malloc((size_t)C * sizeof *lm);
  uint64_t s = 7;
  for (int64_t i = 0; i < 4 * D; i++) x[i] = scale * uniform(&s);
  int32_t targets[4] = {0, (int32_t)(C - 1), 1 % C, 2 % C};
  CHECK(damo_explainer_run(e, x, 4, targets, NULL, g) == DAMO_OK);
  double worst = 0;
  for (int r = 0; r < 4; r += 3)
    for (int64_t i = 0; i < D; i += D > 40 ? 7 : 1) {
      float *row = x + r * D, keep = row[i];
      const float h = 1e-2f * (scale > 1 ? scale : 1);
      row[i] = keep + h;
      CHECK(damo_explainer_run(e, row, 1, NULL, lp, NULL) == DAMO_OK);
      row[i] = keep - h;
      CHECK(damo_explainer_run(e, row, 1, NULL, lm, NULL) == DAMO_OK);
      row[i] = keep;
      const double fd = ((double)lp[targets[r]] - lm[targets[r]]) / (2.0 * h), got = g[r * D + i];
      const double err = fabs(fd - got) / (1e-3 + fabs(fd));
      worst = err > worst ? err : worst;
    }
  CHECK_MSG(worst < tol, "gradient vs finite differences: worst relative error %.3g", worst);
  free(x), free(g), free(lp), free(lm);
  damo_explainer_free(e);
}

static void test_gradients(void) {
  damo_model *mlp = model_of("{\"input_shape\": [12], \"layers\": [{\"type\": \"dense\", \"units\": 16, \"activation\": "
                             "\"tanh\"}, {\"type\": \"dense\", \"units\": 5, \"activation\": \"softmax\"}]}", 1);
  check_gradient(mlp, 1, 2e-3);
  damo_model *cnn = model_of("{\"input_shape\": [10, 10, 2], \"layers\": [{\"type\": \"rescaling\", \"scale\": 0.01},"
                             "{\"type\": \"conv2d\", \"filters\": 4, \"kernel_size\": 3, \"activation\": \"tanh\"},"
                             "{\"type\": \"average_pooling2d\", \"pool_size\": 2}, {\"type\": \"flatten\"},"
                             "{\"type\": \"dense\", \"units\": 3, \"activation\": \"softmax\"}]}", 2);
  check_gradient(cnn, 100, 2e-3);
  damo_model *bn = model_of("{\"input_shape\": [8, 8, 1], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, "
                            "\"kernel_size\": 3}, {\"type\": \"batch_normalization\"}, {\"type\": \"activation\", "
                            "\"activation\": \"tanh\"}, {\"type\": \"global_average_pooling2d\"},"
                            "{\"type\": \"dense\", \"units\": 4, \"activation\": \"softmax\"}]}", 3);
  check_gradient(bn, 1, 2e-3);
  damo_model_free(mlp);
  damo_model_free(cnn);
  damo_model_free(bn);
}

/* A linear model: logit_t = x . w_t + b_t, so IG's attributions are (x - x') * w_t for any
 * path rule, and occlusion of one element at a time gives the same. */
static void test_linear_exact(void) {
  damo_model *m = model_of("{\"input_shape\": [3, 4], \"layers\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", "
                           "\"units\": 3, \"activation\": \"softmax\"}]}", 4);
  damo_explainer *e = NULL;
  CHECK(m && damo_explainer_new(m, 8, &e) == DAMO_OK);
  if (!e) {
    damo_model_free(m);
    return;
  }
  float x[12], base[12], grad[12], attr[12];
  uint64_t s = 3;
  for (int i = 0; i < 12; i++) x[i] = 4 * uniform(&s) - 2, base[i] = uniform(&s);
  const int32_t t = 2;
  CHECK(damo_explainer_run(e, x, 1, &t, NULL, grad) == DAMO_OK); /* w_t */
  damo_attribution_options o = damo_attribution_defaults();
  o.baseline = base;
  for (int rule = 0; rule < 2; rule++) {
    o.gauss_legendre = rule, o.steps = rule ? 5 : 7;
    damo_attribution_report rep;
    CHECK(damo_attribute(e, x, t, &o, attr, &rep) == DAMO_OK);
    double worst = 0;
    for (int i = 0; i < 12; i++) worst = fmax(worst, fabs(attr[i] - (x[i] - base[i]) * grad[i]));
    CHECK_MSG(worst < 1e-5 && rep.completeness_gap < 1e-5 && rep.target == t, "rule %d: %.3g off, gap %.3g", rule,
              worst, rep.completeness_gap);
  }
  o.method = DAMO_ATTR_OCCLUSION, o.window = 1, o.stride = 1;
  CHECK(damo_attribute(e, x, t, &o, attr, NULL) == DAMO_OK);
  double worst = 0;
  for (int i = 0; i < 12; i++) worst = fmax(worst, fabs(attr[i] - (x[i] - base[i]) * grad[i]));
  CHECK_MSG(worst < 1e-5, "occlusion of single elements vs (x - x') w: %.3g", worst);
  damo_explainer_free(e);
  damo_model_free(m);
}

/* On a smooth nonlinear model IG's sum approaches f(x) - f(x') as steps grow; the simple
 * methods are what their definitions say. */
static void test_methods(void) {
  damo_model *m = model_of("{\"input_shape\": [6, 6], \"layers\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", "
                           "\"units\": 24, \"activation\": \"tanh\"}, {\"type\": \"dense\", \"units\": 24, "
                           "\"activation\": \"tanh\"}, {\"type\": \"dense\", \"units\": 4, \"activation\": \"softmax\"}]}", 5);
  damo_explainer *e = NULL;
  CHECK(m && damo_explainer_new(m, 16, &e) == DAMO_OK);
  if (!e) {
    damo_model_free(m);
    return;
  }
  float x[36], grad[36], attr[36], logits[4];
  uint64_t s = 11;
  for (int i = 0; i < 36; i++) x[i] = 3 * uniform(&s);
  CHECK(damo_explainer_run(e, x, 1, NULL, logits, NULL) == DAMO_OK);
  int32_t best = 0;
  for (int c = 1; c < 4; c++) best = logits[c] > logits[best] ? c : best;
  damo_attribution_options o = damo_attribution_defaults();
  damo_attribution_report r8, r64, rgl;
  o.steps = 8;
  CHECK(damo_attribute(e, x, -1, &o, attr, &r8) == DAMO_OK);
  o.steps = 64;
  CHECK(damo_attribute(e, x, -1, &o, attr, &r64) == DAMO_OK);
  o.gauss_legendre = 1, o.steps = 16;
  CHECK(damo_attribute(e, x, -1, &o, attr, &rgl) == DAMO_OK);
  CHECK_MSG(r64.target == best && r64.completeness_gap < 0.01 && r64.completeness_gap < r8.completeness_gap &&
            rgl.completeness_gap < 1e-3, "gaps: midpoint 8 %.4g, 64 %.4g, Gauss-Legendre 16 %.4g (target %d, best %d)",
            r8.completeness_gap, r64.completeness_gap, rgl.completeness_gap, r64.target, best);
  CHECK(damo_explainer_run(e, x, 1, &best, NULL, grad) == DAMO_OK);
  o = damo_attribution_defaults();
  const damo_attribution_method simple[3] = {DAMO_ATTR_SALIENCY, DAMO_ATTR_GRADIENT_X_INPUT, DAMO_ATTR_SMOOTHGRAD};
  for (int k = 0; k < 3; k++) {
    o.method = simple[k], o.noise = 0, o.samples = 3;
    CHECK(damo_attribute(e, x, best, &o, attr, NULL) == DAMO_OK);
    double worst = 0;
    for (int i = 0; i < 36; i++) {
      const float want = k == 0 ? fabsf(grad[i]) : k == 1 ? grad[i] * x[i] : grad[i];
      worst = fmax(worst, fabs(attr[i] - want));
    }
    CHECK_MSG(worst < 1e-6, "%s: %.3g from its definition", damo_attribution_method_name(simple[k]), worst);
  }
  /* SmoothGrad with noise: a seed repeats, another seed differs */
  float a1[36], a2[36];
  o.method = DAMO_ATTR_SMOOTHGRAD, o.noise = 0.2f, o.samples = 20, o.seed = 1;
  CHECK(damo_attribute(e, x, best, &o, a1, NULL) == DAMO_OK && damo_attribute(e, x, best, &o, a2, NULL) == DAMO_OK);
  CHECK(memcmp(a1, a2, sizeof a1) == 0);
  o.seed = 2;
  CHECK(damo_attribute(e, x, best, &o, a2, NULL) == DAMO_OK && memcmp(a1, a2, sizeof a1) != 0);
  /* refusals */
  x[5] = NAN;
  EXPECT_FAIL(damo_attribute(e, x, best, &o, attr, NULL), DAMO_ERR_INVALID_ARG, "not finite");
  x[5] = 1;
  EXPECT_FAIL(damo_attribute(e, x, 9, NULL, attr, NULL), DAMO_ERR_INVALID_ARG, "outside the model's 4 outputs");
  o.method = DAMO_ATTR_INTEGRATED_GRADIENTS, o.steps = 0;
  EXPECT_FAIL(damo_attribute(e, x, best, &o, attr, NULL), DAMO_ERR_INVALID_ARG, "steps");
  EXPECT_FAIL(damo_explainer_run(e, x, 17, NULL, logits, NULL), DAMO_ERR_INVALID_ARG, "1 to 16");
  damo_attribution_method mm;
  CHECK(damo_attribution_method_parse("occlusion", &mm) == DAMO_OK && mm == DAMO_ATTR_OCCLUSION);
  EXPECT_FAIL(damo_attribution_method_parse("lime", &mm), DAMO_ERR_INVALID_ARG, "unknown attribution method 'lime'");
  damo_explainer_free(e);
  damo_model_free(m);
}

/* Token models, explained at their embeddings: on embedding -> flatten -> dense the logit is
 * linear in the embeddings, so IG from the zero embedding equals gradient x input and adds up
 * to f(text) - f(zeros); on an LSTM the sum of gradient x input is d f / d alpha at 1 (finite
 * differences in alpha), IG's completeness holds within 1% at 64 steps, and occlusion is the
 * drop when a token becomes <pad>. */
static void test_tokens(void) {
  damo_model *lin = model_of("{\"input_shape\": [6], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 9, "
                             "\"output_dim\": 4}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 3, "
                             "\"activation\": \"softmax\"}]}", 6);
  damo_explainer *e = NULL;
  CHECK_MSG(lin && damo_explainer_new(lin, 8, &e) == DAMO_OK, "%s", damo_last_error());
  const int32_t ids[6] = {3, 1, 7, 2, 8, 0};
  float ig[6], gxi[6], x[6] = {0};
  damo_attribution_report rep;
  damo_attribution_options o = damo_attribution_defaults();
  if (e) {
    CHECK(damo_explainer_tokens(e) == 6);
    CHECK(damo_attribute_tokens(e, ids, 1, &o, ig, &rep) == DAMO_OK);
    o.method = DAMO_ATTR_GRADIENT_X_INPUT;
    CHECK(damo_attribute_tokens(e, ids, 1, &o, gxi, NULL) == DAMO_OK);
    double worst = 0;
    for (int t = 0; t < 6; t++) worst = fmax(worst, fabs(ig[t] - gxi[t]));
    CHECK_MSG(worst < 1e-5 && rep.completeness_gap < 1e-5, "linear: IG vs gradient x input %.3g, gap %.3g", worst,
              rep.completeness_gap);
    EXPECT_FAIL(damo_explainer_run(e, x, 1, NULL, NULL, NULL), DAMO_ERR_INVALID_ARG, "damo_explainer_run_tokens");
    EXPECT_FAIL(damo_attribute(e, x, 0, NULL, x, NULL), DAMO_ERR_INVALID_ARG, "damo_attribute_tokens");
    o.method = DAMO_ATTR_SMOOTHGRAD;
    EXPECT_FAIL(damo_attribute_tokens(e, ids, 1, &o, ig, NULL), DAMO_ERR_INVALID_ARG, "not offered for token inputs");
  }
  damo_explainer_free(e);
  damo_model_free(lin);
  damo_model *rnn = model_of("{\"input_shape\": [7], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 12, "
                             "\"output_dim\": 6, \"mask_zero\": true}, {\"type\": \"lstm\", \"units\": 5}, "
                             "{\"type\": \"dense\", \"units\": 2, \"activation\": \"softmax\"}]}", 7);
  e = NULL;
  CHECK_MSG(rnn && damo_explainer_new(rnn, 16, &e) == DAMO_OK, "%s", damo_last_error());
  if (e) {
    const int32_t text[7] = {4, 9, 2, 11, 5, 0, 0};
    float attr[7], logits[4];
    o = damo_attribution_defaults();
    o.method = DAMO_ATTR_GRADIENT_X_INPUT;
    CHECK(damo_attribute_tokens(e, text, 0, &o, attr, NULL) == DAMO_OK);
    double sum = 0;
    for (int t = 0; t < 7; t++) sum += attr[t];
    const float up = 1.001f, down = 0.999f;
    CHECK(damo_explainer_run_tokens(e, text, 1, &up, NULL, logits, NULL, NULL) == DAMO_OK);
    const double f_up = logits[0];
    CHECK(damo_explainer_run_tokens(e, text, 1, &down, NULL, logits, NULL, NULL) == DAMO_OK);
    const double fd = (f_up - logits[0]) / 0.002;
    CHECK_MSG(fabs(fd - sum) <= 2e-3 * (1e-3 + fabs(fd)) + 1e-5, "sum of e . g %.6g vs d f / d alpha %.6g", sum, fd);
    CHECK_MSG(attr[5] == 0 && attr[6] == 0, "masked <pad> tokens get %g and %g", attr[5], attr[6]);
    o = damo_attribution_defaults();
    CHECK(damo_attribute_tokens(e, text, -1, &o, attr, &rep) == DAMO_OK);
    CHECK_MSG(rep.completeness_gap < 0.01, "LSTM: IG completeness gap %.4g at 64 steps", rep.completeness_gap);
    o.method = DAMO_ATTR_OCCLUSION;
    CHECK(damo_attribute_tokens(e, text, rep.target, &o, attr, NULL) == DAMO_OK);
    int32_t without[7];
    memcpy(without, text, sizeof without);
    without[1] = 0;
    const float one = 1;
    CHECK(damo_explainer_run_tokens(e, without, 1, &one, NULL, logits, NULL, NULL) == DAMO_OK);
    CHECK_NEAR(attr[1], rep.logit - logits[rep.target], 1e-5);
  }
  damo_explainer_free(e);
  damo_model_free(rnn);
}

/* Saliency, gradient x input and IG (16 midpoints, black baseline) against PyTorch autograd
 * on the same weights (tests/fixtures/explain.safetensors from tests/ref/gen_explain.py). */
static void against_pytorch(damo_tensor_dict *fx, const char *prefix, const char *config, const char *const *weights,
                            int n_weights) {
  char dir[200], key[300];
  snprintf(dir, sizeof dir, "/tmp/damo_test_explain_%s_%d", prefix, (int)getpid());
  damo_model *m = model_of(config, 1);
  CHECK(m && damo_model_save(m, dir) == DAMO_OK);
  damo_model_free(m);
  m = NULL;
  damo_tensor_dict *w = damo_tensor_dict_new();
  for (int i = 0; i < n_weights; i++) { /* the fixture's weights become the model's */
    snprintf(key, sizeof key, "%s.%s", prefix, weights[i]);
    const damo_tensor *t = damo_tensor_dict_get(fx, key);
    CHECK_MSG(t != NULL, "fixture %s missing", key);
    damo_tensor *copy = t ? damo_tensor_new(DAMO_F32, t->ndim, t->shape) : NULL;
    if (copy) memcpy(damo_tensor_f32(copy), damo_tensor_f32(t), (size_t)damo_tensor_numel(t) * sizeof(float));
    if (copy) damo_tensor_dict_add(w, weights[i], copy);
  }
  snprintf(key, sizeof key, "%s/model.safetensors", dir);
  CHECK(damo_safetensors_save(key, w, NULL, 0) == DAMO_OK);
  damo_tensor_dict_free(w);
  CHECK_MSG(damo_model_load(dir, &m) == DAMO_OK, "%s", damo_last_error());
  damo_explainer *e = NULL;
  CHECK(m && damo_explainer_new(m, 8, &e) == DAMO_OK);
  snprintf(key, sizeof key, "%s.x", prefix);
  const damo_tensor *x = damo_tensor_dict_get(fx, key);
  snprintf(key, sizeof key, "%s.targets", prefix);
  const damo_tensor *targets = damo_tensor_dict_get(fx, key);
  static const char *const kinds[4] = {"saliency", "gradient_x_input", "ig16", "grad_cam"};
  for (int k = 0; e && x && targets && k < 4; k++) {
    snprintf(key, sizeof key, "%s.%s", prefix, kinds[k]);
    const damo_tensor *want = damo_tensor_dict_get(fx, key);
    if (!want && k == 3) break; /* Grad-CAM: the CNN only */
    const int64_t D = damo_explainer_input_size(e);
    float *attr = malloc((size_t)D * sizeof *attr);
    damo_attribution_options o = damo_attribution_defaults();
    o.method = k == 0   ? DAMO_ATTR_SALIENCY
               : k == 1 ? DAMO_ATTR_GRADIENT_X_INPUT
               : k == 2 ? DAMO_ATTR_INTEGRATED_GRADIENTS
                        : DAMO_ATTR_GRAD_CAM;
    o.steps = 16;
    double worst = 0;
    for (int r = 0; want && r < 3; r++) {
      CHECK(damo_attribute(e, damo_tensor_f32(x) + r * D, damo_tensor_i32(targets)[r], &o, attr, NULL) == DAMO_OK);
      worst = fmax(worst, test_close_ratio(attr, damo_tensor_f32(want) + r * D, (long)D, 1e-5, 1e-4));
    }
    CHECK_MSG(want && worst <= 1, "%s %s vs PyTorch: worst error %.3g x tolerance", prefix, kinds[k], worst);
    free(attr);
  }
  if (e && !strcmp(prefix, "cnn")) CHECK(damo_explainer_layer(e) && !strcmp(damo_explainer_layer(e), "conv2d_1"));
  if (e && !strcmp(prefix, "mlp")) { /* no conv layer: Grad-CAM has nothing to read */
    float attr[30];
    damo_attribution_options o = damo_attribution_defaults();
    o.method = DAMO_ATTR_GRAD_CAM;
    CHECK(damo_explainer_layer(e) == NULL);
    EXPECT_FAIL(damo_attribute(e, damo_tensor_f32(x), 0, &o, attr, NULL), DAMO_ERR_INVALID_ARG, "no conv2d layer");
    damo_explainer *named = NULL;
    EXPECT_FAIL(damo_explainer_new_at(m, 2, "dense_9", &named), DAMO_ERR_NOT_FOUND, "no layer named 'dense_9'");
    EXPECT_FAIL(damo_explainer_new_at(m, 2, "dense_1", &named), DAMO_ERR_INVALID_ARG, "(height, width, channels)");
  }
  damo_explainer_free(e);
  damo_model_free(m);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static void test_pytorch(void) {
  damo_tensor_dict *fx = NULL;
  CHECK_MSG(damo_safetensors_load(DAMO_SOURCE_DIR "/tests/fixtures/explain.safetensors", &fx) == DAMO_OK, "%s",
            damo_last_error());
  if (!fx) return;
  static const char *const mlp_w[4] = {"dense_1.kernel", "dense_1.bias", "dense_2.kernel", "dense_2.bias"};
  against_pytorch(fx, "mlp", "{\"input_shape\": [6, 5], \"layers\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", "
                  "\"name\": \"dense_1\", \"units\": 8, \"activation\": \"tanh\"}, {\"type\": \"dense\", \"name\": "
                  "\"dense_2\", \"units\": 4, \"activation\": \"softmax\"}]}", mlp_w, 4);
  static const char *const cnn_w[4] = {"conv2d_1.kernel", "conv2d_1.bias", "dense_1.kernel", "dense_1.bias"};
  against_pytorch(fx, "cnn", "{\"input_shape\": [8, 8, 2], \"layers\": [{\"type\": \"conv2d\", \"name\": \"conv2d_1\", "
                  "\"filters\": 3, \"kernel_size\": 3, \"activation\": \"relu\"}, {\"type\": \"max_pooling2d\", "
                  "\"pool_size\": 2}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"name\": \"dense_1\", "
                  "\"units\": 3, \"activation\": \"softmax\"}]}", cnn_w, 4);
  damo_tensor_dict_free(fx);
}

/* damo explain on a picture: what it prints, the .npy it writes equal to damo_attribute's,
 * the PNG; Grad-CAM at a named layer; options of another method and bad inputs refused. */
static void test_command(void) {
  char dir[200], png[240], out[240], npy[240];
  snprintf(dir, sizeof dir, "/tmp/damo_test_explain_cli_%d", (int)getpid());
  snprintf(png, sizeof png, "%s/item.png", dir);
  snprintf(out, sizeof out, "%s/explained.png", dir);
  snprintf(npy, sizeof npy, "%s/attr.npy", dir);
  damo_model *m = model_of("{\"input_shape\": [12, 12, 1], \"layers\": [{\"type\": \"rescaling\", \"scale\": 0.0039},"
                           "{\"type\": \"conv2d\", \"name\": \"features\", \"filters\": 4, \"kernel_size\": 3, "
                           "\"activation\": \"relu\"}, {\"type\": \"max_pooling2d\", \"pool_size\": 2}, {\"type\": "
                           "\"flatten\"}, {\"type\": \"dense\", \"units\": 3, \"activation\": \"softmax\"}]}", 8);
  static const char *const three[3] = {"round", "square", "cross"};
  CHECK(m && damo_model_set_class_names(m, 3, three) == DAMO_OK && damo_model_save(m, dir) == DAMO_OK);
  const int64_t ishape[3] = {12, 12, 1};
  damo_tensor *img = damo_tensor_new(DAMO_F32, 3, ishape), *conv = NULL, *attr_file = NULL;
  for (int i = 0; i < 144; i++) damo_tensor_f32(img)[i] = (i / 12 > 3 && i / 12 < 9 && i % 12 > 2 && i % 12 < 8) ? 230 : 10;
  CHECK(damo_image_save_png(png, img) == DAMO_OK);
  int rc = run("%s explain --model %s --input %s --out %s --attributions %s --steps 32", DAMO_CLI_PATH, dir, png, out, npy);
  CHECK_MSG(rc == 0 && strstr(cli_out, "predicted") && strstr(cli_out, "completeness gap") && access(out, R_OK) == 0,
            "%s", cli_out);
  /* the file holds what the library gives for the same converted picture */
  damo_tensor *loaded = NULL;
  CHECK(damo_image_load(png, 0, &loaded) == DAMO_OK && damo_image_to_model_input(loaded, 12, 12, 1, 1, &conv) == DAMO_OK);
  damo_explainer *e = NULL;
  float attr[144];
  damo_attribution_options o = damo_attribution_defaults();
  o.steps = 32;
  CHECK(damo_explainer_new(m, 64, &e) == DAMO_OK && conv && damo_attribute(e, damo_tensor_f32(conv), -1, &o, attr, NULL) == DAMO_OK);
  CHECK(damo_npy_load(npy, &attr_file) == DAMO_OK && attr_file && damo_tensor_numel(attr_file) == 144 &&
        attr_file->ndim == 3 && attr_file->shape[0] == 12);
  if (attr_file) CHECK_CLOSE(damo_tensor_f32(attr_file), attr, 144, 1e-6, 1e-5);
  rc = run("%s explain --model %s --input %s --method grad-cam --layer features --target 1", DAMO_CLI_PATH, dir, png);
  CHECK_MSG(rc == 0 && strstr(cli_out, "grad-cam at layer features") && strstr(cli_out, "class square"), "%s", cli_out);
  /* a folder of class folders: each picture's true class from its folder, a row each in the grid */
  rc = run("mkdir -p %s/pics/square %s/pics/cross && cp %s %s/pics/square/a.png && cp %s %s/pics/cross/b.png && "
           "%s explain --model %s --input %s/pics --method saliency --out %s/grid.png", dir, dir, png, dir, png, dir,
           DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 0 && strstr(cli_out, "square/a.png: predicted") && strstr(cli_out, "(true square)") &&
            strstr(cli_out, "(true cross)"), "%s", cli_out);
  static const struct {
    const char *args, *says;
    int rc;
  } bad[] = {{"--method smoothgrad --steps 4", "--steps is not an option of --method smoothgrad", 2},
             {"--method lime", "unknown attribution method 'lime'", 2},
             {"--target 7", "--target", 2},
             {"--method grad-cam --layer nowhere", "no layer named 'nowhere'", 1},
             {"--integration simpson", "riemann or gauss-legendre", 2}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    rc = run("%s explain --model %s --input %s %s", DAMO_CLI_PATH, dir, png, bad[i].args);
    CHECK_MSG(rc == bad[i].rc && strstr(cli_out, bad[i].says), "%s: %d %s", bad[i].args, rc, cli_out);
  }
  /* the deletion test on Fashion-MNIST (a small untrained model: the format, not the figures) */
  damo_model *fm = model_of("{\"input_shape\": [28, 28], \"layers\": [{\"type\": \"rescaling\", \"scale\": 0.0039},"
                            "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 10, \"activation\": \"softmax\"}]}", 9);
  char fdir[240], curve[260];
  snprintf(fdir, sizeof fdir, "%s/fm", dir);
  snprintf(curve, sizeof curve, "%s/curve.png", dir);
  CHECK(fm && damo_model_save(fm, fdir) == DAMO_OK);
  damo_model_free(fm);
  rc = run("%s explain --model %s --data fashion-mnist --faithfulness 4 --curve %s", DAMO_CLI_PATH, fdir, curve);
  CHECK_MSG((rc == 0 && strstr(cli_out, "deletion test, integrated-gradients on 4 test examples") &&
             strstr(cli_out, "   50%") && strstr(cli_out, "completeness gap mean") && access(curve, R_OK) == 0) ||
                strstr(cli_out, "not installed") || strstr(cli_out, "not found"),
            "%d %s", rc, cli_out);
  damo_explainer_free(e);
  damo_tensor_free(img), damo_tensor_free(conv), damo_tensor_free(loaded), damo_tensor_free(attr_file);
  damo_model_free(m);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* Attention maps: BERT's equal PyTorch's softmax probabilities on the fixture (padded keys 0),
 * GPT-2's are causal; every row sums to 1, and so does every row of the rollout; GPT-2's
 * next-token attributions add up (within 1%) and explain the decoder's most probable token. */
static void test_attention(void) {
  damo_bert *b = NULL;
  damo_tensor_dict *ref = NULL;
  CHECK(damo_bert_load(DAMO_SOURCE_DIR "/tests/fixtures/bert_tiny", 0, 1, &b) == DAMO_OK);
  CHECK(damo_safetensors_load(DAMO_SOURCE_DIR "/tests/fixtures/bert_tiny_ref.safetensors", &ref) == DAMO_OK);
  const damo_tensor *want = ref ? damo_tensor_dict_get(ref, "attention") : NULL, *ids = NULL, *types = NULL, *mask = NULL;
  if (ref) {
    ids = damo_tensor_dict_get(ref, "input_ids"), types = damo_tensor_dict_get(ref, "token_type_ids");
    mask = damo_tensor_dict_get(ref, "attention_mask");
  }
  if (b && want && ids) { /* want (L, B, H, T, T) */
    const int L = damo_bert_get_config(b)->num_hidden_layers, H = damo_bert_get_config(b)->num_attention_heads;
    const int64_t B = ids->shape[0], T = ids->shape[1];
    float *maps = malloc((size_t)L * H * T * T * sizeof *maps), *roll = malloc((size_t)T * T * sizeof *roll);
    double worst = 0, row_err = 0, roll_err = 0, masked = 0;
    for (int64_t r = 0; r < B; r++) {
      const int32_t *m = damo_tensor_i32(mask) + r * T;
      CHECK(damo_bert_attention_maps(b, T, damo_tensor_i32(ids) + r * T, damo_tensor_i32(types) + r * T, m, maps) == DAMO_OK);
      for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++)
          for (int64_t i = 0; i < T; i++) {
            double sum = 0;
            for (int64_t j = 0; j < T; j++) {
              const float got = maps[(((int64_t)l * H + h) * T + i) * T + j];
              const float exp_v = damo_tensor_f32(want)[((((int64_t)l * B + r) * H + h) * T + i) * T + j];
              worst = fmax(worst, fabs(got - exp_v));
              if (!m[j]) masked = fmax(masked, fabs(got));
              sum += got;
            }
            row_err = fmax(row_err, fabs(sum - 1));
          }
      CHECK(damo_attention_rollout(maps, L, H, T, m, roll) == DAMO_OK);
      for (int64_t i = 0; i < T; i++) {
        double sum = 0;
        for (int64_t j = 0; j < T; j++) sum += roll[i * T + j];
        roll_err = fmax(roll_err, fabs(sum - 1));
      }
    }
    /* IG of the first example's class from its words made [PAD] adds up, for the class BERT gives */
    int32_t *base_ids = malloc((size_t)T * sizeof *base_ids), target = -1;
    float *attr = malloc((size_t)T * sizeof *attr), logit = 0, base_logit = 0, probs[8];
    const int32_t *m0 = damo_tensor_i32(mask), *ids0 = damo_tensor_i32(ids);
    int64_t n = 0;
    while (n < T && m0[n]) n++;
    for (int64_t i = 0; i < T; i++) base_ids[i] = i > 0 && i < n - 1 ? 0 : ids0[i];
    damo_bert_graph *cg = NULL;
    CHECK(damo_bert_classifier_new(b, 1, T, 0, &cg) == DAMO_OK &&
          damo_bert_classify(cg, 1, ids0, damo_tensor_i32(types), m0, probs) == DAMO_OK);
    CHECK(damo_bert_explain(b, T, ids0, base_ids, damo_tensor_i32(types), m0, &target, 64, attr, &logit, &base_logit) ==
          DAMO_OK);
    double sum = 0;
    int best = 0;
    for (int64_t i = 0; i < T; i++) sum += attr[i];
    for (int k = 1; k < 3; k++) best = probs[k] > probs[best] ? k : best;
    CHECK_MSG(target == best && fabs(sum - (logit - base_logit)) <= 0.01 * fabs(logit - base_logit) + 1e-6,
              "BERT IG: target %d (best %d), sum %.6g vs f(x) - f(baseline) %.6g", target, best, sum,
              (double)(logit - base_logit));
    damo_bert_graph_free(cg);
    free(base_ids), free(attr);
    CHECK_MSG(worst < 1e-5 && row_err < 1e-5 && masked == 0 && roll_err < 1e-5,
              "BERT maps vs PyTorch %.3g, rows off 1 by %.3g, masked keys up to %.3g, rollout rows %.3g", worst, row_err,
              masked, roll_err);
    free(maps), free(roll);
  }
  damo_tensor_dict_free(ref);
  damo_bert_free(b);
  /* GPT-2 */
  const damo_gpt2_config cfg = {2, 2, 32, 16, 101, 1e-5f};
  damo_gpt2 *g = NULL;
  CHECK(damo_gpt2_new(&cfg, 17, &g) == DAMO_OK);
  if (!g) return;
  enum { T = 7 };
  const int32_t prompt[T] = {5, 17, 42, 9, 63, 2, 88};
  float maps[2 * 2 * T * T], attr[T], lp = 0, base = 0;
  CHECK(damo_gpt2_attention_maps(g, prompt, T, maps) == DAMO_OK);
  double row_err = 0, future = 0;
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < T; i++) {
      double sum = 0;
      for (int j = 0; j < T; j++) {
        sum += maps[(k * T + i) * T + j];
        if (j > i) future = fmax(future, fabs(maps[(k * T + i) * T + j]));
      }
      row_err = fmax(row_err, fabs(sum - 1));
    }
  CHECK_MSG(row_err < 1e-5 && future == 0, "GPT-2 rows off 1 by %.3g, attention to later tokens %.3g", row_err, future);
  int32_t next = -1, greedy = -1;
  CHECK(damo_gpt2_explain_next(g, prompt, T, &next, 64, attr, &lp, &base) == DAMO_OK);
  CHECK(damo_gpt2_generate_greedy(g, prompt, T, 1, 1, &greedy) == DAMO_OK);
  double sum = 0;
  for (int t = 0; t < T; t++) sum += attr[t];
  CHECK_MSG(next == greedy && fabs(sum - (lp - base)) <= 0.01 * fabs(lp - base) + 1e-6,
            "next %d (greedy %d); sum %.6g vs logp - logp(positions) %.6g", next, greedy, sum, (double)(lp - base));
  int32_t bad = 101;
  EXPECT_FAIL(damo_gpt2_explain_next(g, prompt, T, &bad, 8, attr, NULL, NULL), DAMO_ERR_INVALID_ARG, "outside the vocabulary");
  damo_bpe *bpe = NULL; /* the command, where the GPT-2 vocabulary is installed */
  if (damo_bpe_load(NULL, &bpe) == DAMO_OK) {
    const damo_gpt2_config big = {2, 2, 32, 32, 50257, 1e-5f};
    damo_gpt2 *gm = NULL;
    char gdir[300], html[300];
    snprintf(gdir, sizeof gdir, "%s", tmp_path("gpt"));
    snprintf(html, sizeof html, "%s", tmp_path("heads.html"));
    CHECK(damo_gpt2_new(&big, 3, &gm) == DAMO_OK && damo_gpt2_save(gm, gdir) == DAMO_OK);
    damo_gpt2_free(gm);
    int rc = run("%s explain --model %s --prompt 'The sea was calm and the' --next ' sky' --html %s", DAMO_CLI_PATH, gdir,
                 html);
    const char *gap = strstr(cli_out, "completeness gap ");
    CHECK_MSG(rc == 0 && strstr(cli_out, "next token ' sky'") && gap && atof(gap + 17) < 1 && access(html, R_OK) == 0,
              "%s", cli_out);
    rc = run("%s explain --model %s --prompt 'The sea' --next ' the sky'", DAMO_CLI_PATH, gdir);
    CHECK_MSG(rc == 2 && strstr(cli_out, "must be one GPT-2 token"), "%s", cli_out);
  }
  damo_bpe_free(bpe);
  CHECK(damo_gpt2_quantize(g, DAMO_BLOCKS_Q8_0) == DAMO_OK);
  next = -1;
  EXPECT_FAIL(damo_gpt2_explain_next(g, prompt, T, &next, 8, attr, NULL, NULL), DAMO_ERR_UNSUPPORTED, "quantised");
  damo_gpt2_free(g);
}

/* damo explain of a mail with a text model trained on two word pools: the words that push
 * toward spam most are spam-pool words, IG's completeness holds, the page and the numbers are
 * written. */
static void test_text_command(void) {
  write_labelled_mails(80);
  write_text_model_config(tmp_path("text.json"));
  char model[300], mail[300], page[300], npy[300];
  snprintf(model, sizeof model, "%s", tmp_path("tm"));
  snprintf(mail, sizeof mail, "%s", tmp_path("mails/spam/011.txt"));
  snprintf(page, sizeof page, "%s", tmp_path("why.html"));
  snprintf(npy, sizeof npy, "%s", tmp_path("why.npy"));
  int rc = run("%s train --config %s --data %s --out %s --verbose 0", DAMO_CLI_PATH, tmp_path("text.json"),
               tmp_path("mails"), model);
  CHECK_MSG(rc == 0, "%s", cli_out);
  rc = run("%s explain --model %s --input %s --html %s --attributions %s --sanity", DAMO_CLI_PATH, model, mail, page, npy);
  const char *sane = strstr(cli_out, "rank correlation of |attributions| over the ");
  CHECK_MSG(sane && strstr(sane, "words ") && atof(strstr(sane, "words ") + 6) < 0.99, "%s", cli_out);
  const char *gap = strstr(cli_out, "completeness gap "), *pro = strstr(cli_out, "for the class: ");
  static const char *const spam_words[] = {"winner", "free", "cash", "offer", "click", "via", "prize", "credit"};
  int spammy = 0;
  for (int i = 0; pro && i < 8; i++) spammy |= !strncmp(pro + 15, spam_words[i], strlen(spam_words[i]));
  CHECK_MSG(rc == 0 && strstr(cli_out, "the logit of spam") && gap && atof(gap + 17) < 1.0 && spammy, "%s", cli_out);
  damo_tensor *a = NULL;
  CHECK(damo_npy_load(npy, &a) == DAMO_OK && a && damo_tensor_numel(a) == 24);
  damo_tensor_free(a);
  FILE *h = fopen(page, "r");
  char buf[4096] = "";
  size_t n = h ? fread(buf, 1, sizeof buf - 1, h) : 0;
  if (h) fclose(h);
  buf[n] = '\0';
  CHECK_MSG(strstr(buf, "<!doctype html>") && strstr(buf, "<span title=\""), "%s", buf);
  /* the deletion test over words: removing the most attributed words lowers the class more
   * than removing random ones (the pools make the attributions clear-cut) */
  rc = run("%s explain --model %s --data %s --faithfulness 12", DAMO_CLI_PATH, model, tmp_path("mails"));
  const char *row = strstr(cli_out, "   30%");
  double by_attr = 0, by_chance = 0;
  if (row) sscanf(row + 6, "%lf %lf", &by_attr, &by_chance);
  CHECK_MSG(rc == 0 && strstr(cli_out, "deletion test, integrated-gradients on") && row && by_attr < by_chance,
            "%s", cli_out);
}

int main(void) {
  tmpdir_template("explain");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_gradients);
  RUN(test_linear_exact);
  RUN(test_methods);
  RUN(test_tokens);
  RUN(test_pytorch);
  RUN(test_command);
  RUN(test_text_command);
  RUN(test_attention);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return test_summary("explain");
}
