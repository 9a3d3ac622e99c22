/* attribution.c - why a model decided: attributions over its input for one class.
 *
 * An explainer is the model's graph built once for up to `batch` rows with the input node's
 * gradient kept and a loss that is the chosen logit of each row: sum_b logits[b][t_b], the
 * logits being the output before its final activation (softmax, sigmoid), as Captum and
 * tf-explain target them. One forward and backward then give every row's d logit / d x;
 * every method below is a few of those runs, batched:
 *   saliency               |grad|                                   (Simonyan et al. 2014)
 *   gradient x input       grad * x
 *   SmoothGrad             mean of grad at x + N(0, (noise * range)^2)  (Smilkov et al. 2017)
 *   Integrated Gradients   (x - x') * integral of grad along x' -> x     (Sundararajan et al. 2017)
 *                          by the midpoint rule or Gauss-Legendre nodes on [0, 1]
 *   occlusion              the logit's drop when a window is set to the baseline, shared by
 *                          the window's elements, averaged over the windows that cover one
 *                          (Zeiler & Fergus 2014); forwards only
 *   Grad-CAM               relu(sum_k alpha_k A_k) over a layer's feature maps A_k, alpha_k the
 *                          spatial mean of d logit / d A_k (Selvaraju et al. 2017), resized to
 *                          the input; the layer's activation is built as its own node there, so
 *                          A and its gradient are both after it
 * The model's weights are read, never changed (the graph's params are frozen: backward makes
 * no weight gradient). */
#define _DEFAULT_SOURCE /* M_PI */
#include "explain/explainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


void damo_explainer_free(damo_explainer *e) {
  if (!e) return;
  damo_graph_free(e->g);
  free(e->target_rows);
  free(e->alpha_rows);
  free(e);
}

int64_t damo_explainer_classes(const damo_explainer *e) { return e ? e->classes : 0; }
int64_t damo_explainer_input_size(const damo_explainer *e) { return e ? e->row : 0; }

void explain_complete_report(damo_attribution_report *r, const float *attr, int64_t n) {
  r->sum = 0;
  for (int64_t i = 0; i < n; i++) r->sum += attr[i];
  const double delta = (double)r->logit - r->baseline_logit;
  r->completeness_gap = fabs(r->sum - delta) / (fabs(delta) > 1e-12 ? fabs(delta) : 1.0);
}

const char *damo_explainer_layer(const damo_explainer *e) { return e && e->layer ? e->layer_name : NULL; }

/* The model node an explainer reads: a token model's embedding of its input; else the one
 * named `name`, or the last conv2d's; -1: none. */
static int find_layer(const damo_model *m, const char *name, damo_status *st) {
  *st = DAMO_OK;
  int found = -1;
  if (damo_model_input_dtype(m) == DAMO_I32) {
    for (int i = 0; i < m->n_nodes && found < 0; i++) {
      const damo_model_node *n = &m->nodes[i];
      if (n->layer && !strcmp(n->layer->type->type, "embedding") && n->n_in == 1 && !m->nodes[n->in[0]].layer) found = i;
    }
    if (found < 0)
      *st = damo_error(DAMO_ERR_UNSUPPORTED, "explainer_new: the input is token ids, and no embedding layer reads it "
                       "(attributions over token inputs are taken at their embeddings)");
    return found;
  }
  for (int i = 0; i < m->n_nodes; i++) {
    const damo_model_node *n = &m->nodes[i];
    if (!n->layer) continue;
    if (name ? !strcmp(n->name, name) : !strcmp(n->layer->type->type, "conv2d")) found = i;
  }
  if (name && found < 0) *st = damo_error(DAMO_ERR_NOT_FOUND, "explainer_new: the model has no layer named '%s'", name);
  if (found >= 0 && m->nodes[found].shape.ndim != 3)
    *st = damo_error(DAMO_ERR_INVALID_ARG, "explainer_new: layer '%s' gives %d-D outputs; Grad-CAM reads (height, "
                     "width, channels) feature maps", m->nodes[found].name, m->nodes[found].shape.ndim);
  return found;
}

damo_status damo_explainer_new(damo_model *m, int64_t batch, damo_explainer **out) {
  return damo_explainer_new_at(m, batch, NULL, out);
}

