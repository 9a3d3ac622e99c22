/* test_trainer.c - the one training step (damo_trainer) every model kind takes.
 *
 * A least-squares adapter written here, whose gradients are known in closed form, checks
 * the step's contract: micro-batch gradients averaged, the gradient hook called once per
 * step with that average before the optimizer, errors from any stage named by step and
 * micro-batch, a non-finite loss refused with the adapter's location, divergence stopped.
 * Then the hook through fit (doubling the gradient under SGD equals doubling the rate, bit
 * for bit) and through the GPT-2 and BERT trainers (one call per step, final gradient). */
#include "damo.h"
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>

/* ------------------------------------------------------------------ a least-squares adapter */

#define ROWS 8
typedef struct lsq {
  float w[2], g[2];        /* params (slope, intercept) and their gradient */
  float x[ROWS], y[ROWS];  /* the data; micro-batch k of a step is rows [4k, 4k + 4) */
  int64_t micro;           /* staged micro-batch */
  int stages, forwards, backwards;
  int fail_stage_at;       /* 1-based stage call that fails, 0 never */
  float poison;            /* added to the loss (NaN to make it non-finite) */
} lsq;

static damo_status lsq_stage(void *ctx, int64_t micro) {
  lsq *p = ctx;
  p->micro = micro;
  if (++p->stages == p->fail_stage_at) return damo_error(DAMO_ERR_IO, "the batch source ran dry");
  return DAMO_OK;
}

/* Mean of (w0 x + w1 - y)^2 over the micro-batch's 4 rows; its gradient kept for backward. */
static damo_status lsq_forward(void *ctx, float *loss) {
  lsq *p = ctx;
  double l = 0, g0 = 0, g1 = 0;
  for (int i = 0; i < 4; i++) {
    int r = (int)p->micro * 4 + i;
    double e = p->w[0] * p->x[r] + p->w[1] - p->y[r];
    l += e * e / 4, g0 += 2 * e * p->x[r] / 4, g1 += 2 * e / 4;
  }
  p->forwards++;
  *loss = (float)l + p->poison;
  p->g[0] = (float)g0, p->g[1] = (float)g1; /* written to the grads by backward */
  return DAMO_OK;
}

static float lsq_pending[2];
static damo_status lsq_backward(void *ctx) {
  lsq *p = ctx;
  p->backwards++;
  lsq_pending[0] = p->g[0], lsq_pending[1] = p->g[1];
  return DAMO_OK;
}

static const char *lsq_locate(void *ctx) {
  (void)ctx;
  return "lsq/residual";
}

/* The adapter's grads are a separate array so backward "overwrites" it as graphs do. */
static float lsq_grads[2];
static damo_status lsq_backward_write(void *ctx) {
  damo_status st = lsq_backward(ctx);
  lsq_grads[0] = lsq_pending[0], lsq_grads[1] = lsq_pending[1];
  return st;
}

static damo_train_adapter lsq_adapter(lsq *p) {
  damo_train_adapter a = {.name = "lsq", .ctx = p, .params = p->w, .grads = lsq_grads, .n_params = 2,
                          .stage = lsq_stage, .forward = lsq_forward, .backward = lsq_backward_write,
                          .locate_nonfinite = lsq_locate};
  return a;
}

static void lsq_init(lsq *p) {
  memset(p, 0, sizeof *p);
  for (int i = 0; i < ROWS; i++) p->x[i] = (float)i - 3.0f, p->y[i] = 2.0f * p->x[i] + 1.0f + (i % 2 ? 0.5f : -0.5f);
  p->w[0] = 0.25f, p->w[1] = -1.0f;
}

/* What a hook saw. */
typedef struct seen {
  int calls;
  int64_t last_step;
  float grads[2];
  damo_status answer; /* what the hook returns */
} seen;

static damo_status record_hook(void *ctx, float *grads, int64_t n, int64_t step) {
  seen *s = ctx;
  s->calls++;
  s->last_step = step;
  for (int64_t i = 0; i < n && i < 2; i++) s->grads[i] = grads[i];
  if (s->answer != DAMO_OK) return damo_error(s->answer, "the all-reduce lost a peer");
  return DAMO_OK;
}

