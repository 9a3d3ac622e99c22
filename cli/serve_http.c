/* serve_http.c - the HTTP side of `damo serve` on libmicrohttpd (a thread per connection, so
 * a handler may wait for its job and a stream's reader may wait for its next event). Here:
 * request bodies and their size limit, routing (the common endpoints here, the rest to the
 * model's route), replies in JSON with errors in OpenAI's shape, server-sent event streams,
 * /health, /v1/models and /metrics in Prometheus' text format. */
#define _DEFAULT_SOURCE
#include "serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#ifdef DAMO_HAVE_MHD
#include <microhttpd.h>
#endif

/* ------------------------------------------------------------------ replies */

void serve_reply_json(serve_reply *rp, int status, cJSON *j) {
  char *text = j ? cJSON_PrintUnformatted(j) : NULL;
  cJSON_Delete(j);
  if (!text) {
    rp->status = 500, rp->content_type = "application/json";
    rp->body = strdup("{\"error\": {\"message\": \"out of memory\", \"type\": \"server_error\", \"param\": null, "
                      "\"code\": null}}");
    rp->len = rp->body ? strlen(rp->body) : 0;
    return;
  }
  rp->status = status, rp->content_type = "application/json", rp->body = text, rp->len = strlen(text);
}

void serve_reply_error(serve_reply *rp, int status, const char *type, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
  cJSON_AddStringToObject(e, "message", msg);
  cJSON_AddStringToObject(e, "type", type);
  cJSON_AddNullToObject(e, "param");
  if (status == 429) cJSON_AddStringToObject(e, "code", "rate_limit_exceeded");
  else if (status == 413) cJSON_AddStringToObject(e, "code", "request_too_large");
  else cJSON_AddNullToObject(e, "code");
  serve_reply_json(rp, status, j);
}

cJSON *serve_parse_object(const serve_request *rq, serve_reply *rp) {
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithLengthOpts(rq->body, rq->body_len, &end, 0);
  if (!j) {
    size_t at = end && end >= rq->body ? (size_t)(end - rq->body) : 0;
    serve_reply_error(rp, 400, "invalid_request_error", "the body is not valid JSON (near byte %zu of %zu)", at,
                      rq->body_len);
    return NULL;
  }
  if (!cJSON_IsObject(j)) {
    cJSON_Delete(j);
    serve_reply_error(rp, 400, "invalid_request_error", "the body must be a JSON object");
    return NULL;
  }
  return j;
}

/* ------------------------------------------------------------------ base64 */

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

unsigned char *serve_base64_decode(const char *s, size_t n, size_t *out_len) {
  if (n > 5 && !strncmp(s, "data:", 5)) { /* a data URL: the payload follows ";base64," */
    const char *comma = memchr(s, ',', n);
    if (!comma || comma - s < 7 || strncmp(comma - 7, ";base64", 7)) return NULL;
    n -= (size_t)(comma + 1 - s);
    s = comma + 1;
  }
  unsigned char *out = malloc(n / 4 * 3 + 3);
  if (!out) return NULL;
  size_t len = 0;
  unsigned acc = 0;
  int bits = 0, pad = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      pad++;
      continue;
    }
    int v = b64_value(c);
    if (v < 0 || pad) { /* a stray character, or data after the padding */
      free(out);
      return NULL;
    }
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[len++] = (unsigned char)(acc >> bits);
    }
  }
  if (bits >= 6 || pad > 2 || len == 0) { /* a lone sextet cannot end valid base64 */
    free(out);
    return NULL;
  }
  *out_len = len;
  return out;
}

/* ------------------------------------------------------------------ streams */

serve_stream *serve_stream_new(serve_server *srv, void *owner, void (*release)(void *owner)) {
  serve_stream *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->srv = srv, s->owner = owner, s->release = release, s->refs = 2;
  return s;
}

int serve_stream_event(serve_stream *s, const char *text) {
  size_t n = strlen(text), need = s->len + n + 8;
  if (need > s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 4096;
    while (cap < need) cap *= 2;
    char *grown = realloc(s->buf, cap);
    if (!grown) return 0;
    s->buf = grown, s->cap = cap;
  }
  s->len += (size_t)sprintf(s->buf + s->len, "data: %s\n\n", text);
  pthread_cond_broadcast(&s->srv->done);
  return 1;
}

