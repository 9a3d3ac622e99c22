/* serve_classify.c - classifiers behind `damo serve`: Sequential/functional models (numbers,
 * pictures, or e-mail text for text models) and fine-tuned BERT (text; also /v1/embeddings).
 * A connection's thread turns its request into model-input rows (decoding pictures, cleaning
 * and tokenising text) and queues them as a job; the worker (serve.c's loop) batches queued
 * jobs dynamically, up to --max-batch rows or until the oldest has waited --batch-wait-ms,
 * runs the model once and hands each job its rows of the result. */
#define _DEFAULT_SOURCE
#include "bert_text.h"
#include "serve.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_ROWS_PER_REQUEST = 4096 };

typedef struct predict_job {
  struct predict_job *next;
  int embed;                 /* BERT: embeddings instead of class probabilities */
  damo_bert_pooling pooling; /* with embed */
  int64_t rows;
  float *x;     /* rows * row_len (Sequential, f32 inputs) */
  int32_t *ids; /* rows * row_len (Sequential, i32 inputs) or rows * 3T (BERT: ids, types, mask) */
  float *out;   /* rows * out_cols */
  int64_t out_cols;
  double enqueued;
  int finished, abandoned;
  char error[512];
} predict_job;

typedef struct classifier {
  /* Sequential */
  damo_model *m;
  int64_t in_shape[DAMO_MAX_DIMS];
  int in_rank, images;
  damo_dtype in_dtype;
  damo_vocab *vocab; /* a text model's (text.json) */
  int max_len, numbers;
  /* BERT */
  damo_bert *bert;
  damo_wordpiece *wp;
  int T, head;
  damo_bert_graph *classify_graph, *embed_graph;
  char (*fallback)[32];
  /* both */
  int64_t row_len, classes;
  const char **names;
  int n_names;
  predict_job *queue_head, *queue_tail;
  long queued_rows, running;
} classifier;

static void job_free(predict_job *j) {
  if (!j) return;
  free(j->x);
  free(j->ids);
  free(j->out);
  free(j);
}

/* ------------------------------------------------------------------ requests into rows */

/* Numbers of a nested JSON array, flattened into dst (at most cap); -1 when something is not a number. */
static int64_t flatten_numbers(const cJSON *a, float *dst, int64_t cap, int64_t n) {
  if (cJSON_IsNumber(a)) {
    if (n < cap) dst[n] = (float)a->valuedouble;
    return n + 1;
  }
  if (!cJSON_IsArray(a)) return -1;
  for (const cJSON *e = a->child; e; e = e->next)
    if ((n = flatten_numbers(e, dst, cap, n)) < 0) return -1;
  return n;
}

/* Text into one row: a text model's ids, or BERT's ids, types and mask. */
static damo_status encode_text(const classifier *c, const char *text, size_t len, int32_t *row) {
  char *clean = NULL;
  size_t clean_len = 0;
  damo_text_clean_options co = {c->numbers};
  damo_status st = c->bert ? damo_email_clean(text, len, &clean, &clean_len)
                           : damo_email_clean_ex(text, len, &co, &clean, &clean_len);
  if (st == DAMO_OK)
    st = c->bert ? cli_bert_encode_text(c->wp, clean, c->T, c->head, row, row + c->T, row + 2 * c->T)
                 : damo_vocab_encode(c->vocab, clean, clean_len, c->max_len, row, NULL);
  free(clean);
  return st;
}

/* A picture's bytes into one f32 row. */
static damo_status encode_image(const classifier *c, const unsigned char *bytes, size_t n, int invert, const char *name,
                                float *row) {
  damo_tensor *img = NULL, *in = NULL;
  const int h = (int)c->in_shape[0], w = (int)c->in_shape[1], ch = c->in_rank == 3 ? (int)c->in_shape[2] : 1;
  damo_status st = damo_image_decode(bytes, n, name, 0, &img);
  if (st == DAMO_OK) st = damo_image_to_model_input(img, h, w, ch, invert, &in);
  if (st == DAMO_OK) memcpy(row, damo_tensor_f32(in), (size_t)c->row_len * sizeof *row);
  damo_tensor_free(img);
  damo_tensor_free(in);
  return st;
}

