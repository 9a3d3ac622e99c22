/* test_gpt2.c - GPT-2 against a PyTorch reference (tests/ref/gen_gpt2.py writes
 * tests/fixtures/gpt2_tiny/, a HuggingFace directory with the "transformer." prefix, mask
 * buffers and a tied lm_head, and tests/fixtures/gpt2_tiny_ref.safetensors): logits, loss
 * and every parameter's gradient; save / reload; greedy generation token for token; clear
 * errors for corrupt directories; the slice_last op against finite differences; fresh
 * initialisation statistics and one descent step through the flat blocks.
 * TEST_GPT2_VERBOSE=1 prints the worst errors. */
#include "damo.h"
#include "harness.h"
#include "model_ref.h"
#include "tmpfiles.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL_DIR DAMO_SOURCE_DIR "/tests/fixtures/gpt2_tiny"
#define REF_PATH DAMO_SOURCE_DIR "/tests/fixtures/gpt2_tiny_ref.safetensors"

static int contains(const char *haystack, const char *needle) { return strstr(haystack, needle) != NULL; }

/* ------------------------------------------------------------------ slice_last */

static void test_slice_last(void) {
  int64_t shape[3] = {2, 3, 7};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 3, shape), *gx = damo_tensor_new(DAMO_F32, 3, shape);
  int64_t wshape[3] = {2, 3, 4};
  damo_tensor *w = damo_tensor_new(DAMO_F32, 3, wshape);
  float *xv = damo_tensor_f32(x), *wv = damo_tensor_f32(w);
  for (int i = 0; i < 42; i++) xv[i] = (float)sin(0.7 * i + 0.3);
  for (int i = 0; i < 24; i++) wv[i] = (float)cos(1.3 * i);

  damo_graph *g = damo_graph_new(1);
  damo_node *xn = damo_param(g, "x", x, gx);
  damo_node *a = damo_slice_last(g, xn, 1, 4); /* channels 1..4 */
  damo_node *b = damo_slice_last(g, xn, 3, 3); /* channels 3..5, overlapping a */
  /* loss = sum(a * w) + sum(b * b) */
  damo_node *loss = damo_add(g, damo_sum(g, damo_mul(g, a, damo_constant(g, w)), DAMO_ALL_AXES, 0),
                             damo_sum(g, damo_mul(g, b, b), DAMO_ALL_AXES, 0));
  CHECK(damo_graph_compile(g, loss, 2, (damo_node *const[]){a, b}) == DAMO_OK);
  CHECK(damo_node_ndim(a) == 3 && damo_node_shape(a)[2] == 4 && damo_node_shape(b)[2] == 3);
  CHECK(damo_graph_forward(g, 1) == DAMO_OK);
  int exact = 1;
  for (int r = 0; r < 6; r++) {
    for (int k = 0; k < 4; k++) exact &= damo_node_data(a)[r * 4 + k] == xv[r * 7 + 1 + k];
    for (int k = 0; k < 3; k++) exact &= damo_node_data(b)[r * 3 + k] == xv[r * 7 + 3 + k];
  }
  CHECK(exact);
  CHECK(damo_graph_backward(g) == DAMO_OK);

  /* Central finite differences in float64 terms of the float32 forward. */
  double worst = 0;
  const float h = 1e-2f;
  for (int i = 0; i < 42; i++) {
    float orig = xv[i];
    xv[i] = orig + h;
    damo_graph_forward(g, 1);
    double up = damo_node_data(loss)[0];
    xv[i] = orig - h;
    damo_graph_forward(g, 1);
    double down = damo_node_data(loss)[0];
    xv[i] = orig;
    double fd = (up - down) / (2.0 * h), an = damo_tensor_f32(gx)[i];
    double err = fabs(fd - an) / (1e-3 + 1e-2 * fabs(an));
    if (err > worst) worst = err;
  }
  CHECK_MSG(worst <= 1.0, "slice_last gradient vs finite differences: %.3g x tolerance", worst);
  /* Channel 0 and 6 are in neither slice: exactly no gradient. */
  CHECK(damo_tensor_f32(gx)[0] == 0.0f && damo_tensor_f32(gx)[6] == 0.0f);
  damo_graph_free(g);

  g = damo_graph_new(1);
  xn = damo_param(g, "x", x, gx);
  CHECK(damo_slice_last(g, xn, 5, 3) == NULL);
  CHECK(damo_graph_status(g) == DAMO_ERR_SHAPE);
  CHECK(contains(damo_last_error(), "outside the input's 7"));
  damo_graph_free(g);
  g = damo_graph_new(1);
  CHECK(damo_slice_last(g, damo_param(g, "x", x, gx), 0, 0) == NULL);
  CHECK(damo_graph_status(g) == DAMO_ERR_SHAPE);
  damo_graph_free(g);
  damo_tensor_free(x);
  damo_tensor_free(gx);
  damo_tensor_free(w);
}

