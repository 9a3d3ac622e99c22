/* html.c - HTML to plain text for e-mail bodies: comments, <script> and <style> blocks and
 * every tag are removed, entities are decoded. Inline tags (<b>, <font>, <span>, ...) are
 * removed without a space so a word split by markup ("f<b>r</b>ee", a spam trick) stays
 * whole; other tags separate words. Links (<a href>, <img src>) leave "urltoken" or
 * "emailtoken" behind, so a mail made of links still says so. Malformed HTML (a tag or
 * comment never closed) drops the rest of the part; nothing reads past the end. */
#include "text_internal.h"

static const uint32_t cp1252[32] = {0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                    0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0,      0x017D, 0,
                                    0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

uint32_t cp1252_high(unsigned byte) { return byte >= 0x80 && byte < 0xA0 ? cp1252[byte - 0x80] : byte; }

typedef struct entity {
  const char *name;
  uint32_t cp;
} entity;

/* The entities that actually occur in mail; unknown ones stay as written. */
static const entity entities[] = {
    {"amp", '&'},      {"lt", '<'},        {"gt", '>'},       {"quot", '"'},     {"apos", '\''},
    {"nbsp", ' '},     {"copy", 0xA9},     {"reg", 0xAE},     {"trade", 0x2122}, {"hellip", 0x2026},
    {"mdash", 0x2014}, {"ndash", 0x2013},  {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C},
    {"rdquo", 0x201D}, {"bull", 0x2022},   {"middot", 0xB7},  {"euro", 0x20AC},  {"pound", 0xA3},
    {"cent", 0xA2},    {"yen", 0xA5},      {"sect", 0xA7},    {"deg", 0xB0},     {"eacute", 0xE9},
    {"egrave", 0xE8},  {"agrave", 0xE0},   {"aacute", 0xE1},  {"ccedil", 0xE7},  {"uuml", 0xFC},
    {"ouml", 0xF6},    {"auml", 0xE4},     {"szlig", 0xDF},   {"times", 0xD7},   {"laquo", 0xAB},
    {"raquo", 0xBB},   {"iexcl", 0xA1},    {"iquest", 0xBF},  {"ntilde", 0xF1},  {"oacute", 0xF3},
};

/* Decodes the entity at s[0] == '&': appends it and returns the bytes consumed, or 0 if it
 * is not one (the '&' is then literal text). */
static size_t decode_entity(const char *s, size_t n, tbuf *out) {
  size_t i = 1;
  if (i < n && s[i] == '#') {
    i++;
    int hex = i < n && (s[i] == 'x' || s[i] == 'X');
    if (hex) i++;
    uint32_t cp = 0;
    size_t digits = 0;
    while (i < n && (hex ? (t_isdigit(s[i]) || (t_lower(s[i]) >= 'a' && t_lower(s[i]) <= 'f')) : t_isdigit(s[i]))) {
      int d = t_isdigit(s[i]) ? s[i] - '0' : t_lower(s[i]) - 'a' + 10;
      if (cp < 0x110000) cp = cp * (hex ? 16 : 10) + (uint32_t)d;
      i++;
      digits++;
    }
    if (!digits) return 0;
    if (i < n && s[i] == ';') i++;
    if (cp >= 0x80 && cp < 0xA0) cp = cp1252_high(cp);
    if (cp == 0xA0) cp = ' ';
    tbuf_put_codepoint(out, cp);
    return i;
  }
  while (i < n && i < 12 && t_isalnum(s[i])) i++;
  size_t name_len = i - 1;
  if (!name_len) return 0;
  int semi = i < n && s[i] == ';';
  for (size_t k = 0; k < sizeof entities / sizeof entities[0]; k++) {
    const entity *e = &entities[k];
    size_t m = strlen(e->name);
    /* Browsers accept the basic ones without ';' ("&amp " in sloppy mail). */
    if (m == name_len && memcmp(s + 1, e->name, m) == 0 && (semi || k < 6)) {
      tbuf_put_codepoint(out, e->cp);
      return i + semi;
    }
  }
  return 0;
}

/* Finds lit (lowercase) case-insensitively in s[from..n); returns its offset or n. */
static size_t find_ci(const char *s, size_t n, size_t from, const char *lit) {
  size_t m = strlen(lit);
  for (size_t i = from; i + m <= n; i++)
    if (t_lower((unsigned char)s[i]) == lit[0] && t_prefix_ci(s + i, n - i, lit)) return i;
  return n;
}

static int is_inline_tag(const char *name, size_t len) {
  static const char *const inl[] = {"b", "i", "u", "s", "a", "em", "strong", "font", "span", "small", "big", "sup",
                                    "sub", "tt", "strike", "blink", "o:p"};
  for (size_t k = 0; k < sizeof inl / sizeof inl[0]; k++)
    if (strlen(inl[k]) == len && t_prefix_ci(name, len, inl[k])) return 1;
  return 0;
}

/* Emits a token for a link attribute (href=, src=) inside tag text t[0..n). */
static void link_tokens(const char *t, size_t n, tbuf *out) {
  static const char *const attrs[] = {"href", "src"};
  for (size_t a = 0; a < 2; a++) {
    size_t at = find_ci(t, n, 0, attrs[a]);
    if (at == n) continue;
    size_t j = at + strlen(attrs[a]);
    while (j < n && t_isspace((unsigned char)t[j])) j++;
    if (j >= n || t[j] != '=') continue;
    j++;
    while (j < n && (t_isspace((unsigned char)t[j]) || t[j] == '"' || t[j] == '\'')) j++;
    if (t_prefix_ci(t + j, n - j, "mailto:")) tbuf_puts(out, " emailtoken ");
    else if (t_prefix_ci(t + j, n - j, "http") || t_prefix_ci(t + j, n - j, "www.") ||
             t_prefix_ci(t + j, n - j, "ftp:"))
      tbuf_puts(out, " urltoken ");
  }
}

void html_to_text(const char *s, size_t n, tbuf *out) {
  size_t i = 0;
  while (i < n) {
    char c = s[i];
    if (c == '&') {
      size_t used = decode_entity(s + i, n - i, out);
      if (!used) tbuf_putc(out, '&'), used = 1;
      i += used;
      continue;
    }
    if (c != '<' || i + 1 >= n) {
      tbuf_putc(out, c);
      i++;
      continue;
    }
    char d = s[i + 1];
    if (d == '!' && i + 3 < n && s[i + 2] == '-' && s[i + 3] == '-') {
      size_t end = find_ci(s, n, i + 4, "-->");
      i = end == n ? n : end + 3;
      tbuf_putc(out, ' ');
      continue;
    }
    if (!(t_isalpha((unsigned char)d) || d == '/' || d == '!' || d == '?')) { /* "a < b" is text */
      tbuf_putc(out, c);
      i++;
      continue;
    }
    size_t close = i + 1;
    while (close < n && s[close] != '>') close++;
    if (close == n) return; /* a tag cut off: the rest is markup, not text */
    size_t name = i + 1 + (d == '/');
    size_t name_end = name;
    while (name_end < close && (t_isalnum((unsigned char)s[name_end]) || s[name_end] == ':')) name_end++;
    size_t name_len = name_end - name;
    int is_script = name_len == 6 && t_prefix_ci(s + name, name_len, "script");
    int is_style = name_len == 5 && t_prefix_ci(s + name, name_len, "style");
    if (d != '/' && (is_script || is_style)) {
      const char *end_tag = is_script ? "</script" : "</style";
      size_t end = find_ci(s, n, close + 1, end_tag);
      if (end == n) return;
      while (end < n && s[end] != '>') end++;
      i = end == n ? n : end + 1;
      tbuf_putc(out, ' ');
      continue;
    }
    if (d != '/') link_tokens(s + name_end, close - name_end, out);
    if (!is_inline_tag(s + name, name_len)) tbuf_putc(out, ' ');
    i = close + 1;
  }
}
