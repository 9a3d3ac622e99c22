/* test_serve.c - `damo serve` from the outside: the test starts the real binary on a free
 * loopback port and talks HTTP to it with a small socket client. Checked: /health, the model
 * card, predictions equal to the library's on the same inputs (numbers, a base64 picture, a raw
 * picture body), dynamic batching of concurrent requests (the /metrics histogram), every error
 * path (400 malformed, wrong type, wrong size, undecodable picture; 404; 405; 413; 429; 503
 * timeout), SIGTERM draining a running request then exiting 0; and for GPT-2 (with the
 * installed vocabulary) completions equal to `damo generate --temperature 0`, streams whose
 * events add up to the same text and end with [DONE], chat, stop sequences, seeds, and more
 * concurrent streams than slots. Skipped whole when damo was built without libmicrohttpd. */
#define _DEFAULT_SOURCE
#include "cli_run.h"
#include "damo.h"
#include "harness.h"
#include "tmpfiles.h"
#include "serve_client.h"

#include <pthread.h>

/* ------------------------------------------------------------------ classifiers */

static int skipped; /* built without libmicrohttpd */
static char clf_dir[512];
static damo_model *clf; /* the saved classifier, loaded here: the reference predictions */
enum { C = 10, PIXELS = 784 };

static void make_classifier(void) {
  snprintf(clf_dir, sizeof clf_dir, "%s", tmp_path("clf"));
  damo_model *m = NULL;
  const char *json = "{\"input_shape\": [28, 28], \"layers\": [{\"type\": \"rescaling\", \"scale\": 0.00392156862745098},"
                     "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 24, \"activation\": \"relu\"},"
                     "{\"type\": \"dense\", \"units\": 10, \"activation\": \"softmax\"}]}";
  static const char *const names[C] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  CHECK(damo_model_from_config_json(json, "test", &m) == DAMO_OK && damo_model_build(m, 3) == DAMO_OK);
  CHECK(damo_model_set_class_names(m, C, names) == DAMO_OK && damo_model_save(m, clf_dir) == DAMO_OK);
  damo_model_free(m);
  CHECK(damo_model_load(clf_dir, &clf) == DAMO_OK);
}

/* The library's probabilities for n examples (n, 28, 28). */
static void reference(const float *x, int n, float *p) {
  const int64_t shape[3] = {n, 28, 28};
  damo_tensor *t = damo_tensor_new(DAMO_F32, 3, shape), *out = NULL;
  memcpy(damo_tensor_f32(t), x, (size_t)n * PIXELS * sizeof *x);
  CHECK(damo_model_predict(clf, t, 64, &out) == DAMO_OK);
  if (out) memcpy(p, damo_tensor_f32(out), (size_t)n * C * sizeof *p);
  damo_tensor_free(t);
  damo_tensor_free(out);
}

/* {"inputs": [ex0, ex1, ...]} for n examples of x, each as nested rows. */
static char *inputs_json(const float *x, int n) {
  char *s = malloc((size_t)n * PIXELS * 12 + 64), *p = s;
  p += sprintf(p, "{\"inputs\": [");
  for (int i = 0; i < n; i++) {
    p += sprintf(p, "%s[", i ? "," : "");
    for (int r = 0; r < 28; r++) {
      p += sprintf(p, "%s[", r ? "," : "");
      for (int c = 0; c < 28; c++) p += sprintf(p, "%s%.9g", c ? "," : "", (double)x[(i * 28 + r) * 28 + c]);
      p += sprintf(p, "]");
    }
    p += sprintf(p, "]");
  }
  sprintf(p, "]}");
  return s;
}

static void example(float *x, int seed) {
  for (int i = 0; i < PIXELS; i++) x[i] = (float)((i * 37 + seed * 101) % 256);
}


