/* dedup.c - exact and near-duplicate detection over cleaned texts (damo_text_dedup).
 *
 * Exact: texts hashed, equal hashes compared byte for byte. Near: each text becomes the set
 * of hashes of its word k-shingles; a MinHash signature of N_HASHES values estimates the
 * Jaccard similarity of two sets, and LSH over N_BANDS bands of ROWS values each makes two
 * texts candidates when one band is equal. With 16 bands of 8 rows a pair at Jaccard 0.9 is
 * a candidate with probability 1 - (1 - 0.9^8)^16 > 0.9999, one at 0.5 with about 0.06, so
 * few exact Jaccard checks (a merge of two sorted sets) are needed to confirm. Every step
 * is deterministic: the kept text of a group is the earliest in the given order. */
#include "text_internal.h"

#define N_BANDS 16
#define ROWS 8
#define N_HASHES (N_BANDS * ROWS)

typedef struct shingle_set {
  uint64_t *h; /* sorted, distinct */
  size_t n;
} shingle_set;

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* The sorted distinct hashes of the k-word shingles of text (one shingle when shorter). */
static int make_shingles(const char *text, int k, shingle_set *out) {
  size_t len = strlen(text), pos = 0, start, wl, n_words = 0, cap = 64;
  uint64_t *words = malloc(cap * sizeof *words);
  if (!words) return 0;
  while (damo_text_next_word(text, len, &pos, &start, &wl)) {
    if (n_words == cap) {
      uint64_t *w = realloc(words, 2 * cap * sizeof *words);
      if (!w) {
        free(words);
        return 0;
      }
      words = w;
      cap *= 2;
    }
    words[n_words++] = text_hash64(text + start, wl);
  }
  size_t n_sh = n_words == 0 ? 0 : n_words < (size_t)k ? 1 : n_words - (size_t)k + 1;
  size_t span = n_words < (size_t)k ? n_words : (size_t)k;
  /* Reuse the word array in place: shingle i only reads words i..i+span-1, never earlier ones. */
  for (size_t i = 0; i < n_sh; i++) {
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (size_t j = 0; j < span; j++) h = mix64(h ^ words[i + j]) + j;
    words[i] = h;
  }
  qsort(words, n_sh, sizeof *words, cmp_u64);
  size_t m = 0;
  for (size_t i = 0; i < n_sh; i++)
    if (m == 0 || words[i] != words[m - 1]) words[m++] = words[i];
  out->h = words;
  out->n = m;
  return 1;
}

static double jaccard(const shingle_set *a, const shingle_set *b) {
  size_t i = 0, j = 0, inter = 0;
  while (i < a->n && j < b->n) {
    if (a->h[i] == b->h[j]) inter++, i++, j++;
    else if (a->h[i] < b->h[j]) i++;
    else j++;
  }
  size_t uni = a->n + b->n - inter;
  return uni ? (double)inter / (double)uni : 1.0;
}

typedef struct band_entry {
  uint64_t key;
  int64_t doc;
} band_entry;

static int cmp_band(const void *a, const void *b) {
  const band_entry *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return x->doc < y->doc ? -1 : x->doc > y->doc;
}

/* Marks exact duplicates; returns how many, or -1 on no memory. */
static int64_t mark_exact(const char *const *texts, int64_t n, int64_t *dup_of) {
  size_t n_slots = 16;
  while (n_slots < (size_t)n * 2) n_slots *= 2;
  int64_t *slots = malloc(n_slots * sizeof *slots);
  uint64_t *hashes = malloc((size_t)(n ? n : 1) * sizeof *hashes);
  if (!slots || !hashes) {
    free(slots);
    free(hashes);
    return -1;
  }
  memset(slots, 0xFF, n_slots * sizeof *slots);
  int64_t removed = 0;
  for (int64_t i = 0; i < n; i++) {
    const char *t = texts[i] ? texts[i] : "";
    size_t len = strlen(t);
    hashes[i] = text_hash64(t, len);
    size_t h = (size_t)hashes[i] & (n_slots - 1);
    dup_of[i] = -1;
    for (; slots[h] >= 0; h = (h + 1) & (n_slots - 1)) {
      int64_t j = slots[h];
      if (hashes[j] == hashes[i] && strcmp(texts[j] ? texts[j] : "", t) == 0) {
        dup_of[i] = j;
        removed++;
        break;
      }
    }
    if (dup_of[i] < 0) slots[h] = i;
  }
  free(slots);
  free(hashes);
  return removed;
}

