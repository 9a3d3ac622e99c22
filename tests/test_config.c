/* test_config.c - the config reader (src/core/config_reader.c): typed getters with their
 * ranges, kinds and required keys; unknown keys refused with the known list (GPT-2's
 * "train", BERT's "pretrain"/"finetune", the Sequential config); syntax errors with line and
 * column; HuggingFace config.json files keep their extra keys; the model_type switch. */
#include "harness.h"
#include "tmpfiles.h"

#include <damo.h>
#include <stdint.h>
#include <stdlib.h>

static damo_config *parse(const char *text, const char *source) {
  damo_config *c = NULL;
  damo_status st = damo_config_parse(text, strlen(text), source, &c);
  CHECK_MSG(st == DAMO_OK && c, "%s: %s", text, damo_last_error());
  return c;
}

static damo_config_obj *root_of(damo_config *c) {
  damo_config_obj *o = NULL;
  CHECK(c && damo_config_root(c, &o) == DAMO_OK && o);
  return o;
}

/* st is a failure whose message holds every needle. */
static void expect_error(damo_status st, damo_status code, const char *a, const char *b) {
  const char *e = damo_last_error();
  CHECK_MSG(st == code && strstr(e, a) && (!b || strstr(e, b)), "%s: %s (want \"%s\"%s%s)", damo_status_name(st), e,
            a, b ? ", " : "", b ? b : "");
}

