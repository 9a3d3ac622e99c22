/* lstm_fashion_mnist.c - the W3 benchmark model: each image read as a sequence of 28 rows
 * of 28 pixels by an LSTM, its last state classified. The Keras version:
 *
 *   model = Sequential([Input((28, 28)), Rescaling(1/255), LSTM(128), Dense(10)])
 *   model.compile(Adam(CosineDecay(3e-3, steps)), SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
 *   model.fit(x_train, y_train, epochs=5, batch_size=64, validation_split=0.1)
 *
 * usage: example_lstm_fashion_mnist [epochs] */
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

int main(int argc, char **argv) {
  int epochs = argc > 1 ? atoi(argv[1]) : 5;
  printf("%s\n", damo_info_string());
  damo_tensor *x_train, *y_train, *x_test, *y_test;
  TRY(damo_dataset_load("fashion-mnist", "train", &x_train, &y_train));
  TRY(damo_dataset_load("fashion-mnist", "test", &x_test, &y_test));

  const int64_t input_shape[] = {28, 28}; /* 28 timesteps of 28 features */
  damo_model *model = damo_sequential_new(2, input_shape);
  TRY(damo_model_add(model, damo_rescaling(1.0f / 255.0f, 0.0f)));
  TRY(damo_model_add(model, damo_lstm_layer(128, 0)));
  TRY(damo_model_add(model, damo_dense(10, DAMO_ACT_NONE)));
  TRY(damo_model_build(model, 42));
  damo_model_summary(model, stdout);

  /* Adam 3e-3 decayed to 0 by a cosine over the run: chosen on the validation split
   * (0.8922 against 0.8742 for a constant 1e-3, 5 epochs). */
  damo_compile_options compile = {.optimizer = damo_adam(3e-3f),
                                  .loss = DAMO_LOSS_SPARSE_CATEGORICAL_CE, .metrics = DAMO_METRIC_ACCURACY};
  compile.optimizer.schedule.kind = DAMO_SCHED_COSINE;
  TRY(damo_model_compile(model, &compile));
  damo_fit_options fit = {.epochs = epochs, .batch_size = 64, .seed = 42, .verbose = -1, .validation_split = 0.1f};
  TRY(damo_model_fit(model, x_train, y_train, &fit, NULL));

  float loss, accuracy;
  TRY(damo_model_evaluate(model, x_test, y_test, 256, &loss, &accuracy));
  printf("test_loss: %.4f - test_accuracy: %.4f\n", loss, accuracy);

  damo_model_free(model);
  damo_tensor_free(x_train);
  damo_tensor_free(y_train);
  damo_tensor_free(x_test);
  damo_tensor_free(y_test);
  return 0;
}
