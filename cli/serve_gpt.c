/* serve_gpt.c - GPT-2 behind `damo serve`: OpenAI's /v1/completions and /v1/chat/completions,
 * whole or streamed as server-sent events ending with "data: [DONE]". A request becomes a job
 * in a queue; the worker gives each of --slots slots a job and a KV cache, and every round
 * feeds one token to each busy slot in turn (a new job's prompt in one go), so S requests
 * decode together. Sampling is damo_gpt2_generate's, step for step (the rng seeded from the
 * request's seed, the same draw per token), so temperature 0, or the same seed, gives the
 * text `damo generate` gives. */
#define _DEFAULT_SOURCE
#include "serve.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_STOPS = 4 };

typedef struct gen_job {
  struct gen_job *next;
  int chat, stream, include_usage, ignore_eos;
  int32_t *prompt;
  int64_t n_prompt;
  long max_tokens;
  damo_gpt2_sampling sampling;
  char *stops[MAX_STOPS];
  int n_stops;
  size_t longest_stop;
  char id[48];
  /* progress: written by the worker under srv->mu */
  int32_t *out_ids;
  int64_t n_out;
  char *text; /* the completion so far (valid UTF-8 but for an unfinished last character) */
  size_t text_len, complete_len, emitted; /* complete_len: what may be shown; emitted: what the stream has */
  const char *finish;                     /* "stop" or "length" once finished */
  int finished, abandoned;
  char error[512];
  serve_stream *events;
  int refs; /* the worker's and the connection's (or its stream's) */
} gen_job;

typedef struct gpt_slot {
  gen_job *job;
  damo_gpt2_cache *cache;
  damo_rng rng;
  const float *logits;
  int fed; /* the prompt went in */
} gpt_slot;

typedef struct gpt_server {
  damo_gpt2 *m;
  damo_bpe *bpe;
  int32_t eot;
  int64_t context, vocab;
  gpt_slot *slots;
  int n_slots;
  gen_job *queue_head, *queue_tail;
  float *probs;
  const char *weights; /* "f32", "bf16", "q8_0", ... for the card */
} gpt_server;

static void job_unref(gen_job *j) { /* under srv->mu */
  if (--j->refs > 0) return;
  for (int i = 0; i < j->n_stops; i++) free(j->stops[i]);
  free(j->prompt);
  free(j->out_ids);
  free(j->text);
  free(j);
}

static void release_from_stream(void *owner) { job_unref(owner); }

/* ------------------------------------------------------------------ text */

/* The length of the longest prefix of s[0..n) that ends on a whole UTF-8 character. */
static size_t utf8_complete(const char *s, size_t n) {
  size_t i = n;
  for (int back = 0; i > 0 && back < 4; back++) {
    unsigned char c = (unsigned char)s[i - 1];
    if ((c & 0xC0) != 0x80) { /* a lead byte (or ASCII) at i - 1 */
      size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
      return n - (i - 1) >= need ? n : i - 1;
    }
    i--;
  }
  return n;
}

/* Byte-level BPE can decode to bytes that are not UTF-8: each stray byte becomes U+FFFD, except
 * an unfinished character at the end while more may come (keep_tail). */
static char *utf8_clean(const char *s, size_t n, int keep_tail, size_t *out_len) {
  char *o = malloc(3 * n + 1);
  if (!o) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    int ok = need > 0 && (need == 1 || c >= 0xC2) && c <= 0xF4;
    size_t have = 1;
    while (ok && have < need && i + have < n && ((unsigned char)s[i + have] & 0xC0) == 0x80) have++;
    if (ok && have == need) {
      memcpy(o + k, s + i, need);
      k += need, i += need;
    } else if (ok && i + have == n && keep_tail) { /* unfinished: kept for later */
      memcpy(o + k, s + i, have);
      k += have, i += have;
    } else {
      memcpy(o + k, "\xEF\xBF\xBD", 3);
      k += 3, i += ok ? have : 1;
    }
  }
  o[k] = '\0';
  *out_len = k;
  return o;
}

/* ------------------------------------------------------------------ replies and events */

