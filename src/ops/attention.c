/* attention.c - fused multi-head scaled dot-product attention with a flash-attention style
 * backward: memory linear in the sequence length, no (T x T) matrix kept per head.
 *
 * Inputs q and k (B, Tq, C) and (B, Tk, C), v (B, Tk, Cv), optional key mask (B, Tk); the
 * output is (B, Tq, Cv). Head h owns channels [h D, (h+1) D) of q and k (D = C / H) and
 * [h Dv, (h+1) Dv) of v and the output (Dv = Cv / H: Keras' value_dim), read in place with
 * leading dimensions C and Cv, so no split/merge copies are made. Per head, with s = 1 / sqrt(D):
 *   S = s Q K^T,   P = softmax_row(S over the keys the row may see),   O = P V
 * A row sees key j when the mask keeps j (mask != 0) and, if causal, j <= i. A row that sees
 * no key has P = 0: output 0 and no gradient (no NaN from an empty softmax).
 *
 * Forward works on blocks of QB query rows: one GEMM gives the block's scores against every
 * key it may see (a causal block stops at its last row), each row is turned in place into
 * probabilities, and one GEMM gives O. Only the log-sum-exp L_i = m_i + log sum_j e^(S_ij - m_i)
 * of each (batch, head, query) row is kept in aux (a fully masked row stores +inf), so that
 * P_ij = exp(S_ij - L_i) can be recomputed exactly. The scratch for one block (QB x Tk
 * scores and their gradient) is per thread, also in aux.
 *
 * Backward, per block, with dO the output gradient (the softmax's Jacobian applied row-wise):
 *   recompute S and P = exp(S - L)
 *   dP = dO V^T
 *   dS = P (dP - rowsum(P dP))     (rowsum(P dP) = rowsum(dO O), taken here from P and dP)
 *   dQ += s dS K,   dK += s dS^T Q,   dV += P^T dO
 * dK and dV sum over every query block of a head, so backward threads over (batch, head)
 * pairs (each owns its slices of dQ, dK, dV even when q, k, v are one node); forward threads
 * over (batch, head, query block). Every product is damo_gemm_at, which runs on one thread
 * inside these parallel regions, at the node's precision (damo_attention_set_precision) or
 * else the process's.
 *
 * Dropout on the probabilities (BERT's attention_probs_dropout_prob), in training forwards:
 * O = (P * M) V with M_ij = keep_ij / (1 - rate). The keep bits are never stored: each is a
 * hash of a per-forward seed (drawn from the graph's generator, kept in aux) and the
 * element's (batch, head, query, key) index, so backward regenerates the same mask as
 * flash attention does, whatever the threads. Backward then takes dV from P * M and
 * dP = M * (dO V^T); the softmax's backward is unchanged (rowsum(P dP) is still
 * rowsum(dO O)). */
#include "ops/ops.h"
#include "kernels/cpu/vmath.h"

#include <float.h>
#include <math.h>
#include <omp.h>

/* ATT_PRECISION: 0 the process-wide matmul precision, else 1 + a damo_matmul_precision */
enum { ATT_HEADS = 0, ATT_CAUSAL = 1, ATT_SLOTS = 2, ATT_PRECISION = 3 };
enum { ATT_DROPOUT = 0 }; /* fparam */
enum { ATT_HEADER_FLOATS = 16 }; /* aux starts with the forward's dropout seed (64 bytes) */
/* Query rows per block: 128 covers BERT's usual 128 tokens in one block, so each head's K and
 * V are packed once (a second block packs them again); a causal block computes scores up to
 * its last row, so a smaller one wastes less of the masked triangle. */
#define ATT_QUERY_BLOCK 128
#define ATT_CAUSAL_QUERY_BLOCK 64
#define ATT_MAX_SLOTS 256

