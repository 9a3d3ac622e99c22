/* test_distill.c - knowledge distillation through fit (damo_fit_options.distill): the soft
 * targets carry the teacher's function even when the labels are noise, alpha 0 is plain
 * training bit for bit, validation reports the student's own loss, augmented views are
 * taught as seen, and bad settings are refused with the model untouched. */
#include "harness.h"

#include <damo.h>
#include <math.h>
#include <stdlib.h>

enum { N = 1500, CLASSES = 3 };

/* Points in the square [-2, 2]^2; class = which third of the circle the angle falls in. */
static damo_tensor *points, *clean, *noise;

static void make_data(void) {
  const int64_t xs[] = {N, 2}, ys[] = {N};
  points = damo_tensor_new(DAMO_F32, 2, xs);
  clean = damo_tensor_new(DAMO_I32, 1, ys);
  noise = damo_tensor_new(DAMO_I32, 1, ys);
  damo_rng r;
  damo_rng_seed(&r, 5);
  float *x = damo_tensor_f32(points);
  int32_t *c = clean->data, *z = noise->data;
  for (int i = 0; i < N; i++) {
    x[2 * i] = 4.0f * damo_rng_uniform(&r) - 2.0f;
    x[2 * i + 1] = 4.0f * damo_rng_uniform(&r) - 2.0f;
    const double pi = 3.14159265358979, turn = (atan2(x[2 * i + 1], x[2 * i]) + pi) / (2 * pi); /* [0, 1] */
    c[i] = turn < 1.0 / 3 ? 0 : turn < 2.0 / 3 ? 1 : 2;
    z[i] = (int32_t)damo_rng_below(&r, CLASSES); /* labels that say nothing */
  }
}