/* OpenAI's envelope {id, object, created, model, choices: [{index: 0}]}; *choice is the one choice. */
static cJSON *envelope(serve_server *srv, const gen_job *j, const char *object, cJSON **choice) {
  cJSON *c = cJSON_CreateObject();
  cJSON_AddStringToObject(c, "id", j->id);
  cJSON_AddStringToObject(c, "object", object);
  cJSON_AddNumberToObject(c, "created", (double)srv->created);
  cJSON_AddStringToObject(c, "model", srv->name);
  *choice = cJSON_CreateObject();
  cJSON_AddItemToArray(cJSON_AddArrayToObject(c, "choices"), *choice);
  cJSON_AddNumberToObject(*choice, "index", 0);
  return c;
}

static cJSON *chunk_json(serve_server *srv, const gen_job *j, const char *text, const char *finish, int first) {
  cJSON *choice, *c = envelope(srv, j, j->chat ? "chat.completion.chunk" : "text_completion", &choice);
  if (j->chat) {
    cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
    if (first) cJSON_AddStringToObject(delta, "role", "assistant");
    if (text) cJSON_AddStringToObject(delta, "content", text);
  } else {
    cJSON_AddStringToObject(choice, "text", text ? text : "");
    cJSON_AddNullToObject(choice, "logprobs");
  }
  if (finish) cJSON_AddStringToObject(choice, "finish_reason", finish);
  else cJSON_AddNullToObject(choice, "finish_reason");
  return c;
}

static void add_usage(cJSON *o, const gen_job *j) {
  cJSON *u = cJSON_AddObjectToObject(o, "usage");
  cJSON_AddNumberToObject(u, "prompt_tokens", (double)j->n_prompt);
  cJSON_AddNumberToObject(u, "completion_tokens", (double)j->n_out);
  cJSON_AddNumberToObject(u, "total_tokens", (double)(j->n_prompt + j->n_out));
}

static void send_event(serve_stream *s, cJSON *c) {
  char *text = cJSON_PrintUnformatted(c);
  cJSON_Delete(c);
  if (text) serve_stream_event(s, text);
  free(text);
}

/* Under srv->mu: the stream's events for what is new in j (and its end, once finished). */
static void stream_progress(serve_server *srv, gen_job *j) {
  serve_stream *s = j->events;
  if (!s) return;
  const int first = s->len == 0;
  size_t show = j->complete_len;
  if (!j->finished && j->longest_stop > 1) { /* hold back what could begin a stop sequence */
    show = show > j->longest_stop - 1 ? show - (j->longest_stop - 1) : 0;
    show = utf8_complete(j->text, show);
  }
  if (show > j->emitted || (first && j->chat)) {
    char *piece = malloc(show - (show > j->emitted ? j->emitted : show) + 1);
    if (piece) {
      size_t n = show > j->emitted ? show - j->emitted : 0;
      memcpy(piece, j->text + j->emitted, n);
      piece[n] = '\0';
      send_event(s, chunk_json(srv, j, piece, NULL, first));
      free(piece);
      j->emitted += n;
    }
  }
  if (!j->finished) return;
  if (j->error[0]) {
    cJSON *e = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(e, "error");
    cJSON_AddStringToObject(err, "message", j->error);
    cJSON_AddStringToObject(err, "type", "server_error");
    send_event(s, e);
  } else {
    send_event(s, chunk_json(srv, j, j->chat ? NULL : "", j->finish, 0));
    if (j->include_usage) {
      cJSON *u = chunk_json(srv, j, NULL, NULL, 0);
      cJSON_DeleteItemFromObject(u, "choices");
      cJSON_AddArrayToObject(u, "choices");
      add_usage(u, j);
      send_event(s, u);
    }
  }
  serve_stream_event(s, "[DONE]");
  s->finished = 1;
}