typedef struct att_dims {
  int64_t B, Tq, Tk, C, H, D, Cv, Dv;
  int64_t qb, n_qblocks; /* query rows per block, blocks per head */
  int causal;
  damo_matmul_precision precision; /* of both products */
  float scale;
  uint32_t drop_threshold; /* a key is dropped when its hash's high 32 bits fall below this */
  float keep_scale;        /* 1 / (1 - rate); 0 when no dropout acts in this pass */
} att_dims;

static att_dims dims_of(const damo_node *n) {
  const damo_node *q = n->in[0], *k = n->in[1], *v = n->in[2];
  att_dims d;
  d.B = q->shape[0];
  d.Tq = q->shape[1];
  d.Tk = k->shape[1];
  d.C = q->shape[2];
  d.H = n->iparam[ATT_HEADS];
  d.D = d.C / d.H;
  d.Cv = v->shape[2];
  d.Dv = d.Cv / d.H;
  const int64_t block = n->iparam[ATT_CAUSAL] ? ATT_CAUSAL_QUERY_BLOCK : ATT_QUERY_BLOCK;
  d.qb = d.Tq < block ? d.Tq : block;
  d.n_qblocks = (d.Tq + d.qb - 1) / d.qb;
  d.causal = n->iparam[ATT_CAUSAL];
  d.precision = n->iparam[ATT_PRECISION] ? (damo_matmul_precision)(n->iparam[ATT_PRECISION] - 1)
                                         : damo_get_matmul_precision();
  d.scale = (float)(1.0 / sqrt((double)d.D));
  d.drop_threshold = 0;
  d.keep_scale = 0.0f;
  return d;
}

/* Turns dropout on for this pass when training with a rate > 0. */
static void dims_dropout(att_dims *d, const damo_graph *g, const damo_node *n) {
  const float rate = n->fparam[ATT_DROPOUT];
  if (!g->training || !(rate > 0.0f)) return;
  d->drop_threshold = (uint32_t)((double)rate * 4294967296.0);
  d->keep_scale = 1.0f / (1.0f - rate);
}

/* aux: L (B H Tq floats, rounded up to 16 so the scratch starts 64-byte aligned), then per
 * thread slot a QB x Tk block of scores/probabilities and one of their gradients. */
static int64_t lse_floats(const att_dims *d) { return ATT_HEADER_FLOATS + (d->B * d->H * d->Tq + 15) / 16 * 16; }
/* scores/probabilities, their gradient, and (dropout) the dropped probabilities */
static int64_t slot_floats(const att_dims *d) { return 3 * d->qb * d->Tk; }

static damo_status attention_infer(damo_node *n) {
  const damo_node *q = n->in[0], *k = n->in[1], *v = n->in[2];
  for (int i = 0; i < 3; i++)
    if (n->in[i]->dtype != DAMO_F32 || n->in[i]->ndim != 3)
      return damo_shape_error(n, "q, k and v must be f32 (batch, time, channels)", n->in[i], NULL);
  if (k->shape[0] != q->shape[0] || k->shape[2] != q->shape[2])
    return damo_shape_error(n, "k must be (batch, keys, channels) with q's batch and channels", q, k);
  if (v->shape[0] != k->shape[0] || v->shape[1] != k->shape[1])
    return damo_shape_error(n, "v must be (batch, keys, value channels) with k's batch and keys", k, v);
  int64_t H = n->iparam[ATT_HEADS];
  if (H < 1 || q->shape[2] % H != 0 || v->shape[2] % H != 0)
    return damo_error(DAMO_ERR_SHAPE, "attention: %lld query and %lld value channels do not split into %lld heads",
                      (long long)q->shape[2], (long long)v->shape[2], (long long)H);
  if (n->iparam[ATT_CAUSAL] && q->shape[1] != k->shape[1])
    return damo_shape_error(n, "a causal mask needs as many queries as keys", q, k);
  if (n->n_in > 3) {
    const damo_node *m = n->in[3];
    if (m->dtype != DAMO_F32 || m->ndim != 2 || m->shape[0] != k->shape[0] || m->shape[1] != k->shape[1])
      return damo_shape_error(n, "the key mask must be f32 (batch, keys)", k, m);
  }
  n->dtype = DAMO_F32;
  n->ndim = 3;
  memcpy(n->shape, q->shape, sizeof n->shape);
  n->shape[2] = v->shape[2];
  att_dims d = dims_of(n);
  n->aux_bytes = (size_t)(lse_floats(&d) + n->iparam[ATT_SLOTS] * slot_floats(&d)) * sizeof(float);
  if (!(n->fparam[ATT_DROPOUT] >= 0.0f && n->fparam[ATT_DROPOUT] < 1.0f))
    return damo_error(DAMO_ERR_INVALID_ARG, "attention '%s': dropout rate %g is outside [0, 1)", n->name,
                      (double)n->fparam[ATT_DROPOUT]);
  return DAMO_OK;
}

