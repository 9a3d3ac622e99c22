/* qlinear.c - the int8 inference ops of quantised layers: qdense (y = act(x W + b)) and
 * qconv2d (channels-last, as conv.c), on the packed int8 weights of kernels/cpu/gemm_int8.c.
 *
 * The input arrives in f32 and is quantised here to affine uint8, held as int16 (q - z) in
 * aux: with the scale and zero point calibrated when the model was quantised (static), or
 * from the batch's own range (dynamic). qconv2d quantises the image once and pads that copy
 * with the quantised 0; the product reads the windows there or copies patches from it, a
 * block of output pixels at a time (see windows_bytes). The int8 product's epilogue applies the
 * scales, the bias and a ReLU, or a GELU folded in from the op after the qdense
 * (damo_qdense_absorb_gelu: BERT's and GPT-2's feed-forward); other activations follow as
 * their own op (the layer's build). The output is f32, so the next layer, quantised or not,
 * reads what it always did, except in a chain (damo_int8_chain): a layer whose output only
 * reaches a calibrated int8 layer, through max pooling, reshapes or inference's dropout,
 * writes that layer's uint8 (requantised in the epilogue, after the GELU if one is folded:
 * BERT's static intermediate into its output product) and the next one reads it as it is.
 * There is no backward: fit refuses a quantised model before any graph is built. */
#include "ops/ops.h"

#include <math.h>

/* qdense iparam (Q_RESIDUAL 1: the last input is a residual added to the f32 output,
 * damo_qdense_absorb_add); fparam: the input's scale (0: per batch), the output's (0: f32) */
enum { Q_ACT = 0, Q_ZERO_POINT = 1, Q_OUT_ZERO_POINT = 2, Q_RESIDUAL = 3 };
/* A qdense's Q_ACT past damo_activation's values: a GELU folded in (damo_qdense_absorb_gelu),
 * exact or tanh form, applied in the product's epilogue to an f32 output. */
enum { Q_ACT_GELU = 64, Q_ACT_GELU_TANH = 65 };
/* qconv2d iparam (QC_ZERO_POINT: the input's zero point | the uint8 output's << 8); fparam as qdense */
enum { QC_SH, QC_SW, QC_PT, QC_PL, QC_PB, QC_PR, QC_ACT, QC_ZERO_POINT };
enum { QC_PATCH_ROWS = 1536 }; /* output pixels per patches block (a multiple of DAMO_QMR) */

static const damo_qweight *qweight_of(const damo_node *n) { return (const damo_qweight *)n->op_data; }

/* 1 / the uint8 output's scale (0: an f32 output), taken as damo_quantize_rows takes it. */
static float out_inv_scale(const damo_node *n) { return n->fparam[1] > 0.0f ? 1.0f / n->fparam[1] : 0.0f; }

static int fusable(damo_activation act) { return act == DAMO_ACT_NONE || act == DAMO_ACT_RELU; }

/* A qdense's residual input (NULL: none); a qdense's or qconv2d's bias (NULL: none). */
static const damo_node *residual_of(const damo_node *n) {
  return n->op == DAMO_OP_QDENSE && n->iparam[Q_RESIDUAL] ? n->in[n->n_in - 1] : NULL;
}
static const damo_node *bias_of(const damo_node *n) { return n->n_in - (residual_of(n) != NULL) > 1 ? n->in[1] : NULL; }

static damo_status check_common(damo_node *n, int64_t K, const char *what) {
  const damo_qweight *w = qweight_of(n);
  const damo_node *x = n->in[0], *b = bias_of(n);
  if (!w) return damo_error(DAMO_ERR_INVALID_ARG, "%s: no int8 weights", what);
  if (x->dtype != DAMO_F32 && !(x->dtype == DAMO_U8 && (n->fparam[0] > 0.0f || x->op == DAMO_OP_QUANTIZE_U8)))
    return damo_shape_error(n, "needs an f32 input (or the uint8 of a calibrated chain or a quantize_u8)", x, NULL);
  if (K != w->K) {
    char s[96];
    return damo_error(DAMO_ERR_SHAPE, "%s: the input %s ('%s') gives %lld values per product, the int8 kernel has %lld",
                      what, damo_shape_string(x->ndim, x->shape, s, sizeof s), x->name, (long long)K, (long long)w->K);
  }
  if (b && (b->dtype != DAMO_F32 || b->ndim != 1 || b->shape[0] != w->N))
    return damo_error(DAMO_ERR_SHAPE, "%s: bias '%s' must be f32 of shape (%lld,)", what, b->name, (long long)w->N);
  return DAMO_OK;
}

/* The range of a batch (dynamic quantisation), over chunks on every thread (a BERT layer's
 * input is 2M values a batch). */