static void completion_reply(serve_server *srv, const gen_job *j, serve_reply *rp) {
  cJSON *choice, *c = envelope(srv, j, j->chat ? "chat.completion" : "text_completion", &choice);
  if (j->chat) {
    cJSON *msg = cJSON_AddObjectToObject(choice, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    cJSON_AddStringToObject(msg, "content", j->text ? j->text : "");
  } else {
    cJSON_AddStringToObject(choice, "text", j->text ? j->text : "");
    cJSON_AddNullToObject(choice, "logprobs");
  }
  cJSON_AddStringToObject(choice, "finish_reason", j->finish ? j->finish : "stop");
  add_usage(c, j);
  serve_reply_json(rp, 200, c);
}

/* ------------------------------------------------------------------ requests */

/* A chat's messages as one prompt: GPT-2 was not trained on a chat format, so this is the
 * plainest one ("User: ...", "Assistant: ..." lines, a system message first as it is), ending
 * with "Assistant:" for the model to continue; "\nUser:" stops it unless the request says. */
static char *chat_prompt(const cJSON *messages, serve_reply *rp) {
  size_t cap = 1024, len = 0;
  char *p = malloc(cap);
  if (!p) return NULL;
  int i = 0;
  for (const cJSON *m = messages->child; m; m = m->next, i++) {
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role"), *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
      free(p);
      serve_reply_error(rp, 400, "invalid_request_error", "messages[%d] needs a \"role\" string", i);
      return NULL;
    }
    const char *r = role->valuestring;
    const char *label = !strcmp(r, "system") || !strcmp(r, "developer") ? "" : !strcmp(r, "assistant") ? "Assistant: "
                        : !strcmp(r, "user")                               ? "User: "
                                                                           : NULL;
    if (!label) {
      free(p);
      serve_reply_error(rp, 400, "invalid_request_error", "messages[%d].role '%s' is not system, user or assistant", i, r);
      return NULL;
    }
    /* content: a string, or parts of which the text ones count */
    for (const cJSON *part = cJSON_IsArray(content) ? content->child : content; part;
         part = cJSON_IsArray(content) ? part->next : NULL) {
      const cJSON *t = cJSON_IsString(part) ? part : cJSON_GetObjectItemCaseSensitive(part, "text");
      if (!cJSON_IsString(t)) {
        free(p);
        serve_reply_error(rp, 400, "invalid_request_error", "messages[%d].content must be a string or text parts", i);
        return NULL;
      }
      size_t need = len + strlen(label) + strlen(t->valuestring) + 32;
      if (need > cap) {
        while (cap < need) cap *= 2;
        char *grown = realloc(p, cap);
        if (!grown) return free(p), NULL;
        p = grown;
      }
      len += (size_t)sprintf(p + len, "%s%s", part == content || part == content->child ? label : " ", t->valuestring);
    }
    p[len++] = '\n';
    if (!*label) p[len++] = '\n';
  }
  if (i == 0) {
    free(p);
    serve_reply_error(rp, 400, "invalid_request_error", "\"messages\" is empty");
    return NULL;
  }
  memcpy(p + len, "Assistant:", 11);
  return p;
}

static int get_number(const cJSON *body, const char *key, double lo, double hi, int whole, double *out, serve_reply *rp) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, key);
  if (!v || cJSON_IsNull(v)) return 1;
  if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi || (whole && v->valuedouble != (double)(long long)v->valuedouble)) {
    serve_reply_error(rp, 400, "invalid_request_error", "\"%s\" must be a %s in [%g, %g]", key, whole ? "whole number" : "number",
                      lo, hi);
    return 0;
  }
  *out = v->valuedouble;
  return 1;
}

