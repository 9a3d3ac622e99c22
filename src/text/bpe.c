/* bpe.c - GPT-2 byte-level BPE: pre-tokenisation, merging by rank, encode and decode.
 *
 * Encoding cuts the text with GPT-2's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (PCRE2, JIT-compiled), starts each piece as one token per byte and repeatedly merges the
 * adjacent pair of lowest rank, every occurrence left to right, until no pair has a rank
 * (bpe_merge.c). A piece seen before in the same call is taken from a cache instead.
 *
 * \s is spelt out as JavaScript's class (the reference encoder is JavaScript): tab, LF, VT,
 * FF, CR, U+FEFF, U+2028, U+2029 and the Zs separators. PCRE2's own \s lacks U+FEFF. */
#include "bpe_internal.h"

#include <stdio.h>

#define JS_SPACE "\\t\\n\\x{0B}\\f\\r\\x{FEFF}\\x{2028}\\x{2029}\\p{Zs}"
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" JS_SPACE "\\p{L}\\p{N}]+"
                                   "|[" JS_SPACE "]+(?![^" JS_SPACE "])|[" JS_SPACE "]+";

damo_status bpe_compile_pattern(damo_bpe *bpe) {
  int code;
  PCRE2_SIZE offset;
  bpe->pattern = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &offset, NULL);
  if (!bpe->pattern) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(code, msg, sizeof msg);
    return damo_error(DAMO_ERR_UNSUPPORTED, "GPT-2 pattern: PCRE2 cannot compile it at offset %zu: %s (is PCRE2 built "
                      "with Unicode support?)", (size_t)offset, (const char *)msg);
  }
  /* No JIT (a build without it, or a system that forbids executable memory): the
   * interpreter gives the same matches, only slower. */
  bpe->pattern_jit = pcre2_jit_compile(bpe->pattern, PCRE2_JIT_COMPLETE) == 0;
  return DAMO_OK;
}

/* Offset of the first byte that does not start valid UTF-8, or len if all is valid. */
static size_t first_invalid_utf8(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t L = utf8_seq_len(s + i, len - i);
    if (!L) return i;
    i += L;
  }
  return len;
}

/* A growable array of ids. */
typedef struct id_array {
  int32_t *p;
  size_t n, cap;
} id_array;

static int ids_reserve(id_array *a, size_t extra) {
  if (a->n + extra <= a->cap) return 1;
  size_t cap = a->cap ? a->cap : 1024;
  while (cap < a->n + extra) cap *= 2;
  int32_t *p = realloc(a->p, cap * sizeof *p);
  if (!p) return 0;
  a->p = p;
  a->cap = cap;
  return 1;
}

/* The pieces already merged in this call: piece bytes (pointing into the text) -> a run
 * of ids in `ids`. Open addressing; word == NULL marks an empty slot. */
typedef struct piece_entry {
  const char *word;
  size_t len;
  size_t ids_off;
  size_t n_ids;
} piece_entry;

typedef struct piece_cache {
  piece_entry *slots;
  size_t mask, used;
  id_array ids;
} piece_cache;

static piece_entry *cache_slot(piece_cache *c, const char *word, size_t len) {
  for (size_t i = bpe_hash_bytes(word, len) & c->mask;; i = (i + 1) & c->mask) {
    piece_entry *e = &c->slots[i];
    if (!e->word || (e->len == len && !memcmp(e->word, word, len))) return e;
  }
}

static int cache_grow(piece_cache *c) {
  size_t cap = c->slots ? 2 * (c->mask + 1) : 4096;
  piece_entry *old = c->slots;
  size_t old_cap = c->slots ? c->mask + 1 : 0;
  c->slots = calloc(cap, sizeof *c->slots);
  if (!c->slots) {
    c->slots = old;
    return 0;
  }
  c->mask = cap - 1;
  for (size_t i = 0; i < old_cap; i++)
    if (old[i].word) *cache_slot(c, old[i].word, old[i].len) = old[i];
  free(old);
  return 1;
}

/* Up to this length a piece is merged by rescanning (faster for words); longer ones use
 * the heap (bpe_merge.c). */
enum { BPE_SIMPLE_MERGE_MAX = 128 };

/* Appends the ids of one piece to out, through the cache. */
static damo_status encode_piece(const damo_bpe *bpe, const char *word, size_t len, piece_cache *cache, id_array *work,
                                id_array *out) {
  if (len == 1) {
    if (!ids_reserve(out, 1)) return damo_error(DAMO_ERR_NOMEM, "damo_bpe_encode: out of memory");
    out->p[out->n++] = bpe->byte_id[(unsigned char)word[0]];
    return DAMO_OK;
  }
  if (2 * (cache->used + 1) > cache->mask + 1 && !cache_grow(cache))
    return damo_error(DAMO_ERR_NOMEM, "damo_bpe_encode: out of memory");
  piece_entry *e = cache_slot(cache, word, len);
  if (!e->word) {
    work->n = 0;
    if (!ids_reserve(work, len)) return damo_error(DAMO_ERR_NOMEM, "damo_bpe_encode: out of memory");
    size_t n = len <= BPE_SIMPLE_MERGE_MAX ? bpe_merge_simple(bpe, (const unsigned char *)word, len, work->p)
                                           : bpe_merge_heap(bpe, (const unsigned char *)word, len, work->p);
    if (n == SIZE_MAX) return damo_error(DAMO_ERR_NOMEM, "damo_bpe_encode: out of memory merging %zu bytes", len);
    if (!ids_reserve(&cache->ids, n)) return damo_error(DAMO_ERR_NOMEM, "damo_bpe_encode: out of memory");
    memcpy(cache->ids.p + cache->ids.n, work->p, n * sizeof *work->p);
    *e = (piece_entry){word, len, cache->ids.n, n};
    cache->ids.n += n;
    cache->used++;
  }
  if (!ids_reserve(out, e->n_ids)) return damo_error(DAMO_ERR_NOMEM, "damo_bpe_encode: out of memory");
  memcpy(out->p + out->n, cache->ids.p + e->ids_off, e->n_ids * sizeof *out->p);
  out->n += e->n_ids;
  return DAMO_OK;
}

