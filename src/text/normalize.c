/* normalize.c - the last step of cleaning any text (e-mails, plain documents): invalid UTF-8
 * and control bytes become spaces, URLs and e-mail addresses become "urltoken" and
 * "emailtoken", ASCII is lowercased, runs of white space become one space, and optionally
 * standalone numbers become "numtoken". Also the small shared helpers (tbuf, UTF-8, hash). */
#include "text_internal.h"

/* ------------------------------------------------------------------ shared helpers */

int tbuf_reserve(tbuf *b, size_t extra) {
  if (b->failed) return 0;
  if (b->n + extra + 1 <= b->cap) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->n + extra + 1) {
    if (cap > SIZE_MAX / 2) {
      b->failed = 1;
      return 0;
    }
    cap *= 2;
  }
  char *p = realloc(b->p, cap);
  if (!p) {
    b->failed = 1;
    return 0;
  }
  b->p = p;
  b->cap = cap;
  return 1;
}

void tbuf_put(tbuf *b, const char *s, size_t n) {
  if (!tbuf_reserve(b, n)) return;
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

void tbuf_putc(tbuf *b, char c) { tbuf_put(b, &c, 1); }

void tbuf_free(tbuf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

size_t utf8_seq_len(const unsigned char *s, size_t avail) {
  if (avail == 0) return 0;
  unsigned c = s[0];
  size_t len;
  uint32_t min;
  if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
  else return 0;
  if (avail < len) return 0;
  uint32_t cp = c & (0x7F >> len);
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[k] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

int utf8_valid(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t L = utf8_seq_len(s + i, n - i);
    if (!L) return 0;
    i += L;
  }
  return 1;
}

void tbuf_put_codepoint(tbuf *b, uint32_t cp) {
  char u[4];
  if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    tbuf_putc(b, ' ');
  } else if (cp < 0x80) {
    tbuf_putc(b, (char)cp);
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    tbuf_put(b, u, 2);
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    tbuf_put(b, u, 3);
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    tbuf_put(b, u, 4);
  }
}

int t_prefix_ci(const char *s, size_t n, const char *lit) {
  size_t m = strlen(lit);
  if (n < m) return 0;
  for (size_t i = 0; i < m; i++)
    if (t_lower((unsigned char)s[i]) != (unsigned char)lit[i]) return 0;
  return 1;
}

uint64_t text_hash64(const void *data, size_t n) {
  const unsigned char *p = data;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  /* FNV alone mixes the last bytes poorly into the high bits; finish with splitmix64. */
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

/* ------------------------------------------------------------------ normalisation */

static int is_email_local(int c) { return t_isalnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }
static int is_domain_char(int c) { return t_isalnum(c) || c == '.' || c == '-'; }
static int ends_url(int c) {
  return c <= ' ' || c >= 0x7F || c == '<' || c == '>' || c == '"' || c == '\'' || c == '`' || c == '{' ||
         c == '}' || c == '|' || c == '\\' || c == '^';
}

/* Writes through a pending-space state so runs of separators become exactly one space and
 * the result never starts or ends with one. */
typedef struct norm_writer {
  tbuf *out;
  int pending_space;
} norm_writer;

static void nw_space(norm_writer *w) { w->pending_space = 1; }
static void nw_put(norm_writer *w, const char *s, size_t n) {
  if (w->pending_space && w->out->n) tbuf_putc(w->out, ' ');
  w->pending_space = 0;
  tbuf_put(w->out, s, n);
}
static void nw_token(norm_writer *w, const char *tok) {
  nw_space(w);
  nw_put(w, tok, strlen(tok));
  nw_space(w);
}

/* A URL starting at s (scheme:// or www.), its length, or 0. */
static size_t url_length(const unsigned char *s, size_t n) {
  size_t start;
  if (t_prefix_ci((const char *)s, n, "http://")) start = 7;
  else if (t_prefix_ci((const char *)s, n, "https://")) start = 8;
  else if (t_prefix_ci((const char *)s, n, "ftp://")) start = 6;
  else if (t_prefix_ci((const char *)s, n, "www.") && n > 4 && t_isalnum(s[4])) start = 4;
  else return 0;
  size_t j = start;
  while (j < n && !ends_url(s[j])) j++;
  /* Sentence punctuation after a URL is not part of it. */
  while (j > start && s[j - 1] && strchr(".,;:!?)]", s[j - 1])) j--; /* strchr finds the NUL too */
  return j;
}

/* An e-mail address whose local part is s[0..local_len): the address length, or 0. */
static size_t email_length(const unsigned char *s, size_t n, size_t local_len) {
  if (local_len == 0 || local_len >= n || s[local_len] != '@') return 0;
  size_t j = local_len + 1, dots = 0;
  while (j < n && is_domain_char(s[j])) dots += s[j++] == '.';
  while (j > local_len + 1 && (s[j - 1] == '.' || s[j - 1] == '-')) dots -= s[--j] == '.';
  if (dots == 0 || j == local_len + 1 || s[local_len + 1] == '.') return 0;
  return j;
}

/* Replaces each standalone number ("42", "3.14", "1,000") in clean text by "numtoken". */
static void numbers_to_tokens(tbuf *b) {
  tbuf out = {0};
  const unsigned char *s = (const unsigned char *)b->p;
  size_t n = b->n, i = 0;
  while (i < n) {
    int prev_word = i > 0 && (t_isalnum(s[i - 1]) || s[i - 1] >= 0x80 || s[i - 1] == '\'');
    if (t_isdigit(s[i]) && !prev_word) {
      size_t j = i;
      while (j < n && (t_isdigit(s[j]) || ((s[j] == '.' || s[j] == ',') && j + 1 < n && t_isdigit(s[j + 1])))) j++;
      if (j == n || !(t_isalpha(s[j]) || s[j] >= 0x80 || s[j] == '\'')) {
        tbuf_puts(&out, "numtoken");
        i = j;
        continue;
      }
      tbuf_put(&out, (const char *)s + i, j - i);
      i = j;
      continue;
    }
    tbuf_putc(&out, (char)s[i++]);
  }
  if (out.failed) {
    b->failed = 1;
    tbuf_free(&out);
    return;
  }
  tbuf_free(b);
  *b = out;
  if (!b->p) tbuf_put(b, "", 0);
}

static damo_status normalize_into(const unsigned char *s, size_t n, int numbers_to_token, tbuf *out) {
  norm_writer w = {out, 0};
  size_t i = 0;
  int prev_local = 0; /* the previous byte could continue an e-mail local part */
  while (i < n) {
    unsigned c = s[i];
    if (c >= 0x80) {
      size_t L = utf8_seq_len(s + i, n - i);
      if (L == 0 || (L == 2 && c == 0xC2 && s[i + 1] == 0xA0)) { /* invalid, or U+00A0 no-break space */
        nw_space(&w);
        i += L ? L : 1;
      } else if (L == 3 && c == 0xE2 && s[i + 1] == 0x80 && s[i + 2] >= 0x93 && s[i + 2] <= 0x9D) {
        /* Typographic dashes and quotes as their ASCII forms, so "don\u2019t" is "don't". */
        static const char ascii_of[9] = {'-', '-', '-', '|', '_', '\'', '\'', '\'', '\''}; /* U+2013..U+201B */
        char a = s[i + 2] >= 0x9C ? '"' : ascii_of[s[i + 2] - 0x93];
        nw_put(&w, &a, 1);
        i += L;
      } else {
        nw_put(&w, (const char *)s + i, L);
        i += L;
      }
      prev_local = 0;
      continue;
    }
    if (c < 0x20 || c == 0x7F || c == ' ') {
      nw_space(&w);
      i++;
      prev_local = 0;
      continue;
    }
    if (!prev_local && is_email_local((int)c)) {
      size_t u = url_length(s + i, n - i);
      if (u) {
        nw_token(&w, "urltoken");
        i += u;
        prev_local = 0;
        continue;
      }
      size_t run = 0;
      while (i + run < n && is_email_local(s[i + run])) run++;
      size_t e = email_length(s + i, n - i, run);
      if (e) {
        nw_token(&w, "emailtoken");
        i += e;
        prev_local = 0;
        continue;
      }
      /* Every address starting inside this run would share its '@': copy the run at once. */
      for (size_t k = 0; k < run; k++) {
        char lc = (char)t_lower(s[i + k]);
        nw_put(&w, &lc, 1);
      }
      i += run;
      prev_local = 1;
      continue;
    }
    char lc = (char)t_lower((int)c);
    nw_put(&w, &lc, 1);
    prev_local = is_email_local((int)c);
    i++;
  }
  if (!out->p) tbuf_put(out, "", 0);
  if (numbers_to_token && !out->failed) numbers_to_tokens(out);
  return out->failed ? damo_error(DAMO_ERR_NOMEM, "text cleaning: out of memory (%zu bytes of input)", n) : DAMO_OK;
}

damo_status damo_text_normalize(const char *text, size_t len, const damo_text_clean_options *opt, char **out_text,
                                size_t *out_len) {
  if (!out_text) return damo_error(DAMO_ERR_INVALID_ARG, "text_normalize: NULL output");
  *out_text = NULL;
  if (out_len) *out_len = 0;
  if (!text && len) return damo_error(DAMO_ERR_INVALID_ARG, "text_normalize: NULL text of length %zu", len);
  tbuf out = {0};
  damo_status s = normalize_into((const unsigned char *)text, len, opt && opt->numbers_to_token, &out);
  if (s) {
    tbuf_free(&out);
    return s;
  }
  *out_text = out.p;
  if (out_len) *out_len = out.n;
  return DAMO_OK;
}

/* For email.c: normalises the decoded pieces of a message. */
damo_status text_normalize_buffer(const tbuf *in, int numbers_to_token, tbuf *out) {
  return normalize_into((const unsigned char *)(in->p ? in->p : ""), in->n, numbers_to_token, out);
}
