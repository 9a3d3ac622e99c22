/* email.c - raw RFC 822 / MIME e-mail to clean text (damo_email_clean).
 *
 * The message is walked as a tree of entities. Each entity's header block is read (folded
 * lines joined; only Subject, Content-Type and Content-Transfer-Encoding matter), then:
 *  - multipart/x: the body is cut at the "--boundary" delimiter lines and every part is
 *    walked the same way (nested multiparts recurse, up to MAX_DEPTH); a missing closing
 *    delimiter (a truncated mail) ends the last part at the end of the data;
 *  - message/rfc822: the body is a whole message (its Subject is kept too);
 *  - text/x: the body is decoded (base64 / quoted-printable), Latin-1 family charsets are
 *    converted to UTF-8, and HTML (text/html, or text/plain that is obviously HTML) is
 *    turned into text;
 *  - anything else (images, attachments) is dropped.
 * The Subject (RFC 2047 encoded words decoded) comes first, then the text parts in order,
 * and the whole goes through the final normalisation of normalize.c. Every scan is bounded
 * by the entity's length, so truncated or binary input is read, never overrun. */
#include "text_internal.h"

#define MAX_DEPTH 16

typedef struct span {
  const char *p;
  size_t n;
} span;

typedef struct entity_headers {
  span subject, content_type, encoding;
  int has_subject, has_content_type, has_encoding;
} entity_headers;

typedef struct clean_ctx {
  tbuf text; /* decoded text of every part, before normalisation */
} clean_ctx;

static size_t line_end(const char *s, size_t n, size_t i) {
  const char *nl = memchr(s + i, '\n', n - i);
  return nl ? (size_t)(nl - s) : n;
}

/* Length of line s[i..eol) without a trailing '\r'. */
static size_t content_len(const char *s, size_t i, size_t eol) {
  return (eol > i && s[eol - 1] == '\r') ? eol - i - 1 : eol - i;
}

/* Reads the header block at the start of s[0..n) and returns the offset of the body. The
 * block ends at an empty line, or at the first line that is neither a header ("Name:
 * value"), a continuation (leading white space) nor an mbox "From " line: a file with no
 * header/body separator, or no headers at all, is then still read as text. */
static size_t parse_headers(const char *s, size_t n, entity_headers *h) {
  memset(h, 0, sizeof *h);
  span *current = NULL; /* the header a continuation line extends */
  size_t i = 0;
  while (i < n) {
    size_t eol = line_end(s, n, i), len = content_len(s, i, eol);
    if (len == 0) return eol < n ? eol + 1 : n;
    if (s[i] == ' ' || s[i] == '\t') {
      if (current) current->n = (size_t)(s + i + len - current->p);
      i = eol + 1;
      continue;
    }
    if (i == 0 && len >= 5 && memcmp(s, "From ", 5) == 0) {
      i = eol + 1;
      continue;
    }
    size_t colon = i;
    while (colon < i + len && s[colon] > ' ' && s[colon] < 0x7F && s[colon] != ':') colon++;
    if (colon == i || colon == i + len || s[colon] != ':') return i; /* not a header: the body starts here */
    size_t name_len = colon - i, v = colon + 1;
    while (v < i + len && (s[v] == ' ' || s[v] == '\t')) v++;
    span value = {s + v, i + len - v};
    current = NULL;
    if (name_len == 7 && t_prefix_ci(s + i, name_len, "subject") && !h->has_subject)
      h->subject = value, h->has_subject = 1, current = &h->subject;
    else if (name_len == 12 && t_prefix_ci(s + i, name_len, "content-type") && !h->has_content_type)
      h->content_type = value, h->has_content_type = 1, current = &h->content_type;
    else if (name_len == 25 && t_prefix_ci(s + i, name_len, "content-transfer-encoding") && !h->has_encoding)
      h->encoding = value, h->has_encoding = 1, current = &h->encoding;
    i = eol + 1;
  }
  return n;
}

/* ------------------------------------------------------------------ decoders */

static int hex_value(int c) {
  if (t_isdigit(c)) return c - '0';
  c = t_lower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Base64, leniently: characters outside the alphabet (line breaks, junk) are skipped and
 * '=' discards the partial group, so damaged input decodes to something, never overruns. */
static void decode_base64(const char *s, size_t n, tbuf *out) {
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)s[i], v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (t_isdigit(c)) v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62; /* '-' and '_': the URL-safe alphabet */
    else if (c == '/' || c == '_') v = 63;
    else {
      if (c == '=') acc = 0, bits = 0;
      continue;
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      tbuf_putc(out, (char)((acc >> bits) & 0xFF));
      acc &= (1u << bits) - 1;
    }
  }
}

