/* bert_train.c - training BERT: masked-LM pre-training on a token stream, and fine-tuning
 * the classifier on labelled examples. Both step one AdamW over the flat parameter block
 * with decay on 2-D tensors only (no decay for biases and LayerNorm, as HuggingFace's
 * Trainer and the BERT paper's code do) and a linear warm-up then cosine decay to min_lr.
 *
 * Pre-training examples (the BERT paper's recipe without next-sentence prediction, as
 * RoBERTa trains): a window of T - 2 consecutive tokens from the training part of the stream,
 * wrapped as [CLS] window [SEP]; round(mask_prob (T - 2)) positions of the window (at least
 * one, at most `predictions`) are chosen to predict, and each is replaced by [MASK] with
 * probability 0.8, by a random id with 0.1, and kept with 0.1. Windows start uniformly at
 * random (seeded); validation uses fixed windows evenly spread over the held-out last 10%,
 * masked with a fixed seed, so its loss is comparable across steps and runs. */
#include "core/core.h"
#include "models/bert.h"

#include <math.h>

#define VALIDATION_FRACTION 0.1

damo_bert_train_options damo_bert_train_defaults(void) {
  damo_bert_train_options o;
  memset(&o, 0, sizeof o);
  o.steps = 1000;
  o.batch_size = 16;
  o.seq_len = 128;
  o.predictions = 20;
  o.mask_prob = 0.15f;
  o.lr = 1e-4f;
  o.min_lr = 0.0f;
  o.warmup_steps = 100;
  o.weight_decay = 0.01f;
  o.beta1 = 0.9f;
  o.beta2 = 0.999f;
  o.eps = 1e-6f;
  o.clip_norm = 1.0f;
  o.eval_windows = 64;
  o.seed = 42;
  o.cls_id = 101, o.sep_id = 102, o.mask_id = 103;
  return o;
}

damo_status damo_bert_decay_mask(const damo_bert *m, uint8_t *mask) {
  if (!m || !mask) return damo_error(DAMO_ERR_INVALID_ARG, "bert_decay_mask: NULL argument");
  param_store_decay_mask(&m->p, mask);
  return DAMO_OK;
}

static damo_schedule schedule_of(const damo_bert_train_options *o) {
  return (damo_schedule){.kind = DAMO_SCHED_COSINE, .warmup_steps = o->warmup_steps, .total_steps = o->steps,
                         .min_lr = o->min_lr};
}

/* The optimizer and the one training step every BERT trainer uses; a = the adapter with its
 * callbacks, completed here with the parameter store. */
static damo_status make_trainer(damo_bert *m, const damo_bert_train_options *o, damo_train_adapter a,
                                damo_optimizer **opt, damo_trainer **core) {
  damo_optimizer_config c = damo_adamw(o->lr, o->weight_decay);
  c.beta1 = o->beta1;
  c.beta2 = o->beta2;
  c.eps = o->eps;
  c.clip_norm = o->clip_norm;
  c.schedule = schedule_of(o);
  damo_status st = param_store_check_trainable(&m->p, "bert trainer");
  if (st != DAMO_OK) return st;
  if ((st = param_store_optimizer(&m->p, &c, opt)) != DAMO_OK) return damo_error_prefix(st, "bert trainer: ");
  a.params = m->p.param_block, a.grads = m->p.grad_block, a.n_params = m->p.n_params_padded;
  a.trained_ranges = m->p.trained_ranges, a.n_trained_ranges = m->p.n_trained_ranges;
  return damo_trainer_new(&a, *opt, 1, o->steps, core);
}

/* masked_lm: the pre-trainer, which also needs mask_prob and predictions (the fine-tuner
 * ignores them, so a short fine-tuning seq_len is not held to the pre-training slots). */
static damo_status check_options(const damo_bert_train_options *o, const damo_bert *m, int masked_lm) {
  if (o->steps < 1 || o->batch_size < 1 || o->seq_len < 3 || o->seq_len > m->config.max_position_embeddings)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert trainer: steps %lld and batch %lld must be >= 1, seq_len %lld in [3, %d]",
                      (long long)o->steps, (long long)o->batch_size, (long long)o->seq_len,
                      m->config.max_position_embeddings);
  if (!(o->lr > 0)) return damo_error(DAMO_ERR_INVALID_ARG, "bert trainer: lr %g must be > 0", (double)o->lr);
  if (masked_lm && (!(o->mask_prob > 0 && o->mask_prob < 1) || o->predictions < 1 || o->predictions > o->seq_len - 2))
    return damo_error(DAMO_ERR_INVALID_ARG, "bert pre-trainer: mask_prob %g must be in (0, 1), predictions %lld in "
                      "[1, seq_len - 2 = %lld]", (double)o->mask_prob, (long long)o->predictions,
                      (long long)(o->seq_len - 2));
  const int32_t V = m->config.vocab_size;
  if (o->cls_id < 0 || o->cls_id >= V || o->sep_id < 0 || o->sep_id >= V || o->mask_id < 0 || o->mask_id >= V)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert trainer: [CLS] %d, [SEP] %d, [MASK] %d must be ids below %d", o->cls_id,
                      o->sep_id, o->mask_id, V);
  return DAMO_OK;
}

