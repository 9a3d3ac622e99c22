/* test_dp_gpt2.c - DP-SGD for language models (issue 26): the fused LM head and loss
 * (linear_cross_entropy) measures each sequence's gradient norm of its weight and bias, by
 * Gram matrices or by the gradient itself, over one chunk of logits or several, against the
 * gradient of that sequence alone; its weighted backward against the weighted sum; then a
 * tiny GPT-2: every parameter's per-sequence norm (the token table tied to the head: between
 * the true norm and the sum of its two parts), the trainer's clipped and noised steps, the
 * epsilon it reports, a resumed private run, and `damo train --dp-clip` on a GPT-2 config. */
#include "damo.h"
#include "graph/graph.h"
#include "models/gpt2.h"
#include "cli_run.h"
#include "harness.h"
#include "tmpfiles.h"
#include "grad_seen.h"
#include "gpt2_fixtures.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAXP 8

/* ---- the head alone: x (B, T, K) -> dense (K, C) tanh -> linear_cross_entropy (V, C) + bias */

typedef struct head_case {
  const char *what;
  int B, T, K, C, V, chunk_rows;
} head_case;

typedef struct head_graph {
  damo_graph *g;
  damo_node *x, *y;
  damo_tensor *value[4], *grad[4]; /* kernel, dense bias, head weight, head bias */
  int64_t size[4];
} head_graph;

static void head_build(head_graph *h, const head_case *c) {
  memset(h, 0, sizeof *h);
  const int64_t shapes[4][2] = {{c->K, c->C}, {c->C, 0}, {c->V, c->C}, {c->V, 0}};
  const char *names[4] = {"kernel", "dense_bias", "head", "head_bias"};
  damo_rng r;
  damo_rng_seed(&r, 11);
  h->g = damo_graph_new(1);
  damo_node *p[4];
  for (int i = 0; i < 4; i++) {
    const int nd = shapes[i][1] ? 2 : 1;
    h->value[i] = damo_tensor_new(DAMO_F32, nd, shapes[i]);
    h->grad[i] = damo_tensor_new(DAMO_F32, nd, shapes[i]);
    h->size[i] = damo_tensor_numel(h->value[i]);
    for (int64_t k = 0; k < h->size[i]; k++) damo_tensor_f32(h->value[i])[k] = 0.6f * damo_rng_normal(&r);
    p[i] = damo_param(h->g, names[i], h->value[i], h->grad[i]);
  }
  const int64_t xs[3] = {c->B, c->T, c->K}, ys[2] = {c->B, c->T}, flat[2] = {-1, c->C}, flat_y[1] = {-1};
  h->x = damo_input(h->g, "x", DAMO_F32, 3, xs);
  h->y = damo_input(h->g, "y", DAMO_I32, 2, ys);
  damo_node *z = damo_dense_op(h->g, h->x, p[0], p[1], DAMO_ACT_TANH);
  damo_node *loss = damo_linear_cross_entropy_chunked(h->g, damo_reshape(h->g, z, 2, flat), p[2], p[3],
                                                      damo_reshape(h->g, h->y, 1, flat_y), c->chunk_rows);
  damo_graph_keep_forward(h->g);
  CHECK_MSG(damo_graph_compile(h->g, loss, 0, NULL) == DAMO_OK, "%s: %s", c->what, damo_last_error());
}

static void head_free(head_graph *h) {
  damo_graph_free(h->g);
  for (int i = 0; i < 4; i++) damo_tensor_free(h->value[i]), damo_tensor_free(h->grad[i]);
}

/* Forward (and a plain backward) of examples [first, first + b). */
static void head_run(head_graph *h, const head_case *c, const float *x, const int32_t *y, int first, int b, int backward) {
  CHECK(damo_graph_set_batch(h->g, b) == DAMO_OK);
  CHECK(damo_graph_bind(h->g, h->x, x + (int64_t)first * c->T * c->K) == DAMO_OK);
  CHECK(damo_graph_bind(h->g, h->y, y + (int64_t)first * c->T) == DAMO_OK);
  CHECK(damo_graph_forward(h->g, 1) == DAMO_OK);
  if (backward) CHECK(damo_graph_backward(h->g) == DAMO_OK);
}