/* Quoted-printable: "=XX" is a byte, "=" at the end of a line joins it to the next; any
 * other '=' is kept as it is. With underscore_space (RFC 2047 "Q"), '_' is a space. */
static void decode_qp(const char *s, size_t n, int underscore_space, tbuf *out) {
  size_t i = 0;
  while (i < n) {
    char c = s[i];
    if (c == '=') {
      size_t j = i + 1;
      while (j < n && (s[j] == ' ' || s[j] == '\t')) j++;
      if (j < n && (s[j] == '\n' || (s[j] == '\r' && j + 1 < n && s[j + 1] == '\n'))) {
        i = j + (s[j] == '\r' ? 2 : 1);
        continue;
      }
      if (j == n) break;
      if (i + 2 < n && hex_value((unsigned char)s[i + 1]) >= 0 && hex_value((unsigned char)s[i + 2]) >= 0) {
        tbuf_putc(out, (char)(hex_value((unsigned char)s[i + 1]) * 16 + hex_value((unsigned char)s[i + 2])));
        i += 3;
        continue;
      }
    }
    tbuf_putc(out, underscore_space && c == '_' ? ' ' : c);
    i++;
  }
}

/* Charsets whose bytes are Latin-1 / Windows-1252 (converted to UTF-8 unless already valid). */
static int is_latin1_charset(const char *cs) {
  static const char *const names[] = {"iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1",
                                      "iso-8859-15", "windows-1252", "cp1252", "us-ascii", "ascii"};
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
    if (strlen(names[k]) == strlen(cs) && t_prefix_ci(cs, strlen(cs), names[k])) return 1;
  return 0;
}

/* Appends s as UTF-8: bytes of a Latin-1 family charset are converted (0x80..0x9F as
 * Windows-1252, its smart quotes and dashes) unless the text is valid UTF-8 already (a
 * mislabelled mail); us-ascii text gets only its stray high bytes read as Windows-1252 when
 * it is not UTF-8. Other charsets are passed through (invalid UTF-8 becomes spaces later). */
static void put_charset_text(const char *s, size_t n, const char *charset, tbuf *out) {
  const unsigned char *u = (const unsigned char *)s;
  int ascii_label = strlen(charset) <= 8 && (t_prefix_ci(charset, strlen(charset), "us-ascii") ||
                                             t_prefix_ci(charset, strlen(charset), "ascii"));
  if (!charset[0] || ascii_label || !is_latin1_charset(charset) || utf8_valid(u, n)) {
    tbuf_put(out, s, n);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    if (u[i] < 0x80) tbuf_putc(out, (char)u[i]);
    else tbuf_put_codepoint(out, u[i] == 0xA0 ? ' ' : (cp1252_high(u[i]) ? cp1252_high(u[i]) : ' '));
  }
}

/* ------------------------------------------------------------------ header values */

/* Copies parameter `name` of a Content-Type value (quoted or bare) into buf; 1 if found. */
static int content_type_param(span ct, const char *name, char *buf, size_t cap) {
  size_t m = strlen(name), i = 0;
  const char *s = ct.p;
  buf[0] = '\0';
  while (i < ct.n) {
    int quoted = 0; /* to the next ';' outside quotes */
    while (i < ct.n && (quoted || s[i] != ';')) quoted ^= s[i++] == '"';
    if (i >= ct.n) return 0;
    i++;
    while (i < ct.n && t_isspace((unsigned char)s[i])) i++;
    if (!(ct.n - i > m && t_prefix_ci(s + i, ct.n - i, name))) continue;
    size_t j = i + m;
    while (j < ct.n && t_isspace((unsigned char)s[j])) j++;
    if (j >= ct.n || s[j] != '=') continue;
    j++;
    while (j < ct.n && t_isspace((unsigned char)s[j])) j++;
    size_t k = 0;
    if (j < ct.n && s[j] == '"') {
      for (j++; j < ct.n && s[j] != '"'; j++) {
        if (s[j] == '\\' && j + 1 < ct.n) j++;
        if (s[j] == '\r' || s[j] == '\n') continue; /* a folded quoted value */
        if (k + 1 < cap) buf[k++] = s[j];
      }
    } else {
      for (; j < ct.n && s[j] != ';' && !t_isspace((unsigned char)s[j]); j++)
        if (k + 1 < cap) buf[k++] = s[j];
    }
    buf[k] = '\0';
    return k > 0;
  }
  return 0;
}