/* ------------------------------------------------------------------ masked-LM pre-training */

struct damo_bert_pretrainer {
  damo_bert *model;
  damo_bert_train_options opt;
  const int32_t *ids;
  int64_t n_ids, n_train;
  damo_bert_graph *graph;
  damo_optimizer *optimizer;
  damo_rng rng;
  int32_t *batch_ids, *types, *mask, *positions, *labels; /* one batch */
  damo_trainer *core;
  damo_dist *dist; /* data parallel: this rank's rows [share_first, + share) of each batch */
  int64_t share_first, share;
};

/* What a data-parallel BERT trainer shares: the rank's rows of a batch of B and its own
 * dropout draws (rank 0 as one process); the settings must agree on every rank. */
static damo_status bert_parallel(damo_dist *d, const damo_bert_train_options *o, damo_bert_graph *g, uint64_t data_hash,
                                 int64_t *first, int64_t *count) {
  const int rank = damo_dist_rank(d), size = damo_dist_size(d);
  if (o->batch_size < size)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert training on %d ranks: batch_size %lld gives some rank no rows (use "
                      "a batch of at least %d)", size, (long long)o->batch_size, size);
  damo_status st = damo_dist_check_same(d, damo_hash_bytes(data_hash, o, sizeof *o), "BERT training options and data");
  if (st != DAMO_OK) return st;
  damo_dist_share(o->batch_size, rank, size, first, count);
  if (rank != 0) damo_rng_seed(&g->graph->rng, o->seed ^ 0x64726f706f7574ULL ^ (uint64_t)rank * 0xd1b54a32d192ed03ULL);
  return DAMO_OK;
}

static damo_status stage_masked(void *ctx, int64_t micro);
static damo_status forward_masked(void *ctx, float *loss);
static double masked_count(void *ctx);
static void masked_grad_ready(void *ctx, damo_grad_ready_fn fn, void *fn_ctx) {
  damo_graph_set_grad_ready(((damo_bert_pretrainer *)ctx)->graph->graph, fn, fn_ctx);
}
static damo_status backward_masked(void *ctx) { return damo_bert_graph_backward(((damo_bert_pretrainer *)ctx)->graph); }

void damo_bert_pretrainer_free(damo_bert_pretrainer *t) {
  if (!t) return;
  damo_trainer_free(t->core);
  damo_bert_graph_free(t->graph);
  damo_optimizer_free(t->optimizer);
  free(t->batch_ids);
  free(t->types);
  free(t->mask);
  free(t->positions);
  free(t->labels);
  free(t);
}

damo_status damo_bert_pretrainer_new(damo_bert *m, const int32_t *ids, int64_t n_ids, const damo_bert_train_options *opt,
                                     damo_bert_pretrainer **out) {
  if (!m || !ids || !opt || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_new: NULL argument");
  *out = NULL;
  damo_status st = check_options(opt, m, 1);
  if (st != DAMO_OK) return st;
  const int64_t n_train = n_ids - (int64_t)((double)n_ids * VALIDATION_FRACTION), W = opt->seq_len - 2;
  if (n_train <= W || n_ids - n_train <= W)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_new: %lld tokens are too few for windows of %lld in both "
                      "the training part and the last 10%% (validation)", (long long)n_ids, (long long)W);
  for (int64_t i = 0; i < n_ids; i++)
    if (ids[i] < 0 || ids[i] >= m->config.vocab_size)
      return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_new: token %lld is id %d, outside the vocabulary [0, %d)",
                        (long long)i, ids[i], m->config.vocab_size);
  damo_bert_pretrainer *t = calloc(1, sizeof *t);
  if (!t) return damo_error(DAMO_ERR_NOMEM, "bert_pretrainer_new: out of memory");
  t->model = m;
  t->opt = *opt;
  t->ids = ids;
  t->n_ids = n_ids;
  t->n_train = n_train;
  t->share = opt->batch_size;
  damo_rng_seed(&t->rng, opt->seed);
  const size_t bt = (size_t)(opt->batch_size * opt->seq_len), bm = (size_t)(opt->batch_size * opt->predictions);
  t->batch_ids = malloc(bt * sizeof(int32_t));
  t->types = calloc(bt, sizeof(int32_t));
  t->mask = malloc(bt * sizeof(int32_t));
  t->positions = malloc(bm * sizeof(int32_t));
  t->labels = malloc(bm * sizeof(int32_t));
  if (!t->batch_ids || !t->types || !t->mask || !t->positions || !t->labels)
    st = damo_error(DAMO_ERR_NOMEM, "bert_pretrainer_new: out of memory for a batch");
  if (st == DAMO_OK) {
    damo_train_adapter a = {.name = "bert pre-training", .ctx = t, .stage = stage_masked, .forward = forward_masked,
                            .backward = backward_masked, .loss_weight = masked_count,
                            .set_grad_ready = masked_grad_ready};
    st = make_trainer(m, opt, a, &t->optimizer, &t->core);
  }
  if (st == DAMO_OK) st = damo_bert_mlm_new(m, opt->batch_size, opt->seq_len, opt->predictions, &t->graph);
  if (st == DAMO_OK) damo_bert_graph_seed(t->graph, opt->seed + 1);
  if (st != DAMO_OK) {
    damo_bert_pretrainer_free(t);
    return st;
  }
  *out = t;
  return DAMO_OK;
}

