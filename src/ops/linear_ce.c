/* linear_ce.c - a language-model head fused with its loss: the mean over rows of
 * -log softmax(x W^T + b)[label], x (N, C), W (V, C) (GPT-2's and BERT's tied token
 * embedding), optional b (V) (BERT's masked-LM bias), labels (N). A negative label (PyTorch's
 * ignore_index, -100) leaves its row out of the loss and of the mean, as BERT's masked-LM
 * loss needs for the positions it does not predict.
 *
 * The logits (N, V) are never kept: with a 50257-word vocabulary they are the largest tensor
 * of a small GPT by far, and the unfused graph held three of that size (logits, softmax,
 * their gradient). Rows are taken in chunks of at most LOGIT_CHUNK_FLOATS logits; each chunk's
 * logits are computed, turned into the loss and, when a backward will follow, into their
 * own gradient (softmax - onehot) / N in place, which is immediately multiplied out into the
 * gradients of x (P W) and W (P^T x). Those two "unit" gradients (for an upstream gradient
 * of 1) live in the op's buffer until backward scales them by the real upstream gradient.
 * That is the same three GEMMs as the unfused head, no recomputation, and memory of one
 * chunk plus the size of x and W. A forward run without training (validation) does only the
 * first GEMM; a backward after it computes the gradients then.
 *
 * DP-SGD (graph/example_grads.c): the op is a loss that also holds a weight, so it does both
 * of the per-example jobs itself. A norm pass measures each example's (each sequence's)
 * gradient of W and b: with d_t the rows of softmax - onehot and h_t those of x, the W part is
 * sum_t d_t h_t^T, whose squared norm is sum_{t,s} (d_t . d_s)(h_t . h_s) from two T x T Gram
 * matrices when T is small against C, else the V x C matrix itself, summed chunk by chunk.
 * A weighted backward scales the rows of the logit gradient by their example's weight before
 * the GEMM into W, and leaves x's rows to the graph, which weights a loss's inputs. */
#include "ops/ops.h"
#include "kernels/cpu/vmath.h"

#include <math.h>

/* Logits held at once: 16M floats (64 MB), 333 rows of GPT-2's vocabulary. */
#define LOGIT_CHUNK_FLOATS (1 << 24)
/* The buffer starts with this many floats of bookkeeping (kept a cache line). */
#define HEADER_FLOATS 16

typedef struct linear_ce_dims {
  int64_t N, C, V, chunk_rows;
} linear_ce_dims;

static linear_ce_dims dims_of(const damo_node *n) {
  linear_ce_dims d = {n->in[0]->shape[0], n->in[0]->shape[1], n->in[1]->shape[0], 0};
  d.chunk_rows = n->iparam[0] > 0 ? n->iparam[0] : LOGIT_CHUNK_FLOATS / (d.V > 0 ? d.V : 1);
  if (d.chunk_rows < 1) d.chunk_rows = 1;
  if (d.chunk_rows > d.N) d.chunk_rows = d.N;
  return d;
}

/* What the unit gradients in the buffer hold for the last forward (header[0]): nothing, all
 * three, or x's alone (a DP-SGD norm pass made it; W's and b's were per example, or weighted). */
#define UNITS_NONE 0.0f
#define UNITS_ALL 1.0f
#define UNITS_DX 2.0f

/* Buffer layout: header (header[0]: UNITS_*), the unit gradient of x (N, C), of W (V, C), of b
 * (V), one chunk of logits, then W packed once per pass for the GEMM's two uses of it, as W^T
 * (the logits) and as W (x's gradient): packing it per chunk and per product streamed the
 * table from memory eight times a W4 step. The packed forms are sized for the precision in
 * force when the graph is compiled (and kept only where smaller than W: bf16 pairs); under
 * another, or without them, the GEMMs pack W per product as usual. */
static float *unit_dx(const damo_node *n) { return (float *)n->aux + HEADER_FLOATS; }
static float *unit_dw(const damo_node *n, linear_ce_dims d) { return unit_dx(n) + d.N * d.C; }
static float *unit_db(const damo_node *n, linear_ce_dims d) { return unit_dw(n, d) + d.V * d.C; }
static float *chunk_logits(const damo_node *n, linear_ce_dims d) { return unit_db(n, d) + d.V; }
static const damo_node *bias_of(const damo_node *n) { return n->n_in > 3 ? n->in[3] : NULL; }
/* Bytes of the packed form of W^T (trans) or W for the precision in force; 0 where it is not
 * kept: where it is no smaller than W itself (f32), reading it back from memory for each chunk
 * cost what packing W per product did, plus writing it (W4 f32 steps 5-10% slower); bf16
 * pairs halve it. */