/* The job a request asks for, or NULL with rp filled. */
static gen_job *parse_job(serve_server *srv, gpt_server *g, const cJSON *body, int chat, serve_reply *rp) {
  gen_job *j = calloc(1, sizeof *j);
  if (!j) return serve_reply_error(rp, 500, "server_error", "out of memory"), NULL;
  j->refs = 1, j->chat = chat;
  j->sampling = damo_gpt2_sampling_default();
  const cJSON *v;
  char *text = NULL;
  /* what the model reads */
  if (chat) {
    v = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!cJSON_IsArray(v)) goto bad_messages;
    if (!(text = chat_prompt(v, rp))) goto fail;
  } else {
    v = cJSON_GetObjectItemCaseSensitive(body, "prompt");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1 && !cJSON_IsNumber(v->child)) v = v->child; /* ["text"], [[ids]] */
    if (cJSON_IsString(v)) {
      text = strdup(v->valuestring);
    } else if (cJSON_IsArray(v) && v->child) { /* token ids */
      j->n_prompt = cJSON_GetArraySize(v);
      if (!(j->prompt = malloc((size_t)j->n_prompt * sizeof *j->prompt))) goto oom;
      int64_t i = 0;
      for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (double)g->vocab ||
            e->valuedouble != (double)(int32_t)e->valuedouble) {
          serve_reply_error(rp, 400, "invalid_request_error", "\"prompt\"[%lld] is not a token id in [0, %lld)",
                            (long long)i, (long long)g->vocab);
          goto fail;
        }
        j->prompt[i] = (int32_t)e->valuedouble;
      }
    } else {
      serve_reply_error(rp, 400, "invalid_request_error", "\"prompt\" must be a string, or token ids (one prompt per "
                        "request)");
      goto fail;
    }
  }
  if (text) {
    if (damo_bpe_encode(g->bpe, text, strlen(text), &j->prompt, &j->n_prompt) != DAMO_OK) {
      serve_reply_error(rp, 400, "invalid_request_error", "the prompt: %s", damo_last_error());
      goto fail;
    }
    free(text);
    text = NULL;
  }
  if (j->n_prompt == 0) { /* an empty prompt starts from <|endoftext|>, as damo generate does */
    free(j->prompt);
    if (!(j->prompt = malloc(sizeof *j->prompt))) goto oom;
    j->prompt[0] = g->eot, j->n_prompt = 1;
  }
  if (j->n_prompt >= g->context) {
    serve_reply_error(rp, 400, "invalid_request_error", "the prompt is %lld tokens; the model's context is %lld",
                      (long long)j->n_prompt, (long long)g->context);
    goto fail;
  }
  /* sampling and limits */
  double d = chat ? (double)srv->max_tokens : 16; /* OpenAI's defaults: 16 for completions, the most for chat */
  if (d > (double)(g->context - j->n_prompt)) d = (double)(g->context - j->n_prompt);
  if (!get_number(body, "max_tokens", 1, (double)srv->max_tokens, 1, &d, rp) ||
      !get_number(body, "max_completion_tokens", 1, (double)srv->max_tokens, 1, &d, rp))
    goto fail;
  j->max_tokens = (long)d;
  if (!(j->out_ids = malloc((size_t)j->max_tokens * sizeof *j->out_ids))) goto oom;
  d = 1;
  if (!get_number(body, "temperature", 0, 100, 0, &d, rp)) goto fail;
  j->sampling.temperature = (float)d;
  d = 1;
  if (!get_number(body, "top_p", 0, 1, 0, &d, rp)) goto fail;
  j->sampling.top_p = d >= 1 ? 0 : (float)d;
  d = 0;
  if (!get_number(body, "top_k", 0, (double)g->vocab, 1, &d, rp)) goto fail;
  j->sampling.top_k = (int)d;
  d = (double)((srv->next_id * 2654435761UL) & 0x7fffffff); /* no seed: a different draw per request */
  if (!get_number(body, "seed", -9.2e18, 9.2e18, 1, &d, rp)) goto fail;
  j->sampling.seed = (uint64_t)(long long)d;
  d = 1;
  if (!get_number(body, "n", 1, 1, 1, &d, rp)) goto fail;
  for (const char *const *k = (const char *const[]){"presence_penalty", "frequency_penalty", NULL}; *k; k++) {
    d = 0;
    if (!get_number(body, *k, -2, 2, 0, &d, rp)) goto fail;
    if (d != 0) {
      serve_reply_error(rp, 400, "invalid_request_error", "\"%s\" is not supported by this server (leave it 0)", *k);
      goto fail;
    }
  }
  if ((v = cJSON_GetObjectItemCaseSensitive(body, "logprobs")) && !cJSON_IsNull(v) && !cJSON_IsFalse(v)) {
    serve_reply_error(rp, 400, "invalid_request_error", "\"logprobs\" is not supported by this server");
    goto fail;
  }
  if ((v = cJSON_GetObjectItemCaseSensitive(body, "echo")) && cJSON_IsTrue(v)) {
    serve_reply_error(rp, 400, "invalid_request_error", "\"echo\" is not supported by this server");
    goto fail;
  }
  j->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "stream"));
  if ((v = cJSON_GetObjectItemCaseSensitive(body, "stream")) && !cJSON_IsBool(v) && !cJSON_IsNull(v)) {
    serve_reply_error(rp, 400, "invalid_request_error", "\"stream\" must be true or false");
    goto fail;
  }
  v = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
  j->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "include_usage"));
  j->ignore_eos = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "ignore_eos")); /* as llama.cpp's server */
  v = cJSON_GetObjectItemCaseSensitive(body, "stop");
  if (v && !cJSON_IsNull(v)) {
    const int one = cJSON_IsString(v);
    if (!one && (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > MAX_STOPS)) {
      serve_reply_error(rp, 400, "invalid_request_error", "\"stop\" must be a string or up to %d strings", MAX_STOPS);
      goto fail;
    }
    for (const cJSON *s = one ? v : v->child; s; s = one ? NULL : s->next) {
      if (!cJSON_IsString(s) || !s->valuestring[0]) {
        serve_reply_error(rp, 400, "invalid_request_error", "\"stop\" holds something that is not a non-empty string");
        goto fail;
      }
      if (!(j->stops[j->n_stops++] = strdup(s->valuestring))) goto oom;
    }
  } else if (chat) {
    if (!(j->stops[j->n_stops++] = strdup("\nUser:"))) goto oom;
  }
  for (int i = 0; i < j->n_stops; i++)
    if (strlen(j->stops[i]) > j->longest_stop) j->longest_stop = strlen(j->stops[i]);
  return j;
