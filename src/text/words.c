/* words.c - the word tokeniser and the vocabulary (build, lookup, encode, vocab.txt). */
#include "text_internal.h"

#include <stdio.h>

/* ------------------------------------------------------------------ tokeniser */

/* Code points that are punctuation or symbols even though they are multibyte: Latin-1
 * punctuation (U+00A0..U+00BF, x, /), general punctuation (U+2000..U+206F: dashes, quotes,
 * ellipsis), currency and letter-like symbols, arrows, box drawing (U+20A0..U+2BFF),
 * CJK punctuation (U+3000..U+303F), the BOM and the replacement character. */
static int is_separator_cp(uint32_t cp) {
  return (cp >= 0xA0 && cp <= 0xBF && cp != 0xAA && cp != 0xBA && cp != 0xB5) || cp == 0xD7 || cp == 0xF7 ||
         (cp >= 0x2000 && cp <= 0x206F) || (cp >= 0x20A0 && cp <= 0x2BFF) || (cp >= 0x3000 && cp <= 0x303F) ||
         cp == 0xFEFF || cp == 0xFFFD;
}

static uint32_t decode_cp(const unsigned char *s, size_t L) {
  uint32_t cp = s[0] & (0x7F >> L);
  for (size_t k = 1; k < L; k++) cp = (cp << 6) | (s[k] & 0x3F);
  return cp;
}

/* Bytes of the word character at s[i] (ASCII letter/digit: 1, a multibyte letter: 2..4), or 0. */
static size_t word_char_len(const unsigned char *s, size_t i, size_t len) {
  if (s[i] < 0x80) return t_isalnum(s[i]) ? 1 : 0;
  size_t L = utf8_seq_len(s + i, len - i);
  return L && !is_separator_cp(decode_cp(s + i, L)) ? L : 0;
}

int damo_text_next_word(const char *text, size_t len, size_t *pos, size_t *start, size_t *word_len) {
  if (!text || !pos) return 0;
  const unsigned char *s = (const unsigned char *)text;
  size_t i = *pos;
  while (i < len && !word_char_len(s, i, len)) {
    size_t L = s[i] >= 0x80 ? utf8_seq_len(s + i, len - i) : 0;
    i += L ? L : 1;
  }
  if (i >= len) {
    *pos = len;
    return 0;
  }
  size_t b = i, last_char_end = i;
  while (i < len) {
    size_t L = word_char_len(s, i, len);
    if (L) {
      i += L;
      last_char_end = i;
    } else if (s[i] == '\'') {
      i++;
    } else {
      break;
    }
  }
  /* Trailing apostrophes ("dogs'") are quotes, not part of the word. */
  *start = b;
  *word_len = last_char_end - b;
  *pos = i;
  return 1;
}

/* ------------------------------------------------------------------ string -> id table */

struct damo_vocab {
  int32_t size;
  char **words;
  int32_t *slots; /* open addressing: id or -1; capacity a power of two, at most half full */
  size_t n_slots;
};

static int32_t table_find(const damo_vocab *v, const char *w, size_t len, size_t *slot_out) {
  size_t mask = v->n_slots - 1, h = (size_t)text_hash64(w, len) & mask;
  for (;; h = (h + 1) & mask) {
    int32_t id = v->slots[h];
    if (id < 0) {
      if (slot_out) *slot_out = h;
      return -1;
    }
    if (strlen(v->words[id]) == len && memcmp(v->words[id], w, len) == 0) return id;
  }
}

/* Takes ownership of words[0..size) (strings malloc'd); returns NULL and a message on failure. */
static damo_vocab *vocab_from_words(char **words, int32_t size) {
  damo_vocab *v = calloc(1, sizeof *v);
  size_t n_slots = 16;
  while (n_slots < (size_t)size * 2) n_slots *= 2;
  int32_t *slots = v ? malloc(n_slots * sizeof *slots) : NULL;
  if (!slots) {
    free(v);
    for (int32_t i = 0; i < size; i++) free(words[i]);
    free(words);
    damo_error(DAMO_ERR_NOMEM, "vocabulary: out of memory for %d words", (int)size);
    return NULL;
  }
  memset(slots, 0xFF, n_slots * sizeof *slots);
  v->size = size;
  v->words = words;
  v->slots = slots;
  v->n_slots = n_slots;
  for (int32_t i = 0; i < size; i++) {
    size_t slot;
    if (table_find(v, words[i], strlen(words[i]), &slot) < 0) v->slots[slot] = i;
  }
  return v;
}

void damo_vocab_free(damo_vocab *v) {
  if (!v) return;
  for (int32_t i = 0; i < v->size; i++) free(v->words[i]);
  free(v->words);
  free(v->slots);
  free(v);
}

int32_t damo_vocab_size(const damo_vocab *v) { return v ? v->size : 0; }

const char *damo_vocab_word(const damo_vocab *v, int32_t id) {
  return v && id >= 0 && id < v->size ? v->words[id] : NULL;
}

