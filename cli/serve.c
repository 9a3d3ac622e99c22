/* serve.c - `damo serve`: reads the options, starts the HTTP side (serve_http.c) before the
 * model loads, so /health answers 503 "loading" until it is ready, loads the model of the
 * directory's kind, then runs the worker loop on this thread: every model computation happens
 * here, one job (a batch, or one token of each busy slot) at a time. SIGTERM or SIGINT starts
 * the drain: new requests get 503, queued and running ones finish (or --drain-s passes), then
 * the server stops and exits 0. */
#define _DEFAULT_SOURCE
#include "serve.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

int serve_begin_drain(serve_server *srv) {
  if (stop_requested && srv->state != SERVE_DRAINING) {
    srv->state = SERVE_DRAINING;
    srv->drain_deadline = cli_seconds() + srv->drain_s;
    fprintf(stderr, "damo serve: stopping: %d request(s) in flight, %ld job(s) queued; new requests get 503\n",
            srv->in_flight, srv->metrics.queued);
  }
  return srv->state == SERVE_DRAINING;
}

static int parse_options(serve_server *srv, int argc, char **argv) {
  const char *v;
  long n;
  double d;
  srv->dir = cli_opt(argc, argv, "--model");
  if (!srv->dir) {
    fprintf(stderr, "damo serve: --model DIR is required\n");
    return 0;
  }
  srv->host = (v = cli_opt(argc, argv, "--host")) ? v : "127.0.0.1";
  srv->port = 8080;
  if ((v = cli_opt(argc, argv, "--port"))) {
    if (!cli_parse_long(v, "--port (0: any free port)", 0, 65535, &n)) return 0;
    srv->port = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--threads"))) {
    if (!cli_parse_long(v, "--threads", 1, 4096, &n)) return 0;
    damo_set_num_threads((int)n);
  }
  srv->max_batch = 32, srv->batch_wait_ms = 5, srv->slots = 4, srv->queue_limit = 64, srv->max_tokens = 1024;
  srv->timeout_s = 120, srv->max_body = (size_t)8 << 20;
  srv->drain_s = 30;
  struct {
    const char *name, *what;
    long lo, hi, *out;
  } longs[] = {{"--max-batch", "--max-batch", 1, 4096, &srv->max_batch},
               {"--batch-wait-ms", "--batch-wait-ms", 0, 10000, &srv->batch_wait_ms},
               {"--slots", "--slots", 1, 256, &srv->slots},
               {"--queue", "--queue", 1, 1 << 20, &srv->queue_limit},
               {"--max-tokens", "--max-tokens", 1, 1 << 20, &srv->max_tokens}};
  for (size_t i = 0; i < sizeof longs / sizeof longs[0]; i++)
    if ((v = cli_opt(argc, argv, longs[i].name)) && !cli_parse_long(v, longs[i].what, longs[i].lo, longs[i].hi, longs[i].out))
      return 0;
  if ((v = cli_opt(argc, argv, "--timeout-s"))) {
    if (!cli_parse_double(v, "--timeout-s", 0, 1, 86400, &d)) return 0;
    srv->timeout_s = d;
  }
  if ((v = cli_opt(argc, argv, "--drain-s"))) {
    if (!cli_parse_double(v, "--drain-s", 0, 0, 86400, &d)) return 0;
    srv->drain_s = d;
  }
  if ((v = cli_opt(argc, argv, "--max-body-mb"))) {
    if (!cli_parse_double(v, "--max-body-mb", 0, 1, 4096, &d)) return 0;
    srv->max_body = (size_t)(d * 1048576.0);
  }
  /* the name clients use: the directory's last component */
  const char *slash = strrchr(srv->dir, '/');
  srv->name = slash && slash[1] ? slash + 1 : srv->dir;
  if (slash && !slash[1]) { /* "dir/": the component before the slash */
    static char name[256];
    size_t len = (size_t)(slash - srv->dir);
    const char *start = srv->dir;
    for (const char *p = srv->dir; p < slash; p++)
      if (*p == '/') start = p + 1;
    len = (size_t)(slash - start) < sizeof name - 1 ? (size_t)(slash - start) : sizeof name - 1;
    memcpy(name, start, len);
    name[len] = '\0';
    srv->name = name;
  }
  return 1;
}

