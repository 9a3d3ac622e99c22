/* gpt2_train.c - the GPT-2 training loop: random windows, gradient accumulation, AdamW with
 * a decay mask, cosine schedule with warm-up, clipping, validation, checkpoints and resume.
 *
 * Batches. Each micro-batch is batch_size windows of T + 1 tokens drawn uniformly (seeded
 * damo_rng) from the training part: ids = window[0..T), targets = window[1..T]. A step draws
 * its grad_accum micro-batches one after the other from the same rng, so (batch B, accum 2)
 * sees exactly the windows of (batch 2B, accum 1), in the same order.
 *
 * Gradient accumulation. backward overwrites the model's grad block, so micro-batch
 * gradients are summed into a separate buffer and multiplied by 1/accum: the mean over
 * micro-batches of per-micro-batch mean losses, i.e. the gradient of the mean loss over all
 * accum x B x T positions (equal to one big batch up to float rounding).
 *
 * Optimizer. One damo_optimizer (AdamW) over the whole flat parameter block with a decay mask
 * (damo_optimizer_set_decay_mask): weight decay on every 2-D matrix - wte (tied to the LM
 * head), wpe, c_attn, attn.c_proj, c_fc, mlp.c_proj - and none on biases or LayerNorm
 * weights/biases. This is what nanoGPT (decay iff dim >= 2) and HuggingFace's Trainer (no
 * decay for bias and LayerNorm.weight) both do for GPT-2. The padding between tensors in the
 * block has zero gradients and no decay, so it stays zero.
 *
 * Schedule: linear warm-up to lr over warmup_steps, then cosine to min_lr at `steps`
 * (damo_schedule COSINE, a pure function of the step). Clipping: the optimizer's global
 * norm clip, on the averaged gradient.
 *
 * DP-SGD (opt.privacy): an example is a window, and the windows must not overlap for one
 * example's removal to change one example: the training part is cut into n_ex disjoint
 * windows of T + 1 tokens. The core trainer asks how many passes a step has
 * (private_passes), which is where the step's windows are drawn (Poisson, each with
 * probability q = batch_size x grad_accum / n_ex, from the window rng, so a resumed run draws
 * the same), and stages them a pass of dp_pass windows at a time on a graph planned with
 * keep_forward for its norm pass and weighted backward.
 *
 * Checkpoint: see damo_gpt2_trainer_save in damo.h. Resuming restores parameters, moments,
 * the optimizer step (which drives the schedule), the trainer step and the window rng, so
 * the continued run draws the same windows and computes the same numbers. */
#include "core/core.h"
#include "models/gpt2.h"
#include "optim/optim.h"

#include <math.h>

#define STATE_FILE "trainer_state.safetensors"
#define STATE_PARAMS "trainer.params"
#define STATE_STEP "trainer.step"
#define STATE_RNG "trainer.rng"
#define STATE_SHAPE "trainer.batch_shape"
#define STATE_DATA "trainer.data" /* token count and hash of the stream trained on */

struct damo_gpt2_trainer {
  damo_gpt2 *model;
  const damo_token_data *data;
  damo_gpt2_train_options opt;
  damo_gpt2_graph *graph;
  damo_optimizer *optimizer;
  damo_optimizer_config optimizer_config;
  damo_rng rng;
  int32_t *ids, *targets;    /* (B, T) each */
  int64_t *eval_starts, n_eval;
  damo_trainer *core;        /* the one training step (train/trainer.c) */
  /* data parallel: this rank's windows of each global batch, [share_first, + share) */
  damo_dist *dist;
  int64_t share_first, share;
  /* DP-SGD: the disjoint windows, a pass's size, the step's sampled windows; shuffle
   * sampling's order of the epoch dp_epoch */
  int64_t dp_examples, dp_pass, dp_count, dp_epoch, *dp_rows, *dp_order;
};

damo_gpt2_train_options damo_gpt2_train_defaults(void) {
  damo_gpt2_train_options o;
  memset(&o, 0, sizeof o);
  o.steps = 1000;
  o.batch_size = 8;
  o.seq_len = 128;
  o.grad_accum = 1;
  o.lr = 3e-4f;
  o.min_lr = 3e-5f;
  o.warmup_steps = 100;
  o.weight_decay = 0.1f;
  o.beta1 = 0.9f;
  o.beta2 = 0.95f;
  o.eps = 1e-8f;
  o.clip_norm = 1.0f;
  o.eval_windows = 32;
  o.seed = 42;
  return o;
}

