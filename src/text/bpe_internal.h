/* bpe_internal.h - the GPT-2 BPE vocabulary shared by bpe_vocab.c (loading) and bpe.c
 * (pre-tokenisation, merging, encode, decode). Not public API. */
#ifndef DAMO_BPE_INTERNAL_H
#define DAMO_BPE_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include "text_internal.h"

#include <pcre2.h>

/* One slot of the merge table: the adjacent pair (left, right) of token ids, its rank
 * (lower merges first) and the id of the merged token. left == -1: empty slot. */
typedef struct bpe_pair_slot {
  int32_t left, right;
  int32_t rank, merged;
} bpe_pair_slot;

struct damo_bpe {
  int32_t n_ids;          /* ids are 0 .. n_ids-1 (holes possible in a foreign vocabulary) */
  /* Each id's token in two spellings: as in encoder.json (GPT-2's printable alphabet,
   * UTF-8) and as the raw bytes it stands for. Both pools are NUL-separated. */
  char *spelling_pool, *bytes_pool;
  size_t *spelling_off; /* n_ids entries, SIZE_MAX for an id the vocabulary lacks */
  size_t *bytes_off;    /* n_ids entries */
  uint32_t *bytes_len;  /* n_ids entries */
  int32_t *spelling_slots; /* open addressing: spelling -> id (-1 empty), spelling_mask+1 slots */
  size_t spelling_mask;
  int32_t byte_id[256]; /* the single-byte token of each byte value */
  bpe_pair_slot *pairs; /* open addressing, pair_mask+1 slots */
  size_t pair_mask;
  size_t n_pairs;
  pcre2_code *pattern; /* GPT-2's pre-tokenisation pattern, JIT-compiled when possible */
  int pattern_jit;
};

/* FNV-1a over n bytes. */
static inline uint64_t bpe_hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
  return h;
}

static inline uint64_t bpe_hash_pair(int32_t a, int32_t b) {
  uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

/* The merge-table slot of (left, right), or NULL if the pair never merges. */
static inline const bpe_pair_slot *bpe_pair_find(const damo_bpe *bpe, int32_t left, int32_t right) {
  for (size_t i = bpe_hash_pair(left, right) & bpe->pair_mask;; i = (i + 1) & bpe->pair_mask) {
    const bpe_pair_slot *s = &bpe->pairs[i];
    if (s->left < 0) return NULL;
    if (s->left == left && s->right == right) return s;
  }
}

/* The id of a token by its encoder.json spelling (n bytes), or -1. */
int32_t bpe_spelling_id(const damo_bpe *bpe, const char *s, size_t n);
/* Merges one piece of len >= 1 bytes into sym (len entries); returns the number of ids
 * (bpe_merge.c). Both give the same ids; the heap one is O(n log n) and returns SIZE_MAX
 * when out of memory. */
size_t bpe_merge_simple(const damo_bpe *bpe, const unsigned char *word, size_t len, int32_t *sym);
size_t bpe_merge_heap(const damo_bpe *bpe, const unsigned char *word, size_t len, int32_t *sym);
/* Compiles GPT-2's pattern into bpe->pattern (bpe.c). */
damo_status bpe_compile_pattern(damo_bpe *bpe);

#endif
