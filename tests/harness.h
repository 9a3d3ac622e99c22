/* Tiny test harness: CHECK macros count passes and failures; each test file's main()
 * calls RUN(fn) for its cases and returns test_summary(). The closing line has the
 * form "N passed, N failed" that CI reads. */
#ifndef DAMO_TEST_HARNESS_H
#define DAMO_TEST_HARNESS_H
#include <math.h>
#include <stdio.h>
#include <string.h>

static int test_passed, test_failed, test_case_failed;
static const char *test_current = "";

#define CHECK(cond)                                                                     \
  do {                                                                                  \
    if (cond) {                                                                         \
      test_passed++;                                                                    \
    } else {                                                                            \
      test_failed++;                                                                    \
      test_case_failed = 1;                                                             \
      fprintf(stderr, "  FAIL %s:%d in %s: %s\n", __FILE__, __LINE__, test_current, #cond); \
    }                                                                                   \
  } while (0)

#define CHECK_MSG(cond, ...)                                                            \
  do {                                                                                  \
    if (cond) {                                                                         \
      test_passed++;                                                                    \
    } else {                                                                            \
      test_failed++;                                                                    \
      test_case_failed = 1;                                                             \
      fprintf(stderr, "  FAIL %s:%d in %s: %s: ", __FILE__, __LINE__, test_current, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                     \
      fprintf(stderr, "\n");                                                            \
    }                                                                                   \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                           \
  do {                                                                                  \
    double a_ = (a), b_ = (b);                                                          \
    CHECK_MSG(fabs(a_ - b_) <= (tol), "%s=%.8g %s=%.8g tol=%g", #a, a_, #b, b_, (double)(tol)); \
  } while (0)

/* Largest |a-b| / (atol + rtol*|b|) over n floats; <= 1 means "close". */
static inline double test_close_ratio(const float *a, const float *b, long n, double atol, double rtol) {
  double worst = 0;
  for (long i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
    if (!(d <= worst)) worst = d; /* NaN propagates as worst */
  }
  return worst;
}

#define CHECK_CLOSE(a, b, n, atol, rtol)                                                \
  do {                                                                                  \
    double r_ = test_close_ratio((a), (b), (n), (atol), (rtol));                        \
    CHECK_MSG(r_ <= 1.0, "%s vs %s: worst error is %.3g x tolerance", #a, #b, r_);      \
  } while (0)

/* call fails with code, and damo_last_error() holds needle (the caller includes damo.h) */
#define EXPECT_FAIL(call, code, needle)                                                                     \
  do {                                                                                                      \
    damo_status st_ = (call);                                                                               \
    CHECK_MSG(st_ == (code), "%s gave %s (%s)", #call, damo_status_name(st_), damo_last_error());         \
    CHECK_MSG(strstr(damo_last_error(), (needle)) != NULL, "message '%s' lacks '%s'", damo_last_error(), \
              (needle));                                                                                    \
  } while (0)

#define RUN(fn)                                                                         \
  do {                                                                                  \
    test_current = #fn;                                                                 \
    test_case_failed = 0;                                                               \
    fn();                                                                               \
    fprintf(stderr, "%s %s\n", test_case_failed ? "[FAIL]" : "[ ok ]", #fn);          \
  } while (0)

static inline int test_summary(const char *suite) {
  printf("%s: %d passed, %d failed\n", suite, test_passed, test_failed);
  return test_failed ? 1 : 0;
}
#endif