/* ------------------------------------------------------------------ reference */

static void test_reference(void) {
  damo_gpt2 *m = NULL;
  CHECK_MSG(damo_gpt2_load(MODEL_DIR, &m) == DAMO_OK, "%s", damo_last_error());
  if (!m || !ref) return;
  const damo_gpt2_config *c = damo_gpt2_get_config(m);
  CHECK(c->n_layer == 2 && c->n_head == 4 && c->n_embd == 32 && c->n_positions == 32 && c->vocab_size == 97);
  CHECK(fabsf(c->layer_norm_epsilon - 1e-5f) == 0.0f);
  CHECK(damo_gpt2_num_tensors(m) == 2 + 12 * 2 + 2);
  CHECK(damo_gpt2_num_params(m) == 97 * 32 + 32 * 32 + 2 * (4 * 32 + 32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 +
                                                           128 * 32 + 32) + 2 * 32);

  damo_tensor *ids = ref_get("ids"), *targets = ref_get("targets"), *logits = ref_get("logits");
  damo_tensor *loss_ref = ref_get("loss");
  if (!ids || !targets || !logits || !loss_ref) return;
  int64_t B = ids->shape[0], T = ids->shape[1], n_logits = damo_tensor_numel(logits);
  damo_gpt2_graph *gg = NULL;
  CHECK_MSG(damo_gpt2_graph_new(m, B, T, 1, &gg) == DAMO_OK, "%s", damo_last_error());
  if (!gg) {
    damo_gpt2_free(m);
    return;
  }
  /* Logits come from an inference graph: a training graph fuses the head into its loss. */
  damo_gpt2_graph *inf = NULL;
  CHECK(damo_gpt2_graph_new(m, B, T, 0, &inf) == DAMO_OK);
  CHECK(damo_gpt2_graph_forward(inf, damo_tensor_i32(ids), NULL, NULL) == DAMO_OK);
  CHECK_CLOSE(damo_gpt2_graph_logits(inf), damo_tensor_f32(logits), n_logits, LOGIT_ATOL, LOGIT_RTOL);
  double logit_err = max_rel_error(damo_gpt2_graph_logits(inf), damo_tensor_f32(logits), n_logits);
  CHECK(damo_gpt2_graph_backward(inf) == DAMO_ERR_STATE);
  damo_gpt2_graph_free(inf);

  float loss = 0;
  CHECK_MSG(damo_gpt2_graph_forward(gg, damo_tensor_i32(ids), damo_tensor_i32(targets), &loss) == DAMO_OK, "%s",
            damo_last_error());
  CHECK(damo_gpt2_graph_logits(gg) == NULL);
  double loss_err = fabs(loss - damo_tensor_f32(loss_ref)[0]) / fabs(damo_tensor_f32(loss_ref)[0]);
  CHECK_MSG(loss_err < 1e-5, "loss %.8g vs %.8g", loss, damo_tensor_f32(loss_ref)[0]);

  CHECK_MSG(damo_gpt2_graph_backward(gg) == DAMO_OK, "%s", damo_last_error());
  double grad_err = 0;
  const char *worst_name = "";
  for (int i = 0; i < damo_gpt2_num_tensors(m); i++) {
    const char *name = damo_gpt2_tensor_name(m, i);
    char key[128];
    snprintf(key, sizeof key, "grad.%s", name);
    damo_tensor *want = ref_get(key), *got = damo_gpt2_grad(m, name);
    if (!want || !got) continue;
    CHECK(damo_tensor_numel(want) == damo_tensor_numel(got));
    double r = test_close_ratio(damo_tensor_f32(got), damo_tensor_f32(want), (long)damo_tensor_numel(want), GRAD_ATOL,
                                GRAD_RTOL);
    CHECK_MSG(r <= 1.0, "gradient of %s: worst error %.3g x tolerance", name, r);
    double e = max_rel_error(damo_tensor_f32(got), damo_tensor_f32(want), damo_tensor_numel(want));
    if (e > grad_err) {
      grad_err = e;
      worst_name = name;
    }
  }
  /* Running forward and backward again gives the same gradients (backward overwrites). */
  int64_t n_floats;
  const float *grads = damo_gpt2_grad_block(m, &n_floats);
  float *first = malloc((size_t)n_floats * sizeof *first);
  memcpy(first, grads, (size_t)n_floats * sizeof *first);
  CHECK(damo_gpt2_graph_forward(gg, damo_tensor_i32(ids), damo_tensor_i32(targets), NULL) == DAMO_OK);
  CHECK(damo_gpt2_graph_backward(gg) == DAMO_OK);
  CHECK(memcmp(first, grads, (size_t)n_floats * sizeof *first) == 0);
  /* A validation forward gives the same loss without gradient work; a backward after it
   * still gets them right (the head then computes its gradients in backward). */
  float eval_loss = 0;
  CHECK(damo_gpt2_graph_evaluate(gg, damo_tensor_i32(ids), damo_tensor_i32(targets), &eval_loss) == DAMO_OK);
  CHECK_MSG(eval_loss == loss, "evaluate %.9g vs forward %.9g", eval_loss, loss);
  CHECK(damo_gpt2_graph_backward(gg) == DAMO_OK);
  CHECK(memcmp(first, grads, (size_t)n_floats * sizeof *first) == 0);
  free(first);
  if (verbose)
    fprintf(stderr, "    max relative error vs PyTorch: logits %.3g, loss %.3g, gradients %.3g (%s)\n", logit_err,
            loss_err, grad_err, worst_name);

  damo_gpt2_graph_free(gg);
  damo_gpt2_free(m);
}

