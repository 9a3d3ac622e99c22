/* two_input_fashion_mnist.c - a functional model of two inputs: the Fashion-MNIST image, and
 * a side vector of numbers computed from it (the mean brightness of each of its 28 rows, a
 * silhouette profile). Each input has its own branch; the branches are concatenated and
 * classified together. The Keras version:
 *
 *   image = Input((28, 28), name="image"); profile = Input((28,), name="profile")
 *   a = Dense(128, "relu")(Flatten()(Rescaling(1/255)(image)))
 *   b = Dense(32, "relu")(Rescaling(1/255)(profile))
 *   out = Dense(10, "softmax")(Dense(64, "relu")(Concatenate()([a, b])))
 *   model = Model([image, profile], out)
 *   model.fit([x_train, p_train], y_train, epochs=3, batch_size=64, validation_split=0.1)
 *
 * It prints the test accuracy of the two-input model next to the same model without the
 * profile branch, trained the same way.
 *
 * usage: example_two_input_fashion_mnist [epochs] */
#include <damo.h>
#include <stdio.h>
#include <stdlib.h>

#define TRY(call)                                                    \
  do {                                                               \
    if ((call) != DAMO_OK) {                                         \
      fprintf(stderr, "error: %s\n", damo_last_error());             \
      return 1;                                                      \
    }                                                                \
  } while (0)

/* (N, 28) row means of (N, 28, 28) u8 images, in pixel units. */
static damo_tensor *row_profile(const damo_tensor *images) {
  const int64_t n = images->shape[0], shape[2] = {n, 28};
  damo_tensor *t = damo_tensor_new(DAMO_F32, 2, shape);
  const uint8_t *px = images->data;
  for (int64_t i = 0; t && i < n; i++)
    for (int r = 0; r < 28; r++) {
      int sum = 0;
      for (int c = 0; c < 28; c++) sum += px[(i * 28 + r) * 28 + c];
      damo_tensor_f32(t)[i * 28 + r] = (float)sum / 28.0f;
    }
  return t;
}

/* The image branch, and (with_profile) the profile branch joined to it. */
static damo_model *build(int with_profile) {
  damo_model *m = damo_functional_new();
  const int64_t image_shape[] = {28, 28}, profile_shape[] = {28};
  int image = damo_model_input(m, "image", 2, image_shape);
  int a = damo_model_call1(m, damo_rescaling(1.0f / 255.0f, 0.0f), image);
  a = damo_model_call1(m, damo_flatten(), a);
  a = damo_model_call1(m, damo_dense(128, DAMO_ACT_RELU), a);
  if (with_profile) {
    int profile = damo_model_input(m, "profile", 1, profile_shape);
    int b = damo_model_call1(m, damo_rescaling(1.0f / 255.0f, 0.0f), profile);
    b = damo_model_call1(m, damo_dense(32, DAMO_ACT_RELU), b);
    a = damo_model_call2(m, damo_concatenate_layer(-1), a, b);
  }
  int h = damo_model_call1(m, damo_dense(64, DAMO_ACT_RELU), a);
  int out = damo_model_call1(m, damo_dense(10, DAMO_ACT_SOFTMAX), h);
  if (damo_model_set_output(m, out) != DAMO_OK) {
    damo_model_free(m);
    return NULL;
  }
  return m;
}

int main(int argc, char **argv) {
  int epochs = argc > 1 ? atoi(argv[1]) : 3;
  damo_tensor *x_train, *y_train, *x_test, *y_test;
  TRY(damo_dataset_load("fashion-mnist", "train", &x_train, &y_train));
  TRY(damo_dataset_load("fashion-mnist", "test", &x_test, &y_test));
  damo_tensor *p_train = row_profile(x_train), *p_test = row_profile(x_test);
  const damo_tensor *train[] = {x_train, p_train}, *test[] = {x_test, p_test};

  float accuracy[2] = {0, 0};
  for (int with_profile = 1; with_profile >= 0; with_profile--) {
    damo_model *model = build(with_profile);
    if (!model) {
      fprintf(stderr, "error: %s\n", damo_last_error());
      return 1;
    }
    TRY(damo_model_build(model, 1));
    damo_model_summary(model, stdout);
    damo_compile_options compile = {.optimizer = damo_adam(1e-3f),
                                    .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = DAMO_METRIC_ACCURACY};
    TRY(damo_model_compile(model, &compile));
    damo_fit_options fit = {.epochs = epochs, .batch_size = 64, .seed = 42, .validation_split = 0.1f, .verbose = 2};
    TRY(damo_model_fit_inputs(model, 1 + with_profile, train, y_train, &fit, NULL));
    float loss;
    TRY(damo_model_evaluate_inputs(model, 1 + with_profile, test, y_test, 0, &loss, &accuracy[with_profile]));
    damo_model_free(model);
  }
  printf("test accuracy: image + row profile %.4f, image alone %.4f\n", accuracy[1], accuracy[0]);
  damo_tensor_free(x_train);
  damo_tensor_free(y_train);
  damo_tensor_free(x_test);
  damo_tensor_free(y_test);
  damo_tensor_free(p_train);
  damo_tensor_free(p_test);
  return 0;
}