static void test_step_averages_micro_batches_and_calls_the_hook(void) {
  lsq p;
  lsq_init(&p);
  damo_optimizer_config c = damo_sgd(0.1f, 0.0f, 0);
  damo_optimizer *opt = damo_optimizer_new(&c, 2);
  damo_train_adapter a = lsq_adapter(&p);
  damo_trainer *t = NULL;
  CHECK(damo_trainer_new(&a, opt, 2, 10, &t) == DAMO_OK);
  seen s = {0};
  damo_trainer_set_grad_hook(t, record_hook, &s);
  /* the expected gradient: the mean of both micro-batches' gradients, at the current w */
  double g0 = 0, g1 = 0, l = 0;
  for (int r = 0; r < ROWS; r++) {
    double e = p.w[0] * p.x[r] + p.w[1] - p.y[r];
    g0 += 2 * e * p.x[r] / ROWS, g1 += 2 * e / ROWS, l += e * e / ROWS;
  }
  const float w0 = p.w[0], w1 = p.w[1];
  damo_train_report rep;
  CHECK(damo_trainer_step(t, &rep) == DAMO_OK);
  CHECK(p.stages == 2 && p.forwards == 2 && p.backwards == 2);
  CHECK(s.calls == 1 && s.last_step == 0);
  CHECK_NEAR(s.grads[0], g0, 1e-5);
  CHECK_NEAR(s.grads[1], g1, 1e-5);
  CHECK_NEAR(rep.loss, l, 1e-5);
  CHECK(rep.step == 1 && damo_trainer_steps_done(t) == 1);
  CHECK_NEAR(rep.lr, 0.1, 1e-7);
  CHECK_NEAR(rep.grad_norm, sqrt(g0 * g0 + g1 * g1), 1e-5);
  /* SGD moved w by exactly lr times what the hook saw */
  CHECK(p.w[0] == w0 - 0.1f * s.grads[0] && p.w[1] == w1 - 0.1f * s.grads[1]);
  CHECK(damo_trainer_step(t, NULL) == DAMO_OK);
  CHECK(s.calls == 2 && s.last_step == 1);
  damo_trainer_free(t);
  damo_optimizer_free(opt);
}

/* What the hook leaves in the gradient is what the optimizer uses (an all-reduce's result). */
static damo_status zero_hook(void *ctx, float *grads, int64_t n, int64_t step) {
  (void)ctx, (void)step;
  memset(grads, 0, (size_t)n * sizeof *grads);
  return DAMO_OK;
}

static void test_hook_result_is_what_the_optimizer_steps(void) {
  lsq p;
  lsq_init(&p);
  damo_optimizer_config c = damo_adam(0.05f);
  damo_optimizer *opt = damo_optimizer_new(&c, 2);
  damo_train_adapter a = lsq_adapter(&p);
  damo_trainer *t = NULL;
  CHECK(damo_trainer_new(&a, opt, 1, 10, &t) == DAMO_OK);
  damo_trainer_set_grad_hook(t, zero_hook, NULL);
  const float w0 = p.w[0], w1 = p.w[1];
  for (int i = 0; i < 3; i++) CHECK(damo_trainer_step(t, NULL) == DAMO_OK);
  CHECK(p.w[0] == w0 && p.w[1] == w1); /* Adam on zero gradients stays put */
  damo_trainer_free(t);
  damo_optimizer_free(opt);
}

static void test_errors_name_the_step_and_leave_the_weights(void) {
  lsq p;
  lsq_init(&p);
  damo_optimizer_config c = damo_sgd(0.1f, 0.0f, 0);
  damo_optimizer *opt = damo_optimizer_new(&c, 2);
  damo_train_adapter a = lsq_adapter(&p);
  damo_trainer *t = NULL;
  CHECK(damo_trainer_new(&a, opt, 2, 10, &t) == DAMO_OK);
  /* a failing batch source: step 2, micro-batch 2 of 2 */
  p.fail_stage_at = 4;
  CHECK(damo_trainer_step(t, NULL) == DAMO_OK);
  float w0 = p.w[0], w1 = p.w[1];
  damo_status st = damo_trainer_step(t, NULL);
  CHECK(st == DAMO_ERR_IO);
  CHECK_MSG(strstr(damo_last_error(), "lsq step 2, micro-batch 2 of 2: the batch source ran dry") != NULL, "%s",
            damo_last_error());
  CHECK(p.w[0] == w0 && p.w[1] == w1 && damo_trainer_steps_done(t) == 1);
  /* a hook that fails: named, and no update */
  p.fail_stage_at = 0;
  seen s = {.answer = DAMO_ERR_IO};
  damo_trainer_set_grad_hook(t, record_hook, &s);
  st = damo_trainer_step(t, NULL);
  CHECK(st == DAMO_ERR_IO && strstr(damo_last_error(), "gradient hook") && strstr(damo_last_error(), "lost a peer"));
  CHECK(p.w[0] == w0 && p.w[1] == w1 && damo_trainer_steps_done(t) == 1);
  /* a NaN loss: named with the adapter's location, no backward, no update */
  damo_trainer_set_grad_hook(t, NULL, NULL);
  p.poison = NAN;
  int backwards = p.backwards;
  st = damo_trainer_step(t, NULL);
  CHECK(st == DAMO_ERR_NUMERIC);
  CHECK_MSG(strstr(damo_last_error(), "lsq step 2, micro-batch 1 of 2: the loss became NaN") &&
                strstr(damo_last_error(), "'lsq/residual'"),
            "%s", damo_last_error());
  CHECK(p.backwards == backwards && p.w[0] == w0 && p.w[1] == w1);
  damo_trainer_free(t);
  /* bad construction */
  CHECK(damo_trainer_new(&a, opt, 0, 10, &t) == DAMO_ERR_INVALID_ARG && t == NULL);
  damo_train_adapter no_forward = a;
  no_forward.forward = NULL;
  CHECK(damo_trainer_new(&no_forward, opt, 1, 10, &t) == DAMO_ERR_INVALID_ARG);
  damo_optimizer_free(opt);
}