bad_messages:
  serve_reply_error(rp, 400, "invalid_request_error", "\"messages\" must be an array of {\"role\", \"content\"}");
  goto fail;
oom:
  serve_reply_error(rp, 500, "server_error", "out of memory");
fail:
  free(text);
  job_unref(j);
  return NULL;
}

static int gpt_route(serve_server *srv, const serve_request *rq, serve_reply *rp) {
  gpt_server *g = srv->model.impl;
  const int chat = !strcmp(rq->url, "/v1/chat/completions");
  if (!chat && strcmp(rq->url, "/v1/completions")) return 0;
  if (strcmp(rq->method, "POST")) return serve_reply_error(rp, 405, "invalid_request_error", "%s takes POST", rq->url), 1;
  cJSON *body = serve_parse_object(rq, rp);
  if (!body) return 1;
  gen_job *j = parse_job(srv, g, body, chat, rp);
  cJSON_Delete(body);
  if (!j) return 1;
  pthread_mutex_lock(&srv->mu);
  snprintf(j->id, sizeof j->id, "%s-%lld-%lu", chat ? "chatcmpl" : "cmpl", srv->created, ++srv->next_id);
  if (srv->metrics.queued >= srv->queue_limit) {
    job_unref(j);
    pthread_mutex_unlock(&srv->mu);
    return serve_reply_error(rp, 429, "rate_limit_exceeded", "%ld requests are waiting for a slot (damo serve --queue); "
                             "try again shortly", srv->queue_limit), 1;
  }
  j->refs = 2; /* the worker's, and this connection's (or its stream's) */
  if (j->stream && !(j->events = serve_stream_new(srv, j, release_from_stream))) {
    j->refs = 1;
    job_unref(j);
    pthread_mutex_unlock(&srv->mu);
    return serve_reply_error(rp, 500, "server_error", "out of memory"), 1;
  }
  if (g->queue_tail) g->queue_tail->next = j;
  else g->queue_head = j;
  g->queue_tail = j;
  srv->metrics.queued++;
  pthread_cond_signal(&srv->work);
  if (j->stream) { /* answered as events from here on */
    rp->stream = j->events;
    pthread_mutex_unlock(&srv->mu);
    return 1;
  }
  const int done = serve_wait(srv, &j->finished, rq->started + srv->timeout_s);
  if (!done) {
    j->abandoned = 1;
    serve_reply_error(rp, 503, "timeout", "no answer within %.0f s (damo serve --timeout-s)", srv->timeout_s);
  } else if (j->error[0]) {
    serve_reply_error(rp, 500, "server_error", "%s", j->error);
  } else {
    completion_reply(srv, j, rp);
  }
  job_unref(j);
  pthread_mutex_unlock(&srv->mu);
  return 1;
}

/* ------------------------------------------------------------------ the worker */

/* Under srv->mu: the job leaves its slot (finished, or nobody waits for it any more). */
static void slot_release(serve_server *srv, gpt_slot *s) {
  gen_job *j = s->job;
  j->finished = 1;
  stream_progress(srv, j);
  if (j->events) serve_stream_unref(j->events); /* the producer's reference */
  j->events = NULL;
  job_unref(j);
  s->job = NULL;
  srv->metrics.slots_busy--;
  pthread_cond_broadcast(&srv->done);
}

/* A new slot's prompt into its cache (outside srv->mu): its first logits. */
static damo_status slot_prefill(gpt_server *g, gpt_slot *s) {
  gen_job *j = s->job;
  damo_status st = DAMO_OK;
  if (!s->cache && (st = damo_gpt2_cache_new(g->m, g->context, &s->cache)) != DAMO_OK) return st;
  damo_gpt2_cache_reset(s->cache);
  damo_rng_seed(&s->rng, j->sampling.seed);
  for (int64_t i = 0; st == DAMO_OK && i < j->n_prompt; i++) st = damo_gpt2_cache_step(s->cache, j->prompt[i], &s->logits);
  s->fed = 1;
  return st;
}