/* Row b of the batch: [CLS] tokens[start .. start + T - 2) [SEP], masked with rng. */
static void fill_masked(damo_bert_pretrainer *t, int64_t b, int64_t start, damo_rng *rng) {
  const damo_bert_train_options *o = &t->opt;
  const int64_t T = o->seq_len, W = T - 2, M = o->predictions;
  int32_t *row = t->batch_ids + b * T, *pos = t->positions + b * M, *lab = t->labels + b * M;
  row[0] = o->cls_id;
  memcpy(row + 1, t->ids + start, (size_t)W * sizeof *row);
  row[T - 1] = o->sep_id;
  for (int64_t i = 0; i < T; i++) t->mask[b * T + i] = 1;
  int64_t k = (int64_t)lround((double)o->mask_prob * (double)W);
  k = k < 1 ? 1 : (k > M ? M : k);
  /* k distinct positions in 1..W: a partial Fisher-Yates over the window's offsets. */
  int64_t chosen = 0;
  int32_t offsets[4096];
  const int64_t span = W < 4096 ? W : 4096;
  for (int64_t i = 0; i < span; i++) offsets[i] = (int32_t)(1 + i);
  for (; chosen < k && chosen < span; chosen++) {
    int64_t j = chosen + (int64_t)damo_rng_below(rng, (uint32_t)(span - chosen));
    int32_t tmp = offsets[chosen];
    offsets[chosen] = offsets[j];
    offsets[j] = tmp;
    const int32_t p = offsets[chosen];
    pos[chosen] = p;
    lab[chosen] = row[p];
    const float r = damo_rng_uniform(rng);
    if (r < 0.8f) row[p] = o->mask_id;
    else if (r < 0.9f) row[p] = (int32_t)damo_rng_below(rng, (uint32_t)t->model->config.vocab_size);
  }
  for (int64_t j = chosen; j < M; j++) pos[j] = 0, lab[j] = -100;
}

static damo_status stage_masked(void *ctx, int64_t micro) {
  damo_bert_pretrainer *t = ctx;
  (void)micro;
  const int64_t W = t->opt.seq_len - 2;
  for (int64_t b = 0; b < t->opt.batch_size; b++)
    fill_masked(t, b, (int64_t)damo_rng_below(&t->rng, (uint32_t)(t->n_train - W)), &t->rng);
  return DAMO_OK;
}

/* Every rank fills the whole batch (the windows and masks come from one generator) and
 * runs its rows. */
static damo_status forward_masked(void *ctx, float *loss) {
  damo_bert_pretrainer *t = ctx;
  const int64_t T = t->opt.seq_len, M = t->opt.predictions, f = t->share_first;
  return damo_bert_mlm_forward(t->graph, t->share, t->batch_ids + f * T, t->types + f * T, t->mask + f * T,
                               t->positions + f * M, t->labels + f * M, 1, loss);
}

/* The masked positions this rank predicts: what its mean loss averages over. */
static double masked_count(void *ctx) {
  const damo_bert_pretrainer *t = ctx;
  const int64_t M = t->opt.predictions;
  int64_t n = 0;
  for (int64_t i = t->share_first * M; i < (t->share_first + t->share) * M; i++) n += t->labels[i] != -100;
  return (double)n;
}

damo_status damo_bert_pretrainer_set_data_parallel(damo_bert_pretrainer *t, damo_dist *d,
                                                   const damo_data_parallel_options *o) {
  if (!t) return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_set_data_parallel: NULL trainer");
  const uint64_t h = damo_hash_bytes(DAMO_HASH_START, t->ids, (size_t)t->n_ids * sizeof *t->ids);
  damo_status st = bert_parallel(d, &t->opt, t->graph, h, &t->share_first, &t->share);
  if (st == DAMO_OK) t->dist = d, st = damo_trainer_set_data_parallel(t->core, d, o);
  return st;
}

static void copy_report(const damo_train_report *r, damo_bert_step_report *report) {
  if (!report) return;
  report->step = r->step;
  report->loss = r->loss;
  report->lr = r->lr;
  report->grad_norm = r->grad_norm;
}