static void batch_range(const float *x, int64_t count, float *lo_out, float *hi_out) {
  float lo = 0.0f, hi = 0.0f;
  const int64_t chunks = (count + DAMO_CHUNK - 1) / DAMO_CHUNK;
#pragma omp parallel for reduction(min : lo) reduction(max : hi) if (count > DAMO_PARALLEL_MIN) \
    num_threads(damo_threads())
  for (int64_t c = 0; c < chunks; c++) {
    int64_t len;
    const int64_t first = damo_chunk(count, c, &len);
    float a, b;
    damo_range_f32(x + first, len, &a, &b);
    lo = a < lo ? a : lo;
    hi = b > hi ? b : hi;
  }
  *lo_out = lo, *hi_out = hi;
}

static void batch_params(const float *x, int64_t count, float *scale, int *zp) {
  float lo, hi;
  batch_range(x, count, &lo, &hi);
  damo_quant_params(lo, hi, scale, zp);
}

/* The activation's quantisation: the calibrated one, or the batch's own (from the range its
 * producer recorded, or a shared quantize_u8 found, where one did). */
static void input_params(const damo_node *n, const float *x, int64_t count, int zp_slot, float *scale, int *zp) {
  if (n->fparam[0] > 0.0f) {
    *scale = n->fparam[0];
    *zp = n->iparam[zp_slot] & 0xff;
    return;
  }
  const damo_node *from = n->in[0];
  if (from->records_range || from->op == DAMO_OP_QUANTIZE_U8)
    damo_quant_params(from->out_range[0], from->out_range[1], scale, zp);
  else
    batch_params(x, count, scale, zp);
}

size_t damo_q8_scratch_bytes(int64_t M, const damo_qweight *w) { return (size_t)damo_qrows_padded(M) * damo_qrow_bytes(w); }

/* out from row r0 on: its outputs (uint8 or f32) and residual rows moved down r0 rows. */
static damo_q8_out out_from_row(const damo_q8_out *o, int64_t r0) {
  damo_q8_out moved = *o;
  moved.c = (char *)o->c + (size_t)(r0 * o->ldc) * (o->out_inv_scale > 0.0f ? 1 : sizeof(float));
  if (o->residual) moved.residual = o->residual + r0 * o->ldr;
  return moved;
}

/* The product of x's rows (f32 to quantise, or uint8 of a chain: x8) into out, x quantised by
 * scale and zp into a (the kernels' padded rows). A chained input already in the kernels' row
 * form (VNNI, K a multiple of the packing's, so rows need no padding) is multiplied where it
 * lies in whole groups of DAMO_QROWS_ALIGN rows, and only the rows past the last group are
 * staged: copying the activations was ~3% of BERT's int8 pass (its 8 MB feed-forward
 * hand-over, per layer and batch). */
static void quantized_product(const float *x, const uint8_t *x8, int64_t M, const damo_qweight *w, float scale, int zp,
                              const float *bias, void *a, const damo_q8_out *out) {
  const size_t row = damo_qrow_bytes(w);
  if (x8 && w->layout == DAMO_QLAYOUT_VNNI && (int64_t)row == w->K && M >= DAMO_QROWS_ALIGN) {
    const int64_t whole = M / DAMO_QROWS_ALIGN * DAMO_QROWS_ALIGN;
    damo_gemm_q8(whole, x8, w, scale, zp, bias, out);
    if (whole == M) return;
    damo_q8_out rest = out_from_row(out, whole);
    float rest_range[2];
    if (out->range) rest.range = rest_range;
    quantized_product(NULL, x8 + whole * w->K, M - whole, w, scale, zp, bias, a, &rest);
    if (out->range) { /* the two calls' ranges, merged */
      out->range[0] = rest_range[0] < out->range[0] ? rest_range[0] : out->range[0];
      out->range[1] = rest_range[1] > out->range[1] ? rest_range[1] : out->range[1];
    }
    return;
  }
  if (x8) damo_stage_u8_rows(x8, M, w->K, zp, w->layout, a, w->Kp);
  else damo_quantize_rows(x, M, w->K, w->K, scale, zp, w->layout, a, w->Kp);
  memset((char *)a + (size_t)M * row, 0, (size_t)(damo_qrows_padded(M) - M) * row);
  damo_gemm_q8(M, a, w, scale, zp, bias, out);
}

void damo_q8_product(const float *x, int64_t M, const damo_qweight *w, float x_scale, int zero_point,
                     const float *bias, void *a, float *out, int64_t ldo) {
  if (!(x_scale > 0.0f)) batch_params(x, M * w->K, &x_scale, &zero_point);
  const damo_q8_out o = damo_q8_f32(out, ldo, 0);
  quantized_product(x, NULL, M, w, x_scale, zero_point, bias, a, &o);
}

void damo_q8_dynamic_product(const float *x, int64_t M, const damo_qweight *w, const float *bias, void *a, float *out,
                             int64_t ldo) {
  damo_q8_product(x, M, w, 0.0f, 0, bias, a, out, ldo);
}

