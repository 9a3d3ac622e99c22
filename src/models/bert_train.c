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
  memset(mask, 0, (size_t)m->p.n_params_padded);
  for (int i = 0; i < m->p.n_tensors; i++) {
    const damo_tensor *t = m->p.values[i];
    if (t->ndim != 2) continue;
    memset(mask + ((const float *)t->data - m->p.param_block), 1, (size_t)damo_tensor_numel(t));
  }
  return DAMO_OK;
}

static damo_schedule schedule_of(const damo_bert_train_options *o) {
  return (damo_schedule){.kind = DAMO_SCHED_COSINE, .warmup_steps = o->warmup_steps, .total_steps = o->steps,
                         .min_lr = o->min_lr};
}

/* The optimizer every BERT trainer uses. */
static damo_status make_optimizer(damo_bert *m, const damo_bert_train_options *o, damo_optimizer **out) {
  damo_optimizer_config c = damo_adamw(o->lr, o->weight_decay);
  c.beta1 = o->beta1;
  c.beta2 = o->beta2;
  c.eps = o->eps;
  c.clip_norm = o->clip_norm;
  c.schedule = schedule_of(o);
  *out = damo_optimizer_new(&c, m->p.n_params_padded);
  if (!*out) return damo_error_prefix(DAMO_ERR_INVALID_ARG, "bert trainer: ");
  uint8_t *mask = malloc((size_t)m->p.n_params_padded);
  damo_status st = mask ? damo_bert_decay_mask(m, mask) : damo_error(DAMO_ERR_NOMEM, "bert trainer: out of memory");
  if (st == DAMO_OK) st = damo_optimizer_set_decay_mask(*out, mask);
  free(mask);
  if (st != DAMO_OK) {
    damo_optimizer_free(*out);
    *out = NULL;
  }
  return st;
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
  int64_t steps_done;
  damo_divergence diverge;
};