static void test_classifier(void) {
  make_classifier();
  server s;
  int rc = run("%s serve --port 0", DAMO_CLI_PATH);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--model DIR is required"), "%d %s", rc, cli_out);
  rc = run("%s serve --model %s --port 99999", DAMO_CLI_PATH, clf_dir);
  CHECK_MSG(rc == 2 && strstr(cli_out, "--port"), "%d %s", rc, cli_out);
  char args[1024];
  snprintf(args, sizeof args, "--model %s --max-batch 8 --batch-wait-ms 2 --max-body-mb 1", clf_dir);
  int started = server_start(&s, args);
  if (started < 0) {
    skipped = 1;
    fprintf(stderr, "  (skipped: damo was built without libmicrohttpd; sh scripts/setup.sh installs it)\n");
    return;
  }
  CHECK_MSG(started == 1 && wait_ready(&s), "the server did not start; see %s", s.log);
  response r = get(s.port, "/health");
  CHECK_MSG(r.status == 200 && strstr(r.body, "\"ok\""), "%d %s", r.status, r.body);
  free(r.body);
  /* the model card */
  r = get(s.port, "/v1/models");
  cJSON *j = cJSON_Parse(r.body), *card = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0);
  CHECK_MSG(r.status == 200 && card && !strcmp(cJSON_GetObjectItem(card, "kind")->valuestring, "classifier") &&
            !strcmp(cJSON_GetObjectItem(card, "id")->valuestring, "clf") &&
            cJSON_GetObjectItem(card, "parameters")->valuedouble == (double)damo_model_num_params(clf) &&
            !strcmp(cJSON_GetArrayItem(cJSON_GetObjectItem(card, "classes"), 1)->valuestring, "Trouser") &&
            !strcmp(cJSON_GetObjectItem(card, "input")->valuestring, "picture"), "%s", r.body);
  cJSON_Delete(j);
  free(r.body);
  /* numbers: the library's probabilities */
  float x[3 * PIXELS], want[3 * C], got[C];
  for (int i = 0; i < 3; i++) example(x + i * PIXELS, i);
  reference(x, 3, want);
  char *body = inputs_json(x, 3);
  r = post(s.port, "/v1/predict", body);
  free(body);
  CHECK_MSG(r.status == 200, "%d %s", r.status, r.body);
  for (int i = 0; i < 3; i++) {
    CHECK(probabilities(r.body, i, got, C));
    CHECK_CLOSE(got, want + i * C, C, 1e-6, 1e-5);
  }
  j = cJSON_Parse(r.body);
  const cJSON *top = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "predictions"), 0), "top");
  int best = 0;
  for (int c = 1; c < C; c++) best = want[c] > want[best] ? c : best;
  CHECK_MSG(cJSON_GetArraySize(top) == 3 && cJSON_GetObjectItem(cJSON_GetArrayItem(top, 0), "index")->valueint == best,
            "%s", r.body);
  cJSON_Delete(j);
  free(r.body);
  /* a picture: base64 in JSON, and the raw file as the body; converted as damo predict does */
  const int64_t ishape[3] = {30, 40, 3};
  damo_tensor *img = damo_tensor_new(DAMO_F32, 3, ishape), *in = NULL;
  for (int64_t i = 0; i < 30 * 40 * 3; i++) damo_tensor_f32(img)[i] = (float)((i * 7) % 200 + (i % 3) * 20);
  char png[600];
  snprintf(png, sizeof png, "%s", tmp_path("picture.png"));
  CHECK(damo_image_save_png(png, img) == DAMO_OK);
  damo_tensor_free(img);
  img = NULL;
  CHECK(damo_image_load(png, 0, &img) == DAMO_OK && damo_image_to_model_input(img, 28, 28, 1, 1, &in) == DAMO_OK);
  if (in) reference(damo_tensor_f32(in), 1, want);
  damo_tensor_free(img);
  damo_tensor_free(in);
  FILE *f = fopen(png, "rb");
  unsigned char bytes[65536];
  size_t n = f ? fread(bytes, 1, sizeof bytes, f) : 0;
  if (f) fclose(f);
  char *b64 = base64(bytes, n), *json = malloc(strlen(b64) + 64);
  sprintf(json, "{\"images\": [\"data:image/png;base64,%s\"], \"top\": 2}", b64);
  r = post(s.port, "/v1/predict", json);
  CHECK_MSG(r.status == 200 && probabilities(r.body, 0, got, C), "%d %s", r.status, r.body);
  CHECK_CLOSE(got, want, C, 1e-6, 1e-5);
  free(r.body);
  r = http(s.port, "POST", "/v1/predict", "image/png", bytes, n);
  CHECK_MSG(r.status == 200 && probabilities(r.body, 0, got, C), "%d %s", r.status, r.body);
  CHECK_CLOSE(got, want, C, 1e-6, 1e-5);
  free(r.body);
  free(b64);
  /* the playground page */
  r = get(s.port, "/");
  CHECK_MSG(r.status == 200 && strstr(r.type, "text/html") && strstr(r.body, "damo playground") &&
            strstr(r.body, "/v1/predict") && strstr(r.body, "/v1/completions"), "%d %s", r.status, r.type);
  free(r.body);
  /* bad requests: a 4xx in OpenAI's error shape naming what is wrong, never a crash */
  static const struct {
    const char *method, *path, *body;
    int status;
    const char *says;
  } bad[] = {
      {"POST", "/v1/predict", "{bad", 400, "not valid JSON"},
      {"POST", "/v1/predict", "[1, 2]", 400, "JSON object"},
      {"POST", "/v1/predict", "{}", 400, "none was given"},
      {"POST", "/v1/predict", "{\"inputs\": \"x\"}", 400, "must be an array"},
      {"POST", "/v1/predict", "{\"inputs\": [1, 2, 3]}", 400, "each example has 784"},
      {"POST", "/v1/predict", "{\"inputs\": [[1, \"a\"]]}", 400, "not a number"},
      {"POST", "/v1/predict", "{\"images\": [\"aGVsbG8gd29ybGQ=\"]}", 400, "not a readable image"},
      {"POST", "/v1/predict", "{\"images\": [\"*** not base64\"]}", 400, "not base64"},
      {"POST", "/v1/predict", "{\"images\": [3]}", 400, "not a string"},
      {"POST", "/v1/predict", "{\"texts\": [\"hello\"]}", 400, "does not read text"},
      {"POST", "/v1/predict", "{\"inputs\": [[0]], \"top\": 0}", 400, "\"top\""},
      {"GET", "/v1/predict", "", 405, "takes POST"},
      {"POST", "/v1/completions", "{\"prompt\": \"hi\"}", 404, "no endpoint"},
      {"GET", "/v1/models/other", "", 404, "no model named"},
      {"GET", "/nowhere", "", 404, "no endpoint"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = http(s.port, bad[i].method, bad[i].path, "application/json", bad[i].body, strlen(bad[i].body));
    CHECK_MSG(r.status == bad[i].status && strstr(error_message(&r), bad[i].says), "%s %s %s: %d %s", bad[i].method,
              bad[i].path, bad[i].body, r.status, r.body);
    free(r.body);
  }
  body = malloc(PIXELS * 30 + 64); /* an infinite value */
  strcpy(body, "{\"inputs\": [1e39");
  for (int i = 1; i < PIXELS; i++) strcat(body, ",0");
  strcat(body, "]}");
  r = post(s.port, "/v1/predict", body);
  CHECK_MSG(r.status == 400 && strstr(error_message(&r), "not finite"), "%d %s", r.status, r.body);
  free(r.body);
  free(body);
  /* mutated bodies: statuses the server means, never a crash */
  float one[PIXELS];
  example(one, 5);
  char *valid[3] = {inputs_json(one, 1), NULL, NULL};
  valid[1] = malloc(strlen(json) + 16);
  strcpy(valid[1], json);
  valid[2] = strdup("{\"inputs\": [[1, 2], [3]], \"top\": 2, \"invert\": \"no\"}");
  int good = hammer(s.port, "/v1/predict", (const char *const *)valid, 3, 150);
  CHECK_MSG(good > 0, "no mutated body was still valid");
  for (int i = 0; i < 3; i++) free(valid[i]);
  free(json);
  /* too large: 413, counted like the others */
  size_t big_len = 1100000;
  char *big = malloc(big_len);
  memset(big, ' ', big_len);
  r = http(s.port, "POST", "/v1/predict", "application/json", big, big_len);
  CHECK_MSG(r.status == 413 && strstr(r.body, "request_too_large"), "%d %s", r.status, r.body);
  free(r.body);
  free(big);
  r = get(s.port, "/metrics");
  CHECK_MSG(r.status == 200 && strstr(r.type, "text/plain") &&
            metric(r.body, "damo_requests_total{endpoint=\"/v1/predict\",code=\"200\"} ") == 3 + good &&
            strstr(r.body, "damo_requests_total{endpoint=\"/v1/predict\",code=\"413\"} 1") &&
            strstr(r.body, "# TYPE damo_request_duration_seconds histogram") && metric(r.body, "damo_batch_size_count ") == 3 + good,
            "%s", r.body);
  free(r.body);
  CHECK(server_stop(&s) == 0);
  CHECK(log_has(&s, "stopped after"));
}