static damo_status check_options(const damo_gpt2_train_options *o, const damo_gpt2 *m, const damo_token_data *d) {
  const char *w = "gpt2_trainer";
  if (o->steps < 1 || o->batch_size < 1 || o->seq_len < 1 || o->grad_accum < 1 || o->eval_windows < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: steps %lld, batch_size %lld, seq_len %lld, grad_accum %lld and "
                      "eval_windows %lld must all be >= 1", w, (long long)o->steps, (long long)o->batch_size,
                      (long long)o->seq_len, (long long)o->grad_accum, (long long)o->eval_windows);
  if (o->seq_len > m->config.n_positions)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: seq_len %lld exceeds the model's n_positions %d", w,
                      (long long)o->seq_len, m->config.n_positions);
  if (!(o->lr > 0.0f) || !isfinite(o->lr) || !(o->min_lr >= 0.0f) || o->min_lr > o->lr)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: lr %g must be > 0 and min_lr %g in [0, lr]", w, (double)o->lr,
                      (double)o->min_lr);
  if (o->warmup_steps < 0) return damo_error(DAMO_ERR_INVALID_ARG, "%s: warmup_steps %lld < 0", w, (long long)o->warmup_steps);
  int64_t window = o->seq_len + 1, n_val = d->n_tokens - d->n_train;
  if (d->n_train < window)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: the training part has %lld tokens, fewer than one window of seq_len + 1 "
                      "= %lld", w, (long long)d->n_train, (long long)window);
  if (n_val < window)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: the validation part has %lld tokens, fewer than one window of seq_len + "
                      "1 = %lld", w, (long long)n_val, (long long)window);
  if (d->n_train - o->seq_len > (int64_t)UINT32_MAX)
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: %lld training tokens; at most 2^32 are supported", w, (long long)d->n_train);
  for (int64_t i = 0; i < d->n_tokens; i++)
    if (d->ids[i] < 0 || d->ids[i] >= m->config.vocab_size)
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: token %lld is id %d, outside the model's vocabulary [0, %d)", w,
                        (long long)i, d->ids[i], m->config.vocab_size);
  return DAMO_OK;
}

damo_status damo_gpt2_decay_mask(const damo_gpt2 *m, uint8_t *mask) {
  if (!m || !mask) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_decay_mask: NULL argument");
  param_store_decay_mask(&m->p, mask);
  return DAMO_OK;
}

static damo_status stage_windows(void *ctx, int64_t micro);
static damo_status stage_private(void *ctx, int64_t micro);
static int64_t private_passes(void *ctx);
static damo_graph *private_graph(void *ctx);
static damo_status forward_windows(void *ctx, float *loss);
static damo_status backward_windows(void *ctx);
static double window_tokens(void *ctx);
static void data_fingerprint(const damo_token_data *data, int32_t out[4]);
static void set_grad_ready(void *ctx, damo_grad_ready_fn fn, void *fn_ctx);

/* eval_windows rounded up to whole batches, spread evenly over the validation part. */
static damo_status place_eval_windows(damo_gpt2_trainer *t) {
  int64_t B = t->opt.batch_size, T = t->opt.seq_len;
  int64_t n = (t->opt.eval_windows + B - 1) / B * B;
  t->eval_starts = malloc((size_t)n * sizeof *t->eval_starts);
  if (!t->eval_starts) return damo_error(DAMO_ERR_NOMEM, "gpt2_trainer: out of memory for %lld eval windows", (long long)n);
  int64_t span = t->data->n_tokens - t->data->n_train - (T + 1); /* last valid start, relative */
  for (int64_t i = 0; i < n; i++) t->eval_starts[i] = t->data->n_train + (n > 1 ? span * i / (n - 1) : 0);
  t->n_eval = n;
  return DAMO_OK;
}

void damo_gpt2_trainer_free(damo_gpt2_trainer *t) {
  if (!t) return;
  damo_gpt2_graph_free(t->graph);
  damo_trainer_free(t->core);
  damo_optimizer_free(t->optimizer);
  free(t->ids);
  free(t->targets);
  free(t->eval_starts);
  free(t->dp_rows);
  free(t->dp_order);
  free(t);
}

/* DP-SGD's examples (the disjoint windows), its options checked and its noise resolved for
 * the planned steps, the buffers of a step's sample. */
