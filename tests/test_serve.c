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

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ the server process */

typedef struct server {
  pid_t pid;
  int port;
  char log[512];
} server;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Starts `damo serve ARGS --port 0` with its output in a log, and reads the port it prints.
 * 1 when it listens, 0 when it did not start (the log says why), -1 built without the library. */
static int server_start(server *s, const char *args) {
  static int n;
  snprintf(s->log, sizeof s->log, "%s/serve_%d.log", tmpdir, n++);
  s->pid = fork();
  if (s->pid == 0) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s serve %s --port 0 > %s 2>&1", DAMO_CLI_PATH, args, s->log);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  for (double t0 = now(); now() - t0 < 30;) {
    FILE *f = fopen(s->log, "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
      const char *at = strstr(line, "http://127.0.0.1:");
      if (at) {
        s->port = atoi(at + 17);
        fclose(f);
        return 1;
      }
      if (strstr(line, "without libmicrohttpd")) {
        fclose(f);
        return -1;
      }
    }
    if (f) fclose(f);
    int status;
    if (waitpid(s->pid, &status, WNOHANG) == s->pid) return 0;
    usleep(20000);
  }
  return 0;
}

/* SIGTERM, then its exit status (-1: killed after 20 s). */
static int server_stop(server *s) {
  kill(s->pid, SIGTERM);
  for (double t0 = now(); now() - t0 < 20;) {
    int status;
    if (waitpid(s->pid, &status, WNOHANG) == s->pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    usleep(20000);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  return -1;
}

static int log_has(const server *s, const char *needle) {
  FILE *f = fopen(s->log, "r");
  char buf[65536];
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  if (f) fclose(f);
  buf[n] = '\0';
  return strstr(buf, needle) != NULL;
}

/* ------------------------------------------------------------------ a tiny HTTP/1.0 client */

typedef struct response {
  int status;
  char *body; /* malloc'd, NUL-terminated */
  size_t len;
  char type[128];
} response;

/* One request; HTTP/1.0 so the server closes the connection after the body (no chunks). */
static response http(int port, const char *method, const char *path, const char *type, const void *body, size_t len) {
  response r = {0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0) close(fd);
    r.status = -1;
    return r;
  }
  char head[512];
  int n = snprintf(head, sizeof head, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s%s%sContent-Length: %zu\r\n\r\n", method, path,
                   type ? "Content-Type: " : "", type ? type : "", type ? "\r\n" : "", len);
  ssize_t w = write(fd, head, (size_t)n);
  for (size_t off = 0; w >= 0 && off < len; off += (size_t)w) w = write(fd, (const char *)body + off, len - off);
  size_t cap = 65536, got = 0;
  char *buf = malloc(cap);
  for (ssize_t k; buf && (k = read(fd, buf + got, cap - got - 1)) > 0;) {
    got += (size_t)k;
    if (cap - got < 4096) buf = realloc(buf, cap *= 2);
  }
  close(fd);
  if (!buf) return r;
  buf[got] = '\0';
  char *end = strstr(buf, "\r\n\r\n");
  r.status = end ? atoi(buf + 9) : -1;
  const char *t = strstr(buf, "\r\nContent-Type: ");
  if (t && end && t < end) sscanf(t + 16, "%127[^\r]", r.type);
  if (end) {
    r.len = got - (size_t)(end + 4 - buf);
    memmove(buf, end + 4, r.len + 1);
  }
  r.body = buf;
  return r;
}

static response get(int port, const char *path) { return http(port, "GET", path, NULL, NULL, 0); }
static response post(int port, const char *path, const char *json) {
  return http(port, "POST", path, "application/json", json, strlen(json));
}

/* The error object's message of an OpenAI-shaped error body ("" when it is not one). */
static const char *error_message(const response *r) {
  static char msg[1024];
  msg[0] = '\0';
  cJSON *j = cJSON_Parse(r->body ? r->body : "");
  const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message");
  const cJSON *type = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type");
  if (cJSON_IsString(m) && cJSON_IsString(type)) snprintf(msg, sizeof msg, "%s", m->valuestring);
  cJSON_Delete(j);
  return msg;
}

static char *base64(const unsigned char *d, size_t n) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *o = malloc(4 * (n / 3 + 1) + 1), *p = o;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
    *p++ = a[v >> 18 & 63], *p++ = a[v >> 12 & 63];
    *p++ = i + 1 < n ? a[v >> 6 & 63] : '=';
    *p++ = i + 2 < n ? a[v & 63] : '=';
  }
  *p = '\0';
  return o;
}

/* The "probabilities" of prediction k of a /v1/predict body into p (C of them); 1 on success. */
static int probabilities(const char *body, int k, float *p, int C) {
  cJSON *j = cJSON_Parse(body);
  const cJSON *row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "predictions"), k);
  const cJSON *a = cJSON_GetObjectItem(row, "probabilities");
  int ok = cJSON_GetArraySize(a) == C;
  for (int c = 0; ok && c < C; c++) p[c] = (float)cJSON_GetArrayItem(a, c)->valuedouble;
  cJSON_Delete(j);
  return ok;
}

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

