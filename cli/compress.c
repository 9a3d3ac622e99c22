/* compress.c - damo quantize: a saved f32 model into an int8 directory beside it, calibrated
 * on the training split of --data (or --dynamic: each batch's own range, what a text model
 * takes), with the accuracy (and a two-class model's F1) both score on the test split
 * (--evaluate) and the sizes of the two weight files. */
#include "bert_text.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static long long file_bytes(const char *dir) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* --out naming --model's own directory (the same file, whatever the path): refused with a
 * message, before anything is loaded or written. */
static int out_is_model_dir(const char *dir, const char *out) {
  struct stat a, b;
  if (stat(dir, &a) != 0 || stat(out, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) return 0;
  fprintf(stderr, "damo quantize: --out is the model's own directory; write the quantised model beside it\n");
  return 1;
}

/* Copies a text model's vocabulary and settings (what predict needs for raw mail), if any. */
static int copy_if_present(const char *from_dir, const char *to_dir, const char *file) {
  char from[4096], to[4096];
  snprintf(from, sizeof from, "%s/%s", from_dir, file);
  snprintf(to, sizeof to, "%s/%s", to_dir, file);
  size_t len;
  char *text = cli_read_file(from, &len);
  if (!text) return 1;
  damo_status st = damo_write_file_atomic(to, text, len);
  free(text);
  return st == DAMO_OK;
}

static const char *const method_names[] = {"minmax", "percentile", "histogram"}; /* by damo_calibration */

static int parse_options(int argc, char **argv, damo_quantize_options *o) {
  const char *method = cli_opt(argc, argv, "--method");
  const char *const *names = method_names;
  o->method = DAMO_CALIB_HISTOGRAM;
  if (method) {
    int found = 0;
    for (int k = 0; k < 3; k++)
      if (!strcmp(method, names[k])) o->method = (damo_calibration)k, found = 1;
    if (!found) {
      fprintf(stderr, "damo quantize: --method is minmax, percentile or histogram, not '%s'\n", method);
      return 0;
    }
  }
  long n = 2048;
  double p = 99.99;
  if (cli_opt(argc, argv, "--calibration") &&
      !cli_parse_long(cli_opt(argc, argv, "--calibration"), "--calibration", 1, 1L << 30, &n))
    return 0;
  if (cli_opt(argc, argv, "--percentile") &&
      !cli_parse_double(cli_opt(argc, argv, "--percentile"), "--percentile", 50, 1, 100, &p))
    return 0;
  if (cli_opt(argc, argv, "--percentile") && o->method != DAMO_CALIB_PERCENTILE) {
    fprintf(stderr, "damo quantize: --percentile goes with --method percentile\n");
    return 0;
  }
  o->calibration_examples = n;
  o->percentile = p;
  o->dynamic = cli_flag(argc, argv, "--dynamic");
  if (o->dynamic && (method || cli_opt(argc, argv, "--calibration"))) {
    fprintf(stderr, "damo quantize: --dynamic quantises each batch from its own range: --method and --calibration "
                    "do not apply\n");
    return 0;
  }
  return 1;
}

static void print_layers(const damo_model *m) {
  const char *name, *why;
  int p;
  for (int i = 0; (p = damo_model_layer_precision(m, i, &name, &why)) >= 0; i++) {
    if (p == 1) printf("  %-24s int8\n", name);
    else if (p == 2) printf("  %-24s int8 table (weight-only: looked up in f32)\n", name);
    else if (why) printf("  %-24s f32 (%s)\n", name, why);
  }
}

/* F1 of class 1 on (x, y) for a two-class model (a sigmoid output or two logits); -1 for
 * others or on failure. */
static double two_class_f1(damo_model *m, const damo_tensor *x, const damo_tensor *y) {
  damo_tensor *p = NULL;
  damo_metrics mt = {0};
  double f1 = -1;
  if (damo_model_predict(m, x, 64, &p) == DAMO_OK && damo_tensor_numel(p) / p->shape[0] <= 2 &&
      damo_classification_metrics(p, y, &mt) == DAMO_OK)
    f1 = mt.f1;
  damo_tensor_free(p);
  return f1;
}

int cli_quantize_sequential(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *out = cli_opt(argc, argv, "--out");
  const char *data = cli_opt(argc, argv, "--data"), *label = cli_opt(argc, argv, "--label-column");
  damo_quantize_options o = {0};
  if (!dir || !out) {
    fprintf(stderr, "damo quantize: --model DIR and --out DIR are required\n");
    return 2;
  }
  if (!parse_options(argc, argv, &o)) return 2;
  if (!o.dynamic && !data) {
    fprintf(stderr, "damo quantize: calibration needs --data SPEC (its training split), or --dynamic\n");
    return 2;
  }
  if (cli_flag(argc, argv, "--evaluate") && !data) {
    fprintf(stderr, "damo quantize: --evaluate scores the test split of --data SPEC\n");
    return 2;
  }
  if (out_is_model_dir(dir, out)) return 2;
  const int text = data && cli_is_text_data(data);
  if (text && !o.dynamic) {
    fprintf(stderr, "damo quantize: a text model's inputs are token ids: quantise it with --dynamic (--data then "
                    "only scores the test split, with --evaluate)\n");
    return 2;
  }
  damo_model *m;
  if (damo_model_load(dir, &m) != DAMO_OK) return cli_fail("quantize");
  damo_tensor *x = NULL, *y = NULL, *tx = NULL, *ty = NULL;
  damo_text_dataset *texts = NULL;
  int rc = 0;
  if (data && !text && cli_load_data(data, "train", label, &x, &y) != DAMO_OK) rc = cli_fail("quantize");
  if (rc == 0 && cli_flag(argc, argv, "--evaluate") &&
      (text ? cli_text_split_for_model(dir, m, data, DAMO_SPLIT_TEST, &texts, &tx, &ty)
            : cli_load_data(data, "test", label, &tx, &ty)) != DAMO_OK)
    rc = cli_fail("quantize");
  /* Scored at batch 64 (the deployment batch of the benchmarks), each timed. */
  float loss32 = 0, acc32 = -1, loss8 = 0, acc8 = -1;
  double s32 = cli_seconds();
  if (rc == 0 && tx && damo_model_evaluate(m, tx, ty, 64, &loss32, &acc32) != DAMO_OK) rc = cli_fail("quantize");
  s32 = cli_seconds() - s32;
  const double f1_32 = rc == 0 && tx ? two_class_f1(m, tx, ty) : -1;
  double t0 = cli_seconds();
  if (rc == 0 && damo_model_quantize(m, o.dynamic ? NULL : x, &o) != DAMO_OK) rc = cli_fail("quantize");
  double seconds = cli_seconds() - t0;
  double s8 = cli_seconds();
  if (rc == 0 && tx && damo_model_evaluate(m, tx, ty, 64, &loss8, &acc8) != DAMO_OK) rc = cli_fail("quantize");
  s8 = cli_seconds() - s8;
  const double f1_8 = rc == 0 && tx ? two_class_f1(m, tx, ty) : -1;
  if (rc == 0 && damo_model_save(m, out) != DAMO_OK) rc = cli_fail("quantize");
  if (rc == 0 && (!copy_if_present(dir, out, "vocab.txt") || !copy_if_present(dir, out, "text.json")))
    rc = cli_fail("quantize");
  if (rc == 0) {
    printf("quantised %s -> %s in %.2f s (%s activations", dir, out, seconds, o.dynamic ? "dynamic" : "static");
    if (!o.dynamic)
      printf(", %s calibration on %lld training examples",
             method_names[o.method],
             (long long)(o.calibration_examples < x->shape[0] ? o.calibration_examples : x->shape[0]));
    printf(")\n");
    print_layers(m);
    long long before = file_bytes(dir), after = file_bytes(out);
    if (before > 0 && after > 0)
      printf("model.safetensors: %lld -> %lld bytes (%.1f%%)\n", before, after, 100.0 * (double)after / (double)before);
    if (tx && acc32 >= 0)
      printf("test accuracy: f32 %.4f, int8 %.4f (%+.2f points; loss %.4f -> %.4f; %lld examples)\n", acc32, acc8,
             100.0 * (acc8 - acc32), loss32, loss8, (long long)tx->shape[0]);
    if (f1_32 >= 0 && f1_8 >= 0) printf("test f1: f32 %.4f, int8 %.4f (%+.4f)\n", f1_32, f1_8, f1_8 - f1_32);
    if (tx)
      printf("evaluation at batch 64: f32 %.0f examples/s, int8 %.0f examples/s (%.2fx)\n", (double)tx->shape[0] / s32,
             (double)tx->shape[0] / s8, s32 / s8);
  }
  damo_tensor_free(x);
  damo_tensor_free(y);
  damo_tensor_free(tx);
  damo_tensor_free(ty);
  damo_text_dataset_free(texts);
  damo_model_free(m);
  return rc;
}

/* damo quantize of a GPT-2 directory: weight-only blocks (--format q8_0|q4_0) for damo
 * generate, or dynamic int8 (--format int8), with the validation perplexity of both
 * (--evaluate --data TEXT). */
int cli_quantize_gpt2(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *out = cli_opt(argc, argv, "--out");
  const char *format = cli_opt(argc, argv, "--format"), *data = cli_opt(argc, argv, "--data");
  const int evaluate = cli_flag(argc, argv, "--evaluate");
  if (!dir || !out) {
    fprintf(stderr, "damo quantize: --model DIR and --out DIR are required\n");
    return 2;
  }
  damo_block_format f = DAMO_BLOCKS_Q8_0;
  const int int8 = format && !strcmp(format, "int8");
  if (format && !strcmp(format, "q4_0")) f = DAMO_BLOCKS_Q4_0;
  else if (format && strcmp(format, "q8_0") && !int8) {
    fprintf(stderr, "damo quantize: --format is q8_0 or q4_0 (weight-only blocks of 32) or int8 (calibrated, or "
                    "--dynamic) for GPT-2, not '%s'\n", format);
    return 2;
  }
  const char *name = int8 ? "int8" : damo_block_format_name(f);
  damo_quantize_options o = {0};
  static const char *const int8_only[] = {"--method", "--calibration", "--percentile", "--dynamic"};
  for (int k = 0; k < 4 && !int8; k++)
    if (cli_opt(argc, argv, int8_only[k]) || cli_flag(argc, argv, int8_only[k])) {
      fprintf(stderr, "damo quantize: %s goes with --format int8 (%s blocks are weight-only: nothing to calibrate)\n",
              int8_only[k], name);
      return 2;
    }
  if (int8 && !parse_options(argc, argv, &o)) return 2;
  const int calibrate = int8 && !o.dynamic;
  if (!cli_opt(argc, argv, "--calibration")) o.calibration_examples = 64; /* windows: a GPT-2 pass is long */
  if (calibrate && !data) {
    fprintf(stderr, "damo quantize: static int8 calibrates on the training part of --data TEXT (or give --dynamic)\n");
    return 2;
  }
  if (evaluate && !data) {
    fprintf(stderr, "damo quantize: --evaluate scores the validation part of --data TEXT before and after\n");
    return 2;
  }
  if (data && !evaluate && !calibrate) {
    fprintf(stderr, "damo quantize: --data TEXT is for --evaluate (or static int8's calibration) here\n");
    return 2;
  }
  if (out_is_model_dir(dir, out)) return 2;
  damo_gpt2 *m;
  if (damo_gpt2_load(dir, &m) != DAMO_OK) return cli_fail("quantize");
  double before = 0, after = 0;
  cli_gpt2_validation v = {0};
  int rc = data ? cli_gpt2_validation_open(m, argc, argv, "quantize", &v) : 0;
  if (rc == 0 && evaluate) rc = cli_gpt2_validation_score(m, &v, "quantize", &before);
  const double t0 = cli_seconds();
  damo_status st = DAMO_OK;
  if (rc == 0)
    st = !int8 ? damo_gpt2_quantize(m, f)
               : damo_gpt2_quantize_int8_static(m, calibrate ? v.data->ids : NULL, calibrate ? v.data->n_train : 0,
                                                v.T, &o);
  if (rc == 0 && st != DAMO_OK) rc = cli_fail("quantize");
  const double seconds = cli_seconds() - t0;
  if (rc == 0 && evaluate) rc = cli_gpt2_validation_score(m, &v, "quantize", &after);
  if (rc == 0 && damo_gpt2_save(m, out) != DAMO_OK) rc = cli_fail("quantize");
  if (rc == 0 && int8) {
    printf("quantised %s -> %s in %.2f s: each layer's c_attn, attn.c_proj, c_fc and mlp.c_proj int8 with a scale per "
           "output column, wte (the logits product too) and wpe with one per row; ", dir, out, seconds);
    if (calibrate)
      printf("inputs quantised with ranges calibrated (%s) on %lld windows of %ld tokens of the training part, c_fc "
             "handing mlp.c_proj uint8; ", method_names[o.method],
             (long long)(o.calibration_examples < v.data->n_train / v.T ? o.calibration_examples : v.data->n_train / v.T),
             v.T);
    else
      printf("inputs quantised per batch (per token in generate); ");
    printf("biases, layer norms and attention f32\n");
  }
  else if (rc == 0)
    printf("quantised %s -> %s in %.2f s: every weight matrix (wte, wpe, each layer's c_attn, attn.c_proj, c_fc, "
           "mlp.c_proj) in %s blocks of %d with a bf16 scale each; biases and layer norms f32\n", dir, out, seconds,
           name, DAMO_BLOCK_SIZE);
  if (rc == 0) {
    long long was = file_bytes(dir), now = file_bytes(out);
    if (was > 0 && now > 0)
      printf("model.safetensors: %lld -> %lld bytes (%.1f%%)\n", was, now, 100.0 * (double)now / (double)was);
    if (evaluate) {
      printf("scored: %s\n", v.desc);
      printf("validation loss: f32 %.4f, %s %.4f; perplexity %.3f -> %.3f (%+.2f%%)\n", before,
             name, after, exp(before), exp(after), 100.0 * (exp(after - before) - 1.0));
    }
  }
  cli_gpt2_validation_close(&v);
  damo_gpt2_free(m);
  return rc;
}

/* damo quantize of a fine-tuned BERT directory: int8 linear layers whose inputs are
 * calibrated on the training split of --data (static) or quantised per batch (--dynamic), in
 * one directory save with its vocab.txt and tokenizer_config.json; --evaluate scores the f32
 * and the int8 model on the test split. */
int cli_quantize_bert(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *out = cli_opt(argc, argv, "--out");
  const char *data = cli_opt(argc, argv, "--data");
  const int evaluate = cli_flag(argc, argv, "--evaluate");
  damo_quantize_options o = {0};
  if (!dir || !out) {
    fprintf(stderr, "damo quantize: --model DIR and --out DIR are required\n");
    return 2;
  }
  if (!parse_options(argc, argv, &o)) return 2;
  const char *attention = cli_opt(argc, argv, "--attention");
  if (attention && strcmp(attention, "bf16") && strcmp(attention, "f32")) {
    fprintf(stderr, "damo quantize: --attention is bf16 or f32, not '%s'\n", attention);
    return 2;
  }
  o.attention_f32 = attention && !strcmp(attention, "f32");
  if (!o.dynamic && !data) {
    fprintf(stderr, "damo quantize: calibration needs --data SPEC (its training split), or --dynamic\n");
    return 2;
  }
  if (evaluate && !data) {
    fprintf(stderr, "damo quantize: --evaluate scores the test split of --data SPEC\n");
    return 2;
  }
  if (out_is_model_dir(dir, out)) return 2;
  damo_bert *m = NULL;
  damo_wordpiece *wp = NULL;
  damo_text_dataset *d = NULL;
  encoded_split sp[3] = {{0}};
  int T = 0, head = -1;
  int rc = 0; /* calibration reads mails as the model was trained to (its vocabulary, length, cut) */
  if (o.dynamic && damo_bert_load(dir, 0, 0, &m) != DAMO_OK) rc = cli_fail("quantize");
  if (!o.dynamic && (cli_bert_open(dir, "quantize", &m, &wp, &T, &head) != 1 ||
                     !cli_bert_load_encoded(data, wp, T, head, &d, sp, DAMO_SPLIT_TRAIN)))
    rc = 1;
  const damo_bert_examples train = {sp[DAMO_SPLIT_TRAIN].n, sp[DAMO_SPLIT_TRAIN].ids, sp[DAMO_SPLIT_TRAIN].types,
                                    sp[DAMO_SPLIT_TRAIN].mask, sp[DAMO_SPLIT_TRAIN].labels};
  const double t0 = cli_seconds();
  damo_status st = rc ? DAMO_ERR_INVALID_ARG : damo_bert_quantize_static(m, &train, T, &o);
  const double seconds = cli_seconds() - t0;
  damo_dir_save *tx = NULL;
  if (!rc && st == DAMO_OK) st = damo_dir_save_begin(out, &tx);
  if (!rc && st == DAMO_OK) st = damo_bert_save(m, damo_dir_save_folder(tx));
  if (!rc && st == DAMO_OK && (!copy_if_present(dir, damo_dir_save_folder(tx), "vocab.txt") ||
                               !copy_if_present(dir, damo_dir_save_folder(tx), "tokenizer_config.json")))
    st = DAMO_ERR_IO;
  if (!rc && st == DAMO_OK) st = damo_dir_save_commit(tx);
  else if (tx) damo_dir_save_abort(tx);
  if (!rc && st != DAMO_OK) rc = cli_fail("quantize");
  if (rc == 0) {
    const int layers = damo_bert_get_config(m)->num_hidden_layers;
    printf("quantised %s -> %s in %.2f s: %s int8, %d products (each of the %d encoder layers' query, key, value, "
           "attention output, intermediate and output, and the classifier) with int8 weights, one scale per output; ",
           dir, out, seconds, o.dynamic ? "dynamic" : "static", 6 * layers + 1, layers);
    if (o.dynamic) printf("their inputs quantised per batch");
    else
      printf("their inputs' ranges calibrated (%s) on %lld training mails, the intermediate products handing the "
             "output products uint8", method_names[o.method],
             (long long)(o.calibration_examples < train.n ? o.calibration_examples : train.n));
    printf("; the embedding tables stored as int8 rows; attention's products with %s operands; pooler, layer norms "
           "and softmax f32\n", o.attention_f32 ? "f32" : "bf16");
  }
  for (int s = 0; s < 3; s++) cli_bert_free_split(&sp[s]);
  damo_text_dataset_free(d);
  damo_wordpiece_free(wp);
  damo_bert_free(m);
  if (rc) return rc;
  long long was = file_bytes(dir), now = file_bytes(out);
  if (was > 0 && now > 0) printf("model.safetensors: %lld -> %lld bytes (%.1f%%)\n", was, now, 100.0 * now / was);
  if (!evaluate) return 0;
  printf("f32 (%s): ", dir);
  fflush(stdout);
  if (cli_bert_evaluate_split(dir, data, "test", NULL) != 2) return 1;
  printf("int8 (%s): ", out);
  fflush(stdout);
  return cli_bert_evaluate_split(out, data, "test", NULL) == 2 ? 0 : 1;
}
