/* tokens.c - attributions for models that read token ids (text models: an embedding first).
 * Ids have no gradient, so the explainer takes it at the embeddings: the graph's later layers
 * read the embedding rows scaled by alpha (one value per example; 1: as they are), and the
 * loss's gradient is kept there. One number per token then comes from its embedding row e_t
 * and that gradient g_t:
 *   saliency               ||g_t|| (the gradient's length at the text as it is)
 *   gradient x input       e_t . g_t
 *   Integrated Gradients   e_t . (mean of g_t along alpha in (0, 1]): the path from the zero
 *                          embedding to the text's, so the tokens' attributions add up to
 *                          f(text) - f(zeros) (Sundararajan et al. 2017, their text models)
 *   occlusion              the logit's drop when the token becomes <pad> (id 0)
 * A timestep mask from the embedding (mask_zero) comes from the ids and is not scaled. */
#include "explain/explainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

damo_node *explainer_scale_embeddings(void *ctx, damo_graph *g, damo_node *v) {
  damo_explainer *e = ctx;
  const int64_t shape[3] = {e->batch, 1, 1};
  e->alpha = damo_input(g, "explain_alpha", DAMO_F32, damo_node_ndim(v) == 3 ? 3 : 2, shape);
  e->scaled = damo_mul(g, v, e->alpha);
  if (e->scaled) damo_node_keep_grad(e->scaled);
  return e->scaled;
}

int64_t damo_explainer_tokens(const damo_explainer *e) { return e && e->tokens ? e->row : 0; }

damo_status damo_explainer_run_tokens(damo_explainer *e, const int32_t *ids, int64_t n, const float *alpha,
                                      const int32_t *targets, float *logits, float *grad, float *embeddings) {
  if (!e || !ids || !alpha) return damo_error(DAMO_ERR_INVALID_ARG, "explainer_run_tokens: NULL argument");
  if (!e->tokens) return damo_error(DAMO_ERR_INVALID_ARG, "explainer_run_tokens: the model reads numbers, not tokens");
  if (n < 1 || n > e->batch)
    return damo_error(DAMO_ERR_INVALID_ARG, "explainer_run_tokens: %lld rows, expected 1 to %lld (the explainer's batch)",
                      (long long)n, (long long)e->batch);
  if (grad && !targets) return damo_error(DAMO_ERR_INVALID_ARG, "explainer_run_tokens: gradients need a target per row");
  if (!e->alpha_rows && !(e->alpha_rows = malloc((size_t)e->batch * sizeof *e->alpha_rows)))
    return damo_error(DAMO_ERR_NOMEM, "explainer_run_tokens: out of memory");
  memcpy(e->alpha_rows, alpha, (size_t)n * sizeof *alpha);
  damo_status st = damo_graph_set_batch(e->g, n);
  if (st == DAMO_OK) st = damo_graph_bind(e->g, e->x, ids);
  if (st == DAMO_OK) st = damo_graph_bind(e->g, e->alpha, e->alpha_rows);
  if (st == DAMO_OK) st = explainer_forward(e, n, targets, grad != NULL, logits);
  const int64_t te = e->layer_shape[0] * e->layer_shape[1];
  if (st == DAMO_OK && embeddings) memcpy(embeddings, damo_node_data(e->layer), (size_t)(n * te) * sizeof *embeddings);
  if (st == DAMO_OK && grad) {
    const float *g = damo_node_grad(e->scaled);
    if (!g) return damo_error(DAMO_ERR_STATE, "explainer_run_tokens: the embeddings' gradient was not kept");
    memcpy(grad, g, (size_t)(n * te) * sizeof *grad);
  }
  return st;
}