static int wait_ready(const server *s) {
  for (double t0 = now(); now() - t0 < 20; usleep(20000)) {
    response r = get(s->port, "/health");
    const int ok = r.status == 200;
    free(r.body);
    if (ok) return 1;
  }
  return 0;
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
  free(json);
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
            strstr(r.body, "damo_requests_total{endpoint=\"/v1/predict\",code=\"200\"} 3") &&
            strstr(r.body, "damo_requests_total{endpoint=\"/v1/predict\",code=\"413\"} 1") &&
            strstr(r.body, "# TYPE damo_request_duration_seconds histogram") && strstr(r.body, "damo_batch_size_count 3"),
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

/* A sample's value: the line that starts with name (HELP and TYPE lines start with '#'). */
static double metric(const char *text, const char *name) {
  for (const char *at = text; at && *at; at = strchr(at, '\n'), at = at ? at + 1 : NULL)
    if (!strncmp(at, name, strlen(name))) return atof(at + strlen(name));
  return -1;
}

static void test_batching(void) {
  if (skipped) return;
  server s;
  char args[1024];
  snprintf(args, sizeof args, "--model %s --max-batch 8 --batch-wait-ms 400", clf_dir);
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
  snprintf(args, sizeof args, "--model %s --max-batch 64 --batch-wait-ms 1500 --queue 1 --timeout-s 0.5", clf_dir);
  CHECK(server_start(&s, args) == 1 && wait_ready(&s));
  client a = {.port = s.port, .seed = 1};
  pthread_t th;
  pthread_create(&th, NULL, client_predict, &a);
  usleep(200000);
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
  usleep(300000);
  const double t0 = now();
  CHECK(server_stop(&s) == 0); /* SIGTERM: the waiting request runs at once and is answered */
  pthread_join(th, NULL);
  CHECK_MSG(c.r.status == 200 && now() - t0 < 2.5, "%d after %.2f s: %s", c.r.status, now() - t0, c.r.body);
  CHECK(log_has(&s, "stopping: 1 request(s) in flight"));
  free(c.r.body);
}

/* ------------------------------------------------------------------ GPT-2 */

static char gpt_dir[512];

/* The text of a completion body (choices[0].text or .message.content), malloc'd; finish into why. */
static char *completion_text(const char *body, char *why) {
  cJSON *j = cJSON_Parse(body);
  const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
  const cJSON *t = cJSON_GetObjectItem(c, "text");
  if (!t) t = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "message"), "content");
  const cJSON *f = cJSON_GetObjectItem(c, "finish_reason");
  if (why) snprintf(why, 16, "%s", cJSON_IsString(f) ? f->valuestring : "");
  char *s = strdup(cJSON_IsString(t) ? t->valuestring : "<none>");
  cJSON_Delete(j);
  return s;
}

/* A stream's events joined: the text pieces (or deltas) in order; events counted, [DONE] last
 * and the last finish_reason reported. */
static char *stream_text(const char *body, int *events, int *done_last, char *why) {
  size_t cap = strlen(body) + 1, len = 0;
  char *out = calloc(1, cap);
  *events = 0, *done_last = 0, why[0] = '\0';
  for (const char *p = body; (p = strstr(p, "data: "));) {
    p += 6;
    const char *end = strstr(p, "\n\n");
    if (!end) break;
    (*events)++;
    *done_last = !strncmp(p, "[DONE]", 6) && !strstr(end + 2, "data: ");
    char *ev = strndup(p, (size_t)(end - p));
    cJSON *j = cJSON_Parse(ev), *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *t = cJSON_GetObjectItem(c, "text");
    if (!t) t = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "delta"), "content");
    if (cJSON_IsString(t)) {
      memcpy(out + len, t->valuestring, strlen(t->valuestring));
      len += strlen(t->valuestring);
    }
    const cJSON *f = cJSON_GetObjectItem(c, "finish_reason");
    if (cJSON_IsString(f)) snprintf(why, 16, "%s", f->valuestring);
    cJSON_Delete(j);
    free(ev);
    p = end;
  }
  return out;
}

static char *complete(int port, const char *prompt, int max_tokens, const char *extra, char *why) {
  char body[2048];
  snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"max_tokens\": %d%s%s}", prompt, max_tokens,
           strstr(extra, "temperature") ? "" : ", \"temperature\": 0", extra);
  response r = post(port, "/v1/completions", body);
  CHECK_MSG(r.status == 200, "%d %s", r.status, r.body);
  char *t = completion_text(r.body ? r.body : "", why);
  free(r.body);
  return t;
}

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