static size_t packed_bytes_now(linear_ce_dims d, int trans) {
  const size_t bytes = damo_gemm_packed_b_bytes(trans ? d.C : d.V, trans ? d.V : d.C);
  return bytes < (size_t)(d.V * d.C) * sizeof(float) ? (bytes + 63) / 64 * 64 : 0;
}
/* What the buffer holds for them, fixed when the shapes were inferred (iparam 1 and 2, in
 * 64-byte units): the precision may change between compile and run. */
static size_t packed_bytes(const damo_node *n, int trans) { return (size_t)n->iparam[trans ? 1 : 2] * 64; }
/* The packed form of W^T (trans) or W, 64-byte aligned. */
static void *packed_storage(const damo_node *n, linear_ce_dims d, int trans) {
  const uintptr_t end = (uintptr_t)(chunk_logits(n, d) + d.chunk_rows * d.V);
  char *first = (char *)((end + 63) & ~(uintptr_t)63);
  return trans ? first : first + packed_bytes(n, 1);
}

static damo_status linear_ce_infer(damo_node *n) {
  const damo_node *x = n->in[0], *w = n->in[1], *y = n->in[2];
  if (x->dtype != DAMO_F32 || x->ndim != 2) return damo_shape_error(n, "x must be f32 of shape (rows, channels)", x, w);
  if (w->dtype != DAMO_F32 || w->ndim != 2 || w->shape[1] != x->shape[1])
    return damo_shape_error(n, "the weight must be f32 (vocabulary, channels) with x's channels", x, w);
  if (y->dtype != DAMO_I32 || y->ndim != 1 || y->shape[0] != x->shape[0])
    return damo_shape_error(n, "labels must be i32 of shape (rows,) with x's rows", x, y);
  const damo_node *b = bias_of(n);
  if (b && (b->dtype != DAMO_F32 || b->ndim != 1 || b->shape[0] != w->shape[0]))
    return damo_shape_error(n, "the bias must be f32 (vocabulary,)", w, b);
  n->ndim = 1;
  n->shape[0] = 1;
  n->batched = 0;
  linear_ce_dims d = dims_of(n);
  const size_t packed_t = packed_bytes_now(d, 1), packed_n = packed_bytes_now(d, 0);
  if (packed_t / 64 > INT32_MAX || packed_n / 64 > INT32_MAX) return damo_shape_error(n, "the weight is too large", x, w);
  n->iparam[1] = (int)(packed_t / 64);
  n->iparam[2] = (int)(packed_n / 64);
  n->aux_bytes = (size_t)(HEADER_FLOATS + d.N * d.C + d.V * d.C + d.V + d.chunk_rows * d.V) * sizeof(float) + 64 +
                 packed_t + packed_n;
  return DAMO_OK;
}

/* Loss of rows [r0, r0 + rows) from their logits (plus bias, if any); with want_grad, turns
 * each logits row into d(mean loss)/d(logits) in place (0 for an ignored row). Returns the
 * rows' summed loss; n_counted is the number of rows the mean is over.
 *
 * The max and the sum of exponentials are kept in LANES running partials so both loops
 * vectorise (a single running float sum is a chain of dependent scalar adds, and was most of
 * this function's time); the partials are combined in a fixed order, so a row's loss does not
 * depend on the thread count. With want_grad the exponentials are kept in the row and scaled,
 * instead of being computed a second time. */