/* Concurrent requests share model runs: 8 clients at once, up to 8 rows a batch. */
typedef struct client {
  int port, seed;
  response r;
  double delay;
} client;

static void *client_predict(void *arg) {
  client *c = arg;
  if (c->delay > 0) usleep((useconds_t)(c->delay * 1e6));
  float x[PIXELS];
  example(x, c->seed);
  char *body = inputs_json(x, 1);
  c->r = post(c->port, "/v1/predict", body);
  free(body);
  return NULL;
}


static void test_batching(void) {
  if (skipped) return;
  server s;
  char args[1024];
  snprintf(args, sizeof args, "--model %s --max-batch 8 --batch-wait-ms 2000", clf_dir); /* a full batch runs at once */
  CHECK(server_start(&s, args) == 1 && wait_ready(&s));
  client cl[8];
  pthread_t th[8];
  for (int i = 0; i < 8; i++) {
    cl[i] = (client){.port = s.port, .seed = 10 + i};
    pthread_create(&th[i], NULL, client_predict, &cl[i]);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    float x[PIXELS], want[C], got[C];
    example(x, 10 + i);
    reference(x, 1, want);
    CHECK_MSG(cl[i].r.status == 200 && probabilities(cl[i].r.body, 0, got, C), "%d %s", cl[i].r.status, cl[i].r.body);
    CHECK_CLOSE(got, want, C, 1e-6, 1e-5);
    free(cl[i].r.body);
  }
  response r = get(s.port, "/metrics");
  const double rows = metric(r.body, "damo_batch_size_sum "), batches = metric(r.body, "damo_batch_size_count ");
  CHECK_MSG(rows == 8 && batches >= 1 && batches < 8, "8 rows in %g batches (expected fewer than 8)", batches);
  free(r.body);
  CHECK(server_stop(&s) == 0);
}

