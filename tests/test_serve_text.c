/* test_serve_text.c - `damo serve` for text and its real clients. A text LSTM and a BERT
 * classifier trained through the command line on a tiny labelled mail set answer /v1/predict
 * with what `damo predict` prints for the same mails (JSON texts and a raw text body); BERT's
 * /v1/embeddings has OpenAI's shape, [CLS] and mean pooling, and rows that do not depend on
 * their batch. Then the clients a user would bring: OpenAI's JavaScript client (npm `openai`,
 * unchanged) against a GPT-2 server, streaming included, and the playground page in headless
 * Chromium (driven by npm playwright-core) for a picture classifier, a text model and GPT-2,
 * each compared with the API's answer, with screenshots left in the build folder. The client
 * parts run where node, the npm packages and chromium are installed (sh scripts/setup.sh
 * --browser) and say they are skipped elsewhere. */
#define _DEFAULT_SOURCE
#include "cli_run.h"
#include "damo.h"
#include "harness.h"
#include "tmpfiles.h"
#include "mail_fixtures.h"
#include "serve_client.h"

#include <libgen.h>

static int skipped;
static char dir[256];

/* The first class and probability `damo predict` prints for a mail ("FILE: spam 0.982, ..."). */
static int cli_top(const char *model, const char *mail, char *label, double *p) {
  int rc = run("%s predict --model %s --input %s", DAMO_CLI_PATH, model, mail);
  const char *at = strstr(cli_out, ": ");
  if (rc != 0 || !at || sscanf(at + 2, "%31s %lf", label, p) != 2) return 0;
  return 1;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  char *b = calloc(1, 65536);
  size_t n = f && b ? fread(b, 1, 65535, f) : 0;
  if (f) fclose(f);
  if (b) b[n] = '\0';
  return b;
}

/* {"texts": [mail]} with the mail escaped as a JSON string. */
static char *texts_json(const char *mail, const char *extra) {
  cJSON *j = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(j, "texts");
  cJSON_AddItemToArray(a, cJSON_CreateString(mail));
  char *s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (extra && *extra) { /* splice `, extra` before the closing brace */
    char *t = malloc(strlen(s) + strlen(extra) + 4);
    sprintf(t, "%.*s, %s}", (int)strlen(s) - 1, s, extra);
    free(s);
    s = t;
  }
  return s;
}

/* The server's top label and probability for a mail must be what damo predict prints. */
static void check_mail(int port, const char *model, const char *mail_path) {
  char want[32] = "", *mail = read_text(mail_path), *body = texts_json(mail, NULL);
  double want_p = -1;
  CHECK_MSG(cli_top(model, mail_path, want, &want_p), "%s", cli_out);
  want[strcspn(want, ",")] = '\0';
  response r = post(port, "/v1/predict", body);
  cJSON *j = cJSON_Parse(r.body ? r.body : ""), *row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "predictions"), 0);
  const cJSON *label = cJSON_GetObjectItem(row, "label"), *p = cJSON_GetObjectItem(row, "probability");
  CHECK_MSG(r.status == 200 && cJSON_IsString(label) && !strcmp(label->valuestring, want) &&
            fabs(p->valuedouble - want_p) <= 0.0006, "%s: server %s, damo predict %s %.3f", mail_path, r.body, want, want_p);
  cJSON_Delete(j);
  free(r.body);
  /* the raw mail as the body: the same answer */
  r = http(port, "POST", "/v1/predict", "message/rfc822", mail, strlen(mail));
  j = cJSON_Parse(r.body ? r.body : "");
  row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "predictions"), 0);
  label = cJSON_GetObjectItem(row, "label");
  CHECK_MSG(r.status == 200 && cJSON_IsString(label) && !strcmp(label->valuestring, want), "%s", r.body);
  cJSON_Delete(j);
  free(r.body);
  free(body);
  free(mail);
}

