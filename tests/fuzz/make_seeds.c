/* make_seeds.c - writes the generated part of the seed corpora under tests/fuzz/corpus
 * (model directories, safetensors, IDX, pictures, vocabularies) with damo's own writers, so
 * every seed is a valid file of today's formats; near-valid variants are cut or edited from
 * them. The seeds copied from tests/fixtures or written by hand are added by
 * scripts/fuzz_seeds.sh, which builds and runs this program (the fuzz build's
 * fuzz_make_seeds). usage: fuzz_make_seeds CORPUS_DIR */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_targets.h"

#include <damo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include <stb/stb_image_write.h>

static const char *root;

static void die(const char *what) {
  fprintf(stderr, "make_seeds: %s: %s\n", what, damo_last_error());
  exit(1);
}

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) die(path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)len + 1);
  if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) die(path);
  fclose(f);
  *n = (size_t)len;
  return buf;
}

static void put(const char *reader, const char *name, const void *data, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", root, reader);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/%s/%s", root, reader, name);
  FILE *f = fopen(path, "wb");
  if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f)) die(path);
}

/* Two files of a model directory as one input (FUZZ_SPLIT between them). */
static void put_dir2(const char *reader, const char *name, const char *dir, const char *first, const char *second) {
  char p1[1024], p2[1024];
  snprintf(p1, sizeof p1, "%s/%s", dir, first);
  snprintf(p2, sizeof p2, "%s/%s", dir, second);
  size_t n1, n2, ns = strlen(FUZZ_SPLIT);
  char *a = slurp(p1, &n1), *b = slurp(p2, &n2), *all = malloc(n1 + ns + n2);
  memcpy(all, a, n1);
  memcpy(all + n1, FUZZ_SPLIT, ns);
  memcpy(all + n1 + ns, b, n2);
  put(reader, name, all, n1 + ns + n2);
  /* near-valid: the weights cut short */
  char cut[256];
  snprintf(cut, sizeof cut, "%s-truncated", name);
  put(reader, cut, all, n1 + ns + n2 / 2);
  free(a), free(b), free(all);
}

static void seq_seed(const char *tmp, const char *name, const char *config) {
  damo_model *m = NULL;
  if (damo_model_from_config_json(config, name, &m) != DAMO_OK || damo_model_build(m, 1) != DAMO_OK ||
      damo_model_save(m, tmp) != DAMO_OK)
    die(name);
  damo_model_free(m);
  put_dir2("seqdir", name, tmp, "config.json", "model.safetensors");
  put("config", name, config, strlen(config));
}

/* Sparse kernels (a pruned model's form): a dense layer whose kernel is all zeros (a mask of
 * 30 bits, no values) beside a dense one. */
static void sparse_seed(const char *tmp) {
  seq_seed(tmp, "mlp-sparse", "{\"input_shape\": [6], \"layers\": [{\"type\": \"dense\", \"units\": 5, "
                              "\"kernel_initializer\": \"zeros\"}, {\"type\": \"dense\", \"units\": 3}]}");
}

/* An int8 model (damo quantize's directory): I8 kernels with their scales and zero points. */
static void quantized_seed(const char *tmp) {
  const char *config = "{\"input_shape\": [6, 6, 1], \"layers\": [{\"type\": \"conv2d\", \"filters\": 2, \"kernel_size\": 3, "
                       "\"activation\": \"relu\"}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 3}]}";
  damo_model *m = NULL;
  const int64_t shape[4] = {8, 6, 6, 1};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 4, shape);
  for (int64_t i = 0; x && i < damo_tensor_numel(x); i++) damo_tensor_f32(x)[i] = (float)(i % 13) - 4.0f;
  damo_quantize_options o = {.method = DAMO_CALIB_HISTOGRAM};
  if (!x || damo_model_from_config_json(config, "int8", &m) != DAMO_OK || damo_model_build(m, 1) != DAMO_OK ||
      damo_model_quantize(m, x, &o) != DAMO_OK || damo_model_save(m, tmp) != DAMO_OK)
    die("int8");
  damo_model_free(m);
  damo_tensor_free(x);
  put_dir2("seqdir", "cnn-int8", tmp, "config.json", "model.safetensors");
}

/* An int8 text model: an int8 embedding table (per-row scales), a bidirectional LSTM with
 * int8 kernels and recurrent kernels (per-column scales), an int8 dense. */