/* The queue's limit (429), the request timeout (503), and SIGTERM letting a request finish. */
static void test_limits_and_drain(void) {
  if (skipped) return;
  server s;
  char args[1024];
  snprintf(args, sizeof args, "--model %s --max-batch 64 --batch-wait-ms 3000 --queue 1 --timeout-s 1", clf_dir);
  CHECK(server_start(&s, args) == 1 && wait_ready(&s));
  client a = {.port = s.port, .seed = 1};
  pthread_t th;
  pthread_create(&th, NULL, client_predict, &a);
  CHECK_MSG(wait_metric(s.port, "damo_queue_length ", 1, 0.9), "the first request never reached the queue");
  client b = {.port = s.port, .seed = 2};
  client_predict(&b); /* a waits in the queue for its batch to fill: b is one too many */
  CHECK_MSG(b.r.status == 429 && strstr(b.r.body, "rate_limit_exceeded"), "%d %s", b.r.status, b.r.body);
  pthread_join(th, NULL);
  CHECK_MSG(a.r.status == 503 && strstr(error_message(&a.r), "--timeout-s"), "%d %s", a.r.status, a.r.body);
  free(a.r.body);
  free(b.r.body);
  CHECK(server_stop(&s) == 0);

  snprintf(args, sizeof args, "--model %s --max-batch 64 --batch-wait-ms 3000", clf_dir);
  CHECK(server_start(&s, args) == 1 && wait_ready(&s));
  client c = {.port = s.port, .seed = 3};
  pthread_create(&th, NULL, client_predict, &c);
  CHECK_MSG(wait_metric(s.port, "damo_queue_length ", 1, 2.5), "the request never reached the queue");
  const double t0 = now();
  CHECK(server_stop(&s) == 0); /* SIGTERM: the waiting request runs at once and is answered */
  pthread_join(th, NULL);
  CHECK_MSG(c.r.status == 200 && now() - t0 < 2.5, "%d after %.2f s: %s", c.r.status, now() - t0, c.r.body);
  /* the drain starts with the request still queued; in flight may also count the last /metrics
   * poll (the server's completion can trail the client's read of it) */
  CHECK(log_has(&s, "request(s) in flight, 1 job(s) queued"));
  free(c.r.body);
}