static int text_model(const classifier *c) { return c->bert || c->vocab; }

/* Allocates a job's rows. */
static predict_job *job_new(const classifier *c, int64_t rows) {
  predict_job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->rows = rows;
  const int ids = c->bert || c->in_dtype == DAMO_I32;
  const int64_t per_row = c->bert ? 3 * (int64_t)c->T : c->row_len;
  if (ids) j->ids = malloc((size_t)(rows * per_row) * sizeof *j->ids);
  else j->x = malloc((size_t)(rows * per_row) * sizeof *j->x);
  if (!j->ids && !j->x) {
    free(j);
    return NULL;
  }
  return j;
}

/* The rows a request asks about, as a job; NULL after filling rp with what is wrong. texts_key
 * names the member that holds text ("input" for /v1/embeddings). */
static predict_job *request_rows(const classifier *c, const serve_request *rq, const cJSON *body, serve_reply *rp,
                                 int invert) {
  const char *type = rq->content_type;
  /* a raw body: one picture, or one text */
  if (!body) {
    const int picture = !strncmp(type, "image/", 6) || !strncmp(type, "application/octet-stream", 24);
    if (picture && !c->images) {
      serve_reply_error(rp, 400, "invalid_request_error", "this model does not read pictures (its input is %s)",
                        text_model(c) ? "text" : "an array of numbers");
      return NULL;
    }
    if (!picture && !text_model(c)) {
      serve_reply_error(rp, 400, "invalid_request_error", "a %s body needs a text model; send JSON {\"inputs\": [...]}"
                        "%s", *type ? type : "plain", c->images ? " or a picture (Content-Type: image/...)" : "");
      return NULL;
    }
    predict_job *j = job_new(c, 1);
    if (!j) return serve_reply_error(rp, 500, "server_error", "out of memory"), NULL;
    damo_status st = picture ? encode_image(c, (const unsigned char *)rq->body, rq->body_len, invert, "the body", j->x)
                             : encode_text(c, rq->body, rq->body_len, j->ids);
    if (st != DAMO_OK) {
      serve_reply_error(rp, 400, "invalid_request_error", "%s", damo_last_error());
      job_free(j);
      return NULL;
    }
    return j;
  }
  const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(body, "inputs");
  const cJSON *images = cJSON_GetObjectItemCaseSensitive(body, "images");
  if (!images) images = cJSON_GetObjectItemCaseSensitive(body, "image");
  const cJSON *texts = cJSON_GetObjectItemCaseSensitive(body, "texts");
  if (!texts) texts = cJSON_GetObjectItemCaseSensitive(body, "text");
  if (!texts) texts = cJSON_GetObjectItemCaseSensitive(body, "input");
  const int given = !!inputs + !!images + !!texts;
  if (given != 1) {
    serve_reply_error(rp, 400, "invalid_request_error", "give exactly one of \"inputs\" (arrays of numbers), \"images\" "
                      "(base64 pictures) or \"texts\" (strings)%s", given ? "" : "; none was given");
    return NULL;
  }
  if (texts || images) {
    const cJSON *list = texts ? texts : images;
    const int one = cJSON_IsString(list);
    if (!one && !cJSON_IsArray(list)) {
      serve_reply_error(rp, 400, "invalid_request_error", "\"%s\" must be a string or an array of strings",
                        list->string);
      return NULL;
    }
    if (texts && !text_model(c)) {
      serve_reply_error(rp, 400, "invalid_request_error", "this model does not read text (its input is %s)",
                        c->images ? "a picture" : "an array of numbers");
      return NULL;
    }
    if (images && !c->images) {
      serve_reply_error(rp, 400, "invalid_request_error", "this model does not read pictures (its input is %s)",
                        text_model(c) ? "text" : "an array of numbers");
      return NULL;
    }
    const int64_t rows = one ? 1 : cJSON_GetArraySize(list);
    if (rows < 1 || rows > MAX_ROWS_PER_REQUEST) {
      serve_reply_error(rp, 400, "invalid_request_error", "\"%s\" holds %lld items; send 1 to %d", list->string,
                        (long long)rows, MAX_ROWS_PER_REQUEST);
      return NULL;
    }
    predict_job *j = job_new(c, rows);
    if (!j) return serve_reply_error(rp, 500, "server_error", "out of memory"), NULL;
    const cJSON *e = one ? list : list->child;
    for (int64_t r = 0; r < rows; r++, e = e->next) {
      if (!cJSON_IsString(e)) {
        serve_reply_error(rp, 400, "invalid_request_error", "\"%s\"[%lld] is not a string", list->string, (long long)r);
        job_free(j);
        return NULL;
      }
      damo_status st;
      char name[64];
      snprintf(name, sizeof name, "%s[%lld]", list->string, (long long)r);
      if (texts) {
        st = encode_text(c, e->valuestring, strlen(e->valuestring),
                         j->ids + r * (c->bert ? 3 * (int64_t)c->T : c->row_len));
      } else {
        size_t n = 0;
        unsigned char *bytes = serve_base64_decode(e->valuestring, strlen(e->valuestring), &n);
        if (!bytes) {
          serve_reply_error(rp, 400, "invalid_request_error", "%s is not base64 (or a data: URL of it)", name);
          job_free(j);
          return NULL;
        }
        st = encode_image(c, bytes, n, invert, name, j->x + r * c->row_len);
        free(bytes);
      }
      if (st != DAMO_OK) {
        serve_reply_error(rp, 400, "invalid_request_error", "%s", damo_last_error());
        job_free(j);
        return NULL;
      }
    }
    return j;
  }
  /* "inputs": numbers, one example of the model's input shape or a list of them */
  if (c->bert) {
    serve_reply_error(rp, 400, "invalid_request_error", "a BERT model reads text: send {\"texts\": [...]}");
    return NULL;
  }
  if (!cJSON_IsArray(inputs)) {
    serve_reply_error(rp, 400, "invalid_request_error", "\"inputs\" must be an array (one example, or a list of them)");
    return NULL;
  }
  float first = 0;
  int64_t total = flatten_numbers(inputs, &first, 0, 0);
  if (total < 0) {
    serve_reply_error(rp, 400, "invalid_request_error", "\"inputs\" holds something that is not a number");
    return NULL;
  }
  if (total == 0 || total % c->row_len || total / c->row_len > MAX_ROWS_PER_REQUEST) {
    serve_reply_error(rp, 400, "invalid_request_error", "\"inputs\" holds %lld numbers; each example has %lld (the "
                      "model's input shape), and a request holds 1 to %d examples", (long long)total,
                      (long long)c->row_len, MAX_ROWS_PER_REQUEST);
    return NULL;
  }
  predict_job *j = job_new(c, total / c->row_len);
  float *values = malloc((size_t)total * sizeof *values);
  if (!j || !values) {
    job_free(j);
    free(values);
    return serve_reply_error(rp, 500, "server_error", "out of memory"), NULL;
  }
  flatten_numbers(inputs, values, total, 0);
  for (int64_t i = 0; i < total; i++) {
    if (values[i] != values[i] || values[i] - values[i] != 0) {
      serve_reply_error(rp, 400, "invalid_request_error", "\"inputs\" value %lld is not finite", (long long)i);
      job_free(j);
      free(values);
      return NULL;
    }
    if (j->x) {
      j->x[i] = values[i];
    } else { /* token ids */
      if (values[i] != (float)(int32_t)values[i] || values[i] < 0) {
        serve_reply_error(rp, 400, "invalid_request_error", "\"inputs\" value %lld (%g) is not a token id", (long long)i,
                          (double)values[i]);
        job_free(j);
        free(values);
        return NULL;
      }
      j->ids[i] = (int32_t)values[i];
    }
  }
  free(values);
  return j;
}