damo_status damo_explainer_new_at(damo_model *m, int64_t batch, const char *layer, damo_explainer **out) {
  if (!m || !out) return damo_error(DAMO_ERR_INVALID_ARG, "explainer_new: NULL argument");
  *out = NULL;
  if (batch < 1) return damo_error(DAMO_ERR_INVALID_ARG, "explainer_new: batch %lld must be >= 1", (long long)batch);
  if (!m->built) return damo_error(DAMO_ERR_STATE, "explainer_new: build or load the model first");
  if (m->n_inputs != 1 || m->n_outputs > 1)
    return damo_error(DAMO_ERR_UNSUPPORTED, "explainer_new: models of one input and one output are explained (this one "
                      "has %d and %d)", m->n_inputs, m->n_outputs > 1 ? m->n_outputs : 1);
  if (m->quantization)
    return damo_error(DAMO_ERR_UNSUPPORTED, "explainer_new: an int8 model has no gradients; explain the f32 model it "
                      "was quantised from");
  damo_explainer *e = calloc(1, sizeof *e);
  if (!e) return damo_error(DAMO_ERR_NOMEM, "explainer_new: out of memory");
  /* A pruned model's sparse kernels run inference only: explaining differentiates through
   * the dense ops (same values; the model's later predictions use them too). */
  damo_model_drop_sparse(m);
  e->model = m;
  e->batch = batch;
  e->g = damo_graph_new(0);
  damo_node *xs[DAMO_MODEL_MAX_INPUTS] = {NULL}, *outs[DAMO_MODEL_MAX_OUTPUTS] = {NULL}, *pres[DAMO_MODEL_MAX_OUTPUTS] = {NULL};
  damo_status st;
  const int tap = find_layer(m, layer, &st);
  if (st != DAMO_OK) {
    damo_explainer_free(e);
    return st;
  }
  e->tokens = damo_model_input_dtype(m) == DAMO_I32;
  if (tap >= 0 && !e->tokens) m->nodes[tap].layer->separate_activation = 1; /* A and dA both after the activation */
  if (st == DAMO_OK)
    st = e->g ? damo_model_build_nodes_at(m, e->g, batch, xs, outs, pres, tap, &e->layer,
                                          e->tokens ? explainer_scale_embeddings : NULL, e)
              : DAMO_ERR_NOMEM;
  if (tap >= 0) {
    m->nodes[tap].layer->separate_activation = 0;
    snprintf(e->layer_name, sizeof e->layer_name, "%s", m->nodes[tap].name);
    for (int k = 0; k < m->nodes[tap].shape.ndim && k < 3; k++) e->layer_shape[k] = m->nodes[tap].shape.dim[k];
    if (e->layer && !e->tokens) damo_node_keep_grad(e->layer);
  }
  if (st == DAMO_OK) {
    e->x = xs[0];
    e->row = damo_node_numel(e->x) / batch;
    e->classes = damo_node_numel(pres[0]) / batch;
    const int64_t flat[2] = {0, e->classes}, shape[2] = {batch, e->classes};
    e->logits = damo_reshape(e->g, pres[0], 2, flat);
    e->target = damo_input(e->g, "explain_target", DAMO_F32, 2, shape);
    e->loss = damo_sum(e->g, damo_mul(e->g, e->logits, e->target), DAMO_ALL_AXES, 0);
    if (!e->tokens) damo_node_keep_grad(e->x);
    e->target_rows = calloc((size_t)(batch * e->classes), sizeof *e->target_rows);
    st = damo_graph_status(e->g);
    if (st == DAMO_OK && !e->target_rows) st = damo_error(DAMO_ERR_NOMEM, "explainer_new: out of memory");
    damo_node *outputs[2] = {e->logits, e->layer}; /* the layer's value must outlive the forward */
    damo_graph_freeze_params(e->g); /* d logit / d input only: the weights' gradients are not wanted */
    if (st == DAMO_OK) st = damo_graph_compile(e->g, e->loss, e->layer ? 2 : 1, outputs);
  }
  if (st != DAMO_OK) {
    damo_error_prefix(st, "explainer_new: ");
    damo_explainer_free(e);
    return st;
  }
  *out = e;
  return DAMO_OK;
}