static void test_text_lstm(void) {
  write_labelled_mails(80);
  snprintf(dir, sizeof dir, "%s", tmpdir);
  write_text_model_config(tmp_path("text.json"));
  int rc = run("%s train --config %s/text.json --data %s/mails --out %s/tm --verbose 0", DAMO_CLI_PATH, dir, dir, dir);
  CHECK_MSG(rc == 0, "%s", cli_out);
  server s;
  char args[600], model[300];
  snprintf(model, sizeof model, "%s/tm", dir);
  snprintf(args, sizeof args, "--model %s", model);
  int started = server_start(&s, args);
  if (started < 0) {
    skipped = 1;
    fprintf(stderr, "  (skipped: damo was built without libmicrohttpd)\n");
    return;
  }
  CHECK(started == 1 && wait_ready(&s));
  response r = get(s.port, "/v1/models");
  CHECK_MSG(strstr(r.body, "\"input\":\"text\"") && strstr(r.body, "\"classifier\""), "%s", r.body);
  free(r.body);
  check_mail(s.port, model, tmp_path("mails/spam/001.txt"));
  check_mail(s.port, model, tmp_path("mails/ham/002.txt"));
  r = post(s.port, "/v1/predict", "{\"images\": [\"aGk=\"]}");
  CHECK_MSG(r.status == 400 && strstr(error_message(&r), "does not read pictures"), "%s", r.body);
  free(r.body);
  CHECK(server_stop(&s) == 0);
}