void serve_stream_unref(serve_stream *s) {
  if (--s->refs > 0) return;
  if (s->release) s->release(s->owner);
  free(s->buf);
  free(s);
}

#ifdef DAMO_HAVE_MHD
/* libmicrohttpd asks for the next bytes of a stream: wait (this connection's own thread) until
 * there are some or the producer finished. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  serve_stream *s = cls;
  serve_server *srv = s->srv;
  pthread_mutex_lock(&srv->mu);
  while (s->sent == s->len && !s->finished) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&srv->done, &srv->mu, &ts);
  }
  ssize_t n;
  if (s->sent < s->len) {
    n = (ssize_t)(s->len - s->sent < max ? s->len - s->sent : max);
    memcpy(buf, s->buf + s->sent, (size_t)n);
    s->sent += (size_t)n;
  } else {
    n = MHD_CONTENT_READER_END_OF_STREAM;
  }
  pthread_mutex_unlock(&srv->mu);
  return n;
}

/* The connection let go of the stream: sent whole, or the client went away (the producer
 * sees closed and stops). */
static void stream_free(void *cls) {
  serve_stream *s = cls;
  serve_server *srv = s->srv;
  pthread_mutex_lock(&srv->mu);
  s->closed = 1;
  serve_stream_unref(s);
  pthread_mutex_unlock(&srv->mu);
}

#endif

/* ------------------------------------------------------------------ metrics */

/* The endpoints /metrics counts separately, and the bounds of its histograms. */
static const char *const endpoints[6] = {"/v1/predict", "/v1/completions", "/v1/chat/completions", "/v1/embeddings",
                                         "/health,/v1/models,/metrics,/", "other"};
static const double latency_le[SERVE_LATENCY_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                         0.5,   1,    2.5,   5,    10,  30};
static const long batch_le[SERVE_BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128};
static const int status_codes[8] = {200, 400, 404, 405, 413, 429, 503, 500};

static int endpoint_index(const char *url) {
  for (int i = 0; i < 4; i++)
    if (!strcmp(url, endpoints[i])) return i;
  if (!strcmp(url, "/health") || !strcmp(url, "/v1/models") || !strcmp(url, "/metrics") || !strcmp(url, "/")) return 4;
  return 5;
}

static int status_index(int status) {
  for (int i = 0; i < 7; i++)
    if (status_codes[i] == status) return i;
  return 7; /* everything else counts as a server error */
}

void serve_metrics_batch(serve_server *srv, long n) {
  serve_metrics *m = &srv->metrics;
  for (int i = 0; i < SERVE_BATCH_BUCKETS; i++)
    if (n <= batch_le[i]) m->batches[i]++;
  m->batch_sum += (double)n;
  m->batch_count++;
}

static void count_request(serve_server *srv, const char *url, int status, double seconds) {
  serve_metrics *m = &srv->metrics;
  m->requests[endpoint_index(url)][status_index(status)]++;
  if (status >= 400) m->errors++;
  for (int i = 0; i < SERVE_LATENCY_BUCKETS; i++)
    if (seconds <= latency_le[i]) m->latency[i]++;
  m->latency_sum += seconds;
  m->latency_count++;
}

/* Appends printf output to a growing buffer (a NULL buffer stays NULL: out of memory). */
static void put(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  if (!*buf) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < *cap - *len) {
      *len += (size_t)n;
      return;
    }
    char *grown = realloc(*buf, *cap * 2 + (size_t)n);
    if (!grown) {
      free(*buf);
      *buf = NULL;
      return;
    }
    *buf = grown, *cap = *cap * 2 + (size_t)n;
  }
}

