/* test_privacy.c - the DP-SGD accountant (src/privacy/accountant.c). Against Opacus' published
 * MNIST figures (batches of 256 of 60,000 examples, delta 1e-5, the classic conversion over
 * Opacus' orders: sigma 1.1 for 60 epochs -> epsilon 3.01, sigma 1.3 for 15 -> 1.19, sigma
 * 0.7 for 45 -> 7.10, within 0.02); against an independent computation (tests/ref/
 * gen_privacy.py integrates the mechanism's moment numerically) for integer and fractional
 * orders and both conversions; the limits (q = 1 is the Gaussian mechanism, RDP grows linearly
 * with steps, Balle et al.'s conversion is the tighter); the noise for a target epsilon; bad
 * arguments refused. */
#include "damo.h"
#include "harness.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>

static void test_opacus_table(void) {
  static const struct {
    double sigma, epochs, epsilon;
  } table[3] = {{1.1, 60, 3.01}, {1.3, 15, 1.19}, {0.7, 45, 7.10}};
  const double q = 256.0 / 60000.0;
  for (int i = 0; i < 3; i++) {
    double eps = 0, order = 0, tight = 0;
    CHECK(damo_dp_epsilon(q, table[i].sigma, table[i].epochs * 60000.0 / 256.0, 1e-5, DAMO_DP_CLASSIC, &eps, &order) ==
          DAMO_OK);
    CHECK(damo_dp_epsilon(q, table[i].sigma, table[i].epochs * 60000.0 / 256.0, 1e-5, DAMO_DP_BALLE2020, &tight, NULL) ==
          DAMO_OK);
    CHECK_MSG(fabs(eps - table[i].epsilon) <= 0.02 && order > 1 && tight < eps,
              "sigma %.1f, %.0f epochs: epsilon %.4f (Opacus %.2f) at order %.1f; Balle et al. %.4f", table[i].sigma,
              table[i].epochs, eps, table[i].epsilon, order, tight);
  }
}

static void test_independent(void) {
  FILE *f = fopen(DAMO_SOURCE_DIR "/tests/fixtures/privacy_ref.json", "rb");
  char *text = calloc(1, 1 << 16);
  const size_t len = f && text ? fread(text, 1, (1 << 16) - 1, f) : 0;
  if (f) fclose(f);
  CHECK(len > 0);
  cJSON *j = len ? cJSON_Parse(text) : NULL;
  free(text);
  CHECK(j != NULL);
  const cJSON *c;
  int n = 0;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "rdp")) {
    const double q = cJSON_GetObjectItem(c, "q")->valuedouble, s = cJSON_GetObjectItem(c, "sigma")->valuedouble;
    const double a = cJSON_GetObjectItem(c, "alpha")->valuedouble, want = cJSON_GetObjectItem(c, "rdp")->valuedouble;
    const double got = damo_dp_rdp(q, s, 1, a);
    CHECK_MSG(fabs(got - want) <= 1e-6 * fabs(want) + 1e-12, "q %g sigma %g order %g: RDP %.10g, integrated %.10g", q, s,
              a, got, want);
    CHECK_NEAR(damo_dp_rdp(q, s, 250, a), 250 * got, 1e-9 * fabs(250 * got)); /* composition adds */
    n++;
  }
  CHECK(n >= 8);
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "epsilon")) {
    const double q = cJSON_GetObjectItem(c, "q")->valuedouble, s = cJSON_GetObjectItem(c, "sigma")->valuedouble;
    const double steps = cJSON_GetObjectItem(c, "steps")->valuedouble, d = cJSON_GetObjectItem(c, "delta")->valuedouble;
    double classic = 0, balle = 0;
    CHECK(damo_dp_epsilon(q, s, steps, d, DAMO_DP_CLASSIC, &classic, NULL) == DAMO_OK);
    CHECK(damo_dp_epsilon(q, s, steps, d, DAMO_DP_BALLE2020, &balle, NULL) == DAMO_OK);
    CHECK_NEAR(classic, cJSON_GetObjectItem(c, "classic")->valuedouble, 1e-4);
    CHECK_NEAR(balle, cJSON_GetObjectItem(c, "balle")->valuedouble, 1e-4);
  }
  cJSON_Delete(j);
}

static void test_limits_and_search(void) {
  /* no subsampling: the Gaussian mechanism, alpha / (2 sigma^2) per step */
  CHECK_NEAR(damo_dp_rdp(1.0, 2.0, 10, 5.0), 10 * 5.0 / 8.0, 1e-12);
  CHECK(damo_dp_rdp(0, 1, 100, 2) == 0 && isnan(damo_dp_rdp(0.1, 1, 10, 1.0)) && isnan(damo_dp_rdp(1.5, 1, 1, 2)));
  /* RDP falls as the noise grows and rises with the sampling rate */
  CHECK(damo_dp_rdp(0.01, 2.0, 1, 8) < damo_dp_rdp(0.01, 1.0, 1, 8));
  CHECK(damo_dp_rdp(0.02, 1.0, 1, 8) > damo_dp_rdp(0.01, 1.0, 1, 8));
  double orders[200];
  CHECK(damo_dp_default_orders(NULL) == 151 && damo_dp_default_orders(orders) == 151);
  CHECK(fabs(orders[0] - 1.1) < 1e-12 && fabs(orders[98] - 10.9) < 1e-12 && orders[99] == 12 && orders[150] == 63);
  /* the noise for epsilon 3 over Opacus' MNIST run: just enough */
  const double q = 256.0 / 60000.0, steps = 60 * 60000.0 / 256.0;
  double sigma = 0, eps = 0, eps_less = 0;
  CHECK(damo_dp_sigma_for_epsilon(q, steps, 3.0, 1e-5, DAMO_DP_CLASSIC, &sigma) == DAMO_OK);
  CHECK(damo_dp_epsilon(q, sigma, steps, 1e-5, DAMO_DP_CLASSIC, &eps, NULL) == DAMO_OK);
  CHECK(damo_dp_epsilon(q, sigma * 0.99, steps, 1e-5, DAMO_DP_CLASSIC, &eps_less, NULL) == DAMO_OK);
  CHECK_MSG(eps <= 3.0 && eps > 2.99 && eps_less > 3.0 && fabs(sigma - 1.1) < 0.01, "sigma %.4f gives %.4f", sigma, eps);
  EXPECT_FAIL(damo_dp_epsilon(q, 0, steps, 1e-5, DAMO_DP_CLASSIC, &eps, NULL), DAMO_ERR_INVALID_ARG, "noise multiplier");
  EXPECT_FAIL(damo_dp_epsilon(q, 1, steps, 2, DAMO_DP_CLASSIC, &eps, NULL), DAMO_ERR_INVALID_ARG, "delta in (0, 1)");
  EXPECT_FAIL(damo_dp_sigma_for_epsilon(q, steps, 0, 1e-5, DAMO_DP_CLASSIC, &sigma), DAMO_ERR_INVALID_ARG, "must be > 0");
}

int main(void) {
  RUN(test_opacus_table);
  RUN(test_independent);
  RUN(test_limits_and_search);
  return test_summary("privacy");
}
