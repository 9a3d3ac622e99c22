/* test_bert_int8.c - BERT's dynamic int8 quantisation (src/models/bert_int8.c) on the tiny
 * fixture of tests/ref/gen_bert.py: which products run in int8, how close the logits stay
 * to f32 (and to f32 on the rounded weights: what is left is the activations' rounding),
 * that a save and reload gives the same model bit for bit, and the refusals: quantising
 * twice, training an int8 model, and corrupt files (a bad scale, -128, a stray scale, int8
 * weights without the config's "quantization", int8 where dynamic int8 does not apply). */
#include "damo.h"
#include "cli_run.h"
#include "harness.h"
#include "kernels/kernels.h" /* damo_quant_params: the reference input quantisation */
#include "tmpfiles.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#define MODEL_DIR DAMO_SOURCE_DIR "/tests/fixtures/bert_tiny"

enum { B = 4, T = 10 };
static int32_t ids[B * T], types[B * T], mask[B * T];

static void make_inputs(int vocab) {
  for (int i = 0; i < B * T; i++) {
    const int b = i / T, t = i % T;
    ids[i] = t == 0 ? 2 : (int32_t)((i * 7919 + 13) % (vocab - 5)) + 5;
    types[i] = t >= T / 2;
    mask[i] = t < T - b; /* rows of 10, 9, 8, 7 tokens */
  }
}

/* Logits (B, labels) of m's classifier in inference; the int8 products of its graph. */
static damo_status logits_of(damo_bert *m, float *out, int *int8_products) {
  damo_bert_graph *bg = NULL;
  damo_status st = damo_bert_classifier_new(m, B, T, 0, &bg);
  if (st == DAMO_OK) st = damo_bert_graph_forward(bg, B, ids, types, mask, NULL, 0, NULL);
  if (st == DAMO_OK) {
    memcpy(out, damo_bert_graph_logits(bg), (size_t)(B * damo_bert_get_config(m)->num_labels) * sizeof(float));
    if (int8_products) *int8_products = damo_bert_graph_int8_products(bg);
  }
  damo_bert_graph_free(bg);
  return st;
}

static double max_abs_diff(const float *a, const float *b, int n) {
  double d = 0;
  for (int i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - (double)b[i]));
  return d;
}