/* Queues j and waits for it; 1 when it finished, else 0 with rp filled (j then belongs to the worker or is freed). */
static int run_job(serve_server *srv, const serve_request *rq, predict_job *j, serve_reply *rp) {
  classifier *c = srv->model.impl;
  pthread_mutex_lock(&srv->mu);
  if (srv->metrics.queued >= srv->queue_limit) {
    pthread_mutex_unlock(&srv->mu);
    job_free(j);
    serve_reply_error(rp, 429, "rate_limit_exceeded", "%ld jobs are waiting (damo serve --queue); try again shortly",
                      srv->queue_limit);
    return 0;
  }
  j->enqueued = cli_seconds();
  if (c->queue_tail) c->queue_tail->next = j;
  else c->queue_head = j;
  c->queue_tail = j;
  c->queued_rows += j->rows;
  srv->metrics.queued++;
  pthread_cond_signal(&srv->work);
  const int done = serve_wait(srv, &j->finished, rq->started + srv->timeout_s);
  if (!done) j->abandoned = 1; /* the worker frees it */
  pthread_mutex_unlock(&srv->mu);
  if (!done) {
    serve_reply_error(rp, 503, "timeout", "no answer within %.0f s (damo serve --timeout-s)", srv->timeout_s);
    return 0;
  }
  if (j->error[0]) {
    serve_reply_error(rp, 500, "server_error", "%s", j->error);
    job_free(j);
    return 0;
  }
  return 1;
}