static void quantized_rnn_seed(const char *tmp) {
  const char *config = "{\"input_shape\": [5], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 9, "
                       "\"output_dim\": 3, \"mask_zero\": true}, {\"type\": \"bidirectional\", \"layer\": "
                       "{\"type\": \"lstm\", \"units\": 2}}, {\"type\": \"dense\", \"units\": 1, \"activation\": \"sigmoid\"}]}";
  damo_model *m = NULL;
  damo_quantize_options o = {.dynamic = 1};
  if (damo_model_from_config_json(config, "rnn-int8", &m) != DAMO_OK || damo_model_build(m, 1) != DAMO_OK ||
      damo_model_quantize(m, NULL, &o) != DAMO_OK || damo_model_save(m, tmp) != DAMO_OK)
    die("rnn int8");
  damo_model_free(m);
  put_dir2("seqdir", "rnn-int8", tmp, "config.json", "model.safetensors");
}

static void model_dirs(const char *tmp) {
  quantized_seed(tmp);
  quantized_rnn_seed(tmp);
  seq_seed(tmp, "mlp", "{\"format\": \"damo.sequential\", \"input_shape\": [2, 3], \"layers\": [{\"type\": \"flatten\"}, "
                       "{\"type\": \"dense\", \"units\": 3, \"activation\": \"relu\"}, {\"type\": \"dropout\", \"rate\": 0.2}, "
                       "{\"type\": \"dense\", \"units\": 2}], \"loss\": \"sparse_categorical_crossentropy\", "
                       "\"optimizer\": {\"type\": \"adam\", \"learning_rate\": 0.001, \"schedule\": {\"type\": \"cosine\"}}, "
                       "\"metrics\": [\"accuracy\"], \"class_names\": [\"a\", \"b\"], \"fit\": {\"epochs\": 2, \"batch_size\": 4, \"seed\": 1}}");
  seq_seed(tmp, "cnn", "{\"input_shape\": [6, 6, 1], \"layers\": [{\"type\": \"rescaling\", \"scale\": 0.0039}, "
                       "{\"type\": \"conv2d\", \"filters\": 2, \"kernel_size\": 3, \"padding\": \"same\", \"activation\": \"relu\"}, "
                       "{\"type\": \"batch_normalization\"}, {\"type\": \"max_pooling2d\", \"pool_size\": 2}, "
                       "{\"type\": \"global_average_pooling2d\"}, {\"type\": \"dense\", \"units\": 3, \"activation\": \"softmax\"}], "
                       "\"fit\": {\"augment\": {\"flip_prob\": 0.5, \"max_shift\": 1, \"zoom\": [0.9, 1.1], \"erase_prob\": 0.2}}}");
  seq_seed(tmp, "rnn", "{\"input_shape\": [5], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 7, \"output_dim\": 3, "
                       "\"mask_zero\": true}, {\"type\": \"bidirectional\", \"layer\": {\"type\": \"lstm\", \"units\": 2, "
                       "\"return_sequences\": true}}, {\"type\": \"gru\", \"units\": 2}, {\"type\": \"dense\", \"units\": 1, "
                       "\"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\", \"optimizer\": {\"type\": \"sgd\", "
                       "\"learning_rate\": 0.1, \"momentum\": 0.9, \"nesterov\": true, \"clipnorm\": 1.0}, "
                       "\"metrics\": [\"accuracy\", \"precision\", \"recall\", \"f1\", \"auc\"], \"fit\": {\"early_stopping\": "
                       "{\"monitor\": \"val_loss\", \"patience\": 2, \"restore_best_weights\": true}}}");
  seq_seed(tmp, "functional", "{\"format\": \"damo.functional\", \"inputs\": [{\"name\": \"a\", \"shape\": [4]}, "
                              "{\"name\": \"b\", \"shape\": [4]}], \"layers\": [{\"type\": \"add\", \"name\": \"s\", "
                              "\"inputs\": [\"d\", \"d_b\"]}, {\"type\": \"dense\", \"name\": \"d\", \"units\": 3, "
                              "\"inputs\": [\"a\"]}, {\"shared\": \"d\", \"name\": \"d_b\", \"inputs\": [\"b\"]}, "
                              "{\"type\": \"concatenate\", \"name\": \"c\", \"axis\": -1, \"inputs\": [\"s\", \"d\"]}, "
                              "{\"type\": \"multiply\", \"name\": \"m\", \"inputs\": [\"c\", \"c\"]}, "
                              "{\"type\": \"average\", \"name\": \"v\", \"inputs\": [\"m\", \"c\"]}, "
                              "{\"type\": \"subtract\", \"name\": \"out\", \"inputs\": [\"v\", \"m\"]}], "
                              "\"outputs\": [\"out\"], \"loss\": \"mse\"}");
  seq_seed(tmp, "pool1d", "{\"input_shape\": [4, 3], \"layers\": [{\"type\": \"reshape\", \"target_shape\": [2, 6]}, "
                          "{\"type\": \"global_max_pooling1d\"}, {\"type\": \"activation\", \"activation\": \"tanh\"}, "
                          "{\"type\": \"dense\", \"units\": 1, \"kernel_initializer\": \"he_normal\", \"use_bias\": false}], "
                          "\"loss\": \"mse\", \"optimizer\": {\"type\": \"adamw\", \"weight_decay\": 0.01}}");

  sparse_seed(tmp);
  damo_gpt2_config gc = {1, 2, 8, 8, 16, 1e-5f};
  damo_gpt2 *g = NULL;
  if (damo_gpt2_new(&gc, 1, &g) != DAMO_OK || damo_gpt2_save(g, tmp) != DAMO_OK) die("gpt2");
  damo_gpt2_free(g);
  put_dir2("gpt2dir", "gpt2_l1_c8", tmp, "config.json", "model.safetensors");
  damo_gpt2_config qc = {1, 2, 32, 4, 8, 1e-5f}; /* n_embd 32: one block a row */
  if (damo_gpt2_new(&qc, 1, &g) != DAMO_OK || damo_gpt2_quantize(g, DAMO_BLOCKS_Q4_0) != DAMO_OK ||
      damo_gpt2_save(g, tmp) != DAMO_OK)
    die("gpt2 q4_0");
  damo_gpt2_free(g);
  put_dir2("gpt2dir", "gpt2_l1_c32_q4_0", tmp, "config.json", "model.safetensors");
  if (damo_gpt2_new(&gc, 1, &g) != DAMO_OK || damo_gpt2_quantize_int8(g) != DAMO_OK || damo_gpt2_save(g, tmp) != DAMO_OK)
    die("gpt2 int8");
  damo_gpt2_free(g);
  put_dir2("gpt2dir", "gpt2_l1_c8_int8", tmp, "config.json", "model.safetensors");
  const int32_t tokens[16] = {1, 5, 9, 2, 7, 3, 11, 4, 0, 6, 13, 8, 15, 10, 12, 14};
  const damo_quantize_options minmax = {.method = DAMO_CALIB_MINMAX};
  if (damo_gpt2_new(&gc, 1, &g) != DAMO_OK || damo_gpt2_quantize_int8_static(g, tokens, 16, 8, &minmax) != DAMO_OK ||
      damo_gpt2_save(g, tmp) != DAMO_OK)
    die("gpt2 static int8");
  damo_gpt2_free(g);
  put_dir2("gpt2dir", "gpt2_l1_c8_int8_static", tmp, "config.json", "model.safetensors");

  damo_bert_config bc = damo_bert_config_default();
  bc.vocab_size = 12, bc.hidden_size = 8, bc.num_hidden_layers = 1, bc.num_attention_heads = 2;
  bc.intermediate_size = 16, bc.max_position_embeddings = 8, bc.num_labels = 2;
  damo_bert *b = NULL;
  if (damo_bert_new(&bc, 1, &b) != DAMO_OK || damo_bert_save(b, tmp) != DAMO_OK) die("bert");
  put_dir2("bertdir", "bert_l1_h8", tmp, "config.json", "model.safetensors");
  damo_bert *bs = NULL; /* the same weights, static int8 */
  const int32_t ids[8] = {2, 5, 7, 9, 3, 0, 0, 0}, types[8] = {0}, mask[8] = {1, 1, 1, 1, 1, 0, 0, 0};
  const damo_bert_examples calib = {1, ids, types, mask, NULL};
  if (damo_bert_new(&bc, 1, &bs) != DAMO_OK || damo_bert_quantize_static(bs, &calib, 8, &minmax) != DAMO_OK ||
      damo_bert_save(bs, tmp) != DAMO_OK)
    die("bert static int8");
  damo_bert_free(bs);
  put_dir2("bertdir", "bert_l1_h8_int8_static", tmp, "config.json", "model.safetensors");
  if (damo_bert_quantize(b) != DAMO_OK || damo_bert_save(b, tmp) != DAMO_OK) die("bert int8");
  damo_bert_free(b);
  put_dir2("bertdir", "bert_l1_h8_int8", tmp, "config.json", "model.safetensors");
}

