/* vmath.h - exp, sigmoid, tanh and erf written so compilers vectorise the loops that call them
 * (libm's expf/tanhf are opaque calls that keep a loop scalar). exp uses the usual range
 * reduction x = k ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r and 2^k built in the
 * exponent bits; max relative error about 2 ulp over the float range. */
#ifndef DAMO_VMATH_H
#define DAMO_VMATH_H

#include <stdint.h>
#include <string.h>

static inline float damo_expf(float x) {
  /* Clamp so 2^k stays a normal float without a branch: e^x saturates at e^88 (1.7e38,
   * float max is 3.4e38) and at e^-87.3 (1.2e-38) instead of inf and denormals. */
  x = x < -87.33654f ? -87.33654f : (x > 88.0f ? 88.0f : x);
  /* k = round(x / ln2) without a branch: adding 1.5 * 2^23 leaves k in the low mantissa
   * bits of t (round to nearest), and subtracting it back gives k as a float. */
  float t = x * 1.44269504089f + 12582912.0f;
  float kf = t - 12582912.0f;
  int32_t tbits;
  memcpy(&tbits, &t, sizeof tbits);
  int32_t k = tbits - 0x4B400000;
  /* r = x - k ln2 in two pieces (Cody-Waite) so it stays exact */
  float r = x - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (k + 127) << 23; /* 2^k; k in [-126, 127] after the clamp */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float damo_sigmoidf(float x) { return 1.0f / (1.0f + damo_expf(-x)); }

/* tanh(x) = sign(x) (1 - e^{-2|x|}) / (1 + e^{-2|x|}): no cancellation for large |x|; for
 * |x| < 0.25 its Taylor series (to x^11) avoids the cancellation in 1 - e near 0. */
static inline float damo_tanhf(float x) {
  float ax = x < 0 ? -x : x;
  float e = damo_expf(-2.0f * ax);
  float t = (1.0f - e) / (1.0f + e);
  float x2 = x * x;
  float small =
      ax * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * (-0.053968254f + x2 * (0.021869489f - x2 * 0.008863236f)))));
  t = ax < 0.25f ? small : t;
  return x < 0 ? -t : t;
}

/* erf(x), branch-free so loops vectorise; within 2.4 ulp of the exact value (libm's erff is
 * an opaque call). |x| <= 1: erf(x) = x P(x^2); beyond: erf(x) = 1 - e^{-x^2} R(1/x), where
 * R approximates erfc(x) e^{x^2}, smooth on [1, 4]; erf(x) rounds to 1 in float for x > 3.92.
 * Both polynomials are least-squares fits on Chebyshev nodes made for damo (degrees 5 and 7). */
static inline float damo_erff(float x) {
  float ax = x < 0 ? -x : x;
  float s = ax * ax;
  float p = -5.6541058602e-4f;
  p = p * s + 4.9232776653e-3f;
  p = p * s - 2.6716385097e-2f;
  p = p * s + 1.1280364408e-1f;
  p = p * s - 3.7612349785e-1f;
  p = p * s + 1.1283791274e+0f;
  float small = ax * p;
  float xl = ax < 1.0f ? 1.0f : (ax > 4.0f ? 4.0f : ax);
  float t = 1.0f / xl;
  float r = -1.8135669147e-2f;
  r = r * t + 1.2200977554e-1f;
  r = r * t - 3.5671499616e-1f;
  r = r * t + 5.7823489996e-1f;
  r = r * t - 5.0725479161e-1f;
  r = r * t + 5.1414856849e-2f;
  r = r * t + 5.5767554517e-1f;
  r = r * t + 3.5397445725e-4f;
  float large = 1.0f - damo_expf(-xl * xl) * r;
  float e = ax <= 1.0f ? small : large;
  return x < 0 ? -e : e;
}

/* GELU's constants, for its forward loops (gelu_loops.c) and its backward (ops/gelu.c):
 * sqrt(2 / pi), 1 / sqrt 2, 1 / sqrt(2 pi), and the cubic term of the tanh form. */
#define GELU_SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_INV_SQRT_2 0.7071067811865476f
#define GELU_INV_SQRT_2PI 0.3989422804014327f
#define GELU_K1 0.044715f

#endif