/* ------------------------------------------------------------------ the routes */

static cJSON *class_entry(const classifier *c, int64_t k, float p) {
  cJSON *e = cJSON_CreateObject();
  if (k < c->n_names) cJSON_AddStringToObject(e, "label", c->names[k]);
  else {
    char name[32];
    snprintf(name, sizeof name, "%lld", (long long)k);
    cJSON_AddStringToObject(e, "label", name);
  }
  cJSON_AddNumberToObject(e, "index", (double)k);
  cJSON_AddNumberToObject(e, "probability", (double)p);
  return e;
}

static void predict_reply(serve_server *srv, const predict_job *j, int top, serve_reply *rp) {
  const classifier *c = srv->model.impl;
  cJSON *root = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(root, "predictions");
  cJSON_AddStringToObject(root, "object", "list");
  cJSON_AddStringToObject(root, "model", srv->name);
  const int64_t C = j->out_cols, K = C == 1 ? 2 : C; /* one sigmoid output: two classes */
  for (int64_t r = 0; r < j->rows; r++) {
    const float *o = j->out + r * C;
    float p2[2] = {C == 1 ? 1.0f - o[0] : 0, C == 1 ? o[0] : 0};
    const float *p = C == 1 ? p2 : o;
    cJSON *item = cJSON_CreateObject(), *tops = cJSON_CreateArray();
    cJSON_AddItemToArray(list, item);
    /* the top classes by probability (lower index first on a tie) */
    int64_t shown[64];
    const int n_top = top < K ? top : (int)K;
    for (int t = 0; t < n_top; t++) {
      int64_t best = -1;
      for (int64_t k = 0; k < K; k++) {
        int taken = 0;
        for (int u = 0; u < t; u++) taken |= shown[u] == k;
        if (!taken && (best < 0 || p[k] > p[best])) best = k;
      }
      shown[t] = best;
      cJSON_AddItemToArray(tops, class_entry(c, best, p[best]));
    }
    cJSON_AddNumberToObject(item, "index", (double)r);
    cJSON_AddStringToObject(item, "label", cJSON_GetArrayItem(tops, 0)->child->valuestring);
    cJSON_AddNumberToObject(item, "probability", (double)p[shown[0]]);
    cJSON_AddItemToObject(item, "top", tops);
    cJSON *all = cJSON_AddArrayToObject(item, "probabilities");
    for (int64_t k = 0; k < K; k++) cJSON_AddItemToArray(all, cJSON_CreateNumber((double)p[k]));
  }
  serve_reply_json(rp, 200, root);
}