static void check_head(const head_case *c) {
  head_graph h;
  head_build(&h, c);
  const int64_t nx = (int64_t)c->B * c->T * c->K, ny = (int64_t)c->B * c->T;
  float *x = malloc((size_t)nx * sizeof *x), weights[16], sq[16];
  int32_t *y = malloc((size_t)ny * sizeof *y);
  damo_rng r;
  damo_rng_seed(&r, 4);
  for (int64_t i = 0; i < nx; i++) x[i] = damo_rng_normal(&r);
  for (int64_t i = 0; i < ny; i++) y[i] = (int32_t)damo_rng_below(&r, (uint32_t)c->V);
  int64_t total = 0;
  for (int i = 0; i < 4; i++) total += h.size[i];
  float *alone = calloc((size_t)(c->B * total), sizeof(float)), *want = calloc((size_t)total, sizeof(float));
  for (int b = 0; b < c->B; b++) { /* each sequence alone: the mean over its tokens */
    weights[b] = 0.2f + 0.35f * (float)b;
    head_run(&h, c, x, y, b, 1, 1);
    for (int i = 0, at = 0; i < 4; at += (int)h.size[i], i++)
      memcpy(alone + b * total + at, h.grad[i]->data, (size_t)h.size[i] * sizeof(float));
    for (int64_t k = 0; k < total; k++) want[k] += weights[b] / (float)c->B * alone[b * total + k];
  }
  head_run(&h, c, x, y, 0, c->B, 0);
  CHECK_MSG(damo_graph_example_norms(h.g, sq) == DAMO_OK, "%s: %s", c->what, damo_last_error());
  double worst = 0;
  for (int b = 0; b < c->B; b++) {
    const double exact = sqrt(damo_sum_squares(alone + b * total, total)), got = sqrt((double)sq[b]) * c->B;
    worst = fmax(worst, fabs(got - exact) / exact);
  }
  CHECK_MSG(worst < 2e-5, "%s: worst relative error of a sequence's norm %.3g", c->what, worst);
  damo_graph_set_example_weights(h.g, weights);
  CHECK(damo_graph_backward(h.g) == DAMO_OK);
  damo_graph_set_example_weights(h.g, NULL);
  for (int i = 0, at = 0; i < 4; at += (int)h.size[i], i++)
    CHECK_MSG(test_close_ratio(damo_tensor_f32(h.grad[i]), want + at, (long)h.size[i], 1e-6, 1e-4) <= 1.0,
              "%s: the weighted backward of param %d", c->what, i);
  /* a plain backward after them is the plain gradient again */
  head_run(&h, c, x, y, 0, c->B, 1);
  float *plain = calloc((size_t)total, sizeof(float));
  for (int b = 0; b < c->B; b++)
    for (int64_t k = 0; k < total; k++) plain[k] += alone[b * total + k] / (float)c->B;
  CHECK_MSG(test_close_ratio(damo_tensor_f32(h.grad[2]), plain + h.size[0] + h.size[1], (long)h.size[2], 1e-6, 1e-4) <= 1.0,
            "%s: a plain backward after a weighted one", c->what);
  free(plain);
  free(alone);
  free(want);
  free(x);
  free(y);
  head_free(&h);
}