damo_status damo_explainer_run(damo_explainer *e, const float *x, int64_t n, const int32_t *targets, float *logits,
                               float *grad) {
  if (!e || !x) return damo_error(DAMO_ERR_INVALID_ARG, "explainer_run: NULL argument");
  if (e->tokens) return damo_error(DAMO_ERR_INVALID_ARG, "explainer_run: a token model runs with damo_explainer_run_tokens");
  if (n < 1 || n > e->batch)
    return damo_error(DAMO_ERR_INVALID_ARG, "explainer_run: %lld rows, expected 1 to %lld (the explainer's batch)",
                      (long long)n, (long long)e->batch);
  if (grad && !targets) return damo_error(DAMO_ERR_INVALID_ARG, "explainer_run: gradients need a target class per row");
  damo_status st = damo_graph_set_batch(e->g, n);
  if (st == DAMO_OK) st = damo_graph_bind(e->g, e->x, x);
  if (st == DAMO_OK) st = explainer_forward(e, n, targets, grad != NULL, logits);
  if (st == DAMO_OK && grad) {
    const float *g = damo_node_grad(e->x);
    if (!g) return damo_error(DAMO_ERR_STATE, "explainer_run: the input's gradient was not kept");
    memcpy(grad, g, (size_t)(n * e->row) * sizeof *grad);
  }
  return st;
}

damo_status explainer_forward(damo_explainer *e, int64_t n, const int32_t *targets, int backward, float *logits) {
  memset(e->target_rows, 0, (size_t)(n * e->classes) * sizeof *e->target_rows);
  for (int64_t r = 0; targets && r < n; r++) {
    if (targets[r] < 0 || targets[r] >= e->classes)
      return damo_error(DAMO_ERR_INVALID_ARG, "explainer_run: target %d of row %lld is outside the model's %lld outputs",
                        targets[r], (long long)r, (long long)e->classes);
    e->target_rows[r * e->classes + targets[r]] = 1.0f;
  }
  damo_status st = damo_graph_bind(e->g, e->target, e->target_rows);
  if (st == DAMO_OK) st = damo_graph_forward(e->g, 0);
  if (st == DAMO_OK && logits) memcpy(logits, damo_node_data(e->logits), (size_t)(n * e->classes) * sizeof *logits);
  if (st == DAMO_OK && backward) st = damo_graph_backward(e->g);
  return st;
}

/* ------------------------------------------------------------------ methods */

damo_attribution_options damo_attribution_defaults(void) {
  return (damo_attribution_options){.method = DAMO_ATTR_INTEGRATED_GRADIENTS, .steps = 64, .samples = 32,
                                    .noise = 0.15f, .window = 4, .stride = 2, .seed = 0};
}

/* Nodes and weights of the n-point Gauss-Legendre rule on [0, 1]: the roots of the Legendre
 * polynomial P_n by Newton's method from Chebyshev guesses, weights 2 / ((1 - z^2) P_n'(z)^2),
 * mapped from [-1, 1]. */
void explain_gauss_legendre(int n, double *nodes, double *weights) {
  for (int i = 0; i < n; i++) {
    double z = cos(M_PI * (i + 0.75) / (n + 0.5)), dp = 1;
    for (int it = 0; it < 100; it++) {
      double p0 = 1, p1 = z; /* P_0, P_1, then the recurrence up to P_n */
      for (int k = 2; k <= n; k++) {
        const double p2 = ((2.0 * k - 1) * z * p1 - (k - 1.0) * p0) / k;
        p0 = p1, p1 = p2;
      }
      dp = n * (z * p1 - p0) / (z * z - 1); /* P_n'(z) */
      const double dz = p1 / dp;
      z -= dz;
      if (fabs(dz) < 1e-15) break;
    }
    nodes[i] = 0.5 * (1 - z);
    weights[i] = 1.0 / ((1 - z * z) * dp * dp); /* 2 / (...) on [-1, 1], halved on [0, 1] */
  }
}

/* The points (alpha) and weights of the path integral for IG. */
static damo_status path_rule(const damo_attribution_options *o, double **alpha, double **weight) {
  const int m = o->steps;
  *alpha = malloc((size_t)m * sizeof **alpha);
  *weight = malloc((size_t)m * sizeof **weight);
  if (!*alpha || !*weight) return damo_error(DAMO_ERR_NOMEM, "attribute: out of memory");
  if (o->gauss_legendre) {
    explain_gauss_legendre(m, *alpha, *weight);
  } else {
    for (int k = 0; k < m; k++) (*alpha)[k] = (k + 0.5) / m, (*weight)[k] = 1.0 / m;
  }
  return DAMO_OK;
}

/* Sum over n points of weight[k] * grad(point k) into acc (row floats), points made by make(k)
 * into the staging rows, in batches of the explainer's size. */