int32_t damo_vocab_id(const damo_vocab *v, const char *word, size_t len) {
  if (!v || !word) return DAMO_VOCAB_UNK;
  int32_t id = table_find(v, word, len, NULL);
  return id < 0 ? DAMO_VOCAB_UNK : id;
}

/* ------------------------------------------------------------------ building */

typedef struct word_count {
  char *word;
  size_t len;
  int64_t count;
} word_count;

typedef struct counter {
  word_count *items;
  size_t n, cap;
  int64_t *slots; /* index into items or -1 */
  size_t n_slots;
} counter;

static int counter_grow(counter *c) {
  size_t n_slots = c->n_slots ? c->n_slots * 2 : 1024;
  int64_t *slots = malloc(n_slots * sizeof *slots);
  if (!slots) return 0;
  memset(slots, 0xFF, n_slots * sizeof *slots);
  for (size_t i = 0; i < c->n; i++) {
    size_t h = (size_t)text_hash64(c->items[i].word, c->items[i].len) & (n_slots - 1);
    while (slots[h] >= 0) h = (h + 1) & (n_slots - 1);
    slots[h] = (int64_t)i;
  }
  free(c->slots);
  c->slots = slots;
  c->n_slots = n_slots;
  return 1;
}

static int counter_add(counter *c, const char *w, size_t len) {
  if ((c->n + 1) * 2 > c->n_slots && !counter_grow(c)) return 0;
  size_t mask = c->n_slots - 1, h = (size_t)text_hash64(w, len) & mask;
  for (; c->slots[h] >= 0; h = (h + 1) & mask) {
    word_count *e = &c->items[c->slots[h]];
    if (e->len == len && memcmp(e->word, w, len) == 0) {
      e->count++;
      return 1;
    }
  }
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 1024;
    word_count *items = realloc(c->items, cap * sizeof *items);
    if (!items) return 0;
    c->items = items;
    c->cap = cap;
  }
  char *copy = malloc(len + 1);
  if (!copy) return 0;
  memcpy(copy, w, len);
  copy[len] = '\0';
  c->items[c->n] = (word_count){copy, len, 1};
  c->slots[h] = (int64_t)c->n++;
  return 1;
}

static void counter_free(counter *c) {
  for (size_t i = 0; i < c->n; i++) free(c->items[i].word);
  free(c->items);
  free(c->slots);
}

/* Most frequent first; ties in byte order (strcmp), so the order never depends on hashing. */
static int by_count_then_bytes(const void *a, const void *b) {
  const word_count *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  return strcmp(x->word, y->word);
}

damo_status damo_vocab_build(const char *const *texts, int64_t n, int min_freq, int max_size, damo_vocab **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "vocab_build: NULL output");
  *out = NULL;
  if (n < 0 || (n > 0 && !texts)) return damo_error(DAMO_ERR_INVALID_ARG, "vocab_build: bad text list (n = %lld)", (long long)n);
  if (max_size < 0 || max_size == 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "vocab_build: max_size %d: need 0 (no limit) or >= 2 (<pad>, <unk>)", max_size);
  if (min_freq < 1) min_freq = 1;
  counter c;
  memset(&c, 0, sizeof c);
  for (int64_t t = 0; t < n; t++) {
    if (!texts[t]) continue;
    size_t len = strlen(texts[t]), pos = 0, start, wl;
    while (damo_text_next_word(texts[t], len, &pos, &start, &wl))
      if (!counter_add(&c, texts[t] + start, wl)) {
        counter_free(&c);
        return damo_error(DAMO_ERR_NOMEM, "vocab_build: out of memory after %zu distinct words", c.n);
      }
  }
  if (c.n) qsort(c.items, c.n, sizeof *c.items, by_count_then_bytes);
  size_t keep = 0;
  while (keep < c.n && c.items[keep].count >= min_freq) keep++;
  if (max_size > 0 && keep > (size_t)max_size - 2) keep = (size_t)max_size - 2;
  if (keep > INT32_MAX - 2) keep = INT32_MAX - 2;
  char **words = calloc(keep + 2, sizeof *words);
  if (!words) {
    counter_free(&c);
    return damo_error(DAMO_ERR_NOMEM, "vocab_build: out of memory for %zu words", keep + 2);
  }
  words[0] = damo_strdup("<pad>");
  words[1] = damo_strdup("<unk>");
  for (size_t i = 0; i < keep; i++) { /* hand the strings over instead of copying */
    words[i + 2] = c.items[i].word;
    c.items[i].word = NULL;
  }
  counter_free(&c);
  if (!words[0] || !words[1]) {
    for (size_t i = 0; i < keep + 2; i++) free(words[i]);
    free(words);
    return damo_error(DAMO_ERR_NOMEM, "vocab_build: out of memory");
  }
  *out = vocab_from_words(words, (int32_t)(keep + 2));
  return *out ? DAMO_OK : DAMO_ERR_NOMEM;
}

