/* serve_client.h - what the tests of `damo serve` share: starting the real binary on a free
 * loopback port (its output in a log; the port read from its first line), stopping it with
 * SIGTERM, and a small HTTP/1.0 client over a socket (the server closes the connection after
 * each answer, so no chunked bodies to undo). Needs tmpfiles.h and cli_run.h first. */
#ifndef DAMO_TEST_SERVE_CLIENT_H
#define DAMO_TEST_SERVE_CLIENT_H
#include "damo.h"
#include "harness.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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

static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Starts `damo serve ARGS --port 0` with its output in a log, and reads the port it prints.
 * 1 when it listens, 0 when it did not start (the log says why), -1 built without the library. */
static inline int server_start(server *s, const char *args) {
  static int n;
  snprintf(s->log, sizeof s->log, "%s/serve_%d.log", tmpdir, n++);
  s->pid = fork();
  if (s->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* a test that dies takes its server with it */
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
static inline int server_stop(server *s) {
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

static inline int log_has(const server *s, const char *needle) {
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
static inline response http(int port, const char *method, const char *path, const char *type, const void *body, size_t len) {
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

static inline response get(int port, const char *path) { return http(port, "GET", path, NULL, NULL, 0); }
static inline response post(int port, const char *path, const char *json) {
  return http(port, "POST", path, "application/json", json, strlen(json));
}

/* The error object's message of an OpenAI-shaped error body ("" when it is not one). */
static inline const char *error_message(const response *r) {
  static char msg[1024];
  msg[0] = '\0';
  cJSON *j = cJSON_Parse(r->body ? r->body : "");
  const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message");
  const cJSON *type = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type");
  if (cJSON_IsString(m) && cJSON_IsString(type)) snprintf(msg, sizeof msg, "%s", m->valuestring);
  cJSON_Delete(j);
  return msg;
}

static inline char *base64(const unsigned char *d, size_t n) {
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
static inline int probabilities(const char *body, int k, float *p, int C) {
  cJSON *j = cJSON_Parse(body);
  const cJSON *row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "predictions"), k);
  const cJSON *a = cJSON_GetObjectItem(row, "probabilities");
  int ok = cJSON_GetArraySize(a) == C;
  for (int c = 0; ok && c < C; c++) p[c] = (float)cJSON_GetArrayItem(a, c)->valuedouble;
  cJSON_Delete(j);
  return ok;
}

static inline int wait_ready(const server *s) {
  for (double t0 = now(); now() - t0 < 20; usleep(20000)) {
    response r = get(s->port, "/health");
    const int ok = r.status == 200;
    free(r.body);
    if (ok) return 1;
  }
  return 0;
}

/* A sample's value: the line that starts with name (HELP and TYPE lines start with '#'). */
static inline double metric(const char *text, const char *name) {
  for (const char *at = text; at && *at; at = strchr(at, '\n'), at = at ? at + 1 : NULL)
    if (!strncmp(at, name, strlen(name))) return atof(at + strlen(name));
  return -1;
}

/* Polls /metrics until the sample name reads want (e.g. a request has reached the queue), at most
 * seconds: sleeping a fixed time instead was flaky on a loaded 2-core CI machine. */
static inline int wait_metric(int port, const char *name, double want, double seconds) {
  for (double t0 = now(); now() - t0 < seconds; usleep(10000)) {
    response r = get(port, "/metrics");
    const double v = r.status == 200 ? metric(r.body, name) : -1;
    free(r.body);
    if (v == want) return 1;
  }
  return 0;
}

/* The text of a completion body (choices[0].text or .message.content), malloc'd; finish into why. */
static inline char *completion_text(const char *body, char *why) {
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
static inline char *stream_text(const char *body, int *events, int *done_last, char *why) {
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

static inline char *complete(int port, const char *prompt, int max_tokens, const char *extra, char *why) {
  char body[2048];
  snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"max_tokens\": %d%s%s}", prompt, max_tokens,
           strstr(extra, "temperature") ? "" : ", \"temperature\": 0", extra);
  response r = post(port, "/v1/completions", body);
  CHECK_MSG(r.status == 200, "%d %s", r.status, r.body);
  char *t = completion_text(r.body ? r.body : "", why);
  free(r.body);
  return t;
}

/* Seeded mutations of valid bodies (bytes flipped, cut, doubled, stray bytes and NULs, UTF-8
 * junk) posted to path: every answer must be a status the server means (2xx, 4xx, 503) with a
 * JSON body or an event stream, and the server must still be healthy after. Returns how
 * many answers were 200. */
static inline int hammer(int port, const char *path, const char *const *bodies, int n_bodies, int rounds) {
  damo_rng r;
  damo_rng_seed(&r, 2024);
  int ok = 0;
  for (int i = 0; i < rounds; i++) {
    const char *base = bodies[i % n_bodies];
    size_t n = strlen(base), cap = 2 * n + 64;
    char *b = malloc(cap);
    memcpy(b, base, n);
    for (int k = 0, edits = 1 + (int)damo_rng_below(&r, 4); k < edits; k++) {
      size_t at = n ? damo_rng_below(&r, (uint32_t)n) : 0;
      switch (damo_rng_below(&r, 6)) {
      case 0: b[at] = (char)damo_rng_below(&r, 256); break;                 /* any byte */
      case 1: n = at; break;                                               /* cut */
      case 2: if (n + 8 < cap) { memmove(b + at + 4, b + at, n - at); memcpy(b + at, "\xff\xfe\x00\"", 4); n += 4; } break;
      case 3: if (2 * n < cap) { memcpy(b + n, b, n); n *= 2; } break;     /* doubled */
      case 4: b[at] = "{}[],:\"0-e9"[damo_rng_below(&r, 12)]; break;       /* JSON punctuation */
      default: if (n + 24 < cap) { memmove(b + at + 20, b + at, n - at); memcpy(b + at, "1e308,-99999999999,\"\\u", 20); n += 20; }
      }
    }
    response a = http(port, "POST", path, "application/json", b, n);
    const int meant = (a.status >= 200 && a.status < 300) || (a.status >= 400 && a.status < 430) || a.status == 503;
    const int shaped = a.body && (a.body[0] == '{' || !strncmp(a.body, "data: ", 6));
    CHECK_MSG(meant && shaped, "mutation %d of body %d: status %d, %.200s", i, i % n_bodies, a.status, a.body ? a.body : "");
    ok += a.status == 200;
    free(a.body);
    free(b);
  }
  response h = get(port, "/health");
  CHECK_MSG(h.status == 200, "after %d mutated requests: /health %d", rounds, h.status);
  free(h.body);
  return ok;
}

#endif