#define LANES 16
DAMO_MULTIVERSION_FUSED static double chunk_loss(float *logits, const float *bias, const int32_t *labels, int64_t rows,
                                                 int64_t V, int64_t n_counted, int want_grad) {
  double total = 0.0;
  const float inv_n = 1.0f / (float)(n_counted > 0 ? n_counted : 1);
  const int64_t whole = V / LANES * LANES;
#pragma omp parallel for schedule(static) reduction(+ : total) if (rows * V > DAMO_PARALLEL_MIN) num_threads(damo_threads())
  for (int64_t r = 0; r < rows; r++) {
    float *row = logits + r * V;
    if (labels[r] < 0) {
      if (want_grad) memset(row, 0, (size_t)V * sizeof *row);
      continue;
    }
    if (bias)
      for (int64_t v = 0; v < V; v++) row[v] += bias[v];
    float part[LANES];
    for (int l = 0; l < LANES; l++) part[l] = row[0];
    for (int64_t v = 0; v < whole; v += LANES)
      for (int l = 0; l < LANES; l++) part[l] = row[v + l] > part[l] ? row[v + l] : part[l];
    float mx = part[0];
    for (int l = 1; l < LANES; l++) mx = part[l] > mx ? part[l] : mx;
    for (int64_t v = whole; v < V; v++) mx = row[v] > mx ? row[v] : mx;
    const float label_logit = row[labels[r]];
    for (int l = 0; l < LANES; l++) part[l] = 0.0f;
    if (want_grad) {
      for (int64_t v = 0; v < whole; v += LANES)
        for (int l = 0; l < LANES; l++) {
          row[v + l] = damo_expf(row[v + l] - mx);
          part[l] += row[v + l];
        }
    } else {
      for (int64_t v = 0; v < whole; v += LANES)
        for (int l = 0; l < LANES; l++) part[l] += damo_expf(row[v + l] - mx);
    }
    float sum = 0.0f;
    for (int l = 0; l < LANES; l++) sum += part[l];
    for (int64_t v = whole; v < V; v++) {
      const float e = damo_expf(row[v] - mx);
      if (want_grad) row[v] = e;
      sum += e;
    }
    total += (double)(mx + logf(sum) - label_logit);
    if (!want_grad) continue;
    const float scale = inv_n / sum;
    for (int64_t v = 0; v < V; v++) row[v] *= scale;
    row[labels[r]] -= inv_n;
  }
  return total;
}
#undef LANES

/* Rows whose label is not ignored. */
static int64_t counted_rows(const damo_node *n) {
  const int32_t *labels = n->in[2]->value;
  int64_t count = 0;
  for (int64_t r = 0; r < n->in[0]->shape[0]; r++) count += labels[r] >= 0;
  return count;
}

/* The chunked pass: the summed loss, and with want_grad the unit gradients of x, W and b.
 * example_weights (NULL: none) scale the rows of each example (rows / examples of them) in
 * the gradients of W and b only; dx_ready: x's unit gradient is there already (not redone). */
static double run_chunks(damo_node *n, int want_grad, const float *example_weights, int64_t examples, int dx_ready) {
  const linear_ce_dims d = dims_of(n);
  const float *x = damo_f32(n->in[0]), *w = damo_f32(n->in[1]);
  const float *bias = bias_of(n) ? damo_f32(bias_of(n)) : NULL;
  const int32_t *labels = n->in[2]->value;
  const int64_t counted = counted_rows(n);
  float *logits = chunk_logits(n, d), *db = unit_db(n, d);
  double total = 0.0;
  if (want_grad && bias) memset(db, 0, (size_t)d.V * sizeof *db);
  damo_gemm_packed_b w_t, w_n;
  damo_gemm_pack_b(&w_t, 1, d.C, d.V, w, d.C, packed_storage(n, d, 1), packed_bytes(n, 1)); /* too few: not packed */
  if (want_grad && !dx_ready) damo_gemm_pack_b(&w_n, 0, d.V, d.C, w, d.C, packed_storage(n, d, 0), packed_bytes(n, 0));
  for (int64_t r0 = 0; r0 < d.N; r0 += d.chunk_rows) {
    const int64_t rows = d.N - r0 < d.chunk_rows ? d.N - r0 : d.chunk_rows;
    const float *xc = x + r0 * d.C;
    damo_gemm_packed(0, rows, 1.0f, xc, d.C, &w_t, 0.0f, logits, d.V);
    total += chunk_loss(logits, bias, labels + r0, rows, d.V, counted, want_grad);
    if (!want_grad) continue;
    if (!dx_ready) damo_gemm_packed(0, rows, 1.0f, logits, d.V, &w_n, 0.0f, unit_dx(n) + r0 * d.C, d.C);
    if (example_weights) {
      const int64_t per = d.N / examples;
      for (int64_t r = 0; r < rows; r++) {
        const float wr = example_weights[(r0 + r) / per];
        for (int64_t v = 0; v < d.V; v++) logits[r * d.V + v] *= wr;
      }
    }
    if (n->in[1]->in_backward) /* not for a frozen table */
      damo_gemm(1, 0, d.V, d.C, rows, 1.0f, logits, d.V, xc, d.C, r0 == 0 ? 0.0f : 1.0f, unit_dw(n, d), d.C);
    if (bias) /* rows in order: the same sums for any thread count */
      for (int64_t r = 0; r < rows; r++)
        for (int64_t v = 0; v < d.V; v++) db[v] += logits[r * d.V + v];
  }
  return total;
}