damo_status damo_bert_pretrainer_step(damo_bert_pretrainer *t, damo_bert_step_report *report) {
  if (!t) return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_step: NULL trainer");
  damo_train_report r;
  damo_status st = damo_trainer_step(t->core, &r);
  if (st == DAMO_OK) copy_report(&r, report);
  return st;
}

damo_status damo_bert_pretrainer_eval(damo_bert_pretrainer *t, float *val_loss) {
  if (!t || !val_loss) return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_eval: NULL argument");
  const int64_t B = t->opt.batch_size, W = t->opt.seq_len - 2;
  const int64_t n = (t->opt.eval_windows + B - 1) / B * B, span = t->n_ids - t->n_train - W;
  damo_rng rng; /* the same masks every time */
  damo_rng_seed(&rng, 0x5eed);
  double sum = 0;
  const int64_t T = t->opt.seq_len, M = t->opt.predictions, f = t->share_first;
  for (int64_t first = 0; first < n; first += B) {
    for (int64_t b = 0; b < B; b++) {
      const int64_t i = first + b;
      fill_masked(t, b, t->n_train + (n > 1 ? span * i / (n - 1) : 0), &rng);
    }
    float loss = 0;
    damo_status st = damo_bert_mlm_forward(t->graph, t->share, t->batch_ids + f * T, t->types + f * T, t->mask + f * T,
                                           t->positions + f * M, t->labels + f * M, 0, &loss);
    if (st != DAMO_OK) return damo_error_prefix(st, "bert pre-training validation: ");
    if (damo_dist_size(t->dist) > 1) { /* the batch's mean over every rank's masked positions */
      const double w = masked_count(t);
      double v[2] = {(double)loss * w, w};
      if ((st = damo_dist_allreduce_f64(t->dist, v, 2)) != DAMO_OK) return st;
      sum += v[0] / v[1];
    } else {
      sum += loss;
    }
  }
  *val_loss = (float)(sum / (double)(n / B));
  return DAMO_OK;
}

int64_t damo_bert_pretrainer_steps_done(const damo_bert_pretrainer *t) { return t ? damo_trainer_steps_done(t->core) : 0; }

/* ------------------------------------------------------------------ checkpoints of both trainers */

/* The token stream a checkpoint was trained on: its length and FNV-1a hash. */
typedef struct stream_id {
  int64_t n;
  uint32_t hash;
} stream_id;

static stream_id stream_of(const int32_t *ids, int64_t n) {
  stream_id s = {n, 2166136261u};
  for (int64_t i = 0; i < n; i++) s.hash = (s.hash ^ (uint32_t)ids[i]) * 16777619u;
  return s;
}

damo_status damo_bert_pretrainer_checkpoint_add(const damo_bert_pretrainer *t, const damo_train_event *e,
                                                damo_tensor_dict *d) {
  if (!t || !e || !d) return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_checkpoint_add: NULL argument");
  const stream_id id = stream_of(t->ids, t->n_ids);
  damo_status st = damo_trainer_checkpoint_add(e, d);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "bert.windows_rng", &t->rng, sizeof t->rng);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "bert.dropout_rng", &t->graph->graph->rng, sizeof t->graph->graph->rng);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "bert.stream", &id, sizeof id);
  return st;
}

damo_status damo_bert_pretrainer_resume(damo_bert_pretrainer *t, const damo_tensor_dict *d, const char *path) {
  if (!t || !d) return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_resume: NULL argument");
  damo_rng windows = {{0}}, dropout = {{0}};
  stream_id id, want = stream_of(t->ids, t->n_ids);
  damo_status st = damo_tensor_dict_get_bytes(d, path, "bert.stream", &id, sizeof id);
  if (st == DAMO_OK && (id.n != want.n || id.hash != want.hash))
    st = damo_error(DAMO_ERR_INVALID_ARG, "%s: the checkpoint was pre-trained on another text (%lld tokens, hash %08x; "
                    "this --data gives %lld tokens, hash %08x): resume with the same --data", path, (long long)id.n,
                    id.hash, (long long)want.n, want.hash);
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "bert.windows_rng", &windows, sizeof windows);
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "bert.dropout_rng", &dropout, sizeof dropout);
  if (st == DAMO_OK) st = damo_trainer_resume(t->core, d, path);
  if (st == DAMO_OK) t->rng = windows, t->graph->graph->rng = dropout;
  return st;
}

/* ------------------------------------------------------------------ classifier fine-tuning */