static void metrics_reply(serve_server *srv, serve_reply *rp) {
  size_t len = 0, cap = 8192;
  char *b = malloc(cap);
  pthread_mutex_lock(&srv->mu);
  const serve_metrics *m = &srv->metrics;
  put(&b, &len, &cap, "# HELP damo_requests_total HTTP requests answered, by endpoint and status code.\n"
                      "# TYPE damo_requests_total counter\n");
  for (int e = 0; e < 6; e++)
    for (int s = 0; s < 8; s++)
      if (m->requests[e][s])
        put(&b, &len, &cap, "damo_requests_total{endpoint=\"%s\",code=\"%s\"} %ld\n", endpoints[e],
            s < 7 ? (const char *[]){"200", "400", "404", "405", "413", "429", "503"}[s] : "5xx", m->requests[e][s]);
  put(&b, &len, &cap, "# HELP damo_errors_total Requests answered with a status of 400 or more.\n"
                      "# TYPE damo_errors_total counter\ndamo_errors_total %ld\n", m->errors);
  put(&b, &len, &cap, "# HELP damo_request_duration_seconds Time from a request's first byte to its answer "
                      "(a stream: to its first event).\n# TYPE damo_request_duration_seconds histogram\n");
  for (int i = 0; i < SERVE_LATENCY_BUCKETS; i++)
    put(&b, &len, &cap, "damo_request_duration_seconds_bucket{le=\"%g\"} %ld\n", latency_le[i], m->latency[i]);
  put(&b, &len, &cap, "damo_request_duration_seconds_bucket{le=\"+Inf\"} %ld\ndamo_request_duration_seconds_sum %.6f\n"
                      "damo_request_duration_seconds_count %ld\n", m->latency_count, m->latency_sum, m->latency_count);
  put(&b, &len, &cap, "# HELP damo_batch_size Rows (or sequences) per model run.\n# TYPE damo_batch_size histogram\n");
  for (int i = 0; i < SERVE_BATCH_BUCKETS; i++)
    put(&b, &len, &cap, "damo_batch_size_bucket{le=\"%ld\"} %ld\n", batch_le[i], m->batches[i]);
  put(&b, &len, &cap, "damo_batch_size_bucket{le=\"+Inf\"} %ld\ndamo_batch_size_sum %.0f\ndamo_batch_size_count %ld\n",
      m->batch_count, m->batch_sum, m->batch_count);
  put(&b, &len, &cap, "# HELP damo_prompt_tokens_total Prompt tokens read.\n# TYPE damo_prompt_tokens_total counter\n"
                      "damo_prompt_tokens_total %ld\n", m->prompt_tokens);
  put(&b, &len, &cap, "# HELP damo_completion_tokens_total Tokens generated.\n"
                      "# TYPE damo_completion_tokens_total counter\ndamo_completion_tokens_total %ld\n",
      m->completion_tokens);
  put(&b, &len, &cap, "# HELP damo_tokens_per_second Generated tokens per second of decoding since the start.\n"
                      "# TYPE damo_tokens_per_second gauge\ndamo_tokens_per_second %.2f\n",
      m->decode_seconds > 0 ? (double)m->completion_tokens / m->decode_seconds : 0.0);
  put(&b, &len, &cap, "# HELP damo_queue_length Jobs waiting for the model.\n# TYPE damo_queue_length gauge\n"
                      "damo_queue_length %ld\n# HELP damo_slots_busy GPT-2 slots decoding.\n"
                      "# TYPE damo_slots_busy gauge\ndamo_slots_busy %ld\n", m->queued, m->slots_busy);
  put(&b, &len, &cap, "# HELP damo_in_flight Requests being answered.\n# TYPE damo_in_flight gauge\n"
                      "damo_in_flight %d\n", srv->in_flight);
  pthread_mutex_unlock(&srv->mu);
  if (!b) {
    serve_reply_error(rp, 500, "server_error", "out of memory");
    return;
  }
  rp->status = 200, rp->content_type = "text/plain; version=0.0.4; charset=utf-8", rp->body = b, rp->len = len;
}

/* ------------------------------------------------------------------ routing */

static void models_reply(serve_server *srv, serve_reply *rp) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "object", "list");
  cJSON *data = cJSON_AddArrayToObject(j, "data"), *card = cJSON_CreateObject();
  cJSON_AddItemToArray(data, card);
  cJSON_AddStringToObject(card, "id", srv->name);
  cJSON_AddStringToObject(card, "object", "model");
  cJSON_AddNumberToObject(card, "created", (double)srv->created);
  cJSON_AddStringToObject(card, "owned_by", "damo");
  cJSON_AddStringToObject(card, "kind", srv->model.kind);
  cJSON_AddStringToObject(card, "path", srv->dir);
  if (srv->model.card) srv->model.card(srv, card);
  serve_reply_json(rp, 200, j);
}