static void test_getters(void) {
  damo_config *c = parse("{\"n\": 3, \"half\": 0.5, \"big\": 1e300, \"s\": \"adam\", \"b\": true, \"neg\": -2,"
                         " \"shape\": [2, 3, 4], \"one\": 7, \"names\": [\"cat\", \"dog\"], \"pair\": [0.25, 4],"
                         " \"nothing\": null, \"sub\": {\"k\": 1}}",
                         "c.json");
  damo_config_obj *o = root_of(c);
  int64_t n = -1;
  int i32 = -1, b = 0, e = -1, count = 0;
  double d = 0;
  float f = 0;
  const char *s = NULL;
  CHECK(damo_config_get_int(o, "n", 1, 10, DAMO_CFG_REQUIRED, &n) == DAMO_OK && n == 3);
  CHECK(damo_config_get_int32(o, "neg", -5, 5, 0, &i32) == DAMO_OK && i32 == -2);
  CHECK(damo_config_get_double(o, "half", 0, 1, DAMO_CFG_LO_OPEN | DAMO_CFG_HI_OPEN, &d) == DAMO_OK && d == 0.5);
  CHECK(damo_config_get_float(o, "half", 0, 1, 0, &f) == DAMO_OK && f == 0.5f);
  CHECK(damo_config_get_bool(o, "b", 0, &b) == DAMO_OK && b == 1);
  CHECK(damo_config_get_string(o, "s", 0, &s) == DAMO_OK && s && !strcmp(s, "adam"));
  static const char *const kinds[] = {"sgd", "adam", "adamw", NULL};
  CHECK(damo_config_get_enum(o, "s", kinds, 0, &e) == DAMO_OK && e == 1);
  int64_t shape[5] = {0};
  CHECK(damo_config_get_ints(o, "shape", 1, 5, 1, 100, 0, 0, shape, &count) == DAMO_OK && count == 3 && shape[2] == 4);
  CHECK(damo_config_get_ints(o, "one", 2, 2, 1, 100, 2, 0, shape, &count) == DAMO_OK && count == 2 && shape[0] == 7 &&
        shape[1] == 7);
  const char *const *names = NULL;
  CHECK(damo_config_get_strings(o, "names", 1, 10, 0, &names, &count) == DAMO_OK && count == 2 &&
        !strcmp(names[1], "dog"));
  double pair[2];
  CHECK(damo_config_get_doubles(o, "pair", 2, 2, 0, 10, 0, pair, &count) == DAMO_OK && pair[1] == 4);
  damo_config_obj *sub = NULL, *again = NULL;
  CHECK(damo_config_get_object(o, "sub", 0, &sub) == DAMO_OK && sub && damo_config_count(sub) == 1);
  CHECK(damo_config_get_object(o, "sub", 0, &again) == DAMO_OK && again == sub);
  CHECK(damo_config_type_of(o, "nothing") == DAMO_CFG_NULL && damo_config_type_of(o, "shape") == DAMO_CFG_ARRAY);

  /* absent: the default stays; required: an error naming the key */
  n = 42;
  CHECK(damo_config_get_int(o, "absent", 1, 100, 0, &n) == DAMO_OK && n == 42);
  expect_error(damo_config_get_int(o, "absent", 1, 100, DAMO_CFG_REQUIRED, &n), DAMO_ERR_FORMAT, "c.json: missing \"absent\"",
               NULL);
  damo_config_obj *none = (damo_config_obj *)1;
  CHECK(damo_config_get_object(o, "no_sub", 0, &none) == DAMO_OK && none == NULL);

  /* ranges, open ends and kinds; the value given is never replaced by the default */
  expect_error(damo_config_get_int(o, "n", 4, 10, 0, &n), DAMO_ERR_FORMAT,
               "c.json: \"n\" must be an integer in [4, 10], got 3", NULL);
  CHECK(n == 42);
  expect_error(damo_config_get_int(o, "half", 0, 10, 0, &n), DAMO_ERR_FORMAT, "\"half\" must be an integer, got 0.5", NULL);
  expect_error(damo_config_get_int(o, "neg", 0, INT64_MAX, 0, &n), DAMO_ERR_FORMAT, "\"neg\" must be an integer >= 0, got -2",
               NULL);
  expect_error(damo_config_get_int(o, "big", 0, INT64_MAX, 0, &n), DAMO_ERR_FORMAT, "\"big\" must be an integer", NULL);
  expect_error(damo_config_get_int(o, "s", 0, 10, 0, &n), DAMO_ERR_FORMAT, "\"s\" must be an integer, got \"adam\"", NULL);
  expect_error(damo_config_get_double(o, "half", 0.5, 1, DAMO_CFG_LO_OPEN, &d), DAMO_ERR_FORMAT,
               "\"half\" must be a number in (0.5, 1], got 0.5", NULL);
  expect_error(damo_config_get_double(o, "n", 0, 3, DAMO_CFG_HI_OPEN, &d), DAMO_ERR_FORMAT,
               "\"n\" must be a number in [0, 3), got 3", NULL);
  expect_error(damo_config_get_double(o, "b", 0, 3, 0, &d), DAMO_ERR_FORMAT, "\"b\" must be a number, got true", NULL);
  expect_error(damo_config_get_bool(o, "n", 0, &b), DAMO_ERR_FORMAT, "\"n\" must be true or false, got 3", NULL);
  expect_error(damo_config_get_string(o, "nothing", 0, &s), DAMO_ERR_FORMAT, "\"nothing\" must be a string, got null",
               NULL);
  static const char *const pads[] = {"same", "valid", NULL};
  expect_error(damo_config_get_enum(o, "s", pads, 0, &e), DAMO_ERR_FORMAT,
               "\"s\" must be one of \"same\", \"valid\", got \"adam\"", NULL);
  expect_error(damo_config_get_ints(o, "shape", 1, 2, 1, 100, 0, 0, shape, &count), DAMO_ERR_FORMAT,
               "\"shape\" must be a list of 1 to 2 integers in [1, 100], got 3", NULL);
  expect_error(damo_config_get_ints(o, "shape", 1, 5, 3, 100, 0, 0, shape, &count), DAMO_ERR_FORMAT,
               "\"shape\"[0] must be an integer in [3, 100], got 2", NULL);
  expect_error(damo_config_get_strings(o, "shape", 1, 5, 0, &names, &count), DAMO_ERR_FORMAT,
               "\"shape\"[0] must be a string, got 2", NULL);
  expect_error(damo_config_get_doubles(o, "pair", 2, 2, 0, 1, 0, pair, &count), DAMO_ERR_FORMAT,
               "\"pair\"[1] must be a number in [0, 1], got 4", NULL);
  damo_config_obj *not_object = NULL;
  expect_error(damo_config_get_object(o, "shape", 0, &not_object), DAMO_ERR_FORMAT, "\"shape\" must be an object, got a list",
               NULL);
  /* inside an object, the path names both */
  expect_error(damo_config_get_int(sub, "k", 2, 3, 0, &n), DAMO_ERR_FORMAT, "c.json: \"sub\".\"k\" must be an integer in [2, 3], got 1",
               NULL);
  expect_error(damo_config_fail(sub, "k", DAMO_ERR_FORMAT, "is above \"n\""), DAMO_ERR_FORMAT,
               "c.json: \"sub\".\"k\" is above \"n\"", NULL);
  /* every key was asked for: the object closes */
  CHECK_MSG(damo_config_close(o) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_config_close(sub) == DAMO_OK);
  damo_config_free(c);
}

