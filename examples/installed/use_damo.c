/* use_damo.c - a program built against an installed damo (scripts/check_install.sh builds it
 * with pkg-config and with CMake's find_package): one GEMM checked against its exact result,
 * then a one-layer model trained to a linear function. Prints "use_damo: ok" and exits 0,
 * or says what was wrong and exits 1.
 *
 *   cc use_damo.c $(pkg-config --cflags --libs damo) -o use_damo
 */
#include <damo.h>

#include <stdio.h>
#include <string.h>

#define ROWS 256

static int check_gemm(void) {
  /* (2, 3) x (3, 2): small integers, so the float result is exact. */
  const float a[6] = {1, 2, 3, 4, 5, 6};
  const float b[6] = {7, 8, 9, 10, 11, 12};
  const float want[4] = {58, 64, 139, 154};
  float c[4] = {0};
  damo_sgemm(0, 0, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2);
  for (int i = 0; i < 4; i++) {
    if (c[i] != want[i]) {
      fprintf(stderr, "use_damo: damo_sgemm gave c[%d] = %g, expected %g\n", i, c[i], want[i]);
      return 1;
    }
  }
  return 0;
}

/* y = 2 x0 - x1 + 0.5 on a grid, learnt by one dense unit: the mean squared error must end
 * far below where it starts. */
static int check_training(void) {
  int bad = 1;
  damo_model *model = NULL;
  damo_tensor *x = damo_tensor_new(DAMO_F32, 2, (const int64_t[]){ROWS, 2});
  damo_tensor *y = damo_tensor_new(DAMO_F32, 2, (const int64_t[]){ROWS, 1});
  if (!x || !y) goto done;
  for (int i = 0; i < ROWS; i++) {
    const float x0 = (float)(i % 16) / 8.0f - 1.0f, x1 = (float)(i / 16) / 8.0f - 1.0f;
    damo_tensor_f32(x)[2 * i] = x0;
    damo_tensor_f32(x)[2 * i + 1] = x1;
    damo_tensor_f32(y)[i] = 2.0f * x0 - x1 + 0.5f;
  }
  model = damo_sequential_new(1, (const int64_t[]){2});
  if (!model || damo_model_add(model, damo_dense(1, DAMO_ACT_NONE)) != DAMO_OK) goto done;
  const damo_compile_options compile = {.optimizer = damo_adam(0.05f), .loss = DAMO_LOSS_MSE};
  if (damo_model_compile(model, &compile) != DAMO_OK) goto done;
  float before = 0, after = 0, accuracy = 0;
  if (damo_model_evaluate(model, x, y, ROWS, &before, &accuracy) != DAMO_OK) goto done;
  const damo_fit_options fit = {.epochs = 40, .batch_size = 32, .seed = 7, .verbose = 0};
  if (damo_model_fit(model, x, y, &fit, NULL) != DAMO_OK) goto done;
  if (damo_model_evaluate(model, x, y, ROWS, &after, &accuracy) != DAMO_OK) goto done;
  printf("use_damo: mse %.4f -> %.6f\n", before, after);
  if (!(after < 1e-3f && after < before / 100)) {
    fprintf(stderr, "use_damo: training did not fit y = 2 x0 - x1 + 0.5 (mse %g -> %g)\n", before, after);
    goto done;
  }
  bad = 0;
done:
  if (bad && *damo_last_error()) fprintf(stderr, "use_damo: %s\n", damo_last_error());
  damo_model_free(model);
  damo_tensor_free(x);
  damo_tensor_free(y);
  return bad;
}

int main(void) {
  printf("%s\n", damo_info_string());
  if (strncmp(damo_info_string(), "damo " DAMO_VERSION, strlen("damo " DAMO_VERSION)) != 0) {
    fprintf(stderr, "use_damo: the library is not version %s of damo.h\n", DAMO_VERSION);
    return 1;
  }
  if (check_gemm() || check_training()) return 1;
  printf("use_damo: ok\n");
  return 0;
}