/* The media type of a Content-Type value, lowercased ("text/html"), into buf. */
static void media_type(span ct, char *buf, size_t cap) {
  size_t i = 0, k = 0;
  while (i < ct.n && t_isspace((unsigned char)ct.p[i])) i++;
  for (; i < ct.n && ct.p[i] != ';' && !t_isspace((unsigned char)ct.p[i]); i++)
    if (k + 1 < cap) buf[k++] = (char)t_lower((unsigned char)ct.p[i]);
  buf[k] = '\0';
}

/* A Subject with RFC 2047 encoded words (=?charset?Q|B?text?=) decoded; white space between
 * two encoded words is dropped, as the RFC says. */
static void put_subject(span subj, tbuf *out) {
  const char *s = subj.p;
  size_t n = subj.n, i = 0;
  int after_word = 0;
  while (i < n) {
    if (s[i] == '=' && i + 1 < n && s[i + 1] == '?') {
      size_t q1 = i + 2;
      while (q1 < n && s[q1] != '?') q1++;
      size_t q2 = q1 + 2; /* after the encoding letter */
      if (q2 < n && s[q2] == '?') {
        size_t e = q2 + 1;
        while (e + 1 < n && !(s[e] == '?' && s[e + 1] == '=')) e++;
        if (e + 1 < n) {
          char charset[64];
          size_t cl = q1 - (i + 2) < sizeof charset - 1 ? q1 - (i + 2) : sizeof charset - 1;
          memcpy(charset, s + i + 2, cl);
          charset[cl] = '\0';
          tbuf raw = {0};
          if (t_lower((unsigned char)s[q1 + 1]) == 'b') decode_base64(s + q2 + 1, e - q2 - 1, &raw);
          else decode_qp(s + q2 + 1, e - q2 - 1, 1, &raw);
          if (raw.failed) out->failed = 1;
          put_charset_text(raw.p ? raw.p : "", raw.n, charset, out);
          tbuf_free(&raw);
          i = e + 2;
          after_word = 1;
          continue;
        }
      }
    }
    if (after_word && t_isspace((unsigned char)s[i])) {
      size_t j = i;
      while (j < n && t_isspace((unsigned char)s[j])) j++;
      if (j + 1 < n && s[j] == '=' && s[j + 1] == '?') {
        i = j;
        continue;
      }
    }
    after_word = 0;
    tbuf_putc(out, s[i++]);
  }
}

/* ------------------------------------------------------------------ the entity tree */

static void walk_entity(clean_ctx *c, const char *s, size_t n, int depth, int keep_subject, int default_rfc822);

static int looks_like_html(const char *s, size_t n) {
  size_t lim = n < 4096 ? n : 4096;
  for (size_t i = 0; i + 5 <= lim; i++)
    if (s[i] == '<' && (t_prefix_ci(s + i, lim - i, "<html") || t_prefix_ci(s + i, lim - i, "<body") ||
                        t_prefix_ci(s + i, lim - i, "<!doctype html")))
      return 1;
  return 0;
}

static void add_text_part(clean_ctx *c, const char *body, size_t n, const entity_headers *h, const char *type) {
  char encoding[32] = "", charset[64] = "";
  if (h->has_encoding) media_type(h->encoding, encoding, sizeof encoding);
  if (h->has_content_type) content_type_param(h->content_type, "charset", charset, sizeof charset);
  tbuf decoded = {0}, converted = {0};
  const char *t = body;
  size_t tn = n;
  if (strcmp(encoding, "base64") == 0 || strcmp(encoding, "quoted-printable") == 0) {
    if (encoding[0] == 'b') decode_base64(body, n, &decoded);
    else decode_qp(body, n, 0, &decoded);
    t = decoded.p ? decoded.p : "";
    tn = decoded.n;
  }
  put_charset_text(t, tn, charset, &converted);
  const char *ct = converted.p ? converted.p : "";
  if (strcmp(type, "text/html") == 0 || looks_like_html(ct, converted.n)) html_to_text(ct, converted.n, &c->text);
  else if (strcmp(type, "text/enriched") == 0 || strcmp(type, "text/richtext") == 0)
    html_to_text(ct, converted.n, &c->text);
  else tbuf_put(&c->text, ct, converted.n);
  tbuf_putc(&c->text, ' ');
  if (decoded.failed || converted.failed) c->text.failed = 1;
  tbuf_free(&decoded);
  tbuf_free(&converted);
}

/* Is the line s[i..i+len) a delimiter "--boundary" or closing "--boundary--" (trailing white
 * space allowed)? 1 delimiter, 2 closing, 0 neither. A boundary that is a prefix of a nested
 * one ("=_Part" vs "=_Part_2") is told apart by requiring nothing else on the line. */