/* ------------------------------------------------------------------ qdense */

static damo_status qdense_infer(damo_node *n) {
  const damo_node *x = n->in[0];
  if (x->ndim < 1) return damo_shape_error(n, "needs an input (..., K)", x, NULL);
  const int act = n->iparam[Q_ACT], gelu = act == Q_ACT_GELU || act == Q_ACT_GELU_TANH;
  if (!fusable((damo_activation)act) && !gelu)
    return damo_error(DAMO_ERR_INVALID_ARG, "qdense: only linear, relu or GELU is fused (got activation %d)", act);
  damo_status st = check_common(n, x->shape[x->ndim - 1], "qdense");
  if (st != DAMO_OK) return st;
  const damo_qweight *w = qweight_of(n);
  n->ndim = x->ndim;
  memcpy(n->shape, x->shape, sizeof n->shape);
  n->shape[n->ndim - 1] = w->N;
  const damo_node *r = residual_of(n);
  if (r && (gelu || n->fparam[1] > 0.0f || r->dtype != DAMO_F32 || r->ndim != n->ndim ||
            memcmp(r->shape, n->shape, (size_t)n->ndim * sizeof *n->shape)))
    return damo_shape_error(n, "adds a residual of its own f32 output's shape (no GELU, no uint8 output)", r, NULL);
  if (n->records_range && n->fparam[1] > 0.0f)
    return damo_error(DAMO_ERR_INVALID_ARG, "qdense '%s': an output range is recorded for an f32 output only", n->name);
  n->dtype = n->fparam[1] > 0.0f ? DAMO_U8 : DAMO_F32;
  const int64_t M = damo_node_count(x) / (w->K ? w->K : 1);
  n->aux_bytes = (size_t)damo_qrows_padded(M) * damo_qrow_bytes(w);
  return DAMO_OK;
}

static damo_status qdense_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const damo_qweight *w = qweight_of(n);
  const damo_node *xn = n->in[0];
  const int chained = xn->dtype == DAMO_U8;
  const float *x = chained ? NULL : damo_f32(xn), *b = bias_of(n) ? damo_f32(bias_of(n)) : NULL;
  const int64_t M = damo_node_count(xn) / w->K;
  float scale;
  int zp;
  input_params(n, x, M * w->K, Q_ZERO_POINT, &scale, &zp);
  const int act = n->iparam[Q_ACT];
  const damo_q8_out out = {.c = n->value, .ldc = w->N, .relu = act == DAMO_ACT_RELU, .out_inv_scale = out_inv_scale(n),
                           .out_zero_point = n->iparam[Q_OUT_ZERO_POINT],
                           .gelu = act == Q_ACT_GELU ? 1 : act == Q_ACT_GELU_TANH ? 2 : 0,
                           .residual = residual_of(n) ? damo_f32(residual_of(n)) : NULL, .ldr = w->N,
                           .range = n->records_range ? n->out_range : NULL}; /* in the epilogue */
  quantized_product(x, chained ? (const uint8_t *)xn->value : NULL, M, w, scale, zp, b, n->aux, &out);
  return DAMO_OK;
}

const damo_op_def damo_op_def_qdense = {"qdense", 2, qdense_infer, qdense_forward, NULL, 0}; /* inference only */

damo_node *damo_qdense_op(damo_graph *g, damo_node *x, const damo_qweight *w, damo_node *bias, damo_activation act,
                          float x_scale, int zero_point) {
  damo_node *in[2] = {x, bias};
  int p[4] = {(int)act, zero_point, 0, 0};
  float f[2] = {x_scale, 0.0f};
  return damo_graph_add_node_data(g, DAMO_OP_QDENSE, bias ? 2 : 1, in, p, 4, f, 2, w);
}

damo_status damo_dense_to_qdense(damo_node *n, const damo_qweight *w, float x_scale, int zero_point) {
  if (!n || !w || n->op != DAMO_OP_DENSE)
    return damo_error(DAMO_ERR_INVALID_ARG, "dense_to_qdense: '%s' is not a dense node", n ? n->name : "(null)");
  const int act = n->iparam[0], transposed = n->iparam[1];
  const damo_node *k = n->in[1];
  const int64_t K = k->shape[transposed], N = k->shape[1 - transposed];
  if (!fusable((damo_activation)act) || K != w->K || N != w->N || !(x_scale >= 0.0f) || zero_point < 0 ||
      zero_point > 255)
    return damo_error(DAMO_ERR_INVALID_ARG, "dense_to_qdense: '%s' (%lld x %lld, activation %d) does not take a "
                      "%lld x %lld int8 kernel with a fused linear or relu (input scale %g, zero point %d)", n->name,
                      (long long)K, (long long)N, act, (long long)w->K, (long long)w->N, (double)x_scale, zero_point);
  damo_node *bias = n->n_in > 2 ? n->in[2] : NULL;
  n->op = DAMO_OP_QDENSE; /* consumers keep pointing at n: only its inputs and parameters change */
  n->in[1] = bias;
  n->in[2] = NULL;
  n->n_in = bias ? 2 : 1;
  n->iparam[0] = act;
  n->iparam[Q_ZERO_POINT] = zero_point; /* with scale 0 (dynamic): chosen per batch */
  n->fparam[0] = x_scale;
  n->fparam[1] = 0.0f; /* f32 output */
  n->iparam[Q_OUT_ZERO_POINT] = 0;
  n->iparam[Q_RESIDUAL] = 0;
  n->records_range = 0;
  n->op_data = w;
  return qdense_infer(n);
}