static int route_predict(serve_server *srv, const serve_request *rq, serve_reply *rp) {
  classifier *c = srv->model.impl;
  /* JSON by its type, or by its look when the client sent none or a form type (curl -d) */
  const char *first = rq->body + strspn(rq->body, " \t\r\n");
  const int json = !strncmp(rq->content_type, "application/json", 16) ||
                   ((!*rq->content_type || !strncmp(rq->content_type, "application/x-www-form-urlencoded", 33)) &&
                    *first == '{');
  cJSON *body = NULL;
  if (json && !(body = serve_parse_object(rq, rp))) return 1;
  int top = 3, invert = 1;
  const cJSON *v;
  if (body && (v = cJSON_GetObjectItemCaseSensitive(body, "top"))) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 64 || v->valuedouble != (int)v->valuedouble) {
      cJSON_Delete(body);
      serve_reply_error(rp, 400, "invalid_request_error", "\"top\" must be a whole number from 1 to 64");
      return 1;
    }
    top = (int)v->valuedouble;
  }
  if (body && (v = cJSON_GetObjectItemCaseSensitive(body, "invert"))) {
    if (!cJSON_IsString(v) || (strcmp(v->valuestring, "auto") && strcmp(v->valuestring, "no"))) {
      cJSON_Delete(body);
      serve_reply_error(rp, 400, "invalid_request_error", "\"invert\" is \"auto\" or \"no\"");
      return 1;
    }
    invert = !strcmp(v->valuestring, "auto");
  }
  predict_job *j = request_rows(c, rq, body, rp, invert);
  cJSON_Delete(body);
  if (!j || !run_job(srv, rq, j, rp)) return 1;
  predict_reply(srv, j, top, rp);
  job_free(j);
  return 1;
}

static int route_embeddings(serve_server *srv, const serve_request *rq, serve_reply *rp) {
  classifier *c = srv->model.impl;
  cJSON *body = serve_parse_object(rq, rp);
  if (!body) return 1;
  damo_bert_pooling pooling = DAMO_BERT_POOL_CLS;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "pooling");
  if (v && (!cJSON_IsString(v) || (strcmp(v->valuestring, "cls") && strcmp(v->valuestring, "mean")))) {
    cJSON_Delete(body);
    serve_reply_error(rp, 400, "invalid_request_error", "\"pooling\" is \"cls\" (the pooler's output for [CLS]) or "
                      "\"mean\" (the last hidden states averaged)");
    return 1;
  }
  if (v && !strcmp(v->valuestring, "mean")) pooling = DAMO_BERT_POOL_MEAN;
  v = cJSON_GetObjectItemCaseSensitive(body, "encoding_format");
  if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "float"))) {
    cJSON_Delete(body);
    serve_reply_error(rp, 400, "invalid_request_error", "\"encoding_format\" can only be \"float\" here");
    return 1;
  }
  if (!cJSON_GetObjectItemCaseSensitive(body, "input")) {
    cJSON_Delete(body);
    serve_reply_error(rp, 400, "invalid_request_error", "\"input\" (a string or an array of strings) is required");
    return 1;
  }
  predict_job *j = request_rows(c, rq, body, rp, 0);
  cJSON_Delete(body);
  if (!j) return 1;
  j->embed = 1, j->pooling = pooling;
  if (!run_job(srv, rq, j, rp)) return 1;
  cJSON *root = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(root, "data");
  cJSON_AddStringToObject(root, "object", "list");
  int64_t tokens = 0;
  for (int64_t r = 0; r < j->rows; r++) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "object", "embedding");
    cJSON_AddNumberToObject(e, "index", (double)r);
    cJSON *vec = cJSON_AddArrayToObject(e, "embedding");
    for (int64_t k = 0; k < j->out_cols; k++) cJSON_AddItemToArray(vec, cJSON_CreateNumber((double)j->out[r * j->out_cols + k]));
    cJSON_AddItemToArray(data, e);
    for (int t = 0; t < c->T; t++) tokens += j->ids[r * 3 * c->T + 2 * c->T + t];
  }
  cJSON_AddStringToObject(root, "model", srv->name);
  cJSON *usage = cJSON_AddObjectToObject(root, "usage");
  cJSON_AddNumberToObject(usage, "prompt_tokens", (double)tokens);
  cJSON_AddNumberToObject(usage, "total_tokens", (double)tokens);
  job_free(j);
  serve_reply_json(rp, 200, root);
  return 1;
}