typedef void (*point_fn)(void *ctx, int k, float *dst);
static damo_status integrate(damo_explainer *e, int n, const double *weight, point_fn make, void *ctx, int32_t target,
                             double *acc, float *scratch, float *grads) {
  const int64_t D = e->row, B = e->batch;
  int32_t *targets = malloc((size_t)B * sizeof *targets);
  if (!targets) return damo_error(DAMO_ERR_NOMEM, "attribute: out of memory");
  for (int64_t r = 0; r < B; r++) targets[r] = target;
  damo_status st = DAMO_OK;
  for (int k0 = 0; st == DAMO_OK && k0 < n; k0 += (int)B) {
    const int rows = n - k0 < B ? n - k0 : (int)B;
    for (int r = 0; r < rows; r++) make(ctx, k0 + r, scratch + (int64_t)r * D);
    st = damo_explainer_run(e, scratch, rows, targets, NULL, grads);
    for (int r = 0; st == DAMO_OK && r < rows; r++)
      for (int64_t i = 0; i < D; i++) acc[i] += weight[k0 + r] * grads[(int64_t)r * D + i];
  }
  free(targets);
  return st;
}

typedef struct path_ctx {
  const float *x, *base;
  const double *alpha;
  int64_t D;
  damo_rng rng;
  float sigma;
} path_ctx;

static void path_point(void *ctx, int k, float *dst) { /* x' + alpha_k (x - x') */
  path_ctx *p = ctx;
  const float a = (float)p->alpha[k];
  for (int64_t i = 0; i < p->D; i++) dst[i] = p->base[i] + a * (p->x[i] - p->base[i]);
}

static void noisy_point(void *ctx, int k, float *dst) { /* x + N(0, sigma^2) */
  (void)k;
  path_ctx *p = ctx;
  for (int64_t i = 0; i < p->D; i++) dst[i] = p->x[i] + p->sigma * damo_rng_normal(&p->rng);
}

/* Occlusion: the target logit of x with each window set to the baseline, batched. */
static damo_status occlusion(damo_explainer *e, const float *x, const float *base, int32_t target, float f_x,
                             const damo_attribution_options *o, float *attr, float *scratch, float *logits) {
  const damo_model *m = e->model;
  const int64_t D = e->row, B = e->batch, C = e->classes;
  /* the picture's height, width and channels (a flat input: one row of D) */
  const int64_t H = m->in_ndim >= 2 ? m->in_shape[0] : 1, W = m->in_ndim >= 2 ? m->in_shape[1] : D,
                CH = D / (H * W);
  const int64_t win_h = o->window < H ? o->window : H, win_w = o->window < W ? o->window : W;
  const int64_t ny = (H - win_h) / o->stride + 1, nx = (W - win_w) / o->stride + 1, n = ny * nx;
  float *count = calloc((size_t)D, sizeof *count);
  if (!count) return damo_error(DAMO_ERR_NOMEM, "attribute: out of memory");
  memset(attr, 0, (size_t)D * sizeof *attr);
  damo_status st = DAMO_OK;
  for (int64_t w0 = 0; st == DAMO_OK && w0 < n; w0 += B) {
    const int64_t rows = n - w0 < B ? n - w0 : B;
    for (int64_t r = 0; r < rows; r++) {
      float *dst = scratch + r * D;
      memcpy(dst, x, (size_t)D * sizeof *dst);
      const int64_t y0 = (w0 + r) / nx * o->stride, x0 = (w0 + r) % nx * o->stride;
      for (int64_t yy = y0; yy < y0 + win_h; yy++)
        for (int64_t xx = x0; xx < x0 + win_w; xx++)
          for (int64_t c = 0; c < CH; c++) dst[(yy * W + xx) * CH + c] = base[(yy * W + xx) * CH + c];
    }
    st = damo_explainer_run(e, scratch, rows, NULL, logits, NULL);
    for (int64_t r = 0; st == DAMO_OK && r < rows; r++) {
      const float drop = f_x - logits[r * C + target];
      const int64_t y0 = (w0 + r) / nx * o->stride, x0 = (w0 + r) % nx * o->stride;
      for (int64_t yy = y0; yy < y0 + win_h; yy++)
        for (int64_t xx = x0; xx < x0 + win_w; xx++)
          for (int64_t c = 0; c < CH; c++) {
            const int64_t i = (yy * W + xx) * CH + c;
            attr[i] += drop / (float)(win_h * win_w * CH);
            count[i] += 1;
          }
    }
  }
  for (int64_t i = 0; i < D; i++) attr[i] = count[i] > 0 ? attr[i] / count[i] : 0.0f;
  free(count);
  return st;
}