struct damo_bert_finetuner {
  damo_bert *model;
  damo_bert_train_options opt;
  damo_bert_graph *train, *infer;
  damo_optimizer *optimizer;
  damo_trainer *core;
  /* the caller's batch of the step being taken (a data-parallel fit: this rank's rows) */
  int64_t batch;
  const int32_t *ids, *types, *mask, *labels;
  damo_dist *dist;
  int64_t share_first, share; /* of a full batch */
  /* DP-SGD (opt.privacy): the step's sampled rows of dp_train, staged dp_pass at a time */
  const damo_bert_examples *dp_train;
  int64_t *dp_rows, dp_count, dp_pass;
  int32_t *dp_staged;
};

static double classifier_rows(void *ctx) { return (double)((damo_bert_finetuner *)ctx)->batch; }
static void classifier_grad_ready(void *ctx, damo_grad_ready_fn fn, void *fn_ctx) {
  damo_graph_set_grad_ready(((damo_bert_finetuner *)ctx)->train->graph, fn, fn_ctx);
}

static damo_status stage_given(void *ctx, int64_t micro) {
  damo_bert_finetuner *f = ctx;
  if (!f->opt.privacy) return DAMO_OK; /* damo_bert_finetuner_step was handed the batch */
  /* DP-SGD: pass `micro` of the sampled rows */
  const damo_bert_examples *e = f->dp_train;
  const int64_t T = f->opt.seq_len, P = f->dp_pass, first = micro * P;
  const int64_t b = f->dp_count - first < P ? f->dp_count - first : P;
  int32_t *ids = f->dp_staged, *types = ids + P * T, *mask = types + P * T, *labels = mask + P * T;
  for (int64_t k = 0; k < b; k++) {
    const int64_t row = f->dp_rows[first + k];
    memcpy(ids + k * T, e->ids + row * T, (size_t)T * sizeof(int32_t));
    memcpy(types + k * T, e->types + row * T, (size_t)T * sizeof(int32_t));
    memcpy(mask + k * T, e->mask + row * T, (size_t)T * sizeof(int32_t));
    labels[k] = e->labels[row];
  }
  f->batch = b, f->ids = ids, f->types = types, f->mask = mask, f->labels = labels;
  return DAMO_OK;
}

static damo_graph *classifier_graph(void *ctx) { return ((damo_bert_finetuner *)ctx)->train->graph; }

static int64_t classifier_passes(void *ctx) {
  const damo_bert_finetuner *f = ctx;
  return (f->dp_count + f->dp_pass - 1) / f->dp_pass;
}

static damo_status forward_classifier(void *ctx, float *loss) {
  damo_bert_finetuner *f = ctx;
  return damo_bert_graph_forward(f->train, f->batch, f->ids, f->types, f->mask, f->labels, 1, loss);
}

static damo_status backward_classifier(void *ctx) { return damo_bert_graph_backward(((damo_bert_finetuner *)ctx)->train); }

void damo_bert_finetuner_free(damo_bert_finetuner *f) {
  if (!f) return;
  damo_trainer_free(f->core);
  free(f->dp_rows);
  free(f->dp_staged);
  damo_bert_graph_free(f->train);
  damo_bert_graph_free(f->infer);
  damo_optimizer_free(f->optimizer);
  free(f);
}