static void test_bert(void) {
  if (skipped) return;
  FILE *f = fopen(tmp_path("bert.json"), "w");
  fprintf(f, "{\"model_type\": \"bert\", \"vocab_size\": 40, \"hidden_size\": 32, \"num_hidden_layers\": 2, "
             "\"num_attention_heads\": 4, \"intermediate_size\": 64, \"max_position_embeddings\": 64, "
             "\"finetune\": {\"epochs\": 3, \"batch_size\": 16, \"seq_len\": 20, \"lr\": 0.003, \"warmup_steps\": 5, "
             "\"seed\": 3}}");
  fclose(f);
  int rc = run("%s train --config %s/bert.json --data %s/mails --vocab %s/vocab.txt --out %s/bs", DAMO_CLI_PATH, dir, dir,
               dir, dir);
  CHECK_MSG(rc == 0, "%s", cli_out);
  server s;
  char args[600], model[300];
  snprintf(model, sizeof model, "%s/bs", dir);
  snprintf(args, sizeof args, "--model %s --max-batch 4", model);
  CHECK(server_start(&s, args) == 1 && wait_ready(&s));
  response r = get(s.port, "/v1/models");
  CHECK_MSG(strstr(r.body, "\"kind\":\"bert\"") && strstr(r.body, "/v1/embeddings") && strstr(r.body, "\"input_shape\":[20]"),
            "%s", r.body);
  free(r.body);
  check_mail(s.port, model, tmp_path("mails/spam/003.txt"));
  check_mail(s.port, model, tmp_path("mails/ham/004.txt"));
  /* embeddings: OpenAI's shape; one per input, hidden_size long; a row is the same alone or in
   * a batch (of more rows than the graph's 4); tanh bounds the pooled [CLS]; mean pooling differs */
  const char *batch = "{\"input\": [\"free cash offer\", \"team meeting notes\", \"a\", \"b\", \"the prize\"], "
                      "\"model\": \"bs\"}";
  r = post(s.port, "/v1/embeddings", batch);
  cJSON *j = cJSON_Parse(r.body ? r.body : ""), *data = cJSON_GetObjectItem(j, "data");
  const cJSON *e0 = cJSON_GetObjectItem(cJSON_GetArrayItem(data, 0), "embedding");
  const cJSON *e4 = cJSON_GetObjectItem(cJSON_GetArrayItem(data, 4), "embedding");
  CHECK_MSG(r.status == 200 && cJSON_GetArraySize(data) == 5 && cJSON_GetArraySize(e0) == 32 &&
            strstr(r.body, "\"object\":\"list\"") && strstr(r.body, "\"prompt_tokens\":"), "%s", r.body);
  int bounded = 1;
  for (const cJSON *v = e0 ? e0->child : NULL; v; v = v->next) bounded &= fabs(v->valuedouble) < 1;
  CHECK(bounded);
  response alone = post(s.port, "/v1/embeddings", "{\"input\": \"the prize\"}");
  response mean = post(s.port, "/v1/embeddings", "{\"input\": \"the prize\", \"pooling\": \"mean\"}");
  cJSON *ja = cJSON_Parse(alone.body ? alone.body : ""), *jm = cJSON_Parse(mean.body ? mean.body : "");
  const cJSON *a = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ja, "data"), 0), "embedding");
  const cJSON *m = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(jm, "data"), 0), "embedding");
  double worst = 0, differ = 0;
  for (int k = 0; k < 32 && a && m && e4; k++) {
    worst = fmax(worst, fabs(cJSON_GetArrayItem(a, k)->valuedouble - cJSON_GetArrayItem(e4, k)->valuedouble));
    differ = fmax(differ, fabs(cJSON_GetArrayItem(a, k)->valuedouble - cJSON_GetArrayItem(m, k)->valuedouble));
  }
  CHECK_MSG(alone.status == 200 && mean.status == 200 && a && m && worst <= 1e-5 && differ > 1e-3,
            "alone vs batched %.3g, cls vs mean %.3g: %s %s", worst, differ, alone.body, mean.body);
  cJSON_Delete(j);
  cJSON_Delete(ja);
  cJSON_Delete(jm);
  free(r.body);
  free(alone.body);
  free(mean.body);
  static const struct {
    const char *body, *says;
  } bad[] = {{"{}", "\"input\""},
             {"{\"input\": 3}", "string"},
             {"{\"input\": \"x\", \"pooling\": \"max\"}", "\"pooling\""},
             {"{\"input\": \"x\", \"encoding_format\": \"base64\"}", "\"float\""}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = post(s.port, "/v1/embeddings", bad[i].body);
    CHECK_MSG(r.status == 400 && strstr(error_message(&r), bad[i].says), "%s: %d %s", bad[i].body, r.status, r.body);
    free(r.body);
  }
  CHECK(server_stop(&s) == 0);
  /* damo explain of the same BERT on a mail: the class, rollout, the maps and the head view */
  char png[300], html[300];
  snprintf(png, sizeof png, "%s/maps.png", dir);
  snprintf(html, sizeof html, "%s/heads.html", dir);
  char words[300];
  snprintf(words, sizeof words, "%s/words.html", dir);
  rc = run("%s explain --model %s --input %s --out %s --html %s --words %s --steps 32", DAMO_CLI_PATH, model,
           tmp_path("mails/spam/003.txt"), png, html, words);
  const char *gap = strstr(cli_out, "completeness gap ");
  CHECK_MSG(rc == 0 && strstr(cli_out, "2 layers x 4 heads") && strstr(cli_out, "attention rollout from [CLS]") &&
            gap && atof(gap + 17) < 2.0 && access(png, R_OK) == 0 && access(html, R_OK) == 0 && access(words, R_OK) == 0,
            "%s", cli_out);
  /* and its deletion test over tokens on the mails' test split */
  rc = run("%s explain --model %s --data %s/mails --faithfulness 6 --steps 8", DAMO_CLI_PATH, model, dir);
  const char *row0 = strstr(cli_out, "    0%"), *row50 = strstr(cli_out, "   50%");
  double p0 = -1, r0 = -1, p50 = -1, r50 = -1;
  if (row0) sscanf(row0 + 6, "%lf %lf", &p0, &r0);
  if (row50) sscanf(row50 + 6, "%lf %lf", &p50, &r50);
  CHECK_MSG(rc == 0 && strstr(cli_out, "deletion test, integrated-gradients (8 steps) on 6 test examples") && p0 == r0 &&
            p0 > 0.5 && p50 >= 0 && p50 <= 1 && r50 >= 0 && r50 <= 1, "%s", cli_out);
}

/* ------------------------------------------------------------------ real clients */

static char npm_dir[512];