damo_status damo_attribute_tokens(damo_explainer *e, const int32_t *ids, int32_t target,
                                  const damo_attribution_options *opt, float *attr, damo_attribution_report *rep) {
  if (!e || !ids || !attr) return damo_error(DAMO_ERR_INVALID_ARG, "attribute_tokens: NULL argument");
  if (!e->tokens) return damo_error(DAMO_ERR_INVALID_ARG, "attribute_tokens: the model reads numbers; use damo_attribute");
  damo_attribution_options o = opt ? *opt : damo_attribution_defaults();
  if (o.method != DAMO_ATTR_SALIENCY && o.method != DAMO_ATTR_GRADIENT_X_INPUT &&
      o.method != DAMO_ATTR_INTEGRATED_GRADIENTS && o.method != DAMO_ATTR_OCCLUSION)
    return damo_error(DAMO_ERR_INVALID_ARG, "attribute_tokens: %s is not offered for token inputs (saliency, "
                      "gradient-x-input, integrated-gradients, occlusion)", damo_attribution_method_name(o.method));
  if (o.method == DAMO_ATTR_INTEGRATED_GRADIENTS && (o.steps < 1 || o.steps > 4096))
    return damo_error(DAMO_ERR_INVALID_ARG, "attribute_tokens: steps must be in [1, 4096]");
  const int64_t T = e->layer_shape[0], E = e->layer_shape[1], B = e->batch, C = e->classes;
  float *emb = malloc((size_t)(T * E) * sizeof *emb), *grads = malloc((size_t)(B * T * E) * sizeof *grads);
  float *logits = malloc((size_t)(B * C) * sizeof *logits), *alpha = malloc((size_t)B * sizeof *alpha);
  int32_t *rows = malloc((size_t)(B * T) * sizeof *rows), *targets = malloc((size_t)B * sizeof *targets);
  double *acc = calloc((size_t)(T * E), sizeof *acc);
  damo_status st = emb && grads && logits && alpha && rows && targets && acc
                       ? DAMO_OK
                       : damo_error(DAMO_ERR_NOMEM, "attribute_tokens: out of memory");
  damo_attribution_report r = {0};
  const float one = 1, zero = 0;
  if (st == DAMO_OK) st = damo_explainer_run_tokens(e, ids, 1, &one, NULL, logits, NULL, emb);
  if (st == DAMO_OK) {
    r.target = target;
    if (target < 0)
      for (int64_t c = 0; c < C; c++) r.target = (r.target < 0 || logits[c] > logits[r.target]) ? (int32_t)c : r.target;
    if (r.target >= C) st = damo_error(DAMO_ERR_INVALID_ARG, "attribute_tokens: target %d is outside the model's %lld "
                                       "outputs", r.target, (long long)C);
    r.logit = st == DAMO_OK ? logits[r.target] : 0;
  }
  if (st == DAMO_OK) st = damo_explainer_run_tokens(e, ids, 1, &zero, NULL, logits, NULL, NULL);
  if (st == DAMO_OK) r.baseline_logit = logits[r.target];
  for (int64_t b = 0; b < B; b++) targets[b] = r.target;
  if (st == DAMO_OK && o.method == DAMO_ATTR_OCCLUSION) {
    for (int64_t t0 = 0; st == DAMO_OK && t0 < T; t0 += B) { /* token t set to <pad>, a batch of tokens at a time */
      const int64_t n = T - t0 < B ? T - t0 : B;
      for (int64_t k = 0; k < n; k++) {
        memcpy(rows + k * T, ids, (size_t)T * sizeof *rows);
        rows[k * T + t0 + k] = 0;
        alpha[k] = 1;
      }
      st = damo_explainer_run_tokens(e, rows, n, alpha, NULL, logits, NULL, NULL);
      for (int64_t k = 0; st == DAMO_OK && k < n; k++) attr[t0 + k] = r.logit - logits[k * C + r.target];
    }
    r.baseline_logit = r.logit; /* no path: completeness does not apply */
  } else if (st == DAMO_OK) {
    /* the path points (IG), or the text as it is (one point) */
    double *at = NULL, *w = NULL;
    const int m = o.method == DAMO_ATTR_INTEGRATED_GRADIENTS ? o.steps : 1;
    at = malloc((size_t)m * sizeof *at), w = malloc((size_t)m * sizeof *w);
    if (!at || !w) st = damo_error(DAMO_ERR_NOMEM, "attribute_tokens: out of memory");
    for (int k = 0; st == DAMO_OK && k < m; k++) at[k] = m == 1 ? 1.0 : (k + 0.5) / m, w[k] = 1.0 / m;
    if (st == DAMO_OK && m > 1 && o.gauss_legendre) explain_gauss_legendre(m, at, w);
    for (int k0 = 0; st == DAMO_OK && k0 < m; k0 += (int)B) {
      const int n = m - k0 < B ? m - k0 : (int)B;
      for (int k = 0; k < n; k++) memcpy(rows + (int64_t)k * T, ids, (size_t)T * sizeof *rows), alpha[k] = (float)at[k0 + k];
      st = damo_explainer_run_tokens(e, rows, n, alpha, targets, NULL, grads, NULL);
      for (int k = 0; st == DAMO_OK && k < n; k++)
        for (int64_t i = 0; i < T * E; i++) acc[i] += w[k0 + k] * grads[(int64_t)k * T * E + i];
    }
    for (int64_t t = 0; st == DAMO_OK && t < T; t++) {
      double v = 0;
      for (int64_t d = 0; d < E; d++)
        v += o.method == DAMO_ATTR_SALIENCY ? acc[t * E + d] * acc[t * E + d] : (double)emb[t * E + d] * acc[t * E + d];
      attr[t] = (float)(o.method == DAMO_ATTR_SALIENCY ? sqrt(v) : v);
    }
    free(at), free(w);
  }
  if (st == DAMO_OK) explain_complete_report(&r, attr, T);
  if (st == DAMO_OK && rep) *rep = r;
  free(emb), free(grads), free(logits), free(alpha), free(rows), free(targets), free(acc);
  return st;
}

