/* distill.c - knowledge distillation for fit: the options checked against the student, the
 * teacher and the data, and the teacher's soft targets for every training row, computed
 * once (the teacher is frozen and the rows are not augmented, so each row's targets never
 * change). fit then trains through the one trainer on the DAMO_GRAPH_DISTILL graph, whose
 * loss mixes them in (model.c), with the rows staged alongside x and y. */
#include "train/distill.h"

#include <math.h>
#include <string.h>

static int is_classifier(const damo_model *m) {
  return m->has_compile_options && damo_model_num_outputs(m) == 1 &&
         damo_model_output_compile(m, 0).loss == DAMO_LOSS_SPARSE_CATEGORICAL_CE;
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

damo_status damo_distill_begin(damo_model *m, const damo_fit_options *o, int n_x, const damo_tensor *const *x,
                               damo_tensor **soft) {
  *soft = NULL;
  const damo_distill_options *d = o->distill;
  if (!m || !m->compiled) return damo_error(DAMO_ERR_STATE, "fit: compile the model before fit");
  if (!d->teacher) return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation without a teacher");
  if (d->teacher == m) return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation: the teacher is the student itself");
  if (!(d->temperature > 0) || !isfinite(d->temperature))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation temperature %g must be finite and > 0",
                      (double)d->temperature);
  if (!(d->alpha >= 0 && d->alpha <= 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation alpha %g is outside [0, 1]", (double)d->alpha);
  if (!is_classifier(m))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation needs a student with one output trained with "
                      "sparse_categorical_crossentropy");
  if (!is_classifier(d->teacher))
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation needs a teacher with one output trained with "
                      "sparse_categorical_crossentropy (its predictions are class probabilities)");
  if (d->teacher->quantization)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation from an int8 teacher is not supported (use the f32 one)");
  const int64_t C = damo_model_output_size(m), Ct = damo_model_output_size(d->teacher);
  if (C != Ct)
    return damo_error(DAMO_ERR_SHAPE, "fit: distillation: the teacher predicts %lld classes, the student %lld",
                      (long long)Ct, (long long)C);
  if (o->augment)
    return damo_error(DAMO_ERR_INVALID_ARG, "fit: distillation with on-the-fly augmentation is not supported (the "
                      "teacher's soft targets are computed once, for the rows as stored): turn augmentation off");
  if (n_x != d->teacher->n_inputs)
    return damo_error(DAMO_ERR_SHAPE, "fit: distillation: the teacher takes %d inputs, the data has %d",
                      d->teacher->n_inputs, n_x);
  damo_tensor *probs = NULL;
  damo_status st = damo_model_predict_inputs(d->teacher, n_x, x, 256, &probs);
  if (st != DAMO_OK) return damo_error_prefix(st, "fit: distillation: the teacher: ");
  temper((float *)probs->data, probs->shape[0], C, d->temperature);
  m->distill_temperature = d->temperature;
  m->distill_alpha = d->alpha;
  m->distill_soft = probs;
  damo_model_graph_release(&m->distill_graph); /* built for these settings */
  *soft = probs;
  return DAMO_OK;
}

void damo_distill_end(damo_model *m, damo_tensor *soft) {
  damo_model_graph_release(&m->distill_graph);
  m->distill_soft = NULL;
  damo_tensor_free(soft);
}