/* The one node reading n, or NULL where none or several do, or n is an output. */
static damo_node *sole_reader(damo_graph *g, const damo_node *n, int n_keep, damo_node *const *keep) {
  for (int i = 0; i < n_keep; i++)
    if (keep[i] == n) return NULL;
  damo_node *reader = NULL;
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i]->n_in; k++)
      if (g->nodes[i]->in[k] == n) {
        if (reader) return NULL;
        reader = g->nodes[i];
      }
  return reader;
}

/* Node `into` takes over qdense q (its inputs, parameters and weights; `extra` appended as
 * one more input when not NULL) with activation act and the residual flag, and q is
 * detached; both are left as they were when the result does not infer. */
static int take_over(damo_node *into, damo_node *q, damo_node *extra, int act, int residual) {
  const damo_node before = *into;
  into->op = DAMO_OP_QDENSE;
  into->n_in = q->n_in;
  for (int i = 0; i < q->n_in; i++) into->in[i] = q->in[i];
  if (extra) into->in[into->n_in++] = extra;
  memcpy(into->iparam, q->iparam, sizeof into->iparam);
  memcpy(into->fparam, q->fparam, sizeof into->fparam);
  into->iparam[Q_ACT] = act;
  into->iparam[Q_RESIDUAL] = residual;
  into->op_data = q->op_data;
  if (qdense_infer(into) != DAMO_OK) {
    *into = before;
    return 0;
  }
  /* q is read by no one now; detached it reads nothing either, so no later rewrite counts it
   * as a reader (damo_int8_chain's walk needs the product's sole reader) */
  q->n_in = 0;
  return 1;
}

int damo_qdense_absorb_add(damo_graph *g, damo_node *add) {
  if (!g || !add || add->op != DAMO_OP_ADD || add->n_in != 2) return 0;
  for (int side = 0; side < 2; side++) {
    damo_node *q = add->in[side], *r = add->in[1 - side];
    const int act = q->op == DAMO_OP_QDENSE ? q->iparam[Q_ACT] : -1;
    if (q == r || !fusable((damo_activation)act) || q->fparam[1] > 0.0f || residual_of(q) ||
        sole_reader(g, q, 0, NULL) != add || q->n_in >= DAMO_MAX_INPUTS)
      continue;
    if (take_over(add, q, r, act, 1)) return 1;
  }
  return 0;
}

int damo_qdense_absorb_gelu(damo_graph *g, damo_node *gelu) {
  if (!g || !gelu || gelu->op != DAMO_OP_GELU || gelu->n_in != 1) return 0;
  damo_node *q = gelu->in[0];
  if (q->op != DAMO_OP_QDENSE || q->iparam[Q_ACT] != DAMO_ACT_NONE || q->fparam[1] > 0.0f || residual_of(q) ||
      sole_reader(g, q, 0, NULL) != gelu)
    return 0;
  return take_over(gelu, q, NULL, gelu->iparam[0] ? Q_ACT_GELU_TANH : Q_ACT_GELU, 0);
}

/* ------------------------------------------------------------------ qconv2d */

typedef struct qconv_geom {
  int64_t N, H, W, C, KH, KW, F, OH, OW, K;
  int sh, sw, pt, pl, pb, pr;
} qconv_geom;

static qconv_geom qgeom_of(const damo_node *n) {
  const damo_node *x = n->in[0];
  const damo_qweight *w = qweight_of(n);
  qconv_geom q;
  q.N = x->shape[0], q.H = x->shape[1], q.W = x->shape[2], q.C = x->shape[3];
  q.K = q.C ? w->K : 0;
  /* The window is recorded with the weights' shape: K = KH * KW * C. */
  q.KH = n->iparam[QC_ACT] >> 16, q.KW = (n->iparam[QC_ACT] >> 8) & 0xff;
  q.F = w->N;
  q.sh = n->iparam[QC_SH], q.sw = n->iparam[QC_SW], q.pt = n->iparam[QC_PT], q.pl = n->iparam[QC_PL];
  q.pb = n->iparam[QC_PB], q.pr = n->iparam[QC_PR];
  q.OH = q.sh > 0 ? (q.H + q.pt + n->iparam[QC_PB] - q.KH) / q.sh + 1 : 0;
  q.OW = q.sw > 0 ? (q.W + q.pl + n->iparam[QC_PR] - q.KW) / q.sw + 1 : 0;
  return q;
}