/* The input values and the stored log-sum-exps of one node. */
typedef struct att_io {
  const float *q, *k, *v, *mask;
  float *lse;
  uint64_t *seed; /* the dropout seed of the last training forward */
} att_io;

static att_io io_of(const damo_node *n) {
  att_io io;
  io.q = damo_f32(n->in[0]);
  io.k = damo_f32(n->in[1]);
  io.v = damo_f32(n->in[2]);
  io.mask = n->n_in > 3 ? damo_f32(n->in[3]) : NULL;
  io.seed = n->aux;
  io.lse = (float *)n->aux + ATT_HEADER_FLOATS;
  return io;
}

static float *slot_of(const damo_node *n, const att_dims *d, int slot) {
  return (float *)n->aux + lse_floats(d) + (int64_t)slot * slot_floats(d);
}

/* Keys [0, visible) of row i (the causal limit), and how many the block's GEMM computes. */
static int64_t visible_keys(const att_dims *d, int64_t i) { return d->causal ? i + 1 : d->Tk; }
static int64_t block_keys(const att_dims *d, int64_t i0, int64_t nq) { return d->causal ? i0 + nq : d->Tk; }

/* sum(x[0, n)), or the dot product with y when y is not NULL, in 16 partial sums: a float
 * reduction the compiler can vectorise without reassociating. */
static inline float lane_sum(const float *x, const float *y, int64_t n) {
  float lanes[16] = {0}, sum = 0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; l++) lanes[l] += y ? x[j + l] * y[j + l] : x[j + l];
  for (; j < n; j++) sum += y ? x[j] * y[j] : x[j];
  for (int l = 0; l < 16; l++) sum += lanes[l];
  return sum;
}

/* Softmax in place over the keys row s may see, j < visible with keep[j] != 0 (keep NULL:
 * all), 0 elsewhere up to width; returns the row's log-sum-exp, +inf when it sees no key.
 * The row loops are compiled per SIMD level: they are most of the time outside the GEMMs. */
DAMO_MULTIVERSION_FUSED static float row_softmax(float *s, int64_t visible, int64_t width, const float *keep) {
  /* The max in 16 lanes: one running max is a chain of dependent compares the compiler does
   * not vectorise (a float max reduction is not reassociated without fast-math), and it was
   * most of the softmax's time. The max is exact in any order. A masked key's score becomes
   * -FLT_MAX first (its probability is set to 0 below). */
  int64_t seen = visible;
  if (keep) {
    seen = 0;
    for (int64_t j = 0; j < visible; j++) {
      s[j] = keep[j] != 0.0f ? s[j] : -FLT_MAX;
      seen += keep[j] != 0.0f;
    }
  }
  float lanes[16], m = -FLT_MAX;
  for (int l = 0; l < 16; l++) lanes[l] = -FLT_MAX;
  int64_t j = 0;
  for (; j + 16 <= visible; j += 16)
    for (int l = 0; l < 16; l++) lanes[l] = s[j + l] > lanes[l] ? s[j + l] : lanes[l];
  for (; j < visible; j++) m = s[j] > m ? s[j] : m;
  for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
  if (seen == 0) {
    memset(s, 0, (size_t)width * sizeof(float));
    return INFINITY;
  }
  for (int64_t j = 0; j < visible; j++) s[j] = damo_expf(s[j] - m);
  if (keep)
    for (int64_t j = 0; j < visible; j++) s[j] = keep[j] != 0.0f ? s[j] : 0.0f;
  float sum = lane_sum(s, NULL, visible), inv = 1.0f / sum;
  for (int64_t j = 0; j < visible; j++) s[j] *= inv;
  for (int64_t j = visible; j < width; j++) s[j] = 0.0f;
  return m + logf(sum);
}