void damo_bert_pretrainer_free(damo_bert_pretrainer *t) {
  if (!t) return;
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
  damo_rng_seed(&t->rng, opt->seed);
  const size_t bt = (size_t)(opt->batch_size * opt->seq_len), bm = (size_t)(opt->batch_size * opt->predictions);
  t->batch_ids = malloc(bt * sizeof(int32_t));
  t->types = calloc(bt, sizeof(int32_t));
  t->mask = malloc(bt * sizeof(int32_t));
  t->positions = malloc(bm * sizeof(int32_t));
  t->labels = malloc(bm * sizeof(int32_t));
  if (!t->batch_ids || !t->types || !t->mask || !t->positions || !t->labels)
    st = damo_error(DAMO_ERR_NOMEM, "bert_pretrainer_new: out of memory for a batch");
  if (st == DAMO_OK) st = make_optimizer(m, opt, &t->optimizer);
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

damo_status damo_bert_pretrainer_step(damo_bert_pretrainer *t, damo_bert_step_report *report) {
  if (!t) return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_step: NULL trainer");
  const int64_t B = t->opt.batch_size, W = t->opt.seq_len - 2;
  for (int64_t b = 0; b < B; b++)
    fill_masked(t, b, (int64_t)damo_rng_below(&t->rng, (uint32_t)(t->n_train - W)), &t->rng);
  float loss = 0;
  damo_status st = damo_bert_mlm_forward(t->graph, B, t->batch_ids, t->types, t->mask, t->positions, t->labels, 1, &loss);
  if (st == DAMO_OK) st = damo_bert_graph_backward(t->graph);
  if (st == DAMO_OK && !isfinite(loss)) st = damo_error(DAMO_ERR_NUMERIC, "masked-LM loss is %g", (double)loss);
  if (st == DAMO_OK) st = damo_divergence_check(&t->diverge, loss);
  const int64_t step = damo_optimizer_steps(t->optimizer);
  float norm = 0;
  if (st == DAMO_OK)
    st = damo_optimizer_step(t->optimizer, t->model->p.param_block, t->model->p.grad_block, t->opt.steps, &norm);
  if (st != DAMO_OK) return damo_error_prefix(st, "bert pre-training step %lld: ", (long long)t->steps_done + 1);
  t->steps_done++;
  if (report) {
    report->step = t->steps_done;
    report->loss = loss;
    const damo_schedule sched = schedule_of(&t->opt);
    report->lr = damo_schedule_lr(&sched, t->opt.lr, step, t->opt.steps);
    report->grad_norm = norm;
  }
  return DAMO_OK;
}

damo_status damo_bert_pretrainer_eval(damo_bert_pretrainer *t, float *val_loss) {
  if (!t || !val_loss) return damo_error(DAMO_ERR_INVALID_ARG, "bert_pretrainer_eval: NULL argument");
  const int64_t B = t->opt.batch_size, W = t->opt.seq_len - 2;
  const int64_t n = (t->opt.eval_windows + B - 1) / B * B, span = t->n_ids - t->n_train - W;
  damo_rng rng; /* the same masks every time */
  damo_rng_seed(&rng, 0x5eed);
  double sum = 0;
  for (int64_t first = 0; first < n; first += B) {
    for (int64_t b = 0; b < B; b++) {
      const int64_t i = first + b;
      fill_masked(t, b, t->n_train + (n > 1 ? span * i / (n - 1) : 0), &rng);
    }
    float loss = 0;
    damo_status st = damo_bert_mlm_forward(t->graph, B, t->batch_ids, t->types, t->mask, t->positions, t->labels, 0, &loss);
    if (st != DAMO_OK) return damo_error_prefix(st, "bert pre-training validation: ");
    sum += loss;
  }
  *val_loss = (float)(sum / (double)(n / B));
  return DAMO_OK;
}

int64_t damo_bert_pretrainer_steps_done(const damo_bert_pretrainer *t) { return t ? t->steps_done : 0; }

/* ------------------------------------------------------------------ classifier fine-tuning */

struct damo_bert_finetuner {
  damo_bert *model;
  damo_bert_train_options opt;
  damo_bert_graph *train, *infer;
  damo_optimizer *optimizer;
  damo_divergence diverge;
};

void damo_bert_finetuner_free(damo_bert_finetuner *f) {
  if (!f) return;
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
  st = make_optimizer(m, opt, &f->optimizer);
  if (st == DAMO_OK) st = damo_bert_classifier_new(m, opt->batch_size, opt->seq_len, 1, &f->train);
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
  float loss = 0, norm = 0;
  const int64_t step = damo_optimizer_steps(f->optimizer);
  damo_status st = damo_bert_graph_forward(f->train, batch, ids, types, mask, labels, 1, &loss);
  if (st == DAMO_OK) st = damo_bert_graph_backward(f->train);
  if (st == DAMO_OK && !isfinite(loss)) st = damo_error(DAMO_ERR_NUMERIC, "classifier loss is %g", (double)loss);
  if (st == DAMO_OK) st = damo_divergence_check(&f->diverge, loss);
  if (st == DAMO_OK)
    st = damo_optimizer_step(f->optimizer, f->model->p.param_block, f->model->p.grad_block, f->opt.steps, &norm);
  if (st != DAMO_OK) return damo_error_prefix(st, "bert fine-tuning step %lld: ", (long long)step + 1);
  if (report) {
    report->step = step + 1;
    report->loss = loss;
    const damo_schedule sched = schedule_of(&f->opt);
    report->lr = damo_schedule_lr(&sched, f->opt.lr, step, f->opt.steps);
    report->grad_norm = norm;
  }
  return DAMO_OK;
}

damo_status damo_bert_finetuner_predict(damo_bert_finetuner *f, int64_t batch, const int32_t *ids, const int32_t *types,
                                        const int32_t *mask, float *probs) {
  if (!f) return damo_error(DAMO_ERR_INVALID_ARG, "bert_finetuner_predict: NULL argument");
  return damo_bert_classify(f->infer, batch, ids, types, mask, probs);
}
