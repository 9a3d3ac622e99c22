/* test_recompute.c - activation recomputation (damo_graph_recompute_begin/end and the model,
 * GPT-2 and BERT switches over it): a recomputed graph gives the stored graph's loss and
 * gradients bit for bit (dropout masks included), keeps running statistics moving once per
 * step, plans a smaller arena, and refuses nested segments. */
#include "damo.h"
#include "harness.h"
#include "models/bert.h"
#include "models/gpt2.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define B 4
#define C 16

/* Three residual blocks x + W2 gelu(dropout(batchnorm(x W1))) on a (B, C) input, each one
 * segment when segments is set; the loss is the MSE against a target. Returns the loss
 * and fills grads (the gradient block) and the running statistics after one step. */
typedef struct toy {
  float w[3][2][C * C], gamma[3][C], beta[3][C], rmean[3][C], rvar[3][C];
  float gw[3][2][C * C], ggamma[3][C], gbeta[3][C];
} toy;

static void toy_init(toy *t) {
  memset(t, 0, sizeof *t);
  damo_rng r;
  damo_rng_seed(&r, 3);
  for (int b = 0; b < 3; b++) {
    for (int k = 0; k < 2; k++)
      for (int i = 0; i < C * C; i++) t->w[b][k][i] = (damo_rng_uniform(&r) - 0.5f) * 0.5f;
    for (int i = 0; i < C; i++) t->gamma[b][i] = 1.0f, t->rvar[b][i] = 1.0f;
  }
}

static damo_tensor *wrap(damo_tensor **owned, int *n_owned, float *data, int ndim, const int64_t *shape) {
  return owned[(*n_owned)++] = damo_tensor_wrap(DAMO_F32, ndim, shape, data);
}

static float toy_step(toy *t, int segments, size_t *arena) {
  damo_graph *g = damo_graph_new(11);
  int64_t xs[2] = {B, C}, ws[2] = {C, C}, cs[1] = {C};
  damo_node *x = damo_input(g, "x", DAMO_F32, 2, xs), *y = damo_input(g, "y", DAMO_F32, 2, xs);
  damo_tensor *owned[64];
  int n_owned = 0;
#define WRAP(ptr, nd, shape) wrap(owned, &n_owned, ptr, nd, shape)
  damo_node *h = x;
  for (int b = 0; b < 3; b++) {
    if (segments) damo_graph_recompute_begin(g);
    damo_node *w1 = damo_param(g, "w1", WRAP(t->w[b][0], 2, ws), WRAP(t->gw[b][0], 2, ws));
    damo_node *w2 = damo_param(g, "w2", WRAP(t->w[b][1], 2, ws), WRAP(t->gw[b][1], 2, ws));
    damo_node *gm = damo_param(g, "gamma", WRAP(t->gamma[b], 1, cs), WRAP(t->ggamma[b], 1, cs));
    damo_node *bt = damo_param(g, "beta", WRAP(t->beta[b], 1, cs), WRAP(t->gbeta[b], 1, cs));
    damo_node *rm = damo_param(g, "rmean", WRAP(t->rmean[b], 1, cs), NULL);
    damo_node *rv = damo_param(g, "rvar", WRAP(t->rvar[b], 1, cs), NULL);
    damo_node *u = damo_batch_norm(g, damo_matmul(g, h, w1, 0, 0), gm, bt, rm, rv, 0.9f, 1e-5f);
    u = damo_gelu(g, damo_dropout(g, u, 0.3f), 0);
    h = damo_add(g, h, damo_matmul(g, u, w2, 0, 0));
    if (segments) damo_graph_recompute_end(g);
  }
#undef WRAP
  damo_node *loss = damo_mse(g, h, y);
  float xv[B * C], yv[B * C];
  for (int i = 0; i < B * C; i++) xv[i] = sinf(0.3f * (float)i), yv[i] = cosf(0.2f * (float)i);
  float l = NAN;
  CHECK(damo_graph_compile(g, loss, 0, NULL) == DAMO_OK);
  *arena = damo_graph_arena_bytes(g, NULL);
  damo_graph_bind(g, x, xv);
  damo_graph_bind(g, y, yv);
  CHECK(damo_graph_forward(g, 1) == DAMO_OK);
  CHECK(damo_graph_backward(g) == DAMO_OK);
  damo_graph_read(g, loss, 0, 1, &l);
  damo_graph_free(g);
  for (int i = 0; i < n_owned; i++) damo_tensor_free(owned[i]);
  return l;
}

static void test_graph_segments_equal(void) {
  toy *a = malloc(sizeof *a), *b = malloc(sizeof *b);
  toy_init(a);
  toy_init(b);
  size_t arena_stored, arena_recomputed;
  float la = toy_step(a, 0, &arena_stored), lb = toy_step(b, 1, &arena_recomputed);
  CHECK(isfinite(la) && la == lb);
  /* gradients, and running statistics moved once (not again by the recompute) */
  CHECK_MSG(!memcmp(a->gw, b->gw, sizeof a->gw), "weight gradients differ under recomputation");
  CHECK(!memcmp(a->ggamma, b->ggamma, sizeof a->ggamma) && !memcmp(a->gbeta, b->gbeta, sizeof a->gbeta));
  CHECK_MSG(!memcmp(a->rmean, b->rmean, sizeof a->rmean) && !memcmp(a->rvar, b->rvar, sizeof a->rvar),
            "running statistics moved twice");
  float moved = 0;
  for (int i = 0; i < C; i++) moved += fabsf(a->rmean[0][i]);
  CHECK(moved > 0); /* the statistics compared above did move */
  int nonzero = 0;
  for (int i = 0; i < C * C; i++) nonzero += a->gw[0][0][i] != 0.0f;
  CHECK(nonzero > C * C / 4);
  CHECK_MSG(arena_recomputed < arena_stored, "arena %zu with recomputation, %zu without", arena_recomputed,
            arena_stored);
  free(a);
  free(b);
}

