/* json.c - the one strict JSON reader behind every JSON file damo reads (model configs,
 * GPT-2/BERT configs, tokenizer_config.json, text.json, encoder.json, vocab.json and the
 * safetensors header). cJSON parses; this file adds what cJSON lets through:
 *   - bytes after the value other than white space ("{} garbage", a second value);
 *   - the same key twice in one object, at any depth (cJSON keeps both and its lookups
 *     return the first, so the second would be silently ignored);
 * and gives every error the byte offset, line and column it was found at. */
#include "core/core.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>

/* 1-based line and column (in bytes) of byte offset off in text. */
static long line_at(const char *text, size_t off) {
  long line = 1;
  for (size_t i = 0; i < off; i++) line += text[i] == '\n';
  return line;
}
static long column_at(const char *text, size_t off) {
  size_t start = off;
  while (start > 0 && text[start - 1] != '\n') start--;
  return (long)(off - start) + 1;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* A walk over the raw text in step with the parsed tree, to know where each key starts.
 * The text is valid JSON (cJSON accepted it), so the scan only skips. */
typedef struct scan {
  const char *s;
  size_t n, pos;
  /* the earliest duplicate found so far (dup_key NULL: none) */
  const char *dup_key;
  size_t dup_off, first_off;
  int nomem;
} scan;

typedef struct key_at {
  const char *key;
  size_t off;
} key_at;

static void skip_ws(scan *sc) {
  while (sc->pos < sc->n && is_ws(sc->s[sc->pos])) sc->pos++;
}

/* From the opening quote to just after the closing one. */
static void skip_string(scan *sc) {
  sc->pos++;
  while (sc->pos < sc->n && sc->s[sc->pos] != '"') sc->pos += sc->s[sc->pos] == '\\' ? 2 : 1;
  sc->pos++;
}

static int compare_keys(const void *a, const void *b) {
  const key_at *x = a, *y = b;
  int c = strcmp(x->key, y->key);
  return c ? c : (x->off > y->off) - (x->off < y->off);
}

static void walk(scan *sc, const cJSON *item);

static void walk_object(scan *sc, const cJSON *obj) {
  size_t count = 0;
  for (const cJSON *c = obj->child; c; c = c->next) count++;
  key_at *keys = count > 1 ? malloc(count * sizeof *keys) : NULL;
  if (count > 1 && !keys) sc->nomem = 1;
  sc->pos++; /* '{' */
  size_t k = 0;
  for (const cJSON *c = obj->child; c; c = c->next, k++) {
    skip_ws(sc);
    if (keys) keys[k] = (key_at){c->string ? c->string : "", sc->pos};
    skip_string(sc);
    skip_ws(sc);
    sc->pos++; /* ':' */
    skip_ws(sc);
    walk(sc, c);
    skip_ws(sc);
    if (sc->pos < sc->n && sc->s[sc->pos] == ',') sc->pos++;
  }
  skip_ws(sc);
  sc->pos++; /* '}' */
  if (!keys) return;
  qsort(keys, count, sizeof *keys, compare_keys);
  for (size_t i = 1; i < count; i++)
    if (!strcmp(keys[i - 1].key, keys[i].key) && (!sc->dup_key || keys[i].off < sc->dup_off)) {
      /* keys[i] is a later occurrence; the first of its run is where the key was first seen */
      size_t first = i - 1;
      while (first > 0 && !strcmp(keys[first - 1].key, keys[i].key)) first--;
      sc->dup_key = keys[i].key, sc->dup_off = keys[i].off, sc->first_off = keys[first].off;
    }
  free(keys);
}

static void walk(scan *sc, const cJSON *item) {
  if (sc->pos >= sc->n) return;
  if (cJSON_IsObject(item)) {
    walk_object(sc, item);
  } else if (cJSON_IsArray(item)) {
    sc->pos++; /* '[' */
    for (const cJSON *c = item->child; c; c = c->next) {
      skip_ws(sc);
      walk(sc, c);
      skip_ws(sc);
      if (sc->pos < sc->n && sc->s[sc->pos] == ',') sc->pos++;
    }
    skip_ws(sc);
    sc->pos++; /* ']' */
  } else if (cJSON_IsString(item)) {
    skip_string(sc);
  } else { /* number, true, false, null */
    while (sc->pos < sc->n && !is_ws(sc->s[sc->pos]) && sc->s[sc->pos] != ',' && sc->s[sc->pos] != ']' &&
           sc->s[sc->pos] != '}')
      sc->pos++;
  }
}

damo_status damo_json_parse_at(const char *text, size_t len, size_t base, const char *source, unsigned flags,
                               cJSON **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "damo_json_parse: NULL output");
  *out = NULL;
  if (!source) source = "JSON";
  if (!text) return damo_error(DAMO_ERR_INVALID_ARG, "%s: damo_json_parse: NULL text", source);
  size_t start = len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0; /* cJSON skips a UTF-8 BOM */
  while (start < len && is_ws(text[start])) start++;
  if (start == len)
    return damo_error(DAMO_ERR_FORMAT, "%s: empty, expected a JSON value at byte offset %zu", source, base + start);
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!root) {
    size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    return damo_error(DAMO_ERR_FORMAT, "%s: not valid JSON at byte offset %zu (line %ld), column %ld", source, base + off,
                      line_at(text, off), column_at(text, off));
  }
  size_t after = end && end >= text && end <= text + len ? (size_t)(end - text) : len;
  while (after < len && is_ws(text[after])) after++;
  if (after < len) {
    cJSON_Delete(root);
    return damo_error(DAMO_ERR_FORMAT,
                      "%s: unexpected data after the JSON value at byte offset %zu (line %ld), column %ld; expected "
                      "the end of the file",
                      source, base + after, line_at(text, after), column_at(text, after));
  }
  if (!(flags & DAMO_JSON_ALLOW_DUPLICATE_KEYS)) {
    scan sc = {text, len, start, NULL, 0, 0, 0};
    walk(&sc, root);
    if (sc.nomem) {
      cJSON_Delete(root);
      return damo_error(DAMO_ERR_NOMEM, "%s: out of memory checking for duplicate keys", source);
    }
    if (sc.dup_key) {
      damo_status st = damo_error(DAMO_ERR_FORMAT,
                                  "%s: duplicate key \"%.200s\" at byte offset %zu (line %ld), column %ld; it was first "
                                  "given at byte offset %zu (a key may appear once per object)",
                                  source, sc.dup_key, base + sc.dup_off, line_at(text, sc.dup_off),
                                  column_at(text, sc.dup_off), base + sc.first_off);
      cJSON_Delete(root);
      return st;
    }
  }
  *out = root;
  return DAMO_OK;
}

damo_status damo_json_parse(const char *text, size_t len, const char *source, unsigned flags, cJSON **out) {
  return damo_json_parse_at(text, len, 0, source, flags, out);
}

damo_status damo_json_read_file(const char *path, unsigned flags, cJSON **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "damo_json_read_file: NULL output");
  *out = NULL;
  char *text;
  size_t len;
  damo_status st = damo_read_file(path, &text, &len);
  if (st != DAMO_OK) return st;
  st = damo_json_parse(text, len, path, flags, out);
  free(text);
  return st;
}