/* Output pixels per patches block: QC_PATCH_ROWS, or as many as fill about 1 MB when the
 * rows are short (a first layer's K of 25: fewer blocks, so fewer thread team starts). */
static int64_t patch_rows(const qconv_geom *q, const damo_qweight *w) {
  const int64_t pixels = q->N * q->OH * q->OW, row = (int64_t)damo_qrow_bytes(w);
  int64_t block = ((int64_t)1 << 20) / (row > 0 ? row : 1) / DAMO_QROWS_ALIGN * DAMO_QROWS_ALIGN;
  if (block < QC_PATCH_ROWS) block = QC_PATCH_ROWS;
  return pixels < block ? damo_qrows_padded(pixels) : block;
}

static size_t round64(size_t bytes) { return (bytes + 63) / 64 * 64; }

/* The quantised image is copied with a border of the quantised 0 (the zero point as uint8,
 * (q - z) = 0 as int16), so every window lies inside it, and each output pixel's window
 * corner is tabled. With VNNI weights (no AMX) and channels a multiple of 4 every quad of a
 * patch row is four channels of one tap: the product reads the windows there
 * (damo_gemm_q8_gather) and no patch is written (W2's second layer wrote 10 MB of patches a
 * batch, a pass as long as its product). Otherwise the patches are copied from the padded
 * image, kernel row by kernel row, without bounds checks. The scratch: the padded image (and
 * 64 bytes, so a copy may read a word past a window), the corners and, for VNNI, each quad's
 * place in a window. elem: bytes a value. */
static size_t windows_bytes(const qconv_geom *q, size_t elem) {
  const size_t padded = (size_t)(q->N * (q->H + q->pt + q->pb) * (q->W + q->pl + q->pr) * q->C) * elem;
  return round64(padded + 64) + round64((size_t)(q->N * q->OH * q->OW) * sizeof(int64_t)) +
         round64((size_t)(q->K / 4) * sizeof(int64_t));
}

typedef struct qconv_windows {
  const char *padded;
  const int64_t *corner, *tap; /* tap: NULL where the quads cross taps or the layout is int16 */
  size_t line;                 /* bytes of a padded image row */
} qconv_windows;

/* Fills the scratch of windows_bytes from the quantised image img. */
static qconv_windows pad_image(const qconv_geom *q, const damo_qweight *w, const char *img, size_t elem, int zp,
                               char *scratch) {
  const int64_t Hp = q->H + q->pt + q->pb, Wp = q->W + q->pl + q->pr, pixels = q->N * q->OH * q->OW;
  const size_t pixel = (size_t)q->C * elem, image = (size_t)(Hp * Wp) * pixel, run = (size_t)q->W * pixel;
  char *padded = scratch;
  int64_t *corner = (int64_t *)(scratch + round64((size_t)q->N * image + 64));
  int64_t *tap = (int64_t *)((char *)corner + round64((size_t)pixels * sizeof(int64_t)));
  const int border = elem == 1 ? zp : 0;
#pragma omp parallel for schedule(static) num_threads(damo_loop_threads((int64_t)(q->N * image), DAMO_NS_MAP))
  for (int64_t bi = 0; bi < q->N; bi++) {
    char *dst = padded + (size_t)bi * image;
    memset(dst, border, image);
    for (int64_t iy = 0; iy < q->H; iy++)
      memcpy(dst + (size_t)((q->pt + iy) * Wp + q->pl) * pixel, img + (size_t)(bi * q->H + iy) * run, run);
  }
  memset(padded + (size_t)q->N * image, 0, 64);
  for (int64_t bi = 0, p = 0; bi < q->N; bi++)
    for (int64_t oy = 0; oy < q->OH; oy++)
      for (int64_t ox = 0; ox < q->OW; ox++)
        corner[p++] = (int64_t)((size_t)((bi * Hp + oy * q->sh) * Wp + ox * q->sw) * pixel);
  const int quads = elem == 1 && q->C % 4 == 0 && w->Kp == q->K;
  for (int64_t j = 0; quads && j < q->K / 4; j++) {
    const int64_t k = 4 * j, ky = k / (q->KW * q->C), kx = k / q->C % q->KW, c = k % q->C;
    tap[j] = (ky * Wp + kx) * q->C + c;
  }
  return (qconv_windows){padded, corner, quads ? tap : NULL, (size_t)Wp * pixel};
}

