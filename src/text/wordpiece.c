/* wordpiece.c - BERT's uncased WordPiece tokenizer: HuggingFace BertTokenizer's basic
 * tokenisation (clean, split CJK ideographs off, lowercase, strip accents, split on white
 * space and punctuation) and then greedy longest-match-first word pieces. Also the model
 * inputs of one example (special tokens, truncation, padding, masks) and decode.
 *
 * One call makes two passes over the text:
 *  1. decode UTF-8 and clean: invalid bytes count as U+FFFD and, like U+0000, U+FFFD and
 *     every character of general category C* but tab, LF and CR, are dropped; tab, LF, CR
 *     and the Z* separators become one space. (Python's BasicTokenizer maps only Zs to a
 *     space but then splits with str.split(), which also cuts at U+2028/U+2029: the same.)
 *  2. cut at spaces and around CJK ideographs into segments; a segment is lowercased as
 *     Python's str.lower() does (full mapping: U+0130 -> "i" U+0307, a final capital sigma
 *     -> U+03C2; utf8proc's tolower is the simple mapping, so those two are handled here),
 *     decomposed to NFD with utf8proc (and put in canonical order), its nonspacing marks (Mn)
 *     dropped, and cut again around each punctuation character (ASCII 33-47, 58-64, 91-96,
 *     123-126 and general category P*). Each resulting word becomes word pieces.
 * The passes work on code points, so a word's characters are what Python counts: the
 * 100-character limit and the pieces agree with HuggingFace for any text, including
 * characters outside the BMP (tests/test_wordpiece.c and scripts/check_wordpiece.sh
 * compare against HuggingFace's tokenizers in JavaScript). The Unicode data is utf8proc's
 * (Debian 12: 2.8, Unicode 15.0): a character assigned or re-categorised by a later version
 * (unassigned characters are dropped) can differ from a tokenizer built on newer tables, as
 * Python's result, too, depends on the Python version's unicodedata. */
#include "wordpiece_internal.h"

#include <utf8proc.h>

enum { WP_MAX_WORD_CHARS = 100 };

/* ------------------------------------------------------------------ character classes */

enum { A_DROP, A_SPACE, A_PUNCT, A_OTHER };

/* The class of an ASCII byte: controls but tab/LF/CR dropped, the four ASCII punctuation
 * ranges, everything else a word character. */
static unsigned char ascii_class(unsigned c) {
  if (c == '\t' || c == '\n' || c == '\r' || c == ' ') return A_SPACE;
  if (c < 0x20 || c == 0x7F) return A_DROP;
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return A_PUNCT;
  return A_OTHER;
}