static int wants_grad(const damo_node *n) {
  return n->in[0]->in_backward || n->in[1]->in_backward || (bias_of(n) && bias_of(n)->in_backward);
}

static damo_status linear_ce_forward(damo_graph *g, damo_node *n) {
  const linear_ce_dims d = dims_of(n);
  const int32_t *labels = n->in[2]->value;
  for (int64_t r = 0; r < d.N; r++)
    if (labels[r] >= d.V)
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: label %d at row %lld is outside the vocabulary [0, %lld)",
                        n->name[0] ? n->name : "linear_cross_entropy", labels[r], (long long)r, (long long)d.V);
  /* a graph kept for DP-SGD's two backward passes: they compute what they need */
  const int want_grad = g->training && wants_grad(n) && !g->keep_forward;
  const int64_t counted = counted_rows(n);
  const double total = run_chunks(n, want_grad, NULL, 1, 0);
  damo_f32(n)[0] = counted > 0 ? (float)(total / (double)counted) : 0.0f;
  ((float *)n->aux)[0] = want_grad ? UNITS_ALL : UNITS_NONE;
  return DAMO_OK;
}

static void add_scaled(float *dst, const float *src, int64_t count, float scale) {
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads(count, DAMO_NS_MAP))
  for (int64_t i = 0; i < count; i++) dst[i] += scale * src[i];
}

/* |sum_t d_t h_t^T|^2 = sum_{t,s} (d_t . d_s)(h_t . h_s) for one example's T rows, whose
 * logit gradients d are in `logits`; *bias_sq gets |sum_t d_t|^2 = the sum of d d^T. */
static double gram_norm(const float *d_rows, const float *x_rows, int64_t T, int64_t V, int64_t C, float *scratch,
                        double *bias_sq) {
  float *dd = scratch, *hh = scratch + T * T;
  damo_gemm(0, 1, T, T, V, 1.0f, d_rows, V, d_rows, V, 0.0f, dd, T);
  damo_gemm(0, 1, T, T, C, 1.0f, x_rows, C, x_rows, C, 0.0f, hh, T);
  double sq = 0, sb = 0;
  for (int64_t i = 0; i < T * T; i++) sq += (double)dd[i] * hh[i], sb += dd[i];
  *bias_sq = sb;
  return sq;
}

/* DP-SGD's norm pass: each example's squared gradient norms of W (and b) into the graph's
 * per-example accumulators, and x's gradient (unweighted) for the layers below. */