static void test_generate(void) {
  damo_gpt2 *m = NULL;
  CHECK(damo_gpt2_load(MODEL_DIR, &m) == DAMO_OK);
  damo_tensor *prompt = ref_get("prompt"), *want = ref_get("generated");
  if (!m || !prompt || !want) return;
  int64_t n = damo_tensor_numel(want);
  for (int cached = 0; cached < 2; cached++) {
    int32_t out[64] = {0};
    CHECK_MSG(damo_gpt2_generate_greedy(m, damo_tensor_i32(prompt), damo_tensor_numel(prompt), n, cached, out) ==
                  DAMO_OK, "%s", damo_last_error());
    int same = 1;
    for (int64_t i = 0; i < n; i++) same &= out[i] == damo_tensor_i32(want)[i];
    CHECK_MSG(same, "greedy ids %s differ from PyTorch's (first: %d vs %d)", cached ? "with the KV cache" : "recomputed",
              out[0], damo_tensor_i32(want)[0]);
  }
  int32_t out[64];
  EXPECT_FAIL(damo_gpt2_generate_greedy(m, damo_tensor_i32(prompt), 5, 28, 1, out), DAMO_ERR_INVALID_ARG, "n_positions");
  int32_t bad_prompt[2] = {3, 97};
  EXPECT_FAIL(damo_gpt2_generate_greedy(m, bad_prompt, 2, 1, 0, out), DAMO_ERR_INVALID_ARG, "97");
  damo_gpt2_free(m);
}