static void test_unknown_keys(void) {
  damo_config *c = parse("{\"train\": {\"steps\": 10, \"batch_size\": 4, \"log_evry\": 5}, \"extra\": 1}", "gpt.json");
  damo_config_obj *o = root_of(c), *train = NULL;
  CHECK(damo_config_get_object(o, "train", 0, &train) == DAMO_OK && train);
  int64_t v = 0;
  static const char *const keys[] = {"steps", "batch_size", "log_every"};
  for (int k = 0; k < 3; k++) CHECK(damo_config_get_int(train, keys[k], 0, 1000, 0, &v) == DAMO_OK);
  expect_error(damo_config_close(train), DAMO_ERR_FORMAT,
               "gpt.json: unknown key \"train\".\"log_evry\" (known: steps, batch_size, log_every)",
               "did you mean \"log_every\"?");
  /* the top object was never closed: its other keys are the caller's business */
  damo_config_free(c);

  /* no suggestion for a key that is nothing like a known one; the empty key is named */
  c = parse("{\"a\": 1, \"learning_rate\": 2}", "x.json");
  o = root_of(c);
  CHECK(damo_config_get_int(o, "a", 0, 10, 0, &v) == DAMO_OK);
  CHECK(damo_config_type_of(o, "lr") == DAMO_CFG_ABSENT);
  expect_error(damo_config_close(o), DAMO_ERR_FORMAT, "unknown key \"learning_rate\" (known: a, lr)", NULL);
  CHECK(!strstr(damo_last_error(), "did you mean"));
  damo_config_free(c);
  c = parse("{\"a\": 1, \"\": 2}", "x.json");
  o = root_of(c);
  CHECK(damo_config_get_int(o, "a", 0, 10, 0, &v) == DAMO_OK);
  expect_error(damo_config_close(o), DAMO_ERR_FORMAT, "x.json: empty key \"\" (known: a)", NULL);
  damo_config_free(c);

  /* a labelled object speaks as the Sequential config does */
  c = parse("{\"layers\": [{\"type\": \"dense\", \"unit\": 3}]}", "seq.json");
  o = root_of(c);
  damo_config_obj *layer = NULL;
  int n = 0;
  CHECK(damo_config_get_list(o, "layers", 1, 10, DAMO_CFG_REQUIRED, &n) == DAMO_OK && n == 1);
  CHECK(damo_config_list_object(o, "layers", 0, &layer) == DAMO_OK && damo_config_set_label(layer, "layer 0") == DAMO_OK);
  const char *type = NULL;
  CHECK(damo_config_get_string(layer, "type", DAMO_CFG_REQUIRED, &type) == DAMO_OK);
  int units = 0;
  expect_error(damo_config_get_int32(layer, "units", 1, 100, DAMO_CFG_REQUIRED, &units), DAMO_ERR_FORMAT,
               "seq.json: layer 0: missing 'units'", NULL);
  expect_error(damo_config_close(layer), DAMO_ERR_FORMAT, "seq.json: layer 0: unknown key 'unit' (known: type, units)",
               "did you mean 'units'?");
  expect_error(damo_config_list_object(o, "layers", 1, &layer), DAMO_ERR_FORMAT, "\"layers\" has no entry 1", NULL);
  damo_config_free(c);
}