static damo_model *mlp(int hidden, int classes, uint64_t seed, damo_loss loss) {
  const int64_t in[] = {2};
  damo_model *m = damo_sequential_new(1, in);
  damo_model_add(m, damo_dense(hidden, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(classes, DAMO_ACT_SOFTMAX));
  damo_model_build(m, seed);
  damo_compile_options c = {.optimizer = damo_adam(1e-2f), .loss = loss, .metrics = DAMO_METRIC_ACCURACY};
  damo_model_compile(m, &c);
  return m;
}

static damo_status fit(damo_model *m, const damo_tensor *y, const damo_distill_options *d, int epochs,
                       float validation_split, damo_history **h) {
  damo_fit_options o = {.epochs = epochs, .batch_size = 50, .seed = 9, .verbose = 0, .distill = d,
                        .validation_split = validation_split};
  return damo_model_fit(m, points, y, &o, h);
}

/* The share of rows where a's and b's most probable classes agree. */
static double agreement(damo_model *a, damo_model *b) {
  damo_tensor *pa = NULL, *pb = NULL;
  double same = 0;
  if (damo_model_predict(a, points, 256, &pa) == DAMO_OK && damo_model_predict(b, points, 256, &pb) == DAMO_OK)
    for (int i = 0; i < N; i++) {
      const float *ra = damo_tensor_f32(pa) + i * CLASSES, *rb = damo_tensor_f32(pb) + i * CLASSES;
      int ia = 0, ib = 0;
      for (int c = 1; c < CLASSES; c++) ia = ra[c] > ra[ia] ? c : ia, ib = rb[c] > rb[ib] ? c : ib;
      same += ia == ib;
    }
  damo_tensor_free(pa);
  damo_tensor_free(pb);
  return same / N;
}

static damo_tensor *predictions(damo_model *m) {
  damo_tensor *p = NULL;
  damo_model_predict(m, points, 256, &p);
  return p;
}

static int same_predictions(damo_model *a, damo_model *b) {
  damo_tensor *pa = predictions(a), *pb = predictions(b);
  const int same = pa && pb && !memcmp(pa->data, pb->data, (size_t)damo_tensor_numel(pa) * sizeof(float));
  damo_tensor_free(pa);
  damo_tensor_free(pb);
  return same;
}

static damo_model *teacher;

static void test_soft_targets_teach(void) {
  teacher = mlp(32, CLASSES, 1, DAMO_LOSS_SPARSE_CATEGORICAL_CE);
  CHECK(fit(teacher, clean, NULL, 30, 0, NULL) == DAMO_OK);
  float loss, acc;
  CHECK(damo_model_evaluate(teacher, points, clean, 256, &loss, &acc) == DAMO_OK);
  CHECK_MSG(acc > 0.95, "teacher accuracy %.3f", (double)acc);
  /* On labels that are noise the student learns only what the soft targets say. */
  damo_model *taught = mlp(16, CLASSES, 2, DAMO_LOSS_SPARSE_CATEGORICAL_CE);
  damo_distill_options d = {.teacher = teacher, .temperature = 2.0f, .alpha = 1.0f};
  CHECK_MSG(fit(taught, noise, &d, 20, 0, NULL) == DAMO_OK, "%s", damo_last_error());
  const double with_teacher = agreement(taught, teacher);
  CHECK_MSG(with_teacher > 0.9, "a student of the teacher alone agrees with it on %.3f", with_teacher);
  damo_model *alone = mlp(16, CLASSES, 2, DAMO_LOSS_SPARSE_CATEGORICAL_CE);
  CHECK(fit(alone, noise, NULL, 20, 0, NULL) == DAMO_OK);
  const double without = agreement(alone, teacher);
  CHECK_MSG(without < 0.75, "a student of the noise alone agrees with the teacher on %.3f", without);
  printf("  agreement with the teacher: %.3f distilled, %.3f from the noisy labels alone\n", with_teacher, without);
  damo_model_free(taught);
  damo_model_free(alone);
}

/* alpha 0: the soft term weighs nothing, so the run is plain training (the same trainer,
 * the same batches and dropout draws) bit for bit. */
static void test_alpha_zero_is_plain_training(void) {
  damo_model *a = mlp(8, CLASSES, 3, DAMO_LOSS_SPARSE_CATEGORICAL_CE), *b = mlp(8, CLASSES, 3, DAMO_LOSS_SPARSE_CATEGORICAL_CE);
  damo_distill_options d = {.teacher = teacher, .temperature = 3.0f, .alpha = 0.0f};
  CHECK(fit(a, clean, &d, 3, 0, NULL) == DAMO_OK);
  CHECK(fit(b, clean, NULL, 3, 0, NULL) == DAMO_OK);
  CHECK(same_predictions(a, b));
  damo_model_free(a);
  damo_model_free(b);
}

/* The history's loss is the mixed one; validation is the student's own (labels only). */
static void test_validation_is_the_students(void) {
  damo_model *s = mlp(8, CLASSES, 4, DAMO_LOSS_SPARSE_CATEGORICAL_CE);
  damo_distill_options d = {.teacher = teacher, .temperature = 4.0f, .alpha = 0.5f};
  damo_history *h = NULL;
  CHECK(fit(s, clean, &d, 2, 0.2f, &h) == DAMO_OK);
  CHECK(h && damo_history_epochs(h) == 2);
  const int64_t first_val = N - N / 5;
  const int64_t vs[] = {N / 5, 2}, vy[] = {N / 5};
  damo_tensor *xv = damo_tensor_new(DAMO_F32, 2, vs), *yv = damo_tensor_new(DAMO_I32, 1, vy);
  memcpy(xv->data, damo_tensor_f32(points) + first_val * 2, (size_t)(N / 5) * 2 * sizeof(float));
  memcpy(yv->data, (int32_t *)clean->data + first_val, (size_t)(N / 5) * sizeof(int32_t));
  float loss, acc;
  CHECK(damo_model_evaluate(s, xv, yv, 256, &loss, &acc) == DAMO_OK);
  if (h) CHECK_NEAR(damo_history_get(h, "val_loss", 1), loss, 1e-4);
  damo_history_free(h);
  damo_tensor_free(xv);
  damo_tensor_free(yv);
  damo_model_free(s);
}

static void test_refused(void) {
  damo_model *s = mlp(8, CLASSES, 5, DAMO_LOSS_SPARSE_CATEGORICAL_CE);
  damo_tensor *before = predictions(s);
#define D(t, T, a) {.teacher = t, .temperature = T, .alpha = a}
  const damo_distill_options bad[] = {D(teacher, 2.0f, 1.5f), D(teacher, 2.0f, -0.1f), D(teacher, 0.0f, 0.5f),
                                      D(teacher, NAN, 0.5f),  D(NULL, 2.0f, 0.5f),     D(s, 2.0f, 0.5f)};
#undef D
  const char *why[] = {"alpha", "alpha", "temperature", "temperature", "a teacher or its probabilities",
                       "student itself"};
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    CHECK(fit(s, clean, &bad[k], 1, 0, NULL) == DAMO_ERR_INVALID_ARG);
    CHECK_MSG(strstr(damo_last_error(), why[k]), "case %zu: %s", k, damo_last_error());
  }
  damo_model *four = mlp(8, 4, 6, DAMO_LOSS_SPARSE_CATEGORICAL_CE);
  damo_distill_options d = {.teacher = four, .temperature = 2.0f, .alpha = 0.5f};
  CHECK(fit(s, clean, &d, 1, 0, NULL) == DAMO_ERR_SHAPE);
  CHECK_MSG(strstr(damo_last_error(), "teacher predicts 4 classes, the student 3"), "%s", damo_last_error());
  damo_model *regression = mlp(8, CLASSES, 7, DAMO_LOSS_MSE);
  d.teacher = regression;
  CHECK(fit(s, clean, &d, 1, 0, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(strstr(damo_last_error(), "teacher with one output"), "%s", damo_last_error());
  d.teacher = teacher;
  damo_augment_options aug = {.max_shift = 1};
  damo_fit_options o = {.epochs = 1, .batch_size = 50, .verbose = 0, .distill = &d, .augment = &aug};
  CHECK(damo_model_fit(s, points, clean, &o, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(strstr(damo_last_error(), "augmentation"), "%s", damo_last_error());
  damo_tensor *after = predictions(s);
  CHECK(before && after && !memcmp(before->data, after->data, (size_t)damo_tensor_numel(before) * sizeof(float)));
  /* and plain training afterwards is as if nothing had happened */
  CHECK(fit(s, clean, NULL, 1, 0, NULL) == DAMO_OK);
  damo_tensor_free(before);
  damo_tensor_free(after);
  damo_model_free(four);
  damo_model_free(regression);
  damo_model_free(s);
}

/* Probabilities given instead of a teacher model: the same training, bit for bit, as the
 * teacher predicting them itself. */
static void test_given_probabilities(void) {
  damo_tensor *p = NULL;
  CHECK(damo_model_predict(teacher, points, 256, &p) == DAMO_OK);
  damo_model *a = mlp(8, CLASSES, 11, DAMO_LOSS_SPARSE_CATEGORICAL_CE), *b = mlp(8, CLASSES, 11, DAMO_LOSS_SPARSE_CATEGORICAL_CE);
  damo_distill_options by_model = {.teacher = teacher, .temperature = 3.0f, .alpha = 0.7f};
  damo_distill_options by_probs = {.teacher_probs = p, .temperature = 3.0f, .alpha = 0.7f};
  CHECK(fit(a, clean, &by_model, 2, 0.1f, NULL) == DAMO_OK);
  CHECK_MSG(fit(b, clean, &by_probs, 2, 0.1f, NULL) == DAMO_OK, "%s", damo_last_error());
  damo_tensor *pa = predictions(a), *pb = predictions(b);
  CHECK(pa && pb && !memcmp(pa->data, pb->data, damo_tensor_nbytes(pa)));
  damo_tensor_free(pa), damo_tensor_free(pb);
  /* refused: both sources, another row count, a NaN, a row not summing to 1 */
  by_probs.teacher = teacher;
  CHECK(fit(b, clean, &by_probs, 1, 0, NULL) == DAMO_ERR_INVALID_ARG && strstr(damo_last_error(), "one of the two"));
  by_probs.teacher = NULL;
  const int64_t fewer[2] = {N - 1, CLASSES};
  damo_tensor *short_p = damo_tensor_new(DAMO_F32, 2, fewer);
  by_probs.teacher_probs = short_p;
  CHECK(fit(b, clean, &by_probs, 1, 0, NULL) == DAMO_ERR_SHAPE);
  CHECK_MSG(strstr(damo_last_error(), "(1499, 3)") && strstr(damo_last_error(), "expected f32 (1500, 3)"), "%s",
            damo_last_error());
  by_probs.teacher_probs = p;
  damo_tensor_f32(p)[7] = NAN;
  CHECK(fit(b, clean, &by_probs, 1, 0, NULL) == DAMO_ERR_NUMERIC && strstr(damo_last_error(), "row 2, class 1"));
  damo_tensor_f32(p)[7] = 0.9f;
  CHECK(fit(b, clean, &by_probs, 1, 0, NULL) == DAMO_ERR_NUMERIC && strstr(damo_last_error(), "row 2"));
  CHECK_MSG(strstr(damo_last_error(), "sum to"), "%s", damo_last_error());
  damo_tensor_free(short_p), damo_tensor_free(p);
  damo_model_free(a), damo_model_free(b);
}

/* A sigmoid student (binary cross-entropy) learns a boundary from given probabilities,
 * (rows, 1) as a sigmoid teacher gives them, while its labels are noise. */
static void test_sigmoid_student(void) {
  const int64_t ps[2] = {N, 1}, ys[1] = {N};
  damo_tensor *p = damo_tensor_new(DAMO_F32, 2, ps), *coin = damo_tensor_new(DAMO_F32, 1, ys);
  for (int i = 0; i < N; i++) {
    const float *x = damo_tensor_f32(points) + 2 * i;
    damo_tensor_f32(p)[i] = 1.0f / (1.0f + expf(-4.0f * (x[0] - x[1])));
    damo_tensor_f32(coin)[i] = (float)(((int32_t *)noise->data)[i] & 1);
  }
  const int64_t in[] = {2};
  damo_model *s = damo_sequential_new(1, in);
  damo_model_add(s, damo_dense(8, DAMO_ACT_RELU));
  damo_model_add(s, damo_dense(1, DAMO_ACT_SIGMOID));
  damo_model_build(s, 3);
  damo_compile_options c = {.optimizer = damo_adam(1e-2f), .loss = DAMO_LOSS_BINARY_CE};
  damo_model_compile(s, &c);
  damo_distill_options d = {.teacher_probs = p, .temperature = 2.0f, .alpha = 1.0f};
  damo_fit_options o = {.epochs = 15, .batch_size = 50, .seed = 9, .verbose = 0, .distill = &d};
  CHECK_MSG(damo_model_fit(s, points, coin, &o, NULL) == DAMO_OK, "%s", damo_last_error());
  damo_tensor *q = predictions(s);
  double same = 0;
  for (int i = 0; q && i < N; i++) same += (damo_tensor_f32(q)[i] > 0.5f) == (damo_tensor_f32(p)[i] > 0.5f);
  CHECK_MSG(same / N > 0.95, "the sigmoid student agrees with the teacher on %.3f of the rows", same / N);
  printf("  sigmoid student: agreement %.3f\n", same / N);
  damo_tensor_free(q), damo_tensor_free(p), damo_tensor_free(coin);
  damo_model_free(s);
}

/* Augmented views are taught as they are seen: images whose class says which half (left or
 * right) is brighter, flipped left-right every time (flip_prob 1), so each view's class is
 * the opposite of its row's. The teacher scores each flipped batch, so the run equals one on
 * the rows flipped beforehand without augmentation (the teacher predicting them once); a
 * teacher scoring the rows as stored would teach the opposite classes. Given probabilities
 * belong to the stored rows and are refused with augmentation. */
enum { IMAGES = 600, H = 6, W = 5 };

static damo_model *image_mlp(uint64_t seed) {
  const int64_t in[] = {H, W};
  damo_model *m = damo_sequential_new(2, in);
  damo_model_add(m, damo_flatten());
  damo_model_add(m, damo_dense(12, DAMO_ACT_RELU));
  damo_model_add(m, damo_dense(2, DAMO_ACT_SOFTMAX));
  damo_model_build(m, seed);
  damo_compile_options c = {.optimizer = damo_adam(1e-2f), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE,
                            .metrics = DAMO_METRIC_ACCURACY};
  damo_model_compile(m, &c);
  return m;
}

static void test_augmented_views_are_taught(void) {
  const int64_t xs[] = {IMAGES, H, W}, ys[] = {IMAGES};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 3, xs), *flipped = damo_tensor_new(DAMO_F32, 3, xs);
  damo_tensor *y = damo_tensor_new(DAMO_I32, 1, ys), *y_flipped = damo_tensor_new(DAMO_I32, 1, ys);
  damo_rng r;
  damo_rng_seed(&r, 12);
  for (int i = 0; i < IMAGES; i++) {
    float *img = damo_tensor_f32(x) + i * H * W, left = 0, right = 0;
    for (int p = 0; p < H * W; p++) {
      img[p] = damo_rng_uniform(&r);
      if (p % W < W / 2) left += img[p];
      if (p % W > W / 2) right += img[p];
    }
    ((int32_t *)y->data)[i] = left > right;
    ((int32_t *)y_flipped->data)[i] = left <= right;
    for (int p = 0; p < H * W; p++) damo_tensor_f32(flipped)[i * H * W + p] = img[p - p % W + (W - 1 - p % W)];
  }
  damo_model *t = image_mlp(1);
  damo_fit_options plain = {.epochs = 40, .batch_size = 50, .seed = 3, .verbose = 0};
  CHECK(damo_model_fit(t, x, y, &plain, NULL) == DAMO_OK);
  float loss, acc;
  CHECK(damo_model_evaluate(t, flipped, y_flipped, 256, &loss, &acc) == DAMO_OK);
  CHECK_MSG(acc > 0.9, "the teacher's accuracy on flipped images %.3f", (double)acc);
  /* labels that are noise: the students learn what the teacher says of the views they see */
  damo_tensor *coin = damo_tensor_new(DAMO_I32, 1, ys);
  for (int i = 0; i < IMAGES; i++) ((int32_t *)coin->data)[i] = (int32_t)damo_rng_below(&r, 2);
  damo_distill_options d = {.teacher = t, .temperature = 2.0f, .alpha = 1.0f};
  damo_augment_options flip = {.flip_prob = 1.0f};
  damo_fit_options views = {.epochs = 15, .batch_size = 50, .seed = 4, .verbose = 0, .distill = &d, .augment = &flip};
  damo_fit_options stored = views;
  stored.augment = NULL;
  damo_model *a = image_mlp(2), *b = image_mlp(2);
  CHECK_MSG(damo_model_fit(a, x, coin, &views, NULL) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(damo_model_fit(b, flipped, coin, &stored, NULL) == DAMO_OK, "%s", damo_last_error());
  damo_tensor *pa = NULL, *pb = NULL;
  CHECK(damo_model_predict(a, flipped, 256, &pa) == DAMO_OK && damo_model_predict(b, flipped, 256, &pb) == DAMO_OK);
  double worst = 0;
  for (int64_t k = 0; pa && pb && k < damo_tensor_numel(pa); k++) {
    const double e = fabs((double)damo_tensor_f32(pa)[k] - damo_tensor_f32(pb)[k]);
    worst = e > worst ? e : worst;
  }
  CHECK_MSG(pa && pb && worst < 1e-4, "augmented-view distillation differs from the pre-flipped run by %g", worst);
  CHECK(damo_model_evaluate(a, flipped, y_flipped, 256, &loss, &acc) == DAMO_OK);
  CHECK_MSG(acc > 0.85, "the student taught on flipped views scores %.3f on them", (double)acc);
  printf("  augmented views: student accuracy on flipped images %.3f, %g from the pre-flipped run\n", (double)acc,
         worst);
  /* a teacher of another input shape is refused before any step */
  damo_model *wide = image_mlp(5);
  const int64_t other[] = {W, H};
  damo_model *turned = damo_sequential_new(2, other);
  damo_model_add(turned, damo_flatten());
  damo_model_add(turned, damo_dense(2, DAMO_ACT_SOFTMAX));
  damo_model_build(turned, 6);
  damo_compile_options tc = {.optimizer = damo_adam(1e-2f), .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE};
  damo_model_compile(turned, &tc);
  d.teacher = turned;
  CHECK(damo_model_fit(wide, x, coin, &views, NULL) == DAMO_ERR_SHAPE);
  CHECK_MSG(strstr(damo_last_error(), "the teacher takes rows (5, 6), the student (6, 5)"), "%s", damo_last_error());
  d.teacher = t;
  damo_model_free(wide), damo_model_free(turned);
  /* probabilities for the rows as stored are refused with augmentation, nothing trained */
  damo_tensor *p = NULL, *before = NULL, *after = NULL;
  CHECK(damo_model_predict(t, x, 256, &p) == DAMO_OK);
  damo_distill_options given = {.teacher_probs = p, .temperature = 2.0f, .alpha = 0.5f};
  views.distill = &given;
  CHECK(damo_model_predict(a, x, 256, &before) == DAMO_OK);
  CHECK(damo_model_fit(a, x, coin, &views, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(strstr(damo_last_error(), "augmented views"), "%s", damo_last_error());
  CHECK(damo_model_predict(a, x, 256, &after) == DAMO_OK);
  CHECK(before && after && !memcmp(before->data, after->data, damo_tensor_nbytes(before)));
  damo_tensor_free(p), damo_tensor_free(before), damo_tensor_free(after), damo_tensor_free(pa), damo_tensor_free(pb);
  damo_tensor_free(x), damo_tensor_free(flipped), damo_tensor_free(y), damo_tensor_free(y_flipped);
  damo_tensor_free(coin);
  damo_model_free(t), damo_model_free(a), damo_model_free(b);
}

int main(void) {
  make_data();
  RUN(test_soft_targets_teach);
  RUN(test_alpha_zero_is_plain_training);
  RUN(test_validation_is_the_students);
  RUN(test_refused);
  RUN(test_given_probabilities);
  RUN(test_sigmoid_student);
  RUN(test_augmented_views_are_taught);
  damo_model_free(teacher);
  damo_tensor_free(points);
  damo_tensor_free(clean);
  damo_tensor_free(noise);
  return test_summary("distill");
}