static int classifier_route(serve_server *srv, const serve_request *rq, serve_reply *rp) {
  classifier *c = srv->model.impl;
  const int predict = !strcmp(rq->url, "/v1/predict"), embed = !strcmp(rq->url, "/v1/embeddings");
  if (!predict && !(embed && c->bert)) return 0;
  if (strcmp(rq->method, "POST")) {
    serve_reply_error(rp, 405, "invalid_request_error", "%s takes POST", rq->url);
    return 1;
  }
  return predict ? route_predict(srv, rq, rp) : route_embeddings(srv, rq, rp);
}

/* ------------------------------------------------------------------ the worker */

/* Runs jobs' rows through the model: Sequential in one predict call, BERT in graph-sized chunks. */
static damo_status run_rows(serve_server *srv, classifier *c, predict_job **jobs, int n, int64_t rows) {
  const int embed = jobs[0]->embed;
  const int64_t out_cols = embed ? damo_bert_get_config(c->bert)->hidden_size : c->classes;
  for (int i = 0; i < n; i++)
    if (!(jobs[i]->out = malloc((size_t)(jobs[i]->rows * out_cols) * sizeof(float)))) return DAMO_ERR_NOMEM;
  if (c->bert) {
    const int64_t T = c->T, B = srv->max_batch;
    for (int i = 0; i < n; i++) {
      predict_job *j = jobs[i];
      j->out_cols = out_cols;
      for (int64_t r = 0; r < j->rows; r += B) { /* one row's ids, types and mask are contiguous: split them */
        const int64_t b = j->rows - r < B ? j->rows - r : B;
        int32_t *in = malloc((size_t)(3 * b * T) * sizeof *in);
        if (!in) return DAMO_ERR_NOMEM;
        for (int64_t k = 0; k < b; k++)
          for (int part = 0; part < 3; part++)
            memcpy(in + part * b * T + k * T, j->ids + (r + k) * 3 * T + part * T, (size_t)T * sizeof *in);
        damo_status st = embed ? damo_bert_embed(c->embed_graph, b, in, in + b * T, in + 2 * b * T, j->pooling,
                                                 j->out + r * out_cols)
                               : damo_bert_classify(c->classify_graph, b, in, in + b * T, in + 2 * b * T,
                                                    j->out + r * out_cols);
        free(in);
        if (st != DAMO_OK) return st;
      }
    }
    return DAMO_OK;
  }
  int64_t shape[DAMO_MAX_DIMS + 1];
  shape[0] = rows;
  memcpy(shape + 1, c->in_shape, (size_t)c->in_rank * sizeof *shape);
  damo_tensor *x = damo_tensor_new(c->in_dtype, c->in_rank + 1, shape), *p = NULL;
  if (!x) return DAMO_ERR_NOMEM;
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    const size_t bytes = (size_t)(jobs[i]->rows * c->row_len) * (c->in_dtype == DAMO_I32 ? sizeof(int32_t) : sizeof(float));
    memcpy((char *)x->data + at * c->row_len * (int64_t)(c->in_dtype == DAMO_I32 ? sizeof(int32_t) : sizeof(float)),
           jobs[i]->x ? (void *)jobs[i]->x : (void *)jobs[i]->ids, bytes);
    at += jobs[i]->rows;
  }
  damo_status st = damo_model_predict(c->m, x, (int)(rows < srv->max_batch ? rows : srv->max_batch), &p);
  damo_tensor_free(x);
  if (st != DAMO_OK) return st;
  at = 0;
  for (int i = 0; i < n; i++) {
    jobs[i]->out_cols = out_cols;
    memcpy(jobs[i]->out, damo_tensor_f32(p) + at * out_cols, (size_t)(jobs[i]->rows * out_cols) * sizeof(float));
    at += jobs[i]->rows;
  }
  damo_tensor_free(p);
  return DAMO_OK;
}

static int classifier_busy(serve_server *srv) {
  classifier *c = srv->model.impl;
  return c->queue_head != NULL || c->running;
}