/* Patch rows [0, count) of the pixels from `first` on, copied from the padded image: one run of
 * KW * C values per kernel row. Runs shorter than a word are copied as a word when the last
 * one stays inside the row (a first layer's 5 x 1 runs); the bytes past K are cleared after. */
static void copy_patches(const qconv_geom *q, const qconv_windows *win, size_t elem, int64_t first, int64_t count,
                         char *patches, size_t row) {
  const size_t run = (size_t)(q->KW * q->C) * elem, K = (size_t)q->K * elem;
  const int word = run < 8 && K - run + 8 <= row;
#pragma omp parallel for num_threads(count >= 64 ? damo_threads() : 1) schedule(static)
  for (int64_t r = 0; r < count; r++) {
    char *dst = patches + (size_t)r * row;
    const char *src = win->padded + win->corner[first + r];
    for (int64_t ky = 0; ky < q->KH; ky++) {
      if (word) memcpy(dst + ky * run, src + ky * win->line, 8);
      else memcpy(dst + ky * run, src + ky * win->line, run);
    }
    memset(dst + K, 0, row - K);
  }
}

static damo_status qconv_infer(damo_node *n) {
  const damo_node *x = n->in[0];
  if (x->ndim != 4) return damo_shape_error(n, "needs an input (N, H, W, C)", x, NULL);
  qconv_geom q = qgeom_of(n);
  if (q.KH < 1 || q.KW < 1 || q.sh < 1 || q.sw < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "qconv2d: bad window %lldx%lld, strides or activation (linear or relu "
                      "fused)", (long long)q.KH, (long long)q.KW);
  damo_status st = check_common(n, q.KH * q.KW * q.C, "qconv2d");
  if (st != DAMO_OK) return st;
  if (q.OH < 1 || q.OW < 1) return damo_shape_error(n, "the window does not fit the padded input", x, NULL);
  n->ndim = 4;
  n->shape[0] = q.N, n->shape[1] = q.OH, n->shape[2] = q.OW, n->shape[3] = q.F;
  n->dtype = n->fparam[1] > 0.0f ? DAMO_U8 : DAMO_F32;
  const damo_qweight *w = qweight_of(n);
  const size_t elem = w->layout == DAMO_QLAYOUT_VNNI ? 1 : sizeof(int16_t);
  n->aux_bytes = round64((size_t)(q.N * q.H * q.W * q.C) * elem) + windows_bytes(&q, elem) +
                 (size_t)patch_rows(&q, w) * damo_qrow_bytes(w);
  return DAMO_OK;
}

static damo_status qconv_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const damo_qweight *w = qweight_of(n);
  const qconv_geom q = qgeom_of(n);
  const int chained = n->in[0]->dtype == DAMO_U8;
  const float *x = chained ? NULL : damo_f32(n->in[0]), *b = bias_of(n) ? damo_f32(bias_of(n)) : NULL;
  const int64_t image = q.N * q.H * q.W * q.C, pixels = q.N * q.OH * q.OW, block = patch_rows(&q, w);
  float scale;
  int zp;
  input_params(n, x, image, QC_ZERO_POINT, &scale, &zp);
  const size_t out_elem = n->dtype == DAMO_U8 ? 1 : sizeof(float);
  damo_q8_out out = {.c = n->value, .ldc = q.F, .relu = (n->iparam[QC_ACT] & 0xff) == DAMO_ACT_RELU,
                     .out_inv_scale = out_inv_scale(n), .out_zero_point = n->iparam[QC_ZERO_POINT] >> 8 & 0xff};
  /* The image quantised once, in the weights' form (elem bytes a value); a tap outside it
   * is the quantised 0: (q - z) = 0 as int16, or q = z as uint8. */
  const int vnni = w->layout == DAMO_QLAYOUT_VNNI;
  const size_t elem = vnni ? 1 : sizeof(int16_t), row = damo_qrow_bytes(w);
  char *img = n->aux, *scratch = img + round64((size_t)image * elem), *patches = scratch + windows_bytes(&q, elem);
  const int64_t per_image = q.H * q.W * q.C; /* rows of one image each: quantised on every thread */
  if (chained && vnni) img = n->in[0]->value; /* already this layer's uint8 */
  else if (chained) damo_stage_u8_rows(n->in[0]->value, q.N, per_image, zp, w->layout, img, per_image);
  else damo_quantize_rows(x, q.N, per_image, per_image, scale, zp, w->layout, img, per_image);
  const qconv_windows win = pad_image(&q, w, img, elem, zp, scratch);
  if (win.tap && damo_gemm_q8_gather(pixels, (const uint8_t *)win.padded, win.corner, win.tap, w, scale, zp, b, &out))
    return DAMO_OK;
  for (int64_t p0 = 0; p0 < pixels; p0 += block) {
    const int64_t rows = pixels - p0 < block ? pixels - p0 : block;
    /* Patches of output pixels p0 .. p0 + rows, (kh, kw, c) order as the kernel's rows; the rows
     * past them up to the whole tiles the kernel reads: zeros, not stored. */
    copy_patches(&q, &win, elem, p0, rows, patches, row);
    memset(patches + (size_t)rows * row, 0, (size_t)(damo_qrows_padded(rows) - rows) * row);
    out.c = (char *)n->value + (size_t)(p0 * q.F) * out_elem;
    damo_gemm_q8(rows, patches, w, scale, zp, b, &out);
  }
  return DAMO_OK;
}