/* Grad-CAM of one example into attr (the input's shape). */
static damo_status grad_cam(damo_explainer *e, const float *x, int32_t target, float *attr) {
  const damo_model *m = e->model;
  if (!e->layer)
    return damo_error(DAMO_ERR_INVALID_ARG, "attribute: Grad-CAM reads a layer's feature maps, and this model has no "
                      "conv2d layer (or the explainer was made without one)");
  if (!(m->in_ndim == 2 || m->in_ndim == 3))
    return damo_error(DAMO_ERR_INVALID_ARG, "attribute: Grad-CAM maps onto a picture; the input is %d-D", m->in_ndim);
  damo_status st = damo_explainer_run(e, x, 1, &target, NULL, NULL);
  if (st == DAMO_OK) st = damo_graph_backward(e->g);
  const float *a = damo_node_data(e->layer), *g = st == DAMO_OK ? damo_node_grad(e->layer) : NULL;
  if (st == DAMO_OK && !g) st = damo_error(DAMO_ERR_STATE, "attribute: the layer's gradient was not kept");
  if (st != DAMO_OK) return st;
  const int64_t h = e->layer_shape[0], w = e->layer_shape[1], k = e->layer_shape[2];
  const int64_t H = m->in_shape[0], W = m->in_shape[1], CH = m->in_ndim == 3 ? m->in_shape[2] : 1;
  const int64_t cam_shape[3] = {h, w, 1};
  damo_tensor *cam = damo_tensor_new(DAMO_F32, 3, cam_shape), *big = NULL;
  if (!cam) return damo_error(DAMO_ERR_NOMEM, "attribute: out of memory");
  float *c = damo_tensor_f32(cam);
  for (int64_t ch = 0; ch < k; ch++) {
    double alpha = 0;
    for (int64_t p = 0; p < h * w; p++) alpha += g[p * k + ch];
    alpha /= (double)(h * w);
    for (int64_t p = 0; p < h * w; p++) c[p] += (float)(alpha * a[p * k + ch]);
  }
  for (int64_t p = 0; p < h * w; p++) c[p] = c[p] > 0 ? c[p] : 0;
  st = damo_image_resize(cam, (int)H, (int)W, &big);
  for (int64_t p = 0; st == DAMO_OK && p < H * W; p++)
    for (int64_t ch = 0; ch < CH; ch++) attr[p * CH + ch] = damo_tensor_f32(big)[p];
  damo_tensor_free(cam);
  damo_tensor_free(big);
  return st;
}

static const char *const method_names[] = {"saliency", "gradient-x-input", "smoothgrad", "integrated-gradients",
                                           "occlusion", "grad-cam"};

const char *damo_attribution_method_name(damo_attribution_method m) {
  return m >= 0 && m <= DAMO_ATTR_GRAD_CAM ? method_names[m] : "?";
}

damo_status damo_attribution_method_parse(const char *name, damo_attribution_method *out) {
  for (int i = 0; i <= DAMO_ATTR_GRAD_CAM; i++)
    if (name && !strcmp(name, method_names[i])) {
      *out = (damo_attribution_method)i;
      return DAMO_OK;
    }
  return damo_error(DAMO_ERR_INVALID_ARG, "unknown attribution method '%s' (saliency, gradient-x-input, smoothgrad, "
                    "integrated-gradients, occlusion, grad-cam)", name ? name : "(null)");
}

