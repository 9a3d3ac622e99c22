/* binary_footwear.c - a binary classifier on a real task: is a Fashion-MNIST image footwear
 * (sandal, sneaker, ankle boot) or not? The Keras version:
 *
 *   model = Sequential([Input((28, 28)), Rescaling(1/255), Flatten(),
 *                       Dense(64, "relu"), Dense(32, "relu"), Dense(1, "sigmoid")])
 *   model.compile(Adam(1e-3), "binary_crossentropy", ["accuracy"])
 *   model.fit(x_train, is_footwear, epochs=3, batch_size=64, validation_split=0.1)
 *
 * usage: example_binary_footwear [epochs] */
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

/* 1.0 for sandals (5), sneakers (7) and ankle boots (9), else 0.0, shape (N, 1). */
static damo_tensor *is_footwear(const damo_tensor *labels) {
  int64_t shape[2] = {labels->shape[0], 1};
  damo_tensor *t = damo_tensor_new(DAMO_F32, 2, shape);
  for (int64_t i = 0; t && i < shape[0]; i++) {
    int c = damo_tensor_i32(labels)[i];
    damo_tensor_f32(t)[i] = (c == 5 || c == 7 || c == 9) ? 1.0f : 0.0f;
  }
  return t;
}

int main(int argc, char **argv) {
  int epochs = argc > 1 ? atoi(argv[1]) : 3;
  damo_tensor *x_train, *labels_train, *x_test, *labels_test;
  TRY(damo_dataset_load("fashion-mnist", "train", &x_train, &labels_train));
  TRY(damo_dataset_load("fashion-mnist", "test", &x_test, &labels_test));
  damo_tensor *y_train = is_footwear(labels_train), *y_test = is_footwear(labels_test);

  const int64_t input_shape[] = {28, 28};
  damo_model *model = damo_sequential_new(2, input_shape);
  TRY(damo_model_add(model, damo_rescaling(1.0f / 255.0f, 0.0f)));
  TRY(damo_model_add(model, damo_flatten()));
  TRY(damo_model_add(model, damo_dense(64, DAMO_ACT_RELU)));
  TRY(damo_model_add(model, damo_dense(32, DAMO_ACT_RELU)));
  TRY(damo_model_add(model, damo_dense(1, DAMO_ACT_SIGMOID)));
  TRY(damo_model_build(model, 1));
  damo_model_summary(model, stdout);

  damo_compile_options compile = {.optimizer = damo_adam(1e-3f),
                                  .loss = DAMO_LOSS_BINARY_CE, .metrics = DAMO_METRIC_ACCURACY};
  TRY(damo_model_compile(model, &compile));
  damo_fit_options fit = {.epochs = epochs, .batch_size = 64, .seed = 1, .verbose = -1, .validation_split = 0.1f};
  TRY(damo_model_fit(model, x_train, y_train, &fit, NULL));

  float loss, accuracy;
  TRY(damo_model_evaluate(model, x_test, y_test, 256, &loss, &accuracy));
  printf("test_loss: %.4f - test_accuracy: %.4f (footwear vs the rest)\n", loss, accuracy);

  damo_model_free(model);
  damo_tensor_free(x_train);
  damo_tensor_free(labels_train);
  damo_tensor_free(y_train);
  damo_tensor_free(x_test);
  damo_tensor_free(labels_test);
  damo_tensor_free(y_test);
  return 0;
}
