/* text_internal.h - helpers shared by the text pipeline (src/text/, src/data/text_dataset.c):
 * a growable byte buffer and UTF-8 helpers. Not public API. */
#ifndef DAMO_TEXT_INTERNAL_H
#define DAMO_TEXT_INTERNAL_H

#include "core/core.h"

/* A growable byte buffer. Appends never fail loudly: on out-of-memory `failed` is set and
 * later appends do nothing, so a long chain of appends is checked once at the end. The
 * bytes are kept NUL-terminated whenever p != NULL. */
typedef struct tbuf {
  char *p;
  size_t n, cap;
  int failed;
} tbuf;

int tbuf_reserve(tbuf *b, size_t extra);
void tbuf_put(tbuf *b, const char *s, size_t n);
void tbuf_putc(tbuf *b, char c);
static inline void tbuf_puts(tbuf *b, const char *s) { tbuf_put(b, s, strlen(s)); }
void tbuf_free(tbuf *b);

/* The length (2..4) of the valid UTF-8 multibyte sequence at s[0..avail), or 0 if the bytes
 * there are not one (overlong forms, surrogates and code points above U+10FFFF are invalid). */
size_t utf8_seq_len(const unsigned char *s, size_t avail);
/* 1 if s[0..n) is all valid UTF-8 (ASCII or whole multibyte sequences). */
int utf8_valid(const unsigned char *s, size_t n);
/* Appends code point cp as UTF-8; invalid ones (surrogates, > U+10FFFF, 0) become a space. */
void tbuf_put_codepoint(tbuf *b, uint32_t cp);

/* ASCII helpers that ignore the locale. */
static inline int t_isalpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static inline int t_isdigit(int c) { return c >= '0' && c <= '9'; }
static inline int t_isalnum(int c) { return t_isalpha(c) || t_isdigit(c); }
static inline int t_isspace(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static inline int t_lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
/* Case-insensitive comparison of s[0..n) against the lowercase literal lit (n >= strlen(lit)). */
int t_prefix_ci(const char *s, size_t n, const char *lit);

/* HTML to text: tags, comments, <script>/<style> content removed, entities decoded
 * (src/text/html.c). Links in <a href> / <img src> tags leave "urltoken"/"emailtoken". */
void html_to_text(const char *s, size_t n, tbuf *out);

/* The final normalisation (damo_text_normalize) of in, appended to out. */
damo_status text_normalize_buffer(const tbuf *in, int numbers_to_token, tbuf *out);

/* Windows-1252 bytes 0x80..0x9F as code points (0 where undefined): the "smart quotes" that
 * mail claiming iso-8859-1 and numeric HTML entities like &#146; actually mean. */
uint32_t cp1252_high(unsigned byte);

/* 64-bit FNV-1a followed by a finaliser (good avalanche, fast enough for words and texts). */
uint64_t text_hash64(const void *data, size_t n);

#endif