damo_status damo_bert_finetuner_new(damo_bert *m, const damo_bert_train_options *opt, damo_bert_finetuner **out) {
  if (!m || !opt || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_finetuner_new: NULL argument");
  *out = NULL;
  damo_status st = check_options(opt, m, 0);
  if (st != DAMO_OK) return st;
  damo_bert_finetuner *f = calloc(1, sizeof *f);
  if (!f) return damo_error(DAMO_ERR_NOMEM, "bert_finetuner_new: out of memory");
  f->model = m;
  f->opt = *opt;
  f->share = opt->batch_size;
  damo_train_adapter a = {.name = "bert fine-tuning", .ctx = f, .stage = stage_given, .forward = forward_classifier,
                          .backward = backward_classifier, .loss_weight = classifier_rows,
                          .set_grad_ready = classifier_grad_ready, .graph = classifier_graph,
                          .micro_batches = opt->privacy ? classifier_passes : NULL};
  st = make_trainer(m, opt, a, &f->optimizer, &f->core);
  /* DP-SGD: a Poisson batch's passes 4 standard deviations above the mean, on a graph that
   * keeps its forward values for the second backward */
  const damo_dp_options *dp = opt->privacy;
  f->dp_pass = dp && dp->physical_batch > 0 ? dp->physical_batch
               : dp && dp->sampling == DAMO_DP_POISSON ? opt->batch_size + (int64_t)ceil(4.0 * sqrt((double)opt->batch_size))
                                                      : opt->batch_size;
  m->keep_forward = dp != NULL;
  if (st == DAMO_OK) st = damo_bert_classifier_new(m, f->dp_pass, opt->seq_len, 1, &f->train);
  m->keep_forward = 0;
  if (st == DAMO_OK) st = damo_bert_classifier_new(m, opt->batch_size, opt->seq_len, 0, &f->infer);
  if (st == DAMO_OK) damo_bert_graph_seed(f->train, opt->seed);
  if (st != DAMO_OK) {
    damo_bert_finetuner_free(f);
    return st;
  }
  *out = f;
  return DAMO_OK;
}

damo_status damo_bert_finetuner_step(damo_bert_finetuner *f, int64_t batch, const int32_t *ids, const int32_t *types,
                                     const int32_t *mask, const int32_t *labels, damo_bert_step_report *report) {
  if (!f) return damo_error(DAMO_ERR_INVALID_ARG, "bert_finetuner_step: NULL argument");
  if (damo_dist_size(f->dist) > 1) { /* data parallel: the caller's batch is global, this rank takes its share */
    int64_t first, count;
    const int64_t T = f->opt.seq_len;
    damo_dist_share(batch, damo_dist_rank(f->dist), damo_dist_size(f->dist), &first, &count);
    ids += first * T, types += first * T, mask += first * T, labels += first, batch = count;
  }
  f->batch = batch, f->ids = ids, f->types = types, f->mask = mask, f->labels = labels;
  damo_train_report r;
  damo_status st = damo_trainer_step(f->core, &r);
  if (st == DAMO_OK) copy_report(&r, report);
  return st;
}

damo_status damo_bert_finetuner_predict(damo_bert_finetuner *f, int64_t batch, const int32_t *ids, const int32_t *types,
                                        const int32_t *mask, float *probs) {
  if (!f) return damo_error(DAMO_ERR_INVALID_ARG, "bert_finetuner_predict: NULL argument");
  return damo_bert_classify(f->infer, batch, ids, types, mask, probs);
}

damo_status damo_bert_finetuner_set_data_parallel(damo_bert_finetuner *f, damo_dist *d,
                                                  const damo_data_parallel_options *o) {
  if (!f) return damo_error(DAMO_ERR_INVALID_ARG, "bert_finetuner_set_data_parallel: NULL fine-tuner");
  if (f->opt.privacy && damo_dist_size(d) > 1)
    return damo_error(DAMO_ERR_UNSUPPORTED, "bert fine-tuning: DP-SGD runs in one process (its clipping and noise are "
                      "not split over %d ranks yet)", damo_dist_size(d));
  if (f->opt.privacy) return DAMO_OK; /* a world of one: the plain step */
  damo_status st = bert_parallel(d, &f->opt, f->train, DAMO_HASH_START, &f->share_first, &f->share);
  if (st == DAMO_OK) f->dist = d, st = damo_trainer_set_data_parallel(f->core, d, o);
  return st;
}

damo_trainer *damo_bert_pretrainer_core(damo_bert_pretrainer *t) { return t ? t->core : NULL; }

damo_trainer *damo_bert_finetuner_core(damo_bert_finetuner *t) { return t ? t->core : NULL; }

/* ------------------------------------------------------------------ fine-tuning epochs */

damo_status damo_bert_finetuner_score(damo_bert_finetuner *f, const damo_bert_examples *e, damo_metrics *out) {
  if (!f || !e || !out) return damo_error(DAMO_ERR_INVALID_ARG, "bert_finetuner_score: NULL argument");
  const int64_t B = f->opt.batch_size, T = f->opt.seq_len, L = f->model->config.num_labels, n = e->n;
  int64_t ps[2] = {n, L}, ls[1] = {n};
  damo_tensor *probs = damo_tensor_new(DAMO_F32, 2, ps), *labels = damo_tensor_new(DAMO_I32, 1, ls);
  damo_status st = probs && labels ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "bert_finetuner_score: out of memory");
  /* a data-parallel run scores its share of the rows, then every rank gathers all */
  const int size = damo_dist_size(f->dist);
  int64_t lo = 0, count = n, *counts = size > 1 ? malloc((size_t)size * sizeof *counts) : NULL;
  if (size > 1 && !counts) st = damo_error(DAMO_ERR_NOMEM, "bert_finetuner_score: out of memory");
  if (size > 1) damo_dist_share(n, damo_dist_rank(f->dist), size, &lo, &count);
  for (int64_t first = lo; st == DAMO_OK && first < lo + count; first += B) {
    const int64_t b = lo + count - first < B ? lo + count - first : B;
    st = damo_bert_classify(f->infer, b, e->ids + first * T, e->types + first * T, e->mask + first * T,
                            damo_tensor_f32(probs) + first * L);
  }
  if (st == DAMO_OK && size > 1) {
    for (int r = 0; r < size; r++) {
      int64_t a;
      damo_dist_share(n, r, size, &a, &counts[r]);
      counts[r] *= L;
    }
    st = damo_dist_allgather_f32(f->dist, damo_tensor_f32(probs), counts);
  }
  free(counts);
  if (st == DAMO_OK) {
    memcpy(labels->data, e->labels, (size_t)n * sizeof(int32_t));
    memset(out, 0, sizeof *out);
    st = damo_classification_metrics(probs, labels, out);
  }
  damo_tensor_free(probs);
  damo_tensor_free(labels);
  return st;
}

