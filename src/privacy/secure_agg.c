/* secure_agg.c - pairwise-mask secure aggregation (after Bonawitz et al. 2017, without the
 * dropout recovery): the server learns the sum of the clients' updates and nothing else.
 *
 * Each update is encoded in fixed point (round(v * scale)) as 32-bit words; client i of the
 * round's m adds, for every other client j, the words of a pseudo-random stream shared by the
 * pair (+ when i < j, - when i > j), all modulo 2^32. Summed over the m clients every pair's
 * stream appears once with each sign, so the masks cancel exactly and the sum of the encoded
 * updates is left; one client's masked words are uniformly distributed whatever its update.
 * The pair streams are keyed here by a round key and the pair's indices (a simulation: real
 * clients agree on them by Diffie-Hellman key exchange, so the server never knows them). */
#include "core/core.h"

#include <math.h>

/* A pair's stream key for this round: both clients derive the same one. */
static uint64_t pair_key(uint64_t round_key, int a, int b) {
  uint64_t k = round_key ^ 0x5ec0a66e5ec0a66eULL;
  k = damo_hash_bytes(k, &a, sizeof a);
  return damo_hash_bytes(k, &b, sizeof b);
}

damo_status damo_secagg_mask(const float *update, int64_t n, double scale, int client, int clients, uint64_t round_key,
                             uint32_t *masked) {
  if (!update || !masked || n < 0 || !(scale > 0) || clients < 1 || client < 0 || client >= clients)
    return damo_error(DAMO_ERR_INVALID_ARG, "secagg_mask: client %d of %d, %lld values at scale %g", client, clients,
                      (long long)n, scale);
  const double limit = 2147483647.0 / (double)clients; /* the sum of every client's words must not wrap */
  for (int64_t i = 0; i < n; i++) {
    const double v = (double)update[i] * scale;
    if (!(fabs(v) < limit))
      return damo_error(DAMO_ERR_NUMERIC, "secagg_mask: value %g at %lld does not fit the fixed-point range at scale %g "
                        "for %d clients (lower the scale, or clip the updates)", (double)update[i], (long long)i, scale,
                        clients);
    masked[i] = (uint32_t)(int32_t)llround(v);
  }
  for (int other = 0; other < clients; other++) {
    if (other == client) continue;
    const int lo = client < other ? client : other, hi = client < other ? other : client;
    const uint64_t key = pair_key(round_key, lo, hi);
    if (client < other)
      for (int64_t i = 0; i < n; i++) masked[i] += damo_counter_random(key, (uint64_t)i);
    else
      for (int64_t i = 0; i < n; i++) masked[i] -= damo_counter_random(key, (uint64_t)i);
  }
  return DAMO_OK;
}

void damo_secagg_add(uint32_t *sum, const uint32_t *masked, int64_t n) {
  for (int64_t i = 0; i < n; i++) sum[i] += masked[i]; /* modulo 2^32 */
}

void damo_secagg_decode(const uint32_t *sum, int64_t n, double scale, float *out) {
  for (int64_t i = 0; i < n; i++) out[i] = (float)((double)(int32_t)sum[i] / scale);
}
