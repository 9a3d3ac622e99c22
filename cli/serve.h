/* serve.h - what the files of `damo serve` share. The server is a program on the library, like
 * the rest of cli/, and the only part of damo that links libmicrohttpd:
 *   serve.c           options, loading, the worker loop (the main thread runs every model
 *                     computation), SIGTERM draining
 *   serve_http.c      libmicrohttpd glue: bodies and their limits, routing, JSON and OpenAI-shaped
 *                     errors, server-sent event streams, /health, /v1/models, /metrics
 *   serve_classify.c  classifiers (Sequential and fine-tuned BERT): /v1/predict with dynamic
 *                     batching, BERT's /v1/embeddings
 *   serve_gpt.c       GPT-2: /v1/completions and /v1/chat/completions on S slots decoding in turn
 *   serve_page.c      the playground page served at /
 * Threads: libmicrohttpd gives each connection a thread; those threads parse, check and decode
 * requests, queue a job and wait for it. The main thread takes jobs off the queue and runs the
 * model. One mutex (srv->mu) guards every queue, job and counter. */
#ifndef DAMO_CLI_SERVE_H
#define DAMO_CLI_SERVE_H

#include "cli.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stddef.h>

typedef struct serve_server serve_server;

/* A request as the routes see it: the body is complete (and within --max-body-mb). */
typedef struct serve_request {
  const char *method, *url;
  const char *content_type; /* "" when absent */
  const char *body;         /* NUL-terminated */
  size_t body_len;
  double started; /* cli_seconds() at its first byte */
} serve_request;

/* A stream of server-sent events: the worker appends, the connection's thread sends. Freed
 * by whichever side lets go last (refs 2 at the start: the producer and the connection). */
typedef struct serve_stream {
  serve_server *srv;
  char *buf;
  size_t len, cap, sent;
  int finished; /* the producer wrote everything */
  int closed;   /* the client went away (or everything was sent) */
  int refs;
  void *owner;                  /* the job it belongs to */
  void (*release)(void *owner); /* called (under srv->mu) when refs reaches 0 */
} serve_stream;

/* What a route answers: a complete body, or a stream. */
typedef struct serve_reply {
  int status;
  const char *content_type;
  char *body; /* malloc'd */
  size_t len;
  serve_stream *stream; /* set: an event stream (status 200) */
} serve_reply;

/* The model side: one per kind, chosen by serve.c from the directory. */
typedef struct serve_model {
  const char *kind; /* "classifier", "gpt2", "bert" */
  void *impl;
  /* Adds kind-specific fields to the model card of GET /v1/models. */
  void (*card)(serve_server *srv, cJSON *card);
  /* 1 when it answers this method and path (reply filled), 0 when the path is not its own. */
  int (*route)(serve_server *srv, const serve_request *rq, serve_reply *rp);
  /* One round of work on the main thread: 1 when it did some, 0 when nothing was waiting. */
  int (*step)(serve_server *srv);
  /* Jobs queued or running (under srv->mu). */
  int (*busy)(serve_server *srv);
  void (*free)(serve_server *srv);
} serve_model;

enum { SERVE_LOADING, SERVE_READY, SERVE_DRAINING };
enum { SERVE_LATENCY_BUCKETS = 12, SERVE_BATCH_BUCKETS = 8 };

typedef struct serve_metrics {
  long requests[6][8]; /* per endpoint (serve_endpoint) and status class index (see serve_http.c) */
  long errors;
  long latency[SERVE_LATENCY_BUCKETS]; /* cumulative counts per serve_latency_le bound */
  double latency_sum;
  long latency_count;
  long batches[SERVE_BATCH_BUCKETS];
  double batch_sum;
  long batch_count;
  long prompt_tokens, completion_tokens;
  double decode_seconds; /* time the worker spent producing completion tokens */
  long queued, slots_busy;
} serve_metrics;

struct serve_server {
  pthread_mutex_t mu;
  pthread_cond_t work; /* signalled when a job is queued (the worker waits on it) */
  pthread_cond_t done; /* broadcast when a job finishes or a stream grows */
  volatile int state;
  int in_flight; /* requests received and not yet answered completely */
  /* options */
  const char *dir, *name, *host;
  int port;
  size_t max_body;
  long max_tokens, queue_limit, max_batch, batch_wait_ms, slots;
  double timeout_s, drain_s;
  double drain_deadline; /* when draining: the time open requests are closed regardless */
  serve_model model;
  serve_metrics metrics;
  struct MHD_Daemon *daemon;
  long long created; /* time(NULL) at start: ids and "created" fields */
  unsigned long next_id;
};

/* ---- serve.c: under srv->mu, 1 once the server drains (SIGTERM or SIGINT came; waits that can
 * be long look at it). The first caller to see the signal (the worker's loop or a batch wait)
 * starts the drain and logs it, so the log tells what was open at that moment, not after a
 * batch that the stop cut short has already been answered. */
int serve_begin_drain(serve_server *srv);

/* ---- serve_http.c */
/* Starts libmicrohttpd on host:port (port 0: a free one; *bound gets it). 0 after a message. */
int serve_http_start(serve_server *srv, int *bound);
void serve_http_stop(serve_server *srv);
/* A JSON body (takes j) / an OpenAI-shaped error {"error": {"message", "type", "param", "code"}}. */
void serve_reply_json(serve_reply *rp, int status, cJSON *j);
void serve_reply_error(serve_reply *rp, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The body as a JSON object, or NULL after filling rp with a 400 that says what is wrong. */
cJSON *serve_parse_object(const serve_request *rq, serve_reply *rp);
/* A new stream with its two references. */
serve_stream *serve_stream_new(serve_server *srv, void *owner, void (*release)(void *owner));
/* Under srv->mu: appends one event "data: <text>\n\n" and wakes the sender. 0 when out of memory. */
int serve_stream_event(serve_stream *s, const char *text);
/* Under srv->mu: drops one reference (the producer's when finished, or the connection's). */
void serve_stream_unref(serve_stream *s);
/* Under srv->mu: counts a batch of n rows for /metrics. */
void serve_metrics_batch(serve_server *srv, long n);
/* Decodes standard or URL-safe base64 (a "data:...;base64," prefix skipped, white space
 * ignored) into a malloc'd buffer; NULL when it is not base64. */
unsigned char *serve_base64_decode(const char *s, size_t n, size_t *out_len);
/* Waits on srv->done until *flag is set or the deadline (cli_seconds()) passes: 1 when set. Under srv->mu. */
int serve_wait(serve_server *srv, const int *flag, double deadline);

/* ---- serve_page.c: the playground page */
extern const char serve_page_html[];

/* ---- the model kinds: each fills srv->model from the directory (1), or 0 after a message. */
int serve_classifier_open(serve_server *srv, int argc, char **argv);
int serve_bert_open(serve_server *srv, int argc, char **argv);
int serve_gpt2_open(serve_server *srv, int argc, char **argv);

#endif