static void linear_ce_example_norms(damo_graph *g, damo_node *n, linear_ce_dims d, float upstream) {
  const int64_t B = g->batch, T = d.N / (B > 0 ? B : 1);
  const float *x = damo_f32(n->in[0]), *w = damo_f32(n->in[1]);
  const damo_node *bn = bias_of(n);
  const float *bias = bn ? damo_f32(bn) : NULL;
  const int32_t *labels = n->in[2]->value;
  const int64_t counted = counted_rows(n);
  float *logits = chunk_logits(n, d);
  /* whole examples in one chunk and T^2 (V + C) < T V C: Gram matrices, else the gradient itself */
  const int gram = T <= d.chunk_rows && T * (d.V + d.C) < d.V * d.C;
  float *scratch = damo_graph_scratch(g, (size_t)(gram ? 2 * T * T : d.V * d.C + d.V) * sizeof(float));
  if (!scratch) return;
  const double u2 = (double)upstream * upstream;
  /* a frozen table (and bias): only x's gradient is wanted, no norms */
  const int want_w = damo_wants_weight_norms(g, n->in[1]), want_b = bn && damo_wants_weight_norms(g, bn);
  for (int64_t i = 0; i < B; i++) {
    double sq_w = 0, sq_b = 0;
    float *gw = scratch, *gb = scratch + d.V * d.C;
    if (!gram && (want_w || want_b)) memset(scratch, 0, (size_t)(d.V * d.C + d.V) * sizeof(float));
    for (int64_t r0 = i * T; r0 < (i + 1) * T; r0 += d.chunk_rows) {
      const int64_t rows = (i + 1) * T - r0 < d.chunk_rows ? (i + 1) * T - r0 : d.chunk_rows;
      const float *xc = x + r0 * d.C;
      damo_gemm(0, 1, rows, d.V, d.C, 1.0f, xc, d.C, w, d.C, 0.0f, logits, d.V);
      chunk_loss(logits, bias, labels + r0, rows, d.V, counted, 1);
      if (n->in[0]->in_backward)
        damo_gemm(0, 0, rows, d.C, d.V, 1.0f, logits, d.V, w, d.C, 0.0f, unit_dx(n) + r0 * d.C, d.C);
      if (!want_w && !want_b) continue;
      if (gram) {
        sq_w = gram_norm(logits, xc, rows, d.V, d.C, scratch, &sq_b);
        continue;
      }
      damo_gemm(1, 0, d.V, d.C, rows, 1.0f, logits, d.V, xc, d.C, 1.0f, gw, d.C);
      for (int64_t r = 0; bias && r < rows; r++)
        for (int64_t v = 0; v < d.V; v++) gb[v] += logits[r * d.V + v];
    }
    if (!gram && (want_w || want_b)) {
      sq_w = damo_sum_squares(gw, d.V * d.C);
      sq_b = bias ? damo_sum_squares(gb, d.V) : 0;
    }
    if (want_w) damo_example_norm_add(g, n->in[1], i, sq_w * u2);
    if (want_b) damo_example_norm_add(g, bn, i, sq_b * u2);
  }
  ((float *)n->aux)[0] = n->in[0]->in_backward ? UNITS_DX : UNITS_NONE; /* W's and b's were per example */
  if (n->in[0]->in_backward) add_scaled(damo_node_grad_acc(n->in[0]), unit_dx(n), d.N * d.C, upstream);
}

static void linear_ce_backward(damo_graph *g, damo_node *n) {
  if (!wants_grad(n)) return;
  const linear_ce_dims d = dims_of(n);
  const float upstream = n->grad[0];
  if (g->norm_pass) {
    linear_ce_example_norms(g, n, d, upstream);
    return;
  }
  if (g->example_weights) { /* W's and b's gradients weighted here, x's rows by the graph */
    run_chunks(n, 1, g->example_weights, g->batch, ((float *)n->aux)[0] == UNITS_DX); /* x's from the norm pass */
    ((float *)n->aux)[0] = UNITS_DX;
  } else if (((float *)n->aux)[0] != UNITS_ALL) { /* forward ran without training (or for DP-SGD) */
    run_chunks(n, 1, NULL, 1, 0);
    ((float *)n->aux)[0] = UNITS_ALL;
  }
  if (n->in[0]->in_backward) add_scaled(damo_node_grad_acc(n->in[0]), unit_dx(n), d.N * d.C, upstream);
  if (n->in[1]->in_backward) add_scaled(damo_node_grad_acc(n->in[1]), unit_dw(n, d), d.V * d.C, upstream);
  if (bias_of(n) && bias_of(n)->in_backward) add_scaled(damo_node_grad_acc(n->in[3]), unit_db(n, d), d.V, upstream);
}

const damo_op_def damo_op_def_linear_ce = {"linear_cross_entropy", 3, linear_ce_infer, linear_ce_forward,
                                           linear_ce_backward, DAMO_OPF_BWD_INPUTS | DAMO_OPF_EXAMPLE_NORMS | DAMO_OPF_LOSS};

damo_node *damo_linear_cross_entropy_chunked(damo_graph *g, damo_node *x, damo_node *weight, damo_node *bias,
                                             damo_node *labels, int chunk_rows) {
  damo_node *in[4] = {x, weight, labels, bias};
  int iparam[1] = {chunk_rows};
  return damo_graph_add_node(g, DAMO_OP_LINEAR_CE, bias ? 4 : 3, in, iparam, 1, NULL, 0);
}

damo_node *damo_linear_cross_entropy(damo_graph *g, damo_node *x, damo_node *weight, damo_node *bias,
                                     damo_node *labels) {
  return damo_linear_cross_entropy_chunked(g, x, weight, bias, labels, 0);
}