/* The Sequential config, GPT-2's "train" and BERT's sections through the library's readers. */
static void test_readers_refuse_typos(void) {
  damo_model *m = NULL;
  const char *seq = "{\"input_shape\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 3}],"
                    " \"fit\": {\"epochs\": 2, \"batch_sise\": 8}}";
  expect_error(damo_model_from_config_json(seq, "seq.json", &m), DAMO_ERR_FORMAT, "seq.json: fit: unknown key 'batch_sise'",
               "did you mean 'batch_size'?");
  CHECK(m == NULL);
  const char *optimizer = "{\"input_shape\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 3}],"
                          " \"optimizer\": {\"type\": \"adam\", \"learning_rte\": 0.1}}";
  expect_error(damo_model_from_config_json(optimizer, "seq.json", &m), DAMO_ERR_FORMAT,
               "seq.json: optimizer: unknown key 'learning_rte'", "known: type, learning_rate, momentum");
  const char *schedule = "{\"input_shape\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 3}],"
                         " \"optimizer\": {\"type\": \"adam\", \"schedule\": {\"type\": \"cosin\"}}}";
  expect_error(damo_model_from_config_json(schedule, "seq.json", &m), DAMO_ERR_FORMAT,
               "seq.json: optimizer.schedule: 'type' must be one of \"constant\", \"step\", \"cosine\", got \"cosin\"", NULL);
  const char *bidir = "{\"input_shape\": [5], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 10, \"output_dim\": 4},"
                      " {\"type\": \"bidirectional\", \"name\": \"bi\", \"layer\": {\"type\": \"lstm\", \"units\": 2, \"seq\": 1}}]}";
  expect_error(damo_model_from_config_json(bidir, "seq.json", &m), DAMO_ERR_FORMAT,
               "seq.json: layer 1 ('bi').layer: unknown key 'seq'", NULL);
  /* a good config still loads, its embedding's input_dim known to the model */
  const char *good = "{\"input_shape\": [5], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 10, \"output_dim\": 4},"
                     " {\"type\": \"bidirectional\", \"layer\": {\"type\": \"gru\", \"units\": 2}}, {\"type\": \"dense\","
                     " \"units\": 2, \"activation\": \"softmax\"}], \"loss\": \"sparse_categorical_crossentropy\","
                     " \"optimizer\": \"adamw\", \"metrics\": [\"acc\"], \"class_names\": [\"a\", \"b\"]}";
  CHECK_MSG(damo_model_from_config_json(good, "seq.json", &m) == DAMO_OK, "%s", damo_last_error());
  CHECK(m && damo_model_embedding_input_dim(m) == 10);
  damo_model_free(m);
}

static void write_text(const char *name, const char *text) { write_bytes(tmp_path(name), text, strlen(text)); }