static void test_divergence_stops_the_run(void) {
  lsq p;
  lsq_init(&p);
  damo_optimizer_config c = damo_sgd(0.0f, 0.0f, 0); /* lr 0: the loss only moves by poison */
  c.lr = 1e-30f;
  damo_optimizer *opt = damo_optimizer_new(&c, 2);
  damo_train_adapter a = lsq_adapter(&p);
  damo_trainer *t = NULL;
  CHECK(damo_trainer_new(&a, opt, 1, 1000, &t) == DAMO_OK);
  damo_status st = DAMO_OK;
  int steps = 0;
  for (; steps < 100 && st == DAMO_OK; steps++) {
    p.poison = steps < 5 ? 0.0f : 1e9f;
    st = damo_trainer_step(t, NULL);
  }
  CHECK(st == DAMO_ERR_NUMERIC && strstr(damo_last_error(), "diverged") && strstr(damo_last_error(), "lsq step"));
  CHECK(steps == 25); /* the 20th step over the threshold after 5 reference steps */
  damo_trainer_free(t);
  damo_optimizer_free(opt);
}

/* ------------------------------------------------------------------ the hook through fit */

static damo_status double_hook(void *ctx, float *grads, int64_t n, int64_t step) {
  int *calls = ctx;
  (void)step;
  ++*calls;
  for (int64_t i = 0; i < n; i++) grads[i] *= 2.0f;
  return DAMO_OK;
}

static damo_model *small_mlp(float lr) {
  const int64_t in[] = {6};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_dense(8, DAMO_ACT_TANH));
  damo_model_add(m, damo_dense(3, DAMO_ACT_NONE));
  damo_model_build(m, 5);
  damo_compile_options c = {.optimizer = damo_sgd(lr, 0.0f, 0),
                            .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = DAMO_METRIC_ACCURACY};
  damo_model_compile(m, &c);
  return m;
}

static void test_fit_gradient_hook(void) {
  const int64_t xs[] = {50, 6}, ys[] = {50};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 2, xs), *y = damo_tensor_new(DAMO_I32, 1, ys);
  damo_rng r;
  damo_rng_seed(&r, 3);
  for (int i = 0; i < 300; i++) damo_tensor_f32(x)[i] = damo_rng_uniform(&r) - 0.5f;
  for (int i = 0; i < 50; i++) damo_tensor_i32(y)[i] = (int32_t)damo_rng_below(&r, 3);
  damo_model *a = small_mlp(0.05f), *b = small_mlp(0.1f);
  int calls = 0;
  damo_fit_options o = {.epochs = 2, .batch_size = 16, .seed = 9, .verbose = 0, .grad_hook = double_hook,
                        .grad_hook_ctx = &calls};
  CHECK(damo_model_fit(a, x, y, &o, NULL) == DAMO_OK);
  CHECK(calls == 2 * 4); /* 4 steps an epoch (50 rows in batches of 16) */
  o.grad_hook = NULL;
  CHECK(damo_model_fit(b, x, y, &o, NULL) == DAMO_OK);
  damo_tensor *pa = NULL, *pb = NULL;
  CHECK(damo_model_predict(a, x, 0, &pa) == DAMO_OK && damo_model_predict(b, x, 0, &pb) == DAMO_OK);
  /* lr (2 g) and (2 lr) g are both exactly 2 (lr g) in floats */
  CHECK(pa && pb && memcmp(pa->data, pb->data, 150 * sizeof(float)) == 0);
  damo_tensor_free(pa), damo_tensor_free(pb);
  damo_model_free(a), damo_model_free(b);
  damo_tensor_free(x), damo_tensor_free(y);
}