/* The KV-cache path, position by position, against the reference logits of both rows. */
static void test_kv_cache(void) {
  damo_gpt2 *m = NULL;
  CHECK(damo_gpt2_load(MODEL_DIR, &m) == DAMO_OK);
  damo_tensor *ids = ref_get("ids"), *logits = ref_get("logits");
  if (!m || !ids || !logits) return;
  int64_t B = ids->shape[0], T = ids->shape[1], V = 97;
  damo_gpt2_cache *c = NULL;
  CHECK(damo_gpt2_cache_new(m, T, &c) == DAMO_OK);
  if (!c) return;
  float *got = malloc((size_t)(B * T * V) * sizeof *got);
  for (int64_t b = 0; b < B; b++) {
    damo_gpt2_cache_reset(c);
    for (int64_t t = 0; t < T; t++) {
      const float *row = NULL;
      CHECK(damo_gpt2_cache_step(c, damo_tensor_i32(ids)[b * T + t], &row) == DAMO_OK);
      if (row) memcpy(got + (b * T + t) * V, row, (size_t)V * sizeof *got);
    }
  }
  CHECK(damo_gpt2_cache_length(c) == T);
  CHECK_CLOSE(got, damo_tensor_f32(logits), (long)(B * T * V), LOGIT_ATOL, LOGIT_RTOL);
  if (verbose)
    fprintf(stderr, "    KV cache logits: max relative error vs PyTorch %.3g\n",
            max_rel_error(got, damo_tensor_f32(logits), B * T * V));
  EXPECT_FAIL(damo_gpt2_cache_step(c, 1, NULL), DAMO_ERR_STATE, "full");
  damo_gpt2_cache_reset(c);
  EXPECT_FAIL(damo_gpt2_cache_step(c, -1, NULL), DAMO_ERR_INVALID_ARG, "id -1");
  damo_gpt2_cache *too_long = NULL;
  EXPECT_FAIL(damo_gpt2_cache_new(m, 33, &too_long), DAMO_ERR_INVALID_ARG, "n_positions 32");
  free(got);
  damo_gpt2_cache_free(c);
  damo_gpt2_free(m);
}

/* ------------------------------------------------------------------ files */