static damo_status private_setup(damo_gpt2_trainer *t) {
  damo_dp_options *dp = t->opt.privacy;
  const int64_t L = t->opt.batch_size * t->opt.grad_accum;
  t->dp_examples = t->data->n_train / (t->opt.seq_len + 1);
  if (t->model->recompute)
    return damo_error(DAMO_ERR_UNSUPPORTED, "gpt2_trainer: DP-SGD keeps every forward value for its second backward "
                      "pass; turn recomputation off");
  damo_status st = damo_dp_options_check(dp, t->dp_examples, L);
  if (st == DAMO_OK) st = damo_dp_options_resolve(dp, t->dp_examples, L, t->opt.steps);
  if (st != DAMO_OK)
    return damo_error_prefix(st, "gpt2_trainer: DP-SGD over %lld disjoint windows of %lld tokens: ",
                             (long long)t->dp_examples, (long long)(t->opt.seq_len + 1));
  t->dp_rows = malloc((size_t)t->dp_examples * sizeof *t->dp_rows);
  t->dp_order = malloc((size_t)t->dp_examples * sizeof *t->dp_order);
  return t->dp_rows && t->dp_order ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "gpt2_trainer: out of memory for DP-SGD");
}

damo_status damo_gpt2_trainer_new(damo_gpt2 *m, const damo_token_data *data, const damo_gpt2_train_options *opt,
                                  damo_gpt2_trainer **out) {
  if (!m || !data || !opt || !out) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_trainer_new: NULL argument");
  if (gpt2_on_host(m, "gpt2_trainer_new") != DAMO_OK) return DAMO_ERR_STATE;
  *out = NULL;
  if (m->blocks != DAMO_BLOCKS_NONE || m->q8.q)
    return damo_error(DAMO_ERR_UNSUPPORTED, "gpt2_trainer_new: the model's weights are %s, for inference; train the f32 "
                      "model and quantise it again", m->q8.q ? "int8" : damo_block_format_name(m->blocks));
  damo_status st = check_options(opt, m, data);
  if (st == DAMO_OK) st = param_store_check_trainable(&m->p, "gpt2_trainer_new");
  if (st != DAMO_OK) return st;
  damo_gpt2_trainer *t = calloc(1, sizeof *t);
  if (!t) return damo_error(DAMO_ERR_NOMEM, "gpt2_trainer_new: out of memory");
  t->model = m;
  t->data = data;
  t->opt = *opt;
  t->share = opt->batch_size;
  damo_rng_seed(&t->rng, opt->seed);

  damo_optimizer_config c = damo_adamw(opt->lr, opt->weight_decay);
  c.beta1 = opt->beta1;
  c.beta2 = opt->beta2;
  c.eps = opt->eps;
  c.clip_norm = opt->clip_norm;
  c.schedule = (damo_schedule){.kind = DAMO_SCHED_COSINE, .warmup_steps = opt->warmup_steps, .total_steps = opt->steps,
                               .min_lr = opt->min_lr};
  t->optimizer_config = c;

  damo_dp_options *dp = opt->privacy;
  t->dp_pass = dp && dp->physical_batch > 0 ? dp->physical_batch : opt->batch_size;
  t->dp_epoch = -1;
  if (dp) st = private_setup(t);
  const int64_t graph_batch = t->dp_pass > opt->batch_size ? t->dp_pass : opt->batch_size;
  size_t n_bt = (size_t)(graph_batch * opt->seq_len);
  t->ids = malloc(n_bt * sizeof *t->ids);
  t->targets = malloc(n_bt * sizeof *t->targets);
  if (st == DAMO_OK && (!t->ids || !t->targets)) st = damo_error(DAMO_ERR_NOMEM, "gpt2_trainer_new: out of memory for a batch");
  if (st == DAMO_OK) st = param_store_optimizer(&m->p, &c, &t->optimizer);
  if (st == DAMO_OK) {
    damo_train_adapter a = {.name = "gpt2 training", .ctx = t, .params = m->p.param_block, .grads = m->p.grad_block,
                            .n_params = m->p.n_params_padded, .stage = dp ? stage_private : stage_windows,
                            .forward = forward_windows, .backward = backward_windows, .loss_weight = window_tokens,
                            .set_grad_ready = set_grad_ready, .graph = private_graph,
                            .micro_batches = dp ? private_passes : NULL, .trained_ranges = m->p.trained_ranges,
                            .n_trained_ranges = m->p.n_trained_ranges};
    st = damo_trainer_new(&a, t->optimizer, opt->grad_accum, opt->steps, &t->core);
  }
  if (st == DAMO_OK) st = place_eval_windows(t);
  m->keep_forward = dp != NULL; /* the training graph serves DP-SGD's two backward passes */
  if (st == DAMO_OK) st = damo_gpt2_graph_new(m, graph_batch, opt->seq_len, 1, &t->graph);
  m->keep_forward = 0;
  if (st == DAMO_OK && dp)
    st = damo_trainer_set_privacy(t->core, dp->clip, dp->used_noise, (double)(opt->batch_size * opt->grad_accum),
                                  dp->seed ? dp->seed : opt->seed ^ 0x6e6f697365ULL);
  if (st != DAMO_OK) {
    damo_gpt2_trainer_free(t);
    return st;
  }
  *out = t;
  return DAMO_OK;
}

