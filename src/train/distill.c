/* distill.c - knowledge distillation for fit: the options checked against the student, the
 * teacher and the data, and the teacher's soft targets. Without augmentation each row's
 * targets never change (the teacher is frozen), so they are computed once for every training
 * row, by the teacher model or given as probabilities by the caller, and staged alongside x
 * and y. With on-the-fly augmentation the teacher scores each augmented batch as the student
 * sees it ("consistent teaching", Beyer et al. 2022): a view's targets are the teacher's for
 * that view, not for the row it came from. fit trains through the one trainer on the
 * DAMO_GRAPH_DISTILL graph, whose loss mixes them in (model.c). */
#include "train/distill.h"

#include <math.h>
#include <string.h>

/* A classifier fit can distill into or from: one output, sparse categorical CE over its
 * classes or binary CE over one sigmoid unit. Returns the soft targets' width (classes; 2 for
 * a sigmoid unit), 0 for anything else. */
static int64_t classes_of(const damo_model *m) {
  if (!m->has_compile_options || damo_model_num_outputs(m) != 1) return 0;
  const damo_loss loss = damo_model_output_compile(m, 0).loss;
  const int64_t C = damo_model_output_size(m);
  if (loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE) return C;
  return loss == DAMO_LOSS_BINARY_CE && C == 1 ? 2 : 0;
}

/* p (rows, 1) of a sigmoid unit as the two classes' (rows, 2): (1 - p, p). */
static damo_tensor *two_classes(const damo_tensor *p) {
  const int64_t shape[2] = {p->shape[0], 2};
  damo_tensor *t = damo_tensor_new(DAMO_F32, 2, shape);
  for (int64_t r = 0; t && r < shape[0]; r++) {
    const float v = damo_tensor_f32(p)[r];
    damo_tensor_f32(t)[2 * r] = 1.0f - v, damo_tensor_f32(t)[2 * r + 1] = v;
  }
  return t;
}

/* Probabilities given by the caller: (rows, K), or (rows, 1) for two classes; each finite in
 * [0, 1] and, for K > 1, each row summing to 1. A copy in the (rows, K) form. */
static damo_status check_probs(const damo_tensor *p, int64_t rows, int64_t K, damo_tensor **out) {
  *out = NULL;
  char s[96];
  const int64_t width = p->ndim == 2 ? p->shape[1] : -1;
  if (p->dtype != DAMO_F32 || p->ndim != 2 || p->shape[0] != rows || (width != K && !(K == 2 && width == 1)))
    return damo_error(DAMO_ERR_SHAPE, "fit: distillation: the teacher's probabilities are %s %s; expected f32 (%lld, %lld)%s",
                      damo_dtype_name(p->dtype), damo_shape_string(p->ndim, p->shape, s, sizeof s), (long long)rows,
                      (long long)K, K == 2 ? " or (rows, 1)" : "");
  for (int64_t r = 0; r < rows; r++) {
    const float *row = damo_tensor_f32(p) + r * width;
    double sum = 0;
    for (int64_t c = 0; c < width; c++) {
      if (!(row[c] >= 0.0f && row[c] <= 1.0f))
        return damo_error(DAMO_ERR_NUMERIC, "fit: distillation: the teacher's probability at row %lld, class %lld is "
                          "%g (expected a number in [0, 1])", (long long)r, (long long)c, (double)row[c]);
      sum += row[c];
    }
    if (width > 1 && fabs(sum - 1.0) > 1e-3)
      return damo_error(DAMO_ERR_NUMERIC, "fit: distillation: the teacher's probabilities of row %lld sum to %g, not 1",
                        (long long)r, sum);
  }
  *out = width == 1 ? two_classes(p) : damo_tensor_clone(p);
  return *out ? DAMO_OK : damo_error(DAMO_ERR_NOMEM, "fit: distillation: out of memory");
}

/* The teacher's probabilities at temperature T in place: p^(1/T) renormalised per row, which
 * is softmax(logits / T) for p = softmax(logits). A probability that underflowed to 0 stays 0. */
static void temper(float *p, int64_t rows, int64_t C, float T) {
  for (int64_t r = 0; r < rows; r++) {
    float *row = p + r * C;
    double top = -INFINITY;
    for (int64_t c = 0; c < C; c++) {
      row[c] = row[c] > 0 ? logf(row[c]) / T : -INFINITY;
      top = row[c] > top ? row[c] : top;
    }
    double sum = 0;
    for (int64_t c = 0; c < C; c++) sum += row[c] = expf((float)(row[c] - top));
    for (int64_t c = 0; c < C; c++) row[c] = (float)(row[c] / sum);
  }
}

/* The teacher's soft targets for x's rows, predicted `batch` at a time: (rows, classes) at
 * temperature T, a sigmoid teacher's p as the two classes (1 - p, p). */
static damo_status teacher_targets(damo_model *teacher, int n_x, const damo_tensor *const *x, int batch, float T,
                                   damo_tensor **out) {
  damo_tensor *p = NULL;
  damo_status st = damo_model_predict_inputs(teacher, n_x, x, batch, &p);
  if (st != DAMO_OK) return st;
  if (p->shape[1] == 1) { /* a sigmoid teacher */
    damo_tensor *two = two_classes(p);
    damo_tensor_free(p);
    if (!(p = two)) return damo_error(DAMO_ERR_NOMEM, "out of memory");
  }
  temper((float *)p->data, p->shape[0], p->shape[1], T);
  *out = p;
  return DAMO_OK;
}