typedef struct finetune_run {
  damo_bert_finetuner *f;
  const damo_bert_examples *train, *val;
  int64_t *order;
  int32_t *staged; /* ids, types, mask (B x T each), then B labels */
  damo_rng rng;
  const damo_bert_fit_options *o;
} finetune_run;

static damo_status finetune_epoch_begin(void *ctx, int64_t epoch, int64_t first_step) {
  finetune_run *r = ctx;
  (void)epoch;
  if (first_step > 0) return DAMO_OK; /* resumed: the order was restored */
  for (int64_t i = 0; i < r->train->n; i++) r->order[i] = i; /* each epoch a fresh permutation */
  damo_shuffle_indices(r->order, r->train->n, &r->rng);
  return DAMO_OK;
}

/* Gathers step s's rows of the shuffled order into the staging block. */
static damo_status finetune_step_begin(void *ctx, int64_t s, int64_t *examples) {
  finetune_run *r = ctx;
  damo_bert_finetuner *f = r->f;
  const damo_bert_examples *e = r->train;
  if (f->opt.privacy) { /* DP-SGD: every example with probability B / n, or the shuffled order's batch */
    const damo_dp_options *dp = f->opt.privacy;
    f->dp_count = 0;
    if (dp->sampling == DAMO_DP_POISSON) {
      f->dp_count = damo_dp_poisson_sample(&r->rng, NULL, e->n, dp->sample_rate, f->dp_rows);
    } else {
      const int64_t B = f->opt.batch_size, first = s * B;
      for (int64_t k = first; k < e->n && k < first + B; k++) f->dp_rows[f->dp_count++] = r->order[k];
    }
    *examples = f->dp_count;
    return DAMO_OK;
  }
  const int64_t B = f->opt.batch_size, T = f->opt.seq_len, first = s * B, b = e->n - first < B ? e->n - first : B;
  int32_t *ids = r->staged, *types = ids + B * T, *mask = types + B * T, *labels = mask + B * T;
  *examples = b;
  int64_t lo = 0, count = b; /* a data-parallel run stages its share of the batch */
  damo_dist_share(b, damo_dist_rank(f->dist), damo_dist_size(f->dist), &lo, &count);
  for (int64_t k = 0; k < count; k++) {
    const int64_t row = r->order[first + lo + k];
    memcpy(ids + k * T, e->ids + row * T, (size_t)T * sizeof(int32_t));
    memcpy(types + k * T, e->types + row * T, (size_t)T * sizeof(int32_t));
    memcpy(mask + k * T, e->mask + row * T, (size_t)T * sizeof(int32_t));
    labels[k] = e->labels[row];
  }
  f->batch = count, f->ids = ids, f->types = types, f->mask = mask, f->labels = labels;
  return DAMO_OK;
}

static damo_status finetune_validate(void *ctx, double *row) {
  finetune_run *r = ctx;
  damo_metrics m;
  damo_status st = damo_bert_finetuner_score(r->f, r->val, &m);
  if (st != DAMO_OK) return damo_error_prefix(st, "validation: ");
  row[DAMO_H_VAL_ACCURACY] = m.accuracy;
  row[DAMO_H_VAL_PRECISION] = m.precision;
  row[DAMO_H_VAL_RECALL] = m.recall;
  row[DAMO_H_VAL_F1] = m.f1;
  row[DAMO_H_VAL_AUC] = m.auc;
  return DAMO_OK;
}

static damo_status finetune_event(void *ctx, const damo_train_event *e) {
  finetune_run *r = ctx;
  return r->o->on_event ? r->o->on_event(r->o->ctx, e) : DAMO_OK;
}

/* The run's state for the caller's checkpoint: the trainer's, the epoch's order, the
 * shuffle and dropout generators, and what identifies the training examples. */
static damo_status finetune_checkpoint(void *ctx, const damo_train_event *e) {
  finetune_run *r = ctx;
  damo_tensor_dict *d = damo_tensor_dict_new();
  if (!d) return damo_error(DAMO_ERR_NOMEM, "checkpoint: out of memory");
  const stream_id id = stream_of(r->train->labels, r->train->n);
  damo_status st = damo_trainer_checkpoint_add(e, d);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "bert.order", r->order, (size_t)r->train->n * sizeof *r->order);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "bert.shuffle_rng", &r->rng, sizeof r->rng);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "bert.dropout_rng", &r->f->train->graph->rng, sizeof r->f->train->graph->rng);
  if (st == DAMO_OK) st = damo_tensor_dict_add_bytes(d, "bert.examples", &id, sizeof id);
  if (st == DAMO_OK) st = r->o->checkpoint(r->o->ctx, d);
  damo_tensor_dict_free(d);
  return st;
}