/* A training checkpoint of the checkpoint target's tiny run, and a cut copy. */
static void checkpoint_seeds(const char *tmp) {
  char path[1024];
  snprintf(path, sizeof path, "%s/trainer_state.safetensors", tmp);
  if (fuzz_checkpoint_seed(path) != 0) die(path);
  size_t n;
  char *bytes = slurp(path, &n);
  put("checkpoint", "tiny_run", bytes, n);
  put("checkpoint", "truncated", bytes, n - 7);
  free(bytes);
}

/* The federated.json of the federated target's finished tiny run, and a cut copy. */
static void federated_seeds(const char *tmp) {
  char dir[1024], path[1100];
  snprintf(dir, sizeof dir, "%s/fed", tmp);
  if (fuzz_federated_seed(dir) != 0) die(dir);
  snprintf(path, sizeof path, "%s/federated.json", dir);
  size_t n;
  char *bytes = slurp(path, &n);
  put("federated", "tiny_run", bytes, n);
  put("federated", "truncated", bytes, n / 2);
  free(bytes);
}

static void safetensors_seeds(const char *tmp) {
  damo_tensor_dict *d = damo_tensor_dict_new();
  int64_t s2[2] = {2, 3}, s1[1] = {4}, s0[1] = {0};
  damo_tensor *a = damo_tensor_new(DAMO_F32, 2, s2), *i = damo_tensor_new(DAMO_I32, 1, s1),
              *u = damo_tensor_new(DAMO_U8, 1, s1), *e = damo_tensor_new(DAMO_F32, 1, s0);
  for (int k = 0; k < 6; k++) damo_tensor_f32(a)[k] = (float)k - 2.5f;
  for (int k = 0; k < 4; k++) damo_tensor_i32(i)[k] = k * 1000 - 1;
  if (!d || !a || !i || !u || !e || damo_tensor_dict_add(d, "w", a) || damo_tensor_dict_add(d, "ids", i) ||
      damo_tensor_dict_add(d, "u", u) || damo_tensor_dict_add(d, "empty", e))
    die("dict");
  char path[1024];
  snprintf(path, sizeof path, "%s/x.safetensors", tmp);
  const char *meta[] = {"format", "pt"};
  if (damo_safetensors_save(path, d, meta, 1) != DAMO_OK) die(path);
  damo_tensor_dict_free(d);
  size_t n;
  char *bytes = slurp(path, &n);
  put("safetensors", "f32_i32_u8_empty", bytes, n);
  put("safetensors", "truncated", bytes, n - 5);
  free(bytes);
  /* Hand-written headers for the dtypes converted on load (F16, BF16, F64, I64, BOOL). */
  static const char *const hand[][2] = {
      {"f16_bf16", "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                   "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]}}"},
      {"f64_i64", "{\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                  "\"l\":{\"dtype\":\"I64\",\"shape\":[1,1],\"data_offsets\":[8,16]},\"__metadata__\":{\"k\":\"v\"}}"},
      {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}"},
      {"bool_i8", "{\"t\":{\"dtype\":\"BOOL\",\"shape\":[8],\"data_offsets\":[0,8]},"
                  "\"i\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[8,16]}}"},
  };
  for (size_t k = 0; k < sizeof hand / sizeof hand[0]; k++) {
    size_t h = strlen(hand[k][1]);
    unsigned char buf[512] = {0};
    for (int b = 0; b < 8; b++) buf[b] = (unsigned char)((uint64_t)h >> (8 * b));
    memcpy(buf + 8, hand[k][1], h);
    for (int b = 0; b < 16; b++) buf[8 + h + b] = (unsigned char)(0x3C + 7 * b);
    put("safetensors", hand[k][0], buf, 8 + h + 16);
  }
}