damo_status damo_vocab_encode(const damo_vocab *v, const char *text, size_t len, int max_len, int32_t *ids,
                              int64_t *n_words) {
  if (n_words) *n_words = 0;
  if (!v || (!text && len) || max_len < 0 || (max_len > 0 && !ids))
    return damo_error(DAMO_ERR_INVALID_ARG, "vocab_encode: %s", !v ? "NULL vocabulary" : max_len < 0 ? "negative max_len" : "NULL text or ids");
  int64_t count = 0;
  size_t pos = 0, start, wl;
  while (text && damo_text_next_word(text, len, &pos, &start, &wl)) {
    if (count < max_len) ids[count] = damo_vocab_id(v, text + start, wl);
    count++;
  }
  for (int64_t k = count; k < max_len; k++) ids[k] = DAMO_VOCAB_PAD;
  if (n_words) *n_words = count;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ vocab.txt */

damo_status damo_vocab_save(const damo_vocab *v, const char *path) {
  if (!v || !path) return damo_error(DAMO_ERR_INVALID_ARG, "vocab_save: NULL %s", v ? "path" : "vocabulary");
  tbuf b = {0};
  for (int32_t i = 0; i < v->size; i++) {
    tbuf_puts(&b, v->words[i]);
    tbuf_putc(&b, '\n');
  }
  if (b.failed) {
    tbuf_free(&b);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory writing %d words", path, (int)v->size);
  }
  damo_status s = damo_write_file_atomic(path, b.p, b.n);
  tbuf_free(&b);
  return s;
}

damo_status damo_vocab_load(const char *path, damo_vocab **out) {
  if (!out || !path) return damo_error(DAMO_ERR_INVALID_ARG, "vocab_load: NULL %s", out ? "path" : "output");
  *out = NULL;
  char *data;
  size_t size;
  damo_status s = damo_read_file(path, &data, &size);
  if (s) return s;
  size_t n_lines = 0;
  for (size_t i = 0; i < size; i++) n_lines += data[i] == '\n';
  if (size && data[size - 1] != '\n') n_lines++;
  if (n_lines < 2) {
    free(data);
    return damo_error(DAMO_ERR_FORMAT, "%s: %zu line(s); a vocabulary needs at least \"<pad>\" and \"<unk>\" on lines 1 and 2",
                      path, n_lines);
  }
  if (n_lines > INT32_MAX) {
    free(data);
    return damo_error(DAMO_ERR_FORMAT, "%s: %zu lines is more ids than int32 holds", path, n_lines);
  }
  char **words = calloc(n_lines, sizeof *words);
  damo_vocab *v = NULL;
  if (!words) {
    free(data);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %zu words", path, n_lines);
  }
  size_t line = 0, i = 0;
  while (i < size && line < n_lines) {
    const char *nl = memchr(data + i, '\n', size - i);
    size_t eol = nl ? (size_t)(nl - data) : size, len = eol - i;
    if (len && data[eol - 1] == '\r') len--; /* a file written on Windows */
    for (size_t k = 0; k < len; k++) {
      unsigned char ch = (unsigned char)data[i + k];
      if (ch <= ' ' || ch == 0x7F) {
        s = damo_error(DAMO_ERR_FORMAT, "%s: line %zu (byte offset %zu): a word contains %s 0x%02x; expected one word per line",
                       path, line + 1, i + k, ch == ' ' ? "a space" : "the control byte", ch);
        goto fail;
      }
    }
    if (len == 0) {
      s = damo_error(DAMO_ERR_FORMAT, "%s: line %zu (byte offset %zu) is empty; expected one word per line (id = line - 1)",
                     path, line + 1, i);
      goto fail;
    }
    static const char *const special[2] = {"<pad>", "<unk>"};
    if (line < 2 && !(len == 5 && memcmp(data + i, special[line], 5) == 0)) {
      s = damo_error(DAMO_ERR_FORMAT, "%s: line %zu is \"%.*s\", expected \"%s\" (id %zu)", path, line + 1,
                     (int)(len > 40 ? 40 : len), data + i, special[line], line);
      goto fail;
    }
    words[line] = malloc(len + 1);
    if (!words[line]) {
      s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory at line %zu", path, line + 1);
      goto fail;
    }
    memcpy(words[line], data + i, len);
    words[line][len] = '\0';
    line++;
    i = eol + 1;
  }
  v = vocab_from_words(words, (int32_t)line);
  words = NULL;
  if (!v) {
    s = DAMO_ERR_NOMEM;
    goto fail;
  }
  for (int32_t k = 0; k < v->size; k++)
    if (damo_vocab_id(v, v->words[k], strlen(v->words[k])) != k) {
      int32_t first = damo_vocab_id(v, v->words[k], strlen(v->words[k]));
      s = damo_error(DAMO_ERR_FORMAT, "%s: line %d repeats \"%s\" from line %d; every word must be listed once", path,
                     (int)k + 1, v->words[k], (int)first + 1);
      goto fail;
    }
  free(data);
  *out = v;
  return DAMO_OK;
fail:
  if (words) {
    for (size_t k = 0; k < n_lines; k++) free(words[k]);
    free(words);
  }
  damo_vocab_free(v);
  free(data);
  return s;
}