/* HuggingFace config.json files: keys damo does not use are fine (they are not damo's). */
static void test_hf_configs_keep_extra_keys(void) {
  write_text("gpt2.json",
             "{\"architectures\": [\"GPT2LMHeadModel\"], \"activation_function\": \"gelu_new\", \"model_type\": \"gpt2\","
             " \"n_ctx\": 32, \"n_embd\": 16, \"n_head\": 2, \"n_layer\": 1, \"vocab_size\": 300,"
             " \"n_inner\": null, \"summary_type\": \"cls_index\", \"task_specific_params\": {\"text-generation\":"
             " {\"do_sample\": true, \"max_length\": 50}}, \"layer_norm_epsilon\": 1e-05, \"bos_token_id\": 50256}");
  damo_gpt2_config g;
  CHECK_MSG(damo_gpt2_config_load(tmp_path("gpt2.json"), &g) == DAMO_OK, "%s", damo_last_error());
  CHECK(g.n_positions == 32 && g.n_embd == 16 && g.vocab_size == 300); /* n_ctx stands for n_positions */
  write_text("gpt2_bad.json", "{\"model_type\": \"gpt2\", \"n_embd\": 16, \"n_head\": 2, \"n_layer\": 0,"
                              " \"n_positions\": 8, \"vocab_size\": 300}");
  expect_error(damo_gpt2_config_load(tmp_path("gpt2_bad.json"), &g), DAMO_ERR_FORMAT,
               "gpt2_bad.json: \"n_layer\" must be an integer in [1, 1000000000], got 0", NULL);

  write_text("bert.json",
             "{\"architectures\": [\"BertForMaskedLM\"], \"model_type\": \"bert\", \"vocab_size\": 40, \"hidden_size\": 32,"
             " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 64,"
             " \"max_position_embeddings\": 64, \"gradient_checkpointing\": false, \"transformers_version\": \"4.6.0\","
             " \"id2label\": {\"0\": \"ham\", \"1\": \"spam\", \"2\": \"other\"}, \"label2id\": {\"ham\": 0},"
             " \"finetune\": {\"epochs\": 2}}");
  damo_bert_config b;
  CHECK_MSG(damo_bert_config_load(tmp_path("bert.json"), &b) == DAMO_OK, "%s", damo_last_error());
  CHECK(b.hidden_size == 32 && b.num_labels == 3);
  /* parsed once, read twice: the model and damo's own section */
  damo_config *c = NULL;
  CHECK(damo_config_read_file(tmp_path("bert.json"), &c) == DAMO_OK);
  CHECK(damo_bert_config_read(c, &b) == DAMO_OK && b.intermediate_size == 64);
  char kind[16] = "";
  CHECK(damo_config_model_type(c, kind, sizeof kind) == DAMO_OK && !strcmp(kind, "bert"));
  damo_config_obj *root = root_of(c), *finetune = NULL;
  CHECK(damo_config_get_object(root, "finetune", 0, &finetune) == DAMO_OK && finetune);
  expect_error(damo_config_close(finetune), DAMO_ERR_FORMAT, "bert.json: unknown key \"finetune\".\"epochs\"", NULL);
  damo_config_free(c);
}

static void test_syntax_errors_and_model_type(void) {
  damo_config *c = NULL;
  const char *broken = "{\n  \"a\": 1,\n  \"b\" 2\n}";
  expect_error(damo_config_parse(broken, strlen(broken), "broken.json", &c), DAMO_ERR_FORMAT,
               "broken.json: not valid JSON at byte offset 18 (line 3), column 7", NULL);
  CHECK(c == NULL);
  const char *dup = "{\"a\": 1,\n \"a\": 2}";
  expect_error(damo_config_parse(dup, strlen(dup), "dup.json", &c), DAMO_ERR_FORMAT,
               "dup.json: duplicate key \"a\" at byte offset 10 (line 2), column 2", NULL);
  const char *list = "[1, 2]";
  CHECK(damo_config_parse(list, strlen(list), "list.json", &c) == DAMO_OK);
  damo_config_obj *o = (damo_config_obj *)1;
  expect_error(damo_config_root(c, &o), DAMO_ERR_FORMAT, "list.json: expected a JSON object", NULL);
  CHECK(o == NULL);
  damo_config_free(c);

  char kind[16];
  write_text("seq.json", "{\"input_shape\": [4], \"layers\": []}");
  CHECK(damo_config_model_type_file(tmp_path("seq.json"), kind, sizeof kind) == DAMO_OK && !strcmp(kind, "sequential"));
  write_text("g.json", "{\"model_type\": \"gpt2\"}");
  CHECK(damo_config_model_type_file(tmp_path("g.json"), kind, sizeof kind) == DAMO_OK && !strcmp(kind, "gpt2"));
  write_text("r.json", "{\"model_type\": \"roberta\"}");
  expect_error(damo_config_model_type_file(tmp_path("r.json"), kind, sizeof kind), DAMO_ERR_UNSUPPORTED,
               "r.json: model_type \"roberta\" is not supported", NULL);
  write_text("n.json", "{\"model_type\": 2}");
  expect_error(damo_config_model_type_file(tmp_path("n.json"), kind, sizeof kind), DAMO_ERR_FORMAT,
               "n.json: \"model_type\" must be a string, got 2", NULL);
  CHECK(damo_config_model_type_file(tmp_path("absent.json"), kind, sizeof kind) != DAMO_OK);
}

int main(void) {
  tmpdir_template("config");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_getters);
  RUN(test_unknown_keys);
  RUN(test_readers_refuse_typos);
  RUN(test_hf_configs_keep_extra_keys);
  RUN(test_syntax_errors_and_model_type);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return test_summary("config");
}