static void put_idx(const char *name, int type, int ndim, const int *dims, int elem) {
  unsigned char buf[1024];
  size_t n = 0, count = 1;
  buf[n++] = 0, buf[n++] = 0, buf[n++] = (unsigned char)type, buf[n++] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++, n += 4) {
    buf[n] = 0, buf[n + 1] = 0, buf[n + 2] = (unsigned char)(dims[i] >> 8), buf[n + 3] = (unsigned char)dims[i];
    count *= (size_t)dims[i];
  }
  for (size_t i = 0; i < count * (size_t)elem; i++) buf[n++] = (unsigned char)(i * 37 + 11);
  put("idx", name, buf, n);
  /* the same, gzip-compressed (as Fashion-MNIST is shipped) */
  char gzname[256], path[1024];
  snprintf(gzname, sizeof gzname, "%s.gz", name);
  snprintf(path, sizeof path, "%s/idx/%s", root, gzname);
  gzFile gz = gzopen(path, "wb9");
  if (!gz || gzwrite(gz, buf, (unsigned)n) != (int)n || gzclose(gz) != Z_OK) die(path);
}

static void idx_seeds(void) {
  int img[3] = {2, 3, 3}, lab[1] = {5}, mat[2] = {2, 2};
  put_idx("images-idx3-ubyte", 0x08, 3, img, 1);
  put_idx("labels-idx1-ubyte", 0x08, 1, lab, 1);
  put_idx("float-idx2", 0x0D, 2, mat, 4);
  put_idx("int-idx2", 0x0C, 2, mat, 4);
  put_idx("short-idx1", 0x0B, 1, lab, 2);
  put_idx("double-idx1", 0x0E, 1, lab, 8);
}