static int have_clients(void) {
  const char *home = getenv("HOME");
  snprintf(npm_dir, sizeof npm_dir, "%s/.cache/damo/npm/node_modules", home ? home : "/root");
  char p1[700], p2[700];
  snprintf(p1, sizeof p1, "%s/openai/package.json", npm_dir);
  snprintf(p2, sizeof p2, "%s/playwright-core/package.json", npm_dir);
  const char *chromium = getenv("DAMO_CHROMIUM") ? getenv("DAMO_CHROMIUM") : "/usr/bin/chromium";
  return run("node --version") == 0 && access(p1, R_OK) == 0 && access(p2, R_OK) == 0 && access(chromium, X_OK) == 0;
}

/* Where screenshots stay: the build folder (beside the damo binary). */
static const char *build_path(const char *name) {
  static char out[700], bin[600];
  snprintf(bin, sizeof bin, "%s", DAMO_CLI_PATH);
  snprintf(out, sizeof out, "%s/%s", dirname(bin), name);
  return out;
}

/* The JSON object a node script printed: the last line of its output that starts with '{'. */
static cJSON *node_json(void) {
  const char *line = cli_out;
  for (const char *p = cli_out; (p = strstr(p, "\n{")); p++) line = p + 1;
  return cJSON_Parse(line);
}