static void test_quantize_and_reload(void) {
  damo_bert *f32 = NULL, *q = NULL, *back = NULL;
  CHECK(damo_bert_load(MODEL_DIR, 0, 1, &f32) == DAMO_OK && damo_bert_load(MODEL_DIR, 0, 1, &q) == DAMO_OK);
  if (!f32 || !q) return;
  const damo_bert_config *c = damo_bert_get_config(f32);
  make_inputs(c->vocab_size);
  const int L = c->num_labels, n = B * L;
  float lf[64], lq[64], lr[64], lb[64];
  int products = -1;
  CHECK(logits_of(f32, lf, &products) == DAMO_OK && products == 0);
  CHECK(!damo_bert_is_quantized(q) && damo_bert_quantize(q) == DAMO_OK && damo_bert_is_quantized(q));
  CHECK_MSG(logits_of(q, lq, &products) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(products == 6 * c->num_hidden_layers + 1, "%d int8 products", products); /* + classifier; pooler f32 */
  float lu[64];
  setenv("DAMO_INT8_CHAIN", "0", 1); /* each dynamic product reads its input for the range: the same values */
  CHECK(logits_of(q, lu, NULL) == DAMO_OK);
  unsetenv("DAMO_INT8_CHAIN");
  CHECK(memcmp(lu, lq, sizeof(float) * n) == 0);

  /* f32 on the rounded weights: the rewrite is what makes the difference */
  damo_bert *rounded = NULL;
  CHECK(damo_bert_load(MODEL_DIR, 0, 1, &rounded) == DAMO_OK);
  if (rounded) {
    const damo_tensor *w = damo_bert_param(q, "encoder.layer.0.attention.self.query.weight");
    const damo_tensor *w0 = damo_bert_param(f32, "encoder.layer.0.attention.self.query.weight");
    CHECK(memcmp(w->data, w0->data, damo_tensor_nbytes(w)) != 0); /* the f32 values are scale * q now */
    int64_t np = 0;
    float *dst = damo_bert_param_block(rounded, &np); /* before the copy reads np */
    memcpy(dst, damo_bert_param_block(q, NULL), (size_t)np * sizeof(float));
    CHECK(logits_of(rounded, lr, NULL) == DAMO_OK);
  }
  double scale = 0;
  for (int i = 0; i < n; i++) scale = fmax(scale, fabs(lf[i]));
  const double d_f32 = max_abs_diff(lq, lf, n), d_rounded = max_abs_diff(lq, lr, n);
  fprintf(stderr, "  int8 vs f32 logits: max |diff| %.4g (logits up to %.3g); vs f32 on the int8 weights %.4g\n", d_f32,
          scale, d_rounded);
  CHECK(d_f32 > 0 && d_f32 < 0.05 * scale + 1e-3);
  CHECK(d_rounded < 0.05 * scale + 1e-3);
  int agree = 0;
  for (int b = 0; b < B; b++) {
    int af = 0, aq = 0;
    for (int k = 1; k < L; k++) af = lf[b * L + k] > lf[b * L + af] ? k : af, aq = lq[b * L + k] > lq[b * L + aq] ? k : aq;
    agree += af == aq;
  }
  CHECK_MSG(agree >= B - 1, "%d of %d predictions agree", agree, B);

  /* saved and read back: the same int8 model */
  const char *dir = tmp_path("int8");
  CHECK_MSG(damo_bert_save(q, dir) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(damo_bert_load(dir, 0, 9, &back) == DAMO_OK, "%s", damo_last_error());
  if (back) {
    CHECK(damo_bert_is_quantized(back));
    CHECK(logits_of(back, lb, &products) == DAMO_OK && products == 6 * c->num_hidden_layers + 1);
    CHECK(memcmp(lb, lq, (size_t)n * sizeof(float)) == 0);
  }
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  damo_tensor_dict *d = NULL;
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  if (d) {
    const damo_tensor *w = damo_tensor_dict_get(d, "bert.encoder.layer.0.intermediate.dense.weight");
    const damo_tensor *s = damo_tensor_dict_get(d, "bert.encoder.layer.0.intermediate.dense.weight.scale");
    CHECK(w && w->dtype == DAMO_I8 && s && s->dtype == DAMO_F32 && s->shape[0] == w->shape[0]);
    CHECK(damo_tensor_dict_get(d, "classifier.weight")->dtype == DAMO_I8);
    CHECK(damo_tensor_dict_get(d, "bert.pooler.dense.weight")->dtype == DAMO_F32);
    CHECK(damo_tensor_dict_get(d, "bert.embeddings.word_embeddings.weight")->dtype == DAMO_I8); /* weight-only */
    CHECK(damo_tensor_dict_get(d, "bert.embeddings.LayerNorm.weight")->dtype == DAMO_F32);
    damo_tensor_dict_free(d);
  }

  /* refusals: twice, training, pre-training, dropout (the int8 graph has none left) */
  damo_bert_graph *bg = NULL;
  CHECK(damo_bert_classifier_new(q, B, T, 0, &bg) == DAMO_OK);
  CHECK(damo_bert_graph_forward(bg, B, ids, types, mask, NULL, 1, NULL) == DAMO_ERR_UNSUPPORTED);
  CHECK(strstr(damo_last_error(), "inference only") != NULL);
  damo_bert_graph_free(bg);
  bg = NULL;
  CHECK(damo_bert_quantize(q) == DAMO_ERR_INVALID_ARG && strstr(damo_last_error(), "already int8"));
  CHECK(damo_bert_classifier_new(q, B, T, 1, &bg) == DAMO_ERR_UNSUPPORTED && !bg);
  CHECK(strstr(damo_last_error(), "inference only") != NULL);
  CHECK(damo_bert_mlm_new(q, B, T, 2, &bg) == DAMO_ERR_UNSUPPORTED && !bg);
  damo_bert_free(rounded);
  damo_bert_free(back);
  damo_bert_free(q);
  damo_bert_free(f32);
}

/* Copies the saved int8 model in `from` to dir with one change: scale0 sets the first value
 * of NAME.scale (or of NAME itself, an F32 tensor), q0 that of NAME (I8 or I32), drop removes
 * a tensor, and no_quant writes the config without its "quantization" object. Returns what
 * damo_bert_load says of it. */
static damo_status load_variant(const char *from, const char *dir, const char *name, float scale0, int q0, int drop,
                                int no_quant, char *message, size_t cap) {
  mkdir(dir, 0755);
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", from);
  damo_tensor_dict *src = NULL, *out = damo_tensor_dict_new();
  CHECK(damo_safetensors_load(path, &src) == DAMO_OK);
  char scale_name[200];
  snprintf(scale_name, sizeof scale_name, "%s.scale", name);
  for (int k = 0; src && k < src->count; k++) {
    const damo_tensor *t = src->tensors[k];
    if (drop && !strcmp(src->names[k], name)) continue;
    damo_tensor *copy = damo_tensor_new(t->dtype, t->ndim, t->shape);
    memcpy(copy->data, t->data, damo_tensor_nbytes(t));
    const int named = !strcmp(src->names[k], name);
    if ((!strcmp(src->names[k], scale_name) || (named && t->dtype == DAMO_F32)) && scale0 != 1.0f)
      damo_tensor_f32(copy)[0] = scale0;
    if (named && t->dtype == DAMO_I8 && q0 != 0) ((int8_t *)copy->data)[0] = (int8_t)q0;
    if (named && t->dtype == DAMO_I32 && q0 != 0) damo_tensor_i32(copy)[0] = q0;
    damo_tensor_dict_add(out, src->names[k], copy);
  }
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(damo_safetensors_save(path, out, NULL, 0) == DAMO_OK);
  damo_tensor_dict_free(src);
  damo_tensor_dict_free(out);
  char cfg[8192];
  snprintf(path, sizeof path, "%s/config.json", from);
  FILE *f = fopen(path, "rb");
  size_t n = f ? fread(cfg, 1, sizeof cfg - 1, f) : 0;
  if (f) fclose(f);
  cfg[n] = 0;
  char *qpos = no_quant ? strstr(cfg, "\"quantization\"") : NULL;
  if (qpos) memcpy(qpos, "\"quantizatioX\"", 14); /* an unknown key: ignored as HuggingFace's are */
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_bytes(path, cfg, strlen(cfg));
  damo_bert *m = NULL;
  damo_status st = damo_bert_load(dir, 0, 1, &m);
  snprintf(message, cap, "%s", st == DAMO_OK ? "" : damo_last_error());
  damo_bert_free(m);
  return st;
}

static void test_bad_files(void) {
  damo_bert *q = NULL;
  CHECK(damo_bert_load(MODEL_DIR, 0, 1, &q) == DAMO_OK && damo_bert_quantize(q) == DAMO_OK);
  char from[512]; /* tmp_path's buffers rotate */
  snprintf(from, sizeof from, "%s", tmp_path("int8_src"));
  CHECK(q && damo_bert_save(q, from) == DAMO_OK);
  damo_bert_free(q);
#define VALUE_W "bert.encoder.layer.1.attention.self.value.weight"
  const char *w = VALUE_W;
  char msg[600];
  CHECK(load_variant(from, tmp_path("v0"), w, 1.0f, 0, 0, 0, msg, sizeof msg) == DAMO_OK); /* unchanged: loads */
  CHECK(load_variant(from, tmp_path("v1"), w, -0.5f, 0, 0, 0, msg, sizeof msg) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(msg, "value.weight.scale' 0 is -0.5"), "%s", msg);
  CHECK(load_variant(from, tmp_path("v2"), w, NAN, 0, 0, 0, msg, sizeof msg) == DAMO_ERR_FORMAT);
  CHECK(load_variant(from, tmp_path("v3"), w, 1.0f, -128, 0, 0, msg, sizeof msg) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(msg, "value 0 is -128"), "%s", msg);
  CHECK(load_variant(from, tmp_path("v4"), w, 1.0f, 0, 1, 0, msg, sizeof msg) == DAMO_ERR_FORMAT); /* stray scale */
  CHECK_MSG(strstr(msg, "value.weight.scale' is the scale of no int8 tensor"), "%s", msg);
  CHECK(load_variant(from, tmp_path("v5"), w, 1.0f, 0, 0, 1, msg, sizeof msg) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(msg, "is I8 but config.json has no \"quantization\""), "%s", msg);
  CHECK(load_variant(from, tmp_path("v6"), VALUE_W ".scale", 1.0f, 0, 1, 0, msg, sizeof msg) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(msg, "needs 'bert.encoder.layer.1.attention.self.value.weight.scale'"), "%s", msg);
}

/* Static int8: calibrated with minmax on the rows it then classifies, it stays close to f32
 * and differs from dynamic int8 (the ranges are the f32 model's, seen once); the classifier's
 * input range is exactly the f32 pooler's over those rows; the feed-forward's uint8 hand-over
 * gives the f32 hand-over's values bit for bit; histogram calibration stays close to f32; a
 * save and reload keeps every input quantisation; corrupt ones are refused. */
static void test_static(void) {
  damo_bert *f32 = NULL, *dyn = NULL, *st = NULL, *hist = NULL, *back = NULL;
  CHECK(damo_bert_load(MODEL_DIR, 0, 1, &f32) == DAMO_OK && damo_bert_load(MODEL_DIR, 0, 1, &dyn) == DAMO_OK &&
        damo_bert_load(MODEL_DIR, 0, 1, &st) == DAMO_OK && damo_bert_load(MODEL_DIR, 0, 1, &hist) == DAMO_OK);
  if (!f32 || !dyn || !st || !hist) return;
  const damo_bert_config *c = damo_bert_get_config(f32);
  make_inputs(c->vocab_size);
  const int L = c->num_labels, n = B * L, products = 6 * c->num_hidden_layers + 1;
  const damo_bert_examples e = {B, ids, types, mask, NULL};
  damo_quantize_options o = {.method = DAMO_CALIB_MINMAX, .batch_size = 3}; /* two batches: 3 rows, then 1 */
  float lf[64], ld[64], ls[64], lu[64], lh[64], lb[64];
  int got = -1;
  CHECK(logits_of(f32, lf, NULL) == DAMO_OK);
  CHECK(damo_bert_quantize(dyn) == DAMO_OK && logits_of(dyn, ld, NULL) == DAMO_OK);
  CHECK_MSG(damo_bert_quantize_static(st, &e, T, &o) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(logits_of(st, ls, &got) == DAMO_OK && got == products, "%s (%d products)", damo_last_error(), got);
  double scale = 0;
  for (int i = 0; i < n; i++) scale = fmax(scale, fabs(lf[i]));
  fprintf(stderr, "  static int8 (minmax) vs f32 logits: max |diff| %.4g, vs dynamic int8 %.4g (logits up to %.3g)\n",
          max_abs_diff(ls, lf, n), max_abs_diff(ls, ld, n), scale);
  CHECK(max_abs_diff(ls, lf, n) < 0.05 * scale + 1e-3 && memcmp(ls, ld, sizeof(float) * n) != 0);
  /* the classifier's input is the f32 pooler's output: its range over the 4 rows, exactly */
  damo_bert_graph *enc = NULL;
  float pooled[B * 64];
  CHECK(c->hidden_size <= 64 && damo_bert_encoder_new(f32, B, T, &enc) == DAMO_OK &&
        damo_bert_embed(enc, B, ids, types, mask, DAMO_BERT_POOL_CLS, pooled) == DAMO_OK);
  damo_bert_graph_free(enc);
  float lo = 0, hi = 0, want_scale;
  int want_zero;
  for (int i = 0; i < B * c->hidden_size; i++) lo = fminf(lo, pooled[i]), hi = fmaxf(hi, pooled[i]);
  damo_quant_params(lo, hi, &want_scale, &want_zero);
  char st_dir[512], path[600];
  snprintf(st_dir, sizeof st_dir, "%s", tmp_path("static_minmax"));
  snprintf(path, sizeof path, "%s/model.safetensors", st_dir);
  damo_tensor_dict *d = NULL;
  CHECK(damo_bert_save(st, st_dir) == DAMO_OK && damo_safetensors_load(path, &d) == DAMO_OK);
  const damo_tensor *cs = d ? damo_tensor_dict_get(d, "classifier.input_scale") : NULL;
  const damo_tensor *cz = d ? damo_tensor_dict_get(d, "classifier.input_zero_point") : NULL;
  CHECK_MSG(cs && cz && damo_tensor_f32(cs)[0] == want_scale && damo_tensor_i32(cz)[0] == want_zero,
            "classifier input: scale %g zero point %d, the pooler's range gives %g and %d", cs ? damo_tensor_f32(cs)[0] : 0,
            cz ? damo_tensor_i32(cz)[0] : -1, want_scale, want_zero);
  damo_tensor_dict_free(d);
  d = NULL;
  setenv("DAMO_INT8_CHAIN", "0", 1); /* f32 hand-overs: the same values */
  CHECK(logits_of(st, lu, NULL) == DAMO_OK);
  unsetenv("DAMO_INT8_CHAIN");
  CHECK(memcmp(lu, ls, sizeof(float) * n) == 0);

  o = (damo_quantize_options){.method = DAMO_CALIB_HISTOGRAM};
  CHECK_MSG(damo_bert_quantize_static(hist, &e, T, &o) == DAMO_OK, "%s", damo_last_error());
  CHECK(logits_of(hist, lh, NULL) == DAMO_OK);
  fprintf(stderr, "  static int8 (histogram) vs f32 logits: max |diff| %.4g (logits up to %.3g)\n",
          max_abs_diff(lh, lf, n), scale);
  CHECK(max_abs_diff(lh, lf, n) < 0.05 * scale + 1e-3 && memcmp(lh, ls, sizeof(float) * n) != 0);

  /* saved and read back: the same static model */
  char dir[512];
  snprintf(dir, sizeof dir, "%s", tmp_path("static"));
  CHECK_MSG(damo_bert_save(hist, dir) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(damo_bert_load(dir, 0, 9, &back) == DAMO_OK, "%s", damo_last_error());
  CHECK(back && logits_of(back, lb, &got) == DAMO_OK && got == products && !memcmp(lb, lh, sizeof(float) * n));
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  CHECK(damo_safetensors_load(path, &d) == DAMO_OK);
  if (d) {
    const damo_tensor *xs = damo_tensor_dict_get(d, "bert.encoder.layer.0.output.dense.input_scale");
    const damo_tensor *xz = damo_tensor_dict_get(d, "bert.encoder.layer.0.output.dense.input_zero_point");
    CHECK(xs && xs->dtype == DAMO_F32 && xs->shape[0] == 1 && damo_tensor_f32(xs)[0] > 0);
    CHECK(xz && xz->dtype == DAMO_I32 && damo_tensor_i32(xz)[0] >= 0 && damo_tensor_i32(xz)[0] <= 255);
    CHECK(damo_tensor_dict_get(d, "classifier.input_scale") && !damo_tensor_dict_get(d, "bert.pooler.dense.input_scale"));
    damo_tensor_dict_free(d);
  }
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *f = fopen(path, "rb");
  char cfg[8192] = {0};
  if (f) {
    if (fread(cfg, 1, sizeof cfg - 1, f) == 0) cfg[0] = 0;
    fclose(f);
  }
  CHECK_MSG(strstr(cfg, "\"static\"") && strstr(cfg, "\"histogram\"") && strstr(cfg, "\"calibration_examples\":\t4"),
            "%s", cfg);

  /* corrupt input quantisations */
#define INPUT_OF "bert.encoder.layer.1.intermediate.dense.input_"
  char msg[600];
  CHECK(load_variant(dir, tmp_path("s0"), INPUT_OF "scale", 1.0f, 0, 0, 0, msg, sizeof msg) == DAMO_OK);
  CHECK(load_variant(dir, tmp_path("s1"), INPUT_OF "scale", -2.0f, 0, 0, 0, msg, sizeof msg) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(msg, "intermediate.dense.input_scale' has scale -2"), "%s", msg);
  CHECK(load_variant(dir, tmp_path("s2"), INPUT_OF "zero_point", 1.0f, 300, 0, 0, msg, sizeof msg) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(msg, "zero point 300"), "%s", msg);
  CHECK(load_variant(dir, tmp_path("s3"), INPUT_OF "scale", 1.0f, 0, 1, 0, msg, sizeof msg) == DAMO_ERR_FORMAT);
  CHECK_MSG(strstr(msg, "static int8 tensor 'bert.encoder.layer.1.intermediate.dense.weight' needs"), "%s", msg);
  /* a dynamic model's file with a static product's tensors in it */
  char dyn_dir[512];
  snprintf(dyn_dir, sizeof dyn_dir, "%s", tmp_path("dyn"));
  CHECK(damo_bert_save(dyn, dyn_dir) == DAMO_OK);
  snprintf(path, sizeof path, "%s/config.json", dir);
  char dyn_cfg[600];
  snprintf(dyn_cfg, sizeof dyn_cfg, "%s/config.json", dyn_dir);
  f = fopen(dyn_cfg, "rb");
  char text[8192] = {0};
  size_t len = f ? fread(text, 1, sizeof text - 1, f) : 0;
  if (f) fclose(f);
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_bytes(path, text, len); /* the static weights under a dynamic config */
  damo_bert *bad = NULL;
  CHECK(damo_bert_load(dir, 0, 1, &bad) == DAMO_ERR_FORMAT && !bad);
  CHECK_MSG(strstr(damo_last_error(), "is the input quantisation of no int8 tensor of a static int8 model"), "%s",
            damo_last_error());

  /* refusals */
  CHECK(damo_bert_quantize_static(st, &e, T, &o) == DAMO_ERR_INVALID_ARG && strstr(damo_last_error(), "already int8"));
  damo_quantize_options bad_p = {.method = DAMO_CALIB_PERCENTILE, .percentile = 30};
  CHECK(damo_bert_quantize_static(f32, &e, T, &bad_p) == DAMO_ERR_INVALID_ARG && strstr(damo_last_error(), "(50, 100]"));
  CHECK(damo_bert_quantize_static(f32, &e, c->max_position_embeddings + 1, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK(!damo_bert_is_quantized(f32));
  damo_bert_free(back);
  damo_bert_free(hist);
  damo_bert_free(st);
  damo_bert_free(dyn);
  damo_bert_free(f32);
}

/* Reads dir's config.json into buf (NUL-terminated); 0 when it cannot. */
static int read_config(const char *dir, char *buf, size_t cap) {
  char path[600];
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  size_t n = fread(buf, 1, cap - 1, f);
  fclose(f);
  buf[n] = 0;
  return 1;
}

/* Attention's products: bf16 operands by default in an int8 model, f32 with attention_f32.
 * The two models differ (the setting reaches the graph) but stay close; each saves what it
 * used and reads back bit for bit; a directory without "attention" (written before it was) is
 * f32; an unknown precision is refused naming the key. */
static void test_attention_precision(void) {
  damo_bert *bf = NULL, *f = NULL, *back = NULL;
  CHECK(damo_bert_load(MODEL_DIR, 0, 1, &bf) == DAMO_OK && damo_bert_load(MODEL_DIR, 0, 1, &f) == DAMO_OK);
  if (!bf || !f) return;
  const damo_bert_config *c = damo_bert_get_config(bf);
  make_inputs(c->vocab_size);
  const int n = B * c->num_labels;
  float lbf[64], lf[64], lback[64];
  const damo_quantize_options keep_f32 = {.dynamic = 1, .attention_f32 = 1};
  CHECK(damo_bert_quantize(bf) == DAMO_OK && damo_bert_quantize_static(f, NULL, T, &keep_f32) == DAMO_OK);
  CHECK(logits_of(bf, lbf, NULL) == DAMO_OK && logits_of(f, lf, NULL) == DAMO_OK);
  double scale = 0;
  for (int i = 0; i < n; i++) scale = fmax(scale, fabs(lf[i]));
  const double d = max_abs_diff(lbf, lf, n);
  fprintf(stderr, "  int8 logits, bf16 vs f32 attention products: max |diff| %.3g (logits up to %.3g)\n", d, scale);
  CHECK(d > 0 && d < 0.05 * scale); /* the bound int8 weights are held to (test_quantize_and_reload) */

  char dir_bf[512], dir_f[512], cfg[8192], msg[600];
  snprintf(dir_bf, sizeof dir_bf, "%s", tmp_path("att_bf16"));
  snprintf(dir_f, sizeof dir_f, "%s", tmp_path("att_f32"));
  CHECK(damo_bert_save(bf, dir_bf) == DAMO_OK && damo_bert_save(f, dir_f) == DAMO_OK);
  CHECK(read_config(dir_bf, cfg, sizeof cfg) && strstr(cfg, "\"attention\":\t\"bf16\""));
  CHECK(read_config(dir_f, cfg, sizeof cfg) && !strstr(cfg, "\"attention\":"));
  CHECK(damo_bert_load(dir_f, 0, 1, &back) == DAMO_OK && logits_of(back, lback, NULL) == DAMO_OK);
  CHECK(memcmp(lback, lf, (size_t)n * sizeof(float)) == 0);
  damo_bert_free(back);
  back = NULL;
  CHECK(damo_bert_load(dir_bf, 0, 1, &back) == DAMO_OK && logits_of(back, lback, NULL) == DAMO_OK);
  CHECK(memcmp(lback, lbf, (size_t)n * sizeof(float)) == 0);

  /* "attention": "bf16" edited to "fp16" */
  CHECK(read_config(dir_bf, cfg, sizeof cfg));
  char *at = strstr(cfg, "\"bf16\"");
  if (at) memcpy(at, "\"fp16\"", 6);
  char path[600];
  snprintf(path, sizeof path, "%s/config.json", dir_bf);
  write_bytes(path, cfg, strlen(cfg));
  damo_bert_free(back);
  back = NULL;
  CHECK(damo_bert_load(dir_bf, 0, 1, &back) == DAMO_ERR_FORMAT && !back);
  snprintf(msg, sizeof msg, "%s", damo_last_error());
  CHECK_MSG(strstr(msg, "\"quantization\".\"attention\"") && strstr(msg, "fp16"), "%s", msg);
  damo_bert_free(bf);
  damo_bert_free(f);
}

/* damo quantize on a BERT directory: one directory save of the int8 model; bad options and
 * its own directory as --out are refused before anything is written. */
static void test_cli(void) {
  char out[512];
  snprintf(out, sizeof out, "%s", tmp_path("cli_int8"));
  CHECK_MSG(run("%s quantize --model %s --out %s --dynamic", DAMO_CLI_PATH, MODEL_DIR, out) == 0, "%s", cli_out);
  CHECK_MSG(strstr(cli_out, "dynamic int8, 13 products") && strstr(cli_out, "model.safetensors:") &&
                strstr(cli_out, "attention's products with bf16 operands"),
            "%s", cli_out);
  damo_bert *m = NULL;
  CHECK(damo_bert_load(out, 0, 1, &m) == DAMO_OK && damo_bert_is_quantized(m));
  damo_bert_free(m);
  CHECK(run("%s quantize --model %s --out %s --dynamic", DAMO_CLI_PATH, out, tmp_path("twice")) == 1);
  CHECK_MSG(strstr(cli_out, "already int8"), "%s", cli_out);
  /* static needs calibration mails; --dynamic takes no calibration options */
  CHECK(run("%s quantize --model %s --out %s", DAMO_CLI_PATH, MODEL_DIR, tmp_path("m")) == 2);
  CHECK_MSG(strstr(cli_out, "calibration needs --data SPEC"), "%s", cli_out);
  CHECK(run("%s quantize --model %s --out %s --dynamic --method minmax", DAMO_CLI_PATH, MODEL_DIR, tmp_path("m")) == 2);
  CHECK_MSG(strstr(cli_out, "--method and --calibration do not apply"), "%s", cli_out);
  CHECK(run("%s quantize --model %s --out %s --format q8_0 --dynamic", DAMO_CLI_PATH, MODEL_DIR, tmp_path("m")) == 2);
  CHECK_MSG(strstr(cli_out, "--format is an option for a GPT-2 model, and this one is BERT"), "%s", cli_out);
  CHECK(run("%s quantize --model %s --out %s --dynamic --evaluate", DAMO_CLI_PATH, MODEL_DIR, tmp_path("e")) == 2);
  CHECK(run("%s quantize --model %s --out %s --dynamic --attention fp16", DAMO_CLI_PATH, MODEL_DIR, tmp_path("e")) == 2);
  CHECK_MSG(strstr(cli_out, "--attention is bf16 or f32, not 'fp16'"), "%s", cli_out);
  CHECK(run("%s quantize --model %s --out %s --dynamic", DAMO_CLI_PATH, MODEL_DIR, MODEL_DIR) == 2);
  CHECK_MSG(strstr(cli_out, "the model's own directory"), "%s", cli_out);
  CHECK(access(tmp_path("m"), F_OK) != 0 && access(tmp_path("e"), F_OK) != 0);
}

int main(void) {
  tmpdir_template("bert_int8");
  if (!mkdtemp(tmpdir)) {
    fprintf(stderr, "test_bert_int8: cannot create a temp dir\n");
    return 1;
  }
  RUN(test_quantize_and_reload);
  RUN(test_bad_files);
  RUN(test_static);
  RUN(test_attention_precision);
  RUN(test_cli);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "test_bert_int8: could not remove %s\n", tmpdir);
  return test_summary("bert_int8");
}