static damo_status finetune_resume(finetune_run *r, const damo_tensor_dict *d, const char *path) {
  stream_id id, want = stream_of(r->train->labels, r->train->n);
  damo_rng shuffle = {{0}}, dropout = {{0}};
  damo_status st = damo_tensor_dict_get_bytes(d, path, "bert.examples", &id, sizeof id);
  if (st == DAMO_OK && (id.n != want.n || id.hash != want.hash))
    st = damo_error(DAMO_ERR_INVALID_ARG, "%s: the checkpoint was fine-tuned on %lld other examples; this --data has %lld "
                    "(resume with the same data)", path, (long long)id.n, (long long)want.n);
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "bert.order", r->order, (size_t)r->train->n * sizeof *r->order);
  for (int64_t i = 0; st == DAMO_OK && i < r->train->n; i++)
    if (r->order[i] < 0 || r->order[i] >= r->train->n)
      st = damo_error(DAMO_ERR_FORMAT, "%s: 'bert.order' is not a permutation", path);
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "bert.shuffle_rng", &shuffle, sizeof shuffle);
  if (st == DAMO_OK) st = damo_tensor_dict_get_bytes(d, path, "bert.dropout_rng", &dropout, sizeof dropout);
  if (st == DAMO_OK) st = damo_trainer_resume(r->f->core, d, path);
  if (st == DAMO_OK) r->rng = shuffle, r->f->train->graph->rng = dropout;
  return st;
}

damo_status damo_bert_finetuner_fit(damo_bert_finetuner *f, const damo_bert_examples *train,
                                    const damo_bert_examples *val, const damo_bert_fit_options *o) {
  if (!f || !train || !val || !o || o->epochs < 1 || train->n < 1 || val->n < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "bert_finetuner_fit: needs training and validation examples and epochs >= 1");
  const int64_t B = f->opt.batch_size, T = f->opt.seq_len;
  finetune_run r = {.f = f, .train = train, .val = val, .o = o};
  r.order = malloc((size_t)train->n * sizeof *r.order);
  r.staged = malloc((size_t)(3 * B * T + B) * sizeof(int32_t));
  damo_rng_seed(&r.rng, f->opt.seed);
  damo_status st = r.order && r.staged ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "bert_finetuner_fit: out of memory");
  damo_dp_options *dp = f->opt.privacy;
  if (st == DAMO_OK && dp) { /* DP-SGD: the noise for the run, the sampled rows' buffers */
    const int64_t P = f->dp_pass;
    st = damo_dp_options_resolve(dp, train->n, B, o->epochs * ((train->n + B - 1) / B));
    free(f->dp_rows);
    free(f->dp_staged);
    f->dp_rows = malloc((size_t)train->n * sizeof *f->dp_rows);
    f->dp_staged = malloc((size_t)(3 * P * T + P) * sizeof(int32_t));
    f->dp_train = train;
    if (st == DAMO_OK && (!f->dp_rows || !f->dp_staged)) st = damo_error(DAMO_ERR_NOMEM, "bert_finetuner_fit: out of memory");
    if (st == DAMO_OK)
      st = damo_trainer_set_privacy(f->core, dp->clip, dp->used_noise, (double)B,
                                    dp->seed ? dp->seed : f->opt.seed ^ 0x6e6f697365ULL);
  }
  if (st == DAMO_OK && o->resume) st = finetune_resume(&r, o->resume, o->resume_path ? o->resume_path : "checkpoint");
  /* The weights of the epoch with the best validation F1 are what the run ends with; it
   * never stops early (patience past the last epoch). */
  damo_train_loop loop = {.epochs = o->epochs, .steps_per_epoch = (train->n + B - 1) / B, .log_every = o->log_every,
                          .checkpoint_every = o->checkpoint_every,
                          .recorded = (1u << DAMO_H_LOSS) | (1u << DAMO_H_VAL_ACCURACY) | (1u << DAMO_H_VAL_PRECISION) |
                                      (1u << DAMO_H_VAL_RECALL) | (1u << DAMO_H_VAL_F1) | (1u << DAMO_H_VAL_AUC) |
                                      (1u << DAMO_H_LR),
                          .patience = (int)(o->epochs + 1), .monitor = DAMO_H_VAL_F1, .higher_is_better = 1,
                          .restore_best = 1};
  damo_train_hooks hooks = {.ctx = &r, .epoch_begin = finetune_epoch_begin, .step_begin = finetune_step_begin,
                            .validate = finetune_validate, .checkpoint = o->checkpoint ? finetune_checkpoint : NULL,
                            .on_event = finetune_event};
  if (st == DAMO_OK) st = damo_trainer_run(f->core, &loop, &hooks, o->history);
  if (dp && damo_dp_options_spent(dp, damo_trainer_steps_done(f->core)) != DAMO_OK) dp->epsilon = INFINITY;
  free(r.order);
  free(r.staged);
  return st;
}