/* The CJK ideograph blocks of HuggingFace's _is_chinese_char (Hangul, kana are not in them). */
static int is_cjk(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int is_punct(uint32_t c) {
  if (c < 0x80) return ascii_class(c) == A_PUNCT;
  utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

/* Unicode's Case_Ignorable: Mn, Me, Cf, Lm, Sk and the Word_Break MidLetter, MidNumLet and
 * Single_Quote characters (listed). */
static int is_case_ignorable(uint32_t c) {
  static const uint32_t mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,  0x5F4,  0x2018, 0x2019,
                                 0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
  for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
    if (c == mid[i]) return 1;
  if (c < 0x5E) return 0;
  utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
  return cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME || cat == UTF8PROC_CATEGORY_CF ||
         cat == UTF8PROC_CATEGORY_LM || cat == UTF8PROC_CATEGORY_SK;
}

/* Unicode's Cased: upper-, lower- or titlecase letters and the other characters with a case
 * mapping (Roman numerals, circled letters); also the ordinals U+00AA and U+00BA. */
static int is_cased(uint32_t c) {
  if (c < 0x80) return t_isalpha((int)c);
  if (c == 0xAA || c == 0xBA) return 1;
  utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
  if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT) return 1;
  return utf8proc_tolower((utf8proc_int32_t)c) != (utf8proc_int32_t)c ||
         utf8proc_toupper((utf8proc_int32_t)c) != (utf8proc_int32_t)c;
}

/* Unicode's Final_Sigma condition for the capital sigma at cp[i]: a cased letter before it
 * and none after it, case-ignorable characters skipped on both sides (as Python's
 * str.lower() decides it, on the cleaned text). */
static int final_sigma(const uint32_t *cp, size_t n, size_t i) {
  size_t j = i;
  while (j > 0 && is_case_ignorable(cp[j - 1])) j--;
  if (j == 0 || !is_cased(cp[j - 1])) return 0;
  for (j = i + 1; j < n && is_case_ignorable(cp[j]); j++) {
  }
  return j == n || !is_cased(cp[j]);
}

/* ------------------------------------------------------------------ the work of one call */

/* A growable array of ids. */
typedef struct id_vec {
  int32_t *p;
  size_t n, cap;
} id_vec;

typedef struct wp_work {
  const damo_wordpiece *wp;
  uint32_t *cp;      /* pass 1: the cleaned text, one code point each */
  size_t n_cp;
  uint32_t *seg;     /* pass 2: the lowercased, decomposed segment ... */
  unsigned char *ccc; /* ... and each character's canonical combining class */
  size_t n_seg, cap_seg;
  tbuf word;         /* the current word's UTF-8 ... */
  uint32_t *pos;     /* ... and the byte offset of each character, pos[0] = 0 */
  size_t n_chars;
  id_vec ids;
  int failed;
} wp_work;

static void ids_push(wp_work *w, int32_t id) {
  id_vec *v = &w->ids;
  if (v->n == v->cap) {
    size_t cap = v->cap ? 2 * v->cap : 256;
    int32_t *p = realloc(v->p, cap * sizeof *p);
    if (!p) {
      w->failed = 1;
      return;
    }
    v->p = p;
    v->cap = cap;
  }
  v->p[v->n++] = id;
}

/* Greedy longest-match-first pieces of the current word: the longest prefix in the
 * vocabulary, then the longest "##" continuation from where it ended, and so on; a word
 * with a part no piece covers, or of more than 100 characters, is one [UNK]. */
static void word_pieces(wp_work *w) {
  const damo_wordpiece *wp = w->wp;
  size_t n = w->n_chars;
  if (n == 0) return;
  if (n > WP_MAX_WORD_CHARS) {
    ids_push(w, wp->unk);
    return;
  }
  const char *s = w->word.p;
  const uint32_t *pos = w->pos;
  size_t first = w->ids.n;
  for (size_t start = 0; start < n;) {
    /* Pieces longer than the vocabulary's longest cannot match: start below that. */
    size_t longest = start ? wp->max_cont : wp->max_len, end = n;
    while (end > start && pos[end] - pos[start] > longest) end--;
    int32_t id = -1;
    for (; end > start; end--) {
      id = wp_lookup(wp, start > 0, s + pos[start], pos[end] - pos[start]);
      if (id >= 0) break;
    }
    if (id < 0) {
      w->ids.n = first;
      ids_push(w, wp->unk);
      return;
    }
    ids_push(w, id);
    start = end;
  }
}

/* Appends character c to the current word. */
static void word_add(wp_work *w, uint32_t c) {
  if (w->n_chars == 0) {
    w->word.n = 0;
    if (!w->pos) w->pos = malloc((WP_MAX_WORD_CHARS + 2) * sizeof *w->pos);
    if (!w->pos) {
      w->failed = 1;
      return;
    }
    w->pos[0] = 0;
  }
  /* Past the limit only the count matters: the word is [UNK] anyway. */
  if (w->n_chars < WP_MAX_WORD_CHARS + 1) {
    tbuf_put_codepoint(&w->word, c);
    w->pos[w->n_chars + 1] = (uint32_t)w->word.n;
  }
  w->n_chars++;
}

static void word_end(wp_work *w) {
  if (w->word.failed) w->failed = 1;
  if (w->n_chars && !w->failed) word_pieces(w);
  w->n_chars = 0;
}

/* Appends c and its canonical combining class to the segment. */
static void seg_push(wp_work *w, uint32_t c) {
  if (w->n_seg == w->cap_seg) {
    size_t cap = w->cap_seg ? 2 * w->cap_seg : 256;
    uint32_t *seg = realloc(w->seg, cap * sizeof *seg);
    if (seg) w->seg = seg;
    unsigned char *ccc = realloc(w->ccc, cap);
    if (ccc) w->ccc = ccc;
    if (!seg || !ccc) {
      w->failed = 1;
      return;
    }
    w->cap_seg = cap;
  }
  w->seg[w->n_seg] = c;
  w->ccc[w->n_seg++] = c < 0x300 ? 0 : (unsigned char)utf8proc_get_property((utf8proc_int32_t)c)->combining_class;
}

/* NFD's canonical ordering: each run of combining marks (class > 0) sorted stably by class.
 * Runs are short in real text (insertion sort); a long one is counting-sorted, so a text of
 * a million marks costs linear time, not quadratic. */
static void seg_canonical_order(wp_work *w) {
  uint32_t *seg = w->seg;
  unsigned char *ccc = w->ccc;
  size_t i = 0;
  while (i < w->n_seg) {
    if (!ccc[i]) {
      i++;
      continue;
    }
    size_t j = i + 1;
    while (j < w->n_seg && ccc[j]) j++;
    if (j - i <= 32) {
      for (size_t k = i + 1; k < j; k++)
        for (size_t m = k; m > i && ccc[m - 1] > ccc[m]; m--) {
          uint32_t c = seg[m];
          unsigned char cc = ccc[m];
          seg[m] = seg[m - 1], ccc[m] = ccc[m - 1];
          seg[m - 1] = c, ccc[m - 1] = cc;
        }
    } else {
      uint32_t *tmp = malloc((j - i) * sizeof *tmp);
      if (!tmp) {
        w->failed = 1;
        return;
      }
      size_t count[256] = {0}, at[256];
      for (size_t k = i; k < j; k++) count[ccc[k]]++;
      for (size_t c = 0, sum = 0; c < 256; sum += count[c++]) at[c] = sum;
      for (size_t k = i; k < j; k++) tmp[at[ccc[k]]++] = seg[k];
      memcpy(seg + i, tmp, (j - i) * sizeof *tmp);
      for (size_t c = 1, k = i; c < 256; k += count[c++]) memset(ccc + k, (int)c, count[c]);
      free(tmp);
    }
    i = j;
  }
}

/* The lowercase of cp[i] (Python's full mapping), decomposed, onto the segment. */
static void seg_push_lower(wp_work *w, size_t i) {
  uint32_t c = w->cp[i], low[2];
  int n_low = 1;
  if (c < 0x80) low[0] = (uint32_t)t_lower((int)c);
  else if (c == 0x130) low[0] = 'i', low[1] = 0x307, n_low = 2;
  else if (c == 0x3A3) low[0] = final_sigma(w->cp, w->n_cp, i) ? 0x3C2 : 0x3C3;
  else low[0] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
  for (int k = 0; k < n_low; k++) {
    if (low[k] < 0xC0) { /* nothing below U+00C0 decomposes canonically */
      seg_push(w, low[k]);
      continue;
    }
    utf8proc_int32_t d[16];
    utf8proc_ssize_t m = utf8proc_decompose_char((utf8proc_int32_t)low[k], d, 16, UTF8PROC_DECOMPOSE, NULL);
    if (m < 1 || m > 16) { /* cannot happen for a valid code point; keep it as it is */
      d[0] = (utf8proc_int32_t)low[k];
      m = 1;
    }
    for (utf8proc_ssize_t j = 0; j < m; j++) seg_push(w, (uint32_t)d[j]);
  }
}

/* The segment, marks dropped, into words cut around punctuation. */
static void seg_end(wp_work *w) {
  seg_canonical_order(w);
  for (size_t i = 0; i < w->n_seg && !w->failed; i++) {
    uint32_t c = w->seg[i];
    if (c >= 0x300 && utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_MN) continue;
    if (is_punct(c)) {
      word_end(w);
      word_add(w, c);
      word_end(w);
    } else {
      word_add(w, c);
    }
  }
  word_end(w);
  w->n_seg = 0;
}

/* Pass 1: UTF-8 to cleaned code points (see the header); runs of spaces become one. */
static int clean_text(wp_work *w, const unsigned char *s, size_t len) {
  w->cp = malloc((len + 1) * sizeof *w->cp);
  if (!w->cp) return 0;
  size_t n = 0;
  for (size_t i = 0; i < len;) {
    uint32_t c = s[i];
    int space;
    if (c < 0x80) {
      i++;
      unsigned char k = ascii_class(c);
      if (k == A_DROP) continue;
      space = k == A_SPACE;
    } else {
      size_t L = utf8_seq_len(s + i, len - i);
      if (!L) { /* invalid UTF-8: U+FFFD, which cleaning drops */
        i++;
        continue;
      }
      c &= 0x7Fu >> L;
      for (size_t k = 1; k < L; k++) c = (c << 6) | (s[i + k] & 0x3F);
      i += L;
      if (c == 0xFFFD) continue;
      utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
      if (cat == UTF8PROC_CATEGORY_CN || cat >= UTF8PROC_CATEGORY_CC) continue; /* Cc Cf Cs Co Cn */
      space = cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
    }
    if (space) {
      if (n && w->cp[n - 1] != ' ') w->cp[n++] = ' ';
    } else {
      w->cp[n++] = c;
    }
  }
  w->n_cp = n;
  return 1;
}

/* The ids of text[0..len) appended to w->ids; 0 when out of memory. */
static int tokenize_into(wp_work *w, const char *text, size_t len) {
  if (!clean_text(w, (const unsigned char *)text, len)) return 0;
  for (size_t i = 0; i < w->n_cp && !w->failed; i++) {
    uint32_t c = w->cp[i];
    if (c == ' ') {
      seg_end(w);
    } else if (is_cjk(c)) {
      seg_end(w);
      seg_push_lower(w, i);
      seg_end(w);
    } else {
      seg_push_lower(w, i);
    }
  }
  seg_end(w);
  free(w->cp);
  w->cp = NULL;
  return !w->failed;
}

static void work_free(wp_work *w) {
  free(w->cp);
  free(w->seg);
  free(w->ccc);
  free(w->pos);
  tbuf_free(&w->word);
  free(w->ids.p);
}

damo_status damo_wordpiece_tokenize(const damo_wordpiece *wp, const char *text, size_t len, int32_t **ids, int64_t *n) {
  if (ids) *ids = NULL;
  if (n) *n = 0;
  if (!wp || !ids || !n || (!text && len))
    return damo_error(DAMO_ERR_INVALID_ARG, "damo_wordpiece_tokenize: NULL vocabulary, text or output");
  wp_work w = {.wp = wp};
  if (!tokenize_into(&w, text, len)) {
    work_free(&w);
    return damo_error(DAMO_ERR_NOMEM, "damo_wordpiece_tokenize: out of memory for %zu bytes of text", len);
  }
  if (w.ids.n) {
    *ids = w.ids.p;
    *n = (int64_t)w.ids.n;
    w.ids.p = NULL;
  }
  work_free(&w);
  return DAMO_OK;
}

/* ------------------------------------------------------------------ model inputs, decode */

/* transformers' "longest_first": one token at a time off the end of the longer sequence,
 * off the second when both are as long, until the two fit in budget. Closed form. */
static void truncate_longest_first(size_t *na, size_t *nb, size_t budget) {
  if (*na + *nb <= budget) return;
  size_t remove = *na + *nb - budget;
  size_t diff = *na > *nb ? *na - *nb : *nb - *na, first = diff < remove ? diff : remove;
  if (*na > *nb) *na -= first;
  else *nb -= first;
  remove -= first;
  *na -= remove / 2;
  *nb -= remove - remove / 2;
}

/* Writes [CLS] a [SEP] (b [SEP]) then [PAD] up to max_len: types 0 up to the first [SEP], 1
 * for b's part; mask 1 on real positions. ka + kb + specials <= max_len. */
static void assemble_inputs(const damo_wordpiece *wp, const int32_t *a, size_t ka, const int32_t *b, size_t kb,
                            int has_b, int max_len, int32_t *ids, int32_t *token_types, int32_t *mask, int *used) {
  size_t k = 0;
  ids[k++] = wp->cls;
  for (size_t i = 0; i < ka; i++) ids[k++] = a[i];
  ids[k++] = wp->sep;
  size_t end_a = k;
  if (has_b) {
    for (size_t i = 0; i < kb; i++) ids[k++] = b[i];
    ids[k++] = wp->sep;
  }
  for (size_t i = 0; i < (size_t)max_len; i++) {
    if (i >= k) ids[i] = wp->pad;
    if (token_types) token_types[i] = i >= end_a && i < k;
    if (mask) mask[i] = i < k;
  }
  if (used) *used = (int)k;
}

damo_status damo_wordpiece_encode(const damo_wordpiece *wp, const char *a, const char *b, int max_len, int32_t *ids,
                                  int32_t *token_types, int32_t *mask, int *used) {
  if (used) *used = 0;
  if (!wp || !a || !ids) return damo_error(DAMO_ERR_INVALID_ARG, "damo_wordpiece_encode: NULL vocabulary, text or ids");
  int specials = b ? 3 : 2;
  if (max_len < (b ? 5 : 3))
    return damo_error(DAMO_ERR_INVALID_ARG, "damo_wordpiece_encode: max_len %d is too small (at least %d %s)", max_len,
                      b ? 5 : 3, b ? "for a pair" : "for one text");
  int32_t *ia = NULL, *ib = NULL;
  int64_t na = 0, nb = 0;
  damo_status st = damo_wordpiece_tokenize(wp, a, strlen(a), &ia, &na);
  if (st == DAMO_OK && b) st = damo_wordpiece_tokenize(wp, b, strlen(b), &ib, &nb);
  if (st != DAMO_OK) {
    free(ia);
    return st;
  }
  size_t ka = (size_t)na, kb = (size_t)nb, budget = (size_t)max_len - (size_t)specials;
  if (b) truncate_longest_first(&ka, &kb, budget);
  else if (ka > budget) ka = budget;
  assemble_inputs(wp, ia, ka, ib, kb, b != NULL, max_len, ids, token_types, mask, used);
  free(ia);
  free(ib);
  return DAMO_OK;
}

damo_status damo_wordpiece_encode_head_tail(const damo_wordpiece *wp, const char *text, int max_len, int head,
                                            int32_t *ids, int32_t *token_types, int32_t *mask, int *used) {
  if (used) *used = 0;
  if (!wp || !text || !ids)
    return damo_error(DAMO_ERR_INVALID_ARG, "damo_wordpiece_encode_head_tail: NULL vocabulary, text or ids");
  if (max_len < 3 || head < 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "damo_wordpiece_encode_head_tail: max_len %d (at least 3) or head %d "
                      "(at least 0) out of range", max_len, head);
  int32_t *tokens = NULL;
  int64_t n = 0;
  damo_status st = damo_wordpiece_tokenize(wp, text, strlen(text), &tokens, &n);
  if (st != DAMO_OK) return st;
  const size_t budget = (size_t)max_len - 2;
  size_t kept = (size_t)n;
  if (kept > budget) {
    /* Slide the last budget - head tokens down to follow the first head. */
    const size_t first = (size_t)head < budget ? (size_t)head : budget, tail = budget - first;
    memmove(tokens + first, tokens + (size_t)n - tail, tail * sizeof *tokens);
    kept = budget;
  }
  assemble_inputs(wp, tokens, kept, NULL, 0, 0, max_len, ids, token_types, mask, used);
  free(tokens);
  return DAMO_OK;
}

damo_status damo_wordpiece_decode(const damo_wordpiece *wp, const int32_t *ids, int64_t n, char **text) {
  if (text) *text = NULL;
  if (!wp || !text || (!ids && n) || n < 0)
    return damo_error(DAMO_ERR_INVALID_ARG, "damo_wordpiece_decode: NULL vocabulary, ids or output");
  tbuf out = {0};
  tbuf_put(&out, "", 0); /* "" for no ids */
  int first = 1;
  for (int64_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= wp->n_ids) {
      tbuf_free(&out);
      return damo_error(DAMO_ERR_INVALID_ARG, "damo_wordpiece_decode: id %d at position %lld is outside the "
                        "vocabulary (0..%d)", id, (long long)i, wp->n_ids - 1);
    }
    if (id == wp->pad) continue;
    const char *t = wp->pool + wp->off[id];
    size_t len = wp->len[id];
    if (!first && len >= 2 && t[0] == '#' && t[1] == '#') {
      tbuf_put(&out, t + 2, len - 2);
    } else {
      if (!first) tbuf_putc(&out, ' ');
      tbuf_put(&out, t, len);
    }
    first = 0;
  }
  if (out.failed) {
    tbuf_free(&out);
    return damo_error(DAMO_ERR_NOMEM, "damo_wordpiece_decode: out of memory");
  }
  *text = out.p;
  return DAMO_OK;
}