int64_t damo_gpt2_trainer_steps_done(const damo_gpt2_trainer *t) { return t ? damo_trainer_steps_done(t->core) : 0; }

/* Copies window b starting at token `start` into the batch arrays. */
static void fill_window(damo_gpt2_trainer *t, int64_t b, int64_t start) {
  int64_t T = t->opt.seq_len;
  const int32_t *src = t->data->ids + start;
  memcpy(t->ids + b * T, src, (size_t)T * sizeof *src);
  memcpy(t->targets + b * T, src + 1, (size_t)T * sizeof *src);
}

/* Draws the global batch (every rank draws all of it, so the windows do not depend on the
 * number of ranks) and keeps this rank's share. */
static void draw_batch(damo_gpt2_trainer *t) {
  uint32_t n_starts = (uint32_t)(t->data->n_train - t->opt.seq_len); /* starts 0 .. n_train - T - 1 */
  for (int64_t b = 0; b < t->opt.batch_size; b++) {
    int64_t start = (int64_t)damo_rng_below(&t->rng, n_starts);
    if (b >= t->share_first && b < t->share_first + t->share) fill_window(t, b - t->share_first, start);
  }
}

static double window_tokens(void *ctx) {
  const damo_gpt2_trainer *t = ctx;
  return (double)(t->share * t->opt.seq_len);
}

static void set_grad_ready(void *ctx, damo_grad_ready_fn fn, void *fn_ctx) {
  damo_graph_set_grad_ready(((damo_gpt2_trainer *)ctx)->graph->graph, fn, fn_ctx);
}

damo_status damo_gpt2_trainer_set_data_parallel(damo_gpt2_trainer *t, damo_dist *d,
                                                const damo_data_parallel_options *o) {
  if (!t) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_trainer_set_data_parallel: NULL trainer");
  const int rank = damo_dist_rank(d), size = damo_dist_size(d);
  if (t->opt.privacy && size > 1)
    return damo_error(DAMO_ERR_UNSUPPORTED, "gpt2 training on %d ranks: DP-SGD runs in one process", size);
  if (t->opt.privacy) return DAMO_OK; /* a world of one: the plain step */
  if (t->opt.batch_size < size)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2 training on %d ranks: batch_size %lld gives some rank no window "
                      "(use a batch of at least %d windows)", size, (long long)t->opt.batch_size, size);
  /* the same options and token stream everywhere */
  int32_t fp[4];
  data_fingerprint(t->data, fp);
  const uint64_t h = damo_hash_bytes(damo_hash_bytes(DAMO_HASH_START, &t->opt, sizeof t->opt), fp, sizeof fp);
  damo_status st = damo_dist_check_same(d, h, "GPT-2 training options and token stream");
  int64_t first, count;
  damo_dist_share(t->opt.batch_size, rank, size, &first, &count);
  damo_gpt2_graph *g = NULL;
  if (st == DAMO_OK && count != t->share) st = damo_gpt2_graph_new(t->model, count, t->opt.seq_len, 1, &g);
  if (st == DAMO_OK && g) {
    damo_gpt2_graph_free(t->graph);
    t->graph = g;
  }
  if (st == DAMO_OK) {
    t->share_first = first, t->share = count, t->dist = d;
    st = damo_trainer_set_data_parallel(t->core, d, o);
  }
  return st;
}

/* The trainer's adapter: a micro-batch is batch_size random windows. */
static damo_status stage_windows(void *ctx, int64_t micro) {
  (void)micro;
  draw_batch(ctx);
  return DAMO_OK;
}

/* DP-SGD: draws the step's windows (the core trainer asks once, at the step's start) and
 * returns the passes they take. */