/* Cuts text into GPT-2's pieces and encodes each. */
static damo_status encode_text(const damo_bpe *bpe, const char *text, size_t len, pcre2_match_data *md,
                               pcre2_match_context *mctx, id_array *out) {
  piece_cache cache = {0};
  id_array work = {0};
  damo_status st = DAMO_OK;
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
  size_t at = 0;
  while (at < len && st == DAMO_OK) {
    /* The text was checked once up front; checking on every call would be quadratic. */
    int rc = pcre2_match(bpe->pattern, (PCRE2_SPTR)text, len, at, PCRE2_NO_UTF_CHECK, md, mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break; /* cannot happen: every character fits one branch */
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      st = damo_error(DAMO_ERR_UNSUPPORTED, "damo_bpe_encode: pre-tokenising at byte %zu failed: %s", at,
                      (const char *)msg);
      break;
    }
    size_t start = ov[0], end = ov[1];
    if (end <= start) { /* an empty match cannot happen either; step one character on */
      at = start + 1;
      while (at < len && ((unsigned char)text[at] & 0xC0) == 0x80) at++;
      continue;
    }
    st = encode_piece(bpe, text + start, end - start, &cache, &work, out);
    at = end;
  }
  free(cache.slots);
  free(cache.ids.p);
  free(work.p);
  return st;
}

damo_status damo_bpe_encode(const damo_bpe *bpe, const char *text, size_t len, int32_t **ids, int64_t *n) {
  if (!ids || !n) return damo_error(DAMO_ERR_INVALID_ARG, "damo_bpe_encode: ids and n must not be NULL");
  *ids = NULL;
  *n = 0;
  if (!bpe || (!text && len)) return damo_error(DAMO_ERR_INVALID_ARG, "damo_bpe_encode: bpe or text is NULL");
  if (len == 0) return DAMO_OK;
  size_t bad = first_invalid_utf8((const unsigned char *)text, len);
  if (bad < len)
    return damo_error(DAMO_ERR_INVALID_ARG, "damo_bpe_encode: the text is not valid UTF-8 at byte offset %zu (byte 0x%02X)",
                      bad, (unsigned char)text[bad]);

  pcre2_match_data *md = pcre2_match_data_create_from_pattern(bpe->pattern, NULL);
  pcre2_match_context *mctx = pcre2_match_context_create(NULL);
  /* The JIT's default 32 KiB stack can run out on very long runs of whitespace. */
  pcre2_jit_stack *stack = bpe->pattern_jit ? pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL) : NULL;
  if (!md || !mctx || (bpe->pattern_jit && !stack)) {
    pcre2_match_data_free(md);
    pcre2_match_context_free(mctx);
    pcre2_jit_stack_free(stack);
    return damo_error(DAMO_ERR_NOMEM, "damo_bpe_encode: out of memory");
  }
  if (stack) pcre2_jit_stack_assign(mctx, NULL, stack);

  id_array out = {0};
  damo_status st = ids_reserve(&out, len / 4 + 16) ? encode_text(bpe, text, len, md, mctx, &out)
                                                   : damo_error(DAMO_ERR_NOMEM, "damo_bpe_encode: out of memory");
  pcre2_match_data_free(md);
  pcre2_match_context_free(mctx);
  pcre2_jit_stack_free(stack);
  if (st != DAMO_OK || out.n == 0) {
    free(out.p);
    return st;
  }
  int32_t *shrunk = realloc(out.p, out.n * sizeof *out.p);
  *ids = shrunk ? shrunk : out.p;
  *n = (int64_t)out.n;
  return DAMO_OK;
}

damo_status damo_bpe_decode(const damo_bpe *bpe, const int32_t *ids, int64_t n, char **text, size_t *len) {
  if (!text) return damo_error(DAMO_ERR_INVALID_ARG, "damo_bpe_decode: text must not be NULL");
  *text = NULL;
  if (len) *len = 0;
  if (!bpe || n < 0 || (!ids && n > 0))
    return damo_error(DAMO_ERR_INVALID_ARG, "damo_bpe_decode: bpe is NULL or the ids are missing (n = %lld)", (long long)n);
  size_t total = 0;
  for (int64_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= bpe->n_ids)
      return damo_error(DAMO_ERR_INVALID_ARG, "damo_bpe_decode: id %d at position %lld is outside the vocabulary [0, %d)",
                        id, (long long)i, bpe->n_ids);
    if (bpe->bytes_off[id] == SIZE_MAX)
      return damo_error(DAMO_ERR_INVALID_ARG, "damo_bpe_decode: id %d at position %lld is not in the vocabulary", id,
                        (long long)i);
    total += bpe->bytes_len[id];
  }
  char *buf = malloc(total + 1);
  if (!buf) return damo_error(DAMO_ERR_NOMEM, "damo_bpe_decode: out of memory for %zu bytes", total);
  size_t at = 0;
  for (int64_t i = 0; i < n; i++) {
    memcpy(buf + at, bpe->bytes_pool + bpe->bytes_off[ids[i]], bpe->bytes_len[ids[i]]);
    at += bpe->bytes_len[ids[i]];
  }
  buf[at] = '\0';
  *text = buf;
  if (len) *len = at;
  return DAMO_OK;
}