static void test_head_norms(void) {
  /* T (V + C) < V C: Gram matrices; else the V x C gradient, in one chunk or in chunks of 3 */
  const head_case cases[] = {{"gram", 4, 3, 5, 12, 30, 0},
                             {"direct", 3, 7, 4, 4, 9, 0},
                             {"direct in chunks", 3, 7, 4, 4, 9, 3},
                             {"gram, chunks of whole sequences", 5, 2, 3, 16, 40, 4}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_head(&cases[i]);
}

/* ---- a tiny GPT-2 */

enum { GB = 3, GT = 5, GVOCAB = 24 };

static damo_gpt2 *tiny_gpt2(void) {
  damo_gpt2_config c = {2, 2, 8, 8, GVOCAB, 1e-5f};
  damo_gpt2 *m = NULL;
  CHECK(damo_gpt2_new(&c, 9, &m) == DAMO_OK);
  return m;
}

/* Each parameter's per-sequence norm against the sequence alone; the token table (read by
 * the embedding and the tied head) gets the sum of its two parts' norms, at least its own. */
static void test_gpt2_norms(void) {
  damo_gpt2 *m = tiny_gpt2();
  if (!m) return;
  m->keep_forward = 1;
  damo_gpt2_graph *gg = NULL;
  CHECK_MSG(damo_gpt2_graph_new(m, GB, GT, 1, &gg) == DAMO_OK, "%s", damo_last_error());
  if (!gg) {
    damo_gpt2_free(m);
    return;
  }
  int32_t ids[GB * GT], targets[GB * GT];
  for (int i = 0; i < GB * GT; i++) ids[i] = (i * 7 + 3) % GVOCAB, targets[i] = (i * 5 + 1) % GVOCAB;
  ids[GT + 2] = ids[GT]; /* a repeated id within a sequence */
  const int64_t n = m->p.n_params_padded;
  float *alone = calloc((size_t)(GB * n), sizeof(float)), *want = calloc((size_t)n, sizeof(float)), sq[GB], loss;
  float weights[GB] = {0.3f, 1.7f, 0.9f};
  damo_graph *g = gg->graph;
  for (int b = 0; b < GB; b++) {
    CHECK(damo_graph_set_batch(g, 1) == DAMO_OK);
    CHECK(damo_gpt2_graph_forward(gg, ids + b * GT, targets + b * GT, &loss) == DAMO_OK);
    CHECK(damo_gpt2_graph_backward(gg) == DAMO_OK);
    memcpy(alone + b * n, m->p.grad_block, (size_t)n * sizeof(float));
    for (int64_t k = 0; k < n; k++) want[k] += weights[b] / GB * alone[b * n + k];
  }
  CHECK(damo_graph_set_batch(g, GB) == DAMO_OK);
  CHECK(damo_gpt2_graph_forward(gg, ids, targets, &loss) == DAMO_OK);
  CHECK_MSG(damo_graph_example_norms(g, sq) == DAMO_OK, "%s", damo_last_error());
  /* per param node: its slice of the gradient block and the accumulated norms */
  double worst = 0, total_exact[GB] = {0};
  int params = 0, tied_ok = 1;
  for (int p = 0; p < g->n_nodes; p++) {
    const damo_node *pn = g->nodes[p];
    if (pn->op != DAMO_OP_PARAM || !pn->in_backward) continue;
    const int64_t at = damo_tensor_f32(pn->param_grad) - m->p.grad_block, count = damo_tensor_numel(pn->param_grad);
    const int tied = at == 0; /* wte is the block's first tensor */
    params++;
    for (int b = 0; b < GB; b++) {
      const double exact = sqrt(damo_sum_squares(alone + b * n + at, count));
      const double got = (double)g->example_acc[(int64_t)p * g->built_batch + b] * GB;
      total_exact[b] += exact * exact;
      if (tied) tied_ok &= got >= exact * (1 - 1e-5) && got <= 2 * exact;
      else worst = fmax(worst, fabs(got - exact) / (exact + 1e-12));
    }
  }
  CHECK_MSG(params == 2 + 12 * 2 + 2, "%d params measured", params);
  CHECK_MSG(worst < 2e-4, "GPT-2: worst relative error of a parameter's per-sequence norm %.3g", worst);
  CHECK_MSG(tied_ok, "GPT-2: the tied token table's norm is not between its true norm and twice it");
  for (int b = 0; b < GB; b++)
    CHECK_MSG(sqrt((double)sq[b]) * GB >= sqrt(total_exact[b]) * (1 - 1e-5), "sequence %d: norm %g below the true %g", b,
              sqrt((double)sq[b]) * GB, sqrt(total_exact[b]));
  damo_graph_set_example_weights(g, weights);
  CHECK(damo_gpt2_graph_backward(gg) == DAMO_OK);
  damo_graph_set_example_weights(g, NULL);
  CHECK_MSG(test_close_ratio(m->p.grad_block, want, (long)n, 1e-6, 1e-4) <= 1.0, "GPT-2: the weighted backward");
  free(alone);
  free(want);
  damo_gpt2_graph_free(gg);
  damo_gpt2_free(m);
}

/* ---- the trainer */

static damo_token_data *stream(void) {
  int32_t ids[1200];
  damo_rng r;
  damo_rng_seed(&r, 2);
  for (int i = 0; i < 1200; i++) ids[i] = i % 6 == 0 ? (int32_t)damo_rng_below(&r, GVOCAB) : (ids[i - 1] + 1) % GVOCAB;
  damo_token_data *d = NULL;
  CHECK(damo_token_data_from_ids(ids, 1200, 0.1, &d) == DAMO_OK);
  return d;
}

static damo_gpt2_train_options private_options(damo_dp_options *dp, int64_t steps) {
  damo_gpt2_train_options o = damo_gpt2_train_defaults();
  o.steps = steps, o.batch_size = 4, o.grad_accum = 2, o.seq_len = GT, o.lr = 1e-2f, o.min_lr = 1e-3f;
  o.warmup_steps = 0, o.eval_windows = 4, o.seed = 8, o.clip_norm = 0, o.privacy = dp;
  return o;
}

/* Runs `steps` private steps; the parameters after them into params (n floats). */
static damo_status private_run(damo_dp_options *dp, int64_t steps, grad_seen *seen, float *params, int64_t *n,
                               int64_t *tokens) {
  damo_token_data *d = stream();
  damo_gpt2 *m = tiny_gpt2();
  damo_gpt2_train_options o = private_options(dp, steps);
  damo_gpt2_trainer *t = NULL;
  damo_status st = d && m ? damo_gpt2_trainer_new(m, d, &o, &t) : DAMO_ERR_NOMEM;
  if (st == DAMO_OK && seen) damo_trainer_set_grad_hook(damo_gpt2_trainer_core(t), see_grads, seen);
  if (tokens) *tokens = 0;
  for (int64_t s = 0; s < steps && st == DAMO_OK; s++) {
    damo_gpt2_step_report r;
    st = damo_gpt2_trainer_step(t, &r);
    if (tokens) *tokens += r.tokens;
  }
  double eps;
  if (st == DAMO_OK) st = damo_gpt2_trainer_epsilon(t, &eps);
  if (params) memcpy(params, m->p.param_block, (size_t)m->p.n_params_padded * sizeof(float));
  if (n) *n = m->p.n_params_padded;
  damo_gpt2_trainer_free(t);
  damo_gpt2_free(m);
  damo_token_data_free(d);
  return st;
}

static void test_gpt2_trainer(void) {
  /* clipping only: each step is a mean of sequence gradients of norm <= C */
  grad_seen seen = {0};
  damo_dp_options dp = {.clip = 0.05, .noise = 1e-9};
  CHECK_MSG(private_run(&dp, 4, &seen, NULL, NULL, NULL) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(seen.steps == 4 && seen.max_norm > 0.005 && seen.max_norm < 0.05 * 3, "largest %g over %lld steps",
            seen.max_norm, (long long)seen.steps);
  /* 1080 training tokens make 180 windows of 6: q = 8 / 180; the noise's spread sigma C / 8 */
  memset(&seen, 0, sizeof seen);
  dp = (damo_dp_options){.clip = 1, .noise = 50};
  int64_t tokens;
  CHECK(private_run(&dp, 20, &seen, NULL, NULL, &tokens) == DAMO_OK);
  damo_gpt2 *shape = tiny_gpt2(); /* noise on the weights only, not the padding between tensors */
  const double weights = shape ? (double)shape->p.n_params / (double)shape->p.n_params_padded : 1;
  damo_gpt2_free(shape);
  const double sd = sqrt(seen.sum_sq / ((double)seen.count * weights)) * 8;
  CHECK_MSG(fabs(sd - 50) < 2, "noise sd %g, want 50", sd);
  CHECK_MSG(tokens > 20 * 8 * GT / 2 && tokens < 20 * 8 * GT * 2, "%lld tokens in 20 Poisson batches of about 8 windows",
            (long long)tokens);
  double eps, order;
  CHECK(damo_dp_epsilon(8.0 / 180, 50, 20, 1e-5, DAMO_DP_CLASSIC, &eps, &order) == DAMO_OK);
  CHECK_MSG(dp.steps == 20 && fabs(dp.epsilon - eps) < 1e-9 && fabs(dp.sample_rate - 8.0 / 180) < 1e-12,
            "steps %lld, epsilon %g (want %g), rate %g", (long long)dp.steps, dp.epsilon, eps, dp.sample_rate);
  /* passes of 3 windows train as passes of 4; a target epsilon is met */
  static float a[8192], b[8192];
  int64_t n = 0;
  dp = (damo_dp_options){.clip = 0.5, .noise = 1.1};
  CHECK(private_run(&dp, 3, NULL, a, &n, NULL) == DAMO_OK);
  damo_dp_options small = {.clip = 0.5, .noise = 1.1, .physical_batch = 3};
  CHECK(private_run(&small, 3, NULL, b, NULL, NULL) == DAMO_OK);
  CHECK_MSG(n > 0 && n <= 8192 && test_close_ratio(b, a, (long)n, 1e-5, 1e-4) <= 1.0, "passes of 3 windows");
  dp = (damo_dp_options){.clip = 0.5, .target_epsilon = 6, .sampling = DAMO_DP_SHUFFLE};
  CHECK(private_run(&dp, 30, NULL, NULL, NULL, NULL) == DAMO_OK);
  CHECK_MSG(dp.epsilon <= 6 + 1e-6 && dp.epsilon > 5.8, "epsilon %g for a target of 6", dp.epsilon);
  /* refusals: noise and epsilon both; recomputation; a delta of 1 / 180 */
  dp = (damo_dp_options){.clip = 1, .noise = 1, .target_epsilon = 2};
  EXPECT_FAIL(private_run(&dp, 2, NULL, NULL, NULL, NULL), DAMO_ERR_INVALID_ARG, "not both");
  dp = (damo_dp_options){.clip = 1, .noise = 1, .delta = 1.0 / 180};
  EXPECT_FAIL(private_run(&dp, 2, NULL, NULL, NULL, NULL), DAMO_ERR_INVALID_ARG, "180 disjoint windows");
  damo_token_data *d = stream();
  damo_gpt2 *m = tiny_gpt2();
  dp = (damo_dp_options){.clip = 1, .noise = 1};
  damo_gpt2_train_options o = private_options(&dp, 2);
  damo_gpt2_trainer *t = NULL;
  if (m) damo_gpt2_set_recompute(m, 1);
  if (m && d) EXPECT_FAIL(damo_gpt2_trainer_new(m, d, &o, &t), DAMO_ERR_UNSUPPORTED, "recomputation");
  damo_gpt2_trainer_free(t);
  damo_gpt2_free(m);
  damo_token_data_free(d);
}

/* A private run checkpointed after 3 steps and resumed for 3 more equals 6 in one go. */
static void test_gpt2_resume(void) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", tmp_path("dp_gpt2_ckpt"));
  static float once[8192], twice[8192];
  int64_t n = 0;
  damo_dp_options dp = {.clip = 0.5, .noise = 0.8};
  CHECK(private_run(&dp, 6, NULL, once, &n, NULL) == DAMO_OK);
  damo_token_data *d = stream();
  damo_gpt2 *m = tiny_gpt2(), *m2 = tiny_gpt2();
  damo_dp_options dp1 = {.clip = 0.5, .noise = 0.8}, dp2 = dp1;
  damo_gpt2_train_options o1 = private_options(&dp1, 6), o2 = private_options(&dp2, 6);
  damo_gpt2_trainer *t = NULL, *t2 = NULL;
  CHECK(damo_gpt2_trainer_new(m, d, &o1, &t) == DAMO_OK);
  for (int s = 0; t && s < 3; s++) CHECK(damo_gpt2_trainer_step(t, NULL) == DAMO_OK);
  if (t) CHECK_MSG(damo_gpt2_trainer_save(t, dir) == DAMO_OK, "%s", damo_last_error());
  CHECK(damo_gpt2_trainer_new(m2, d, &o2, &t2) == DAMO_OK);
  if (t2) CHECK_MSG(damo_gpt2_trainer_resume(t2, dir) == DAMO_OK, "%s", damo_last_error());
  for (int s = 0; t2 && s < 3; s++) CHECK(damo_gpt2_trainer_step(t2, NULL) == DAMO_OK);
  memcpy(twice, m2->p.param_block, (size_t)n * sizeof(float));
  CHECK_MSG(memcmp(once, twice, (size_t)n * sizeof(float)) == 0, "a resumed private run differs");
  double eps;
  CHECK(t2 && damo_gpt2_trainer_epsilon(t2, &eps) == DAMO_OK && dp2.steps == 6 && fabs(eps - dp.epsilon) < 1e-12);
  damo_gpt2_trainer_free(t);
  damo_gpt2_trainer_free(t2);
  damo_gpt2_free(m);
  damo_gpt2_free(m2);
  damo_token_data_free(d);
}

/* damo train on a GPT-2 config with --dp-clip: epsilon in the output and privacy.json;
 * skipped without the GPT-2 vocabulary. */
static void test_gpt2_cli(void) {
  char cfg[512], text[512], out[512];
  if (!gpt2_vocab_installed() || !write_tiny_gpt2("dp_gpt2", 1, 300, cfg, text, sizeof cfg)) return;
  snprintf(out, sizeof out, "%s", tmp_path("dp_gpt2_model"));
  int rc = run("%s train --config %s --data %s --out %s --dp-clip 1 --dp-epsilon 50 --dp-delta 1e-3 --eval-every 0",
               DAMO_CLI_PATH, cfg, text, out);
  const char *spent = strstr(cli_out, "privacy: epsilon ");
  CHECK_MSG(rc == 0 && spent && atof(spent + 17) <= 50 && atof(spent + 17) > 45 && strstr(cli_out, "poisson sampling"),
            "%s", cli_out);
  rc = run("grep '\"epsilon\"' %s/privacy.json && head -1 %s/history.csv | grep -q epsilon && %s summary --model %s", out,
           out, DAMO_CLI_PATH, out);
  CHECK_MSG(rc == 0 && strstr(cli_out, "Differential privacy: (epsilon "), "%s", cli_out);
  rc = run("%s train --config %s --data %s --out %s --overwrite --dp-clip 1 --dp-noise 1 --recompute", DAMO_CLI_PATH, cfg,
           text, out);
  CHECK_MSG(rc != 0 && strstr(cli_out, "recomputation"), "%s", cli_out);
}

int main(void) {
  tmpdir_template("dp_gpt2");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_head_norms);
  RUN(test_gpt2_norms);
  RUN(test_gpt2_trainer);
  RUN(test_gpt2_resume);
  RUN(test_gpt2_cli);
  run("rm -rf %s", tmpdir);
  return test_summary("dp_gpt2");
}