/* Backward's recomputation: scores s[0, width) into probabilities exp(s - lse) in place
 * where seen, else 0 (equal to row_softmax's to rounding). */
DAMO_MULTIVERSION_FUSED static void row_probabilities(float *s, int64_t visible, int64_t width, const float *keep,
                                                      float lse) {
  if (isinf(lse)) visible = 0;
  for (int64_t j = 0; j < visible; j++) s[j] = damo_expf(s[j] - lse);
  if (keep)
    for (int64_t j = 0; j < visible; j++) s[j] = keep[j] != 0.0f ? s[j] : 0.0f;
  for (int64_t j = visible; j < width; j++) s[j] = 0.0f;
}

/* The softmax's backward on one row, in place over dp: ds = scale p (dp - sum(p dp)). */
DAMO_MULTIVERSION static void row_softmax_backward(const float *p, float *dp, int64_t width, float scale) {
  float dot = lane_sum(p, dp, width);
  for (int64_t j = 0; j < width; j++) dp[j] = scale * p[j] * (dp[j] - dot);
}

/* out[j] = in[j] * M_ij for j < width, M as in the header, for the row whose first element
 * has flat index `row_index` in (batch, head, query, key) order; in may equal out. */
DAMO_MULTIVERSION static void row_dropout(const float *in, float *out, int64_t width, uint64_t seed, uint64_t row_index,
                                          uint32_t threshold, float keep_scale) {
  for (int64_t j = 0; j < width; j++)
    out[j] = damo_counter_random(seed, row_index + (uint64_t)j) >= threshold ? in[j] * keep_scale : 0.0f;
}

/* The dropout mask applied to rows [0, nq) of a block (leading dimension nk). */
static void block_dropout(const att_dims *d, uint64_t seed, int64_t b, int64_t h, int64_t i0, int64_t nq, int64_t nk,
                          const float *in, float *out) {
  for (int64_t r = 0; r < nq; r++) {
    const uint64_t row_index = (uint64_t)(((b * d->H + h) * d->Tq + i0 + r) * d->Tk);
    row_dropout(in + r * nk, out + r * nk, nk, seed, row_index, d->drop_threshold, d->keep_scale);
  }
}

/* P (nq x nk, leading dimension nk) for queries [i0, i0 + nq) of head (b, h): the scores by
 * one GEMM, then each row normalised in place. With compute_lse the rows' L are computed
 * and stored (forward); otherwise the stored ones are used (backward). */
static void block_probabilities(const att_dims *d, const att_io *io, int64_t b, int64_t h, int64_t i0, int64_t nq,
                                int64_t nk, float *P, int compute_lse) {
  const float *qh = io->q + (b * d->Tq + i0) * d->C + h * d->D, *kh = io->k + b * d->Tk * d->C + h * d->D;
  damo_gemm_at(d->precision, 0, 1, nq, nk, d->D, d->scale, qh, d->C, kh, d->C, 0.0f, P, nk);
  const float *keep = io->mask ? io->mask + b * d->Tk : NULL;
  float *lse = io->lse + (b * d->H + h) * d->Tq + i0;
  for (int64_t r = 0; r < nq; r++) {
    int64_t visible = visible_keys(d, i0 + r);
    if (compute_lse) lse[r] = row_softmax(P + r * nk, visible, nk, keep);
    else row_probabilities(P + r * nk, visible, nk, keep, lse[r]);
  }
}