static int delimiter_kind(const char *s, size_t i, size_t len, const char *boundary, size_t blen) {
  if (len < 2 + blen || s[i] != '-' || s[i + 1] != '-' || memcmp(s + i + 2, boundary, blen) != 0) return 0;
  size_t j = i + 2 + blen, end = i + len;
  int closing = 0;
  if (j + 2 <= end && s[j] == '-' && s[j + 1] == '-') closing = 1, j += 2;
  while (j < end && (s[j] == ' ' || s[j] == '\t')) j++;
  return j == end ? 1 + closing : 0;
}

static void walk_multipart(clean_ctx *c, const char *s, size_t n, const char *boundary, int depth, int digest) {
  size_t blen = strlen(boundary), i = 0, part_start = 0;
  int in_part = 0, found = 0;
  while (i < n) {
    size_t eol = line_end(s, n, i), len = content_len(s, i, eol);
    int kind = delimiter_kind(s, i, len, boundary, blen);
    if (kind) {
      found = 1;
      if (in_part) {
        /* The line break before a delimiter belongs to the delimiter. */
        size_t end = i;
        if (end > part_start && s[end - 1] == '\n') end--;
        if (end > part_start && s[end - 1] == '\r') end--;
        walk_entity(c, s + part_start, end - part_start, depth + 1, 0, digest);
      }
      if (kind == 2) return; /* the epilogue is not content */
      in_part = 1;
      part_start = eol < n ? eol + 1 : n;
    }
    i = eol + 1;
  }
  if (in_part && part_start < n) walk_entity(c, s + part_start, n - part_start, depth + 1, 0, digest);
  if (!found) { /* a multipart without its delimiters: keep the body as plain text */
    entity_headers none;
    memset(&none, 0, sizeof none);
    add_text_part(c, s, n, &none, "text/plain");
  }
}

static void walk_entity(clean_ctx *c, const char *s, size_t n, int depth, int keep_subject, int default_rfc822) {
  if (depth > MAX_DEPTH || c->text.failed) return;
  entity_headers h;
  size_t body = parse_headers(s, n, &h);
  if (keep_subject && h.has_subject) {
    put_subject(h.subject, &c->text);
    tbuf_putc(&c->text, ' ');
  }
  char type[128];
  if (h.has_content_type) media_type(h.content_type, type, sizeof type);
  else snprintf(type, sizeof type, "%s", default_rfc822 ? "message/rfc822" : "text/plain");
  if (!type[0]) snprintf(type, sizeof type, "text/plain");
  const char *b = s + body;
  size_t bn = n - body;
  if (strncmp(type, "multipart/", 10) == 0) {
    char boundary[256];
    if (content_type_param(h.content_type, "boundary", boundary, sizeof boundary))
      walk_multipart(c, b, bn, boundary, depth, strcmp(type, "multipart/digest") == 0);
    else add_text_part(c, b, bn, &h, "text/plain");
  } else if (strcmp(type, "message/rfc822") == 0) {
    walk_entity(c, b, bn, depth + 1, 1, 0);
  } else if (strncmp(type, "text/", 5) == 0) {
    add_text_part(c, b, bn, &h, type);
  }
  /* Other media types (images, applications, audio) carry no text: dropped. */
}

damo_status damo_email_clean_ex(const char *raw, size_t len, const damo_text_clean_options *opt, char **out_text,
                                size_t *out_len) {
  if (!out_text) return damo_error(DAMO_ERR_INVALID_ARG, "email_clean: NULL output");
  *out_text = NULL;
  if (out_len) *out_len = 0;
  if (!raw && len) return damo_error(DAMO_ERR_INVALID_ARG, "email_clean: NULL message of length %zu", len);
  clean_ctx c;
  memset(&c, 0, sizeof c);
  walk_entity(&c, raw ? raw : "", len, 0, 1, 0);
  if (c.text.failed) {
    tbuf_free(&c.text);
    return damo_error(DAMO_ERR_NOMEM, "email_clean: out of memory decoding a %zu-byte message", len);
  }
  tbuf out = {0};
  damo_status st = text_normalize_buffer(&c.text, opt && opt->numbers_to_token, &out);
  tbuf_free(&c.text);
  if (st) {
    tbuf_free(&out);
    return st;
  }
  *out_text = out.p;
  if (out_len) *out_len = out.n;
  return DAMO_OK;
}

damo_status damo_email_clean(const char *raw, size_t len, char **out_text, size_t *out_len) {
  return damo_email_clean_ex(raw, len, NULL, out_text, out_len);
}
