/* vmath.h - exp, sigmoid and tanh written so compilers vectorise the loops that call them
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

#endif