damo_status damo_attention_rollout(const float *maps, int layers, int heads, int64_t T, const int32_t *mask, float *out) {
  if (!maps || !out || layers < 1 || heads < 1 || T < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "attention_rollout: NULL maps or output, or no layers, heads or tokens");
  double *r = malloc((size_t)(T * T) * sizeof *r), *a = malloc((size_t)(T * T) * sizeof *a),
         *next = malloc((size_t)(T * T) * sizeof *next);
  if (!r || !a || !next) {
    free(r), free(a), free(next);
    return damo_error(DAMO_ERR_NOMEM, "attention_rollout: out of memory");
  }
  for (int64_t i = 0; i < T * T; i++) r[i] = i / T == i % T; /* the identity */
  for (int l = 0; l < layers; l++) {
    /* A: the heads' mean, plus the residual path (I), rows renormalised over the real keys */
    for (int64_t i = 0; i < T; i++) {
      double sum = 0;
      for (int64_t j = 0; j < T; j++) {
        double v = 0;
        for (int h = 0; h < heads; h++) v += maps[(((int64_t)l * heads + h) * T + i) * T + j];
        v = 0.5 * v / heads + 0.5 * (i == j);
        if (mask && !mask[j]) v = 0;
        a[i * T + j] = v, sum += v;
      }
      for (int64_t j = 0; j < T; j++) a[i * T + j] = sum > 0 ? a[i * T + j] / sum : 0;
    }
    for (int64_t i = 0; i < T; i++) /* next = A r: this layer after the ones below */
      for (int64_t j = 0; j < T; j++) {
        double v = 0;
        for (int64_t k = 0; k < T; k++) v += a[i * T + k] * r[k * T + j];
        next[i * T + j] = v;
      }
    double *t = r;
    r = next, next = t;
  }
  for (int64_t i = 0; i < T * T; i++) out[i] = (float)r[i];
  free(r), free(a), free(next);
  return DAMO_OK;
}