/* The student's side of a distillation: the loss's settings and the targets' width. */
static void set_up(damo_model *m, const damo_distill_options *d, int64_t K) {
  m->distill_temperature = d->temperature;
  m->distill_alpha = d->alpha;
  m->distill_classes = K;
  damo_model_graph_release(&m->distill_graph); /* built for these settings */
}

damo_status damo_distill_begin(damo_model *m, const damo_fit_options *o, int n_x, const damo_tensor *const *x,
                               damo_tensor **soft) {
  *soft = NULL;
  const damo_distill_options *d = o->distill;
  if (!m || !m->compiled) return damo_error(DAMO_ERR_STATE, "fit: compile the model before fit");
  if (!d->teacher == !d->teacher_probs)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation needs a teacher or its probabilities (one of the two)");
  if (d->teacher == m) return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation: the teacher is the student itself");
  if (!(d->temperature > 0) || !isfinite(d->temperature))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation temperature %g must be finite and > 0",
                      (double)d->temperature);
  if (!(d->alpha >= 0 && d->alpha <= 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation alpha %g is outside [0, 1]", (double)d->alpha);
  const int64_t K = classes_of(m);
  if (!K)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation needs a student with one output trained with "
                      "sparse_categorical_crossentropy (or one sigmoid unit with binary_crossentropy)");
  if (o->augment && d->teacher_probs)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation: given probabilities belong to the rows as stored, "
                      "not to their augmented views: give the teacher model (it scores each augmented batch), or "
                      "turn augmentation off");
  damo_tensor *probs = NULL;
  damo_status st;
  if (d->teacher_probs) {
    if ((st = check_probs(d->teacher_probs, x[0]->shape[0], K, &probs)) != DAMO_OK) return st;
    temper((float *)probs->data, probs->shape[0], K, d->temperature);
  } else {
    const int64_t Kt = classes_of(d->teacher);
    if (!Kt)
      return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation needs a teacher with one output trained with "
                        "sparse_categorical_crossentropy or binary_crossentropy (its predictions are class probabilities)");
    if (d->teacher->quantization)
      return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation from an int8 teacher is not supported (use the f32 one)");
    if (K != Kt)
      return damo_error(DAMO_ERR_SHAPE, "fit: distillation: the teacher predicts %lld classes, the student %lld",
                        (long long)Kt, (long long)K);
    if (n_x != d->teacher->n_inputs)
      return damo_error(DAMO_ERR_SHAPE, "fit: distillation: the teacher takes %d inputs, the data has %d",
                        d->teacher->n_inputs, n_x);
    if (o->augment) { /* the teacher scores each batch as it is staged (damo_distill_score_batch) */
      const damo_model *t = d->teacher;
      if (t->in_ndim != m->in_ndim || memcmp(t->in_shape, m->in_shape, (size_t)m->in_ndim * sizeof *m->in_shape)) {
        char a[96], b[96];
        return damo_error(DAMO_ERR_SHAPE, "fit: distillation with augmentation: the teacher takes rows %s, the "
                          "student %s (each augmented view goes to both as it is)",
                          damo_shape_string(t->in_ndim, t->in_shape, a, sizeof a),
                          damo_shape_string(m->in_ndim, m->in_shape, b, sizeof b));
      }
      m->distill_teacher = d->teacher;
      set_up(m, d, K);
      return DAMO_OK;
    }
    if ((st = teacher_targets(d->teacher, n_x, x, 256, d->temperature, &probs)) != DAMO_OK)
      return damo_error_prefix(st, "fit: distillation: the teacher: ");
  }
  m->distill_soft = probs;
  set_up(m, d, K);
  *soft = probs;
  return DAMO_OK;
}

damo_status damo_distill_score_batch(damo_model *m, damo_model_graph *mg, int64_t n) {
  if (!m->distill_teacher || !mg->soft || n == 0) return DAMO_OK;
  int64_t shape[DAMO_MAX_DIMS + 1] = {n}; /* the staged views; the teacher's input shape is the student's (checked) */
  memcpy(shape + 1, m->in_shape, (size_t)m->in_ndim * sizeof *shape);
  damo_tensor *x = damo_tensor_wrap(DAMO_F32, m->in_ndim + 1, shape, mg->x_stage), *p = NULL;
  if (!x) return damo_error(DAMO_ERR_NOMEM, "fit: distillation: out of memory");
  const damo_tensor *const xs[1] = {x};
  damo_status st = teacher_targets(m->distill_teacher, 1, xs, (int)n, m->distill_temperature, &p);
  damo_tensor_free(x);
  if (st != DAMO_OK) return damo_error_prefix(st, "fit: distillation: the teacher, on an augmented batch: ");
  memcpy(mg->soft_stage, p->data, (size_t)(n * m->distill_classes) * sizeof(float));
  damo_tensor_free(p);
  return DAMO_OK;
}

void damo_distill_end(damo_model *m, damo_tensor *soft) {
  damo_model_graph_release(&m->distill_graph);
  m->distill_soft = NULL;
  m->distill_teacher = NULL;
  damo_tensor_free(soft);
}