/* ------------------------------------------------------------------ GPT-2 */

static char gpt_dir[512];




typedef struct streamer {
  int port;
  const char *prompt;
  char *text;
  int status;
} streamer;

static void *stream_one(void *arg) {
  streamer *st = arg;
  char body[512];
  snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"max_tokens\": 24, \"temperature\": 0, \"ignore_eos\": true, "
           "\"stream\": true}", st->prompt);
  response r = post(st->port, "/v1/completions", body);
  int events, done;
  char why[16];
  st->status = r.status;
  st->text = stream_text(r.body ? r.body : "", &events, &done, why);
  if (!done) st->status = -2;
  free(r.body);
  return NULL;
}

static void test_gpt2(void) {
  if (skipped) return;
  damo_bpe *bpe = NULL;
  if (damo_bpe_load(NULL, &bpe) != DAMO_OK) {
    fprintf(stderr, "  (skipped: GPT-2 vocabulary not installed)\n");
    return;
  }
  damo_bpe_free(bpe);
  snprintf(gpt_dir, sizeof gpt_dir, "%s", tmp_path("gpt"));
  damo_gpt2_config cfg = {2, 2, 32, 64, 50257, 1e-5f};
  damo_gpt2 *g = NULL;
  CHECK(damo_gpt2_new(&cfg, 11, &g) == DAMO_OK && damo_gpt2_save(g, gpt_dir) == DAMO_OK);
  damo_gpt2_free(g);
  server s;
  char args[1024];
  snprintf(args, sizeof args, "--model %s --slots 2 --max-tokens 48", gpt_dir);
  CHECK(server_start(&s, args) == 1 && wait_ready(&s));
  response r = get(s.port, "/v1/models");
  CHECK_MSG(r.status == 200 && strstr(r.body, "\"kind\":\"gpt2\"") && strstr(r.body, "\"context_length\":64"), "%s",
            r.body);
  free(r.body);
  /* temperature 0 equals damo generate --temperature 0 */
  char why[16];
  char *text = complete(s.port, "The sea was", 20, ", \"ignore_eos\": true", why);
  int rc = run("%s generate --model %s --prompt 'The sea was' --max-new-tokens 20 --temperature 0", DAMO_CLI_PATH,
               gpt_dir);
  char expect[4096];
  snprintf(expect, sizeof expect, "The sea was%s\n", text);
  CHECK_MSG(rc == 0 && !strncmp(cli_out, expect, strlen(expect)) && !strcmp(why, "length"), "server '%s' (%s), generate '%s'",
            text, why, cli_out);
  /* a seed repeats, and equals damo generate's with that seed */
  char *s1 = complete(s.port, "The sea was", 12, ", \"ignore_eos\": true, \"temperature\": 0.9, \"seed\": 7", NULL);
  char *s2 = complete(s.port, "The sea was", 12, ", \"ignore_eos\": true, \"temperature\": 0.9, \"seed\": 7", NULL);
  rc = run("%s generate --model %s --prompt 'The sea was' --max-new-tokens 12 --temperature 0.9 --seed 7",
           DAMO_CLI_PATH, gpt_dir);
  snprintf(expect, sizeof expect, "The sea was%s\n", s1);
  CHECK_MSG(!strcmp(s1, s2) && !strncmp(cli_out, expect, strlen(expect)), "'%s' '%s' '%s'", s1, s2, cli_out);
  free(s1);
  free(s2);
  /* a stream adds up to the same text, and ends with [DONE] */
  r = post(s.port, "/v1/completions", "{\"prompt\": \"The sea was\", \"max_tokens\": 20, \"temperature\": 0, "
                                      "\"ignore_eos\": true, \"stream\": true}");
  int events = 0, done = 0;
  char *streamed = stream_text(r.body ? r.body : "", &events, &done, why);
  CHECK_MSG(r.status == 200 && strstr(r.type, "text/event-stream") && done && events >= 3 && !strcmp(streamed, text) &&
            !strcmp(why, "length"), "%d events, done %d, '%s' vs '%s': %s", events, done, streamed, text, r.body);
  free(streamed);
  free(r.body);
  /* a stop sequence ends the text before it */
  if (strlen(text) > 8) {
    char stop[8], extra[128], *at;
    memcpy(stop, text + 4, 3);
    stop[3] = '\0';
    int clean = !strpbrk(stop, "\"\\");
    snprintf(extra, sizeof extra, ", \"ignore_eos\": true, \"stop\": [\"%s\"]", stop);
    char *cut = clean ? complete(s.port, "The sea was", 20, extra, why) : NULL;
    if (cut && (at = strstr(text, stop)))
      CHECK_MSG(strlen(cut) == (size_t)(at - text) && !strncmp(cut, text, strlen(cut)) && !strcmp(why, "stop"),
                "stop '%s': '%s' (%s) from '%s'", stop, cut, why, text);
    free(cut);
  }
  /* chat, whole and streamed */
  r = post(s.port, "/v1/chat/completions", "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
                                           "{\"role\": \"user\", \"content\": \"Hello\"}], \"max_tokens\": 6}");
  CHECK_MSG(r.status == 200 && strstr(r.body, "\"object\":\"chat.completion\"") && strstr(r.body, "\"role\":\"assistant\"") &&
            strstr(r.body, "\"completion_tokens\":"), "%d %s", r.status, r.body);
  free(r.body);
  r = post(s.port, "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
                                           "\"text\": \"Hello\"}]}], \"max_tokens\": 6, \"stream\": true, "
                                           "\"stream_options\": {\"include_usage\": true}}");
  CHECK_MSG(r.status == 200 && strstr(r.body, "chat.completion.chunk") && strstr(r.body, "\"delta\":{\"role\":\"assistant\"") &&
            strstr(r.body, "\"usage\":{\"prompt_tokens\"") && strstr(r.body, "data: [DONE]\n\n"), "%d %s", r.status, r.body);
  free(r.body);
  /* three streams on two slots: each is what it would be alone */
  static const char *const prompts[3] = {"Once upon a time", "In the beginning", "Call me Ishmael"};
  char *alone[3];
  for (int i = 0; i < 3; i++) alone[i] = complete(s.port, prompts[i], 24, ", \"ignore_eos\": true", NULL);
  streamer st[3];
  pthread_t th[3];
  for (int i = 0; i < 3; i++) {
    st[i] = (streamer){.port = s.port, .prompt = prompts[i]};
    pthread_create(&th[i], NULL, stream_one, &st[i]);
  }
  for (int i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    CHECK_MSG(st[i].status == 200 && !strcmp(st[i].text, alone[i]), "%d '%s' vs '%s'", st[i].status, st[i].text, alone[i]);
    free(st[i].text);
    free(alone[i]);
  }
  /* bad requests */
  static const struct {
    const char *path, *body, *says;
  } bad[] = {
      {"/v1/completions", "{\"max_tokens\": 4}", "\"prompt\""},
      {"/v1/completions", "{\"prompt\": \"a\", \"max_tokens\": 0}", "\"max_tokens\""},
      {"/v1/completions", "{\"prompt\": \"a\", \"max_tokens\": 49}", "\"max_tokens\""},
      {"/v1/completions", "{\"prompt\": \"a\", \"temperature\": \"hot\"}", "\"temperature\""},
      {"/v1/completions", "{\"prompt\": \"a\", \"n\": 2}", "\"n\""},
      {"/v1/completions", "{\"prompt\": [1, 2, 99999]}", "token id"},
      {"/v1/completions", "{\"prompt\": \"a\", \"stop\": [1]}", "\"stop\""},
      {"/v1/completions", "{\"prompt\": \"a\", \"stream\": \"yes\"}", "\"stream\""},
      {"/v1/chat/completions", "{\"messages\": \"hi\"}", "\"messages\""},
      {"/v1/chat/completions", "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "robot"},
      {"/v1/chat/completions", "{\"messages\": []}", "empty"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = post(s.port, bad[i].path, bad[i].body);
    CHECK_MSG(r.status == 400 && strstr(error_message(&r), bad[i].says), "%s %s: %d %s", bad[i].path, bad[i].body,
              r.status, r.body);
    free(r.body);
  }
  char long_prompt[1200] = "{\"prompt\": \"";
  for (int i = 0; i < 80; i++) strcat(long_prompt, "word ");
  strcat(long_prompt, "\"}");
  r = post(s.port, "/v1/completions", long_prompt);
  CHECK_MSG(r.status == 400 && strstr(error_message(&r), "context is 64"), "%d %s", r.status, r.body);
  free(r.body);
  /* a client that hangs up mid-stream frees its slot; the server goes on */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s.port)};
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  const char *req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 82\r\n\r\n"
                    "{\"prompt\": \"The sea\", \"max_tokens\": 48, \"stream\": true, \"ignore_eos\": true, \"seed\": 1}";
  char first[256];
  CHECK(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && write(fd, req, strlen(req)) == (ssize_t)strlen(req) &&
        read(fd, first, sizeof first) > 0);
  close(fd);
  double busy = 1;
  for (double t0 = now(); busy != 0 && now() - t0 < 10; usleep(50000)) {
    r = get(s.port, "/metrics");
    busy = metric(r.body, "damo_slots_busy ");
    free(r.body);
  }
  CHECK_MSG(busy == 0, "the slot of a client that hung up is still busy");
  /* mutated bodies: statuses the server means, never a crash */
  static const char *const valid[] = {
      "{\"prompt\": \"The sea\", \"max_tokens\": 3, \"temperature\": 0}",
      "{\"prompt\": [464, 5417], \"max_tokens\": 2, \"stream\": true, \"stop\": [\"a\"]}",
      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 2, \"top_p\": 0.5, \"top_k\": 3}"};
  int good = hammer(s.port, "/v1/completions", valid, 2, 120);
  good += hammer(s.port, "/v1/chat/completions", valid + 2, 1, 60);
  CHECK_MSG(good > 0, "no mutated body was still valid (the mutations are too strong to test much)");
  r = get(s.port, "/metrics");
  CHECK_MSG(metric(r.body, "damo_completion_tokens_total ") >= 20 * 2 + 12 * 2 && metric(r.body, "damo_tokens_per_second ") > 0,
            "%s", r.body);
  free(r.body);
  CHECK(server_stop(&s) == 0);
  free(text);
}

int main(void) {
  tmpdir_template("serve");
  if (!mkdtemp(tmpdir)) return 1;
  signal(SIGPIPE, SIG_IGN);
  RUN(test_classifier);
  RUN(test_batching);
  RUN(test_limits_and_drain);
  RUN(test_gpt2);
  damo_model_free(clf);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return test_summary("test_serve");
}