/* ------------------------------------------------------------------ the hook through GPT-2 and BERT */

static void test_transformer_trainers_call_the_hook(void) {
  damo_gpt2_config gc = {2, 2, 16, 16, 40, 1e-5f};
  damo_gpt2 *g = NULL;
  CHECK(damo_gpt2_new(&gc, 1, &g) == DAMO_OK);
  int32_t ids[400];
  for (int i = 0; i < 400; i++) ids[i] = (i * 7) % 40;
  damo_token_data *d = NULL;
  CHECK(damo_token_data_from_ids(ids, 400, 0.1, &d) == DAMO_OK);
  damo_gpt2_train_options o = damo_gpt2_train_defaults();
  o.steps = 3, o.batch_size = 2, o.seq_len = 8, o.grad_accum = 2, o.warmup_steps = 1;
  damo_gpt2_trainer *t = NULL;
  CHECK(damo_gpt2_trainer_new(g, d, &o, &t) == DAMO_OK);
  seen s = {0};
  damo_trainer_set_grad_hook(damo_gpt2_trainer_core(t), record_hook, &s);
  damo_gpt2_step_report rep;
  for (int i = 0; i < 3; i++) CHECK(damo_gpt2_trainer_step(t, &rep) == DAMO_OK);
  CHECK(s.calls == 3 && s.last_step == 2 && rep.step == 3 && damo_gpt2_trainer_steps_done(t) == 3);
  CHECK(rep.tokens == 2 * 2 * 8);
  damo_gpt2_trainer_free(t);
  damo_token_data_free(d);
  damo_gpt2_free(g);

  damo_bert_config bc = damo_bert_config_default();
  bc.vocab_size = 120, bc.hidden_size = 16, bc.num_hidden_layers = 1, bc.num_attention_heads = 2;
  bc.intermediate_size = 32, bc.max_position_embeddings = 16, bc.num_labels = 2;
  damo_bert *m = NULL;
  CHECK(damo_bert_new(&bc, 2, &m) == DAMO_OK);
  damo_bert_train_options bo = damo_bert_train_defaults();
  bo.steps = 2, bo.batch_size = 2, bo.seq_len = 8, bo.predictions = 2, bo.warmup_steps = 0;
  damo_bert_finetuner *f = NULL;
  CHECK(m && damo_bert_finetuner_new(m, &bo, &f) == DAMO_OK);
  seen fs = {0};
  damo_trainer_set_grad_hook(damo_bert_finetuner_core(f), record_hook, &fs);
  int32_t bi[16], bt[16] = {0}, bm[16], bl[2] = {0, 1};
  for (int i = 0; i < 16; i++) bi[i] = 104 + i % 16, bm[i] = 1;
  damo_bert_step_report br;
  CHECK(damo_bert_finetuner_step(f, 2, bi, bt, bm, bl, &br) == DAMO_OK);
  CHECK(fs.calls == 1 && br.step == 1 && isfinite(br.loss));
  damo_bert_finetuner_free(f);
  int32_t stream[600];
  for (int i = 0; i < 600; i++) stream[i] = 104 + (i * 5) % 16;
  damo_bert_pretrainer *pt = NULL;
  CHECK(damo_bert_pretrainer_new(m, stream, 600, &bo, &pt) == DAMO_OK);
  seen ps = {0};
  damo_trainer_set_grad_hook(damo_bert_pretrainer_core(pt), record_hook, &ps);
  for (int i = 0; i < 2; i++) CHECK(damo_bert_pretrainer_step(pt, &br) == DAMO_OK);
  CHECK(ps.calls == 2 && damo_bert_pretrainer_steps_done(pt) == 2);
  damo_bert_pretrainer_free(pt);
  damo_bert_free(m);
}

int main(void) {
  RUN(test_step_averages_micro_batches_and_calls_the_hook);
  RUN(test_hook_result_is_what_the_optimizer_steps);
  RUN(test_errors_name_the_step_and_leave_the_weights);
  RUN(test_divergence_stops_the_run);
  RUN(test_fit_gradient_hook);
  RUN(test_transformer_trainers_call_the_hook);
  return test_summary("trainer");
}