static int64_t file_size(const char *path) {
  struct stat s;
  return stat(path, &s) == 0 ? (int64_t)s.st_size : -1;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = calloc((size_t)n + 1, 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = '\0';
  fclose(f);
  return s;
}

static void test_save_reload(void) {
  damo_gpt2 *m = NULL, *back = NULL;
  CHECK(damo_gpt2_load(MODEL_DIR, &m) == DAMO_OK);
  if (!m) return;
  const char *dir = tmp_path("saved");
  CHECK_MSG(damo_gpt2_save(m, dir) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(damo_gpt2_load(dir, &back) == DAMO_OK, "%s", damo_last_error());
  if (!back) {
    damo_gpt2_free(m);
    return;
  }
  int64_t n1, n2;
  const float *p1 = damo_gpt2_param_block(m, &n1), *p2 = damo_gpt2_param_block(back, &n2);
  CHECK(n1 == n2 && memcmp(p1, p2, (size_t)n1 * sizeof(float)) == 0);
  CHECK(memcmp(damo_gpt2_get_config(m), damo_gpt2_get_config(back), sizeof(damo_gpt2_config)) == 0);

  damo_tensor *ids = ref_get("ids");
  damo_gpt2_graph *g1 = NULL, *g2 = NULL;
  CHECK(damo_gpt2_graph_new(m, 2, 16, 0, &g1) == DAMO_OK);
  CHECK(damo_gpt2_graph_new(back, 2, 16, 0, &g2) == DAMO_OK);
  if (g1 && g2 && ids) {
    CHECK(damo_gpt2_graph_forward(g1, damo_tensor_i32(ids), NULL, NULL) == DAMO_OK);
    CHECK(damo_gpt2_graph_forward(g2, damo_tensor_i32(ids), NULL, NULL) == DAMO_OK);
    CHECK(memcmp(damo_gpt2_graph_logits(g1), damo_gpt2_graph_logits(g2), 2 * 16 * 97 * sizeof(float)) == 0);
  }
  damo_gpt2_graph_free(g1);
  damo_gpt2_graph_free(g2);

  /* HuggingFace's format: config fields, names without prefix, 8-byte aligned data. */
  char path[600];
  snprintf(path, sizeof path, "%s/config.json", dir);
  char *cfg = read_text(path);
  CHECK(cfg && contains(cfg, "\"model_type\":\t\"gpt2\"") && contains(cfg, "GPT2LMHeadModel") &&
        contains(cfg, "\"gelu_new\"") && contains(cfg, "\"layer_norm_epsilon\":\t1e-05") &&
        contains(cfg, "\"n_positions\":\t32"));
  free(cfg);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  char *st = read_text(path);
  if (st) {
    uint64_t header = 0;
    memcpy(&header, st, 8);
    CHECK(header % 8 == 0 && (int64_t)header + 8 < file_size(path));
    CHECK(contains(st + 8, "\"wte.weight\"") && !contains(st + 8, "transformer.") && contains(st + 8, "\"pt\""));
  }
  free(st);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  CHECK(d && d->count == damo_gpt2_num_tensors(m));
  damo_tensor_dict_free(d);
  damo_gpt2_free(back);
  damo_gpt2_free(m);
  remove_model_dir(dir);
}

/* Writes a copy of the fixture directory to tmpdir/name with its tensors edited by edit
 * (may be NULL) and its config.json replaced by config (NULL: copied); returns the dir. */
static const char *make_variant(const char *name, void (*edit)(damo_tensor_dict *), const char *config) {
  const char *dir = tmp_path(name);
  mkdir(dir, 0755);
  char path[600];
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(MODEL_DIR "/model.safetensors", &d) == DAMO_OK);
  if (!d) return dir;
  if (edit) edit(d);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(damo_safetensors_save(path, d, NULL, 0) == DAMO_OK);
  damo_tensor_dict_free(d);
  char *text = config ? NULL : read_text(MODEL_DIR "/config.json");
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_bytes(path, config ? config : text, strlen(config ? config : text));
  free(text);
  return dir;
}

static void replace(damo_tensor_dict *d, const char *name, damo_tensor *t) {
  for (int i = 0; i < d->count; i++)
    if (strcmp(d->names[i], name) == 0) {
      damo_tensor_free(d->tensors[i]);
      d->tensors[i] = t;
      return;
    }
  damo_tensor_dict_add(d, name, t);
}

static void drop_fc_bias(damo_tensor_dict *d) {
  for (int i = 0; i < d->count; i++)
    if (strcmp(d->names[i], "transformer.h.1.mlp.c_fc.bias") == 0) {
      free(d->names[i]);
      damo_tensor_free(d->tensors[i]);
      d->names[i] = d->names[d->count - 1];
      d->tensors[i] = d->tensors[d->count - 1];
      d->count--;
      return;
    }
}
static void transpose_c_attn(damo_tensor_dict *d) {
  int64_t shape[2] = {96, 32};
  replace(d, "transformer.h.0.attn.c_attn.weight", damo_tensor_new(DAMO_F32, 2, shape));
}
static void add_layer(damo_tensor_dict *d) {
  int64_t shape[1] = {32};
  replace(d, "transformer.h.2.ln_1.weight", damo_tensor_new(DAMO_F32, 1, shape));
}
static void untie_head(damo_tensor_dict *d) {
  damo_tensor *t = damo_tensor_clone(damo_tensor_dict_get(d, "lm_head.weight"));
  damo_tensor_f32(t)[5] += 1.0f;
  replace(d, "lm_head.weight", t);
}
static void nan_in_wpe(damo_tensor_dict *d) { damo_tensor_f32(damo_tensor_dict_get(d, "transformer.wpe.weight"))[7] = NAN; }
static void strip_prefix(damo_tensor_dict *d) {
  for (int i = 0; i < d->count; i++)
    if (strncmp(d->names[i], "transformer.", 12) == 0) memmove(d->names[i], d->names[i] + 12, strlen(d->names[i] + 12) + 1);
}

static void test_errors(void) {
  damo_gpt2 *m = NULL;
  const char *dir;
  dir = make_variant("missing", drop_fc_bias, NULL);
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_FORMAT, "model.safetensors: missing tensor 'h.1.mlp.c_fc.bias'");
  remove_model_dir(dir);
  dir = make_variant("shape", transpose_c_attn, NULL);
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_SHAPE, "tensor 'transformer.h.0.attn.c_attn.weight' is f32 (96, 32)");
  CHECK(contains(damo_last_error(), "needs f32 (32, 96)"));
  remove_model_dir(dir);
  dir = make_variant("extra", add_layer, NULL);
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_FORMAT, "unexpected tensor 'transformer.h.2.ln_1.weight'");
  remove_model_dir(dir);
  dir = make_variant("untied", untie_head, NULL);
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_UNSUPPORTED, "'lm_head.weight' differs");
  remove_model_dir(dir);
  dir = make_variant("nan", nan_in_wpe, NULL);
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_NUMERIC, "'transformer.wpe.weight'");
  remove_model_dir(dir);
  dir = make_variant("bert", NULL, "{\"model_type\": \"bert\", \"n_layer\": 2}");
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_UNSUPPORTED, "config.json: model_type is \"bert\"");
  remove_model_dir(dir);
  dir = make_variant("relu", NULL, "{\"activation_function\": \"relu\", \"n_layer\": 2}");
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_UNSUPPORTED, "activation_function relu");
  remove_model_dir(dir);
  dir = make_variant("nohead", NULL, "{\"n_layer\": 2, \"n_embd\": 32, \"n_positions\": 32, \"vocab_size\": 97}");
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_FORMAT, "config.json: missing \"n_head\"");
  remove_model_dir(dir);
  dir = make_variant("badjson", NULL, "{\"n_layer\": 2,");
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_FORMAT, "config.json: not valid JSON at byte offset 13 (line 1)");
  remove_model_dir(dir);
  /* Issue 18.5: strict JSON. A repeated key used to be "first wins", data after the object ignored. */
  dir = make_variant("dupkey", NULL, "{\"n_layer\": 2, \"n_head\": 4, \"n_layer\": 3}");
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_FORMAT, "config.json: duplicate key \"n_layer\" at byte offset 28");
  remove_model_dir(dir);
  dir = make_variant("trailing", NULL, "{\"n_layer\": 2}\n}");
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_FORMAT, "config.json: unexpected data after the JSON value at byte offset 15 (line 2)");
  remove_model_dir(dir);
  /* Three layers in the config, two in the file. */
  dir = make_variant("deeper", NULL,
                     "{\"n_layer\": 3, \"n_head\": 4, \"n_embd\": 32, \"n_ctx\": 32, \"vocab_size\": 97, \"foo\": [1]}");
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_FORMAT, "missing tensor 'h.2.ln_1.weight'");
  remove_model_dir(dir);
  /* Issue 18.6: a config declaring ~100M weights next to a 35k-value file is refused before
   * the 400 MB parameter block is allocated, naming both files and the sizes. */
  dir = make_variant("huge", NULL, "{\"n_layer\": 4, \"n_head\": 4, \"n_embd\": 1024, \"n_ctx\": 32, \"vocab_size\": 50257}");
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_FORMAT, "config.json: the sizes (n_layer 4, n_embd 1024, vocab_size 50257");
  CHECK_MSG(strstr(damo_last_error(), "need at least 101827584 weights but") &&
                strstr(damo_last_error(), "model.safetensors holds 34754"), "%s", damo_last_error());
  remove_model_dir(dir);
  /* Names without the prefix load too (and give the same model). */
  dir = make_variant("plain", strip_prefix, NULL);
  damo_gpt2 *a = NULL, *b = NULL;
  CHECK_MSG(damo_gpt2_load(dir, &a) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_gpt2_load(MODEL_DIR, &b) == DAMO_OK);
  if (a && b) {
    int64_t n;
    const float *pa = damo_gpt2_param_block(a, &n);
    CHECK(memcmp(pa, damo_gpt2_param_block(b, NULL), (size_t)n * sizeof(float)) == 0);
  }
  damo_gpt2_free(a);
  damo_gpt2_free(b);
  /* A truncated weights file. */
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(truncate(path, file_size(path) - 100) == 0);
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_FORMAT, "model.safetensors");
  unlink(path);
  EXPECT_FAIL(damo_gpt2_load(dir, &m), DAMO_ERR_NOT_FOUND, "model.safetensors");
  remove_model_dir(dir);
  CHECK(damo_gpt2_load(tmp_path("no_such_dir"), &m) != DAMO_OK && contains(damo_last_error(), "config.json"));
  CHECK(m == NULL);
}