/* Waits on srv->work for up to 100 ms (under srv->mu). */
static void idle_wait(serve_server *srv) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += 100000000L;
  if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
  pthread_cond_timedwait(&srv->work, &srv->mu, &ts);
}

/* Runs the model's jobs until a stop signal, then until the drain is over. */
static void worker_loop(serve_server *srv) {
  pthread_mutex_lock(&srv->mu);
  for (;;) {
    const int draining = serve_begin_drain(srv);
    const int busy = srv->model.busy(srv);
    if (draining && ((!busy && srv->in_flight == 0) || cli_seconds() > srv->drain_deadline)) break;
    if (!busy) {
      idle_wait(srv);
      continue;
    }
    pthread_mutex_unlock(&srv->mu);
    int worked = srv->model.step(srv);
    pthread_mutex_lock(&srv->mu);
    if (!worked) idle_wait(srv);
  }
  const int left = srv->in_flight;
  pthread_mutex_unlock(&srv->mu);
  if (left) fprintf(stderr, "damo serve: %d request(s) still open after --drain-s; closing them\n", left);
}

int cli_serve(int argc, char **argv) {
  serve_server srv;
  memset(&srv, 0, sizeof srv);
  if (!parse_options(&srv, argc, argv)) return 2;
  const cli_kind kind = cli_kind_of(srv.dir);
  if (kind == CLI_KIND_UNKNOWN) {
    fprintf(stderr, "damo serve: %s holds no readable config.json (a model directory from damo train, quantize or "
            "HuggingFace)\n", srv.dir);
    return 1;
  }
  pthread_mutex_init(&srv.mu, NULL);
  pthread_cond_init(&srv.work, NULL);
  pthread_cond_init(&srv.done, NULL);
  srv.created = (long long)time(NULL);
  srv.state = SERVE_LOADING;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  int port = 0, rc = 1;
  if (!serve_http_start(&srv, &port)) goto done;
  const int v6 = strchr(srv.host, ':') != NULL;
  printf("damo serve: listening on http://%s%s%s:%d/ (loading %s)\n", v6 ? "[" : "", srv.host, v6 ? "]" : "", port,
         srv.dir);
  fflush(stdout);
  const double t0 = cli_seconds();
  int opened = kind == CLI_GPT2 ? serve_gpt2_open(&srv, argc, argv)
               : kind == CLI_BERT ? serve_bert_open(&srv, argc, argv)
                                  : serve_classifier_open(&srv, argc, argv);
  if (!opened) goto done;
  pthread_mutex_lock(&srv.mu);
  srv.state = SERVE_READY;
  serve_begin_drain(&srv); /* a stop signal during the load */
  pthread_mutex_unlock(&srv.mu);
  printf("damo serve: ready in %.2f s: %s model '%s', %d threads, %s (GET /health, /v1/models, /metrics, / for the "
         "playground)\n", cli_seconds() - t0, srv.model.kind, srv.name, damo_num_threads(),
         kind == CLI_GPT2 ? "POST /v1/completions, /v1/chat/completions"
         : kind == CLI_BERT ? "POST /v1/predict, /v1/embeddings"
                            : "POST /v1/predict");
  fflush(stdout);
  worker_loop(&srv);
  rc = 0;
done:
  serve_http_stop(&srv);
  if (srv.model.free) srv.model.free(&srv);
  if (rc == 0) {
    printf("damo serve: stopped after %ld request(s), %ld error(s), %ld completion token(s)\n",
           srv.metrics.latency_count, srv.metrics.errors, srv.metrics.completion_tokens);
    fflush(stdout);
  }
  pthread_cond_destroy(&srv.done);
  pthread_cond_destroy(&srv.work);
  pthread_mutex_destroy(&srv.mu);
  return rc;
}