const damo_op_def damo_op_def_qconv2d = {"qconv2d", 2, qconv_infer, qconv_forward, NULL, 0};

damo_node *damo_qconv2d_op(damo_graph *g, damo_node *x, const damo_qweight *w, int kh, int kw, damo_node *bias,
                           damo_activation act, int stride_h, int stride_w, int pad_top, int pad_left, int pad_bottom,
                           int pad_right, float x_scale, int zero_point) {
  if (kh < 1 || kh > 32767 || kw < 1 || kw > 255 || !fusable(act)) kh = kw = 0, act = DAMO_ACT_NONE; /* refused by infer */
  damo_node *in[2] = {x, bias};
  /* The activation and the window share one slot: iparam has room for eight values. */
  int p[8] = {stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, (int)act | kw << 8 | kh << 16, zero_point};
  float f[2] = {x_scale, 0.0f};
  return damo_graph_add_node_data(g, DAMO_OP_QCONV2D, bias ? 2 : 1, in, p, 8, f, 2, w);
}

/* ------------------------------------------------------------------ shared input quantisation */

/* quantize_u8: x (f32, rows of K, its last axis) as the affine uint8 its int8 readers take,
 * with fparam[0] and iparam[0] (static) or, fparam[0] 0, the batch's own range (dynamic),
 * which it leaves in out_range for the readers. Several qdense reading one input (BERT's
 * query, key and value) then quantise it once (damo_int8_chain), and VNNI readers multiply
 * its rows where they lie. Inference only. */
static damo_status quantize_u8_infer(damo_node *n) {
  const damo_node *x = n->in[0];
  if (x->dtype != DAMO_F32 || x->ndim < 1) return damo_shape_error(n, "needs an f32 input (..., K)", x, NULL);
  if (n->fparam[0] < 0.0f || !isfinite(n->fparam[0]) || n->iparam[0] < 0 || n->iparam[0] > 255)
    return damo_error(DAMO_ERR_INVALID_ARG, "quantize_u8 '%s': scale %g and zero point %d (a scale > 0 and 0..255, or "
                      "0 for the batch's range)", n->name, (double)n->fparam[0], n->iparam[0]);
  n->ndim = x->ndim;
  memcpy(n->shape, x->shape, sizeof n->shape);
  n->dtype = DAMO_U8;
  return DAMO_OK;
}

static damo_status quantize_u8_forward(damo_graph *g, damo_node *n) {
  (void)g;
  const damo_node *xn = n->in[0];
  const int64_t K = xn->shape[xn->ndim - 1], count = damo_node_count(xn);
  float scale = n->fparam[0];
  int zp = n->iparam[0];
  if (!(scale > 0.0f)) {
    if (xn->records_range) n->out_range[0] = xn->out_range[0], n->out_range[1] = xn->out_range[1];
    else batch_range(damo_f32(xn), count, &n->out_range[0], &n->out_range[1]);
    damo_quant_params(n->out_range[0], n->out_range[1], &scale, &zp);
  }
  if (K > 0) damo_quantize_rows(damo_f32(xn), count / K, K, K, scale, zp, DAMO_QLAYOUT_VNNI, n->value, K);
  return DAMO_OK;
}

const damo_op_def damo_op_def_quantize_u8 = {"quantize_u8", 1, quantize_u8_infer, quantize_u8_forward, NULL, 0};

/* Gives the qdense nodes that read x (as their input, two or more, all dynamic or all with one
 * calibrated scale and zero point) one quantize_u8 of x to read instead, placed right after
 * x. 1 when it did, 0 when the pattern does not hold, -1 on failure (graph error set). */