/* ------------------------------------------------------------------ fresh models */

static double std_of(const damo_tensor *t, double *mean_out) {
  int64_t n = damo_tensor_numel(t);
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; i++) {
    s += damo_tensor_f32(t)[i];
    s2 += (double)damo_tensor_f32(t)[i] * damo_tensor_f32(t)[i];
  }
  if (mean_out) *mean_out = s / n;
  return sqrt(s2 / n - (s / n) * (s / n));
}

static void test_new_and_step(void) {
  damo_gpt2_config cfg = {4, 4, 64, 64, 300, 1e-5f};
  damo_gpt2 *m = NULL, *m2 = NULL;
  CHECK(damo_gpt2_new(&cfg, 7, &m) == DAMO_OK);
  CHECK(damo_gpt2_new(&cfg, 7, &m2) == DAMO_OK);
  if (!m || !m2) return;
  int64_t n;
  const float *p1 = damo_gpt2_param_block(m, &n);
  CHECK(memcmp(p1, damo_gpt2_param_block(m2, NULL), (size_t)n * sizeof(float)) == 0);
  damo_gpt2_free(m2);
  double mean;
  CHECK_NEAR(std_of(damo_gpt2_param(m, "wte.weight"), &mean), 0.02, 0.001);
  CHECK_NEAR(mean, 0.0, 0.001);
  CHECK_NEAR(std_of(damo_gpt2_param(m, "h.3.mlp.c_fc.weight"), NULL), 0.02, 0.001);
  CHECK_NEAR(std_of(damo_gpt2_param(m, "h.0.attn.c_proj.weight"), NULL), 0.02 / sqrt(8.0), 0.0007);
  CHECK_NEAR(std_of(damo_gpt2_param(m, "h.2.mlp.c_proj.weight"), NULL), 0.02 / sqrt(8.0), 0.0005);
  CHECK(std_of(damo_gpt2_param(m, "h.1.ln_2.weight"), &mean) == 0.0 && mean == 1.0);
  CHECK(std_of(damo_gpt2_param(m, "h.1.attn.c_attn.bias"), &mean) == 0.0 && mean == 0.0);
  CHECK(std_of(damo_gpt2_param(m, "ln_f.bias"), &mean) == 0.0 && mean == 0.0);
  CHECK(damo_gpt2_param(m, "lm_head.weight") == NULL);
  CHECK(((uintptr_t)damo_tensor_f32(damo_gpt2_param(m, "h.1.ln_1.bias")) & 63) == 0);

  /* Loss near log(V) at init, and a few plain gradient steps on the flat blocks lower it. */
  enum { B = 2, T = 24 };
  int32_t ids[B * T], targets[B * T];
  for (int i = 0; i < B * T; i++) {
    ids[i] = (i * 37 + 11) % 300;
    targets[i] = (ids[i] * 7 + 3) % 300;
  }
  damo_gpt2_graph *gg = NULL;
  CHECK(damo_gpt2_graph_new(m, B, T, 1, &gg) == DAMO_OK);
  float loss0 = 0, loss = 0;
  if (gg) {
    CHECK(damo_gpt2_graph_forward(gg, ids, targets, &loss0) == DAMO_OK);
    CHECK_NEAR(loss0, log(300.0), 0.1);
    float *p = damo_gpt2_param_block(m, &n), *g = damo_gpt2_grad_block(m, NULL);
    for (int step = 0; step < 5; step++) {
      CHECK(damo_gpt2_graph_forward(gg, ids, targets, &loss) == DAMO_OK);
      CHECK(damo_gpt2_graph_backward(gg) == DAMO_OK);
      for (int64_t i = 0; i < n; i++) p[i] -= 0.5f * g[i];
    }
    CHECK(damo_gpt2_graph_forward(gg, ids, targets, &loss) == DAMO_OK);
    CHECK_MSG(loss < loss0 - 0.1f, "loss %g after 5 steps from %g", loss, loss0);
  }
  damo_gpt2_graph_free(gg);

  EXPECT_FAIL(damo_gpt2_graph_new(m, 1, 65, 0, &gg), DAMO_ERR_INVALID_ARG, "n_positions 64");
  CHECK(gg == NULL);
  damo_gpt2_config bad = cfg;
  bad.n_head = 5;
  EXPECT_FAIL(damo_gpt2_new(&bad, 1, &m2), DAMO_ERR_INVALID_ARG, "not a multiple of n_head 5");
  damo_gpt2_free(m);
}

int main(void) {
  verbose = getenv("TEST_GPT2_VERBOSE") != NULL;
  tmpdir_template("gpt2");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  if (damo_safetensors_load(REF_PATH, &ref) != DAMO_OK) fprintf(stderr, "cannot load %s: %s\n", REF_PATH, damo_last_error());
  RUN(test_slice_last);
  RUN(test_reference);
  RUN(test_generate);
  RUN(test_kv_cache);
  RUN(test_save_reload);
  RUN(test_errors);
  RUN(test_new_and_step);
  damo_tensor_dict_free(ref);
  rmdir(tmpdir);
  return test_summary("gpt2");
}