/* Threads for tasks independent pieces of work: no more than the scratch slots built. */
static int team_size(const damo_node *n, int64_t tasks) {
  int64_t t = damo_threads();
  if (t > n->iparam[ATT_SLOTS]) t = n->iparam[ATT_SLOTS];
  if (t > tasks) t = tasks;
  return t < 1 ? 1 : (int)t;
}

static damo_status attention_forward(damo_graph *g, damo_node *n) {
  att_dims d = dims_of(n);
  dims_dropout(&d, g, n);
  att_io io = io_of(n);
  if (d.keep_scale != 0.0f) *io.seed = damo_node_forward_seed(g, n);
  float *out = damo_f32(n), *probs = n->capture;
  int64_t tasks = d.B * d.H * d.n_qblocks;
#pragma omp parallel num_threads(team_size(n, tasks))
  {
    float *P = slot_of(n, &d, omp_get_thread_num());
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; task++) {
      int64_t bh = task / d.n_qblocks, b = bh / d.H, h = bh % d.H;
      int64_t i0 = task % d.n_qblocks * d.qb, nq = d.Tq - i0 < d.qb ? d.Tq - i0 : d.qb, nk = block_keys(&d, i0, nq);
      block_probabilities(&d, &io, b, h, i0, nq, nk, P, 1);
      if (d.keep_scale != 0.0f) block_dropout(&d, *io.seed, b, h, i0, nq, nk, P, P);
      damo_gemm_at(d.precision, 0, 0, nq, d.Dv, nk, 1.0f, P, nk, io.v + b * d.Tk * d.Cv + h * d.Dv, d.Cv, 0.0f,
                   out + (b * d.Tq + i0) * d.Cv + h * d.Dv, d.Cv);
      if (probs)
        for (int64_t r = 0; r < nq; r++) {
          float *dst = probs + (bh * d.Tq + i0 + r) * d.Tk;
          memcpy(dst, P + r * nk, (size_t)nk * sizeof(float));
          memset(dst + nk, 0, (size_t)(d.Tk - nk) * sizeof(float));
        }
    }
  }
  return DAMO_OK;
}

static void attention_backward(damo_graph *g, damo_node *n) {
  att_dims d = dims_of(n);
  dims_dropout(&d, g, n);
  att_io io = io_of(n);
  damo_node *qn = n->in[0], *kn = n->in[1], *vn = n->in[2];
  if (!qn->in_backward && !kn->in_backward && !vn->in_backward) return;
  /* zero-filled on first touch, before the threads start (q, k, v may be one node) */
  float *dq = qn->in_backward ? damo_node_grad_acc(qn) : NULL;
  float *dk = kn->in_backward ? damo_node_grad_acc(kn) : NULL;
  float *dv = vn->in_backward ? damo_node_grad_acc(vn) : NULL;
  const float *dout = n->grad;
  int64_t pairs = d.B * d.H;
#pragma omp parallel num_threads(team_size(n, pairs))
  {
    float *P = slot_of(n, &d, omp_get_thread_num()), *dS = P + d.qb * d.Tk, *PM = dS + d.qb * d.Tk;
#pragma omp for schedule(dynamic)
    for (int64_t bh = 0; bh < pairs; bh++) {
      int64_t b = bh / d.H, h = bh % d.H, q_off = b * d.Tq * d.C + h * d.D, kv_off = b * d.Tk * d.C + h * d.D;
      int64_t v_off = b * d.Tk * d.Cv + h * d.Dv, o_off = b * d.Tq * d.Cv + h * d.Dv;
      for (int64_t i0 = 0; i0 < d.Tq; i0 += d.qb) {
        int64_t nq = d.Tq - i0 < d.qb ? d.Tq - i0 : d.qb, nk = block_keys(&d, i0, nq);
        const float *dOb = dout + o_off + i0 * d.Cv;
        block_probabilities(&d, &io, b, h, i0, nq, nk, P, 0);
        const float *used = P; /* the probabilities O was made of */
        if (d.keep_scale != 0.0f) {
          block_dropout(&d, *io.seed, b, h, i0, nq, nk, P, PM);
          used = PM;
        }
        if (dv) damo_gemm_at(d.precision, 1, 0, nk, d.Dv, nq, 1.0f, used, nk, dOb, d.Cv, 1.0f, dv + v_off, d.Cv);
        if (!dq && !dk) continue;
        damo_gemm_at(d.precision, 0, 1, nq, nk, d.Dv, 1.0f, dOb, d.Cv, io.v + v_off, d.Cv, 0.0f, dS, nk);
        if (d.keep_scale != 0.0f) block_dropout(&d, *io.seed, b, h, i0, nq, nk, dS, dS);
        /* the scale of S folds in here, once for dQ and dK */
        for (int64_t r = 0; r < nq; r++) row_softmax_backward(P + r * nk, dS + r * nk, nk, d.scale);
        if (dq)
          damo_gemm_at(d.precision, 0, 0, nq, d.D, nk, 1.0f, dS, nk, io.k + kv_off, d.C, 1.0f, dq + q_off + i0 * d.C,
                       d.C);
        if (dk)
          damo_gemm_at(d.precision, 1, 0, nk, d.D, nq, 1.0f, dS, nk, io.q + q_off + i0 * d.C, d.C, 1.0f, dk + kv_off,
                       d.C);
      }
    }
  }
}