static int64_t private_passes(void *ctx) {
  damo_gpt2_trainer *t = ctx;
  const damo_dp_options *dp = t->opt.privacy;
  if (dp->sampling == DAMO_DP_POISSON) {
    t->dp_count = damo_dp_poisson_sample(&t->rng, NULL, t->dp_examples, dp->sample_rate, t->dp_rows);
  } else { /* shuffle: batches of a permutation drawn per epoch from the seed and the epoch */
    const int64_t L = t->opt.batch_size * t->opt.grad_accum, per_epoch = (t->dp_examples + L - 1) / L;
    const int64_t step = damo_trainer_steps_done(t->core), epoch = step / per_epoch, first = step % per_epoch * L;
    if (epoch != t->dp_epoch) {
      damo_rng r;
      damo_rng_seed(&r, t->opt.seed ^ (uint64_t)(epoch + 1) * 0x9e3779b97f4a7c15ULL);
      for (int64_t i = 0; i < t->dp_examples; i++) t->dp_order[i] = i;
      damo_shuffle_indices(t->dp_order, t->dp_examples, &r);
      t->dp_epoch = epoch;
    }
    t->dp_count = t->dp_examples - first < L ? t->dp_examples - first : L;
    memcpy(t->dp_rows, t->dp_order + first, (size_t)t->dp_count * sizeof *t->dp_rows);
  }
  return (t->dp_count + t->dp_pass - 1) / t->dp_pass;
}

/* DP-SGD: pass `micro` of the step's windows on the graph sized to them. */
static damo_status stage_private(void *ctx, int64_t micro) {
  damo_gpt2_trainer *t = ctx;
  const int64_t first = micro * t->dp_pass, b = t->dp_count - first < t->dp_pass ? t->dp_count - first : t->dp_pass;
  for (int64_t k = 0; k < b; k++) fill_window(t, k, t->dp_rows[first + k] * (t->opt.seq_len + 1));
  return damo_graph_set_batch(t->graph->graph, b);
}

static damo_graph *private_graph(void *ctx) { return ((damo_gpt2_trainer *)ctx)->graph->graph; }

damo_status damo_gpt2_trainer_epsilon(damo_gpt2_trainer *t, double *epsilon) {
  if (!t || !epsilon) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_trainer_epsilon: NULL argument");
  damo_dp_options *dp = t->opt.privacy;
  if (!dp) return damo_error(DAMO_ERR_STATE, "gpt2_trainer_epsilon: the trainer was made without DP-SGD");
  damo_status st = damo_dp_options_spent(dp, damo_trainer_steps_done(t->core));
  *epsilon = dp->epsilon;
  return st;
}

static damo_status forward_windows(void *ctx, float *loss) {
  damo_gpt2_trainer *t = ctx;
  return damo_gpt2_graph_forward(t->graph, t->ids, t->targets, loss);
}

static damo_status backward_windows(void *ctx) { return damo_gpt2_graph_backward(((damo_gpt2_trainer *)ctx)->graph); }

damo_status damo_gpt2_trainer_step(damo_gpt2_trainer *t, damo_gpt2_step_report *report) {
  if (!t) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_trainer_step: NULL trainer");
  damo_train_report r;
  damo_status st = damo_trainer_step(t->core, &r);
  if (st == DAMO_OK && report) {
    report->step = r.step;
    report->loss = r.loss;
    report->lr = r.lr;
    report->grad_norm = r.grad_norm;
    report->tokens = (t->opt.privacy ? t->dp_count : t->opt.grad_accum * t->opt.batch_size) * t->opt.seq_len;
  }
  return st;
}

/* Validation shared by the ranks: each evaluates its share of every batch of windows; the
 * per-batch means are rebuilt from the shares' sums. */
static damo_status eval_sharded(damo_gpt2_trainer *t, float *val_loss) {
  const int64_t B = t->opt.batch_size;
  double sum = 0.0;
  damo_status st = DAMO_OK;
  for (int64_t first = 0; first < t->n_eval && st == DAMO_OK; first += B) {
    for (int64_t b = 0; b < t->share; b++) fill_window(t, b, t->eval_starts[first + t->share_first + b]);
    float loss;
    st = damo_gpt2_graph_evaluate(t->graph, t->ids, t->targets, &loss);
    if (st != DAMO_OK)
      return damo_error_prefix(st, "gpt2 validation after step %lld, windows %lld..%lld: ",
                               (long long)damo_gpt2_trainer_steps_done(t), (long long)(first + t->share_first),
                               (long long)(first + t->share_first + t->share - 1));
    sum += (double)loss * (double)t->share;
  }
  if ((st = damo_dist_allreduce_f64(t->dist, &sum, 1)) != DAMO_OK) return st;
  *val_loss = (float)(sum / (double)B / (double)(t->n_eval / B));
  return DAMO_OK;
}

