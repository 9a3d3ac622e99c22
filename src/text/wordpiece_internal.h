/* wordpiece_internal.h - BERT's WordPiece vocabulary shared by wordpiece_vocab.c (loading,
 * saving, lookups) and wordpiece.c (normalisation, word pieces, encode, decode). Not public API. */
#ifndef DAMO_WORDPIECE_INTERNAL_H
#define DAMO_WORDPIECE_INTERNAL_H

#include "text_internal.h"

struct damo_wordpiece {
  int32_t n_ids;      /* ids 0 .. n_ids-1, all present (a vocabulary is a list) */
  char *pool;         /* the spellings as in vocab.txt, NUL-separated */
  size_t *off;        /* n_ids offsets into pool */
  uint32_t *len;      /* n_ids byte lengths */
  int32_t *slots;     /* open addressing: spelling -> id (-1 empty), mask+1 slots */
  size_t mask;
  size_t max_len;     /* the longest spelling, in bytes */
  size_t max_cont;    /* the longest continuation ("##x") without its "##", in bytes */
  int32_t pad, unk, cls, sep, msk; /* the special tokens' ids */
};

/* FNV-1a, continued from state h over n bytes (start from WP_HASH_SEED). */
#define WP_HASH_SEED 1469598103934665603ull
static inline uint64_t wp_hash_more(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
  return h;
}
/* The slot a hash starts probing at (the low FNV bits alone cluster on similar words). */
static inline size_t wp_slot(uint64_t h, size_t mask) { return (size_t)(h ^ (h >> 29) ^ (h >> 47)) & mask; }

/* The id of "##" s[0..n) when cont is 1, of s[0..n) itself when 0; -1 if absent. */
int32_t wp_lookup(const damo_wordpiece *wp, int cont, const char *s, size_t n);

#endif