/* Backward reads q, k, v and the mask (inputs) and aux (L); not its own output. */
const damo_op_def damo_op_def_attention = {"attention", 3, attention_infer, attention_forward, attention_backward,
                                           DAMO_OPF_BWD_INPUTS};

damo_node *damo_attention(damo_graph *g, damo_node *q, damo_node *k, damo_node *v, int n_heads, int causal,
                          damo_node *key_mask) {
  damo_node *in[4] = {q, k, v, key_mask};
  int slots = damo_num_threads();
  if (slots > ATT_MAX_SLOTS) slots = ATT_MAX_SLOTS;
  int p[4] = {n_heads, causal != 0, slots < 1 ? 1 : slots, 0};
  return damo_graph_add_node(g, DAMO_OP_ATTENTION, key_mask ? 4 : 3, in, p, 4, NULL, 0);
}

damo_status damo_attention_set_dropout(damo_node *attention, float rate) {
  if (!attention || attention->op != DAMO_OP_ATTENTION)
    return damo_error(DAMO_ERR_INVALID_ARG, "attention_set_dropout: '%s' is not an attention node",
                      attention ? attention->name : "(null)");
  if (!(rate >= 0.0f && rate < 1.0f))
    return damo_error(DAMO_ERR_INVALID_ARG, "attention_set_dropout: rate %g is outside [0, 1)", (double)rate);
  attention->fparam[ATT_DROPOUT] = rate;
  return DAMO_OK;
}

damo_status damo_attention_set_precision(damo_node *attention, damo_matmul_precision precision) {
  if (!attention || attention->op != DAMO_OP_ATTENTION)
    return damo_error(DAMO_ERR_INVALID_ARG, "attention_set_precision: '%s' is not an attention node",
                      attention ? attention->name : "(null)");
  if (precision != DAMO_MATMUL_F32 && precision != DAMO_MATMUL_BF16)
    return damo_error(DAMO_ERR_INVALID_ARG, "attention_set_precision: %d is neither DAMO_MATMUL_F32 nor DAMO_MATMUL_BF16",
                      (int)precision);
  attention->iparam[ATT_PRECISION] = 1 + (int)precision;
  return DAMO_OK;
}

damo_status damo_attention_capture_probs(damo_node *attention, float *probs) {
  if (!attention || attention->op != DAMO_OP_ATTENTION)
    return damo_error(DAMO_ERR_INVALID_ARG, "attention_capture_probs: '%s' is not an attention node",
                      attention ? attention->name : "(null)");
  attention->capture = probs;
  return DAMO_OK;
}