/* The common endpoints here, the rest to the model's route (ISO C: no `return f();` in a void function). */
static void route(serve_server *srv, const serve_request *rq, serve_reply *rp) {
  const int get = !strcmp(rq->method, "GET") || !strcmp(rq->method, "HEAD");
  const char *url = rq->url;
  const int state = srv->state;
  if (!strcmp(url, "/health")) {
    if (!get) {
      serve_reply_error(rp, 405, "invalid_request_error", "/health takes GET");
    } else {
      cJSON *j = cJSON_CreateObject();
      cJSON_AddStringToObject(j, "status", state == SERVE_READY ? "ok" : state == SERVE_LOADING ? "loading" : "draining");
      serve_reply_json(rp, state == SERVE_READY ? 200 : 503, j);
    }
  } else if (!strcmp(url, "/metrics")) {
    if (get) metrics_reply(srv, rp);
    else serve_reply_error(rp, 405, "invalid_request_error", "/metrics takes GET");
  } else if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {
    if (!get) {
      serve_reply_error(rp, 405, "invalid_request_error", "/ takes GET");
    } else {
      rp->status = 200, rp->content_type = "text/html; charset=utf-8";
      rp->body = strdup(serve_page_html);
      rp->len = rp->body ? strlen(rp->body) : 0;
    }
  } else if (state == SERVE_LOADING) {
    serve_reply_error(rp, 503, "server_unavailable", "the model is still loading; GET /health says when it is ready");
  } else if (state == SERVE_DRAINING) {
    serve_reply_error(rp, 503, "server_unavailable", "the server is shutting down");
  } else if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11)) {
    if (!get)
      serve_reply_error(rp, 405, "invalid_request_error", "/v1/models takes GET");
    else if (url[10] == '/' && strcmp(url + 11, srv->name))
      serve_reply_error(rp, 404, "not_found_error", "no model named '%s' here (this server has '%s')", url + 11, srv->name);
    else
      models_reply(srv, rp);
  } else if (!srv->model.route(srv, rq, rp)) {
    serve_reply_error(rp, 404, "not_found_error", "no endpoint %s %s on this %s server (GET /v1/models describes it)",
                      rq->method, url, srv->model.kind);
  }
}

/* ------------------------------------------------------------------ libmicrohttpd */
#ifdef DAMO_HAVE_MHD

/* One request's state between libmicrohttpd's calls. */
typedef struct connection_state {
  char *body;
  size_t len, cap;
  int too_large;
  double started;
  int counted; /* in_flight incremented */
} connection_state;