static void test_nested_segment_refused(void) {
  damo_graph *g = damo_graph_new(1);
  int64_t s[2] = {2, 2};
  damo_node *x = damo_input(g, "x", DAMO_F32, 2, s);
  damo_graph_recompute_begin(g);
  damo_graph_recompute_begin(g);
  CHECK(damo_graph_status(g) == DAMO_ERR_STATE);
  CHECK(strstr(damo_last_error(), "do not nest") != NULL);
  CHECK(damo_relu(g, x) == NULL); /* the error is sticky */
  damo_graph_free(g);
}

/* One GPT-2 training graph step: loss and the whole gradient block. */
static float gpt2_step(damo_gpt2 *m, int recompute, float **grads, int64_t *n, size_t *arena) {
  damo_gpt2_set_recompute(m, recompute);
  damo_gpt2_graph *gg = NULL;
  float loss = NAN;
  CHECK(damo_gpt2_graph_new(m, 2, 24, 1, &gg) == DAMO_OK);
  if (!gg) return loss;
  int32_t ids[48], targets[48];
  for (int i = 0; i < 48; i++) ids[i] = (i * 7 + 3) % 50, targets[i] = (i * 5 + 1) % 50;
  CHECK(damo_gpt2_graph_forward(gg, ids, targets, &loss) == DAMO_OK);
  CHECK(damo_gpt2_graph_backward(gg) == DAMO_OK);
  *arena = damo_graph_arena_bytes(gg->graph, NULL);
  const float *g = damo_gpt2_grad_block(m, n);
  *grads = malloc((size_t)*n * sizeof **grads);
  memcpy(*grads, g, (size_t)*n * sizeof **grads);
  damo_gpt2_graph_free(gg);
  return loss;
}

static void test_gpt2_recompute(void) {
  damo_gpt2_config c = {3, 2, 32, 32, 50, 1e-5f};
  damo_gpt2 *m = NULL;
  CHECK(damo_gpt2_new(&c, 5, &m) == DAMO_OK);
  if (!m) return;
  float *ga, *gb;
  int64_t n;
  size_t arena_a, arena_b;
  float la = gpt2_step(m, 0, &ga, &n, &arena_a), lb = gpt2_step(m, 1, &gb, &n, &arena_b);
  CHECK(isfinite(la) && la == lb);
  CHECK_MSG(!memcmp(ga, gb, (size_t)n * sizeof *ga), "GPT-2 gradients differ under recomputation");
  /* three blocks: everything inside them but their inputs and outputs is gone */
  CHECK_MSG(arena_b * 10 < arena_a * 7, "arena %zu with recomputation, %zu without", arena_b, arena_a);
  free(ga);
  free(gb);
  damo_gpt2_free(m);
}

/* BERT's classifier with both dropouts on: the recomputed forward draws the same masks. */
static float bert_step(damo_bert *m, int recompute, float **grads, int64_t *n) {
  damo_bert_set_recompute(m, recompute);
  damo_bert_graph *bg = NULL;
  float loss = NAN;
  CHECK(damo_bert_classifier_new(m, 2, 12, 1, &bg) == DAMO_OK);
  if (!bg) return loss;
  damo_bert_graph_seed(bg, 9);
  int32_t ids[24], types[24], mask[24], labels[2] = {1, 0};
  for (int i = 0; i < 24; i++) ids[i] = (i * 11 + 2) % 40, types[i] = i % 12 >= 6, mask[i] = i % 12 < 10;
  CHECK(damo_bert_graph_forward(bg, 2, ids, types, mask, labels, 1, &loss) == DAMO_OK);
  CHECK(damo_bert_graph_backward(bg) == DAMO_OK);
  const float *g = m->p.grad_block;
  *n = m->p.n_params_padded;
  *grads = malloc((size_t)*n * sizeof **grads);
  memcpy(*grads, g, (size_t)*n * sizeof **grads);
  damo_bert_graph_free(bg);
  return loss;
}

static void test_bert_recompute_dropout(void) {
  damo_bert_config c = damo_bert_config_default();
  c.vocab_size = 40, c.hidden_size = 32, c.num_hidden_layers = 2, c.num_attention_heads = 2;
  c.intermediate_size = 64, c.max_position_embeddings = 16;
  damo_bert *m = NULL;
  CHECK(damo_bert_new(&c, 4, &m) == DAMO_OK);
  if (!m) return;
  float *ga, *gb;
  int64_t n;
  float la = bert_step(m, 0, &ga, &n), lb = bert_step(m, 1, &gb, &n);
  CHECK(isfinite(la) && la == lb);
  CHECK_MSG(!memcmp(ga, gb, (size_t)n * sizeof *ga), "BERT gradients differ under recomputation (dropout masks?)");
  free(ga);
  free(gb);
  damo_bert_free(m);
}

int main(void) {
  RUN(test_graph_segments_equal);
  RUN(test_nested_segment_refused);
  RUN(test_gpt2_recompute);
  RUN(test_bert_recompute_dropout);
  return test_summary("recompute");
}