static int classifier_step(serve_server *srv) {
  classifier *c = srv->model.impl;
  pthread_mutex_lock(&srv->mu);
  if (!c->queue_head) {
    pthread_mutex_unlock(&srv->mu);
    return 0;
  }
  /* dynamic batching: wait for more rows until the batch is full or the oldest job's wait is over */
  const double deadline = c->queue_head->enqueued + (double)srv->batch_wait_ms / 1000.0;
  while (c->queued_rows < srv->max_batch && cli_seconds() < deadline && !serve_begin_drain(srv)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double left = deadline - cli_seconds();
    if (left > 0.1) left = 0.1; /* a stop signal is looked at every 100 ms */
    ts.tv_nsec += (long)(left * 1e9);
    while (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&srv->work, &srv->mu, &ts);
  }
  /* take the jobs of the head's kind that fit in one batch (the head always) */
  predict_job *taken[256], **link = &c->queue_head;
  int n = 0;
  int64_t rows = 0;
  const int embed = c->queue_head->embed;
  const damo_bert_pooling pooling = c->queue_head->pooling;
  c->queue_tail = NULL;
  for (predict_job *j = c->queue_head; j;) {
    predict_job *next = j->next;
    const int fits = n == 0 || (rows + j->rows <= srv->max_batch && j->embed == embed && j->pooling == pooling && n < 256);
    if (j->abandoned) { /* its request timed out while it waited */
      *link = next;
      c->queued_rows -= j->rows;
      srv->metrics.queued--;
      job_free(j);
    } else if (fits) {
      *link = next;
      c->queued_rows -= j->rows;
      srv->metrics.queued--;
      taken[n++] = j;
      rows += j->rows;
    } else {
      link = &j->next;
      c->queue_tail = j;
    }
    j = next;
  }
  c->running = n;
  if (n) serve_metrics_batch(srv, (long)rows);
  pthread_mutex_unlock(&srv->mu);
  if (!n) return 1;
  damo_status st = run_rows(srv, c, taken, n, rows);
  const char *why = st == DAMO_OK ? "" : damo_last_error();
  pthread_mutex_lock(&srv->mu);
  for (int i = 0; i < n; i++) {
    if (st != DAMO_OK) snprintf(taken[i]->error, sizeof taken[i]->error, "%s", why[0] ? why : "out of memory");
    if (taken[i]->abandoned) job_free(taken[i]);
    else taken[i]->finished = 1;
  }
  c->running = 0;
  pthread_cond_broadcast(&srv->done);
  pthread_mutex_unlock(&srv->mu);
  return 1;
}

/* ------------------------------------------------------------------ opening and the card */

static void classifier_card(serve_server *srv, cJSON *card) {
  classifier *c = srv->model.impl;
  cJSON_AddNumberToObject(card, "parameters", (double)(c->bert ? damo_bert_num_params(c->bert) : damo_model_num_params(c->m)));
  cJSON *shape = cJSON_AddArrayToObject(card, "input_shape");
  if (c->bert) {
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(c->T));
  } else {
    for (int i = 0; i < c->in_rank; i++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)c->in_shape[i]));
  }
  cJSON_AddStringToObject(card, "input", text_model(c) ? "text" : c->images ? "picture" : "numbers");
  cJSON *names = cJSON_AddArrayToObject(card, "classes");
  for (int i = 0; i < c->n_names; i++) cJSON_AddItemToArray(names, cJSON_CreateString(c->names[i]));
  const int int8 = c->bert ? damo_bert_is_quantized(c->bert) : damo_model_is_quantized(c->m);
  cJSON_AddStringToObject(card, "precision", int8 ? "int8" : damo_get_matmul_precision() == DAMO_MATMUL_BF16 ? "bf16"
                                                                                                            : "f32");
  cJSON *endpoints = cJSON_AddArrayToObject(card, "endpoints");
  cJSON_AddItemToArray(endpoints, cJSON_CreateString("/v1/predict"));
  if (c->bert) cJSON_AddItemToArray(endpoints, cJSON_CreateString("/v1/embeddings"));
  cJSON_AddNumberToObject(card, "max_batch", (double)srv->max_batch);
}