damo_status damo_attribute(damo_explainer *e, const float *x, int32_t target, const damo_attribution_options *opt,
                           float *attr, damo_attribution_report *rep) {
  if (!e || !x || !attr) return damo_error(DAMO_ERR_INVALID_ARG, "attribute: NULL argument");
  if (e->tokens) return damo_error(DAMO_ERR_INVALID_ARG, "attribute: a token model is explained by damo_attribute_tokens");
  damo_attribution_options o = opt ? *opt : damo_attribution_defaults();
  if (o.method < 0 || o.method > DAMO_ATTR_GRAD_CAM)
    return damo_error(DAMO_ERR_INVALID_ARG, "attribute: unknown method %d", (int)o.method);
  if ((o.method == DAMO_ATTR_INTEGRATED_GRADIENTS && (o.steps < 1 || o.steps > 4096)) ||
      (o.method == DAMO_ATTR_SMOOTHGRAD && (o.samples < 1 || o.samples > 4096 || !(o.noise >= 0))) ||
      (o.method == DAMO_ATTR_OCCLUSION && (o.window < 1 || o.stride < 1)))
    return damo_error(DAMO_ERR_INVALID_ARG, "attribute: %s needs steps/samples in [1, 4096], noise >= 0, window and "
                      "stride >= 1", method_names[o.method]);
  const int64_t D = e->row, C = e->classes, B = e->batch;
  for (int64_t i = 0; i < D; i++)
    if (!isfinite(x[i])) return damo_error(DAMO_ERR_INVALID_ARG, "attribute: input value %lld is not finite", (long long)i);
  float *scratch = malloc((size_t)(B * D) * sizeof *scratch), *grads = malloc((size_t)(B * D) * sizeof *grads);
  float *logits = malloc((size_t)(B * C) * sizeof *logits), *zeros = calloc((size_t)D, sizeof *zeros);
  double *acc = calloc((size_t)D, sizeof *acc), *alpha = NULL, *weight = NULL;
  damo_status st = scratch && grads && logits && zeros && acc ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "attribute: out of memory");
  const float *base = o.baseline ? o.baseline : zeros;
  damo_attribution_report r = {0};
  /* f(x), and the target: the predicted class for target < 0 */
  if (st == DAMO_OK) st = damo_explainer_run(e, x, 1, NULL, logits, NULL);
  if (st == DAMO_OK) {
    r.target = target;
    if (target < 0)
      for (int64_t c = 0; c < C; c++) r.target = (r.target < 0 || logits[c] > logits[r.target]) ? (int32_t)c : r.target;
    if (r.target >= C) st = damo_error(DAMO_ERR_INVALID_ARG, "attribute: target %d is outside the model's %lld outputs",
                                       r.target, (long long)C);
  }
  if (st == DAMO_OK) {
    r.logit = logits[r.target];
    st = damo_explainer_run(e, base, 1, NULL, logits, NULL);
    r.baseline_logit = st == DAMO_OK ? logits[r.target] : 0;
  }
  path_ctx p = {.x = x, .base = base, .D = D};
  if (st == DAMO_OK) switch (o.method) {
    case DAMO_ATTR_SALIENCY:
    case DAMO_ATTR_GRADIENT_X_INPUT:
      st = damo_explainer_run(e, x, 1, &r.target, NULL, grads);
      for (int64_t i = 0; st == DAMO_OK && i < D; i++)
        attr[i] = o.method == DAMO_ATTR_SALIENCY ? fabsf(grads[i]) : grads[i] * x[i];
      break;
    case DAMO_ATTR_SMOOTHGRAD: {
      float lo = x[0], hi = x[0];
      for (int64_t i = 1; i < D; i++) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
      p.sigma = o.noise * (hi - lo);
      damo_rng_seed(&p.rng, o.seed);
      weight = malloc((size_t)o.samples * sizeof *weight);
      if (!weight) {
        st = damo_error(DAMO_ERR_NOMEM, "attribute: out of memory");
        break;
      }
      for (int k = 0; k < o.samples; k++) weight[k] = 1.0 / o.samples;
      st = integrate(e, o.samples, weight, noisy_point, &p, r.target, acc, scratch, grads);
      for (int64_t i = 0; st == DAMO_OK && i < D; i++) attr[i] = (float)acc[i];
      break;
    }
    case DAMO_ATTR_INTEGRATED_GRADIENTS:
      st = path_rule(&o, &alpha, &weight);
      p.alpha = alpha;
      if (st == DAMO_OK) st = integrate(e, o.steps, weight, path_point, &p, r.target, acc, scratch, grads);
      for (int64_t i = 0; st == DAMO_OK && i < D; i++) attr[i] = (float)(((double)x[i] - base[i]) * acc[i]);
      break;
    case DAMO_ATTR_OCCLUSION:
      st = occlusion(e, x, base, r.target, r.logit, &o, attr, scratch, logits);
      break;
    case DAMO_ATTR_GRAD_CAM:
      st = grad_cam(e, x, r.target, attr);
      break;
    }
  if (st == DAMO_OK) explain_complete_report(&r, attr, D);
  if (st == DAMO_OK && rep) *rep = r;
  free(scratch), free(grads), free(logits), free(zeros), free(acc), free(alpha), free(weight);
  return st;
}
