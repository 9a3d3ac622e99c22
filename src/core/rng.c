/* rng.c - the deterministic generator every seeded part of damo draws from: xoshiro128++
 * (fast, 32-bit output, good statistics) seeded through splitmix64 so nearby seeds give
 * unrelated streams. */
#include "core/core.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void damo_rng_seed(damo_rng *r, uint64_t seed) {
  uint64_t x = seed;
  uint64_t a = splitmix64(&x), b = splitmix64(&x);
  r->s[0] = (uint32_t)a;
  r->s[1] = (uint32_t)(a >> 32);
  r->s[2] = (uint32_t)b;
  r->s[3] = (uint32_t)(b >> 32);
  if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1; /* the all-zero state is absorbing */
}

static inline uint32_t rotl32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

uint32_t damo_rng_u32(damo_rng *r) {
  uint32_t *s = r->s;
  uint32_t result = rotl32(s[0] + s[3], 7) + s[0];
  uint32_t t = s[1] << 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl32(s[3], 11);
  return result;
}

float damo_rng_uniform(damo_rng *r) { return (float)(damo_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

float damo_rng_normal(damo_rng *r) {
  /* Box-Muller; u1 is kept away from 0 so log() stays finite. */
  float u1 = ((float)(damo_rng_u32(r) >> 8) + 0.5f) * (1.0f / 16777216.0f);
  float u2 = damo_rng_uniform(r);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

uint32_t damo_rng_below(damo_rng *r, uint32_t n) {
  /* Lemire's multiply-shift with rejection: unbiased. */
  uint64_t m = (uint64_t)damo_rng_u32(r) * n;
  uint32_t low = (uint32_t)m;
  if (low < n) {
    uint32_t threshold = (uint32_t)(-n) % n;
    while (low < threshold) {
      m = (uint64_t)damo_rng_u32(r) * n;
      low = (uint32_t)m;
    }
  }
  return (uint32_t)(m >> 32);
}

void damo_shuffle_indices(int64_t *idx, int64_t n, damo_rng *r) {
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)damo_rng_below(r, (uint32_t)(i + 1));
    int64_t t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
}