damo_status damo_text_dedup(const char *const *texts, int64_t n, const damo_dedup_options *opt,
                            int64_t *duplicate_of, int64_t *n_exact, int64_t *n_near) {
  if (n_exact) *n_exact = 0;
  if (n_near) *n_near = 0;
  if (n < 0 || (n > 0 && (!texts || !duplicate_of)))
    return damo_error(DAMO_ERR_INVALID_ARG, "text_dedup: NULL texts or output for %lld texts", (long long)n);
  float threshold = opt && opt->near_threshold != 0 ? opt->near_threshold : 0.9f;
  int k = opt && opt->shingle_words > 0 ? opt->shingle_words : 5;
  if (!(threshold > 0)) return damo_error(DAMO_ERR_INVALID_ARG, "text_dedup: near_threshold %g must be > 0", threshold);
  int64_t exact = mark_exact(texts, n, duplicate_of);
  if (exact < 0) return damo_error(DAMO_ERR_NOMEM, "text_dedup: out of memory hashing %lld texts", (long long)n);
  if (n_exact) *n_exact = exact;
  if (threshold > 1 || n < 2) return DAMO_OK;

  damo_status status = DAMO_OK;
  shingle_set *sets = calloc((size_t)n, sizeof *sets);
  uint64_t *sig = malloc((size_t)n * N_HASHES * sizeof *sig);
  band_entry *bands = malloc((size_t)n * N_BANDS * sizeof *bands);
  int64_t *band_pos = malloc((size_t)n * N_BANDS * sizeof *band_pos);
  int64_t *checked = malloc((size_t)n * sizeof *checked);
  if (!sets || !sig || !bands || !band_pos || !checked) goto nomem;

  uint64_t mult[N_HASHES], add[N_HASHES];
  for (int h = 0; h < N_HASHES; h++) { /* fixed constants: results never depend on a seed */
    mult[h] = mix64(0x1234567ULL + 2 * (uint64_t)h) | 1;
    add[h] = mix64(0x89abcdefULL + 2 * (uint64_t)h + 1);
  }
  int64_t n_bands = 0; /* entries per band list */
  for (int64_t i = 0; i < n; i++) {
    if (duplicate_of[i] >= 0) continue;
    if (!make_shingles(texts[i] ? texts[i] : "", k, &sets[i])) goto nomem;
    if (sets[i].n == 0) continue;
    uint64_t *s = sig + (size_t)i * N_HASHES;
    for (int h = 0; h < N_HASHES; h++) s[h] = UINT64_MAX;
    for (size_t j = 0; j < sets[i].n; j++) {
      uint64_t x = sets[i].h[j];
      for (int h = 0; h < N_HASHES; h++) {
        uint64_t v = x * mult[h] + add[h];
        v ^= v >> 29;
        if (v < s[h]) s[h] = v;
      }
    }
    for (int b = 0; b < N_BANDS; b++)
      bands[(size_t)b * n + n_bands] = (band_entry){text_hash64(s + b * ROWS, ROWS * sizeof *s), i};
    n_bands++;
  }
  for (int b = 0; b < N_BANDS; b++) {
    band_entry *e = bands + (size_t)b * n;
    qsort(e, (size_t)n_bands, sizeof *e, cmp_band);
    for (int64_t p = 0; p < n_bands; p++) band_pos[(size_t)b * n + e[p].doc] = p;
  }
  for (int64_t i = 0; i < n; i++) checked[i] = -1;

  int64_t near = 0;
  for (int64_t i = 0; i < n; i++) {
    if (duplicate_of[i] >= 0 || sets[i].n == 0) continue;
    int64_t best = -1;
    for (int b = 0; b < N_BANDS; b++) {
      const band_entry *e = bands + (size_t)b * n;
      int64_t p = band_pos[(size_t)b * n + i];
      /* Earlier documents with the same band key sit just before i in (key, doc) order. */
      for (int64_t q = p - 1; q >= 0 && e[q].key == e[p].key; q--) {
        int64_t j = e[q].doc;
        if (best >= 0 && j > best) continue;
        if (duplicate_of[j] >= 0 || checked[j] == i) continue;
        checked[j] = i;
        if (jaccard(&sets[i], &sets[j]) >= (double)threshold) best = j;
      }
    }
    if (best >= 0) {
      duplicate_of[i] = best;
      near++;
    }
  }
  if (n_near) *n_near = near;
  goto done;
nomem:
  status = damo_error(DAMO_ERR_NOMEM, "text_dedup: out of memory for the near-duplicate search over %lld texts", (long long)n);
done:
  if (sets)
    for (int64_t i = 0; i < n; i++) free(sets[i].h);
  free(sets);
  free(sig);
  free(bands);
  free(band_pos);
  free(checked);
  return status;
}