static void classifier_free(serve_server *srv) {
  classifier *c = srv->model.impl;
  if (!c) return;
  for (predict_job *j = c->queue_head; j;) {
    predict_job *next = j->next;
    job_free(j);
    j = next;
  }
  damo_model_free(c->m);
  damo_vocab_free(c->vocab);
  damo_bert_graph_free(c->classify_graph);
  damo_bert_graph_free(c->embed_graph);
  damo_wordpiece_free(c->wp);
  damo_bert_free(c->bert);
  free(c->fallback);
  if (c->bert) free(c->names);
  free(c);
  srv->model.impl = NULL;
}

static void set_model(serve_server *srv, classifier *c, const char *kind) {
  srv->model = (serve_model){.kind = kind, .impl = c, .card = classifier_card, .route = classifier_route,
                             .step = classifier_step, .busy = classifier_busy, .free = classifier_free};
}

int serve_classifier_open(serve_server *srv, int argc, char **argv) {
  (void)argc, (void)argv;
  classifier *c = calloc(1, sizeof *c);
  if (!c) return !cli_fail("serve");
  set_model(srv, c, "classifier");
  if (damo_model_load(srv->dir, &c->m) != DAMO_OK) return !cli_fail("serve");
  if (damo_model_num_inputs(c->m) != 1) {
    fprintf(stderr, "damo serve: %s has %d inputs; serving models of several inputs is not built yet\n", srv->dir,
            damo_model_num_inputs(c->m));
    return 0;
  }
  c->in_rank = damo_model_input_info(c->m, 0, NULL, c->in_shape, &c->in_dtype);
  c->row_len = 1;
  for (int i = 0; i < c->in_rank; i++) c->row_len *= c->in_shape[i];
  int64_t out_shape[DAMO_MAX_DIMS];
  const int out_rank = damo_model_output_info(c->m, 0, NULL, out_shape);
  c->classes = 1;
  for (int i = 0; i < out_rank; i++) c->classes *= out_shape[i];
  const char *const *names;
  c->n_names = damo_model_class_names(c->m, &names);
  c->names = (const char **)names;
  const int text = cli_text_settings(srv->dir, &c->vocab, &c->max_len, &c->numbers);
  if (text < 0) return 0;
  if (text && (c->in_dtype != DAMO_I32 || c->row_len != c->max_len)) {
    fprintf(stderr, "damo serve: %s has text.json, but its input is not %d token ids\n", srv->dir, c->max_len);
    return 0;
  }
  c->images = !text && c->in_dtype == DAMO_F32 &&
              (c->in_rank == 2 || (c->in_rank == 3 && (c->in_shape[2] == 1 || c->in_shape[2] == 3)));
  return 1;
}

int serve_bert_open(serve_server *srv, int argc, char **argv) {
  (void)argc, (void)argv;
  classifier *c = calloc(1, sizeof *c);
  if (!c) return !cli_fail("serve");
  set_model(srv, c, "bert");
  c->head = -1;
  if (cli_bert_open(srv->dir, "serve", &c->bert, &c->wp, &c->T, &c->head) != 1) {
    if (!c->bert) fprintf(stderr, "damo serve: %s is not a fine-tuned BERT directory\n", srv->dir);
    return 0;
  }
  const int L = damo_bert_get_config(c->bert)->num_labels;
  c->classes = L, c->n_names = L, c->row_len = 3 * (int64_t)c->T;
  c->names = malloc((size_t)L * sizeof *c->names);
  c->fallback = malloc((size_t)L * sizeof *c->fallback);
  if (!c->names || !c->fallback) return !cli_fail("serve");
  for (int k = 0; k < L; k++) c->names[k] = cli_bert_label_name(c->bert, k, c->fallback[k]);
  if (damo_bert_classifier_new(c->bert, srv->max_batch, c->T, 0, &c->classify_graph) != DAMO_OK ||
      damo_bert_encoder_new(c->bert, srv->max_batch, c->T, &c->embed_graph) != DAMO_OK)
    return !cli_fail("serve");
  return 1;
}