static void test_openai_client_and_page(void) {
  if (skipped) return;
  if (!have_clients()) {
    fprintf(stderr, "  (skipped: needs node, npm openai and playwright-core and chromium: sh scripts/setup.sh --browser)\n");
    return;
  }
  damo_bpe *bpe = NULL;
  const int gpt = damo_bpe_load(NULL, &bpe) == DAMO_OK;
  damo_bpe_free(bpe);
  if (gpt) {
    char gdir[300], args[400];
    snprintf(gdir, sizeof gdir, "%s/gpt", dir);
    damo_gpt2_config cfg = {2, 2, 32, 64, 50257, 1e-5f};
    damo_gpt2 *g = NULL;
    CHECK(damo_gpt2_new(&cfg, 12, &g) == DAMO_OK && damo_gpt2_save(g, gdir) == DAMO_OK);
    damo_gpt2_free(g);
    server s;
    snprintf(args, sizeof args, "--model %s --slots 2", gdir);
    CHECK(server_start(&s, args) == 1 && wait_ready(&s));
    char *want = complete(s.port, "The sea was", 10, ", \"ignore_eos\": true", NULL);
    int rc = run("node %s/tests/serve_openai.mjs http://127.0.0.1:%d/v1 'The sea was' 10", DAMO_SOURCE_DIR, s.port);
    cJSON *j = node_json();
    const cJSON *c = cJSON_GetObjectItem(j, "completion"), *st = cJSON_GetObjectItem(j, "streamed");
    const cJSON *chat = cJSON_GetObjectItem(j, "chat"), *chat_st = cJSON_GetObjectItem(j, "chat_streamed");
    const cJSON *err = cJSON_GetObjectItem(j, "error"), *chunks = cJSON_GetObjectItem(j, "chunks");
    CHECK_MSG(rc == 0 && cJSON_IsString(c) && !strcmp(c->valuestring, want) && cJSON_IsString(st) &&
              !strcmp(st->valuestring, want) && cJSON_GetNumberValue(chunks) >= 3 && cJSON_IsString(chat) &&
              cJSON_IsString(chat_st) && !strcmp(chat->valuestring, chat_st->valuestring) && cJSON_IsString(err) &&
              !strncmp(err->valuestring, "400 ", 4) && !strcmp(cJSON_GetObjectItem(j, "model")->valuestring, "gpt"),
              "want '%s': %s", want, cli_out);
    cJSON_Delete(j);
    free(want);
    /* the playground streams the same greedy text the API gives */
    want = complete(s.port, "The sea was", 12, "", NULL);
    rc = run("node %s/tests/serve_page.mjs http://127.0.0.1:%d/ %s 'The sea was'", DAMO_SOURCE_DIR, s.port,
             build_path("serve_page_gpt2.png"));
    j = node_json();
    c = cJSON_GetObjectItem(j, "completion");
    CHECK_MSG(rc == 0 && cJSON_IsString(c) && !strcmp(c->valuestring, want) &&
              cJSON_GetArraySize(cJSON_GetObjectItem(j, "errors")) == 0, "want '%s': %s", want, cli_out);
    cJSON_Delete(j);
    free(want);
    CHECK(server_stop(&s) == 0);
  }
  /* the playground on a picture classifier: an uploaded picture gets the label the API gives */
  char cdir[300], args[400], png[300];
  snprintf(cdir, sizeof cdir, "%s/clf", dir);
  damo_model *m = NULL;
  CHECK(damo_model_from_config_json("{\"input_shape\": [28, 28, 1], \"layers\": [{\"type\": \"rescaling\", \"scale\": "
                                    "0.0039215686}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 10, "
                                    "\"activation\": \"softmax\"}]}", "test", &m) == DAMO_OK &&
        damo_model_build(m, 9) == DAMO_OK && damo_model_save(m, cdir) == DAMO_OK);
  damo_model_free(m);
  const int64_t shape[3] = {28, 28, 1};
  damo_tensor *img = damo_tensor_new(DAMO_F32, 3, shape);
  for (int i = 0; i < 784; i++) damo_tensor_f32(img)[i] = (i / 28 > 6 && i / 28 < 22 && i % 28 > 8 && i % 28 < 20) ? 220 : 0;
  snprintf(png, sizeof png, "%s/item.png", dir);
  CHECK(damo_image_save_png(png, img) == DAMO_OK);
  damo_tensor_free(img);
  server s;
  snprintf(args, sizeof args, "--model %s", cdir);
  CHECK(server_start(&s, args) == 1 && wait_ready(&s));
  FILE *f = fopen(png, "rb");
  unsigned char raw[8192];
  size_t n = f ? fread(raw, 1, sizeof raw, f) : 0;
  if (f) fclose(f);
  response r = http(s.port, "POST", "/v1/predict", "image/png", raw, n);
  cJSON *j = cJSON_Parse(r.body ? r.body : "");
  const cJSON *label = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "predictions"), 0), "label");
  int rc = run("node %s/tests/serve_page.mjs http://127.0.0.1:%d/ %s %s", DAMO_SOURCE_DIR, s.port,
               build_path("serve_page_picture.png"), png);
  cJSON *page = node_json();
  const cJSON *shown = cJSON_GetObjectItem(page, "label");
  CHECK_MSG(rc == 0 && cJSON_IsString(label) && cJSON_IsString(shown) && !strcmp(shown->valuestring, label->valuestring) &&
            cJSON_GetNumberValue(cJSON_GetObjectItem(page, "bars")) == 5 &&
            cJSON_IsString(cJSON_GetObjectItem(page, "drawn")), "API %s, page %s", r.body, cli_out);
  CHECK(access(build_path("serve_page_picture.png"), R_OK) == 0);
  cJSON_Delete(j);
  cJSON_Delete(page);
  free(r.body);
  CHECK(server_stop(&s) == 0);
  /* and on the text model: a pasted mail gets damo predict's label */
  char model[300], want[32] = "";
  double want_p;
  snprintf(model, sizeof model, "%s/tm", dir);
  snprintf(args, sizeof args, "--model %s", model);
  CHECK(cli_top(model, tmp_path("mails/spam/005.txt"), want, &want_p));
  want[strcspn(want, ",")] = '\0';
  CHECK(server_start(&s, args) == 1 && wait_ready(&s));
  rc = run("node %s/tests/serve_page.mjs http://127.0.0.1:%d/ %s %s", DAMO_SOURCE_DIR, s.port,
           build_path("serve_page_text.png"), tmp_path("mails/spam/005.txt"));
  page = node_json();
  shown = cJSON_GetObjectItem(page, "label");
  CHECK_MSG(rc == 0 && cJSON_IsString(shown) && !strcmp(shown->valuestring, want), "want %s: %s", want, cli_out);
  cJSON_Delete(page);
  CHECK(server_stop(&s) == 0);
}

int main(void) {
  tmpdir_template("serve_text");
  if (!mkdtemp(tmpdir)) return 1;
  signal(SIGPIPE, SIG_IGN);
  RUN(test_text_lstm);
  RUN(test_bert);
  RUN(test_openai_client_and_page);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return test_summary("test_serve_text");
}