damo_status damo_gpt2_trainer_eval(damo_gpt2_trainer *t, float *val_loss) {
  if (!t || !val_loss) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_trainer_eval: NULL argument");
  if (damo_dist_size(t->dist) > 1) return eval_sharded(t, val_loss);
  int64_t B = t->opt.batch_size;
  damo_status bs = damo_graph_set_batch(t->graph->graph, B); /* DP-SGD's passes resize it */
  if (bs != DAMO_OK) return bs;
  double sum = 0.0;
  for (int64_t first = 0; first < t->n_eval; first += B) {
    for (int64_t b = 0; b < B; b++) fill_window(t, b, t->eval_starts[first + b]);
    float loss;
    damo_status st = damo_gpt2_graph_evaluate(t->graph, t->ids, t->targets, &loss);
    if (st != DAMO_OK)
      return damo_error_prefix(st, "gpt2 validation after step %lld, windows %lld..%lld: ", (long long)damo_gpt2_trainer_steps_done(t),
                               (long long)first, (long long)(first + B - 1));
    sum += loss;
  }
  *val_loss = (float)(sum / (double)(t->n_eval / B));
  return DAMO_OK;
}

/* ------------------------------------------------------------------ checkpoints */

/* What identifies the token stream a checkpoint was trained on: its length and an FNV-1a
 * hash of its ids, as four 16-bit halves (non-negative i32s). A resume on another stream
 * would silently train a different run. */
static void data_fingerprint(const damo_token_data *data, int32_t out[4]) {
  uint32_t h = 2166136261u;
  for (int64_t i = 0; i < data->n_tokens; i++) {
    h ^= (uint32_t)data->ids[i];
    h *= 16777619u;
  }
  uint32_t n = (uint32_t)data->n_tokens;
  out[0] = (int32_t)(n & 0xffff), out[1] = (int32_t)(n >> 16), out[2] = (int32_t)(h & 0xffff), out[3] = (int32_t)(h >> 16);
}

static damo_tensor *i32_tensor(int64_t count, const int32_t *values) {
  damo_tensor *x = damo_tensor_new(DAMO_I32, 1, &count);
  if (x) memcpy(x->data, values, (size_t)count * sizeof *values);
  return x;
}

/* A checkpoint; with e (a CHECKPOINT event of the trainer's loop) the trainer's part comes
 * from damo_trainer_checkpoint_add (the same params, step and moments under the same names,
 * plus the loop's position and history), and files may add to the same directory save. */
static damo_status save_checkpoint(const damo_gpt2_trainer *t, const char *dir, const damo_train_event *e,
                                   damo_status (*files)(void *ctx, const char *folder), void *ctx) {
  /* Outside the loop every rank comes here: the moments are gathered (ZeRO), rank 0 writes. */
  damo_tensor_dict *moments = NULL;
  if (!e) {
    moments = damo_tensor_dict_new();
    damo_status st = moments ? damo_trainer_optimizer_state(t->core, moments) : DAMO_ERR_NOMEM;
    if (st != DAMO_OK || damo_dist_rank(t->dist) != 0) {
      damo_tensor_dict_free(moments);
      damo_trainer_release_optimizer_state(t->core);
      return st;
    }
  }
  /* One directory save for the model files and the state (damo_dir_save): the checkpoint
   * directory switches from the previous step to this one in one rename. */
  damo_dir_save *tx;
  damo_status st = damo_dir_save_begin(dir, &tx);
  if (st == DAMO_OK) st = damo_gpt2_save(t->model, damo_dir_save_folder(tx));
  damo_tensor_dict *d = st == DAMO_OK ? damo_tensor_dict_new() : NULL;
  if (st == DAMO_OK && !d) st = damo_error(DAMO_ERR_NOMEM, "out of memory");
  if (st != DAMO_OK) {
    damo_dir_save_abort(tx);
    damo_tensor_dict_free(moments);
    damo_trainer_release_optimizer_state(t->core);
    return damo_error_prefix(st, "checkpoint at step %lld: ", (long long)damo_gpt2_trainer_steps_done(t));
  }
  /* Views of the parameters and moments, not copies: the file is written before the dict
   * is freed, and copies would double the trainer's memory at every checkpoint. */
  int32_t rng[4];
  memcpy(rng, t->rng.s, sizeof rng);
  int32_t shape[3] = {(int32_t)t->opt.batch_size, (int32_t)t->opt.seq_len, (int32_t)t->opt.grad_accum};
  if (e) {
    st = damo_trainer_checkpoint_add(e, d);
  } else {
    int64_t n = t->model->p.n_params_padded;
    damo_tensor *params = damo_tensor_wrap(DAMO_F32, 1, &n, t->model->p.param_block);
    const int64_t done = damo_gpt2_trainer_steps_done(t);
    int32_t step[2] = {(int32_t)(done & 0x7fffffff), (int32_t)(done >> 31)};
    st = params ? damo_tensor_dict_add(d, STATE_PARAMS, params) : DAMO_ERR_NOMEM;
    if (st == DAMO_OK) st = damo_tensor_dict_add(d, STATE_STEP, i32_tensor(2, step));
    for (int i = 0; st == DAMO_OK && i < moments->count; i++) { /* moved into d */
      st = damo_tensor_dict_add(d, moments->names[i], moments->tensors[i]);
      moments->tensors[i] = NULL;
    }
  }
  if (st == DAMO_OK) st = damo_tensor_dict_add(d, STATE_RNG, i32_tensor(4, rng));
  if (st == DAMO_OK) st = damo_tensor_dict_add(d, STATE_SHAPE, i32_tensor(3, shape));
  int32_t fingerprint[4];
  data_fingerprint(t->data, fingerprint);
  if (st == DAMO_OK) st = damo_tensor_dict_add(d, STATE_DATA, i32_tensor(4, fingerprint));
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", damo_dir_save_folder(tx), STATE_FILE);
  static const char *const meta[] = {"format", "damo-gpt2-trainer"};
  if (st == DAMO_OK) st = damo_safetensors_save(path, d, meta, 1);
  damo_tensor_dict_free(d);
  damo_tensor_dict_free(moments);
  damo_trainer_release_optimizer_state(t->core); /* after the file is written: d viewed them */
  if (st == DAMO_OK && files) st = files(ctx, damo_dir_save_folder(tx));
  if (st == DAMO_OK) st = damo_dir_save_commit(tx);
  else damo_dir_save_abort(tx);
  if (st != DAMO_OK) return damo_error_prefix(st, "checkpoint at step %lld: ", (long long)damo_gpt2_trainer_steps_done(t));
  return DAMO_OK;
}