static void sink(void *ctx, void *data, int size) {
  const char *name = ctx;
  put("image", name, data, (size_t)size);
}

static void image_seeds(void) {
  unsigned char px[4 * 6 * 4];
  for (int i = 0; i < (int)sizeof px; i++) px[i] = (unsigned char)(i * 29 + (i % 4) * 60);
  stbi_write_png_to_func(sink, "grey.png", 4, 6, 1, px, 4);
  stbi_write_png_to_func(sink, "rgb.png", 6, 4, 3, px, 18);
  stbi_write_png_to_func(sink, "rgba.png", 4, 4, 4, px, 16);
  stbi_write_png_to_func(sink, "grey_alpha.png", 3, 3, 2, px, 6);
  stbi_write_bmp_to_func(sink, "rgb.bmp", 4, 3, 3, px);
  stbi_write_tga_to_func(sink, "rgba.tga", 3, 3, 4, px);
  stbi_write_jpg_to_func(sink, "rgb.jpg", 8, 8, 3, px, 80);
  stbi_write_jpg_to_func(sink, "grey.jpg", 4, 6, 1, px, 50);
  stbi_write_hdr_to_func(sink, "rgb.hdr", 2, 2, 3, (const float[]){0.1f, 0.5f, 1, 2, 0, 0.25f, 3, 1, 0.5f, 0, 0, 1});
  static const char pgm[] = "P5\n3 2\n255\n\x00\x40\x80\xc0\xff\x10";
  put("image", "grey.pgm", pgm, sizeof pgm - 1);
  static const char ppm[] = "P6 2 1 255 \xff\x00\x00\x00\xff\x00";
  put("image", "rgb.ppm", ppm, sizeof ppm - 1);
  /* a 2x2 GIF: header, logical screen with a 2-colour table, one image, LZW min size 2 */
  static const unsigned char gif[] = {'G', 'I', 'F', '8', '9', 'a', 2, 0, 2, 0, 0x80, 0, 0, 0, 0, 0, 255, 255, 255,
                                      0x2C, 0, 0, 0, 0, 2, 0, 2, 0, 0, 2, 3, 0x84, 0x1D, 0x05, 0, 0x3B};
  put("image", "bw.gif", gif, sizeof gif);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  root = argv[1];
  mkdir(root, 0755);
  char tmp[] = "/tmp/damo_seeds_XXXXXX";
  if (!mkdtemp(tmp)) die("mkdtemp");
  model_dirs(tmp);
  safetensors_seeds(tmp);
  checkpoint_seeds(tmp);
  federated_seeds(tmp);
  idx_seeds();
  image_seeds();
  /* the built-in vocabularies of the two encoding targets, as vocabulary seeds */
  put_dir2("bpe_vocab", "small", fuzz_builtin_dir("bpe"), "encoder.json", "vocab.bpe");
  char path[1024];
  snprintf(path, sizeof path, "%s/vocab.txt", fuzz_builtin_dir("wordpiece"));
  size_t n;
  char *txt = slurp(path, &n);
  put("wordpiece_vocab", "small.txt", txt, n);
  free(txt);
  printf("make_seeds: wrote the generated seeds under %s (scratch %s)\n", root, tmp);
  return 0;
}