static int share_input_quantisation(damo_graph *g, damo_node *x) {
  damo_node *readers[16]; /* more readers than this quantise x themselves */
  int n = 0;
  for (int i = 0; i < g->n_nodes && n < (int)(sizeof readers / sizeof *readers); i++) {
    damo_node *r = g->nodes[i];
    if (r->op != DAMO_OP_QDENSE || r->n_in < 1 || r->in[0] != x) continue;
    if (n && (r->fparam[0] != readers[0]->fparam[0] ||
              (r->fparam[0] > 0.0f && (r->iparam[Q_ZERO_POINT] & 0xff) != (readers[0]->iparam[Q_ZERO_POINT] & 0xff))))
      return 0; /* scales that differ (or dynamic beside static): each quantises its own */
    readers[n++] = r;
  }
  if (n < 2 || x->dtype != DAMO_F32) return 0;
  const int zp = readers[0]->fparam[0] > 0.0f ? readers[0]->iparam[Q_ZERO_POINT] & 0xff : 0;
  damo_node *q = damo_graph_add_node(g, DAMO_OP_QUANTIZE_U8, 1, &x, &zp, 1, &readers[0]->fparam[0], 1);
  if (!q) return -1;
  snprintf(q->name, sizeof q->name, "%.*s.u8", (int)sizeof q->name - 4, x->name);
  damo_graph_move_after(g, q, x);
  for (int i = 0; i < n; i++) {
    readers[i]->in[0] = q;
    if (qdense_infer(readers[i]) != DAMO_OK) return -1;
  }
  return 1;
}

/* ------------------------------------------------------------------ int8 chains */

static int is_qlinear(const damo_node *n) { return n->op == DAMO_OP_QDENSE || n->op == DAMO_OP_QCONV2D; }

damo_status damo_int8_chain(damo_graph *g, int n_keep, damo_node *const *keep) {
  const char *off = getenv("DAMO_INT8_CHAIN"); /* "0": f32 hand-overs, to compare with the chains */
  if (off && !strcmp(off, "0")) return DAMO_OK;
  for (int i = 0; i < g->n_nodes; i++) {
    damo_node *p = g->nodes[i];
    if (!is_qlinear(p) || p->fparam[1] > 0.0f || residual_of(p)) continue;
    /* Walk the single readers through ops that carry uint8 unchanged (max pooling, reshapes;
     * dropout, the identity of inference, is stepped over where the walk goes on) to a
     * calibrated int8 layer. */
    damo_node *path[16], *cur = p, *next;
    int n_path = 0;
    while ((next = sole_reader(g, cur, n_keep, keep)) && n_path < 16) {
      damo_node *dropout = NULL;
      if (next->op == DAMO_OP_DROPOUT && !(dropout = next, next = sole_reader(g, dropout, n_keep, keep))) break;
      const damo_node *read = dropout ? dropout : cur;
      const int carries = next->op == DAMO_OP_MAX_POOL2D || next->op == DAMO_OP_RESHAPE;
      const int ends = is_qlinear(next) && next->in[0] == read && next->fparam[0] > 0.0f;
      if (!carries && !ends) break; /* a dropout before anything else stays (a forward may train) */
      for (int k = 0; dropout && k < next->n_in; k++)
        if (next->in[k] == dropout) next->in[k] = cur; /* the dropout is no longer needed */
      if (carries) {
        path[n_path++] = cur = next;
        continue;
      }
      const int zp = next->iparam[next->op == DAMO_OP_QDENSE ? Q_ZERO_POINT : QC_ZERO_POINT] & 0xff;
      p->fparam[1] = next->fparam[0];
      if (p->op == DAMO_OP_QDENSE) p->iparam[Q_OUT_ZERO_POINT] = zp;
      else p->iparam[QC_ZERO_POINT] = (p->iparam[QC_ZERO_POINT] & 0xff) | zp << 8;
      damo_status st = damo_op_table[p->op]->infer(p);
      for (int k = 0; k < n_path && st == DAMO_OK; k++) st = damo_op_table[path[k]->op]->infer(path[k]);
      if (st == DAMO_OK) st = damo_op_table[next->op]->infer(next);
      if (st != DAMO_OK) return damo_error_prefix(st, "int8 chain from '%s': ", p->name);
      break;
    }
  }
  /* an input several int8 products read is quantised once for all (the loop's end is read
   * each time round: nodes added go after their input, and are not themselves shared) */
  for (int i = 0; i < g->n_nodes; i++) {
    damo_node *x = g->nodes[i];
    if (x->op == DAMO_OP_QUANTIZE_U8) continue;
    if (share_input_quantisation(g, x) < 0) return damo_error_prefix(damo_graph_status(g), "int8 graph: sharing the "
                                                                       "quantisation of '%s': ", x->name);
  }
  /* a dynamic reader's range comes with its input where the producer can take it while the
   * values are in cache (a qdense's epilogue, a layer norm's rows): the same scale and zero
   * point as the reader's own pass over the input would find */
  for (int i = 0; i < g->n_nodes; i++) {
    damo_node *r = g->nodes[i], *p = r->n_in ? r->in[0] : NULL;
    const int dynamic_reader = (r->op == DAMO_OP_QDENSE || r->op == DAMO_OP_QUANTIZE_U8) && !(r->fparam[0] > 0.0f);
    if (dynamic_reader && p && p->dtype == DAMO_F32 && (p->op == DAMO_OP_QDENSE || p->op == DAMO_OP_LAYER_NORM))
      p->records_range = 1;
  }
  return DAMO_OK;
}