damo_status damo_gpt2_trainer_save(const damo_gpt2_trainer *t, const char *dir) {
  if (!t || !dir) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_trainer_save: NULL argument");
  return save_checkpoint(t, dir, NULL, NULL, NULL);
}

damo_status damo_gpt2_trainer_checkpoint(const damo_gpt2_trainer *t, const char *dir, const damo_train_event *e,
                                         damo_status (*files)(void *ctx, const char *folder), void *ctx) {
  if (!t || !dir || !e) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_trainer_checkpoint: NULL argument");
  return save_checkpoint(t, dir, e, files, ctx);
}

static damo_status get_i32(const damo_tensor_dict *d, const char *name, int64_t count, const char *path,
                           const damo_tensor **out) {
  const damo_tensor *x = damo_tensor_dict_get(d, name);
  if (!x) return damo_error(DAMO_ERR_FORMAT, "%s: missing tensor '%s'", path, name);
  if (x->dtype != DAMO_I32 || damo_tensor_numel(x) != count)
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' must be i32 with %lld values", path, name, (long long)count);
  *out = x;
  return DAMO_OK;
}

static int same_config(const damo_gpt2_config *a, const damo_gpt2_config *b) {
  return a->n_layer == b->n_layer && a->n_head == b->n_head && a->n_embd == b->n_embd &&
         a->n_positions == b->n_positions && a->vocab_size == b->vocab_size &&
         a->layer_norm_epsilon == b->layer_norm_epsilon;
}