static enum MHD_Result send_reply(serve_server *srv, struct MHD_Connection *c, const serve_request *rq, serve_reply *rp) {
  struct MHD_Response *r;
  if (rp->stream) {
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, rp->stream, stream_free);
    if (!r) {
      stream_free(rp->stream);
      return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
  } else {
    r = MHD_create_response_from_buffer(rp->len, rp->body ? rp->body : (void *)"", rp->body ? MHD_RESPMEM_MUST_FREE
                                                                                            : MHD_RESPMEM_PERSISTENT);
    if (!r) {
      free(rp->body);
      return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", rp->content_type ? rp->content_type : "application/json");
  }
  MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
  pthread_mutex_lock(&srv->mu);
  count_request(srv, rq->url, rp->stream ? 200 : rp->status, cli_seconds() - rq->started);
  pthread_mutex_unlock(&srv->mu);
  enum MHD_Result ok = MHD_queue_response(c, rp->stream ? 200 : (unsigned)rp->status, r);
  MHD_destroy_response(r);
  return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
  (void)version;
  serve_server *srv = cls;
  connection_state *cs = *con_cls;
  if (!cs) { /* the headers: start the request */
    cs = calloc(1, sizeof *cs);
    if (!cs) return MHD_NO;
    cs->started = cli_seconds();
    *con_cls = cs;
    pthread_mutex_lock(&srv->mu);
    srv->in_flight++;
    cs->counted = 1;
    pthread_mutex_unlock(&srv->mu);
    const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (length && strtoull(length, NULL, 10) > srv->max_body) cs->too_large = 1;
    return MHD_YES;
  }
  if (*upload_size) { /* a piece of the body */
    if (!cs->too_large && cs->len + *upload_size > srv->max_body) cs->too_large = 1;
    if (!cs->too_large) {
      if (cs->len + *upload_size + 1 > cs->cap) {
        size_t cap = cs->cap ? cs->cap : 16384;
        while (cap < cs->len + *upload_size + 1) cap *= 2;
        char *grown = realloc(cs->body, cap);
        if (!grown) return MHD_NO;
        cs->body = grown, cs->cap = cap;
      }
      memcpy(cs->body + cs->len, upload, *upload_size);
      cs->len += *upload_size;
    }
    *upload_size = 0;
    return MHD_YES;
  }
  /* the whole request is here: answer it */
  const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
  serve_request rq = {method, url, type ? type : "", cs->body ? cs->body : "", cs->len, cs->started};
  if (cs->body) cs->body[cs->len] = '\0';
  serve_reply rp = {0};
  if (!strcmp(method, "OPTIONS")) { /* a browser's CORS preflight */
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", "Content-Type, Authorization");
    enum MHD_Result ok = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    return ok;
  }
  if (cs->too_large)
    serve_reply_error(&rp, 413, "invalid_request_error", "the body is larger than this server takes (%zu bytes; "
                      "damo serve --max-body-mb)", srv->max_body);
  else
    route(srv, &rq, &rp);
  return send_reply(srv, c, &rq, &rp);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
  (void)c, (void)why;
  serve_server *srv = cls;
  connection_state *cs = *con_cls;
  if (!cs) return;
  if (cs->counted) {
    pthread_mutex_lock(&srv->mu);
    srv->in_flight--;
    pthread_cond_broadcast(&srv->work); /* a draining worker waits for this */
    pthread_mutex_unlock(&srv->mu);
  }
  free(cs->body);
  free(cs);
  *con_cls = NULL;
}

int serve_http_start(serve_server *srv, int *bound) {
  struct sockaddr_storage addr;
  memset(&addr, 0, sizeof addr);
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
  if (inet_pton(AF_INET, srv->host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)srv->port);
  } else if (inet_pton(AF_INET6, srv->host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)srv->port);
    flags |= MHD_USE_IPv6;
  } else {
    fprintf(stderr, "damo serve: --host %s is not an IPv4 or IPv6 address (e.g. 127.0.0.1, 0.0.0.0, ::1)\n", srv->host);
    return 0;
  }
  srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, &addr,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)256, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(srv->timeout_s + 60),
                                 MHD_OPTION_END);
  if (!srv->daemon) {
    fprintf(stderr, "damo serve: cannot listen on %s port %d (%s)\n", srv->host, srv->port,
            errno ? strerror(errno) : "in use, or not allowed");
    return 0;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
  *bound = info ? (int)info->port : srv->port;
  return 1;
}

void serve_http_stop(serve_server *srv) {
  if (srv->daemon) MHD_stop_daemon(srv->daemon);
  srv->daemon = NULL;
}

#else /* built without libmicrohttpd: the command says how to get it */
int serve_http_start(serve_server *srv, int *bound) {
  (void)srv, (void)bound, (void)route;
  fprintf(stderr, "damo serve: this damo was built without libmicrohttpd; install it (sh scripts/setup.sh, or "
          "apt-get install libmicrohttpd-dev) and build again\n");
  return 0;
}
void serve_http_stop(serve_server *srv) { (void)srv; }
#endif

int serve_wait(serve_server *srv, const int *flag, double deadline) {
  while (!*flag) {
    double left = deadline - cli_seconds();
    if (left <= 0) return 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double wait = left < 0.5 ? left : 0.5;
    ts.tv_sec += (time_t)wait;
    ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&srv->done, &srv->mu, &ts);
  }
  return 1;
}