/* Under srv->mu: the job's text after its new token (final: no more will come); a stop
 * sequence that shows ends it there (finish "stop"). */
static void update_text(gpt_server *g, gen_job *j, int final) {
  char *raw = NULL;
  size_t raw_len = 0, len = 0;
  if (damo_bpe_decode(g->bpe, j->out_ids, j->n_out, &raw, &raw_len) != DAMO_OK) return;
  char *text = utf8_clean(raw, raw_len, !final, &len);
  free(raw);
  if (!text) return;
  free(j->text);
  j->text = text, j->text_len = len;
  for (int i = 0; i < j->n_stops; i++) {
    const char *at = strstr(text + (j->emitted > j->longest_stop ? j->emitted - j->longest_stop : 0), j->stops[i]);
    if (at && (size_t)(at - text) < j->text_len) {
      j->text_len = (size_t)(at - text);
      j->finish = "stop";
    }
  }
  j->text[j->text_len] = '\0';
  j->complete_len = j->finish ? j->text_len : utf8_complete(j->text, j->text_len);
}

static int gpt_busy(serve_server *srv) {
  gpt_server *g = srv->model.impl;
  if (g->queue_head) return 1;
  for (int i = 0; i < g->n_slots; i++)
    if (g->slots[i].job) return 1;
  return 0;
}

static int gpt_step(serve_server *srv) {
  gpt_server *g = srv->model.impl;
  pthread_mutex_lock(&srv->mu);
  for (int i = 0; i < g->n_slots && g->queue_head; i++) { /* free slots take queued jobs */
    if (g->slots[i].job) continue;
    gen_job *j = g->queue_head;
    g->queue_head = j->next;
    if (!g->queue_head) g->queue_tail = NULL;
    j->next = NULL;
    srv->metrics.queued--;
    g->slots[i].job = j, g->slots[i].fed = 0;
    srv->metrics.slots_busy++;
    srv->metrics.prompt_tokens += (long)j->n_prompt;
  }
  int active = 0;
  for (int i = 0; i < g->n_slots; i++) active += g->slots[i].job != NULL;
  pthread_mutex_unlock(&srv->mu);
  if (!active) return 0;
  /* each busy slot draws its next token (a new one reads its prompt first); the slots that go
   * on then take their tokens in one step of all their caches together (each weight read once) */
  const double t0 = cli_seconds();
  damo_gpt2_cache *caches[256];
  gpt_slot *going[256];
  int32_t ids[256];
  int n = 0;
  for (int i = 0; i < g->n_slots; i++) {
    gpt_slot *s = &g->slots[i];
    gen_job *j = s->job;
    if (!j) continue;
    pthread_mutex_lock(&srv->mu);
    const int gone = j->abandoned || (j->events && j->events->closed);
    if (gone) slot_release(srv, s);
    pthread_mutex_unlock(&srv->mu);
    if (gone) continue;
    int32_t id = 0;
    damo_status st = s->fed ? DAMO_OK : slot_prefill(g, s);
    if (st == DAMO_OK) st = damo_gpt2_sample_id(s->logits, g->vocab, &j->sampling, &s->rng, &id);
    int finished = st != DAMO_OK, appended = 0;
    if (st == DAMO_OK && id == g->eot && !j->ignore_eos) {
      j->finish = "stop", finished = 1;
    } else if (st == DAMO_OK) {
      j->out_ids[j->n_out++] = id;
      appended = 1;
      if (j->n_out >= j->max_tokens || j->n_prompt + j->n_out >= g->context) j->finish = "length", finished = 1;
    }
    pthread_mutex_lock(&srv->mu);
    if (st != DAMO_OK) snprintf(j->error, sizeof j->error, "%s", damo_last_error());
    srv->metrics.completion_tokens += appended;
    update_text(g, j, finished);
    if (finished || j->finish) {
      if (!j->finish) j->finish = "length";
      slot_release(srv, s);
    } else {
      stream_progress(srv, j);
      caches[n] = s->cache, going[n] = s, ids[n++] = id;
    }
    pthread_mutex_unlock(&srv->mu);
  }
  const float *logits[256];
  damo_status st = n ? damo_gpt2_cache_step_many(caches, ids, n, logits) : DAMO_OK;
  pthread_mutex_lock(&srv->mu);
  for (int r = 0; r < n; r++) {
    if (st == DAMO_OK) {
      going[r]->logits = logits[r];
      continue;
    }
    snprintf(going[r]->job->error, sizeof going[r]->job->error, "%s", damo_last_error());
    slot_release(srv, going[r]);
  }
  if (n) serve_metrics_batch(srv, n);
  srv->metrics.decode_seconds += cli_seconds() - t0;
  pthread_mutex_unlock(&srv->mu);
  return 1;
}