damo_status damo_gpt2_trainer_resume(damo_gpt2_trainer *t, const char *dir) {
  if (!t || !dir) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_trainer_resume: NULL argument");
  char path[4200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  damo_gpt2_config cfg;
  damo_status st = damo_gpt2_config_load(path, &cfg);
  if (st != DAMO_OK) return damo_error_prefix(st, "resuming from %s: ", dir);
  const damo_gpt2_config *have = &t->model->config;
  if (!same_config(&cfg, have))
    return damo_error(DAMO_ERR_SHAPE, "resuming: %s describes n_layer %d, n_head %d, n_embd %d, n_positions %d, vocab %d; "
                      "the model being trained has %d, %d, %d, %d, %d", path, cfg.n_layer, cfg.n_head, cfg.n_embd,
                      cfg.n_positions, cfg.vocab_size, have->n_layer, have->n_head, have->n_embd, have->n_positions,
                      have->vocab_size);
  snprintf(path, sizeof path, "%s/%s", dir, STATE_FILE);
  damo_tensor_dict *d;
  if ((st = damo_safetensors_load(path, &d)) != DAMO_OK) return damo_error_prefix(st, "resuming: ");
  const damo_tensor *step_t = NULL, *rng_t = NULL, *shape_t = NULL;
  const damo_tensor *params = damo_tensor_dict_get(d, STATE_PARAMS);
  int64_t n = t->model->p.n_params_padded;
  if (!params || params->dtype != DAMO_F32 || damo_tensor_numel(params) != n)
    st = damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' must be f32 with %lld values (this model's parameter block)", path,
                    STATE_PARAMS, (long long)n);
  if (st == DAMO_OK) st = get_i32(d, STATE_STEP, 2, path, &step_t);
  if (st == DAMO_OK) st = get_i32(d, STATE_RNG, 4, path, &rng_t);
  if (st == DAMO_OK) st = get_i32(d, STATE_SHAPE, 3, path, &shape_t);
  if (st == DAMO_OK) {
    const int32_t *s = damo_tensor_i32(shape_t);
    if (s[0] != t->opt.batch_size || s[1] != t->opt.seq_len || s[2] != t->opt.grad_accum)
      st = damo_error(DAMO_ERR_INVALID_ARG, "%s: the checkpoint was trained with batch %d, seq_len %d, grad_accum %d; "
                      "this run has %lld, %lld, %lld (a resumed run must keep them to continue the same run)", path,
                      s[0], s[1], s[2], (long long)t->opt.batch_size, (long long)t->opt.seq_len,
                      (long long)t->opt.grad_accum);
  }
  const damo_tensor *data_t = damo_tensor_dict_get(d, STATE_DATA); /* absent in older checkpoints */
  if (st == DAMO_OK && data_t && (st = get_i32(d, STATE_DATA, 4, path, &data_t)) == DAMO_OK) {
    int32_t have_fp[4];
    data_fingerprint(t->data, have_fp);
    const int32_t *was = damo_tensor_i32(data_t);
    if (memcmp(was, have_fp, sizeof have_fp) != 0)
      st = damo_error(DAMO_ERR_INVALID_ARG, "%s: the checkpoint was trained on a token stream of %lld tokens (hash "
                      "%08x); this run's --data gives %lld tokens (hash %08x): resume with the same data, or train anew "
                      "into another directory", path, (long long)((int64_t)was[0] | (int64_t)was[1] << 16),
                      (unsigned)((uint32_t)was[2] | (uint32_t)was[3] << 16), (long long)t->data->n_tokens,
                      (unsigned)((uint32_t)have_fp[2] | (uint32_t)have_fp[3] << 16));
  }
  if (st == DAMO_OK) {
    const float *p = damo_tensor_f32(params);
    for (int64_t i = 0; i < n && st == DAMO_OK; i++)
      if (!isfinite(p[i])) st = damo_error(DAMO_ERR_NUMERIC, "%s: parameter %lld is not finite", path, (long long)i);
  }
  int64_t steps = 0;
  if (st == DAMO_OK) {
    const int32_t *s = damo_tensor_i32(step_t);
    if (s[0] < 0 || s[1] < 0) st = damo_error(DAMO_ERR_FORMAT, "%s: negative step", path);
    else steps = (int64_t)s[0] + ((int64_t)s[1] << 31); /* after the check: a negative one may not be shifted */
  }
  /* load_state checks everything before changing the optimizer */
  if (st == DAMO_OK && (st = damo_optimizer_load_state(t->optimizer, d)) != DAMO_OK) damo_error_prefix(st, "%s: ", path);
  if (st == DAMO_OK) /* tensors frozen now keep no momentum from before */
    optimizer_clear_moments_outside(t->optimizer, t->model->p.trained_ranges, t->model->p.n_trained_ranges);
  if (st == DAMO_OK && damo_optimizer_steps(t->optimizer) != steps)
    st = damo_error(DAMO_ERR_FORMAT, "%s: trainer step %lld and optimizer step %lld differ", path, (long long)steps,
                    (long long)damo_optimizer_steps(t->optimizer));
  if (st == DAMO_OK) {
    memcpy(t->model->p.param_block, params->data, (size_t)n * sizeof(float));
    memcpy(t->rng.s, rng_t->data, sizeof t->rng.s);
    damo_trainer_set_steps_done(t->core, steps);
  }
  /* A checkpoint of the training loop also carries its position and history: the trainer
   * takes them (and checks the parts above once more) for the next damo_trainer_run. */
  if (st == DAMO_OK && damo_tensor_dict_get(d, "loop.position")) st = damo_trainer_resume(t->core, d, path);
  damo_tensor_dict_free(d);
  return st;
}

damo_trainer *damo_gpt2_trainer_core(damo_gpt2_trainer *t) { return t ? t->core : NULL; }