/* ------------------------------------------------------------------ opening */

static void gpt_card(serve_server *srv, cJSON *card) {
  gpt_server *g = srv->model.impl;
  const damo_gpt2_config *c = damo_gpt2_get_config(g->m);
  cJSON_AddNumberToObject(card, "parameters", (double)damo_gpt2_num_params(g->m));
  cJSON_AddNumberToObject(card, "context_length", (double)g->context);
  cJSON_AddNumberToObject(card, "vocab_size", (double)g->vocab);
  cJSON_AddNumberToObject(card, "n_layer", c->n_layer);
  cJSON_AddNumberToObject(card, "n_embd", c->n_embd);
  cJSON_AddStringToObject(card, "precision", g->weights);
  cJSON_AddStringToObject(card, "input", "text");
  cJSON_AddNumberToObject(card, "slots", g->n_slots);
  cJSON_AddNumberToObject(card, "max_tokens", (double)srv->max_tokens);
  cJSON *endpoints = cJSON_AddArrayToObject(card, "endpoints");
  cJSON_AddItemToArray(endpoints, cJSON_CreateString("/v1/completions"));
  cJSON_AddItemToArray(endpoints, cJSON_CreateString("/v1/chat/completions"));
}

static void gpt_free(serve_server *srv) {
  gpt_server *g = srv->model.impl;
  if (!g) return;
  pthread_mutex_lock(&srv->mu);
  for (int i = 0; g->slots && i < g->n_slots; i++) {
    if (g->slots[i].job) slot_release(srv, &g->slots[i]);
    damo_gpt2_cache_free(g->slots[i].cache);
  }
  while (g->queue_head) {
    gen_job *j = g->queue_head;
    g->queue_head = j->next;
    if (j->events) serve_stream_unref(j->events);
    job_unref(j);
  }
  pthread_mutex_unlock(&srv->mu);
  free(g->slots);
  free(g->probs);
  damo_gpt2_free(g->m);
  damo_bpe_free(g->bpe);
  free(g);
  srv->model.impl = NULL;
}

int serve_gpt2_open(serve_server *srv, int argc, char **argv) {
  gpt_server *g = calloc(1, sizeof *g);
  if (!g) return !cli_fail("serve");
  srv->model = (serve_model){.kind = "gpt2", .impl = g, .card = gpt_card, .route = gpt_route, .step = gpt_step,
                             .busy = gpt_busy, .free = gpt_free};
  const int bf16 = damo_get_matmul_precision() == DAMO_MATMUL_BF16;
  if (damo_bpe_load(cli_opt(argc, argv, "--vocab"), &g->bpe) != DAMO_OK) return !cli_fail("serve: the GPT-2 tokenizer");
  if (damo_gpt2_load(srv->dir, &g->m) != DAMO_OK ||
      damo_gpt2_set_inference_precision(g->m, bf16 ? DAMO_BF16 : DAMO_F32) != DAMO_OK)
    return !cli_fail("serve");
  g->eot = damo_bpe_token_id(g->bpe, "<|endoftext|>");
  g->context = damo_gpt2_get_config(g->m)->n_positions;
  g->vocab = damo_gpt2_get_config(g->m)->vocab_size;
  if (g->eot < 0 || g->eot >= g->vocab) {
    fprintf(stderr, "damo serve: the tokenizer has no <|endoftext|> inside the model's %lld ids\n", (long long)g->vocab);
    return 0;
  }
  g->weights = damo_gpt2_block_format(g->m) ? damo_block_format_name(damo_gpt2_block_format(g->m))
               : damo_gpt2_is_int8(g->m)    ? "int8"
               : bf16                       ? "bf16"
                                            : "f32";
  g->n_slots = (int)srv->slots;
  g->slots = calloc((size_t)g->n_slots, sizeof *g->slots);
  if (!g->slots) return !cli_fail("serve");
  return 1;
}
